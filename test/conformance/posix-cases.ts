// One table of POSIX cases run against any Vfs (MemoryFs, PassthroughFs, and later the remote client
// or a union). Each case makes its own scratch directory under the root, so cases are independent
// and may run in any order against one file system. Expected errnos are Linux's.

import assert from 'node:assert/strict';
import { Errno, FsError, type ErrnoName } from '../../src/lib/errno.js';
import {
  O_APPEND, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID, SEEK_DATA, SEEK_HOLE,
  S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, XATTR_CREATE, XATTR_REPLACE, type Ctx, type DirEntry, type Entry, type Vfs,
} from '../../src/vfs/types.js';

/**
 * What a case needs beyond plain files and directories. A source that lacks one (FAT: fixed owner
 * and mode, 2-second times, no links or xattrs) skips those cases instead of faking them.
 */
export type Capability = 'owners' | 'modes' | 'nsTimes' | 'symlinks' | 'hardlinks' | 'specialFiles' | 'xattrs' | 'renameExchange' | 'punchHole';

export interface PosixCase {
  name: string;
  needs?: readonly Capability[];
  run(vfs: Vfs, ctx: Ctx): Promise<void>;
}

let scratchSeq = 0;

/** A fresh directory under the root for one case. */
async function scratch(vfs: Vfs, ctx: Ctx): Promise<number> {
  const e = await vfs.mkdir(ctx, ROOT_ID, `case-${process.pid}-${++scratchSeq}`, 0o755);
  return e.nodeid;
}

/** Asserts that p fails with the named errno. */
export async function rejectsWith(p: Promise<unknown>, name: ErrnoName): Promise<void> {
  await assert.rejects(p, (err: unknown) => {
    assert.ok(err instanceof FsError, `expected FsError(${name}), got ${String(err)}`);
    assert.equal(err.errno, Errno[name], `expected ${name}, got ${err.message}`);
    return true;
  });
}

async function mkfile(vfs: Vfs, ctx: Ctx, dir: number, name: string, content: string | Buffer = '', mode = 0o644): Promise<Entry> {
  const c = await vfs.create(ctx, dir, name, S_IFREG | mode, O_WRONLY);
  const data = typeof content === 'string' ? Buffer.from(content) : content;
  if (data.length) assert.equal(await vfs.write(ctx, c.entry.nodeid, c.fh, 0, data), data.length);
  await vfs.release(ctx, c.entry.nodeid, c.fh);
  return c.entry;
}

async function readAll(vfs: Vfs, ctx: Ctx, node: number): Promise<Buffer> {
  const o = await vfs.open(ctx, node, O_RDONLY);
  try {
    const parts: Buffer[] = [];
    for (let off = 0; ;) {
      const b = await vfs.read(ctx, node, o.fh, off, 65536);
      if (b.length === 0) break;
      parts.push(Buffer.from(b));
      off += b.length;
    }
    return Buffer.concat(parts);
  } finally {
    await vfs.release(ctx, node, o.fh);
  }
}

async function listNames(vfs: Vfs, ctx: Ctx, dir: number): Promise<string[]> {
  const o = await vfs.opendir(ctx, dir);
  const names: string[] = [];
  try {
    for (let off = 0; ;) {
      const batch = await vfs.readdir(ctx, dir, o.fh, off, 64, false);
      if (batch.length === 0) break;
      for (const e of batch) names.push(e.name);
      off = batch[batch.length - 1]!.off;
    }
  } finally {
    await vfs.releasedir(ctx, dir, o.fh);
  }
  return names.filter((n) => n !== '.' && n !== '..').sort();
}

const OLD = { sec: 1_000_000_000, nsec: 0 };

