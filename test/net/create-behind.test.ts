// Create-behind (client.ts, writeback.ts; protocol 1.4) against a real server over a passthrough
// directory, through a proxy adding 40 ms each way so that a round trip shows. In a directory the
// client holds alone, a create is answered at once with a file the server made ahead without a
// name (O_TMPFILE): its node id, handle and inode number are the file's for good. Close waits for
// the naming, and a naming the server refuses fails the close and takes the name away again.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Errno, FsError } from '../../src/lib/errno.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { startServer } from '../../src/server/server.js';
import { defaultIdMap } from '../../src/server/export.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import { WriteBehindVfs } from '../../src/client/writeback.js';
import { DirCacheVfs } from '../../src/client/dircache.js';
import { O_RDWR, O_WRONLY, ROOT_ID, S_IFREG, type ChangeEvent, type Ctx } from '../../src/vfs/types.js';
import { startProxy } from '../helpers/proxy.js';
import { attrShown, enoent, quiet, statShown, until } from '../helpers/clients.js';

const root: Ctx = { uid: 0, gid: 0, pid: 1 };
const DELAY_MS = 40;

interface Setup {
  dir: string;
  a: RemoteVfs;
  b: RemoteVfs;
  wb: WriteBehindVfs;
  cache: DirCacheVfs;
  events: ChangeEvent[];
}

async function setup(t: TestContext): Promise<Setup> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-cbehind-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  const vfs = new PassthroughFs(dir);
  const server = await startServer({
    vfs, host: '127.0.0.1', port: 0, log: quiet,
    export: { readOnly: false, idmap: { ...defaultIdMap(), rootSquash: false }, allow: undefined },
  });
  t.after(() => server.close());
  const proxy = await startProxy({ host: '127.0.0.1', port: server.address().port }, { delayMs: DELAY_MS });
  t.after(() => proxy.close());
  const a = await connect({ host: '127.0.0.1', port: proxy.port, log: quiet });
  const b = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  const wb = new WriteBehindVfs(a, undefined, (l) => a.onWriteAttr(l), a);
  const cache = new DirCacheVfs(wb, (l) => a.onDirAttr(l), wb, quiet);
  t.after(async () => {
    await cache.close();
    await b.close();
  });
  const events: ChangeEvent[] = [];
  cache.watch((ev) => void events.push(ev));
  return { dir, a, b, wb, cache, events };
}

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const v = await p;
  return [v, Date.now() - t0];
}

