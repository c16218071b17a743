//! Watching one key's applied events (`GET /v1/locks/{key}/events`): a subscription that
//! wakes only for that key, and reads of its stored events off the async runtime.
//!
//! The all-keys subscription (`Node::subscribe_events`) is for code that follows many
//! keys at once (the prefix feed `GET /v1/events`).

use super::{Node, NodeError};
use crate::locks::{Event, Key};
use crate::raft::event_log::KeyEvents;

impl Node {
    /// Events of `key` applied on this node from now on; other keys' writes do not
    /// wake the receiver.
    pub fn subscribe_key_events(&self, key: &Key) -> KeyEvents {
        self.inner.events.subscribe_key(key)
    }

    /// [`Node::events_after`] on a blocking thread: a resume reads storage, and an async
    /// worker must stay free for everyone else's requests.
    pub async fn key_events_after(
        &self,
        key: &Key,
        after: u64,
        limit: usize,
    ) -> Result<(Vec<Event>, u64), NodeError> {
        let node = self.clone();
        let key = key.clone();
        tokio::task::spawn_blocking(move || node.events_after(&key, after, limit))
            .await
            .map_err(|e| NodeError::Stopped(format!("reading events: {e}")))?
    }
}
