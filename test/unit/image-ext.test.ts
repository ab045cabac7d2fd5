// ExtFs specifics beyond the tree comparison in test/conformance/images.test.ts: bad and damaged
// images (a clear error at open, EIO on the damaged file, never a crash), the unclean-journal rule,
// unsupported features, deep extent trees, POSIX ACLs, statfs and node lifetime.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Errno, FsError } from '../../src/lib/errno.js';
import { ExtFs } from '../../src/sources/ext.js';
import { O_RDONLY, ROOT_ID, type Ctx, type Vfs } from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
let work = '';
let tree = '';
let base = '';

/** Makes an ext4 image of `tree` and returns its path. */
async function image(name: string, ...mkfsArgs: string[]): Promise<string> {
  const p = path.join(work, name);
  await run('mkfs.ext4', ['-q', ...mkfsArgs, '-d', tree, p, '32M']);
  return p;
}

async function copyOf(src: string, name: string): Promise<string> {
  const p = path.join(work, name);
  await fsp.copyFile(src, p);
  return p;
}

async function patch(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

async function statfsOf(file: string): Promise<{ bsize: number }> {
  const fs = await ExtFs.open(file);
  try {
    return await fs.statfs(ctx, ROOT_ID);
  } finally {
    await fs.close();
  }
}

async function openFails(file: string, pattern: RegExp, opts = {}): Promise<void> {
  await assert.rejects(ExtFs.open(file, opts), (err: unknown) => {
    assert.ok(err instanceof FsError, `expected FsError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

async function readFile(vfs: Vfs, parent: number, name: string): Promise<Buffer> {
  const e = await vfs.lookup(ctx, parent, name);
  const o = await vfs.open(ctx, e.nodeid, O_RDONLY);
  try {
    return await vfs.read(ctx, e.nodeid, o.fh, 0, e.attr.size);
  } finally {
    await vfs.release(ctx, e.nodeid, o.fh);
  }
}

/** Reads everything reachable; only FsErrors may come out (collected), anything else is a bug. */
async function walk(vfs: Vfs, node: number, depth = 0): Promise<number> {
  let errors = 0;
  const guard = async <T>(p: Promise<T>): Promise<T | undefined> => {
    try {
      return await p;
    } catch (err) {
      if (!(err instanceof FsError)) throw err;
      errors++;
      return undefined;
    }
  };
  const o = await guard(vfs.opendir(ctx, node));
  if (!o) return errors;
  const list = (await guard(vfs.readdir(ctx, node, o.fh, 0, 10_000, true))) ?? [];
  await vfs.releasedir(ctx, node, o.fh);
  for (const d of list) {
    if (!d.entry) continue;
    const e = d.entry;
    if ((e.attr.mode & 0o170000) === 0o040000 && depth < 8) errors += await walk(vfs, e.nodeid, depth + 1);
    else if ((e.attr.mode & 0o170000) === 0o100000) {
      const f = await guard(vfs.open(ctx, e.nodeid, O_RDONLY));
      if (f) {
        await guard(vfs.read(ctx, e.nodeid, f.fh, 0, Math.min(e.attr.size, 1 << 20)));
        await vfs.release(ctx, e.nodeid, f.fh);
      }
    } else if ((e.attr.mode & 0o170000) === 0o120000) await guard(vfs.readlink(ctx, e.nodeid));
    await guard(vfs.listxattr(ctx, e.nodeid));
    vfs.forget(e.nodeid, 1);
  }
  return errors;
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-image-ext-'));
  tree = path.join(work, 'tree');
  await fsp.mkdir(path.join(tree, 'dir'), { recursive: true });
  await fsp.writeFile(path.join(tree, 'hello.txt'), 'hello\n');
  await fsp.writeFile(path.join(tree, 'dir/data'), Buffer.alloc(200_000, 7));
  for (let i = 0; i < 200; i++) await fsp.writeFile(path.join(tree, `dir/small${i}`), `small ${i}\n`.repeat(200));
  await fsp.writeFile(path.join(tree, 'acl'), 'acl\n');
  // user::rw- user:1000:r-- group::r-- mask::r-- other::---
  const acl = '0x0200000001000600ffffffff02000400e803000004000400ffffffff10000400ffffffff20000000ffffffff';
  await run('setfattr', ['-n', 'system.posix_acl_access', '-v', acl, path.join(tree, 'acl')]);
  base = await image('base.img', '-I', '256');
});
after(() => fsp.rm(work, { recursive: true, force: true }));

void describe('ExtFs: bad images', () => {
  void it('names a missing image', () => openFails(path.join(work, 'nope.img'), /nope\.img: cannot open image: ENOENT/));

  void it('refuses a file that is not ext', async () => {
    const p = path.join(work, 'random.img');
    await fsp.writeFile(p, Buffer.alloc(1 << 20, 0x5a));
    await openFails(p, /bad superblock magic/);
    const tiny = path.join(work, 'tiny.img');
    await fsp.writeFile(tiny, 'tiny');
    await openFails(tiny, /too small/);
  });

  void it('refuses a zeroed superblock', async () => {
    const p = await copyOf(base, 'zeroed.img');
    await patch(p, 1024, Buffer.alloc(1024));
    await openFails(p, /bad superblock magic/);
  });

  void it('refuses a truncated image', async () => {
    const p = await copyOf(base, 'short.img');
    await fsp.truncate(p, 8 << 20);
    await openFails(p, /truncated/);
  });

  void it('refuses an unclean journal unless read-only was asked for', async () => {
    const p = await copyOf(base, 'unclean.img');
    await run('debugfs', ['-w', '-R', 'feature needs_recovery', p]);
    await openFails(p, /journal needs recovery/);
    const fs = await ExtFs.open(p, { readOnly: true });
    assert.equal((await readFile(fs, ROOT_ID, 'hello.txt')).toString(), 'hello\n');
    await fs.close();
  });

  void it('refuses a feature it does not understand', async () => {
    await openFails(await image('casefold.img', '-O', 'casefold'), /unsupported feature casefold/);
  });

  void it('gives EIO on a damaged directory and keeps the rest readable', async () => {
    const p = await copyOf(base, 'baddir.img');
    const { stdout } = await run('debugfs', ['-R', 'blocks /dir', p]);
    const block = Number(stdout.trim().split(/\s+/)[0]);
    assert.ok(block > 0);
    const bsize = (await statfsOf(p)).bsize;
    await patch(p, block * bsize, Buffer.alloc(bsize, 0xff));
    const fs = await ExtFs.open(p);
    const d = await fs.lookup(ctx, ROOT_ID, 'dir');
    await rejectsWith(fs.lookup(ctx, d.nodeid, 'data'), 'EIO');
    await rejectsWith(fs.opendir(ctx, d.nodeid), 'EIO');
    assert.equal((await readFile(fs, ROOT_ID, 'hello.txt')).toString(), 'hello\n');
    await fs.close();
  });

  void it('gives EIO on a file whose extent header is damaged', async () => {
    const p = await copyOf(base, 'badextent.img');
    await run('debugfs', ['-w', '-R', 'sif /dir/data block[0] 0', p]);
    const fs = await ExtFs.open(p);
    const d = await fs.lookup(ctx, ROOT_ID, 'dir');
    await assert.rejects(readFile(fs, d.nodeid, 'data'), (err: unknown) => err instanceof FsError && err.errno === Errno.EIO);
    await fs.close();
  });

  void it('survives random damage to its metadata without a crash', async () => {
    let seed = 12345;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    // The first 2 MiB hold the superblock, group descriptors, bitmaps and the inode table.
    for (let round = 0; round < 40; round++) {
      const p = await copyOf(base, 'fuzz.img');
      for (let i = 0; i < 64; i++) await patch(p, 1024 + rnd(2 << 20), Buffer.from([rnd(256)]));
      let fs: ExtFs;
      try {
        fs = await ExtFs.open(p);
      } catch (err) {
        assert.ok(err instanceof FsError, `round ${round}: open threw ${String(err)}`);
        continue;
      }
      await walk(fs, ROOT_ID);
      await fs.close();
    }
  });
});

void describe('ExtFs: contents', () => {
  let fs: ExtFs;
  before(async () => {
    fs = await ExtFs.open(base);
  });
  after(() => fs.close());

  void it('reads a fragmented file through a deep extent tree', async () => {
    const p = await copyOf(base, 'frag.img');
    // Freeing every other small file leaves holes, so debugfs's write of a big file fragments it.
    for (let i = 0; i < 200; i += 2) await run('debugfs', ['-w', '-R', `rm /dir/small${i}`, p]);
    const big = Buffer.alloc(3 << 20);
    for (let i = 0; i < big.length; i += 4) big.writeUInt32LE(i, i);
    await fsp.writeFile(path.join(work, 'big.src'), big);
    await run('debugfs', ['-w', '-R', `write ${path.join(work, 'big.src')} big`, p]);
    const { stdout } = await run('debugfs', ['-R', 'ex /big', p]);
    assert.match(stdout, /^\s*1\/\s*1/m, 'the extent tree has an index level');
    const frag = await ExtFs.open(p);
    assert.ok((await readFile(frag, ROOT_ID, 'big')).equals(big));
    await frag.close();
  });

  void it('reads POSIX ACLs in the xattr form the kernel uses', async () => {
    const e = await fs.lookup(ctx, ROOT_ID, 'acl');
    const { stdout } = await run('getfattr', ['-e', 'hex', '-n', 'system.posix_acl_access', '--absolute-names', path.join(tree, 'acl')]);
    const hex = /=0x([0-9a-f]+)/.exec(stdout)?.[1];
    assert.equal((await fs.getxattr(ctx, e.nodeid, 'system.posix_acl_access')).toString('hex'), hex);
    assert.ok((await fs.listxattr(ctx, e.nodeid)).includes('system.posix_acl_access'));
    await rejectsWith(fs.getxattr(ctx, e.nodeid, 'user.none'), 'ENODATA');
  });

  void it('reports statfs from the superblock', async () => {
    const st = await fs.statfs(ctx, ROOT_ID);
    assert.equal(st.bsize, 1024);
    assert.equal(st.blocks * st.bsize, 32 << 20);
    assert.ok(st.bfree > 0 && st.bfree < st.blocks && st.bavail <= st.bfree);
    assert.ok(st.ffree > 0 && st.ffree < st.files);
  });

  void it('keeps node ids while looked up and drops them after forget', async () => {
    const a = await fs.lookup(ctx, ROOT_ID, 'hello.txt');
    const b = await fs.lookup(ctx, ROOT_ID, 'hello.txt');
    assert.equal(a.nodeid, b.nodeid);
    fs.forget(a.nodeid, 2);
    await rejectsWith(fs.getattr(ctx, a.nodeid), 'ESTALE');
    const c = await fs.lookup(ctx, ROOT_ID, 'hello.txt');
    assert.equal(c.attr.ino, a.attr.ino);
    fs.forget(c.nodeid, 1);
    await rejectsWith(fs.lookup(ctx, ROOT_ID, 'missing'), 'ENOENT');
    await rejectsWith(fs.lookup(ctx, c.nodeid === ROOT_ID ? 0 : ROOT_ID, 'a/b'), 'EINVAL');
  });
});
