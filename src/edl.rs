//! CMX3600 EDLs: a tolerant parser, the helpers the scan uses to map each event
//! of a movie's EDL to a scanlist row, and a writer for fixtures and the demo.
//!
//! # Reading
//! [`parse`] is pure; [`parse_file`] adds the file read. The parser accepts what
//! real editors write: a UTF-8 BOM, CRLF/LF/CR line endings, blank lines, tabs,
//! trailing spaces, 3- to 6-digit event numbers, reels with dots (`Z677_4C.`),
//! comments with or without a space after `*` (and `FROM CLIP NAME:` with no `*`
//! at all), `FCM:` lines between events (they apply to the events after them),
//! `M2` speed lines, `* LOC:` markers, ASC CDL comments in both spellings,
//! `EFFECTS NAME IS …` and `AUD …` lines. A line it does not know becomes a
//! warning naming its line number; a line that *looks* like an event (it starts
//! with digits) but has bad fields is an error, because silently dropping an
//! event would drop a plate.
//!
//! # Transitions
//! A dissolve or a wipe is written as two lines sharing one event number: a
//! (usually zero-length) cut of the outgoing clip, then the `D`/`W` line of the
//! incoming clip. iom **resolves the pair to the incoming clip**: one event, with
//! the transition kept on it, its clip name taken from `* TO CLIP NAME:`, and the
//! outgoing side kept in [`Event::outgoing`]. When the outgoing cut is not zero
//! length it also stays as its own event, so no record frames are lost. Key lines
//! (`K`, `KB`, `KO`) stay separate events: background and foreground are both on
//! screen.
//!
//! # Frame rates
//! Every timecode is read at the rate the caller gives (the movie's, or the
//! configured fallback), never an assumed 24. `FCM: DROP FRAME` (or a `;`
//! separator) selects drop-frame counting at 29.97 and 59.94.

use std::fmt::{self, Write as _};
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::error::{io_class, Classify, ErrorClass};
use crate::timecode::{FrameRate, Timecode, TimecodeError};

/// The largest file [`parse_file`] reads. Real EDLs are kilobytes; a
/// multi-gigabyte file named `.edl` is a mistake, not an edit.
pub const MAX_EDL_BYTES: u64 = 64 * 1024 * 1024;

/// Reels that mean "no media" in CMX3600: black slug.
const BLACK_REELS: [&str; 2] = ["BL", "BLACK"];

/// Colour names editors put after a `* LOC:` timecode.
const MARKER_COLOURS: [&str; 12] = [
    "RED", "GREEN", "BLUE", "CYAN", "MAGENTA", "YELLOW", "WHITE", "BLACK", "ORANGE", "PINK",
    "PURPLE", "GRAY",
];

/// How strictly to read an EDL.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Refuse an event whose source and record durations differ when neither an
    /// `M2` speed nor a transition explains it. Off, the mismatch is a warning.
    pub strict_durations: bool,
}

impl From<&crate::config::EdlSettings> for ParseOptions {
    fn from(s: &crate::config::EdlSettings) -> Self {
        ParseOptions {
            strict_durations: s.strict_durations,
        }
    }
}

/// Where in an EDL an error is: file (when read from one), line, event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Location {
    /// The EDL file, when parsed through [`parse_file`].
    pub file: Option<PathBuf>,
    /// 1-based line number.
    pub line: usize,
    /// The event number, when the line belongs to an event.
    pub event: Option<u32>,
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(file) = &self.file {
            write!(f, "{}: ", file.display())?;
        }
        write!(f, "line {}", self.line)?;
        if let Some(n) = self.event {
            write!(f, ": event {n}")?;
        }
        Ok(())
    }
}

/// Why an EDL could not be read.
#[derive(Debug, thiserror::Error)]
pub enum EdlError {
    /// The file could not be opened or read.
    #[error("{path}: cannot read the EDL: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The path is not a regular file (a FIFO, a device, a folder).
    #[error("{path}: is {kind}, not an EDL file; only regular files are read")]
    NotAFile {
        /// The path.
        path: PathBuf,
        /// What it is.
        kind: &'static str,
    },
    /// The file is far larger than any EDL.
    #[error("{path}: {size} bytes is too large for an EDL (limit {limit}); check that this file is a CMX3600 EDL")]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// [`MAX_EDL_BYTES`].
        limit: u64,
    },
    /// A line that starts like an event (with digits) but whose fields are wrong.
    #[error("{at}: not a valid event line ({detail}): {text:?}; expected `NNN REEL CHANNELS TRANSITION [FRAMES] SRC-IN SRC-OUT REC-IN REC-OUT`, fix or remove the line")]
    Syntax {
        /// Where.
        at: Location,
        /// What is wrong.
        detail: String,
        /// The line as written.
        text: String,
    },
    /// A timecode field that does not read at the EDL's rate.
    #[error("{at}: bad {field} timecode: {source}; check the frame rate the EDL is read at")]
    Timecode {
        /// Where.
        at: Location,
        /// Which field: `source in`, `record out`, `M2`, …
        field: &'static str,
        /// The timecode parser's complaint.
        source: TimecodeError,
    },
    /// An out point before its in point.
    #[error("{at}: {side} out {out} is before {side} in {inn}; fix the event in the EDL")]
    Reversed {
        /// Where.
        at: Location,
        /// `source` or `record`.
        side: &'static str,
        /// The in point.
        inn: String,
        /// The out point.
        out: String,
    },
    /// Source and record lengths differ with no speed or transition to explain it
    /// (only with [`ParseOptions::strict_durations`]).
    #[error("{at}: source is {source_frames} frames but record is {record_frames} frames and no M2 speed or transition explains it; re-export the EDL, or set edl.strict_durations to false to accept it with a warning")]
    DurationMismatch {
        /// Where.
        at: Location,
        /// `source out − source in`.
        source_frames: i64,
        /// `record out − record in`.
        record_frames: i64,
    },
    /// A dissolve or wipe whose event number differs from the outgoing cut before it.
    #[error("{at}: transition and event id mismatch: {detail}; a dissolve or wipe must follow the outgoing cut with the same event number")]
    TransitionMismatch {
        /// Where (the transition line).
        at: Location,
        /// The two lines involved.
        detail: String,
    },
    /// An `M2` line whose speed is not a number.
    #[error("{at}: bad M2 speed {text:?}; expected frames per second such as 047.6, 000.0 (freeze) or -024.0 (reverse)")]
    Speed {
        /// Where.
        at: Location,
        /// The field as written.
        text: String,
    },
}

impl EdlError {
    /// The line the error is about (`None` for file-level errors).
    pub fn location(&self) -> Option<&Location> {
        match self {
            EdlError::Io { .. } | EdlError::NotAFile { .. } | EdlError::TooLarge { .. } => None,
            EdlError::Syntax { at, .. }
            | EdlError::Timecode { at, .. }
            | EdlError::Reversed { at, .. }
            | EdlError::DurationMismatch { at, .. }
            | EdlError::TransitionMismatch { at, .. }
            | EdlError::Speed { at, .. } => Some(at),
        }
    }

