//! The scan end to end, on deliveries generated in temporary folders, through the
//! library and through the real `iom` binary.

use std::path::Path;
use std::process::Command;

use iom::config::Settings;
use iom::media::exr::{self, ExrSpec};
use iom::sample::{self, PlateFormat, PlateSpec};
use iom::scan::{scan, NoProgress, ScanOptions, ScanReport};
use iom::scanlist::{self, Row, Severity};
use iom::timecode::FrameRate;

fn settings() -> Settings {
    Settings::defaults().unwrap()
}

fn run(delivery: &Path) -> ScanReport {
    scan(&settings(), &ScanOptions::new(delivery), &NoProgress).unwrap()
}

fn row_named<'a>(r: &'a ScanReport, scan_name: &str) -> &'a Row {
    r.rows
        .iter()
        .find(|row| row.scan_name == scan_name)
        .unwrap_or_else(|| panic!("no row {scan_name} in {:#?}", r.rows))
}

fn iom() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iom"));
    // Keep the developer's settings out of the tests.
    c.env_remove("IOM_CONFIG").current_dir(std::env::temp_dir());
    c
}

#[test]
fn demo_delivery_scans_into_expected_rows_and_a_readable_scanlist() {
    let tmp = tempfile::tempdir().unwrap();
    let delivery = sample::demo_delivery(tmp.path()).unwrap();
    let r = run(&delivery);

    assert_eq!(r.summary.sequences, 3);
    assert_eq!(r.summary.movies, 1);
    assert_eq!(r.summary.missing_frames, 2);
    assert_eq!(r.summary.sequences_with_gaps, 1);
    assert_eq!(r.summary.errors, 0, "{:#?}", r.issues);
    assert_eq!(r.rows.len(), 6);

    // Overscan plate: resolution is the display window, not dataWindow.max + 1 (bug B1).
    let a = row_named(&r, "A001C003_220101_R1AB.");
    assert_eq!(a.resolution, "1280 x 720");
    assert_eq!(
        (a.start_frame, a.end_frame, a.duration),
        (Some(1001), Some(1024), Some(24))
    );
    assert_eq!(a.timecode_in, "01:00:00:00");
    assert_eq!(a.timecode_out, "01:00:00:23");
    assert_eq!(a.framerate, Some(24.0));
    assert_eq!(a.pad, "%04d");
    assert_eq!(a.ext, "exr");
    assert_eq!(a.clip_name, "A001C003_220101_R1AB");
    assert!(a.check);
    assert!(r
        .issues
        .iter()
        .any(|i| i.message.contains("data window 1344x784")));

    // Gap: reported, row unchecked, duration is the frames on disk.
    let b = row_named(&r, "B002C011_bg_");
    assert!(!b.check);
    assert_eq!(b.duration, Some(10));
    let gap = r
        .gaps
        .iter()
        .find(|g| g.sequence.contains("B002C011_bg_"))
        .unwrap();
    assert_eq!(gap.missing.len(), 1);
    assert_eq!((gap.missing[0].start, gap.missing[0].end), (1006, 1007));
    assert_eq!(b.timecode_out, "14:20:05:21");

    // DPX at 25 fps.
    let c = row_named(&r, "C003_plate.");
    assert_eq!(c.resolution, "1024 x 576");
    assert_eq!(c.framerate, Some(25.0));
    assert_eq!(c.timecode_in, "10:00:00:00");
    assert_eq!(c.timecode_out, "10:00:00:11");

    // Movie: one row per EDL event, record side mapped from the movie's own TC.
    let mov: Vec<&Row> = r.rows.iter().filter(|x| x.ext == "mov").collect();
    assert_eq!(mov.len(), 3);
    let starts: Vec<_> = mov.iter().map(|x| (x.start_frame, x.end_frame)).collect();
    assert_eq!(
        starts,
        vec![
            (Some(1), Some(24)),
            (Some(25), Some(48)),
            (Some(49), Some(72))
        ]
    );
    assert_eq!(mov[0].clip_name, "A001C003_220101_R1AB.");
    assert_eq!(mov[1].timecode_in, "14:20:05:10");
    assert_eq!(mov[1].retime_percent, Some(50.0));
    assert_eq!(mov[1].retime_duration, Some(24));
    assert!(mov[1].clip_tag.contains("50"), "{}", mov[1].clip_tag);
    assert_eq!(mov[0].retime_percent, None);

    // Thumbnails where the original put them, fitted in 960x540 with the aspect kept.
    let thumbs = delivery.join(".thumbnail");
    let t = a.thumbnail.as_ref().unwrap();
    assert_eq!(
        t,
        &thumbs.join("A001C003_220101_R1AB_A001C003_220101_R1AB.1001.jpg")
    );
    let img = image::open(t).unwrap();
    assert_eq!((img.width(), img.height()), (960, 540));
    let dpx_thumb = image::open(c.thumbnail.as_ref().unwrap()).unwrap();
    assert_eq!((dpx_thumb.width(), dpx_thumb.height()), (960, 540));
    for (i, m) in mov.iter().enumerate() {
        let p = m.thumbnail.as_ref().unwrap();
        assert_eq!(p, &thumbs.join(format!("edit_ref_v001.{:04}.jpg", i + 1)));
        assert!(p.is_file());
    }

    // The scanlist reads back to the same rows.
    let path = r.scanlist.clone().unwrap();
    assert_eq!(path, delivery.join("scanlist_01.xlsx"));
    let back = scanlist::read::read(&path, &settings().scanlist, Some(&delivery)).unwrap();
    assert_eq!(back.rows.len(), r.rows.len());
    for (w, rd) in r.rows.iter().zip(&back.rows) {
        assert_eq!(w, rd);
    }

    // A second scan writes the next scanlist, never over the first.
    let r2 = run(&delivery);
    assert_eq!(r2.scanlist.unwrap(), delivery.join("scanlist_02.xlsx"));
}

