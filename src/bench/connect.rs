//! `--mode connect`: a reconnect storm. N clients, each with a connection of its own
//! (not yet made), are released at the same instant; each connects (TCP, and TLS for
//! `https://`) and sends one linearizable `GET` of a key the runner holds, once. The
//! report says how long until every client was served, when they connected, and the
//! failures by kind (a refused or timed-out connect, a `503 TOO_MANY_CONNECTIONS`, ...);
//! the clients then stay connected, idle, while the nodes' RSS and descriptors are
//! sampled: the cost of an idle keep-alive connection.
//!
//! A client does not retry: a failure is counted as it happened (the kernel's own SYN
//! retransmissions after a full listen backlog show up as connect times of 1 s and 3 s).
//! `--duration` and `--warmup` do not apply.
//!
//! Caveat: an idle connection is closed by the node after `api.header_read_timeout_ms`
//! (10 s), so a storm that takes longer than that samples fewer open connections than it
//! made; the report says how many were open at the sample.

use std::collections::BTreeMap;
use std::time::Duration;

use hyper::Method;
use serde::Serialize;
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{Conn, Dial};
use super::load::classify;
use super::stats::{new_histogram, LatencySummary, Op, Outcome, Recorder};

/// When one client got where, counted from the storm's start.
#[derive(Clone, Debug, PartialEq)]
pub struct Arrival {
    /// Its connection was made (`None`: it never was).
    pub connected: Option<Duration>,
    /// It had its answer (`None`: transport failure).
    pub answered: Option<Duration>,
    pub outcome: Outcome,
}

/// The storm, summarized.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ConnectTotals {
    pub clients: usize,
    /// Clients whose request succeeded.
    pub served: usize,
    /// Clients that failed, by kind (also in the report's `errors`).
    pub failed: usize,
    /// From the start until the last client was served, ms; `null` unless all were.
    pub all_served_ms: Option<f64>,
    /// From the start until each client was connected, µs.
    pub connected_us: LatencySummary,
    /// From the start until each successful client had its answer, µs.
    pub served_us: LatencySummary,
    /// Connections still open when the nodes were sampled.
    pub open_at_sample: usize,
}

/// Summarizes the arrivals; `open_at_sample` is filled in by the runner.
pub fn tally(arrivals: &[Arrival]) -> (ConnectTotals, Recorder) {
    let (mut connected, mut served) = (new_histogram(), new_histogram());
    let mut recorder = Recorder::default();
    let mut t = ConnectTotals {
        clients: arrivals.len(),
        ..ConnectTotals::default()
    };
    let mut last = Duration::ZERO;
    for a in arrivals {
        if let Some(c) = a.connected {
            connected.saturating_record(micros(c));
        }
        recorder.record(Op::Read, a.outcome.clone(), a.answered);
        match (&a.outcome, a.answered) {
            (Outcome::Success, Some(at)) => {
                t.served += 1;
                served.saturating_record(micros(at));
                last = last.max(at);
            }
            _ => t.failed += 1,
        }
    }
    if t.served == t.clients && t.clients > 0 {
        t.all_served_ms = Some((last.as_secs_f64() * 1e5).round() / 100.0);
    }
    t.connected_us = LatencySummary::of(&connected);
    t.served_us = LatencySummary::of(&served);
    (t, recorder)
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// One client: waits for the start, connects, sends its request.
async fn client(
    mut conn: Conn,
    path: String,
    mut go: watch::Receiver<Option<Instant>>,
) -> (Conn, Arrival) {
    let start = match go.wait_for(|s| s.is_some()).await {
        Ok(s) => s.unwrap_or_else(Instant::now),
        Err(_) => Instant::now(),
    };
    let connected = match conn.connect().await {
        Ok(()) => Some(start.elapsed()),
        Err(e) => {
            let arrival = Arrival {
                connected: None,
                answered: None,
                outcome: Outcome::Error(e.kind()),
            };
            return (conn, arrival);
        }
    };
    let result = conn.send(Method::GET, &path, None).await;
    let answered = result.is_ok().then(|| start.elapsed());
    let (outcome, _) = classify(result, None);
    let arrival = Arrival {
        connected,
        answered,
        outcome,
    };
    (conn, arrival)
}

/// Runs the storm: `n` clients, number `i` to `targets[i % len]`, each reading `path`.
/// Returns the clients' connections (still open, for the sample) and their arrivals.
pub async fn storm(
    targets: &[String],
    dial: &Dial,
    n: usize,
    path: &str,
) -> Result<(Vec<Conn>, Vec<Arrival>), super::BenchError> {
    let (go_tx, go_rx) = watch::channel(None);
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let conn = Conn::new(&targets[i % targets.len()], dial)
            .map_err(|e| super::BenchError::Connect(e.to_string()))?;
        tasks.push(tokio::spawn(client(conn, path.to_string(), go_rx.clone())));
    }
    // Every task is spawned and waiting: release them together.
    let _ = go_tx.send(Some(Instant::now()));
    let mut conns = Vec::with_capacity(n);
    let mut arrivals = Vec::with_capacity(n);
    for t in tasks {
        let (conn, arrival) = t
            .await
            .map_err(|e| super::BenchError::Task(e.to_string()))?;
        conns.push(conn);
        arrivals.push(arrival);
    }
    Ok((conns, arrivals))
}

