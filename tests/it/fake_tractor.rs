//! A strict fake Tractor engine: the documented HTTP protocol (reference §4–§7),
//! job scripts parsed as Tcl (unbalanced braces, unknown operators, an Instance to
//! a missing id, a wrong content type are refused), and a blade that runs the
//! mirrored jobs' proxy commands as real processes in subtask order.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::any;
use axum::Router;
use serde_json::{json, Value};

use iom::tractor::script::{self, JobNode};

#[derive(Debug, Clone)]
pub struct FakeTask {
    pub tid: u64,
    pub title: String,
    pub id: String,
    pub argv: Vec<String>,
    pub deps: Vec<u64>,
    pub state: String,
    pub retrycount: u64,
    pub progress: f64,
    pub log: String,
    pub runs: u32,
}

#[derive(Debug, Clone)]
pub struct FakeJob {
    pub jid: u64,
    pub title: String,
    pub comment: String,
    pub service: String,
    pub paused: bool,
    pub deleted: bool,
    pub tasks: Vec<FakeTask>,
}

impl FakeJob {
    fn count(&self, s: &str) -> usize {
        self.tasks.iter().filter(|t| t.state == s).count()
    }

    pub fn task(&self, id: &str) -> &FakeTask {
        self.tasks
            .iter()
            .find(|t| t.id == id)
            .unwrap_or_else(|| panic!("no task {id}"))
    }

    pub fn all_done(&self) -> bool {
        self.tasks.iter().all(|t| t.state == "done")
    }
}

#[derive(Default)]
pub struct Engine {
    pub jobs: Vec<FakeJob>,
    pub rejected: Vec<String>,
    challenges: Vec<String>,
    tsids: Vec<String>,
    next_jid: u64,
}

pub struct FakeTractor {
    pub port: u16,
    pub state: Arc<Mutex<Engine>>,
    stop: Arc<AtomicBool>,
    rt: Option<tokio::runtime::Runtime>,
    blade: Option<std::thread::JoinHandle<()>>,
}

type Shared = Arc<Mutex<Engine>>;

fn reply(status: StatusCode, v: Value) -> axum::response::Response {
    (
        status,
        [("content-type", "application/json; charset=utf-8")],
        v.to_string(),
    )
        .into_response()
}

fn refuse(status: StatusCode, rc: i64, msg: impl Into<String>) -> axum::response::Response {
    reply(status, json!({"rc": rc, "msg": msg.into()}))
}

/// Flattens a parsed job into tasks with tids and dependency tids.
fn flatten(job: &script::Job) -> Vec<FakeTask> {
    fn walk(nodes: &[JobNode], out: &mut Vec<(FakeTask, Vec<JobNode>)>) {
        for n in nodes {
            if let JobNode::Task(t) = n {
                walk(&t.subtasks, out);
                let tid = out.len() as u64 + 1;
                out.push((
                    FakeTask {
                        tid,
                        title: t.title.clone(),
                        id: t.id.clone().unwrap_or_default(),
                        argv: t.cmds.first().map(|c| c.argv.clone()).unwrap_or_default(),
                        deps: vec![],
                        state: "blocked".into(),
                        retrycount: 0,
                        progress: 0.0,
                        log: String::new(),
                        runs: 0,
                    },
                    t.subtasks.clone(),
                ));
            }
        }
    }
    let mut raw = Vec::new();
    walk(&job.tasks, &mut raw);
    let by_ref: HashMap<String, u64> = raw
        .iter()
        .flat_map(|(t, _)| [(t.title.clone(), t.tid), (t.id.clone(), t.tid)])
        .collect();
    raw.iter()
        .map(|(t, subs)| {
            let mut t = t.clone();
            t.deps = subs
                .iter()
                .map(|s| match s {
                    JobNode::Task(st) => by_ref[st.id.as_ref().unwrap_or(&st.title)],
                    JobNode::Instance(r) => by_ref[r],
                })
                .collect();
            t
        })
        .collect()
}

