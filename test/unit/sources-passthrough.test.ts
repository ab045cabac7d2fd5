// PassthroughFs specifics beyond the shared POSIX table: inode numbers across several devices (two
// tmpfs mounted inside the export, both with root inode 1), exporting /proc (size 0 but data, so
// direct I/O), the bound on open fds, read-only exports and the one-line errors of open().

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FsError, Errno } from '../../src/lib/errno.js';
import { HostFile } from '../../src/sources/hostfs.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { O_APPEND, O_RDONLY, O_RDWR, ROOT_ID, S_IFLNK, S_IFMT, S_IFREG, type Ctx, type Vfs } from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
const isRoot = process.getuid?.() === 0;

async function openFdCount(): Promise<number> {
  return (await fsp.readdir('/proc/self/fd')).length;
}

async function allInos(vfs: Vfs, dir: number, out: Map<number, string>, where: string): Promise<void> {
  const o = await vfs.opendir(ctx, dir);
  const list = await vfs.readdir(ctx, dir, o.fh, 0, 1000, true);
  await vfs.releasedir(ctx, dir, o.fh);
  for (const e of list) {
    if (!e.entry) continue;
    const prev = out.get(e.entry.attr.ino);
    assert.ok(prev === undefined, `st_ino ${e.entry.attr.ino} shown for both ${prev} and ${where}/${e.name}`);
    out.set(e.entry.attr.ino, `${where}/${e.name}`);
    assert.equal(e.ino, e.entry.attr.ino, 'd_ino agrees with st_ino');
    if (e.entry.attr.mode >> 12 === 4) await allInos(vfs, e.entry.nodeid, out, `${where}/${e.name}`);
  }
}

void describe('PassthroughFs across devices', { skip: isRoot ? false : 'needs root to mount tmpfs' }, () => {
  let top = '';
  const mounted: string[] = [];
  before(async () => {
    top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-dev-'));
    for (const name of ['a', 'b']) {
      const mp = path.join(top, name);
      await fsp.mkdir(mp);
      await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mp], { timeout: 10000 });
      mounted.push(mp);
      await fsp.writeFile(path.join(mp, 'file'), name);
      await fsp.mkdir(path.join(mp, 'dir'));
      await fsp.writeFile(path.join(mp, 'dir', 'inner'), name);
    }
    await fsp.writeFile(path.join(top, 'onroot'), 'root');
  });
  after(async () => {
    for (const mp of mounted) {
      await run('umount', [mp], { timeout: 10000 }).catch(() => run('umount', ['-l', mp], { timeout: 10000 }));
    }
    await fsp.rm(top, { recursive: true, force: true });
  });

  void it('shows unique inode numbers over two tmpfs with the same raw numbers', async () => {
    const vfs = await PassthroughFs.open(top);
    try {
      const inos = new Map<number, string>();
      inos.set((await vfs.getattr(ctx, ROOT_ID)).ino, '.');
      await allInos(vfs, ROOT_ID, inos, '.');
      assert.ok(inos.size >= 8);
      const a = await vfs.lookup(ctx, ROOT_ID, 'a');
      const b = await vfs.lookup(ctx, ROOT_ID, 'b');
      assert.notEqual(a.attr.ino, b.attr.ino);
      assert.notEqual(a.nodeid, b.nodeid);
      // The root's own device keeps its numbers as they are.
      const raw = await fsp.stat(path.join(top, 'onroot'));
      assert.equal((await vfs.lookup(ctx, ROOT_ID, 'onroot')).attr.ino, raw.ino);
      // Moving between devices is refused as rename(2) does.
      const f = await vfs.lookup(ctx, a.nodeid, 'file');
      assert.equal(f.attr.mode & S_IFMT, S_IFREG);
      await rejectsWith(vfs.rename(ctx, a.nodeid, 'file', b.nodeid, 'moved', 0), 'EXDEV');
    } finally {
      await vfs.close();
    }
  });
});

