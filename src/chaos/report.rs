//! The run report: faults by kind, failover times from the probe, replica digests.
//!
//! Inputs besides the history, all optional (a hand-written history has none):
//! `faults.jsonl` (`{"at_wall_ms","kind","node"}` per injected fault), `workload.json`
//! (`{"start_wall_ms"}`, to put faults on the history's clock) and `digests.jsonl`
//! (`{"node","applied_index","digest"}` per replica after healing).

use std::collections::BTreeMap;
use std::path::Path;

use serde::Deserialize;

use super::check::Violation;
use super::history::{Op, OpKind, Outcome};

/// Fault kinds after which the probe measures the time to the first successful write.
const LEADER_FAULTS: [&str; 4] = ["kill_leader", "kill_all", "pause_leader", "isolate_leader"];

#[derive(Debug, Deserialize)]
struct Fault {
    at_wall_ms: u64,
    kind: String,
    node: u64,
}

/// Faults that cut a node off from its peers until the next `heal`.
const ISOLATIONS: [&str; 2] = ["isolate_leader", "isolate_follower"];

#[derive(Debug, Deserialize)]
struct WorkloadStart {
    start_wall_ms: u64,
}

#[derive(Debug, Deserialize)]
struct Digest {
    node: u64,
    applied_index: u64,
    digest: String,
}

fn read_lines<T: for<'de> Deserialize<'de>>(path: &Path) -> Result<Vec<T>, String> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(Vec::new());
    };
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).map_err(|e| format!("{}: {e}", path.display())))
        .collect()
}

/// What the report adds to the checker's verdict.
#[derive(Debug, Default)]
pub struct RunReport {
    pub faults: BTreeMap<String, u64>,
    /// Leader fault → first successful probe write, in ms, one per fault.
    pub failover_ms: Vec<u64>,
    /// Writes acknowledged by an isolated node while it was cut off (must be 0).
    pub minority_side_writes: u64,
    pub violations: Vec<Violation>,
}

