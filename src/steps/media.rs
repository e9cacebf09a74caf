//! What the `proxy` and `review` steps share: which published frames make the
//! plate, the gap policy, the colour pipeline, bounded batch processing, and
//! temporary-file handling.
//!
//! Frames are processed in batches of `media.jobs` (one per core by default):
//! a batch is decoded and colour-converted in parallel, then consumed in order,
//! so memory holds at most one batch of frames whatever the plate's length (the
//! review step decodes still frames one at a time, one ahead of its encoders).

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use rayon::prelude::*;

use super::{StepContext, StepError};
use crate::colour::Pipeline;
use crate::media::{self, MediaFormat, RgbImage};
use crate::store::{StoreError, WorkDir};
use crate::task::{
    GapPolicy, Graph, PlateOutput, PublishInfo, Source, Step, StepKind, TaskId, TaskMessage,
};

/// Where one frame of the plate comes from.
#[derive(Debug, Clone, PartialEq)]
pub enum FrameSrc {
    /// A published still frame.
    File(PathBuf),
    /// 0-based index into the published movie.
    Movie(u64),
    /// Not published (a gap the graph's policy let through).
    Missing,
}

/// One frame of the plate in output order.
#[derive(Debug, Clone, PartialEq)]
pub struct PlateFrame {
    /// Output frame number (1001 …).
    pub number: i64,
    /// Its pixels.
    pub src: FrameSrc,
}

/// The published plate as the media steps see it.
#[derive(Debug, Clone)]
pub struct Plate {
    /// Frames in order.
    pub frames: Vec<PlateFrame>,
    /// The published movie, for movie plates.
    pub movie: Option<PathBuf>,
    /// The graph's publish info, when the step runs inside a graph.
    pub info: Option<PublishInfo>,
    /// The gap policy in force.
    pub gap_policy: GapPolicy,
}

impl Plate {
    /// The first frame that exists.
    pub fn first_present(&self) -> Option<(usize, &PlateFrame)> {
        self.frames
            .iter()
            .enumerate()
            .find(|(_, f)| f.src != FrameSrc::Missing)
    }

    /// Numbers of the missing frames.
    pub fn missing(&self) -> Vec<i64> {
        self.frames
            .iter()
            .filter(|f| f.src == FrameSrc::Missing)
            .map(|f| f.number)
            .collect()
    }
}

fn manifest(msg: &TaskMessage) -> Result<Option<Graph>, StepError> {
    match WorkDir::open(&msg.work_dir).and_then(|w| w.manifest()) {
        Ok(g) => Ok(Some(g)),
        Err(StoreError::NotAWorkDir { .. }) => Ok(None),
        Err(e) => Err(StepError::from_error(e)),
    }
}

/// Parses `media.gap_policy`; `graph` follows the graph's probe step (strict
/// without a graph).
fn gap_policy(ctx: &StepContext, graph: Option<&Graph>) -> Result<GapPolicy, StepError> {
    match ctx.settings.media.gap_policy.trim() {
        "fail" => Ok(GapPolicy::Fail),
        "black" => Ok(GapPolicy::Black),
        "previous" => Ok(GapPolicy::Previous),
        "graph" | "" => Ok(graph
            .and_then(|g| {
                g.nodes.iter().find_map(|n| match &n.step {
                    Step::Probe { gap_policy, .. } => Some(*gap_policy),
                    _ => None,
                })
            })
            .unwrap_or(GapPolicy::Fail)),
        other => Err(StepError::permanent(format!(
            "bad setting `media.gap_policy`: {other:?}; expected graph, fail, black or previous"
        ))),
    }
}

