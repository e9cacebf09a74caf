//! Finding image sequences and movies in a delivery.
//!
//! A file is a frame when its name is `<head><digits>.<ext>` with 3–8 digits (by
//! default) directly before an image extension: `name.####.ext`, `name_####.ext`
//! and `name####.ext` all work. Frames group by folder, head, extension and
//! padding, so `plate.0001.exr` and `plate.001.exr` stay two sequences, while an
//! unpadded `plate.10000.exr` joins the 4-padded `plate.9999.exr` it continues.
//!
//! The walk is recursive with a depth limit, follows symlinks (a loop is reported
//! and skipped), never enters the skip list (`.thumbnail` …), and reports each
//! unreadable folder as an issue instead of stopping. Only names and sizes are
//! read here: headers, truncation checks and thumbnails belong to [`crate::scan`].

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::ScanSettings;

/// One frame file of a sequence.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// Frame number.
    pub number: i64,
    /// Size in bytes.
    pub size: u64,
    /// The digits as written in the file name (keeps the padding).
    pub digits: String,
}

/// An image sequence: frames sharing folder, head, padding and extension.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sequence {
    /// Folder holding the frames.
    pub dir: PathBuf,
    /// File-name text before the frame number, e.g. `A001C003_plate.`.
    pub head: String,
    /// Padding (number of digits of the zero-padded frame number).
    pub pad: usize,
    /// Extension as written on disk (case kept), without the dot.
    pub ext: String,
    /// Frames, sorted by number, no duplicates.
    pub frames: Vec<Frame>,
}

/// An inclusive range of frame numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameRange {
    /// First frame.
    pub start: i64,
    /// Last frame (inclusive).
    pub end: i64,
}

impl FrameRange {
    /// Number of frames.
    pub fn len(&self) -> i64 {
        self.end - self.start + 1
    }

    /// Never true for a range built by this module; here for clippy's sake.
    pub fn is_empty(&self) -> bool {
        self.end < self.start
    }
}

impl std::fmt::Display for FrameRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl Sequence {
    /// First frame number.
    pub fn start(&self) -> i64 {
        self.frames.first().map_or(0, |f| f.number)
    }

    /// Last frame number.
    pub fn end(&self) -> i64 {
        self.frames.last().map_or(0, |f| f.number)
    }

    /// Lower-case extension.
    pub fn ext_lower(&self) -> String {
        self.ext.to_ascii_lowercase()
    }

    /// printf-style padding, e.g. `%04d`.
    pub fn pad_printf(&self) -> String {
        format!("%0{}d", self.pad)
    }

    /// `head%04d.ext`.
    pub fn pattern(&self) -> String {
        format!("{}{}.{}", self.head, self.pad_printf(), self.ext)
    }

    /// Path of a frame number, padded like this sequence.
    pub fn frame_path(&self, number: i64) -> PathBuf {
        self.dir.join(format!(
            "{}{:0width$}.{}",
            self.head,
            number,
            self.ext,
            width = self.pad
        ))
    }

    /// Path of a frame as it is on disk.
    pub fn path_of(&self, frame: &Frame) -> PathBuf {
        self.dir
            .join(format!("{}{}.{}", self.head, frame.digits, self.ext))
    }

    /// Missing frame ranges between the first and the last frame.
    pub fn missing(&self) -> Vec<FrameRange> {
        let mut out = Vec::new();
        for w in self.frames.windows(2) {
            if w[1].number > w[0].number + 1 {
                out.push(FrameRange {
                    start: w[0].number + 1,
                    end: w[1].number - 1,
                });
            }
        }
        out
    }

    /// Frames of zero bytes.
    pub fn zero_byte(&self) -> Vec<i64> {
        self.frames
            .iter()
            .filter(|f| f.size == 0)
            .map(|f| f.number)
            .collect()
    }
}

/// A movie file with the EDLs that belong to it (`<movie stem>*.edl` beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Movie {
    /// The movie file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// EDL files matched to it, sorted.
    pub edls: Vec<PathBuf>,
}

