//! Client-side safe deadlines: a holder under the Rust client never acts on its lock
//! after the deadline its client computes.
//!
//! DESIGN.md "Time and leases": a client counts its lease from the moment it *sent* the
//! acquire or renew, on its own monotonic clock, minus a safety margin
//! ([`safe_deadline`]). `LockGuard` work stops at that deadline and `baton lock` kills
//! its command before it. So a resource write by such a holder (an operation with
//! `client` set, see [`super::holders`]) sent at `w` on the writer's own clock must come
//! no later than
//! `max { safe_deadline(g.invoke, g.ttl) : g an acknowledged acquire or renew of the same
//! key and token, answered at or before w }`,
//! and a write with no such grant at all is one made before the holder could know it held
//! the lock.
//!
//! The grants' times are the relay's ([`super::relay`]): each attempt is sent a loopback
//! hop after the client sent it and answered before the client hears of it, so the
//! deadline computed here is no earlier than the client's own, and the grants counted no
//! fewer than the client knew of at `w` — this rule is looser than the client by that
//! hop, never stricter. (The Rust client even counts from the first attempt of a retried
//! call.) The writes' times are the writers' own: the child process of `baton lock`
//! stamps each write on the run's clock before sending it.
//!
//! The other half of the client guarantee is fencing: whatever a holder writes late, the
//! resource must refuse a token older than one it accepted ([`super::check::check_resource`],
//! which covers these writes too).
//!
//! Also measured: sessions and writes per client, and how close a write came to its
//! deadline.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use tokio::time::Instant;

use super::check::Violation;
use super::history::{ClientKind, Op, OpKind, Outcome};
use crate::client::safe_deadline;

/// The client-side safe deadline, in history ms, of a grant sent at `invoke_ms` with a
/// `ttl_ms` lease: [`safe_deadline`] on the history's clock.
pub fn deadline_ms(invoke_ms: u64, ttl_ms: u64) -> u64 {
    let base = Instant::now();
    let after = safe_deadline(base, Duration::from_millis(ttl_ms)) - base;
    invoke_ms + u64::try_from(after.as_millis()).unwrap_or(u64::MAX)
}

/// What the deadline check found and measured.
#[derive(Debug, Default)]
pub struct DeadlineReport {
    pub violations: Vec<Violation>,
    /// Sessions (owners that wrote) per client.
    pub sessions: BTreeMap<&'static str, u64>,
    /// Writes per client.
    pub writes: BTreeMap<&'static str, u64>,
    /// Writes of these holders that the resource refused (a newer token had written).
    pub refused: u64,
    /// Per client, the smallest time between a write and its deadline, in ms.
    pub min_slack_ms: BTreeMap<&'static str, u64>,
}

/// A grant as its holder learned of it.
struct Known {
    /// When the answer came (relay time).
    answered_ms: u64,
    deadline_ms: u64,
    op: usize,
}

