//! The publish work folder on shared storage: DAG progress without a central
//! scheduler.
//!
//! One folder per publish graph (`graph.work_dir`), shared by every worker on every
//! host. It holds:
//!
//! ```text
//! manifest.json              the graph (written once; a re-submit must be identical)
//! runs/<task>.<attempt>.json one start record per attempt (attempt fencing;
//!                            runs/<task>/<attempt>.json of earlier builds is read)
//! done/<task>.json           the completion record (first completion wins)
//! failed/<task>.json         the terminal failure record (dead-lettered / permanent)
//! claims/<child>.json        who won the right to publish a child (exclusive create)
//! dispatched/<task>.json     the child's message was confirmed by the broker (a
//!                            hard link to manifest.json: a name, no new file)
//! tmp/                       temporary files of the writes above (NFS)
//! ```
//!
//! Only primitives that are atomic on NFS as well as on local disks are used:
//! exclusive create of a fully written (and, for records correctness rests on,
//! fsynced) file by linking it to its name (the link fails if the name exists, so
//! the record appears whole or not at all), write-temp + fsync + `rename` for
//! records where the last write wins, and an fsync of the folder after every link
//! or rename so a crash cannot lose a record the caller was told about. Where the
//! file system has unnamed files (Linux `O_TMPFILE`: local disks) the file to link
//! is created unnamed in the record's own folder; elsewhere (NFS) it is a named
//! temporary file in `tmp/`, removed after the link. Folders are created when a
//! write finds them missing, not before every write. Nothing here holds a lock or a lease, so a worker
//! that dies between any two calls leaves a state the next worker (or
//! `iom resume`) can carry on from.
//!
//! The protocol a worker follows (the runtime implements it):
//! 1. [`WorkDir::begin_attempt`]: `AlreadyDone` → skip to 3; `Stale` → drop the
//!    message; `Run` → run the step.
//! 2. [`WorkDir::complete`] with the outputs (the first completion wins).
//! 3. For each of [`WorkDir::ready_children`]: [`WorkDir::claim_dispatch`]; the
//!    winner publishes the child (with a confirm), then
//!    [`WorkDir::mark_dispatched`]. A claim [`Claim::HeldBy`] the same task means
//!    an earlier run of this task claimed it and may have died before publishing:
//!    publish it again unless [`WorkDir::is_dispatched`].
//! 4. Ack the delivery.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::error::{io_class, Classify, ErrorClass};
use crate::task::{Graph, GraphError, GraphId, StepKind, TaskId};

/// The graph manifest's file name inside a work folder.
pub const MANIFEST: &str = "manifest.json";
const RUNS: &str = "runs";
const DONE: &str = "done";
const FAILED: &str = "failed";
const CLAIMS: &str = "claims";
const DISPATCHED: &str = "dispatched";
const TMP: &str = "tmp";
/// Held (`flock`) by the process that runs the graph in-process (embedded).
const IN_PROCESS_LOCK: &str = "in-process.lock";
/// Beside the work folders: the folders of plans that a new plan of the same
/// version replaced ([`WorkDir::supersede`]).
const SUPERSEDED: &str = ".superseded";
/// Written when a graph is handed to the farm (a broker's workers).
const FARM: &str = "farm.json";

/// Longest task id accepted as a file name (file names stop at 255 bytes; this
/// leaves room for suffixes and temporary-name decorations).
const MAX_ID_LEN: usize = 200;

/// Why the work folder could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A file or folder operation failed.
    #[error("publish work folder: cannot {op} {path}: {source}")]
    Io {
        /// What was being done (`read`, `create`, `list` …).
        op: &'static str,
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: io::Error,
    },
    /// The folder already holds a different graph.
    #[error("work folder {dir} already holds a different publish graph ({existing}); a re-submit must plan the same graph: remove the folder if that publish is abandoned, or publish a new version")]
    ManifestMismatch {
        /// The work folder.
        dir: PathBuf,
        /// The id of the graph already there.
        existing: GraphId,
    },
    /// The folder has no manifest.
    #[error("{dir} is not a publish work folder (no {MANIFEST}); check the path, or submit the publish first")]
    NotAWorkDir {
        /// The folder.
        dir: PathBuf,
    },
    /// A record does not parse.
    #[error("{path} is not a valid {what}: {detail}; the work folder was edited by hand or written by an incompatible iom: inspect the file, or remove the folder and publish again")]
    Corrupt {
        /// The record.
        path: PathBuf,
        /// Which kind of record.
        what: &'static str,
        /// The parser's complaint.
        detail: String,
    },
    /// A task id that cannot safely name a file.
    #[error("task id {id:?} cannot name a file in the work folder: it {reason}")]
    BadTaskId {
        /// The id.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Attempt numbers start at 1.
    #[error("task {task}: attempt 0 is not valid (attempts count from 1)")]
    BadAttempt {
        /// The task.
        task: TaskId,
    },
    /// The task is not part of the folder's graph.
    #[error("task {task} is not in the graph of work folder {dir}; the message does not belong to this publish")]
    UnknownTask {
        /// The task.
        task: TaskId,
        /// The work folder.
        dir: PathBuf,
    },
    /// The graph itself is malformed.
    #[error(transparent)]
    Graph(#[from] GraphError),
    /// A store operation on a blocking thread was cancelled or panicked.
    #[error("work folder operation did not finish: {0}")]
    Join(String),
    /// The graph was handed to the farm: its tasks are on the broker's queues,
    /// and running them in-process too would run them twice.
    #[error(
        "publish {graph} was submitted to the farm (by {by} at {at}): the farm's workers run it; \
             follow it with `iom status {graph} --follow`, or, to run it in this process instead, \
             first make sure the farm does not (its tasks left the queues: `iom status` shows none \
             running), then pass --embedded"
    )]
    OnTheFarm {
        /// The graph.
        graph: GraphId,
        /// Who submitted it (`host/pid`).
        by: String,
        /// When (RFC 3339, UTC).
        at: String,
    },
    /// Another process runs this graph in-process now (it holds the lock).
    #[error("publish {graph} is running in another iom process (it holds {lock}); wait for it to finish, or stop it (Ctrl-C) and run `iom resume {graph}`")]
    RunningInProcess {
        /// The graph.
        graph: GraphId,
        /// Its in-process lock file.
        lock: PathBuf,
    },
}

