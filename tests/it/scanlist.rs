//! The scanlist workbook on real files: round trips, legacy layouts, edge cells,
//! hostile workbooks and file numbering.

use std::path::{Path, PathBuf};

use calamine::{open_workbook, Data, Reader, Xlsx};
use iom::config::ScanlistSettings;
use iom::error::{Classify, ErrorClass};
use iom::scanlist::read::read;
use iom::scanlist::write::{latest_scanlist, next_scanlist_path, write, write_with_warnings};
use iom::scanlist::{Issue, Layout, Row, ScanlistError, Severity, COLUMNS};
use rust_xlsxwriter::{Formula, Workbook};

fn settings() -> ScanlistSettings {
    ScanlistSettings {
        sheet_name: "Sheet1".into(),
        thumbnail_scale: 0.25,
        row_height: 144.0,
    }
}

/// Writes a 960×540 JPEG whose colour depends on `seed`, returns its bytes.
fn jpeg(path: &Path, seed: u8) -> Vec<u8> {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let img = image::RgbImage::from_fn(960, 540, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, seed.wrapping_mul(37)])
    });
    img.save(path).unwrap();
    std::fs::read(path).unwrap()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// A row with every column filled.
fn full_row(scan_path: &Path, scan_name: &str, ext: &str, thumb: Option<PathBuf>) -> Row {
    Row {
        check: true,
        thumbnail: thumb,
        roll: "A001".into(),
        seq_name: "ABC".into(),
        shot_name: "ABC_0010".into(),
        version: Some(3),
        seq_type: "org".into(),
        scan_path: scan_path.display().to_string(),
        scan_name: scan_name.into(),
        clip_name: "A001C003.".into(),
        pad: "%04d".into(),
        ext: ext.into(),
        resolution: "4096 x 2160".into(),
        start_frame: Some(1001),
        end_frame: Some(1100),
        duration: Some(100),
        retime_duration: Some(50),
        retime_percent: Some(-50.0),
        retime_start_frame: Some(12),
        timecode_in: "01:00:00:00".into(),
        timecode_out: "01:00:04:03".into(),
        just_in: Some(1001),
        just_out: Some(1100),
        framerate: Some(23.976),
        date: "2024-11-07 10:20:30+09:00".into(),
        clip_tag: "M2 50%,rain".into(),
    }
}

/// One cell of a hand-made fixture sheet.
#[derive(Clone)]
enum C {
    S(&'static str),
    Own(String),
    N(f64),
    F(&'static str),
    E,
}

/// Writes a fixture workbook: `header` in row 1, then `rows`.
fn fixture(path: &Path, sheet: &str, header: &[&str], rows: &[Vec<C>]) {
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name(sheet).unwrap();
    for (c, h) in header.iter().enumerate() {
        ws.write_string(0, c as u16, *h).unwrap();
    }
    for (r, row) in rows.iter().enumerate() {
        let r = r as u32 + 1;
        for (c, cell) in row.iter().enumerate() {
            let c = c as u16;
            match cell {
                C::S(s) => {
                    ws.write_string(r, c, *s).unwrap();
                }
                C::Own(s) => {
                    ws.write_string(r, c, s.as_str()).unwrap();
                }
                C::N(n) => {
                    ws.write_number(r, c, *n).unwrap();
                }
                C::F(f) => {
                    ws.write_formula(r, c, Formula::new(*f).set_result("x"))
                        .unwrap();
                }
                C::E => {}
            }
        }
    }
    wb.save(path).unwrap();
}

/// A legacy-layout row as cells, by header name.
fn legacy_cells(header: &[&str], scan_path: &str) -> Vec<C> {
    header
        .iter()
        .map(|h| match *h {
            "check" => C::S("o"),
            "thumbnail" => C::S("A001_plate.1001.jpg"),
            "shot_name" => C::S("ABC_0010"),
            "version" => C::N(2.0),
            "type" => C::S("org"),
            "scan_path" => C::Own(scan_path.to_string()),
            "scan_name" => C::S("A001_plate."),
            "clip_name" => C::S("A001."),
            "pad" => C::S("%04d"),
            "ext" => C::S("exr"),
            "resolution" => C::S("1920 x 1080"),
            "start_frame" | "just_in" => C::N(1001.0),
            "end_frame" | "just_out" => C::N(1010.0),
            "duration" | "duraiton" => C::N(10.0),
            "timecode_in" => C::S("01:00:00:00"),
            "timecode_out" => C::S("01:00:00:09"),
            "framerate" => C::N(24.0),
            "clip_tag" => C::S("tag"),
            _ => C::E,
        })
        .collect()
}

fn header_without(drop: &[&str]) -> Vec<&'static str> {
    COLUMNS
        .iter()
        .copied()
        .filter(|c| !drop.contains(c))
        .map(|c| if c == "duration" { "duraiton" } else { c })
        .collect()
}

#[test]
fn full_26_column_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let delivery = tmp.path().join("delivery");
    let seq = delivery.join("A001C003");
    let nested = delivery.join("plates").join("B002");
    let movies = delivery.join("movies");
    std::fs::create_dir_all(&seq).unwrap();
    std::fs::create_dir_all(&nested).unwrap();
    std::fs::create_dir_all(&movies).unwrap();