/// Something the walk could not read or chose to skip.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalkIssue {
    /// The path concerned.
    pub path: PathBuf,
    /// What happened and what to do.
    pub message: String,
    /// `true` when data may be missing from the scan (unreadable folder);
    /// `false` for notes (skipped loop, stray file).
    pub is_error: bool,
}

/// What a delivery holds.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Discovery {
    /// Image sequences, sorted by folder and head.
    pub sequences: Vec<Sequence>,
    /// Movies, sorted by path.
    pub movies: Vec<Movie>,
    /// Problems met while walking.
    pub issues: Vec<WalkIssue>,
    /// Files looked at.
    pub files_seen: u64,
}

/// Why discovery could not start at all.
#[derive(Debug, thiserror::Error)]
pub enum SeqError {
    /// The delivery folder is missing or unreadable.
    #[error("delivery folder {path}: {source}")]
    Root {
        /// The folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The delivery path is a file.
    #[error("{0} is not a folder; pass the delivery folder that holds the plates")]
    NotADir(PathBuf),
}

impl crate::error::Classify for SeqError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            SeqError::Root { source, .. } => crate::error::io_class(source),
            SeqError::NotADir(_) => crate::error::ErrorClass::Permanent,
        }
    }
}

/// A frame-like file name split into its parts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameName<'a> {
    /// Text before the digits.
    pub head: &'a str,
    /// The digits.
    pub digits: &'a str,
    /// Extension without the dot.
    pub ext: &'a str,
}

/// Splits `head<digits>.ext` when the digit run is `min..=max` long. The digit run
/// is the longest one directly before the extension; a longer run is not a frame
/// number (a date, an ID) and the file is not a frame.
pub fn parse_frame_name(name: &str, min_digits: usize, max_digits: usize) -> Option<FrameName<'_>> {
    let dot = name.rfind('.')?;
    let (stem, ext) = (&name[..dot], &name[dot + 1..]);
    if ext.is_empty() {
        return None;
    }
    let digits_len = stem.bytes().rev().take_while(u8::is_ascii_digit).count();
    if digits_len < min_digits || digits_len > max_digits {
        return None;
    }
    let split = stem.len() - digits_len;
    Some(FrameName {
        head: &stem[..split],
        digits: &stem[split..],
        ext,
    })
}

