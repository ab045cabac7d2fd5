// The client's list of names in directories it made (dircache.ts), against a real server on
// loopback with a second client: absent names are answered without a round trip, and any change
// another client makes in the directory is seen at the very next lookup.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MemoryFs } from '../../src/sources/memory.js';
import { openSource } from '../../src/sources/index.js';
import { startServer } from '../../src/server/server.js';
import type { RemoteVfs } from '../../src/client/client.js';
import { enoent, quiet, twoClients as twoClientsOf } from '../helpers/clients.js';
import { DirCacheVfs } from '../../src/client/dircache.js';
import { O_DIRECT, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, ROOT_ID, S_IFREG, isEnded, markEnded, type Attr, type Ctx, type DirEntry, type Vfs } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };

const twoClients = (t: TestContext, vfs: Vfs = new MemoryFs()): Promise<{ a: RemoteVfs; b: RemoteVfs }> => twoClientsOf(t, vfs);


test('absent names in a directory this client made cost no round trip, and stay right', async (t) => {
  const { a, b } = await twoClients(t);
  const names = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const d = await names.mkdir(ctx, ROOT_ID, 'd', 0o755);
  const before = a.stats().requests;
  for (let i = 0; i < 50; i++) await assert.rejects(names.lookup(ctx, d.nodeid, `f${i}`), enoent);
  assert.equal(a.stats().requests, before, 'no request went to the server');
  assert.equal(names.stats().lookupsAnswered, 50);

  // Names this client adds are looked up for real.
  const f = await names.create(ctx, d.nodeid, 'mine', S_IFREG | 0o644, O_RDWR);
  assert.equal((await names.lookup(ctx, d.nodeid, 'mine')).nodeid, f.entry.nodeid);
  await names.rename(ctx, d.nodeid, 'mine', d.nodeid, 'moved', 0);
  await assert.rejects(names.lookup(ctx, d.nodeid, 'mine'), enoent);
  assert.equal((await names.lookup(ctx, d.nodeid, 'moved')).nodeid, f.entry.nodeid);

  // Another client creates a name in it: the push (acknowledged before b's call returns) drops
  // the list, so the very next lookup goes to the server and finds it.
  const bd = await b.lookup(ctx, ROOT_ID, 'd');
  await b.create(ctx, bd.nodeid, 'theirs', S_IFREG | 0o644, O_RDWR);
  assert.ok((await names.lookup(ctx, d.nodeid, 'theirs')).nodeid > 0);
  assert.equal(names.stats().knownDirs, 0, 'the list was dropped');
  await assert.rejects(names.lookup(ctx, d.nodeid, 'nothing'), enoent);
});

test('a failed change or a forget ends the certainty', async (t) => {
  const { a } = await twoClients(t);
  const names = new DirCacheVfs(a);
  const d = await names.mkdir(ctx, ROOT_ID, 'd', 0o755);
  await assert.rejects(names.unlink(ctx, d.nodeid, 'none'), enoent);
  assert.equal(names.stats().knownDirs, 0);
  const e = await names.mkdir(ctx, ROOT_ID, 'e', 0o755);
  assert.equal(names.stats().knownDirs, 1);
  names.forget(e.nodeid, 1);
  assert.equal(names.stats().knownDirs, 0);
});

test('a directory\'s attributes after our own change are answered here, and dropped by any other change', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const d = await cache.mkdir(ctx, ROOT_ID, 'd', 0o755);
  await cache.mkdir(ctx, d.nodeid, 'sub', 0o755);
  const before = a.stats().requests;
  const cached = await cache.getattr(ctx, d.nodeid);
  assert.equal(a.stats().requests, before, 'answered without a request');
  assert.deepEqual(cached, await b.getattr(ctx, d.nodeid), 'the same as the server says');
  assert.equal(cached.nlink, 3, 'the new subdirectory counted');

  // Another client changes the directory: the push drops what we had.
  const bd = await b.lookup(ctx, ROOT_ID, 'd');
  await b.mkdir(ctx, bd.nodeid, 'other', 0o755);
  const fresh = await cache.getattr(ctx, d.nodeid);
  assert.equal(fresh.nlink, 4, 'the other client\'s subdirectory is seen');
  assert.ok(a.stats().requests > before, 'that getattr went to the server');
  assert.equal(cache.stats().getattrsAnswered, 1);
});