    let t_seq = delivery.join(".thumbnail/A001C003_A001C003_plate.1001.jpg");
    let t_nested = delivery.join("plates/.thumbnail/B002_B002_plate.1001.jpg");
    let t_mov = movies.join(".thumbnail/clip.0001.jpg");
    let t_mxf = movies.join(".thumbnail/clip2.0001.jpg");
    let t_root = delivery.join(".thumbnail/delivery_root_plate.1001.jpg");
    let j_seq = jpeg(&t_seq, 1);
    let j_mxf = jpeg(&t_mxf, 2);
    jpeg(&t_nested, 3);
    jpeg(&t_mov, 4);
    jpeg(&t_root, 5);

    let mut rows = vec![
        full_row(&seq, "A001C003_plate.", "exr", Some(t_seq.clone())),
        full_row(&nested, "B002_plate.", "dpx", Some(t_nested)),
        full_row(&movies, "clip.mov", "mov", Some(t_mov)),
        full_row(&movies, "clip2.mxf", "mxf", Some(t_mxf.clone())),
        full_row(&delivery, "root_plate.", "jpg", Some(t_root)),
    ];
    // A plain (non-retime) unchecked row with empty optional columns.
    rows.push(Row {
        check: false,
        retime_duration: None,
        retime_percent: None,
        retime_start_frame: None,
        version: None,
        clip_tag: String::new(),
        framerate: Some(25.0),
        ..full_row(&seq, "A001C003_other.", "exr", None)
    });
    let issues = vec![Issue {
        severity: Severity::Warning,
        path: seq.display().to_string(),
        message: "frame 1005 is missing".into(),
    }];
    let path = delivery.join("scanlist_01.xlsx");
    let warnings = write_with_warnings(&path, &rows, &issues, &settings()).unwrap();
    assert!(warnings.is_empty(), "{warnings:?}");
    // No temporary file is left beside it.
    let names: Vec<String> = std::fs::read_dir(&delivery)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(!names.iter().any(|n| n.contains(".tmp")), "{names:?}");

    let back = read(&path, &settings(), Some(&delivery)).unwrap();
    assert_eq!(back.layout, Layout::Columns26);
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
    assert_eq!(back.sheet, "Sheet1");
    assert_eq!(back.rows, rows);

    // The raw workbook: exact header, `o`, text timecodes, numbers as numbers,
    // empty cells empty, the issues sheet.
    let mut wb: Xlsx<_> = open_workbook(&path).unwrap();
    assert_eq!(wb.sheet_names(), vec!["Sheet1", "issues"]);
    let range = wb.worksheet_range("Sheet1").unwrap();
    let header: Vec<String> = (0..26)
        .map(|c| range.get_value((0, c)).unwrap().to_string())
        .collect();
    assert_eq!(header, COLUMNS.map(String::from).to_vec());
    assert_eq!(range.get_value((1, 0)), Some(&Data::String("o".into())));
    assert_eq!(
        range.get_value((1, 1)),
        Some(&Data::String("A001C003_A001C003_plate.1001.jpg".into()))
    );
    assert_eq!(
        range.get_value((1, 19)),
        Some(&Data::String("01:00:00:00".into()))
    );
    assert!(matches!(range.get_value((1, 13)), Some(Data::Float(f)) if *f == 1001.0));
    assert!(matches!(range.get_value((6, 0)), None | Some(Data::Empty)));
    assert!(matches!(range.get_value((6, 5)), None | Some(Data::Empty)));
    let issues_range = wb.worksheet_range("issues").unwrap();
    assert_eq!(
        issues_range.get_value((1, 2)),
        Some(&Data::String("frame 1005 is missing".into()))
    );
    assert_eq!(
        issues_range.get_value((1, 0)),
        Some(&Data::String("warning".into()))
    );

    // Pictures are stored uncompressed in the zip: the names and the JPEG bytes
    // themselves are in the file.
    let bytes = std::fs::read(&path).unwrap();
    assert!(contains(&bytes, b"xl/media/image1.jpeg"));
    assert!(contains(&bytes, b"xl/media/image5.jpeg"));
    assert!(!contains(&bytes, b"xl/media/image6.jpeg"));
    assert!(contains(&bytes, &j_seq));
    assert!(contains(&bytes, &j_mxf));
}

#[test]
fn legacy_xls_named_xlsx_reads() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("A001");
    let rows = vec![full_row(&seq, "A001_plate.", "exr", None)];
    let xlsx = tmp.path().join("scanlist_01.xlsx");
    write(&xlsx, &rows, &[], &settings()).unwrap();
    let xls = tmp.path().join("scanlist_01.xls");
    std::fs::copy(&xlsx, &xls).unwrap();
    assert_eq!(&std::fs::read(&xls).unwrap()[..4], b"PK\x03\x04");
    let back = read(&xls, &settings(), Some(tmp.path())).unwrap();
    assert_eq!(back.rows, rows);
    assert_eq!(back.path, xls);
}

