//! `cleanup`: removes iom's own temporary files from the plate's output folders.
//!
//! Only regular files whose name is an iom temporary name (`.<name>.iom-tmp-…`)
//! are removed, only directly inside the frames, JPEG and plate folders (no
//! recursion, no symlinks followed), so a published file can never match.
//! Nothing to remove, or a folder that does not exist, is success: the step is
//! idempotent.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::json;

use super::{is_temp_name, StepContext, StepError, StepOutput};
use crate::task::PlateOutput;

/// Runs the cleanup.
pub fn run(output: &PlateOutput, ctx: &StepContext) -> Result<StepOutput, StepError> {
    let mut removed: Vec<String> = Vec::new();
    let mut dirs: Vec<&Path> = vec![
        &output.frames_dir,
        &output.jpg_dir,
        &output.jpg_2k_dir,
        &output.plate_dir,
    ];
    dirs.dedup();
    for dir in dirs {
        ctx.check_cancel()?;
        for p in temps_in(dir)? {
            match fs::remove_file(&p) {
                Ok(()) => removed.push(p.display().to_string()),
                // Removed by a concurrent cleanup or by the attempt that owned it.
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(StepError::io("remove temporary file", &p, &e)),
            }
        }
    }
    if !removed.is_empty() {
        tracing::info!(count = removed.len(), plate = %output.plate_name, "removed leftover temporary files");
    }
    Ok(StepOutput {
        outputs: Vec::new(),
        summary: json!({ "removed": removed.len(), "files": removed }),
    })
}

/// iom temporary files directly in `dir` (none if `dir` does not exist).
fn temps_in(dir: &Path) -> Result<Vec<PathBuf>, StepError> {
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(StepError::io("list", dir, &e)),
    };
    let mut out = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|e| StepError::io("list", dir, &e))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !is_temp_name(name) {
            continue;
        }
        // file_type() does not follow symlinks: a link named like a temp is
        // left alone (iom never makes one).
        let ft = entry
            .file_type()
            .map_err(|e| StepError::io("read", &entry.path(), &e))?;
        if ft.is_file() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}
