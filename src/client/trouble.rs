//! [`Trouble`]: what the nodes said while a call kept retrying, told as one sentence
//! that puts the real cause first.
//!
//! When the cluster cannot serve, the interesting fact is rarely the last error seen: a
//! node that answers "no quorum: …" explains the outage, while "connection refused" from
//! a node that is down only says that one node is down. So the nodes' own 503 answers
//! come first, then which nodes could not be reached at all.

use std::fmt;
use std::time::Duration;

use crate::wire::{ErrorCode, Problem};

/// The last thing each node said during one call.
#[derive(Clone, Debug, Default)]
pub struct Trouble {
    /// In the order the nodes were first tried.
    nodes: Vec<(String, NodeTrouble)>,
    /// A write may have taken effect: `OUTCOME_UNKNOWN`, or sent without an answer.
    maybe_applied: bool,
}

/// What one node said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeTrouble {
    /// It answered, but could not serve now (503 `NO_LEADER`, `OUTCOME_UNKNOWN`).
    Busy(Box<Problem>),
    /// No answer: not reachable, or no answer in time.
    Unreachable(String),
}

impl Trouble {
    /// `endpoint` answered 503 with `problem`.
    pub(super) fn busy(&mut self, endpoint: &str, problem: Problem, write: bool) {
        self.maybe_applied |= write && problem.code == ErrorCode::OutcomeUnknown;
        self.set(endpoint, NodeTrouble::Busy(Box::new(problem)));
    }

    /// `endpoint` gave no answer; `maybe_applied` when a write was sent before it failed.
    pub(super) fn no_answer(&mut self, endpoint: &str, error: String, maybe_applied: bool) {
        self.maybe_applied |= maybe_applied;
        self.set(endpoint, NodeTrouble::Unreachable(error));
    }

    /// `endpoint` could not be reached.
    pub(super) fn unreachable(&mut self, endpoint: &str, error: String) {
        self.set(endpoint, NodeTrouble::Unreachable(error));
    }

    fn set(&mut self, endpoint: &str, what: NodeTrouble) {
        match self.nodes.iter_mut().find(|(e, _)| e == endpoint) {
            Some((_, t)) => *t = what,
            None => self.nodes.push((endpoint.to_string(), what)),
        }
    }

    /// Each node tried and the last thing it said.
    pub fn nodes(&self) -> &[(String, NodeTrouble)] {
        &self.nodes
    }

    /// The code of the first node that answered, if any did.
    pub fn code(&self) -> Option<ErrorCode> {
        self.nodes.iter().find_map(|(_, t)| match t {
            NodeTrouble::Busy(p) => Some(p.code),
            NodeTrouble::Unreachable(_) => None,
        })
    }

    /// The endpoints that gave no answer.
    pub fn unreachable_endpoints(&self) -> impl Iterator<Item = &str> {
        self.nodes.iter().filter_map(|(e, t)| match t {
            NodeTrouble::Unreachable(_) => Some(e.as_str()),
            NodeTrouble::Busy(_) => None,
        })
    }

    /// A write may have taken effect although no node confirmed it.
    pub fn maybe_applied(&self) -> bool {
        self.maybe_applied
    }
}

impl fmt::Display for Trouble {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut parts = Vec::new();
        for (endpoint, t) in &self.nodes {
            if let NodeTrouble::Busy(p) = t {
                parts.push(format!("{endpoint} answered {}: {}", p.code, p.detail));
            }
        }
        let unreachable: Vec<String> = self
            .nodes
            .iter()
            .filter_map(|(e, t)| match t {
                NodeTrouble::Unreachable(why) => Some(format!("{e}: {why}")),
                NodeTrouble::Busy(_) => None,
            })
            .collect();
        if !unreachable.is_empty() {
            parts.push(format!(
                "{} of {} nodes tried gave no answer ({})",
                unreachable.len(),
                self.nodes.len(),
                unreachable.join(", ")
            ));
        }
        if parts.is_empty() {
            parts.push("no node was tried".into());
        }
        write!(f, "{}", parts.join("; "))?;
        if self.maybe_applied {
            write!(
                f,
                "; the write may or may not have taken effect (sending it again is safe)"
            )?;
        }
        Ok(())
    }
}

/// A transport failure in a few words: the innermost cause (`Connection refused (os
/// error 111)`) rather than reqwest's "error sending request for url (…)".
pub(super) fn transport_error(e: &reqwest::Error, limit: Duration) -> String {
    if e.is_timeout() {
        return format!("no answer within {}", secs(&limit));
    }
    let mut cause: &dyn std::error::Error = e;
    while let Some(inner) = cause.source() {
        cause = inner;
    }
    if e.is_connect() {
        format!("cannot connect ({cause})")
    } else {
        cause.to_string()
    }
}

/// `30s`, `2.5s`, `150ms`: a duration for people.
pub fn secs(d: &Duration) -> String {
    if d.as_millis() < 1_000 {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nodes_own_explanation_comes_before_the_unreachable_ones() {
        let mut t = Trouble::default();
        t.no_answer("n3:1", "cannot connect (Connection refused)".into(), false);
        t.busy(
            "n1:1",
            Problem::new(
                ErrorCode::NoLeader,
                503,
                "No leader",
                "no quorum: 1 of 3 voters reachable",
            ),
            true,
        );
        t.no_answer("n2:1", "cannot connect (Connection refused)".into(), false);
        let text = t.to_string();
        assert!(
            text.starts_with("n1:1 answered NO_LEADER: no quorum: 1 of 3 voters reachable; 2 of 3 nodes tried gave no answer (n3:1: cannot connect"),
            "{text}"
        );
        assert!(!text.contains("may or may not"), "{text}");
        assert_eq!(t.code(), Some(ErrorCode::NoLeader));
        assert_eq!(
            t.unreachable_endpoints().collect::<Vec<_>>(),
            ["n3:1", "n2:1"]
        );
    }

    #[test]
    fn a_node_keeps_only_its_latest_answer_and_unknown_writes_are_named() {
        let mut t = Trouble::default();
        t.no_answer("n1:1", "no answer within 10s".into(), true);
        t.busy(
            "n1:1",
            Problem::new(
                ErrorCode::OutcomeUnknown,
                503,
                "Outcome unknown",
                "timed out",
            ),
            true,
        );
        assert_eq!(t.nodes().len(), 1);
        let text = t.to_string();
        assert!(
            text.contains("OUTCOME_UNKNOWN") && text.contains("may or may not"),
            "{text}"
        );
    }

    #[test]
    fn durations_read_naturally() {
        assert_eq!(secs(&Duration::from_secs(30)), "30s");
        assert_eq!(secs(&Duration::from_millis(2_500)), "2.5s");
        assert_eq!(secs(&Duration::from_millis(150)), "150ms");
    }
}