#[test]
fn legacy_25_24_23_column_layouts_read_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("A001");
    let sp = seq.display().to_string();
    let cases = [
        (header_without(&["clip_tag"]), Layout::Columns25),
        (
            header_without(&["clip_name", "clip_tag"]),
            Layout::Columns24,
        ),
        (
            header_without(&["thumbnail", "clip_name", "clip_tag"]),
            Layout::Columns23,
        ),
    ];
    for (header, layout) in cases {
        assert!(header.contains(&"duraiton"));
        let path = tmp.path().join(format!("scanlist_{}.xls", header.len()));
        fixture(&path, "Sheet1", &header, &[legacy_cells(&header, &sp)]);
        let back = read(&path, &settings(), None).unwrap();
        assert_eq!(back.layout, layout, "{} columns", header.len());
        assert_eq!(back.rows.len(), 1);
        let r = &back.rows[0];
        assert!(r.check);
        assert_eq!(r.duration, Some(10), "duraiton is duration");
        assert_eq!(r.scan_path, sp);
        assert_eq!(r.shot_name, "ABC_0010");
        assert_eq!(r.version, Some(2));
        assert_eq!(r.start_frame, Some(1001));
        assert_eq!(r.just_out, Some(1010));
        assert_eq!(r.timecode_out, "01:00:00:09");
        assert_eq!(r.framerate, Some(24.0));
        assert_eq!(r.clip_tag, "");
        let want_clip = if header.contains(&"clip_name") {
            "A001."
        } else {
            ""
        };
        assert_eq!(r.clip_name, want_clip);
        let want_thumb = header
            .contains(&"thumbnail")
            .then(|| tmp.path().join(".thumbnail/A001_plate.1001.jpg"));
        assert_eq!(r.thumbnail, want_thumb);
    }
}

#[test]
fn header_is_matched_trimmed_and_case_insensitively_in_any_order() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.xlsx");
    fixture(
        &path,
        "Sheet1",
        &[" Scan_Path ", "VERSION", "check"],
        &[vec![C::S("/show/demo/a"), C::N(4.0), C::S("x")]],
    );
    let back = read(&path, &settings(), None).unwrap();
    assert_eq!(back.layout, Layout::Custom);
    assert_eq!(back.warnings.len(), 1, "{:?}", back.warnings);
    assert!(back.warnings[0].contains("clip_tag"), "{:?}", back.warnings);
    let r = &back.rows[0];
    assert_eq!(r.version, Some(4));
    assert!(r.check);
    assert_eq!(r.scan_path, "/show/demo/a");
    assert_eq!(r.duration, None);
}

#[test]
fn edge_cells_numeric_timecode_nan_empty_version_float_frames() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.xlsx");
    let header = [
        "check",
        "scan_path",
        "roll",
        "version",
        "timecode_in",
        "timecode_out",
        "start_frame",
        "just_in",
        "just_out",
        "framerate",
    ];
    fixture(
        &path,
        "Sheet1",
        &header,
        &[
            vec![
                C::S("1"),
                C::S("/show/demo/a"),
                C::S("NaN"),
                C::E,
                C::N(1_000_000.0),
                C::N(23_595_923.0),
                C::N(1001.0),
                C::N(1010.0),
                C::N(1001.0),
                C::S("NaN"),
            ],
            // An empty row in the middle is skipped.
            vec![],
            vec![
                C::S("0"),
                C::S("/show/demo/b"),
                C::S("R2"),
                C::S("7"),
                C::S("1000000"),
                C::S("01:00:00:05"),
                C::S("1001.0"),
                C::E,
                C::E,
                C::N(0.0),
            ],
        ],
    );
    let back = read(&path, &settings(), None).unwrap();
    assert_eq!(back.rows.len(), 2);
    let (a, b) = (&back.rows[0], &back.rows[1]);
    assert!(a.check);
    assert_eq!(a.roll, "");
    assert_eq!(a.version, None);
    assert_eq!(a.timecode_in, "01:00:00:00");
    assert_eq!(a.timecode_out, "23:59:59:23");
    assert_eq!(a.start_frame, Some(1001));
    assert_eq!(a.framerate, None);
    assert!(!b.check);
    assert_eq!(b.version, Some(7));
    assert_eq!(b.timecode_in, "01:00:00:00");
    assert_eq!(b.start_frame, Some(1001));
    assert_eq!(b.framerate, None);
    // just_in after just_out, and framerate 0: read, with warnings.
    assert!(
        back.warnings.iter().any(|w| w.contains("just_in")),
        "{:?}",
        back.warnings
    );
    assert!(
        back.warnings.iter().any(|w| w.contains("framerate 0")),
        "{:?}",
        back.warnings
    );
}

fn read_err(path: &Path, root: Option<&Path>) -> String {
    let e = read(path, &settings(), root).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "names the file: {msg}"
    );
    msg
}

