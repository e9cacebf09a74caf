//! Observability and the deploy files (issue 7), checked with the real tools:
//!
//! - a real Prometheus (Debian `prometheus`), started with the deploy scrape config
//!   and alert rules, scrapes a real `iom-worker` and a real `iom-bridge` during a
//!   publish on real RabbitMQ; the counters it reports over its HTTP API must match
//!   the publish, every dashboard expression must evaluate, the alert rules must
//!   load and evaluate, and the step-error alert must go pending on the injected
//!   failures;
//! - every metric name the dashboards and alerts use exists in a live `/metrics`;
//! - `promtool check config`, `promtool check rules`, `promtool test rules`;
//! - `rabbitmqctl import_definitions` takes `deploy/rabbitmq/definitions.json` into
//!   a fresh vhost, and iom's own topology declaration then agrees with it (a
//!   different argument would be a `PRECONDITION_FAILED`); `rabbitmq.conf` boots a
//!   private RabbitMQ node;
//! - the Grafana dashboards and provisioning, docker-compose.yml and deploy/k8s are
//!   parsed and cross-checked (no Docker engine or cluster here: they are not run);
//! - `systemd-analyze verify` on the units — the only check that may be skipped,
//!   when the tool is missing (it says so).
//!
//! Tests that need RabbitMQ or Prometheus fail, never skip, when those are missing.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use iom::config::Settings;
use iom::queue::{Broker, BrokerConfig};
use iom::sample::{self, PlateSpec};
use iom::store::GraphState;
use iom::task::StepKind;

use super::faults::submit_all;
use super::publish::{command, plan_rows, project, row, Workers};
use super::support::{free_port, rabbitmqctl, OwnNode, Vhost};
use super::tractor::{blade_env, fake, spawn_bridge, tproject, wait_job};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn deploy(rel: &str) -> PathBuf {
    repo().join("deploy").join(rel)
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("cannot read {}: {e}", p.display()))
}

/// Runs a tool that must exist; panics with its output when it fails.
fn run_ok(cmd: &mut Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| {
        panic!("cannot run {what}: {e}; install it with deploy/install-deps.sh (Debian packages prometheus, rabbitmq-server)")
    });
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{what} failed:\n{text}");
    text
}

// ---------------------------------------------------------------------------
// HTTP and the Prometheus API.
// ---------------------------------------------------------------------------

struct Http {
    rt: tokio::runtime::Runtime,
    client: reqwest::Client,
}

impl Http {
    fn new() -> Http {
        Http {
            rt: tokio::runtime::Runtime::new().unwrap(),
            client: reqwest::Client::builder()
                .timeout(Duration::from_secs(10))
                .build()
                .unwrap(),
        }
    }

    /// GET `url` with query parameters: status and body (`None` when nobody answers).
    fn get(&self, url: &str, query: &[(&str, &str)]) -> Option<(u16, String)> {
        self.rt.block_on(async {
            let r = self.client.get(url).query(query).send().await.ok()?;
            let status = r.status().as_u16();
            Some((status, r.text().await.ok()?))
        })
    }
}

/// A real Prometheus on a free loopback port with a temporary storage folder,
/// killed on drop.
struct Prometheus {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `prometheus` with the deploy config and alert rules (copied into a
    /// temporary folder), 1 s scrape and evaluation intervals, and file-SD target
    /// files naming `workers` and `bridges` (`host:port`).
    fn start(http: &Http, workers: &[String], bridges: &[String]) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let cfg = read(&deploy("prometheus/prometheus.yml"))
            .replace("scrape_interval: 15s", "scrape_interval: 1s")
            .replace("evaluation_interval: 15s", "evaluation_interval: 1s");
        assert!(cfg.contains("scrape_interval: 1s") && cfg.contains("evaluation_interval: 1s"));
        std::fs::write(dir.path().join("prometheus.yml"), cfg).unwrap();
        std::fs::copy(
            deploy("prometheus/alerts.yml"),
            dir.path().join("alerts.yml"),
        )
        .unwrap();
        std::fs::create_dir_all(dir.path().join("targets")).unwrap();
        let targets = |t: &[String]| {
            let list: Vec<String> = t.iter().map(|t| format!("\"{t}\"")).collect();
            format!("- targets: [{}]\n", list.join(", "))
        };
        std::fs::write(dir.path().join("targets/workers.yml"), targets(workers)).unwrap();
        std::fs::write(dir.path().join("targets/bridge.yml"), targets(bridges)).unwrap();
        let port = free_port();
        let log = std::fs::File::create(dir.path().join("prometheus.log")).unwrap();
        let child = Command::new("prometheus")
            .arg(format!(
                "--config.file={}",
                dir.path().join("prometheus.yml").display()
            ))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .current_dir(dir.path())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| {
                panic!("cannot start prometheus: {e}; install it (apt-get install prometheus, or deploy/install-deps.sh)")
            });
        let p = Prometheus { child, port, dir };
        let t0 = Instant::now();
        loop {
            if let Some((200, _)) = http.get(&p.url("/-/ready"), &[]) {
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "prometheus never became ready:\n{}",
                p.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
        p
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// `GET /api/v1/<what>` (`query`, `rules`, `alerts`, `targets`): the `data`
    /// member; panics unless the status is `success`.
    fn api(&self, http: &Http, what: &str, params: &[(&str, &str)]) -> Value {
        let (status, body) = http
            .get(&self.url(&format!("/api/v1/{what}")), params)
            .unwrap_or_else(|| panic!("prometheus does not answer:\n{}", self.log()));
        let v: Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("bad JSON from /api/v1/{what} ({status}): {e}: {body}"));
        assert_eq!(
            v["status"], "success",
            "/api/v1/{what} {params:?} failed: {body}"
        );
        v["data"].clone()
    }

    /// An instant query: `(labels, value)` per series.
    fn query(&self, http: &Http, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let data = self.api(http, "query", &[("query", q)]);
        match data["resultType"].as_str() {
            Some("vector") => data["result"]
                .as_array()
                .unwrap()
                .iter()
                .map(|s| {
                    let labels = s["metric"]
                        .as_object()
                        .unwrap()
                        .iter()
                        .map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string()))
                        .collect();
                    (labels, parse_value(&s["value"][1]))
                })
                .collect(),
            Some("scalar") => vec![(BTreeMap::new(), parse_value(&data["result"][1]))],
            other => panic!("{q}: unexpected result type {other:?}"),
        }
    }

    /// The single value of `q`; panics unless there is exactly one series.
    fn value(&self, http: &Http, q: &str) -> f64 {
        let r = self.query(http, q);
        assert_eq!(r.len(), 1, "{q}: want one series, got {r:?}");
        r[0].1
    }
}

