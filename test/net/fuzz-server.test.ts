// Live fuzzing: mutated frames of every op, thrown at a real server on loopback from many raw
// connections (with or without a valid HELLO first, in random chunks, some peers never reading),
// while a normal client keeps working. The server must not throw, must log one line per closed
// connection, and must keep answering the good client. Then the other way round: a fake server
// feeds mutated frames to a RemoteVfs, which may only fail calls, never throw out of its handlers.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import fc from 'fast-check';
import type { Logger } from '../../src/lib/log.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { startServer } from '../../src/server/server.js';
import { connect } from '../../src/client/client.js';
import {
  FEATURES_V1, FLAG_REPLY, HEADER_SIZE, MAGIC, VERSION_MAJOR, encodeReplyFrame, encodeRequestFrame,
} from '../../src/wire/frame.js';
import { OPS, type OpName } from '../../src/wire/ops.js';
import { O_RDWR, ROOT_ID, S_IFREG, type Ctx } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };

function recorder(): Logger & { lines: string[] } {
  const lines: string[] = [];
  return { lines, debugEnabled: false, debug() {}, info: (m) => lines.push(m), warn: (m) => lines.push(m), error: (m) => lines.push(m) };
}

const HELLO = encodeRequestFrame('hello', 0, 0, {
  magic: MAGIC, major: VERSION_MAJOR, minor: 0, features: FEATURES_V1, maxFrame: 1 << 20, sessionId: 0n, clientName: 'fuzz',
});

const attr = { ino: 5, size: 10, blocks: 1, atime: { sec: 1, nsec: 2 }, mtime: { sec: 3, nsec: 4 }, ctime: { sec: 5, nsec: 6 }, mode: 0o100644, nlink: 1, uid: 0, gid: 0, rdev: 0, blksize: 4096 };
const SAMPLE: Record<string, unknown> = {
  ctx, parent: ROOT_ID, nodeid: ROOT_ID, name: 'f', newparent: ROOT_ID, newname: 'g', mode: 0o100644, rdev: 0, target: 't',
  flags: O_RDWR, fh: 1, offset: 0, size: 64, data: Buffer.from('hello'), datasync: false, maxEntries: 10, plus: true,
  value: Buffer.from('v'), mask: 0, length: 10, whence: 3, id: 1, nlookup: 1, set: { size: 3 }, nodeIn: 1, fhIn: 1, offIn: 0,
  nodeOut: 1, fhOut: 1, offOut: 0, len: 5, event: { kind: 'entry', parent: 1, name: 'x' }, count: 2, more: 1,
};

/** A valid request frame of every client op, with small, meaningful values. */
const requests: Buffer[] = (Object.keys(OPS) as OpName[]).filter((op) => OPS[op].kind !== 'push' && op !== 'hello').map((op, i) =>
  encodeRequestFrame(op, i + 1, OPS[op].idempotent ? 0 : i + 1, Object.fromEntries(OPS[op].req.map(([f]) => [f, SAMPLE[f]])) as never));

const mutatedFrame = fc.tuple(fc.constantFrom(...requests), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }), fc.integer({ min: 0, max: 6 }), fc.nat())
  .map(([f, edits, kind, n]) => {
    const b = Buffer.from(f);
    for (const [pos, v] of edits) b[pos % b.length] = v; // header bytes too: length, op, flags, id, seq
    if (kind === 0) return b.subarray(0, n % (b.length + 1)); // truncated mid-frame
    if (kind === 1) b.writeUInt32LE((n % 8) * (1 << 28), 0); // a huge length
    if (kind === 2) b.writeUInt16LE(n & 0xffff, 4); // any op
    return b;
  });

const session = fc.record({
  hello: fc.constantFrom('valid', 'valid', 'valid', 'mutated', 'none'),
  frames: fc.array(mutatedFrame, { maxLength: 8 }),
  chunk: fc.integer({ min: 1, max: 64 }),
  read: fc.boolean(),
});

function throwAt(port: number, s: { hello: string; frames: Buffer[]; chunk: number; read: boolean }): Promise<void> {
  return new Promise((resolve) => {
    const sock = net.connect(port, '127.0.0.1');
    const done = (): void => {
      clearTimeout(timer);
      sock.destroy();
      resolve();
    };
    const timer = setTimeout(done, 60);
    sock.on('error', () => {});
    sock.on('close', done);
    if (!s.read) sock.pause();
    sock.on('connect', () => {
      let hello = HELLO;
      if (s.hello === 'mutated') {
        hello = Buffer.from(HELLO);
        const at = HEADER_SIZE + (s.chunk % (hello.length - HEADER_SIZE));
        hello[at] = hello[at]! ^ 0x5a;
      }
      const bytes = Buffer.concat([...(s.hello === 'none' ? [] : [hello]), ...s.frames]);
      for (let at = 0; at < bytes.length; at += s.chunk) sock.write(bytes.subarray(at, at + s.chunk));
    });
  });
}

