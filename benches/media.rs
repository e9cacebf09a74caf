//! Drives iom's side of `benches/media.sh` (one operation per process, so the
//! script can time it and read its peak RSS with `/usr/bin/time -v`).
//!
//! ```text
//! media gen    <root> <width> <height> <frames>   # the EXR plate, published layout
//! media proxy  <root>                             # JPEG proxies (full size only)
//! media h264   <root>                             # <plate>.mp4 only
//! media prores <root>                             # <plate>.mov, ProRes 422 HQ only
//! ```
//! The plate is `<root>/seq/B/B_0010/plate/org/v001/B_0010_org_v001.####.exr`,
//! scene-linear half float, 24 fps, timecode 01:00:00:00. Outputs of the
//! operation are removed first, so every run does the full work.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use iom::config::Settings;
use iom::sample::{self, PlateSpec};
use iom::steps::{self, StepContext};
use iom::task::{graph_id, task_id, PlateOutput, Step, StepKind, TaskMessage, SCHEMA_VERSION};
use iom::tracker::LocalTracker;

fn output(root: &Path) -> PlateOutput {
    let plate = root.join("seq/B/B_0010/plate");
    PlateOutput {
        frames_dir: plate.join("org/v001"),
        plate_name: "B_0010_org_v001".into(),
        ext: "exr".into(),
        first_frame: 1001,
        pad: 4,
        plate_dir: plate.clone(),
        jpg_dir: plate.join("org/v001_jpg"),
        jpg_2k_dir: plate.join("org/v001_jpg_2k"),
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo bench` passes `--bench`: nothing to do then.
    if args.is_empty() || args[0].starts_with("--") {
        eprintln!("usage: media gen|proxy|h264|prores <root> [width height frames]");
        return;
    }
    let root = PathBuf::from(args.get(1).expect("root"));
    let o = output(&root);
    match args[0].as_str() {
        "gen" => {
            let num = |i: usize| {
                args.get(i)
                    .and_then(|v| v.parse::<u32>().ok())
                    .expect("width height frames")
            };
            let mut spec = PlateSpec::exr(
                "v001",
                "B_0010_org_v001.",
                num(2),
                num(3),
                i64::from(num(4)),
            );
            spec.start = 1001;
            sample::write_plate(o.frames_dir.parent().unwrap(), &spec).expect("write plate");
            return;
        }
        "proxy" | "h264" | "prores" => {}
        other => panic!("unknown operation {other}"),
    }
    let mut settings = Settings::defaults().expect("settings");
    settings.project.root = root.clone();
    settings.media.proxy.small_width = 0;
    settings.media.review.filmstrip = false;
    settings.media.review.montage = false;
    if let Some(j) = std::env::var("BENCH_JOBS")
        .ok()
        .and_then(|j| j.parse().ok())
    {
        settings.media.jobs = j;
    }
    if let Some(t) = std::env::var("BENCH_ENCODER_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
    {
        settings.media.review.encoder_threads = t;
    }
    let kind = match args[0].as_str() {
        "proxy" => {
            let _ = std::fs::remove_dir_all(&o.jpg_dir);
            StepKind::Proxy
        }
        "h264" => {
            let _ = std::fs::remove_file(o.movie_path("mp4"));
            settings.media.review.codec = String::new();
            StepKind::Review
        }
        _ => {
            let _ = std::fs::remove_file(o.movie_path("mov"));
            settings.media.review.mp4 = false;
            settings.media.review.codec = "Apple ProRes 422 HQ".into();
            StepKind::Review
        }
    };
    let ctx = StepContext {
        settings: Arc::new(settings),
        worker: "bench".into(),
        cancel: Arc::new(AtomicBool::new(false)),
        tracker: Arc::new(LocalTracker::new(root.join(".iom/tracker"))),
    };
    let step = match kind {
        StepKind::Proxy => Step::Proxy {
            output: o.clone(),
            colorspace: "linear".into(),
        },
        _ => Step::Review {
            output: o.clone(),
            colorspace: "linear".into(),
        },
    };
    let gid = graph_id("bench", "B_0010", "plate.", "org", 1);
    let msg = TaskMessage {
        schema: SCHEMA_VERSION,
        graph_id: gid.clone(),
        task_id: task_id(&gid, kind, ""),
        attempt: 1,
        retries_from: 1,
        work_dir: root.join(".iom/publishes/none"),
        step,
    };
    let t0 = std::time::Instant::now();
    let out = steps::run(&msg, &ctx).unwrap_or_else(|e| panic!("{kind}: {e}"));
    // What a resident worker spends on the task (no process start-up).
    eprintln!("step seconds: {:.3}", t0.elapsed().as_secs_f64());
    eprintln!("{kind}: {} outputs", out.outputs.len());
}