/// Walks `root` and groups what it finds.
pub fn discover(root: &Path, settings: &ScanSettings) -> Result<Discovery, SeqError> {
    let meta = std::fs::metadata(root).map_err(|source| SeqError::Root {
        path: root.to_path_buf(),
        source,
    })?;
    if !meta.is_dir() {
        return Err(SeqError::NotADir(root.to_path_buf()));
    }
    // Read the root itself now so an unreadable root is a hard error, not an issue.
    std::fs::read_dir(root).map_err(|source| SeqError::Root {
        path: root.to_path_buf(),
        source,
    })?;

    let lower = |v: &[String]| v.iter().map(|e| e.to_ascii_lowercase()).collect::<Vec<_>>();
    let image_exts = lower(&settings.image_extensions);
    let movie_exts = lower(&settings.movie_extensions);
    let skip = settings.skip_dirs.clone();

    let mut out = Discovery::default();
    // (dir, head, ext, digits-len) → frames
    type Key = (PathBuf, String, String, usize);
    let mut groups: BTreeMap<Key, Vec<Frame>> = BTreeMap::new();
    let mut movies: Vec<(PathBuf, u64)> = Vec::new();
    let mut edls: HashMap<PathBuf, Vec<String>> = HashMap::new();

    let walker = walkdir::WalkDir::new(root)
        .follow_links(settings.follow_symlinks)
        .max_depth(settings.max_depth)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !e.file_type().is_dir()
                || !skip
                    .iter()
                    .any(|s| e.file_name().to_str() == Some(s.as_str()))
        });
    for entry in walker {
        let entry = match entry {
            Ok(e) => e,
            Err(e) => {
                let path = e
                    .path()
                    .map(Path::to_path_buf)
                    .unwrap_or_else(|| root.to_path_buf());
                let (message, is_error) = if let Some(anc) = e.loop_ancestor() {
                    (
                        format!(
                            "symlink loop: this folder leads back to {}; skipped",
                            anc.display()
                        ),
                        false,
                    )
                } else if let Some(io) = e.io_error() {
                    (
                        format!(
                            "cannot read: {io}; fix the permissions and scan again, plates here are missing from the scanlist"
                        ),
                        true,
                    )
                } else {
                    (e.to_string(), true)
                };
                out.issues.push(WalkIssue {
                    path,
                    message,
                    is_error,
                });
                continue;
            }
        };
        if entry.file_type().is_dir() {
            continue;
        }
        // A FIFO, socket or device would block or never end the reads of the
        // frame, movie or EDL readers: report it instead of opening it.
        if !entry.file_type().is_file() && !entry.file_type().is_symlink() {
            out.issues.push(WalkIssue {
                path: entry.path().to_path_buf(),
                message: "not a regular file (a FIFO, socket or device); skipped".into(),
                is_error: true,
            });
            continue;
        }
        let Some(name) = entry.file_name().to_str() else {
            out.issues.push(WalkIssue {
                path: entry.path().to_path_buf(),
                message: "file name is not valid UTF-8; rename it".into(),
                is_error: true,
            });
            continue;
        };
        out.files_seen += 1;
        let dir = entry
            .path()
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let ext_l = name
            .rsplit_once('.')
            .map(|(_, e)| e.to_ascii_lowercase())
            .unwrap_or_default();
        let size = || entry.metadata().map(|m| m.len()).unwrap_or(0);
        if movie_exts.contains(&ext_l) {
            movies.push((entry.path().to_path_buf(), size()));
        } else if ext_l == "edl" {
            edls.entry(dir).or_default().push(name.to_string());
        } else if image_exts.contains(&ext_l) {
            match parse_frame_name(name, settings.min_frame_digits, settings.max_frame_digits) {
                Some(f) => {
                    let Ok(number) = f.digits.parse::<i64>() else {
                        continue;
                    };
                    groups
                        .entry((dir, f.head.to_string(), f.ext.to_string(), f.digits.len()))
                        .or_default()
                        .push(Frame {
                            number,
                            size: size(),
                            digits: f.digits.to_string(),
                        });
                }
                None => out.issues.push(WalkIssue {
                    path: entry.path().to_path_buf(),
                    message: format!(
                        "image without a {}–{} digit frame number; not part of any sequence",
                        settings.min_frame_digits, settings.max_frame_digits
                    ),
                    is_error: false,
                }),
            }
        }
    }

    out.sequences = merge_padding(groups);
    out.movies = movies
        .into_iter()
        .map(|(path, size)| {
            let stem = path
                .file_name()
                .and_then(|n| n.to_str())
                .map(|n| n.split('.').next().unwrap_or(n).to_string())
                .unwrap_or_default();
            let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
            let mut found: Vec<PathBuf> = edls
                .get(&dir)
                .map(|names| {
                    names
                        .iter()
                        .filter(|n| !stem.is_empty() && n.starts_with(&stem))
                        .map(|n| dir.join(n))
                        .collect()
                })
                .unwrap_or_default();
            found.sort();
            Movie {
                path,
                size,
                edls: found,
            }
        })
        .collect();
    out.movies.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// Groups keyed by digit count become sequences. Zero-led numbers pin the padding,
