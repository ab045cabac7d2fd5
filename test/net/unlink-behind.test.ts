// Unlink-behind (client.ts, dircache.ts) against a real server on loopback: in a directory one
// client holds alone under LEASE_DIR, its unlinks are answered before the server has run them; a
// second client that comes to the directory gets it only after the server recalled the lease and
// the first client's unlinks have all landed, so it never sees a name the first one removed.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, FsError } from '../../src/lib/errno.js';
import { MemoryFs } from '../../src/sources/memory.js';
import type { RemoteVfs } from '../../src/client/client.js';
import { enoent, quiet, twoClients } from '../helpers/clients.js';
import { DirCacheVfs } from '../../src/client/dircache.js';
import { O_RDWR, ROOT_ID, S_IFREG, type ChangeEvent, type Ctx } from '../../src/vfs/types.js';

const root: Ctx = { uid: 0, gid: 0, pid: 1 };

/**
 * A source whose unlink of "locked" fails (as an immutable file's would on a host), and whose rmdir
 * of "busy" fails as if a host process had just put a file in it.
 */
class LockedFs extends MemoryFs {
  override unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    return name === 'locked' ? Promise.reject(new FsError(Errno.EPERM)) : super.unlink(ctx, parent, name);
  }
  override rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    return name === 'busy' ? Promise.reject(new FsError(Errno.ENOTEMPTY)) : super.rmdir(ctx, parent, name);
  }
}

async function setup(t: TestContext, files: number): Promise<{ a: RemoteVfs; b: RemoteVfs; cache: DirCacheVfs; dir: number }> {
  const { a, b } = await twoClients(t, new LockedFs());
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a, quiet);
  const dir = (await cache.mkdir(root, ROOT_ID, 'd', 0o755)).nodeid;
  for (let i = 0; i < files; i++) {
    const f = await cache.create(root, dir, `f${i}`, S_IFREG | 0o644, O_RDWR);
    await cache.release(root, f.entry.nodeid, f.fh);
  }
  return { a, b, cache, dir };
}

