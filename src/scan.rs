//! The scan of a delivery, end to end: discover → read headers and check every
//! frame → thumbnails → rows → scanlist.
//!
//! Work runs on a bounded pool (`--jobs`): one item (a sequence or a movie) per
//! task, and inside a sequence the per-frame structural checks fan out on the same
//! pool. Memory stays bounded by the pool size: each task holds at most one
//! decoded frame at a time, and rows are small. A bad item never stops the scan:
//! it becomes an [`Issue`] and the other rows are still written.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::colour::Pipeline;
use crate::config::Settings;
use crate::edl::{self, Edl};
use crate::media::{self, movie, ImageInfo};
use crate::scanlist::{self, Issue, Row, Severity};
use crate::seq::{self, Movie, Sequence};
use crate::thumbnail;
use crate::timecode::{FrameRate, Timecode};

/// What to scan and how.
#[derive(Debug, Clone)]
pub struct ScanOptions {
    /// The delivery folder.
    pub delivery: PathBuf,
    /// Scan colour space (else the project's, else the configured default).
    pub colorspace: Option<String>,
    /// Worker threads (`None` = settings).
    pub jobs: Option<usize>,
    /// Where to write the scanlist (`None` = next `scanlist_NN.xlsx` in the delivery).
    pub output: Option<PathBuf>,
    /// Write the scanlist at all.
    pub write_scanlist: bool,
    /// Make thumbnails.
    pub thumbnails: bool,
}

impl ScanOptions {
    /// Defaults for a delivery: thumbnails on, scanlist written beside the plates.
    pub fn new(delivery: impl Into<PathBuf>) -> Self {
        ScanOptions {
            delivery: delivery.into(),
            colorspace: None,
            jobs: None,
            output: None,
            write_scanlist: true,
            thumbnails: true,
        }
    }
}

/// Progress callbacks (the CLI draws a bar; tests and `--json` pass [`NoProgress`]).
pub trait Progress: Sync {
    /// The number of items is known.
    fn start(&self, items: u64);
    /// One item is done.
    fn item_done(&self, label: &str);
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;

impl Progress for NoProgress {
    fn start(&self, _items: u64) {}
    fn item_done(&self, _label: &str) {}
}

/// Counts for the closing summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Summary {
    /// Image sequences found.
    pub sequences: u64,
    /// Movies found.
    pub movies: u64,
    /// Frames in all sequences.
    pub frames: u64,
    /// Missing frames (inside sequence ranges).
    pub missing_frames: u64,
    /// Sequences with at least one gap.
    pub sequences_with_gaps: u64,
    /// Zero-byte or truncated frames.
    pub bad_frames: u64,
    /// Rows written.
    pub rows: u64,
    /// Items that produced no row.
    pub errors: u64,
    /// Warnings.
    pub warnings: u64,
}

/// The result of a scan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ScanReport {
    /// The delivery scanned.
    pub delivery: PathBuf,
    /// The scan colour space used.
    pub colorspace: String,
    /// Rows, in scanlist order.
    pub rows: Vec<Row>,
    /// Everything worth a look, errors first.
    pub issues: Vec<Issue>,
    /// Per-sequence gap details.
    pub gaps: Vec<GapReport>,
    /// Counts.
    pub summary: Summary,
    /// The scanlist written, if any (none when nothing was found).
    pub scanlist: Option<PathBuf>,
}

/// Missing and bad frames of one sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GapReport {
    /// `dir/head%04d.ext`.
    pub sequence: String,
    /// Missing ranges.
    pub missing: Vec<seq::FrameRange>,
    /// Zero-byte frames.
    pub zero_byte: Vec<i64>,
    /// Truncated or corrupt frames, with the reason.
    pub corrupt: Vec<(i64, String)>,
}

