//! Queue benchmark (issue 3, "Benchmark"): no-op tasks through iom's full RabbitMQ
//! path, against a raw lapin publish + consume of messages of the same size, in
//! the same run, on the real broker.
//!
//! Run: `cargo bench --bench queue`. Needs RabbitMQ on 127.0.0.1:5672 (guest/guest)
//! and a working `rabbitmqctl`: the run creates a private vhost and deletes it at
//! the end, also on error or Ctrl-C.
//!
//! Environment:
//! - `BENCH_N`: messages (raw) and tasks (iom) per repetition, default 2000;
//! - `BENCH_REPS`: repetitions, default 3 (the table shows medians);
//! - `BENCH_SLOTS`: worker slots = prefetch to compare, default `2,8`;
//! - `BENCH_WINDOW`: publishes (raw) or graph submits (iom) in flight, default 16;
//! - `BENCH_DIR`: where the work folders go (default: a temporary folder; point it
//!   at the farm's shared storage to include its fsync latency);
//! - `BENCH_BREAKDOWN`: operations timed one at a time for the cost breakdown,
//!   default 1000 (0 skips it);
//! - `BENCH_END`: what stops the iom clock: `count` (default), the worker's count
//!   of tasks succeeded reaching N (a task is counted once its completion record
//!   is durable, just before its ack: the raw run's end point, the last ack), or
//!   `status`, a thread polling every graph's status in the work folders (the
//!   method of the runs before 2026-12-07; its reads compete with the work for
//!   the 2 cores and the disk). Either way every graph's status is checked after
//!   the clock stops.
//!
//! Per slot count and repetition, raw first, then iom:
//! - **raw lapin**: a quorum queue declared by iom's own topology code (prefix
//!   `raw`, so its arguments are exactly a work queue's), persistent mandatory
//!   messages whose body is an encoded iom `TaskMessage` of a cleanup step,
//!   published with confirms (up to `BENCH_WINDOW` unconfirmed) while one
//!   consumer with prefetch = slots acks each. Time: first publish → last ack.
//! - **iom**: one single-node graph per task (a `cleanup` of an output folder that
//!   does not exist, so the step does nothing), work folders created beforehand,
//!   submitted with `runtime::submit` over a `worker::BrokerTransport` (up to
//!   `BENCH_WINDOW` graphs at once) while `worker::run` consumes in this process
//!   with `slots`. Time: first submit → the last task succeeded (`BENCH_END`). This
//!   includes iom's work-folder writes (dispatch mark, attempt record, completion
//!   record; the completion record is fsynced with its folder, the markers are
//!   written atomically without fsync) and its task events.
//!
//! After the table, a breakdown times each operation of a task's path alone (no
//! concurrency): the work-folder operations, the no-op step, a `spawn_blocking` hop
//! and the confirmed publishes, so a shortfall can be traced to its cause.
//!
//! CPU is this process's user + system time (`/proc/self/stat`, 10 ms ticks); for
//! iom the thread that polls the graphs' status is subtracted. Broker CPU is the
//! `beam.smp` process's, when it can be read, and includes anything else the broker
//! does meanwhile (other vhosts' traffic).

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, ensure, Context};
use futures_util::stream::{self, StreamExt, TryStreamExt};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicPublishOptions, BasicQosOptions,
    ConfirmSelectOptions, QueuePurgeOptions,
};
use lapin::types::{FieldTable, ShortString};
use lapin::{BasicProperties, Confirmation, Connection, ConnectionProperties};
use tokio::sync::{oneshot, Semaphore};

use iom::config::{Secret, Settings};
use iom::events::{TaskEvent, TaskState as EventState};
use iom::queue::{Broker, BrokerConfig};
use iom::runtime::{self, RuntimeCtx};
use iom::steps::StepContext;
use iom::store::{CompletionRecord, GraphState, WorkDir};
use iom::task::{self, Graph, PlateOutput, PublishInfo, Step, StepKind, TaskNode, SCHEMA_VERSION};
use iom::worker::{self, BrokerTransport, WorkerOptions, WorkerStats};

/// Prefix of the topology the raw lapin measurement uses.
const RAW_PREFIX: &str = "raw";
/// Prefix of iom's own topology.
const IOM_PREFIX: &str = "bench";
/// One repetition that takes longer than this is stuck (a lost message, a dead
/// worker): the benchmark fails instead of waiting for ever.
const RUN_LIMIT: Duration = Duration::from_secs(600);
/// `USER_HZ`: the unit of the CPU times in `/proc/*/stat` (100 on every Linux
/// architecture iom runs on).
const CLOCK_TICKS_PER_SEC: f64 = 100.0;

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("queue benchmark failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let opts = Options::from_env()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the tokio runtime")?;
    let vhost = Vhost::create()?;
    let result = rt.block_on(async {
        tokio::select! {
            r = bench(&vhost, &opts) => r,
            _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
        }
    });
    // Close every connection before the vhost goes (Drop deletes it). A status
    // watcher left by a failed run stops at its abort flag; do not wait for ever.
    rt.shutdown_timeout(Duration::from_secs(5));
    drop(vhost);
    result
}