impl Classify for StoreError {
    fn class(&self) -> ErrorClass {
        match self {
            StoreError::Io { source, .. } => io_class(source),
            StoreError::Join(_) | StoreError::RunningInProcess { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}

/// The work folders of every publish under the project root `root`, whose
/// work-folder template (`publish.work_dir`, relative to `root`) is `template`:
/// the folders at the template's depth below its fixed leading part that hold a
/// manifest, newest manifest first, each with its manifest's time (when the
/// publish was submitted). A missing leading folder is no publish yet.
pub fn list_work_dirs(
    root: &Path,
    template: &str,
) -> Result<Vec<(WorkDir, SystemTime)>, StoreError> {
    let parts: Vec<&str> = template.split('/').filter(|c| !c.is_empty()).collect();
    let fixed = parts.iter().take_while(|c| !c.contains('{')).count();
    let mut level = vec![parts[..fixed]
        .iter()
        .fold(root.to_path_buf(), |p, c| p.join(c))];
    for _ in fixed..parts.len() {
        let mut next = Vec::new();
        for dir in &level {
            let entries = match fs::read_dir(dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("list", dir)(e)),
            };
            for e in entries {
                let e = e.map_err(io_err("list", dir))?;
                if e.file_type().map_err(io_err("list", dir))?.is_dir() {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    let mut found = Vec::new();
    for dir in level {
        if let Ok(m) = fs::metadata(dir.join(MANIFEST)) {
            if m.is_file() {
                let at = m.modified().map_err(io_err("read", &dir))?;
                found.push((WorkDir::open(&dir)?, at));
            }
        }
    }
    found.sort_by_key(|(_, at)| std::cmp::Reverse(*at));
    Ok(found)
}

/// The in-process run lock of a work folder ([`WorkDir::lock_in_process`]),
/// held until dropped.
#[derive(Debug)]
pub struct InProcessLock {
    _file: File,
}

/// `flock(op | LOCK_NB)`: `Ok(false)` when another open file holds a
/// conflicting lock.
fn try_flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    use std::os::fd::AsRawFd;
    // SAFETY: flock on a file descriptor this `File` owns for the call.
    if unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) } == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

fn io_err<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> StoreError + 'a {
    move |source| StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// `farm.json` of a work folder: the graph was handed to a broker's workers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FarmHandoff {
    /// Who submitted it (`host/pid`).
    pub by: String,
    /// When, in milliseconds since the Unix epoch.
    pub at_ms: i64,
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Refuses task ids that could not be used as a file name: only `[A-Za-z0-9_.-]`,
/// no leading dot (hidden files, `..`), no `..` anywhere, at most 200 characters.
pub fn validate_task_id(id: &TaskId) -> Result<(), StoreError> {
    let s = id.0.as_str();
    let reason = if s.is_empty() {
        Some("is empty")
    } else if s.len() > MAX_ID_LEN {
        Some("is longer than 200 characters")
    } else if s.starts_with('.') {
        Some("starts with a dot")
    } else if s.contains("..") {
        Some("contains `..`")
    } else if !s
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
    {
        Some("holds a character outside [A-Za-z0-9_.-] (a `/` would leave the work folder)")
    } else {
        None
    };
    match reason {
        Some(reason) => Err(StoreError::BadTaskId {
            id: s.to_string(),
            reason,
        }),
        None => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Atomic file primitives (also used by the steps and the local tracker).
// ---------------------------------------------------------------------------

/// A temporary file name in `dir` that no other process or host will pick:
/// `<stem>.<pid>.<64 random bits>`. Hosts share the folder, so the pid alone is
/// not unique.
pub fn unique_temp(dir: &Path, stem: &str) -> PathBuf {
    dir.join(format!(
        "{stem}.{}.{:016x}",
        std::process::id(),
        fastrand::u64(..)
    ))
}

/// Fsyncs a folder so the names linked or renamed into it survive a crash.
/// File systems that cannot fsync a folder (`EINVAL`) have nothing to flush.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    match File::open(dir).and_then(|f| f.sync_all()) {
        Err(e) if e.kind() == io::ErrorKind::InvalidInput => Ok(()),
        other => other,
    }
}

/// Whether a record must survive a crash of the host that writes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync the file and its folder: completion, failure, claim records and the
    /// manifest — what correctness rests on.
    Synced,
    /// Atomic (never half-written) but not fsynced: attempt markers and dispatch
    /// marks. Losing one only in a crash of its own host is harmless: an attempt
    /// marker fences that host's own (now dead) attempt, and a lost dispatch mark
    /// makes `iom resume` publish once more (at-least-once; steps are idempotent).
    Atomic,
}

/// Writes `bytes` to a new file `tmp` (which must not exist), fsynced if
/// `durability` says so.
fn write_tmp(tmp: &Path, bytes: &[u8], durability: Durability) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(tmp)?;
    f.write_all(bytes)?;
    match durability {
        Durability::Synced => f.sync_all(),
        Durability::Atomic => Ok(()),
    }
}

/// Runs `op`; when it fails with `NotFound` because a folder is missing, creates
/// `dir` (and its parents) and runs it once more. Folders are created on first
/// need instead of with a `create_dir_all` before every write (two system calls
/// per folder per record, on shared storage).
fn with_dir<T>(dir: &Path, mut op: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            op()
        }
        other => other,
    }
}

/// Unnamed files (`O_TMPFILE`) linked into place: one new name per record instead
/// of a temporary name created, linked and removed, and nothing left behind by a
/// crash. Linux only, and only where the file system supports it (local file
/// systems do; NFS does not): [`Unnamed::open`] says `None` otherwise and the
/// caller falls back to a named temporary file.
#[cfg(target_os = "linux")]
mod unnamed {
    use std::ffi::CString;
    use std::fs::{File, OpenOptions};
    use std::io;
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::io::AsRawFd;
    use std::path::Path;

