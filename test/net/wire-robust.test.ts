// The wire under bad conditions: a server that dies mid-request, garbage and oversized and truncated
// frames on raw sockets, unknown ops, other protocols on either end, other protocol versions, closed
// ports and silent peers. Each gives a prompt, one-line, specific outcome and harms no one else.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import http from 'node:http';
import net from 'node:net';
import { Reader } from '../../src/lib/bytes.js';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { startServer } from '../../src/server/server.js';
import { connect } from '../../src/client/client.js';
import {
  FEATURES_V1, FLAG_REPLY, FrameSplitter, MAGIC, VERSION_MAJOR, VERSION_MINOR, decodeHeader, encodeReplyFrame, encodeRequestFrame,
} from '../../src/wire/frame.js';
import { ROOT_ID, type Ctx, type StatFs } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, debugEnabled: false, debug() {}, info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) };
}

async function listen(t: TestContext, onConn: (s: net.Socket) => void): Promise<number> {
  const srv = net.createServer(onConn);
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const sockets = new Set<net.Socket>();
  srv.on('connection', (s) => sockets.add(s));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  return (srv.address() as net.AddressInfo).port;
}

const HELLO = encodeRequestFrame('hello', 0, 0, {
  magic: MAGIC, major: VERSION_MAJOR, minor: 0, features: FEATURES_V1, maxFrame: 1 << 20, sessionId: 0n, clientName: 'raw',
});

/** A raw socket: sends `bytes` and collects what comes back until the server closes. */
function raw(port: number, chunks: Buffer[]): Promise<{ received: Buffer; closed: boolean }> {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      resolve({ received: Buffer.concat(got), closed: false });
    }, 1500);
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      resolve({ received: Buffer.concat(got), closed: true });
    });
    s.on('connect', () => {
      for (const c of chunks) s.write(c);
    });
  });
}

function frames(b: Buffer): { op: number; flags: number; id: number; status: number; body: Reader }[] {
  const sp = new FrameSplitter(1 << 20);
  sp.push(b);
  const out = [];
  for (let f = sp.next(); f; f = sp.next()) {
    const r = new Reader(f);
    const h = decodeHeader(r);
    out.push({ op: h.op, flags: h.flags, id: h.id, status: h.flags & FLAG_REPLY ? r.i32() : 0, body: r });
  }
  return out;
}

test('a server that dies: pending calls fail with EIO once the outage timeout has passed, not before', async () => {
  /** A source whose statfs never answers: the calls are still pending when the server goes. */
  class Stuck extends MemoryFs {
    override statfs(): Promise<StatFs> {
      return new Promise(() => {});
    }
  }
  const server = await startServer({ vfs: new Stuck(), host: '127.0.0.1', port: 0, log: recorder() });
  const c = await connect({ host: '127.0.0.1', port: server.address().port, outageMs: 400, log: recorder() });
  const outcomes = Array.from({ length: 20 }, () => c.statfs(ctx, ROOT_ID).then(() => undefined, (e: unknown) => e));
  await new Promise((r) => setTimeout(r, 50));
  assert.equal(c.stats().inFlight, 20);
  const started = Date.now();
  await server.close();
  for (const e of await Promise.all(outcomes)) assert.ok(e instanceof FsError && e.errno === Errno.EIO);
  const waited = Date.now() - started;
  assert.ok(waited >= 390 && waited < 2000, `failed after ${waited} ms`);
  assert.equal(c.stats().state, 'reconnecting');
  assert.equal(c.stats().timedOut, 20);
  await assert.rejects(c.getattr(ctx, ROOT_ID), (e: unknown) => e instanceof FsError && e.errno === Errno.EIO);
  await c.close();
  assert.equal(c.stats().state, 'closed');
  await assert.rejects(c.getattr(ctx, ROOT_ID), (e: unknown) => e instanceof FsError && e.errno === Errno.EIO);
});

test('garbage, oversized and truncated frames close that connection only', async (t) => {
  const log = recorder();
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log, maxFrame: 1 << 20 });
  t.after(() => server.close());
  const { port } = server.address();
  const good = await connect({ host: '127.0.0.1', port });
  t.after(() => good.close());

  const garbage = await raw(port, [Buffer.from('GET / HTTP/1.1\r\nHost: x\r\n\r\n')]);
  assert.ok(garbage.closed);
  assert.equal(garbage.received.length, 0);

  const oversized = Buffer.alloc(16);
  oversized.writeUInt32LE(64 << 20, 0);
  assert.ok((await raw(port, [HELLO, oversized])).closed, 'a frame over the limit closes');

  // A LOOKUP whose length covers only part of its fields: the body is short.
  const lookup = encodeRequestFrame('lookup', 5, 0, { ctx, parent: 1, name: 'abc' });
  const truncated = Buffer.from(lookup.subarray(0, 24));
  truncated.writeUInt32LE(24, 0);
  const tr = await raw(port, [HELLO, truncated]);
  assert.ok(tr.closed, 'a short body closes');
  assert.equal(frames(tr.received).filter((f) => f.op !== 1).length, 0, 'and gets no reply');

  const reply = encodeReplyFrame('ping', 3, {});
  assert.ok((await raw(port, [HELLO, reply])).closed, 'a client sending a reply is a protocol error');

  assert.equal(server.stats().protocolErrors, 4);
  assert.ok(log.lines.every((l) => !l.includes('\n')), 'one line each');
  assert.match(log.lines.join('\n'), /not a wirefs client\? it sent "GET \/ HTTP\/1\.1"/);
  // The well-behaved client never noticed.
  assert.equal((await good.getattr(ctx, ROOT_ID)).ino > 0, true);
});