/// What to run, from the environment.
#[derive(Debug)]
struct Options {
    n: usize,
    reps: usize,
    slots: Vec<u16>,
    window: usize,
    dir: Option<PathBuf>,
    breakdown: usize,
    /// Stop the iom clock by polling every graph's status (the method of the
    /// runs before 2026-12-07) instead of the worker's count.
    watch_status: bool,
}

impl Options {
    fn from_env() -> anyhow::Result<Options> {
        let n = env_number("BENCH_N", 2000)?;
        let reps = env_number("BENCH_REPS", 3)?;
        let window = env_number("BENCH_WINDOW", 16)?;
        let breakdown = env_number("BENCH_BREAKDOWN", 1000)?;
        ensure!(
            n > 0 && reps > 0 && window > 0,
            "BENCH_N, BENCH_REPS and BENCH_WINDOW must be at least 1"
        );
        let slots = match std::env::var("BENCH_SLOTS") {
            Ok(s) => s
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse::<u16>()
                        .ok()
                        .filter(|v| *v > 0)
                        .ok_or_else(|| anyhow!("BENCH_SLOTS={s:?}: expected numbers from 1 to 65535 separated by commas, e.g. 2,8"))
                })
                .collect::<anyhow::Result<Vec<u16>>>()?,
            Err(_) => vec![2, 8],
        };
        Ok(Options {
            n,
            reps,
            slots,
            window,
            dir: std::env::var_os("BENCH_DIR").map(PathBuf::from),
            breakdown,
            watch_status: match std::env::var("BENCH_END").as_deref() {
                Ok("status") => true,
                Ok("count") | Err(_) => false,
                Ok(other) => bail!("BENCH_END={other:?}: expected count or status"),
            },
        })
    }
}

fn env_number(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

// ---------------------------------------------------------------------------
// The private vhost.
// ---------------------------------------------------------------------------

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .with_context(|| {
            format!("cannot run rabbitmqctl {args:?}; the benchmark needs RabbitMQ on 127.0.0.1:5672 and rabbitmqctl (run as root)")
        })?;
    ensure!(
        out.status.success(),
        "rabbitmqctl {args:?} failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// A private vhost, deleted on drop (also on error, panic or Ctrl-C).
struct Vhost {
    name: String,
}

impl Vhost {
    fn create() -> anyhow::Result<Vhost> {
        // iom's work queues dead-letter at least once, which 3.10 honours only with
        // this flag (idempotent; the integration tests enable it the same way).
        rabbitmqctl(&["enable_feature_flag", "stream_queue"])?;
        let name = format!("iom-bench-{:016x}", fastrand::u64(..));
        rabbitmqctl(&["add_vhost", &name])?;
        let v = Vhost { name };
        rabbitmqctl(&["set_permissions", "-p", &v.name, "guest", ".*", ".*", ".*"])?;
        Ok(v)
    }

    /// iom's broker settings for this vhost (documented defaults otherwise).
    fn config(&self, prefix: &str) -> BrokerConfig {
        let mut cfg =
            BrokerConfig::new(format!("amqp://guest@127.0.0.1:5672/{}", self.name), prefix);
        cfg.password = Some(Secret::new("guest".into()));
        cfg
    }

    fn raw_url(&self) -> String {
        format!("amqp://guest:guest@127.0.0.1:5672/{}", self.name)
    }
}

impl Drop for Vhost {
    fn drop(&mut self) {
        if let Err(e) = rabbitmqctl(&["delete_vhost", &self.name]) {
            eprintln!(
                "could not delete the benchmark vhost {}: {e:#}; delete it with `rabbitmqctl delete_vhost {}`",
                self.name, self.name
            );
        }
    }
}

// ---------------------------------------------------------------------------
// CPU accounting.
// ---------------------------------------------------------------------------

/// User + system CPU seconds from a `/proc/.../stat` file.
fn stat_cpu_secs(path: &Path) -> anyhow::Result<f64> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // The command name (field 2) may hold spaces and parentheses: count fields
    // after its closing parenthesis. utime and stime are fields 14 and 15.
    let rest = text
        .rfind(')')
        .map(|i| &text[i + 1..])
        .ok_or_else(|| anyhow!("{} has no command field", path.display()))?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let tick = |i: usize| -> anyhow::Result<f64> {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .map(|t| t as f64 / CLOCK_TICKS_PER_SEC)
            .ok_or_else(|| anyhow!("{} has no CPU time field {}", path.display(), i + 3))
    };
    Ok(tick(11)? + tick(12)?)
}

fn process_cpu() -> anyhow::Result<f64> {
    stat_cpu_secs(Path::new("/proc/self/stat"))
}

fn thread_cpu() -> anyhow::Result<f64> {
    stat_cpu_secs(Path::new("/proc/thread-self/stat"))
}

/// The broker's `/proc/<pid>/stat`, when a `beam.smp` process is visible.
fn broker_stat() -> Option<PathBuf> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "beam.smp").then(|| e.path().join("stat"))
    })
}

