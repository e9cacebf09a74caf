//! `probe`: checks the source before anything is published.
//!
//! Image sequence: every frame `first..=last` must exist, be non-empty and pass
//! the structural check ([`crate::media::verify_frame`]: header, offset tables,
//! end markers; no pixel decoding). Missing frames are judged by the gap policy:
//! `fail` refuses the publish (listing the missing ranges), `black`/`previous`
//! let it through and list them in the summary. A frame that exists but is
//! empty or truncated always fails: no policy publishes a broken frame.
//!
//! Movie: the file exists, FFmpeg can probe it, and the range fits its frames.
//!
//! Read-only, so idempotent by construction.

use std::fs;
use std::io;
use std::path::PathBuf;

use rayon::prelude::*;
use serde_json::json;

use super::{check_cancel, io_pool, ranges, ranges_text, StepContext, StepError, StepOutput};
use crate::error::{Classify, ErrorClass};
use crate::media::{self, MediaError};
use crate::task::{GapPolicy, Source, StepKind};

/// How many bad frames an error message lists before "and N more".
const LIST_LIMIT: usize = 10;

enum Frame {
    Ok { bytes: u64 },
    Missing,
    Bad { message: String },
}

/// Runs the probe.
pub fn run(
    source: &Source,
    gap_policy: GapPolicy,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    match source {
        Source::Sequence { first, last, .. } => sequence(source, *first, *last, gap_policy, ctx),
        Source::Movie { path, first, last } => movie(path, *first, *last),
    }
}

fn pattern(source: &Source) -> String {
    match source {
        Source::Sequence {
            dir,
            head,
            pad,
            ext,
            ..
        } => dir
            .join(format!("{head}{}.{ext}", "#".repeat(*pad)))
            .display()
            .to_string(),
        Source::Movie { path, .. } => path.display().to_string(),
    }
}

fn sequence(
    source: &Source,
    first: i64,
    last: i64,
    gap_policy: GapPolicy,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let pat = pattern(source);
    if last < first {
        return Err(StepError::permanent(format!(
            "{pat}: the frame range {first}-{last} is empty; fix just_in/just_out in the scanlist"
        )));
    }
    let frames: Vec<i64> = (first..=last).collect();
    let pool = io_pool(StepKind::Probe)?;
    let cancel = &ctx.cancel;
    let results: Vec<(i64, Frame)> = pool.install(|| {
        frames
            .par_iter()
            .map(|&n| {
                check_cancel(cancel)?;
                let path = source.frame_path(n).unwrap_or_default();
                check_frame(path).map(|f| (n, f))
            })
            .collect::<Result<Vec<_>, StepError>>()
    })?;

    let mut bytes = 0u64;
    let mut present = 0u64;
    let mut missing = Vec::new();
    let mut bad = Vec::new();
    for (n, f) in results {
        match f {
            Frame::Ok { bytes: b } => {
                present += 1;
                bytes += b;
            }
            Frame::Missing => missing.push(n),
            Frame::Bad { message } => bad.push(message),
        }
    }
    if !bad.is_empty() {
        let more = bad.len().saturating_sub(LIST_LIMIT);
        let mut list = bad
            .iter()
            .take(LIST_LIMIT)
            .cloned()
            .collect::<Vec<_>>()
            .join("; ");
        if more > 0 {
            list.push_str(&format!("; and {more} more"));
        }
        return Err(StepError::permanent(format!(
            "{pat}: {} bad source frame(s): {list}; have them re-delivered (then run the \
             task again), or leave them out with just_in/just_out in the scanlist",
            bad.len()
        )));
    }
    let missing_ranges = ranges(&missing);
    if present == 0 {
        return Err(StepError::permanent(format!(
            "{pat}: none of the frames {first}-{last} exist; check the scan path and range in the scanlist"
        )));
    }
    if !missing.is_empty() && gap_policy == GapPolicy::Fail {
        return Err(StepError::permanent(format!(
            "{pat}: {} missing frame(s): {} (gap policy `fail`); have the frames re-delivered, or publish again with the setting publish.gap_policy: black or previous (IOM__PUBLISH__GAP_POLICY)",
            missing.len(),
            ranges_text(&missing_ranges)
        )));
    }
    Ok(StepOutput {
        outputs: Vec::new(),
        summary: json!({
            "source": pat,
            "first": first,
            "last": last,
            "frames": frames.len(),
            "present": present,
            "bytes": bytes,
            "missing": missing_ranges.iter().map(|&(a, b)| [a, b]).collect::<Vec<_>>(),
            "gap_policy": gap_policy,
        }),
    })
}

fn check_frame(path: PathBuf) -> Result<Frame, StepError> {
    let meta = match fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Frame::Missing),
        Err(e) => return Err(StepError::io("read", &path, &e)),
    };
    if !meta.is_file() {
        return Ok(Frame::Bad {
            message: format!("{} is not a regular file", path.display()),
        });
    }
    if meta.len() == 0 {
        return Ok(Frame::Bad {
            message: format!("{} is empty (0 bytes)", path.display()),
        });
    }
    match media::verify_frame(&path) {
        Ok(()) => Ok(Frame::Ok { bytes: meta.len() }),
        // A read error may pass (a storage hiccup); a broken file will not.
        Err(e @ MediaError::Io { .. }) if e.class() == ErrorClass::Transient => {
            Err(StepError::from_error(e))
        }
        // The list ends with its own fix hint: not the reader's as well.
        Err(e) => {
            let message = e.to_string();
            Ok(Frame::Bad {
                message: message
                    .strip_suffix("; re-copy the frame from the delivery")
                    .map_or(message.clone(), str::to_string),
            })
        }
    }
}

fn movie(path: &std::path::Path, first: i64, last: i64) -> Result<StepOutput, StepError> {
    let (info, bytes) = movie_range(path, first, last)?;
    Ok(StepOutput {
        outputs: Vec::new(),
        summary: json!({
            "source": path.display().to_string(),
            "first": first,
            "last": last,
            "frames": last - first + 1,
            "bytes": bytes,
            "missing": Vec::<[i64; 2]>::new(),
            "movie": info,
        }),
    })
}

/// The movie's header and file size, after checking that it exists, FFmpeg can
/// probe it and the 1-based range `first..=last` fits its frames.
pub(super) fn movie_range(
    path: &std::path::Path,
    first: i64,
    last: i64,
) -> Result<(media::movie::MovieInfo, u64), StepError> {
    let meta = fs::metadata(path).map_err(|e| match e.kind() {
        io::ErrorKind::NotFound => StepError::permanent(format!(
            "source movie {} does not exist; check the scan path in the scanlist",
            path.display()
        )),
        _ => StepError::io("read", path, &e),
    })?;
    let info = media::movie::probe(path).map_err(StepError::from_error)?;
    let count = i64::try_from(info.frame_count).unwrap_or(i64::MAX);
    if first < 1 || last < first || last > count {
        return Err(StepError::permanent(format!(
            "{}: the range {first}-{last} does not fit the movie's {count} frames (1-{count}); fix just_in/just_out in the scanlist",
            path.display()
        )));
    }
    Ok((info, meta.len()))
}
