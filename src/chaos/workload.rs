//! The chaos workload: client tasks against a real cluster, every operation recorded.
//!
//! Three kinds of clients run side by side on separate key ranges:
//! - **mixers** acquire, renew, release and read on `mix-*` keys, sending about a third
//!   of their requests to followers;
//! - **fenced holders** take `fenced-*` keys and write to an in-process [`Resource`]
//!   that keeps the highest token per key and rejects lower ones; they sometimes stall
//!   past their TTL before writing, so a stale holder must be refused by the resource;
//! - a **probe** does acquire + release on one key at about 20 Hz, to measure
//!   unavailability.
//!
//! Outcomes: 200 → `ok`; 409/4xx or `NO_LEADER` or a refused connection → `fail` (it did
//! not happen); a timeout, a dropped connection after sending, or `OUTCOME_UNKNOWN` →
//! `unknown` (it may have happened).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{json, Value};

use super::history::{Op, OpKind, Outcome};

/// Workload settings.
#[derive(Clone, Debug)]
pub struct Settings {
    /// API addresses of every node (`host:port`).
    pub endpoints: Vec<String>,
    pub duration: Duration,
    pub seed: u64,
    pub mixers: usize,
    pub mix_keys: usize,
    pub fenced_holders: usize,
    pub fenced_keys: usize,
    /// The resource ignores tokens (a control run the checker must catch).
    pub negative_control: bool,
    pub out: PathBuf,
}

/// The fenced resource: accepts a write only with a token at least the highest seen.
#[derive(Default)]
pub struct Resource {
    state: Mutex<(u64, BTreeMap<String, u64>)>,
    ignore_tokens: bool,
}

impl Resource {
    /// Tries a write; returns (accepted, acceptance sequence number).
    fn write(&self, key: &str, token: u64) -> (bool, u64) {
        let mut guard = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let (seq, highest) = &mut *guard;
        *seq += 1;
        let top = highest.entry(key.to_string()).or_insert(0);
        let ok = self.ignore_tokens || token >= *top;
        if ok {
            *top = (*top).max(token);
        }
        (ok, *seq)
    }
}

/// Shared recorder of completed operations.
#[derive(Clone)]
struct Recorder {
    start: Instant,
    ops: Arc<Mutex<Vec<Op>>>,
}

impl Recorder {
    fn now_ms(&self) -> u64 {
        self.start.elapsed().as_millis() as u64
    }

    fn push(&self, op: Op) {
        self.ops.lock().unwrap_or_else(|p| p.into_inner()).push(op);
    }
}

/// Milliseconds since the epoch of an RFC 3339 time in a JSON answer.
fn rfc3339_ms(v: &Value) -> Option<u64> {
    let t =
        time::OffsetDateTime::parse(v.as_str()?, &time::format_description::well_known::Rfc3339)
            .ok()?;
    u64::try_from(t.unix_timestamp_nanos() / 1_000_000).ok()
}

/// A client's view of one answer.
struct Answer {
    endpoint: String,
    outcome: Outcome,
    body: Value,
    error: Option<String>,
}

struct Client {
    http: reqwest::Client,
    endpoints: Vec<String>,
    rng: StdRng,
    name: String,
    rec: Recorder,
}

impl Client {
    /// Leader-agnostic: any endpoint; a third of requests go to a random one, the rest to
    /// the first endpoint of a per-client rotation.
    fn endpoint(&mut self) -> String {
        let i = self.rng.gen_range(0..self.endpoints.len());
        self.endpoints[i].clone()
    }

    async fn call(&mut self, method: reqwest::Method, path: &str, body: Option<Value>) -> Answer {
        let endpoint = self.endpoint();
        let url = format!("http://{endpoint}{path}");
        let mut req = self.http.request(method, url);
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(resp) => {
                let status = resp.status();
                let body: Value = resp.json().await.unwrap_or(Value::Null);
                let code = body["code"].as_str().map(str::to_string);
                let outcome = match (status.as_u16(), code.as_deref()) {
                    (200, _) => Outcome::Ok,
                    (503, Some("OUTCOME_UNKNOWN")) | (500, _) => Outcome::Unknown,
                    _ => Outcome::Fail,
                };
                Answer {
                    endpoint,
                    outcome,
                    body,
                    error: code.or_else(|| (!status.is_success()).then(|| status.to_string())),
                }
            }
            Err(e) => Answer {
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
            },
        }
    }

    fn op(&self, kind: OpKind, key: &str, token: Option<u64>, invoke_ms: u64, a: &Answer) -> Op {
        let token = token.or_else(|| a.body["token"].as_u64());
        Op {
            process: self.name.clone(),
            key: key.to_string(),
            kind,
            owner: Some(self.name.clone()),
            token,
            invoke_ms,
            complete_ms: self.rec.now_ms(),
            outcome: a.outcome,
            acquired_at_ms: rfc3339_ms(&a.body["acquired_at"]),
            expires_at_ms: rfc3339_ms(&a.body["expires_at"]),
            released: a.body["released"].as_bool(),
            at_ms: rfc3339_ms(&a.body["timestamp"]),
            seq: None,
            error: a.error.clone(),
            endpoint: Some(a.endpoint.clone()),
        }
    }

    async fn acquire(&mut self, key: &str, ttl_ms: u64) -> Option<u64> {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/acquire"),
                Some(json!({"owner": self.name, "ttl_ms": ttl_ms})),
            )
            .await;
        let op = self.op(OpKind::Acquire, key, None, t, &a);
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
                Some(json!({"token": token, "ttl_ms": ttl_ms})),
            )
            .await;
        let ok = a.outcome == Outcome::Ok;
        let op = self.op(OpKind::Renew, key, Some(token), t, &a);
        self.rec.push(op);
        ok
    }

    async fn release(&mut self, key: &str, token: u64) {
        let t = self.rec.now_ms();
        let a = self
            .call(
                reqwest::Method::POST,
                &format!("/v1/locks/{key}/release"),
                Some(json!({"token": token})),
            )
            .await;
        let op = self.op(OpKind::Release, key, Some(token), t, &a);
        self.rec.push(op);
    }

    async fn read(&mut self, key: &str) {
        let t = self.rec.now_ms();
        let a = self
            .call(reqwest::Method::GET, &format!("/v1/locks/{key}"), None)
            .await;
        let mut op = self.op(OpKind::Read, key, None, t, &a);
        if a.error.as_deref() == Some("LOCK_NOT_FOUND") {
            op.outcome = Outcome::Ok;
        }
        self.rec.push(op);
    }
}

