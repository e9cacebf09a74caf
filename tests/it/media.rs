//! Still-image media on real files: EXR (windows, timecode, rates, compressions,
//! multi-part, truncation, damage), DPX (byte orders, header variants, bit
//! depths, truncation) and JPEG (completeness). Every file is generated in a
//! temporary folder, by iom's own writers or by `oiiotool`/`ffmpeg` as independent
//! producers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use iom::media::dpx::{self, DpxSpec};
use iom::media::exr::{self, ExrCompression, ExrSample, ExrSpec, Fill};
use iom::media::{self, jpeg, pixels, MediaError, RgbImage, Window};
use iom::timecode::{FrameRate, Timecode};

fn tc(label: &str, rate: FrameRate) -> Timecode {
    Timecode::parse(label, rate, false).unwrap()
}

fn win(x_min: i32, y_min: i32, x_max: i32, y_max: i32) -> Window {
    Window {
        x_min,
        y_min,
        x_max,
        y_max,
    }
}

fn write_exr(dir: &Path, name: &str, spec: &ExrSpec) -> PathBuf {
    let path = dir.join(name);
    exr::write_frame(&path, spec).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    path
}

fn write_dpx(dir: &Path, name: &str, spec: &DpxSpec) -> PathBuf {
    let path = dir.join(name);
    dpx::write_frame(&path, spec).unwrap_or_else(|e| panic!("writing {name}: {e}"));
    path
}

/// Largest absolute difference between the decoded image and the spec's
/// expected pixels, over every pixel.
fn max_exr_error(img: &RgbImage, spec: &ExrSpec) -> f32 {
    let mut worst = 0f32;
    for y in 0..img.height {
        for x in 0..img.width {
            let want = spec.expected_pixel(x, y);
            let got = img.pixel(x, y);
            for c in 0..3 {
                worst = worst.max((want[c] - got[c]).abs());
            }
        }
    }
    worst
}

fn cut(src: &Path, dst: &Path, len: usize) {
    let bytes = std::fs::read(src).unwrap();
    std::fs::write(dst, &bytes[..len]).unwrap();
}

/// Where the offset table starts: the first entry points just past a table of
/// `chunks` entries.
fn offset_table_start(bytes: &[u8], chunks: u64) -> usize {
    (8..bytes.len() - 8)
        .find(|&p| {
            let v = u64::from_le_bytes(bytes[p..p + 8].try_into().unwrap());
            v == p as u64 + 8 * chunks
        })
        .expect("offset table not found")
}

fn assert_truncated(r: Result<(), MediaError>, path: &Path, needle: &str) {
    match r {
        Err(e @ MediaError::Truncated { .. }) => {
            let msg = e.to_string();
            let name = path.file_name().unwrap().to_string_lossy();
            assert!(msg.contains(&*name), "message must name the file: {msg}");
            assert!(
                msg.contains(needle),
                "message should mention {needle:?}: {msg}"
            );
        }
        other => panic!("{}: expected Truncated, got {other:?}", path.display()),
    }
}

// ---------------------------------------------------------------------------
// EXR
// ---------------------------------------------------------------------------

#[test]
fn exr_size_is_the_display_window_whatever_the_data_window() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        // (name, display, data, pixel aspect)
        ("same", win(0, 0, 63, 35), win(0, 0, 63, 35), 1.0),
        ("overscan", win(0, 0, 63, 35), win(-8, -4, 71, 39), 1.0),
        ("crop", win(0, 0, 63, 35), win(10, 5, 29, 14), 1.0),
        ("shifted", win(0, 0, 63, 35), win(40, 20, 90, 50), 1.0),
        (
            "negative",
            win(-40, -40, 39, 19),
            win(-50, -30, 10, 30),
            1.5,
        ),
        ("disjoint", win(0, 0, 31, 15), win(100, 100, 120, 110), 1.0),
    ];
    for (name, display, data, aspect) in cases {
        let spec = ExrSpec {
            display_window: display,
            data_window: data,
            pixel_aspect: aspect,
            fill: Fill::Pattern { seed: 7 },
            ..ExrSpec::new(1, 1)
        };
        let path = write_exr(dir.path(), &format!("{name}.1001.exr"), &spec);
        let info = exr::read_info(&path).unwrap();
        assert_eq!(
            (info.width, info.height),
            (display.width(), display.height()),
            "{name}"
        );
        assert_eq!(info.display_window, Some(display), "{name}");
        assert_eq!(info.data_window, Some(data), "{name}");
        assert_eq!(info.pixel_aspect, aspect, "{name}");
        assert_eq!(info.parts, 1);
        assert_eq!(
            info.channels,
            ["B", "G", "R"],
            "{name}: channels as stored (sorted)"
        );
        assert_eq!(info.bit_depth, Some(16));
        assert_eq!(info.compression.as_deref(), Some("ZIP"));
        exr::verify(&path).unwrap();

        let img = exr::read_pixels(&path).unwrap();
        assert_eq!(
            (img.width, img.height),
            (display.width(), display.height()),
            "{name}"
        );
        assert_eq!(img.pixel_aspect, aspect);
        let err = max_exr_error(&img, &spec);
        assert!(err < 2e-3, "{name}: max error {err}");
    }
    // The crop leaves black outside the data window, the pattern inside.
    let spec = ExrSpec {
        data_window: win(10, 5, 29, 14),
        ..ExrSpec::new(64, 36)
    };
    let img = exr::read_pixels(&write_exr(dir.path(), "crop2.exr", &spec)).unwrap();
    assert_eq!(img.pixel(0, 0), [0.0; 3]);
    assert_eq!(img.pixel(30, 5), [0.0; 3]);
    assert!(img.pixel(10, 5)[0] > 0.1);
}

