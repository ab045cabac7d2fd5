// Attribute changes behind (writeback.ts): a chmod, chown or utimes of a file this client made and
// holds open is answered without a round trip; the changes are merged and sent as one SETATTR behind
// the file's writes. Against a
// real server over a passthrough directory, through a proxy adding 40 ms each way so that a round
// trip shows, and with the source's writes slowed: the calls return at once, close waits for them,
// and the host's file ends with exactly the attributes the client answered, its times set after the
// writes (the server's ordering promise).
// What the client cannot be sure of (not the owner, set-ID bits, a size) still waits for the server.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { startServer } from '../../src/server/server.js';
import { defaultIdMap } from '../../src/server/export.js';
import { connect } from '../../src/client/client.js';
import { WriteBehindVfs } from '../../src/client/writeback.js';
import { O_RDWR, ROOT_ID, S_IFREG, type ChangeEvent, type Ctx, type Vfs } from '../../src/vfs/types.js';
import { startProxy } from '../helpers/proxy.js';

const root: Ctx = { uid: 0, gid: 0, pid: 1 };
const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };
const DELAY_MS = 40;

/** The source's writes take 30 ms (a slow disk): a SETATTR sent behind them arrives long before they end. */
function slowWrites(vfs: Vfs): Vfs {
  return new Proxy(vfs, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      if (prop !== 'write') return (v as (...a: unknown[]) => unknown).bind(target);
      return async (...args: unknown[]) => {
        await new Promise((r) => setTimeout(r, 30));
        return (v as (...a: unknown[]) => Promise<number>).apply(target, args);
      };
    },
  });
}

async function setup(t: TestContext): Promise<{ wb: WriteBehindVfs; dir: string; requests: () => number; events: ChangeEvent[] }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-setattr-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  // The server checks permissions of other identities than root, as `wirefs serve` does.
  const server = await startServer({
    vfs: slowWrites(new PassthroughFs(dir)), host: '127.0.0.1', port: 0, log: quiet,
    export: { readOnly: false, idmap: { ...defaultIdMap(), rootSquash: false }, allow: undefined },
  });
  t.after(() => server.close());
  const proxy = await startProxy({ host: '127.0.0.1', port: server.address().port }, { delayMs: DELAY_MS });
  t.after(() => proxy.close());
  const client = await connect({ host: '127.0.0.1', port: proxy.port, log: quiet });
  const wb = new WriteBehindVfs(client);
  t.after(() => wb.close());
  const events: ChangeEvent[] = [];
  wb.watch((ev) => { events.push(ev); });
  return { wb, dir, requests: () => client.stats().requests, events };
}

async function timed<T>(p: Promise<T>): Promise<[T, number]> {
  const t0 = Date.now();
  const v = await p;
  return [v, Date.now() - t0];
}

test('chmod, chown and utimes of a file made here return at once and land after its writes', async (t) => {
  const { wb, dir, events, requests } = await setup(t);
  const data = Buffer.alloc(1 << 20, 7);
  for (let i = 0; i < 6; i++) {
    const name = `f${i}`;
    const c = await wb.create(root, ROOT_ID, name, S_IFREG | 0o644, O_RDWR);
    const id = c.entry.nodeid;
    const sent = requests();
    // Writes of 1 MiB go to the server's thread pool; a utimes right behind them must still land last.
    for (let k = 0; k < 3; k++) await wb.write(root, id, c.fh, k * data.length, data);
    const [a1, ms1] = await timed(wb.setattr(root, id, { uid: 1234, gid: 4321 }));
    const [a2, ms2] = await timed(wb.setattr(root, id, { mode: 0o600 }));
    const [a3, ms3] = await timed(wb.setattr(root, id, { atime: { sec: 1000 + i, nsec: 5 }, mtime: { sec: 2000 + i, nsec: 7 } }));
    const [got, ms4] = await timed(wb.getattr(root, id));
    for (const [k, ms] of [ms1, ms2, ms3, ms4].entries()) assert.ok(ms < DELAY_MS, `call ${k + 1} of file ${i} answered without a round trip (${ms} ms)`);
    assert.equal(a1.uid, 1234);
    assert.equal(a2.mode, S_IFREG | 0o600);
    assert.equal(a3.mtime.sec, 2000 + i);
    assert.equal(got.size, 3 * data.length);
    assert.equal(got.uid, 1234);

    const [, msFlush] = await timed(wb.flush(root, id, c.fh));
    assert.ok(msFlush >= DELAY_MS, 'close waited for the server');
    assert.equal(requests() - sent, 4, 'three WRITEs and one SETATTR carrying the three changes');
    const st = fs.statSync(path.join(dir, name), { bigint: true });
    assert.equal(Number(st.mode), S_IFREG | 0o600);
    assert.equal([Number(st.uid), Number(st.gid)].join(':'), '1234:4321');
    assert.equal(st.size, BigInt(3 * data.length));
    assert.equal(st.atimeNs, BigInt(1000 + i) * 1_000_000_000n + 5n);
    assert.equal(st.mtimeNs, BigInt(2000 + i) * 1_000_000_000n + 7n, 'the times were set after the writes');
    await wb.release(root, id, c.fh);
    // The kernel is told to ask again: its copy has our ctime, not the server's.
    assert.ok(events.some((ev) => ev.kind === 'inode' && ev.nodeid === id && ev.attrsOnly), 'the kernel copy was dropped');
  }
  assert.equal(wb.stats().setattrsBehind, 18);
  assert.equal(wb.stats().setattrsSent, 6);
  assert.equal(wb.stats().deferredErrors, 0);
});

test('what the server might refuse or decide otherwise still waits for its answer', async (t) => {
  const { wb, dir } = await setup(t);
  const c = await wb.create(root, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const id = c.entry.nodeid;
  const user: Ctx = { uid: 1000, gid: 1000, pid: 1 };
  // Not the owner: the server's answer (EPERM) comes at once, from the server.
  const [err, ms] = await timed(wb.setattr(user, id, { mode: 0o777 }).then(() => undefined, (e: unknown) => e));
  assert.ok(err instanceof FsError && err.errno === Errno.EPERM, `EPERM, got ${String(err)}`);
  assert.ok(ms >= 2 * DELAY_MS, 'asked the server');
  // A set-ID bit, and a size: asked too.
  const before = wb.stats().setattrsBehind;
  let [, ms2] = await timed(wb.setattr(root, id, { mode: 0o4755 }));
  assert.ok(ms2 >= 2 * DELAY_MS);
  [, ms2] = await timed(wb.setattr(root, id, { size: 10 }));
  assert.ok(ms2 >= 2 * DELAY_MS);
  assert.equal(wb.stats().setattrsBehind, before, 'none went behind');
  assert.equal(fs.statSync(path.join(dir, 'f')).size, 10);
  await wb.release(root, id, c.fh);

  // A file this client did not make (made on the host) is not guessed either.
  await fsp.writeFile(path.join(dir, 'theirs'), 'x');
  const e = await wb.lookup(root, ROOT_ID, 'theirs');
  const o = await wb.open(root, e.nodeid, O_RDWR);
  [, ms2] = await timed(wb.setattr(root, e.nodeid, { mode: 0o600 }));
  assert.ok(ms2 >= 2 * DELAY_MS);
  await wb.release(root, e.nodeid, o.fh);
});
