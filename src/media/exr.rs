//! OpenEXR headers (through the `exr` crate, headers only), a structural
//! truncation check, pixel reading for thumbnails, and a scan-line writer.
//!
//! - [`read_info`]: the image size is the **display window** (`max − min + 1`); the
//!   original used `dataWindow.max + 1` (bug B1), which is wrong for overscan,
//!   crops and moving data windows.
//! - [`verify`]: parses the header, then checks the offset table and the last chunk
//!   against the file length without decoding any pixel.
//! - [`read_pixels`]: decompresses the first part's chunks in parallel (rayon) and
//!   converts R, G, B (or Y) straight into a display-window-sized float image.
//! - [`write_frame`] / [`write_multipart`]: scan-line files for fixtures, the demo
//!   and the benchmarks, written to a temporary name and renamed into place.
//!
//! The `exr` crate can panic on some damaged inputs; every call into it on file
//! data runs under [`std::panic::catch_unwind`] and a panic becomes
//! [`MediaError::Corrupt`].

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::Path;
use std::str::FromStr;
use std::sync::{Arc, LazyLock, Mutex};

use exr::block::chunk::Chunk;
use exr::block::reader::ChunksReader;
use exr::block::writer::ChunksWriter;
use exr::block::{BlockIndex, UncompressedBlock};
use exr::compression::Compression;
use exr::math::Vec2;
use exr::meta::attribute::{
    AttributeValue, ChannelDescription, ChannelList, IntegerBounds, LineOrder, SampleType, Text,
    TimeCode,
};
use exr::meta::header::{Header, ImageAttributes, LayerAttributes};
use exr::meta::{BlockDescription, Headers, MetaData};
use half::slice::HalfBitsSliceExt;
use half::slice::HalfFloatSliceExt;
use rayon::prelude::*;

use super::{clipname, ImageInfo, MediaError, RgbImage, Window};
use crate::timecode::{FrameRate, Timecode};

const FORMAT: &str = "OpenEXR";

/// The four bytes every OpenEXR file starts with.
const MAGIC: [u8; 4] = [0x76, 0x2f, 0x31, 0x01];

/// The largest image (display or data window, in pixels) [`read_pixels`] decodes:
/// 8192 × 8192. A header field must never make iom allocate gigabytes.
pub const MAX_PIXELS: u64 = 8192 * 8192;

/// Longest attribute value kept in [`ImageInfo::attributes`] (bytes); longer ones
/// are cut, so a hostile header cannot bloat every scan report.
const MAX_ATTRIBUTE_LEN: usize = 4096;

// ---------------------------------------------------------------------------
// Header reading
// ---------------------------------------------------------------------------

/// Counts the bytes the header parser pulls, so the offset table can be found
/// right after the header, and notes whether the file ended under it.
struct Counting<R> {
    inner: R,
    count: u64,
    hit_eof: bool,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n == 0 && !buf.is_empty() {
            self.hit_eof = true;
        }
        self.count += n as u64;
        Ok(n)
    }
}

/// A parsed header plus where it ends.
struct ParsedHeader {
    meta: MetaData,
    /// Byte offset of the first offset table (= header length).
    header_len: u64,
    /// File length in bytes.
    file_len: u64,
    /// The file, positioned at `header_len`.
    reader: BufReader<File>,
}

fn corrupt(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::corrupt(path, FORMAT, detail)
}

/// Maps an `exr` crate error on file data: an I/O failure stays I/O, an
/// unsupported feature is [`MediaError::Unsupported`], anything else is corrupt.
fn from_exr(path: &Path, what: &str, e: exr::error::Error) -> MediaError {
    match e {
        exr::error::Error::Io(source) => MediaError::Io {
            path: path.to_path_buf(),
            source,
        },
        exr::error::Error::NotSupported(m) => MediaError::unsupported(path, format!("{what}: {m}")),
        other => corrupt(path, format!("{what}: {other}")),
    }
}

/// `3401233` → `3 401 233`: byte offsets in messages are easier to read grouped.
pub(crate) fn group_digits(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(' ');
        }
        out.push(c);
    }
    out
}

