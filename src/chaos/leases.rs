//! Lease checks in real time: what a client that counts its lease on its own clock
//! relies on, and how soon a lock whose holder walked away is free again.
//!
//! All times here are the workload's clock (one monotonic clock for every client
//! process of a run), so these checks hold whatever the nodes' wall clocks do.
//! - **Lease not cut short** ([`check_lease_not_cut_short`]): DESIGN.md promises that a
//!   holder may count its lease from the moment it *sent* the request. So a grant with a
//!   larger token must not complete before `invoke + ttl` of any acknowledged acquire or
//!   renew of an earlier grant of the key, unless that grant was released first (its
//!   release invoked before). A grant whose release has an unknown outcome may have ended
//!   at any time and is skipped.
//! - **Abandoned lock freed** ([`check_abandoned_locks`]): the abandoner's grants are
//!   never renewed or released. A watcher refused with `LOCK_HELD` naming such a grant,
//!   asking after its documented deadline, is a violation. The deadline is
//!   `complete + ttl × (1 + refreshes) + unavailable + slack`, where `refreshes` counts
//!   the lease extensions the refusals revealed (a new leader refreshes live leases,
//!   DESIGN.md "Time and leases") and `unavailable` is the time the probe saw no
//!   successful write in between (a new leader's clock resumes at the last applied time
//!   when its wall clock is behind, which lengthens leases by at most that gap).
//!
//! Also measured: how long after `complete + ttl` the watcher got each abandoned key.

use std::collections::BTreeMap;

use super::check::Violation;
use super::history::{Op, OpKind, Outcome};

/// Owner name of the workload's abandoner.
pub const ABANDONER: &str = "abandoner";
/// What the probe cannot see: the last commit before an outage may precede the probe's
/// last success by a probe period and a round trip, and a new leader's clock may resume
/// from that commit (its refresh then counts from there). Two probe periods, a sweep
/// interval of the chaos config and clock granularity.
pub const EXPIRY_SLACK_MS: u64 = 250;
/// A pause between two successful probe writes longer than this (twice the probe period)
/// counts, whole, as unavailability.
const PROBE_GAP_MS: u64 = 100;

/// One grant (key, token) in real time.
#[derive(Debug)]
struct RtLease {
    key: String,
    token: u64,
    /// Completion of the grant's first acknowledged acquire.
    granted_ms: u64,
    /// Latest `invoke + ttl` of an acknowledged acquire or renew.
    end_ms: u64,
    ops: Vec<usize>,
}

fn is_grant_or_renew(op: &Op) -> bool {
    op.outcome == Outcome::Ok && matches!(op.kind, OpKind::Acquire | OpKind::Renew)
}

