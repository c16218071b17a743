/**
 * When to retry and for how long a lease may be trusted: capped exponential backoff with
 * jitter, and the client-side safe deadline — the same rules as the Rust client's
 * `client::retry` (a change there belongs here too).
 */

/** A monotonic clock and its timers; injectable so that tests can drive time. */
export interface Clock {
  /** Milliseconds on a monotonic clock (any origin). */
  now(): number;
  /** Resolves after `ms` (at once for `ms <= 0`), or as soon as `signal` aborts. Never rejects. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

/** `performance.now()` and `setTimeout`. */
export const systemClock: Clock = {
  now: () => performance.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = () => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener('abort', done, { once: true });
    }),
};

/** Backoff between attempts of one call. */
export interface Backoff {
  /** Pause after the first failed attempt, ms (default 50). */
  initialMs: number;
  /** Longest pause, ms (default 2000). */
  maxMs: number;
}

export const DEFAULT_BACKOFF: Backoff = { initialMs: 50, maxMs: 2000 };

/**
 * The pause after failed attempt number `attempt` (0-based): `initialMs × 2^attempt`,
 * capped at `maxMs`, scaled by `jitter` in [0, 1] to a value in [half, full], so that
 * clients that failed together do not retry together.
 */
export function backoffPause(backoff: Backoff, attempt: number, jitter: number): number {
  const full = Math.min(backoff.initialMs * 2 ** Math.min(Math.max(attempt, 0), 30), backoff.maxMs);
  const j = Math.min(Math.max(Number.isFinite(jitter) ? jitter : 1, 0), 1);
  return full * (0.5 + 0.5 * j);
}

/** Longest safety margin, ms. */
export const MAX_SAFETY_MARGIN_MS = 2000;

/**
 * The margin subtracted from a lease on the client: a fifth of the TTL, at most two
 * seconds — room for the renewal that should already be under way, scheduling delays and
 * clock-rate differences between client and leader.
 */
export function safetyMarginMs(ttlMs: number): number {
  return Math.min(ttlMs / 5, MAX_SAFETY_MARGIN_MS);
}

/**
 * Until when the holder may act on a lease, on the client's monotonic clock: the moment
 * it *sent* the acquire or renew that was granted, plus the TTL, minus the margin.
 * Counting from the send (not the answer) is what makes it safe: the server's lease
 * started after the send.
 */
export function safeDeadline(sentAt: number, ttlMs: number): number {
  return sentAt + Math.max(0, ttlMs - safetyMarginMs(ttlMs));
}

/** The pause before the next renewal: a third of the TTL. */
export function renewInterval(ttlMs: number): number {
  return ttlMs / 3;
}
