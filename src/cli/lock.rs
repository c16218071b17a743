//! `baton lock KEY -- CMD ARGS…`: run a command while holding a lock.
//!
//! Acquires KEY (waiting up to `--wait` in the server's FIFO queue), runs CMD with
//! `BATON_KEY`, `BATON_TOKEN` and `BATON_OWNER` in its environment, renews the lease
//! while CMD runs, releases it when CMD exits and exits with CMD's code (128 + N when a
//! signal N ended it). SIGINT, SIGTERM and SIGHUP sent to `baton lock` are passed on.
//!
//! If the lock is lost — a renewal is refused, or no renewal succeeded and the
//! client-side safe deadline comes near — CMD gets SIGTERM, then SIGKILL after the
//! grace period, and both happen **before** the safe deadline passes: SIGTERM at
//! `safe deadline − grace` at the latest, SIGKILL at the safe deadline at the latest.
//! `baton lock` then exits with [`super::exit::LOCK_LOST`].

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Args;
use tokio::process::Command;
use tokio::signal::unix::{signal, SignalKind};
use tokio::time::Instant;

use super::duration::parse_duration;
use super::exit;
use super::ClientArgs;
use crate::client::{self, LockGuard};

/// How often the runner looks at the lease while CMD runs.
const TICK: Duration = Duration::from_millis(50);

/// Arguments of `baton lock`.
#[derive(Debug, Args)]
pub struct LockArgs {
    /// The lock key: 1 to 255 bytes of A-Z a-z 0-9 . _ : -
    #[arg(value_parser = super::locks::parse_key)]
    pub key: String,
    /// Lease length (e.g. 30s, 1m30s); renewed about every third of it while CMD runs.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// Wait this long in the key's FIFO queue when it is held (0: fail at once).
    #[arg(long, default_value = "0s", value_parser = parse_duration)]
    pub wait: Duration,
    /// Owner name [default: HOSTNAME-PID].
    #[arg(long)]
    pub owner: Option<String>,
    /// Time between SIGTERM and SIGKILL when the lock is lost [default: a sixth of --ttl].
    #[arg(long, value_parser = parse_duration)]
    pub grace: Option<Duration>,
    #[command(flatten)]
    pub client: ClientArgs,
    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    pub command: Vec<String>,
}

/// Runs `baton lock`; returns the process exit code.
pub fn run(args: LockArgs) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("baton lock: cannot start the async runtime: {e}");
            return ExitCode::from(exit::ERROR);
        }
    };
    ExitCode::from(runtime.block_on(lock(args)))
}

async fn lock(args: LockArgs) -> u8 {
    let client = match args.client.connect() {
        Ok(c) => Arc::new(c),
        Err(e) => {
            eprintln!("baton lock: {e:#}");
            return exit::ERROR;
        }
    };
    let owner = args.owner.clone().unwrap_or_else(default_owner);
    let guard = match client::lock(&client, &args.key, &owner, args.ttl, args.wait).await {
        Ok(g) => g,
        Err(e) => {
            eprintln!("baton lock: {} not acquired: {e}", args.key);
            return exit::for_client_error(&e);
        }
    };
    let grace = args.grace.unwrap_or(args.ttl / 6);
    let mut child = match Command::new(&args.command[0])
        .args(&args.command[1..])
        .env("BATON_KEY", &args.key)
        .env("BATON_TOKEN", guard.token().to_string())
        .env("BATON_OWNER", &owner)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("baton lock: cannot run {}: {e}", args.command[0]);
            release(guard).await;
            return exit::CANNOT_RUN;
        }
    };
    let code = supervise(&mut child, &guard, grace).await;
    match code {
        Supervised::Exited(code) => {
            release(guard).await;
            code
        }
        Supervised::Lost(reason) => {
            eprintln!(
                "baton lock: lost {} (token {}): {reason}; stopped {}",
                args.key,
                guard.token(),
                args.command[0]
            );
            exit::LOCK_LOST
        }
    }
}

enum Supervised {
    Exited(u8),
    Lost(String),
}

/// Waits for CMD, passing signals on, and stops it when the lock is lost or its safe
/// deadline comes within `grace`.
async fn supervise(
    child: &mut tokio::process::Child,
    guard: &LockGuard,
    grace: Duration,
) -> Supervised {
    let (mut sigint, mut sigterm, mut sighup) = match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(a), Ok(b), Ok(c)) => (a, b, c),
        _ => {
            eprintln!("baton lock: cannot install signal handlers");
            return stop(
                child,
                "signal handlers unavailable".into(),
                Instant::now() + grace,
            )
            .await;
        }
    };
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            status = child.wait() => return Supervised::Exited(exit_code(status)),
            reason = guard.lost() => {
                let kill_at = (Instant::now() + grace).min(guard.safe_until());
                return stop(child, reason.to_string(), kill_at).await;
            }
            _ = sigint.recv() => forward(child, libc::SIGINT),
            _ = sigterm.recv() => forward(child, libc::SIGTERM),
            _ = sighup.recv() => forward(child, libc::SIGHUP),
            _ = tick.tick() => {
                let safe_until = guard.safe_until();
                if Instant::now() + grace >= safe_until {
                    let reason = "no renewal succeeded and the lease's safe deadline is near".to_string();
                    return stop(child, reason, safe_until).await;
                }
            }
        }
    }
}

/// SIGTERM now, SIGKILL at `kill_at` if CMD is still running.
async fn stop(child: &mut tokio::process::Child, reason: String, kill_at: Instant) -> Supervised {
    forward(child, libc::SIGTERM);
    if tokio::time::timeout_at(kill_at, child.wait())
        .await
        .is_err()
    {
        let _ = child.start_kill();
        let _ = child.wait().await;
    }
    Supervised::Lost(reason)
}

fn forward(child: &tokio::process::Child, sig: libc::c_int) {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with the pid of our own child; no memory is involved.
        unsafe {
            libc::kill(pid as libc::pid_t, sig);
        }
    }
}

fn exit_code(status: std::io::Result<std::process::ExitStatus>) -> u8 {
    use std::os::unix::process::ExitStatusExt;
    match status {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => u8::try_from(code).unwrap_or(exit::ERROR),
            (None, Some(sig)) => u8::try_from(128 + sig).unwrap_or(exit::ERROR),
            (None, None) => exit::ERROR,
        },
        Err(_) => exit::ERROR,
    }
}

async fn release(guard: LockGuard) {
    let key = guard.key().to_string();
    if let Err(e) = guard.release().await {
        eprintln!("baton lock: releasing {key} failed ({e}); it expires with its lease");
    }
}

/// `HOSTNAME-PID`: unique enough per machine, and readable in `baton get`.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "host".into());
    format!("{host}-{}", std::process::id())
}
