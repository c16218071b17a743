//! Safety checks over a recorded history.
//!
//! Each check looks only at what the history proves: an `ok` operation happened with its
//! recorded result, a `fail` did not happen, and an `unknown` one may or may not have.
//! - **Token order** ([`check_token_order`]): if grant A completed before grant B was
//!   invoked (real time), A's token is not larger than B's; one token is never granted
//!   for two keys or two owners.
//! - **Lease overlap** ([`check_lease_overlap`]): two grants of one key never overlap in
//!   cluster time: a grant starts no earlier than the end of the previous grant's lease
//!   as last acknowledged (or its acknowledged release).
//! - **Fenced resource** ([`check_resource`]): the resource never accepted a token lower
//!   than one it had accepted before for the key, nor one token from two owners.
//! - **Lock-delay** ([`check_lock_delay`]): after a grant with `lock_delay_ms = d` whose
//!   lease ran out (no release that freed it, or may have), no later grant of the key
//!   starts before its last acknowledged `expires_at + d` (a refresh only moves that
//!   later); and no grant asked for after a refusal that named `available_at` starts
//!   before it.
//!
//! Violations name the operations involved by their index in the history.

use std::collections::BTreeMap;

use serde::Serialize;

use super::history::{Op, OpKind, Outcome};

/// One broken rule, with the operations that show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Violation {
    /// Stable name of the rule: `token_order`, `token_reuse`, `lease_overlap`,
    /// `stale_token_accepted`, `token_shared`.
    pub rule: &'static str,
    pub message: String,
    /// Indexes into the history.
    pub ops: Vec<usize>,
}

/// Every check over `ops`.
pub fn check_all(ops: &[Op]) -> Vec<Violation> {
    let mut v = check_token_order(ops);
    v.extend(check_lease_overlap(ops));
    v.extend(check_resource(ops));
    v.extend(check_lock_delay(ops));
    v
}

fn granted(op: &Op) -> Option<u64> {
    (op.outcome == Outcome::Ok && op.kind == OpKind::Acquire)
        .then_some(op.token)
        .flatten()
}

/// Tokens increase in real-time order per key, and each token belongs to one grant.
pub fn check_token_order(ops: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    let mut owner_of: BTreeMap<u64, usize> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(token) = granted(op) else { continue };
        by_key.entry(op.key.as_str()).or_default().push(i);
        match owner_of.get(&token) {
            Some(&j) if ops[j].key != op.key || ops[j].owner != op.owner => {
                violations.push(Violation {
                    rule: "token_reuse",
                    message: format!(
                        "token {token} granted to {}/{:?} and to {}/{:?}",
                        ops[j].key, ops[j].owner, op.key, op.owner
                    ),
                    ops: vec![j, i],
                })
            }
            Some(_) => {}
            None => {
                owner_of.insert(token, i);
            }
        }
    }
    for grants in by_key.values() {
        // Sweep in invoke order, folding in every grant that completed before.
        let mut by_invoke = grants.clone();
        by_invoke.sort_by_key(|&i| ops[i].invoke_ms);
        let mut by_complete = grants.clone();
        by_complete.sort_by_key(|&i| ops[i].complete_ms);
        let mut done = 0;
        let mut max_before: Option<usize> = None;
        for &b in &by_invoke {
            while done < by_complete.len() && ops[by_complete[done]].complete_ms < ops[b].invoke_ms
            {
                let a = by_complete[done];
                if max_before.is_none_or(|m| ops[a].token > ops[m].token) {
                    max_before = Some(a);
                }
                done += 1;
            }
            if let Some(a) = max_before {
                if ops[a].token > ops[b].token {
                    violations.push(Violation {
                        rule: "token_order",
                        message: format!(
                            "key {}: token {:?} was granted before token {:?} was asked for",
                            ops[b].key, ops[a].token, ops[b].token
                        ),
                        ops: vec![a, b],
                    });
                }
            }
        }
    }
    violations
}

/// A grant's lease in cluster time as acknowledged: `[start, end)`.
struct Lease {
    token: u64,
    start: u64,
    end: u64,
    /// The operations that set start and end.
    ops: Vec<usize>,
}

