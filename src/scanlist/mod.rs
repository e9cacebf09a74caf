//! The scanlist workbook: 26 fixed columns (original-app.md §1), written with
//! `rust_xlsxwriter` and read back with `calamine` by header name.
//!
//! - [`Row`]: one row, typed.
//! - [`write`](mod@write): writes `Sheet1` (26 columns, embedded thumbnails) and an `issues` sheet.
//! - [`read`](mod@read): reads current and legacy (23/24/25-column) layouts.

pub mod read;
pub mod write;

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// The 26 header strings, in order (`MODEL_KEYS` of the original).
pub const COLUMNS: [&str; 26] = [
    "check",
    "thumbnail",
    "roll",
    "seq_name",
    "shot_name",
    "version",
    "type",
    "scan_path",
    "scan_name",
    "clip_name",
    "pad",
    "ext",
    "resolution",
    "start_frame",
    "end_frame",
    "duration",
    "retime_duration",
    "retime_percent",
    "retime_start_frame",
    "timecode_in",
    "timecode_out",
    "just_in",
    "just_out",
    "framerate",
    "date",
    "clip_tag",
];

/// One scanlist row. Free-text columns stay `String` (empty = empty cell);
/// numeric columns are `Option` (None = empty cell).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Row {
    /// `check`: selected for publish (`o` in the sheet).
    pub check: bool,
    /// `thumbnail`: full path of the thumbnail JPEG (the sheet stores the basename).
    pub thumbnail: Option<PathBuf>,
    /// `roll`.
    pub roll: String,
    /// `seq_name`.
    pub seq_name: String,
    /// `shot_name`.
    pub shot_name: String,
    /// `version`.
    pub version: Option<u32>,
    /// `type`: org, ref, src, editor, lib.
    pub seq_type: String,
    /// `scan_path`: folder of the sequence, or of the movie.
    pub scan_path: String,
    /// `scan_name`: sequence head (`A001C003_plate.`) or movie file name.
    pub scan_name: String,
    /// `clip_name`.
    pub clip_name: String,
    /// `pad`: printf padding, e.g. `%04d`.
    pub pad: String,
    /// `ext`: lower-case extension.
    pub ext: String,
    /// `resolution`: `W x H`.
    pub resolution: String,
    /// `start_frame`.
    pub start_frame: Option<i64>,
    /// `end_frame`.
    pub end_frame: Option<i64>,
    /// `duration`.
    pub duration: Option<i64>,
    /// `retime_duration`.
    pub retime_duration: Option<i64>,
    /// `retime_percent`.
    pub retime_percent: Option<f64>,
    /// `retime_start_frame`.
    pub retime_start_frame: Option<i64>,
    /// `timecode_in`.
    pub timecode_in: String,
    /// `timecode_out`.
    pub timecode_out: String,
    /// `just_in`.
    pub just_in: Option<i64>,
    /// `just_out`.
    pub just_out: Option<i64>,
    /// `framerate`.
    pub framerate: Option<f64>,
    /// `date`.
    pub date: String,
    /// `clip_tag`.
    pub clip_tag: String,
}

/// A finding about one scanned item, shown on the `issues` sheet (Sheet1 keeps
/// its 26-column contract).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Issue {
    /// `error` (item skipped) or `warning` (row written).
    pub severity: Severity,
    /// The file or folder concerned.
    pub path: String,
    /// What is wrong and what to do.
    pub message: String,
}

/// How bad an [`Issue`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// The item produced no row.
    Error,
    /// The row was written; look at it.
    Warning,
}

pub use read::{Layout, Scanlist};

/// Default name of the thumbnail folder beside the plates (`thumbnail.dir_name`).
pub const THUMBNAIL_DIR: &str = ".thumbnail";

/// Why a scanlist could not be read or written. Every message names the file;
/// cell-level messages also name the sheet, the cell (`H5`) and the column.
#[derive(Debug, thiserror::Error)]
pub enum ScanlistError {
    /// The file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The file is not a readable `.xlsx` workbook (empty, text, truncated zip …).
    #[error("{path}: not a readable .xlsx workbook: {detail}")]
    NotAWorkbook {
        /// The file.
        path: PathBuf,
        /// What was found instead.
        detail: String,
    },
    /// A binary Excel 97-2003 file (`D0 CF 11 E0`), which iom does not read.
    #[error(
        "{path} is a binary Excel 97-2003 workbook (BIFF .xls) or a password-protected one; \
         iom reads only .xlsx: open it in Excel or LibreOffice, remove any password and save it \
         as \"Excel Workbook (.xlsx)\", then load that file"
    )]
    LegacyXls {
        /// The file.
        path: PathBuf,
    },
    /// The workbook holds no worksheet iom can read.
    #[error("{path}: {detail}")]
    NoSheet {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
    },
    /// Row 1 holds none of the known column names.
    #[error(
        "{path}: sheet {sheet:?} has no scanlist header row (expected check, thumbnail, roll, \
         seq_name, shot_name, version, type, scan_path, … in row 1)"
    )]
    NoHeader {
        /// The file.
        path: PathBuf,
        /// The sheet.
        sheet: String,
    },
    /// A header iom does not know: its column could carry data the user expects to be used.
    #[error(
        "{path}: sheet {sheet:?}, cell {cell}: unknown column {header:?}; iom reads only \
         the scanlist columns ({}): rename or delete that column",
        COLUMNS.join(", ")
    )]
    UnknownHeader {
        /// The file.
        path: PathBuf,
        /// The sheet.
        sheet: String,
        /// The header cell, e.g. `AA1`.
        cell: String,
        /// The header text.
        header: String,
    },
    /// The same column name twice (`duraiton` counts as `duration`).
    #[error(
        "{path}: sheet {sheet:?}: column {header:?} appears twice (cells {cells}); delete one \
         of them"
    )]
    DuplicateHeader {
        /// The file.
        path: PathBuf,
        /// The sheet.
        sheet: String,
        /// The column name.
        header: String,
        /// The two header cells, e.g. `P1 and Q1`.
        cells: String,
    },
    /// A formula cell: scanlists must hold plain values (no `=HYPERLINK`, no computed paths).
    #[error(
        "{path}: {at}: formulas are not accepted in a scanlist (found ={formula}); replace \
         the formula by its value (copy, paste values)"
    )]
    Formula {
        /// The file.
        path: PathBuf,
        /// Where.
        at: Box<CellAt>,
        /// The formula text (shortened).
        formula: String,
    },
    /// A cell whose value is not acceptable for its column.
    #[error("{path}: {at}: {message}")]
    Cell {
        /// The file.
        path: PathBuf,
        /// Where.
        at: Box<CellAt>,
        /// What is wrong and what to do.
        message: String,
    },
    /// The workbook could not be built or saved.
    #[error("cannot write scanlist {path}: {detail}")]
    Write {
        /// The file.
        path: PathBuf,
        /// What failed.
        detail: String,
    },
}

/// A cell of a scanlist sheet, for error messages and for a UI to point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CellAt {
    /// The sheet.
    pub sheet: String,
    /// The cell, e.g. `H5`.
    pub cell: String,
    /// The column's header (or `no header`).
    pub column: String,
}

impl std::fmt::Display for CellAt {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sheet {:?}, cell {} ({})",
            self.sheet, self.cell, self.column
        )
    }
}

impl crate::error::Classify for ScanlistError {
    fn class(&self) -> crate::error::ErrorClass {
        match self {
            ScanlistError::Io { source, .. } => crate::error::io_class(source),
            _ => crate::error::ErrorClass::Permanent,
        }
    }
}
