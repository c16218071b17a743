// The lease keeper under faults: a leader killed while withLock runs, every node stopped.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { BatonClient, safeDeadline } from '@baton/client';

import { TestCluster } from './cluster.js';

const TEST_TIMEOUT_MS = 90_000;

let cluster: TestCluster;

before(async () => {
  cluster = await TestCluster.start();
});

after(async () => {
  await cluster?.close();
});

test('a leader killed while withLock runs does not lose the lock', { timeout: TEST_TIMEOUT_MS }, async () => {
  const client = new BatonClient({ endpoints: cluster.endpoints });
  const leader = await cluster.leader();
  // 6 s lease: renewals every 2 s, safe deadline 4.8 s after each send; an election
  // takes about one election timeout (0.4-0.8 s here).
  const ttlMs = 6_000;
  let renewedAfterKill = false;
  const result = await client.withLock('deploy', { ttlMs }, async (token, signal, lock) => {
    const before = lock.safeUntil;
    await cluster.kill(leader);
    const newLeader = await cluster.leader();
    assert.notEqual(newLeader, leader);
    // Hold on through two more renewal periods: at least one renewal goes to the new leader.
    const until = performance.now() + 2 * (ttlMs / 3) + 1_000;
    while (performance.now() < until && !signal.aborted) await new Promise((r) => setTimeout(r, 100));
    renewedAfterKill = lock.safeUntil > before;
    assert.equal(signal.aborted, false, `lost: ${String(signal.reason)}`);
    const v = await client.validate('deploy', token);
    assert.equal(v.valid, true, 'the token still holds the key on the new leader');
    return token;
  });
  assert.ok(result > 0);
  assert.ok(renewedAfterKill, 'renewed after the leader died');
  assert.equal(await client.get('deploy'), undefined, 'released afterwards');
  cluster.spawn(leader);
  await cluster.waitReady();
});

test('SIGSTOP of every node fires the lost signal at the safe deadline, before the lease can end', { timeout: TEST_TIMEOUT_MS }, async () => {
  const client = new BatonClient({ endpoints: cluster.endpoints });
  const ttlMs = 3_000;
  const sentAt = performance.now();
  const handle = await client.lock('frozen', { ttlMs });
  for (const n of cluster.nodes) cluster.signal(n.id, 'SIGSTOP');
  try {
    // The last renewal that can have been granted was sent before the stop.
    const stoppedAt = performance.now();
    const reason = await handle.lost;
    const lostAt = performance.now();
    assert.match(reason.message, /safe deadline/);
    assert.ok(handle.signal.aborted);
    // The deadline is the send time of the last granted renewal + TTL − 600 ms; that send
    // came after the acquire's send and before the stop.
    assert.ok(handle.safeUntil >= safeDeadline(sentAt, ttlMs));
    assert.ok(handle.safeUntil <= safeDeadline(stoppedAt, ttlMs));
    assert.ok(lostAt >= handle.safeUntil - 1, `lost at ${lostAt}, before the safe deadline ${handle.safeUntil}`);
    // Timer slack aside, the signal fires at the safe deadline: 600 ms before the lease
    // could end in the cluster's eyes (counted from the same send).
    assert.ok(lostAt - handle.safeUntil < 300, `lost ${lostAt - handle.safeUntil} ms after the safe deadline`);
    assert.ok(lostAt < handle.safeUntil + 600);
  } finally {
    for (const n of cluster.nodes) cluster.signal(n.id, 'SIGCONT');
  }
});