#[test]
fn bad_items_are_reported_and_the_rest_is_written() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // A good plate.
    sample::write_plate(d, &PlateSpec::exr("good", "good.", 64, 36, 4)).unwrap();
    // Truncated, zero-byte and garbage frames inside one plate.
    sample::write_plate(
        d,
        &PlateSpec {
            zero_byte: vec![1002],
            truncated: vec![1003],
            ..PlateSpec::exr("damaged", "damaged.", 64, 36, 5)
        },
    )
    .unwrap();
    std::fs::write(
        d.join("damaged/damaged.1005.exr"),
        b"this is not an exr header at all",
    )
    .unwrap();
    // A plate whose every frame is broken.
    std::fs::create_dir_all(d.join("broken")).unwrap();
    std::fs::write(d.join("broken/broken.1001.exr"), b"garbage").unwrap();
    std::fs::write(d.join("broken/broken.1002.exr"), b"").unwrap();
    // A zero-size DPX (header says 0x0).
    sample::write_plate(
        d,
        &PlateSpec {
            format: PlateFormat::Dpx,
            ..PlateSpec::exr("dpx0", "dpx0.", 8, 8, 1)
        },
    )
    .unwrap();
    let dpx = d.join("dpx0/dpx0.1001.dpx");
    let mut bytes = std::fs::read(&dpx).unwrap();
    bytes[772..780].fill(0);
    std::fs::write(&dpx, bytes).unwrap();
    // A "MOV" that is text.
    std::fs::write(d.join("notamovie.mov"), "hello, I am a text file\n").unwrap();

    let r = run(d);
    assert!(r.scanlist.as_ref().unwrap().is_file());
    let good = row_named(&r, "good.");
    assert!(good.check);

    let damaged = row_named(&r, "damaged.");
    assert!(!damaged.check);
    let g = r
        .gaps
        .iter()
        .find(|g| g.sequence.contains("damaged."))
        .unwrap();
    assert_eq!(g.zero_byte, vec![1002]);
    let corrupt: Vec<i64> = g.corrupt.iter().map(|c| c.0).collect();
    assert_eq!(corrupt, vec![1003, 1005]);
    assert!(
        g.corrupt[0].1.contains("damaged.1003.exr"),
        "{}",
        g.corrupt[0].1
    );
    // damaged: 3, broken: 2, the 0×0 DPX: 1.
    assert_eq!(r.summary.bad_frames, 3 + 2 + 1);

    assert!(r.rows.iter().all(|x| x.scan_name != "broken."));
    let errors: Vec<_> = r
        .issues
        .iter()
        .filter(|i| i.severity == Severity::Error)
        .collect();
    assert!(
        errors.iter().any(|i| i.path.contains("broken.%04d.exr")),
        "{errors:#?}"
    );
    assert!(
        errors
            .iter()
            .any(|i| i.path.ends_with("dpx0.%04d.dpx") || i.path.contains("dpx0")),
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|i| i.path.ends_with("notamovie.mov")),
        "{errors:#?}"
    );
    assert!(r.summary.errors >= 3);
    // Every error names its input.
    for e in &errors {
        assert!(!e.message.is_empty() && !e.path.is_empty());
    }
}

