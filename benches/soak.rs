//! Soak (issue 8, part 4): many plates through two real `iom-worker` processes on
//! the real broker, one of them restarted at random (SIGTERM or SIGKILL), while the
//! resident memory of both is sampled every second.
//!
//! Run: `cargo bench --bench soak` (release build). Needs RabbitMQ on
//! 127.0.0.1:5672 (guest/guest) and `rabbitmqctl`; the run makes a private vhost
//! and deletes it at the end.
//!
//! Worker **A** runs for the whole soak and is never restarted: its RSS over time
//! is the leak check (it must not grow once warm). Worker **B** is restarted every
//! `SOAK_RESTART_SECS` (uniformly random in that range), half the time with
//! SIGTERM (graceful: finish or abandon within the grace period), half with
//! SIGKILL (work in flight is redelivered).
//!
//! Environment:
//! - `SOAK_PLATES` (default 500), `SOAK_FRAMES` per plate (default 8),
//!   `SOAK_SIZE` `WxH` (default 256x144);
//! - `SOAK_ROUNDS` (default 10): the plates are published again as the next
//!   version once the previous round is done, so the workers live long enough
//!   for a leak to show (10 rounds = 5000 plate publishes, 25000 tasks);
//! - `SOAK_RESTART_SECS` `lo..hi` (default `3..10`);
//! - `SOAK_STEPS` (default `probe, copy, thumbnail, register, cleanup`);
//! - `SOAK_CSV`: where the RSS samples go (default `soak-rss.csv` in the
//!   temporary project, printed at the end; set it to keep the file).
//!
//! After each round every graph must have succeeded with a completion record per task,
//! every published file must match its recorded checksum, no temporary file may be
//! left under the publish root, and the local tracker must hold exactly one shot,
//! version and published file per plate; the run fails otherwise.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context};

use iom::config::{BrokerSettings, SecretRef, Settings};
use iom::plan::{self, PlanOptions};
use iom::queue::{Broker, BrokerConfig};
use iom::runtime::{self, RuntimeCtx};
use iom::sample::{self, PlateSpec};
use iom::scanlist::Row;
use iom::store::{GraphState, WorkDir};
use iom::task::Graph;
use iom::worker::BrokerTransport;

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(default)
}

