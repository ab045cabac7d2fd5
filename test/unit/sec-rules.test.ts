// Export rules without a network: id mapping, allow-list and key parsing, loopback detection, and
// the guard's permission checks and read-only refusals over a MemoryFs (which, like the
// passthrough source, would do what it is asked: the guard is what refuses).

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, FsError } from '../../src/lib/errno.js';
import { MemoryFs } from '../../src/sources/memory.js';
import {
  ANON_ID, defaultIdMap, guardVfs, isLoopback, mapIds, parseAllowList, parseIdMap, type ExportRules,
} from '../../src/server/export.js';
import { generateKey, parseKey } from '../../src/wire/transport.js';
import {
  O_RDONLY, O_RDWR, O_WRONLY, ROOT_ID, S_IFCHR, S_IFDIR, S_IFIFO, S_IFREG, type Ctx, type Vfs,
} from '../../src/vfs/types.js';

const root: Ctx = { uid: 0, gid: 0, pid: 1 };
const alice: Ctx = { uid: 1000, gid: 1000, pid: 2 };

async function rejectsErrno(p: Promise<unknown>, errno: number, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof FsError && err.errno === errno, what);
}

test('id mapping: root squash, all squash, explicit maps first', () => {
  const m = defaultIdMap();
  assert.deepEqual(mapIds(m, 0, 0), { uid: ANON_ID, gid: ANON_ID });
  assert.deepEqual(mapIds(m, 1000, 100), { uid: 1000, gid: 100 });
  m.rootSquash = false;
  assert.deepEqual(mapIds(m, 0, 0), { uid: 0, gid: 0 });
  m.rootSquash = true;
  parseIdMap('1000:2000, 0:0', m.uids, 'uid');
  parseIdMap('1000:3000', m.gids, 'gid');
  assert.deepEqual(mapIds(m, 1000, 1000), { uid: 2000, gid: 3000 });
  // An explicit 0:0 map lets root through for uid while gid 0 is still squashed.
  assert.deepEqual(mapIds(m, 0, 0), { uid: 0, gid: ANON_ID });
  m.allSquash = true;
  m.anonUid = 99;
  m.anonGid = 98;
  assert.deepEqual(mapIds(m, 1000, 1000), { uid: 99, gid: 98 });
  assert.throws(() => parseIdMap('1000', new Map(), 'uid'), /expected CLIENT:SERVER/);
  assert.throws(() => parseIdMap('a:b', new Map(), 'uid'), /bad --map-uid/);
  assert.throws(() => parseIdMap('1:4294967295', new Map(), 'uid'), /bad uid/);
});

test('allow-list: addresses, subnets, IPv6, IPv4-mapped, bad input', () => {
  const a = parseAllowList('10.0.0.0/8, 127.0.0.1,fd00::/8');
  assert.ok(a.allows('10.1.2.3'));
  assert.ok(a.allows('127.0.0.1'));
  assert.ok(a.allows('::ffff:127.0.0.1'));
  assert.ok(a.allows('fd12::1'));
  assert.ok(!a.allows('127.0.0.2'));
  assert.ok(!a.allows('11.0.0.1'));
  assert.ok(!a.allows('::1'));
  assert.ok(!a.allows('not-an-address'));
  for (const bad of ['', '10.0.0.0/33', 'example.com', '10.0.0.0/8/1', '::1/129', '1.2.3.4/x']) {
    assert.throws(() => parseAllowList(bad), /--allow/, bad);
  }
});

test('loopback binds and key files', () => {
  for (const h of ['127.0.0.1', '127.0.0.2', '::1', 'localhost', '::ffff:127.0.0.1']) assert.ok(isLoopback(h), h);
  for (const h of ['0.0.0.0', '::', '10.0.0.1', '128.0.0.1']) assert.ok(!isLoopback(h), h);
  const text = generateKey();
  assert.equal(parseKey(text).length, 32);
  assert.notDeepEqual(parseKey(generateKey()), parseKey(text));
  assert.deepEqual(parseKey(`# a comment\n${text}`), parseKey(text));
  assert.throws(() => parseKey('zz'), /not hex/);
  assert.throws(() => parseKey('abcd'), /at least 16/);
});