#[test]
fn exr_timecode_and_rate_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (FrameRate::FPS_24, "01:00:00:00", "24/1"),
        (FrameRate::FPS_25, "10:20:30:24", "25/1"),
        (FrameRate::FPS_23_976, "00:59:59:23", "24000/1001"),
        (FrameRate::FPS_29_97, "00:01:00;02", "30000/1001"),
        (FrameRate::FPS_29_97, "23:59:59;29", "30000/1001"),
    ];
    for (i, (rate, label, rational)) in cases.into_iter().enumerate() {
        let spec = ExrSpec {
            timecode: Some(tc(label, rate)),
            fps: Some(rate),
            ..ExrSpec::new(32, 18)
        };
        let path = write_exr(dir.path(), &format!("tc{i}.exr"), &spec);
        let info = exr::read_info(&path).unwrap();
        assert_eq!(info.timecode.as_deref(), Some(label), "{rational}");
        assert_eq!(info.fps, Some(rate), "{rational}");
        assert_eq!(
            info.fps.unwrap().to_string().parse::<FrameRate>().unwrap(),
            rate
        );
    }
    // No attributes: nothing invented.
    let path = write_exr(dir.path(), "bare.exr", &ExrSpec::new(8, 8));
    let info = exr::read_info(&path).unwrap();
    assert_eq!((info.timecode, info.fps), (None, None));

    // Frames above 29 cannot be packed by the writer: a clear error, no file.
    let spec = ExrSpec {
        timecode: Some(tc("01:00:00:45", FrameRate::FPS_50)),
        ..ExrSpec::new(8, 8)
    };
    let path = dir.path().join("fifty.exr");
    let err = exr::write_frame(&path, &spec).unwrap_err();
    assert!(err.to_string().contains("frame 45"), "{err}");
    assert!(!path.exists());
}

#[test]
fn exr_compressions_decode_to_the_written_pattern() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (ExrCompression::None, ExrSample::Half, 1e-3),
        (ExrCompression::Rle, ExrSample::Half, 1e-3),
        (ExrCompression::Zip1, ExrSample::Half, 1e-3),
        (ExrCompression::Zip16, ExrSample::Half, 1e-3),
        (ExrCompression::Piz, ExrSample::Half, 1e-3),
        (ExrCompression::Pxr24, ExrSample::Half, 1e-3),
        (ExrCompression::B44, ExrSample::Half, 2e-2),
        (ExrCompression::B44a, ExrSample::Half, 2e-2),
        (ExrCompression::None, ExrSample::Float, 1e-6),
        (ExrCompression::Zip16, ExrSample::Float, 1e-6),
        (ExrCompression::Piz, ExrSample::Float, 1e-6),
        (ExrCompression::Pxr24, ExrSample::Float, 1e-4),
    ];
    for (compression, sample, tolerance) in cases {
        for alpha in [false, true] {
            let spec = ExrSpec {
                compression,
                sample,
                alpha,
                // Overscan so every compression also crosses block edges outside
                // the display window.
                display_window: win(0, 0, 99, 49),
                data_window: win(-3, -5, 102, 60),
                fill: Fill::Pattern { seed: 11 },
                ..ExrSpec::new(1, 1)
            };
            let name = format!("{}_{sample:?}_{alpha}.exr", compression.name());
            let path = write_exr(dir.path(), &name, &spec);
            let info = exr::read_info(&path).unwrap();
            assert_eq!(
                info.compression.as_deref(),
                Some(compression.name()),
                "{name}"
            );
            let bits = if sample == ExrSample::Half { 16 } else { 32 };
            assert_eq!(info.bit_depth, Some(bits), "{name}");
            let want: &[&str] = if alpha {
                &["A", "B", "G", "R"]
            } else {
                &["B", "G", "R"]
            };
            assert_eq!(info.channels, want, "{name}");
            exr::verify(&path).unwrap();
            let img = exr::read_pixels(&path).unwrap();
            let err = max_exr_error(&img, &spec);
            assert!(err <= tolerance, "{name}: max error {err} > {tolerance}");
            // The patch is where the seed says and has its value.
            let (px, py, _) = Fill::patch(11, 100, 50);
            let b = img.pixel(px as u32, py as u32)[2];
            assert!(
                (b - Fill::patch_value(11)).abs() <= tolerance.max(1e-3),
                "{name}: patch {b}"
            );
        }
    }
}

#[test]
fn exr_sequence_frames_each_show_their_own_patch() {
    // The writer reuses compressed blocks that do not depend on the seed; every
    // frame must still read back as its own seed's pattern.
    let dir = tempfile::tempdir().unwrap();
    for compression in [ExrCompression::Zip16, ExrCompression::None] {
        for seed in [1001, 1002, 1003, 1017, 1002] {
            let spec = ExrSpec {
                compression,
                alpha: true,
                display_window: win(0, 0, 127, 71),
                data_window: win(-2, -2, 129, 73),
                fill: Fill::Pattern { seed },
                ..ExrSpec::new(1, 1)
            };
            let name = format!("seq_{}.{seed}.exr", compression.name());
            let img = exr::read_pixels(&write_exr(dir.path(), &name, &spec)).unwrap();
            let err = max_exr_error(&img, &spec);
            assert!(err < 1e-3, "{name}: max error {err}");
            let (px, py, size) = Fill::patch(seed, 128, 72);
            assert_eq!(img.pixel(px as u32, py as u32)[2], Fill::patch_value(seed));
            assert_eq!(
                img.pixel((px + size - 1) as u32, (py + size - 1) as u32)[2],
                Fill::patch_value(seed)
            );
        }
    }
}

