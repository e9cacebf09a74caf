//! The bad-input corpus (issue 8, part 2): truncated and corrupt EXR, DPX and
//! movies, broken EDLs, hostile scanlists, odd file names, symlink loops, FIFOs
//! and unreadable files. Every case is generated at test time in a temporary
//! folder (docs/bad-inputs.md lists them) and must give an error that names the
//! input (and the cell for scanlists), never a panic, and publish nothing.
//!
//! Each case is checked through the library entry point that meets it first
//! (`verify_frame`, `read_frame_info`, `read_pixels`, `movie::probe`,
//! `edl::parse_file`, `scanlist::read::read`) and through the real `iom` binary
//! (`iom scan --json`, `iom publish --dry-run`, `iom publish` embedded).

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use iom::config::Settings;
use iom::edl::{self, ParseOptions};
use iom::media;
use iom::media::dpx::{self, DpxSpec};
use iom::media::exr::{self, ExrSpec};
use iom::media::movie::{self, MovieSpec};
use iom::sample::{self, PlateSpec};
use iom::scanlist;
use iom::timecode::FrameRate;

use super::publish::{command, project, row, Project};

/// Runs `f`, failing the test (with the case name) when it panics.
fn no_panic<T>(case: &str, f: impl FnOnce() -> T) -> T {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(v) => v,
        Err(p) => {
            let msg = p
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_default();
            panic!("case {case}: the library panicked: {msg}")
        }
    }
}

/// The error text must name the file and contain `needle`.
fn assert_names(case: &str, err: &str, path: &Path, needle: &str) {
    let name = path.file_name().unwrap().to_string_lossy();
    assert!(
        err.contains(&*name) || err.contains(&format!("{name:?}")),
        "case {case}: the error must name {name:?}: {err}"
    );
    assert!(
        err.contains(needle),
        "case {case}: the error should say {needle:?}: {err}"
    );
    assert!(!err.contains("panicked"), "case {case}: {err}");
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn iom() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iom"));
    c.env_remove("IOM_CONFIG")
        .env("RUST_LOG", "warn")
        .current_dir(std::env::temp_dir());
    c
}

/// Runs `cmd`, killing it after `limit` (a FIFO read that blocks must fail the
/// test, not hang the suite).
fn run_with_limit(mut cmd: Command, limit: Duration) -> Output {
    use std::process::Stdio;
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(out) => out.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").args(["-9", &id.to_string()]).status();
            panic!("iom did not finish within {limit:?} (blocked on a FIFO?)");
        }
    }
}

fn current_uid() -> u32 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

fn mkfifo(path: &Path) {
    let st = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(st.success(), "mkfifo {}", path.display());
}

fn chmod(path: &Path, mode: u32) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

// ---------------------------------------------------------------------------
// Media frames
// ---------------------------------------------------------------------------

/// Where the EXR offset table starts: its first entry is the table's own end.
fn offset_table_start(bytes: &[u8], chunks: u64) -> usize {
    (8..bytes.len() - 8)
        .find(|&p| u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap()) == p as u64 + 8 * chunks)
        .expect("offset table not found")
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(b[at..at + 8].try_into().unwrap())
}

