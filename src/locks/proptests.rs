//! Property tests on random command sequences.

use proptest::prelude::*;

use super::*;

const KEYS: [&str; 3] = ["a", "b", "c"];
const OWNERS: [&str; 2] = ["x", "y"];

/// One random step: which command, on which key/owner/token, and how time moves.
#[derive(Clone, Debug)]
struct Step {
    kind: u8,
    key: usize,
    owner: usize,
    ttl: u64,
    token: u64,
    advance: u64,
    /// Stamp the command this far in the past (a command from an older time).
    lag: u64,
}

fn step() -> impl Strategy<Value = Step> {
    (
        0u8..8,
        0..KEYS.len(),
        0..OWNERS.len(),
        1u64..2_000,
        1u64..60,
        0u64..400,
        prop_oneof![9 => Just(0u64), 1 => 1u64..1_000],
    )
        .prop_map(|(kind, key, owner, ttl, token, advance, lag)| Step {
            kind,
            key,
            owner,
            ttl,
            token,
            advance,
            lag,
        })
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
            match s.kind {
                0 | 1 => Command::acquire(key, owner, s.ttl, at),
                2 => Command::renew(key, Token(s.token), (s.ttl % 2 == 0).then_some(s.ttl), at),
                3 => Command::release(key, Token(s.token), at),
                4 => Command::release_by_owner(key, owner, at),
                5 => Command::force_release(key, at),
                6 => Command::sweep(at),
                _ => Command::refresh_leases(at, at.saturating_sub(s.lag)),
            }
        })
        .collect()
}

fn replay(table: &mut LockTable, cmds: &[Command], first_index: u64) -> Vec<Reply> {
    cmds.iter()
        .enumerate()
        .map(|(i, c)| table.apply(first_index + i as u64, c).reply)
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn grants_respect_mutual_exclusion_and_token_order(steps in prop::collection::vec(step(), 1..120)) {
        let mut table = LockTable::default();
        let mut last_new_token = 0u64;
        for (i, cmd) in commands(&steps).iter().enumerate() {
            let index = i as u64 + 1;
            let now = cmd.now_ms().max(table.now_ms());
            let before = cmd.key().and_then(|k| table.get(k, now)).cloned();
            let applied = table.apply(index, cmd);
            table.assert_consistent();
            match (&applied.reply, cmd) {
                (Reply::Granted(g), Command::Acquire { owner, .. }) => {
                    match &before {
                        Some(h) => {
                            prop_assert_eq!(&h.owner, owner, "granted while another owner held it");
                            prop_assert_eq!(g.token, h.token, "re-acquire must keep the token");
                        }
                        None => {
                            prop_assert_eq!(g.token, Token(index));
                            prop_assert!(g.token.0 > last_new_token, "tokens must strictly increase");
                            last_new_token = g.token.0;
                        }
                    }
                    prop_assert!(g.is_live(now));
                }
                (Reply::Granted(g), Command::Renew { token, .. }) => {
                    prop_assert_eq!(before.as_ref().map(|h| h.token), Some(*token));
                    prop_assert_eq!(g.token, *token);
                }
                (Reply::Refused(LockError::Held { holder }), Command::Acquire { owner, .. }) => {
                    prop_assert_ne!(&holder.owner, owner);
                    prop_assert_eq!(Some(holder), before.as_ref());
                    prop_assert!(applied.changed.is_empty());
                }
                (Reply::Refused(_), _) => prop_assert!(applied.changed.is_empty()),
                (Reply::Released(r), _) if r.released => prop_assert!(before.is_some()),
                _ => {}
            }
            // At most one live holder per key, and it is what `get` reports.
            for g in table.grants() {
                prop_assert_eq!(table.get(&g.key, now).is_some(), g.is_live(now));
            }
        }
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
    s.grants.push(s.grants[0].clone());
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