#[test]
fn exr_constant_colour_reads_back_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ExrSpec {
        fill: Fill::Constant([0.5, 0.25, 2.0]),
        compression: ExrCompression::Piz,
        ..ExrSpec::new(40, 20)
    };
    let img = exr::read_pixels(&write_exr(dir.path(), "grey.exr", &spec)).unwrap();
    assert!(img.data.chunks(3).all(|p| p == [0.5, 0.25, 2.0]));
}

#[test]
fn exr_two_parts() {
    let dir = tempfile::tempdir().unwrap();
    let left = ExrSpec {
        fill: Fill::Constant([0.25, 0.5, 0.75]),
        timecode: Some(tc("01:00:00:00", FrameRate::FPS_24)),
        fps: Some(FrameRate::FPS_24),
        ..ExrSpec::new(48, 24)
    };
    let right = ExrSpec {
        fill: Fill::Constant([1.0, 0.0, 0.0]),
        compression: ExrCompression::Piz,
        data_window: win(4, 4, 20, 20),
        ..ExrSpec::new(48, 24)
    };
    let path = dir.path().join("stereo.1001.exr");
    exr::write_multipart(&path, &[("left", &left), ("right", &right)]).unwrap();
    let info = exr::read_info(&path).unwrap();
    assert_eq!(info.parts, 2);
    assert_eq!((info.width, info.height), (48, 24));
    assert_eq!(
        info.channels,
        ["left.B", "left.G", "left.R", "right.B", "right.G", "right.R"]
    );
    assert_eq!(info.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(info.fps, Some(FrameRate::FPS_24));
    exr::verify(&path).unwrap();
    // Pixels come from the first part.
    let img = exr::read_pixels(&path).unwrap();
    assert_eq!(img.pixel(10, 10), [0.25, 0.5, 0.75]);

    // Cutting the last chunk of a multi-part file is found too.
    let len = std::fs::metadata(&path).unwrap().len() as usize;
    let short = dir.path().join("stereo_cut.exr");
    cut(&path, &short, len - 5);
    assert_truncated(exr::verify(&short), &short, "last chunk");

    // Duplicate part names are refused.
    let err = exr::write_multipart(&dir.path().join("dup.exr"), &[("a", &left), ("a", &right)]);
    assert!(matches!(err, Err(MediaError::Unsupported { .. })));
}

#[test]
fn exr_text_attributes_and_clip_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut attributes = BTreeMap::new();
    attributes.insert("owner".to_string(), "Studio Ω".to_string());
    attributes.insert("comments".to_string(), "day 3, 카메라 A".to_string());
    attributes.insert("capDate".to_string(), "2024:01:02 03:04:05".to_string());
    attributes.insert(
        "com.arri.camera.ClipName".to_string(),
        "A001C003_220101_R1AB".to_string(),
    );
    attributes.insert("reelName".to_string(), "A001R1AB".to_string());
    let spec = ExrSpec {
        attributes: attributes.clone(),
        ..ExrSpec::new(16, 8)
    };
    let path = write_exr(dir.path(), "shot_0010_plate.1001.exr", &spec);
    let info = exr::read_info(&path).unwrap();
    for (k, v) in &attributes {
        assert_eq!(info.attributes.get(k), Some(v), "{k}");
    }
    assert_eq!(info.clip_name.as_deref(), Some("A001C003_220101_R1AB"));

    // The file name wins over header values.
    let path = write_exr(dir.path(), "B_0012C004_230405_A1B2.1001.exr", &spec);
    assert_eq!(
        exr::read_info(&path).unwrap().clip_name.as_deref(),
        Some("B_0012C004_230405_A1B2")
    );

    // A reserved name cannot be written as a custom attribute.
    let mut bad = BTreeMap::new();
    bad.insert("dataWindow".to_string(), "x".to_string());
    let err = exr::write_frame(
        &dir.path().join("bad.exr"),
        &ExrSpec {
            attributes: bad,
            ..ExrSpec::new(4, 4)
        },
    );
    assert!(
        matches!(err, Err(MediaError::Unsupported { .. })),
        "{err:?}"
    );
}

