//! `baton watch KEY`: follow a key's events (acquired, renewed, released, expired, …) as
//! they are applied, from any node, one line each.
//!
//! Reads `GET /v1/locks/{key}/events` (Server-Sent Events). When the connection drops
//! — the node restarts, the network fails — it reconnects to the next endpoint with the
//! last event id it saw, so no event is missed or shown twice; a node that no longer
//! stores events that far back says so (`reset`), and the watch goes on from there.
//! Runs until interrupted.

use std::process::ExitCode;
use std::time::Duration;

use crate::wire::{LockEvent, Problem};
use anyhow::Context;
use clap::Args;

/// Pause before reconnecting, doubled per failure up to [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Arguments of `baton watch`.
#[derive(Debug, Args)]
pub struct WatchArgs {
    /// The lock key to follow: 1 to 255 bytes of A-Z a-z 0-9 . _ : -
    #[arg(value_parser = super::locks::parse_key)]
    pub key: String,
    #[command(flatten)]
    pub client: super::ClientArgs,
    /// Replay the stored events after this log index first (0: all that are stored).
    #[arg(long, value_name = "INDEX")]
    pub after: Option<u64>,
}

/// Runs `baton watch`; returns the process exit code.
pub fn run(args: WatchArgs) -> ExitCode {
    match watch(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn watch(args: WatchArgs) -> anyhow::Result<()> {
    let endpoints = super::resolve_endpoints(&args.client.endpoints, &args.client.config)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(follow(&args, &endpoints))
}

async fn follow(args: &WatchArgs, endpoints: &[String]) -> anyhow::Result<()> {
    let mut headers = reqwest::header::HeaderMap::new();
    if let Some(key) = &args.client.api_key {
        let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {key}"))
            .context("the API key has characters a header cannot carry")?;
        value.set_sensitive(true);
        headers.insert(reqwest::header::AUTHORIZATION, value);
    }
    let mut http = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(2))
        .default_headers(headers);
    if let Some(path) = &args.client.ca_file {
        let pem = std::fs::read(path)
            .with_context(|| format!("cannot read CA file {}", path.display()))?;
        http = http.tls_built_in_root_certs(false);
        for cert in reqwest::Certificate::from_pem_bundle(&pem)
            .with_context(|| format!("CA file {}", path.display()))?
        {
            http = http.add_root_certificate(cert);
        }
    }
    let http = http.build()?;
    let mut last_id = args.after;
    let mut backoff = FIRST_BACKOFF;
    for endpoint in endpoints.iter().cycle() {
        match stream_from(&http, endpoint, &args.key, &mut last_id, args.client.json).await {
            Ok(StreamEnd::Refused(reason)) => anyhow::bail!("{endpoint}: {reason}"),
            Ok(StreamEnd::Closed) => {
                backoff = FIRST_BACKOFF;
                eprintln!("# {endpoint} closed the stream; reconnecting");
            }
            Err(e) => eprintln!("# {endpoint}: {e}; trying the next node"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    anyhow::bail!("no endpoints")
}

enum StreamEnd {
    /// The server answered with an error that a retry will not fix (bad key, …).
    Refused(String),
    /// The stream ended; reconnect.
    Closed,
}

/// Reads one connection's events, printing them and tracking the last id.
async fn stream_from(
    http: &reqwest::Client,
    endpoint: &str,
    key: &str,
    last_id: &mut Option<u64>,
    json: bool,
) -> anyhow::Result<StreamEnd> {
    let mut req = http.get(crate::wire::endpoint_url(
        endpoint,
        &format!("/v1/locks/{key}/events"),
    ));
    if let Some(id) = last_id {
        req = req.header("last-event-id", id.to_string());
    }
    let mut resp = req.send().await?;
    if resp.status().is_client_error() {
        let status = resp.status();
        let problem: Problem = resp.json().await.unwrap_or_default();
        let detail = if problem.detail.is_empty() {
            format!("request refused (HTTP {status})")
        } else {
            problem.detail
        };
        return Ok(StreamEnd::Refused(detail));
    }
    anyhow::ensure!(resp.status().is_success(), "HTTP {}", resp.status());
    let mut buf = String::new();
    while let Some(chunk) = resp.chunk().await? {
        buf.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            handle_block(&block, last_id, json);
        }
    }
    Ok(StreamEnd::Closed)
}

/// Prints one SSE block and remembers its id.
fn handle_block(block: &str, last_id: &mut Option<u64>, json: bool) {
    let Some(ev) = crate::client::events::parse_block(block) else {
        return; // a keep-alive comment
    };
    if let Some(reset) = ev.reset() {
        eprintln!(
            "# events before index {} are no longer stored on this node; some were missed",
            reset.first_index
        );
    } else if json {
        println!("{}", ev.data);
    } else if let Some(e) = ev.lock_event() {
        println!("{}", text_line(&e));
    } else {
        eprintln!("# unexpected event {:?}: {}", ev.event, ev.data);
    }
    if ev.id.is_some() {
        *last_id = ev.id;
    }
}

/// `2026-11-30T06:48:05.966Z  acquired        deploy  owner=ci-1 token=42 expires=…`
fn text_line(e: &LockEvent) -> String {
    let mut line = format!(
        "{}  {:<15} {}  owner={}",
        e.at,
        e.event.as_str(),
        e.key,
        e.owner
    );
    if let Some(token) = e.token {
        line.push_str(&format!(" token={token}"));
    }
    if let Some(expires) = &e.expires_at {
        line.push_str(&format!(" expires={expires}"));
    }
    line.push_str(&format!(" (index {})", e.index));
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::Value;

    #[test]
    fn an_event_block_prints_and_moves_the_last_id() {
        let mut last = None;
        let block = "event: acquired\ndata: {\"index\":7,\"key\":\"k\",\"event\":\"acquired\",\"owner\":\"a\",\"token\":7,\"at\":\"t\"}\nid: 7\n\n";
        handle_block(block, &mut last, false);
        assert_eq!(last, Some(7));
        // An event without an id (not the last of its entry) keeps the previous id.
        handle_block("event: released\ndata: {\"index\":8}\n\n", &mut last, false);
        assert_eq!(last, Some(7));
        // Keep-alives change nothing.
        handle_block(":\n\n", &mut last, false);
        assert_eq!(last, Some(7));
    }

    #[test]
    fn text_lines_name_the_event_owner_and_token() {
        let v: Value = serde_json::json!({"index": 9, "key": "deploy", "event": "acquired", "owner": "ci", "token": 9, "at": "2026-01-01T00:00:00.000Z"});
        let line = text_line(&LockEvent::deserialize(&v).unwrap());
        assert!(
            line.contains("acquired")
                && line.contains("owner=ci")
                && line.contains("token=9")
                && line.contains("(index 9)"),
            "{line}"
        );
    }
}
