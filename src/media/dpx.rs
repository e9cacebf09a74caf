//! SMPTE 268M DPX headers parsed by hand (both byte orders), a structural
//! truncation check, pixel reading for thumbnails, and a writer.
//!
//! Layout (offsets in bytes; test-data.md §4.2, OpenImageIO's `DPXHeader.h`):
//!
//! | offset | field |
//! |---|---|
//! | 0 | magic `SDPX` (big-endian file) or `XPDS` (little-endian) |
//! | 4 | offset to the image data |
//! | 16 | total file size |
//! | 772 / 776 | pixels per line / lines per element: **the image size** |
//! | 780 + 20 … | image element 0: descriptor (800), bit size (803), packing (804), encoding (806), data offset (808), end-of-line padding (812) |
//! | 1424 / 1428 | orientation header original size (often 0; the original read it) |
//! | 1628 / 1632 | pixel aspect ratio, horizontal : vertical |
//! | 1724 | film header frame rate (f32) |
//! | 1920 | TV header time code (BCD `0xHHMMSSFF`) |
//! | 1940 | TV header temporal frame rate (f32) |
//!
//! Undefined fields hold all ones (`0xFFFFFFFF`, a NaN for floats) and are read as
//! absent. The film and TV headers are read only when they lie before the image
//! data: ffmpeg writes a 1664-byte generic header only, and what follows it is
//! pixels, not a timecode.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;

use super::exr::{group_digits, Fill};
use super::{clipname, ImageInfo, MediaError, RgbImage};
use crate::timecode::{pack_bcd, unpack_bcd, FrameRate, Timecode};

const FORMAT: &str = "DPX";

/// Magic number as a u32 in the file's own byte order (`SDPX`).
const MAGIC: u32 = 0x5344_5058;

/// Size of the generic header (file + image + orientation sections).
pub const GENERIC_HEADER_LEN: usize = 1664;

/// Size of the full header with the film and TV industry sections.
pub const FULL_HEADER_LEN: usize = 2048;

/// Bytes up to and including image element 0 and the reserved tail of the image
/// section: the least a header must have to give a size.
const IMAGE_HEADER_END: usize = 1408;

/// The largest image (pixels) [`read_pixels`] decodes: 8192 × 8192.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// The largest width or height accepted: no scanner or camera writes more, and a
/// corrupt size field must not drive allocations.
pub const MAX_DIMENSION: u32 = 65_536;

/// The value of an undefined 32-bit field.
const UNDEFINED: u32 = 0xFFFF_FFFF;

/// Text fields iom reads and writes, by the names used in
/// [`ImageInfo::attributes`] and [`DpxSpec::attributes`]: (name, offset, length).
pub const TEXT_FIELDS: [(&str, usize, usize); 10] = [
    ("filename", 36, 100),
    ("timestamp", 136, 24),
    ("creator", 160, 100),
    ("project", 260, 200),
    ("copyright", 460, 200),
    ("description", 820, 32),
    ("source_file", 1432, 100),
    ("input_device", 1556, 32),
    ("input_serial", 1588, 32),
    ("frame_id", 1732, 32),
];

/// The parsed header fields iom uses. Undefined values are `None`.
#[derive(Debug, Clone, PartialEq)]
pub struct DpxHeader {
    /// `SDPX` (true) or `XPDS` (false).
    pub big_endian: bool,
    /// Where element 0's pixels start.
    pub data_offset: u64,
    /// Total file size as the header states it.
    pub file_size: Option<u64>,
    /// Pixels per line (772).
    pub width: u32,
    /// Lines per element (776).
    pub height: u32,
    /// Element 0 descriptor: 50 RGB, 51 RGBA, 52 ABGR, 6 luma, 100+ YCbCr …
    pub descriptor: u8,
    /// Element 0 bits per sample: 1, 8, 10, 12, 16, 32, 64.
    pub bit_depth: u8,
    /// 0 packed, 1 filled method A (padding in the low bits), 2 method B.
    pub packing: u16,
    /// 0 uncompressed, 1 run-length.
    pub encoding: u16,
    /// Extra bytes at the end of each line.
    pub eol_padding: u32,
    /// Orientation header original size (1424/1428), often 0.
    pub original_size: Option<(u32, u32)>,
    /// Pixel aspect (1628/1632) as horizontal / vertical.
    pub pixel_aspect: Option<f32>,
    /// Film header frame rate (1724).
    pub film_fps: Option<f32>,
    /// TV header time code (1920), raw BCD.
    pub timecode_bcd: Option<u32>,
    /// TV header temporal frame rate (1940).
    pub tv_fps: Option<f32>,
    /// Non-empty text fields of [`TEXT_FIELDS`] inside the header.
    pub text: BTreeMap<String, String>,
}