    /// Opens an unnamed, writable file on the file system of folder `dir`.
    /// `Ok(None)`: the file system or kernel cannot (use a named temporary file).
    pub(super) fn open(dir: &Path) -> io::Result<Option<File>> {
        match OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_TMPFILE)
            .open(dir)
        {
            Ok(f) => Ok(Some(f)),
            Err(e) => match e.raw_os_error() {
                // Not supported by this file system (EOPNOTSUPP), or a kernel
                // older than 3.11 that reads the flag as O_DIRECTORY (EISDIR).
                Some(libc::EOPNOTSUPP | libc::EISDIR | libc::EINVAL) => Ok(None),
                _ => Err(e),
            },
        }
    }

    /// Gives `file` (from [`open`]) the name `dest` in the same file system.
    /// Fails with `AlreadyExists` if `dest` exists, never replacing it.
    /// `Ok(false)`: `/proc` is not mounted, so the file cannot be named (use a
    /// named temporary file).
    pub(super) fn link(file: &File, dest: &Path) -> io::Result<bool> {
        let proc = CString::new(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(io::Error::other)?;
        let to = CString::new(dest.as_os_str().as_bytes()).map_err(io::Error::other)?;
        // SAFETY: both paths are NUL-terminated C strings that outlive the call;
        // linkat only reads them.
        let rc = unsafe {
            libc::linkat(
                libc::AT_FDCWD,
                proc.as_ptr(),
                libc::AT_FDCWD,
                to.as_ptr(),
                libc::AT_SYMLINK_FOLLOW,
            )
        };
        if rc == 0 {
            return Ok(true);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound && !Path::new("/proc/self/fd").is_dir() {
            return Ok(false);
        }
        Err(e)
    }
}

/// [`create_if_absent_with`] through an unnamed file created in `dest`'s folder
/// (created if missing). `Ok(None)`: not possible here; use a named temporary.
#[cfg(target_os = "linux")]
fn create_unnamed(dest: &Path, bytes: &[u8], durability: Durability) -> io::Result<Option<bool>> {
    let Some(parent) = dest.parent() else {
        return Ok(None);
    };
    let Some(mut f) = with_dir(parent, || unnamed::open(parent))? else {
        return Ok(None);
    };
    f.write_all(bytes)?;
    // The content is durable before the name appears: a crash never leaves a
    // named record that is empty or short.
    if durability == Durability::Synced {
        f.sync_all()?;
    }
    let created = match unnamed::link(&f, dest) {
        Ok(true) => true,
        Ok(false) => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    // Also when the name existed: the caller is about to rely on that record
    // (read it, act on it), so it must not be one a crash can still take back.
    if durability == Durability::Synced {
        fsync_dir(parent)?;
    }
    Ok(Some(created))
}

#[cfg(not(target_os = "linux"))]
fn create_unnamed(
    _dest: &Path,
    _bytes: &[u8],
    _durability: Durability,
) -> io::Result<Option<bool>> {
    Ok(None)
}

/// Creates `dest` holding `bytes` only if no file of that name exists, atomically:
/// the content is written (and fsynced) first and only then given its name, which
/// fails if `dest` exists, so a reader sees the whole record or none. Where the
/// file system supports unnamed files (Linux `O_TMPFILE`: local disks) the file is
/// created unnamed in `dest`'s folder and linked into place; elsewhere (NFS) it is
/// written under the temporary name `tmp` (same file system) and hard-linked.
/// Returns `true` when this call created it.
pub fn create_if_absent(dest: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<bool> {
    create_if_absent_with(dest, tmp, bytes, Durability::Synced)
}

/// [`create_if_absent`] with a choice of [`Durability`]. Missing folders (of
/// `dest` and of `tmp`) are created.
pub fn create_if_absent_with(
    dest: &Path,
    tmp: &Path,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<bool> {
    match create_unnamed(dest, bytes, durability)? {
        Some(created) => Ok(created),
        None => create_named(dest, tmp, bytes, durability),
    }
}

/// [`create_if_absent_with`] through the named temporary file `tmp`.
fn create_named(dest: &Path, tmp: &Path, bytes: &[u8], durability: Durability) -> io::Result<bool> {
    match tmp.parent() {
        Some(t) => with_dir(t, || write_tmp(tmp, bytes, durability))?,
        None => write_tmp(tmp, bytes, durability)?,
    }
    let link = || match fs::hard_link(tmp, dest) {
        Ok(()) => Ok(true),
        // Over NFS a retransmitted LINK whose first try succeeded answers EEXIST;
        // the temporary file's link count tells whether the link is ours.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Ok(fs::metadata(tmp).map(|m| m.nlink() >= 2).unwrap_or(false))
        }
        Err(e) => Err(e),
    };
    let linked = match dest.parent() {
        Some(p) => with_dir(p, link),
        None => link(),
    };
    let created = match linked {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(tmp);
            return Err(e);
        }
    };
    if let Err(e) = fs::remove_file(tmp) {
        // Only a stray file in tmp/: the record itself is in place.
        tracing::debug!(path = %tmp.display(), "cannot remove temporary file: {e}");
    }
    if let (Some(parent), Durability::Synced) = (dest.parent(), durability) {
        fsync_dir(parent)?;
    }
    Ok(created)
}

/// Replaces `dest` with `bytes` atomically (write `tmp`, fsync, rename, fsync the
/// folder): readers see the old content or the new, never a mix.
pub fn replace_atomic(dest: &Path, tmp: &Path, bytes: &[u8]) -> io::Result<()> {
    replace_atomic_with(dest, tmp, bytes, Durability::Synced)
}

/// [`replace_atomic`] with a choice of [`Durability`]. Missing folders (of `dest`
/// and of `tmp`) are created.
pub fn replace_atomic_with(
    dest: &Path,
    tmp: &Path,
    bytes: &[u8],
    durability: Durability,
) -> io::Result<()> {
    match tmp.parent() {
        Some(t) => with_dir(t, || write_tmp(tmp, bytes, durability))?,
        None => write_tmp(tmp, bytes, durability)?,
    }
    let renamed = match dest.parent() {
        Some(p) => with_dir(p, || fs::rename(tmp, dest)),
        None => fs::rename(tmp, dest),
    };
    if let Err(e) = renamed {
        let _ = fs::remove_file(tmp);
        return Err(e);
    }
    match (dest.parent(), durability) {
        (Some(parent), Durability::Synced) => fsync_dir(parent),
        _ => Ok(()),
    }
}

// ---------------------------------------------------------------------------
// Records.
// ---------------------------------------------------------------------------

/// A published (or otherwise produced) file, as recorded and verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputFile {
    /// Absolute path.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// XXH3-64 of the content, 16 lower-case hex digits.
    pub xxh3: String,
}

/// What a task produced; written once, when the task first succeeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CompletionRecord {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that succeeded.
    pub attempt: u32,
    /// The worker (host/name) that ran it.
    pub worker: String,
    /// Start, ms since the epoch.
    pub started_at_ms: i64,
    /// End, ms since the epoch.
    pub finished_at_ms: i64,
    /// Files produced, with checksums.
    pub outputs: Vec<OutputFile>,
    /// The step's summary (counts, ranges, entity ids …).
    pub summary: serde_json::Value,
}

/// A terminal failure: dead-lettered after the last retry, or permanent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FailureRecord {
    /// The task.
    pub task_id: TaskId,
    /// The attempt that failed.
    pub attempt: u32,
    /// The worker that ran it.
    pub worker: String,
    /// When, ms since the epoch.
    pub at_ms: i64,
    /// Transient (retries exhausted) or permanent.
    pub class: ErrorClass,
    /// The error message.
    pub reason: String,
    /// Whether the message went to the dead-letter queue.
    pub dead_lettered: bool,
}

/// The start of one attempt (`runs/<task>.<attempt>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunRecord {
    /// The task.
    pub task_id: TaskId,
    /// The attempt.
    pub attempt: u32,
    /// The worker running it.
    pub worker: String,
    /// Start, ms since the epoch.
    pub started_at_ms: i64,
}

/// Who claimed the right to publish a child (`claims/<child>.json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClaimRecord {
    /// The child task.
    pub child: TaskId,
    /// The parent task whose completion dispatches it.
    pub by: TaskId,
    /// When, ms since the epoch.
    pub at_ms: i64,
}

/// The content of a dispatch mark written as a file of its own (usually a mark
/// is a hard link to the manifest; only its name is read).
const DISPATCH_MARK: &[u8] =
    b"{\"what\":\"iom dispatch mark: the broker confirmed this task's message\"}\n";

/// Outcome of [`WorkDir::begin_attempt`].
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// Run the step.
    Run,
    /// The task already succeeded (a redelivery or a duplicate): do not run it
    /// again; go on with dispatching its children.
    AlreadyDone(CompletionRecord),
    /// A later attempt has started: this delivery is superseded; drop it.
    Stale {
        /// The highest attempt started.
        current: u32,
    },
}

/// Outcome of [`WorkDir::complete`].
#[derive(Debug, Clone, PartialEq)]
pub enum Completed {
    /// This record is the task's completion.
    Recorded,
    /// Another attempt completed first; its record stands.
    AlreadyComplete(CompletionRecord),
}

/// Outcome of [`WorkDir::claim_dispatch`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The caller publishes the child.
    Won,
    /// This parent claimed it first (possibly the caller itself, in an earlier
    /// run that may have died before publishing).
    HeldBy(TaskId),
}

// ---------------------------------------------------------------------------
// Status.
// ---------------------------------------------------------------------------

/// Why no work folder is where a message or a command looks for one
/// ([`WorkDir::absence`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Absence {
    /// Not even the folder that would hold it is there: this host does not see
    /// the project's storage at that path (not mounted, or mounted elsewhere).
    Unseen,
    /// It was moved aside by [`WorkDir::supersede`] (a new plan replaced it).
    Superseded,
    /// The folder that holds it is there; it is not (removed by hand).
    Removed,
}

