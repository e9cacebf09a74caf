//! Running one delivered task, the same way in a farm worker and in the embedded
//! in-process runner: fence the attempt, run the step on a blocking thread with its
//! time limit, record the outcome durably, then dispatch the children that became
//! ready. The caller acknowledges the delivery only after [`handle`] returns `Ok`.
//!
//! What differs between the broker and the in-process mode is behind [`Transport`]:
//! where a child, a retry, a dead letter and an event go.
//!
//! Order of effects and why it is crash-safe:
//! 1. `begin_attempt` fences stale attempts (a superseded attempt does nothing).
//! 2. The step runs; every step is idempotent by task id.
//! 3. The completion record is written atomically (first completion wins).
//! 4. Ready children are claimed (exclusive create) and published with confirm,
//!    then marked dispatched. A crash between claim and publish leaves the claim
//!    with this task as its owner; the redelivery of this task re-publishes.
//! 5. The delivery is acked by the caller. A crash before the ack redelivers the
//!    task, which finds its completion record and only re-runs step 4.

use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::config::Settings;
use crate::error::{Classify, ErrorClass};
use crate::events::{now_ms, TaskEvent, TaskState};
use crate::steps::{self, StepContext, StepError};
use crate::store::{Absence, Begin, Claim, CompletionRecord, FailureRecord, StoreError, WorkDir};
use crate::task::{Graph, StepKind, TaskId, TaskMessage};
use crate::tracker::Tracker;

/// Where the runtime sends what it produces.
pub trait Transport: Send + Sync {
    /// Publishes a task message (confirmed before it returns `Ok`).
    fn dispatch(
        &self,
        msg: &TaskMessage,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Schedules `msg` (attempt already incremented) to run again after `delay`.
    fn retry_later(
        &self,
        msg: &TaskMessage,
        delay: Duration,
        reason: &str,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Sends a task that failed for good to the dead-letter queue with its reason.
    fn dead_letter(
        &self,
        msg: &TaskMessage,
        reason: &str,
        class: ErrorClass,
    ) -> impl Future<Output = Result<(), TransportError>> + Send;
    /// Reports a state change (best effort: a lost event loses nothing).
    fn event(&self, ev: &TaskEvent) -> impl Future<Output = ()> + Send;
}

/// A transport failure: the delivery must not be acked (it will come back).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct TransportError(pub String);

impl Classify for TransportError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Transient
    }
}

/// What happened to a delivered task.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// The step ran and its completion was recorded.
    Succeeded,
    /// It had already completed (a redelivery); children re-checked.
    AlreadyDone,
    /// A superseded attempt: ignored.
    Stale,
    /// A transient failure; a retry is scheduled after this delay.
    RetryScheduled(Duration),
    /// Failed for good; dead-lettered with this reason.
    DeadLettered(String),
}

/// Why the runtime could not finish handling a delivery (it must be redelivered).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The work folder could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A publish (child, retry, dead letter) failed.
    #[error(transparent)]
    Transport(#[from] TransportError),
    /// The step was stopped because this process is shutting down
    /// ([`RuntimeCtx::cancel`]): nothing was recorded, the task runs again.
    #[error("the step was stopped because this process is shutting down; it runs again on its next delivery")]
    ShuttingDown,
}

impl Classify for RuntimeError {
    fn class(&self) -> ErrorClass {
        match self {
            RuntimeError::Store(e) => e.class(),
            RuntimeError::Transport(e) => e.class(),
            RuntimeError::ShuttingDown => ErrorClass::Transient,
        }
    }
}

/// Shared, read-only context of a worker (or of the embedded runner).
pub struct RuntimeCtx {
    /// Settings.
    pub settings: Arc<Settings>,
    /// Worker identity (`host/pid`) for records and events.
    pub worker: String,
    /// Tracker used by the register step.
    pub tracker: Arc<dyn Tracker>,
    /// Set on shutdown: running steps stop at the next frame boundary.
    pub cancel: Arc<AtomicBool>,
}

