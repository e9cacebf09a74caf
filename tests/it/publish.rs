//! Publishing end to end: the embedded in-process default, and the broker path with
//! real `iom-worker` processes on the real RabbitMQ (a private vhost per test).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use iom::config::Settings;
use iom::embedded::{self, EmbeddedOptions};
use iom::plan::{self, PlanOptions};
use iom::queue::Broker;
use iom::runtime::{self, Outcome, RuntimeCtx};
use iom::sample::{self, PlateSpec};
use iom::scanlist::Row;
use iom::store::{Begin, GraphState, GraphStatus, TaskState, WorkDir};
use iom::task::{Graph, StepKind};
use iom::worker::BrokerTransport;

use super::support::Vhost;

/// A project: a delivery with plates, a project root, and settings pointing at them.
pub(super) struct Project {
    pub(super) _tmp: tempfile::TempDir,
    pub(super) root: PathBuf,
    pub(super) delivery: PathBuf,
    pub(super) config: PathBuf,
    pub(super) settings: Settings,
}

pub(super) fn project(steps: &str, broker: Option<&Vhost>) -> Project {
    match broker {
        Some(v) => project_at(steps, &v.url(), "t"),
        None => project_at(steps, "", "iom"),
    }
}

/// A project whose broker is `url` (empty: embedded) with queue prefix `prefix`.
pub(super) fn project_at(steps: &str, url: &str, prefix: &str) -> Project {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("show/demo");
    let delivery = root.join("product/scan/d1");
    std::fs::create_dir_all(&delivery).unwrap();
    let yaml = format!(
        "project:\n  name: demo\n  root: {root}\npublish:\n  steps: [{steps}]\n\
         broker:\n  url: \"{url}\"\n  prefix: {prefix}\n  retry_tiers_secs: [1, 2]\n  delivery_limit: 3\n  confirm_timeout_secs: 5\n\
         worker:\n  slots: 2\n  max_attempts: 3\n  backoff_base_secs: 1\n  backoff_cap_secs: 1\n  shutdown_grace_secs: 20\n",
        root = root.display()
    );
    let config = tmp.path().join("settings.yml");
    std::fs::write(&config, yaml).unwrap();
    let settings = Settings::load_with(Some(&config), &|_| None, std::iter::empty()).unwrap();
    Project {
        _tmp: tmp,
        root,
        delivery,
        config,
        settings,
    }
}

/// A checked scanlist row for a plate written with `sample::write_plate`.
pub(super) fn row(delivery: &Path, spec: &PlateSpec, shot: &str) -> Row {
    Row {
        check: true,
        shot_name: shot.into(),
        seq_type: "org".into(),
        scan_path: delivery.join(&spec.dir).display().to_string(),
        scan_name: spec.head.clone(),
        pad: format!("%0{}d", spec.pad),
        ext: "exr".into(),
        resolution: format!("{} x {}", spec.width, spec.height),
        start_frame: Some(spec.start),
        end_frame: Some(spec.start + spec.count - 1),
        duration: Some(spec.count),
        just_in: Some(spec.start),
        just_out: Some(spec.start + spec.count - 1),
        framerate: Some(24.0),
        ..Row::default()
    }
}

/// Writes one EXR plate (`A001/A001C003.####.exr`) and plans it as shot ABC_0010.
fn one_plate(p: &Project, width: u32, height: u32, frames: i64) -> (PlateSpec, Graph) {
    let a = PlateSpec::exr("A001", "A001C003.", width, height, frames);
    sample::write_plate(&p.delivery, &a).unwrap();
    let graph = plan_rows(p, &[row(&p.delivery, &a, "ABC_0010")]).remove(0);
    (a, graph)
}

pub(super) fn plan_rows(p: &Project, rows: &[Row]) -> Vec<Graph> {
    let opts = PlanOptions {
        delivery_root: Some(p.delivery.clone()),
        ..PlanOptions::default()
    };
    plan::plan(rows, &p.settings, &opts, &|_| vec![])
        .unwrap()
        .graphs
}

pub(super) fn ctx(settings: &Settings) -> Arc<RuntimeCtx> {
    Arc::new(RuntimeCtx {
        settings: Arc::new(settings.clone()),
        worker: "test".into(),
        tracker: iom::tracker::open_tracker(settings).unwrap(),
        cancel: iom::worker::new_cancel_flag(),
    })
}

pub(super) fn run_embedded(p: &Project, graphs: &[Graph]) -> Vec<GraphStatus> {
    let works: Vec<WorkDir> = graphs.iter().map(|g| WorkDir::create(g).unwrap()).collect();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(embedded::run(
        works,
        ctx(&p.settings),
        EmbeddedOptions::new(2, Arc::new(|_| {})),
    ))
    .unwrap()
}

