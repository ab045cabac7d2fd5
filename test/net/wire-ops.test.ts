// A real server and client on 127.0.0.1 over a MemoryFs: every Vfs op through the wire, requests
// answered out of order, abort, two clients seeing each other's changes through pushes, and a
// departing client's lookups and handles given back to the source.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { startServer } from '../../src/server/server.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import { until } from '../helpers/clients.js';
import {
  O_APPEND, O_RDWR, O_WRONLY, ROOT_ID, S_IFDIR, S_IFIFO, S_IFMT, S_IFREG, SEEK_DATA, type ChangeEvent, type Ctx, type Vfs,
} from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };

async function setup(t: TestContext, vfs: Vfs, opts: { maxFrame?: number; leaseMs?: number } = {}): Promise<{ port: number; client(): Promise<RemoteVfs> }> {
  const server = await startServer({ vfs, host: '127.0.0.1', port: 0, log: quiet, ...opts });
  t.after(() => server.close());
  const { port } = server.address();
  return {
    port,
    client: async () => {
      const c = await connect({ host: '127.0.0.1', port, log: quiet });
      t.after(() => c.close());
      return c;
    },
  };
}

async function rejectsErrno(p: Promise<unknown>, errno: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof FsError && err.errno === errno);
}


/** Wraps a Vfs method by name, keeping everything else. */
function wrap(inner: Vfs, over: Partial<Record<keyof Vfs, (...args: never[]) => unknown>>): Vfs {
  return new Proxy(inner, {
    get(target, prop, recv) {
      const o = (over as Record<PropertyKey, unknown>)[prop];
      if (o) return o;
      const v = Reflect.get(target, prop, recv) as unknown;
      return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
    },
  });
}

