import assert from 'node:assert/strict';
import { test } from 'node:test';

import { backoffPause, renewInterval, safeDeadline, safetyMarginMs } from '@baton/client';

test('the pause doubles up to the cap and jitter keeps at least half', () => {
  const b = { initialMs: 100, maxMs: 1000 };
  assert.equal(backoffPause(b, 0, 1), 100);
  assert.equal(backoffPause(b, 1, 1), 200);
  assert.equal(backoffPause(b, 3, 1), 800);
  assert.equal(backoffPause(b, 4, 1), 1000);
  assert.equal(backoffPause(b, 1_000_000, 1), 1000);
  assert.equal(backoffPause(b, 0, 0), 50);
  assert.equal(backoffPause(b, 4, 0), 500);
  assert.equal(backoffPause(b, 2, 7), 400, 'jitter is clamped');
  assert.equal(backoffPause(b, 2, Number.NaN), 400, 'a broken random source counts as full jitter');
});

test('the safe deadline counts from the send minus a fifth of the lease, at most two seconds', () => {
  assert.equal(safetyMarginMs(30_000), 2_000);
  assert.equal(safetyMarginMs(5_000), 1_000);
  assert.equal(safeDeadline(1_000, 30_000), 29_000, '2 s margin for a 30 s lease');
  assert.equal(safeDeadline(1_000, 5_000), 5_000, 'a fifth of a short lease');
  assert.equal(safeDeadline(1_000, 0), 1_000);
});

test('renewals come three times per lease', () => {
  assert.equal(renewInterval(30_000), 10_000);
  assert.equal(renewInterval(900), 300);
});