impl RuntimeCtx {
    /// The time limit of a step kind.
    pub fn time_limit(&self, kind: StepKind) -> Duration {
        Duration::from_secs(
            self.settings
                .worker
                .time_limits_secs
                .get(&kind)
                .copied()
                .unwrap_or(3600),
        )
    }

    /// Capped exponential backoff with full jitter: `random(0, min(cap, base × 2^attempt))`,
    /// at least one second.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let w = &self.settings.worker;
        let exp = w
            .backoff_base_secs
            .saturating_mul(1u64 << attempt.min(30))
            .min(w.backoff_cap_secs)
            .max(1);
        Duration::from_millis(fastrand::u64(1000..=exp * 1000))
    }
}

fn event(msg: &TaskMessage, ctx: &RuntimeCtx, state: TaskState) -> TaskEvent {
    TaskEvent {
        graph_id: msg.graph_id.clone(),
        task_id: msg.task_id.clone(),
        kind: msg.step.kind(),
        state,
        attempt: msg.attempt,
        worker: ctx.worker.clone(),
        at_ms: now_ms(),
        duration_ms: None,
        cause: None,
    }
}

/// Why a dead letter needs no requeue: its task has been taken care of since.
#[derive(Debug, Clone, PartialEq)]
pub enum Settled {
    /// The task completed, or a later attempt has run (or runs) since: its
    /// state now.
    RanSince(crate::store::TaskState),
    /// Its publish was planned again since (other rows or settings) and the new
    /// plan runs its own step for the task, or has none.
    Replaced,
    /// Its publish's work folder was removed (the folder that holds it is there).
    Removed,
}

impl std::fmt::Display for Settled {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Settled::RanSince(state) => write!(f, "since then: {state}"),
            Settled::Replaced => f.write_str("its publish was planned again since"),
            Settled::Removed => f.write_str("its publish's work folder was removed"),
        }
    }
}

/// Whether the dead task message `msg` is settled (see [`Settled`]), read from
/// its work folder. `None` when its failure still stands, and whenever that
/// cannot be told (the folder is unreadable, or this machine does not see the
/// project's storage at all): a dead letter is never called settled on a guess.
pub fn settled(msg: &TaskMessage) -> Option<Settled> {
    use crate::store::TaskState as S;
    let dir = &msg.work_dir;
    let work = match WorkDir::open(dir) {
        Ok(work) => work,
        Err(StoreError::NotAWorkDir { .. }) => {
            return match WorkDir::absence(dir)? {
                Absence::Superseded => Some(Settled::Replaced),
                Absence::Removed => Some(Settled::Removed),
                Absence::Unseen => None,
            }
        }
        Err(_) => return None,
    };
    let graph = work.manifest().ok()?;
    match graph.node(&msg.task_id) {
        Some(node) if node.step == msg.step => {}
        _ => return Some(Settled::Replaced),
    }
    let state = work.task_state(&msg.task_id).ok()?;
    let later = match &state {
        S::Succeeded { .. } => true,
        S::Running { attempt, .. } | S::Failed { attempt, .. } => *attempt > msg.attempt,
        S::Waiting | S::Dispatched => false,
    };
    later.then_some(Settled::RanSince(state))
}

/// What the first (blocking) part of [`handle`] found.
enum Setup {
    /// The work folder, its graph, and the fencing decision.
    Ready(Box<(WorkDir, Arc<Graph>, Begin)>),
    /// The message cannot run here or at all (not in the manifest, an earlier
    /// plan, storage this host does not see): dead-letter it with this reason.
    DeadLetter(String),
}