    /// The same error naming `path` as the EDL it came from.
    pub fn with_file(mut self, path: &Path) -> Self {
        match &mut self {
            EdlError::Io { .. } | EdlError::NotAFile { .. } | EdlError::TooLarge { .. } => {}
            EdlError::Syntax { at, .. }
            | EdlError::Timecode { at, .. }
            | EdlError::Reversed { at, .. }
            | EdlError::DurationMismatch { at, .. }
            | EdlError::TransitionMismatch { at, .. }
            | EdlError::Speed { at, .. } => at.file = Some(path.to_path_buf()),
        }
        self
    }
}

impl Classify for EdlError {
    fn class(&self) -> ErrorClass {
        match self {
            EdlError::Io { source, .. } => io_class(source),
            _ => ErrorClass::Permanent,
        }
    }
}

/// The kind of key in a `K` transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeyKind {
    /// `K`: the key (foreground) source.
    Key,
    /// `KB`: the key background.
    Background,
    /// `KO`: key out.
    Out,
}

impl KeyKind {
    /// The CMX code: `K`, `KB`, `KO`.
    pub fn code(self) -> &'static str {
        match self {
            KeyKind::Key => "K",
            KeyKind::Background => "KB",
            KeyKind::Out => "KO",
        }
    }
}

/// How an event begins.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Transition {
    /// `C`.
    Cut,
    /// `D <frames>`.
    Dissolve {
        /// Length of the dissolve.
        frames: u32,
    },
    /// `W<code> <frames>`, e.g. `W001 010`.
    Wipe {
        /// SMPTE wipe pattern number.
        code: u32,
        /// Length of the wipe.
        frames: u32,
    },
    /// `K`, `KB`, `KO`, optionally with a length.
    Key {
        /// Which key line.
        kind: KeyKind,
        /// Length (0 when not written).
        frames: u32,
    },
}

impl Transition {
    /// The transition length in frames (0 for a cut).
    pub fn frames(self) -> u32 {
        match self {
            Transition::Cut => 0,
            Transition::Dissolve { frames }
            | Transition::Wipe { frames, .. }
            | Transition::Key { frames, .. } => frames,
        }
    }

    /// A dissolve or a wipe: a transition that pairs with an outgoing cut.
    pub fn is_blend(self) -> bool {
        matches!(self, Transition::Dissolve { .. } | Transition::Wipe { .. })
    }
}

impl fmt::Display for Transition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Transition::Cut => f.write_str("C"),
            Transition::Dissolve { frames } => write!(f, "D {frames:03}"),
            Transition::Wipe { code, frames } => write!(f, "W{code:03} {frames:03}"),
            Transition::Key { kind, frames } => write!(f, "{} {frames:03}", kind.code()),
        }
    }
}

/// An `M2` (motion memory) line: the source plays at `fps` source frames per
/// second of record.
#[derive(Debug, Clone, PartialEq)]
pub struct Speed {
    /// The reel the line names (normally the event's reel).
    pub reel: String,
    /// Source frames per second: `0.0` is a freeze frame, negative plays in reverse.
    pub fps: f64,
    /// The source timecode where the speed change starts.
    pub tc: Timecode,
}

impl Speed {
    /// A freeze frame (`000.0`).
    pub fn is_freeze(&self) -> bool {
        self.fps == 0.0
    }

    /// The source plays backwards.
    pub fn is_reverse(&self) -> bool {
        self.fps < 0.0
    }
}

/// A `* LOC:` marker.
#[derive(Debug, Clone, PartialEq)]
pub struct Marker {
    /// Where the marker sits (record timeline).
    pub tc: Timecode,
    /// Its colour (`RED`, `GREEN` …), when written.
    pub colour: Option<String>,
    /// The note.
    pub text: String,
}

/// An ASC CDL slope/offset/power triple (`*ASC_SOP (…)(…)(…)`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AscSop {
    /// Slope, R G B.
    pub slope: [f64; 3],
    /// Offset, R G B.
    pub offset: [f64; 3],
    /// Power, R G B.
    pub power: [f64; 3],
}

/// The outgoing side of a dissolve or wipe (the cut line before the `D`/`W` line).
#[derive(Debug, Clone, PartialEq)]
pub struct Outgoing {
    /// Reel of the outgoing clip.
    pub reel: String,
    /// Channels of the outgoing line.
    pub channels: String,
    /// Source in of the outgoing line.
    pub src_in: Timecode,
    /// Source out of the outgoing line.
    pub src_out: Timecode,
    /// The outgoing clip's name (its own `FROM CLIP NAME`, or the one under the
    /// transition line when that line also has a `TO CLIP NAME`).
    pub clip_name: Option<String>,
}

/// One event: one clip on the record timeline.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Event number as written (`001` → 1).
    pub number: u32,
    /// Reel (tape) name.
    pub reel: String,
    /// Channel field as written: `V`, `A`, `A2`, `AA`, `AA/V`, `B` …
    pub channels: String,
    /// How the event begins. For a dissolve or wipe this is the incoming clip.
    pub transition: Transition,
    /// Source in (camera timecode of the first frame used).
    pub src_in: Timecode,
    /// Source out (exclusive).
    pub src_out: Timecode,
    /// Record in (position in the edit, i.e. in the movie).
    pub rec_in: Timecode,
    /// Record out (exclusive).
    pub rec_out: Timecode,
    /// `FROM CLIP NAME` (for a transition: the incoming clip's `TO CLIP NAME`).
    pub clip_name: Option<String>,
    /// `TO CLIP NAME`, as written.
    pub to_clip_name: Option<String>,
    /// `SOURCE FILE`, `FROM CLIP` (Avid) or `FROM FILE` (Nucoda) path.
    pub source_file: Option<String>,
    /// The `M2` speed line, when there is one.
    pub speed: Option<Speed>,
    /// `* LOC:` markers.
    pub markers: Vec<Marker>,
    /// ASC CDL slope/offset/power.
    pub asc_sop: Option<AscSop>,
    /// ASC CDL saturation.
    pub asc_sat: Option<f64>,
    /// The outgoing cut of a dissolve or wipe.
    pub outgoing: Option<Outgoing>,
    /// `EFFECTS NAME IS …`.
    pub effect: Option<String>,
    /// `AUD …` (extra audio channels), as written.
    pub aud: Option<String>,
    /// Other `*` comment lines, without the `*`.
    pub comments: Vec<String>,
    /// 1-based line number of the event line (0 for events built in code).
    pub line: usize,
}

impl Event {
    /// A video cut with no comments; set the public fields for the rest.
    pub fn new(
        number: u32,
        reel: impl Into<String>,
        src_in: Timecode,
        src_out: Timecode,
        rec_in: Timecode,
        rec_out: Timecode,
    ) -> Self {
        Event {
            number,
            reel: reel.into(),
            channels: "V".into(),
            transition: Transition::Cut,
            src_in,
            src_out,
            rec_in,
            rec_out,
            clip_name: None,
            to_clip_name: None,
            source_file: None,
            speed: None,
            markers: Vec::new(),
            asc_sop: None,
            asc_sat: None,
            outgoing: None,
            effect: None,
            aud: None,
            comments: Vec::new(),
            line: 0,
        }
    }

    /// Whether the event carries picture: a channel part `V…` or `B` ("both").
    pub fn is_video(&self) -> bool {
        self.channels
            .split('/')
            .map(channel_base)
            .any(|b| b.eq_ignore_ascii_case("V") || b.eq_ignore_ascii_case("B"))
    }

