//! `baton lock` and the script commands against a real three-node cluster.

mod common;

use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::TestCluster;

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
async fn run(args: Vec<String>) -> Output {
    tokio::task::spawn_blocking(move || baton().args(&args).output().expect("run baton"))
        .await
        .expect("join")
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn baton_lock_runs_the_command_with_its_token_and_releases_after() {
    let cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("token");
    let script = format!(
        "echo $BATON_KEY $BATON_TOKEN $BATON_OWNER > {}; exit 7",
        out.display()
    );
    let o = run(args(&[
        "lock",
        "deploy",
        "--endpoints",
        &eps,
        "--owner",
        "ci-1",
        "--",
        "sh",
        "-c",
        &script,
    ]))
    .await;
    assert_eq!(
        o.status.code(),
        Some(7),
        "exit code is the command's: {o:?}"
    );
    let seen = std::fs::read_to_string(&out).unwrap();
    let parts: Vec<&str> = seen.split_whitespace().collect();
    assert_eq!(parts[0], "deploy");
    assert!(parts[1].parse::<u64>().unwrap() > 0, "{seen}");
    assert_eq!(parts[2], "ci-1");
    // Released when the command ended.
    let o = run(args(&["get", "deploy", "--endpoints", &eps])).await;
    assert_eq!(o.status.code(), Some(3), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_baton_lock_is_refused_or_waits_and_gets_a_larger_token() {
    let cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let first_out = dir.path().join("first");
    let first_done = dir.path().join("first-done");
    let holder = {
        // Holds the lock until the test says so (bounded: 30 s).
        let script = format!(
            "echo $BATON_TOKEN > {}; i=0; while [ ! -e {} ] && [ $i -lt 600 ]; do sleep 0.05; i=$((i+1)); done",
            first_out.display(),
            first_done.display()
        );
        let a = args(&[
            "lock",
            "migrate",
            "--endpoints",
            &eps,
            "--owner",
            "first",
            "--",
            "sh",
            "-c",
            &script,
        ]);
        tokio::task::spawn_blocking(move || baton().args(&a).output().expect("run"))
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !first_out.exists()
        || std::fs::read_to_string(&first_out)
            .unwrap()
            .trim()
            .is_empty()
    {
        assert!(Instant::now() < deadline, "first lock never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first_token: u64 = std::fs::read_to_string(&first_out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // Without --wait: refused at once, naming the holder.
    let o = run(args(&[
        "lock",
        "migrate",
        "--endpoints",
        &eps,
        "--owner",
        "second",
        "--",
        "true",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(75), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("first"),
        "the message names the holder: {stderr}"
    );
    // With --wait: queued, runs after the first one released, with a larger token.
    let second_out = dir.path().join("second");
    let script = format!("echo $BATON_TOKEN > {}", second_out.display());
    let second = tokio::spawn(run(args(&[
        "lock",
        "migrate",
        "--wait",
        "30s",
        "--endpoints",
        &eps,
        "--owner",
        "second",
        "--",
        "sh",
        "-c",
        &script,
    ])));
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, lock) = cluster
            .call_retry(
                1,
                reqwest::Method::GET,
                "/v1/locks/migrate?waiters=true",
                None,
            )
            .await;
        if lock["waiter_list"][0]["owner"] == "second" {
            break;
        }
        assert!(Instant::now() < deadline, "second never queued: {lock}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    std::fs::write(&first_done, "").unwrap();
    let o = second.await.unwrap();
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let second_token: u64 = std::fs::read_to_string(&second_out)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(
        second_token > first_token,
        "{second_token} <= {first_token}"
    );
    assert_eq!(holder.await.unwrap().status.code(), Some(0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leader_does_not_lose_a_held_lock() {
    let mut cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let leader = cluster.leader().await;
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("running");
    let script = format!("touch {}; exec sleep 12", marker.display());
    // A 15 s lease renewed every 5 s while the command runs 12 s: the renewals after the
    // kill must reach the new leader (within 4.5 s: safe deadline 12 s after the last
    // renewal, SIGTERM 2.5 s before it) for the command to finish.
    let a = args(&[
        "lock",
        "held",
        "--ttl",
        "15s",
        "--endpoints",
        &eps,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let lock = tokio::task::spawn_blocking(move || baton().args(&a).output().expect("run"));
    // The command runs only once the lock is held: kill the leader then.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.kill(leader);
    let o = lock.await.unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "lock lost across a leader kill: {o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_every_node_makes_baton_lock_stop_its_command_before_the_safe_deadline() {
    let cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("term");
    let script = format!(
        "trap 'date +%s%N > {}; exit 0' TERM; echo started > {}.run; while true; do sleep 0.05; done",
        marker.display(),
        marker.display()
    );
    let a = args(&[
        "lock",
        "paused",
        "--ttl",
        "3s",
        "--grace",
        "500ms",
        "--endpoints",
        &eps,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let child = tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut c = baton()
            .args(&a)
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn");
        let status = c.wait().expect("wait");
        (status, started)
    });
    let run_marker = dir.path().join("term.run");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !run_marker.exists() {
        assert!(Instant::now() < deadline, "command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let pids: Vec<u32> = cluster
        .nodes
        .values()
        .filter_map(|n| n.child.as_ref().map(|c| c.id()))
        .collect();
    let stopped_at = std::time::SystemTime::now();
    for pid in &pids {
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGSTOP) };
    }
    let (status, _) = child.await.unwrap();
    for pid in &pids {
        unsafe { libc::kill(*pid as libc::pid_t, libc::SIGCONT) };
    }
    assert_eq!(status.code(), Some(76), "lock-lost exit code");
    // The last renewal was sent before the stop, so the safe deadline (send + 3 s - 0.6 s)
    // came at most 2.4 s after it: the command must have had SIGTERM before then.
    let term_ns: u128 = std::fs::read_to_string(&marker)
        .expect("the command got SIGTERM")
        .trim()
        .parse()
        .unwrap();
    let stop_ns = stopped_at
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let after = Duration::from_nanos((term_ns.saturating_sub(stop_ns)) as u64);
    assert!(
        after < Duration::from_millis(2_400),
        "SIGTERM {after:?} after the nodes stopped"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_script_commands_keep_working_with_one_node_down() {
    let mut cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let leader = cluster.leader().await;
    cluster.kill(leader);
    let o = run(args(&[
        "acquire",
        "k1",
        "--endpoints",
        &eps,
        "--owner",
        "me",
        "--json",
    ]))
    .await;
    assert_eq!(o.status.code(), Some(0), "{o:?}");
    let grant: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let token = grant["token"].as_u64().unwrap().to_string();
    for (cmd, code) in [
        (args(&["renew", "k1", &token, "--endpoints", &eps]), 0),
        (args(&["validate", "k1", &token, "--endpoints", &eps]), 0),
        (args(&["get", "k1", "--endpoints", &eps]), 0),
        (args(&["ls", "--endpoints", &eps]), 0),
        (args(&["status", "--endpoints", &eps]), 0),
        (
            args(&["acquire", "k1", "--endpoints", &eps, "--owner", "other"]),
            75,
        ),
        (args(&["release", "k1", &token, "--endpoints", &eps]), 0),
        (args(&["validate", "k1", &token, "--endpoints", &eps]), 3),
        (args(&["renew", "k1", &token, "--endpoints", &eps]), 76),
    ] {
        let o = run(cmd.clone()).await;
        assert_eq!(o.status.code(), Some(code), "{cmd:?}: {o:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_force_release_stops_the_command_at_once() {
    let cluster = TestCluster::start().await;
    let eps = endpoints(&cluster);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("running");
    let script = format!("touch {}; exec sleep 60", marker.display());
    // A 60 s lease: without the event stream the loss would show only at a renewal.
    let a = args(&[
        "lock",
        "forced",
        "--ttl",
        "60s",
        "--endpoints",
        &eps,
        "--",
        "sh",
        "-c",
        &script,
    ]);
    let lock = tokio::task::spawn_blocking(move || baton().args(&a).output().expect("run"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while !marker.exists() {
        assert!(Instant::now() < deadline, "command never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Free the lock as an admin would. The guard follows the key's events from its
    // grant's index on (Last-Event-ID), so it sees the force release even if its stream
    // connects after it.
    let leader = cluster.leader().await;
    let forced_at = Instant::now();
    let (status, body) = cluster
        .call_retry(leader, reqwest::Method::DELETE, "/v1/locks/forced", None)
        .await;
    assert_eq!(status, reqwest::StatusCode::OK, "{body}");
    let o = lock.await.unwrap();
    assert_eq!(o.status.code(), Some(76), "{o:?}");
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(stderr.contains("force released"), "{stderr}");
    assert!(
        forced_at.elapsed() < Duration::from_secs(15),
        "took {:?}",
        forced_at.elapsed()
    );
}
