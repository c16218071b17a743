//! Logging set-up, done once per process.
//!
//! The filter comes from, in order: `baton server --log-level` (or `BATON_LOG_LEVEL`),
//! `RUST_LOG`, [`DEFAULT_FILTER`]. A plain level (`debug`) sets Baton's own level and
//! keeps openraft's at `error`; anything else is taken as a `RUST_LOG` filter
//! (`baton=debug,openraft=info`).
//!
//! The format is `baton server --log-format` (or `BATON_LOG_FORMAT`): `text`, one
//! human-readable line per event, or `json`, one JSON object per line for a log
//! pipeline: `timestamp`, `level`, `target`, `message` and the event's fields at the top
//! level, and the span the event happened in (`span`, e.g. `{"name":"node","node_id":1}`).

use tracing_subscriber::EnvFilter;

/// Default log filter when neither `--log-level` nor `RUST_LOG` is set.
/// openraft logs every failed heartbeat to a down peer as a warning (10+ lines a second
/// during any outage); Baton logs each change of a peer's reachability and of the
/// quorum once, so only openraft's errors are kept.
pub const DEFAULT_FILTER: &str = "baton=info,openraft=error";

/// Log levels accepted as a plain `--log-level`.
const LEVELS: [&str; 5] = ["error", "warn", "info", "debug", "trace"];

/// A `--log-level` that is neither a level nor a valid filter.
#[derive(Debug, thiserror::Error)]
#[error("log level {given:?} is not one of error, warn, info, debug, trace, nor a RUST_LOG filter: {reason}")]
pub struct LogLevelError {
    given: String,
    reason: String,
}

/// The filter for `--log-level` `level`, or from `RUST_LOG`, or the default.
pub fn filter(level: Option<&str>) -> Result<EnvFilter, LogLevelError> {
    let Some(level) = level else {
        return Ok(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER))
        );
    };
    let lower = level.trim().to_ascii_lowercase();
    let directives = if LEVELS.contains(&lower.as_str()) {
        format!("baton={lower},openraft=error")
    } else {
        level.to_string()
    };
    EnvFilter::try_new(&directives).map_err(|e| LogLevelError {
        given: level.to_string(),
        reason: e.to_string(),
    })
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One line of text per event, for people.
    #[default]
    Text,
    /// One JSON object per line, for log pipelines.
    Json,
}

/// Installs the global `tracing` subscriber (stderr) with `filter` and `format`.
pub fn init_with(filter: EnvFilter, format: LogFormat) {
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    // A second init (tests) is harmless: keep the first subscriber.
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_target(false)
            .try_init(),
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .try_init(),
    };
}

/// Installs the global `tracing` subscriber (stderr, `RUST_LOG` or [`DEFAULT_FILTER`]).
pub fn init() {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    init_with(filter, LogFormat::Text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_plain_level_sets_batons_level_and_keeps_openraft_quiet() {
        let f = filter(Some("DEBUG")).expect("a level");
        let shown = f.to_string();
        assert!(shown.contains("baton=debug"), "{shown}");
        assert!(shown.contains("openraft=error"), "{shown}");
    }

    #[test]
    fn a_filter_is_taken_as_given() {
        let f = filter(Some("baton=trace,openraft=info")).expect("a filter");
        assert!(f.to_string().contains("openraft=info"));
    }

    #[test]
    fn a_bad_level_is_a_clear_error() {
        let e = filter(Some("loud=[")).expect_err("not a filter");
        assert!(
            e.to_string()
                .starts_with("log level \"loud=[\" is not one of"),
            "{e}"
        );
    }
}
