import assert from 'node:assert/strict';
import { test } from 'node:test';

import { BatonClient, BatonError, LockHeldError, LockLostError, NoAnswerError, WaitTimeoutError } from '@baton/client';

import { FakeClock } from '../fake-clock.js';

type Reply = { status: number; body: unknown } | 'refused';

/** A `fetch` that answers from a script per host and records where each request went. */
function scriptedFetch(script: Record<string, Reply[]>) {
  const calls: string[] = [];
  const fetchFn = (async (input: string | URL | Request) => {
    const url = new URL(String(input));
    calls.push(`${url.host}${url.pathname}`);
    const next = script[url.host]?.shift() ?? 'refused';
    if (next === 'refused') {
      throw new TypeError('fetch failed', { cause: Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }) });
    }
    return new Response(JSON.stringify(next.body), { status: next.status });
  }) as typeof fetch;
  return { fetchFn, calls };
}

const lease = { key: 'k', owner: 'me', token: 7, acquired_at: 'a', expires_at: 'e', ttl_ms: 1000 };
const busy = (code: string) => ({ status: 503, body: { code, status: 503, detail: `${code.toLowerCase()} now` } });

test('a busy or silent node makes the call rotate, and the node that answered is tried first next time', async () => {
  const { fetchFn, calls } = scriptedFetch({
    'n1:1': [busy('NO_LEADER')],
    'n2:1': ['refused'],
    'n3:1': [{ status: 200, body: lease }, { status: 200, body: lease }],
  });
  const clock = new FakeClock();
  const client = new BatonClient({ endpoints: 'n1:1,n2:1,n3:1', fetch: fetchFn, clock, random: () => 0 });
  const pending = client.acquire('k', { owner: 'me', ttlMs: 1000 });
  await clock.advance(1000);
  const granted = await pending;
  assert.equal(granted.lease.token, 7);
  assert.deepEqual(calls, ['n1:1/v1/locks/k/acquire', 'n2:1/v1/locks/k/acquire', 'n3:1/v1/locks/k/acquire']);
  assert.equal(client.preferredEndpoint, 'http://n3:1');
  await client.renew('k', 7);
  assert.equal(calls.at(-1), 'n3:1/v1/locks/k/renew');
});

test('an outcome-unknown write is sent again, and the grant keeps the first send time', async () => {
  const { fetchFn, calls } = scriptedFetch({ 'n1:1': [busy('OUTCOME_UNKNOWN'), { status: 200, body: lease }] });
  const clock = new FakeClock(500);
  const client = new BatonClient({ endpoints: ['n1:1'], fetch: fetchFn, clock, random: () => 1 });
  const pending = client.renew('k', 7);
  await clock.advance(50);
  const granted = await pending;
  assert.equal(calls.length, 2);
  assert.equal(granted.sentAt, 500);
});

test('refusals become typed errors', async () => {
  const problem = (code: string, status: number, extra: object = {}) => ({
    status,
    body: { code, status, detail: `${code} detail`, ...extra },
  });
  const { fetchFn } = scriptedFetch({
    'n1:1': [
      problem('LOCK_HELD', 409, { holder: lease }),
      problem('LOCK_HELD', 409, { available_at: 'later' }),
      problem('LOCK_LOST', 409),
      problem('WAIT_TIMEOUT', 409),
      problem('INVALID_REQUEST', 400),
      { status: 502, body: '<html>bad gateway</html>' },
      problem('LOCK_NOT_FOUND', 404),
    ],
  });
  const client = new BatonClient({ endpoints: 'n1:1', fetch: fetchFn });
  const held = await client.acquire('k', { owner: 'other' }).catch((e: unknown) => e);
  assert.ok(held instanceof LockHeldError && held.holder?.token === 7 && held.key === 'k', String(held));
  const delayed = await client.acquire('k', { owner: 'other' }).catch((e: unknown) => e);
  assert.ok(delayed instanceof LockHeldError && delayed.holder === undefined && delayed.key === 'k');
  assert.equal(delayed.availableAt, 'later');
  assert.ok((await client.renew('k', 1).catch((e: unknown) => e)) instanceof LockLostError);
  assert.ok((await client.acquire('k', { owner: 'o' }).catch((e: unknown) => e)) instanceof WaitTimeoutError);
  const bad = await client.validate('k', 1).catch((e: unknown) => e);
  assert.ok(bad instanceof BatonError && bad.code === 'INVALID_REQUEST' && bad.status === 400);
  const proxy = await client.validate('k', 1).catch((e: unknown) => e);
  assert.ok(proxy instanceof BatonError && proxy.code === 'UNKNOWN' && proxy.status === 502);
  assert.match(proxy.message, /bad gateway/);
  assert.equal(await client.get('k'), undefined, 'no live lock reads as undefined');
});

test('a key that would change the URL is refused as INVALID_KEY before anything is sent', async () => {
  const { fetchFn, calls } = scriptedFetch({});
  const client = new BatonClient({ endpoints: 'n1:1', fetch: fetchFn });
  const err = await client.acquire('a/b', { owner: 'me' }).catch((e: unknown) => e);
  assert.ok(err instanceof BatonError && err.code === 'INVALID_KEY', String(err));
  assert.deepEqual(calls, []);
});

test('a call to nodes that never answer gives up at its timeout, naming what each node said', async () => {
  const { fetchFn, calls } = scriptedFetch({ 'n2:1': Array(100).fill(busy('NO_LEADER')) });
  const clock = new FakeClock();
  const client = new BatonClient({ endpoints: 'n1:1,n2:1', fetch: fetchFn, clock, callTimeoutMs: 9000, random: () => 1 });
  const started = clock.now();
  const pending = client.get('k').catch((e: unknown) => e);
  await clock.advance(10_000);
  const err = await pending;
  assert.ok(err instanceof NoAnswerError, String(err));
  assert.ok(err.attempts > 3);
  assert.match(err.message, /n1:1: cannot connect/);
  assert.match(err.message, /n2:1: NO_LEADER: no_leader now/);
  assert.ok(clock.now() - started <= 10_000);
  assert.ok(calls.length === err.attempts);
});

test('an api key goes in the Authorization header', async () => {
  let seen: string | null = null;
  const fetchFn = (async (_input: string | URL | Request, init?: RequestInit) => {
    seen = new Headers(init?.headers).get('authorization');
    return new Response(JSON.stringify({ valid: true }), { status: 200 });
  }) as typeof fetch;
  await new BatonClient({ endpoints: 'n1:1', fetch: fetchFn, apiKey: 's3cret' }).validate('k', 1);
  assert.equal(seen, 'Bearer s3cret');
});

test('endpoints must be host:port', () => {
  assert.throws(() => new BatonClient({ endpoints: [] }), /no endpoints/);
  assert.throws(() => new BatonClient({ endpoints: 'ftp://h:1' }), /only http/);
  assert.throws(() => new BatonClient({ endpoints: 'h:1/path' }), /without a path/);
  assert.deepEqual(new BatonClient({ endpoints: ' http://127.0.0.1:7001/ , h:2' }).endpoints, ['http://127.0.0.1:7001', 'http://h:2']);
  assert.throws(() => new BatonClient({ endpoints: 'h:1', callTimeoutMs: -1 }), /callTimeoutMs/);
});
