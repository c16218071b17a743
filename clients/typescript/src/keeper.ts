/**
 * The lease keeper: a held lock that renews itself and says when it is lost — the Rust
 * client's `LockGuard` (`src/client/guard.rs`) for Node.
 *
 * It renews the lease every third of its TTL and, when the service has an event stream,
 * follows the key's events from the grant on. The lock counts as lost — `signal` aborts
 * with a `LockLostError` and `lost` resolves — at once when
 * - a renewal is refused (`LOCK_LOST`: the token no longer holds the key),
 * - the stream reports the key released, force-released or expired under this token, or
 * - no renewal succeeded before the client-side safe deadline (`safeUntil`: send time of
 *   the last granted acquire/renew + TTL − min(TTL/5, 2 s), on this process's monotonic
 *   clock), whatever the nodes are doing — stopped, partitioned, or slow.
 * After that the holder must stop acting on the lock; the fencing token (`token`) is what
 * protects the resource if it cannot stop in time.
 *
 * `release()` stops the renewals and releases the lock. A handle that is never released
 * keeps renewing (its timers keep the process alive): release it in a `finally`, or use
 * `withLock`.
 */
import { LockLostError } from './errors.js';
import { uniqueOwner } from './owner.js';
import type { Granted, LockService } from './service.js';
import { lockEventOf } from './sse.js';
import { renewInterval, safeDeadline } from './timing.js';
import type { Released } from './wire.js';

/** Pause between renewals whose retries ran out without a final answer, ms. */
const RENEW_RETRY_PAUSE_MS = 100;

export interface LockOptions {
  /** The owner (default: a fresh `uniqueOwner()`; never share one between acquisitions). */
  owner?: string;
  /** Lease length, ms (default 30000); renewed every third of it. */
  ttlMs?: number;
  /** Wait up to this long in the key's FIFO queue, ms (default 0: fail at once when held). */
  waitMs?: number;
  /** Abandons the acquire. */
  signal?: AbortSignal;
}

/** Default lease of the lease keeper, ms. */
export const DEFAULT_LOCK_TTL_MS = 30_000;

/** A held lock; see the module docs. */
export class LockHandle {
  readonly key: string;
  readonly owner: string;
  /** The fencing token: pass it to every resource the lock protects. */
  readonly token: number;
  /** Resolves with the reason when the lock is lost; never while it is held or after `release()`. */
  readonly lost: Promise<LockLostError>;
  readonly #service: LockService;
  readonly #lostController = new AbortController();
  /** Stops renewing and watching (on release or loss). */
  readonly #stop = new AbortController();
  #resolveLost!: (e: LockLostError) => void;
  #safeUntil: number;
  #released = false;

  constructor(service: LockService, owner: string, granted: Granted) {
    this.#service = service;
    this.key = granted.lease.key;
    this.owner = owner;
    this.token = granted.lease.token;
    this.#safeUntil = safeDeadline(granted.sentAt, granted.lease.ttl_ms);
    this.lost = new Promise((resolve) => {
      this.#resolveLost = resolve;
    });
    void this.#keepAlive(granted);
    if (service.events) void this.#watch();
  }

  /** Aborts (with a `LockLostError` as its reason) when the lock is lost. */
  get signal(): AbortSignal {
    return this.#lostController.signal;
  }

  /** The current safe deadline on the service's clock (`performance.now()` for `BatonClient`); moves with each renewal. */
  get safeUntil(): number {
    return this.#safeUntil;
  }

  /** Milliseconds left before the safe deadline (negative once it passed). */
  get remainingMs(): number {
    return this.#safeUntil - this.#service.clock.now();
  }

  /** Whether the lock was lost. */
  get isLost(): boolean {
    return this.#lostController.signal.aborted;
  }

  /** Stops renewing and releases the lock (idempotent: a second call asks the cluster again, harmlessly). */
  async release(): Promise<Released> {
    this.#released = true;
    this.#stop.abort();
    return this.#service.release(this.key, this.token);
  }

  #lose(error: LockLostError): void {
    if (this.#released || this.#lostController.signal.aborted) return;
    this.#stop.abort();
    this.#lostController.abort(error);
    this.#resolveLost(error);
  }

