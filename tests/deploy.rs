//! `scripts/deploy/` on three "hosts": each node runs in a network namespace of its own
//! with the address `scripts/deploy/cluster.toml` gives it (the chaos suite's
//! `scripts/chaos/netns.sh`, with an id and subnet of this test's own, so it can run
//! beside a chaos run), started as `baton.service` starts it: its `ExecStart` with
//! `EnvironmentFile` variables, `LimitNOFILE`, the working directory holding the config
//! files. Only the binary's path, the data dir (`BATON_DATA_DIR`) and the directory
//! standing in for `/etc/baton` differ; `cluster.toml` is copied byte for byte.
//!
//! Checks: the cluster forms with TLS, mutual TLS and auth on; a client in a fourth
//! namespace locks through it; a node stopped with the unit's `KillSignal` exits 0
//! within `TimeoutStopSec`, the others go on, and it rejoins; the unit's limits fit the
//! config. Needs root and `ip` (skipped otherwise, failed in CI: `CI` or
//! `BATON_REQUIRE_NETNS=1`).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use baton::config::Config;

const READY_TIMEOUT: Duration = Duration::from_secs(60);

fn repo() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// `Key=value` settings of the unit's `[Service]` section (later lines win).
fn unit_settings() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(repo().join("scripts/deploy/baton.service"))
        .expect("read baton.service");
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn seconds(value: &str) -> u64 {
    value
        .trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("{value:?} is not plain seconds"))
}

#[test]
fn the_units_limits_fit_the_config_and_the_servers_shutdown() {
    let unit = unit_settings();
    let config = Config::load(&repo().join("scripts/deploy/cluster.toml"), Vec::new())
        .expect("the deploy config loads");
    let needed = baton::serve::RESERVED_DESCRIPTORS
        + config.api.max_connections as u64
        + config.raft.max_connections as u64;
    let limit: u64 = unit["LimitNOFILE"]
        .parse()
        .expect("LimitNOFILE is a number");
    assert!(limit >= needed, "LimitNOFILE {limit} < {needed}");
    let stop = seconds(&unit["TimeoutStopSec"]);
    let bound = baton::server::GRACEFUL_STOP_BOUND.as_secs();
    assert!(
        stop > bound && stop <= bound + 10,
        "TimeoutStopSec {stop} s should be a little above the server's {bound} s"
    );
    assert_eq!(unit["KillSignal"], "SIGTERM");
    assert_eq!(unit["Restart"], "on-failure");
    assert_eq!(
        unit["RestartPreventExitStatus"],
        baton::cli::server::EXIT_DATA_DIR_REFUSED.to_string()
    );
    for n in &config.nodes {
        assert_eq!(n.data_dir, Path::new("/var/lib/baton"), "node {}", n.id);
    }
    assert_eq!(unit["StateDirectory"], "baton");
}

/// The namespaces of one run, removed on drop (also when the test fails).
struct Hosts {
    id: String,
    prefix: String,
    base: u32,
}

impl Hosts {
    fn netns(&self, action: &str) -> Output {
        Command::new("bash")
            .arg("-c")
            .arg(format!("source scripts/chaos/netns.sh && {action}"))
            .current_dir(repo())
            .env("CHAOS_NS_ID", &self.id)
            .env("NETNS_PREFIX", &self.prefix)
            .env("NETNS_HOST_BASE", self.base.to_string())
            .output()
            .expect("run bash")
    }

