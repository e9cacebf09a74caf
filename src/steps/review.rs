//! `review`: review movies and the filmstrip of the published plate, with FFmpeg's
//! libraries (no Nuke, no ffmpeg CLI, no ImageMagick).
//!
//! - `<plate_dir>/<plate>.mp4`: H.264 (libx264, yuv420p, `media.review.crf`),
//!   even size (an odd last column/row is cropped), BT.709 tags, the plate's fps
//!   and a `tmcd` timecode track starting at the plate's first timecode.
//! - `<plate_dir>/<plate>.mov`: the delivery codec named by `media.review.codec`
//!   (or `project_codecs.<project>`) from the original's table: ProRes 4444/422 HQ/
//!   422/LT/Proxy (`prores_ks`), DNxHD 444/422 (fitted into 1920×1080), DNxHR 422.
//!   An unknown name fails the task before anything is written.
//! - `<plate_dir>/<plate>stream.jpeg`: evenly spaced frames side by side.
//!
//! Colour: the scan colour space through the colour table to `media.review.display`
//! (BT.1886 by default, matching the BT.709 tags). Optional burn-in (plate, frame,
//! timecode; built-in bitmap font) and an optional slate frame before the first
//! frame (the timecode then starts one frame earlier).
//!
//! The plate is decoded once and every movie is encoded in the same pass. A
//! decoder thread renders still frames one at a time (EXR blocks in parallel;
//! half-float frames through the colour table's lookups, [`HalfDisplay`]) one
//! frame ahead of the encoders; movie plates go in batches of `media.jobs`. Movies are written under iom temporary names,
//! fsynced and renamed; a movie that already exists and probes with the right codec
//! and frame count is kept (a re-run after a crash encodes only what is missing).

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use rayon::prelude::*;
use serde_json::json;

use super::media::{self as m, FrameSrc};
use super::{hash_file, hex64, temp_path, write_output_atomic, StepContext, StepError, StepOutput};
use crate::colour::{DisplayCode, HalfDisplay, Pipeline};
use crate::media::encode::{self, EncodeKind, EncodeSpec, MovieEncoder, Rgb16};
use crate::media::font::{text_height, text_width, Canvas, Surface};
use crate::media::{self, MediaFormat, RgbImage};
use crate::store::{fsync_dir, OutputFile};
use crate::task::{GapPolicy, PlateOutput, StepKind, TaskMessage};
use crate::thumbnail;
use crate::timecode::{FrameRate, Timecode};

/// One movie to write.
struct Target {
    dest: PathBuf,
    kind: EncodeKind,
    /// Encoder picture size.
    size: (u32, u32),
    /// Already complete: not re-encoded.
    done: bool,
}

/// The delivery codec for this project, or `None` for no MOV.
fn delivery_codec(ctx: &StepContext) -> Result<Option<encode::DeliveryCodec>, StepError> {
    let r = &ctx.settings.media.review;
    let (key, name) = match r.project_codecs.get(&ctx.settings.project.name) {
        Some(n) => (
            format!("media.review.project_codecs.{}", ctx.settings.project.name),
            n.clone(),
        ),
        None => ("media.review.codec".to_string(), r.codec.clone()),
    };
    if name.trim().is_empty() {
        return Ok(None);
    }
    encode::delivery_codec(&name)
        .map(Some)
        .map_err(|e| StepError::permanent(format!("bad setting `{key}`: {e}")))
}

/// Frame rate and start timecode of the plate's first frame.
fn rate_and_timecode(
    plate: &m::Plate,
    ctx: &StepContext,
) -> Result<(FrameRate, Option<Timecode>), StepError> {
    let (mut fps, mut tc_label, mut offset) = (None, None, 0i64);
    if let Some(movie) = &plate.movie {
        let i = media::movie::probe(movie).map_err(StepError::from_error)?;
        fps = Some(i.fps);
        tc_label = i.timecode;
        if let Some(FrameSrc::Movie(n)) = plate.frames.first().map(|f| &f.src) {
            offset = -(*n as i64);
        }
    } else if let Some((idx, f)) = plate.first_present() {
        if let FrameSrc::File(p) = &f.src {
            let i = media::read_frame_info(p).map_err(StepError::from_error)?;
            fps = i.fps;
            tc_label = i.timecode;
            offset = idx as i64;
        }
    }
    let info = plate.info.as_ref();
    if fps.is_none() {
        fps = info
            .and_then(|i| i.fps)
            .and_then(|f| FrameRate::from_f64(f).ok());
    }
    let fps = match fps {
        Some(f) => f,
        None => ctx
            .settings
            .media
            .review
            .default_fps
            .parse::<FrameRate>()
            .map_err(|e| {
                StepError::permanent(format!("bad setting `media.review.default_fps`: {e}"))
            })?,
    };
    if tc_label.is_none() {
        tc_label = info
            .map(|i| i.timecode_in.clone())
            .filter(|t| !t.trim().is_empty());
        offset = 0;
    }
    let tc = tc_label.and_then(|l| {
        let drop = l.contains(';');
        Timecode::parse(&l, fps, drop).ok()
    });
    // The first present frame's timecode, taken back to the plate's first frame.
    Ok((fps, tc.map(|t| t.offset(-offset))))
}