/// Every published frame equals its source byte for byte.
fn assert_published(spec: &PlateSpec, delivery: &Path, graph: &Graph) {
    let copy = graph
        .nodes
        .iter()
        .find(|n| n.step.kind() == StepKind::Copy)
        .unwrap();
    let iom::task::Step::Copy { output, .. } = &copy.step else {
        panic!("not a copy step")
    };
    for i in 0..spec.count {
        let src = spec.frame_path(delivery, spec.start + i);
        let dst = output.frame_path(1001 + i);
        assert_eq!(
            std::fs::read(&src).unwrap(),
            std::fs::read(&dst).unwrap_or_else(|e| panic!("{}: {e}", dst.display())),
            "{}",
            dst.display()
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(&output.frames_dir)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("iom-tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

pub(super) fn tracker_docs(root: &Path) -> Vec<PathBuf> {
    walkdir::WalkDir::new(root.join(".iom/tracker"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json"))
        .map(|e| e.path().to_path_buf())
        .collect()
}

#[test]
fn embedded_publish_runs_the_graph_and_is_idempotent() {
    let p = project("probe, copy, thumbnail, register, cleanup", None);
    let a = PlateSpec::exr("A001", "A001C003.", 64, 36, 6);
    let b = PlateSpec {
        start: 9998,
        ..PlateSpec::exr("B002", "B002C004_", 32, 18, 4)
    };
    sample::write_plate(&p.delivery, &a).unwrap();
    sample::write_plate(&p.delivery, &b).unwrap();
    let rows = vec![
        row(&p.delivery, &a, "ABC_0010"),
        row(&p.delivery, &b, "ABC_0020"),
    ];
    let graphs = plan_rows(&p, &rows);
    assert_eq!(graphs.len(), 2);
    let statuses = run_embedded(&p, &graphs);
    for s in &statuses {
        assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    }
    assert_published(&a, &p.delivery, &graphs[0]);
    assert_published(&b, &p.delivery, &graphs[1]);
    // 9998..10001 became 1001..1004.
    assert!(p
        .root
        .join("seq/ABC/ABC_0020/plate/org/v001/ABC_0020_org_v001.1004.exr")
        .is_file());
    let docs = tracker_docs(&p.root);
    assert!(!docs.is_empty());

    // Running the same graphs again does nothing twice: same statuses, same records.
    let again = run_embedded(&p, &graphs);
    assert_eq!(again, statuses);
    assert_eq!(tracker_docs(&p.root), docs);

    // Planning the same rows again: v001 exists, so auto-version moves to v002 …
    let next = plan_rows(&p, &rows);
    assert!(next[0].id.0.contains("_v002-"), "{}", next[0].id);
    // … and an explicit v001 is refused without --force.
    let mut explicit = rows.clone();
    explicit[0].version = Some(1);
    let e = plan::plan(
        &explicit,
        &p.settings,
        &PlanOptions {
            delivery_root: Some(p.delivery.clone()),
            ..PlanOptions::default()
        },
        &|_| vec![],
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("already exists"), "{e}");
}

#[test]
fn embedded_publish_makes_proxies_and_review_movies() {
    // The default graph holds proxy and review: the embedded publish makes them.
    let p = project(
        "probe, copy, thumbnail, proxy, review, register, cleanup",
        None,
    );
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 3);
    sample::write_plate(&p.delivery, &a).unwrap();
    let graphs = plan_rows(&p, &[row(&p.delivery, &a, "ABC_0010")]);
    let s = &run_embedded(&p, &graphs)[0];
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    let plate = p.root.join("seq/ABC/ABC_0010/plate");
    for n in 1001..=1003 {
        assert!(plate
            .join(format!("org/v001_jpg/ABC_0010_org_v001.{n}.jpg"))
            .is_file());
    }
    let mp4 = iom::media::movie::probe(&plate.join("ABC_0010_org_v001.mp4")).unwrap();
    assert_eq!((mp4.codec.as_str(), mp4.frame_count), ("h264", 3));
    assert_eq!(mp4.timecode.as_deref(), Some("01:00:00:00"));
    let mov = iom::media::movie::probe(&plate.join("ABC_0010_org_v001.mov")).unwrap();
    assert_eq!(mov.profile.as_deref(), Some("HQ"));
    assert!(plate.join("ABC_0010_org_v001stream.jpeg").is_file());
    assert!(!tracker_docs(&p.root).is_empty());
}

#[test]
fn embedded_bad_codec_fails_the_review_task_only() {
    let mut p = project("probe, copy, proxy, review, register, cleanup", None);
    p.settings.media.review.codec = "Avid DNxHD 9000".into();
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 2);
    sample::write_plate(&p.delivery, &a).unwrap();
    let graphs = plan_rows(&p, &[row(&p.delivery, &a, "ABC_0010")]);
    let s = &run_embedded(&p, &graphs)[0];
    assert_eq!(s.state, GraphState::Failed);
    let review = s.tasks.iter().find(|t| t.kind == StepKind::Review).unwrap();
    match &review.state {
        TaskState::Failed { reason, .. } => {
            assert!(
                reason.contains("unknown delivery codec \"Avid DNxHD 9000\""),
                "{reason}"
            )
        }
        other => panic!("review should have failed, is {other:?}"),
    }
    let proxy = s.tasks.iter().find(|t| t.kind == StepKind::Proxy).unwrap();
    assert!(
        matches!(proxy.state, TaskState::Succeeded { .. }),
        "{:?}",
        proxy.state
    );
    // Nothing downstream ran, and no movie was left behind.
    let reg = s
        .tasks
        .iter()
        .find(|t| t.kind == StepKind::Register)
        .unwrap();
    assert_eq!(reg.state, TaskState::Waiting);
    assert!(tracker_docs(&p.root).is_empty());
    assert!(!p
        .root
        .join("seq/ABC/ABC_0010/plate/ABC_0010_org_v001.mp4")
        .exists());
}

// ---------------------------------------------------------------------------
// Through the real `iom` and `iom-worker` binaries.
// ---------------------------------------------------------------------------

fn bin(name: &str) -> PathBuf {
    match name {
        "iom" => PathBuf::from(env!("CARGO_BIN_EXE_iom")),
        _ => PathBuf::from(env!("CARGO_BIN_EXE_iom-worker")),
    }
}

pub(super) fn command(p: &Project, name: &str, fault: &str) -> Command {
    let mut c = Command::new(bin(name));
    c.env("IOM_CONFIG", &p.config)
        .env("IOM_BROKER_PASSWORD", "guest")
        .env("IOM_FAULT", fault)
        .env("RUST_LOG", "warn")
        .current_dir(p._tmp.path());
    c
}

pub(super) fn spawn_worker(p: &Project, fault: &str) -> Child {
    command(p, "iom-worker", fault)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iom-worker")
}

pub(super) struct Workers(pub(super) Vec<Child>);

impl Drop for Workers {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Runs `iom <args>` for `p` and asserts that it succeeded.
pub(super) fn iom_ok(p: &Project, args: &[&str]) -> std::process::Output {
    iom_exit(p, "", args, 0)
}

/// Runs `iom` with `IOM_FAULT=fault` and asserts its exit code.
fn iom_exit(p: &Project, fault: &str, args: &[&str], code: i32) -> std::process::Output {
    let out = command(p, "iom", fault).args(args).output().unwrap();
    assert_eq!(
        out.status.code(),
        Some(code),
        "iom {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `iom dlq list --json`, through the CLI.
pub(super) fn dlq_list(p: &Project) -> Vec<serde_json::Value> {
    let out = iom_ok(p, &["dlq", "list", "--json"]);
    match serde_json::from_slice(&out.stdout).unwrap() {
        serde_json::Value::Array(items) => items,
        other => panic!("iom dlq list --json printed {other:#}"),
    }
}

/// Waits for `child` to exit (at most `within`) and returns how it ended.
fn wait_exit(child: &mut Child, within: Duration, what: &str) -> std::process::ExitStatus {
    let t0 = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub(super) fn wait_for(
    work: &WorkDir,
    within: Duration,
    what: &str,
    f: impl Fn(&GraphStatus) -> bool,
) -> GraphStatus {
    let t0 = Instant::now();
    loop {
        let s = work.status().unwrap();
        if f(&s) {
            return s;
        }
        assert!(
            t0.elapsed() < within,
            "timed out waiting for {what}: {s:#?}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The project's broker config, the password from a secret file as a farm node
/// would mount it.
pub(super) fn broker_config(p: &Project) -> iom::queue::BrokerConfig {
    let secret = p._tmp.path().join("broker-password");
    std::fs::write(&secret, "guest\n").unwrap();
    iom::queue::BrokerConfig::from_settings(&iom::config::BrokerSettings {
        password: iom::config::SecretRef {
            env: None,
            file: Some(secret),
        },
        ..p.settings.broker.clone()
    })
    .unwrap()
}

fn submit(p: &Project, graph: &Graph) -> WorkDir {
    let work = WorkDir::create(graph).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let cfg = broker_config(p);
    rt.block_on(async {
        let broker = Broker::connect(&cfg).await.unwrap();
        broker.declare_topology().await.unwrap();
        let t = BrokerTransport::open(&broker, "submitter").await.unwrap();
        let sent = runtime::submit(&work, &ctx(&p.settings), &t).await.unwrap();
        assert_eq!(sent.len(), 1, "only the probe is a root");
        t.close(Duration::from_secs(5)).await;
        broker.close().await;
    });
    work
}

/// The attempt that completed the graph's task of `kind`, if it has.
fn succeeded_at(s: &GraphStatus, kind: StepKind) -> Option<u32> {
    match state_of(s, kind) {
        TaskState::Succeeded { attempt, .. } => Some(*attempt),
        _ => None,
    }
}

fn state_of(s: &GraphStatus, kind: StepKind) -> &TaskState {
    &s.tasks.iter().find(|t| t.kind == kind).unwrap().state
}

#[test]
fn broker_kill_mid_copy_then_another_worker_finishes() {
    let vh = Vhost::new();
    let p = project("probe, copy, register, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 64, 36, 40);
    let work = submit(&p, &graph);

    // First worker copies slowly (50 ms a frame) and is killed mid-copy.
    let mut workers = Workers(vec![spawn_worker(&p, "copy:frame_ms:50")]);
    let frames_dir = p.root.join("seq/ABC/ABC_0010/plate/org/v001");
    let t0 = Instant::now();
    loop {
        let n = std::fs::read_dir(&frames_dir)
            .map(|d| d.count())
            .unwrap_or(0);
        if n >= 6 {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "copy never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    workers.0[0].kill().unwrap();
    workers.0[0].wait().unwrap();
    let s = work.status().unwrap();
    assert!(
        matches!(state_of(&s, StepKind::Copy), TaskState::Running { .. }),
        "{s:#?}"
    );

    // A second worker picks up the redelivered copy and finishes the graph.
    workers.0.push(spawn_worker(&p, ""));
    let s = wait_for(&work, Duration::from_secs(60), "graph success", |s| {
        s.state != GraphState::Running
    });
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    assert_published(&a, &p.delivery, &graph);
    // The copy completed once, on its first attempt (a redelivery, not a retry).
    let copy_id = graph
        .nodes
        .iter()
        .find(|n| n.step.kind() == StepKind::Copy)
        .unwrap()
        .id
        .clone();
    let rec = work.completion(&copy_id).unwrap().unwrap();
    assert_eq!(rec.attempt, 1);
    assert_eq!(rec.outputs.len(), 40);
    // One registration, no duplicate entity.
    let docs = tracker_docs(&p.root);
    let versions: Vec<_> = docs
        .iter()
        .filter(|d| d.to_string_lossy().contains("version"))
        .collect();
    assert_eq!(versions.len(), 1, "{docs:#?}");
}

#[test]
fn broker_transient_failures_retry_and_permanent_ones_are_dead_lettered() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 3);
    let work = submit(&p, &graph);
    // Probe fails transiently on attempt 1 (retried after the 1 s tier), copy fails
    // permanently (dead-lettered at once).
    let _w = Workers(vec![spawn_worker(&p, "probe:transient:1,copy:permanent:1")]);
    let t0 = Instant::now();
    let s = wait_for(&work, Duration::from_secs(60), "copy to fail", |s| {
        matches!(state_of(s, StepKind::Copy), TaskState::Failed { .. })
    });
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "the retry waited for its tier"
    );
    match state_of(&s, StepKind::Probe) {
        TaskState::Succeeded { attempt, .. } => assert_eq!(*attempt, 2),
        other => panic!("{other:?}"),
    }
    assert_eq!(s.state, GraphState::Failed);
    assert!(matches!(
        state_of(&s, StepKind::Cleanup),
        TaskState::Waiting
    ));

    // The DLQ holds the copy with its reason, readable through the CLI.
    let items = dlq_list(&p);
    assert_eq!(items.len(), 1, "{items:#?}");
    assert!(items[0]["reason"]
        .as_str()
        .unwrap()
        .contains("injected permanent fault"));
    assert_eq!(items[0]["class"], "permanent");
    assert!(items[0]["task_id"].as_str().unwrap().ends_with(".copy"));

    // A poison message on a work queue goes to the DLQ with the reason; the worker lives on.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let conn = vh.raw().await;
        let ch = conn.create_channel().await.unwrap();
        ch.basic_publish(
            "t.tasks".into(),
            "probe".into(),
            lapin::options::BasicPublishOptions::default(),
            b"{not json",
            lapin::BasicProperties::default(),
        )
        .await
        .unwrap();
        conn.close(0, "done".into()).await.ok();
    });
    let t0 = Instant::now();
    loop {
        let v = dlq_list(&p);
        let poison = v
            .iter()
            .find(|d| d["reason"].as_str().unwrap_or("").contains("poison"));
        if let Some(d) = poison {
            assert!(d["reason"].as_str().unwrap().contains("malformed"), "{d:#}");
            break;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "poison never reached the DLQ: {v:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // Requeue the copy from the DLQ with a fresh attempt and no fault: the graph completes.
    drop(_w);
    let _w2 = Workers(vec![spawn_worker(&p, "")]);
    let copy = format!("{}.copy", graph.id);
    iom_ok(&p, &["dlq", "requeue", "--task", &copy, "--reset-attempt"]);
    let s = wait_for(
        &work,
        Duration::from_secs(60),
        "graph success after requeue",
        |s| s.state == GraphState::Succeeded,
    );
    assert_eq!(s.state, GraphState::Succeeded);
    assert_published(&a, &p.delivery, &graph);
}

/// Restarts a worker that aborts whenever it starts `task` (`<kind>:abort:1`), as a
/// service manager would, until RabbitMQ dead-letters the task at its delivery
/// limit. Returns the number of crashes and the task's entry in `iom dlq list`.
pub(super) fn crash_loop(p: &Project, work: &WorkDir, task: &str) -> (usize, serde_json::Value) {
    let kind = task.rsplit('.').next().unwrap();
    // The parents run on a healthy worker of their own, stopped once the task is
    // dispatched. A crashing worker that also ran a parent could die between
    // publishing the task and marking it dispatched; the parent's redelivery then
    // publishes it again (at-least-once, harmless in production) and the loop
    // would chase two messages.
    let others: Vec<&str> = StepKind::ALL
        .iter()
        .map(|k| k.as_str())
        .filter(|k| *k != kind)
        .collect();
    let parents = Workers(vec![command(p, "iom-worker", "")
        .args(["--queues", &others.join(",")])
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iom-worker")]);
    let id = iom::task::TaskId(task.to_string());
    let t0 = Instant::now();
    while !work.is_dispatched(&id).unwrap() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "{task} never dispatched"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    drop(parents);
    let mut crashes = 0;
    loop {
        let mut w = command(p, "iom-worker", &format!("{kind}:abort:1"))
            .args(["--queues", kind])
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn iom-worker");
        let status = wait_exit(
            &mut w,
            Duration::from_secs(60),
            "the worker to take the task",
        );
        assert!(!status.success(), "the injected abort ended the worker");
        crashes += 1;
        if let Some(d) = dlq_list(p).into_iter().find(|d| d["task_id"] == task) {
            return (crashes, d);
        }
        assert!(
            crashes < 8,
            "{crashes} crashes and {task} is still not dead-lettered"
        );
    }
}

/// A crash loop: every worker that takes the copy dies (abort) before settling
/// it, so RabbitMQ dead-letters it at its delivery limit. No worker saw the step
/// fail, yet the graph must not show `Running` for ever (nor its Tractor job):
/// the next healthy worker reads the dead letter's notice, records the failure
/// with a reason that says what happened and how to run it again, and sends a
/// `dead_lettered` event. A requeue then completes the graph.
#[test]
fn a_crash_loop_ends_at_the_delivery_limit_as_a_recorded_failure() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 6);
    let copy = format!("{}.copy", graph.id);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A watcher's queue on the events exchange, bound before anything happens.
    let broker = rt.block_on(Broker::connect(&broker_config(&p))).unwrap();
    drop(rt.block_on(broker.event_consumer("watch", 50)).unwrap());
    let work = submit(&p, &graph);

    let (crashes, dead) = crash_loop(&p, &work, &copy);
    eprintln!("crash loop: dead-lettered after {crashes} crashes: {dead:#}");
    // Each crash returns the message once; the return that takes it past the
    // limit of 3 dead-letters it.
    assert_eq!(crashes, 4, "dead-lettered after {crashes} crashes, limit 3");
    assert!(
        dead["reason"].as_str().unwrap().contains("delivery_limit"),
        "{dead:#}"
    );
    assert_eq!(dead["class"], "broker", "{dead:#}");
    // Nobody has seen the notice yet: without a worker the copy still looks running.
    let s = work.status().unwrap();
    assert!(
        matches!(state_of(&s, StepKind::Copy), TaskState::Running { .. }),
        "{s:#?}"
    );

    let healthy = Instant::now();
    let _w = Workers(vec![spawn_worker(&p, "")]);
    let s = wait_for(
        &work,
        Duration::from_secs(30),
        "the copy to be failed",
        |s| matches!(state_of(s, StepKind::Copy), TaskState::Failed { .. }),
    );
    eprintln!(
        "crash loop: failure recorded {:?} after the healthy worker was spawned",
        healthy.elapsed()
    );
    assert_eq!(s.state, GraphState::Failed);
    match state_of(&s, StepKind::Copy) {
        TaskState::Failed {
            reason,
            class,
            attempt,
        } => {
            assert!(reason.contains("broker.delivery_limit = 3"), "{reason}");
            assert!(
                reason.contains(&format!("iom dlq requeue --task {copy}")),
                "{reason}"
            );
            assert_eq!(*class, iom::error::ErrorClass::Transient);
            assert_eq!(*attempt, 1);
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(
        state_of(&s, StepKind::Cleanup),
        TaskState::Waiting
    ));
    // The failure record names the worker that crashed on it, not the recorder.
    let rec = work
        .failure(&iom::task::TaskId(copy.clone()))
        .unwrap()
        .unwrap();
    assert!(rec.dead_lettered);
    let recorder = format!("/{}", _w.0[0].id());
    assert!(!rec.worker.ends_with(&recorder), "{rec:?}");
    // Event watchers (`iom status --follow`, dashboards) are told too.
    let ev = rt.block_on(async {
        let mut events = broker.event_consumer("watch", 50).await.unwrap();
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), events.next())
                .await
                .expect("a dead_lettered event within 10 s")
                .unwrap()
                .unwrap();
            m.ack().await.unwrap();
            let ev: iom::events::TaskEvent = serde_json::from_slice(&m.body).unwrap();
            if ev.task_id.0 == copy && ev.state == iom::events::TaskState::DeadLettered {
                break ev;
            }
        }
    });
    assert!(ev.cause.unwrap().contains("delivery_limit"));
    // The dead letter itself stays for `iom dlq`: requeue it and the graph completes.
    iom_ok(&p, &["dlq", "requeue", "--task", &copy]);
    wait_for(
        &work,
        Duration::from_secs(60),
        "graph success after requeue",
        |s| s.state == GraphState::Succeeded,
    );
    assert_published(&a, &p.delivery, &graph);
    rt.block_on(broker.close());
}

/// `iom dlq requeue` runs a dead task as its next attempt. Without
/// `--reset-attempt` a task that gave up after `worker.max_attempts` (3) transient
/// failures gets one more try; with it, a fresh round of retries. (Before, the
/// requeue kept the attempt, and `--reset-attempt` sent attempt 1, which the
/// worker dropped as stale behind attempt 3: the graph stayed failed.)
#[test]
fn a_requeue_runs_the_next_attempt_and_a_reset_gives_a_fresh_round_of_retries() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 3);
    let work = submit(&p, &graph);
    let copy = format!("{}.copy", graph.id);
    // Attempts 1 to 5 of the copy fail transiently.
    let _w = Workers(vec![spawn_worker(&p, "copy:transient:5")]);
    let failed_at = |attempt: u32, what: &str| {
        let s = wait_for(
            &work,
            Duration::from_secs(60),
            what,
            |s| matches!(state_of(s, StepKind::Copy), TaskState::Failed { attempt: a, .. } if *a == attempt),
        );
        match state_of(&s, StepKind::Copy) {
            TaskState::Failed { reason, .. } => reason.clone(),
            other => panic!("{other:?}"),
        }
    };
    let reason = failed_at(3, "the copy to give up after 3 attempts");
    assert!(reason.starts_with("gave up after 3 attempts"), "{reason}");

    // A plain requeue: attempt 4 runs once, fails, and is final again.
    let out = iom_ok(&p, &["dlq", "requeue", "--task", &copy]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains(&format!("requeued {copy} as attempt 4\n")),
        "{text}"
    );
    let reason = failed_at(4, "the requeued attempt 4 to fail");
    assert!(reason.starts_with("gave up after 4 attempts"), "{reason}");
    let dead = dlq_list(&p);
    assert_eq!(dead.len(), 1, "the dead attempt 3 left the DLQ: {dead:#?}");

    // A reset: attempt 5 opens a fresh round, fails, is retried as attempt 6
    // (the fault covers 1 to 5), which succeeds.
    let out = iom_ok(
        &p,
        &[
            "dlq",
            "requeue",
            "--task",
            &copy,
            "--reset-attempt",
            "--json",
        ],
    );
    let sent: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (
            &sent[0]["task_id"],
            &sent[0]["attempt"],
            &sent[0]["retries_from"]
        ),
        (
            &serde_json::json!(copy),
            &serde_json::json!(5),
            &serde_json::json!(5)
        ),
        "{sent:#}"
    );
    let s = wait_for(
        &work,
        Duration::from_secs(60),
        "graph success after the reset",
        |s| s.state == GraphState::Succeeded,
    );
    match state_of(&s, StepKind::Copy) {
        TaskState::Succeeded { attempt, .. } => assert_eq!(*attempt, 6),
        other => panic!("{other:?}"),
    }
    assert!(dlq_list(&p).is_empty());
    assert_published(&a, &p.delivery, &graph);
    // Nothing of that task is left to requeue: a script learns it from the exit code.
    let out = iom_exit(&p, "", &["dlq", "requeue", "--task", &copy], 1);
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(
        told.contains(&format!("no dead letter of task {copy}")),
        "{told}"
    );
}

/// Records the events a runtime call sends; sends nothing else.
#[derive(Default)]
struct Told(std::sync::Mutex<Vec<iom::events::TaskEvent>>);

impl runtime::Transport for Told {
    async fn dispatch(&self, _: &iom::task::TaskMessage) -> Result<(), runtime::TransportError> {
        Ok(())
    }
    async fn retry_later(
        &self,
        _: &iom::task::TaskMessage,
        _: Duration,
        _: &str,
    ) -> Result<(), runtime::TransportError> {
        Ok(())
    }
    async fn dead_letter(
        &self,
        _: &iom::task::TaskMessage,
        _: &str,
        _: iom::error::ErrorClass,
    ) -> Result<(), runtime::TransportError> {
        Ok(())
    }
    async fn event(&self, ev: &iom::events::TaskEvent) {
        self.0.lock().unwrap().push(ev.clone());
    }
}

/// The graph of plate `a` as ABC_0010 planned again with `publish.gap_policy:
/// black`: the same id as with the project's settings, another probe step.
fn replanned_with_black_gaps(p: &Project, a: &PlateSpec) -> Graph {
    let mut settings = p.settings.clone();
    settings.publish.gap_policy = iom::task::GapPolicy::Black;
    let opts = PlanOptions {
        delivery_root: Some(p.delivery.clone()),
        ..PlanOptions::default()
    };
    plan::plan(
        &[row(&p.delivery, a, "ABC_0010")],
        &settings,
        &opts,
        &|_| vec![],
    )
    .unwrap()
    .graphs
    .remove(0)
}

/// A late message of a plan that a new plan of the same version replaced (same
/// task ids, another step: here the probe's gap policy) is dead-lettered as
/// obsolete, never run against the new plan's work folder.
#[test]
fn a_message_of_a_replaced_plan_is_not_run_against_the_new_one() {
    let p = project("probe, copy, cleanup", None);
    let (a, old) = one_plate(&p, 32, 18, 2);
    let new = replanned_with_black_gaps(&p, &a);
    assert_eq!(new.id, old.id);
    assert_ne!(new, old);
    let work = WorkDir::create(&new).unwrap();
    let probe = iom::task::TaskId(format!("{}.probe", old.id));
    let rt = tokio::runtime::Runtime::new().unwrap();
    let told = Told::default();
    let out = rt
        .block_on(runtime::handle(
            old.message(&probe, 1).unwrap(),
            &ctx(&p.settings),
            &told,
        ))
        .unwrap();
    match out {
        Outcome::DeadLettered(reason) => {
            assert!(reason.contains("belongs to an earlier plan"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        state_of(&work.status().unwrap(), StepKind::Probe),
        &TaskState::Waiting,
        "nothing begun or recorded"
    );
    // The new plan's own message runs.
    let out = rt
        .block_on(runtime::handle(
            new.message(&probe, 1).unwrap(),
            &ctx(&p.settings),
            &told,
        ))
        .unwrap();
    assert!(matches!(out, Outcome::Succeeded), "{out:?}");
}

/// A worker on a host that does not see the project's storage (not mounted, or
/// mounted elsewhere) dead-letters the task saying so, naming the host and the
/// folder it looked for, instead of "not a publish work folder".
#[test]
fn a_host_without_the_storage_says_so() {
    let p = project("probe, copy, cleanup", None);
    let (_, graph) = one_plate(&p, 32, 18, 2);
    WorkDir::create(&graph).unwrap();
    let probe = iom::task::TaskId(format!("{}.probe", graph.id));
    let mut msg = graph.message(&probe, 1).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = ctx(&p.settings);
    let run = |msg: &iom::task::TaskMessage| match rt
        .block_on(runtime::handle(msg.clone(), &ctx, &Told::default()))
        .unwrap()
    {
        Outcome::DeadLettered(reason) => reason,
        other => panic!("{other:?}"),
    };
    let elsewhere = p.root.join("mnt/projects/.iom/publishes");
    msg.work_dir = elsewhere.join(&graph.id.0);
    let reason = run(&msg);
    assert!(
        reason.contains(&format!(
            "this host ({}) does not see {}",
            ctx.worker,
            elsewhere.display()
        )) && reason.contains("iom dlq requeue --all"),
        "{reason}"
    );
    // The storage is there but the publish's folder is not: the usual refusal.
    msg.work_dir = p.root.join(".iom/publishes/no-such-publish");
    let reason = run(&msg);
    assert!(reason.contains("is not a publish work folder"), "{reason}");
}

/// `iom dlq` tells a dead letter that needs no requeue from one that does
/// (`runtime::settled`), and never guesses: a standing failure, and a folder this
/// machine cannot see, are not settled.
#[test]
fn a_dead_letter_is_settled_once_its_task_is_taken_care_of() {
    use runtime::Settled;
    let p = project("probe, copy, cleanup", None);
    let (a, old) = one_plate(&p, 32, 18, 2);
    let work = WorkDir::create(&old).unwrap();
    let probe = iom::task::TaskId(format!("{}.probe", old.id));
    let dead = old.message(&probe, 1).unwrap();
    assert_eq!(runtime::settled(&dead), None, "waiting: it stands");
    assert_eq!(work.begin_attempt(&probe, 1, "w1").unwrap(), Begin::Run);
    assert_eq!(runtime::settled(&dead), None, "its own attempt: it stands");
    assert_eq!(work.begin_attempt(&probe, 2, "w2").unwrap(), Begin::Run);
    match runtime::settled(&dead) {
        Some(Settled::RanSince(TaskState::Running { attempt: 2, .. })) => {}
        other => panic!("{other:?}"),
    }

    // Planned again with other settings: the old folder moves aside, then the new
    // plan's manifest holds another probe.
    let aside = WorkDir::supersede(work.path()).unwrap();
    assert_eq!(runtime::settled(&dead), Some(Settled::Replaced));
    let new = replanned_with_black_gaps(&p, &a);
    let work = WorkDir::create(&new).unwrap();
    assert_eq!(runtime::settled(&dead), Some(Settled::Replaced));
    assert_eq!(
        runtime::settled(&new.message(&probe, 1).unwrap()),
        None,
        "the new plan's own message stands"
    );

    // Removed by hand (nothing moved aside): removed.
    std::fs::remove_dir_all(work.path()).unwrap();
    std::fs::remove_dir_all(&aside).unwrap();
    assert_eq!(runtime::settled(&dead), Some(Settled::Removed));
    // A machine that does not see the project's storage cannot tell.
    let mut elsewhere = dead.clone();
    elsewhere.work_dir = p.root.join("not-mounted/.iom/publishes").join(&old.id.0);
    assert_eq!(runtime::settled(&elsewhere), None);
}

/// The broker's dead-letter notice about a crash-looped attempt and a human's
/// `iom dlq requeue` of it can be handled in either order by a worker that starts
/// after both. Either way the requeued attempt is what `iom status` shows: a
/// notice after it started is fenced off; a notice before it records the failure,
/// which the new attempt's start then supersedes.
#[test]
fn a_dead_letter_notice_never_overrules_the_requeued_attempt() {
    let p = project("probe, copy, cleanup", None);
    let (_, graph) = one_plate(&p, 32, 18, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let ctx = ctx(&p.settings);
    let copy = iom::task::TaskId(format!("{}.copy", graph.id));
    let dead = graph.message(&copy, 1).unwrap();
    let requeued = dead.requeued(false);
    assert_eq!(requeued.attempt, 2);
    let notice = |work: &WorkDir, told: &Told| {
        let cause = "delivery_limit in t.tasks.copy".to_string();
        let recorded = rt
            .block_on(runtime::record_broker_death(&dead, cause, &ctx, told))
            .unwrap();
        (
            recorded,
            state_of(&work.status().unwrap(), StepKind::Copy).clone(),
        )
    };

    // The requeued attempt started first: the notice records nothing.
    let work = WorkDir::create(&graph).unwrap();
    work.begin_attempt(&copy, 1, "crashed").unwrap();
    work.begin_attempt(&copy, 2, "healthy").unwrap();
    let told = Told::default();
    let (recorded, state) = notice(&work, &told);
    assert!(!recorded);
    assert!(
        matches!(state, TaskState::Running { attempt: 2, .. }),
        "{state:?}"
    );
    assert!(told.0.lock().unwrap().is_empty());
    assert!(work.failure(&copy).unwrap().is_none());

    // The notice first: the failure of attempt 1 is recorded and told, then the
    // requeued attempt's start supersedes it; the same notice again changes nothing.
    std::fs::remove_dir_all(work.path()).unwrap();
    let work = WorkDir::create(&graph).unwrap();
    work.begin_attempt(&copy, 1, "crashed").unwrap();
    let told = Told::default();
    let (recorded, state) = notice(&work, &told);
    assert!(recorded);
    assert!(
        matches!(state, TaskState::Failed { attempt: 1, .. }),
        "{state:?}"
    );
    assert_eq!(told.0.lock().unwrap().len(), 1);
    work.begin_attempt(&copy, 2, "healthy").unwrap();
    let (recorded, state) = notice(&work, &told);
    assert!(!recorded);
    assert!(
        matches!(state, TaskState::Running { attempt: 2, .. }),
        "{state:?}"
    );
    assert_eq!(told.0.lock().unwrap().len(), 1);
}

#[test]
fn broker_connection_closed_by_the_broker_the_worker_recovers() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 30);
    let work = submit(&p, &graph);
    // A 10 s copy outlives the close (rabbitmqctl takes a few seconds) and the
    // reconnect, and the worker's two slots leave room for the broker's
    // redelivery of it beside the first run.
    let _w = Workers(vec![spawn_worker(&p, "copy:sleep_ms:10000")]);
    wait_for(&work, Duration::from_secs(30), "copy running", |s| {
        matches!(state_of(s, StepKind::Copy), TaskState::Running { .. })
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    let closed_at = iom::events::now_ms();
    let closed = rt.block_on(vh.close_connections());
    assert!(closed >= 1);
    let s = wait_for(&work, Duration::from_secs(90), "graph success", |s| {
        s.state != GraphState::Running
    });
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    assert_published(&a, &p.delivery, &graph);
    // The redelivered copy waited for the run in progress (which finished it)
    // instead of starting the copy again beside it: the attempt's one start is
    // the first, from before the connection was closed.
    let copy = iom::task::TaskId(format!("{}.copy", graph.id));
    let run = work.latest_run(&copy).unwrap().unwrap();
    assert_eq!(run.attempt, 1);
    assert!(
        run.started_at_ms < closed_at,
        "the copy started again {} ms after the connection was closed",
        run.started_at_ms - closed_at
    );
    assert_eq!(work.completion(&copy).unwrap().unwrap().attempt, 1);
}

#[test]
fn broker_sigterm_finishes_the_running_step_then_exits() {
    let vh = Vhost::new();
    let p = project("probe, copy", Some(&vh));
    let (_, graph) = one_plate(&p, 32, 18, 20);
    let work = submit(&p, &graph);
    let mut w = spawn_worker(&p, "copy:frame_ms:50");
    wait_for(&work, Duration::from_secs(30), "copy running", |s| {
        matches!(state_of(s, StepKind::Copy), TaskState::Running { .. })
    });
    sigterm(&w);
    let status = wait_exit(&mut w, Duration::from_secs(30), "the worker to stop");
    assert!(status.success(), "{status:?}");
    let s = work.status().unwrap();
    assert!(
        matches!(state_of(&s, StepKind::Copy), TaskState::Succeeded { .. }),
        "{s:#?}"
    );
    assert_eq!(s.state, GraphState::Succeeded);
}

/// A step that outlives the SIGTERM grace period is stopped (it checks for
/// cancellation between frames) and the worker exits; nothing is recorded for
/// the stopped attempt, and its task comes back to the next worker. Stopping
/// workers again and again (rolling restarts) does not count toward the queue's
/// delivery limit (3 here): the fifth worker still gets the task, and nothing is
/// dead-lettered.
#[test]
fn broker_sigterm_stops_a_step_that_outlives_the_grace_period() {
    let vh = Vhost::new();
    let p = project("probe, copy", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 3);
    let work = submit(&p, &graph);
    for round in 1..=4 {
        let mut w = command(&p, "iom-worker", "copy:sleep_ms:120000")
            .env("IOM__WORKER__SHUTDOWN_GRACE_SECS", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let pid = format!("/{}", w.id());
        wait_for(
            &work,
            Duration::from_secs(30),
            "copy running",
            |s| matches!(state_of(s, StepKind::Copy), TaskState::Running { ref worker, .. } if worker.ends_with(&pid)),
        );
        sigterm(&w);
        let status = wait_exit(
            &mut w,
            Duration::from_secs(15),
            "the worker to stop after its grace",
        );
        assert!(status.success(), "round {round}: {status:?}");
        let s = work.status().unwrap();
        assert!(
            matches!(
                state_of(&s, StepKind::Copy),
                TaskState::Running { attempt: 1, .. }
            ),
            "round {round}: nothing recorded for the stopped step: {s:#?}"
        );
    }
    let _w = Workers(vec![spawn_worker(&p, "")]);
    let s = wait_for(&work, Duration::from_secs(60), "graph success", |s| {
        s.state == GraphState::Succeeded
    });
    assert!(
        matches!(state_of(&s, StepKind::Copy), TaskState::Succeeded { .. }),
        "{s:#?}"
    );
    assert_published(&a, &p.delivery, &graph);
    assert!(dlq_list(&p).is_empty(), "{:#?}", dlq_list(&p));
}

#[test]
fn bad_rows_are_refused_before_anything_is_published() {
    let vh = Vhost::new();
    let p = project("probe, copy", Some(&vh));
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 2);
    sample::write_plate(&p.delivery, &a).unwrap();
    let good = row(&p.delivery, &a, "ABC_0010");
    let traversal = row(&p.delivery, &a, "../../../etc");
    let mut outside = row(&p.delivery, &a, "ABC_0030");
    outside.scan_path = "/etc".into();
    let illegal = row(&p.delivery, &a, "ABC 0040/x");
    // The planner refuses bad names, all reported at once, by sheet row …
    let sheet = p.delivery.join("scanlist_01.xlsx");
    iom::scanlist::write::write(
        &sheet,
        &[good.clone(), Row::default(), traversal, illegal],
        &[],
        &p.settings.scanlist,
    )
    .unwrap();
    let out = command(&p, "iom", "")
        .arg("publish")
        .arg(&sheet)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("nothing was published"), "{err}");
    assert!(
        // Sheet rows as the user sees them, the blank row 3 counted.
        err.contains("row 4") && err.contains("row 5") && err.contains("shot_name"),
        "{err}"
    );
    // … and the reader refuses a path outside the delivery.
    let sheet2 = p.delivery.join("scanlist_02.xlsx");
    iom::scanlist::write::write(&sheet2, &[good, outside], &[], &p.settings.scanlist).unwrap();
    let out = command(&p, "iom", "")
        .arg("publish")
        .arg(&sheet2)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("nothing was published") && err.contains("/etc"),
        "{err}"
    );
    assert!(!p.root.join(".iom/publishes").exists());
    assert!(!p.root.join("seq").exists());
    // Nothing reached the broker either.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Broker::connect(&vh.config()).await.unwrap();
        b.declare_topology().await.unwrap();
        let depths = b.queue_depths().await.unwrap();
        assert!(depths.iter().all(|(_, n, _)| *n == 0), "{depths:?}");
        b.close().await;
    });
}

#[test]
fn cli_embedded_publish_with_a_transient_fault_retries_and_succeeds() {
    let p = project("probe, copy, register, cleanup", None);
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

    // Dry run: a tree, nothing written.
    let out = command(&p, "iom", "")
        .args(["publish", "--dry-run"])
        .arg(&sheet)
        .output()
        .unwrap();
    let tree = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        tree.contains("copy org") && tree.contains("sg version") && tree.contains("rm"),
        "{tree}"
    );
    assert!(!p.root.join(".iom/publishes").exists());

    let out = command(&p, "iom", "copy:transient:1")
        .args(["publish", "--json"])
        .arg(&sheet)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "succeeded");
    let copy = v[0]["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["kind"] == "copy")
        .unwrap();
    assert_eq!(copy["attempt"], 2, "{copy:#}");
    // Status by graph id, after the fact.
    let id = v[0]["graph_id"].as_str().unwrap();
    let out = command(&p, "iom", "")
        .args(["status", id])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("done #2"));
}

/// The in-process CLI tells each task's events in order: a task's `queued` line
/// never comes after its `started` line (the event follows the dispatch mark,
/// and a free slot can start the task first; the late line read as a second
/// run). Checked over four graphs, where it used to happen on most runs.
#[test]
fn cli_embedded_event_lines_are_in_order() {
    let p = project("probe, copy, thumbnail, register, cleanup", None);
    let rows: Vec<Row> = (1..=4)
        .map(|i| {
            let a = PlateSpec::exr("A001", &format!("A001C00{i}."), 32, 18, 3);
            sample::write_plate(&p.delivery, &a).unwrap();
            row(&p.delivery, &a, &format!("ABC_00{i}0"))
        })
        .collect();
    let sheet = p.delivery.join("scanlist_01.xlsx");
    iom::scanlist::write::write(&sheet, &rows, &[], &p.settings.scanlist).unwrap();
    let out = iom_ok(&p, &["publish", sheet.to_str().unwrap()]);
    let told = String::from_utf8_lossy(&out.stderr);
    let mut started = std::collections::HashSet::new();
    let mut lines = 0;
    for line in told.lines() {
        let mut words = line.split_whitespace();
        let (Some(state), Some(task), Some("(attempt"), Some(attempt)) =
            (words.next(), words.next(), words.next(), words.next())
        else {
            continue;
        };
        let key = (
            task.to_string(),
            attempt.trim_end_matches([')', ':']).to_string(),
        );
        match state {
            "started" => assert!(started.insert(key), "started twice: {line}\n{told}"),
            "queued" => assert!(
                !started.contains(&key),
                "queued after started: {line}\n{told}"
            ),
            _ => {}
        }
        lines += 1;
    }
    // 4 graphs × 5 tasks, each at least started and succeeded.
    assert!(
        lines >= 40 && started.len() == 20,
        "{lines} lines, {} started:\n{told}",
        started.len()
    );
}

/// Embedded mode has no DLQ: a task that gave up is run again, once its cause is
/// fixed, by `iom resume --retry-failed`, as its next attempt with a fresh round
/// of retries, and the graph then finishes.
#[test]
fn cli_embedded_resume_retry_failed_reruns_a_task_that_gave_up() {
    let p = project("probe, copy, register, cleanup", None);
    let (a, sheet) = plate_and_sheet(&p);
    let sheet = sheet.as_str();
    let listed = iom_exit(&p, "", &["status"], 0);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.starts_with("no publishes under"), "{text}");
    let copy_of = |out: &std::process::Output| {
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let v = if v.is_array() { v[0].clone() } else { v };
        let copy = v["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["kind"] == "copy")
            .unwrap()
            .clone();
        (v, copy)
    };

    // Every attempt of the first round fails (max_attempts 3).
    let out = iom_exit(&p, "copy:transient:4", &["publish", "--json", sheet], 1);
    let (v, copy) = copy_of(&out);
    assert_eq!(v["state"], "failed");
    assert_eq!(copy["state"], "failed", "{copy:#}");
    assert_eq!(copy["attempt"], 3, "{copy:#}");
    let id = v["graph_id"].as_str().unwrap().to_string();
    // `iom status` without a publish lists the project's publishes.
    let listed = iom_exit(&p, "", &["status", "--json"], 1);
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 1, "{list:#}");
    assert_eq!(list[0]["graph_id"], id.as_str());
    assert_eq!(list[0]["state"], "failed");
    assert_eq!(
        (list[0]["failed"].as_u64(), list[0]["succeeded"].as_u64()),
        (Some(1), Some(1)),
        "{list:#}"
    );

    // A plain resume has nothing to do for a failed task, and says what would.
    let out = iom_exit(&p, "", &["resume", &id], 1);
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(
        hint.contains(&format!("iom resume {id} --retry-failed")),
        "{hint}"
    );

    // The cause "fixed" up to attempt 4: attempt 4 fails (1 of a fresh round),
    // attempt 5 succeeds, and register and cleanup follow.
    let out = iom_exit(
        &p,
        "copy:transient:4",
        &["resume", &id, "--retry-failed"],
        0,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("done #5"), "{text}");
    let (v, copy) = copy_of(&iom_exit(&p, "", &["status", &id, "--json"], 0));
    assert_eq!(v["state"], "succeeded", "{v:#}");
    assert_eq!(copy["attempt"], 5, "{v:#}");
    let listed = iom_exit(&p, "", &["status"], 0);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(
        text.starts_with(&id) && text.contains("succeeded    4/4 done"),
        "{text}"
    );
    let graph = WorkDir::open(&p.root.join(".iom/publishes").join(&id))
        .unwrap()
        .manifest()
        .unwrap();
    assert_published(&a, &p.delivery, &graph);
    assert!(!tracker_docs(&p.root).is_empty(), "register ran");
}

/// A 3-frame EXR plate in the delivery and `scanlist_01.xlsx` with its row
/// checked as shot ABC_0010; returns the plate and the sheet's path.
fn plate_and_sheet(p: &Project) -> (PlateSpec, String) {
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 3);
    sample::write_plate(&p.delivery, &a).unwrap();
    let sheet = p.delivery.join("scanlist_01.xlsx");
    let rows = [row(&p.delivery, &a, "ABC_0010")];
    iom::scanlist::write::write(&sheet, &rows, &[], &p.settings.scanlist).unwrap();
    (a, sheet.to_str().unwrap().to_string())
}

/// Starts `iom publish --json` (embedded) of one plate with `fault`, and waits
/// until its copy has started. Returns the process, the work folder and the plate.
fn embedded_publish_until_copy_runs(p: &Project, fault: &str) -> (Child, WorkDir, PlateSpec) {
    let (a, sheet) = plate_and_sheet(p);
    let child = command(p, "iom", fault)
        // In-process also when `p` has a broker.
        .args(["publish", "--json", "--embedded"])
        .arg(&sheet)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let publishes = p.root.join(".iom/publishes");
    let t0 = Instant::now();
    let work = loop {
        let found = std::fs::read_dir(&publishes)
            .ok()
            .and_then(|mut d| d.next())
            .and_then(|e| WorkDir::open(&e.unwrap().path()).ok());
        if let Some(w) = found {
            break w;
        }
        assert!(t0.elapsed() < Duration::from_secs(30), "no work folder");
        std::thread::sleep(Duration::from_millis(50));
    };
    wait_for(&work, Duration::from_secs(30), "copy running", |s| {
        matches!(state_of(s, StepKind::Copy), TaskState::Running { .. })
    });
    (child, work, a)
}

/// Starts an in-process publish of one plate with `fault`, and once its copy
/// runs stops it with two SIGTERMs (Ctrl-C twice: the running copy is cut off),
/// within `within`. Returns the work folder, the plate and the publish's stderr,
/// having checked exit 130 and the state `interrupted` with the copy cut off at
/// attempt 1 (nothing recorded for it).
fn cut_off_embedded_publish(
    p: &Project,
    fault: &str,
    within: Duration,
) -> (WorkDir, PlateSpec, String) {
    let (mut child, work, a) = embedded_publish_until_copy_runs(p, fault);
    sigterm(&child);
    std::thread::sleep(Duration::from_millis(500));
    sigterm(&child);
    let st = wait_exit(&mut child, within, "iom publish to stop");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(st.code(), Some(130), "{err}");
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Interrupted, "{s:#?}");
    assert!(
        matches!(
            state_of(&s, StepKind::Copy),
            TaskState::Running { attempt: 1, .. }
        ),
        "no failure recorded for a stopped step: {s:#?}"
    );
    (work, a, err)
}

/// Sends SIGTERM to `child` (what `systemctl stop` or a first Ctrl-C does).
fn sigterm(child: &Child) {
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
}

/// Ctrl-C (here SIGTERM) stops an in-process publish cleanly: the running copy
/// finishes, nothing new starts, the exit code is 130 and the publish shows
/// `interrupted` with the command that continues it. While it ran, a second
/// process could not run the same publish; `iom resume` then finishes it.
#[test]
fn cli_embedded_publish_stops_on_sigterm_and_resume_finishes_it() {
    let p = project("probe, copy, register, cleanup", None);
    let (mut child, work, a) = embedded_publish_until_copy_runs(&p, "copy:sleep_ms:1500");
    let id = work.manifest().unwrap().id.0;

    // A second run of the same publish is refused while the first holds it.
    let out = iom_exit(&p, "", &["resume", &id], 3);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("running in another iom process"), "{err}");
    assert_eq!(work.status().unwrap().state, GraphState::Running);

    sigterm(&child);
    let st = wait_exit(&mut child, Duration::from_secs(30), "iom publish to stop");
    let out = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(st.code(), Some(130), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "interrupted", "{v:#}");
    assert!(err.contains(&format!("iom resume {id}")), "{err}");
    // The running copy was let finish; register never started.
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Interrupted);
    assert_eq!(succeeded_at(&s, StepKind::Copy), Some(1), "{s:#?}");
    assert!(
        matches!(
            state_of(&s, StepKind::Register),
            TaskState::Dispatched | TaskState::Waiting
        ),
        "{s:#?}"
    );
    let out = iom_exit(&p, "", &["status", &id], 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("=> interrupted") && text.contains("register  [not run; runs on resume]"),
        "{text}"
    );
    let listed = iom_exit(&p, "", &["status", "--json"], 1);
    let list: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(list[0]["state"], "interrupted", "{list:#}");

    // The resume sends what the stopped run had queued, and the graph finishes.
    let out = iom_exit(&p, "", &["resume", &id], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("resumed in-process: succeeded"), "{text}");
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Succeeded);
    assert_eq!(succeeded_at(&s, StepKind::Register), Some(1), "{s:#?}");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
    assert!(!tracker_docs(&p.root).is_empty(), "register ran");
}

