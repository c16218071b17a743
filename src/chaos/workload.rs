//! The chaos workload: client tasks against a real cluster, every operation recorded.
//!
//! Clients on separate key ranges run side by side; each request goes to a node picked
//! at random, so about two thirds of them reach a follower and are forwarded:
//! - **mixers** acquire, renew, release and read on `mix-*` keys;
//! - **fenced holders** take `fenced-*` keys and write to the fenced [`Resource`], which
//!   keeps the highest token per key and rejects lower ones; they sometimes stall past
//!   their TTL before writing, so a stale holder must be refused by the resource;
//! - a **pausable holder** in a second process (role `pausable`) does the same on the
//!   same keys through the resource's HTTP face; the chaos script stops that process
//!   with SIGSTOP for longer than its lease;
//! - the **abandoner** takes `abandon-*` keys and walks away; a **watcher** polls until
//!   it gets them, which measures how soon an abandoned lock is free;
//! - a **probe** starts an acquire + release at about 20 Hz on one of the `probe-*`
//!   keys, without waiting for the previous one, to measure unavailability;
//! - **client holders** ([`super::holders`]) hold `client-*` keys under the Rust
//!   client's `LockGuard` and `baton lock -- CMD`, talking through the recording
//!   [`super::relay`].
//!
//! Outcomes: 200 → `ok`; 409/4xx or `NO_LEADER` or a refused connection → `fail` (it did
//! not happen); a timeout, a dropped connection after sending, or `OUTCOME_UNKNOWN` →
//! `unknown` (it may have happened). Every process writes `history-<role>.jsonl` on one
//! shared clock (milliseconds since the run's epoch).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::history::{Holder, Op, OpKind, Outcome};
use super::resource::{self, Resource, WriteAnswer, WriteRequest};
use super::{followers, holders, relay, waiters};
use crate::sync::LockUnpoisoned;
use crate::wire::{
    parse_rfc3339_ms, AcquireRequest, ErrorCode, Lease, LockInfo, Problem, ReleaseRequest,
    Released, RenewRequest,
};

/// Which part of the workload a process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Role {
    /// Mixers, fenced holders, the abandoner and the probe; serves the fenced resource.
    Main,
    /// One fenced holder writing to the main process's resource over HTTP: the process
    /// the chaos script pauses with SIGSTOP past its lease.
    Pausable,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Main => "main",
            Role::Pausable => "pausable",
        }
    }
}

/// Workload settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API addresses of every node (`host:port`).
    pub endpoints: Vec<String>,
    pub duration: Duration,
    pub seed: u64,
    pub role: Role,
    /// Where the main process serves the fenced resource and the pausable one finds it.
    pub resource_addr: String,
    /// Wall-clock milliseconds that are time 0 of the history, shared by every workload
    /// process of a run so that their histories merge on one clock. Read once at start;
    /// after that each process counts on its monotonic clock.
    pub epoch_ms: Option<u64>,
    pub mixers: usize,
    pub mix_keys: usize,
    pub fenced_holders: usize,
    pub fenced_keys: usize,
    /// Waiters on the hot `queue-*` keys (also the delayer and its watcher when > 0).
    pub waiters: usize,
    /// Follow the queue and delay keys' events from every node.
    pub follow_events: bool,
    /// Holders under the Rust client's `LockGuard` on the `client-*` keys.
    pub guard_holders: usize,
    /// Holders that run `baton lock -- baton chaos append` on the same keys.
    pub command_holders: usize,
    /// The resource ignores tokens (a control run the checker must catch).
    pub negative_control: bool,
    pub out: PathBuf,
    /// API key sent with every request (a cluster with auth on).
    pub api_key: Option<String>,
    /// CA certificates (PEM) trusted for `https://` endpoints.
    pub ca_file: Option<PathBuf>,
}