impl DpxHeader {
    /// Samples per pixel of element 0's descriptor, when iom knows it.
    pub fn components(&self) -> Option<usize> {
        Some(match self.descriptor {
            0..=4 | 6..=8 => 1,
            50 | 102 => 3,
            51 | 52 | 103 => 4,
            100 => 2,
            101 => 3,
            _ => return None,
        })
    }

    /// Bytes of one line of element 0 (without end-of-line padding), and whether
    /// the line may be padded to a 32-bit boundary (8/12/16-bit filled data).
    fn line_bytes(&self) -> Option<(u64, bool)> {
        let samples = u64::from(self.width) * self.components()? as u64;
        let words = |bits: u64| samples.checked_mul(bits).map(|b| b.div_ceil(32) * 4);
        Some(match (self.bit_depth, self.packing) {
            (1, _) => (words(1)?, false),
            (8, _) => (samples, true),
            (10, 0) => (words(10)?, false),
            (10, _) => (samples.div_ceil(3) * 4, false),
            (12, 0) => (words(12)?, false),
            (12, _) | (16, _) => (samples * 2, true),
            (32, _) => (samples * 4, false),
            (64, _) => (samples * 8, false),
            _ => return None,
        })
    }

    /// The smallest number of image bytes element 0 needs (lines not padded to
    /// 32 bits), when the layout is known and uncompressed.
    pub fn min_image_bytes(&self) -> Option<u64> {
        if self.encoding != 0 {
            return None;
        }
        let (line, _) = self.line_bytes()?;
        (line + u64::from(self.eol_padding)).checked_mul(u64::from(self.height))
    }

    /// The frame rate: the TV header's when sane, else the film header's.
    pub fn fps(&self) -> Option<FrameRate> {
        let sane = |f: Option<f32>| f.and_then(|f| FrameRate::from_f64(f64::from(f)).ok());
        sane(self.tv_fps).or_else(|| sane(self.film_fps))
    }

    /// The TV timecode as `HH:MM:SS:FF` (`;` when the drop-frame bit is set).
    ///
    /// The BCD is read with full nibbles first. Below 40 fps a frame tens digit of
    /// 4 or more can only be the SMPTE drop-frame flag (bit 6, which OpenImageIO
    /// writes), so the value is then read again with the flag bits masked.
    pub fn timecode(&self) -> Option<String> {
        let v = self.timecode_bcd?;
        let high_rate = self.fps().is_some_and(|r| r.nominal() > 40);
        let (h, m, s, f, drop) = match unpack_bcd(v, false) {
            Some(t) if t.3 < 40 || high_rate => t,
            // Only the frame byte's flag bits (6: drop frame, 7: colour frame)
            // are cleared; every other digit must still be valid BCD.
            _ => {
                let (h, m, s, f, _) = unpack_bcd(v & !0xC0, false)?;
                (h, m, s, f, v & 0x40 != 0)
            }
        };
        let sep = if drop { ';' } else { ':' };
        Some(format!("{h:02}:{m:02}:{s:02}{sep}{f:02}"))
    }
}

fn corrupt(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::corrupt(path, FORMAT, detail)
}

/// Bounds-checked field access in the file's byte order.
struct Fields<'a> {
    buf: &'a [u8],
    big: bool,
    /// Fields at or past this offset are pixel data, not header.
    end: usize,
}

impl Fields<'_> {
    fn bytes<const N: usize>(&self, at: usize) -> Option<[u8; N]> {
        if at + N > self.end {
            return None;
        }
        self.buf.get(at..at + N).and_then(|b| b.try_into().ok())
    }

    fn u8(&self, at: usize) -> Option<u8> {
        self.bytes::<1>(at).map(|b| b[0])
    }

    fn u16(&self, at: usize) -> Option<u16> {
        self.bytes::<2>(at).map(|b| {
            if self.big {
                u16::from_be_bytes(b)
            } else {
                u16::from_le_bytes(b)
            }
        })
    }

    fn u32(&self, at: usize) -> Option<u32> {
        self.bytes::<4>(at).map(|b| {
            if self.big {
                u32::from_be_bytes(b)
            } else {
                u32::from_le_bytes(b)
            }
        })
    }

    /// A u32 that is not the undefined marker.
    fn defined_u32(&self, at: usize) -> Option<u32> {
        self.u32(at).filter(|&v| v != UNDEFINED)
    }

    /// An f32 that is finite (undefined is all ones, a NaN).
    fn f32(&self, at: usize) -> Option<f32> {
        self.u32(at).map(f32::from_bits).filter(|f| f.is_finite())
    }

    fn text(&self, at: usize, len: usize) -> Option<String> {
        if at + len > self.end {
            return None;
        }
        let raw = self.buf.get(at..at + len)?;
        let raw = raw.split(|&b| b == 0).next().unwrap_or_default();
        // Undefined text is sometimes all 0xFF rather than NULs.
        if raw.is_empty() || raw.iter().all(|&b| b == 0xFF) {
            return None;
        }
        let s = String::from_utf8_lossy(raw).trim().to_string();
        (!s.is_empty()).then_some(s)
    }
}

