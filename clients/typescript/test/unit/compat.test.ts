// Every compatibility function on the in-memory store (MemoryLocks as the default service).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { LockHeldError, MemoryLocks, setDefaultService } from '@baton/client';
import { acquireWithRetry, BatonLockApi, NoOpLock, withLock as lockApiWithLock, type Lock } from '@baton/client/locking';
import * as redisService from '@baton/client/redis-service';
import * as releaseLockApi from '@baton/client/release-lock';
import { InMemoryLock } from '@baton/client/test/in-memory-lock';

import { FakeClock } from '../fake-clock.js';

test('NoOpLock(false) always grants and NoOpLock(true) never does', async () => {
  const open = new NoOpLock(false);
  const a = await open.tryAcquire();
  const b = await open.tryAcquire();
  assert.equal(a?.type, 'lock');
  assert.equal(b?.type, 'lock');
  await a!.release();
  assert.equal(await new NoOpLock(true).tryAcquire(), undefined);
  assert.ok(await new NoOpLock().tryAcquire(), 'unlocked by default');
});

test('InMemoryLock leases expire on the injected time source', async () => {
  let now = 1_700_000_000_000;
  const lockApi = new InMemoryLock({ epochMS: () => now });
  const first = await lockApi.tryAcquire('order:1', 30);
  assert.equal(first?.type, 'lock');
  assert.equal(await lockApi.tryAcquire('order:1', 30), undefined, 'held');
  assert.ok(await lockApi.tryAcquire('order:2', 30), 'keys are independent');
  now += 29_999;
  assert.equal(await lockApi.tryAcquire('order:1', 30), undefined, 'still held 1 ms before the end');
  now += 1;
  const second = await lockApi.tryAcquire('order:1', 30);
  assert.ok(second, 'free when the lease ends');
  await first!.release();
  assert.equal(await lockApi.tryAcquire('order:1', 30), undefined, "the first holder's late release left the new lock alone");
  await second!.release();
  assert.ok(await lockApi.tryAcquire('order:1', 30), 'free after its own release');
  await assert.rejects(lockApi.tryAcquire('order/1', 30), { code: 'INVALID_KEY' });
});

test('BatonLockApi over a LockService grants once, carries the token, and releases only its own grant', async () => {
  const clock = new FakeClock(0);
  const lockApi = new BatonLockApi(new MemoryLocks(clock));
  const a = await lockApi.tryAcquire('report', 2);
  assert.ok(a && a.token === 1 && a.type === 'lock');
  assert.equal(a.safeUntil, 1_600);
  assert.equal(await lockApi.tryAcquire('report', 2), undefined);
  await clock.advance(2_000);
  const b = await lockApi.tryAcquire('report', 2);
  assert.ok(b && b.token > a.token, 'a later grant has a larger token');
  await a.release();
  assert.equal(await lockApi.tryAcquire('report', 2), undefined, "a's release did not free b's lock");
  await b.release();
  assert.ok(await lockApi.tryAcquire('report', 2));
});

test('withLock over a LockApi runs fn under the lock and gives undefined when it is held', async () => {
  const lockApi = new InMemoryLock();
  const inner = await lockApiWithLock(lockApi, 'res:1', 30, async () => {
    assert.equal(await lockApiWithLock(lockApi, 'res:1', 30, async () => 'nested'), undefined);
    return 42;
  });
  assert.equal(inner, 42);
  assert.equal(await lockApiWithLock(lockApi, 'res:1', 30, async () => 'again'), 'again', 'released afterwards');
});

test('acquireWithRetry makes three attempts 100 and 200 ms apart', async () => {
  const attempts: number[] = [];
  const started = Date.now();
  const busy = { tryAcquire: async () => (attempts.push(Date.now() - started), undefined) };
  assert.equal(await acquireWithRetry(busy, 'k'), undefined);
  assert.equal(attempts.length, 3);
  assert.ok(attempts[1]! - attempts[0]! >= 95 && attempts[2]! - attempts[1]! >= 195, `${attempts}`);
  let calls = 0;
  const lock: Lock = { type: 'lock', release: async () => undefined };
  const second = { tryAcquire: async () => (++calls === 2 ? lock : undefined) };
  assert.equal(await acquireWithRetry(second, 'k'), lock);
});

test('redis-service: acquireLock gives lock data or null, releaseLock frees only that grant', async () => {
  setDefaultService(new MemoryLocks());
  const a = await redisService.acquireLock('sync:1', 5_000);
  assert.ok(a && a.key === 'sync:1' && a.ttl === 5_000 && a.token > 0);
  const started = Date.now();
  assert.equal(await redisService.acquireLock('sync:1', 5_000), null);
  assert.ok(Date.now() - started >= 3 * 190, 'three retries 200 ms apart before giving up');
  assert.equal(await redisService.releaseLock(a), true);
  assert.equal(await redisService.releaseLock(a), false, 'a second release changes nothing');
  assert.equal(await redisService.releaseLock(null), false);
  const b = await redisService.acquireLock('sync:1', 5_000, { retries: 0 });
  assert.ok(b && b.token > a.token);
  assert.equal(await redisService.releaseLock(a), false, "a stale release leaves b's lock");
  assert.equal(await redisService.releaseLock(b), true);
});