  async #keepAlive(first: Granted): Promise<void> {
    const clock = this.#service.clock;
    const stop = this.#stop.signal;
    let granted = first;
    while (!stop.aborted) {
      const deadline = safeDeadline(granted.sentAt, granted.lease.ttl_ms);
      this.#safeUntil = deadline;
      const renewAt = Math.min(granted.sentAt + renewInterval(granted.lease.ttl_ms), deadline);
      await clock.sleep(renewAt - clock.now(), stop);
      if (stop.aborted) return;
      // Renew (retrying inside the client) until it succeeds, is refused, or the safe
      // deadline passes, whichever comes first.
      const attempt = new AbortController();
      const abortAttempt = () => attempt.abort();
      stop.addEventListener('abort', abortAttempt, { once: true });
      const renewal = this.#service.renew(this.key, this.token, { signal: attempt.signal }).then(
        (g) => ({ ok: g }) as const,
        (e: unknown) => ({ err: e }) as const,
      );
      const expiry = clock.sleep(deadline - clock.now(), attempt.signal).then(() => 'deadline' as const);
      const outcome = await Promise.race([renewal, expiry]);
      stop.removeEventListener('abort', abortAttempt);
      attempt.abort();
      if (stop.aborted) return;
      if (outcome === 'deadline') {
        this.#lose(deadlineLost(this.key, this.token));
        return;
      }
      if ('ok' in outcome) {
        granted = outcome.ok;
        continue;
      }
      if (outcome.err instanceof LockLostError) {
        this.#lose(new LockLostError(`${this.key}: renewal refused: ${outcome.err.message}`, { cause: outcome.err }));
        return;
      }
      // Retries ran out without a final answer (or an unexpected error): keep trying until
      // the deadline.
      if (clock.now() >= deadline) {
        this.#lose(deadlineLost(this.key, this.token));
        return;
      }
      await clock.sleep(Math.min(RENEW_RETRY_PAUSE_MS, deadline - clock.now()), stop);
      if (clock.now() >= deadline && !stop.aborted) {
        this.#lose(deadlineLost(this.key, this.token));
        return;
      }
    }
  }

  /** Follows the key's events from the grant on; loses the lock when an event ends this token's hold. */
  async #watch(): Promise<void> {
    const events = this.#service.events!(this.key, { after: this.token, signal: this.#stop.signal });
    try {
      for await (const ev of events) {
        const e = lockEventOf(ev);
        if (!e || e.token !== this.token) continue;
        if (e.event === 'released' || e.event === 'force_released' || e.event === 'expired') {
          this.#lose(new LockLostError(`${this.key} ${e.event.replace('_', ' ')} (token ${this.token})`));
          return;
        }
      }
    } catch {
      // The stream only ends by the stop signal; renewals and the deadline still guard the lock.
    }
  }
}

function deadlineLost(key: string, token: number): LockLostError {
  return new LockLostError(`${key}: no renewal of token ${token} succeeded before the lease's safe deadline`);
}

/** Takes `key` (waiting up to `waitMs` in its queue) and returns a handle that keeps it. */
export async function lock(service: LockService, key: string, options: LockOptions = {}): Promise<LockHandle> {
  const owner = options.owner ?? uniqueOwner();
  const granted = await service.acquire(key, {
    owner,
    ttlMs: options.ttlMs ?? DEFAULT_LOCK_TTL_MS,
    ...(options.waitMs ? { waitMs: options.waitMs } : {}),
    ...(options.signal ? { signal: options.signal } : {}),
  });
  return new LockHandle(service, owner, granted);
}

/** The callback of `withLock`: the fencing token, the lost signal, and the handle (for `safeUntil`). */
export type WithLockFn<T> = (token: number, signal: AbortSignal, lock: LockHandle) => Promise<T> | T;

/**
 * Runs `fn(token, signal, lock)` while holding `key`, renewing it meanwhile, and releases
 * it afterwards (also when `fn` throws). If the lock is lost first, `signal` aborts and
 * `withLock` rejects with the `LockLostError` at once, without waiting for `fn`: it must
 * stop acting on the resource when `signal` aborts. Rejects like `acquire` when the lock
 * is not acquired (`LockHeldError`, `WaitTimeoutError`, …).
 */
export async function withLock<T>(
  service: LockService,
  key: string,
  options: LockOptions,
  fn: WithLockFn<T>,
): Promise<T> {
  const handle = await lock(service, key, options);
  const work = Promise.resolve().then(() => fn(handle.token, handle.signal, handle));
  // If the loss wins the race, `fn`'s own outcome is no longer anyone's to handle.
  work.catch(() => undefined);
  const lost = handle.lost.then((e) => Promise.reject(e));
  lost.catch(() => undefined);
  try {
    return await Promise.race([work, lost]);
  } finally {
    if (!handle.isLost) {
      await handle.release().catch((e: unknown) => {
        process.emitWarning(`release of ${key} (token ${handle.token}) after withLock failed; the lease expires: ${String(e)}`);
      });
    }
  }
}