#[test]
fn exr_truncation_is_found_where_it_happens() {
    let dir = tempfile::tempdir().unwrap();
    // Uncompressed: one chunk per scan line, 36 chunks.
    let spec = ExrSpec {
        compression: ExrCompression::None,
        ..ExrSpec::new(64, 36)
    };
    let full = write_exr(dir.path(), "full.exr", &spec);
    let bytes = std::fs::read(&full).unwrap();
    let table = offset_table_start(&bytes, 36);

    let in_header = dir.path().join("in header.exr");
    cut(&full, &in_header, table / 2);
    assert_truncated(exr::verify(&in_header), &in_header, "inside the header");
    assert!(matches!(
        exr::read_info(&in_header),
        Err(MediaError::Truncated { .. })
    ));

    let in_table = dir.path().join("in_table.exr");
    cut(&full, &in_table, table + 8 * 10 + 3);
    assert_truncated(exr::verify(&in_table), &in_table, "offset table is cut");

    let in_chunks = dir.path().join("in_chunks.exr");
    cut(&full, &in_chunks, bytes.len() / 2);
    assert_truncated(
        exr::verify(&in_chunks),
        &in_chunks,
        "offset table points past end of file",
    );
    // The header alone is fine, so the info still reads…
    assert_eq!(exr::read_info(&in_chunks).unwrap().width, 64);
    // …but pixels do not.
    assert!(matches!(
        exr::read_pixels(&in_chunks),
        Err(MediaError::Truncated { .. })
    ));

    let in_last = dir.path().join("in_last.exr");
    cut(&full, &in_last, bytes.len() - 7);
    assert_truncated(
        exr::verify(&in_last),
        &in_last,
        "the last chunk (chunk 35 at byte",
    );

    // An offset table the writer never filled in.
    let mut unfinished = bytes.clone();
    unfinished[table + 8 * 5..table + 8 * 6].fill(0);
    let path = dir.path().join("unfinished.exr");
    std::fs::write(&path, &unfinished).unwrap();
    assert_truncated(exr::verify(&path), &path, "chunk 5 is 0");

    // Every shorter length is caught by verify and by read_pixels, never a panic.
    for len in (0..bytes.len()).step_by(97).chain([bytes.len() - 1]) {
        let p = dir.path().join("short.exr");
        cut(&full, &p, len);
        let v = exr::verify(&p);
        assert!(
            matches!(
                v,
                Err(MediaError::Truncated { .. } | MediaError::Empty { .. })
            ),
            "length {len}: {v:?}"
        );
        assert!(exr::read_pixels(&p).is_err(), "length {len}");
    }
}

#[test]
fn exr_zero_bytes_garbage_and_damage_give_errors_not_panics() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("empty.1001.exr");
    std::fs::write(&empty, b"").unwrap();
    for r in [
        exr::verify(&empty).map(|_| ()),
        exr::read_info(&empty).map(|_| ()),
        exr::read_pixels(&empty).map(|_| ()),
    ] {
        match r {
            Err(e @ MediaError::Empty { .. }) => assert!(e.to_string().contains("empty.1001.exr")),
            other => panic!("expected Empty, got {other:?}"),
        }
    }

    let garbage = dir.path().join("garbage.exr");
    std::fs::write(
        &garbage,
        b"GIF89a this is not an EXR file at all, just some text",
    )
    .unwrap();
    match exr::read_info(&garbage) {
        Err(e @ MediaError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("garbage.exr") && msg.contains("47 49 46 38"),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }
    assert!(matches!(
        exr::verify(&garbage),
        Err(MediaError::Corrupt { .. })
    ));

    // A valid magic followed by nonsense.
    let nonsense = dir.path().join("nonsense.exr");
    let mut bytes = vec![0x76, 0x2f, 0x31, 0x01, 2, 0, 0, 0];
    bytes.extend((0..400u32).map(|i| (i * 7 % 251) as u8 | 1));
    std::fs::write(&nonsense, &bytes).unwrap();
    assert!(exr::verify(&nonsense).is_err());
    assert!(exr::read_info(&nonsense).is_err());

    // Damage every header byte and a spread of pixel bytes of a real file: each
    // call must return (Ok or Err), never panic or abort.
    let spec = ExrSpec {
        compression: ExrCompression::Piz,
        ..ExrSpec::new(24, 40)
    };
    let good = std::fs::read(write_exr(dir.path(), "good.exr", &spec)).unwrap();
    let table = offset_table_start(&good, 2);
    let positions = (4..table + 16).chain((table + 16..good.len()).step_by(13));
    let p = dir.path().join("damaged.exr");
    for pos in positions {
        for value in [0x00, 0xFF, 0x80] {
            let mut b = good.clone();
            b[pos] = value;
            std::fs::write(&p, &b).unwrap();
            let _ = exr::read_info(&p);
            let _ = exr::verify(&p);
            let _ = exr::read_pixels(&p);
        }
    }
}

