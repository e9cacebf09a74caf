//! The step implementations: one module per [`StepKind`], one entry point, [`run`].
//!
//! Steps are synchronous (the worker runtime runs them on blocking threads) and
//! **idempotent by task id**: running one twice, or again after a crash at any
//! point, gives the same published files and never overwrites a published file
//! with different content. Every file a step writes goes to a temporary name in
//! the destination folder (`.<name>.iom-tmp-<task id>-<attempt>-<random>`), is
//! fsynced and verified, and only then appears under its real name; `cleanup`
//! removes what a crash leaves behind.
//!
//! - [`probe`]: source frames exist, are not empty or truncated; gap policy.
//! - [`copy`]: source → publish layout, renumbered from 1001, hashed, verified.
//! - [`unpack`]: a movie plate published as DPX/EXR frames ("MOV to DPX").
//! - [`thumbnail`]: the published plate's thumbnail.
//! - [`proxy`]: JPEG proxies (full size, and a 2K set for wider plates).
//! - [`review`]: H.264 MP4, the delivery-codec MOV, the filmstrip.
//! - [`media`]: what proxy and review share (frames, gaps, colour, batches).
//! - [`register`]: the tracker registration.
//! - [`cleanup`]: removes iom's own temporary files.

pub mod cleanup;
pub mod copy;
pub mod media;
pub mod probe;
pub mod proxy;
pub mod register;
pub mod review;
pub mod thumbnail;
pub mod unpack;

use std::fmt::Display;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use xxhash_rust::xxh3::Xxh3Default;

use crate::config::Settings;
use crate::error::{io_class, Classify, ErrorClass};
use crate::store::OutputFile;
use crate::task::{Source, Step, StepKind, TaskId, TaskMessage};
use crate::tracker::Tracker;

/// What a step needs besides its message.
#[derive(Clone)]
pub struct StepContext {
    /// The settings (colour, thumbnail size, project name …).
    pub settings: Arc<Settings>,
    /// This worker's name (host/id), for records and logs.
    pub worker: String,
    /// Set when the worker shuts down or the time limit passes; steps check it
    /// between frames and return [`StepError::Cancelled`].
    pub cancel: Arc<AtomicBool>,
    /// Where `register` registers.
    pub tracker: Arc<dyn Tracker>,
}

impl StepContext {
    /// `Err(Cancelled)` once cancellation was asked for.
    pub fn check_cancel(&self) -> Result<(), StepError> {
        check_cancel(&self.cancel)
    }
}

fn check_cancel(flag: &AtomicBool) -> Result<(), StepError> {
    if flag.load(Ordering::Relaxed) {
        Err(StepError::Cancelled)
    } else {
        Ok(())
    }
}

/// What a step produced.
#[derive(Debug, Clone, PartialEq)]
pub struct StepOutput {
    /// Files written or verified, with size and checksum.
    pub outputs: Vec<OutputFile>,
    /// Step-specific summary (counts, ranges, entity ids) for the completion record.
    pub summary: serde_json::Value,
}

/// Why a step failed.
#[derive(Debug, thiserror::Error)]
pub enum StepError {
    /// May succeed on retry (storage hiccup, disk full, tracker 5xx).
    #[error("{message}")]
    Transient {
        /// What went wrong, naming the file or service.
        message: String,
    },
    /// Will fail the same way again (missing or corrupt source, a published
    /// file in the way, bad settings).
    #[error("{message}")]
    Permanent {
        /// What went wrong and what to do.
        message: String,
    },
    /// The step kind has no implementation yet: fails loudly, never succeeds.
    #[error("the {kind} step is not implemented yet; remove it from publish.steps or wait for the media/tracker release")]
    NotImplemented {
        /// The kind.
        kind: StepKind,
    },
    /// The worker asked the step to stop (shutdown or time limit).
    #[error("the step was cancelled before it finished (worker shutdown or time limit); it will run again")]
    Cancelled,
    /// The step ran past its time limit.
    #[error("the {kind} step ran past its time limit of {} s; raise worker.time_limits_secs.{kind} if the plate is that large", limit.as_secs())]
    TimedOut {
        /// The kind.
        kind: StepKind,
        /// The limit.
        limit: std::time::Duration,
    },
}

