//! Tracing for the binaries: logs (text or JSON) and, when configured, OpenTelemetry
//! spans exported over OTLP/HTTP; W3C trace context carried in AMQP headers.
//!
//! - Export is off by default. It turns on when `telemetry.otlp_endpoint` is set or
//!   when the standard `OTEL_EXPORTER_OTLP_ENDPOINT` /
//!   `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` variable is (the exporter reads the other
//!   `OTEL_*` variables itself: headers, timeout, protocol). `OTEL_SDK_DISABLED=true`
//!   turns it off.
//! - Publishing a task ([`crate::queue::Publisher::publish_task`]) runs in a
//!   producer span named `<queue> publish` and writes `traceparent` (and
//!   `tracestate`) into the message headers; the worker handles each delivery in a
//!   consumer span named `<queue> process` whose parent is read back from those
//!   headers ([`consumer_span`]). Children published while handling carry the
//!   consumer span's context, so one trace spans submit → every step on every node
//!   → register. Span names, kinds and attributes follow the OpenTelemetry messaging
//!   semantic conventions (`messaging.system`, `messaging.destination.name`,
//!   `messaging.operation.type`, `messaging.message.id`).
//! - JSON logs carry the current span's fields; the consumer span records its
//!   `trace_id`, so every log line of a task names its trace.
//! - [`Telemetry::shutdown`] (also on drop) flushes the last spans: the OTLP
//!   exporter batches on its own thread and loses them otherwise.

use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry::Context;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use lapin::types::{AMQPValue, FieldTable};

use crate::config::TelemetrySettings;

/// Trace export errors.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// The OTLP exporter could not be built (bad endpoint).
    #[error("cannot build the OTLP trace exporter for {endpoint:?}: {reason}; check telemetry.otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT")]
    Exporter {
        /// The endpoint.
        endpoint: String,
        /// Why.
        reason: String,
    },
}

impl crate::error::Classify for TelemetryError {
    fn class(&self) -> crate::error::ErrorClass {
        crate::error::ErrorClass::Permanent
    }
}

/// The OTLP endpoint in force: settings first, then the standard variables; `None`
/// means export is off.
pub fn endpoint(settings: &TelemetrySettings) -> Option<String> {
    if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true")) {
        return None;
    }
    if !settings.otlp_endpoint.trim().is_empty() {
        return Some(settings.otlp_endpoint.trim().to_string());
    }
    [
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_ENDPOINT",
    ]
    .iter()
    .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
}

/// Keeps the tracer provider alive; flushes and shuts it down on [`Telemetry::shutdown`]
/// or drop.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.provider.is_some()
    }

    /// Flushes the last spans and stops the exporter. Idempotent.
    pub fn shutdown(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            if let Err(e) = p.shutdown() {
                eprintln!("iom: trace exporter shutdown: {e}");
            }
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Installs the global subscriber: `RUST_LOG` (else `level`) filter, text or JSON
/// logs on stderr, and the OpenTelemetry layer when export is on. `service` is the
/// default `service.name` (`OTEL_SERVICE_NAME` and then `settings.service_name`
/// win). Safe to call twice: the second subscriber is ignored.
pub fn init(
    level: &str,
    json: bool,
    settings: &TelemetrySettings,
    service: &str,
) -> Result<Telemetry, TelemetryError> {
    let provider = match endpoint(settings) {
        None => None,
        Some(ep) => {
            use opentelemetry_otlp::WithExportConfig;
            let exporter = opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(traces_url(&ep))
                .build()
                .map_err(|e| TelemetryError::Exporter {
                    endpoint: ep.clone(),
                    reason: e.to_string(),
                })?;
            let name = std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|s| !s.is_empty())
                .unwrap_or_else(|| {
                    if settings.service_name.is_empty() || settings.service_name == "iom" {
                        service.to_string()
                    } else {
                        settings.service_name.clone()
                    }
                });
            let resource = opentelemetry_sdk::Resource::builder()
                .with_service_name(name)
                .with_attribute(opentelemetry::KeyValue::new(
                    "service.version",
                    env!("CARGO_PKG_VERSION"),
                ))
                .build();
            Some(
                SdkTracerProvider::builder()
                    .with_batch_exporter(exporter)
                    .with_resource(resource)
                    .build(),
            )
        }
    };
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    type L = Box<
        dyn Layer<tracing_subscriber::layer::Layered<EnvFilter, tracing_subscriber::Registry>>
            + Send
            + Sync,
    >;
    let mut layers: Vec<L> = Vec::new();
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_target(false);
    layers.push(if json {
        fmt.json().with_current_span(true).boxed()
    } else {
        fmt.compact().boxed()
    });
    if let Some(p) = &provider {
        let tracer = p.tracer("iom");
        layers.push(tracing_opentelemetry::layer().with_tracer(tracer).boxed());
    }
    let _ = tracing_subscriber::registry()
        .with(filter)
        .with(layers)
        .try_init();
    Ok(Telemetry { provider })
}

