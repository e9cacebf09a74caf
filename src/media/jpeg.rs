//! JPEG frames: size, completeness (SOI … EOI), pixels.

use std::path::Path;

use super::{ImageInfo, MediaError, RgbImage};

/// Reads the size.
pub fn read_info(path: &Path) -> Result<ImageInfo, MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Checks the start and end markers.
pub fn verify(path: &Path) -> Result<(), MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Decodes to RGB code values 0..1.
pub fn read_pixels(path: &Path) -> Result<RgbImage, MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}
