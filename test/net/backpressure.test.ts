// A client that stops reading cannot make the server's memory grow: it asks for 2 GiB of reads
// on a raw socket and never reads a byte of the replies. The server stops reading that connection
// once its replies stop draining, so its memory stays flat, and another client is served meanwhile.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { Reader } from '../../src/lib/bytes.js';
import type { Logger } from '../../src/lib/log.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { startServer } from '../../src/server/server.js';
import { connect } from '../../src/client/client.js';
import { FEATURES_V1, FrameSplitter, MAGIC, VERSION_MAJOR, decodeHeader, encodeRequestFrame } from '../../src/wire/frame.js';
import { decodeRep } from '../../src/wire/ops.js';
import { O_RDWR, ROOT_ID, S_IFREG, type Ctx } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const MiB = 1 << 20;

test('a client that never reads its replies leaves the server memory bounded', { timeout: 60_000 }, async (t) => {
  const server = await startServer({ vfs: new MemoryFs(), host: '127.0.0.1', port: 0, log: quiet, maxInFlight: 16 });
  t.after(() => server.close());
  const { port } = server.address();
  const good = await connect({ host: '127.0.0.1', port, log: quiet });
  t.after(() => good.close());
  const f = await good.create(ctx, ROOT_ID, 'big', S_IFREG | 0o644, O_RDWR);
  await good.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.alloc(MiB, 7));

  // The stalled client: HELLO and OPEN, read those two replies, then never read again.
  const sock = net.connect(port, '127.0.0.1');
  t.after(() => sock.destroy());
  sock.on('error', () => {});
  const sp = new FrameSplitter(8 * MiB);
  const fh = await new Promise<number>((resolve) => {
    sock.on('data', (d: Buffer) => {
      sp.push(d);
      for (let fr = sp.next(); fr; fr = sp.next()) {
        const r = new Reader(fr);
        const h = decodeHeader(r);
        if (h.id === 1 && r.i32() === 0) resolve(decodeRep(r, 'open').open.fh);
      }
    });
    sock.write(encodeRequestFrame('hello', 0, 0, {
      magic: MAGIC, major: VERSION_MAJOR, minor: 0, features: FEATURES_V1, maxFrame: 4 * MiB, sessionId: 0n, clientName: 'stalled',
    }));
    sock.write(encodeRequestFrame('open', 1, 1, { ctx, nodeid: f.entry.nodeid, flags: O_RDWR }));
  });
  sock.removeAllListeners('data');
  sock.pause();

  const mem = (): number => process.memoryUsage().arrayBuffers;
  const before = mem();
  const requests = Buffer.concat(Array.from({ length: 2048 }, (_, i) =>
    encodeRequestFrame('read', i + 2, 0, { ctx, nodeid: f.entry.nodeid, fh, offset: 0, size: MiB })));
  sock.write(requests);
  let peak = 0;
  for (let i = 0; i < 30; i++) {
    await new Promise((r) => setTimeout(r, 100));
    peak = Math.max(peak, mem() - before);
    // Someone else is served all along.
    assert.equal((await good.getattr(ctx, f.entry.nodeid)).size, MiB);
  }
  const st = server.stats();
  console.log(`# stalled client asked for 2 GiB; server memory grew at most ${(peak / MiB).toFixed(1)} MiB; ${st.requests} requests read`);
  // What it may hold: the replies of the 16 requests it lets run, and their copies on the way out.
  assert.ok(peak < 100 * MiB, `server buffered ${(peak / MiB).toFixed(0)} MiB for a client that does not read`);
  assert.ok(st.requests < 2048, 'the server stopped reading the stalled connection');
});