/// CPU seconds of this process and of the broker at one instant.
#[derive(Debug, Clone, Copy)]
struct CpuMark {
    own: f64,
    broker: Option<f64>,
}

impl CpuMark {
    fn now(broker: Option<&Path>) -> anyhow::Result<CpuMark> {
        Ok(CpuMark {
            own: process_cpu()?,
            broker: broker.and_then(|p| stat_cpu_secs(p).ok()),
        })
    }
}

/// One repetition's figures.
#[derive(Debug, Clone, Copy)]
struct Sample {
    /// First publish/submit → last ack/completion.
    elapsed: Duration,
    /// First publish/submit → the last one confirmed.
    published: Duration,
    /// Messages or tasks.
    n: usize,
    /// This process's CPU seconds over `elapsed`.
    cpu: f64,
    /// The broker's CPU seconds over `elapsed`, when readable.
    broker_cpu: Option<f64>,
}

impl Sample {
    fn new(
        n: usize,
        t0: Instant,
        published: Instant,
        end: Instant,
        a: CpuMark,
        b: CpuMark,
    ) -> Self {
        Sample {
            elapsed: end.duration_since(t0),
            published: published.duration_since(t0),
            n,
            cpu: b.own - a.own,
            broker_cpu: a.broker.zip(b.broker).map(|(x, y)| y - x),
        }
    }

    fn rate(&self) -> f64 {
        self.n as f64 / self.elapsed.as_secs_f64()
    }

    fn cpu_ms_each(&self) -> f64 {
        self.cpu * 1000.0 / self.n as f64
    }

    fn broker_ms_each(&self) -> Option<f64> {
        self.broker_cpu.map(|c| c * 1000.0 / self.n as f64)
    }

    fn line(&self, what: &str) -> String {
        format!(
            "  {what:<5} {:>8.0}/s  elapsed {:>6.2}s  (publishing done at {:>6.2}s)  cpu {:>6.3} ms each  broker cpu {}",
            self.rate(),
            self.elapsed.as_secs_f64(),
            self.published.as_secs_f64(),
            self.cpu_ms_each(),
            self.broker_ms_each()
                .map_or("n/a".into(), |b| format!("{b:.3} ms each")),
        )
    }
}

/// The median of `xs` (the mean of the middle two for an even count; NaN for none).
fn median(mut xs: Vec<f64>) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    xs.sort_by(f64::total_cmp);
    let m = xs.len() / 2;
    if xs.len().is_multiple_of(2) {
        (xs[m - 1] + xs[m]) / 2.0
    } else {
        xs[m]
    }
}

// ---------------------------------------------------------------------------
// The benchmark.
// ---------------------------------------------------------------------------

