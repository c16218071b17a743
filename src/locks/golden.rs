//! Golden-script tests of the lock table: one scenario per file in `testscripts/`.
//!
//! Commands (`now=` is the command's cluster time; every applied command takes the next
//! log index, starting at 1):
//! `acquire KEY owner=O ttl=T [wait=W] [delay=D] now=N`, `renew KEY token=T [ttl=T] now=N`,
//! `release KEY token=T now=N`, `release_by_owner KEY owner=O now=N`,
//! `force_release KEY now=N`, `cancel_wait KEY owner=O [reason=timeout|disconnected] now=N`,
//! `handoff KEY now=N`, `sweep now=N`, `refresh live_at=L now=N`,
//! `acquire_exclusive KEY owner=O ttl=T now=N`, `release_by_app KEY app=A now=N` (apply;
//! each prints its reply, the changed keys and its events, indented). `as=A` on a command
//! sends it as application A ([`Command::AsApp`]), `admin=true` with it lets A release
//! any lock; grants, waiters and events show `app=` when they record one and `by=` for
//! the admin of a force release;
//! `get KEY now=N`, `by_token token=T now=N`, `live now=N`, `list [prefix=P] [after=K] [limit=L] now=N`,
//! `validate KEY token=T now=N`, `handoffs now=N`, `next_sweep`, `dump` (queries).
//! Regenerate with `UPDATE_GOLDENFILES=1 cargo test --release` and review the diff.

use std::error::Error;
use std::fmt::Write as _;

use super::*;

#[derive(Default)]
struct TableRunner {
    table: LockTable,
    index: u64,
}

/// ` app=NAME` when an application is recorded, else nothing.
fn fmt_app(label: &str, app: Option<&AppName>) -> String {
    app.map(|a| format!(" {label}={a}")).unwrap_or_default()
}

fn fmt_grant(g: &Grant) -> String {
    format!(
        "{} owner={}{} token={} acquired={} renewed={} expires={} ttl={}{}",
        g.key,
        g.owner,
        fmt_app("app", g.app.as_ref()),
        g.token,
        g.acquired_at_ms,
        g.renewed_at_ms,
        g.expires_at_ms,
        g.ttl_ms,
        if g.lock_delay_ms > 0 {
            format!(" delay={}", g.lock_delay_ms)
        } else {
            String::new()
        }
    )
}

fn fmt_event(e: &Event) -> String {
    let token = e.token.map(|t| format!(" token={t}")).unwrap_or_default();
    format!(
        "{} {} owner={}{}{token} at={}{}",
        e.kind.as_str(),
        e.key,
        e.owner,
        fmt_app("app", e.app.as_ref()),
        e.at_ms,
        fmt_app("by", e.by.as_ref()),
    )
}

fn fmt_state(st: &KeyState) -> String {
    let mut out = match &st.holder {
        Some(g) => fmt_grant(g),
        None => format!("{} (no holder)", st.key),
    };
    if st.delay_until_ms > 0 {
        write!(out, " delay_until={}", st.delay_until_ms).unwrap();
    }
    for w in &st.waiters {
        write!(
            out,
            "\n  waiter {}{} ttl={} delay={} queued={} until={}",
            w.owner,
            fmt_app("app", w.app.as_ref()),
            w.ttl_ms,
            w.lock_delay_ms,
            w.queued_at_ms,
            w.wait_until_ms
        )
        .unwrap();
    }
    out
}

fn fmt_reply(r: &Reply) -> String {
    match r {
        Reply::Granted(g) => format!("granted {}", fmt_grant(g)),
        Reply::Queued(q) => format!(
            "queued {} owner={} position={} until={}",
            q.key, q.owner, q.position, q.wait_until_ms
        ),
        Reply::WaitCancelled {
            key,
            was_queued,
            released,
        } => format!(
            "wait cancelled {key} was_queued={was_queued} released={:?}",
            released.map(|t| t.0)
        ),
        Reply::HandedOff { granted: Some(g) } => format!("handed off {}", fmt_grant(g)),
        Reply::HandedOff { granted: None } => "handed off nothing".to_string(),
        Reply::Released(r) => match r.reason {
            None => format!("released {} at={}", r.key, r.at_ms),
            Some(reason) => format!(
                "not released {} reason={} at={}",
                r.key,
                reason.as_str(),
                r.at_ms
            ),
        },
        Reply::Swept { expired } => format!("swept expired={expired}"),
        Reply::Refreshed { leases } => format!("refreshed leases={leases}"),
        Reply::Refused(e) => format!("refused: {e}"),
        Reply::Nothing => "nothing".to_string(),
    }
}

