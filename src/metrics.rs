//! Prometheus metrics: one registry for the process, served on `/metrics`.
//!
//! Conventions (checked by the unit tests below):
//! - every name starts with `iom_`; counters end in `_total`;
//! - durations are `_seconds` histograms with [`DURATION_BUCKETS`] (50 ms … 2 h);
//! - labels have low cardinality: step kind, outcome, error class, queue name,
//!   status class. Never a shot, a path or an id;
//! - the standard process metrics carry the prefix too (`iom_process_cpu_seconds_total`,
//!   `iom_process_resident_memory_bytes`, …), and `iom_build_info{version,revision}` is 1.
//!
//! | series | type | labels |
//! |---|---|---|
//! | `iom_tasks_received_total` | counter | `kind` |
//! | `iom_tasks_finished_total` | counter | `kind`, `outcome` ([`OUTCOMES`]) |
//! | `iom_step_duration_seconds` | histogram | `kind`, `outcome` (`ok`/`transient`/`permanent`) |
//! | `iom_queue_wait_seconds` | histogram (publish → start) | `kind` |
//! | `iom_tasks_in_progress` | gauge | `kind` |
//! | `iom_last_success_timestamp_seconds` | gauge | `kind` |
//! | `iom_task_retries_total`, `iom_task_redeliveries_total` | counter | `kind` |
//! | `iom_tasks_dead_lettered_total` | counter | `kind`, `class` (`transient`/`permanent`/`poison`/`broker`) |
//! | `iom_bytes_read_total`, `iom_bytes_written_total`, `iom_frames_processed_total` | counter | `kind` |
//! | `iom_amqp_publish_failures_total` | counter | `reason` (`nack`/`returned`/`timeout`/`error`) |
//! | `iom_amqp_reconnects_total` | counter | — |
//! | `iom_tracker_request_duration_seconds` | histogram | `op`, `status_class` |
//! | `iom_tracker_request_errors_total` | counter | `op`, `status_class` |
//! | `iom_tractor_sync_lag_seconds` | histogram | — |
//! | `iom_queue_messages`, `iom_queue_consumers` | gauge | `queue` (+ `state="ready"`) |
//! | `iom_queue_depth_updated_timestamp_seconds` | gauge | — |
//! | `iom_build_info` | gauge | `version`, `revision` |
//!
//! Every labelled series that a dashboard or an alert reads is created at zero when
//! the registry is built, so it appears in `/metrics` before its first event (a
//! `rate()` over a series that does not exist yet is empty, not zero).
//!
//! The library records through plain functions ([`task_received`],
//! [`observe_tracker_request`], [`observe_tractor_sync_lag`], …) so that call sites
//! stay one line long; nothing here ever fails the caller.

use std::net::SocketAddr;
use std::sync::LazyLock;
use std::time::Duration;

use prometheus::{
    Encoder, Gauge, GaugeVec, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec,
    IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::error::ErrorClass;
use crate::task::StepKind;

/// Histogram buckets for every `_seconds` duration: 50 ms to 2 h.
pub const DURATION_BUCKETS: [f64; 17] = [
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0,
    3600.0, 7200.0,
];

/// Operations a tracker client reports (keep the set small: it is a label).
pub const TRACKER_OPS: [&str; 4] = ["auth", "read", "write", "upload"];

/// Status classes of a tracker request: HTTP classes, plus `network` (no answer)
/// and `timeout`.
pub const STATUS_CLASSES: [&str; 5] = ["2xx", "4xx", "5xx", "network", "timeout"];

/// Outcomes of a handled task (`iom_tasks_finished_total{outcome}`).
pub const OUTCOMES: [&str; 6] = [
    "succeeded",
    "already_done",
    "retry_scheduled",
    "dead_lettered",
    "stale",
    "unsettled",
];

/// All the series of this process.
pub struct Metrics {
    /// The registry `/metrics` serves.
    pub registry: Registry,
    received: IntCounterVec,
    finished: IntCounterVec,
    step_duration: HistogramVec,
    queue_wait: HistogramVec,
    in_progress: IntGaugeVec,
    last_success: GaugeVec,
    retries: IntCounterVec,
    redeliveries: IntCounterVec,
    dead_lettered: IntCounterVec,
    bytes_read: IntCounterVec,
    bytes_written: IntCounterVec,
    frames: IntCounterVec,
    publish_failures: IntCounterVec,
    reconnects: IntCounter,
    tracker_duration: HistogramVec,
    tracker_errors: IntCounterVec,
    tractor_lag: Histogram,
    queue_messages: IntGaugeVec,
    queue_consumers: IntGaugeVec,
    queue_depth_updated: Gauge,
}

fn counter(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(c.clone())).expect("unique metric");
    c
}

