//! Reading (and, for fixtures and the farm steps, writing) plate media.
//!
//! - [`exr`]: OpenEXR headers through the `exr` crate (display/data windows, channels,
//!   compression, `timeCode`, `framesPerSecond`, clip name), a structural truncation
//!   check, and a scan-line writer.
//! - [`dpx`]: SMPTE 268M headers parsed by hand, both byte orders, plus a writer.
//! - [`jpeg`]: JPEG size and completeness.
//! - [`movie`]: MOV/MXF through `ffmpeg-next`: probe, frame decode, and a small writer.
//! - [`clipname`]: camera clip-name patterns (ARRI, Sony, RED, DJI).
//! - [`pixels`]: decoding a frame to float RGB for thumbnails.
//! - [`encode`]: the review encoder (H.264, ProRes, DNxHD/DNxHR) and the codec table.
//! - [`font`]: a built-in 5×7 bitmap font for burn-ins and slates.
//!
//! Every function that touches a file names that file in its error.

pub mod clipname;
pub mod dpx;
pub mod encode;
pub mod exr;
pub mod font;
pub mod jpeg;
pub mod movie;
pub mod pixels;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{io_class, Classify, ErrorClass};

/// File formats iom reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaFormat {
    /// OpenEXR.
    Exr,
    /// SMPTE DPX.
    Dpx,
    /// JPEG.
    Jpeg,
    /// A movie container (MOV, MXF).
    Movie,
}

impl MediaFormat {
    /// The format of a file by its extension (case-insensitive), if iom reads it.
    pub fn from_extension(ext: &str) -> Option<MediaFormat> {
        match ext.to_ascii_lowercase().as_str() {
            "exr" => Some(MediaFormat::Exr),
            "dpx" => Some(MediaFormat::Dpx),
            "jpg" | "jpeg" => Some(MediaFormat::Jpeg),
            "mov" | "mxf" | "mp4" => Some(MediaFormat::Movie),
            _ => None,
        }
    }
}

/// An integer pixel rectangle, inclusive bounds as OpenEXR defines its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Window {
    /// Left.
    pub x_min: i32,
    /// Top.
    pub y_min: i32,
    /// Right (inclusive).
    pub x_max: i32,
    /// Bottom (inclusive).
    pub y_max: i32,
}

impl Window {
    /// Width in pixels (`max − min + 1`).
    pub fn width(&self) -> u32 {
        (i64::from(self.x_max) - i64::from(self.x_min) + 1).max(0) as u32
    }

    /// Height in pixels.
    pub fn height(&self) -> u32 {
        (i64::from(self.y_max) - i64::from(self.y_min) + 1).max(0) as u32
    }
}

/// Header metadata of one frame (or of a movie).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ImageInfo {
    /// Image width: the *display* window for EXR (never the data window).
    pub width: u32,
    /// Image height.
    pub height: u32,
    /// EXR data window, when the format has one.
    pub data_window: Option<Window>,
    /// EXR display window.
    pub display_window: Option<Window>,
    /// Pixel aspect ratio (1.0 when not stored).
    pub pixel_aspect: f32,
    /// Channel names (EXR), or a layout such as `RGB` (DPX/JPEG).
    pub channels: Vec<String>,
    /// Compression or codec name (`ZIP`, `PIZ`, `prores` …).
    pub compression: Option<String>,
    /// Bits per sample (DPX 10/12/16, EXR 16 for half or 32), when known.
    pub bit_depth: Option<u32>,
    /// Timecode label `HH:MM:SS:FF` (`;` before the frames for drop frame).
    pub timecode: Option<String>,
    /// Frame rate as stored in the header, when present and sane.
    pub fps: Option<crate::timecode::FrameRate>,
    /// Camera clip name found in header attributes or the file name.
    pub clip_name: Option<String>,
    /// Number of parts (multi-part EXR), 1 otherwise.
    pub parts: usize,
    /// Text header attributes (name → value) worth showing or searching.
    pub attributes: BTreeMap<String, String>,
}

/// Float RGB pixels (interleaved, row-major, top row first), as decoded from a file:
/// scene-linear for EXR, normalised code values 0..1 for DPX, JPEG and movies.
#[derive(Debug, Clone, PartialEq)]
pub struct RgbImage {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Pixel aspect ratio (width of a pixel over its height).
    pub pixel_aspect: f32,
    /// `width × height × 3` samples.
    pub data: Vec<f32>,
}

impl RgbImage {
    /// A black image.
    pub fn black(width: u32, height: u32) -> Self {
        RgbImage {
            width,
            height,
            pixel_aspect: 1.0,
            data: vec![0.0; width as usize * height as usize * 3],
        }
    }

    /// The pixel at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [f32; 3] {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        [self.data[i], self.data[i + 1], self.data[i + 2]]
    }
}

