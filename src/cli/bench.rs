//! `baton bench`: closed-loop load against a running cluster; prints throughput,
//! latency percentiles, errors by code and the client's own CPU use.
//!
//! The logic lives in [`crate::bench`]; this file holds the flags, the live progress
//! line (stderr, only when it is a terminal) and the human-readable report. `--json`
//! prints the [`Report`] as one JSON object on stdout instead. Exit code 0 when at
//! least one operation succeeded (and, in `watch` mode, no event was lost or
//! duplicated), 1 otherwise (including when no endpoint answers).

use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use clap::Args;

use super::duration::{format_duration, parse_duration};
use crate::bench::procs::NodeUsage;
use crate::bench::report::{ConnectReport, WatchReport};
use crate::bench::stats::{LatencySummary, OpSummary};
use crate::bench::{Mode, Report, Settings, Target, Tick};

/// Most connections one bench process opens: ephemeral ports to one node run out
/// near 28,000 (Linux's default `ip_local_port_range`). The open-files limit is checked
/// at run time (`bench::limits`).
const MAX_CONNS: u32 = 100_000;
/// Microseconds per millisecond, for printing latencies.
const US_PER_MS: f64 = 1_000.0;
/// Erases the current terminal line (carriage return + ANSI "erase line").
const CLEAR_LINE: &str = "\r\x1b[2K";

/// Arguments of `baton bench`.
#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Comma-separated API addresses (host:port) [default: every node's `api` in --config].
    #[arg(long, value_delimiter = ',', value_name = "HOST:PORT,...")]
    pub endpoints: Vec<String>,
    /// Cluster description to take the endpoints from when --endpoints is not given.
    #[arg(long, env = "BATON_CONFIG", default_value = "cluster.toml")]
    pub config: PathBuf,
    /// What each connection does in its loop.
    #[arg(long, value_enum, default_value = "cycle")]
    pub mode: Mode,
    /// Concurrent closed loops, each with its own keep-alive HTTP/1.1 connection.
    #[arg(long, default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNS)))]
    pub conns: u32,
    /// Length of the measured window (500ms, 30s, 5m, 1h).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub duration: Duration,
    /// Load before the measured window that is not recorded.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub warmup: Duration,
    /// Lease of every acquire.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Which nodes the connections go to (the leader is found with GET /v1/cluster).
    #[arg(long, value_enum, default_value = "leader")]
    pub target: Target,
    /// Print one JSON object (stable field names) instead of the text report.
    #[arg(long)]
    pub json: bool,
    /// API key of a cluster with auth on; needs `lock` and `read` on the `bench-` keys.
    #[arg(long, env = "BATON_API_KEY", hide_env_values = true)]
    pub api_key: Option<String>,
    /// PEM file of the CA that signed the nodes' certificates (`https://` endpoints).
    #[arg(long, env = "BATON_CA_FILE", value_name = "PEM")]
    pub ca_file: Option<std::path::PathBuf>,
    /// `--mode watch`: keys the streams are spread over (at most --conns).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=i64::from(MAX_CONNS)))]
    pub keys: u32,
    /// `--mode watch`: writes a second (each changes one key: one event on each of its
    /// streams).
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
    pub rate: u32,
}

