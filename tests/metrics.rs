//! `GET /metrics` on a real three-node cluster, parsed by Python's `prometheus_client`
//! (its Prometheus text parser and its stricter OpenMetrics parser): the families are
//! there, the Raft gauges agree with the cluster, and the counters move as operations
//! happen, on the node that served them or, for counters from applied entries, on every
//! node.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::{TestCluster, READY_TIMEOUT};
use reqwest::{Method, StatusCode};
use serde_json::json;

/// Parses the text with both parsers of `prometheus_client` and prints the samples of
/// the Prometheus one as JSON `[name, labels, value]` (the OpenMetrics parse only has to
/// succeed and agree on the number of samples).
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families as prom
from prometheus_client.openmetrics.parser import text_string_to_metric_families as om
text = sys.stdin.read()
samples = [[s.name, s.labels, s.value] for f in prom(text) for s in f.samples]
strict = [s for f in om(text) for s in f.samples]
assert len(strict) == len(samples), (len(strict), len(samples))
print(json.dumps(samples))
"#;

/// One scrape: `(name, sorted labels) -> value`.
type Scrape = BTreeMap<(String, Vec<(String, String)>), f64>;

async fn scrape(c: &TestCluster, node: u64) -> Scrape {
    let started = Instant::now();
    let resp = c
        .http
        .get(format!("http://{}/metrics", c.api(node)))
        .send()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "scrape of node {node} failed after {:?}: {e:?}",
                started.elapsed()
            )
        });
    assert_eq!(resp.status(), StatusCode::OK);
    let ct = resp
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    assert!(ct.starts_with("application/openmetrics-text"), "{ct}");
    let text = resp.text().await.expect("body");
    let parsed: Vec<(String, BTreeMap<String, String>, f64)> =
        serde_json::from_str(&common::python::run(PARSE, text.as_bytes())).expect("samples");
    parsed
        .into_iter()
        .map(|(name, labels, v)| ((name, labels.into_iter().collect()), v))
        .collect()
}

/// The value of `name` with exactly `labels` (0 when the series is absent: a labelled
/// histogram series appears with its first observation).
fn value(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let mut l: Vec<(String, String)> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    l.sort();
    s.get(&(name.to_string(), l)).copied().unwrap_or(0.0)
}

fn has_family(s: &Scrape, name: &str) -> bool {
    s.keys().any(|(n, _)| n == name)
}