impl Classify for StepError {
    fn class(&self) -> ErrorClass {
        match self {
            StepError::Transient { .. } | StepError::Cancelled | StepError::TimedOut { .. } => {
                ErrorClass::Transient
            }
            StepError::Permanent { .. } | StepError::NotImplemented { .. } => ErrorClass::Permanent,
        }
    }
}

impl StepError {
    /// A transient error.
    pub fn transient(message: impl Into<String>) -> Self {
        StepError::Transient {
            message: message.into(),
        }
    }

    /// A permanent error.
    pub fn permanent(message: impl Into<String>) -> Self {
        StepError::Permanent {
            message: message.into(),
        }
    }

    /// An error of the given class.
    pub fn classified(class: ErrorClass, message: impl Into<String>) -> Self {
        match class {
            ErrorClass::Transient => Self::transient(message),
            ErrorClass::Permanent => Self::permanent(message),
        }
    }

    /// Wraps any classified error, keeping its class and message.
    pub fn from_error<E: Classify + Display>(e: E) -> Self {
        Self::classified(e.class(), e.to_string())
    }

    /// An I/O error while doing `what` to `path` (ENOSPC, timeouts, stale NFS
    /// handles are transient; a missing file or a permission is permanent).
    pub fn io(what: &str, path: &Path, e: &io::Error) -> Self {
        Self::classified(
            io_class(e),
            format!("cannot {what} {}: {e}", path.display()),
        )
    }
}

/// Runs the step of `msg`.
pub fn run(msg: &TaskMessage, ctx: &StepContext) -> Result<StepOutput, StepError> {
    ctx.check_cancel()?;
    let _span = tracing::info_span!("step", task = %msg.task_id, attempt = msg.attempt, kind = %msg.step.kind()).entered();
    match &msg.step {
        Step::Probe { source, gap_policy } => probe::run(source, *gap_policy, ctx),
        Step::Copy {
            source,
            output,
            frames,
        } => match (source, frames) {
            (Source::Movie { .. }, Some(format)) => unpack::run(msg, source, output, *format, ctx),
            (Source::Sequence { .. }, Some(format)) => Err(StepError::permanent(format!(
                "copy to {}: `frames: {format}` is for movie sources only, and this one is an \
                 image sequence; publish it again (the planner never asks this)",
                output.frames_dir.display()
            ))),
            (_, None) => copy::run(msg, source, output, ctx),
        },
        Step::Thumbnail { output, colorspace } => thumbnail::run(msg, output, colorspace, ctx),
        Step::Proxy { output, colorspace } => proxy::run(msg, output, colorspace, ctx),
        Step::Review { output, colorspace } => review::run(msg, output, colorspace, ctx),
        Step::Register { output, info } => register::run(msg, output, info, ctx),
        Step::Cleanup { output } => cleanup::run(output, ctx),
    }
}

// ---------------------------------------------------------------------------
// Shared file helpers.
// ---------------------------------------------------------------------------

/// The marker every iom temporary file name carries (`.<name>.iom-tmp-…`).
pub const TEMP_MARKER: &str = ".iom-tmp-";

/// Threads for per-frame IO (copy, probe): storage-bound, so a few suffice, and
/// more would only queue on the NFS server.
pub(crate) const IO_THREADS: usize = 4;

/// A temporary name for `dest` in its own folder, unique per task, attempt and
/// call: `.<name>.iom-tmp-<task>-<attempt>-<16 hex>`.
pub fn temp_path(dest: &Path, task: &TaskId, attempt: u32) -> PathBuf {
    let name = dest
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let parent = dest.parent().unwrap_or_else(|| Path::new("."));
    parent.join(format!(
        ".{name}{TEMP_MARKER}{task}-{attempt}-{:016x}",
        fastrand::u64(..)
    ))
}

