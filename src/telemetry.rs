//! Logging set-up, done once per process.

use tracing_subscriber::EnvFilter;

/// Default log filter when `RUST_LOG` is not set.
/// openraft logs every failed heartbeat to a down peer as a warning (10+ lines a second
/// during any outage); `/v1/cluster` reports reachability, so only its errors are kept.
pub const DEFAULT_FILTER: &str = "baton=info,openraft=error";

/// Installs the global `tracing` subscriber (stderr, `RUST_LOG` or [`DEFAULT_FILTER`]).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .try_init();
}
