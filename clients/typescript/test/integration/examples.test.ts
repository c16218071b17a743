// One example per compatibility interface (examples/), run against a real cluster: code
// written for the original library with only its import changed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BatonClient, uniqueOwner } from '@baton/client';

import * as inMemory from '../../examples/in-memory-lock.js';
import * as locking from '../../examples/locking.js';
import * as redisService from '../../examples/redis-service.js';
import * as releaseLock from '../../examples/release-lock.js';
import * as useLock from '../../examples/use-lock.js';
import { TestCluster } from './cluster.js';

const TEST_TIMEOUT_MS = 60_000;

let cluster: TestCluster;
let client: BatonClient;

before(async () => {
  cluster = await TestCluster.start();
  client = new BatonClient({ endpoints: cluster.endpoints });
  process.env.BATON_ENDPOINTS = cluster.endpoints.join(',');
});

after(async () => {
  await cluster?.close();
});

/** The holder of `key` right now, as another process would see it. */
async function holder(key: string): Promise<number | undefined> {
  return (await client.get(key))?.token;
}

test('locking: processOrder holds order:<id> on Baton while it charges', { timeout: TEST_TIMEOUT_MS }, async () => {
  const lockApi = locking.makeLockApi(false);
  let seen: number | undefined;
  const done = await locking.processOrder(lockApi, '12345', async () => {
    seen = await holder('order:12345');
    assert.equal(await locking.processOrder(lockApi, '12345', async () => undefined), false, 'a second worker is kept out');
  });
  assert.equal(done, true);
  assert.ok(seen && seen > 0, 'the cluster saw the lock');
  assert.equal(await holder('order:12345'), undefined, 'released');
  const lock = await locking.acquireWithRetry(lockApi, 'order:retry');
  assert.ok(lock);
  await lock.release();
  assert.equal(await locking.processOrder(locking.makeLockApi(true), '1', async () => undefined), true);
});

test('in-memory-lock: the lease expires on the injected clock', async () => {
  assert.deepEqual(await inMemory.leaseExpiresOnTheInjectedClock(), { whileHeld: false, afterExpiry: true });
});

test('redis-service: the import, withLock and acquire/release examples', { timeout: TEST_TIMEOUT_MS }, async () => {
  const saved: string[] = [];
  const result = await redisService.importCatalog('cat-1', ['a', 'b'], async (row) => {
    assert.ok(await holder('import:cat-1'));
    saved.push(row);
  });
  assert.deepEqual(result, { acquired: true, result: 2 });
  assert.deepEqual(saved, ['a', 'b']);
  const other = await client.acquire('import:cat-1', { owner: uniqueOwner(), ttlMs: 10_000 });
  assert.deepEqual(await redisService.importCatalog('cat-1', ['c'], async () => assert.fail('ran')), { acquired: false });
  await client.release('import:cat-1', other.lease.token);
  assert.equal(await redisService.rebuildSearchIndex(async () => 'rebuilt'), 'rebuilt');
  assert.equal(await redisService.sendDigestOnce(async () => assert.ok(await holder('digest:weekly'))), true);
  assert.equal(await holder('digest:weekly'), undefined);
});

test('release-lock: a migration runs once and names the holder otherwise', { timeout: TEST_TIMEOUT_MS }, async () => {
  const ran = await releaseLock.runMigration('v42', async () => assert.ok(await holder('migration:v42')));
  assert.equal(ran.ran, true);
  assert.ok(ran.token);
  const owner = uniqueOwner('elsewhere');
  const other = await client.acquire('migration:v42', { owner, ttlMs: 10_000 });
  assert.deepEqual(await releaseLock.runMigration('v42', async () => assert.fail('ran')), { ran: false, heldBy: owner });
  assert.equal(await holder('migration:v42'), other.lease.token, "the finally's release left the holder alone");
  await client.release('migration:v42', other.lease.token);
});

test('use-lock: a cron job runs once, and its finally never frees another holder', { timeout: TEST_TIMEOUT_MS }, async () => {
  assert.equal(await useLock.runCronOnce('daily', async () => assert.ok(await holder('cron:daily'))), true);
  const other = await client.acquire('cron:daily', { owner: uniqueOwner(), ttlMs: 10_000 });
  assert.equal(await useLock.runCronOnce('daily', async () => assert.fail('ran')), false);
  assert.equal(await holder('cron:daily'), other.lease.token);
  await client.release('cron:daily', other.lease.token);
});

test('core: withLock passes a growing fencing token and releases', { timeout: TEST_TIMEOUT_MS }, async () => {
  const { chargeOrder } = await import('../../examples/core.js');
  const tokens: number[] = [];
  for (let i = 0; i < 2; i++) {
    const out = await chargeOrder('777', async (fence, signal) => {
      assert.equal(signal.aborted, false);
      assert.equal(await holder('order:777'), fence);
      tokens.push(fence);
      return 'charged';
    });
    assert.equal(out, 'charged');
  }
  assert.ok(tokens[1]! > tokens[0]!);
  const other = await client.acquire('order:777', { owner: uniqueOwner(), ttlMs: 10_000 });
  assert.equal(await chargeOrder('777', async () => assert.fail('ran')), undefined);
  await client.release('order:777', other.lease.token);
});