/// A second Ctrl-C stops the running step at once: nothing is recorded for it
/// (no failure, no retry spent), and the resume runs it again as its next
/// attempt.
#[test]
fn cli_embedded_second_sigterm_stops_the_running_step_and_resume_reruns_it() {
    let p = project("probe, copy, cleanup", None);
    let (work, a, err) =
        cut_off_embedded_publish(&p, "copy:sleep_ms:60000", Duration::from_secs(20));
    let id = work.manifest().unwrap().id.0;
    assert!(err.contains("stopping the running steps"), "{err}");
    let out = iom_exit(&p, "", &["status", &id], 1);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("copy  [cut off #1 on "), "{text}");

    let out = iom_exit(&p, "", &["resume", &id], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("done #2"), "{text}");
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Succeeded);
    assert_eq!(succeeded_at(&s, StepKind::Copy), Some(2), "{s:#?}");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
}

/// A step that does not stop when asked (stuck in a system call: here a copy
/// blocked for 2 minutes without checking for cancellation) does not keep an
/// interrupted in-process publish from exiting: after the second SIGTERM it gets
/// `runtime::STOP_WAIT` (10 s) and is abandoned; nothing is recorded for it, and
/// `iom resume` runs it again.
#[test]
fn cli_embedded_stop_abandons_a_step_that_does_not_stop() {
    let p = project("probe, copy, cleanup", None);
    let (work, a, _) =
        cut_off_embedded_publish(&p, "copy:stuck_ms:120000", Duration::from_secs(30));
    let id = work.manifest().unwrap().id.0;
    let out = iom_exit(&p, "", &["resume", &id], 0);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("done #2"), "{text}");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
    // Once it has succeeded, a resume says there is nothing to do.
    let out = iom_ok(&p, &["resume", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("has succeeded: nothing to resume"), "{text}");
}

