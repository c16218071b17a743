// The CommonJS build and its types: this file compiles to CommonJS (.cts), so every import
// below is a require() resolved through the package's "require" conditions.
import assert = require('node:assert/strict');
import { test } from 'node:test';

import { BatonClient, LockLostError, MemoryLocks, withLock } from '@baton/client';
import { BatonLockApi } from '@baton/client/locking';
import { runImportWithLock } from '@baton/client/redis-service';
import { checkLock } from '@baton/client/release-lock';
import { InMemoryLock } from '@baton/client/test/in-memory-lock';
import { useLock } from '@baton/client/use-lock';

test('every subpath loads with require() and works', async () => {
  assert.equal(typeof BatonClient, 'function');
  assert.equal(typeof BatonLockApi, 'function');
  assert.equal(typeof runImportWithLock, 'function');
  assert.equal(typeof checkLock, 'function');
  assert.equal(typeof useLock, 'function');
  assert.equal(require.resolve('@baton/client').includes('/dist/cjs/'), true, 'the CommonJS build');
  const lockApi = new InMemoryLock();
  const lock = await lockApi.tryAcquire('cjs', 1);
  assert.equal(lock?.type, 'lock');
  assert.equal(await lockApi.tryAcquire('cjs', 1), undefined);
  const locks = new MemoryLocks();
  assert.equal(await withLock(locks, 'cjs', { ttlMs: 1_000 }, async (token) => token), 1);
  const err = await locks.renew('cjs', 1).catch((e: unknown) => e);
  assert.ok(err instanceof LockLostError, 'the CommonJS classes are its own');
});
