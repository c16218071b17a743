//! Event followers of the chaos workload: one per node and followed key, each recording
//! every SSE event it receives ([`Received`]) and resuming on the *same* node with
//! `Last-Event-ID` whenever the stream drops, so that node kills, restarts and
//! isolations all cut streams that must resume without a gap or a repeat.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::events::Received;
use super::workload::Recorder;
use crate::client::events::parse_block;
use crate::sync::LockUnpoisoned;
use crate::wire::parse_rfc3339_ms;

/// Pause before reconnecting after a dropped stream or a refused connection.
const RECONNECT_PAUSE: Duration = Duration::from_millis(200);

/// Received events of every follower of a process.
pub type Log = Arc<Mutex<Vec<Received>>>;

/// Follows `key` on `endpoint` until `until` (module docs).
pub(super) async fn follow(
    http: reqwest::Client,
    endpoint: String,
    key: String,
    rec: Recorder,
    log: Log,
    until: Instant,
) {
    let follower = format!("{endpoint}/{key}");
    let mut last_id = 0u64;
    let mut conn = 0u64;
    let until = tokio::time::Instant::from_std(until);
    while tokio::time::Instant::now() < until {
        let req = http
            .get(crate::wire::endpoint_url(
                &endpoint,
                &format!("/v1/locks/{key}/events"),
            ))
            .header("last-event-id", last_id.to_string());
        let resp = match tokio::time::timeout_at(until, req.send()).await {
            Ok(Ok(resp)) if resp.status().is_success() => resp,
            Ok(_) => {
                tokio::time::sleep(RECONNECT_PAUSE).await;
                continue;
            }
            Err(_) => return,
        };
        let mut resp = resp;
        let mut buffer = String::new();
        loop {
            let chunk = match tokio::time::timeout_at(until, resp.chunk()).await {
                Ok(Ok(Some(chunk))) => chunk,
                Ok(_) => break,
                Err(_) => return,
            };
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find("\n\n") {
                let block: String = buffer.drain(..end + 2).collect();
                let Some(sse) = parse_block(&block) else {
                    continue;
                };
                let mut r = Received {
                    follower: follower.clone(),
                    key: key.clone(),
                    conn,
                    rx_ms: rec.now_ms(),
                    name: sse.event.clone(),
                    id: sse.id,
                    index: None,
                    owner: None,
                    token: None,
                    at_ms: None,
                    first_index: None,
                };
                if let Some(reset) = sse.reset() {
                    r.first_index = Some(reset.first_index);
                } else if let Some(e) = sse.lock_event() {
                    r.index = Some(e.index);
                    r.owner = Some(e.owner.clone());
                    r.token = e.token;
                    r.at_ms = parse_rfc3339_ms(&e.at).ok();
                }
                if let Some(id) = sse.id {
                    last_id = id;
                }
                log.lock_unpoisoned().push(r);
            }
        }
        conn += 1;
        tokio::time::sleep(RECONNECT_PAUSE).await;
    }
}
