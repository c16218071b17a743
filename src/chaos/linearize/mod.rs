//! Per-key linearizability of a lock-service history (Wing & Gong, as Porcupine does it).
//!
//! The lock of one key is an object of its own, so each key's history is checked on its
//! own (P-compositionality). For one key, the search looks for a total order of the key's
//! operations that (a) respects real time — an operation that completed before another
//! was invoked comes first — and (b) makes every recorded result true under the model
//! below. It is a depth-first search over "which operation takes effect next", with an
//! explicit stack (a key may have tens of thousands of sequential operations) and a memo
//! of visited configurations: the operations already linearized (a frontier in invoke
//! order plus the few linearized ahead of it) and the model state. A key whose search
//! needs more than a budget of states is *inconclusive*, not invalid.
//!
//! # The model
//! The state of a key is its stored grant (owner, token, lease end), the highest token
//! granted so far, and a lower bound on cluster time (`now_lb`). Cluster time never
//! decreases along the log; it is known for `ok` acquires and renews (`expires_at_ms -
//! ttl_ms`) and `ok` releases (`at_ms`), unknown for everything else.
//! - `ok` acquire: a fresh grant (the lock free or its lease over, the token above every
//!   earlier one) or, for the holder's own owner, the same grant with its lease reset.
//! - `ok` renew / release: the live holder had that token; `released: false` means no
//!   live holder had it.
//! - `ok` read and `LOCK_HELD` refusal: the live holder was the one shown (or none); a
//!   `LOCK_LOST` refusal: the token was not the live holder's. Other failures prove
//!   nothing and are dropped, as are resource writes.
//! - `unknown`: may take effect at any time after its invocation, or never. An unknown
//!   acquire grants a token nobody has seen yet; a later observation naming it pins it.
//!
//! A lease with end `e` is certainly live before cluster time `e`; at or after `e` the
//! model may choose it expired (raising `now_lb` to `e`) or still live. Expiry is chosen
//! lazily, only by an operation that needs it, since choosing it later never loses an
//! explanation.
//!
//! # Caveats
//! What the history cannot show, the model must allow:
//! - **Refreshes.** A new leader may lengthen every live lease (DESIGN.md, "Time and
//!   leases") without a trace in the history, so a lease is never *required* to have
//!   expired, and a read or refusal may show a later `expires_at` than the last
//!   acknowledged one. An earlier one is a violation: only renews shorten a lease.
//! - **Read and refusal times** are not recorded, so these operations constrain only
//!   through order, and a lease they show must end after `now_lb`.
//! - **Unknown operations** carry no result: the lease an unknown renew or re-acquire set
//!   may end at any later time, and an unknown grant's token is only known to exceed the
//!   tokens before it (later grants are not required to exceed it). The model lets an
//!   unknown operation take effect more than once: this keeps the memo small and only
//!   misses one lost request explaining two different unacknowledged grants.
//! - An `ok` operation missing its result fields is treated as `unknown`.
//! - A violation names the operations around the deepest point the search reached; the
//!   culprit may lie earlier (e.g. the acknowledged release a later read contradicts).

use std::collections::{BTreeMap, HashMap, HashSet};

use super::check::Violation;
use super::history::{Holder, Op, OpKind, Outcome};

/// States the search may visit per key before it gives up on that key.
pub const DEFAULT_BUDGET: u64 = 2_000_000;
/// Error code of an acquire refused because another owner holds the lock.
const LOCK_HELD: &str = "LOCK_HELD";
/// Error code of a renew whose token no longer holds the lock.
const LOCK_LOST: &str = "LOCK_LOST";
/// Rule name of the violations this check reports.
const RULE: &str = "not_linearizable";
/// How many of the last linearized operations a violation names.
const REPORT_TAIL: usize = 3;
/// How many of the operations that could not come next a violation names.
const REPORT_WINDOW: usize = 4;

/// The result of [`check_linearizable`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LinearizabilityReport {
    /// Keys with at least one operation that takes part.
    pub keys_checked: usize,
    /// Operations that take part (acquire, renew, release, read; informative outcomes).
    pub ops_checked: usize,
    /// Keys whose search ran out of budget: neither proven nor refuted.
    pub inconclusive_keys: Vec<String>,
    /// One `not_linearizable` violation per refuted key; `ops` are history indexes.
    pub violations: Vec<Violation>,
    /// Keys left to other checks because the model does not know their operations: a
    /// waiting acquire, a lock-delay or a cancel (see [`outside_model`]).
    pub keys_outside_model: Vec<String>,
}

