//! `copy` of a movie plate as frames: the original's "MOV to DPX" option, in the
//! formats of the Project's `sg_out_format` (`dpx 10bit`, `dpx 12bit`, `exr 16bit`,
//! `exr 32bit`).
//!
//! The movie's frames `first..=last` (1-based, the scanlist's range) are decoded with
//! FFmpeg and written as `<plate>.<1001…>.<dpx|exr>` into the plate's frames folder,
//! so every later step (thumbnail, proxies, review, register) sees an ordinary frame
//! plate. Pixels keep the movie's encoding: the decoded code values (video range
//! expanded to full range with the tagged matrix, 16 bits per channel) go into the
//! DPX code values or, normalised to 0..1, into the EXR samples, so the row's colour
//! space still describes the frames. Each frame carries the movie's timecode
//! (offset to the frame) and frame rate.
//!
//! Like [`super::copy`]: each frame is encoded in memory, hashed, written to an iom
//! temporary name, fsynced and hard-linked to its real name, which never replaces a
//! file. Encoding is deterministic, so a re-run (after a crash, or a duplicate
//! delivery of the message) finds its own frames with the same content and keeps
//! them; a frame with different content is refused. A permanent failure (a
//! truncated movie, a frame that does not decode) removes the frames this run wrote,
//! so no partial plate is left under the publish root.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rayon::prelude::*;
use serde_json::json;

use super::media as m;
use super::{hex64, place_no_replace, Placed, StepContext, StepError, StepOutput};
use crate::media::dpx::{self, DpxSpec};
use crate::media::exr::{self, ExrCompression, ExrSample, ExrSpec, Fill};
use crate::media::movie::{self, MovieInfo};
use crate::media::RgbImage;
use crate::store::{fsync_dir, OutputFile};
use crate::task::{FrameFormat, PlateOutput, Source, StepKind, TaskMessage};
use crate::timecode::Timecode;

/// Runs the movie-to-frames copy.
pub fn run(
    msg: &TaskMessage,
    source: &Source,
    output: &PlateOutput,
    format: FrameFormat,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let Source::Movie { path, first, last } = source else {
        return Err(StepError::permanent(format!(
            "copy to {}: frames are made from movie sources only",
            output.frames_dir.display()
        )));
    };
    let (first, last) = (*first, *last);
    if output.ext != format.ext() {
        return Err(StepError::permanent(format!(
            "copy to {}: the plate's extension is {:?} but the frames are {format} (.{}); \
             publish again (the planner sets both)",
            output.frames_dir.display(),
            output.ext,
            format.ext()
        )));
    }
    // The probe step's own checks: the movie exists, probes, and holds the range.
    let (info, _) = super::probe::movie_range(path, first, last)?;

    let dir = &output.frames_dir;
    fs::create_dir_all(dir).map_err(|e| StepError::io("create folder", dir, &e))?;
    let stale = super::remove_stale_temps(dir, &msg.task_id)?;
    let start_tc = start_timecode(&info, first);
    let frames: Vec<(u64, i64)> = (first..=last)
        .map(|n| ((n - 1) as u64, output.first_frame + (n - first)))
        .collect();

    let pool = m::pool(ctx, StepKind::Copy)?;
    let mut outputs: Vec<OutputFile> = Vec::with_capacity(frames.len());
    let mut created: Vec<PathBuf> = Vec::new();
    let (mut skipped, mut written) = (0u64, 0u64);
    let result = (|| {
        for batch in frames.chunks(m::jobs(ctx)) {
            ctx.check_cancel()?;
            crate::runtime::fault::per_frame(StepKind::Copy);
            let indices: Vec<u64> = batch.iter().map(|&(i, _)| i).collect();
            let imgs = movie::decode_frames(path, &indices).map_err(StepError::from_error)?;
            let done: Vec<Result<(OutputFile, Placed), StepError>> = pool.install(|| {
                imgs.into_par_iter()
                    .zip(batch.par_iter())
                    .map(|(img, &(index, number))| {
                        let tc = start_tc.map(|t| t.offset(index as i64 - (first - 1)));
                        let frame = Frame {
                            img,
                            number,
                            timecode: tc,
                        };
                        write_frame(msg, output, format, &info, path, frame)
                    })
                    .collect()
            });
            // Keep every record (so a failure below still removes what this
            // batch linked), then report the first error.
            let mut first_err = None;
            for r in done {
                match r {
                    Ok((rec, Placed::New)) => {
                        written += rec.size;
                        created.push(rec.path.clone());
                        outputs.push(rec);
                    }
                    Ok((rec, Placed::Same)) => {
                        skipped += 1;
                        outputs.push(rec);
                    }
                    Err(e) => {
                        first_err.get_or_insert(e);
                    }
                }
            }
            if let Some(e) = first_err {
                return Err(e);
            }
        }
        Ok(())
    })();
    if let Err(e) = result {
        if matches!(e, StepError::Permanent { .. }) {
            for p in &created {
                let _ = fs::remove_file(p);
            }
            let _ = fsync_dir(dir);
        }
        return Err(e);
    }
    fsync_dir(dir).map_err(|e| StepError::io("fsync folder", dir, &e))?;

    let bytes: u64 = outputs.iter().map(|o| o.size).sum();
    crate::metrics::observe_io(StepKind::Copy, written, written, outputs.len() as u64);
    Ok(StepOutput {
        summary: json!({
            "frames": outputs.len(),
            "written": created.len(),
            "skipped": skipped,
            "bytes": bytes,
            "format": format.name(),
            "movie": path.display().to_string(),
            "movie_codec": info.codec,
            "movie_frames": [first, last],
            "timecode": start_tc.map(|t| t.to_string()),
            "stale_temps_removed": stale,
            "dir": dir.display().to_string(),
        }),
        outputs,
    })
}

