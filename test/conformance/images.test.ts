// Image sources against the tree their image was made from: one populated directory, images built
// by the formats' own tools (mkfs.ext2/3/4 -d, xorriso), then every name, type, mode, owner, size,
// link target, device number, xattr and byte read through the Vfs must match the tree, and every
// change must fail with EROFS.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import type { Stats } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { ExtFs } from '../../src/sources/ext.js';
import { IsoFs } from '../../src/sources/iso9660.js';
import {
  O_RDONLY, O_WRONLY, ROOT_ID, S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, type Ctx, type Vfs,
} from '../../src/vfs/types.js';
import { rejectsWith } from './posix-cases.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };

let work = '';
let tree = '';

/** Deterministic bytes, so a misplaced block shows as a content mismatch. */
function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = seed * 2654435761 >>> 0;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function makeTree(root: string): Promise<void> {
  const w = (p: string, data: string | Buffer): Promise<void> => fsp.writeFile(path.join(root, p), data);
  await fsp.mkdir(path.join(root, 'dir/sub/deeper/deepest'), { recursive: true });
  await w('hello.txt', 'hello, image\n');
  await w('empty', '');
  await w('dir/big.bin', pattern(5 * 1024 * 1024 + 123, 1)); // past double-indirect on 1 KiB blocks
  await w('dir/sub/deeper/deepest/leaf', 'deep\n');
  await w(`dir/${'long-name-'.repeat(12)}end`, 'a long name\n');
  await w('dir/ünïcødé €.txt', 'unicode\n');
  const sparse = await fsp.open(path.join(root, 'sparse'), 'w');
  await sparse.write('head', 0);
  await sparse.write('tail', 20 * 1024 * 1024);
  await sparse.close();
  for (let i = 0; i < 300; i++) await w(`dir/sub/f${String(i).padStart(3, '0')}`, `file ${i}\n`); // a multi-block directory
  await fsp.symlink('hello.txt', path.join(root, 'fast-link'));
  await fsp.symlink(`dir/sub/${'x'.repeat(120)}`, path.join(root, 'slow-link'));
  await fsp.link(path.join(root, 'hello.txt'), path.join(root, 'dir/hard-link'));
  await fsp.chmod(path.join(root, 'dir/sub'), 0o2750);
  await fsp.chmod(path.join(root, 'empty'), 0o600);
  await fsp.chown(path.join(root, 'hello.txt'), 1234, 5678);
  await run('mkfifo', [path.join(root, 'fifo')]);
  await run('mknod', [path.join(root, 'chardev'), 'c', '4', '5']);
  await run('mknod', [path.join(root, 'blockdev'), 'b', '259', '70000']);
  await run('setfattr', ['-n', 'user.color', '-v', 'blue', path.join(root, 'hello.txt')]);
  await run('setfattr', ['-n', 'user.big', '-v', `0x${pattern(600, 2).toString('hex')}`, path.join(root, 'dir')]);
}

interface CompareOpts {
  /** Rock Ridge and ext keep modes, owners, link counts, devices; plain ISO and Joliet do not. */
  posix: boolean;
  xattrs: boolean;
  /** Files the format cannot hold are skipped (Joliet: no links or devices). */
  keep?: (st: Stats) => boolean;
  /** The name the format shows for a local name (Joliet cuts names to 64 characters). */
  mapName?: (name: string) => string;
}

async function readAll(vfs: Vfs, node: number, size: number): Promise<Buffer> {
  const o = await vfs.open(ctx, node, O_RDONLY);
  try {
    const parts: Buffer[] = [];
    // Odd-sized reads at odd offsets cross block and extent boundaries.
    for (let off = 0; off < size;) {
      const b = await vfs.read(ctx, node, o.fh, off, 100_003);
      assert.ok(b.length > 0, `short read at ${off} of ${size}`);
      parts.push(b);
      off += b.length;
    }
    assert.equal((await vfs.read(ctx, node, o.fh, size, 10)).length, 0);
    return Buffer.concat(parts);
  } finally {
    await vfs.release(ctx, node, o.fh);
  }
}

async function listDir(vfs: Vfs, node: number): Promise<Map<string, number>> {
  const o = await vfs.opendir(ctx, node);
  const names = new Map<string, number>();
  // Small batches exercise cookie continuation.
  for (let off = 0; ;) {
    const batch = await vfs.readdir(ctx, node, o.fh, off, 7, false);
    if (batch.length === 0) break;
    for (const e of batch) names.set(e.name, e.type);
    off = batch[batch.length - 1]!.off;
  }
  await vfs.releasedir(ctx, node, o.fh);
  return names;
}

