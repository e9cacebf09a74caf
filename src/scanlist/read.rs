//! Reading a scanlist back, by header name, from any layout the original wrote.
//!
//! What is accepted (original-app.md §1.1, §2):
//! - The file is sniffed, not trusted by name: `PK\x03\x04` is XLSX even when named
//!   `.xls` (the original wrote every file that way). A real binary `.xls` (BIFF,
//!   `D0 CF 11 E0`) is refused with a message saying to re-save it as `.xlsx`:
//!   calamine's BIFF reader sizes its cell buffer from the file's own DIMENSIONS
//!   record and cell coordinates, so a hostile 1-KB file can make it allocate
//!   gigabytes and abort the process; iom never wrote BIFF, so only a hand re-save
//!   produces one.
//! - The sheet `settings.sheet_name`, else the first worksheet (with a warning).
//! - Row 1 is the header. Columns are found by name (trimmed, case-insensitive);
//!   `duraiton` is an alias of `duration`; a missing column reads as empty. So the
//!   23-, 24-, 25- and 26-column layouts all read correctly (see [`Layout`]).
//! - `check` is true for any value but empty, `0` and `false` (`o`, `x`, `1`, TRUE …).
//! - A timecode that Excel turned into a number (`1000000`) is repaired to
//!   `01:00:00:00` (`%08d`, split in pairs); the text `NaN` reads as empty; whole
//!   floats (`1001.0`) read as integers.
//! - The thumbnail path is rebuilt from the basename in the cell: movies
//!   (`mov`, `mxf`, `mp4`) keep theirs in `<scan_path>/.thumbnail/` (the original
//!   forgot `mxf`); sequences in `<parent of scan_path>/.thumbnail/` (§2, §8), except
//!   a sequence lying in the delivery folder itself, whose thumbnail the scan puts in
//!   `<scan_path>/.thumbnail/` so nothing is written outside the delivery.
//!
//! What is refused, with an error naming the file, sheet, cell and column: any
//! formula (a scanlist is read back and drives publishing, so `=HYPERLINK(...)` or a
//! computed path must not slip in), an unknown or duplicated header, a row-1 without
//! any known header, a value in a column without a header, a `scan_path` that is
//! not absolute or (lexically normalised) lies outside `delivery_root`, text in a
//! numeric column and out-of-range numbers.
//!
//! The sheet is streamed cell by cell (never expanded to a dense grid), so a cell
//! at `XFD1048576` costs one entry, not a billion.

use std::collections::BTreeMap;
use std::io::Read as _;
use std::path::{Component, Path, PathBuf};

use calamine::{DataRef, Reader, SheetType, Xlsx, XlsxFormulaMetadata};

use super::{CellAt, Row, ScanlistError, COLUMNS, THUMBNAIL_DIR};
use crate::config::ScanlistSettings;
use crate::media::MediaFormat;

/// Largest workbook file read: a scanlist with a thousand thumbnails is ≈ 40 MB.
const MAX_FILE_BYTES: u64 = 256 * 1024 * 1024;
/// Most non-empty cells read from the sheet (≈ 76 000 full rows); guards memory
/// against a hostile or runaway sheet.
const MAX_CELLS: usize = 2_000_000;
/// Largest frame number (absolute value) accepted in frame columns.
const MAX_FRAME: i64 = 1_000_000_000;
/// Largest version number.
const MAX_VERSION: i64 = 99_999;
/// Largest `|retime_percent|`.
const MAX_RETIME_PERCENT: f64 = 100_000.0;
/// Largest frame rate.
const MAX_FPS: f64 = 1000.0;

/// Which of the original's column sets a sheet has (original-app.md §1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Layout {
    /// 2019-10 → 2019-12: no `thumbnail`, `clip_name`, `clip_tag`.
    Columns23,
    /// 2019-12 → 2020-07: no `clip_name`, `clip_tag`.
    Columns24,
    /// 2020-07 → 2021-05: no `clip_tag`.
    Columns25,
    /// 2021-05 → today: all 26 (`duration` or the old `duraiton`).
    Columns26,
    /// Any other subset of the known columns (the missing ones read as empty).
    Custom,
}

/// A scanlist read from a workbook.
#[derive(Debug, Clone, PartialEq)]
pub struct Scanlist {
    /// The data rows, in sheet order; empty rows are skipped.
    pub rows: Vec<Row>,
    /// The 1-based sheet row of each entry of `rows` (the header is row 1), so
    /// errors about a row name the row the user sees even after blank rows.
    pub row_numbers: Vec<usize>,
    /// The column set found.
    pub layout: Layout,
    /// Things the user should know that did not stop the read (sheet fallback,
    /// missing columns, normalised paths, suspicious values).
    pub warnings: Vec<String>,
    /// The file read.
    pub path: PathBuf,
    /// The sheet read.
    pub sheet: String,
}