fn histogram(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> HistogramVec {
    let h = HistogramVec::new(
        HistogramOpts::new(name, help).buckets(DURATION_BUCKETS.to_vec()),
        labels,
    )
    .expect("valid metric");
    reg.register(Box::new(h.clone())).expect("unique metric");
    h
}

fn gauge(reg: &Registry, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
    let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
    reg.register(Box::new(g.clone())).expect("unique metric");
    g
}

impl Metrics {
    fn new() -> Metrics {
        let reg = Registry::new();
        #[cfg(target_os = "linux")]
        {
            let pc = prometheus::process_collector::ProcessCollector::new(
                std::process::id() as i32,
                "iom",
            );
            let _ = reg.register(Box::new(pc));
        }
        let build_info = GaugeVec::new(
            Opts::new(
                "iom_build_info",
                "Always 1; the version (and git revision, IOM_GIT_REVISION at build time) of this binary",
            ),
            &["version", "revision"],
        )
        .expect("valid metric");
        reg.register(Box::new(build_info.clone()))
            .expect("unique metric");
        build_info
            .with_label_values(&[
                env!("CARGO_PKG_VERSION"),
                option_env!("IOM_GIT_REVISION").unwrap_or("unknown"),
            ])
            .set(1.0);
        let tractor_lag = Histogram::with_opts(
            HistogramOpts::new(
                "iom_tractor_sync_lag_seconds",
                "Delay between a task state change and its mirror in Tractor",
            )
            .buckets(DURATION_BUCKETS.to_vec()),
        )
        .expect("valid metric");
        reg.register(Box::new(tractor_lag.clone()))
            .expect("unique metric");
        let queue_depth_updated = Gauge::new(
            "iom_queue_depth_updated_timestamp_seconds",
            "Unix time of the last queue depth reading",
        )
        .expect("valid metric");
        reg.register(Box::new(queue_depth_updated.clone()))
            .expect("unique metric");
        let m = Metrics {
            received: counter(&reg, "iom_tasks_received_total", "Task deliveries received from the broker", &["kind"]),
            finished: counter(&reg, "iom_tasks_finished_total", "Deliveries handled, by outcome", &["kind", "outcome"]),
            step_duration: histogram(&reg, "iom_step_duration_seconds", "Time a step ran, by outcome (ok, transient, permanent)", &["kind", "outcome"]),
            queue_wait: histogram(&reg, "iom_queue_wait_seconds", "Publish to start of handling (includes a retry tier's delay)", &["kind"]),
            in_progress: gauge(&reg, "iom_tasks_in_progress", "Deliveries being handled now", &["kind"]),
            last_success: {
                let g = GaugeVec::new(Opts::new("iom_last_success_timestamp_seconds", "Unix time of the last step that succeeded (0: none since start)"), &["kind"]).expect("valid metric");
                reg.register(Box::new(g.clone())).expect("unique metric");
                g
            },
            retries: counter(&reg, "iom_task_retries_total", "Retries scheduled after a transient failure", &["kind"]),
            redeliveries: counter(&reg, "iom_task_redeliveries_total", "Deliveries the broker marked as redelivered", &["kind"]),
            dead_lettered: counter(&reg, "iom_tasks_dead_lettered_total", "Tasks sent to the dead-letter queue, by error class (transient = attempts exhausted, permanent, poison, broker = dead-lettered by RabbitMQ at its delivery limit)", &["kind", "class"]),
            bytes_read: counter(&reg, "iom_bytes_read_total", "Bytes read by steps", &["kind"]),
            bytes_written: counter(&reg, "iom_bytes_written_total", "Bytes written by steps", &["kind"]),
            frames: counter(&reg, "iom_frames_processed_total", "Frames processed by steps", &["kind"]),
            publish_failures: counter(&reg, "iom_amqp_publish_failures_total", "Publishes the broker did not confirm (nack, returned, timeout, error)", &["reason"]),
            reconnects: {
                let c = IntCounter::new("iom_amqp_reconnects_total", "Reconnections to the broker after a lost connection").expect("valid metric");
                reg.register(Box::new(c.clone())).expect("unique metric");
                c
            },
            tracker_duration: histogram(&reg, "iom_tracker_request_duration_seconds", "Tracker (ShotGrid) request latency, by operation and status class", &["op", "status_class"]),
            tracker_errors: counter(&reg, "iom_tracker_request_errors_total", "Tracker (ShotGrid) requests that failed, by status class", &["op", "status_class"]),
            tractor_lag,
            queue_messages: gauge(&reg, "iom_queue_messages", "Messages in each iom queue (state=ready)", &["queue", "state"]),
            queue_consumers: gauge(&reg, "iom_queue_consumers", "Consumers of each iom queue", &["queue"]),
            queue_depth_updated,
            registry: reg,
        };
        for k in StepKind::ALL {
            let kind = k.as_str();
            m.received.with_label_values(&[kind]);
            for o in OUTCOMES {
                m.finished.with_label_values(&[kind, o]);
            }
            for o in ["ok", "transient", "permanent"] {
                m.step_duration.with_label_values(&[kind, o]);
            }
            m.queue_wait.with_label_values(&[kind]);
            m.in_progress.with_label_values(&[kind]);
            m.last_success.with_label_values(&[kind]);
            m.retries.with_label_values(&[kind]);
            m.redeliveries.with_label_values(&[kind]);
            for c in ["transient", "permanent", "poison", "broker"] {
                m.dead_lettered.with_label_values(&[kind, c]);
            }
            m.bytes_read.with_label_values(&[kind]);
            m.bytes_written.with_label_values(&[kind]);
            m.frames.with_label_values(&[kind]);
        }
        m.dead_lettered.with_label_values(&["unknown", "poison"]);
        for r in ["nack", "returned", "timeout", "error"] {
            m.publish_failures.with_label_values(&[r]);
        }
        for op in TRACKER_OPS {
            for s in STATUS_CLASSES {
                m.tracker_duration.with_label_values(&[op, s]);
                if s != "2xx" {
                    m.tracker_errors.with_label_values(&[op, s]);
                }
            }
        }
        m
    }
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics (created on first use).
pub fn metrics() -> &'static Metrics {
    &METRICS
}

/// The Prometheus text exposition of every series.
pub fn render() -> String {
    let mut buf = Vec::new();
    let _ = TextEncoder::new().encode(&metrics().registry.gather(), &mut buf);
    String::from_utf8(buf).unwrap_or_default()
}

fn class_label(c: ErrorClass) -> &'static str {
    match c {
        ErrorClass::Transient => "transient",
        ErrorClass::Permanent => "permanent",
    }
}