async fn bench(vhost: &Vhost, opts: &Options) -> anyhow::Result<()> {
    let tmp = match &opts.dir {
        Some(d) => {
            std::fs::create_dir_all(d)
                .with_context(|| format!("cannot create BENCH_DIR {}", d.display()))?;
            tempfile::tempdir_in(d)
        }
        None => tempfile::tempdir(),
    }
    .context("cannot create a temporary folder for the work folders")?;
    let broker_stat = broker_stat();

    // The raw queue gets exactly the arguments of an iom work queue: iom's own
    // topology code declares it, under another prefix.
    let raw_cfg = vhost.config(RAW_PREFIX);
    let raw_broker = Broker::connect(&raw_cfg).await?;
    raw_broker.declare_topology().await?;
    raw_broker.close().await;

    let probe = noop_graph(tmp.path(), "size", 0);
    let body = probe
        .message(&probe.nodes[0].id, 1)
        .ok_or_else(|| anyhow!("the probe graph has no task"))?
        .encode();

    println!(
        "queue benchmark: {} messages/tasks per run, {} repetitions, {} publishes/submits in flight, vhost {}, work folders under {}",
        opts.n,
        opts.reps,
        opts.window,
        vhost.name,
        tmp.path().display()
    );
    println!(
        "message body: {} bytes (an encoded cleanup TaskMessage); load average at start: {}",
        body.len(),
        loadavg()
    );
    println!("iom timings include the work-folder writes (dispatch mark and attempt record written atomically; completion record fsynced with its folder) and its task events (queued, started, succeeded: persistent publishes without confirms, sent by a background task off the task path).");

    let mut table = Vec::new();
    for &slots in &opts.slots {
        let mut raw = Vec::new();
        let mut iom = Vec::new();
        for rep in 0..opts.reps {
            println!("slots {slots}, repetition {}:", rep + 1);
            let r = with_limit(
                "the raw lapin run",
                raw_once(
                    vhost,
                    &body,
                    opts.n,
                    slots,
                    opts.window,
                    broker_stat.as_deref(),
                ),
            )
            .await?;
            println!("{}", r.line("raw"));
            raw.push(r);
            let dir = tmp.path().join(format!("s{slots}-r{rep}"));
            let i = with_limit(
                "the iom run",
                iom_once(vhost, &dir, opts, slots, rep, broker_stat.as_deref()),
            )
            .await?;
            println!("{}", i.line("iom"));
            iom.push(i);
        }
        table.push((slots, raw, iom));
    }
    println!("load average at end: {}", loadavg());
    println!();
    print_table(&table, opts);
    if opts.breakdown > 0 {
        println!();
        breakdown(vhost, &tmp.path().join("breakdown"), opts.breakdown).await?;
    }
    Ok(())
}

async fn with_limit<T>(
    what: &str,
    fut: impl std::future::Future<Output = anyhow::Result<T>>,
) -> anyhow::Result<T> {
    tokio::time::timeout(RUN_LIMIT, fut)
        .await
        .map_err(|_| anyhow!("{what} did not finish within {RUN_LIMIT:?}"))?
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "n/a".into())
}

fn print_table(table: &[(u16, Vec<Sample>, Vec<Sample>)], opts: &Options) {
    println!(
        "Median of {} repetitions, {} messages/tasks each:",
        opts.reps, opts.n
    );
    println!();
    println!("| path | slots (prefetch) | msgs or tasks / s | CPU ms / msg (this process) | broker CPU ms / msg | iom / raw |");
    println!("|---|---|---|---|---|---|");
    for (slots, raw, iom) in table {
        let rate = |s: &[Sample]| median(s.iter().map(Sample::rate).collect());
        let cpu = |s: &[Sample]| median(s.iter().map(Sample::cpu_ms_each).collect());
        let broker = |s: &[Sample]| {
            let b: Option<Vec<f64>> = s.iter().map(Sample::broker_ms_each).collect();
            b.map_or("n/a".into(), |b| format!("{:.3}", median(b)))
        };
        let (raw_rate, iom_rate) = (rate(raw), rate(iom));
        let ratio = iom_rate / raw_rate * 100.0;
        let verdict = if ratio >= 50.0 {
            "meets the 50 % goal"
        } else {
            "below the 50 % goal"
        };
        println!(
            "| raw lapin | {slots} | {raw_rate:.0} | {:.3} | {} | |",
            cpu(raw),
            broker(raw)
        );
        println!(
            "| iom | {slots} | {iom_rate:.0} | {:.3} | {} | {ratio:.0} % ({verdict}) |",
            cpu(iom),
            broker(iom)
        );
    }
}

/// Raw lapin: confirmed persistent publishes and a prefetch-limited consumer
/// acking each, at the same time, on their own connections.
async fn raw_once(
    vhost: &Vhost,
    body: &[u8],
    n: usize,
    prefetch: u16,
    window: usize,
    broker_stat: Option<&Path>,
) -> anyhow::Result<Sample> {
    let url = vhost.raw_url();
    let connect = || async {
        Connection::connect(&url, ConnectionProperties::default())
            .await
            .with_context(|| format!("cannot connect to vhost {}", vhost.name))
    };
    let (pub_conn, con_conn) = (connect().await?, connect().await?);
    let names = iom::queue::Names::new(RAW_PREFIX);
    let publisher = pub_conn.create_channel().await?;
    publisher
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let consumer_ch = con_conn.create_channel().await?;
    // Per-consumer QoS, as iom's worker asks (quorum queues refuse global QoS).
    consumer_ch
        .basic_qos(prefetch, BasicQosOptions { global: false })
        .await?;
    let mut consumer = consumer_ch
        .basic_consume(
            ShortString::from(names.work_queue(StepKind::Cleanup)),
            ShortString::from("bench-raw"),
            BasicConsumeOptions::default(),
            FieldTable::default(),
        )
        .await?;
    let exchange = ShortString::from(names.tasks_exchange());
    let routing_key = ShortString::from(StepKind::Cleanup.as_str());
    let props = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into());

    let start = CpuMark::now(broker_stat)?;
    let t0 = Instant::now();
    let consume = tokio::spawn(async move {
        for _ in 0..n {
            let delivery = consumer
                .next()
                .await
                .ok_or_else(|| anyhow!("the raw consumer ended early"))??;
            delivery.acker.ack(BasicAckOptions::default()).await?;
        }
        anyhow::Ok(Instant::now())
    });
    let in_flight = Arc::new(Semaphore::new(window));
    let mut confirms = tokio::task::JoinSet::new();
    for _ in 0..n {
        let permit = in_flight.clone().acquire_owned().await?;
        let confirm = publisher
            .basic_publish(
                exchange.clone(),
                routing_key.clone(),
                BasicPublishOptions {
                    mandatory: true,
                    immediate: false,
                },
                body,
                props.clone(),
            )
            .await?;
        confirms.spawn(async move {
            let c = confirm.await;
            drop(permit);
            c
        });
    }
    while let Some(c) = confirms.join_next().await {
        match c?? {
            Confirmation::Ack(None) => {}
            other => bail!("raw publish not confirmed: {other:?}"),
        }
    }
    let published = Instant::now();
    let end = consume.await??;
    let stop = CpuMark::now(broker_stat)?;
    let _ = pub_conn.close(200, "OK".into()).await;
    let _ = con_conn.close(200, "OK".into()).await;
    Ok(Sample::new(n, t0, published, end, start, stop))
}

