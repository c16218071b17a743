//! What one load task saw — latency histograms and outcome counts per operation — and
//! how the tasks' records merge into one summary.
//!
//! Each task owns a [`Recorder`] (no sharing, no locks on the hot path); the runner
//! merges them once at the end with [`Recorder::merge`]. Latencies are recorded in
//! microseconds in an HDR histogram with 3 significant digits (the reported percentiles
//! are within 0.1 % of the true value), clamped to [`MAX_LATENCY_US`].
//!
//! Definitions used in every report:
//! - a *request* is one HTTP request started inside the measured window;
//! - an *op* is a request that succeeded or ended with a refusal the mode expects
//!   (`LOCK_HELD` in contended mode): the work the service was asked to do;
//! - an *error* is any other answer (problem `code`, or `HTTP_<status>` without one) or a
//!   transport failure (`transport:<kind>`);
//! - latency covers every request that got an HTTP answer, errors included (a 5 s
//!   `OUTCOME_UNKNOWN` belongs in the tail), but not transport failures, which have no
//!   answer to time.

use std::collections::BTreeMap;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Largest latency a histogram can hold; longer ones are recorded as this.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Precision of the histograms: 3 significant digits.
const SIGNIFICANT_DIGITS: u8 = 3;

/// The kind of an HTTP request the benchmark sends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Op {
    /// `POST /v1/locks/{key}/acquire`
    Acquire,
    /// `POST /v1/locks/{key}/release`
    Release,
    /// `GET /v1/locks/{key}` (linearizable)
    Read,
}

impl Op {
    /// The JSON / table name.
    pub fn as_str(self) -> &'static str {
        match self {
            Op::Acquire => "acquire",
            Op::Release => "release",
            Op::Read => "read",
        }
    }
}

/// How one request ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// A 2xx answer.
    Success,
    /// A refusal the mode expects, counted as an op (e.g. `LOCK_HELD` when contended).
    Refused(&'static str),
    /// Anything else, by problem code or transport kind.
    Error(String),
}

/// An empty latency histogram (µs, 1 to [`MAX_LATENCY_US`], 3 significant digits).
pub fn new_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
        .expect("constant bounds 1..MAX_LATENCY_US with 3 digits are valid")
}

/// Counts and latencies of one operation kind.
#[derive(Clone, Debug)]
struct OpRecord {
    requests: u64,
    ops: u64,
    latency_us: Histogram<u64>,
}

impl Default for OpRecord {
    fn default() -> Self {
        OpRecord {
            requests: 0,
            ops: 0,
            latency_us: new_histogram(),
        }
    }
}

impl OpRecord {
    fn merge(&mut self, other: &OpRecord) {
        self.requests += other.requests;
        self.ops += other.ops;
        self.latency_us
            .add(&other.latency_us)
            .expect("histograms with the same bounds always add");
    }
}

/// Everything one load task recorded; merge tasks with [`Recorder::merge`].
#[derive(Clone, Debug, Default)]
pub struct Recorder {
    by_op: BTreeMap<Op, OpRecord>,
    refused: BTreeMap<&'static str, u64>,
    errors: BTreeMap<String, u64>,
    /// TCP connections made beyond the first of each task.
    pub reconnects: u64,
}

impl Recorder {
    /// Records one request inside the measured window. `latency` is `None` when the
    /// request got no HTTP answer (transport failure).
    pub fn record(&mut self, op: Op, outcome: Outcome, latency: Option<Duration>) {
        let rec = self.by_op.entry(op).or_default();
        rec.requests += 1;
        if let Some(latency) = latency {
            let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
            rec.latency_us.saturating_record(us.max(1));
        }
        match outcome {
            Outcome::Success => rec.ops += 1,
            Outcome::Refused(code) => {
                rec.ops += 1;
                *self.refused.entry(code).or_default() += 1;
            }
            Outcome::Error(code) => *self.errors.entry(code).or_default() += 1,
        }
    }

