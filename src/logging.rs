//! Tracing subscriber set-up for the binaries: `RUST_LOG` wins over the configured
//! level; `json` format emits one JSON object per event with span fields.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber, writing to stderr. Safe to call twice (the
/// second call is ignored), so tests can call it freely.
pub fn init(level: &str, json: bool) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(level));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let _ = if json {
        builder.json().with_current_span(true).try_init()
    } else {
        builder.compact().try_init()
    };
}
