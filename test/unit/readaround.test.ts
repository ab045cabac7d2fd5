// How a node's read-around window grows with the random reads it serves (src/fuse/readaround.ts).

import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { MAX_WINDOW, ReadAround } from '../../src/fuse/readaround.js';
import { O_RDONLY } from '../../src/vfs/types.js';

const BASE = 128 * 1024;
const PAGE = 4096;

function readAround(): ReadAround {
  return new ReadAround(BASE, async () => {}, () => Buffer.alloc(0));
}

/** A deterministic scatter of page numbers over [0, pages). */
function* scattered(pages: number, seed = 12345): Generator<number> {
  let x = seed;
  for (;;) {
    x = (Math.imul(x, 1103515245) + 12345) >>> 0;
    yield x % pages;
  }
}

/** Widens n random one-page READs of node over span bytes; the window lengths fetched. */
function sweep(ra: ReadAround, node: number, fh: number, span: number, n: number, seed?: number): number[] {
  const pages = scattered(span / PAGE, seed);
  const lengths: number[] = [];
  let end = -1;
  for (let i = 0; i < n; i++) {
    const offset = pages.next().value! * PAGE;
    const w = ra.widen(node, fh, offset, PAGE);
    // A READ that continues the last is read-ahead's, never widened.
    const sequential = offset === end;
    end = offset + PAGE;
    if (sequential) {
      assert.equal(w, undefined);
      continue;
    }
    assert.ok(w, `READ at ${offset} widened`);
    assert.equal(w.start % w.length, 0, 'windows are aligned to their length');
    assert.ok(w.start <= offset && offset + PAGE <= w.start + w.length, 'the window holds the READ');
    ra.finish(node, w, undefined, offset, PAGE);
    lengths.push(w.length);
  }
  return lengths;
}

void describe('read-around window growth', () => {
  void it('doubles a node\'s window up to 1 MiB while its random reads sweep the file', () => {
    const ra = readAround();
    ra.opened(1, 7, O_RDONLY, false);
    const span = 256 << 20;
    const lengths = sweep(ra, 7, 1, span, 2000);
    // span / 16 = 16 MiB at each size: 128 windows of 128 KiB, then 64 of 256 KiB, then 64 (the
    // least) of 512 KiB, then 1 MiB for good.
    assert.deepEqual(lengths.slice(0, 128), Array(128).fill(BASE));
    assert.deepEqual(lengths.slice(128, 192), Array(64).fill(2 * BASE));
    assert.deepEqual(lengths.slice(192, 256), Array(64).fill(4 * BASE));
    assert.deepEqual(new Set(lengths.slice(256)), new Set([MAX_WINDOW]));
    assert.equal(ra.stats().grown, 3);
  });

  void it('keeps the base window for sparse reads of a large file, and for each node apart', () => {
    const ra = readAround();
    ra.opened(1, 7, O_RDONLY, false);
    ra.opened(2, 8, O_RDONLY, false);
    // 1000 windows of 128 KiB are 125 MiB: under a sixteenth of 4 GiB.
    assert.deepEqual(new Set(sweep(ra, 7, 1, 4 * 2 ** 30, 1000)), new Set([BASE]));
    sweep(ra, 8, 2, 64 << 20, 600, 99);
    assert.equal(ra.widen(8, 2, 0, PAGE)?.length, MAX_WINDOW);
    assert.equal(ra.widen(7, 1, 8 * PAGE, PAGE)?.length, BASE, 'node 7 keeps its own window');
  });

  void it('forgets what a node\'s reads taught once the kernel forgets the node', () => {
    const ra = readAround();
    ra.opened(1, 7, O_RDONLY, false);
    sweep(ra, 7, 1, 64 << 20, 600);
    assert.equal(ra.widen(7, 1, 0, PAGE)?.length, MAX_WINDOW);
    ra.forgot(7);
    assert.equal(ra.widen(7, 1, 16 * PAGE, PAGE)?.length, BASE);
  });

  void it('grows to 8 times a small base window at most', () => {
    const ra = new ReadAround(16 * 1024, async () => {}, () => Buffer.alloc(0));
    ra.opened(1, 7, O_RDONLY, false);
    assert.deepEqual(new Set(sweep(ra, 7, 1, 8 << 20, 2000).slice(1000)), new Set([128 * 1024]));
  });

  void it('never grows past a base window that is already larger, nor widens large READs', () => {
    const ra = new ReadAround(2 * MAX_WINDOW, async () => {}, () => Buffer.alloc(0));
    ra.opened(1, 7, O_RDONLY, false);
    const lengths = sweep(ra, 7, 1, 64 << 20, 300);
    assert.deepEqual(new Set(lengths), new Set([2 * MAX_WINDOW]));
    assert.equal(ra.widen(7, 1, 4 * MAX_WINDOW, MAX_WINDOW), undefined, 'half the window is not small');
  });
});