    /// Adds `other`'s counts and histograms to this one.
    pub fn merge(&mut self, other: &Recorder) {
        for (op, rec) in &other.by_op {
            self.by_op.entry(*op).or_default().merge(rec);
        }
        for (code, n) in &other.refused {
            *self.refused.entry(code).or_default() += n;
        }
        for (code, n) in &other.errors {
            *self.errors.entry(code.clone()).or_default() += n;
        }
        self.reconnects += other.reconnects;
    }

    /// Summarizes the record of a measured window of length `window`.
    pub fn summarize(&self, window: Duration) -> Totals {
        let mut all = OpRecord::default();
        for rec in self.by_op.values() {
            all.merge(rec);
        }
        Totals {
            all: OpSummary::of(&all, window),
            by_op: self
                .by_op
                .iter()
                .map(|(op, rec)| (op.as_str().to_string(), OpSummary::of(rec, window)))
                .collect(),
            refused: self
                .refused
                .iter()
                .map(|(c, n)| (c.to_string(), *n))
                .collect(),
            errors_total: self.errors.values().sum(),
            errors: self.errors.clone(),
            reconnects: self.reconnects,
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p99_9: u64,
    pub max: u64,
    pub mean: f64,
}

impl LatencySummary {
    /// The percentiles of `h` (all zero when it is empty).
    pub fn of(h: &Histogram<u64>) -> LatencySummary {
        if h.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            p50: h.value_at_quantile(0.50),
            p90: h.value_at_quantile(0.90),
            p99: h.value_at_quantile(0.99),
            p99_9: h.value_at_quantile(0.999),
            max: h.max(),
            mean: (h.mean() * 10.0).round() / 10.0,
        }
    }
}

/// Counts, rate and latency of one operation kind (or of all together).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OpSummary {
    /// Requests started inside the measured window.
    pub requests: u64,
    /// Requests that succeeded or were refused as the mode expects.
    pub ops: u64,
    /// `ops` per second of the measured window.
    pub ops_per_sec: f64,
    /// Latency of the requests that got an HTTP answer.
    pub latency_us: LatencySummary,
}

impl OpSummary {
    fn of(rec: &OpRecord, window: Duration) -> OpSummary {
        let secs = window.as_secs_f64();
        let rate = if secs > 0.0 {
            rec.ops as f64 / secs
        } else {
            0.0
        };
        OpSummary {
            requests: rec.requests,
            ops: rec.ops,
            ops_per_sec: (rate * 10.0).round() / 10.0,
            latency_us: LatencySummary::of(&rec.latency_us),
        }
    }
}