/// A movie there already, with the codec and frame count expected.
fn movie_complete(path: &Path, kind: &EncodeKind, frames: u64) -> bool {
    let Ok(i) = media::movie::probe(path) else {
        return false;
    };
    let codec = match kind {
        EncodeKind::H264 { .. } => "h264",
        EncodeKind::Delivery(c) if c.encoder == "prores_ks" => "prores",
        EncodeKind::Delivery(_) => "dnxhd",
    };
    i.codec == codec && i.frame_count == frames
}

/// Display-referred 16-bit RGB of a decoded frame (the exact float path).
fn to_rgb16(img: &RgbImage, p: &Pipeline) -> Rgb16 {
    let w = (img.width as usize).max(1);
    let mut out = Rgb16::black(img.width, img.height);
    let [r, g, b] = &mut out.planes;
    r.par_chunks_mut(w)
        .zip(g.par_chunks_mut(w))
        .zip(b.par_chunks_mut(w))
        .zip(img.data.par_chunks(w * 3))
        .for_each(|(((r, g), b), src)| {
            for (i, s) in src.chunks_exact(3).enumerate() {
                let v = p.apply([s[0], s[1], s[2]]).map(u16::from_unit);
                (r[i], g[i], b[i]) = (v[0], v[1], v[2]);
            }
        });
    out
}

/// A rendered frame: its index in the plate, its picture and, for a filmstrip
/// pick, its tile.
type Ready = (usize, Rgb16, Option<image::RgbImage>);

/// How the frames of a batch are rendered.
struct Render<'a> {
    plate: &'a m::Plate,
    size: (u32, u32),
    movie_pipe: &'a Pipeline,
    /// The movie pipeline as half-float tables, when it has no `.cube` LUT.
    half: Option<HalfDisplay<u16>>,
    strip_pipe: &'a Pipeline,
    /// Size the picked frames are rendered at (montage frame, else filmstrip tile).
    pick_size: (u32, u32),
    /// Frame indices picked for the filmstrip and the montage (empty when
    /// neither is written).
    picks: &'a [usize],
}

impl Render<'_> {
    fn check_size(&self, i: usize, width: u32, height: u32) -> Result<(), StepError> {
        let (w, h) = self.size;
        if width != w || height != h {
            return Err(StepError::permanent(format!(
                "frame {} is {width}×{height} but the plate is {w}×{h}; the frames of one plate must share a size",
                self.plate.frames[i].number
            )));
        }
        Ok(())
    }

    /// From a decoded float image: the exact colour path, and the tile.
    fn float(&self, i: usize, img: RgbImage) -> Result<Ready, StepError> {
        self.check_size(i, img.width, img.height)?;
        let tile = self
            .picks
            .contains(&i)
            .then(|| thumbnail::render(&img, self.strip_pipe, self.pick_size.0, self.pick_size.1));
        Ok((i, to_rgb16(&img, self.movie_pipe), tile))
    }

    /// One published still frame. Half-float EXR frames that make no tile go
    /// through the colour tables while their blocks are decoded; anything else
    /// is decoded to float and converted exactly.
    fn file(&self, i: usize, path: &Path, spare: Option<Rgb16>) -> Result<Ready, StepError> {
        let exr = MediaFormat::from_extension(
            path.extension()
                .and_then(|e| e.to_str())
                .unwrap_or_default(),
        ) == Some(MediaFormat::Exr);
        if let (true, Some(t), false) = (exr, &self.half, self.picks.contains(&i)) {
            let convert = |[r, g, b]: [&mut [u16]; 3]| t.rows_in_place([r, g, b]);
            if let Some(pic) = media::exr::read_half_planes_into(path, &convert, spare)
                .map_err(StepError::from_error)?
            {
                self.check_size(i, pic.width, pic.height)?;
                return Ok((i, pic, None));
            }
        }
        let img = media::pixels::decode(path).map_err(StepError::from_error)?;
        self.float(i, img)
    }

    /// The present frames `present` (in order), in parallel; a single still
    /// frame is decoded into `spare` when given.
    fn batch(&self, present: &[usize], spare: Option<Rgb16>) -> Result<Vec<Ready>, StepError> {
        if let [i] = present {
            if let FrameSrc::File(p) = &self.plate.frames[*i].src {
                return Ok(vec![self.file(*i, p, spare)?]);
            }
        }
        if self.plate.movie.is_some() {
            let imgs = m::decode_batch(self.plate, present)?;
            return imgs
                .into_par_iter()
                .zip(present.par_iter())
                .map(|(img, &i)| {
                    let img = img
                        .ok_or_else(|| StepError::permanent("a frame vanished while rendering"))?;
                    self.float(i, img)
                })
                .collect();
        }
        present
            .par_iter()
            .map(|&i| match &self.plate.frames[i].src {
                FrameSrc::File(p) => self.file(i, p, None),
                _ => Err(StepError::permanent("a frame vanished while rendering")),
            })
            .collect()
    }
}

