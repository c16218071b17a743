//! The runner: discover the leader, open the connections, run the workers for warmup +
//! duration, sample the client's CPU over the measured window, merge the records.
//!
//! Timeline of a run (all workers share one [`Plan`]):
//! ```text
//! discover ─ prepare (read key) ─ connect all ─┬─ warmup ─┬──── duration ────┬─ drain in-flight
//!                                          start   measure_from          end
//! ```
//! Connections are opened before the clock starts, so no recorded request pays for a
//! TCP handshake unless the server closed the connection. The progress callback gets a
//! [`Tick`] every [`PROGRESS_INTERVAL`] from start to end.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use hyper::Method;
use tokio::time::Instant;

use super::conn::{Conn, Dial};
use super::cpu::{percent_of_one_core, process_cpu_time};
use super::limits::{bounded_by, check_client_descriptors, raise_client_limit};
use super::load::{acquire_body, classify, read_key, release_body, token_of, Live, Plan, Worker};
use super::procs::{self, NodeUsage};
use super::report::{ClientUsage, Report};
use super::stats::{Outcome, Recorder, Totals};
use super::topology;
use super::{BenchError, Mode, Target};

/// How often the progress callback runs.
pub const PROGRESS_INTERVAL: Duration = Duration::from_secs(1);
/// The read key's lease outlives warmup + duration by this much, so reads never see it
/// expire mid-run.
const READ_KEY_SLACK: Duration = Duration::from_secs(30);
/// Length of the random run id (hex digits) in keys and owners.
const RUN_ID_HEX_DIGITS: usize = 8;

/// What to run; the CLI's flags, resolved.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `host:port` (or `http://host:port`) of the nodes to use.
    pub endpoints: Vec<String>,
    pub mode: Mode,
    pub target: Target,
    /// Concurrent closed loops, one TCP connection each.
    pub conns: usize,
    /// The measured window.
    pub duration: Duration,
    /// Load before the measured window that is not recorded.
    pub warmup: Duration,
    /// Lease of every acquire.
    pub ttl: Duration,
    /// API key of a cluster with auth on.
    pub api_key: Option<String>,
    /// CA certificates (PEM) trusted for `https://` endpoints; else the system's roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// `watch`: keys the streams are spread over (1 ..= conns).
    pub keys: usize,
    /// `watch`: writes a second.
    pub rate: u32,
}

impl Settings {
    /// Checks the settings; returns the TTL in milliseconds.
    fn validate(&self) -> Result<u64, BenchError> {
        let bad = |m: &str| Err(BenchError::Invalid(m.to_string()));
        if self.endpoints.is_empty() {
            return bad("at least one endpoint is required");
        }
        if self.conns == 0 {
            return bad("--conns must be at least 1");
        }
        if self.duration.is_zero() {
            return bad("--duration must be positive");
        }
        match u64::try_from(self.ttl.as_millis()) {
            Ok(0) | Err(_) => bad("--ttl must be between 1ms and u64::MAX ms"),
            Ok(ms) => Ok(ms),
        }
    }
}

/// Live progress, once per [`PROGRESS_INTERVAL`].
#[derive(Clone, Debug)]
pub struct Tick {
    /// Time since the load started (warmup included).
    pub elapsed: Duration,
    /// Whether the last interval began in the warmup.
    pub warming_up: bool,
    /// Requests that did not fail, per second, over the last interval.
    pub ops_per_sec: f64,
    /// Failed requests over the last interval.
    pub errors: u64,
    /// Failed requests since the start.
    pub errors_total: u64,
}

/// Runs one benchmark and returns its report; `on_tick` gets the live progress.
pub async fn run(
    settings: &Settings,
    on_tick: impl FnMut(&Tick) + Send + 'static,
) -> Result<Report, BenchError> {
    let ttl_ms = settings.validate()?;
    let endpoints: Vec<String> = settings
        .endpoints
        .iter()
        .map(|e| crate::wire::parse_endpoint(e).map_err(|e| BenchError::Invalid(e.to_string())))
        .collect::<Result<_, _>>()?;
    let dial = Dial {
        api_key: settings.api_key.clone(),
        tls: tls_connector(&endpoints, settings.ca_file.as_deref())?,
    };
    let client_limit = raise_client_limit();
    check_client_descriptors(settings.conns, client_limit)?;
    let topology = topology::discover(&endpoints, &dial, topology::LEADER_WAIT).await?;
    let targets = topology.targets(settings.target)?;
    let run_id = random_run_id();
    let ctx = Ctx {
        settings,
        ttl_ms,
        dial,
        targets,
        run_id,
        topology,
        client_limit,
    };
    match settings.mode {
        Mode::Watch => return super::crowd::watch(&ctx).await,
        Mode::Connect => return super::crowd::connect(&ctx).await,
        _ => {}
    }
    closed_loop(&ctx, on_tick).await
}

/// What a run found out before it started: the settings, resolved.
pub(super) struct Ctx<'a> {
    pub settings: &'a Settings,
    pub ttl_ms: u64,
    pub dial: Dial,
    pub topology: topology::Topology,
    /// The addresses connections are spread over.
    pub targets: Vec<String>,
    pub run_id: String,
    /// This process's open-files limit.
    pub client_limit: Option<u64>,
}