/// The published frames of `output`: the range comes from the graph's copy step
/// when there is a graph, else from the frames found in the folder.
pub fn plate(
    msg: &TaskMessage,
    output: &PlateOutput,
    ctx: &StepContext,
) -> Result<Plate, StepError> {
    let graph = manifest(msg)?;
    let policy = gap_policy(ctx, graph.as_ref())?;
    let copy_source = graph.as_ref().and_then(|g| {
        g.nodes.iter().find_map(|n| match &n.step {
            Step::Copy {
                source, output: o, ..
            } if o == output => Some(source.clone()),
            _ => None,
        })
    });
    let info = graph.map(|g| g.info);
    if MediaFormat::from_extension(&output.ext) == Some(MediaFormat::Movie) {
        let path = output
            .frames_dir
            .join(format!("{}.{}", output.plate_name, output.ext));
        let (first, count) = match copy_source {
            Some(Source::Movie { first, last, .. }) => {
                ((first - 1).max(0) as u64, (last - first + 1).max(0) as u64)
            }
            _ => {
                let info = media::movie::probe(&path).map_err(StepError::from_error)?;
                (0, info.frame_count)
            }
        };
        if count == 0 {
            return Err(StepError::permanent(format!(
                "{}: no frames to render (empty range)",
                path.display()
            )));
        }
        let frames = (0..count)
            .map(|i| PlateFrame {
                number: output.first_frame + i as i64,
                src: FrameSrc::Movie(first + i),
            })
            .collect();
        return Ok(Plate {
            frames,
            movie: Some(path),
            info,
            gap_policy: policy,
        });
    }
    let (first, last) = match copy_source {
        Some(s) => (output.first_frame, output.first_frame + s.frame_count() - 1),
        None => scan_range(output)?,
    };
    if last < first {
        return Err(StepError::permanent(format!(
            "{}: no published frames of {} to render",
            output.frames_dir.display(),
            output.plate_name
        )));
    }
    let frames: Vec<PlateFrame> = (first..=last)
        .map(|n| {
            let p = output.frame_path(n);
            let src = if p.is_file() {
                FrameSrc::File(p)
            } else {
                FrameSrc::Missing
            };
            PlateFrame { number: n, src }
        })
        .collect();
    let plate = Plate {
        frames,
        movie: None,
        info,
        gap_policy: policy,
    };
    let missing = plate.missing();
    if plate.first_present().is_none() {
        return Err(StepError::permanent(format!(
            "{}: none of the frames {first}-{last} of {} is published; run the copy step first",
            output.frames_dir.display(),
            output.plate_name
        )));
    }
    if !missing.is_empty() && policy == GapPolicy::Fail {
        return Err(StepError::permanent(format!(
            "{}: published frames {} of {} are missing (gap policy `fail`); publish again with the setting publish.gap_policy: black or previous, or set media.gap_policy",
            output.frames_dir.display(),
            super::ranges_text(&super::ranges(&missing)),
            output.plate_name
        )));
    }
    Ok(plate)
}

/// First and last frame numbers of `<plate>.<digits>.<ext>` files in the folder.
fn scan_range(output: &PlateOutput) -> Result<(i64, i64), StepError> {
    let dir = &output.frames_dir;
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StepError::permanent(format!(
                "{}: no published frames of {} (the folder does not exist); run the copy step first",
                dir.display(),
                output.plate_name
            )))
        }
        Err(e) => return Err(StepError::io("list", dir, &e)),
    };
    let prefix = format!("{}.", output.plate_name);
    let suffix = format!(".{}", output.ext);
    let (mut lo, mut hi) = (i64::MAX, i64::MIN);
    for entry in entries {
        let entry = entry.map_err(|e| StepError::io("list", dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(mid) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(&suffix))
        else {
            continue;
        };
        if mid.len() >= output.pad && mid.bytes().all(|b| b.is_ascii_digit()) {
            if let Ok(n) = mid.parse::<i64>() {
                lo = lo.min(n);
                hi = hi.max(n);
            }
        }
    }
    Ok((lo, hi))
}

