//! MOV/MXF through `ffmpeg-next`: probe, frame decode, and a small writer.
//!
//! - [`probe`] reads the first video stream's facts (codec, profile, size, exact
//!   frame rate, frame count, start timecode, colour tags) without decoding pictures.
//! - [`decode_frames`] decodes a few frames by 0-based index (one thumbnail per EDL
//!   event), seeking to the keyframe before each wanted frame and recognising frames
//!   by their timestamps, so a frame near the end of a long ProRes file costs one
//!   frame decode, not the whole movie.
//! - [`write_test_movie`] writes synthetic movies (fixtures, demo, benchmarks) whose
//!   frame `n` is a flat colour computed from `n` ([`test_frame_colour`]), so a test
//!   can decode a frame and tell which one it got ([`test_frame_index`]).
//!
//! FFmpeg's own logging goes to `tracing` (target `iom::ffmpeg`, debug level) and
//! only at FFmpeg's error level: it never writes to stderr. Every error names the file.
//!
//! Inputs are opened through the `file:` protocol only, and only the MOV/MP4 and MXF
//! demuxers are allowed ([`ALLOWED_DEMUXERS`]): a hostile "movie" that is really an
//! HLS playlist or a concat script cannot make FFmpeg open other files or URLs.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, c_int, c_uint, CStr, CString};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::ptr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Once;

use ff::ffi;
use ffmpeg_next as ff;
use serde::{Deserialize, Serialize};

use super::{MediaError, RgbImage};
use crate::timecode::{FrameRate, Timecode};

/// Demuxers [`probe`] and [`decode_frames`] let FFmpeg use (FFmpeg's `format_whitelist`).
pub const ALLOWED_DEMUXERS: &str = "mov,mp4,m4a,3gp,3g2,mj2,mxf";

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
    /// Pixel format (`yuv422p10le` …); `unknown` when the container does not say.
    pub pix_fmt: String,
    /// Pixel aspect ratio from the sample aspect ratio (1.0 when not stored).
    #[serde(default = "one")]
    pub pixel_aspect: f32,
    /// FFmpeg's name of the demuxer that read the file (`mov,mp4,m4a,3gp,3g2,mj2`, `mxf`).
    #[serde(default)]
    pub container: String,
}

fn one() -> f32 {
    1.0
}

/// What [`write_test_movie`] writes.
///
/// The container comes from the file extension (`.mov`/`.MOV`, `.mp4`, `.mxf`).
/// Valid combinations with Debian's FFmpeg 5.1:
/// - `prores_ks` in MOV, any size (odd sizes work), profile `0`–`3` (Proxy, LT,
///   Standard, HQ; 4:2:2 10-bit) or `4`/`5` (4444, 4444 XQ; 4:4:4 10-bit).
/// - `dnxhd` in MXF or MOV: **1920×1080** (or 1280×720) at 23.976, 24, 25 or 29.97
///   fps with `bit_rate` 36, 115 or 175 Mbit/s (4:2:2 8-bit); [`MovieSpec::dnxhd_1080`]
///   uses 36 Mbit/s, the smallest. Other sizes need a DNxHR `profile` (`dnxhr_sq` …).
/// - `mjpeg` in MOV, any size (full-range 4:2:0).
/// - `libx264` in MOV or MP4, even sizes only (4:2:0), long GOP with B-frames.
#[derive(Debug, Clone, PartialEq)]
pub struct MovieSpec {
    /// FFmpeg encoder name: `prores_ks`, `dnxhd`, `mjpeg`, `libx264` …
    pub codec: String,
    /// The encoder's `profile` option: `0`–`5` (or `hq`, `4444` …) for `prores_ks`,
    /// `dnxhd`/`dnxhr_lb`/`dnxhr_sq`/`dnxhr_hq`/`dnxhr_hqx`/`dnxhr_444` for `dnxhd`.
    pub profile: Option<String>,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// Frame rate.
    pub fps: FrameRate,
    /// Number of frames (at most [`MovieSpec::MAX_FRAMES`]).
    pub frames: u64,
    /// Start timecode label (`01:00:00:00`, or `01:00:00;00` drop frame at 29.97),
    /// written as the video stream's `timecode` tag: a `tmcd` track in MOV.
    pub timecode: Option<String>,
    /// Bit rate in bit/s (required by DNxHD, ignored by most other encoders).
    pub bit_rate: Option<u64>,
    /// Tag primaries, transfer and matrix as BT.709 (and encode with the BT.709 matrix).
    pub bt709_tags: bool,
    /// Pixel format override (`yuv422p10le` …); by default the codec's usual one.
    pub pix_fmt: Option<String>,
}

impl MovieSpec {
    /// The largest frame count [`write_test_movie`] accepts (a guard against typos).
    pub const MAX_FRAMES: u64 = 1_000_000;

    /// ProRes 422 HQ (`prores_ks`, profile 3), BT.709 tags, no timecode.
    pub fn prores_hq(width: u32, height: u32, fps: FrameRate, frames: u64) -> Self {
        MovieSpec {
            codec: "prores_ks".into(),
            profile: Some("3".into()),
            width,
            height,
            fps,
            frames,
            timecode: None,
            bit_rate: None,
            bt709_tags: true,
            pix_fmt: None,
        }
    }

    /// DNxHD 1920×1080 4:2:2 8-bit at 36 Mbit/s (valid at 23.976, 24, 25, 29.97 fps).
    pub fn dnxhd_1080(fps: FrameRate, frames: u64) -> Self {
        MovieSpec {
            codec: "dnxhd".into(),
            profile: None,
            bit_rate: Some(36_000_000),
            ..MovieSpec::prores_hq(1920, 1080, fps, frames)
        }
    }

    /// Motion JPEG, full-range 4:2:0 (any size).
    pub fn mjpeg(width: u32, height: u32, fps: FrameRate, frames: u64) -> Self {
        MovieSpec {
            codec: "mjpeg".into(),
            profile: None,
            ..MovieSpec::prores_hq(width, height, fps, frames)
        }
    }

    /// H.264 through libx264, 4:2:0 8-bit, GOP 12 with B-frames (even sizes only).
    pub fn h264(width: u32, height: u32, fps: FrameRate, frames: u64) -> Self {
        MovieSpec {
            codec: "libx264".into(),
            profile: None,
            ..MovieSpec::prores_hq(width, height, fps, frames)
        }
    }

    /// The same spec with a start timecode label.
    pub fn with_timecode(mut self, label: &str) -> Self {
        self.timecode = Some(label.to_string());
        self
    }
}

impl Default for MovieSpec {
    /// 320×180 ProRes 422 HQ, 24 fps, 24 frames.
    fn default() -> Self {
        MovieSpec::prores_hq(320, 180, FrameRate::FPS_24, 24)
    }
}

/// How much work [`decode_frames_with_stats`] did: lets tests and benchmarks check
/// that a frame near the end did not cost a decode of the whole movie.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DecodeStats {
    /// Packets of the video stream read from the container.
    pub packets_read: u64,
    /// Packets handed to the decoder.
    pub packets_decoded: u64,
    /// Frames that came out of the decoder.
    pub frames_decoded: u64,
    /// Seeks done.
    pub seeks: u64,
    /// Times the file was reopened and read from the start because a seek or the
    /// timestamps could not be trusted.
    pub restarts: u64,
}

static INIT: Once = Once::new();

/// Initialises FFmpeg once per process and routes its log level.
///
/// FFmpeg logs only errors, and those go to `tracing` (target `iom::ffmpeg`, debug
/// level) instead of stderr; the errors that matter come back as [`MediaError`]s.
pub fn init() {
    INIT.call_once(|| {
        if let Err(e) = ff::init() {
            tracing::warn!("ffmpeg initialisation reported: {e}");
        }
        // SAFETY: plain setters of FFmpeg's global log state, called once.
        unsafe {
            ffi::av_log_set_level(ffi::AV_LOG_ERROR);
            install_log_callback();
        }
    });
}