/// A client builder for the cluster: the API key as a default header, the CA file as the
/// only roots.
fn cluster_client(settings: &Settings) -> Result<reqwest::ClientBuilder, String> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &settings.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .map_err(|_| "the API key cannot be a header value".to_string())?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut builder = reqwest::Client::builder()
        .no_proxy()
        .pool_idle_timeout(crate::wire::CLIENT_IDLE_REUSE)
        .default_headers(headers);
    if let Some(path) = &settings.ca_file {
        let pem = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
        builder = builder.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&pem).map_err(|e| e.to_string())? {
            builder = builder.add_root_certificate(cert);
        }
    }
    Ok(builder)
}

/// Shared recorder of completed operations.
#[derive(Clone)]
pub(super) struct Recorder {
    start: Instant,
    /// History time of `start`, in microseconds: rounding to milliseconds once, when a
    /// time is read, keeps the processes of a run within 1 ms of each other (rounding
    /// the base too could put them 2 ms apart).
    base_us: u64,
    /// Wall-clock ms since the Unix epoch of history time 0.
    epoch_ms: u64,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    pub(super) fn new(epoch_ms: Option<u64>) -> Recorder {
        let wall_us = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let epoch_ms = epoch_ms.unwrap_or(wall_us / 1_000);
        Recorder {
            start: Instant::now(),
            base_us: wall_us.saturating_sub(epoch_ms * 1_000),
            epoch_ms,
            ops: Arc::new(Mutex::new(Vec::new())),
        }
    }

    /// Wall-clock ms since the Unix epoch of history time 0, for the processes this one
    /// starts.
    pub(super) fn epoch_ms(&self) -> u64 {
        self.epoch_ms
    }

    pub(super) fn now_ms(&self) -> u64 {
        (self.base_us + self.start.elapsed().as_micros() as u64) / 1_000
    }

    pub(super) fn push(&self, op: Op) {
        self.ops.lock_unpoisoned().push(op);
    }
}

/// Milliseconds since the epoch of a wire time.
fn time_ms(text: &str) -> Option<u64> {
    parse_rfc3339_ms(text).ok()
}

/// The holder a lock view or a `LOCK_HELD` problem names.
fn holder(owner: &str, token: u64, expires_at: &str) -> Option<Holder> {
    Some(Holder {
        owner: owner.to_string(),
        token,
        expires_at_ms: time_ms(expires_at)?,
    })
}

/// A client's view of one answer.
pub(super) struct Answer {
    pub(super) endpoint: String,
    pub(super) outcome: Outcome,
    pub(super) body: Value,
    pub(super) error: Option<String>,
}

impl Answer {
    /// A node's answer: 200 → `ok`; 503 `OUTCOME_UNKNOWN` or a 500 → `unknown`; anything
    /// else → `fail` (it did not happen).
    pub(super) fn new(endpoint: String, status: u16, body: Value) -> Answer {
        let failed = !(200..300).contains(&status);
        // Only error answers carry a code; a problem without one has none here.
        let code = failed
            .then(|| Problem::deserialize(&body).ok())
            .flatten()
            .map(|p| p.code)
            .filter(|c| *c != ErrorCode::Unknown);
        let outcome = match (status, code) {
            (200, _) => Outcome::Ok,
            (503, Some(ErrorCode::OutcomeUnknown)) | (500, _) => Outcome::Unknown,
            _ => Outcome::Fail,
        };
        let error = code.map(|c| c.as_str().to_string()).or_else(|| {
            failed.then(|| {
                reqwest::StatusCode::from_u16(status).map_or(status.to_string(), |s| s.to_string())
            })
        });
        Answer {
            endpoint,
            outcome,
            body,
            error,
        }
    }

    /// No answer: a refused connection did not happen (`fail`); a timeout or a dropped
    /// connection after sending may have (`unknown`).
    pub(super) fn lost(endpoint: String, e: &reqwest::Error) -> Answer {
        Answer {
            endpoint,
            outcome: if e.is_connect() {
                Outcome::Fail
            } else {
                Outcome::Unknown
            },
            body: Value::Null,
            error: Some(if e.is_timeout() {
                "timeout".into()
            } else {
                "transport".into()
            }),
        }
    }

