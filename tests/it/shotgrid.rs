//! ShotGrid registration against the strict fake site (`fake_shotgrid.rs`):
//! the entities and links a publish gives, re-publishing without duplicates,
//! every injected fault (5xx, 503 with Retry-After, a timeout after a create
//! committed, a 401 mid-run, a slow upload) still ending with exactly one of
//! each entity, token renewal, the three-step uploads, startup errors, and the
//! script key never leaving the secret store.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Map, Value};

use iom::config::{SecretRef, Settings, ShotgridSettings};
use iom::embedded::{self, EmbeddedOptions};
use iom::error::{Classify, ErrorClass};
use iom::sample::{self, PlateSpec};
use iom::store::{GraphState, WorkDir};
use iom::task::{PlateOutput, PublishInfo, TaskId};
use iom::tracker::{open_tracker, Registration, Tracker, TrackerError};

use super::fake_shotgrid::{FakeShotGrid, Fault};
use super::publish::{command, plan_rows, project_at, row, Project};

// ---------------------------------------------------------------------------
// Set-up
// ---------------------------------------------------------------------------

/// Settings for the fake: credentials from secret files in `secrets` (outside
/// any project tree), short timeouts and back-off.
fn sg_settings(fake: &FakeShotGrid, secrets: &Path) -> ShotgridSettings {
    let name = secrets.join("sg-script-name");
    let key = secrets.join("sg-script-key");
    std::fs::write(&name, format!("{}\n", fake.script_name())).unwrap();
    std::fs::write(&key, format!("{}\n", fake.script_key())).unwrap();
    ShotgridSettings {
        site: fake.url.clone(),
        script_name: SecretRef {
            env: None,
            file: Some(name),
        },
        script_key: SecretRef {
            env: None,
            file: Some(key),
        },
        task_id_field: "sg_iom_task_id".into(),
        connect_timeout_ms: 2_000,
        request_timeout_ms: 1_500,
        upload_timeout_ms: 1_500,
        max_attempts: 5,
        backoff_base_ms: 20,
        backoff_cap_ms: 2_000,
    }
}

struct Env {
    tmp: tempfile::TempDir,
    _secrets: tempfile::TempDir,
    fake: FakeShotGrid,
    settings: Settings,
    tracker: Arc<dyn Tracker>,
}

fn env() -> Env {
    env_with(|_| {})
}

fn env_with(setup: impl FnOnce(&FakeShotGrid)) -> Env {
    let tmp = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(tmp.path());
    setup(&fake);
    let mut settings = Settings::defaults().unwrap();
    settings.project.root = tmp.path().join("show/demo");
    settings.shotgrid = sg_settings(&fake, secrets.path());
    let tracker = open_tracker(&settings).unwrap();
    Env {
        tmp,
        _secrets: secrets,
        fake,
        settings,
        tracker,
    }
}

fn seq_of(shot: &str) -> String {
    shot.split('_').next().unwrap().to_string()
}

fn output(root: &Path, shot: &str, seq_type: &str, version: u32) -> PlateOutput {
    let plate = root.join(format!("show/demo/seq/{}/{shot}/plate", seq_of(shot)));
    PlateOutput {
        frames_dir: plate.join(format!("{seq_type}/v{version:03}")),
        plate_name: format!("{shot}_{seq_type}_v{version:03}"),
        ext: "exr".into(),
        first_frame: 1001,
        pad: 4,
        plate_dir: plate.clone(),
        jpg_dir: plate.join(format!("{seq_type}/v{version:03}_jpg")),
        jpg_2k_dir: plate.join(format!("{seq_type}/v{version:03}_jpg_2k")),
    }
}

fn info(shot: &str, seq_type: &str, version: u32) -> PublishInfo {
    PublishInfo {
        project: "demo".into(),
        seq: seq_of(shot),
        shot: shot.into(),
        seq_type: seq_type.into(),
        version,
        scan_name: "A001C003_plate.".into(),
        clip_name: "A001C003".into(),
        colorspace: "ACES - ACEScg".into(),
        fps: Some(24.0),
        resolution: "64 x 36".into(),
        timecode_in: "01:00:00:00".into(),
        timecode_out: "01:00:00:03".into(),
        just_in: 1001,
        just_out: 1004,
        retimes: vec![],
    }
}

/// A registration whose media files (movie, thumbnail, filmstrip) exist with
/// distinct contents when `media` is set.
fn registration(e: &Env, shot: &str, seq_type: &str, version: u32, media: bool) -> Registration {
    let o = output(e.tmp.path(), shot, seq_type, version);
    let r = Registration::new(
        &info(shot, seq_type, version),
        &o,
        &TaskId(format!("g-{shot}-{seq_type}-v{version}.register")),
    );
    if media {
        std::fs::create_dir_all(&o.plate_dir).unwrap();
        for m in &r.media {
            std::fs::write(&m.path, media_bytes(&m.field, &o.plate_name)).unwrap();
        }
    }
    r
}

fn media_bytes(field: &str, plate: &str) -> Vec<u8> {
    let mut b = format!("{field} of {plate}: ").into_bytes();
    b.extend((0..3000u32).map(|i| (i * 7 % 251) as u8));
    b
}

fn links(rec: &Map<String, Value>, field: &str) -> (String, i64) {
    let l = &rec[field];
    (
        l["type"].as_str().unwrap_or_default().to_string(),
        l["id"].as_i64().unwrap_or_default(),
    )
}

/// Exactly one Sequence, Shot, Version and PublishedFile, correctly linked, and
/// exactly one completed upload per media field of the Version.
fn assert_one_of_each(fake: &FakeShotGrid, media_fields: &[&str]) {
    let seqs = fake.entities("Sequence");
    let shots = fake.entities("Shot");
    let versions = fake.entities("Version");
    let files = fake.entities("PublishedFile");
    assert_eq!(seqs.len(), 1, "sequences: {seqs:#?}");
    assert_eq!(shots.len(), 1, "shots: {shots:#?}");
    assert_eq!(versions.len(), 1, "versions: {versions:#?}");
    assert_eq!(files.len(), 1, "published files: {files:#?}");
    let (seq, shot, version, file) = (&seqs[0], &shots[0], &versions[0], &files[0]);
    assert_eq!(
        links(shot, "sg_sequence"),
        ("Sequence".into(), seq["id"].as_i64().unwrap())
    );
    assert_eq!(
        links(version, "entity"),
        ("Shot".into(), shot["id"].as_i64().unwrap())
    );
    assert_eq!(
        links(file, "entity"),
        ("Shot".into(), shot["id"].as_i64().unwrap())
    );
    assert_eq!(
        links(file, "version"),
        ("Version".into(), version["id"].as_i64().unwrap())
    );
    let vid = version["id"].as_i64().unwrap();
    for field in media_fields {
        let n = fake
            .attachments()
            .iter()
            .filter(|a| a.entity == "Version" && a.id == vid && a.field == *field)
            .count();
        assert_eq!(
            n,
            1,
            "completed uploads into {field}: {:#?}",
            fake.attachments()
        );
    }
}