/// Publishing the same rows again after a failure (the cause fixed) plans the
/// same graph and runs its failed tasks again; nothing that succeeded is redone.
#[test]
fn cli_embedded_publishing_again_reruns_the_failed_tasks() {
    let p = project("probe, copy, cleanup", None);
    let (a, sheet) = plate_and_sheet(&p);
    let sheet = sheet.as_str();
    let out = iom_exit(&p, "copy:permanent:1", &["publish", "--json", sheet], 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "failed", "{v:#}");
    let id = v[0]["graph_id"].as_str().unwrap().to_string();

    let out = iom_exit(&p, "", &["publish", "--json", sheet], 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("{id} was published before and 1 task(s) failed")),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["graph_id"].as_str(), &v[0]["state"]),
        (Some(id.as_str()), &serde_json::json!("succeeded")),
        "{v:#}"
    );
    let work = WorkDir::open(&p.root.join(".iom/publishes").join(&id)).unwrap();
    let s = work.status().unwrap();
    assert_eq!(succeeded_at(&s, StepKind::Copy), Some(2), "{s:#?}");
    assert_eq!(
        succeeded_at(&s, StepKind::Probe),
        Some(1),
        "the probe is not redone: {s:#?}"
    );
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
}

/// A publish that failed after its frames were published (here the tracker
/// refused the registration for good): publishing the same rows again continues
/// that version, instead of publishing v002 beside a half-published v001.
/// Once v001 has finished, the same rows make v002 as before.
#[test]
fn cli_embedded_publishing_again_continues_the_half_published_version() {
    let p = project("probe, copy, register, cleanup", None);
    let (a, sheet) = plate_and_sheet(&p);
    let sheet = sheet.as_str();
    let out = iom_exit(&p, "register:permanent:1", &["publish", "--json", sheet], 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "failed", "{v:#}");
    let id = v[0]["graph_id"].as_str().unwrap().to_string();
    let type_dir = p.root.join("seq/ABC/ABC_0010/plate/org");
    let versions = || {
        let mut v: Vec<String> = std::fs::read_dir(&type_dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with('v'))
            .collect();
        v.sort();
        v
    };
    assert_eq!(versions(), ["v001"], "the frames were published");

    let out = iom_exit(&p, "", &["publish", "--json", sheet], 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("row 2: continuing v001 of ABC_0010 org")
            && err.contains(&format!("{id} was published before and 1 task(s) failed")),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["graph_id"].as_str(), &v[0]["state"]),
        (Some(id.as_str()), &serde_json::json!("succeeded")),
        "{v:#}"
    );
    assert_eq!(versions(), ["v001"], "no v002 beside the unfinished v001");
    let work = WorkDir::open(&p.root.join(".iom/publishes").join(&id)).unwrap();
    let s = work.status().unwrap();
    assert_eq!(succeeded_at(&s, StepKind::Register), Some(2), "{s:#?}");
    assert_eq!(
        succeeded_at(&s, StepKind::Copy),
        Some(1),
        "copied once: {s:#?}"
    );
    assert_published(&a, &p.delivery, &work.manifest().unwrap());

    // v001 is finished now: the same rows are a new version.
    let out = iom_exit(&p, "", &["publish", "--json", sheet], 0);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!err.contains("continuing"), "{err}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(v[0]["graph_id"].as_str(), Some(id.as_str()), "{v:#}");
    assert_eq!(versions(), ["v001", "v002"]);
}

