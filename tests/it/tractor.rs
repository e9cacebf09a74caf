//! The Tractor mirror: golden job scripts, the Tcl quoting (property test and an
//! independent check with `tclsh`), the strict fake engine, and end to end with
//! real RabbitMQ, real `iom-worker`, `iom-bridge run` and the fake engine.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use iom::config::Settings;
use iom::plan::{self, PlanOptions};
use iom::queue::Broker;
use iom::runtime;
use iom::sample::{self, PlateSpec};
use iom::scanlist::Row;
use iom::store::{GraphState, WorkDir};
use iom::task::{Graph, StepKind};
use iom::tractor::script::{self, quote_list, quote_word, split_list};
use iom::worker::BrokerTransport;

use super::fake_tractor::{FakeJob, FakeTractor};
use super::publish::{command, ctx, project_at, Project, Workers};
use super::support::{rabbitmqctl, Vhost};

// ---------------------------------------------------------------------------
// Golden scripts.
// ---------------------------------------------------------------------------

fn golden_graph(seq_type: &str, movie: bool, steps: &[StepKind]) -> Graph {
    let tmp = tempfile::tempdir().unwrap();
    let delivery = tmp.path().join("delivery");
    std::fs::create_dir_all(&delivery).unwrap();
    let mut settings = Settings::defaults().unwrap();
    settings.project.root = tmp.path().join("show/demo");
    settings.project.name = "demo".into();
    settings.publish.steps = steps.to_vec();
    let mut row = Row {
        check: true,
        shot_name: "ABC_0010".into(),
        seq_type: seq_type.into(),
        scan_path: delivery.join("A001").display().to_string(),
        scan_name: "A001C003.".into(),
        clip_name: "A001C003".into(),
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
    };
    if movie {
        row.scan_path = delivery.join("mov").display().to_string();
        row.scan_name = "A001C003.MOV".into();
        row.ext = "mov".into();
        row.pad = String::new();
    }
    let opts = PlanOptions {
        delivery_root: Some(delivery),
        ..PlanOptions::default()
    };
    plan::plan(&[row], &settings, &opts, &|_| vec![])
        .unwrap()
        .graphs
        .remove(0)
}

fn check_golden(name: &str, text: &str) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden/tractor")
        .join(name);
    if std::env::var_os("IOM_UPDATE_GOLDEN").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, text).unwrap();
    }
    let want = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e}; run with IOM_UPDATE_GOLDEN=1 to write it",
            path.display()
        )
    });
    assert!(
        want == text,
        "{name} differs from its golden (IOM_UPDATE_GOLDEN=1 regenerates):\n--- golden\n{want}\n--- now\n{text}"
    );
}

#[test]
fn golden_job_scripts_for_org_ref_lib_and_mov_graphs() {
    let all = StepKind::ALL.to_vec();
    let cfg = Settings::defaults().unwrap().tractor;
    for (name, ty, movie) in [
        ("org.tcl", "org", false),
        ("ref.tcl", "ref", false),
        ("lib.tcl", "lib", false),
        ("mov.tcl", "org", true),
    ] {
        let g = golden_graph(ty, movie, &all);
        let text = script::job_script(&g, &cfg);
        // Valid, and the tree is the graph's: every node once, every edge kept.
        let job = script::validate(&text).unwrap_or_else(|e| panic!("{name}: {e}\n{text}"));
        let tasks = job.all_tasks();
        assert_eq!(tasks.len(), g.nodes.len(), "{name}");
        for n in &g.nodes {
            let t = tasks
                .iter()
                .find(|t| t.id.as_deref() == Some(n.id.0.as_str()))
                .unwrap();
            let mut subs: Vec<String> = t
                .subtasks
                .iter()
                .map(|s| match s {
                    script::JobNode::Task(st) => st.id.clone().unwrap(),
                    script::JobNode::Instance(r) => r.clone(),
                })
                .collect();
            subs.sort();
            let mut deps: Vec<String> = n.deps.iter().map(|d| d.0.clone()).collect();
            deps.sort();
            assert_eq!(subs, deps, "{name}: subtasks of {}", n.id);
            assert_eq!(
                t.cmds[0].argv,
                vec!["iom-bridge", "await", "--graph", &g.id.0, "--task", &n.id.0]
            );
            assert_eq!(t.cmds[0].attrs["service"], "iom_proxy");
        }
        assert_eq!(job.title(), "[IOM]ABC_0010 publish");
        let service = if ty == "lib" { "lib" } else { "Linux64" };
        assert_eq!(job.attrs["service"], service, "{name}");
        assert_eq!(job.attrs["priority"], "100.0");
        assert_eq!(
            split_list(&job.attrs["tags"]).unwrap(),
            vec!["iom", "publish"]
        );
        assert_eq!(split_list(&job.attrs["projects"]).unwrap(), vec!["demo"]);
        check_golden(name, &text);
    }
    // A shared dependency is written once and referenced by Instance.
    let org = script::job_script(&golden_graph("org", false, &all), &cfg);
    assert!(org.contains("Instance "), "{org}");
}