/// Reads the scanlist at `path` (see the module doc). When `delivery_root` is
/// given, every `scan_path` must lie inside it. Thumbnails are looked for in
/// [`THUMBNAIL_DIR`] folders.
pub fn read(
    path: &Path,
    settings: &ScanlistSettings,
    delivery_root: Option<&Path>,
) -> Result<Scanlist, ScanlistError> {
    read_with_thumbnail_dir(path, settings, delivery_root, THUMBNAIL_DIR)
}

/// [`read`] with a thumbnail folder name other than `.thumbnail`
/// (`thumbnail.dir_name` in the settings).
pub fn read_with_thumbnail_dir(
    path: &Path,
    settings: &ScanlistSettings,
    delivery_root: Option<&Path>,
    thumbnail_dir: &str,
) -> Result<Scanlist, ScanlistError> {
    let file = open_sniffed(path)?;
    let not_wb = |detail: String| ScanlistError::NotAWorkbook {
        path: path.to_path_buf(),
        detail,
    };
    let mut wb: Xlsx<_> = Xlsx::new(std::io::BufReader::new(file)).map_err(|e| {
        not_wb(format!(
            "{e}; the file may be truncated or corrupt: copy it again, or open it in Excel \
             and save it again as .xlsx"
        ))
    })?;
    let is_1904 = wb.has_1904_epoch();

    let mut warnings = Vec::new();
    let sheet = choose_sheet(&wb, path, &settings.sheet_name, &mut warnings)?;
    let grid = read_grid(&mut wb, path, &sheet, is_1904)?;

    let scanlist_dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .map(|p| normalise(&std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())));
    let root = delivery_root
        .map(|r| normalise(&std::path::absolute(r).unwrap_or_else(|_| r.to_path_buf())));
    let ctx = Ctx {
        path,
        sheet: &sheet,
        root: root.as_deref(),
        scanlist_dir: scanlist_dir.as_deref(),
        thumbnail_dir,
    };

    if let Some(((r, c), formula)) = &grid.first_formula {
        let column = column_name_at(&grid, *c);
        return Err(ScanlistError::Formula {
            path: path.to_path_buf(),
            at: Box::new(CellAt {
                sheet: sheet.clone(),
                cell: cell_ref(*r, *c),
                column,
            }),
            formula: formula.clone(),
        });
    }

    let header = parse_header(&ctx, &grid)?;
    let layout = layout_of(&header.cols);
    if layout == Layout::Custom {
        let missing: Vec<&str> = COLUMNS
            .iter()
            .zip(header.cols.iter())
            .filter(|(_, c)| c.is_none())
            .map(|(n, _)| *n)
            .collect();
        warnings.push(format!(
            "{}: sheet {sheet:?} lacks the columns {}; they read as empty",
            path.display(),
            missing.join(", ")
        ));
    }

    // Group the data cells by row; refuse values in columns without a header.
    let mut rows: BTreeMap<u32, [Option<&Value>; 26]> = BTreeMap::new();
    for (&(r, c), v) in grid.cells.range((1, 0)..) {
        let Some(k) = header.by_sheet_col.get(&c) else {
            return Err(ctx.cell_err(
                r,
                c,
                "no header",
                "this cell has a value but its column has no header in row 1; give the column \
                 a scanlist header or clear it"
                    .into(),
            ));
        };
        rows.entry(r).or_insert([None; 26])[*k] = Some(v);
    }

    let mut out = Vec::with_capacity(rows.len());
    let mut row_numbers = Vec::with_capacity(rows.len());
    for (r, cells) in &rows {
        out.push(parse_row(&ctx, &header, *r, cells, &mut warnings)?);
        row_numbers.push(*r as usize + 1);
    }
    Ok(Scanlist {
        rows: out,
        row_numbers,
        layout,
        warnings,
        path: path.to_path_buf(),
        sheet,
    })
}

/// What a file turned out to be from its first bytes.
fn open_sniffed(path: &Path) -> Result<std::fs::File, ScanlistError> {
    let io = |source| ScanlistError::Io {
        path: path.to_path_buf(),
        source,
    };
    let not_wb = |detail: String| ScanlistError::NotAWorkbook {
        path: path.to_path_buf(),
        detail,
    };
    let mut file = std::fs::File::open(path).map_err(io)?;
    let len = file.metadata().map_err(io)?.len();
    if len == 0 {
        return Err(not_wb("the file is empty (0 bytes)".into()));
    }
    if len > MAX_FILE_BYTES {
        return Err(not_wb(format!(
            "the file is {len} bytes; a scanlist is far smaller (limit {MAX_FILE_BYTES})"
        )));
    }
    let mut magic = [0u8; 8];
    let mut got = 0;
    while got < magic.len() {
        let n = file.read(&mut magic[got..]).map_err(io)?;
        if n == 0 {
            break;
        }
        got += n;
    }
    let magic = &magic[..got];
    if magic.starts_with(b"PK\x03\x04") {
        // Xlsx::new seeks back to the start itself (it reads the zip directory).
        return Ok(file);
    }
    if magic.starts_with(&[0xD0, 0xCF, 0x11, 0xE0]) {
        return Err(ScanlistError::LegacyXls {
            path: path.to_path_buf(),
        });
    }
    let what = if magic.starts_with(b"PK") {
        "a zip file without a workbook at its start (an empty or spanned zip)".to_string()
    } else if magic
        .iter()
        .all(|b| b.is_ascii_graphic() || b.is_ascii_whitespace())
    {
        "it is plain text (a CSV or an export?), not a workbook; save it from Excel as .xlsx"
            .to_string()
    } else {
        format!("unknown file signature {magic:02X?}; expected an .xlsx (zip) workbook")
    };
    Err(not_wb(what))
}