/// What a broken frame must produce.
#[derive(Clone, Copy)]
enum Want {
    /// `verify_frame` fails (the scan's check) with this text.
    Verify(&'static str),
    /// `verify_frame` passes (the structure is intact) but decoding fails.
    Decode,
}

struct FrameCase {
    name: &'static str,
    bytes: Vec<u8>,
    ext: &'static str,
    want: Want,
}

/// A good 64×48 EXR (ZIP, 16 lines per chunk: 3 chunks) and its table start.
fn good_exr(dir: &Path) -> (Vec<u8>, usize) {
    let p = dir.join("good_source.exr");
    exr::write_frame(&p, &ExrSpec::new(64, 48)).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    let table = offset_table_start(&bytes, 3);
    (bytes, table)
}

fn good_dpx(dir: &Path) -> Vec<u8> {
    let p = dir.join("good_source.dpx");
    dpx::write_frame(&p, &DpxSpec::new(16, 8)).unwrap();
    let bytes = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    bytes
}

fn frame_cases(dir: &Path) -> Vec<FrameCase> {
    let (exr, table) = good_exr(dir);
    let first_chunk = u64_at(&exr, table) as usize;
    let second_chunk = u64_at(&exr, table + 8) as usize;
    let patched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = exr.clone();
        f(&mut b);
        b
    };
    let put_u64 =
        |b: &mut Vec<u8>, at: usize, v: u64| b[at..at + 8].copy_from_slice(&v.to_le_bytes());
    let put_i32 =
        |b: &mut Vec<u8>, at: usize, v: i32| b[at..at + 4].copy_from_slice(&v.to_le_bytes());
    let e = |name, bytes, want| FrameCase {
        name,
        bytes,
        ext: "exr",
        want,
    };
    let mut cases = vec![
        e("exr_empty", Vec::new(), Want::Verify("empty")),
        e(
            "exr_text",
            b"this is not an exr header at all\n".to_vec(),
            Want::Verify("not a valid OpenEXR"),
        ),
        e("exr_magic_only", exr[..4].to_vec(), Want::Verify("")),
        e(
            "exr_cut_in_header",
            exr[..table / 2].to_vec(),
            Want::Verify("truncated"),
        ),
        e(
            "exr_cut_in_offset_table",
            exr[..table + 11].to_vec(),
            Want::Verify("offset table is cut"),
        ),
        e(
            "exr_offset_past_end",
            patched(&|b| put_u64(b, table + 8, 1 << 40)),
            Want::Verify("points past end of file"),
        ),
        e(
            "exr_offset_in_header",
            patched(&|b| put_u64(b, table, 12)),
            Want::Verify("inside the header or offset table"),
        ),
        e(
            "exr_offset_zero",
            patched(&|b| put_u64(b, table + 16, 0)),
            Want::Verify("never finished"),
        ),
        e(
            "exr_offsets_duplicated",
            patched(&|b| put_u64(b, table + 8, first_chunk as u64)),
            Want::Verify("both point at byte"),
        ),
        e(
            "exr_chunk_size_overlaps_next",
            patched(&|b| {
                put_i32(
                    b,
                    first_chunk + 4,
                    (second_chunk - first_chunk) as i32 + 100,
                )
            }),
            Want::Verify("into chunk"),
        ),
        e(
            "exr_chunk_size_negative",
            patched(&|b| put_i32(b, first_chunk + 4, -5)),
            Want::Verify("negative size"),
        ),
        e(
            "exr_cut_in_last_chunk",
            exr[..exr.len() - 7].to_vec(),
            Want::Verify("the last chunk"),
        ),
        e(
            "exr_bad_version",
            patched(&|b| b[4..8].fill(0xFF)),
            Want::Verify(""),
        ),
        e(
            "exr_chunk_data_garbage",
            patched(&|b| {
                let end = first_chunk + 8 + 40;
                b[first_chunk + 8..end].fill(0xA5);
            }),
            Want::Decode,
        ),
    ];

    let dpx = good_dpx(dir);
    let d = |name, bytes, want| FrameCase {
        name,
        bytes,
        ext: "dpx",
        want,
    };
    let dpatched = |f: &dyn Fn(&mut Vec<u8>)| {
        let mut b = dpx.clone();
        f(&mut b);
        b
    };
    cases.extend([
        d("dpx_empty", Vec::new(), Want::Verify("empty")),
        d(
            "dpx_bad_magic",
            dpatched(&|b| b[..4].copy_from_slice(b"ABCD")),
            Want::Verify("magic is"),
        ),
        d(
            "dpx_zero_size",
            dpatched(&|b| b[772..780].fill(0)),
            Want::Verify("image size is 0×0"),
        ),
        d(
            "dpx_undefined_size",
            dpatched(&|b| b[772..780].fill(0xFF)),
            Want::Verify("image size is"),
        ),
        d(
            "dpx_huge_size",
            dpatched(&|b| {
                b[772..776].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
                b[776..780].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
            }),
            Want::Verify("pixel limit"),
        ),
        d(
            "dpx_three_bytes",
            b"SDP".to_vec(),
            Want::Verify("truncated"),
        ),
        d(
            "dpx_cut_in_header",
            dpx[..300].to_vec(),
            Want::Verify("truncated"),
        ),
        d(
            "dpx_cut_in_pixels",
            dpx[..dpx.len() - 100].to_vec(),
            Want::Verify("truncated"),
        ),
        d(
            "dpx_data_offset_in_header",
            dpatched(&|b| {
                b[4..8].copy_from_slice(&100u32.to_be_bytes());
                b[808..812].copy_from_slice(&100u32.to_be_bytes());
            }),
            Want::Verify("inside the"),
        ),
    ]);
    cases
}

