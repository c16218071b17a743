/** Acquire with a fixed number of retries while the key is held (the compatibility modules' rule). */
import { LockHeldError } from './errors.js';
import type { Granted, LockService } from './service.js';

/** Tries once, then `retries` more times `delayMs` apart while the answer is `LOCK_HELD`; rethrows the last refusal. */
export async function acquireRetryingHeld(
  service: LockService,
  key: string,
  owner: string,
  ttlMs: number,
  retries: number,
  delayMs: number,
): Promise<Granted> {
  for (let attempt = 0; ; attempt++) {
    try {
      return await service.acquire(key, { owner, ttlMs });
    } catch (e) {
      if (!(e instanceof LockHeldError) || attempt >= retries) throw e;
    }
    await service.clock.sleep(delayMs);
  }
}
