//! Property tests on random command sequences.

use proptest::prelude::*;

use super::*;

const KEYS: [&str; 3] = ["a", "b", "c"];
const OWNERS: [&str; 4] = ["x", "y", "z", "v"];

/// One random step: which command, on which key/owner/token, and how time moves.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    key: usize,
    owner: usize,
    ttl: u64,
    wait: u64,
    delay: u64,
    token: u64,
    advance: u64,
    /// Stamp the command this far in the past (a command from an older time).
    lag: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        (0u8..13, 0..KEYS.len(), 0..OWNERS.len()),
        (
            1u64..2_000,
            prop_oneof![1 => Just(0u64), 2 => 1u64..3_000],
            prop_oneof![2 => Just(0u64), 1 => 1u64..500],
        ),
        (
            1u64..60,
            0u64..400,
            prop_oneof![9 => Just(0u64), 1 => 1u64..1_000],
        ),
    )
        .prop_map(
            |((kind, key, owner), (ttl, wait, delay), (token, advance, lag))| Step {
                kind,
                key,
                owner,
                ttl,
                wait,
                delay,
                token,
                advance,
                lag,
            },
        )
}

fn commands(steps: &[Step]) -> Vec<Command> {
    let mut now = 0u64;
    steps
        .iter()
        .map(|s| {
            now += s.advance;
            let at = now.saturating_sub(s.lag);
            let key = Key::parse(KEYS[s.key]).expect("valid key");
            let owner = Owner::parse(OWNERS[s.owner]).expect("valid owner");
            let options = AcquireOptions {
                ttl_ms: s.ttl,
                wait_ms: s.wait,
                lock_delay_ms: s.delay,
            };
            match s.kind {
                0..=2 => Command::acquire_with(key, owner, options, at),
                3 => Command::renew(key, Token(s.token), (s.ttl % 2 == 0).then_some(s.ttl), at),
                4 => Command::release(key, Token(s.token), at),
                5 => Command::release_by_owner(key, owner, at),
                6 => Command::force_release(key, at),
                7 => Command::cancel_wait(
                    key,
                    owner,
                    if s.ttl % 2 == 0 {
                        CancelReason::Timeout
                    } else {
                        CancelReason::Disconnected
                    },
                    at,
                ),
                8 | 9 => Command::handoff(key, at),
                10 => Command::sweep(at),
                12 => Command::acquire_exclusive(key, owner, s.ttl, at),
                _ => Command::refresh_leases(at, at.saturating_sub(s.lag)),
            }
        })
        .collect()
}

