//! `baton server --log-format json` on a real cluster: every line a node writes is one
//! JSON object (timestamp, level, message, fields, the node's span), and the state
//! changes an operator cares about are among them — the membership, the leader, and a
//! leader change after the leader is killed.

mod common;

use std::time::{Duration, Instant};

use common::{Options, TestCluster, READY_TIMEOUT};
use serde_json::Value;

/// The node's log as JSON objects; panics on a line that is not one.
fn json_lines(c: &TestCluster, id: u64) -> Vec<Value> {
    c.log(id)
        .lines()
        .map(|line| {
            let v: Value = serde_json::from_str(line).unwrap_or_else(|e| {
                panic!("node {id} wrote a line that is not JSON ({e}): {line}")
            });
            assert!(v.is_object(), "not an object: {line}");
            for field in ["timestamp", "level", "message"] {
                assert!(v[field].is_string(), "no {field}: {line}");
            }
            v
        })
        .collect()
}

/// Waits until node `id` has logged a line for which `found` holds; returns it.
async fn wait_for_line(
    c: &TestCluster,
    id: u64,
    what: &str,
    found: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        if let Some(v) = json_lines(c, id).into_iter().find(|v| found(v)) {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "node {id} logged no {what}:\n{}",
            c.log(id)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_the_leader_and_membership_changes() {
    let mut c = TestCluster::start_with(Options {
        server_args: vec!["--log-format".into(), "json".into()],
        ..Options::default()
    })
    .await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);

    let membership = wait_for_line(&c, follower, "membership line", |v| {
        v["message"] == "membership changed"
    })
    .await;
    assert_eq!(membership["level"], "INFO");
    assert_eq!(membership["voters"], "[1, 2, 3]", "{membership}");
    // The node's span names the node, so merged logs can be told apart.
    assert_eq!(membership["span"]["node_id"], follower, "{membership}");
    let became = wait_for_line(&c, leader, "leadership line", |v| {
        v["message"]
            .as_str()
            .is_some_and(|m| m.contains("became the leader"))
    })
    .await;
    assert_eq!(became["level"], "INFO");

    c.kill(leader);
    let next = c.leader().await;
    let change = wait_for_line(&c, follower, "leader change", |v| {
        v["message"] == "leader changed" && v["leader_id"] == next
    })
    .await;
    assert_eq!(change["level"], "INFO");
    for id in c.running_ids() {
        json_lines(&c, id);
    }
}
