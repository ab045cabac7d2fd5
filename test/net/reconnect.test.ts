// Surviving the network, client and server in process on loopback through the fault proxy: a cut
// connection is reconnected and the session resumed with every call completing; a non-idempotent
// request whose reply was lost is answered from the reply cache, not run twice; an outage longer
// than the timeout fails calls with EIO (and the client recovers afterwards); a hard client waits
// as long as it takes; a restarted server gets what the client held re-established by path.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { startServer, type ServerOptions, type WireServer } from '../../src/server/server.js';
import { connect, type ConnectOptions, type RemoteVfs } from '../../src/client/client.js';
import { O_RDWR, O_WRONLY, ROOT_ID, S_IFREG, type Ctx, type Vfs } from '../../src/vfs/types.js';
import { startProxy, type Proxy } from '../helpers/proxy.js';
import { SEQ_WINDOW } from '../../src/wire/seq.js';
import { tmpdir } from '../helpers/mount.js';
import { until } from '../helpers/clients.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function rig(t: TestContext, vfs: Vfs, opts: Partial<ServerOptions> = {}, copts: Partial<ConnectOptions> = {}): Promise<{ server: WireServer; proxy: Proxy; c: RemoteVfs }> {
  const server = await startServer({ vfs, host: '127.0.0.1', port: 0, log: quiet, ...opts });
  t.after(() => server.close());
  const proxy = await startProxy({ host: '127.0.0.1', port: server.address().port });
  t.after(() => proxy.close());
  const c = await connect({ host: '127.0.0.1', port: proxy.port, log: quiet, pingMs: 200, ...copts });
  t.after(() => c.close());
  return { server, proxy, c };
}


test('cut connections are reconnected and the session resumed; every call completes', async (t) => {
  const { server, proxy, c } = await rig(t, new MemoryFs());
  const f = await c.create(ctx, ROOT_ID, 'log', S_IFREG | 0o644, O_RDWR);
  const stop = proxy.cutRandomly(20, 80);
  // 400 writes and reads (more if need be: until 5 cuts happened), 8 at a time, while the
  // connection is cut every 20-80 ms.
  const block = (i: number): Buffer => Buffer.alloc(512, i & 0xff);
  const before = proxy.cuts();
  let total = 400;
  for (let i = 0; i < total; i += 8) {
    if (i + 8 >= total && proxy.cuts() - before < 5 && total < 40000) total += 400;
    await Promise.all(Array.from({ length: 8 }, async (_, k) => {
      const n = i + k;
      assert.equal(await c.write(ctx, f.entry.nodeid, f.fh, n * 512, block(n)), 512);
      assert.ok((await c.read(ctx, f.entry.nodeid, f.fh, n * 512, 512)).equals(block(n)));
      await c.mkdir(ctx, ROOT_ID, `d${n}`, 0o755);
    }));
  }
  const cuts = stop();
  const st = c.stats();
  console.log(`# ${cuts} cuts; client: ${st.reconnects} reconnects, ${st.resent} resent; server: ${server.stats().resumes} resumes, ${server.stats().replayed} answered from the reply cache`);
  assert.ok(cuts >= 5, `only ${cuts} cuts`);
  assert.ok(st.reconnects >= 5);
  assert.equal(st.newSessions, 0, 'every reconnect resumed the session');
  assert.equal(server.stats().sessions, 1);
  assert.equal((await c.getattr(ctx, f.entry.nodeid)).size, total * 512);
  // No mkdir ran twice (a second run would have failed with EEXIST above).
  assert.equal((await c.readdir(ctx, ROOT_ID, (await c.opendir(ctx, ROOT_ID)).fh, 0, 100000, false)).filter((d) => d.name.startsWith('d')).length, total);
});

test('a mkdir whose reply is lost is answered from the reply cache on retry, not with EEXIST', async (t) => {
  const mem = new MemoryFs();
  const { server, proxy, c } = await rig(t, mem);
  proxy.dropReplies(true);
  const made = c.mkdir(ctx, ROOT_ID, 'once', 0o755);
  // The server ran it: the directory exists on the source, but the reply went nowhere.
  await until(() => server.stats().requests >= 1, 'the request to reach the server');
  await sleep(100);
  await mem.lookup(ctx, ROOT_ID, 'once');
  proxy.cutAll();
  proxy.dropReplies(false);
  const e = await made;
  assert.ok(e.nodeid > 0);
  assert.equal(server.stats().replayed, 1, 'the retry was answered from the cache');
  assert.equal(server.stats().resumes, 1);
  // and an unlink likewise: run once, the retry gets success rather than ENOENT
  proxy.dropReplies(true);
  const gone = c.rmdir(ctx, ROOT_ID, 'once');
  await sleep(100);
  proxy.cutAll();
  proxy.dropReplies(false);
  await gone;
  assert.equal(server.stats().replayed, 2);
});

