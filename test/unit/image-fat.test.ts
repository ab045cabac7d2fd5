// FatFs against the format's own tools: images made by mkfs.vfat -F 12/16/32 and filled by mcopy are
// read back through the Vfs and compared with the tree; then changes made through the Vfs (writes at
// offsets, zero-filled extension, truncation, long and unicode names, ~N short names, renames across
// directories, deletes, a directory past one cluster, concurrent writers, ENOSPC) are mirrored on a
// local model tree, and after close() fsck.vfat -n must pass and mcopy must extract exactly the model.
// Damaged images (truncated, zeroed boot sector, another file system, a FAT chain loop, a cluster out
// of range) must give a one-line error at open or EIO on the damaged file, and no write.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { FsError } from '../../src/lib/errno.js';
import { FatFs, type FatType } from '../../src/sources/fat.js';
import { openSource } from '../../src/sources/index.js';
import { O_RDONLY, O_RDWR, O_WRONLY, ROOT_ID, S_IFDIR, S_IFIFO, S_IFMT, S_IFREG, type Ctx, type Vfs } from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const execFileP = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
const toolEnv = { ...process.env, TZ: 'UTC', MTOOLS_SKIP_CHECK: '1' };
let work = '';
let tree = '';

async function run(cmd: string, args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const r = await execFileP(cmd, args, { env: toolEnv, maxBuffer: 64 << 20, timeout: 60_000 });
    return { code: 0, stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as { code?: number; stdout?: string; stderr?: string };
    if (typeof e.code !== 'number') throw err;
    return { code: e.code, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
  }
}

function pattern(len: number, seed: number): Buffer {
  const b = Buffer.alloc(len);
  let x = (seed * 2654435761) >>> 0;
  for (let i = 0; i < len; i++) {
    x = (x * 1103515245 + 12345) >>> 0;
    b[i] = x >>> 24;
  }
  return b;
}

async function makeTree(root: string): Promise<void> {
  const w = (p: string, data: string | Buffer): Promise<void> => fsp.writeFile(path.join(root, p), data);
  await fsp.mkdir(path.join(root, 'dir/sub/deeper'), { recursive: true });
  await fsp.mkdir(path.join(root, 'many'));
  await w('hello.txt', 'hello, fat\n');
  await w('UPPER.TXT', 'upper\n');
  await w('MixedCase.Txt', 'mixed\n');
  await w('empty', '');
  await w('dir/big.bin', pattern(300_123, 1));
  await w('dir/sub/deeper/leaf', 'deep\n');
  await w(`dir/${'long-name-'.repeat(10)}end.data`, 'a long name\n');
  await w('dir/ünïcødé €.txt', 'unicode\n');
  for (let i = 1; i <= 12; i++) await w(`dir/longfilename${i}.txt`, `tail ${i}\n`);
  // More entries than one cluster of a directory holds, with long names (two slots each).
  for (let i = 0; i < 150; i++) await w(`many/file number ${i}.txt`, `file ${i}\n`);
}

/** Makes a FAT image of the given type holding `src` (or empty). */
async function makeImage(name: string, type: FatType, src?: string): Promise<string> {
  const img = path.join(work, name);
  const kib = type === 'fat12' ? 3000 : type === 'fat16' ? 20000 : 40000;
  const mk = await run('mkfs.vfat', ['-F', type.slice(3), '-C', img, String(kib)]);
  assert.equal(mk.code, 0, mk.stderr);
  if (src) {
    const entries = (await fsp.readdir(src)).map((n) => path.join(src, n));
    const cp = await run('mcopy', ['-s', '-i', img, ...entries, '::']);
    assert.equal(cp.code, 0, cp.stderr);
  }
  return img;
}

async function readAll(vfs: Vfs, node: number): Promise<Buffer> {
  const o = await vfs.open(ctx, node, O_RDONLY);
  try {
    const parts: Buffer[] = [];
    for (let off = 0; ;) {
      const b = await vfs.read(ctx, node, o.fh, off, 70_001);
      if (b.length === 0) break;
      parts.push(b);
      off += b.length;
    }
    return Buffer.concat(parts);
  } finally {
    await vfs.release(ctx, node, o.fh);
  }
}

async function names(vfs: Vfs, dir: number): Promise<Map<string, number>> {
  const o = await vfs.opendir(ctx, dir);
  const out = new Map<string, number>();
  for (let off = 0; ;) {
    const batch = await vfs.readdir(ctx, dir, o.fh, off, 13, false);
    if (batch.length === 0) break;
    for (const e of batch) if (e.name !== '.' && e.name !== '..') out.set(e.name, e.type);
    off = batch[batch.length - 1]!.off;
  }
  await vfs.releasedir(ctx, dir, o.fh);
  return out;
}

/** Every name, type, size and byte under `node` equals the local directory `dir`. */
async function compareTree(vfs: Vfs, node: number, dir: string): Promise<number> {
  const local = (await fsp.readdir(dir)).sort();
  const listed = await names(vfs, node);
  assert.deepEqual([...listed.keys()].sort(), local, `listing of ${dir}`);
  let files = 0;
  for (const name of local) {
    const p = path.join(dir, name);
    const st = await fsp.stat(p);
    const e = await vfs.lookup(ctx, node, name);
    if (st.isDirectory()) {
      assert.equal(e.attr.mode, S_IFDIR | 0o755, `mode of ${p}`);
      assert.equal(listed.get(name), S_IFDIR);
      files += await compareTree(vfs, e.nodeid, p);
      assert.equal((await vfs.lookup(ctx, e.nodeid, '..')).nodeid, node, `.. of ${p}`);
    } else {
      assert.equal(e.attr.mode & S_IFMT, S_IFREG, `type of ${p}`);
      assert.equal(e.attr.size, st.size, `size of ${p}`);
      assert.ok((await readAll(vfs, e.nodeid)).equals(await fsp.readFile(p)), `contents of ${p}`);
      files++;
    }
  }
  return files;
}

async function fsck(img: string): Promise<string> {
  const r = await run('fsck.vfat', ['-n', img]);
  assert.equal(r.code, 0, `fsck.vfat -n ${img}: ${r.stdout}${r.stderr}`);
  return r.stdout;
}

/** Extracts the image with mtools and compares it with the model tree, byte for byte. */
async function mtoolsMatch(img: string, model: string): Promise<void> {
  const out = await fsp.mkdtemp(path.join(work, 'out-'));
  const top = (await run('mdir', ['-i', img, '-b', '::'])).stdout.trim().split('\n').filter(Boolean);
  if (top.length) {
    const cp = await run('mcopy', ['-s', '-n', '-i', img, ...top, out]);
    assert.equal(cp.code, 0, cp.stderr);
  }
  const d = await run('diff', ['-r', model, out]);
  assert.equal(d.code, 0, `diff -r model mtools-extract:\n${d.stdout}${d.stderr}`);
  await fsp.rm(out, { recursive: true, force: true });
}

async function writeFile(vfs: Vfs, dir: number, name: string, data: Buffer | string): Promise<number> {
  const c = await vfs.create(ctx, dir, name, S_IFREG | 0o644, O_WRONLY);
  const b = typeof data === 'string' ? Buffer.from(data) : data;
  // Odd-sized pieces cross cluster boundaries.
  for (let off = 0; off < b.length; off += 7777) {
    assert.equal(await vfs.write(ctx, c.entry.nodeid, c.fh, off, b.subarray(off, off + 7777)), Math.min(7777, b.length - off));
  }
  await vfs.release(ctx, c.entry.nodeid, c.fh);
  return c.entry.nodeid;
}

async function writeAt(vfs: Vfs, node: number, off: number, data: Buffer): Promise<void> {
  const o = await vfs.open(ctx, node, O_RDWR);
  assert.equal(await vfs.write(ctx, node, o.fh, off, data), data.length);
  await vfs.release(ctx, node, o.fh);
}

before(async () => {
  work = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-fat-unit-'));
  tree = path.join(work, 'tree');
  await fsp.mkdir(tree);
  await makeTree(tree);
});
after(() => fsp.rm(work, { recursive: true, force: true }));

for (const type of ['fat12', 'fat16', 'fat32'] as const) {
  void describe(`FatFs on ${type.toUpperCase()}`, () => {
    let img = '';
    let model = '';
    before(async () => {
      img = await makeImage(`${type}.img`, type, tree);
      model = path.join(work, `model-${type}`);
      await fsp.cp(tree, model, { recursive: true });
    });

    void it('detects the type from the cluster count and reads the tree mcopy wrote', async () => {
      const fs = await FatFs.open(img);
      try {
        assert.equal(fs.fatType, type);
        assert.deepEqual(fs.info(), { type: 'vfat', readOnly: false, coherent: true });
        const files = await compareTree(fs, ROOT_ID, tree);
        assert.ok(files > 160, `${files} files compared`);
        // Lookups fold case, as FAT does; the listing keeps the stored case.
        const a = await fs.lookup(ctx, ROOT_ID, 'hello.txt');
        const b = await fs.lookup(ctx, ROOT_ID, 'HELLO.TXT');
        assert.equal(a.nodeid, b.nodeid);
        assert.equal((await fs.lookup(ctx, ROOT_ID, 'mixedcase.txt')).attr.size, 6);
        // A file may also be found by its 8.3 alias.
        const dir = await fs.lookup(ctx, ROOT_ID, 'dir');
        assert.equal((await fs.lookup(ctx, dir.nodeid, 'LONGFI~1.TXT')).attr.size, 'tail 1\n'.length);
      } finally {
        await fs.close();
      }
      await fsck(img);
      const before = await fsp.readFile(img);
      const ro = await FatFs.open(img, { readOnly: true });
      try {
        assert.equal(ro.info().readOnly, true);
        await rejectsWith(ro.create(ctx, ROOT_ID, 'new', S_IFREG | 0o644, O_RDWR), 'EROFS');
        await rejectsWith(ro.mkdir(ctx, ROOT_ID, 'newdir', 0o755), 'EROFS');
        const h = await ro.lookup(ctx, ROOT_ID, 'hello.txt');
        await rejectsWith(ro.open(ctx, h.nodeid, O_WRONLY), 'EROFS');
        assert.equal((await readAll(ro, h.nodeid)).toString(), 'hello, fat\n');
      } finally {
        await ro.close();
      }
      assert.ok((await fsp.readFile(img)).equals(before), 'a read-only open writes nothing');
    });

    void it('writes, truncates, renames and deletes; fsck.vfat is clean and mtools sees the same', async () => {
      const fs = await FatFs.open(img);
      const m = (p: string): string => path.join(model, p);
      try {
        const dir = (await fs.lookup(ctx, ROOT_ID, 'dir')).nodeid;
        const free0 = (await fs.statfs(ctx, ROOT_ID)).bfree;
        // Overwrite in the middle, then extend past the end with a gap that must read as zeros.
        const hello = (await fs.lookup(ctx, ROOT_ID, 'hello.txt')).nodeid;
        await writeAt(fs, hello, 7, Buffer.from('FAT'));
        await writeAt(fs, hello, 70_000, Buffer.from('tail'));
        const h = Buffer.alloc(70_004);
        Buffer.from('hello, FAT\n').copy(h);
        Buffer.from('tail').copy(h, 70_000);
        await fsp.writeFile(m('hello.txt'), h);
        assert.ok((await readAll(fs, hello)).equals(h));
        // Truncate down (freeing clusters), then up again (zeros, not the old bytes).
        const big = (await fs.lookup(ctx, dir, 'big.bin')).nodeid;
        assert.equal((await fs.setattr(ctx, big, { size: 1000 })).size, 1000);
        assert.ok((await fs.statfs(ctx, ROOT_ID)).bfree > free0, 'truncation frees clusters');
        assert.equal((await fs.setattr(ctx, big, { size: 5000 })).size, 5000);
        const bigWant = Buffer.concat([pattern(300_123, 1).subarray(0, 1000), Buffer.alloc(4000)]);
        assert.ok((await readAll(fs, big)).equals(bigWant));
        await fsp.writeFile(m('dir/big.bin'), bigWant);
        // New files with long, unicode and 8.3-colliding names.
        const data = pattern(123_457, 7);
        await writeFile(fs, ROOT_ID, 'A New File With A Long Name.bin', data);
        await fsp.writeFile(m('A New File With A Long Name.bin'), data);
        await writeFile(fs, dir, 'longfilename13.txt', 'thirteen\n');
        await fsp.writeFile(m('dir/longfilename13.txt'), 'thirteen\n');
        await writeFile(fs, dir, 'Ελληνικά και 日本語.txt', 'greek and japanese\n');
        await fsp.writeFile(m('dir/Ελληνικά και 日本語.txt'), 'greek and japanese\n');
        await rejectsWith(fs.create(ctx, ROOT_ID, 'HELLO.txt', S_IFREG | 0o644, O_RDWR), 'EEXIST');
        await rejectsWith(fs.create(ctx, ROOT_ID, 'bad:name', S_IFREG | 0o644, O_RDWR), 'EINVAL');
        // A new directory grown past one cluster of entries.
        const bulk = (await fs.mkdir(ctx, ROOT_ID, 'Bulk Directory', 0o755)).nodeid;
        await fsp.mkdir(m('Bulk Directory'));
        for (let i = 0; i < 120; i++) {
          await writeFile(fs, bulk, `entry with a long name ${i}.txt`, `${i}\n`);
          await fsp.writeFile(m(`Bulk Directory/entry with a long name ${i}.txt`), `${i}\n`);
        }
        assert.ok((await fs.getattr(ctx, bulk)).size > 4096, 'the directory spans several clusters');
        // Deletes: every third of "many", one in the bulk directory.
        const many = (await fs.lookup(ctx, ROOT_ID, 'many')).nodeid;
        for (let i = 0; i < 150; i += 3) {
          await fs.unlink(ctx, many, `file number ${i}.txt`);
          await fsp.rm(m(`many/file number ${i}.txt`));
        }
        await rejectsWith(fs.unlink(ctx, many, 'file number 0.txt'), 'ENOENT');
        await rejectsWith(fs.rmdir(ctx, ROOT_ID, 'many'), 'ENOTEMPTY');
        await rejectsWith(fs.unlink(ctx, ROOT_ID, 'many'), 'EISDIR');
        // Renames: a case-only rename, across directories, replacing a file, a directory moved up.
        await fs.rename(ctx, ROOT_ID, 'hello.txt', ROOT_ID, 'Hello.TXT', 0);
        await fsp.rename(m('hello.txt'), m('Hello.TXT'));
        assert.ok((await names(fs, ROOT_ID)).has('Hello.TXT'));
        await fs.rename(ctx, ROOT_ID, 'UPPER.TXT', dir, 'moved from the root.txt', 0);
        await fsp.rename(m('UPPER.TXT'), m('dir/moved from the root.txt'));
        await fs.rename(ctx, dir, 'longfilename1.txt', dir, 'longfilename2.txt', 0);
        await fsp.rename(m('dir/longfilename1.txt'), m('dir/longfilename2.txt'));
        const sub = (await fs.lookup(ctx, dir, 'sub')).nodeid;
        await fs.rename(ctx, dir, 'sub', bulk, 'Moved Sub', 0);
        await fsp.rename(m('dir/sub'), m('Bulk Directory/Moved Sub'));
        assert.equal((await fs.lookup(ctx, sub, '..')).nodeid, bulk);
        await rejectsWith(fs.rename(ctx, ROOT_ID, 'Bulk Directory', sub, 'inside', 0), 'EINVAL');
        // rmdir of an emptied directory.
        const deeper = (await fs.lookup(ctx, sub, 'deeper')).nodeid;
        await fs.unlink(ctx, deeper, 'leaf');
        await fs.rmdir(ctx, sub, 'deeper');
        await fsp.rm(m('Bulk Directory/Moved Sub/deeper'), { recursive: true });
        // A directory removed while open: ENOENT inside it, its cluster freed once closed.
        const gone = (await fs.mkdir(ctx, ROOT_ID, 'open while removed', 0o755)).nodeid;
        const od = await fs.opendir(ctx, gone);
        await fs.rmdir(ctx, ROOT_ID, 'open while removed');
        await rejectsWith(fs.create(ctx, gone, 'x', S_IFREG | 0o644, O_RDWR), 'ENOENT');
        assert.equal((await fs.getattr(ctx, gone)).nlink, 0);
        await fs.releasedir(ctx, gone, od.fh);
        fs.forget(gone, 1);
        // An unlinked open file keeps its clusters until released.
        const c = await fs.create(ctx, ROOT_ID, 'scratch', S_IFREG | 0o644, O_RDWR);
        await fs.write(ctx, c.entry.nodeid, c.fh, 0, pattern(50_000, 3));
        await fs.unlink(ctx, ROOT_ID, 'scratch');
        assert.equal((await fs.read(ctx, c.entry.nodeid, c.fh, 49_990, 100)).length, 10);
        await fs.release(ctx, c.entry.nodeid, c.fh);
        fs.forget(c.entry.nodeid, 1);
        // Many writers at once: the mutex keeps the FAT whole.
        await fsp.mkdir(m('parallel'));
        const par = (await fs.mkdir(ctx, ROOT_ID, 'parallel', 0o755)).nodeid;
        await Promise.all(Array.from({ length: 24 }, async (_, i) => {
          const d = pattern(9_000 + i * 517, 100 + i);
          await writeFile(fs, par, `concurrent writer ${i}`, d);
          await fsp.writeFile(m(`parallel/concurrent writer ${i}`), d);
        }));
        assert.equal(await compareTree(fs, ROOT_ID, model) > 250, true);
      } finally {
        await fs.close();
      }
      const out = await fsck(img);
      // statfs agrees with fsck's count of used clusters.
      const used = /(\d+)\/(\d+) clusters/.exec(out);
      assert.ok(used, out);
      const fs2 = await FatFs.open(img, { readOnly: true });
      const st = await fs2.statfs(ctx, ROOT_ID);
      assert.equal(st.blocks, Number(used[2]));
      assert.equal(st.blocks - st.bfree, Number(used[1]), 'free clusters');
      await compareTree(fs2, ROOT_ID, model);
      await fs2.close();
      await mtoolsMatch(img, model);
      const listing = (await run('mdir', ['-i', img, '-/', '::'])).stdout;
      assert.match(listing, /A New File With A Long Name\.bin/);
      assert.match(listing, /entry with a long name 119\.txt/);
      assert.equal((await run('mtype', ['-i', img, '::/dir/moved from the root.txt'])).stdout, 'upper\n');
    });

    void it('maps the read-only attribute to mode bits; refuses what vfat cannot hold', async () => {
      const fs = await FatFs.open(img);
      try {
        const f = (await fs.lookup(ctx, ROOT_ID, 'empty')).nodeid;
        assert.equal((await fs.getattr(ctx, f)).mode, S_IFREG | 0o644);
        assert.equal((await fs.setattr(ctx, f, { mode: 0o444 })).mode, S_IFREG | 0o444);
        await rejectsWith(fs.setattr(ctx, f, { mode: 0o600 }), 'EPERM');
        await rejectsWith(fs.setattr(ctx, f, { mode: 0o755 }), 'EPERM');
        await rejectsWith(fs.setattr(ctx, f, { uid: 1000 }), 'EPERM');
        await fs.setattr(ctx, f, { uid: 0, gid: 0 });
        const d = (await fs.lookup(ctx, ROOT_ID, 'many')).nodeid;
        await rejectsWith(fs.setattr(ctx, d, { mode: 0o555 }), 'EPERM');
        await rejectsWith(fs.symlink(ctx, ROOT_ID, 'link', 'empty'), 'EPERM');
        await rejectsWith(fs.link(ctx, f, ROOT_ID, 'hard'), 'EPERM');
        await rejectsWith(fs.mknod(ctx, ROOT_ID, 'fifo', S_IFIFO | 0o644, 0), 'EPERM');
        await rejectsWith(fs.setxattr(ctx, f, 'user.x', Buffer.from('y'), 0), 'EOPNOTSUPP');
        assert.deepEqual(await fs.listxattr(ctx, f), []);
        // Times: 2-second write time, day-granular access date.
        const a = await fs.setattr(ctx, f, { mtime: { sec: 1_000_000_001, nsec: 5 }, atime: { sec: 1_000_000_000, nsec: 0 } });
        assert.deepEqual(a.mtime, { sec: 1_000_000_000, nsec: 0 });
        assert.equal(a.atime.sec, Date.UTC(2001, 8, 9) / 1000);
      } finally {
        await fs.close();
      }
      await fsck(img);
      assert.match((await run('mattrib', ['-i', img, '::/empty'])).stdout, /R/);
      assert.match((await run('mdir', ['-i', img, '::/empty'])).stdout, /2001-09-09 +1:46/);
    });
  });
}

void describe('FatFs limits and damage', () => {
  void it('fills a FAT12 volume to ENOSPC and stays consistent', async () => {
    const img = await makeImage('full.img', 'fat12');
    const fs = await FatFs.open(img);
    let written = 0;
    try {
      const c = await fs.create(ctx, ROOT_ID, 'filler', S_IFREG | 0o644, O_WRONLY);
      const chunk = Buffer.alloc(256 * 1024, 0x5a);
      for (;;) {
        try {
          written += await fs.write(ctx, c.entry.nodeid, c.fh, written, chunk);
        } catch (err) {
          assert.ok(err instanceof FsError && err.errno === 28, String(err));
          break;
        }
      }
      await fs.release(ctx, c.entry.nodeid, c.fh);
      assert.ok(written > 2_000_000, `${written} bytes before ENOSPC`);
      assert.equal((await fs.getattr(ctx, c.entry.nodeid)).size, written);
    } finally {
      await fs.close();
    }
    await fsck(img);
    assert.equal((await run('mdir', ['-i', img, '::/filler'])).stdout.includes('filler'), true);
  });

  const openFails = async (spec: string, re: RegExp): Promise<void> => {
    await assert.rejects(openSource(spec), (err: unknown) => {
      assert.ok(err instanceof Error);
      assert.match(err.message, re);
      assert.ok(!err.message.includes('\n'), 'one line');
      return true;
    });
  };

  void it('refuses a truncated image, a zeroed boot sector, another file system, the wrong FAT type', async () => {
    const good = await makeImage('good32.img', 'fat32', tree);
    const cut = path.join(work, 'cut.img');
    await fsp.copyFile(good, cut);
    await fsp.truncate(cut, 1 << 20);
    await openFails(`fat:${cut}`, /truncated: the volume needs \d+ bytes, the image has 1048576/);
    const zeroed = path.join(work, 'zeroed.img');
    await fsp.copyFile(good, zeroed);
    const fh = await fsp.open(zeroed, 'r+');
    await fh.write(Buffer.alloc(512), 0, 512, 0);
    await fh.close();
    await openFails(`fat:${zeroed}`, /not a usable FAT file system: no boot sector signature/);
    const ext = path.join(work, 'ext.img');
    assert.equal((await run('mkfs.ext4', ['-q', ext, '4M'])).code, 0);
    await openFails(`vfat:${ext}`, /not a usable FAT file system/);
    await openFails(`fat16:${good}`, /it is FAT32, not FAT16/);
    await openFails(`fat:${path.join(work, 'missing.img')}`, /cannot open image: ENOENT/);
    await openFails('nosuchtype:x', /known types: .*\bfat\b.*\bvfat\b/);
    // The right type opens through every alias.
    for (const spec of [`fat:${good}`, `vfat:${good}`, `fat32:${good}`]) await (await openSource(spec)).close();
  });

  void it('a FAT chain loop or an out-of-range cluster is EIO on that file only, and nothing is written', async () => {
    const src = path.join(work, 'damage-src');
    await fsp.mkdir(src);
    await fsp.writeFile(path.join(src, 'LOOP.BIN'), pattern(6000, 9));
    await fsp.writeFile(path.join(src, 'RANGE.BIN'), pattern(6000, 10));
    await fsp.writeFile(path.join(src, 'GOOD.TXT'), 'still fine\n');
    const img = await makeImage('damaged.img', 'fat16', src);
    // Find each file's first cluster in the root directory (fatgen: BPB at 11.., entries of 32 bytes).
    const bytes = await fsp.readFile(img);
    const bps = bytes.readUInt16LE(11);
    const spc = bytes[13]!;
    const fatPos = bytes.readUInt16LE(14) * bps;
    const rootPos = fatPos + bytes[16]! * bytes.readUInt16LE(22) * bps;
    const first = (name: string): number => {
      for (let p = rootPos; ; p += 32) {
        if (bytes.toString('latin1', p, p + 11) === name) return bytes.readUInt16LE(p + 26);
        assert.ok(p < rootPos + 512 * 32, `${name} not found`);
      }
    };
    const clusters = Math.ceil(6000 / (bps * spc));
    assert.ok(clusters >= 2, 'the files span several clusters');
    const loop = first('LOOP    BIN');
    const range = first('RANGE   BIN');
    // LOOP's last cluster points back at its first; RANGE's second entry points far past the end.
    const fh = await fsp.open(img, 'r+');
    for (const copy of [0, 1]) {
      const base = fatPos + copy * bytes.readUInt16LE(22) * bps;
      const b = Buffer.alloc(2);
      b.writeUInt16LE(loop, 0);
      await fh.write(b, 0, 2, base + (loop + clusters - 1) * 2);
      b.writeUInt16LE(0xfff0, 0);
      await fh.write(b, 0, 2, base + (range + 1) * 2);
    }
    await fh.close();
    const before = await fsp.readFile(img);
    const fs = await FatFs.open(img);
    try {
      for (const name of ['LOOP.BIN', 'RANGE.BIN']) {
        const e = await fs.lookup(ctx, ROOT_ID, name);
        const o = await fs.open(ctx, e.nodeid, O_RDWR);
        await rejectsWith(fs.read(ctx, e.nodeid, o.fh, 0, 10_000), 'EIO');
        await rejectsWith(fs.write(ctx, e.nodeid, o.fh, 0, Buffer.from('x')), 'EIO');
        await rejectsWith(fs.write(ctx, e.nodeid, o.fh, 100_000, Buffer.from('x')), 'EIO');
        await rejectsWith(fs.setattr(ctx, e.nodeid, { size: 1 }), 'EIO');
        await fs.release(ctx, e.nodeid, o.fh);
        await rejectsWith(fs.unlink(ctx, ROOT_ID, name), 'EIO');
        await rejectsWith(fs.rename(ctx, ROOT_ID, 'GOOD.TXT', ROOT_ID, name, 0), 'EIO');
      }
      const good = await fs.lookup(ctx, ROOT_ID, 'good.txt');
      assert.equal((await readAll(fs, good.nodeid)).toString(), 'still fine\n');
    } finally {
      await fs.close();
    }
    // Nothing at all was written: the damage did not spread, and no state flag was left behind.
    assert.ok((await fsp.readFile(img)).equals(before), 'the image is unchanged');
    const r = await run('fsck.vfat', ['-n', img]);
    assert.notEqual(r.code, 0, 'fsck still sees the damage we made');
  });
});