/// One task's state, as the work folder records it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum TaskState {
    /// Its parents have not all completed, or its message is not confirmed yet.
    Waiting,
    /// Its message is on the queue; no worker has started it.
    Dispatched,
    /// An attempt has started and not finished.
    Running {
        /// The latest attempt.
        attempt: u32,
        /// Its worker.
        worker: String,
        /// Its start, ms since the epoch.
        since: i64,
    },
    /// Completed.
    Succeeded {
        /// The attempt that succeeded.
        attempt: u32,
        /// Its worker.
        worker: String,
        /// How long it ran.
        seconds: f64,
    },
    /// Failed for good (dead-lettered or permanent).
    Failed {
        /// The error.
        reason: String,
        /// Transient (retries exhausted) or permanent.
        class: ErrorClass,
        /// The attempt that failed.
        attempt: u32,
    },
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaskState::Waiting => f.write_str("waiting"),
            TaskState::Dispatched => f.write_str("queued"),
            TaskState::Running {
                attempt, worker, ..
            } => write!(f, "running #{attempt} on {worker}"),
            TaskState::Succeeded {
                attempt,
                worker,
                seconds,
            } => write!(f, "done #{attempt} on {worker} in {seconds:.1}s"),
            TaskState::Failed {
                reason,
                class,
                attempt,
            } => {
                let class = match class {
                    ErrorClass::Transient => "retries exhausted",
                    ErrorClass::Permanent => "permanent",
                };
                write!(f, "FAILED #{attempt} ({class}): {reason}")
            }
        }
    }
}

/// The whole graph's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GraphState {
    /// Not finished, nothing failed for good.
    Running,
    /// Every task succeeded.
    Succeeded,
    /// At least one task failed for good.
    Failed,
    /// Not finished, and the in-process (embedded) run that ran it has stopped
    /// (interrupted, killed, or the machine went down): nothing runs it until
    /// `iom resume`.
    Interrupted,
}

impl GraphState {
    /// `running`, `succeeded`, `failed`, `interrupted`.
    pub fn as_str(self) -> &'static str {
        match self {
            GraphState::Running => "running",
            GraphState::Succeeded => "succeeded",
            GraphState::Failed => "failed",
            GraphState::Interrupted => "interrupted",
        }
    }
}

/// One task in a [`GraphStatus`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskStatus {
    /// The task.
    pub id: TaskId,
    /// Its label.
    pub label: String,
    /// Its kind.
    pub kind: StepKind,
    /// Its dependencies.
    pub deps: Vec<TaskId>,
    /// Its state.
    #[serde(flatten)]
    pub state: TaskState,
}

/// Every task's state plus the graph's (`iom status --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GraphStatus {
    /// The graph.
    pub graph_id: GraphId,
    /// Graph-level state.
    pub state: GraphState,
    /// Per task, in the manifest's (topological) order.
    pub tasks: Vec<TaskStatus>,
}

impl GraphStatus {
    /// The status of one task.
    pub fn task(&self, id: &TaskId) -> Option<&TaskStatus> {
        self.tasks.iter().find(|t| &t.id == id)
    }

    /// How `iom status` shows a task: its state, except that in an interrupted
    /// graph a task that was running or queued says the stopped run left it.
    pub fn label(&self, id: &TaskId) -> Option<String> {
        let t = self.task(id)?;
        Some(match (self.state, &t.state) {
            (
                GraphState::Interrupted,
                TaskState::Running {
                    attempt, worker, ..
                },
            ) => {
                format!("cut off #{attempt} on {worker}; runs again on resume")
            }
            (GraphState::Interrupted, TaskState::Dispatched) => "not run; runs on resume".into(),
            (_, state) => state.to_string(),
        })
    }

    /// The tasks whose failure stands, each with the attempt that failed.
    pub fn failed(&self) -> Vec<(&TaskId, u32)> {
        self.tasks
            .iter()
            .filter_map(|t| match t.state {
                TaskState::Failed { attempt, .. } => Some((&t.id, attempt)),
                _ => None,
            })
            .collect()
    }
}

// ---------------------------------------------------------------------------
// The work folder.
// ---------------------------------------------------------------------------

/// A publish's work folder. Cheap to open; every call reads the shared storage,
/// except the manifest, which never changes once written and is cached.
#[derive(Debug, Clone)]
pub struct WorkDir {
    dir: PathBuf,
    manifest: OnceLock<Graph>,
}

impl WorkDir {
    /// Creates the folder and writes the manifest (once). If a manifest exists,
    /// an identical graph is a re-submit (`Ok`); a different one is
    /// [`StoreError::ManifestMismatch`].
    pub fn create(graph: &Graph) -> Result<WorkDir, StoreError> {
        let graph = graph.clone().validated()?;
        for id in graph.nodes.iter().map(|n| &n.id) {
            validate_task_id(id)?;
        }
        let dir = graph.work_dir.clone();
        for sub in [RUNS, DONE, FAILED, CLAIMS, DISPATCHED, TMP] {
            let p = dir.join(sub);
            fs::create_dir_all(&p).map_err(io_err("create folder", &p))?;
        }
        let wd = WorkDir {
            dir,
            manifest: OnceLock::new(),
        };
        let bytes = serde_json::to_vec_pretty(&graph).map_err(|e| StoreError::Corrupt {
            path: wd.dir.join(MANIFEST),
            what: "graph manifest",
            detail: e.to_string(),
        })?;
        let path = wd.dir.join(MANIFEST);
        let created =
            create_if_absent(&path, &wd.temp(MANIFEST), &bytes).map_err(io_err("create", &path))?;
        if !created {
            let existing: Graph = wd.read_required(&path, "graph manifest")?;
            if existing != graph {
                return Err(StoreError::ManifestMismatch {
                    dir: wd.dir.clone(),
                    existing: existing.id,
                });
            }
        }
        let _ = wd.manifest.set(graph);
        Ok(wd)
    }

    /// [`StoreError::ManifestMismatch`] when `graph`'s work folder already holds a
    /// different graph; writes nothing (a check of every graph of a publish before
    /// [`WorkDir::create`] writes any).
    pub fn check_manifest(graph: &Graph) -> Result<(), StoreError> {
        let graph = graph.clone().validated()?;
        let wd = WorkDir {
            dir: graph.work_dir.clone(),
            manifest: OnceLock::new(),
        };
        let path = wd.dir.join(MANIFEST);
        match wd.read_optional::<Graph>(&path, "graph manifest")? {
            Some(existing) if existing != graph => Err(StoreError::ManifestMismatch {
                dir: wd.dir.clone(),
                existing: existing.id,
            }),
            _ => Ok(()),
        }
    }

