// IsoFs specifics beyond the tree comparison in test/conformance/images.test.ts: plain ISO 9660
// names, deep directories relocated by Rock Ridge (CL/RE), bad and damaged images (a clear error at
// open, EIO on the damaged directory, never a crash), and statfs.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '../../src/lib/errno.js';
import { IsoFs } from '../../src/sources/iso9660.js';
import { O_RDONLY, ROOT_ID, S_IFDIR, S_IFMT, S_IFREG, type Ctx } from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
const DEEP = 'a/b/c/d/e/f/g/h/i/j/k'.split('/');
let work = '';
let tree = '';
let rr = '';

async function iso(name: string, ...args: string[]): Promise<string> {
  const p = path.join(work, name);
  await run('xorriso', ['-as', 'mkisofs', '-quiet', ...args, '-o', p, tree]);
  return p;
}

async function readFile(fs: IsoFs, parent: number, name: string): Promise<string> {
  const e = await fs.lookup(ctx, parent, name);
  const o = await fs.open(ctx, e.nodeid, O_RDONLY);
  try {
    return (await fs.read(ctx, e.nodeid, o.fh, 0, e.attr.size)).toString();
  } finally {
    await fs.release(ctx, e.nodeid, o.fh);
  }
}

async function openFails(file: string, pattern: RegExp): Promise<void> {
  await assert.rejects(IsoFs.open(file), (err: unknown) => {
    assert.ok(err instanceof FsError, `expected FsError, got ${String(err)}`);
    assert.match(err.message, pattern);
    assert.ok(!err.message.includes('\n'), 'one line');
    return true;
  });
}

async function patch(file: string, offset: number, data: Buffer): Promise<void> {
  const fh = await fsp.open(file, 'r+');
  await fh.write(data, 0, data.length, offset);
  await fh.close();
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-image-iso-'));
  tree = path.join(work, 'tree');
  await fsp.mkdir(path.join(tree, ...DEEP), { recursive: true });
  await fsp.writeFile(path.join(tree, ...DEEP, 'leaf'), 'deep leaf\n');
  await fsp.writeFile(path.join(tree, 'readme.txt'), 'read me\n');
  await fsp.mkdir(path.join(tree, 'many'));
  for (let i = 0; i < 100; i++) await fsp.writeFile(path.join(tree, 'many', `file-${i}`), `${i}\n`);
  rr = await iso('rr.iso', '-R', '-rr_reloc_dir', 'rr_moved');
});
after(() => fsp.rm(work, { recursive: true, force: true }));