fn parse_value(v: &Value) -> f64 {
    match v.as_str().unwrap_or("NaN") {
        "+Inf" => f64::INFINITY,
        "-Inf" => f64::NEG_INFINITY,
        s => s.parse().unwrap_or(f64::NAN),
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` until it returns `Some` (at most `within`).
fn eventually<T>(within: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let t0 = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(t0.elapsed() < within, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(250));
    }
}

// ---------------------------------------------------------------------------
// Dashboards and alerts: their expressions and metric names.
// ---------------------------------------------------------------------------

fn dashboards() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for name in ["iom-farm", "iom-node", "iom-services"] {
        let p = deploy(&format!("grafana/dashboards/{name}.json"));
        let v: Value = serde_json::from_str(&read(&p))
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", p.display()));
        out.push((name.to_string(), v));
    }
    out
}

/// Every panel, rows' children included.
fn panels(d: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        out.push(p);
        if let Some(children) = p["panels"].as_array() {
            out.extend(children.iter());
        }
    }
    out
}

/// `(where, expr)` of every dashboard target, with Grafana's variables replaced
/// by what Prometheus accepts.
fn dashboard_exprs() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for (name, d) in dashboards() {
        for p in panels(&d) {
            for t in p["targets"].as_array().into_iter().flatten() {
                let e = t["expr"].as_str().unwrap();
                let e = e
                    .replace("$__rate_interval", "1m")
                    .replace("$__interval", "15s")
                    .replace("$node", ".*");
                assert!(!e.contains('$'), "{name}: unknown variable in {e}");
                out.push((format!("{name} / {}", p["title"].as_str().unwrap()), e));
            }
        }
    }
    out
}

fn alert_rules() -> Vec<(String, String)> {
    let v: serde_yaml::Value =
        serde_yaml::from_str(&read(&deploy("prometheus/alerts.yml"))).unwrap();
    let mut out = Vec::new();
    for g in v["groups"].as_sequence().unwrap() {
        for r in g["rules"].as_sequence().unwrap() {
            out.push((
                r["alert"].as_str().unwrap().to_string(),
                r["expr"].as_str().unwrap().to_string(),
            ));
        }
    }
    out
}

/// Metric names (`iom_…`) used by the dashboards and the alert rules.
fn names_used() -> BTreeSet<String> {
    let re = regex::Regex::new(r"\biom_[a-z0-9_]+\b").unwrap();
    let mut text = String::new();
    for (name, _) in dashboards() {
        text.push_str(&read(&deploy(&format!("grafana/dashboards/{name}.json"))));
    }
    for (_, e) in alert_rules() {
        text.push_str(&e);
        text.push('\n');
    }
    re.find_iter(&text)
        .map(|m| m.as_str().to_string())
        .collect()
}

/// Sample names in a text exposition.
fn exposed(body: &str) -> BTreeSet<String> {
    body.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap_or("").to_string())
        .collect()
}

// ---------------------------------------------------------------------------
// End to end: Prometheus scrapes a worker and the bridge during a publish.
// ---------------------------------------------------------------------------

const PLATES: usize = 3;
const FRAMES: i64 = 6;
/// tproject's steps: probe, copy, thumbnail, register, cleanup.
const STEPS: usize = 5;

#[test]
fn prometheus_scrapes_a_worker_and_the_bridge_and_the_counters_match_the_publish() {
    let http = Http::new();
    let vh = Vhost::new();
    let mut p = tproject(&vh);
    let (wport, bport) = (free_port(), free_port());
    // The bridge takes metrics.listen from the settings file, the worker from the
    // environment (which wins), so each has its own port.
    let mut yaml = read(&p.config);
    yaml.push_str(&format!(
        "metrics:\n  listen: \"127.0.0.1:{bport}\"\n  queue_depth_every_secs: 1\n"
    ));
    std::fs::write(&p.config, yaml).unwrap();
    p.settings = Settings::load_with(Some(&p.config), &|_| None, std::iter::empty()).unwrap();

    // Plates first (their sizes are what the copy counters must report).
    let mut rows = Vec::new();
    let mut source_bytes = 0u64;
    for i in 0..PLATES {
        let spec = PlateSpec::exr(
            &format!("A{i:03}"),
            &format!("A{i:03}C001."),
            64,
            36,
            FRAMES,
        );
        for f in sample::write_plate(&p.delivery, &spec).unwrap() {
            source_bytes += std::fs::metadata(&f).unwrap().len();
        }
        rows.push(row(&p.delivery, &spec, &format!("ABC_{:04}", (i + 1) * 10)));
    }
    let graphs = plan_rows(&p, &rows);
    assert_eq!(graphs.len(), PLATES);

    let eng = fake(blade_env(&p), &p.root.join("blade-logs"), 0);
    let _bridge = spawn_bridge(&p, &vh, &eng.addr());
    // Every probe fails transiently once: retries, a retry tier's wait, a failure
    // ratio the step-error alert sees.
    let worker = command(&p, "iom-worker", "probe:transient:1")
        .env("IOM__METRICS__LISTEN", format!("127.0.0.1:{wport}"))
        .env("IOM__METRICS__QUEUE_DEPTH_EVERY_SECS", "0")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iom-worker");
    let _workers = Workers(vec![worker]);
    let wtarget = format!("127.0.0.1:{wport}");
    let btarget = format!("127.0.0.1:{bport}");
    let prom = Prometheus::start(
        &http,
        std::slice::from_ref(&wtarget),
        std::slice::from_ref(&btarget),
    );
    // Both targets up before the publish: Prometheus sees the series at zero.
    eventually(Duration::from_secs(30), "both targets up", || {
        let up = prom.query(&http, r#"up{job=~"iom-.+"} == 1"#);
        (up.len() == 2).then_some(())
    });

    let t0 = Instant::now();
    let works = submit_all(&p, &graphs);
    eventually(Duration::from_secs(120), "every graph terminal", || {
        works
            .iter()
            .all(|w| w.status().unwrap().state != GraphState::Running)
            .then_some(())
    });
    let publish_secs = t0.elapsed().as_secs_f64();
    for w in &works {
        assert_eq!(w.status().unwrap().state, GraphState::Succeeded);
    }
    wait_job(
        &eng,
        Duration::from_secs(60),
        "every Tractor job done",
        |j| j.len() == PLATES && j.iter().all(|j| j.all_done()),
    );

    let tasks = (PLATES * STEPS) as f64;
    let w = r#"job="iom-worker""#;
    // Wait for a scrape after the last task finished.
    eventually(Duration::from_secs(30), "the last task scraped", || {
        let done = prom.value(
            &http,
            &format!(r#"sum(iom_tasks_finished_total{{{w},outcome="succeeded"}})"#),
        );
        (done == tasks).then_some(())
    });

    let v = |q: String| prom.value(&http, &q);
    let by_kind = |metric: &str, extra: &str| -> BTreeMap<String, f64> {
        prom.query(&http, &format!("sum by (kind) ({metric}{{{w}{extra}}})"))
            .into_iter()
            .map(|(l, v)| (l["kind"].clone(), v))
            .collect()
    };
    let received = by_kind("iom_tasks_received_total", "");
    let succeeded = by_kind("iom_tasks_finished_total", r#",outcome="succeeded""#);
    let retried = by_kind("iom_tasks_finished_total", r#",outcome="retry_scheduled""#);
    eprintln!("observe: received {received:?}, succeeded {succeeded:?}, retried {retried:?}");
    for kind in ["probe", "copy", "thumbnail", "register", "cleanup"] {
        let want_received = if kind == "probe" { 2 * PLATES } else { PLATES };
        assert_eq!(received[kind], want_received as f64, "received {kind}");
        assert_eq!(succeeded[kind], PLATES as f64, "succeeded {kind}");
        let want_retried = if kind == "probe" { PLATES } else { 0 };
        assert_eq!(retried[kind], want_retried as f64, "retry_scheduled {kind}");
    }
    // Kinds not in the graph exist at zero (exported at start-up).
    assert_eq!(received["proxy"], 0.0);
    assert_eq!(received["review"], 0.0);
    for outcome in ["dead_lettered", "unsettled", "stale", "already_done"] {
        assert_eq!(
            v(format!(
                r#"sum(iom_tasks_finished_total{{{w},outcome="{outcome}"}})"#
            )),
            0.0,
            "{outcome}"
        );
    }
    let all_received = v(format!("sum(iom_tasks_received_total{{{w}}})"));
    assert_eq!(all_received, tasks + PLATES as f64);
    assert_eq!(
        v(format!("sum(iom_tasks_finished_total{{{w}}})")),
        all_received,
        "every delivery finished with an outcome"
    );
    assert_eq!(
        v(format!(
            r#"sum(iom_task_retries_total{{{w},kind="probe"}})"#
        )),
        PLATES as f64
    );
    assert_eq!(
        v(format!("sum(iom_task_retries_total{{{w}}})")),
        PLATES as f64
    );
    assert_eq!(v(format!("sum(iom_task_redeliveries_total{{{w}}})")), 0.0);
    assert_eq!(v(format!("sum(iom_tasks_dead_lettered_total{{{w}}})")), 0.0);
    assert_eq!(v(format!("sum(iom_tasks_in_progress{{{w}}})")), 0.0);
    // Step runs: every probe once failed (transient) and once ran fine.
    assert_eq!(
        v(format!(
            r#"sum(iom_step_duration_seconds_count{{{w},kind="probe",outcome="transient"}})"#
        )),
        PLATES as f64
    );
    assert_eq!(
        v(format!(
            r#"sum(iom_step_duration_seconds_count{{{w},outcome="ok"}})"#
        )),
        tasks
    );
    // Queue wait: one observation per delivery; the retried probes waited in the
    // 1 s tier.
    assert_eq!(
        v(format!("sum(iom_queue_wait_seconds_count{{{w}}})")),
        all_received
    );
    let probe_wait = v(format!(
        r#"sum(iom_queue_wait_seconds_sum{{{w},kind="probe"}})"#
    ));
    assert!(
        probe_wait >= PLATES as f64 * 0.9,
        "probe queue wait {probe_wait}"
    );
    // Copy IO: every source frame written once, read at least once.
    let frames = (PLATES as i64 * FRAMES) as f64;
    assert_eq!(
        v(format!(
            r#"sum(iom_frames_processed_total{{{w},kind="copy"}})"#
        )),
        frames
    );
    assert_eq!(
        v(format!(
            r#"sum(iom_bytes_written_total{{{w},kind="copy"}})"#
        )),
        source_bytes as f64
    );
    assert!(v(format!(r#"sum(iom_bytes_read_total{{{w},kind="copy"}})"#)) >= source_bytes as f64);
    assert_eq!(
        v(format!("sum(iom_amqp_publish_failures_total{{{w}}})")),
        0.0
    );
    assert_eq!(v(format!("sum(iom_amqp_reconnects_total{{{w}}})")), 0.0);
    let last_ok = v(format!(
        r#"max(iom_last_success_timestamp_seconds{{{w},kind="cleanup"}})"#
    ));
    assert!(
        (iom::queue::unix_ms_now() as f64 / 1000.0 - last_ok).abs() < 300.0,
        "last success {last_ok}"
    );
    // Build info, process metrics, and the node label from the deploy relabelling.
    assert_eq!(
        v(r#"sum(iom_build_info{job="iom-worker",node="127.0.0.1"})"#.into()),
        1.0
    );
    assert_eq!(
        v(r#"sum(iom_build_info{job="iom-bridge",node="127.0.0.1"})"#.into()),
        1.0
    );
    assert!(v(format!("sum(iom_process_resident_memory_bytes{{{w}}})")) > 1e6);
    assert!(v(format!("sum(iom_process_open_fds{{{w}}})")) > 0.0);

    // The bridge: queue depths and consumers of every iom queue, and the sync lag.
    let b = r#"job="iom-bridge""#;
    let consumers: BTreeMap<String, f64> = prom
        .query(&http, &format!("iom_queue_consumers{{{b}}}"))
        .into_iter()
        .map(|(l, v)| (l["queue"].clone(), v))
        .collect();
    eprintln!("observe: consumers per queue (from the bridge) {consumers:?}");
    for k in StepKind::ALL {
        assert_eq!(
            consumers[&format!("t.tasks.{k}")],
            1.0,
            "consumers of t.tasks.{k}"
        );
    }
    assert_eq!(consumers["t.retry.1s"], 0.0);
    assert_eq!(consumers["t.retry.2s"], 0.0);
    assert_eq!(consumers["t.dead"], 0.0);
    // The work queues drain: wait for a depth reading (every 1 s) taken after the
    // last ack and scraped (every 1 s); a machine under load can lag a few seconds.
    eventually(
        Duration::from_secs(30),
        "the work queues read empty",
        || {
            let depth = v(format!(
                r#"sum(iom_queue_messages{{{b},queue=~"t[.]tasks[.].+"}})"#
            ));
            (depth == 0.0).then_some(())
        },
    );
    assert_eq!(
        v(format!(r#"sum(iom_queue_messages{{{b},queue="t.dead"}})"#)),
        0.0
    );
    let read_ago = v(format!(
        "time() - max(iom_queue_depth_updated_timestamp_seconds{{{b}}})"
    ));
    assert!(read_ago < 30.0, "queue depths read {read_ago} s ago");
    let mirrored = v(format!("sum(iom_tractor_sync_lag_seconds_count{{{b}}})"));
    let lag_sum = v(format!("sum(iom_tractor_sync_lag_seconds_sum{{{b}}})"));
    assert!(mirrored >= PLATES as f64, "mirrored events {mirrored}");
    assert!(
        lag_sum / mirrored < 30.0,
        "mean sync lag {}",
        lag_sum / mirrored
    );

    // Every dashboard expression evaluates, and returns data on this farm.
    let mut empty = Vec::new();
    for (at, e) in dashboard_exprs() {
        if prom.query(&http, &e).is_empty() {
            empty.push(format!("{at}: {e}"));
        }
    }
    assert!(
        empty.is_empty(),
        "dashboard queries with no data:\n{}",
        empty.join("\n")
    );
    // The alert rules loaded, evaluate without error, and react: the injected probe
    // failures (half of the probe runs) make the step-error alert pending, while a
    // healthy farm raises nothing else.
    let rules = prom.api(&http, "rules", &[("type", "alert")]);
    let loaded: Vec<(String, String)> = rules["groups"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|g| g["rules"].as_array().unwrap().iter())
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["health"].as_str().unwrap_or("").to_string(),
            )
        })
        .collect();
    assert_eq!(loaded.len(), alert_rules().len(), "{loaded:?}");
    for (name, health) in &loaded {
        assert!(
            health == "ok" || health == "unknown",
            "rule {name}: {health}"
        );
    }
    for (_, e) in alert_rules() {
        let _ = prom.query(&http, &e); // evaluates (panics on a PromQL error)
    }
    let alerts = eventually(Duration::from_secs(30), "the step-error alert", || {
        let a = prom.api(&http, "alerts", &[]);
        let list: Vec<(String, String, String)> = a["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| {
                (
                    a["labels"]["alertname"].as_str().unwrap_or("").to_string(),
                    a["labels"]["kind"].as_str().unwrap_or("").to_string(),
                    a["state"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        list.iter()
            .any(|(n, k, _)| n == "IomStepErrorRateHigh" && k == "probe")
            .then_some(list)
    });
    eprintln!("observe: alerts after the publish {alerts:?}");
    for (n, k, _) in &alerts {
        assert!(
            n == "IomStepErrorRateHigh" && k == "probe",
            "unexpected alert {n} {k}"
        );
    }

    // Figures: scrape cost of each target.
    for job in ["iom-worker", "iom-bridge"] {
        let dur = v(format!(r#"max(scrape_duration_seconds{{job="{job}"}})"#));
        let samples = v(format!(r#"max(scrape_samples_scraped{{job="{job}"}})"#));
        eprintln!(
            "observe: {job}: scrape {:.1} ms, {samples} samples",
            dur * 1000.0
        );
        assert!(dur < 1.0, "{job} scrape took {dur} s");
    }
    let (_, body) = http
        .get(&format!("http://{wtarget}/metrics"), &[])
        .expect("worker /metrics");
    eprintln!(
        "observe: worker /metrics {} bytes; publish of {PLATES} plates ({} tasks) in {publish_secs:.1} s; mean Tractor sync lag {:.3} s over {mirrored} events",
        body.len(),
        tasks,
        lag_sum / mirrored
    );
}

/// Every metric name in the dashboards and alert rules is in the `/metrics` of a
/// live worker (reading queue depths, as the bridge does). Catches renamed or
/// misspelt series.
#[test]
fn every_metric_in_the_dashboards_and_alerts_exists_in_a_live_metrics_output() {
    let http = Http::new();
    let vh = Vhost::new();
    let p = project("probe, copy, cleanup", Some(&vh));
    let port = free_port();
    let worker = command(&p, "iom-worker", "")
        .env("IOM__METRICS__LISTEN", format!("127.0.0.1:{port}"))
        .env("IOM__METRICS__QUEUE_DEPTH_EVERY_SECS", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn iom-worker");
    let _w = Workers(vec![worker]);
    let body = eventually(Duration::from_secs(30), "queue depths in /metrics", || {
        let (status, body) = http.get(&format!("http://127.0.0.1:{port}/metrics"), &[])?;
        (status == 200 && body.contains("iom_queue_consumers{queue=\"t.tasks.copy\"} 1"))
            .then_some(body)
    });
    let live = exposed(&body);
    let used = names_used();
    assert!(used.len() >= 20, "{used:?}");
    let missing: Vec<_> = used.difference(&live).collect();
    assert!(
        missing.is_empty(),
        "names used by the dashboards or alerts but not exported: {missing:?}"
    );
    // And the conventions hold on the live output too.
    for name in &live {
        assert!(name.starts_with("iom_"), "{name}");
    }
    eprintln!(
        "observe: {} metric names used by dashboards/alerts, all among {} live sample names",
        used.len(),
        live.len()
    );
}

// ---------------------------------------------------------------------------
// promtool.
// ---------------------------------------------------------------------------

#[test]
fn promtool_checks_the_config_the_rules_and_the_rule_unit_tests() {
    let dir = deploy("prometheus");
    let out = run_ok(
        Command::new("promtool")
            .args(["check", "config", "prometheus.yml"])
            .current_dir(&dir),
        "promtool check config",
    );
    assert!(out.contains("SUCCESS"), "{out}");
    let out = run_ok(
        Command::new("promtool")
            .args(["check", "rules", "alerts.yml"])
            .current_dir(&dir),
        "promtool check rules",
    );
    assert!(
        out.contains(&format!("SUCCESS: {} rules found", alert_rules().len())),
        "{out}"
    );
    let out = run_ok(
        Command::new("promtool")
            .args(["test", "rules", "alerts_test.yml"])
            .current_dir(&dir),
        "promtool test rules",
    );
    assert!(out.contains("SUCCESS"), "{out}");

    // The issue's alerts are there, and every alert has a unit test that fires it.
    let names: BTreeSet<String> = alert_rules().into_iter().map(|(n, _)| n).collect();
    for want in [
        "IomDeadLetterQueueGrowing",
        "IomQueueWithoutConsumers",
        "IomDeadLetterRateHigh",
        "IomStepErrorRateHigh",
        "IomTasksStuck",
        "IomTrackerDown",
    ] {
        assert!(names.contains(want), "missing alert {want}");
    }
    let tests: serde_yaml::Value =
        serde_yaml::from_str(&read(&dir.join("alerts_test.yml"))).unwrap();
    let mut fired = BTreeSet::new();
    for t in tests["tests"].as_sequence().unwrap() {
        for a in t["alert_rule_test"].as_sequence().unwrap() {
            if a["exp_alerts"].as_sequence().is_some_and(|e| !e.is_empty()) {
                fired.insert(a["alertname"].as_str().unwrap().to_string());
            }
        }
    }
    let untested: Vec<_> = names.difference(&fired).collect();
    assert!(
        untested.is_empty(),
        "alerts no unit test fires: {untested:?}"
    );

    // The compose stack's target files are valid file-SD files for the same config.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::copy(
        dir.join("prometheus.yml"),
        tmp.path().join("prometheus.yml"),
    )
    .unwrap();
    std::fs::copy(dir.join("alerts.yml"), tmp.path().join("alerts.yml")).unwrap();
    std::fs::create_dir_all(tmp.path().join("targets")).unwrap();
    for f in ["workers.yml", "bridge.yml"] {
        std::fs::copy(
            dir.join("compose-targets").join(f),
            tmp.path().join("targets").join(f),
        )
        .unwrap();
        let v: serde_yaml::Value =
            serde_yaml::from_str(&read(&dir.join("targets").join(f))).unwrap();
        assert!(
            v[0]["targets"].as_sequence().is_some_and(|t| !t.is_empty()),
            "{f}"
        );
    }
    run_ok(
        Command::new("promtool")
            .args(["check", "config", "prometheus.yml"])
            .current_dir(tmp.path()),
        "promtool check config (compose targets)",
    );
}

// ---------------------------------------------------------------------------
// RabbitMQ definitions and configuration.
// ---------------------------------------------------------------------------

fn list(vhost: &str, what: &str, cols: &[&str]) -> BTreeSet<String> {
    let mut args = vec![what, "-p", vhost];
    args.extend_from_slice(cols);
    rabbitmqctl(&args)
        .lines()
        .skip(1) // header
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

#[test]
fn rabbitmq_definitions_import_into_a_fresh_vhost_and_agree_with_the_topology() {
    let vh = Vhost::new();
    // The file names vhost "iom": import a copy that names the test's vhost.
    let mut defs: Value =
        serde_json::from_str(&read(&deploy("rabbitmq/definitions.json"))).unwrap();
    assert_eq!(defs["vhosts"][0]["name"], "iom");
    defs["vhosts"] = serde_json::json!([{ "name": vh.name }]);
    for k in ["queues", "exchanges", "bindings", "policies"] {
        for o in defs[k].as_array_mut().unwrap() {
            assert_eq!(o["vhost"], "iom", "{k}: {o}");
            o["vhost"] = Value::String(vh.name.clone());
        }
    }
    for k in ["users", "permissions"] {
        assert!(
            defs.get(k).is_none(),
            "definitions.json must hold no {k} (no secrets)"
        );
    }
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("definitions.json");
    std::fs::write(&file, serde_json::to_vec_pretty(&defs).unwrap()).unwrap();
    rabbitmqctl(&["import_definitions", file.to_str().unwrap()]);

    let queues = list(&vh.name, "list_queues", &["name", "type", "policy"]);
    let bindings = list(
        &vh.name,
        "list_bindings",
        &[
            "source_name",
            "destination_name",
            "routing_key",
            "arguments",
        ],
    );
    eprintln!(
        "observe: definitions imported: {} queues, {} bindings",
        queues.len(),
        bindings.len()
    );
    assert!(queues.iter().all(|q| q.contains("quorum")), "{queues:?}");
    assert!(
        queues
            .iter()
            .any(|q| q.starts_with("iom.tractor-bridge") && q.contains("iom-bridge-events")),
        "the bridge queue policy applies: {queues:?}"
    );

    // iom's own declaration, with the default settings, against the imported
    // objects: any argument that differs is a PRECONDITION_FAILED here, any
    // missing object or binding shows as a difference below.
    let defaults = Settings::load_with(None, &|_| None, std::iter::empty()).unwrap();
    let secret = tmp.path().join("broker-password");
    std::fs::write(&secret, "guest\n").unwrap();
    let cfg = BrokerConfig::from_settings(&iom::config::BrokerSettings {
        url: vh.url(),
        password: iom::config::SecretRef {
            env: None,
            file: Some(secret),
        },
        ..defaults.broker.clone()
    })
    .unwrap();
    assert_eq!(cfg.prefix, "iom");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let broker = Broker::connect(&cfg).await.unwrap();
        broker
            .declare_topology()
            .await
            .expect("iom's topology agrees with definitions.json");
        let consumer = broker
            .event_consumer(&defaults.tractor.queue, 1)
            .await
            .expect("the bridge queue agrees with definitions.json");
        drop(consumer);
        broker.close().await;
    });
    let queues_after = list(&vh.name, "list_queues", &["name", "type", "policy"]);
    let bindings_after = list(
        &vh.name,
        "list_bindings",
        &[
            "source_name",
            "destination_name",
            "routing_key",
            "arguments",
        ],
    );
    assert_eq!(queues_after, queues, "iom declared queues the file lacks");
    assert_eq!(
        bindings_after, bindings,
        "iom declared bindings the file lacks"
    );
    let names: BTreeSet<String> = queues
        .iter()
        .map(|q| q.split_whitespace().next().unwrap().to_string())
        .collect();
    for k in StepKind::ALL {
        assert!(names.contains(&format!("iom.tasks.{k}")));
    }
    for s in &defaults.broker.retry_tiers_secs {
        assert!(names.contains(&format!("iom.retry.{s}s")), "tier {s}");
    }
    // vh (and with it everything imported) is deleted on drop.
}

#[test]
fn rabbitmq_conf_boots_a_node_and_outlasts_the_longest_step() {
    let conf = read(&deploy("rabbitmq/rabbitmq.conf"));
    let timeout_ms: u64 = conf
        .lines()
        .find_map(|l| l.trim().strip_prefix("consumer_timeout = "))
        .expect("consumer_timeout set")
        .parse()
        .unwrap();
    let defaults = Settings::load_with(None, &|_| None, std::iter::empty()).unwrap();
    let longest = defaults
        .worker
        .time_limits_secs
        .values()
        .copied()
        .max()
        .unwrap();
    assert!(
        timeout_ms > longest * 1000,
        "consumer_timeout {timeout_ms} ms must exceed the longest step limit {longest} s"
    );
    // A node of the test's own boots with it (an unknown or malformed key stops
    // RabbitMQ at start-up). The test machine may have less free disk than the
    // farm limit: lower it for this boot only.
    let conf = conf.replace(
        "disk_free_limit.absolute = 5GB",
        "disk_free_limit.absolute = 50MB",
    );
    let node = OwnNode::start(&conf);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let mut cfg = BrokerConfig::new(node.url(), "iom");
        cfg.password = Some(iom::config::Secret::new("guest".into()));
        let broker = Broker::connect(&cfg).await.unwrap();
        broker.declare_topology().await.unwrap();
        broker.close().await;
    });
    eprintln!(
        "observe: rabbitmq.conf boots a node (consumer_timeout {} h)",
        timeout_ms / 3_600_000
    );
}

// ---------------------------------------------------------------------------
// Grafana, compose, Kubernetes, systemd.
// ---------------------------------------------------------------------------

#[test]
fn grafana_dashboards_and_provisioning_are_consistent() {
    let mut uids = BTreeSet::new();
    for (name, d) in dashboards() {
        assert_eq!(d["uid"], name.as_str(), "stable uid");
        assert!(d["id"].is_null(), "{name}: id must be null");
        uids.insert(name.clone());
        let vars = d["templating"]["list"].as_array().unwrap();
        let ds = vars
            .iter()
            .find(|v| v["name"] == "datasource")
            .unwrap_or_else(|| panic!("{name}: no datasource variable"));
        assert_eq!(ds["type"], "datasource");
        assert_eq!(ds["query"], "prometheus");
        let mut ids = BTreeSet::new();
        let mut n = 0;
        for p in panels(&d) {
            assert!(
                ids.insert(p["id"].as_i64().unwrap()),
                "{name}: duplicate panel id"
            );
            let g = &p["gridPos"];
            assert!(
                g["x"].as_i64().unwrap() + g["w"].as_i64().unwrap() <= 24,
                "{name}: panel {} off the grid",
                p["title"]
            );
            if p["type"] == "row" {
                continue;
            }
            n += 1;
            assert_eq!(
                p["datasource"]["uid"], "${datasource}",
                "{name}: {}",
                p["title"]
            );
            let targets = p["targets"].as_array().unwrap();
            assert!(!targets.is_empty(), "{name}: {} has no query", p["title"]);
            for t in targets {
                assert_eq!(t["datasource"]["uid"], "${datasource}");
            }
        }
        assert!(n >= 8, "{name}: only {n} panels");
        for v in vars.iter().filter(|v| v["type"] == "query") {
            assert_eq!(v["datasource"]["uid"], "${datasource}");
        }
    }
    assert_eq!(uids.len(), 3);
    // Provisioning: the provider path is where docker-compose mounts the JSON.
    let prov: serde_yaml::Value =
        serde_yaml::from_str(&read(&deploy("grafana/provisioning/dashboards/iom.yaml"))).unwrap();
    let path = prov["providers"][0]["options"]["path"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(prov["apiVersion"].as_u64(), Some(1));
    assert_eq!(
        prov["providers"][0]["allowUiUpdates"].as_bool(),
        Some(false)
    );
    let compose = read(&repo().join("docker-compose.yml"));
    assert!(compose.contains(&format!("./deploy/grafana/dashboards:{path}:ro")));
    let ds: serde_yaml::Value = serde_yaml::from_str(&read(&deploy(
        "grafana/provisioning/datasources/prometheus.yaml",
    )))
    .unwrap();
    assert_eq!(ds["datasources"][0]["type"].as_str(), Some("prometheus"));
    assert!(
        ds["datasources"][0]["uid"]
            .as_str()
            .is_some_and(|u| !u.is_empty()),
        "pinned uid"
    );
}

#[test]
fn compose_and_kubernetes_files_agree_with_the_code() {
    // docker-compose.yml (not run: no Docker engine on the build machine).
    let compose: serde_yaml::Value =
        serde_yaml::from_str(&read(&repo().join("docker-compose.yml"))).unwrap();
    let services = compose["services"].as_mapping().unwrap();
    for s in ["rabbitmq", "prometheus", "grafana", "worker", "bridge"] {
        assert!(services.contains_key(s), "compose service {s}");
    }
    for (name, s) in services {
        for v in s["volumes"].as_sequence().into_iter().flatten() {
            let v = v.as_str().unwrap();
            if let Some(rel) = v.strip_prefix("./") {
                let host = rel.split(':').next().unwrap();
                if host != "show" {
                    assert!(
                        repo().join(host).exists(),
                        "compose {name:?} mounts missing {host}"
                    );
                }
            }
        }
    }
    assert!(
        !read(&repo().join("docker-compose.yml")).contains("IOM_BROKER_PASSWORD:-"),
        "no default password in compose"
    );
    let dockerfile = read(&repo().join("Dockerfile"));
    for b in ["iom-worker", "iom-bridge"] {
        assert!(dockerfile.contains(b));
    }

    // deploy/k8s: the ScaledObject scales the Deployment on every work queue.
    let mut docs = Vec::new();
    for f in ["worker.yaml", "keda.yaml"] {
        for d in serde_yaml::Deserializer::from_str(&read(&deploy(&format!("k8s/{f}")))) {
            docs.push(<serde_yaml::Value as serde::Deserialize>::deserialize(d).unwrap());
        }
    }
    let kind = |k: &str| docs.iter().find(|d| d["kind"].as_str() == Some(k)).unwrap();
    let dep = kind("Deployment");
    let so = kind("ScaledObject");
    assert_eq!(
        so["spec"]["scaleTargetRef"]["name"],
        dep["metadata"]["name"]
    );
    let queues: BTreeSet<String> = so["spec"]["triggers"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|t| {
            assert_eq!(t["type"].as_str(), Some("rabbitmq"));
            assert!(t["authenticationRef"]["name"].as_str().is_some());
            t["metadata"]["queueName"].as_str().unwrap().to_string()
        })
        .collect();
    let names = iom::queue::Names::new("iom");
    let want: BTreeSet<String> = StepKind::ALL.iter().map(|k| names.work_queue(*k)).collect();
    assert_eq!(queues, want);
    let pod = &dep["spec"]["template"];
    let port = pod["spec"]["containers"][0]["ports"][0]["containerPort"]
        .as_u64()
        .unwrap();
    assert_eq!(
        pod["metadata"]["annotations"]["prometheus.io/port"].as_str(),
        Some(port.to_string().as_str())
    );
    let grace = pod["spec"]["terminationGracePeriodSeconds"]
        .as_u64()
        .unwrap();
    let defaults = Settings::load_with(None, &|_| None, std::iter::empty()).unwrap();
    assert!(
        grace > defaults.worker.shutdown_grace_secs,
        "pod grace {grace} s"
    );

    // The units and compose hand the password over as IOM__BROKER__PASSWORD__FILE
    // or IOM_BROKER_PASSWORD: both reach the settings.
    let s = Settings::load_with(
        None,
        &|_| None,
        [(
            "IOM__BROKER__PASSWORD__FILE".to_string(),
            "/run/credentials/iom-worker@1.service/broker-password".to_string(),
        )]
        .into_iter(),
    )
    .unwrap();
    assert_eq!(
        s.broker.password.file.as_deref(),
        Some(Path::new(
            "/run/credentials/iom-worker@1.service/broker-password"
        ))
    );
}

#[test]
fn systemd_units_verify() {
    let units = deploy("systemd");
    let worker = read(&units.join("iom-worker@.service"));
    let bridge = read(&units.join("iom-bridge.service"));
    let time_limit = |unit: &str| -> u64 {
        unit.lines()
            .find_map(|l| l.strip_prefix("TimeoutStopSec="))
            .unwrap()
            .parse()
            .unwrap()
    };
    let defaults = Settings::load_with(None, &|_| None, std::iter::empty()).unwrap();
    assert!(time_limit(&worker) > defaults.worker.shutdown_grace_secs);
    assert!(worker.contains("Environment=IOM__METRICS__LISTEN=0.0.0.0:947%i"));
    assert!(bridge.contains("Environment=IOM__METRICS__LISTEN=0.0.0.0:9465"));
    for u in [&worker, &bridge] {
        assert!(!u.contains("IOM_BROKER_PASSWORD="), "no password in a unit");
    }
    // The one conditional check of this file.
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!(
            "observe: SKIPPED systemd-analyze verify: systemd-analyze is not installed on this machine (Debian package systemd)"
        );
        return;
    }
    // Verify copies whose ExecStart points at the binaries just built (verify
    // checks that the executable exists); an instance of the template.
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("iom-worker@.service"),
        worker.replace(
            "/usr/local/bin/iom-worker",
            env!("CARGO_BIN_EXE_iom-worker"),
        ),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("iom-bridge.service"),
        bridge.replace(
            "/usr/local/bin/iom-bridge",
            env!("CARGO_BIN_EXE_iom-bridge"),
        ),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "./iom-worker@1.service", "./iom-bridge.service"])
        .current_dir(tmp.path())
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{text}"
    );
    let ours: Vec<&str> = text.lines().filter(|l| l.contains("iom-")).collect();
    assert!(
        ours.is_empty(),
        "systemd-analyze warnings:\n{}",
        ours.join("\n")
    );
    eprintln!("observe: systemd-analyze verify: iom-worker@1.service and iom-bridge.service clean");
}