test('an outage longer than the timeout fails calls with EIO; the client recovers after it', async (t) => {
  const { proxy, c } = await rig(t, new MemoryFs(), {}, { outageMs: 600, pingMs: 100 });
  await c.getattr(ctx, ROOT_ID);
  proxy.blackhole(true);
  const started = Date.now();
  await assert.rejects(c.getattr(ctx, ROOT_ID), (e: unknown) => e instanceof FsError && e.errno === Errno.EIO);
  const waited = Date.now() - started;
  console.log(`# soft client: EIO after ${waited} ms of blackhole (timeout 600 ms)`);
  // The link is noticed dead after 3 silent pings (300 ms), then the call waits out the timeout.
  assert.ok(waited >= 600 && waited < 3000, `EIO after ${waited} ms`);
  proxy.blackhole(false);
  await until(() => c.stats().state === 'open', 'the client to reconnect', 10_000);
  assert.ok((await c.getattr(ctx, ROOT_ID)).ino > 0);
});

test('a hard client waits out any outage', async (t) => {
  const { proxy, c } = await rig(t, new MemoryFs(), {}, { outageMs: Infinity, pingMs: 100 });
  proxy.blackhole(true);
  const started = Date.now();
  let settled = false;
  const call = c.mkdir(ctx, ROOT_ID, 'patient', 0o755).finally(() => (settled = true));
  await sleep(2500);
  assert.equal(settled, false, 'still waiting after 2.5 s, far past the soft timeouts above');
  assert.equal(c.stats().state, 'reconnecting');
  proxy.blackhole(false);
  assert.ok((await call).nodeid > 0);
  console.log(`# hard client: mkdir completed after ${Date.now() - started} ms of outage`);
});

test('explicit close ends everything at once, even mid-outage', async (t) => {
  const { server, proxy, c } = await rig(t, new MemoryFs(), {}, { outageMs: Infinity });
  await c.getattr(ctx, ROOT_ID);
  proxy.cutAll();
  proxy.blackhole(true);
  const call = c.getattr(ctx, ROOT_ID).then(() => 'ok', (e: unknown) => e);
  await sleep(200);
  await c.close();
  const e = await call;
  assert.ok(e instanceof FsError && e.errno === Errno.EIO);
  proxy.blackhole(false);
  // The server gives up on the session when its grace ends; a polite close ends it at once.
  const d = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  await d.close();
  await until(() => server.stats().sessions <= 1, 'the polite session to end');
});

test('a session not resumed within the grace period is released; the client finds its nodes again by name', async (t) => {
  const mem = new MemoryFs();
  const { server, proxy, c } = await rig(t, mem, { sessionGraceMs: 200 }, { pingMs: 100 });
  const d = await c.mkdir(ctx, ROOT_ID, 'dir', 0o755);
  const f = await c.create(ctx, d.nodeid, 'file', S_IFREG | 0o644, O_RDWR);
  await c.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('before'));
  proxy.blackhole(true);
  proxy.cutAll();
  await until(() => server.stats().expired === 1, 'the session to expire', 5000);
  proxy.blackhole(false);
  // The old handle and node ids still work: the client re-resolved and reopened them.
  assert.equal(await c.write(ctx, f.entry.nodeid, f.fh, 6, Buffer.from(' after')), 6);
  assert.equal((await c.read(ctx, f.entry.nodeid, f.fh, 0, 100)).toString(), 'before after');
  assert.equal((await c.getattr(ctx, d.nodeid)).mode & 0o777, 0o755);
  const st = c.stats();
  assert.equal(st.newSessions, 1);
  assert.ok(st.remapped >= 2 && st.reopened === 1, JSON.stringify(st));
});

test('server restart on the same directory: node ids, handles and unconfirmed writes carry over', async (t) => {
  const dir = await tmpdir('wirefs-restart-');
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  let server = await startServer({ vfs: new PassthroughFs(dir), host: '127.0.0.1', port: 0, log: quiet });
  const port = server.address().port;
  t.after(() => server.close());
  const c = await connect({ host: '127.0.0.1', port, log: quiet, pingMs: 200 });
  t.after(() => c.close());
  // Nodes learned in an order the new server will not repeat, so its ids differ.
  const a = await c.mkdir(ctx, ROOT_ID, 'a', 0o755);
  const b = await c.mkdir(ctx, a.nodeid, 'b', 0o755);
  const f = await c.create(ctx, b.nodeid, 'f', S_IFREG | 0o644, O_WRONLY);
  await c.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('confirmed '));
  await c.fsync(ctx, f.entry.nodeid, f.fh, false);
  await c.rename(ctx, a.nodeid, 'b', ROOT_ID, 'b2', 0);

  await server.close();
  const pending = c.write(ctx, f.entry.nodeid, f.fh, 10, Buffer.from('in flight'));
  await sleep(300);
  server = await startServer({ vfs: new PassthroughFs(dir), host: '127.0.0.1', port, log: quiet });
  await c.lookup(ctx, ROOT_ID, 'zzz').catch(() => {}); // the new server hands out ids in a new order
  assert.equal(await pending, 9);
  await c.fsync(ctx, f.entry.nodeid, f.fh, false);
  assert.equal(await fsp.readFile(path.join(dir, 'b2', 'f'), 'utf8'), 'confirmed in flight');
  // The renamed directory is found under its new name; the file's attributes by its old id.
  assert.equal((await c.getattr(ctx, f.entry.nodeid)).size, 19);
  assert.equal((await c.lookup(ctx, b.nodeid, 'f')).nodeid, f.entry.nodeid, 'the kernel sees the same id for the same file');
  await c.release(ctx, f.entry.nodeid, f.fh);
  const st = c.stats();
  console.log(`# restart: ${st.newSessions} new session, ${st.remapped} nodes re-resolved by path, ${st.reopened} handles reopened`);
  assert.equal(st.newSessions, 1);
  assert.ok(st.reopened >= 1);
});