/// Checks every published still frame's structure (cheap: headers and offset
/// tables) before anything is written, so a corrupt frame in the middle fails
/// the task with nothing written.
pub fn verify_frames(plate: &Plate, ctx: &StepContext) -> Result<(), StepError> {
    let pool = pool(ctx, StepKind::Proxy)?;
    pool.install(|| {
        plate.frames.par_iter().try_for_each(|f| match &f.src {
            FrameSrc::File(p) => media::verify_frame(p).map_err(StepError::from_error),
            _ => Ok(()),
        })
    })
}

/// The colour pipeline with the step's display override (empty = colour.display).
pub fn pipeline(ctx: &StepContext, colorspace: &str, display: &str) -> Result<Pipeline, StepError> {
    let settings = &ctx.settings;
    let mut colour = settings.colour.clone();
    if !display.trim().is_empty() {
        colour.display = display.trim().to_string();
    }
    let cs = Some(colorspace.trim()).filter(|c| !c.is_empty());
    Pipeline::from_settings(&colour, cs, Some(&settings.project.name))
        .map_err(StepError::from_error)
}

/// Keeps freed frame-sized buffers from staying in the heap (Linux with glibc).
///
/// glibc serves allocations over its mmap threshold (128 KiB at first) with
/// their own mappings, but raises the threshold to the size of each such block
/// freed, up to 32 MiB. After the first frame buffers and encoder packets come
/// and go, multi-megabyte blocks are then carved from the heap and their pages
/// stay resident after being freed: 20 MB of peak RSS in the ProRes benchmark.
/// Fixing the threshold at 1 MiB keeps the small, frequent blocks (decoded EXR
/// blocks, ~200 KB) in the heap, and gives the large, rare ones (frames,
/// packets) back when freed.
///
/// Fixing the mmap threshold also fixes the trim threshold at its 128 KiB
/// default, so every arena gave its top back to the kernel as soon as a
/// ~200 KB decoded EXR block was freed, and the next block faulted in fresh
/// zeroed pages: 60 000 page faults and 0.3–0.6 s of kernel time per 48-frame
/// H.264 review. The trim threshold is therefore set to 8 MiB (at most that
/// much free memory kept at the top of each arena; the peak RSS measured the
/// same). Process-wide; set once by the media steps.
pub fn limit_heap_retention() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            extern "C" {
                fn mallopt(
                    param: std::os::raw::c_int,
                    value: std::os::raw::c_int,
                ) -> std::os::raw::c_int;
            }
            // `M_TRIM_THRESHOLD` and `M_MMAP_THRESHOLD` in glibc's `malloc.h`.
            const M_TRIM_THRESHOLD: std::os::raw::c_int = -1;
            const M_MMAP_THRESHOLD: std::os::raw::c_int = -3;
            // SAFETY (both calls): mallopt only sets an allocator parameter;
            // glibc takes it at any time, from any thread.
            let ok = unsafe { mallopt(M_MMAP_THRESHOLD, 1 << 20) }
                + unsafe { mallopt(M_TRIM_THRESHOLD, 8 << 20) };
            if ok != 2 {
                tracing::debug!("mallopt(M_MMAP_THRESHOLD / M_TRIM_THRESHOLD) was refused");
            }
        });
    }
}

/// Frames processed at once.
pub fn jobs(ctx: &StepContext) -> usize {
    match ctx.settings.media.jobs {
        0 => std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(2),
        n => n,
    }
    .clamp(1, 64)
}

/// A pool of `media.jobs` threads for one step run.
pub fn pool(ctx: &StepContext, kind: StepKind) -> Result<rayon::ThreadPool, StepError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(jobs(ctx))
        .thread_name(move |i| format!("iom-{kind}-{i}"))
        .build()
        .map_err(|e| StepError::transient(format!("cannot start the {kind} thread pool: {e}")))
}

