//! The publish planner on real folders: grouping, versions from disk and tracker,
//! graph shapes, deterministic ids, and the refusal of every bad row at once.

use std::path::{Path, PathBuf};

use iom::config::Settings;
use iom::error::{Classify, ErrorClass};
use iom::plan::{
    plan, plan_numbered, EarlierPublish, PlanError, PlanOptions, PublishInfoKey, RowError,
};
use iom::sample::{write_plate, PlateSpec};
use iom::scanlist::Row;
use iom::task::{task_id, Graph, Source, Step, StepKind};

/// A project root and a delivery folder in a temporary directory.
struct Fixture {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    delivery: PathBuf,
    settings: Settings,
}

fn fixture() -> Fixture {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("show").join("demo");
    let delivery = tmp.path().join("delivery");
    std::fs::create_dir_all(&root).unwrap();
    std::fs::create_dir_all(&delivery).unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.project.root = root.clone();
    settings.project.name = "demo".into();
    Fixture {
        _tmp: tmp,
        root,
        delivery,
        settings,
    }
}

impl Fixture {
    fn opts(&self) -> PlanOptions {
        PlanOptions {
            delivery_root: Some(self.delivery.clone()),
            ..PlanOptions::default()
        }
    }

    /// A checked 10-frame EXR row of `shot`, type `org`, in `delivery/<dir>`.
    fn row(&self, shot: &str, dir: &str, head: &str) -> Row {
        Row {
            check: true,
            shot_name: shot.into(),
            seq_type: "org".into(),
            scan_path: self.delivery.join(dir).display().to_string(),
            scan_name: head.into(),
            clip_name: "A001C003.".into(),
            pad: "%04d".into(),
            ext: "exr".into(),
            resolution: "64 x 36".into(),
            start_frame: Some(1001),
            end_frame: Some(1010),
            duration: Some(10),
            timecode_in: "01:00:00:00".into(),
            timecode_out: "01:00:00:09".into(),
            just_in: Some(1001),
            just_out: Some(1010),
            framerate: Some(24.0),
            ..Row::default()
        }
    }

    fn plan(&self, rows: &[Row]) -> Result<iom::plan::Plan, PlanError> {
        plan(rows, &self.settings, &self.opts(), &|_| vec![])
    }

    /// `P/seq/<seq>/<shot>/plate/<type>` (the default layout).
    fn type_dir(&self, shot: &str, ty: &str) -> PathBuf {
        let seq = shot.split('_').next().unwrap();
        self.root
            .join("seq")
            .join(seq)
            .join(shot)
            .join("plate")
            .join(ty)
    }
}

fn row_errors(r: Result<iom::plan::Plan, PlanError>) -> Vec<RowError> {
    match r {
        Err(PlanError::Rows(v)) => v,
        Err(e) => panic!("expected row errors, got {e}"),
        Ok(p) => panic!("expected row errors, got {} graphs", p.graphs.len()),
    }
}

fn deps(g: &Graph, kind: StepKind) -> Vec<StepKind> {
    let n = g
        .node(&task_id(&g.id, kind, ""))
        .unwrap_or_else(|| panic!("no {kind} node"));
    let mut d: Vec<StepKind> = n
        .deps
        .iter()
        .map(|d| g.node(d).unwrap().step.kind())
        .collect();
    d.sort();
    d
}

fn kinds(g: &Graph) -> Vec<StepKind> {
    g.nodes.iter().map(|n| n.step.kind()).collect()
}

