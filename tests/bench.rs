//! `baton bench` end to end: a short run against a real three-node cluster, and the
//! exit code when nothing answers.

mod common;

use std::process::Command;

use common::TestCluster;
use serde_json::Value;

fn bench(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .arg("bench")
        .args(args)
        .output()
        .expect("run baton bench")
}

#[tokio::test(flavor = "multi_thread")]
async fn cycle_run_reports_acquires_and_releases_without_errors() {
    let cluster = TestCluster::start().await;
    cluster.leader().await;
    let endpoints = (1..=3)
        .map(|id| cluster.api(id).to_string())
        .collect::<Vec<_>>()
        .join(",");
    let args = [
        "--endpoints",
        &endpoints,
        "--mode",
        "cycle",
        "--conns",
        "4",
        "--target",
        "all",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
    ];
    // Blocking is fine here: the cluster runs in other processes.
    let out = bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    assert_eq!(report["mode"], "cycle");
    assert_eq!(report["conns"], 4);
    assert_eq!(report["errors_total"], 0, "{report}");
    let acquires = report["by_op"]["acquire"]["ops"].as_u64().unwrap();
    let releases = report["by_op"]["release"]["ops"].as_u64().unwrap();
    assert!(acquires > 0, "{report}");
    // Every granted acquire is followed by its release. At each edge of the window a
    // connection may have one without the other (acquire in warmup, release inside; or
    // acquire inside, release after the end).
    assert!(acquires.abs_diff(releases) <= 4, "{report}");
    assert_eq!(report["ops"].as_u64().unwrap(), acquires + releases);
    assert!(report["latency_us"]["p50"].as_u64().unwrap() > 0);
    let spread: u64 = report["connections"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert_eq!(spread, 4);
    assert!(report["client"]["cpu_percent"].as_f64().is_some());
}

#[test]
fn no_endpoint_answering_exits_non_zero_with_a_message() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string();
    let out = bench(&["--endpoints", &closed, "--duration", "1s"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("no endpoint answered"), "{stderr}");
    assert!(stderr.contains(&closed), "{stderr}");
}

/// `host:port,...` of the three nodes.
fn all_endpoints(cluster: &TestCluster) -> String {
    (1..=3)
        .map(|id| cluster.api(id).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Every node's process was found on this machine and sampled with the connections open.
fn assert_nodes_sampled(report: &Value) {
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 3, "{report}");
    for n in nodes {
        assert!(n["pid"].as_u64().is_some(), "{n}");
        assert!(n["before"]["rss_kib"].as_u64().unwrap() > 0, "{n}");
        assert!(n["opened"]["fds"].as_u64().is_some(), "{n}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn watch_run_delivers_every_write_to_every_stream_once() {
    let cluster = TestCluster::start().await;
    cluster.leader().await;
    let endpoints = all_endpoints(&cluster);
    let args = [
        "--endpoints",
        &endpoints,
        "--mode",
        "watch",
        "--conns",
        "6",
        "--keys",
        "2",
        "--rate",
        "20",
        "--target",
        "all",
        "--duration",
        "1s",
        "--warmup",
        "200ms",
        "--json",
    ];
    let out = bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let w = &report["watch"];
    assert_eq!(w["streams_open"], 6, "{report}");
    assert_eq!(w["keys"], 2);
    assert!(w["writes"].as_u64().unwrap() > 0, "{report}");
    // Each write is followed by the 3 streams of its key (one per node).
    assert_eq!(
        w["expected"].as_u64().unwrap(),
        3 * w["writes"].as_u64().unwrap(),
        "{report}"
    );
    assert_eq!(w["delivered"], w["expected"], "{report}");
    assert_eq!(w["lost"], 0, "{report}");
    assert_eq!(w["duplicated"], 0, "{report}");
    assert_eq!(w["resets"], 0, "{report}");
    assert_eq!(report["errors_total"], 0, "{report}");
    assert!(
        report["bounded_by"].as_array().unwrap().is_empty(),
        "{report}"
    );
    let spread: Vec<u64> = report["connections"]
        .as_object()
        .unwrap()
        .values()
        .map(|n| n.as_u64().unwrap())
        .collect();
    assert_eq!(spread, vec![2, 2, 2], "{report}");
    assert_nodes_sampled(&report);
}

#[tokio::test(flavor = "multi_thread")]
async fn connect_storm_serves_every_client() {
    let cluster = TestCluster::start().await;
    cluster.leader().await;
    let endpoints = all_endpoints(&cluster);
    let args = [
        "--endpoints",
        &endpoints,
        "--mode",
        "connect",
        "--conns",
        "12",
        "--target",
        "all",
        "--json",
    ];
    let out = bench(&args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "bench failed: {stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let c = &report["connect"];
    assert_eq!(c["clients"], 12, "{report}");
    assert_eq!(c["served"], 12, "{report}");
    assert_eq!(c["failed"], 0, "{report}");
    assert!(c["all_served_ms"].as_f64().is_some(), "{report}");
    assert_eq!(report["errors_total"], 0, "{report}");
    assert_eq!(report["by_op"]["read"]["ops"], 12, "{report}");
    assert_nodes_sampled(&report);
}