/// Removes this task's temporary files left in `dir` by an earlier attempt
/// (none when the folder does not exist). Returns how many.
pub fn remove_stale_temps(dir: &Path, task: &TaskId) -> Result<u64, StepError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(StepError::io("list", dir, &e)),
    };
    let mut removed = 0;
    for entry in entries {
        let entry = entry.map_err(|e| StepError::io("list", dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if is_temp_of(name, task) {
            let p = entry.path();
            match fs::remove_file(&p) {
                Ok(()) => removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StepError::io("remove stale temporary file", &p, &e)),
            }
        }
    }
    if removed > 0 {
        tracing::info!(task = %task, removed, dir = %dir.display(), "removed temporary files of an earlier attempt");
    }
    Ok(removed)
}

/// Whether `name` is an iom temporary file name (any task).
pub fn is_temp_name(name: &str) -> bool {
    name.starts_with('.') && name.contains(TEMP_MARKER)
}

/// Whether `name` is a temporary file of `task` (any attempt): the part after the
/// marker is exactly `<task>-<digits>-<16 hex>`, so a task whose id extends
/// another's (`x` and `x-1`) never matches the other's files.
pub fn is_temp_of(name: &str, task: &TaskId) -> bool {
    if !name.starts_with('.') {
        return false;
    }
    let Some(pos) = name.rfind(TEMP_MARKER) else {
        return false;
    };
    let rest = &name[pos + TEMP_MARKER.len()..];
    let Some(rest) = rest
        .strip_prefix(task.0.as_str())
        .and_then(|r| r.strip_prefix('-'))
    else {
        return false;
    };
    let mut parts = rest.splitn(2, '-');
    let (Some(attempt), Some(rand)) = (parts.next(), parts.next()) else {
        return false;
    };
    !attempt.is_empty()
        && attempt.bytes().all(|b| b.is_ascii_digit())
        && rand.len() == 16
        && rand.bytes().all(|b| b.is_ascii_hexdigit())
}

/// What [`place_no_replace`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Placed {
    /// The file is now under its real name.
    New,
    /// The real name already held the same content (a duplicate run, or an NFS
    /// retransmission of our own link); the temporary file is left to the caller.
    Same,
}

/// Puts the finished, fsynced `tmp` (`size` bytes, XXH3 `hash`) under `dest`
/// without ever replacing a file: a hard link fails when `dest` exists, and an
/// existing `dest` is accepted only with the same content (else `different()`).
/// The caller removes `tmp` afterwards and fsyncs the folder.
pub(crate) fn place_no_replace(
    tmp: &Path,
    dest: &Path,
    hash: u64,
    size: u64,
    different: impl FnOnce() -> StepError,
) -> Result<Placed, StepError> {
    // Whether an existing `dest` holds our content.
    let same = || -> Result<bool, StepError> {
        let (dsize, dhash) = hash_file(dest).map_err(|e| StepError::io("read", dest, &e))?;
        Ok(dhash == hash && dsize == size)
    };
    match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(Placed::New),
        // A duplicate run published it first (or NFS retransmitted our link):
        // fine if the content is the same, a refusal otherwise.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            if same()? {
                Ok(Placed::Same)
            } else {
                Err(different())
            }
        }
        // File systems without hard links: rename, after a last existence check
        // (a tiny window a duplicate run could race; its content is the same).
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::Unsupported | io::ErrorKind::PermissionDenied
            ) =>
        {
            if dest.exists() {
                return if same()? {
                    Ok(Placed::Same)
                } else {
                    Err(different())
                };
            }
            fs::rename(tmp, dest).map_err(|e| StepError::io("rename into place", dest, &e))?;
            Ok(Placed::New)
        }
        Err(e) => Err(temp_error("link into place", dest, &e)),
    }
}

/// An I/O error on this run's temporary file. A temporary file that vanished
/// was removed by a concurrent attempt of the same task (which removes stale
/// temporaries first): that attempt carries on, and this one should retry, not
/// dead-letter.
pub(crate) fn temp_error(what: &str, path: &Path, e: &io::Error) -> StepError {
    if e.kind() == io::ErrorKind::NotFound {
        StepError::transient(format!(
            "cannot {what} {}: the temporary file vanished (a concurrent attempt of this task removed it); retrying",
            path.display()
        ))
    } else {
        StepError::io(what, path, e)
    }
}