/// `p`'s settings without a broker (the embedded default), as a workstation
/// with no farm settings would read the same project.
fn no_broker_config(p: &Project) -> PathBuf {
    let yaml = std::fs::read_to_string(&p.config).unwrap();
    let url = yaml
        .lines()
        .find(|l| l.trim_start().starts_with("url:"))
        .unwrap()
        .to_string();
    let local = p.config.with_file_name("no-broker.yml");
    std::fs::write(&local, yaml.replace(&url, "  url: \"\"")).unwrap();
    local
}

/// A publish submitted to the farm is not run in-process as well by a user
/// without the farm settings (its tasks would run twice): `iom resume` and a
/// publish of the same rows are refused, naming the submitter and the way out;
/// with `--embedded` the graph is taken back and finished in-process.
#[test]
fn a_farm_publish_runs_in_process_only_when_taken_back() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, sheet) = plate_and_sheet(&p);
    let out = iom_ok(&p, &["publish", "--json", &sheet]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["graph_id"].as_str().unwrap().to_string();
    let work = WorkDir::open(&p.root.join(".iom/publishes").join(&id)).unwrap();
    assert!(work.farm_handoff().unwrap().is_some());
    // No worker runs: the probe waits on the farm's queue.
    let local = no_broker_config(&p);
    let here = |args: &[&str]| {
        command(&p, "iom", "")
            .env("IOM_CONFIG", &local)
            .args(args)
            .output()
            .unwrap()
    };
    for args in [vec!["resume", id.as_str()], vec!["publish", sheet.as_str()]] {
        let out = here(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(3), "{args:?}: {err}");
        assert!(
            err.contains(&format!("publish {id} was submitted to the farm (by "))
                && err.contains("pass --embedded"),
            "{args:?}: {err}"
        );
        assert_eq!(
            state_of(&work.status().unwrap(), StepKind::Probe),
            &TaskState::Dispatched,
            "nothing ran in-process: {args:?}"
        );
    }

    let out = here(&["resume", &id, "--embedded"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    assert_eq!(work.farm_handoff().unwrap(), None, "taken back");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
}

/// An in-process publish stopped mid-copy, then handed to the farm with `iom
/// resume` (broker configured): what the stopped run had started is sent to the
/// farm too (it was on no queue), and the farm finishes the publish. Before,
/// the cut-off copy stayed `running` for ever.
#[test]
fn an_interrupted_in_process_publish_resumed_on_the_farm_finishes_there() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (work, a, _) = cut_off_embedded_publish(&p, "copy:sleep_ms:60000", Duration::from_secs(20));
    let id = work.manifest().unwrap().id.0;

    let out = iom_ok(&p, &["resume", &id]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("re-published 1 task(s)"), "{text}");
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Running, "on the farm now: {s:#?}");
    let _w = Workers(vec![spawn_worker(&p, "")]);
    wait_for(&work, Duration::from_secs(60), "the farm to finish", |s| {
        s.state == GraphState::Succeeded
    });
    let s = work.status().unwrap();
    assert_eq!(succeeded_at(&s, StepKind::Copy), Some(2), "{s:#?}");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
}