test('redis-service: withLock runs fn with the signal and token, and throws when not acquired', async () => {
  const locks = new MemoryLocks();
  setDefaultService(locks);
  const out = await redisService.withLock('job:1', 5_000, async (signal, token) => {
    await assert.rejects(redisService.withLock('job:1', 5_000, async () => 'x', { retries: 1, retryDelayMs: 10 }), LockHeldError);
    return { aborted: signal.aborted, token, holder: (await locks.get('job:1'))?.token };
  });
  assert.equal(out.aborted, false);
  assert.equal(out.token, out.holder);
  assert.equal(await locks.get('job:1'), undefined, 'released');
});

test('redis-service: runImportWithLock reports acquired, result and error', async () => {
  const locks = new MemoryLocks();
  setDefaultService(locks);
  assert.deepEqual(await redisService.runImportWithLock('42', async () => 'done'), { acquired: true, result: 'done' });
  const held = await locks.acquire('import:42', { owner: 'elsewhere', ttlMs: 60_000 });
  assert.deepEqual(await redisService.runImportWithLock('42', async () => 'again'), { acquired: false });
  await locks.release('import:42', held.lease.token);
  assert.deepEqual(
    await redisService.runImportWithLock('42', async () => {
      throw new Error('bad row 7');
    }),
    { acquired: true, error: 'bad row 7' },
  );
  assert.equal(await locks.get('import:42'), undefined, 'released after the error');
});

test('release-lock: acquire, check and an idempotent release of this process own grant', async () => {
  const locks = new MemoryLocks();
  setDefaultService(locks);
  const a = await releaseLockApi.acquireLock('nightly');
  assert.equal(a.acquired, true);
  assert.ok(a.token! > 0 && a.owner && a.expiresAt && a.timestamp);
  const again = await releaseLockApi.acquireLock('nightly', 10);
  assert.equal(again.acquired, false);
  assert.equal(again.owner, a.owner, 'a refusal names the holder');
  const check = await releaseLockApi.checkLock('nightly');
  assert.deepEqual(check, {
    exists: true,
    lockInfo: { timestamp: a.timestamp, owner: a.owner, token: a.token, expiresAt: a.expiresAt },
  });
  const released = await releaseLockApi.releaseLock('nightly');
  assert.equal(released.released, true);
  assert.equal(released.key, 'nightly');
  assert.ok(!Number.isNaN(Date.parse(released.timestamp)));
  assert.equal((await releaseLockApi.releaseLock('nightly')).released, false, 'idempotent');
  assert.deepEqual(await releaseLockApi.checkLock('nightly'), { exists: false });
  const other = await locks.acquire('nightly', { owner: 'other-process', ttlMs: 5_000 });
  assert.equal((await releaseLockApi.releaseLock('nightly')).released, false, 'never frees another process');
  assert.equal((await locks.get('nightly'))?.token, other.lease.token);
});

test('release-lock: a release that cannot reach the store fails with code LOCK_RELEASE_ERROR', async () => {
  const locks = new MemoryLocks();
  setDefaultService(locks);
  assert.equal((await releaseLockApi.acquireLock('flaky')).acquired, true);
  const broken = Object.create(locks) as MemoryLocks;
  broken.release = () => Promise.reject(new Error('no node could serve the request'));
  setDefaultService(broken);
  await assert.rejects(releaseLockApi.releaseLock('flaky'), (e: { code?: string; message: string }) => {
    assert.equal(e.code, 'LOCK_RELEASE_ERROR');
    assert.match(e.message, /flaky/);
    return true;
  });
  setDefaultService(locks);
  assert.equal((await releaseLockApi.releaseLock('flaky')).released, true, 'the grant was kept for a retry');
});

test('the free functions without a service or BATON_ENDPOINTS say what is missing', async () => {
  setDefaultService(undefined);
  const saved = process.env.BATON_ENDPOINTS;
  delete process.env.BATON_ENDPOINTS;
  try {
    await assert.rejects(releaseLockApi.checkLock('k'), { code: 'CONFIG', message: /BATON_ENDPOINTS/ });
    await assert.rejects(redisService.acquireLock('k'), { code: 'CONFIG' });
  } finally {
    if (saved !== undefined) process.env.BATON_ENDPOINTS = saved;
  }
});
