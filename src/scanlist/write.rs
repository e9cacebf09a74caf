//! Writing the scanlist workbook and choosing its file name.
//!
//! The layout is the original's (original-app.md §2): `Sheet1` with the 26 header
//! strings in row 1, `o` for checked rows, the thumbnail basename plus a floating
//! picture scaled by `thumbnail_scale` in the `thumbnail` cell, 144-point data rows,
//! column widths 15 / 40 (`thumbnail`) / 45 (`scan_path`). Differences on purpose:
//! empty values are empty cells (not empty strings), every text goes through
//! `write_string` so a value starting with `=` can never become a formula, and the
//! timecode cells carry the text number format so Excel cannot turn an edited
//! `01:00:00:00` into a number. Findings go to a second sheet, `issues`.
//!
//! The file is written under a hidden temporary name in the same folder, synced,
//! then renamed over the target, so a reader never sees half a workbook.

use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;

use regex::Regex;
use rust_xlsxwriter::{Format, Image, Workbook, Worksheet};

use super::{Issue, Row, ScanlistError, Severity, COLUMNS};
use crate::config::ScanlistSettings;

/// Name of the second sheet, listing the scan's findings.
pub const ISSUES_SHEET: &str = "issues";

/// Column width (characters) of every column but `thumbnail` and `scan_path`.
const WIDTH_DEFAULT: f64 = 15.0;
/// Column width of `thumbnail`.
const WIDTH_THUMBNAIL: f64 = 40.0;
/// Column width of `scan_path`.
const WIDTH_SCAN_PATH: f64 = 45.0;
/// Thumbnails larger than this are not embedded: a scan-time thumbnail is ≈ 40 KB,
/// and the workbook is held in memory while it is built.
const MAX_THUMBNAIL_BYTES: u64 = 16 * 1024 * 1024;
/// Excel's largest row height, in points.
const MAX_ROW_HEIGHT: f64 = 409.0;

fn col(name: &str) -> u16 {
    // COLUMNS is a fixed 26-entry table; every name used here is in it.
    COLUMNS.iter().position(|c| *c == name).unwrap_or(0) as u16
}

/// Writes `rows` and `issues` to `path` (see the module doc for the layout),
/// atomically. Thumbnails that are missing or unreadable keep their name in the
/// cell without a picture, and each is logged as a warning; use
/// [`write_with_warnings`] to get those warnings back instead.
pub fn write(
    path: &Path,
    rows: &[Row],
    issues: &[Issue],
    settings: &ScanlistSettings,
) -> Result<(), ScanlistError> {
    let warnings = write_with_warnings(path, rows, issues, settings)?;
    for w in &warnings {
        tracing::warn!(scanlist = %path.display(), "{w}");
    }
    Ok(())
}

/// [`write`], returning the warnings (thumbnails not embedded) instead of logging them.
pub fn write_with_warnings(
    path: &Path,
    rows: &[Row],
    issues: &[Issue],
    settings: &ScanlistSettings,
) -> Result<Vec<String>, ScanlistError> {
    let (mut workbook, warnings) = build_workbook(path, rows, issues, settings)?;
    let bytes = workbook
        .save_to_buffer()
        .map_err(|e| ScanlistError::Write {
            path: path.to_path_buf(),
            detail: e.to_string(),
        })?;
    write_atomic(path, &bytes)?;
    Ok(warnings)
}

