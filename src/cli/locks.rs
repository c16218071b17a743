//! `baton acquire | renew | release | get | ls | validate | status`: one client call
//! each, for scripts. Human output by default, `--json` for machines; exit codes in
//! [`super::exit`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::duration::parse_duration;
use super::exit;
use super::ClientArgs;
use crate::client::{Client, ClientError, Granted, LockInfo};

/// The one-call client commands.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Take a lock (waiting up to --wait in its queue); prints the token.
    Acquire {
        key: String,
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Owner name [default: HOSTNAME-PID].
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Extend the lease held under TOKEN.
    Renew {
        key: String,
        token: u64,
        /// New lease length [default: the grant's].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Release the lock held under TOKEN.
    Release {
        key: String,
        token: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the live lock on KEY (exit 3 when there is none).
    Get {
        key: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// List live locks.
    Ls {
        /// Only keys starting with this.
        #[arg(long, default_value = "")]
        prefix: String,
        /// Most locks to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Is TOKEN the live holder of KEY right now? (exit 3 when not)
    Validate {
        key: String,
        token: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the cluster as a node sees it.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl LockCommand {
    fn client_args(&self) -> &ClientArgs {
        match self {
            LockCommand::Acquire { client, .. }
            | LockCommand::Renew { client, .. }
            | LockCommand::Release { client, .. }
            | LockCommand::Get { client, .. }
            | LockCommand::Ls { client, .. }
            | LockCommand::Validate { client, .. }
            | LockCommand::Status { client } => client,
        }
    }
}

/// Output of one command: what to print and the exit code.
struct Outcome {
    human: String,
    json: Value,
    code: u8,
}

/// Runs one command; returns the process exit code.
pub fn run(cmd: LockCommand) -> ExitCode {
    let args = cmd.client_args();
    let json_out = args.json;
    let client = match args.connect() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton: {e:#}");
            return ExitCode::from(exit::ERROR);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baton: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    match runtime.block_on(call(&client, cmd)) {
        Ok(out) => {
            if json_out {
                println!("{}", out.json);
            } else if !out.human.is_empty() {
                println!("{}", out.human);
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            if json_out {
                println!("{}", json!({"error": e.to_string()}));
            }
            eprintln!("baton: {e}");
            ExitCode::from(exit::for_client_error(&e))
        }
    }
}

async fn call(client: &Client, cmd: LockCommand) -> Result<Outcome, ClientError> {
    Ok(match cmd {
        LockCommand::Acquire {
            key,
            ttl,
            wait,
            owner,
            ..
        } => {
            let owner = owner.unwrap_or_else(super::lock::default_owner);
            granted(client.acquire(&key, &owner, ttl, wait).await?)
        }
        LockCommand::Renew {
            key, token, ttl, ..
        } => granted(client.renew(&key, token, ttl).await?),
        LockCommand::Release { key, token, .. } => {
            let r = client.release(&key, token).await?;
            let human = match (&r.released, &r.reason) {
                (true, _) => format!("released {key}"),
                (false, Some(reason)) => format!("{key} not released: {reason}"),
                (false, None) => format!("{key} not released"),
            };
            let json = json!({"key": r.key, "released": r.released, "reason": r.reason, "timestamp": r.timestamp});
            Outcome {
                human,
                json,
                code: exit::OK,
            }
        }
        LockCommand::Get { key, .. } => match client.get(&key).await? {
            Some(lock) => Outcome {
                human: lock_line(&lock),
                json: lock_json(&lock),
                code: exit::OK,
            },
            None => Outcome {
                human: format!("{key}: not held"),
                json: json!({"key": key, "held": false}),
                code: exit::NO,
            },
        },
        LockCommand::Ls { prefix, limit, .. } => {
            let page = client.list(&prefix, None, limit).await?;
            let human = page
                .locks
                .iter()
                .map(lock_line)
                .collect::<Vec<_>>()
                .join("\n");
            let json = json!({"locks": page.locks.iter().map(lock_json).collect::<Vec<_>>(), "next_cursor": page.next_cursor});
            Outcome {
                human,
                json,
                code: exit::OK,
            }
        }
        LockCommand::Validate { key, token, .. } => {
            let v = client.validate(&key, token).await?;
            let human = if v.valid {
                format!("token {token} holds {key}")
            } else {
                format!(
                    "token {token} does not hold {key} (current: {})",
                    v.current_token.map_or("none".into(), |t| t.to_string())
                )
            };
            Outcome {
                human,
                json: json!({"valid": v.valid, "current_token": v.current_token}),
                code: if v.valid { exit::OK } else { exit::NO },
            }
        }
        LockCommand::Status { .. } => {
            let s = client.cluster_status().await?;
            let human = format!(
                "node {} ({}), leader {}, term {}, applied index {}, locks stored {}",
                s["node_id"],
                s["state"].as_str().unwrap_or("?"),
                s["leader_id"],
                s["term"],
                s["applied_index"],
                s["locks_stored"]
            );
            Outcome {
                human,
                json: s,
                code: exit::OK,
            }
        }
    })
}

fn granted(g: Granted) -> Outcome {
    let l = &g.lease;
    Outcome {
        human: format!(
            "{} token={} owner={} expires={}",
            l.key, l.token, l.owner, l.expires_at
        ),
        json: json!({"key": l.key, "owner": l.owner, "token": l.token, "acquired_at": l.acquired_at, "expires_at": l.expires_at, "ttl_ms": l.ttl_ms}),
        code: exit::OK,
    }
}

fn lock_line(l: &LockInfo) -> String {
    format!(
        "{} token={} owner={} expires={} waiters={}",
        l.key, l.token, l.owner, l.expires_at, l.waiters
    )
}

fn lock_json(l: &LockInfo) -> Value {
    json!({"key": l.key, "owner": l.owner, "token": l.token, "acquired_at": l.acquired_at, "renewed_at": l.renewed_at, "expires_at": l.expires_at, "ttl_ms": l.ttl_ms, "waiters": l.waiters})
}
