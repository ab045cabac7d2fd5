// The client's data cache on disk (src/client/datacache.ts): what it keeps, what it gives back,
// and that nothing fetched before a change can land after it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { DataCache } from '../../src/client/datacache.js';
import { tmpdir } from '../helpers/mount.js';

const PAGE = 4096;

/** Waits until the cache has settled its page writes (on the pool, at idle priority: up to 20 s on a busy machine). */
async function settle(c: DataCache, stored: number): Promise<void> {
  for (let i = 0; i < 4000 && c.stats().stored < stored; i++) await new Promise((r) => setTimeout(r, 5));
  assert.equal(c.stats().stored, stored, 'page writes settled');
}

/** A cache that keeps pages the first time they come: the tests of what it does with them. */
function cacheIn(dir: string, maxBytes = 1 << 30): DataCache {
  return new DataCache({ dir, maxBytes, keepFirst: true });
}

test('a page is kept the second time it comes from the server, not the first', async (t) => {
  const c = new DataCache({ dir: await tmpdir('wirefs-dc-'), maxBytes: 1 << 30 });
  t.after(() => c.close());
  const fetch = (node: number, offset: number, data: Buffer): void => {
    const tk = c.begin(node);
    c.put(tk, offset, data.length, data);
    c.end(tk);
  };
  const data = randomBytes(4 * PAGE);
  fetch(7, 0, data);
  await new Promise((r) => setTimeout(r, 50));
  assert.deepEqual([c.stats().stored, c.stats().files], [0, 0], 'a first fetch is not kept');
  assert.equal(await c.get(7, 0, PAGE), undefined);
  // Pages 2-3 come again with pages 4-5, which come for the first time: none kept.
  fetch(7, 2 * PAGE, randomBytes(4 * PAGE));
  fetch(8, 0, data.subarray(0, 2 * PAGE)); // another node's pages are its own
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(c.stats().stored, 0);
  fetch(7, 0, data);
  await settle(c, 4 * PAGE);
  assert.deepEqual(await c.get(7, 0, 4 * PAGE), data, 'the second fetch is kept');
  // A change drops the pages, but not what came before: the next fetch is kept at once.
  c.drop(7);
  assert.equal(await c.get(7, 0, PAGE), undefined);
  fetch(7, 0, data);
  await settle(c, 8 * PAGE);
  assert.deepEqual(await c.get(7, 0, 4 * PAGE), data);
  // The kernel forgot the node (its id may name another file later): first fetches again.
  c.forget(7);
  fetch(7, 0, data);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(c.stats().stored, 8 * PAGE);
});

test('pages read are given back whole, a range not all held is a miss, and the end of file is known', async (t) => {
  const c = cacheIn(await tmpdir('wirefs-dc-'));
  t.after(() => c.close());
  const data = randomBytes(3 * PAGE);
  const tk = c.begin(7);
  c.put(tk, 0, 3 * PAGE, data);
  c.end(tk);
  await settle(c, 3 * PAGE);
  assert.deepEqual(await c.get(7, PAGE, 2 * PAGE), data.subarray(PAGE));
  assert.equal(await c.get(7, 0, 4 * PAGE), undefined, 'page 3 was never read');
  assert.equal(await c.get(8, 0, PAGE), undefined, 'another node');
  assert.equal(await c.get(7, 100, PAGE), undefined, 'unaligned reads go to the server');

  // A short read: the file ends at 4 pages + 10 bytes.
  const tail = randomBytes(PAGE + 10);
  const t2 = c.begin(7);
  c.put(t2, 3 * PAGE, 2 * PAGE, tail);
  c.end(t2);
  await settle(c, 3 * PAGE + tail.length);
  assert.deepEqual(await c.get(7, 0, 1 << 20), Buffer.concat([data, tail]), 'a read past the end gets up to the end');
  assert.deepEqual(await c.get(7, 8 * PAGE, PAGE), Buffer.alloc(0), 'a read after the end gets nothing');
  assert.equal(c.stats().bytes, 5 * PAGE);
  // A full page where the file was known to end: two lengths for one file, nothing kept.
  const t3 = c.begin(7);
  c.put(t3, 4 * PAGE, PAGE, randomBytes(PAGE));
  c.end(t3);
  assert.equal(await c.get(7, 0, PAGE), undefined);
  assert.equal(c.stats().bytes, 0);
});

