//! The only module that talks to RabbitMQ (lapin 4): topology, confirmed
//! publishing, consuming, and the dead-letter queue operations.
//!
//! # Topology (declared idempotently on every start, explicit arguments only)
//! | object | type | arguments / binding |
//! |---|---|---|
//! | `<p>.tasks` | direct exchange, durable | routing key = step kind |
//! | `<p>.tasks.<kind>` | quorum queue | `x-delivery-limit`, `x-dead-letter-exchange=<p>.dead`, `x-dead-letter-strategy=at-least-once`, `x-overflow=reject-publish`; bound with key `<kind>` |
//! | `<p>.retry` | **headers** exchange, durable | tier chosen by the `iom-retry-tier` header |
//! | `<p>.retry.<secs>s` | quorum queue, no consumers | `x-message-ttl`, `x-dead-letter-exchange=<p>.tasks`, at-least-once, reject-publish; bound with `x-match=all, iom-retry-tier=<secs>s` |
//! | `<p>.dead` | fanout exchange, durable | every dead letter, whatever its routing key |
//! | `<p>.dead` | quorum queue | no TTL; `x-delivery-limit` set very high so browsing never drops a dead letter on 4.x |
//! | `<p>.dead.notices` | quorum queue | a copy of every dead letter for the workers, who record a failure for the ones the *broker* dead-lettered (delivery limit); `x-max-length` (drop-head), modest `x-delivery-limit` |
//! | `<p>.events` | topic exchange, durable | task state changes |
//!
//! Why the retry exchange is a headers exchange: dead-lettering keeps the
//! message's original routing key (unless the queue sets
//! `x-dead-letter-routing-key`). A retry copy is therefore published with routing
//! key = step kind, so that when its tier's TTL expires the broker dead-letters it
//! to `<p>.tasks` and the kind routes it back to the right work queue. The tier is
//! picked by a header instead of the routing key. (The header has no `x-` prefix on
//! purpose: headers exchanges ignore binding arguments that start with `x-`.)
//!
//! # Broker requirements
//! At-least-once dead-lettering needs RabbitMQ ≥ 3.10 with the `stream_queue`
//! feature flag enabled (`rabbitmqctl enable_feature_flag stream_queue`; always on
//! from 3.11). Without it 3.10 silently falls back to at-most-once dead-lettering.
//! [`Broker::declare_topology`] cannot check flags without administrator rights, so
//! operators enable it once per cluster.
//!
//! # Reliability rules
//! - Every publish is persistent, `mandatory` (except events) and waits for the
//!   broker's confirm under a timeout; a nack, a return (unroutable) or a timeout is
//!   an error and the message counts as unsent (lapin has been seen to leave a
//!   confirm future pending for ever, so no wait is unbounded).
//! - Consumers use manual acks and per-consumer prefetch (`basic.qos`
//!   `global=false`: global QoS on a quorum queue is a channel error).
//! - Recovery is explicit: lapin's auto-recovery is not enabled. When the channel or
//!   connection dies, [`TaskConsumer::next`] returns `None`, publishes fail fast,
//!   and the caller reconnects ([`Broker::connect_with_retry`]), redeclares and
//!   re-consumes.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use futures_util::stream::{self, Stream, StreamExt};
use lapin::message::Delivery;
use lapin::options::{
    BasicAckOptions, BasicCancelOptions, BasicConsumeOptions, BasicGetOptions, BasicNackOptions,
    BasicPublishOptions, BasicQosOptions, BasicRejectOptions, ConfirmSelectOptions,
    ExchangeDeclareOptions, QueueBindOptions, QueueDeclareOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPHardError, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use lapin::uri::AMQPUri;
use lapin::{
    BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ErrorKind,
    ExchangeKind,
};

use crate::config::{BrokerSettings, Secret};
use crate::error::{Classify, ErrorClass};
use crate::task::{StepKind, TaskMessage};

/// Header naming the retry tier on the headers exchange `<p>.retry`.
pub const RETRY_TIER_HEADER: &str = "iom-retry-tier";
/// Why a message was retried or dead-lettered.
pub const REASON_HEADER: &str = "x-iom-reason";
/// `transient` / `permanent` / `poison` … of a dead letter.
pub const CLASS_HEADER: &str = "x-iom-error-class";
/// The worker that dead-lettered a message.
pub const WORKER_HEADER: &str = "x-iom-worker";
/// When a message was dead-lettered (RFC 3339, UTC).
pub const FAILED_AT_HEADER: &str = "x-iom-failed-at";
/// Set on messages that `iom dlq requeue` moved back to work.
pub const REQUEUED_HEADER: &str = "x-iom-requeued";

/// `x-delivery-limit` of the DLQ. Browsing the DLQ returns messages with
/// `nack(requeue)`, which raises their delivery count; 4.x applies a default limit
/// of 20 and the DLQ has no dead-letter target, so the limit is set explicitly and
/// high enough that browsing never drops a dead letter.
const DLQ_DELIVERY_LIMIT: i32 = 1_000_000;

/// `x-delivery-limit` of `<p>.dead.notices`. A notice is returned only when the
/// work folder was unreachable (a worker waits a few seconds before returning
/// it) or its worker died; past the limit the broker drops it (the dead letter
/// itself stays in `<p>.dead`).
const NOTICE_DELIVERY_LIMIT: i32 = 100;

/// `x-max-length` of `<p>.dead.notices` (oldest dropped first), so a farm that
/// runs no worker for a long time does not grow it without bound.
const NOTICE_MAX_LENGTH: i32 = 100_000;

/// Heartbeat asked for when the URL does not set one: a silently dead TCP
/// connection is noticed within about two intervals.
const DEFAULT_HEARTBEAT_SECS: u16 = 30;

/// How long a connection attempt may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Longest TTL a retry tier may have (`x-message-ttl` is sent as a 32-bit
/// millisecond count).
const MAX_TIER: Duration = Duration::from_secs(i32::MAX as u64 / 1000);

/// Why a broker operation failed.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker settings are unusable.
    #[error("broker settings: {message}")]
    Config {
        /// What is wrong and what to set.
        message: String,
    },
    /// The connection could not be opened.
    #[error("cannot connect to the broker at {url_redacted}: {source}{}", connect_hint(.source))]
    Connect {
        /// The URL, password removed.
        url_redacted: String,
        /// lapin's error.
        source: Box<lapin::Error>,
    },
    /// The connection attempt did not finish in time.
    #[error("cannot connect to the broker at {url_redacted}: no answer within {after:?}; check that RabbitMQ runs and the host and port are right")]
    ConnectTimeout {
        /// The URL, password removed.
        url_redacted: String,
        /// The time waited.
        after: Duration,
    },
    /// An exchange, queue or binding could not be declared.
    #[error("cannot declare {what} on vhost {vhost}: {source}{}", declare_hint(.source, .what, .vhost))]
    Declare {
        /// `queue iom.tasks.copy`, `exchange iom.retry` …
        what: String,
        /// The virtual host.
        vhost: String,
        /// lapin's error.
        source: Box<lapin::Error>,
    },
    /// A channel operation (open, confirm mode, QoS, get) failed.
    #[error("broker channel error during {what}: {source}")]
    Channel {
        /// The operation.
        what: String,
        /// lapin's error.
        source: Box<lapin::Error>,
    },
    /// A broker operation did not answer in time.
    #[error(
        "the broker did not answer {what} within {after:?}; the connection may be blocked or dead"
    )]
    Timeout {
        /// The operation.
        what: String,
        /// The time waited.
        after: Duration,
    },
    /// The publish itself failed (channel or connection closed, unknown exchange …).
    #[error("publish to exchange {exchange:?} with routing key {routing_key:?} failed: {source}")]
    Publish {
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// lapin's error.
        source: Box<lapin::Error>,
    },
    /// The broker refused the message (`basic.nack`, an internal broker error).
    #[error("the broker nacked the message to exchange {exchange:?} with routing key {routing_key:?}; it was not stored, publish it again")]
    Nacked {
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
    },
    /// A `mandatory` message reached no queue and came back.
    #[error("message to exchange {exchange:?} with routing key {routing_key:?} is unroutable ({reply}); the topology is missing a queue or binding: restart a worker or the submitter to redeclare it")]
    Returned {
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// The broker's reply code and text.
        reply: String,
    },
    /// No confirm came back in time; the message counts as unsent.
    #[error("no publisher confirm for the message to exchange {exchange:?} with routing key {routing_key:?} within {after:?}; it counts as unsent and must be published again")]
    ConfirmTimeout {
        /// Exchange.
        exchange: String,
        /// Routing key.
        routing_key: String,
        /// The time waited.
        after: Duration,
    },
    /// A consumer could not be started or failed.
    #[error("consuming from {queue} failed: {source}")]
    Consume {
        /// The queue(s).
        queue: String,
        /// lapin's error.
        source: Box<lapin::Error>,
    },
    /// An ack/nack/reject could not be sent; the broker will redeliver the message.
    #[error("cannot {what} the delivery from {queue}: {reason}; the broker will redeliver it")]
    Ack {
        /// `ack`, `nack` or `reject`.
        what: &'static str,
        /// The queue (routing key) of the delivery.
        queue: String,
        /// Why.
        reason: String,
    },
    /// A name or header does not fit AMQP's limits.
    #[error("invalid message: {message}")]
    Invalid {
        /// What is wrong.
        message: String,
    },
}

fn connect_hint(e: &lapin::Error) -> &'static str {
    match amqp_error(e) {
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => {
            "; check the user name in broker.url and the password (broker.password)"
        }
        Some(AMQPErrorKind::Hard(AMQPHardError::NOTALLOWED | AMQPHardError::INVALIDPATH)) => {
            "; the virtual host does not exist or the user has no permission on it (rabbitmqctl set_permissions)"
        }
        _ if e.is_io_error() => "; check that RabbitMQ runs and the host and port are right",
        _ => "",
    }
}

