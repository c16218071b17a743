//! `baton bench`: a closed-loop load generator for a running cluster.
//!
//! N tasks, each with its own keep-alive HTTP/1.1 connection ([`conn`]), send one
//! request at a time for a fixed duration after a warmup ([`load`]); each task records
//! latencies in an HDR histogram and counts outcomes ([`stats`]); the runner finds the
//! leader and spreads the connections ([`topology`]), merges the records and measures
//! the client's own CPU use ([`cpu`]) into one [`Report`] ([`run()`]).
//!
//! Modes ([`Mode`]) exercise the write path (uncontended, cycle, contended), the queue
//! (queue) and the linearizable read path (read); targets ([`Target`]) show the cost of forwarding.
//! Two modes are not closed loops but crowds: `watch` holds N event streams
//! open while one writer changes their keys ([`watch`]), and `connect` releases N
//! clients at once ([`connect`]). Every mode samples the nodes' RSS and descriptors
//! before and after it opens its connections ([`procs`]), raises its own open-files limit
//! and names the limit that bounded it ([`limits`]).
//! The benchmark only ever talks to the endpoints it is given (loopback in
//! `scripts/bench.sh`), and every run is bounded by `--warmup + --duration` plus at
//! most one request timeout.
//!
//! It deliberately does not open an open-loop (fixed arrival rate) stream, follow leader
//! changes during a run, or retry: each request is measured exactly once as it ended.

pub mod conn;
pub mod connect;
pub mod cpu;
mod crowd;
pub mod limits;
pub mod load;
pub mod procs;
pub mod report;
pub mod run;
pub mod stats;
pub mod topology;
pub mod watch;

use serde::Serialize;

pub use report::{ClientUsage, Report};
pub use run::{run, Settings, Tick};

/// What the load tasks send.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Acquire a fresh key per request (one Raft write each, no conflicts).
    Uncontended,
    /// Acquire then release a per-connection key (two writes per cycle).
    Cycle,
    /// Every connection acquires one key; `LOCK_HELD` is an expected outcome.
    Contended,
    /// Linearizable `GET` of one key held for the whole run.
    Read,
    /// Every connection waits in one key's FIFO queue and releases at once when
    /// granted: the handoff rate, and each waiter's time in the queue.
    Queue,
    /// Every connection is an event stream of one of `--keys` keys while one writer
    /// changes them `--rate` times a second: delivery latency, losses, memory per stream.
    Watch,
    /// Every connection is a client of a reconnect storm: all connect at once and send
    /// one read; time until all are served, failures, memory per idle connection.
    Connect,
}

impl Mode {
    /// The CLI / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Uncontended => "uncontended",
            Mode::Cycle => "cycle",
            Mode::Contended => "contended",
            Mode::Read => "read",
            Mode::Queue => "queue",
            Mode::Watch => "watch",
            Mode::Connect => "connect",
        }
    }
}

/// Which nodes the connections go to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Every connection to the leader.
    Leader,
    /// Spread over the endpoints that are not the leader (every write is forwarded).
    Follower,
    /// Spread over all endpoints, round robin by connection.
    All,
}

impl Target {
    /// The CLI / JSON name.
    pub fn as_str(self) -> &'static str {
        match self {
            Target::Leader => "leader",
            Target::Follower => "follower",
            Target::All => "all",
        }
    }
}

/// Why a benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Settings that cannot make a run (zero connections, empty duration, ...).
    #[error("invalid settings: {0}")]
    Invalid(String),
    /// None of the endpoints answered `GET /v1/cluster`.
    #[error("no endpoint answered GET /v1/cluster: {0}")]
    NoEndpoint(String),
    /// Endpoints answered, but none knew a leader in time.
    #[error("the cluster has no leader: {0}")]
    NoLeader(String),
    /// `--target follower` with only the leader among the endpoints.
    #[error("--target follower needs an endpoint other than the leader {0}")]
    NoFollower(String),
    /// A load connection could not be opened.
    #[error("cannot open the load connections: {0}")]
    Connect(String),
    /// The read key could not be acquired before a `read` run.
    #[error("cannot prepare the run: {0}")]
    Setup(String),
    /// A load task panicked or was cancelled.
    #[error("a load task failed: {0}")]
    Task(String),
}