/// Routes FFmpeg log lines into `tracing`. The callback's `va_list` type is the one
/// bindgen generated for this target, forwarded untouched to `av_log_format_line2`;
/// only x86-64 Linux is wired (elsewhere the level alone keeps stderr quiet).
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
unsafe fn install_log_callback() {
    unsafe extern "C" fn log_to_tracing(
        avcl: *mut std::ffi::c_void,
        level: c_int,
        fmt: *const c_char,
        vl: *mut ffi::__va_list_tag,
    ) {
        // SAFETY: arguments come straight from av_log; the buffer outlives the call.
        unsafe {
            if level > ffi::av_log_get_level() || fmt.is_null() {
                return;
            }
            let mut line = [0 as c_char; 1024];
            let mut prefix: c_int = 1;
            let n = ffi::av_log_format_line2(
                avcl,
                level,
                fmt,
                vl,
                line.as_mut_ptr(),
                line.len() as c_int,
                &mut prefix,
            );
            if n < 0 {
                return;
            }
            let text = CStr::from_ptr(line.as_ptr()).to_string_lossy();
            // A panic must not unwind into C.
            let _ = std::panic::catch_unwind(|| {
                tracing::debug!(target: "iom::ffmpeg", level, "{}", text.trim_end());
            });
        }
    }
    // SAFETY: the callback is a plain extern fn with FFmpeg's signature.
    unsafe { ffi::av_log_set_callback(Some(log_to_tracing)) };
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
unsafe fn install_log_callback() {
    // SAFETY: plain setter.
    unsafe { ffi::av_log_set_level(ffi::AV_LOG_QUIET) };
}

// FFmpeg's name functions take C enums; values read from files are passed as plain
// integers so an out-of-range value never becomes an invalid Rust enum. FFmpeg
// returns NULL for values it does not know.
extern "C" {
    #[link_name = "av_color_primaries_name"]
    fn color_primaries_name(value: c_uint) -> *const c_char;
    #[link_name = "av_color_transfer_name"]
    fn color_transfer_name(value: c_uint) -> *const c_char;
    #[link_name = "av_color_space_name"]
    fn color_space_name(value: c_uint) -> *const c_char;
    #[link_name = "av_get_pix_fmt_name"]
    fn pix_fmt_name(value: c_int) -> *const c_char;
}

/// A C string from FFmpeg as an owned `String` (`None` for NULL).
fn c_text(p: *const c_char) -> Option<String> {
    if p.is_null() {
        None
    } else {
        // SAFETY: FFmpeg's name functions return static NUL-terminated strings.
        Some(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
    }
}

/// FFmpeg's message for an error code.
pub(crate) fn ff_message(e: ff::Error) -> String {
    e.to_string()
}

/// The format name used in `MediaError::Corrupt`, from the extension.
fn format_label(path: &Path) -> &'static str {
    match extension_lower(path).as_str() {
        "mxf" => "MXF",
        "mp4" => "MP4",
        _ => "QuickTime MOV",
    }
}

fn extension_lower(path: &Path) -> String {
    path.extension()
        .and_then(|e| e.to_str())
        .unwrap_or_default()
        .to_ascii_lowercase()
}

pub(crate) fn ffmpeg_err(path: &Path, what: &str, e: ff::Error) -> MediaError {
    MediaError::Ffmpeg {
        path: path.to_path_buf(),
        detail: format!("{what}: {}", ff_message(e)),
    }
}

/// `file:<path>` as a C string, so names with `:` are never read as a protocol and
/// non-UTF-8 names work.
fn file_url(path: &Path) -> Result<CString, MediaError> {
    #[cfg(unix)]
    let bytes = {
        use std::os::unix::ffi::OsStrExt;
        path.as_os_str().as_bytes().to_vec()
    };
    #[cfg(not(unix))]
    let bytes = path
        .to_str()
        .ok_or_else(|| MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: "the file name is not valid Unicode; rename the file".into(),
        })?
        .as_bytes()
        .to_vec();
    let mut url = b"file:".to_vec();
    url.extend_from_slice(&bytes);
    CString::new(url).map_err(|_| MediaError::Unsupported {
        path: path.to_path_buf(),
        detail: "the file name contains a NUL byte".into(),
    })
}

/// Opens a movie for reading (demuxer whitelist, `file:` only) and reads its stream
/// info. Returns the file size too.
fn open_input(path: &Path) -> Result<(ff::format::context::Input, u64), MediaError> {
    init();
    let meta = std::fs::metadata(path).map_err(MediaError::io(path))?;
    if meta.is_dir() {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: "is a directory, not a movie file".into(),
        });
    }
    if meta.len() == 0 {
        return Err(MediaError::Empty {
            path: path.to_path_buf(),
        });
    }
    let url = file_url(path)?;
    let mut opts = ff::Dictionary::new();
    opts.set("protocol_whitelist", "file");
    opts.set("format_whitelist", ALLOWED_DEMUXERS);
    // SAFETY: standard avformat_open_input protocol: on failure FFmpeg frees the
    // context; on success `Input::wrap` takes ownership and closes it on drop.
    unsafe {
        let mut ps: *mut ffi::AVFormatContext = ptr::null_mut();
        let mut raw = opts.disown();
        let r = ffi::avformat_open_input(&mut ps, url.as_ptr(), ptr::null(), &mut raw);
        drop(ff::Dictionary::own(raw));
        if r < 0 || ps.is_null() {
            return Err(unreadable(path, "cannot open it", ff::Error::from(r)));
        }
        let input = ff::format::context::Input::wrap(ps);
        let r = ffi::avformat_find_stream_info(ps, ptr::null_mut());
        if r < 0 {
            return Err(unreadable(
                path,
                "cannot read its streams",
                ff::Error::from(r),
            ));
        }
        Ok((input, meta.len()))
    }
}

/// The error for a file FFmpeg cannot open: `Truncated` when the MOV atom layout
/// shows the file was cut short, else `Corrupt`.
fn unreadable(path: &Path, what: &str, e: ff::Error) -> MediaError {
    if let Some(detail) = mov_truncation(path) {
        return MediaError::Truncated {
            path: path.to_path_buf(),
            detail,
        };
    }
    MediaError::Corrupt {
        path: path.to_path_buf(),
        format: format_label(path),
        detail: format!(
            "FFmpeg {what} ({}); check that the file is a complete MOV/MP4/MXF movie \
             and re-copy it from the delivery",
            ff_message(e)
        ),
    }
}

/// Top-level QuickTime/MP4 atom types: a file whose atoms are all of these kinds
/// is a QuickTime file, so an atom running past the end means truncation.
const TOP_LEVEL_ATOMS: [&[u8; 4]; 13] = [
    b"ftyp", b"wide", b"free", b"skip", b"mdat", b"moov", b"pnot", b"uuid", b"meta", b"mfra",
    b"moof", b"sidx", b"styp",
];

/// Walks the top-level atoms of a QuickTime/MP4 file; returns why it is truncated,
/// or `None` when it is complete or not a QuickTime file at all (MXF, text …).
fn mov_truncation(path: &Path) -> Option<String> {
    let mut f = File::open(path).ok()?;
    let len = f.metadata().ok()?.len();
    atoms_truncation(&mut f, len)
}

fn atoms_truncation<R: Read + Seek>(r: &mut R, len: u64) -> Option<String> {
    let mut pos = 0u64;
    // Each step moves forward by at least 8 bytes; the cap only bounds pathological files.
    for _ in 0..100_000 {
        if pos >= len {
            return None;
        }
        let left = len - pos;
        r.seek(SeekFrom::Start(pos)).ok()?;
        let mut head = [0u8; 8];
        if left < 8 {
            // A few padding bytes after the last atom: not evidence of a cut.
            return None;
        }
        r.read_exact(&mut head).ok()?;
        let kind: [u8; 4] = [head[4], head[5], head[6], head[7]];
        if !TOP_LEVEL_ATOMS.contains(&&kind) {
            return None;
        }
        let size32 = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        let (size, header) = match size32 {
            0 => (left, 8),
            1 => {
                if left < 16 {
                    return Some(format!(
                        "the file ends inside the header of the atom at byte {pos}"
                    ));
                }
                let mut big = [0u8; 8];
                r.read_exact(&mut big).ok()?;
                (u64::from_be_bytes(big), 16)
            }
            n => (u64::from(n), 8),
        };
        if size < header {
            return None;
        }
        if size > left {
            let name = String::from_utf8_lossy(&kind);
            return Some(format!(
                "the '{name}' atom at byte {pos} is {size} bytes long but the file ends \
                 {left} bytes after its start"
            ));
        }
        pos += size;
    }
    None
}

/// The first video stream that is a real picture track (not cover art).
fn first_video_stream(input: &ff::format::context::Input) -> Option<usize> {
    input
        .streams()
        .find(|s| {
            s.parameters().medium() == ff::media::Type::Video
                && !s
                    .disposition()
                    .contains(ff::format::stream::Disposition::ATTACHED_PIC)
        })
        .map(|s| s.index())
}

/// A usable frame rate from an FFmpeg rational (positive, at most 1000 fps).
fn usable_rate(r: ff::Rational) -> Option<FrameRate> {
    let (num, den) = (r.numerator(), r.denominator());
    if num <= 0 || den <= 0 {
        return None;
    }
    let rate = FrameRate::new(num as u32, den as u32).reduced();
    let v = rate.as_f64();
    (v > 0.0 && v <= 1000.0).then_some(rate)
}

/// `round(a × b / c)` in 128-bit, for timestamp arithmetic that must stay exact at
/// 24000/1001; `None` on a zero divisor or a result that does not fit.
fn mul_div_round(a: i128, b: i128, c: i128) -> Option<i128> {
    if c == 0 {
        return None;
    }
    let n = a.checked_mul(b)?;
    let (n, c) = if c < 0 { (-n, -c) } else { (n, c) };
    let q = n.div_euclid(c);
    let r = n.rem_euclid(c);
    Some(if r * 2 >= c { q + 1 } else { q })
}

/// Converts between stream timestamps and 0-based frame indices.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Stream time base.
    tb_num: i128,
    tb_den: i128,
    fps: FrameRate,
    /// Timestamp of frame 0.
    origin: i64,
}

