//! The runners of the crowded modes, `watch` ([`super::watch`]) and `connect`
//! ([`super::connect`]): the order of their steps, the node samples between them, and
//! their reports. The mechanics and the arithmetic live in those modules.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use hyper::Method;
use tokio::sync::watch as signal;
use tokio::time::Instant;

use super::conn::Conn;
use super::cpu::process_cpu_time;
use super::limits::bounded_by;
use super::load::release_body;
use super::procs::NodeUsage;
use super::report::{ConnectReport, Report, WatchReport};
use super::run::{prepare_read_key, Ctx};
use super::watch::{self as w, WritePlan};
use super::{connect as c, BenchError};

/// A connect storm's read key is held this long: far beyond any storm.
const CONNECT_KEY_LEASE_MS: u64 = 120_000;

/// `--mode watch`: open the streams, write for warmup + duration, drain, tally.
pub async fn watch(ctx: &Ctx<'_>) -> Result<Report, BenchError> {
    let s = ctx.settings;
    let interval = w::validate(s.conns, s.keys, s.rate)?;
    let keys: Vec<String> = (0..s.keys).map(|j| w::key_name(&ctx.run_id, j)).collect();
    let targets = &ctx.targets;

    // Where each stream goes, before any is open: the nodes' "before" sample.
    let mut planned: BTreeMap<String, usize> = BTreeMap::new();
    for i in 0..s.conns {
        let (_, t) = w::assign(i, keys.len(), targets.len());
        *planned.entry(targets[t].clone()).or_insert(0) += 1;
    }
    let mut nodes = ctx.sample_nodes(&planned);

    let (stop_tx, stop_rx) = signal::channel(false);
    let received_total = Arc::new(AtomicU64::new(0));
    let opening = Instant::now();
    let (open, refused) = w::open_all(
        s.conns,
        &keys,
        targets,
        &ctx.dial,
        &stop_rx,
        &received_total,
    )
    .await;
    let open_s = opening.elapsed().as_secs_f64();
    let mut connections: BTreeMap<String, usize> = BTreeMap::new();
    for o in &open {
        *connections.entry(targets[o.target].clone()).or_insert(0) += 1;
    }
    // Streams that opened, per node and per key, for the samples and the drain.
    for n in &mut nodes {
        n.conns = connections.get(&n.api).copied().unwrap_or(0);
    }
    nodes.iter_mut().for_each(NodeUsage::opened);
    if open.is_empty() {
        let detail = refused
            .iter()
            .map(|(k, n)| format!("{k} {n}"))
            .collect::<Vec<_>>()
            .join(", ");
        return Err(BenchError::Connect(format!("no stream opened: {detail}")));
    }

    let writer = Conn::new(&ctx.topology.leader_api, &ctx.dial)
        .map_err(|e| BenchError::Connect(e.to_string()))?;
    let start = Instant::now();
    let plan = WritePlan {
        keys: keys.clone(),
        owner: format!("bench-{}-writer", ctx.run_id),
        ttl_ms: ctx.ttl_ms,
        interval,
        measure_from: start + s.warmup,
        end: start + s.warmup + s.duration,
    };
    let cpu_at_start = process_cpu_time();
    let wall_start = Instant::now();
    let (mut writer, written) = w::write(writer, &plan).await;

    // A refused stream delivers nothing: count the streams that opened.
    let expected = w::expected_deliveries(&written.writes, &open_per_key_of(&open));
    w::drain(&received_total, expected).await;
    let (cpu_after, wall) = (process_cpu_time(), wall_start.elapsed());
    nodes.iter_mut().for_each(NodeUsage::ended);

    let _ = stop_tx.send(true);
    let mut logs = Vec::with_capacity(open.len());
    for o in open {
        logs.push(o.task.await.map_err(|e| BenchError::Task(e.to_string()))?);
    }
    // Best effort: the leases would end by themselves.
    for (j, token) in written.held.iter().enumerate() {
        if let Some(token) = token {
            let path = format!("/v1/locks/{}/release", keys[j]);
            let _ = writer
                .send(Method::POST, &path, Some(release_body(*token)))
                .await;
        }
    }

    let totals = w::tally(&written.writes, &logs);
    let client = ctx.client_usage(cpu_at_start, cpu_after, wall);
    let mut report = ctx.report(
        connections,
        written.recorder.summarize(s.duration),
        client,
        nodes,
    );
    let mut failures = refused.clone();
    for (k, n) in &report.totals.errors {
        *failures.entry(k.clone()).or_insert(0) += n;
    }
    report.bounded_by = bounded_by(&failures, ctx.client_limit);
    report.watch = Some(WatchReport {
        streams: s.conns,
        streams_open: logs.len(),
        streams_refused: refused,
        keys: keys.len(),
        rate: s.rate,
        open_s: (open_s * 1_000.0).round() / 1_000.0,
        totals,
    });
    Ok(report)
}

/// Streams that opened, per key index.
fn open_per_key_of(open: &[w::OpenStream]) -> Vec<u64> {
    let mut v = Vec::new();
    for o in open {
        if v.len() <= o.key {
            v.resize(o.key + 1, 0);
        }
        v[o.key] += 1;
    }
    v
}

/// `--mode connect`: the storm, a sample with every client connected and idle, done.
pub async fn connect(ctx: &Ctx<'_>) -> Result<Report, BenchError> {
    let s = ctx.settings;
    let lease_ms = CONNECT_KEY_LEASE_MS.max(ctx.ttl_ms);
    let (mut holder, key, token) =
        prepare_read_key(&ctx.topology.leader_api, &ctx.dial, &ctx.run_id, lease_ms).await?;
    let connections = c::spread(&ctx.targets, s.conns);
    let mut nodes = ctx.sample_nodes(&connections);

    let (cpu_before, wall_start) = (process_cpu_time(), Instant::now());
    let path = format!("/v1/locks/{key}");
    let (conns, arrivals) = c::storm(&ctx.targets, &ctx.dial, s.conns, &path).await?;
    let (cpu_after, wall) = (process_cpu_time(), wall_start.elapsed());
    // Per connection means per connection still open: a node closes idle ones at its
    // header read timeout, and evicts them at api.max_connections.
    let mut open: BTreeMap<&str, usize> = BTreeMap::new();
    for c in conns.iter().filter(|c| c.is_open()) {
        *open.entry(c.addr()).or_insert(0) += 1;
    }
    let open_at_sample = open.values().sum();
    for n in &mut nodes {
        n.conns = open.get(n.api.as_str()).copied().unwrap_or(0);
        n.opened();
    }
    drop(conns);
    let _ = holder
        .send(
            Method::POST,
            &format!("/v1/locks/{key}/release"),
            Some(release_body(token)),
        )
        .await;

    let (mut totals, recorder) = c::tally(&arrivals);
    totals.open_at_sample = open_at_sample;
    let client = ctx.client_usage(cpu_before, cpu_after, wall);
    let mut report = ctx.report(connections, recorder.summarize(wall), client, nodes);
    report.connect = Some(ConnectReport { totals });
    Ok(report)
}
