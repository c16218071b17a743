//! Following a key's event stream (`GET /v1/locks/{key}/events`, Server-Sent Events):
//! the SSE parsing shared by `baton watch` and the lock guard, and a follower that
//! reconnects across nodes with the last event id.

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use super::Client;
use crate::wire::{LockEvent, StreamReset};

/// One Server-Sent Event.
#[derive(Clone, Debug, PartialEq)]
pub struct SseEvent {
    /// The `event:` name (`acquired`, `released`, …, or `reset`).
    pub event: String,
    /// The `data:` JSON (`Null` if it was not JSON).
    pub data: Value,
    /// The `id:` (a log index), set on the last event of each log entry.
    pub id: Option<u64>,
}

impl SseEvent {
    /// The data of a lock event (`acquired`, `released`, …); `None` for `reset` and
    /// anything that is not one.
    pub fn lock_event(&self) -> Option<LockEvent> {
        LockEvent::deserialize(&self.data).ok()
    }

    /// The data of a `reset` event.
    pub fn reset(&self) -> Option<StreamReset> {
        (self.event == "reset")
            .then(|| StreamReset::deserialize(&self.data).ok())
            .flatten()
    }
}

/// Parses one SSE block (the text between blank lines); `None` for comments and
/// keep-alives.
pub fn parse_block(block: &str) -> Option<SseEvent> {
    let (mut event, mut data, mut id) = ("message".to_string(), String::new(), None);
    for line in block.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            event = v.trim().to_string();
        } else if let Some(v) = line.strip_prefix("data:") {
            data.push_str(v.trim_start());
        } else if let Some(v) = line.strip_prefix("id:") {
            id = v.trim().parse::<u64>().ok();
        }
    }
    if data.is_empty() {
        return None;
    }
    let data = serde_json::from_str(&data).unwrap_or(Value::Null);
    Some(SseEvent { event, data, id })
}

/// Pause before reconnecting after a dropped stream.
const RECONNECT_PAUSE: Duration = Duration::from_millis(500);

impl Client {
    /// Follows `key`'s events from after log index `after` (live only when `None`),
    /// calling `on_event` for each until it returns `false`. Reconnects to the next
    /// endpoint with the last id when a stream drops; never returns otherwise.
    pub async fn follow_events(
        &self,
        key: &str,
        after: Option<u64>,
        mut on_event: impl FnMut(&SseEvent) -> bool,
    ) {
        let mut last_id = after;
        for endpoint in self.endpoints.iter().cycle() {
            let mut req = self.http.get(crate::wire::endpoint_url(
                endpoint,
                &format!("/v1/locks/{key}/events"),
            ));
            if let Some(id) = last_id {
                req = req.header("last-event-id", id.to_string());
            }
            if let Ok(mut resp) = req.send().await {
                if resp.status().is_success() {
                    let mut buf = String::new();
                    while let Ok(Some(chunk)) = resp.chunk().await {
                        buf.push_str(&String::from_utf8_lossy(&chunk));
                        while let Some(end) = buf.find("\n\n") {
                            let block: String = buf.drain(..end + 2).collect();
                            if let Some(ev) = parse_block(&block) {
                                if ev.id.is_some() {
                                    last_id = ev.id;
                                }
                                if !on_event(&ev) {
                                    return;
                                }
                            }
                        }
                    }
                }
            }
            tokio::time::sleep(RECONNECT_PAUSE).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_parse_into_events_and_keep_alives_into_nothing() {
        let ev =
            parse_block("event: acquired\ndata: {\"index\":7,\"token\":7}\nid: 7\n\n").unwrap();
        assert_eq!(ev.event, "acquired");
        assert_eq!(ev.data["token"], 7);
        assert_eq!(ev.id, Some(7));
        let no_id = parse_block("event: released\ndata: {\"index\":8}\n\n").unwrap();
        assert_eq!(no_id.id, None);
        assert_eq!(parse_block(":\n\n"), None);
        assert_eq!(no_id.lock_event(), None, "not a whole lock event");
    }

    #[test]
    fn lock_events_and_resets_read_as_wire_types() {
        let ev = parse_block("event: force_released\ndata: {\"index\":9,\"key\":\"k\",\"event\":\"force_released\",\"owner\":\"a\",\"token\":7,\"at\":\"t\"}\nid: 9\n\n").unwrap();
        let e = ev.lock_event().unwrap();
        assert_eq!(
            (e.event, e.token),
            (crate::wire::EventKind::ForceReleased, Some(7))
        );
        let reset = parse_block("event: reset\ndata: {\"first_index\":40,\"reason\":\"gone\"}\n\n")
            .unwrap();
        assert_eq!(reset.reset().map(|r| r.first_index), Some(40));
        assert_eq!(ev.reset(), None);
    }
}
