/**
 * `LockService`: what the lease keeper, `withLock` and the compatibility modules need from
 * a lock store. `BatonClient` talks to a cluster; `MemoryLocks` is the same rules in
 * process, for tests and for `useLock()` without `BATON_ENDPOINTS`.
 */
import type { SseEvent } from './sse.js';
import type { Clock } from './timing.js';
import type { Lease, LockInfo, Released, Validation } from './wire.js';

/** A lease and the moment (on the service's clock) the request that got it was sent. */
export interface Granted {
  lease: Lease;
  /** Send time of the request, on `LockService.clock`: the safe deadline counts from here. */
  sentAt: number;
}

export interface CallOptions {
  /** Abandons the call (and its retries); the promise rejects with the signal's reason. */
  signal?: AbortSignal;
}

export interface AcquireOptions extends CallOptions {
  /** Who holds the lock; use a fresh one per acquisition (`uniqueOwner()`). */
  owner: string;
  /** Lease length, ms (the cluster's `lease.default_ttl_ms` when absent). */
  ttlMs?: number;
  /** Wait up to this long in the key's FIFO queue, ms (0: fail at once when held). */
  waitMs?: number;
  /** After this grant's lease *expires*, keep the key from everyone for this long, ms. */
  lockDelayMs?: number;
}

export interface RenewOptions extends CallOptions {
  /** New lease length, ms (the grant's own when absent). */
  ttlMs?: number;
}

export interface EventsOptions {
  /** Resume after this log index (a grant's token: events after the grant). Live only when absent. */
  after?: number;
  /** Ends the iteration. */
  signal?: AbortSignal;
}

export interface LockService {
  /** The clock that `Granted.sentAt` is on. */
  readonly clock: Clock;
  /** Takes `key`; rejects with `LockHeldError` (or `WaitTimeoutError` after `waitMs`). */
  acquire(key: string, options: AcquireOptions): Promise<Granted>;
  /** Extends the lease held under `token`; rejects with `LockLostError` when it no longer holds it. */
  renew(key: string, token: number, options?: RenewOptions): Promise<Granted>;
  /** Releases the lock held under `token`; `released: false` when it did not hold it. */
  release(key: string, token: number, options?: CallOptions): Promise<Released>;
  /** The live lock on `key`, if any. */
  get(key: string, options?: CallOptions): Promise<LockInfo | undefined>;
  /** Whether `token` holds `key` now. */
  validate(key: string, token: number, options?: CallOptions): Promise<Validation>;
  /** The key's events, when the service has an event stream (the lease keeper follows it). */
  events?(key: string, options?: EventsOptions): AsyncIterable<SseEvent>;
}