/// What the burn-in and slate print.
struct Labels {
    plate: String,
    shot: String,
    version: String,
}

fn burn_in(c: &mut Canvas<'_>, l: &Labels, number: i64, tc: Option<Timecode>) {
    let scale = (c.height / 270).max(1);
    let margin = i64::from(scale * 6);
    let th = i64::from(text_height(scale));
    c.label(margin, margin, &format!("{} {}", l.shot, l.version), scale);
    let bottom = i64::from(c.height) - margin - th;
    c.label(margin, bottom, &number.to_string(), scale);
    if let Some(t) = tc {
        let s = t.to_string();
        let x = i64::from(c.width) - margin - i64::from(text_width(&s, scale));
        c.label(x, bottom, &s, scale);
    }
}

fn slate(c: &mut Canvas<'_>, lines: &[String]) {
    let scale = (c.height / 180).max(1);
    let th = i64::from(text_height(scale));
    let step = th * 2;
    let top = (i64::from(c.height) - step * lines.len() as i64) / 2;
    let left = i64::from(c.width / 10);
    for (i, line) in lines.iter().enumerate() {
        c.draw_text(
            left,
            top + step * i as i64,
            line,
            scale,
            [58000, 58000, 58000],
        );
    }
}

/// Runs the review step.
pub fn run(
    msg: &TaskMessage,
    output: &PlateOutput,
    colorspace: &str,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let r = ctx.settings.media.review.clone();
    let codec = delivery_codec(ctx)?;
    m::limit_heap_retention();
    if r.crf > 51 {
        return Err(StepError::permanent(format!(
            "bad setting `media.review.crf`: {} is outside 0..=51",
            r.crf
        )));
    }
    let movie_pipe = m::pipeline(ctx, colorspace, &r.display)?;
    let strip_pipe = m::pipeline(ctx, colorspace, &ctx.settings.media.proxy.display)?;
    let plate = m::plate(msg, output, ctx)?;
    let (w, h, par) = m::plate_size(&plate)?;
    let (fps, tc0) = rate_and_timecode(&plate, ctx)?;
    let n = plate.frames.len();
    let total = n as u64 + u64::from(r.slate);

    let mut targets = Vec::new();
    if r.mp4 {
        let kind = EncodeKind::H264 {
            crf: r.crf,
            preset: r.preset.clone(),
        };
        targets.push(Target {
            dest: output.movie_path("mp4"),
            size: EncodeSpec::output_size(&kind, w, h),
            kind,
            done: false,
        });
    }
    if let Some(c) = codec {
        let kind = EncodeKind::Delivery(c);
        targets.push(Target {
            dest: output.movie_path("mov"),
            size: EncodeSpec::output_size(&kind, w, h),
            kind,
            done: false,
        });
    }
    for t in &mut targets {
        t.done = movie_complete(&t.dest, &t.kind, total);
    }
    let strip_dest = output.filmstrip_path();
    // The filmstrip's frames (evenly spaced), also written one by one as the
    // montage frames.
    let pick_count = if r.filmstrip || r.montage {
        (r.filmstrip_frames as usize).max(1).min(n)
    } else {
        0
    };
    let strip_count = if r.filmstrip { pick_count } else { 0 };
    let picks: Vec<usize> = (0..pick_count).map(|k| k * n / pick_count).collect();
    let strip_done = strip_count == 0 || crate::media::jpeg::verify(&strip_dest).is_ok();
    let montage_dir = output.montage_dir();
    let montage_paths: Vec<PathBuf> = if r.montage {
        picks
            .iter()
            .map(|&i| {
                montage_dir.join(format!(
                    "{}.{:0pad$}.jpg",
                    output.plate_name,
                    plate.frames[i].number,
                    pad = output.pad
                ))
            })
            .collect()
    } else {
        Vec::new()
    };
    let montage_done = montage_paths
        .iter()
        .all(|p| crate::media::jpeg::verify(p).is_ok());
    let dir = &output.plate_dir;
    fs::create_dir_all(dir).map_err(|e| StepError::io("create folder", dir, &e))?;
    let mut stale = super::remove_stale_temps(dir, &msg.task_id)?;
    if !montage_paths.is_empty() {
        fs::create_dir_all(&montage_dir)
            .map_err(|e| StepError::io("create folder", &montage_dir, &e))?;
        stale += super::remove_stale_temps(&montage_dir, &msg.task_id)?;
    }
    let date = if r.date_burn_in && pick_count > 0 {
        Some(publish_date(msg, &plate))
    } else {
        None
    };
    let tile = thumbnail::fit(w, h, par, r.filmstrip_width.clamp(16, 4096), u32::MAX / 2);
    let montage_size = thumbnail::fit(w, h, par, r.montage_width.clamp(16, 8192), u32::MAX / 2);
    let pick_plan = Picks {
        indices: picks,
        strip: strip_count > 0 && !strip_done,
        montage: if montage_done {
            Vec::new()
        } else {
            montage_paths.clone()
        },
        date: date.clone(),
        tile,
        montage_size,
    };

    let work = targets.iter().any(|t| !t.done) || !strip_done || !montage_done;
    let labels = {
        let version = output
            .frames_dir
            .file_name()
            .map(|v| v.to_string_lossy().into_owned())
            .unwrap_or_default();
        Labels {
            plate: output.plate_name.clone(),
            shot: plate
                .info
                .as_ref()
                .map(|i| i.shot.clone())
                .unwrap_or_else(|| output.plate_name.clone()),
            version,
        }
    };

    let mut temps: Vec<(PathBuf, PathBuf)> = Vec::new();
    // Every frame's structure is checked (headers, chunk tables: cheap) while
    // the encoding starts, not before it: a bad frame stops the encode as soon
    // as the check finds it, and its error (naming the frame) is the task's.
    let stop = AtomicBool::new(false);
    let result = if work {
        std::thread::scope(|scope| {
            let check = (plate.movie.is_none()).then(|| {
                scope.spawn(|| {
                    let r = m::verify_frames(&plate, ctx);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed);
                    }
                    r
                })
            });
            let encoded = encode_all(
                msg,
                ctx,
                &plate,
                &targets,
                &movie_pipe,
                &strip_pipe,
                fps,
                tc0,
                &labels,
                (w, h),
                &pick_plan,
                &strip_dest,
                &stop,
                &mut temps,
            );
            let checked = match check.map(|c| c.join()) {
                None | Some(Ok(Ok(()))) => Ok(()),
                Some(Ok(Err(e))) => Err(e),
                Some(Err(_)) => Err(StepError::permanent("the frame check stopped unexpectedly")),
            };
            checked.and(encoded)
        })
    } else {
        Ok((None, Vec::new()))
    };
    let (strip_record, montage_written) = match result {
        Ok(s) => s,
        Err(e) => {
            for (tmp, _) in &temps {
                let _ = fs::remove_file(tmp);
            }
            return Err(e);
        }
    };
    for (tmp, dest) in &temps {
        let synced = fs::File::open(tmp).and_then(|f| f.sync_all());
        if let Err(e) = synced.and_then(|()| fs::rename(tmp, dest)) {
            for (t, _) in &temps {
                let _ = fs::remove_file(t);
            }
            return Err(StepError::io("put into place", dest, &e));
        }
    }
    fsync_dir(dir).map_err(|e| StepError::io("fsync folder", dir, &e))?;
    if !montage_written.is_empty() {
        fsync_dir(&montage_dir).map_err(|e| StepError::io("fsync folder", &montage_dir, &e))?;
    }

    let mut outputs = Vec::new();
    for t in &targets {
        let (size, hsh) = hash_file(&t.dest).map_err(|e| StepError::io("read", &t.dest, &e))?;
        outputs.push(OutputFile {
            path: t.dest.clone(),
            size,
            xxh3: hex64(hsh),
        });
    }
    if strip_count > 0 {
        let rec = match strip_record {
            Some(r) => r,
            None => {
                let (size, hsh) =
                    hash_file(&strip_dest).map_err(|e| StepError::io("read", &strip_dest, &e))?;
                OutputFile {
                    path: strip_dest.clone(),
                    size,
                    xxh3: hex64(hsh),
                }
            }
        };
        outputs.push(rec);
    }
    if montage_written.is_empty() {
        for p in &montage_paths {
            let (size, hsh) = hash_file(p).map_err(|e| StepError::io("read", p, &e))?;
            outputs.push(OutputFile {
                path: p.clone(),
                size,
                xxh3: hex64(hsh),
            });
        }
    } else {
        outputs.extend(montage_written);
    }
    crate::metrics::observe_io(
        StepKind::Review,
        0,
        outputs.iter().map(|o| o.size).sum(),
        n as u64,
    );
    Ok(StepOutput {
        outputs,
        summary: json!({
            "frames": n,
            "slate": r.slate,
            "burn_in": r.burn_in,
            "fps": fps.label(),
            "timecode": tc0.map(|t| t.to_string()),
            "movies": targets.iter().map(|t| json!({
                "path": t.dest.display().to_string(),
                "codec": match &t.kind { EncodeKind::H264 { .. } => "H.264".to_string(), EncodeKind::Delivery(c) => c.name.to_string() },
                "width": t.size.0, "height": t.size.1,
                "skipped": t.done,
            })).collect::<Vec<_>>(),
            "filmstrip": (strip_count > 0).then(|| strip_dest.display().to_string()),
            "montage": (!montage_paths.is_empty()).then(|| json!({
                "dir": montage_dir.display().to_string(),
                "frames": montage_paths.len(),
                "skipped": montage_done,
            })),
            "date": date,
            "missing": super::ranges(&plate.missing()).iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "colorspace": movie_pipe.colourspace(),
            "display": movie_pipe.display().name(),
            "stale_temps_removed": stale,
        }),
    })
}