/// Handles one delivered task end to end (see the module doc for the order).
pub async fn handle<T: Transport>(
    msg: TaskMessage,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Outcome, RuntimeError> {
    // One trip to the blocking pool: open the folder, read the manifest, fence
    // the attempt (each is shared-storage IO).
    let (dir, task, attempt, worker, step) = (
        msg.work_dir.clone(),
        msg.task_id.clone(),
        msg.attempt,
        ctx.worker.clone(),
        msg.step.clone(),
    );
    let setup = off_thread(move || -> Result<Setup, StoreError> {
        let work = match WorkDir::open(&dir) {
            // Not even the folder that holds it: this host does not see the
            // project's storage where the submitter did.
            Err(StoreError::NotAWorkDir { .. })
                if WorkDir::absence(&dir) == Some(Absence::Unseen) =>
            {
                return Ok(Setup::DeadLetter(format!(
                    "work folder unusable: this host ({worker}) does not see {}: mount the \
                     project's storage here at the same path as on the host that submitted \
                     the publish (or keep this worker off these queues), then \
                     `iom dlq requeue --all`",
                    dir.parent().unwrap_or(&dir).display()
                )));
            }
            r => r?,
        };
        let graph = Arc::new(work.manifest()?);
        match graph.node(&task) {
            None => {
                return Ok(Setup::DeadLetter(format!(
                    "task {task} is not in the manifest of graph {} at {}",
                    graph.id,
                    work.path().display()
                )))
            }
            // The version was planned again (rows or settings changed) after
            // this message was sent: it must not run against the new plan.
            Some(node) if node.step != step => {
                return Ok(Setup::DeadLetter(format!(
                    "task {task} belongs to an earlier plan of graph {}: the manifest at {} \
                     was planned again since and holds another step for it; this message \
                     is obsolete (the new plan runs its own)",
                    graph.id,
                    work.path().display()
                )))
            }
            Some(_) => {}
        }
        let begin = work.begin_attempt(&task, attempt, &worker)?;
        Ok(Setup::Ready(Box::new((work, graph, begin))))
    })
    .await;
    let (work, graph, begin) = match setup {
        Ok(Setup::Ready(ready)) => *ready,
        Ok(Setup::DeadLetter(reason)) => {
            transport
                .dead_letter(&msg, &reason, ErrorClass::Permanent)
                .await?;
            tracing::error!(task = %msg.task_id, attempt = msg.attempt, %reason, "message dead-lettered");
            return Ok(Outcome::DeadLettered(reason));
        }
        Err(e) if e.class() == ErrorClass::Permanent => {
            let reason = format!("work folder unusable: {e}");
            transport
                .dead_letter(&msg, &reason, ErrorClass::Permanent)
                .await?;
            tracing::error!(task = %msg.task_id, attempt = msg.attempt, %reason, "message dead-lettered");
            return Ok(Outcome::DeadLettered(reason));
        }
        Err(e) => return Err(e.into()),
    };
    match begin {
        Begin::Stale { current } => {
            tracing::info!(task = %msg.task_id, attempt = msg.attempt, current, "stale attempt ignored");
            let mut ev = event(&msg, ctx, TaskState::Stale);
            ev.cause = Some(format!("attempt {current} supersedes it"));
            transport.event(&ev).await;
            return Ok(Outcome::Stale);
        }
        Begin::AlreadyDone(_) => {
            dispatch_children(&work, &graph, &msg.task_id, ctx, transport).await?;
            return Ok(Outcome::AlreadyDone);
        }
        Begin::Run => {}
    }

    transport.event(&event(&msg, ctx, TaskState::Started)).await;
    let t0 = Instant::now();
    let result = run_step(&msg, ctx, &work).await;
    let elapsed = t0.elapsed();
    let failed = result.as_ref().err().map(|e| e.class());
    crate::metrics::observe_step(msg.step.kind(), failed, elapsed);

    match result {
        Ok(recorded) => {
            recorded?;
            let mut ev = event(&msg, ctx, TaskState::Succeeded);
            ev.duration_ms = Some(elapsed.as_millis() as u64);
            transport.event(&ev).await;
            dispatch_children(&work, &graph, &msg.task_id, ctx, transport).await?;
            Ok(Outcome::Succeeded)
        }
        Err(StepError::Cancelled) if ctx.cancel.load(std::sync::atomic::Ordering::SeqCst) => {
            // Not the step's failure: no retry is spent and nothing is recorded.
            tracing::warn!(task = %msg.task_id, attempt = msg.attempt, "step stopped by shutdown");
            Err(RuntimeError::ShuttingDown)
        }
        Err(e) => {
            let class = e.class();
            let reason = e.to_string();
            let max = ctx.settings.worker.max_attempts;
            let tried = msg.attempts_in_round();
            if class == ErrorClass::Transient && tried < max {
                let delay = ctx.backoff(tried);
                let mut next = msg.clone();
                next.attempt += 1;
                transport.retry_later(&next, delay, &reason).await?;
                let mut ev = event(&msg, ctx, TaskState::Retrying);
                ev.cause = Some(reason.clone());
                ev.duration_ms = Some(elapsed.as_millis() as u64);
                transport.event(&ev).await;
                tracing::warn!(task = %msg.task_id, attempt = msg.attempt, ?delay, %reason, "transient failure, retry scheduled");
                return Ok(Outcome::RetryScheduled(delay));
            }
            let reason = if class == ErrorClass::Transient {
                format!("gave up after {tried} attempts: {reason}")
            } else {
                reason
            };
            let rec = FailureRecord {
                task_id: msg.task_id.clone(),
                attempt: msg.attempt,
                worker: ctx.worker.clone(),
                at_ms: now_ms(),
                class,
                reason: reason.clone(),
                dead_lettered: true,
            };
            blocking(work.clone(), move |w| w.record_failure(&rec)).await?;
            transport.dead_letter(&msg, &reason, class).await?;
            let state = if class == ErrorClass::Transient {
                TaskState::DeadLettered
            } else {
                TaskState::Failed
            };
            let mut ev = event(&msg, ctx, state);
            ev.cause = Some(reason.clone());
            ev.duration_ms = Some(elapsed.as_millis() as u64);
            transport.event(&ev).await;
            tracing::error!(task = %msg.task_id, attempt = msg.attempt, %reason, "task failed");
            Ok(Outcome::DeadLettered(reason))
        }
    }
}

/// The broker dead-lettered `msg` itself: RabbitMQ's delivery limit, reached
/// when every worker that took the task died or lost its connection before
/// settling it (a crash loop). No worker saw it fail, so nobody else records the
/// failure, and nothing runs it again until `iom dlq requeue`. This records the
/// failure (reason `cause`) and sends a `dead_lettered` event, so `iom status`
/// and the Tractor job end instead of showing the task running for ever.
///
/// Fenced like every failure report, and idempotent (a notice can be delivered
/// twice): nothing is recorded when the task has completed, when a later attempt
/// has started, or when a failure of this attempt or a later one stands.
/// Returns whether a failure was recorded.
pub async fn record_broker_death<T: Transport>(
    msg: &TaskMessage,
    cause: String,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<bool, RuntimeError> {
    let (dir, task, attempt, me) = (
        msg.work_dir.clone(),
        msg.task_id.clone(),
        msg.attempt,
        ctx.worker.clone(),
    );
    let reason = cause.clone();
    let recorded = off_thread(move || -> Result<bool, StoreError> {
        let work = WorkDir::open(&dir)?;
        // A notice delivered twice finds its own record (`record_failure` itself
        // would let the same attempt's failure be written again).
        if work.manifest()?.node(&task).is_none()
            || work.failure(&task)?.is_some_and(|f| f.attempt >= attempt)
        {
            return Ok(false);
        }
        // The worker that last started it (the one that crashed), else this one.
        let worker = work.latest_run(&task)?.map_or(me, |r| r.worker);
        work.record_failure(&FailureRecord {
            task_id: task,
            attempt,
            worker,
            at_ms: now_ms(),
            class: ErrorClass::Transient,
            reason,
            dead_lettered: true,
        })
    })
    .await?;
    if recorded {
        crate::metrics::broker_dead_lettered(msg.step.kind());
        tracing::error!(task = %msg.task_id, attempt = msg.attempt, reason = %cause, "task dead-lettered by the broker; failure recorded");
        let mut ev = event(msg, ctx, TaskState::DeadLettered);
        ev.cause = Some(cause);
        transport.event(&ev).await;
    }
    Ok(recorded)
}

/// Runs the step on a blocking thread under its time limit and, when it succeeds,
/// records its completion on the same thread (one trip to the blocking pool per
/// task run, not two). On timeout the step is asked to stop (cancel flag) and
/// awaited, so two runs of one task never overlap on this node.
///
/// `Ok(Ok(()))`: the step succeeded and its completion record is durable (or a
/// first completion already stood). `Ok(Err(_))`: the step succeeded but the
/// record could not be written (the delivery must come back). `Err(_)`: the step
/// failed.
async fn run_step(
    msg: &TaskMessage,
    ctx: &RuntimeCtx,
    work: &WorkDir,
) -> Result<Result<(), StoreError>, StepError> {
    let cancel = Arc::new(AtomicBool::new(false));
    let step_ctx = StepContext {
        settings: ctx.settings.clone(),
        worker: ctx.worker.clone(),
        cancel: cancel.clone(),
        tracker: ctx.tracker.clone(),
    };
    let shutdown = ctx.cancel.clone();
    let (m, w) = (msg.clone(), work.clone());
    let mut handle = tokio::task::spawn_blocking(move || {
        let started_at_ms = now_ms();
        fault::inject(&m, &step_ctx)?;
        let out = steps::run(&m, &step_ctx)?;
        let rec = CompletionRecord {
            task_id: m.task_id.clone(),
            attempt: m.attempt,
            worker: step_ctx.worker.clone(),
            started_at_ms,
            finished_at_ms: now_ms(),
            outputs: out.outputs,
            summary: out.summary,
        };
        Ok(w.complete(&rec).map(|_| ()))
    });
    let joined = |r: Result<Result<Result<(), StoreError>, StepError>, tokio::task::JoinError>| {
        r.unwrap_or_else(|e| {
            Err(StepError::Transient {
                message: format!("step thread ended abnormally: {e}"),
            })
        })
    };
    let limit = ctx.time_limit(msg.step.kind());
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        tokio::select! {
            r = &mut handle => return joined(r),
            _ = tokio::time::sleep_until(deadline) => {
                cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                // A step that finished and recorded its completion just as the
                // limit passed has succeeded; anything else timed out.
                return match joined((&mut handle).await) {
                    Ok(Ok(())) => Ok(Ok(())),
                    _ => Err(StepError::TimedOut { kind: msg.step.kind(), limit }),
                };
            }
            _ = tokio::time::sleep(Duration::from_millis(200)) => {
                if shutdown.load(std::sync::atomic::Ordering::SeqCst) {
                    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
    }
}

/// Claims and publishes every child of `done` whose parents have all completed.
///
/// One trip to the blocking pool finds the ready children and claims them; the
/// children this task must publish (claim won, or held by this task from an
/// earlier run and not marked dispatched) are then published together and every
/// confirm is awaited before this returns (see [`publish_confirmed`]).
pub async fn dispatch_children<T: Transport>(
    work: &WorkDir,
    graph: &Arc<Graph>,
    done: &TaskId,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<(), RuntimeError> {
    if graph.children(done).is_empty() {
        // A leaf: nothing to dispatch, and no trip to the blocking pool.
        return Ok(());
    }
    let (g, d) = (graph.clone(), done.clone());
    let ours = blocking(work.clone(), move |w| {
        let mut ours = Vec::new();
        for child in w.ready_children(&g, &d)? {
            let mine = match w.claim_dispatch(&child, &d)? {
                Claim::Won => true,
                Claim::HeldBy(owner) => owner == d,
            };
            if mine && !w.is_dispatched(&child)? {
                ours.push(child);
            }
        }
        Ok(ours)
    })
    .await?;
    let msgs = ours.iter().filter_map(|c| graph.message(c, 1)).collect();
    publish_confirmed(work, msgs, ctx, transport).await?;
    Ok(())
}

/// Publishes the roots of a graph (and anything else ready but undispatched, which
/// makes this `iom resume` too). Returns the tasks published.
pub async fn submit<T: Transport>(
    work: &WorkDir,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let ready = blocking(work.clone(), |w| w.undispatched_ready()).await?;
    dispatch_tasks(work, ready, ctx, transport).await
}

/// Publishes the given tasks of a graph at attempt 1 and marks each dispatched
/// after its confirm. Returns the tasks published.
pub async fn dispatch_tasks<T: Transport>(
    work: &WorkDir,
    tasks: Vec<TaskId>,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let graph = match work.loaded_manifest() {
        Some(g) => g,
        None => blocking(work.clone(), |w| w.manifest()).await?,
    };
    let msgs = tasks.iter().filter_map(|id| graph.message(id, 1)).collect();
    publish_confirmed(work, msgs, ctx, transport).await
}

/// Runs every failed task of a graph again (`iom resume --retry-failed`, once
/// the cause is fixed): each as the attempt after the one that failed, with a
/// fresh round of retries ([`TaskMessage::requeued`]), published and marked like
/// any dispatch. Its children follow when it completes. Returns the tasks sent.
pub async fn retry_failed<T: Transport>(
    work: &WorkDir,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let (graph, failed) =
        blocking(work.clone(), |w| Ok((w.manifest()?, w.failed_attempts()?))).await?;
    let msgs = failed
        .iter()
        .filter_map(|(id, attempt)| rerun(&graph, id, Some(*attempt)))
        .collect();
    publish_confirmed(work, msgs, ctx, transport).await
}

/// Sends again what a stopped in-process run left on its in-memory queue
/// ([`WorkDir::orphaned_in_process`]; call it holding the graph's in-process
/// lock, or once [`WorkDir::hand_to_farm`] keeps in-process runs away): a task that was queued as attempt 1, a task that had started as its
/// next attempt with a fresh round of retries (the start that never finished is
/// superseded, as by a DLQ requeue). Returns the tasks sent.
pub async fn resend_orphans<T: Transport>(
    work: &WorkDir,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let (graph, orphans) = blocking(work.clone(), |w| {
        Ok((w.manifest()?, w.orphaned_in_process()?))
    })
    .await?;
    let msgs = orphans
        .iter()
        .filter_map(|(id, started)| rerun(&graph, id, *started))
        .collect();
    publish_confirmed(work, msgs, ctx, transport).await
}

/// How long running steps get to stop once a shutdown's grace period is over and
/// they were asked to ([`RuntimeCtx::cancel`]); a step still running then (stuck
/// in a system call on a hung mount, say) is abandoned. Used by the worker and
/// the in-process runner alike.
pub const STOP_WAIT: Duration = Duration::from_secs(10);

/// The end of a shutdown's grace period, for the worker and the in-process
/// runner alike: asks the `running` steps to stop (`cancel`; a stopped step
/// records nothing), gives them [`STOP_WAIT`], then abandons the ones still
/// running (their threads run on until the process ends).
pub async fn stop_running<T: 'static>(running: &mut tokio::task::JoinSet<T>, cancel: &AtomicBool) {
    tracing::warn!(running = running.len(), "stopping the running steps");
    cancel.store(true, std::sync::atomic::Ordering::SeqCst);
    let stopped = tokio::time::timeout(STOP_WAIT, async {
        while running.join_next().await.is_some() {}
    })
    .await;
    if stopped.is_err() {
        tracing::warn!(
            running = running.len(),
            "abandoning the steps that did not stop"
        );
        running.abort_all();
        while running.join_next().await.is_some() {}
    }
}

/// Hands graphs to the farm before anything of theirs is sent
/// ([`WorkDir::hand_to_farm`], each in turn: nothing is sent when one of them is
/// running in-process in another process), then sends to `transport` what
/// in-process runs of them left unfinished, and forgets those runs. Returns the
/// tasks sent.
pub async fn hand_to_farm<T: Transport>(
    works: &[WorkDir],
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let mut ran = Vec::with_capacity(works.len());
    for w in works {
        let by = ctx.worker.clone();
        if blocking(w.clone(), move |w| w.hand_to_farm(&by)).await? {
            ran.push(w);
        }
    }
    let mut sent = Vec::new();
    for w in ran {
        sent.extend(resend_orphans(w, ctx, transport).await?);
        blocking(w.clone(), |w| w.forget_in_process()).await?;
    }
    Ok(sent)
}

/// The message that runs `task` again: attempt 1 when it never started, else the
/// attempt after the last one started, opening a fresh round of retries
/// ([`TaskMessage::requeued`]). `None` when the task is not in the graph.
fn rerun(graph: &Graph, task: &TaskId, last_started: Option<u32>) -> Option<TaskMessage> {
    match last_started {
        None => graph.message(task, 1),
        Some(attempt) => graph.message(task, attempt).map(|m| m.requeued(true)),
    }
}

/// Publishes `msgs` all at once (their confirms overlap instead of one round trip
/// each), waits for every confirm, marks the confirmed ones dispatched (one trip
/// to the blocking pool) and reports them queued. Returns the tasks confirmed, in
/// order; if any publish failed, its error, after the others were marked (so a
/// retry publishes only what is missing; publishing one twice would be harmless).
async fn publish_confirmed<T: Transport>(
    work: &WorkDir,
    msgs: Vec<TaskMessage>,
    ctx: &RuntimeCtx,
    transport: &T,
) -> Result<Vec<TaskId>, RuntimeError> {
    let results = futures_util::future::join_all(msgs.iter().map(|m| transport.dispatch(m))).await;
    let mut sent = Vec::with_capacity(msgs.len());
    let mut failed = None;
    for (msg, r) in msgs.iter().zip(results) {
        match r {
            Ok(()) => sent.push(msg),
            Err(e) => {
                failed.get_or_insert(e);
            }
        }
    }
    let ids: Vec<TaskId> = sent.iter().map(|m| m.task_id.clone()).collect();
    if !ids.is_empty() {
        let marks = ids.clone();
        blocking(work.clone(), move |w| {
            marks.iter().try_for_each(|id| w.mark_dispatched(id))
        })
        .await?;
    }
    for msg in sent {
        transport.event(&event(msg, ctx, TaskState::Queued)).await;
    }
    match failed {
        Some(e) => Err(e.into()),
        None => Ok(ids),
    }
}

/// Runs a store operation on a blocking thread (file IO on shared storage can stall).
async fn blocking<R, F>(work: WorkDir, f: F) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce(&WorkDir) -> Result<R, StoreError> + Send + 'static,
{
    off_thread(move || f(&work)).await
}

/// Runs `f` on the blocking pool; a panic in it is a (transient) join error.
async fn off_thread<R, F>(f: F) -> Result<R, StoreError>
where
    R: Send + 'static,
    F: FnOnce() -> Result<R, StoreError> + Send + 'static,
{
    tokio::task::spawn_blocking(f)
        .await
        .unwrap_or_else(|e| Err(StoreError::Join(e.to_string())))
}

/// Fault injection for the reliability tests (`IOM_FAULT`), inert unless set.
///
/// `IOM_FAULT="copy:transient:2,probe:permanent:1,copy:sleep_ms:300"` makes the first
/// two attempts of every copy fail transiently, the first probe attempt fail
/// permanently, and every copy sleep 300 ms first (checking for cancellation);
/// `copy:frame_ms:50` slows every copied frame by 50 ms, so a test can kill a
/// worker in the middle of a copy; `copy:abort:1` aborts the whole process when
/// attempt 1 of a copy starts (a crash loop, for the broker's delivery limit);
/// `copy:stuck_ms:N` blocks every copy N ms *without* checking for cancellation
/// (a system call hung on a dead mount).
/// Read once per process.
pub mod fault {
    use std::sync::LazyLock;
    use std::time::Duration;

    use crate::steps::{StepContext, StepError};
    use crate::task::{StepKind, TaskMessage};

    #[derive(Debug, Clone, PartialEq)]
    enum Fault {
        Transient(u32),
        Permanent(u32),
        SleepMs(u64),
        FrameMs(u64),
        StuckMs(u64),
        Abort(u32),
    }

    static FAULTS: LazyLock<Vec<(StepKind, Fault)>> =
        LazyLock::new(|| parse(&std::env::var("IOM_FAULT").unwrap_or_default()));

    fn parse(spec: &str) -> Vec<(StepKind, Fault)> {
        spec.split(',')
            .filter_map(|item| {
                let mut it = item.trim().splitn(3, ':');
                let kind = it.next()?.parse::<StepKind>().ok()?;
                let what = it.next()?;
                let n: u64 = it.next()?.parse().ok()?;
                let f = match what {
                    "transient" => Fault::Transient(n as u32),
                    "permanent" => Fault::Permanent(n as u32),
                    "sleep_ms" => Fault::SleepMs(n),
                    "frame_ms" => Fault::FrameMs(n),
                    "stuck_ms" => Fault::StuckMs(n),
                    "abort" => Fault::Abort(n as u32),
                    _ => return None,
                };
                Some((kind, f))
            })
            .collect()
    }

    /// Per-frame slow-down inside a step's loop (`<kind>:frame_ms:N`).
    pub fn per_frame(kind: StepKind) {
        for (k, f) in FAULTS.iter() {
            if let (true, Fault::FrameMs(ms)) = (*k == kind, f) {
                std::thread::sleep(Duration::from_millis(*ms));
            }
        }
    }

    /// Applies the configured faults to this attempt.
    pub fn inject(msg: &TaskMessage, ctx: &StepContext) -> Result<(), StepError> {
        for (kind, f) in FAULTS.iter() {
            if *kind != msg.step.kind() {
                continue;
            }
            match f {
                Fault::Transient(n) if msg.attempt <= *n => {
                    return Err(StepError::transient(format!(
                        "injected transient fault (attempt {} of the first {n})",
                        msg.attempt
                    )))
                }
                Fault::Permanent(n) if msg.attempt <= *n => {
                    return Err(StepError::permanent("injected permanent fault"))
                }
                Fault::Abort(n) if msg.attempt <= *n => {
                    eprintln!(
                        "IOM_FAULT: aborting at attempt {} of {}",
                        msg.attempt, msg.task_id
                    );
                    std::process::abort();
                }
                Fault::StuckMs(ms) => std::thread::sleep(Duration::from_millis(*ms)),
                Fault::SleepMs(ms) => {
                    let until = std::time::Instant::now() + Duration::from_millis(*ms);
                    while std::time::Instant::now() < until {
                        ctx.check_cancel()?;
                        std::thread::sleep(Duration::from_millis(10));
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn parses_specs_and_ignores_junk() {
            let f = parse(
                "copy:transient:2, probe:permanent:1,copy:sleep_ms:300,bogus:x:1,copy:nope:1,copy:abort:1,copy:stuck_ms:5",
            );
            assert_eq!(
                f,
                vec![
                    (StepKind::Copy, Fault::Transient(2)),
                    (StepKind::Probe, Fault::Permanent(1)),
                    (StepKind::Copy, Fault::SleepMs(300)),
                    (StepKind::Copy, Fault::Abort(1)),
                    (StepKind::Copy, Fault::StuckMs(5)),
                ]
            );
            assert!(parse("").is_empty());
        }
    }
}