test('extended attributes are asked once, and asked again after any change to the node', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const f = await cache.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const enodata = (e: unknown): boolean => e instanceof FsError && e.errno === Errno.ENODATA;
  // A file we just made has no capability: the kernel's probe before its first write costs nothing.
  const made = a.stats().requests;
  await assert.rejects(cache.getxattr(ctx, f.entry.nodeid, 'security.capability'), enodata);
  assert.equal(a.stats().requests, made, 'the capability probe of a new file answered here');
  await assert.rejects(cache.getxattr(ctx, f.entry.nodeid, 'user.k'), enodata);
  const before = a.stats().requests;
  await assert.rejects(cache.getxattr(ctx, f.entry.nodeid, 'user.k'), enodata);
  assert.deepEqual(await cache.listxattr(ctx, f.entry.nodeid), []);
  assert.deepEqual(await cache.listxattr(ctx, f.entry.nodeid), []);
  assert.equal(a.stats().requests, before + 1, 'only the first listxattr went out');

  // Another client sets it: the push drops what we knew.
  const bf = await b.lookup(ctx, ROOT_ID, 'f');
  await b.setxattr(ctx, bf.nodeid, 'user.k', Buffer.from('v1'), 0);
  assert.equal((await cache.getxattr(ctx, f.entry.nodeid, 'user.k')).toString(), 'v1');
  assert.deepEqual(await cache.listxattr(ctx, f.entry.nodeid), ['user.k']);
  // Our own change too.
  await cache.setxattr(ctx, f.entry.nodeid, 'user.k', Buffer.from('v2'), 0);
  assert.equal((await cache.getxattr(ctx, f.entry.nodeid, 'user.k')).toString(), 'v2');
  await cache.removexattr(ctx, f.entry.nodeid, 'user.k');
  await assert.rejects(cache.getxattr(ctx, f.entry.nodeid, 'user.k'), enodata);
});

test('a directory handle is opened on the server only when the listing is read', async (t) => {
  const { a } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  // Made past the cache: it knows no names of the directory, and cannot list it itself (9).
  const d = await a.mkdir(ctx, ROOT_ID, 'd', 0o755);
  await a.create(ctx, d.nodeid, 'x', S_IFREG | 0o644, O_RDWR);
  const before = a.stats().requests;
  const unread = await cache.opendir(ctx, d.nodeid);
  await cache.releasedir(ctx, d.nodeid, unread.fh);
  assert.equal(a.stats().requests, before, 'an unread directory costs no request');
  const read = await cache.opendir(ctx, d.nodeid);
  const names = (await cache.readdir(ctx, d.nodeid, read.fh, 0, 100, false)).map((e) => e.name).sort();
  assert.deepEqual(names, ['.', '..', 'x']);
  await cache.releasedir(ctx, d.nodeid, read.fh);
  assert.equal(a.stats().requests, before + 3, 'opendir, readdir, releasedir once read');
  await assert.rejects(cache.readdir(ctx, d.nodeid, read.fh, 0, 100, false), (e: unknown) => e instanceof FsError && e.errno === Errno.EBADF);
});

test('the attributes a SETATTR returned answer the next GETATTR, until the node is touched', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const f = await cache.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const set = await cache.setattr(ctx, f.entry.nodeid, { uid: 1000, gid: 1000 });
  const before = a.stats().requests;
  assert.deepEqual(await cache.getattr(ctx, f.entry.nodeid), set);
  assert.equal(a.stats().requests, before, 'answered here');
  await cache.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('abc'));
  assert.equal((await cache.getattr(ctx, f.entry.nodeid)).size, 3, 'a write sends the next getattr to the server');
  await cache.setattr(ctx, f.entry.nodeid, { mode: 0o600 });
  const bf = await b.lookup(ctx, ROOT_ID, 'f');
  await b.setattr(ctx, bf.nodeid, { mode: 0o640 });
  assert.equal((await cache.getattr(ctx, f.entry.nodeid)).mode & 0o777, 0o640, 'another client\'s change is seen');
});

