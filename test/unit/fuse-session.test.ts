// The FUSE session without a kernel: request frames built by hand go in, replies are captured from
// a fake transport. Checks INIT negotiation, exactly-once replies, ENOSYS only where meant,
// malformed frames, READDIRPLUS packing with its lookup accounting, xattr probes and notifies.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Writer } from '../../src/lib/bytes.js';
import { Errno } from '../../src/lib/errno.js';
import { FuseSession } from '../../src/fuse/session.js';
import { ENTRY_OUT_SIZE, FATTR, FOPEN, Init, Notify, Op } from '../../src/fuse/abi.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, ROOT_ID, S_IFREG, type ChangeListener, type Ctx } from '../../src/vfs/types.js';

interface Sent { error: number; unique: bigint; body: Buffer }

class FakeTransport {
  readonly sent: Sent[] = [];
  /** Errno code to fail every send with (e.g. ENOENT: the request was interrupted). */
  failWith: string | undefined;
  reply(chunks: Buffer[]): void {
    const msg = Buffer.concat(chunks);
    assert.equal(msg.readUInt32LE(0), msg.length, 'out header length matches');
    if (this.failWith) throw Object.assign(new Error(this.failWith), { code: this.failWith });
    this.sent.push({ error: msg.readInt32LE(4), unique: msg.readBigUInt64LE(8), body: msg.subarray(16) });
  }
  async send(chunks: Buffer[]): Promise<void> {
    this.reply(chunks);
  }
}

let nextUnique = 2n;
function frame(opcode: number, nodeid: number, body: Buffer = Buffer.alloc(0), unique = (nextUnique += 2n)): Buffer {
  const w = new Writer(40 + body.length);
  w.u32(40 + body.length).u32(opcode).u64(unique).u64(nodeid).u32(0).u32(0).u32(1).u16(0).u16(0).bytes(body);
  return w.done();
}
function cstr(...names: string[]): Buffer {
  return Buffer.concat(names.map((n) => Buffer.from(`${n}\0`)));
}
const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 5));

async function started(vfs = new MemoryFs(), minor = 45): Promise<{ s: FuseSession; t: FakeTransport; vfs: MemoryFs }> {
  const t = new FakeTransport();
  const s = new FuseSession(vfs, t, { entryTimeoutS: 2, attrTimeoutS: 0.5 });
  const init = new Writer(64).u32(7).u32(minor).u32(1 << 17).u32(0x7fffffff | Init.INIT_EXT).u32(0xffff).zeros(44).done();
  s.dispatch(frame(Op.INIT, 0, init, 0n));
  await s.initialized;
  t.sent.length = 0;
  return { s, t, vfs };
}