/// Why a scan could not run at all (item failures are [`Issue`]s, not errors).
#[derive(Debug, thiserror::Error)]
pub enum ScanError {
    /// The delivery could not be walked.
    #[error(transparent)]
    Discover(#[from] seq::SeqError),
    /// Colour settings are unusable.
    #[error("colour: {0}")]
    Colour(String),
    /// The scanlist could not be written.
    #[error("cannot write the scanlist: {0}")]
    Scanlist(#[from] scanlist::ScanlistError),
    /// The worker pool could not start.
    #[error("cannot start {jobs} scan threads: {message}")]
    Pool {
        /// Threads asked for.
        jobs: usize,
        /// The cause.
        message: String,
    },
}

impl crate::error::Classify for ScanError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            ScanError::Discover(e) => e.class(),
            ScanError::Scanlist(e) => e.class(),
            ScanError::Pool { .. } => crate::error::ErrorClass::Transient,
            ScanError::Colour(_) => crate::error::ErrorClass::Permanent,
        }
    }
}

/// One item's outcome.
#[derive(Default)]
struct ItemResult {
    rows: Vec<Row>,
    issues: Vec<Issue>,
    gap: Option<GapReport>,
    bad_frames: u64,
}

/// Scans a delivery.
pub fn scan(
    settings: &Settings,
    opts: &ScanOptions,
    progress: &dyn Progress,
) -> Result<ScanReport, ScanError> {
    let delivery = std::path::absolute(&opts.delivery).unwrap_or_else(|_| opts.delivery.clone());
    let pipeline = Pipeline::from_settings(
        &settings.colour,
        opts.colorspace.as_deref(),
        Some(settings.project.name.as_str()),
    )
    .map_err(|e| ScanError::Colour(e.to_string()))?;
    let colorspace = pipeline.colourspace().to_string();
    let jobs = opts.jobs.unwrap_or_else(|| settings.scan_jobs()).max(1);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs)
        .thread_name(|i| format!("iom-scan-{i}"))
        .build()
        .map_err(|e| ScanError::Pool {
            jobs,
            message: e.to_string(),
        })?;

    let found = seq::discover(&delivery, &settings.scan)?;
    tracing::debug!(
        sequences = found.sequences.len(),
        movies = found.movies.len(),
        files = found.files_seen,
        "discovered"
    );
    let mut issues: Vec<Issue> = found
        .issues
        .iter()
        .map(|w| Issue {
            severity: if w.is_error {
                Severity::Error
            } else {
                Severity::Warning
            },
            path: w.path.display().to_string(),
            message: w.message.clone(),
        })
        .collect();

    let thumb_names = thumbnail_names(&delivery, &found.sequences, &settings.thumbnail.dir_name);
    let ctx = Ctx {
        settings,
        pipeline: &pipeline,
        thumbnails: opts.thumbnails,
    };
    progress.start((found.sequences.len() + found.movies.len()) as u64);
    let results: Vec<ItemResult> = pool.install(|| {
        let seqs = found
            .sequences
            .par_iter()
            .zip(thumb_names.par_iter())
            .map(|(s, thumb)| {
                let r = scan_sequence(&ctx, s, thumb);
                progress.item_done(&s.pattern());
                r
            });
        let movs = found.movies.par_iter().map(|m| {
            let r = scan_movie(&ctx, m);
            progress.item_done(&m.path.display().to_string());
            r
        });
        seqs.chain(movs).collect()
    });

    let mut summary = Summary {
        sequences: found.sequences.len() as u64,
        movies: found.movies.len() as u64,
        frames: found.sequences.iter().map(|s| s.frames.len() as u64).sum(),
        ..Summary::default()
    };
    let mut rows = Vec::new();
    let mut gaps = Vec::new();
    for r in results {
        summary.bad_frames += r.bad_frames;
        if let Some(g) = r.gap {
            let missing: i64 = g.missing.iter().map(|m| m.len()).sum();
            summary.missing_frames += missing as u64;
            if missing > 0 {
                summary.sequences_with_gaps += 1;
            }
            gaps.push(g);
        }
        rows.extend(r.rows);
        issues.extend(r.issues);
    }
    rows.sort_by(|a, b| {
        (&a.scan_path, &a.scan_name, a.start_frame, &a.ext).cmp(&(
            &b.scan_path,
            &b.scan_name,
            b.start_frame,
            &b.ext,
        ))
    });
    issues.sort_by(|a, b| {
        (a.severity != Severity::Error, &a.path).cmp(&(b.severity != Severity::Error, &b.path))
    });
    summary.rows = rows.len() as u64;
    summary.errors = issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .count() as u64;
    summary.warnings = issues.len() as u64 - summary.errors;

    // Nothing found: no empty scanlist for a coordinator to open.
    let scanlist = if opts.write_scanlist && !rows.is_empty() {
        let path = match &opts.output {
            Some(p) => p.clone(),
            None => scanlist::write::next_scanlist_path(&delivery)?,
        };
        scanlist::write::write(&path, &rows, &issues, &settings.scanlist)?;
        Some(path)
    } else {
        None
    };
    Ok(ScanReport {
        delivery,
        colorspace,
        rows,
        issues,
        gaps,
        summary,
        scanlist,
    })
}

