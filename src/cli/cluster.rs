//! `baton cluster add | remove | status`: membership changes, and the membership as the
//! leader sees it (voters, learners, how far each has the log, a change under way).
//!
//! `add` and `remove` are admin requests (`admin=*` with auth on), sent to any node and
//! relayed to the leader; they are retried like writes (see `Client::add_node`).
//! Exit codes as for the other client commands ([`super::exit`]): a refusal
//! (`MEMBERSHIP_UNSAFE`, `NODE_CONFLICT`, …) is 1 with the server's sentence.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::json;

use super::exit;
use super::locks::Outcome;
use super::ClientArgs;
use crate::client::{Client, ClientError};
use crate::wire::{ClusterView, MembershipAnswer};
use crate::NodeId;

/// How long `add` lets the new node catch up (the leader stops earlier, at its
/// `raft.catch_up_timeout_ms`, with `NOT_CAUGHT_UP`).
const ADD_WAIT: Duration = Duration::from_secs(600);

/// `baton cluster …`.
#[derive(Debug, Args)]
pub struct ClusterArgs {
    #[command(subcommand)]
    pub command: ClusterCommand,
}

/// The membership commands.
#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Add node ID (started with `baton server --join`): a learner until it has caught
    /// up with the leader's log, then a voter. Prints the voters and learners after it.
    Add {
        /// A node id never used in this cluster before.
        id: NodeId,
        /// The new node's API address (ip:port).
        #[arg(long, value_name = "IP:PORT")]
        api: String,
        /// The new node's Raft address (ip:port).
        #[arg(long, value_name = "IP:PORT")]
        raft: String,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// Remove node ID (a voter, the leader too, or a learner). Stop the removed node
    /// afterwards and do not reuse its id or data dir.
    Remove {
        id: NodeId,
        #[command(flatten)]
        client: ClientArgs,
    },
    /// The membership as the leader sees it: each member's role, addresses and log
    /// index, and a membership change under way.
    Status {
        #[command(flatten)]
        client: ClientArgs,
    },
}

impl ClusterCommand {
    fn client_args(&self) -> &ClientArgs {
        match self {
            ClusterCommand::Add { client, .. }
            | ClusterCommand::Remove { client, .. }
            | ClusterCommand::Status { client } => client,
        }
    }
}

/// Runs one command; returns the process exit code.
pub fn run(args: ClusterArgs) -> ExitCode {
    let cmd = args.command;
    let client_args = cmd.client_args().clone();
    let client = match client_args.connect() {
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
            if client_args.json {
                println!("{}", out.json);
            } else {
                println!("{}", out.human);
            }
            ExitCode::from(out.code)
        }
        Err(e) => {
            if client_args.json {
                println!("{}", json!({"error": e.to_string(), "code": e.code()}));
            }
            eprintln!("baton: {e}");
            ExitCode::from(exit::for_client_error(&e))
        }
    }
}

async fn call(client: &Client, cmd: ClusterCommand) -> Result<Outcome, ClientError> {
    match cmd {
        ClusterCommand::Add { id, api, raft, .. } => {
            let a = client.add_node(id, &api, &raft, ADD_WAIT).await?;
            let what = if a.changed {
                format!("node {id} added as a voter")
            } else {
                format!("node {id} already is a voter")
            };
            Ok(changed(what, &a))
        }
        ClusterCommand::Remove { id, .. } => {
            let a = client.remove_node(id).await?;
            Ok(changed(format!("node {id} removed"), &a))
        }
        ClusterCommand::Status { .. } => status(client).await,
    }
}

fn changed(what: String, a: &MembershipAnswer) -> Outcome {
    Outcome {
        human: format!(
            "{what}; voters {}; learners {}",
            ids(&a.voters),
            ids(&a.learners)
        ),
        json: json!(a),
        code: exit::OK,
    }
}

/// The leader's view (asked directly, when the first node that answers is not the
/// leader): only the leader knows how far each member has the log.
async fn status(client: &Client) -> Result<Outcome, ClientError> {
    let first = client.cluster_status().await?;
    let mut view = first.clone();
    if first.leader_id != Some(first.node_id) {
        let leader_api = first
            .leader_id
            .and_then(|l| first.members.iter().find(|m| m.id == l))
            .map(|m| m.api.clone());
        if let Some(api) = leader_api {
            let tls = client
                .endpoints()
                .first()
                .is_some_and(|e| e.starts_with("https://"));
            let endpoint = if tls { format!("https://{api}") } else { api };
            if let Ok(v) = client.node_status(&endpoint).await {
                view = v;
            }
        }
    }
    Ok(Outcome {
        human: describe(&view),
        json: json!(view),
        code: if view.leader_id.is_some() {
            exit::OK
        } else {
            exit::UNAVAILABLE
        },
    })
}

fn describe(v: &ClusterView) -> String {
    let voters: Vec<NodeId> = v.members.iter().filter(|m| m.voter).map(|m| m.id).collect();
    let learners: Vec<NodeId> = v
        .members
        .iter()
        .filter(|m| !m.voter)
        .map(|m| m.id)
        .collect();
    let leader = v.leader_id.map_or("none".to_string(), |l| l.to_string());
    let mut lines = vec![format!(
        "leader {leader}, term {}; voters {}; learners {} (as node {} sees it)",
        v.term,
        ids(&voters),
        ids(&learners),
        v.node_id
    )];
    for m in &v.members {
        let role = match (m.voter, Some(m.id) == v.leader_id) {
            (true, true) => "leader",
            (true, false) => "voter",
            (false, _) => "learner",
        };
        let matched = m
            .matched_index
            .map_or(String::new(), |i| format!("  log index {i}"));
        lines.push(format!(
            "node {:<3} {role:<8} api {:<21} raft {:<21}{matched}",
            m.id, m.api, m.raft
        ));
    }
    if let Some(c) = &v.membership_change {
        let progress = match (c.matched_index, c.target_index) {
            (Some(m), Some(t)) => format!(", has index {m} of {t}"),
            (None, Some(t)) => format!(", has nothing of {t} yet"),
            _ => String::new(),
        };
        lines.push(format!(
            "under way: {} node {}: {}{progress} (since {})",
            c.action, c.node_id, c.phase, c.since
        ));
    }
    lines.join("\n")
}

fn ids(ids: &[NodeId]) -> String {
    if ids.is_empty() {
        return "none".into();
    }
    ids.iter()
        .map(|i| i.to_string())
        .collect::<Vec<_>>()
        .join(" ")
}