fn declare_hint(e: &lapin::Error, what: &str, vhost: &str) -> String {
    match amqp_error(e) {
        Some(AMQPErrorKind::Soft(AMQPSoftError::PRECONDITIONFAILED)) => {
            let name = what.split_whitespace().last().unwrap_or(what);
            let delete = if what.starts_with("queue") {
                format!("rabbitmqctl delete_queue -p {vhost} {name}")
            } else {
                format!("delete exchange {name} (management UI or rabbitmqadmin)")
            };
            format!(
                "; {what} already exists with another type or other arguments: \
                 move its messages away and delete it ({delete}) so it is redeclared, \
                 or change the broker settings (delivery_limit, retry_tiers_secs, prefix) to match it"
            )
        }
        Some(AMQPErrorKind::Soft(AMQPSoftError::ACCESSREFUSED)) => format!(
            "; the user needs configure permission on {what} (rabbitmqctl set_permissions -p {vhost})"
        ),
        _ => String::new(),
    }
}

/// The AMQP error inside a lapin error, if any.
fn amqp_error(e: &lapin::Error) -> Option<&AMQPErrorKind> {
    match e.kind() {
        ErrorKind::ProtocolError(p) => Some(p.kind()),
        _ => None,
    }
}

/// Transient vs permanent for lapin's errors: lost connections and broker-side
/// resource trouble pass; refusals, missing objects and mismatches need a person.
pub fn lapin_class(e: &lapin::Error) -> ErrorClass {
    match e.kind() {
        ErrorKind::ProtocolError(p) => match p.kind() {
            AMQPErrorKind::Soft(s) => match s {
                AMQPSoftError::NOROUTE
                | AMQPSoftError::NOCONSUMERS
                | AMQPSoftError::RESOURCELOCKED => ErrorClass::Transient,
                AMQPSoftError::ACCESSREFUSED
                | AMQPSoftError::NOTFOUND
                | AMQPSoftError::PRECONDITIONFAILED
                | AMQPSoftError::CONTENTTOOLARGE => ErrorClass::Permanent,
            },
            AMQPErrorKind::Hard(h) => match h {
                AMQPHardError::CONNECTIONFORCED
                | AMQPHardError::RESOURCEERROR
                | AMQPHardError::INTERNALERROR
                | AMQPHardError::CHANNELERROR => ErrorClass::Transient,
                AMQPHardError::INVALIDPATH
                | AMQPHardError::NOTALLOWED
                | AMQPHardError::FRAMEERROR
                | AMQPHardError::SYNTAXERROR
                | AMQPHardError::COMMANDINVALID
                | AMQPHardError::UNEXPECTEDFRAME
                | AMQPHardError::NOTIMPLEMENTED => ErrorClass::Permanent,
            },
        },
        ErrorKind::InvalidProtocolVersion(_)
        | ErrorKind::ParsingError(_)
        | ErrorKind::SerialisationError(_)
        | ErrorKind::AuthProviderError(_)
        | ErrorKind::FutureCompleted
        | ErrorKind::NoDefaultRuntime => ErrorClass::Permanent,
        // IO errors, closed channels/connections, missed heartbeats, channel limits,
        // runtime shutdown, and anything lapin adds later: a reconnect may cure them.
        _ => ErrorClass::Transient,
    }
}

impl Classify for QueueError {
    fn class(&self) -> ErrorClass {
        match self {
            QueueError::Config { .. } | QueueError::Invalid { .. } => ErrorClass::Permanent,
            QueueError::Connect { source, .. }
            | QueueError::Declare { source, .. }
            | QueueError::Channel { source, .. }
            | QueueError::Publish { source, .. }
            | QueueError::Consume { source, .. } => lapin_class(source),
            QueueError::ConnectTimeout { .. }
            | QueueError::Timeout { .. }
            | QueueError::Nacked { .. }
            | QueueError::Returned { .. }
            | QueueError::ConfirmTimeout { .. }
            | QueueError::Ack { .. } => ErrorClass::Transient,
        }
    }
}

/// Exchange and queue names under one prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Names {
    /// The prefix (`iom`).
    pub prefix: String,
}

impl Names {
    /// Names under `prefix`.
    pub fn new(prefix: impl Into<String>) -> Self {
        Names {
            prefix: prefix.into(),
        }
    }

    /// `<p>.tasks`: the work exchange (direct).
    pub fn tasks_exchange(&self) -> String {
        format!("{}.tasks", self.prefix)
    }

    /// `<p>.tasks.<kind>`: the work queue of one step kind.
    pub fn work_queue(&self, kind: StepKind) -> String {
        format!("{}.tasks.{kind}", self.prefix)
    }

    /// `<p>.retry`: the retry exchange (headers).
    pub fn retry_exchange(&self) -> String {
        format!("{}.retry", self.prefix)
    }

    /// `<p>.retry.<secs>s`: the delay queue of one tier.
    pub fn retry_queue(&self, secs: u64) -> String {
        format!("{}.retry.{}", self.prefix, tier_label(secs))
    }

    /// `<p>.dead`: the dead-letter exchange (fanout).
    pub fn dead_exchange(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// `<p>.dead`: the one dead-letter queue (the routing key keeps the kind).
    pub fn dead_queue(&self) -> String {
        format!("{}.dead", self.prefix)
    }

    /// `<p>.dead.notices`: a second queue on the dead-letter exchange, consumed by
    /// the workers (see [`Broker::notice_consumer`]).
    pub fn notice_queue(&self) -> String {
        format!("{}.dead.notices", self.prefix)
    }

    /// `<p>.events`: the events exchange (topic).
    pub fn events_exchange(&self) -> String {
        format!("{}.events", self.prefix)
    }
}

/// `30s`: a tier's label (queue suffix and header value).
fn tier_label(secs: u64) -> String {
    format!("{secs}s")
}

/// Everything needed to reach the broker.
#[derive(Debug, Clone)]
pub struct BrokerConfig {
    /// AMQP URL, may include the vhost; no password.
    pub url: String,
    /// The password, when the URL names a user.
    pub password: Option<Secret>,
    /// Exchange/queue name prefix.
    pub prefix: String,
    /// How long to wait for a publisher confirm (and any other broker answer).
    pub confirm_timeout: Duration,
    /// `x-delivery-limit` of the work queues.
    pub delivery_limit: u32,
    /// Retry delay tiers (whole seconds).
    pub retry_tiers: Vec<Duration>,
}

impl BrokerConfig {
    /// A config with the documented defaults (15 s confirms, delivery limit 5,
    /// tiers 5 s / 30 s / 2 min / 10 min / 30 min).
    pub fn new(url: impl Into<String>, prefix: impl Into<String>) -> Self {
        BrokerConfig {
            url: url.into(),
            password: None,
            prefix: prefix.into(),
            confirm_timeout: Duration::from_secs(15),
            delivery_limit: 5,
            retry_tiers: [5, 30, 120, 600, 1800]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
        }
    }

    /// From the `broker:` settings. Resolves the password (only when the URL names
    /// a user) and checks every value; the password is never logged or printed.
    pub fn from_settings(b: &BrokerSettings) -> Result<Self, QueueError> {
        let url = b.url.trim();
        if url.is_empty() {
            return Err(QueueError::Config {
                message: "broker.url is empty: no broker is configured (embedded mode); set broker.url or IOM__BROKER__URL".into(),
            });
        }
        let uri: AMQPUri = url.parse().map_err(|e: String| QueueError::Config {
            message: format!("broker.url {} is not an AMQP URL: {e}", redact_url(url)),
        })?;
        if url_has_password(url) {
            return Err(QueueError::Config {
                message: format!(
                    "broker.url {} contains a password; remove it from the URL and provide it through broker.password (e.g. IOM_BROKER_PASSWORD)",
                    redact_url(url)
                ),
            });
        }
        let password = if url_has_user(url) {
            let secret = b
                .password
                .resolve(&format!(
                    "broker password for user {}",
                    uri.authority.userinfo.username
                ))
                .map_err(|e| QueueError::Config {
                    message: e.to_string(),
                })?;
            Some(secret)
        } else {
            None
        };
        let cfg = BrokerConfig {
            url: url.to_string(),
            password,
            prefix: b.prefix.clone(),
            confirm_timeout: Duration::from_secs(b.confirm_timeout_secs),
            delivery_limit: b.delivery_limit,
            retry_tiers: b
                .retry_tiers_secs
                .iter()
                .copied()
                .map(Duration::from_secs)
                .collect(),
        };
        cfg.validate()?;
        Ok(cfg)
    }

    /// The names under this config's prefix.
    pub fn names(&self) -> Names {
        Names::new(self.prefix.clone())
    }

    /// The URL without any password.
    pub fn url_redacted(&self) -> String {
        redact_url(&self.url)
    }

    /// Checks the values that the broker would otherwise refuse obscurely.
    pub fn validate(&self) -> Result<(), QueueError> {
        let bad = |message: String| Err(QueueError::Config { message });
        let p = &self.prefix;
        if p.is_empty()
            || p.len() > 100
            || !p
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        {
            return bad(format!(
                "broker.prefix {p:?} must be 1-100 characters of letters, digits, '.', '-' or '_'"
            ));
        }
        if self.confirm_timeout.is_zero() {
            return bad("broker.confirm_timeout_secs must be at least 1".into());
        }
        if self.delivery_limit == 0 || self.delivery_limit > i32::MAX as u32 {
            return bad(format!(
                "broker.delivery_limit {} must be between 1 and {}",
                self.delivery_limit,
                i32::MAX
            ));
        }
        if self.retry_tiers.is_empty() {
            return bad("broker.retry_tiers_secs needs at least one tier".into());
        }
        for t in &self.retry_tiers {
            if t.as_secs() == 0 || t.subsec_nanos() != 0 || *t > MAX_TIER {
                return bad(format!(
                    "broker.retry_tiers_secs: tier {t:?} must be a whole number of seconds between 1 and {}",
                    MAX_TIER.as_secs()
                ));
            }
        }
        let mut sorted = self.tiers_secs();
        sorted.dedup();
        if sorted.len() != self.retry_tiers.len() {
            return bad("broker.retry_tiers_secs has the same tier twice".into());
        }
        Ok(())
    }

