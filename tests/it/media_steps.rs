//! The farm media steps on real files: JPEG proxies and review movies made from
//! generated EXR and DPX plates, decoded back with FFmpeg (frame count, fps, size,
//! codec and profile, timecode, colour tags), known colours through the colour
//! table, gaps, corrupt input, bad settings, re-runs.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use iom::colour::Pipeline;
use iom::config::Settings;
use iom::error::{Classify, ErrorClass};
use iom::media::dpx;
use iom::media::exr::{self, ExrSpec, Fill};
use iom::media::movie::{self, MovieSpec};
use iom::sample::{self, PlateFormat, PlateSpec};
use iom::steps::{self, StepContext, StepError, StepOutput};
use iom::task::{graph_id, task_id, PlateOutput, Step, StepKind, TaskMessage, SCHEMA_VERSION};
use iom::timecode::{FrameRate, Timecode};
use iom::tracker::LocalTracker;

struct Env {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    settings: Settings,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("show");
    let mut settings = Settings::defaults().unwrap();
    settings.project.root = root.clone();
    settings.media.jobs = 2;
    Env {
        _tmp: tmp,
        root,
        settings,
    }
}

impl Env {
    fn ctx(&self) -> StepContext {
        StepContext {
            settings: Arc::new(self.settings.clone()),
            worker: "test-worker".into(),
            cancel: Arc::new(AtomicBool::new(false)),
            tracker: Arc::new(LocalTracker::new(self.root.join(".iom/tracker"))),
        }
    }

    fn output(&self) -> PlateOutput {
        let plate = self.root.join("seq/A/A_0010/plate");
        PlateOutput {
            frames_dir: plate.join("org/v001"),
            plate_name: "A_0010_org_v001".into(),
            ext: "exr".into(),
            first_frame: 1001,
            pad: 4,
            plate_dir: plate.clone(),
            jpg_dir: plate.join("org/v001_jpg"),
            jpg_2k_dir: plate.join("org/v001_jpg_2k"),
        }
    }

    /// A published plate written straight into the publish layout.
    fn publish(&self, tweak: impl FnOnce(&mut PlateSpec)) -> PlateSpec {
        let o = self.output();
        let mut spec = PlateSpec::exr("v001", "A_0010_org_v001.", 64, 36, 6);
        tweak(&mut spec);
        sample::write_plate(o.frames_dir.parent().unwrap(), &spec).unwrap();
        spec
    }

    fn run(&self, kind: StepKind, attempt: u32) -> Result<StepOutput, StepError> {
        self.run_with(kind, attempt, "linear", self.output())
    }

    fn run_with(
        &self,
        kind: StepKind,
        attempt: u32,
        colorspace: &str,
        output: PlateOutput,
    ) -> Result<StepOutput, StepError> {
        let gid = graph_id("demo", "A_0010", "plate.", "org", 1);
        let step = match kind {
            StepKind::Proxy => Step::Proxy {
                output,
                colorspace: colorspace.into(),
            },
            _ => Step::Review {
                output,
                colorspace: colorspace.into(),
            },
        };
        let msg = TaskMessage {
            schema: SCHEMA_VERSION,
            graph_id: gid.clone(),
            task_id: task_id(&gid, kind, ""),
            attempt,
            retries_from: 1,
            work_dir: self.root.join(".iom/publishes/g"),
            step,
        };
        steps::run(&msg, &self.ctx())
    }
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(d) => d
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => vec![],
    };
    v.sort();
    v
}

fn xxh3_of(path: &Path) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(&std::fs::read(path).unwrap())
    )
}

fn jpeg(path: &Path) -> image::RgbImage {
    image::open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .to_rgb8()
}

fn assert_permanent(r: Result<StepOutput, StepError>, needles: &[&str]) -> String {
    let e = r.expect_err("the step should fail");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{msg:?} lacks {n:?}");
    }
    msg
}

