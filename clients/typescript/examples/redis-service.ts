// Code written against a redlock-universal based lock service. The only change for Baton is
// this import (it was '../services/redisService').
import { acquireLock, releaseLock, runImportWithLock, withLock } from '@baton/client/redis-service';

export async function importCatalog(id: string, rows: string[], save: (row: string) => Promise<void>) {
  return runImportWithLock(
    id,
    async () => {
      for (const row of rows) await save(row);
      return rows.length;
    },
    120_000,
  );
}

export async function rebuildSearchIndex(rebuild: () => Promise<string>): Promise<string> {
  return withLock('search-index:rebuild', 30_000, async () => rebuild());
}

export async function sendDigestOnce(send: () => Promise<void>): Promise<boolean> {
  const lock = await acquireLock('digest:weekly', 15_000);
  if (!lock) return false;
  try {
    await send();
    return true;
  } finally {
    await releaseLock(lock);
  }
}
