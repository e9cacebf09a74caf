//! The farm worker: consumes step queues from RabbitMQ and runs each task through
//! [`crate::runtime::handle`]. Stateless: everything it knows comes from the
//! message and the publish's work folder.
//!
//! - Prefetch = slots; a slot is held from delivery to ack.
//! - Ack only after the runtime returned (the step's output and its completion
//!   record are durable, children are published with confirm).
//! - A malformed message or one with an unknown schema is dead-lettered with the
//!   reason, then acked; it never crashes the worker.
//! - Connection loss: in-flight deliveries are abandoned to the broker (they are
//!   redelivered; steps are idempotent), the worker reconnects with backoff,
//!   re-declares the topology and consumes again. It never goes silent. Running
//!   steps go on; a redelivery of one this worker is still running waits for that
//!   run instead of starting the step a second time beside it, then settles
//!   (it finds the completion record and sends the children on the live
//!   connection). A redelivery that reaches another worker meanwhile does run
//!   the step again, concurrently (steps converge; see `steps`).
//! - Shutdown (SIGTERM): cancel the consumers, let running tasks finish within the
//!   grace period, then ask them to stop: a stopped task is published again
//!   (confirmed) and its delivery acked, so restarts do not count toward the
//!   queue's delivery limit (a nack would); closing the connection returns whatever
//!   was still not settled.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Semaphore;

use crate::error::ErrorClass;
use crate::events::TaskEvent;
use crate::queue::{
    Broker, BrokerConfig, BrokerDeath, EventPublisher, Incoming, Publisher, QueueError,
};
use crate::runtime::{self, Outcome, RuntimeCtx, Transport, TransportError};
use crate::task::{StepKind, TaskId, TaskMessage};

/// The broker side of the runtime's transport.
pub struct BrokerTransport {
    /// Confirmed publisher (tasks, retries, dead letters).
    pub publisher: Publisher,
    /// Best-effort event publisher on its own channel.
    pub events: EventPublisher,
    /// Worker identity.
    pub worker: String,
}

impl BrokerTransport {
    /// Opens the publishing channels of `worker` on `broker`.
    pub async fn open(broker: &Broker, worker: impl Into<String>) -> Result<Self, QueueError> {
        Ok(BrokerTransport {
            publisher: broker.publisher().await?,
            events: broker.event_publisher().await?,
            worker: worker.into(),
        })
    }

    /// Call before closing the broker connection: hands every queued event to
    /// the connection (at most `within`) and closes the publishing channel (see
    /// [`Publisher::close`]).
    pub async fn close(&self, within: Duration) {
        self.events.flush(within).await;
        self.publisher.close().await;
    }
}

impl Transport for BrokerTransport {
    async fn dispatch(&self, msg: &TaskMessage) -> Result<(), TransportError> {
        self.publisher
            .publish_task(msg, &[])
            .await
            .map_err(|e| TransportError(e.to_string()))
    }

    async fn retry_later(
        &self,
        msg: &TaskMessage,
        delay: Duration,
        reason: &str,
    ) -> Result<(), TransportError> {
        self.publisher
            .publish_retry(msg, delay, reason)
            .await
            .map(|_| crate::metrics::retry_scheduled(msg.step.kind()))
            .map_err(|e| TransportError(e.to_string()))
    }

    async fn dead_letter(
        &self,
        msg: &TaskMessage,
        reason: &str,
        class: ErrorClass,
    ) -> Result<(), TransportError> {
        self.publisher
            .publish_dead(
                &msg.encode(),
                Some(msg.step.kind()),
                reason,
                class_name(class),
                &self.worker,
                None,
            )
            .await
            .map(|()| crate::metrics::dead_lettered(msg.step.kind(), class))
            .map_err(|e| TransportError(e.to_string()))
    }

    async fn event(&self, ev: &TaskEvent) {
        // Off the task's path: events are for watchers and a lost one loses
        // nothing (the work folder is the truth), so the step never waits for
        // them (see `EventPublisher`). Watchers order them by `at_ms`.
        let body = serde_json::to_vec(ev).unwrap_or_default();
        self.events.send(ev.routing_key(), body);
    }
}

fn class_name(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Transient => "transient",
        ErrorClass::Permanent => "permanent",
    }
}