    /// Tier lengths in seconds, ascending.
    fn tiers_secs(&self) -> Vec<u64> {
        let mut v: Vec<u64> = self.retry_tiers.iter().map(Duration::as_secs).collect();
        v.sort_unstable();
        v
    }
}

/// Whether the URL's authority has `user@`.
fn url_has_user(url: &str) -> bool {
    authority(url).is_some_and(|a| a.contains('@'))
}

/// Whether the URL's authority has `user:password@`.
fn url_has_password(url: &str) -> bool {
    authority(url)
        .and_then(|a| a.rsplit_once('@'))
        .is_some_and(|(userinfo, _)| userinfo.contains(':'))
}

fn authority(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    Some(rest.split(['/', '?', '#']).next().unwrap_or(rest))
}

/// The URL with any password replaced by `***` (for messages and logs).
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (auth, tail) = rest.split_at(end);
    match auth.rsplit_once('@') {
        Some((userinfo, host)) => {
            let user = userinfo.split(':').next().unwrap_or("");
            if userinfo.contains(':') {
                format!("{scheme}://{user}:***@{host}{tail}")
            } else {
                format!("{scheme}://{user}@{host}{tail}")
            }
        }
        None => url.to_string(),
    }
}

/// Milliseconds since the Unix epoch.
pub fn unix_ms_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2024-05-06T07:08:09.123Z` for a Unix time in milliseconds.
pub fn rfc3339_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let milli = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let sod = secs.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{milli:03}Z",
        sod / 3600,
        sod % 3600 / 60,
        sod % 60
    )
}

fn short(s: &str, what: &str) -> Result<ShortString, QueueError> {
    ShortString::try_new(s).map_err(|_| QueueError::Invalid {
        message: format!(
            "{what} is {} bytes; AMQP allows at most 255: {:.60}…",
            s.len(),
            s
        ),
    })
}

fn long(s: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(s.as_bytes()))
}

/// Runs `fut` under `after`, mapping a timeout to [`QueueError::Timeout`].
async fn timed<T>(
    what: impl Into<String>,
    after: Duration,
    fut: impl std::future::Future<Output = Result<T, QueueError>>,
) -> Result<T, QueueError> {
    match tokio::time::timeout(after, fut).await {
        Ok(r) => r,
        Err(_) => Err(QueueError::Timeout {
            what: what.into(),
            after,
        }),
    }
}

/// A connection to RabbitMQ. Channels are opened per use: one for declares, one
/// (confirm mode) per [`Publisher`], one per [`TaskConsumer`].
pub struct Broker {
    conn: Arc<Connection>,
    cfg: BrokerConfig,
    names: Names,
    vhost: String,
}

impl fmt::Debug for Broker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Broker")
            .field("url", &self.cfg.url_redacted())
            .field("prefix", &self.cfg.prefix)
            .field("connected", &self.is_connected())
            .finish()
    }
}

impl Broker {
    /// Opens a connection (one attempt, bounded by the URL's `connection_timeout`
    /// or 10 s).
    pub async fn connect(cfg: &BrokerConfig) -> Result<Broker, QueueError> {
        cfg.validate()?;
        let url_redacted = cfg.url_redacted();
        let mut uri: AMQPUri = cfg.url.parse().map_err(|e: String| QueueError::Config {
            message: format!("broker URL {url_redacted} is not an AMQP URL: {e}"),
        })?;
        if let Some(p) = &cfg.password {
            uri.authority.userinfo.password = p.expose().to_string();
        }
        if uri.query.heartbeat.is_none() {
            uri.query.heartbeat = Some(DEFAULT_HEARTBEAT_SECS);
        }
        let limit = uri
            .query
            .connection_timeout
            .map(Duration::from_millis)
            .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
        uri.query.connection_timeout = Some(limit.as_millis() as u64);
        let vhost = uri.vhost.clone();
        let props = ConnectionProperties::default().with_connection_name(connection_name().into());
        let conn = match tokio::time::timeout(
            limit + Duration::from_secs(1),
            Connection::connect_uri(uri, props),
        )
        .await
        {
            Err(_) => {
                return Err(QueueError::ConnectTimeout {
                    url_redacted,
                    after: limit,
                })
            }
            Ok(Err(source)) => {
                return Err(QueueError::Connect {
                    url_redacted,
                    source: Box::new(source),
                })
            }
            Ok(Ok(c)) => c,
        };
        tracing::debug!(url = %url_redacted, "connected to the broker");
        Ok(Broker {
            conn: Arc::new(conn),
            cfg: cfg.clone(),
            names: cfg.names(),
            vhost,
        })
    }

    /// Connects, retrying transient failures with capped exponential backoff and
    /// jitter (0.25 s doubling up to 5 s) for at most `max_wait`; a permanent failure
    /// (bad credentials, unknown vhost, bad settings) returns at once.
    pub async fn connect_with_retry(
        cfg: &BrokerConfig,
        max_wait: Duration,
    ) -> Result<Broker, QueueError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(250);
        let mut attempt = 1u32;
        loop {
            match Broker::connect(cfg).await {
                Ok(b) => {
                    if attempt > 1 {
                        tracing::info!(attempt, url = %cfg.url_redacted(), "reconnected to the broker");
                    }
                    return Ok(b);
                }
                Err(e) if !e.is_retryable() => return Err(e),
                Err(e) => {
                    let elapsed = start.elapsed();
                    if elapsed >= max_wait {
                        return Err(e);
                    }
                    let jittered = delay.mul_f64(0.5 + fastrand::f64() * 0.5);
                    let sleep = jittered.min(max_wait - elapsed);
                    tracing::warn!(attempt, error = %e, retry_in = ?sleep, "broker connection failed");
                    tokio::time::sleep(sleep).await;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    attempt += 1;
                }
            }
        }
    }

    /// The settings this broker was opened with.
    pub fn config(&self) -> &BrokerConfig {
        &self.cfg
    }

    /// The exchange and queue names.
    pub fn names(&self) -> &Names {
        &self.names
    }

    /// Whether the connection is still open.
    pub fn is_connected(&self) -> bool {
        self.conn.status().connected()
    }

    /// Closes the connection (unacked deliveries go back to their queues).
    pub async fn close(&self) {
        if self.is_connected() {
            let _ = tokio::time::timeout(
                Duration::from_secs(5),
                self.conn.close(200, "iom closing".into()),
            )
            .await;
        }
    }

    async fn channel(&self, what: &str) -> Result<Channel, QueueError> {
        timed(
            format!("channel.open for {what}"),
            self.cfg.confirm_timeout,
            async {
                self.conn
                    .create_channel()
                    .await
                    .map_err(|source| QueueError::Channel {
                        what: format!("channel.open for {what}"),
                        source: Box::new(source),
                    })
            },
        )
        .await
    }

    /// Declares every exchange, queue and binding (see the module docs). Idempotent:
    /// run it on every start and after every reconnect. A pre-existing object with
    /// other arguments is a permanent [`QueueError::Declare`] naming it.
    pub async fn declare_topology(&self) -> Result<(), QueueError> {
        let ch = self.channel("declare").await?;
        let r = timed(
            "the topology declaration",
            self.cfg.confirm_timeout * 4,
            self.declare_all(&ch),
        )
        .await;
        let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
        r
    }

    async fn declare_all(&self, ch: &Channel) -> Result<(), QueueError> {
        let n = &self.names;
        let durable = ExchangeDeclareOptions {
            durable: true,
            ..ExchangeDeclareOptions::default()
        };
        for (name, kind) in [
            (n.tasks_exchange(), ExchangeKind::Direct),
            (n.retry_exchange(), ExchangeKind::Headers),
            (n.dead_exchange(), ExchangeKind::Fanout),
            (n.events_exchange(), ExchangeKind::Topic),
        ] {
            ch.exchange_declare(
                short(&name, "exchange name")?,
                kind,
                durable,
                FieldTable::default(),
            )
            .await
            .map_err(|source| self.declare_err(format!("exchange {name}"), source))?;
        }

        for kind in StepKind::ALL {
            let q = n.work_queue(kind);
            let mut args = quorum_args();
            args.insert(
                "x-delivery-limit".into(),
                AMQPValue::LongInt(self.cfg.delivery_limit as i32),
            );
            args.insert("x-dead-letter-exchange".into(), long(&n.dead_exchange()));
            at_least_once(&mut args);
            self.declare_queue(ch, &q, args).await?;
            self.bind(
                ch,
                &q,
                &n.tasks_exchange(),
                kind.as_str(),
                FieldTable::default(),
            )
            .await?;
        }

        for secs in self.cfg.tiers_secs() {
            let q = n.retry_queue(secs);
            let mut args = quorum_args();
            args.insert(
                "x-message-ttl".into(),
                AMQPValue::LongInt((secs * 1000) as i32),
            );
            args.insert("x-dead-letter-exchange".into(), long(&n.tasks_exchange()));
            at_least_once(&mut args);
            self.declare_queue(ch, &q, args).await?;
            let mut bind = FieldTable::default();
            bind.insert("x-match".into(), long("all"));
            bind.insert(RETRY_TIER_HEADER.into(), long(&tier_label(secs)));
            self.bind(ch, &q, &n.retry_exchange(), "", bind).await?;
        }

        let mut args = quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(DLQ_DELIVERY_LIMIT),
        );
        self.declare_queue(ch, &n.dead_queue(), args).await?;
        self.bind(
            ch,
            &n.dead_queue(),
            &n.dead_exchange(),
            "",
            FieldTable::default(),
        )
        .await?;
        let mut args = quorum_args();
        args.insert(
            "x-delivery-limit".into(),
            AMQPValue::LongInt(NOTICE_DELIVERY_LIMIT),
        );
        args.insert("x-max-length".into(), AMQPValue::LongInt(NOTICE_MAX_LENGTH));
        self.declare_queue(ch, &n.notice_queue(), args).await?;
        self.bind(
            ch,
            &n.notice_queue(),
            &n.dead_exchange(),
            "",
            FieldTable::default(),
        )
        .await?;
        tracing::debug!(prefix = %n.prefix, "broker topology declared");
        Ok(())
    }

    fn declare_err(&self, what: String, source: lapin::Error) -> QueueError {
        QueueError::Declare {
            what,
            vhost: self.vhost.clone(),
            source: Box::new(source),
        }
    }

    async fn declare_queue(
        &self,
        ch: &Channel,
        name: &str,
        args: FieldTable,
    ) -> Result<(), QueueError> {
        ch.queue_declare(
            short(name, "queue name")?,
            QueueDeclareOptions {
                durable: true,
                ..QueueDeclareOptions::default()
            },
            args,
        )
        .await
        .map(|_| ())
        .map_err(|source| self.declare_err(format!("queue {name}"), source))
    }

    async fn bind(
        &self,
        ch: &Channel,
        queue: &str,
        exchange: &str,
        key: &str,
        args: FieldTable,
    ) -> Result<(), QueueError> {
        ch.queue_bind(
            short(queue, "queue name")?,
            short(exchange, "exchange name")?,
            short(key, "routing key")?,
            QueueBindOptions::default(),
            args,
        )
        .await
        .map_err(|source| {
            self.declare_err(format!("binding {exchange} -> {queue} ({key:?})"), source)
        })
    }

    /// A publisher on its own channel in confirm mode.
    pub async fn publisher(&self) -> Result<Publisher, QueueError> {
        let inner = PublisherInner {
            conn: Arc::clone(&self.conn),
            channel: tokio::sync::Mutex::new(None),
            names: self.names.clone(),
            confirm_timeout: self.cfg.confirm_timeout,
            tiers: self.cfg.tiers_secs(),
        };
        // Open the channel now so a broken connection shows up here, not at the
        // first publish.
        inner.channel().await?;
        Ok(Publisher {
            inner: Arc::new(inner),
        })
    }

    /// A best-effort publisher for task events on its own channel (see
    /// [`EventPublisher`]).
    pub async fn event_publisher(&self) -> Result<EventPublisher, QueueError> {
        let ch = self.channel("events").await?;
        Ok(EventPublisher::start(ch, self.names.events_exchange()))
    }

    /// Consumes the work queues of `kinds` on one channel, with manual acks and a
    /// per-consumer prefetch of `prefetch` (each queue may have `prefetch`
    /// deliveries unacked: `global=false` is the only QoS quorum queues accept).
    /// Consumer tags are `<tag>.<kind>`.
    pub async fn consumer(
        &self,
        kinds: &[StepKind],
        prefetch: u16,
        tag: &str,
    ) -> Result<TaskConsumer, QueueError> {
        if kinds.is_empty() {
            return Err(QueueError::Config {
                message: "no step queues to consume; set worker.queues".into(),
            });
        }
        if prefetch == 0 {
            return Err(QueueError::Config {
                message:
                    "prefetch 0 would mean unlimited deliveries; set worker.slots to 1 or more"
                        .into(),
            });
        }
        let queues: Vec<(String, String)> = kinds
            .iter()
            .map(|k| (self.names.work_queue(*k), k.to_string()))
            .collect();
        self.consume(&queues, prefetch, tag).await
    }

    /// Consumes `<p>.dead.notices` (a copy of every dead letter) on a channel of
    /// its own, with manual acks and a prefetch of `prefetch`; consumer tag
    /// `<tag>.notices`. See [`Incoming::broker_death`].
    pub async fn notice_consumer(
        &self,
        prefetch: u16,
        tag: &str,
    ) -> Result<TaskConsumer, QueueError> {
        let queues = [(self.names.notice_queue(), "notices".to_string())];
        self.consume(&queues, prefetch.max(1), tag).await
    }

    /// Consumes each `(queue, tag suffix)` on one new channel.
    async fn consume(
        &self,
        queues: &[(String, String)],
        prefetch: u16,
        tag: &str,
    ) -> Result<TaskConsumer, QueueError> {
        let tag = if tag.is_empty() { "iom-worker" } else { tag };
        let ch = self.channel("consume").await?;
        let after = self.cfg.confirm_timeout;
        timed("basic.qos", after, async {
            ch.basic_qos(prefetch, BasicQosOptions { global: false })
                .await
                .map_err(|source| QueueError::Channel {
                    what: format!("basic.qos prefetch {prefetch}"),
                    source: Box::new(source),
                })
        })
        .await?;
        let mut streams = Vec::with_capacity(queues.len());
        let mut tags = Vec::with_capacity(queues.len());
        for (queue, suffix) in queues {
            let ctag = short(&format!("{tag}.{suffix}"), "consumer tag")?;
            let consumer = timed(format!("basic.consume on {queue}"), after, async {
                ch.basic_consume(
                    short(queue, "queue name")?,
                    ctag.clone(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(|source| QueueError::Consume {
                    queue: queue.clone(),
                    source: Box::new(source),
                })
            })
            .await?;
            tags.push(ctag);
            let q = queue.clone();
            // Each consumer's stream ends with a `None` marker so the merged stream
            // can tell that one consumer stopped (cancelled by the broker, channel
            // closed) instead of silently consuming fewer queues.
            streams.push(
                consumer
                    .map(Some)
                    .chain(stream::once(async { None }))
                    .map(move |d| (q.clone(), d))
                    .boxed(),
            );
        }
        Ok(TaskConsumer {
            channel: ch,
            tags,
            queues: queues
                .iter()
                .map(|(q, _)| q.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            stream: Box::pin(stream::select_all(streams)),
            ended: false,
            op_timeout: after,
        })
    }

    /// Consumes the events exchange through a durable queue of its own,
    /// `<prefix>.<queue_name>`, bound to every task event (`task.#`), with manual
    /// acks and a prefetch of `prefetch`. Events published while the consumer is
    /// away wait in the queue. (For watchers such as the Tractor bridge.)
    pub async fn event_consumer(
        &self,
        queue_name: &str,
        prefetch: u16,
    ) -> Result<TaskConsumer, QueueError> {
        let queue = format!("{}.{queue_name}", self.names.prefix);
        let ch = self.channel("event consumer").await?;
        let after = self.cfg.confirm_timeout;
        timed(
            format!("exchange.declare {}", self.names.events_exchange()),
            after,
            async {
                ch.exchange_declare(
                    short(&self.names.events_exchange(), "exchange name")?,
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        durable: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await
                .map_err(|e| {
                    self.declare_err(format!("exchange {}", self.names.events_exchange()), e)
                })
            },
        )
        .await?;
        let args = quorum_args();
        self.declare_queue(&ch, &queue, args).await?;
        self.bind(
            &ch,
            &queue,
            &self.names.events_exchange(),
            "task.#",
            FieldTable::default(),
        )
        .await?;
        timed("basic.qos", after, async {
            ch.basic_qos(prefetch.max(1), BasicQosOptions { global: false })
                .await
                .map_err(|source| QueueError::Channel {
                    what: format!("basic.qos prefetch {prefetch}"),
                    source: Box::new(source),
                })
        })
        .await?;
        let ctag = short(&format!("{queue_name}.events"), "consumer tag")?;
        let consumer = timed(format!("basic.consume on {queue}"), after, async {
            ch.basic_consume(
                short(&queue, "queue name")?,
                ctag.clone(),
                BasicConsumeOptions::default(),
                FieldTable::default(),
            )
            .await
            .map_err(|source| QueueError::Consume {
                queue: queue.clone(),
                source: Box::new(source),
            })
        })
        .await?;
        let q = queue.clone();
        let stream = consumer
            .map(Some)
            .chain(stream::once(async { None }))
            .map(move |d| (q.clone(), d))
            .boxed();
        Ok(TaskConsumer {
            channel: ch,
            tags: vec![ctag],
            queues: queue,
            stream,
            ended: false,
            op_timeout: after,
        })
    }

    /// `(queue, ready messages, consumers)` of every work, retry and dead queue,
    /// by passive declares (nothing is created).
    pub async fn queue_depths(&self) -> Result<Vec<(String, u32, u32)>, QueueError> {
        let ch = self.channel("queue depths").await?;
        let mut names: Vec<String> = StepKind::ALL
            .iter()
            .map(|k| self.names.work_queue(*k))
            .collect();
        names.extend(
            self.cfg
                .tiers_secs()
                .into_iter()
                .map(|s| self.names.retry_queue(s)),
        );
        names.push(self.names.dead_queue());
        names.push(self.names.notice_queue());
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let q = timed(
                format!("passive declare of {name}"),
                self.cfg.confirm_timeout,
                async {
                    ch.queue_declare(
                        short(&name, "queue name")?,
                        QueueDeclareOptions {
                            passive: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .map_err(|source| QueueError::Channel {
                        what: format!(
                            "passive declare of queue {name} (missing? start a worker or the submitter to declare the topology)"
                        ),
                        source: Box::new(source),
                    })
                },
            )
            .await?;
            out.push((name, q.message_count(), q.consumer_count()));
        }
        let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
        Ok(out)
    }

    /// Up to `limit` dead letters, oldest first, without removing them.
    ///
    /// Each is fetched with `basic.get` (manual ack) and all are returned with
    /// `nack(requeue=true)` at the end, in the order fetched, so the queue keeps
    /// its order (quorum queues put returned messages back ahead of the others).
    /// Side effects: each listing raises the messages' `x-delivery-count`, and a
    /// worker cannot see the listed messages while the listing runs (nobody
    /// consumes the DLQ).
    pub async fn dlq_list(&self, limit: usize) -> Result<Vec<DeadLetter>, QueueError> {
        let ch = self.channel("dlq list").await?;
        let queue = self.names.dead_queue();
        let mut held = Vec::new();
        let mut out = Vec::new();
        let r: Result<(), QueueError> = async {
            while out.len() < limit {
                let Some(msg) = self.dlq_get(&ch, &queue).await? else {
                    break;
                };
                out.push(DeadLetter::from_delivery(out.len(), &msg.delivery));
                held.push(msg.delivery.acker.clone());
            }
            Ok(())
        }
        .await;
        let returned = requeue_all(&held, self.cfg.confirm_timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
        r?;
        returned?;
        Ok(out)
    }

    async fn dlq_get(
        &self,
        ch: &Channel,
        queue: &str,
    ) -> Result<Option<lapin::message::BasicGetMessage>, QueueError> {
        timed(
            format!("basic.get on {queue}"),
            self.cfg.confirm_timeout,
            async {
                ch.basic_get(
                    short(queue, "queue name")?,
                    BasicGetOptions { no_ack: false },
                )
                .await
                .map_err(|source| QueueError::Channel {
                    what: format!("basic.get on {queue}"),
                    source: Box::new(source),
                })
            },
        )
        .await
    }

    /// Moves dead letters back to work: each valid task message (of `task_id`, or
    /// all when `None`) is republished, confirmed, to `<p>.tasks` with its kind's
    /// routing key as its next attempt ([`TaskMessage::requeued`]: a fresh round
    /// of retries when `fresh_round`), then its dead copy is acked. Bodies that
    /// are not task messages this build can read (poison, other schema versions)
    /// and other tasks stay in the DLQ. Returns the messages sent, in order.
    pub async fn dlq_requeue(
        &self,
        task_id: Option<&str>,
        fresh_round: bool,
    ) -> Result<Vec<TaskMessage>, QueueError> {
        let swept = self
            .dlq_sweep(|_, task| match task {
                Some(t) if task_id.is_none_or(|id| t.task_id.0 == id) => {
                    DlqAction::Requeue(Box::new(t.requeued(fresh_round)))
                }
                _ => DlqAction::Keep,
            })
            .await?;
        Ok(swept
            .into_iter()
            .filter_map(|s| match s.action {
                DlqAction::Requeue(t) => Some(*t),
                _ => None,
            })
            .collect())
    }

    /// Goes through the whole DLQ once, oldest first, and does with each dead
    /// letter what `choose` says (it gets the letter and its body decoded as a
    /// task message, when it is one): keep it, send a task message in its place
    /// (published with confirm to `<p>.tasks`, then the dead copy acked), or drop
    /// it (acked: gone for good). Kept letters are returned to the DLQ in their
    /// order at the end. Returns the letters acted on, with what was done.
    pub async fn dlq_sweep(
        &self,
        mut choose: impl FnMut(&DeadLetter, Option<&TaskMessage>) -> DlqAction,
    ) -> Result<Vec<Swept>, QueueError> {
        let publisher = self.publisher().await?;
        let ch = self.channel("dlq sweep").await?;
        let queue = self.names.dead_queue();
        let mut held = Vec::new();
        let mut done = Vec::new();
        let mut index = 0;
        let r: Result<(), QueueError> = async {
            while let Some(msg) = self.dlq_get(&ch, &queue).await? {
                let d = &msg.delivery;
                let letter = DeadLetter::from_delivery(index, d);
                index += 1;
                let task = TaskMessage::decode(&d.data).ok();
                let action = choose(&letter, task.as_ref());
                match &action {
                    DlqAction::Keep => {
                        held.push(d.acker.clone());
                        continue;
                    }
                    DlqAction::Requeue(task) => {
                        let extra =
                            vec![(REQUEUED_HEADER.to_string(), rfc3339_utc(unix_ms_now()))];
                        if let Err(e) = publisher.publish_task(task, &extra).await {
                            held.push(d.acker.clone());
                            return Err(e);
                        }
                        ack_with_timeout(&d.acker, self.cfg.confirm_timeout, &queue).await?;
                        tracing::info!(task = %task.task_id, attempt = task.attempt, "dead letter requeued");
                    }
                    DlqAction::Drop(because) => {
                        ack_with_timeout(&d.acker, self.cfg.confirm_timeout, &queue).await?;
                        tracing::info!(
                            task = letter.task_id.as_deref().unwrap_or("(not a task message)"),
                            reason = %letter.reason,
                            %because,
                            "dead letter dropped"
                        );
                    }
                }
                done.push(Swept { letter, action });
            }
            Ok(())
        }
        .await;
        let returned = requeue_all(&held, self.cfg.confirm_timeout).await;
        let _ = tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
        publisher.close().await;
        r?;
        returned?;
        Ok(done)
    }
}

/// What [`Broker::dlq_sweep`] does with one dead letter.
#[derive(Debug, Clone)]
pub enum DlqAction {
    /// Leave it in the DLQ.
    Keep,
    /// Send this task message to work in its place (usually
    /// [`TaskMessage::requeued`] of the dead one), then remove it.
    Requeue(Box<TaskMessage>),
    /// Remove it for good, for this reason (told back in [`Swept`]).
    Drop(String),
}

/// A dead letter [`Broker::dlq_sweep`] acted on.
#[derive(Debug, Clone)]
pub struct Swept {
    /// The letter as it was in the DLQ (`index`: its place in this sweep).
    pub letter: DeadLetter,
    /// What was done ([`DlqAction::Requeue`] or [`DlqAction::Drop`]).
    pub action: DlqAction,
}

fn quorum_args() -> FieldTable {
    let mut args = FieldTable::default();
    args.insert("x-queue-type".into(), long("quorum"));
    args
}

fn at_least_once(args: &mut FieldTable) {
    args.insert("x-dead-letter-strategy".into(), long("at-least-once"));
    args.insert("x-overflow".into(), long("reject-publish"));
}

async fn requeue_all(ackers: &[lapin::Acker], after: Duration) -> Result<(), QueueError> {
    for a in ackers {
        let r = tokio::time::timeout(
            after,
            a.nack(BasicNackOptions {
                multiple: false,
                requeue: true,
            }),
        )
        .await;
        match r {
            Ok(Ok(_)) => {}
            // The channel closing returns every unacked message anyway; report it.
            Ok(Err(e)) => {
                return Err(QueueError::Ack {
                    what: "nack",
                    queue: "the DLQ".into(),
                    reason: e.to_string(),
                })
            }
            Err(_) => {
                return Err(QueueError::Ack {
                    what: "nack",
                    queue: "the DLQ".into(),
                    reason: format!("no progress within {after:?}"),
                })
            }
        }
    }
    Ok(())
}

async fn ack_with_timeout(
    acker: &lapin::Acker,
    after: Duration,
    queue: &str,
) -> Result<(), QueueError> {
    let err = |reason: String| QueueError::Ack {
        what: "ack",
        queue: queue.to_string(),
        reason,
    };
    match tokio::time::timeout(after, acker.ack(BasicAckOptions::default())).await {
        Ok(Ok(true)) => Ok(()),
        Ok(Ok(false)) => Err(err("its channel is closed or it was already settled".into())),
        Ok(Err(e)) => Err(err(e.to_string())),
        Err(_) => Err(err(format!("no progress within {after:?}"))),
    }
}

fn connection_name() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown-host".into());
    format!("iom {host} pid {}", std::process::id())
}

struct PublisherInner {
    conn: Arc<Connection>,
    /// The confirm-mode channel; `None` after a failure, reopened on next use.
    channel: tokio::sync::Mutex<Option<Channel>>,
    names: Names,
    confirm_timeout: Duration,
    /// Tier lengths in seconds, ascending.
    tiers: Vec<u64>,
}

impl PublisherInner {
    /// The channel, reopened when a channel error (e.g. an unknown exchange) closed it.
    async fn channel(&self) -> Result<Channel, QueueError> {
        let mut slot = self.channel.lock().await;
        if let Some(ch) = slot.as_ref() {
            if ch.status().connected() {
                return Ok(ch.clone());
            }
        }
        *slot = None;
        let after = self.confirm_timeout;
        let ch = timed("opening a publisher channel", after, async {
            let ch = self
                .conn
                .create_channel()
                .await
                .map_err(|source| QueueError::Channel {
                    what: "channel.open for publishing".into(),
                    source: Box::new(source),
                })?;
            ch.confirm_select(ConfirmSelectOptions::default())
                .await
                .map_err(|source| QueueError::Channel {
                    what: "confirm.select".into(),
                    source: Box::new(source),
                })?;
            Ok(ch)
        })
        .await?;
        *slot = Some(ch.clone());
        Ok(ch)
    }

    /// Forgets the channel so the next publish opens a fresh one (after a confirm
    /// timeout the old one cannot be trusted).
    async fn drop_channel(&self) {
        if let Some(ch) = self.channel.lock().await.take() {
            let _ = tokio::time::timeout(Duration::from_secs(1), ch.close(200, "OK".into())).await;
        }
    }

    async fn publish(
        &self,
        exchange: &str,
        routing_key: &str,
        mandatory: bool,
        body: &[u8],
        props: BasicProperties,
    ) -> Result<(), QueueError> {
        let ex = short(exchange, "exchange name")?;
        let rk = short(routing_key, "routing key")?;
        let publish_err = |source| QueueError::Publish {
            exchange: exchange.to_string(),
            routing_key: routing_key.to_string(),
            source: Box::new(source),
        };
        let after = self.confirm_timeout;
        let start = Instant::now();
        let ch = self.channel().await?;
        let remaining = after.saturating_sub(start.elapsed());
        // One deadline covers sending (a blocked connection holds publishes) and the
        // confirm (which may never come).
        let outcome = tokio::time::timeout(remaining, async {
            let confirm = ch
                .basic_publish(
                    ex,
                    rk,
                    BasicPublishOptions {
                        mandatory,
                        immediate: false,
                    },
                    body,
                    props,
                )
                .await
                .map_err(publish_err)?;
            confirm.await.map_err(publish_err)
        })
        .await;
        let failed = match &outcome {
            Err(_) => Some("timeout"),
            Ok(Err(_)) => Some("error"),
            Ok(Ok(Confirmation::Ack(None))) => None,
            Ok(Ok(Confirmation::Ack(Some(_)))) => Some("returned"),
            Ok(Ok(_)) => Some("nack"),
        };
        if let Some(reason) = failed {
            crate::metrics::publish_failed(reason);
        }
        match outcome {
            Err(_) => {
                self.drop_channel().await;
                Err(QueueError::ConfirmTimeout {
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                    after,
                })
            }
            Ok(Err(e)) => Err(e),
            Ok(Ok(Confirmation::Ack(None))) => Ok(()),
            Ok(Ok(Confirmation::Ack(Some(returned)))) => Err(QueueError::Returned {
                exchange: exchange.to_string(),
                routing_key: routing_key.to_string(),
                reply: format!("{} {}", returned.reply_code, returned.reply_text),
            }),
            Ok(Ok(Confirmation::Nack(_))) => Err(QueueError::Nacked {
                exchange: exchange.to_string(),
                routing_key: routing_key.to_string(),
            }),
            Ok(Ok(Confirmation::NotRequested)) => {
                // Cannot happen on a confirm-mode channel; never count it as sent.
                self.drop_channel().await;
                Err(QueueError::Nacked {
                    exchange: exchange.to_string(),
                    routing_key: routing_key.to_string(),
                })
            }
        }
    }

    /// The tier for `delay`: the largest ≤ `delay`, at least the smallest.
    fn tier_for(&self, delay: Duration) -> u64 {
        choose_tier(&self.tiers, delay)
    }
}

/// The largest tier ≤ `delay` (the smallest when all are longer). `tiers` is
/// ascending and not empty.
fn choose_tier(tiers: &[u64], delay: Duration) -> u64 {
    let secs = delay.as_secs();
    tiers
        .iter()
        .copied()
        .filter(|t| *t <= secs)
        .max()
        .or_else(|| tiers.first().copied())
        .unwrap_or(1)
}

/// Publishes with confirms. Cheap to clone; clones share one channel, and
/// concurrent publishes on it are confirmed independently.
#[derive(Clone)]
pub struct Publisher {
    inner: Arc<PublisherInner>,
}

impl fmt::Debug for Publisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Publisher")
            .field("prefix", &self.inner.names.prefix)
            .field("confirm_timeout", &self.inner.confirm_timeout)
            .finish()
    }
}

