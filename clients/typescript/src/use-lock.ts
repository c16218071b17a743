/**
 * `@baton/client/use-lock`: `useLock()`, a process-wide key-value store used for locks as
 * `set(key, 'locked', { NX: true, PX: ms })`, `get(key)`, `del(key)` — on Baton when
 * `BATON_ENDPOINTS` is set, else on an in-process `MemoryLocks` (one process only).
 *
 * Migration: `import { useLock } from '../lib/useLock'` becomes
 * `import { useLock } from '@baton/client/use-lock'`.
 *
 * `set` with `NX` takes the key for `PX` ms (or `EX` s; the cluster's default TTL when
 * neither) and answers `'OK'`, or `null` while anyone — this process included — holds it.
 * `del(key)` releases only the grant this process's own `set` got, by its fencing token:
 * a `finally { del(key) }` after a failed `set` sends nothing and answers `0`, and never
 * frees another holder's lock. The value is kept in the lock's owner name, so `get`
 * returns it from any process; it must be printable ASCII of at most 128 bytes.
 */
import { defaultService } from './default-service.js';
import { LockHeldError } from './errors.js';
import { MemoryLocks } from './memory.js';
import { uniqueOwner } from './owner.js';
import type { LockService } from './service.js';

export interface SetOptions {
  /** Only set when the key does not exist: required, a lock never overwrites another holder. */
  NX?: boolean;
  /** Expire after this many milliseconds. */
  PX?: number;
  /** Expire after this many seconds. */
  EX?: number;
}

export interface Kv {
  /** `'OK'` when set, `null` when the key is held. */
  set(key: string, value: string, options?: SetOptions): Promise<'OK' | null>;
  /** The value of the live lock on `key`, or `null`. */
  get(key: string): Promise<string | null>;
  /** `1` when this process's own lock on `key` was released, else `0`. */
  del(key: string): Promise<number>;
}

/** Longest value, bytes. */
export const MAX_VALUE_BYTES = 128;
/** Separates the value from the unique part of an owner name (hosts have no `@`). */
const VALUE_SEPARATOR = '@';

let memory: MemoryLocks | undefined;
let kv: Kv | undefined;

/** The process-wide store. */
export function useLock(): Kv {
  kv ??= createKv(() => defaultService('useLock', () => (memory ??= new MemoryLocks())));
  return kv;
}

function createKv(service: () => LockService): Kv {
  /** This process's grants by key: the only ones `del` releases. */
  const grants = new Map<string, number>();
  return {
    async set(key, value, options = {}) {
      if (!options.NX) {
        throw new TypeError('useLock().set needs { NX: true }: a lock never overwrites another holder');
      }
      if (typeof value !== 'string' || value.length > MAX_VALUE_BYTES || !/^[\x20-\x7e]*$/.test(value)) {
        throw new TypeError(`useLock().set: the value must be printable ASCII of at most ${MAX_VALUE_BYTES} bytes`);
      }
      const ttlMs = options.PX ?? (options.EX !== undefined ? options.EX * 1000 : undefined);
      const owner = `${value}${VALUE_SEPARATOR}${uniqueOwner()}`;
      try {
        const { lease } = await service().acquire(key, { owner, ...(ttlMs !== undefined ? { ttlMs } : {}) });
        grants.set(key, lease.token);
        return 'OK';
      } catch (e) {
        if (e instanceof LockHeldError) return null;
        throw e;
      }
    },
    async get(key) {
      const lock = await service().get(key);
      if (!lock) return null;
      const at = lock.owner.lastIndexOf(VALUE_SEPARATOR);
      return at >= 0 ? lock.owner.slice(0, at) : lock.owner;
    },
    async del(key) {
      const token = grants.get(key);
      if (token === undefined) return 0;
      const released = await service().release(key, token);
      if (grants.get(key) === token) grants.delete(key);
      return released.released ? 1 : 0;
    },
  };
}
