//! Safe defaults on real processes: a node on a non-loopback address refuses to start
//! open (auth off, the default Raft secret), naming each setting, unless `--insecure`
//! is given, and then warns about each on start.
//!
//! A node that is closed (auth on, its own secret, TLS) starts there without the flag.
//!
//! The refusals use 192.0.2.1 (TEST-NET-1, never a local address): the check runs
//! before anything is bound. Starting for real on a non-loopback address needs one this
//! host owns and nobody else can reach, so those tests run the node inside a network
//! namespace they create (`ip netns`, root only; they say so and pass trivially without
//! root, as `cargo test` by a developer is not root — CI is). 127.0.0.2 would not do:
//! all of 127.0.0.0/8 is loopback, and the rule treats it so.

mod common;

use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

fn baton() -> Command {
    Command::new(env!("CARGO_BIN_EXE_baton"))
}

/// A one-node config on `addr` (api port 7001, raft 7101) plus `extra` sections.
fn write_config(dir: &Path, addr: &str, extra: &str) -> std::path::PathBuf {
    let path = dir.join("cluster.toml");
    let text = format!(
        "[[nodes]]\nid = 1\napi = \"{addr}:7001\"\nraft = \"{addr}:7101\"\ndata_dir = \"{}\"\n{extra}",
        dir.join("n1").display()
    );
    std::fs::write(&path, text).expect("write config");
    path
}

fn run(config: &Path, extra_args: &[&str]) -> Output {
    baton()
        .args(["server", "--node", "1", "--config"])
        .arg(config)
        .args(extra_args)
        .env("RUST_LOG", "baton=info")
        .output()
        .expect("run baton server")
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `[auth]` on (with an empty keys file in `dir`), a secret of our own, and `[tls]` with
/// a certificate for `addr` (the CA in `dir/ca.pem`).
fn closed_settings(dir: &Path, addr: &str) -> String {
    let keys = dir.join("keys");
    std::fs::write(&keys, "").expect("write keys file");
    let ca = common::certs::TestCa::new("test CA");
    let (cert, key) = ca.node_cert_for(&[addr]);
    std::fs::write(dir.join("ca.pem"), ca.pem()).unwrap();
    std::fs::write(dir.join("node.pem"), cert).unwrap();
    std::fs::write(dir.join("node.key"), key).unwrap();
    format!(
        "[auth]\nenabled = true\nkeys_file = \"{}\"\n[raft]\nsecret = \"a secret of our own\"\n\
         [tls]\ncert_file = \"{d}/node.pem\"\nkey_file = \"{d}/node.key\"\nca_file = \"{d}/ca.pem\"\n",
        keys.display(),
        d = dir.display()
    )
}

#[test]
fn non_loopback_node_with_defaults_refuses_to_start_naming_each_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "192.0.2.1", "");
    let out = run(&config, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    for setting in [
        "auth.enabled",
        "raft.secret",
        "tls.cert_file",
        "--insecure",
        "192.0.2.1:7001",
    ] {
        assert!(err.contains(setting), "{setting} not in: {err}");
    }
    assert!(
        !dir.path().join("n1").exists(),
        "storage opened before refusing"
    );
}

#[test]
fn non_loopback_node_with_auth_and_tls_but_default_secret_names_only_the_secret() {
    let dir = tempfile::tempdir().unwrap();
    let keys = dir.path().join("keys");
    std::fs::write(&keys, "").unwrap();
    // The check comes before the files are read: these need not exist.
    let auth_and_tls = format!(
        "[auth]\nenabled = true\nkeys_file = \"{}\"\n[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\n",
        keys.display()
    );
    let config = write_config(dir.path(), "192.0.2.1", &auth_and_tls);
    let out = run(&config, &[]);
    let err = stderr(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("raft.secret"), "{err}");
    assert!(!err.contains("auth.enabled"), "{err}");
    assert!(!err.contains("tls.cert_file"), "{err}");
}

