//! The process's Prometheus counters and histograms, and their encoding for `GET /metrics`.
//!
//! Counters and histograms that code paths bump (requests, acquires, applied events,
//! log flushes, snapshots) live in one process-wide [`Metrics`] ([`metrics()`]); values
//! that are state (term, indexes, held locks, RocksDB sizes) are read from the node at
//! scrape time by `api::metrics`. Everything is encoded with `prometheus-client`'s
//! OpenMetrics text encoder ([`encode_families`]), never formatted by hand.
//!
//! # Cost on the hot path
//! Every label set is registered up front: a labelled counter is an array indexed by an
//! enum, the HTTP histograms a table indexed by route and status class, so recording
//! is a few relaxed atomic adds: no allocation, no map lookup, no lock.
//! [`AtomicHistogram`] exists because `prometheus-client`'s own histogram takes a
//! mutex on every observation.
//!
//! # Caveats
//! - One [`Metrics`] per process: a process that runs several nodes (in-process tests)
//!   adds their counts together. `baton server` runs one node.
//! - Counters derived from applied log entries (expiries, handoffs, applied events,
//!   lease refreshes) count on every node as it applies, so summing them across nodes
//!   counts each event once per replica.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::LazyLock;
use std::time::Duration;

use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::{MetricType, TypedMetric};

use crate::locks::{Command, Event, EventKind};
use crate::wire::ErrorCode;

/// Buckets (seconds) of request and storage latencies: 100 µs to 10 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0, 2.5, 10.0,
];

/// Buckets (seconds) of snapshot builds: 1 ms to 60 s.
pub const SNAPSHOT_BUCKETS: [f64; 8] = [0.001, 0.01, 0.1, 0.5, 1.0, 5.0, 15.0, 60.0];

/// A histogram of durations on atomics: observing is a bucket search and three relaxed
/// adds. A scrape may see a count one observation ahead of the sum (never a count that
/// disagrees with the buckets: the count is their total).
#[derive(Debug)]
pub struct AtomicHistogram {
    bounds: &'static [f64],
    /// One per bound, plus the `+Inf` bucket last; not cumulative.
    buckets: Box<[AtomicU64]>,
    sum_nanos: AtomicU64,
}

impl AtomicHistogram {
    /// An empty histogram with upper bounds `bounds` (seconds, increasing).
    pub fn new(bounds: &'static [f64]) -> AtomicHistogram {
        AtomicHistogram {
            bounds,
            buckets: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }
    }

    /// Records one duration.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        let i = self
            .bounds
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(self.bounds.len());
        self.buckets[i].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.buckets.iter().map(|b| b.load(Ordering::Relaxed)).sum()
    }
}

impl TypedMetric for AtomicHistogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for AtomicHistogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = self
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::INFINITY))
            .zip(self.buckets.iter().map(|b| b.load(Ordering::Relaxed)))
            .collect();
        let count = buckets.iter().map(|(_, n)| n).sum();
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

/// How an acquire this node served ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AcquireOutcome {
    /// Answered with a grant (at once or after waiting in the queue).
    Granted,
    /// Refused: another owner holds the key, or a lock-delay or the queue keeps it.
    Held,
    /// Joined the key's queue (it then also ends as granted or timeout, or its client
    /// left).
    Queued,
    /// Waited in the queue until its `wait_ms` ran out.
    Timeout,
}

impl AcquireOutcome {
    const ALL: [AcquireOutcome; 4] = [
        AcquireOutcome::Granted,
        AcquireOutcome::Held,
        AcquireOutcome::Queued,
        AcquireOutcome::Timeout,
    ];

    fn as_str(self) -> &'static str {
        match self {
            AcquireOutcome::Granted => "granted",
            AcquireOutcome::Held => "held",
            AcquireOutcome::Queued => "queued",
            AcquireOutcome::Timeout => "timeout",
        }
    }
}

/// What a relay to the leader came to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayResult {
    /// The leader answered (whatever its status).
    Answered,
    /// No leader, or it could not be reached before the request was sent: `NO_LEADER`.
    NoLeader,
    /// A write got no answer: `OUTCOME_UNKNOWN`.
    OutcomeUnknown,
}

impl RelayResult {
    const ALL: [RelayResult; 3] = [
        RelayResult::Answered,
        RelayResult::NoLeader,
        RelayResult::OutcomeUnknown,
    ];