async fn handle(
    State(st): State<Shared>,
    Path(verb): Path<String>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: String,
) -> axum::response::Response {
    let mut e = st.lock().unwrap();
    let need_tsid = |e: &Engine| {
        q.get("tsid")
            .is_some_and(|t| e.tsids.iter().any(|x| x == t))
    };
    match verb.as_str() {
        "spool" => {
            let ct = headers
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if ct != "application/tractor-spool" {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    1,
                    format!("bad content type {ct:?}"),
                );
            }
            if q.get("blocking").map(String::as_str) != Some("spool") || !q.contains_key("spvers") {
                return refuse(
                    StatusCode::BAD_REQUEST,
                    1,
                    "missing spvers or blocking=spool",
                );
            }
            match script::validate(&body) {
                Ok(job) => {
                    e.next_jid += 1;
                    let jid = 1000 + e.next_jid;
                    let tasks = flatten(&job);
                    e.jobs.push(FakeJob {
                        jid,
                        title: job.title().to_string(),
                        comment: job.attrs.get("comment").cloned().unwrap_or_default(),
                        service: job.attrs.get("service").cloned().unwrap_or_default(),
                        paused: false,
                        deleted: false,
                        tasks,
                    });
                    reply(
                        StatusCode::OK,
                        json!({"rc": 0, "msg": format!("job script accepted, jid: {jid}"), "jid": jid}),
                    )
                }
                Err(err) => {
                    e.rejected.push(err.to_string());
                    refuse(
                        StatusCode::BAD_REQUEST,
                        1,
                        format!("job script parse error: {err}"),
                    )
                }
            }
        }
        "monitor" => match q.get("q").map(String::as_str) {
            Some("gentoken") => {
                let c = format!("{:08x}", fastrand::u32(..));
                e.challenges.push(c.clone());
                reply(StatusCode::OK, json!({"challenge": c}))
            }
            Some("login") => {
                let c = q.get("c").cloned().unwrap_or_default();
                let ok = e
                    .challenges
                    .iter()
                    .any(|ch| iom::tractor::client::login_proof(ch, None) == c);
                if !ok {
                    return refuse(StatusCode::FORBIDDEN, 2, "login failed");
                }
                let tsid = format!("{:08x}-{:04x}", fastrand::u32(..), e.tsids.len());
                e.tsids.push(tsid.clone());
                reply(
                    StatusCode::OK,
                    json!({"rc": 0, "login": "ok", "user": q.get("user"), "tsid": tsid}),
                )
            }
            _ => refuse(StatusCode::BAD_REQUEST, 1, "unknown monitor query"),
        },
        "db" => {
            if !need_tsid(&e) {
                return refuse(StatusCode::FORBIDDEN, 3, "tsid required");
            }
            let sql = q.get("q").cloned().unwrap_or_default();
            let Some(rest) = sql.strip_prefix("tractorselect('") else {
                return refuse(StatusCode::BAD_REQUEST, 1, "unknown db query");
            };
            let table = rest.split('\'').next().unwrap_or("");
            let jid: Option<u64> = sql
                .split("jid=")
                .nth(1)
                .and_then(|s| s.split(|c: char| !c.is_ascii_digit()).next())
                .and_then(|s| s.parse().ok());
            let like: Option<String> = sql
                .split("comment like \"")
                .nth(1)
                .and_then(|s| s.split('"').next())
                .map(str::to_string);
            let jobs = e.jobs.iter().filter(|j| {
                jid.is_none_or(|n| j.jid == n)
                    && like
                        .as_ref()
                        .is_none_or(|l| j.comment.contains(l.as_str()) && !j.deleted)
            });
            let rows: Vec<Value> = match table {
                "job" => jobs
                    .map(|j| {
                        json!({
                            "jid": j.jid, "title": j.title, "comment": j.comment,
                            "numtasks": j.tasks.len(), "numdone": j.count("done"),
                            "numerror": j.count("error"), "numactive": j.count("active"),
                            "numready": j.count("ready"),
                            "pausetime": if j.paused { json!("2026-01-01 00:00:00") } else { Value::Null },
                            "deletetime": if j.deleted { json!("2026-01-01 00:00:00") } else { Value::Null },
                        })
                    })
                    .collect(),
                "task" => jobs
                    .flat_map(|j| {
                        j.tasks.iter().map(move |t| {
                            json!({"jid": j.jid, "tid": t.tid, "title": t.title, "id": t.id,
                                   "state": t.state, "progress": t.progress, "retrycount": t.retrycount})
                        })
                    })
                    .collect(),
                _ => return refuse(StatusCode::BAD_REQUEST, 1, "unknown table"),
            };
            reply(StatusCode::OK, json!({"rc": 0, "rows": rows}))
        }
        "queue" => {
            if !need_tsid(&e) {
                return refuse(StatusCode::FORBIDDEN, 3, "tsid required");
            }
            let jid: u64 = q.get("jid").and_then(|s| s.parse().ok()).unwrap_or(0);
            let tid: Option<u64> = q.get("tid").and_then(|s| s.parse().ok());
            let op = q.get("q").cloned().unwrap_or_default();
            let Some(job) = e.jobs.iter_mut().find(|j| j.jid == jid) else {
                return refuse(StatusCode::NOT_FOUND, 1, format!("no job {jid}"));
            };
            let mut pending = Vec::new();
            for t in job.tasks.iter_mut() {
                let hit = tid.is_none_or(|n| t.tid == n);
                match op.as_str() {
                    "tretry"
                        if hit && tid.is_some() && matches!(t.state.as_str(), "error" | "done") =>
                    {
                        t.state = "blocked".into();
                        t.retrycount += 1;
                    }
                    "jretry" if t.state == "error" => {
                        t.state = "blocked".into();
                        t.retrycount += 1;
                    }
                    "tskip" if hit && tid.is_some() => t.state = "done".into(),
                    "jinterrupt" if hit && t.state == "active" => pending.push(t.tid),
                    _ => {}
                }
            }
            match op.as_str() {
                "jattr" => {
                    if let Some(p) = q.get("set_pause") {
                        job.paused = p == "1";
                    }
                }
                "jinterrupt" => {
                    for t in job.tasks.iter_mut().filter(|t| pending.contains(&t.tid)) {
                        t.state = "interrupt".into();
                    }
                    if tid.is_none() {
                        job.paused = true;
                    }
                }
                "jretire" => job.deleted = true,
                "tretry" | "jretry" | "tskip" => {}
                other => return refuse(StatusCode::BAD_REQUEST, 1, format!("unknown op {other}")),
            }
            reply(StatusCode::OK, json!({"rc": 0, "msg": "ok"}))
        }
        "ctrl" => reply(StatusCode::OK, json!({"rc": 0, "msg": "ok"})),
        _ => refuse(StatusCode::NOT_FOUND, 1, "unknown verb"),
    }
}

