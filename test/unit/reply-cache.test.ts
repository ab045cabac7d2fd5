// The pieces of surviving the network that need no network: the reply cache's window and waiters,
// the session registry's grace and cap,
// serial arithmetic on seqs, backoff bounds, and the client's record of names across renames.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { ReplyCache } from '../../src/server/reply-cache.js';
import { SessionRegistry } from '../../src/server/registry.js';
import { SEQ_WINDOW, nextSeq, seqDistance } from '../../src/wire/seq.js';
import { backoffMs } from '../../src/client/reconnect.js';
import { NodeTable } from '../../src/client/remap.js';
import { ROOT_ID, type Entry } from '../../src/vfs/types.js';
import { Errno, FsError } from '../../src/lib/errno.js';

const frame = (n: number): Buffer => Buffer.alloc(20, n);

test('seqs wrap past 2^32-1 to 1 and compare in serial arithmetic', () => {
  assert.equal(nextSeq(0xffffffff), 1);
  assert.equal(seqDistance(5, 3), 2);
  assert.equal(seqDistance(3, 5), -2);
  assert.equal(seqDistance(2, 0xfffffffe), 4);
});

test('reply cache: run once, answer retries from the cache, wait for a running first attempt', async () => {
  const c = new ReplyCache();
  assert.equal(c.begin(1).kind, 'run');
  const retry = c.begin(1);
  assert.equal(retry.kind, 'running');
  c.finish(1, frame(1));
  assert.ok(retry.kind === 'running' && (await retry.reply).equals(frame(1)));
  const again = c.begin(1);
  assert.ok(again.kind === 'cached' && again.frame.equals(frame(1)));
  assert.equal(c.hits, 2);
});

test('reply cache: keeps the window, forgets older replies, refuses to rerun a forgotten seq', () => {
  const c = new ReplyCache();
  for (let s = 1; s <= SEQ_WINDOW + 10; s++) {
    assert.equal(c.begin(s).kind, 'run');
    c.finish(s, frame(s & 0xff));
  }
  assert.equal(c.size, SEQ_WINDOW);
  assert.equal(c.begin(5).kind, 'stale');
  assert.equal(c.begin(10).kind, 'stale', 'exactly the window behind: no client may retry it');
  assert.equal(c.begin(11).kind, 'cached', 'one less than the window behind: still kept');
  assert.equal(c.begin(SEQ_WINDOW + 10).kind, 'cached');
  assert.equal(c.begin(20).kind, 'cached');
  // A running request is never evicted, however far the window moves.
  const d = new ReplyCache(4);
  assert.equal(d.begin(1).kind, 'run');
  for (let s = 2; s < 20; s++) {
    d.begin(s);
    d.finish(s, frame(s));
  }
  assert.equal(d.begin(1).kind, 'running');
});

test('backoff doubles from 50 ms to a 2 s ceiling, jittered to half..full', () => {
  const p = { baseMs: 50, maxMs: 2000 };
  assert.equal(backoffMs(0, p, () => 0), 25);
  assert.equal(backoffMs(0, p, () => 1), 50);
  assert.equal(backoffMs(3, p, () => 1), 400);
  assert.equal(backoffMs(50, p, () => 1), 2000);
  assert.equal(backoffMs(50, p, () => 0), 1000);
});

test('node table: names follow rename and unlink; after a restart nodes are found again by name', async () => {
  const attr = { ino: 1, size: 0, blocks: 0, atime: { sec: 0, nsec: 0 }, mtime: { sec: 0, nsec: 0 }, ctime: { sec: 0, nsec: 0 }, mode: 0o40755, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096 };
  const e = (nodeid: number): Entry => ({ nodeid, generation: 0, attr });
  // The restarted server: names → new ids.
  const fresh = new Map([['1/b2', 50], ['50/f', 51]]);
  const looked: string[] = [];
  const t = new NodeTable({
    lookup: async (parent, name) => {
      looked.push(`${parent}/${name}`);
      return e(fresh.get(`${parent}/${name}`) ?? 0);
    },
    open: async () => 900,
    opendir: async () => 901,
    create: () => Promise.reject(new Error('nothing here was created behind')),
  });
  t.entry(e(2), ROOT_ID, 'a');
  t.entry(e(3), 2, 'b');
  t.entry(e(4), 3, 'f');
  t.entry(e(5), 3, 'gone');
  const fh = t.handle(77, false, 4, 0o1 | 0o100 | 0o1000);
  assert.equal(fh, 77, 'identity before any restart');
  t.renamed(2, 'b', ROOT_ID, 'b2', 0);
  t.removed(3, 'gone');
  t.newEpoch();
  const out = await t.outbound('write', { nodeid: 4, fh: 77, offset: 0 });
  assert.deepEqual(out, { nodeid: 51, fh: 900, offset: 0 });
  assert.deepEqual(looked, ['1/b2', '50/f']);
  await assert.rejects(t.outbound('getattr', { nodeid: 5 }), /no known name/);
  // A reply naming a re-resolved node maps back to the id the kernel knows.
  assert.equal(t.entry(e(51), 3, 'f').nodeid, 4);
  // A node never seen before gets a fresh id above anything handed out.
  assert.ok(t.entry(e(52), 3, 'new').nodeid >= 2 ** 40);
  assert.deepEqual(t.forget(4, 2), { id: 51, n: 2 });
});

