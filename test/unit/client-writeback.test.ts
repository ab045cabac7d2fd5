// The write-behind layer in-process, over a MemoryFs whose writes are slowed, reordered or failed
// on purpose: a write returns before the source has it, but nothing that could observe the file
// (flush, fsync, read, getattr, a lookup) gets ahead of its writes, overlapping writes land in
// order, the in-flight bound holds, and a failed write is reported by the next flush, once.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Errno, FsError } from '../../src/lib/errno.js';
import { WriteBehindVfs, predictSetattr } from '../../src/client/writeback.js';
import { MemoryFs } from '../../src/sources/memory.js';
import { O_RDWR, ROOT_ID, S_IFDIR, S_IFREG, type Attr, type Ctx, type Vfs } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A MemoryFs whose writes take `delay(offset)` ms and may fail; counts calls that reach it. */
function slowFs(delay: (off: number) => number, fail?: (off: number) => FsError | undefined): { vfs: Vfs; mem: MemoryFs; calls: Map<string, number>; active: () => number } {
  const mem = new MemoryFs();
  const calls = new Map<string, number>();
  let active = 0;
  const vfs = new Proxy(mem, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        calls.set(String(prop), (calls.get(String(prop)) ?? 0) + 1);
        if (prop !== 'write') return (v as (...a: unknown[]) => unknown).apply(target, args);
        const off = args[3] as number;
        active++;
        return sleep(delay(off)).then(() => {
          const err = fail?.(off);
          if (err) throw err;
          return (v as (...a: unknown[]) => Promise<number>).apply(target, args);
        }).finally(() => active--);
      };
    },
  }) as Vfs;
  return { vfs, mem, calls, active: () => active };
}

test('a write returns at once; flush, getattr and read wait for it', async () => {
  const { vfs, mem, active } = slowFs(() => 50);
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const t0 = Date.now();
  assert.equal(await wb.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('hello')), 5);
  assert.ok(Date.now() - t0 < 40, 'the write did not wait for the source');
  assert.equal(active(), 0, 'a small write waits for others that may follow it (gathered)');
  assert.equal((await wb.getattr(ctx, f.entry.nodeid)).size, 5, 'getattr saw the write');
  await wb.write(ctx, f.entry.nodeid, f.fh, 5, Buffer.from(' world'));
  assert.equal((await wb.read(ctx, f.entry.nodeid, f.fh, 0, 100)).toString(), 'hello world');
  await wb.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('J'));
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal(active(), 0, 'flush waited for every write');
  assert.equal((await mem.read(ctx, f.entry.nodeid, f.fh, 0, 100)).toString(), 'Jello world');
  await wb.release(ctx, f.entry.nodeid, f.fh);
});

test('overlapping writes land in the order they were made', async () => {
  // Earlier offsets are slower: without ordering, the second write would land first.
  const { vfs, mem } = slowFs((off) => (off === 0 ? 60 : 1));
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  await wb.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('aaaa'));
  await wb.write(ctx, f.entry.nodeid, f.fh, 2, Buffer.from('bb'));
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal((await mem.read(ctx, f.entry.nodeid, f.fh, 0, 10)).toString(), 'aabb');
});

test('writes beyond the in-flight bound wait for room', async () => {
  const { vfs, active } = slowFs(() => 30);
  const wb = new WriteBehindVfs(vfs, 64 * 1024);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  let most = 0;
  for (let i = 0; i < 8; i++) {
    await wb.write(ctx, f.entry.nodeid, f.fh, i * 32768, Buffer.alloc(32768, i));
    most = Math.max(most, active());
  }
  assert.ok(most <= 2, `at most 64 KiB in flight, saw ${most} writes of 32 KiB`);
  assert.ok(wb.stats().waitedForRoom > 0);
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal((await wb.getattr(ctx, f.entry.nodeid)).size, 8 * 32768);
});