impl Clock {
    /// Frame index of a timestamp (nearest frame); `None` before frame 0.
    fn index(&self, ts: i64) -> Option<u64> {
        let d = i128::from(ts) - i128::from(self.origin);
        let idx = mul_div_round(
            d * self.tb_num,
            i128::from(self.fps.num),
            self.tb_den * i128::from(self.fps.den),
        )?;
        u64::try_from(idx).ok()
    }

    /// Timestamp of a frame index.
    fn ts(&self, index: u64) -> Option<i64> {
        let d = mul_div_round(
            i128::from(index) * i128::from(self.fps.den),
            self.tb_den,
            i128::from(self.fps.num) * self.tb_num,
        )?;
        i64::try_from(d + i128::from(self.origin)).ok()
    }
}

/// The `timecode` tag: video stream first, then a data (tmcd) stream, then the container.
fn pick_timecode(
    video: Option<&str>,
    data: &[Option<&str>],
    container: Option<&str>,
) -> Option<String> {
    let clean = |t: Option<&str>| {
        t.map(str::trim)
            .filter(|t| !t.is_empty())
            .map(str::to_string)
    };
    clean(video)
        .or_else(|| data.iter().find_map(|t| clean(*t)))
        .or_else(|| clean(container))
}

/// Reads a C-enum field as a raw integer (never materialising an invalid Rust enum).
///
/// # Safety
/// `p` must point to a readable 4-byte enum field.
unsafe fn raw_enum<T>(p: *const T) -> c_uint {
    debug_assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<c_uint>());
    // SAFETY: guaranteed by the caller; the enums are repr(u32)/repr(i32).
    unsafe { p.cast::<c_uint>().read() }
}

/// FFmpeg's name for a colour tag value, `None` when unspecified or reserved.
fn colour_name(
    value: c_uint,
    name: unsafe extern "C" fn(c_uint) -> *const c_char,
) -> Option<String> {
    // 0 and 3 are "reserved", 2 "unspecified" in all three ISO/IEC 23091-2 tables
    // (0 is GBR/RGB for the matrix, which is a real tag).
    if value == 2 || value == 3 {
        return None;
    }
    // SAFETY: FFmpeg range-checks the value and returns NULL when unknown.
    let n = c_text(unsafe { name(value) })?;
    (n != "reserved" && n != "unknown").then_some(n)
}

fn stream_tag(input: &ff::format::context::Input, index: usize, key: &str) -> Option<String> {
    input
        .stream(index)
        .and_then(|s| s.metadata().get(key).map(str::to_string))
}

/// Probes the first video stream.
pub fn probe(path: &Path) -> Result<MovieInfo, MediaError> {
    let (mut input, file_len) = open_input(path)?;
    let vi = first_video_stream(&input).ok_or_else(|| MediaError::Unsupported {
        path: path.to_path_buf(),
        detail: "the file has no video stream (only audio or data); iom needs a picture track"
            .into(),
    })?;
    let stream = input.stream(vi).ok_or_else(|| MediaError::Corrupt {
        path: path.to_path_buf(),
        format: format_label(path),
        detail: "the video stream vanished".into(),
    })?;

    // SAFETY: codecpar of a stream of an open context is valid while `input` lives;
    // enum fields are read as raw integers.
    let (codec_id, profile, width, height, pix, prim, trc, mat, sar) = unsafe {
        let par = (*stream.as_ptr()).codecpar;
        if par.is_null() {
            return Err(MediaError::Corrupt {
                path: path.to_path_buf(),
                format: format_label(path),
                detail: "the video stream has no codec parameters".into(),
            });
        }
        (
            (*par).codec_id,
            (*par).profile,
            (*par).width,
            (*par).height,
            (*par).format,
            raw_enum(ptr::addr_of!((*par).color_primaries)),
            raw_enum(ptr::addr_of!((*par).color_trc)),
            raw_enum(ptr::addr_of!((*par).color_space)),
            (*par).sample_aspect_ratio,
        )
    };
    if codec_id == ffi::AVCodecID::AV_CODEC_ID_NONE {
        return Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: "FFmpeg does not know the video codec of this file".into(),
        });
    }
    // SAFETY: avcodec_get_name accepts any codec id and returns a static string.
    let codec = c_text(unsafe { ffi::avcodec_get_name(codec_id) }).unwrap_or_default();
    let profile = if profile == ffi::FF_PROFILE_UNKNOWN {
        None
    } else {
        // SAFETY: returns NULL for profiles it does not know.
        c_text(unsafe { ffi::avcodec_profile_name(codec_id, profile) })
    };
    let (width, height) = match (u32::try_from(width), u32::try_from(height)) {
        (Ok(w), Ok(h)) if w > 0 && h > 0 => (w, h),
        _ => {
            return Err(MediaError::Corrupt {
                path: path.to_path_buf(),
                format: format_label(path),
                detail: format!("the video stream has no usable picture size ({width}×{height})"),
            })
        }
    };
    let fps = usable_rate(stream.avg_frame_rate())
        .or_else(|| usable_rate(stream.rate()))
        .ok_or_else(|| MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: "the video stream has no usable frame rate".into(),
        })?;
    let tb = stream.time_base();
    let stream_duration = stream.duration();
    let container_duration = input.duration();

    let stream_seconds = (stream_duration > 0 && tb.numerator() > 0 && tb.denominator() > 0)
        .then(|| stream_duration as f64 * f64::from(tb.numerator()) / f64::from(tb.denominator()));
    let container_seconds =
        (container_duration > 0).then(|| container_duration as f64 / f64::from(ffi::AV_TIME_BASE));

    let header_count = header_frame_count(&stream, fps, container_duration);
    let data_tc: Vec<Option<String>> = input
        .streams()
        .filter(|s| s.parameters().medium() == ff::media::Type::Data)
        .map(|s| s.metadata().get("timecode").map(str::to_string))
        .collect();
    let video_tc = stream_tag(&input, vi, "timecode");
    let container_tc = input.metadata().get("timecode").map(str::to_string);
    let timecode = pick_timecode(
        video_tc.as_deref(),
        &data_tc.iter().map(|t| t.as_deref()).collect::<Vec<_>>(),
        container_tc.as_deref(),
    );
    let index_end = index_data_end(&stream);
    let container = input.format().name().to_string();

    if let Some(detail) = mov_truncation(path) {
        return Err(MediaError::Truncated {
            path: path.to_path_buf(),
            detail,
        });
    }
    if let Some(end) = index_end {
        if end > file_len {
            return Err(MediaError::Truncated {
                path: path.to_path_buf(),
                detail: format!(
                    "the frame index points at data up to byte {end} but the file is only \
                     {file_len} bytes"
                ),
            });
        }
    }

    let frame_count = match header_count {
        Some(n) => n,
        None => count_packets(&mut input, vi, path)?,
    };
    let duration_seconds = stream_seconds
        .or(container_seconds)
        .unwrap_or(frame_count as f64 / fps.as_f64());

    let pixel_aspect = if sar.num > 0 && sar.den > 0 {
        sar.num as f32 / sar.den as f32
    } else {
        1.0
    };
    Ok(MovieInfo {
        codec,
        profile,
        width,
        height,
        fps,
        frame_count,
        duration_seconds,
        timecode,
        color_primaries: colour_name(prim, color_primaries_name),
        color_transfer: colour_name(trc, color_transfer_name),
        color_space: colour_name(mat, color_space_name),
        // SAFETY: FFmpeg returns NULL for out-of-range formats.
        pix_fmt: c_text(unsafe { pix_fmt_name(pix) }).unwrap_or_else(|| "unknown".into()),
        pixel_aspect,
        container,
    })
}

/// Frame count from the header: `nb_frames`, else duration × fps (stream, then container).
fn header_frame_count(
    stream: &ff::Stream<'_>,
    fps: FrameRate,
    container_duration: i64,
) -> Option<u64> {
    let nb = stream.frames();
    if nb > 0 {
        return u64::try_from(nb).ok();
    }
    let tb = stream.time_base();
    let d = stream.duration();
    if d > 0 && tb.numerator() > 0 && tb.denominator() > 0 {
        let n = mul_div_round(
            i128::from(d) * i128::from(tb.numerator()),
            i128::from(fps.num),
            i128::from(tb.denominator()) * i128::from(fps.den),
        )?;
        return u64::try_from(n).ok().filter(|n| *n > 0);
    }
    if container_duration > 0 {
        let n = mul_div_round(
            i128::from(container_duration),
            i128::from(fps.num),
            i128::from(ffi::AV_TIME_BASE) * i128::from(fps.den),
        )?;
        return u64::try_from(n).ok().filter(|n| *n > 0);
    }
    None
}

/// The largest `pos + size` of the stream's index entries (where the demuxer keeps
/// one, as MOV does): frame data the header promises.
fn index_data_end(stream: &ff::Stream<'_>) -> Option<u64> {
    // SAFETY: index entries of an open stream; each pointer is read before any other
    // call on the context.
    unsafe {
        let st = stream.as_ptr() as *mut ffi::AVStream;
        let n = ffi::avformat_index_get_entries_count(st);
        let mut end: Option<u64> = None;
        for i in 0..n.max(0) {
            let e = ffi::avformat_index_get_entry(st, i);
            if e.is_null() {
                continue;
            }
            let pos = (*e).pos;
            let size = i64::from((*e).size());
            if pos >= 0 && size >= 0 {
                let this = (pos as u64).saturating_add(size as u64);
                end = Some(end.map_or(this, |m| m.max(this)));
            }
        }
        end
    }
}