/// OTLP/HTTP wants the full traces URL when the endpoint is given in code.
fn traces_url(ep: &str) -> String {
    let ep = ep.trim_end_matches('/');
    if ep.ends_with("/v1/traces") {
        ep.to_string()
    } else {
        format!("{ep}/v1/traces")
    }
}

struct HeaderVec<'a>(&'a mut Vec<(String, String)>);

impl Injector for HeaderVec<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.push((key.to_string(), value));
    }
}

struct HeaderTable<'a>(&'a FieldTable);

impl Extractor for HeaderTable<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        match self.0.inner().get(key)? {
            AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok(),
            AMQPValue::ShortString(s) => Some(s.as_str()),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        self.0.inner().keys().map(|k| k.as_str()).collect()
    }
}

/// The W3C trace context of `span` as header pairs (`traceparent`, and `tracestate`
/// when there is one); empty when the span is not exported.
pub fn inject(span: &Span) -> Vec<(String, String)> {
    let cx = span.context();
    let mut out = Vec::new();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut HeaderVec(&mut out));
    }
    out
}

/// The trace context carried by AMQP `headers` (empty context when none).
pub fn extract(headers: Option<&FieldTable>) -> Context {
    match headers {
        Some(h) => TraceContextPropagator::new().extract(&HeaderTable(h)),
        None => Context::new(),
    }
}

/// The producer span of a task publish to `queue` (semantic conventions:
/// `<destination> publish`, kind producer).
pub fn producer_span(queue: &str, routing_key: &str, message_id: &str) -> Span {
    tracing::info_span!(
        "publish",
        otel.name = format!("{queue} publish"),
        otel.kind = "producer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "send",
        messaging.destination.name = queue,
        messaging.rabbitmq.destination.routing_key = routing_key,
        messaging.message.id = message_id,
    )
}

/// The consumer span of one delivery from `queue`, child of the trace context in
/// its headers; records `trace_id` for the JSON logs. Handle the delivery inside it
/// (`.instrument(span)`) so that children published meanwhile join the trace.
pub fn consumer_span(queue: &str, message_id: Option<&str>, headers: Option<&FieldTable>) -> Span {
    let span = tracing::info_span!(
        "process",
        otel.name = format!("{queue} process"),
        otel.kind = "consumer",
        messaging.system = "rabbitmq",
        messaging.operation.type = "process",
        messaging.destination.name = queue,
        messaging.message.id = message_id.unwrap_or(""),
        trace_id = tracing::field::Empty,
    );
    let parent = extract(headers);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
    let sc = span.context().span().span_context().clone();
    if sc.is_valid() {
        span.record("trace_id", sc.trace_id().to_string());
    }
    span
}

/// `enqueued_at` (Unix ms) from task headers, for the queue-wait histogram.
pub fn enqueued_at_ms(headers: Option<&FieldTable>) -> Option<i64> {
    match headers?.inner().get("enqueued_at")? {
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoint_off_by_default_and_settings_win() {
        let mut s = TelemetrySettings {
            otlp_endpoint: String::new(),
            service_name: "iom".into(),
        };
        if std::env::var("OTEL_EXPORTER_OTLP_ENDPOINT").is_err()
            && std::env::var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_err()
        {
            assert_eq!(endpoint(&s), None);
        }
        s.otlp_endpoint = "http://127.0.0.1:4318".into();
        assert_eq!(endpoint(&s).as_deref(), Some("http://127.0.0.1:4318"));
        assert_eq!(traces_url("http://h:4318/"), "http://h:4318/v1/traces");
        assert_eq!(
            traces_url("http://h:4318/v1/traces"),
            "http://h:4318/v1/traces"
        );
    }

    #[test]
    fn extract_reads_a_traceparent_header() {
        let mut h = FieldTable::default();
        h.insert(
            "traceparent".into(),
            AMQPValue::LongString("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
        );
        let cx = extract(Some(&h));
        let sc = cx.span().span_context().clone();
        assert!(sc.is_valid());
        assert_eq!(
            sc.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert!(!extract(None).span().span_context().is_valid());
    }
}