    /// Moves the work folder `dir` of a publish that a new plan of the same
    /// version replaces (it published nothing; see [`crate::plan::Plan::replaces`])
    /// to `<parent>/.superseded/<name>.<ms>`, out of `iom status`'s listing, and
    /// returns where. [`StoreError::RunningInProcess`] (nothing moved) when an
    /// in-process run holds it. A late message of the old plan then finds the
    /// new manifest, whose step differs from the message's: it is dead-lettered,
    /// never run against the new plan (see `runtime::handle`).
    pub fn supersede(dir: &Path) -> Result<PathBuf, StoreError> {
        let old = WorkDir::open(dir)?;
        let _held = old.lock_in_process()?;
        let parent = dir.parent().unwrap_or(Path::new("."));
        let name = dir
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "publish".into());
        let aside = parent.join(SUPERSEDED);
        fs::create_dir_all(&aside).map_err(io_err("create folder", &aside))?;
        let to = aside.join(format!("{name}.{}", now_ms()));
        fs::rename(dir, &to).map_err(io_err("move aside", dir))?;
        fsync_dir(parent).map_err(io_err("sync", parent))?;
        Ok(to)
    }

    /// Why there is no work folder at `dir`; `None` when something is there.
    pub fn absence(dir: &Path) -> Option<Absence> {
        if dir.exists() {
            return None;
        }
        let (Some(parent), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Some(Absence::Unseen);
        };
        if !parent.is_dir() {
            return Some(Absence::Unseen);
        }
        let prefix = format!("{}.", name.to_string_lossy());
        let moved = fs::read_dir(parent.join(SUPERSEDED)).is_ok_and(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        });
        Some(if moved {
            Absence::Superseded
        } else {
            Absence::Removed
        })
    }

    /// Opens an existing work folder (one with a manifest).
    pub fn open(dir: &Path) -> Result<WorkDir, StoreError> {
        let path = dir.join(MANIFEST);
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => Ok(WorkDir {
                dir: dir.to_path_buf(),
                manifest: OnceLock::new(),
            }),
            Ok(_) => Err(StoreError::NotAWorkDir {
                dir: dir.to_path_buf(),
            }),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Err(StoreError::NotAWorkDir {
                dir: dir.to_path_buf(),
            }),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The folder.
    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// The graph (read once, then cached: it never changes).
    pub fn manifest(&self) -> Result<Graph, StoreError> {
        if let Some(g) = self.manifest.get() {
            return Ok(g.clone());
        }
        let path = self.dir.join(MANIFEST);
        // A manifest is written once and never changed, so a worker that runs
        // many tasks of one graph parses it once: the process-wide cache is keyed
        // by the file's identity (device, inode, size, mtime), which a folder
        // deleted and re-created with another graph does not share.
        let key = fs::metadata(&path).ok().map(|m| {
            (
                path.clone(),
                m.dev(),
                m.ino(),
                m.len(),
                m.mtime_nsec(),
                m.mtime(),
            )
        });
        if let Some(g) = key.as_ref().and_then(manifest_cache::get) {
            return Ok(self.manifest.get_or_init(|| g).clone());
        }
        let g: Graph = self.read_required(&path, "graph manifest")?;
        let g = g.validated()?;
        if let Some(key) = key {
            manifest_cache::put(key, &g);
        }
        Ok(self.manifest.get_or_init(|| g).clone())
    }

    /// The graph, if this handle has already read it (no IO).
    pub fn loaded_manifest(&self) -> Option<Graph> {
        self.manifest.get().cloned()
    }

    /// Starts `attempt` of `task` on `worker` (attempt fencing, queue-and-ops
    /// §2.7): [`Begin::AlreadyDone`] if the task has completed,
    /// [`Begin::Stale`] if a higher attempt has started, else records
    /// `runs/<task>.<attempt>.json` and returns [`Begin::Run`]. The same attempt
    /// may begin again (a redelivery after a crash): its record is rewritten.
    pub fn begin_attempt(
        &self,
        task: &TaskId,
        attempt: u32,
        worker: &str,
    ) -> Result<Begin, StoreError> {
        validate_task_id(task)?;
        if attempt == 0 {
            return Err(StoreError::BadAttempt { task: task.clone() });
        }
        if let Some(rec) = self.completion(task)? {
            return Ok(Begin::AlreadyDone(rec));
        }
        if let Some(current) = self.highest_attempt(task)?.filter(|&h| h > attempt) {
            return Ok(Begin::Stale { current });
        }
        let rec = RunRecord {
            task_id: task.clone(),
            attempt,
            worker: worker.to_string(),
            started_at_ms: now_ms(),
        };
        let path = self.run_path(task, attempt);
        // Usually the attempt's first start: a new file. The same attempt
        // beginning again (a redelivery after a crash) rewrites it.
        let bytes = to_json(&rec, &path, "run record")?;
        if !self.create_record_with(&path, &bytes, Durability::Atomic)? {
            self.replace_with(&path, &rec, "run record", Durability::Atomic)?;
        }
        // A later attempt may have started while this record was written.
        if let Some(current) = self.highest_attempt(task)?.filter(|&h| h > attempt) {
            return Ok(Begin::Stale { current });
        }
        Ok(Begin::Run)
    }

    /// The highest attempt of `task` that has started.
    pub fn current_attempt(&self, task: &TaskId) -> Result<Option<u32>, StoreError> {
        validate_task_id(task)?;
        self.highest_attempt(task)
    }

    /// The start record of the highest attempt of `task`.
    pub fn latest_run(&self, task: &TaskId) -> Result<Option<RunRecord>, StoreError> {
        validate_task_id(task)?;
        let Some(a) = self.highest_attempt(task)? else {
            return Ok(None);
        };
        match self.read_optional(&self.run_path(task, a), "run record")? {
            Some(r) => Ok(Some(r)),
            // A work folder written by an earlier build.
            None => self.read_optional(
                &self.dir.join(RUNS).join(&task.0).join(format!("{a}.json")),
                "run record",
            ),
        }
    }

    /// Records the task's completion, exclusively: the first completion wins and
    /// is never overwritten, so a late report from a superseded attempt (or a
    /// duplicate run) gets [`Completed::AlreadyComplete`] with the standing record.
    /// A stale attempt's completion is accepted if it is first: every step is
    /// idempotent by task id, so its outputs are as good as the newer attempt's.
    pub fn complete(&self, rec: &CompletionRecord) -> Result<Completed, StoreError> {
        validate_task_id(&rec.task_id)?;
        let path = self.record_path(DONE, &rec.task_id);
        let bytes = to_json(rec, &path, "completion record")?;
        if self.create_record(&path, &bytes)? {
            Ok(Completed::Recorded)
        } else {
            Ok(Completed::AlreadyComplete(
                self.read_required(&path, "completion record")?,
            ))
        }
    }

    /// The task's completion record, if it has completed.
    pub fn completion(&self, task: &TaskId) -> Result<Option<CompletionRecord>, StoreError> {
        validate_task_id(task)?;
        self.read_optional(&self.record_path(DONE, task), "completion record")
    }

    /// Records a terminal failure (last write wins, atomically). Fenced: it is
    /// ignored when the task has already completed (success stands), when a
    /// higher attempt has started (a superseded attempt's late report), or when
    /// a failure of a higher attempt is already recorded. Returns whether it was
    /// recorded.
    pub fn record_failure(&self, rec: &FailureRecord) -> Result<bool, StoreError> {
        validate_task_id(&rec.task_id)?;
        if self.has_record(DONE, &rec.task_id)? {
            tracing::info!(task = %rec.task_id, attempt = rec.attempt, "ignoring failure report of a task that has completed");
            return Ok(false);
        }
        if let Some(current) = self.highest_attempt(&rec.task_id)? {
            if current > rec.attempt {
                tracing::info!(task = %rec.task_id, attempt = rec.attempt, current, "ignoring failure report of a superseded attempt");
                return Ok(false);
            }
        }
        if let Some(existing) = self.failure(&rec.task_id)? {
            if existing.attempt > rec.attempt {
                return Ok(false);
            }
        }
        let path = self.record_path(FAILED, &rec.task_id);
        self.replace(&path, rec, "failure record")?;
        Ok(true)
    }

    /// The task's terminal failure record, if any.
    pub fn failure(&self, task: &TaskId) -> Result<Option<FailureRecord>, StoreError> {
        validate_task_id(task)?;
        self.read_optional(&self.record_path(FAILED, task), "failure record")
    }

    /// Children of `done` in `graph` whose parents have all completed (success
    /// satisfies a dependency; a failure never does).
    pub fn ready_children(&self, graph: &Graph, done: &TaskId) -> Result<Vec<TaskId>, StoreError> {
        validate_task_id(done)?;
        if graph.node(done).is_none() {
            return Err(StoreError::UnknownTask {
                task: done.clone(),
                dir: self.dir.clone(),
            });
        }
        let mut ready = Vec::new();
        for child in graph.children(done) {
            let mut all = true;
            for d in &child.deps {
                validate_task_id(d)?;
                if !self.has_record(DONE, d)? {
                    all = false;
                    break;
                }
            }
            if all {
                ready.push(child.id.clone());
            }
        }
        Ok(ready)
    }

    /// Claims the right to publish `child` on behalf of parent `by`, by exclusive
    /// creation of `claims/<child>.json`: exactly one caller ever gets
    /// [`Claim::Won`], however many parents finish at once on however many hosts.
    pub fn claim_dispatch(&self, child: &TaskId, by: &TaskId) -> Result<Claim, StoreError> {
        validate_task_id(child)?;
        validate_task_id(by)?;
        let path = self.record_path(CLAIMS, child);
        let rec = ClaimRecord {
            child: child.clone(),
            by: by.clone(),
            at_ms: now_ms(),
        };
        let bytes = to_json(&rec, &path, "claim record")?;
        if self.create_record(&path, &bytes)? {
            return Ok(Claim::Won);
        }
        let held: ClaimRecord = self.read_required(&path, "claim record")?;
        Ok(Claim::HeldBy(held.by))
    }

    /// Who claimed `child`, if anyone.
    pub fn claim(&self, child: &TaskId) -> Result<Option<ClaimRecord>, StoreError> {
        validate_task_id(child)?;
        self.read_optional(&self.record_path(CLAIMS, child), "claim record")
    }

    /// Records that the message of `task` was confirmed by the broker (or handed
    /// to the in-process pool). Idempotent.
    ///
    /// The mark is a name and nothing else: a hard link to the folder's
    /// manifest (written once, never changed; only the mark's name is ever
    /// read), so it costs a directory entry and no new file (inode) per task.
    /// Where no link can be made (a file system without hard links, the
    /// manifest's link count at its limit) a small file of its own is written.
    pub fn mark_dispatched(&self, task: &TaskId) -> Result<(), StoreError> {
        validate_task_id(task)?;
        let path = self.record_path(DISPATCHED, task);
        let manifest = self.dir.join(MANIFEST);
        let linked = with_dir(&self.dir.join(DISPATCHED), || {
            fs::hard_link(&manifest, &path)
        });
        match linked {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => return Ok(()),
            // EMLINK, EPERM (no hard links here), the manifest gone, …
            Err(e) => {
                tracing::debug!(path = %path.display(), "dispatch mark as a file of its own: {e}");
            }
        }
        self.create_record_with(&path, DISPATCH_MARK, Durability::Atomic)?;
        Ok(())
    }

    /// Whether [`WorkDir::mark_dispatched`] was called for `task`.
    pub fn is_dispatched(&self, task: &TaskId) -> Result<bool, StoreError> {
        validate_task_id(task)?;
        self.has_record(DISPATCHED, task)
    }

    /// Every task's state and the graph's.
    ///
    /// Per task: a completion → `Succeeded`; else a failure not followed by a
    /// newer attempt → `Failed`; else a started attempt → `Running`; else a
    /// dispatch mark → `Dispatched`; else `Waiting`. The graph has `Succeeded`
    /// when every task has, `Failed` when any task has failed, else `Running`, or
    /// `Interrupted` when an in-process run ran it and has stopped
    /// ([`WorkDir::lock_in_process`]).
    pub fn status(&self) -> Result<GraphStatus, StoreError> {
        self.status_with(true)
    }

    /// [`WorkDir::status`]; `probe_lock: false` never reports `Interrupted` and
    /// does not touch the in-process lock: what the process holding the lock
    /// must use (on NFS `flock` is a POSIX lock, which any close of the file by
    /// the same process releases).
    fn status_with(&self, probe_lock: bool) -> Result<GraphStatus, StoreError> {
        let graph = self.manifest()?;
        let mut tasks = Vec::with_capacity(graph.nodes.len());
        for n in &graph.nodes {
            tasks.push(TaskStatus {
                id: n.id.clone(),
                label: n.label.clone(),
                kind: n.step.kind(),
                deps: n.deps.clone(),
                state: self.task_state(&n.id)?,
            });
        }
        let state = if tasks
            .iter()
            .all(|t| matches!(t.state, TaskState::Succeeded { .. }))
        {
            GraphState::Succeeded
        } else if tasks
            .iter()
            .any(|t| matches!(t.state, TaskState::Failed { .. }))
        {
            GraphState::Failed
        } else if probe_lock && self.in_process_run_stopped()? {
            GraphState::Interrupted
        } else {
            GraphState::Running
        };
        Ok(GraphStatus {
            graph_id: graph.id,
            state,
            tasks,
        })
    }

    /// The state of one task (see [`WorkDir::status`]).
    pub fn task_state(&self, task: &TaskId) -> Result<TaskState, StoreError> {
        if let Some(c) = self.completion(task)? {
            return Ok(TaskState::Succeeded {
                attempt: c.attempt,
                worker: c.worker,
                seconds: (c.finished_at_ms - c.started_at_ms).max(0) as f64 / 1000.0,
            });
        }
        let run = self.latest_run(task)?;
        if let Some(f) = self.failure(task)? {
            // A failure stands unless an attempt started after it (a DLQ requeue).
            let superseded = run
                .as_ref()
                .is_some_and(|r| r.attempt > f.attempt || r.started_at_ms > f.at_ms);
            if !superseded {
                return Ok(TaskState::Failed {
                    reason: f.reason,
                    class: f.class,
                    attempt: f.attempt,
                });
            }
        }
        if let Some(r) = run {
            return Ok(TaskState::Running {
                attempt: r.attempt,
                worker: r.worker,
                since: r.started_at_ms,
            });
        }
        if self.is_dispatched(task)? {
            return Ok(TaskState::Dispatched);
        }
        Ok(TaskState::Waiting)
    }

    /// For `iom resume`: tasks that are not complete, not failed, never started,
    /// whose parents have all completed (roots included), and that are not marked
    /// dispatched — what a crash between a claim (or the submit) and the publish
    /// confirm left behind. See [`WorkDir::ready_to_resume`] for the wider set.
    pub fn undispatched_ready(&self) -> Result<Vec<TaskId>, StoreError> {
        self.ready_to_resume(false)
    }

    /// [`WorkDir::undispatched_ready`], plus, with `include_unstarted`, tasks
    /// marked dispatched that no worker has started (their message may have been
    /// purged or lost with a broker's storage). Republishing one that is in fact
    /// still queued is harmless: steps are idempotent and the completion is
    /// recorded once.
    pub fn ready_to_resume(&self, include_unstarted: bool) -> Result<Vec<TaskId>, StoreError> {
        let graph = self.manifest()?;
        let mut out = Vec::new();
        for n in &graph.nodes {
            if self.has_record(DONE, &n.id)?
                || self.has_record(FAILED, &n.id)?
                || self.highest_attempt(&n.id)?.is_some()
            {
                continue;
            }
            let mut parents_done = true;
            for d in &n.deps {
                if !self.has_record(DONE, d)? {
                    parents_done = false;
                    break;
                }
            }
            if !parents_done {
                continue;
            }
            if include_unstarted || !self.has_record(DISPATCHED, &n.id)? {
                out.push(n.id.clone());
            }
        }
        Ok(out)
    }

    /// Tasks whose recorded failure stands (no completion, no attempt started
    /// since), each with the attempt that failed: what `iom resume
    /// --retry-failed` runs again.
    pub fn failed_attempts(&self) -> Result<Vec<(TaskId, u32)>, StoreError> {
        // Called by an in-process run holding the lock: no lock probe.
        let status = self.status_with(false)?;
        Ok(status
            .failed()
            .into_iter()
            .map(|(id, attempt)| (id.clone(), attempt))
            .collect())
    }

    /// Takes the in-process run lock of this work folder for an embedded run:
    /// an exclusive `flock` on `in-process.lock`.
    /// [`StoreError::RunningInProcess`] when another process holds it (its run is
    /// still going). The lock goes when the guard is dropped
    /// or the process ends, however it ends; the file stays, and tells
    /// [`WorkDir::status`] that an in-process run ran this graph, so a graph left
    /// unfinished with the lock free is [`GraphState::Interrupted`].
    pub fn lock_in_process(&self) -> Result<InProcessLock, StoreError> {
        let path = self.in_process_lock_path();
        loop {
            // Read-write: on NFS `flock` is a POSIX lock, and an exclusive one
            // needs a file open for writing.
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(file) => {
                    if try_flock(&file, libc::LOCK_EX).map_err(io_err("lock", &path))? {
                        return Ok(InProcessLock { _file: file });
                    }
                    return Err(StoreError::RunningInProcess {
                        graph: self.manifest()?.id,
                        lock: path,
                    });
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("open", &path)(e)),
            }
            // The first in-process run: the file is locked before it has its
            // name, so nobody finds it unlocked while the run starts.
            let tmp = self.temp(IN_PROCESS_LOCK);
            if let Some(parent) = tmp.parent() {
                fs::create_dir_all(parent).map_err(io_err("create folder", parent))?;
            }
            let file = OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&tmp)
                .map_err(io_err("create", &tmp))?;
            let locked = try_flock(&file, libc::LOCK_EX);
            let linked = fs::hard_link(&tmp, &path);
            let _ = fs::remove_file(&tmp);
            locked.map_err(io_err("lock", &tmp))?;
            match linked {
                Ok(()) => return Ok(InProcessLock { _file: file }),
                // Another run named its own first: lock that one.
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &path)(e)),
            }
        }
    }

    /// `in-process.lock` of this work folder.
    pub fn in_process_lock_path(&self) -> PathBuf {
        self.dir.join(IN_PROCESS_LOCK)
    }

    /// Whether an in-process run ran this graph and none runs it now (the lock
    /// file exists and nobody holds it).
    pub fn in_process_run_stopped(&self) -> Result<bool, StoreError> {
        let path = self.in_process_lock_path();
        match File::open(&path) {
            // Shared: two probes never block each other; closing releases it.
            Ok(file) => try_flock(&file, libc::LOCK_SH).map_err(io_err("lock", &path)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("open", &path)(e)),
        }
    }

    /// Hands the graph to the farm (`iom publish` or `iom resume` with a
    /// broker), before its tasks are sent: records who and when (`farm.json`,
    /// the first hand-off is kept), so an in-process run will not run the farm's
    /// tasks as well ([`StoreError::OnTheFarm`]). Returns whether an in-process
    /// run has run it: then what that run left unfinished
    /// ([`WorkDir::orphaned_in_process`]) is on no queue; send it, then call
    /// [`WorkDir::forget_in_process`]. [`StoreError::RunningInProcess`] (nothing
    /// changed) when an in-process run holds it.
    pub fn hand_to_farm(&self, by: &str) -> Result<bool, StoreError> {
        let ran_in_process = self.in_process_lock_path().exists();
        let _held = self.lock_in_process()?;
        let record = FarmHandoff {
            by: by.to_string(),
            at_ms: now_ms(),
        };
        let path = self.dir.join(FARM);
        self.create_record(&path, &to_json(&record, &path, "farm hand-off record")?)?;
        if !ran_in_process {
            let path = self.in_process_lock_path();
            fs::remove_file(&path).map_err(io_err("remove", &path))?;
        }
        Ok(ran_in_process)
    }

    /// Removes the in-process lock file once the graph's in-process leftovers
    /// are on the farm's queues ([`WorkDir::hand_to_farm`]), so an unfinished
    /// graph shows `Running` again, not `Interrupted`.
    /// [`StoreError::RunningInProcess`] (nothing removed) when an in-process run
    /// holds it.
    pub fn forget_in_process(&self) -> Result<(), StoreError> {
        let _held = self.lock_in_process()?;
        let path = self.in_process_lock_path();
        match fs::remove_file(&path) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// Who handed the graph to the farm, and when; `None` if nobody did (or an
    /// in-process run took it back).
    pub fn farm_handoff(&self) -> Result<Option<FarmHandoff>, StoreError> {
        self.read_optional(&self.dir.join(FARM), "farm hand-off record")
    }

    /// Before an in-process run, holding the in-process lock: refuses a graph
    /// handed to the farm ([`StoreError::OnTheFarm`]), unless `take`, which takes
    /// it back from the farm (`--embedded`: forgets the hand-off).
    pub fn claim_from_farm(&self, take: bool) -> Result<(), StoreError> {
        let Some(h) = self.farm_handoff()? else {
            return Ok(());
        };
        if !take {
            return Err(StoreError::OnTheFarm {
                graph: self.manifest()?.id,
                by: h.by,
                at: crate::queue::rfc3339_utc(h.at_ms),
            });
        }
        tracing::warn!(dir = %self.dir.display(), "running in-process a publish submitted to the farm by {} (--embedded)", h.by);
        let path = self.dir.join(FARM);
        match fs::remove_file(&path) {
            // Not synced: a host crash that loses the removal only asks for
            // `--embedded` again.
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(io_err("remove", &path)(e)),
            _ => Ok(()),
        }
    }

    /// What a stopped in-process run left on its in-memory queue: tasks queued
    /// (`None`) or started and never finished (`Some(latest attempt)`). Nothing
    /// else will run them; the next in-process run sends them again. Call it
    /// holding the lock.
    pub fn orphaned_in_process(&self) -> Result<Vec<(TaskId, Option<u32>)>, StoreError> {
        Ok(self
            .status_with(false)?
            .tasks
            .into_iter()
            .filter_map(|t| match t.state {
                TaskState::Dispatched => Some((t.id, None)),
                TaskState::Running { attempt, .. } => Some((t.id, Some(attempt))),
                _ => None,
            })
            .collect())
    }

    // -- helpers ------------------------------------------------------------

    fn record_path(&self, sub: &str, task: &TaskId) -> PathBuf {
        self.dir.join(sub).join(format!("{}.json", task.0))
    }

    /// `runs/<task>.<attempt>.json`.
    fn run_path(&self, task: &TaskId, attempt: u32) -> PathBuf {
        self.dir
            .join(RUNS)
            .join(format!("{}.{attempt}.json", task.0))
    }

    fn temp(&self, stem: &str) -> PathBuf {
        unique_temp(&self.dir.join(TMP), stem)
    }

    /// Exclusive create (see [`create_if_absent`]).
    fn create_record(&self, path: &Path, bytes: &[u8]) -> Result<bool, StoreError> {
        self.create_record_with(path, bytes, Durability::Synced)
    }

    fn create_record_with(
        &self,
        path: &Path,
        bytes: &[u8],
        durability: Durability,
    ) -> Result<bool, StoreError> {
        let stem = file_stem(path);
        create_if_absent_with(path, &self.temp(&stem), bytes, durability)
            .map_err(io_err("create", path))
    }

    /// Atomic replace (see [`replace_atomic`]).
    fn replace<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        what: &'static str,
    ) -> Result<(), StoreError> {
        self.replace_with(path, value, what, Durability::Synced)
    }

    fn replace_with<T: Serialize>(
        &self,
        path: &Path,
        value: &T,
        what: &'static str,
        durability: Durability,
    ) -> Result<(), StoreError> {
        let bytes = to_json(value, path, what)?;
        let stem = file_stem(path);
        replace_atomic_with(path, &self.temp(&stem), &bytes, durability)
            .map_err(io_err("write", path))
    }

    fn has_record(&self, sub: &str, task: &TaskId) -> Result<bool, StoreError> {
        let path = self.record_path(sub, task);
        match fs::symlink_metadata(&path) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(e) => Err(io_err("read", &path)(e)),
        }
    }

    /// The highest attempt of `task` with a start record: `runs/<task>.<n>.json`
    /// (the folder holds one graph's records: a handful of names per task), and
    /// `runs/<task>/<n>.json` of work folders written by earlier builds. A name
    /// is the task's only when what follows `<task>.` is exactly `<digits>.json`,
    /// so a task whose id extends another's (`a` and `a.5`) never counts the
    /// other's.
    fn highest_attempt(&self, task: &TaskId) -> Result<Option<u32>, StoreError> {
        let runs = self.dir.join(RUNS);
        let prefix = format!("{}.", task.0);
        let mut legacy = false;
        let mut best = max_attempt_in(&runs, |name| {
            if name == task.0 {
                legacy = true;
                return None;
            }
            name.strip_prefix(&prefix).and_then(attempt_of)
        })?;
        if legacy {
            best = best.max(max_attempt_in(&runs.join(&task.0), attempt_of)?);
        }
        Ok(best)
    }

    fn read_optional<T: DeserializeOwned>(
        &self,
        path: &Path,
        what: &'static str,
    ) -> Result<Option<T>, StoreError> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_err("read", path)(e)),
        };
        serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: path.to_path_buf(),
                what,
                detail: e.to_string(),
            })
    }

    fn read_required<T: DeserializeOwned>(
        &self,
        path: &Path,
        what: &'static str,
    ) -> Result<T, StoreError> {
        self.read_optional(path, what)?
            .ok_or_else(|| StoreError::Corrupt {
                path: path.to_path_buf(),
                what,
                detail: "the file vanished after it was seen; records are never deleted".into(),
            })
    }
}