#[test]
fn scan_path_outside_root_or_relative_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("delivery");
    let header = [
        "check",
        "version",
        "type",
        "shot_name",
        "roll",
        "seq_name",
        "thumbnail",
        "scan_path",
    ];
    let cases = [
        ("/show/other/plates", "outside"),
        // `..` climbing out of the delivery, lexically.
        ("__ROOT__/A001/../../etc", "outside"),
        ("plates/A001", "not an absolute path"),
    ];
    for (i, (sp, why)) in cases.iter().enumerate() {
        let sp = sp.replace("__ROOT__", &root.display().to_string());
        let path = tmp.path().join(format!("s{i}.xlsx"));
        let mut row = vec![C::E; 7];
        row.push(C::Own(sp.clone()));
        fixture(&path, "Sheet1", &header, &[row]);
        let msg = read_err(&path, Some(&root));
        assert!(
            msg.contains("H2") && msg.contains("scan_path") && msg.contains(why),
            "{msg}"
        );
    }
    // `..` that stays inside is normalised, with a warning.
    let path = tmp.path().join("inside.xlsx");
    let mut row = vec![C::E; 7];
    row.push(C::Own(format!("{}/A001/../B002", root.display())));
    fixture(&path, "Sheet1", &header, &[row]);
    let back = read(&path, &settings(), Some(&root)).unwrap();
    assert_eq!(
        back.rows[0].scan_path,
        root.join("B002").display().to_string()
    );
    assert!(
        back.warnings.iter().any(|w| w.contains("read as")),
        "{:?}",
        back.warnings
    );
}

#[test]
fn formulas_are_refused_naming_the_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let header = [
        "check",
        "thumbnail",
        "roll",
        "seq_name",
        "shot_name",
        "version",
        "type",
        "scan_path",
    ];
    let cases: Vec<(Vec<C>, &str, &str)> = vec![
        (
            {
                let mut r = vec![C::E; 7];
                r.push(C::F(r#"="/show/demo/"&"a""#));
                r
            },
            "H2",
            "scan_path",
        ),
        (
            vec![
                C::E,
                C::F(r#"=HYPERLINK("http://evil/x.jpg","x.jpg")"#),
                C::E,
                C::E,
                C::E,
                C::E,
                C::E,
                C::S("/a"),
            ],
            "B2",
            "thumbnail",
        ),
        (
            vec![C::E, C::E, C::E, C::E, C::E, C::F("=1+1"), C::E, C::S("/a")],
            "F2",
            "version",
        ),
    ];
    for (i, (row, cell, column)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("f{i}.xlsx"));
        fixture(&path, "Sheet1", &header, &[row]);
        let msg = read_err(&path, None);
        assert!(
            msg.contains(cell) && msg.contains(column) && msg.contains("formula"),
            "{msg}"
        );
    }
}

#[test]
fn bad_numbers_are_refused_naming_the_cell() {
    let tmp = tempfile::tempdir().unwrap();
    let header = ["scan_path", "version", "start_frame"];
    let cases = [
        (vec![C::S("/a"), C::S("abc"), C::E], "B2", "version"),
        (vec![C::S("/a"), C::N(-1.0), C::E], "B2", "out of range"),
        (vec![C::S("/a"), C::N(2.5), C::E], "B2", "whole number"),
        (vec![C::S("/a"), C::E, C::N(1e300)], "C2", "start_frame"),
        (
            vec![C::S("/a"), C::S("latest"), C::E],
            "B2",
            "type its number: 3 or v003",
        ),
        (
            vec![C::S("/a"), C::S("v1x"), C::E],
            "B2",
            "is not a version",
        ),
        (
            vec![C::S("/a"), C::S("v100000"), C::E],
            "B2",
            "out of range",
        ),
    ];
    for (i, (row, cell, what)) in cases.into_iter().enumerate() {
        let path = tmp.path().join(format!("n{i}.xlsx"));
        fixture(&path, "Sheet1", &header, &[row]);
        let msg = read_err(&path, None);
        assert!(msg.contains(cell) && msg.contains(what), "{msg}");
    }
}

/// Coordinators type a version as its folder shows it: `v003` reads as 3.
#[test]
fn a_version_typed_as_its_folder_name_is_read() {
    let tmp = tempfile::tempdir().unwrap();
    let header = ["scan_path", "version"];
    for (typed, want) in [
        (C::S("v003"), Some(3)),
        (C::S(" V12 "), Some(12)),
        (C::S("7"), Some(7)),
        (C::N(2.0), Some(2)),
        (C::E, None),
    ] {
        let path = tmp.path().join("v.xlsx");
        fixture(&path, "Sheet1", &header, &[vec![C::S("/a"), typed]]);
        let sheet = read(&path, &settings(), None).unwrap();
        assert_eq!(sheet.rows[0].version, want, "{path:?}");
    }
}

#[test]
fn bad_headers_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let row = vec![C::S("/a"), C::S("x"), C::S("y")];

    let path = tmp.path().join("unknown.xlsx");
    fixture(
        &path,
        "Sheet1",
        &["scan_path", "shot_name", "notes"],
        std::slice::from_ref(&row),
    );
    let msg = read_err(&path, None);
    assert!(msg.contains("\"notes\"") && msg.contains("C1"), "{msg}");

    let path = tmp.path().join("dup.xlsx");
    fixture(
        &path,
        "Sheet1",
        &["scan_path", "duration", "duraiton"],
        std::slice::from_ref(&row),
    );
    let msg = read_err(&path, None);
    assert!(
        msg.contains("twice") && msg.contains("B1") && msg.contains("C1"),
        "{msg}"
    );

    let path = tmp.path().join("noheader.xlsx");
    fixture(
        &path,
        "Sheet1",
        &["Scanlist for delivery 12"],
        std::slice::from_ref(&row),
    );
    let msg = read_err(&path, None);
    assert!(
        msg.contains("has no scanlist header row (expected check, thumbnail"),
        "{msg}"
    );

    // Data in row 1, no header at all.
    let path = tmp.path().join("data.xlsx");
    fixture(&path, "Sheet1", &["/show/demo/a", "1001"], &[]);
    let msg = read_err(&path, None);
    assert!(msg.contains("has no scanlist header row"), "{msg}");

    // A value far away (XFD1048576) is one streamed cell, not a dense grid: a
    // clear error, at once.
    let path = tmp.path().join("far.xlsx");
    let mut wb = Workbook::new();
    let ws = wb.add_worksheet();
    ws.write_string(0, 0, "scan_path").unwrap();
    ws.write_string(1, 0, "/a").unwrap();
    ws.write_string(1_048_575, 16_383, "x").unwrap();
    wb.save(&path).unwrap();
    let msg = read_err(&path, None);
    assert!(
        msg.contains("XFD1048576") && msg.contains("no header"),
        "{msg}"
    );

    // A value in a column without a header.
    let path = tmp.path().join("orphan.xlsx");
    fixture(
        &path,
        "Sheet1",
        &["scan_path"],
        &[vec![C::S("/a"), C::E, C::S("note")]],
    );
    let msg = read_err(&path, None);
    assert!(msg.contains("C2") && msg.contains("no header"), "{msg}");
}

