//! The FIFO queue under faults, judged from the followed keys' event reference
//! ([`super::events::Reference`]) and the history.
//!
//! The workload's waiters use an owner name unique to each request (`waiter-N#M`, the
//! process being `waiter-N`), so an event names exactly one request. Replaying a key's
//! events in log order rebuilds its queue (`queued` appends, `wait_timeout` /
//! `wait_cancelled` remove, `acquired` pops), and ([`check_queue`]):
//! - **queue order**: while anyone waits, a grant goes to the head of the queue, in the
//!   order the leader appended the acquires (waiters whose wait ran out leave the queue
//!   with a `wait_timeout` in the same entry, before the grant);
//! - **no grant after the deadline**: a waiter is granted before `queued at + wait_ms`
//!   (cluster time);
//! - **no grant after an acknowledged `WAIT_TIMEOUT` or cancel**: the grant's log index
//!   is below the token of every fresh grant asked for after that answer (a token is a
//!   log index, so a larger one was appended later);
//! - **no orphan outlives its lease**: a grant to a request whose client never learned
//!   of it (it disconnected mid-wait, got `WAIT_TIMEOUT`, cancelled, or timed out) is
//!   never renewed, and its end (`released` by the cancel, or `expired`) reaches the
//!   followers by `grant + ttl × (1 + outages) + unavailable + ORPHAN_SLACK_MS` on the
//!   workload's clock, where `outages` counts the probe's gaps long enough for a leader
//!   change (each may refresh the lease once) and `unavailable` is their length.
//!
//! # Caveats
//! The queue is rebuilt from what the followers saw; a gap in the reference (see
//! `events`) makes these rules judge an incomplete queue, and is reported there.

use std::collections::{BTreeMap, VecDeque};

use super::check::Violation;
use super::events::{Reference, Seen, WAIT_TIMEOUT};
use super::history::{Op, OpKind, Outcome};
use super::leases::{probe_successes, unavailable_ms};

/// Slack for an orphan grant's end to reach a follower: a sweep interval of the chaos
/// config (100 ms), the handoff or cancel round, event delivery and scheduling on a busy
/// two-core machine.
pub const ORPHAN_SLACK_MS: u64 = 1_000;
/// A probe gap this long may hide a leader change (the chaos config's minimum election
/// timeout), and so one lease refresh.
const OUTAGE_MS: u64 = 200;

/// What [`check_queue`] measured.
#[derive(Debug, Default)]
pub struct QueueReport {
    pub queued: u64,
    /// Grants to a waiter from the queue.
    pub handoffs: u64,
    pub wait_timeouts: u64,
    pub wait_cancels: u64,
    /// Grants to requests whose client never learned of them.
    pub orphan_grants: u64,
    /// Per orphan grant that ended: ms from the grant reaching a follower to its end
    /// reaching one, minus its TTL.
    pub orphan_end_after_ttl_ms: Vec<u64>,
    pub violations: Vec<Violation>,
}

/// How a waiting request ended for its client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ClientSaw {
    Granted,
    /// `WAIT_TIMEOUT`, or a cancel that found the owner queued or released its grant,
    /// acknowledged at this completion time.
    Refused(u64),
    /// Disconnected, timed out, a cancel that found nothing, or any other answer: it
    /// never learned of a grant.
    Nothing,
}

/// One request-unique owner's request.
#[derive(Clone, Copy, Debug)]
struct Request {
    /// Its acquire, or the cancel when no acquire was recorded.
    op: usize,
    wait_ms: Option<u64>,
    ttl_ms: Option<u64>,
    saw: ClientSaw,
}