    /// Whether the reel is black slug (`BL`, `BLACK`): no media behind it.
    pub fn is_black(&self) -> bool {
        BLACK_REELS
            .iter()
            .any(|b| self.reel.eq_ignore_ascii_case(b))
    }

    /// `source out − source in`, in frames.
    pub fn source_duration(&self) -> i64 {
        self.src_out.frames() - self.src_in.frames()
    }

    /// `record out − record in`, in frames (record out is exclusive).
    pub fn record_duration(&self) -> i64 {
        self.rec_out.frames() - self.rec_in.frames()
    }

    /// The event's frames in the movie, 1-based: `(start, end, duration)` with
    /// `start = rec_in − movie_start + 1`, `duration = rec_out − rec_in` and
    /// `end = start + duration − 1`.
    ///
    /// `movie_start` is the movie's own start timecode, or [`hour_start`] when it
    /// has none. (The original used frame 86400 whatever the rate, so at 25 fps
    /// every event started 3600 frames late.)
    pub fn record_range(&self, movie_start: Timecode) -> (i64, i64, i64) {
        let start = self.rec_in.frames() - movie_start.frames() + 1;
        let duration = self.record_duration();
        (start, start + duration - 1, duration)
    }

    /// The clip name as the scanlist's `clip_name` column shows it: cut at the
    /// first `.`, keeping the `.` (`ZZ100_501.take_1.0001.exr` → `ZZ100_501.`);
    /// unchanged without a `.`; the string `"None"` when absent, as the original.
    pub fn clip_name_cut(&self) -> String {
        match self.clip_name.as_deref().map(str::trim) {
            None | Some("") => "None".to_string(),
            Some(name) => match name.find('.') {
                Some(i) => name[..=i].to_string(),
                None => name.to_string(),
            },
        }
    }

    /// The `M2` speed as a percentage of `fps` (`speed / fps × 100`): 0 for a
    /// freeze frame, negative for reverse. `None` without an `M2` line.
    pub fn retime_percent(&self, fps: FrameRate) -> Option<f64> {
        let speed = self.speed.as_ref()?;
        Some(speed.fps / fps.as_f64() * 100.0)
    }

    /// A short note for the scanlist's `clip_tag` column, e.g.
    /// `retime 0% (freeze) 17fr` or `retime 198.3% 17fr` (record length in frames).
    pub fn retime_note(&self, fps: FrameRate) -> Option<String> {
        let speed = self.speed.as_ref()?;
        let percent = self.retime_percent(fps)?;
        let frames = self.record_duration();
        Some(if speed.is_freeze() {
            format!("retime 0% (freeze) {frames}fr")
        } else if speed.is_reverse() {
            format!("retime {percent:.1}% (reverse) {frames}fr")
        } else {
            format!("retime {percent:.1}% {frames}fr")
        })
    }
}

/// A parsed EDL.
#[derive(Debug, Clone, PartialEq)]
pub struct Edl {
    /// `TITLE:` value, when present.
    pub title: Option<String>,
    /// The rate the timecodes were read at.
    pub rate: FrameRate,
    /// Events in file order (dissolve/wipe pairs resolved, see the module docs).
    pub events: Vec<Event>,
    /// Things worth a look that did not stop the parse, each naming its line.
    pub warnings: Vec<String>,
}

impl Edl {
    /// An empty EDL at `rate`.
    pub fn new(title: Option<String>, rate: FrameRate) -> Self {
        Edl {
            title,
            rate,
            events: Vec::new(),
            warnings: Vec::new(),
        }
    }

    /// The events that become scanlist rows: those with picture, not black slug
    /// and at least one record frame long (audio-only events give no row).
    pub fn video_events(&self) -> Vec<&Event> {
        self.events
            .iter()
            .filter(|e| e.is_video() && !e.is_black() && e.record_duration() > 0)
            .collect()
    }

    /// Record in of the first of [`Edl::video_events`].
    pub fn first_record_in(&self) -> Option<Timecode> {
        self.video_events().first().map(|e| e.rec_in)
    }
}

/// `01:00:00:00` at `rate`: `3600 × nominal` frames (less dropped labels with
/// drop frame), the movie start to assume when a movie has no timecode.
pub fn hour_start(rate: FrameRate, drop_frame: bool) -> Timecode {
    let drop_frame = drop_frame && rate.has_drop_frame();
    Timecode::from_frames(rate.frames_per_hour(drop_frame), rate, drop_frame)
}

/// Reads an EDL file; see [`parse`]. The file is decoded as UTF-8, or as UTF-16
/// with a BOM, or else as Latin-1 (with a warning), as Windows tools write it.
pub fn parse_file(path: &Path, rate: FrameRate, options: ParseOptions) -> Result<Edl, EdlError> {
    let io = |source| EdlError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A FIFO or device named `.edl` would block the open or the read forever;
    // look before opening (symlinks are followed: a link to a file is fine).
    let meta = std::fs::metadata(path).map_err(io)?;
    if !meta.is_file() {
        return Err(EdlError::NotAFile {
            path: path.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    let file = std::fs::File::open(path).map_err(io)?;
    let size = file.metadata().map_err(io)?.len();
    let too_large = |size| EdlError::TooLarge {
        path: path.to_path_buf(),
        size,
        limit: MAX_EDL_BYTES,
    };
    if size > MAX_EDL_BYTES {
        return Err(too_large(size));
    }
    let mut bytes = Vec::new();
    // `take` keeps a file that grows while being read within the limit too.
    file.take(MAX_EDL_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    if bytes.len() as u64 > MAX_EDL_BYTES {
        return Err(too_large(bytes.len() as u64));
    }
    let mut edl = parse_bytes(bytes, rate, options).map_err(|e| e.with_file(path))?;
    if let Some(w) = edl.warnings.first_mut() {
        if w.starts_with(ENCODING_NOTE) {
            *w = format!("{}: {}", path.display(), &w[ENCODING_NOTE.len()..]);
        }
    }
    Ok(edl)
}

/// Prefix of the warning [`parse_bytes`] adds when the bytes were not UTF-8.
const ENCODING_NOTE: &str = "EDL text: ";

/// What a non-regular file is, for [`EdlError::NotAFile`].
fn file_kind(meta: &std::fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt as _;
        let t = meta.file_type();
        if t.is_fifo() {
            return "a named pipe (FIFO)";
        }
        if t.is_socket() {
            return "a socket";
        }
        if t.is_block_device() || t.is_char_device() {
            return "a device";
        }
    }
    if meta.is_dir() {
        "a folder"
    } else {
        "not a regular file"
    }
}

/// Parses EDL bytes as [`parse_file`] does after reading them: UTF-8, UTF-16 with
/// a BOM, or else Latin-1 (the first warning then says so). Pure: no IO.
pub fn parse_bytes(
    bytes: Vec<u8>,
    rate: FrameRate,
    options: ParseOptions,
) -> Result<Edl, EdlError> {
    let (text, note) = decode(bytes);
    let mut edl = parse(&text, rate, options)?;
    if let Some(note) = note {
        edl.warnings.insert(0, format!("{ENCODING_NOTE}{note}"));
    }
    Ok(edl)
}

/// Decodes EDL bytes; the note says when the text was not UTF-8.
fn decode(bytes: Vec<u8>) -> (String, Option<&'static str>) {
    let utf16 = |le: bool, body: &[u8]| -> String {
        let units = body.chunks_exact(2).map(|c| {
            if le {
                u16::from_le_bytes([c[0], c[1]])
            } else {
                u16::from_be_bytes([c[0], c[1]])
            }
        });
        char::decode_utf16(units)
            .map(|r| r.unwrap_or(char::REPLACEMENT_CHARACTER))
            .collect()
    };
    if let Some(body) = bytes.strip_prefix(&[0xFF, 0xFE]) {
        return (utf16(true, body), Some("UTF-16 (little-endian) text"));
    }
    if let Some(body) = bytes.strip_prefix(&[0xFE, 0xFF]) {
        return (utf16(false, body), Some("UTF-16 (big-endian) text"));
    }
    match String::from_utf8(bytes) {
        Ok(s) => (s, None),
        // Every byte is a Latin-1 character, so this cannot fail; Avid on Windows
        // writes Windows-1252, which agrees with Latin-1 on letters with accents.
        Err(e) => (
            e.into_bytes().iter().map(|&b| char::from(b)).collect(),
            Some("not UTF-8; read as Latin-1"),
        ),
    }
}

/// Parses CMX3600 text, reading every timecode at `rate`. Pure: no IO.
///
/// An EDL with no events is `Ok` with zero events (the caller decides whether
/// that is a problem).
pub fn parse(text: &str, rate: FrameRate, options: ParseOptions) -> Result<Edl, EdlError> {
    let mut p = Parser {
        rate,
        options,
        drop_frame: false,
        warned_drop_rate: false,
        open: false,
        edl: Edl::new(None, rate),
    };
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    for (i, raw) in split_lines(text).enumerate() {
        p.line(i + 1, raw)?;
    }
    p.close_last()?;
    Ok(p.edl)
}

/// Splits at CRLF, LF or a lone CR (old Mac exports), so line numbers match
/// what an editor shows.
fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        match rest.find(['\r', '\n']) {
            Some(i) => {
                let line = &rest[..i];
                let skip = if rest[i..].starts_with("\r\n") { 2 } else { 1 };
                rest = &rest[i + skip..];
                Some(line)
            }
            None => {
                let line = rest;
                rest = "";
                Some(line)
            }
        }
    })
}