#[test]
fn rows_group_by_shot_scan_type_and_version() {
    let f = fixture();
    let mut a = f.row("ABC_0010", "r1", "plate.");
    a.just_in = Some(1003);
    a.just_out = Some(1005);
    a.retime_duration = Some(6);
    a.retime_percent = Some(50.0);
    a.retime_start_frame = Some(1);
    a.timecode_in = "01:00:00:02".into();
    a.timecode_out = "01:00:00:04".into();
    let mut b = f.row("ABC_0010", "r1", "plate.");
    b.just_in = Some(1001);
    b.just_out = Some(1002);
    b.retime_duration = Some(4);
    b.retime_percent = Some(-50.0);
    b.retime_start_frame = Some(7);
    b.timecode_in = "01:00:00:00".into();
    b.timecode_out = "01:00:00:01".into();
    let mut c = f.row("ABC_0010", "r1", "plate.");
    c.seq_type = "ref".into();
    let d = f.row("ABC_0020", "r2", "other.");

    let p = f.plan(&[a, b, c, d]).unwrap();
    assert_eq!(p.graphs.len(), 3, "{:#?}", p.graphs);
    let g = &p.graphs[0];
    assert_eq!(g.info.shot, "ABC_0010");
    assert_eq!(g.info.seq, "ABC");
    assert_eq!(g.info.seq_type, "org");
    assert_eq!(g.info.retimes.len(), 2);
    assert_eq!(g.info.retimes[0].just_in, 1003);
    assert_eq!(g.info.retimes[0].duration, Some(6));
    assert_eq!(g.info.retimes[1].percent, Some(-50.0));
    assert_eq!(g.info.retimes[1].start_frame, Some(7));
    assert_eq!((g.info.just_in, g.info.just_out), (1001, 1005));
    assert_eq!(g.info.timecode_in, "01:00:00:00");
    assert_eq!(g.info.timecode_out, "01:00:00:04");
    match &g.nodes[0].step {
        Step::Probe {
            source: Source::Sequence {
                first, last, pad, ..
            },
            ..
        } => assert_eq!((*first, *last, *pad), (1001, 1005, 4)),
        s => panic!("first node is {s:?}"),
    }
    // A different type is another publish; a plain single row has no retimes.
    assert_eq!(p.graphs[1].info.seq_type, "ref");
    assert!(p.graphs[1].info.retimes.is_empty());
    assert_eq!(p.graphs[2].info.shot, "ABC_0020");
    assert_ne!(p.graphs[0].id, p.graphs[1].id);

    // An explicit version is part of the key: v2 and auto are two publishes.
    let mut v2 = f.row("ABC_0010", "r1", "plate.");
    v2.version = Some(2);
    let p = f.plan(&[f.row("ABC_0010", "r1", "plate."), v2]).unwrap();
    assert_eq!(p.graphs.len(), 2);
    let versions: Vec<u32> = p.graphs.iter().map(|g| g.info.version).collect();
    // The auto group skips the version the other group asks for.
    assert_eq!(versions, vec![3, 2]);
}

#[test]
fn unchecked_rows_are_skipped() {
    let f = fixture();
    let mut off = f.row("ABC_0010", "r1", "plate.");
    off.check = false;
    // Garbage in an unchecked row does not matter.
    let mut junk = f.row("../../etc", "r1", "x.");
    junk.check = false;
    let on = f.row("ABC_0020", "r2", "plate.");
    let p = f.plan(&[off, junk, on]).unwrap();
    assert_eq!(p.graphs.len(), 1);
    assert_eq!(p.graphs[0].info.shot, "ABC_0020");
    assert_eq!(p.skipped.len(), 2, "{:?}", p.skipped);
    assert!(p.skipped[0].starts_with("row 2:"), "{:?}", p.skipped);
    assert!(p.skipped[1].starts_with("row 3:"), "{:?}", p.skipped);

    let none = f.plan(&[]).unwrap();
    assert!(none.graphs.is_empty());
}

#[test]
fn auto_version_follows_disk_and_tracker() {
    let f = fixture();
    let dir = f.type_dir("ABC_0010", "org");
    for v in ["v001", "v002", "v003_jpg", "notes", "vfinal"] {
        std::fs::create_dir_all(dir.join(v)).unwrap();
    }
    let rows = [f.row("ABC_0010", "r1", "plate.")];
    let p = f.plan(&rows).unwrap();
    let g = &p.graphs[0];
    assert_eq!(g.info.version, 4);
    let copy = g.node(&task_id(&g.id, StepKind::Copy, "")).unwrap();
    let Step::Copy { output, .. } = &copy.step else {
        panic!("{copy:?}")
    };
    assert_eq!(output.frames_dir, dir.join("v004"));
    assert_eq!(output.plate_name, "ABC_0010_org_v004");
    assert_eq!(output.jpg_dir, dir.join("v004_jpg"));
    assert_eq!(output.jpg_2k_dir, dir.join("v004_jpg_2k"));
    assert_eq!(output.plate_dir, dir.parent().unwrap());
    assert_eq!((output.first_frame, output.pad), (1001, 4));
    assert_eq!(output.ext, "exr");
    assert!(g.id.0.starts_with("ABC_0010_org_v004-"), "{}", g.id);
    assert!(g.work_dir.starts_with(f.root.join(".iom/publishes")));
    assert!(g.work_dir.ends_with(&g.id.0));

    // Another type of the same shot has its own series.
    let mut r = f.row("ABC_0010", "r1", "plate.");
    r.seq_type = "src".into();
    assert_eq!(f.plan(&[r]).unwrap().graphs[0].info.version, 1);

    // The tracker wins when it knows a higher version, and is asked by shot and type.
    let asked = std::cell::RefCell::new(Vec::new());
    let tracker = |k: &PublishInfoKey| {
        asked.borrow_mut().push(k.clone());
        vec![2, 7, 5]
    };
    let p = plan(&rows, &f.settings, &f.opts(), &tracker).unwrap();
    assert_eq!(p.graphs[0].info.version, 8);
    assert_eq!(
        asked.borrow().as_slice(),
        &[PublishInfoKey {
            project: "demo".into(),
            seq: "ABC".into(),
            shot: "ABC_0010".into(),
            seq_type: "org".into(),
        }]
    );
    // A lower tracker version does not pull the disk's down.
    let p = plan(&rows, &f.settings, &f.opts(), &|_| vec![1]).unwrap();
    assert_eq!(p.graphs[0].info.version, 4);

    // Two different scans of one shot and type, both automatic: consecutive versions.
    let p = f
        .plan(&[
            f.row("ABC_0010", "r1", "plate."),
            f.row("ABC_0010", "r2", "second."),
        ])
        .unwrap();
    let v: Vec<u32> = p.graphs.iter().map(|g| g.info.version).collect();
    assert_eq!(v, vec![4, 5]);

    // The override wins over everything.
    let opts = PlanOptions {
        version_override: Some(42),
        ..f.opts()
    };
    let p = plan(&rows, &f.settings, &opts, &|_| vec![50]).unwrap();
    assert_eq!(p.graphs[0].info.version, 42);
}