/// A one-node graph: a cleanup of an output folder that does not exist, which
/// succeeds without touching anything.
fn noop_graph(dir: &Path, tag: &str, i: usize) -> Graph {
    let shot = format!("BEN_{i:05}");
    let scan_name = format!("bench_{tag}");
    let id = task::graph_id("bench", &shot, &scan_name, "org", 1);
    let plate = dir.join("seq/BEN").join(&shot).join("plate");
    let output = PlateOutput {
        frames_dir: plate.join("org/v001"),
        plate_name: format!("{shot}_org_v001"),
        ext: "exr".into(),
        first_frame: 1001,
        pad: 4,
        plate_dir: plate.clone(),
        jpg_dir: plate.join("org/v001_jpg"),
        jpg_2k_dir: plate.join("org/v001_jpg_2k"),
    };
    let info = PublishInfo {
        project: "bench".into(),
        seq: "BEN".into(),
        shot,
        seq_type: "org".into(),
        version: 1,
        scan_name,
        clip_name: String::new(),
        colorspace: "ACES - ACEScg".into(),
        fps: Some(24.0),
        resolution: "2048 x 1152".into(),
        timecode_in: "00:00:00:00".into(),
        timecode_out: "00:00:01:00".into(),
        just_in: 1001,
        just_out: 1024,
        retimes: Vec::new(),
    };
    Graph {
        schema: SCHEMA_VERSION,
        work_dir: dir.join("work").join(&id.0),
        nodes: vec![TaskNode {
            id: task::task_id(&id, StepKind::Cleanup, ""),
            label: "cleanup".into(),
            step: Step::Cleanup { output },
            deps: Vec::new(),
        }],
        id,
        info,
    }
}