/// Marks a delivery of `kind` as received and in progress until the returned
/// guard drops. `enqueued_at_ms` (Unix ms, from the `enqueued_at` header) feeds
/// the queue-wait histogram.
pub fn task_received(kind: StepKind, redelivered: bool, enqueued_at_ms: Option<i64>) -> InProgress {
    let m = metrics();
    let k = kind.as_str();
    m.received.with_label_values(&[k]).inc();
    if redelivered {
        m.redeliveries.with_label_values(&[k]).inc();
    }
    if let Some(at) = enqueued_at_ms {
        let wait = (crate::queue::unix_ms_now() - at).max(0) as f64 / 1000.0;
        m.queue_wait.with_label_values(&[k]).observe(wait);
    }
    m.in_progress.with_label_values(&[k]).inc();
    InProgress(kind)
}

/// Decrements `iom_tasks_in_progress` when dropped (also on panic or abort).
pub struct InProgress(StepKind);

impl Drop for InProgress {
    fn drop(&mut self) {
        metrics()
            .in_progress
            .with_label_values(&[self.0.as_str()])
            .dec();
    }
}

/// Counts a handled delivery by outcome (one of [`OUTCOMES`]).
pub fn task_finished(kind: StepKind, outcome: &str) {
    let m = metrics();
    m.finished
        .with_label_values(&[kind.as_str(), outcome])
        .inc();
    if outcome == "succeeded" {
        m.last_success
            .with_label_values(&[kind.as_str()])
            .set(crate::queue::unix_ms_now() as f64 / 1000.0);
    }
}

/// The [`OUTCOMES`] label of a runtime outcome.
pub fn outcome_label(o: &crate::runtime::Outcome) -> &'static str {
    use crate::runtime::Outcome;
    match o {
        Outcome::Succeeded => "succeeded",
        Outcome::AlreadyDone => "already_done",
        Outcome::RetryScheduled(_) => "retry_scheduled",
        Outcome::DeadLettered(_) => "dead_lettered",
        Outcome::Stale => "stale",
    }
}