/// Publishing the same rows again continues their own unfinished version
/// (same graph, no `--force`) instead of numbering a new one over a
/// half-published folder; a finished, or differently planned, earlier publish
/// gets the next version as before.
#[test]
fn the_same_rows_continue_their_unfinished_version() {
    let f = fixture();
    let dir = f.type_dir("ABC_0010", "org");
    std::fs::create_dir_all(dir.join("v001")).unwrap();
    std::fs::write(dir.join("v001/ABC_0010_org_v001.1001.exr"), b"x").unwrap();
    let r = f.row("ABC_0010", "r1", "plate.");
    let rows = [(2, r.clone())];
    let first = plan(
        std::slice::from_ref(&r),
        &f.settings,
        &f.opts(),
        &|_| vec![],
    )
    .unwrap();
    assert_eq!(first.graphs[0].info.version, 2, "v001 is on disk");
    // The graph this plan would make of v001: planned with v001 forced.
    let forced_v1 = PlanOptions {
        force: true,
        version_override: Some(1),
        ..f.opts()
    };
    let v1 = plan(
        std::slice::from_ref(&r),
        &f.settings,
        &forced_v1,
        &|_| vec![],
    )
    .unwrap()
    .graphs
    .remove(0);
    let earlier = |state: &str, same_graph: bool| {
        let v1 = v1.clone();
        let state = state.to_string();
        move |g: &Graph| {
            (g.id == v1.id).then(|| EarlierPublish {
                state: state.clone(),
                unfinished: state != "succeeded",
                running: state == "running",
                same: same_graph && *g == v1,
            })
        }
    };

    let p = plan_numbered(
        &rows,
        &f.settings,
        &f.opts(),
        &|_| vec![1],
        &earlier("failed", true),
    )
    .unwrap();
    assert_eq!(p.graphs[0], v1, "the same graph, continued");
    assert!(
        p.warnings.is_empty(),
        "no --force warning: {:?}",
        p.warnings
    );
    assert_eq!(p.notes.len(), 1, "{:?}", p.notes);
    let note = &p.notes[0];
    assert!(
        note.contains("row 2: continuing v001 of ABC_0010 org")
            && note.contains(&v1.id.0)
            && note.contains("failed"),
        "{note}"
    );

    // Interrupted or still running: continued too (the run resends or waits).
    for state in ["interrupted", "running"] {
        let p = plan_numbered(
            &rows,
            &f.settings,
            &f.opts(),
            &|_| vec![],
            &earlier(state, true),
        )
        .unwrap();
        assert_eq!(p.graphs[0].info.version, 1, "{state}");
    }

    // Finished: the next version, no note.
    let p = plan_numbered(
        &rows,
        &f.settings,
        &f.opts(),
        &|_| vec![],
        &earlier("succeeded", true),
    )
    .unwrap();
    assert_eq!(p.graphs[0].info.version, 2);
    assert!(p.notes.is_empty() && p.warnings.is_empty());

    // Planned differently since (rows or settings): the next version, and a
    // warning naming the earlier publish and how to finish it.
    let p = plan_numbered(
        &rows,
        &f.settings,
        &f.opts(),
        &|_| vec![],
        &earlier("failed", false),
    )
    .unwrap();
    assert_eq!(p.graphs[0].info.version, 2);
    assert!(p.notes.is_empty());
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(
        p.warnings[0].contains(&format!("iom resume {} --retry-failed", v1.id)),
        "{:?}",
        p.warnings
    );

    // The version this plan takes (v002) was planned before from other rows or
    // settings and published nothing (a probe failed, say): replaced, unless it
    // is still running.
    let v2 = plan(
        std::slice::from_ref(&r),
        &f.settings,
        &f.opts(),
        &|_| vec![],
    )
    .unwrap()
    .graphs
    .remove(0);
    let other_v2 = |state: &'static str| {
        let id = v2.id.clone();
        move |g: &Graph| {
            (g.id == id).then(|| EarlierPublish {
                state: state.into(),
                unfinished: state != "succeeded",
                running: state == "running",
                same: false,
            })
        }
    };
    let p = plan_numbered(
        &rows,
        &f.settings,
        &f.opts(),
        &|_| vec![],
        &other_v2("failed"),
    )
    .unwrap();
    assert_eq!(p.graphs[0], v2);
    assert_eq!(p.replaces, vec![v2.id.clone()]);
    assert!(
        p.notes.len() == 1 && p.notes[0].contains("replaces that plan"),
        "{:?}",
        p.notes
    );
    let errs = row_errors(plan_numbered(
        &rows,
        &f.settings,
        &f.opts(),
        &|_| vec![],
        &other_v2("running"),
    ));
    assert!(
        errs.len() == 1 && errs[0].message.contains("is being published now"),
        "{errs:?}"
    );

    // Asked for by number: the unfinished publish of v001 needs no --force,
    // whether the folder or the tracker holds it.
    let mut r1 = r.clone();
    r1.version = Some(1);
    let p = plan_numbered(
        &[(2, r1.clone())],
        &f.settings,
        &f.opts(),
        &|_| vec![1],
        &earlier("failed", true),
    )
    .unwrap();
    assert_eq!(p.graphs[0], v1);
    let errs = row_errors(plan_numbered(
        &[(2, r1)],
        &f.settings,
        &f.opts(),
        &|_| vec![1],
        &earlier("succeeded", true),
    ));
    assert_eq!(errs.len(), 2, "tracker and folder: {errs:?}");
}

