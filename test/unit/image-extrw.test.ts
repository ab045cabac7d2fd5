// ExtRwFs (ext2/3/4 read-write through libext2fs) in-process, checked by e2fsprogs itself: images
// made by `mkfs.ext{2,3,4} -d` from a tree holding what ext can hold (a file > 4 GiB with holes, a
// file of many extents, fast and slow symlinks, hard links, xattrs, a fifo, devices, odd modes and
// owners); then reads must match the tree, writes, renames, deletes, truncates and xattr changes go
// through the source, and after close() `e2fsck -fn` must find the image clean and `debugfs` must
// show what was written. Also: unlinked-but-open files, bad and damaged images, the journal rule.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '../../src/lib/errno.js';
import { ExtRwFs, ext2fsAddon } from '../../src/sources/ext-rw.js';
import { openSource } from '../../src/sources/index.js';
import {
  O_RDONLY, O_RDWR, O_WRONLY, ROOT_ID, S_IFBLK, S_IFCHR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, type Ctx, type Vfs,
} from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
const GiB = 1024 ** 3;
const skip = ext2fsAddon() ? {} : { skip: 'libext2fs addon not built (apt-get install libext2fs-dev && npm rebuild)' };
let work = '';
let tree = '';

async function sh(cmd: string, args: string[]): Promise<string> {
  const r = await run(cmd, args, { maxBuffer: 64 << 20 });
  return r.stdout;
}

/** e2fsck -fn exits 0 only when it found nothing to fix. */
async function fsckClean(img: string): Promise<void> {
  try {
    await run('e2fsck', ['-fn', img]);
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    assert.fail(`e2fsck -fn ${img}: exit ${e.code}\n${e.stdout ?? ''}${e.stderr ?? ''}`);
  }
}

const debugfs = (img: string, req: string): Promise<string> => sh('debugfs', ['-R', req, img]);

async function node(vfs: Vfs, p: string): Promise<number> {
  let cur = ROOT_ID;
  for (const part of p.split('/').filter(Boolean)) cur = (await vfs.lookup(ctx, cur, part)).nodeid;
  return cur;
}

async function readAt(vfs: Vfs, id: number, off: number, len: number): Promise<Buffer> {
  const o = await vfs.open(ctx, id, O_RDONLY);
  try {
    const parts: Buffer[] = [];
    for (let done = 0; done < len;) {
      const b = await vfs.read(ctx, id, o.fh, off + done, Math.min(len - done, 1 << 20));
      if (b.length === 0) break;
      parts.push(Buffer.from(b));
      done += b.length;
    }
    return Buffer.concat(parts);
  } finally {
    await vfs.release(ctx, id, o.fh);
  }
}

async function writeAt(vfs: Vfs, id: number, off: number, data: Buffer): Promise<void> {
  const o = await vfs.open(ctx, id, O_WRONLY);
  for (let done = 0; done < data.length;) {
    done += await vfs.write(ctx, id, o.fh, off + done, data.subarray(done, Math.min(data.length, done + (1 << 20))));
  }
  await vfs.release(ctx, id, o.fh);
}

/** Deterministic bytes, different for every seed. */
function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

const sha = (b: Buffer): string => createHash('sha256').update(b).digest('hex');

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-image-extrw-'));
  tree = path.join(work, 'tree');
  await fsp.mkdir(path.join(tree, 'dir/sub'), { recursive: true });
  await fsp.writeFile(path.join(tree, 'hello.txt'), 'hello\n');
  // > 4 GiB, sparse: a head, a piece past 4 GiB, and holes between (64-bit sizes, huge extents).
  const big = await fsp.open(path.join(tree, 'big.sparse'), 'w');
  await big.write(pattern(100_000, 1), 0, 100_000, 0);
  await big.write(pattern(70_000, 2), 0, 70_000, 4 * GiB + 12_345);
  await big.close();
  // Many extents: 300 separate 4 KiB pieces with holes between them.
  const many = await fsp.open(path.join(tree, 'dir/many-extents'), 'w');
  for (let i = 0; i < 300; i++) await many.write(pattern(4096, 100 + i), 0, 4096, i * 12288);
  await many.close();
  await fsp.symlink('hello.txt', path.join(tree, 'fast-link'));
  await fsp.symlink('x/'.repeat(150) + 'target', path.join(tree, 'slow-link'));
  await fsp.writeFile(path.join(tree, 'dir/linked'), 'two names\n');
  await fsp.link(path.join(tree, 'dir/linked'), path.join(tree, 'linked-too'));
  await fsp.writeFile(path.join(tree, 'xattrs'), 'has xattrs\n');
  await run('setfattr', ['-n', 'user.color', '-v', 'blue', path.join(tree, 'xattrs')]);
  await run('setfattr', ['-n', 'trusted.note', '-v', 'n'.repeat(300), path.join(tree, 'xattrs')]);
  await run('mkfifo', [path.join(tree, 'fifo')]);
  await run('mknod', [path.join(tree, 'null'), 'c', '1', '3']);
  await run('mknod', [path.join(tree, 'disk'), 'b', '259', '300']);
  await fsp.writeFile(path.join(tree, 'odd'), 'odd owner\n');
  await fsp.chown(path.join(tree, 'odd'), 1234, 5678);
  await fsp.chmod(path.join(tree, 'odd'), 0o4751);
  await fsp.chmod(path.join(tree, 'dir/sub'), 0o1777);
});
after(() => fsp.rm(work, { recursive: true, force: true }));

