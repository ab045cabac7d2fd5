// The FUSE ABI against the kernel header: every struct size we rely on is pinned (and, where a C
// compiler is present, checked against /usr/include/linux/fuse.h itself), each encoder writes
// exactly its struct, decoders round-trip, and random bytes make decoders throw ProtocolError only.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { ProtocolError, Reader, Writer } from '../../src/lib/bytes.js';
import * as abi from '../../src/fuse/abi.js';
import type { Attr, Entry } from '../../src/vfs/types.js';

// sizeof each struct in fuse.h (protocol 7.38), by hand from the header.
const SIZES: Record<string, number> = {
  fuse_in_header: 40, fuse_out_header: 16, fuse_attr: 88, fuse_entry_out: 128, fuse_attr_out: 104,
  fuse_init_in: 64, fuse_init_out: 64, fuse_open_out: 16, fuse_kstatfs: 80, fuse_write_out: 8,
  fuse_getxattr_out: 8, fuse_lseek_out: 8, fuse_dirent: 24, fuse_direntplus: 152,
  fuse_notify_inval_inode_out: 24, fuse_notify_inval_entry_out: 16, fuse_notify_delete_out: 24, fuse_notify_store_out: 24,
  fuse_setattr_in: 88, fuse_getattr_in: 16, fuse_mknod_in: 16, fuse_mkdir_in: 8, fuse_rename_in: 8,
  fuse_rename2_in: 16, fuse_link_in: 8, fuse_open_in: 8, fuse_create_in: 16, fuse_read_in: 40,
  fuse_write_in: 40, fuse_release_in: 24, fuse_flush_in: 24, fuse_fsync_in: 16, fuse_getxattr_in: 8,
  fuse_access_in: 8, fuse_interrupt_in: 8, fuse_forget_in: 8, fuse_batch_forget_in: 8,
  fuse_forget_one: 16, fuse_fallocate_in: 32, fuse_lseek_in: 24, fuse_copy_file_range_in: 56,
  fuse_lk_in: 48, fuse_bmap_in: 16, fuse_ioctl_in: 32, fuse_poll_in: 24,
};

// Our constants and table entries, named by the struct they stand for.
const OURS: Record<string, number> = {
  fuse_in_header: abi.IN_HEADER_SIZE, fuse_out_header: abi.OUT_HEADER_SIZE, fuse_attr: abi.ATTR_SIZE,
  fuse_entry_out: abi.ENTRY_OUT_SIZE, fuse_attr_out: abi.ATTR_OUT_SIZE, fuse_init_in: abi.INIT_IN_SIZE,
  fuse_init_out: abi.INIT_OUT_SIZE, fuse_open_out: abi.OPEN_OUT_SIZE, fuse_kstatfs: abi.KSTATFS_SIZE,
  fuse_write_out: abi.WRITE_OUT_SIZE, fuse_getxattr_out: abi.GETXATTR_OUT_SIZE, fuse_lseek_out: abi.LSEEK_OUT_SIZE,
  fuse_dirent: abi.DIRENT_NAME_OFFSET, fuse_direntplus: abi.DIRENTPLUS_NAME_OFFSET,
  fuse_notify_inval_inode_out: abi.NOTIFY_INVAL_INODE_SIZE, fuse_notify_inval_entry_out: abi.NOTIFY_INVAL_ENTRY_SIZE,
  fuse_notify_delete_out: abi.NOTIFY_DELETE_SIZE, fuse_notify_store_out: abi.NOTIFY_STORE_SIZE,
};
const TABLE: Record<string, number> = {
  fuse_setattr_in: abi.Op.SETATTR, fuse_getattr_in: abi.Op.GETATTR, fuse_mknod_in: abi.Op.MKNOD,
  fuse_mkdir_in: abi.Op.MKDIR, fuse_rename_in: abi.Op.RENAME, fuse_rename2_in: abi.Op.RENAME2,
  fuse_link_in: abi.Op.LINK, fuse_open_in: abi.Op.OPEN, fuse_create_in: abi.Op.CREATE, fuse_read_in: abi.Op.READ,
  fuse_write_in: abi.Op.WRITE, fuse_release_in: abi.Op.RELEASE, fuse_flush_in: abi.Op.FLUSH,
  fuse_fsync_in: abi.Op.FSYNC, fuse_getxattr_in: abi.Op.GETXATTR, fuse_access_in: abi.Op.ACCESS,
  fuse_interrupt_in: abi.Op.INTERRUPT, fuse_forget_in: abi.Op.FORGET, fuse_batch_forget_in: abi.Op.BATCH_FORGET,
  fuse_fallocate_in: abi.Op.FALLOCATE, fuse_lseek_in: abi.Op.LSEEK, fuse_copy_file_range_in: abi.Op.COPY_FILE_RANGE,
  fuse_lk_in: abi.Op.GETLK, fuse_bmap_in: abi.Op.BMAP, fuse_ioctl_in: abi.Op.IOCTL, fuse_poll_in: abi.Op.POLL,
};