/// Whether `op` is beyond the model: a waiting acquire takes effect at some later grant
/// (or never), a lock-delay keeps an expired key from everyone, and a cancel releases a
/// grant nobody was told of. The model knows none of these, so a key with any of them is
/// left to the queue, lock-delay and event checks (`chaos::queue`, `check`,
/// `chaos::events`).
pub fn outside_model(op: &Op) -> bool {
    op.kind == OpKind::Cancel
        || op.wait_ms.is_some_and(|w| w > 0)
        || op.lock_delay_ms.is_some_and(|d| d > 0)
}

/// Checks every key of `ops` for linearizability with [`DEFAULT_BUDGET`].
pub fn check_linearizable(ops: &[Op]) -> LinearizabilityReport {
    check_linearizable_with_budget(ops, DEFAULT_BUDGET)
}

/// Checks every key of `ops`, visiting at most `budget` search states per key.
pub fn check_linearizable_with_budget(ops: &[Op], budget: u64) -> LinearizabilityReport {
    let mut by_key: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, op) in ops.iter().enumerate() {
        by_key.entry(op.key.as_str()).or_default().push(i);
    }
    let mut report = LinearizabilityReport::default();
    for (key, indexes) in by_key {
        if indexes.iter().any(|&i| outside_model(&ops[i])) {
            report.keys_outside_model.push(key.to_string());
            continue;
        }
        let history = KeyHistory::new(ops, &indexes);
        if history.participating == 0 {
            continue;
        }
        report.keys_checked += 1;
        report.ops_checked += history.participating;
        match history.search(budget) {
            Verdict::Linearizable => {}
            Verdict::OutOfBudget => report.inconclusive_keys.push(key.to_string()),
            Verdict::Stuck(stuck) => report.violations.push(history.violation(key, &stuck)),
        }
    }
    report
}

/// A grant as an operation showed it: an `ok` acquire, a read, a refusal.
mod model;
use model::*;

/// An operation the search linearizes: a required one or an unknown one, by position.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum OpRef {
    Required(u32),
    Unknown(u32),
}

/// A search node: which required operations are linearized, and the model state.
///
/// Required positions below `frontier` are all linearized, `frontier` itself is not,
/// and `ahead` lists (sorted) the linearized ones past it. Unknown operations are not
/// tracked: they may take effect at any point, any number of times (see Caveats).
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
struct Config {
    frontier: u32,
    ahead: Vec<u32>,
    state: State,
}

impl Config {
    /// Required operations linearized.
    fn done(&self) -> usize {
        self.frontier as usize + self.ahead.len()
    }

    fn child(&self, op: OpRef, state: State) -> Config {
        let (mut frontier, mut ahead) = (self.frontier, self.ahead.clone());
        if let OpRef::Required(p) = op {
            if p != frontier {
                let at = ahead.binary_search(&p).unwrap_or_else(|at| at);
                ahead.insert(at, p);
            } else {
                // Fold the operations linearized ahead that are now contiguous.
                frontier += 1;
                while ahead.first() == Some(&frontier) {
                    ahead.remove(0);
                    frontier += 1;
                }
            }
        }
        Config {
            frontier,
            ahead,
            state,
        }
    }
}

/// Where a refuted search got furthest.
struct Stuck {
    config: Config,
    /// The last operations linearized on the way there, latest first.
    tail: Vec<OpRef>,
}

enum Verdict {
    Linearizable,
    OutOfBudget,
    Stuck(Stuck),
}

/// One DFS frame: a configuration, its successors, and the next one to try.
struct Frame {
    config: Config,
    next: usize,
    successors: Vec<(OpRef, State)>,
}

/// The operations of one key, ready to search.
struct KeyHistory<'a> {
    ops: &'a [Op],
    /// Operations that must be linearized, by invoke time.
    required: Vec<Event>,
    /// Unknown operations, by invoke time, one per distinct effect: a later duplicate can
    /// do nothing the earliest one cannot.
    unknown: Vec<Event>,
    /// `suffix_min_complete[p]`: the earliest completion of required positions `>= p`.
    suffix_min_complete: Vec<u64>,
    owners: Vec<String>,
    /// Participating operations, duplicates included.
    participating: usize,
}

