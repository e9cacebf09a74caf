//! The ShotGrid (Flow Production Tracking) REST v1 tracker.
//!
//! - [`auth`]: client-credentials token, cached and renewed.
//! - [`client`]: HTTP calls, the retry policy, the three-step upload.
//! - [`entities`]: [`ShotGridTracker`], the registration with no duplicates
//!   (search before every create, reconcile after an ambiguous failure).
//! - [`errors`]: [`ShotGridError`], classified transient/permanent.
//!
//! The script key is resolved from the environment or a secret file, lives in a
//! [`crate::config::Secret`] (prints `***`) and is sent only in the form body of
//! the token request.

pub mod auth;
pub mod client;
pub mod entities;
pub mod errors;

pub use entities::ShotGridTracker;
pub use errors::ShotGridError;