    fn as_str(self) -> &'static str {
        match self {
            RelayResult::Answered => "answered",
            RelayResult::NoLeader => "no_leader",
            RelayResult::OutcomeUnknown => "outcome_unknown",
        }
    }
}

/// Applied event kinds, in the order of their counters.
const EVENT_KINDS: [EventKind; 8] = [
    EventKind::Acquired,
    EventKind::Renewed,
    EventKind::Released,
    EventKind::Expired,
    EventKind::ForceReleased,
    EventKind::Queued,
    EventKind::WaitTimeout,
    EventKind::WaitCancelled,
];

/// The routes the request histogram tells apart, as axum's `MatchedPath` names them.
/// A matched route not listed here is counted as `other` (a test checks every route of
/// the router is listed); unmatched requests (404, 405) are not timed here, their
/// problem code is counted in `baton_http_problems_total`.
pub const ROUTES: [&str; 26] = [
    "/v1/locks",
    "/v1/locks/{key}",
    "/v1/locks/{key}/acquire",
    "/v1/locks/{key}/renew",
    "/v1/locks/{key}/release",
    "/v1/locks/{key}/validate",
    "/v1/locks/{key}/cancel",
    "/v1/locks/{key}/events",
    "/v1/events",
    "/v1/cluster",
    "/v1/cluster/snapshot",
    "/v1/cluster/backup",
    "/v1/cluster/nodes",
    "/v1/cluster/nodes/{id}",
    "/v1/cluster/nodes/{id}/allow-rejoin",
    "/v1/openapi.json",
    "/ui",
    "/healthz",
    "/readyz",
    "/metrics",
    "/api/v1alpha1/lock",
    "/api/v1alpha1/lock/{id}",
    "/api/v1alpha1/lock/",
    "/api/v1alpha1/unlock/{id}",
    "/api/v1alpha1/unlock/",
    "/api/v1alpha1/locks/list",
];

/// Index of the `other` route in the request histogram table.
const OTHER_ROUTE: usize = ROUTES.len();

/// Status classes of the request histogram.
const STATUS_CLASSES: [&str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

/// The process's counters and histograms (see the module docs).
#[derive(Debug)]
pub struct Metrics {
    leader_changes: Counter,
    snapshot_builds: AtomicHistogram,
    snapshot_installs: Counter,
    acquires: [Counter; AcquireOutcome::ALL.len()],
    renewals: Counter,
    releases: Counter,
    force_releases: Counter,
    applied_events: [Counter; EVENT_KINDS.len()],
    handoffs: Counter,
    lease_refreshes: Counter,
    /// `[route][status class]`, `other` last.
    requests: Box<[[AtomicHistogram; STATUS_CLASSES.len()]]>,
    relays: [Counter; RelayResult::ALL.len()],
    problems: [Counter; ErrorCode::ALL.len()],
    log_flushes: AtomicHistogram,
    fail_stops: Counter,
}

static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// The process's metrics.
pub fn metrics() -> &'static Metrics {
    &METRICS
}

impl Metrics {
    fn new() -> Metrics {
        Metrics {
            leader_changes: Counter::default(),
            snapshot_builds: AtomicHistogram::new(&SNAPSHOT_BUCKETS),
            snapshot_installs: Counter::default(),
            acquires: Default::default(),
            renewals: Counter::default(),
            releases: Counter::default(),
            force_releases: Counter::default(),
            applied_events: Default::default(),
            handoffs: Counter::default(),
            lease_refreshes: Counter::default(),
            requests: (0..=ROUTES.len())
                .map(|_| std::array::from_fn(|_| AtomicHistogram::new(&LATENCY_BUCKETS)))
                .collect(),
            relays: Default::default(),
            problems: Default::default(),
            log_flushes: AtomicHistogram::new(&LATENCY_BUCKETS),
            fail_stops: Counter::default(),
        }
    }

    /// This node saw the leader change (another leader, or none).
    pub fn leader_changed(&self) {
        self.leader_changes.inc();
    }

    /// A snapshot was built in `took`.
    pub fn snapshot_built(&self, took: Duration) {
        self.snapshot_builds.observe(took);
    }

    /// A snapshot from the leader was installed.
    pub fn snapshot_installed(&self) {
        self.snapshot_installs.inc();
    }

