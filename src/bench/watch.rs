//! `--mode watch`: N Server-Sent Event streams (`GET /v1/locks/{key}/events`) on one or
//! many keys, spread over the nodes, while one writer changes the keys at a fixed rate.
//!
//! ```text
//! open N streams (≤ OPEN_CONCURRENCY at once) ─ sample RSS ─ writer: warmup ─┬─ duration ─┬─ drain ─ sample ─ close
//!                                                                       measure_from     end
//! ```
//! Stream `i` follows key `i % keys` on the node [`assign`] picks, so that every key is
//! followed on every node. The writer, on one connection to the leader, takes the keys
//! in turn at `--rate` writes a second (open loop: a slow write delays the next, it
//! never bursts): a key it does not hold it acquires, one it holds it releases. Each
//! write is one Raft entry and one event, known by its kind and token
//! ([`event_id`]), so every stream can tell which write each event it received is.
//!
//! For each write started inside the measured window the report counts, over the
//! streams of its key: deliveries, **lost** (a stream never got it by the end of the
//! drain) and **duplicated** (a stream got it twice); and times each delivery twice:
//! from the moment the writer *sent* the write (includes its commit), and from its
//! *acknowledgement* (a stream on the leader is usually told before the writer,
//! since the leader applies, publishes, then answers: such deliveries count as 0 and
//! in `before_ack`). A `reset` event (the node dropped events for a slow stream) is
//! counted: it means the stream would have to re-read the lock.
//!
//! Caveats: all the streams' client side runs in this one process, on the same cores
//! as the nodes in a local run: a delivery is timed when this process reads it, so a
//! busy client inflates the latency. Events of writes whose outcome is unknown are
//! `unmatched`, not lost.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::Method;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::time::Instant;

use super::conn::{Conn, Dial};
use super::load::{acquire_body, classify, release_body, token_of};
use super::stats::{new_histogram, LatencySummary, Op, Outcome, Recorder};
use super::BenchError;
use crate::wire::EventKind;

/// Streams being opened at once: opening is not what this mode measures (see
/// `--mode connect`), and a burst of thousands of handshakes overflows a listen backlog.
pub const OPEN_CONCURRENCY: usize = 128;
/// Longest wait after the writer's last write for the streams to receive it.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(5);
/// How often the drain checks whether every delivery arrived.
const DRAIN_POLL: Duration = Duration::from_millis(50);
/// Longest SSE block a stream buffers; a longer one means a broken stream.
const MAX_BLOCK_BYTES: usize = 64 * 1024;

/// The key watched by stream `stream` and the index of the target it connects to:
/// key `stream % keys`, and the `r`-th stream of a key on target `(key + r) % targets`,
/// so that each key's streams are spread over every node.
pub fn assign(stream: usize, keys: usize, targets: usize) -> (usize, usize) {
    let keys = keys.max(1);
    let key = stream % keys;
    let round = stream / keys;
    (key, (key + round) % targets.max(1))
}

/// The name of key `j` of run `run_id`.
pub fn key_name(run_id: &str, j: usize) -> String {
    format!("bench-{run_id}-watch-{j}")
}

/// A number for the event a write causes: its token, and whether it released it.
pub fn event_id(kind: EventKind, token: u64) -> Option<u64> {
    let released = match kind {
        EventKind::Acquired => 0,
        EventKind::Released => 1,
        _ => return None,
    };
    token.checked_mul(2).map(|t| t | released)
}

/// One acknowledged write.
#[derive(Clone, Debug)]
pub struct Write {
    /// [`event_id`] of the event it caused.
    pub id: u64,
    /// Index of its key.
    pub key: usize,
    pub sent: Instant,
    pub acked: Instant,
    /// Sent inside the measured window.
    pub measured: bool,
}

/// What one stream received.
#[derive(Debug, Default)]
pub struct StreamLog {
    /// Index of its key.
    pub key: usize,
    /// [`event_id`] and arrival of each of its key's acquire/release events.
    pub received: Vec<(u64, Instant)>,
    /// `reset` events.
    pub resets: u64,
    /// Events that are not an acquire or release of its key (or did not parse).
    pub other: u64,
    /// The node ended the stream before the benchmark did.
    pub closed_early: bool,
}

