// The core client: withLock and the fencing token.
import { BatonClient, LockHeldError } from '@baton/client';

const baton = new BatonClient({ endpoints: process.env.BATON_ENDPOINTS ?? '127.0.0.1:7001' });

export async function chargeOrder(
  orderId: string,
  charge: (fence: number, signal: AbortSignal) => Promise<string>,
): Promise<string | undefined> {
  try {
    return await baton.withLock(`order:${orderId}`, { ttlMs: 15_000 }, async (token, signal) => {
      // Renewed every 5 s meanwhile. Pass the token to every write the lock protects, and
      // stop when `signal` aborts: the lock was lost (withLock rejects with LockLostError).
      return charge(token, signal);
    });
  } catch (err) {
    if (err instanceof LockHeldError) return undefined; // err.holder: who has it
    throw err;
  }
}