/// Parsed manifests, shared by every [`WorkDir`] handle of the process.
mod manifest_cache {
    use std::collections::HashMap;
    use std::path::PathBuf;
    use std::sync::{Mutex, OnceLock};

    use crate::task::Graph;

    /// Path and file identity: device, inode, size, mtime (ns part, s part).
    pub(super) type Key = (PathBuf, u64, u64, u64, i64, i64);

    /// Graphs kept; the cache is emptied when it is full (a worker serves a few
    /// publishes at a time, so the hit rate stays high).
    const CAPACITY: usize = 256;

    fn cache() -> &'static Mutex<HashMap<Key, Graph>> {
        static CACHE: OnceLock<Mutex<HashMap<Key, Graph>>> = OnceLock::new();
        CACHE.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(super) fn get(key: &Key) -> Option<Graph> {
        cache().lock().ok()?.get(key).cloned()
    }

    pub(super) fn put(key: Key, graph: &Graph) {
        if let Ok(mut c) = cache().lock() {
            if c.len() >= CAPACITY {
                c.clear();
            }
            c.insert(key, graph.clone());
        }
    }
}

/// `<digits>.json` → the number.
fn attempt_of(name: &str) -> Option<u32> {
    name.strip_suffix(".json")
        .filter(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
        .and_then(|n| n.parse().ok())
}

/// The largest attempt `parse` finds among the names in `dir` (none if the
/// folder does not exist).
fn max_attempt_in(
    dir: &Path,
    mut parse: impl FnMut(&str) -> Option<u32>,
) -> Result<Option<u32>, StoreError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("list", dir)(e)),
    };
    let mut best = None;
    for entry in entries {
        let entry = entry.map_err(io_err("list", dir))?;
        if let Some(name) = entry.file_name().to_str() {
            best = best.max(parse(name));
        }
    }
    Ok(best)
}