/// 16-bit RGB in three planes (R, G, B; row-major, top row first): display code
/// values for the review encoder, or the bits of half floats straight from an
/// EXR ([`exr::read_half_planes`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Rgb16 {
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// R, G, B planes of `width × height` samples each.
    pub planes: [Vec<u16>; 3],
}

impl Rgb16 {
    /// A black picture (all samples 0).
    pub fn black(width: u32, height: u32) -> Self {
        let n = width as usize * height as usize;
        Rgb16 {
            width,
            height,
            planes: [vec![0; n], vec![0; n], vec![0; n]],
        }
    }

    /// The samples (R, G, B) at (x, y).
    pub fn pixel(&self, x: u32, y: u32) -> [u16; 3] {
        let i = y as usize * self.width as usize + x as usize;
        [self.planes[0][i], self.planes[1][i], self.planes[2][i]]
    }
}

/// Why a media file could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum MediaError {
    /// The file could not be opened or read.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("{path}: file is empty (0 bytes); re-copy it from the delivery")]
    Empty {
        /// The file.
        path: PathBuf,
    },
    /// The file ends before its own header says it should.
    #[error("{path}: truncated: {detail}; re-copy the frame from the delivery")]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// The file is not of the format its name says, or is corrupt.
    #[error("{path}: not a valid {format} file: {detail}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The expected format.
        format: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A valid file iom cannot handle (e.g. deep EXR, an unknown codec).
    #[error("{path}: unsupported: {detail}")]
    Unsupported {
        /// The file.
        path: PathBuf,
        /// What is not supported.
        detail: String,
    },
    /// An FFmpeg call failed.
    #[error("{path}: ffmpeg: {detail}")]
    Ffmpeg {
        /// The file.
        path: PathBuf,
        /// FFmpeg's message.
        detail: String,
    },
}

impl MediaError {
    /// The file the error is about.
    pub fn path(&self) -> &Path {
        match self {
            MediaError::Io { path, .. }
            | MediaError::Empty { path }
            | MediaError::Truncated { path, .. }
            | MediaError::Corrupt { path, .. }
            | MediaError::Unsupported { path, .. }
            | MediaError::Ffmpeg { path, .. } => path,
        }
    }

    /// A [`MediaError::Corrupt`] for `path`.
    pub fn corrupt(path: &Path, format: &'static str, detail: impl Into<String>) -> MediaError {
        MediaError::Corrupt {
            path: path.to_path_buf(),
            format,
            detail: detail.into(),
        }
    }

    /// A [`MediaError::Truncated`] for `path`.
    pub fn truncated(path: &Path, detail: impl Into<String>) -> MediaError {
        MediaError::Truncated {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// A [`MediaError::Unsupported`] for `path`.
    pub fn unsupported(path: &Path, detail: impl Into<String>) -> MediaError {
        MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: detail.into(),
        }
    }

    /// Helper for `map_err`.
    pub fn io(path: &Path) -> impl FnOnce(std::io::Error) -> MediaError + '_ {
        move |source| MediaError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

impl Classify for MediaError {
    fn class(&self) -> ErrorClass {
        match self {
            MediaError::Io { source, .. } => io_class(source),
            _ => ErrorClass::Permanent,
        }
    }
}

/// Reads the header of any supported still frame, dispatching on the extension.
pub fn read_frame_info(path: &Path) -> Result<ImageInfo, MediaError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match MediaFormat::from_extension(ext) {
        Some(MediaFormat::Exr) => exr::read_info(path),
        Some(MediaFormat::Dpx) => dpx::read_info(path),
        Some(MediaFormat::Jpeg) => jpeg::read_info(path),
        _ => Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("no still-image reader for extension {ext:?}"),
        }),
    }
}

static TEMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Writes a file through `write` to a hidden temporary name beside `path`
/// (`.<name>.<pid>.<n>.tmp`), then renames it into place, so a reader never sees a
/// half-written frame; the temporary file is removed on error.
pub(crate) fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut std::io::BufWriter<std::fs::File>) -> Result<(), MediaError>,
) -> Result<(), MediaError> {
    use std::io::Write;
    let name = path
        .file_name()
        .ok_or_else(|| MediaError::unsupported(path, "the output path has no file name"))?
        .to_string_lossy();
    let tmp = path.with_file_name(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    let result = (|| {
        let file = std::fs::File::create(&tmp).map_err(MediaError::io(path))?;
        let mut out = std::io::BufWriter::new(file);
        write(&mut out)?;
        out.flush().map_err(MediaError::io(path))?;
        drop(out);
        std::fs::rename(&tmp, path).map_err(MediaError::io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Checks that a still frame is complete (not empty, not cut short), cheaply: it
/// reads headers and offset tables, never pixels.
pub fn verify_frame(path: &Path) -> Result<(), MediaError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match MediaFormat::from_extension(ext) {
        Some(MediaFormat::Exr) => exr::verify(path),
        Some(MediaFormat::Dpx) => dpx::verify(path),
        Some(MediaFormat::Jpeg) => jpeg::verify(path),
        _ => Ok(()),
    }
}
