//! `thumbnail`: the published plate's thumbnail, `<plate_dir>/<plate>_thumb.jpg`.
//!
//! Made from the first published frame (a movie's frame 0) with the scan's colour
//! pipeline and the `thumbnail:` size and quality, exactly as the scan makes its
//! thumbnails ([`crate::thumbnail::render`]). The JPEG goes through the steps'
//! atomic writer (iom temporary name, fsync, rename) rather than
//! [`crate::thumbnail::write_jpeg`], so a crash leaves only a name `cleanup`
//! recognises. Rendering is deterministic, so a re-run rewrites the same file.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::{write_output_atomic, StepContext, StepError, StepOutput};
use crate::colour::Pipeline;
use crate::media::{self, MediaFormat, RgbImage};
use crate::task::{PlateOutput, TaskMessage};
use crate::thumbnail;

/// The thumbnail's path for a plate.
pub fn thumbnail_path(output: &PlateOutput) -> PathBuf {
    output
        .plate_dir
        .join(format!("{}_thumb.jpg", output.plate_name))
}

/// The published file the thumbnail is made from: the first frame, or the movie.
pub fn source_path(output: &PlateOutput) -> PathBuf {
    if is_movie(output) {
        output
            .frames_dir
            .join(format!("{}.{}", output.plate_name, output.ext))
    } else {
        output.frame_path(output.first_frame)
    }
}

fn is_movie(output: &PlateOutput) -> bool {
    MediaFormat::from_extension(&output.ext) == Some(MediaFormat::Movie)
}

/// Runs the thumbnail step.
pub fn run(
    msg: &TaskMessage,
    output: &PlateOutput,
    colorspace: &str,
    ctx: &StepContext,
) -> Result<StepOutput, StepError> {
    let settings = &ctx.settings;
    let cs = Some(colorspace.trim()).filter(|c| !c.is_empty());
    let pipeline = Pipeline::from_settings(&settings.colour, cs, Some(&settings.project.name))
        .map_err(StepError::from_error)?;
    let source = source_path(output);
    let image = decode(output, &source)?;
    ctx.check_cancel()?;
    thumbnail::check_image(&image, &source).map_err(StepError::from_error)?;
    let t = &settings.thumbnail;
    let img = thumbnail::render(&image, &pipeline, t.width, t.height);
    let dest = thumbnail_path(output);
    let mut bytes = Vec::new();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut bytes, t.quality.clamp(1, 100))
        .encode(
            img.as_raw(),
            img.width(),
            img.height(),
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| {
            StepError::permanent(format!(
                "cannot encode thumbnail {} as JPEG: {e}",
                dest.display()
            ))
        })?;
    let out = write_output_atomic(&dest, &bytes, &msg.task_id, msg.attempt)?;
    Ok(StepOutput {
        summary: json!({
            "thumbnail": dest.display().to_string(),
            "source": source.display().to_string(),
            "width": img.width(),
            "height": img.height(),
            "colorspace": pipeline.colourspace(),
        }),
        outputs: vec![out],
    })
}

fn decode(output: &PlateOutput, source: &Path) -> Result<RgbImage, StepError> {
    if is_movie(output) {
        let mut frames =
            media::movie::decode_frames(source, &[0]).map_err(StepError::from_error)?;
        frames.pop().ok_or_else(|| {
            StepError::permanent(format!(
                "{}: the movie gave no frame 0 to make a thumbnail from",
                source.display()
            ))
        })
    } else {
        media::pixels::decode(source).map_err(StepError::from_error)
    }
}