    /// The history operation of this answer to a `kind` request by `owner` on `key`
    /// (`token`: the one sent), invoked at `invoke_ms` and answered at `complete_ms`.
    pub(super) fn op(
        &self,
        kind: OpKind,
        key: &str,
        owner: &str,
        token: Option<u64>,
        times: (u64, u64),
    ) -> Op {
        let a = self;
        let ok = a.outcome == Outcome::Ok;
        let grant = ok && matches!(kind, OpKind::Acquire | OpKind::Renew);
        let mut op = Op::new(kind, key, owner, token, times.0, times.1, a.outcome);
        if grant {
            if let Ok(lease) = Lease::deserialize(&a.body) {
                op.token = token.or(Some(lease.token));
                op.acquired_at_ms = time_ms(&lease.acquired_at);
                op.expires_at_ms = time_ms(&lease.expires_at);
                op.ttl_ms = Some(lease.ttl_ms);
            }
        }
        if let Ok(r) = Released::deserialize(&a.body) {
            op.released = Some(r.released);
            op.at_ms = time_ms(&r.timestamp);
            op.reason = r.reason.map(|n| n.as_str().to_string());
        }
        if !ok {
            op.available_at_ms = Problem::deserialize(&a.body)
                .ok()
                .and_then(|p| p.available_at)
                .and_then(|t| time_ms(&t));
        }
        op.holder = match kind {
            OpKind::Read if ok => LockInfo::deserialize(&a.body)
                .ok()
                .and_then(|l| holder(&l.owner, l.token, &l.expires_at)),
            OpKind::Acquire if !ok => Problem::deserialize(&a.body)
                .ok()
                .and_then(|p| p.holder)
                .and_then(|h| holder(&h.owner, h.token, &h.expires_at)),
            _ => None,
        };
        op.error = a.error.clone();
        // Why a node said no (e.g. a NO_LEADER's quorum account): for reading a report.
        if !ok {
            op.detail = Problem::deserialize(&a.body).ok().map(|p| p.detail);
        }
        // A read of a free key is answered 404 LOCK_NOT_FOUND: it saw the key free.
        if kind == OpKind::Read && a.error.as_deref() == Some(ErrorCode::LockNotFound.as_str()) {
            op.outcome = Outcome::Ok;
        }
        op.endpoint = Some(a.endpoint.clone());
        op
    }
}

pub(super) struct Client {
    pub(super) http: reqwest::Client,
    pub(super) endpoints: Vec<String>,
    pub(super) rng: StdRng,
    /// The owner its requests name.
    pub(super) name: String,
    /// The history's `process` of its operations (the owner, unless each request names
    /// an owner of its own).
    pub(super) process: String,
    pub(super) rec: Recorder,
}

impl Client {
    /// Another client for the same process, on its own random stream.
    pub(super) fn fork(&mut self) -> Client {
        Client {
            http: self.http.clone(),
            endpoints: self.endpoints.clone(),
            rng: StdRng::seed_from_u64(self.rng.gen()),
            name: self.name.clone(),
            process: self.process.clone(),
            rec: self.rec.clone(),
        }
    }

    /// Leader-agnostic: a node picked at random.
    fn endpoint(&mut self) -> String {
        let i = self.rng.gen_range(0..self.endpoints.len());
        self.endpoints[i].clone()
    }