/// What this worker does.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Step queues to consume.
    pub queues: Vec<StepKind>,
    /// Concurrent tasks (= prefetch).
    pub slots: u16,
    /// How long to keep trying to reach the broker before giving up (per outage).
    pub reconnect_for: Duration,
    /// Grace period for running tasks on shutdown.
    pub grace: Duration,
}

/// Counters a worker keeps (for its exit report; metrics come later).
#[derive(Debug, Default)]
pub struct WorkerStats {
    /// Deliveries received.
    pub received: AtomicU64,
    /// Tasks succeeded (including already-done redeliveries).
    pub succeeded: AtomicU64,
    /// Retries scheduled.
    pub retried: AtomicU64,
    /// Tasks dead-lettered (failed, poison, exhausted).
    pub dead_lettered: AtomicU64,
    /// Stale attempts ignored.
    pub stale: AtomicU64,
    /// Reconnections after a lost connection.
    pub reconnects: AtomicU64,
}

/// Why the worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The broker stayed unreachable for longer than allowed.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

impl crate::error::Classify for WorkerError {
    fn class(&self) -> ErrorClass {
        match self {
            WorkerError::Queue(e) => e.class(),
        }
    }
}

/// Runs until `shutdown` resolves (or the broker stays away too long).
pub async fn run(
    cfg: BrokerConfig,
    ctx: Arc<RuntimeCtx>,
    opts: WorkerOptions,
    stats: Arc<WorkerStats>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), WorkerError> {
    tokio::pin!(shutdown);
    let slots = Arc::new(Semaphore::new(usize::from(opts.slots.max(1))));
    let mut first = true;
    // Tasks keep running across a reconnect: their effects are durable and
    // idempotent; only their ack is lost, and the redelivery finds the completion
    // record. Aborting them would leave half-done work for no gain.
    let mut running = tokio::task::JoinSet::new();
    let in_flight = Arc::new(InFlight::default());
    loop {
        let broker = tokio::select! {
            b = Broker::connect_with_retry(&cfg, opts.reconnect_for) => b?,
            _ = &mut shutdown => return Ok(()),
        };
        if !first {
            stats.reconnects.fetch_add(1, Ordering::Relaxed);
            crate::metrics::reconnected();
            tracing::warn!("reconnected to the broker");
        }
        first = false;
        broker.declare_topology().await?;
        let transport = Arc::new(BrokerTransport::open(&broker, ctx.worker.clone()).await?);
        let mut consumer = broker
            .consumer(&opts.queues, opts.slots, &ctx.worker)
            .await?;
        let mut notices = broker.notice_consumer(NOTICE_PREFETCH, &ctx.worker).await?;
        tracing::info!(queues = ?opts.queues, slots = opts.slots, "consuming");
        let stop = loop {
            tokio::select! {
                _ = &mut shutdown => break true,
                next = notices.next() => {
                    let Some(incoming) = delivered(next) else { break false };
                    // Not a slot: a notice costs a few small file operations.
                    let (ctx, transport) = (ctx.clone(), transport.clone());
                    running.spawn(async move { notice(incoming, &ctx, &transport).await });
                }
                next = consumer.next() => {
                    let Some(incoming) = delivered(next) else { break false };
                    stats.received.fetch_add(1, Ordering::Relaxed);
                    let permit = slots.clone().acquire_owned().await.ok();
                    let (ctx, transport, stats, in_flight) = (ctx.clone(), transport.clone(), stats.clone(), in_flight.clone());
                    let span = crate::telemetry::consumer_span(&format!("{}.tasks.{}", ctx.settings.broker.prefix, incoming.routing_key), incoming.message_id.as_deref(), incoming.headers.as_ref());
                    running.spawn(tracing::Instrument::instrument(async move {
                        process(incoming, &ctx, &transport, &stats, &in_flight).await;
                        drop(permit);
                    }, span));
                }
                Some(_) = running.join_next(), if !running.is_empty() => {}
            }
        };
        if stop {
            tracing::info!(running = running.len(), "shutting down: no new work");
            let _ = consumer.cancel().await;
            let _ = notices.cancel().await;
            let drained = tokio::time::timeout(opts.grace, async {
                while running.join_next().await.is_some() {}
            })
            .await;
            if drained.is_err() {
                // Steps check for cancellation between frames: they stop, record
                // nothing and are published again (`RuntimeError::ShuttingDown`).
                // One that does not stop in time is abandoned; closing the
                // connection returns its delivery.
                runtime::stop_running(&mut running, &ctx.cancel).await;
            }
            transport.close(Duration::from_secs(2)).await;
            broker.close().await;
            return Ok(());
        }
        // Connection lost: unacked deliveries go back to the queue on the broker's
        // side. Reconnect and keep consuming; running tasks finish on their own.
        tracing::warn!(
            running = running.len(),
            "lost the broker connection; reconnecting"
        );
    }
}

