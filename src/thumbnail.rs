//! Colour-managed thumbnails that fit a box with their aspect kept.
//!
//! The original ran `oiiotool <frame> --colorconvert linear sRGB --resize 960x540`
//! per sequence: one process per thumbnail, the wrong curve for log plates, and a
//! stretched picture for anything that was not 16:9. Here a frame is decoded to
//! float RGB ([`crate::media::pixels::decode`]), taken to linear light by the
//! [`Pipeline`]'s first stage, resized with a triangle filter whose support grows
//! with the reduction (so a 2K → 960 downscale averages every source pixel and
//! does not alias), then matrixed, display-encoded, passed through an optional LUT,
//! rounded to 8 bits and written as a JPEG through a temporary file and a rename.
//!
//! Resizing before the matrix is exact for linear input (a 3×3 matrix commutes
//! with a weighted average) and means the matrix, encode and LUT run on the
//! 960×540 result rather than on the 2K source.

use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use rayon::prelude::*;

use crate::colour::Pipeline;
use crate::config::ThumbnailSettings;
use crate::error::{io_class, Classify, ErrorClass};
use crate::media::{MediaError, RgbImage};

/// Why a thumbnail could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ThumbnailError {
    /// The frame could not be read or decoded.
    #[error(transparent)]
    Media(#[from] MediaError),
    /// The decoded image cannot be used (no pixels, or fewer samples than its size).
    #[error("{path}: decoded image is unusable: {detail}")]
    BadImage {
        /// The source frame.
        path: PathBuf,
        /// What is wrong.
        detail: String,
    },
    /// The thumbnail (or its folder) could not be written.
    #[error("cannot write thumbnail {path}: {source}; check that the delivery folder is writable and not full")]
    Write {
        /// The thumbnail path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The JPEG encoder refused the image.
    #[error("cannot encode thumbnail {path} as JPEG: {detail}")]
    Encode {
        /// The thumbnail path.
        path: PathBuf,
        /// The encoder's message.
        detail: String,
    },
}

impl Classify for ThumbnailError {
    fn class(&self) -> ErrorClass {
        match self {
            ThumbnailError::Media(e) => e.class(),
            ThumbnailError::Write { source, .. } => io_class(source),
            ThumbnailError::BadImage { .. } | ThumbnailError::Encode { .. } => {
                ErrorClass::Permanent
            }
        }
    }
}

/// The size that fits inside `max_w × max_h` with the *display* aspect of the
/// source kept (`src_w × pixel_aspect` over `src_h`): one side touches the box and
/// the other is rounded, never beyond the box and never below 1. Small frames are
/// scaled up to the box, so every thumbnail of a delivery has the same footprint
/// as the original's fixed 960×540. A non-finite or non-positive pixel aspect
/// counts as 1; a zero box or source gives 1×1.
pub fn fit(src_w: u32, src_h: u32, pixel_aspect: f32, max_w: u32, max_h: u32) -> (u32, u32) {
    if src_w == 0 || src_h == 0 || max_w == 0 || max_h == 0 {
        return (1, 1);
    }
    let par = if pixel_aspect.is_finite() && pixel_aspect > 0.0 {
        f64::from(pixel_aspect)
    } else {
        1.0
    };
    let display_w = f64::from(src_w) * par;
    let display_h = f64::from(src_h);
    let scale = (f64::from(max_w) / display_w).min(f64::from(max_h) / display_h);
    let side = |v: f64, max: u32| -> u32 {
        let r = (v * scale).round();
        if r.is_finite() {
            (r as u32).clamp(1, max)
        } else {
            1
        }
    };
    (side(display_w, max_w), side(display_h, max_h))
}

/// Filter taps for one axis, padded to the same count `n` for every output
/// sample so the inner loop has a fixed trip count: output `o` reads source
/// samples `first[o] .. first[o] + n` with weights `weights[o * n ..][..n]`
/// (zeros where the tent does not reach).
struct Taps {
    n: usize,
    first: Vec<usize>,
    weights: Vec<f32>,
}

impl Taps {
    /// Triangle (tent) filter of radius `max(scale, 1)` source pixels, weights
    /// normalised to 1 over the taps that fall inside the image (edges are not
    /// darkened). Downscaling widens the tent so every source pixel contributes;
    /// upscaling is plain linear interpolation.
    fn new(src: usize, dst: usize) -> Taps {
        let scale = src as f64 / dst as f64;
        let support = scale.max(1.0);
        let mut ragged: Vec<(usize, Vec<f64>)> = Vec::with_capacity(dst);
        for o in 0..dst {
            // Continuous coordinates: source pixel j covers [j, j + 1).
            let centre = (o as f64 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0) as usize).min(src - 1);
            let hi = ((centre + support).ceil() as usize).clamp(lo + 1, src);
            let mut first = None;
            let mut ws = Vec::with_capacity(hi - lo);
            for j in lo..hi {
                let w = 1.0 - ((j as f64 + 0.5) - centre).abs() / support;
                if w > 0.0 {
                    first.get_or_insert(j);
                    ws.push(w);
                } else if first.is_some() {
                    break;
                }
            }
            let sum: f64 = ws.iter().sum();
            match first {
                Some(f) if sum > 0.0 => {
                    ws.iter_mut().for_each(|w| *w /= sum);
                    ragged.push((f, ws));
                }
                // Cannot happen with a tent of radius ≥ 1, but fall back to the
                // nearest pixel rather than produce black.
                _ => ragged.push(((centre as usize).min(src - 1), vec![1.0])),
            }
        }
        // Every run lies inside 0..src, so n ≤ src and the shift below fits.
        let n = ragged
            .iter()
            .map(|(_, w)| w.len())
            .max()
            .unwrap_or(1)
            .min(src);
        let mut taps = Taps {
            n,
            first: Vec::with_capacity(dst),
            weights: vec![0.0; dst * n],
        };
        for ((first, ws), slot) in ragged.into_iter().zip(taps.weights.chunks_exact_mut(n)) {
            let start = first.min(src - n);
            let pad = first - start;
            for (d, w) in slot[pad..].iter_mut().zip(ws) {
                *d = w as f32;
            }
            taps.first.push(start);
        }
        taps
    }

    #[cfg(test)]
    fn of(&self, o: usize) -> (usize, &[f32]) {
        (self.first[o], &self.weights[o * self.n..(o + 1) * self.n])
    }

    /// Filters one row of interleaved RGB into `out` (`dst × 3` samples).
    fn filter_row(&self, row: &[f32], out: &mut [f32]) {
        // Fixed counts let the compiler unroll the taps and drop bounds checks;
        // 2K → 960 uses 5, 4K → 960 uses 9.
        match self.n {
            1 => self.filter_row_k::<1>(row, out),
            2 => self.filter_row_k::<2>(row, out),
            3 => self.filter_row_k::<3>(row, out),
            4 => self.filter_row_k::<4>(row, out),
            5 => self.filter_row_k::<5>(row, out),
            6 => self.filter_row_k::<6>(row, out),
            7 => self.filter_row_k::<7>(row, out),
            8 => self.filter_row_k::<8>(row, out),
            9 => self.filter_row_k::<9>(row, out),
            10 => self.filter_row_k::<10>(row, out),
            _ => self.filter_row_any(row, out),
        }
    }

    fn filter_row_k<const K: usize>(&self, row: &[f32], out: &mut [f32]) {
        let per_out = out.chunks_exact_mut(3).zip(&self.first);
        for ((px, &first), w) in per_out.zip(self.weights.chunks_exact(K)) {
            let (Some(s), Ok(w)) = (
                row.get(first * 3..(first + K) * 3),
                <&[f32; K]>::try_from(w),
            ) else {
                continue;
            };
            let mut acc = [0.0f32; 3];
            for k in 0..K {
                acc[0] += s[3 * k] * w[k];
                acc[1] += s[3 * k + 1] * w[k];
                acc[2] += s[3 * k + 2] * w[k];
            }
            px.copy_from_slice(&acc);
        }
    }

    fn filter_row_any(&self, row: &[f32], out: &mut [f32]) {
        let per_out = out.chunks_exact_mut(3).zip(&self.first);
        for ((px, &first), w) in per_out.zip(self.weights.chunks_exact(self.n)) {
            let src = row.get(first * 3..).unwrap_or_default();
            let mut acc = [0.0f32; 3];
            for (s, &wk) in src.chunks_exact(3).zip(w) {
                acc[0] += s[0] * wk;
                acc[1] += s[1] * wk;
                acc[2] += s[2] * wk;
            }
            px.copy_from_slice(&acc);
        }
    }
}

