/**
 * `MemoryLocks`: Baton's lock rules in process, for tests and for `useLock()` without a
 * cluster. Tokens increase with every grant, leases expire on the injected clock, acquire
 * is idempotent per owner, renew and release go by token, and a release by a token that
 * does not hold the key changes nothing. Nothing is replicated or persisted, and waiting
 * acquires poll (no FIFO queue): it is a test double, not a lock service.
 */
import { BatonError, LockHeldError, LockLostError, WaitTimeoutError } from './errors.js';
import type { AcquireOptions, CallOptions, Granted, LockService, RenewOptions } from './service.js';
import { systemClock, type Clock } from './timing.js';
import { keyProblem, ownerProblem, type Lease, type LockInfo, type Released, type Validation } from './wire.js';

/** Lease when an acquire names none, ms (the cluster's `lease.default_ttl_ms`). */
export const MEMORY_DEFAULT_TTL_MS = 30_000;
/** Poll period of a waiting acquire, ms. */
const WAIT_POLL_MS = 10;

interface Held {
  owner: string;
  token: number;
  acquiredAt: number;
  renewedAt: number;
  expiresAt: number;
  ttlMs: number;
}

/** The wall clock and `setTimeout`: timestamps read as real dates. */
export const wallClock: Clock = { now: () => Date.now(), sleep: systemClock.sleep };

export class MemoryLocks implements LockService {
  readonly clock: Clock;
  readonly #locks = new Map<string, Held>();
  #lastToken = 0;

  /** `clock.now()` is read as epoch milliseconds for the answers' timestamps. */
  constructor(clock: Clock = wallClock) {
    this.clock = clock;
  }

  async acquire(key: string, options: AcquireOptions): Promise<Granted> {
    check(key, options.owner, options.ttlMs);
    const ttlMs = options.ttlMs ?? MEMORY_DEFAULT_TTL_MS;
    const waitUntil = this.clock.now() + Math.max(0, options.waitMs ?? 0);
    for (;;) {
      options.signal?.throwIfAborted();
      const now = this.clock.now();
      const held = this.#live(key, now);
      if (!held || held.owner === options.owner) {
        const grant: Held = held
          ? { ...held, renewedAt: now, expiresAt: now + ttlMs, ttlMs }
          : { owner: options.owner, token: ++this.#lastToken, acquiredAt: now, renewedAt: now, expiresAt: now + ttlMs, ttlMs };
        this.#locks.set(key, grant);
        // In process the lease starts when it is granted: after a wait that is later than
        // the call, and counting from the call would shorten the safe deadline by the wait.
        return { lease: lease(key, grant), sentAt: now };
      }
      if (now >= waitUntil) {
        if (options.waitMs) throw new WaitTimeoutError(`the wait for ${key} ran out after ${options.waitMs} ms`);
        throw new LockHeldError(key, `lock ${key} is held by ${held.owner} with token ${held.token}`, lease(key, held));
      }
      await this.clock.sleep(Math.min(WAIT_POLL_MS, waitUntil - now), options.signal);
    }
  }

  async renew(key: string, token: number, options: RenewOptions = {}): Promise<Granted> {
    check(key, undefined, options.ttlMs);
    const sentAt = this.clock.now();
    const held = this.#live(key, sentAt);
    if (!held || held.token !== token) throw new LockLostError(`token ${token} no longer holds ${key}`);
    const ttlMs = options.ttlMs ?? held.ttlMs;
    const renewed = { ...held, renewedAt: sentAt, expiresAt: sentAt + ttlMs, ttlMs };
    this.#locks.set(key, renewed);
    return { lease: lease(key, renewed), sentAt };
  }

  async release(key: string, token: number, _options?: CallOptions): Promise<Released> {
    check(key);
    const now = this.clock.now();
    const held = this.#live(key, now);
    const timestamp = iso(now);
    if (!held) return { key, released: false, reason: 'not_held', timestamp };
    if (held.token !== token) return { key, released: false, reason: 'token_mismatch', timestamp };
    this.#locks.delete(key);
    return { key, released: true, timestamp };
  }

  /** Releases `key` whoever holds it (an operator's `DELETE`). */
  async forceRelease(key: string): Promise<Released> {
    check(key);
    const now = this.clock.now();
    const released = this.#live(key, now) !== undefined;
    this.#locks.delete(key);
    return { key, released, timestamp: iso(now) };
  }

  async get(key: string, _options?: CallOptions): Promise<LockInfo | undefined> {
    check(key);
    const held = this.#live(key, this.clock.now());
    if (!held) return undefined;
    return { ...lease(key, held), renewed_at: iso(held.renewedAt), waiters: 0 };
  }

  async validate(key: string, token: number, _options?: CallOptions): Promise<Validation> {
    check(key);
    const held = this.#live(key, this.clock.now());
    return held ? { valid: held.token === token, current_token: held.token } : { valid: false };
  }

  /** The live grant on `key` at `now`; drops an expired one (expiry: `expiresAt <= now`). */
  #live(key: string, now: number): Held | undefined {
    const held = this.#locks.get(key);
    if (held && held.expiresAt <= now) {
      this.#locks.delete(key);
      return undefined;
    }
    return held;
  }
}

function check(key: string, owner?: string, ttlMs?: number): void {
  const badKey = keyProblem(key);
  if (badKey) throw new BatonError('INVALID_KEY', 400, badKey);
  const badOwner = owner === undefined ? undefined : ownerProblem(owner);
  if (badOwner) throw new BatonError('INVALID_REQUEST', 400, badOwner);
  if (ttlMs !== undefined && !(Number.isFinite(ttlMs) && ttlMs > 0)) {
    throw new BatonError('INVALID_REQUEST', 400, `ttl_ms ${ttlMs} must be a positive number`);
  }
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

function lease(key: string, h: Held): Lease {
  return { key, owner: h.owner, token: h.token, acquired_at: iso(h.acquiredAt), expires_at: iso(h.expiresAt), ttl_ms: h.ttlMs };
}