/// Builds the workbook in memory; `path` is only used in messages.
pub(crate) fn build_workbook(
    path: &Path,
    rows: &[Row],
    issues: &[Issue],
    settings: &ScanlistSettings,
) -> Result<(Workbook, Vec<String>), ScanlistError> {
    let bad = |detail: String| ScanlistError::Write {
        path: path.to_path_buf(),
        detail,
    };
    if settings
        .sheet_name
        .trim()
        .eq_ignore_ascii_case(ISSUES_SHEET)
    {
        return Err(bad(format!(
            "scanlist.sheet_name {:?} is the name of the issues sheet; choose another name",
            settings.sheet_name
        )));
    }
    let scale = settings.thumbnail_scale;
    if !(scale.is_finite() && scale > 0.0 && scale <= 10.0) {
        return Err(bad(format!(
            "scanlist.thumbnail_scale {scale} must be above 0 and at most 10"
        )));
    }
    let height = settings.row_height;
    if !(height.is_finite() && height > 0.0 && height <= MAX_ROW_HEIGHT) {
        return Err(bad(format!(
            "scanlist.row_height {height} must be above 0 and at most {MAX_ROW_HEIGHT} points"
        )));
    }
    let xe = |what: &str, e: rust_xlsxwriter::XlsxError| bad(format!("{what}: {e}"));

    let mut workbook = Workbook::new();
    let mut warnings = Vec::new();
    // Text format (built-in 49, `@`): an edited timecode stays text instead of becoming a number.
    let text = Format::new().set_num_format_index(49);

    let sheet = workbook.add_worksheet();
    sheet
        .set_name(settings.sheet_name.as_str())
        .map_err(|e| xe("sheet name", e))?;
    for (c, name) in COLUMNS.iter().enumerate() {
        let c = c as u16;
        let width = match *name {
            "thumbnail" => WIDTH_THUMBNAIL,
            "scan_path" => WIDTH_SCAN_PATH,
            _ => WIDTH_DEFAULT,
        };
        sheet
            .set_column_width(c, width)
            .map_err(|e| xe("column width", e))?;
        sheet
            .write_string(0, c, *name)
            .map_err(|e| xe("header", e))?;
    }
    for name in ["timecode_in", "timecode_out"] {
        sheet
            .set_column_format(col(name), &text)
            .map_err(|e| xe("column format", e))?;
    }

    for (i, row) in rows.iter().enumerate() {
        let r = u32::try_from(i + 1)
            .ok()
            .filter(|r| *r < 1_048_576)
            .ok_or_else(|| bad(format!("{} rows do not fit in one sheet", rows.len())))?;
        write_row(sheet, r, row, &text, settings, &mut warnings)
            .map_err(|e| bad(format!("row {} ({}): {e}", r + 1, row.scan_name)))?;
    }

    let sheet = workbook.add_worksheet();
    sheet
        .set_name(ISSUES_SHEET)
        .map_err(|e| xe("issues sheet", e))?;
    for (c, (name, width)) in [("severity", 10.0), ("path", 60.0), ("message", 100.0)]
        .into_iter()
        .enumerate()
    {
        let c = c as u16;
        sheet
            .set_column_width(c, width)
            .map_err(|e| xe("issues sheet", e))?;
        sheet
            .write_string(0, c, name)
            .map_err(|e| xe("issues sheet", e))?;
    }
    for (i, issue) in issues.iter().enumerate() {
        let r = u32::try_from(i + 1)
            .ok()
            .filter(|r| *r < 1_048_576)
            .ok_or_else(|| bad(format!("{} issues do not fit in one sheet", issues.len())))?;
        let severity = match issue.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        for (c, value) in [severity, issue.path.as_str(), issue.message.as_str()]
            .into_iter()
            .enumerate()
        {
            if !value.is_empty() {
                sheet
                    .write_string(r, c as u16, value)
                    .map_err(|e| xe(&format!("issues row {}", r + 1), e))?;
            }
        }
    }
    Ok((workbook, warnings))
}