    /// An acquire served here ended (or joined a queue) with `outcome`.
    pub fn acquire(&self, outcome: AcquireOutcome) {
        self.acquires[outcome as usize].inc();
    }

    /// A renew served here succeeded.
    pub fn renewed(&self) {
        self.renewals.inc();
    }

    /// A release served here freed a lock (`forced`: an admin's force release).
    pub fn released(&self, forced: bool) {
        if forced {
            self.force_releases.inc();
        } else {
            self.releases.inc();
        }
    }

    /// One committed entry was applied: counts its events, and the grants it made to
    /// waiters (every `Acquired` event except the grant of the entry's own acquire).
    pub fn applied(&self, cmd: &Command, events: &[Event]) {
        let mut own = direct_acquire(cmd);
        for e in events {
            self.applied_events[e.kind as usize].inc();
            if e.kind == EventKind::Acquired {
                match own {
                    Some((key, owner)) if *key == e.key && *owner == e.owner => own = None,
                    _ => {
                        self.handoffs.inc();
                    }
                }
            }
        }
        if matches!(cmd, Command::RefreshLeases { .. }) {
            self.lease_refreshes.inc();
        }
    }

    /// A request to the route at `route` (an index of [`ROUTES`], [`route_index`])
    /// was answered with `status` after `took`.
    pub fn request(&self, route: usize, status: u16, took: Duration) {
        let class = usize::from(status / 100)
            .saturating_sub(1)
            .min(STATUS_CLASSES.len() - 1);
        self.requests[route.min(OTHER_ROUTE)][class].observe(took);
    }

    /// A relay to the leader came to `result`.
    pub fn relayed(&self, result: RelayResult) {
        self.relays[result as usize].inc();
    }

    /// A problem answer with `code` was sent.
    pub fn problem(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.problems[i].inc();
        }
    }

    /// Log entries were written and synced `took` after the append began.
    pub fn log_flushed(&self, took: Duration) {
        self.log_flushes.observe(took);
    }

    /// Raft stopped on an error; the process exits after draining.
    pub fn fail_stopped(&self) {
        self.fail_stops.inc();
    }

    /// Encodes every family of this struct.
    pub fn encode(&self, enc: &mut DescriptorEncoder) -> Result<(), std::fmt::Error> {
        counter(
            enc,
            "baton_raft_leader_changes",
            "Times this node saw the Raft leader change (to another node or to none)",
            &self.leader_changes,
        )?;
        histogram(
            enc,
            "baton_raft_snapshot_build_seconds",
            "Snapshot builds on this node and how long each took",
            &self.snapshot_builds,
        )?;
        counter(
            enc,
            "baton_raft_snapshot_installs",
            "Snapshots received from the leader and installed on this node",
            &self.snapshot_installs,
        )?;
        let acquires = AcquireOutcome::ALL.map(|o| (o.as_str(), &self.acquires[o as usize]));
        labelled_counters(
            enc,
            "baton_lock_acquires",
            "Acquires served by this node (the leader; a relaying follower does not count them), by outcome; queued ones also end as granted or timeout unless their client left",
            "outcome",
            &acquires,
        )?;
        counter(
            enc,
            "baton_lock_renewals",
            "Successful renews served by this node",
            &self.renewals,
        )?;
        counter(
            enc,
            "baton_lock_releases",
            "Releases served by this node that freed a lock",
            &self.releases,
        )?;
        counter(
            enc,
            "baton_lock_force_releases",
            "Admin force releases served by this node that freed a lock",
            &self.force_releases,
        )?;
        counter(
            enc,
            "baton_lock_expiries",
            "Leases that ran out, counted from applied log entries: every node counts each expiry as it applies it",
            &self.applied_events[EventKind::Expired as usize],
        )?;
        counter(
            enc,
            "baton_lock_handoffs",
            "Locks granted to a queued waiter, counted from applied log entries: every node counts each handoff as it applies it",
            &self.handoffs,
        )?;
        counter(
            enc,
            "baton_lock_lease_refreshes",
            "Lease refreshes by a newly elected leader, counted from applied log entries on every node",
            &self.lease_refreshes,
        )?;
        let events = EVENT_KINDS.map(|k| (k.as_str(), &self.applied_events[k as usize]));
        labelled_counters(
            enc,
            "baton_lock_events",
            "Lock events applied on this node, by kind (every node counts every event)",
            "kind",
            &events,
        )?;
        let mut requests = enc.encode_descriptor(
            "baton_http_request_duration_seconds",
            "API requests answered by this node by route pattern and status class, and how long each took (relayed ones included)",
            None,
            MetricType::Histogram,
        )?;
        for (r, by_class) in self.requests.iter().enumerate() {
            let route = ROUTES.get(r).copied().unwrap_or("other");
            for (class, h) in STATUS_CLASSES.iter().zip(by_class.iter()) {
                if h.count() == 0 {
                    continue;
                }
                let labels = [("route", route), ("status", *class)];
                h.encode(requests.encode_family(&labels)?)?;
            }
        }
        let relays = RelayResult::ALL.map(|r| (r.as_str(), &self.relays[r as usize]));
        labelled_counters(
            enc,
            "baton_http_relayed_requests",
            "Requests this node relayed to the leader, by result",
            "result",
            &relays,
        )?;
        let problems = ErrorCode::ALL.map(|c| {
            let i = ErrorCode::ALL
                .iter()
                .position(|x| *x == c)
                .expect("a code of ALL");
            (c.as_str(), &self.problems[i])
        });
        labelled_counters(
            enc,
            "baton_http_problems",
            "Problem answers (application/problem+json) this node sent, by code (NO_LEADER and OUTCOME_UNKNOWN among them)",
            "code",
            &problems,
        )?;
        histogram(
            enc,
            "baton_storage_log_flush_seconds",
            "Raft log appends, from the write to the WAL sync that makes them durable (group commit)",
            &self.log_flushes,
        )?;
        counter(
            enc,
            "baton_storage_fail_stops",
            "Times Raft stopped on a storage error; the process exits after draining, so this is seen only during that drain",
            &self.fail_stops,
        )
    }
}

