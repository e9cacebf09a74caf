//! The embedded default: with no broker configured, `iom publish` runs the same
//! graphs in-process — the same step code, the same runtime (fencing, completion
//! records, claims, retry rules) — on a bounded pool of tokio tasks. A queue is an
//! in-memory channel; a retry is a timer; a dead letter is a failure record and a
//! log line.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, Semaphore};

use crate::error::ErrorClass;
use crate::events::TaskEvent;
use crate::runtime::{self, Outcome, RuntimeCtx, Transport, TransportError};
use crate::store::{GraphStatus, StoreError, WorkDir};
use crate::task::TaskMessage;

/// In-process transport: children and retries go back into the local queue.
struct Local {
    tx: mpsc::UnboundedSender<TaskMessage>,
    /// Messages queued or waiting for a retry timer (for termination).
    pending: Arc<AtomicUsize>,
    /// Observer for events (the CLI prints them).
    on_event: Arc<dyn Fn(&TaskEvent) + Send + Sync>,
    /// Retry delays are divided by this (tests use a big factor; 1 in production).
    retry_speedup: u32,
}

impl Transport for Local {
    async fn dispatch(&self, msg: &TaskMessage) -> Result<(), TransportError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        self.tx.send(msg.clone()).map_err(|_| {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            TransportError("embedded queue closed".into())
        })
    }

    async fn retry_later(
        &self,
        msg: &TaskMessage,
        delay: Duration,
        _reason: &str,
    ) -> Result<(), TransportError> {
        self.pending.fetch_add(1, Ordering::SeqCst);
        let (tx, m, pending) = (self.tx.clone(), msg.clone(), self.pending.clone());
        let delay = delay / self.retry_speedup.max(1);
        tokio::spawn(async move {
            tokio::time::sleep(delay).await;
            if tx.send(m).is_err() {
                pending.fetch_sub(1, Ordering::SeqCst);
            }
        });
        Ok(())
    }

    async fn dead_letter(
        &self,
        msg: &TaskMessage,
        reason: &str,
        class: ErrorClass,
    ) -> Result<(), TransportError> {
        // The runtime logged the failure and sent its event: only a trace here.
        tracing::debug!(task = %msg.task_id, ?class, %reason, "dead-lettered (embedded: kept in the work folder's failure record)");
        Ok(())
    }

    async fn event(&self, ev: &TaskEvent) {
        (self.on_event)(ev);
    }
}

/// Options of an in-process run.
pub struct EmbeddedOptions {
    /// Concurrent tasks.
    pub slots: usize,
    /// Retry delays are divided by this (1 in production; tests speed retries up).
    pub retry_speedup: u32,
    /// Called for every event.
    pub on_event: Arc<dyn Fn(&TaskEvent) + Send + Sync>,
    /// Also run the graphs' failed tasks again ([`runtime::retry_failed`]).
    pub retry_failed: bool,
    /// Resolves when the run is to stop early (the CLI: Ctrl-C or SIGTERM). No
    /// task starts after it; the running ones get `grace` to finish and are then
    /// cancelled ([`RuntimeCtx::cancel`]). The graphs are then
    /// [`GraphState::Interrupted`](crate::store::GraphState::Interrupted), and
    /// the next run (`iom resume`) sends what was left again.
    pub stop: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    /// How long running tasks may take to finish after `stop`.
    pub grace: Duration,
    /// Run a graph that was handed to the farm ([`WorkDir::hand_to_farm`]) all
    /// the same (the user said `--embedded`); else such a graph is refused with
    /// [`StoreError::OnTheFarm`], as its tasks would run twice.
    pub take_from_farm: bool,
}

impl EmbeddedOptions {
    /// `slots` concurrent tasks, events to `on_event`, production retry delays,
    /// no early stop.
    pub fn new(slots: usize, on_event: Arc<dyn Fn(&TaskEvent) + Send + Sync>) -> EmbeddedOptions {
        EmbeddedOptions {
            slots,
            retry_speedup: 1,
            on_event,
            retry_failed: false,
            stop: None,
            grace: Duration::from_secs(120),
            take_from_farm: false,
        }
    }
}

/// Why an in-process run could not complete.
#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// A work folder failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime failed in a way that would, on a broker, redeliver the task.
    #[error("{0}")]
    Runtime(String),
}

impl crate::error::Classify for EmbeddedError {
    fn class(&self) -> ErrorClass {
        match self {
            EmbeddedError::Store(e) => e.class(),
            EmbeddedError::Runtime(_) => ErrorClass::Transient,
        }
    }
}