/// so mixed paddings stay separate (`plate.001` vs `plate.0001`). A wider group of
/// unpadded numbers continues a narrower one only where the numbers run across the
/// boundary (`plate.9999` → `plate.10000` at `%04d`); [`OVERFLOW_SLACK`] allows a few
/// missing frames on either side of it.
fn merge_padding(groups: BTreeMap<(PathBuf, String, String, usize), Vec<Frame>>) -> Vec<Sequence> {
    let mut by_stem: BTreeMap<(PathBuf, String, String), BTreeMap<usize, Vec<Frame>>> =
        BTreeMap::new();
    for ((dir, head, ext, len), frames) in groups {
        by_stem
            .entry((dir, head, ext))
            .or_default()
            .insert(len, frames);
    }
    let mut out = Vec::new();
    for ((dir, head, ext), by_len) in by_stem {
        // Ascending digit count; each group either continues the previous one or
        // starts a new sequence.
        let mut merged: Vec<(usize, Vec<Frame>)> = Vec::new();
        for (len, frames) in by_len {
            let unpadded = frames.iter().all(|f| !f.digits.starts_with('0'));
            let continues = match merged.last() {
                Some((pad, prev)) if *pad < len && unpadded && len <= 18 => {
                    let boundary = 10_i64.pow(len as u32 - 1);
                    let prev_max = prev.iter().map(|f| f.number).max().unwrap_or(0);
                    let min = frames.iter().map(|f| f.number).min().unwrap_or(0);
                    prev_max >= boundary - OVERFLOW_SLACK && min <= boundary + OVERFLOW_SLACK
                }
                _ => false,
            };
            match merged.last_mut() {
                Some((_, prev)) if continues => prev.extend(frames),
                _ => merged.push((len, frames)),
            }
        }
        for (pad, mut frames) in merged {
            frames.sort_by_key(|f| f.number);
            frames.dedup_by_key(|f| f.number);
            out.push(Sequence {
                dir: dir.clone(),
                head: head.clone(),
                pad,
                ext: ext.clone(),
                frames,
            });
        }
    }
    out
}

/// How many frames may be missing on either side of a padding overflow for the
/// wider numbers still to count as the same sequence.
const OVERFLOW_SLACK: i64 = 100;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_names() {
        let p = |n| parse_frame_name(n, 3, 8);
        assert_eq!(
            p("plate.1001.exr"),
            Some(FrameName {
                head: "plate.",
                digits: "1001",
                ext: "exr"
            })
        );
        assert_eq!(p("plate_001001.dpx").unwrap().head, "plate_");
        assert_eq!(p("plate1001.jpg").unwrap().head, "plate");
        assert_eq!(p("A001C003_plate.12345678.exr").unwrap().digits, "12345678");
        assert!(p("plate.123456789.exr").is_none());
        assert!(p("plate.12.exr").is_none());
        assert!(p("plate.exr").is_none());
        assert!(p("1001.exr").is_some_and(|f| f.head.is_empty()));
    }

    fn frames(nums: &[(&str, i64)]) -> Vec<Frame> {
        nums.iter()
            .map(|(d, n)| Frame {
                number: *n,
                size: 1,
                digits: d.to_string(),
            })
            .collect()
    }

    #[test]
    fn padding_merge_rules() {
        let mut g = BTreeMap::new();
        let k = |len| {
            (
                PathBuf::from("/d"),
                "p.".to_string(),
                "exr".to_string(),
                len,
            )
        };
        g.insert(k(4), frames(&[("9998", 9998), ("9999", 9999)]));
        g.insert(k(5), frames(&[("10000", 10000)]));
        g.insert(k(3), frames(&[("001", 1), ("002", 2)]));
        g.insert(k(6), frames(&[("500000", 500_000)]));
        let seqs = merge_padding(g);
        // 10000 continues the 4-padded run; 001 (zero-led) and 500000 (far from
        // the boundary) stay apart.
        assert_eq!(seqs.len(), 3, "{seqs:#?}");
        let s4 = seqs.iter().find(|s| s.pad == 4).unwrap();
        assert_eq!(s4.frames.len(), 3);
        assert_eq!(s4.end(), 10000);
        assert_eq!(s4.frame_path(10000), PathBuf::from("/d/p.10000.exr"));
        let s3 = seqs.iter().find(|s| s.pad == 3).unwrap();
        assert_eq!(s3.pattern(), "p.%03d.exr");
    }

    #[test]
    fn missing_ranges() {
        let s = Sequence {
            dir: PathBuf::from("/d"),
            head: "p.".into(),
            pad: 4,
            ext: "exr".into(),
            frames: frames(&[
                ("1001", 1001),
                ("1002", 1002),
                ("1005", 1005),
                ("1007", 1007),
            ]),
        };
        assert_eq!(
            s.missing(),
            vec![
                FrameRange {
                    start: 1003,
                    end: 1004
                },
                FrameRange {
                    start: 1006,
                    end: 1006
                }
            ]
        );
        assert_eq!(s.missing()[0].to_string(), "1003-1004");
    }
}
