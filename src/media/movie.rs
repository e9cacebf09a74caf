//! MOV/MXF through `ffmpeg-next`: probe, frame decode, and a small writer.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::{MediaError, RgbImage};
use crate::timecode::FrameRate;

/// What a movie's first video stream says about itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MovieInfo {
    /// Codec name (`prores`, `h264`, `dnxhd` …).
    pub codec: String,
    /// Codec profile name, when the codec has one (`HQ`, `High` …).
    pub profile: Option<String>,
    /// Width.
    pub width: u32,
    /// Height.
    pub height: u32,
    /// Frame rate.
    pub fps: FrameRate,
    /// Number of frames.
    pub frame_count: u64,
    /// Duration in seconds.
    pub duration_seconds: f64,
    /// Start timecode from the `timecode` tag (stream, tmcd track or container).
    pub timecode: Option<String>,
    /// Colour primaries (`bt709` …), when tagged.
    pub color_primaries: Option<String>,
    /// Transfer characteristic, when tagged.
    pub color_transfer: Option<String>,
    /// Matrix coefficients, when tagged.
    pub color_space: Option<String>,
    /// Pixel format (`yuv422p10le` …).
    pub pix_fmt: String,
}

/// What [`write_test_movie`] writes. Fields are filled in by the movie helper.
#[derive(Debug, Clone)]
pub struct MovieSpec {}

/// Initialises FFmpeg once per process and routes its log level.
pub fn init() {}

/// Probes the first video stream.
pub fn probe(path: &Path) -> Result<MovieInfo, MediaError> {
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Decodes the frames at the given 0-based indices (any order, duplicates allowed),
/// returning them in the order asked, as RGB code values 0..1 (full range).
pub fn decode_frames(path: &Path, indices: &[u64]) -> Result<Vec<RgbImage>, MediaError> {
    let _ = indices;
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}

/// Writes a synthetic movie (fixtures, demo, benchmarks).
pub fn write_test_movie(path: &Path, spec: &MovieSpec) -> Result<(), MediaError> {
    let _ = spec;
    Err(MediaError::Unsupported {
        path: path.into(),
        detail: "not yet implemented".into(),
    })
}