/// `s` without `prefix`, compared ignoring ASCII case.
fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    if head.eq_ignore_ascii_case(prefix) {
        s.get(prefix.len()..)
    } else {
        None
    }
}

/// A channel part without its track number: `A2` → `A`.
fn channel_base(part: &str) -> &str {
    part.trim_end_matches(|c: char| c.is_ascii_digit())
}

/// `V`, `A`, `A2`, `AA`, `AA/V`, `B`, `NONE` … (each `/` part a known letter code
/// with an optional track number).
fn valid_channels(s: &str) -> bool {
    !s.is_empty()
        && s.split('/').all(|part| {
            let base = channel_base(part).to_ascii_uppercase();
            matches!(base.as_str(), "V" | "A" | "AA" | "B" | "NONE")
        })
}

/// Reads the transition fields between the channels and the timecodes.
fn parse_transition(fields: &[&str]) -> Result<Transition, String> {
    let up: Vec<String> = fields.iter().map(|f| f.to_ascii_uppercase()).collect();
    let up: Vec<&str> = up.iter().map(String::as_str).collect();
    let frames = |s: &str| -> Result<u32, String> {
        if !s.is_empty() && s.len() <= 6 && s.bytes().all(|b| b.is_ascii_digit()) {
            s.parse()
                .map_err(|_| format!("transition length {s:?} is not a frame count"))
        } else {
            Err(format!("transition length {s:?} is not a frame count"))
        }
    };
    let key = |k: &str| match k {
        "K" => Some(KeyKind::Key),
        "KB" => Some(KeyKind::Background),
        "KO" => Some(KeyKind::Out),
        _ => None,
    };
    match up.as_slice() {
        ["C"] => Ok(Transition::Cut),
        ["D", f] => Ok(Transition::Dissolve { frames: frames(f)? }),
        ["D"] => Err("dissolve without a length".into()),
        [w, f] if w.len() > 1 && w.starts_with('W') => {
            let code = frames(&w[1..]).map_err(|_| format!("wipe code {w:?} is not W<number>"))?;
            Ok(Transition::Wipe {
                code,
                frames: frames(f)?,
            })
        }
        [k] if key(k).is_some() => Ok(Transition::Key {
            kind: key(k).unwrap_or(KeyKind::Key),
            frames: 0,
        }),
        ["K", s @ ("B" | "O")] => Ok(Transition::Key {
            kind: key(&format!("K{s}")).unwrap_or(KeyKind::Key),
            frames: 0,
        }),
        ["K", s @ ("B" | "O"), f] => Ok(Transition::Key {
            kind: key(&format!("K{s}")).unwrap_or(KeyKind::Key),
            frames: frames(f)?,
        }),
        [k, f] if key(k).is_some() => Ok(Transition::Key {
            kind: key(k).unwrap_or(KeyKind::Key),
            frames: frames(f)?,
        }),
        [] => Err("no transition field".into()),
        other => Err(format!(
            "transition {:?} is not C, D <frames>, W<code> <frames> or K/KB/KO",
            other.join(" ")
        )),
    }
}

/// Reads `(r g b)(r g b)(r g b)`.
fn parse_sop(text: &str) -> Option<AscSop> {
    let mut groups = Vec::new();
    let mut rest = text.trim();
    while let Some(open) = rest.find('(') {
        let close = rest[open..].find(')')? + open;
        let nums: Vec<f64> = rest[open + 1..close]
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|s| !s.is_empty())
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let triple: [f64; 3] = nums.try_into().ok()?;
        if triple.iter().any(|v| !v.is_finite()) {
            return None;
        }
        groups.push(triple);
        rest = &rest[close + 1..];
    }
    match groups.as_slice() {
        [slope, offset, power] => Some(AscSop {
            slope: *slope,
            offset: *offset,
            power: *power,
        }),
        _ => None,
    }
}

struct Parser {
    rate: FrameRate,
    options: ParseOptions,
    /// Current `FCM:` mode.
    drop_frame: bool,
    /// `FCM: DROP FRAME` at a rate with no drop frame has been reported.
    warned_drop_rate: bool,
    /// The last event still takes comment lines and has not been checked.
    open: bool,
    edl: Edl,
}

impl Parser {
    fn warn(&mut self, line: usize, msg: impl fmt::Display) {
        self.edl.warnings.push(format!("line {line}: {msg}"));
    }

    fn at(&self, line: usize, event: Option<u32>) -> Location {
        Location {
            file: None,
            line,
            event,
        }
    }