impl<'a> KeyHistory<'a> {
    fn new(ops: &'a [Op], indexes: &[usize]) -> KeyHistory<'a> {
        let mut owners = Owners::default();
        let mut required = Vec::new();
        let mut unknown = Vec::new();
        for &index in indexes {
            let op = &ops[index];
            let Some((effect, time, must)) = classify(op, &mut owners) else {
                continue;
            };
            let event = Event {
                index,
                invoke: op.invoke_ms,
                complete: op.complete_ms.max(op.invoke_ms),
                time,
                effect,
            };
            if must {
                required.push(event);
            } else {
                unknown.push(event);
            }
        }
        let participating = required.len() + unknown.len();
        required.sort_by_key(|e| (e.invoke, e.complete, e.index));
        unknown.sort_by_key(|e| (e.invoke, e.index));
        let mut effects = HashSet::new();
        unknown.retain(|e| effects.insert(e.effect));
        let mut suffix_min_complete = vec![u64::MAX; required.len() + 1];
        for p in (0..required.len()).rev() {
            suffix_min_complete[p] = suffix_min_complete[p + 1].min(required[p].complete);
        }
        KeyHistory {
            ops,
            required,
            unknown,
            suffix_min_complete,
            owners: owners.names,
            participating,
        }
    }

    /// The earliest completion among required operations not yet linearized: only an
    /// operation invoked no later than this may come next (real-time order).
    fn horizon(&self, c: &Config) -> u64 {
        let f = c.frontier as usize;
        let end = c
            .ahead
            .last()
            .map_or(f + 1, |&a| a as usize + 1)
            .min(self.required.len());
        let mut m = self.suffix_min_complete[end];
        let mut ahead = c.ahead.iter().peekable();
        for p in f..end {
            if ahead.next_if_eq(&&(p as u32)).is_none() {
                m = m.min(self.required[p].complete);
            }
        }
        m
    }

    /// Required positions that may come next in `c`, in invoke order.
    fn window<'c>(&'c self, c: &'c Config, horizon: u64) -> impl Iterator<Item = usize> + 'c {
        (c.frontier as usize..self.required.len())
            .take_while(move |&p| self.required[p].invoke <= horizon)
            .filter(move |p| c.ahead.binary_search(&(*p as u32)).is_err())
    }

    fn frame(&self, config: Config, scratch: &mut Vec<State>) -> Frame {
        let horizon = self.horizon(&config);
        let mut successors = Vec::new();
        let candidates = self
            .window(&config, horizon)
            .map(|p| (OpRef::Required(p as u32), &self.required[p]))
            .chain(
                self.unknown
                    .iter()
                    .take_while(|e| e.invoke <= horizon)
                    .enumerate()
                    .map(|(u, e)| (OpRef::Unknown(u as u32), e)),
            );
        for (op, e) in candidates {
            scratch.clear();
            step(e.effect, e.time, config.state, scratch);
            successors.extend(scratch.iter().map(|&s| (op, s)));
        }
        Frame {
            config,
            next: 0,
            successors,
        }
    }

    /// Depth-first search, required operations before unknown ones, memoised.
    fn search(&self, budget: u64) -> Verdict {
        let total = self.required.len();
        if total == 0 {
            return Verdict::Linearizable;
        }
        let mut scratch = Vec::new();
        let root = Config::default();
        let mut visited: HashSet<Config> = HashSet::new();
        visited.insert(root.clone());
        let mut explored: u64 = 1;
        let mut best = Stuck {
            config: root.clone(),
            tail: Vec::new(),
        };
        let mut stack = vec![self.frame(root, &mut scratch)];
        while let Some(top) = stack.last_mut() {
            let Some(&(op, state)) = top.successors.get(top.next) else {
                stack.pop();
                continue;
            };
            top.next += 1;
            let child = top.config.child(op, state);
            if child.frontier as usize == total {
                return Verdict::Linearizable;
            }
            if visited.contains(&child) {
                continue;
            }
            visited.insert(child.clone());
            explored += 1;
            if explored > budget {
                return Verdict::OutOfBudget;
            }
            if child.done() > best.config.done() {
                let tail = stack
                    .iter()
                    .rev()
                    .take(REPORT_TAIL)
                    .map(|f| f.successors[f.next - 1].0)
                    .collect();
                best = Stuck {
                    config: child.clone(),
                    tail,
                };
            }
            stack.push(self.frame(child, &mut scratch));
        }
        Verdict::Stuck(best)
    }

    fn event(&self, op: OpRef) -> &Event {
        match op {
            OpRef::Required(p) => &self.required[p as usize],
            OpRef::Unknown(u) => &self.unknown[u as usize],
        }
    }

    /// The violation of a refuted key: the last operations linearized on the deepest path
    /// and the ones that could not follow.
    fn violation(&self, key: &str, stuck: &Stuck) -> Violation {
        let horizon = self.horizon(&stuck.config);
        let window = self.window(&stuck.config, horizon).take(REPORT_WINDOW);
        let next: Vec<usize> = window.map(|p| self.required[p].index).collect();
        let after: Vec<usize> = stuck
            .tail
            .iter()
            .rev()
            .map(|&op| self.event(op).index)
            .collect();
        let mut ops: Vec<usize> = after.iter().chain(&next).copied().collect();
        ops.sort_unstable();
        ops.dedup();
        let describe = |list: &[usize]| {
            let ops: Vec<String> = list.iter().map(|&i| self.describe_op(i)).collect();
            ops.join("; ")
        };
        let message = format!(
            "key {key}: no order explains the history; at best {} of {} operations linearize, \
             after [{}] with {}, and none of [{}] can come next",
            stuck.config.done(),
            self.required.len(),
            describe(&after),
            self.describe_state(&stuck.config.state),
            describe(&next),
        );
        Violation {
            rule: RULE,
            message,
            ops,
        }
    }

    fn describe_op(&self, index: usize) -> String {
        let op = &self.ops[index];
        let field = |name: &str, value: Option<String>| {
            value.map_or(String::new(), |v| format!(" {name} {v}"))
        };
        let seen = match &op.holder {
            Some(h) => format!(
                " saw {} token {} until {}",
                h.owner, h.token, h.expires_at_ms
            ),
            None if op.kind == OpKind::Read => " saw free".to_string(),
            None => String::new(),
        };
        format!(
            "#{index} {}{}{}{}{}{}{seen}",
            format!("{:?} {:?}", op.kind, op.outcome).to_lowercase(),
            field("by", op.owner.clone()),
            field("token", op.token.map(|t| t.to_string())),
            field("until", op.expires_at_ms.map(|e| e.to_string())),
            field("released", op.released.map(|r| r.to_string())),
            field("error", op.error.clone()),
        )
    }

    fn describe_state(&self, s: &State) -> String {
        let holder = s.holder.map_or("the lock free".to_string(), |h| {
            let owner = self
                .owners
                .get(h.owner as usize)
                .map_or("?", String::as_str);
            let token = match h.token {
                Tok::Known(t) => t.to_string(),
                Tok::Above(above) => format!("above {above}"),
            };
            format!("{owner} holding token {token} until at least {}", h.expires)
        });
        format!("{holder} at cluster time >= {}", s.now_lb)
    }
}

#[cfg(test)]
mod tests {
    use std::cmp::Reverse;
    use std::collections::BinaryHeap;
    use std::time::Instant;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const KEY: &str = "k";