/// The sheet to read: the configured name, else (with a warning) a case-insensitive
/// match, else the first worksheet that is not the `issues` sheet.
fn choose_sheet(
    wb: &Xlsx<std::io::BufReader<std::fs::File>>,
    path: &Path,
    wanted: &str,
    warnings: &mut Vec<String>,
) -> Result<String, ScanlistError> {
    let sheets: Vec<String> = wb
        .sheets_metadata()
        .iter()
        .filter(|s| s.typ == SheetType::WorkSheet)
        .map(|s| s.name.clone())
        .collect();
    if sheets.iter().any(|s| s == wanted) {
        return Ok(wanted.to_string());
    }
    let fallback = sheets
        .iter()
        .find(|s| s.eq_ignore_ascii_case(wanted))
        .or_else(|| {
            sheets
                .iter()
                .find(|s| !s.eq_ignore_ascii_case(super::write::ISSUES_SHEET))
        })
        .or_else(|| sheets.first())
        .cloned()
        .ok_or_else(|| ScanlistError::NoSheet {
            path: path.to_path_buf(),
            detail: "the workbook has no worksheet".into(),
        })?;
    warnings.push(format!(
        "{}: no sheet named {wanted:?}; read sheet {fallback:?} instead",
        path.display()
    ));
    Ok(fallback)
}

/// One non-empty cell value, owned.
#[derive(Debug, Clone, PartialEq)]
enum Value {
    Int(i64),
    Float(f64),
    Text(String),
    Bool(bool),
    /// An Excel date/time serial (days since 1899-12-30), already moved off the 1904 epoch.
    Date(f64),
    /// An error value such as `#REF!`.
    Error(String),
}

/// The sheet's non-empty cells by absolute (row, column), plus the first formula.
struct Grid {
    cells: BTreeMap<(u32, u32), Value>,
    first_formula: Option<((u32, u32), String)>,
}

fn read_grid(
    wb: &mut Xlsx<std::io::BufReader<std::fs::File>>,
    path: &Path,
    sheet: &str,
    is_1904: bool,
) -> Result<Grid, ScanlistError> {
    let not_wb = |e: calamine::XlsxError| ScanlistError::NotAWorkbook {
        path: path.to_path_buf(),
        detail: format!(
            "sheet {sheet:?} cannot be read: {e}; the file may be corrupt: open it in Excel \
             and save it again as .xlsx"
        ),
    };
    let mut reader = wb.worksheet_cells_reader(sheet).map_err(not_wb)?;
    let mut grid = Grid {
        cells: BTreeMap::new(),
        first_formula: None,
    };
    while let Some(rec) = reader.next_cell_with_formula_metadata().map_err(not_wb)? {
        if let Some(f) = rec.formula {
            let text = match f {
                XlsxFormulaMetadata::Normal { formula }
                | XlsxFormulaMetadata::Shared { formula, .. } => shorten(&formula),
                XlsxFormulaMetadata::SharedDerived { .. } => "(a shared formula)".to_string(),
                // Future kinds of formula are formulas too.
                _ => "(a formula)".to_string(),
            };
            let earlier = grid
                .first_formula
                .as_ref()
                .is_some_and(|(p, _)| *p <= rec.pos);
            if !earlier {
                grid.first_formula = Some((rec.pos, text));
            }
        }
        let v = match rec.value {
            DataRef::Empty => continue,
            DataRef::Int(i) => Value::Int(i),
            DataRef::Float(f) => Value::Float(f),
            DataRef::String(s) => Value::Text(s),
            DataRef::SharedString(s) => Value::Text(s.to_string()),
            DataRef::Bool(b) => Value::Bool(b),
            DataRef::DateTime(d) => {
                let offset = if is_1904 && d.is_datetime() {
                    1462.0
                } else {
                    0.0
                };
                Value::Date(d.as_f64() + offset)
            }
            DataRef::DateTimeIso(s) | DataRef::DurationIso(s) => Value::Text(s),
            DataRef::Error(e) => Value::Error(e.to_string()),
        };
        if matches!(&v, Value::Text(s) if s.trim().is_empty()) {
            continue;
        }
        if grid.cells.len() >= MAX_CELLS {
            return Err(ScanlistError::NotAWorkbook {
                path: path.to_path_buf(),
                detail: format!(
                    "sheet {sheet:?} has more than {MAX_CELLS} filled cells; a scanlist is far \
                     smaller"
                ),
            });
        }
        grid.cells.insert(rec.pos, v);
    }
    Ok(grid)
}