/// A publish that failed before publishing anything (the probe found a missing
/// frame, gap policy `fail`), published again with other settings (gap policy
/// `black`): the same version is planned again, differently; the new plan
/// replaces the old one, whose work folder is kept aside, and `iom status`
/// lists the one publish. Before, the second publish was refused ("already
/// holds a different publish graph") until the user removed the folder by hand.
#[test]
fn cli_publishing_with_other_settings_replaces_a_plan_that_published_nothing() {
    let p = project("probe, copy, cleanup", None);
    let (a, sheet) = plate_and_sheet(&p);
    let sheet = sheet.as_str();
    std::fs::remove_file(p.delivery.join("A001/A001C003.1002.exr")).unwrap();
    let out = iom_exit(&p, "", &["publish", "--json", sheet], 1);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["graph_id"].as_str().unwrap().to_string();
    assert!(id.contains("_v001-"), "{id}");

    let out = command(&p, "iom", "")
        .env("IOM__PUBLISH__GAP_POLICY", "black")
        .args(["publish", "--json", sheet])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("row 2: v001 of ABC_0010 org was planned before from other rows or settings")
            && err.contains("this publish replaces that plan")
            && err.contains(".superseded"),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (v[0]["graph_id"].as_str(), &v[0]["state"]),
        (Some(id.as_str()), &serde_json::json!("succeeded")),
        "{v:#}"
    );
    let publishes = p.root.join(".iom/publishes");
    let kept: Vec<_> = std::fs::read_dir(publishes.join(".superseded"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(kept.len() == 1 && kept[0].starts_with(&id), "{kept:?}");
    let out = iom_ok(&p, &["status", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list:#}");
    let frames = std::fs::read_dir(p.root.join("seq/ABC/ABC_0010/plate/org/v001"))
        .unwrap()
        .count();
    assert_eq!(
        frames as i64,
        a.count - 1,
        "the frames there are (proxies and movies fill the gap)"
    );
}

/// A submit that died after writing its work folder and before sending
/// anything left a graph that nothing runs: it does not block a new plan of its
/// version (before, it showed `running` and was taken for one).
#[test]
fn a_submit_that_died_before_sending_does_not_block_a_new_plan() {
    let p = project("probe, copy, cleanup", None);
    let (a, sheet) = plate_and_sheet(&p);
    let ghost = plan_rows(&p, &[row(&p.delivery, &a, "ABC_0010")]).remove(0);
    WorkDir::create(&ghost).unwrap();
    let out = command(&p, "iom", "")
        .env("IOM__PUBLISH__GAP_POLICY", "black")
        .args(["publish", "--json", &sheet])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains(&format!(
            "(publish {}, never sent); this publish replaces that plan",
            ghost.id
        )),
        "{err}"
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["state"], "succeeded", "{v:#}");
}

/// The version a publish takes is being published now from another plan (on
/// the farm, no worker has taken it yet): the publish is refused before any
/// work folder is written, also for its other rows.
#[test]
fn a_publish_is_refused_whole_while_its_version_runs_from_another_plan() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let a = PlateSpec::exr("A001", "A001C003.", 32, 18, 3);
    let b = PlateSpec::exr("B001", "B001C001.", 32, 18, 3);
    sample::write_plate(&p.delivery, &a).unwrap();
    sample::write_plate(&p.delivery, &b).unwrap();
    let sheet = p.delivery.join("scanlist_01.xlsx");
    let mut first = row(&p.delivery, &a, "ABC_0010");
    first.check = false;
    let rows = [first.clone(), row(&p.delivery, &b, "ABC_0020")];
    iom::scanlist::write::write(&sheet, &rows, &[], &p.settings.scanlist).unwrap();
    let sheet = sheet.to_str().unwrap();
    iom_ok(&p, &["publish", sheet]);
    let publishes = p.root.join(".iom/publishes");
    let count = || {
        std::fs::read_dir(&publishes)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count()
    };
    assert_eq!(count(), 1);

    first.check = true;
    let rows = [first, row(&p.delivery, &b, "ABC_0020")];
    iom::scanlist::write::write(
        &p.delivery.join("scanlist_02.xlsx"),
        &rows,
        &[],
        &p.settings.scanlist,
    )
    .unwrap();
    let out = command(&p, "iom", "")
        .env("IOM__PUBLISH__GAP_POLICY", "black")
        .args(["publish"])
        .arg(p.delivery.join("scanlist_02.xlsx"))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(
            "row 3: v001 of ABC_0020 org is being published now from other rows or settings"
        ) && err.contains("nothing was published"),
        "{err}"
    );
    assert_eq!(count(), 1, "no work folder written for row 2 either");
}