struct Ctx<'a> {
    settings: &'a Settings,
    pipeline: &'a Pipeline,
    thumbnails: bool,
}

/// Thumbnail folder for a sequence: beside its folder, as the original wrote them
/// (`<parent of scan_path>/.thumbnail/`), or inside it for plates lying in the
/// delivery root itself so nothing is written outside the delivery.
pub fn sequence_thumbnail_dir(delivery: &Path, seq_dir: &Path, dir_name: &str) -> PathBuf {
    match seq_dir.parent() {
        Some(parent) if seq_dir != delivery && parent.starts_with(delivery) => {
            parent.join(dir_name)
        }
        _ => seq_dir.join(dir_name),
    }
}

/// `<dir name>_<head><first frame>.jpg`, made unique within each thumbnail folder
/// (two sequences with the same head and first frame in one folder get their
/// extension added) — the original overwrote such thumbnails.
fn thumbnail_names(delivery: &Path, seqs: &[Sequence], dir_name: &str) -> Vec<PathBuf> {
    let mut used: BTreeSet<PathBuf> = BTreeSet::new();
    seqs.iter()
        .map(|s| {
            let tdir = sequence_thumbnail_dir(delivery, &s.dir, dir_name);
            let dname = s
                .dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            let first = s
                .frames
                .first()
                .map(|f| f.digits.clone())
                .unwrap_or_default();
            let base = format!("{dname}_{}{first}", s.head);
            let mut p = tdir.join(format!("{base}.jpg"));
            if used.contains(&p) {
                p = tdir.join(format!("{base}_{}.jpg", s.ext_lower()));
            }
            let mut n = 2;
            while used.contains(&p) {
                p = tdir.join(format!("{base}_{}_{n}.jpg", s.ext_lower()));
                n += 1;
            }
            used.insert(p.clone());
            p
        })
        .collect()
}

fn issue(severity: Severity, path: &Path, message: impl Into<String>) -> Issue {
    Issue {
        severity,
        path: path.display().to_string(),
        message: message.into(),
    }
}

