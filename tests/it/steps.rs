//! The step implementations on real files: probe, copy (renumbering, verification,
//! resume, refusal to overwrite, crash leftovers), cleanup, thumbnail, the media
//! kinds run too early, and registration in the local tracker.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Barrier};

use iom::config::Settings;
use iom::error::{Classify, ErrorClass};
use iom::media::movie::{self, MovieSpec};
use iom::sample::{self, PlateSpec};
use iom::steps::{self, StepContext, StepError, StepOutput};
use iom::store::WorkDir;
use iom::task::{
    graph_id, task_id, GapPolicy, Graph, GraphId, PlateOutput, PublishInfo, Retime, Source, Step,
    StepKind, TaskId, TaskMessage, TaskNode, SCHEMA_VERSION,
};
use iom::timecode::FrameRate;
use iom::tracker::{open_tracker, EntityKind, LocalTracker, Registration, Tracker, TrackerError};

struct Env {
    _tmp: tempfile::TempDir,
    delivery: PathBuf,
    root: PathBuf,
    work: PathBuf,
    ctx: StepContext,
    tracker: Arc<LocalTracker>,
}

fn env() -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("show");
    let delivery = tmp.path().join("delivery");
    let work = root.join(".iom/publishes/g");
    let mut settings = Settings::defaults().unwrap();
    settings.project.root = root.clone();
    let tracker = Arc::new(LocalTracker::new(root.join(".iom/tracker")));
    let ctx = StepContext {
        settings: Arc::new(settings),
        worker: "test-worker".into(),
        cancel: Arc::new(AtomicBool::new(false)),
        tracker: tracker.clone(),
    };
    Env {
        _tmp: tmp,
        delivery,
        root,
        work,
        ctx,
        tracker,
    }
}

fn gid() -> GraphId {
    graph_id("demo", "A_0010", "plate.", "org", 1)
}