fn shorten(s: &str) -> String {
    const MAX: usize = 80;
    if s.chars().count() <= MAX {
        s.to_string()
    } else {
        let cut: String = s.chars().take(MAX).collect();
        format!("{cut}…")
    }
}

/// Paths and names used in messages, and where the plates may be.
struct Ctx<'a> {
    path: &'a Path,
    sheet: &'a str,
    root: Option<&'a Path>,
    scanlist_dir: Option<&'a Path>,
    thumbnail_dir: &'a str,
}

impl Ctx<'_> {
    fn cell_err(&self, r: u32, c: u32, column: &str, message: String) -> ScanlistError {
        ScanlistError::Cell {
            path: self.path.to_path_buf(),
            at: Box::new(CellAt {
                sheet: self.sheet.to_string(),
                cell: cell_ref(r, c),
                column: column.to_string(),
            }),
            message,
        }
    }
}

/// The header: for each of the 26 columns, its sheet column if present.
struct Header {
    cols: [Option<u32>; 26],
    by_sheet_col: BTreeMap<u32, usize>,
}

fn parse_header(ctx: &Ctx<'_>, grid: &Grid) -> Result<Header, ScanlistError> {
    let mut cells = Vec::new();
    for (&(_, c), v) in grid.cells.range((0, 0)..(1, 0)) {
        let text = match v {
            Value::Error(e) => e.clone(),
            other => to_text(other).unwrap_or_default(),
        };
        let name = text.trim().to_lowercase();
        let key = if name == "duraiton" {
            "duration".to_string()
        } else {
            name
        };
        cells.push((c, key, text.trim().to_string()));
    }
    let known = |k: &str| COLUMNS.iter().position(|n| *n == k);
    if !cells.iter().any(|(_, k, _)| known(k).is_some()) {
        return Err(ScanlistError::NoHeader {
            path: ctx.path.to_path_buf(),
            sheet: ctx.sheet.to_string(),
        });
    }
    let mut header = Header {
        cols: [None; 26],
        by_sheet_col: BTreeMap::new(),
    };
    for (c, key, raw) in cells {
        let Some(k) = known(&key) else {
            return Err(ScanlistError::UnknownHeader {
                path: ctx.path.to_path_buf(),
                sheet: ctx.sheet.to_string(),
                cell: cell_ref(0, c),
                header: raw,
            });
        };
        if let Some(first) = header.cols[k] {
            return Err(ScanlistError::DuplicateHeader {
                path: ctx.path.to_path_buf(),
                sheet: ctx.sheet.to_string(),
                header: COLUMNS[k].to_string(),
                cells: format!("{} and {}", cell_ref(0, first), cell_ref(0, c)),
            });
        }
        header.cols[k] = Some(c);
        header.by_sheet_col.insert(c, k);
    }
    Ok(header)
}

/// The column name to show for sheet column `c` (from row 1, whatever it says).
fn column_name_at(grid: &Grid, c: u32) -> String {
    match grid.cells.get(&(0, c)) {
        Some(v) => to_text(v)
            .map(|t| t.trim().to_string())
            .unwrap_or_else(|_| "no header".into()),
        None => "no header".into(),
    }
}

fn layout_of(cols: &[Option<u32>; 26]) -> Layout {
    let has = |name: &str| {
        COLUMNS
            .iter()
            .position(|n| *n == name)
            .and_then(|k| cols[k])
            .is_some()
    };
    let others_present = COLUMNS
        .iter()
        .filter(|n| !matches!(**n, "thumbnail" | "clip_name" | "clip_tag"))
        .all(|n| has(n));
    if !others_present {
        return Layout::Custom;
    }
    match (has("thumbnail"), has("clip_name"), has("clip_tag")) {
        (true, true, true) => Layout::Columns26,
        (true, true, false) => Layout::Columns25,
        (true, false, false) => Layout::Columns24,
        (false, false, false) => Layout::Columns23,
        _ => Layout::Custom,
    }
}