/// The request-unique owners of `ops` and what their clients saw.
fn requests(ops: &[Op]) -> BTreeMap<&str, Request> {
    let mut out: BTreeMap<&str, Request> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(owner) = op.owner.as_deref() else {
            continue;
        };
        if op.process == owner || !matches!(op.kind, OpKind::Acquire | OpKind::Cancel) {
            continue;
        }
        let saw = match (op.kind, op.outcome) {
            (OpKind::Acquire, Outcome::Ok) => ClientSaw::Granted,
            (OpKind::Acquire, Outcome::Fail) if op.error.as_deref() == Some(WAIT_TIMEOUT) => {
                ClientSaw::Refused(op.complete_ms)
            }
            // A cancel that found nothing may have come before the acquire reached the
            // queue: it proves nothing.
            (OpKind::Cancel, Outcome::Ok) if op.was_queued == Some(true) || op.token.is_some() => {
                ClientSaw::Refused(op.complete_ms)
            }
            _ => ClientSaw::Nothing,
        };
        let r = out.entry(owner).or_insert(Request {
            op: i,
            wait_ms: None,
            ttl_ms: None,
            saw: ClientSaw::Nothing,
        });
        if op.kind == OpKind::Acquire {
            r.op = i;
            r.wait_ms = op.wait_ms;
            r.ttl_ms = op.ttl_ms;
        }
        r.saw = match (r.saw, saw) {
            (ClientSaw::Granted, _) | (_, ClientSaw::Granted) => ClientSaw::Granted,
            (ClientSaw::Refused(a), ClientSaw::Refused(b)) => ClientSaw::Refused(a.min(b)),
            (ClientSaw::Refused(a), _) | (_, ClientSaw::Refused(a)) => ClientSaw::Refused(a),
            _ => ClientSaw::Nothing,
        };
    }
    out
}

/// `(invoke, token)` of every grant to a request-unique owner (its token was appended
/// after its invocation: no earlier request could have made it), by invoke time, with the
/// smallest token among those invoked at or after each entry (a suffix minimum). Other
/// owners are left out: a re-acquire returns a token an earlier, unanswered request made.
fn fresh_grants(ops: &[Op]) -> Vec<(u64, u64)> {
    let mut first: BTreeMap<u64, u64> = BTreeMap::new();
    for op in ops {
        let unique = op.owner.as_deref().is_some_and(|o| o != op.process);
        if unique && op.kind == OpKind::Acquire && op.outcome == Outcome::Ok {
            if let Some(t) = op.token {
                let e = first.entry(t).or_insert(op.invoke_ms);
                *e = (*e).min(op.invoke_ms);
            }
        }
    }
    let mut list: Vec<(u64, u64)> = first.into_iter().map(|(t, at)| (at, t)).collect();
    list.sort_unstable();
    let mut min = u64::MAX;
    for entry in list.iter_mut().rev() {
        min = min.min(entry.1);
        entry.1 = min;
    }
    list
}

/// The smallest fresh token asked for at or after `t`.
fn first_token_after(fresh: &[(u64, u64)], t: u64) -> Option<u64> {
    let i = fresh.partition_point(|&(at, _)| at < t);
    fresh.get(i).map(|&(_, token)| token)
}

