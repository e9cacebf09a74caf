//! Sample deliveries for `iom demo`, the tests and the benchmarks.
//!
//! Everything is generated with iom's own writers (EXR through the `exr` crate,
//! DPX by hand, movies through FFmpeg), so a fresh clone needs no sample data.
//! Frames are written to a temporary name and renamed, like every iom output.

use std::path::{Path, PathBuf};

use crate::media::dpx::{self, DpxSpec};
use crate::media::exr::{self, ExrCompression, ExrSpec, Fill};
use crate::media::movie::{self, MovieSpec};
use crate::media::{MediaError, Window};
use crate::timecode::{FrameRate, Timecode};

/// Why a sample could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum SampleError {
    /// A folder or file could not be written.
    #[error("{path}: {source}")]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A media writer failed.
    #[error(transparent)]
    Media(#[from] MediaError),
}

impl crate::error::Classify for SampleError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            SampleError::Io { source, .. } => crate::error::io_class(source),
            SampleError::Media(e) => e.class(),
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> SampleError + '_ {
    move |source| SampleError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Image format of a generated sequence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PlateFormat {
    /// OpenEXR (half, ZIP).
    Exr,
    /// DPX 10-bit.
    Dpx,
}

/// A generated image sequence.
#[derive(Debug, Clone)]
pub struct PlateSpec {
    /// Folder (relative to the delivery) holding the frames.
    pub dir: String,
    /// File-name head, e.g. `A001C003_plate.`.
    pub head: String,
    /// Frame-number padding.
    pub pad: usize,
    /// Format.
    pub format: PlateFormat,
    /// First frame number.
    pub start: i64,
    /// Number of frames (missing ones included).
    pub count: i64,
    /// Display width.
    pub width: u32,
    /// Display height.
    pub height: u32,
    /// Overscan in pixels on each side (EXR: data window larger than display window).
    pub overscan: i32,
    /// Alpha channel (EXR).
    pub alpha: bool,
    /// EXR compression.
    pub compression: ExrCompression,
    /// Frame rate written in the headers.
    pub fps: Option<FrameRate>,
    /// Timecode of the first frame (advances one per frame).
    pub timecode: Option<&'static str>,
    /// Frames left out (a gap).
    pub missing: Vec<i64>,
    /// Frames written with zero bytes.
    pub zero_byte: Vec<i64>,
    /// Frames cut to half their size.
    pub truncated: Vec<i64>,
}

impl PlateSpec {
    /// A 24-fps EXR plate with timecode 01:00:00:00 and frames from 1001.
    pub fn exr(dir: &str, head: &str, width: u32, height: u32, count: i64) -> Self {
        PlateSpec {
            dir: dir.into(),
            head: head.into(),
            pad: 4,
            format: PlateFormat::Exr,
            start: 1001,
            count,
            width,
            height,
            overscan: 0,
            alpha: false,
            compression: ExrCompression::Zip16,
            fps: Some(FrameRate::FPS_24),
            timecode: Some("01:00:00:00"),
            missing: Vec::new(),
            zero_byte: Vec::new(),
            truncated: Vec::new(),
        }
    }

    /// Path of frame `n` under `delivery`.
    pub fn frame_path(&self, delivery: &Path, n: i64) -> PathBuf {
        let ext = match self.format {
            PlateFormat::Exr => "exr",
            PlateFormat::Dpx => "dpx",
        };
        delivery
            .join(&self.dir)
            .join(format!("{}{:0pad$}.{ext}", self.head, n, pad = self.pad))
    }
}