/// Grants of one key never overlap in cluster time.
pub fn check_lease_overlap(ops: &[Op]) -> Vec<Violation> {
    let mut leases: BTreeMap<(&str, u64), Lease> = BTreeMap::new();
    let mut maybe_released: Vec<(&str, u64)> = Vec::new();
    for (i, op) in ops.iter().enumerate() {
        let Some(token) = op.token else { continue };
        let id = (op.key.as_str(), token);
        match (op.kind, op.outcome) {
            (OpKind::Acquire | OpKind::Renew, Outcome::Ok) => {
                let (Some(start), Some(end)) = (op.acquired_at_ms, op.expires_at_ms) else {
                    continue;
                };
                let lease = leases.entry(id).or_insert(Lease {
                    token,
                    start,
                    end,
                    ops: Vec::new(),
                });
                lease.start = lease.start.min(start);
                lease.end = lease.end.max(end);
                lease.ops.push(i);
            }
            (OpKind::Release, Outcome::Unknown) => maybe_released.push(id),
            // A cancel that released a grant did so at a cluster time it does not say.
            (OpKind::Cancel, Outcome::Ok | Outcome::Unknown) => maybe_released.push(id),
            _ => {}
        }
    }
    // An acknowledged release ends the lease at its time; an unknown one may have ended
    // it at any time, so such a lease proves nothing about its successors.
    for (i, op) in ops.iter().enumerate() {
        if op.kind == OpKind::Release && op.outcome == Outcome::Ok && op.released == Some(true) {
            if let (Some(token), Some(at)) = (op.token, op.at_ms) {
                if let Some(lease) = leases.get_mut(&(op.key.as_str(), token)) {
                    lease.end = lease.end.min(at);
                    lease.ops.push(i);
                }
            }
        }
    }
    for id in maybe_released {
        leases.remove(&id);
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
    let mut per_key: BTreeMap<&str, Vec<&Lease>> = BTreeMap::new();
    for ((key, _), lease) in &leases {
        per_key.entry(key).or_default().push(lease);
    }
    let mut violations = Vec::new();
    for (key, mut list) in per_key {
        list.sort_by_key(|l| (l.start, l.token));
        for pair in list.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if b.start < a.end {
                violations.push(Violation {
                    rule: "lease_overlap",
                    message: format!(
                        "key {key}: token {} granted at {} while token {} held it until {}",
                        b.token, b.start, a.token, a.end
                    ),
                    ops: a.ops.iter().chain(&b.ops).copied().collect(),
                });
            }
        }
    }
    violations
}

/// The fenced resource never accepted a stale token, nor one token from two owners.
pub fn check_resource(ops: &[Op]) -> Vec<Violation> {
    let mut accepted: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, op)| {
            op.kind == OpKind::ResourceWrite && op.outcome == Outcome::Ok && op.token.is_some()
        })
        .map(|(i, _)| i)
        .collect();
    accepted.sort_by_key(|&i| (ops[i].seq.unwrap_or(u64::MAX), ops[i].complete_ms));
    let mut highest: BTreeMap<&str, usize> = BTreeMap::new();
    let mut writer_of: BTreeMap<(&str, u64), usize> = BTreeMap::new();
    let mut violations = Vec::new();
    for i in accepted {
        let op = &ops[i];
        let token = op.token.unwrap_or_default();
        if let Some(&h) = highest.get(op.key.as_str()) {
            if ops[h].token > op.token {
                violations.push(Violation {
                    rule: "stale_token_accepted",
                    message: format!(
                        "key {}: resource accepted token {token} after token {:?}",
                        op.key, ops[h].token
                    ),
                    ops: vec![h, i],
                });
                continue;
            }
        }
        highest.insert(op.key.as_str(), i);
        match writer_of.get(&(op.key.as_str(), token)) {
            Some(&w) if ops[w].owner != op.owner => violations.push(Violation {
                rule: "token_shared",
                message: format!(
                    "key {}: token {token} used by {:?} and {:?}",
                    op.key, ops[w].owner, op.owner
                ),
                ops: vec![w, i],
            }),
            Some(_) => {}
            None => {
                writer_of.insert((op.key.as_str(), token), i);
            }
        }
    }
    violations
}

