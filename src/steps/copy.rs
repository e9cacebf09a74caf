//! `copy`: the plate into the publish layout, renumbered from 1001.
//!
//! Per frame: read the source once, hashing it (XXH3-64) while writing to a
//! temporary name in the destination folder; fsync; re-read the temporary file
//! and check its hash; then hard-link it to the real name and remove the
//! temporary name. The link fails if the real name exists, so a published file is
//! **never overwritten**, even by a duplicate run racing this one; the folder is
//! fsynced once at the end, before the step reports success.
//!
//! Resumable: a destination that exists with the source's content is skipped; one
//! with different content is a permanent error. Temporary files left by an
//! earlier crashed attempt of this task are removed first.
//!
//! Missing source frames: the probe already judged them; copy skips them only when
//! the graph's probe step allows gaps (`black`/`previous`), read from the work
//! folder's manifest, and refuses them otherwise.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;

use rayon::prelude::*;
use serde_json::json;
use xxhash_rust::xxh3::Xxh3Default;

use super::{
    check_cancel, hash_file, hex64, io_pool, place_no_replace, ranges, temp_error, temp_path,
    Placed, StepContext, StepError, StepOutput,
};
use crate::store::{fsync_dir, OutputFile, StoreError, WorkDir};
use crate::task::{GapPolicy, PlateOutput, Source, Step, StepKind, TaskId, TaskMessage};

/// Largest read/write block.
const BLOCK: usize = 1 << 20;

/// One frame to copy.
struct Job {
    /// Source frame number (sequences) or 0 (movie).
    frame: i64,
    src: PathBuf,
    dest: PathBuf,
}

enum Done {
    Copied(OutputFile),
    Skipped(OutputFile),
    Missing(i64),
}

/// Runs the copy.
pub fn run(
    msg: &TaskMessage,
    source: &Source,
    output: &PlateOutput,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let jobs = plan(source, output)?;
    let dir = &output.frames_dir;
    fs::create_dir_all(dir).map_err(|e| StepError::io("create folder", dir, &e))?;
    let stale = super::remove_stale_temps(dir, &msg.task_id)?;
    let allow_missing = matches!(source, Source::Sequence { .. }) && gaps_allowed(msg)?;

    let pool = io_pool(StepKind::Copy)?;
    let cancel: &AtomicBool = &ctx.cancel;
    let task = &msg.task_id;
    let attempt = msg.attempt;
    // The first error stops the other frames; each frame removes its own
    // temporary file on the way out, so an error leaves only real names.
    let results = pool.install(|| {
        jobs.par_iter()
            .map(|job| {
                check_cancel(cancel)?;
                crate::runtime::fault::per_frame(StepKind::Copy);
                copy_frame(job, task, attempt, allow_missing)
            })
            .collect::<Result<Vec<Done>, StepError>>()
    })?;
    fsync_dir(dir).map_err(|e| StepError::io("fsync folder", dir, &e))?;

    let (mut copied, mut skipped, mut bytes, mut written) = (0u64, 0u64, 0u64, 0u64);
    let mut missing = Vec::new();
    let mut outputs = Vec::with_capacity(results.len());
    for r in results {
        match r {
            Done::Copied(o) => {
                copied += 1;
                written += o.size;
                bytes += o.size;
                outputs.push(o);
            }
            Done::Skipped(o) => {
                skipped += 1;
                bytes += o.size;
                outputs.push(o);
            }
            Done::Missing(n) => missing.push(n),
        }
    }
    // Read: the source once and the copy once (verification); written: the copies.
    crate::metrics::observe_io(msg.step.kind(), bytes + written, written, copied + skipped);
    if !missing.is_empty() {
        tracing::warn!(task = %msg.task_id, missing = missing.len(), "source frames missing; skipped under the graph's gap policy");
    }
    Ok(StepOutput {
        outputs,
        summary: json!({
            "frames": jobs.len(),
            "copied": copied,
            "skipped": skipped,
            "bytes": bytes,
            "missing": ranges(&missing).iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "stale_temps_removed": stale,
            "dir": dir.display().to_string(),
        }),
    })
}

/// Source → destination pairs, in output order.
fn plan(source: &Source, output: &PlateOutput) -> Result<Vec<Job>, StepError> {
    match source {
        Source::Sequence { first, last, .. } => {
            if last < first {
                return Err(StepError::permanent(format!(
                    "copy to {}: the source range {first}-{last} is empty; fix just_in/just_out in the scanlist",
                    output.frames_dir.display()
                )));
            }
            Ok((*first..=*last)
                .map(|n| Job {
                    frame: n,
                    src: source.frame_path(n).unwrap_or_default(),
                    dest: output.frame_path(output.first_frame + (n - first)),
                })
                .collect())
        }
        Source::Movie { path, .. } => Ok(vec![Job {
            frame: 0,
            src: path.clone(),
            dest: output
                .frames_dir
                .join(format!("{}.{}", output.plate_name, output.ext)),
        }]),
    }
}