    /// An `ok` acquire by `owner` during `t`, applied at `lease.0`, lease ending at `lease.1`.
    fn acquire(owner: &str, token: u64, t: (u64, u64), lease: (u64, u64)) -> Op {
        Op {
            acquired_at_ms: Some(lease.0),
            expires_at_ms: Some(lease.1),
            ttl_ms: Some(lease.1 - lease.0),
            ..Op::new(
                OpKind::Acquire,
                KEY,
                owner,
                Some(token),
                t.0,
                t.1,
                Outcome::Ok,
            )
        }
    }

    fn renew(owner: &str, token: u64, t: (u64, u64), lease: (u64, u64)) -> Op {
        Op {
            kind: OpKind::Renew,
            ..acquire(owner, token, t, lease)
        }
    }

    fn release(owner: &str, token: u64, t: (u64, u64), at: u64, released: bool) -> Op {
        Op {
            released: Some(released),
            at_ms: Some(at),
            ..Op::new(
                OpKind::Release,
                KEY,
                owner,
                Some(token),
                t.0,
                t.1,
                Outcome::Ok,
            )
        }
    }

    fn holder(h: (&str, u64, u64)) -> Holder {
        Holder {
            owner: h.0.to_string(),
            token: h.1,
            expires_at_ms: h.2,
        }
    }