fn scan_sequence(ctx: &Ctx<'_>, s: &Sequence, thumb: &Path) -> ItemResult {
    let mut out = ItemResult::default();
    let label = s.dir.join(s.pattern());
    let zero: BTreeSet<i64> = s.zero_byte().into_iter().collect();

    // Structural check of every frame, in parallel on the same pool.
    let corrupt: Vec<(i64, String)> = if ctx.settings.scan.verify_frames {
        let mut c: Vec<(i64, String)> = s
            .frames
            .par_iter()
            .filter(|f| !zero.contains(&f.number))
            .filter_map(|f| {
                media::verify_frame(&s.path_of(f))
                    .err()
                    .map(|e| (f.number, e.to_string()))
            })
            .collect();
        c.sort();
        c
    } else {
        Vec::new()
    };
    let bad: BTreeSet<i64> = zero
        .iter()
        .copied()
        .chain(corrupt.iter().map(|c| c.0))
        .collect();
    out.bad_frames = bad.len() as u64;
    let missing = s.missing();
    let gap = GapReport {
        sequence: label.display().to_string(),
        missing: missing.clone(),
        zero_byte: zero.iter().copied().collect(),
        corrupt: corrupt.clone(),
    };

    // Headers from the first and last *good* frames.
    let good: Vec<&seq::Frame> = s
        .frames
        .iter()
        .filter(|f| !bad.contains(&f.number))
        .collect();
    let (Some(first), Some(last)) = (good.first(), good.last()) else {
        out.issues.push(issue(
            Severity::Error,
            &label,
            format!(
                "no readable frame in {} frames ({} zero-byte, {} corrupt); re-deliver the sequence",
                s.frames.len(),
                zero.len(),
                corrupt.len()
            ),
        ));
        out.gap = Some(gap);
        return out;
    };
    let first_info = match media::read_frame_info(&s.path_of(first)) {
        Ok(i) => i,
        Err(e) => {
            out.issues
                .push(issue(Severity::Error, &label, e.to_string()));
            out.gap = Some(gap);
            return out;
        }
    };
    let last_info = if last.number == first.number {
        Ok(first_info.clone())
    } else {
        media::read_frame_info(&s.path_of(last))
    };
    let last_info = match last_info {
        Ok(i) => i,
        Err(e) => {
            out.issues
                .push(issue(Severity::Warning, &s.path_of(last), e.to_string()));
            first_info.clone()
        }
    };

    // Warnings that keep the row but uncheck it.
    let mut problems = Vec::new();
    if !missing.is_empty() {
        let n: i64 = missing.iter().map(|m| m.len()).sum();
        let list: Vec<String> = missing.iter().map(ToString::to_string).collect();
        problems.push(format!("{n} missing frame(s): {}", list.join(", ")));
    }
    if !zero.is_empty() {
        let list: Vec<String> = zero.iter().map(ToString::to_string).collect();
        problems.push(format!("zero-byte frame(s): {}", list.join(", ")));
    }
    for (n, why) in &corrupt {
        problems.push(format!("frame {n} unreadable: {why}"));
    }
    for p in &problems {
        out.issues.push(issue(
            Severity::Warning,
            &label,
            format!("{p}; row left unchecked, re-deliver or publish with a gap policy"),
        ));
    }
    if let (Some(d), Some(w)) = (first_info.data_window, first_info.display_window) {
        if d != w {
            out.issues.push(issue(
                Severity::Warning,
                &label,
                format!(
                    "data window {}x{} at ({},{}) differs from display window {}x{}; resolution is the display window",
                    d.width(), d.height(), d.x_min, d.y_min, w.width(), w.height()
                ),
            ));
        }
        if first_info.data_window != last_info.data_window {
            out.issues.push(issue(
                Severity::Warning,
                &label,
                "data window changes across frames",
            ));
        }
    }
    if (first_info.width, first_info.height) != (last_info.width, last_info.height) {
        out.issues.push(issue(
            Severity::Warning,
            &label,
            format!(
                "resolution changes: first frame {}x{}, last frame {}x{}",
                first_info.width, first_info.height, last_info.width, last_info.height
            ),
        ));
    }
    check_tc_continuity(&mut out, &label, s, first, last, &first_info, &last_info);

    // Thumbnail of the chosen good frame.
    let mut thumbnail = None;
    if ctx.thumbnails {
        let pick = good[ctx.settings.thumbnail.frame.index(good.len())];
        match thumbnail::make_for_frame(
            &s.path_of(pick),
            thumb,
            ctx.pipeline,
            &ctx.settings.thumbnail,
        ) {
            Ok(_) => thumbnail = Some(thumb.to_path_buf()),
            Err(e) => out
                .issues
                .push(issue(Severity::Warning, &label, format!("thumbnail: {e}"))),
        }
    }

    let clip_name = first_info
        .clip_name
        .clone()
        .unwrap_or_else(|| s.head.clone());
    out.rows.push(Row {
        check: problems.is_empty(),
        thumbnail,
        seq_type: "org".into(),
        scan_path: s.dir.display().to_string(),
        scan_name: s.head.clone(),
        clip_name,
        pad: s.pad_printf(),
        ext: s.ext_lower(),
        resolution: format!("{} x {}", first_info.width, first_info.height),
        start_frame: Some(s.start()),
        end_frame: Some(s.end()),
        duration: Some(s.frames.len() as i64),
        timecode_in: first_info.timecode.clone().unwrap_or_default(),
        timecode_out: last_info.timecode.clone().unwrap_or_default(),
        just_in: Some(s.start()),
        just_out: Some(s.end()),
        framerate: first_info.fps.map(|r| round3(r.as_f64())),
        ..Row::default()
    });
    out.gap = Some(gap);
    out
}

