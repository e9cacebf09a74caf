//! Decoding any supported still frame to float RGB, dispatching on the extension.

use std::path::Path;

use super::{MediaError, MediaFormat, RgbImage};

/// Decodes a still frame (EXR, DPX, JPEG) to float RGB.
pub fn decode(path: &Path) -> Result<RgbImage, MediaError> {
    let ext = path
        .extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default();
    match MediaFormat::from_extension(ext) {
        Some(MediaFormat::Exr) => super::exr::read_pixels(path),
        Some(MediaFormat::Dpx) => super::dpx::read_pixels(path),
        Some(MediaFormat::Jpeg) => super::jpeg::read_pixels(path),
        _ => Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("no still-image decoder for extension {ext:?}"),
        }),
    }
}
