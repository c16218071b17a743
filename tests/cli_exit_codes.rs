//! Every row of the README's exit-code table, and what a script author relies on:
//! `T=$(baton acquire KEY)` is the token, `--json` errors carry `code` (and `holder`),
//! durations like `1m30s`, `--timeout`, and a progress note while the client retries.

mod common;

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::TestCluster;
use serde_json::Value;

fn baton() -> Command {
    Command::new(env!("CARGO_BIN_EXE_baton"))
}

fn endpoints(cluster: &TestCluster) -> String {
    cluster
        .nodes
        .keys()
        .map(|id| cluster.api(*id).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Runs `baton ARGS` to completion on a blocking thread.
async fn run(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    tokio::task::spawn_blocking(move || baton().args(&args).output().expect("run baton"))
        .await
        .expect("join")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A loopback address nothing listens on.
fn closed_endpoint() -> String {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_exit_code_of_the_table_against_a_running_cluster() {
    let cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let e = eps.as_str();

    // 0: `acquire` prints only the token, so that `T=$(baton acquire k)` works.
    let o = run(&[
        "acquire",
        "k1",
        "--endpoints",
        e,
        "--owner",
        "me",
        "--ttl",
        "1m30s",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let token = stdout(&o).trim().to_string();
    assert!(
        token.parse::<u64>().is_ok(),
        "stdout is just the token: {o:?}"
    );
    // --json gives the whole grant; `1m30s` was read as 90 s.
    let o = run(&["renew", "k1", &token, "--endpoints", e, "--json"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let grant: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(grant["ttl_ms"], 90_000, "{grant}");
    assert_eq!(grant["token"].to_string(), token);

    // 75: held by someone else; --json names the code and the holder.
    let o = run(&[
        "acquire",
        "k1",
        "--endpoints",
        e,
        "--owner",
        "other",
        "--json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(75), "{o:?}");
    let err: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(err["code"], "LOCK_HELD", "{err}");
    assert_eq!(err["holder"]["owner"], "me", "{err}");
    // 75 too when --wait runs out in the queue.
    let o = run(&[
        "acquire",
        "k1",
        "--endpoints",
        e,
        "--owner",
        "other",
        "--wait",
        "300ms",
    ])
    .await;
    assert_eq!(o.status.code(), Some(75), "{o:?}");

    // 3: release with a token that does not hold the lock releases nothing.
    let wrong = (token.parse::<u64>().unwrap() + 1_000).to_string();
    let o = run(&["release", "k1", &wrong, "--endpoints", e]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    assert!(stdout(&o).contains("another token"), "{o:?}");
    let o = run(&["validate", "k1", &wrong, "--endpoints", e]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
    let o = run(&["release", "k1", &token, "--endpoints", e]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let o = run(&["get", "k1", "--endpoints", e]).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");

    // 76: the token no longer holds the lock.
    let o = run(&["renew", "k1", &token, "--endpoints", e, "--json"]).await;
    assert_eq!(o.status.code(), Some(76), "{o:?}");
    let err: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(err["code"], "LOCK_LOST", "{err}");

    // 1: a request the cluster refuses (a TTL below lease.min_ttl_ms).
    let o = run(&["acquire", "k2", "--endpoints", e, "--ttl", "10ms", "--json"]).await;
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    let err: Value = serde_json::from_str(&stdout(&o)).unwrap();
    assert_eq!(err["code"], "INVALID_REQUEST", "{err}");
    assert!(
        err["error"].as_str().unwrap().contains("min_ttl_ms"),
        "{err}"
    );

    // `baton lock`: CMD's own code, 128+N for signal N, 127 when CMD cannot start.
    let o = run(&["lock", "k3", "--endpoints", e, "--", "sh", "-c", "exit 7"]).await;
    assert_eq!(o.status.code(), Some(7), "{o:?}");
    let o = run(&[
        "lock",
        "k3",
        "--endpoints",
        e,
        "--",
        "sh",
        "-c",
        "kill -TERM $$",
    ])
    .await;
    assert_eq!(o.status.code(), Some(128 + 15), "{o:?}");
    let o = run(&[
        "lock",
        "k3",
        "--endpoints",
        e,
        "--",
        "/nonexistent/baton-test-cmd",
    ])
    .await;
    assert_eq!(o.status.code(), Some(127), "{o:?}");

    // 0: status with every node up names the leader.
    let o = run(&["status", "--endpoints", e]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let text = stdout(&o);
    assert_eq!(
        text.lines().filter(|l| l.starts_with("node ")).count(),
        3,
        "{text}"
    );
    assert!(text.contains("leader: node "), "{text}");
}

#[tokio::test]
async fn bad_usage_exits_2_before_anything_is_sent() {
    // Nothing listens: a usage error must not even try to connect.
    let e = closed_endpoint();
    for (args, expected) in [
        (vec!["acquire", "a/b", "--endpoints", &e], "[A-Za-z0-9._:-]"),
        (
            vec!["acquire", "k", "--ttl", "30", "--endpoints", &e],
            "no unit",
        ),
        (
            vec!["acquire", "k", "--bogus", "--endpoints", &e],
            "--bogus",
        ),
        (
            vec!["release", "k", "not-a-number", "--endpoints", &e],
            "not-a-number",
        ),
        (vec!["get", "--endpoints", &e], "<KEY>"),
    ] {
        let o = run(&args).await;
        assert_eq!(o.status.code(), Some(2), "{args:?}: {o:?}");
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
        assert!(
            !stderr(&o).contains("no endpoint"),
            "{args:?}: {}",
            stderr(&o)
        );
    }
    // Help is not an error.
    let o = run(&["acquire", "--help"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let help = stdout(&o);
    for documented in [
        "<KEY>",
        "The lock key",
        "--ttl",
        "Lease length",
        "--wait",
        "FIFO queue",
        "--timeout",
        "T=$(baton acquire KEY)",
    ] {
        assert!(
            help.contains(documented),
            "{documented:?} missing in:\n{help}"
        );
    }
}

#[tokio::test]
async fn no_node_answering_exits_69_within_the_timeout_and_says_so() {
    let e = closed_endpoint();
    let started = Instant::now();
    let o = run(&[
        "acquire",
        "k",
        "--endpoints",
        &e,
        "--timeout",
        "6s",
        "--json",
    ])
    .await;
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert!(
        took < Duration::from_secs(9),
        "took {took:?} with --timeout 6s"
    );
    let err: Value = serde_json::from_str(&stdout(&o)).unwrap();
    let message = err["error"].as_str().unwrap();
    assert!(
        message.contains(&e) && message.contains("cannot connect"),
        "{message}"
    );
    // A progress line while it retried (first after 2 s), on stderr only.
    assert!(stderr(&o).contains("retrying for"), "{}", stderr(&o));

    let o = run(&["status", "--endpoints", &e]).await;
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert!(stdout(&o).contains("unreachable"), "{o:?}");
}

#[tokio::test]
async fn completions_leave_out_the_hidden_chaos_subcommand() {
    let o = run(&["completions", "bash"]).await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let script = stdout(&o);
    assert!(script.contains("acquire"), "completes the visible commands");
    assert!(
        !script.contains("chaos"),
        "hidden subcommand in completions"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_of_three_nodes_down_acquire_reports_progress_and_names_the_survivor() {
    let mut cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let leader = cluster.leader().await;
    let survivor = cluster.other_than(leader);
    for id in cluster.running_ids() {
        if id != survivor {
            cluster.kill(id);
        }
    }
    let started = Instant::now();
    let o = run(&["acquire", "q", "--endpoints", &eps, "--timeout", "12s"]).await;
    let took = started.elapsed();
    assert_eq!(o.status.code(), Some(69), "{o:?}");
    assert!(
        took < Duration::from_secs(16),
        "took {took:?} with --timeout 12s"
    );
    let err = stderr(&o);
    assert!(
        err.contains("retrying for"),
        "progress while retrying: {err}"
    );
    let last = err.lines().last().unwrap_or_default();
    // The survivor's own answer comes first; the dead nodes are listed as unreachable.
    let survivor_api = cluster.api(survivor);
    assert!(
        last.contains(&format!("{survivor_api} answered")),
        "the survivor's answer is named: {last}"
    );
    assert!(last.contains("2 of 3 nodes tried gave no answer"), "{last}");
}