/// Reads the run's side files in `dir` and measures `ops` against them.
pub fn build(dir: &Path, ops: &[Op]) -> Result<RunReport, String> {
    let mut report = RunReport::default();
    let faults: Vec<Fault> = read_lines(&dir.join("faults.jsonl"))?;
    // A lasting fault's end (`heal`, `*_end`) is not a fault of its own.
    for f in faults
        .iter()
        .filter(|f| f.kind != "heal" && !f.kind.ends_with("_end"))
    {
        *report.faults.entry(f.kind.clone()).or_default() += 1;
    }
    let config = std::fs::read_to_string(dir.join("cluster.toml")).unwrap_or_default();
    let api_of = |node: u64| -> Option<String> {
        let table: toml::Table = config.parse().ok()?;
        let nodes = table.get("nodes")?.as_array()?;
        let n = nodes
            .iter()
            .find(|n| n.get("id").and_then(|i| i.as_integer()) == i64::try_from(node).ok())?;
        Some(n.get("api")?.as_str()?.to_string())
    };
    let start: Vec<WorkloadStart> = read_lines(&dir.join("workload.json"))?;
    if let Some(start) = start.first() {
        let mut probes: Vec<&Op> = ops
            .iter()
            .filter(|o| {
                o.process == "probe" && o.kind == OpKind::Acquire && o.outcome == Outcome::Ok
            })
            .collect();
        probes.sort_by_key(|o| o.invoke_ms);
        // Minority side: a write sent to an isolated node, begun and acknowledged while
        // it was cut off, would have committed without a quorum.
        for (i, f) in faults.iter().enumerate() {
            if !ISOLATIONS.contains(&f.kind.as_str()) {
                continue;
            }
            let Some(api) = api_of(f.node) else { continue };
            let from = f.at_wall_ms.saturating_sub(start.start_wall_ms);
            let until = faults[i + 1..]
                .iter()
                .find(|h| h.kind == "heal")
                .map_or(u64::MAX, |h| {
                    h.at_wall_ms.saturating_sub(start.start_wall_ms)
                });
            let acked = ops.iter().enumerate().filter(|(_, o)| {
                matches!(o.kind, OpKind::Acquire | OpKind::Renew | OpKind::Release)
                    && o.outcome == Outcome::Ok
                    // The workload names nodes `https://host:port`, cluster.toml `host:port`.
                    && o.endpoint.as_deref().map(|e| crate::wire::endpoint_authority(e).0)
                        == Some(api.as_str())
                    && o.invoke_ms >= from
                    && o.complete_ms <= until
            });
            for (j, o) in acked {
                report.minority_side_writes += 1;
                report.violations.push(Violation {
                    rule: "minority_side_write",
                    message: format!(
                        "node {} acknowledged a {:?} on {} while isolated",
                        f.node, o.kind, o.key
                    ),
                    ops: vec![j],
                });
            }
        }
        for f in faults
            .iter()
            .filter(|f| LEADER_FAULTS.contains(&f.kind.as_str()))
        {
            let at = f.at_wall_ms.saturating_sub(start.start_wall_ms);
            // The first success of the probes sent after the fault: probes overlap, so the
            // first one sent is not always the first one through.
            if let Some(done) = probes
                .iter()
                .filter(|p| p.invoke_ms >= at)
                .map(|p| p.complete_ms)
                .min()
            {
                report.failover_ms.push(done.saturating_sub(at));
            }
        }
    }
    report.violations.extend(panics(dir));
    let digests: Vec<Digest> = read_lines(&dir.join("digests.jsonl"))?;
    if let Some(first) = digests.first() {
        let same_index = digests
            .iter()
            .all(|d| d.applied_index == first.applied_index);
        let same_state = digests.iter().all(|d| d.digest == first.digest);
        if !same_index || !same_state {
            let shown: Vec<String> = digests
                .iter()
                .map(|d| {
                    format!(
                        "n{} applied {} digest {}",
                        d.node, d.applied_index, d.digest
                    )
                })
                .collect();
            report.violations.push(Violation {
                rule: if same_index {
                    "replicas_diverged"
                } else {
                    "replicas_not_converged"
                },
                message: shown.join("; "),
                ops: Vec::new(),
            });
        }
    }
    Ok(report)
}

/// A node must survive any request and any peer message: a panic in a node log
/// (`nN.log`) is a violation whatever the history says.
fn panics(dir: &Path) -> Vec<Violation> {
    let mut violations = Vec::new();
    for node in 1..=9 {
        let Ok(log) = std::fs::read_to_string(dir.join(format!("n{node}.log"))) else {
            continue;
        };
        if let Some(line) = log.lines().find(|l| l.contains("panicked at")) {
            violations.push(Violation {
                rule: "node_panicked",
                message: format!("n{node}: {line}"),
                ops: Vec::new(),
            });
        }
    }
    violations
}

/// `(p50, max)` of `values`, or `None` when empty.
pub fn p50_max(values: &[u64]) -> Option<(u64, u64)> {
    let mut v = values.to_vec();
    v.sort_unstable();
    Some((*v.get(v.len().checked_sub(1)? / 2)?, *v.last()?))
}

/// Percentiles of a sample, in its unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Percentiles {
    pub p50: u64,
    pub p99: u64,
    pub max: u64,
    pub samples: usize,
}