impl Publisher {
    /// The names this publisher routes to.
    pub fn names(&self) -> &Names {
        &self.inner.names
    }

    /// Closes its channel (a later publish opens a new one). Call before
    /// [`Broker::close`]: a channel that is only dropped asks lapin to close it
    /// in the background, which then races the connection's close and ends it
    /// in error ("invalid channel state: Closing").
    pub async fn close(&self) {
        self.inner.drop_channel().await;
    }

    /// Task headers: `task_id`, `graph_id`, `attempt`, `kind`, `enqueued_at` (Unix
    /// ms), then `extra`.
    fn task_headers(
        msg: &TaskMessage,
        extra: &[(String, String)],
    ) -> Result<FieldTable, QueueError> {
        let mut h = FieldTable::default();
        h.insert("task_id".into(), long(&msg.task_id.0));
        h.insert("graph_id".into(), long(&msg.graph_id.0));
        h.insert(
            "attempt".into(),
            AMQPValue::LongLongInt(i64::from(msg.attempt)),
        );
        h.insert("kind".into(), long(msg.step.kind().as_str()));
        h.insert("enqueued_at".into(), AMQPValue::LongLongInt(unix_ms_now()));
        for (k, v) in extra {
            h.insert(short(k, "header name")?, long(v));
        }
        Ok(h)
    }