/// Grants of one key never overlap on the client's clock.
pub fn check_lease_not_cut_short(ops: &[Op]) -> Vec<Violation> {
    let mut leases: BTreeMap<(&str, u64), RtLease> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (Some(token), Some(ttl)) = (op.token, op.ttl_ms) else {
            continue;
        };
        if !is_grant_or_renew(op) {
            continue;
        }
        let lease = leases.entry((&op.key, token)).or_insert(RtLease {
            key: op.key.clone(),
            token,
            granted_ms: u64::MAX,
            end_ms: 0,
            ops: Vec::new(),
        });
        if op.kind == OpKind::Acquire {
            lease.granted_ms = lease.granted_ms.min(op.complete_ms);
        }
        lease.end_ms = lease.end_ms.max(op.invoke_ms + ttl);
        lease.ops.push(i);
    }
    for (i, op) in ops.iter().enumerate() {
        let Some(token) = op.token else { continue };
        if !matches!(op.kind, OpKind::Release | OpKind::Cancel) {
            continue;
        }
        let id = (op.key.as_str(), token);
        // A cancel's token is the grant it released.
        let released = op.released.or((op.kind == OpKind::Cancel).then_some(true));
        match (op.outcome, released) {
            (Outcome::Ok, Some(true)) => {
                if let Some(lease) = leases.get_mut(&id) {
                    lease.end_ms = lease.end_ms.min(op.invoke_ms);
                    lease.ops.push(i);
                }
            }
            (Outcome::Unknown, _) => {
                leases.remove(&id);
            }
            _ => {}
        }
    }
    // A cancel whose answer was lost may have released any grant of its owner.
    for cancel in ops
        .iter()
        .filter(|o| o.kind == OpKind::Cancel && o.outcome == Outcome::Unknown)
    {
        leases.retain(|(key, _), lease| {
            *key != cancel.key || lease.ops.iter().all(|&i| ops[i].owner != cancel.owner)
        });
    }
    let mut per_key: BTreeMap<&str, Vec<&RtLease>> = BTreeMap::new();
    for lease in leases.values() {
        per_key.entry(&lease.key).or_default().push(lease);
    }
    let mut violations = Vec::new();
    for (key, mut list) in per_key {
        list.sort_by_key(|l| l.token);
        // The earliest completion among grants with a larger token, from the back.
        let mut later_first: Option<&RtLease> = None;
        for lease in list.iter().rev() {
            if let Some(next) = later_first {
                if next.granted_ms < lease.end_ms {
                    violations.push(Violation {
                        rule: "lease_cut_short",
                        message: format!(
                            "key {key}: token {} granted at {} ms, but token {} was held until {} ms on the client's clock",
                            next.token, next.granted_ms, lease.token, lease.end_ms
                        ),
                        ops: lease.ops.iter().chain(&next.ops).copied().collect(),
                    });
                }
            }
            if later_first.is_none_or(|n| lease.granted_ms < n.granted_ms) {
                later_first = Some(lease);
            }
        }
    }
    violations
}

/// What the abandoned-lock check measured.
#[derive(Debug, Default)]
pub struct AbandonReport {
    /// Per abandoned grant that a watcher took over: ms from `complete + ttl` of the
    /// abandoned grant to the completion of the watcher's grant.
    pub freed_after_ms: Vec<u64>,
    /// Abandoned grants the watcher never got (it gives up after a while, or the run ended).
    pub not_freed: usize,
    pub violations: Vec<Violation>,
}

/// Time in `[from, to)` not covered by successful probe writes (gaps over
/// [`PROBE_GAP_MS`] between consecutive ones, and before the first/after the last).
pub(crate) fn unavailable_ms(probe_ok: &[(u64, u64)], from: u64, to: u64) -> u64 {
    let mut total = 0;
    let mut last = from;
    for &(_, done) in probe_ok.iter().filter(|p| p.1 > from) {
        let done = done.min(to);
        if done.saturating_sub(last) > PROBE_GAP_MS {
            total += done - last;
        }
        last = done;
        if done >= to {
            return total;
        }
    }
    if to.saturating_sub(last) > PROBE_GAP_MS {
        total += to - last;
    }
    total
}

/// `(invoke, complete)` of the probe's successful writes, by completion.
pub(crate) fn probe_successes(ops: &[Op]) -> Vec<(u64, u64)> {
    let mut probe_ok: Vec<(u64, u64)> = ops
        .iter()
        .filter(|o| o.process == "probe" && o.kind == OpKind::Acquire && o.outcome == Outcome::Ok)
        .map(|o| (o.invoke_ms, o.complete_ms))
        .collect();
    probe_ok.sort_unstable_by_key(|p| p.1);
    probe_ok
}