/// Output into a closed pipe (`iom config | head -1` once head has gone) ends
/// iom quietly by SIGPIPE, as any Unix tool, instead of a panic and its
/// backtrace on the terminal.
#[test]
fn output_into_a_closed_pipe_ends_quietly() {
    use std::os::unix::process::ExitStatusExt;
    let p = project("probe, copy", None);
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = command(&p, "iom", "")
        .arg("config")
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGPIPE),
        "{:?}: {err}",
        out.status
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn resume_republishes_what_a_crashed_submit_left_undispatched() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 3);
    // The submitter wrote the work folder, then died before publishing anything.
    let work = WorkDir::create(&graph).unwrap();
    assert!(work
        .status()
        .unwrap()
        .tasks
        .iter()
        .all(|t| t.state == TaskState::Waiting));
    let _w = Workers(vec![spawn_worker(&p, "")]);
    let out = iom_ok(&p, &["resume", &graph.id.0]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-published 1 task(s)"));
    // `status --follow` returns once the publish settles, with its exit code.
    let out = iom_ok(&p, &["status", "--follow", "--json", &graph.id.0]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["state"], "succeeded");
    assert_published(&a, &p.delivery, &graph);
    // Resuming a finished publish sends nothing, and says why.
    let out = iom_ok(&p, &["resume", &graph.id.0]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("has succeeded: nothing to resume"));
}

