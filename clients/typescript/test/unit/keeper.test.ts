import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  LockHandle,
  LockLostError,
  MemoryLocks,
  withLock,
  type Granted,
  type LockService,
  type RenewOptions,
} from '@baton/client';

import { FakeClock, settle } from '../fake-clock.js';

/** A service whose renewals hang until aborted (every node stopped), counting them. */
function silentService(clock: FakeClock) {
  let renewals = 0;
  const service: LockService = {
    clock,
    acquire: () => Promise.reject(new Error('unused')),
    renew: (_key: string, _token: number, options?: RenewOptions) =>
      new Promise<Granted>((_resolve, reject) => {
        renewals += 1;
        options?.signal?.addEventListener('abort', () => reject(options.signal!.reason));
      }),
    release: async (key: string) => ({ key, released: true, timestamp: 't' }),
    get: async () => undefined,
    validate: async () => ({ valid: false }),
  };
  return { service, renewals: () => renewals };
}

function granted(sentAt: number, ttlMs: number): Granted {
  return { lease: { key: 'k', owner: 'o', token: 5, acquired_at: 'a', expires_at: 'e', ttl_ms: ttlMs }, sentAt };
}

test('with no renewal answered the lock is lost exactly at the safe deadline, not before', async () => {
  const clock = new FakeClock(0);
  const { service, renewals } = silentService(clock);
  const handle = new LockHandle(service, 'o', granted(0, 10_000));
  let lostAt: number | undefined;
  handle.signal.addEventListener('abort', () => (lostAt = clock.now()));
  assert.equal(handle.safeUntil, 8_000, '10 s lease, 2 s margin');
  await clock.advance(3_334);
  assert.equal(renewals(), 1, 'the first renewal goes out at a third of the lease');
  await clock.advance(7_999 - 3_334);
  assert.equal(lostAt, undefined, 'still held 1 ms before the safe deadline');
  await clock.advance(1);
  assert.equal(lostAt, 8_000);
  assert.ok(handle.signal.reason instanceof LockLostError);
  assert.match(String(handle.signal.reason.message), /safe deadline/);
  assert.equal(await handle.lost, handle.signal.reason);
  assert.equal(clock.pending, 0, 'nothing keeps running after the loss');
});

test('each renewal moves the safe deadline to its own send time plus the lease minus the margin', async () => {
  const clock = new FakeClock(0);
  const locks = new MemoryLocks(clock);
  const g = await locks.acquire('k', { owner: 'o', ttlMs: 3_000 });
  const handle = new LockHandle(locks, 'o', g);
  assert.equal(handle.safeUntil, 2_400);
  await clock.advance(1_000);
  assert.equal(handle.safeUntil, 3_400, 'renewed at 1 s');
  await clock.advance(10_000);
  assert.equal(handle.isLost, false);
  assert.equal(handle.safeUntil, 13_400);
  assert.equal((await handle.release()).released, true);
  await clock.advance(5_000);
  assert.equal(clock.pending, 0, 'release stops the renewals');
});

test('a refused renewal loses the lock at once', async () => {
  const clock = new FakeClock(0);
  const locks = new MemoryLocks(clock);
  const handle = new LockHandle(locks, 'o', await locks.acquire('k', { owner: 'o', ttlMs: 3_000 }));
  await locks.forceRelease('k');
  await locks.acquire('k', { owner: 'thief', ttlMs: 3_000 });
  await clock.advance(1_000);
  assert.equal(handle.isLost, true);
  assert.match((await handle.lost).message, /renewal refused/);
});

test('withLock passes the token and the signal, and releases afterwards', async () => {
  const locks = new MemoryLocks();
  const seen = await withLock(locks, 'job', { ttlMs: 5_000 }, async (token, signal) => {
    assert.equal((await locks.get('job'))?.token, token);
    return { token, aborted: signal.aborted };
  });
  assert.deepEqual(seen, { token: 1, aborted: false });
  assert.equal(await locks.get('job'), undefined);
  await assert.rejects(
    withLock(locks, 'job', {}, async () => {
      throw new Error('boom');
    }),
    /boom/,
  );
  assert.equal(await locks.get('job'), undefined, 'released after a throw too');
});

test('withLock rejects with LockLostError as soon as the lock is lost, without waiting for fn', async () => {
  const clock = new FakeClock(0);
  const { service } = silentService(clock);
  service.acquire = async () => granted(clock.now(), 1_000);
  let signalled = false;
  const outcome = withLock(service, 'k', { ttlMs: 1_000 }, (_token, signal) => {
    signal.addEventListener('abort', () => (signalled = true));
    return new Promise<never>(() => undefined);
  }).catch((e: unknown) => e);
  await settle();
  await clock.advance(800);
  const err = await outcome;
  assert.ok(err instanceof LockLostError, String(err));
  assert.equal(signalled, true);
});

test('a grant after a wait counts its safe deadline from the grant, not from the call', async () => {
  const clock = new FakeClock(0);
  const locks = new MemoryLocks(clock);
  const first = await locks.acquire('q', { owner: 'a', ttlMs: 1_000 });
  const waiting = locks.acquire('q', { owner: 'b', ttlMs: 3_000, waitMs: 5_000 });
  await clock.advance(500);
  await locks.release('q', first.lease.token);
  await clock.advance(10);
  const granted = await waiting;
  assert.ok(granted.sentAt >= 500, `sentAt ${granted.sentAt}`);
  const handle = new LockHandle(locks, 'b', granted);
  assert.ok(handle.safeUntil >= 500 + 2_400);
  await handle.release();
});