function rules(over: Partial<ExportRules> = {}): ExportRules {
  return { readOnly: false, idmap: defaultIdMap(), allow: undefined, ...over };
}

/** A MemoryFs with alice's private file, a root-owned directory, and a world-writable sticky one. */
async function tree(): Promise<{ mem: Vfs; secret: number; rootDir: number; tmp: number; mine: number }> {
  const mem = new MemoryFs();
  await mem.setattr(root, ROOT_ID, { mode: 0o755 });
  const f = await mem.create(root, ROOT_ID, 'secret', S_IFREG | 0o600, O_RDWR);
  await mem.write(root, f.entry.nodeid, f.fh, 0, Buffer.from('alice only'));
  await mem.release(root, f.entry.nodeid, f.fh);
  await mem.setattr(root, f.entry.nodeid, { uid: 1000, gid: 1000 });
  const d = await mem.mkdir(root, ROOT_ID, 'rootdir', S_IFDIR | 0o755);
  const t = await mem.mkdir(root, ROOT_ID, 'tmp', S_IFDIR | 0o1777);
  const m = await mem.create(alice, t.nodeid, 'mine', S_IFREG | 0o644, O_RDWR);
  await mem.release(alice, m.entry.nodeid, m.fh);
  await mem.setattr(root, m.entry.nodeid, { uid: 1000, gid: 1000 });
  return { mem, secret: f.entry.nodeid, rootDir: d.nodeid, tmp: t.nodeid, mine: m.entry.nodeid };
}

test('a squashed root cannot chown, read another user\'s 0600 file, make devices or write root\'s dirs', async () => {
  const { mem, secret, rootDir, tmp, mine } = await tree();
  const g = guardVfs(mem, rules());
  await rejectsErrno(g.setattr(root, secret, { uid: 0 }), Errno.EPERM, 'chown');
  await rejectsErrno(g.setattr(root, rootDir, { uid: 0 }), Errno.EPERM, 'a no-op chown by a non-owner');
  await rejectsErrno(g.setattr(root, secret, { mode: 0o666 }), Errno.EPERM, 'chmod');
  await rejectsErrno(g.setattr(root, secret, { size: 0 }), Errno.EACCES, 'truncate');
  await rejectsErrno(g.open(root, secret, O_RDONLY), Errno.EACCES, 'open 0600');
  await rejectsErrno(g.mknod(root, tmp, 'null', S_IFCHR | 0o666, 0x103), Errno.EPERM, 'mknod char');
  await rejectsErrno(g.mkdir(root, rootDir, 'x', S_IFDIR | 0o755), Errno.EACCES, 'mkdir in 0755 root dir');
  await rejectsErrno(g.unlink(root, tmp, 'mine'), Errno.EPERM, 'sticky unlink');
  await rejectsErrno(g.setxattr(root, secret, 'trusted.x', Buffer.from('1'), 0), Errno.EPERM, 'trusted xattr');
  await rejectsErrno(g.link(root, secret, tmp, 'hard'), Errno.EPERM, 'protected hardlink');
  // What nobody may do, it may: a fifo in the sticky world-writable dir, owned by the anonymous ids.
  const fifo = await g.mknod(root, tmp, 'fifo', S_IFIFO | 0o644, 0);
  assert.equal(fifo.attr.uid, ANON_ID);
  // The source itself was never touched for the refusals.
  assert.equal((await mem.getattr(root, secret)).uid, 1000);
  assert.equal((await mem.getattr(root, mine)).nlink, 1);
});