/// Counts the packets of a stream (the last resort for the frame count).
fn count_packets(
    input: &mut ff::format::context::Input,
    stream_index: usize,
    path: &Path,
) -> Result<u64, MediaError> {
    let mut packet = ff::Packet::empty();
    let mut count = 0u64;
    let mut bad = 0u32;
    loop {
        match packet.read(input) {
            Ok(()) => {
                if packet.stream() == stream_index {
                    count += 1;
                }
            }
            Err(ff::Error::Eof) => return Ok(count),
            Err(ff::Error::InvalidData) if bad < 1000 => bad += 1,
            Err(e) => return Err(ffmpeg_err(path, "reading packets to count frames", e)),
        }
    }
}

// ---------------------------------------------------------------------------------
// Decoding

/// The conversion from a decoded frame to float RGB, cached per input layout.
struct ToRgb {
    key: (ff::format::Pixel, u32, u32, c_int, c_int),
    sws: ff::software::scaling::Context,
    out: ff::frame::Video,
}

/// The swscale matrix (`SWS_CS_*`) for a colour-space tag, falling back to BT.709 for
/// HD and BT.601 for SD when untagged.
fn sws_matrix(space: c_uint, width: u32, height: u32) -> c_int {
    use ffi::AVColorSpace as S;
    const BT709: c_uint = S::AVCOL_SPC_BT709 as c_uint;
    const BT470BG: c_uint = S::AVCOL_SPC_BT470BG as c_uint;
    const SMPTE170M: c_uint = S::AVCOL_SPC_SMPTE170M as c_uint;
    const SMPTE240M: c_uint = S::AVCOL_SPC_SMPTE240M as c_uint;
    const FCC: c_uint = S::AVCOL_SPC_FCC as c_uint;
    const BT2020NC: c_uint = S::AVCOL_SPC_BT2020_NCL as c_uint;
    const BT2020C: c_uint = S::AVCOL_SPC_BT2020_CL as c_uint;
    match space {
        BT709 => ffi::SWS_CS_ITU709,
        BT470BG | SMPTE170M => ffi::SWS_CS_ITU601,
        SMPTE240M => ffi::SWS_CS_SMPTE240M,
        FCC => ffi::SWS_CS_FCC,
        BT2020NC | BT2020C => ffi::SWS_CS_BT2020,
        _ => default_matrix(width, height),
    }
}

/// BT.709 for HD sizes, BT.601 for SD: what players assume for untagged video.
fn default_matrix(width: u32, height: u32) -> c_int {
    if width >= 1280 || height > 576 {
        ffi::SWS_CS_ITU709
    } else {
        ffi::SWS_CS_ITU601
    }
}

/// Pixel format facts swscale's range handling needs: (is RGB, is a `yuvj` format).
fn pix_kind(fmt: ff::format::Pixel) -> (bool, bool) {
    let av: ffi::AVPixelFormat = fmt.into();
    // SAFETY: descriptor lookup accepts any format and returns NULL when unknown.
    let rgb = unsafe {
        let d = ffi::av_pix_fmt_desc_get(av);
        !d.is_null() && ((*d).flags & ffi::AV_PIX_FMT_FLAG_RGB as u64) != 0
    };
    let j = matches!(
        fmt,
        ff::format::Pixel::YUVJ420P
            | ff::format::Pixel::YUVJ422P
            | ff::format::Pixel::YUVJ444P
            | ff::format::Pixel::YUVJ440P
            | ff::format::Pixel::YUVJ411P
    );
    (rgb, j)
}

/// Sets swscale's matrices and ranges (trap 2: swscale otherwise assumes BT.601).
///
/// # Safety
/// `sws` must be a live swscale context.
pub(crate) unsafe fn set_colour_details(
    sws: *mut ffi::SwsContext,
    src_matrix: c_int,
    src_full: bool,
    dst_matrix: c_int,
    dst_full: bool,
) {
    // SAFETY: the coefficient tables are static; the context is live (caller).
    unsafe {
        let src = ffi::sws_getCoefficients(src_matrix);
        let dst = ffi::sws_getCoefficients(dst_matrix);
        // Returns -1 for RGB→RGB, which needs no matrix: nothing to do then.
        let _ = ffi::sws_setColorspaceDetails(
            sws,
            src,
            c_int::from(src_full),
            dst,
            c_int::from(dst_full),
            0,
            1 << 16,
            1 << 16,
        );
    }
}

/// Allocates a video frame, failing cleanly instead of leaving an empty frame.
pub(crate) fn alloc_frame(
    fmt: ff::format::Pixel,
    width: u32,
    height: u32,
) -> Option<ff::frame::Video> {
    let f = ff::frame::Video::new(fmt, width, height);
    // SAFETY: reading the data pointer of a frame we own.
    let ok = unsafe { !(*f.as_ptr()).data[0].is_null() };
    ok.then_some(f)
}

impl ToRgb {
    fn convert(
        cache: &mut Option<ToRgb>,
        frame: &ff::frame::Video,
        path: &Path,
    ) -> Result<RgbImage, MediaError> {
        let fmt = frame.format();
        let (w, h) = (frame.width(), frame.height());
        if fmt == ff::format::Pixel::None || w == 0 || h == 0 {
            return Err(MediaError::Corrupt {
                path: path.to_path_buf(),
                format: format_label(path),
                detail: "the decoder returned a frame without size or pixel format".into(),
            });
        }
        // SAFETY: raw reads of the decoded frame's tags.
        let (space, range) = unsafe {
            let p = frame.as_ptr();
            (
                raw_enum(ptr::addr_of!((*p).colorspace)),
                raw_enum(ptr::addr_of!((*p).color_range)),
            )
        };
        let (is_rgb, is_j) = pix_kind(fmt);
        let matrix = sws_matrix(space, w, h);
        let full = is_rgb || is_j || range == ffi::AVColorRange::AVCOL_RANGE_JPEG as c_uint;
        let key = (fmt, w, h, matrix, c_int::from(full));
        if cache.as_ref().map(|c| c.key) != Some(key) {
            let flags = ff::software::scaling::Flags::BICUBIC
                | ff::software::scaling::Flags::ACCURATE_RND
                | ff::software::scaling::Flags::FULL_CHR_H_INT;
            let mut sws = ff::software::scaling::Context::get(
                fmt,
                w,
                h,
                ff::format::Pixel::GBRP16LE,
                w,
                h,
                flags,
            )
            .map_err(|e| MediaError::Unsupported {
                path: path.to_path_buf(),
                detail: format!(
                    "cannot convert the decoded pixel format {fmt:?} to RGB ({})",
                    ff_message(e)
                ),
            })?;
            // SAFETY: the context was just created.
            unsafe { set_colour_details(sws.as_mut_ptr(), matrix, full, matrix, true) };
            let out = alloc_frame(ff::format::Pixel::GBRP16LE, w, h).ok_or_else(|| {
                MediaError::Ffmpeg {
                    path: path.to_path_buf(),
                    detail: format!("cannot allocate a {w}×{h} RGB frame"),
                }
            })?;
            *cache = Some(ToRgb { key, sws, out });
        }
        let Some(c) = cache.as_mut() else {
            return Err(MediaError::Ffmpeg {
                path: path.to_path_buf(),
                detail: "internal: no RGB converter".into(),
            });
        };
        c.sws
            .run(frame, &mut c.out)
            .map_err(|e| ffmpeg_err(path, "converting a frame to RGB", e))?;

        let (wu, hu) = (w as usize, h as usize);
        let mut data = vec![0f32; wu * hu * 3];
        // GBRP16: plane 0 = G, 1 = B, 2 = R.
        for (plane, channel) in [(0usize, 1usize), (1, 2), (2, 0)] {
            let stride = c.out.stride(plane);
            let bytes = c.out.data(plane);
            for y in 0..hu {
                let Some(row) = bytes.get(y * stride..y * stride + wu * 2) else {
                    break;
                };
                for (x, px) in row.chunks_exact(2).enumerate() {
                    let v = u16::from_le_bytes([px[0], px[1]]);
                    data[(y * wu + x) * 3 + channel] = f32::from(v) / 65535.0;
                }
            }
        }
        let sar = frame.aspect_ratio();
        let pixel_aspect = if sar.numerator() > 0 && sar.denominator() > 0 {
            sar.numerator() as f32 / sar.denominator() as f32
        } else {
            1.0
        };
        Ok(RgbImage {
            width: w,
            height: h,
            pixel_aspect,
            data,
        })
    }
}

/// Where the reader stands, for the seek-or-read-on decision.
#[derive(Debug, Clone, Copy)]
enum Cursor {
    /// Nothing read yet.
    Start,
    /// Just seeked towards this frame; nothing read since.
    Seeked(u64),
    /// The last packet read was this frame.
    At(u64),
}

/// How a pass over the file ended.
enum Pass {
    /// Every wanted frame was decoded.
    Done,
    /// The file ended.
    Eof,
    /// A seek or missing timestamps made the position untrustworthy: read again
    /// from the start without seeking.
    Restart,
}

