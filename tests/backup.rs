//! Backup and restore on real processes: `baton snapshot save` taken through a follower
//! while clients write, restored with `baton snapshot restore` into a new cluster, which
//! holds every lock acknowledged up to the backup's index and hands out tokens above it;
//! damaged and truncated files are refused with a message.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::TestCluster;
use reqwest::{Method, StatusCode};

/// Lease of the written locks: longer than the test.
const TTL_MS: u64 = 600_000;
/// Concurrent writers.
const WRITERS: usize = 4;

fn baton(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_baton"))
        .args(args)
        .output()
        .expect("run baton")
}

fn meta_id(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("baton-data-dir.toml"))
        .expect("meta")
        .lines()
        .find_map(|l| l.strip_prefix("cluster_id = "))
        .expect("an id")
        .trim_matches('"')
        .to_string()
}

/// One acknowledged acquire.
#[derive(Clone, Debug)]
struct Ack {
    key: String,
    owner: String,
    token: u64,
    at: Instant,
}

#[tokio::test(flavor = "multi_thread")]
async fn a_backup_taken_during_writes_restores_into_a_new_cluster_above_its_tokens() {
    let old = Arc::new(TestCluster::start().await);
    let leader = old.leader().await;
    let follower = old.other_than(leader);
    let stop = Arc::new(AtomicBool::new(false));
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let (cluster, stop) = (old.clone(), stop.clone());
        writers.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (key, owner) = (format!("k-{w}-{i}"), format!("o-{w}-{i}"));
                let node = 1 + (i % 3) as u64;
                let (status, body) = cluster.acquire(node, &key, &owner, TTL_MS).await;
                assert_eq!(status, StatusCode::OK, "{key}: {body}");
                let token = body["token"].as_u64().expect("token");
                acks.push(Ack {
                    key,
                    owner,
                    token,
                    at: Instant::now(),
                });
                i += 1;
            }
            acks
        }));
    }
    tokio::time::sleep(Duration::from_millis(800)).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("baton.backup");
    let asked = Instant::now();
    let endpoint = old.api(follower).to_string();
    let path_arg = file_arg(&file);
    let saved = tokio::task::spawn_blocking(move || {
        baton(&["snapshot", "save", &path_arg, "--endpoints", &endpoint])
    })
    .await
    .expect("save");
    assert!(
        saved.status.success(),
        "{}",
        String::from_utf8_lossy(&saved.stderr)
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let mut acks = Vec::new();
    for w in writers {
        acks.extend(w.await.expect("writer"));
    }
    let bytes = std::fs::read(&file).expect("read backup");
    let header: serde_json::Value =
        serde_json::from_slice(bytes.split(|b| *b == b'\n').nth(1).expect("header line"))
            .expect("header JSON");
    let index = header["index"].as_u64().expect("index");
    let before: Vec<&Ack> = acks.iter().filter(|a| a.token <= index).collect();
    let after: Vec<&Ack> = acks.iter().filter(|a| a.token > index).collect();
    assert!(
        before.len() > 10 && !after.is_empty(),
        "writes on both sides of {index}: {} / {}",
        before.len(),
        after.len()
    );
    for a in acks.iter().filter(|a| a.at < asked) {
        assert!(
            a.token <= index,
            "{a:?} was acknowledged before the save was asked, index {index}"
        );
    }
    let old_id = meta_id(old.data_dir(1));
    assert_eq!(header["cluster_id"], old_id.as_str());

    // Refusals: damaged, truncated, not a backup; never a panic.
    let mut flipped = bytes.clone();
    let mid = flipped.len() / 2;
    flipped[mid] ^= 0x40;
    let truncated = bytes[..bytes.len() - 100].to_vec();
    for (name, content, says) in [
        ("flipped", flipped, "checksum does not match"),
        ("truncated", truncated, "truncated or damaged"),
        ("text", b"hello\n".to_vec(), "not a Baton backup"),
    ] {
        let path = dir.path().join(name);
        std::fs::write(&path, content).expect("write");
        let target = dir.path().join(format!("{name}-data"));
        let out = baton(&[
            "snapshot",
            "restore",
            path.to_str().expect("utf-8"),
            "--config",
            old.config_path.to_str().expect("utf-8"),
            "--node",
            "1",
            "--data-dir",
            target.to_str().expect("utf-8"),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(says) && !stderr.contains("panicked"),
            "{name}: {stderr}"
        );
        assert!(!target.join("db").exists(), "{name}: nothing is built");
    }
    drop(old);

    // The new cluster: its own addresses and dirs, every node restored from the file.
    let mut new = TestCluster::start().await;
    for id in 1..=3 {
        new.terminate(id);
    }
    let config = new.config_path.to_str().expect("utf-8").to_string();
    let out = baton(&[
        "snapshot",
        "restore",
        &file_arg(&file),
        "--config",
        &config,
        "--node",
        "1",
    ]);
    assert_eq!(out.status.code(), Some(1), "a used data dir is refused");
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not empty"));
    for id in 1..=3u64 {
        std::fs::remove_dir_all(new.data_dir(id)).expect("wipe");
        let out = baton(&[
            "snapshot",
            "restore",
            &file_arg(&file),
            "--config",
            &config,
            "--node",
            &id.to_string(),
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let new_id = meta_id(new.data_dir(1));
    assert_ne!(new_id, old_id);
    assert_eq!(meta_id(new.data_dir(2)), new_id);
    for id in 1..=3 {
        new.spawn(id);
    }
    new.wait_ready(common::READY_TIMEOUT).await;
    for a in &before {
        let (status, body) = new
            .call_retry(1, Method::GET, &format!("/v1/locks/{}", a.key), None)
            .await;
        assert_eq!(status, StatusCode::OK, "{a:?}: {body}");
        assert_eq!(body["owner"], a.owner.as_str(), "{a:?}: {body}");
        assert_eq!(body["token"], a.token, "{a:?}: {body}");
    }
    for a in &after {
        let (status, body) = new
            .call_retry(1, Method::GET, &format!("/v1/locks/{}", a.key), None)
            .await;
        assert_eq!(
            status,
            StatusCode::NOT_FOUND,
            "{a:?} came after the backup: {body}"
        );
    }
    let (status, body) = new.acquire(2, "after-restore", "o", 10_000).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        body["token"].as_u64().expect("token") > index,
        "{body} vs {index}"
    );
}

fn file_arg(p: &Path) -> String {
    p.to_str().expect("utf-8 path").to_string()
}