test('one huge write and read cross in bounded pieces; small calls of another client stay fast', async (t) => {
  let running = 0;
  let most = 0;
  const mem = new MemoryFs();
  const counted = new Proxy(mem, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      if (prop !== 'write' && prop !== 'read') return (v as (...a: unknown[]) => unknown).bind(target);
      return async (...args: unknown[]) => {
        running++;
        most = Math.max(most, running);
        try {
          return await (v as (...a: unknown[]) => Promise<unknown>).apply(target, args);
        } finally {
          running--;
        }
      };
    },
  });
  const server = await startServer({ vfs: counted, host: '127.0.0.1', port: 0, log: quiet, maxFrame: 256 << 10 });
  t.after(() => server.close());
  const big = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  t.after(() => big.close());
  const small = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  t.after(() => small.close());
  const f = await big.create(ctx, ROOT_ID, 'big', S_IFREG | 0o644, O_RDWR);
  const data = Buffer.alloc(64 << 20);
  for (let i = 0; i < data.length; i += 4096) data.writeUInt32LE(i, i);
  let streaming = true;
  const started = performance.now();
  const stream = (async () => {
    assert.equal(await big.write(ctx, f.entry.nodeid, f.fh, 0, data), data.length);
    assert.ok((await big.read(ctx, f.entry.nodeid, f.fh, 0, data.length)).equals(data));
    streaming = false;
  })();
  const lat: number[] = [];
  while (streaming) {
    const t0 = performance.now();
    await small.getattr(ctx, ROOT_ID);
    lat.push(performance.now() - t0);
    await sleep(2);
  }
  await stream;
  const streamMs = performance.now() - started;
  lat.sort((x, y) => x - y);
  const p99 = lat[Math.floor(lat.length * 0.99)] ?? 0;
  console.log(`# 64 MiB write+read in 256 KiB pieces: at most ${most} pieces at the source at once; ${lat.length} small getattrs meanwhile, median ${lat[lat.length >> 1]?.toFixed(2)} ms, p99 ${p99.toFixed(2)} ms`);
  assert.ok(most <= 8, `${most} pieces at once`);
  // Starved would mean waiting behind most of the stream (all 256 pieces queued ahead): the bound is
  // a quarter of it, and 500 ms at least (beside other tests on two cores, one slow wake-up of a
  // busy process takes a few hundred milliseconds with nothing starved).
  assert.ok(lat.length > 10 && p99 < Math.max(500, streamMs / 4), `small calls starved: p99 ${p99} ms of a ${streamMs} ms stream`);
});

test('the client keeps outstanding non-idempotent requests within the reply window', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let seen = 0;
  const mem = new MemoryFs();
  const slowFirst = new Proxy(mem, {
    get(target, prop, recv) {
      const v = Reflect.get(target, prop, recv) as unknown;
      if (typeof v !== 'function') return v;
      if (prop !== 'mkdir') return (v as (...a: unknown[]) => unknown).bind(target);
      return async (c: Ctx, parent: number, name: string, mode: number) => {
        seen++;
        if (name === 'first') await gate;
        return mem.mkdir(c, parent, name, mode);
      };
    },
  });
  const { c } = await rig(t, slowFirst, { maxInFlight: 4096 });
  const first = c.mkdir(ctx, ROOT_ID, 'first', 0o755);
  const rest = Promise.all(Array.from({ length: 1100 }, (_, i) => c.mkdir(ctx, ROOT_ID, `n${i}`, 0o755)));
  rest.catch(() => {});
  try {
    await until(() => seen >= SEQ_WINDOW, 'the window to fill');
    await sleep(200);
    assert.equal(seen, SEQ_WINDOW, 'the request one window ahead of the oldest waits for it');
  } finally {
    release();
  }
  await first;
  await rest;
  assert.equal(seen, 1101);
});