    fn task_props(msg: &TaskMessage, headers: FieldTable) -> Result<BasicProperties, QueueError> {
        let id = short(
            &format!("{}#{}", msg.task_id, msg.attempt),
            "message id (task id # attempt)",
        )?;
        Ok(persistent_json()
            .with_message_id(id)
            .with_correlation_id(short(&msg.graph_id.0, "graph id")?)
            .with_headers(headers))
    }

    /// Publishes a task to `<p>.tasks` with its kind as routing key: persistent,
    /// mandatory, JSON, message id `<task>#<attempt>`, headers `task_id`,
    /// `graph_id`, `attempt`, `kind`, `enqueued_at` (Unix ms) and `extra` (e.g.
    /// `traceparent`). Returns once the broker confirmed it; a nack, a return or a
    /// confirm timeout is an error and the message counts as unsent.
    pub async fn publish_task(
        &self,
        msg: &TaskMessage,
        extra: &[(String, String)],
    ) -> Result<(), QueueError> {
        use tracing::Instrument;
        let kind = msg.step.kind();
        let span = crate::telemetry::producer_span(
            &self.inner.names.work_queue(kind),
            kind.as_str(),
            &format!("{}#{}", msg.task_id, msg.attempt),
        );
        let mut extra = extra.to_vec();
        if !extra.iter().any(|(k, _)| k == "traceparent") {
            extra.extend(crate::telemetry::inject(&span));
        }
        let props = Self::task_props(msg, Self::task_headers(msg, &extra)?)?;
        self.inner
            .publish(
                &self.inner.names.tasks_exchange(),
                kind.as_str(),
                true,
                &msg.encode(),
                props,
            )
            .instrument(span)
            .await
    }