/// Runs `baton bench`; returns the process exit code.
pub fn run(args: BenchArgs) -> ExitCode {
    match bench(args) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<ExitCode> {
    let endpoints = super::resolve_endpoints(&args.endpoints, &args.config)?;
    let settings = Settings {
        endpoints,
        mode: args.mode,
        target: args.target,
        conns: usize::try_from(args.conns).context("--conns does not fit in usize")?,
        duration: args.duration,
        warmup: args.warmup,
        ttl: args.ttl,
        api_key: args.api_key,
        ca_file: args.ca_file,
        keys: usize::try_from(args.keys).context("--keys does not fit in usize")?,
        rate: args.rate,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let live = std::io::stderr().is_terminal();
    let report = runtime.block_on(crate::bench::run(&settings, move |tick: &Tick| {
        if live {
            eprint!("{CLEAR_LINE}{}", progress_line(tick));
            let _ = std::io::stderr().flush();
        }
    }));
    if live {
        eprint!("{CLEAR_LINE}");
    }
    let report = report?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", human(&report));
    }
    if report.totals.all.ops == 0 {
        eprintln!(
            "error: no request succeeded ({} errors)",
            report.totals.errors_total
        );
        return Ok(ExitCode::FAILURE);
    }
    if let Some(w) = report
        .watch
        .as_ref()
        .filter(|w| w.totals.lost + w.totals.duplicated > 0)
    {
        eprintln!(
            "error: {} events lost and {} duplicated",
            w.totals.lost, w.totals.duplicated
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// The live line: `[  3s measure]  12345 ops/s  errors 0 (total 0)`.
fn progress_line(t: &Tick) -> String {
    let phase = if t.warming_up { "warmup" } else { "measure" };
    format!(
        "[{:>4}s {phase:<7}] {:>9.0} ops/s  errors {} (total {})",
        t.elapsed.as_secs(),
        t.ops_per_sec,
        t.errors,
        t.errors_total
    )
}

fn ms(us: u64) -> String {
    format!("{:.2}ms", us as f64 / US_PER_MS)
}

fn latency_line(l: &LatencySummary) -> String {
    format!(
        "p50 {}  p90 {}  p99 {}  p99.9 {}  max {}",
        ms(l.p50),
        ms(l.p90),
        ms(l.p99),
        ms(l.p99_9),
        ms(l.max)
    )
}

fn op_line(name: &str, s: &OpSummary) -> String {
    format!(
        "  {name:<11} {:>10.1} ops/s  {}\n",
        s.ops_per_sec,
        latency_line(&s.latency_us)
    )
}

fn counts(map: &std::collections::BTreeMap<String, u64>) -> String {
    if map.is_empty() {
        return "none".to_string();
    }
    map.iter()
        .map(|(k, v)| format!("{k} {v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The text report.
fn human(r: &Report) -> String {
    let t = &r.totals;
    let conns = r
        .connections
        .iter()
        .map(|(addr, n)| format!("{addr} x{n}"))
        .collect::<Vec<_>>()
        .join(", ");
    let secs =
        |s: f64| Duration::try_from_secs_f64(s).map_or_else(|_| format!("{s}s"), format_duration);
    let mut out = format!(
        "baton bench: mode {} target {} conns {}, {} measured after {} warmup (run {})\n",
        r.mode.as_str(),
        r.target.as_str(),
        r.conns,
        secs(r.duration_s),
        secs(r.warmup_s),
        r.run_id
    );
    out += &format!(
        "  {:<11} n{} (connections: {conns})\n",
        "leader", r.leader_id
    );
    out += &format!(
        "  {:<11} {:>10.1} ops/s  ({} ops in {} requests)\n",
        "throughput", t.all.ops_per_sec, t.all.ops, t.all.requests
    );
    out += &format!(
        "  {:<11} {}  mean {}\n",
        "latency",
        latency_line(&t.all.latency_us),
        ms(t.all.latency_us.mean.round() as u64)
    );
    if t.by_op.len() > 1 {
        for (name, s) in &t.by_op {
            out += &op_line(name, s);
        }
    }
    if !t.refused.is_empty() {
        out += &format!(
            "  {:<11} {} (expected; counted as ops)\n",
            "refused",
            counts(&t.refused)
        );
    }
    out += &format!("  {:<11} {}\n", "errors", counts(&t.errors));
    if t.reconnects > 0 {
        out += &format!("  {:<11} {}\n", "reconnects", t.reconnects);
    }
    if let Some(w) = &r.watch {
        out += &watch_lines(w);
    }
    if let Some(c) = &r.connect {
        out += &connect_lines(c);
    }
    for n in &r.nodes {
        out += &node_line(n);
    }
    for b in &r.bounded_by {
        out += &format!("  {:<11} {b}\n", "bounded by");
    }
    let c = &r.client;
    out += &match (c.cpu_percent, c.cpu_seconds) {
        (Some(pct), Some(cpu)) => format!(
            "  {:<11} {pct:.1}% of one core ({cpu:.2}s user+sys over {:.2}s; {} cores)\n",
            "client cpu", c.wall_seconds, c.cores
        ),
        _ => format!("  {:<11} unknown (no /proc/self/stat)\n", "client cpu"),
    };
    if let Some(limit) = c.open_files_limit {
        out += &format!("  {:<11} {limit} open files\n", "client limit");
    }
    out
}

/// The streams of a watch run.
fn watch_lines(w: &WatchReport) -> String {
    let t = &w.totals;
    let mut out = format!(
        "  {:<11} {} of {} open on {} keys in {:.2}s (refused: {})\n",
        "streams",
        w.streams_open,
        w.streams,
        w.keys,
        w.open_s,
        counts(&w.streams_refused)
    );
    out += &format!(
        "  {:<11} {} writes at {}/s: {} of {} deliveries, lost {}, duplicated {}, unmatched {}, resets {}, closed early {}\n",
        "events", t.writes, w.rate, t.delivered, t.expected, t.lost, t.duplicated, t.unmatched, t.resets, t.closed_early
    );
    out += &format!(
        "  {:<11} {}\n",
        "from send",
        latency_line(&t.latency_from_send_us)
    );
    out += &format!(
        "  {:<11} {}  ({} before the ack)\n",
        "after ack",
        latency_line(&t.latency_after_ack_us),
        t.before_ack
    );
    out
}

/// The storm of a connect run.
fn connect_lines(c: &ConnectReport) -> String {
    let t = &c.totals;
    let all = t
        .all_served_ms
        .map_or("not all".to_string(), |ms| format!("all in {ms:.1}ms"));
    let mut out = format!(
        "  {:<11} {} of {} clients served ({all}), {} failed; {} connections open at the sample\n",
        "storm", t.served, t.clients, t.failed, t.open_at_sample
    );
    out += &format!("  {:<11} {}\n", "connected", latency_line(&t.connected_us));
    out += &format!("  {:<11} {}\n", "served", latency_line(&t.served_us));
    out
}

/// One node's RSS and descriptors.
fn node_line(n: &NodeUsage) -> String {
    let (Some(pid), Some(b)) = (n.pid, n.before) else {
        return format!(
            "  {:<11} {}: process not found on this machine\n",
            "node", n.api
        );
    };
    let mib = |kib: u64| kib as f64 / 1024.0;
    let mut out = format!(
        "  {:<11} {} (pid {pid}, {} conns): rss {:.1} MiB, {} fds before",
        "node",
        n.api,
        n.conns,
        mib(b.rss_kib),
        b.fds
    );
    if let Some(o) = n.opened {
        out += &format!("; {:.1} MiB, {} fds open", mib(o.rss_kib), o.fds);
    }
    if let Some(e) = n.end {
        out += &format!("; {:.1} MiB at the end", mib(e.rss_kib));
    }
    if let Some(per) = n.rss_per_conn_bytes {
        out += &format!("; {:.1} KiB/conn open", per as f64 / 1024.0);
    }
    if let Some(per) = n.rss_per_conn_end_bytes {
        out += &format!(", {:.1} KiB/conn at the end", per as f64 / 1024.0);
    }
    out + "\n"
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::stats::{Op, Outcome, Recorder};
    use crate::bench::ClientUsage;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: BenchArgs,
    }

    fn parse(args: &[&str]) -> Result<BenchArgs, clap::Error> {
        let argv = std::iter::once("bench").chain(args.iter().copied());
        Cli::try_parse_from(argv).map(|c| c.args)
    }

    #[test]
    fn defaults() {
        let a = parse(&[]).unwrap();
        assert!(a.endpoints.is_empty());
        assert_eq!(a.mode, Mode::Cycle);
        assert_eq!(a.target, Target::Leader);
        assert_eq!(a.conns, 16);
        assert_eq!(a.duration, Duration::from_secs(10));
        assert_eq!(a.warmup, Duration::from_secs(2));
        assert_eq!(a.ttl, Duration::from_secs(30));
        assert!(!a.json);
    }

    #[test]
    fn every_flag_parses() {
        let a = parse(&[
            "--endpoints",
            "127.0.0.1:7001,127.0.0.1:7002",
            "--mode",
            "contended",
            "--conns",
            "64",
            "--duration",
            "500ms",
            "--warmup",
            "0s",
            "--ttl",
            "5m",
            "--target",
            "follower",
            "--json",
        ])
        .unwrap();
        assert_eq!(a.endpoints, vec!["127.0.0.1:7001", "127.0.0.1:7002"]);
        assert_eq!(a.mode, Mode::Contended);
        assert_eq!(a.conns, 64);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.warmup, Duration::ZERO);
        assert_eq!(a.ttl, Duration::from_secs(300));
        assert_eq!(a.target, Target::Follower);
        assert!(a.json);
    }

    #[test]
    fn bad_values_are_refused() {
        for args in [
            &["--conns", "0"][..],
            &["--duration", "10"],
            &["--warmup", "2 s"],
            &["--mode", "write"],
            &["--target", "leaders"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
        let err = parse(&["--duration", "10"]).unwrap_err().to_string();
        assert!(err.contains("no unit"), "{err}");
    }

    fn report() -> Report {
        let mut rec = Recorder::default();
        rec.record(
            Op::Acquire,
            Outcome::Success,
            Some(Duration::from_micros(1_500)),
        );
        rec.record(
            Op::Acquire,
            Outcome::Refused("LOCK_HELD"),
            Some(Duration::from_micros(900)),
        );
        rec.record(
            Op::Release,
            Outcome::Success,
            Some(Duration::from_micros(1_200)),
        );
        rec.record(Op::Release, Outcome::Error("NO_LEADER".into()), None);
        Report {
            mode: Mode::Contended,
            target: Target::All,
            conns: 2,
            duration_s: 2.0,
            warmup_s: 0.5,
            ttl_ms: 30_000,
            run_id: "0123abcd".into(),
            leader_id: 1,
            connections: [
                ("127.0.0.1:7001".to_string(), 1),
                ("127.0.0.1:7002".to_string(), 1),
            ]
            .into_iter()
            .collect(),
            totals: rec.summarize(Duration::from_secs(2)),
            client: ClientUsage {
                cpu_seconds: Some(0.5),
                wall_seconds: 2.0,
                cpu_percent: Some(25.0),
                cores: 2,
                open_files_limit: Some(20_000),
            },
            nodes: vec![],
            watch: None,
            connect: None,
            bounded_by: vec![],
        }
    }

    #[test]
    fn text_report_has_every_number() {
        let text = human(&report());
        for want in [
            "mode contended target all conns 2, 2s measured after 500ms warmup (run 0123abcd)",
            "127.0.0.1:7001 x1, 127.0.0.1:7002 x1",
            "1.5 ops/s  (3 ops in 4 requests)",
            "p50 1.20ms",
            "max 1.50ms",
            "acquire",
            "release",
            "refused     LOCK_HELD 1",
            "errors      NO_LEADER 1",
            "25.0% of one core (0.50s user+sys over 2.00s; 2 cores)",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
    }

    #[test]
    fn json_field_names_are_stable() {
        let v = serde_json::to_value(report()).unwrap();
        for key in [
            "mode",
            "target",
            "conns",
            "duration_s",
            "warmup_s",
            "ttl_ms",
            "run_id",
            "leader_id",
            "connections",
            "requests",
            "ops",
            "ops_per_sec",
            "latency_us",
            "by_op",
            "refused",
            "errors_total",
            "errors",
            "reconnects",
            "client",
        ] {
            assert!(v.get(key).is_some(), "missing {key} in {v}");
        }
        assert_eq!(v["mode"], "contended");
        assert_eq!(v["target"], "all");
        for key in ["p50", "p90", "p99", "p99_9", "max", "mean"] {
            assert!(
                v["latency_us"].get(key).is_some(),
                "missing latency_us.{key}"
            );
        }
        assert_eq!(v["by_op"]["acquire"]["ops"], 2);
        assert_eq!(v["errors"]["NO_LEADER"], 1);
        assert_eq!(v["client"]["cpu_percent"], 25.0);
    }

    #[test]
    fn crowd_flags_parse_and_are_bounded() {
        let a = parse(&[
            "--mode", "watch", "--conns", "5000", "--keys", "10", "--rate", "50",
        ])
        .unwrap();
        assert_eq!(
            (a.mode, a.conns, a.keys, a.rate),
            (Mode::Watch, 5_000, 10, 50)
        );
        let a = parse(&["--mode", "connect"]).unwrap();
        assert_eq!((a.mode, a.keys, a.rate), (Mode::Connect, 1, 20));
        for args in [
            &["--keys", "0"][..],
            &["--rate", "0"],
            &["--conns", "100001"],
        ] {
            assert!(parse(args).is_err(), "{args:?} should be refused");
        }
    }

    #[test]
    fn crowd_reports_show_streams_storm_nodes_and_bounds() {
        use crate::bench::connect::ConnectTotals;
        use crate::bench::procs::ProcSample;
        use crate::bench::watch::WatchTotals;
        let mut r = report();
        r.watch = Some(WatchReport {
            streams: 10,
            streams_open: 9,
            streams_refused: [("TOO_MANY_STREAMS".to_string(), 1)].into_iter().collect(),
            keys: 2,
            rate: 20,
            open_s: 0.25,
            totals: WatchTotals {
                writes: 4,
                expected: 18,
                delivered: 18,
                before_ack: 3,
                ..WatchTotals::default()
            },
        });
        r.connect = Some(ConnectReport {
            totals: ConnectTotals {
                clients: 3,
                served: 3,
                all_served_ms: Some(12.5),
                open_at_sample: 3,
                ..ConnectTotals::default()
            },
        });
        r.nodes = vec![NodeUsage {
            api: "127.0.0.1:7001".into(),
            pid: Some(42),
            conns: 5,
            before: Some(ProcSample {
                rss_kib: 10_240,
                fds: 30,
            }),
            opened: Some(ProcSample {
                rss_kib: 10_340,
                fds: 35,
            }),
            rss_per_conn_bytes: Some(20_480),
            ..NodeUsage::default()
        }];
        r.bounded_by = vec!["api.max_event_streams of a node (503 TOO_MANY_STREAMS): 1".into()];
        let text = human(&r);
        for want in [
            "9 of 10 open on 2 keys in 0.25s (refused: TOO_MANY_STREAMS 1)",
            "4 writes at 20/s: 18 of 18 deliveries, lost 0, duplicated 0",
            "(3 before the ack)",
            "3 of 3 clients served (all in 12.5ms), 0 failed",
            "127.0.0.1:7001 (pid 42, 5 conns): rss 10.0 MiB, 30 fds before; 10.1 MiB, 35 fds open",
            "20.0 KiB/conn open",
            "bounded by  api.max_event_streams",
            "client limit 20000 open files",
        ] {
            assert!(text.contains(want), "missing {want:?} in\n{text}");
        }
        let v = serde_json::to_value(&r).unwrap();
        for key in [
            "streams_open",
            "lost",
            "duplicated",
            "latency_after_ack_us",
            "latency_from_send_us",
        ] {
            assert!(v["watch"].get(key).is_some(), "missing watch.{key} in {v}");
        }
        assert_eq!(v["connect"]["all_served_ms"], 12.5);
        assert_eq!(v["nodes"][0]["rss_per_conn_bytes"], 20_480);
        assert_eq!(v["client"]["open_files_limit"], 20_000);
    }

    #[test]
    fn progress_line_shows_phase_rate_and_errors() {
        let line = progress_line(&Tick {
            elapsed: Duration::from_secs(3),
            warming_up: false,
            ops_per_sec: 1234.4,
            errors: 2,
            errors_total: 5,
        });
        assert_eq!(line, "[   3s measure]      1234 ops/s  errors 2 (total 5)");
    }
}