    fn read(by: &str, t: (u64, u64), seen: Option<(&str, u64, u64)>) -> Op {
        Op {
            holder: seen.map(holder),
            ..Op::new(OpKind::Read, KEY, by, None, t.0, t.1, Outcome::Ok)
        }
    }

    /// An acquire by `owner` refused with `LOCK_HELD`, naming `seen`.
    fn refused(owner: &str, t: (u64, u64), seen: (&str, u64, u64)) -> Op {
        Op {
            error: Some(LOCK_HELD.into()),
            holder: Some(holder(seen)),
            ..Op::new(OpKind::Acquire, KEY, owner, None, t.0, t.1, Outcome::Fail)
        }
    }

    fn lost(owner: &str, token: u64, t: (u64, u64)) -> Op {
        Op {
            error: Some(LOCK_LOST.into()),
            ..Op::new(
                OpKind::Renew,
                KEY,
                owner,
                Some(token),
                t.0,
                t.1,
                Outcome::Fail,
            )
        }
    }

    fn unknown(kind: OpKind, owner: &str, token: Option<u64>, t: (u64, u64)) -> Op {
        Op {
            error: Some("timeout".into()),
            ..Op::new(kind, KEY, owner, token, t.0, t.1, Outcome::Unknown)
        }
    }

    fn assert_linearizable(h: &[Op]) {
        let r = check_linearizable(h);
        assert_eq!(r.violations, vec![], "expected linearizable");
        assert!(r.inconclusive_keys.is_empty());
    }

    /// The single violation of `h`.
    fn refuted(h: &[Op]) -> Violation {
        let r = check_linearizable(h);
        assert!(r.inconclusive_keys.is_empty());
        assert_eq!(r.violations.len(), 1, "expected one violation: {r:?}");
        assert_eq!(r.violations[0].rule, RULE);
        r.violations[0].clone()
    }

    #[test]
    fn keys_with_waits_delays_or_cancels_are_left_to_other_checks() {
        // Unexplainable under the model (a second grant while the first is live), but a
        // waiting acquire puts the key outside it.
        let mut waited = acquire("b", 7, (20, 25), (300, 1300));
        waited.wait_ms = Some(1_000);
        let h = vec![acquire("a", 3, (0, 5), (100, 1100)), waited];
        let r = check_linearizable(&h);
        assert!(r.violations.is_empty());
        assert_eq!(r.keys_outside_model, vec![KEY.to_string()]);
        let mut plain = h.clone();
        plain[1].wait_ms = None;
        assert_eq!(check_linearizable(&plain).violations.len(), 1);
    }