/// The frames picked for the filmstrip and the montage, and what to make of them.
struct Picks {
    /// Frame indices (evenly spaced).
    indices: Vec<usize>,
    /// Write the filmstrip.
    strip: bool,
    /// Montage frames to write, one per index (empty: none to write).
    montage: Vec<PathBuf>,
    /// The date to burn in, if any.
    date: Option<String>,
    /// Size of a filmstrip tile.
    tile: (u32, u32),
    /// Size of a montage frame.
    montage_size: (u32, u32),
}

/// The publish date, `YYYY-MM-DD` in local time: the day the graph's manifest
/// was written (it is written once, so every run of the step burns the same
/// date and a re-run makes identical files). Outside a graph, the day the
/// first published frame (or movie) was written.
fn publish_date(msg: &TaskMessage, plate: &m::Plate) -> String {
    let manifest = msg.work_dir.join(crate::store::MANIFEST);
    let source = plate
        .frames
        .iter()
        .find_map(|f| match &f.src {
            FrameSrc::File(p) => Some(p.clone()),
            _ => None,
        })
        .or_else(|| plate.movie.clone());
    let when = fs::metadata(&manifest)
        .and_then(|m| m.modified())
        .or_else(|e| match &source {
            Some(p) => fs::metadata(p).and_then(|m| m.modified()),
            None => Err(e),
        })
        .unwrap_or_else(|_| std::time::SystemTime::now());
    local_date(when)
}