fn output(root: &Path) -> PlateOutput {
    let plate = root.join("seq/A/A_0010/plate");
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

/// An 8×8 EXR plate in `delivery/plate/`, frames `start..start+count`.
fn plate(e: &Env, start: i64, count: i64, tweak: impl FnOnce(&mut PlateSpec)) -> Source {
    let mut spec = PlateSpec::exr("plate", "A001C003_plate.", 8, 8, count);
    spec.start = start;
    tweak(&mut spec);
    sample::write_plate(&e.delivery, &spec).unwrap();
    Source::Sequence {
        dir: e.delivery.join("plate"),
        head: spec.head.clone(),
        pad: spec.pad,
        ext: "exr".into(),
        first: start,
        last: start + count - 1,
    }
}

fn msg(e: &Env, kind: StepKind, attempt: u32, step: Step) -> TaskMessage {
    TaskMessage {
        schema: SCHEMA_VERSION,
        graph_id: gid(),
        task_id: task_id(&gid(), kind, ""),
        attempt,
        retries_from: 1,
        work_dir: e.work.clone(),
        step,
    }
}

fn probe(e: &Env, source: &Source, policy: GapPolicy) -> Result<StepOutput, StepError> {
    let step = Step::Probe {
        source: source.clone(),
        gap_policy: policy,
    };
    steps::run(&msg(e, StepKind::Probe, 1, step), &e.ctx)
}

fn copy(e: &Env, source: &Source, attempt: u32) -> Result<StepOutput, StepError> {
    let step = Step::Copy {
        source: source.clone(),
        output: output(&e.root),
        frames: None,
    };
    steps::run(&msg(e, StepKind::Copy, attempt, step), &e.ctx)
}

fn xxh3_of(path: &Path) -> String {
    format!(
        "{:016x}",
        xxhash_rust::xxh3::xxh3_64(&std::fs::read(path).unwrap())
    )
}

fn names_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

fn assert_permanent(r: Result<StepOutput, StepError>, needles: &[&str]) -> String {
    let e = r.expect_err("the step should fail");
    assert_eq!(e.class(), ErrorClass::Permanent, "{e}");
    let msg = e.to_string();
    for n in needles {
        assert!(msg.contains(n), "{n:?} not in: {msg}");
    }
    msg
}

// ---------------------------------------------------------------------------
// probe
// ---------------------------------------------------------------------------

#[test]
fn probe_accepts_a_complete_sequence() {
    let e = env();
    let src = plate(&e, 1001, 5, |_| {});
    let out = probe(&e, &src, GapPolicy::Fail).unwrap();
    assert!(out.outputs.is_empty());
    assert_eq!(out.summary["frames"], 5);
    assert_eq!(out.summary["present"], 5);
    assert!(out.summary["bytes"].as_u64().unwrap() > 5 * 8 * 8);
    assert_eq!(out.summary["missing"], serde_json::json!([]));
}

#[test]
fn probe_refuses_gaps_under_fail_and_lists_them_under_black() {
    let e = env();
    let src = plate(&e, 1001, 8, |s| s.missing = vec![1002, 1003, 1006]);
    assert_permanent(
        probe(&e, &src, GapPolicy::Fail),
        &["3 missing frame(s)", "1002-1003, 1006", "gap policy"],
    );
    let out = probe(&e, &src, GapPolicy::Black).unwrap();
    assert_eq!(
        out.summary["missing"],
        serde_json::json!([[1002, 1003], [1006, 1006]])
    );
    assert_eq!(out.summary["present"], 5);
    assert!(probe(&e, &src, GapPolicy::Previous).is_ok());
}

#[test]
fn probe_names_truncated_and_empty_frames_whatever_the_policy() {
    let e = env();
    let src = plate(&e, 1001, 5, |s| {
        s.truncated = vec![1003];
        s.zero_byte = vec![1005];
    });
    let msg = assert_permanent(
        probe(&e, &src, GapPolicy::Black),
        &[
            "2 bad source frame(s)",
            "A001C003_plate.1003.exr",
            "A001C003_plate.1005.exr",
        ],
    );
    assert!(msg.contains("truncated"), "{msg}");
}

#[test]
fn probe_fails_when_no_frame_exists() {
    let e = env();
    let src = plate(&e, 1001, 2, |_| {});
    let Source::Sequence {
        dir,
        head,
        pad,
        ext,
        ..
    } = src
    else {
        unreachable!()
    };
    let far = Source::Sequence {
        dir,
        head,
        pad,
        ext,
        first: 5000,
        last: 5003,
    };
    assert_permanent(probe(&e, &far, GapPolicy::Black), &["none of the frames"]);
}

// ---------------------------------------------------------------------------
// copy
// ---------------------------------------------------------------------------

#[test]
fn copy_renumbers_from_1001_and_every_output_verifies() {
    let e = env();
    let src = plate(&e, 1, 5, |s| s.pad = 3);
    let out = copy(&e, &src, 1).unwrap();
    let o = output(&e.root);
    assert_eq!(out.summary["copied"], 5);
    assert_eq!(out.summary["skipped"], 0);
    assert_eq!(out.outputs.len(), 5);
    for (i, f) in out.outputs.iter().enumerate() {
        let n = 1001 + i as i64;
        assert_eq!(f.path, o.frame_path(n));
        assert!(f.path.ends_with(format!("A_0010_org_v001.{n}.exr")));
        let bytes = std::fs::read(&f.path).unwrap();
        assert_eq!(f.size, bytes.len() as u64);
        assert_eq!(
            f.xxh3,
            xxh3_of(&f.path),
            "recorded hash must match the file"
        );
        assert_eq!(
            bytes,
            std::fs::read(src.frame_path(i as i64 + 1).unwrap()).unwrap()
        );
    }
    // Only real names remain: no temporary file.
    assert_eq!(
        names_in(&o.frames_dir),
        (1001..=1005)
            .map(|n| format!("A_0010_org_v001.{n}.exr"))
            .collect::<Vec<_>>()
    );
}

#[test]
fn copying_again_skips_everything_and_touches_nothing() {
    let e = env();
    let src = plate(&e, 1001, 4, |_| {});
    let first = copy(&e, &src, 1).unwrap();
    let o = output(&e.root);
    let mtimes: Vec<_> = first
        .outputs
        .iter()
        .map(|f| std::fs::metadata(&f.path).unwrap().modified().unwrap())
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(20));
    let again = copy(&e, &src, 2).unwrap();
    assert_eq!(again.summary["skipped"], 4);
    assert_eq!(again.summary["copied"], 0);
    assert_eq!(again.outputs, first.outputs);
    for (f, t) in first.outputs.iter().zip(mtimes) {
        assert_eq!(std::fs::metadata(&f.path).unwrap().modified().unwrap(), t);
    }
    assert_eq!(names_in(&o.frames_dir).len(), 4);
}

