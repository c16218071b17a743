//! `cluster.toml`: the schema, its defaults, and the `BATON_*` / flag overrides.
//!
//! Precedence is defaults < file < `BATON_<SECTION>_<KEY>` environment variables < flags.
//! The result is resolved once into an immutable [`Config`] and checked by
//! [`Config::validate`], whose errors name the offending key. The defaults here equal the
//! commented values in the repository's `cluster.toml`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::raft::data_dir::ClusterId;
use crate::NodeId;

/// Environment variables that override the file start with this prefix.
pub const ENV_PREFIX: &str = "BATON_";

/// Sections whose scalar keys may be overridden from the environment.
const OVERRIDABLE_SECTIONS: &[&str] = &["raft", "lease", "api", "auth", "compat", "tls"];

/// Upper bound of `api.max_list_limit`: a page of this many locks is already a large
/// answer, and the bound keeps `limit + 1` (the look-ahead that tells "more") far from
/// wrapping.
pub const MAX_LIST_LIMIT_BOUND: usize = 100_000;
/// Upper bound of `api.max_body_bytes` (requests are small JSON documents).
pub const MAX_BODY_BYTES_BOUND: usize = 16 << 20;
/// Upper bound of `api.max_connections` and `raft.max_connections` (no process gets
/// more descriptors than this on a default Linux `fs.nr_open`).
pub const MAX_CONNECTIONS_BOUND: usize = 1 << 20;
/// Upper bound of `raft.max_message_bytes`.
pub const MAX_MESSAGE_BYTES_BOUND: u64 = 1 << 30;
/// Upper bound of `raft.max_snapshot_bytes` (a snapshot is held in memory to install).
pub const MAX_SNAPSHOT_BYTES_BOUND: u64 = 16 << 30;
/// Smallest `raft.max_message_bytes` and `raft.max_snapshot_bytes` (one empty
/// snapshot or a heartbeat is far smaller; anything less could not carry an entry).
pub const MIN_RAFT_BODY_BYTES: u64 = 64 << 10;
/// Upper bound of `api.max_waiters_per_key`: a queue is listed and persisted as a whole
/// key state, so one queue stays a bounded record.
pub const MAX_WAITERS_PER_KEY_BOUND: usize = 100_000;
/// Upper bound of `api.max_waiters` (every waiter holds a request open somewhere).
pub const MAX_WAITERS_BOUND: usize = 10_000_000;
/// Upper bound of `api.max_locks` (the table lives in memory and in every snapshot).
pub const MAX_LOCKS_BOUND: usize = 100_000_000;
/// Upper bound of `lease.max_ttl_ms` (one year): cluster time plus a TTL stays far from
/// `u64::MAX`.
pub const MAX_TTL_MS_BOUND: u64 = 365 * 86_400_000;
/// Upper bound of `lease.max_wait_ms` (one day; a waiting acquire holds a request open).
pub const MAX_WAIT_MS_BOUND: u64 = 86_400_000;
/// Upper bound of `lease.max_lock_delay_ms` (one hour).
pub const MAX_LOCK_DELAY_MS_BOUND: u64 = 3_600_000;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or does not match the schema.
    #[error("invalid config {path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// A value is out of range or inconsistent with another.
    #[error("invalid config: {0}")]
    Invalid(String),
}

/// The whole cluster description, as in `cluster.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Every voting member of the cluster.
    pub nodes: Vec<NodeConfig>,
    #[serde(default)]
    pub raft: RaftConfig,
    #[serde(default)]
    pub lease: LeaseConfig,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub auth: AuthConfig,
    #[serde(default)]
    pub compat: CompatConfig,
    #[serde(default)]
    pub tls: TlsConfig,
}

/// `[tls]`: both listeners speak TLS, and nodes check each other's certificates (see
/// `tls`). In every path, `{node}` is replaced by the node's id, so one `cluster.toml`
/// can name a certificate per node (`certs/node{node}.pem`); `BATON_TLS_CERT_FILE` and
/// friends override per process. Relative paths are relative to the directory the server
/// is started in.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// PEM certificate chain (this node's certificate first) that the API and Raft
    /// listeners present; TLS is on when set. Its names must include the addresses in
    /// `[[nodes]]` (an IP address SAN for an `ip:port`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key of `cert_file` (PKCS#8, PKCS#1 or SEC1).
    pub key_file: Option<PathBuf>,
    /// PEM CA certificates that sign the nodes' certificates: a node trusts only these
    /// for its peers (Raft and relayed requests). Unset: the system's roots.
    pub ca_file: Option<PathBuf>,
    /// The Raft listener asks every peer for a client certificate signed by `ca_file`
    /// (mutual TLS), and a node presents its own to its peers.
    pub client_auth: bool,
}