/// One open movie, ready to decode frames of its first video stream.
struct FrameReader<'p> {
    path: &'p Path,
    input: ff::format::context::Input,
    stream_index: usize,
    decoder: ff::decoder::Video,
    clock: Clock,
    intra_only: bool,
    header_count: Option<u64>,
    rgb: Option<ToRgb>,
    last_decode_error: Option<String>,
    /// The highest frame index seen (packets or frames), for end-of-file messages.
    highest_seen: Option<u64>,
}

impl<'p> FrameReader<'p> {
    fn open(path: &'p Path) -> Result<Self, MediaError> {
        let (input, _) = open_input(path)?;
        let stream_index = first_video_stream(&input).ok_or_else(|| MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: "the file has no video stream; nothing to decode".into(),
        })?;
        let stream = input
            .stream(stream_index)
            .ok_or_else(|| MediaError::Corrupt {
                path: path.to_path_buf(),
                format: format_label(path),
                detail: "the video stream vanished".into(),
            })?;
        let fps = usable_rate(stream.avg_frame_rate())
            .or_else(|| usable_rate(stream.rate()))
            .ok_or_else(|| MediaError::Unsupported {
                path: path.to_path_buf(),
                detail: "the video stream has no usable frame rate, so frames cannot be \
                         found by index"
                    .into(),
            })?;
        let tb = stream.time_base();
        if tb.numerator() <= 0 || tb.denominator() <= 0 {
            return Err(MediaError::Corrupt {
                path: path.to_path_buf(),
                format: format_label(path),
                detail: "the video stream has no valid time base".into(),
            });
        }
        let start = stream.start_time();
        let clock = Clock {
            tb_num: i128::from(tb.numerator()),
            tb_den: i128::from(tb.denominator()),
            fps,
            origin: if start == ffi::AV_NOPTS_VALUE {
                0
            } else {
                start
            },
        };
        let header_count = header_frame_count(&stream, fps, input.duration());
        let params = stream.parameters();
        let codec_id = params.id();
        // SAFETY: descriptor lookup returns NULL or a static descriptor.
        let intra_only = unsafe {
            let d = ffi::avcodec_descriptor_get(codec_id.into());
            !d.is_null() && ((*d).props & ffi::AV_CODEC_PROP_INTRA_ONLY) != 0
        };
        let codec = ff::decoder::find(codec_id).ok_or_else(|| MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: format!("FFmpeg has no decoder for the {codec_id:?} video codec"),
        })?;
        let mut ctx = ff::codec::context::Context::from_parameters(params)
            .map_err(|e| ffmpeg_err(path, "reading the codec parameters", e))?;
        // SAFETY: plain field write on a context we own, before opening it.
        unsafe { (*ctx.as_mut_ptr()).pkt_timebase = tb.into() };
        let mut opts = ff::Dictionary::new();
        opts.set("threads", "auto");
        let decoder = ctx
            .decoder()
            .open_as_with(codec, opts)
            .and_then(|d| d.video())
            .map_err(|e| ffmpeg_err(path, "opening the video decoder", e))?;
        Ok(FrameReader {
            path,
            input,
            stream_index,
            decoder,
            clock,
            intra_only,
            header_count,
            rgb: None,
            last_decode_error: None,
            highest_seen: None,
        })
    }

    fn note_seen(&mut self, idx: u64) {
        self.highest_seen = Some(self.highest_seen.map_or(idx, |h| h.max(idx)));
    }

    /// Seeking beats reading on when the target is this many frames ahead.
    fn seek_distance(&self) -> u64 {
        if self.intra_only {
            // Skipped packets are read but not decoded: a few are cheaper than a seek.
            4
        } else {
            // Long GOP: reading on decodes every frame; a seek decodes from the
            // keyframe before the target, which is rarely more than ~2 s away.
            48
        }
    }

    fn should_seek(&self, cursor: Cursor, target: u64) -> bool {
        match cursor {
            Cursor::Start => target >= self.seek_distance(),
            Cursor::Seeked(t) => target > t + self.seek_distance(),
            Cursor::At(p) => target > p + self.seek_distance(),
        }
    }

    /// Seeks to the keyframe at or before frame `target`.
    fn seek(&mut self, target: u64) -> bool {
        let Some(ts) = self.clock.ts(target) else {
            return false;
        };
        // SAFETY: the context is open; stream index is valid.
        let r = unsafe {
            ffi::avformat_seek_file(
                self.input.as_mut_ptr(),
                self.stream_index as c_int,
                i64::MIN,
                ts,
                ts,
                0,
            )
        };
        r >= 0
    }

    /// Pulls every frame the decoder has ready, keeping the wanted ones.
    fn receive(
        &mut self,
        remaining: &mut BTreeSet<u64>,
        out: &mut BTreeMap<u64, RgbImage>,
        stats: &mut DecodeStats,
        frame_counter: &mut Option<u64>,
    ) -> Result<bool, MediaError> {
        let mut frame = ff::frame::Video::empty();
        // Bounded: each call either yields a frame or ends the loop.
        loop {
            match self.decoder.receive_frame(&mut frame) {
                Ok(()) => {}
                Err(ff::Error::Eof) => return Ok(true),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(true),
                Err(e) => {
                    self.last_decode_error = Some(ff_message(e));
                    return Ok(true);
                }
            }
            stats.frames_decoded += 1;
            let idx = match frame.timestamp().and_then(|ts| self.clock.index(ts)) {
                Some(i) => Some(i),
                // No timestamp: count frames in output order, valid only when the
                // pass started at frame 0 without seeking.
                None => match frame_counter.as_mut() {
                    Some(c) => {
                        let i = *c;
                        *c += 1;
                        Some(i)
                    }
                    None => return Ok(false),
                },
            };
            let Some(idx) = idx else { continue };
            self.note_seen(idx);
            if remaining.remove(&idx) {
                let img = ToRgb::convert(&mut self.rgb, &frame, self.path)?;
                out.insert(idx, img);
            }
        }
    }

    /// Sends end-of-stream and collects what the decoder still holds, then resets it
    /// for more input (a seek, or nothing).
    fn drain(
        &mut self,
        remaining: &mut BTreeSet<u64>,
        out: &mut BTreeMap<u64, RgbImage>,
        stats: &mut DecodeStats,
        frame_counter: &mut Option<u64>,
    ) -> Result<bool, MediaError> {
        let _ = self.decoder.send_eof();
        let ok = self.receive(remaining, out, stats, frame_counter)?;
        self.decoder.flush();
        Ok(ok)
    }

    /// One pass over the file, collecting the frames in `remaining`.
    fn pass(
        &mut self,
        remaining: &mut BTreeSet<u64>,
        out: &mut BTreeMap<u64, RgbImage>,
        allow_seek: bool,
        stats: &mut DecodeStats,
    ) -> Result<Pass, MediaError> {
        let mut cursor = Cursor::Start;
        let mut seeked = false;
        let mut packet_counter = 0u64;
        let mut frame_counter: Option<u64> = Some(0);
        let mut bad_reads = 0u32;
        let mut packet = ff::Packet::empty();
        // Wanted frames whose packets the decoder already has: with frame threads
        // their pictures come out a few packets later, so the next thing to go
        // after is the first wanted frame *not* sent yet.
        let mut sent: BTreeSet<u64> = BTreeSet::new();
        loop {
            if remaining.is_empty() {
                return Ok(Pass::Done);
            }
            let Some(target) = remaining.iter().copied().find(|i| !sent.contains(i)) else {
                // Everything wanted is inside the decoder: flush it out and stop.
                if !self.drain(remaining, out, stats, &mut frame_counter)? {
                    return Ok(Pass::Restart);
                }
                return Ok(if remaining.is_empty() {
                    Pass::Done
                } else {
                    Pass::Eof
                });
            };
            if allow_seek && self.should_seek(cursor, target) {
                if !self.drain(remaining, out, stats, &mut frame_counter)? {
                    return Ok(Pass::Restart);
                }
                sent.clear();
                if !self.seek(target) {
                    return Ok(Pass::Restart);
                }
                stats.seeks += 1;
                seeked = true;
                frame_counter = None;
                cursor = Cursor::Seeked(target);
                continue;
            }
            match packet.read(&mut self.input) {
                Ok(()) => {}
                Err(ff::Error::Eof) => {
                    if !self.drain(remaining, out, stats, &mut frame_counter)? {
                        return Ok(Pass::Restart);
                    }
                    return Ok(if remaining.is_empty() {
                        Pass::Done
                    } else {
                        Pass::Eof
                    });
                }
                Err(ff::Error::InvalidData) if bad_reads < 1000 => {
                    bad_reads += 1;
                    continue;
                }
                Err(e) => {
                    // A read error mid-file (cut-off data) ends the pass like EOF;
                    // the missing frames are reported with the cause.
                    self.last_decode_error = Some(format!("reading: {}", ff_message(e)));
                    if !self.drain(remaining, out, stats, &mut frame_counter)? {
                        return Ok(Pass::Restart);
                    }
                    return Ok(if remaining.is_empty() {
                        Pass::Done
                    } else {
                        Pass::Eof
                    });
                }
            }
            if packet.stream() != self.stream_index {
                continue;
            }
            stats.packets_read += 1;
            let ts = packet
                .pts()
                .or_else(|| if self.intra_only { packet.dts() } else { None });
            let idx = match ts {
                Some(t) => self.clock.index(t),
                None if self.intra_only && !seeked => {
                    // Intra-only: packet order is frame order. Stamp the packet so
                    // the frame it becomes carries its index through the decoder.
                    let i = packet_counter;
                    packet.set_pts(self.clock.ts(i));
                    Some(i)
                }
                None if seeked => return Ok(Pass::Restart),
                None => None,
            };
            packet_counter += 1;
            if let (Cursor::Seeked(t), Some(i)) = (cursor, idx) {
                if i > t {
                    // The seek landed after the wanted frame: no keyframe index to trust.
                    return Ok(Pass::Restart);
                }
            }
            if let Some(i) = idx {
                cursor = Cursor::At(i);
                self.note_seen(i);
            }
            if self.intra_only && !idx.is_some_and(|i| remaining.contains(&i)) {
                // Every frame stands alone: skip the ones nobody asked for.
                continue;
            }
            stats.packets_decoded += 1;
            match self.decoder.send_packet(&packet) {
                Ok(()) => {
                    if let Some(i) = idx.filter(|i| remaining.contains(i)) {
                        sent.insert(i);
                    }
                }
                Err(e) => {
                    self.last_decode_error = Some(ff_message(e));
                    continue;
                }
            }
            if !self.receive(remaining, out, stats, &mut frame_counter)? {
                return Ok(Pass::Restart);
            }
        }
    }
}