impl goldenscript::Runner for TableRunner {
    fn run(&mut self, command: &goldenscript::Command) -> Result<String, Box<dyn Error>> {
        let mut args = command.consume_args();
        let mut out = String::new();
        let key = |args: &mut goldenscript::ArgumentConsumer| -> Result<Key, Box<dyn Error>> {
            let raw = &args.next_pos().ok_or("key not given")?.value;
            Ok(Key::parse(raw.as_str())?)
        };
        let now = |args: &mut goldenscript::ArgumentConsumer| -> Result<u64, Box<dyn Error>> {
            Ok(args.lookup_parse("now")?.ok_or("now= not given")?)
        };
        let caller = args
            .lookup("as")
            .map(|a| AppName::parse(a.value.as_str()))
            .transpose()?;
        let admin = args.lookup_parse("admin")?.unwrap_or(false);
        let cmd = match command.name.as_str() {
            "acquire" => {
                let key = key(&mut args)?;
                let owner = Owner::parse(
                    args.lookup("owner")
                        .ok_or("owner= not given")?
                        .value
                        .as_str(),
                )?;
                let options = AcquireOptions {
                    ttl_ms: args.lookup_parse("ttl")?.ok_or("ttl= not given")?,
                    wait_ms: args.lookup_parse("wait")?.unwrap_or(0),
                    lock_delay_ms: args.lookup_parse("delay")?.unwrap_or(0),
                };
                Some(Command::acquire_with(key, owner, options, now(&mut args)?))
            }
            "acquire_exclusive" => {
                let key = key(&mut args)?;
                let owner = Owner::parse(
                    args.lookup("owner")
                        .ok_or("owner= not given")?
                        .value
                        .as_str(),
                )?;
                let ttl = args.lookup_parse("ttl")?.ok_or("ttl= not given")?;
                Some(Command::acquire_exclusive(key, owner, ttl, now(&mut args)?))
            }
            "by_token" => {
                let token = Token(args.lookup_parse("token")?.ok_or("token= not given")?);
                match self.table.get_by_token(token, now(&mut args)?) {
                    Some(g) => writeln!(out, "{}", fmt_grant(g))?,
                    None => writeln!(out, "token {token}: none")?,
                }
                None
            }
            "live" => {
                writeln!(out, "live={}", self.table.live_count(now(&mut args)?))?;
                None
            }
            "renew" => {
                let key = key(&mut args)?;
                let token = Token(args.lookup_parse("token")?.ok_or("token= not given")?);
                let ttl = args.lookup_parse("ttl")?;
                Some(Command::renew(key, token, ttl, now(&mut args)?))
            }
            "release" => {
                let key = key(&mut args)?;
                let token = Token(args.lookup_parse("token")?.ok_or("token= not given")?);
                Some(Command::release(key, token, now(&mut args)?))
            }
            "release_by_owner" => {
                let key = key(&mut args)?;
                let owner = Owner::parse(
                    args.lookup("owner")
                        .ok_or("owner= not given")?
                        .value
                        .as_str(),
                )?;
                Some(Command::release_by_owner(key, owner, now(&mut args)?))
            }
            "release_by_app" => {
                let key = key(&mut args)?;
                let app =
                    AppName::parse(args.lookup("app").ok_or("app= not given")?.value.as_str())?;
                Some(Command::release_by_app(key, app, now(&mut args)?))
            }
            "force_release" => {
                let key = key(&mut args)?;
                Some(Command::force_release(key, now(&mut args)?))
            }
            "cancel_wait" => {
                let key = key(&mut args)?;
                let owner = Owner::parse(
                    args.lookup("owner")
                        .ok_or("owner= not given")?
                        .value
                        .as_str(),
                )?;
                let reason = match args.lookup("reason").map(|a| a.value.as_str()) {
                    None | Some("timeout") => CancelReason::Timeout,
                    Some("disconnected") => CancelReason::Disconnected,
                    Some(other) => return Err(format!("unknown reason {other}").into()),
                };
                Some(Command::cancel_wait(key, owner, reason, now(&mut args)?))
            }
            "handoff" => {
                let key = key(&mut args)?;
                Some(Command::handoff(key, now(&mut args)?))
            }
            "handoffs" => {
                let keys = self.table.handoffs_due(now(&mut args)?);
                let keys: Vec<&str> = keys.iter().map(|k| k.as_str()).collect();
                writeln!(out, "due={keys:?}")?;
                None
            }
            "next_sweep" => {
                writeln!(out, "next_sweep={:?}", self.table.next_sweep_ms())?;
                None
            }
            "sweep" => Some(Command::sweep(now(&mut args)?)),
            "refresh" => {
                let live_at = args.lookup_parse("live_at")?.ok_or("live_at= not given")?;
                Some(Command::refresh_leases(now(&mut args)?, live_at))
            }
            "get" => {
                let key = key(&mut args)?;
                match self.table.get(&key, now(&mut args)?) {
                    Some(g) => writeln!(out, "{}", fmt_grant(g))?,
                    None => writeln!(out, "{key}: none")?,
                }
                None
            }
            "list" => {
                let prefix = args
                    .lookup("prefix")
                    .map(|a| a.value.clone())
                    .unwrap_or_default();
                let after = args
                    .lookup("after")
                    .map(|a| Key::parse(a.value.as_str()))
                    .transpose()?;
                let limit = args.lookup_parse("limit")?.unwrap_or(100);
                let scan = args.lookup_parse("scan")?.unwrap_or(usize::MAX);
                let now = now(&mut args)?;
                let page = self.table.list(&prefix, after.as_ref(), limit, scan, now);
                for g in &page.grants {
                    writeln!(out, "{}", fmt_grant(g))?;
                }
                if let Some(k) = &page.resume_after {
                    writeln!(out, "resume after {k}")?;
                }
                None
            }
            "validate" => {
                let key = key(&mut args)?;
                let token = Token(args.lookup_parse("token")?.ok_or("token= not given")?);
                let v = self.table.validate(&key, token, now(&mut args)?);
                writeln!(
                    out,
                    "valid={} current={:?}",
                    v.valid,
                    v.current_token.map(|t| t.0)
                )?;
                None
            }
            "waiters" => {
                writeln!(out, "waiters={}", self.table.waiters_total())?;
                None
            }
            "dump" => {
                writeln!(out, "clock={}", self.table.now_ms())?;
                for st in self.table.states() {
                    writeln!(out, "{}", fmt_state(st))?;
                }
                None
            }
            name => return Err(format!("unknown command {name}").into()),
        };
        args.reject_rest()?;
        if let Some(cmd) = cmd {
            let cmd = cmd.as_app(caller, admin);
            self.index += 1;
            let applied = self.table.apply(self.index, &cmd);
            self.table.assert_consistent();
            let changed: Vec<&str> = applied.changed.iter().map(|k| k.as_str()).collect();
            writeln!(
                out,
                "{}: {} changed={changed:?}",
                self.index,
                fmt_reply(&applied.reply)
            )?;
            for e in &applied.events {
                assert_eq!(e.index, self.index);
                writeln!(out, "  {}", fmt_event(e))?;
            }
        }
        Ok(out)
    }
}