/// `A1`-style reference of a 0-based (row, column).
pub fn cell_ref(row: u32, col: u32) -> String {
    let mut letters = Vec::new();
    let mut n = u64::from(col) + 1;
    while n > 0 {
        let rem = ((n - 1) % 26) as u8;
        letters.push(char::from(b'A' + rem));
        n = (n - 1) / 26;
    }
    letters.reverse();
    let letters: String = letters.into_iter().collect();
    format!("{letters}{}", u64::from(row) + 1)
}

fn is_nan_text(s: &str) -> bool {
    s.trim().eq_ignore_ascii_case("nan")
}

/// A value as text: numbers as written (`1001`, not `1001.0`), dates as
/// `YYYY-mm-dd HH:MM:SS`.
fn to_text(v: &Value) -> Result<String, String> {
    Ok(match v {
        Value::Int(i) => i.to_string(),
        Value::Float(f) => {
            if f.is_finite() && f.fract() == 0.0 && f.abs() < 1e15 {
                format!("{}", *f as i64)
            } else {
                f.to_string()
            }
        }
        Value::Text(s) => s.clone(),
        Value::Bool(b) => if *b { "TRUE" } else { "FALSE" }.to_string(),
        Value::Date(d) => {
            excel_date_text(*d).ok_or_else(|| format!("the date serial {d} is out of range"))?
        }
        Value::Error(e) => return Err(format!("the cell holds the error {e}; type a value")),
    })
}

/// Formats an Excel 1900-system serial as `YYYY-mm-dd HH:MM:SS`.
fn excel_date_text(serial: f64) -> Option<String> {
    // 2958465 is 9999-12-31, Excel's last date.
    if !serial.is_finite() || !(0.0..2_958_466.0).contains(&serial) {
        return None;
    }
    let mut days = serial.floor() as i64;
    let mut secs = ((serial - serial.floor()) * 86_400.0).round() as i64;
    if secs >= 86_400 {
        days += 1;
        secs -= 86_400;
    }
    // Days since 1899-12-30 → days since 1970-01-01, then the civil calendar
    // (H. Hinnant's days-to-civil algorithm).
    let z = days - 25_569 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    Some(format!(
        "{y:04}-{m:02}-{d:02} {:02}:{:02}:{:02}",
        secs / 3600,
        (secs / 60) % 60,
        secs % 60
    ))
}

/// The digits of a version typed as its folder shows it: `v003`, `V3` → `003`, `3`.
fn folder_version(t: &str) -> Option<&str> {
    let d = t.trim().strip_prefix(['v', 'V'])?;
    (!d.is_empty() && d.bytes().all(|b| b.is_ascii_digit())).then_some(d)
}

/// A float that must be a whole number.
fn whole(f: f64) -> Result<i64, String> {
    if !f.is_finite() {
        return Err(format!("{f} is not a number"));
    }
    if f.abs() > 9.0e15 {
        return Err(format!("{f:e} is out of range"));
    }
    if f.fract() != 0.0 {
        return Err(format!("{f} is not a whole number"));
    }
    Ok(f as i64)
}

fn to_int(v: &Value) -> Result<Option<i64>, String> {
    match v {
        Value::Int(i) => Ok(Some(*i)),
        Value::Float(f) => whole(*f).map(Some),
        Value::Text(s) => {
            let t = s.trim();
            if t.is_empty() || is_nan_text(t) {
                Ok(None)
            } else if let Ok(i) = t.parse::<i64>() {
                Ok(Some(i))
            } else if let Ok(f) = t.parse::<f64>() {
                whole(f).map(Some)
            } else {
                Err(format!("{t:?} is not a whole number"))
            }
        }
        Value::Bool(_) => Err("TRUE/FALSE is not a whole number".into()),
        Value::Date(_) => {
            Err("Excel shows this as a date; format the column as Number and retype it".into())
        }
        Value::Error(e) => Err(format!("the cell holds the error {e}; type a number")),
    }
}

fn to_float(v: &Value) -> Result<Option<f64>, String> {
    let f = match v {
        Value::Int(i) => *i as f64,
        Value::Float(f) => *f,
        Value::Text(s) => {
            let t = s.trim();
            if t.is_empty() || is_nan_text(t) {
                return Ok(None);
            }
            t.parse::<f64>()
                .map_err(|_| format!("{t:?} is not a number"))?
        }
        Value::Bool(_) => return Err("TRUE/FALSE is not a number".into()),
        Value::Date(_) => {
            return Err(
                "Excel shows this as a date; format the column as Number and retype it".into(),
            )
        }
        Value::Error(e) => return Err(format!("the cell holds the error {e}; type a number")),
    };
    if !f.is_finite() {
        return Err(format!("{f} is not a finite number"));
    }
    Ok(Some(f))
}

/// `HHMMSSFF` as a number → `HH:MM:SS:FF` (`1000000` → `01:00:00:00`).
pub fn repair_numeric_timecode(n: i64) -> Option<String> {
    if !(0..100_000_000).contains(&n) {
        return None;
    }
    let s = format!("{n:08}");
    Some(format!(
        "{}:{}:{}:{}",
        &s[0..2],
        &s[2..4],
        &s[4..6],
        &s[6..8]
    ))
}