test('a directory\'s attributes are asked once, and asked again after any change to it', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const bd = await b.mkdir(ctx, ROOT_ID, 'd', 0o755);
  const d = await cache.lookup(ctx, ROOT_ID, 'd');
  const first = await cache.getattr(ctx, d.nodeid);
  const before = a.stats().requests;
  for (let i = 0; i < 20; i++) assert.deepEqual(await cache.getattr(ctx, d.nodeid), first);
  assert.equal(a.stats().requests, before, 'answered here');
  // Our unlink of a file elsewhere changes no other directory: still answered here.
  await cache.create(ctx, ROOT_ID, 'gone', S_IFREG | 0o644, O_RDWR);
  await cache.unlink(ctx, ROOT_ID, 'gone');
  const afterUnlink = a.stats().requests;
  assert.deepEqual(await cache.getattr(ctx, d.nodeid), first);
  assert.equal(a.stats().requests, afterUnlink, 'kept across an unlink in another directory');
  // Another client chmods it, then adds a name in it: each push drops what was kept.
  await b.setattr(ctx, bd.nodeid, { mode: 0o700 });
  assert.equal((await cache.getattr(ctx, d.nodeid)).mode & 0o777, 0o700);
  const nlinkBefore = (await cache.getattr(ctx, d.nodeid)).nlink;
  await b.mkdir(ctx, bd.nodeid, 'sub', 0o755);
  assert.equal((await cache.getattr(ctx, d.nodeid)).nlink, nlinkBefore + 1, 'the new subdirectory is counted');
});

test('the attributes of directories met in a lookup or a listing answer the GETATTR after it', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const top = await b.mkdir(ctx, ROOT_ID, 'top', 0o755);
  for (let i = 0; i < 5; i++) await b.mkdir(ctx, top.nodeid, `d${i}`, 0o750);
  const looked = await cache.lookup(ctx, ROOT_ID, 'top');
  const dir = await cache.opendir(ctx, looked.nodeid);
  const list = await cache.readdir(ctx, looked.nodeid, dir.fh, 0, 100, true);
  const subs = list.filter((d) => d.name.startsWith('d'));
  assert.equal(subs.length, 5);
  // What `find` does the second time over a tree: the kernel has read each directory (its atime
  // changed) and asks for its attributes again.
  const before = a.stats().requests;
  assert.deepEqual(await cache.getattr(ctx, looked.nodeid), looked.attr);
  for (const d of subs) assert.deepEqual(await cache.getattr(ctx, d.entry!.nodeid), d.entry!.attr);
  assert.equal(a.stats().requests, before, 'six getattrs answered here');
  // Another client changes one of them: that one is asked again, and is right.
  const d2 = subs.find((d) => d.name === 'd2')!;
  await b.setattr(ctx, (await b.lookup(ctx, top.nodeid, 'd2')).nodeid, { mode: 0o700 });
  assert.equal((await cache.getattr(ctx, d2.entry!.nodeid)).mode & 0o777, 0o700);
  assert.equal(a.stats().requests, before + 1);
});

test('a rename or rmdir drops the attributes of the directories it changes, and of no other', async (t) => {
  const { a } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const other = await cache.mkdir(ctx, ROOT_ID, 'other', 0o755);
  const d = await cache.mkdir(ctx, ROOT_ID, 'd', 0o755);
  const sub = await cache.mkdir(ctx, d.nodeid, 'sub', 0o755);
  const dest = await cache.mkdir(ctx, ROOT_ID, 'dest', 0o755);
  const attrs = new Map<number, Attr>();
  for (const n of [other, d, sub, dest]) attrs.set(n.nodeid, await cache.getattr(ctx, n.nodeid));
  const asked = async (nodeid: number): Promise<[Attr, boolean]> => {
    const before = a.stats().requests;
    const got = await cache.getattr(ctx, nodeid);
    return [got, a.stats().requests !== before];
  };

  // A file renamed over another in d, as git does with its index: only d changes.
  await cache.create(ctx, d.nodeid, 'index.lock', S_IFREG | 0o644, O_RDWR);
  await cache.create(ctx, d.nodeid, 'index', S_IFREG | 0o644, O_RDWR);
  await new Promise((r) => setTimeout(r, 20));
  await cache.rename(ctx, d.nodeid, 'index.lock', d.nodeid, 'index', 0);
  for (const n of [other, sub, dest]) assert.equal((await asked(n.nodeid))[1], false, 'another directory is still answered here');
  // The parent's new attributes came with the server's reply (protocol 1.1): right, asked or not.
  assert.deepEqual((await asked(d.nodeid))[0], await a.getattr(ctx, d.nodeid), 'the parent is right');

  // A directory moved to another parent: both parents and the directory itself (its ctime).
  await new Promise((r) => setTimeout(r, 20));
  await cache.rename(ctx, d.nodeid, 'sub', dest.nodeid, 'moved', 0);
  const [subNow, subAsked] = await asked(sub.nodeid);
  assert.ok(subAsked, 'the moved directory is asked again');
  assert.notDeepEqual(subNow.ctime, attrs.get(sub.nodeid)!.ctime, 'with its new ctime');
  assert.equal((await asked(dest.nodeid))[0].nlink, attrs.get(dest.nodeid)!.nlink + 1, 'the new parent counts it');
  assert.equal((await asked(other.nodeid))[1], false);
  // Known by its new name now: moved again, it is dropped again.
  await cache.getattr(ctx, sub.nodeid);
  await cache.rename(ctx, dest.nodeid, 'moved', ROOT_ID, 'top', 0);
  assert.equal((await asked(sub.nodeid))[1], true, 'moved twice, asked again');

  await cache.rmdir(ctx, ROOT_ID, 'top');
  assert.equal((await asked(other.nodeid))[1], false, 'an rmdir elsewhere leaves it');
  assert.equal((await asked(ROOT_ID))[0].nlink, (await a.getattr(ctx, ROOT_ID)).nlink, 'the parent is right');
});