/// Writes constant-colour EXR frames 1001.. into the publish layout.
fn publish_constant_exr(e: &Env, frames: i64, rgb: [f32; 3], w: u32, h: u32) {
    let o = e.output();
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    for n in 0..frames {
        let spec = ExrSpec {
            fill: Fill::Constant(rgb),
            fps: Some(FrameRate::FPS_24),
            timecode: Some(
                Timecode::parse("01:00:00:00", FrameRate::FPS_24, false)
                    .unwrap()
                    .offset(n),
            ),
            ..ExrSpec::new(w, h)
        };
        exr::write_frame(&o.frame_path(1001 + n), &spec).unwrap();
    }
}

fn expected_code(e: &Env, colorspace: &str, display: &str, rgb: [f32; 3]) -> [f32; 3] {
    let mut colour = e.settings.colour.clone();
    colour.display = display.into();
    Pipeline::from_settings(&colour, Some(colorspace), None)
        .unwrap()
        .apply(rgb)
        .map(|v| v * 255.0)
}

fn centre(img: &image::RgbImage) -> [f32; 3] {
    let p = img.get_pixel(img.width() / 2, img.height() / 2);
    [p[0], p[1], p[2]].map(f32::from)
}

fn close(got: [f32; 3], want: [f32; 3], tol: f32, what: &str) {
    for c in 0..3 {
        assert!(
            (got[c] - want[c]).abs() <= tol,
            "{what}: channel {c}: got {got:?}, want {want:?} (tolerance {tol} code values)"
        );
    }
}

// ---------------------------------------------------------------------------
// proxy
// ---------------------------------------------------------------------------

#[test]
fn proxies_full_and_small_sets_rerun_and_resume() {
    let mut e = env();
    // Any plate wider than small_width gets the second set; 32 keeps the test small.
    e.settings.media.proxy.small_width = 32;
    e.publish(|_| {});
    let o = e.output();
    let out = e.run(StepKind::Proxy, 1).unwrap();
    assert_eq!(out.outputs.len(), 12, "6 full + 6 small");
    assert_eq!(out.summary["rendered"], 6);
    for n in 1001..=1006 {
        let full = o.jpg_dir.join(format!("A_0010_org_v001.{n}.jpg"));
        let small = o.jpg_2k_dir.join(format!("A_0010_org_v001.{n}.jpg"));
        assert_eq!(jpeg(&full).dimensions(), (64, 36));
        assert_eq!(jpeg(&small).dimensions(), (32, 18));
        let rec = out.outputs.iter().find(|r| r.path == full).unwrap();
        assert_eq!(rec.xxh3, xxh3_of(&full));
    }
    assert!(names_in(&o.jpg_dir).iter().all(|n| !n.starts_with('.')));

    // A re-run skips everything and reports the same records.
    let again = e.run(StepKind::Proxy, 2).unwrap();
    assert_eq!(again.summary["rendered"], 0);
    assert_eq!(again.summary["skipped"], 6);
    assert_eq!(again.outputs, out.outputs);

    // After a "crash": one proxy gone, one cut short, a stale temporary file.
    let gone = o.jpg_dir.join("A_0010_org_v001.1002.jpg");
    let cut = o.jpg_2k_dir.join("A_0010_org_v001.1005.jpg");
    std::fs::remove_file(&gone).unwrap();
    let bytes = std::fs::read(&cut).unwrap();
    std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
    let gid = graph_id("demo", "A_0010", "plate.", "org", 1);
    let stale = o.jpg_dir.join(format!(
        ".A_0010_org_v001.1003.jpg.iom-tmp-{}-1-0123456789abcdef",
        task_id(&gid, StepKind::Proxy, "")
    ));
    std::fs::write(&stale, b"half").unwrap();
    let resumed = e.run(StepKind::Proxy, 3).unwrap();
    assert_eq!(resumed.summary["rendered"], 2, "{}", resumed.summary);
    assert_eq!(resumed.summary["stale_temps_removed"], 1);
    assert!(!stale.exists());
    // Deterministic: the re-rendered files are byte for byte the first ones.
    assert_eq!(resumed.outputs, out.outputs);
}

#[test]
fn proxy_wider_than_2k_gets_a_2048_set() {
    let e = env();
    e.publish(|s| {
        s.width = 2050;
        s.height = 20;
        s.count = 1;
    });
    let o = e.output();
    let out = e.run(StepKind::Proxy, 1).unwrap();
    assert_eq!(out.outputs.len(), 2);
    let small = jpeg(&o.jpg_2k_dir.join("A_0010_org_v001.1001.jpg"));
    assert_eq!(small.width(), 2048);
    assert_eq!(
        jpeg(&o.jpg_dir.join("A_0010_org_v001.1001.jpg")).width(),
        2050
    );
}