fn to_timecode(v: &Value) -> Result<String, String> {
    let repair = |n: i64| {
        repair_numeric_timecode(n)
            .ok_or_else(|| format!("{n} is not a timecode; type it as text HH:MM:SS:FF"))
    };
    match v {
        Value::Int(i) => repair(*i),
        Value::Float(f) => repair(whole(*f)?),
        Value::Text(s) => {
            let t = s.trim();
            if is_nan_text(t) {
                Ok(String::new())
            } else if !t.is_empty() && t.len() <= 8 && t.bytes().all(|b| b.is_ascii_digit()) {
                // The same repair for a number stored as text.
                repair(t.parse::<i64>().map_err(|e| e.to_string())?)
            } else {
                Ok(t.to_string())
            }
        }
        Value::Date(_) => Err(
            "Excel turned this timecode into a date or time; format the column as Text and \
             type HH:MM:SS:FF"
                .into(),
        ),
        Value::Bool(_) => Err("TRUE/FALSE is not a timecode".into()),
        Value::Error(e) => Err(format!("the cell holds the error {e}; type HH:MM:SS:FF")),
    }
}

/// `check`: anything but empty, `0` and `false` (any case) counts as checked.
fn to_check(v: &Value) -> Result<bool, String> {
    Ok(match v {
        Value::Bool(b) => *b,
        Value::Int(i) => *i != 0,
        Value::Float(f) => *f != 0.0,
        Value::Text(s) => {
            let t = s.trim();
            !(t.is_empty() || t == "0" || t.eq_ignore_ascii_case("false") || is_nan_text(t))
        }
        Value::Date(_) => true,
        Value::Error(e) => {
            return Err(format!(
                "the cell holds the error {e}; type o or leave it empty"
            ))
        }
    })
}

/// Removes `.` and resolves `..` without touching the file system (`/..` stays `/`).
pub fn normalise(p: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::Prefix(_) | Component::RootDir | Component::Normal(_) => out.push(c),
            Component::CurDir => {}
            Component::ParentDir => {
                out.pop();
            }
        }
    }
    out
}