test('a plain read-only open of a file the server opened plainly before costs no round trip', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const f = await cache.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  await cache.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('one'));
  await cache.release(ctx, f.entry.nodeid, f.fh);
  const node = f.entry.nodeid;
  const first = await cache.open(ctx, node, O_RDONLY);
  await cache.release(ctx, node, first.fh);

  // The second open and its close are answered here; so are a flush and a getattr by handle.
  let before = a.stats().requests;
  const lazy = await cache.open(ctx, node, O_RDONLY);
  await cache.flush(ctx, node, lazy.fh);
  await cache.release(ctx, node, lazy.fh);
  assert.equal(a.stats().requests, before, 'open, flush and release sent nothing');
  assert.equal(cache.stats().opensAnswered, 1);

  // Writable, truncating or direct opens always go to the server.
  for (const flags of [O_RDWR, O_WRONLY, O_RDONLY | O_TRUNC, O_RDONLY | O_DIRECT]) {
    before = a.stats().requests;
    const h = await cache.open(ctx, node, flags);
    assert.ok(a.stats().requests > before, `open with flags 0o${flags.toString(8)} asked the server`);
    await cache.release(ctx, node, h.fh);
  }

  // The server opens it at the first read, once.
  const reader = await cache.open(ctx, node, O_RDONLY);
  before = a.stats().requests;
  assert.equal((await cache.read(ctx, node, reader.fh, 0, 10)).toString(), 'one');
  assert.equal((await cache.read(ctx, node, reader.fh, 1, 10)).toString(), 'ne');
  assert.equal(a.stats().requests, before + 3, 'open, then two reads');
  await cache.release(ctx, node, reader.fh);
  // A RELEASE waits up to 20 ms for company before it is sent (client.ts).
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(a.stats().requests, before + 4, 'and its release');
  await assert.rejects(cache.read(ctx, node, reader.fh, 0, 10), (e: unknown) => e instanceof FsError && e.errno === Errno.EBADF);

  // Another client's change is pushed: the next open asks the server again.
  const bf = await b.lookup(ctx, ROOT_ID, 'f');
  const bh = await b.open(ctx, bf.nodeid, O_RDWR);
  await b.write(ctx, bf.nodeid, bh.fh, 0, Buffer.from('two'));
  await b.release(ctx, bf.nodeid, bh.fh);
  before = a.stats().requests;
  const again = await cache.open(ctx, node, O_RDONLY);
  assert.ok(a.stats().requests > before, 'asked after the push');
  assert.equal((await cache.read(ctx, node, again.fh, 0, 10)).toString(), 'two');
  await cache.release(ctx, node, again.fh);
});