#[test]
fn broken_files_give_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let good = tmp.path().join("good.xlsx");
    write(
        &good,
        &[full_row(Path::new("/a"), "a.", "exr", None)],
        &[],
        &settings(),
    )
    .unwrap();
    let bytes = std::fs::read(&good).unwrap();

    let path = tmp.path().join("scanlist_02.xlsx");
    std::fs::write(&path, &bytes[..bytes.len() / 2]).unwrap();
    let msg = read_err(&path, None);
    assert!(msg.contains("truncated or corrupt"), "{msg}");

    let path = tmp.path().join("scanlist_03.xls");
    let mut biff = vec![0xD0, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1];
    biff.extend(std::iter::repeat_n(0u8, 1024));
    std::fs::write(&path, &biff).unwrap();
    let e = read(&path, &settings(), None).unwrap_err();
    assert!(matches!(e, ScanlistError::LegacyXls { .. }), "{e}");
    let msg = read_err(&path, None);
    assert!(msg.contains("save it") && msg.contains(".xlsx"), "{msg}");

    let path = tmp.path().join("scanlist_04.xlsx");
    std::fs::write(&path, "check,thumbnail\no,a.jpg\n").unwrap();
    let msg = read_err(&path, None);
    assert!(msg.contains("plain text"), "{msg}");

    let path = tmp.path().join("scanlist_05.xlsx");
    std::fs::write(&path, "").unwrap();
    let msg = read_err(&path, None);
    assert!(msg.contains("empty"), "{msg}");

    let missing = tmp.path().join("nope.xlsx");
    let e = read(&missing, &settings(), None).unwrap_err();
    assert!(matches!(e, ScanlistError::Io { .. }), "{e}");
    assert!(e.to_string().contains("nope.xlsx"), "{e}");
}

#[test]
fn unicode_and_spaces_in_paths_round_trip() {
    let tmp = tempfile::tempdir().unwrap();
    let delivery = tmp.path().join("납품 2024");
    let seq = delivery.join("A001 plate é");
    let thumb = delivery.join(".thumbnail/A001 plate é_샷 plate.1001.jpg");
    jpeg(&thumb, 9);
    let rows = vec![Row {
        shot_name: "샷_0010".into(),
        ..full_row(&seq, "샷 plate.", "exr", Some(thumb))
    }];
    let path = delivery.join("scanlist_01.xlsx");
    write(&path, &rows, &[], &settings()).unwrap();
    let back = read(&path, &settings(), Some(&delivery)).unwrap();
    assert_eq!(back.rows, rows);
}

#[test]
fn other_sheet_name_reads_with_a_warning() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("s.xlsx");
    fixture(
        &path,
        "Plates",
        &["scan_path", "shot_name"],
        &[vec![C::S("/a"), C::S("X_0010")]],
    );
    let back = read(&path, &settings(), None).unwrap();
    assert_eq!(back.sheet, "Plates");
    assert_eq!(back.rows[0].shot_name, "X_0010");
    assert!(back
        .warnings
        .iter()
        .any(|w| w.contains("Sheet1") && w.contains("Plates")));

    // A configured sheet name is written and read without a warning.
    let s = ScanlistSettings {
        sheet_name: "Plates".into(),
        ..settings()
    };
    let path = tmp.path().join("t.xlsx");
    write(
        &path,
        &[full_row(Path::new("/a"), "a.", "exr", None)],
        &[],
        &s,
    )
    .unwrap();
    let back = read(&path, &s, None).unwrap();
    assert_eq!(back.sheet, "Plates");
    assert_eq!(back.layout, Layout::Columns26);
    assert!(back.warnings.is_empty(), "{:?}", back.warnings);
}