/// The frame cases through the library: an error naming the file, no panic.
fn check_frame_case(c: &FrameCase, path: &Path) {
    let verify = no_panic(c.name, || media::verify_frame(path));
    let _ = no_panic(c.name, || media::read_frame_info(path));
    let pixels = no_panic(c.name, || media::pixels::decode(path));
    match c.want {
        Want::Verify(needle) => {
            let err = verify.expect_err(c.name).to_string();
            assert_names(c.name, &err, path, needle);
            let err = pixels.expect_err(c.name).to_string();
            assert_names(c.name, &err, path, "");
        }
        Want::Decode => {
            let err = pixels.expect_err(c.name).to_string();
            assert_names(c.name, &err, path, "");
        }
    }
}

struct MovieCase {
    name: &'static str,
    bytes: Vec<u8>,
}

fn good_movie(dir: &Path) -> Vec<u8> {
    let p = dir.join("good_source.mov");
    movie::write_test_movie(&p, &MovieSpec::mjpeg(64, 36, FrameRate::FPS_24, 12)).unwrap();
    let b = std::fs::read(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    b
}

fn movie_cases(good: &[u8]) -> Vec<MovieCase> {
    let mut random = vec![0u8; 4096];
    for (i, b) in random.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).rotate_left(7) as u8;
    }
    vec![
        MovieCase {
            name: "mov_text",
            bytes: b"hello, I am a text file named .mov\n".to_vec(),
        },
        MovieCase {
            name: "mov_empty",
            bytes: Vec::new(),
        },
        MovieCase {
            name: "mov_truncated",
            bytes: good[..good.len() / 2].to_vec(),
        },
        MovieCase {
            name: "mov_random_bytes",
            bytes: random,
        },
    ]
}

#[test]
fn broken_frames_and_movies_give_errors_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut n = 0;
    for c in frame_cases(d) {
        let p = d.join(format!("{}.1001.{}", c.name, c.ext));
        std::fs::write(&p, &c.bytes).unwrap();
        check_frame_case(&c, &p);
        n += 1;
    }
    let good = good_movie(d);
    for c in movie_cases(&good) {
        let p = d.join(format!("{}.mov", c.name));
        std::fs::write(&p, &c.bytes).unwrap();
        let err = no_panic(c.name, || movie::probe(&p))
            .expect_err(c.name)
            .to_string();
        assert_names(c.name, &err, &p, "");
        n += 1;
    }
    // A frame that is a FIFO: the frame readers must not be handed it (the scan
    // skips it, below); a folder named like a frame is not a frame.
    assert!(n >= 27, "{n} cases");
}

// ---------------------------------------------------------------------------
// EDLs
// ---------------------------------------------------------------------------

const EV: &str = "001  AX       V     C        01:00:00:00 01:00:01:00 01:00:00:00 01:00:01:00\n";

struct EdlCase {
    name: &'static str,
    text: Vec<u8>,
    needle: &'static str,
}

fn edl_cases() -> Vec<EdlCase> {
    let t = |name, text: String, needle| EdlCase {
        name,
        text: text.into_bytes(),
        needle,
    };
    vec![
        EdlCase {
            name: "edl_binary_garbage",
            text: (0..2000u32)
                .map(|i| b"0123 \x00\xff\n:;"[(i * 7 % 10) as usize])
                .collect(),
            needle: "line",
        },
        t(
            "edl_garbage_event",
            format!("TITLE: x\n{EV}002  BX  V  C  01:00:01:00 junk\n"),
            "not a valid event line",
        ),
        t(
            "edl_unbalanced_transition",
            format!(
                "TITLE: x\n{EV}003  BX       V     D    010 02:00:00:00 02:00:01:00 01:00:01:00 01:00:02:00\n"
            ),
            "transition and event id mismatch",
        ),
        t(
            "edl_negative_record_duration",
            "TITLE: x\n001  AX       V     C        01:00:00:00 01:00:01:00 01:00:05:00 01:00:04:00\n"
                .into(),
            "record out",
        ),
        t(
            "edl_negative_source_duration",
            "TITLE: x\n001  AX       V     C        01:00:02:00 01:00:01:00 01:00:00:00 01:00:01:00\n"
                .into(),
            "source out",
        ),
        t(
            "edl_bad_timecode",
            "TITLE: x\n001  AX       V     C        01:00:00:27 01:00:01:00 01:00:00:00 01:00:01:00\n"
                .into(),
            "timecode",
        ),
        t(
            "edl_bad_speed",
            format!("TITLE: x\n{EV}M2   AX       fast      01:00:00:00\n"),
            "M2",
        ),
        t(
            "edl_unbalanced_key",
            format!("TITLE: x\n{EV}002  BX       V     K  X  02:00:00:00 02:00:01:00 01:00:01:00 01:00:02:00\n"),
            "not a valid event line",
        ),
    ]
}