/// Reads and checks the header; returns it with the file length.
pub fn read_header(path: &Path) -> Result<(DpxHeader, u64), MediaError> {
    let mut file = File::open(path).map_err(MediaError::io(path))?;
    let file_len = file.metadata().map_err(MediaError::io(path))?.len();
    if file_len == 0 {
        return Err(MediaError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut buf = Vec::with_capacity(FULL_HEADER_LEN);
    (&mut file)
        .take(FULL_HEADER_LEN as u64)
        .read_to_end(&mut buf)
        .map_err(MediaError::io(path))?;
    let header = parse_header(path, &buf, file_len)?;
    Ok((header, file_len))
}

/// Parses a header from the first bytes of a file (up to [`FULL_HEADER_LEN`] are
/// read; fewer when the file is shorter). `path` only names the file in errors and
/// `file_len` only in messages; pure, no IO. [`read_header`] reads and calls this.
pub fn parse_header(path: &Path, buf: &[u8], file_len: u64) -> Result<DpxHeader, MediaError> {
    let buf = &buf[..buf.len().min(FULL_HEADER_LEN)];
    let magic_bytes: [u8; 4] = match buf.get(..4).and_then(|b| b.try_into().ok()) {
        Some(b) => b,
        None => {
            let prefix_of = |m: &[u8]| m.starts_with(buf);
            if prefix_of(b"SDPX") || prefix_of(b"XPDS") {
                return Err(MediaError::truncated(
                    path,
                    format!("file is only {} bytes; the header is missing", buf.len()),
                ));
            }
            return Err(corrupt(
                path,
                format!(
                    "file is {} bytes and does not start with SDPX or XPDS",
                    buf.len()
                ),
            ));
        }
    };
    let big = match &magic_bytes {
        b"SDPX" => true,
        b"XPDS" => false,
        other => {
            return Err(corrupt(
                path,
                format!(
                    "magic is {:?} ({}), expected \"SDPX\" or \"XPDS\"",
                    String::from_utf8_lossy(other),
                    other
                        .iter()
                        .map(|b| format!("{b:02X}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ),
            ))
        }
    };
    debug_assert_eq!(u32::from_be_bytes(*b"SDPX"), MAGIC);

    let all = Fields {
        buf,
        big,
        end: buf.len(),
    };
    let header_offset = all.defined_u32(4).map(u64::from);
    if (buf.len() as u64) < IMAGE_HEADER_END as u64 {
        return Err(MediaError::truncated(
            path,
            format!(
                "file is {} bytes, shorter than the {IMAGE_HEADER_END}-byte DPX image header",
                group_digits(file_len)
            ),
        ));
    }
    let element_offset = all.defined_u32(808).filter(|&o| o != 0).map(u64::from);
    let data_offset = element_offset.or(header_offset).ok_or_else(|| {
        corrupt(
            path,
            "neither the file header nor image element 0 says where the pixels start",
        )
    })?;
    if data_offset < IMAGE_HEADER_END as u64 {
        return Err(corrupt(
            path,
            format!("image data offset {data_offset} lies inside the {IMAGE_HEADER_END}-byte image header"),
        ));
    }
    // Header fields past the start of the pixels are pixels (ffmpeg's 1664-byte
    // header has no film or TV section).
    let header_end = usize::try_from(data_offset)
        .unwrap_or(usize::MAX)
        .min(buf.len());
    let f = Fields {
        buf,
        big,
        end: header_end,
    };

    let width = f.u32(772).unwrap_or(0);
    let height = f.u32(776).unwrap_or(0);
    if width == 0 || height == 0 || width == UNDEFINED || height == UNDEFINED {
        return Err(corrupt(
            path,
            format!("image size is {width}×{height} (bytes 772/776)"),
        ));
    }
    if width > MAX_DIMENSION || height > MAX_DIMENSION {
        return Err(corrupt(
            path,
            format!(
                "image size {width}×{height} (bytes 772/776) is over the {MAX_DIMENSION}-pixel limit per side"
            ),
        ));
    }
    let original_size = match (f.defined_u32(1424), f.defined_u32(1428)) {
        (Some(w), Some(h)) => Some((w, h)),
        _ => None,
    };
    let pixel_aspect = match (f.defined_u32(1628), f.defined_u32(1632)) {
        (Some(h), Some(v)) if h > 0 && v > 0 => Some(h as f32 / v as f32),
        _ => None,
    };
    let mut text = BTreeMap::new();
    for (name, at, len) in TEXT_FIELDS {
        if let Some(v) = f.text(at, len) {
            text.insert(name.to_string(), v);
        }
    }
    let header = DpxHeader {
        big_endian: big,
        data_offset,
        file_size: f.defined_u32(16).filter(|&s| s != 0).map(u64::from),
        width,
        height,
        descriptor: f.u8(800).unwrap_or(0),
        bit_depth: f.u8(803).unwrap_or(0),
        packing: f.u16(804).filter(|&p| p != 0xFFFF).unwrap_or(0),
        encoding: f.u16(806).filter(|&e| e != 0xFFFF).unwrap_or(0),
        eol_padding: f.defined_u32(812).unwrap_or(0),
        original_size,
        pixel_aspect,
        film_fps: f.f32(1724).filter(|&r| r > 0.0),
        timecode_bcd: f.defined_u32(1920),
        tv_fps: f.f32(1940).filter(|&r| r > 0.0),
        text,
    };
    Ok(header)
}

/// Reads the header: size from bytes 772/776, channels, bit depth, timecode
/// (TV header), frame rate (TV header if sane, else film header), clip name.
pub fn read_info(path: &Path) -> Result<ImageInfo, MediaError> {
    let (h, _) = read_header(path)?;
    let layout = match h.descriptor {
        1 => "R",
        2 => "G",
        3 => "B",
        4 => "A",
        6 => "Y",
        50 => "RGB",
        51 => "RGBA",
        52 => "ABGR",
        100 => "CbYCrY",
        101 => "CbYaCrYa",
        102 => "CbYCr",
        103 => "CbYCra",
        _ => "unknown",
    };
    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clip_name = clipname::find(&file_name, h.text.values().map(String::as_str));
    Ok(ImageInfo {
        width: h.width,
        height: h.height,
        data_window: None,
        display_window: None,
        pixel_aspect: h.pixel_aspect.unwrap_or(1.0),
        channels: vec![layout.to_string()],
        compression: (h.encoding == 1).then(|| "RLE".to_string()),
        bit_depth: Some(u32::from(h.bit_depth)),
        timecode: h.timecode(),
        fps: h.fps(),
        clip_name,
        parts: 1,
        attributes: h.text.clone(),
    })
}

/// Checks that the file is complete: not empty, a DPX magic, a whole header, and
/// at least as many bytes as the header's file-size field and as the pixel data
/// (offset + lines × line size) need.
pub fn verify(path: &Path) -> Result<(), MediaError> {
    let (h, file_len) = read_header(path)?;
    check_length(path, &h, file_len)
}

/// The length checks of [`verify`] on a parsed header: the file must hold the
/// header's file size and the pixel data it describes.
pub fn check_length(path: &Path, h: &DpxHeader, file_len: u64) -> Result<(), MediaError> {
    if let Some(size) = h.file_size {
        if file_len < size {
            return Err(MediaError::truncated(
                path,
                format!(
                    "header says the file is {} bytes, it is {} bytes",
                    group_digits(size),
                    group_digits(file_len)
                ),
            ));
        }
    }
    if h.data_offset > file_len {
        return Err(MediaError::truncated(
            path,
            format!(
                "image data starts at byte {}, file is {} bytes",
                group_digits(h.data_offset),
                group_digits(file_len)
            ),
        ));
    }
    if let Some(bytes) = h.min_image_bytes() {
        let end = h.data_offset.saturating_add(bytes);
        if end > file_len {
            return Err(MediaError::truncated(
                path,
                format!(
                    "{}×{} {}-bit pixels need bytes {} to {}, file is {} bytes",
                    h.width,
                    h.height,
                    h.bit_depth,
                    group_digits(h.data_offset),
                    group_digits(end),
                    group_digits(file_len)
                ),
            ));
        }
    }
    Ok(())
}

/// Reads element 0 as RGB code values normalised to 0..1: RGB, RGBA, ABGR and
/// luma; 8-, 10- (filled, method A or B), 12- (filled) and 16-bit; both byte
/// orders.
pub fn read_pixels(path: &Path) -> Result<RgbImage, MediaError> {
    let (h, file_len) = read_header(path)?;
    check_length(path, &h, file_len)?;
    if h.encoding != 0 {
        return Err(MediaError::unsupported(
            path,
            "run-length encoded DPX pixels are not decoded",
        ));
    }
    // Component order of each output channel inside a pixel.
    let (comps, order): (usize, [usize; 3]) = match h.descriptor {
        50 => (3, [0, 1, 2]),
        51 => (4, [0, 1, 2]),
        52 => (4, [3, 2, 1]),
        6 => (1, [0, 0, 0]),
        d => {
            return Err(MediaError::unsupported(
                path,
                format!("DPX descriptor {d} is not decoded (RGB, RGBA, ABGR and luma are)"),
            ))
        }
    };
    let packed = matches!((h.bit_depth, h.packing), (10 | 12, 0));
    if !matches!(h.bit_depth, 8 | 10 | 12 | 16) || packed {
        return Err(MediaError::unsupported(
            path,
            format!(
                "{}-bit DPX with packing {} is not decoded",
                h.bit_depth, h.packing
            ),
        ));
    }
    let pixels = u64::from(h.width) * u64::from(h.height);
    if pixels > MAX_PIXELS {
        return Err(MediaError::unsupported(
            path,
            format!(
                "image is {}×{}, larger than the {MAX_PIXELS}-pixel limit",
                h.width, h.height
            ),
        ));
    }
    let (line, may_pad) = h
        .line_bytes()
        .ok_or_else(|| MediaError::unsupported(path, "unknown pixel layout"))?;
    let eol = u64::from(h.eol_padding);
    let rows = u64::from(h.height);
    // Lines of filled 8/12/16-bit data end on a 32-bit boundary, as ffmpeg and
    // OpenImageIO write them; when the file is too short for that, the writer
    // did not pad.
    let padded = line.div_ceil(4) * 4;
    let stride = if may_pad && h.data_offset + (padded + eol) * rows <= file_len {
        padded + eol
    } else {
        line + eol
    };
    let mut file = File::open(path).map_err(MediaError::io(path))?;
    file.seek(SeekFrom::Start(h.data_offset))
        .map_err(MediaError::io(path))?;
    let total = stride * rows;
    let mut raw = Vec::with_capacity(total as usize);
    file.take(total)
        .read_to_end(&mut raw)
        .map_err(MediaError::io(path))?;
    if (raw.len() as u64) < total {
        return Err(MediaError::truncated(path, "pixel data ends early"));
    }

    let width = h.width as usize;
    let max = ((1u32 << h.bit_depth) - 1) as f32;
    let big = h.big_endian;
    let mut image = RgbImage::black(h.width, h.height);
    image.pixel_aspect = h.pixel_aspect.unwrap_or(1.0);
    let mut codes = vec![0u32; width * comps];
    for (y, row) in raw.chunks_exact(stride as usize).enumerate() {
        decode_line(row, h.bit_depth, h.packing, big, &mut codes);
        let out = &mut image.data[y * width * 3..(y + 1) * width * 3];
        for (px, src) in out.chunks_exact_mut(3).zip(codes.chunks_exact(comps)) {
            for (c, &k) in order.iter().enumerate() {
                px[c] = src[k] as f32 / max;
            }
        }
    }
    Ok(image)
}

/// Unpacks one line of datums into `out` (as many as `out` holds).
fn decode_line(row: &[u8], bits: u8, packing: u16, big: bool, out: &mut [u32]) {
    let u16_at = |b: &[u8]| {
        if big {
            u16::from_be_bytes([b[0], b[1]])
        } else {
            u16::from_le_bytes([b[0], b[1]])
        }
    };
    match bits {
        8 => {
            for (o, &b) in out.iter_mut().zip(row) {
                *o = u32::from(b);
            }
        }
        10 => {
            // Three datums per 32-bit word, first datum in the high bits; method A
            // leaves the two padding bits at the bottom, method B at the top.
            let shift = if packing == 2 { 20 } else { 22 };
            let mut datums = row.chunks_exact(4).flat_map(|b| {
                let w = if big {
                    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
                } else {
                    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
                };
                [
                    (w >> shift) & 0x3FF,
                    (w >> (shift - 10)) & 0x3FF,
                    (w >> (shift - 20)) & 0x3FF,
                ]
            });
            for o in out.iter_mut() {
                *o = datums.next().unwrap_or(0);
            }
        }
        12 => {
            // One datum per 16 bits: method A fills to the MSB, method B to the LSB.
            let shift = if packing == 2 { 0 } else { 4 };
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = u32::from(u16_at(b) >> shift) & 0xFFF;
            }
        }
        _ => {
            for (o, b) in out.iter_mut().zip(row.chunks_exact(2)) {
                *o = u32::from(u16_at(b));
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// What [`write_frame`] writes: an RGB DPX. Start from [`DpxSpec::new`].
#[derive(Debug, Clone, PartialEq)]
pub struct DpxSpec {
    /// Pixels per line.
    pub width: u32,
    /// Lines.
    pub height: u32,
    /// `SDPX` big-endian (true) or `XPDS` little-endian (false).
    pub big_endian: bool,
    /// 8, 10 (filled, method A), 12 (filled, method A) or 16.
    pub bit_depth: u8,
    /// TV header time code (drop frame sets the SMPTE flag bit 6).
    pub timecode: Option<Timecode>,
    /// Film header frame rate; `None` writes "undefined".
    pub film_fps: Option<f32>,
    /// TV header temporal frame rate; `None` writes "undefined" (all ones, a NaN),
    /// and `Some(f32::NAN)` writes the canonical NaN.
    pub tv_fps: Option<f32>,
    /// Orientation header original size; `None` writes 0 × 0 like ffmpeg.
    pub original_size: Option<(u32, u32)>,
    /// Write only the 1664-byte generic header (no film or TV section), as
    /// ffmpeg does; `timecode`, `film_fps`, `tv_fps` and `frame_id` are then
    /// not written.
    pub generic_only: bool,
    /// Text fields by the names of [`TEXT_FIELDS`] (`creator`, `project`,
    /// `source_file`, `input_device` …); values are cut to the field size.
    pub attributes: BTreeMap<String, String>,
    /// Pixel content (clamped to 0..1, then quantised).
    pub fill: Fill,
}

impl DpxSpec {
    /// A `width × height` big-endian 10-bit RGB frame with a full header, no
    /// timecode, undefined rates, original size 0, pattern seed 0.
    pub fn new(width: u32, height: u32) -> Self {
        DpxSpec {
            width,
            height,
            big_endian: true,
            bit_depth: 10,
            timecode: None,
            film_fps: None,
            tv_fps: None,
            original_size: None,
            generic_only: false,
            attributes: BTreeMap::new(),
            fill: Fill::Pattern { seed: 0 },
        }
    }

    /// The code value (0..=max) written for a sample.
    pub fn quantise(&self, v: f32) -> u32 {
        let max = ((1u32 << self.bit_depth.min(16)) - 1) as f32;
        (v.clamp(0.0, 1.0) * max).round() as u32
    }

    /// The normalised value [`read_pixels`] gives back at (`x`, `y`).
    pub fn expected_pixel(&self, x: u32, y: u32) -> [f32; 3] {
        let max = ((1u32 << self.bit_depth.min(16)) - 1) as f32;
        let c = self
            .fill
            .sample(i64::from(x), i64::from(y), self.width, self.height);
        c.map(|v| self.quantise(v) as f32 / max)
    }
}

/// Serialises fields in the file's byte order.
struct HeaderWriter {
    buf: Vec<u8>,
    big: bool,
}

impl HeaderWriter {
    fn put(&mut self, at: usize, bytes: &[u8]) {
        self.buf[at..at + bytes.len()].copy_from_slice(bytes);
    }

    fn u16(&mut self, at: usize, v: u16) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.put(at, &b);
    }

    fn u32(&mut self, at: usize, v: u32) {
        let b = if self.big {
            v.to_be_bytes()
        } else {
            v.to_le_bytes()
        };
        self.put(at, &b);
    }

    fn f32(&mut self, at: usize, v: Option<f32>) {
        self.u32(at, v.map_or(UNDEFINED, f32::to_bits));
    }

    fn text(&mut self, at: usize, len: usize, s: &str) {
        let mut n = s.len().min(len - 1);
        while !s.is_char_boundary(n) {
            n -= 1;
        }
        self.buf[at..at + len].fill(0);
        self.put(at, &s.as_bytes()[..n]);
    }
}

/// Writes one frame (to a hidden temporary name, then renamed into place).
pub fn write_frame(path: &Path, spec: &DpxSpec) -> Result<(), MediaError> {
    let bytes = encode_frame(path, spec)?;
    super::write_atomically(path, |out| {
        out.write_all(&bytes).map_err(MediaError::io(path))
    })
}

/// The bytes of one frame, in memory (what [`write_frame`] writes); `path` names
/// the frame in its header and in errors.
pub fn encode_frame(path: &Path, spec: &DpxSpec) -> Result<Vec<u8>, MediaError> {
    let invalid = |d: String| MediaError::unsupported(path, format!("cannot write this DPX: {d}"));
    if !matches!(spec.bit_depth, 8 | 10 | 12 | 16) {
        return Err(invalid(format!(
            "bit depth {} (use 8, 10, 12 or 16)",
            spec.bit_depth
        )));
    }
    if spec.width == 0
        || spec.height == 0
        || u64::from(spec.width) * u64::from(spec.height) > MAX_PIXELS
    {
        return Err(invalid(format!("size {}×{}", spec.width, spec.height)));
    }
    let header_len = if spec.generic_only {
        GENERIC_HEADER_LEN
    } else {
        FULL_HEADER_LEN
    };
    let line = match spec.bit_depth {
        8 => (spec.width as usize * 3).div_ceil(4) * 4,
        10 => spec.width as usize * 4,
        _ => (spec.width as usize * 6).div_ceil(4) * 4,
    };
    let image_len = line * spec.height as usize;
    let file_len =
        u32::try_from(header_len + image_len).map_err(|_| invalid("image too large".into()))?;

    let mut h = HeaderWriter {
        buf: vec![0u8; header_len],
        big: spec.big_endian,
    };
    h.u32(0, MAGIC);
    h.u32(4, header_len as u32);
    h.text(8, 8, "V2.0");
    h.u32(16, file_len);
    h.u32(20, 1); // ditto key: new frame
    h.u32(24, GENERIC_HEADER_LEN as u32);
    h.u32(28, (header_len - GENERIC_HEADER_LEN) as u32);
    h.u32(32, 0); // user data size
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    h.text(36, 100, &name);
    h.text(160, 100, "iom");
    h.u32(660, UNDEFINED); // encryption key: none
    h.u16(768, 0); // orientation: left to right, top to bottom
    h.u16(770, 1); // one image element
    h.u32(772, spec.width);
    h.u32(776, spec.height);
    // Image element 0.
    let max_code = (1u32 << spec.bit_depth) - 1;
    h.u32(780, 0); // unsigned
    h.u32(784, 0);
    h.f32(788, Some(0.0));
    h.u32(792, max_code);
    h.f32(796, Some(max_code as f32));
    h.put(800, &[50, 2, 2, spec.bit_depth]); // RGB, linear, linear, bits
    h.u16(
        804,
        if matches!(spec.bit_depth, 10 | 12) {
            1
        } else {
            0
        },
    );
    h.u16(806, 0); // no encoding
    h.u32(808, header_len as u32);
    h.u32(812, 0);
    h.u32(816, 0);
    // Elements 1..7 are unused: all ones.
    h.buf[852..1356].fill(0xFF);
    // Orientation header.
    let (ow, oh) = spec.original_size.unwrap_or((0, 0));
    h.u32(1408, 0);
    h.u32(1412, 0);
    h.f32(1416, None);
    h.f32(1420, None);
    h.u32(1424, ow);
    h.u32(1428, oh);
    h.u32(1628, 1);
    h.u32(1632, 1);
    for (key, value) in &spec.attributes {
        let Some(&(_, at, len)) = TEXT_FIELDS.iter().find(|(n, _, _)| n == key) else {
            return Err(invalid(format!(
                "unknown text field {key:?} (known: {})",
                TEXT_FIELDS.map(|f| f.0).join(", ")
            )));
        };
        if at + len <= header_len {
            h.text(at, len, value);
        }
    }
    if !spec.generic_only {
        // Film header: everything undefined but the rate.
        h.buf[1712..1732].fill(0xFF);
        h.f32(1724, spec.film_fps);
        // TV header.
        let tc = spec.timecode.map_or(UNDEFINED, |t| {
            let (hh, mm, ss, ff) = t.parts();
            pack_bcd(hh, mm, ss, ff, t.is_drop_frame())
        });
        h.u32(1920, tc);
        h.u32(1924, UNDEFINED);
        h.buf[1928..1932].fill(0xFF);
        for at in (1932..1972).step_by(4) {
            h.f32(at, None);
        }
        h.f32(1940, spec.tv_fps);
    }

    let mut bytes = h.buf;
    bytes.resize(header_len + image_len, 0);
    let pixels = &mut bytes[header_len..];
    let q = |v: f32| spec.quantise(v);
    let be = spec.big_endian;
    let put16 = |dst: &mut [u8], v: u16| {
        dst.copy_from_slice(&if be { v.to_be_bytes() } else { v.to_le_bytes() });
    };
    let sampler = spec.fill.sampler(spec.width, spec.height);
    for (y, row) in pixels.chunks_exact_mut(line).enumerate() {
        for x in 0..spec.width as usize {
            let [r, g, b] = sampler.sample(x as i64, y as i64).map(q);
            match spec.bit_depth {
                8 => row[x * 3..x * 3 + 3].copy_from_slice(&[r as u8, g as u8, b as u8]),
                10 => {
                    let w = (r << 22) | (g << 12) | (b << 2);
                    row[x * 4..x * 4 + 4].copy_from_slice(&if be {
                        w.to_be_bytes()
                    } else {
                        w.to_le_bytes()
                    });
                }
                12 => {
                    for (i, v) in [r, g, b].into_iter().enumerate() {
                        put16(&mut row[x * 6 + i * 2..x * 6 + i * 2 + 2], (v << 4) as u16);
                    }
                }
                _ => {
                    for (i, v) in [r, g, b].into_iter().enumerate() {
                        put16(&mut row[x * 6 + i * 2..x * 6 + i * 2 + 2], v as u16);
                    }
                }
            }
        }
    }

    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(bcd: Option<u32>) -> DpxHeader {
        DpxHeader {
            big_endian: true,
            data_offset: 2048,
            file_size: None,
            width: 4,
            height: 2,
            descriptor: 50,
            bit_depth: 10,
            packing: 1,
            encoding: 0,
            eol_padding: 0,
            original_size: None,
            pixel_aspect: None,
            film_fps: None,
            timecode_bcd: bcd,
            tv_fps: None,
            text: BTreeMap::new(),
        }
    }

    #[test]
    fn timecode_from_bcd() {
        assert_eq!(
            header(Some(0x0102_0304)).timecode().as_deref(),
            Some("01:02:03:04")
        );
        assert_eq!(
            header(Some(pack_bcd(1, 0, 0, 2, true)))
                .timecode()
                .as_deref(),
            Some("01:00:00;02")
        );
        assert_eq!(header(Some(0x0199_0000)).timecode(), None, "minutes 99");
        assert_eq!(header(Some(0x010A_0000)).timecode(), None, "nibble A");
        assert_eq!(header(None).timecode(), None);
    }

    #[test]
    fn fps_prefers_sane_tv_rate() {
        let mut h = header(None);
        h.film_fps = Some(24.0);
        assert_eq!(h.fps(), Some(FrameRate::FPS_24));
        h.tv_fps = Some(25.0);
        assert_eq!(h.fps(), Some(FrameRate::FPS_25));
        h.tv_fps = Some(5000.0);
        assert_eq!(h.fps(), Some(FrameRate::FPS_24));
        h.film_fps = None;
        assert_eq!(h.fps(), None);
    }

    #[test]
    fn image_bytes_per_layout() {
        let mut h = header(None);
        assert_eq!(h.min_image_bytes(), Some(4 * 4 * 2)); // one word per RGB pixel
        h.bit_depth = 16;
        assert_eq!(h.min_image_bytes(), Some(4 * 6 * 2));
        h.bit_depth = 8;
        h.width = 3;
        assert_eq!(h.min_image_bytes(), Some(9 * 2));
        h.descriptor = 200;
        assert_eq!(h.min_image_bytes(), None);
    }

    #[test]
    fn ten_bit_words_unpack_in_both_methods() {
        let w: u32 = (1023 << 22) | (512 << 12) | (1 << 2);
        let mut out = [0u32; 3];
        decode_line(&w.to_be_bytes(), 10, 1, true, &mut out);
        assert_eq!(out, [1023, 512, 1]);
        decode_line(&w.to_le_bytes(), 10, 1, false, &mut out);
        assert_eq!(out, [1023, 512, 1]);
        let b: u32 = (7 << 20) | (8 << 10) | 9;
        decode_line(&b.to_be_bytes(), 10, 2, true, &mut out);
        assert_eq!(out, [7, 8, 9]);
    }
}