test('session registry: detached sessions expire after the grace, and beyond the cap the oldest goes first', async () => {
  const ended: bigint[] = [];
  const mk = (id: bigint): { sessionId: bigint; expire(): void } => ({ sessionId: id, expire: () => ended.push(id) });
  const r = new SessionRegistry<ReturnType<typeof mk>>(50, 2);
  const [a, b, c] = [mk(1n), mk(2n), mk(3n)];
  for (const s of [a, b, c]) {
    r.add(s);
    r.detached(s);
  }
  assert.deepEqual(ended, [1n], 'over the cap of 2: the oldest ended at once');
  assert.equal(r.take(2n), b, 'a detached session can be taken back');
  await new Promise((res) => setTimeout(res, 100));
  assert.deepEqual(ended, [1n, 3n], 'the one not taken back expired after the grace');
  assert.equal(r.take(3n), undefined);
});

test('NodeTable: a file created behind whose naming crossed a server restart is made again by name', async () => {
  const attr = { ino: 1, size: 0, blocks: 0, atime: { sec: 0, nsec: 0 }, mtime: { sec: 0, nsec: 0 }, ctime: { sec: 0, nsec: 0 }, mode: 0o100640, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096 };
  const e = (nodeid: number): Entry => ({ nodeid, generation: 0, attr });
  const fresh = new Map([['1/d', 20], ['20/named', 21]]);
  const created: string[] = [];
  const opened: string[] = [];
  const t = new NodeTable({
    lookup: async (parent, name) => e(fresh.get(`${parent}/${name}`) ?? 0),
    open: async (nodeid, flags) => {
      opened.push(`${nodeid}:${flags}`);
      return 900;
    },
    opendir: async () => 901,
    create: async (parent, name, u) => {
      created.push(`${parent}/${name}:${u.mode.toString(8)}:${u.ctx.uid}`);
      return { entry: e(77), fh: 555 };
    },
  });
  const ctx = { uid: 1000, gid: 100, pid: 9 };
  t.entry(e(10), ROOT_ID, 'd');
  t.entry(e(11), 10, 'lost');
  t.entry(e(12), 10, 'named');
  const lostFh = t.handle(5, false, 11, 1);
  const namedFh = t.handle(6, false, 12, 1);
  t.createdBehind(11, { fh: lostFh, ctx, mode: 0o100640, flags: 1 });
  t.createdBehind(12, { fh: namedFh, ctx, mode: 0o100600, flags: 1 });
  t.newEpoch();
  // Never named before the old server died: made by name as asked, its handle the create's.
  assert.deepEqual(await t.outbound('write', { nodeid: 11, fh: lostFh }), { nodeid: 77, fh: 555 });
  assert.deepEqual(created, ['20/lost:100640:1000']);
  // Named just before: found by its name, and its handle reopened like any other.
  assert.deepEqual(await t.outbound('write', { nodeid: 12, fh: namedFh }), { nodeid: 21, fh: 900 });
  assert.deepEqual(created, ['20/lost:100640:1000']);
  assert.deepEqual(opened, ['21:1']);
  // A file whose naming was answered is an ordinary one: gone after a restart means stale.
  t.entry(e(13), 10, 'done');
  t.createdBehind(13, { fh: t.handle(7, false, 13, 1), ctx, mode: 0o100644, flags: 1 });
  t.named(13);
  t.newEpoch();
  await assert.rejects(t.outbound('getattr', { nodeid: 13 }), (err: unknown) => err instanceof FsError && err.errno === Errno.ESTALE);
});