/// Lower-case 16-digit hex of an XXH3-64.
pub fn hex64(h: u64) -> String {
    format!("{h:016x}")
}

/// Size and XXH3-64 of a file, read in 1 MiB blocks.
pub fn hash_file(path: &Path) -> io::Result<(u64, u64)> {
    let mut f = File::open(path)?;
    let mut h = Xxh3Default::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        total += n as u64;
    }
    Ok((total, h.digest()))
}

/// Writes `bytes` to `dest` atomically for task `task`/`attempt`: a temporary
/// name in the same folder, fsync, rename, fsync of the folder. Deterministic
/// outputs (thumbnails) may replace an earlier identical write. Returns the
/// output record.
pub fn write_output_atomic(
    dest: &Path,
    bytes: &[u8],
    task: &TaskId,
    attempt: u32,
) -> Result<OutputFile, StepError> {
    let parent = dest.parent().unwrap_or_else(|| Path::new("."));
    fs::create_dir_all(parent).map_err(|e| StepError::io("create folder", parent, &e))?;
    let tmp = temp_path(dest, task, attempt);
    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(|e| StepError::io("create", &tmp, &e))?;
        f.write_all(bytes)
            .and_then(|()| f.sync_all())
            .map_err(|e| StepError::io("write", &tmp, &e))?;
        drop(f);
        fs::rename(&tmp, dest).map_err(|e| StepError::io("rename into place", dest, &e))?;
        crate::store::fsync_dir(parent).map_err(|e| StepError::io("fsync folder", parent, &e))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    Ok(OutputFile {
        path: dest.to_path_buf(),
        size: bytes.len() as u64,
        xxh3: hex64(xxhash_rust::xxh3::xxh3_64(bytes)),
    })
}

/// Collapses sorted frame numbers into inclusive ranges.
pub fn ranges(frames: &[i64]) -> Vec<(i64, i64)> {
    let mut out: Vec<(i64, i64)> = Vec::new();
    for &f in frames {
        match out.last_mut() {
            Some((_, end)) if *end + 1 == f => *end = f,
            _ => out.push((f, f)),
        }
    }
    out
}

/// `1001-1003, 1007` for error messages.
pub fn ranges_text(r: &[(i64, i64)]) -> String {
    r.iter()
        .map(|&(a, b)| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// A small bounded pool for per-frame IO.
pub(crate) fn io_pool(kind: StepKind) -> Result<rayon::ThreadPool, StepError> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(IO_THREADS)
        .thread_name(move |i| format!("iom-{kind}-{i}"))
        .build()
        .map_err(|e| StepError::transient(format!("cannot start the {kind} thread pool: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn temp_names_belong_to_exactly_one_task() {
        let t = TaskId("g-1.copy".into());
        let p = temp_path(Path::new("/x/A.1001.exr"), &t, 3);
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with(".A.1001.exr.iom-tmp-g-1.copy-3-"),
            "{name}"
        );
        assert!(is_temp_name(name));
        assert!(is_temp_of(name, &t));
        assert!(!is_temp_of(name, &TaskId("g".into())));
        assert!(!is_temp_of(name, &TaskId("g-1".into())));
        let other = temp_path(Path::new("/x/A.1001.exr"), &TaskId("g-1.copy-2".into()), 1);
        assert!(!is_temp_of(
            other.file_name().unwrap().to_str().unwrap(),
            &t
        ));
        assert!(!is_temp_name("A.1001.exr"));
    }

    #[test]
    fn ranges_collapse() {
        assert_eq!(ranges(&[1, 2, 3, 7, 9, 10]), vec![(1, 3), (7, 7), (9, 10)]);
        assert_eq!(ranges_text(&ranges(&[1, 2, 3, 7])), "1-3, 7");
        assert!(ranges(&[]).is_empty());
    }
}