/// No grant starts inside a lock-delay (see the module docs).
pub fn check_lock_delay(ops: &[Op]) -> Vec<Violation> {
    let mut violations = Vec::new();
    let grants: Vec<usize> = (0..ops.len())
        .filter(|&i| granted(&ops[i]).is_some())
        .collect();
    // (key, token) -> (delay, last acknowledged expiry, ops)
    let mut delayed: BTreeMap<(&str, u64), (u64, u64, Vec<usize>)> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let (Some(token), Some(expires)) = (op.token, op.expires_at_ms) else {
            continue;
        };
        if op.outcome != Outcome::Ok || !matches!(op.kind, OpKind::Acquire | OpKind::Renew) {
            continue;
        }
        let d = op.lock_delay_ms.unwrap_or(0);
        let entry = delayed
            .entry((op.key.as_str(), token))
            .or_insert((0, 0, Vec::new()));
        entry.0 = entry.0.max(d);
        entry.1 = entry.1.max(expires);
        entry.2.push(i);
    }
    // A release that freed the lock (or may have) starts no delay; nor does a cancel.
    for op in ops {
        let freed = match op.kind {
            OpKind::Release => {
                op.outcome == Outcome::Unknown
                    || (op.outcome == Outcome::Ok && op.released == Some(true))
            }
            OpKind::Cancel => op.outcome != Outcome::Fail,
            _ => false,
        };
        if let (true, Some(token)) = (freed, op.token) {
            delayed.remove(&(op.key.as_str(), token));
        }
        if op.kind == OpKind::Cancel && op.outcome != Outcome::Fail {
            delayed.retain(|(k, _), (_, _, list)| {
                *k != op.key || list.iter().all(|&i| ops[i].owner != op.owner)
            });
        }
    }
    for ((key, token), (d, end, list)) in &delayed {
        if *d == 0 {
            continue;
        }
        let available = end + d;
        for &b in &grants {
            let op = &ops[b];
            let (Some(t), Some(at)) = (op.token, op.acquired_at_ms) else {
                continue;
            };
            if op.key == *key && t > *token && at < available {
                violations.push(Violation {
                    rule: "lock_delay_broken",
                    message: format!(
                        "key {key}: token {t} granted at {at}, but token {token} expired at {end} with lock_delay_ms {d} (available at {available})"
                    ),
                    ops: list.iter().copied().chain([b]).collect(),
                });
            }
        }
    }
    for (r, refusal) in ops.iter().enumerate() {
        let Some(available) = refusal.available_at_ms else {
            continue;
        };
        for &b in &grants {
            let op = &ops[b];
            if op.key == refusal.key
                && op.invoke_ms > refusal.complete_ms
                && op.acquired_at_ms.is_some_and(|at| at < available)
            {
                violations.push(Violation {
                    rule: "available_at_broken",
                    message: format!(
                        "key {}: a refusal said available at {available}, yet a grant asked for later started at {:?}",
                        op.key, op.acquired_at_ms
                    ),
                    ops: vec![r, b],
                });
            }
        }
    }
    violations
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chaos::history::ClientKind;

    fn op(kind: OpKind, key: &str, owner: &str, token: u64, t: (u64, u64), outcome: Outcome) -> Op {
        Op::new(kind, key, owner, Some(token), t.0, t.1, outcome)
    }

    fn grant(key: &str, owner: &str, token: u64, t: (u64, u64), lease: (u64, u64)) -> Op {
        Op {
            acquired_at_ms: Some(lease.0),
            expires_at_ms: Some(lease.1),
            ..op(OpKind::Acquire, key, owner, token, t, Outcome::Ok)
        }
    }

    fn release(key: &str, owner: &str, token: u64, t: (u64, u64), at: u64, outcome: Outcome) -> Op {
        Op {
            released: Some(true),
            at_ms: Some(at),
            ..op(OpKind::Release, key, owner, token, t, outcome)
        }
    }

    fn write(key: &str, owner: &str, token: u64, seq: u64, accepted: bool) -> Op {
        let outcome = if accepted { Outcome::Ok } else { Outcome::Fail };
        Op {
            seq: Some(seq),
            ..op(
                OpKind::ResourceWrite,
                key,
                owner,
                token,
                (seq, seq),
                outcome,
            )
        }
    }

    fn rules(v: &[Violation]) -> Vec<&'static str> {
        v.iter().map(|v| v.rule).collect()
    }

    #[test]
    fn a_valid_history_passes() {
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            release("k", "a", 3, (10, 12), 400, Outcome::Ok),
            grant("k", "b", 7, (20, 25), (400, 1400)),
            op(OpKind::Acquire, "k", "c", 0, (21, 26), Outcome::Fail),
            grant("j", "c", 9, (30, 31), (500, 1500)),
            write("k", "a", 3, 1, true),
            write("k", "b", 7, 2, true),
            write("k", "a", 3, 3, false),
        ];
        assert_eq!(check_all(&h), vec![]);
    }

    #[test]
    fn concurrent_grants_may_complete_in_any_token_order() {
        let h = vec![
            grant("k", "a", 9, (0, 50), (0, 10)),
            grant("k", "a", 8, (10, 20), (0, 10)),
        ];
        assert!(check_token_order(&h).is_empty());
    }

    #[test]
    fn a_smaller_token_after_a_larger_one_is_rejected() {
        let h = vec![
            grant("k", "a", 9, (0, 5), (0, 10)),
            grant("k", "b", 8, (6, 8), (20, 30)),
        ];
        assert_eq!(rules(&check_token_order(&h)), vec!["token_order"]);
    }

    #[test]
    fn one_token_for_two_owners_is_rejected() {
        let h = vec![
            grant("k", "a", 5, (0, 5), (0, 10)),
            grant("j", "b", 5, (6, 8), (0, 10)),
        ];
        assert_eq!(rules(&check_token_order(&h)), vec!["token_reuse"]);
    }

    #[test]
    fn overlapping_leases_are_rejected() {
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            grant("k", "b", 7, (20, 25), (900, 1900)),
        ];
        let v = check_lease_overlap(&h);
        assert_eq!(rules(&v), vec!["lease_overlap"]);
        assert_eq!(v[0].ops, vec![0, 1]);
    }

    #[test]
    fn a_renew_extends_the_lease_that_a_successor_must_respect() {
        let mut renew = grant("k", "a", 3, (10, 12), (100, 2000));
        renew.kind = OpKind::Renew;
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            renew,
            grant("k", "b", 7, (20, 25), (1500, 2500)),
        ];
        assert_eq!(rules(&check_lease_overlap(&h)), vec!["lease_overlap"]);
    }

    #[test]
    fn an_unknown_release_may_have_freed_the_lock() {
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            release("k", "a", 3, (10, 5000), 0, Outcome::Unknown),
            grant("k", "b", 7, (20, 25), (300, 1300)),
        ];
        assert!(check_lease_overlap(&h).is_empty());
    }

    #[test]
    fn an_acknowledged_release_ends_the_lease_at_its_time() {
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            release("k", "a", 3, (10, 12), 600, Outcome::Ok),
            grant("k", "b", 7, (20, 25), (500, 1500)),
        ];
        assert_eq!(rules(&check_lease_overlap(&h)), vec!["lease_overlap"]);
    }

    #[test]
    fn a_cancel_that_released_the_grant_may_have_ended_it() {
        // Seed 201: a waiter was granted, then its own cancel released the grant; the
        // cancel's answer carries the token but no cluster time.
        let cancel = op(OpKind::Cancel, "k", "a", 3, (10, 12), Outcome::Ok);
        let h = vec![
            grant("k", "a", 3, (0, 5), (100, 1100)),
            cancel,
            grant("k", "b", 7, (20, 25), (300, 1300)),
        ];
        assert!(check_lease_overlap(&h).is_empty());
        assert_eq!(
            rules(&check_lease_overlap(&[h[0].clone(), h[2].clone()])),
            vec!["lease_overlap"]
        );
    }

    #[test]
    fn a_resource_accepting_a_stale_token_is_caught() {
        // The negative control: a resource that ignores tokens.
        let h = vec![write("k", "b", 7, 1, true), write("k", "a", 3, 2, true)];
        assert_eq!(rules(&check_resource(&h)), vec!["stale_token_accepted"]);
    }

    #[test]
    fn a_late_client_holders_stale_write_is_caught_in_the_resources_order() {
        // A `baton lock` child stamps its writes on its own clock; the resource records
        // them in its own order (`seq`). A child whose supervisor missed the deadline sends
        // at 100 ms with token 3, but its write reaches the resource after a LockGuard
        // holder's with token 7 (sent at 150 ms): by send time it looks fine, by the
        // resource's order it is stale, and the resource accepted it.
        let client = |mut o: Op, c| {
            o.client = Some(c);
            o
        };
        let late = Op {
            invoke_ms: 100,
            complete_ms: 160,
            ..client(write("k", "cmd-0#4", 3, 2, true), ClientKind::BatonLock)
        };
        let newer = Op {
            invoke_ms: 150,
            complete_ms: 152,
            ..client(write("k", "guard-1#9", 7, 1, true), ClientKind::LockGuard)
        };
        let h = vec![late.clone(), newer.clone()];
        let v = check_resource(&h);
        assert_eq!(rules(&v), vec!["stale_token_accepted"]);
        assert_eq!(v[0].ops, vec![1, 0]);
        // Refused, it is what fencing is for.
        let refused = Op {
            outcome: Outcome::Fail,
            ..late
        };
        assert!(check_resource(&[refused, newer]).is_empty());
    }

    #[test]
    fn a_token_used_by_two_owners_at_the_resource_is_caught() {
        let h = vec![write("k", "a", 7, 1, true), write("k", "b", 7, 2, true)];
        assert_eq!(rules(&check_resource(&h)), vec!["token_shared"]);
    }

    fn delayed(key: &str, owner: &str, token: u64, t: (u64, u64), lease: (u64, u64), d: u64) -> Op {
        Op {
            lock_delay_ms: Some(d),
            ..grant(key, owner, token, t, lease)
        }
    }

    #[test]
    fn a_grant_after_the_lock_delay_passes() {
        let h = vec![
            delayed("k", "a", 3, (0, 5), (100, 600), 500),
            grant("k", "b", 9, (900, 1200), (1100, 2100)),
        ];
        assert!(check_lock_delay(&h).is_empty());
    }

    #[test]
    fn a_grant_inside_the_lock_delay_is_caught() {
        let h = vec![
            delayed("k", "a", 3, (0, 5), (100, 600), 500),
            grant("k", "b", 9, (900, 1000), (1000, 2000)),
        ];
        assert_eq!(rules(&check_lock_delay(&h)), vec!["lock_delay_broken"]);
    }

    #[test]
    fn a_released_lock_starts_no_delay() {
        let h = vec![
            delayed("k", "a", 3, (0, 5), (100, 600), 500),
            release("k", "a", 3, (10, 12), 200, Outcome::Ok),
            grant("k", "b", 9, (300, 400), (300, 1300)),
        ];
        assert!(check_lock_delay(&h).is_empty());
    }

    #[test]
    fn a_grant_before_a_promised_available_at_is_caught() {
        let refusal = Op {
            error: Some("LOCK_HELD".into()),
            available_at_ms: Some(1100),
            ..op(OpKind::Acquire, "k", "b", 0, (700, 710), Outcome::Fail)
        };
        let h = vec![refusal, grant("k", "b", 9, (720, 800), (1000, 2000))];
        assert_eq!(rules(&check_lock_delay(&h)), vec!["available_at_broken"]);
        let h = vec![h[0].clone(), grant("k", "b", 9, (720, 800), (1100, 2100))];
        assert!(check_lock_delay(&h).is_empty());
    }

    #[test]
    fn history_lines_round_trip_through_json() {
        let o = grant("k", "a", 3, (0, 5), (100, 1100));
        let line = serde_json::to_string(&o).unwrap();
        assert_eq!(serde_json::from_str::<Op>(&line).unwrap(), o);
        assert!(serde_json::from_str::<Op>(r#"{"process":"p"}"#).is_err());
    }
}