#[test]
fn an_existing_version_needs_force() {
    let f = fixture();
    let dir = f.type_dir("ABC_0010", "org");
    std::fs::create_dir_all(dir.join("v003")).unwrap();
    std::fs::write(dir.join("v003/ABC_0010_org_v003.1001.exr"), b"x").unwrap();
    std::fs::create_dir_all(dir.join("v004")).unwrap(); // empty: usable
    let mut r = f.row("ABC_0010", "r1", "plate.");
    r.version = Some(3);

    let errs = row_errors(f.plan(std::slice::from_ref(&r)));
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert_eq!(errs[0].row, 2);
    assert_eq!(errs[0].column, Some("version"));
    let msg = &errs[0].message;
    assert!(
        msg.contains("version v003 of ABC_0010 org already exists at")
            && msg.contains(&dir.join("v003").display().to_string())
            && msg.contains("--force")
            && msg.contains("leave `version` empty"),
        "{msg}"
    );

    let forced = PlanOptions {
        force: true,
        ..f.opts()
    };
    let p = plan(std::slice::from_ref(&r), &f.settings, &forced, &|_| vec![]).unwrap();
    assert_eq!(p.graphs[0].info.version, 3);
    assert_eq!(p.warnings.len(), 1, "{:?}", p.warnings);
    assert!(p.warnings[0].contains("--force"), "{:?}", p.warnings);

    // An existing but empty folder is no publish yet.
    r.version = Some(4);
    assert_eq!(
        f.plan(std::slice::from_ref(&r)).unwrap().graphs[0]
            .info
            .version,
        4
    );

    // A version the tracker already registered is refused the same way.
    r.version = Some(9);
    let errs = row_errors(plan(
        std::slice::from_ref(&r),
        &f.settings,
        &f.opts(),
        &|_| vec![9],
    ));
    assert!(errs[0].message.contains("tracker"), "{errs:?}");
    assert!(plan(std::slice::from_ref(&r), &f.settings, &forced, &|_| vec![9]).is_ok());

    // An existing version asked for with --version: the error names the flag,
    // not a scanlist column the user never typed into.
    r.version = None;
    let by_flag = PlanOptions {
        version_override: Some(3),
        ..f.opts()
    };
    let errs = row_errors(plan(
        std::slice::from_ref(&r),
        &f.settings,
        &by_flag,
        &|_| vec![3],
    ));
    assert_eq!(errs.len(), 2, "tracker and folder: {errs:?}");
    for e in &errs {
        assert_eq!(e.column, None, "{e:?}");
        assert!(e.message.contains("drop --version"), "{e:?}");
        assert!(!e.message.contains("leave `version` empty"), "{e:?}");
    }
}