/// Movie frames decoded per call when making event thumbnails (bounds memory).
const MOVIE_THUMB_BATCH: usize = 4;

fn round3(v: f64) -> f64 {
    (v * 1000.0).round() / 1000.0
}

/// Warns when the last frame's timecode is not where the first frame's plus the
/// frame distance puts it (a discontinuity inside the plate).
fn check_tc_continuity(
    out: &mut ItemResult,
    label: &Path,
    s: &Sequence,
    first: &seq::Frame,
    last: &seq::Frame,
    a: &ImageInfo,
    b: &ImageInfo,
) {
    let (Some(ta), Some(tb)) = (&a.timecode, &b.timecode) else {
        return;
    };
    let rate = a.fps.unwrap_or(FrameRate::FPS_24);
    let (Ok(ta), Ok(tb)) = (
        Timecode::parse(ta, rate, false),
        Timecode::parse(tb, rate, false),
    ) else {
        return;
    };
    let expect = ta.offset(last.number - first.number);
    if expect.frames() != tb.frames() {
        out.issues.push(issue(
            Severity::Warning,
            label,
            format!(
                "timecode jumps: frame {} is {ta}, so frame {} should be {expect}, but it is {tb} ({} frames in {})",
                first.number,
                last.number,
                s.frames.len(),
                s.pattern()
            ),
        ));
    }
}