/// Nearest-rank percentiles of `values`, or `None` when empty.
pub fn percentiles(values: &[u64]) -> Option<Percentiles> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_unstable();
    let rank = |p: usize| v[(v.len() * p).div_ceil(100).max(1) - 1];
    Some(Percentiles {
        p50: rank(50),
        p99: rank(99),
        max: v[v.len() - 1],
        samples: v.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn p50_and_max() {
        assert_eq!(p50_max(&[]), None);
        assert_eq!(p50_max(&[5]), Some((5, 5)));
        assert_eq!(p50_max(&[9, 1, 5]), Some((5, 9)));
    }

    #[test]
    fn nearest_rank_percentiles() {
        assert_eq!(percentiles(&[]), None);
        let p = percentiles(&(1..=200).collect::<Vec<_>>()).unwrap();
        assert_eq!((p.p50, p.p99, p.max, p.samples), (100, 198, 200, 200));
        assert_eq!(percentiles(&[7]).unwrap().p99, 7);
    }

    #[test]
    fn diverged_replicas_are_a_violation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("digests.jsonl"),
            "{\"node\":1,\"applied_index\":9,\"digest\":\"aa\"}\n{\"node\":2,\"applied_index\":9,\"digest\":\"bb\"}\n",
        )
        .unwrap();
        let r = build(dir.path(), &[]).unwrap();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].rule, "replicas_diverged");
    }

    #[test]
    fn a_panic_in_a_node_log_is_a_violation() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("n1.log"), "started\n").unwrap();
        std::fs::write(
            dir.path().join("n2.log"),
            "thread 'tokio' panicked at src/x.rs:1:1:\nboom\n",
        )
        .unwrap();
        let r = build(dir.path(), &[]).unwrap();
        assert_eq!(r.violations.len(), 1);
        assert_eq!(r.violations[0].rule, "node_panicked");
        assert!(r.violations[0].message.starts_with("n2:"));
    }

    #[test]
    fn failover_is_measured_from_the_fault_to_the_next_probe_success() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("workload.json"),
            "{\"start_wall_ms\":1000}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("faults.jsonl"),
            "{\"at_wall_ms\":3000,\"kind\":\"kill_leader\",\"node\":1}\n{\"at_wall_ms\":3500,\"kind\":\"kill_follower\",\"node\":2}\n",
        )
        .unwrap();
        let probe = |invoke, complete| {
            Op::new(
                OpKind::Acquire,
                "probe",
                "probe",
                Some(invoke),
                invoke,
                complete,
                Outcome::Ok,
            )
        };
        // The probe sent first after the fault hung; a later one got through first.
        let ops = [probe(1900, 1905), probe(3600, 6600), probe(3650, 3700)];
        let r = build(dir.path(), &ops).unwrap();
        assert_eq!(r.failover_ms, vec![1700]);
        assert_eq!(r.faults.get("kill_leader"), Some(&1));
        assert_eq!(r.faults.get("kill_follower"), Some(&1));
    }

    #[test]
    fn a_write_acknowledged_by_an_isolated_node_over_tls_is_a_violation() {
        // The workload names nodes `https://host:port` since TLS landed; cluster.toml
        // names them `host:port`. The two never compared equal, so this check passed
        // whatever the isolated node acknowledged.
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("cluster.toml"),
            "[[nodes]]\nid = 1\napi = \"10.77.0.1:7000\"\n\n[[nodes]]\nid = 2\napi = \"10.77.0.2:7000\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("workload.json"),
            "{\"start_wall_ms\":1000}\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("faults.jsonl"),
            "{\"at_wall_ms\":2000,\"kind\":\"isolate_leader\",\"node\":1}\n{\"at_wall_ms\":5000,\"kind\":\"heal\",\"node\":0}\n",
        )
        .unwrap();
        let write = |endpoint: &str, invoke| Op {
            endpoint: Some(endpoint.to_string()),
            ..Op::new(
                OpKind::Acquire,
                "k",
                "a",
                Some(9),
                invoke,
                invoke + 10,
                Outcome::Ok,
            )
        };
        let ops = [
            write("https://10.77.0.1:7000", 1500),
            write("https://10.77.0.2:7000", 1500),
            write("https://10.77.0.1:7000", 500),
        ];
        let r = build(dir.path(), &ops).unwrap();
        assert_eq!(r.minority_side_writes, 1);
        assert_eq!(r.violations[0].rule, "minority_side_write");
        assert_eq!(r.violations[0].ops, vec![0]);
        let plain = [write("10.77.0.1:7000", 1500)];
        assert_eq!(build(dir.path(), &plain).unwrap().minority_side_writes, 1);
    }
}