/// Writes one data row at sheet row `r` (0-based).
fn write_row(
    sheet: &mut Worksheet,
    r: u32,
    row: &Row,
    text: &Format,
    settings: &ScanlistSettings,
    warnings: &mut Vec<String>,
) -> Result<(), rust_xlsxwriter::XlsxError> {
    sheet.set_row_height(r, settings.row_height)?;
    // Strings always go through write_string: never evaluated, so a value that
    // starts with `=`, `+`, `-` or `@` stays text (no formula injection).
    let mut s = |name: &str, value: &str| -> Result<(), rust_xlsxwriter::XlsxError> {
        if !value.is_empty() {
            sheet.write_string(r, col(name), value)?;
        }
        Ok(())
    };
    if row.check {
        s("check", "o")?;
    }
    s("roll", &row.roll)?;
    s("seq_name", &row.seq_name)?;
    s("shot_name", &row.shot_name)?;
    s("type", &row.seq_type)?;
    s("scan_path", &row.scan_path)?;
    s("scan_name", &row.scan_name)?;
    s("clip_name", &row.clip_name)?;
    s("pad", &row.pad)?;
    s("ext", &row.ext)?;
    s("resolution", &row.resolution)?;
    s("date", &row.date)?;
    s("clip_tag", &row.clip_tag)?;
    for (name, value) in [
        ("timecode_in", &row.timecode_in),
        ("timecode_out", &row.timecode_out),
    ] {
        if !value.is_empty() {
            sheet.write_string_with_format(r, col(name), value.as_str(), text)?;
        }
    }
    let ints = [
        ("version", row.version.map(i64::from)),
        ("start_frame", row.start_frame),
        ("end_frame", row.end_frame),
        ("duration", row.duration),
        ("retime_duration", row.retime_duration),
        ("retime_start_frame", row.retime_start_frame),
        ("just_in", row.just_in),
        ("just_out", row.just_out),
    ];
    for (name, value) in ints {
        if let Some(v) = value {
            // Frame numbers and versions are far below 2^53: exact as f64.
            sheet.write_number(r, col(name), v as f64)?;
        }
    }
    for (name, value) in [
        ("retime_percent", row.retime_percent),
        ("framerate", row.framerate),
    ] {
        if let Some(v) = value.filter(|v| v.is_finite()) {
            sheet.write_number(r, col(name), v)?;
        }
    }
    if let Some(thumb) = &row.thumbnail {
        let Some(name) = thumb.file_name().map(|n| n.to_string_lossy().into_owned()) else {
            warnings.push(format!(
                "row {}: thumbnail path {} has no file name; left empty",
                r + 1,
                thumb.display()
            ));
            return Ok(());
        };
        sheet.write_string(r, col("thumbnail"), name.as_str())?;
        match load_thumbnail(thumb, settings.thumbnail_scale) {
            Ok(image) => {
                sheet.insert_image(r, col("thumbnail"), &image)?;
            }
            Err(why) => warnings.push(format!(
                "row {}: thumbnail {} not embedded ({why}); its name is kept",
                r + 1,
                thumb.display()
            )),
        }
    }
    Ok(())
}

/// Reads a thumbnail (size-capped) into a scaled floating picture.
fn load_thumbnail(path: &Path, scale: f64) -> Result<Image, String> {
    let meta = std::fs::metadata(path).map_err(|e| e.to_string())?;
    if !meta.is_file() {
        return Err("not a file".into());
    }
    if meta.len() > MAX_THUMBNAIL_BYTES {
        return Err(format!(
            "{} bytes, more than the {MAX_THUMBNAIL_BYTES}-byte limit for a thumbnail",
            meta.len()
        ));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let image = Image::new_from_buffer(&bytes).map_err(|e| e.to_string())?;
    // `insert_image` (a floating picture), not `embed_image`: "Place in Cell"
    // pictures read back as #VALUE! in calamine and older Excel/LibreOffice.
    Ok(image.set_scale_width(scale).set_scale_height(scale))
}

/// Writes `bytes` to a hidden temporary file beside `path`, syncs it, and renames
/// it over `path`.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), ScanlistError> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let name = path
        .file_name()
        .ok_or_else(|| ScanlistError::Write {
            path: path.to_path_buf(),
            detail: "the path has no file name".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let io = |p: &Path| {
        let p = p.to_path_buf();
        move |source| ScanlistError::Io { path: p, source }
    };
    let result = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io(&tmp))?;
        f.write_all(bytes).map_err(io(&tmp))?;
        f.sync_all().map_err(io(&tmp))?;
        drop(f);
        std::fs::rename(&tmp, path).map_err(io(path))
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Ok(d) = std::fs::File::open(&dir) {
        // Best effort: make the rename itself durable.
        let _ = d.sync_all();
    }
    result
}

static SCANLIST_NAME: LazyLock<Regex> = LazyLock::new(|| {
    // A fixed, valid pattern.
    Regex::new(r"^scanlist_(\d+)\.xlsx?$").unwrap_or_else(|e| unreachable!("{e}"))
});

/// The number of a scanlist file name (`scanlist_12.xlsx` → 12), if it is one.
/// Numbers too large for `u64` are not scanlists iom made, and are ignored.
pub fn scanlist_number(name: &str) -> Option<u64> {
    SCANLIST_NAME
        .captures(name)
        .and_then(|c| c.get(1))
        .and_then(|m| m.as_str().parse().ok())
}

/// Scanlists in `dir` as (number, path), regular files only.
fn scanlists(dir: &Path) -> Result<Vec<(u64, PathBuf)>, ScanlistError> {
    let io = |source| ScanlistError::Io {
        path: dir.to_path_buf(),
        source,
    };
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        let Some(n) = name.to_str().and_then(scanlist_number) else {
            continue;
        };
        found.push((n, entry.path()));
    }
    Ok(found)
}