#[test]
fn proxy_colours_follow_the_colour_table() {
    // Scene-linear 18 % grey, "linear" → sRGB: 117.6 (IEC 61966-2-1).
    let e = env();
    publish_constant_exr(&e, 2, [0.18, 0.18, 0.18], 32, 16);
    e.run(StepKind::Proxy, 1).unwrap();
    let o = e.output();
    let got = centre(&jpeg(&o.jpg_dir.join("A_0010_org_v001.1001.jpg")));
    close(got, [117.6; 3], 1.5, "linear 0.18 → sRGB");

    // ACEScg colour through the AP1 → Rec.709 matrix.
    let e = env();
    let c = [0.30, 0.12, 0.05];
    publish_constant_exr(&e, 1, c, 32, 16);
    e.run_with(StepKind::Proxy, 1, "ACES - ACEScg", e.output())
        .unwrap();
    let got = centre(&jpeg(&e.output().jpg_dir.join("A_0010_org_v001.1001.jpg")));
    let want = expected_code(&e, "ACES - ACEScg", "srgb", c);
    close(got, want, 2.0, "ACEScg → sRGB");
    // Not the identity: the matrix moved the values.
    assert!((want[0] - 255.0 * iom::colour::srgb_encode(0.30) as f32).abs() > 3.0);

    // DPX Cineon log code 0.5 (10-bit 512) through the Cineon curve, 4:4:4.
    let mut e = env();
    e.settings.media.proxy.subsampling = "4:4:4".into();
    let o = e.output();
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    let spec = dpx::DpxSpec {
        fill: Fill::Constant([0.5, 0.6, 0.4]),
        ..dpx::DpxSpec::new(32, 16)
    };
    let mut dpx_out = o.clone();
    dpx_out.ext = "dpx".into();
    dpx::write_frame(&dpx_out.frame_path(1001), &spec).unwrap();
    e.run_with(StepKind::Proxy, 1, "Cineon", dpx_out.clone())
        .unwrap();
    let got = centre(&jpeg(&o.jpg_dir.join("A_0010_org_v001.1001.jpg")));
    let want = expected_code(&e, "Cineon", "srgb", spec.expected_pixel(0, 0));
    close(got, want, 1.5, "Cineon DPX → sRGB");
}

#[test]
fn gap_policies_fail_black_previous() {
    let mut e = env();
    e.publish(|s| s.missing = vec![1003]);
    e.settings.media.gap_policy = "fail".into();
    assert_permanent(e.run(StepKind::Proxy, 1), &["1003", "gap policy"]);
    assert!(names_in(&e.output().jpg_dir).is_empty());

    e.settings.media.gap_policy = "black".into();
    e.run(StepKind::Proxy, 1).unwrap();
    let o = e.output();
    let black = jpeg(&o.jpg_dir.join("A_0010_org_v001.1003.jpg"));
    assert!(black.pixels().all(|p| p[0] < 4 && p[1] < 4 && p[2] < 4));

    // previous: the gap repeats frame 1002's proxy byte for byte; the review has 6 frames.
    let mut e = env();
    e.publish(|s| s.missing = vec![1003]);
    e.settings.media.gap_policy = "previous".into();
    e.settings.media.review.codec = String::new();
    e.run(StepKind::Proxy, 1).unwrap();
    let o = e.output();
    assert_eq!(
        std::fs::read(o.jpg_dir.join("A_0010_org_v001.1003.jpg")).unwrap(),
        std::fs::read(o.jpg_dir.join("A_0010_org_v001.1002.jpg")).unwrap()
    );
    e.run(StepKind::Review, 1).unwrap();
    let info = movie::probe(&o.plate_dir.join("A_0010_org_v001.mp4")).unwrap();
    assert_eq!(info.frame_count, 6);
}

