/**
 * `@baton/client/test/in-memory-lock`: `InMemoryLock`, the in-process `LockApi` of
 * `@paradoxical-io/common-server/test/inMemoryLock`, on `MemoryLocks` (Baton's rules).
 *
 * Migration: `import { InMemoryLock } from '@paradoxical-io/common-server/test/inMemoryLock'`
 * becomes `import { InMemoryLock } from '@baton/client/test/in-memory-lock'`.
 *
 * Leases expire after `timeoutSeconds` on the injected time source. Unlike the original,
 * `release()` frees only its own grant (not a later holder's after an expiry), and keys
 * follow Baton's rules (`[A-Za-z0-9._:-]`, 1–255 bytes), so a test catches a key the
 * cluster would refuse.
 */
import type { Lock, LockApi } from '../locking.js';
import { MemoryLocks } from '../memory.js';
import { uniqueOwner } from '../owner.js';
import { systemClock } from '../timing.js';

/** A time source in epoch milliseconds (`@paradoxical-io/common`'s `TimeProvider`). */
export interface TimeProvider {
  epochMS(): number;
}

/** `Date.now()`. */
export function defaultTimeProvider(): TimeProvider {
  return { epochMS: () => Date.now() };
}

export class InMemoryLock implements LockApi {
  readonly #locks: MemoryLocks;

  constructor(timeProvider: TimeProvider = defaultTimeProvider()) {
    this.#locks = new MemoryLocks({ now: () => timeProvider.epochMS(), sleep: systemClock.sleep });
  }

  async tryAcquire(key: string, timeoutSeconds: number): Promise<Lock | undefined> {
    const owner = uniqueOwner();
    const granted = await this.#locks
      .acquire(key, { owner, ttlMs: timeoutSeconds * 1000 })
      .catch((e: unknown) => {
        if ((e as { code?: string }).code === 'LOCK_HELD') return undefined;
        throw e;
      });
    if (!granted) return undefined;
    const token = granted.lease.token;
    return {
      type: 'lock',
      release: async () => {
        await this.#locks.release(key, token);
      },
    };
  }
}
