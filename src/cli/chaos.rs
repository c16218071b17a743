//! `baton chaos check DIR` (hidden): check a chaos run's history and write its verdict.
//!
//! Reads `DIR/history.jsonl` (and the run's side files, see [`crate::chaos::report`]),
//! runs every check of [`crate::chaos::check`], writes `DIR/results.json` (`valid`, `ops`,
//! `ops_by_outcome`, `faults`, `failover_ms`, `violations`) and prints a short summary
//! ending with `N passed, N failed` (checks). Exit code 0 when the history is valid, 1 when it is not, 2 when it cannot be
//! read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::chaos::{
    check, deadlines, events, history, holders, leases, linearize, queue, report, workload,
};

/// Arguments of `baton chaos`.
#[derive(Debug, Args)]
pub struct ChaosArgs {
    #[command(subcommand)]
    pub command: ChaosCommand,
}

/// Subcommands of `baton chaos`.
#[derive(Debug, Subcommand)]
pub enum ChaosCommand {
    /// Run the client workload against a cluster and write DIR/history.jsonl.
    Workload {
        /// Comma-separated API addresses of every node.
        #[arg(long, value_delimiter = ',')]
        endpoints: Vec<String>,
        /// How long to run, in seconds.
        #[arg(long, default_value_t = 60)]
        duration: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// The fenced resource ignores tokens (the checker must catch it).
        #[arg(long)]
        negative_control: bool,
        /// Which part of the workload this process runs.
        #[arg(long, value_enum, default_value = "main")]
        role: workload::Role,
        /// Where the main process serves the fenced resource (and the pausable one finds it).
        #[arg(long, default_value = "127.0.0.1:7900")]
        resource: String,
        /// Wall-clock ms since the Unix epoch that is time 0 of the history (shared by
        /// every workload process of a run); default: this process's start.
        #[arg(long)]
        epoch_ms: Option<u64>,
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
        /// API key of a cluster with auth on (the workload needs `admin=*`).
        #[arg(long, hide_env_values = true)]
        api_key: Option<String>,
        /// PEM CA file for `https://` endpoints.
        #[arg(long)]
        ca_file: Option<PathBuf>,
    },
    /// The child `baton lock` runs in the workload: write BATON_TOKEN on BATON_KEY to the
    /// fenced resource every 100 ms, with BATON_OWNER and the send time on the run's clock.
    Append {
        /// The fenced resource's HTTP address.
        #[arg(long)]
        resource: String,
        /// Wall-clock ms since the Unix epoch that is time 0 of the run's history.
        #[arg(long)]
        epoch_ms: u64,
        /// How long to keep writing, in ms.
        #[arg(long)]
        for_ms: u64,
    },
    /// Check DIR/history.jsonl and write DIR/results.json.
    Check {
        /// The run's output directory.
        dir: PathBuf,
    },
}