/// Every queue rule (see the module docs).
pub fn check_queue(reference: &Reference, ops: &[Op]) -> QueueReport {
    let mut report = QueueReport::default();
    let requests = requests(ops);
    let fresh = fresh_grants(ops);
    let probe_ok = probe_successes(ops);
    for (key, stream) in reference {
        let mut queue: VecDeque<(&str, u64)> = VecDeque::new();
        let events: Vec<&Seen> = stream.values().flatten().collect();
        let last_rx = events.iter().map(|s| s.rx_ms).max().unwrap_or(0);
        for (n, seen) in events.iter().enumerate() {
            let e = &seen.event;
            let owner = e.owner.as_str();
            let request = requests.get(owner).copied();
            match e.name.as_str() {
                "queued" => {
                    report.queued += 1;
                    queue.push_back((owner, e.at_ms));
                }
                "wait_timeout" | "wait_cancelled" => {
                    if e.name == "wait_timeout" {
                        report.wait_timeouts += 1;
                    } else {
                        report.wait_cancels += 1;
                    }
                    queue.retain(|(o, _)| *o != owner);
                }
                "acquired" => {
                    let at = queue.iter().position(|(o, _)| *o == owner);
                    if let Some((head, _)) = queue.front().filter(|(o, _)| *o != owner) {
                        report.violations.push(Violation {
                            rule: "queue_order",
                            message: format!(
                                "key {key}: index {} granted {owner} while {head} waited ahead ({} waiting)",
                                e.index,
                                queue.len()
                            ),
                            ops: request.map(|r| vec![r.op]).unwrap_or_default(),
                        });
                    }
                    if let Some(p) = at {
                        report.handoffs += 1;
                        let (_, queued_at) = queue.remove(p).expect("position is in the queue");
                        let wait_ms = request.and_then(|r| r.wait_ms);
                        if let Some(w) = wait_ms.filter(|w| e.at_ms >= queued_at + w) {
                            report.violations.push(Violation {
                                rule: "granted_after_deadline",
                                message: format!(
                                    "key {key}: {owner} queued at {queued_at} with wait_ms {w} was granted at {} (index {})",
                                    e.at_ms, e.index
                                ),
                                ops: request.map(|r| vec![r.op]).unwrap_or_default(),
                            });
                        }
                    }
                    let Some(request) = request else { continue };
                    let op = request.op;
                    if request.saw == ClientSaw::Granted {
                        continue;
                    }
                    report.orphan_grants += 1;
                    if let ClientSaw::Refused(done) = request.saw {
                        if let Some(x) = first_token_after(&fresh, done).filter(|x| *x < e.index) {
                            report.violations.push(Violation {
                                rule: "granted_after_refusal",
                                message: format!(
                                    "key {key}: {owner} was told {:?} at {done} ms, yet granted at index {} after token {x} was asked for",
                                    ops[op].error.as_deref().unwrap_or("cancelled"),
                                    e.index
                                ),
                                ops: vec![op],
                            });
                        }
                    }
                    let ttl = request.ttl_ms.unwrap_or(0);
                    let orphan = Orphan {
                        key,
                        grant: seen,
                        op,
                        ttl,
                    };
                    check_orphan(&mut report, &orphan, &events[n + 1..], last_rx, &probe_ok);
                }
                _ => {}
            }
        }
    }
    report
}

/// A grant nobody learned of.
struct Orphan<'a> {
    key: &'a str,
    grant: &'a Seen,
    /// The request's acquire (or cancel) in the history.
    op: usize,
    ttl: u64,
}

/// A grant nobody learned of is never renewed and ends in time (module docs).
fn check_orphan(
    report: &mut QueueReport,
    orphan: &Orphan,
    after: &[&Seen],
    last_rx: u64,
    probe_ok: &[(u64, u64)],
) {
    let Orphan {
        key,
        grant,
        op,
        ttl,
    } = *orphan;
    let token = grant.event.token;
    let mine = |s: &&&Seen| s.event.token == token;
    if let Some(renewed) = after
        .iter()
        .filter(mine)
        .find(|s| s.event.name == "renewed")
    {
        report.violations.push(Violation {
            rule: "orphan_renewed",
            message: format!(
                "key {key}: token {token:?} of {} (whose client never learned of it) renewed at index {}",
                grant.event.owner, renewed.event.index
            ),
            ops: vec![op],
        });
    }
    let end = after.iter().filter(mine).find(|s| {
        matches!(
            s.event.name.as_str(),
            "released" | "expired" | "force_released"
        )
    });
    let until = end.map_or(last_rx, |s| s.rx_ms);
    let outages = outages(probe_ok, grant.rx_ms, until);
    let deadline = grant.rx_ms
        + ttl * (1 + outages)
        + unavailable_ms(probe_ok, grant.rx_ms, until)
        + ORPHAN_SLACK_MS;
    if let Some(end) = end {
        report
            .orphan_end_after_ttl_ms
            .push(end.rx_ms.saturating_sub(grant.rx_ms + ttl));
    }
    if until > deadline {
        report.violations.push(Violation {
            rule: "orphan_lock_held",
            message: format!(
                "key {key}: token {token:?} of {} (ttl {ttl} ms, nobody to renew it) granted at {} ms still held at {until} ms, past {deadline} ms",
                grant.event.owner, grant.rx_ms
            ),
            ops: vec![op],
        });
    }
}

