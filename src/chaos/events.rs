//! Event followers' recordings (`events-<role>.jsonl`) and the checks on them.
//!
//! The workload follows the events of a few keys (`GET /v1/locks/{key}/events`) from
//! every node, one follower per node and key, and reconnects to the same node with
//! `Last-Event-ID` whenever the stream drops (a killed, restarted or isolated node).
//! Every SSE event it receives becomes one [`Received`] line, with the connection it came
//! on. The checker first *stitches* each follower's stream the way a client must: the
//! SSE `id` is set on the last event of each log entry only, so the events of an entry
//! whose id never arrived before the connection dropped are dropped too (the resume
//! sends that entry again). Then ([`check_events`]):
//! - **repeat-free**: a stitched stream never goes back in log order and never repeats an
//!   event;
//! - **followers agree**: two followers of a key that both received log index `i` got
//!   the same events for it (the *reference* of a key is the union of its followers);
//! - **gap-free**: a follower has every reference event between where it started (0, or
//!   the `first_index` of a `reset`) and the last index it received;
//! - **acknowledged operations show**: an `ok` acquire with token `t` has `acquired`
//!   (owner, `t`) at index `t`, and an `ok` release that freed the lock has a `released`
//!   event for its token, whenever the reference reaches past them; an acquire with a
//!   request-unique owner that was definitely refused (`LOCK_HELD`, not `WAIT_TIMEOUT`)
//!   has no `acquired` event at all.
//!
//! # Caveats
//! The reference is only as complete as the union of the followers: an event that every
//! follower missed (each behind a `reset`) is a gap no rule here can see. Coverage of an
//! acknowledged operation is judged by the reference reaching a later log index, so the
//! last operations of a run may go unchecked.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::check::Violation;
use super::history::{HistoryError, Op, OpKind, Outcome};

/// Error code of a wait that ran out.
pub const WAIT_TIMEOUT: &str = "WAIT_TIMEOUT";

/// One SSE event as a follower received it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Received {
    /// `<endpoint>/<key>`: one follower per node and key.
    pub follower: String,
    pub key: String,
    /// The follower's connection this came on (counts from 0).
    pub conn: u64,
    /// Workload time it was received.
    pub rx_ms: u64,
    /// The SSE `event:` name (`acquired`, …, `reset`).
    pub name: String,
    /// The SSE `id`, on the last event of a log entry.
    #[serde(default)]
    pub id: Option<u64>,
    #[serde(default)]
    pub index: Option<u64>,
    #[serde(default)]
    pub owner: Option<String>,
    #[serde(default)]
    pub token: Option<u64>,
    /// Cluster time of the event (`at`).
    #[serde(default)]
    pub at_ms: Option<u64>,
    /// `first_index` of a `reset`.
    #[serde(default)]
    pub first_index: Option<u64>,
}

/// A lock event as the checks compare it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Event {
    pub index: u64,
    pub name: String,
    pub owner: String,
    pub token: Option<u64>,
    pub at_ms: u64,
}

/// One event of a key's reference: the event and when a follower first received it.
#[derive(Clone, Debug)]
pub struct Seen {
    pub event: Event,
    /// Earliest workload time any follower received it.
    pub rx_ms: u64,
}

/// A follower's stream after stitching.
#[derive(Debug, Default)]
struct Stitched {
    key: String,
    /// Complete entries in the order received: (event, rx_ms).
    events: Vec<(Event, u64)>,
    /// Index after which the follower's coverage starts (0, or a reset's `first_index - 1`).
    from: u64,
}

/// Reads every `events-*.jsonl` in `dir` (none is fine: a run without followers).
pub fn read_dir(dir: &Path) -> Result<Vec<Received>, HistoryError> {
    let io = |source| HistoryError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .map_err(io)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with("events-") && n.ends_with(".jsonl"))
        })
        .collect();
    files.sort();
    let mut out = Vec::new();
    for path in files {
        let shown = path.display().to_string();
        let file = std::fs::File::open(&path).map_err(|source| HistoryError::Io {
            path: shown.clone(),
            source,
        })?;
        for (i, line) in std::io::BufReader::new(file).lines().enumerate() {
            let line = line.map_err(|source| HistoryError::Io {
                path: shown.clone(),
                source,
            })?;
            if line.trim().is_empty() {
                continue;
            }
            out.push(
                serde_json::from_str(&line).map_err(|e| HistoryError::Parse {
                    path: shown.clone(),
                    line: i + 1,
                    message: e.to_string(),
                })?,
            );
        }
    }
    Ok(out)
}