#[test]
fn corrupt_frame_mid_sequence_fails_with_nothing_written() {
    for how in ["garbage", "truncated"] {
        let e = env();
        e.publish(|_| {});
        let o = e.output();
        let bad = o.frame_path(1004);
        let bytes = std::fs::read(&bad).unwrap();
        match how {
            "garbage" => std::fs::write(&bad, vec![0x5a; bytes.len()]).unwrap(),
            _ => std::fs::write(&bad, &bytes[..bytes.len() / 2]).unwrap(),
        }
        assert_permanent(e.run(StepKind::Proxy, 1), &["A_0010_org_v001.1004.exr"]);
        assert!(
            names_in(&o.jpg_dir).is_empty(),
            "{how}: {:?}",
            names_in(&o.jpg_dir)
        );
        assert!(names_in(&o.jpg_2k_dir).is_empty());
        assert_permanent(e.run(StepKind::Review, 1), &["A_0010_org_v001.1004.exr"]);
        let left: Vec<String> = names_in(&o.plate_dir)
            .into_iter()
            .filter(|n| n != "org" && n != "montage")
            .collect();
        assert!(left.is_empty(), "{how}: {left:?}");
        // Montage frames made before the bad frame are not left either.
        let montage = names_in(&o.plate_dir.join("montage/org_v001_jpg"));
        assert!(montage.is_empty(), "{how}: {montage:?}");
    }
}

#[test]
fn bad_media_settings_fail_the_task_clearly() {
    let mut e = env();
    e.publish(|_| {});
    e.settings.media.proxy.subsampling = "4:1:1".into();
    assert_permanent(
        e.run(StepKind::Proxy, 1),
        &["media.proxy.subsampling", "4:1:1"],
    );
    let mut e = env();
    e.publish(|_| {});
    e.settings.media.gap_policy = "sometimes".into();
    assert_permanent(e.run(StepKind::Proxy, 1), &["media.gap_policy"]);
    // Nothing published yet: a clear error, not a panic.
    let e = env();
    assert_permanent(e.run(StepKind::Proxy, 1), &["copy step"]);
    assert_permanent(e.run(StepKind::Review, 1), &["copy step"]);
}

// ---------------------------------------------------------------------------
// review
// ---------------------------------------------------------------------------

#[test]
fn review_movies_carry_fps_timecode_tags_and_profile() {
    let e = env();
    e.publish(|s| {
        s.fps = Some(FrameRate::FPS_25);
        s.timecode = Some("10:00:00:00");
        s.count = 12;
    });
    let o = e.output();
    let out = e.run(StepKind::Review, 1).unwrap();
    let mp4 = o.plate_dir.join("A_0010_org_v001.mp4");
    let mov = o.plate_dir.join("A_0010_org_v001.mov");
    let strip = o.plate_dir.join("A_0010_org_v001stream.jpeg");
    assert_eq!(
        out.outputs.len(),
        3 + 12,
        "mp4, mov, filmstrip, 12 montage frames"
    );
    let montage = o.plate_dir.join("montage/org_v001_jpg");
    let want: Vec<String> = (1001..=1012)
        .map(|n| format!("A_0010_org_v001.{n}.jpg"))
        .collect();
    assert_eq!(names_in(&montage), want);
    assert_eq!(
        jpeg(&montage.join("A_0010_org_v001.1001.jpg")).dimensions(),
        (960, 540)
    );
    for r in &out.outputs {
        assert_eq!(r.xxh3, xxh3_of(&r.path), "{}", r.path.display());
    }

    let i = movie::probe(&mp4).unwrap();
    assert_eq!((i.codec.as_str(), i.width, i.height), ("h264", 64, 36));
    assert_eq!(i.fps, FrameRate::FPS_25);
    assert_eq!(i.frame_count, 12);
    assert_eq!(i.timecode.as_deref(), Some("10:00:00:00"));
    assert_eq!(i.pix_fmt, "yuv420p");
    assert_eq!(i.color_primaries.as_deref(), Some("bt709"));
    assert_eq!(i.color_transfer.as_deref(), Some("bt709"));
    assert_eq!(i.color_space.as_deref(), Some("bt709"));

    let i = movie::probe(&mov).unwrap();
    assert_eq!(
        (i.codec.as_str(), i.profile.as_deref()),
        ("prores", Some("HQ"))
    );
    assert_eq!((i.width, i.height, i.frame_count), (64, 36, 12));
    assert_eq!(i.fps, FrameRate::FPS_25);
    assert_eq!(i.timecode.as_deref(), Some("10:00:00:00"));
    assert_eq!(i.color_primaries.as_deref(), Some("bt709"));
    assert_eq!(i.pix_fmt, "yuv422p10le");

    // 12 frames, 240 px each, 64×36 keeps its aspect: 2880×135.
    assert_eq!(jpeg(&strip).dimensions(), (2880, 135));

    // A re-run keeps the complete movies.
    let again = e.run(StepKind::Review, 2).unwrap();
    assert_eq!(again.outputs, out.outputs);
    assert_eq!(again.summary["movies"][0]["skipped"], true);
    assert!(names_in(&o.plate_dir).iter().all(|n| !n.starts_with('.')));
}