#[test]
fn planning_is_deterministic() {
    let f = fixture();
    // Real frames, so the on-disk probe of the extension runs too.
    let spec = PlateSpec::exr("r1", "plate.", 16, 8, 3);
    write_plate(&f.delivery, &spec).unwrap();
    let mut a = f.row("ABC_0010", "r1", "plate.");
    a.just_out = Some(1003);
    a.end_frame = Some(1003);
    let mut b = a.clone();
    b.seq_type = "ref".into();
    b.version = Some(5);
    let rows = vec![a, b];
    let p1 = f.plan(&rows).unwrap();
    let p2 = f.plan(&rows).unwrap();
    assert_eq!(p1, p2);
    let j1 = serde_json::to_string(&p1.graphs).unwrap();
    let j2 = serde_json::to_string(&p2.graphs).unwrap();
    assert_eq!(j1, j2);
    // The JSON round-trips to the same graphs.
    let back: Vec<Graph> = serde_json::from_str(&j1).unwrap();
    assert_eq!(back, p1.graphs);
    // Ids depend on the key, not on the run.
    for g in &p1.graphs {
        assert_eq!(
            g.id,
            iom::task::graph_id(
                "demo",
                &g.info.shot,
                "plate.",
                &g.info.seq_type,
                g.info.version
            )
        );
        for n in &g.nodes {
            assert_eq!(n.id, task_id(&g.id, n.step.kind(), ""));
        }
    }
}

#[test]
fn graph_shape_follows_the_enabled_steps() {
    use StepKind::*;
    let mut f = fixture();
    let rows = [f.row("ABC_0010", "r1", "plate.")];

    let g = f.plan(&rows).unwrap().graphs.remove(0);
    assert_eq!(
        kinds(&g),
        vec![Probe, Copy, Thumbnail, Proxy, Review, Register, Cleanup]
    );
    assert!(deps(&g, Probe).is_empty());
    assert_eq!(deps(&g, Copy), vec![Probe]);
    for k in [Thumbnail, Proxy, Review] {
        assert_eq!(deps(&g, k), vec![Copy]);
    }
    assert_eq!(deps(&g, Register), vec![Copy, Thumbnail, Proxy, Review]);
    assert_eq!(deps(&g, Cleanup), vec![Register]);
    assert_eq!(g.roots().len(), 1);
    let labels: Vec<&str> = g.nodes.iter().map(|n| n.label.as_str()).collect();
    assert_eq!(
        labels,
        vec![
            "probe",
            "copy org",
            "thumbnail",
            "render jpg",
            "render mp4",
            "sg version",
            "rm"
        ]
    );
    match &g.nodes[2].step {
        Step::Thumbnail { colorspace, .. } => assert_eq!(colorspace, "ACES - ACEScg"),
        s => panic!("{s:?}"),
    }
    let Step::Register { info, .. } = &g.nodes[5].step else {
        panic!()
    };
    assert_eq!(info, &g.info);

    let tree = g.tree(&|_| None);
    for l in &labels {
        assert!(tree.contains(l), "{l} missing from\n{tree}");
    }
    assert!(tree.lines().nth(1).unwrap().contains("rm"), "{tree}");
    assert!(tree.contains("ABC_0010 v001"), "{tree}");

    f.settings.publish.steps = vec![Probe, Copy, Register];
    let g = f.plan(&rows).unwrap().graphs.remove(0);
    assert_eq!(kinds(&g), vec![Probe, Copy, Register]);
    assert_eq!(deps(&g, Register), vec![Copy]);

    // Without register, cleanup waits for every leaf.
    f.settings.publish.steps = vec![Proxy, Review, Cleanup];
    let g = f.plan(&rows).unwrap().graphs.remove(0);
    assert_eq!(kinds(&g), vec![Probe, Copy, Proxy, Review, Cleanup]);
    assert_eq!(deps(&g, Cleanup), vec![Proxy, Review]);

    // probe and copy are always there.
    f.settings.publish.steps = vec![Cleanup];
    let g = f.plan(&rows).unwrap().graphs.remove(0);
    assert_eq!(kinds(&g), vec![Probe, Copy, Cleanup]);
    assert_eq!(deps(&g, Cleanup), vec![Copy]);
}