impl TlsConfig {
    /// Both listeners speak TLS.
    pub fn enabled(&self) -> bool {
        self.cert_file.is_some()
    }

    /// The URL scheme of this cluster's listeners.
    pub fn scheme(&self) -> &'static str {
        if self.enabled() {
            "https"
        } else {
            "http"
        }
    }

    /// `path` with `{node}` replaced by `node`.
    pub fn path_for(path: &Path, node: NodeId) -> PathBuf {
        PathBuf::from(path.to_string_lossy().replace("{node}", &node.to_string()))
    }
}

/// `[auth]`: API keys per application (see `auth::keys` for the keys file).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// Every request except `/healthz` and `/readyz` needs an API key from the keys file.
    pub enabled: bool,
    /// The keys file: one application per line (name, SHA-256 of its key, permissions);
    /// reloaded on SIGHUP and when it changes. Relative to the directory the server is
    /// started in. Required when `enabled`.
    pub keys_file: Option<PathBuf>,
}

/// One `[[nodes]]` entry.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Raft node id; unique, non-zero.
    pub id: NodeId,
    /// `host:port` of the HTTP API (clients and forwarded requests).
    pub api: String,
    /// `host:port` of the Raft RPC listener (peers only).
    pub raft: String,
    /// Directory of this node's RocksDB and snapshots; relative paths are relative to the
    /// directory the server is started in.
    pub data_dir: PathBuf,
    /// `host:port` of the gRPC listener (Tracker's `LockService` and server
    /// reflection, see [`crate::compat::tracker::grpc`]); no gRPC listener when absent.
    #[serde(default)]
    pub grpc: Option<String>,
}

impl NodeConfig {
    /// The node's listener addresses with their field names (the gRPC one if set).
    fn addresses(&self) -> Vec<(&'static str, &String)> {
        let mut all = vec![("api", &self.api), ("raft", &self.raft)];
        if let Some(grpc) = &self.grpc {
            all.push(("grpc", grpc));
        }
        all
    }
}

/// `[raft]`: timings and log compaction.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RaftConfig {
    /// Leader heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// A follower that hears no leader for a random time in this range starts an election.
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// Build a snapshot after this many log entries since the last one, or after twice
    /// as many entries as keys stored, if that is more (see `node::compaction`).
    pub snapshot_after_entries: u64,
    /// Log entries kept behind a snapshot, so a briefly lagging follower can catch up
    /// from the log instead of a snapshot.
    pub keep_entries_after_snapshot: u64,
    /// How often the leader commits an expiry sweep.
    pub sweep_interval_ms: u64,
    /// Shared secret on every Raft RPC; peers without it are refused.
    pub secret: String,
    /// Connections the Raft listener keeps open at once (peers use a few each); at the
    /// cap the longest-idle one is closed (see `serve`).
    pub max_connections: usize,
    /// Largest body of a Raft RPC other than a snapshot (append entries, vote, ...), in
    /// bytes; a larger one is refused (413) before it is read.
    pub max_message_bytes: u64,
    /// Largest snapshot a node accepts from its leader, in bytes (as announced by the
    /// request's `content-length`); a larger one is refused (413) before it is read.
    pub max_snapshot_bytes: u64,
    /// Pins the cluster's identity (`raft::data_dir`): a cluster initialised from this
    /// file takes this id, and a node refuses a data dir of another. Unset: a random id
    /// is made at initialisation and learnt by every node from its peers.
    pub cluster_id: Option<ClusterId>,
    /// How long `POST /v1/cluster/nodes` waits for the new node to catch up with the
    /// leader's log before it would make it a voter; then 409 `NOT_CAUGHT_UP` (the node
    /// stays a learner and the same add resumes).
    pub catch_up_timeout_ms: u64,
}