/// Runs until Raft stops: counts each change of the leader this node knows (another
/// node, or none) and logs it.
pub async fn count_leader_changes(node: crate::node::Node) {
    use openraft::async_runtime::WatchReceiver;
    let mut rx = node.raft().metrics();
    let mut known = rx.borrow_watched().current_leader;
    while rx.changed().await.is_ok() {
        let leader = rx.borrow_watched().current_leader;
        if leader != known {
            metrics().leader_changed();
            tracing::info!(leader_id = leader, previous = known, "leader changed");
            known = leader;
        }
    }
}

/// The owner and key of `cmd` when it is an acquire (whose own grant is no handoff).
fn direct_acquire(cmd: &Command) -> Option<(&crate::locks::Key, &crate::locks::Owner)> {
    match cmd {
        Command::Acquire { key, owner, .. } | Command::AcquireExclusive { key, owner, .. } => {
            Some((key, owner))
        }
        Command::AsApp { command, .. } => direct_acquire(command),
        _ => None,
    }
}

/// The index in [`ROUTES`] of a matched route pattern ([`ROUTES`]`.len()`: other).
pub fn route_index(pattern: &str) -> usize {
    ROUTES
        .iter()
        .position(|r| *r == pattern)
        .unwrap_or(OTHER_ROUTE)
}

fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    c: &Counter,
) -> Result<(), std::fmt::Error> {
    c.encode(enc.encode_descriptor(name, help, None, MetricType::Counter)?)
}

fn histogram(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    h: &AtomicHistogram,
) -> Result<(), std::fmt::Error> {
    h.encode(enc.encode_descriptor(name, help, None, MetricType::Histogram)?)
}

fn labelled_counters(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    label: &str,
    values: &[(&str, &Counter)],
) -> Result<(), std::fmt::Error> {
    let mut family = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
    for (value, c) in values {
        c.encode(family.encode_family(&[(label, *value)])?)?;
    }
    Ok(())
}