#[test]
fn a_different_published_file_is_never_overwritten() {
    let e = env();
    let src = plate(&e, 1001, 4, |_| {});
    let o = output(&e.root);
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    // Same size as the source frame, one byte different: only the hash tells.
    let mut impostor = std::fs::read(src.frame_path(1003).unwrap()).unwrap();
    let last = impostor.len() - 1;
    impostor[last] ^= 0xff;
    let dest = o.frame_path(1003);
    std::fs::write(&dest, &impostor).unwrap();

    let msg = assert_permanent(
        copy(&e, &src, 1),
        &[
            "already exists with different content",
            "refusing to overwrite",
        ],
    );
    assert!(msg.contains("A_0010_org_v001.1003.exr"), "{msg}");
    assert_eq!(
        std::fs::read(&dest).unwrap(),
        impostor,
        "the file was overwritten"
    );
    // And a shorter one is refused without hashing.
    std::fs::write(&dest, b"short").unwrap();
    assert_permanent(
        copy(&e, &src, 2),
        &["already exists with different content"],
    );
    assert_eq!(std::fs::read(&dest).unwrap(), b"short");
    assert!(names_in(&o.frames_dir)
        .iter()
        .all(|n| !n.contains(".iom-tmp-")));
}

#[test]
fn a_crashed_attempts_temporary_files_are_removed_first() {
    let e = env();
    let src = plate(&e, 1001, 3, |_| {});
    let o = output(&e.root);
    std::fs::create_dir_all(&o.frames_dir).unwrap();
    let task = task_id(&gid(), StepKind::Copy, "");
    let ours = o.frames_dir.join(format!(
        ".A_0010_org_v001.1002.exr.iom-tmp-{task}-1-0123456789abcdef"
    ));
    let theirs = o
        .frames_dir
        .join(".A_0010_org_v001.1002.exr.iom-tmp-other.task-1-0123456789abcdef");
    std::fs::write(&ours, b"half a fra").unwrap();
    std::fs::write(&theirs, b"not ours").unwrap();

    let out = copy(&e, &src, 2).unwrap();
    assert_eq!(out.summary["stale_temps_removed"], 1);
    assert_eq!(out.summary["copied"], 3);
    assert!(!ours.exists());
    assert!(theirs.exists(), "another task's temporary file was touched");
}

#[test]
fn a_five_digit_thousand_frame_source_renumbers_past_1999() {
    let e = env();
    // 9500..=10504: crosses 9999 → 10000 at padding 4, and 1005 outputs end at 2005.
    let src = plate(&e, 9500, 1005, |_| {});
    let out = copy(&e, &src, 1).unwrap();
    assert_eq!(out.summary["copied"], 1005);
    let o = output(&e.root);
    assert_eq!(out.outputs.first().unwrap().path, o.frame_path(1001));
    assert_eq!(out.outputs.last().unwrap().path, o.frame_path(2005));
    assert!(o.frame_path(2005).ends_with("A_0010_org_v001.2005.exr"));
    for (source, published) in [(9999, 1500), (10000, 1501), (10504, 2005)] {
        assert_eq!(
            std::fs::read(src.frame_path(source).unwrap()).unwrap(),
            std::fs::read(o.frame_path(published)).unwrap(),
            "source {source} should be published as {published}"
        );
    }
    let names = names_in(&o.frames_dir);
    assert_eq!(names.len(), 1005);
    assert!(
        names.iter().all(|n| !n.starts_with('.')),
        "temporary file left"
    );
}