/// TTL of mixer and probe grants.
const MIX_TTL_MS: u64 = 2_000;
/// TTL of fenced holders' grants; stalls are longer than this.
const FENCED_TTL_MS: u64 = 1_000;
/// Per-request timeout: past it the outcome is unknown.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(3);
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

async fn fenced_holder(mut c: Client, keys: usize, resource: Arc<Resource>, until: Instant) {
    while Instant::now() < until {
        let key = format!("fenced-{}", c.rng.gen_range(0..keys));
        let Some(token) = c.acquire(&key, FENCED_TTL_MS).await else {
            tokio::time::sleep(Duration::from_millis(c.rng.gen_range(10..100))).await;
            continue;
        };
        for _ in 0..c.rng.gen_range(1..4) {
            // Sometimes stall past the lease, as a paused process would.
            let pause = if c.rng.gen_ratio(1, 5) {
                FENCED_TTL_MS + c.rng.gen_range(100..800)
            } else {
                c.rng.gen_range(5..100)
            };
            tokio::time::sleep(Duration::from_millis(pause)).await;
            let t = c.rec.now_ms();
            let (accepted, seq) = resource.write(&key, token);
            let outcome = if accepted { Outcome::Ok } else { Outcome::Fail };
            let mut op = Op::new(
                OpKind::ResourceWrite,
                &key,
                &c.name,
                Some(token),
                t,
                c.rec.now_ms(),
                outcome,
            );
            op.seq = Some(seq);
            c.rec.push(op);
        }
        c.release(&key, token).await;
    }
}

async fn probe(mut c: Client, until: Instant) {
    let mut ticker = tokio::time::interval(PROBE_PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while Instant::now() < until {
        ticker.tick().await;
        if let Some(token) = c.acquire("probe", MIX_TTL_MS).await {
            c.release("probe", token).await;
        }
    }
}

/// Runs the workload for `settings.duration` and writes `out/history.jsonl`; returns the
/// number of operations recorded.
pub async fn run(settings: Settings) -> Result<usize, String> {
    let http = reqwest::Client::builder()
        .no_proxy()
        .timeout(REQUEST_TIMEOUT)
        .connect_timeout(Duration::from_millis(300))
        .build()
        .map_err(|e| e.to_string())?;
    let rec = Recorder {
        start: Instant::now(),
        ops: Arc::new(Mutex::new(Vec::new())),
    };
    let resource = Arc::new(Resource {
        ignore_tokens: settings.negative_control,
        ..Resource::default()
    });
    let until = Instant::now() + settings.duration;
    let mut seeds = StdRng::seed_from_u64(settings.seed);
    let mut client = |name: String| Client {
        http: http.clone(),
        endpoints: settings.endpoints.clone(),
        rng: StdRng::seed_from_u64(seeds.gen()),
        name,
        rec: rec.clone(),
    };
    let mut tasks = Vec::new();
    for i in 0..settings.mixers {
        tasks.push(tokio::spawn(mixer(
            client(format!("mixer-{i}")),
            settings.mix_keys,
            until,
        )));
    }
    for i in 0..settings.fenced_holders {
        let r = resource.clone();
        tasks.push(tokio::spawn(fenced_holder(
            client(format!("holder-{i}")),
            settings.fenced_keys,
            r,
            until,
        )));
    }
    tasks.push(tokio::spawn(probe(client("probe".into()), until)));
    for t in tasks {
        t.await.map_err(|e| e.to_string())?;
    }
    let ops = std::mem::take(&mut *rec.ops.lock().unwrap_or_else(|p| p.into_inner()));
    std::fs::create_dir_all(&settings.out).map_err(|e| e.to_string())?;
    let mut text = String::new();
    for op in &ops {
        text.push_str(&serde_json::to_string(op).map_err(|e| e.to_string())?);
        text.push('\n');
    }
    std::fs::write(settings.out.join("history.jsonl"), text).map_err(|e| e.to_string())?;
    Ok(ops.len())
}