/// The next scanlist name in `dir`: the numeric maximum of the existing
/// `scanlist_NN.xls[x]` plus one, at least two digits, always `.xlsx`
/// (`scanlist_09.xls` + `scanlist_12.xlsx` → `scanlist_13.xlsx`; after
/// `scanlist_99` and `scanlist_100` comes `scanlist_101.xlsx`; none → `scanlist_01.xlsx`).
pub fn next_scanlist_path(dir: &Path) -> Result<PathBuf, ScanlistError> {
    let max = scanlists(dir)?
        .into_iter()
        .map(|(n, _)| n)
        .max()
        .unwrap_or(0);
    let next = max.checked_add(1).ok_or_else(|| ScanlistError::Write {
        path: dir.to_path_buf(),
        detail: "scanlist numbering is exhausted; move the old scanlists away".into(),
    })?;
    Ok(dir.join(format!("scanlist_{next:02}.xlsx")))
}

/// The scanlist with the highest number in `dir` (a regular file), if any; on a tie
/// (`scanlist_05.xls` and `scanlist_05.xlsx`) the `.xlsx` wins. `None` when the
/// folder cannot be read.
pub fn latest_scanlist(dir: &Path) -> Option<PathBuf> {
    let mut found = scanlists(dir).ok()?;
    found.retain(|(_, p)| p.is_file());
    found
        .into_iter()
        .max_by(|(a, pa), (b, pb)| {
            let xlsx = |p: &Path| p.extension().is_some_and(|e| e == "xlsx");
            a.cmp(b)
                .then_with(|| xlsx(pa).cmp(&xlsx(pb)))
                .then_with(|| pb.cmp(pa))
        })
        .map(|(_, p)| p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> ScanlistSettings {
        ScanlistSettings {
            sheet_name: "Sheet1".into(),
            thumbnail_scale: 0.25,
            row_height: 144.0,
        }
    }

    #[test]
    fn numbers_parse_by_regex_not_by_digit() {
        assert_eq!(scanlist_number("scanlist_12.xlsx"), Some(12));
        assert_eq!(scanlist_number("scanlist_09.xls"), Some(9));
        assert_eq!(scanlist_number("scanlist_100.xlsx"), Some(100));
        assert_eq!(scanlist_number("scanlist_12.xlsx.bak"), None);
        assert_eq!(scanlist_number(".scanlist_12.xlsx.1.0.tmp"), None);
        assert_eq!(scanlist_number("scanlist_.xlsx"), None);
        assert_eq!(
            scanlist_number("scanlist_99999999999999999999999.xlsx"),
            None
        );
    }

    #[test]
    fn bad_settings_are_refused() {
        let mut s = settings();
        s.thumbnail_scale = 0.0;
        assert!(build_workbook(Path::new("t.xlsx"), &[], &[], &s).is_err());
        let mut s = settings();
        s.row_height = 1000.0;
        assert!(build_workbook(Path::new("t.xlsx"), &[], &[], &s).is_err());
        let mut s = settings();
        s.sheet_name = "Issues".into();
        let Err(e) = build_workbook(Path::new("t.xlsx"), &[], &[], &s) else {
            panic!("sheet name `Issues` accepted");
        };
        assert!(e.to_string().contains("issues sheet"), "{e}");
    }
}