/// A retry of a `kind` task was published to a retry tier.
pub fn retry_scheduled(kind: StepKind) {
    metrics().retries.with_label_values(&[kind.as_str()]).inc();
}

/// A `kind` task was published to the dead-letter queue (`class` = why: a
/// permanent error, or transient attempts exhausted).
pub fn dead_lettered(kind: StepKind, class: ErrorClass) {
    metrics()
        .dead_lettered
        .with_label_values(&[kind.as_str(), class_label(class)])
        .inc();
}

/// RabbitMQ dead-lettered a `kind` task itself (its delivery limit: a crash loop);
/// counted by the worker that recorded the failure.
pub fn broker_dead_lettered(kind: StepKind) {
    metrics()
        .dead_lettered
        .with_label_values(&[kind.as_str(), "broker"])
        .inc();
}

/// A message that could not be decoded was dead-lettered.
pub fn poison_dead_lettered(kind: Option<StepKind>) {
    metrics()
        .dead_lettered
        .with_label_values(&[kind.map(|k| k.as_str()).unwrap_or("unknown"), "poison"])
        .inc();
}

/// How long a step ran; `failed` is the class of its error, `None` when it succeeded.
pub fn observe_step(kind: StepKind, failed: Option<ErrorClass>, took: Duration) {
    metrics()
        .step_duration
        .with_label_values(&[kind.as_str(), failed.map(class_label).unwrap_or("ok")])
        .observe(took.as_secs_f64());
}

/// Bytes read and written and frames processed by a step of `kind`.
pub fn observe_io(kind: StepKind, read: u64, written: u64, frames: u64) {
    let m = metrics();
    let k = kind.as_str();
    m.bytes_read.with_label_values(&[k]).inc_by(read);
    m.bytes_written.with_label_values(&[k]).inc_by(written);
    m.frames.with_label_values(&[k]).inc_by(frames);
}

/// A publish the broker did not confirm: `nack`, `returned`, `timeout` or `error`.
pub fn publish_failed(reason: &'static str) {
    metrics()
        .publish_failures
        .with_label_values(&[reason])
        .inc();
}

/// A reconnection to the broker.
pub fn reconnected() {
    metrics().reconnects.inc();
}

/// The status class of an HTTP status: `2xx`, `4xx`, `5xx` (1xx/3xx count as 2xx/4xx).
pub fn status_class(status: u16) -> &'static str {
    match status {
        500.. => "5xx",
        400..=499 => "4xx",
        300..=399 => "4xx",
        _ => "2xx",
    }
}

/// Hook for tracker clients (ShotGrid): one finished request. `op` is one of
/// [`TRACKER_OPS`]; `status_class` one of [`STATUS_CLASSES`] (see
/// [`status_class`]). Anything but `2xx` also counts as an error.
pub fn observe_tracker_request(op: &str, status_class: &str, secs: f64) {
    let m = metrics();
    m.tracker_duration
        .with_label_values(&[op, status_class])
        .observe(secs);
    if status_class != "2xx" {
        m.tracker_errors
            .with_label_values(&[op, status_class])
            .inc();
    }
}

/// Hook for the Tractor bridge: seconds between a task state change (its event's
/// time) and the moment the bridge mirrored it into Tractor.
pub fn observe_tractor_sync_lag(secs: f64) {
    metrics().tractor_lag.observe(secs.max(0.0));
}

/// Sets `iom_queue_messages{queue,state="ready"}` and `iom_queue_consumers{queue}`
/// from [`crate::queue::Broker::queue_depths`] output `(queue, ready, consumers)`.
pub fn set_queue_depths(depths: &[(String, u32, u32)]) {
    let m = metrics();
    for (q, ready, consumers) in depths {
        m.queue_messages
            .with_label_values(&[q.as_str(), "ready"])
            .set(i64::from(*ready));
        m.queue_consumers
            .with_label_values(&[q.as_str()])
            .set(i64::from(*consumers));
    }
    m.queue_depth_updated
        .set(crate::queue::unix_ms_now() as f64 / 1000.0);
}