/// Mean of each channel over a rectangle.
fn mean(img: &image::RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> [f32; 3] {
    let mut sum = [0f64; 3];
    for y in y0..y0 + h {
        for x in x0..x0 + w {
            let p = img.get_pixel(x, y);
            for c in 0..3 {
                sum[c] += f64::from(p[c]);
            }
        }
    }
    sum.map(|v| (v / f64::from(w * h)) as f32)
}

/// Brightest channel value in a rectangle.
fn brightest(img: &image::RgbImage, x0: u32, y0: u32, w: u32, h: u32) -> u8 {
    (y0..y0 + h)
        .flat_map(|y| (x0..x0 + w).map(move |x| (x, y)))
        .map(|(x, y)| *img.get_pixel(x, y).0.iter().max().unwrap())
        .max()
        .unwrap()
}

#[test]
fn montage_frames_and_filmstrip_carry_the_publish_date() {
    // Two identical publishes, one with the date burned in and one without.
    let grey = [0.18f32; 3];
    let run = |dated: bool| {
        let mut e = env();
        e.settings.media.review.mp4 = false;
        e.settings.media.review.codec = String::new();
        e.settings.media.review.filmstrip_frames = 2;
        e.settings.media.review.montage_width = 240;
        e.settings.media.review.date_burn_in = dated;
        publish_constant_exr(&e, 4, grey, 64, 36);
        // The publish date is the manifest's (written once at submit): noon
        // UTC on 2024-02-29, the same day in any time zone from -11 to +11.
        let work = e.root.join(".iom/publishes/g");
        let gid = graph_id("demo", "A_0010", "plate.", "org", 1);
        let graph = iom::task::Graph {
            schema: SCHEMA_VERSION,
            id: gid.clone(),
            info: iom::task::PublishInfo {
                project: "demo".into(),
                resolution: "64 x 36".into(),
                ..super::support::publish_info()
            },
            work_dir: work.clone(),
            nodes: vec![iom::task::TaskNode {
                id: task_id(&gid, StepKind::Review, ""),
                label: "review".into(),
                step: Step::Review {
                    output: e.output(),
                    colorspace: "linear".into(),
                },
                deps: vec![],
            }],
        };
        iom::store::WorkDir::create(&graph).unwrap();
        let manifest = work.join("manifest.json");
        std::fs::File::options()
            .write(true)
            .open(&manifest)
            .unwrap()
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_709_208_000))
            .unwrap();
        let out = e.run(StepKind::Review, 1).unwrap();
        (e, out)
    };
    let (e, out) = run(true);
    let (plain_env, plain) = run(false);
    assert_eq!(out.summary["date"], "2024-02-29", "{}", out.summary);
    assert_eq!(plain.summary["date"], serde_json::Value::Null);
    let o = e.output();
    let montage = o.plate_dir.join("montage/org_v001_jpg");
    // Frames 0 and 2 of 4 picked: 1001 and 1003; filmstrip + 2 montage frames.
    assert_eq!(
        names_in(&montage),
        ["A_0010_org_v001.1001.jpg", "A_0010_org_v001.1003.jpg"]
    );
    assert_eq!(out.outputs.len(), 3);
    for r in &out.outputs {
        assert_eq!(r.xxh3, xxh3_of(&r.path), "{}", r.path.display());
    }

    let dated = jpeg(&montage.join("A_0010_org_v001.1003.jpg"));
    let undated = jpeg(
        &plain_env
            .output()
            .plate_dir
            .join("montage/org_v001_jpg/A_0010_org_v001.1003.jpg"),
    );
    assert_eq!(dated.dimensions(), (240, 135));
    // 240 px wide: font scale 2, text at (6, 6), 10 characters = 118×14 px in a
    // box 4 px larger on each side, 60 % black.
    let (bx, by, bw, bh) = (2, 2, 126, 22);
    let grey_code = mean(&undated, 150, 80, 60, 40);
    let below = mean(&dated, 150, 80, 60, 40);
    close(below, grey_code, 2.0, "outside the date box");
    close(
        mean(&undated, bx, by, bw, bh),
        grey_code,
        2.0,
        "undated frame",
    );
    // Inside the box: darker on average, with near-white text.
    let inside = mean(&dated, bx, by, bw, bh);
    assert!(
        inside[1] < grey_code[1] - 20.0,
        "the date box should darken the corner: {inside:?} vs {grey_code:?}"
    );
    assert!(
        brightest(&dated, bx, by, bw, bh) > 200,
        "no date text drawn"
    );
    // The text's extent: a character column lies inside 6..124, nothing lit right of it.
    assert!(brightest(&dated, 128, 2, 40, 22) < grey_code[1] as u8 + 10);

    // The filmstrip's tiles (240 px wide here too) carry the same date.
    let strip = jpeg(&o.plate_dir.join("A_0010_org_v001stream.jpeg"));
    assert_eq!(strip.dimensions(), (480, 135));
    for tile in [0, 240] {
        assert!(mean(&strip, tile + bx, by, bw, bh)[1] < grey_code[1] - 20.0);
        assert!(brightest(&strip, tile + bx, by, bw, bh) > 200);
    }

    // A re-run finds everything complete and keeps the files as they are.
    let again = e.run(StepKind::Review, 2).unwrap();
    assert_eq!(again.outputs, out.outputs);
    assert_eq!(again.summary["montage"]["skipped"], true);
    // A montage frame lost is made again, identical (same date, same pixels).
    let lost = montage.join("A_0010_org_v001.1001.jpg");
    let before = xxh3_of(&lost);
    std::fs::remove_file(&lost).unwrap();
    let third = e.run(StepKind::Review, 3).unwrap();
    assert_eq!(third.summary["montage"]["skipped"], false);
    assert_eq!(xxh3_of(&lost), before);
    assert!(names_in(&montage).iter().all(|n| !n.starts_with('.')));
}

