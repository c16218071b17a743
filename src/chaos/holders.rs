//! Holders that use the Rust client: [`LockGuard`](crate::client::LockGuard) work in the
//! main process and `baton lock -- CMD` processes, on the `client-*` keys, through the
//! recording [`relay`](super::relay).
//!
//! - **Guard holders** (owner `guard-N#M`, one per session): `client::lock` (no wait),
//!   then a write to the fenced resource every [`WRITE_PERIOD`] while the guard is not
//!   lost and `Instant::now() < guard.safe_until()` — the rule the client documents for
//!   its holders — for a hold of 0.5–3 s, then release.
//! - **Command holders** (owner `cmd-N#M`): run `baton lock client-K --ttl 1s -- baton
//!   chaos append …`; the child ([`append`]) writes to the resource's HTTP face every
//!   [`WRITE_PERIOD`] with `BATON_TOKEN` and its own timestamps, knowing nothing of the
//!   lease, until its hold ends or it is killed. `baton lock` must stop it before the
//!   safe deadline.
//!
//! Both use a 1 s lease, so that a leader failover or a partition outlasts it: renewals
//! fail, the safe deadline comes, and the client must stop the work in time. The checker
//! ([`super::deadlines`]) holds every such write to the session's safe deadline, computed
//! from the relay's record of its grants; the resource's fencing catches what a client
//! could not stop (a holder's process paused, for instance).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::Rng;
use tokio::time::Instant;

use super::history::ClientKind;
use super::resource::{Resource, WriteRequest};
use super::workload::Recorder;
use crate::client::{self, Client};
use crate::sync::LockUnpoisoned;

/// Keys the client holders share (guard and command holders contend for them).
pub const HOLDER_KEYS: usize = 3;
/// Lease of every client holder: shorter than a failover.
const HOLDER_TTL: Duration = Duration::from_secs(1);
/// `baton lock --ttl`, the same lease.
const HOLDER_TTL_ARG: &str = "1s";
/// How long a client call keeps retrying (an acquire while no leader, a release).
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// `baton lock --timeout`, the same.
const CALL_TIMEOUT_ARG: &str = "5s";
/// Time between two writes of a holder.
pub const WRITE_PERIOD: Duration = Duration::from_millis(100);
/// How long a session holds its key, in ms.
const HOLD_MS: std::ops::Range<u64> = 500..3_000;
/// Pause between a holder's sessions, in ms (a `baton lock` start costs a process).
const BETWEEN_MS: std::ops::Range<u64> = 50..400;

fn key(rng: &mut StdRng) -> String {
    format!("client-{}", rng.gen_range(0..HOLDER_KEYS))
}

/// The Rust client of the holders: the relay's endpoints, a short call timeout.
pub(super) fn client(relay: &[String]) -> Result<Arc<Client>, String> {
    Client::new(relay)
        .map(|c| Arc::new(c.with_call_timeout(CALL_TIMEOUT)))
        .map_err(|e| e.to_string())
}

/// Sessions under a [`LockGuard`](client::LockGuard) (module docs).
pub(super) async fn guard_holder(
    client: Arc<Client>,
    name: String,
    mut rng: StdRng,
    resource: Arc<Resource>,
    rec: Recorder,
    until: std::time::Instant,
) {
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n += 1;
        let owner = format!("{name}#{n}");
        let key = key(&mut rng);
        let Ok(guard) = client::lock(&client, &key, &owner, HOLDER_TTL, Duration::ZERO).await
        else {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(BETWEEN_MS))).await;
            continue;
        };
        let hold_until = Instant::now() + Duration::from_millis(rng.gen_range(HOLD_MS));
        let mut held = true;
        while Instant::now() < hold_until {
            // The client's rule: act only while not lost and before the safe deadline.
            if guard.lost_reason().is_some() || Instant::now() >= guard.safe_until() {
                held = false;
                break;
            }
            let t = rec.now_ms();
            resource.write_recorded(
                &rec,
                &key,
                guard.token(),
                &owner,
                t,
                Some(ClientKind::LockGuard),
            );
            tokio::select! {
                _ = guard.lost() => {}
                _ = tokio::time::sleep(WRITE_PERIOD) => {}
            }
        }
        if held {
            let _ = guard.release().await;
        }
        // A lost guard is dropped: it stops renewing and releases in the background.
        tokio::time::sleep(Duration::from_millis(rng.gen_range(BETWEEN_MS))).await;
    }
}

