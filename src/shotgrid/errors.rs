//! ShotGrid errors, classified: 429, 5xx and transport failures are transient;
//! 4xx, missing credentials, unknown PublishedFileTypes and unexpected replies
//! are permanent. No variant ever carries a credential or a request body.

use crate::error::{Classify, ErrorClass};

/// Why a ShotGrid call failed.
#[derive(Debug, thiserror::Error)]
pub enum ShotGridError {
    /// The script name or key is not available.
    #[error("ShotGrid credentials are missing: {0}")]
    Credentials(String),
    /// The settings are unusable.
    #[error("bad shotgrid settings: {0}")]
    Config(String),
    /// The site answered with an error status.
    #[error("ShotGrid {method} {path}: HTTP {status}{code}: {message}")]
    Http {
        /// Method.
        method: String,
        /// Path (no query, no body).
        path: String,
        /// HTTP status.
        status: u16,
        /// `errors[0].code`, formatted as ` (code N)` when present.
        code: String,
        /// `errors[0].title` and `detail`.
        message: String,
        /// The reply's `Retry-After`, when it had one.
        retry_after: Option<std::time::Duration>,
    },
    /// No reply (connection, timeout).
    #[error("ShotGrid {method} {path}: no reply: {detail}")]
    Transport {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// What happened.
        detail: String,
    },
    /// A PublishedFileType that does not exist on the site (never created).
    #[error("PublishedFileType {0:?} does not exist on the ShotGrid site; an admin must create it (iom never creates PublishedFileTypes)")]
    UnknownPublishedFileType(String),
    /// The Project does not exist.
    #[error("ShotGrid has no Project named {0:?}; check project.name")]
    UnknownProject(String),
    /// A reply that does not have the expected shape.
    #[error("unexpected ShotGrid reply to {what}: {detail}")]
    Protocol {
        /// The call.
        what: String,
        /// What is wrong.
        detail: String,
    },
    /// A local file to upload could not be read.
    #[error("cannot read {path} for upload: {detail}")]
    File {
        /// The file.
        path: String,
        /// Why.
        detail: String,
    },
}

impl ShotGridError {
    /// The server's `Retry-After` on an error reply, if any.
    pub fn retry_after(&self) -> Option<std::time::Duration> {
        match self {
            ShotGridError::Http { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

impl Classify for ShotGridError {
    fn class(&self) -> ErrorClass {
        match self {
            ShotGridError::Http { status, .. } if *status == 429 || *status >= 500 => {
                ErrorClass::Transient
            }
            ShotGridError::Transport { .. } => ErrorClass::Transient,
            _ => ErrorClass::Permanent,
        }
    }
}