void describe('FuseSession', () => {
  void it('negotiates INIT: our minor, wanted flags only, 1 MiB writes in 256 pages', async () => {
    const t = new FakeTransport();
    const s = new FuseSession(new MemoryFs(), t);
    const init = new Writer(64).u32(7).u32(45).u32(1 << 17).u32(0xffffffff).u32(0xffffffff).zeros(44).done();
    s.dispatch(frame(Op.INIT, 0, init, 1n));
    const info = await s.initialized;
    const out = t.sent[0]!.body;
    assert.equal(out.length, 64);
    assert.deepEqual([out.readUInt32LE(0), out.readUInt32LE(4), info.minor], [7, 38, 38]);
    const flags = out.readUInt32LE(12);
    for (const f of [Init.ASYNC_READ, Init.ATOMIC_O_TRUNC, Init.BIG_WRITES, Init.DO_READDIRPLUS, Init.READDIRPLUS_AUTO,
      Init.ASYNC_DIO, Init.PARALLEL_DIROPS, Init.MAX_PAGES, Init.CACHE_SYMLINKS, Init.AUTO_INVAL_DATA, Init.INIT_EXT]) {
      assert.ok(flags & f, `flag 0x${f.toString(16)} asked for`);
    }
    for (const f of [Init.WRITEBACK_CACHE, Init.POSIX_LOCKS, Init.FLOCK_LOCKS, Init.EXPORT_SUPPORT]) assert.equal(flags & f, 0);
    assert.equal(out.readUInt32LE(32), 0, 'no flags2 bits');
    assert.deepEqual([out.readUInt32LE(20), out.readUInt16LE(28)], [1 << 20, 256]);
  });

  void it('refuses a kernel older than 7.31 with EPROTO', async () => {
    const t = new FakeTransport();
    const s = new FuseSession(new MemoryFs(), t);
    s.dispatch(frame(Op.INIT, 0, new Writer(16).u32(7).u32(26).u32(0).u32(0).done(), 1n));
    await assert.rejects(s.initialized, /7\.26 not supported/);
    assert.equal(t.sent[0]!.error, -Errno.EPROTO);
  });

  void it('answers ENOSYS for STATX and unknown opcodes, nothing for FORGET', async () => {
    const { s, t } = await started();
    s.dispatch(frame(Op.STATX, ROOT_ID, Buffer.alloc(24), 10n));
    s.dispatch(frame(9999, ROOT_ID, Buffer.alloc(0), 12n));
    s.dispatch(frame(Op.FORGET, 5, new Writer(8).u64(1).done(), 14n));
    await tick();
    assert.deepEqual(t.sent.map((m) => [m.unique, m.error]), [[10n, -Errno.ENOSYS], [12n, -Errno.ENOSYS]]);
  });

  void it('answers a malformed request with EIO and carries on', async () => {
    const { s, t } = await started();
    s.dispatch(frame(Op.GETATTR, ROOT_ID, Buffer.alloc(3), 20n)); // body shorter than fuse_getattr_in
    s.dispatch(frame(Op.LOOKUP, ROOT_ID, Buffer.from('no-nul'), 22n)); // unterminated name
    const bad = frame(Op.GETATTR, ROOT_ID, Buffer.alloc(16), 24n);
    bad.writeUInt32LE(999, 0); // header length disagrees with the frame
    s.dispatch(bad);
    s.dispatch(frame(Op.GETATTR, ROOT_ID, Buffer.alloc(16), 26n));
    await tick();
    assert.deepEqual(t.sent.map((m) => [m.unique, m.error]), [[20n, -Errno.EIO], [22n, -Errno.EIO], [24n, -Errno.EIO], [26n, 0]]);
    assert.equal(t.sent[3]!.body.length, 104);
  });

  void it('never throws and answers each request at most once, whatever the bytes', async () => {
    const { s, t } = await started();
    await fc.assert(fc.asyncProperty(fc.integer({ min: 0, max: 60 }), fc.uint8Array({ maxLength: 120 }), async (op, body) => {
      t.sent.length = 0;
      const f = frame(op === Op.INIT || op === Op.DESTROY ? Op.GETATTR : op, ROOT_ID, Buffer.from(body));
      s.dispatch(f);
      await tick();
      assert.ok(t.sent.length <= 1);
    }), { numRuns: 300 });
  });

  void it('packs READDIRPLUS into the size asked and forgets the entries that did not fit', async () => {
    const vfs = new MemoryFs();
    const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
    for (let i = 0; i < 40; i++) {
      const c = await vfs.create(ctx, ROOT_ID, `name-${i}`, S_IFREG | 0o644, O_RDWR);
      await vfs.release(ctx, c.entry.nodeid, c.fh);
      vfs.forget(c.entry.nodeid, 1);
    }
    const forgotten: number[] = [];
    const real = vfs.forget.bind(vfs);
    vfs.forget = (id: number, n: number): void => { forgotten.push(id); real(id, n); };
    // maxEntries is only a hint: a Vfs may return more than fits, and the rest must be given back.
    const readdir = vfs.readdir.bind(vfs);
    vfs.readdir = (c, node, fh, off, _max, plus) => readdir(c, node, fh, off, 1000, plus);
    const { s, t } = await started(vfs);
    s.dispatch(frame(Op.OPENDIR, ROOT_ID, Buffer.alloc(8), 30n));
    await tick();
    const fh = t.sent[0]!.body.readBigUInt64LE(0);
    const size = 1000;
    s.dispatch(frame(Op.READDIRPLUS, ROOT_ID, new Writer(40).u64(fh).u64(0).u32(size).zeros(20).done(), 32n));
    await tick();
    const out = t.sent[1]!.body;
    assert.ok(out.length <= size && out.length > 0);
    const names: string[] = [];
    const ids: number[] = [];
    for (let p = 0; p < out.length;) {
      const nodeid = Number(out.readBigUInt64LE(p));
      const namelen = out.readUInt32LE(p + 128 + 16);
      const name = out.toString('utf8', p + 152, p + 152 + namelen);
      names.push(name);
      if (name === '.' || name === '..') assert.equal(nodeid, 0, 'no lookup for dot entries');
      else ids.push(nodeid);
      p += (152 + namelen + 7) & ~7;
    }
    assert.deepEqual(names.slice(0, 2), ['.', '..']);
    assert.ok(names.length < 42, 'not everything fits in 1000 bytes');
    // every entry built but not sent was forgotten; none that was sent
    assert.ok(forgotten.length > 0);
    for (const id of ids) assert.ok(!forgotten.includes(id));
  });

  void it('gives back the lookup of an entry reply the kernel did not take', async () => {
    const vfs = new MemoryFs();
    const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
    await vfs.mkdir(ctx, ROOT_ID, 'd', 0o755);
    const { s, t } = await started(vfs);
    const forgotten: number[] = [];
    vfs.forget = (id: number): void => { forgotten.push(id); };
    t.failWith = 'ENOENT';
    s.dispatch(frame(Op.LOOKUP, ROOT_ID, cstr('d')));
    await tick();
    assert.equal(forgotten.length, 1);
  });

  void it('follows the xattr size protocol: 0 probes, too small is ERANGE', async () => {
    const vfs = new MemoryFs();
    const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
    await vfs.setxattr(ctx, ROOT_ID, 'user.a', Buffer.from('12345'), 0);
    const { s, t } = await started(vfs);
    const get = (size: number): Buffer => Buffer.concat([new Writer(8).u32(size).u32(0).done(), cstr('user.a')]);
    s.dispatch(frame(Op.GETXATTR, ROOT_ID, get(0), 40n));
    s.dispatch(frame(Op.GETXATTR, ROOT_ID, get(2), 42n));
    s.dispatch(frame(Op.GETXATTR, ROOT_ID, get(100), 44n));
    s.dispatch(frame(Op.LISTXATTR, ROOT_ID, new Writer(8).u32(0).u32(0).done(), 46n));
    s.dispatch(frame(Op.LISTXATTR, ROOT_ID, new Writer(8).u32(100).u32(0).done(), 48n));
    await tick();
    const by = new Map(t.sent.map((m) => [m.unique, m]));
    assert.equal(by.get(40n)!.body.readUInt32LE(0), 5);
    assert.equal(by.get(42n)!.error, -Errno.ERANGE);
    assert.equal(by.get(44n)!.body.toString(), '12345');
    assert.equal(by.get(46n)!.body.readUInt32LE(0), 7);
    assert.equal(by.get(48n)!.body.toString(), 'user.a\0');
  });

  void it('aborts the signal of an interrupted request', async () => {
    const vfs = new MemoryFs();
    let seen: AbortSignal | undefined;
    vfs.getattr = (ctx: Ctx): Promise<never> => new Promise((_, reject) => {
      seen = ctx.signal;
      ctx.signal?.addEventListener('abort', () => reject(new Error('aborted')));
    });
    const { s, t } = await started(vfs);
    s.dispatch(frame(Op.GETATTR, ROOT_ID, Buffer.alloc(16), 50n));
    await tick();
    assert.equal(s.stats().inFlight, 1);
    s.dispatch(frame(Op.INTERRUPT, 0, new Writer(8).u64(50n).done(), 51n));
    await tick();
    assert.ok(seen?.aborted);
    assert.deepEqual(t.sent.map((m) => [m.unique, m.error]), [[50n, -Errno.EINTR]]);
    assert.equal(s.stats().inFlight, 0);
    // an interrupt for a request not (yet) seen asks the kernel to retry it later
    s.dispatch(frame(Op.INTERRUPT, 0, new Writer(8).u64(70n).done(), 71n));
    await tick();
    assert.deepEqual(t.sent.at(-1), { unique: 71n, error: -Errno.EAGAIN, body: Buffer.alloc(0) });
  });

  void it('turns change events into notify messages with unique 0', async () => {
    const vfs = new MemoryFs();
    let listener: ChangeListener | undefined;
    vfs.watch = (l: ChangeListener): (() => void) => { listener = l; return () => (listener = undefined); };
    const { s, t } = await started(vfs);
    // Each notify settles once the transport took it: what a client's CHANGE_ACK waits for.
    await listener!({ kind: 'inode', nodeid: 9, off: -1, len: 0 });
    await listener!({ kind: 'entry', parent: 1, name: 'gone' });
    await listener!({ kind: 'delete', parent: 1, child: 9, name: 'x' });
    assert.deepEqual(t.sent.map((m) => [m.unique, m.error]), [[0n, Notify.INVAL_INODE], [0n, Notify.INVAL_ENTRY], [0n, Notify.DELETE]]);
    assert.deepEqual([t.sent[0]!.body.readBigUInt64LE(0), t.sent[0]!.body.readBigInt64LE(8)], [9n, 0n]);
    assert.equal(t.sent[1]!.body.toString('utf8', 16), 'gone\0');
    assert.equal(t.sent[2]!.body.readBigUInt64LE(8), 9n);
    s.close();
    assert.equal(listener, undefined, 'unsubscribed on close');
  });

  void it('asks for no FLUSH at the close of read-only handles only, on 7.35+ kernels', async () => {
    // fuse_open_out.open_flags of each OPEN and CREATE reply, by the open(2) access mode asked.
    const openFlags = async (minor: number): Promise<number[]> => {
      const { s, t } = await started(new MemoryFs(), minor);
      const out: number[] = [];
      for (const [i, mode] of [O_RDONLY, O_WRONLY, O_RDWR].entries()) {
        // fuse_create_in: flags, mode, umask, open_flags; then the name. fuse_open_in: flags, open_flags.
        s.dispatch(frame(Op.CREATE, ROOT_ID, Buffer.concat([new Writer(16).u32(mode).u32(S_IFREG | 0o644).u32(0).u32(0).done(), cstr(`f${minor}-${i}`)])));
        await tick();
        const entry = t.sent.at(-1)!;
        assert.equal(entry.error, 0);
        // fuse_entry_out, then fuse_open_out: fh 0, open_flags 8.
        out.push(entry.body.readUInt32LE(ENTRY_OUT_SIZE + 8));
        s.dispatch(frame(Op.OPEN, Number(entry.body.readBigUInt64LE(0)), new Writer(8).u32(mode).u32(0).done()));
        await tick();
        assert.equal(t.sent.at(-1)!.error, 0);
        out.push(t.sent.at(-1)!.body.readUInt32LE(8));
      }
      return out.map((f) => f & FOPEN.NOFLUSH);
    };
    const N = FOPEN.NOFLUSH;
    assert.deepEqual(await openFlags(45), [N, N, 0, 0, 0, 0]);
    assert.deepEqual(await openFlags(34), [0, 0, 0, 0, 0, 0]);
  });

  void describe('read-around', () => {
    const WINDOW = 64 * 1024;
    const content = Buffer.from(Array.from({ length: 4 * WINDOW }, (_, i) => (i * 7 + (i >> 12)) & 0xff));
    const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };

    /** A session over a MemoryFs holding one file of `content`, opened by the kernel with mode. */
    async function withFile(mode: number, vfs = new MemoryFs()): Promise<{ s: FuseSession; t: FakeTransport; node: number; fh: number }> {
      const c = await vfs.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
      await vfs.write(ctx, c.entry.nodeid, c.fh, 0, content);
      await vfs.release(ctx, c.entry.nodeid, c.fh);
      const t = new FakeTransport();
      const s = new FuseSession(vfs, t, { keepCache: true, readAroundBytes: WINDOW });
      s.dispatch(frame(Op.INIT, 0, new Writer(64).u32(7).u32(45).u32(1 << 17).u32(0x7fffffff | Init.INIT_EXT).u32(0xffff).zeros(44).done(), 0n));
      await s.initialized;
      s.dispatch(frame(Op.OPEN, c.entry.nodeid, new Writer(8).u32(mode).u32(0).done()));
      await tick();
      const open = t.sent.at(-1)!;
      assert.equal(open.error, 0);
      t.sent.length = 0;
      return { s, t, node: c.entry.nodeid, fh: Number(open.body.readBigUInt64LE(0)) };
    }
    const read = (node: number, fh: number, offset: number, size: number): Buffer =>
      frame(Op.READ, node, new Writer(40).u64(fh).u64(offset).u32(size).u32(0).u64(0).u32(0).u32(0).done());
    /** The STORE notifications sent: [nodeid, offset, bytes]. */
    const stores = (t: FakeTransport): Array<[number, number, Buffer]> => t.sent.filter((m) => m.unique === 0n && m.error === Notify.STORE)
      .map((m) => {
        assert.equal(m.body.readUInt32LE(16), m.body.length - 24, 'store size matches its bytes');
        return [Number(m.body.readBigUInt64LE(0)), Number(m.body.readBigUInt64LE(8)), m.body.subarray(24)];
      });

    void it('answers a small random READ and stores the rest of its window in the page cache', async () => {
      const { s, t, node, fh } = await withFile(O_RDONLY);
      s.dispatch(read(node, fh, WINDOW + 8192, 4096));
      await tick();
      const reply = t.sent.find((m) => m.unique !== 0n)!;
      assert.equal(reply.error, 0);
      assert.deepEqual(reply.body, content.subarray(WINDOW + 8192, WINDOW + 12288));
      assert.deepEqual(stores(t), [
        [node, WINDOW, content.subarray(WINDOW, WINDOW + 8192)],
        [node, WINDOW + 12288, content.subarray(WINDOW + 12288, 2 * WINDOW)],
      ]);
      // The next READ that continues this one is read-ahead's: not widened.
      t.sent.length = 0;
      s.dispatch(read(node, fh, WINDOW + 12288, 4096));
      await tick();
      assert.deepEqual(t.sent.map((m) => m.unique === 0n), [false]);
      // Nor is a READ as big as half the window, nor one at the end of the file (short).
      s.dispatch(read(node, fh, 2 * WINDOW, WINDOW / 2));
      await tick();
      assert.equal(stores(t).length, 0);
      t.sent.length = 0;
      s.dispatch(read(node, fh, 4 * WINDOW - 4096, 4096));
      await tick();
      assert.deepEqual(stores(t), [[node, 3 * WINDOW, content.subarray(3 * WINDOW, 4 * WINDOW - 4096)]]);
      assert.deepEqual(s.stats().readAround, { widened: 2, storedBytes: 2 * WINDOW - 8192, dropped: 0, grown: 0 });
    });

    void it('stores nothing while the node is open for writing here', async () => {
      const { s, t, node, fh } = await withFile(O_RDWR);
      s.dispatch(read(node, fh, 8192, 4096));
      await tick();
      assert.deepEqual(t.sent.map((m) => [m.unique === 0n, m.body.length]), [[false, 4096]]);
      assert.equal(s.stats().readAround?.widened, 0, 'not even fetched wide');
      // Once the writer is released, reads are widened again.
      s.dispatch(frame(Op.RELEASE, node, new Writer(24).u64(fh).u32(0).u32(0).u64(0).done()));
      await tick();
      const ro = await (async () => {
        s.dispatch(frame(Op.OPEN, node, new Writer(8).u32(O_RDONLY).u32(0).done()));
        await tick();
        return Number(t.sent.at(-1)!.body.readBigUInt64LE(0));
      })();
      t.sent.length = 0;
      s.dispatch(read(node, ro, 2 * WINDOW, 4096));
      await tick();
      assert.equal(stores(t).length, 1);
    });

    for (const how of ['SETATTR', 'OPEN O_TRUNC'] as const) {
      void it(`drops a window when a truncation (${how}) comes while it is fetched`, async () => {
        const vfs = new MemoryFs();
        let open: () => void = () => {};
        const gate = new Promise<void>((r) => (open = r));
        const { s, t, node, fh } = await withFile(O_RDONLY, vfs);
        const plainRead = vfs.read.bind(vfs);
        vfs.read = async (...args: Parameters<MemoryFs['read']>): Promise<Buffer> => {
          const data = await plainRead(...args);
          await gate;
          return data;
        };
        s.dispatch(read(node, fh, 16384, 4096));
        await tick();
        // SETATTR of size (fuse_setattr_in, 88 bytes: valid 0, fh 8, size 16, ...), or a read-only
        // open with O_TRUNC, which Linux honours.
        if (how === 'SETATTR') s.dispatch(frame(Op.SETATTR, node, new Writer(88).u32(FATTR.SIZE).u32(0).u64(0).u64(100).zeros(64).done()));
        else s.dispatch(frame(Op.OPEN, node, new Writer(8).u32(O_RDONLY | O_TRUNC).u32(0).done()));
        await tick();
        open();
        await tick();
        assert.equal(t.sent.filter((m) => m.unique !== 0n && m.error === 0).length, 2, 'both answered');
        assert.deepEqual(stores(t), []);
        assert.equal(s.stats().readAround?.dropped, 1);
      });
    }

    void it('sends a pushed change to the kernel only after the stores to that node', async () => {
      const vfs = new MemoryFs();
      let listener: ChangeListener | undefined;
      vfs.watch = (l: ChangeListener): (() => void) => { listener = l; return () => (listener = undefined); };
      const { s, t, node, fh } = await withFile(O_RDONLY, vfs);
      // Stores take a while to reach the kernel; an invalidation must not overtake them.
      const plainSend = t.send.bind(t);
      t.send = async (chunks: Buffer[]): Promise<void> => {
        if (chunks[0]!.readInt32LE(4) === Notify.STORE) await tick();
        return plainSend(chunks);
      };
      s.dispatch(read(node, fh, 16384, 4096));
      await new Promise((r) => setImmediate(r));
      await listener!({ kind: 'inode', nodeid: node, off: -1, len: 0 });
      const kinds = t.sent.filter((m) => m.unique === 0n).map((m) => m.error);
      assert.deepEqual(kinds, [Notify.STORE, Notify.STORE, Notify.INVAL_INODE]);
    });
  });
});
