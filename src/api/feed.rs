//! `GET /v1/events?prefix=P`: the applied events of every key that starts with `P`, live,
//! as Server-Sent Events, from any node. One connection follows many keys: the status
//! page's feed (a browser opens at most six connections to a host, so one stream per
//! key would not do), and anyone else who watches a prefix.
//!
//! The events are those of one key's stream (`api::events`): named by kind, JSON
//! `LockEvent` data, the log index as `id` on the last event of each entry.
//!
//! Live only, no resume: a key's stored events are indexed by key, so a resume is cheap
//! for one key and a scan of every key for a prefix. Follow a prefix by opening the
//! stream, then reading the list (`GET /v1/locks?prefix=`), and apply the events above
//! the list's state. The stream sends a `reset` event when this node dropped events that
//! a slow client did not take in time, or a snapshot install restarted the history (the
//! entries it covers were never applied here): re-read the list, then follow on.

use std::convert::Infallible;

use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use futures::Stream;
use openraft::async_runtime::WatchReceiver;
use tokio::sync::{broadcast, mpsc};

use super::events::{send_all, CLIENT_BUFFER, KEEP_ALIVE};
use super::extract::ApiQuery;
use super::problem::ApiError;
use super::App;
use crate::locks::{Event, Key};
use crate::node::{KeyUpdate, Node};
use crate::wire::{FeedQuery, StreamReset};

/// `GET /v1/events`.
pub async fn feed(
    State(app): State<App>,
    ApiQuery(q): ApiQuery<FeedQuery>,
) -> Result<Sse<impl Stream<Item = Result<SseEvent, Infallible>>>, ApiError> {
    if !q.prefix.is_empty() {
        Key::parse(q.prefix.clone())
            .map_err(|e| ApiError::InvalidRequest(format!("prefix: {e}")))?;
    }
    // Counted with the key streams: the same per-node cap.
    let permit = app.quotas.open_stream()?;
    let live = app.node.subscribe_events();
    let (tx, rx) = mpsc::channel(CLIENT_BUFFER);
    tracing::debug!(prefix = %q.prefix, "event feed opened");
    let node = app.node.clone();
    tokio::spawn(async move {
        produce(node, q.prefix, live, tx).await;
        drop(permit);
    });
    let stream =
        futures::stream::unfold(
            rx,
            |mut rx| async move { rx.recv().await.map(|e| (Ok(e), rx)) },
        );
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(KEEP_ALIVE)))
}

/// Sends the client the live events under `prefix` until it goes away or the node stops.
async fn produce(
    node: Node,
    prefix: String,
    mut live: broadcast::Receiver<KeyUpdate>,
    tx: mpsc::Sender<SseEvent>,
) {
    loop {
        let received = tokio::select! {
            received = live.recv() => received,
            _ = tx.closed() => return,
        };
        let sent = match received {
            Ok(KeyUpdate::Events(batch)) => {
                let mine: Vec<&Event> = batch
                    .iter()
                    .filter(|e| e.key.as_str().starts_with(&prefix))
                    .collect();
                send_all(&tx, &mine).await
            }
            Ok(KeyUpdate::Restarted { first_index }) => {
                reset(
                    &tx,
                    first_index,
                    "a snapshot was installed on this node: events before first_index were never applied here; re-read the locks",
                )
                .await
            }
            Err(broadcast::error::RecvError::Lagged(_)) => {
                // What is still buffered is stale for this client: start from now.
                live = live.resubscribe();
                let applied = node
                    .raft()
                    .metrics()
                    .borrow_watched()
                    .last_applied
                    .as_ref()
                    .map_or(0, |l| l.index);
                reset(
                    &tx,
                    applied + 1,
                    "this client fell behind and events were dropped; re-read the locks",
                )
                .await
            }
            Err(broadcast::error::RecvError::Closed) => return,
        };
        if !sent {
            return;
        }
    }
}

/// Sends a `reset` event; false when the client is gone.
async fn reset(tx: &mpsc::Sender<SseEvent>, first_index: u64, reason: &str) -> bool {
    let data = StreamReset {
        first_index,
        reason: reason.into(),
    };
    let data = serde_json::to_string(&data).unwrap_or_default();
    tx.send(SseEvent::default().event("reset").data(data))
        .await
        .is_ok()
}