    #[test]
    fn sequential_acquire_renew_release_reacquire_is_linearizable() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            renew("a", 3, (10, 15), (200, 1200)),
            read("b", (20, 25), Some(("a", 3, 1200))),
            release("a", 3, (30, 35), 300, true),
            read("b", (36, 37), None),
            acquire("a", 8, (40, 45), (400, 1400)),
            release("a", 3, (50, 55), 500, false),
            lost("a", 3, (60, 65)),
            release("a", 8, (70, 75), 700, true),
        ];
        assert_linearizable(&h);
        let r = check_linearizable(&h);
        assert_eq!((r.keys_checked, r.ops_checked), (1, 9));
    }

    #[test]
    fn racing_clients_are_ordered_by_what_they_saw() {
        let h = vec![
            // b asked first but was refused by a's grant: a's acquire came first.
            refused("b", (0, 90), ("a", 5, 1050)),
            acquire("a", 5, (5, 100), (50, 1050)),
            // b's grant needs the lock free at 200: after a's release at 150.
            acquire("b", 9, (100, 250), (200, 1200)),
            release("a", 5, (110, 300), 150, true),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn an_unknown_acquire_may_show_up_later() {
        let h = vec![
            unknown(OpKind::Acquire, "a", None, (0, 3000)),
            read("b", (100, 110), Some(("a", 4, 2000))),
            refused("b", (200, 210), ("a", 4, 2000)),
            // a asks again and gets the same grant back.
            acquire("a", 4, (300, 310), (305, 2305)),
            release("a", 4, (400, 410), 405, true),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn an_unknown_release_may_have_freed_the_lock() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            unknown(OpKind::Release, "a", Some(3), (10, 3000)),
            acquire("b", 7, (30, 40), (500, 1500)),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn an_unknown_release_may_have_done_nothing() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            unknown(OpKind::Release, "a", Some(3), (10, 3000)),
            renew("a", 3, (30, 40), (600, 1600)),
            read("b", (50, 60), Some(("a", 3, 1600))),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn another_owner_may_take_an_expired_lock() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            acquire("b", 7, (2000, 2010), (1500, 2500)),
            lost("a", 3, (2020, 2030)),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn a_read_may_show_a_refreshed_lease() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            read("b", (20, 25), Some(("a", 3, 5000))),
            refused("b", (30, 35), ("a", 3, 5000)),
            // A renew may shorten it again; reads then show the new end.
            renew("a", 3, (40, 45), (300, 1300)),
            read("b", (50, 55), Some(("a", 3, 1300))),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn the_same_owner_may_acquire_again() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            acquire("a", 3, (10, 15), (500, 1500)),
            refused("b", (20, 25), ("a", 3, 1500)),
        ];
        assert_linearizable(&h);
    }

    #[test]
    fn overlapping_grants_are_rejected() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            acquire("b", 7, (20, 25), (900, 1900)),
        ];
        assert_eq!(refuted(&h).ops, vec![0, 1]);
    }

    #[test]
    fn a_lost_release_is_rejected() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            release("a", 3, (10, 15), 300, true),
            read("b", (20, 25), Some(("a", 3, 5000))),
        ];
        let v = refuted(&h);
        assert_eq!(v.ops, vec![0, 1, 2]);
        assert!(v.message.contains("#2 read ok"), "{}", v.message);
    }

    #[test]
    fn a_lost_grant_is_rejected() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            read("b", (10, 15), None),
            renew("a", 3, (20, 25), (500, 1500)),
        ];
        assert!(refuted(&h).ops.contains(&2));
    }

    #[test]
    fn a_refusal_naming_a_released_holder_is_rejected() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            release("a", 3, (10, 15), 300, true),
            refused("b", (20, 25), ("a", 3, 1100)),
        ];
        assert!(refuted(&h).ops.contains(&2));
    }

    #[test]
    fn tokens_going_backwards_are_rejected() {
        let h = vec![
            acquire("a", 9, (0, 5), (100, 200)),
            release("a", 9, (10, 15), 150, true),
            acquire("b", 5, (20, 25), (300, 400)),
        ];
        assert!(refuted(&h).ops.contains(&2));
    }

    #[test]
    fn a_read_of_an_owner_never_granted_is_rejected() {
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            read("b", (10, 15), Some(("z", 4, 2000))),
        ];
        assert!(refuted(&h).ops.contains(&1));
    }

    #[test]
    fn uninformative_failures_and_resource_writes_take_no_part() {
        let mut no_leader = acquire("b", 7, (20, 25), (900, 1900));
        no_leader.outcome = Outcome::Fail;
        no_leader.error = Some("NO_LEADER".into());
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            no_leader,
            Op::new(
                OpKind::ResourceWrite,
                KEY,
                "b",
                Some(7),
                30,
                31,
                Outcome::Ok,
            ),
            read("b", (40, 45), Some(("a", 3, 1100))),
        ];
        assert_linearizable(&h);
        assert_eq!(check_linearizable(&h).ops_checked, 2);
    }

    #[test]
    fn keys_are_checked_independently() {
        let other = |mut op: Op| {
            op.key = "j".into();
            op
        };
        let h = vec![
            acquire("a", 3, (0, 5), (100, 1100)),
            other(acquire("b", 4, (0, 5), (100, 1100))),
            other(acquire("c", 8, (20, 25), (900, 1900))),
            read("b", (40, 45), Some(("a", 3, 1100))),
        ];
        let r = check_linearizable(&h);
        assert_eq!(r.keys_checked, 2);
        assert_eq!(r.violations.len(), 1);
        assert!(r.violations[0].message.starts_with("key j:"));
        assert_eq!(r.violations[0].ops, vec![1, 2]);
    }

    /// One client cycling acquire, renew, read, release; `n` operations.
    fn long_sequential(n: usize) -> Vec<Op> {
        let mut h = Vec::with_capacity(n);
        let mut t = 0;
        let mut token = 0;
        while h.len() < n {
            token += 3;
            h.push(acquire("a", token, (t, t + 2), (t + 1, t + 1001)));
            h.push(renew("a", token, (t + 3, t + 5), (t + 4, t + 1004)));
            h.push(read("a", (t + 6, t + 8), Some(("a", token, t + 1004))));
            h.push(release("a", token, (t + 9, t + 11), t + 10, true));
            t += 12;
        }
        h.truncate(n);
        h
    }

    #[test]
    fn a_long_sequential_history_is_checked_quickly() {
        let h = long_sequential(50_000);
        let started = Instant::now();
        let r = check_linearizable(&h);
        let elapsed = started.elapsed();
        eprintln!("50000 sequential ops checked in {elapsed:?}");
        assert_eq!(r.violations, vec![]);
        assert_eq!(r.ops_checked, 50_000);
        assert!(elapsed.as_secs() < 10, "took {elapsed:?}");
    }

    #[test]
    fn running_out_of_budget_is_inconclusive_not_a_violation() {
        let mut h = long_sequential(400);
        let t = h.last().map_or(0, |op| op.complete_ms);
        h.push(acquire("a", 10_000, (t + 1, t + 2), (t + 1, t + 1001)));
        h.push(acquire("b", 10_001, (t + 3, t + 4), (t + 3, t + 1003)));
        let r = check_linearizable_with_budget(&h, 100);
        assert_eq!(r.violations, vec![]);
        assert_eq!(r.inconclusive_keys, vec![KEY.to_string()]);
        assert_eq!(check_linearizable(&h).violations.len(), 1);
    }

    /// A simulated lock server (the rules of `LockTable`, plus leader-change refreshes)
    /// and `clients` clients with random latencies; some answers are lost (`unknown`),
    /// their requests applied later or never. Its histories are linearizable by
    /// construction.
    fn simulate(seed: u64, key: &str, clients: usize, n: usize, unknown_per_mille: u32) -> Vec<Op> {
        const TTL: u64 = 150;
        const APPLY: u8 = 0;
        const COMPLETE: u8 = 1;
        const START: u8 = 2;
        const REFRESH: u8 = 3;
        let mut rng = StdRng::seed_from_u64(seed);
        let mut ops: Vec<Op> = Vec::new();
        let mut client_of: Vec<usize> = Vec::new();
        let mut tokens: Vec<Option<u64>> = vec![None; clients];
        // (owner, token, expires)
        let mut held: Option<(String, u64, u64)> = None;
        let mut index = 0;
        let mut queue = BinaryHeap::new();
        for c in 0..clients {
            queue.push(Reverse((rng.gen_range(0..50u64), START, c)));
        }
        queue.push(Reverse((500, REFRESH, 0)));
        while let Some(Reverse((now, what, id))) = queue.pop() {
            match what {
                START if ops.len() < n => {
                    let name = format!("c{id}");
                    let kind = match (tokens[id], rng.gen_range(0..10)) {
                        (Some(_), 0..=3) => OpKind::Renew,
                        (Some(_), 4..=6) => OpKind::Release,
                        (_, 7) | (None, 0..=5) => OpKind::Acquire,
                        _ => OpKind::Read,
                    };
                    let token = tokens[id].filter(|_| kind != OpKind::Acquire);
                    let latency = rng.gen_range(1..40);
                    let lose = rng.gen_range(0..1000) < unknown_per_mille;
                    let outcome = if lose { Outcome::Unknown } else { Outcome::Ok };
                    let mut op = Op::new(kind, key, &name, token, now, now + latency, outcome);
                    if lose {
                        op.error = Some("timeout".into());
                    }
                    let apply = match (lose, rng.gen_range(0..3)) {
                        (false, _) => Some(now + rng.gen_range(0..=latency)),
                        (true, 0) => None,
                        (true, _) => Some(now + rng.gen_range(0..3 * latency)),
                    };
                    let op_id = ops.len();
                    ops.push(op);
                    client_of.push(id);
                    if let Some(at) = apply {
                        queue.push(Reverse((at, APPLY, op_id)));
                    }
                    queue.push(Reverse((now + latency, COMPLETE, op_id)));
                }
                START => {}
                APPLY => {
                    let live = held.clone().filter(|h| h.2 > now);
                    // A lost answer: the request still takes effect, nobody sees its result.
                    let mut scratch = ops[id].clone();
                    let op = if ops[id].outcome == Outcome::Unknown {
                        &mut scratch
                    } else {
                        &mut ops[id]
                    };
                    let owner = op.owner.clone().unwrap_or_default();
                    let seen = |h: &(String, u64, u64)| holder((&h.0, h.1, h.2));
                    match op.kind {
                        OpKind::Acquire => match live {
                            Some(h) if h.0 != owner => {
                                op.outcome = Outcome::Fail;
                                op.error = Some(LOCK_HELD.into());
                                op.holder = Some(seen(&h));
                            }
                            _ => {
                                index += 1;
                                let token = live.map_or(index, |h| h.1);
                                held = Some((owner, token, now + TTL));
                                op.token = Some(token);
                                op.expires_at_ms = Some(now + TTL);
                                op.ttl_ms = Some(TTL);
                            }
                        },
                        OpKind::Renew => match live {
                            Some(h) if Some(h.1) == op.token => {
                                index += 1;
                                held = Some((h.0, h.1, now + TTL));
                                op.expires_at_ms = Some(now + TTL);
                                op.ttl_ms = Some(TTL);
                            }
                            _ => {
                                op.outcome = Outcome::Fail;
                                op.error = Some(LOCK_LOST.into());
                            }
                        },
                        OpKind::Release => {
                            index += 1;
                            let released = live.is_some_and(|h| Some(h.1) == op.token);
                            if released {
                                held = None;
                            }
                            op.released = Some(released);
                            op.at_ms = Some(now);
                        }
                        OpKind::Read | OpKind::ResourceWrite | OpKind::Cancel => {
                            op.holder = live.map(|h| seen(&h))
                        }
                    }
                }
                COMPLETE => {
                    let op = &ops[id];
                    let c = client_of[id];
                    tokens[c] = match (op.kind, op.outcome) {
                        (OpKind::Acquire, Outcome::Ok) => op.token,
                        (OpKind::Acquire, Outcome::Unknown) => None,
                        (OpKind::Renew, Outcome::Ok) | (OpKind::Read, _) => tokens[c],
                        (OpKind::Acquire, Outcome::Fail) => tokens[c],
                        _ => None,
                    };
                    queue.push(Reverse((now + rng.gen_range(0..100), START, c)));
                }
                _ => {
                    // A leader change: every live lease lasts at least a TTL from now.
                    if let Some(h) = held.as_mut().filter(|h| h.2 > now) {
                        h.2 = h.2.max(now + TTL);
                    }
                    if ops.len() < n {
                        queue.push(Reverse((now + rng.gen_range(200..2000), REFRESH, 0)));
                    }
                }
            }
        }
        ops
    }

    #[test]
    fn simulated_concurrent_histories_are_linearizable() {
        for seed in 0..20 {
            let h = simulate(seed, KEY, 4, 2_000, 10);
            let r = check_linearizable(&h);
            assert_eq!(r.violations, vec![], "seed {seed}");
            assert!(r.inconclusive_keys.is_empty(), "seed {seed}");
        }
    }

    #[test]
    fn a_corrupted_simulated_history_is_rejected() {
        let mut h = simulate(7, KEY, 4, 2_000, 0);
        // A grant that no one else noticed: turn a free read into one seeing a stranger.
        let i = h
            .iter()
            .rposition(|op| op.kind == OpKind::Read && op.holder.is_none())
            .expect("a read of a free lock");
        h[i].holder = Some(holder(("stranger", 1, u64::MAX)));
        assert!(refuted(&h).ops.contains(&i));
    }

    #[test]
    fn many_keys_of_concurrent_clients_are_checked_quickly() {
        let keys = 10;
        let mut h = Vec::new();
        for k in 0..keys {
            h.extend(simulate(100 + k, &format!("key-{k}"), 4, 5_000, 5));
        }
        let started = Instant::now();
        let r = check_linearizable(&h);
        eprintln!(
            "{} ops on {keys} keys checked in {:?}",
            r.ops_checked,
            started.elapsed()
        );
        assert_eq!(r.violations, vec![]);
        assert!(r.inconclusive_keys.is_empty());
    }
}