    /// Publishes a copy of `msg` (its attempt already raised by the caller) to the
    /// retry tier whose delay is the largest ≤ `delay` (at least the smallest
    /// tier), with header `x-iom-reason`. When the tier's TTL expires the broker
    /// puts it back on the kind's work queue. Returns the tier used.
    pub async fn publish_retry(
        &self,
        msg: &TaskMessage,
        delay: Duration,
        reason: &str,
    ) -> Result<Duration, QueueError> {
        let tier = self.inner.tier_for(delay);
        let mut headers = Self::task_headers(msg, &[])?;
        headers.insert(REASON_HEADER.into(), long(reason));
        headers.insert(RETRY_TIER_HEADER.into(), long(&tier_label(tier)));
        let props = Self::task_props(msg, headers)?;
        self.inner
            .publish(
                &self.inner.names.retry_exchange(),
                msg.step.kind().as_str(),
                true,
                &msg.encode(),
                props,
            )
            .await?;
        Ok(Duration::from_secs(tier))
    }

    /// Publishes a dead letter to `<p>.dead` (routing key = the step kind, or
    /// `unknown`), the body byte for byte (poison messages are not task messages),
    /// with the original headers plus `x-iom-reason`, `x-iom-error-class`,
    /// `x-iom-worker` and `x-iom-failed-at`.
    pub async fn publish_dead(
        &self,
        body: &[u8],
        kind: Option<StepKind>,
        reason: &str,
        class: &str,
        worker: &str,
        original_headers: Option<&FieldTable>,
    ) -> Result<(), QueueError> {
        let mut headers = original_headers.cloned().unwrap_or_default();
        headers.insert(REASON_HEADER.into(), long(reason));
        headers.insert(CLASS_HEADER.into(), long(class));
        headers.insert(WORKER_HEADER.into(), long(worker));
        headers.insert(FAILED_AT_HEADER.into(), long(&rfc3339_utc(unix_ms_now())));
        let props = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        self.inner
            .publish(
                &self.inner.names.dead_exchange(),
                kind.map_or("unknown", StepKind::as_str),
                true,
                body,
                props,
            )
            .await
    }

    /// Publishes an event to `<p>.events` (topic). Not mandatory (no subscriber is
    /// fine) but still confirmed.
    pub async fn publish_event(&self, routing_key: &str, body: &[u8]) -> Result<(), QueueError> {
        self.inner
            .publish(
                &self.inner.names.events_exchange(),
                routing_key,
                false,
                body,
                persistent_json(),
            )
            .await
    }
}

/// Events waiting in an [`EventPublisher`] beyond which new ones are dropped
/// (a broker that cannot keep up must not grow the worker's memory).
pub const EVENT_BACKLOG: usize = 8192;

/// Publishes task events off the task's path, on a channel of its own without
/// publisher confirms.
///
/// Events are for watchers (`iom status --follow`, the Tractor bridge,
/// dashboards), never for correctness: the work folder is the truth, and the
/// watchers catch up from it. So a task never waits for its events: [`send`]
/// queues one without blocking (from async or blocking code), one background task
/// writes them to the broker in order, and a confirm round trip per event (three
/// per task) is not paid. They are still persistent, so a durable watcher queue
/// keeps them across a broker restart. When the backlog is full or the channel is
/// gone, events are dropped and counted ([`dropped`]).
///
/// [`send`]: EventPublisher::send
/// [`dropped`]: EventPublisher::dropped
#[derive(Clone)]
pub struct EventPublisher {
    tx: tokio::sync::mpsc::Sender<EventCmd>,
    dropped: Arc<std::sync::atomic::AtomicU64>,
}

enum EventCmd {
    Publish(String, Vec<u8>),
    Flush(tokio::sync::oneshot::Sender<()>),
}

impl fmt::Debug for EventPublisher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EventPublisher")
            .field("dropped", &self.dropped())
            .finish()
    }
}

impl EventPublisher {
    fn start(ch: Channel, exchange: String) -> EventPublisher {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<EventCmd>(EVENT_BACKLOG);
        let dropped = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let lost = dropped.clone();
        tokio::spawn(async move {
            let mut broken = false;
            while let Some(cmd) = rx.recv().await {
                let (key, body) = match cmd {
                    EventCmd::Flush(done) => {
                        let _ = done.send(());
                        continue;
                    }
                    EventCmd::Publish(..) if broken => {
                        lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        continue;
                    }
                    EventCmd::Publish(key, body) => (key, body),
                };
                let (Ok(ex), Ok(rk)) = (
                    short(&exchange, "exchange name"),
                    short(&key, "routing key"),
                ) else {
                    lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    continue;
                };
                let sent = ch
                    .basic_publish(
                        ex,
                        rk,
                        BasicPublishOptions::default(),
                        &body,
                        persistent_json(),
                    )
                    .await;
                if let Err(e) = sent {
                    // The channel is gone (connection lost): later events are
                    // dropped; the worker makes a new publisher when it reconnects.
                    tracing::debug!(error = %e, "event channel closed; dropping events");
                    lost.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    broken = true;
                }
            }
            if !broken {
                let _ =
                    tokio::time::timeout(Duration::from_secs(2), ch.close(200, "OK".into())).await;
            }
        });
        EventPublisher { tx, dropped }
    }

    /// Queues an event for publishing under `routing_key`; never waits (callable
    /// from blocking threads too).
    pub fn send(&self, routing_key: String, body: Vec<u8>) {
        if self
            .tx
            .try_send(EventCmd::Publish(routing_key, body))
            .is_err()
        {
            self.dropped
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    /// Events dropped so far (backlog full, or the channel lost).
    pub fn dropped(&self) -> u64 {
        self.dropped.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Waits (at most `within`) until every event queued before this call has
    /// been handed to the connection. Call before a short-lived process (the
    /// submitter) closes its connection.
    pub async fn flush(&self, within: Duration) {
        let (done, wait) = tokio::sync::oneshot::channel();
        let _ = tokio::time::timeout(within, async {
            if self.tx.send(EventCmd::Flush(done)).await.is_ok() {
                let _ = wait.await;
            }
        })
        .await;
    }
}

fn persistent_json() -> BasicProperties {
    BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_timestamp(unix_ms_now().max(0) as u64 / 1000)
}

type MergedStream = Pin<Box<dyn Stream<Item = (String, Option<lapin::Result<Delivery>>)> + Send>>;

/// Deliveries from one or more work queues on one channel.
///
/// Keep it alive until every [`Incoming`] it produced is settled: dropping it
/// closes the channel, and the broker then requeues the unacked deliveries.
pub struct TaskConsumer {
    channel: Channel,
    tags: Vec<ShortString>,
    queues: String,
    stream: MergedStream,
    ended: bool,
    op_timeout: Duration,
}

impl fmt::Debug for TaskConsumer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TaskConsumer")
            .field("queues", &self.queues)
            .field("ended", &self.ended)
            .finish()
    }
}

impl TaskConsumer {
    /// The next delivery. `None` once any consumer, the channel or the connection
    /// ended (after [`cancel`](Self::cancel), a broker-side cancel or close, a lost
    /// connection): the caller then reconnects, redeclares and consumes again. A
    /// failure is reported once as `Some(Err)`; the call after it returns `None`.
    pub async fn next(&mut self) -> Option<Result<Incoming, QueueError>> {
        if self.ended {
            return None;
        }
        match self.stream.next().await {
            Some((_, Some(Ok(d)))) => Some(Ok(Incoming::new(d, self.op_timeout))),
            Some((queue, Some(Err(source)))) => {
                self.ended = true;
                Some(Err(QueueError::Consume {
                    queue,
                    source: Box::new(source),
                }))
            }
            Some((queue, None)) => {
                tracing::debug!(%queue, "consumer ended");
                self.ended = true;
                None
            }
            None => {
                self.ended = true;
                None
            }
        }
    }

