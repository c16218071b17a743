// Code written against the Release-Lock style helpers. The only change for Baton is this
// import (it was './lib/releaseLock').
import { acquireLock, checkLock, releaseLock } from '@baton/client/release-lock';

export async function runMigration(name: string, migrate: () => Promise<void>) {
  const lock = await acquireLock(`migration:${name}`, 120);
  if (!lock.acquired) {
    const { lockInfo } = await checkLock(`migration:${name}`);
    return { ran: false, heldBy: lockInfo?.owner };
  }
  try {
    await migrate();
    return { ran: true, token: lock.token };
  } finally {
    await releaseLock(`migration:${name}`); // idempotent; throws code LOCK_RELEASE_ERROR if no node answers
  }
}