#[test]
fn review_colours_odd_sizes_and_decoded_values() {
    let e = env();
    let c = [0.18, 0.10, 0.05];
    publish_constant_exr(&e, 3, c, 63, 35);
    let o = e.output();
    e.run(StepKind::Review, 1).unwrap();
    let mp4 = o.plate_dir.join("A_0010_org_v001.mp4");
    let mov = o.plate_dir.join("A_0010_org_v001.mov");
    let i = movie::probe(&mp4).unwrap();
    assert_eq!((i.width, i.height), (62, 34), "H.264 crops to even");
    assert_eq!(i.timecode.as_deref(), Some("01:00:00:00"));
    assert_eq!(i.fps, FrameRate::FPS_24);
    let i = movie::probe(&mov).unwrap();
    assert_eq!((i.width, i.height), (63, 35), "ProRes keeps the size");
    // Decoded back, the colour is the colour table's BT.1886 value.
    let want = expected_code(&e, "linear", "rec709", c);
    for (path, tol) in [(&mp4, 3.0), (&mov, 1.5)] {
        let f = &movie::decode_frames(path, &[1]).unwrap()[0];
        let px = f.pixel(f.width / 2, f.height / 2).map(|v| v * 255.0);
        close(px, want, tol, &path.display().to_string());
    }
}