void describe('PassthroughFs exporting /proc', () => {
  void it('reads pseudo files whose size is 0, with direct I/O', async () => {
    const vfs = await PassthroughFs.open('/proc', { readOnly: true });
    try {
      assert.equal(vfs.info().type, 'proc');
      const self = await vfs.lookup(ctx, ROOT_ID, 'self');
      assert.equal(self.attr.mode & S_IFMT, S_IFLNK);
      const pid = await vfs.readlink(ctx, self.nodeid);
      assert.equal(pid, String(process.pid));
      const dir = await vfs.lookup(ctx, ROOT_ID, pid);
      const status = await vfs.lookup(ctx, dir.nodeid, 'status');
      assert.equal(status.attr.size, 0);
      const o = await vfs.open(ctx, status.nodeid, O_RDONLY);
      assert.equal(o.directIo, true);
      const text = (await vfs.read(ctx, status.nodeid, o.fh, 0, 65536)).toString();
      assert.match(text, /^Name:\s+\S+/m);
      assert.match(text, new RegExp(`^Pid:\\s+${process.pid}$`, 'm'));
      await vfs.release(ctx, status.nodeid, o.fh);
      await rejectsWith(vfs.open(ctx, status.nodeid, O_RDWR), 'EROFS');
    } finally {
      await vfs.close();
    }
  });
});

void describe('PassthroughFs fd bound', () => {
  let top = '';
  before(async () => {
    top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-fd-'));
  });
  after(async () => {
    await fsp.rm(top, { recursive: true, force: true });
  });

  void it('keeps at most maxFds descriptors open and reopens evicted files', async () => {
    const maxFds = 8;
    const vfs = new PassthroughFs(top, { maxFds });
    try {
      // The source keeps one fd for its root (confine.ts), opened by the first call: not a file's.
      await vfs.getattr(ctx, ROOT_ID);
      const base = await openFdCount();
      const files: Array<{ id: number; fh: number }> = [];
      for (let i = 0; i < 40; i++) {
        const c = await vfs.create(ctx, ROOT_ID, `f${i}`, S_IFREG | 0o644, O_RDWR);
        files.push({ id: c.entry.nodeid, fh: c.fh });
        await vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.from(`content ${i}`));
        assert.ok((await openFdCount()) - base <= maxFds, 'over the bound while creating');
      }
      // Interleaved use, in an order unlike the LRU's, touches evicted handles again.
      for (let round = 0; round < 3; round++) {
        await Promise.all(files.map(async (_, i) => {
          const j = (i * 7 + round) % files.length;
          const other = files[j]!;
          const got = (await vfs.read(ctx, other.id, other.fh, 0, 100)).toString();
          assert.equal(got, `content ${j}`);
        }));
        assert.ok((await openFdCount()) - base <= maxFds, 'over the bound while reading');
      }
      for (const { id, fh } of files) await vfs.release(ctx, id, fh);
      assert.equal(await openFdCount(), base);
    } finally {
      await vfs.close();
    }
  });

  void it('fails with EMFILE rather than evict an unlinked open file', async () => {
    const vfs = new PassthroughFs(top, { maxFds: 2 });
    try {
      const held = [];
      for (const name of ['u1', 'u2']) {
        const c = await vfs.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR);
        await vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.from(name));
        await vfs.unlink(ctx, ROOT_ID, name);
        held.push(c);
      }
      await rejectsWith(vfs.create(ctx, ROOT_ID, 'u3', S_IFREG | 0o644, O_RDWR), 'EMFILE');
      for (const c of held) {
        assert.equal((await vfs.read(ctx, c.entry.nodeid, c.fh, 0, 10)).length, 2);
        await vfs.release(ctx, c.entry.nodeid, c.fh);
      }
    } finally {
      await vfs.close();
    }
  });
});