/// Deliveries, losses and latencies over every stream.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct WatchTotals {
    /// Measured writes acknowledged.
    pub writes: u64,
    /// (measured write, stream of its key) pairs: what should have been delivered.
    pub expected: u64,
    pub delivered: u64,
    pub lost: u64,
    pub duplicated: u64,
    /// Events of no acknowledged write (an unknown outcome), or of another key.
    pub unmatched: u64,
    pub resets: u64,
    /// Streams the node ended early.
    pub closed_early: u64,
    /// Deliveries that reached their stream before the writer had the answer.
    pub before_ack: u64,
    /// From the write being sent to each delivery, µs.
    pub latency_from_send_us: LatencySummary,
    /// From the write's acknowledgement to each delivery (0 when before it), µs.
    pub latency_after_ack_us: LatencySummary,
}

/// Matches the streams' deliveries with the writes.
pub fn tally(writes: &[Write], streams: &[StreamLog]) -> WatchTotals {
    let by_id: HashMap<u64, &Write> = writes.iter().map(|w| (w.id, w)).collect();
    let mut measured_by_key: BTreeMap<usize, Vec<u64>> = BTreeMap::new();
    for w in writes.iter().filter(|w| w.measured) {
        measured_by_key.entry(w.key).or_default().push(w.id);
    }
    let mut t = WatchTotals {
        writes: writes.iter().filter(|w| w.measured).count() as u64,
        ..WatchTotals::default()
    };
    let (mut from_send, mut after_ack) = (new_histogram(), new_histogram());
    for s in streams {
        t.resets += s.resets;
        t.unmatched += s.other;
        t.closed_early += u64::from(s.closed_early);
        let mut seen = HashSet::with_capacity(s.received.len());
        for &(id, at) in &s.received {
            if !seen.insert(id) {
                t.duplicated += 1;
                continue;
            }
            match by_id.get(&id) {
                Some(w) if w.key == s.key => {
                    if w.measured {
                        t.delivered += 1;
                        record(&mut from_send, at.saturating_duration_since(w.sent));
                        if at < w.acked {
                            t.before_ack += 1;
                        }
                        record(&mut after_ack, at.saturating_duration_since(w.acked));
                    }
                }
                _ => t.unmatched += 1,
            }
        }
        let expected = measured_by_key.get(&s.key).map_or(&[][..], |v| &v[..]);
        t.expected += expected.len() as u64;
        t.lost += expected.iter().filter(|id| !seen.contains(id)).count() as u64;
    }
    t.latency_from_send_us = LatencySummary::of(&from_send);
    t.latency_after_ack_us = LatencySummary::of(&after_ack);
    t
}

fn record(h: &mut hdrhistogram::Histogram<u64>, d: Duration) {
    let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
    h.saturating_record(us.max(1));
}

/// The part of an event's JSON a stream reads.
#[derive(Deserialize)]
struct Delivered {
    key: String,
    event: EventKind,
    token: Option<u64>,
}

/// What one SSE block (the text between blank lines) is to a stream of `key`.
#[derive(Debug, PartialEq, Eq)]
pub enum Block {
    /// An acquire or release of the key: its [`event_id`].
    Event(u64),
    Reset,
    /// Another event, or one that does not parse.
    Other,
    /// A comment (keep-alive).
    Nothing,
}

/// Reads one SSE block of a stream of `key`.
pub fn read_block(block: &str, key: &str) -> Block {
    let (mut name, mut data) = (None, None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = Some(v.trim());
        } else if let Some(v) = line.strip_prefix("data:") {
            data = Some(v.trim_start());
        }
    }
    let Some(data) = data else {
        return Block::Nothing;
    };
    if name == Some("reset") {
        return Block::Reset;
    }
    match serde_json::from_str::<Delivered>(data) {
        Ok(d) if d.key == key => d
            .token
            .and_then(|t| event_id(d.event, t))
            .map_or(Block::Other, Block::Event),
        _ => Block::Other,
    }
}

