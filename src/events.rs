//! Task state-change events: queued, started, succeeded, retrying, failed,
//! dead-lettered (and stale, for fenced late reports).
//!
//! Events go to the events exchange (broker mode) or to the log (embedded mode).
//! They are for watchers — `iom status --follow`, the Tractor bridge, dashboards —
//! never for correctness: the work folder is the source of truth, so a lost event
//! loses nothing.

use serde::{Deserialize, Serialize};

use crate::task::{GraphId, StepKind, TaskId};

/// A task's state as events report it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Published to its work queue.
    Queued,
    /// A worker started an attempt.
    Started,
    /// Completed; its completion record is written.
    Succeeded,
    /// Failed transiently; a retry is scheduled.
    Retrying,
    /// Failed permanently (dead-lettered with the reason).
    Failed,
    /// Sent to the dead-letter queue after exhausting its attempts.
    DeadLettered,
    /// A late or duplicate delivery of an attempt that was superseded; ignored.
    Stale,
}

impl TaskState {
    /// Lower-case name (routing-key segment).
    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Queued => "queued",
            TaskState::Started => "started",
            TaskState::Succeeded => "succeeded",
            TaskState::Retrying => "retrying",
            TaskState::Failed => "failed",
            TaskState::DeadLettered => "dead_lettered",
            TaskState::Stale => "stale",
        }
    }
}

/// One state change.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskEvent {
    /// The graph.
    pub graph_id: GraphId,
    /// The task.
    pub task_id: TaskId,
    /// Its step kind.
    pub kind: StepKind,
    /// New state.
    pub state: TaskState,
    /// Attempt number.
    pub attempt: u32,
    /// Worker host/name that reports it.
    pub worker: String,
    /// When (unix ms).
    pub at_ms: i64,
    /// How long the attempt ran, for terminal states.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    /// Why, for failures and retries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<String>,
}

impl TaskEvent {
    /// Routing key on the topic exchange: `task.<state>.<kind>` (low cardinality;
    /// ids are in the body).
    pub fn routing_key(&self) -> String {
        format!("task.{}.{}", self.state.as_str(), self.kind.as_str())
    }
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// This host's name, for worker identity in records and events.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown-host".into())
}