#[test]
fn numbering_uses_the_numeric_maximum() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert_eq!(next_scanlist_path(d).unwrap(), d.join("scanlist_01.xlsx"));
    assert_eq!(latest_scanlist(d), None);

    std::fs::write(d.join("scanlist_09.xls"), "x").unwrap();
    std::fs::write(d.join("scanlist_12.xlsx"), "x").unwrap();
    std::fs::write(d.join("scanlist_50.xlsx.bak"), "x").unwrap();
    std::fs::write(d.join("notes_77.xlsx"), "x").unwrap();
    let next = next_scanlist_path(d).unwrap();
    // Regression: the port took the largest single digit and produced scanlist_03.
    assert_ne!(next, d.join("scanlist_03.xlsx"));
    assert_eq!(next, d.join("scanlist_13.xlsx"));
    assert_eq!(latest_scanlist(d), Some(d.join("scanlist_12.xlsx")));

    let d2 = tempfile::tempdir().unwrap();
    let d2 = d2.path();
    std::fs::write(d2.join("scanlist_99.xls"), "x").unwrap();
    std::fs::write(d2.join("scanlist_100.xlsx"), "x").unwrap();
    assert_eq!(
        next_scanlist_path(d2).unwrap(),
        d2.join("scanlist_101.xlsx")
    );
    assert_eq!(latest_scanlist(d2), Some(d2.join("scanlist_100.xlsx")));

    // On a tie the .xlsx wins.
    std::fs::write(d2.join("scanlist_100.xls"), "x").unwrap();
    assert_eq!(latest_scanlist(d2), Some(d2.join("scanlist_100.xlsx")));

    let e = next_scanlist_path(&d.join("missing")).unwrap_err();
    assert!(matches!(e, ScanlistError::Io { .. }), "{e}");
}

#[test]
fn writer_never_writes_formulas() {
    let tmp = tempfile::tempdir().unwrap();
    let rows = vec![Row {
        roll: "=1+1".into(),
        seq_name: "@SUM(A1)".into(),
        shot_name: "+ABC".into(),
        clip_tag: "-x".into(),
        scan_name: r#"=HYPERLINK("http://evil","x")"#.into(),
        date: "=NOW()".into(),
        ..full_row(Path::new("/show/demo/a"), "", "exr", None)
    }];
    let path = tmp.path().join("scanlist_01.xlsx");
    write(&path, &rows, &[], &settings()).unwrap();
    let mut wb: Xlsx<_> = open_workbook(&path).unwrap();
    let formulas = wb.worksheet_formula("Sheet1").unwrap();
    assert!(formulas.used_cells().next().is_none(), "{formulas:?}");
    let range = wb.worksheet_range("Sheet1").unwrap();
    assert_eq!(range.get_value((1, 2)), Some(&Data::String("=1+1".into())));
    let back = read(&path, &settings(), None).unwrap();
    assert_eq!(back.rows, rows);
}

#[test]
fn missing_thumbnail_keeps_the_name_and_warns() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("A001");
    let thumb = tmp.path().join(".thumbnail/A001_A001_plate.1001.jpg");
    let bad = tmp.path().join(".thumbnail/broken.jpg");
    std::fs::create_dir_all(bad.parent().unwrap()).unwrap();
    std::fs::write(&bad, b"not a jpeg").unwrap();
    let rows = vec![
        full_row(&seq, "A001_plate.", "exr", Some(thumb.clone())),
        full_row(&seq, "A001_other.", "exr", Some(bad.clone())),
    ];
    let path = tmp.path().join("scanlist_01.xlsx");
    let warnings = write_with_warnings(&path, &rows, &[], &settings()).unwrap();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings[0].contains("A001_A001_plate.1001.jpg"),
        "{warnings:?}"
    );
    let bytes = std::fs::read(&path).unwrap();
    assert!(!contains(&bytes, b"xl/media/"), "no picture embedded");
    let back = read(&path, &settings(), Some(tmp.path())).unwrap();
    assert_eq!(back.rows[0].thumbnail, Some(thumb));
    assert_eq!(back.rows[1].thumbnail, Some(bad));
}

#[test]
fn write_replaces_an_existing_scanlist_atomically() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("scanlist_01.xlsx");
    let a = vec![full_row(Path::new("/a"), "a.", "exr", None)];
    let b = vec![
        full_row(Path::new("/b"), "b.", "exr", None),
        full_row(Path::new("/c"), "c.", "exr", None),
    ];
    write(&path, &a, &[], &settings()).unwrap();
    write(&path, &b, &[], &settings()).unwrap();
    assert_eq!(read(&path, &settings(), None).unwrap().rows, b);
    let entries = std::fs::read_dir(tmp.path()).unwrap().count();
    assert_eq!(entries, 1, "no temporary file left");
    // A folder that does not exist: an IO error naming it, nothing created.
    let e = write(
        &tmp.path().join("no/such/scanlist_01.xlsx"),
        &a,
        &[],
        &settings(),
    )
    .unwrap_err();
    assert!(
        matches!(e, ScanlistError::Io { .. }) && e.to_string().contains("no/such"),
        "{e}"
    );
}