/// Stitches each follower's connections: drops the events of an entry whose id did not
/// arrive before its connection ended, and notes resets.
fn stitch(received: &[Received]) -> BTreeMap<&str, Stitched> {
    let mut per: BTreeMap<&str, BTreeMap<u64, Vec<&Received>>> = BTreeMap::new();
    for r in received {
        per.entry(&r.follower)
            .or_default()
            .entry(r.conn)
            .or_default()
            .push(r);
    }
    let mut out = BTreeMap::new();
    for (follower, conns) in per {
        let mut s = Stitched::default();
        for list in conns.values() {
            let complete = list
                .iter()
                .rposition(|r| r.id.is_some() || r.name == "reset");
            let kept = complete.map_or(&list[..0], |last| &list[..=last]);
            for r in kept {
                s.key.clone_from(&r.key);
                if r.name == "reset" {
                    s.from = s.from.max(r.first_index.unwrap_or(1).saturating_sub(1));
                    continue;
                }
                let (Some(index), Some(at_ms)) = (r.index, r.at_ms) else {
                    continue;
                };
                let event = Event {
                    index,
                    name: r.name.clone(),
                    owner: r.owner.clone().unwrap_or_default(),
                    token: r.token,
                    at_ms,
                };
                s.events.push((event, r.rx_ms));
            }
        }
        out.insert(follower, s);
    }
    out
}

/// The reference stream of every followed key: log index → the entry's events.
pub type Reference = BTreeMap<String, BTreeMap<u64, Vec<Seen>>>;

/// What [`check_events`] found.
#[derive(Debug, Default)]
pub struct EventsReport {
    /// Events received (before stitching), by SSE name.
    pub received: BTreeMap<String, u64>,
    /// Followers and how many of their connections ended (reconnects).
    pub followers: usize,
    pub reconnects: u64,
    pub resets: u64,
    pub reference: Reference,
    pub violations: Vec<Violation>,
}

/// Every event rule (see the module docs).
pub fn check_events(received: &[Received], ops: &[Op]) -> EventsReport {
    let mut report = EventsReport::default();
    let mut conns: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for r in received {
        *report.received.entry(r.name.clone()).or_default() += 1;
        conns.entry(&r.follower).or_default().insert(r.conn);
        report.resets += u64::from(r.name == "reset");
    }
    report.followers = conns.len();
    report.reconnects = conns.values().map(|c| c.len() as u64 - 1).sum();
    let streams = stitch(received);
    let v = &mut report.violations;
    // Repeat-free, and build the reference (first follower to deliver an entry).
    let mut entries: BTreeMap<(&str, u64), (&str, Vec<Event>)> = BTreeMap::new();
    for (follower, s) in &streams {
        let mut seen: BTreeSet<&Event> = BTreeSet::new();
        let mut last = 0;
        let mut by_index: BTreeMap<u64, Vec<Event>> = BTreeMap::new();
        for (e, rx) in &s.events {
            if e.index < last || !seen.insert(e) {
                v.push(Violation {
                    rule: "event_repeated",
                    message: format!(
                        "follower {follower}: {} of {} at index {} after index {last}",
                        e.name, e.owner, e.index
                    ),
                    ops: Vec::new(),
                });
            }
            last = last.max(e.index);
            by_index.entry(e.index).or_default().push(e.clone());
            let seen_at = report
                .reference
                .entry(s.key.clone())
                .or_default()
                .entry(e.index)
                .or_default();
            match seen_at.iter_mut().find(|x| &x.event == e) {
                Some(x) => x.rx_ms = x.rx_ms.min(*rx),
                None => seen_at.push(Seen {
                    event: e.clone(),
                    rx_ms: *rx,
                }),
            }
        }
        for (index, list) in by_index {
            match entries.get(&(s.key.as_str(), index)) {
                Some((other, theirs)) if theirs != &list => v.push(Violation {
                    rule: "events_disagree",
                    message: format!(
                        "key {} index {index}: follower {other} got {theirs:?}, follower {follower} got {list:?}",
                        s.key
                    ),
                    ops: Vec::new(),
                }),
                Some(_) => {}
                None => {
                    entries.insert((s.key.as_str(), index), (follower, list));
                }
            }
        }
    }
    // Gap-free against the reference.
    for (follower, s) in &streams {
        let Some(last) = s.events.iter().map(|(e, _)| e.index).max() else {
            continue;
        };
        let have: BTreeSet<u64> = s.events.iter().map(|(e, _)| e.index).collect();
        let Some(reference) = report.reference.get(&s.key) else {
            continue;
        };
        let missing: Vec<u64> = reference
            .range(s.from + 1..=last)
            .map(|(i, _)| *i)
            .filter(|i| !have.contains(i))
            .collect();
        if !missing.is_empty() {
            v.push(Violation {
                rule: "event_gap",
                message: format!(
                    "follower {follower} (key {}) skipped the entries at {missing:?} before index {last}",
                    s.key
                ),
                ops: Vec::new(),
            });
        }
    }
    check_acknowledged(&report.reference, ops, v);
    report
}