/// Decodes the frames at the given 0-based indices (any order, duplicates allowed),
/// returning them in the order asked, as RGB code values 0..1 (full range).
///
/// Video-range YUV is expanded to full range with the tagged matrix (BT.709 for HD,
/// BT.601 for SD when untagged). `pixel_aspect` comes from the sample aspect ratio.
/// Memory: each frame is `width × height × 3` floats (≈ 25 MB at 1920×1080).
pub fn decode_frames(path: &Path, indices: &[u64]) -> Result<Vec<RgbImage>, MediaError> {
    decode_frames_with_stats(path, indices).map(|(frames, _)| frames)
}

/// [`decode_frames`], also reporting how much reading and decoding it took.
pub fn decode_frames_with_stats(
    path: &Path,
    indices: &[u64],
) -> Result<(Vec<RgbImage>, DecodeStats), MediaError> {
    let mut stats = DecodeStats::default();
    if indices.is_empty() {
        return Ok((Vec::new(), stats));
    }
    let mut reader = FrameReader::open(path)?;
    let wanted: BTreeSet<u64> = indices.iter().copied().collect();
    if let (Some(n), Some(&max)) = (reader.header_count, wanted.last()) {
        if max >= n {
            return Err(past_end(path, max, n));
        }
    }
    let mut out: BTreeMap<u64, RgbImage> = BTreeMap::new();
    let mut remaining = wanted.clone();
    let mut allow_seek = true;
    loop {
        match reader.pass(&mut remaining, &mut out, allow_seek, &mut stats)? {
            Pass::Done => break,
            Pass::Eof => {
                return Err(missing_frames(&reader, &remaining));
            }
            Pass::Restart if allow_seek => {
                stats.restarts += 1;
                allow_seek = false;
                let rgb = reader.rgb.take();
                reader = FrameReader::open(path)?;
                reader.rgb = rgb;
            }
            Pass::Restart => {
                return Err(MediaError::Corrupt {
                    path: path.to_path_buf(),
                    format: format_label(path),
                    detail: "the video frames carry no usable timestamps, so frames cannot \
                             be found by index"
                        .into(),
                });
            }
        }
    }
    let mut frames = Vec::with_capacity(indices.len());
    for i in indices {
        let img = out
            .get(i)
            .cloned()
            .ok_or_else(|| missing_frames(&reader, &BTreeSet::from([*i])))?;
        frames.push(img);
    }
    Ok((frames, stats))
}

fn past_end(path: &Path, index: u64, count: u64) -> MediaError {
    MediaError::Unsupported {
        path: path.to_path_buf(),
        detail: format!(
            "frame index {index} is past the end: the movie has {count} frames (0–{}); \
             check the EDL event or frame range against the movie",
            count.saturating_sub(1)
        ),
    }
}

/// The error for frames a pass could not find.
fn missing_frames(reader: &FrameReader<'_>, remaining: &BTreeSet<u64>) -> MediaError {
    let path = reader.path;
    let first = remaining.first().copied().unwrap_or(0);
    let seen = reader
        .highest_seen
        .map_or("no frame".to_string(), |h| format!("frames up to {h}"));
    let cause = reader
        .last_decode_error
        .as_deref()
        .map(|e| format!(" (FFmpeg: {e})"))
        .unwrap_or_default();
    match reader.header_count {
        Some(n) if first < n => MediaError::Truncated {
            path: path.to_path_buf(),
            detail: format!(
                "frame {first} could not be read or decoded although the header lists {n} \
                 frames (found {seen}{cause}); the file is probably cut short"
            ),
        },
        Some(n) => past_end(path, first, n),
        None => MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: format!(
                "frame index {first} is past the end: the movie ends after {seen}{cause}; \
                 check the EDL event or frame range against the movie"
            ),
        },
    }
}

// ---------------------------------------------------------------------------------
// Test pattern

/// Frames of the test pattern repeat after this many (6 levels per channel).
pub const TEST_PATTERN_PERIOD: u64 = 216;

const LEVELS: [f32; 6] = [0.1, 0.26, 0.42, 0.58, 0.74, 0.9];

/// The flat RGB colour (code values 0..1) of frame `n` of a [`write_test_movie`] file:
/// `n mod 216` written in base 6, one digit per channel. The levels are 0.16 apart,
/// far more than ProRes/DNxHD/MJPEG/H.264 round trips move a flat colour.
pub fn test_frame_colour(n: u64) -> [f32; 3] {
    let k = (n % TEST_PATTERN_PERIOD) as usize;
    [LEVELS[k / 36], LEVELS[(k / 6) % 6], LEVELS[k % 6]]
}

/// The frame number (mod 216) whose [`test_frame_colour`] is within 0.06 of `rgb`
/// per channel; sample away from the bottom eighth, where the moving bar is.
pub fn test_frame_index(rgb: [f32; 3]) -> Option<u64> {
    let digit = |v: f32| {
        LEVELS
            .iter()
            .position(|l| (l - v).abs() < 0.06)
            .map(|d| d as u64)
    };
    Some(digit(rgb[0])? * 36 + digit(rgb[1])? * 6 + digit(rgb[2])?)
}

// ---------------------------------------------------------------------------------
// Writing

/// The container short name for an output path.
fn container_for(path: &Path) -> Result<&'static str, MediaError> {
    match extension_lower(path).as_str() {
        "mov" => Ok("mov"),
        "mp4" => Ok("mp4"),
        "mxf" => Ok("mxf"),
        other => Err(MediaError::Unsupported {
            path: path.to_path_buf(),
            detail: format!(
                "cannot write a movie with extension {other:?}; use .mov, .mp4 or .mxf"
            ),
        }),
    }
}

/// The pixel format an encoder gets by default.
fn default_pix_fmt(spec: &MovieSpec) -> ff::format::Pixel {
    use ff::format::Pixel as P;
    let profile = spec.profile.as_deref().unwrap_or("").to_ascii_lowercase();
    match spec.codec.as_str() {
        "prores_ks" | "prores" | "prores_aw" => {
            if matches!(profile.as_str(), "4" | "5" | "4444" | "4444xq" | "xq") {
                P::YUV444P10LE
            } else {
                P::YUV422P10LE
            }
        }
        "dnxhd" => match profile.as_str() {
            "dnxhr_444" => P::YUV444P10LE,
            "dnxhr_hqx" => P::YUV422P10LE,
            _ => P::YUV422P,
        },
        "mjpeg" => P::YUVJ420P,
        _ => P::YUV420P,
    }
}

fn spec_error(path: &Path, detail: impl Into<String>) -> MediaError {
    MediaError::Unsupported {
        path: path.to_path_buf(),
        detail: detail.into(),
    }
}

