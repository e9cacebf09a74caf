//! SMPTE 268M DPX headers parsed by hand (both byte orders), a structural
//! truncation check, pixel reading for thumbnails, and a writer.

use std::path::Path;

use super::{ImageInfo, MediaError, RgbImage};

/// What [`write_frame`] writes. Fields are filled in by the media helper.
#[derive(Debug, Clone)]
pub struct DpxSpec {}

/// Reads the header(s): display window as the size, data window, channels,
/// compression, pixel aspect, `timeCode`, `framesPerSecond`, clip name.
pub fn read_info(path: &Path) -> Result<ImageInfo, MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Checks that the file is complete: header parses, offset table present, the
/// last chunk ends inside the file.
pub fn verify(path: &Path) -> Result<(), MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Reads the RGB (or Y) channels of the first part into a display-window-sized
/// image (pixels outside the data window are black).
pub fn read_pixels(path: &Path) -> Result<RgbImage, MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Writes one frame.
pub fn write_frame(path: &Path, spec: &DpxSpec) -> Result<(), MediaError> {
    let _ = spec;
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}
