// The core client and the compatibility modules against a real three-node cluster.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BatonClient, LockHeldError, lockEventOf, uniqueOwner, type LockEvent } from '@baton/client';
import { runImportWithLock } from '@baton/client/redis-service';
import { useLock } from '@baton/client/use-lock';

import { TestCluster } from './cluster.js';

/** Per-test limit, ms: a test that hangs fails instead. */
const TEST_TIMEOUT_MS = 60_000;

let cluster: TestCluster;
let a: BatonClient;
let b: BatonClient;

before(async () => {
  cluster = await TestCluster.start();
  a = new BatonClient({ endpoints: cluster.endpoints });
  // The second client starts on another node, so that both are served by different ones.
  b = new BatonClient({ endpoints: [...cluster.endpoints].reverse() });
  process.env.BATON_ENDPOINTS = cluster.endpoints.join(',');
});

after(async () => {
  await cluster?.close();
});

test('two clients never hold a key at once, and each gets it in turn', { timeout: TEST_TIMEOUT_MS }, async () => {
  let inside = 0;
  let most = 0;
  let runs = 0;
  const worker = async (client: BatonClient) => {
    for (let i = 0; i < 5; i++) {
      await client.withLock('excl', { ttlMs: 5_000, waitMs: 20_000 }, async (token) => {
        inside += 1;
        most = Math.max(most, inside);
        const other = client === a ? b : a;
        const refused = await other.acquire('excl', { owner: uniqueOwner(), ttlMs: 5_000 }).catch((e: unknown) => e);
        assert.ok(refused instanceof LockHeldError, String(refused));
        assert.equal(refused.holder?.token, token, 'the refusal names the holder');
        await new Promise((r) => setTimeout(r, 20));
        inside -= 1;
        runs += 1;
      });
    }
  };
  await Promise.all([worker(a), worker(b)]);
  assert.equal(most, 1);
  assert.equal(runs, 10);
  assert.equal(await a.get('excl'), undefined, 'released after the last run');
});

test('the fencing token increases with every grant, across clients and keys', { timeout: TEST_TIMEOUT_MS }, async () => {
  const tokens: number[] = [];
  for (let i = 0; i < 6; i++) {
    const client = i % 2 ? a : b;
    const key = i % 3 ? 'fence' : 'fence-other';
    const g = await client.acquire(key, { owner: uniqueOwner(), ttlMs: 5_000 });
    tokens.push(g.lease.token);
    const newer = await client.validate(key, g.lease.token);
    assert.equal(newer.valid, true);
    await client.release(key, g.lease.token);
  }
  assert.deepEqual([...tokens].sort((x, y) => x - y), tokens);
  assert.equal(new Set(tokens).size, tokens.length, 'strictly increasing');
  const stale = await a.validate('fence', tokens[0]!);
  assert.equal(stale.valid, false, 'an old token is refused');
});

test('acquire is idempotent per owner and waits in the queue', { timeout: TEST_TIMEOUT_MS }, async () => {
  const owner = uniqueOwner();
  const first = await a.acquire('queue', { owner, ttlMs: 5_000 });
  const again = await b.acquire('queue', { owner, ttlMs: 5_000 });
  assert.equal(again.lease.token, first.lease.token, 'the same owner gets the same grant');
  const waiting = b.acquire('queue', { owner: uniqueOwner(), ttlMs: 5_000, waitMs: 20_000 });
  await new Promise((r) => setTimeout(r, 200));
  await a.release('queue', first.lease.token);
  const next = await waiting;
  assert.ok(next.lease.token > first.lease.token);
  await b.release('queue', next.lease.token);
});

test('the event stream reports grants and releases, and resumes after a token', { timeout: TEST_TIMEOUT_MS }, async () => {
  const g = await a.acquire('watched', { owner: uniqueOwner(), ttlMs: 5_000 });
  await a.release('watched', g.lease.token);
  const stop = new AbortController();
  const seen: LockEvent[] = [];
  for await (const ev of b.events('watched', { after: g.lease.token - 1, signal: stop.signal })) {
    const e = lockEventOf(ev);
    if (e) seen.push(e);
    if (e?.event === 'released') stop.abort();
  }
  assert.deepEqual(
    seen.map((e) => [e.event, e.token]),
    [
      ['acquired', g.lease.token],
      ['released', g.lease.token],
    ],
  );
});

test('a force release seen on the event stream fires the lost signal at once', { timeout: TEST_TIMEOUT_MS }, async () => {
  const handle = await a.lock('forced', { ttlMs: 30_000 });
  // Wait until the watcher's stream is open: an event before it would be replayed anyway.
  await new Promise((r) => setTimeout(r, 300));
  const started = performance.now();
  await b.forceRelease('forced');
  const reason = await handle.lost;
  assert.match(reason.message, /force released/);
  assert.ok(handle.signal.aborted);
  assert.ok(performance.now() - started < 5_000, 'long before the first renewal (10 s)');
});

test('runImportWithLock returns {acquired:false} while another client holds the key', { timeout: TEST_TIMEOUT_MS }, async () => {
  const holder = await b.lock('import:catalog-7', { ttlMs: 10_000 });
  let ran = false;
  const refused = await runImportWithLock('catalog-7', async () => {
    ran = true;
    return 1;
  });
  assert.deepEqual(refused, { acquired: false });
  assert.equal(ran, false);
  await holder.release();
  assert.deepEqual(await runImportWithLock('catalog-7', async () => 'imported'), { acquired: true, result: 'imported' });
  assert.equal(await a.get('import:catalog-7'), undefined);
});

test("useLock().del in a finally after a failed set leaves the other holder's lock alone", { timeout: TEST_TIMEOUT_MS }, async () => {
  const other = await b.acquire('nightly-job', { owner: uniqueOwner(), ttlMs: 20_000 });
  const kv = useLock();
  let ran = false;
  try {
    if (await kv.set('nightly-job', 'locked', { NX: true, PX: 10_000 })) ran = true;
  } finally {
    assert.equal(await kv.del('nightly-job'), 0);
  }
  assert.equal(ran, false);
  const still = await a.get('nightly-job');
  assert.equal(still?.token, other.lease.token, "the other holder's lock is still there");
  await b.release('nightly-job', other.lease.token);
  assert.equal(await kv.set('nightly-job', 'locked', { NX: true, PX: 10_000 }), 'OK');
  assert.equal(await kv.get('nightly-job'), 'locked');
  assert.equal(await kv.del('nightly-job'), 1);
  assert.equal(await a.get('nightly-job'), undefined);
});