fn open_header(path: &Path) -> Result<ParsedHeader, MediaError> {
    let file = File::open(path).map_err(MediaError::io(path))?;
    let file_len = file.metadata().map_err(MediaError::io(path))?.len();
    if file_len == 0 {
        return Err(MediaError::Empty {
            path: path.to_path_buf(),
        });
    }
    let mut reader = BufReader::new(file);

    // Check the magic number ourselves: it tells "not an EXR" from "cut short".
    let mut magic = [0u8; 4];
    let got = read_up_to(&mut reader, &mut magic).map_err(MediaError::io(path))?;
    if magic[..got] != MAGIC[..got] {
        return Err(corrupt(
            path,
            format!(
                "magic number is {}, expected 76 2F 31 01: this is not an OpenEXR file",
                hex(&magic[..got])
            ),
        ));
    }
    if got < 4 {
        return Err(MediaError::truncated(
            path,
            format!("file is only {got} bytes; the header is missing"),
        ));
    }
    reader
        .seek(SeekFrom::Start(0))
        .map_err(MediaError::io(path))?;

    let mut counting = Counting {
        inner: reader,
        count: 0,
        hit_eof: false,
    };
    let parsed = catch_unwind(AssertUnwindSafe(|| {
        MetaData::read_from_buffered(&mut counting, false)
    }));
    let meta = match parsed {
        Ok(Ok(meta)) => meta,
        Ok(Err(e)) => {
            if counting.hit_eof {
                return Err(MediaError::truncated(
                    path,
                    format!(
                        "file ends inside the header (file is {} bytes)",
                        group_digits(file_len)
                    ),
                ));
            }
            return Err(from_exr(path, "header", e));
        }
        Err(_) => return Err(corrupt(path, "header is malformed (the parser gave up)")),
    };
    if meta.headers.is_empty() {
        return Err(corrupt(path, "the file declares no part"));
    }
    Ok(ParsedHeader {
        meta,
        header_len: counting.count,
        file_len,
        reader: counting.inner,
    })
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(r: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

// ---------------------------------------------------------------------------
// read_info
// ---------------------------------------------------------------------------

/// Converts an `exr` rectangle to an inclusive [`Window`], saturating on absurd
/// sizes instead of overflowing.
fn window(b: &IntegerBounds) -> Window {
    let clamp = |v: i64| v.clamp(i64::from(i32::MIN), i64::from(i32::MAX)) as i32;
    let x = i64::from(b.position.0);
    let y = i64::from(b.position.1);
    let w = i64::try_from(b.size.0)
        .unwrap_or(i64::MAX / 4)
        .min(i64::MAX / 4);
    let h = i64::try_from(b.size.1)
        .unwrap_or(i64::MAX / 4)
        .min(i64::MAX / 4);
    Window {
        x_min: clamp(x),
        y_min: clamp(y),
        x_max: clamp(x + w - 1),
        y_max: clamp(y + h - 1),
    }
}

/// The OpenEXR name of a compression (`ZIP`, `PIZ` …), as `exrheader` spells it
/// in upper case.
pub fn compression_name(c: Compression) -> &'static str {
    match c {
        Compression::Uncompressed => "NONE",
        Compression::RLE => "RLE",
        Compression::ZIP1 => "ZIPS",
        Compression::ZIP16 => "ZIP",
        Compression::PIZ => "PIZ",
        Compression::PXR24 => "PXR24",
        Compression::B44 => "B44",
        Compression::B44A => "B44A",
        Compression::DWAA(_) => "DWAA",
        Compression::DWAB(_) => "DWAB",
        Compression::HTJ2K32 => "HTJ2K32",
        Compression::HTJ2K256 => "HTJ2K256",
    }
}

fn text(t: &Text) -> String {
    let bytes = t.bytes();
    let bytes = &bytes[..bytes.len().min(MAX_ATTRIBUTE_LEN)];
    String::from_utf8_lossy(bytes).into_owned()
}

/// Renders the attribute values worth showing or searching (texts and scalar
/// numbers); matrices, previews, bounds and the like are left out.
fn attribute_string(v: &AttributeValue) -> Option<String> {
    match v {
        AttributeValue::Text(t) => Some(text(t)),
        AttributeValue::TextVector(list) => {
            let mut s = list.iter().map(text).collect::<Vec<_>>().join(", ");
            let mut end = s.len().min(MAX_ATTRIBUTE_LEN);
            while !s.is_char_boundary(end) {
                end -= 1;
            }
            s.truncate(end);
            Some(s)
        }
        AttributeValue::I32(i) => Some(i.to_string()),
        AttributeValue::F32(f) => Some(f.to_string()),
        AttributeValue::F64(f) => Some(f.to_string()),
        AttributeValue::Rational((n, d)) => Some(format!("{n}/{d}")),
        _ => None,
    }
}

/// The standard text and camera attributes of one header, by their file names.
fn standard_attributes(h: &Header) -> Vec<(&'static str, String)> {
    let a = &h.own_attributes;
    let mut out = Vec::new();
    let texts = [
        ("owner", &a.owner),
        ("comments", &a.comments),
        ("capDate", &a.capture_date),
        ("software", &a.software_name),
        ("view", &a.view_name),
        ("renderingTransform", &a.rendering_transform_name),
        ("lookModTransform", &a.look_modification_transform_name),
        ("wrapmodes", &a.wrap_mode_name),
    ];
    for (name, v) in texts {
        if let Some(t) = v {
            out.push((name, text(t)));
        }
    }
    let numbers = [
        ("focus", a.focus),
        ("expTime", a.exposure),
        ("aperture", a.aperture),
        ("isoSpeed", a.iso_speed),
        ("utcOffset", a.utc_offset),
    ];
    for (name, v) in numbers {
        if let Some(f) = v {
            out.push((name, f.to_string()));
        }
    }
    if let Some(views) = &a.multi_view_names {
        out.push((
            "multiView",
            views.iter().map(text).collect::<Vec<_>>().join(", "),
        ));
    }
    out
}

/// The `HH:MM:SS:FF` label of an EXR `timeCode` (`;` before the frames when the
/// drop-frame flag is set), or `None` when a field is out of range.
pub fn timecode_label(tc: &TimeCode) -> Option<String> {
    let (h, m, s, f) = (tc.hours, tc.minutes, tc.seconds, tc.frame);
    if h >= 24 || m >= 60 || s >= 60 || f >= 60 {
        return None;
    }
    let sep = if tc.drop_frame { ';' } else { ':' };
    Some(format!("{h:02}:{m:02}:{s:02}{sep}{f:02}"))
}

/// A `framesPerSecond` rational as a [`FrameRate`], rejecting zero, negative and
/// absurd rates.
pub fn frame_rate((num, den): (i32, u32)) -> Option<FrameRate> {
    if num <= 0 || den == 0 {
        return None;
    }
    let rate = FrameRate::new(num as u32, den).reduced();
    (rate.as_f64() <= 1000.0).then_some(rate)
}

fn bits(t: SampleType) -> u32 {
    match t {
        SampleType::F16 => 16,
        SampleType::F32 | SampleType::U32 => 32,
    }
}

/// Reads the header(s): display window as the size, data window, channels,
/// compression, pixel aspect, `timeCode`, `framesPerSecond`, clip name.
pub fn read_info(path: &Path) -> Result<ImageInfo, MediaError> {
    let parsed = open_header(path)?;
    let headers = &parsed.meta.headers;
    let first = &headers[0];
    let display = window(&first.shared_attributes.display_window);
    let data = window(&first.data_window());

    let multi = headers.len() > 1;
    let mut channels = Vec::new();
    for h in headers.iter() {
        let prefix = match (&h.own_attributes.layer_name, multi) {
            (Some(name), true) => format!("{}.", text(name)),
            _ => String::new(),
        };
        for c in &h.channels.list {
            channels.push(format!("{prefix}{}", text(&c.name)));
        }
    }

    // Bit depth of the colour channels when there are any, else the widest.
    let colour: Vec<u32> = first
        .channels
        .list
        .iter()
        .filter(|c| matches!(c.name.bytes(), b"R" | b"G" | b"B" | b"Y"))
        .map(|c| bits(c.sample_type))
        .collect();
    let bit_depth = colour.iter().copied().max().or_else(|| {
        first
            .channels
            .list
            .iter()
            .map(|c| bits(c.sample_type))
            .max()
    });

    let timecode = headers
        .iter()
        .find_map(|h| h.shared_attributes.time_code)
        .or_else(|| {
            // A timecode stored under another name still says when the frame is.
            headers.iter().find_map(|h| {
                h.shared_attributes.other.values().find_map(|v| match v {
                    AttributeValue::TimeCode(tc) => Some(*tc),
                    _ => None,
                })
            })
        })
        .and_then(|tc| timecode_label(&tc));

    let fps = headers
        .iter()
        .find_map(|h| h.own_attributes.frames_per_second.and_then(frame_rate))
        .or_else(|| {
            // Some writers store framesPerSecond as a float: it then lands among the
            // custom attributes.
            headers.iter().find_map(|h| {
                h.own_attributes
                    .other
                    .iter()
                    .chain(h.shared_attributes.other.iter())
                    .find(|(k, _)| k.bytes() == b"framesPerSecond")
                    .and_then(|(_, v)| match v {
                        AttributeValue::F32(f) => FrameRate::from_f64(f64::from(*f)).ok(),
                        AttributeValue::F64(f) => FrameRate::from_f64(*f).ok(),
                        _ => None,
                    })
            })
        });

    // crates-notes trap 9: custom attributes of a single-part file come back
    // among the layer's own attributes even when written as image attributes,
    // so both maps are read, for every part (the first part wins a name clash).
    let mut attributes = BTreeMap::new();
    for h in headers.iter() {
        for (name, value) in standard_attributes(h) {
            attributes.entry(name.to_string()).or_insert(value);
        }
        for (name, value) in h
            .own_attributes
            .other
            .iter()
            .chain(h.shared_attributes.other.iter())
        {
            if let Some(v) = attribute_string(value) {
                attributes.entry(text(name)).or_insert(v);
            }
        }
    }

    let file_name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let clip_name = clipname::find(&file_name, attributes.values().map(String::as_str));

    let aspect = first.shared_attributes.pixel_aspect;
    Ok(ImageInfo {
        width: display.width(),
        height: display.height(),
        data_window: Some(data),
        display_window: Some(display),
        pixel_aspect: if aspect.is_finite() && aspect > 0.0 {
            aspect
        } else {
            1.0
        },
        channels,
        compression: Some(compression_name(first.compression).to_string()),
        bit_depth,
        timecode,
        fps,
        clip_name,
        parts: headers.len(),
        attributes,
    })
}

// ---------------------------------------------------------------------------
// verify
// ---------------------------------------------------------------------------

/// Checks that the file is complete: header parses, offset table present, every
/// chunk ends inside the file and before the next one.
///
/// Reads the header, the offset tables and the few bytes of each chunk's header
/// (its part number and declared size); never pixels. An offset of 0 means the writer never came
/// back to fill the table in (an interrupted copy or render) and counts as
/// truncated.
pub fn verify(path: &Path) -> Result<(), MediaError> {
    let ParsedHeader {
        meta,
        header_len,
        file_len,
        mut reader,
    } = open_header(path)?;
    let multi = meta.requirements.is_multilayer();

    let total: u64 = meta.headers.iter().map(|h| h.chunk_count as u64).sum();
    let table_end = total
        .checked_mul(8)
        .and_then(|b| b.checked_add(header_len))
        .ok_or_else(|| corrupt(path, "the offset table size overflows"))?;
    if table_end > file_len {
        return Err(MediaError::truncated(
            path,
            format!(
                "offset table is cut: {total} entries end at byte {}, file is {} bytes",
                group_digits(table_end),
                group_digits(file_len)
            ),
        ));
    }

    let label = |part: usize, index: u64| {
        if multi {
            format!("chunk {index} of part {part}")
        } else {
            format!("chunk {index}")
        }
    };

    // (offset, part, index in its table) of every chunk.
    let mut chunks: Vec<(u64, usize, u64)> = Vec::new();
    for (part, h) in meta.headers.iter().enumerate() {
        for index in 0..h.chunk_count as u64 {
            let mut b = [0u8; 8];
            reader.read_exact(&mut b).map_err(MediaError::io(path))?;
            let offset = u64::from_le_bytes(b);
            if offset == 0 {
                return Err(MediaError::truncated(
                    path,
                    format!(
                        "offset table entry for {} is 0: the file was never finished",
                        label(part, index)
                    ),
                ));
            }
            if offset >= file_len {
                return Err(MediaError::truncated(
                    path,
                    format!(
                        "offset table points past end of file ({} at byte {}, file is {} bytes)",
                        label(part, index),
                        group_digits(offset),
                        group_digits(file_len)
                    ),
                ));
            }
            if offset < table_end {
                return Err(corrupt(
                    path,
                    format!(
                        "{} points at byte {}, inside the header or offset table",
                        label(part, index),
                        group_digits(offset)
                    ),
                ));
            }
            chunks.push((offset, part, index));
        }
    }

    // Every chunk's own header: its part number and declared size must keep it
    // inside the file and clear of the next chunk. Read with positioned reads
    // of a few bytes each, in file order.
    chunks.sort_unstable();
    let file = reader.get_ref();
    for (i, &(offset, table_part, index)) in chunks.iter().enumerate() {
        let what = label(table_part, index);
        let next = chunks.get(i + 1).copied();
        if let Some((next_offset, np, ni)) = next {
            if next_offset == offset {
                return Err(corrupt(
                    path,
                    format!(
                        "{what} and {} both point at byte {}",
                        label(np, ni),
                        group_digits(offset)
                    ),
                ));
            }
        }
        let desc = if next.is_none() {
            format!("the last chunk ({what} at byte {})", group_digits(offset))
        } else {
            format!("{what} at byte {}", group_digits(offset))
        };
        let (len, end) = chunk_end(path, &meta, multi, file, offset, &desc, file_len)?;
        if end > file_len {
            let detail = format!(
                "{desc} needs {} bytes up to byte {}, file is {} bytes",
                group_digits(len),
                group_digits(end),
                group_digits(file_len)
            );
            return Err(if next.is_none() {
                MediaError::truncated(path, detail)
            } else {
                corrupt(path, detail)
            });
        }
        if let Some((next_offset, np, ni)) = next {
            if end > next_offset {
                return Err(corrupt(
                    path,
                    format!(
                        "{what} at byte {} declares a size that runs to byte {}, into {} at byte {}",
                        group_digits(offset),
                        group_digits(end),
                        label(np, ni),
                        group_digits(next_offset)
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// The length of the chunk at `offset` and where it ends, from its own header
/// (part number for multi-part files, block coordinates, declared sizes);
/// `what` names the chunk in errors.
fn chunk_end(
    path: &Path,
    meta: &MetaData,
    multi: bool,
    file: &File,
    offset: u64,
    what: &str,
    file_len: u64,
) -> Result<(u64, u64), MediaError> {
    use std::os::unix::fs::FileExt as _;
    let parts = meta.headers.len();
    let mut head = [0u8; 48];
    let mut got = 0usize;
    while got < head.len() {
        match file.read_at(&mut head[got..], offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(MediaError::io(path)(e)),
        }
    }
    let head = &head[..got];
    let cut_header = || {
        MediaError::truncated(
            path,
            format!(
                "{what} is cut inside its header, file is {} bytes",
                group_digits(file_len)
            ),
        )
    };
    let i32_at = |at: usize| {
        head.get(at..at + 4)
            .map(|b| i32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    };
    let u64_at = |at: usize| {
        head.get(at..at + 8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
    };

    let mut pos = 0usize;
    let part = if multi {
        let p = i32_at(0).ok_or_else(cut_header)?;
        pos = 4;
        match usize::try_from(p).ok().filter(|&p| p < parts) {
            Some(p) => p,
            None => {
                return Err(corrupt(
                    path,
                    format!("{what} names part {p}, the file has {parts}"),
                ))
            }
        }
    } else {
        0
    };
    let h = &meta.headers[part];
    pos += match h.blocks {
        BlockDescription::ScanLines => 4,
        BlockDescription::Tiles(_) => 16,
    };
    let (chunk_header_len, data_len) = if h.deep {
        let table = u64_at(pos).ok_or_else(cut_header)?;
        let packed = u64_at(pos + 8).ok_or_else(cut_header)?;
        u64_at(pos + 16).ok_or_else(cut_header)?;
        (pos as u64 + 24, table.saturating_add(packed))
    } else {
        let size = i32_at(pos).ok_or_else(cut_header)?;
        let size = u64::try_from(size)
            .map_err(|_| corrupt(path, format!("{what} declares a negative size ({size})")))?;
        (pos as u64 + 4, size)
    };
    let len = chunk_header_len.saturating_add(data_len);
    Ok((len, offset.saturating_add(len)))
}

// ---------------------------------------------------------------------------
// read_pixels
// ---------------------------------------------------------------------------

/// Where each output component comes from: a channel index in the part's
/// channel list, or nothing (black).
#[derive(Debug, Clone, Copy)]
struct Sources {
    rgb: [Option<usize>; 3],
}

/// Picks R, G, B (or Y for all three); when none of those exists, the first
/// layer whose channels end in `.R`/`.G`/`.B` (e.g. `beauty.R`).
fn select_channels(list: &ChannelList) -> Option<Sources> {
    let find = |name: &[u8]| list.list.iter().position(|c| c.name.bytes() == name);
    let rgb = [find(b"R"), find(b"G"), find(b"B")];
    if rgb.iter().any(Option::is_some) {
        return Some(Sources { rgb });
    }
    if let Some(y) = find(b"Y") {
        return Some(Sources { rgb: [Some(y); 3] });
    }
    let prefix = list
        .list
        .iter()
        .find_map(|c| c.name.bytes().strip_suffix(b".R").map(<[u8]>::to_vec))?;
    let with = |s: &[u8]| {
        let mut n = prefix.clone();
        n.extend_from_slice(s);
        find(&n)
    };
    Some(Sources {
        rgb: [with(b".R"), with(b".G"), with(b".B")],
    })
}

/// One decoded block, cut to the display window: `rows × cols` RGB samples whose
/// top-left lands at display (`x`, `y`).
struct Piece {
    x: usize,
    y: usize,
    cols: usize,
    rows: usize,
    data: Vec<f32>,
}

/// Geometry shared by every block of the part being decoded.
#[derive(Clone, Copy)]
struct Placement {
    data_x: i64,
    data_y: i64,
    disp_x: i64,
    disp_y: i64,
    disp_w: i64,
    disp_h: i64,
}

/// The part of a decompressed block inside the display window: `cols` columns
/// from column `c0` and `rows` rows from row `r0` of the block, landing at
/// display (`x`, `y`).
struct Cut {
    /// The block's width in pixels.
    width: usize,
    line_bytes: usize,
    c0: usize,
    r0: usize,
    cols: usize,
    rows: usize,
    x: usize,
    y: usize,
}

impl Cut {
    /// The whole lines of the block (all channels) that fall inside the cut,
    /// top to bottom.
    fn lines<'a>(&self, data: &'a [u8]) -> impl Iterator<Item = &'a [u8]> {
        // (A block without channel data has no lines to give.)
        data.chunks_exact(self.line_bytes.max(1))
            .skip(self.r0)
            .take(self.rows)
    }

    /// Byte range, inside a line, of the cut's columns of one channel: a line
    /// holds one run of `width` samples per channel, and `offset` is the
    /// channel's byte offset within a pixel; `size` bytes a sample.
    fn run(&self, offset: usize, size: usize) -> std::ops::Range<usize> {
        let start = offset * self.width + self.c0 * size;
        start..start + self.cols * size
    }
}

/// Checks a block's size against its channels and cuts it to the display window
/// (`None`: the block lies outside it).
fn cut_block(
    block: &UncompressedBlock,
    channels: &ChannelList,
    at: Placement,
) -> Result<Option<Cut>, String> {
    let w = block.index.pixel_size.0;
    let h = block.index.pixel_size.1;
    let line_bytes = channels.bytes_per_pixel * w;
    if block.data.len() != line_bytes * h {
        return Err(format!(
            "a block holds {} bytes, its size needs {}",
            block.data.len(),
            line_bytes * h
        ));
    }
    let abs_x = at.data_x + block.index.pixel_position.0 as i64;
    let abs_y = at.data_y + block.index.pixel_position.1 as i64;
    let c0 = (at.disp_x - abs_x).clamp(0, w as i64) as usize;
    let c1 = (at.disp_x + at.disp_w - abs_x).clamp(0, w as i64) as usize;
    let r0 = (at.disp_y - abs_y).clamp(0, h as i64) as usize;
    let r1 = (at.disp_y + at.disp_h - abs_y).clamp(0, h as i64) as usize;
    if c0 >= c1 || r0 >= r1 {
        return Ok(None);
    }
    Ok(Some(Cut {
        width: w,
        line_bytes,
        c0,
        r0,
        cols: c1 - c0,
        rows: r1 - r0,
        x: (abs_x + c0 as i64 - at.disp_x) as usize,
        y: (abs_y + r0 as i64 - at.disp_y) as usize,
    }))
}

/// Converts one decompressed block into a [`Piece`] (or nothing when the block
/// lies outside the display window).
fn convert_block(
    block: &UncompressedBlock,
    channels: &ChannelList,
    sources: Sources,
    at: Placement,
) -> Result<Option<Piece>, String> {
    let Some(cut) = cut_block(block, channels, at)? else {
        return Ok(None);
    };
    let (cols, rows) = (cut.cols, cut.rows);

    // Byte offset (per pixel) of each channel inside a line, and its sample type.
    let layout: Vec<(usize, SampleType)> = channels
        .channels_with_byte_offset()
        .map(|(o, c)| (o, c.sample_type))
        .collect();

    let mut data = vec![0f32; rows * cols * 3];
    let mut line = vec![0f32; cols];
    let mut bits16 = vec![0u16; cols];
    for (line_data, out_row) in cut.lines(&block.data).zip(data.chunks_exact_mut(cols * 3)) {
        for (comp, source) in sources.rgb.iter().enumerate() {
            let Some(ch) = *source else { continue };
            let (offset, ty) = layout[ch];
            let size = match ty {
                SampleType::F16 => 2,
                _ => 4,
            };
            let run = &line_data[cut.run(offset, size)];
            match ty {
                SampleType::F16 => {
                    for (dst, b) in bits16.iter_mut().zip(run.chunks_exact(2)) {
                        *dst = u16::from_ne_bytes([b[0], b[1]]);
                    }
                    let halves: &[half::f16] = bits16.reinterpret_cast();
                    halves.convert_to_f32_slice(&mut line);
                }
                SampleType::F32 => {
                    for (dst, b) in line.iter_mut().zip(run.chunks_exact(4)) {
                        *dst = f32::from_ne_bytes([b[0], b[1], b[2], b[3]]);
                    }
                }
                SampleType::U32 => {
                    for (dst, b) in line.iter_mut().zip(run.chunks_exact(4)) {
                        *dst = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as f32;
                    }
                }
            }
            for (px, v) in out_row.chunks_exact_mut(3).zip(&line) {
                px[comp] = *v;
            }
        }
    }
    Ok(Some(Piece {
        x: cut.x,
        y: cut.y,
        cols,
        rows,
        data,
    }))
}

/// Reads the RGB (or Y) channels of the first part into a display-window-sized
/// image (pixels outside the data window are black, data outside the display
/// window is cropped). Half samples are converted to f32.
///
/// Runs [`verify`] first so a cut file gets a precise [`MediaError::Truncated`].
pub fn read_pixels(path: &Path) -> Result<RgbImage, MediaError> {
    verify(path)?;
    match catch_unwind(AssertUnwindSafe(|| decode_first_part(path))) {
        Ok(result) => result,
        Err(_) => Err(corrupt(
            path,
            "pixel data is malformed (the decoder gave up)",
        )),
    }
}

/// The first part of a file, its chunks read and ready to decompress.
struct FirstPart {
    header: Header,
    meta: MetaData,
    chunks: Vec<Chunk>,
    sources: Sources,
    at: Placement,
    width: usize,
    height: usize,
    pixel_aspect: f32,
}

fn open_first_part(path: &Path) -> Result<FirstPart, MediaError> {
    let file = File::open(path).map_err(MediaError::io(path))?;
    let reader =
        exr::block::read(BufReader::new(file), false).map_err(|e| from_exr(path, "header", e))?;
    let header = reader
        .headers()
        .first()
        .cloned()
        .ok_or_else(|| corrupt(path, "no part"))?;
    if header.deep {
        return Err(MediaError::unsupported(
            path,
            "deep data has no flat pixels to show",
        ));
    }
    if header
        .channels
        .list
        .iter()
        .any(|c| c.sampling != Vec2(1, 1))
    {
        return Err(MediaError::unsupported(
            path,
            "sub-sampled channels (e.g. luma/chroma EXR) are not decoded",
        ));
    }
    let display = header.shared_attributes.display_window;
    let data = header.data_window();
    for (what, b) in [("display", display), ("data", data)] {
        let pixels = b.size.0 as u64 * b.size.1 as u64;
        if pixels > MAX_PIXELS {
            return Err(MediaError::unsupported(
                path,
                format!(
                    "{what} window is {}×{}, larger than the {MAX_PIXELS}-pixel limit",
                    b.size.0, b.size.1
                ),
            ));
        }
    }
    let sources = select_channels(&header.channels).ok_or_else(|| {
        let names: Vec<String> = header.channels.list.iter().map(|c| text(&c.name)).collect();
        MediaError::unsupported(
            path,
            format!(
                "no R, G, B or Y channel to show (channels: {})",
                names.join(", ")
            ),
        )
    })?;

    let chunks = reader
        .filter_chunks(false, |_, tile, block| {
            block.layer == 0 && tile.is_largest_resolution_level()
        })
        .map_err(|e| from_exr(path, "offset table", e))?;
    let meta = chunks.meta_data().clone();
    let compressed: Vec<Chunk> = chunks
        .collect::<Result<_, _>>()
        .map_err(|e| from_exr(path, "pixel data", e))?;

    let at = Placement {
        data_x: i64::from(data.position.0),
        data_y: i64::from(data.position.1),
        disp_x: i64::from(display.position.0),
        disp_y: i64::from(display.position.1),
        disp_w: display.size.0 as i64,
        disp_h: display.size.1 as i64,
    };
    let aspect = header.shared_attributes.pixel_aspect;
    Ok(FirstPart {
        header,
        meta,
        chunks: compressed,
        sources,
        at,
        width: display.size.0,
        height: display.size.1,
        pixel_aspect: if aspect.is_finite() && aspect > 0.0 {
            aspect
        } else {
            1.0
        },
    })
}

fn decode_first_part(path: &Path) -> Result<RgbImage, MediaError> {
    let FirstPart {
        header,
        meta,
        chunks,
        sources,
        at,
        width,
        height,
        pixel_aspect,
    } = open_first_part(path)?;
    let pieces: Vec<Result<Option<Piece>, String>> = chunks
        .into_par_iter()
        .map(|chunk| {
            // Each block is decoded under its own catch_unwind so one damaged
            // block cannot take a pool thread down.
            catch_unwind(AssertUnwindSafe(|| {
                let block = UncompressedBlock::decompress_chunk(chunk, &meta, false)
                    .map_err(|e| format!("pixel data: {e}"))?;
                convert_block(&block, &header.channels, sources, at)
            }))
            .unwrap_or_else(|_| Err("pixel data is malformed (the decompressor gave up)".into()))
        })
        .collect();

    let mut image = RgbImage::black(width as u32, height as u32);
    image.pixel_aspect = pixel_aspect;
    for piece in pieces {
        let Some(p) = piece.map_err(|e| corrupt(path, e))? else {
            continue;
        };
        for r in 0..p.rows {
            let dst = ((p.y + r) * width + p.x) * 3;
            let src = r * p.cols * 3;
            image.data[dst..dst + p.cols * 3].copy_from_slice(&p.data[src..src + p.cols * 3]);
        }
    }
    Ok(image)
}

/// One decoded block of half samples, planar (R, G, B), cut to the display
/// window like [`Piece`].
struct HalfPiece {
    x: usize,
    y: usize,
    cols: usize,
    rows: usize,
    planes: [Vec<u16>; 3],
}

/// [`convert_block`] for half channels: copies the bits, no conversion.
fn half_block(
    block: &UncompressedBlock,
    channels: &ChannelList,
    sources: Sources,
    at: Placement,
) -> Result<Option<HalfPiece>, String> {
    let Some(cut) = cut_block(block, channels, at)? else {
        return Ok(None);
    };
    let (cols, rows) = (cut.cols, cut.rows);
    let offsets: Vec<usize> = channels
        .channels_with_byte_offset()
        .map(|(o, _)| o)
        .collect();
    let mut planes = [
        vec![0u16; rows * cols],
        vec![0u16; rows * cols],
        vec![0u16; rows * cols],
    ];
    for (plane, source) in planes.iter_mut().zip(sources.rgb) {
        let Some(ch) = source else { continue };
        let run = cut.run(offsets[ch], 2);
        for (line, out) in cut.lines(&block.data).zip(plane.chunks_exact_mut(cols)) {
            for (d, b) in out.iter_mut().zip(line[run.clone()].chunks_exact(2)) {
                *d = u16::from_ne_bytes([b[0], b[1]]);
            }
        }
    }
    Ok(Some(HalfPiece {
        x: cut.x,
        y: cut.y,
        cols,
        rows,
        planes,
    }))
}

/// Reads the R, G, B (or Y) channels of the first part as the bits of half
/// floats into display-window-sized planes, when every one of them is stored as
/// half (`Ok(None)` otherwise: use [`read_pixels`]). Missing channels and pixels
/// outside the data window are +0.0.
///
/// `convert` runs on every decoded block (its R, G, B planes, in parallel)
/// before it is placed, so a display table turns the bits into code values
/// without another pass over the frame. Like [`read_pixels`] it runs [`verify`]
/// first, decompresses blocks in parallel and turns decoder panics into
/// [`MediaError::Corrupt`]; blocks are placed as they finish, so no second
/// frame-sized buffer is held.
pub fn read_half_planes(
    path: &Path,
    convert: &(dyn Fn([&mut [u16]; 3]) + Sync),
) -> Result<Option<super::Rgb16>, MediaError> {
    read_half_planes_into(path, convert, None)
}

/// [`read_half_planes`] into `reuse`'s planes when given (a picture the caller
/// is done with: no allocation and no page faults for a frame of the same size).
pub fn read_half_planes_into(
    path: &Path,
    convert: &(dyn Fn([&mut [u16]; 3]) + Sync),
    reuse: Option<super::Rgb16>,
) -> Result<Option<super::Rgb16>, MediaError> {
    verify(path)?;
    let part = match catch_unwind(AssertUnwindSafe(|| open_first_part(path))) {
        Ok(r) => r?,
        Err(_) => {
            return Err(corrupt(
                path,
                "pixel data is malformed (the decoder gave up)",
            ))
        }
    };
    let all_half = part
        .sources
        .rgb
        .iter()
        .flatten()
        .all(|&c| part.header.channels.list[c].sample_type == SampleType::F16);
    if !all_half {
        return Ok(None);
    }
    let (width, height) = (part.width, part.height);
    let mut black = [[0u16], [0u16], [0u16]];
    {
        let [r, g, b] = &mut black;
        convert([r, g, b]);
    }
    let planes = match reuse {
        Some(mut r) => {
            for (p, [v]) in r.planes.iter_mut().zip(black) {
                p.clear();
                p.resize(width * height, v);
            }
            r.planes
        }
        None => black.map(|[v]| vec![v; width * height]),
    };
    let image = Mutex::new(super::Rgb16 {
        width: width as u32,
        height: height as u32,
        planes,
    });
    let first_error: Mutex<Option<String>> = Mutex::new(None);
    let FirstPart {
        header,
        meta,
        chunks,
        sources,
        at,
        ..
    } = part;
    chunks.into_par_iter().for_each(|chunk| {
        if first_error.lock().map(|e| e.is_some()).unwrap_or(true) {
            return;
        }
        let piece = catch_unwind(AssertUnwindSafe(|| {
            let block = UncompressedBlock::decompress_chunk(chunk, &meta, false)
                .map_err(|e| format!("pixel data: {e}"))?;
            let mut piece = half_block(&block, &header.channels, sources, at)?;
            if let Some(p) = &mut piece {
                let [r, g, b] = &mut p.planes;
                convert([r, g, b]);
            }
            Ok(piece)
        }))
        .unwrap_or_else(|_| Err("pixel data is malformed (the decompressor gave up)".into()));
        match piece {
            Ok(Some(p)) => {
                let Ok(mut img) = image.lock() else { return };
                for (dst, src) in img.planes.iter_mut().zip(&p.planes) {
                    for r in 0..p.rows {
                        let d = (p.y + r) * width + p.x;
                        dst[d..d + p.cols].copy_from_slice(&src[r * p.cols..(r + 1) * p.cols]);
                    }
                }
            }
            Ok(None) => {}
            Err(e) => {
                if let Ok(mut slot) = first_error.lock() {
                    slot.get_or_insert(e);
                }
            }
        }
    });
    if let Some(e) = first_error.into_inner().ok().flatten() {
        return Err(corrupt(path, e));
    }
    image
        .into_inner()
        .map(Some)
        .map_err(|_| corrupt(path, "pixel data is malformed (the decoder gave up)"))
}

// ---------------------------------------------------------------------------
// Writing
// ---------------------------------------------------------------------------

/// Compressions iom can write (DWAA/DWAB and HTJ2K can be read, not written).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExrCompression {
    /// No compression.
    None,
    /// Run-length.
    Rle,
    /// Zip, one scan line per block (`ZIPS`).
    Zip1,
    /// Zip, 16 scan lines per block (`ZIP`).
    Zip16,
    /// Wavelet (`PIZ`), 32 lines per block.
    Piz,
    /// Lossy 24-bit float (`PXR24`); lossless for half.
    Pxr24,
    /// Lossy 4×4 blocks for half data (`B44`).
    B44,
    /// B44 with flat areas packed smaller (`B44A`).
    B44a,
}

impl ExrCompression {
    /// The OpenEXR name, as [`ImageInfo::compression`] reports it.
    pub fn name(self) -> &'static str {
        compression_name(self.to_exr())
    }

    fn to_exr(self) -> Compression {
        match self {
            ExrCompression::None => Compression::Uncompressed,
            ExrCompression::Rle => Compression::RLE,
            ExrCompression::Zip1 => Compression::ZIP1,
            ExrCompression::Zip16 => Compression::ZIP16,
            ExrCompression::Piz => Compression::PIZ,
            ExrCompression::Pxr24 => Compression::PXR24,
            ExrCompression::B44 => Compression::B44,
            ExrCompression::B44a => Compression::B44A,
        }
    }
}

impl FromStr for ExrCompression {
    type Err = String;

    /// Accepts the OpenEXR names, any case: `none`, `rle`, `zips`/`zip1`,
    /// `zip`/`zip16`, `piz`, `pxr24`, `b44`, `b44a`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "none" | "uncompressed" => ExrCompression::None,
            "rle" => ExrCompression::Rle,
            "zips" | "zip1" => ExrCompression::Zip1,
            "zip" | "zip16" => ExrCompression::Zip16,
            "piz" => ExrCompression::Piz,
            "pxr24" => ExrCompression::Pxr24,
            "b44" => ExrCompression::B44,
            "b44a" => ExrCompression::B44a,
            other => {
                return Err(format!(
                    "unknown EXR compression {other:?}: use none, rle, zips, zip, piz, pxr24, b44 or b44a"
                ))
            }
        })
    }
}

/// Sample type of the written colour channels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExrSample {
    /// 16-bit float (what plates use).
    Half,
    /// 32-bit float.
    Float,
}

/// What a written frame shows: a deterministic test pattern, or one colour.
///
/// Coordinates are relative to the display window's top-left corner; pixels of
/// an overscan data window get coordinates below 0 or past the size, and the
/// gradient simply continues there.
#[derive(Debug, Clone, PartialEq)]
pub enum Fill {
    /// Red ramps left→right, green top→bottom (`(x + 0.5) / width`), blue is 0.1
    /// except in a square patch whose position and value depend on `seed` (use
    /// the frame number), so every frame of a sequence differs.
    Pattern {
        /// Usually the frame number.
        seed: u32,
    },
    /// Every pixel has this colour.
    Constant([f32; 3]),
    /// These pixels (display coordinates; black outside the image): frames
    /// written from decoded pictures, e.g. a movie published as frames.
    Image(Arc<RgbImage>),
}

impl Fill {
    /// The colour at display coordinates (`x`, `y`) of a `width × height` image.
    pub fn sample(&self, x: i64, y: i64, width: u32, height: u32) -> [f32; 3] {
        self.sampler(width, height).sample(x, y)
    }

    /// A sampler for one image size, with the patch placed once (the writers
    /// call it for every pixel; the patch arithmetic per pixel cost more than
    /// the compression).
    pub(crate) fn sampler(&self, width: u32, height: u32) -> Sampler {
        let (patch, patch_value) = match *self {
            Fill::Pattern { seed } => (Fill::patch(seed, width, height), Fill::patch_value(seed)),
            Fill::Constant(_) | Fill::Image(_) => ((0, 0, 0), 0.0),
        };
        Sampler {
            fill: self.clone(),
            width: width.max(1) as f32,
            height: height.max(1) as f32,
            patch,
            patch_value,
        }
    }

    /// Top-left corner and side of the pattern's patch for a seed.
    pub fn patch(seed: u32, width: u32, height: u32) -> (i64, i64, i64) {
        let (w, h) = (i64::from(width.max(1)), i64::from(height.max(1)));
        let size = (w.min(h) / 8).max(1);
        let x = (i64::from(seed) * 13) % (w - size + 1).max(1);
        let y = (i64::from(seed) * 7) % (h - size + 1).max(1);
        (x, y, size)
    }

    /// The blue value inside the patch: a multiple of 1/32 in 0.25..0.72, exact in
    /// half floats and in 8-bit-and-up code values to within one step.
    pub fn patch_value(seed: u32) -> f32 {
        0.25 + (seed % 16) as f32 / 32.0
    }
}

/// [`Fill`] prepared for one image size.
#[derive(Debug, Clone)]
pub(crate) struct Sampler {
    fill: Fill,
    width: f32,
    height: f32,
    patch: (i64, i64, i64),
    patch_value: f32,
}

impl Sampler {
    /// The colour at display coordinates (`x`, `y`).
    pub(crate) fn sample(&self, x: i64, y: i64) -> [f32; 3] {
        match &self.fill {
            Fill::Constant(c) => *c,
            Fill::Image(img) => {
                if x >= 0 && y >= 0 && x < i64::from(img.width) && y < i64::from(img.height) {
                    img.pixel(x as u32, y as u32)
                } else {
                    [0.0; 3]
                }
            }
            Fill::Pattern { .. } => {
                let r = (x as f32 + 0.5) / self.width;
                let g = (y as f32 + 0.5) / self.height;
                let (px, py, size) = self.patch;
                let inside = x >= px && x < px + size && y >= py && y < py + size;
                let b = if inside { self.patch_value } else { 0.1 };
                [r, g, b]
            }
        }
    }
}

/// What [`write_frame`] writes.
///
/// Start from [`ExrSpec::new`] and change fields:
/// `ExrSpec { compression: ExrCompression::Piz, ..ExrSpec::new(64, 36) }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExrSpec {
    /// The display window (the image size iom reports).
    pub display_window: Window,
    /// The data window (the pixels stored): may be offset, larger (overscan),
    /// smaller (crop), or start at negative coordinates.
    pub data_window: Window,
    /// Compression.
    pub compression: ExrCompression,
    /// Half or float samples.
    pub sample: ExrSample,
    /// Write an `A` channel (always 1.0) after R, G, B.
    pub alpha: bool,
    /// `timeCode` (frames above 29 cannot be written: the crate's TV60 packing).
    pub timecode: Option<Timecode>,
    /// `framesPerSecond`.
    pub fps: Option<FrameRate>,
    /// `pixelAspectRatio`.
    pub pixel_aspect: f32,
    /// Text attributes (`owner`, `comments`, `capDate`, or any custom name).
    pub attributes: BTreeMap<String, String>,
    /// Pixel content.
    pub fill: Fill,
}

impl ExrSpec {
    /// A `width × height` half RGB frame, ZIP compressed, data window = display
    /// window at the origin, pattern seed 0, no timecode, square pixels.
    pub fn new(width: u32, height: u32) -> Self {
        let w = Window {
            x_min: 0,
            y_min: 0,
            x_max: width as i32 - 1,
            y_max: height as i32 - 1,
        };
        ExrSpec {
            display_window: w,
            data_window: w,
            compression: ExrCompression::Zip16,
            sample: ExrSample::Half,
            alpha: false,
            timecode: None,
            fps: None,
            pixel_aspect: 1.0,
            attributes: BTreeMap::new(),
            fill: Fill::Pattern { seed: 0 },
        }
    }

    /// The value [`read_pixels`] should give at display pixel (`x`, `y`), before
    /// half rounding or lossy compression: the fill inside the data window, black
    /// outside it.
    pub fn expected_pixel(&self, x: u32, y: u32) -> [f32; 3] {
        let d = &self.display_window;
        let ax = i64::from(d.x_min) + i64::from(x);
        let ay = i64::from(d.y_min) + i64::from(y);
        let dw = &self.data_window;
        let inside = ax >= i64::from(dw.x_min)
            && ax <= i64::from(dw.x_max)
            && ay >= i64::from(dw.y_min)
            && ay <= i64::from(dw.y_max);
        if inside {
            self.fill
                .sample(i64::from(x), i64::from(y), d.width(), d.height())
        } else {
            [0.0; 3]
        }
    }
}

/// Pixel geometry of one part for the writer (small: an image fill is shared).
#[derive(Clone)]
struct Geometry {
    /// Data window origin minus display window origin.
    dx: i64,
    dy: i64,
    sampler: Sampler,
}

impl Geometry {
    /// The colour at a position relative to the data window's origin.
    fn sample(&self, x: usize, y: usize) -> [f32; 3] {
        self.sampler.sample(self.dx + x as i64, self.dy + y as i64)
    }

    /// Whether data-window rows `rows` show the seed's patch (their bytes then
    /// change from frame to frame).
    fn depends_on_seed(&self, rows: std::ops::Range<usize>) -> bool {
        match self.sampler.fill {
            Fill::Constant(_) => false,
            Fill::Image(_) => true,
            Fill::Pattern { .. } => {
                let (_, py, size) = self.sampler.patch;
                let top = self.dy + rows.start as i64;
                let bottom = self.dy + rows.end as i64;
                top < py + size && bottom > py
            }
        }
    }
}

fn bounds(w: &Window) -> Result<IntegerBounds, String> {
    if w.x_max < w.x_min || w.y_max < w.y_min {
        return Err(format!("window {w:?} is empty"));
    }
    Ok(IntegerBounds::new(
        Vec2(w.x_min, w.y_min),
        Vec2(w.width() as usize, w.height() as usize),
    ))
}

/// Standard text attributes the crate keeps in typed fields: a custom attribute
/// of the same name would be rejected as reserved.
fn set_text_attribute(a: &mut LayerAttributes, name: &str, value: &str) -> Result<(), String> {
    let t = Text::from_slice_unchecked(value.as_bytes());
    let field = match name {
        "owner" => &mut a.owner,
        "comments" => &mut a.comments,
        "capDate" => &mut a.capture_date,
        "software" => &mut a.software_name,
        "view" => &mut a.view_name,
        "renderingTransform" => &mut a.rendering_transform_name,
        "lookModTransform" => &mut a.look_modification_transform_name,
        "wrapmodes" => &mut a.wrap_mode_name,
        _ => {
            let reserved = exr::meta::header::standard_names::ALL.contains(&name.as_bytes());
            if reserved || name.is_empty() || name.len() > 255 {
                return Err(format!(
                    "attribute name {name:?} is reserved, empty or too long"
                ));
            }
            a.other.insert(
                Text::from_slice_unchecked(name.as_bytes()),
                AttributeValue::Text(t),
            );
            return Ok(());
        }
    };
    *field = Some(t);
    Ok(())
}

fn image_attributes(spec: &ExrSpec) -> Result<ImageAttributes, String> {
    let mut a = ImageAttributes::new(bounds(&spec.display_window)?);
    if !(spec.pixel_aspect.is_normal() && spec.pixel_aspect > 0.0) {
        return Err(format!(
            "pixel aspect {} is not a positive number",
            spec.pixel_aspect
        ));
    }
    a.pixel_aspect = spec.pixel_aspect;
    if let Some(tc) = spec.timecode {
        let (h, m, s, f) = tc.parts();
        if f > 29 {
            return Err(format!(
                "timecode {tc} has frame {f}: the EXR writer only packs frames 0–29"
            ));
        }
        a.time_code = Some(TimeCode {
            hours: h as u8,
            minutes: m as u8,
            seconds: s as u8,
            frame: f as u8,
            drop_frame: tc.is_drop_frame(),
            ..TimeCode::default()
        });
    }
    Ok(a)
}

/// The header of one part: scan-line blocks in increasing order (crates-notes
/// trap 8: the crate's presets write tiles), no layer name for a single part.
fn part_header(
    spec: &ExrSpec,
    name: Option<&str>,
    shared: &ImageAttributes,
) -> Result<(Header, Geometry), String> {
    let data = bounds(&spec.data_window)?;
    bounds(&spec.display_window)?;
    let mut own = LayerAttributes {
        layer_name: name.map(|n| Text::from_slice_unchecked(n.as_bytes())),
        layer_position: data.position,
        ..LayerAttributes::default()
    };
    if let Some(rate) = spec.fps {
        let num = i32::try_from(rate.num).map_err(|_| format!("frame rate {rate} is too large"))?;
        if num == 0 || rate.den == 0 {
            return Err(format!("frame rate {}/{} is not valid", rate.num, rate.den));
        }
        own.frames_per_second = Some((num, rate.den));
    }
    for (k, v) in &spec.attributes {
        set_text_attribute(&mut own, k, v)?;
    }
    let sample = match spec.sample {
        ExrSample::Half => SampleType::F16,
        ExrSample::Float => SampleType::F32,
    };
    // Channels sorted by name, as the file format requires.
    let names: &[&str] = if spec.alpha {
        &["A", "B", "G", "R"]
    } else {
        &["B", "G", "R"]
    };
    let channels = names
        .iter()
        .map(|n| ChannelDescription::named(*n, sample))
        .collect();
    let header = Header::new(Text::default(), data.size, channels)
        .with_encoding(
            spec.compression.to_exr(),
            BlockDescription::ScanLines,
            LineOrder::Increasing,
        )
        .with_attributes(own)
        .with_shared_attributes(shared.clone());
    let geometry = Geometry {
        dx: i64::from(spec.data_window.x_min) - i64::from(spec.display_window.x_min),
        dy: i64::from(spec.data_window.y_min) - i64::from(spec.display_window.y_min),
        sampler: spec
            .fill
            .sampler(spec.display_window.width(), spec.display_window.height()),
    };
    Ok((header, geometry))
}

/// Fills one block's native-endian sample bytes (per line: each channel's run,
/// channels in file order). Runs on the rayon pool, one block per task.
fn make_block(index: BlockIndex, channels: &ChannelList, g: &Geometry) -> UncompressedBlock {
    let (x0, y0) = (index.pixel_position.0, index.pixel_position.1);
    let w = index.pixel_size.0;
    let line_bytes = w * channels.bytes_per_pixel;
    let mut data = vec![0u8; line_bytes * index.pixel_size.1];
    let mut rgb = [vec![0f32; w], vec![0f32; w], vec![0f32; w]];
    let ones = vec![1f32; w];
    let mut halves = vec![half::f16::ZERO; w];
    for (ly, line) in data.chunks_exact_mut(line_bytes).enumerate() {
        let [reds, greens, blues] = &mut rgb;
        for (x, ((r, gg), b)) in reds
            .iter_mut()
            .zip(greens.iter_mut())
            .zip(blues.iter_mut())
            .enumerate()
        {
            [*r, *gg, *b] = g.sample(x0 + x, y0 + ly);
        }
        let mut at = 0;
        for c in &channels.list {
            let values: &[f32] = match c.name.bytes() {
                b"R" => &rgb[0],
                b"G" => &rgb[1],
                b"B" => &rgb[2],
                _ => &ones,
            };
            match c.sample_type {
                SampleType::F16 => {
                    halves.convert_from_f32_slice(values);
                    for (dst, h) in line[at..at + 2 * w].chunks_exact_mut(2).zip(&halves) {
                        dst.copy_from_slice(&h.to_bits().to_ne_bytes());
                    }
                    at += 2 * w;
                }
                SampleType::F32 | SampleType::U32 => {
                    for (dst, v) in line[at..at + 4 * w].chunks_exact_mut(4).zip(values) {
                        dst.copy_from_slice(&v.to_ne_bytes());
                    }
                    at += 4 * w;
                }
            }
        }
    }
    UncompressedBlock { index, data }
}

/// Compressed blocks that do not depend on the pattern seed, kept from the last
/// frames written, keyed by everything else that decides their bytes. A sequence
/// differs only in the seed's patch, so most blocks of its next frame are already
/// compressed: ZIP frames of a 2K plate write several times faster.
type BlockCache = Vec<(String, Arc<HashMap<(usize, usize), Chunk>>)>;

static BLOCK_CACHE: LazyLock<Mutex<BlockCache>> = LazyLock::new(|| Mutex::new(Vec::new()));

/// Frames (pixel layouts) the cache remembers.
const BLOCK_CACHE_ENTRIES: usize = 2;

/// Largest compressed frame the cache keeps (bytes).
const BLOCK_CACHE_MAX_BYTES: usize = 32 << 20;

fn chunk_len(c: &Chunk) -> usize {
    use exr::block::chunk::CompressedBlock as B;
    match &c.compressed_block {
        B::ScanLine(b) => b.compressed_pixels_le.len(),
        B::Tile(b) => b.compressed_pixels_le.len(),
        B::DeepScanLine(b) => b.compressed_sample_data_le.len(),
        B::DeepTile(b) => b.compressed_sample_data_le.len(),
    }
}

/// Everything that decides a part's pixel bytes except the pattern seed.
fn pixel_key(h: &Header, g: &Geometry) -> String {
    let channels: Vec<(String, SampleType)> = h
        .channels
        .list
        .iter()
        .map(|c| (text(&c.name), c.sample_type))
        .collect();
    let fill = match &g.sampler.fill {
        Fill::Constant(c) => format!("constant {:?}", c.map(f32::to_bits)),
        Fill::Pattern { .. } => "pattern".to_string(),
        // Never reused (every block depends on the picture).
        Fill::Image(_) => "image".to_string(),
    };
    format!(
        "{channels:?} {:?} {:?} {:?} {} {} {} {} {fill}",
        h.compression,
        h.layer_size,
        h.own_attributes.layer_position,
        g.dx,
        g.dy,
        g.sampler.width,
        g.sampler.height,
    )
}

/// Headers and pixel sources of the parts to write, checked.
struct Prepared {
    headers: Headers,
    geometry: Vec<Geometry>,
    key: String,
    cached: Option<Arc<HashMap<(usize, usize), Chunk>>>,
}

fn prepare(path: &Path, parts: &[(Option<&str>, &ExrSpec)]) -> Result<Prepared, MediaError> {
    let Some((_, first)) = parts.first() else {
        return Err(MediaError::unsupported(
            path,
            "nothing to write: no part given",
        ));
    };
    let invalid = |e: String| MediaError::unsupported(path, format!("cannot write this EXR: {e}"));
    let shared = image_attributes(first).map_err(invalid)?;
    let mut headers = Headers::new();
    let mut geometry = Vec::new();
    for (name, spec) in parts {
        let (h, g) = part_header(spec, *name, &shared).map_err(invalid)?;
        headers.push(h);
        geometry.push(g);
    }
    let key = headers
        .iter()
        .zip(&geometry)
        .map(|(h, g)| pixel_key(h, g))
        .collect::<Vec<_>>()
        .join(" | ");
    let cached = {
        let cache = BLOCK_CACHE.lock().unwrap_or_else(|p| p.into_inner());
        cache
            .iter()
            .find(|(k, _)| *k == key)
            .map(|(_, m)| Arc::clone(m))
    };
    Ok(Prepared {
        headers,
        geometry,
        key,
        cached,
    })
}

/// Writes the prepared parts to `out`.
fn emit<W: Write + Seek>(out: W, p: Prepared) -> exr::error::UnitResult {
    let Prepared {
        headers,
        geometry,
        key,
        cached,
    } = p;
    exr::block::write(out, headers, true, |meta, writer| {
        // The crate's own image writer fills pixels one by one on the calling
        // thread (≈200 ms for a 2K RGBA frame); making and compressing whole
        // blocks on the pool is several times faster.
        let indices: Vec<(usize, BlockIndex)> =
            meta.enumerate_ordered_header_block_indices().collect();
        // (index in header, chunk, whether it may be cached) per block.
        let chunks: Vec<exr::error::Result<(usize, Chunk, bool)>> = indices
            .into_par_iter()
            .map(|(i, index)| {
                let g = &geometry[index.layer];
                let rows = index.pixel_position.1..index.pixel_position.1 + index.pixel_size.1;
                let reusable = !g.depends_on_seed(rows);
                if reusable {
                    if let Some(c) = cached.as_ref().and_then(|m| m.get(&(index.layer, i))) {
                        return Ok((i, c.clone(), false));
                    }
                }
                let block = make_block(index, &meta.headers[index.layer].channels, g);
                let chunk = block.compress_to_chunk(&meta.headers)?;
                Ok((i, chunk, reusable))
            })
            .collect();
        let mut fresh = Vec::new();
        for chunk in chunks {
            let (i, chunk, reusable) = chunk?;
            if reusable {
                fresh.push(((chunk.layer_index, i), chunk.clone()));
            }
            writer.write_chunk(i, chunk)?;
        }
        remember_blocks(&key, cached.as_deref(), fresh);
        Ok(())
    })
}

fn write_parts(path: &Path, parts: &[(Option<&str>, &ExrSpec)]) -> Result<(), MediaError> {
    let prepared = prepare(path, parts)?;
    write_atomically(path, |out| emit(out, prepared))
}

/// The bytes [`write_frame`] would write, in memory (for callers that place the
/// file themselves); `path` only names the frame in errors.
pub fn encode_frame(path: &Path, spec: &ExrSpec) -> Result<Vec<u8>, MediaError> {
    let prepared = prepare(path, &[(None, spec)])?;
    let mut bytes = Vec::new();
    emit(std::io::Cursor::new(&mut bytes), prepared).map_err(|e| write_error(path, e))?;
    Ok(bytes)
}

fn write_error(path: &Path, e: exr::error::Error) -> MediaError {
    match e {
        exr::error::Error::Io(source) => MediaError::Io {
            path: path.to_path_buf(),
            source,
        },
        other => MediaError::unsupported(path, format!("cannot write this EXR: {other}")),
    }
}

/// Adds newly compressed seed-independent blocks to the cache (most recent
/// layout first), unless the frame is too large to keep.
fn remember_blocks(
    key: &str,
    old: Option<&HashMap<(usize, usize), Chunk>>,
    fresh: Vec<((usize, usize), Chunk)>,
) {
    if fresh.is_empty() {
        return;
    }
    let mut map = old.cloned().unwrap_or_default();
    map.extend(fresh);
    if map.values().map(chunk_len).sum::<usize>() > BLOCK_CACHE_MAX_BYTES {
        return;
    }
    let mut cache = BLOCK_CACHE.lock().unwrap_or_else(|p| p.into_inner());
    cache.retain(|(k, _)| k != key);
    cache.insert(0, (key.to_string(), Arc::new(map)));
    cache.truncate(BLOCK_CACHE_ENTRIES);
}

/// Writes to a hidden temporary name beside `path`, then renames it into place,
/// so a reader never sees a half-written frame.
fn write_atomically(
    path: &Path,
    write: impl FnOnce(&mut BufWriter<File>) -> exr::error::UnitResult,
) -> Result<(), MediaError> {
    super::write_atomically(path, |out| write(out).map_err(|e| write_error(path, e)))
}

/// Writes one single-part scan-line frame (atomically: temporary file, then
/// rename). Blocks are filled and compressed in parallel on the rayon pool.
pub fn write_frame(path: &Path, spec: &ExrSpec) -> Result<(), MediaError> {
    write_parts(path, &[(None, spec)])
}

/// Writes a multi-part file, one part per `(name, spec)`. Display window, pixel
/// aspect and timecode are shared by all parts and come from the first spec;
/// every part needs a unique, non-empty name.
pub fn write_multipart(path: &Path, parts: &[(&str, &ExrSpec)]) -> Result<(), MediaError> {
    let mut seen = std::collections::HashSet::new();
    for (name, _) in parts {
        if name.is_empty() || !seen.insert(*name) {
            return Err(MediaError::unsupported(
                path,
                format!("part name {name:?} is empty or used twice"),
            ));
        }
    }
    let parts: Vec<(Option<&str>, &ExrSpec)> = parts.iter().map(|(n, s)| (Some(*n), *s)).collect();
    write_parts(path, &parts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digits_are_grouped_by_three() {
        assert_eq!(group_digits(0), "0");
        assert_eq!(group_digits(999), "999");
        assert_eq!(group_digits(2_000_000), "2 000 000");
        assert_eq!(group_digits(3_401_233), "3 401 233");
    }

    #[test]
    fn timecode_labels() {
        let tc = TimeCode {
            hours: 1,
            minutes: 2,
            seconds: 3,
            frame: 4,
            ..TimeCode::default()
        };
        assert_eq!(timecode_label(&tc).as_deref(), Some("01:02:03:04"));
        let df = TimeCode {
            drop_frame: true,
            ..tc
        };
        assert_eq!(timecode_label(&df).as_deref(), Some("01:02:03;04"));
        let bad = TimeCode { hours: 25, ..tc };
        assert_eq!(timecode_label(&bad), None);
    }

    #[test]
    fn frame_rates_reject_zero_and_negative() {
        assert_eq!(frame_rate((24, 1)), Some(FrameRate::FPS_24));
        assert_eq!(frame_rate((48000, 2002)), Some(FrameRate::FPS_23_976));
        assert_eq!(frame_rate((0, 1)), None);
        assert_eq!(frame_rate((-24, 1)), None);
        assert_eq!(frame_rate((24, 0)), None);
        assert_eq!(frame_rate((1_000_000, 1)), None);
    }

    #[test]
    fn compression_names_round_trip() {
        for c in [
            ExrCompression::None,
            ExrCompression::Rle,
            ExrCompression::Zip1,
            ExrCompression::Zip16,
            ExrCompression::Piz,
            ExrCompression::Pxr24,
            ExrCompression::B44,
            ExrCompression::B44a,
        ] {
            assert_eq!(c.name().parse::<ExrCompression>(), Ok(c));
        }
        assert!("dwaa".parse::<ExrCompression>().is_err());
    }

    #[test]
    fn pattern_patch_moves_with_the_seed() {
        let a = Fill::patch(1, 64, 36);
        let b = Fill::patch(2, 64, 36);
        assert_ne!(a, b);
        let (x, y, _) = a;
        let f = Fill::Pattern { seed: 1 };
        assert_eq!(f.sample(x, y, 64, 36)[2], Fill::patch_value(1));
        assert_eq!(f.sample(x - 1, y, 64, 36)[2], 0.1);
    }
}