    fn up(id: String, prefix: String, base: u32) -> Hosts {
        let hosts = Hosts { id, prefix, base };
        let out = hosts.netns("netns_up");
        assert!(
            out.status.success(),
            "netns_up: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        hosts
    }

    fn node_ns(&self, n: u64) -> String {
        format!("btc{}-n{n}", self.id)
    }

    fn client_ns(&self) -> String {
        format!("btc{}-cl", self.id)
    }
}

impl Drop for Hosts {
    fn drop(&mut self) {
        self.netns("netns_down");
    }
}

fn can_run() -> bool {
    let root = unsafe { libc::geteuid() } == 0;
    let ip = Command::new("ip")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if root && ip {
        return true;
    }
    let required = std::env::var_os("CI").is_some()
        || std::env::var("BATON_REQUIRE_NETNS").is_ok_and(|v| v == "1");
    assert!(!required, "this test needs root and ip (CI)");
    eprintln!("skipped: needs root and iproute2 (network namespaces)");
    false
}

/// One node run as the unit runs it.
struct Node {
    child: Child,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

struct Deployment {
    hosts: Hosts,
    etc: PathBuf,
    work: tempfile::TempDir,
    exec: Vec<String>,
    env: Vec<(String, String)>,
    open_files: u64,
    api_key: String,
    nodes: BTreeMap<u64, Node>,
}

impl Deployment {
    /// Starts node `n` in its namespace as `ExecStart` says.
    fn start(&mut self, n: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(n))
            .expect("node log");
        let mut command = Command::new("ip");
        command
            .args(["netns", "exec", &self.hosts.node_ns(n)])
            .args(&self.exec)
            .current_dir(&self.etc)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env("BATON_NODE", n.to_string())
            .env("BATON_DATA_DIR", self.work.path().join(format!("data{n}")))
            .stdout(Stdio::null())
            .stderr(log);
        let limit = self.open_files;
        use std::os::unix::process::CommandExt;
        // SAFETY: setrlimit is async-signal-safe and touches only this child.
        unsafe {
            command.pre_exec(move || {
                let rlimit = libc::rlimit {
                    rlim_cur: limit,
                    rlim_max: limit,
                };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &rlimit) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("start a node");
        self.nodes.insert(n, Node { child });
    }

    fn log_path(&self, n: u64) -> PathBuf {
        self.work.path().join(format!("n{n}.log"))
    }

    fn logs(&self) -> String {
        (1..=3)
            .map(|n| {
                format!(
                    "--- n{n}\n{}",
                    std::fs::read_to_string(self.log_path(n)).unwrap_or_default()
                )
            })
            .collect()
    }

    /// `baton ARGS` in the client namespace, with the config's endpoints and the CA.
    fn client(&self, args: &[&str]) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.hosts.client_ns()])
            .arg(env!("CARGO_BIN_EXE_baton"))
            .args(args)
            .args(["--config", "cluster.toml", "--ca-file", "tls/ca.pem"])
            .args(["--timeout", "20s"])
            .current_dir(&self.etc)
            .env("BATON_API_KEY", &self.api_key)
            .output()
            .expect("run the client")
    }

    fn wait_status_ok(&self) {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let out = self.client(&["status"]);
            if out.status.success() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no healthy cluster: {}\n{}",
                String::from_utf8_lossy(&out.stdout),
                self.logs()
            );
            std::thread::sleep(Duration::from_millis(300));
        }
    }

    /// SIGTERM (the unit's KillSignal) to node `n`; its exit code and the time it took.
    fn stop(&mut self, n: u64) -> (Option<i32>, Duration) {
        let mut node = self.nodes.remove(&n).expect("a running node");
        let started = Instant::now();
        let status = Command::new("kill")
            .args(["-TERM", &node.child.id().to_string()])
            .status()
            .expect("kill");
        assert!(status.success());
        let code = node.child.wait().expect("wait").code();
        (code, started.elapsed())
    }
}