#[test]
fn insecure_flag_passes_the_check_with_a_warning_per_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), "192.0.2.1", "");
    let out = run(&config, &["--insecure"]);
    let err = stderr(&out);
    // The node gets past the check and fails only where 192.0.2.1 is not ours to bind.
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("cannot listen on api address"), "{err}");
    assert!(!err.contains("refusing to start"), "{err}");
    for setting in ["auth.enabled", "raft.secret", "tls.cert_file"] {
        assert!(
            err.lines()
                .any(|l| l.contains("WARN") && l.contains("insecure start") && l.contains(setting)),
            "no warning naming {setting}: {err}"
        );
    }
}

/// A network namespace with one non-loopback address of its own, removed on drop.
struct Netns {
    name: String,
    addr: String,
}

impl Netns {
    /// `None` when this process may not create namespaces (not root).
    fn create() -> Option<Netns> {
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            eprintln!("skipped: creating a network namespace needs root");
            return None;
        }
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let name = format!("bt-safe-{}-{n}", std::process::id());
        let addr = "10.251.0.1".to_string();
        let ns = Netns { name, addr };
        ns.ip(&["netns", "add", &ns.name]);
        ns.exec(&["ip", "link", "set", "lo", "up"]);
        // An address outside 127.0.0.0/8, local to the namespace only (on its `lo`: no
        // interface module needed, and nothing outside can reach it).
        ns.exec(&["ip", "addr", "add", &format!("{}/32", ns.addr), "dev", "lo"]);
        Some(ns)
    }

    fn ip(&self, args: &[&str]) {
        let status = Command::new("ip").args(args).status().expect("run ip");
        assert!(status.success(), "ip {args:?} failed");
    }

    fn exec(&self, args: &[&str]) {
        let mut all = vec!["netns", "exec", &self.name];
        all.extend_from_slice(args);
        self.ip(&all);
    }

    /// `baton ARGS` inside the namespace, stderr to `log`.
    fn spawn_baton(&self, args: &[&str], log: &Path) -> Child {
        let log = std::fs::File::create(log).expect("create log");
        Command::new("ip")
            .args(["netns", "exec", &self.name, env!("CARGO_BIN_EXE_baton")])
            .args(args)
            .env("RUST_LOG", "baton=info")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn baton in the namespace")
    }

    /// `curl` inside the namespace; the HTTP status, 0 if none.
    fn curl_status(&self, args: &[&str]) -> u16 {
        let out = Command::new("ip")
            .args(["netns", "exec", &self.name, "curl", "-s", "-o", "/dev/null"])
            .args(["-w", "%{http_code}", "--max-time", "2"])
            .args(args)
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Kills the child on drop.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `ready` until it holds; panics with `log` after [`READY_TIMEOUT`].
fn wait_until(mut ready: impl FnMut() -> bool, log: &Path) {
    let deadline = Instant::now() + READY_TIMEOUT;
    while !ready() {
        assert!(
            Instant::now() < deadline,
            "not ready in {READY_TIMEOUT:?}; log:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn insecure_node_on_a_non_loopback_address_starts_and_serves() {
    let Some(ns) = Netns::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &ns.addr, "");
    let log = dir.path().join("n1.log");
    let config_arg = config.display().to_string();
    let _node = Running(ns.spawn_baton(
        &[
            "server",
            "--node",
            "1",
            "--insecure",
            "--config",
            &config_arg,
        ],
        &log,
    ));
    let url = format!("http://{}:7001/readyz", ns.addr);
    wait_until(|| ns.curl_status(&[&url]) == 200, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.lines()
            .any(|l| l.contains("WARN") && l.contains("insecure start")),
        "{text}"
    );
}

#[test]
fn closed_node_on_a_non_loopback_address_starts_without_insecure() {
    let Some(ns) = Netns::create() else { return };
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path(), &ns.addr, &closed_settings(dir.path(), &ns.addr));
    let log = dir.path().join("n1.log");
    let config_arg = config.display().to_string();
    let _node = Running(ns.spawn_baton(&["server", "--node", "1", "--config", &config_arg], &log));
    let url = format!("https://{}:7001/readyz", ns.addr);
    let ca = dir.path().join("ca.pem").display().to_string();
    wait_until(|| ns.curl_status(&["--cacert", &ca, &url]) == 200, &log);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("insecure"), "{text}");
}