#[test]
fn names_padding_and_folders() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    // Spaces, quotes and Korean in folder and file names.
    sample::write_plate(
        d,
        &PlateSpec::exr("촬영 소스/it's \"q\"", "플레이트 v1.", 32, 18, 3),
    )
    .unwrap();
    // Two sequences in one folder with different padding, and a third with `_`.
    sample::write_plate(
        d,
        &PlateSpec {
            pad: 3,
            start: 1,
            ..PlateSpec::exr("mixed", "p.", 32, 18, 2)
        },
    )
    .unwrap();
    sample::write_plate(
        d,
        &PlateSpec {
            pad: 5,
            ..PlateSpec::exr("mixed", "p.", 32, 18, 2)
        },
    )
    .unwrap();
    sample::write_plate(
        d,
        &PlateSpec {
            pad: 6,
            start: 1,
            ..PlateSpec::exr("mixed", "p_", 32, 18, 2)
        },
    )
    .unwrap();
    // Identical plate names in two folders: distinct thumbnails.
    sample::write_plate(d, &PlateSpec::exr("roll_a/plate", "plate.", 32, 18, 2)).unwrap();
    sample::write_plate(d, &PlateSpec::exr("roll_b/plate", "plate.", 32, 18, 2)).unwrap();
    // A hidden thumbnail folder with frame-like names is never scanned.
    std::fs::create_dir_all(d.join("mixed/.thumbnail")).unwrap();
    std::fs::write(d.join("mixed/.thumbnail/x.1001.jpg"), b"").unwrap();

    let r = run(d);
    assert_eq!(r.summary.errors, 0, "{:#?}", r.issues);
    let korean = row_named(&r, "플레이트 v1.");
    assert!(korean.scan_path.ends_with("촬영 소스/it's \"q\""));
    let mixed: Vec<&Row> = r
        .rows
        .iter()
        .filter(|x| x.scan_path.ends_with("/mixed"))
        .collect();
    let mut pads: Vec<&str> = mixed.iter().map(|x| x.pad.as_str()).collect();
    pads.sort();
    assert_eq!(pads, vec!["%03d", "%05d", "%06d"]);
    let plates: Vec<&Row> = r.rows.iter().filter(|x| x.scan_name == "plate.").collect();
    assert_eq!(plates.len(), 2);
    assert_ne!(plates[0].thumbnail, plates[1].thumbnail);
    assert!(plates
        .iter()
        .all(|p| p.thumbnail.as_ref().unwrap().is_file()));
    assert_eq!(r.summary.sequences, 6);
}

#[test]
fn symlink_loop_is_reported_and_skipped() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    sample::write_plate(d, &PlateSpec::exr("shots/a", "a.", 32, 18, 2)).unwrap();
    std::os::unix::fs::symlink(d.join("shots"), d.join("shots/a/loop")).unwrap();
    let r = run(d);
    assert_eq!(r.rows.len(), 1);
    assert!(
        r.issues.iter().any(|i| i.message.contains("symlink loop")),
        "{:#?}",
        r.issues
    );
}

#[test]
fn hundred_thousand_files_in_one_folder() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("big");
    std::fs::create_dir_all(&dir).unwrap();
    for i in 1..=100_000 {
        std::fs::File::create(dir.join(format!("big.{i:06}.dpx"))).unwrap();
    }
    let mut s = settings();
    s.scan.jobs = 2;
    let opts = ScanOptions {
        thumbnails: false,
        ..ScanOptions::new(tmp.path())
    };
    let r = scan(&s, &opts, &NoProgress).unwrap();
    assert_eq!(r.summary.sequences, 1);
    assert_eq!(r.summary.frames, 100_000);
    assert_eq!(r.summary.bad_frames, 100_000);
    assert_eq!(r.rows.len(), 0);
    assert!(r
        .issues
        .iter()
        .any(|i| i.severity == Severity::Error && i.message.contains("no readable frame")));
}

#[test]
fn thumbnail_frame_and_colourspace_choice() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::create_dir_all(d.join("grey")).unwrap();
    // Frame 1001 black, 1002 mid grey (linear 0.18), 1003 white.
    for (n, v) in [(1001, 0.0f32), (1002, 0.18), (1003, 1.0)] {
        let spec = ExrSpec {
            fill: exr::Fill::Constant([v, v, v]),
            ..ExrSpec::new(64, 36)
        };
        exr::write_frame(&d.join(format!("grey/g.{n}.exr")), &spec).unwrap();
    }
    let mut s = settings();
    s.thumbnail.frame = iom::config::FrameChoice::Middle;
    let opts = ScanOptions {
        colorspace: Some("linear".into()),
        ..ScanOptions::new(d)
    };
    let r = scan(&s, &opts, &NoProgress).unwrap();
    assert_eq!(r.colorspace, "linear");
    let img = image::open(r.rows[0].thumbnail.as_ref().unwrap())
        .unwrap()
        .to_rgb8();
    // Linear 0.18 → sRGB ≈ 0.4614 → 118 (±2 for JPEG).
    let p = img.get_pixel(img.width() / 2, img.height() / 2);
    assert!((i32::from(p[0]) - 118).abs() <= 2, "{p:?}");

    // An unknown colour space is a clear error listing the known ones.
    let opts = ScanOptions {
        colorspace: Some("NotASpace".into()),
        ..ScanOptions::new(d)
    };
    let e = scan(&s, &opts, &NoProgress).unwrap_err().to_string();
    assert!(
        e.contains("NotASpace") && e.contains("ACES - ACEScg"),
        "{e}"
    );
}

