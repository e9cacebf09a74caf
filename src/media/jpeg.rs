//! JPEG frames: size, completeness (SOI … EOI), pixels.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

use image::{ColorType, ImageDecoder, ImageError, ImageReader};

use super::{clipname, ImageInfo, MediaError, RgbImage};

const FORMAT: &str = "JPEG";

/// How much of the file's end [`verify`] reads to find the EOI marker past any
/// zero padding (some capture tools pad frames to a block size).
const TAIL_LEN: u64 = 64 * 1024;

fn corrupt(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::corrupt(path, FORMAT, detail)
}

/// Maps an `image` error: I/O stays I/O, limits and unsupported features are
/// [`MediaError::Unsupported`], the rest is a corrupt file.
fn from_image(path: &Path, e: ImageError) -> MediaError {
    match e {
        ImageError::IoError(source) => {
            if source.kind() == std::io::ErrorKind::UnexpectedEof {
                MediaError::Truncated {
                    path: path.to_path_buf(),
                    detail: "the JPEG data ends early".into(),
                }
            } else {
                MediaError::Io {
                    path: path.to_path_buf(),
                    source,
                }
            }
        }
        ImageError::Limits(l) => MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: l.to_string(),
        },
        ImageError::Unsupported(u) => MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: u.to_string(),
        },
        other => corrupt(path, other.to_string()),
    }
}

fn check_not_empty(path: &Path) -> Result<u64, MediaError> {
    let len = std::fs::metadata(path).map_err(MediaError::io(path))?.len();
    if len == 0 {
        return Err(MediaError::Empty {
            path: path.to_path_buf(),
        });
    }
    Ok(len)
}

/// Reads the size (and the colour layout) from the header, without decoding.
pub fn read_info(path: &Path) -> Result<ImageInfo, MediaError> {
    check_not_empty(path)?;
    let decoder = ImageReader::open(path)
        .map_err(MediaError::io(path))?
        .with_guessed_format()
        .map_err(MediaError::io(path))?
        .into_decoder()
        .map_err(|e| from_image(path, e))?;
    let (width, height) = decoder.dimensions();
    let channels = match decoder.color_type() {
        ColorType::L8 | ColorType::L16 => "Y",
        ColorType::La8 | ColorType::La16 => "YA",
        ColorType::Rgba8 | ColorType::Rgba16 | ColorType::Rgba32F => "RGBA",
        _ => "RGB",
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Ok(ImageInfo {
        width,
        height,
        pixel_aspect: 1.0,
        channels: vec![channels.to_string()],
        compression: Some("jpeg".to_string()),
        bit_depth: Some(8),
        clip_name: clipname::find(&file_name, []),
        parts: 1,
        ..ImageInfo::default()
    })
}

/// Checks the start and end markers: `FF D8` first, `FF D9` last (trailing zero
/// bytes ignored). A frame cut during a copy has no EOI.
pub fn verify(path: &Path) -> Result<(), MediaError> {
    let len = check_not_empty(path)?;
    let mut file = File::open(path).map_err(MediaError::io(path))?;
    let mut head = [0u8; 2];
    let got = file.read(&mut head).map_err(MediaError::io(path))?;
    if head[..got] != [0xFF, 0xD8][..got] {
        return Err(corrupt(
            path,
            format!(
                "starts with {:02X?}, not the JPEG start marker FF D8",
                &head[..got]
            ),
        ));
    }
    if got < 2 || len < 4 {
        return Err(MediaError::Truncated {
            path: path.to_path_buf(),
            detail: format!("file is only {len} bytes"),
        });
    }
    let start = len.saturating_sub(TAIL_LEN).max(2);
    file.seek(SeekFrom::Start(start))
        .map_err(MediaError::io(path))?;
    let mut tail = Vec::with_capacity((len - start) as usize);
    file.read_to_end(&mut tail).map_err(MediaError::io(path))?;
    let end = tail.iter().rposition(|&b| b != 0).map_or(0, |i| i + 1);
    if end < 2 || tail[end - 2..end] != [0xFF, 0xD9] {
        return Err(MediaError::Truncated {
            path: path.to_path_buf(),
            detail: "no end-of-image marker (FF D9) at the end of the file".into(),
        });
    }
    Ok(())
}

/// Decodes to RGB code values 0..1 (grey images give three equal channels).
pub fn read_pixels(path: &Path) -> Result<RgbImage, MediaError> {
    check_not_empty(path)?;
    let img = ImageReader::open(path)
        .map_err(MediaError::io(path))?
        .with_guessed_format()
        .map_err(MediaError::io(path))?
        .decode()
        .map_err(|e| from_image(path, e))?;
    let rgb = img.to_rgb32f();
    Ok(RgbImage {
        width: rgb.width(),
        height: rgb.height(),
        pixel_aspect: 1.0,
        data: rgb.into_raw(),
    })
}