test('every Vfs op crosses the wire with its result or errno', async (t) => {
  const { client } = await setup(t, new MemoryFs({ type: 'memtest' }));
  const c = await client();
  assert.deepEqual(c.info(), { type: 'memtest', readOnly: false, coherent: true });
  assert.equal(c.rootAttr.mode & S_IFMT, S_IFDIR);
  assert.match(c.server, /^127\.0\.0\.1:\d+$/);

  const d = await c.mkdir(ctx, ROOT_ID, 'dir', 0o755);
  assert.equal(d.attr.mode, S_IFDIR | 0o755);
  const f = await c.create(ctx, d.nodeid, 'file', S_IFREG | 0o644, O_RDWR);
  assert.equal(await c.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('hello world')), 11);
  assert.equal((await c.read(ctx, f.entry.nodeid, f.fh, 6, 100)).toString(), 'world');
  await c.flush(ctx, f.entry.nodeid, f.fh);
  await c.fsync(ctx, f.entry.nodeid, f.fh, true);
  assert.equal((await c.getattr(ctx, f.entry.nodeid, f.fh)).size, 11);
  const a = await c.setattr(ctx, f.entry.nodeid, { size: 5, mode: 0o600, mtime: { sec: 1000, nsec: 5 }, atime: 'now' });
  assert.equal(a.size, 5);
  assert.equal(a.mode, S_IFREG | 0o600);
  assert.deepEqual(a.mtime, { sec: 1000, nsec: 5 });
  assert.equal((await c.lookup(ctx, d.nodeid, 'file')).nodeid, f.entry.nodeid);
  await rejectsErrno(c.lookup(ctx, d.nodeid, 'nope'), Errno.ENOENT);

  await c.fallocate(ctx, f.entry.nodeid, f.fh, 0, 0, 8192);
  assert.equal((await c.getattr(ctx, f.entry.nodeid)).size, 8192);
  assert.equal(await c.lseek(ctx, f.entry.nodeid, f.fh, 0, SEEK_DATA), 0);
  const g = await c.create(ctx, d.nodeid, 'copy', S_IFREG | 0o644, O_WRONLY);
  assert.equal(await c.copyFileRange(ctx, f.entry.nodeid, f.fh, 0, g.entry.nodeid, g.fh, 0, 5), 5);
  await c.release(ctx, g.entry.nodeid, g.fh);
  await c.release(ctx, f.entry.nodeid, f.fh);
  await rejectsErrno(c.read(ctx, f.entry.nodeid, f.fh, 0, 1), Errno.EBADF);

  const o = await c.open(ctx, f.entry.nodeid, O_RDWR);
  assert.equal((await c.read(ctx, f.entry.nodeid, o.fh, 0, 5)).toString(), 'hello');
  await c.release(ctx, f.entry.nodeid, o.fh);

  await c.setxattr(ctx, f.entry.nodeid, 'user.k', Buffer.from('v'), 0);
  assert.equal((await c.getxattr(ctx, f.entry.nodeid, 'user.k')).toString(), 'v');
  assert.deepEqual(await c.listxattr(ctx, f.entry.nodeid), ['user.k']);
  await c.removexattr(ctx, f.entry.nodeid, 'user.k');
  await rejectsErrno(c.getxattr(ctx, f.entry.nodeid, 'user.k'), Errno.ENODATA);
  await c.access(ctx, f.entry.nodeid, 4);

  const s = await c.symlink(ctx, d.nodeid, 'sym', 'file');
  assert.equal(await c.readlink(ctx, s.nodeid), 'file');
  const l = await c.link(ctx, f.entry.nodeid, ROOT_ID, 'hard');
  assert.equal(l.attr.nlink, 2);
  const n = await c.mknod(ctx, d.nodeid, 'fifo', S_IFIFO | 0o644, 0);
  assert.equal(n.attr.mode & S_IFMT, S_IFIFO);
  await c.rename(ctx, d.nodeid, 'fifo', ROOT_ID, 'fifo2', 0);
  await rejectsErrno(c.rename(ctx, ROOT_ID, 'fifo2', ROOT_ID, 'hard', 1), Errno.EEXIST);

  const od = await c.opendir(ctx, d.nodeid);
  const plain = await c.readdir(ctx, d.nodeid, od.fh, 0, 100, false);
  assert.deepEqual(plain.map((e) => e.name).sort(), ['.', '..', 'copy', 'file', 'sym']);
  const plus = await c.readdir(ctx, d.nodeid, od.fh, 0, 100, true);
  assert.ok(plus.filter((e) => e.name !== '.' && e.name !== '..').every((e) => e.entry && e.entry.nodeid > 0));
  await c.fsyncdir(ctx, d.nodeid, od.fh, false);
  await c.releasedir(ctx, d.nodeid, od.fh);

  assert.ok((await c.statfs(ctx, ROOT_ID)).bsize > 0);
  await c.unlink(ctx, d.nodeid, 'sym');
  await rejectsErrno(c.rmdir(ctx, ROOT_ID, 'dir'), Errno.ENOTEMPTY);
  for (const name of ['file', 'copy']) await c.unlink(ctx, d.nodeid, name);
  await c.rmdir(ctx, ROOT_ID, 'dir');
  c.forget(d.nodeid, 1);
  assert.equal(c.stats().state, 'open');
  assert.ok(c.stats().requests > 40);
});