/// `YYYY-MM-DD` of `t` in the local time zone (`TZ`, else /etc/localtime).
fn local_date(t: std::time::SystemTime) -> String {
    let secs = match t.duration_since(std::time::UNIX_EPOCH) {
        Ok(d) => d.as_secs() as libc::time_t,
        Err(_) => 0,
    };
    // SAFETY: `localtime_r` only reads `secs` and writes the `tm` it is given;
    // a zeroed `tm` is a valid value of that plain C struct.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        if libc::localtime_r(&secs, &mut tm).is_null() {
            return "1970-01-01".into();
        }
        tm
    };
    format!(
        "{:04}-{:02}-{:02}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday
    )
}

/// Burns `date` into the top-left corner of a montage frame or tile, at a
/// size that follows the picture's width (the original: 200 px text on a 2K
/// frame, in a half-black box).
fn date_label(img: &mut image::RgbImage, date: &str) {
    let scale = (img.width() / 120).max(1);
    let at = i64::from(scale * 3);
    img.label(at, at, date, scale);
}

/// Writes `bytes` to a new temporary file next to `dest` (not yet synced; the
/// caller syncs and renames it, or removes it) and records it in `temps`.
fn write_temp(
    dest: &Path,
    bytes: &[u8],
    msg: &TaskMessage,
    temps: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<OutputFile, StepError> {
    use std::io::Write;
    let tmp = temp_path(dest, &msg.task_id, msg.attempt);
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&tmp)
        .map_err(|e| StepError::io("create", &tmp, &e))?;
    temps.push((tmp.clone(), dest.to_path_buf()));
    f.write_all(bytes)
        .map_err(|e| StepError::io("write", &tmp, &e))?;
    Ok(OutputFile {
        path: dest.to_path_buf(),
        size: bytes.len() as u64,
        xxh3: hex64(xxhash_rust::xxh3::xxh3_64(bytes)),
    })
}