#[test]
fn oiiotool_reads_our_exr_headers_the_same_way() {
    let dir = tempfile::tempdir().unwrap();
    let spec = ExrSpec {
        display_window: win(0, 0, 63, 35),
        data_window: win(-8, -4, 71, 39),
        pixel_aspect: 1.5,
        timecode: Some(tc("01:02:03:04", FrameRate::FPS_23_976)),
        fps: Some(FrameRate::FPS_23_976),
        ..ExrSpec::new(1, 1)
    };
    let path = write_exr(dir.path(), "cross.1001.exr", &spec);
    let out = Command::new("oiiotool")
        .arg("--info")
        .arg("-v")
        .arg(&path)
        .output()
        .expect("oiiotool must be installed for this cross-check (apt install openimageio-tools)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("smpte:TimeCode: 01:02:03:04"), "{text}");
    assert!(text.contains("framesPerSecond: 24000/1001"), "{text}");
    assert!(text.contains("PixelAspectRatio: 1.5"), "{text}");
    // oiiotool states the data window as size + origin and the display window
    // as "full/display size" + origin.
    assert!(text.contains("80 x   44"), "{text}");
    assert!(text.contains("full/display size: 64 x 36"), "{text}");
    assert!(text.contains("pixel data origin: x=-8, y=-4"), "{text}");

    // Pixels: OpenImageIO's decoder and ours agree on every displayed pixel of a
    // PIZ half file whose windows are offset against each other.
    let spec = ExrSpec {
        display_window: win(-4, -2, 19, 9),
        data_window: win(-6, -3, 15, 12),
        compression: ExrCompression::Piz,
        alpha: true,
        fill: Fill::Pattern { seed: 5 },
        ..ExrSpec::new(1, 1)
    };
    let path = write_exr(dir.path(), "dump.exr", &spec);
    let out = Command::new("oiiotool")
        .arg("--dumpdata")
        .arg(&path)
        .output()
        .expect("oiiotool");
    assert!(out.status.success());
    let ours = exr::read_pixels(&path).unwrap();
    let mut compared = 0;
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        // "    Pixel (x, y): r g b a"
        let Some(rest) = line.trim().strip_prefix("Pixel (") else {
            continue;
        };
        let (xy, values) = rest.split_once("):").unwrap();
        let (x, y) = xy.split_once(", ").unwrap();
        let (x, y): (i32, i32) = (x.parse().unwrap(), y.parse().unwrap());
        let v: Vec<f32> = values
            .split_whitespace()
            .map(|s| s.parse().unwrap())
            .collect();
        let (dx, dy) = (x + 4, y + 2);
        if (0..24).contains(&dx) && (0..12).contains(&dy) {
            assert_eq!(
                ours.pixel(dx as u32, dy as u32),
                [v[0], v[1], v[2]],
                "pixel ({x}, {y})"
            );
            compared += 1;
        }
    }
    // The data window covers display columns −4..15 and rows −2..9.
    assert_eq!(compared, 20 * 12);
    assert_eq!(
        ours.pixel(23, 0),
        [0.0; 3],
        "outside the data window is black"
    );

    // And the other way: a file written by OpenImageIO reads the same in iom.
    let theirs = dir.path().join("theirs.exr");
    let status = Command::new("oiiotool")
        .args([
            "--create",
            "64x36",
            "3",
            "--attrib:type=timecode",
            "smpte:TimeCode",
            "01:00:00:00",
        ])
        .args(["--attrib:type=rational", "framesPerSecond", "25/1", "-o"])
        .arg(&theirs)
        .status()
        .expect("oiiotool must be installed");
    assert!(status.success());
    let info = exr::read_info(&theirs).unwrap();
    assert_eq!((info.width, info.height), (64, 36));
    assert_eq!(info.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(info.fps, Some(FrameRate::FPS_25));
    assert_eq!(info.bit_depth, Some(32));
    exr::verify(&theirs).unwrap();
    assert!(exr::read_pixels(&theirs)
        .unwrap()
        .data
        .iter()
        .all(|&v| v == 0.0));
}

// ---------------------------------------------------------------------------
// DPX
// ---------------------------------------------------------------------------

fn max_dpx_error(img: &RgbImage, spec: &DpxSpec) -> f32 {
    let mut worst = 0f32;
    for y in 0..img.height {
        for x in 0..img.width {
            let want = spec.expected_pixel(x, y);
            let got = img.pixel(x, y);
            for c in 0..3 {
                worst = worst.max((want[c] - got[c]).abs());
            }
        }
    }
    worst
}

#[test]
fn dpx_both_byte_orders_with_timecode_and_rate() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (true, 10, "01:02:03:04", FrameRate::FPS_24, 24.0f32),
        (false, 10, "10:00:00:00", FrameRate::FPS_25, 25.0),
        (true, 16, "00:59:59:23", FrameRate::FPS_23_976, 23.976),
        (false, 16, "00:01:00;02", FrameRate::FPS_29_97, 29.97),
        (true, 8, "12:34:56:12", FrameRate::FPS_24, 24.0),
        (false, 12, "23:59:59:24", FrameRate::FPS_25, 25.0),
    ];
    for (big_endian, bit_depth, label, rate, fps) in cases {
        let spec = DpxSpec {
            big_endian,
            bit_depth,
            timecode: Some(tc(label, rate)),
            tv_fps: Some(fps),
            film_fps: Some(fps),
            original_size: Some((2048, 1152)),
            fill: Fill::Pattern { seed: 3 },
            ..DpxSpec::new(50, 20)
        };
        let name = format!("plate_{big_endian}_{bit_depth}.1001.dpx");
        let path = write_dpx(dir.path(), &name, &spec);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(&bytes[..4], if big_endian { b"SDPX" } else { b"XPDS" });

        let info = dpx::read_info(&path).unwrap();
        assert_eq!(
            (info.width, info.height),
            (50, 20),
            "{name}: size from 772/776"
        );
        assert_eq!(info.timecode.as_deref(), Some(label), "{name}");
        assert_eq!(info.fps, Some(rate), "{name}");
        assert_eq!(info.bit_depth, Some(u32::from(bit_depth)));
        assert_eq!(info.channels, ["RGB"]);
        let (header, _) = dpx::read_header(&path).unwrap();
        assert_eq!(header.original_size, Some((2048, 1152)));
        assert_eq!(header.big_endian, big_endian);
        dpx::verify(&path).unwrap();

        let img = dpx::read_pixels(&path).unwrap();
        assert_eq!((img.width, img.height), (50, 20));
        let err = max_dpx_error(&img, &spec);
        assert!(err < 1e-6, "{name}: max error {err}");
    }
}