impl Ctx<'_> {
    /// The server processes of the endpoints and targets, each with the connections
    /// `per_target` sends it, sampled now.
    pub fn sample_nodes(&self, per_target: &BTreeMap<String, usize>) -> Vec<NodeUsage> {
        let mut apis = self.topology.endpoints.clone();
        for t in &self.targets {
            if !apis.contains(t) {
                apis.push(t.clone());
            }
        }
        procs::start_all(&apis, per_target)
    }

    /// The report of a finished run.
    pub fn report(
        &self,
        connections: BTreeMap<String, usize>,
        totals: Totals,
        client: ClientUsage,
        nodes: Vec<NodeUsage>,
    ) -> Report {
        let s = self.settings;
        Report {
            mode: s.mode,
            target: s.target,
            conns: s.conns,
            duration_s: s.duration.as_secs_f64(),
            warmup_s: s.warmup.as_secs_f64(),
            ttl_ms: self.ttl_ms,
            run_id: self.run_id.clone(),
            leader_id: self.topology.leader_id,
            connections,
            bounded_by: bounded_by(&totals.errors, self.client_limit),
            totals,
            client,
            nodes,
            watch: None,
            connect: None,
        }
    }

    /// The client's CPU use between two samples.
    pub fn client_usage(
        &self,
        cpu_before: Option<Duration>,
        cpu_after: Option<Duration>,
        wall: Duration,
    ) -> ClientUsage {
        let cpu = cpu_before.zip(cpu_after).map(|(b, a)| a.saturating_sub(b));
        ClientUsage {
            cpu_seconds: cpu.map(|c| c.as_secs_f64()),
            wall_seconds: (wall.as_secs_f64() * 1_000.0).round() / 1_000.0,
            cpu_percent: cpu.map(|c| percent_of_one_core(c, wall)),
            cores: std::thread::available_parallelism().map_or(1, |n| n.get()),
            open_files_limit: self.client_limit,
        }
    }
}

/// The closed-loop modes: every connection sends one request at a time.
async fn closed_loop(
    ctx: &Ctx<'_>,
    on_tick: impl FnMut(&Tick) + Send + 'static,
) -> Result<Report, BenchError> {
    let (settings, ttl_ms, dial) = (ctx.settings, ctx.ttl_ms, &ctx.dial);
    let (topology, targets, run_id) = (&ctx.topology, &ctx.targets, &ctx.run_id);

    let read_lock = if settings.mode == Mode::Read {
        let lease = settings.warmup + settings.duration + READ_KEY_SLACK;
        let lease_ms = u64::try_from(lease.as_millis())
            .unwrap_or(u64::MAX)
            .max(ttl_ms);
        Some(prepare_read_key(&topology.leader_api, dial, run_id, lease_ms).await?)
    } else {
        None
    };

    let mut nodes = ctx.sample_nodes(&super::connect::spread(targets, settings.conns));
    let mut conns = open_connections(targets, dial, settings.conns).await?;
    let mut connections = BTreeMap::new();
    for c in &conns {
        *connections.entry(c.addr().to_string()).or_insert(0) += 1;
    }
    nodes.iter_mut().for_each(NodeUsage::opened);

    let start = Instant::now();
    let measure_from = start + settings.warmup;
    let plan = Arc::new(Plan {
        mode: settings.mode,
        run_id: run_id.clone(),
        ttl_ms,
        measure_from,
        end: measure_from + settings.duration,
    });
    let live = Arc::new(Live::default());
    let workers: Vec<_> = conns
        .drain(..)
        .enumerate()
        .map(|(i, conn)| tokio::spawn(Worker::new(i, conn, plan.clone(), live.clone()).run()))
        .collect();
    let ticker = tokio::spawn(progress(start, plan.clone(), live.clone(), on_tick));

    tokio::time::sleep_until(plan.measure_from).await;
    let (cpu_before, wall_before) = (process_cpu_time(), Instant::now());
    tokio::time::sleep_until(plan.end).await;
    let (cpu_after, wall) = (process_cpu_time(), wall_before.elapsed());
    // Still open, and in queue mode still queued.
    nodes.iter_mut().for_each(NodeUsage::ended);

    let mut merged = Recorder::default();
    for w in workers {
        let rec = w.await.map_err(|e| BenchError::Task(e.to_string()))?;
        merged.merge(&rec);
    }
    ticker.abort();
    if let Some((mut conn, key, token)) = read_lock {
        // Best effort: the lease would end by itself anyway.
        let path = format!("/v1/locks/{key}/release");
        let _ = conn
            .send(Method::POST, &path, Some(release_body(token)))
            .await;
    }

    let client = ctx.client_usage(cpu_before, cpu_after, wall);
    Ok(ctx.report(
        connections,
        merged.summarize(settings.duration),
        client,
        nodes,
    ))
}

fn random_run_id() -> String {
    let id = format!("{:016x}", rand::random::<u64>());
    id[..RUN_ID_HEX_DIGITS].to_string()
}