/// Runs the graphs whose work folders are given (already created) until every
/// task is terminal, or until `opts.stop`; returns each graph's final status.
///
/// Each graph's in-process lock ([`WorkDir::lock_in_process`]) is held for the
/// run, so two processes never run one graph in-process at once; a graph handed
/// to the farm is refused unless `opts.take_from_farm`. A graph an
/// earlier in-process run left unfinished (interrupted, killed) continues: what
/// that run had queued in memory, or started and not finished, is sent again
/// ([`runtime::resend_orphans`]), the second as its next attempt.
pub async fn run(
    works: Vec<WorkDir>,
    ctx: Arc<RuntimeCtx>,
    mut opts: EmbeddedOptions,
) -> Result<Vec<GraphStatus>, EmbeddedError> {
    let mut locks = Vec::with_capacity(works.len());
    for w in &works {
        let wd = w.clone();
        let take = opts.take_from_farm;
        let lock = tokio::task::spawn_blocking(move || {
            let lock = wd.lock_in_process()?;
            wd.claim_from_farm(take)?;
            Ok::<_, StoreError>(lock)
        })
        .await
        .map_err(|e| EmbeddedError::Runtime(e.to_string()))??;
        locks.push(lock);
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<TaskMessage>();
    let pending = Arc::new(AtomicUsize::new(0));
    let local = Arc::new(Local {
        tx,
        pending: pending.clone(),
        on_event: opts.on_event.clone(),
        retry_speedup: opts.retry_speedup,
    });
    for w in &works {
        runtime::resend_orphans(w, &ctx, local.as_ref())
            .await
            .map_err(|e| EmbeddedError::Runtime(e.to_string()))?;
        runtime::submit(w, &ctx, local.as_ref())
            .await
            .map_err(|e| EmbeddedError::Runtime(e.to_string()))?;
        if opts.retry_failed {
            runtime::retry_failed(w, &ctx, local.as_ref())
                .await
                .map_err(|e| EmbeddedError::Runtime(e.to_string()))?;
        }
    }
    let slots = Arc::new(Semaphore::new(opts.slots.max(1)));
    let mut running = tokio::task::JoinSet::new();
    let mut failures: Vec<String> = Vec::new();
    let mut stop = opts.stop.take();
    let mut stopping = false;
    loop {
        if running.is_empty() && (stopping || pending.load(Ordering::SeqCst) == 0) {
            break;
        }
        tokio::select! {
            () = async { stop.as_mut().expect("guarded").await }, if stop.is_some() && !stopping => {
                stopping = true;
                tracing::info!(running = running.len(), grace = ?opts.grace, "stopping: no new tasks");
            }
            Some(msg) = rx.recv(), if !stopping => {
                let permit = slots.clone().acquire_owned().await.map_err(|e| EmbeddedError::Runtime(e.to_string()))?;
                let (ctx, local, pending) = (ctx.clone(), local.clone(), pending.clone());
                running.spawn(async move {
                    let r = runtime::handle(msg.clone(), &ctx, local.as_ref()).await;
                    drop(permit);
                    // Like a broker redelivery: a runtime error puts the message back.
                    let out = match r {
                        Ok(o) => Ok(o),
                        Err(e) => {
                            tracing::warn!(task = %msg.task_id, error = %e, "runtime error; requeued");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            let _ = local.dispatch(&msg).await;
                            Err(e.to_string())
                        }
                    };
                    pending.fetch_sub(1, Ordering::SeqCst);
                    out
                });
            }
            Some(done) = running.join_next(), if !running.is_empty() => {
                match done {
                    Ok(Ok(Outcome::DeadLettered(reason))) => failures.push(reason),
                    Ok(_) => {}
                    Err(e) => failures.push(format!("task panicked: {e}")),
                }
            }
            _ = tokio::time::sleep(Duration::from_millis(50)) => {}
        }
        if stopping {
            // Running tasks get the grace period, then are asked to stop (a
            // cancelled step records nothing; its next run starts over); a second
            // Ctrl-C (`ctx.cancel` set) ends the grace at once.
            let grace_end = tokio::time::Instant::now() + opts.grace;
            while !running.is_empty()
                && !ctx.cancel.load(Ordering::SeqCst)
                && tokio::time::Instant::now() < grace_end
            {
                tokio::select! {
                    _ = running.join_next() => {}
                    () = tokio::time::sleep(Duration::from_millis(100)) => {}
                }
            }
            if !running.is_empty() {
                runtime::stop_running(&mut running, &ctx.cancel).await;
            }
        }
    }
    // Release the locks first: a graph left unfinished is then `Interrupted`.
    drop(locks);
    let mut out = Vec::new();
    for w in works {
        out.push(
            tokio::task::spawn_blocking(move || w.status())
                .await
                .map_err(|e| EmbeddedError::Runtime(e.to_string()))??,
        );
    }
    Ok(out)
}