#[test]
fn copy_skips_missing_frames_only_when_the_graphs_probe_allows_gaps() {
    let e = env();
    let src = plate(&e, 1001, 4, |s| s.missing = vec![1002]);
    // No work folder: strict.
    assert_permanent(copy(&e, &src, 1), &["A001C003_plate.1002.exr", "missing"]);

    // A graph whose probe allows black frames.
    let id = gid();
    let o = output(&e.root);
    let graph = Graph {
        schema: SCHEMA_VERSION,
        id: id.clone(),
        info: info("org"),
        work_dir: e.work.clone(),
        nodes: vec![
            TaskNode {
                id: task_id(&id, StepKind::Probe, ""),
                label: "probe".into(),
                step: Step::Probe {
                    source: src.clone(),
                    gap_policy: GapPolicy::Black,
                },
                deps: vec![],
            },
            TaskNode {
                id: task_id(&id, StepKind::Copy, ""),
                label: "copy".into(),
                step: Step::Copy {
                    source: src.clone(),
                    output: o.clone(),
                    frames: None,
                },
                deps: vec![task_id(&id, StepKind::Probe, "")],
            },
        ],
    };
    WorkDir::create(&graph).unwrap();
    let out = copy(&e, &src, 2).unwrap();
    // The refused run may have published some frames already: resumed, not redone.
    let done = out.summary["copied"].as_u64().unwrap() + out.summary["skipped"].as_u64().unwrap();
    assert_eq!(done, 3, "{}", out.summary);
    assert_eq!(out.outputs.len(), 3);
    assert_eq!(out.summary["missing"], serde_json::json!([[1002, 1002]]));
    assert!(o.frame_path(1001).exists() && !o.frame_path(1002).exists());
    assert!(o.frame_path(1004).exists());
}

#[test]
fn a_cancelled_copy_stops_with_a_transient_error_and_leaves_no_temp() {
    let e = env();
    let src = plate(&e, 1001, 3, |_| {});
    e.ctx
        .cancel
        .store(true, std::sync::atomic::Ordering::SeqCst);
    let err = copy(&e, &src, 1).unwrap_err();
    assert!(matches!(err, StepError::Cancelled), "{err}");
    assert_eq!(err.class(), ErrorClass::Transient);
    let o = output(&e.root);
    if o.frames_dir.exists() {
        assert!(names_in(&o.frames_dir).is_empty());
    }
}

// ---------------------------------------------------------------------------
// cleanup
// ---------------------------------------------------------------------------

#[test]
fn cleanup_removes_iom_temporaries_and_nothing_else() {
    let e = env();
    let o = output(&e.root);
    for d in [&o.frames_dir, &o.jpg_dir] {
        std::fs::create_dir_all(d).unwrap();
    }
    let keep = [
        o.frame_path(1001),
        o.frames_dir.join(".keep"),
        o.frames_dir.join("notes.iom-tmp-x.txt"),
        o.plate_dir.join("A_0010_org_v001.mov"),
    ];
    for k in &keep {
        std::fs::write(k, b"published").unwrap();
    }
    let temps = [
        o.frames_dir
            .join(".A_0010_org_v001.1002.exr.iom-tmp-t.copy-1-0123456789abcdef"),
        o.jpg_dir
            .join(".A_0010_org_v001.1001.jpg.iom-tmp-t.proxy-2-0123456789abcdef"),
        o.plate_dir
            .join(".A_0010_org_v001_thumb.jpg.iom-tmp-t.thumbnail-1-0123456789abcdef"),
    ];
    for t in &temps {
        std::fs::write(t, b"partial").unwrap();
    }
    // A folder named like a temporary file is not a file: left alone.
    let dir_like = o.frames_dir.join(".x.iom-tmp-dir");
    std::fs::create_dir(&dir_like).unwrap();

    let m = msg(
        &e,
        StepKind::Cleanup,
        1,
        Step::Cleanup { output: o.clone() },
    );
    let out = steps::run(&m, &e.ctx).unwrap();
    assert_eq!(out.summary["removed"], 3);
    for t in &temps {
        assert!(!t.exists(), "{} left", t.display());
    }
    for k in &keep {
        assert_eq!(std::fs::read(k).unwrap(), b"published", "{}", k.display());
    }
    assert!(dir_like.is_dir());
    // Idempotent: nothing left to do is success.
    let again = steps::run(&m, &e.ctx).unwrap();
    assert_eq!(again.summary["removed"], 0);
}