const MEDIA: [&str; 3] = ["sg_uploaded_movie", "image", "filmstrip_image"];

/// Registers one plate with all media under `fault` and checks the result.
fn under_fault(faults: &[(&str, Fault)]) -> Env {
    let e = env();
    for (label, f) in faults {
        e.fake.inject(label, f.clone());
    }
    let r = registration(&e, "ABC_0010", "org", 1, true);
    let reg = e
        .tracker
        .register(&r)
        .unwrap_or_else(|err| panic!("registration under {faults:?} failed: {err}"));
    assert_eq!(reg.uploaded, MEDIA);
    assert_one_of_each(&e.fake, &MEDIA);
    for (label, _) in faults {
        assert!(
            e.fake
                .requests()
                .iter()
                .any(|r| r.label == *label && r.fault.is_some()),
            "the fault on {label} was never served"
        );
    }
    e
}

// ---------------------------------------------------------------------------
// What a publish registers
// ---------------------------------------------------------------------------

/// An embedded project registering in the fake, whose LocalStorage `primary` is
/// rooted just above the project (the fake may be started before the project
/// exists, with any storage root).
fn sg_project(fake: &FakeShotGrid, secrets: &Path, steps: &str) -> Project {
    let mut p = project_at(steps, "", "iom");
    with_shotgrid(&mut p, fake, secrets);
    fake.remove("LocalStorage", "code", "primary");
    fake.add_storage("primary", p.root.parent().unwrap());
    p
}

/// Points a project's settings at the fake: the name from a secret file, the key
/// from `IOM_SHOTGRID_SCRIPT_KEY` or else a secret file (both in `secrets`).
pub(super) fn with_shotgrid(p: &mut Project, fake: &FakeShotGrid, secrets: &Path) {
    let s = sg_settings(fake, secrets);
    let mut yaml = std::fs::read_to_string(&p.config).unwrap();
    yaml.push_str(&format!(
        "shotgrid:\n  site: \"{}\"\n  script_name: {{ file: \"{}\" }}\n  script_key: {{ env: IOM_SHOTGRID_SCRIPT_KEY, file: \"{}\" }}\n  \
         request_timeout_ms: 1500\n  upload_timeout_ms: 1500\n  backoff_base_ms: 20\n  backoff_cap_ms: 2000\n",
        s.site,
        s.script_name.file.unwrap().display(),
        s.script_key.file.unwrap().display(),
    ));
    std::fs::write(&p.config, yaml).unwrap();
    p.settings = Settings::load_with(Some(&p.config), &|_| None, std::iter::empty()).unwrap();
}

