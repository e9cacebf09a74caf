//! The one idea every error type in iom shares: is it worth trying again?
//!
//! Each module has its own `thiserror` enum; each implements [`Classify`] so the
//! worker (and the scan's per-item report) can tell a storage hiccup from a
//! corrupt file without string matching.

/// Whether an error can go away on its own.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    /// May succeed on retry: I/O timeouts, broker or tracker 5xx, 429, storage hiccups.
    Transient,
    /// Will fail the same way again: bad input, corrupt files, 4xx, bad config.
    Permanent,
}

/// Classifies an error as transient or permanent.
pub trait Classify {
    /// The class of this error.
    fn class(&self) -> ErrorClass;

    /// `true` when a retry may succeed.
    fn is_retryable(&self) -> bool {
        self.class() == ErrorClass::Transient
    }
}

/// Classifies an `std::io::Error`: missing files, permissions and bad data are
/// permanent; interruptions, timeouts and resource exhaustion are transient.
pub fn io_class(e: &std::io::Error) -> ErrorClass {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::Interrupted
        | K::TimedOut
        | K::WouldBlock
        | K::ConnectionReset
        | K::ConnectionAborted
        | K::BrokenPipe
        | K::StorageFull
        | K::ResourceBusy
        | K::StaleNetworkFileHandle
        | K::OutOfMemory => ErrorClass::Transient,
        _ => ErrorClass::Permanent,
    }
}

impl Classify for std::io::Error {
    fn class(&self) -> ErrorClass {
        io_class(self)
    }
}