/// Decodes the plate once and feeds every encoder that is not done, the
/// filmstrip and the montage frames. Temporary files (movies, montage frames)
/// are pushed to `temps` as they are created (the caller renames or removes
/// them). Returns the filmstrip's record when it was written, and the montage
/// frames' records when they were.
#[allow(clippy::too_many_arguments)]
fn encode_all(
    msg: &TaskMessage,
    ctx: &StepContext,
    plate: &m::Plate,
    targets: &[Target],
    movie_pipe: &Pipeline,
    strip_pipe: &Pipeline,
    fps: FrameRate,
    tc0: Option<Timecode>,
    labels: &Labels,
    (w, h): (u32, u32),
    p: &Picks,
    strip_dest: &Path,
    stop: &AtomicBool,
    temps: &mut Vec<(PathBuf, PathBuf)>,
) -> Result<(Option<OutputFile>, Vec<OutputFile>), StepError> {
    let r = &ctx.settings.media.review;
    let n = plate.frames.len();
    let movie_tc = tc0.map(|t| if r.slate { t.offset(-1) } else { t });
    let mut encoders: Vec<MovieEncoder> = Vec::new();
    let mut encoder_temps: Vec<PathBuf> = Vec::new();
    for t in targets.iter().filter(|t| !t.done) {
        let tmp = temp_path(&t.dest, &msg.task_id, msg.attempt);
        temps.push((tmp.clone(), t.dest.clone()));
        encoder_temps.push(tmp.clone());
        let spec = EncodeSpec {
            kind: t.kind.clone(),
            width: t.size.0,
            height: t.size.1,
            fps,
            timecode: movie_tc.map(|t| t.to_string()),
            threads: r.encoder_threads,
        };
        encoders.push(
            MovieEncoder::create(&tmp, &spec)
                .map_err(|e| StepError::permanent(format!("{}: {e}", t.dest.display())))?,
        );
    }
    let map_err = |e: media::MediaError| encoder_error(e, &encoder_temps);

    if r.slate {
        let first = plate.frames.first().map(|f| f.number).unwrap_or(0);
        let last = plate.frames.last().map(|f| f.number).unwrap_or(0);
        let mut lines = vec![
            labels.plate.clone(),
            format!("SHOT {}  {}", labels.shot, labels.version),
            format!("FRAMES {first}-{last} ({n})"),
            format!("FPS {}", fps.label()),
            format!("COLOUR {}", movie_pipe.colourspace()),
        ];
        if let Some(t) = tc0 {
            lines.push(format!("TC IN {t}"));
            lines.push(format!("TC OUT {}", t.offset(n as i64 - 1)));
        }
        for e in &mut encoders {
            let (ew, eh) = e.size();
            e.push(&Rgb16::black(ew, eh), Some(&mut |c| slate(c, &lines)))
                .map_err(map_err)?;
        }
    }

    // The picked frames are rendered at the montage size when montage frames
    // are written (the tiles are scaled down from them), else at the tile size.
    let want_strip = p.strip;
    let want_montage = !p.montage.is_empty();
    let want_picks = want_strip || want_montage;
    let (tile_w, tile_h) = p.tile;
    let (pick_w, pick_h) = if want_montage { p.montage_size } else { p.tile };
    let mut tiles: Vec<Option<image::RgbImage>> = vec![None; p.indices.len()];
    let mut montage_out = Vec::new();
    let q = ctx.settings.media.proxy.quality.clamp(1, 100);

    let pool = m::pool(ctx, StepKind::Review)?;
    let render = Render {
        plate,
        size: (w, h),
        movie_pipe,
        half: movie_pipe.half_display::<u16>(),
        strip_pipe,
        pick_size: (pick_w, pick_h),
        picks: if want_picks { &p.indices } else { &[] },
    };
    // Still frames one at a time (each frame's blocks decode in parallel), a
    // movie plate in batches of `media.jobs` (it decodes in one pass per batch).
    let batch_len = if plate.movie.is_some() {
        m::jobs(ctx)
    } else {
        1
    };
    let idx: Vec<usize> = (0..n).collect();
    let cancel = &*ctx.cancel;
    // The decoder runs one batch ahead of the encoders: it renders the next
    // batch while this thread (and the encoders' own threads) encode the last,
    // then waits for it to be taken (a rendezvous channel), so at most two
    // batches are held. Encoded pictures go back to it to be decoded into.
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<Vec<Ready>, StepError>>(0);
    let (spare_tx, spare_rx) = std::sync::mpsc::channel::<Rgb16>();
    std::thread::scope(|scope| -> Result<(), StepError> {
        // Owned here, so an early return closes the channel and the decoder
        // (blocked on a full channel) stops before the scope joins it.
        let rx = rx;
        let render = &render;
        let pool = &pool;
        let idx = &idx;
        scope.spawn(move || {
            for batch in idx.chunks(batch_len) {
                let present: Vec<usize> = batch
                    .iter()
                    .copied()
                    .filter(|&i| plate.frames[i].src != FrameSrc::Missing)
                    .collect();
                // Keep one spare picture; drop any extra.
                let spare = spare_rx.try_iter().last();
                let result = if cancel.load(Ordering::Relaxed) || stop.load(Ordering::Relaxed) {
                    Err(StepError::Cancelled)
                } else {
                    pool.install(|| render.batch(&present, spare))
                };
                let failed = result.is_err();
                // A closed channel: the encoding side stopped (an error).
                if tx.send(result).is_err() || failed {
                    return;
                }
            }
        });
        let mut last: Option<Rgb16> = None;
        let mut last_tile: Option<image::RgbImage> = None;
        for batch in idx.chunks(batch_len) {
            ctx.check_cancel()?;
            if stop.load(Ordering::Relaxed) {
                return Err(StepError::Cancelled);
            }
            let rendered = rx
                .recv()
                .map_err(|_| StepError::permanent("the frame decoder stopped unexpectedly"))??;
            let mut rendered = rendered.into_iter().peekable();
            for &i in batch {
                let f = &plate.frames[i];
                let (pic, tile) = match rendered.peek() {
                    Some((j, _, _)) if *j == i => match rendered.next() {
                        Some((_, p, t)) => (p, t),
                        None => return Err(StepError::permanent("a rendered frame went missing")),
                    },
                    _ => {
                        // A gap the policy lets through.
                        let pic = match (plate.gap_policy, &last) {
                            (GapPolicy::Previous, Some(l)) => l.clone(),
                            _ => Rgb16::black(w, h),
                        };
                        let t = match (plate.gap_policy, &last_tile) {
                            (GapPolicy::Previous, Some(t)) => Some(t.clone()),
                            _ => Some(image::RgbImage::new(pick_w, pick_h)),
                        };
                        (pic, t.filter(|_| want_picks && p.indices.contains(&i)))
                    }
                };
                let tc = tc0.map(|t| t.offset(i as i64));
                for e in &mut encoders {
                    let (ew, eh) = e.size();
                    let placed;
                    let pic = if (pic.width, pic.height) == (ew, eh) {
                        &pic
                    } else {
                        placed = pic.clone().placed(ew, eh);
                        &placed
                    };
                    if r.burn_in {
                        e.push(pic, Some(&mut |c| burn_in(c, labels, f.number, tc)))
                            .map_err(map_err)?;
                    } else {
                        e.push(pic, None).map_err(map_err)?;
                    }
                }
                if let Some(t) = tile {
                    if let Some(k) = p.indices.iter().position(|&x| x == i) {
                        if want_montage {
                            let mut frame = t.clone();
                            if let Some(d) = &p.date {
                                date_label(&mut frame, d);
                            }
                            let dest = &p.montage[k];
                            let bytes = m::encode_jpeg(
                                frame.as_raw(),
                                frame.width(),
                                frame.height(),
                                q,
                                "4:2:0",
                                dest,
                            )?;
                            montage_out.push(write_temp(dest, &bytes, msg, temps)?);
                        }
                        if want_strip {
                            let mut small = if t.dimensions() == (tile_w, tile_h) {
                                t.clone()
                            } else {
                                image::imageops::resize(
                                    &t,
                                    tile_w,
                                    tile_h,
                                    image::imageops::FilterType::Triangle,
                                )
                            };
                            if let Some(d) = &p.date {
                                date_label(&mut small, d);
                            }
                            tiles[k] = Some(small);
                        }
                    }
                    last_tile = Some(t);
                }
                if plate.gap_policy == GapPolicy::Previous {
                    last = Some(pic);
                } else {
                    // Back to the decoder for the next frame (it may have gone).
                    let _ = spare_tx.send(pic);
                }
            }
        }
        Ok(())
    })?;
    for e in encoders {
        e.finish().map_err(map_err)?;
    }

    if !want_strip {
        return Ok((None, montage_out));
    }
    let sw = tile_w as usize * p.indices.len();
    let mut strip = vec![0u8; sw * tile_h as usize * 3];
    for (k, t) in tiles.iter().enumerate() {
        let Some(t) = t else { continue };
        let tw = t.width() as usize;
        for y in 0..(t.height() as usize).min(tile_h as usize) {
            let src = &t.as_raw()[y * tw * 3..(y + 1) * tw * 3];
            let off = (y * sw + k * tile_w as usize) * 3;
            strip[off..off + tw.min(tile_w as usize) * 3]
                .copy_from_slice(&src[..tw.min(tile_w as usize) * 3]);
        }
    }
    let bytes = m::encode_jpeg(&strip, sw as u32, tile_h, q, "4:2:0", strip_dest)?;
    let strip = write_output_atomic(strip_dest, &bytes, &msg.task_id, msg.attempt)?;
    Ok((Some(strip), montage_out))
}