#[test]
fn delivery_codecs_from_the_table() {
    for (name, codec, profile, size) in [
        ("Apple ProRes 4444", "prores", "4444", (64, 36)),
        ("Apple ProRes 422", "prores", "Standard", (64, 36)),
        ("Apple ProRes 422 LT", "prores", "LT", (64, 36)),
        ("Apple ProRes 422 Proxy", "prores", "Proxy", (64, 36)),
        ("Avid DnxHR 422", "dnxhd", "DNXHR HQX", (256, 120)),
        ("Avid DNxHD 422", "dnxhd", "", (1920, 1080)),
    ] {
        let mut e = env();
        e.settings.media.review.mp4 = false;
        e.settings.media.review.filmstrip = false;
        e.settings.media.review.codec = name.into();
        e.publish(|s| s.count = 2);
        e.run(StepKind::Review, 1)
            .unwrap_or_else(|err| panic!("{name}: {err}"));
        let i = movie::probe(&e.output().plate_dir.join("A_0010_org_v001.mov")).unwrap();
        assert_eq!(i.codec, codec, "{name}");
        if !profile.is_empty() {
            assert_eq!(i.profile.as_deref(), Some(profile), "{name}");
        }
        assert_eq!((i.width, i.height), size, "{name}");
        assert_eq!(i.frame_count, 2, "{name}");
        assert!(!e.output().plate_dir.join("A_0010_org_v001.mp4").exists());
    }
}

#[test]
fn unknown_codec_name_fails_that_task_with_nothing_written() {
    let mut e = env();
    e.publish(|_| {});
    e.settings.media.review.codec = "Apple ProRes 9000".into();
    assert_permanent(
        e.run(StepKind::Review, 1),
        &[
            "media.review.codec",
            "Apple ProRes 9000",
            "Apple ProRes 422 HQ",
        ],
    );
    assert!(!e.output().plate_dir.join("A_0010_org_v001.mp4").exists());
    assert!(names_in(&e.output().plate_dir).iter().all(|n| n == "org"));
    // A per-project codec overrides the default.
    let mut e = env();
    e.publish(|s| s.count = 1);
    e.settings.media.review.mp4 = false;
    e.settings
        .media
        .review
        .project_codecs
        .insert("demo".into(), "Apple ProRes 422 LT".into());
    e.run(StepKind::Review, 1).unwrap();
    let i = movie::probe(&e.output().plate_dir.join("A_0010_org_v001.mov")).unwrap();
    assert_eq!(i.profile.as_deref(), Some("LT"));
}

/// `media.review.encoder_threads` reaches the encoder: libx264 writes the
/// settings it ran with into the stream (an SEI message).
#[test]
fn encoder_threads_reach_x264() {
    let x264_threads = |threads: u32| {
        let mut e = env();
        e.settings.media.review.codec = String::new();
        e.settings.media.review.filmstrip = false;
        e.settings.media.review.montage = false;
        e.settings.media.review.encoder_threads = threads;
        publish_constant_exr(&e, 3, [0.2; 3], 64, 36);
        e.run(StepKind::Review, 1).unwrap();
        let bytes = std::fs::read(e.output().plate_dir.join("A_0010_org_v001.mp4")).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        let sei = text
            .find("x264 - core")
            .map(|i| text[i..].split('\0').next().unwrap().to_string())
            .expect("x264's settings message");
        sei.split(' ')
            .find_map(|o| o.strip_prefix("threads="))
            .and_then(|n| n.parse::<u32>().ok())
            .expect("threads= in x264's settings")
    };
    assert_eq!(x264_threads(1), 1);
    assert_eq!(x264_threads(2), 2);
}

/// Every frame of the movies is its own source frame, in order: the encoders
/// reuse their input pictures (a pool: prores_ks holds each until a thread has
/// encoded it), and a picture filled again too early would show its neighbour.
#[test]
fn every_movie_frame_is_its_own_source_frame() {
    let e = env();
    let o = e.output();
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    let colour = |k: i64| [0.02 + 0.09 * k as f32, 0.30, 0.70 - 0.06 * k as f32];
    let n = 10;
    for k in 0..n {
        let spec = ExrSpec {
            fill: Fill::Constant(colour(k)),
            fps: Some(FrameRate::FPS_24),
            // Large enough that a frame thread is still encoding one picture
            // when the next is converted.
            ..ExrSpec::new(1920, 1080)
        };
        exr::write_frame(&o.frame_path(1001 + k), &spec).unwrap();
    }
    e.run(StepKind::Review, 1).unwrap();
    for (ext, tol) in [("mov", 1.5), ("mp4", 3.0)] {
        let path = o.plate_dir.join(format!("A_0010_org_v001.{ext}"));
        let idx: Vec<u64> = (0..n as u64).collect();
        let frames = movie::decode_frames(&path, &idx).unwrap();
        assert_eq!(frames.len(), n as usize);
        for (k, f) in frames.iter().enumerate() {
            let px = f.pixel(f.width / 2, f.height / 2).map(|v| v * 255.0);
            let want = expected_code(&e, "linear", "rec709", colour(k as i64));
            close(px, want, tol, &format!("{ext} frame {k}"));
        }
    }
}