test('a failed write is reported by the next flush, once, and by nothing else', async () => {
  // The second write does not follow the first (so is not gathered with it), and fails.
  const { vfs } = slowFs(() => 5, (off) => (off === 8192 ? new FsError(Errno.ENOSPC) : undefined));
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  await wb.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.alloc(4096, 1));
  await wb.write(ctx, f.entry.nodeid, f.fh, 8192, Buffer.alloc(4096, 2));
  await assert.rejects(wb.flush(ctx, f.entry.nodeid, f.fh), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOSPC);
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal((await wb.getattr(ctx, f.entry.nodeid)).size, 4096, 'the failed write is not there');
  // fsync reports it too.
  await wb.write(ctx, f.entry.nodeid, f.fh, 8192, Buffer.alloc(10));
  await assert.rejects(wb.fsync(ctx, f.entry.nodeid, f.fh, false), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOSPC);
});

test('flush of an unwritten handle costs no call', async () => {
  const { vfs, calls } = slowFs(() => 1);
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal(calls.get('flush') ?? 0, 0);
  await wb.write(ctx, f.entry.nodeid, f.fh, 0, Buffer.from('x'));
  await wb.flush(ctx, f.entry.nodeid, f.fh);
  assert.equal(calls.get('write'), 1, 'the write reached the source before flush returned');
});

test('an attribute change answered here and refused by the source is reported at close', async () => {
  const mem = new MemoryFs();
  let refuse = false;
  const vfs = new Proxy(mem, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver) as unknown;
      if (typeof v !== 'function') return v;
      if (prop !== 'setattr') return (v as (...a: unknown[]) => unknown).bind(target);
      return async (...args: unknown[]) => {
        await sleep(20);
        if (refuse) throw new FsError(Errno.EIO, 'disk gone');
        return (v as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  }) as Vfs;
  const wb = new WriteBehindVfs(vfs);
  const events: string[] = [];
  wb.watch((ev) => { if (ev.kind === 'inode') events.push(`${ev.nodeid}:${ev.attrsOnly ? 'attrs' : 'all'}`); });
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const id = f.entry.nodeid;
  refuse = true;
  const t0 = Date.now();
  const a = await wb.setattr(ctx, id, { mode: 0o600 });
  assert.ok(Date.now() - t0 < 15, 'answered before the source');
  assert.equal(a.mode, S_IFREG | 0o600);
  await assert.rejects(wb.flush(ctx, id, f.fh), (e: unknown) => e instanceof FsError && e.errno === Errno.EIO);
  assert.deepEqual(events, [`${id}:attrs`], 'the kernel is told to drop what it was answered');
  assert.equal((await mem.getattr(ctx, id)).mode, S_IFREG | 0o644, 'the source kept its mode');
  // Once refused, the file is no longer guessed: the next change waits for the source's answer.
  await assert.rejects(wb.setattr(ctx, id, { mode: 0o640 }), (e: unknown) => e instanceof FsError && e.errno === Errno.EIO);
  refuse = false;
  assert.equal((await wb.setattr(ctx, id, { mode: 0o640 })).mode, S_IFREG | 0o640);
  await wb.release(ctx, id, f.fh);
});

