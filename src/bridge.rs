//! The Tractor bridge: mirrors every publish graph as a Tractor job, and the
//! proxy command each mirrored task runs on a blade.
//!
//! - [`run`] consumes the events exchange through its own durable queue. The first
//!   event of a graph not yet mirrored makes it read the graph's manifest, write
//!   the job script, validate and spool it (retrying with backoff while the engine
//!   is down) and record graph id → jid durably; only then is the event acked. A
//!   restart finds the record (or, for a spool whose reply was lost, the job by
//!   its comment) and spools nothing twice. Nothing in the publish path waits for
//!   the bridge: events wait in its queue while it is away.
//! - [`await_task`] is the proxy (`iom-bridge await --graph G --task T`): it
//!   follows the real step in the work folder, prints its log lines and
//!   `TR_PROGRESS`, and returns its outcome. Run again after it reported a
//!   failure (a wrangler's *retry* in Tractor), it requeues the step on RabbitMQ
//!   as a new attempt and waits for that.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::config::Settings;
use crate::error::{Classify, ErrorClass};
use crate::events::TaskEvent;
use crate::queue::{Broker, BrokerConfig, QueueError};
use crate::store::{StoreError, TaskState, WorkDir};
use crate::task::TaskId;
use crate::tractor::client::{EngineClient, EngineError};
use crate::tractor::script;
use crate::tractor::{JobRecord, JobRecords, RecordError};