#[test]
fn a_full_publish_gives_exactly_the_expected_entities_and_links() {
    let secrets = tempfile::tempdir().unwrap();
    // The fake's storage root is set once the project exists.
    let fake = FakeShotGrid::start(Path::new("/nonexistent"));
    let p = sg_project(
        &fake,
        secrets.path(),
        "probe, copy, thumbnail, register, cleanup",
    );

    let a = PlateSpec::exr("A001", "A001C003.", 64, 36, 4);
    let b = PlateSpec::exr("B002", "B002C004_", 32, 18, 3);
    let c = PlateSpec::exr("C003", "C003C001.", 32, 18, 2);
    for s in [&a, &b, &c] {
        sample::write_plate(&p.delivery, s).unwrap();
    }
    let mut ref_row = row(&p.delivery, &b, "ABC_0010");
    ref_row.seq_type = "ref".into();
    let mut src_row = row(&p.delivery, &c, "ABC_0020");
    src_row.seq_type = "src".into();
    let graphs = plan_rows(&p, &[row(&p.delivery, &a, "ABC_0010"), ref_row, src_row]);
    assert_eq!(graphs.len(), 3);
    // The org plate also has a review movie and a filmstrip (the media step's
    // outputs): all three are uploaded into its Version.
    let org_plate = p.root.join("seq/ABC/ABC_0010/plate");
    std::fs::create_dir_all(&org_plate).unwrap();
    std::fs::write(org_plate.join("ABC_0010_org_v001.mp4"), b"mp4 bytes").unwrap();
    std::fs::write(org_plate.join("ABC_0010_org_v001stream.jpeg"), b"filmstrip").unwrap();

    let works: Vec<WorkDir> = graphs.iter().map(|g| WorkDir::create(g).unwrap()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses = rt
        .block_on(embedded::run(
            works,
            super::publish::ctx(&p.settings),
            EmbeddedOptions::new(2, Arc::new(|_| {})),
        ))
        .unwrap();
    for s in &statuses {
        assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    }

    let project = fake.project_id("demo");
    let plink = json!({"type": "Project", "id": project});
    let seqs = fake.entities("Sequence");
    assert_eq!(seqs.len(), 1, "{seqs:#?}");
    assert_eq!(seqs[0]["code"], "ABC");
    assert_eq!(seqs[0]["project"], plink);
    let seq_link = json!({"type": "Sequence", "id": seqs[0]["id"]});

    let shots = fake.entities("Shot");
    assert_eq!(shots.len(), 2, "{shots:#?}");
    let shot = |code: &str| shots.iter().find(|s| s["code"] == code).unwrap().clone();
    let s10 = shot("ABC_0010");
    let s20 = shot("ABC_0020");
    for s in [&s10, &s20] {
        assert_eq!(s["project"], plink);
        assert_eq!(s["sg_sequence"], seq_link);
    }
    // Cut information from the org plate only (4 frames from 1001).
    assert_eq!(s10["sg_cut_in"], 1001);
    assert_eq!(s10["sg_cut_out"], 1004);
    assert_eq!(s10["sg_cut_duration"], 4);
    assert_eq!(s10["sg_resolution"], "64 x 36");
    assert!(s10["sg_timecode_in"].is_string() && s10["sg_timecode_out"].is_string());
    assert!(s20.get("sg_cut_in").is_none(), "{s20:#?}");

    let versions = fake.entities("Version");
    assert_eq!(versions.len(), 3, "{versions:#?}");
    let files = fake.entities("PublishedFile");
    assert_eq!(files.len(), 3, "{files:#?}");
    let types: Map<String, Value> = fake
        .entities("PublishedFileType")
        .iter()
        .map(|t| (t["code"].as_str().unwrap().to_string(), t["id"].clone()))
        .collect();
    for (shot, seq_type, pft, frames) in [
        (&s10, "org", "Plate", 4),
        (&s10, "ref", "Reference", 3),
        (&s20, "src", "Source", 2),
    ] {
        let code = shot["code"].as_str().unwrap();
        let plate = format!("{code}_{seq_type}_v001");
        let shot_link = json!({"type": "Shot", "id": shot["id"]});
        let v = versions
            .iter()
            .find(|v| v["code"] == format!("{plate}.mov"))
            .unwrap_or_else(|| panic!("no Version {plate}.mov: {versions:#?}"));
        let frames_path = p
            .root
            .join(format!(
                "seq/ABC/{code}/plate/{seq_type}/v001/{plate}.%04d.exr"
            ))
            .display()
            .to_string();
        assert_eq!(v["entity"], shot_link);
        assert_eq!(v["project"], plink);
        assert_eq!(v["sg_path_to_frames"], frames_path.as_str());
        assert_eq!(v["sg_first_frame"], 1001);
        assert_eq!(v["sg_last_frame"], 1000 + frames);
        assert_eq!(v["sg_uploaded_movie_frame_rate"], 24.0);
        assert_eq!(v["sg_status_list"], "fin");
        assert!(
            v["sg_iom_task_id"].as_str().unwrap().ends_with(".register"),
            "{v:#?}"
        );
        let f = files
            .iter()
            .find(|f| f["name"] == format!("{code}_{seq_type}"))
            .unwrap_or_else(|| panic!("no PublishedFile {code}_{seq_type}: {files:#?}"));
        assert_eq!(
            f["published_file_type"],
            json!({"type": "PublishedFileType", "id": types[pft]})
        );
        assert_eq!(f["version_number"], 1);
        assert_eq!(f["path"]["local_path"], frames_path.as_str());
        assert_eq!(f["path"]["local_storage"]["name"], "primary");
        assert_eq!(f["path_cache"], frames_path.as_str());
        assert_eq!(f["entity"], shot_link);
        assert_eq!(f["version"], json!({"type": "Version", "id": v["id"]}));
        assert_eq!(f["project"], plink);
        // The thumbnail step's output went to `image`; movie and filmstrip only
        // where they exist.
        let vid = v["id"].as_i64().unwrap();
        let uploaded: Vec<String> = fake
            .attachments()
            .iter()
            .filter(|a| a.entity == "Version" && a.id == vid)
            .map(|a| a.field.clone())
            .collect();
        if seq_type == "org" {
            assert_eq!(uploaded, MEDIA, "{plate}");
        } else {
            assert_eq!(uploaded, ["image"], "{plate}");
        }
    }
    // The thumbnail uploaded is the thumbnail step's JPEG.
    let thumb = fake
        .attachments()
        .into_iter()
        .find(|a| a.field == "image" && a.filename == "ABC_0010_org_v001_thumb.jpg")
        .unwrap();
    assert_eq!(
        thumb.bytes.as_deref().unwrap(),
        std::fs::read(org_plate.join("ABC_0010_org_v001_thumb.jpg")).unwrap()
    );
    assert_eq!(thumb.content_type.as_deref(), Some("image/jpeg"));

    // The version lookup of the next publish sees v001 in ShotGrid.
    let tracker = open_tracker(&p.settings).unwrap();
    assert_eq!(
        tracker.find_versions("demo", "ABC_0010", "org").unwrap(),
        vec![1]
    );
    assert_eq!(
        tracker.find_versions("demo", "ABC_0010", "ref").unwrap(),
        vec![1]
    );
    assert!(tracker
        .find_versions("demo", "ABC_0020", "org")
        .unwrap()
        .is_empty());

    // The key is in no metric.
    let metrics = iom::metrics::render();
    assert!(metrics.contains("iom_tracker_request_duration_seconds"));
    assert!(!metrics.contains(&fake.script_key()));
}

#[test]
fn republishing_the_same_version_updates_and_never_duplicates() {
    let e = env();
    let r1 = registration(&e, "ABC_0010", "org", 1, false);
    let first = e.tracker.register(&r1).unwrap();
    assert!(first.sequence.created && first.shot.created);
    assert!(first.version.created && first.published_file.created);
    assert!(first.uploaded.is_empty(), "no media file exists");

    // The same version again, with changed values.
    let mut r2 = r1.clone();
    r2.task_id = TaskId("g2.register".into());
    r2.version.sg_scan_colorspace = "ARRI - LogC4".into();
    r2.published_file.sg_colorspace = "ARRI - LogC4".into();
    let cut = r2.cut.as_mut().unwrap();
    cut.sg_timecode_in = "02:00:00:00".into();
    let second = e.tracker.register(&r2).unwrap();
    assert!(!second.sequence.created && !second.shot.created);
    assert!(!second.version.created && !second.published_file.created);
    assert_eq!(second.version.id, first.version.id);
    assert_eq!(second.published_file.id, first.published_file.id);
    // And a third time, unchanged.
    e.tracker.register(&r2).unwrap();

    assert_one_of_each(&e.fake, &[]);
    assert_eq!(
        e.fake
            .requests()
            .iter()
            .filter(|r| r.label.starts_with("create:"))
            .count(),
        4,
        "one create per entity, ever"
    );
    let v = &e.fake.entities("Version")[0];
    assert_eq!(v["sg_scan_colorspace"], "ARRI - LogC4");
    // The creating task is kept; updates do not rewrite it.
    assert_eq!(v["sg_iom_task_id"], r1.task_id.0.as_str());
    assert_eq!(
        e.fake.entities("PublishedFile")[0]["sg_colorspace"],
        "ARRI - LogC4"
    );
    assert_eq!(e.fake.entities("Shot")[0]["sg_timecode_in"], "02:00:00:00");
    // The path is written once: every path write mints an Attachment row.
    assert_eq!(e.fake.state.lock().unwrap().path_attachments, 1);

    // A new version of the same shot: a new Version and PublishedFile only.
    let r3 = registration(&e, "ABC_0010", "org", 2, false);
    let third = e.tracker.register(&r3).unwrap();
    assert!(!third.shot.created && third.version.created && third.published_file.created);
    assert_eq!(e.fake.entities("Shot").len(), 1);
    assert_eq!(e.fake.entities("Version").len(), 2);
    assert_eq!(
        e.tracker.find_versions("demo", "ABC_0010", "org").unwrap(),
        vec![1, 2]
    );
}

#[test]
fn duplicates_already_on_the_site_are_reused_lowest_id_first() {
    // The fake has no uniqueness: two identical creates make two rows. iom then
    // uses the lowest id and creates nothing.
    let e = env();
    let r = registration(&e, "ABC_0010", "org", 1, false);
    e.tracker.register(&r).unwrap();
    let seq = e.fake.entities("Sequence")[0].clone();
    raw_create(
        &e.fake,
        "sequences",
        json!({"project": seq["project"], "code": "ABC"}),
    );
    assert_eq!(
        e.fake.entities("Sequence").len(),
        2,
        "the site allows duplicates"
    );
    let again = e.tracker.register(&r).unwrap();
    assert_eq!(again.sequence.id, seq["id"].as_i64().unwrap().to_string());
    assert_eq!(e.fake.entities("Sequence").len(), 2);
    assert_eq!(e.fake.entities("Shot").len(), 1);
}

#[test]
fn concurrent_registrations_converge_on_one_entity_per_key() {
    // Three "workers" (trackers of their own) register, at the same instant, two
    // seq types of one shot and a second shot of the same sequence: the
    // search-then-create race is settled by re-searching after each create.
    let e = env();
    let rounds = 12;
    for round in 0..rounds {
        let jobs = [
            (format!("R{round}_0010"), "org"),
            (format!("R{round}_0010"), "ref"),
            (format!("R{round}_0020"), "org"),
        ];
        let regs: Vec<Registration> = jobs
            .iter()
            .map(|(shot, t)| registration(&e, shot, t, 1, false))
            .collect();
        let barrier = Arc::new(std::sync::Barrier::new(regs.len()));
        let handles: Vec<_> = regs
            .into_iter()
            .map(|r| {
                let tracker = open_tracker(&e.settings).unwrap();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    tracker.register(&r).unwrap()
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let seq = format!("R{round}");
        let seqs: Vec<_> = e
            .fake
            .entities("Sequence")
            .into_iter()
            .filter(|s| s["code"] == seq.as_str())
            .collect();
        assert_eq!(seqs.len(), 1, "round {round}: {seqs:#?}");
        let seq_link = json!({"type": "Sequence", "id": seqs[0]["id"]});
        let shots: Vec<_> = e
            .fake
            .entities("Shot")
            .into_iter()
            .filter(|s| s["sg_sequence"] == seq_link)
            .collect();
        assert_eq!(shots.len(), 2, "round {round}: {shots:#?}");
    }
    assert_eq!(e.fake.entities("Version").len(), 3 * rounds);
    assert_eq!(e.fake.entities("PublishedFile").len(), 3 * rounds);
    // Nothing links to a retired twin.
    let retired: Vec<(String, i64)> = e
        .fake
        .state
        .lock()
        .unwrap()
        .retired
        .iter()
        .map(|(t, id, _)| (t.clone(), *id))
        .collect();
    for entity in ["Shot", "Version", "PublishedFile"] {
        for rec in e.fake.entities(entity) {
            for (_, v) in rec.iter() {
                if let (Some(t), Some(id)) = (v["type"].as_str(), v["id"].as_i64()) {
                    assert!(
                        !retired.contains(&(t.to_string(), id)),
                        "{entity} links to a retired {t} {id}"
                    );
                }
            }
        }
    }
    eprintln!(
        "concurrent registrations: {} twin(s) created and retired in {rounds} rounds",
        retired.len()
    );
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

#[test]
fn a_500_on_a_search_and_an_update_and_a_slow_read_are_retried() {
    let e = under_fault(&[
        (
            "search:Version",
            Fault::Status {
                status: 500,
                retry_after: None,
            },
        ),
        (
            "update:Shot",
            Fault::Status {
                status: 500,
                retry_after: None,
            },
        ),
        // A reply slower than the client's 1.5 s timeout.
        ("search:Shot", Fault::StallBefore(Duration::from_secs(3))),
    ]);
    assert_eq!(e.fake.entities("Shot")[0]["sg_cut_in"], 1001);
}

#[test]
fn a_502_after_a_create_committed_is_reconciled_not_repeated() {
    let e = under_fault(&[
        ("create:Version", Fault::CommitThenStatus(502)),
        ("create:Sequence", Fault::CommitThenStatus(502)),
    ]);
    assert_eq!(
        e.fake.count("create:Version"),
        1,
        "no blind retry of a create"
    );
    assert_eq!(e.fake.count("create:Sequence"), 1);
}

#[test]
fn a_5xx_before_a_create_committed_creates_once_after_searching() {
    let e = under_fault(&[
        (
            "create:Shot",
            Fault::Status {
                status: 500,
                retry_after: None,
            },
        ),
        (
            "create:PublishedFile",
            Fault::Status {
                status: 502,
                retry_after: None,
            },
        ),
    ]);
    // The failed create wrote nothing; the search said so; one more create.
    assert_eq!(e.fake.count("create:Shot"), 2);
    assert_eq!(e.fake.count("create:PublishedFile"), 2);
}

#[test]
fn a_503_with_retry_after_is_honoured() {
    let e = under_fault(&[
        (
            "create:Shot",
            Fault::Status {
                status: 503,
                retry_after: Some(1),
            },
        ),
        (
            "search:PublishedFile",
            Fault::Status {
                status: 503,
                retry_after: Some(1),
            },
        ),
    ]);
    let reqs = e.fake.requests();
    for (i, r) in reqs.iter().enumerate() {
        if r.status != 503 {
            continue;
        }
        // Back-off is 20 ms here: only the Retry-After explains a 1 s pause.
        let next = &reqs[i + 1];
        let gap = next.at - r.at;
        assert!(
            gap >= Duration::from_millis(950),
            "{} was retried after {gap:?}, before its Retry-After",
            r.label
        );
    }
}

#[test]
fn a_timeout_after_a_create_committed_is_reconciled() {
    // The fake commits the create, then stalls past the 1.5 s client timeout.
    let t0 = Instant::now();
    let e = under_fault(&[
        (
            "create:PublishedFile",
            Fault::CommitThenStall(Duration::from_secs(3)),
        ),
        (
            "create:Shot",
            Fault::CommitThenStall(Duration::from_secs(3)),
        ),
    ]);
    assert!(
        t0.elapsed() >= Duration::from_millis(2900),
        "two client timeouts happened"
    );
    assert_eq!(e.fake.count("create:PublishedFile"), 1);
    assert_eq!(e.fake.count("create:Shot"), 1);
}

#[test]
fn a_401_mid_run_is_recovered_by_one_reauthentication() {
    // The site expires every token just before the Version create.
    let e = under_fault(&[("create:Version", Fault::ExpireTokens)]);
    let reqs = e.fake.requests();
    let refused: Vec<_> = reqs.iter().filter(|r| r.status == 401).collect();
    assert_eq!(refused.len(), 1, "{refused:#?}");
    assert_eq!(refused[0].label, "create:Version");
    assert_eq!(e.fake.count("auth"), 2, "one re-authentication");
    // The refused create did nothing; the replay created the one Version.
    assert_eq!(e.fake.count("create:Version"), 2);
}

#[test]
fn an_expired_token_is_recovered_and_a_live_one_renewed_before_expiry() {
    // The site says tokens live 600 s, but they die after 1 s (a site preference
    // changed under us): the next call gets 401 "Token Expired" and recovers.
    let e = env_with(|f| f.set_token_life(Duration::from_secs(3), Some(600)));
    e.tracker
        .register(&registration(&e, "ABC_0010", "org", 1, false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(3300));
    e.tracker
        .register(&registration(&e, "ABC_0010", "org", 1, false))
        .unwrap();
    let reqs = e.fake.requests();
    let expired: Vec<_> = reqs.iter().filter(|r| r.status == 401).collect();
    assert_eq!(expired.len(), 1, "{expired:#?}");
    assert_eq!(e.fake.count("auth"), 2);
    assert_one_of_each(&e.fake, &[]);

    // Tokens that live 6 s as reported are renewed a third of their life early
    // (at 4 s): no call is ever refused.
    let e = env_with(|f| f.set_token_life(Duration::from_secs(6), None));
    e.tracker
        .register(&registration(&e, "ABC_0010", "org", 1, false))
        .unwrap();
    std::thread::sleep(Duration::from_millis(4300));
    e.tracker
        .register(&registration(&e, "ABC_0020", "org", 1, false))
        .unwrap();
    assert!(e.fake.requests().iter().all(|r| r.status != 401));
    assert_eq!(e.fake.count("auth"), 2, "renewed once, before expiry");
}

#[test]
fn a_slow_upload_is_retried_and_completed_once() {
    // The first presigned PUT stalls past the 1.5 s upload timeout.
    let e = under_fault(&[("upload_put", Fault::CommitThenStall(Duration::from_secs(3)))]);
    assert!(e.fake.count("upload_put") >= 4, "the slow PUT was repeated");
    assert_eq!(e.fake.count("upload_complete:sg_uploaded_movie"), 1);
}

#[test]
fn an_ambiguous_upload_completion_is_checked_not_repeated() {
    let e = under_fault(&[
        (
            "upload_complete:sg_uploaded_movie",
            Fault::CommitThenStatus(502),
        ),
        (
            "upload_complete:image",
            Fault::Status {
                status: 502,
                retry_after: None,
            },
        ),
    ]);
    // The committed one was found by re-reading the field; the other redone.
    assert_eq!(e.fake.count("upload_complete:sg_uploaded_movie"), 1);
    assert_eq!(e.fake.count("upload_complete:image"), 2);
    assert_eq!(
        e.fake.count("upload_init:image"),
        2,
        "all three steps redone"
    );
}

#[test]
fn every_call_failing_once_still_gives_one_of_each() {
    // Learn the calls of one registration …
    let clean = under_fault(&[]);
    let mut labels: Vec<String> = clean
        .fake
        .requests()
        .iter()
        .map(|r| r.label.clone())
        .collect();
    labels.sort();
    labels.dedup();
    assert!(labels.len() >= 15, "{labels:?}");
    // … then fail each of them once: before doing anything, and after committing.
    for fault in [
        Fault::Status {
            status: 502,
            retry_after: None,
        },
        Fault::CommitThenStatus(503),
    ] {
        let faults: Vec<(&str, Fault)> =
            labels.iter().map(|l| (l.as_str(), fault.clone())).collect();
        let e = under_fault(&faults);
        // A create refused before it committed is sent again after the search
        // found nothing; one that committed is found and not sent again.
        let sends = if matches!(fault, Fault::Status { .. }) {
            2
        } else {
            1
        };
        for entity in ["Sequence", "Shot", "Version", "PublishedFile"] {
            assert_eq!(
                e.fake.count(&format!("create:{entity}")),
                sends,
                "{fault:?} {entity}"
            );
        }
    }
}

// ---------------------------------------------------------------------------
// Uploads, errors, the fake's strictness
// ---------------------------------------------------------------------------

#[test]
fn uploads_use_the_three_step_flow() {
    let e = env();
    let r = registration(&e, "ABC_0010", "org", 1, true);
    // No filmstrip this time: only existing files are uploaded.
    let strip = r
        .media
        .iter()
        .find(|m| m.field == "filmstrip_image")
        .unwrap();
    std::fs::remove_file(&strip.path).unwrap();
    let reg = e.tracker.register(&r).unwrap();
    assert_eq!(reg.uploaded, ["sg_uploaded_movie", "image"]);
    let vid: i64 = reg.version.id.parse().unwrap();
    let reqs = e.fake.requests();
    for m in r.media.iter().filter(|m| m.field != "filmstrip_image") {
        let name = m.path.file_name().unwrap().to_str().unwrap();
        let bytes = std::fs::read(&m.path).unwrap();
        let init = reqs
            .iter()
            .find(|q| q.label == format!("upload_init:{}", m.field))
            .unwrap();
        assert_eq!(
            init.path,
            format!("/api/v1/entity/versions/{vid}/{}/_upload", m.field)
        );
        assert_eq!(init.query, format!("filename={name}"));
        let put = reqs
            .iter()
            .find(|q| q.label == "upload_put" && q.body == bytes)
            .unwrap_or_else(|| panic!("no PUT of {name}"));
        assert_eq!(put.method, "PUT");
        assert!(
            put.header("authorization").is_none(),
            "presigned PUT with a bearer"
        );
        assert_eq!(
            put.header("content-length"),
            Some(bytes.len().to_string().as_str())
        );
        assert!(put.header("transfer-encoding").is_none());
        let done = reqs
            .iter()
            .find(|q| q.label == format!("upload_complete:{}", m.field))
            .unwrap();
        assert_eq!(
            done.path, init.path,
            "completion at links.complete_upload as given"
        );
        assert_eq!(done.status, 201);
        assert_eq!(done.json()["upload_data"], json!({}));
        assert_eq!(done.json()["upload_info"]["original_filename"], name);
        let att = e
            .fake
            .attachments()
            .into_iter()
            .find(|a| a.field == m.field)
            .unwrap();
        assert_eq!(att.bytes.as_deref(), Some(bytes.as_slice()));
        assert_eq!(att.id, vid);
    }
    let types: Vec<_> = e
        .fake
        .attachments()
        .iter()
        .map(|a| (a.field.clone(), a.content_type.clone().unwrap()))
        .collect();
    assert_eq!(
        types,
        [
            ("sg_uploaded_movie".to_string(), "video/mp4".to_string()),
            ("image".to_string(), "image/jpeg".to_string())
        ]
    );
    // Auth: form-encoded, nothing in the query string; every API call carries
    // the bearer token, none carries the key.
    let key = e.fake.script_key();
    for q in &reqs {
        match q.label.as_str() {
            "auth" => {
                assert_eq!(
                    q.header("content-type"),
                    Some("application/x-www-form-urlencoded")
                );
                assert!(q.query.is_empty());
            }
            "upload_put" => {}
            _ => {
                assert!(
                    q.header("authorization").unwrap().starts_with("Bearer "),
                    "{q:?}"
                );
                assert!(!String::from_utf8_lossy(&q.body).contains(&key));
                assert!(!q.query.contains(&key));
            }
        }
    }
}

#[test]
fn an_unknown_published_file_type_is_a_clear_error_and_nothing_is_written() {
    let e = env_with(|f| f.remove("PublishedFileType", "code", "Source"));
    let r = registration(&e, "ABC_0010", "src", 1, true);
    let err = e.tracker.register(&r).unwrap_err();
    assert!(
        matches!(&err, TrackerError::ShotGrid(iom::shotgrid::ShotGridError::UnknownPublishedFileType(t)) if t == "Source"),
        "{err:?}"
    );
    let msg = err.to_string();
    assert!(
        msg.contains("\"Source\"") && msg.contains("never creates"),
        "{msg}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    assert!(
        e.fake
            .requests()
            .iter()
            .all(|q| !q.label.starts_with("create:")
                && !q.label.starts_with("update:")
                && !q.label.starts_with("upload")),
        "an unknown type changes nothing"
    );
    // The other types still work.
    e.tracker
        .register(&registration(&e, "ABC_0010", "ref", 1, false))
        .unwrap();
}

#[test]
fn a_field_the_site_lacks_is_a_clear_permanent_error() {
    let e = env_with(|f| f.remove_field("Version", "sg_scan_colorspace"));
    let err = e
        .tracker
        .register(&registration(&e, "ABC_0010", "org", 1, false))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("HTTP 400") && msg.contains("Version.sg_scan_colorspace"),
        "{msg}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    // A permanent error is not retried.
    assert_eq!(e.fake.count("create:Version"), 1);
}

#[test]
fn missing_or_wrong_credentials_are_clear_startup_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(tmp.path());
    let mut s = Settings::defaults().unwrap();
    s.shotgrid.site = fake.url.clone();
    s.shotgrid.script_name.env = Some("IOM_TEST_SG_NAME_SURELY_UNSET".into());
    s.shotgrid.script_key.env = Some("IOM_TEST_SG_KEY_SURELY_UNSET".into());
    let err = open_tracker(&s).err().expect("no credentials");
    let msg = err.to_string();
    assert!(
        msg.contains("IOM_TEST_SG_NAME_SURELY_UNSET")
            && msg.contains("IOM_TEST_SG_KEY_SURELY_UNSET"),
        "{msg}"
    );
    assert_eq!(err.class(), ErrorClass::Permanent);
    // Only the key missing, with a file configured: both sources are named.
    let name = tmp.path().join("name");
    std::fs::write(&name, "iom\n").unwrap();
    s.shotgrid.script_name = SecretRef {
        env: None,
        file: Some(name),
    };
    s.shotgrid.script_key.file = Some(tmp.path().join("missing-key"));
    let msg = open_tracker(&s).err().unwrap().to_string();
    assert!(
        msg.contains("IOM_TEST_SG_KEY_SURELY_UNSET") && msg.contains("missing-key"),
        "{msg}"
    );
    assert!(!msg.contains("IOM_TEST_SG_NAME_SURELY_UNSET"), "{msg}");
    assert!(fake.requests().is_empty(), "nothing was sent");

    // The CLI refuses to start a publish without them, naming the variables.
    let secrets = tempfile::tempdir().unwrap();
    let p = sg_project(&fake, secrets.path(), "probe, copy, register");
    let mut yaml = std::fs::read_to_string(&p.config).unwrap();
    yaml = yaml.replace(
        &format!(
            "script_name: {{ file: \"{}\" }}",
            secrets.path().join("sg-script-name").display()
        ),
        "script_name: { env: IOM_SHOTGRID_SCRIPT_NAME }",
    );
    yaml = yaml.replace(
        &format!(
            "script_key: {{ env: IOM_SHOTGRID_SCRIPT_KEY, file: \"{}\" }}",
            secrets.path().join("sg-script-key").display()
        ),
        "script_key: { env: IOM_SHOTGRID_SCRIPT_KEY }",
    );
    std::fs::write(&p.config, yaml).unwrap();
    let sheet = one_row_sheet(&p);
    let out = command(&p, "iom", "")
        .env_remove("IOM_SHOTGRID_SCRIPT_NAME")
        .env_remove("IOM_SHOTGRID_SCRIPT_KEY")
        .args(["publish"])
        .arg(&sheet)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("IOM_SHOTGRID_SCRIPT_NAME") && stderr.contains("IOM_SHOTGRID_SCRIPT_KEY"),
        "{stderr}"
    );
    assert!(!p.root.join("seq").exists(), "nothing was published");

    // Wrong credentials: a permanent error that does not echo the key.
    let e = env();
    let bad_key = format!("wrong{}", e.fake.script_key());
    let mut s = Settings::defaults().unwrap();
    s.shotgrid = sg_settings(&e.fake, tmp.path());
    std::fs::write(s.shotgrid.script_key.file.as_ref().unwrap(), &bad_key).unwrap();
    let t = open_tracker(&s).unwrap();
    let err = t
        .register(&registration(&e, "ABC_0010", "org", 1, false))
        .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("Authentication failed") || msg.contains("authenticate"),
        "{msg}"
    );
    assert!(!msg.contains(&bad_key) && !format!("{err:?}").contains(&bad_key));
    assert_eq!(err.class(), ErrorClass::Permanent);
}

fn one_row_sheet(p: &Project) -> PathBuf {
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 3);
    sample::write_plate(&p.delivery, &a).unwrap();
    let sheet = p.delivery.join("scanlist_01.xlsx");
    iom::scanlist::write::write(
        &sheet,
        &[row(&p.delivery, &a, "ABC_0010")],
        &[],
        &p.settings.scanlist,
    )
    .unwrap();
    sheet
}

#[test]
fn the_script_key_never_leaves_the_secret_store() {
    // A full CLI publish with trace logging; the key comes from the environment.
    let secrets = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(Path::new("/nonexistent"));
    let p = sg_project(
        &fake,
        secrets.path(),
        "probe, copy, thumbnail, register, cleanup",
    );
    // The key file is empty: the environment variable is the source.
    std::fs::write(secrets.path().join("sg-script-key"), "").unwrap();
    let key = fake.script_key();
    // A first attempt fails with a 503 so the error paths are logged too.
    fake.inject("create:Version", Fault::CommitThenStatus(502));
    fake.inject(
        "upload_put",
        Fault::Status {
            status: 500,
            retry_after: None,
        },
    );
    let sheet = one_row_sheet(&p);
    let out = command(&p, "iom", "")
        .env("RUST_LOG", "trace")
        .env("IOM_SHOTGRID_SCRIPT_KEY", &key)
        .args(["publish", "--json"])
        .arg(&sheet)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "succeeded", "{stdout}");
    // The key was used (the site got it) and the run logged at trace level.
    assert_eq!(fake.entities("Version").len(), 1);
    assert!(fake
        .requests()
        .iter()
        .any(|r| r.label == "auth" && r.status == 200));
    assert!(
        stderr.lines().count() > 20,
        "trace logging was on: {stderr}"
    );
    assert!(
        stderr.contains("TRACE") || stderr.contains("DEBUG"),
        "trace logging was on: {stderr}"
    );

    assert!(!stdout.contains(&key), "the key is on stdout");
    assert!(!stderr.contains(&key), "the key is in the logs");
    // Every file iom wrote: the project tree, the work folders and their
    // events and records, the settings, the delivery.
    let mut files = 0;
    for entry in walkdir::WalkDir::new(p._tmp.path()).into_iter().flatten() {
        if !entry.file_type().is_file() {
            continue;
        }
        files += 1;
        let bytes = std::fs::read(entry.path()).unwrap();
        assert!(
            !bytes.windows(key.len()).any(|w| w == key.as_bytes()),
            "the key is in {}",
            entry.path().display()
        );
    }
    assert!(files > 10, "{files}");
    assert!(p.root.join(".iom/publishes").is_dir());
}

