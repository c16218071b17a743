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
