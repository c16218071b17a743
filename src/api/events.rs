//! `GET /v1/locks/{key}/events`: the key's applied events as Server-Sent Events, from any
//! node (every node applies every entry; this one is not relayed to the leader).
//!
//! Each SSE event is named after its kind (`acquired`, `renewed`, `released`, `expired`,
//! `force_released`, `queued`, `wait_timeout`, `wait_cancelled`) and carries JSON with
//! the log index, key, owner, token and cluster time. The SSE `id` is the log index; it
//! is set on the last event of each entry only, so a client that reconnects with
//! `Last-Event-ID` (or `?after=INDEX`) gets exactly the events after the entries it has
//! seen in full — from storage first, then live, without a gap or a repeat. When the
//! node no longer stores events that far back (retention, a snapshot installed in
//! between, or further back than `event_log::RESUME_REACH_ENTRIES`), the stream starts
//! with a `reset` event: re-read the lock, then follow on.
//!
//! Stored events are read from the key's own index, off the async runtime; live ones
//! come from a subscription to this key only, so a stream wakes when its key changes.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::{broadcast, mpsc};

use crate::node::{KeyEvents, KeyUpdate};

use super::extract::{ApiQuery, LockKey};
use super::problem::ApiError;
use super::App;
use crate::locks::{Event, Key};
use crate::node::Node;
use crate::wire::{EventsQuery, LockEvent, StreamReset};

/// Events read from storage per round while catching up.
const CATCH_UP_BATCH: usize = 1_000;
/// SSE events buffered for a slow client before the producer waits.
pub(super) const CLIENT_BUFFER: usize = 256;
/// Comment lines keep idle connections (and proxies) alive.
pub(super) const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub async fn events(
    State(app): State<App>,
    LockKey(key): LockKey,
    headers: HeaderMap,
    ApiQuery(q): ApiQuery<EventsQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    let last_event_id = match headers.get("last-event-id") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<u64>().ok())
                .ok_or_else(|| {
                    ApiError::InvalidRequest("Last-Event-ID must be a log index".into())
                })?,
        ),
    };
    let after = last_event_id.or(q.after);
    // Held by the producer: the place is free again when the stream ends.
    let permit = app.quotas.open_stream()?;
    // Subscribe before reading storage, so nothing applied in between is missed.
    let live = app.node.subscribe_key_events(&key);
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tracing::debug!(key = %key, ?after, "event stream opened");
    tokio::spawn(async move {
        produce(app.node.clone(), key, after, live, tx).await;
        drop(permit);
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Feeds the client: stored events after `after` (if given), then live ones. Ends when
/// the client goes away or the node stops.
async fn produce(
    node: Node,
    key: Key,
    after: Option<u64>,
    mut live: KeyEvents,
    tx: mpsc::Sender<SseEvent>,
) {
    // The index of the last entry whose events the client has in full.
    let mut sent = match after {
        Some(after) => match catch_up(&node, &key, after, &tx).await {
            Some(sent) => sent,
            None => return,
        },
        // Live only: everything received from the subscription is new to the client.
        None => 0,
    };
    loop {
        tokio::select! {
            received = live.recv() => match received {
                // Entries up to a snapshot were never applied here: whoever has not seen
                // everything before it starts over (`catch_up` sends the `reset`).
                Ok(KeyUpdate::Restarted { first_index }) => {
                    if sent.saturating_add(1) < first_index {
                        match catch_up(&node, &key, sent, &tx).await {
                            Some(s) => sent = s,
                            None => return,
                        }
                    }
                }
                Ok(KeyUpdate::Events(batch)) => {
                    let mine: Vec<&Event> = batch.iter().filter(|e| e.key == key && e.index > sent).collect();
                    if let Some(last) = mine.last() {
                        let last = last.index;
                        if !send_all(&tx, &mine).await {
                            return;
                        }
                        sent = last;
                    }
                }
                Err(broadcast::error::RecvError::Lagged(_)) => match catch_up(&node, &key, sent, &tx).await {
                    Some(s) => sent = s,
                    None => return,
                },
                Err(broadcast::error::RecvError::Closed) => return,
            },
            _ = tx.closed() => return,
        }
    }
}

/// Sends the stored events of `key` after index `after` (a `reset` first if some are no
/// longer stored); returns the index the client is complete up to, or `None` when the
/// client is gone or storage failed.
async fn catch_up(node: &Node, key: &Key, after: u64, tx: &mpsc::Sender<SseEvent>) -> Option<u64> {
    let mut sent = after;
    let mut checked_gap = false;
    loop {
        let (events, first) = match node.key_events_after(key, sent, CATCH_UP_BATCH).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "event stream: cannot read stored events");
                return None;
            }
        };
        if !checked_gap && sent.saturating_add(1) < first {
            let data = StreamReset {
                first_index: first,
                reason:
                    "events before first_index are no longer stored on this node; re-read the lock"
                        .into(),
            };
            let data = serde_json::to_string(&data).unwrap_or_default();
            let reset = SseEvent::default().event("reset").data(data);
            tx.send(reset).await.ok()?;
            // The client re-reads the lock and is complete up to here.
            sent = first - 1;
        }
        checked_gap = true;
        let refs: Vec<&Event> = events.iter().collect();
        let Some(last) = refs.last().map(|e| e.index) else {
            return Some(sent);
        };
        if !send_all(tx, &refs).await {
            return None;
        }
        sent = last;
        if events.len() < CATCH_UP_BATCH {
            return Some(sent);
        }
    }
}

/// Sends `events` (whole entries, in log order), with the id on each entry's last one.
pub(super) async fn send_all(tx: &mpsc::Sender<SseEvent>, events: &[&Event]) -> bool {
    for (i, e) in events.iter().enumerate() {
        let last_of_entry = events.get(i + 1).is_none_or(|next| next.index != e.index);
        if tx.send(sse_event(e, last_of_entry)).await.is_err() {
            return false;
        }
    }
    true
}

fn sse_event(e: &Event, with_id: bool) -> SseEvent {
    let data = serde_json::to_string(&LockEvent::from(e)).unwrap_or_default();
    let sse = SseEvent::default().event(e.kind.as_str()).data(data);
    if with_id {
        sse.id(e.index.to_string())
    } else {
        sse
    }
}
