// useLock() without BATON_ENDPOINTS: the in-process store (its own test file: its own process).
import assert from 'node:assert/strict';
import { test } from 'node:test';

import { useLock } from '@baton/client/use-lock';

delete process.env.BATON_ENDPOINTS;

test('useLock falls back to an in-process store: set NX, get, del', async () => {
  const kv = useLock();
  assert.equal(kv, useLock(), 'one store per process');
  assert.equal(await kv.set('cron:daily', 'locked', { NX: true, PX: 60_000 }), 'OK');
  assert.equal(await kv.set('cron:daily', 'locked', { NX: true, PX: 60_000 }), null, 'held, also by this process');
  assert.equal(await kv.get('cron:daily'), 'locked');
  assert.equal(await kv.del('cron:daily'), 1);
  assert.equal(await kv.del('cron:daily'), 0);
  assert.equal(await kv.get('cron:daily'), null);
});

test('useLock: leases end after PX and EX', async () => {
  const kv = useLock();
  assert.equal(await kv.set('short', 'v1', { NX: true, PX: 30 }), 'OK');
  await new Promise((r) => setTimeout(r, 60));
  assert.equal(await kv.get('short'), null);
  assert.equal(await kv.set('short', 'v2', { NX: true, EX: 60 }), 'OK');
  assert.equal(await kv.get('short'), 'v2');
  assert.equal(await kv.del('short'), 1);
});

test('useLock: a set without NX or with an unstorable value is refused', async () => {
  const kv = useLock();
  await assert.rejects(kv.set('k', 'locked'), TypeError);
  await assert.rejects(kv.set('k', 'caf\u00e9', { NX: true }), TypeError);
  await assert.rejects(kv.set('k', 'x'.repeat(129), { NX: true }), TypeError);
  assert.equal(await kv.get('k'), null);
});