fn scan_movie(ctx: &Ctx<'_>, m: &Movie) -> ItemResult {
    let mut out = ItemResult::default();
    let info = match movie::probe(&m.path) {
        Ok(i) => i,
        Err(e) => {
            out.issues
                .push(issue(Severity::Error, &m.path, e.to_string()));
            return out;
        }
    };
    let fps = info.fps;
    let file_name = m
        .path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let ext = m
        .path
        .extension()
        .map(|e| e.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let dir = m.path.parent().map(Path::to_path_buf).unwrap_or_default();
    let thumb_dir = dir.join(&ctx.settings.thumbnail.dir_name);
    let base = file_name
        .rsplit_once('.')
        .map(|(b, _)| b.to_string())
        .unwrap_or_else(|| file_name.clone());
    // The movie's own start timecode (the original assumed a 24-fps hour).
    let tagged_start = info
        .timecode
        .as_deref()
        .and_then(|t| Timecode::parse(t, fps, false).ok());

    let mut events: Vec<(PathBuf, edl::Event)> = Vec::new();
    for edl_path in &m.edls {
        let opts = edl::ParseOptions::from(&ctx.settings.edl);
        match edl::parse_file(edl_path, fps, opts) {
            Ok(parsed) => {
                let parsed: Edl = parsed;
                for w in &parsed.warnings {
                    out.issues
                        .push(issue(Severity::Warning, edl_path, w.clone()));
                }
                let vids: Vec<edl::Event> = parsed.video_events().into_iter().cloned().collect();
                if vids.is_empty() {
                    out.issues.push(issue(
                        Severity::Warning,
                        edl_path,
                        "EDL has no video events",
                    ));
                }
                events.extend(vids.into_iter().map(|e| (edl_path.clone(), e)));
            }
            Err(e) => out
                .issues
                .push(issue(Severity::Error, edl_path, e.to_string())),
        }
    }
    // Without a tag: the hour rule (3600 × nominal fps) when the edit starts at or
    // after one hour, else the edit's first record-in, so an edit that starts at
    // 00:59:53:11 does not map to negative frames.
    let first_rec = events
        .iter()
        .map(|(_, e)| e.rec_in)
        .min_by_key(|t| t.frames());
    let start_known = tagged_start.is_some();
    let movie_start = tagged_start.unwrap_or_else(|| {
        let hour = edl::hour_start(fps, false);
        match first_rec {
            Some(f) if f.frames() < hour.frames() => f,
            _ => hour,
        }
    });
    if !events.is_empty() && !start_known {
        out.issues.push(issue(
            Severity::Warning,
            &m.path,
            format!(
                "movie has no timecode tag; its first frame is taken to be record {movie_start} at {fps} fps"
            ),
        ));
    }

    // Rows: one per video event, or one for the whole movie.
    let mut rows = Vec::new();
    if events.is_empty() {
        let n = info.frame_count as i64;
        let tc_in = info.timecode.clone().unwrap_or_default();
        let tc_out = if start_known {
            movie_start.offset(n - 1).to_string()
        } else {
            String::new()
        };
        rows.push(Row {
            start_frame: Some(1),
            end_frame: Some(n),
            duration: Some(n),
            just_in: Some(1),
            just_out: Some(n),
            timecode_in: tc_in,
            timecode_out: tc_out,
            clip_name: "None".into(),
            check: true,
            ..Row::default()
        });
    } else {
        for (edl_path, ev) in &events {
            let (start, end, duration) = ev.record_range(movie_start);
            let mut row = Row {
                start_frame: Some(start),
                end_frame: Some(end),
                duration: Some(duration),
                just_in: Some(start),
                just_out: Some(end),
                timecode_in: ev.src_in.to_string(),
                timecode_out: ev.src_out.to_string(),
                clip_name: ev.clip_name_cut(),
                ..Row::default()
            };
            if let Some(pct) = ev.retime_percent(fps) {
                row.retime_percent = Some((pct * 10.0).round() / 10.0);
                row.retime_duration = Some(duration);
                row.retime_start_frame = Some(1);
                row.clip_tag = ev.retime_note(fps).unwrap_or_default();
            }
            if start < 1 || end > info.frame_count as i64 {
                out.issues.push(issue(
                    Severity::Warning,
                    edl_path,
                    format!(
                        "event {} maps to movie frames {start}-{end}, outside the movie's 1-{}; check the EDL belongs to {}",
                        ev.number, info.frame_count, file_name
                    ),
                ));
                row.check = false;
            } else {
                row.check = true;
            }
            rows.push(row);
        }
    }
    for r in &mut rows {
        r.seq_type = "org".into();
        r.scan_path = dir.display().to_string();
        r.scan_name = file_name.clone();
        r.ext = ext.clone();
        r.resolution = format!("{} x {}", info.width, info.height);
        r.framerate = Some(round3(fps.as_f64()));
        r.pad = String::new();
    }

    // Thumbnails: one per unique start frame, ranked per movie (the original
    // ranked over the whole delivery and picked one frame late).
    if ctx.thumbnails {
        let starts: BTreeSet<i64> = rows
            .iter()
            .filter_map(|r| r.start_frame)
            .filter(|&s| s >= 1 && s <= info.frame_count as i64)
            .collect();
        let starts: Vec<i64> = starts.into_iter().collect();
        let indices: Vec<u64> = starts.iter().map(|&s| (s - 1) as u64).collect();
        let names: BTreeMap<i64, PathBuf> = starts
            .iter()
            .enumerate()
            .map(|(rank, &s)| (s, thumb_dir.join(format!("{base}.{:04}.jpg", rank + 1))))
            .collect();
        // A few frames per call: each decoded 1080p frame is ~25 MB of floats.
        for (idx, st) in indices
            .chunks(MOVIE_THUMB_BATCH)
            .zip(starts.chunks(MOVIE_THUMB_BATCH))
        {
            let images = match movie::decode_frames(&m.path, idx) {
                Ok(images) => images,
                Err(e) => {
                    out.issues
                        .push(issue(Severity::Warning, &m.path, format!("thumbnail: {e}")));
                    break;
                }
            };
            for (img, s) in images.iter().zip(st) {
                let path = &names[s];
                let rendered = thumbnail::render(
                    img,
                    ctx.pipeline,
                    ctx.settings.thumbnail.width,
                    ctx.settings.thumbnail.height,
                );
                match thumbnail::write_jpeg(&rendered, path, ctx.settings.thumbnail.quality) {
                    Ok(()) => {
                        for r in rows.iter_mut().filter(|r| r.start_frame == Some(*s)) {
                            r.thumbnail = Some(path.clone());
                        }
                    }
                    Err(e) => out
                        .issues
                        .push(issue(Severity::Warning, path, e.to_string())),
                }
            }
        }
    }
    out.rows = rows;
    out
}