test('a live server survives mutated frames from many connections; a normal client carries on', { timeout: 60_000 }, async (t) => {
  const log = recorder();
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log, maxFrame: 1 << 20, helloTimeoutMs: 500 });
  t.after(() => server.close());
  const { port } = server.address();
  const good = await connect({ host: '127.0.0.1', port, log: recorder() });
  t.after(() => good.close());
  const f = await good.create(ctx, ROOT_ID, 'steady', S_IFREG | 0o644, O_RDWR);

  let runs = 0;
  await fc.assert(fc.asyncProperty(fc.array(session, { minLength: 1, maxLength: 4 }), async (batch) => {
    runs++;
    await Promise.all(batch.map((s) => throwAt(port, s)));
    // The good client still gets right answers after every batch.
    const data = Buffer.from(`run ${runs}`);
    assert.equal(await good.write(ctx, f.entry.nodeid, f.fh, 0, data), data.length);
    assert.equal((await good.read(ctx, f.entry.nodeid, f.fh, 0, data.length)).toString(), data.toString());
  }), { numRuns: 120 });

  const st = server.stats();
  console.log(`# live server fuzz: ${runs} batches, ${st.connections} connections, ${st.protocolErrors} closed for protocol errors, ${st.requests} requests`);
  assert.ok(st.protocolErrors > 20, 'the fuzz did reach the protocol checks');
  assert.ok(log.lines.every((l) => !l.includes('\n')), 'one line per event');
  assert.equal(good.stats().state, 'open');
});

test('a client fed mutated replies and pushes fails calls, never throws out of its handlers', { timeout: 60_000 }, async (t) => {
  const root = attr;
  const welcome = encodeReplyFrame('hello', 0, {
    magic: MAGIC, major: VERSION_MAJOR, minor: 0, features: FEATURES_V1, maxFrame: 1 << 20, sessionId: 7n, serverName: 'fake',
    fsType: 'fake', readOnly: false, root: { ...root, mode: 0o40755 },
  });
  let feed: Buffer[] = [];
  const sockets = new Set<net.Socket>();
  const srv = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    s.once('data', () => {
      s.write(welcome);
      // Answer every later request with the prepared bytes (mutated replies to whatever id).
      s.on('data', () => {
        for (const b of feed) s.write(b);
      });
    });
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const s of sockets) s.destroy();
    return new Promise<void>((r) => srv.close(() => r()));
  });
  const port = (srv.address() as net.AddressInfo).port;
  const replies = [
    encodeReplyFrame('getattr', 1, { attr }),
    encodeReplyFrame('lookup', 1, { entry: { nodeid: 2, generation: 0, attr } }),
    encodeReplyFrame('readdir', 1, { entries: [{ name: 'a', ino: 3, type: 0o100000, off: 1, entry: { nodeid: 3, generation: 0, attr } }], eof: true }),
  ];
  const mutatedReply = fc.tuple(fc.constantFrom(...replies), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 3 }))
    .map(([f, edits]) => {
      const b = Buffer.from(f);
      for (const [pos, v] of edits) b[4 + (pos % (b.length - 4))] = v; // keep the length honest
      b.writeUInt32LE(2, 8); // the id a fresh client's first call gets
      if ((b.readUInt16LE(6) & FLAG_REPLY) === 0) b.writeUInt16LE(FLAG_REPLY, 6);
      return b;
    });
  let failed = 0;
  let answered = 0;
  await fc.assert(fc.asyncProperty(fc.array(mutatedReply, { minLength: 1, maxLength: 3 }), async (frames) => {
    feed = frames;
    const c = await connect({ host: '127.0.0.1', port, log: recorder(), timeoutMs: 2000 });
    try {
      const ac = new AbortController();
      const timer = setTimeout(() => ac.abort(), 100);
      await c.getattr({ ...ctx, signal: ac.signal }, ROOT_ID).then(() => answered++, () => failed++);
      clearTimeout(timer);
    } finally {
      await c.close();
    }
  }), { numRuns: 80 });
  console.log(`# client fuzz: 80 fake servers, ${answered} calls answered, ${failed} failed cleanly`);
  assert.ok(answered > 0 && failed > 0, 'the fuzz reached both the good and the bad paths');
});