/// iom: submit `n` one-task graphs and run them with an in-process worker.
async fn iom_once(
    vhost: &Vhost,
    dir: &Path,
    opts: &Options,
    slots: u16,
    rep: usize,
    broker_stat: Option<&Path>,
) -> anyhow::Result<Sample> {
    let n = opts.n;
    let mut settings = Settings::defaults()?;
    settings.project.root = dir.to_path_buf();
    settings.worker.slots = slots;
    let tracker = iom::tracker::open_tracker(&settings)?;
    let ctx = Arc::new(RuntimeCtx {
        settings: Arc::new(settings),
        worker: format!("bench/{}", std::process::id()),
        tracker,
        cancel: worker::new_cancel_flag(),
    });
    let (root, tag) = (dir.to_path_buf(), format!("s{slots}r{rep}"));
    let works = tokio::task::spawn_blocking(move || {
        (0..n)
            .map(|i| WorkDir::create(&noop_graph(&root, &tag, i)))
            .collect::<Result<Vec<_>, _>>()
    })
    .await??;
    let works = Arc::new(works);

    let cfg = vhost.config(IOM_PREFIX);
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let stats = Arc::new(WorkerStats::default());
    let mut worker = tokio::spawn(worker::run(
        cfg.clone(),
        ctx.clone(),
        WorkerOptions {
            queues: vec![StepKind::Cleanup],
            slots,
            reconnect_for: Duration::from_secs(10),
            grace: Duration::from_secs(60),
        },
        stats.clone(),
        async move {
            let _ = stop_rx.await;
        },
    ));

    let broker = Broker::connect(&cfg).await?;
    broker.declare_topology().await?;
    wait_for_consumer(&broker, &mut worker).await?;
    let transport = BrokerTransport::open(&broker, "bench-submitter").await?;

    let abort = Arc::new(AtomicBool::new(false));
    // Stops the watcher whenever this function returns early or is cancelled.
    let _stop_watcher = SetOnDrop(abort.clone());
    let start = CpuMark::now(broker_stat)?;
    let t0 = Instant::now();
    let watcher = {
        let (works, abort, stats) = (works.clone(), abort.clone(), stats.clone());
        let status = opts.watch_status;
        tokio::task::spawn_blocking(move || match status {
            true => watch(&works, &abort),
            false => count(&stats, works.len(), &abort),
        })
    };
    let submitted = stream::iter(works.iter().map(anyhow::Ok))
        .try_for_each_concurrent(opts.window, |w| {
            let (ctx, transport) = (&ctx, &transport);
            async move {
                let sent = runtime::submit(w, ctx, transport).await?;
                ensure!(
                    sent.len() == 1,
                    "submit of {} published {} tasks, expected 1",
                    w.path().display(),
                    sent.len()
                );
                Ok(())
            }
        })
        .await;
    submitted.context("submitting the graphs")?;
    let published = Instant::now();
    let watched = tokio::select! {
        w = watcher => w?,
        r = &mut worker => {
            bail!("the worker stopped before every graph succeeded: {:?}", r?);
        }
    };
    let (end, watcher_cpu) = watched?;
    let mut stop = CpuMark::now(broker_stat)?;
    stop.own -= watcher_cpu;
    // Outside the clock: every graph succeeded, as its work folder records it.
    let checked = works.clone();
    tokio::task::spawn_blocking(move || {
        checked.iter().try_for_each(|w| {
            let s = w.status()?;
            ensure!(
                s.state == GraphState::Succeeded,
                "graph {} is {:?} after the clock stopped: {:?}",
                w.path().display(),
                s.state,
                s.tasks
            );
            Ok(())
        })
    })
    .await??;

    let _ = stop_tx.send(());
    worker.await??;
    broker.close().await;
    let done = stats.succeeded.load(Ordering::Relaxed);
    ensure!(
        done as usize == n,
        "the worker reports {done} tasks succeeded, expected {n}"
    );
    Ok(Sample::new(n, t0, published, end, start, stop))
}

/// Sets its flag when dropped.
struct SetOnDrop(Arc<AtomicBool>);

impl Drop for SetOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