/// Writes a sequence; returns the frame paths that exist (missing frames skipped).
/// Frames are written in parallel on rayon's global pool.
pub fn write_plate(delivery: &Path, spec: &PlateSpec) -> Result<Vec<PathBuf>, SampleError> {
    use rayon::prelude::*;
    let folder = delivery.join(&spec.dir);
    std::fs::create_dir_all(&folder).map_err(io(&folder))?;
    let rate = spec.fps.unwrap_or(FrameRate::FPS_24);
    let tc0 = match spec.timecode {
        Some(t) => Some(
            Timecode::parse(t, rate, false).map_err(|e| MediaError::Unsupported {
                path: folder.clone(),
                detail: e.to_string(),
            })?,
        ),
        None => None,
    };
    let frames: Vec<i64> = (spec.start..spec.start + spec.count)
        .filter(|n| !spec.missing.contains(n))
        .collect();
    frames
        .par_iter()
        .map(|&n| {
            let path = spec.frame_path(delivery, n);
            let tc = tc0.map(|t| t.offset(n - spec.start));
            let seed = u32::try_from(n.rem_euclid(1 << 16)).unwrap_or(0);
            if spec.zero_byte.contains(&n) {
                std::fs::write(&path, b"").map_err(io(&path))?;
                return Ok(path);
            }
            match spec.format {
                PlateFormat::Exr => {
                    let display = Window {
                        x_min: 0,
                        y_min: 0,
                        x_max: spec.width as i32 - 1,
                        y_max: spec.height as i32 - 1,
                    };
                    let data = Window {
                        x_min: -spec.overscan,
                        y_min: -spec.overscan,
                        x_max: display.x_max + spec.overscan,
                        y_max: display.y_max + spec.overscan,
                    };
                    let e = ExrSpec {
                        display_window: display,
                        data_window: data,
                        compression: spec.compression,
                        alpha: spec.alpha,
                        timecode: tc,
                        fps: spec.fps,
                        fill: Fill::Pattern { seed },
                        ..ExrSpec::new(spec.width, spec.height)
                    };
                    exr::write_frame(&path, &e)?;
                }
                PlateFormat::Dpx => {
                    let d = DpxSpec {
                        timecode: tc,
                        film_fps: spec.fps.map(|r| r.as_f64() as f32),
                        tv_fps: spec.fps.map(|r| r.as_f64() as f32),
                        original_size: Some((spec.width, spec.height)),
                        fill: Fill::Pattern { seed },
                        ..DpxSpec::new(spec.width, spec.height)
                    };
                    dpx::write_frame(&path, &d)?;
                }
            }
            if spec.truncated.contains(&n) {
                let len = std::fs::metadata(&path).map_err(io(&path))?.len();
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map_err(io(&path))?;
                f.set_len(len / 2).map_err(io(&path))?;
            }
            Ok(path)
        })
        .collect()
}

/// One EDL event of a generated movie: a clip name, its source timecode and its
/// length; events are laid end to end on the record side from the movie's start.
#[derive(Debug, Clone)]
pub struct EdlClip {
    /// `* FROM CLIP NAME:` value.
    pub clip_name: &'static str,
    /// Source in timecode.
    pub src_in: &'static str,
    /// Record length in frames.
    pub frames: i64,
    /// `M2` speed (source frames per second), if retimed.
    pub speed: Option<f64>,
}

/// Writes a CMX3600 EDL whose record side starts at `record_start` and lays the
/// clips end to end.
pub fn write_edl(
    path: &Path,
    title: &str,
    rate: FrameRate,
    record_start: &str,
    clips: &[EdlClip],
) -> Result<(), SampleError> {
    let bad = |e: crate::timecode::TimecodeError| {
        SampleError::Media(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })
    };
    let mut rec = Timecode::parse(record_start, rate, false).map_err(bad)?;
    let mut text = format!(
        "TITLE: {title}\nFCM: {}\n\n",
        if rec.is_drop_frame() {
            "DROP FRAME"
        } else {
            "NON-DROP FRAME"
        }
    );
    for (i, c) in clips.iter().enumerate() {
        let src_in = Timecode::parse(c.src_in, rate, false).map_err(bad)?;
        let src_len = match c.speed {
            Some(s) => ((s / rate.as_f64()) * c.frames as f64).round().max(1.0) as i64,
            None => c.frames,
        };
        let reel = c.clip_name.split('_').next().unwrap_or("AX");
        let reel: String = reel.chars().take(8).collect();
        text.push_str(&format!(
            "{:03}  {:<8} V     C        {} {} {} {}\n",
            i + 1,
            reel,
            src_in,
            src_in.offset(src_len),
            rec,
            rec.offset(c.frames)
        ));
        if let Some(s) = c.speed {
            text.push_str(&format!("M2   {:<8}     {:05.1}    {}\n", reel, s, src_in));
        }
        text.push_str(&format!("* FROM CLIP NAME: {}\n\n", c.clip_name));
        rec = rec.offset(c.frames);
    }
    let tmp = path.with_extension("edl.tmp");
    std::fs::write(&tmp, text).map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))?;
    Ok(())
}

/// The folder `iom demo` scans, under a project root: `<root>/product/scan/demo_delivery`.
pub fn demo_delivery_dir(project_root: &Path) -> PathBuf {
    project_root
        .join("product")
        .join("scan")
        .join("demo_delivery")
}