fn rabbitmqctl(args: &[&str]) -> anyhow::Result<()> {
    let out = Command::new("rabbitmqctl")
        .arg("-q")
        .args(args)
        .output()
        .context("run rabbitmqctl (the soak needs RabbitMQ and rabbitmqctl)")?;
    ensure!(
        out.status.success(),
        "rabbitmqctl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

struct Vhost(String);

impl Drop for Vhost {
    fn drop(&mut self) {
        let _ = rabbitmqctl(&["delete_vhost", &self.0]);
    }
}

/// Resident set size of a process, in KiB (0 when it is gone).
fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

fn row(delivery: &Path, spec: &PlateSpec, shot: &str) -> Row {
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

struct Worker {
    child: Child,
    started: Instant,
}

fn spawn_worker(config: &Path, dir: &Path) -> anyhow::Result<Worker> {
    let child = Command::new(env!("CARGO_BIN_EXE_iom-worker"))
        .env("IOM_CONFIG", config)
        .env("IOM_BROKER_PASSWORD", "guest")
        .env("RUST_LOG", "error")
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("spawn iom-worker")?;
    Ok(Worker {
        child,
        started: Instant::now(),
    })
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("soak failed: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let plates: usize = env_or("SOAK_PLATES", 500);
    let frames: i64 = env_or("SOAK_FRAMES", 8);
    let (w, h) = std::env::var("SOAK_SIZE")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once('x')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((256u32, 144u32));
    let (lo, hi) = std::env::var("SOAK_RESTART_SECS")
        .ok()
        .and_then(|s| {
            let (a, b) = s.split_once("..")?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((3u64, 10u64));
    let steps =
        std::env::var("SOAK_STEPS").unwrap_or("probe, copy, thumbnail, register, cleanup".into());

    let tmp = tempfile::tempdir()?;
    let root = tmp.path().join("show/soak");
    let delivery = root.join("product/scan/d1");
    std::fs::create_dir_all(&delivery)?;
    let vhost = Vhost(format!("iom-soak-{:08x}", fastrand::u32(..)));
    rabbitmqctl(&["add_vhost", &vhost.0])?;
    rabbitmqctl(&["set_permissions", "-p", &vhost.0, "guest", ".*", ".*", ".*"])?;
    let config = tmp.path().join("settings.yml");
    std::fs::write(
        &config,
        format!(
            "project:\n  name: soak\n  root: {root}\npublish:\n  steps: [{steps}]\n\
             broker:\n  url: \"amqp://guest@127.0.0.1:5672/{vhost}\"\n  prefix: soak\n  retry_tiers_secs: [1, 2]\n\
             worker:\n  slots: 4\n  max_attempts: 5\n  backoff_base_secs: 1\n  backoff_cap_secs: 2\n  shutdown_grace_secs: 5\n",
            root = root.display(),
            vhost = vhost.0
        ),
    )?;
    let settings = Settings::load_with(Some(&config), &|_| None, std::iter::empty())?;

    eprintln!("soak: writing {plates} plates of {frames} frames at {w}x{h}…");
    let t_gen = Instant::now();
    let rows: Vec<Row> = (0..plates)
        .map(|i| {
            let spec = PlateSpec::exr(&format!("R{i:04}"), &format!("R{i:04}C001."), w, h, frames);
            sample::write_plate(&delivery, &spec)?;
            Ok(row(
                &delivery,
                &spec,
                &format!("S{:02}_{:04}", i / 100, (i % 100 + 1) * 10),
            ))
        })
        .collect::<anyhow::Result<_>>()?;
    let rounds: usize = env_or("SOAK_ROUNDS", 10);
    let opts = PlanOptions {
        delivery_root: Some(delivery.clone()),
        ..PlanOptions::default()
    };
    let secret = tmp.path().join("broker-password");
    std::fs::write(&secret, "guest\n")?;
    let cfg = BrokerConfig::from_settings(&BrokerSettings {
        password: SecretRef {
            env: None,
            file: Some(secret),
        },
        ..settings.broker.clone()
    })?;
    let ctx = Arc::new(RuntimeCtx {
        settings: Arc::new(settings.clone()),
        worker: "soak-submitter".into(),
        tracker: iom::tracker::open_tracker(&settings)?,
        cancel: iom::worker::new_cancel_flag(),
    });
    let rt = tokio::runtime::Runtime::new()?;
    // Plans the rows (the next version on disk) and submits every graph's roots:
    // the submitter's work.
    let submit_round = || -> anyhow::Result<(Vec<Graph>, Vec<WorkDir>)> {
        let graphs: Vec<Graph> = plan::plan(&rows, &settings, &opts, &|_| vec![])?.graphs;
        ensure!(graphs.len() == plates, "planned {} graphs", graphs.len());
        let works: Vec<WorkDir> = graphs
            .iter()
            .map(WorkDir::create)
            .collect::<Result<_, _>>()?;
        rt.block_on(async {
            let broker = Broker::connect(&cfg).await?;
            broker.declare_topology().await?;
            let t = BrokerTransport::open(&broker, "soak-submitter").await?;
            for w in &works {
                runtime::submit(w, &ctx, &t).await?;
            }
            t.close(Duration::from_secs(5)).await;
            broker.close().await;
            anyhow::Ok(())
        })?;
        Ok((graphs, works))
    };
    eprintln!("soak: {plates} plates written ({:.1?})", t_gen.elapsed());

    let t0 = Instant::now();
    let a = spawn_worker(&config, tmp.path())?;
    let a_pid = a.child.id();
    let b = Arc::new(Mutex::new(spawn_worker(&config, tmp.path())?));
    let done = Arc::new(AtomicBool::new(false));
    let csv_path = std::env::var("SOAK_CSV")
        .map(PathBuf::from)
        .unwrap_or_else(|_| tmp.path().join("soak-rss.csv"));

    // The sampler: RSS of A and B and plates finished, once a second.
    let finished = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let sampler = {
        let b = b.clone();
        let done = done.clone();
        let finished = finished.clone();
        let csv_path = csv_path.clone();
        std::thread::spawn(move || -> anyhow::Result<Vec<(f64, u64, u64, usize)>> {
            let mut samples = Vec::new();
            let mut csv = std::fs::File::create(&csv_path)?;
            writeln!(csv, "seconds,rss_a_kib,rss_b_kib,plates_done")?;
            while !done.load(Ordering::Relaxed) {
                let b_pid = b.lock().unwrap().child.id();
                let s = (
                    t0.elapsed().as_secs_f64(),
                    rss_kib(a_pid),
                    rss_kib(b_pid),
                    finished.load(Ordering::Relaxed),
                );
                writeln!(csv, "{:.1},{},{},{}", s.0, s.1, s.2, s.3)?;
                samples.push(s);
                std::thread::sleep(Duration::from_secs(1));
            }
            Ok(samples)
        })
    };

    // Restart B at random until every graph is terminal.
    let mut rng = fastrand::Rng::new();
    let (mut terms, mut kills) = (0u32, 0u32);
    let mut b_lifetimes_max_rss = Vec::new();
    let mut next = Instant::now() + Duration::from_secs(rng.u64(lo..=hi));
    let limit = Duration::from_secs(env_or("SOAK_LIMIT_SECS", 3600));
    let mut attempts: BTreeMap<u32, usize> = BTreeMap::new();
    let mut files = 0usize;
    let mut tasks = 0usize;
    let (mut graphs, mut works) = submit_round()?;
    let mut round = 1;
    loop {
        let running = works
            .iter()
            .filter(|w| {
                w.status()
                    .map(|s| s.state == GraphState::Running)
                    .unwrap_or(true)
            })
            .count();
        finished.store((round - 1) * plates + plates - running, Ordering::Relaxed);
        if running == 0 {
            tasks += verify_round(&graphs, &works, &mut attempts, &mut files)?;
            eprintln!(
                "soak: round {round}/{rounds} verified at {:.1?}",
                t0.elapsed()
            );
            if round == rounds {
                break;
            }
            (graphs, works) = submit_round()?;
            round += 1;
            continue;
        }
        if t0.elapsed() > limit {
            done.store(true, Ordering::Relaxed);
            bail!("{running} graph(s) still running after {limit:?}");
        }
        if Instant::now() >= next {
            let mut guard = b.lock().unwrap();
            let pid = guard.child.id();
            let peak = peak_kib(pid);
            if rng.bool() {
                let _ = Command::new("kill")
                    .args(["-TERM", &pid.to_string()])
                    .status();
                terms += 1;
            } else {
                let _ = guard.child.kill();
                kills += 1;
            }
            let _ = guard.child.wait();
            b_lifetimes_max_rss.push((guard.started.elapsed().as_secs_f64(), peak));
            *guard = spawn_worker(&config, tmp.path())?;
            next = Instant::now() + Duration::from_secs(rng.u64(lo..=hi));
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let elapsed = t0.elapsed();
    let a_peak = peak_kib(a_pid);
    done.store(true, Ordering::Relaxed);
    let samples = sampler.join().expect("sampler")?;
    {
        let mut a = a;
        let _ = Command::new("kill")
            .args(["-TERM", &a_pid.to_string()])
            .status();
        let _ = a.child.wait();
        let mut guard = b.lock().unwrap();
        let _ = guard.child.kill();
        let _ = guard.child.wait();
    }

    // The guarantees over everything published.
    for e in walkdir::WalkDir::new(root.join("seq"))
        .into_iter()
        .flatten()
    {
        ensure!(
            !e.file_name()
                .to_string_lossy()
                .contains(iom::steps::TEMP_MARKER),
            "half-written file left: {}",
            e.path().display()
        );
    }
    let mut per_kind: BTreeMap<String, usize> = BTreeMap::new();
    for e in walkdir::WalkDir::new(root.join(".iom/tracker"))
        .into_iter()
        .flatten()
        .filter(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x == "json"))
    {
        let kind = e
            .path()
            .parent()
            .and_then(Path::file_name)
            .map(|k| k.to_string_lossy().into_owned())
            .unwrap_or_default();
        *per_kind.entry(kind).or_default() += 1;
    }
    if steps.contains("register") {
        for kind in ["shots", "versions", "published_files"] {
            ensure!(
                per_kind.get(kind) == Some(&(plates * if kind == "shots" { 1 } else { rounds })),
                "tracker {kind}: {:?} ({plates} plates, {rounds} rounds)",
                per_kind.get(kind)
            );
        }
    }

    // The report.
    let secs = elapsed.as_secs_f64();
    println!(
        "\n## soak: {plates} plates × {frames} frames ({w}x{h}) × {rounds} rounds, {tasks} tasks, 2 workers"
    );
    println!("| measure | value |");
    println!("|---|---|");
    println!("| wall time | {secs:.1} s |");
    println!(
        "| throughput | {:.2} plates/s, {:.1} tasks/s |",
        (plates * rounds) as f64 / secs,
        tasks as f64 / secs
    );
    println!(
        "| restarts of B | {} ({terms} SIGTERM, {kills} SIGKILL) |",
        terms + kills
    );
    println!("| tasks by the attempt that completed them (a redelivery after a kill keeps its attempt number; a retry after a failure raises it) | {attempts:?} |");
    println!("| published files verified | {files} |");
    println!("| tracker documents | {per_kind:?} |");
    let quart = |from: f64, to: f64| -> u64 {
        samples
            .iter()
            .filter(|s| s.0 >= from * secs && s.0 < to * secs)
            .map(|s| s.1)
            .max()
            .unwrap_or(0)
    };
    println!(
        "| worker A max RSS by quarter of the run | {} / {} / {} / {} MiB |",
        quart(0.0, 0.25) / 1024,
        quart(0.25, 0.5) / 1024,
        quart(0.5, 0.75) / 1024,
        quart(0.75, 1.01) / 1024
    );
    println!("| worker A peak RSS (VmHWM) | {} MiB |", a_peak / 1024);
    let b_max = b_lifetimes_max_rss.iter().map(|x| x.1).max().unwrap_or(0);
    println!(
        "| worker B peak RSS over its lifetimes | {} MiB |",
        b_max / 1024
    );
    println!("| RSS samples | {} |", csv_path.display());
    // Growth check: once warm (after the first quarter), A's RSS must not keep
    // climbing: the last quarter's maximum may exceed the second quarter's by at
    // most 10 % (allocator noise), otherwise the soak fails.
    let (q2, q4) = (quart(0.25, 0.5), quart(0.75, 1.01));
    ensure!(
        q2 == 0 || q4 <= q2 + q2 / 10,
        "worker A's RSS grew from {q2} KiB to {q4} KiB between the second and the last quarter"
    );
    drop(vhost);
    Ok(())
}

/// Peak resident set size (VmHWM) of a process, in KiB.
fn peak_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Checks one round: every graph succeeded, every task has its completion record,
/// every output matches its recorded checksum. Returns the number of tasks.
fn verify_round(
    graphs: &[Graph],
    works: &[WorkDir],
    attempts: &mut BTreeMap<u32, usize>,
    files: &mut usize,
) -> anyhow::Result<usize> {
    let mut tasks = 0;
    for (g, w) in graphs.iter().zip(works) {
        let s = w.status()?;
        ensure!(
            s.state == GraphState::Succeeded,
            "graph {} ended {:?}",
            g.id,
            s.state
        );
        for n in &g.nodes {
            let rec = w
                .completion(&n.id)?
                .with_context(|| format!("task {} lost: no completion record", n.id))?;
            *attempts.entry(rec.attempt).or_default() += 1;
            tasks += 1;
            for out in &rec.outputs {
                let bytes = std::fs::read(&out.path)
                    .with_context(|| format!("read {}", out.path.display()))?;
                ensure!(
                    format!("{:016x}", xxhash_rust::xxh3::xxh3_64(&bytes)) == out.xxh3,
                    "{} does not match its completion record",
                    out.path.display()
                );
                *files += 1;
            }
        }
    }
    Ok(tasks)
}