fn file_stem(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "record".into())
}

fn to_json<T: Serialize>(
    value: &T,
    path: &Path,
    what: &'static str,
) -> Result<Vec<u8>, StoreError> {
    serde_json::to_vec_pretty(value).map_err(|e| StoreError::Corrupt {
        path: path.to_path_buf(),
        what,
        detail: e.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_that_escape_or_hide_are_refused() {
        for bad in [
            "",
            "../x",
            "a/b",
            ".hidden",
            "a..b",
            "a b",
            "ä",
            &"x".repeat(201),
        ] {
            assert!(
                validate_task_id(&TaskId(bad.to_string())).is_err(),
                "{bad:?} accepted"
            );
        }
        for good in ["A_0010_org_v001-1a2b3c4d.copy", "x.y-z_1"] {
            validate_task_id(&TaskId(good.into())).unwrap();
        }
    }

    /// Both ways of creating a record (unnamed file, named temporary) keep the
    /// first content, create missing folders and leave no temporary file.
    #[test]
    fn both_create_paths_keep_the_first_content_and_create_folders() {
        let dir = tempfile::tempdir().unwrap();
        let tmp_dir = dir.path().join("tmp");
        type Create = fn(&Path, &Path, &[u8], Durability) -> io::Result<bool>;
        let named: Create = create_named;
        let unnamed: Create = |dest, _tmp, bytes, d| {
            Ok(create_unnamed(dest, bytes, d)?.expect("unnamed files on the test's file system"))
        };
        for (name, create) in [("named", named), ("unnamed", unnamed)] {
            for durability in [Durability::Synced, Durability::Atomic] {
                let dest = dir
                    .path()
                    .join(format!("{name}-{durability:?}/sub/rec.json"));
                let tmp = unique_temp(&tmp_dir, "rec.json");
                assert!(create(&dest, &tmp, b"first", durability).unwrap(), "{name}");
                let tmp = unique_temp(&tmp_dir, "rec.json");
                assert!(
                    !create(&dest, &tmp, b"second", durability).unwrap(),
                    "{name}"
                );
                assert_eq!(fs::read(&dest).unwrap(), b"first", "{name}");
                assert_eq!(fs::metadata(&dest).unwrap().nlink(), 1, "{name}");
            }
        }
        let left = fs::read_dir(&tmp_dir).map(|d| d.count()).unwrap_or(0);
        assert_eq!(left, 0, "temporary files left behind");
    }

    #[test]
    fn replace_atomic_creates_missing_folders_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("a/b/rec.json");
        let tmp_dir = dir.path().join("tmp");
        replace_atomic(&dest, &unique_temp(&tmp_dir, "rec"), b"one").unwrap();
        replace_atomic(&dest, &unique_temp(&tmp_dir, "rec"), b"two").unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"two");
        assert_eq!(fs::read_dir(&tmp_dir).unwrap().count(), 0);
    }

    #[test]
    fn create_if_absent_keeps_the_first_content() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rec.json");
        assert!(create_if_absent(&dest, &dir.path().join("t1"), b"first").unwrap());
        assert!(!create_if_absent(&dest, &dir.path().join("t2"), b"second").unwrap());
        assert_eq!(fs::read(&dest).unwrap(), b"first");
        assert!(!dir.path().join("t1").exists() && !dir.path().join("t2").exists());
    }
}