#[test]
fn sources_movies_and_extension_case() {
    let f = fixture();
    // A delivery with upper-case extensions: the source keeps the on-disk case,
    // the published frames are lower case.
    let up = f.delivery.join("up");
    std::fs::create_dir_all(&up).unwrap();
    for n in 1001..=1010 {
        std::fs::write(up.join(format!("plate.{n}.EXR")), b"x").unwrap();
    }
    let p = f.plan(&[f.row("ABC_0010", "up", "plate.")]).unwrap();
    let g = &p.graphs[0];
    let Step::Copy { source, output, .. } = &g.nodes[1].step else {
        panic!()
    };
    match source {
        Source::Sequence { dir, ext, .. } => {
            assert_eq!(dir, &up);
            assert_eq!(ext, "EXR");
        }
        s => panic!("{s:?}"),
    }
    assert_eq!(source.frame_path(1001).unwrap(), up.join("plate.1001.EXR"));
    assert_eq!(output.ext, "exr");

    // A movie: path = scan_path/scan_name, frames from just_in/just_out.
    let mut m = f.row("ABC_0030", "mov", "A001C003.MOV");
    m.ext = "mov".into();
    m.pad = String::new();
    m.start_frame = Some(1);
    m.end_frame = Some(48);
    m.just_in = Some(5);
    m.just_out = Some(20);
    let p = f.plan(&[m.clone()]).unwrap();
    let Step::Probe { source, .. } = &p.graphs[0].nodes[0].step else {
        panic!()
    };
    assert_eq!(
        source,
        &Source::Movie {
            path: f.delivery.join("mov/A001C003.MOV"),
            first: 5,
            last: 20
        }
    );
    let Step::Copy { output, .. } = &p.graphs[0].nodes[1].step else {
        panic!()
    };
    assert_eq!(output.ext, "mov");

    // A movie whose file name does not match its extension.
    m.scan_name = "A001C003.mxf".into();
    let errs = row_errors(f.plan(&[m]));
    assert_eq!(errs[0].column, Some("scan_name"), "{errs:?}");
}

#[test]
fn colour_space_comes_from_options_project_or_default() {
    let mut f = fixture();
    let rows = [f.row("ABC_0010", "r1", "plate.")];
    assert_eq!(
        f.plan(&rows).unwrap().graphs[0].info.colorspace,
        "ACES - ACEScg"
    );
    f.settings.colour.projects.insert(
        "demo".into(),
        iom::config::ProjectColourSettings {
            colorspace: Some("AlexaV3LogC".into()),
            lut: None,
        },
    );
    assert_eq!(
        f.plan(&rows).unwrap().graphs[0].info.colorspace,
        "AlexaV3LogC"
    );
    let opts = PlanOptions {
        colorspace: Some("rec709".into()),
        ..f.opts()
    };
    let p = plan(&rows, &f.settings, &opts, &|_| vec![]).unwrap();
    assert_eq!(p.graphs[0].info.colorspace, "rec709");
    let opts = PlanOptions {
        colorspace: Some("Nope".into()),
        ..f.opts()
    };
    let e = plan(&rows, &f.settings, &opts, &|_| vec![]).unwrap_err();
    assert!(
        matches!(&e, PlanError::Settings { key, .. } if key == "--colorspace"),
        "{e}"
    );
}