impl Default for RaftConfig {
    fn default() -> Self {
        Self {
            // A leader crash costs about election_timeout_max + the survivors' earliest
            // sampled timeout + a commit (openraft waits out its leader lease, then the
            // timeout): 200-400 ms gives a first write through a follower in ~0.8 s
            // (scripts/chaos/failover.sh; 500-1000 ms gave 1.7 s).
            heartbeat_interval_ms: 50,
            election_timeout_min_ms: 200,
            election_timeout_max_ms: 400,
            snapshot_after_entries: 20_000,
            keep_entries_after_snapshot: 1_000,
            sweep_interval_ms: 250,
            secret: "baton-local-dev-secret".to_string(),
            max_connections: 64,
            max_message_bytes: 64 << 20,
            max_snapshot_bytes: 1 << 30,
            cluster_id: None,
            catch_up_timeout_ms: 60_000,
        }
    }
}

/// `[lease]`: bounds on lock TTLs.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct LeaseConfig {
    /// Smallest `ttl_ms` a client may ask for.
    pub min_ttl_ms: u64,
    /// Largest `ttl_ms` a client may ask for.
    pub max_ttl_ms: u64,
    /// `ttl_ms` of an acquire that names none.
    pub default_ttl_ms: u64,
    /// Largest `wait_ms` of an acquire (time spent in a key's queue).
    pub max_wait_ms: u64,
    /// Largest `lock_delay_ms` of an acquire.
    pub max_lock_delay_ms: u64,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        Self {
            min_ttl_ms: 500,
            max_ttl_ms: 86_400_000,
            default_ttl_ms: 30_000,
            max_wait_ms: 3_600_000,
            max_lock_delay_ms: 60_000,
        }
    }
}

/// `[compat]`: other systems' APIs served on top of the lock table.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CompatConfig {
    /// Lease of a lock created through the Tracker API without a `ttl_ms`; absent: the
    /// longest lease, `lease.max_ttl_ms` (24 h by default). Tracker locks never expired;
    /// Baton's do, so a forgotten one is freed after this long.
    pub tracker_ttl_ms: Option<u64>,
}

impl Config {
    /// The lease of a Tracker lock created without a `ttl_ms`.
    pub fn tracker_ttl_ms(&self) -> u64 {
        self.compat.tracker_ttl_ms.unwrap_or(self.lease.max_ttl_ms)
    }
}

/// `[api]`: HTTP limits.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// A write or linearizable read that takes longer is answered `OUTCOME_UNKNOWN` (writes)
    /// or `NO_LEADER` (reads).
    pub request_timeout_ms: u64,
    /// How long a request without a known leader waits for one before `NO_LEADER`.
    pub leader_wait_ms: u64,
    /// Largest `limit` of one list page.
    pub max_list_limit: usize,
    /// Client connections open at once. At the cap a new connection closes the one idle
    /// longest, or gets 503 `TOO_MANY_CONNECTIONS` when all are busy. Lowered at start
    /// (with a warning) if the open-files limit leaves too few descriptors.
    pub max_connections: usize,
    /// Time a connection has to send a complete request header, counted from when it
    /// connected or got its previous answer: also the idle keep-alive timeout.
    pub header_read_timeout_ms: u64,
    /// Time a request has to send its body.
    pub body_read_timeout_ms: u64,
    /// Waiters in one key's queue; a waiting acquire that would join a full queue gets
    /// 429 `QUEUE_FULL`.
    pub max_waiters_per_key: usize,
    /// Waiters in all queues together; beyond it a waiting acquire gets 429 `QUEUE_FULL`.
    pub max_waiters: usize,
    /// Stored keys (held, queued or in lock-delay); an acquire of a key not stored yet
    /// gets 429 `TOO_MANY_LOCKS` at the cap.
    pub max_locks: usize,
    /// Event streams (`GET /v1/locks/{key}/events`) open on this node at once; one more
    /// gets 503 `TOO_MANY_STREAMS`.
    pub max_event_streams: usize,
}

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_body_bytes: 16 * 1024,
            request_timeout_ms: 5_000,
            leader_wait_ms: 2_000,
            max_list_limit: 1_000,
            max_connections: 4_096,
            header_read_timeout_ms: 10_000,
            body_read_timeout_ms: 10_000,
            max_waiters_per_key: 1_000,
            max_waiters: 100_000,
            max_locks: 1_000_000,
            max_event_streams: 1_024,
        }
    }
}