/// Decodes the frames `wanted` (indices into `plate.frames`) in parallel:
/// `None` for missing frames. Movie frames are decoded in one pass.
pub fn decode_batch(plate: &Plate, wanted: &[usize]) -> Result<Vec<Option<RgbImage>>, StepError> {
    if let Some(movie) = &plate.movie {
        let idx: Vec<u64> = wanted
            .iter()
            .filter_map(|&i| match plate.frames.get(i).map(|f| &f.src) {
                Some(FrameSrc::Movie(n)) => Some(*n),
                _ => None,
            })
            .collect();
        let imgs = media::movie::decode_frames(movie, &idx).map_err(StepError::from_error)?;
        return Ok(imgs.into_iter().map(Some).collect());
    }
    wanted
        .par_iter()
        .map(|&i| match plate.frames.get(i).map(|f| &f.src) {
            Some(FrameSrc::File(p)) => media::pixels::decode(p)
                .map(Some)
                .map_err(StepError::from_error),
            _ => Ok(None),
        })
        .collect()
}

/// The image size of the plate (display window), from the first present frame.
pub fn plate_size(plate: &Plate) -> Result<(u32, u32, f32), StepError> {
    if let Some(movie) = &plate.movie {
        let i = media::movie::probe(movie).map_err(StepError::from_error)?;
        return Ok((i.width, i.height, i.pixel_aspect));
    }
    match plate.first_present() {
        Some((
            _,
            PlateFrame {
                src: FrameSrc::File(p),
                ..
            },
        )) => {
            let i = media::read_frame_info(p).map_err(StepError::from_error)?;
            if i.width == 0 || i.height == 0 {
                return Err(StepError::permanent(format!(
                    "{}: the frame has no pixels",
                    p.display()
                )));
            }
            Ok((i.width, i.height, i.pixel_aspect))
        }
        _ => Err(StepError::permanent("the plate has no published frame")),
    }
}

/// Encodes 8-bit RGB as a JPEG with the given quality and chroma subsampling
/// (`4:4:4`, `4:2:2`, `4:2:0`).
pub fn encode_jpeg(
    rgb: &[u8],
    w: u32,
    h: u32,
    quality: u8,
    subsampling: &str,
    name: &Path,
) -> Result<Vec<u8>, StepError> {
    use jpeg_encoder::{ColorType, Encoder, SamplingFactor};
    let sampling = match subsampling.trim() {
        "4:4:4" | "444" => SamplingFactor::R_4_4_4,
        "4:2:2" | "422" => SamplingFactor::R_4_2_2,
        "4:2:0" | "420" => SamplingFactor::R_4_2_0,
        other => {
            return Err(StepError::permanent(format!(
                "bad setting `media.proxy.subsampling`: {other:?}; expected 4:4:4, 4:2:2 or 4:2:0"
            )))
        }
    };
    let (Ok(w16), Ok(h16)) = (u16::try_from(w), u16::try_from(h)) else {
        return Err(StepError::permanent(format!(
            "{}: {w}×{h} is too large for a JPEG (65535 pixels a side at most)",
            name.display()
        )));
    };
    let mut out = Vec::with_capacity(rgb.len() / 4);
    let mut enc = Encoder::new(&mut out, quality.clamp(1, 100));
    enc.set_sampling_factor(sampling);
    enc.encode(rgb, w16, h16, ColorType::Rgb).map_err(|e| {
        StepError::permanent(format!("cannot encode {} as JPEG: {e}", name.display()))
    })?;
    Ok(out)
}

/// Writes `bytes` to a new temporary name for `dest` and fsyncs it; the caller
/// renames it into place. Returns the temporary path.
pub fn write_temp(
    dest: &Path,
    bytes: &[u8],
    task: &TaskId,
    attempt: u32,
) -> Result<PathBuf, StepError> {
    use std::io::Write;
    let tmp = super::temp_path(dest, task, attempt);
    let r = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StepError::io("create", &tmp, &e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| StepError::io("write", &tmp, &e))
    })();
    if let Err(e) = r {
        let _ = fs::remove_file(&tmp);
        return Err(e);
    }
    Ok(tmp)
}