/// Abandoned locks are free within their documented deadline (see the module docs).
pub fn check_abandoned_locks(ops: &[Op]) -> AbandonReport {
    let probe_ok = probe_successes(ops);
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        if op.kind == OpKind::Acquire && op.key.starts_with("abandon-") {
            by_key.entry(&op.key).or_default().push(i);
        }
    }
    let mut report = AbandonReport::default();
    for list in by_key.values_mut() {
        list.sort_by_key(|&i| ops[i].invoke_ms);
        for (n, &a) in list.iter().enumerate() {
            let abandoned = &ops[a];
            let (Some(token), Some(ttl), Some(expires)) =
                (abandoned.token, abandoned.ttl_ms, abandoned.expires_at_ms)
            else {
                continue;
            };
            if abandoned.owner.as_deref() != Some(ABANDONER) || abandoned.outcome != Outcome::Ok {
                continue;
            }
            let later = &list[n + 1..];
            let mut refreshes: Vec<u64> = Vec::new();
            let mut freed = false;
            for &w in later {
                let op = &ops[w];
                if op.owner.as_deref() == Some(ABANDONER) {
                    break;
                }
                if op.outcome == Outcome::Ok {
                    report
                        .freed_after_ms
                        .push(op.complete_ms.saturating_sub(abandoned.complete_ms + ttl));
                    freed = true;
                    break;
                }
                let Some(holder) = op.holder.as_ref().filter(|h| h.token == token) else {
                    continue;
                };
                if holder.expires_at_ms > expires && !refreshes.contains(&holder.expires_at_ms) {
                    refreshes.push(holder.expires_at_ms);
                }
                let deadline = abandoned.complete_ms
                    + ttl * (1 + refreshes.len() as u64)
                    + unavailable_ms(&probe_ok, abandoned.complete_ms, op.invoke_ms)
                    + EXPIRY_SLACK_MS;
                if op.invoke_ms > deadline {
                    report.violations.push(Violation {
                        rule: "abandoned_lock_held",
                        message: format!(
                            "key {}: token {token} (ttl {ttl} ms, abandoned at {} ms) still held at {} ms, past its deadline {deadline} ms",
                            op.key, abandoned.complete_ms, op.invoke_ms
                        ),
                        ops: vec![a, w],
                    });
                    break;
                }
            }
            if !freed {
                report.not_freed += 1;
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::Holder;

    fn grant(key: &str, owner: &str, token: u64, t: (u64, u64), ttl: u64) -> Op {
        Op {
            ttl_ms: Some(ttl),
            acquired_at_ms: Some(t.1),
            expires_at_ms: Some(t.1 + ttl),
            ..Op::new(
                OpKind::Acquire,
                key,
                owner,
                Some(token),
                t.0,
                t.1,
                Outcome::Ok,
            )
        }
    }

    fn renew(key: &str, owner: &str, token: u64, t: (u64, u64), ttl: u64) -> Op {
        Op {
            kind: OpKind::Renew,
            ..grant(key, owner, token, t, ttl)
        }
    }

    fn release(key: &str, owner: &str, token: u64, t: (u64, u64), outcome: Outcome) -> Op {
        Op {
            released: Some(true),
            ..Op::new(OpKind::Release, key, owner, Some(token), t.0, t.1, outcome)
        }
    }

    fn refused(key: &str, owner: &str, t: (u64, u64), holder: (u64, u64)) -> Op {
        Op {
            error: Some("LOCK_HELD".into()),
            holder: Some(Holder {
                owner: ABANDONER.into(),
                token: holder.0,
                expires_at_ms: holder.1,
            }),
            ..Op::new(OpKind::Acquire, key, owner, None, t.0, t.1, Outcome::Fail)
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
                    Some(t),
                    t,
                    t + 5,
                    Outcome::Ok,
                )
            })
            .collect()
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_successor_after_the_lease_passes() {
        let h = vec![
            grant("k", "a", 3, (0, 10), 1000),
            grant("k", "b", 7, (900, 1005), 1000),
        ];
        assert!(check_lease_not_cut_short(&h).is_empty());
    }

    #[test]
    fn a_successor_inside_the_senders_lease_is_caught() {
        let h = vec![
            grant("k", "a", 3, (0, 10), 1000),
            grant("k", "b", 7, (500, 990), 1000),
        ];
        let v = check_lease_not_cut_short(&h);
        assert_eq!(rules(&v), vec!["lease_cut_short"]);
        assert_eq!(v[0].ops, vec![0, 1]);
    }

    #[test]
    fn a_renewal_moves_the_end_to_its_send_time_plus_ttl() {
        let h = vec![
            grant("k", "a", 3, (0, 10), 1000),
            renew("k", "a", 3, (800, 810), 1000),
            grant("k", "b", 7, (1000, 1500), 1000),
        ];
        assert_eq!(
            rules(&check_lease_not_cut_short(&h)),
            vec!["lease_cut_short"]
        );
    }

    #[test]
    fn a_cancel_that_released_the_grant_ends_the_lease_at_its_send_time() {
        // Seed 201: the waiter's own cancel released its grant.
        let cancel = Op::new(OpKind::Cancel, "k", "a", Some(3), 100, 110, Outcome::Ok);
        let h = vec![
            grant("k", "a", 3, (0, 10), 1000),
            cancel,
            grant("k", "b", 7, (105, 120), 1000),
        ];
        assert!(check_lease_not_cut_short(&h).is_empty());
    }

    #[test]
    fn a_release_ends_the_lease_and_an_unknown_one_excuses_it() {
        let released = vec![
            grant("k", "a", 3, (0, 10), 1000),
            release("k", "a", 3, (100, 110), Outcome::Ok),
            grant("k", "b", 7, (105, 120), 1000),
        ];
        assert!(check_lease_not_cut_short(&released).is_empty());
        let unknown = vec![
            grant("k", "a", 3, (0, 10), 1000),
            release("k", "a", 3, (100, 3100), Outcome::Unknown),
            grant("k", "b", 7, (105, 120), 1000),
        ];
        assert!(check_lease_not_cut_short(&unknown).is_empty());
    }

    #[test]
    fn an_abandoned_lock_freed_in_time_is_measured() {
        let mut h = probe(0, 2000);
        h.push(grant("abandon-0", ABANDONER, 5, (0, 10), 800));
        h.push(refused("abandon-0", "watcher", (400, 405), (5, 810)));
        h.push(grant("abandon-0", "watcher", 9, (820, 830), 800));
        let r = check_abandoned_locks(&h);
        assert!(r.violations.is_empty());
        assert_eq!(r.freed_after_ms, vec![20]);
        assert_eq!(r.not_freed, 0);
    }

    #[test]
    fn an_abandoned_lock_held_past_its_deadline_is_caught() {
        let mut h = probe(0, 3000);
        h.push(grant("abandon-0", ABANDONER, 5, (0, 10), 800));
        h.push(refused("abandon-0", "watcher", (1500, 1505), (5, 810)));
        let r = check_abandoned_locks(&h);
        assert_eq!(rules(&r.violations), vec!["abandoned_lock_held"]);
        assert_eq!(r.not_freed, 1);
    }

    #[test]
    fn unavailability_and_refreshes_extend_the_deadline() {
        // No probe success between 100 and 1100 ms: one second without a leader.
        let mut h = probe(0, 100);
        h.extend(probe(1100, 3000));
        h.push(grant("abandon-0", ABANDONER, 5, (0, 10), 800));
        h.push(refused("abandon-0", "watcher", (1500, 1505), (5, 810)));
        assert!(check_abandoned_locks(&h).violations.is_empty());
        // A refresh seen in a refusal allows one more TTL.
        let mut h = probe(0, 3000);
        h.push(grant("abandon-0", ABANDONER, 5, (0, 10), 800));
        h.push(refused("abandon-0", "watcher", (1500, 1505), (5, 1900)));
        assert!(check_abandoned_locks(&h).violations.is_empty());
    }

    #[test]
    fn unavailable_time_counts_only_long_gaps() {
        let p = [(0, 10), (50, 60), (900, 910), (950, 960)];
        assert_eq!(unavailable_ms(&p, 0, 1000), 850);
        assert_eq!(unavailable_ms(&p, 0, 500), 440);
        assert_eq!(unavailable_ms(&[], 0, 500), 500);
    }
}
