//! `baton chaos check DIR` (hidden): check a chaos run's history and write its verdict.
//!
//! Reads `DIR/history.jsonl`, runs every check of [`crate::chaos::check`], writes
//! `DIR/results.json` (`valid`, `ops`, `ops_by_outcome`, `violations`) and prints a short
//! summary. Exit code 0 when the history is valid, 1 when it is not, 2 when it cannot be
//! read.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::json;

use crate::chaos::{check, history, workload};

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
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
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
        ChaosCommand::Workload {
            endpoints,
            duration,
            seed,
            negative_control,
            out,
        } => {
            let settings = workload::Settings {
                endpoints,
                duration: std::time::Duration::from_secs(duration),
                seed,
                mixers: 4,
                mix_keys: 32,
                fenced_holders: 3,
                fenced_keys: 2,
                negative_control,
                out,
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
    let ops = match history::read(&dir.join("history.jsonl")) {
        Ok(ops) => ops,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let violations = check::check_all(&ops);
    let mut by_outcome: BTreeMap<String, u64> = BTreeMap::new();
    for op in &ops {
        *by_outcome
            .entry(format!("{:?}", op.outcome).to_lowercase())
            .or_default() += 1;
    }
    let results = json!({
        "valid": violations.is_empty(),
        "ops": ops.len(),
        "ops_by_outcome": by_outcome,
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
    println!("{} operations checked: {by_outcome:?}", ops.len());
    for v in &violations {
        println!("VIOLATION {}: {} (ops {:?})", v.rule, v.message, v.ops);
    }
    if violations.is_empty() {
        println!("history valid; results in {}", path.display());
        ExitCode::SUCCESS
    } else {
        println!(
            "history INVALID: {} violations; results in {}",
            violations.len(),
            path.display()
        );
        ExitCode::from(1)
    }
}