/// Directory of the golden scripts.
fn scripts_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/locks/testscripts")
}

/// Runs `testscripts/NAME.txt`.
fn run_script(name: &str) {
    let path = scripts_dir().join(format!("{name}.txt"));
    goldenscript::run(&mut TableRunner::default(), &path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// One test per script (as toyDB's `test_each_path!`), so a failing script is named in
/// the test output, and the list of names for [`every_script_file_is_listed`].
macro_rules! golden_scripts {
    ($($name:ident),+ $(,)?) => {
        /// One test per file in `testscripts/`, named after the file.
        mod script {
            $(
                #[test]
                fn $name() {
                    super::run_script(stringify!($name));
                }
            )+
        }

        const LISTED_SCRIPTS: &[&str] = &[$(stringify!($name)),+];
    };
}

golden_scripts! {
    acquire_held,
    acquire_exclusive,
    acquire_idempotent,
    acquire_release,
    app_ownership,
    app_queue,
    cancel_wait,
    expiry_boundary,
    force_release,
    list_pagination,
    list_scan_bound,
    lock_delay,
    queue_expiry_handoff,
    queue_fifo,
    queue_wait_timeout,
    queue_waiter_count,
    refresh_after_clock_jump,
    refresh_on_promotion,
    release_by_owner,
    release_stale_token,
    renew,
    renew_after_expiry_is_lost,
    sweep,
    time_never_goes_backwards,
    tokens_increase_across_keys,
}

/// A script added to `testscripts/` but not to `golden_scripts!` would never run.
#[test]
fn every_script_file_is_listed() {
    let dir = scripts_dir();
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .expect("testscripts directory")
        .map(|e| e.expect("directory entry").path())
        .map(|p| {
            let name = p.file_name().expect("file name").to_string_lossy();
            name.strip_suffix(".txt")
                .unwrap_or_else(|| panic!("{}: golden scripts end in .txt", p.display()))
                .to_string()
        })
        .collect();
    files.sort();
    let mut listed: Vec<String> = LISTED_SCRIPTS.iter().map(|s| s.to_string()).collect();
    listed.sort();
    assert_eq!(
        files,
        listed,
        "scripts in {} and the golden_scripts! list differ",
        dir.display()
    );
}