impl Config {
    /// Reads `path`, applies `BATON_*` overrides from `env`, and validates.
    pub fn load(
        path: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text, env).map_err(|e| match e {
            ConfigError::Parse { message, .. } => ConfigError::Parse {
                path: path.to_owned(),
                message,
            },
            other => other,
        })
    }

    /// Parses TOML text, applies overrides and validates.
    pub fn parse(
        text: &str,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |message: String| ConfigError::Parse {
            path: PathBuf::from("<text>"),
            message,
        };
        let mut doc: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        for (name, value) in env {
            apply_env_override(&mut doc, &name, &value)?;
        }
        let config: Config = toml::Value::Table(doc)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks ranges and consistency; the error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.nodes.is_empty() {
            return bad("nodes: at least one [[nodes]] entry is required".into());
        }
        for (i, n) in self.nodes.iter().enumerate() {
            if n.id == 0 {
                return bad(format!("nodes[{i}].id must be non-zero"));
            }
            if self.nodes[..i].iter().any(|m| m.id == n.id) {
                return bad(format!("nodes[{i}].id {} appears twice", n.id));
            }
            for (field, addr) in n.addresses() {
                let Ok(parsed) = addr.parse::<std::net::SocketAddr>() else {
                    return bad(format!(
                        "nodes[{i}].{field} {addr:?} is not an ip:port address"
                    ));
                };
                // The address is advertised: peers, followers relaying and clients
                // connect to it, and nobody can connect to "any address".
                if parsed.ip().is_unspecified() {
                    return bad(format!(
                        "nodes[{i}].{field} {addr:?} is an unspecified address; give the address others connect to"
                    ));
                }
            }
        }
        // The gRPC listener speaks plain HTTP/2 only: on a cluster with TLS it would
        // carry API keys in the clear.
        if self.tls.enabled() {
            if let Some(i) = self.nodes.iter().position(|n| n.grpc.is_some()) {
                return bad(format!(
                    "nodes[{i}].grpc: the gRPC listener does not speak TLS yet; with [tls] on, leave grpc out"
                ));
            }
        }
        // Two listeners cannot share an address; a typo here would make a node talk to
        // the wrong one.
        let mut seen: Vec<(std::net::SocketAddr, String)> = Vec::new();
        for (i, n) in self.nodes.iter().enumerate() {
            for (field, addr) in n.addresses() {
                let parsed: std::net::SocketAddr =
                    addr.parse().expect("checked to parse in the loop above");
                let name = format!("nodes[{i}].{field}");
                if let Some((_, first)) = seen.iter().find(|(a, _)| *a == parsed) {
                    return bad(format!("{name} {addr:?} is also {first}"));
                }
                seen.push((parsed, name));
            }
        }
        let r = &self.raft;
        if r.heartbeat_interval_ms == 0 {
            return bad("raft.heartbeat_interval_ms must be positive".into());
        }
        if r.election_timeout_min_ms <= r.heartbeat_interval_ms {
            return bad(format!(
                "raft.election_timeout_min_ms {} must exceed raft.heartbeat_interval_ms {}",
                r.election_timeout_min_ms, r.heartbeat_interval_ms
            ));
        }
        if r.election_timeout_max_ms <= r.election_timeout_min_ms {
            return bad(format!(
                "raft.election_timeout_max_ms {} must exceed raft.election_timeout_min_ms {}",
                r.election_timeout_max_ms, r.election_timeout_min_ms
            ));
        }
        if r.snapshot_after_entries == 0 {
            return bad("raft.snapshot_after_entries must be positive".into());
        }
        if r.sweep_interval_ms == 0 {
            return bad("raft.sweep_interval_ms must be positive".into());
        }
        if r.catch_up_timeout_ms == 0 {
            return bad("raft.catch_up_timeout_ms must be positive".into());
        }
        if self.auth.enabled && self.auth.keys_file.is_none() {
            return bad("auth.keys_file must be set when auth.enabled is true".into());
        }
        let t = &self.tls;
        if t.cert_file.is_some() != t.key_file.is_some() {
            return bad("tls.cert_file and tls.key_file must be set together".into());
        }
        if t.ca_file.is_some() && !t.enabled() {
            return bad("tls.ca_file is set but tls.cert_file is not (TLS is off)".into());
        }
        if t.client_auth && (t.ca_file.is_none() || !t.enabled()) {
            return bad(
                "tls.client_auth needs tls.ca_file (to check peers) and tls.cert_file (to present)"
                    .into(),
            );
        }
        if r.secret.is_empty() {
            return bad("raft.secret must not be empty".into());
        }
        // A secret is compared byte for byte: a trailing space or newline picked up from
        // a file or an environment variable would make every Raft call fail.
        if r.secret.trim() != r.secret {
            return bad("raft.secret has leading or trailing whitespace".into());
        }
        if r.secret.chars().any(char::is_control) {
            return bad("raft.secret contains a control character".into());
        }
        let l = &self.lease;
        if l.min_ttl_ms == 0 || l.min_ttl_ms > l.max_ttl_ms {
            return bad(format!(
                "lease.min_ttl_ms {} must be positive and at most lease.max_ttl_ms {}",
                l.min_ttl_ms, l.max_ttl_ms
            ));
        }
        if !(l.min_ttl_ms..=l.max_ttl_ms).contains(&l.default_ttl_ms) {
            return bad(format!(
                "lease.default_ttl_ms {} is outside [{}, {}]",
                l.default_ttl_ms, l.min_ttl_ms, l.max_ttl_ms
            ));
        }
        let a = &self.api;
        if a.max_body_bytes < 256 || a.request_timeout_ms == 0 || a.max_list_limit == 0 {
            return bad("api.max_body_bytes must be at least 256, api.request_timeout_ms and api.max_list_limit positive".into());
        }
        for (key, value) in [
            ("api.max_connections", a.max_connections),
            ("raft.max_connections", r.max_connections),
        ] {
            if value < crate::serve::MIN_CONNECTIONS {
                return bad(format!(
                    "{key} {value} is below the minimum {}",
                    crate::serve::MIN_CONNECTIONS
                ));
            }
        }
        for (key, value, max) in [
            ("lease.max_ttl_ms", l.max_ttl_ms, MAX_TTL_MS_BOUND),
            ("lease.max_wait_ms", l.max_wait_ms, MAX_WAIT_MS_BOUND),
            (
                "lease.max_lock_delay_ms",
                l.max_lock_delay_ms,
                MAX_LOCK_DELAY_MS_BOUND,
            ),
            (
                "api.max_list_limit",
                a.max_list_limit as u64,
                MAX_LIST_LIMIT_BOUND as u64,
            ),
            (
                "api.max_body_bytes",
                a.max_body_bytes as u64,
                MAX_BODY_BYTES_BOUND as u64,
            ),
            (
                "api.max_connections",
                a.max_connections as u64,
                MAX_CONNECTIONS_BOUND as u64,
            ),
            (
                "raft.max_connections",
                r.max_connections as u64,
                MAX_CONNECTIONS_BOUND as u64,
            ),
            (
                "raft.max_message_bytes",
                r.max_message_bytes,
                MAX_MESSAGE_BYTES_BOUND,
            ),
            (
                "raft.max_snapshot_bytes",
                r.max_snapshot_bytes,
                MAX_SNAPSHOT_BYTES_BOUND,
            ),
            (
                "api.max_waiters_per_key",
                a.max_waiters_per_key as u64,
                MAX_WAITERS_PER_KEY_BOUND as u64,
            ),
            (
                "api.max_waiters",
                a.max_waiters as u64,
                MAX_WAITERS_BOUND as u64,
            ),
            ("api.max_locks", a.max_locks as u64, MAX_LOCKS_BOUND as u64),
            (
                "api.max_event_streams",
                a.max_event_streams as u64,
                MAX_CONNECTIONS_BOUND as u64,
            ),
        ] {
            if value > max {
                return bad(format!("{key} {value} is above the maximum {max}"));
            }
        }
        for (key, value) in [
            ("raft.max_message_bytes", r.max_message_bytes),
            ("raft.max_snapshot_bytes", r.max_snapshot_bytes),
        ] {
            if value < MIN_RAFT_BODY_BYTES {
                return bad(format!(
                    "{key} {value} is below the minimum {MIN_RAFT_BODY_BYTES}"
                ));
            }
        }
        for (key, value) in [
            ("api.max_waiters_per_key", a.max_waiters_per_key),
            ("api.max_waiters", a.max_waiters),
            ("api.max_locks", a.max_locks),
            ("api.max_event_streams", a.max_event_streams),
        ] {
            if value == 0 {
                return bad(format!("{key} must be positive"));
            }
        }
        if let Some(ttl) = self.compat.tracker_ttl_ms {
            if !(l.min_ttl_ms..=l.max_ttl_ms).contains(&ttl) {
                return bad(format!(
                    "compat.tracker_ttl_ms {ttl} is outside [lease.min_ttl_ms {}, lease.max_ttl_ms {}]",
                    l.min_ttl_ms, l.max_ttl_ms
                ));
            }
        }
        if a.header_read_timeout_ms == 0 || a.body_read_timeout_ms == 0 {
            return bad(
                "api.header_read_timeout_ms and api.body_read_timeout_ms must be positive".into(),
            );
        }
        Ok(())
    }

    /// The `[[nodes]]` entry of `id`.
    pub fn node(&self, id: NodeId) -> Result<&NodeConfig, ConfigError> {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .ok_or_else(|| ConfigError::Invalid(format!("node {id} is not in [[nodes]]")))
    }

    /// `[raft]` timings as `Duration`s.
    pub fn sweep_interval(&self) -> Duration {
        Duration::from_millis(self.raft.sweep_interval_ms)
    }
}

