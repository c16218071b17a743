// The CommonJS build: every subpath loads with require() and works.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { test } from 'node:test';

const require = createRequire(import.meta.url);

test('every subpath loads with require()', async () => {
  const core = require('@baton/client');
  assert.equal(typeof core.BatonClient, 'function');
  assert.equal(typeof core.withLock, 'function');
  assert.equal(typeof require('@baton/client/locking').BatonLockApi, 'function');
  assert.equal(typeof require('@baton/client/redis-service').runImportWithLock, 'function');
  assert.equal(typeof require('@baton/client/release-lock').checkLock, 'function');
  assert.equal(typeof require('@baton/client/use-lock').useLock, 'function');
  const { InMemoryLock } = require('@baton/client/test/in-memory-lock');
  const lockApi = new InMemoryLock();
  const lock = await lockApi.tryAcquire('cjs', 1);
  assert.equal(lock.type, 'lock');
  assert.equal(await lockApi.tryAcquire('cjs', 1), undefined);
  const err = await new core.MemoryLocks().renew('cjs', 1).catch((e: unknown) => e);
  assert.ok(err instanceof core.LockLostError, 'the CommonJS classes are its own');
});