    /// `basic.cancel` for every consumer: no new deliveries; deliveries already
    /// received stay unacked and can still be acked or nacked.
    pub async fn cancel(&mut self) -> Result<(), QueueError> {
        for tag in &self.tags {
            timed(format!("basic.cancel of {tag}"), self.op_timeout, async {
                self.channel
                    .basic_cancel(tag.clone(), BasicCancelOptions::default())
                    .await
                    .map_err(|source| QueueError::Consume {
                        queue: self.queues.clone(),
                        source: Box::new(source),
                    })
            })
            .await?;
        }
        Ok(())
    }

    /// Whether the consumer's channel is still open.
    pub fn is_open(&self) -> bool {
        self.channel.status().connected()
    }
}

/// One delivery from a work queue.
#[derive(Debug)]
pub struct Incoming {
    /// The message body (normally a [`TaskMessage`]; may be anything).
    pub body: Vec<u8>,
    /// The broker's redelivery flag.
    pub redelivered: bool,
    /// `x-delivery-count` (quorum queues: earlier returns of this message).
    pub delivery_count: Option<i64>,
    /// The routing key (the step kind).
    pub routing_key: String,
    /// The message id (`<task>#<attempt>`), when set.
    pub message_id: Option<String>,
    /// The headers.
    pub headers: Option<FieldTable>,
    acker: lapin::Acker,
    op_timeout: Duration,
}

impl Incoming {
    fn new(d: Delivery, op_timeout: Duration) -> Self {
        let headers = d.properties.headers().clone();
        let delivery_count = headers
            .as_ref()
            .and_then(|h| h.inner().get("x-delivery-count"))
            .and_then(value_i64);
        Incoming {
            body: d.data,
            redelivered: d.redelivered,
            delivery_count,
            routing_key: d.routing_key.to_string(),
            message_id: d.properties.message_id().as_ref().map(|s| s.to_string()),
            headers,
            acker: d.acker,
            op_timeout,
        }
    }

    /// Acknowledges: the broker forgets the message. Call only once the step's
    /// output is durable.
    pub async fn ack(&self) -> Result<(), QueueError> {
        ack_with_timeout(&self.acker, self.op_timeout, &self.routing_key).await
    }

    /// Returns the message to its queue (counts towards the delivery limit).
    pub async fn nack_requeue(&self) -> Result<(), QueueError> {
        self.settle("nack", true).await
    }

    /// Rejects without requeue: the broker dead-letters it to `<p>.dead` (reason
    /// `rejected`). A fallback for when [`Publisher::publish_dead`] is impossible.
    pub async fn reject(&self) -> Result<(), QueueError> {
        self.settle("reject", false).await
    }

    async fn settle(&self, what: &'static str, requeue: bool) -> Result<(), QueueError> {
        let err = |reason: String| QueueError::Ack {
            what,
            queue: self.routing_key.clone(),
            reason,
        };
        let fut = async {
            if requeue {
                self.acker
                    .nack(BasicNackOptions {
                        multiple: false,
                        requeue: true,
                    })
                    .await
            } else {
                self.acker
                    .reject(BasicRejectOptions { requeue: false })
                    .await
            }
        };
        match tokio::time::timeout(self.op_timeout, fut).await {
            Ok(Ok(true)) => Ok(()),
            Ok(Ok(false)) => Err(err("its channel is closed or it was already settled".into())),
            Ok(Err(e)) => Err(err(e.to_string())),
            Err(_) => Err(err(format!("no progress within {:?}", self.op_timeout))),
        }
    }

    /// A header as text (strings, numbers, booleans, timestamps).
    pub fn header_str(&self, name: &str) -> Option<String> {
        header_text(self.headers.as_ref()?, name)
    }

    /// How the broker dead-lettered this message, when it did: the newest
    /// `x-death` entry, for a message without `x-iom-worker` (iom's own dead
    /// letters carry it: the worker that sent one has already recorded the
    /// failure). `None` for iom's dead letters and for anything else.
    pub fn broker_death(&self) -> Option<BrokerDeath> {
        broker_death(self.headers.as_ref()?)
    }

    /// The `enqueued_at` header (Unix ms), for queue-wait metrics.
    pub fn enqueued_at_ms(&self) -> Option<i64> {
        self.headers
            .as_ref()?
            .inner()
            .get("enqueued_at")
            .and_then(value_i64)
    }
}

fn value_i64(v: &AMQPValue) -> Option<i64> {
    match v {
        AMQPValue::ShortShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortInt(n) => Some(i64::from(*n)),
        AMQPValue::ShortUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongInt(n) => Some(i64::from(*n)),
        AMQPValue::LongUInt(n) => Some(i64::from(*n)),
        AMQPValue::LongLongInt(n) => Some(*n),
        AMQPValue::Timestamp(n) => i64::try_from(*n).ok(),
        AMQPValue::LongString(s) => std::str::from_utf8(s.as_bytes()).ok()?.trim().parse().ok(),
        AMQPValue::ShortString(s) => s.as_str().trim().parse().ok(),
        _ => None,
    }
}

fn value_text(v: &AMQPValue) -> Option<String> {
    match v {
        AMQPValue::LongString(s) => Some(String::from_utf8_lossy(s.as_bytes()).into_owned()),
        AMQPValue::ShortString(s) => Some(s.to_string()),
        AMQPValue::Boolean(b) => Some(b.to_string()),
        AMQPValue::Float(f) => Some(f.to_string()),
        AMQPValue::Double(f) => Some(f.to_string()),
        other => value_i64(other).map(|n| n.to_string()),
    }
}

fn header_text(h: &FieldTable, name: &str) -> Option<String> {
    h.inner().get(name).and_then(value_text)
}

/// The newest `x-death` entry (RabbitMQ puts it first).
fn first_x_death(h: &FieldTable) -> Option<&FieldTable> {
    match h.inner().get("x-death")? {
        AMQPValue::FieldArray(a) => a.as_slice().iter().find_map(|v| match v {
            AMQPValue::FieldTable(t) => Some(t),
            _ => None,
        }),
        _ => None,
    }
}

/// Why and where the broker itself dead-lettered a message (its newest `x-death`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerDeath {
    /// `delivery_limit`, `rejected`, `expired`, `maxlen`.
    pub reason: String,
    /// The queue it died in (`<p>.tasks.<kind>`).
    pub queue: String,
}

impl BrokerDeath {
    /// One line for `iom dlq list`.
    pub fn describe(&self) -> String {
        let why = match self.reason.as_str() {
            "delivery_limit" => {
                " (delivered more often than the queue's delivery limit without being \
                 settled: every worker that took it crashed or lost its connection)"
            }
            _ => "",
        };
        format!(
            "dead-lettered by the broker: {}{why} in {}",
            self.reason, self.queue
        )
    }
}

/// See [`Incoming::broker_death`].
fn broker_death(h: &FieldTable) -> Option<BrokerDeath> {
    if h.inner().contains_key(WORKER_HEADER) {
        return None;
    }
    let death = first_x_death(h)?;
    Some(BrokerDeath {
        reason: header_text(death, "reason").unwrap_or_else(|| "unknown".into()),
        queue: header_text(death, "queue").unwrap_or_default(),
    })
}

/// A dead letter as `iom dlq list|show` presents it.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    /// Position in the listing (0 = oldest).
    pub index: usize,
    /// The step kind (routing key), when known.
    pub kind: Option<String>,
    /// Why it died (`x-iom-reason`, or the broker's `x-death` reason).
    pub reason: String,
    /// Error class (`x-iom-error-class`), `broker` when the broker dead-lettered it.
    pub class: String,
    /// The worker that dead-lettered it, empty when the broker did.
    pub worker: String,
    /// When (`x-iom-failed-at`, or the newest `x-death` time), RFC 3339.
    pub failed_at: String,
    /// Task id (header, else from the body).
    pub task_id: Option<String>,
    /// Graph id (header, else from the body).
    pub graph_id: Option<String>,
    /// The newest `x-death` reason (`delivery_limit`, `rejected`, `expired` …).
    pub x_death_reason: Option<String>,
    /// Every header as text (nested tables shortened), for `iom dlq show`.
    pub headers: Vec<(String, String)>,
    /// The body, as stored.
    pub body: Vec<u8>,
}

impl DeadLetter {
    fn from_delivery(index: usize, d: &Delivery) -> DeadLetter {
        DeadLetter::from_parts(
            index,
            d.routing_key.as_str(),
            d.properties.headers().as_ref(),
            &d.data,
        )
    }