#[test]
fn dpx_generic_header_only_like_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let spec = DpxSpec {
        generic_only: true,
        bit_depth: 16,
        timecode: Some(tc("01:00:00:00", FrameRate::FPS_24)),
        tv_fps: Some(24.0),
        ..DpxSpec::new(37, 11)
    };
    let path = write_dpx(dir.path(), "generic.0001.dpx", &spec);
    let bytes = std::fs::read(&path).unwrap();
    assert_eq!(bytes.len(), 1664 + ((37 * 6usize).div_ceil(4) * 4) * 11);
    let info = dpx::read_info(&path).unwrap();
    assert_eq!(
        (info.width, info.height),
        (37, 11),
        "size from 772/776, original size is 0"
    );
    assert_eq!(
        info.timecode, None,
        "pixels after byte 1664 are not a TV header"
    );
    assert_eq!(info.fps, None);
    let (header, _) = dpx::read_header(&path).unwrap();
    assert_eq!(header.original_size, Some((0, 0)));
    dpx::verify(&path).unwrap();
    let img = dpx::read_pixels(&path).unwrap();
    assert!(max_dpx_error(&img, &spec) < 1e-6);
}

#[test]
fn dpx_rate_falls_back_to_the_film_header() {
    let dir = tempfile::tempdir().unwrap();
    for (name, tv) in [
        ("nan", Some(f32::NAN)),
        ("undefined", None),
        ("zero", Some(0.0)),
        ("negative", Some(-24.0)),
    ] {
        let spec = DpxSpec {
            tv_fps: tv,
            film_fps: Some(23.976),
            ..DpxSpec::new(8, 4)
        };
        let path = write_dpx(dir.path(), &format!("{name}.dpx"), &spec);
        assert_eq!(
            dpx::read_info(&path).unwrap().fps,
            Some(FrameRate::FPS_23_976),
            "{name}"
        );
    }
    let spec = DpxSpec {
        tv_fps: Some(f32::NAN),
        film_fps: None,
        ..DpxSpec::new(8, 4)
    };
    let path = write_dpx(dir.path(), "none.dpx", &spec);
    let info = dpx::read_info(&path).unwrap();
    assert_eq!((info.fps, info.timecode), (None, None));
}

#[test]
fn dpx_empty_bad_magic_and_truncated() {
    let dir = tempfile::tempdir().unwrap();
    let empty = dir.path().join("zero.1001.dpx");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(dpx::verify(&empty), Err(MediaError::Empty { .. })));
    assert!(matches!(
        dpx::read_info(&empty),
        Err(MediaError::Empty { .. })
    ));
    assert!(matches!(
        dpx::read_pixels(&empty),
        Err(MediaError::Empty { .. })
    ));

    let riff = dir.path().join("riff.dpx");
    let mut bytes = b"RIFF".to_vec();
    bytes.resize(4096, 0);
    std::fs::write(&riff, &bytes).unwrap();
    match dpx::read_info(&riff) {
        Err(e @ MediaError::Corrupt { .. }) => {
            let msg = e.to_string();
            assert!(
                msg.contains("riff.dpx") && msg.contains("\"RIFF\""),
                "{msg}"
            );
        }
        other => panic!("expected Corrupt, got {other:?}"),
    }

    let spec = DpxSpec {
        timecode: Some(tc("01:00:00:00", FrameRate::FPS_24)),
        ..DpxSpec::new(64, 36)
    };
    let full = write_dpx(dir.path(), "full.dpx", &spec);
    let len = std::fs::read(&full).unwrap().len();
    assert_eq!(len, 2048 + 64 * 36 * 4);

    let short_header = dir.path().join("short header.dpx");
    cut(&full, &short_header, 700);
    assert_truncated(dpx::verify(&short_header), &short_header, "image header");

    let short_pixels = dir.path().join("short_pixels.dpx");
    cut(&full, &short_pixels, len - 100);
    assert_truncated(
        dpx::verify(&short_pixels),
        &short_pixels,
        "header says the file is",
    );
    assert!(matches!(
        dpx::read_pixels(&short_pixels),
        Err(MediaError::Truncated { .. })
    ));
    // The header is whole, so the info still reads.
    assert_eq!(
        dpx::read_info(&short_pixels).unwrap().timecode.as_deref(),
        Some("01:00:00:00")
    );

    // Without a file-size field, the pixel size alone finds the cut.
    let mut no_size = std::fs::read(&full).unwrap();
    no_size[16..20].fill(0xFF);
    no_size.truncate(len - 4);
    let p = dir.path().join("no_size.dpx");
    std::fs::write(&p, &no_size).unwrap();
    assert_truncated(dpx::verify(&p), &p, "pixels need bytes");

    // Every shorter length is an error.
    let p = dir.path().join("cut.dpx");
    for l in (0..len).step_by(211) {
        cut(&full, &p, l);
        assert!(dpx::verify(&p).is_err(), "length {l}");
        assert!(dpx::read_pixels(&p).is_err(), "length {l}");
    }

    // Hostile size fields: an error, no giant allocation.
    let mut huge = std::fs::read(&full).unwrap();
    huge[772..776].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
    huge[776..780].copy_from_slice(&0x00FF_FFFFu32.to_be_bytes());
    huge[16..20].fill(0xFF);
    let p = dir.path().join("huge.dpx");
    std::fs::write(&p, &huge).unwrap();
    // Refused by the header parser's size bound (dpx::MAX_DIMENSION per side).
    assert!(matches!(dpx::verify(&p), Err(MediaError::Corrupt { .. })));
    assert!(dpx::read_pixels(&p).is_err());
}