test('a file opened without the server stays readable after our own unlink or rename over it', async (t) => {
  // A directory on disk: its files are opened by name, so one opened after its unlink is gone.
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-lazyopen-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  const source = await openSource(dir);
  t.after(() => source.close());
  const { a } = await twoClients(t, source);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l));
  const made = async (name: string, text: string): Promise<number> => {
    const f = await cache.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR);
    await cache.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from(text));
    await cache.release(ctx, f.entry.nodeid, f.fh);
    const h = await cache.open(ctx, f.entry.nodeid, O_RDONLY);
    await cache.release(ctx, f.entry.nodeid, h.fh);
    return f.entry.nodeid;
  };
  const gone = await made('gone', 'unlinked');
  const replaced = await made('old', 'replaced');
  await made('new', 'newer');
  const h1 = await cache.open(ctx, gone, O_RDONLY);
  const h2 = await cache.open(ctx, replaced, O_RDONLY);
  assert.equal(cache.stats().opensAnswered, 2);
  await cache.unlink(ctx, ROOT_ID, 'gone');
  await cache.rename(ctx, ROOT_ID, 'new', ROOT_ID, 'old', 0);
  assert.equal((await cache.read(ctx, gone, h1.fh, 0, 20)).toString(), 'unlinked');
  assert.equal((await cache.read(ctx, replaced, h2.fh, 0, 20)).toString(), 'replaced');
  await cache.release(ctx, gone, h1.fh);
  await cache.release(ctx, replaced, h2.fh);
});

test('a whole listing is kept: listed again, and its closing read, cost no request; any change drops it', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a);
  // Made past the cache, which so lists it from the server (a directory made through it is listed
  // without, see the next test).
  const d = await a.mkdir(ctx, ROOT_ID, 'd', 0o755);
  for (const n of ['x', 'y', 'z']) await a.create(ctx, d.nodeid, n, S_IFREG | 0o644, O_RDWR).then((f) => a.release(ctx, f.entry.nodeid, f.fh));
  const list = async (c: DirCacheVfs, dir: number, plus = false, first = 100): Promise<string[]> => {
    const h = await c.opendir(ctx, dir);
    const names: string[] = [];
    for (let off = 0, max = first; ; max = 100) {
      const part = await c.readdir(ctx, dir, h.fh, off, max, plus);
      if (part.length === 0) break;
      names.push(...part.map((e) => e.name));
      off = part[part.length - 1]!.off;
    }
    await c.releasedir(ctx, dir, h.fh);
    return names.sort();
  };
  // The first entries only, then all of it from the start (what rm -rf does): read from the server.
  assert.deepEqual(await list(cache, d.nodeid, false, 2), ['.', '..', 'x', 'y', 'z']);
  const before = a.stats().requests;
  assert.deepEqual(await list(cache, d.nodeid), ['.', '..', 'x', 'y', 'z']);
  assert.deepEqual(await list(cache, d.nodeid, true), ['.', '..', 'x', 'y', 'z'], 'plus too: our kernel holds every name');
  assert.equal(a.stats().requests, before, 'listed twice more, and the ends of both, with no request');
  // The first listing's closing read was answered here already (its second reply ended it).
  assert.equal(cache.stats().listingsAnswered, 5);
  // Opened and first read in one round trip (LISTDIR), never a separate OPENDIR.
  assert.deepEqual([a.stats().ops['listdir'], a.stats().ops['opendir']], [1, undefined]);

  // Another client adds a name: the push drops the listing; the next one is the server's.
  const bd = await b.lookup(ctx, ROOT_ID, 'd');
  await b.create(ctx, bd.nodeid, 'theirs', S_IFREG | 0o644, O_RDWR);
  assert.deepEqual(await list(cache, d.nodeid), ['.', '..', 'theirs', 'x', 'y', 'z']);
  assert.ok(a.stats().requests > before);
  // So does a change of ours.
  await cache.unlink(ctx, d.nodeid, 'x');
  assert.deepEqual(await list(cache, d.nodeid), ['.', '..', 'theirs', 'y', 'z']);

  // READDIRPLUS is answered here only when the kernel holds every name: B never looked these up.
  const bcache = new DirCacheVfs(b, (l) => b.onDirAttr(l), b);
  const bdir = (await bcache.lookup(ctx, ROOT_ID, 'd')).nodeid;
  await list(bcache, bdir);
  const bBefore = b.stats().requests;
  await list(bcache, bdir, true);
  assert.ok(b.stats().requests > bBefore);
});