/// Waits until the worker's consumer is registered, so the clock starts with
/// both sides ready (as in the raw run).
async fn wait_for_consumer(
    broker: &Broker,
    worker: &mut tokio::task::JoinHandle<Result<(), worker::WorkerError>>,
) -> anyhow::Result<()> {
    let queue = broker.names().work_queue(StepKind::Cleanup);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        ensure!(
            !worker.is_finished(),
            "the worker stopped before consuming: {:?}",
            worker.await
        );
        let depths = broker.queue_depths().await?;
        if depths
            .iter()
            .any(|(q, _, consumers)| *q == queue && *consumers > 0)
        {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "no consumer on {queue} after 30 s"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the worker has counted `n` tasks succeeded (each counted after its
/// completion record is durable, before its ack), polling the counter every
/// millisecond (0.1 % of a 1 s run; faster polling only takes CPU from the
/// work). Returns when it saw `n` and this thread's CPU time, which the caller
/// does not count.
fn count(stats: &WorkerStats, n: usize, abort: &AtomicBool) -> anyhow::Result<(Instant, f64)> {
    let cpu0 = thread_cpu()?;
    let deadline = Instant::now() + RUN_LIMIT;
    while (stats.succeeded.load(Ordering::Relaxed) as usize) < n {
        ensure!(!abort.load(Ordering::SeqCst), "aborted");
        let failed = stats.dead_lettered.load(Ordering::Relaxed);
        ensure!(failed == 0, "{failed} task(s) dead-lettered");
        ensure!(
            Instant::now() < deadline,
            "{} of {n} tasks done after {RUN_LIMIT:?}",
            stats.succeeded.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    let end = Instant::now();
    Ok((end, thread_cpu()? - cpu0))
}

/// Polls the graphs' status in order until all succeeded (graphs finish roughly
/// in submit order, so each is read about once). Returns when the last one was
/// seen done and this thread's CPU time, which the caller does not count.
fn watch(works: &[WorkDir], abort: &AtomicBool) -> anyhow::Result<(Instant, f64)> {
    let cpu0 = thread_cpu()?;
    let deadline = Instant::now() + RUN_LIMIT;
    let mut next = 0;
    while next < works.len() {
        ensure!(!abort.load(Ordering::SeqCst), "aborted");
        ensure!(
            Instant::now() < deadline,
            "graph {} not done after {RUN_LIMIT:?}",
            works[next].path().display()
        );
        let status = works[next].status()?;
        match status.state {
            GraphState::Succeeded => next += 1,
            GraphState::Failed | GraphState::Interrupted => bail!(
                "graph {} failed: {:?}",
                works[next].path().display(),
                status.tasks
            ),
            GraphState::Running => std::thread::sleep(Duration::from_millis(1)),
        }
    }
    let end = Instant::now();
    Ok((end, thread_cpu()? - cpu0))
}

// ---------------------------------------------------------------------------
// Cost breakdown.
// ---------------------------------------------------------------------------

/// Latencies and CPU of one operation repeated alone.
struct OpCost {
    what: &'static str,
    /// Times per task on iom's path (0: for reference only).
    per_task: u32,
    latencies: Vec<Duration>,
    cpu: f64,
}

impl OpCost {
    fn median_us(&self) -> f64 {
        median(
            self.latencies
                .iter()
                .map(|d| d.as_secs_f64() * 1e6)
                .collect(),
        )
    }

    fn cpu_us(&self) -> f64 {
        self.cpu * 1e6 / self.latencies.len().max(1) as f64
    }
}

/// Runs `op(i)` for `i in 0..k`, one at a time, timing each call; CPU is the
/// whole process's over the loop (nothing else of the benchmark runs meanwhile).
fn time_op<E: Into<anyhow::Error>>(
    what: &'static str,
    per_task: u32,
    k: usize,
    mut op: impl FnMut(usize) -> Result<(), E>,
) -> anyhow::Result<OpCost> {
    let mut latencies = Vec::with_capacity(k);
    let cpu0 = process_cpu()?;
    for i in 0..k {
        let t = Instant::now();
        op(i).map_err(Into::into).context(what)?;
        latencies.push(t.elapsed());
    }
    Ok(OpCost {
        what,
        per_task,
        latencies,
        cpu: process_cpu()? - cpu0,
    })
}

/// The async counterpart of [`time_op`].
async fn time_op_async<F, Fut>(
    what: &'static str,
    per_task: u32,
    k: usize,
    mut op: F,
) -> anyhow::Result<OpCost>
where
    F: FnMut(usize) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut latencies = Vec::with_capacity(k);
    let cpu0 = process_cpu()?;
    for i in 0..k {
        let t = Instant::now();
        op(i).await.context(what)?;
        latencies.push(t.elapsed());
    }
    Ok(OpCost {
        what,
        per_task,
        latencies,
        cpu: process_cpu()? - cpu0,
    })
}

/// Times every operation of a task's path alone, on `k` fresh one-task graphs,
/// in the order a task meets them.
async fn breakdown(vhost: &Vhost, dir: &Path, k: usize) -> anyhow::Result<()> {
    let mut settings = Settings::defaults()?;
    settings.project.root = dir.to_path_buf();
    let settings = Arc::new(settings);
    let tracker = iom::tracker::open_tracker(&settings)?;
    let step_ctx = StepContext {
        settings: settings.clone(),
        worker: "bench".into(),
        cancel: worker::new_cancel_flag(),
        tracker,
    };
    let root = dir.to_path_buf();
    let mut costs = tokio::task::spawn_blocking(move || store_costs(&root, k, &step_ctx)).await??;

    // A one-task graph's path makes 4 trips to the blocking pool: submit's
    // `undispatched_ready` and its dispatch mark, the worker's set-up (open,
    // manifest, attempt fence) and its step + completion record (a leaf has no
    // children to claim, so no trip for that).
    costs.push(
        time_op_async("spawn_blocking hop (empty closure)", 4, k, |_| async {
            tokio::task::spawn_blocking(|| ()).await?;
            Ok(())
        })
        .await?,
    );

    // Confirmed publishes, on the raw topology (same arguments as iom's).
    let broker = Broker::connect(&vhost.config(RAW_PREFIX)).await?;
    let publisher = broker.publisher().await?;
    let graph = noop_graph(dir, "publish", 0);
    let msg = graph
        .message(&graph.nodes[0].id, 1)
        .ok_or_else(|| anyhow!("the breakdown graph has no task"))?;
    let event = TaskEvent {
        graph_id: msg.graph_id.clone(),
        task_id: msg.task_id.clone(),
        kind: StepKind::Cleanup,
        state: EventState::Started,
        attempt: 1,
        worker: "bench".into(),
        at_ms: iom::events::now_ms(),
        duration_ms: None,
        cause: None,
    };
    let event_body = serde_json::to_vec(&event)?;
    let (publisher, msg) = (&publisher, &msg);
    costs.push(
        time_op_async(
            "publish_task: confirmed, into a quorum queue",
            1,
            k,
            |_| async move { Ok(publisher.publish_task(msg, &[]).await?) },
        )
        .await?,
    );
    costs.push(
        time_op_async(
            "publish_event: confirmed, no queue bound (tasks send their 3 events unconfirmed, off their path)",
            0,
            k, |_| {
            let (key, body) = (event.routing_key(), &event_body);
            async move { Ok(publisher.publish_event(&key, body).await?) }
        })
        .await?,
    );
    broker.close().await;
    // Empty the raw queue again (the breakdown's task messages are not consumed).
    let conn = Connection::connect(&vhost.raw_url(), ConnectionProperties::default()).await?;
    let ch = conn.create_channel().await?;
    ch.queue_purge(
        ShortString::from(iom::queue::Names::new(RAW_PREFIX).work_queue(StepKind::Cleanup)),
        QueuePurgeOptions::default(),
    )
    .await?;
    let _ = conn.close(200, "OK".into()).await;

    println!("Where a task's time goes: each operation alone, {k} times (median latency; CPU is the whole process's, per call):");
    println!();
    println!("| operation | per task | median µs | CPU µs |");
    println!("|---|---|---|---|");
    let (mut lat_sum, mut cpu_sum) = (0.0, 0.0);
    for c in &costs {
        let per = if c.per_task == 0 {
            "(reference)".to_string()
        } else {
            format!("×{}", c.per_task)
        };
        println!(
            "| {} | {per} | {:.0} | {:.0} |",
            c.what,
            c.median_us(),
            c.cpu_us()
        );
        lat_sum += f64::from(c.per_task) * c.median_us();
        cpu_sum += f64::from(c.per_task) * c.cpu_us();
    }
    println!();
    println!(
        "Sum over one task's path (weights above; acks and the consumer not included): {:.0} µs of latency, {:.0} µs of CPU in this process.",
        lat_sum, cpu_sum
    );
    Ok(())
}

/// The work-folder operations and the no-op step, each alone over `k` graphs.
fn store_costs(dir: &Path, k: usize, step_ctx: &StepContext) -> anyhow::Result<Vec<OpCost>> {
    let graphs: Vec<Graph> = (0..k).map(|i| noop_graph(dir, "breakdown", i)).collect();
    let works = graphs
        .iter()
        .map(WorkDir::create)
        .collect::<Result<Vec<_>, _>>()?;
    let task = |i: usize| graphs[i].nodes[0].id.clone();
    let probe_dir = dir.join("fsync-probe");
    std::fs::create_dir_all(&probe_dir)?;
    let mut costs = vec![
        time_op("write + fsync a new 300-byte file", 0, k, |i| {
            let mut f = std::fs::File::create_new(probe_dir.join(format!("{i}.json")))?;
            std::io::Write::write_all(&mut f, &[b' '; 300])?;
            f.sync_all()
        })?,
        time_op("fsync a folder", 0, k, |_| {
            iom::store::fsync_dir(&probe_dir)
        })?,
        time_op("undispatched_ready (submit)", 1, k, |i| {
            works[i].undispatched_ready().map(drop)
        })?,
        time_op("mark_dispatched (submit)", 1, k, |i| {
            works[i].mark_dispatched(&task(i))
        })?,
        time_op("WorkDir::open + manifest (every delivery)", 1, k, |i| {
            WorkDir::open(works[i].path())?.manifest().map(drop)
        })?,
        time_op("begin_attempt", 1, k, |i| {
            works[i].begin_attempt(&task(i), 1, "bench").map(drop)
        })?,
    ];
    let msgs: Vec<_> = graphs
        .iter()
        .filter_map(|g| g.message(&g.nodes[0].id, 1))
        .collect();
    costs.push(time_op("cleanup step (no-op)", 1, k, |i| {
        iom::steps::run(&msgs[i], step_ctx).map(drop)
    })?);
    costs.push(time_op("complete", 1, k, |i| {
        let rec = CompletionRecord {
            task_id: task(i),
            attempt: 1,
            worker: "bench".into(),
            started_at_ms: iom::events::now_ms(),
            finished_at_ms: iom::events::now_ms(),
            outputs: Vec::new(),
            summary: serde_json::json!({ "removed": 0, "files": [] }),
        };
        works[i].complete(&rec).map(drop)
    })?);
    costs.push(time_op("ready_children", 1, k, |i| {
        works[i].ready_children(&graphs[i], &task(i)).map(drop)
    })?);
    costs.push(time_op(
        "status (the benchmark's watcher only)",
        0,
        k,
        |i| works[i].status().map(drop),
    )?);
    Ok(costs)
}