#[test]
fn slate_and_burn_in() {
    let mut e = env();
    e.settings.media.review.slate = true;
    e.settings.media.review.burn_in = true;
    e.settings.media.review.codec = String::new();
    publish_constant_exr(&e, 3, [0.05, 0.05, 0.05], 320, 180);
    e.run(StepKind::Review, 1).unwrap();
    let mp4 = e.output().plate_dir.join("A_0010_org_v001.mp4");
    let i = movie::probe(&mp4).unwrap();
    assert_eq!(i.frame_count, 4, "slate + 3 frames");
    // The slate is one frame before the plate's 01:00:00:00.
    assert_eq!(i.timecode.as_deref(), Some("00:59:59:23"));
    let frames = movie::decode_frames(&mp4, &[0, 1]).unwrap();
    let bright = |f: &iom::media::RgbImage| f.data.chunks(3).filter(|p| p[0] > 0.7).count();
    assert!(bright(&frames[0]) > 100, "the slate has text");
    assert!(bright(&frames[1]) > 50, "the burn-in has text");
    // Without burn-in the same frame has no bright pixel at all.
    let mut plain = env();
    plain.settings.media.review.codec = String::new();
    publish_constant_exr(&plain, 1, [0.05, 0.05, 0.05], 320, 180);
    plain.run(StepKind::Review, 1).unwrap();
    let f = &movie::decode_frames(&plain.output().plate_dir.join("A_0010_org_v001.mp4"), &[0])
        .unwrap()[0];
    assert_eq!(bright(f), 0);
}

#[test]
fn dpx_plate_review_and_movie_plate_proxies() {
    // DPX with its TV-header timecode and frame rate.
    let e = env();
    e.publish(|s| {
        s.format = PlateFormat::Dpx;
        s.count = 3;
        s.fps = Some(FrameRate::FPS_24);
        s.timecode = Some("02:00:00:00");
    });
    let mut o = e.output();
    o.ext = "dpx".into();
    e.run_with(StepKind::Review, 1, "Cineon", o.clone())
        .unwrap();
    let i = movie::probe(&o.plate_dir.join("A_0010_org_v001.mp4")).unwrap();
    assert_eq!(
        (i.frame_count, i.timecode.as_deref()),
        (3, Some("02:00:00:00"))
    );
    e.run_with(StepKind::Proxy, 1, "Cineon", o.clone()).unwrap();
    assert_eq!(names_in(&o.jpg_dir).len(), 3);

    // A published movie plate: proxies numbered from 1001. rec709 in and out is
    // the identity, so the test pattern's colours come back.
    let mut e = env();
    e.settings.media.proxy.display = "rec709".into();
    let mut o = e.output();
    o.ext = "mov".into();
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    movie::write_test_movie(
        &o.frames_dir.join("A_0010_org_v001.mov"),
        &MovieSpec::prores_hq(64, 36, FrameRate::FPS_24, 5),
    )
    .unwrap();
    let out = e.run_with(StepKind::Proxy, 1, "rec709", o.clone()).unwrap();
    assert_eq!(out.outputs.len(), 5);
    assert!(o.jpg_dir.join("A_0010_org_v001.1005.jpg").is_file());
    // Frame n of the test movie has a known flat colour: proxy 1004 is frame 3.
    let px = jpeg(&o.jpg_dir.join("A_0010_org_v001.1004.jpg"));
    let c = centre(&px).map(|v| v / 255.0);
    assert_eq!(movie::test_frame_index(c), Some(3), "{c:?}");
}