/// Decodes a frame with the ffmpeg CLI to 16-bit RGB samples (an independent
/// decoder to compare with).
fn ffmpeg_rgb48(path: &Path) -> Vec<u16> {
    let out = Command::new("ffmpeg")
        .args(["-v", "error", "-i"])
        .arg(path)
        .args(["-f", "rawvideo", "-pix_fmt", "rgb48le", "-"])
        .output()
        .expect("ffmpeg must be installed for this cross-check");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
        .chunks_exact(2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]))
        .collect()
}

#[test]
fn oiiotool_and_ffmpeg_dpx_files_read_right() {
    let dir = tempfile::tempdir().unwrap();
    // OpenImageIO: little-endian, full header, 10-bit filled, TV rate undefined.
    let theirs = dir.path().join("oiio.1001.dpx");
    let status = Command::new("oiiotool")
        .args([
            "--pattern",
            "fill:top=0.1,0.2,0.3:bottom=0.9,0.8,0.7",
            "64x36",
            "3",
        ])
        .args([
            "--attrib",
            "dpx:TimeCode",
            "01:00:00:00",
            "-d",
            "uint10",
            "-o",
        ])
        .arg(&theirs)
        .status()
        .expect("oiiotool must be installed");
    assert!(status.success());
    assert_eq!(&std::fs::read(&theirs).unwrap()[..4], b"XPDS");
    let info = dpx::read_info(&theirs).unwrap();
    assert_eq!((info.width, info.height), (64, 36));
    assert_eq!(info.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(info.fps, None, "film and TV rates are both undefined");
    assert_eq!(info.bit_depth, Some(10));
    dpx::verify(&theirs).unwrap();
    let ours = dpx::read_pixels(&theirs).unwrap();
    let reference = ffmpeg_rgb48(&theirs);
    assert_eq!(reference.len(), ours.data.len());
    for (i, (&r, &o)) in reference.iter().zip(&ours.data).enumerate() {
        // ffmpeg widens 10-bit codes by bit replication; the top 10 bits are the code.
        assert_eq!(u32::from(r >> 6), (o * 1023.0).round() as u32, "sample {i}");
    }

    // ffmpeg: big-endian, 1664-byte generic header only, 16-bit.
    let pattern = dir.path().join("ff.%04d.dpx");
    let status = Command::new("ffmpeg")
        .args([
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=s=320x180",
            "-frames:v",
            "1",
        ])
        .args(["-pix_fmt", "rgb48be"])
        .arg(&pattern)
        .status()
        .expect("ffmpeg must be installed");
    assert!(status.success());
    let ff = dir.path().join("ff.0001.dpx");
    assert_eq!(&std::fs::read(&ff).unwrap()[..4], b"SDPX");
    let info = dpx::read_info(&ff).unwrap();
    assert_eq!((info.width, info.height), (320, 180));
    assert_eq!((info.timecode, info.fps), (None, None));
    dpx::verify(&ff).unwrap();
    let ours = dpx::read_pixels(&ff).unwrap();
    let reference = ffmpeg_rgb48(&ff);
    assert_eq!(reference.len(), ours.data.len());
    for (i, (&r, &o)) in reference.iter().zip(&ours.data).enumerate() {
        assert_eq!(u32::from(r), (o * 65535.0).round() as u32, "sample {i}");
    }
}

// ---------------------------------------------------------------------------
// JPEG
// ---------------------------------------------------------------------------

fn write_jpeg(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    let img = image::RgbImage::from_pixel(w, h, image::Rgb(rgb));
    let mut out = std::fs::File::create(path).unwrap();
    image::codecs::jpeg::JpegEncoder::new_with_quality(&mut out, 95)
        .encode_image(&img)
        .unwrap();
}

#[test]
fn jpeg_size_pixels_and_truncation() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ref.0001.jpg");
    write_jpeg(&path, 96, 54, [200, 100, 50]);
    let info = jpeg::read_info(&path).unwrap();
    assert_eq!((info.width, info.height), (96, 54));
    assert_eq!(info.channels, ["RGB"]);
    jpeg::verify(&path).unwrap();
    let img = jpeg::read_pixels(&path).unwrap();
    let p = img.pixel(40, 20);
    for (got, want) in p.iter().zip([200.0 / 255.0, 100.0 / 255.0, 50.0 / 255.0]) {
        assert!((got - want).abs() < 0.02, "{p:?}");
    }

    // Zero padding after EOI is accepted.
    let mut padded = std::fs::read(&path).unwrap();
    let len = padded.len();
    padded.extend([0u8; 300]);
    let p = dir.path().join("padded.jpg");
    std::fs::write(&p, &padded).unwrap();
    jpeg::verify(&p).unwrap();

    // Cut: no EOI.
    let short = dir.path().join("short.jpg");
    cut(&path, &short, len - 40);
    assert_truncated(jpeg::verify(&short), &short, "FF D9");
    // The decoder may fill in the missing part; it must just not panic.
    let _ = jpeg::read_pixels(&short);

    let empty = dir.path().join("empty.jpg");
    std::fs::write(&empty, b"").unwrap();
    assert!(matches!(
        jpeg::verify(&empty),
        Err(MediaError::Empty { .. })
    ));
    assert!(matches!(
        jpeg::read_info(&empty),
        Err(MediaError::Empty { .. })
    ));

    let png = dir.path().join("not_a.jpg");
    std::fs::write(&png, b"\x89PNG\r\n\x1a\nrest").unwrap();
    assert!(matches!(
        jpeg::verify(&png),
        Err(MediaError::Corrupt { .. })
    ));
}