/// Reads every iom queue's depth and consumers into the metrics
/// ([`set_queue_depths`]) every `every`, on a connection of its own, until the
/// future is dropped. A failed reading is logged and the connection opened again
/// at the next tick: the depth reader never stops the process it runs in.
pub async fn poll_queue_depths(cfg: crate::queue::BrokerConfig, every: Duration) {
    let mut broker: Option<crate::queue::Broker> = None;
    loop {
        if broker.is_none() {
            match crate::queue::Broker::connect(&cfg).await {
                Ok(b) => broker = Some(b),
                Err(e) => tracing::warn!(error = %e, "queue depths: cannot connect"),
            }
        }
        if let Some(b) = &broker {
            match b.queue_depths().await {
                Ok(d) => set_queue_depths(&d),
                Err(e) => {
                    tracing::warn!(error = %e, "could not read queue depths");
                    if let Some(b) = broker.take() {
                        b.close().await;
                    }
                }
            }
        }
        tokio::time::sleep(every).await;
    }
}

/// `/metrics` server errors.
#[derive(Debug, thiserror::Error)]
pub enum MetricsError {
    /// The listen address could not be bound.
    #[error("cannot listen for /metrics on {addr}: {source}; pick another metrics.listen or free the port")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
    /// The listen address does not parse.
    #[error("metrics.listen {0:?} is not an address like 127.0.0.1:9464")]
    BadAddress(String),
}

impl crate::error::Classify for MetricsError {
    fn class(&self) -> ErrorClass {
        ErrorClass::Permanent
    }
}

/// Binds `listen` and serves `GET /metrics` (text exposition 0.0.4) on the
/// current tokio runtime until the process ends. Returns the bound address
/// (useful with port 0).
pub async fn serve(listen: &str) -> Result<SocketAddr, MetricsError> {
    let addr: SocketAddr = listen
        .parse()
        .map_err(|_| MetricsError::BadAddress(listen.to_string()))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| MetricsError::Bind {
            addr: listen.to_string(),
            source,
        })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(|| async {
            (
                [(
                    axum::http::header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                render(),
            )
        }),
    );
    tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::warn!(error = %e, "the /metrics server stopped");
        }
    });
    tracing::info!(%bound, "serving /metrics");
    Ok(bound)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_conventions() {
        task_finished(StepKind::Copy, "succeeded");
        let families = metrics().registry.gather();
        assert!(families.len() >= 20, "{} families", families.len());
        for f in &families {
            let name = f.name();
            assert!(name.starts_with("iom_"), "{name} lacks the iom_ prefix");
            if f.get_field_type() == prometheus::proto::MetricType::COUNTER {
                assert!(
                    name.ends_with("_total"),
                    "counter {name} must end in _total"
                );
            }
            if f.get_field_type() == prometheus::proto::MetricType::HISTOGRAM {
                assert!(
                    name.ends_with("_seconds"),
                    "histogram {name} must be _seconds"
                );
            }
            for m in f.get_metric() {
                for l in m.get_label() {
                    assert!(
                        [
                            "kind",
                            "outcome",
                            "class",
                            "reason",
                            "op",
                            "status_class",
                            "queue",
                            "state",
                            "version",
                            "revision"
                        ]
                        .contains(&l.name()),
                        "{name} has a label {} outside the low-cardinality set",
                        l.name()
                    );
                }
            }
        }
    }

    #[test]
    fn hooks_move_their_series() {
        let before = render();
        assert!(before.contains("iom_tractor_sync_lag_seconds_count"));
        assert!(
            before.contains("iom_tracker_request_errors_total{op=\"write\",status_class=\"5xx\"}")
        );
        observe_tracker_request("write", status_class(503), 0.2);
        observe_tractor_sync_lag(3.0);
        set_queue_depths(&[("t.tasks.copy".into(), 7, 0)]);
        let after = render();
        assert!(after.contains("iom_queue_messages{queue=\"t.tasks.copy\",state=\"ready\"} 7"));
        assert!(after.contains("iom_queue_consumers{queue=\"t.tasks.copy\"} 0"));
        let errs = metrics()
            .tracker_errors
            .with_label_values(&["write", "5xx"])
            .get();
        assert!(errs >= 1);
        assert!(metrics().tractor_lag.get_sample_count() >= 1);
        assert_eq!(status_class(201), "2xx");
        assert_eq!(status_class(404), "4xx");
        assert_eq!(status_class(502), "5xx");
    }

    #[test]
    fn in_progress_guard_goes_back_down() {
        let g = metrics().in_progress.with_label_values(&["cleanup"]);
        let base = g.get();
        let guard = task_received(
            StepKind::Cleanup,
            true,
            Some(crate::queue::unix_ms_now() - 1500),
        );
        assert_eq!(g.get(), base + 1);
        drop(guard);
        assert_eq!(g.get(), base);
        let wait = metrics().queue_wait.with_label_values(&["cleanup"]);
        assert!(wait.get_sample_sum() >= 1.4);
    }
}