    pub(super) async fn call<B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
    ) -> Answer {
        self.call_within(method, path, body, REQUEST_TIMEOUT).await
    }

    /// A request that gives up (drops the connection) after `timeout`.
    pub(super) async fn call_within<B: Serialize>(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&B>,
        timeout: Duration,
    ) -> Answer {
        let endpoint = self.endpoint();
        let url = crate::wire::endpoint_url(&endpoint, path);
        let mut req = self.http.request(method, url).timeout(timeout);
        if let Some(b) = body {
            req = req.json(b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                Answer::new(endpoint, status, body)
            }
            Err(e) => Answer::lost(endpoint, &e),
        }
    }

    pub(super) fn op(
        &self,
        kind: OpKind,
        key: &str,
        token: Option<u64>,
        invoke_ms: u64,
        a: &Answer,
    ) -> Op {
        let mut op = a.op(kind, key, &self.name, token, (invoke_ms, self.rec.now_ms()));
        op.process.clone_from(&self.process);
        op
    }

    pub(super) async fn acquire(&mut self, key: &str, ttl_ms: u64) -> Option<u64> {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/acquire"),
                Some(&AcquireRequest {
                    owner: self.name.clone(),
                    ttl_ms: Some(ttl_ms),
                    ..Default::default()
                }),
            )
            .await;
        let mut op = self.op(OpKind::Acquire, key, None, t, &a);
        op.ttl_ms = op.ttl_ms.or(Some(ttl_ms));
        let token = (a.outcome == Outcome::Ok).then_some(op.token).flatten();
        self.rec.push(op);
        token
    }

    async fn renew(&mut self, key: &str, token: u64, ttl_ms: u64) -> bool {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/renew"),
                Some(&RenewRequest {
                    token,
                    ttl_ms: Some(ttl_ms),
                }),
            )
            .await;
        let ok = a.outcome == Outcome::Ok;
        let mut op = self.op(OpKind::Renew, key, Some(token), t, &a);
        op.ttl_ms = op.ttl_ms.or(Some(ttl_ms));
        self.rec.push(op);
        ok
    }

    pub(super) async fn release(&mut self, key: &str, token: u64) {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/release"),
                Some(&ReleaseRequest::by_token(token)),
            )
            .await;
        let op = self.op(OpKind::Release, key, Some(token), t, &a);
        self.rec.push(op);
    }

    async fn read(&mut self, key: &str) {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::GET,
                &format!("/v1/locks/{key}"),
                None::<&()>,
            )
            .await;
        let op = self.op(OpKind::Read, key, None, t, &a);
        self.rec.push(op);
    }
}

/// TTL of mixer and probe grants.
const MIX_TTL_MS: u64 = 2_000;
/// TTL of fenced holders' grants; stalls are longer than this.
const FENCED_TTL_MS: u64 = 1_000;
/// TTL of the abandoner's grants, which it never renews nor releases.
const ABANDON_TTL_MS: u64 = 800;
/// Keys the abandoner cycles through.
const ABANDON_KEYS: usize = 4;
/// How often the watcher tries to take an abandoned key.
const WATCH_PERIOD: Duration = Duration::from_millis(40);
/// How long the watcher keeps trying before it gives an abandoned key up.
const WATCH_LIMIT: Duration = Duration::from_secs(15);
/// Per-request timeout: past it the outcome is unknown.
pub(super) const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
/// Probe period (about 20 Hz).
const PROBE_PERIOD: Duration = Duration::from_millis(50);

async fn mixer(mut c: Client, keys: usize, until: Instant) {
    let mut held: BTreeMap<String, u64> = BTreeMap::new();
    while Instant::now() < until {
        let key = format!("mix-{}", c.rng.gen_range(0..keys));
        let roll = c.rng.gen_range(0..10);
        match (roll, held.get(&key).copied()) {
            (0..=3, _) => {
                if let Some(token) = c.acquire(&key, MIX_TTL_MS).await {
                    held.insert(key, token);
                }
            }
            (4..=5, Some(token)) => {
                if !c.renew(&key, token, MIX_TTL_MS).await {
                    held.remove(&key);
                }
            }
            (6..=7, Some(token)) => {
                c.release(&key, token).await;
                held.remove(&key);
            }
            _ => c.read(&key).await,
        }
        tokio::time::sleep(Duration::from_millis(c.rng.gen_range(5..30))).await;
    }
}