const ts = { sec: 1_700_000_000, nsec: 123 };
const ATTR: Attr = {
  ino: 42, size: 1 << 20, blocks: 2048, atime: ts, mtime: { sec: -5, nsec: 999_999_999 }, ctime: ts,
  mode: 0o100644, nlink: 1, uid: 1000, gid: 100, rdev: 0, blksize: 4096,
};
const ENTRY: Entry = { nodeid: 7, generation: 3, attr: ATTR };

function written(fn: (w: Writer) => void): Buffer {
  // Sized so it never grows (see the report on Writer growth in lib/bytes.ts).
  const w = new Writer(4096);
  fn(w);
  return w.done();
}

void describe('FUSE ABI', () => {
  void it('pins every struct size to fuse.h', () => {
    for (const [name, size] of Object.entries(OURS)) assert.equal(size, SIZES[name], name);
    for (const [name, op] of Object.entries(TABLE)) assert.equal(abi.OPS[op]?.inSize, SIZES[name], name);
    // fuse_setxattr_in in its compat form: we do not negotiate FUSE_SETXATTR_EXT.
    assert.equal(abi.OPS[abi.Op.SETXATTR]?.inSize, 8);
  });

  void it('agrees with the C compiler on /usr/include/linux/fuse.h', async (t) => {
    const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-fuse-abi-'));
    t.after(() => fsp.rm(dir, { recursive: true, force: true }));
    const src = [
      '#include <linux/fuse.h>', '#include <stdio.h>', '#include <stddef.h>', 'int main(void) {',
      ...Object.keys(SIZES).map((s) => `  printf("${s} %zu\\n", sizeof(struct ${s}));`),
      '  printf("attr_flags_off %zu\\n", offsetof(struct fuse_attr, flags));',
      '  printf("entry_attr_off %zu\\n", offsetof(struct fuse_entry_out, attr));',
      '  printf("init_out_flags2_off %zu\\n", offsetof(struct fuse_init_out, flags2));',
      '  printf("init_out_max_pages_off %zu\\n", offsetof(struct fuse_init_out, max_pages));',
      '  printf("setattr_mode_off %zu\\n", offsetof(struct fuse_setattr_in, mode));',
      '  printf("plus_name_off %zu\\n", FUSE_NAME_OFFSET_DIRENTPLUS);',
      '  return 0; }',
    ].join('\n');
    await fsp.writeFile(path.join(dir, 'sizes.c'), src);
    try {
      await promisify(execFile)('cc', ['-o', path.join(dir, 'sizes'), path.join(dir, 'sizes.c')], { timeout: 30_000 });
    } catch (err) {
      t.skip(`no working C compiler: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    const { stdout } = await promisify(execFile)(path.join(dir, 'sizes'), { timeout: 10_000 });
    const c = Object.fromEntries(stdout.trim().split('\n').map((l) => l.split(' ')).map(([k, v]) => [k, Number(v)]));
    for (const [name, size] of Object.entries(SIZES)) assert.equal(c[name], size, name);
    assert.equal(c['attr_flags_off'], 84);
    assert.equal(c['entry_attr_off'], 40);
    assert.equal(c['init_out_flags2_off'], 32);
    assert.equal(c['init_out_max_pages_off'], 28);
    assert.equal(c['setattr_mode_off'], 68);
    assert.equal(c['plus_name_off'], abi.DIRENTPLUS_NAME_OFFSET);
  });

  void it('encoders write exactly their struct, fields at the header offsets', () => {
    const attr = written((w) => abi.encodeAttr(w, ATTR));
    assert.equal(attr.length, abi.ATTR_SIZE);
    assert.equal(attr.readBigUInt64LE(0), 42n);
    assert.equal(attr.readBigInt64LE(32), -5n, 'mtime is signed');
    assert.equal(attr.readUInt32LE(52), 999_999_999);
    assert.equal(attr.readUInt32LE(60), 0o100644);
    assert.equal(attr.readUInt32LE(80), 4096);
    const entry = written((w) => abi.encodeEntryOut(w, ENTRY, 1.5, 0.25));
    assert.equal(entry.length, abi.ENTRY_OUT_SIZE);
    assert.deepEqual([entry.readBigUInt64LE(0), entry.readBigUInt64LE(16), entry.readUInt32LE(32)], [7n, 1n, 500_000_000]);
    assert.deepEqual([entry.readBigUInt64LE(24), entry.readUInt32LE(36)], [0n, 250_000_000]);
    assert.ok(entry.subarray(40).equals(attr));
    assert.ok(written((w) => abi.encodeEntryOut(w, null, 1, 1)).equals(Buffer.alloc(128)), 'a null entry is all zeros');
    assert.equal(written((w) => abi.encodeAttrOut(w, ATTR, 1)).length, abi.ATTR_OUT_SIZE);
    assert.equal(written((w) => abi.encodeOpenOut(w, 9, abi.FOPEN.KEEP_CACHE)).length, abi.OPEN_OUT_SIZE);
    const init = written((w) => abi.encodeInitOut(w, {
      major: 7, minor: 38, maxReadahead: 1 << 17, flags: abi.Init.MAX_PAGES | abi.Init.INIT_EXT, flags2: 0,
      maxBackground: 64, congestionThreshold: 48, maxWrite: 1 << 20, timeGran: 1, maxPages: 256,
    }));
    assert.equal(init.length, abi.INIT_OUT_SIZE);
    assert.deepEqual([init.readUInt32LE(20), init.readUInt16LE(28), init.readUInt16LE(16)], [1 << 20, 256, 64]);
    assert.equal(written((w) => abi.encodeStatfs(w, { blocks: 1, bfree: 1, bavail: 1, files: 1, ffree: 1, bsize: 4096, namelen: 255, frsize: 4096 })).length, abi.KSTATFS_SIZE);
    for (const name of ['a', 'abcdefgh', 'abcdefghi']) {
      const nb = Buffer.from(name);
      const d = written((w) => abi.encodeDirent(w, 5, 6, 0o040000, nb));
      assert.equal(d.length, abi.direntSize(nb.length));
      assert.equal(d.length % 8, 0);
      assert.equal(d.readUInt32LE(20), 4, 'DT_DIR');
      const p = written((w) => abi.encodeDirentplus(w, ENTRY, 1, 1, 5, 6, 0o100000, nb));
      assert.equal(p.length, abi.direntplusSize(nb.length));
      assert.equal(p.toString('utf8', abi.DIRENTPLUS_NAME_OFFSET, abi.DIRENTPLUS_NAME_OFFSET + nb.length), name);
    }
    const nb = Buffer.from('name');
    assert.equal(written((w) => abi.encodeNotifyInvalInode(w, 1, -1, 0)).length, abi.NOTIFY_INVAL_INODE_SIZE);
    assert.equal(written((w) => abi.encodeNotifyInvalEntry(w, 1, nb)).length, abi.NOTIFY_INVAL_ENTRY_SIZE + nb.length + 1);
    assert.equal(written((w) => abi.encodeNotifyDelete(w, 1, 2, nb)).length, abi.NOTIFY_DELETE_SIZE + nb.length + 1);
    assert.equal(written((w) => abi.encodeNotifyStore(w, 1, 4096, 8192)).length, abi.NOTIFY_STORE_SIZE);
  });

  void it('has one table entry per opcode, each with a decoder or ENOSYS', () => {
    for (const [name, op] of Object.entries(abi.Op)) {
      const spec = abi.OPS[op];
      assert.ok(spec, `${name} in the table`);
      assert.equal(spec.name, name);
      if (spec.handler) assert.equal(typeof abi.decoders[spec.handler], 'function');
    }
    assert.equal(abi.OPS[abi.Op.STATX]?.handler, null, 'STATX must get ENOSYS so the kernel falls back to GETATTR');
  });

  void it('round-trips request headers and bodies', () => {
    fc.assert(fc.property(
      fc.record({
        opcode: fc.integer({ min: 1, max: 52 }), unique: fc.bigInt({ min: 0n, max: (1n << 64n) - 1n }),
        nodeid: fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER }), uid: fc.nat({ max: 0xffffffff }),
        gid: fc.nat({ max: 0xffffffff }), pid: fc.nat({ max: 0xffffffff }), ext: fc.nat({ max: 0xffff }),
      }),
      (h) => {
        const w = new Writer(40).u32(40).u32(h.opcode).u64(h.unique).u64(h.nodeid).u32(h.uid).u32(h.gid).u32(h.pid).u16(h.ext).u16(0);
        const d = abi.decodeInHeader(new Reader(w.done()));
        assert.deepEqual(d, { len: 40, opcode: h.opcode, unique: h.unique, nodeid: h.nodeid, uid: h.uid, gid: h.gid, pid: h.pid, totalExtlen: h.ext });
      },
    ));
    const u64 = fc.integer({ min: 0, max: Number.MAX_SAFE_INTEGER });
    const u32 = fc.nat({ max: 0xffffffff });
    const name = fc.string({ minLength: 1, maxLength: 40 }).filter((s) => !s.includes('\0'));
    fc.assert(fc.property(
      fc.record({ valid: u32, fh: u64, size: u64, at: fc.integer({ min: -1e12, max: 1e12 }), mt: fc.integer({ min: -1e12, max: 1e12 }), an: u32, mn: u32, mode: u32, uid: u32, gid: u32 }),
      (s) => {
        const w = new Writer(88).u32(s.valid).u32(0).u64(s.fh).u64(s.size).u64(0).i64(s.at).i64(s.mt).u64(0)
          .u32(s.an).u32(s.mn).u32(0).u32(s.mode).u32(0).u32(s.uid).u32(s.gid).u32(0);
        assert.deepEqual(abi.decoders.setattr(new Reader(w.done())), {
          valid: s.valid, fh: s.fh, size: s.size, atime: { sec: s.at, nsec: s.an }, mtime: { sec: s.mt, nsec: s.mn }, mode: s.mode, uid: s.uid, gid: s.gid,
        });
      },
    ));
    fc.assert(fc.property(fc.record({ fh: u64, off: u64, data: fc.uint8Array({ maxLength: 300 }), flags: u32 }), (s) => {
      const w = new Writer(512).u64(s.fh).u64(s.off).u32(s.data.length).u32(0).u64(0).u32(s.flags).u32(0).bytes(s.data);
      const d = abi.decoders.write(new Reader(w.done()));
      assert.deepEqual([d.fh, d.offset, d.flags, Buffer.from(d.data)], [s.fh, s.off, s.flags, Buffer.from(s.data)]);
    }));
    fc.assert(fc.property(fc.record({ newdir: u64, flags: u32, a: name, b: name }), (s) => {
      const w = new Writer(512).u64(s.newdir).u32(s.flags).u32(0).cstring(s.a).cstring(s.b);
      assert.deepEqual(abi.decoders.rename2(new Reader(w.done())), { newdir: s.newdir, flags: s.flags, name: s.a, newname: s.b });
    }));
    fc.assert(fc.property(fc.array(fc.tuple(u64, u64), { maxLength: 20 }), (items) => {
      const w = new Writer(512).u32(items.length).u32(0);
      for (const [n, l] of items) w.u64(n).u64(l);
      assert.deepEqual(abi.decoders.batchForget(new Reader(w.done())).items, items.map(([nodeid, nlookup]) => ({ nodeid, nlookup })));
    }));
    // INIT before 7.36 is 16 bytes and has no flags2; with INIT_EXT, flags2 follows.
    const old = abi.decoders.init(new Reader(new Writer(16).u32(7).u32(31).u32(65536).u32(abi.Init.ASYNC_READ).done()));
    assert.equal(old.flags2, 0);
    const ext = abi.decoders.init(new Reader(new Writer(64).u32(7).u32(45).u32(65536).u32(abi.Init.INIT_EXT).u32(5).zeros(44).done()));
    assert.deepEqual([ext.minor, ext.flags2], [45, 5]);
  });

  void it('copy_file_range clamps a SIZE_MAX length instead of failing', () => {
    const w = new Writer(56).u64(1).u64(2).u64(3).u64(4).u64(5).u64(0xffffffffffffffffn).u64(0);
    assert.equal(abi.decoders.copyFileRange(new Reader(w.done())).len, Number.MAX_SAFE_INTEGER);
  });

  void it('random bytes make every decoder throw ProtocolError or nothing', () => {
    const keys = Object.keys(abi.decoders) as abi.HandlerKey[];
    fc.assert(fc.property(fc.constantFrom(...keys), fc.uint8Array({ maxLength: 200 }), (key, bytes) => {
      try {
        abi.decoders[key](new Reader(Buffer.from(bytes)));
      } catch (err) {
        assert.ok(err instanceof ProtocolError, `${key} threw ${String(err)}`);
      }
    }), { numRuns: 5000 });
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), (bytes) => {
      try {
        abi.decodeInHeader(new Reader(Buffer.from(bytes)));
      } catch (err) {
        assert.ok(err instanceof ProtocolError, String(err));
      }
    }));
  });

  void it('splits timeouts into seconds and nanoseconds', () => {
    assert.deepEqual(abi.splitTimeout(1), { sec: 1, nsec: 0 });
    assert.deepEqual(abi.splitTimeout(0.001), { sec: 0, nsec: 1_000_000 });
    assert.deepEqual(abi.splitTimeout(0), { sec: 0, nsec: 0 });
    assert.deepEqual(abi.splitTimeout(-3), { sec: 0, nsec: 0 });
  });
});
