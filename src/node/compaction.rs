//! When to build a snapshot (after which the log behind it is purged).
//!
//! Building a snapshot costs time proportional to the table, so a fixed interval of
//! entries makes big tables expensive: with 300,000 live locks, a snapshot every 20,000
//! entries re-encodes the whole table every couple of seconds on every node (measured
//! with `scripts/bench.sh`: it cost the uncontended benchmark a third of its throughput).
//! Instead each node snapshots once the entries applied since its last snapshot reach
//! `max(raft.snapshot_after_entries, SNAPSHOT_KEYS_FACTOR × stored keys)`: the work per
//! entry stays bounded, and the log kept between snapshots stays within a small multiple
//! of the table's size.

use std::time::Duration;

use super::Node;

/// Entries per stored key between two snapshots (see the module docs).
pub const SNAPSHOT_KEYS_FACTOR: u64 = 2;
/// How often the node looks.
const CHECK_INTERVAL: Duration = Duration::from_millis(500);

/// The number of applied entries after which a node holding `stored_keys` keys builds a
/// new snapshot.
pub fn snapshot_threshold(snapshot_after_entries: u64, stored_keys: u64) -> u64 {
    snapshot_after_entries.max(SNAPSHOT_KEYS_FACTOR.saturating_mul(stored_keys))
}

/// Runs until the node stops (it is a node task) or Raft does: triggers a snapshot
/// whenever the threshold is reached.
pub(crate) async fn snapshot_when_due(node: Node) {
    let after = node.config().raft.snapshot_after_entries;
    let mut last_triggered = 0u64;
    let mut ticker = tokio::time::interval(CHECK_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticker.tick().await;
        let status = node.status();
        let applied = status.applied_index.unwrap_or(0);
        let base = status.snapshot_index.unwrap_or(0).max(last_triggered);
        let threshold = snapshot_threshold(after, status.locks_stored as u64);
        if applied.saturating_sub(base) < threshold {
            continue;
        }
        match node.raft().trigger().snapshot().await {
            Ok(()) => {
                tracing::debug!(applied, threshold, "snapshot triggered");
                last_triggered = applied;
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot trigger a snapshot; raft stopped");
                return;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_tables_snapshot_at_the_configured_interval_big_ones_in_proportion() {
        assert_eq!(snapshot_threshold(20_000, 0), 20_000);
        assert_eq!(snapshot_threshold(20_000, 9_999), 20_000);
        assert_eq!(snapshot_threshold(20_000, 300_000), 600_000);
        assert_eq!(snapshot_threshold(20_000, u64::MAX), u64::MAX);
    }
}