/// Generates the demo delivery (small, a few seconds to write) and returns its folder:
/// - an ARRI-named EXR plate with overscan (data window larger than the display
///   window) and timecode at 24 fps;
/// - an EXR plate with a two-frame gap;
/// - a 10-bit DPX plate at 25 fps;
/// - a ProRes MOV with an EDL of three events, one retimed with `M2`.
///
/// Existing frames are overwritten; nothing else in the folder is touched.
pub fn demo_delivery(project_root: &Path) -> Result<PathBuf, SampleError> {
    let delivery = demo_delivery_dir(project_root);
    std::fs::create_dir_all(&delivery).map_err(io(&delivery))?;
    let plates = [
        PlateSpec {
            overscan: 32,
            ..PlateSpec::exr(
                "A001C003_220101_R1AB",
                "A001C003_220101_R1AB.",
                1280,
                720,
                24,
            )
        },
        PlateSpec {
            missing: vec![1006, 1007],
            timecode: Some("14:20:05:10"),
            ..PlateSpec::exr("B002C011_bg", "B002C011_bg_", 960, 540, 12)
        },
        PlateSpec {
            format: PlateFormat::Dpx,
            fps: Some(FrameRate::FPS_25),
            timecode: Some("10:00:00:00"),
            ..PlateSpec::exr("C003_dpx", "C003_plate.", 1024, 576, 12)
        },
    ];
    for p in &plates {
        write_plate(&delivery, p)?;
    }
    let mov = delivery.join("edit_ref_v001.mov");
    let spec = MovieSpec {
        timecode: Some("01:00:00:00".into()),
        ..MovieSpec::prores_hq(640, 360, FrameRate::FPS_24, 72)
    };
    movie::write_test_movie(&mov, &spec)?;
    write_edl(
        &delivery.join("edit_ref_v001.edl"),
        "edit_ref_v001",
        FrameRate::FPS_24,
        "01:00:00:00",
        &[
            EdlClip {
                clip_name: "A001C003_220101_R1AB.1001.exr",
                src_in: "01:00:00:00",
                frames: 24,
                speed: None,
            },
            EdlClip {
                clip_name: "B002C011_bg",
                src_in: "14:20:05:10",
                frames: 24,
                speed: Some(12.0),
            },
            EdlClip {
                clip_name: "C003_plate",
                src_in: "10:00:00:00",
                frames: 24,
                speed: None,
            },
        ],
    )?;
    Ok(delivery)
}

/// A benchmark delivery: `sequences` EXR plates of `frames` frames each
/// (`width × height`, half RGBA, ZIP, timecode at 24 fps) plus `movies` ProRes
/// movies with EDLs. Skipped when `<dir>/.complete` records the same parameters.
pub fn bench_delivery(
    dir: &Path,
    sequences: usize,
    frames: i64,
    width: u32,
    height: u32,
    movies: usize,
) -> Result<PathBuf, SampleError> {
    let marker = dir.join(".complete");
    let key = format!("{sequences} {frames} {width} {height} {movies}\n");
    if std::fs::read_to_string(&marker).ok().as_deref() == Some(key.as_str()) {
        return Ok(dir.to_path_buf());
    }
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    for i in 0..sequences {
        let name = format!("A{:03}C{:03}_bench", i / 10 + 1, i % 10 + 1);
        let spec = PlateSpec {
            alpha: true,
            ..PlateSpec::exr(&name, &format!("{name}."), width, height, frames)
        };
        write_plate(dir, &spec)?;
    }
    for i in 0..movies {
        let mov = dir.join(format!("reference_{:02}.mov", i + 1));
        let spec = MovieSpec {
            timecode: Some("01:00:00:00".into()),
            ..MovieSpec::prores_hq(1920, 1080, FrameRate::FPS_24, 48)
        };
        movie::write_test_movie(&mov, &spec)?;
        write_edl(
            &dir.join(format!("reference_{:02}.edl", i + 1)),
            "bench",
            FrameRate::FPS_24,
            "01:00:00:00",
            &[
                EdlClip {
                    clip_name: "A001C001_bench",
                    src_in: "01:00:00:00",
                    frames: 24,
                    speed: None,
                },
                EdlClip {
                    clip_name: "A001C002_bench",
                    src_in: "01:00:00:00",
                    frames: 24,
                    speed: None,
                },
            ],
        )?;
    }
    std::fs::write(&marker, key).map_err(io(&marker))?;
    Ok(dir.to_path_buf())
}

/// What the IO coordinator would type into the demo's scanlist: shot names for the
/// checked plates (`DEMO_0010`, `DEMO_0020` …) and the first movie event as a
/// `ref`; the other movie events are unchecked. Returns the number of rows to publish.
pub fn demo_edit(rows: &mut [crate::scanlist::Row]) -> usize {
    let mut n = 0;
    let mut movie_taken = false;
    for row in rows.iter_mut() {
        let is_movie = matches!(row.ext.as_str(), "mov" | "mxf");
        if is_movie {
            row.check = row.check && !movie_taken;
            movie_taken = true;
            row.seq_type = "ref".into();
        }
        if row.check {
            n += 1;
            row.shot_name = format!("DEMO_{:04}", n * 10);
            row.seq_name = "DEMO".into();
        }
    }
    n
}