void describe('PassthroughFs big writes', () => {
  void it('runs big writes of one file one behind the other, in the order they came, gathering those that follow each other', async () => {
    const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-bigw-'));
    const vfs = new PassthroughFs(top);
    // Counts the host writes under way at once (what the rule is about: one file's lock, held by
    // one writer at a time, is not spun on by the others), and the buffers of each.
    const original = { write: HostFile.prototype.write, writev: HostFile.prototype.writev };
    let running = 0;
    let most = 0;
    const calls: number[] = [];
    const counted = <A extends unknown[], R>(fn: (this: HostFile, ...a: A) => Promise<R>, buffers: (...a: A) => number) =>
      async function (this: HostFile, ...args: A): Promise<R> {
        running++;
        most = Math.max(most, running);
        calls.push(buffers(...args));
        try {
          return await fn.apply(this, args);
        } finally {
          running--;
        }
      };
    HostFile.prototype.write = counted(original.write, () => 1);
    HostFile.prototype.writev = counted(original.writev, (bufs: Buffer[]) => bufs.length);
    try {
      const c = await vfs.create(ctx, ROOT_ID, 'big', S_IFREG | 0o644, O_RDWR);
      const size = 512 * 1024;
      // Each overwrites the whole range: only the last one's bytes may be left, and each one's
      // byte count comes back whole. Run side by side on the pool, any could land last.
      const fills = ['a', 'b', 'c', 'd', 'e', 'f', 'g', 'h'];
      const counts = await Promise.all(fills.map((ch) => vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.alloc(size, ch))));
      assert.deepEqual(counts, fills.map(() => size));
      const got = await fsp.readFile(path.join(top, 'big'));
      assert.equal(got.length, size);
      assert.ok(got.equals(Buffer.alloc(size, 'h')), `expected the last write's bytes, found ${JSON.stringify(got.subarray(0, 1).toString())}...`);
      assert.equal(calls.length, fills.length, 'overlapping writes go one by one');
      // Writes that follow each other, sent together: all arrive, each with its own count, in
      // fewer host calls than writes (the first goes alone, the others queue behind it).
      calls.length = 0;
      const parts = [1, 2, 3, 4, 5, 6];
      const wrote = await Promise.all(parts.map((i) => vfs.write(ctx, c.entry.nodeid, c.fh, i * size, Buffer.alloc(size, String(i)))));
      assert.deepEqual(wrote, parts.map(() => size));
      const all = await fsp.readFile(path.join(top, 'big'));
      for (const i of parts) assert.ok(all.subarray(i * size, (i + 1) * size).equals(Buffer.alloc(size, String(i))), `part ${i}`);
      assert.equal(calls.reduce((a, b) => a + b, 0), parts.length, 'every buffer written once');
      assert.ok(calls.length < parts.length, `${parts.length} writes in ${calls.length} host calls`);
      await vfs.release(ctx, c.entry.nodeid, c.fh);
      assert.equal(most, 1, 'host writes of one file at once');
    } finally {
      HostFile.prototype.write = original.write;
      HostFile.prototype.writev = original.writev;
      await vfs.close();
      await fsp.rm(top, { recursive: true, force: true });
    }
  });

  void it('writes big appends one by one, each at the end', async () => {
    const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-bigw-'));
    const vfs = new PassthroughFs(top);
    try {
      const c = await vfs.create(ctx, ROOT_ID, 'log', S_IFREG | 0o644, O_RDWR | O_APPEND);
      const size = 256 * 1024;
      // Offsets mean nothing on an O_APPEND handle: all land at the end, in the order sent.
      const wrote = await Promise.all([1, 2, 3].map((i) => vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.alloc(size, String(i)))));
      assert.deepEqual(wrote, [size, size, size]);
      await vfs.release(ctx, c.entry.nodeid, c.fh);
      const all = await fsp.readFile(path.join(top, 'log'));
      assert.equal(all.length, 3 * size);
      for (const i of [1, 2, 3]) assert.ok(all.subarray((i - 1) * size, i * size).equals(Buffer.alloc(size, String(i))), `append ${i}`);
    } finally {
      await vfs.close();
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});

/**
 * The page cache state of a host file from cachestat(2) (Linux 6.5), through python's ctypes:
 * pages cached and dirty; undefined where the kernel has no cachestat.
 */
async function cacheState(file: string): Promise<{ cached: number; dirty: number } | undefined> {
  const script = [
    'import ctypes, os, struct, sys',
    'libc = ctypes.CDLL(None, use_errno=True)',
    'fd = os.open(sys.argv[1], os.O_RDONLY)',
    'out = ctypes.create_string_buffer(48)',
    'r = libc.syscall(451, fd, ctypes.c_char_p(struct.pack("QQ", 0, 0)), out, 0)',
    'print("none" if r != 0 else " ".join(map(str, struct.unpack("6Q", out.raw)[:2])))',
  ].join('\n');
  const { stdout } = await run('python3', ['-c', script, file]);
  if (stdout.trim() === 'none') return undefined;
  const [cached, dirty] = stdout.trim().split(' ').map(Number);
  return { cached: cached!, dirty: dirty! };
}

void describe('PassthroughFs streaming writes', () => {
  void it('starts writeback of a file written in big writes one after the other, not of one written out of order', async (t) => {
    const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-stream-'));
    const vfs = new PassthroughFs(top);
    try {
      const mib = 1 << 20;
      const pages = (24 * mib) / 4096;
      // The file stays open while it is looked at: a start chained behind one still running has
      // the handle's fd to do it with (once the file is closed, the host's flusher has the rest).
      const write = async (name: string, order: number[]): Promise<() => Promise<void>> => {
        const c = await vfs.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR);
        for (const i of order) assert.equal(await vfs.write(ctx, c.entry.nodeid, c.fh, i * mib, Buffer.alloc(mib, i)), mib);
        return () => vfs.release(ctx, c.entry.nodeid, c.fh);
      };
      const inOrder = [...Array(24).keys()];
      await (await write('shuffled', inOrder.map((i) => (i * 7) % 24)))();
      const before = await cacheState(path.join(top, 'shuffled'));
      if (!before) {
        t.skip('no cachestat(2) in this kernel');
        return;
      }
      // Out of order: nothing started it (the host's own flusher waits far longer than this test).
      assert.ok(before.dirty > pages * 0.9, `shuffled file: ${JSON.stringify(before)} of ${pages} pages`);
      const close = await write('stream', inOrder);
      // Writeback is started behind the writes (on the pool): give the last start a moment.
      let after = await cacheState(path.join(top, 'stream'));
      for (let i = 0; i < 50 && after!.dirty > pages / 4; i++) {
        await new Promise((r) => setTimeout(r, 100));
        after = await cacheState(path.join(top, 'stream'));
      }
      await close();
      assert.ok(after!.dirty <= pages / 4, `streamed file: ${JSON.stringify(after)} of ${pages} pages still dirty`);
      assert.ok((await fsp.readFile(path.join(top, 'stream'))).subarray(23 * mib).equals(Buffer.alloc(mib, 23)));
    } finally {
      await vfs.close();
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});

void describe('PassthroughFs.open and read-only exports', () => {
  void it('refuses a missing path or a file with one line', async () => {
    await assert.rejects(PassthroughFs.open('/nonexistent/wirefs'), (err: unknown) => {
      assert.ok(err instanceof FsError);
      assert.equal(err.errno, Errno.ENOENT);
      assert.doesNotMatch(err.message, /\n/);
      assert.match(err.message, /nonexistent/);
      return true;
    });
    await assert.rejects(PassthroughFs.open('/etc/hostname'), (err: unknown) => err instanceof FsError && err.errno === Errno.ENOTDIR);
  });

  void it('refuses every change when read-only', async () => {
    const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-ro-'));
    await fsp.writeFile(path.join(top, 'f'), 'x');
    const vfs = await PassthroughFs.open(top, { readOnly: true });
    try {
      assert.equal(vfs.info().readOnly, true);
      const f = await vfs.lookup(ctx, ROOT_ID, 'f');
      await rejectsWith(vfs.create(ctx, ROOT_ID, 'g', S_IFREG | 0o644, O_RDWR), 'EROFS');
      await rejectsWith(vfs.mkdir(ctx, ROOT_ID, 'd', 0o755), 'EROFS');
      await rejectsWith(vfs.unlink(ctx, ROOT_ID, 'f'), 'EROFS');
      await rejectsWith(vfs.setattr(ctx, f.nodeid, { size: 0 }), 'EROFS');
      await rejectsWith(vfs.setxattr(ctx, f.nodeid, 'user.a', Buffer.from('1'), 0), 'EROFS');
      await rejectsWith(vfs.access(ctx, f.nodeid, 2), 'EROFS');
      const o = await vfs.open(ctx, f.nodeid, O_RDONLY);
      assert.equal((await vfs.read(ctx, f.nodeid, o.fh, 0, 10)).toString(), 'x');
      await vfs.release(ctx, f.nodeid, o.fh);
    } finally {
      await vfs.close();
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});

void describe('PassthroughFs listings', () => {
  const names = (list: { name: string }[]): string[] => list.map((e) => e.name).sort();

  void it('lists each name with its own attributes, skips names gone since opendir, and a rewind sees the directory anew', async () => {
    const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-list-'));
    const vfs = await PassthroughFs.open(top);
    try {
      await fsp.mkdir(path.join(top, 'd'));
      for (let i = 0; i < 50; i++) await fsp.writeFile(path.join(top, 'd', `f${i}`), 'x'.repeat(i));
      await fsp.symlink('/etc/hostname', path.join(top, 'd', 'link'));
      const d = await vfs.lookup(ctx, ROOT_ID, 'd');
      const o = await vfs.opendir(ctx, d.nodeid);
      await fsp.unlink(path.join(top, 'd', 'f7'));
      const first = await vfs.readdir(ctx, d.nodeid, o.fh, 0, 1000, true);
      const want = ['.', '..', 'link', ...Array.from({ length: 50 }, (_, i) => `f${i}`).filter((n) => n !== 'f7')].sort();
      assert.deepEqual(names(first), want, 'a name removed after opendir is skipped, not an error');
      for (const e of first) {
        if (!e.name.startsWith('f')) continue;
        assert.equal(e.entry?.attr.size, Number(e.name.slice(1)), `${e.name}: its own size`);
        assert.equal((e.entry!.attr.mode & S_IFMT), S_IFREG);
      }
      const link = first.find((e) => e.name === 'link')!;
      assert.equal(link.entry!.attr.mode & S_IFMT, S_IFLNK, 'a symlink is listed as itself, not followed');
      // From offset 1, '..' and then the names, each still with its own attributes.
      const fromOne = await vfs.readdir(ctx, d.nodeid, o.fh, 1, 1000, true);
      assert.equal(fromOne[0]?.name, '..');
      for (const e of fromOne.slice(1)) if (e.name.startsWith('f')) assert.equal(e.entry?.attr.size, Number(e.name.slice(1)), `${e.name} from offset 1`);
      // Read on from an offset, then rewind: the rewind lists what is there now.
      const rest = await vfs.readdir(ctx, d.nodeid, o.fh, 10, 1000, false);
      assert.equal(rest.length, first.length - 10);
      await fsp.writeFile(path.join(top, 'd', 'new'), '');
      const again = await vfs.readdir(ctx, d.nodeid, o.fh, 0, 1000, true);
      assert.ok(names(again).includes('new'), 'a rewind shows a name made since');
      await vfs.releasedir(ctx, d.nodeid, o.fh);
      // A directory removed under an open handle lists nothing of its old names.
      const o2 = await vfs.opendir(ctx, d.nodeid);
      await fsp.rm(path.join(top, 'd'), { recursive: true });
      const gone = await vfs.readdir(ctx, d.nodeid, o2.fh, 2, 1000, true);
      assert.deepEqual(gone.filter((e) => e.name !== '.' && e.name !== '..'), []);
      await vfs.releasedir(ctx, d.nodeid, o2.fh);
    } finally {
      await vfs.close();
      await fsp.rm(top, { recursive: true, force: true });
    }
  });
});