async function compareTree(vfs: Vfs, node: number, dir: string, opts: CompareOpts, inodes: Map<number, number>): Promise<void> {
  const local: string[] = [];
  for (const n of (await fsp.readdir(dir)).sort()) {
    if (n !== 'lost+found' && (opts.keep?.(await fsp.lstat(path.join(dir, n))) ?? true)) local.push(n);
  }
  const listed = await listDir(vfs, node);
  assert.equal(listed.get('.'), S_IFDIR);
  assert.equal(listed.get('..'), S_IFDIR);
  const remote = [...listed.keys()].filter((n) => n !== '.' && n !== '..' && n !== 'lost+found').sort();
  const shown = (n: string): string => opts.mapName?.(n) ?? n;
  assert.deepEqual(remote, local.map(shown).sort(), `listing of ${dir}`);
  for (const name of local) {
    const p = path.join(dir, name);
    const st = await fsp.lstat(p);
    const e = await vfs.lookup(ctx, node, shown(name));
    const a = e.attr;
    const type = st.mode & S_IFMT;
    assert.equal(a.mode & S_IFMT, type, `type of ${p}`);
    assert.equal(listed.get(shown(name)), type, `readdir type of ${p}`);
    if (opts.posix) {
      assert.equal(a.mode, st.mode, `mode of ${p}`);
      assert.equal(a.uid, st.uid, `uid of ${p}`);
      assert.equal(a.gid, st.gid, `gid of ${p}`);
      assert.equal(a.mtime.sec, Math.floor(st.mtimeMs / 1000), `mtime of ${p}`);
      if (type !== S_IFDIR) assert.equal(a.nlink, st.nlink, `nlink of ${p}`);
      if (type === S_IFCHR || type === S_IFBLK) assert.equal(a.rdev, st.rdev, `rdev of ${p}`);
      // Hard links share one st_ino in the image as in the tree.
      const seen = inodes.get(st.ino);
      if (seen !== undefined) assert.equal(a.ino, seen, `hard link ${p}`);
      else inodes.set(st.ino, a.ino);
    }
    if (type === S_IFREG) {
      assert.equal(a.size, st.size, `size of ${p}`);
      assert.ok((await readAll(vfs, e.nodeid, a.size)).equals(await fsp.readFile(p)), `contents of ${p}`);
    } else if (type === S_IFLNK) {
      assert.equal(await vfs.readlink(ctx, e.nodeid), await fsp.readlink(p), `target of ${p}`);
    } else if (type === S_IFDIR) {
      await compareTree(vfs, e.nodeid, p, opts, inodes);
      const dotdot = await vfs.lookup(ctx, e.nodeid, '..');
      assert.equal(dotdot.nodeid, node, `.. of ${p}`);
      vfs.forget(dotdot.nodeid, 1);
    }
    if (opts.xattrs && (type === S_IFREG || type === S_IFDIR)) {
      const { stdout } = await run('getfattr', ['-d', '-e', 'hex', '-m', '^user\\.', '--absolute-names', p]);
      const want = new Map<string, string>();
      for (const m of stdout.matchAll(/^(user\.[^=]+)=0x([0-9a-f]*)$/gm)) want.set(m[1]!, m[2]!);
      const names = (await vfs.listxattr(ctx, e.nodeid)).filter((n) => n.startsWith('user.')).sort();
      assert.deepEqual(names, [...want.keys()].sort(), `xattrs of ${p}`);
      for (const [n, hex] of want) assert.equal((await vfs.getxattr(ctx, e.nodeid, n)).toString('hex'), hex, `${n} of ${p}`);
    }
    vfs.forget(e.nodeid, 1);
  }
}