#[test]
fn three_hosts_run_from_the_deploy_files() {
    if !can_run() {
        return;
    }
    let config_path = repo().join("scripts/deploy/cluster.toml");
    let config = Config::load(&config_path, Vec::new()).expect("deploy config");
    // The namespaces get the config's addresses: PREFIX.(BASE + n) for node n.
    let ip_of = |n: u64| -> std::net::Ipv4Addr {
        let node = config.node(n).expect("node n");
        match node
            .api
            .parse::<std::net::SocketAddr>()
            .expect("address")
            .ip()
        {
            std::net::IpAddr::V4(ip) => ip,
            other => panic!("{other} is not IPv4"),
        }
    };
    let first = ip_of(1).octets();
    let base = u32::from(first[3]) - 1;
    for n in 1..=3u64 {
        let o = ip_of(n).octets();
        assert_eq!(o[..3], first[..3], "hosts on one /24");
        assert_eq!(
            u32::from(o[3]),
            base + n as u32,
            "consecutive host addresses"
        );
    }
    let prefix = format!("{}.{}.{}", first[0], first[1], first[2]);
    let hosts = Hosts::up(format!("d{}", std::process::id() % 100_000), prefix, base);

    let work = tempfile::tempdir().expect("tempdir");
    let etc = work.path().join("etc-baton");
    std::fs::create_dir_all(etc.join("tls")).expect("etc dir");
    std::fs::copy(&config_path, etc.join("cluster.toml")).expect("copy cluster.toml");
    let ca = common::certs::TestCa::new("baton deploy test CA");
    std::fs::write(etc.join("tls/ca.pem"), ca.pem()).expect("write CA");
    for n in 1..=3u64 {
        let (cert, key) = ca.node_cert_for(&[&ip_of(n).to_string()]);
        std::fs::write(etc.join(format!("tls/node{n}.pem")), cert).expect("cert");
        std::fs::write(etc.join(format!("tls/node{n}.key")), key).expect("key");
    }
    let keys = Command::new(env!("CARGO_BIN_EXE_baton"))
        .args([
            "keys", "create", "ops", "--allow", "admin=*", "--allow", "lock=*",
        ])
        .output()
        .expect("baton keys create");
    assert!(keys.status.success());
    let keys = String::from_utf8(keys.stdout).expect("utf-8");
    // Line 1: the API key; line 2: its keys-file line.
    let mut lines = keys.lines();
    let api_key = lines.next().expect("a key").trim().to_string();
    let line = lines.next().expect("a keys-file line");
    std::fs::write(etc.join("keys"), format!("{line}\n")).expect("keys file");

    let unit = unit_settings();
    let mut exec: Vec<String> = unit["ExecStart"]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(exec[0], "/usr/local/bin/baton");
    exec[0] = env!("CARGO_BIN_EXE_baton").to_string();
    // `--config /etc/baton/cluster.toml`: /etc/baton is the working directory here.
    for arg in exec.iter_mut() {
        if let Some(rest) = arg.strip_prefix(&format!("{}/", unit["WorkingDirectory"])) {
            *arg = rest.to_string();
        }
    }
    let env_example =
        std::fs::read_to_string(repo().join("scripts/deploy/baton.env.example")).expect("env");
    let mut env: Vec<(String, String)> = env_example
        .lines()
        .filter(|l| !l.starts_with('#') && l.contains('='))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    assert!(env.iter().any(|(k, _)| k == "BATON_RAFT_SECRET"));
    for (k, v) in env.iter_mut() {
        if k == "BATON_RAFT_SECRET" {
            *v = format!("deploy-test-{}", std::process::id());
        }
    }
    let mut deployment = Deployment {
        hosts,
        etc,
        work,
        exec,
        env,
        open_files: unit["LimitNOFILE"].parse().expect("LimitNOFILE"),
        api_key,
        nodes: BTreeMap::new(),
    };
    for n in 1..=3 {
        deployment.start(n);
    }
    deployment.wait_status_ok();

    let out = deployment.client(&["acquire", "deploy-web", "--ttl", "1m", "--owner", "ci"]);
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stderr),
        deployment.logs()
    );
    let token: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("acquire prints the token");

    // A graceful stop, as systemd does it, within TimeoutStopSec; the others serve.
    let stop_limit = Duration::from_secs(seconds(&unit["TimeoutStopSec"]));
    let (code, took) = deployment.stop(2);
    assert_eq!(code, Some(0), "{}", deployment.logs());
    assert!(took < stop_limit, "stopped in {took:?}");
    let out = deployment.client(&["acquire", "deploy-api", "--ttl", "1m", "--owner", "ci"]);
    assert!(out.status.success(), "{}", deployment.logs());
    let second: u64 = String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .expect("token");
    assert!(second > token);
    deployment.start(2);
    deployment.wait_status_ok();
    let out = deployment.client(&["get", "deploy-web"]);
    assert!(out.status.success(), "{}", deployment.logs());
    let logs = deployment.logs();
    assert!(!logs.contains("lowered to fit"), "{logs}");
    assert!(!logs.contains("insecure"), "{logs}");
}