/// A minimal zip member reader (central directory + RFC 1951 inflate), so the
/// tests can look at the sheet XML without a zip dependency.
mod unzip {
    fn u16le(b: &[u8], at: usize) -> usize {
        usize::from(u16::from_le_bytes([b[at], b[at + 1]]))
    }
    fn u32le(b: &[u8], at: usize) -> usize {
        u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
    }

    /// The uncompressed bytes of member `name`.
    pub fn member(zip: &[u8], name: &str) -> Option<Vec<u8>> {
        let eocd = (0..zip.len() - 21)
            .rev()
            .find(|&i| zip[i..].starts_with(b"PK\x05\x06"))?;
        let count = u16le(zip, eocd + 10);
        let mut at = u32le(zip, eocd + 16);
        for _ in 0..count {
            assert!(zip[at..].starts_with(b"PK\x01\x02"));
            let method = u16le(zip, at + 10);
            let csize = u32le(zip, at + 20);
            let (n, m, k) = (
                u16le(zip, at + 28),
                u16le(zip, at + 30),
                u16le(zip, at + 32),
            );
            let local = u32le(zip, at + 42);
            let this = &zip[at + 46..at + 46 + n];
            at += 46 + n + m + k;
            if this != name.as_bytes() {
                continue;
            }
            let data = local + 30 + u16le(zip, local + 26) + u16le(zip, local + 28);
            let raw = &zip[data..data + csize];
            return Some(match method {
                0 => raw.to_vec(),
                8 => inflate(raw),
                other => panic!("zip method {other}"),
            });
        }
        None
    }

    struct Bits<'a> {
        data: &'a [u8],
        pos: usize,
        buf: u32,
        n: u32,
    }

    impl Bits<'_> {
        fn get(&mut self, need: u32) -> u32 {
            while self.n < need {
                self.buf |= u32::from(self.data[self.pos]) << self.n;
                self.pos += 1;
                self.n += 8;
            }
            let v = self.buf & ((1u32 << need) - 1);
            self.buf = if need == 32 { 0 } else { self.buf >> need };
            self.n -= need;
            v
        }
    }

    struct Huff {
        count: [i32; 16],
        symbol: Vec<i32>,
    }

    fn huff(lengths: &[u8]) -> Huff {
        let mut count = [0i32; 16];
        for &l in lengths {
            count[l as usize] += 1;
        }
        count[0] = 0;
        let mut offs = [0i32; 16];
        for l in 1..15 {
            offs[l + 1] = offs[l] + count[l];
        }
        let mut symbol = vec![0; lengths.len()];
        for (s, &l) in lengths.iter().enumerate() {
            if l != 0 {
                symbol[offs[l as usize] as usize] = s as i32;
                offs[l as usize] += 1;
            }
        }
        Huff { count, symbol }
    }

    fn decode(b: &mut Bits<'_>, h: &Huff) -> i32 {
        let (mut code, mut first, mut index) = (0i32, 0i32, 0i32);
        for len in 1..16 {
            code |= b.get(1) as i32;
            let count = h.count[len];
            if code - count < first {
                return h.symbol[(index + (code - first)) as usize];
            }
            index += count;
            first = (first + count) << 1;
            code <<= 1;
        }
        panic!("bad huffman code");
    }

    const LBASE: [usize; 29] = [
        3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 15, 17, 19, 23, 27, 31, 35, 43, 51, 59, 67, 83, 99, 115,
        131, 163, 195, 227, 258,
    ];
    const LEXT: [u32; 29] = [
        0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 4, 4, 4, 4, 5, 5, 5, 5, 0,
    ];
    const DBASE: [usize; 30] = [
        1, 2, 3, 4, 5, 7, 9, 13, 17, 25, 33, 49, 65, 97, 129, 193, 257, 385, 513, 769, 1025, 1537,
        2049, 3073, 4097, 6145, 8193, 12289, 16385, 24577,
    ];
    const DEXT: [u32; 30] = [
        0, 0, 0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6, 7, 7, 8, 8, 9, 9, 10, 10, 11, 11, 12, 12,
        13, 13,
    ];

    pub fn inflate(data: &[u8]) -> Vec<u8> {
        let mut b = Bits {
            data,
            pos: 0,
            buf: 0,
            n: 0,
        };
        let mut out: Vec<u8> = Vec::new();
        loop {
            let last = b.get(1);
            match b.get(2) {
                0 => {
                    b.buf = 0;
                    b.n = 0;
                    let len = usize::from(u16::from_le_bytes([data[b.pos], data[b.pos + 1]]));
                    b.pos += 4;
                    out.extend_from_slice(&data[b.pos..b.pos + len]);
                    b.pos += len;
                }
                kind @ (1 | 2) => {
                    let (lit, dist) = if kind == 1 {
                        let mut l = [8u8; 288];
                        l[144..256].fill(9);
                        l[256..280].fill(7);
                        (huff(&l), huff(&[5u8; 30]))
                    } else {
                        let nlen = b.get(5) as usize + 257;
                        let ndist = b.get(5) as usize + 1;
                        let ncode = b.get(4) as usize + 4;
                        const ORDER: [usize; 19] = [
                            16, 17, 18, 0, 8, 7, 9, 6, 10, 5, 11, 4, 12, 3, 13, 2, 14, 1, 15,
                        ];
                        let mut cl = [0u8; 19];
                        for &o in ORDER.iter().take(ncode) {
                            cl[o] = b.get(3) as u8;
                        }
                        let ch = huff(&cl);
                        let mut lens = Vec::with_capacity(nlen + ndist);
                        while lens.len() < nlen + ndist {
                            let sym = decode(&mut b, &ch);
                            let (v, rep) = match sym {
                                0..=15 => (sym as u8, 1),
                                16 => (*lens.last().unwrap(), 3 + b.get(2)),
                                17 => (0, 3 + b.get(3)),
                                _ => (0, 11 + b.get(7)),
                            };
                            lens.extend(std::iter::repeat_n(v, rep as usize));
                        }
                        (huff(&lens[..nlen]), huff(&lens[nlen..]))
                    };
                    loop {
                        let sym = decode(&mut b, &lit) as usize;
                        if sym < 256 {
                            out.push(sym as u8);
                        } else if sym == 256 {
                            break;
                        } else {
                            let i = sym - 257;
                            let len = LBASE[i] + b.get(LEXT[i]) as usize;
                            let d = decode(&mut b, &dist) as usize;
                            let back = DBASE[d] + b.get(DEXT[d]) as usize;
                            let start = out.len() - back;
                            for k in 0..len {
                                out.push(out[start + k]);
                            }
                        }
                    }
                }
                _ => panic!("bad deflate block"),
            }
            if last == 1 {
                return out;
            }
        }
    }
}