fn parse_row(
    ctx: &Ctx<'_>,
    header: &Header,
    r: u32,
    cells: &[Option<&Value>; 26],
    warnings: &mut Vec<String>,
) -> Result<Row, ScanlistError> {
    // (sheet column, value) of a known column in this row, if filled.
    let get = |name: &'static str| -> Option<(u32, &Value)> {
        let k = COLUMNS.iter().position(|n| *n == name)?;
        Some((header.cols[k]?, cells[k]?))
    };
    let err = |name: &str, c: u32, m: String| ctx.cell_err(r, c, name, m);
    let text = |name: &'static str| -> Result<String, ScanlistError> {
        match get(name) {
            None => Ok(String::new()),
            Some((c, v)) => {
                let t = to_text(v).map_err(|m| err(name, c, m))?;
                Ok(if is_nan_text(&t) { String::new() } else { t })
            }
        }
    };
    // Free text is trimmed; paths and names are kept as typed (a folder may end in a space).
    let trimmed = |name: &'static str| text(name).map(|t| t.trim().to_string());
    let int = |name: &'static str, min: i64, max: i64| -> Result<Option<i64>, ScanlistError> {
        let Some((c, v)) = get(name) else {
            return Ok(None);
        };
        let n = to_int(v).map_err(|m| err(name, c, m))?;
        match n {
            Some(n) if !(min..=max).contains(&n) => Err(err(
                name,
                c,
                format!("{n} is out of range ({min} to {max})"),
            )),
            n => Ok(n),
        }
    };
    let float =
        |name: &'static str, min: f64, max: f64| -> Result<Option<(u32, f64)>, ScanlistError> {
            let Some((c, v)) = get(name) else {
                return Ok(None);
            };
            match to_float(v).map_err(|m| err(name, c, m))? {
                Some(f) if !(min..=max).contains(&f) => Err(err(
                    name,
                    c,
                    format!("{f} is out of range ({min} to {max})"),
                )),
                f => Ok(f.map(|f| (c, f))),
            }
        };
    let timecode = |name: &'static str| -> Result<String, ScanlistError> {
        match get(name) {
            None => Ok(String::new()),
            Some((c, v)) => to_timecode(v).map_err(|m| err(name, c, m)),
        }
    };

    let check = match get("check") {
        None => false,
        Some((c, v)) => to_check(v).map_err(|m| err("check", c, m))?,
    };

    // scan_path: absolute, normalised, inside the delivery root.
    let raw_path = text("scan_path")?;
    let path_col = COLUMNS
        .iter()
        .position(|n| *n == "scan_path")
        .and_then(|k| header.cols[k])
        .unwrap_or(0);
    let bad_path = |m: String| err("scan_path", path_col, m);
    if raw_path.trim().is_empty() {
        return Err(bad_path(
            "scan_path is empty; every row needs the absolute folder of its plate".into(),
        ));
    }
    if raw_path.chars().any(char::is_control) {
        return Err(bad_path(format!(
            "{raw_path:?} contains a control character (a line break?); retype the path"
        )));
    }
    let p = Path::new(&raw_path);
    if !p.is_absolute() {
        return Err(bad_path(format!(
            "{raw_path:?} is not an absolute path; give the full folder path"
        )));
    }
    let scan_path = normalise(p);
    if let Some(root) = ctx.root {
        if !scan_path.starts_with(root) {
            return Err(bad_path(format!(
                "{raw_path:?} is outside the delivery {}; only plates inside it can be read",
                root.display()
            )));
        }
    }
    if p.components().any(|c| c == Component::ParentDir) {
        warnings.push(format!(
            "row {}: scan_path {raw_path:?} read as {}",
            r + 1,
            scan_path.display()
        ));
    }
    let scan_path_text = scan_path.to_string_lossy().into_owned();

    let ext = trimmed("ext")?;
    let thumbnail = match get("thumbnail") {
        None => None,
        Some((c, v)) => {
            let t = to_text(v).map_err(|m| err("thumbnail", c, m))?;
            thumbnail_path(ctx, r, t.trim(), &scan_path, &ext, warnings)
        }
    };

    // Typed as a number, or as the folder name shows it (`v003`, `V3`).
    let version = match get("version") {
        Some((c, Value::Text(t))) => match (t.trim(), folder_version(t)) {
            (_, Some(digits)) => match digits.parse::<i64>() {
                Ok(n) if n <= MAX_VERSION => Some(n as u32),
                _ => {
                    return Err(err(
                        "version",
                        c,
                        format!("{t:?} is out of range (0 to {MAX_VERSION})"),
                    ))
                }
            },
            (t, None) if !t.is_empty() && !is_nan_text(t) && t.parse::<f64>().is_err() => {
                return Err(err(
                    "version",
                    c,
                    format!("{t:?} is not a version; type its number: 3 or v003"),
                ));
            }
            _ => int("version", 0, MAX_VERSION)?.map(|v| v as u32),
        },
        _ => int("version", 0, MAX_VERSION)?.map(|v| v as u32),
    };
    let framerate = match float("framerate", 0.0, MAX_FPS)? {
        Some((_, 0.0)) => {
            warnings.push(format!("row {}: framerate 0 read as empty", r + 1));
            None
        }
        f => f.map(|(_, f)| f),
    };
    let row = Row {
        check,
        thumbnail,
        roll: trimmed("roll")?,
        seq_name: trimmed("seq_name")?,
        shot_name: trimmed("shot_name")?,
        version,
        seq_type: trimmed("type")?,
        scan_path: scan_path_text,
        scan_name: text("scan_name")?,
        clip_name: text("clip_name")?,
        pad: trimmed("pad")?,
        ext,
        resolution: trimmed("resolution")?,
        start_frame: int("start_frame", -MAX_FRAME, MAX_FRAME)?,
        end_frame: int("end_frame", -MAX_FRAME, MAX_FRAME)?,
        duration: int("duration", 0, MAX_FRAME)?,
        retime_duration: int("retime_duration", 0, MAX_FRAME)?,
        retime_percent: float("retime_percent", -MAX_RETIME_PERCENT, MAX_RETIME_PERCENT)?
            .map(|(_, f)| f),
        retime_start_frame: int("retime_start_frame", -MAX_FRAME, MAX_FRAME)?,
        timecode_in: timecode("timecode_in")?,
        timecode_out: timecode("timecode_out")?,
        just_in: int("just_in", -MAX_FRAME, MAX_FRAME)?,
        just_out: int("just_out", -MAX_FRAME, MAX_FRAME)?,
        framerate,
        date: trimmed("date")?,
        clip_tag: trimmed("clip_tag")?,
    };
    if let (Some(a), Some(b)) = (row.just_in, row.just_out) {
        if a > b {
            warnings.push(format!(
                "row {}: just_in {a} is after just_out {b}; fix the range before publishing",
                r + 1
            ));
        }
    }
    Ok(row)
}