// ---------------------------------------------------------------------------
// Dispatch and awkward paths
// ---------------------------------------------------------------------------

#[test]
fn awkward_paths_and_dispatch_by_extension() {
    let dir = tempfile::tempdir().unwrap();
    let folder = dir.path().join("plate 'A' \"B\" 촬영본");
    std::fs::create_dir(&folder).unwrap();

    let exr_spec = ExrSpec {
        timecode: Some(tc("01:00:00:00", FrameRate::FPS_24)),
        fps: Some(FrameRate::FPS_24),
        ..ExrSpec::new(32, 16)
    };
    let e = write_exr(&folder, "샷 0010 'x' \"y\".1001.exr", &exr_spec);
    let d = write_dpx(&folder, "샷 0010 'x' \"y\".1001.DPX", &DpxSpec::new(32, 16));
    let j = folder.join("샷 0010 'x' \"y\".1001.jpeg");
    write_jpeg(&j, 32, 16, [10, 20, 30]);

    for path in [&e, &d, &j] {
        let info =
            media::read_frame_info(path).unwrap_or_else(|err| panic!("{}: {err}", path.display()));
        assert_eq!((info.width, info.height), (32, 16), "{}", path.display());
        media::verify_frame(path).unwrap();
        let img = pixels::decode(path).unwrap();
        assert_eq!((img.width, img.height), (32, 16));
    }
    assert_eq!(
        media::read_frame_info(&e).unwrap().timecode.as_deref(),
        Some("01:00:00:00")
    );

    // Errors name the awkward path as it is.
    let cut_path = folder.join("샷 cut.exr");
    cut(&e, &cut_path, 50);
    let err = media::verify_frame(&cut_path).unwrap_err();
    assert!(err.to_string().contains("샷 cut.exr"), "{err}");
    assert_eq!(err.path(), cut_path.as_path());
}

#[test]
fn exr_half_planes_match_the_float_decode() {
    // The review step's table path reads half bits straight into planes; they
    // must be the very samples the float decode gives, windows and all.
    let dir = tempfile::tempdir().unwrap();
    let layouts = [
        (win(0, 0, 99, 49), win(0, 0, 99, 49)),
        (win(0, 0, 99, 49), win(10, 5, 59, 30)),
        (win(0, 0, 63, 35), win(-3, -2, 70, 40)),
    ];
    for compression in [
        ExrCompression::Zip16,
        ExrCompression::Piz,
        ExrCompression::None,
        ExrCompression::B44,
    ] {
        for (k, (display, data)) in layouts.into_iter().enumerate() {
            let spec = ExrSpec {
                compression,
                alpha: k == 1,
                display_window: display,
                data_window: data,
                fill: Fill::Pattern { seed: 7 + k as u32 },
                ..ExrSpec::new(1, 1)
            };
            let name = format!("half_{}_{k}.exr", compression.name());
            let path = write_exr(dir.path(), &name, &spec);
            let float = exr::read_pixels(&path).unwrap();
            let half = exr::read_half_planes(&path, &|_| {})
                .unwrap()
                .unwrap_or_else(|| panic!("{name}: half channels"));
            assert_eq!((half.width, half.height), (float.width, float.height));
            for (i, px) in float.data.chunks(3).enumerate() {
                for (c, &want) in px.iter().enumerate() {
                    let v = half::f16::from_bits(half.planes[c][i]).to_f32();
                    assert_eq!(v, want, "{name}: sample {i} channel {c}");
                }
            }
        }
    }
    // The conversion runs on every block and on the black outside the data
    // window; float channels are left to the float decode.
    let spec = ExrSpec {
        data_window: win(10, 5, 29, 14),
        ..ExrSpec::new(64, 36)
    };
    let path = write_exr(dir.path(), "crop_convert.exr", &spec);
    let bump = |planes: [&mut [u16]; 3]| {
        for p in planes {
            p.iter_mut().for_each(|v| *v = v.wrapping_add(1));
        }
    };
    let plain = exr::read_half_planes(&path, &|_| {}).unwrap().unwrap();
    let bumped = exr::read_half_planes(&path, &bump).unwrap().unwrap();
    assert_eq!(bumped.pixel(0, 0), [1; 3]);
    let inside = plain.pixel(12, 6).map(|v| v + 1);
    assert_eq!(bumped.pixel(12, 6), inside);
    let float = ExrSpec {
        sample: ExrSample::Float,
        ..ExrSpec::new(16, 8)
    };
    let float_path = write_exr(dir.path(), "float.exr", &float);
    assert!(exr::read_half_planes(&float_path, &|_| {})
        .unwrap()
        .is_none());
    // A cut file is reported like the float decode reports it.
    let bytes = std::fs::read(&path).unwrap();
    let cut = dir.path().join("cut.exr");
    std::fs::write(&cut, &bytes[..bytes.len() - 64]).unwrap();
    assert!(matches!(
        exr::read_half_planes(&cut, &|_| {}),
        Err(MediaError::Truncated { .. })
    ));
}