// ---------------------------------------------------------------------------
// thumbnail, proxy, review
// ---------------------------------------------------------------------------

#[test]
fn thumbnail_of_the_published_plate_is_a_jpeg() {
    let e = env();
    let src = plate(&e, 1001, 2, |_| {});
    copy(&e, &src, 1).unwrap();
    let o = output(&e.root);
    let m = msg(
        &e,
        StepKind::Thumbnail,
        1,
        Step::Thumbnail {
            output: o.clone(),
            colorspace: "linear".into(),
        },
    );
    let out = steps::run(&m, &e.ctx).unwrap();
    let thumb = o.plate_dir.join("A_0010_org_v001_thumb.jpg");
    assert_eq!(out.outputs.len(), 1);
    assert_eq!(out.outputs[0].path, thumb);
    assert_eq!(out.outputs[0].xxh3, xxh3_of(&thumb));
    let bytes = std::fs::read(&thumb).unwrap();
    assert_eq!(&bytes[..2], &[0xff, 0xd8], "not a JPEG");
    let img = image::load_from_memory(&bytes).unwrap();
    assert!(img.width() <= 960 && img.height() <= 540);
    assert_eq!(
        img.width(),
        img.height(),
        "8×8 square source keeps its aspect"
    );
    // Deterministic: a re-run writes the same bytes, and leaves no temporary file.
    let again = steps::run(&m, &e.ctx).unwrap();
    assert_eq!(again.outputs, out.outputs);
    assert!(names_in(&o.plate_dir).iter().all(|n| !n.starts_with('.')));

    // An unknown colour space is a configuration error, permanent.
    let bad = msg(
        &e,
        StepKind::Thumbnail,
        1,
        Step::Thumbnail {
            output: o,
            colorspace: "no such space".into(),
        },
    );
    assert_permanent(steps::run(&bad, &e.ctx), &["no such space"]);
}

#[test]
fn proxy_and_review_before_the_copy_fail_permanently() {
    // The media steps are implemented (tests/it/media_steps.rs); run before the
    // copy they fail permanently, saying what is missing, and write nothing.
    let e = env();
    let o = output(&e.root);
    for (kind, step) in [
        (
            StepKind::Proxy,
            Step::Proxy {
                output: o.clone(),
                colorspace: "linear".into(),
            },
        ),
        (
            StepKind::Review,
            Step::Review {
                output: o.clone(),
                colorspace: "linear".into(),
            },
        ),
    ] {
        let err = steps::run(&msg(&e, kind, 1, step), &e.ctx).unwrap_err();
        assert_eq!(err.class(), ErrorClass::Permanent, "{err}");
        assert!(err.to_string().contains("run the copy step first"), "{err}");
    }
    assert!(!o.jpg_dir.exists());
}