/// Rebuilds a thumbnail's full path from the basename in the cell (module doc).
fn thumbnail_path(
    ctx: &Ctx<'_>,
    r: u32,
    cell: &str,
    scan_path: &Path,
    ext: &str,
    warnings: &mut Vec<String>,
) -> Option<PathBuf> {
    if cell.is_empty() || is_nan_text(cell) {
        return None;
    }
    let base = cell.rsplit(['/', '\\']).next().unwrap_or(cell);
    if base != cell {
        warnings.push(format!(
            "row {}: thumbnail {cell:?} is a path; only its name {base:?} is used",
            r + 1
        ));
    }
    if base.is_empty() || base == "." || base == ".." {
        warnings.push(format!(
            "row {}: thumbnail {cell:?} has no file name; ignored",
            r + 1
        ));
        return None;
    }
    let movie = MediaFormat::from_extension(ext) == Some(MediaFormat::Movie);
    let in_delivery = Some(scan_path) == ctx.root || Some(scan_path) == ctx.scanlist_dir;
    let dir = if movie || in_delivery {
        scan_path
    } else {
        scan_path.parent().unwrap_or(scan_path)
    };
    Some(dir.join(ctx.thumbnail_dir).join(base))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cell_refs() {
        assert_eq!(cell_ref(0, 0), "A1");
        assert_eq!(cell_ref(4, 7), "H5");
        assert_eq!(cell_ref(0, 25), "Z1");
        assert_eq!(cell_ref(0, 26), "AA1");
        assert_eq!(cell_ref(9, 701), "ZZ10");
        assert_eq!(cell_ref(1_048_575, 16_383), "XFD1048576");
    }

    #[test]
    fn numeric_timecodes_are_repaired() {
        assert_eq!(to_timecode(&Value::Int(1_000_000)).unwrap(), "01:00:00:00");
        assert_eq!(
            to_timecode(&Value::Float(23_595_923.0)).unwrap(),
            "23:59:59:23"
        );
        assert_eq!(to_timecode(&Value::Float(0.0)).unwrap(), "00:00:00:00");
        assert_eq!(
            to_timecode(&Value::Text("1000000".into())).unwrap(),
            "01:00:00:00"
        );
        assert_eq!(
            to_timecode(&Value::Text("01:00:00:00".into())).unwrap(),
            "01:00:00:00"
        );
        assert_eq!(to_timecode(&Value::Text("NaN".into())).unwrap(), "");
        assert!(to_timecode(&Value::Float(1.5)).is_err());
        assert!(to_timecode(&Value::Int(-1)).is_err());
        assert!(to_timecode(&Value::Int(100_000_000)).is_err());
        assert!(to_timecode(&Value::Date(0.5)).is_err());
    }

    #[test]
    fn check_truthiness() {
        for v in ["o", "x", "1", "yes", "O"] {
            assert!(to_check(&Value::Text(v.into())).unwrap(), "{v}");
        }
        for v in ["0", "false", "FALSE", " ", "NaN"] {
            assert!(!to_check(&Value::Text(v.into())).unwrap(), "{v}");
        }
        assert!(to_check(&Value::Bool(true)).unwrap());
        assert!(!to_check(&Value::Bool(false)).unwrap());
        assert!(to_check(&Value::Int(1)).unwrap());
        assert!(!to_check(&Value::Float(0.0)).unwrap());
    }

    #[test]
    fn integers_from_floats_and_text() {
        assert_eq!(to_int(&Value::Float(1001.0)).unwrap(), Some(1001));
        assert_eq!(to_int(&Value::Text(" 1001 ".into())).unwrap(), Some(1001));
        assert_eq!(to_int(&Value::Text("1001.0".into())).unwrap(), Some(1001));
        assert_eq!(to_int(&Value::Text("NaN".into())).unwrap(), None);
        assert!(to_int(&Value::Float(1001.5)).is_err());
        assert!(to_int(&Value::Float(1e300)).is_err());
        assert!(to_int(&Value::Text("abc".into())).is_err());
        assert!(to_int(&Value::Text("inf".into())).is_err());
        assert!(to_int(&Value::Bool(true)).is_err());
    }

    #[test]
    fn paths_normalise_lexically() {
        assert_eq!(
            normalise(Path::new("/a/b/../c/./d/")),
            PathBuf::from("/a/c/d")
        );
        assert_eq!(normalise(Path::new("/../../etc")), PathBuf::from("/etc"));
        assert_eq!(normalise(Path::new("/a//b")), PathBuf::from("/a/b"));
    }

    #[test]
    fn dates_format() {
        assert_eq!(excel_date_text(45_943.5).unwrap(), "2025-10-13 12:00:00");
        assert_eq!(excel_date_text(25_569.0).unwrap(), "1970-01-01 00:00:00");
        assert!(excel_date_text(-1.0).is_none());
        assert!(excel_date_text(f64::NAN).is_none());
    }

    #[test]
    fn text_of_numbers() {
        assert_eq!(to_text(&Value::Float(1001.0)).unwrap(), "1001");
        assert_eq!(to_text(&Value::Float(23.976)).unwrap(), "23.976");
        assert_eq!(to_text(&Value::Int(-3)).unwrap(), "-3");
        assert!(to_text(&Value::Error("#REF!".into())).is_err());
    }
}