/// The EDL cases that are not text: a FIFO, a folder, a file over the limit.
fn edl_special(d: &Path) -> Vec<(&'static str, PathBuf, &'static str)> {
    let fifo = d.join("edl_fifo.edl");
    mkfifo(&fifo);
    let folder = d.join("edl_folder.edl");
    std::fs::create_dir_all(&folder).unwrap();
    let huge = d.join("edl_huge.edl");
    let f = std::fs::File::create(&huge).unwrap();
    f.set_len(edl::MAX_EDL_BYTES + 1).unwrap();
    vec![
        ("edl_fifo", fifo, "named pipe"),
        ("edl_folder", folder, "folder"),
        ("edl_huge", huge, "too large"),
    ]
}

#[test]
fn broken_edls_give_errors_naming_the_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let mut n = 0;
    for c in edl_cases() {
        let p = d.join(format!("{} 'cut' 한글.edl", c.name));
        std::fs::write(&p, &c.text).unwrap();
        let err = no_panic(c.name, || {
            edl::parse_file(&p, FrameRate::FPS_24, ParseOptions::default())
        });
        match err {
            Err(e) => assert_names(c.name, &e.to_string(), &p, c.needle),
            // Garbage with no line that looks like an event reads as an EDL with
            // no events (the scan then warns that it has no video event).
            Ok(edl) if c.name == "edl_binary_garbage" => {
                assert!(edl.events.is_empty(), "{:?}", edl.events)
            }
            Ok(edl) => panic!("case {}: accepted: {edl:?}", c.name),
        }
        n += 1;
    }
    for (name, p, needle) in edl_special(d) {
        // Run in a thread: a FIFO that blocks must fail, not hang the suite.
        let (tx, rx) = std::sync::mpsc::channel();
        let q = p.clone();
        std::thread::spawn(move || {
            let r = edl::parse_file(&q, FrameRate::FPS_24, ParseOptions::default());
            let _ = tx.send(r.map(|_| ()).map_err(|e| e.to_string()));
        });
        let r = rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap_or_else(|_| panic!("case {name}: parse_file blocked"));
        assert_names(name, &r.expect_err(name), &p, needle);
        n += 1;
    }
    assert!(n >= 11, "{n} cases");
}

// ---------------------------------------------------------------------------
// The scan of a delivery holding all of the above, through the binary
// ---------------------------------------------------------------------------