/// The movie's timecode at 1-based frame `first`, when it has one.
fn start_timecode(info: &MovieInfo, first: i64) -> Option<Timecode> {
    let label = info.timecode.as_deref()?;
    let tc = Timecode::parse(label, info.fps, false).ok()?;
    Some(tc.offset(first - 1))
}

/// One decoded frame and where it goes.
struct Frame {
    img: RgbImage,
    number: i64,
    timecode: Option<Timecode>,
}

/// Encodes one frame, writes it under a temporary name and links it into place.
fn write_frame(
    msg: &TaskMessage,
    output: &PlateOutput,
    format: FrameFormat,
    info: &MovieInfo,
    movie_path: &Path,
    frame: Frame,
) -> Result<(OutputFile, Placed), StepError> {
    let dest = output.frame_path(frame.number);
    let bytes = encode(&dest, format, info, movie_path, frame)?;
    let hash = xxhash_rust::xxh3::xxh3_64(&bytes);
    let size = bytes.len() as u64;
    let tmp = m::write_temp(&dest, &bytes, &msg.task_id, msg.attempt)?;
    let placed = place_no_replace(&tmp, &dest, hash, size, || {
        StepError::permanent(format!(
            "{} already exists with different content; refusing to overwrite a published \
             frame (made from {}); publish a new version, or remove the file by hand if it \
             is known to be bad",
            dest.display(),
            movie_path.display()
        ))
    });
    let _ = fs::remove_file(&tmp);
    let record = OutputFile {
        path: dest,
        size,
        xxh3: hex64(hash),
    };
    placed.map(|p| (record, p))
}

/// The frame's file bytes in `format`.
fn encode(
    dest: &Path,
    format: FrameFormat,
    info: &MovieInfo,
    movie_path: &Path,
    frame: Frame,
) -> Result<Vec<u8>, StepError> {
    let (w, h) = (frame.img.width, frame.img.height);
    let aspect = frame.img.pixel_aspect;
    let fill = Fill::Image(Arc::new(frame.img));
    let source_name = movie_path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let bytes = match format {
        FrameFormat::Dpx10 | FrameFormat::Dpx12 => {
            let fps = Some(info.fps.as_f64() as f32);
            let spec = DpxSpec {
                bit_depth: if format == FrameFormat::Dpx10 { 10 } else { 12 },
                timecode: frame.timecode,
                film_fps: fps,
                tv_fps: fps,
                original_size: Some((w, h)),
                attributes: [("source_file".to_string(), source_name)].into(),
                fill,
                ..DpxSpec::new(w, h)
            };
            dpx::encode_frame(dest, &spec)
        }
        FrameFormat::Exr16 | FrameFormat::Exr32 => {
            // The crate packs EXR timecodes as TV60: above 30 fps the frame field
            // does not fit, so such plates carry the rate but no timecode.
            let timecode = frame.timecode.filter(|_| info.fps.nominal() <= 30);
            let spec = ExrSpec {
                compression: ExrCompression::Zip16,
                sample: if format == FrameFormat::Exr16 {
                    ExrSample::Half
                } else {
                    ExrSample::Float
                },
                timecode,
                fps: Some(info.fps),
                pixel_aspect: aspect,
                attributes: [("iom:source".to_string(), source_name)].into(),
                fill,
                ..ExrSpec::new(w, h)
            };
            exr::encode_frame(dest, &spec)
        }
    };
    bytes.map_err(StepError::from_error)
}