/// Variables that look like a section's override but belong to the clients:
/// `BATON_API_KEY` is the CLI's API key, not `api.key`, and a shell that exports it must
/// still start a server.
const CLIENT_VARIABLES: &[&str] = &["BATON_API_KEY"];

/// Applies one `BATON_<SECTION>_<KEY>=value` variable; other variables are ignored.
/// The value is read as a TOML value when it parses as one (`250`, `true`), else as a string.
fn apply_env_override(doc: &mut toml::Table, name: &str, value: &str) -> Result<(), ConfigError> {
    if CLIENT_VARIABLES.contains(&name) {
        return Ok(());
    }
    let Some(rest) = name.strip_prefix(ENV_PREFIX) else {
        return Ok(());
    };
    let rest = rest.to_ascii_lowercase();
    let Some(section) = OVERRIDABLE_SECTIONS
        .iter()
        .find(|s| rest.starts_with(&format!("{s}_")))
    else {
        return Ok(());
    };
    let key = &rest[section.len() + 1..];
    let parsed = format!("v = {value}")
        .parse::<toml::Table>()
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(value.to_string()));
    let table = doc
        .entry(section.to_string())
        .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    match table {
        toml::Value::Table(t) => {
            t.insert(key.to_string(), parsed);
            Ok(())
        }
        _ => Err(ConfigError::Invalid(format!("{section} must be a table"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const THREE: &str = r#"
[[nodes]]
id = 1
api = "127.0.0.1:7001"
raft = "127.0.0.1:7101"
data_dir = "d1"
[[nodes]]
id = 2
api = "127.0.0.1:7002"
raft = "127.0.0.1:7102"
data_dir = "d2"
"#;

    fn no_env() -> Vec<(String, String)> {
        Vec::new()
    }

    #[test]
    fn defaults_fill_missing_sections() {
        let c = Config::parse(THREE, no_env()).unwrap();
        assert_eq!(c.raft, RaftConfig::default());
        assert_eq!(c.lease, LeaseConfig::default());
        assert_eq!(c.node(2).unwrap().api, "127.0.0.1:7002");
    }

    #[test]
    fn env_overrides_file() {
        let env = vec![
            (
                "BATON_RAFT_SWEEP_INTERVAL_MS".to_string(),
                "100".to_string(),
            ),
            ("BATON_RAFT_SECRET".to_string(), "s3cret".to_string()),
            ("UNRELATED".to_string(), "x".to_string()),
            // The CLI's key in the same shell: not `api.key`.
            ("BATON_API_KEY".to_string(), "k-0123".to_string()),
        ];
        let c = Config::parse(THREE, env).unwrap();
        assert_eq!(c.raft.sweep_interval_ms, 100);
        assert_eq!(c.raft.secret, "s3cret");
    }

    #[test]
    fn clients_drop_idle_connections_well_before_a_node_closes_them() {
        let node_closes = Duration::from_millis(ApiConfig::default().header_read_timeout_ms);
        assert!(crate::wire::CLIENT_IDLE_REUSE * 2 <= node_closes);
    }

    #[test]
    fn unknown_key_is_rejected() {
        let text = format!("{THREE}\n[lease]\nmax_tll_ms = 5\n");
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains("max_tll_ms"), "{err}");
    }

    /// `THREE` with `section` appended (`[raft]\nsecret = ...`).
    fn with(section: &str) -> Result<Config, ConfigError> {
        Config::parse(&format!("{THREE}\n{section}\n"), no_env())
    }

    #[test]
    fn auth_needs_a_keys_file_and_is_overridable() {
        let text = format!("{THREE}\n[auth]\nenabled = true\n");
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains("auth.keys_file"), "{err}");
        let env = vec![(
            "BATON_AUTH_KEYS_FILE".to_string(),
            "/etc/baton/keys".to_string(),
        )];
        let c = Config::parse(&text, env).unwrap();
        assert!(c.auth.enabled);
        assert_eq!(c.auth.keys_file, Some(PathBuf::from("/etc/baton/keys")));
        assert!(!Config::parse(THREE, no_env()).unwrap().auth.enabled);
    }

    #[test_case::test_case("[tls]\ncert_file = \"c.pem\"", "tls.key_file" ; "cert without key")]
    #[test_case::test_case("[tls]\nkey_file = \"k.pem\"", "tls.cert_file" ; "key without cert")]
    #[test_case::test_case("[tls]\nca_file = \"ca.pem\"", "tls.ca_file" ; "ca without tls")]
    #[test_case::test_case("[tls]\ncert_file = \"c.pem\"\nkey_file = \"k.pem\"\nclient_auth = true", "tls.client_auth" ; "client auth without ca")]
    fn bad_tls_settings_are_rejected(section: &str, key: &str) {
        let err = with(section).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test]
    fn tls_paths_name_the_node_and_are_overridable() {
        let env = vec![
            (
                "BATON_TLS_CERT_FILE".to_string(),
                "certs/node{node}.pem".to_string(),
            ),
            (
                "BATON_TLS_KEY_FILE".to_string(),
                "certs/node{node}.key".to_string(),
            ),
        ];
        let c = Config::parse(THREE, env).unwrap();
        assert_eq!(c.tls.scheme(), "https");
        let cert = c.tls.cert_file.as_deref().unwrap();
        assert_eq!(
            TlsConfig::path_for(cert, 2),
            PathBuf::from("certs/node2.pem")
        );
        assert_eq!(Config::parse(THREE, no_env()).unwrap().tls.scheme(), "http");
    }

    #[test_case::test_case("secret = \"s3cret \"", "raft.secret" ; "trailing space")]
    #[test_case::test_case("secret = \" s3cret\"", "raft.secret" ; "leading space")]
    #[test_case::test_case("secret = \"s3cret\\n\"", "raft.secret" ; "trailing newline")]
    #[test_case::test_case("secret = \"s3\\u0007cret\"", "raft.secret" ; "control character inside")]
    #[test_case::test_case("max_connections = 1048577", "raft.max_connections" ; "raft connections above bound")]
    #[test_case::test_case("max_message_bytes = 1073741825", "raft.max_message_bytes" ; "message above bound")]
    #[test_case::test_case("max_message_bytes = 1000", "raft.max_message_bytes" ; "message below minimum")]
    #[test_case::test_case("max_snapshot_bytes = 17179869185", "raft.max_snapshot_bytes" ; "snapshot above bound")]
    #[test_case::test_case("max_snapshot_bytes = 0", "raft.max_snapshot_bytes" ; "snapshot zero")]
    fn bad_raft_values_are_rejected(line: &str, key: &str) {
        let err = with(&format!("[raft]\n{line}")).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test_case::test_case("max_list_limit = 9223372036854775807", "api.max_list_limit" ; "list limit i64 max")]
    #[test_case::test_case("max_list_limit = 100001", "api.max_list_limit" ; "list limit above bound")]
    #[test_case::test_case("max_body_bytes = 16777217", "api.max_body_bytes" ; "body above bound")]
    #[test_case::test_case("max_connections = 9223372036854775807", "api.max_connections" ; "api connections i64 max")]
    #[test_case::test_case("max_waiters_per_key = 0", "api.max_waiters_per_key" ; "no waiters per key")]
    #[test_case::test_case("max_waiters_per_key = 100001", "api.max_waiters_per_key" ; "waiters per key above bound")]
    #[test_case::test_case("max_waiters = 10000001", "api.max_waiters" ; "waiters above bound")]
    #[test_case::test_case("max_waiters = 0", "api.max_waiters" ; "no waiters")]
    #[test_case::test_case("max_locks = 100000001", "api.max_locks" ; "locks above bound")]
    #[test_case::test_case("max_locks = 0", "api.max_locks" ; "no locks")]
    #[test_case::test_case("max_event_streams = 0", "api.max_event_streams" ; "no streams")]
    #[test_case::test_case("max_event_streams = 9223372036854775807", "api.max_event_streams" ; "streams i64 max")]
    fn bad_api_values_are_rejected(line: &str, key: &str) {
        let err = with(&format!("[api]\n{line}")).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test_case::test_case("max_ttl_ms = 9223372036854775807", "lease.max_ttl_ms" ; "ttl i64 max")]
    #[test_case::test_case("max_wait_ms = 86400001", "lease.max_wait_ms" ; "wait above bound")]
    #[test_case::test_case("max_lock_delay_ms = 3600001", "lease.max_lock_delay_ms" ; "lock delay above bound")]
    fn bad_lease_values_are_rejected(line: &str, key: &str) {
        let err = with(&format!("[lease]\n{line}")).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test_case::test_case("[raft]\nsecret = \"a long secret with inner spaces\"" ; "secret with inner spaces")]
    #[test_case::test_case("[api]\nmax_list_limit = 100000" ; "list limit at bound")]
    #[test_case::test_case("[api]\nmax_waiters_per_key = 100000\nmax_waiters = 10000000\nmax_locks = 100000000" ; "quotas at bound")]
    #[test_case::test_case("[lease]\nmax_ttl_ms = 31536000000" ; "ttl at bound")]
    fn values_at_the_bounds_are_accepted(section: &str) {
        with(section).unwrap();
    }

    #[test_case::test_case("127.0.0.1:7001", "127.0.0.1:7102", "nodes[1].api" ; "api equals another node's api")]
    #[test_case::test_case("127.0.0.1:7003", "127.0.0.1:7001", "nodes[1].raft" ; "raft equals another node's api")]
    #[test_case::test_case("127.0.0.1:7003", "127.0.0.1:7003", "nodes[1].raft" ; "raft equals own api")]
    #[test_case::test_case("0.0.0.0:7002", "127.0.0.1:7102", "nodes[1].api" ; "unspecified v4 api")]
    #[test_case::test_case("127.0.0.1:7002", "[::]:7102", "nodes[1].raft" ; "unspecified v6 raft")]
    fn bad_node_addresses_are_rejected(api: &str, raft: &str, key: &str) {
        let text = THREE
            .replace("api = \"127.0.0.1:7002\"", &format!("api = \"{api}\""))
            .replace("raft = \"127.0.0.1:7102\"", &format!("raft = \"{raft}\""));
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test]
    fn a_node_without_grpc_serves_none_and_one_with_it_names_its_address() {
        let c = Config::parse(THREE, no_env()).unwrap();
        assert_eq!(c.node(1).unwrap().grpc, None);
        let text = THREE.replace(
            "data_dir = \"d2\"",
            "data_dir = \"d2\"\ngrpc = \"127.0.0.1:8765\"",
        );
        let c = Config::parse(&text, no_env()).unwrap();
        assert_eq!(c.node(2).unwrap().grpc.as_deref(), Some("127.0.0.1:8765"));
    }

    #[test_case::test_case("127.0.0.1:7002", "nodes[1].grpc" ; "grpc equals own api")]
    #[test_case::test_case("127.0.0.1:7101", "nodes[1].grpc" ; "grpc equals another node's raft")]
    #[test_case::test_case("localhost:8765", "nodes[1].grpc" ; "a host name")]
    #[test_case::test_case("0.0.0.0:8765", "nodes[1].grpc" ; "unspecified grpc")]
    fn bad_grpc_addresses_are_rejected(grpc: &str, key: &str) {
        let text = THREE.replace(
            "data_dir = \"d2\"",
            &format!("data_dir = \"d2\"\ngrpc = \"{grpc}\""),
        );
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains(key), "{err}");
    }

    #[test]
    fn invalid_values_name_the_key() {
        let text = format!("{THREE}\n[lease]\nmin_ttl_ms = 0\n");
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains("lease.min_ttl_ms"), "{err}");
        let text = THREE.replace("id = 2", "id = 1");
        let err = Config::parse(&text, no_env()).unwrap_err().to_string();
        assert!(err.contains("appears twice"), "{err}");
    }
}
