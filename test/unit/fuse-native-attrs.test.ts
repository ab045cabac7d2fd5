// The table the native reader answers GETATTRs from (fuse/native-attrs.ts): each slot holds the
// node, the expiry and the very reply the session would send; a node that lost its slot to another
// is never answered for the other's.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Writer } from '../../src/lib/bytes.js';
import { ATTR_OUT_SIZE, encodeAttrOut } from '../../src/fuse/abi.js';
import { ATTR_SLOT, NativeAttrs } from '../../src/fuse/native-attrs.js';
import type { Attr } from '../../src/vfs/types.js';

const attr = (ino: number): Attr => ({
  ino, size: 4096, blocks: 8, atime: { sec: 1, nsec: 2 }, mtime: { sec: 3, nsec: 4 }, ctime: { sec: 5, nsec: 6 },
  mode: 0o40755, nlink: 2, uid: 1000, gid: 100, rdev: 0, blksize: 4096,
});

function slot(t: NativeAttrs, nodeid: number): { nodeid: bigint; until: number; reply: Buffer } {
  const slots = t.table.length / ATTR_SLOT;
  const at = (nodeid % slots) * ATTR_SLOT;
  return { nodeid: t.table.readBigUInt64LE(at), until: t.table.readDoubleLE(at + 8), reply: t.table.subarray(at + 16, at + 16 + ATTR_OUT_SIZE) };
}

test('a slot holds the node, its expiry and the reply the session would send', () => {
  const t = new NativeAttrs(86400);
  t.set(7, attr(70), 1234.5);
  const w = new Writer(ATTR_OUT_SIZE);
  encodeAttrOut(w, attr(70), 86400);
  assert.deepEqual(slot(t, 7), { nodeid: 7n, until: 1234.5, reply: w.done() });
  // The next node's reply is its own, and leaves the first one's as it was.
  t.set(8, attr(80), 99);
  const w8 = new Writer(ATTR_OUT_SIZE);
  encodeAttrOut(w8, attr(80), 86400);
  assert.deepEqual(slot(t, 8), { nodeid: 8n, until: 99, reply: w8.done() });
  assert.deepEqual(slot(t, 7).reply, w.done());
  t.delete(7);
  assert.equal(slot(t, 7).nodeid, 0n);
});

test('a node whose slot another took is neither answered nor able to clear the other', () => {
  const t = new NativeAttrs(1);
  const slots = t.table.length / ATTR_SLOT;
  t.set(3, attr(30), 10);
  t.set(3 + slots, attr(31), 20);
  assert.equal(slot(t, 3).nodeid, BigInt(3 + slots), 'the later node holds the slot');
  t.delete(3);
  assert.equal(slot(t, 3 + slots).nodeid, BigInt(3 + slots), 'deleting the node that lost its slot leaves it alone');
  t.clear();
  assert.ok(t.table.every((b) => b === 0));
});