/** Waits (at most 5 s) until the lease question sent at a directory's first unlink has its answer. */
async function leaseAnswered(a: RemoteVfs, asked = 1): Promise<void> {
  for (let i = 0; i < 500 && a.stats().inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(a.stats().ops['leaseDir'], asked, 'the first unlink in the directory asked for it');
}

test('unlinks in a leased directory are answered at once; another client sees none of the names', async (t) => {
  const { a, b, cache, dir } = await setup(t, 40);
  await cache.unlink(root, dir, 'f0'); // the server's round trip; asks for the lease beside it
  await leaseAnswered(a);
  assert.equal(a.leasedFor(dir, 0), true, 'no one else holds the directory: granted');
  assert.equal(a.leasedFor(dir, 1000), false, 'only for the uid that asked');

  for (let i = 1; i < 40; i++) await cache.unlink(root, dir, `f${i}`);
  // None of the 39 had its reply yet: replies need a turn of the event loop, the loop took none.
  assert.deepEqual({ sent: a.stats().unlinkBehind.sent, inFlight: a.stats().unlinkBehind.inFlight }, { sent: 39, inFlight: 39 });
  // This client's own view is right at once, without waiting.
  await assert.rejects(cache.lookup(root, dir, 'f7'), enoent);

  // B comes to the directory: the server recalls A's lease first, and A answers once all 39 landed.
  const bd = await b.lookup(root, ROOT_ID, 'd');
  assert.equal(a.stats().unlinkBehind.recalled, 1);
  assert.equal(a.stats().unlinkBehind.inFlight, 0);
  assert.equal(a.leasedFor(dir, 0), false, 'the lease is over');
  assert.equal(bd.attr.nlink, 2);
  await assert.rejects(b.lookup(root, bd.nodeid, 'f39'), enoent);
  const h = await b.opendir(root, bd.nodeid);
  const names = (await b.readdir(root, bd.nodeid, h.fh, 0, 100, false)).map((e) => e.name).filter((n) => n !== '.' && n !== '..');
  await b.releasedir(root, bd.nodeid, h.fh);
  assert.deepEqual(names, []);

  // Without the lease A's next change waits for its reply again (and B is told of it).
  await cache.create(root, dir, 'again', S_IFREG | 0o644, O_RDWR).then((f) => cache.release(root, f.entry.nodeid, f.fh));
  const sent = a.stats().unlinkBehind.sent;
  await cache.unlink(root, dir, 'again');
  assert.equal(a.stats().unlinkBehind.sent, sent, 'sent and waited for');
  await assert.rejects(b.lookup(root, bd.nodeid, 'again'), enoent);
});

test('a directory another client holds is not leased, and a later create of the same name waits for the unlink', async (t) => {
  const { a, b, cache, dir } = await setup(t, 3);
  await b.lookup(root, ROOT_ID, 'd');
  await cache.unlink(root, dir, 'f0');
  await leaseAnswered(a);
  assert.equal(a.leasedFor(dir, 0), false, 'B holds it: refused');
  await cache.unlink(root, dir, 'f1');
  assert.equal(a.stats().unlinkBehind.sent, 0);

  // A client alone in its own directory: an unlink behind, then a create of the same name, which
  // must not reach the server before the unlink (it would fail with EEXIST).
  const e = (await cache.mkdir(root, ROOT_ID, 'e', 0o755)).nodeid;
  for (const n of ['x', 'y', 'z']) await cache.create(root, e, n, S_IFREG | 0o644, O_RDWR).then((f) => cache.release(root, f.entry.nodeid, f.fh));
  await cache.unlink(root, e, 'x');
  await leaseAnswered(a, 2);
  assert.equal(a.leasedFor(e, 0), true);
  await cache.unlink(root, e, 'y');
  assert.equal(a.stats().unlinkBehind.inFlight, 1);
  const again = await cache.create(root, e, 'y', S_IFREG | 0o644, O_RDWR);
  await cache.release(root, again.entry.nodeid, again.fh);
  assert.equal(a.stats().unlinkBehind.failed, 0);
  // And an rmdir waits for every unlink still on its way (the directory is empty by then).
  await cache.unlink(root, e, 'y');
  await cache.unlink(root, e, 'z');
  await cache.rmdir(root, ROOT_ID, 'e');
  await assert.rejects(b.lookup(root, ROOT_ID, 'e'), enoent);
});

test('an unlink that fails on the server brings the name back', async (t) => {
  const { a, b, cache, dir } = await setup(t, 3);
  const locked = await cache.create(root, dir, 'locked', S_IFREG | 0o644, O_RDWR);
  await cache.release(root, locked.entry.nodeid, locked.fh);
  const events: ChangeEvent[] = [];
  cache.watch((ev) => void events.push(ev));
  await cache.unlink(root, dir, 'f0');
  await leaseAnswered(a);
  assert.equal(a.leasedFor(dir, 0), true);
  await cache.unlink(root, dir, 'locked'); // answered here; the server then refuses it
  for (let i = 0; i < 500 && a.stats().unlinkBehind.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(a.stats().unlinkBehind.failed, 1);
  assert.ok(events.some((ev) => ev.kind === 'entry' && ev.parent === dir && ev.name === 'locked'), 'the kernel is told to look the name up again');
  assert.equal((await cache.lookup(root, dir, 'locked')).nodeid, locked.entry.nodeid, 'and finds the file');
  const bd = await b.lookup(root, ROOT_ID, 'd');
  assert.ok((await b.lookup(root, bd.nodeid, 'locked')).nodeid > 0, 'nothing was lost');
  // Once all landed, the attributes made up meanwhile are dropped: the kernel asks again.
  for (let i = 0; i < 100 && !events.some((ev) => ev.kind === 'inode' && ev.nodeid === dir && ev.attrsOnly); i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(events.some((ev) => ev.kind === 'inode' && ev.nodeid === dir && ev.attrsOnly));
});

/**
 * top/<name>/f, made here by A; f unlinked, which asks for <name>'s lease, granted. top holds no
 * file, so no unlink in it ever asks for top's.
 */
async function leasedChild(t: TestContext, name: string): Promise<{ a: RemoteVfs; b: RemoteVfs; cache: DirCacheVfs; top: number; child: number }> {
  const { a, b } = await twoClients(t, new LockedFs());
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a, quiet);
  const top = (await cache.mkdir(root, ROOT_ID, 'top', 0o755)).nodeid;
  const child = (await cache.mkdir(root, top, name, 0o755)).nodeid;
  await cache.create(root, child, 'f', S_IFREG | 0o644, O_RDWR).then((f) => cache.release(root, f.entry.nodeid, f.fh));
  await cache.unlink(root, child, 'f');
  await leaseAnswered(a, 1);
  assert.equal(a.leasedFor(child, 0), true);
  return { a, b, cache, top, child };
}

test('an rmdir waits for the lease its parent\'s listing asked for, and goes behind (rm -rf down a directory that holds only one)', async (t) => {
  const { a, b, cache, top } = await leasedChild(t, 'mid');
  // While removing, a listing asks for the directory's lease; rm -rf then goes down into mid and
  // comes back to remove it before the answer is in.
  assert.deepEqual(await namesIn(cache, top), ['mid']);
  assert.equal(a.stats().ops['leaseDir'], 2, 'the listing asked for top');
  assert.equal(a.leasedFor(top, 0), false, 'and has no answer yet');
  await cache.rmdir(root, top, 'mid');
  assert.equal(a.leasedFor(top, 0), true);
  assert.equal(a.stats().unlinkBehind.rmdirs, 1, 'answered here once the lease came, sent behind');
  await landed(a);
  assert.equal(a.stats().unlinkBehind.failed, 0);
  await assert.rejects(b.lookup(root, (await b.lookup(root, ROOT_ID, 'top')).nodeid, 'mid'), enoent);
});

test('a forgotten directory voids the lease answer awaited for it, and for no other', async (t) => {
  const { a, cache, top, child: x } = await leasedChild(t, 'x');
  assert.deepEqual(await namesIn(cache, top), ['x']); // asks for top's lease
  // The kernel forgets x (rm -rf removed it; here it only evicts it): x's lease ends meanwhile.
  cache.forget(x, 1);
  assert.equal(a.leasedFor(x, 0), false);
  await leaseAnswered(a, 2);
  assert.equal(a.leasedFor(top, 0), true, 'the answer for top still counts');
  // Forgotten while its own answer is on the way: no lease survives the node (the server, which
  // runs the FORGET before it grants, refuses it; the client would not take a grant either).
  const y = (await cache.mkdir(root, top, 'y', 0o755)).nodeid;
  assert.deepEqual(await namesIn(cache, y), []);
  cache.forget(y, 1);
  await leaseAnswered(a, 3);
  assert.equal(a.leasedFor(y, 0), false);
});

/** Waits (at most 5 s) until nothing sent behind is on its way. */
async function landed(a: RemoteVfs): Promise<void> {
  for (let i = 0; i < 500 && a.stats().unlinkBehind.inFlight > 0; i++) await new Promise((r) => setTimeout(r, 10));
}

/** Names in directory `dir` as `v` lists them, dots aside. */
async function namesIn(v: RemoteVfs | DirCacheVfs, dir: number): Promise<string[]> {
  const h = await v.opendir(root, dir);
  const list = await v.readdir(root, dir, h.fh, 0, 1000, false);
  await v.releasedir(root, dir, h.fh);
  return list.map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
}

test('rm -rf: an emptied directory in a leased one is removed behind, the deepest first', async (t) => {
  const { a, b } = await twoClients(t, new LockedFs());
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a, quiet);
  const touch = (dir: number, name: string): Promise<void> =>
    cache.create(root, dir, name, S_IFREG | 0o644, O_RDWR).then((f) => cache.release(root, f.entry.nodeid, f.fh));
  // top/{g0,g1,mid/{f0..f3,leaf/{h0,h1}}}: made here, so each directory's names are all known.
  const top = (await cache.mkdir(root, ROOT_ID, 'top', 0o755)).nodeid;
  const mid = (await cache.mkdir(root, top, 'mid', 0o755)).nodeid;
  const leaf = (await cache.mkdir(root, mid, 'leaf', 0o755)).nodeid;
  for (const n of ['g0', 'g1']) await touch(top, n);
  for (const n of ['f0', 'f1', 'f2', 'f3']) await touch(mid, n);
  for (const n of ['h0', 'h1']) await touch(leaf, n);
  // The first unlink in each directory asks for its lease.
  await cache.unlink(root, top, 'g0');
  await cache.unlink(root, mid, 'f0');
  await cache.unlink(root, leaf, 'h0');
  await leaseAnswered(a, 3);
  for (const d of [top, mid, leaf]) assert.equal(a.leasedFor(d, 0), true);

  // A directory that is not empty is never removed here: the server's answer is awaited.
  await assert.rejects(cache.rmdir(root, top, 'mid'), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOTEMPTY);
  assert.equal(a.stats().unlinkBehind.rmdirs, 0);
  // The kernel asks for the attributes it dropped, at its next path walk through them.
  for (const d of [top, mid]) await cache.getattr(root, d);

  await cache.unlink(root, leaf, 'h1');
  await cache.rmdir(root, mid, 'leaf');
  for (const n of ['f1', 'f2', 'f3']) await cache.unlink(root, mid, n);
  await cache.rmdir(root, top, 'mid');
  // Both rmdirs answered at once, each sent behind the unlinks that emptied its directory.
  assert.equal(a.stats().unlinkBehind.rmdirs, 2);
  assert.ok(a.stats().unlinkBehind.inFlight >= 2, 'none had its reply yet');
  await assert.rejects(cache.lookup(root, top, 'mid'), enoent);
  assert.deepEqual(await namesIn(cache, top), ['g1']);

  // B comes to top: the lease is recalled, and A answers once everything it sent has landed.
  const bt = await b.lookup(root, ROOT_ID, 'top');
  assert.equal(a.stats().unlinkBehind.inFlight, 0);
  assert.equal(a.stats().unlinkBehind.failed, 0);
  assert.deepEqual(await namesIn(b, bt.nodeid), ['g1']);
  assert.equal(bt.attr.nlink, 2, 'mid is gone from the server, with its link');
});

test('a directory the server listed, then emptied here, is removed behind; one the server refuses comes back', async (t) => {
  const { a, b } = await twoClients(t, new LockedFs());
  // B makes the tree, so A knows the directories' names only by listing them.
  const bt = (await b.mkdir(root, ROOT_ID, 'top', 0o755)).nodeid;
  for (const name of ['listed', 'busy']) {
    const d = (await b.mkdir(root, bt, name, 0o755)).nodeid;
    for (const n of ['x', 'y']) await b.create(root, d, n, S_IFREG | 0o644, O_RDWR).then((f) => b.release(root, f.entry.nodeid, f.fh));
  }
  await b.create(root, bt, 'keep', S_IFREG | 0o644, O_RDWR).then((f) => b.release(root, f.entry.nodeid, f.fh));
  await b.close();
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a, quiet);
  const events: ChangeEvent[] = [];
  cache.watch((ev) => void events.push(ev));
  const top = (await cache.lookup(root, ROOT_ID, 'top')).nodeid;
  assert.deepEqual(await namesIn(cache, top), ['busy', 'keep', 'listed']);
  const dirs: Record<string, number> = {};
  for (const name of ['listed', 'busy']) {
    dirs[name] = (await cache.lookup(root, top, name)).nodeid;
    assert.deepEqual(await namesIn(cache, dirs[name]!), ['x', 'y']);
    for (const n of ['x', 'y']) await cache.lookup(root, dirs[name]!, n);
  }
  await cache.unlink(root, top, 'keep'); // the lease of top
  for (const name of ['listed', 'busy']) await cache.unlink(root, dirs[name]!, 'x');
  await leaseAnswered(a, 3);
  for (const name of ['listed', 'busy']) {
    await cache.unlink(root, dirs[name]!, 'y');
    // The listing stayed, without the names removed: the directory is known empty.
    assert.deepEqual(await namesIn(cache, dirs[name]!), []);
    await cache.rmdir(root, top, name);
  }
  assert.equal(a.stats().unlinkBehind.rmdirs, 2);
  await landed(a);
  // The server ran one and refused the other ("busy": as if a host process had filled it).
  assert.equal(a.stats().unlinkBehind.failed, 1);
  assert.ok(events.some((ev) => ev.kind === 'entry' && ev.parent === top && ev.name === 'busy'), 'the kernel is told to look the name up again');
  assert.equal((await cache.lookup(root, top, 'busy')).nodeid, dirs['busy'], 'and finds the directory');
  await assert.rejects(cache.lookup(root, top, 'listed'), enoent);
  assert.deepEqual(await namesIn(cache, top), ['busy']);
});