/// One bad row per case: (what is wrong, the column expected in the error).
#[test]
fn bad_rows_are_refused_with_row_and_column() {
    let f = fixture();
    type Mutate = Box<dyn Fn(&mut Row)>;
    let outside = f.delivery.parent().unwrap().join("elsewhere");
    let dotdot = format!("{}/r1/../../etc", f.delivery.display());
    let cases: Vec<(&str, Mutate, Option<&str>)> = vec![
        (
            "traversal in shot",
            Box::new(|r| r.shot_name = "../../etc".into()),
            Some("shot_name"),
        ),
        (
            "slash in shot",
            Box::new(|r| r.shot_name = "ABC/0010".into()),
            Some("shot_name"),
        ),
        (
            "backslash in shot",
            Box::new(|r| r.shot_name = "ABC\\0010".into()),
            Some("shot_name"),
        ),
        (
            "shot ..",
            Box::new(|r| r.shot_name = "..".into()),
            Some("shot_name"),
        ),
        (
            "empty shot",
            Box::new(|r| r.shot_name = "  ".into()),
            Some("shot_name"),
        ),
        (
            "empty seq",
            Box::new(|r| r.shot_name = "_0010".into()),
            Some("shot_name"),
        ),
        (
            "NUL in shot",
            Box::new(|r| r.shot_name = "ABC\0_0010".into()),
            Some("shot_name"),
        ),
        (
            "long shot",
            Box::new(|r| r.shot_name = format!("ABC_{}", "0".repeat(200))),
            Some("shot_name"),
        ),
        (
            "type not allowed",
            Box::new(|r| r.seq_type = "comp".into()),
            Some("type"),
        ),
        (
            "type with traversal",
            Box::new(|r| r.seq_type = "../org".into()),
            Some("type"),
        ),
        (
            "relative scan_path",
            Box::new(|r| r.scan_path = "delivery/r1".into()),
            Some("scan_path"),
        ),
        (
            "scan_path outside the delivery",
            Box::new(move |r| r.scan_path = outside.display().to_string()),
            Some("scan_path"),
        ),
        (
            "scan_path with ..",
            Box::new(move |r| r.scan_path = dotdot.clone()),
            Some("scan_path"),
        ),
        (
            "scan_name with a slash",
            Box::new(|r| r.scan_name = "../x.".into()),
            Some("scan_name"),
        ),
        (
            "empty ext",
            Box::new(|r| r.ext = String::new()),
            Some("ext"),
        ),
        (
            "ext with a dot",
            Box::new(|r| r.ext = "e.xr".into()),
            Some("ext"),
        ),
        (
            "just_in after just_out",
            Box::new(|r| {
                r.just_in = Some(1008);
                r.just_out = Some(1003)
            }),
            Some("just_in"),
        ),
        (
            "missing just_out",
            Box::new(|r| r.just_out = None),
            Some("just_out"),
        ),
        (
            "missing start_frame",
            Box::new(|r| r.start_frame = None),
            Some("start_frame"),
        ),
        ("bad pad", Box::new(|r| r.pad = "%4x".into()), Some("pad")),
        (
            "empty pad",
            Box::new(|r| r.pad = String::new()),
            Some("pad"),
        ),
        (
            "huge just_out",
            Box::new(|r| {
                r.just_out = Some(i64::MAX);
                r.end_frame = None
            }),
            Some("just_out"),
        ),
        (
            "huge range",
            Box::new(|r| {
                r.start_frame = Some(0);
                r.just_in = Some(0);
                r.just_out = Some(500_000_000);
                r.end_frame = None
            }),
            Some("just_out"),
        ),
        (
            "negative frame",
            Box::new(|r| {
                r.start_frame = Some(-5);
                r.just_in = Some(-5)
            }),
            Some("start_frame"),
        ),
        (
            "huge version",
            Box::new(|r| r.version = Some(u32::MAX)),
            Some("version"),
        ),
        (
            "version 0",
            Box::new(|r| r.version = Some(0)),
            Some("version"),
        ),
        (
            "infinite retime",
            Box::new(|r| r.retime_percent = Some(f64::INFINITY)),
            Some("retime_percent"),
        ),
    ];
    for (what, mutate, column) in &cases {
        let mut r = f.row("ABC_0010", "r1", "plate.");
        mutate(&mut r);
        let good = f.row("ABC_0020", "r2", "plate.");
        let errs = row_errors(f.plan(&[good, r]));
        assert!(!errs.is_empty(), "{what}: no error");
        assert!(
            errs.iter().all(|e| e.row == 3),
            "{what}: wrong row in {errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.column == *column),
            "{what}: expected column {column:?} in {errs:?}"
        );
        for e in &errs {
            assert!(!e.message.is_empty(), "{what}");
            let shown = e.to_string();
            assert!(shown.starts_with("row 3"), "{what}: {shown}");
        }
    }
    // Nothing was published: the traversal row never reached the disk.
    assert!(!f.root.join("seq").exists());
    assert!(!f.delivery.parent().unwrap().join("etc").exists());
}

#[test]
fn templates_that_escape_the_root_are_refused() {
    for (key, template) in [
        ("frames", "../../outside/{shot}/{version}"),
        ("frames", "/etc/{shot}/{version}"),
        ("frames", "seq/{shot}/../../../x/{version}"),
        ("jpg", "../{shot}_{version}_jpg"),
        ("work", "../../tmp/{graph}"),
    ] {
        let mut f = fixture();
        match key {
            "frames" => f.settings.publish.frames_dir = template.into(),
            "jpg" => f.settings.publish.jpg_dir = template.into(),
            _ => f.settings.publish.work_dir = template.into(),
        }
        let rows = [
            f.row("ABC_0010", "r1", "plate."),
            f.row("ABC_0020", "r2", "plate."),
        ];
        let errs = row_errors(f.plan(&rows));
        let lines: Vec<usize> = errs.iter().map(|e| e.row).collect();
        assert_eq!(lines, vec![2, 3], "{template}: {errs:?}");
        for e in &errs {
            assert_eq!(e.column, None, "{template}");
            assert!(
                e.message.contains("publish.") && e.message.contains("template"),
                "{template}: {}",
                e.message
            );
        }
        assert!(
            !f.root.parent().unwrap().join("outside").exists(),
            "{template}"
        );
    }

    // Broken templates stop the plan before any row.
    for (template, needle) in [
        ("seq/{shot}/{verison}", "verison"),
        ("seq/{shot}/plate", "{version}"),
        // Without {version} every version would land in one folder: refused as a
        // setting before its escape is even looked at.
        ("../../outside/{shot}", "{version}"),
        ("seq/{plate}/{version}", "{version}"),
    ] {
        let mut f = fixture();
        f.settings.publish.frames_dir = template.into();
        let e = f.plan(&[f.row("ABC_0010", "r1", "plate.")]).unwrap_err();
        assert!(
            matches!(&e, PlanError::Settings { key, .. } if key == "publish.frames_dir"),
            "{template}: {e}"
        );
        assert!(e.to_string().contains(needle), "{template}: {e}");
    }
    let mut f = fixture();
    f.settings.publish.work_dir = ".iom/shared".into();
    assert!(matches!(
        f.plan(&[f.row("ABC_0010", "r1", "plate.")]),
        Err(PlanError::Settings { .. })
    ));
}

