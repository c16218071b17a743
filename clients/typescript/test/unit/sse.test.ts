import assert from 'node:assert/strict';
import { test } from 'node:test';

import { lockEventOf, parseSseBlock } from '@baton/client';

test('blocks parse into events and keep-alives into nothing', () => {
  const ev = parseSseBlock('event: acquired\ndata: {"index":7,"token":7}\nid: 7');
  assert.deepEqual(ev, { event: 'acquired', data: { index: 7, token: 7 }, id: 7 });
  const noId = parseSseBlock('event: released\ndata: {"index":8}');
  assert.equal(noId?.id, undefined);
  assert.equal(parseSseBlock(':'), undefined);
  assert.equal(lockEventOf(noId!), undefined, 'not a whole lock event');
});

test('lock events and resets are told apart', () => {
  const ev = parseSseBlock(
    'event: force_released\r\ndata: {"index":9,"key":"k","event":"force_released","owner":"a","token":7,"at":"t"}\r\nid: 9',
  )!;
  assert.equal(lockEventOf(ev)?.token, 7);
  assert.equal(ev.id, 9);
  const reset = parseSseBlock('event: reset\ndata: {"first_index":40,"reason":"gone"}')!;
  assert.equal(lockEventOf(reset), undefined);
  assert.equal(parseSseBlock('data: not json')?.data, null);
});