test('reads, writes and readdirs larger than a frame are split and joined', async (t) => {
  const { client } = await setup(t, new MemoryFs(), { maxFrame: 64 * 1024 });
  const c = await client();
  const data = Buffer.alloc(300_000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
  const f = await c.create(ctx, ROOT_ID, 'big', S_IFREG | 0o644, O_RDWR);
  assert.equal(await c.write(ctx, f.entry.nodeid, f.fh, 0, data), data.length);
  assert.ok((await c.read(ctx, f.entry.nodeid, f.fh, 0, 400_000)).equals(data));
  assert.ok((await c.read(ctx, f.entry.nodeid, f.fh, 1000, 150_000)).equals(data.subarray(1000, 151_000)));
  // Directory entries with plus take ~130 bytes each: 1000 of them need several frames.
  for (let i = 0; i < 1000; i++) await c.mknod(ctx, ROOT_ID, `n${i}`.padEnd(30, 'x'), S_IFREG | 0o644, 0);
  const od = await c.opendir(ctx, ROOT_ID);
  const names: string[] = [];
  let off = 0;
  for (;;) {
    const batch = await c.readdir(ctx, ROOT_ID, od.fh, off, 5000, true);
    if (!batch.length) break;
    assert.ok(batch.length < 1003, 'a reply is trimmed to the frame');
    names.push(...batch.map((e) => e.name));
    off = batch[batch.length - 1]!.off;
  }
  assert.equal(names.length, 1003);
  await c.releasedir(ctx, ROOT_ID, od.fh);
});

test('200 concurrent requests are answered out of order, each to its caller', async (t) => {
  const mem = new MemoryFs();
  // Every third getattr waits: later requests overtake it.
  const vfs = wrap(mem, {
    getattr: async (c: Ctx, nodeid: number) => {
      if (nodeid % 3 === 0) await new Promise((r) => setTimeout(r, 50));
      return mem.getattr(c, nodeid);
    },
  });
  const { client } = await setup(t, vfs);
  const c = await client();
  const ids: number[] = [];
  for (let i = 0; i < 30; i++) ids.push((await c.mkdir(ctx, ROOT_ID, `d${i}`, 0o700 | (i % 8))).nodeid);
  const order: number[] = [];
  const calls = Array.from({ length: 200 }, (_, i) => {
    const id = ids[i % ids.length]!;
    return c.getattr(ctx, id).then((a) => {
      order.push(i);
      assert.equal(a.mode & 0o777, 0o700 | ((ids.indexOf(id)) % 8));
      return a;
    });
  });
  assert.ok(c.stats().inFlight > 100, 'many requests are in flight at once');
  await Promise.all(calls);
  assert.equal(order.length, 200);
  assert.notDeepEqual(order, [...order].sort((a, b) => a - b), 'replies came out of order');
});

test('an aborted call fails with EINTR at once and the server sees the cancel', async (t) => {
  const mem = new MemoryFs();
  let sawAbort = false;
  const vfs = wrap(mem, {
    statfs: (c: Ctx) => new Promise((_, reject) => {
      c.signal?.addEventListener('abort', () => {
        sawAbort = true;
        reject(new FsError(Errno.EINTR));
      });
    }),
  });
  const { client } = await setup(t, vfs);
  const c = await client();
  const ac = new AbortController();
  const p = c.statfs({ ...ctx, signal: ac.signal }, ROOT_ID);
  setTimeout(() => ac.abort(), 20);
  await rejectsErrno(p, Errno.EINTR);
  await until(() => sawAbort, 'the server-side abort');
  assert.equal(c.stats().inFlight, 0);
  await c.getattr(ctx, ROOT_ID);
});

test('two clients: changes by one are pushed to the other and acted on before the writer goes on', async (t) => {
  const { client } = await setup(t, new MemoryFs());
  const a = await client();
  const b = await client();
  const seenB: ChangeEvent[] = [];
  const seenA: ChangeEvent[] = [];
  b.watch((ev) => { seenB.push(ev); });
  a.watch((ev) => { seenA.push(ev); });

  // No waiting anywhere below: with PUSH_ACK the server replies to the author only after the other
  // client has taken the push, so it is already there when the author's call returns.
  const f = await a.create(ctx, ROOT_ID, 'shared', S_IFREG | 0o644, O_RDWR);
  assert.ok(seenB.some((e) => e.kind === 'entry' && e.name === 'shared'), 'the entry push came before the reply');
  const bf = await b.lookup(ctx, ROOT_ID, 'shared');
  assert.equal(bf.nodeid, f.entry.nodeid, 'node ids pass through unchanged');
  const bo = await b.open(ctx, bf.nodeid, O_RDWR);

  seenB.length = 0;
  await a.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('version 2'));
  assert.deepEqual(seenB, [{ kind: 'inode', nodeid: bf.nodeid, off: -1, len: 0 }], 'one whole-file push, before the write returned');
  // B has not asked about the file since: its kernel holds nothing of it, so no further push.
  await a.write(ctx, f.entry.nodeid, f.fh, 9, Buffer.from('!'));
  assert.equal(seenB.length, 1, 'no push while the other client holds nothing of the file');
  assert.equal((await b.read(ctx, bf.nodeid, bo.fh, 0, 100)).toString(), 'version 2!');
  // B read it again: the next change is pushed again.
  await a.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('V'));
  assert.equal(seenB.length, 2, 'pushed again once the other client read the file');
  await a.release(ctx, f.entry.nodeid, f.fh);

  seenA.length = 0;
  const ba = await b.open(ctx, bf.nodeid, O_WRONLY | O_APPEND);
  await b.write(ctx, bf.nodeid, ba.fh, 0, Buffer.from('!'));
  assert.deepEqual(seenA.filter((e) => e.kind === 'inode'), [{ kind: 'inode', nodeid: bf.nodeid, off: -1, len: 0 }]);
  await b.release(ctx, bf.nodeid, ba.fh);
  await b.release(ctx, bf.nodeid, bo.fh);

  seenB.length = 0;
  await a.unlink(ctx, ROOT_ID, 'shared');
  assert.deepEqual(seenB.find((e) => e.kind === 'delete'), { kind: 'delete', parent: ROOT_ID, child: bf.nodeid, name: 'shared' });
  assert.ok(seenA.every((e) => e.kind !== 'delete'), 'the writer is not told of its own change');
});