#[test]
fn every_bad_row_is_reported_at_once() {
    let f = fixture();
    let mut a = f.row("../../etc", "r1", "plate.");
    a.seq_type = "nope".into();
    let good = f.row("ABC_0010", "r1", "plate.");
    let mut b = f.row("ABC_0020", "r2", "plate.");
    b.scan_path = "relative/path".into();
    let mut c = f.row("ABC_0030", "r3", "plate.");
    c.just_in = Some(2000);
    let e = f.plan(&[a, good, b, c]).unwrap_err();
    assert_eq!(e.class(), ErrorClass::Permanent);
    let errs = e.row_errors().to_vec();
    let found: Vec<(usize, Option<&str>)> = errs.iter().map(|e| (e.row, e.column)).collect();
    assert_eq!(
        found,
        vec![
            (2, Some("shot_name")),
            (2, Some("type")),
            (4, Some("scan_path")),
            (5, Some("just_in")),
        ]
    );
    // Display: a summary line, then one line per error.
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 5, "{text}");
    assert!(lines[0].contains("nothing was published"), "{text}");
    assert!(
        lines[1]
            .trim_start()
            .starts_with("row 2, column shot_name:"),
        "{text}"
    );
    assert!(
        lines[4].trim_start().starts_with("row 5, column just_in:"),
        "{text}"
    );

    // Given sheet row numbers are used as they are.
    let mut bad = f.row("ABC_0040", "r4", "plate.");
    bad.pad = "?".into();
    let errs = row_errors(plan_numbered(
        &[(7, f.row("ABC_0050", "r5", "plate.")), (12, bad)],
        &f.settings,
        &f.opts(),
        &|_| vec![],
        &|_| None,
    ));
    assert_eq!(errs.len(), 1);
    assert_eq!((errs[0].row, errs[0].column), (12, Some("pad")));
}

#[test]
fn conflicting_groups_are_refused() {
    let f = fixture();
    // Two scans of one shot, both asked as v002: same frames folder.
    let mut a = f.row("ABC_0010", "r1", "plate.");
    a.version = Some(2);
    let mut b = f.row("ABC_0010", "r2", "other.");
    b.version = Some(2);
    let errs = row_errors(f.plan(&[a, f.row("ABC_0020", "r3", "x."), b]));
    let found: Vec<usize> = errs.iter().map(|e| e.row).collect();
    assert_eq!(found, vec![2, 4], "{errs:?}");
    assert!(errs[0].message.contains("row 4"), "{errs:?}");
    assert!(errs[1].message.contains("row 2"), "{errs:?}");

    // Rows of one group that point at different scans.
    let a = f.row("ABC_0010", "r1", "plate.");
    let mut b = f.row("ABC_0010", "r1", "plate.");
    b.pad = "%05d".into();
    let errs = row_errors(f.plan(&[a, b]));
    assert_eq!((errs[0].row, errs[0].column), (3, Some("pad")), "{errs:?}");
}

#[test]
fn delivery_root_is_optional_but_scan_paths_stay_absolute() {
    let f = fixture();
    let mut r = f.row("ABC_0010", "r1", "plate.");
    r.scan_path = "/somewhere/else/r1/".into();
    // No delivery root: any absolute folder is accepted (normalised).
    let p = plan(
        std::slice::from_ref(&r),
        &f.settings,
        &PlanOptions::default(),
        &|_| vec![],
    )
    .unwrap();
    let Step::Probe { source, .. } = &p.graphs[0].nodes[0].step else {
        panic!()
    };
    assert_eq!(
        source.frame_path(1001).unwrap(),
        Path::new("/somewhere/else/r1/plate.1001.exr")
    );
    // With one, it must be inside.
    let errs = row_errors(f.plan(&[r]));
    assert_eq!(errs[0].column, Some("scan_path"));
    assert!(errs[0].message.contains("outside the delivery"), "{errs:?}");
}