/// Every bad input in one delivery; `iom scan --json` must exit 1, finish (no
/// FIFO blocks it), write the scanlist, and name every bad item in its report.
#[test]
fn cli_scan_reports_every_bad_item_by_name() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path().join("delivery");
    std::fs::create_dir_all(&d).unwrap();
    let mut expect: Vec<(String, String)> = Vec::new(); // (case, name in the report)

    // Broken frames: frame 1002 of a two-frame plate whose 1001 is good.
    let good_exr_bytes = good_exr(tmp.path()).0;
    let good_dpx_bytes = good_dpx(tmp.path());
    for c in frame_cases(tmp.path()) {
        let dir = d.join(c.name);
        std::fs::create_dir_all(&dir).unwrap();
        let good = if c.ext == "exr" {
            &good_exr_bytes
        } else {
            &good_dpx_bytes
        };
        std::fs::write(dir.join(format!("{}.1001.{}", c.name, c.ext)), good).unwrap();
        let bad = format!("{}.1002.{}", c.name, c.ext);
        std::fs::write(dir.join(&bad), &c.bytes).unwrap();
        // A frame whose structure is intact but whose pixels are garbage is only
        // found when decoded (thumbnail, copy checks); the scan's check is
        // structural.
        if c.bytes.is_empty() {
            // Zero-byte frames are listed by number on their sequence.
            expect.push((c.name.into(), format!("{}.%04d.{}", c.name, c.ext)));
        } else if matches!(c.want, Want::Verify(_)) {
            expect.push((c.name.into(), bad));
        }
    }
    // Movies.
    let good_mov = good_movie(tmp.path());
    for c in movie_cases(&good_mov) {
        let name = format!("{}.mov", c.name);
        std::fs::write(d.join(&name), &c.bytes).unwrap();
        expect.push((c.name.into(), name));
    }
    // EDLs, each beside its own copy of a good movie.
    let edls = d.join("edls");
    std::fs::create_dir_all(&edls).unwrap();
    for c in edl_cases() {
        if c.name == "edl_binary_garbage" {
            continue; // no error, a warning (checked in the library test)
        }
        std::fs::write(edls.join(format!("{}.mov", c.name)), &good_mov).unwrap();
        let name = format!("{}.edl", c.name);
        std::fs::write(edls.join(&name), &c.text).unwrap();
        expect.push((c.name.into(), name));
    }
    std::fs::write(edls.join("edl_fifo.mov"), &good_mov).unwrap();
    mkfifo(&edls.join("edl_fifo.edl"));
    expect.push(("edl_fifo".into(), "edl_fifo.edl".into()));
    // FIFOs named like a frame and a movie.
    let fifo_dir = d.join("fifo_frames");
    std::fs::create_dir_all(&fifo_dir).unwrap();
    std::fs::write(fifo_dir.join("ff.1001.exr"), &good_exr_bytes).unwrap();
    mkfifo(&fifo_dir.join("ff.1002.exr"));
    expect.push(("fifo_frame".into(), "ff.1002.exr".into()));
    mkfifo(&d.join("fifo_movie.mov"));
    expect.push(("fifo_movie".into(), "fifo_movie.mov".into()));
    // Odd names: spaces, quotes, Korean, a newline; each holds a broken frame so
    // the report must carry the name intact.
    for (case, folder, head) in [
        ("name_spaces", "plate with spaces", "plate one."),
        ("name_quotes", "it's \"quoted\"", "q'\"x."),
        ("name_korean", "한글 폴더", "플레이트."),
        ("name_newline", "new\nline", "nl\nx."),
    ] {
        let dir = d.join(folder);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join(format!("{head}1001.exr")), &good_exr_bytes).unwrap();
        let bad = format!("{head}1002.exr");
        std::fs::write(dir.join(&bad), &good_exr_bytes[..100]).unwrap();
        expect.push((case.into(), bad));
    }
    // A symlink loop and a dangling symlink frame.
    sample::write_plate(&d, &PlateSpec::exr("loop/a", "a.", 32, 18, 2)).unwrap();
    std::os::unix::fs::symlink(d.join("loop"), d.join("loop/a/back")).unwrap();
    expect.push(("symlink_loop".into(), "loop/a/back".into()));
    let dang = d.join("dangling");
    std::fs::create_dir_all(&dang).unwrap();
    std::fs::write(dang.join("dg.1001.exr"), &good_exr_bytes).unwrap();
    std::os::unix::fs::symlink(d.join("nowhere.exr"), dang.join("dg.1002.exr")).unwrap();
    expect.push(("symlink_dangling".into(), "dg.1002.exr".into()));

    let out_xlsx = tmp.path().join("out.xlsx");
    let mut cmd = iom();
    cmd.args(["scan", "--json", "--no-thumbnails", "-o"])
        .arg(&out_xlsx)
        .arg(&d);
    let out = run_with_limit(cmd, Duration::from_secs(300));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    assert!(out_xlsx.is_file(), "the good rows are still written");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    // Everything the report says about problems, as text: issues (path +
    // message) and the per-sequence corrupt/zero-byte frame lists.
    let mut report = String::new();
    for i in v["issues"].as_array().unwrap() {
        report.push_str(&format!(
            "{} | {} | {}\n",
            i["severity"], i["path"], i["message"]
        ));
    }
    for g in v["gaps"].as_array().unwrap() {
        report.push_str(&format!("{g}\n"));
    }
    let json_escaped = |s: &str| serde_json::to_string(s).unwrap();
    let mut missing = Vec::new();
    for (case, name) in &expect {
        let escaped = json_escaped(name);
        let escaped = &escaped[1..escaped.len() - 1];
        if !report.contains(escaped) {
            missing.push(format!("{case} ({name:?})"));
        }
    }
    assert!(
        missing.is_empty(),
        "not named in the scan report: {missing:?}\n{report}"
    );
    assert!(report.contains("zero-byte frame(s): 1002"), "{report}");
    // The good plates still made rows.
    let rows = v["rows"].as_array().unwrap();
    assert!(rows.iter().any(|r| r["scan_name"] == "a."), "{rows:#?}");
    assert!(expect.len() >= 40, "{} cases in the scan", expect.len());
}