#[test]
fn a_movie_source_probes_copies_and_thumbnails() {
    let e = env();
    std::fs::create_dir_all(&e.delivery).unwrap();
    let mov = e.delivery.join("A001C003.mov");
    movie::write_test_movie(&mov, &MovieSpec::mjpeg(32, 18, FrameRate::FPS_24, 5)).unwrap();
    let src = Source::Movie {
        path: mov.clone(),
        first: 1,
        last: 5,
    };
    let out = probe(&e, &src, GapPolicy::Fail).unwrap();
    assert_eq!(out.summary["frames"], 5);
    let too_long = Source::Movie {
        path: mov.clone(),
        first: 2,
        last: 9,
    };
    assert_permanent(probe(&e, &too_long, GapPolicy::Fail), &["2-9", "5 frames"]);

    let mut o = output(&e.root);
    o.ext = "mov".into();
    let m = msg(
        &e,
        StepKind::Copy,
        1,
        Step::Copy {
            source: src.clone(),
            output: o.clone(),
            frames: None,
        },
    );
    let out = steps::run(&m, &e.ctx).unwrap();
    let dest = o.frames_dir.join("A_0010_org_v001.mov");
    assert_eq!(out.outputs.len(), 1);
    assert_eq!(out.outputs[0].path, dest);
    assert_eq!(std::fs::read(&dest).unwrap(), std::fs::read(&mov).unwrap());

    let m = msg(
        &e,
        StepKind::Thumbnail,
        1,
        Step::Thumbnail {
            output: o.clone(),
            colorspace: "rec709".into(),
        },
    );
    steps::run(&m, &e.ctx).unwrap();
    let thumb = std::fs::read(o.plate_dir.join("A_0010_org_v001_thumb.jpg")).unwrap();
    assert_eq!(&thumb[..2], &[0xff, 0xd8]);
}

// ---------------------------------------------------------------------------
// register
// ---------------------------------------------------------------------------

fn info(seq_type: &str) -> PublishInfo {
    PublishInfo {
        project: "demo".into(),
        seq: "A".into(),
        shot: "A_0010".into(),
        seq_type: seq_type.into(),
        version: 1,
        scan_name: "A001C003_plate.".into(),
        clip_name: "A001C003".into(),
        colorspace: "ACES - ACEScg".into(),
        fps: Some(24.0),
        resolution: "8 x 8".into(),
        timecode_in: "01:00:00:00".into(),
        timecode_out: "01:00:00:03".into(),
        just_in: 1001,
        just_out: 1004,
        retimes: vec![],
    }
}

fn register(e: &Env, attempt: u32) -> Result<StepOutput, StepError> {
    let m = msg(
        e,
        StepKind::Register,
        attempt,
        Step::Register {
            output: output(&e.root),
            info: info("org"),
        },
    );
    steps::run(&m, &e.ctx)
}

#[test]
fn registering_twice_gives_one_entity_of_each_kind() {
    let e = env();
    let src = plate(&e, 1001, 4, |_| {});
    // Nothing published yet: refused.
    assert_permanent(register(&e, 1), &["refusing to register", "does not exist"]);
    copy(&e, &src, 1).unwrap();

    let first = register(&e, 1).unwrap();
    assert_eq!(first.summary["version"]["created"], true);
    assert_eq!(first.summary["version"]["id"], "A_0010_org_v001.mov");
    let second = register(&e, 2).unwrap();
    assert_eq!(second.summary["version"]["created"], false);
    assert_eq!(second.summary["published_file"]["created"], false);
    assert_eq!(
        second.summary["version"]["id"],
        first.summary["version"]["id"]
    );

    for kind in [
        EntityKind::Sequence,
        EntityKind::Shot,
        EntityKind::Version,
        EntityKind::PublishedFile,
    ] {
        assert_eq!(e.tracker.list(kind).unwrap().len(), 1, "{kind:?}");
    }
    let v = e
        .tracker
        .entity(EntityKind::Version, "A_0010_org_v001.mov")
        .unwrap()
        .unwrap();
    let frames = output(&e.root)
        .frames_dir
        .join("A_0010_org_v001.%04d.exr")
        .display()
        .to_string();
    assert_eq!(v.fields["sg_path_to_frames"], frames.as_str());
    assert_eq!(v.fields["sg_first_frame"], 1001);
    assert_eq!(v.fields["sg_last_frame"], 1004);
    assert_eq!(v.fields["sg_status_list"], "fin");
    assert_eq!(v.fields["sg_version_type"], "org");
    assert_eq!(v.created_by_task, task_id(&gid(), StepKind::Register, ""));
    let shot = e
        .tracker
        .entity(EntityKind::Shot, "A_0010")
        .unwrap()
        .unwrap();
    assert_eq!(shot.fields["sg_cut_in"], 1001);
    assert_eq!(shot.fields["sg_cut_out"], 1004);
    assert_eq!(shot.fields["sg_cut_duration"], 4);
    assert_eq!(shot.fields["sg_sequence"], "A");
    let pf = e.tracker.list(EntityKind::PublishedFile).unwrap().remove(0);
    assert_eq!(pf.fields["published_file_type"], "Plate");
    assert_eq!(pf.fields["name"], "A_0010_org");
    assert_eq!(pf.fields["path"], frames.as_str());
    assert_eq!(
        e.tracker.find_versions("demo", "A_0010", "org").unwrap(),
        vec![1]
    );
    assert!(e
        .tracker
        .find_versions("demo", "A_0010", "ref")
        .unwrap()
        .is_empty());
}