/// One delivery: decode, run, settle.
async fn process(
    incoming: Incoming,
    ctx: &RuntimeCtx,
    transport: &BrokerTransport,
    stats: &WorkerStats,
    in_flight: &InFlight,
) {
    let msg = match TaskMessage::decode(&incoming.body) {
        Ok(m) => m,
        Err(e) => {
            let kind = incoming.routing_key.parse::<StepKind>().ok();
            let reason = format!("poison message: {e}");
            tracing::error!(routing_key = %incoming.routing_key, %reason, "dead-lettering");
            match transport
                .publisher
                .publish_dead(
                    &incoming.body,
                    kind,
                    &reason,
                    "permanent",
                    &ctx.worker,
                    incoming.headers.as_ref(),
                )
                .await
            {
                Ok(()) => {
                    stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    crate::metrics::poison_dead_lettered(kind);
                    let _ = incoming.ack().await;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not dead-letter; leaving it to redelivery");
                    let _ = incoming.nack_requeue().await;
                }
            }
            return;
        }
    };
    // One run of a task at a time in this process (see the module doc).
    let _only_run = in_flight.hold(&msg.task_id).await;
    let kind = msg.step.kind();
    let _in_progress = crate::metrics::task_received(
        kind,
        incoming.redelivered,
        crate::telemetry::enqueued_at_ms(incoming.headers.as_ref()),
    );
    match runtime::handle(msg.clone(), ctx, transport).await {
        Ok(outcome) => {
            crate::metrics::task_finished(kind, crate::metrics::outcome_label(&outcome));
            match &outcome {
                Outcome::Succeeded | Outcome::AlreadyDone => &stats.succeeded,
                Outcome::RetryScheduled(_) => &stats.retried,
                Outcome::DeadLettered(_) => &stats.dead_lettered,
                Outcome::Stale => &stats.stale,
            }
            .fetch_add(1, Ordering::Relaxed);
            if let Err(e) = incoming.ack().await {
                // The broker will redeliver; the redelivery finds the completion record.
                tracing::warn!(task = %msg.task_id, error = %e, "ack failed");
            }
        }
        Err(runtime::RuntimeError::ShuttingDown) => {
            crate::metrics::task_finished(kind, "unsettled");
            // Stopped by this worker's shutdown, not by anything in the task: it
            // goes back as a new message (confirmed, then this delivery acked)
            // instead of a nack, which the queue would count toward its delivery
            // limit; rolling restarts of the farm's workers are not a crash loop.
            match transport.publisher.publish_task(&msg, &[]).await {
                Ok(()) => {
                    tracing::info!(task = %msg.task_id, attempt = msg.attempt, "stopped by shutdown; put back on its queue");
                    if let Err(e) = incoming.ack().await {
                        tracing::warn!(task = %msg.task_id, error = %e, "ack failed (the task is queued twice; steps are idempotent)");
                    }
                }
                Err(e) => {
                    tracing::warn!(task = %msg.task_id, error = %e, "stopped by shutdown; could not put it back, returning the delivery");
                    let _ = incoming.nack_requeue().await;
                }
            }
        }
        Err(e) => {
            crate::metrics::task_finished(kind, "unsettled");
            tracing::warn!(task = %msg.task_id, error = %e, "not settled; requeued for another try");
            tokio::time::sleep(Duration::from_millis(500)).await;
            let _ = incoming.nack_requeue().await;
        }
    }
}

/// The tasks this worker process is handling, one lock each: a delivery of a task
/// that is already being handled here (the broker's redelivery after this
/// worker's connection was lost, while the first run goes on) waits for the
/// first to end, then is handled as usual (it finds the completion record).
#[derive(Default)]
struct InFlight(Mutex<HashMap<TaskId, Arc<tokio::sync::Mutex<()>>>>);