    fn from_parts(index: usize, rk: &str, headers: Option<&FieldTable>, body: &[u8]) -> DeadLetter {
        let empty = FieldTable::default();
        let h = headers.unwrap_or(&empty);
        let death = first_x_death(h);
        let x_death_reason = death.and_then(|t| header_text(t, "reason"));
        let decoded = TaskMessage::decode(body).ok();
        let kind = (!rk.is_empty() && rk != "unknown").then(|| rk.to_string());
        let death_time = || {
            death
                .and_then(|t| t.inner().get("time"))
                .and_then(value_i64)
                .map(|s| rfc3339_utc(s * 1000))
        };
        // The broker's own dead letter may still carry the `x-iom-reason` of an
        // earlier retry: that is not why it died.
        let (reason, class, failed_at) = match broker_death(h) {
            Some(d) => (
                d.describe(),
                "broker".to_string(),
                death_time().unwrap_or_default(),
            ),
            None => (
                header_text(h, REASON_HEADER).unwrap_or_else(|| "unknown".into()),
                header_text(h, CLASS_HEADER).unwrap_or_default(),
                header_text(h, FAILED_AT_HEADER)
                    .or_else(death_time)
                    .unwrap_or_default(),
            ),
        };
        let headers = h
            .inner()
            .iter()
            .map(|(k, v)| {
                let text = value_text(v).unwrap_or_else(|| {
                    let s = format!("{v:?}");
                    if s.chars().count() > 200 {
                        format!("{}…", s.chars().take(200).collect::<String>())
                    } else {
                        s
                    }
                });
                (k.to_string(), text)
            })
            .collect();
        DeadLetter {
            index,
            kind,
            reason,
            class,
            worker: header_text(h, WORKER_HEADER).unwrap_or_default(),
            failed_at,
            task_id: header_text(h, "task_id")
                .or_else(|| decoded.as_ref().map(|m| m.task_id.0.clone())),
            graph_id: header_text(h, "graph_id")
                .or_else(|| decoded.as_ref().map(|m| m.graph_id.0.clone())),
            x_death_reason,
            headers,
            body: body.to_vec(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{SecretRef, Settings};

    #[test]
    fn handles_cross_tasks() {
        fn send_sync<T: Send + Sync>() {}
        fn send<T: Send>() {}
        send_sync::<Broker>();
        send_sync::<Publisher>();
        send_sync::<Incoming>();
        send::<TaskConsumer>();
        send_sync::<QueueError>();
    }

    #[test]
    fn a_broker_death_is_told_from_iom_s_own_dead_letters() {
        fn death(queue: &str, reason: &str) -> AMQPValue {
            let mut t = FieldTable::default();
            t.insert("queue".into(), long(queue));
            t.insert("reason".into(), long(reason));
            t.insert("count".into(), AMQPValue::LongLongInt(1));
            AMQPValue::FieldTable(t)
        }
        // A retried task that then crash-looped: the newest entry comes first.
        let mut h = FieldTable::default();
        h.insert(REASON_HEADER.into(), long("the retry's reason"));
        h.insert(
            "x-death".into(),
            AMQPValue::FieldArray(
                vec![
                    death("t.tasks.copy", "delivery_limit"),
                    death("t.retry.1s", "expired"),
                ]
                .into(),
            ),
        );
        assert_eq!(
            broker_death(&h),
            Some(BrokerDeath {
                reason: "delivery_limit".into(),
                queue: "t.tasks.copy".into()
            })
        );
        // `iom dlq list` says why it died, not why it was retried before.
        let d = DeadLetter::from_parts(0, "copy", Some(&h), b"{}");
        assert!(d.reason.contains("delivery_limit"), "{}", d.reason);
        assert!(d.reason.contains("t.tasks.copy"), "{}", d.reason);
        assert!(!d.reason.contains("retry"), "{}", d.reason);
        assert_eq!(d.class, "broker");
        assert_eq!(d.kind.as_deref(), Some("copy"));
        // The same message dead-lettered by a worker carries `x-iom-worker`: that
        // worker recorded the failure already.
        h.insert(WORKER_HEADER.into(), long("node7/42"));
        assert_eq!(broker_death(&h), None);
        let d = DeadLetter::from_parts(0, "copy", Some(&h), b"{}");
        assert_eq!(d.reason, "the retry's reason");
        assert_eq!(d.worker, "node7/42");
        // Neither x-death nor a worker: not a dead letter anyone can explain.
        assert_eq!(broker_death(&FieldTable::default()), None);
    }

    #[test]
    fn names_follow_the_prefix() {
        let n = Names::new("iom");
        assert_eq!(n.tasks_exchange(), "iom.tasks");
        assert_eq!(n.work_queue(StepKind::Copy), "iom.tasks.copy");
        assert_eq!(n.retry_exchange(), "iom.retry");
        assert_eq!(n.retry_queue(30), "iom.retry.30s");
        assert_eq!(n.dead_exchange(), "iom.dead");
        assert_eq!(n.dead_queue(), "iom.dead");
        assert_eq!(n.notice_queue(), "iom.dead.notices");
        assert_eq!(n.events_exchange(), "iom.events");
    }

    #[test]
    fn tier_is_the_largest_not_above_the_delay() {
        let t = [5, 30, 120, 600, 1800];
        assert_eq!(choose_tier(&t, Duration::from_secs(0)), 5);
        assert_eq!(choose_tier(&t, Duration::from_millis(4999)), 5);
        assert_eq!(choose_tier(&t, Duration::from_secs(5)), 5);
        assert_eq!(choose_tier(&t, Duration::from_secs(29)), 5);
        assert_eq!(choose_tier(&t, Duration::from_secs(30)), 30);
        assert_eq!(choose_tier(&t, Duration::from_secs(599)), 120);
        assert_eq!(choose_tier(&t, Duration::from_secs(100_000)), 1800);
    }

    #[test]
    fn urls_are_redacted() {
        assert_eq!(
            redact_url("amqp://iom:s3cret@rabbit:5672/%2f"),
            "amqp://iom:***@rabbit:5672/%2f"
        );
        assert_eq!(redact_url("amqp://iom@rabbit/vh"), "amqp://iom@rabbit/vh");
        assert_eq!(redact_url("amqp://rabbit"), "amqp://rabbit");
        assert!(url_has_user("amqp://iom@rabbit/x"));
        assert!(!url_has_user("amqp://rabbit/x@y"));
        assert!(url_has_password("amqp://iom:pw@rabbit"));
        assert!(!url_has_password("amqp://iom@rabbit:5672"));
    }

    #[test]
    fn rfc3339_formats_utc() {
        assert_eq!(rfc3339_utc(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339_utc(951_782_400_123), "2000-02-29T00:00:00.123Z");
        assert_eq!(rfc3339_utc(1_700_000_000_000), "2023-11-14T22:13:20.000Z");
    }

    fn settings() -> BrokerSettings {
        Settings::defaults().unwrap().broker
    }

    #[test]
    fn from_settings_checks_url_password_and_values() {
        let mut b = settings();
        assert!(matches!(
            BrokerConfig::from_settings(&b),
            Err(QueueError::Config { .. })
        ));

        b.url = "amqp://iom:hunter2@rabbit/%2f".into();
        let e = BrokerConfig::from_settings(&b).unwrap_err().to_string();
        assert!(e.contains("contains a password"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");

        b.url = "amqp://rabbit:5672/%2f".into();
        let c = BrokerConfig::from_settings(&b).unwrap();
        assert!(c.password.is_none());
        assert_eq!(c.retry_tiers.len(), 5);
        assert_eq!(c.confirm_timeout, Duration::from_secs(15));

        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("pw");
        std::fs::write(&f, "s3cret\n").unwrap();
        b.url = "amqp://iom@rabbit:5672/%2f".into();
        b.password = SecretRef {
            env: Some("IOM_TEST_SURELY_UNSET_BROKER_PW".into()),
            file: Some(f),
        };
        let c = BrokerConfig::from_settings(&b).unwrap();
        assert_eq!(c.password.as_ref().unwrap().expose(), "s3cret");
        assert!(!format!("{c:?}").contains("s3cret"));

        b.password = SecretRef {
            env: Some("IOM_TEST_SURELY_UNSET_BROKER_PW".into()),
            file: None,
        };
        let e = BrokerConfig::from_settings(&b).unwrap_err().to_string();
        assert!(e.contains("IOM_TEST_SURELY_UNSET_BROKER_PW"), "{e}");

        let mut b = settings();
        b.url = "amqp://rabbit".into();
        b.prefix = "bad prefix".into();
        assert!(BrokerConfig::from_settings(&b).is_err());
        let mut b = settings();
        b.url = "amqp://rabbit".into();
        b.retry_tiers_secs = vec![];
        assert!(BrokerConfig::from_settings(&b).is_err());
        b.retry_tiers_secs = vec![5, 5];
        assert!(BrokerConfig::from_settings(&b).is_err());
        b.retry_tiers_secs = vec![0];
        assert!(BrokerConfig::from_settings(&b).is_err());
        let mut b = settings();
        b.url = "amqp://rabbit".into();
        b.delivery_limit = 0;
        assert!(BrokerConfig::from_settings(&b).is_err());
    }

    #[test]
    fn header_values_read_as_text_and_numbers() {
        let mut h = FieldTable::default();
        h.insert("a".into(), long("x"));
        h.insert("n".into(), AMQPValue::LongLongInt(42));
        h.insert("s".into(), long("17"));
        assert_eq!(header_text(&h, "a").as_deref(), Some("x"));
        assert_eq!(header_text(&h, "n").as_deref(), Some("42"));
        assert_eq!(h.inner().get("s").and_then(value_i64), Some(17));
        assert_eq!(header_text(&h, "missing"), None);
    }

    #[test]
    fn classification_is_honest() {
        let pf = lapin::Error::from(ErrorKind::ProtocolError(lapin::protocol::AMQPError::new(
            AMQPSoftError::PRECONDITIONFAILED.into(),
            "inequivalent arg".into(),
        )));
        let e = QueueError::Declare {
            what: "queue iom.tasks.copy".into(),
            vhost: "/".into(),
            source: Box::new(pf),
        };
        assert_eq!(e.class(), ErrorClass::Permanent);
        let msg = e.to_string();
        assert!(
            msg.contains("iom.tasks.copy") && msg.contains("delete"),
            "{msg}"
        );
        let io = lapin::Error::from(std::io::Error::from(std::io::ErrorKind::ConnectionRefused));
        assert_eq!(lapin_class(&io), ErrorClass::Transient);
        let forced = lapin::Error::from(ErrorKind::ProtocolError(lapin::protocol::AMQPError::new(
            AMQPHardError::CONNECTIONFORCED.into(),
            "closed".into(),
        )));
        assert_eq!(lapin_class(&forced), ErrorClass::Transient);
        assert!(QueueError::ConfirmTimeout {
            exchange: "x".into(),
            routing_key: "y".into(),
            after: Duration::from_secs(1)
        }
        .is_retryable());
    }
}