/// No write by a client-supervised holder after its safe deadline (module docs).
pub fn check_safe_deadlines(ops: &[Op]) -> DeadlineReport {
    let mut grants: BTreeMap<(&str, u64), Vec<Known>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        let granted =
            op.outcome == Outcome::Ok && matches!(op.kind, OpKind::Acquire | OpKind::Renew);
        if let (true, Some(token), Some(ttl)) = (granted, op.token, op.ttl_ms) {
            grants.entry((&op.key, token)).or_default().push(Known {
                answered_ms: op.complete_ms,
                deadline_ms: deadline_ms(op.invoke_ms, ttl),
                op: i,
            });
        }
    }
    let mut report = DeadlineReport::default();
    let mut owners: BTreeSet<(&str, &str)> = BTreeSet::new();
    for (i, op) in ops.iter().enumerate() {
        let (Some(client), Some(token)) = (op.client, op.token) else {
            continue;
        };
        if op.kind != OpKind::ResourceWrite {
            continue;
        }
        *report.writes.entry(client.as_str()).or_default() += 1;
        if owners.insert((client.as_str(), op.owner.as_deref().unwrap_or_default())) {
            *report.sessions.entry(client.as_str()).or_default() += 1;
        }
        if op.outcome != Outcome::Ok {
            report.refused += 1;
        }
        let w = op.invoke_ms;
        let latest = grants
            .get(&(op.key.as_str(), token))
            .into_iter()
            .flatten()
            .filter(|g| g.answered_ms <= w)
            .max_by_key(|g| g.deadline_ms);
        let who = |c: ClientKind| match c {
            ClientKind::LockGuard => "LockGuard work",
            ClientKind::BatonLock => "a baton lock child",
        };
        match latest {
            None => report.violations.push(Violation {
                rule: "write_without_grant",
                message: format!(
                    "key {}: {} ({:?}) wrote with token {token} at {w} ms, before any grant of that token was answered",
                    op.key, who(client), op.owner
                ),
                ops: vec![i],
            }),
            Some(g) if w > g.deadline_ms => report.violations.push(Violation {
                rule: "write_after_safe_deadline",
                message: format!(
                    "key {}: {} ({:?}) wrote with token {token} at {w} ms, {} ms after its safe deadline {} ms",
                    op.key,
                    who(client),
                    op.owner,
                    w - g.deadline_ms,
                    g.deadline_ms
                ),
                ops: vec![g.op, i],
            }),
            Some(g) => {
                let slack = g.deadline_ms - w;
                let min = report.min_slack_ms.entry(client.as_str()).or_insert(slack);
                *min = (*min).min(slack);
            }
        }
    }
    report
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An acknowledged grant (`kind` acquire or renew) of `token` on `k`, sent at `t.0`
    /// and answered at `t.1`, with a 1 s lease.
    fn grant(kind: OpKind, owner: &str, token: u64, t: (u64, u64)) -> Op {
        Op {
            ttl_ms: Some(1_000),
            acquired_at_ms: Some(50_000 + t.0),
            expires_at_ms: Some(51_000 + t.0),
            ..Op::new(kind, "k", owner, Some(token), t.0, t.1, Outcome::Ok)
        }
    }

    /// A write by a holder under `client`, sent at `w` on its own clock.
    fn write(client: ClientKind, owner: &str, token: u64, w: u64, seq: u64) -> Op {
        Op {
            seq: Some(seq),
            client: Some(client),
            ..Op::new(
                OpKind::ResourceWrite,
                "k",
                owner,
                Some(token),
                w,
                w + 1,
                Outcome::Ok,
            )
        }
    }

    fn rules(ops: &[Op]) -> Vec<&'static str> {
        check_safe_deadlines(ops)
            .violations
            .iter()
            .map(|v| v.rule)
            .collect()
    }

    #[test]
    fn the_deadline_is_the_clients_own() {
        // 1 s lease, a fifth of it as margin.
        assert_eq!(deadline_ms(1_000, 1_000), 1_800);
        assert_eq!(deadline_ms(0, 30_000), 28_000);
    }

    #[test]
    fn writes_before_the_deadline_pass_and_renewals_move_it() {
        let h = vec![
            grant(OpKind::Acquire, "cmd-0#1", 7, (1_000, 1_010)),
            write(ClientKind::BatonLock, "cmd-0#1", 7, 1_100, 1),
            grant(OpKind::Renew, "cmd-0#1", 7, (1_300, 1_320)),
            write(ClientKind::BatonLock, "cmd-0#1", 7, 2_100, 2),
        ];
        let r = check_safe_deadlines(&h);
        assert_eq!(r.violations, vec![]);
        assert_eq!(r.min_slack_ms.get("baton_lock"), Some(&0));
        assert_eq!(r.sessions.get("baton_lock"), Some(&1));
        assert_eq!(r.writes.get("baton_lock"), Some(&2));
    }

    #[test]
    fn a_baton_lock_child_writing_after_the_deadline_is_caught() {
        let h = vec![
            grant(OpKind::Acquire, "cmd-0#1", 7, (1_000, 1_010)),
            write(ClientKind::BatonLock, "cmd-0#1", 7, 1_801, 1),
        ];
        let r = check_safe_deadlines(&h);
        assert_eq!(rules(&h), vec!["write_after_safe_deadline"]);
        assert_eq!(r.violations[0].ops, vec![0, 1]);
    }

    #[test]
    fn the_deadline_counts_from_the_send_not_the_answer() {
        // A slow answer (a failover) does not lengthen the lease on the client.
        let h = vec![
            grant(OpKind::Acquire, "guard-0#1", 7, (1_000, 1_700)),
            write(ClientKind::LockGuard, "guard-0#1", 7, 1_900, 1),
        ];
        assert_eq!(rules(&h), vec!["write_after_safe_deadline"]);
    }

    #[test]
    fn a_renewal_answered_after_the_write_did_not_cover_it() {
        // The renewal was under way (the server may have granted it), but the holder did
        // not know yet when it wrote.
        let h = vec![
            grant(OpKind::Acquire, "guard-0#1", 7, (1_000, 1_010)),
            grant(OpKind::Renew, "guard-0#1", 7, (1_700, 1_900)),
            write(ClientKind::LockGuard, "guard-0#1", 7, 1_850, 1),
        ];
        assert_eq!(rules(&h), vec!["write_after_safe_deadline"]);
    }

    #[test]
    fn an_unacknowledged_renewal_or_another_tokens_grant_extends_nothing() {
        let mut unknown = grant(OpKind::Renew, "cmd-0#1", 7, (1_300, 4_300));
        unknown.outcome = Outcome::Unknown;
        let mut other_key = grant(OpKind::Renew, "cmd-0#1", 7, (1_300, 1_310));
        other_key.key = "j".into();
        let h = vec![
            grant(OpKind::Acquire, "cmd-0#1", 7, (1_000, 1_010)),
            unknown,
            other_key,
            grant(OpKind::Acquire, "cmd-1#1", 9, (1_400, 1_410)),
            write(ClientKind::BatonLock, "cmd-0#1", 7, 2_000, 1),
        ];
        assert_eq!(rules(&h), vec!["write_after_safe_deadline"]);
    }

    #[test]
    fn a_write_before_its_grant_was_answered_is_caught() {
        let h = vec![
            write(ClientKind::BatonLock, "cmd-0#1", 7, 990, 1),
            grant(OpKind::Acquire, "cmd-0#1", 7, (900, 1_000)),
        ];
        assert_eq!(rules(&h), vec!["write_without_grant"]);
        let h = vec![write(ClientKind::LockGuard, "guard-0#1", 7, 990, 1)];
        assert_eq!(rules(&h), vec!["write_without_grant"]);
    }

    #[test]
    fn writers_without_a_supervising_client_are_not_judged() {
        // The fenced holders stall past their lease on purpose; fencing judges them.
        let mut stalled = write(ClientKind::LockGuard, "holder-0", 7, 5_000, 1);
        stalled.client = None;
        let h = vec![
            grant(OpKind::Acquire, "holder-0", 7, (1_000, 1_010)),
            stalled,
        ];
        assert_eq!(rules(&h), Vec::<&str>::new());
    }
}