/// Renders an 8-bit thumbnail that fits `max_w × max_h` (see [`fit`]): the
/// pipeline's first stage, a linear-light resize, then its second stage, rounded.
/// An image without pixels, or whose sample count does not match its size, gives
/// a black thumbnail of the fitted size, never a panic or an allocation sized by
/// the bogus header (use [`check_image`] first to report it instead).
pub fn render(image: &RgbImage, pipeline: &Pipeline, max_w: u32, max_h: u32) -> image::RgbImage {
    let (out_w, out_h) = fit(image.width, image.height, image.pixel_aspect, max_w, max_h);
    let (sw, sh) = (image.width as usize, image.height as usize);
    let (ow, oh) = (out_w as usize, out_h as usize);
    let consistent = sw
        .checked_mul(sh)
        .and_then(|n| n.checked_mul(3))
        .is_some_and(|n| n == image.data.len());
    if sw == 0 || sh == 0 || !consistent {
        let black = pipeline.apply([0.0; 3]).map(quantise);
        return image::RgbImage::from_fn(out_w, out_h, |_, _| image::Rgb(black));
    }

    // Horizontal pass, one source row at a time into `mid` (ow × sh): decode the
    // row into a scratch buffer, then filter it.
    let htaps = Taps::new(sw, ow);
    let mut mid = vec![0.0f32; ow * 3 * sh];
    mid.par_chunks_mut(ow * 3).enumerate().for_each_init(
        || vec![0.0f32; sw * 3],
        |row, (y, out)| {
            // Always present: the buffer length was checked above.
            match image.data.get(y * sw * 3..(y + 1) * sw * 3) {
                Some(s) => row.copy_from_slice(s),
                None => row.fill(0.0),
            }
            pipeline.linearise_in_place(row);
            htaps.filter_row(row, out);
        },
    );

    // Vertical pass, then the second colour stage, one output row at a time.
    let vtaps = Taps::new(sh, oh);
    let mut out = vec![0u8; ow * 3 * oh];
    out.par_chunks_mut(ow * 3).enumerate().for_each_init(
        || vec![0.0f32; ow * 3],
        |acc, (y, dst)| {
            acc.fill(0.0);
            let first = vtaps.first.get(y).copied().unwrap_or(0);
            let n = vtaps.n;
            let weights = vtaps.weights.get(y * n..(y + 1) * n).unwrap_or_default();
            for (k, &w) in weights.iter().enumerate() {
                if w == 0.0 {
                    continue;
                }
                let r = (first + k) * ow * 3;
                let src = mid.get(r..r + ow * 3).unwrap_or_default();
                for (a, &s) in acc.iter_mut().zip(src) {
                    *a += s * w;
                }
            }
            for (px, d) in acc.chunks_exact(3).zip(dst.chunks_exact_mut(3)) {
                let v = pipeline.finish([px[0], px[1], px[2]]);
                d[0] = quantise(v[0]);
                d[1] = quantise(v[1]);
                d[2] = quantise(v[2]);
            }
        },
    );
    image::RgbImage::from_raw(out_w, out_h, out)
        .unwrap_or_else(|| image::RgbImage::new(out_w, out_h))
}