/// Checks a spec before touching FFmpeg; returns the validated pixel format.
fn check_spec(path: &Path, spec: &MovieSpec) -> Result<ff::format::Pixel, MediaError> {
    if spec.width == 0 || spec.height == 0 || spec.width > 16384 || spec.height > 16384 {
        return Err(spec_error(
            path,
            format!("size {}×{} is outside 1..16384", spec.width, spec.height),
        ));
    }
    if spec.frames == 0 || spec.frames > MovieSpec::MAX_FRAMES {
        return Err(spec_error(
            path,
            format!(
                "frame count {} is outside 1..{}",
                spec.frames,
                MovieSpec::MAX_FRAMES
            ),
        ));
    }
    let (num, den) = (spec.fps.num, spec.fps.den);
    if num == 0 || den == 0 || num > i32::MAX as u32 || den > i32::MAX as u32 {
        return Err(spec_error(path, format!("invalid frame rate {num}/{den}")));
    }
    for (what, s) in [
        ("codec", Some(spec.codec.as_str())),
        ("profile", spec.profile.as_deref()),
        ("pix_fmt", spec.pix_fmt.as_deref()),
    ] {
        if s.is_some_and(|s| s.contains('\0')) {
            return Err(spec_error(
                path,
                format!("the {what} name contains a NUL byte"),
            ));
        }
    }
    if let Some(tc) = &spec.timecode {
        let drop = tc.contains(';');
        Timecode::parse(tc, spec.fps, drop)
            .map_err(|e| spec_error(path, format!("start timecode: {e}")))?;
    }
    let pix = match &spec.pix_fmt {
        None => default_pix_fmt(spec),
        Some(name) => {
            let c = CString::new(name.as_str())
                .map_err(|_| spec_error(path, "pix_fmt contains a NUL byte"))?;
            // SAFETY: av_get_pix_fmt takes a C string and returns AV_PIX_FMT_NONE
            // (as a valid enum value) for unknown names.
            let f = unsafe { ffi::av_get_pix_fmt(c.as_ptr()) };
            if f == ffi::AVPixelFormat::AV_PIX_FMT_NONE {
                return Err(spec_error(path, format!("unknown pixel format {name:?}")));
            }
            ff::format::Pixel::from(f)
        }
    };
    let (_, chroma_w, chroma_h) = chroma_shift(pix);
    if spec.codec == "libx264"
        && (chroma_w > 0 && spec.width % 2 == 1 || chroma_h > 0 && spec.height % 2 == 1)
    {
        return Err(spec_error(
            path,
            format!(
                "libx264 with subsampled chroma needs an even size, not {}×{}",
                spec.width, spec.height
            ),
        ));
    }
    Ok(pix)
}

/// (known, log2 chroma width shift, log2 chroma height shift) of a pixel format.
fn chroma_shift(fmt: ff::format::Pixel) -> (bool, u8, u8) {
    // SAFETY: descriptor lookup returns NULL or a static descriptor.
    unsafe {
        let d = ffi::av_pix_fmt_desc_get(fmt.into());
        if d.is_null() {
            (false, 0, 0)
        } else {
            (true, (*d).log2_chroma_w, (*d).log2_chroma_h)
        }
    }
}

/// Fills a GBRP16LE frame with test-pattern frame `n`: a flat colour plus a white bar
/// moving across the bottom eighth.
fn fill_pattern(frame: &mut ff::frame::Video, n: u64) {
    let (w, h) = (frame.width() as usize, frame.height() as usize);
    let colour = test_frame_colour(n);
    let bar_w = (w / 32).max(2).min(w);
    let bar_x = ((n as usize).wrapping_mul(w / 48 + 1)) % w;
    let bar_top = h - (h / 8).max(1).min(h);
    // GBRP16: plane 0 = G, 1 = B, 2 = R.
    for (plane, channel) in [(0usize, 1usize), (1, 2), (2, 0)] {
        let code = (colour[channel] * 65535.0).round() as u16;
        let mut flat = Vec::with_capacity(w * 2);
        let mut barred = Vec::with_capacity(w * 2);
        for x in 0..w {
            flat.extend_from_slice(&code.to_le_bytes());
            let in_bar = x >= bar_x && x < bar_x + bar_w;
            let v = if in_bar { 62258u16 } else { code };
            barred.extend_from_slice(&v.to_le_bytes());
        }
        let stride = frame.stride(plane);
        let data = frame.data_mut(plane);
        for y in 0..h {
            let row = if y >= bar_top { &barred } else { &flat };
            if let Some(dst) = data.get_mut(y * stride..y * stride + w * 2) {
                dst.copy_from_slice(row);
            }
        }
    }
}