/// Runs `baton chaos`.
pub fn run(args: ChaosArgs) -> ExitCode {
    match args.command {
        ChaosCommand::Check { dir } => check_dir(&dir),
        ChaosCommand::Append {
            resource,
            epoch_ms,
            for_ms,
        } => {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(holders::append(&resource, epoch_ms, for_ms)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
        ChaosCommand::Workload {
            endpoints,
            duration,
            seed,
            negative_control,
            role,
            resource,
            epoch_ms,
            out,
            api_key,
            ca_file,
        } => {
            let settings = workload::Settings {
                endpoints,
                duration: std::time::Duration::from_secs(duration),
                seed,
                role,
                resource_addr: resource,
                epoch_ms,
                mixers: 4,
                mix_keys: 32,
                fenced_holders: 3,
                fenced_keys: 2,
                waiters: 4,
                follow_events: true,
                guard_holders: 2,
                command_holders: 2,
                negative_control,
                out,
                api_key,
                ca_file,
            };
            let rt = match tokio::runtime::Runtime::new() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(2);
                }
            };
            match rt.block_on(workload::run(settings)) {
                Ok(n) => {
                    println!("{n} operations recorded");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

fn check_dir(dir: &std::path::Path) -> ExitCode {
    let ops = match history::read_dir(dir) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let run = match report::build(dir, &ops) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let (minority, nodes): (Vec<_>, Vec<_>) = run
        .violations
        .iter()
        .cloned()
        .partition(|v| v.rule == "minority_side_write");
    let received = match events::read_dir(dir) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let abandoned = leases::check_abandoned_locks(&ops);
    let linear = linearize::check_linearizable(&ops);
    let streams = events::check_events(&received, &ops);
    let queued = queue::check_queue(&streams.reference, &ops);
    let deadlines = deadlines::check_safe_deadlines(&ops);
    let checks: [(&str, Vec<check::Violation>); 12] = [
        ("token order", check::check_token_order(&ops)),
        (
            "lease overlap (cluster time)",
            check::check_lease_overlap(&ops),
        ),
        (
            "lease not cut short (client time)",
            leases::check_lease_not_cut_short(&ops),
        ),
        ("abandoned locks freed", abandoned.violations.clone()),
        ("fenced resource", check::check_resource(&ops)),
        (
            "client holders stop at the safe deadline",
            deadlines.violations.clone(),
        ),
        ("lock-delay respected", check::check_lock_delay(&ops)),
        ("queue order, deadlines, orphans", queued.violations.clone()),
        (
            "events gap-free, repeat-free, agree",
            streams.violations.clone(),
        ),
        ("linearizable per key", linear.violations.clone()),
        ("no minority-side writes", minority),
        ("replicas equal, no node panicked", nodes),
    ];
    let violations: Vec<&check::Violation> = checks.iter().flat_map(|(_, v)| v).collect();
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_kind: BTreeMap<String, u64> = BTreeMap::new();
    for op in &ops {
        *by_outcome
            .entry(format!("{:?}", op.outcome).to_lowercase())
            .or_default() += 1;
        let kind = match (op.kind, op.wait_ms.is_some(), op.lock_delay_ms.is_some()) {
            (history::OpKind::Acquire, true, _) => "waiting_acquire".to_string(),
            (history::OpKind::Acquire, _, true) => "delayed_acquire".to_string(),
            (history::OpKind::ResourceWrite, ..) if op.client.is_some() => {
                format!("resource_write_{}", op.client.map_or("", |c| c.as_str()))
            }
            (kind, ..) => format!("{kind:?}").to_lowercase(),
        };
        *by_kind.entry(kind).or_default() += 1;
    }
    let orphan_end = report::percentiles(&queued.orphan_end_after_ttl_ms);
    let failover = report::p50_max(&run.failover_ms);
    let freed = report::percentiles(&abandoned.freed_after_ms);
    let results = json!({
        "valid": violations.is_empty(),
        "ops": ops.len(),
        "ops_by_outcome": by_outcome,
        "ops_by_kind": by_kind,
        "queue": {
            "queued": queued.queued,
            "handoffs": queued.handoffs,
            "wait_timeouts": queued.wait_timeouts,
            "wait_cancels": queued.wait_cancels,
            "orphan_grants": queued.orphan_grants,
            "orphan_end_after_ttl_ms": orphan_end,
        },
        "events": {
            "received": streams.received,
            "followers": streams.followers,
            "reconnects": streams.reconnects,
            "resets": streams.resets,
        },
        "client_holders": {
            "sessions": &deadlines.sessions,
            "writes": &deadlines.writes,
            "refused_writes": deadlines.refused,
            "min_slack_before_deadline_ms": deadlines.min_slack_ms,
        },
        "faults": run.faults,
        "minority_side_writes": run.minority_side_writes,
        "failover_ms": failover.map(|(p50, max)| json!({"p50": p50, "max": max, "samples": run.failover_ms.len()})),
        "linearizability": {
            "keys_checked": linear.keys_checked,
            "ops_checked": linear.ops_checked,
            "inconclusive_keys": &linear.inconclusive_keys,
            "keys_outside_model": &linear.keys_outside_model,
        },
        "abandoned_locks": {
            "freed_after_ttl_ms": freed,
            "not_freed": abandoned.not_freed,
        },
        "violations": violations.iter().map(|v| json!({
            "rule": v.rule,
            "message": v.message,
            "ops": v.ops.iter().map(|&i| json!({"index": i, "op": ops[i]})).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
    });
    let path = dir.join("results.json");
    let text =
        serde_json::to_string_pretty(&results).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    if let Err(e) = std::fs::write(&path, text) {
        eprintln!("error: cannot write {}: {e}", path.display());
        return ExitCode::from(2);
    }
    println!("{} operations: {by_outcome:?}", ops.len());
    println!("operations by kind: {by_kind:?}");
    println!("faults: {:?}", run.faults);
    println!(
        "queue: {} queued, {} handoffs, {} wait timeouts, {} wait cancels, {} orphan grants",
        queued.queued,
        queued.handoffs,
        queued.wait_timeouts,
        queued.wait_cancels,
        queued.orphan_grants
    );
    if let Some(o) = &orphan_end {
        println!(
            "orphan grant ended after its TTL: p50 {} ms, p99 {} ms, max {} ms ({} samples)",
            o.p50, o.p99, o.max, o.samples
        );
    }
    println!(
        "events: {} followers, {} reconnects, {} resets, received {:?}",
        streams.followers, streams.reconnects, streams.resets, streams.received
    );
    println!(
        "client holders: sessions {:?}, writes {:?} ({} refused by the resource); closest write to its safe deadline (ms before) {:?}",
        deadlines.sessions, deadlines.writes, deadlines.refused, deadlines.min_slack_ms
    );
    println!("minority-side writes: {}", run.minority_side_writes);
    if let Some((p50, max)) = failover {
        println!(
            "leader fault -> first successful write: p50 {p50} ms, max {max} ms ({} samples)",
            run.failover_ms.len()
        );
    }
    if let Some(f) = &freed {
        println!(
            "abandoned lock free after its TTL: p50 {} ms, p99 {} ms, max {} ms ({} samples, {} not taken over)",
            f.p50, f.p99, f.max, f.samples, abandoned.not_freed
        );
    }
    println!(
        "linearizability: {} keys, {} operations checked, {} inconclusive {:?}; left to the queue, lock-delay and event checks: {:?}",
        linear.keys_checked,
        linear.ops_checked,
        linear.inconclusive_keys.len(),
        linear.inconclusive_keys,
        linear.keys_outside_model
    );
    for v in &violations {
        println!("VIOLATION {}: {} (ops {:?})", v.rule, v.message, v.ops);
    }
    let failed = checks.iter().filter(|(_, v)| !v.is_empty()).count();
    for (name, v) in &checks {
        println!(
            "check {name}: {}",
            if v.is_empty() { "ok" } else { "FAILED" }
        );
    }
    println!("results in {}", path.display());
    println!("{} passed, {failed} failed", checks.len() - failed);
    if violations.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