void describe('IsoFs', () => {
  void it('follows relocated deep directories (CL) and hides their relocated copies (RE)', async () => {
    const fs = await IsoFs.open(rr);
    let id = ROOT_ID;
    for (const name of DEEP) {
      const e = await fs.lookup(ctx, id, name);
      assert.equal(e.attr.mode & S_IFMT, S_IFDIR, name);
      id = e.nodeid;
    }
    assert.equal(await readFile(fs, id, 'leaf'), 'deep leaf\n');
    const up = await fs.lookup(ctx, id, '..');
    assert.equal((await fs.lookup(ctx, up.nodeid, 'k')).nodeid, id);
    const o = await fs.opendir(ctx, ROOT_ID);
    const names = (await fs.readdir(ctx, ROOT_ID, o.fh, 0, 100, false)).map((d) => d.name).sort();
    assert.deepEqual(names, ['.', '..', 'a', 'many', 'readme.txt']);
    await fs.releasedir(ctx, ROOT_ID, o.fh);
    const st = await fs.statfs(ctx, ROOT_ID);
    assert.equal(st.bsize, 2048);
    assert.equal(st.blocks * 2048, (await fsp.stat(rr)).size);
    await fs.close();
  });

  void it('maps plain ISO 9660 names as Linux does (lowercase, no version)', async () => {
    // xorriso's mkisofs emulation always adds Rock Ridge; its native commands can leave it out.
    const plain = path.join(work, 'plain.iso');
    await run('xorriso', ['-outdev', plain, '-rockridge', 'off', '-joliet', 'off', '-map', tree, '/']);
    const fs = await IsoFs.open(plain);
    const e = await fs.lookup(ctx, ROOT_ID, 'readme.txt');
    assert.equal(e.attr.mode, S_IFREG | 0o444);
    assert.equal(await readFile(fs, ROOT_ID, 'readme.txt'), 'read me\n');
    const many = await fs.lookup(ctx, ROOT_ID, 'many');
    assert.equal(many.attr.mode, S_IFDIR | 0o555);
    await fs.close();
  });

  void it('refuses what is not an ISO image, and truncated images', async () => {
    await openFails(path.join(work, 'none.iso'), /none\.iso: cannot open image: ENOENT/);
    const junk = path.join(work, 'junk.iso');
    await fsp.writeFile(junk, Buffer.alloc(1 << 20, 0x33));
    await openFails(junk, /no primary volume descriptor/);
    const short = path.join(work, 'short.iso');
    await fsp.copyFile(rr, short);
    await fsp.truncate(short, 40 * 2048);
    await openFails(short, /truncated/);
  });

  void it('gives EIO on a damaged directory and keeps the rest readable', async () => {
    const p = path.join(work, 'baddir.iso');
    await fsp.copyFile(rr, p);
    const fs0 = await IsoFs.open(p);
    const many = await fs0.lookup(ctx, ROOT_ID, 'many');
    // Directories are keyed by their extent's byte position, which is also their st_ino.
    const dirPos = many.attr.ino;
    await fs0.close();
    // A record claiming 40 bytes with a 200-byte name cannot be parsed.
    const rec = Buffer.alloc(40);
    rec[0] = 40;
    rec[32] = 200;
    await patch(p, dirPos, rec);
    const fs = await IsoFs.open(p);
    const d = await fs.lookup(ctx, ROOT_ID, 'many');
    await rejectsWith(fs.lookup(ctx, d.nodeid, 'file-1'), 'EIO');
    assert.equal(await readFile(fs, ROOT_ID, 'readme.txt'), 'read me\n');
    await fs.close();
  });

  void it('survives random damage without a crash', async () => {
    let seed = 99;
    const rnd = (n: number): number => {
      seed = (seed * 1103515245 + 12345) >>> 0;
      return seed % n;
    };
    const size = (await fsp.stat(rr)).size;
    const p = path.join(work, 'fuzz.iso');
    for (let round = 0; round < 40; round++) {
      await fsp.copyFile(rr, p);
      // Descriptors and directories sit in the first ~100 sectors.
      for (let i = 0; i < 48; i++) await patch(p, 16 * 2048 + rnd(Math.min(size, 120 * 2048) - 16 * 2048), Buffer.from([rnd(256)]));
      let fs: IsoFs;
      try {
        fs = await IsoFs.open(p);
      } catch (err) {
        assert.ok(err instanceof FsError, `round ${round}: open threw ${String(err)}`);
        continue;
      }
      const visit = async (id: number, depth: number): Promise<void> => {
        let list;
        try {
          const o = await fs.opendir(ctx, id);
          list = await fs.readdir(ctx, id, o.fh, 0, 1000, true);
          await fs.releasedir(ctx, id, o.fh);
        } catch (err) {
          assert.ok(err instanceof FsError, `round ${round}: readdir threw ${String(err)}`);
          return;
        }
        for (const d of list) {
          if (!d.entry) continue;
          const a = d.entry.attr;
          try {
            if ((a.mode & S_IFMT) === S_IFDIR && depth < 14) await visit(d.entry.nodeid, depth + 1);
            else if ((a.mode & S_IFMT) === S_IFREG) {
              const o = await fs.open(ctx, d.entry.nodeid, O_RDONLY);
              await fs.read(ctx, d.entry.nodeid, o.fh, 0, Math.min(a.size, 1 << 20));
              await fs.release(ctx, d.entry.nodeid, o.fh);
            }
          } catch (err) {
            assert.ok(err instanceof FsError, `round ${round}: ${d.name} threw ${String(err)}`);
          }
          fs.forget(d.entry.nodeid, 1);
        }
      };
      await visit(ROOT_ID, 0);
      await fs.close();
    }
  });
});