#[test]
fn the_fake_is_strict() {
    let tmp = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(tmp.path());
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let http = reqwest::Client::new();
        let url = |p: &str| format!("{}{p}", fake.url);
        let auth = url("/api/v1/auth/access_token");
        // Auth: JSON → 400, text → 415, wrong key → 400, form → token.
        let r = http
            .post(&auth)
            .header("content-type", "application/json")
            .body(json!({"grant_type": "client_credentials", "client_id": fake.script_name(), "client_secret": fake.script_key()}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let r = http.post(&auth).header("content-type", "text/plain").body("x").send().await.unwrap();
        assert_eq!(r.status(), 415);
        let r = http
            .post(&auth)
            .form(&[("grant_type", "client_credentials"), ("client_id", "x"), ("client_secret", "y")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["code"], 102);
        let r = http
            .post(&auth)
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_id", fake.script_name().as_str()),
                ("client_secret", fake.script_key().as_str()),
            ])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        let v: Value = r.json().await.unwrap();
        let token = v["access_token"].as_str().unwrap().to_string();
        // No token → 401 code 102.
        let r = http.post(url("/api/v1/entity/shots/_search")).send().await.unwrap();
        assert_eq!(r.status(), 401);
        // _search with application/json → 415; with the vendor type → 200.
        let filters = json!({"filters": [["code", "is", "ABC"]]}).to_string();
        let r = http
            .post(url("/api/v1/entity/sequences/_search"))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body(filters.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 415);
        let r = http
            .post(url("/api/v1/entity/sequences/_search"))
            .bearer_auth(&token)
            .header("content-type", "application/vnd+shotgun.api3_array+json")
            .body(filters)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        // A link value as an integer → 400.
        let r = http
            .post(url("/api/v1/entity/sequences/_search"))
            .bearer_auth(&token)
            .header("content-type", "application/vnd+shotgun.api3_array+json")
            .body(json!({"filters": [["project", "is", 101]]}).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Creates: unknown field, missing project, empty code → 400; identical
        // creates → two rows.
        let project = json!({"type": "Project", "id": fake.project_id("demo")});
        for (body, status) in [
            (json!({"project": project, "code": "ABC", "sg_nope": 1}), 400),
            (json!({"code": "ABC"}), 400),
            (json!({"project": project, "code": ""}), 400),
            (json!({"project": fake.project_id("demo"), "code": "ABC"}), 400),
            (json!({"project": project, "code": "ABC"}), 201),
            (json!({"project": project, "code": "ABC"}), 201),
        ] {
            let r = http
                .post(url("/api/v1/entity/sequences"))
                .bearer_auth(&token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), status, "{body}");
        }
        assert_eq!(fake.entities("Sequence").len(), 2, "no uniqueness");
        let id = fake.entities("Sequence")[0]["id"].as_i64().unwrap();
        // PATCH → 404; a path outside every storage → 400.
        let r = http
            .patch(url(&format!("/api/v1/entity/sequences/{id}")))
            .bearer_auth(&token)
            .json(&json!({"code": "X"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404);
        let r = http
            .post(url("/api/v1/entity/published_files"))
            .bearer_auth(&token)
            .json(&json!({"project": project, "code": "x", "path": {"local_path": "/elsewhere/x.exr"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400);
        // Upload: init needs a filename; a chunked PUT → 501; a PUT with a
        // bearer → 400; completion → 201 with a one-space body.
        let sh = raw_create(&fake, "shots", json!({"project": project, "code": "S"}));
        let init = url(&format!("/api/v1/entity/shots/{sh}/image/_upload"));
        let r = http.get(&init).bearer_auth(&token).send().await.unwrap();
        assert_eq!(r.status(), 400);
        let v: Value = http
            .get(format!("{init}?filename=t.jpg"))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let put = v["links"]["upload"].as_str().unwrap().to_string();
        let chunks = futures_util::stream::iter(vec![Ok::<_, std::io::Error>(b"abc".to_vec())]);
        let r = http.put(&put).body(reqwest::Body::wrap_stream(chunks)).send().await.unwrap();
        assert_eq!(r.status(), 501);
        let r = http.put(&put).bearer_auth(&token).body("abc").send().await.unwrap();
        assert_eq!(r.status(), 400);
        let r = http.put(&put).body("abc").send().await.unwrap();
        assert_eq!(r.status(), 200);
        let complete = url(v["links"]["complete_upload"].as_str().unwrap());
        let r = http
            .post(url(&format!("/api/v1{}", v["links"]["complete_upload"].as_str().unwrap())))
            .bearer_auth(&token)
            .json(&json!({"upload_info": v["data"], "upload_data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "a double /api/v1 prefix");
        let r = http
            .post(&complete)
            .bearer_auth(&token)
            .json(&json!({"upload_info": v["data"], "upload_data": {}}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.text().await.unwrap(), " ");
        // An expired token → 401 "Token Expired".
        fake.inject("read", Fault::ExpireTokens);
        let r = http
            .get(url(&format!("/api/v1/entity/shots/{sh}")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["errors"][0]["detail"], "Token Expired");
    });
}

/// A create straight at the site (no iom), with a fresh token.
fn raw_create(fake: &FakeShotGrid, entity: &str, body: Value) -> i64 {
    let url = fake.url.clone();
    let (name, key) = (fake.script_name(), fake.script_key());
    let entity = entity.to_string();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Runtime::new().unwrap();
        rt.block_on(async {
            let http = reqwest::Client::new();
            let v: Value = http
                .post(format!("{url}/api/v1/auth/access_token"))
                .form(&[
                    ("grant_type", "client_credentials"),
                    ("client_id", name.as_str()),
                    ("client_secret", key.as_str()),
                ])
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            let token = v["access_token"].as_str().unwrap();
            let r = http
                .post(format!("{url}/api/v1/entity/{entity}"))
                .bearer_auth(token)
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 201);
            let v: Value = r.json().await.unwrap();
            v["data"]["id"].as_i64().unwrap()
        })
    })
    .join()
    .unwrap()
}

#[test]
fn a_site_down_longer_than_the_client_retries_fails_the_step_transiently_then_it_succeeds() {
    // Every create of the Version fails five times in a row (the client's whole
    // budget): the register step fails as transient, the runtime retries it, and
    // the retry searches before creating: still one of each.
    let secrets = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(Path::new("/nonexistent"));
    let p = sg_project(&fake, secrets.path(), "probe, copy, register");
    fake.inject_n(
        "create:Version",
        0,
        5,
        Fault::Status {
            status: 503,
            retry_after: None,
        },
    );
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 2);
    sample::write_plate(&p.delivery, &a).unwrap();
    let graphs = plan_rows(&p, &[row(&p.delivery, &a, "ABC_0010")]);
    let works: Vec<WorkDir> = graphs.iter().map(|g| WorkDir::create(g).unwrap()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let statuses = rt
        .block_on(embedded::run(
            works,
            super::publish::ctx(&p.settings),
            EmbeddedOptions::new(1, Arc::new(|_| {})),
        ))
        .unwrap();
    let s = &statuses[0];
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    let reg = s
        .tasks
        .iter()
        .find(|t| t.kind == iom::task::StepKind::Register)
        .unwrap();
    match &reg.state {
        iom::store::TaskState::Succeeded { attempt, .. } => assert_eq!(*attempt, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(fake.count("create:Version"), 6);
    assert_one_of_each(&fake, &[]);
}

/// A site that cannot be read while planning stops the publish: the version
/// number would otherwise be a guess that can land on one the site already holds.
#[test]
fn a_site_down_while_planning_publishes_nothing() {
    let secrets = tempfile::tempdir().unwrap();
    let fake = FakeShotGrid::start(secrets.path());
    let mut p = sg_project(&fake, secrets.path(), "probe,copy,register");
    let down = format!("http://127.0.0.1:{}", super::support::free_port());
    let yaml = std::fs::read_to_string(&p.config)
        .unwrap()
        .replace(&fake.url, &down);
    std::fs::write(&p.config, yaml).unwrap();
    p.settings = Settings::load_with(Some(&p.config), &|_| None, std::iter::empty()).unwrap();
    let sheet = one_row_sheet(&p);
    let out = command(&p, "iom", "")
        .args(["publish"])
        .arg(&sheet)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("cannot read the existing versions from the tracker")
            && stderr.contains("nothing was published"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!p.root.join("seq").exists(), "nothing was published");
    assert!(!p.root.join(".iom/publishes").exists(), "no work folder");
}