/// Probe gaps in `[from, to)` long enough for a leader change.
fn outages(probe_ok: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let mut last = from;
    let mut n = 0;
    for &(_, done) in probe_ok.iter().filter(|p| p.1 > from && p.1 <= to) {
        n += u64::from(done - last > OUTAGE_MS);
        last = done;
    }
    n + u64::from(to.saturating_sub(last) > OUTAGE_MS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::events::Event;

    fn ev(index: u64, name: &str, owner: &str, rx_ms: u64) -> Seen {
        Seen {
            event: Event {
                index,
                name: name.into(),
                owner: owner.into(),
                token: matches!(name, "acquired" | "released" | "expired" | "renewed")
                    .then_some(index),
                at_ms: 10_000 + index * 10,
            },
            rx_ms,
        }
    }

    fn reference(events: Vec<Seen>) -> Reference {
        let mut stream: BTreeMap<u64, Vec<Seen>> = BTreeMap::new();
        for e in events {
            stream.entry(e.event.index).or_default().push(e);
        }
        BTreeMap::from([("q".to_string(), stream)])
    }

    /// A waiting acquire by `owner` (process `waiter`).
    fn wait(owner: &str, t: (u64, u64), outcome: Outcome, error: Option<&str>) -> Op {
        Op {
            process: "waiter".into(),
            wait_ms: Some(1_000),
            ttl_ms: Some(500),
            error: error.map(Into::into),
            ..Op::new(OpKind::Acquire, "q", owner, None, t.0, t.1, outcome)
        }
    }

    fn probe(from: u64, to: u64) -> Vec<Op> {
        (from..to)
            .step_by(50)
            .map(|t| {
                Op::new(
                    OpKind::Acquire,
                    "probe",
                    "probe",
                    Some(1),
                    t,
                    t + 5,
                    Outcome::Ok,
                )
            })
            .collect()
    }

    fn rules(r: &QueueReport) -> Vec<&'static str> {
        r.violations.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn grants_in_queue_order_pass() {
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(3, "queued", "w#2", 0),
            ev(4, "released", "h", 0),
            ev(4, "acquired", "w#1", 0),
            ev(5, "wait_timeout", "w#2", 0),
        ]);
        let report = check_queue(&r, &[]);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(
            (report.queued, report.handoffs, report.wait_timeouts),
            (2, 1, 1)
        );
    }

    #[test]
    fn a_grant_that_jumps_the_queue_is_caught() {
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(3, "queued", "w#2", 0),
            ev(4, "released", "h", 0),
            ev(4, "acquired", "w#2", 0),
        ]);
        assert_eq!(rules(&check_queue(&r, &[])), vec!["queue_order"]);
    }

    #[test]
    fn a_grant_to_a_newcomer_while_others_wait_is_caught() {
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(4, "released", "h", 0),
            ev(5, "acquired", "x", 0),
        ]);
        assert_eq!(rules(&check_queue(&r, &[])), vec!["queue_order"]);
    }

    #[test]
    fn a_grant_after_the_wait_deadline_is_caught() {
        // Queued at 10_020 with wait_ms 1000; granted at 10_000 + 200 * 10 = 12_000.
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(200, "acquired", "w#1", 0),
        ]);
        let ops = vec![wait("w#1", (0, 900), Outcome::Ok, None)];
        assert_eq!(
            rules(&check_queue(&r, &ops)),
            vec!["granted_after_deadline"]
        );
    }

    #[test]
    fn a_grant_after_an_acknowledged_wait_timeout_is_caught() {
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(50, "acquired", "w#1", 100),
            ev(51, "released", "w#1", 120),
        ]);
        let mut ops = vec![wait("w#1", (0, 100), Outcome::Fail, Some(WAIT_TIMEOUT))];
        ops.extend(probe(0, 2000));
        // Token 40 was asked for after the answer, and index 50 came after it.
        let mut later = Op::new(
            OpKind::Acquire,
            "other",
            "o#1",
            Some(40),
            150,
            160,
            Outcome::Ok,
        );
        later.ttl_ms = Some(500);
        later.process = "o".into();
        ops.push(later.clone());
        let mut fresh = ops[..ops.len() - 1].to_vec();
        assert_eq!(rules(&check_queue(&r, &ops)), vec!["granted_after_refusal"]);
        // With the later grant's token above 50, the order is unproven: no violation.
        later.token = Some(60);
        fresh.push(later);
        assert!(check_queue(&r, &fresh).violations.is_empty());
    }

    #[test]
    fn a_cancel_that_found_nothing_does_not_forbid_a_later_grant() {
        // Seed 201: the cancel overtook the relayed acquire and found no waiter; the
        // acquire queued after it and was granted, and its client released the key.
        let r = reference(vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(50, "acquired", "w#1", 300),
        ]);
        let mut cancel = Op::new(OpKind::Cancel, "q", "w#1", None, 0, 100, Outcome::Ok);
        cancel.process = "waiter".into();
        cancel.was_queued = Some(false);
        let mut later = Op::new(
            OpKind::Acquire,
            "other",
            "o#1",
            Some(40),
            150,
            160,
            Outcome::Ok,
        );
        later.process = "o".into();
        let ops = vec![
            cancel.clone(),
            wait("w#1", (0, 400), Outcome::Ok, None),
            later,
        ];
        assert!(check_queue(&r, &ops).violations.is_empty());
        // Had it found the waiter queued, the grant at 50 after token 40 would be a bug.
        let mut found = ops.clone();
        found[0].was_queued = Some(true);
        found[1] = wait("w#1", (0, 400), Outcome::Unknown, Some("timeout"));
        assert_eq!(
            rules(&check_queue(&r, &found)),
            vec!["granted_after_refusal"]
        );
    }

    #[test]
    fn an_orphan_grant_that_is_renewed_or_outlives_its_lease_is_caught() {
        let base = vec![
            ev(1, "acquired", "h", 0),
            ev(2, "queued", "w#1", 0),
            ev(3, "released", "h", 100),
            ev(3, "acquired", "w#1", 100),
        ];
        let mut ops = vec![wait("w#1", (0, 50), Outcome::Unknown, Some("disconnected"))];
        ops.extend(probe(0, 5000));
        // Expired 600 ms after the grant reached a follower: within ttl + slack.
        let mut ok = base.clone();
        ok.push(Seen {
            rx_ms: 700,
            ..ev(9, "expired", "w#1", 0)
        });
        ok.last_mut().unwrap().event.token = Some(3);
        let report = check_queue(&reference(ok), &ops);
        assert!(report.violations.is_empty(), "{:?}", report.violations);
        assert_eq!(report.orphan_grants, 1);
        assert_eq!(report.orphan_end_after_ttl_ms, vec![100]);
        // Still held (other events keep arriving) at 3000 ms: past 100 + 500 + 1000.
        let mut held = base.clone();
        held.push(ev(40, "queued", "w#9", 3000));
        assert_eq!(
            rules(&check_queue(&reference(held), &ops)),
            vec!["orphan_lock_held"]
        );
        let mut renewed = base;
        renewed.push(ev(5, "renewed", "w#1", 300));
        renewed.last_mut().unwrap().event.token = Some(3);
        assert_eq!(
            rules(&check_queue(&reference(renewed), &ops)),
            vec!["orphan_renewed"]
        );
    }
}