/// Polls the scrapes of `nodes` until `ok` holds for each, or fails with the last one.
async fn eventually(c: &TestCluster, nodes: &[u64], what: &str, ok: impl Fn(u64, &Scrape) -> bool) {
    let deadline = Instant::now() + READY_TIMEOUT;
    for &node in nodes {
        loop {
            let s = scrape(c, node).await;
            if ok(node, &s) {
                break;
            }
            assert!(Instant::now() < deadline, "{what} on node {node}: {s:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

#[tokio::test]
async fn counters_move_as_operations_happen_and_gauges_follow_the_cluster() {
    let c = TestCluster::start().await;
    let leader = c.leader().await;
    let follower = c.other_than(leader);
    let all = c.running_ids();
    let before_leader = scrape(&c, leader).await;
    let before_follower = scrape(&c, follower).await;

    // Through the follower (relayed): a grant, a refusal, a queued wait that times out.
    let (st, grant) = c
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/m:a/acquire",
            Some(json!({"owner": "one", "ttl_ms": 60000})),
        )
        .await;
    assert_eq!(st, StatusCode::OK, "{grant}");
    let (st, _) = c
        .call_retry(
            follower,
            Method::POST,
            "/v1/locks/m:a/acquire",
            Some(json!({"owner": "two", "ttl_ms": 60000})),
        )
        .await;
    assert_eq!(st, StatusCode::CONFLICT);
    let (st, v) = c
        .call_retry(
            leader,
            Method::POST,
            "/v1/locks/m:a/acquire",
            Some(json!({"owner": "three", "ttl_ms": 60000, "wait_ms": 200})),
        )
        .await;
    assert_eq!(
        (st, &v["code"]),
        (StatusCode::CONFLICT, &json!("WAIT_TIMEOUT"))
    );
    // A renew, then a handoff: `four` waits while `one` releases.
    let token = grant["token"].as_u64().expect("a token");
    let (st, _) = c
        .call_retry(
            leader,
            Method::POST,
            "/v1/locks/m:a/renew",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    let waiter = {
        let http = c.http.clone();
        let url = format!("http://{}/v1/locks/m:a/acquire", c.api(leader));
        tokio::spawn(async move {
            http.post(url)
                .json(&json!({"owner": "four", "ttl_ms": 60000, "wait_ms": 20000}))
                .send()
                .await
                .expect("waiting acquire")
                .status()
        })
    };
    eventually(&c, &[leader], "the waiter is queued", |_, s| {
        value(s, "baton_lock_waiters", &[]) >= 1.0
    })
    .await;
    let (st, _) = c
        .call_retry(
            leader,
            Method::POST,
            "/v1/locks/m:a/release",
            Some(json!({"token": token})),
        )
        .await;
    assert_eq!(st, StatusCode::OK);
    assert_eq!(waiter.await.expect("joined"), StatusCode::OK);
    // A force release, and a lease left to expire (min_ttl_ms is 100 here).
    c.acquire(leader, "m:b", "five", 60000).await;
    let (st, _) = c
        .call_retry(leader, Method::DELETE, "/v1/locks/m:b", None)
        .await;
    assert_eq!(st, StatusCode::OK);
    c.acquire(leader, "m:c", "six", 100).await;

    let granted = [("outcome", "granted")];
    eventually(&c, &[leader], "the leader's counters", |_, s| {
        let d = |name: &str, l: &[(&str, &str)]| value(s, name, l) - value(&before_leader, name, l);
        d("baton_lock_acquires_total", &granted) >= 4.0
            && d("baton_lock_acquires_total", &[("outcome", "held")]) >= 1.0
            && d("baton_lock_acquires_total", &[("outcome", "queued")]) >= 2.0
            && d("baton_lock_acquires_total", &[("outcome", "timeout")]) >= 1.0
            && d("baton_lock_renewals_total", &[]) >= 1.0
            && d("baton_lock_releases_total", &[]) >= 1.0
            && d("baton_lock_force_releases_total", &[]) >= 1.0
            && d("baton_http_problems_total", &[("code", "WAIT_TIMEOUT")]) >= 1.0
            && d("baton_http_problems_total", &[("code", "LOCK_HELD")]) >= 1.0
            && d(
                "baton_http_request_duration_seconds_count",
                &[("route", "/v1/locks/{key}/acquire"), ("status", "2xx")],
            ) >= 4.0
            && value(s, "baton_storage_log_flush_seconds_count", &[]) > 0.0
    })
    .await;
    // The follower relayed its two acquires and timed them under their pattern.
    eventually(&c, &[follower], "the follower's relays", |_, s| {
        let d =
            |name: &str, l: &[(&str, &str)]| value(s, name, l) - value(&before_follower, name, l);
        d(
            "baton_http_relayed_requests_total",
            &[("result", "answered")],
        ) >= 2.0
            && d(
                "baton_http_request_duration_seconds_count",
                &[("route", "/v1/locks/{key}/acquire"), ("status", "4xx")],
            ) >= 1.0
    })
    .await;
    // Counters from applied entries move on every node.
    eventually(&c, &all, "applied counters", |_, s| {
        value(s, "baton_lock_expiries_total", &[]) >= 1.0
            && value(s, "baton_lock_handoffs_total", &[]) >= 1.0
            && value(s, "baton_lock_lease_refreshes_total", &[]) >= 1.0
            && value(s, "baton_lock_events_total", &[("kind", "force_released")]) >= 1.0
    })
    .await;

    // Gauges: one leader, one term, the leader sees both followers' lag, and every node
    // has applied what the leader committed.
    let mut leaders = 0;
    let mut terms = Vec::new();
    for &id in &all {
        let s = scrape(&c, id).await;
        leaders += value(&s, "baton_raft_is_leader", &[]) as u32;
        terms.push(value(&s, "baton_raft_term", &[]));
        assert!(value(&s, "baton_raft_applied_index", &[]) > 0.0);
        assert!(value(&s, "baton_raft_leader_changes_total", &[]) >= 1.0);
        assert!(
            value(
                &s,
                "baton_storage_rocksdb_size_bytes",
                &[("cf", "log"), ("kind", "memtable")]
            ) > 0.0
        );
        assert!(has_family(&s, "baton_raft_snapshot_build_seconds_count"));
        assert!(has_family(&s, "baton_storage_fail_stops_total"));
        // The route label is a pattern, never a raw path.
        for (name, labels) in s.keys() {
            for (k, v) in labels {
                if k == "route" {
                    assert!(!v.contains("m:"), "{name} has a raw path: {v}");
                }
            }
        }
        let lag_series = s
            .keys()
            .filter(|(n, _)| n == "baton_raft_replication_lag_entries")
            .count();
        assert_eq!(
            lag_series,
            if id == leader { all.len() - 1 } else { 0 },
            "node {id}"
        );
    }
    assert_eq!(leaders, 1);
    assert!(
        terms.iter().all(|t| *t == terms[0] && *t > 0.0),
        "{terms:?}"
    );
    let s = scrape(&c, leader).await;
    assert_eq!(value(&s, "baton_locks_held", &[]), 1.0, "m:a held by four");
    assert_eq!(value(&s, "baton_lock_waiters", &[]), 0.0);
}
