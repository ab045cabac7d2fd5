// The native addon (native/wirefs_sys.c) through src/lib/sys.ts: errors shaped like Node's, the
// calls Node lacks doing what their man pages say, and bad arguments refused without a crash.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { toErrno, Errno } from '../../src/lib/errno.js';
import { nativeSys, splitXattrList, sysLoadError, type Sys } from '../../src/lib/sys.js';

void describe('native sys addon', () => {
  let dir = '';
  let sys: Sys;
  before(async () => {
    const s = nativeSys();
    assert.ok(s, `addon not loaded: ${sysLoadError()}`);
    sys = s;
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-sys-'));
  });
  after(async () => {
    await fsp.rm(dir, { recursive: true, force: true });
  });

  void it('rejects with code and positive errno that toErrno maps', async () => {
    await assert.rejects(sys.lgetxattr(path.join(dir, 'missing'), 'user.x'), (err: unknown) => {
      const e = err as { code?: string; errno?: number; syscall?: string };
      assert.equal(e.code, 'ENOENT');
      assert.equal(e.errno, Errno.ENOENT);
      assert.equal(e.syscall, 'lgetxattr');
      assert.equal(toErrno(err), Errno.ENOENT);
      return true;
    });
  });

  void it('renameat2 NOREPLACE and EXCHANGE', async () => {
    const a = path.join(dir, 'a');
    const b = path.join(dir, 'b');
    await fsp.writeFile(a, 'A');
    await fsp.writeFile(b, 'B');
    await assert.rejects(sys.renameat2(a, b, 1), { code: 'EEXIST' });
    await sys.renameat2(a, b, 2);
    assert.equal(await fsp.readFile(a, 'utf8'), 'B');
    assert.equal(await fsp.readFile(b, 'utf8'), 'A');
  });

  void it('mknod makes a fifo', async () => {
    const p = path.join(dir, 'fifo');
    await sys.mknod(p, 0o010644, 0);
    assert.ok((await fsp.lstat(p)).isFIFO());
  });

  void it('xattrs round trip', async () => {
    const p = path.join(dir, 'x');
    await fsp.writeFile(p, '');
    await sys.lsetxattr(p, 'user.k', Buffer.from('v'), 0);
    assert.equal((await sys.lgetxattr(p, 'user.k')).toString(), 'v');
    assert.deepEqual(splitXattrList(await sys.llistxattr(p)).filter((n) => n.startsWith('user.')), ['user.k']);
    const fh = await fsp.open(p, 'r');
    try {
      assert.equal((await sys.fgetxattr(fh.fd, 'user.k')).toString(), 'v');
      await sys.fremovexattr(fh.fd, 'user.k');
    } finally {
      await fh.close();
    }
    await assert.rejects(sys.lgetxattr(p, 'user.k'), { code: 'ENODATA' });
  });

  void it('utimensat with nanoseconds, UTIME_OMIT and UTIME_NOW', async () => {
    const p = path.join(dir, 't');
    await fsp.writeFile(p, '');
    await sys.utimensat(p, 100, 123456789, 200, 987654321, true);
    let st = await fsp.stat(p, { bigint: true });
    assert.equal(st.atimeNs, 100_123_456_789n);
    assert.equal(st.mtimeNs, 200_987_654_321n);
    await sys.utimensat(p, 0, sys.UTIME_OMIT, 0, sys.UTIME_NOW, true);
    st = await fsp.stat(p, { bigint: true });
    assert.equal(st.atimeNs, 100_123_456_789n);
    assert.ok(st.mtimeNs > 1_600_000_000n * 1_000_000_000n);
  });

  void it('fallocate and lseek SEEK_HOLE', async () => {
    const p = path.join(dir, 'f');
    const fh = await fsp.open(p, 'w+');
    try {
      await sys.fallocate(fh.fd, 0, 0, 8192);
      assert.equal((await fh.stat()).size, 8192);
      await sys.fallocate(fh.fd, 3, 0, 4096);
      assert.equal(await sys.lseek(fh.fd, 0, 4), 0);
      await assert.rejects(sys.lseek(fh.fd, 1 << 20, 3), { code: 'ENXIO' });
    } finally {
      await fh.close();
    }
  });

  void it('preadNowaitSync reads what the page cache holds, and says so when it cannot', async () => {
    const file = path.join(dir, 'cached');
    await fsp.writeFile(file, 'page cache bytes');
    const f = await fsp.open(file, 'r');
    try {
      const buf = Buffer.alloc(32, 0x2e);
      // Just written: in the page cache (this test's directory is on a disk file system or tmpfs).
      const n = sys.preadNowaitSync(f.fd, buf, 4, 10, 5);
      if (n === -Errno.EOPNOTSUPP) return; // a file system without RWF_NOWAIT (tmpfs): the caller falls back
      assert.equal(n, 10);
      assert.equal(buf.toString('latin1', 0, 16), '....cache byte..');
      assert.equal(sys.preadNowaitSync(f.fd, buf, 0, 8, 1 << 20), 0, 'end of file');
      assert.equal(sys.preadNowaitSync(-1, buf, 0, 8, 0), -Errno.EBADF);
      assert.throws(() => sys.preadNowaitSync(f.fd, buf, 30, 8, 0), RangeError, 'beyond the buffer');
    } finally {
      await f.close();
    }
  });

  void it('futimensSync sets both times to the nanosecond, keeps an omitted one, and throws like fs', async () => {
    const file = path.join(dir, 'times');
    await fsp.writeFile(file, 'x');
    const f = await fsp.open(file, 'r');
    try {
      sys.futimensSync(f.fd, 1_000_000_000, 123_456_789, 1_100_000_000, 987_654_321);
      let st = await fsp.stat(file, { bigint: true });
      assert.equal(st.atimeNs, 1_000_000_000_123_456_789n);
      assert.equal(st.mtimeNs, 1_100_000_000_987_654_321n);
      sys.futimensSync(f.fd, 0, sys.UTIME_OMIT, 5, 0);
      st = await fsp.stat(file, { bigint: true });
      assert.equal(st.atimeNs, 1_000_000_000_123_456_789n, 'atime kept');
      assert.equal(st.mtimeNs, 5_000_000_000n);
      assert.throws(() => sys.futimensSync(-1, 0, 0, 0, 0), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
    } finally {
      await f.close();
    }
  });

  void it('pwriteIdle writes from the Buffer at the position, and fails like fs', async () => {
    const file = path.join(dir, 'idle');
    const f = await fsp.open(file, 'w+');
    try {
      const data = Buffer.from('0123456789abcdef');
      assert.equal(await sys.pwriteIdle(f.fd, data, 10, 4096), 10);
      const back = await fsp.readFile(file);
      assert.equal(back.length, 4106);
      assert.equal(back.toString('latin1', 4096), '0123456789');
      await assert.rejects(sys.pwriteIdle(-1, data, 4, 0), (e: NodeJS.ErrnoException) => e.code === 'EBADF');
      assert.throws(() => void sys.pwriteIdle(f.fd, data, 17, 0), RangeError, 'beyond the buffer');
      // The pool thread is back to its own policy: ordinary writes still run (and finish).
      await fsp.writeFile(path.join(dir, 'after'), 'x');
    } finally {
      await f.close();
    }
  });

  void it('throws TypeError on bad arguments instead of crashing', () => {
    const loose = sys as unknown as Record<string, (...args: unknown[]) => unknown>;
    assert.throws(() => loose['mknod']!(1, 2, 3), TypeError);
    assert.throws(() => loose['renameat2']!('a'), TypeError);
    assert.throws(() => loose['lseek']!(1.5, 0, 3), TypeError);
    assert.throws(() => loose['lsetxattr']!('a', 'b', 'not a buffer', 0), TypeError);
    assert.throws(() => loose['lgetxattr']!('a\0b', 'user.x'), TypeError);
  });
});