test('an attribute change is guessed only where the server has no choice', () => {
  const t = { sec: 5, nsec: 0 };
  const file = (uid: number, gid: number, mode: number): Attr => ({
    ino: 9, size: 3, blocks: 8, atime: t, mtime: t, ctime: t, mode: S_IFREG | mode, nlink: 1, uid, gid, rdev: 0, blksize: 4096,
  });
  const user: Ctx = { uid: 1000, gid: 100, pid: 1 };
  const mine = file(1000, 100, 0o644);
  // The owner's chmod, utimes and chgrp to its own group.
  assert.equal(predictSetattr(user, mine, { mode: 0o600 }, false)?.mode, S_IFREG | 0o600);
  assert.deepEqual(predictSetattr(user, mine, { mtime: { sec: 7, nsec: 9 } }, false)?.mtime, { sec: 7, nsec: 9 });
  assert.equal(predictSetattr(user, mine, { gid: 100 }, false)?.gid, 100);
  // Not for a group it may not be in, another owner, a set-ID bit, a size, a directory.
  assert.equal(predictSetattr(user, mine, { gid: 200 }, false), undefined);
  assert.equal(predictSetattr(user, mine, { uid: 0 }, false), undefined);
  assert.equal(predictSetattr(user, file(1001, 100, 0o644), { mode: 0o600 }, false), undefined);
  assert.equal(predictSetattr(user, mine, { mode: 0o2755 }, false), undefined);
  assert.equal(predictSetattr(user, mine, { size: 0 }, false), undefined);
  assert.equal(predictSetattr(user, { ...mine, mode: S_IFDIR | 0o755 }, { mode: 0o700 }, false), undefined);
  // Root: anything on a file, when the server showed it does not squash root; but a chown of a
  // set-ID file (the kernel clears the bits) is left to the server.
  assert.equal(predictSetattr(ctx, mine, { uid: 5, gid: 6 }, true)?.uid, 5);
  assert.equal(predictSetattr(ctx, mine, { uid: 5 }, false), undefined);
  assert.equal(predictSetattr(ctx, file(1000, 100, 0o4755), { uid: 5 }, true), undefined);
});

test('small writes that follow each other go as one WRITE, in order with what is not gathered', async () => {
  const { vfs, mem, calls } = slowFs(() => 5);
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const id = f.entry.nodeid;
  // tar's pattern: records of 10 KiB, which the kernel splits at page boundaries.
  const data = Buffer.alloc(30000);
  for (let i = 0; i < data.length; i++) data[i] = (i * 7) % 251;
  for (const [off, end] of [[0, 4096], [4096, 10240], [10240, 12288], [12288, 20480], [20480, 30000]] as const) {
    await wb.write(ctx, id, f.fh, off, data.subarray(off, end));
  }
  // A write elsewhere sends what was gathered first; one overlapping it lands after it.
  await wb.write(ctx, id, f.fh, 2, Buffer.from('XY'));
  await wb.flush(ctx, id, f.fh);
  assert.equal(calls.get('write'), 2, 'five writes went as one, then the one elsewhere');
  assert.equal(wb.stats().writesGathered, 4);
  const want = Buffer.from(data);
  want.write('XY', 2);
  assert.deepEqual(await mem.read(ctx, id, f.fh, 0, 40000), want);
  await wb.release(ctx, id, f.fh);
});

test('gathered writes go out on their own after a pause, and their failure is reported at flush', async () => {
  const { vfs, mem, calls } = slowFs(() => 1, (off) => (off === 100 ? new FsError(Errno.ENOSPC) : undefined));
  const wb = new WriteBehindVfs(vfs);
  const f = await wb.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const id = f.entry.nodeid;
  await wb.write(ctx, id, f.fh, 0, Buffer.from('abc'));
  await wb.write(ctx, id, f.fh, 3, Buffer.from('def'));
  assert.equal(calls.get('write') ?? 0, 0, 'held for more');
  await sleep(60);
  assert.equal(calls.get('write'), 1, 'sent by the timer');
  assert.equal((await mem.read(ctx, id, f.fh, 0, 10)).toString(), 'abcdef', 'the source has them without a flush');
  // Another handle's read of the file waits for gathered writes.
  await wb.write(ctx, id, f.fh, 6, Buffer.from('gh'));
  assert.equal((await wb.read(ctx, id, f.fh, 0, 10)).toString(), 'abcdefgh');
  await wb.write(ctx, id, f.fh, 100, Buffer.from('x'));
  await wb.write(ctx, id, f.fh, 101, Buffer.from('y'));
  await assert.rejects(wb.flush(ctx, id, f.fh), (e: unknown) => e instanceof FsError && e.errno === Errno.ENOSPC);
  await wb.flush(ctx, id, f.fh);
  await wb.release(ctx, id, f.fh);
});
