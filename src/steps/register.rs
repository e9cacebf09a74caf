//! `register`: records the publish in the tracker (Sequence, Shot with cut
//! information for `org`, Version, PublishedFile), idempotently: the tracker finds
//! each entity by its natural key before creating it, so a re-run updates what
//! the first run created.
//!
//! Unlike the original, which registered on the artist's workstation before any
//! file existed, this runs after the copy and refuses to register a plate whose
//! first published file is missing.

use std::io;

use serde_json::json;

use super::{thumbnail, StepContext, StepError, StepOutput};
use crate::task::{PlateOutput, PublishInfo, TaskMessage};
use crate::tracker::Registration;

/// Runs the registration.
pub fn run(
    msg: &TaskMessage,
    output: &PlateOutput,
    info: &PublishInfo,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let first = thumbnail::source_path(output);
    match std::fs::metadata(&first) {
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            return Err(StepError::permanent(format!(
                "refusing to register {}: its first published file {} does not exist; the copy did not complete",
                output.plate_name,
                first.display()
            )))
        }
        Err(e) => return Err(StepError::io("read", &first, &e)),
    }
    let req = Registration::new(info, output, &msg.task_id);
    ctx.check_cancel()?;
    let reg = ctx.tracker.register(&req).map_err(StepError::from_error)?;
    Ok(StepOutput {
        outputs: Vec::new(),
        summary: json!({
            "sequence": reg.sequence,
            "shot": reg.shot,
            "version": reg.version,
            "published_file": reg.published_file,
            "uploaded": reg.uploaded,
        }),
    })
}