test('an unknown op gets ENOSYS and the connection lives on', async (t) => {
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log: recorder() });
  t.after(() => server.close());
  const unknown = encodeRequestFrame('ping', 9, 0, {});
  unknown.writeUInt16LE(999, 4);
  const ping = encodeRequestFrame('ping', 10, 0, {});
  const r = await raw(server.address().port, [HELLO, unknown, ping]);
  assert.equal(r.closed, false);
  const got = frames(r.received);
  assert.deepEqual(got.map((f) => [f.op, f.id, f.status]), [[1, 0, 0], [999, 9, Errno.ENOSYS], [2, 10, 0]]);
});

test('a client of another major version is told the server version, then closed', async (t) => {
  const log = recorder();
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log });
  t.after(() => server.close());
  const hello2 = encodeRequestFrame('hello', 0, 0, {
    magic: MAGIC, major: 2, minor: 3, features: 0n, maxFrame: 1 << 20, sessionId: 0n, clientName: 'future',
  });
  const r = await raw(server.address().port, [hello2]);
  assert.ok(r.closed);
  const [h] = frames(r.received);
  assert.equal(h?.status, 0);
  h!.body.skip(8);
  assert.equal(h!.body.u16(), VERSION_MAJOR);
  assert.ok(log.lines.join('\n').includes(`client speaks wirefs protocol 2.3, this server ${VERSION_MAJOR}.${VERSION_MINOR}`));
});

test('a server of another major version: a clear one-line error', async (t) => {
  const port = await listen(t, (s) => {
    s.once('data', () => {
      s.write(encodeReplyFrame('hello', 0, {
        magic: MAGIC, major: 2, minor: 1, features: 0n, maxFrame: 1 << 20, sessionId: 1n, serverName: 'future',
        fsType: 'x', readOnly: false,
        root: { ino: 1, size: 0, blocks: 0, atime: { sec: 0, nsec: 0 }, mtime: { sec: 0, nsec: 0 }, ctime: { sec: 0, nsec: 0 }, mode: 0o40755, nlink: 2, uid: 0, gid: 0, rdev: 0, blksize: 4096 },
      }));
    });
  });
  await assert.rejects(connect({ host: '127.0.0.1', port }), {
    message: `cannot connect to 127.0.0.1:${port}: server speaks wirefs protocol 2.1, this client ${VERSION_MAJOR}.${VERSION_MINOR}`,
  });
});

test('an SSH server on the port: a clear error within 5 s', async (t) => {
  const port = await listen(t, (s) => s.write('SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n'));
  const started = Date.now();
  await assert.rejects(connect({ host: '127.0.0.1', port }), {
    message: `cannot connect to 127.0.0.1:${port}: not a wirefs server (it sent "SSH-2.0-OpenSSH_9.2p1 Debian-2")`,
  });
  assert.ok(Date.now() - started < 5000);
});

test('an HTTP server on the port: a clear error within 5 s', async (t) => {
  const srv = http.createServer((_req, res) => res.end('hi'));
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => new Promise<void>((r) => {
    srv.closeAllConnections();
    srv.close(() => r());
  }));
  const port = (srv.address() as net.AddressInfo).port;
  const started = Date.now();
  await assert.rejects(connect({ host: '127.0.0.1', port }), (err: Error) => {
    assert.match(err.message, new RegExp(`^cannot connect to 127\\.0\\.0\\.1:${port}: not a wirefs server \\(it sent "HTTP/1\\.1 400 Bad Request"\\)$`));
    return true;
  });
  assert.ok(Date.now() - started < 5000);
});

test('a closed port: connection refused', async () => {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  await assert.rejects(connect({ host: '127.0.0.1', port }), { message: `cannot connect to 127.0.0.1:${port}: connection refused` });
});

test('a peer that accepts and says nothing: timeout', async (t) => {
  const port = await listen(t, () => {});
  await assert.rejects(connect({ host: '127.0.0.1', port, timeoutMs: 300 }), {
    message: `cannot connect to 127.0.0.1:${port}: connected, but no wirefs answer within 0.3 s (is it a wirefs server?)`,
  });
});