/// Encodes families written by `f` as the OpenMetrics text format.
pub fn encode_families(
    f: impl Fn(&mut DescriptorEncoder) -> Result<(), std::fmt::Error> + Send + Sync + 'static,
) -> Result<String, std::fmt::Error> {
    struct Families<F>(F);
    impl<F> std::fmt::Debug for Families<F> {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("Families")
        }
    }
    impl<F> prometheus_client::collector::Collector for Families<F>
    where
        F: Fn(&mut DescriptorEncoder) -> Result<(), std::fmt::Error> + Send + Sync + 'static,
    {
        fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
            (self.0)(&mut encoder)
        }
    }
    let mut registry = prometheus_client::registry::Registry::default();
    registry.register_collector(Box::new(Families(f)));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_histogram_puts_each_duration_in_its_bucket_and_sums_them() {
        let h = AtomicHistogram::new(&LATENCY_BUCKETS);
        h.observe(Duration::from_micros(50));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        assert_eq!(h.count(), 3);
        let text =
            encode_families(move |enc| histogram(enc, "t_seconds", "test", &h)).expect("encodes");
        assert!(text.contains("t_seconds_count 3"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.0001\"} 1"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"0.005\"} 2"), "{text}");
        assert!(text.contains("t_seconds_bucket{le=\"+Inf\"} 3"), "{text}");
        assert!(text.contains("t_seconds_sum 60.00305"), "{text}");
    }

    #[test]
    fn status_classes_and_unknown_routes_have_their_own_series() {
        let m = Metrics::new();
        m.request(route_index("/v1/locks/{key}/acquire"), 200, Duration::ZERO);
        m.request(route_index("/v1/locks/{key}/acquire"), 409, Duration::ZERO);
        m.request(route_index("/not/a/route"), 503, Duration::ZERO);
        let text = encode_families(move |enc| m.encode(enc)).expect("encodes");
        for series in [
            r#"baton_http_request_duration_seconds_count{route="/v1/locks/{key}/acquire",status="2xx"} 1"#,
            r#"baton_http_request_duration_seconds_count{route="/v1/locks/{key}/acquire",status="4xx"} 1"#,
            r#"baton_http_request_duration_seconds_count{route="other",status="5xx"} 1"#,
        ] {
            assert!(text.contains(series), "{series} missing in\n{text}");
        }
    }

    /// The route patterns registered in `source`: the string literal after each
    /// `.route(`, with Tracker's `{PREFIX}` filled in and `format!`'s `{{ }}` undone.
    pub(crate) fn routes_in(source: &str) -> Vec<String> {
        source
            .split(".route(")
            .skip(1)
            .filter_map(|rest| {
                let start = rest.find('"')?;
                // Only a literal that is the call's first argument.
                if rest[..start].contains(')') {
                    return None;
                }
                let lit = &rest[start + 1..];
                let lit = &lit[..lit.find('"')?];
                Some(
                    lit.replace("{PREFIX}", crate::compat::tracker::rest::PREFIX)
                        .replace("{{", "{")
                        .replace("}}", "}"),
                )
            })
            .collect()
    }

    #[test]
    fn every_route_of_the_api_router_has_its_own_histogram_series() {
        let mut found = routes_in(include_str!("api/mod.rs"));
        found.extend(routes_in(include_str!("compat/tracker/rest.rs")));
        assert!(found.len() >= 20, "{found:?}");
        for route in found {
            assert_ne!(route_index(&route), OTHER_ROUTE, "{route} is not in ROUTES");
        }
    }

    #[test]
    fn a_grant_to_a_waiter_is_a_handoff_and_the_acquires_own_grant_is_not() {
        use crate::locks::{Key, LockTable, Owner};
        let m = Metrics::new();
        let mut t = LockTable::default();
        let key = Key::parse("k").expect("a key");
        let a = Owner::parse("a".to_string()).expect("an owner");
        let b = Owner::parse("b".to_string()).expect("an owner");
        let cmds = [
            Command::acquire(key.clone(), a.clone(), 10_000, 1),
            Command::acquire_with(
                key.clone(),
                b,
                crate::locks::AcquireOptions {
                    ttl_ms: 10_000,
                    wait_ms: 5_000,
                    lock_delay_ms: 0,
                },
                2,
            ),
            Command::release_by_owner(key, a, 3),
        ];
        for (i, cmd) in cmds.iter().enumerate() {
            let applied = t.apply(i as u64 + 1, cmd);
            m.applied(cmd, &applied.events);
        }
        assert_eq!(m.handoffs.get(), 1);
        assert_eq!(m.applied_events[EventKind::Acquired as usize].get(), 2);
        assert_eq!(m.applied_events[EventKind::Queued as usize].get(), 1);
    }
}