    fn line(&mut self, n: usize, raw: &str) -> Result<(), EdlError> {
        let line = raw.trim();
        if line.is_empty() {
            return Ok(());
        }
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some(title) = strip_prefix_ci(line, "TITLE:") {
            let title = title.trim();
            if self.edl.title.is_some() {
                self.warn(n, format_args!("second TITLE line ignored: {line:?}"));
            } else if !title.is_empty() {
                self.edl.title = Some(title.to_string());
            }
        } else if let Some(mode) = strip_prefix_ci(line, "FCM:") {
            self.fcm(n, mode);
        } else if first.bytes().all(|b| b.is_ascii_digit()) {
            self.event_line(n, line)?;
        } else if line.starts_with('*') {
            let body = line.trim_start_matches('*').trim();
            self.comment(n, body);
        } else if strip_prefix_ci(line, "FROM CLIP NAME:").is_some()
            || strip_prefix_ci(line, "TO CLIP NAME:").is_some()
        {
            // gap_test-style clip names written without the `*`.
            self.comment(n, line);
        } else if first.eq_ignore_ascii_case("M2") {
            self.m2(n, line)?;
        } else if let Some(name) = strip_prefix_ci(line, "EFFECTS NAME IS") {
            let name = name.trim().to_string();
            match self.current() {
                Some(ev) => ev.effect = Some(name),
                None => self.warn(n, "EFFECTS NAME line before the first event ignored"),
            }
        } else if first.eq_ignore_ascii_case("AUD") {
            let rest = line[first.len()..].trim().to_string();
            match self.current() {
                Some(ev) => ev.aud = Some(rest),
                None => self.warn(n, "AUD line before the first event ignored"),
            }
        } else {
            self.warn(n, format_args!("unrecognised line ignored: {line:?}"));
        }
        Ok(())
    }

    /// The event comment lines attach to, if it is still open.
    fn current(&mut self) -> Option<&mut Event> {
        if self.open {
            self.edl.events.last_mut()
        } else {
            None
        }
    }

    fn fcm(&mut self, n: usize, mode: &str) {
        let mode = mode.trim().to_ascii_uppercase();
        if mode.contains("NON") {
            self.drop_frame = false;
        } else if mode.contains("DROP") {
            self.drop_frame = true;
            if !self.rate.has_drop_frame() && !self.warned_drop_rate {
                self.warned_drop_rate = true;
                let rate = self.rate;
                self.warn(
                    n,
                    format_args!("FCM: DROP FRAME ignored at {rate} fps (drop frame exists only at 29.97 and 59.94)"),
                );
            }
        } else {
            self.warn(n, format_args!("unknown FCM mode {mode:?} ignored"));
        }
    }

    fn event_line(&mut self, n: usize, line: &str) -> Result<(), EdlError> {
        let ev = self.read_event(n, line)?;
        self.close_last()?;
        let mut ev = ev;
        if ev.transition.is_blend() {
            self.pair_transition(n, &mut ev)?;
        }
        self.edl.events.push(ev);
        self.open = true;
        Ok(())
    }

    /// Links a dissolve/wipe line to the outgoing cut before it (same picture or
    /// sound kind), absorbing that cut when it is zero length.
    fn pair_transition(&mut self, n: usize, ev: &mut Event) -> Result<(), EdlError> {
        let video = ev.is_video();
        let prev = self.edl.events.iter().rposition(|e| e.is_video() == video);
        let Some(i) = prev else {
            self.warn(
                n,
                format_args!(
                    "event {}: {} has no outgoing cut before it; treated as coming from black",
                    ev.number, ev.transition
                ),
            );
            return Ok(());
        };
        let p = &self.edl.events[i];
        if p.number != ev.number {
            return Err(EdlError::TransitionMismatch {
                at: self.at(n, Some(ev.number)),
                detail: format!(
                    "the {} is numbered {} but the cut before it (line {}) is event {}",
                    match ev.transition {
                        Transition::Wipe { .. } => "wipe",
                        _ => "dissolve",
                    },
                    ev.number,
                    p.line,
                    p.number
                ),
            });
        }
        ev.outgoing = Some(Outgoing {
            reel: p.reel.clone(),
            channels: p.channels.clone(),
            src_in: p.src_in,
            src_out: p.src_out,
            clip_name: p.clip_name.clone(),
        });
        if p.record_duration() == 0 {
            self.edl.events.remove(i);
        } else {
            let (frames, line) = (p.record_duration(), p.line);
            self.warn(
                n,
                format_args!(
                    "event {}: the outgoing cut on line {line} is {frames} frames long; kept as its own event",
                    ev.number
                ),
            );
        }
        Ok(())
    }

    fn read_event(&self, n: usize, line: &str) -> Result<Event, EdlError> {
        let toks: Vec<&str> = line.split_whitespace().collect();
        let syntax = |event: Option<u32>, detail: String| EdlError::Syntax {
            at: Location {
                file: None,
                line: n,
                event,
            },
            detail,
            text: line.to_string(),
        };
        let number_tok = toks.first().copied().unwrap_or("");
        let number: u32 = number_tok
            .parse()
            .map_err(|_| syntax(None, format!("event number {number_tok:?} is out of range")))?;
        if toks.len() < 8 {
            return Err(syntax(
                Some(number),
                format!("{} fields, an event has at least 8", toks.len()),
            ));
        }
        let tcs = &toks[toks.len() - 4..];
        let mid = &toks[1..toks.len() - 4];
        let (reel, channels, trans) = match mid {
            [reel, channels, trans @ ..] => (*reel, *channels, trans),
            _ => return Err(syntax(Some(number), "missing reel or channels".into())),
        };
        if !valid_channels(channels) {
            return Err(syntax(
                Some(number),
                format!("channel field {channels:?} is not V, A, A2, AA, AA/V, B …"),
            ));
        }
        let transition = parse_transition(trans).map_err(|d| syntax(Some(number), d))?;
        let mut read = [None; 4];
        for (slot, (tok, field)) in read.iter_mut().zip(tcs.iter().zip([
            "source in",
            "source out",
            "record in",
            "record out",
        ])) {
            let tc = Timecode::parse(tok, self.rate, self.drop_frame).map_err(|source| {
                EdlError::Timecode {
                    at: self.at(n, Some(number)),
                    field,
                    source,
                }
            })?;
            *slot = Some(tc);
        }
        let [Some(src_in), Some(src_out), Some(rec_in), Some(rec_out)] = read else {
            return Err(syntax(Some(number), "missing timecodes".into()));
        };
        for (side, inn, out) in [("source", src_in, src_out), ("record", rec_in, rec_out)] {
            if out.frames() < inn.frames() {
                return Err(EdlError::Reversed {
                    at: self.at(n, Some(number)),
                    side,
                    inn: inn.to_string(),
                    out: out.to_string(),
                });
            }
        }
        let mut ev = Event::new(number, reel, src_in, src_out, rec_in, rec_out);
        ev.channels = channels.to_string();
        ev.transition = transition;
        ev.line = n;
        Ok(ev)
    }