test('a directory this client made is listed here: dot names, pieces, stable cookies; a push ends it', async (t) => {
  const { a, b } = await twoClients(t);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a);
  const d = await cache.mkdir(ctx, ROOT_ID, 'd', 0o755);
  const made: string[] = [];
  for (let i = 0; i < 30; i++) {
    const f = await cache.create(ctx, d.nodeid, `f${i}`, S_IFREG | 0o644, O_RDWR);
    await cache.release(ctx, f.entry.nodeid, f.fh);
    made.push(`f${i}`);
  }
  const sub = await cache.mkdir(ctx, d.nodeid, 'sub', 0o700);
  made.push('sub');
  /** Reads the handle from `off` on, `max` entries a reply, to its end. */
  const rest = async (fh: number, off: number, max: number, plus = false): Promise<DirEntry[]> => {
    const out: DirEntry[] = [];
    for (;;) {
      const part = await cache.readdir(ctx, d.nodeid, fh, off, max, plus);
      out.push(...part);
      if (part.length === 0 || isEnded(part)) return out;
      off = part[part.length - 1]!.off;
    }
  };
  const before = a.stats().requests;
  const h = await cache.opendir(ctx, d.nodeid);
  const all = await rest(h.fh, 0, 7);
  assert.equal(a.stats().requests, before, 'listed in pieces with no request');
  assert.deepEqual(all.map((e) => e.name), ['.', '..', ...made], 'in the order they were made');
  // As the server lists them: the same inode numbers and types, the dots included.
  const theirs = new Map<string, DirEntry>();
  const bd = await b.lookup(ctx, ROOT_ID, 'd');
  const bh = await b.opendir(ctx, bd.nodeid);
  for (const e of await b.readdir(ctx, bd.nodeid, bh.fh, 0, 100, false)) theirs.set(e.name, e);
  assert.equal(theirs.size, all.length);
  for (const e of all) assert.deepEqual([e.ino, e.type], [theirs.get(e.name)!.ino, theirs.get(e.name)!.type], e.name);
  assert.equal(all.find((e) => e.name === 'sub')!.ino, sub.attr.ino);
  // READDIRPLUS too (our kernel holds every name), with no attributes: nothing for the kernel to count.
  const plus = await rest(h.fh, 0, 100, true);
  assert.deepEqual(plus.map((e) => e.name), all.map((e) => e.name));
  assert.ok(plus.every((e) => e.entry === undefined));
  assert.equal(a.stats().requests, before);

  // Removals while a listing is read: it goes on after its last cookie, skipping and repeating
  // nothing; so does a new handle given that cookie (the kernel goes on from its page cache so).
  const first = await cache.readdir(ctx, d.nodeid, h.fh, 0, 10, false);
  for (let i = 0; i < 5; i++) await cache.unlink(ctx, d.nodeid, `f${i}`);
  await cache.unlink(ctx, d.nodeid, 'f20');
  const cookie = first[first.length - 1]!.off;
  const after = (await rest(h.fh, cookie, 6)).map((e) => e.name);
  assert.deepEqual(after, all.slice(10).map((e) => e.name), 'the handle goes on with what it listed');
  const other = await cache.opendir(ctx, d.nodeid);
  assert.deepEqual((await rest(other.fh, cookie, 6)).map((e) => e.name), all.slice(10).map((e) => e.name).filter((n) => n !== 'f20'),
    'a new handle goes on with the names as they are');
  assert.deepEqual((await rest(other.fh, 0, 50)).map((e) => e.name), ['.', '..', ...made.filter((n) => !/^f([0-4]|20)$/.test(n))]);

  // Another client adds a name: the push ends the list; listings are the server's again, and a
  // cookie of ours that no handle read is refused, never taken for the server's.
  await b.create(ctx, bd.nodeid, 'theirs', S_IFREG | 0o644, O_RDWR);
  const fresh = await cache.opendir(ctx, d.nodeid);
  const listed = await rest(fresh.fh, 0, 100);
  assert.ok(listed.some((e) => e.name === 'theirs'));
  assert.ok(listed.every((e) => e.off < 2 ** 52), 'server cookies');
  const late = await cache.opendir(ctx, d.nodeid);
  await assert.rejects(cache.readdir(ctx, d.nodeid, late.fh, cookie, 10, false), (e: unknown) => e instanceof FsError && e.errno === Errno.ESTALE);
  // The handle that read our listing still goes on with it.
  assert.deepEqual((await rest(h.fh, cookie, 6)).map((e) => e.name), all.slice(10).map((e) => e.name));
});