/// A display value in `0..=1` to an 8-bit code, rounding to nearest.
#[inline]
fn quantise(v: f32) -> u8 {
    // Not `clamp`: NaN must become 0 (a float-to-int `as` also saturates, but
    // this states the intent).
    let v = if v >= 0.0 { v.min(1.0) } else { 0.0 };
    (v * 255.0 + 0.5) as u8
}

/// Checks that a decoded image has pixels and as many samples as its size says.
pub fn check_image(image: &RgbImage, source: &Path) -> Result<(), ThumbnailError> {
    let bad = |detail: String| {
        Err(ThumbnailError::BadImage {
            path: source.to_path_buf(),
            detail,
        })
    };
    if image.width == 0 || image.height == 0 {
        return bad(format!("{}×{} has no pixels", image.width, image.height));
    }
    let want = image.width as usize * image.height as usize * 3;
    if image.data.len() != want {
        return bad(format!(
            "{} samples for {}×{} RGB (expected {want})",
            image.data.len(),
            image.width,
            image.height
        ));
    }
    Ok(())
}

/// Tells apart concurrent temporary files of the same thumbnail in one process.
static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Writes `img` as a JPEG at `out_path`: creates the parent folder, writes a
/// hidden temporary file beside it and renames it into place, so a reader (or a
/// second scan) never sees half a thumbnail. `quality` is clamped to 1..=100.
pub fn write_jpeg(
    img: &image::RgbImage,
    out_path: &Path,
    quality: u8,
) -> Result<(), ThumbnailError> {
    let write_err = |source: std::io::Error| ThumbnailError::Write {
        path: out_path.to_path_buf(),
        source,
    };
    let Some(name) = out_path.file_name() else {
        return Err(write_err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "the path has no file name",
        )));
    };
    let parent = match out_path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(parent).map_err(write_err)?;
    let tmp = parent.join(format!(
        ".{}.{}-{}.tmp",
        name.to_string_lossy(),
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(write_err)?;
        let mut w = BufWriter::new(file);
        image::codecs::jpeg::JpegEncoder::new_with_quality(&mut w, quality.clamp(1, 100))
            .encode(
                img.as_raw(),
                img.width(),
                img.height(),
                image::ExtendedColorType::Rgb8,
            )
            .map_err(|e| match e {
                image::ImageError::IoError(source) => write_err(source),
                other => ThumbnailError::Encode {
                    path: out_path.to_path_buf(),
                    detail: other.to_string(),
                },
            })?;
        // No fsync: a thumbnail lost in a crash is remade by the next scan, and
        // fsync per file is slow on the network storage deliveries live on.
        w.flush().map_err(write_err)?;
        drop(w);
        std::fs::rename(&tmp, out_path).map_err(write_err)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Renders an already decoded image (a movie frame, say) and writes it as the
/// thumbnail; `source` names the frame in errors. Returns the thumbnail's size.
pub fn make_from_image(
    image: &RgbImage,
    source: &Path,
    out_path: &Path,
    pipeline: &Pipeline,
    settings: &ThumbnailSettings,
) -> Result<(u32, u32), ThumbnailError> {
    check_image(image, source)?;
    let thumb = render(image, pipeline, settings.width, settings.height);
    write_jpeg(&thumb, out_path, settings.quality)?;
    Ok(thumb.dimensions())
}

/// Decodes a still frame (EXR, DPX, JPEG), renders it and writes the thumbnail.
/// Returns the thumbnail's size.
pub fn make_for_frame(
    frame_path: &Path,
    out_path: &Path,
    pipeline: &Pipeline,
    settings: &ThumbnailSettings,
) -> Result<(u32, u32), ThumbnailError> {
    let image = crate::media::pixels::decode(frame_path)?;
    make_from_image(&image, frame_path, out_path, pipeline, settings)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taps_sum_to_one_and_cover_the_source() {
        for (src, dst) in [
            (2048, 960),
            (1152, 540),
            (10, 3),
            (3, 10),
            (1, 1),
            (7, 7),
            (1, 5),
        ] {
            let t = Taps::new(src, dst);
            let mut covered = vec![false; src];
            for o in 0..dst {
                let (first, w) = t.of(o);
                let sum: f32 = w.iter().sum();
                assert!((sum - 1.0).abs() < 1e-5, "{src}->{dst} o={o} sum={sum}");
                assert!(first + w.len() <= src, "{src}->{dst} o={o}");
                for (k, &wk) in w.iter().enumerate() {
                    if wk > 0.0 {
                        covered[first + k] = true;
                    }
                }
            }
            if dst <= src {
                assert!(covered.iter().all(|&c| c), "{src}->{dst} skips pixels");
            }
        }
    }

    #[test]
    fn halving_uses_the_classic_tent() {
        let t = Taps::new(8, 4);
        let (first, w) = t.of(1);
        assert_eq!(first, 1);
        let want = [0.125, 0.375, 0.375, 0.125];
        for (a, b) in w.iter().zip(want) {
            assert!((a - b).abs() < 1e-6, "{w:?}");
        }
    }

    #[test]
    fn quantise_rounds_and_clamps() {
        assert_eq!(quantise(0.0), 0);
        assert_eq!(quantise(1.0), 255);
        assert_eq!(quantise(0.5 / 255.0 + 1e-6), 1);
        assert_eq!(quantise(0.49 / 255.0), 0);
        assert_eq!(quantise(f32::NAN), 0);
        assert_eq!(quantise(3.0), 255);
    }
}
