//! The result of a run: its settings, the merged [`Totals`] and the client's own CPU use.
//!
//! Serialized as-is by `baton bench --json`; the field names are stable (scripts and
//! `scripts/bench_plot.py` read them). Latencies are integer microseconds, rates per
//! second with one decimal.

use std::collections::BTreeMap;

use serde::Serialize;

use super::stats::Totals;
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
}