#[test]
fn movie_without_edl_and_upper_case_extension() {
    use iom::media::movie::{self, MovieSpec};
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let spec = MovieSpec {
        timecode: Some("01:00:00:00".into()),
        ..MovieSpec::prores_hq(320, 180, FrameRate::FPS_25, 10)
    };
    movie::write_test_movie(&d.join("CLIP.MOV"), &spec).unwrap();
    let r = run(d);
    assert_eq!(r.rows.len(), 1, "{:#?}", r.issues);
    let m = &r.rows[0];
    assert_eq!(m.ext, "mov");
    assert_eq!(
        (m.start_frame, m.end_frame, m.duration),
        (Some(1), Some(10), Some(10))
    );
    assert_eq!(m.timecode_in, "01:00:00:00");
    assert_eq!(m.timecode_out, "01:00:00:09");
    assert_eq!(m.framerate, Some(25.0));
    assert_eq!(m.clip_name, "None");
    assert_eq!(
        m.thumbnail.as_ref().unwrap(),
        &d.join(".thumbnail/CLIP.0001.jpg")
    );
}

#[test]
fn cli_exit_codes_json_and_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    sample::write_plate(d, &PlateSpec::exr("ok", "ok.", 32, 18, 2)).unwrap();

    // Clean scan: exit 0, JSON on stdout.
    let out = iom().args(["scan", "--json"]).arg(d).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["sequences"], 1);
    assert_eq!(v["rows"][0]["resolution"], "32 x 18");

    // A bad item: exit 1, rows still written.
    std::fs::write(d.join("bad.mov"), "text").unwrap();
    let out = iom()
        .args(["scan", "-o"])
        .arg(d.join("out.xlsx"))
        .arg(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("bad.mov"));
    assert!(d.join("out.xlsx").is_file());

    // Nothing to list: exit 1 saying so, and no empty scanlist to open.
    let empty = d.join("empty");
    std::fs::create_dir(&empty).unwrap();
    std::fs::write(empty.join("readme.txt"), "notes").unwrap();
    let out = iom().args(["scan"]).arg(&empty).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no image sequence") && err.contains(&empty.display().to_string()),
        "{err}"
    );
    assert!(!empty.join("scanlist_01.xlsx").exists());

    // Missing delivery: exit 3 naming it.
    let out = iom()
        .args(["scan", "/nonexistent/delivery"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/delivery"));

    // A bad setting: exit 2 naming the key.
    let out = iom()
        .env("IOM__THUMBNAIL__WIDTH", "wide")
        .args(["scan"])
        .arg(d)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("thumbnail.width"));
}

#[test]
fn unreadable_folder_is_an_error_and_the_scan_goes_on() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o777)).unwrap();
    sample::write_plate(d, &PlateSpec::exr("open", "open.", 32, 18, 2)).unwrap();
    sample::write_plate(d, &PlateSpec::exr("locked", "locked.", 32, 18, 2)).unwrap();
    for p in [d.join("open"), d.join("locked")] {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o777)).unwrap();
    }
    std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o000)).unwrap();
    let out_xlsx = d.join("scan.xlsx");
    // Root reads everything, so run the real binary as `nobody` when we are root.
    let is_root = current_uid() == 0;
    let mut cmd = if is_root {
        let mut c = Command::new("setpriv");
        c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_iom"));
        c
    } else {
        Command::new(env!("CARGO_BIN_EXE_iom"))
    };
    let out = cmd
        .env_remove("IOM_CONFIG")
        .current_dir("/")
        .args(["scan", "--no-thumbnails", "--json", "-o"])
        .arg(&out_xlsx)
        .arg(d)
        .output()
        .unwrap();
    std::fs::set_permissions(d.join("locked"), std::fs::Permissions::from_mode(0o755)).unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["summary"]["sequences"], 1);
    let issues = v["issues"].as_array().unwrap();
    assert!(issues.iter().any(|i| i["severity"] == "error"
        && i["path"].as_str().unwrap().ends_with("locked")
        && i["message"].as_str().unwrap().contains("cannot read")));
    assert!(out_xlsx.is_file());
}

fn current_uid() -> u32 {
    // /proc/self/status "Uid:" line; avoids a libc dependency for one call.
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}