/// Where a fenced holder writes: the resource itself, or its HTTP face in another process.
#[derive(Clone)]
enum ResourceLink {
    Local(Arc<Resource>),
    Remote(String),
}

impl ResourceLink {
    /// Tries a write; `None` when the resource could not be reached (nothing recorded).
    async fn write(&self, http: &reqwest::Client, key: &str, token: u64) -> Option<WriteAnswer> {
        match self {
            ResourceLink::Local(r) => Some(r.write(key, token)),
            ResourceLink::Remote(addr) => {
                let req = WriteRequest {
                    key: key.to_string(),
                    token,
                    owner: None,
                    invoke_ms: None,
                    client: None,
                };
                let resp = http
                    .post(format!("http://{addr}/write"))
                    .json(&req)
                    .send()
                    .await
                    .ok()?;
                resp.json().await.ok()
            }
        }
    }
}

/// Holds `fenced-*` keys and writes to the resource with the token, sometimes after
/// stalling past the lease, as a paused process would.
async fn fenced_holder(mut c: Client, keys: usize, resource: ResourceLink, until: Instant) {
    while Instant::now() < until {
        let key = format!("fenced-{}", c.rng.gen_range(0..keys));
        let Some(token) = c.acquire(&key, FENCED_TTL_MS).await else {
            tokio::time::sleep(Duration::from_millis(c.rng.gen_range(10..100))).await;
            continue;
        };
        for _ in 0..c.rng.gen_range(1..4) {
            let pause = if c.rng.gen_ratio(1, 5) {
                FENCED_TTL_MS + c.rng.gen_range(100..800)
            } else {
                c.rng.gen_range(5..100)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            c.write_resource(&resource, &key, token).await;
        }
        c.release(&key, token).await;
    }
}

/// Holds `fenced-*` keys for a few seconds each, renewing every third of the TTL and
/// writing every 100 ms. Runs in its own process, which the chaos script stops with
/// SIGSTOP for longer than the TTL: on waking up, its next write presents a token whose
/// lease has run out, and the resource must refuse it if a newer holder has written.
async fn pausable_holder(mut c: Client, keys: usize, resource: ResourceLink, until: Instant) {
    while Instant::now() < until {
        let key = format!("fenced-{}", c.rng.gen_range(0..keys));
        let Some(token) = c.acquire(&key, FENCED_TTL_MS).await else {
            tokio::time::sleep(Duration::from_millis(c.rng.gen_range(10..100))).await;
            continue;
        };
        let hold_until = Instant::now() + Duration::from_millis(c.rng.gen_range(1_000..3_000));
        let mut renewed = Instant::now();
        while Instant::now() < hold_until {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_resource(&resource, &key, token).await;
            if renewed.elapsed() >= Duration::from_millis(FENCED_TTL_MS / 3) {
                renewed = Instant::now();
                if !c.renew(&key, token, FENCED_TTL_MS).await {
                    break;
                }
            }
        }
        c.release(&key, token).await;
    }
}

/// Takes `abandon-*` keys and walks away; a watcher (another owner) tries every
/// [`WATCH_PERIOD`] until it gets the key, then releases it. Measures how soon an
/// abandoned lock is free again.
async fn abandoner(mut c: Client, mut watcher: Client, until: Instant) {
    let mut round = 0;
    while Instant::now() < until {
        let key = format!("abandon-{}", round % ABANDON_KEYS);
        round += 1;
        if c.acquire(&key, ABANDON_TTL_MS).await.is_none() {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        }
        let give_up = Instant::now() + WATCH_LIMIT;
        while Instant::now() < give_up {
            tokio::time::sleep(WATCH_PERIOD).await;
            if let Some(token) = watcher.acquire(&key, ABANDON_TTL_MS).await {
                watcher.release(&key, token).await;
                break;
            }
        }
    }
}

/// Probes in flight at most; each has its own key (`probe-N`), so that each key's history
/// stays sequential. Enough for every probe of a whole request timeout to hang (3 s at
/// 20 Hz): with 8, all slots hung on relays to a paused leader and the probe sent nothing
/// until it woke (seed 2026).
const PROBE_SLOTS: usize = 64;

/// Starts an acquire + release every [`PROBE_PERIOD`] on a free slot, without waiting for
/// the previous one: a probe stuck on a paused or cut-off node (until its request times
/// out) must not hide the writes that already succeed elsewhere, or the failover figure
/// measures the probe's timeout instead of the cluster.
async fn probe(mut c: Client, until: Instant) {
    let mut ticker = tokio::time::interval(PROBE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let busy: Vec<Arc<AtomicBool>> = (0..PROBE_SLOTS).map(|_| Arc::default()).collect();
    let mut in_flight = tokio::task::JoinSet::new();
    let mut next = 0;
    while Instant::now() < until {
        ticker.tick().await;
        while in_flight.try_join_next().is_some() {}
        let free = (0..PROBE_SLOTS)
            .map(|i| (next + i) % PROBE_SLOTS)
            .find(|&s| !busy[s].load(Ordering::Acquire));
        let Some(slot) = free else { continue };
        next = slot + 1;
        busy[slot].store(true, Ordering::Release);
        let (mut client, done) = (c.fork(), busy[slot].clone());
        in_flight.spawn(async move {
            let key = format!("probe-{slot}");
            if let Some(token) = client.acquire(&key, MIX_TTL_MS).await {
                client.release(&key, token).await;
            }
            done.store(false, Ordering::Release);
        });
    }
    while in_flight.join_next().await.is_some() {}
}

impl Client {
    async fn write_resource(&mut self, resource: &ResourceLink, key: &str, token: u64) {
        let t = self.rec.now_ms();
        let Some(answer) = resource.write(&self.http, key, token).await else {
            return;
        };
        let outcome = if answer.accepted {
            Outcome::Ok
        } else {
            Outcome::Fail
        };
        let mut op = Op::new(
            OpKind::ResourceWrite,
            key,
            &self.name,
            Some(token),
            t,
            self.rec.now_ms(),
            outcome,
        );
        op.seq = Some(answer.seq);
        self.rec.push(op);
    }
}

/// Runs this process's part of the workload for `settings.duration` and writes
/// `out/history-<role>.jsonl`; returns the number of operations recorded.
pub async fn run(settings: Settings) -> Result<usize, String> {
    let http = cluster_client(&settings)?
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .map_err(|e| e.to_string())?;
    let rec = Recorder::new(settings.epoch_ms);
    let until = Instant::now() + settings.duration;
    // Each role seeds its clients from its own stream.
    let mut seeds = StdRng::seed_from_u64(settings.seed ^ settings.role as u64);
    let mut client = |name: String| Client {
        http: http.clone(),
        endpoints: settings.endpoints.clone(),
        rng: StdRng::seed_from_u64(seeds.gen()),
        process: name.clone(),
        name,
        rec: rec.clone(),
    };
    let events = followers::Log::default();
    let exits = holders::Exits::default();
    let mut tasks = Vec::new();
    match settings.role {
        Role::Main => {
            let resource = Arc::new(Resource::new(settings.negative_control));
            let listener = tokio::net::TcpListener::bind(&settings.resource_addr)
                .await
                .map_err(|e| {
                    format!(
                        "cannot serve the resource on {}: {e}",
                        settings.resource_addr
                    )
                })?;
            let app = resource::router(resource.clone(), rec.clone());
            tokio::spawn(async move { axum::serve(listener, app).await });
            for i in 0..settings.mixers {
                tasks.push(tokio::spawn(mixer(
                    client(format!("mixer-{i}")),
                    settings.mix_keys,
                    until,
                )));
            }
            for i in 0..settings.fenced_holders {
                tasks.push(tokio::spawn(fenced_holder(
                    client(format!("holder-{i}")),
                    settings.fenced_keys,
                    ResourceLink::Local(resource.clone()),
                    until,
                )));
            }
            let watcher = client("watcher".into());
            tasks.push(tokio::spawn(abandoner(
                client("abandoner".into()),
                watcher,
                until,
            )));
            tasks.push(tokio::spawn(probe(client("probe".into()), until)));
            for i in 0..settings.waiters {
                tasks.push(tokio::spawn(waiters::waiter(
                    client(format!("waiter-{i}")),
                    until,
                )));
            }
            if settings.waiters > 0 {
                let watcher = client("delay-watcher".into());
                tasks.push(tokio::spawn(waiters::delayer(
                    client("delayer".into()),
                    watcher,
                    until,
                )));
            }
            if settings.guard_holders + settings.command_holders > 0 {
                // The relay records the client's requests; no whole-request timeout (it
                // sets its own per attempt).
                let upstream = cluster_client(&settings)?
                    .connect_timeout(Duration::from_millis(300))
                    .build()
                    .map_err(|e| e.to_string())?;
                let relay = relay::start(upstream, &settings.endpoints, rec.clone()).await?;
                let lib = holders::client(&relay)?;
                for i in 0..settings.guard_holders {
                    tasks.push(tokio::spawn(holders::guard_holder(
                        lib.clone(),
                        format!("guard-{i}"),
                        StdRng::seed_from_u64(seeds.gen()),
                        resource.clone(),
                        rec.clone(),
                        until,
                    )));
                }
                let cmd = holders::Command {
                    exe: std::env::current_exe().map_err(|e| e.to_string())?,
                    relay,
                    resource: settings.resource_addr.clone(),
                    epoch_ms: rec.epoch_ms(),
                };
                for i in 0..settings.command_holders {
                    tasks.push(tokio::spawn(holders::command_holder(
                        cmd.clone(),
                        format!("cmd-{i}"),
                        StdRng::seed_from_u64(seeds.gen()),
                        exits.clone(),
                        until,
                    )));
                }
            }
            if settings.follow_events {
                // A stream lives as long as the run: no whole-request timeout.
                let streams = cluster_client(&settings)?
                    .connect_timeout(Duration::from_millis(300))
                    .build()
                    .map_err(|e| e.to_string())?;
                for endpoint in &settings.endpoints {
                    for key in waiters::followed_keys() {
                        tasks.push(tokio::spawn(followers::follow(
                            streams.clone(),
                            endpoint.clone(),
                            key,
                            rec.clone(),
                            events.clone(),
                            until,
                        )));
                    }
                }
            }
        }
        Role::Pausable => {
            tasks.push(tokio::spawn(pausable_holder(
                client("pausable".into()),
                settings.fenced_keys,
                ResourceLink::Remote(settings.resource_addr.clone()),
                until,
            )));
        }
    }
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let exits = std::mem::take(&mut *exits.lock_unpoisoned());
    if !exits.is_empty() {
        println!("baton lock sessions by exit code: {exits:?}");
    }
    let ops = std::mem::take(&mut *rec.ops.lock_unpoisoned());
    std::fs::create_dir_all(&settings.out).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for op in &ops {
        text.push_str(&serde_json::to_string(op).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    let file = settings
        .out
        .join(format!("history-{}.jsonl", settings.role.name()));
    std::fs::write(file, text).map_err(|e| e.to_string())?;
    let received = std::mem::take(&mut *events.lock_unpoisoned());
    if !received.is_empty() {
        let mut text = String::new();
        for r in &received {
            text.push_str(&serde_json::to_string(r).map_err(|e| e.to_string())?);
            text.push('\n');
        }
        let file = settings
            .out
            .join(format!("events-{}.jsonl", settings.role.name()));
        std::fs::write(file, text).map_err(|e| e.to_string())?;
    }
    Ok(ops.len())
}