/// Acquires the key every `read` worker reads; returns the connection, key and token
/// needed to release it afterwards.
pub(super) async fn prepare_read_key(
    leader: &str,
    dial: &Dial,
    run_id: &str,
    lease_ms: u64,
) -> Result<(Conn, String, u64), BenchError> {
    let setup = |m: String| BenchError::Setup(m);
    let mut conn = Conn::new(leader, dial).map_err(|e| setup(e.to_string()))?;
    let key = read_key(run_id);
    let path = format!("/v1/locks/{key}/acquire");
    let body = acquire_body(&format!("bench-{run_id}"), lease_ms);
    let result = conn.send(Method::POST, &path, Some(body)).await;
    match classify(result, None) {
        (Outcome::Success, Some(body)) => match token_of(&body) {
            Some(token) => Ok((conn, key, token)),
            None => Err(setup(format!("acquire {key}: the answer has no token"))),
        },
        (Outcome::Error(code), _) => Err(setup(format!(
            "acquire {key} with ttl_ms {lease_ms} failed: {code}"
        ))),
        (other, _) => Err(setup(format!("acquire {key}: unexpected {other:?}"))),
    }
}

/// The TLS client for `https://` endpoints (`None` when there are none): trusting the CA
/// file when given, else the system's roots.
fn tls_connector(
    endpoints: &[String],
    ca_file: Option<&std::path::Path>,
) -> Result<Option<tokio_rustls::TlsConnector>, BenchError> {
    if !endpoints
        .iter()
        .any(|e| crate::wire::endpoint_authority(e).1)
    {
        return Ok(None);
    }
    let roots = match ca_file {
        Some(path) => crate::tls::root_store(path)
            .map_err(|e| BenchError::Invalid(format!("--ca-file: {e}")))?,
        None => {
            let mut roots = rustls::RootCertStore::empty();
            let found = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(found.certs);
            roots
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Some(tokio_rustls::TlsConnector::from(Arc::new(config))))
}

/// Opens `n` connections, number `i` to `targets[i % len]`, all at once.
async fn open_connections(
    targets: &[String],
    dial: &Dial,
    n: usize,
) -> Result<Vec<Conn>, BenchError> {
    if targets.is_empty() {
        return Err(BenchError::Connect("no address to connect to".into()));
    }
    let opening = (0..n).map(|i| async move {
        let mut conn = Conn::new(&targets[i % targets.len()], dial)?;
        conn.connect().await?;
        Ok::<Conn, super::conn::TransportError>(conn)
    });
    futures::future::join_all(opening)
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| BenchError::Connect(e.to_string()))
}

/// Calls `on_tick` every [`PROGRESS_INTERVAL`] until the plan's end.
async fn progress(
    start: Instant,
    plan: Arc<Plan>,
    live: Arc<Live>,
    mut on_tick: impl FnMut(&Tick) + Send + 'static,
) {
    let mut interval = tokio::time::interval_at(start + PROGRESS_INTERVAL, PROGRESS_INTERVAL);
    let (mut last_requests, mut last_errors, mut last_at) = (0u64, 0u64, start);
    loop {
        let now = interval.tick().await;
        if now > plan.end {
            return;
        }
        let requests = live.requests.load(Ordering::Relaxed);
        let errors = live.errors.load(Ordering::Relaxed);
        let secs = now.duration_since(last_at).as_secs_f64().max(f64::EPSILON);
        let ok = (requests - last_requests).saturating_sub(errors - last_errors);
        on_tick(&Tick {
            elapsed: now.duration_since(start),
            // The interval just measured: it began before the window opened.
            warming_up: last_at < plan.measure_from,
            ops_per_sec: ok as f64 / secs,
            errors: errors - last_errors,
            errors_total: errors,
        });
        (last_requests, last_errors, last_at) = (requests, errors, now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            endpoints: vec!["127.0.0.1:7001".into()],
            mode: Mode::Cycle,
            target: Target::Leader,
            conns: 4,
            duration: Duration::from_secs(1),
            warmup: Duration::ZERO,
            ttl: Duration::from_secs(30),
            api_key: None,
            ca_file: None,
            keys: 1,
            rate: 20,
        }
    }

    #[test]
    fn valid_settings_give_the_ttl_in_ms() {
        assert_eq!(settings().validate().unwrap(), 30_000);
    }

    /// A change to valid settings and the flag its error must name.
    type Case = (fn(&mut Settings), &'static str);

    #[test]
    fn invalid_settings_say_which_flag() {
        let cases: [Case; 4] = [
            (|s| s.endpoints.clear(), "endpoint"),
            (|s| s.conns = 0, "--conns"),
            (|s| s.duration = Duration::ZERO, "--duration"),
            (|s| s.ttl = Duration::from_micros(10), "--ttl"),
        ];
        for (change, flag) in cases {
            let mut s = settings();
            change(&mut s);
            let err = s.validate().unwrap_err().to_string();
            assert!(err.contains(flag), "{err}");
        }
    }

    #[test]
    fn run_ids_are_short_hex() {
        let id = random_run_id();
        assert_eq!(id.len(), RUN_ID_HEX_DIGITS);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit()));
    }
}