/// Unreadable frames, EDLs and scanlists, as a user who cannot read them (root
/// reads everything, so the binary runs as `nobody` when the tests run as root).
#[test]
fn cli_unreadable_files_are_named() {
    let tmp = tempfile::tempdir().unwrap();
    let top = tmp.path();
    chmod(top, 0o755);
    let d = top.join("delivery");
    sample::write_plate(&d, &PlateSpec::exr("plate", "p.", 32, 18, 2)).unwrap();
    let locked_frame = d.join("plate/p.1002.exr");
    let good_mov = good_movie(top);
    std::fs::write(d.join("locked_edl.mov"), &good_mov).unwrap();
    let locked_edl = d.join("locked_edl.edl");
    std::fs::write(&locked_edl, EV).unwrap();
    let locked_sheet = d.join("scanlist_01.xlsx");
    std::fs::write(&locked_sheet, b"PK\x03\x04not really").unwrap();
    for p in walk(&d) {
        chmod(&p, if p.is_dir() { 0o755 } else { 0o644 });
    }
    chmod(&d, 0o777);
    for p in [&locked_frame, &locked_edl, &locked_sheet] {
        chmod(p, 0o000);
    }
    let as_user = || {
        let mut c = if current_uid() == 0 {
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(env!("CARGO_BIN_EXE_iom"));
            c
        } else {
            Command::new(env!("CARGO_BIN_EXE_iom"))
        };
        c.env_remove("IOM_CONFIG").current_dir("/");
        c
    };
    let out_xlsx = d.join("scan_out.xlsx");
    let mut scan = as_user();
    scan.args(["scan", "--json", "--no-thumbnails", "-o"])
        .arg(&out_xlsx)
        .arg(&d);
    let out = run_with_limit(scan, Duration::from_secs(120));
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    let report = String::from_utf8_lossy(&out.stdout);
    for name in ["p.1002.exr", "locked_edl.edl"] {
        assert!(report.contains(name), "{name} not named: {report}");
    }
    assert!(
        report.contains("ermission denied"),
        "the cause is given: {report}"
    );

    let mut publish = as_user();
    publish.args(["publish", "--dry-run"]).arg(&locked_sheet);
    let out = run_with_limit(publish, Duration::from_secs(60));
    let err = stderr(&out);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert_names(
        "scanlist_unreadable",
        &err,
        &locked_sheet,
        "ermission denied",
    );
    chmod(&locked_frame, 0o644);
    chmod(&locked_edl, 0o644);
    chmod(&locked_sheet, 0o644);
}

fn walk(d: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(d).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out
}

// ---------------------------------------------------------------------------
// Scanlists, through the reader and through `iom publish`
// ---------------------------------------------------------------------------