/// Reads `body` until `stop` turns true or the node ends it.
async fn follow(
    mut body: Incoming,
    key: usize,
    key_name: String,
    mut stop: watch::Receiver<bool>,
    received_total: Arc<AtomicU64>,
) -> StreamLog {
    let mut log = StreamLog {
        key,
        ..StreamLog::default()
    };
    let mut buf: Vec<u8> = Vec::new();
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.wait_for(|s| *s) => return log,
        };
        let Some(Ok(frame)) = frame else {
            log.closed_early = true;
            return log;
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        let at = Instant::now();
        buf.extend_from_slice(&data);
        while let Some(end) = buf.windows(2).position(|w| w == b"\n\n") {
            let block = String::from_utf8_lossy(&buf[..end]).into_owned();
            buf.drain(..end + 2);
            match read_block(&block, &key_name) {
                Block::Event(id) => {
                    log.received.push((id, at));
                    received_total.fetch_add(1, Ordering::Relaxed);
                }
                Block::Reset => log.resets += 1,
                Block::Other => log.other += 1,
                Block::Nothing => {}
            }
        }
        if buf.len() > MAX_BLOCK_BYTES {
            log.other += 1;
            log.closed_early = true;
            return log;
        }
    }
}

/// An open stream: the task reading it.
pub struct OpenStream {
    /// Index of its target and of its key.
    pub target: usize,
    pub key: usize,
    pub task: tokio::task::JoinHandle<StreamLog>,
}

/// Opens stream `i` of `n`; `Err` is the refusal's error label.
async fn open_one(
    i: usize,
    keys: &[String],
    targets: &[String],
    dial: &Dial,
    stop: &watch::Receiver<bool>,
    received_total: &Arc<AtomicU64>,
) -> Result<OpenStream, String> {
    let (key, target) = assign(i, keys.len(), targets.len());
    let mut conn = Conn::new(&targets[target], dial).map_err(|e| e.kind())?;
    let path = format!("/v1/locks/{}/events", keys[key]);
    let response = conn.open_stream(&path).await.map_err(|e| e.kind())?;
    if !response.status().is_success() {
        let status = response.status();
        let body = response
            .into_body()
            .collect()
            .await
            .map(|b| b.to_bytes())
            .unwrap_or_default();
        let answer = super::conn::Answer { status, body };
        return match classify(Ok(answer), None).0 {
            Outcome::Error(code) => Err(code),
            other => Err(format!("{other:?}")),
        };
    }
    let body = response.into_body();
    // The connection (owned by `conn`) lives as long as the task that reads it.
    let task = tokio::spawn({
        let (name, stop, total) = (keys[key].clone(), stop.clone(), received_total.clone());
        async move {
            let log = follow(body, key, name, stop, total).await;
            drop(conn);
            log
        }
    });
    Ok(OpenStream { target, key, task })
}

/// Opens `n` streams, [`OPEN_CONCURRENCY`] at a time; returns the open ones and the
/// refusals by label.
pub async fn open_all(
    n: usize,
    keys: &[String],
    targets: &[String],
    dial: &Dial,
    stop: &watch::Receiver<bool>,
    received_total: &Arc<AtomicU64>,
) -> (Vec<OpenStream>, BTreeMap<String, u64>) {
    let mut results = futures::stream::iter(0..n)
        .map(|i| open_one(i, keys, targets, dial, stop, received_total))
        .buffer_unordered(OPEN_CONCURRENCY);
    let (mut open, mut refused) = (Vec::with_capacity(n), BTreeMap::new());
    while let Some(r) = results.next().await {
        match r {
            Ok(s) => open.push(s),
            Err(label) => *refused.entry(label).or_insert(0) += 1,
        }
    }
    (open, refused)
}

/// The writer's schedule.
pub struct WritePlan {
    pub keys: Vec<String>,
    pub owner: String,
    pub ttl_ms: u64,
    /// Time between writes.
    pub interval: Duration,
    pub measure_from: Instant,
    pub end: Instant,
}

/// What the writer did.
pub struct Written {
    pub writes: Vec<Write>,
    pub recorder: Recorder,
    /// The token of each key it still holds.
    pub held: Vec<Option<u64>>,
}

