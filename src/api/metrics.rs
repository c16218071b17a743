//! `GET /metrics`: this node's Prometheus metrics (OpenMetrics text), and the timing of
//! every API request by route pattern.
//!
//! State is read at scrape time from this node (Raft metrics, the local lock table, the
//! database); counters and histograms come from [`crate::metrics`]. The listing of the
//! families is in the README, section "Metrics".
//!
//! Access: with `[auth] enabled` a scrape needs a key of any application with any
//! permission ([`super::auth::Access::AnyKey`], like `/v1/cluster`): the families carry
//! counts, never keys, owners or applications, so a key that may read nothing still may
//! see them, and a scraper needs no lock permission.
//!
//! [`RequestTimer`] runs in the route layer: it sees axum's `MatchedPath` (the pattern, never
//! the raw path, so the `route` label takes one value per route) and indexes the
//! pre-registered histograms with it.

use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use openraft::async_runtime::WatchReceiver;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;

use super::problem::ApiError;
use super::App;
use crate::metrics::{encode_families, metrics, route_index};
use crate::raft::store::ALL_CFS;

/// The content type of the OpenMetrics text format that Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// RocksDB properties reported per column family, as the `kind` label names them.
const CF_SIZES: [(&str, &str); 2] = [
    ("sst", "rocksdb.total-sst-files-size"),
    ("memtable", "rocksdb.cur-size-all-mem-tables"),
];

/// `GET /metrics`.
pub async fn scrape(State(app): State<App>) -> Result<Response, ApiError> {
    let snapshot = NodeGauges::read(&app);
    let text = encode_families(move |enc| {
        snapshot.encode(enc)?;
        metrics().encode(enc)
    })
    .map_err(|e| ApiError::Internal(format!("cannot encode the metrics: {e}")))?;
    let mut resp = text.into_response();
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(CONTENT_TYPE));
    Ok(resp)
}

/// The timing of one request, started by every route's layer ([`super::each_route`]):
/// goes into the histogram of its route pattern and status class.
pub struct RequestTimer {
    route: usize,
    started: Instant,
}

impl RequestTimer {
    /// Starts timing a matched request.
    pub fn start(req: &Request) -> RequestTimer {
        let route = req
            .extensions()
            .get::<MatchedPath>()
            .map_or(crate::metrics::ROUTES.len(), |p| route_index(p.as_str()));
        RequestTimer {
            route,
            started: Instant::now(),
        }
    }

    /// Records the request with its answer's status.
    pub fn finish(self, resp: &Response) {
        metrics().request(self.route, resp.status().as_u16(), self.started.elapsed());
    }
}

/// The node's state, read once per scrape.
struct NodeGauges {
    term: u64,
    is_leader: bool,
    last_log_index: Option<u64>,
    committed_index: Option<u64>,
    applied_index: Option<u64>,
    snapshot_index: Option<u64>,
    /// `(follower, entries behind the leader's last log index)`, on the leader only.
    lag: Vec<(String, u64)>,
    held: usize,
    waiters: usize,
    stored: usize,
    /// `(column family, kind, bytes)`.
    sizes: Vec<(&'static str, &'static str, u64)>,
}

impl NodeGauges {
    fn read(app: &App) -> NodeGauges {
        let m = app.node.raft().metrics().borrow_watched().clone();
        let last = m.last_log_index.unwrap_or(0);
        let lag = m
            .replication
            .iter()
            .flatten()
            .filter(|(id, _)| **id != app.node.id())
            .map(|(id, matched)| {
                let matched = matched.as_ref().map_or(0, |l| l.index);
                (id.to_string(), last.saturating_sub(matched))
            })
            .collect();
        let (held, waiters, stored) = app
            .node
            .with_local_table(|t| (t.live_count(t.now_ms()), t.waiters_total(), t.len()));
        let mut sizes = Vec::new();
        if let Some(db) = app.node.db() {
            for name in ALL_CFS {
                let Some(cf) = db.cf_handle(name) else {
                    continue;
                };
                for (kind, property) in CF_SIZES {
                    if let Ok(Some(bytes)) = db.property_int_value_cf(&cf, property) {
                        sizes.push((name, kind, bytes));
                    }
                }
            }
        }
        NodeGauges {
            term: m.current_term,
            is_leader: m.state == openraft::ServerState::Leader,
            last_log_index: m.last_log_index,
            committed_index: m.local_committed.as_ref().map(|l| l.index),
            applied_index: m.last_applied.as_ref().map(|l| l.index),
            snapshot_index: m.snapshot.as_ref().map(|l| l.index),
            lag,
            held,
            waiters,
            stored,
            sizes,
        }
    }

    fn encode(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let as_i64 = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
        let gauge = |enc: &mut DescriptorEncoder, name: &str, help: &str, v: u64| {
            ConstGauge::new(as_i64(v)).encode(enc.encode_descriptor(
                name,
                help,
                None,
                MetricType::Gauge,
            )?)
        };
        gauge(enc, "baton_raft_term", "Current Raft term", self.term)?;
        gauge(
            enc,
            "baton_raft_is_leader",
            "1 while this node is the Raft leader, else 0",
            u64::from(self.is_leader),
        )?;
        for (name, help, v) in [
            (
                "baton_raft_last_log_index",
                "Index of the last entry in this node's log (0: none)",
                self.last_log_index,
            ),
            (
                "baton_raft_committed_index",
                "Highest log index this node knows to be committed (0: none)",
                self.committed_index,
            ),
            (
                "baton_raft_applied_index",
                "Highest log index applied to this node's lock table (0: none)",
                self.applied_index,
            ),
            (
                "baton_raft_snapshot_index",
                "Last log index in this node's current snapshot (0: none)",
                self.snapshot_index,
            ),
        ] {
            gauge(enc, name, help, v.unwrap_or(0))?;
        }
        let mut lag = enc.encode_descriptor(
            "baton_raft_replication_lag_entries",
            "On the leader: log entries each follower is behind the leader's last log index (no series on other nodes)",
            None,
            MetricType::Gauge,
        )?;
        for (follower, behind) in &self.lag {
            ConstGauge::new(as_i64(*behind))
                .encode(lag.encode_family(&[("follower", follower.as_str())])?)?;
        }
        gauge(
            enc,
            "baton_locks_held",
            "Live grants in this node's lock table at its last applied cluster time",
            self.held as u64,
        )?;
        gauge(
            enc,
            "baton_lock_waiters",
            "Waiters in all queues of this node's lock table (timed-out ones until swept)",
            self.waiters as u64,
        )?;
        gauge(
            enc,
            "baton_locks_stored_keys",
            "Keys stored in this node's lock table (held, queued or in lock-delay)",
            self.stored as u64,
        )?;
        let mut sizes = enc.encode_descriptor(
            "baton_storage_rocksdb_size_bytes",
            "RocksDB size per column family: sst files on disk, and memtables in memory",
            None,
            MetricType::Gauge,
        )?;
        for (cf, kind, bytes) in &self.sizes {
            ConstGauge::new(as_i64(*bytes))
                .encode(sizes.encode_family(&[("cf", *cf), ("kind", *kind)])?)?;
        }
        Ok(())
    }
}