for (const type of ['ext2', 'ext3', 'ext4'] as const) {
  void describe(`ExtRwFs on ${type}: reads the tree, writes, e2fsck and debugfs agree`, skip, () => {
    let img = '';
    before(async () => {
      img = path.join(work, `${type}.img`);
      await run(`mkfs.${type}`, ['-q', '-F', '-b', '4096', '-d', tree, img, '96M']);
    });

    void it('reads what mkfs -d put in', async () => {
      const vfs = await ExtRwFs.open(img, { readOnly: true });
      try {
        assert.deepEqual(vfs.info(), { type, readOnly: true, coherent: true });
        for (const name of ['hello.txt', 'big.sparse', 'dir/many-extents', 'fast-link', 'slow-link', 'dir/linked', 'fifo', 'null', 'disk', 'odd', 'dir/sub']) {
          const st = await fsp.lstat(path.join(tree, name));
          const a = await vfs.getattr(ctx, await node(vfs, name));
          assert.equal(a.mode, st.mode, name);
          assert.equal(a.uid, st.uid, name);
          assert.equal(a.gid, st.gid, name);
          assert.equal(a.nlink, st.nlink, name);
          if (!st.isDirectory()) assert.equal(a.size, st.size, name);
          assert.equal(a.rdev, st.rdev, name);
        }
        const big = await node(vfs, 'big.sparse');
        assert.equal(sha(await readAt(vfs, big, 0, 100_000)), sha(pattern(100_000, 1)));
        assert.equal(sha(await readAt(vfs, big, 4 * GiB + 12_345, 70_000)), sha(pattern(70_000, 2)));
        assert.ok((await readAt(vfs, big, 2 * GiB, 65536)).equals(Buffer.alloc(65536)), 'a hole reads as zeros');
        const many = await node(vfs, 'dir/many-extents');
        assert.ok((await readAt(vfs, many, 299 * 12288, 4096)).equals(pattern(4096, 399)));
        assert.equal(await vfs.readlink(ctx, await node(vfs, 'fast-link')), 'hello.txt');
        assert.equal(await vfs.readlink(ctx, await node(vfs, 'slow-link')), 'x/'.repeat(150) + 'target');
        const x = await node(vfs, 'xattrs');
        assert.deepEqual((await vfs.listxattr(ctx, x)).sort(), ['trusted.note', 'user.color']);
        assert.equal((await vfs.getxattr(ctx, x, 'user.color')).toString(), 'blue');
        await rejectsWith(vfs.setxattr(ctx, x, 'user.color', Buffer.from('red'), 0), 'EROFS');
      } finally {
        await vfs.close();
      }
    });

    void it('writes, renames, deletes, truncates, links, xattrs; e2fsck clean; debugfs shows them', async () => {
      const vfs = await ExtRwFs.open(img);
      const newData = pattern(3 * 1024 * 1024 + 17, 7);
      try {
        assert.equal(vfs.info().readOnly, false);
        // Past 4 GiB in the big sparse file, and a new 3 MiB file.
        await writeAt(vfs, await node(vfs, 'big.sparse'), 4 * GiB + 500_000, Buffer.from('beyond four gigabytes'));
        const c = await vfs.create(ctx, ROOT_ID, 'new.bin', S_IFREG | 0o640, O_RDWR);
        for (let off = 0; off < newData.length; off += 1 << 20) {
          await vfs.write(ctx, c.entry.nodeid, c.fh, off, newData.subarray(off, off + (1 << 20)));
        }
        await vfs.release(ctx, c.entry.nodeid, c.fh);
        // Rename into a subdirectory over nothing, and over an existing file.
        const dir = await node(vfs, 'dir');
        await vfs.rename(ctx, ROOT_ID, 'hello.txt', dir, 'renamed.txt', 0);
        await vfs.rename(ctx, dir, 'linked', ROOT_ID, 'linked-too', 0); // both names of one inode: no-op
        await vfs.rename(ctx, ROOT_ID, 'odd', dir, 'many-extents', 0);
        // Delete one name of the hard-linked pair, and the slow symlink.
        await vfs.unlink(ctx, ROOT_ID, 'linked-too');
        await vfs.unlink(ctx, ROOT_ID, 'slow-link');
        // Truncate down then up: the tail must read as zeros.
        const big = await node(vfs, 'big.sparse');
        await vfs.setattr(ctx, big, { size: 50_000 });
        await vfs.setattr(ctx, big, { size: 80_000 });
        const tail = await readAt(vfs, big, 49_990, 30_010);
        assert.ok(tail.subarray(0, 10).equals(pattern(100_000, 1).subarray(49_990, 50_000)));
        assert.ok(tail.subarray(10).equals(Buffer.alloc(30_000)));
        // Xattrs, links, symlinks, special files, a directory, owners and ns times.
        const x = await node(vfs, 'xattrs');
        await vfs.setxattr(ctx, x, 'user.shape', Buffer.from('round'), 0);
        await vfs.removexattr(ctx, x, 'user.color');
        await vfs.link(ctx, x, dir, 'xattrs-link');
        await vfs.symlink(ctx, dir, 'long-link', 'y'.repeat(1000));
        await vfs.mknod(ctx, dir, 'pipe', S_IFIFO | 0o600, 0);
        await vfs.mknod(ctx, dir, 'tty', S_IFCHR | 0o620, (4 << 8) | 1);
        const m = await vfs.mkdir(ctx, dir, 'made', 0o2750);
        await vfs.setattr(ctx, m.nodeid, { uid: 4242, gid: 4343, mtime: { sec: 1_600_000_000, nsec: 123_456_789 } });
        const a = await vfs.getattr(ctx, m.nodeid);
        assert.deepEqual(a.mtime, { sec: 1_600_000_000, nsec: type === 'ext2' ? a.mtime.nsec : 123_456_789 });
        // A directory deleted and a directory tree moved.
        await vfs.mkdir(ctx, dir, 'gone', 0o755);
        await vfs.rmdir(ctx, dir, 'gone');
        await vfs.rename(ctx, dir, 'sub', m.nodeid, 'sub-moved', 0);
        assert.equal((await vfs.getattr(ctx, dir)).nlink, 3, 'dir: ., its name, made/..');
        assert.equal((await vfs.getattr(ctx, m.nodeid)).nlink, 3);
      } finally {
        await vfs.close();
      }
      await fsckClean(img);
      assert.match(await debugfs(img, 'ls -l /dir'), /renamed\.txt/);
      assert.equal(await debugfs(img, 'cat /dir/renamed.txt'), 'hello\n');
      assert.equal(await debugfs(img, 'cat /dir/many-extents'), 'odd owner\n');
      assert.match(await debugfs(img, 'stat /dir/many-extents'), /User:\s+1234\s+Group:\s+5678/);
      const dumped = path.join(work, `${type}-new.bin`);
      await sh('debugfs', ['-R', `dump /new.bin ${dumped}`, img]);
      assert.equal(sha(await fsp.readFile(dumped)), sha(newData));
      assert.match(await debugfs(img, 'stat /dir/linked'), /Links:\s+1\b/);
      assert.match(await debugfs(img, 'stat /xattrs'), /Links:\s+2\b/);
      const ea = await debugfs(img, 'ea_list /xattrs');
      assert.match(ea, /user\.shape.*round/);
      assert.doesNotMatch(ea, /user\.color/);
      assert.match(await debugfs(img, 'stat /dir/tty'), /Device major\/minor number: 04:01/);
      assert.match(await debugfs(img, 'stat /dir/pipe'), /Type: FIFO/);
      assert.match(await debugfs(img, 'stat /dir/long-link'), /Type: symlink/);
      assert.match(await debugfs(img, 'stat /dir/made'), /Mode:\s+02750/);
      assert.match(await debugfs(img, 'ls /dir/made'), /sub-moved/);
      assert.doesNotMatch(await debugfs(img, 'ls /'), /slow-link|hello\.txt|linked-too/);
      assert.match(await debugfs(img, 'stat /big.sparse'), /Size: 80000\b/);
    });
  });
}