/// Writes until the plan's end: acquires the next key it does not hold, releases the
/// next one it does.
pub async fn write(mut conn: Conn, plan: &WritePlan) -> (Conn, Written) {
    let mut out = Written {
        writes: Vec::new(),
        recorder: Recorder::default(),
        held: vec![None; plan.keys.len()],
    };
    let mut ticks = tokio::time::interval(plan.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut n = 0usize;
    loop {
        let sent = ticks.tick().await;
        let sent = sent.max(Instant::now());
        if sent >= plan.end {
            return (conn, out);
        }
        let j = n % plan.keys.len();
        n += 1;
        let key = &plan.keys[j];
        let (op, path, body, released) = match out.held[j] {
            Some(token) => (
                Op::Release,
                format!("/v1/locks/{key}/release"),
                release_body(token),
                Some(token),
            ),
            None => (
                Op::Acquire,
                format!("/v1/locks/{key}/acquire"),
                acquire_body(&plan.owner, plan.ttl_ms),
                None,
            ),
        };
        let result = conn.send(Method::POST, &path, Some(body)).await;
        let acked = Instant::now();
        let answered = result.is_ok();
        let (outcome, success) = classify(result, None);
        let measured = sent >= plan.measure_from;
        if measured {
            out.recorder
                .record(op, outcome.clone(), answered.then_some(acked - sent));
        }
        let id = match (released, success.as_deref()) {
            (Some(token), Some(_)) => {
                out.held[j] = None;
                event_id(EventKind::Released, token)
            }
            (None, Some(body)) => token_of(body).and_then(|token| {
                out.held[j] = Some(token);
                event_id(EventKind::Acquired, token)
            }),
            // Failed or unknown: no event to expect. A release that failed may have
            // released, so the key is not counted as held any more.
            (Some(_), None) => {
                out.held[j] = None;
                None
            }
            (None, None) => None,
        };
        if let Some(id) = id {
            out.writes.push(Write {
                id,
                key: j,
                sent,
                acked,
                measured,
            });
        }
    }
}

/// Waits until the streams received `expected` events in all, or [`DRAIN_TIMEOUT`].
pub async fn drain(received_total: &AtomicU64, expected: u64) {
    let deadline = Instant::now() + DRAIN_TIMEOUT;
    while received_total.load(Ordering::Relaxed) < expected && Instant::now() < deadline {
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

/// Events the streams should receive in all: each write, once per stream of its key.
pub fn expected_deliveries(writes: &[Write], streams_per_key: &[u64]) -> u64 {
    writes
        .iter()
        .map(|w| streams_per_key.get(w.key).copied().unwrap_or(0))
        .sum()
}

/// Checks watch settings: at least one key, no more keys than streams, a positive rate.
pub fn validate(streams: usize, keys: usize, rate: u32) -> Result<Duration, BenchError> {
    if keys == 0 || keys > streams {
        return Err(BenchError::Invalid(format!(
            "--keys must be between 1 and --conns ({streams}), not {keys}"
        )));
    }
    if rate == 0 {
        return Err(BenchError::Invalid("--rate must be at least 1".into()));
    }
    Ok(Duration::from_secs(1) / rate)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_is_followed_on_every_node() {
        for (keys, n) in [(1, 9), (3, 9), (9, 9), (2, 12)] {
            let mut pairs = HashSet::new();
            let mut per_target = [0usize; 3];
            for i in 0..n {
                let (k, t) = assign(i, keys, 3);
                assert!(k < keys && t < 3);
                pairs.insert((k, t));
                per_target[t] += 1;
            }
            // Every key on every node, as far as the streams go.
            assert_eq!(pairs.len(), (keys * 3).min(n), "keys {keys}, streams {n}");
            assert!(per_target.iter().all(|&c| c == n / 3), "{per_target:?}");
        }
        assert_eq!(assign(5, 1, 1), (0, 0));
    }

    #[test]
    fn event_ids_tell_acquire_from_release() {
        let a = event_id(EventKind::Acquired, 7).unwrap();
        let r = event_id(EventKind::Released, 7).unwrap();
        assert_ne!(a, r);
        assert_eq!(event_id(EventKind::Renewed, 7), None);
        assert_eq!(event_id(EventKind::Acquired, u64::MAX), None);
    }

    #[test]
    fn blocks_are_read_as_the_events_of_one_key() {
        let acquired = "event: acquired\ndata: {\"index\":7,\"key\":\"k\",\"event\":\"acquired\",\"owner\":\"w\",\"token\":7,\"at\":\"t\"}\nid: 7";
        assert_eq!(
            read_block(acquired, "k"),
            Block::Event(event_id(EventKind::Acquired, 7).unwrap())
        );
        assert_eq!(read_block(acquired, "other"), Block::Other);
        let released = "event: released\ndata: {\"index\":9,\"key\":\"k\",\"event\":\"released\",\"owner\":\"w\",\"token\":7,\"at\":\"t\"}";
        assert_eq!(
            read_block(released, "k"),
            Block::Event(event_id(EventKind::Released, 7).unwrap())
        );
        assert_eq!(
            read_block(
                "event: reset\ndata: {\"first_index\":3,\"reason\":\"x\"}",
                "k"
            ),
            Block::Reset
        );
        assert_eq!(read_block(":", "k"), Block::Nothing);
        assert_eq!(read_block("data: not json", "k"), Block::Other);
        let queued = "event: queued\ndata: {\"index\":9,\"key\":\"k\",\"event\":\"queued\",\"owner\":\"w\",\"at\":\"t\"}";
        assert_eq!(read_block(queued, "k"), Block::Other);
    }

    fn write(id: u64, key: usize, sent: Instant, acked_ms: u64, measured: bool) -> Write {
        Write {
            id,
            key,
            sent,
            acked: sent + Duration::from_millis(acked_ms),
            measured,
        }
    }

    #[test]
    fn tally_counts_losses_duplicates_and_latencies() {
        let t0 = Instant::now();
        let ms = |n: u64| t0 + Duration::from_millis(n);
        let writes = [
            write(10, 0, t0, 2, false), // warmup: delivered, not counted
            write(20, 0, ms(100), 2, true),
            write(30, 1, ms(200), 2, true),
            write(40, 0, ms(300), 2, true),
        ];
        let streams = [
            // Key 0: all of them, 20 twice, 40 before its ack.
            StreamLog {
                key: 0,
                received: vec![(10, ms(3)), (20, ms(105)), (20, ms(106)), (40, ms(301))],
                ..StreamLog::default()
            },
            // Key 0: lost 40; an event of key 1's write and one nobody acknowledged.
            StreamLog {
                key: 0,
                received: vec![(20, ms(110)), (30, ms(205)), (99, ms(250))],
                resets: 1,
                closed_early: true,
                ..StreamLog::default()
            },
            // Key 1: its one write.
            StreamLog {
                key: 1,
                received: vec![(30, ms(204))],
                other: 2,
                ..StreamLog::default()
            },
        ];
        let t = tally(&writes, &streams);
        assert_eq!(t.writes, 3);
        assert_eq!(t.expected, 2 + 2 + 1);
        assert_eq!(t.delivered, 4, "20 twice (once counted), 40, 20, 30");
        assert_eq!(t.lost, 1);
        assert_eq!(t.duplicated, 1);
        assert_eq!(t.unmatched, 2 + 2, "30 on key 0, 99, and two others");
        assert_eq!((t.resets, t.closed_early), (1, 1));
        assert_eq!(t.before_ack, 1);
        let near = |got: u64, want_ms: u64| got.abs_diff(want_ms * 1_000) <= want_ms;
        assert!(
            near(t.latency_from_send_us.max, 10),
            "{:?}",
            t.latency_from_send_us
        );
        assert!(
            near(t.latency_after_ack_us.max, 8),
            "{:?}",
            t.latency_after_ack_us
        );
        assert!(t.latency_after_ack_us.p50 <= 3_003);
    }

    #[test]
    fn expected_deliveries_follow_the_streams_of_each_key() {
        let t0 = Instant::now();
        let writes = [write(2, 0, t0, 1, true), write(4, 1, t0, 1, false)];
        assert_eq!(expected_deliveries(&writes, &[3, 5]), 8);
        assert_eq!(expected_deliveries(&writes, &[3]), 3);
    }

    #[test]
    fn settings_are_checked() {
        assert_eq!(validate(10, 1, 20).unwrap(), Duration::from_millis(50));
        for (streams, keys, rate) in [(10, 0, 1), (10, 11, 1), (10, 1, 0)] {
            assert!(matches!(
                validate(streams, keys, rate),
                Err(BenchError::Invalid(_))
            ));
        }
    }
}