#[test]
fn sheet_xml_has_widths_heights_text_timecodes_and_a_scaled_picture() {
    let tmp = tempfile::tempdir().unwrap();
    let seq = tmp.path().join("A001");
    let thumb = tmp.path().join(".thumbnail/A001_A001_plate.1001.jpg");
    jpeg(&thumb, 1);
    let rows = vec![
        full_row(&seq, "A001_plate.", "exr", Some(thumb)),
        full_row(&seq, "A001_other.", "exr", None),
    ];
    let path = tmp.path().join("scanlist_01.xlsx");
    write(&path, &rows, &[], &settings()).unwrap();
    let zip = std::fs::read(&path).unwrap();
    let sheet =
        String::from_utf8(unzip::member(&zip, "xl/worksheets/sheet1.xml").unwrap()).unwrap();
    // rust_xlsxwriter stores widths with Excel's padding: 15 → 15.7109375.
    assert!(
        sheet.contains(r#"<col min="1" max="1" width="15.7109375""#),
        "{sheet}"
    );
    assert!(
        sheet.contains(r#"<col min="2" max="2" width="40.7109375""#),
        "thumbnail width"
    );
    assert!(
        sheet.contains(r#"<col min="8" max="8" width="45.7109375""#),
        "scan_path width"
    );
    // Ranges of equal columns are merged: 26 columns in all, at width 15 but B and H;
    // the timecode columns (T, U) carry the text style.
    assert!(
        sheet.contains(r#"<col min="22" max="26" width="15.7109375""#),
        "clip_tag width"
    );
    assert!(
        sheet.contains(r#"<col min="20" max="21" width="15.7109375" style="1""#),
        "{sheet}"
    );
    assert!(
        sheet.contains(r#"<row r="2" spans="1:26" ht="144" customHeight="1">"#),
        "{sheet}"
    );
    assert!(
        sheet.contains(r#"<row r="3" spans="1:26" ht="144" customHeight="1">"#),
        "row 3 height"
    );
    assert!(
        sheet.contains(r#"<row r="1" spans="1:26">"#),
        "the header row keeps its height"
    );
    assert!(!sheet.contains("<f>"), "no formula");
    let styles = String::from_utf8(unzip::member(&zip, "xl/styles.xml").unwrap()).unwrap();
    assert!(styles.contains(r#"<xf numFmtId="49""#), "{styles}");
    assert!(
        sheet.contains(r#"<c r="T2" s="1" t="s">"#),
        "timecode_in is styled text: {sheet}"
    );
    assert!(
        sheet.contains(r#"<c r="U3" s="1" t="s">"#),
        "timecode_out is styled text"
    );

    let drawing =
        String::from_utf8(unzip::member(&zip, "xl/drawings/drawing1.xml").unwrap()).unwrap();
    // A floating picture anchored at B2 (col 1, row 1), shown at 240×135 px
    // (9525 EMU per pixel), not an Excel 365 "Place in Cell" image.
    assert!(
        drawing.contains("<xdr:from><xdr:col>1</xdr:col>"),
        "{drawing}"
    );
    assert!(drawing.contains("<xdr:row>1</xdr:row>"), "{drawing}");
    assert!(
        drawing.contains(r#"<a:ext cx="2286000" cy="1285875"/>"#),
        "{drawing}"
    );
    assert!(unzip::member(&zip, "xl/richData/rdrichvalue.xml").is_none());
    assert!(unzip::member(&zip, "xl/media/image1.jpeg").is_some());
}
