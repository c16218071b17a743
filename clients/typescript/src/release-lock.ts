/**
 * `@baton/client/release-lock`: the Release-Lock style helpers — `acquireLock(key,
 * ttlSeconds?)`, `releaseLock(key)`, `checkLock(key)` — on Baton (nodes from
 * `BATON_ENDPOINTS`).
 *
 * Migration: `import { acquireLock, releaseLock, checkLock } from './lib/releaseLock'`
 * becomes the same names `from '@baton/client/release-lock'`.
 *
 * `releaseLock(key)` releases *this process's* grant of `key` (remembered by
 * `acquireLock`), by its fencing token: it can never free a lock another process holds,
 * and calling it again (or for a key this process never took) answers `released: false`.
 * A release that no node answered throws a `LockReleaseError` with
 * `code: "LOCK_RELEASE_ERROR"` (the grant is kept, so that a retry can release it).
 */
import { defaultService } from './default-service.js';
import { LockHeldError } from './errors.js';
import { uniqueOwner } from './owner.js';

/** Lease of `acquireLock` when none is given, seconds. */
export const DEFAULT_TTL_SECONDS = 30;

export interface AcquireLockResult {
  acquired: boolean;
  key: string;
  /** Acquired: this acquisition's owner; not acquired: the holder (when known). */
  owner?: string;
  /** Acquired: the fencing token; not acquired: the holder's. */
  token?: number;
  /** RFC 3339: when the answer was given (the grant's acquisition time when acquired). */
  timestamp: string;
  /** RFC 3339, cluster time: when the lease (or the holder's) ends unless renewed. */
  expiresAt?: string;
  /** Not acquired: why. */
  message?: string;
}

export interface ReleaseLockResult {
  key: string;
  released: boolean;
  /** RFC 3339. */
  timestamp: string;
}

export interface LockInfoResult {
  /** RFC 3339: when the holder acquired it. */
  timestamp: string;
  owner: string;
  token: number;
  /** RFC 3339, cluster time. */
  expiresAt: string;
}

export interface CheckLockResult {
  exists: boolean;
  lockInfo?: LockInfoResult;
}

/** A release that did not reach the cluster. */
export class LockReleaseError extends Error {
  readonly code = 'LOCK_RELEASE_ERROR' as const;
  readonly key: string;
  constructor(key: string, cause: unknown) {
    super(`failed to release lock ${key}: ${cause instanceof Error ? cause.message : String(cause)}`, { cause });
    this.name = 'LockReleaseError';
    this.key = key;
  }
}

/** This process's grants, by key: what `releaseLock(key)` releases. */
const grants = new Map<string, number>();

/** Takes `key` for `ttlSeconds` (not renewed): `{ acquired: true, token, … }`, or `{ acquired: false, … }` while held. */
export async function acquireLock(key: string, ttlSeconds: number = DEFAULT_TTL_SECONDS): Promise<AcquireLockResult> {
  const service = defaultService('acquireLock');
  const owner = uniqueOwner();
  try {
    const { lease } = await service.acquire(key, { owner, ttlMs: Math.round(ttlSeconds * 1000) });
    grants.set(key, lease.token);
    return { acquired: true, key, owner, token: lease.token, timestamp: lease.acquired_at, expiresAt: lease.expires_at };
  } catch (e) {
    if (!(e instanceof LockHeldError)) throw e;
    const h = e.holder;
    return {
      acquired: false,
      key,
      timestamp: new Date().toISOString(),
      message: e.message,
      ...(h ? { owner: h.owner, token: h.token, expiresAt: h.expires_at } : {}),
    };
  }
}

/** Releases this process's grant of `key`; `released: false` when there was none (idempotent). */
export async function releaseLock(key: string): Promise<ReleaseLockResult> {
  const token = grants.get(key);
  if (token === undefined) return { key, released: false, timestamp: new Date().toISOString() };
  let answer;
  try {
    answer = await defaultService('releaseLock').release(key, token);
  } catch (e) {
    throw new LockReleaseError(key, e);
  }
  if (grants.get(key) === token) grants.delete(key);
  return { key, released: answer.released, timestamp: answer.timestamp };
}

/** Whether `key` is held now, and by whom. */
export async function checkLock(key: string): Promise<CheckLockResult> {
  const lock = await defaultService('checkLock').get(key);
  if (!lock) return { exists: false };
  return {
    exists: true,
    lockInfo: { timestamp: lock.acquired_at, owner: lock.owner, token: lock.token, expiresAt: lock.expires_at },
  };
}