/// Connections per target address, as [`storm`] spreads them.
pub fn spread(targets: &[String], n: usize) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for i in 0..n {
        *m.entry(targets[i % targets.len()].clone()).or_insert(0) += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Option<Duration> {
        Some(Duration::from_millis(n))
    }

    #[test]
    fn all_served_is_the_last_success_when_every_client_was_served() {
        let arrivals = [
            Arrival {
                connected: ms(1),
                answered: ms(5),
                outcome: Outcome::Success,
            },
            Arrival {
                connected: ms(1_000),
                answered: ms(1_010),
                outcome: Outcome::Success,
            },
        ];
        let (t, rec) = tally(&arrivals);
        assert_eq!((t.clients, t.served, t.failed), (2, 2, 0));
        assert_eq!(t.all_served_ms, Some(1_010.0));
        assert!(t.connected_us.max >= 999_000, "{:?}", t.connected_us);
        let totals = rec.summarize(Duration::from_secs(1));
        assert_eq!(totals.all.ops, 2);
        assert_eq!(totals.errors_total, 0);
    }

    #[test]
    fn failures_are_counted_by_kind_and_leave_all_served_open() {
        let arrivals = [
            Arrival {
                connected: ms(2),
                answered: ms(4),
                outcome: Outcome::Success,
            },
            Arrival {
                connected: None,
                answered: None,
                outcome: Outcome::Error("transport:timeout".into()),
            },
            Arrival {
                connected: ms(3),
                answered: ms(6),
                outcome: Outcome::Error("TOO_MANY_CONNECTIONS".into()),
            },
        ];
        let (t, rec) = tally(&arrivals);
        assert_eq!((t.served, t.failed), (1, 2));
        assert_eq!(t.all_served_ms, None);
        let totals = rec.summarize(Duration::from_secs(1));
        assert_eq!(totals.errors["transport:timeout"], 1);
        assert_eq!(totals.errors["TOO_MANY_CONNECTIONS"], 1);
        assert!(t.served_us.max < 5_000, "{:?}", t.served_us);
    }

    #[test]
    fn nobody_is_not_all_served() {
        assert_eq!(tally(&[]).0.all_served_ms, None);
    }

    #[test]
    fn clients_are_spread_round_robin() {
        let targets = vec!["a:1".to_string(), "b:1".to_string()];
        let s = spread(&targets, 5);
        assert_eq!((s["a:1"], s["b:1"]), (3, 2));
    }
}