test('a read in flight when its node is dropped (a change) stores nothing', async (t) => {
  const c = cacheIn(await tmpdir('wirefs-dc-'));
  t.after(() => c.close());
  const before = c.begin(1);
  const other = c.begin(2);
  c.drop(1); // a write of ours or a push about node 1, while the read was on the wire
  c.put(before, 0, PAGE, randomBytes(PAGE));
  c.put(other, 0, PAGE, Buffer.alloc(PAGE, 2));
  c.end(before);
  c.end(other);
  await settle(c, PAGE);
  assert.equal(await c.get(1, 0, PAGE), undefined, 'the stale read was not kept');
  assert.deepEqual(await c.get(2, 0, PAGE), Buffer.alloc(PAGE, 2), 'another node is untouched');

  // dropAll (the link was lost) spoils every read in flight too.
  const third = c.begin(3);
  c.dropAll();
  c.put(third, 0, PAGE, randomBytes(PAGE));
  c.end(third);
  assert.equal(await c.get(2, 0, PAGE), undefined);
  assert.equal(await c.get(3, 0, PAGE), undefined);

  // A write settling after its node was dropped does not mark anything either.
  const late = c.begin(4);
  c.put(late, 0, PAGE, randomBytes(PAGE));
  c.drop(4);
  c.end(late);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(await c.get(4, 0, PAGE), undefined);

  // A bypassed node (direct I/O opens) is never kept, until the kernel forgets it.
  c.bypass(5);
  const t5 = c.begin(5);
  c.put(t5, 0, PAGE, randomBytes(PAGE));
  c.end(t5);
  assert.equal(await c.get(5, 0, PAGE), undefined);
  c.forget(5);
  const t6 = c.begin(5);
  c.put(t6, 0, PAGE, Buffer.alloc(PAGE, 5));
  c.end(t6);
  await settle(c, 2 * PAGE);
  assert.deepEqual(await c.get(5, 0, PAGE), Buffer.alloc(PAGE, 5));
});

test('the cache stays within its bound, least recently used first, and cleans up after itself', async (t) => {
  const parent = await tmpdir('wirefs-dc-');
  const c = cacheIn(parent, 4 * PAGE);
  t.after(() => c.close());
  let stored = 0;
  for (const id of [1, 2, 3]) {
    const tk = c.begin(id);
    c.put(tk, 0, 2 * PAGE, Buffer.alloc(2 * PAGE, id));
    c.end(tk);
    stored += 2 * PAGE;
    await settle(c, stored);
    assert.ok(c.stats().bytes <= 4 * PAGE, `over the bound: ${c.stats().bytes}`);
  }
  assert.equal(await c.get(1, 0, PAGE), undefined, 'the oldest went');
  assert.deepEqual(await c.get(3, 0, PAGE), Buffer.alloc(PAGE, 3));
  assert.equal(c.stats().files, 2);
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(fs.readdirSync(c.dir).length, 2, 'a dropped file is removed from disk');

  // A directory of a daemon that died is removed by the next cache made in the same place; a live
  // one's (this process's) is not.
  const dead = spawn(process.execPath, ['-e', '0']);
  await new Promise((r) => dead.on('exit', r));
  const orphan = path.join(parent, `pid-${dead.pid!}-x1`);
  fs.mkdirSync(orphan);
  fs.writeFileSync(path.join(orphan, '1'), 'x');
  const c2 = cacheIn(parent);
  assert.ok(!fs.existsSync(orphan), 'orphan removed');
  assert.ok(fs.existsSync(c.dir), 'a live cache kept');
  c2.close();
  c.close();
  assert.ok(!fs.existsSync(c.dir) && !fs.existsSync(c2.dir), 'each removes its own directory at close');
});
