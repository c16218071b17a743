//! `baton acquire | renew | release | get | ls | validate | status`: one client call
//! each, for scripts. Text by default — as little as a script needs (`acquire` prints
//! only the token) — and `--json` for machines, errors included. Exit codes in
//! [`super::exit`].

use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;
use serde_json::{json, Value};

use super::duration::parse_duration;
use super::exit;
use super::ClientArgs;
use crate::client::{Client, ClientError, Granted, LockInfo};
use crate::wire::{self, NotReleased};

/// Help of every KEY argument.
const KEY_HELP: &str = "The lock key: 1 to 255 bytes of A-Z a-z 0-9 . _ : -";

/// A clap value parser: the key must be one a node accepts (a `/` would change the URL).
pub(super) fn parse_key(raw: &str) -> Result<String, String> {
    wire::check_key(raw)
        .map(|()| raw.to_string())
        .map_err(|e| e.to_string())
}

/// The one-call client commands.
#[derive(Debug, Subcommand)]
pub enum LockCommand {
    /// Take a lock and print its fencing token: only the number, so that
    /// `T=$(baton acquire KEY)` works (--json: the whole grant). Exit 75 when someone
    /// else holds it or --wait ran out.
    Acquire {
        #[arg(help = KEY_HELP, value_parser = parse_key)]
        key: String,
        /// Lease length (e.g. 30s, 1m30s); renew before it runs out.
        #[arg(long, default_value = "30s", value_parser = parse_duration)]
        ttl: Duration,
        /// When the key is held, wait this long in its FIFO queue (0s: fail at once).
        #[arg(long, default_value = "0s", value_parser = parse_duration)]
        wait: Duration,
        /// Owner name [default: HOSTNAME-PID].
        #[arg(long)]
        owner: Option<String>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Extend the lease held under TOKEN; prints `KEY token=… owner=… expires=…`.
    /// Exit 76 when TOKEN no longer holds the lock.
    Renew {
        #[arg(help = KEY_HELP, value_parser = parse_key)]
        key: String,
        /// The fencing token `acquire` printed.
        token: u64,
        /// New lease length [default: the grant's].
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Release the lock held under TOKEN. Exit 3 when nothing was released (the key is
    /// free, or held under another token).
    Release {
        #[arg(help = KEY_HELP, value_parser = parse_key)]
        key: String,
        /// The fencing token `acquire` printed.
        token: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Show the live lock on KEY (exit 3 when there is none).
    Get {
        #[arg(help = KEY_HELP, value_parser = parse_key)]
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
        #[arg(help = KEY_HELP, value_parser = parse_key)]
        key: String,
        /// The fencing token to check.
        token: u64,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Ask every node for its view: role, term, applied index, quorum and unreachable
    /// peers. Exit 69 when no node answered or none reports a leader with a quorum.
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
pub(super) struct Outcome {
    pub human: String,
    pub json: Value,
    pub code: u8,
}

/// Runs one command; returns the process exit code.
pub fn run(cmd: LockCommand) -> ExitCode {
    let args = cmd.client_args();
    let json_out = args.json;
    let client = match args.connect() {
        Ok(c) => c,
        Err(e) => {
            let message = format!("{e:#}");
            if json_out {
                println!("{}", json!({"error": message, "code": null}));
            }
            eprintln!("baton: {message}");
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
                println!("{}", error_json(&e));
            }
            eprintln!("baton: {e}");
            ExitCode::from(exit::for_client_error(&e))
        }
    }
}

/// `{"error": sentence, "code": "LOCK_HELD" | … | null, "holder": grant}` (holder only
/// with `LOCK_HELD` from another owner).
fn error_json(e: &ClientError) -> Value {
    let mut v = json!({"error": e.to_string(), "code": e.code()});
    if let ClientError::Held { holder, .. } = e {
        v["holder"] = json!(holder);
    }
    v
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
            let g = client.acquire(&key, &owner, ttl, wait).await?;
            Outcome {
                human: g.lease.token.to_string(),
                json: json!(g.lease),
                code: exit::OK,
            }
        }
        LockCommand::Renew {
            key, token, ttl, ..
        } => granted(client.renew(&key, token, ttl).await?),
        LockCommand::Release { key, token, .. } => {
            let r = client.release(&key, token).await?;
            let human = match r.reason {
                None if r.released => format!("released {key} (token {token})"),
                Some(NotReleased::TokenMismatch) => {
                    format!("{key} not released: it is held under another token, not {token}")
                }
                Some(NotReleased::NotHeld) | None => {
                    format!("{key} not released: it has no live lock (expired or released)")
                }
            };
            Outcome {
                human,
                json: json!(r),
                code: if r.released { exit::OK } else { exit::NO },
            }
        }
        LockCommand::Get { key, .. } => match client.get(&key).await? {
            Some(lock) => Outcome {
                human: lock_line(&lock),
                json: json!(lock),
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
            Outcome {
                human,
                json: json!(page),
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
                json: json!(v),
                code: if v.valid { exit::OK } else { exit::NO },
            }
        }
        LockCommand::Status { .. } => super::status::status(client).await,
    })
}

fn granted(g: Granted) -> Outcome {
    let l = &g.lease;
    Outcome {
        human: format!(
            "{} token={} owner={} expires={}",
            l.key, l.token, l.owner, l.expires_at
        ),
        json: json!(l),
        code: exit::OK,
    }
}

fn lock_line(l: &LockInfo) -> String {
    format!(
        "{} token={} owner={} expires={} waiters={}",
        l.key, l.token, l.owner, l.expires_at, l.waiters
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Lease;

    #[test]
    fn json_errors_carry_the_code_and_the_holder() {
        let holder = Lease {
            key: "k".into(),
            owner: "other".into(),
            token: 7,
            acquired_at: "a".into(),
            expires_at: "e".into(),
            ttl_ms: 1_000,
        };
        let held = ClientError::Held {
            key: "k".into(),
            holder: Box::new(holder),
        };
        let v = error_json(&held);
        assert_eq!(v["code"], "LOCK_HELD");
        assert_eq!(v["holder"]["owner"], "other");
        assert_eq!(v["holder"]["token"], 7);
        let lost = error_json(&ClientError::Lost("gone".into()));
        assert_eq!(lost["code"], "LOCK_LOST");
        assert!(lost.get("holder").is_none());
        let config = error_json(&ClientError::Config("no endpoints given".into()));
        assert_eq!(config["code"], Value::Null);
        assert_eq!(config["error"], "no endpoints given");
    }

    #[test]
    fn keys_are_checked_before_anything_is_sent() {
        assert_eq!(parse_key("deploy:prod"), Ok("deploy:prod".into()));
        let err = parse_key("a/b").unwrap_err();
        assert!(
            err.contains("key") && err.contains("[A-Za-z0-9._:-]"),
            "{err}"
        );
    }
}