    /// Finishes the last event: resolves a transition's clip names and checks
    /// source against record length.
    fn close_last(&mut self) -> Result<(), EdlError> {
        if !self.open {
            return Ok(());
        }
        self.open = false;
        let strict = self.options.strict_durations;
        let Some(ev) = self.edl.events.last_mut() else {
            return Ok(());
        };
        if ev.transition.is_blend() {
            // Under a transition line FROM names the outgoing clip and TO the
            // incoming one; with no TO, tools mean the incoming clip by FROM.
            let from = ev.clip_name.take();
            if let Some(to) = ev.to_clip_name.clone() {
                ev.clip_name = Some(to);
                if let Some(out) = ev.outgoing.as_mut() {
                    if out.clip_name.is_none() {
                        out.clip_name = from;
                    }
                }
            } else {
                ev.clip_name = from;
            }
            // An outgoing cut kept as its own event (it has frames of its own)
            // takes that name too, when it has none of its own.
            let (number, video) = (ev.number, ev.is_video());
            let name = ev.outgoing.as_ref().and_then(|o| o.clip_name.clone());
            let last = self.edl.events.len() - 1;
            if let Some(kept) = self.edl.events[..last]
                .iter_mut()
                .rev()
                .find(|e| e.is_video() == video)
                .filter(|e| e.number == number && e.clip_name.is_none())
            {
                kept.clip_name = name;
            }
        }
        let Some(ev) = self.edl.events.last_mut() else {
            return Ok(());
        };
        let (src, rec) = (ev.source_duration(), ev.record_duration());
        if src != rec && ev.speed.is_none() && ev.transition == Transition::Cut {
            let (number, line) = (ev.number, ev.line);
            if strict {
                return Err(EdlError::DurationMismatch {
                    at: self.at(line, Some(number)),
                    source_frames: src,
                    record_frames: rec,
                });
            }
            self.warn(
                line,
                format_args!("event {number}: source is {src} frames but record is {rec} frames, with no M2 speed"),
            );
        }
        Ok(())
    }

    fn comment(&mut self, n: usize, body: &str) {
        if !self.open {
            self.warn(
                n,
                format_args!("comment before the first event ignored: {body:?}"),
            );
            return;
        }
        let rate = self.rate;
        let drop = self.drop_frame;
        let mut warning = None;
        let Some(ev) = self.edl.events.last_mut() else {
            return;
        };
        let value = |s: &str| s.trim().to_string();
        if let Some(v) = strip_prefix_ci(body, "FROM CLIP NAME:") {
            ev.clip_name = Some(value(v));
        } else if let Some(v) = strip_prefix_ci(body, "TO CLIP NAME:") {
            ev.to_clip_name = Some(value(v));
        } else if let Some(v) = strip_prefix_ci(body, "FROM CLIP:")
            .or_else(|| strip_prefix_ci(body, "FROM FILE:"))
            .or_else(|| strip_prefix_ci(body, "SOURCE FILE:"))
        {
            if ev.source_file.is_none() {
                ev.source_file = Some(value(v));
            }
        } else if let Some(v) = strip_prefix_ci(body, "LOC:") {
            let mut parts = v.split_whitespace();
            let tc_text = parts.next().unwrap_or("");
            match Timecode::parse(tc_text, rate, drop) {
                Ok(tc) => {
                    let words: Vec<&str> = parts.collect();
                    let (colour, text) = match words.split_first() {
                        Some((c, rest))
                            if MARKER_COLOURS.iter().any(|k| c.eq_ignore_ascii_case(k)) =>
                        {
                            (Some(c.to_ascii_uppercase()), rest.join(" "))
                        }
                        _ => (None, words.join(" ")),
                    };
                    ev.markers.push(Marker { tc, colour, text });
                }
                Err(e) => warning = Some(format!("marker ignored: {e}")),
            }
        } else if let Some(v) = strip_prefix_ci(body, "ASC_SOP") {
            let v = v.trim_start().trim_start_matches(':');
            match parse_sop(v) {
                Some(sop) => ev.asc_sop = Some(sop),
                None => {
                    warning = Some(format!(
                        "ASC_SOP ignored, expected (r g b)(r g b)(r g b): {v:?}"
                    ))
                }
            }
        } else if let Some(v) = strip_prefix_ci(body, "ASC_SAT") {
            let v = v.trim_start().trim_start_matches(':').trim();
            match v.parse::<f64>() {
                Ok(sat) if sat.is_finite() => ev.asc_sat = Some(sat),
                _ => warning = Some(format!("ASC_SAT ignored, not a number: {v:?}")),
            }
        } else {
            ev.comments.push(body.to_string());
        }
        if let Some(w) = warning {
            let number = ev.number;
            self.warn(n, format_args!("event {number}: {w}"));
        }
    }

    fn m2(&mut self, n: usize, line: &str) -> Result<(), EdlError> {
        let toks: Vec<&str> = line.split_whitespace().collect();
        if !self.open {
            self.warn(
                n,
                format_args!("M2 line before the first event ignored: {line:?}"),
            );
            return Ok(());
        }
        let Some(ev) = self.edl.events.last() else {
            return Ok(());
        };
        let number = ev.number;
        let event_reel = ev.reel.clone();
        // `M2 <reel> <speed> <tc>`; the reel may be missing or contain spaces.
        let (reel, speed_text, tc_text) = match toks.as_slice() {
            [_, reel @ .., speed, tc] => (reel.join(" "), *speed, *tc),
            _ => {
                return Err(EdlError::Speed {
                    at: self.at(n, Some(number)),
                    text: line.to_string(),
                })
            }
        };
        let fps: f64 = match speed_text.parse::<f64>() {
            Ok(v) if v.is_finite() && v.abs() < 10_000.0 => v,
            _ => {
                return Err(EdlError::Speed {
                    at: self.at(n, Some(number)),
                    text: speed_text.to_string(),
                })
            }
        };
        let tc = Timecode::parse(tc_text, self.rate, self.drop_frame).map_err(|source| {
            EdlError::Timecode {
                at: self.at(n, Some(number)),
                field: "M2",
                source,
            }
        })?;
        if !reel.is_empty() && reel != event_reel {
            self.warn(
                n,
                format_args!(
                    "event {number}: M2 names reel {reel:?} but the event is reel {event_reel:?}"
                ),
            );
        }
        let reel = if reel.is_empty() { event_reel } else { reel };
        if let Some(ev) = self.current() {
            if ev.speed.is_some() {
                let number = ev.number;
                self.warn(
                    n,
                    format_args!("event {number}: second M2 line replaces the first"),
                );
            }
        }
        if let Some(ev) = self.current() {
            ev.speed = Some(Speed { reel, fps, tc });
        }
        Ok(())
    }
}

/// Formats an `M2` speed as CMX writes it: `047.6`, `000.0`, `-024.0`.
fn format_speed(fps: f64) -> String {
    let sign = if fps < 0.0 { "-" } else { "" };
    format!("{sign}{:05.1}", fps.abs())
}

/// A reel name that survives a write/parse round trip (one token, not empty).
fn writable_reel(reel: &str) -> String {
    let r: String = reel.split_whitespace().collect::<Vec<_>>().join("_");
    if r.is_empty() {
        "AX".into()
    } else {
        r
    }
}

fn event_line(
    out: &mut String,
    number: u32,
    reel: &str,
    channels: &str,
    transition: Transition,
    tcs: [Timecode; 4],
) {
    let (code, frames) = match transition {
        Transition::Cut => ("C".to_string(), String::new()),
        Transition::Dissolve { frames } => ("D".to_string(), format!("{frames:03}")),
        Transition::Wipe { code, frames } => (format!("W{code:03}"), format!("{frames:03}")),
        Transition::Key { kind, frames } => (kind.code().to_string(), format!("{frames:03}")),
    };
    let channels = if channels.trim().is_empty() {
        "V"
    } else {
        channels.trim()
    };
    let reel = writable_reel(reel);
    let [a, b, c, d] = tcs;
    let _ = writeln!(
        out,
        "{number:03}  {reel:<8} {channels:<5} {code:<4} {frames:>3} {a} {b} {c} {d}"
    );
}