void describe('ExtRwFs: lifetimes, refusals, damage', skip, () => {
  let img = '';
  before(async () => {
    img = path.join(work, 'life.img');
    await run('mkfs.ext4', ['-q', '-F', '-d', tree, img, '96M']);
  });

  void it('an unlinked file stays readable and writable until its last handle is released', async () => {
    const vfs = await ExtRwFs.open(img);
    try {
      const c = await vfs.create(ctx, ROOT_ID, 'tmpfile', S_IFREG | 0o600, O_RDWR);
      const id = c.entry.nodeid;
      await vfs.write(ctx, id, c.fh, 0, pattern(200_000, 9));
      const before = (await vfs.statfs(ctx, ROOT_ID)).ffree;
      await vfs.unlink(ctx, ROOT_ID, 'tmpfile');
      await rejectsWith(vfs.lookup(ctx, ROOT_ID, 'tmpfile'), 'ENOENT');
      await vfs.write(ctx, id, c.fh, 200_000, Buffer.from('more'));
      assert.equal((await vfs.read(ctx, id, c.fh, 199_998, 10)).toString('latin1').slice(2), 'more');
      assert.equal((await vfs.getattr(ctx, id)).nlink, 0);
      assert.equal((await vfs.statfs(ctx, ROOT_ID)).ffree, before, 'still allocated while open');
      await vfs.release(ctx, id, c.fh);
      vfs.forget(id, 1);
      await vfs.statfs(ctx, ROOT_ID); // queued behind the forget
      assert.equal((await vfs.statfs(ctx, ROOT_ID)).ffree, before + 1, 'freed after the last release');
      await rejectsWith(vfs.getattr(ctx, id), 'ESTALE');
    } finally {
      await vfs.close();
    }
    await fsckClean(img);
  });

  void it('an unlinked file still open at close() is freed by close()', async () => {
    const vfs = await ExtRwFs.open(img);
    const c = await vfs.create(ctx, ROOT_ID, 'held', S_IFREG | 0o600, O_RDWR);
    await vfs.write(ctx, c.entry.nodeid, c.fh, 0, pattern(50_000, 3));
    await vfs.unlink(ctx, ROOT_ID, 'held');
    await vfs.close();
    await fsckClean(img);
  });

  void it('refuses a second read-write open while served (the valid bit is cleared)', async () => {
    const first = await ExtRwFs.open(img);
    try {
      await assert.rejects(ExtRwFs.open(img), /not cleanly unmounted/);
      // Read-only is still allowed.
      const ro = await ExtRwFs.open(img, { readOnly: true });
      await ro.close();
    } finally {
      await first.close();
    }
    await fsckClean(img);
  });

  void it('refuses a journal that needs recovery unless read-only', async () => {
    const j = path.join(work, 'journal.img');
    await fsp.copyFile(img, j);
    await run('debugfs', ['-w', '-R', 'feature needs_recovery', j]);
    await assert.rejects(openSource(`ext4:${j}`), (err: unknown) => {
      assert.ok(err instanceof FsError);
      assert.match(err.message, /journal needs recovery .*read-only/);
      assert.ok(!err.message.includes('\n'));
      return true;
    });
    const ro = await openSource(`ext4:${j}`, { readOnly: true });
    assert.equal(ro.info().readOnly, true);
    await ro.close();
  });

  void it('bad images: truncated, not ext, corrupted superblock: one clear line each', async () => {
    const cut = path.join(work, 'cut.img');
    await fsp.copyFile(img, cut);
    await fsp.truncate(cut, 40 << 20);
    const junk = path.join(work, 'junk.img');
    await fsp.writeFile(junk, pattern(4 << 20, 5));
    const sb = path.join(work, 'badsb.img');
    await fsp.copyFile(img, sb);
    const fh = await fsp.open(sb, 'r+');
    await fh.write(Buffer.alloc(100, 0xff), 0, 100, 1024 + 4); // block counts and free counts
    await fh.close();
    for (const [file, re] of [[cut, /truncated/], [junk, /not a usable ext2\/3\/4 file system/], [sb, /not a usable ext2\/3\/4 file system/]] as const) {
      await assert.rejects(ExtRwFs.open(file), (err: unknown) => {
        assert.ok(err instanceof FsError, String(err));
        assert.match(err.message, re);
        assert.ok(!err.message.includes('\n'));
        return true;
      });
    }
  });

  void it('a damaged inode is EIO, is never written, and the rest still works', async () => {
    const dmg = path.join(work, 'damaged.img');
    await run('mkfs.ext4', ['-q', '-F', '-b', '4096', '-d', tree, dmg, '96M']);
    const where = /located at block (\d+), offset (0x[0-9a-f]+)/.exec(await debugfs(dmg, 'imap /hello.txt'));
    assert.ok(where, 'debugfs imap');
    const pos = Number(where[1]) * 4096 + Number(where[2]) + 40; // i_block
    const fh = await fsp.open(dmg, 'r+');
    await fh.write(Buffer.alloc(60, 0xaa), 0, 60, pos);
    await fh.close();
    const vfs = await ExtRwFs.open(dmg);
    try {
      await rejectsWith(vfs.lookup(ctx, ROOT_ID, 'hello.txt'), 'EIO');
      await rejectsWith(vfs.unlink(ctx, ROOT_ID, 'hello.txt'), 'EIO');
      await rejectsWith(vfs.rename(ctx, ROOT_ID, 'hello.txt', ROOT_ID, 'moved', 0), 'EIO');
      assert.equal((await readAt(vfs, await node(vfs, 'dir/linked'), 0, 100)).toString(), 'two names\n');
    } finally {
      await vfs.close();
    }
    const after = Buffer.alloc(60);
    const rh = await fsp.open(dmg, 'r');
    await rh.read(after, 0, 60, pos);
    await rh.close();
    assert.ok(after.equals(Buffer.alloc(60, 0xaa)), 'the damaged inode was left as it was');
    assert.match(await debugfs(dmg, 'ls /'), /hello\.txt/);
  });

  void it('punching a hole frees its blocks and reads as zeros', async () => {
    const vfs = await ExtRwFs.open(img);
    try {
      const c = await vfs.create(ctx, ROOT_ID, 'holey', S_IFREG | 0o644, O_RDWR);
      const id = c.entry.nodeid;
      const data = pattern(1 << 20, 11);
      await vfs.write(ctx, id, c.fh, 0, data);
      const before = (await vfs.getattr(ctx, id)).blocks;
      await vfs.fallocate(ctx, id, c.fh, 3, 100_000, 600_000);
      const after = await vfs.getattr(ctx, id);
      assert.equal(after.size, 1 << 20);
      assert.ok(after.blocks < before - 1000, `blocks ${before} -> ${after.blocks}`);
      const back = await vfs.read(ctx, id, c.fh, 0, 1 << 20);
      assert.ok(back.subarray(0, 100_000).equals(data.subarray(0, 100_000)));
      assert.ok(back.subarray(100_000, 700_000).equals(Buffer.alloc(600_000)));
      assert.ok(back.subarray(700_000).equals(data.subarray(700_000)));
      await vfs.release(ctx, id, c.fh);
    } finally {
      await vfs.close();
    }
    await fsckClean(img);
  });

  void it('device numbers past 8 bits round-trip', async () => {
    const vfs = await ExtRwFs.open(img);
    try {
      const rdev = (259 << 8) | (300 & 0xff) | ((300 & ~0xff) << 12);
      const e = await vfs.mknod(ctx, ROOT_ID, 'nvme', S_IFBLK | 0o600, rdev);
      assert.equal(e.attr.rdev, rdev);
      assert.equal((await vfs.getattr(ctx, await node(vfs, 'disk'))).rdev, (await fsp.lstat(path.join(tree, 'disk'))).rdev);
      assert.equal((e.attr.mode & S_IFMT), S_IFBLK);
      assert.equal(((await vfs.getattr(ctx, await node(vfs, 'fast-link'))).mode & S_IFMT), S_IFLNK);
    } finally {
      await vfs.close();
    }
    await fsckClean(img);
    assert.match(await debugfs(img, 'stat /nvme'), /Device major\/minor number: 259:300/);
  });
});
