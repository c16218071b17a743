//! When to retry, and how long to wait: capped exponential backoff with jitter, and the
//! client-side safe deadline of a lease.

use std::time::Duration;

use tokio::time::Instant;

/// Backoff between attempts of one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// Pause after the first failed attempt.
    pub initial: Duration,
    /// Longest pause.
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_millis(50),
            max: Duration::from_secs(2),
        }
    }
}

impl Backoff {
    /// The pause after failed attempt number `attempt` (0-based): `initial × 2^attempt`,
    /// capped at `max`, scaled by `jitter` in `[0, 1]` to a value in `[half, full]`, so
    /// that clients that failed together do not retry together.
    pub fn pause(&self, attempt: u32, jitter: f64) -> Duration {
        let full = self
            .initial
            .saturating_mul(2u32.saturating_pow(attempt.min(30)))
            .min(self.max);
        full.mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
    }
}

/// The safety margin subtracted from a lease on the client: a fifth of the TTL, at most
/// two seconds — room for the renewal that should already be under way, for scheduling
/// delays, and for clock-rate differences between client and leader.
pub fn safety_margin(ttl: Duration) -> Duration {
    (ttl / 5).min(Duration::from_secs(2))
}

/// Until when the holder may act on a lease, by the client's monotonic clock: the moment
/// it *sent* the acquire or renew that the server granted, plus the TTL, minus the
/// margin. Counting from the send (not the answer) is what makes it safe: the server's
/// lease started after the send.
pub fn safe_deadline(sent_at: Instant, ttl: Duration) -> Instant {
    sent_at + ttl.saturating_sub(safety_margin(ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pause_doubles_up_to_the_cap_and_jitter_keeps_at_least_half() {
        let b = Backoff {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(1),
        };
        assert_eq!(b.pause(0, 1.0), Duration::from_millis(100));
        assert_eq!(b.pause(1, 1.0), Duration::from_millis(200));
        assert_eq!(b.pause(3, 1.0), Duration::from_millis(800));
        assert_eq!(b.pause(4, 1.0), Duration::from_secs(1));
        assert_eq!(b.pause(u32::MAX, 1.0), Duration::from_secs(1));
        assert_eq!(b.pause(0, 0.0), Duration::from_millis(50));
        assert_eq!(b.pause(4, 0.0), Duration::from_millis(500));
        assert_eq!(
            b.pause(2, 7.0),
            Duration::from_millis(400),
            "jitter is clamped"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_safe_deadline_counts_from_the_send_minus_the_margin() {
        let sent = Instant::now();
        // The answer arrives later; the deadline does not move with it.
        tokio::time::advance(Duration::from_millis(300)).await;
        let d = safe_deadline(sent, Duration::from_secs(30));
        assert_eq!(
            d - sent,
            Duration::from_secs(28),
            "2 s margin for a 30 s lease"
        );
        let d = safe_deadline(sent, Duration::from_secs(5));
        assert_eq!(d - sent, Duration::from_secs(4), "a fifth of a short lease");
        let d = safe_deadline(sent, Duration::ZERO);
        assert_eq!(d, sent);
        assert!(Instant::now() < safe_deadline(sent, Duration::from_secs(5)));
        tokio::time::advance(Duration::from_millis(3_700)).await;
        assert!(Instant::now() >= safe_deadline(sent, Duration::from_secs(5)));
    }
}