/// Acknowledged operations on followed keys show up in the reference (module docs).
fn check_acknowledged(reference: &Reference, ops: &[Op], v: &mut Vec<Violation>) {
    for (i, op) in ops.iter().enumerate() {
        let Some(stream) = reference.get(&op.key) else {
            continue;
        };
        let Some((&last, _)) = stream.last_key_value() else {
            continue;
        };
        let owner = op.owner.as_deref().unwrap_or_default();
        let has = |index: Option<u64>, name: &str, token: Option<u64>, owner: Option<&str>| {
            let matches = |s: &Seen| {
                s.event.name == name
                    && (token.is_none() || s.event.token == token)
                    && owner.is_none_or(|o| s.event.owner == o)
            };
            match index {
                Some(index) => stream.get(&index).is_some_and(|l| l.iter().any(matches)),
                None => stream.values().flatten().any(matches),
            }
        };
        let missing = match (op.kind, op.outcome, op.token) {
            // A fresh grant is entry `token` itself; a re-acquire keeps an older token.
            (OpKind::Acquire, Outcome::Ok, Some(t)) if t < last => {
                !has(Some(t), "acquired", Some(t), Some(owner))
                    && !has(None, "renewed", Some(t), Some(owner))
            }
            (OpKind::Release, Outcome::Ok, Some(t)) if op.released == Some(true) => {
                let reached = op.at_ms.is_some_and(|at| {
                    stream
                        .range(t + 1..)
                        .flat_map(|(_, l)| l)
                        .any(|s| s.event.name != "expired" && s.event.at_ms > at)
                });
                reached && !has(None, "released", Some(t), None)
            }
            (OpKind::Acquire, Outcome::Fail, _)
                if op.process != owner && op.error.as_deref() != Some(WAIT_TIMEOUT) =>
            {
                if has(None, "acquired", None, Some(owner)) {
                    v.push(Violation {
                        rule: "event_contradicts_ack",
                        message: format!(
                            "key {}: {owner} was refused ({:?}) but the events grant it the key",
                            op.key, op.error
                        ),
                        ops: vec![i],
                    });
                }
                false
            }
            _ => false,
        };
        if missing {
            v.push(Violation {
                rule: "event_missing",
                message: format!(
                    "key {}: acknowledged {:?} by {owner} (token {:?}) has no event, though the followers reached index {last}",
                    op.key, op.kind, op.token
                ),
                ops: vec![i],
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rx(follower: &str, conn: u64, rx_ms: u64, name: &str, index: u64, owner: &str) -> Received {
        Received {
            follower: follower.into(),
            key: "q".into(),
            conn,
            rx_ms,
            name: name.into(),
            id: Some(index),
            index: Some(index),
            owner: Some(owner.into()),
            token: (name != "queued").then_some(index),
            at_ms: Some(1000 + index),
            first_index: None,
        }
    }

    fn rules(r: &EventsReport) -> Vec<&'static str> {
        r.violations.iter().map(|v| v.rule).collect()
    }

    fn stream(follower: &str) -> Vec<Received> {
        vec![
            rx(follower, 0, 10, "acquired", 3, "a"),
            rx(follower, 0, 20, "queued", 5, "b"),
            Received {
                token: Some(3),
                ..rx(follower, 1, 30, "released", 8, "a")
            },
        ]
    }

    #[test]
    fn streams_that_agree_and_resume_cleanly_pass() {
        let mut all = stream("n1/q");
        all.extend(stream("n2/q"));
        let r = check_events(&all, &[]);
        assert!(r.violations.is_empty(), "{:?}", r.violations);
        assert_eq!(r.reconnects, 2);
        assert_eq!(r.reference["q"].len(), 3);
    }

    #[test]
    fn an_unfinished_entry_resent_after_a_reconnect_is_no_repeat() {
        let mut first = rx("n1/q", 0, 10, "released", 7, "a");
        first.id = None;
        let mut again = rx("n1/q", 1, 20, "released", 7, "a");
        again.id = None;
        let all = vec![first, again, rx("n1/q", 1, 21, "acquired", 7, "b")];
        assert!(check_events(&all, &[]).violations.is_empty());
    }

    #[test]
    fn a_repeated_event_is_caught() {
        let mut all = stream("n1/q");
        all.push(rx("n1/q", 2, 40, "queued", 5, "b"));
        assert_eq!(rules(&check_events(&all, &[])), vec!["event_repeated"]);
    }

    #[test]
    fn a_follower_that_skips_an_entry_is_caught() {
        let mut all = stream("n1/q");
        let mut gappy = stream("n2/q");
        gappy.remove(1);
        all.extend(gappy);
        assert_eq!(rules(&check_events(&all, &[])), vec!["event_gap"]);
    }

    #[test]
    fn a_reset_excuses_the_entries_before_its_first_index() {
        let mut all = stream("n1/q");
        let mut reset = rx("n2/q", 0, 5, "reset", 0, "");
        reset.first_index = Some(6);
        reset.id = None;
        all.push(reset);
        all.push(stream("n2/q").remove(2));
        assert!(check_events(&all, &[]).violations.is_empty());
    }

    #[test]
    fn followers_that_disagree_on_an_entry_are_caught() {
        let mut all = stream("n1/q");
        let mut other = stream("n2/q");
        other[1].owner = Some("c".into());
        all.extend(other);
        assert_eq!(rules(&check_events(&all, &[])), vec!["events_disagree"]);
    }

    #[test]
    fn an_acknowledged_grant_without_its_event_is_caught() {
        let all = stream("n1/q");
        let mut grant = Op::new(OpKind::Acquire, "q", "c", Some(4), 0, 5, Outcome::Ok);
        assert_eq!(
            rules(&check_events(&all, std::slice::from_ref(&grant))),
            vec!["event_missing"]
        );
        grant.token = Some(3);
        grant.owner = Some("a".into());
        assert!(check_events(&all, &[grant]).violations.is_empty());
    }

    #[test]
    fn an_acknowledged_release_without_its_event_is_caught() {
        let all = stream("n1/q");
        let mut release = Op::new(OpKind::Release, "q", "a", Some(3), 0, 5, Outcome::Ok);
        release.released = Some(true);
        release.at_ms = Some(1004);
        assert!(check_events(&all, std::slice::from_ref(&release))
            .violations
            .is_empty());
        release.token = Some(2);
        assert_eq!(
            rules(&check_events(&all, &[release])),
            vec!["event_missing"]
        );
    }

    #[test]
    fn a_refused_request_that_the_events_grant_is_caught() {
        let all = stream("n1/q");
        let mut refused = Op::new(OpKind::Acquire, "q", "a", None, 0, 5, Outcome::Fail);
        refused.process = "waiter-0".into();
        refused.error = Some("LOCK_HELD".into());
        assert_eq!(
            rules(&check_events(&all, &[refused])),
            vec!["event_contradicts_ack"]
        );
    }
}