// ---------------------------------------------------------------------------
// Quoting.
// ---------------------------------------------------------------------------

const NASTY: [&str; 40] = [
    " ",
    "  ",
    "{",
    "}",
    "{}",
    "}{",
    "[",
    "]",
    "$",
    "$x",
    "\"",
    ";",
    "\\",
    "\\\\",
    "\\{",
    "\\}",
    "\n",
    "\t",
    "\r",
    "#",
    "a",
    "b",
    "Z",
    "0",
    "_",
    "-",
    ".",
    "/",
    "é",
    "日本",
    "ß",
    "\u{a0}",
    "\u{2028}",
    "🎬",
    "#{",
    "\\\n",
    "sh 010",
    "plate.####.exr",
    "{a b}",
    "x",
];

fn adversarial(rng: &mut fastrand::Rng, bmp_only: bool) -> String {
    let n = rng.usize(0..8);
    let mut s = String::new();
    for _ in 0..n {
        let piece = NASTY[rng.usize(..NASTY.len())];
        if bmp_only && piece.chars().any(|c| c as u32 > 0xFFFF) {
            continue;
        }
        s.push_str(piece);
    }
    s
}

#[test]
fn adversarial_names_round_trip_through_the_quoting() {
    let mut rng = fastrand::Rng::with_seed(0x7ac7_0a11);
    for case in 0..20_000 {
        let words: Vec<String> = (0..rng.usize(1..5))
            .map(|_| adversarial(&mut rng, false))
            .collect();
        for w in &words {
            let q = quote_word(w);
            assert_eq!(
                split_list(&q).unwrap(),
                vec![w.clone()],
                "case {case}: {w:?} -> {q:?}"
            );
        }
        let l = quote_list(&words);
        assert_eq!(
            split_list(&split_list(&l).unwrap()[0]).unwrap(),
            words,
            "case {case}: {l:?}"
        );
        // Inside a whole job script: titles and argv come back as written.
        let text = format!(
            "Job -title {} -subtasks {{\n  Task {} -id t1 -cmds {{\n    RemoteCmd {} -service x\n  }}\n  Task b -subtasks {{Instance t1}}\n}}\n",
            quote_word(&words[0]),
            quote_word(words.last().unwrap()),
            quote_list(&words),
        );
        let job = script::validate(&text).unwrap_or_else(|e| panic!("case {case}: {e}\n{text}"));
        assert_eq!(job.title(), words[0]);
        let t = job.all_tasks()[0];
        assert_eq!(&t.title, words.last().unwrap());
        assert_eq!(t.cmds[0].argv, words);
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn tclsh_reads_back_the_quoted_words_and_walks_the_job() {
    let tmp = tempfile::tempdir().unwrap();
    let mut rng = fastrand::Rng::with_seed(42);
    let words: Vec<String> = (0..3000)
        .map(|_| adversarial(&mut rng, true))
        .filter(|w| !w.contains('\0'))
        .collect();
    // 1. Tcl's own list parser on our quoted words.
    let data = tmp.path().join("words.txt");
    let quoted: Vec<String> = words.iter().map(|w| quote_word(w)).collect();
    std::fs::write(&data, quoted.join("\n")).unwrap();
    // 2. A job script with those words as titles and argv, through stub operators.
    let mut job = String::from("Job -title {t} -subtasks {\n");
    for (i, w) in words.iter().take(500).enumerate() {
        job.push_str(&format!(
            "  Task {} -id {} -cmds {{\n    RemoteCmd {} -service x\n  }}\n",
            quote_word(w),
            quote_word(&format!("id{i}")),
            quote_list(&[w.as_str(), "await", w.as_str()]),
        ));
    }
    job.push_str("  Task last -subtasks {\n    Instance id0\n  }\n}\n");
    script::validate(&job).unwrap();
    let jobfile = tmp.path().join("job.alf");
    std::fs::write(&jobfile, &job).unwrap();
    let tcl = tmp.path().join("check.tcl");
    std::fs::write(
        &tcl,
        format!(
            r#"
proc hx {{s}} {{ binary encode hex [encoding convertto utf-8 $s] }}
set f [open {{{data}}}]
fconfigure $f -encoding utf-8 -translation lf
set d [read $f]
close $f
foreach w $d {{ puts "W [hx $w]" }}
proc opts {{args}} {{ array set o $args; return [array get o] }}
proc Job {{args}} {{ array set o $args; eval $o(-subtasks) }}
proc Task {{title args}} {{
  puts "T [hx $title]"
  array set o $args
  if {{[info exists o(-cmds)]}} {{ eval $o(-cmds) }}
  if {{[info exists o(-subtasks)]}} {{ eval $o(-subtasks) }}
}}
proc RemoteCmd {{argv args}} {{ foreach a $argv {{ puts "A [hx $a]" }} }}
proc Instance {{id}} {{ puts "I [hx $id]" }}
set f [open {{{job}}}]
fconfigure $f -encoding utf-8 -translation lf
set s [read $f]
close $f
eval $s
"#,
            data = data.display(),
            job = jobfile.display()
        ),
    )
    .unwrap();
    let out = Command::new("tclsh")
        .arg(&tcl)
        .output()
        .expect("tclsh (Debian package tcl; deploy/install-deps.sh installs it)");
    assert!(
        out.status.success(),
        "tclsh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let got = |tag: &str| -> Vec<String> {
        text.lines()
            .filter_map(|l| l.strip_prefix(tag))
            .map(str::to_string)
            .collect()
    };
    let want_w: Vec<String> = words.iter().map(|w| hex(w)).collect();
    assert_eq!(got("W "), want_w, "Tcl list parsing of the quoted words");
    let want_t: Vec<String> = words
        .iter()
        .take(500)
        .map(|w| hex(w))
        .chain([hex("last")])
        .collect();
    assert_eq!(got("T "), want_t, "task titles as tclsh reads them");
    let want_a: Vec<String> = words
        .iter()
        .take(500)
        .flat_map(|w| [hex(w), hex("await"), hex(w)])
        .collect();
    assert_eq!(got("A "), want_a, "argv as tclsh reads it");
    assert_eq!(got("I "), vec![hex("id0")]);
}

// ---------------------------------------------------------------------------
// The strict fake engine.
// ---------------------------------------------------------------------------

pub(super) fn fake(env: Vec<(String, String)>, logs: &Path, port: u16) -> FakeTractor {
    FakeTractor::start(
        port,
        PathBuf::from(env!("CARGO_BIN_EXE_iom-bridge")),
        env,
        logs.to_path_buf(),
    )
}

#[test]
fn fake_engine_refuses_malformed_scripts_and_wrong_content_types() {
    let tmp = tempfile::tempdir().unwrap();
    let eng = fake(vec![], &tmp.path().join("logs"), 0);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let http = reqwest::Client::new();
    let post = |body: &str, ct: &str| {
        let req = http
            .post(format!(
                "http://{}/Tractor/spool?spvers=2.0&blocking=spool",
                eng.addr()
            ))
            .header("content-type", ct)
            .body(body.to_string());
        rt.block_on(async {
            let r = req.send().await.unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    let good =
        "Job -title {x} -subtasks {\n  Task {a} -id a\n  Task {b} -subtasks {Instance a}\n}\n";
    for bad in [
        "Job -title {x} -subtasks {Task {bad}}}",
        "Job -title {x} -subtasks {Task {a}",
        "Job -title {x} -subtasks {Tsk {a}}",
        "Job -title {x} -subtasks {Task {a} -subtasks {Instance nope}}",
        "Job -subtasks {Task {a}}",
    ] {
        let (status, body) = post(bad, "application/tractor-spool");
        assert_eq!(status, 400, "{bad}: {body}");
        assert!(body.contains("\"rc\":1"), "{body}");
    }
    assert_eq!(post(good, "text/plain").0, 400);
    assert_eq!(eng.rejected().len(), 5);
    let (status, body) = post(good, "application/tractor-spool");
    assert_eq!(status, 200, "{body}");
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    let jid = v["jid"].as_u64().unwrap();
    assert_eq!(eng.jobs().len(), 1);
    // The client: spool validates first; queries need a session (it logs in).
    let client = iom::tractor::client::EngineClient::new(eng.addr(), "iom", None);
    assert!(rt
        .block_on(client.spool("Job -title {x} -subtasks {Instance zz}"))
        .is_err());
    assert_eq!(eng.jobs().len(), 1, "an invalid script is never sent");
    let job = rt.block_on(client.job(jid)).unwrap().unwrap();
    assert_eq!(job.numtasks, 2);
    let tasks = rt.block_on(client.tasks(jid)).unwrap();
    assert_eq!(tasks.len(), 2);
    // Blade: task `a` (no argv) — skip it, then `b` becomes ready.
    let a = tasks.iter().find(|t| t.id == "a").unwrap();
    rt.block_on(client.skip(jid, a.tid)).unwrap();
    rt.block_on(client.pause(jid, true)).unwrap();
    assert!(rt
        .block_on(client.job(jid))
        .unwrap()
        .unwrap()
        .pausetime
        .is_some_and(|p| !p.is_null()));
}

// ---------------------------------------------------------------------------
// End to end.
// ---------------------------------------------------------------------------

const STEPS: &str = "probe, copy, thumbnail, register, cleanup";

pub(super) fn tproject(vh: &Vhost) -> Project {
    let mut p = project_at(STEPS, &vh.url(), "t");
    let mut yaml = std::fs::read_to_string(&p.config).unwrap();
    yaml.push_str("tractor:\n  spool_backoff_cap_secs: 1\n  poll_ms: 50\n");
    std::fs::write(&p.config, yaml).unwrap();
    p.settings = Settings::load_with(Some(&p.config), &|_| None, std::iter::empty()).unwrap();
    p
}

pub(super) fn blade_env(p: &Project) -> Vec<(String, String)> {
    vec![
        ("IOM_CONFIG".into(), p.config.display().to_string()),
        ("IOM_BROKER_PASSWORD".into(), "guest".into()),
        ("RUST_LOG".into(), "warn".into()),
    ]
}

pub(super) struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub(super) fn spawn_bridge(p: &Project, vh: &Vhost, engine: &str) -> Proc {
    let child = Command::new(env!("CARGO_BIN_EXE_iom-bridge"))
        .arg("run")
        .env("IOM_CONFIG", &p.config)
        .env("IOM_BROKER_PASSWORD", "guest")
        .env("TRACTOR_ENGINE", engine)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iom-bridge run");
    // Its durable queue exists once it consumes: events from then on are kept.
    let t0 = Instant::now();
    while !rabbitmqctl(&["list_queues", "-p", &vh.name, "name"]).contains("t.tractor-bridge") {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "bridge queue never declared"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    Proc(child)
}

/// A vhost, a project on it, the fake engine, and a bridge mirroring into it
/// (dropped in reverse order: the bridge first, the vhost last).
fn mirrored() -> (Vhost, Project, FakeTractor, Proc) {
    let vh = Vhost::new();
    let p = tproject(&vh);
    let eng = fake(blade_env(&p), &p.root.join("blade-logs"), 0);
    let bridge = spawn_bridge(&p, &vh, &eng.addr());
    (vh, p, eng, bridge)
}

/// A wrangler retries `task` of `job` in Tractor; returns the jobs once it is done.
fn retry_in_tractor(eng: &FakeTractor, job: &FakeJob, task: &str) -> Vec<FakeJob> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = iom::tractor::client::EngineClient::new(eng.addr(), "wrangler", None);
    rt.block_on(client.retry(job.jid, job.task(task).tid))
        .unwrap();
    wait_job(
        eng,
        Duration::from_secs(60),
        "the job done after the retry",
        |j| j[0].all_done(),
    )
}

fn plate_graph(p: &Project) -> Graph {
    let a = PlateSpec::exr("A001", "A001C003.", 64, 36, 6);
    sample::write_plate(&p.delivery, &a).unwrap();
    let r = super::publish::row(&p.delivery, &a, "ABC_0010");
    let opts = PlanOptions {
        delivery_root: Some(p.delivery.clone()),
        ..PlanOptions::default()
    };
    plan::plan(&[r], &p.settings, &opts, &|_| vec![])
        .unwrap()
        .graphs
        .remove(0)
}

fn submit(p: &Project, graph: &Graph) -> WorkDir {
    let work = WorkDir::create(graph).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let secret = p._tmp.path().join("broker-password");
    std::fs::write(&secret, "guest\n").unwrap();
    let cfg = iom::queue::BrokerConfig::from_settings(&iom::config::BrokerSettings {
        password: iom::config::SecretRef {
            env: None,
            file: Some(secret),
        },
        ..p.settings.broker.clone()
    })
    .unwrap();
    rt.block_on(async {
        let broker = Broker::connect(&cfg).await.unwrap();
        broker.declare_topology().await.unwrap();
        let t = BrokerTransport::open(&broker, "submitter").await.unwrap();
        runtime::submit(&work, &ctx(&p.settings), &t).await.unwrap();
        t.close(Duration::from_secs(5)).await;
        broker.close().await;
    });
    work
}

pub(super) fn wait_job(
    eng: &FakeTractor,
    within: Duration,
    what: &str,
    f: impl Fn(&[FakeJob]) -> bool,
) -> Vec<FakeJob> {
    let t0 = Instant::now();
    loop {
        let jobs = eng.jobs();
        if f(&jobs) {
            return jobs;
        }
        assert!(
            t0.elapsed() < within,
            "timed out waiting for {what}: {jobs:#?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn iom_jobs(p: &Project, eng: &str, args: &[&str]) -> (i32, String) {
    let out = command(p, "iom", "")
        .env("TRACTOR_ENGINE", eng)
        .arg("jobs")
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn id_of(g: &Graph, kind: StepKind) -> String {
    g.nodes
        .iter()
        .find(|n| n.step.kind() == kind)
        .unwrap()
        .id
        .0
        .clone()
}

#[test]
fn bridge_mirrors_a_publish_and_tractor_follows_it_to_done() {
    let (_vh, p, eng, _bridge) = mirrored();
    let _w = Workers(vec![super::publish::spawn_worker(&p, "")]);
    let graph = plate_graph(&p);
    let t0 = Instant::now();
    let work = submit(&p, &graph);
    let jobs = wait_job(&eng, Duration::from_secs(60), "the job done", |j| {
        j.len() == 1 && j[0].all_done()
    });
    let done_after = t0.elapsed();
    let graph_done = work.status().unwrap();
    assert_eq!(graph_done.state, GraphState::Succeeded);
    eprintln!(
        "tractor: job done {:.2}s after submit",
        done_after.as_secs_f64()
    );
    let job = &jobs[0];
    assert_eq!(job.title, "[IOM]ABC_0010 publish");
    assert_eq!(job.service, "Linux64");
    assert_eq!(job.tasks.len(), graph.nodes.len());
    // Every proxy printed its step's outcome and progress, and ran after its subtasks.
    for n in &graph.nodes {
        let t = job.task(&n.id.0);
        assert!(
            t.log.contains("iom: done: attempt 1"),
            "{}: {}",
            n.id,
            t.log
        );
        assert!(t.log.contains("TR_PROGRESS 100%"), "{}", t.log);
        assert_eq!(t.progress, 100.0);
        assert_eq!(t.runs, 1);
    }
    // The monitor.
    let (code, out) = iom_jobs(&p, &eng.addr(), &["status", &graph.id.0, "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["state"], "done");
    assert_eq!(v["tasks"].as_array().unwrap().len(), graph.nodes.len());
    assert_eq!(
        iom_jobs(&p, &eng.addr(), &["wait", &job.jid.to_string()]).0,
        0
    );
    assert_eq!(iom_jobs(&p, &eng.addr(), &["status", "no-such-graph"]).0, 2);
    assert_eq!(iom_jobs(&p, "127.0.0.1:1", &["status", &graph.id.0]).0, 3);
}

#[test]
fn a_failed_step_shows_red_and_a_retry_from_tractor_reruns_it_on_rabbitmq() {
    let (_vh, p, eng, _bridge) = mirrored();
    // Copy attempts 1 to 4 fail transiently: the first round (max_attempts 3)
    // gives up and is dead-lettered.
    let _w = Workers(vec![super::publish::spawn_worker(&p, "copy:transient:4")]);
    let graph = plate_graph(&p);
    let work = submit(&p, &graph);
    let copy = id_of(&graph, StepKind::Copy);
    let jobs = wait_job(&eng, Duration::from_secs(60), "copy in error", |j| {
        j.len() == 1 && j[0].task(&copy).state == "error"
    });
    let f = work
        .failure(&iom::task::TaskId(copy.clone()))
        .unwrap()
        .unwrap();
    eprintln!(
        "tractor: copy failure shown in Tractor {} ms after it was recorded",
        iom::events::now_ms() - f.at_ms
    );
    let job = &jobs[0];
    assert!(
        job.task(&copy).log.contains("gave up after 3 attempts"),
        "{}",
        job.task(&copy).log
    );
    // Dependents never ran; the graph itself failed.
    assert_eq!(job.task(&id_of(&graph, StepKind::Register)).runs, 0);
    assert_eq!(work.status().unwrap().state, GraphState::Failed);
    let jid = job.jid.to_string();
    let (code, out) = iom_jobs(&p, &eng.addr(), &["failed", &jid]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&copy), "{out}");
    assert_eq!(iom_jobs(&p, &eng.addr(), &["wait", &jid]).0, 1);
    assert_eq!(iom_jobs(&p, &eng.addr(), &["status", &jid]).0, 1);

    // A wrangler retries the task in Tractor: attempt 4 opens a fresh round of
    // retries, fails, and attempt 5 succeeds.
    let jobs = retry_in_tractor(&eng, job, &copy);
    let t = jobs[0].task(&copy);
    assert_eq!(t.runs, 2);
    assert_eq!(t.retrycount, 1);
    assert!(t.log.contains("requeued"), "{}", t.log);
    assert!(t.log.contains("iom: done: attempt 5"), "{}", t.log);
    let s = work.status().unwrap();
    assert_eq!(s.state, GraphState::Succeeded, "{s:#?}");
    assert_eq!(eng.jobs().len(), 1);
    assert_eq!(iom_jobs(&p, &eng.addr(), &["failed", &jid]).0, 0);
}

/// A crash loop in Tractor: every worker that takes the copy dies, RabbitMQ
/// dead-letters it at its delivery limit, and the copy's Tractor task turns red
/// with the reason (instead of showing active for ever); a retry from Tractor then
/// runs it again on RabbitMQ and the job ends done.
#[test]
fn a_crash_loop_shows_red_in_tractor_and_a_retry_reruns_it() {
    let (_vh, p, eng, _bridge) = mirrored();
    let graph = plate_graph(&p);
    let work = submit(&p, &graph);
    let copy = id_of(&graph, StepKind::Copy);
    let (crashes, _) = super::publish::crash_loop(&p, &work, &copy);
    assert_eq!(crashes, 4, "limit 3");
    let _w = Workers(vec![super::publish::spawn_worker(&p, "")]);
    let jobs = wait_job(&eng, Duration::from_secs(60), "copy in error", |j| {
        j.len() == 1 && j[0].task(&copy).state == "error"
    });
    let log = &jobs[0].task(&copy).log;
    assert!(log.contains("broker.delivery_limit = 3"), "{log}");
    assert_eq!(jobs[0].task(&id_of(&graph, StepKind::Cleanup)).runs, 0);
    let jid = jobs[0].jid.to_string();
    let (code, out) = iom_jobs(&p, &eng.addr(), &["failed", &jid]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&copy), "{out}");

    // A wrangler retries it in Tractor: attempt 2 runs on the healthy worker.
    let jobs = retry_in_tractor(&eng, &jobs[0], &copy);
    assert!(
        jobs[0].task(&copy).log.contains("iom: done: attempt 2"),
        "{}",
        jobs[0].task(&copy).log
    );
    assert_eq!(work.status().unwrap().state, GraphState::Succeeded);
    assert_eq!(eng.jobs().len(), 1);
}

#[test]
fn the_bridge_restarted_mid_run_spools_no_duplicate_and_catches_up() {
    let (vh, p, eng, bridge) = mirrored();
    let _w = Workers(vec![super::publish::spawn_worker(&p, "copy:sleep_ms:1500")]);
    let graph = plate_graph(&p);
    let work = submit(&p, &graph);
    wait_job(&eng, Duration::from_secs(30), "the job spooled", |j| {
        j.len() == 1
    });
    // Kill the bridge mid-run (copy is still sleeping), restart it.
    drop(bridge);
    assert_ne!(work.status().unwrap().state, GraphState::Succeeded);
    let _bridge = spawn_bridge(&p, &vh, &eng.addr());
    // The restarted bridge consumes the rest of the run's events: no second job.
    let jobs = wait_job(&eng, Duration::from_secs(60), "the job done", |j| {
        j[0].all_done()
    });
    assert_eq!(jobs.len(), 1, "no duplicate job");
    assert_eq!(work.status().unwrap().state, GraphState::Succeeded);
    // Bridge down while a publish runs: the publish completes; the mirror appears after.
    drop(_bridge);
    let b = PlateSpec::exr("B001", "B001C001.", 64, 36, 4);
    sample::write_plate(&p.delivery, &b).unwrap();
    let r = super::publish::row(&p.delivery, &b, "ABC_0020");
    let g2 = plan::plan(
        &[r],
        &p.settings,
        &PlanOptions {
            delivery_root: Some(p.delivery.clone()),
            ..PlanOptions::default()
        },
        &|_| vec![],
    )
    .unwrap()
    .graphs
    .remove(0);
    let w2 = submit(&p, &g2);
    super::publish::wait_for(&w2, Duration::from_secs(60), "second publish", |s| {
        s.state == GraphState::Succeeded
    });
    assert_eq!(
        eng.jobs().len(),
        1,
        "nothing mirrored while the bridge is down"
    );
    let _bridge = spawn_bridge(&p, &vh, &eng.addr());
    let jobs = wait_job(&eng, Duration::from_secs(60), "the second job done", |j| {
        j.len() == 2 && j[1].all_done()
    });
    assert_eq!(jobs[1].title, "[IOM]ABC_0020 publish");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(eng.jobs().len(), 2, "no duplicates after catching up");
}

#[test]
fn the_engine_down_publishes_complete_and_the_job_appears_once_when_it_is_back() {
    let vh = Vhost::new();
    let p = tproject(&vh);
    let port = super::support::free_port();
    let addr = format!("127.0.0.1:{port}");
    let _bridge = spawn_bridge(&p, &vh, &addr);
    let _w = Workers(vec![super::publish::spawn_worker(&p, "")]);
    let graph = plate_graph(&p);
    let work = submit(&p, &graph);
    // Publishing does not wait for Tractor.
    super::publish::wait_for(&work, Duration::from_secs(60), "publish", |s| {
        s.state == GraphState::Succeeded
    });
    assert_eq!(
        iom_jobs(&p, &addr, &["status", &graph.id.0]).0,
        2,
        "not mirrored yet"
    );
    // "A minute" of engine downtime, shortened by IOM_TEST_ENGINE_DOWN_SECS.
    let down: u64 = std::env::var("IOM_TEST_ENGINE_DOWN_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3);
    std::thread::sleep(Duration::from_secs(down));
    let eng = fake(blade_env(&p), &p.root.join("blade-logs"), port);
    let jobs = wait_job(&eng, Duration::from_secs(60), "the job done", |j| {
        j.len() == 1 && j[0].all_done()
    });
    for t in &jobs[0].tasks {
        assert!(t.log.contains("iom: done"), "{}", t.log);
    }
    std::thread::sleep(Duration::from_millis(1500));
    assert_eq!(eng.jobs().len(), 1, "spooled once");
    assert_eq!(iom_jobs(&p, &addr, &["status", &graph.id.0]).0, 0);
}

#[test]
fn a_spool_whose_reply_was_lost_is_found_by_its_comment_not_spooled_again() {
    let p = project_at(STEPS, "", "iom");
    let tmp = tempfile::tempdir().unwrap();
    // The blade runs `true` for every command: this test is about spooling only.
    let eng = FakeTractor::start(0, PathBuf::from("true"), vec![], tmp.path().join("logs"));
    let graph = plate_graph(&p);
    WorkDir::create(&graph).unwrap();
    let client = iom::tractor::client::EngineClient::new(eng.addr(), "iom", None);
    let rt = tokio::runtime::Runtime::new().unwrap();
    // A bridge spooled the job, then died before recording the jid: only the
    // pending entry it wrote before spooling is on disk.
    let jid = rt
        .block_on(client.spool(&script::job_script(&graph, &p.settings.tractor)))
        .unwrap();
    let path = iom::tractor::JobRecords::path_for(&p.settings);
    let mut records = iom::tractor::JobRecords::load(&path).unwrap();
    records
        .put(
            &graph.id.0,
            iom::tractor::JobRecord {
                jid: 0,
                title: "pending".into(),
                spooled_at_ms: 0,
            },
        )
        .unwrap();
    let mut records = iom::tractor::JobRecords::load(&path).unwrap();
    let got = rt
        .block_on(iom::bridge::mirror_graph(
            &p.settings,
            &client,
            &mut records,
            &graph.id.0,
        ))
        .unwrap();
    assert_eq!(got, jid);
    assert_eq!(eng.jobs().len(), 1, "found, not spooled again");
    // Durable: a fresh load has the jid; mirroring again is a no-op.
    let mut records = iom::tractor::JobRecords::load(&path).unwrap();
    assert_eq!(records.get(&graph.id.0).unwrap().jid, jid);
    assert_eq!(
        rt.block_on(iom::bridge::mirror_graph(
            &p.settings,
            &client,
            &mut records,
            &graph.id.0
        ))
        .unwrap(),
        jid
    );
    assert_eq!(eng.jobs().len(), 1);
}