test('a client that never acknowledges delays a writer by the lease time at most', async (t) => {
  const { client } = await setup(t, new MemoryFs(), { leaseMs: 300 });
  const a = await client();
  const b = await client();
  // B's listener never settles: as a client whose kernel is stuck would behave.
  b.watch(() => new Promise<void>(() => {}));
  const f = await a.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const t0 = Date.now();
  await b.lookup(ctx, ROOT_ID, 'f');
  await a.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('x'));
  const waited = Date.now() - t0;
  assert.ok(waited >= 250 && waited < 2000, `the write waited ${waited} ms for a lease of 300 ms`);
  // Once B is gone, nobody is waited for.
  await b.close();
  const t1 = Date.now();
  await a.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('y'));
  assert.ok(Date.now() - t1 < 250, 'no wait for a client that has left');
});

test('changes the source reports itself reach every client that knows the node', async (t) => {
  const mem = new MemoryFs();
  const listeners = new Set<(ev: ChangeEvent) => void>();
  const vfs = wrap(mem, {
    watch: (l: (ev: ChangeEvent) => void) => {
      listeners.add(l);
      return () => listeners.delete(l);
    },
  });
  const { client } = await setup(t, vfs);
  const a = await client();
  const b = await client();
  const f = await mem.create(ctx, ROOT_ID, 'local', S_IFREG | 0o644, O_RDWR);
  const seenA: ChangeEvent[] = [];
  const seenB: ChangeEvent[] = [];
  a.watch((ev) => { seenA.push(ev); });
  b.watch((ev) => { seenB.push(ev); });
  await a.lookup(ctx, ROOT_ID, 'local');
  for (const l of listeners) l({ kind: 'inode', nodeid: f.entry.nodeid, off: -1, len: 0 });
  for (const l of listeners) l({ kind: 'entry', parent: ROOT_ID, name: 'other' });
  await until(() => seenA.length === 2 && seenB.length === 1, 'the watch events');
  assert.deepEqual(seenB, [{ kind: 'entry', parent: ROOT_ID, name: 'other' }], 'b never looked the file up');
});

test('a departing client leaves no lookups or open handles on the source', async (t) => {
  const mem = new MemoryFs();
  const lookups = new Map<number, number>();
  const open = new Set<string>();
  const count = (id: number, n: number): void => {
    const v = (lookups.get(id) ?? 0) + n;
    if (v) lookups.set(id, v);
    else lookups.delete(id);
  };
  const vfs = wrap(mem, {
    lookup: async (c: Ctx, p: number, n: string) => {
      const e = await mem.lookup(c, p, n);
      count(e.nodeid, 1);
      return e;
    },
    create: async (c: Ctx, p: number, n: string, m: number, fl: number) => {
      const r = await mem.create(c, p, n, m, fl);
      count(r.entry.nodeid, 1);
      open.add(`f${r.fh}`);
      return r;
    },
    mkdir: async (c: Ctx, p: number, n: string, m: number) => {
      const e = await mem.mkdir(c, p, n, m);
      count(e.nodeid, 1);
      return e;
    },
    opendir: async (c: Ctx, id: number) => {
      const r = await mem.opendir(c, id);
      open.add(`d${r.fh}`);
      return r;
    },
    forget: (id: number, n: number) => {
      count(id, -n);
      mem.forget(id, n);
    },
    release: async (c: Ctx, id: number, fh: number) => {
      open.delete(`f${fh}`);
      return mem.release(c, id, fh);
    },
    releasedir: async (c: Ctx, id: number, fh: number) => {
      open.delete(`d${fh}`);
      return mem.releasedir(c, id, fh);
    },
  });
  const { client } = await setup(t, vfs);
  const stay = await client();
  const e = await stay.mkdir(ctx, ROOT_ID, 'kept', 0o755);
  const leave = await client();
  const d = await leave.lookup(ctx, ROOT_ID, 'kept');
  await leave.lookup(ctx, ROOT_ID, 'kept');
  const f = await leave.create(ctx, d.nodeid, 'f', S_IFREG | 0o644, O_RDWR);
  await leave.opendir(ctx, d.nodeid);
  // A forget for more than the session holds is clamped: the other client's lookup survives.
  leave.forget(e.nodeid, 10);
  await leave.getattr(ctx, ROOT_ID);
  assert.equal(lookups.get(e.nodeid), 1, "the other client's lookup is untouched");
  await leave.lookup(ctx, ROOT_ID, 'kept');
  assert.equal(open.size, 2);
  await leave.close();
  await until(() => open.size === 0, 'the handles to be released');
  await until(() => !lookups.has(f.entry.nodeid) && lookups.get(e.nodeid) === 1, 'the lookups to be forgotten');
  await stay.getattr(ctx, e.nodeid);
});