/// Writes a synthetic movie (fixtures, demo, benchmarks).
///
/// Frame `n` is filled with [`test_frame_colour`]`(n)` plus a moving bar at the
/// bottom. The file is written under a temporary name beside `path` and renamed
/// into place when complete, so a failed write never leaves a half movie.
pub fn write_test_movie(path: &Path, spec: &MovieSpec) -> Result<(), MediaError> {
    init();
    let container = container_for(path)?;
    let pix = check_spec(path, spec)?;
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| spec_error(path, "the output file name is not valid Unicode"))?;
    // Unique per process and call, so parallel writers never share a temporary file.
    static SERIAL: AtomicU64 = AtomicU64::new(0);
    let serial = SERIAL.fetch_add(1, Ordering::Relaxed);
    let tmp: PathBuf =
        path.with_file_name(format!(".{name}.{}-{serial}.partial", std::process::id()));
    let result = write_movie(&tmp, path, container, pix, spec);
    match result {
        Ok(()) => std::fs::rename(&tmp, path).map_err(MediaError::io(path)),
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

/// Adds the video stream of the opened encoder `enc` to `octx` with the movie's
/// time base and frame rate and, when given, the `timecode` tag from which the mov
/// and mp4 muxers write a tmcd track (trap 6). Returns the stream's index.
pub(crate) fn add_video_stream(
    octx: &mut ff::format::context::Output,
    codec: ff::Codec,
    enc: &ff::encoder::Video,
    time_base: ff::Rational,
    fps: ff::Rational,
    timecode: Option<&str>,
) -> Result<usize, ff::Error> {
    let mut ost = octx.add_stream(codec)?;
    ost.set_parameters(enc);
    ost.set_time_base(time_base);
    ost.set_avg_frame_rate(fps);
    ost.set_rate(fps);
    if let Some(tc) = timecode {
        let mut md = ff::Dictionary::new();
        md.set("timecode", tc);
        ost.set_metadata(md);
    }
    Ok(ost.index())
}

fn write_movie(
    tmp: &Path,
    path: &Path,
    container: &str,
    pix: ff::format::Pixel,
    spec: &MovieSpec,
) -> Result<(), MediaError> {
    use ff::color;
    let fail = |what: &str| {
        let what = what.to_string();
        move |e: ff::Error| ffmpeg_err(path, &what, e)
    };
    let url = tmp
        .to_str()
        .map(|s| format!("file:{s}"))
        .ok_or_else(|| spec_error(path, "the output path is not valid Unicode"))?;
    let codec = ff::encoder::find_by_name(&spec.codec).ok_or_else(|| {
        spec_error(
            path,
            format!("this FFmpeg has no encoder named {:?}", spec.codec),
        )
    })?;
    let mut octx = ff::format::output_as(&url, container).map_err(fail("creating the output"))?;
    let global_header = octx
        .format()
        .flags()
        .contains(ff::format::Flags::GLOBAL_HEADER);

    let fps = ff::Rational::new(spec.fps.num as i32, spec.fps.den as i32);
    let time_base = ff::Rational::new(spec.fps.den as i32, spec.fps.num as i32);
    let full_range = matches!(pix_kind(pix), (_, true)) || spec.codec == "mjpeg";
    let range = if full_range {
        color::Range::JPEG
    } else {
        color::Range::MPEG
    };
    // JPEG/JFIF is BT.601 by definition (FFmpeg's MJPEG decoder tags it bt470bg),
    // so MJPEG is always encoded with that matrix whatever the other tags say.
    let jpeg = spec.codec == "mjpeg";
    let matrix = if jpeg {
        ffi::SWS_CS_ITU601
    } else if spec.bt709_tags {
        ffi::SWS_CS_ITU709
    } else {
        default_matrix(spec.width, spec.height)
    };
    let space_tag = if jpeg {
        color::Space::BT470BG
    } else {
        color::Space::BT709
    };

    let ctx = ff::codec::context::Context::new_with_codec(codec);
    let mut enc = ctx
        .encoder()
        .video()
        .map_err(fail("creating the encoder"))?;
    enc.set_width(spec.width);
    enc.set_height(spec.height);
    enc.set_format(pix);
    enc.set_time_base(time_base);
    enc.set_frame_rate(Some(fps));
    enc.set_aspect_ratio(ff::Rational::new(1, 1));
    enc.set_color_range(range);
    if spec.bt709_tags {
        enc.set_color_primaries(color::Primaries::BT709);
        enc.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
        enc.set_colorspace(space_tag);
    }
    if let Some(b) = spec.bit_rate {
        enc.set_bit_rate(usize::try_from(b).unwrap_or(usize::MAX));
    }
    let mut flags = ff::codec::Flags::empty();
    if spec.codec == "mjpeg" {
        // Fixed quantiser 2 (near-lossless) instead of the 200 kbit/s default.
        flags |= ff::codec::Flags::QSCALE;
        enc.set_global_quality(2 * ffi::FF_QP2LAMBDA);
    }
    if spec.codec == "libx264" {
        enc.set_gop(12);
        enc.set_max_b_frames(2);
    }
    if global_header {
        flags |= ff::codec::Flags::GLOBAL_HEADER;
    }
    enc.set_flags(flags);
    let mut opts = ff::Dictionary::new();
    // Trap 1: encoders default to one thread.
    opts.set("threads", "auto");
    if let Some(p) = &spec.profile {
        opts.set("profile", p);
    }
    if spec.codec == "libx264" {
        opts.set("preset", "veryfast");
        opts.set("crf", "16");
    }
    let mut enc = enc.open_with(opts).map_err(|e| {
        spec_error(
            path,
            format!(
                "{} refused these settings ({}×{}, {} fps, {:?}, bit rate {:?}, profile {:?}): \
                 {}; see MovieSpec's documentation for valid combinations",
                spec.codec,
                spec.width,
                spec.height,
                spec.fps,
                pix,
                spec.bit_rate,
                spec.profile,
                ff_message(e)
            ),
        )
    })?;

    let stream_index = add_video_stream(
        &mut octx,
        codec,
        &enc,
        time_base,
        fps,
        spec.timecode.as_deref(),
    )
    .map_err(fail("adding the video stream"))?;
    octx.write_header().map_err(fail("writing the header"))?;
    let stream_tb = octx
        .stream(stream_index)
        .map(|s| s.time_base())
        .unwrap_or(time_base);

    let mut sws = ff::software::scaling::Context::get(
        ff::format::Pixel::GBRP16LE,
        spec.width,
        spec.height,
        pix,
        spec.width,
        spec.height,
        ff::software::scaling::Flags::BICUBIC | ff::software::scaling::Flags::ACCURATE_RND,
    )
    .map_err(fail("creating the RGB→YUV converter"))?;
    // SAFETY: live context; trap 2 (BT.601 by default).
    unsafe { set_colour_details(sws.as_mut_ptr(), matrix, true, matrix, full_range) };
    let mut rgb = alloc_frame(ff::format::Pixel::GBRP16LE, spec.width, spec.height)
        .ok_or_else(|| spec_error(path, "cannot allocate an RGB frame of that size"))?;

    let mut packet = ff::Packet::empty();
    let mut write_ready = |enc: &mut ff::encoder::Video,
                           octx: &mut ff::format::context::Output|
     -> Result<(), MediaError> {
        loop {
            match enc.receive_packet(&mut packet) {
                Ok(()) => {
                    packet.set_stream(stream_index);
                    packet.rescale_ts(time_base, stream_tb);
                    packet
                        .write_interleaved(octx)
                        .map_err(fail("writing a packet"))?;
                }
                Err(ff::Error::Eof) => return Ok(()),
                Err(ff::Error::Other { errno }) if errno == ff::error::EAGAIN => return Ok(()),
                Err(e) => return Err(ffmpeg_err(path, "encoding", e)),
            }
        }
    };

    for n in 0..spec.frames {
        fill_pattern(&mut rgb, n);
        // A fresh frame each time: the encoder may still hold a reference to the
        // previous one (frame threads).
        let mut yuv = alloc_frame(pix, spec.width, spec.height)
            .ok_or_else(|| spec_error(path, "cannot allocate a frame of that size"))?;
        sws.run(&rgb, &mut yuv)
            .map_err(fail("converting RGB to YUV"))?;
        yuv.set_pts(Some(n as i64));
        yuv.set_color_range(range);
        if spec.bt709_tags {
            // Trap 3: prores_ks reads the tags from each frame.
            yuv.set_color_primaries(color::Primaries::BT709);
            yuv.set_color_transfer_characteristic(color::TransferCharacteristic::BT709);
            yuv.set_color_space(space_tag);
        }
        enc.send_frame(&yuv).map_err(fail("encoding a frame"))?;
        write_ready(&mut enc, &mut octx)?;
    }
    enc.send_eof().map_err(fail("flushing the encoder"))?;
    write_ready(&mut enc, &mut octx)?;
    octx.write_trailer().map_err(fail("writing the trailer"))?;
    drop(octx);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor as IoCursor;

    #[test]
    fn clock_round_trips_at_23_976() {
        // MOV timescale for 23.976 is 24000; each frame lasts 1001 ticks.
        let c = Clock {
            tb_num: 1,
            tb_den: 24000,
            fps: FrameRate::FPS_23_976,
            origin: 0,
        };
        for i in [0u64, 1, 17, 1000, 86_399, 10_000_000] {
            let ts = c.ts(i).unwrap();
            assert_eq!(ts, i as i64 * 1001);
            assert_eq!(c.index(ts), Some(i));
        }
        // Half a tick off still maps to the nearest frame; before frame 0 is none.
        assert_eq!(c.index(1001 * 5 + 400), Some(5));
        assert_eq!(c.index(-2000), None);
    }

    #[test]
    fn clock_with_origin_and_coarse_time_base() {
        let c = Clock {
            tb_num: 1,
            tb_den: 12800,
            fps: FrameRate::FPS_25,
            origin: 512,
        };
        assert_eq!(c.ts(3), Some(512 + 3 * 512));
        assert_eq!(c.index(512 + 3 * 512), Some(3));
    }

    #[test]
    fn mul_div_round_rounds_to_nearest() {
        assert_eq!(mul_div_round(7, 1, 2), Some(4));
        assert_eq!(mul_div_round(5, 1, 3), Some(2));
        assert_eq!(mul_div_round(-7, 1, 2), Some(-3));
        assert_eq!(mul_div_round(1, 1, 0), None);
    }

    #[test]
    fn timecode_prefers_video_then_data_then_container() {
        assert_eq!(
            pick_timecode(
                Some("01:00:00:00"),
                &[Some("02:00:00:00")],
                Some("03:00:00:00")
            ),
            Some("01:00:00:00".into())
        );
        assert_eq!(
            pick_timecode(None, &[None, Some("02:00:00;00")], Some("03:00:00:00")),
            Some("02:00:00;00".into())
        );
        assert_eq!(
            pick_timecode(Some("  "), &[], Some("03:00:00:00")),
            Some("03:00:00:00".into())
        );
        assert_eq!(pick_timecode(None, &[], None), None);
    }

    fn atom(kind: &[u8; 4], body: usize) -> Vec<u8> {
        let mut v = ((body + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(kind);
        v.extend(std::iter::repeat_n(0u8, body));
        v
    }

    #[test]
    fn atom_walk_finds_truncation_and_ignores_other_files() {
        let mut whole = atom(b"ftyp", 12);
        whole.extend(atom(b"mdat", 100));
        whole.extend(atom(b"moov", 40));
        let len = whole.len() as u64;
        assert_eq!(atoms_truncation(&mut IoCursor::new(&whole), len), None);

        let cut = &whole[..whole.len() / 2];
        let why = atoms_truncation(&mut IoCursor::new(cut), cut.len() as u64).unwrap();
        assert!(why.contains("'mdat'"), "{why}");

        let text = b"hello world, this is not a movie at all\n".to_vec();
        assert_eq!(
            atoms_truncation(&mut IoCursor::new(&text), text.len() as u64),
            None
        );

        // 64-bit size that runs past the end.
        let mut big = atom(b"ftyp", 12);
        big.extend_from_slice(&1u32.to_be_bytes());
        big.extend_from_slice(b"mdat");
        big.extend_from_slice(&(1u64 << 40).to_be_bytes());
        assert!(atoms_truncation(&mut IoCursor::new(&big), big.len() as u64).is_some());
    }

    #[test]
    fn test_pattern_round_trips() {
        for n in 0..TEST_PATTERN_PERIOD {
            let c = test_frame_colour(n);
            assert_eq!(test_frame_index(c), Some(n));
            let nudged = [c[0] + 0.04, c[1] - 0.04, c[2] + 0.03];
            assert_eq!(test_frame_index(nudged), Some(n));
        }
        assert_eq!(test_frame_index([0.5, 0.5, 0.5]), None);
        assert_eq!(
            test_frame_colour(TEST_PATTERN_PERIOD + 3),
            test_frame_colour(3)
        );
    }

    #[test]
    fn matrix_falls_back_by_size() {
        assert_eq!(sws_matrix(2, 1920, 1080), ffi::SWS_CS_ITU709);
        assert_eq!(sws_matrix(2, 720, 576), ffi::SWS_CS_ITU601);
        assert_eq!(sws_matrix(1, 720, 576), ffi::SWS_CS_ITU709);
        assert_eq!(sws_matrix(6, 1920, 1080), ffi::SWS_CS_ITU601);
        assert_eq!(sws_matrix(999, 1920, 1080), ffi::SWS_CS_ITU709);
    }

    #[test]
    fn colour_names_skip_unspecified() {
        init();
        assert_eq!(
            colour_name(1, color_primaries_name).as_deref(),
            Some("bt709")
        );
        assert_eq!(colour_name(2, color_primaries_name), None);
        assert_eq!(colour_name(200, color_primaries_name), None);
        assert_eq!(colour_name(1, color_space_name).as_deref(), Some("bt709"));
    }

    #[test]
    fn spec_checks_reject_bad_input() {
        let p = Path::new("x.mov");
        let bad_tc = MovieSpec::default().with_timecode("01:00:00;00");
        assert!(check_spec(p, &bad_tc).is_err(), "drop frame at 24 fps");
        let odd_x264 = MovieSpec::h264(721, 405, FrameRate::FPS_24, 2);
        assert!(check_spec(p, &odd_x264).is_err());
        let zero = MovieSpec {
            frames: 0,
            ..MovieSpec::default()
        };
        assert!(check_spec(p, &zero).is_err());
        assert!(container_for(Path::new("x.avi")).is_err());
        assert_eq!(container_for(Path::new("X.MOV")).unwrap(), "mov");
    }
}