async function refusesChanges(vfs: Vfs): Promise<void> {
  const f = await vfs.lookup(ctx, ROOT_ID, 'hello.txt');
  await rejectsWith(vfs.open(ctx, f.nodeid, O_WRONLY), 'EROFS');
  await rejectsWith(vfs.create(ctx, ROOT_ID, 'new', S_IFREG | 0o644, O_WRONLY), 'EROFS');
  await rejectsWith(vfs.mkdir(ctx, ROOT_ID, 'newdir', 0o755), 'EROFS');
  await rejectsWith(vfs.mknod(ctx, ROOT_ID, 'newfifo', S_IFIFO | 0o644, 0), 'EROFS');
  await rejectsWith(vfs.symlink(ctx, ROOT_ID, 'newlink', 'x'), 'EROFS');
  await rejectsWith(vfs.link(ctx, f.nodeid, ROOT_ID, 'newhard'), 'EROFS');
  await rejectsWith(vfs.unlink(ctx, ROOT_ID, 'hello.txt'), 'EROFS');
  await rejectsWith(vfs.rmdir(ctx, ROOT_ID, 'dir'), 'EROFS');
  await rejectsWith(vfs.rename(ctx, ROOT_ID, 'hello.txt', ROOT_ID, 'moved', 0), 'EROFS');
  await rejectsWith(vfs.setattr(ctx, f.nodeid, { size: 0 }), 'EROFS');
  await rejectsWith(vfs.setattr(ctx, f.nodeid, { mode: 0o777 }), 'EROFS');
  await rejectsWith(vfs.setxattr(ctx, f.nodeid, 'user.x', Buffer.from('y'), 0), 'EROFS');
  await rejectsWith(vfs.removexattr(ctx, f.nodeid, 'user.color'), 'EROFS');
  await rejectsWith(vfs.access(ctx, f.nodeid, 2), 'EROFS');
  await vfs.access(ctx, f.nodeid, 4);
  const o = await vfs.open(ctx, f.nodeid, O_RDONLY);
  await rejectsWith(vfs.write(ctx, f.nodeid, o.fh, 0, Buffer.from('x')), 'EROFS');
  await rejectsWith(vfs.fallocate(ctx, f.nodeid, o.fh, 0, 0, 10), 'EROFS');
  await vfs.release(ctx, f.nodeid, o.fh);
  assert.equal((await readAll(vfs, f.nodeid, f.attr.size)).toString(), 'hello, image\n');
  vfs.forget(f.nodeid, 1);
}

function imageSuite(name: string, type: string, make: (image: string) => Promise<void>, open: (image: string) => Promise<Vfs>, opts: CompareOpts): void {
  void describe(name, () => {
    let vfs: Vfs;
    before(async () => {
      const image = path.join(work, `${name.replace(/\W+/g, '-')}.img`);
      await make(image);
      vfs = await open(image);
    });
    after(() => vfs?.close());
    void it(`reports type ${type}, read-only`, () => {
      assert.deepEqual(vfs.info(), { type, readOnly: true, coherent: true });
    });
    void it('matches the tree it was made from', () => compareTree(vfs, ROOT_ID, tree, opts, new Map()));
    void it('refuses every change with EROFS', () => refusesChanges(vfs));
  });
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-images-conf-'));
  tree = path.join(work, 'tree');
  await fsp.mkdir(tree);
  await makeTree(tree);
});
after(() => fsp.rm(work, { recursive: true, force: true }));

const mkfs = (tool: string, ...args: string[]) => async (image: string): Promise<void> => {
  await run(tool, ['-q', ...args, '-d', tree, image, '64M']);
};
const full: CompareOpts = { posix: true, xattrs: true };

imageSuite('ext2 (indirect blocks, 1 KiB blocks)', 'ext2', mkfs('mkfs.ext2', '-b', '1024'), (i) => ExtFs.open(i), full);
imageSuite('ext3 (journal, 128-byte inodes)', 'ext3', mkfs('mkfs.ext3', '-I', '128'), (i) => ExtFs.open(i), full);
imageSuite('ext4 (extents, 4 KiB blocks)', 'ext4', mkfs('mkfs.ext4', '-b', '4096', '-I', '256'), (i) => ExtFs.open(i), full);
imageSuite('ext4 with inline data and 64bit', 'ext4', mkfs('mkfs.ext4', '-O', 'inline_data,64bit', '-I', '256'), (i) => ExtFs.open(i), full);

const xorriso = (...args: string[]) => async (image: string): Promise<void> => {
  await run('xorriso', ['-outdev', image, ...args, '-map', tree, '/']);
};
// Rock Ridge carries no xattrs (xorriso's AAIP extension is not read).
imageSuite('iso9660 with Rock Ridge and Joliet', 'iso9660', xorriso('-rockridge', 'on', '-joliet', 'on'), (i) => IsoFs.open(i), { posix: true, xattrs: false });
imageSuite('iso9660 with Joliet only', 'iso9660', xorriso('-rockridge', 'off', '-joliet', 'on'), (i) => IsoFs.open(i), {
  posix: false,
  xattrs: false,
  keep: (st) => st.isFile() || st.isDirectory(),
  mapName: (name) => name.slice(0, 64),
});
