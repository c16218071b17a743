//! Versioned storage on real processes: a data dir written by storage format 1 (checked
//! in as `tests/data/format-1.tar.gz`) still opens with its locks, and a data dir of
//! another format, with a damaged record, or of another cluster is refused (exit 78,
//! a message naming both sides), never decoded.
//!
//! When the storage format changes, this test must keep passing with a migration of the
//! format-1 data dir, or be changed to expect its refusal: never regenerate the fixture
//! to make it pass. `write_format_1_fixture` (ignored) made it.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Options, TestCluster};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};

const META_FILE: &str = "baton-data-dir.toml";
/// Exit code of a refused data dir (`cli::server::EXIT_DATA_DIR_REFUSED`).
const EXIT_DATA_DIR_REFUSED: i32 = 78;
/// How long a refused start may take.
const REFUSAL_TIMEOUT: Duration = Duration::from_secs(20);
/// Lease of the fixture's locks: the test cluster's `lease.max_ttl_ms`.
const FIXTURE_TTL_MS: u64 = 600_000;

fn data_file(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data")
        .join(name)
}

fn one_node() -> Options {
    Options {
        nodes: 1,
        ..Options::default()
    }
}

/// Runs `baton server` for node `id` of `cluster` with `env`, expecting it to exit by
/// itself; returns its exit code and stderr.
fn start_refused(cluster: &TestCluster, id: u64, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(["server", "--config"])
        .arg(&cluster.config_path)
        .args(["--node", &id.to_string()])
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn baton server");
    let deadline = Instant::now() + REFUSAL_TIMEOUT;
    loop {
        if let Some(status) = child.try_wait().expect("wait for the server") {
            let mut stderr = String::new();
            use std::io::Read;
            child
                .stderr
                .take()
                .expect("piped stderr")
                .read_to_string(&mut stderr)
                .expect("read stderr");
            return (status.code(), stderr);
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("the server kept running on a data dir it should refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_format_1_data_dir_opens_with_its_locks() {
    let expected: Value = serde_json::from_slice(
        &std::fs::read(data_file("format-1.json")).expect("read the fixture's facts"),
    )
    .expect("fixture facts are JSON");
    let mut cluster = TestCluster::start_with(one_node()).await;
    cluster.terminate(1);
    let dir = cluster.data_dir(1).to_owned();
    std::fs::remove_dir_all(&dir).expect("empty the data dir");
    std::fs::create_dir_all(&dir).expect("make the data dir");
    let status = Command::new("tar")
        .arg("-xzf")
        .arg(data_file("format-1.tar.gz"))
        .arg("-C")
        .arg(&dir)
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -x failed");
    cluster.spawn(1);
    cluster.wait_ready(common::READY_TIMEOUT).await;

    for lock in expected["held"].as_array().expect("held locks") {
        let key = lock["key"].as_str().expect("key");
        let (status, body) = cluster
            .call_retry(1, Method::GET, &format!("/v1/locks/{key}"), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{key}: {body}\n{}", cluster.log(1));
        assert_eq!(body["owner"], lock["owner"], "{key}: {body}");
        assert_eq!(body["token"], lock["token"], "{key}: {body}");
    }
    for key in expected["free"].as_array().expect("free keys") {
        let key = key.as_str().expect("key");
        let (status, body) = cluster
            .call_retry(1, Method::GET, &format!("/v1/locks/{key}"), None)
            .await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{key}: {body}");
    }
    // The log goes on above what the fixture had applied.
    let (status, body) = cluster.acquire(1, "after-reopen", "o", 10_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last = expected["last_index"].as_u64().expect("last_index");
    assert!(body["token"].as_u64().expect("token") > last, "{body}");
    let meta = std::fs::read_to_string(dir.join(META_FILE)).expect("meta file");
    assert!(
        meta.contains(expected["cluster_id"].as_str().expect("id")),
        "{meta}"
    );
}

/// Writes `tests/data/format-1.tar.gz` and `format-1.json`: a one-node data dir with
/// held and released locks, a snapshot, and log entries after it. Run only when a new
/// format is introduced, to keep a sample of the *old* one:
/// `cargo test --release --test storage_format -- --ignored write_format_1_fixture`.
#[tokio::test(flavor = "multi_thread")]
#[ignore = "writes the checked-in fixture"]
async fn write_format_1_fixture() {
    let mut cluster = TestCluster::start_with(one_node()).await;
    let mut held = Vec::new();
    for (key, owner) in [("fixture-a", "owner-a"), ("fixture-b", "owner-b")] {
        let (status, body) = cluster.acquire(1, key, owner, FIXTURE_TTL_MS).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        held.push(json!({"key": key, "owner": owner, "token": body["token"]}));
    }
    let (status, body) = cluster
        .acquire(1, "fixture-gone", "o", FIXTURE_TTL_MS)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cluster
        .call_retry(
            1,
            Method::POST,
            "/v1/locks/fixture-gone/release",
            Some(json!({"token": body["token"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = cluster
        .call_retry(1, Method::POST, "/v1/cluster/snapshot", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    // After the snapshot: a lock that only the log has.
    let (status, body) = cluster
        .acquire(1, "fixture-after-snapshot", "owner-c", FIXTURE_TTL_MS)
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let last_index = body["token"].as_u64().expect("token");
    held.push(json!({"key": "fixture-after-snapshot", "owner": "owner-c", "token": last_index}));
    assert_eq!(cluster.terminate(1), Some(0), "{}", cluster.log(1));

    let dir = cluster.data_dir(1).to_owned();
    let meta = std::fs::read_to_string(dir.join(META_FILE)).expect("meta file");
    let cluster_id = meta
        .lines()
        .find_map(|l| l.strip_prefix("cluster_id = "))
        .expect("a cluster id")
        .trim_matches('"')
        .to_string();
    // RocksDB's info logs (LOG, LOG.old.*) are not data.
    let status = Command::new("tar")
        .args([
            "--exclude=LOG",
            "--exclude=LOG.old.*",
            "--sort=name",
            "-czf",
        ])
        .arg(data_file("format-1.tar.gz"))
        .arg("-C")
        .arg(&dir)
        .arg(".")
        .status()
        .expect("run tar");
    assert!(status.success(), "tar -c failed");
    let facts = json!({
        "format": 1,
        "cluster_id": cluster_id,
        "held": held,
        "free": ["fixture-gone"],
        "last_index": last_index,
    });
    std::fs::write(
        data_file("format-1.json"),
        serde_json::to_string_pretty(&facts).expect("json") + "\n",
    )
    .expect("write facts");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_another_format_or_damaged_is_refused_with_exit_78() {
    let mut cluster = TestCluster::start_with(one_node()).await;
    assert_eq!(cluster.terminate(1), Some(0), "{}", cluster.log(1));
    let meta = cluster.data_dir(1).join(META_FILE);
    let good = std::fs::read_to_string(&meta).expect("meta file");
    assert!(good.contains("format = 1"), "{good}");

    std::fs::write(&meta, good.replace("format = 1", "format = 2")).expect("write");
    let (code, stderr) = start_refused(&cluster, 1, &[]);
    assert_eq!(code, Some(EXIT_DATA_DIR_REFUSED), "{stderr}");
    assert!(
        stderr.contains("storage format 2") && stderr.contains("reads format 1"),
        "{stderr}"
    );
    assert!(stderr.contains("move the data dir away"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");

    for damaged in ["format = 1\ncluster_id = 7\n", "\u{0}\u{1}garbage", ""] {
        std::fs::write(&meta, damaged).expect("write");
        let (code, stderr) = start_refused(&cluster, 1, &[]);
        assert_eq!(code, Some(EXIT_DATA_DIR_REFUSED), "{damaged:?}: {stderr}");
        assert!(stderr.contains("is damaged"), "{damaged:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    }

    std::fs::remove_file(&meta).expect("remove meta");
    let (code, stderr) = start_refused(&cluster, 1, &[]);
    assert_eq!(code, Some(EXIT_DATA_DIR_REFUSED), "{stderr}");
    assert!(stderr.contains("before storage versioning"), "{stderr}");

    // Put back, the record opens again.
    std::fs::write(&meta, &good).expect("write");
    cluster.spawn(1);
    cluster.wait_ready(common::READY_TIMEOUT).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_data_dir_of_another_cluster_is_refused_when_the_config_pins_the_id() {
    let mut cluster = TestCluster::start_with(one_node()).await;
    assert_eq!(cluster.terminate(1), Some(0), "{}", cluster.log(1));
    let meta = std::fs::read_to_string(cluster.data_dir(1).join(META_FILE)).expect("meta");
    let (code, stderr) = start_refused(&cluster, 1, &[("BATON_RAFT_CLUSTER_ID", "prod-eu-1")]);
    assert_eq!(code, Some(EXIT_DATA_DIR_REFUSED), "{stderr}");
    let ours = meta
        .lines()
        .find_map(|l| l.strip_prefix("cluster_id = "))
        .expect("an id")
        .trim_matches('"');
    assert!(
        stderr.contains(&format!("belongs to cluster {ours}"))
            && stderr.contains("raft.cluster_id in the config is prod-eu-1"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_of_two_clusters_refuse_each_others_raft_requests() {
    // Node 3's data dir is swapped for the data dir of another (one-node) cluster: its
    // peers' RPCs are refused, and the other two go on as a cluster of their own.
    let stranger = TestCluster::start_with(one_node()).await;
    let mut cluster = TestCluster::start().await;
    let read_id = |dir: &Path| {
        let meta = std::fs::read_to_string(dir.join(META_FILE)).expect("meta");
        meta.lines()
            .find_map(|l| l.strip_prefix("cluster_id = "))
            .expect("an id")
            .trim_matches('"')
            .to_string()
    };
    let theirs = read_id(stranger.data_dir(1));
    let ours = read_id(cluster.data_dir(1));
    assert_ne!(theirs, ours);
    let mut stranger = stranger;
    stranger.terminate(1);
    cluster.terminate(3);
    let dir3 = cluster.data_dir(3).to_owned();
    std::fs::remove_dir_all(&dir3).expect("remove node 3's data");
    let status = Command::new("cp")
        .arg("-a")
        .arg(stranger.data_dir(1))
        .arg(&dir3)
        .status()
        .expect("cp");
    assert!(status.success());
    cluster.spawn(3);
    let (status, body) = cluster.acquire(1, "still-served", "o", 10_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let wanted = format!(
        "refused a raft request from a node of cluster {ours}: this node is in cluster {theirs}"
    );
    let deadline = Instant::now() + common::READY_TIMEOUT;
    while !cluster.log(3).contains(&wanted) {
        assert!(Instant::now() < deadline, "node 3 log:\n{}", cluster.log(3));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(read_id(&dir3), theirs, "node 3 kept its own cluster");
    assert!(cluster.is_running(3));
}