/// What a command holder runs.
#[derive(Clone)]
pub(super) struct Command {
    /// This binary: `baton lock` and its child `baton chaos append`.
    pub exe: PathBuf,
    /// The relay's endpoints, for `baton lock --endpoints`.
    pub relay: Vec<String>,
    /// The resource's HTTP address.
    pub resource: String,
    pub epoch_ms: u64,
}

/// `baton lock` exit codes seen, for the workload's log.
pub(super) type Exits = Arc<Mutex<BTreeMap<i32, u64>>>;

/// Sessions of `baton lock -- baton chaos append` (module docs).
pub(super) async fn command_holder(
    cmd: Command,
    name: String,
    mut rng: StdRng,
    exits: Exits,
    until: std::time::Instant,
) {
    let mut n = 0u64;
    while std::time::Instant::now() < until {
        n += 1;
        let owner = format!("{name}#{n}");
        let key = key(&mut rng);
        let hold_ms = rng.gen_range(HOLD_MS);
        let status = tokio::process::Command::new(&cmd.exe)
            .args(["lock", &key, "--ttl", HOLDER_TTL_ARG])
            .args(["--timeout", CALL_TIMEOUT_ARG, "--owner", &owner])
            .args(["--endpoints", &cmd.relay.join(",")])
            .arg("--")
            .arg(&cmd.exe)
            .args(["chaos", "append", "--resource", &cmd.resource])
            .args(["--epoch-ms", &cmd.epoch_ms.to_string()])
            .args(["--for-ms", &hold_ms.to_string()])
            .env_remove("BATON_API_KEY")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .kill_on_drop(true)
            .status()
            .await;
        let code = status.map_or(-1, |s| s.code().unwrap_or(-2));
        *exits.lock_unpoisoned().entry(code).or_default() += 1;
        tokio::time::sleep(Duration::from_millis(rng.gen_range(BETWEEN_MS))).await;
    }
}

/// The child of `baton lock` (`baton chaos append`): writes `BATON_TOKEN` on `BATON_KEY`
/// to the resource at `resource` every [`WRITE_PERIOD`] for `for_ms`, each write carrying
/// its owner (`BATON_OWNER`) and its send time on the run's clock (`epoch_ms`). Returns
/// the number of writes sent.
pub async fn append(resource: &str, epoch_ms: u64, for_ms: u64) -> Result<u64, String> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("{name} is not set"));
    let (key, owner) = (var("BATON_KEY")?, var("BATON_OWNER")?);
    let token: u64 = var("BATON_TOKEN")?
        .parse()
        .map_err(|_| "BATON_TOKEN is not a number".to_string())?;
    let rec = Recorder::new(Some(epoch_ms));
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| e.to_string())?;
    let url = format!("http://{resource}/write");
    let until = Instant::now() + Duration::from_millis(for_ms);
    let mut sent = 0;
    while Instant::now() < until {
        let req = WriteRequest {
            key: key.clone(),
            token,
            owner: Some(owner.clone()),
            invoke_ms: Some(rec.now_ms()),
            client: Some(ClientKind::BatonLock),
        };
        // An unreachable resource records nothing, like a write that never happened.
        let _ = http.post(&url).json(&req).send().await;
        sent += 1;
        tokio::time::sleep(WRITE_PERIOD).await;
    }
    Ok(sent)
}