test('a lookup of a directory this client made and its kernel holds is answered here, and forgotten right', async (t) => {
  /** The forgets that reach the source. */
  class Watched extends MemoryFs {
    readonly forgets: Array<[number, number]> = [];
    override forget(nodeid: number, nlookup: number): void {
      this.forgets.push([nodeid, nlookup]);
      super.forget(nodeid, nlookup);
    }
  }
  const source = new Watched();
  const { a, b } = await twoClients(t, source);
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a);
  const d = await cache.mkdir(ctx, ROOT_ID, 'd', 0o755);
  const sub = await cache.mkdir(ctx, d.nodeid, 'sub', 0o755);
  await cache.setattr(ctx, sub.nodeid, { mode: 0o700 });
  const before = a.stats().requests;
  const e = await cache.lookup(ctx, d.nodeid, 'sub');
  assert.equal(a.stats().requests, before, 'no request');
  assert.deepEqual([e.nodeid, e.generation], [sub.nodeid, sub.generation]);
  const bsub = await b.lookup(ctx, (await b.lookup(ctx, ROOT_ID, 'd')).nodeid, 'sub');
  assert.deepEqual(e.attr, bsub.attr, 'the attributes the server gives');
  // The kernel now holds two lookups of sub, the server one (the mkdir's). A forget of one is the
  // kernel's own: nothing reaches the source (a call after it on the same connection is answered
  // after the server took the forget).
  const forgotten = (): number[] => source.forgets.filter(([id]) => id === sub.nodeid).map(([, n]) => n);
  cache.forget(sub.nodeid, 1);
  await a.getattr(ctx, ROOT_ID);
  assert.deepEqual(forgotten(), []);
  // The last one is the server's.
  cache.forget(sub.nodeid, 1);
  await a.getattr(ctx, ROOT_ID);
  assert.deepEqual(forgotten(), [1]);
  assert.equal((await cache.lookup(ctx, d.nodeid, 'sub')).attr.ino, sub.attr.ino, 'found again by name');
});

test('a source whose cookies reach 2^52 turns listings made here off', async (t) => {
  const BIG = 2 ** 52;
  /** A source whose cookies are shifted up by 2^52 (and back down when a listing goes on from one). */
  class BigCookies extends MemoryFs {
    override async readdir(c: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
      const list = await super.readdir(c, nodeid, fh, offset === 0 ? 0 : offset - BIG, maxEntries, plus);
      const out = list.map((e) => ({ ...e, off: e.off + BIG }));
      return isEnded(list) ? markEnded(out) : out;
    }
  }
  const { a } = await twoClients(t, new BigCookies());
  const cache = new DirCacheVfs(a, (l) => a.onDirAttr(l), a);
  const d = await cache.mkdir(ctx, ROOT_ID, 'd', 0o755);
  for (const n of ['x', 'y']) await cache.create(ctx, d.nodeid, n, S_IFREG | 0o644, O_RDWR).then((f) => cache.release(ctx, f.entry.nodeid, f.fh));
  const list = async (dir: number): Promise<string[]> => {
    const h = await cache.opendir(ctx, dir);
    const names: string[] = [];
    for (let off = 0; ;) {
      const part = await cache.readdir(ctx, dir, h.fh, off, 2, false);
      names.push(...part.map((e) => e.name));
      if (part.length === 0 || isEnded(part)) break;
      off = part[part.length - 1]!.off;
    }
    await cache.releasedir(ctx, dir, h.fh);
    return names.sort();
  };
  let before = a.stats().requests;
  assert.deepEqual(await list(d.nodeid), ['.', '..', 'x', 'y']);
  assert.equal(a.stats().requests, before, 'made here while no cookie of the source was that large');
  // A directory listed by the server shows its cookies: from then on the server lists d too, and
  // a listing goes on from the server's cookies there.
  const other = await a.mkdir(ctx, ROOT_ID, 'other', 0o755);
  assert.deepEqual(await list(other.nodeid), ['.', '..']);
  before = a.stats().requests;
  assert.deepEqual(await list(d.nodeid), ['.', '..', 'x', 'y']);
  assert.ok(a.stats().requests > before, 'listed by the server');
});