export const posixCases: PosixCase[] = [
  {
    name: 'create, write, read back, size',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const c = await vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR);
      assert.equal(c.entry.attr.mode & S_IFMT, S_IFREG);
      assert.equal(await vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.from('hello world')), 11);
      assert.equal((await vfs.read(ctx, c.entry.nodeid, c.fh, 6, 100)).toString(), 'world');
      assert.equal((await vfs.read(ctx, c.entry.nodeid, c.fh, 11, 100)).length, 0);
      assert.equal((await vfs.getattr(ctx, c.entry.nodeid, c.fh)).size, 11);
      await vfs.release(ctx, c.entry.nodeid, c.fh);
      const e = await vfs.lookup(ctx, d, 'f');
      assert.equal(e.nodeid, c.entry.nodeid);
      assert.equal(e.attr.ino, c.entry.attr.ino);
    },
  },
  {
    name: 'new nodes belong to the caller',
    needs: ['owners', 'symlinks', 'specialFiles'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const who = { ...ctx, uid: 1234, gid: 5678 };
      const es = [
        await mkfile(vfs, who, d, 'f'),
        await vfs.mkdir(who, d, 'd', 0o755),
        await vfs.symlink(who, d, 's', 'f'),
        await vfs.mknod(who, d, 'p', S_IFIFO | 0o644, 0),
      ];
      for (const e of es) {
        const a = await vfs.getattr(ctx, e.nodeid);
        assert.equal(a.uid, 1234);
        assert.equal(a.gid, 5678);
      }
    },
  },
  {
    name: 'create on an existing name is EEXIST',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      await mkfile(vfs, ctx, d, 'f');
      await rejectsWith(vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR), 'EEXIST');
      await rejectsWith(vfs.mkdir(ctx, d, 'f', 0o755), 'EEXIST');
      await rejectsWith(vfs.symlink(ctx, d, 'f', 'x'), 'EEXIST');
    },
  },
  {
    name: 'sparse write reads zeros in the hole',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const c = await vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR);
      const far = 3 * 1024 * 1024 + 5;
      await vfs.write(ctx, c.entry.nodeid, c.fh, far, Buffer.from('x'));
      assert.equal((await vfs.getattr(ctx, c.entry.nodeid)).size, far + 1);
      const mid = await vfs.read(ctx, c.entry.nodeid, c.fh, 1024 * 1024, 4096);
      assert.equal(mid.length, 4096);
      assert.ok(mid.every((b) => b === 0));
      assert.equal((await vfs.read(ctx, c.entry.nodeid, c.fh, far, 10)).toString(), 'x');
      await vfs.release(ctx, c.entry.nodeid, c.fh);
    },
  },
  {
    name: 'truncate shrinks and grows with zeros',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const e = await mkfile(vfs, ctx, d, 'f', 'abcdefghij');
      assert.equal((await vfs.setattr(ctx, e.nodeid, { size: 3 })).size, 3);
      assert.equal((await vfs.setattr(ctx, e.nodeid, { size: 6 })).size, 6);
      assert.deepEqual(await readAll(vfs, ctx, e.nodeid), Buffer.from('abc\0\0\0'));
      const dir = await vfs.mkdir(ctx, d, 'sub', 0o755);
      await rejectsWith(vfs.setattr(ctx, dir.nodeid, { size: 0 }), 'EISDIR');
    },
  },
  {
    name: 'O_TRUNC empties on open',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const e = await mkfile(vfs, ctx, d, 'f', 'content');
      const o = await vfs.open(ctx, e.nodeid, O_WRONLY | O_TRUNC);
      assert.equal((await vfs.getattr(ctx, e.nodeid)).size, 0);
      await vfs.release(ctx, e.nodeid, o.fh);
    },
  },
  {
    name: 'O_APPEND writes go at the end',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const e = await mkfile(vfs, ctx, d, 'f', 'one');
      const o = await vfs.open(ctx, e.nodeid, O_WRONLY | O_APPEND);
      await vfs.write(ctx, e.nodeid, o.fh, 0, Buffer.from('two'));
      await vfs.write(ctx, e.nodeid, o.fh, 1, Buffer.from('three'));
      await vfs.release(ctx, e.nodeid, o.fh);
      assert.equal((await readAll(vfs, ctx, e.nodeid)).toString(), 'onetwothree');
    },
  },
  {
    name: 'write updates mtime and ctime',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const e = await mkfile(vfs, ctx, d, 'f', 'a');
      await vfs.setattr(ctx, e.nodeid, { mtime: OLD, atime: OLD });
      const before = await vfs.getattr(ctx, e.nodeid);
      assert.deepEqual(before.mtime, OLD);
      const o = await vfs.open(ctx, e.nodeid, O_WRONLY);
      await vfs.write(ctx, e.nodeid, o.fh, 0, Buffer.from('b'));
      await vfs.release(ctx, e.nodeid, o.fh);
      const after = await vfs.getattr(ctx, e.nodeid);
      assert.ok(after.mtime.sec > OLD.sec);
      assert.ok(after.ctime.sec > OLD.sec);
    },
  },
  {
    name: 'setattr: mode, owner, nanosecond times, now',
    needs: ['modes', 'owners', 'nsTimes'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const e = await mkfile(vfs, ctx, d, 'f');
      let a = await vfs.setattr(ctx, e.nodeid, { mode: 0o4751 });
      assert.equal(a.mode, S_IFREG | 0o4751);
      a = await vfs.setattr(ctx, e.nodeid, { uid: 42, gid: 43 });
      assert.equal(a.uid, 42);
      assert.equal(a.gid, 43);
      a = await vfs.setattr(ctx, e.nodeid, { atime: { sec: 12345, nsec: 678901234 }, mtime: { sec: 23456, nsec: 789 } });
      assert.deepEqual(a.atime, { sec: 12345, nsec: 678901234 });
      assert.deepEqual(a.mtime, { sec: 23456, nsec: 789 });
      a = await vfs.setattr(ctx, e.nodeid, { mtime: 'now' });
      assert.deepEqual(a.atime, { sec: 12345, nsec: 678901234 }, 'an omitted time is kept');
      assert.ok(Math.abs(a.mtime.sec - Date.now() / 1000) < 60);
    },
  },
  {
    name: 'lookup: ENOENT, ENAMETOOLONG, 255-byte names, . and ..',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      await rejectsWith(vfs.lookup(ctx, d, 'missing'), 'ENOENT');
      await rejectsWith(vfs.lookup(ctx, d, 'x'.repeat(256)), 'ENAMETOOLONG');
      await rejectsWith(vfs.create(ctx, d, 'y'.repeat(256), S_IFREG | 0o644, O_RDWR), 'ENAMETOOLONG');
      await rejectsWith(vfs.mkdir(ctx, d, 'z'.repeat(256), 0o755), 'ENAMETOOLONG');
      const long = await mkfile(vfs, ctx, d, 'é'.repeat(127)); // 254 bytes
      assert.equal((await vfs.lookup(ctx, d, 'é'.repeat(127))).nodeid, long.nodeid);
      await mkfile(vfs, ctx, d, 'w'.repeat(255));
      const sub = await vfs.mkdir(ctx, d, 'sub', 0o755);
      const up = await vfs.lookup(ctx, sub.nodeid, '..');
      assert.equal(up.nodeid, d);
      vfs.forget(up.nodeid, 1);
    },
  },
  {
    name: 'mkdir and rmdir keep link counts',
    needs: ['modes'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      assert.equal((await vfs.getattr(ctx, d)).nlink, 2);
      const sub = await vfs.mkdir(ctx, d, 'sub', 0o750);
      assert.equal(sub.attr.mode, S_IFDIR | 0o750);
      assert.equal(sub.attr.nlink, 2);
      assert.equal((await vfs.getattr(ctx, d)).nlink, 3);
      await vfs.rmdir(ctx, d, 'sub');
      assert.equal((await vfs.getattr(ctx, d)).nlink, 2);
      await rejectsWith(vfs.lookup(ctx, d, 'sub'), 'ENOENT');
    },
  },
  {
    name: 'rmdir and unlink errors',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const sub = await vfs.mkdir(ctx, d, 'sub', 0o755);
      await mkfile(vfs, ctx, sub.nodeid, 'f');
      await mkfile(vfs, ctx, d, 'file');
      await rejectsWith(vfs.rmdir(ctx, d, 'sub'), 'ENOTEMPTY');
      await rejectsWith(vfs.rmdir(ctx, d, 'file'), 'ENOTDIR');
      await rejectsWith(vfs.unlink(ctx, d, 'sub'), 'EISDIR');
      await rejectsWith(vfs.unlink(ctx, d, 'missing'), 'ENOENT');
      await rejectsWith(vfs.rmdir(ctx, d, 'missing'), 'ENOENT');
    },
  },
  {
    name: 'rename a file, replacing a target',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const a = await mkfile(vfs, ctx, d, 'a', 'AAA');
      const b = await mkfile(vfs, ctx, d, 'b', 'BBB');
      await vfs.setattr(ctx, d, { mtime: OLD });
      await vfs.rename(ctx, d, 'a', d, 'b', 0);
      await rejectsWith(vfs.lookup(ctx, d, 'a'), 'ENOENT');
      const nb = await vfs.lookup(ctx, d, 'b');
      assert.equal(nb.nodeid, a.nodeid);
      assert.equal((await readAll(vfs, ctx, nb.nodeid)).toString(), 'AAA');
      assert.ok((await vfs.getattr(ctx, d)).mtime.sec > OLD.sec, 'the directory mtime changes');
      // The replaced node is still known (one lookup) but has no links: a source either still
      // sees the inode (nlink 0) or, holding nothing open on it, reports it gone.
      try {
        assert.equal((await vfs.getattr(ctx, b.nodeid)).nlink, 0);
      } catch (err) {
        assert.ok(err instanceof FsError && (err.errno === Errno.ENOENT || err.errno === Errno.ESTALE), String(err));
      }
      assert.deepEqual(await listNames(vfs, ctx, d), ['b']);
    },
  },
  {
    name: 'rename across directories, directory link counts',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const x = await vfs.mkdir(ctx, d, 'x', 0o755);
      const y = await vfs.mkdir(ctx, d, 'y', 0o755);
      const m = await vfs.mkdir(ctx, x.nodeid, 'm', 0o755);
      await mkfile(vfs, ctx, m.nodeid, 'inner', 'deep');
      await vfs.rename(ctx, x.nodeid, 'm', y.nodeid, 'moved', 0);
      assert.equal((await vfs.getattr(ctx, x.nodeid)).nlink, 2);
      assert.equal((await vfs.getattr(ctx, y.nodeid)).nlink, 3);
      const inner = await vfs.lookup(ctx, m.nodeid, 'inner');
      assert.equal((await readAll(vfs, ctx, inner.nodeid)).toString(), 'deep');
      const up = await vfs.lookup(ctx, m.nodeid, '..');
      assert.equal(up.nodeid, y.nodeid);
    },
  },
  {
    name: 'rename RENAME_NOREPLACE',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      await mkfile(vfs, ctx, d, 'a', 'A');
      await mkfile(vfs, ctx, d, 'b', 'B');
      await rejectsWith(vfs.rename(ctx, d, 'a', d, 'b', RENAME_NOREPLACE), 'EEXIST');
      await vfs.rename(ctx, d, 'a', d, 'c', RENAME_NOREPLACE);
      assert.deepEqual(await listNames(vfs, ctx, d), ['b', 'c']);
      await rejectsWith(vfs.rename(ctx, d, 'b', d, 'c', RENAME_NOREPLACE | RENAME_EXCHANGE), 'EINVAL');
    },
  },
  {
    name: 'rename RENAME_EXCHANGE swaps a file and a directory',
    needs: ['renameExchange'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const x = await vfs.mkdir(ctx, d, 'x', 0o755);
      const f = await mkfile(vfs, ctx, d, 'f', 'F');
      const sub = await vfs.mkdir(ctx, x.nodeid, 'sub', 0o755);
      await vfs.rename(ctx, d, 'f', x.nodeid, 'sub', RENAME_EXCHANGE);
      assert.equal((await vfs.lookup(ctx, d, 'f')).nodeid, sub.nodeid);
      assert.equal((await vfs.lookup(ctx, x.nodeid, 'sub')).nodeid, f.nodeid);
      assert.equal((await vfs.getattr(ctx, x.nodeid)).nlink, 2);
      assert.equal((await vfs.getattr(ctx, d)).nlink, 4);
      await rejectsWith(vfs.rename(ctx, d, 'f', d, 'nothing', RENAME_EXCHANGE), 'ENOENT');
    },
  },
  {
    name: 'rename type errors: ENOTDIR, EISDIR, ENOTEMPTY, EINVAL into itself',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const a = await vfs.mkdir(ctx, d, 'a', 0o755);
      const full = await vfs.mkdir(ctx, d, 'full', 0o755);
      await mkfile(vfs, ctx, full.nodeid, 'x');
      await vfs.mkdir(ctx, d, 'empty', 0o755);
      await mkfile(vfs, ctx, d, 'file');
      const child = await vfs.mkdir(ctx, a.nodeid, 'child', 0o755);
      await rejectsWith(vfs.rename(ctx, d, 'a', d, 'file', 0), 'ENOTDIR');
      await rejectsWith(vfs.rename(ctx, d, 'file', d, 'a', 0), 'EISDIR');
      await rejectsWith(vfs.rename(ctx, d, 'a', d, 'full', 0), 'ENOTEMPTY');
      await rejectsWith(vfs.rename(ctx, d, 'a', child.nodeid, 'loop', 0), 'EINVAL');
      await rejectsWith(vfs.rename(ctx, d, 'missing', d, 'z', 0), 'ENOENT');
      await vfs.rename(ctx, d, 'a', d, 'empty', 0);
      assert.deepEqual(await listNames(vfs, ctx, d), ['empty', 'file', 'full']);
    },
  },
  {
    name: 'hard links share the inode; EPERM on directories',
    needs: ['hardlinks'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const a = await mkfile(vfs, ctx, d, 'a', 'shared');
      const l = await vfs.link(ctx, a.nodeid, d, 'b');
      assert.equal(l.nodeid, a.nodeid);
      assert.equal(l.attr.ino, a.attr.ino);
      assert.equal(l.attr.nlink, 2);
      await vfs.unlink(ctx, d, 'a');
      const b = await vfs.lookup(ctx, d, 'b');
      assert.equal(b.attr.nlink, 1);
      assert.equal((await readAll(vfs, ctx, b.nodeid)).toString(), 'shared');
      const sub = await vfs.mkdir(ctx, d, 'sub', 0o755);
      await rejectsWith(vfs.link(ctx, sub.nodeid, d, 'sublink'), 'EPERM');
      await rejectsWith(vfs.link(ctx, b.nodeid, d, 'sub'), 'EEXIST');
    },
  },
  {
    name: 'an unlinked open file stays readable and writable until release',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const c = await vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR);
      const id = c.entry.nodeid;
      await vfs.write(ctx, id, c.fh, 0, Buffer.from('before'));
      await vfs.unlink(ctx, d, 'f');
      await rejectsWith(vfs.lookup(ctx, d, 'f'), 'ENOENT');
      await vfs.write(ctx, id, c.fh, 6, Buffer.from('+after'));
      assert.equal((await vfs.read(ctx, id, c.fh, 0, 100)).toString(), 'before+after');
      const a = await vfs.getattr(ctx, id, c.fh);
      assert.equal(a.nlink, 0);
      assert.equal(a.size, 12);
      assert.equal((await vfs.setattr(ctx, id, { size: 3 }, c.fh)).size, 3);
      await vfs.release(ctx, id, c.fh);
      vfs.forget(id, 1);
      assert.deepEqual(await listNames(vfs, ctx, d), []);
    },
  },
  {
    name: 'symlinks and readlink',
    needs: ['symlinks'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const s = await vfs.symlink(ctx, d, 's', '../some/where');
      assert.equal(s.attr.mode & S_IFMT, S_IFLNK);
      assert.equal(s.attr.size, Buffer.byteLength('../some/where'));
      assert.equal(await vfs.readlink(ctx, s.nodeid), '../some/where');
      const f = await mkfile(vfs, ctx, d, 'f');
      await rejectsWith(vfs.readlink(ctx, f.nodeid), 'EINVAL');
      // A dangling link is fine; lookup does not follow it.
      assert.equal((await vfs.lookup(ctx, d, 's')).nodeid, s.nodeid);
    },
  },
  {
    name: 'mknod makes a fifo',
    needs: ['specialFiles', 'modes'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const p = await vfs.mknod(ctx, d, 'p', S_IFIFO | 0o640, 0);
      assert.equal(p.attr.mode, S_IFIFO | 0o640);
      assert.equal((await vfs.lookup(ctx, d, 'p')).attr.mode & S_IFMT, S_IFIFO);
      const r = await vfs.mknod(ctx, d, 'r', S_IFREG | 0o600, 0);
      assert.equal(r.attr.mode, S_IFREG | 0o600);
    },
  },
  {
    name: 'xattrs: set, get, list, remove, create/replace flags',
    needs: ['xattrs', 'symlinks'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const f = await mkfile(vfs, ctx, d, 'f');
      await vfs.setxattr(ctx, f.nodeid, 'user.one', Buffer.from('1'), 0);
      await vfs.setxattr(ctx, f.nodeid, 'user.two', Buffer.alloc(0), XATTR_CREATE);
      await rejectsWith(vfs.setxattr(ctx, f.nodeid, 'user.one', Buffer.from('x'), XATTR_CREATE), 'EEXIST');
      await rejectsWith(vfs.setxattr(ctx, f.nodeid, 'user.three', Buffer.from('x'), XATTR_REPLACE), 'ENODATA');
      await vfs.setxattr(ctx, f.nodeid, 'user.one', Buffer.from('uno'), XATTR_REPLACE);
      assert.equal((await vfs.getxattr(ctx, f.nodeid, 'user.one')).toString(), 'uno');
      assert.equal((await vfs.getxattr(ctx, f.nodeid, 'user.two')).length, 0);
      const names = (await vfs.listxattr(ctx, f.nodeid)).filter((n) => n.startsWith('user.')).sort();
      assert.deepEqual(names, ['user.one', 'user.two']);
      await vfs.removexattr(ctx, f.nodeid, 'user.one');
      await rejectsWith(vfs.getxattr(ctx, f.nodeid, 'user.one'), 'ENODATA');
      await rejectsWith(vfs.removexattr(ctx, f.nodeid, 'user.one'), 'ENODATA');
      await rejectsWith(vfs.setxattr(ctx, f.nodeid, 'bogus.ns', Buffer.from('x'), 0), 'EOPNOTSUPP');
      const s = await vfs.symlink(ctx, d, 's', 'f');
      await rejectsWith(vfs.setxattr(ctx, s.nodeid, 'user.x', Buffer.from('x'), 0), 'EPERM');
    },
  },
  {
    name: 'readdir lists everything once, with ., .. and types',
    needs: ['symlinks'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const want: string[] = [];
      for (let i = 0; i < 150; i++) {
        await mkfile(vfs, ctx, d, `f${i}`);
        want.push(`f${i}`);
      }
      await vfs.mkdir(ctx, d, 'dir', 0o755);
      await vfs.symlink(ctx, d, 'lnk', 'f0');
      want.push('dir', 'lnk');
      const o = await vfs.opendir(ctx, d);
      const all: DirEntry[] = [];
      for (let off = 0; ;) {
        const batch = await vfs.readdir(ctx, d, o.fh, off, 17, false);
        if (batch.length === 0) break;
        all.push(...batch);
        off = batch[batch.length - 1]!.off;
      }
      await vfs.releasedir(ctx, d, o.fh);
      assert.deepEqual(all.map((e) => e.name).sort(), ['.', '..', ...want].sort());
      const byName = new Map(all.map((e) => [e.name, e]));
      assert.equal(byName.get('.')!.type, S_IFDIR);
      assert.equal(byName.get('dir')!.type, S_IFDIR);
      assert.equal(byName.get('lnk')!.type, S_IFLNK);
      assert.equal(byName.get('f7')!.type, S_IFREG);
      assert.equal(byName.get('f7')!.ino, (await vfs.lookup(ctx, d, 'f7')).attr.ino);
      assert.ok(all.every((e) => e.off > 0));
    },
  },
  {
    name: 'readdir cookies stay valid while entries come and go',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      for (let i = 0; i < 40; i++) await mkfile(vfs, ctx, d, `n${i}`);
      const o = await vfs.opendir(ctx, d);
      const first = await vfs.readdir(ctx, d, o.fh, 0, 12, false);
      const seen = new Set(first.map((e) => e.name));
      // Concurrent changes: names not yet read vanish, new ones appear.
      const removed = new Set<string>();
      for (let i = 0; i < 40; i += 3) {
        const name = `n${i}`;
        if (!seen.has(name)) {
          await vfs.unlink(ctx, d, name);
          removed.add(name);
        }
      }
      for (let i = 0; i < 10; i++) await mkfile(vfs, ctx, d, `new${i}`);
      let off = first[first.length - 1]!.off;
      for (;;) {
        const batch = await vfs.readdir(ctx, d, o.fh, off, 7, false);
        if (batch.length === 0) break;
        for (const e of batch) {
          assert.ok(!seen.has(e.name), `${e.name} listed twice`);
          seen.add(e.name);
        }
        off = batch[batch.length - 1]!.off;
      }
      await vfs.releasedir(ctx, d, o.fh);
      for (let i = 0; i < 40; i++) {
        const name = `n${i}`;
        if (!removed.has(name)) assert.ok(seen.has(name), `${name} (never removed) was skipped`);
      }
    },
  },
  {
    name: 'readdirplus entries match lookup and count a lookup',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const f = await mkfile(vfs, ctx, d, 'f', 'xyz');
      const o = await vfs.opendir(ctx, d);
      const list = await vfs.readdir(ctx, d, o.fh, 0, 100, true);
      await vfs.releasedir(ctx, d, o.fh);
      const e = list.find((x) => x.name === 'f');
      assert.ok(e?.entry);
      assert.equal(e.entry.nodeid, f.nodeid);
      assert.equal(e.entry.attr.size, 3);
      assert.equal(list.find((x) => x.name === '.')?.entry, undefined);
      vfs.forget(f.nodeid, 1);
      // Still known through the lookup mkfile counted.
      assert.equal((await vfs.getattr(ctx, f.nodeid)).size, 3);
    },
  },
  {
    name: 'access answers for the caller',
    needs: ['modes'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const root = { ...ctx, uid: 0, gid: 0 };
      const f = await mkfile(vfs, root, d, 'f', '', 0o640);
      const owner = { ...ctx, uid: 0, gid: 0 };
      const group = { ...ctx, uid: 2000, gid: 0 };
      const other = { ...ctx, uid: 2000, gid: 2000 };
      await vfs.access(owner, f.nodeid, 6);
      await vfs.access(group, f.nodeid, 4);
      await rejectsWith(vfs.access(group, f.nodeid, 2), 'EACCES');
      await rejectsWith(vfs.access(other, f.nodeid, 4), 'EACCES');
      await vfs.access(other, f.nodeid, 0);
      await rejectsWith(vfs.access(root, f.nodeid, 1), 'EACCES');
      await vfs.access(other, d, 5);
    },
  },
  {
    name: 'statfs is sane',
    async run(vfs, ctx) {
      const s = await vfs.statfs(ctx, ROOT_ID);
      assert.ok(s.bsize > 0);
      assert.ok(s.frsize > 0);
      assert.equal(s.namelen, 255);
      assert.ok(s.bfree <= s.blocks);
      assert.ok(s.bavail <= s.blocks);
    },
  },
  {
    name: 'fallocate: extend, KEEP_SIZE, PUNCH_HOLE',
    needs: ['punchHole'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const c = await vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR);
      const id = c.entry.nodeid;
      await vfs.fallocate(ctx, id, c.fh, 0, 0, 10000);
      assert.equal((await vfs.getattr(ctx, id)).size, 10000);
      await vfs.fallocate(ctx, id, c.fh, 1, 0, 50000);
      assert.equal((await vfs.getattr(ctx, id)).size, 10000);
      await vfs.write(ctx, id, c.fh, 0, Buffer.alloc(10000, 0x61));
      await vfs.fallocate(ctx, id, c.fh, 3, 4096, 4096);
      const data = await vfs.read(ctx, id, c.fh, 0, 10000);
      assert.equal((await vfs.getattr(ctx, id)).size, 10000);
      assert.ok(data.subarray(4096, 8192).every((b) => b === 0));
      assert.ok(data.subarray(0, 4096).every((b) => b === 0x61));
      assert.ok(data.subarray(8192).every((b) => b === 0x61));
      await vfs.release(ctx, id, c.fh);
    },
  },
  {
    name: 'lseek SEEK_DATA and SEEK_HOLE',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const c = await vfs.create(ctx, d, 'f', S_IFREG | 0o644, O_RDWR);
      const id = c.entry.nodeid;
      await vfs.write(ctx, id, c.fh, 0, Buffer.alloc(8192, 1));
      assert.equal(await vfs.lseek(ctx, id, c.fh, 0, SEEK_DATA), 0);
      const hole = await vfs.lseek(ctx, id, c.fh, 0, SEEK_HOLE);
      assert.ok(hole >= 8192 && hole <= 8192, `hole at ${hole}`);
      await rejectsWith(vfs.lseek(ctx, id, c.fh, 8192, SEEK_DATA), 'ENXIO');
      await vfs.release(ctx, id, c.fh);
    },
  },
  {
    name: 'copyFileRange copies bytes between files',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const a = await mkfile(vfs, ctx, d, 'a', '0123456789');
      const ia = await vfs.open(ctx, a.nodeid, O_RDONLY);
      const b = await vfs.create(ctx, d, 'b', S_IFREG | 0o644, O_RDWR);
      let done = 0;
      while (done < 6) {
        const n = await vfs.copyFileRange(ctx, a.nodeid, ia.fh, 2 + done, b.entry.nodeid, b.fh, 1 + done, 6 - done);
        assert.ok(n > 0);
        done += n;
      }
      assert.equal(await vfs.copyFileRange(ctx, a.nodeid, ia.fh, 10, b.entry.nodeid, b.fh, 0, 5), 0);
      await vfs.release(ctx, a.nodeid, ia.fh);
      await vfs.release(ctx, b.entry.nodeid, b.fh);
      assert.deepEqual(await readAll(vfs, ctx, b.entry.nodeid), Buffer.from('\x00234567'));
    },
  },
  {
    name: 'chmod and xattr changes update ctime only',
    needs: ['modes'],
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const f = await mkfile(vfs, ctx, d, 'f', 'x');
      await vfs.setattr(ctx, f.nodeid, { mtime: OLD, atime: OLD });
      const a = await vfs.setattr(ctx, f.nodeid, { mode: 0o600 });
      assert.deepEqual(a.mtime, OLD);
      assert.ok(a.ctime.sec > OLD.sec);
    },
  },
  {
    name: 'bad handles and forgotten nodes fail cleanly',
    async run(vfs, ctx) {
      const d = await scratch(vfs, ctx);
      const f = await mkfile(vfs, ctx, d, 'f', 'x');
      await rejectsWith(vfs.read(ctx, f.nodeid, 987654, 0, 1), 'EBADF');
      await rejectsWith(vfs.release(ctx, f.nodeid, 987654), 'EBADF');
      const o = await vfs.open(ctx, f.nodeid, O_RDONLY);
      await rejectsWith(vfs.write(ctx, f.nodeid, o.fh, 0, Buffer.from('y')), 'EBADF');
      await vfs.release(ctx, f.nodeid, o.fh);
      vfs.forget(987654, 1);
      vfs.forget(f.nodeid, 1000);
      await rejectsWith(vfs.getattr(ctx, 987654), 'ESTALE');
    },
  },
];