/// A task held by [`InFlight::hold`]; released (and forgotten when nobody
/// waits for it) on drop.
struct Held<'a> {
    in_flight: &'a InFlight,
    task: TaskId,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl InFlight {
    async fn hold(&self, task: &TaskId) -> Held<'_> {
        let lock = {
            let mut map = self.0.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(task.clone()).or_default().clone()
        };
        let guard = match lock.clone().try_lock_owned() {
            Ok(guard) => guard,
            Err(_) => {
                tracing::info!(task = %task, "a redelivery of a task this worker is still running (its connection was lost); waiting for that run to end instead of running it twice");
                lock.lock_owned().await
            }
        };
        Held {
            in_flight: self,
            task: task.clone(),
            _guard: guard,
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut map = self.in_flight.0.lock().unwrap_or_else(|p| p.into_inner());
        // The map's handle and this guard's: nobody else waits for the task.
        if map
            .get(&self.task)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            map.remove(&self.task);
        }
    }
}

/// The delivery in a consumer's `next()`, or `None` when the consumer ended (the
/// worker then reconnects); a failure is logged.
fn delivered(next: Option<Result<Incoming, QueueError>>) -> Option<Incoming> {
    match next {
        Some(Ok(incoming)) => Some(incoming),
        Some(Err(e)) => {
            tracing::warn!(error = %e, "consumer error");
            None
        }
        None => None,
    }
}

/// Unacked dead-letter notices a worker holds at once.
const NOTICE_PREFETCH: u16 = 4;

/// One copy of a dead letter (`<p>.dead.notices`). iom's own dead letters were
/// recorded by the worker that sent them; a task the broker dead-lettered (its
/// delivery limit: a crash loop) gets its failure recorded here (see
/// [`runtime::record_broker_death`]). The dead letter itself stays in `<p>.dead`
/// for `iom dlq`. A work folder that cannot be reached for a moment returns the
/// notice after a pause; one that is gone (or a body that is not a task) is
/// logged and the notice dropped.
async fn notice(incoming: Incoming, ctx: &RuntimeCtx, transport: &BrokerTransport) {
    let Some(death) = incoming.broker_death() else {
        let _ = incoming.ack().await;
        return;
    };
    let msg = match TaskMessage::decode(&incoming.body) {
        Ok(m) => m,
        Err(e) => {
            tracing::warn!(queue = %death.queue, reason = %death.reason, error = %e, "the broker dead-lettered a message that is not a task message; it stays in the dead-letter queue (iom dlq list)");
            let _ = incoming.ack().await;
            return;
        }
    };
    let cause = broker_death_cause(&death, ctx.settings.broker.delivery_limit, &msg);
    match runtime::record_broker_death(&msg, cause, ctx, transport).await {
        Ok(_) => {
            let _ = incoming.ack().await;
        }
        Err(e) if crate::error::Classify::class(&e) == ErrorClass::Permanent => {
            tracing::warn!(task = %msg.task_id, error = %e, "cannot record the broker's dead-lettering of this task; it stays in the dead-letter queue (iom dlq list)");
            let _ = incoming.ack().await;
        }
        Err(e) => {
            tracing::warn!(task = %msg.task_id, error = %e, "cannot record the broker's dead-lettering yet; trying again shortly");
            tokio::time::sleep(Duration::from_secs(5)).await;
            let _ = incoming.nack_requeue().await;
        }
    }
}

/// What `iom status` and Tractor show for a task the broker dead-lettered.
fn broker_death_cause(death: &BrokerDeath, limit: u32, msg: &TaskMessage) -> String {
    let requeue = format!(
        "`iom dlq show` has the message; `iom dlq requeue --task {}` runs it again",
        msg.task_id
    );
    if death.reason == "delivery_limit" {
        format!(
            "dead-lettered by RabbitMQ: delivered more than broker.delivery_limit = {limit} \
             times without being settled (every worker that took it crashed, was killed or \
             lost its connection); {requeue}"
        )
    } else {
        format!("{}; {requeue}", death.describe())
    }
}

/// A shutdown future for SIGTERM or Ctrl-C.
pub async fn signal_shutdown() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = term.recv() => {}
                    _ = tokio::signal::ctrl_c() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Worker identity: `host/pid`.
pub fn identity() -> String {
    format!("{}/{}", crate::events::hostname(), std::process::id())
}

/// A fresh cancel flag for a [`RuntimeCtx`].
pub fn new_cancel_flag() -> Arc<AtomicBool> {
    Arc::new(AtomicBool::new(false))
}