/// A cell of a hand-made sheet.
#[derive(Clone)]
enum C {
    S(String),
    N(f64),
    F(&'static str),
    Empty,
}

fn s(v: &str) -> C {
    C::S(v.into())
}

/// Writes `grid` (row 0 is the header row) to sheet `Sheet1` of an .xlsx.
fn write_grid(path: &Path, grid: &[Vec<C>]) {
    let mut wb = rust_xlsxwriter::Workbook::new();
    let ws = wb.add_worksheet();
    ws.set_name("Sheet1").unwrap();
    for (r, row) in grid.iter().enumerate() {
        for (c, cell) in row.iter().enumerate() {
            let (r, c) = (r as u32, c as u16);
            match cell {
                C::S(v) => {
                    ws.write_string(r, c, v).unwrap();
                }
                C::N(v) => {
                    ws.write_number(r, c, *v).unwrap();
                }
                C::F(f) => {
                    ws.write_formula(r, c, *f).unwrap();
                }
                C::Empty => {}
            }
        }
    }
    wb.save(path).unwrap();
}

/// The header and one good row (for the plate in `p.delivery/A001`), as cells.
fn good_grid(p: &Project, spec: &PlateSpec) -> (Vec<C>, Vec<C>) {
    let r = row(&p.delivery, spec, "ABC_0010");
    let header: Vec<C> = scanlist::COLUMNS.iter().map(|h| s(h)).collect();
    let cells: Vec<C> = scanlist::COLUMNS
        .iter()
        .map(|h| match *h {
            "check" => s("o"),
            "shot_name" => s(&r.shot_name),
            "type" => s(&r.seq_type),
            "scan_path" => s(&r.scan_path),
            "scan_name" => s(&r.scan_name),
            "pad" => s(&r.pad),
            "ext" => s(&r.ext),
            "resolution" => s(&r.resolution),
            "start_frame" | "just_in" => C::N(r.start_frame.unwrap() as f64),
            "end_frame" | "just_out" => C::N(r.end_frame.unwrap() as f64),
            "duration" => C::N(r.duration.unwrap() as f64),
            "framerate" => s("24"),
            _ => C::Empty,
        })
        .collect();
    (header, cells)
}

fn col(name: &str) -> usize {
    scanlist::COLUMNS.iter().position(|c| *c == name).unwrap()
}

struct SheetCase {
    name: &'static str,
    /// Written as the file (bytes), or `None` for a grid.
    bytes: Option<Vec<u8>>,
    grid: Vec<Vec<C>>,
    /// The reader refuses it with this text (file and cell are checked too)…
    read_err: Option<&'static str>,
    /// …or reads it and the planner refuses it with this text.
    plan_err: &'static str,
}

fn sheet_cases(p: &Project, spec: &PlateSpec) -> Vec<SheetCase> {
    let (header, good) = good_grid(p, spec);
    let with = |f: &dyn Fn(&mut Vec<C>)| {
        let mut r = good.clone();
        f(&mut r);
        vec![header.clone(), r]
    };
    let set = |name: &str, v: C| {
        let i = col(name);
        move |r: &mut Vec<C>| r[i] = v.clone()
    };
    let grid = |name, grid, read_err| SheetCase {
        name,
        bytes: None,
        grid,
        read_err: Some(read_err),
        plan_err: "",
    };
    let planned = |name, grid, plan_err| SheetCase {
        name,
        bytes: None,
        grid,
        read_err: None,
        plan_err,
    };
    let bytes = |name, bytes: Vec<u8>, read_err| SheetCase {
        name,
        bytes: Some(bytes),
        grid: Vec::new(),
        read_err: Some(read_err),
        plan_err: "",
    };
    let mut unknown = header.clone();
    unknown[col("roll")] = s("rolls_royce");
    let mut dup_header = header.clone();
    dup_header[col("roll")] = s("shot_name");
    let mut extra = good.clone();
    extra.push(s("stray value"));
    let outside = p.delivery.parent().unwrap().join("elsewhere/A001");
    let traversal = format!("{}/../../../../etc", p.delivery.display());
    let zip = {
        let tmp = p._tmp.path().join("tmp_full.xlsx");
        write_grid(&tmp, &[header.clone(), good.clone()]);
        std::fs::read(&tmp).unwrap()
    };
    vec![
        grid(
            "sheet_missing_header",
            vec![good.clone(), good.clone()],
            "no scanlist header row",
        ),
        grid(
            "sheet_unknown_column",
            vec![unknown, good.clone()],
            "unknown column",
        ),
        grid(
            "sheet_duplicate_header",
            vec![dup_header, good.clone()],
            "appears twice",
        ),
        grid(
            "sheet_formula",
            with(&set("version", C::F("=1+1"))),
            "formulas are not accepted",
        ),
        grid(
            "sheet_hyperlink_formula",
            with(&set(
                "scan_path",
                C::F("=HYPERLINK(\"http://example.invalid/x\",\"plates\")"),
            )),
            "formulas are not accepted",
        ),
        grid(
            "sheet_path_outside_root",
            with(&set("scan_path", s(&outside.display().to_string()))),
            "scan_path",
        ),
        grid(
            "sheet_path_traversal",
            with(&set("scan_path", s(&traversal))),
            "scan_path",
        ),
        grid(
            "sheet_path_relative",
            with(&set("scan_path", s("A001"))),
            "scan_path",
        ),
        grid(
            "sheet_huge_frame",
            with(&set("start_frame", C::N(1e300))),
            "start_frame",
        ),
        grid(
            "sheet_huge_version",
            with(&set("version", C::N(1e12))),
            "version",
        ),
        grid(
            "sheet_text_in_number",
            with(&set("duration", s("ten"))),
            "duration",
        ),
        grid(
            "sheet_value_without_header",
            vec![header.clone(), extra],
            "no header",
        ),
        planned(
            "sheet_hyperlink_text",
            with(&set(
                "shot_name",
                s("=HYPERLINK(\"http://example.invalid\",\"x\")"),
            )),
            "shot_name",
        ),
        planned(
            "sheet_duplicate_rows",
            {
                let mut g = with(&|_| {});
                g.push(good.clone());
                g
            },
            "row 3",
        ),
        planned(
            "sheet_negative_duration",
            with(&|r| {
                r[col("just_in")] = C::N(1002.0);
                r[col("just_out")] = C::N(1001.0);
            }),
            "just_",
        ),
        bytes("sheet_empty_file", Vec::new(), "empty"),
        bytes(
            "sheet_csv_text",
            b"check,shot_name,scan_path\no,ABC_0010,/x\n".to_vec(),
            "plain text",
        ),
        bytes(
            "sheet_biff_xls",
            [
                &[0xD0u8, 0xCF, 0x11, 0xE0, 0xA1, 0xB1, 0x1A, 0xE1][..],
                &[0u8; 504][..],
            ]
            .concat(),
            "binary Excel",
        ),
        bytes(
            "sheet_truncated_zip",
            zip[..zip.len() / 2].to_vec(),
            "not a readable .xlsx",
        ),
    ]
}

/// Every scanlist case: the reader (or the planner) refuses it naming the file
/// and the cell or row; `iom publish --dry-run` and `iom publish` (embedded)
/// exit non-zero naming it; nothing is created under the project root.
#[test]
fn hostile_scanlists_are_refused_and_nothing_is_published() {
    let p = project("probe, copy, register, cleanup", None);
    let spec = PlateSpec::exr("A001", "A001C003.", 32, 18, 2);
    sample::write_plate(&p.delivery, &spec).unwrap();
    let settings: &Settings = &p.settings;
    let before = walk(&p.root).len();
    let cases = sheet_cases(&p, &spec);
    assert!(cases.len() >= 19);
    // Every case runs (a failure is collected, not the end of the test), so one
    // run shows everything that is wrong.
    let mut failed = Vec::new();
    for c in &cases {
        if catch_unwind(AssertUnwindSafe(|| check_sheet_case(&p, settings, c))).is_err() {
            failed.push(c.name);
        }
    }
    assert!(failed.is_empty(), "failed cases: {failed:?}");
    // Nothing but the case files themselves was added under the project root.
    assert_eq!(walk(&p.root).len(), before + cases.len());
}

fn check_sheet_case(p: &Project, settings: &Settings, c: &SheetCase) {
    let path = p.delivery.join(format!("{}.xlsx", c.name));
    match &c.bytes {
        Some(b) => std::fs::write(&path, b).unwrap(),
        None => write_grid(&path, &c.grid),
    }
    let read = no_panic(c.name, || {
        scanlist::read::read(&path, &settings.scanlist, Some(p.delivery.as_path()))
    });
    match (c.read_err, read) {
        (Some(needle), Err(e)) => {
            let msg = e.to_string();
            assert_names(c.name, &msg, &path, needle);
            if c.bytes.is_none() && c.name != "sheet_missing_header" {
                assert!(
                    msg.contains("cell ") || msg.contains("cells "),
                    "case {}: the error must name the cell: {msg}",
                    c.name
                );
            }
        }
        (Some(_), Ok(s)) => panic!("case {}: read: {:#?}", c.name, s.rows),
        (None, Err(e)) => panic!("case {}: the reader refused it: {e}", c.name),
        (None, Ok(_)) => {}
    }
    for dry in [true, false] {
        let mut cmd = command(p, "iom", "");
        cmd.arg("publish");
        if dry {
            cmd.arg("--dry-run");
        }
        let out = run_with_limit(
            {
                cmd.arg(&path);
                cmd
            },
            Duration::from_secs(120),
        );
        let err = stderr(&out);
        let what = format!("{} (dry run: {dry})", c.name);
        assert_eq!(out.status.code(), Some(1), "{what}: {err}");
        let needle = c.read_err.unwrap_or(c.plan_err);
        assert_names(&what, &err, &path, needle);
        assert!(err.contains("nothing was published"), "{what}: {err}");
    }
    assert!(
        !p.root.join(".iom/publishes").exists() && !p.root.join("seq").exists(),
        "case {}: something was published",
        c.name
    );
}