/// With a broker, `iom resume --retry-failed` republishes a failed task as its
/// next attempt (the farm's other way besides `iom dlq requeue`), and the failed
/// graph's status says how to run it again.
#[test]
fn resume_retry_failed_with_a_broker_republishes_the_failed_task() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, graph) = one_plate(&p, 32, 18, 3);
    let work = submit(&p, &graph);
    let _w = Workers(vec![spawn_worker(&p, "copy:permanent:1")]);
    wait_for(&work, Duration::from_secs(60), "the copy to fail", |s| {
        s.state == GraphState::Failed
    });
    let copy = format!("{}.copy", graph.id);
    let out = iom_exit(&p, "", &["status", &graph.id.0], 1);
    let hint = String::from_utf8_lossy(&out.stderr);
    assert!(
        hint.contains(&format!("iom dlq requeue --task {copy} --reset-attempt")),
        "{hint}"
    );

    let out = iom_ok(&p, &["resume", &graph.id.0, "--retry-failed"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("re-published 1 task(s)"), "{text}");
    let s = wait_for(&work, Duration::from_secs(60), "graph success", |s| {
        s.state == GraphState::Succeeded
    });
    match state_of(&s, StepKind::Copy) {
        TaskState::Succeeded { attempt, .. } => assert_eq!(*attempt, 2),
        other => panic!("{other:?}"),
    }
    assert_published(&a, &p.delivery, &graph);
    // The old dead letter stays in the DLQ; the listing says it is history.
    let dead = dlq_list(&p);
    assert_eq!(dead.len(), 1, "{dead:#?}");
    assert_eq!(dead[0]["task_id"], copy.as_str());
    let settled = dead[0]["settled"].as_str().unwrap_or_default();
    assert!(settled.starts_with("since then: done #2"), "{dead:#?}");
    let out = iom_ok(&p, &["dlq", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[since then: done #2"), "{text}");
    // A requeue leaves it alone (it would only run the task twice) and says so.
    let out = iom_ok(&p, &["dlq", "requeue", "--all"]);
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(!told.contains("ERROR"), "{told}");
    assert!(
        told.contains(&format!(
            "left the dead letter of {copy} in the DLQ: since then: done #2"
        )),
        "{told}"
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("requeued 0 task(s)"));
    assert_eq!(dlq_list(&p).len(), 1);
    // Nothing to drop by these selectors; `drop` needs one.
    let out = iom_ok(&p, &["dlq", "drop", "--unreadable", "--json"]);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap(),
        serde_json::json!([])
    );
    iom_exit(&p, "", &["dlq", "drop"], 2);
    // `drop --settled` removes it for good. (Its publishing channel is closed
    // before the connection: lapin closing a dropped channel in the background
    // raced the connection's close and logged "Connection error" on most runs.)
    let out = iom_ok(&p, &["dlq", "drop", "--settled", "--json"]);
    let told = String::from_utf8_lossy(&out.stderr);
    assert!(!told.contains("ERROR"), "{told}");
    let gone: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(gone.as_array().map(Vec::len), Some(1), "{gone:#}");
    assert_eq!(gone[0]["task_id"], copy.as_str());
    assert!(
        gone[0]["dropped_because"]
            .as_str()
            .unwrap_or_default()
            .starts_with("since then: done #2"),
        "{gone:#}"
    );
    assert!(dlq_list(&p).is_empty(), "{:#?}", dlq_list(&p));
}

/// With a broker too, publishing the same rows again sends the failed task
/// again, as its next attempt.
#[test]
fn publishing_again_with_a_broker_reruns_the_failed_task() {
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let (a, sheet) = plate_and_sheet(&p);
    let sheet = sheet.as_str();
    let _w = Workers(vec![spawn_worker(&p, "copy:permanent:1")]);
    let out = iom_ok(&p, &["publish", "--json", sheet]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let id = v[0]["graph_id"].as_str().unwrap().to_string();
    let work = WorkDir::open(&p.root.join(".iom/publishes").join(&id)).unwrap();
    wait_for(&work, Duration::from_secs(60), "the copy to fail", |s| {
        s.state == GraphState::Failed
    });

    let out = iom_ok(&p, &["publish", sheet]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!("{id} was published before and 1 task(s) failed"))
            && text.contains("(1 task(s) queued)"),
        "{text}"
    );
    let s = wait_for(&work, Duration::from_secs(60), "graph success", |s| {
        s.state == GraphState::Succeeded
    });
    assert_eq!(succeeded_at(&s, StepKind::Copy), Some(2), "{s:#?}");
    assert_published(&a, &p.delivery, &work.manifest().unwrap());
}

/// The README's first command: `iom demo DIR` generates a delivery, scans it, names
/// the shots, publishes them in-process with every step (proxies and review movies
/// included) and leaves it all in DIR.
#[test]
fn the_demo_publishes_every_step_in_process() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("demo");
    let out = Command::new(env!("CARGO_BIN_EXE_iom"))
        .arg("demo")
        .arg(&dir)
        .current_dir(tmp.path())
        .env_remove("IOM__BROKER__URL")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "iom demo failed:\n{text}");
    assert!(text.contains("=> succeeded"), "{text}");
    assert!(!text.contains("=> failed"), "{text}");
    for kind in ["proxy", "review", "register"] {
        assert!(
            text.contains(&format!(".{kind}  [done")),
            "no {kind} done:\n{text}"
        );
    }
    let mut jpgs = 0;
    let mut mp4s = 0;
    let mut stack = vec![dir.join("show")];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                assert!(std::fs::metadata(&p).unwrap().len() > 0, "{}", p.display());
                mp4s += 1;
            } else if p.extension().is_some_and(|x| x == "jpg")
                && p.parent().unwrap().to_string_lossy().ends_with("_jpg")
            {
                jpgs += 1;
            }
        }
    }
    assert!(mp4s >= 2, "review movies: {mp4s}\n{text}");
    assert!(jpgs >= 24, "JPEG proxies: {jpgs}\n{text}");
    assert!(dir.join("show/demo/.iom/tracker").is_dir(), "{text}");

    // The command the demo prints to look again lists its publishes.
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("look again: IOM__PROJECT__ROOT="))
        .unwrap_or_else(|| panic!("no look-again line:\n{text}"));
    let root = line.split_whitespace().next().unwrap();
    let status = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_iom"))
            .arg("status")
            .args(args)
            .current_dir(tmp.path())
            .env("IOM__PROJECT__ROOT", root)
            .env_remove("IOM__BROKER__URL")
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        assert_eq!(out.status.code(), Some(0), "{err}");
        (out.stdout, err)
    };
    let (out, _) = status(&["--json"]);
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let states: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["state"].as_str().unwrap())
        .collect();
    assert!(
        states.len() >= 2 && states.iter().all(|s| *s == "succeeded"),
        "{list:#}"
    );
    // The newest N only, and it says so.
    let (out, told) = status(&["--limit", "1"]);
    assert_eq!(String::from_utf8_lossy(&out).lines().count(), 1);
    assert!(
        told.contains(&format!("the newest 1 of {} publishes", states.len())),
        "{told}"
    );
}
