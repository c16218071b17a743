//! The result of a run: its settings, the merged [`Totals`] and the client's own CPU use.
//!
//! Serialized as-is by `baton bench --json`; the field names are stable (scripts and
//! `scripts/bench_plot.py` read them). Latencies are integer microseconds, rates per
//! second with one decimal.

use std::collections::BTreeMap;

use serde::Serialize;

use super::connect::ConnectTotals;
use super::procs::NodeUsage;
use super::stats::Totals;
use super::watch::WatchTotals;
use super::{Mode, Target};
use crate::NodeId;

/// Everything `baton bench` reports.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub mode: Mode,
    pub target: Target,
    pub conns: usize,
    /// Length of the measured window, seconds.
    pub duration_s: f64,
    /// Warmup before it, seconds.
    pub warmup_s: f64,
    pub ttl_ms: u64,
    /// Random id in this run's keys and owners (`bench-<run_id>-...`).
    pub run_id: String,
    pub leader_id: NodeId,
    /// The addresses the connections were spread over, with how many connections each.
    pub connections: BTreeMap<String, usize>,
    /// requests, ops, ops_per_sec, latency_us, by_op, refused, errors_total, errors,
    /// reconnects.
    #[serde(flatten)]
    pub totals: Totals,
    pub client: ClientUsage,
    /// Each endpoint's server process (when it runs on this machine): RSS and
    /// descriptors before, with the connections open, and at the end.
    pub nodes: Vec<NodeUsage>,
    /// `--mode watch` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub watch: Option<WatchReport>,
    /// `--mode connect` only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub connect: Option<ConnectReport>,
    /// The limits that refusals and failures of this run point at (empty: none).
    pub bounded_by: Vec<String>,
}

/// The event streams of a `watch` run. The writer's requests are the report's
/// `requests`, `latency_us` and `errors`.
#[derive(Clone, Debug, Serialize)]
pub struct WatchReport {
    /// Streams asked for (`--conns`).
    pub streams: usize,
    /// Streams that opened.
    pub streams_open: usize,
    /// Streams refused, by problem code or transport kind.
    pub streams_refused: BTreeMap<String, u64>,
    pub keys: usize,
    /// Writes a second asked for (`--rate`).
    pub rate: u32,
    /// Time to open every stream, seconds.
    pub open_s: f64,
    /// Deliveries, losses, duplicates and latencies.
    #[serde(flatten)]
    pub totals: WatchTotals,
}

/// The reconnect storm of a `connect` run. Each client's request is one `read` in the
/// report's `requests` and `errors`; its latency there counts from the storm's start.
#[derive(Clone, Debug, Serialize)]
pub struct ConnectReport {
    #[serde(flatten)]
    pub totals: ConnectTotals,
}

/// The benchmark process's own resource use over the measured window.
#[derive(Clone, Debug, Serialize)]
pub struct ClientUsage {
    /// User + system CPU seconds, all threads; `null` when `/proc` is unavailable.
    pub cpu_seconds: Option<f64>,
    pub wall_seconds: f64,
    /// `cpu_seconds / wall_seconds` in percent of one core (200 = two busy cores).
    pub cpu_percent: Option<f64>,
    /// Cores this process may run on; `cpu_percent` near `100 * cores` means the
    /// client was the bottleneck.
    pub cores: usize,
    /// This process's open-files limit after raising it to the hard limit.
    pub open_files_limit: Option<u64>,
}