/// Whether the graph's probe step lets missing frames through. Without a work
/// folder (a step run on its own) the strict answer is given.
fn gaps_allowed(msg: &TaskMessage) -> Result<bool, StepError> {
    let graph = match WorkDir::open(&msg.work_dir).and_then(|w| w.manifest()) {
        Ok(g) => g,
        Err(StoreError::NotAWorkDir { .. }) => return Ok(false),
        Err(e) => return Err(StepError::from_error(e)),
    };
    Ok(graph.nodes.iter().any(|n| {
        matches!(
            n.step,
            Step::Probe {
                gap_policy: GapPolicy::Black | GapPolicy::Previous,
                ..
            }
        )
    }))
}

fn different(dest: &Path, src: &Path) -> StepError {
    StepError::permanent(format!(
        "{} already exists with different content; refusing to overwrite a published file (source {}); publish a new version, or remove the file by hand if it is known to be bad",
        dest.display(),
        src.display()
    ))
}

fn copy_frame(
    job: &Job,
    task: &TaskId,
    attempt: u32,
    allow_missing: bool,
) -> Result<Done, StepError> {
    let src_len = match fs::metadata(&job.src) {
        Ok(m) if m.is_file() => m.len(),
        Ok(_) => {
            return Err(StepError::permanent(format!(
                "source {} is not a regular file",
                job.src.display()
            )))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound && allow_missing => {
            return Ok(Done::Missing(job.frame))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StepError::permanent(format!(
                "source frame {} is missing (gap policy `fail`); have it re-delivered, or publish again with the setting publish.gap_policy: black or previous (IOM__PUBLISH__GAP_POLICY)",
                job.src.display()
            )))
        }
        Err(e) => return Err(StepError::io("read", &job.src, &e)),
    };

    // Resume: a destination already there is either ours (skip) or not (refuse).
    match fs::symlink_metadata(&job.dest) {
        Ok(m) => {
            if !m.is_file() || m.len() != src_len {
                return Err(different(&job.dest, &job.src));
            }
            return verify_existing(job).map(Done::Skipped);
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(StepError::io("read", &job.dest, &e)),
    }

    let tmp = temp_path(&job.dest, task, attempt);
    let result = write_verified(job, &tmp, src_len).and_then(|hash| publish(job, &tmp, hash));
    // On success the temporary name is already gone; on failure remove it so
    // nothing but the real names remain (cleanup catches what a crash leaves).
    let _ = fs::remove_file(&tmp);
    result
}

/// Hashes an existing destination and the source; equal → the destination's record.
fn verify_existing(job: &Job) -> Result<OutputFile, StepError> {
    let (dsize, dhash) = hash_file(&job.dest).map_err(|e| StepError::io("read", &job.dest, &e))?;
    let (_, shash) = hash_file(&job.src).map_err(|e| StepError::io("read", &job.src, &e))?;
    if dhash != shash {
        return Err(different(&job.dest, &job.src));
    }
    Ok(OutputFile {
        path: job.dest.clone(),
        size: dsize,
        xxh3: hex64(dhash),
    })
}

/// Copies `job.src` to `tmp` hashing as it goes, fsyncs, re-reads `tmp` and
/// checks the hash. Returns the hash.
fn write_verified(job: &Job, tmp: &Path, expected_len: u64) -> Result<u64, StepError> {
    let mut r = File::open(&job.src).map_err(|e| StepError::io("open", &job.src, &e))?;
    let mut w = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(|e| StepError::io("create", tmp, &e))?;
    let block = usize::try_from(expected_len)
        .unwrap_or(BLOCK)
        .clamp(4096, BLOCK);
    let mut buf = vec![0u8; block];
    let mut h = Xxh3Default::new();
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StepError::io("read", &job.src, &e)),
        };
        h.update(&buf[..n]);
        w.write_all(&buf[..n])
            .map_err(|e| StepError::io("write", tmp, &e))?;
        total += n as u64;
    }
    w.sync_all().map_err(|e| StepError::io("fsync", tmp, &e))?;
    drop(w);
    if total != expected_len {
        return Err(StepError::transient(format!(
            "source {} changed size while it was copied ({expected_len} → {total} bytes); is the delivery still being written?",
            job.src.display()
        )));
    }
    let hash = h.digest();
    let (vsize, vhash) = hash_file(tmp).map_err(|e| temp_error("re-read", tmp, &e))?;
    if vsize != total || vhash != hash {
        return Err(StepError::transient(format!(
            "verification of {} failed: the copy of {} reads back differently ({vsize} bytes, xxh3 {} instead of {total} bytes, {}); the storage may be failing",
            tmp.display(),
            job.src.display(),
            hex64(vhash),
            hex64(hash)
        )));
    }
    Ok(hash)
}

/// Puts the verified `tmp` under the real name without ever replacing a file.
fn publish(job: &Job, tmp: &Path, hash: u64) -> Result<Done, StepError> {
    let size = fs::metadata(tmp)
        .map_err(|e| temp_error("read", tmp, &e))?
        .len();
    let record = OutputFile {
        path: job.dest.clone(),
        size,
        xxh3: hex64(hash),
    };
    match place_no_replace(tmp, &job.dest, hash, size, || {
        different(&job.dest, &job.src)
    })? {
        Placed::New => Ok(Done::Copied(record)),
        Placed::Same => Ok(Done::Skipped(record)),
    }
}