/// Writes `edl` as CMX3600 text (LF line endings): `TITLE:`, `FCM:` lines where
/// the counting mode changes, fixed-column event lines, the outgoing cut before
/// each dissolve/wipe, `M2` lines and the comments iom reads back.
///
/// For a transition, `clip_name` is written as the `TO CLIP NAME` and the
/// outgoing clip's name as the `FROM CLIP NAME`.
pub fn write(edl: &Edl) -> String {
    let mut out = String::new();
    if let Some(title) = &edl.title {
        let _ = writeln!(out, "TITLE: {title}");
    }
    let mut drop: Option<bool> = None;
    for ev in &edl.events {
        let df = ev.rec_in.is_drop_frame();
        if drop != Some(df) {
            let mode = if df { "DROP FRAME" } else { "NON-DROP FRAME" };
            let _ = writeln!(out, "FCM: {mode}");
            drop = Some(df);
        }
        if ev.transition.is_blend() {
            let black = Outgoing {
                reel: "BL".into(),
                channels: ev.channels.clone(),
                src_in: Timecode::from_frames(0, ev.src_in.rate(), df),
                src_out: Timecode::from_frames(0, ev.src_in.rate(), df),
                clip_name: None,
            };
            let o = ev.outgoing.as_ref().unwrap_or(&black);
            event_line(
                &mut out,
                ev.number,
                &o.reel,
                &o.channels,
                Transition::Cut,
                [o.src_in, o.src_out, ev.rec_in, ev.rec_in],
            );
            if ev.clip_name.is_none() {
                if let Some(name) = &o.clip_name {
                    let _ = writeln!(out, "* FROM CLIP NAME: {name}");
                }
            }
        }
        event_line(
            &mut out,
            ev.number,
            &ev.reel,
            &ev.channels,
            ev.transition,
            [ev.src_in, ev.src_out, ev.rec_in, ev.rec_out],
        );
        if let Some(s) = &ev.speed {
            let reel = writable_reel(if s.reel.is_empty() { &ev.reel } else { &s.reel });
            let _ = writeln!(
                out,
                "M2   {reel:<8}       {:<6}               {}",
                format_speed(s.fps),
                s.tc
            );
        }
        if let Some(e) = &ev.effect {
            let _ = writeln!(out, "EFFECTS NAME IS {e}");
        }
        if ev.transition.is_blend() {
            if let Some(name) = &ev.clip_name {
                if let Some(from) = ev.outgoing.as_ref().and_then(|o| o.clip_name.as_ref()) {
                    let _ = writeln!(out, "* FROM CLIP NAME: {from}");
                }
                let _ = writeln!(out, "* TO CLIP NAME: {name}");
            }
        } else {
            if let Some(name) = &ev.clip_name {
                let _ = writeln!(out, "* FROM CLIP NAME: {name}");
            }
            if let Some(name) = &ev.to_clip_name {
                let _ = writeln!(out, "* TO CLIP NAME: {name}");
            }
        }
        for m in &ev.markers {
            match &m.colour {
                Some(c) => {
                    let _ = writeln!(out, "* LOC: {} {c:<7} {}", m.tc, m.text);
                }
                None => {
                    let _ = writeln!(out, "* LOC: {} {}", m.tc, m.text);
                }
            }
        }
        if let Some(f) = &ev.source_file {
            let _ = writeln!(out, "* SOURCE FILE: {f}");
        }
        if let Some(s) = &ev.asc_sop {
            let t = |v: [f64; 3]| format!("({} {} {})", v[0], v[1], v[2]);
            let _ = writeln!(out, "* ASC_SOP {}{}{}", t(s.slope), t(s.offset), t(s.power));
        }
        if let Some(s) = ev.asc_sat {
            let _ = writeln!(out, "* ASC_SAT {s}");
        }
        if let Some(a) = &ev.aud {
            let _ = writeln!(out, "AUD  {a}");
        }
        for c in &ev.comments {
            let _ = writeln!(out, "* {c}");
        }
    }
    out
}

/// Builds an EDL clip by clip on a contiguous record timeline, for fixtures and
/// the demo. Event numbers count from 1.
#[derive(Debug, Clone)]
pub struct EdlBuilder {
    edl: Edl,
    record: Timecode,
}

impl EdlBuilder {
    /// An empty edit whose record timeline starts at `record_start` (its rate is
    /// the EDL's rate).
    pub fn new(title: &str, record_start: Timecode) -> Self {
        let title = (!title.trim().is_empty()).then(|| title.trim().to_string());
        EdlBuilder {
            edl: Edl::new(title, record_start.rate()),
            record: record_start,
        }
    }

    fn next_number(&self) -> u32 {
        self.edl.events.last().map_or(1, |e| e.number + 1)
    }

    /// Appends a cut of `frames` source frames from `src_in`; returns the event so
    /// markers, CDL or comments can be added.
    pub fn cut(
        &mut self,
        reel: &str,
        clip_name: Option<&str>,
        src_in: Timecode,
        frames: i64,
    ) -> &mut Event {
        self.retimed(reel, clip_name, src_in, frames, frames, None)
    }

    /// Appends an event taking `src_frames` source frames and `rec_frames` record
    /// frames, with an `M2` speed (source frames per second) when given.
    pub fn retimed(
        &mut self,
        reel: &str,
        clip_name: Option<&str>,
        src_in: Timecode,
        src_frames: i64,
        rec_frames: i64,
        speed_fps: Option<f64>,
    ) -> &mut Event {
        let rec_in = self.record;
        let rec_out = rec_in.offset(rec_frames.max(0));
        let mut ev = Event::new(
            self.next_number(),
            reel,
            src_in,
            src_in.offset(src_frames.max(0)),
            rec_in,
            rec_out,
        );
        ev.clip_name = clip_name.map(str::to_string);
        ev.speed = speed_fps.map(|fps| Speed {
            reel: reel.to_string(),
            fps,
            tc: src_in,
        });
        self.record = rec_out;
        self.edl.events.push(ev);
        let last = self.edl.events.len() - 1;
        &mut self.edl.events[last]
    }

    /// Appends a clip that enters with `transition` (a dissolve or wipe) over the
    /// end of the previous clip, which becomes its outgoing side.
    pub fn transition(
        &mut self,
        reel: &str,
        clip_name: Option<&str>,
        src_in: Timecode,
        frames: i64,
        transition: Transition,
    ) -> &mut Event {
        let outgoing = self.edl.events.last().map(|p| Outgoing {
            reel: p.reel.clone(),
            channels: p.channels.clone(),
            src_in: p.src_out,
            src_out: p.src_out,
            clip_name: p.clip_name.clone(),
        });
        let ev = self.cut(reel, clip_name, src_in, frames);
        ev.transition = transition;
        ev.to_clip_name = ev.clip_name.clone();
        ev.outgoing = outgoing;
        ev
    }

