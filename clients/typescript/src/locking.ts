/**
 * `@baton/client/locking`: the `LockApi` interface of `@paradoxical-io/common-server`'s
 * `locking` module, with a Baton implementation.
 *
 * Migration: `import { LockApi, NoOpLock } from '@paradoxical-io/common-server/locking'`
 * becomes `import { LockApi, NoOpLock, BatonLockApi } from '@baton/client/locking'`; construct
 * `new BatonLockApi()` (nodes from `BATON_ENDPOINTS`) where you constructed your Redis-backed
 * `LockApi`. Code that takes a `LockApi` does not change.
 *
 * `tryAcquire(key, timeoutSeconds)` takes a lease of `timeoutSeconds` that is *not*
 * renewed (the timeout is the caller's explicit limit, as with Redis `SET NX EX`); the
 * returned lock also carries the fencing `token` and its `safeUntil`. Its `release()` frees
 * only this acquisition's grant: after the lease ran out and someone else took the key, it
 * changes nothing (a Redis `DEL` would free the other holder's lock).
 */
import { BatonClient, type BatonClientOptions } from './client.js';
import { defaultService } from './default-service.js';
import { LockHeldError } from './errors.js';
import { uniqueOwner } from './owner.js';
import type { LockService } from './service.js';
import { safeDeadline, systemClock } from './timing.js';

export interface LockApi {
  tryAcquire(key: string, timeoutSeconds: number): Promise<Lock | undefined>;
}

export interface Lock {
  type: 'lock';
  release(): Promise<void>;
}

/** A lock from Baton: a `Lock` with its fencing token. */
export interface BatonLock extends Lock {
  key: string;
  /** The fencing token: pass it to the resource the lock protects. */
  token: number;
  owner: string;
  /** The client-side safe deadline on the service's clock (see `safeDeadline`). */
  safeUntil: number;
}

/** `locked = false` always grants, `locked = true` never does. */
export class NoOpLock implements LockApi {
  constructor(private locked = false) {}

  async tryAcquire(): Promise<Lock | undefined> {
    if (this.locked) return undefined;
    return { type: 'lock', release: () => Promise.resolve() };
  }
}

/** `LockApi` on Baton (or on any `LockService`, such as `MemoryLocks`). */
export class BatonLockApi implements LockApi {
  readonly #service: LockService | undefined;

  /** `service` or client options; without, the process-wide client for `BATON_ENDPOINTS`. */
  constructor(service?: LockService | BatonClientOptions) {
    if (service === undefined) this.#service = undefined;
    else if ('endpoints' in service) this.#service = new BatonClient(service);
    else this.#service = service;
  }

  /** A lease of `timeoutSeconds`, or `undefined` while someone else holds `key`. */
  async tryAcquire(key: string, timeoutSeconds: number): Promise<BatonLock | undefined> {
    const service = this.#service ?? defaultService('BatonLockApi');
    const owner = uniqueOwner();
    try {
      const granted = await service.acquire(key, { owner, ttlMs: Math.round(timeoutSeconds * 1000) });
      const token = granted.lease.token;
      return {
        type: 'lock',
        key,
        token,
        owner,
        safeUntil: safeDeadline(granted.sentAt, granted.lease.ttl_ms),
        release: async () => {
          await service.release(key, token);
        },
      };
    } catch (e) {
      if (e instanceof LockHeldError) return undefined;
      throw e;
    }
  }
}

/** Runs `fn` under `key` and releases afterwards; `undefined` (without running `fn`) when not acquired. */
export async function withLock<T>(
  lockApi: LockApi,
  key: string,
  timeoutSeconds: number,
  fn: () => Promise<T>,
): Promise<T | undefined> {
  const lock = await lockApi.tryAcquire(key, timeoutSeconds);
  if (!lock) return undefined;
  try {
    return await fn();
  } finally {
    await lock.release();
  }
}

/** Attempts of `acquireWithRetry`. */
export const ACQUIRE_ATTEMPTS = 3;
/** First pause of `acquireWithRetry`, ms; doubled after each attempt. */
export const ACQUIRE_RETRY_BASE_MS = 100;

/**
 * Up to `maxAttempts` tries, `100 · 2^i` ms apart (after attempt `i`, counting from 0);
 * `undefined` when none succeeded.
 */
export async function acquireWithRetry(
  lockApi: LockApi,
  key: string,
  maxAttempts = ACQUIRE_ATTEMPTS,
  timeoutSeconds = 30,
): Promise<Lock | undefined> {
  for (let i = 0; i < maxAttempts; i++) {
    const lock = await lockApi.tryAcquire(key, timeoutSeconds);
    if (lock) return lock;
    if (i + 1 < maxAttempts) await systemClock.sleep(ACQUIRE_RETRY_BASE_MS * 2 ** i);
  }
  return undefined;
}