/// Why the bridge (or a proxy) could not go on.
#[derive(Debug, thiserror::Error)]
pub enum BridgeError {
    /// The work folder.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The broker.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// The engine.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The graph → jid records.
    #[error(transparent)]
    Records(#[from] RecordError),
    /// A graph or task that does not exist, or a bad setting.
    #[error("{0}")]
    Usage(String),
}

impl Classify for BridgeError {
    fn class(&self) -> ErrorClass {
        match self {
            BridgeError::Store(e) => e.class(),
            BridgeError::Queue(e) => e.class(),
            BridgeError::Engine(e) => e.class(),
            BridgeError::Records(e) => e.class(),
            BridgeError::Usage(_) => ErrorClass::Permanent,
        }
    }
}

/// The work folder of graph `graph_id` (`publish.work_dir` under the project root).
pub fn work_dir_of(settings: &Settings, graph_id: &str) -> Result<WorkDir, BridgeError> {
    if !crate::config::valid_component(graph_id) {
        return Err(BridgeError::Usage(format!(
            "{graph_id:?} is not a graph id"
        )));
    }
    let vars = crate::plan::TemplateVars {
        graph: Some(graph_id.to_string()),
        ..crate::plan::TemplateVars::default()
    };
    let rel = crate::plan::render_template(&settings.publish.work_dir, &vars)
        .map_err(|e| BridgeError::Usage(format!("publish.work_dir: {e}")))?;
    let dir: PathBuf = settings.project.root.join(rel);
    Ok(WorkDir::open(&dir)?)
}

// ---------------------------------------------------------------------------
// Mirroring.
// ---------------------------------------------------------------------------

/// Mirrors one graph (if not done yet) and returns its jid.
pub async fn mirror_graph(
    settings: &Settings,
    client: &EngineClient,
    records: &mut JobRecords,
    graph_id: &str,
) -> Result<u64, BridgeError> {
    if let Some(r) = records.get(graph_id).filter(|r| r.jid > 0) {
        return Ok(r.jid);
    }
    let work = work_dir_of(settings, graph_id)?;
    let graph = work.manifest()?;
    let text = script::job_script(&graph, &settings.tractor);
    script::validate(&text).map_err(EngineError::from)?;
    let title = script::job_title(&graph, &settings.tractor);
    // A spool whose reply was lost (crash, timeout) left a pending record: look
    // for that job before spooling again.
    if records.get(graph_id).is_some_and(|r| r.jid == 0) {
        if let Some(jid) = client.find_job_of_graph(graph_id).await? {
            records.put(
                graph_id,
                JobRecord {
                    jid,
                    title,
                    spooled_at_ms: crate::events::now_ms(),
                },
            )?;
            return Ok(jid);
        }
    } else {
        records.put(
            graph_id,
            JobRecord {
                jid: 0,
                title: title.clone(),
                spooled_at_ms: crate::events::now_ms(),
            },
        )?;
    }
    let jid = client.spool(&text).await?;
    records.put(
        graph_id,
        JobRecord {
            jid,
            title,
            spooled_at_ms: crate::events::now_ms(),
        },
    )?;
    tracing::info!(graph = graph_id, jid, url = %client.dashboard_url(jid), "graph mirrored as a Tractor job");
    Ok(jid)
}

/// The bridge daemon: consumes task events and mirrors each graph once. Runs
/// until its future is dropped (the binary races it against SIGTERM).
pub async fn run(settings: Arc<Settings>) -> Result<(), BridgeError> {
    let cfg = BrokerConfig::from_settings(&settings.broker)?;
    let client = EngineClient::from_settings(&settings.tractor);
    let path = JobRecords::path_for(&settings);
    let mut records = JobRecords::load(&path)?;
    let cap = Duration::from_secs(settings.tractor.spool_backoff_cap_secs.max(1));
    loop {
        let broker = Broker::connect_with_retry(&cfg, Duration::from_secs(3600)).await?;
        let mut consumer = match broker.event_consumer(&settings.tractor.queue, 32).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot consume events; reconnecting");
                broker.close().await;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        tracing::info!(engine = client.engine(), "bridge consuming task events");
        while let Some(inc) = consumer.next().await {
            let inc = match inc {
                Ok(i) => i,
                Err(e) => {
                    tracing::warn!(error = %e, "event consumer failed; reconnecting");
                    break;
                }
            };
            let ev: TaskEvent = match serde_json::from_slice(&inc.body) {
                Ok(ev) => ev,
                Err(e) => {
                    tracing::warn!(error = %e, "dropping an event that is not a task event");
                    let _ = inc.ack().await;
                    continue;
                }
            };
            let gid = ev.graph_id.0.clone();
            let mut delay = Duration::from_millis(250);
            loop {
                match mirror_graph(&settings, &client, &mut records, &gid).await {
                    Ok(_) => {
                        let lag_ms = crate::events::now_ms() - ev.at_ms;
                        crate::metrics::observe_tractor_sync_lag(lag_ms as f64 / 1000.0);
                        break;
                    }
                    Err(e) if e.class() == ErrorClass::Transient => {
                        tracing::warn!(graph = %gid, error = %e, retry_in = ?delay, "cannot mirror yet");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(cap);
                    }
                    Err(e) => {
                        tracing::error!(graph = %gid, error = %e, "graph not mirrored");
                        break;
                    }
                }
            }
            // The record is durable (or the graph can never be mirrored): ack.
            if let Err(e) = inc.ack().await {
                tracing::warn!(error = %e, "event ack failed; reconnecting");
                break;
            }
        }
        broker.close().await;
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

// ---------------------------------------------------------------------------
// The proxy command.
// ---------------------------------------------------------------------------

/// How a proxy ended.
#[derive(Debug, Clone, PartialEq)]
pub enum AwaitOutcome {
    /// The step succeeded.
    Succeeded,
    /// The step failed for good (this reason).
    Failed(String),
}

fn marker_path(work: &WorkDir, task: &TaskId) -> PathBuf {
    work.path()
        .join("tractor")
        .join(format!("{}.failed", task.0))
}

fn reported_failure(work: &WorkDir, task: &TaskId) -> Option<u32> {
    std::fs::read_to_string(marker_path(work, task))
        .ok()
        .and_then(|s| s.trim().parse().ok())
}

fn record_reported(work: &WorkDir, task: &TaskId, attempt: u32) -> Result<(), BridgeError> {
    let p = marker_path(work, task);
    let dir = p.parent().unwrap_or(work.path()).to_path_buf();
    let io = |e: std::io::Error| StoreError::Io {
        op: "write the Tractor failure marker",
        path: p.clone(),
        source: e,
    };
    std::fs::create_dir_all(&dir).map_err(io)?;
    let tmp = crate::store::unique_temp(&dir, ".marker");
    crate::store::replace_atomic(&p, &tmp, attempt.to_string().as_bytes()).map_err(io)?;
    Ok(())
}

/// Requeues `task` on RabbitMQ as attempt `attempt`, with a fresh round of
/// retries (a wrangler's retry is a human's decision to run it again, like
/// `iom dlq requeue --reset-attempt`). The new attempt supersedes the recorded
/// failure; a dead-lettered copy of the old attempt, if replayed later, is
/// dropped as stale.
pub async fn requeue(
    settings: &Settings,
    work: &WorkDir,
    task: &TaskId,
    attempt: u32,
) -> Result<(), BridgeError> {
    if settings.broker.url.is_empty() {
        return Err(BridgeError::Usage(
            "no broker configured (broker.url): a step cannot be requeued from Tractor in embedded mode".into(),
        ));
    }
    let graph = work.manifest()?;
    let msg = graph
        .message(task, attempt)
        .ok_or_else(|| BridgeError::Usage(format!("no task {task} in graph {}", graph.id)))?
        .with_fresh_round();
    let cfg = BrokerConfig::from_settings(&settings.broker)?;
    let broker = Broker::connect(&cfg).await?;
    let r = async {
        let publisher = broker.publisher().await?;
        let sent = publisher
            .publish_task(
                &msg,
                &[("x-iom-requeued-by".to_string(), "tractor".to_string())],
            )
            .await;
        publisher.close().await;
        sent
    }
    .await;
    broker.close().await;
    r?;
    Ok(())
}

/// The proxy: follows `task` of `graph_id` until it succeeds or fails for good,
/// writing log lines and `TR_PROGRESS n%` to `out`.
pub async fn await_task(
    settings: &Settings,
    graph_id: &str,
    task: &str,
    out: &mut (dyn Write + Send),
) -> Result<AwaitOutcome, BridgeError> {
    let work = work_dir_of(settings, graph_id)?;
    let graph = work.manifest()?;
    let tid = TaskId(task.to_string());
    let node = graph
        .node(&tid)
        .ok_or_else(|| BridgeError::Usage(format!("no task {task} in graph {graph_id}")))?;
    let poll = Duration::from_millis(settings.tractor.poll_ms.max(20));
    let mut requeued_over: Option<u32> = None;
    let mut last = String::new();
    let _ = writeln!(out, "iom: {} ({}) of {graph_id}", node.label, tid);
    loop {
        let st = work.task_state(&tid)?;
        let (line, pct) = match &st {
            TaskState::Succeeded {
                attempt,
                worker,
                seconds,
            } => {
                let _ = writeln!(
                    out,
                    "iom: done: attempt {attempt} on {worker} in {seconds:.1}s\nTR_PROGRESS 100%"
                );
                let _ = out.flush();
                return Ok(AwaitOutcome::Succeeded);
            }
            TaskState::Failed {
                reason, attempt, ..
            } => {
                if requeued_over.is_some_and(|n| *attempt <= n) {
                    (
                        format!("iom: requeued after attempt {attempt}; waiting for a worker"),
                        5,
                    )
                } else if reported_failure(&work, &tid) == Some(*attempt) {
                    let next = work.current_attempt(&tid)?.unwrap_or(0).max(*attempt) + 1;
                    requeue(settings, &work, &tid, next).await?;
                    requeued_over = Some(*attempt);
                    let _ = writeln!(
                        out,
                        "iom: retried from Tractor: requeued {tid} on RabbitMQ as attempt {next}"
                    );
                    continue;
                } else {
                    record_reported(&work, &tid, *attempt)?;
                    let _ = writeln!(out, "iom: FAILED: {st}");
                    let _ = writeln!(out, "iom: retry this task in Tractor to run the step again");
                    let _ = out.flush();
                    return Ok(AwaitOutcome::Failed(reason.clone()));
                }
            }
            TaskState::Running { .. } => (format!("iom: {st}"), 50),
            TaskState::Dispatched => ("iom: queued on RabbitMQ".to_string(), 10),
            TaskState::Waiting => ("iom: waiting for its dependencies".to_string(), 0),
        };
        if line != last {
            let _ = writeln!(out, "{line}\nTR_PROGRESS {pct}%");
            let _ = out.flush();
            last = line;
        }
        tokio::time::sleep(poll).await;
    }
}