test('the owner may; without root squash root may; all squash refuses the owner', async () => {
  const { mem, secret } = await tree();
  const g = guardVfs(mem, rules());
  const h = await g.open(alice, secret, O_RDONLY);
  assert.equal((await g.read(alice, secret, h.fh, 0, 100)).toString(), 'alice only');
  await g.release(alice, secret, h.fh);
  await g.setattr(alice, secret, { mode: 0o640 });
  await rejectsErrno(g.setattr(alice, secret, { uid: 1001 }), Errno.EPERM, 'give away');
  const trusting = guardVfs(mem, rules({ idmap: { ...defaultIdMap(), rootSquash: false } }));
  await trusting.setattr(root, secret, { uid: 1001 });
  const squashAll = guardVfs(mem, rules({ idmap: { ...defaultIdMap(), allSquash: true } }));
  await rejectsErrno(squashAll.setattr({ uid: 1001, gid: 1001, pid: 3 }, secret, { mode: 0o600 }), Errno.EPERM, 'all squash');
});

test('a write-only handle does not read what the caller may not read', async () => {
  const { mem, tmp } = await tree();
  const f = await mem.create(alice, tmp, 'wo', S_IFREG | 0o622, O_RDWR);
  await mem.release(alice, f.entry.nodeid, f.fh);
  await mem.setattr(root, f.entry.nodeid, { uid: 1000, gid: 1000 });
  const g = guardVfs(mem, rules());
  const bob: Ctx = { uid: 1001, gid: 1001, pid: 4 };
  const h = await g.open(bob, f.entry.nodeid, O_WRONLY);
  assert.equal(await g.write(bob, f.entry.nodeid, h.fh, 0, Buffer.from('hi')), 2);
  await rejectsErrno(g.read(bob, f.entry.nodeid, h.fh, 0, 10), Errno.EBADF, 'read through write-only');
});

test('a read-only export refuses every change with EROFS before the source sees it', async () => {
  const { mem, secret, tmp } = await tree();
  const g = guardVfs(mem, rules({ readOnly: true, idmap: { ...defaultIdMap(), rootSquash: false } }));
  assert.equal(g.info().readOnly, true);
  const h = await g.open(root, secret, O_RDONLY);
  const changes: Array<[string, () => Promise<unknown>]> = [
    ['create', () => g.create(root, tmp, 'n', S_IFREG | 0o644, O_RDWR)],
    ['open for write', () => g.open(root, secret, O_WRONLY)],
    ['write', () => g.write(root, secret, h.fh, 0, Buffer.from('x'))],
    ['truncate', () => g.setattr(root, secret, { size: 0 })],
    ['chmod', () => g.setattr(root, secret, { mode: 0o777 })],
    ['chown', () => g.setattr(root, secret, { uid: 5 })],
    ['utimes', () => g.setattr(root, secret, { mtime: 'now' })],
    ['rename', () => g.rename(root, ROOT_ID, 'secret', ROOT_ID, 'moved', 0)],
    ['unlink', () => g.unlink(root, ROOT_ID, 'secret')],
    ['rmdir', () => g.rmdir(root, ROOT_ID, 'rootdir')],
    ['mkdir', () => g.mkdir(root, ROOT_ID, 'd', S_IFDIR | 0o755)],
    ['symlink', () => g.symlink(root, ROOT_ID, 'l', '/etc')],
    ['link', () => g.link(root, secret, ROOT_ID, 'hard')],
    ['mknod', () => g.mknod(root, ROOT_ID, 'p', S_IFIFO | 0o644, 0)],
    ['setxattr', () => g.setxattr(root, secret, 'user.a', Buffer.from('1'), 0)],
    ['removexattr', () => g.removexattr(root, secret, 'user.a')],
    ['fallocate', () => g.fallocate(root, secret, h.fh, 0, 0, 4096)],
    ['copy range', () => g.copyFileRange(root, secret, h.fh, 0, secret, h.fh, 100, 1)],
    ['access W', () => g.access(root, secret, 2)],
  ];
  for (const [what, call] of changes) await rejectsErrno(call(), Errno.EROFS, what);
  assert.equal((await g.read(root, secret, h.fh, 0, 100)).toString(), 'alice only');
  assert.equal((await mem.getattr(root, secret)).mode & 0o777, 0o600);
});