#[test]
fn concurrent_registrations_create_no_duplicates() {
    let tmp = tempfile::tempdir().unwrap();
    for round in 0..40 {
        let tracker = Arc::new(LocalTracker::new(tmp.path().join(format!("t{round}"))));
        let o = output(tmp.path());
        let barrier = Arc::new(Barrier::new(2));
        let handles: Vec<_> = (0..2)
            .map(|i| {
                let (tracker, barrier, o) = (tracker.clone(), barrier.clone(), o.clone());
                std::thread::spawn(move || {
                    let req = Registration::new(&info("org"), &o, &TaskId(format!("t{i}")));
                    barrier.wait();
                    tracker.register(&req).unwrap()
                })
            })
            .collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
        let created = results.iter().filter(|r| r.version.created).count();
        assert_eq!(created, 1, "round {round}: {results:?}");
        assert_eq!(
            results.iter().filter(|r| r.published_file.created).count(),
            1
        );
        for kind in [
            EntityKind::Sequence,
            EntityKind::Shot,
            EntityKind::Version,
            EntityKind::PublishedFile,
        ] {
            assert_eq!(
                tracker.list(kind).unwrap().len(),
                1,
                "round {round} {kind:?}"
            );
        }
    }
}

#[test]
fn registration_follows_the_originals_field_rules() {
    let o = output(Path::new("/show/demo"));
    let t = TaskId("t".into());
    let r = Registration::new(&info("ref"), &o, &t);
    assert!(r.cut.is_none(), "only org writes cut info");
    assert_eq!(r.published_file.published_file_type, "Reference");
    assert_eq!(r.version.code, "A_0010_ref_v001.mov");
    let r = Registration::new(&info("lib"), &o, &t);
    assert_eq!(r.version.sg_version_type, "src");
    assert_eq!(r.published_file.published_file_type, "Source");
    assert_eq!(r.published_file.name, "A_0010_lib");

    let mut retime = info("org");
    retime.retimes = vec![
        Retime {
            just_in: 1001,
            just_out: 1010,
            start_frame: Some(1),
            duration: Some(20),
            percent: Some(50.0),
        },
        Retime {
            just_in: 1011,
            just_out: 1020,
            start_frame: Some(21),
            duration: Some(5),
            percent: Some(200.0),
        },
    ];
    let r = Registration::new(&retime, &o, &t);
    let cut = r.cut.unwrap();
    assert_eq!(cut.sg_cut_out, 1000 + 25);
    assert_eq!(cut.sg_retime_duration.as_deref(), Some("20\n5"));
    assert_eq!(cut.sg_retime_percent.as_deref(), Some("50%\n200%"));
    assert_eq!(r.version.sg_cut_duration, 25);
}

#[test]
fn the_tracker_kind_comes_from_settings() {
    let mut s = Settings::defaults().unwrap();
    s.tracker.kind = "shotgrid".into();
    let err = open_tracker(&s).err().unwrap();
    assert!(matches!(err, TrackerError::Config(_)));
    assert!(err.to_string().contains("shotgrid.site"), "{err}");
    assert_eq!(err.class(), ErrorClass::Permanent);
    s.tracker.kind = "local".into();
    assert!(open_tracker(&s).is_ok());
    s.tracker.local_dir = "../outside".into();
    assert!(matches!(open_tracker(&s), Err(TrackerError::Config(_))));
}