/// The merged record of a run.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Totals {
    /// Every operation kind together (flattened: `requests`, `ops`, `ops_per_sec`,
    /// `latency_us` at the top level of the JSON report).
    #[serde(flatten)]
    pub all: OpSummary,
    /// Per operation kind (`acquire`, `release`, `read`), only those that were sent.
    pub by_op: BTreeMap<String, OpSummary>,
    /// Expected refusals by problem code (counted in `ops`).
    pub refused: BTreeMap<String, u64>,
    pub errors_total: u64,
    /// Errors by problem `code`, `HTTP_<status>` or `transport:<kind>`.
    pub errors: BTreeMap<String, u64>,
    /// TCP connections made beyond the first of each load task.
    pub reconnects: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn counts_ops_refusals_and_errors_separately() {
        let mut r = Recorder::default();
        r.record(Op::Acquire, Outcome::Success, ms(1));
        r.record(Op::Acquire, Outcome::Refused("LOCK_HELD"), ms(2));
        r.record(Op::Acquire, Outcome::Error("NO_LEADER".into()), ms(3));
        r.record(
            Op::Release,
            Outcome::Error("transport:timeout".into()),
            None,
        );
        let t = r.summarize(Duration::from_secs(1));
        assert_eq!(t.all.requests, 4);
        assert_eq!(t.all.ops, 2);
        assert_eq!(t.all.ops_per_sec, 2.0);
        assert_eq!(t.by_op["acquire"].requests, 3);
        assert_eq!(t.by_op["acquire"].ops, 2);
        assert_eq!(t.by_op["release"].ops, 0);
        assert_eq!(t.refused["LOCK_HELD"], 1);
        assert_eq!(t.errors_total, 2);
        assert_eq!(t.errors["NO_LEADER"], 1);
        assert_eq!(t.errors["transport:timeout"], 1);
        // Three answered requests were timed; the transport failure was not.
        assert_eq!(t.all.latency_us.max, 3_001, "3 ms at 3 significant digits");
        assert_eq!(t.by_op["release"].latency_us, LatencySummary::default());
    }

    #[test]
    fn merge_adds_counts_and_histograms() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for _ in 0..99 {
            a.record(Op::Acquire, Outcome::Success, ms(1));
        }
        b.record(Op::Release, Outcome::Success, ms(100));
        b.record(Op::Acquire, Outcome::Error("INTERNAL".into()), ms(1));
        a.reconnects = 1;
        b.reconnects = 2;
        let mut merged = Recorder::default();
        merged.merge(&a);
        merged.merge(&b);
        let t = merged.summarize(Duration::from_secs(2));
        assert_eq!(t.all.requests, 101);
        assert_eq!(t.all.ops, 100);
        assert_eq!(t.all.ops_per_sec, 50.0);
        assert_eq!(t.by_op["acquire"].requests, 100);
        assert_eq!(t.by_op["release"].ops, 1);
        assert_eq!(t.errors["INTERNAL"], 1);
        assert_eq!(t.reconnects, 3);
        // 100 of 101 latencies are ~1 ms: p50 and p90 sit there, the max is the 100 ms.
        let l = &t.all.latency_us;
        assert!((1_000..=1_001).contains(&l.p50), "{l:?}");
        assert!((1_000..=1_001).contains(&l.p90), "{l:?}");
        assert!((99_900..=100_100).contains(&l.max), "{l:?}");
        assert_eq!(l.p99_9, l.max);
    }

    #[test]
    fn merging_is_order_independent() {
        let mut a = Recorder::default();
        let mut b = Recorder::default();
        for i in 1..=500u64 {
            a.record(
                Op::Read,
                Outcome::Success,
                Some(Duration::from_micros(i * 7)),
            );
            b.record(
                Op::Read,
                Outcome::Success,
                Some(Duration::from_micros(i * 13)),
            );
        }
        let mut ab = Recorder::default();
        ab.merge(&a);
        ab.merge(&b);
        let mut ba = Recorder::default();
        ba.merge(&b);
        ba.merge(&a);
        let w = Duration::from_secs(1);
        assert_eq!(ab.summarize(w), ba.summarize(w));
    }

    #[test]
    fn percentiles_follow_the_distribution() {
        let mut r = Recorder::default();
        for us in 1..=10_000u64 {
            r.record(Op::Read, Outcome::Success, Some(Duration::from_micros(us)));
        }
        let l = r.summarize(Duration::from_secs(1)).all.latency_us;
        let near = |got: u64, want: u64| got.abs_diff(want) * 1_000 <= want;
        assert!(near(l.p50, 5_000), "{l:?}");
        assert!(near(l.p90, 9_000), "{l:?}");
        assert!(near(l.p99, 9_900), "{l:?}");
        assert!(near(l.p99_9, 9_990), "{l:?}");
        assert!(near(l.max, 10_000), "{l:?}");
        assert!((l.mean - 5_000.5).abs() < 10.0, "{l:?}");
    }

    #[test]
    fn huge_and_zero_latencies_are_clamped() {
        let mut r = Recorder::default();
        r.record(Op::Read, Outcome::Success, Some(Duration::from_secs(3_600)));
        r.record(Op::Read, Outcome::Success, Some(Duration::ZERO));
        let l = r.summarize(Duration::from_secs(1)).all.latency_us;
        assert!(l.max >= MAX_LATENCY_US && l.max <= MAX_LATENCY_US + MAX_LATENCY_US / 1_000);
        assert_eq!(l.p50, 1);
    }

    #[test]
    fn empty_window_has_zero_rate() {
        let t = Recorder::default().summarize(Duration::ZERO);
        assert_eq!(t.all.ops_per_sec, 0.0);
        assert_eq!(t.all.requests, 0);
        assert!(t.by_op.is_empty());
    }
}