struct Running {
    child: Child,
    log: PathBuf,
}

/// The blade: dispatches ready tasks (all subtasks done) of unpaused jobs, runs
/// their commands, reads their progress, records exit status.
fn blade(
    st: Shared,
    stop: Arc<AtomicBool>,
    bridge_bin: PathBuf,
    env: Vec<(String, String)>,
    logs: PathBuf,
) {
    let mut running: BTreeMap<(u64, u64), Running> = BTreeMap::new();
    while !stop.load(Ordering::SeqCst) {
        {
            let mut e = st.lock().unwrap();
            for job in e.jobs.iter_mut() {
                let done: Vec<u64> = job
                    .tasks
                    .iter()
                    .filter(|t| t.state == "done")
                    .map(|t| t.tid)
                    .collect();
                for t in job.tasks.iter_mut() {
                    let key = (job.jid, t.tid);
                    // Finished or interrupted commands.
                    if let Some(r) = running.get_mut(&key) {
                        let log = std::fs::read_to_string(&r.log).unwrap_or_default();
                        if let Some(p) = log
                            .lines()
                            .filter_map(|l| l.strip_prefix("TR_PROGRESS "))
                            .filter_map(|p| p.trim_end_matches('%').trim().parse::<f64>().ok())
                            .next_back()
                        {
                            t.progress = p;
                        }
                        if t.state == "interrupt" {
                            let _ = r.child.kill();
                            let _ = r.child.wait();
                            t.state = "error".into();
                            t.log = log;
                            running.remove(&key);
                            continue;
                        }
                        if let Ok(Some(status)) = r.child.try_wait() {
                            t.log = log;
                            t.state = if status.success() { "done" } else { "error" }.into();
                            running.remove(&key);
                        }
                        continue;
                    }
                    if t.state == "blocked" && t.deps.iter().all(|d| done.contains(d)) {
                        t.state = "ready".into();
                    }
                    // A task without commands only groups its subtasks: the engine
                    // marks it done as soon as they are (nothing to launch).
                    if t.state == "ready" && t.argv.is_empty() {
                        t.state = "done".into();
                        continue;
                    }
                    if t.state == "ready" && !job.paused && !job.deleted {
                        let mut argv = t.argv.clone();
                        if argv.first().map(String::as_str) == Some("iom-bridge") {
                            argv[0] = bridge_bin.display().to_string();
                        }
                        t.runs += 1;
                        let log = logs.join(format!("{}-{}-{}.log", job.jid, t.tid, t.runs));
                        let out = std::fs::File::create(&log).unwrap();
                        let child = Command::new(&argv[0])
                            .args(&argv[1..])
                            .envs(env.iter().cloned())
                            .stdout(Stdio::from(out))
                            .stderr(Stdio::null())
                            .spawn()
                            .unwrap_or_else(|err| panic!("blade cannot run {argv:?}: {err}"));
                        running.insert(key, Running { child, log });
                        t.state = "active".into();
                    }
                }
            }
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    for (_, mut r) in running {
        let _ = r.child.kill();
        let _ = r.child.wait();
    }
}

impl FakeTractor {
    /// Starts the engine on `port` (0: any free port). The blade runs proxy
    /// commands (`iom-bridge …`) as `bridge_bin` with `env`.
    pub fn start(
        port: u16,
        bridge_bin: PathBuf,
        env: Vec<(String, String)>,
        logs: PathBuf,
    ) -> FakeTractor {
        let state: Shared = Arc::new(Mutex::new(Engine::default()));
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(tokio::net::TcpListener::bind(("127.0.0.1", port)))
            .expect("bind the fake engine");
        let port = listener.local_addr().unwrap().port();
        let app = Router::new()
            .route("/Tractor/{verb}", any(handle))
            .with_state(state.clone());
        rt.spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        let stop = Arc::new(AtomicBool::new(false));
        std::fs::create_dir_all(&logs).unwrap();
        let (s2, st2) = (stop.clone(), state.clone());
        let blade = std::thread::spawn(move || blade(st2, s2, bridge_bin, env, logs));
        FakeTractor {
            port,
            state,
            stop,
            rt: Some(rt),
            blade: Some(blade),
        }
    }

    pub fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    pub fn jobs(&self) -> Vec<FakeJob> {
        self.state.lock().unwrap().jobs.clone()
    }

    pub fn rejected(&self) -> Vec<String> {
        self.state.lock().unwrap().rejected.clone()
    }
}

impl Drop for FakeTractor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(b) = self.blade.take() {
            let _ = b.join();
        }
        if let Some(rt) = self.rt.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}
