// Code written against a `useLock()` store. The only change for Baton is this import (it
// was '../lib/useLock'); with BATON_ENDPOINTS unset it keeps working in one process.
import { useLock } from '@baton/client/use-lock';

export async function runCronOnce(job: string, run: () => Promise<void>): Promise<boolean> {
  const lock = useLock();
  const key = `cron:${job}`;
  try {
    const acquired = await lock.set(key, 'locked', { NX: true, PX: 60_000 });
    if (!acquired) return false;
    await run();
    return true;
  } finally {
    await lock.del(key); // releases only this instance's own lock
  }
}
