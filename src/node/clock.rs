//! [`ClusterClock`]: the leader's notion of time, stamped on every command as `now_ms`.
//!
//! Cluster time advances with the leader's monotonic clock from an anchor taken when the
//! node becomes leader: `max(wall clock, highest now_ms applied)`. So it never goes
//! backwards across leaders (the new leader starts at or after everything applied), and a
//! wall-clock step on the leader after promotion changes nothing: only the monotonic
//! clock moves it (DESIGN.md, "Time and leases").
//!
//! Cluster time is also never behind the highest `now_ms` applied: a leader restored
//! after a restart (openraft keeps a committed vote's leadership) commits the tail of its
//! own log, whose entries may carry times later than anything applied when it anchored
//! (stamped while it was cut off from a quorum). The table's time then runs ahead of the
//! clock, and a clock left behind would hold the table's time still until it caught up,
//! lengthening every lease by the difference (seen in chaos seed 2030: an 800 ms lease
//! held for 3.2 s with the cluster available). So reading the clock moves its anchor up
//! to the applied time when that is later.
//!
//! The clock is tied to one leadership (the committed leader id it was anchored for). A
//! node that is not that leader has no cluster time and must not stamp commands. The
//! clock becomes *ready* only after the new leader's lease refresh is committed, so no
//! client write is decided on a time base whose leases were not yet refreshed.
//!
//! Instants are passed in, so tests drive the clock without sleeping.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::raft::typ::CommittedLeaderId;
use crate::sync::LockUnpoisoned;

#[derive(Clone, Debug)]
struct Anchor {
    leader: CommittedLeaderId,
    base_ms: u64,
    at: Instant,
    ready: bool,
}

/// The leader's cluster clock (see the module docs).
#[derive(Debug, Default)]
pub struct ClusterClock {
    anchor: Mutex<Option<Anchor>>,
}

/// Milliseconds since the Unix epoch by the wall clock; 0 if the clock is before 1970.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

impl ClusterClock {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Anchor>> {
        // The guarded value is plain data that is always valid; recover from poisoning.
        self.anchor.lock_unpoisoned()
    }

    /// Starts cluster time for `leader` at `max(wall_ms, applied_ms)`, not yet ready.
    /// Returns the anchor time.
    pub fn anchor(
        &self,
        leader: CommittedLeaderId,
        wall_ms: u64,
        applied_ms: u64,
        at: Instant,
    ) -> u64 {
        let base_ms = wall_ms.max(applied_ms);
        *self.lock() = Some(Anchor {
            leader,
            base_ms,
            at,
            ready: false,
        });
        base_ms
    }

    /// Marks the clock of `leader` ready for client writes (its lease refresh committed).
    pub fn set_ready(&self, leader: &CommittedLeaderId) {
        if let Some(a) = self.lock().as_mut().filter(|a| &a.leader == leader) {
            a.ready = true;
        }
    }

    /// Forgets the anchor: this node is no longer that leader.
    pub fn clear(&self, leader: &CommittedLeaderId) {
        let mut guard = self.lock();
        if guard.as_ref().is_some_and(|a| &a.leader == leader) {
            *guard = None;
        }
    }

    /// Cluster time for `leader` at `now`, whether or not the clock is ready, and never
    /// behind `applied_ms` (the table's time; see the module docs); `None` when the clock
    /// belongs to another (or no) leadership.
    pub fn now_ms_for(
        &self,
        leader: &CommittedLeaderId,
        applied_ms: u64,
        now: Instant,
    ) -> Option<u64> {
        let mut guard = self.lock();
        let a = guard.as_mut().filter(|a| &a.leader == leader)?;
        let elapsed = now.saturating_duration_since(a.at);
        let ms = a.base_ms.saturating_add(duration_ms(elapsed));
        if ms >= applied_ms {
            return Some(ms);
        }
        a.base_ms = applied_ms;
        a.at = now;
        Some(applied_ms)
    }

    /// Cluster time for client writes: like [`Self::now_ms_for`], but only once ready.
    pub fn ready_now_ms(
        &self,
        leader: &CommittedLeaderId,
        applied_ms: u64,
        now: Instant,
    ) -> Option<u64> {
        let ready = self
            .lock()
            .as_ref()
            .is_some_and(|a| &a.leader == leader && a.ready);
        if ready {
            self.now_ms_for(leader, applied_ms, now)
        } else {
            None
        }
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use openraft::vote::RaftLeaderId;

    fn leader(term: u64, node: u64) -> CommittedLeaderId {
        openraft::impls::leader_id_adv::LeaderId::new(term, node).to_committed()
    }

    #[test]
    fn anchors_at_the_later_of_wall_and_applied_time() {
        let clock = ClusterClock::default();
        let t0 = Instant::now();
        assert_eq!(clock.anchor(leader(1, 1), 1_000, 5_000, t0), 5_000);
        assert_eq!(clock.anchor(leader(2, 1), 9_000, 5_000, t0), 9_000);
    }

    #[test]
    fn advances_with_the_monotonic_clock_only() {
        let clock = ClusterClock::default();
        let t0 = Instant::now();
        let l = leader(3, 2);
        clock.anchor(l, 10_000, 0, t0);
        assert_eq!(
            clock.now_ms_for(&l, 0, t0 + Duration::from_millis(250)),
            Some(10_250)
        );
        // An instant before the anchor (cannot happen, but must not go backwards).
        assert_eq!(clock.now_ms_for(&l, 0, t0), Some(10_000));
    }

    #[test]
    fn belongs_to_one_leadership() {
        let clock = ClusterClock::default();
        let t0 = Instant::now();
        let l = leader(3, 2);
        clock.anchor(l, 10_000, 0, t0);
        assert_eq!(clock.now_ms_for(&leader(4, 2), 0, t0), None);
        clock.clear(&leader(4, 2));
        assert!(clock.now_ms_for(&l, 0, t0).is_some());
        clock.clear(&l);
        assert_eq!(clock.now_ms_for(&l, 0, t0), None);
    }

    #[test]
    fn client_time_waits_for_ready() {
        let clock = ClusterClock::default();
        let t0 = Instant::now();
        let l = leader(5, 1);
        clock.anchor(l, 100, 0, t0);
        assert_eq!(clock.ready_now_ms(&l, 0, t0), None);
        clock.set_ready(&l);
        assert_eq!(clock.ready_now_ms(&l, 0, t0), Some(100));
    }

    #[test]
    fn never_runs_behind_the_applied_time_and_moves_on_from_it() {
        let clock = ClusterClock::default();
        let t0 = Instant::now();
        let l = leader(37, 1);
        clock.anchor(l, 1_000, 5_000, t0);
        let at = |ms| t0 + Duration::from_millis(ms);
        assert_eq!(clock.now_ms_for(&l, 0, at(100)), Some(5_100));
        // The leader committed its own older tail, stamped up to 7,000.
        assert_eq!(clock.now_ms_for(&l, 7_000, at(200)), Some(7_000));
        // From there it runs with the monotonic clock, whatever applied time it is shown.
        assert_eq!(clock.now_ms_for(&l, 0, at(450)), Some(7_250));
        assert_eq!(clock.now_ms_for(&l, 7_000, at(450)), Some(7_250));
        clock.set_ready(&l);
        assert_eq!(clock.ready_now_ms(&l, 9_000, at(500)), Some(9_000));
    }
}