    /// Appends a cut of the audio channel `channels` (e.g. `AA`) with no picture.
    pub fn audio(
        &mut self,
        reel: &str,
        channels: &str,
        src_in: Timecode,
        frames: i64,
    ) -> &mut Event {
        let ev = self.cut(reel, None, src_in, frames);
        ev.channels = channels.to_string();
        ev
    }

    /// Leaves `frames` empty record frames before the next clip.
    pub fn gap(&mut self, frames: i64) -> &mut Self {
        self.record = self.record.offset(frames.max(0));
        self
    }

    /// Renumbers the last event (e.g. to write jumping event numbers); later
    /// events count on from it.
    pub fn renumber_last(&mut self, number: u32) -> &mut Self {
        if let Some(e) = self.edl.events.last_mut() {
            e.number = number;
        }
        self
    }

    /// The finished EDL.
    pub fn build(self) -> Edl {
        self.edl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const R24: FrameRate = FrameRate::FPS_24;

    fn tc(s: &str) -> Timecode {
        Timecode::parse(s, R24, false).unwrap()
    }

    #[test]
    fn transitions_parse() {
        assert_eq!(parse_transition(&["C"]), Ok(Transition::Cut));
        assert_eq!(
            parse_transition(&["D", "010"]),
            Ok(Transition::Dissolve { frames: 10 })
        );
        assert_eq!(
            parse_transition(&["W001", "010"]),
            Ok(Transition::Wipe {
                code: 1,
                frames: 10
            })
        );
        assert_eq!(
            parse_transition(&["KB"]),
            Ok(Transition::Key {
                kind: KeyKind::Background,
                frames: 0
            })
        );
        assert_eq!(
            parse_transition(&["K", "B", "012"]),
            Ok(Transition::Key {
                kind: KeyKind::Background,
                frames: 12
            })
        );
        assert_eq!(
            parse_transition(&["KO", "005"]),
            Ok(Transition::Key {
                kind: KeyKind::Out,
                frames: 5
            })
        );
        assert!(parse_transition(&["D"]).is_err());
        assert!(parse_transition(&["X"]).is_err());
        assert!(parse_transition(&["D", "abc"]).is_err());
        assert!(parse_transition(&["W", "010"]).is_err());
    }

    #[test]
    fn channels_and_video() {
        for ok in [
            "V", "A", "A2", "AA", "AA/V", "B", "A3", "A4", "a2/v", "NONE",
        ] {
            assert!(valid_channels(ok), "{ok}");
        }
        for bad in ["", "X", "VV", "A/", "C"] {
            assert!(!valid_channels(bad), "{bad}");
        }
        let mut e = Event::new(
            1,
            "AX",
            tc("00:00:00:00"),
            tc("00:00:01:00"),
            tc("00:00:00:00"),
            tc("00:00:01:00"),
        );
        for (ch, video) in [
            ("V", true),
            ("AA/V", true),
            ("B", true),
            ("AA", false),
            ("A2", false),
        ] {
            e.channels = ch.into();
            assert_eq!(e.is_video(), video, "{ch}");
        }
    }

    #[test]
    fn lines_split_on_every_ending() {
        let v: Vec<&str> = split_lines("a\r\nb\rc\n\nd").collect();
        assert_eq!(v, ["a", "b", "c", "", "d"]);
        assert_eq!(split_lines("").count(), 0);
        assert_eq!(split_lines("x\n").collect::<Vec<_>>(), ["x"]);
    }

    #[test]
    fn sop_reads_both_spacings() {
        let s = parse_sop("(0.1 0.2 0.3)(1.0000 0.0122 0.0305)(1.0000 0.0000 1.0000)").unwrap();
        assert_eq!(s.slope, [0.1, 0.2, 0.3]);
        assert_eq!(s.offset, [1.0, 0.0122, 0.0305]);
        assert_eq!(s.power, [1.0, 0.0, 1.0]);
        assert!(parse_sop(" ( 1 1 1 ) ( 0 0 0 ) ( 1 1 1 ) ").is_some());
        assert!(parse_sop("(1 1)(0 0 0)(1 1 1)").is_none());
        assert!(parse_sop("(1 1 1)(0 0 0)").is_none());
        assert!(parse_sop("(1 1 1)(0 0 0)(1 1 1").is_none());
    }

    #[test]
    fn clip_name_cut_matches_the_original() {
        let mut e = Event::new(
            1,
            "AX",
            tc("00:00:00:00"),
            tc("00:00:01:00"),
            tc("00:00:00:00"),
            tc("00:00:01:00"),
        );
        assert_eq!(e.clip_name_cut(), "None");
        e.clip_name = Some("ZZ100_501.take_1.0001.exr".into());
        assert_eq!(e.clip_name_cut(), "ZZ100_501.");
        e.clip_name = Some("ZZ100_501 (LAY3)".into());
        assert_eq!(e.clip_name_cut(), "ZZ100_501 (LAY3)");
        e.clip_name = Some("  ".into());
        assert_eq!(e.clip_name_cut(), "None");
    }

    #[test]
    fn speed_formatting() {
        assert_eq!(format_speed(0.0), "000.0");
        assert_eq!(format_speed(47.6), "047.6");
        assert_eq!(format_speed(-47.6), "-047.6");
        assert_eq!(format_speed(120.0), "120.0");
    }

    #[test]
    fn hostile_lines_give_errors_not_panics() {
        for line in [
            "001",
            "001 AX V C",
            "99999999999 AX V C 00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00",
            "001 AX V C 00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:0é",
            "001 AX Q C 00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00",
            "001 AX V D 00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00",
            "001 AX V C 99:99:99:99 00:00:01:00 00:00:00:00 00:00:01:00",
        ] {
            assert!(parse(line, R24, ParseOptions::default()).is_err(), "{line}");
        }
        // An M2 line that is only "M2", and a bare LOC, after an event.
        let text =
            "001 AX V C 00:00:00:00 00:00:01:00 00:00:00:00 00:00:01:00\nM2\n* LOC:\n* ASC_SOP\n";
        let e = parse(text, R24, ParseOptions::default()).unwrap_err();
        assert!(matches!(e, EdlError::Speed { .. }), "{e}");
    }

    #[test]
    fn hour_start_is_fps_correct() {
        assert_eq!(hour_start(FrameRate::FPS_25, false).frames(), 90_000);
        assert_eq!(hour_start(FrameRate::FPS_24, false).frames(), 86_400);
        assert_eq!(
            hour_start(FrameRate::FPS_29_97, true).to_string(),
            "01:00:00;00"
        );
        assert_eq!(
            hour_start(FrameRate::FPS_25, true).to_string(),
            "01:00:00:00"
        );
    }

    #[test]
    fn decode_falls_back_to_latin1_and_utf16() {
        let (s, note) = decode(b"TITLE: caf\xe9\n".to_vec());
        assert_eq!(s, "TITLE: caf\u{e9}\n");
        assert!(note.is_some());
        let mut bytes = vec![0xFF, 0xFE];
        for u in "TITLE: x".encode_utf16() {
            bytes.extend(u.to_le_bytes());
        }
        assert_eq!(decode(bytes).0, "TITLE: x");
        assert_eq!(decode(b"ok".to_vec()), ("ok".to_string(), None));
    }
}
