// The client's node table (remap.ts): lookups the client answered itself are the kernel's, not
// the server's, and the forgets it forwards never take the server below what the kernel holds.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { NodeTable, type Rebinder } from '../../src/client/remap.js';
import { ROOT_ID, type Attr, type Entry } from '../../src/vfs/types.js';

const never: Rebinder = {
  lookup: () => Promise.reject(new Error('no restart here')),
  create: () => Promise.reject(new Error('no restart here')),
  open: () => Promise.reject(new Error('no restart here')),
  opendir: () => Promise.reject(new Error('no restart here')),
};
const entry = (nodeid: number): Entry => ({ nodeid, generation: 1, attr: { ino: nodeid } as Attr });

test('forgets forwarded to the server count only the lookups it handed out', () => {
  const nodes = new NodeTable(never);
  nodes.entry(entry(7), ROOT_ID, 'd'); // the server's two
  nodes.entry(entry(7), ROOT_ID, 'd');
  for (let i = 0; i < 3; i++) assert.ok(nodes.lookedUpHere(7)); // and three answered here: the kernel holds 5
  assert.equal(nodes.forget(7, 2), undefined, 'the kernel still holds 3, the server 2: nothing to drop');
  assert.equal(nodes.forget(7, 1), undefined);
  assert.deepEqual(nodes.forget(7, 1), { id: 7, n: 1 }, 'the kernel holds 1: so does the server');
  assert.deepEqual(nodes.forget(7, 1), { id: 7, n: 1 }, 'the last');
  assert.equal(nodes.nodeCount, 0);
  assert.equal(nodes.idOf(ROOT_ID, 'd'), undefined);
});

test('a forget of everything at once hands the server back exactly its own', () => {
  const nodes = new NodeTable(never);
  nodes.entry(entry(9), ROOT_ID, 'x');
  assert.ok(nodes.lookedUpHere(9));
  assert.ok(nodes.lookedUpHere(9));
  assert.deepEqual(nodes.forget(9, 3), { id: 9, n: 1 });
  // Without lookups answered here, forgets go through as they come; a node never met is not counted.
  nodes.entry(entry(10), ROOT_ID, 'y');
  nodes.entry(entry(10), ROOT_ID, 'y');
  assert.deepEqual(nodes.forget(10, 1), { id: 10, n: 1 });
  assert.equal(nodes.lookedUpHere(11), false, 'a node the kernel does not hold');
});