/// Replays with the token of each grant equal to its index, starting at `first_index`.
fn replay(table: &mut LockTable, cmds: &[Command], first_index: u64) -> Vec<Reply> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| table.apply(first_index + i as u64, c).reply)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn grants_respect_exclusion_fifo_lock_delay_and_token_order(steps in prop::collection::vec(step(), 1..150)) {
        let mut table = LockTable::default();
        let mut last_token = 0u64;
        for (i, cmd) in commands(&steps).iter().enumerate() {
            let index = i as u64 + 1;
            let now = cmd.now_ms().max(table.now_ms());
            let before = cmd.key().and_then(|k| table.stored(k)).cloned();
            let applied = table.apply(index, cmd);
            table.assert_consistent();
            let acquired: Vec<&Event> = applied.events.iter().filter(|e| e.kind == EventKind::Acquired).collect();
            prop_assert!(acquired.len() <= 1, "one entry granted twice: {:?}", applied.events);
            for e in &applied.events {
                prop_assert_eq!(e.index, index);
            }
            if let Some(e) = acquired.first() {
                prop_assert_eq!(e.token, Some(Token(index)));
                prop_assert!(index > last_token, "tokens must strictly increase");
                last_token = index;
                let st = before.clone().unwrap_or_else(|| KeyState::new(e.key.clone()));
                // Exclusion: the previous holder had run out, or this entry freed it.
                let freed_here = applied.events.iter().any(|x| matches!(x.kind, EventKind::Released | EventKind::ForceReleased));
                prop_assert!(st.live_holder(now).is_none() || freed_here, "granted over a live holder");
                // Lock-delay: none still running, unless an admin cleared it.
                let delay_end = st.holder.as_ref().filter(|h| !h.is_live(now)).map_or(0, |h| h.expires_at_ms + h.lock_delay_ms).max(st.delay_until_ms);
                prop_assert!(delay_end <= now || matches!(cmd, Command::ForceRelease { .. }), "granted during a lock-delay until {}", delay_end);
                // FIFO: a waiter is granted only as the first live one (a cancel in the
                // same entry removes its owner first); a newcomer only when none waits.
                let cancelled = match cmd { Command::CancelWait { owner, .. } => Some(owner), _ => None };
                let first = st.live_waiters(now).find(|w| Some(&w.owner) != cancelled).map(|w| w.owner.clone());
                if let Some(first) = first {
                    prop_assert_eq!(&e.owner, &first, "not the first live waiter");
                }
            }
            match (&applied.reply, cmd) {
                (Reply::Granted(g), Command::Acquire { owner, .. }) => {
                    prop_assert_eq!(&g.owner, owner);
                    prop_assert!(g.is_live(now));
                }
                (Reply::Granted(g), Command::Renew { token, .. }) => prop_assert_eq!(g.token, *token),
                (Reply::Queued(q), Command::Acquire { owner, wait_ms, .. }) => {
                    prop_assert!(*wait_ms > 0);
                    prop_assert_eq!(&q.owner, owner);
                    prop_assert!(q.position >= 1);
                }
                (Reply::Refused(_), _) => {
                    // A refusal itself changes nothing; only the settling of the key
                    // (expiry noticed, timed-out waiters dropped) may have.
                    prop_assert!(applied.events.iter().all(|e| matches!(e.kind, EventKind::Expired | EventKind::WaitTimeout | EventKind::Acquired)));
                }
                _ => {}
            }
        }
    }

    #[test]
    fn a_released_key_goes_to_its_first_live_waiter_in_the_same_entry(ttl in 1u64..1000, waits in prop::collection::vec(1u64..5_000, 1..6), at in 0u64..6_000) {
        let mut table = LockTable::default();
        let key = Key::parse("k").unwrap();
        let holder = table.apply(1, &Command::acquire(key.clone(), Owner::parse("h").unwrap(), 100_000, 0)).grant().unwrap().clone();
        for (i, wait) in waits.iter().enumerate() {
            let owner = Owner::parse(format!("w{i}")).unwrap();
            let options = AcquireOptions { ttl_ms: ttl, wait_ms: *wait, lock_delay_ms: 0 };
            let r = table.apply(2 + i as u64, &Command::acquire_with(key.clone(), owner, options, 0)).reply;
            prop_assert!(matches!(r, Reply::Queued(ref q) if q.position == i as u64 + 1), "{:?}", r);
        }
        let index = 10;
        let applied = table.apply(index, &Command::release(key.clone(), holder.token, at));
        let expected = waits.iter().position(|w| *w > at).map(|i| format!("w{i}"));
        let granted = table.get(&key, at).map(|g| (g.owner.to_string(), g.token));
        prop_assert_eq!(granted, expected.map(|o| (o, Token(index))), "{:?}", applied.events);
    }

    #[test]
    fn replay_is_deterministic(steps in prop::collection::vec(step(), 1..120)) {
        let cmds = commands(&steps);
        let (mut a, mut b) = (LockTable::default(), LockTable::default());
        let ra = replay(&mut a, &cmds, 1);
        let rb = replay(&mut b, &cmds, 1);
        prop_assert_eq!(ra, rb);
        prop_assert_eq!(a, b);
    }

    #[test]
    fn restore_then_replay_equals_straight_replay(steps in prop::collection::vec(step(), 1..120), split in any::<prop::sample::Index>()) {
        let cmds = commands(&steps);
        let at = split.index(cmds.len() + 1);
        let mut straight = LockTable::default();
        let replies = replay(&mut straight, &cmds, 1);

        let mut first = LockTable::default();
        replay(&mut first, &cmds[..at], 1);
        let bytes = postcard::to_stdvec(&first.to_snapshot()).expect("encode");
        let decoded: TableSnapshot = postcard::from_bytes(&bytes).expect("decode");
        let mut restored = LockTable::from_snapshot(decoded).expect("valid snapshot");
        prop_assert_eq!(&restored, &first);
        restored.assert_consistent();
        let suffix = replay(&mut restored, &cmds[at..], at as u64 + 1);
        prop_assert_eq!(&suffix[..], &replies[at..]);
        prop_assert_eq!(restored, straight);
    }
}

#[test]
fn a_snapshot_with_a_duplicate_key_is_rejected() {
    let mut t = LockTable::default();
    t.apply(
        1,
        &Command::acquire(Key::parse("k").unwrap(), Owner::parse("o").unwrap(), 100, 0),
    );
    let mut s = t.to_snapshot();
    s.keys.push(s.keys[0].clone());
    assert!(matches!(
        LockTable::from_snapshot(s),
        Err(SnapshotError::DuplicateKey(_))
    ));
}

#[test]
fn style_guide_example_holds() {
    let mut table = LockTable::default();
    let cmd = Command::acquire(
        Key::parse("deploy").unwrap(),
        Owner::parse("ci-1").unwrap(),
        30_000,
        1_000,
    );
    let r = table.apply(7, &cmd);
    assert_eq!(r.grant().unwrap().token, Token(7));
}
