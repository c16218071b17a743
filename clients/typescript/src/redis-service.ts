/**
 * `@baton/client/redis-service`: the free functions of a Redis lock service built on
 * redlock-universal — `withLock`, `runImportWithLock`, `acquireLock`, `releaseLock` — on
 * Baton (nodes from `BATON_ENDPOINTS`).
 *
 * Migration: `import { withLock, runImportWithLock, acquireLock, releaseLock } from
 * './services/redisService'` becomes the same names `from '@baton/client/redis-service'`.
 *
 * As with redlock-universal: 3 retries 200 ms apart while the key is held; `withLock` and
 * `runImportWithLock` extend the lock while `fn` runs (the lease keeper: renewals every
 * third of `ttlMs`) and pass `fn` an `AbortSignal` that fires when it is lost — plus the
 * fencing token as a second argument. Every acquisition has an owner of its own.
 */
import { defaultService } from './default-service.js';
import { LockHeldError } from './errors.js';
import { LockHandle } from './keeper.js';
import { uniqueOwner } from './owner.js';
import { acquireRetryingHeld } from './retry-held.js';

/** Retries while the key is held. */
export const DEFAULT_RETRIES = 3;
/** Pause between those retries, ms. */
export const DEFAULT_RETRY_DELAY_MS = 200;
/** Lease of `acquireLock` when none is given, ms. */
export const DEFAULT_TTL_MS = 30_000;
/** Lease of `runImportWithLock` when none is given, ms (renewed while the import runs). */
export const DEFAULT_IMPORT_TTL_MS = 60_000;
/** `runImportWithLock(id, …)` locks the key `import:<id>`. */
export const IMPORT_KEY_PREFIX = 'import:';

/** What `acquireLock` returns: pass it to `releaseLock`. */
export interface LockData {
  /** The key locked. */
  key: string;
  /** This acquisition's owner (what Redis would store as the value). */
  value: string;
  /** The fencing token. */
  token: number;
  /** When it was acquired, epoch ms. */
  acquiredAt: number;
  /** The lease, ms. */
  ttl: number;
}

export interface RetryOptions {
  /** Retries while held (default 3). */
  retries?: number;
  /** Pause between retries, ms (default 200). */
  retryDelayMs?: number;
}

export interface ImportLockResult<T> {
  acquired: boolean;
  result?: T;
  error?: string;
}

/** Takes `key` for `ttlMs` (not renewed); `null` while someone else holds it after the retries. */
export async function acquireLock(key: string, ttlMs = DEFAULT_TTL_MS, options: RetryOptions = {}): Promise<LockData | null> {
  const service = defaultService('acquireLock');
  const owner = uniqueOwner();
  try {
    const g = await acquireRetryingHeld(
      service,
      key,
      owner,
      ttlMs,
      options.retries ?? DEFAULT_RETRIES,
      options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS,
    );
    return { key, value: owner, token: g.lease.token, acquiredAt: Date.now(), ttl: g.lease.ttl_ms };
  } catch (e) {
    if (e instanceof LockHeldError) return null;
    throw e;
  }
}

/** Releases the lock `acquireLock` returned (nothing for a falsy one); whether it was still held and is now free. */
export async function releaseLock(lockData: LockData | null | undefined | false): Promise<boolean> {
  if (!lockData) return false;
  const released = await defaultService('releaseLock').release(lockData.key, lockData.token);
  return released.released;
}

/**
 * Runs `fn(signal, token)` holding `key`, extending it meanwhile, and releases it after.
 * Throws `LockHeldError` when not acquired after the retries, and `LockLostError` if the
 * lock is lost while `fn` runs (`signal` aborts at that moment).
 */
export async function withLock<T>(
  key: string,
  ttlMs: number,
  fn: (signal: AbortSignal, token: number) => Promise<T>,
  options: RetryOptions = {},
): Promise<T> {
  const handle = await hold(key, ttlMs, options);
  return runHolding(handle, fn);
}

/**
 * Runs the import `id` unless another process runs it: `{ acquired: false }` while the
 * key `import:<id>` is held (or when no node answered: `error` says so),
 * `{ acquired: true, result }` when `fn` finished, and `{ acquired: true, error }` when
 * it threw or the lock was lost.
 */
export async function runImportWithLock<T>(
  id: string,
  fn: () => Promise<T>,
  ttlMs = DEFAULT_IMPORT_TTL_MS,
): Promise<ImportLockResult<T>> {
  let handle: LockHandle;
  try {
    handle = await hold(`${IMPORT_KEY_PREFIX}${id}`, ttlMs, {});
  } catch (e) {
    if (e instanceof LockHeldError) return { acquired: false };
    return { acquired: false, error: e instanceof Error ? e.message : String(e) };
  }
  try {
    return { acquired: true, result: await runHolding(handle, () => fn()) };
  } catch (e) {
    return { acquired: true, error: e instanceof Error ? e.message : String(e) };
  }
}

async function hold(key: string, ttlMs: number, options: RetryOptions): Promise<LockHandle> {
  const service = defaultService('withLock');
  const owner = uniqueOwner();
  const granted = await acquireRetryingHeld(
    service,
    key,
    owner,
    ttlMs,
    options.retries ?? DEFAULT_RETRIES,
    options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS,
  );
  return new LockHandle(service, owner, granted);
}

/** `fn` raced against the loss of the lock; releases the lock afterwards unless it was lost. */
async function runHolding<T>(handle: LockHandle, fn: (signal: AbortSignal, token: number) => Promise<T>): Promise<T> {
  const work = Promise.resolve().then(() => fn(handle.signal, handle.token));
  work.catch(() => undefined);
  const lost = handle.lost.then((e) => Promise.reject(e));
  lost.catch(() => undefined);
  try {
    return await Promise.race([work, lost]);
  } finally {
    if (!handle.isLost) {
      await handle.release().catch((e: unknown) => {
        process.emitWarning(`release of ${handle.key} after withLock failed; the lease expires: ${String(e)}`);
      });
    }
  }
}
