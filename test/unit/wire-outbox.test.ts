// The outbox both ends of a connection write through: frames of one turn of the event loop go out
// in one write, a frame no one waits for waits for company (HOLD_MS at most), a big queue goes at
// once, and a cleared one never goes.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { HOLD_MS, Outbox, QUEUE_BYTES, writeFrames } from '../../src/wire/outbox.js';

const turn = (): Promise<void> => new Promise((r) => setImmediate(r));
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

function recorder(): { out: Outbox; writes: string[][] } {
  const writes: string[][] = [];
  return { out: new Outbox((frames) => writes.push(frames.map((f) => f.toString()))), writes };
}

test('frames of one turn go out together, in order, at its end', async () => {
  const { out, writes } = recorder();
  out.push(Buffer.from('a'));
  out.push([Buffer.from('b1'), Buffer.from('b2')]);
  out.push(Buffer.from('c'));
  assert.deepEqual(writes, [], 'nothing written within the turn');
  await turn();
  assert.deepEqual(writes, [['a', 'b1', 'b2', 'c']]);
});

test('a held frame waits for the next frame, or HOLD_MS', async () => {
  const { out, writes } = recorder();
  out.push(Buffer.from('release'), true);
  await turn();
  assert.deepEqual(writes, [], 'held past the turn');
  out.push(Buffer.from('create'));
  await turn();
  assert.deepEqual(writes, [['release', 'create']]);
  out.push(Buffer.from('forget'), true);
  await sleep(HOLD_MS + 30);
  assert.deepEqual(writes, [['release', 'create'], ['forget']], 'sent alone once HOLD_MS passed');
});

test('past QUEUE_BYTES the queue is written at once; a cleared queue is never written', async () => {
  const { out, writes } = recorder();
  out.push(Buffer.alloc(QUEUE_BYTES - 1, 'x'));
  assert.equal(writes.length, 0);
  out.push(Buffer.from('y'));
  assert.equal(writes.length, 1, 'written without waiting for the turn to end');
  out.push(Buffer.from('lost'));
  out.clear();
  await sleep(HOLD_MS + 30);
  assert.equal(writes.length, 1);
});

test('writeFrames corks only around several frames and reports a full socket', () => {
  const calls: string[] = [];
  const socket = { cork: () => calls.push('cork'), uncork: () => calls.push('uncork'), write: (b: Buffer) => (calls.push(b.toString()), b.toString() !== 'full') };
  assert.equal(writeFrames(socket, [Buffer.from('one')]), true);
  assert.deepEqual(calls, ['one']);
  calls.length = 0;
  assert.equal(writeFrames(socket, [Buffer.from('full'), Buffer.from('two')]), false);
  assert.deepEqual(calls, ['cork', 'full', 'two', 'uncork']);
});
