//! Writes the seed corpora of the fuzz targets from iom's own writers, so the
//! fuzzer starts from real files: `seeds <corpus-dir>` fills
//! `<corpus-dir>/{edl,dpx_header,scanlist,task_message,tcl_quoting}`.
//! Existing files are kept; seeds are named `seed-*`.

use std::path::{Path, PathBuf};

use iom::config::Settings;
use iom::media::dpx::{self, DpxSpec};
use iom::sample::{self, EdlClip};
use iom::scanlist::{self, Row};
use iom::task::{graph_id, task_id, GapPolicy, PlateOutput, Source, Step, StepKind, TaskMessage};
use iom::timecode::{FrameRate, Timecode};

fn put(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus folder");
    std::fs::write(dir.join(format!("seed-{name}")), bytes).expect("write seed");
}

fn main() {
    let out = PathBuf::from(std::env::args().nth(1).expect("usage: seeds <corpus-dir>"));
    let tmp = std::env::temp_dir().join(format!("iom-fuzz-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&tmp).expect("tmp");

    // EDLs: the first byte picks the frame rate (see fuzz_targets/edl.rs).
    let edl_dir = out.join("edl");
    let clips = [
        EdlClip {
            clip_name: "A001_C001",
            src_in: "10:00:00:00",
            frames: 24,
            speed: None,
        },
        EdlClip {
            clip_name: "A002_C003",
            src_in: "11:22:33:04",
            frames: 17,
            speed: Some(47.6),
        },
        EdlClip {
            clip_name: "B004_C010",
            src_in: "02:00:00:00",
            frames: 30,
            speed: Some(0.0),
        },
        EdlClip {
            clip_name: "B004_C011",
            src_in: "02:00:10:00",
            frames: 12,
            speed: Some(-24.0),
        },
    ];
    for (i, (rate, start)) in [
        (FrameRate::FPS_24, "01:00:00:00"),
        (FrameRate::FPS_25, "00:59:53:11"),
        (FrameRate::FPS_29_97, "01:00:00;00"),
    ]
    .iter()
    .enumerate()
    {
        let p = tmp.join(format!("e{i}.edl"));
        sample::write_edl(&p, "SEED", *rate, start, &clips).expect("edl");
        let mut bytes = vec![[0u8, 1, 3][i]];
        bytes.extend(std::fs::read(&p).expect("read edl"));
        put(&edl_dir, &format!("written-{i}.edl"), &bytes);
    }
    let hand = [
        "TITLE: dissolve\nFCM: NON-DROP FRAME\n\n001  AX       V     C        01:00:00:00 01:00:00:00 01:00:00:00 01:00:00:00\n001  BX       V     D    012 02:00:00:00 02:00:02:00 01:00:00:00 01:00:02:00\nEFFECTS NAME IS CROSS DISSOLVE\n* FROM CLIP NAME: out.mov\n* TO CLIP NAME: in.mov\n002  CX       V     W001 010 03:00:00:00 03:00:01:00 01:00:02:00 01:00:03:00\n003  BL       V     C        00:00:00:00 00:00:01:00 01:00:03:00 01:00:04:00\n004  DX       AA    C        00:00:00:00 00:00:01:00 01:00:04:00 01:00:05:00\nAUD 3\n005  EX       V     K B      00:00:00:00 00:00:01:00 01:00:05:00 01:00:06:00\n* LOC: 01:00:05:10 RED     ANIM FIX NEEDED\n*ASC_SOP (1.0 1.0 1.0)(0.0 0.0 0.0)(1.0 1.0 1.0)\n*ASC_SAT 0.9\n* SOURCE FILE: S:\\path\\to\\clip.0001.exr\n",
        "\u{feff}TITLE: crlf\r\nFCM: DROP FRAME\r\n000001  Z677_4C. V     C        00:00:00;00 00:00:00;01 00:08:30;00 00:08:30;17\r\nM2   Z677_4C.       000.0                00:00:00;00\r\nFROM CLIP NAME: ZZ100_501.take_1.0001.exr\r\n",
    ];
    for (i, t) in hand.iter().enumerate() {
        let mut bytes = vec![i as u8 * 3];
        bytes.extend(t.as_bytes());
        put(&edl_dir, &format!("hand-{i}.edl"), &bytes);
    }

    // DPX frames (small, every layout the reader decodes).
    let dpx_dir = out.join("dpx_header");
    for (i, (big, bits, generic)) in [
        (true, 10, false),
        (false, 10, false),
        (true, 8, false),
        (false, 12, false),
        (true, 16, true),
        (false, 16, false),
    ]
    .iter()
    .enumerate()
    {
        let mut spec = DpxSpec::new(6, 3);
        spec.big_endian = *big;
        spec.bit_depth = *bits;
        spec.generic_only = *generic;
        if !generic {
            spec.timecode = Some(Timecode::from_frames(
                86_400 + i as i64,
                FrameRate::FPS_24,
                false,
            ));
            spec.film_fps = Some(24.0);
            spec.tv_fps = Some(if i % 2 == 0 { 24.0 } else { f32::NAN });
            spec.original_size = Some((6, 3));
        }
        let p = tmp.join(format!("d{i}.dpx"));
        dpx::write_frame(&p, &spec).expect("dpx");
        put(
            &dpx_dir,
            &format!("{i}.dpx"),
            &std::fs::read(&p).expect("read dpx"),
        );
    }

    // Scanlists: iom's writer, then hostile hand-made sheets.
    let sl_dir = out.join("scanlist");
    let settings = Settings::defaults().expect("settings").scanlist;
    let delivery = std::env::temp_dir().join("iom-fuzz-scanlist-root");
    let row = |n: i64, path: &str| Row {
        check: n % 2 == 0,
        roll: "A001".into(),
        seq_name: "ABC".into(),
        shot_name: format!("ABC_{:04}", n * 10),
        version: Some(1),
        seq_type: "org".into(),
        scan_path: format!("{}/{path}", delivery.display()),
        scan_name: "plate.".into(),
        clip_name: "A001_C001".into(),
        pad: "%04d".into(),
        ext: "exr".into(),
        resolution: "2048x1556".into(),
        start_frame: Some(1001),
        end_frame: Some(1001 + n),
        duration: Some(n + 1),
        retime_duration: (n == 2).then_some(20),
        retime_percent: (n == 2).then_some(198.3),
        retime_start_frame: (n == 2).then_some(1001),
        timecode_in: "01:00:00:00".into(),
        timecode_out: "01:00:01:00".into(),
        just_in: Some(1001),
        just_out: Some(1001 + n),
        framerate: Some(24.0),
        date: "2026-11-27".into(),
        clip_tag: "main".into(),
        ..Row::default()
    };
    let rows = vec![row(1, "plate"), row(2, "plate 2/한글"), row(3, "mov")];
    let p = tmp.join("scanlist_01.xlsx");
    scanlist::write::write(&p, &rows, &[], &settings).expect("scanlist");
    put(
        &sl_dir,
        "written.xlsx",
        &std::fs::read(&p).expect("read scanlist"),
    );
    let mut wb = rust_xlsxwriter::Workbook::new();
    {
        let ws = wb.add_worksheet();
        ws.set_name("Other").expect("name");
        for (c, h) in [
            "check",
            "shot_name",
            "scan_path",
            "version",
            "bogus",
            "duraiton",
        ]
        .iter()
        .enumerate()
        {
            ws.write(0, c as u16, *h).expect("cell");
        }
        ws.write(1, 0, "o").expect("cell");
        ws.write(1, 1, "ABC_0010").expect("cell");
        ws.write_formula(1, 2, "=HYPERLINK(\"http://x\",\"click\")")
            .expect("cell");
        ws.write(1, 3, 1e300).expect("cell");
        ws.write(2, 2, "/etc/passwd").expect("cell");
        ws.write(3, 9, "no header").expect("cell");
    }
    let p = tmp.join("hostile.xlsx");
    wb.save(&p).expect("save");
    put(
        &sl_dir,
        "hostile.xlsx",
        &std::fs::read(&p).expect("read hostile"),
    );

    // Task messages.
    let tm_dir = out.join("task_message");
    let g = graph_id("p", "A_0010", "plate.", "org", 1);
    let source = Source::Sequence {
        dir: "/deliveries/d1/plate".into(),
        head: "plate.".into(),
        pad: 4,
        ext: "exr".into(),
        first: 1,
        last: 3,
    };
    let output = PlateOutput {
        frames_dir: "/show/p/seq/A/A_0010/plate/org/v001".into(),
        plate_name: "A_0010_org_v001".into(),
        ext: "exr".into(),
        first_frame: 1001,
        pad: 4,
        plate_dir: "/show/p/seq/A/A_0010/plate".into(),
        jpg_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg".into(),
        jpg_2k_dir: "/show/p/seq/A/A_0010/plate/org/v001_jpg_2k".into(),
    };
    let steps = [
        (
            StepKind::Probe,
            Step::Probe {
                source: source.clone(),
                gap_policy: GapPolicy::Black,
            },
        ),
        (
            StepKind::Copy,
            Step::Copy {
                source,
                output: output.clone(),
            },
        ),
        (StepKind::Cleanup, Step::Cleanup { output }),
    ];
    for (i, (kind, step)) in steps.into_iter().enumerate() {
        let m = TaskMessage {
            schema: iom::task::SCHEMA_VERSION,
            task_id: task_id(&g, kind, ""),
            graph_id: g.clone(),
            attempt: 1 + i as u32,
            work_dir: "/show/p/.iom/publishes/x".into(),
            step,
        };
        put(&tm_dir, &format!("{i}.json"), &m.encode());
    }

    // Tcl: words that need each kind of quoting, and the golden job scripts.
    let tcl_dir = out.join("tcl_quoting");
    for (i, w) in [
        "plain",
        "two words",
        "{unbalanced",
        "a\\b$c[d]\"e\"",
        "#comment",
        "tab\there\nnl",
        "한글 {x} \\",
    ]
    .iter()
    .enumerate()
    {
        put(&tcl_dir, &format!("word-{i}.txt"), w.as_bytes());
    }
    let golden = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/golden/tractor");
    if let Ok(rd) = std::fs::read_dir(&golden) {
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            put(
                &tcl_dir,
                &name,
                &std::fs::read(e.path()).expect("read golden"),
            );
        }
    }
    let _ = std::fs::remove_dir_all(&tmp);
    println!("seeds written under {}", out.display());
}