/// An encoder's error as a step error. When the file it was writing is one of
/// this run's temporary movies and is gone, a concurrent attempt of this task
/// removed it (attempts remove their task's stale temporaries first, and a
/// parent's redelivery can publish a task twice): the vanished-temporary case of
/// [`super::temp_error`], retried, not dead-lettered as FFmpeg's ENOENT would be.
fn encoder_error(e: media::MediaError, ours: &[PathBuf]) -> StepError {
    let path = e.path();
    if ours.iter().any(|t| t == path) && !path.exists() {
        let gone = std::io::Error::from(std::io::ErrorKind::NotFound);
        return super::temp_error("encode into", path, &gone);
    }
    StepError::from_error(e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{Classify, ErrorClass};

    #[test]
    fn an_encoder_error_on_a_vanished_temporary_of_this_run_is_retried() {
        let dir = tempfile::tempdir().unwrap();
        let ours = dir.path().join(".A.mp4.iom-tmp-g.review-1-00");
        let ffmpeg = |p: &Path| media::MediaError::Ffmpeg {
            path: p.to_path_buf(),
            detail: "writing the trailer: No such file or directory".into(),
        };
        // Gone: a concurrent attempt removed it.
        let e = encoder_error(ffmpeg(&ours), std::slice::from_ref(&ours));
        assert_eq!(e.class(), ErrorClass::Transient, "{e}");
        assert!(e.to_string().contains("vanished"), "{e}");
        // Still there, or not ours: FFmpeg's own verdict (permanent).
        std::fs::write(&ours, b"x").unwrap();
        let e = encoder_error(ffmpeg(&ours), std::slice::from_ref(&ours));
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
        let other = dir.path().join("other.mp4");
        let e = encoder_error(ffmpeg(&other), std::slice::from_ref(&ours));
        assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    }
}