test('FORGETs and RELEASEs go out with the next request, or on their own soon after', async (t) => {
  const mem = new MemoryFs();
  const forgotten: number[] = [];
  const released: number[] = [];
  const vfs = wrap(mem, {
    forget: (id: number, n: number) => {
      forgotten.push(id);
      mem.forget(id, n);
    },
    release: async (c: Ctx, id: number, fh: number) => {
      released.push(id);
      return mem.release(c, id, fh);
    },
  });
  const { client } = await setup(t, vfs);
  const c = await client();
  const made: Array<{ id: number; fh: number }> = [];
  for (let i = 0; i < 5; i++) {
    const r = await c.create(ctx, ROOT_ID, `f${i}`, S_IFREG | 0o644, O_RDWR);
    made.push({ id: r.entry.nodeid, fh: r.fh });
  }
  // Alone: they leave within the hold time, though nothing else is sent, and a RELEASE is answered.
  c.forget(made[0]!.id, 1);
  c.forget(made[1]!.id, 1);
  await until(() => forgotten.length === 2, 'forgets with no request after them');
  await c.release(ctx, made[0]!.id, made[0]!.fh);
  assert.deepEqual(released, [made[0]!.id]);
  // Held, then written in front of the next request: the server has them before it answers.
  for (const { id } of made.slice(2)) c.forget(id, 1);
  const closing = made.slice(1).map(({ id, fh }) => c.release(ctx, id, fh));
  await c.getattr(ctx, ROOT_ID);
  assert.deepEqual(forgotten.sort(), made.map((m) => m.id).sort());
  assert.equal(released.length, 5, 'every RELEASE reached the source before the GETATTR was answered');
  await Promise.all(closing);
});

test('pings are not counted as requests (an idle client pings; the server trims memory only when idle)', async (t) => {
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log: quiet });
  t.after(() => server.close());
  const c = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  t.after(() => c.close());
  await c.getattr(ctx, ROOT_ID);
  const before = server.stats().requests;
  for (let i = 0; i < 3; i++) await c.roundTrip();
  assert.equal(server.stats().requests, before);
  await c.getattr(ctx, ROOT_ID);
  assert.equal(server.stats().requests, before + 1);
});

test('a STATFS is answered from the last answer kept while the server cannot be reached', async (t) => {
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log: quiet });
  const c = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet, outageMs: 60_000 });
  t.after(() => c.close());
  c.keepStatfs();
  await until(() => c.stats().ops['statfs'] === 1 && c.stats().inFlight === 0, 'the statfs kept');
  const kept = await c.statfs(ctx, ROOT_ID);
  await server.close();
  await until(() => c.stats().state === 'reconnecting', 'the link to drop');
  const t0 = Date.now();
  assert.deepEqual(await c.statfs(ctx, ROOT_ID), kept);
  assert.ok(Date.now() - t0 < 1000, 'answered at once, not after the outage');
  // Any other call waits for the server as before.
  const ac = new AbortController();
  let settled = false;
  const waiting = c.getattr({ ...ctx, signal: ac.signal }, ROOT_ID).finally(() => (settled = true));
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(settled, false, 'a getattr is still waiting for the server');
  ac.abort();
  await assert.rejects(waiting);
});