/** A directory of A's own, leased, with files reserved in it: the first create there is the server's. */
async function ownDir(s: Setup, name: string): Promise<number> {
  const d = (await s.cache.mkdir(root, ROOT_ID, name, 0o755)).nodeid;
  const first = await s.cache.create(root, d, 'first', S_IFREG | 0o644, O_RDWR);
  await s.cache.release(root, first.entry.nodeid, first.fh);
  for (let i = 0; i < 500 && s.a.stats().createBehind.reserved === 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.ok(s.a.stats().createBehind.reserved > 0, 'the directory was leased and files reserved in it');
  assert.equal(s.a.leasedFor(d, 0), true);
  return d;
}

test('creates in a leased directory are answered at once, with the files\' final inode numbers; close waits for the names', async (t) => {
  const s = await setup(t);
  const d = await ownDir(s, 'd');
  for (let i = 0; i < 10; i++) {
    const name = `f${i}`;
    const [c, ms] = await timed(s.cache.create(root, d, name, S_IFREG | 0o640, O_WRONLY));
    assert.ok(ms < DELAY_MS, `create ${i} answered without a round trip (${ms} ms)`);
    const data = Buffer.from(`file ${i}\n`);
    assert.equal(await s.cache.write(root, c.entry.nodeid, c.fh, 0, data), data.length);
    const [, msFlush] = await timed(s.cache.flush(root, c.entry.nodeid, c.fh));
    assert.ok(msFlush >= DELAY_MS, 'close waited for the server');
    // Once close returned the server has the file: its name, bytes, mode, and the inode the
    // client gave out at the create.
    const st = fs.statSync(path.join(s.dir, 'd', name));
    assert.equal(st.ino, c.entry.attr.ino, 'the inode number handed out at create is the file\'s');
    assert.equal(st.mode, S_IFREG | 0o640);
    assert.equal(fs.readFileSync(path.join(s.dir, 'd', name), 'utf8'), `file ${i}\n`);
    assert.ok(Math.abs(st.mtimeMs - Date.now()) < 60_000, 'made now, not when it was reserved');
    await s.cache.release(root, c.entry.nodeid, c.fh);
    assert.equal((await s.cache.getattr(root, c.entry.nodeid)).ino, st.ino);
  }
  assert.deepEqual({ sent: s.a.stats().createBehind.sent, failed: s.a.stats().createBehind.failed }, { sent: 10, failed: 0 });

  // A create that has not been closed yet: B, coming to the directory, has the lease recalled and
  // sees the name (the naming went out at the create).
  const open = await s.cache.create(root, d, 'open', S_IFREG | 0o600, O_RDWR);
  const bd = await s.b.lookup(root, ROOT_ID, 'd');
  assert.equal(s.a.leasedFor(d, 0), false, 'recalled');
  const h = await s.b.opendir(root, bd.nodeid);
  const names = (await s.b.readdir(root, bd.nodeid, h.fh, 0, 100, false)).map((e) => e.name).filter((n) => n !== '.' && n !== '..').sort();
  await s.b.releasedir(root, bd.nodeid, h.fh);
  assert.deepEqual(names, ['f0', 'f1', 'f2', 'f3', 'f4', 'f5', 'f6', 'f7', 'f8', 'f9', 'first', 'open']);
  assert.equal((await s.b.lookup(root, bd.nodeid, 'open')).attr.ino, open.entry.attr.ino);
  await s.cache.release(root, open.entry.nodeid, open.fh);
  // The files reserved ahead went back with the lease: their FORGETs closed them on the server
  // (this process), and only the named ones are left.
  assert.equal(s.a.stats().createBehind.reserved, 0);
  for (let i = 0; i < 200 && unnamedFds(s.dir) > 0; i++) await new Promise((r) => setTimeout(r, 10));
  assert.equal(unnamedFds(s.dir), 0, 'no unnamed file is held open');
  assert.deepEqual(fs.readdirSync(path.join(s.dir, 'd')).sort(), names);
});

test('a file created behind and closed unwritten is stat-ed here, with the server\'s attributes, until a change', async (t) => {
  const s = await setup(t);
  const d = await ownDir(s, 'u');
  const ids: number[] = [];
  for (let i = 0; i < 5; i++) {
    const c = await s.cache.create(root, d, `u${i}`, S_IFREG | 0o600, O_WRONLY);
    await s.cache.flush(root, c.entry.nodeid, c.fh);
    await s.cache.release(root, c.entry.nodeid, c.fh);
    ids.push(c.entry.nodeid);
    // (The write-behind layer itself: the listing cache above keeps no file attributes of its own here.)
    const sent = s.a.stats().requests;
    const [got, ms] = await timed(s.wb.getattr(root, c.entry.nodeid));
    assert.equal(s.a.stats().requests, sent, `stat of u${i} answered here`);
    assert.ok(ms < DELAY_MS, `no round trip (${ms} ms)`);
    assert.equal(attrShown(got), statShown(path.join(s.dir, 'u', `u${i}`)), 'exactly the server\'s attributes, times included');
  }
  assert.equal(s.wb.stats().attrsLanded, 5);
  // Another client changes one: its push drops what the naming said, and the stat asks the server.
  const bd = await s.b.lookup(root, ROOT_ID, 'u');
  const bf = await s.b.lookup(root, bd.nodeid, 'u0');
  await s.b.setattr(root, bf.nodeid, { mode: 0o644 });
  for (let i = 0; i < 200 && !s.events.some((ev) => ev.kind === 'inode' && ev.nodeid === ids[0]); i++) await new Promise((r) => setTimeout(r, 10));
  const after = await s.wb.getattr(root, ids[0]!);
  assert.equal(after.mode, S_IFREG | 0o644);
  assert.equal(attrShown(after), statShown(path.join(s.dir, 'u', 'u0')));
});

/** Open fds of this process on unnamed (O_TMPFILE) files under dir: Linux shows them as "dir/#ino (deleted)". */
function unnamedFds(dir: string): number {
  let n = 0;
  for (const fd of fs.readdirSync('/proc/self/fd')) {
    const target = (() => {
      try {
        return fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return '';
      }
    })();
    if (target.startsWith(`${dir}/`) && target.endsWith(' (deleted)') && target.includes('/#')) n++;
  }
  return n;
}

test('a name the server refuses fails the close, and the name is taken back', async (t) => {
  const s = await setup(t);
  const d = await ownDir(s, 'e');
  // A local process on the server host took the name after the client last looked: the client
  // creates it behind all the same (below the listing cache, as when the two race).
  fs.writeFileSync(path.join(s.dir, 'e', 'taken'), 'local\n');
  const c = await s.wb.create(root, d, 'taken', S_IFREG | 0o644, O_RDWR);
  await s.wb.write(root, c.entry.nodeid, c.fh, 0, Buffer.from('mine\n'));
  const err = await s.wb.flush(root, c.entry.nodeid, c.fh).then(() => undefined, (e: unknown) => e);
  assert.ok(err instanceof FsError && err.errno === Errno.EEXIST, `close fails with EEXIST, got ${String(err)}`);
  await s.wb.release(root, c.entry.nodeid, c.fh);
  s.wb.forget(c.entry.nodeid, 1);
  assert.ok(s.events.some((ev) => ev.kind === 'entry' && ev.parent === d && ev.name === 'taken'), 'the kernel is told to drop the name');
  assert.equal(s.a.stats().createBehind.failed, 1);
  assert.equal(fs.readFileSync(path.join(s.dir, 'e', 'taken'), 'utf8'), 'local\n', 'the local file is untouched');
  const e = await s.cache.lookup(root, d, 'taken');
  assert.notEqual(e.attr.ino, c.entry.attr.ino, 'a lookup finds the local file');
  // The unnamed file went with its release: nothing else is left in the directory.
  assert.deepEqual(fs.readdirSync(path.join(s.dir, 'e')).sort(), ['first', 'taken']);
});

test('without a lease, or where the source cannot reserve, creates wait for the server as before', async (t) => {
  const s = await setup(t);
  // The root is never leased.
  const [c, ms] = await timed(s.cache.create(root, ROOT_ID, 'top', S_IFREG | 0o644, O_RDWR));
  assert.ok(ms >= 2 * DELAY_MS, 'a round trip');
  await s.cache.release(root, c.entry.nodeid, c.fh);
  // B holds the directory too: A is refused the lease.
  const d = (await s.cache.mkdir(root, ROOT_ID, 'shared', 0o755)).nodeid;
  await s.b.lookup(root, ROOT_ID, 'shared');
  for (let i = 0; i < 3; i++) {
    const [f, fms] = await timed(s.cache.create(root, d, `g${i}`, S_IFREG | 0o644, O_RDWR));
    assert.ok(fms >= 2 * DELAY_MS, `create ${i} waited for the server`);
    await s.cache.release(root, f.entry.nodeid, f.fh);
  }
  assert.equal(s.a.stats().createBehind.sent, 0);
});

const ms = (a: { mtime: { sec: number; nsec: number } }): number => a.mtime.sec * 1000 + a.mtime.nsec / 1e6;

test('git\'s lock cycle in a leased directory it did not make costs no round trip but the close\'s, and stays right', async (t) => {
  const s = await setup(t);
  // A directory made on the host (no complete name list here), as a checkout's .git is.
  fs.mkdirSync(path.join(s.dir, 'g'));
  fs.writeFileSync(path.join(s.dir, 'g', 'HEAD'), 'ref: refs/heads/main\n');
  const d = (await s.cache.lookup(root, ROOT_ID, 'g')).nodeid;
  const first = await s.cache.create(root, d, 'first', S_IFREG | 0o644, O_RDWR);
  await s.cache.release(root, first.entry.nodeid, first.fh);
  await until(() => s.a.stats().createBehind.reserved > 0, 'files reserved in the leased directory');
  assert.equal(s.a.leasedFor(d, 0), true);
  await s.cache.getattr(root, d);
  const lock = path.join(s.dir, 'g', 'index.lock');

  for (let round = 0; round < 3; round++) {
    const sent = s.a.stats().requests;
    if (round > 0) {
      // Removed by us at the last round: absent, said here.
      await assert.rejects(s.cache.lookup(root, d, 'index.lock'), enoent);
      assert.equal(s.a.stats().requests, sent, `round ${round}: the lookup asked nothing`);
    }
    const before = Date.now();
    const [c, createMs] = await timed(s.cache.create(root, d, 'index.lock', S_IFREG | 0o644, O_RDWR));
    const [dirNow, dirMs] = await timed(s.cache.getattr(root, d));
    assert.ok(createMs < DELAY_MS && dirMs < DELAY_MS, `round ${round}: create ${createMs} ms, directory stat ${dirMs} ms`);
    assert.ok(ms(dirNow) >= before, `round ${round}: the directory shows the create's time, not an older one`);
    await s.cache.flush(root, c.entry.nodeid, c.fh);
    assert.ok(fs.existsSync(lock), 'close returned: the server has the name');
    // Unlinked before the kernel's RELEASE of it, as git does.
    const [, unlinkMs] = await timed(s.cache.unlink(root, d, 'index.lock'));
    assert.ok(unlinkMs < DELAY_MS, `round ${round}: unlink answered here (${unlinkMs} ms)`);
    const held = await s.cache.getattr(root, c.entry.nodeid, c.fh);
    assert.equal(held.nlink, 0, 'the open file, stat-ed after its unlink, has no link left');
    assert.equal(fs.existsSync(lock), false);
    await s.cache.release(root, c.entry.nodeid, c.fh);
    s.cache.forget(c.entry.nodeid, 1);
  }
  assert.equal(s.a.stats().unlinkBehind.sent, 3);

  // Once all landed the server's own attributes of the directory are fetched, the kernel is told,
  // and its next stat of the directory is answered here with them.
  await until(() => s.events.some((ev) => ev.kind === 'inode' && ev.nodeid === d && ev.attrsOnly === true), 'the correction of the directory\'s attributes');
  const sent = s.a.stats().requests;
  const corrected = await s.cache.getattr(root, d);
  assert.equal(s.a.stats().requests, sent, 'answered here');
  assert.equal(attrShown(corrected), statShown(path.join(s.dir, 'g')));

  // A process on the server host makes the name: the push ends what we knew.
  fs.writeFileSync(lock, 'host\n');
  await until(() => s.events.some((ev) => ev.kind === 'entry' && ev.parent === d && ev.name === 'index.lock'), 'the push of the host\'s lock');
  assert.equal((await s.cache.lookup(root, d, 'index.lock')).attr.size, 5);
  fs.unlinkSync(lock);
  await until(() => s.events.filter((ev) => ev.kind !== 'inode' && ev.parent === d && ev.name === 'index.lock').length > 1, 'the push of its removal');
  await assert.rejects(s.cache.lookup(root, d, 'index.lock'), enoent);

  // B comes to the directory (A's lease is recalled) and makes the name: A sees it at once.
  const bd = await s.b.lookup(root, ROOT_ID, 'g');
  assert.equal(s.a.leasedFor(d, 0), false);
  const bf = await s.b.create(root, bd.nodeid, 'index.lock', S_IFREG | 0o644, O_RDWR);
  await s.b.release(root, bf.entry.nodeid, bf.fh);
  assert.equal((await s.cache.lookup(root, d, 'index.lock')).attr.ino, bf.entry.attr.ino);
  // Without the lease A's unlink waits for the server; the name is absent here after it, until B
  // makes it again.
  await s.cache.unlink(root, d, 'index.lock');
  const sentNow = s.a.stats().requests;
  await assert.rejects(s.cache.lookup(root, d, 'index.lock'), enoent);
  assert.equal(s.a.stats().requests, sentNow);
  const again = await s.b.create(root, bd.nodeid, 'index.lock', S_IFREG | 0o644, O_RDWR);
  await s.b.release(root, again.entry.nodeid, again.fh);
  assert.equal((await s.cache.lookup(root, d, 'index.lock')).attr.ino, again.entry.attr.ino);
});
