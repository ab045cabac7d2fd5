// ExtFs: ext2, ext3 and ext4 images and block devices, read-only, parsed by hand from the on-disk
// format (the kernel's Documentation/filesystems/ext4 and fs/ext4/ext4.h are the authority for
// every offset below): superblock, group descriptors (classic and meta_bg), inodes with nanosecond
// times, extent trees and indirect blocks, linear and htree directories (read linearly), inline
// data, fast and slow symlinks, devices, in-inode and block xattrs with POSIX ACLs.
//
// Why read-only: writing ext4 safely by hand (allocators, checksums, journal) is a project of its
// own; read-write goes through libext2fs instead (ext-rw.ts). This reader serves ext images when
// that optional addon was not built, and stays the reference for the format's on-disk layout.

import { Errno, FsError } from '../lib/errno.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, type Attr, type StatFs, type Timespec } from '../vfs/types.js';
import { NAME_MAX } from './common.js';
import { ImageDevice } from './image/device.js';
import { ReadOnlyImageFs, type ImageChild, type ImageNode } from './image/readonly.js';

const SUPERBLOCK_OFFSET = 1024;
const EXT_MAGIC = 0xef53;
const ROOT_INO = 2;

// Feature bits (ext4.h).
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_COMPRESSION = 0x1;
const INCOMPAT_FILETYPE = 0x2;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_JOURNAL_DEV = 0x8;
const INCOMPAT_META_BG = 0x10;
const INCOMPAT_EXTENTS = 0x40;
const INCOMPAT_64BIT = 0x80;
const INCOMPAT_MMP = 0x100;
const INCOMPAT_FLEX_BG = 0x200;
const INCOMPAT_EA_INODE = 0x400;
const INCOMPAT_DIRDATA = 0x1000;
const INCOMPAT_CSUM_SEED = 0x2000;
const INCOMPAT_LARGEDIR = 0x4000;
const INCOMPAT_INLINE_DATA = 0x8000;
const INCOMPAT_ENCRYPT = 0x10000;
const INCOMPAT_CASEFOLD = 0x20000;
/** What this reader understands; anything else in s_feature_incompat refuses the image. */
const INCOMPAT_KNOWN = INCOMPAT_FILETYPE | INCOMPAT_RECOVER | INCOMPAT_META_BG | INCOMPAT_EXTENTS | INCOMPAT_64BIT
  | INCOMPAT_MMP | INCOMPAT_FLEX_BG | INCOMPAT_EA_INODE | INCOMPAT_CSUM_SEED | INCOMPAT_LARGEDIR | INCOMPAT_INLINE_DATA;
const INCOMPAT_NAMES: Array<[number, string]> = [
  [INCOMPAT_COMPRESSION, 'compression'], [INCOMPAT_JOURNAL_DEV, 'journal_dev'], [INCOMPAT_DIRDATA, 'dirdata'],
  [INCOMPAT_ENCRYPT, 'encrypt'], [INCOMPAT_CASEFOLD, 'casefold'],
];
const RO_COMPAT_SPARSE_SUPER = 0x1;
const RO_COMPAT_HUGE_FILE = 0x8;
/** ro_compat features only ext4 has (huge_file, gdt_csum, dir_nlink, extra_isize, metadata_csum...). */
const RO_COMPAT_EXT4 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;
const INCOMPAT_EXT4 = INCOMPAT_EXTENTS | INCOMPAT_64BIT | INCOMPAT_FLEX_BG | INCOMPAT_INLINE_DATA | INCOMPAT_MMP
  | INCOMPAT_EA_INODE | INCOMPAT_LARGEDIR | INCOMPAT_CSUM_SEED;

// Inode flags.
const HUGE_FILE_FL = 0x40000;
const EXTENTS_FL = 0x80000;
const INLINE_DATA_FL = 0x10000000;

const EXTENT_MAGIC = 0xf30a;
const XATTR_MAGIC = 0xea020000;
/** Deeper extent trees or longer chains than this are corruption, not data. */
const MAX_EXTENT_DEPTH = 5;
/** xattr name index to prefix (fs/ext4/xattr.c); 2 and 3 are the POSIX ACLs, converted on read. */
const XATTR_PREFIX: Record<number, string> = {
  1: 'user.', 2: 'system.posix_acl_access', 3: 'system.posix_acl_default', 4: 'trusted.', 6: 'security.', 7: 'system.',
  8: 'system.richacl',
};

interface Superblock {
  inodesCount: number;
  blocksCount: number;
  rBlocksCount: number;
  freeBlocks: number;
  freeInodes: number;
  firstDataBlock: number;
  blockSize: number;
  blocksPerGroup: number;
  inodesPerGroup: number;
  inodeSize: number;
  compat: number;
  incompat: number;
  roCompat: number;
  descSize: number;
  firstMetaBg: number;
  groupCount: number;
}

export interface ExtNode extends ImageNode {
  /** The raw inode (s_inode_size bytes). */
  readonly raw: Buffer;
  readonly flags: number;
}

export interface ExtFsOptions {
  /** Serve an image whose journal needs recovery (its last writes may be missing). */
  readOnly?: boolean;
}

/** A corruption found while reading: EIO for the operation, with what was wrong. */
function corrupt(msg: string): FsError {
  return new FsError(Errno.EIO, `ext: corrupted image: ${msg}`);
}

function parseSuperblock(b: Buffer, name: string): Superblock {
  const bad = (why: string): FsError => new FsError(Errno.EINVAL, `${name}: not a usable ext2/3/4 file system: ${why}`);
  if (b.readUInt16LE(56) !== EXT_MAGIC) throw bad('bad superblock magic');
  const logBlock = b.readUInt32LE(24);
  if (logBlock > 6) throw bad(`block size 2^${10 + logBlock} is out of range`);
  const blockSize = 1024 << logBlock;
  const incompat = b.readUInt32LE(96);
  const is64 = (incompat & INCOMPAT_64BIT) !== 0;
  const hi = (off: number): number => (is64 ? b.readUInt32LE(off) * 2 ** 32 : 0);
  const revLevel = b.readUInt32LE(76);
  const sb: Superblock = {
    inodesCount: b.readUInt32LE(0),
    blocksCount: b.readUInt32LE(4) + hi(0x150),
    rBlocksCount: b.readUInt32LE(8) + hi(0x154),
    freeBlocks: b.readUInt32LE(12) + hi(0x158),
    freeInodes: b.readUInt32LE(16),
    firstDataBlock: b.readUInt32LE(20),
    blockSize,
    blocksPerGroup: b.readUInt32LE(32),
    inodesPerGroup: b.readUInt32LE(40),
    inodeSize: revLevel === 0 ? 128 : b.readUInt16LE(88),
    compat: b.readUInt32LE(92),
    incompat,
    roCompat: b.readUInt32LE(100),
    descSize: is64 ? b.readUInt16LE(254) : 32,
    firstMetaBg: b.readUInt32LE(0x104),
    groupCount: 0,
  };
  if (sb.blocksPerGroup === 0 || sb.inodesPerGroup === 0 || sb.blocksCount === 0) throw bad('zero group geometry');
  if (sb.inodeSize < 128 || sb.inodeSize > blockSize || (sb.inodeSize & (sb.inodeSize - 1)) !== 0) throw bad(`inode size ${sb.inodeSize}`);
  if (sb.descSize < 32 || sb.descSize > 1024 || (sb.descSize & (sb.descSize - 1)) !== 0) throw bad(`group descriptor size ${sb.descSize}`);
  if (sb.firstDataBlock >= sb.blocksCount) throw bad('first data block past the end');
  sb.groupCount = Math.ceil((sb.blocksCount - sb.firstDataBlock) / sb.blocksPerGroup);
  if (sb.groupCount * sb.inodesPerGroup < sb.inodesCount) throw bad('inode count exceeds the groups');
  const unknown = incompat & ~INCOMPAT_KNOWN;
  if (unknown) {
    const names = INCOMPAT_NAMES.filter(([bit]) => unknown & bit).map(([, n]) => n);
    throw bad(`unsupported feature ${names.length ? names.join(', ') : `0x${unknown.toString(16)}`}`);
  }
  return sb;
}

/** The file system type as blkid names it: ext4 features make ext4, a journal makes ext3. */
function fsType(sb: Superblock): 'ext2' | 'ext3' | 'ext4' {
  if ((sb.incompat & INCOMPAT_EXT4) || (sb.roCompat & RO_COMPAT_EXT4)) return 'ext4';
  return sb.compat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
}

/** Seconds (signed 32-bit) plus the extra field's epoch bits and nanoseconds (ext4 large inodes). */
function inodeTime(raw: Buffer, off: number, extraOff: number, extraSize: number): Timespec {
  let sec = raw.readInt32LE(off);
  let nsec = 0;
  if (extraOff + 4 <= 128 + extraSize) {
    const extra = raw.readUInt32LE(extraOff);
    sec += (extra & 3) * 2 ** 32;
    nsec = extra >>> 2;
    if (nsec >= 1e9) nsec = 0;
  }
  return { sec, nsec };
}

/** Converts the compact on-disk POSIX ACL (ext4 acl.h, version 1) to the xattr form (version 2). */
function aclFromDisk(v: Buffer): Buffer {
  if (v.length < 4 || v.readUInt32LE(0) !== 1) throw corrupt('bad POSIX ACL');
  const out: Buffer[] = [Buffer.from([2, 0, 0, 0])];
  for (let p = 4; p < v.length;) {
    if (p + 4 > v.length) throw corrupt('truncated POSIX ACL');
    const tag = v.readUInt16LE(p);
    const e = Buffer.alloc(8);
    e.writeUInt16LE(tag, 0);
    e.writeUInt16LE(v.readUInt16LE(p + 2), 2);
    // ACL_USER (2) and ACL_GROUP (8) carry an id; the others are short entries.
    if (tag === 2 || tag === 8) {
      if (p + 8 > v.length) throw corrupt('truncated POSIX ACL');
      e.writeUInt32LE(v.readUInt32LE(p + 4), 4);
      p += 8;
    } else {
      e.writeUInt32LE(0xffffffff, 4);
      p += 4;
    }
    out.push(e);
  }
  return Buffer.concat(out);
}

/** The parsed volume: everything needed to read inodes, data, directories and xattrs. */
class ExtVolume {
  private readonly groupTables = new Map<number, number>();

  constructor(readonly dev: ImageDevice, readonly sb: Superblock, private readonly descBlocks: Buffer) {}

  // --- inodes ---------------------------------------------------------------------------------

  private inodeTable(group: number): number {
    const hit = this.groupTables.get(group);
    if (hit !== undefined) return hit;
    const off = group * this.sb.descSize;
    const d = this.descBlocks;
    if (off + this.sb.descSize > d.length) throw corrupt(`group ${group} has no descriptor`);
    const lo = d.readUInt32LE(off + 8);
    const hi = this.sb.descSize >= 64 ? d.readUInt32LE(off + 0x28) : 0;
    const table = lo + hi * 2 ** 32;
    if (table === 0 || table >= this.sb.blocksCount) throw corrupt(`group ${group} inode table at block ${table}`);
    this.groupTables.set(group, table);
    return table;
  }

  async inode(ino: number): Promise<ExtNode> {
    const sb = this.sb;
    if (ino < 1 || ino > sb.inodesCount) throw corrupt(`inode number ${ino} out of range`);
    const group = Math.floor((ino - 1) / sb.inodesPerGroup);
    const index = (ino - 1) % sb.inodesPerGroup;
    const raw = await this.dev.read(this.inodeTable(group) * sb.blockSize + index * sb.inodeSize, sb.inodeSize);
    const extraSize = sb.inodeSize > 128 ? raw.readUInt16LE(128) : 0;
    if (128 + extraSize > sb.inodeSize) throw corrupt(`inode ${ino} extra size ${extraSize}`);
    const mode = raw.readUInt16LE(0);
    const flags = raw.readUInt32LE(32);
    const type = mode & S_IFMT;
    let size = raw.readUInt32LE(4);
    // i_size_high is the top half of the size for every type in rev 1 file systems.
    size += raw.readUInt32LE(108) * 2 ** 32;
    if (!Number.isSafeInteger(size)) throw corrupt(`inode ${ino} size`);
    let blocks = raw.readUInt32LE(28);
    if (sb.roCompat & RO_COMPAT_HUGE_FILE) {
      blocks += raw.readUInt16LE(116) * 2 ** 32;
      if (flags & HUGE_FILE_FL) blocks *= sb.blockSize / 512;
    }
    let rdev = 0;
    if (type === S_IFCHR || type === S_IFBLK) {
      // Old encoding (major 8 bits, minor 8 bits) in i_block[0]; the new one in i_block[1] is the
      // kernel's new_encode_dev form, which is also what FUSE carries.
      const old = raw.readUInt32LE(40);
      rdev = old !== 0 ? old & 0xffff : raw.readUInt32LE(44);
    }
    const attr: Attr = {
      ino,
      size,
      blocks,
      atime: inodeTime(raw, 8, 140, extraSize),
      mtime: inodeTime(raw, 16, 136, extraSize),
      ctime: inodeTime(raw, 12, 132, extraSize),
      mode,
      nlink: raw.readUInt16LE(26),
      uid: raw.readUInt16LE(2) + raw.readUInt16LE(120) * 65536,
      gid: raw.readUInt16LE(24) + raw.readUInt16LE(122) * 65536,
      rdev,
      blksize: sb.blockSize,
    };
    return { key: ino, attr, raw, flags };
  }

  // --- file data ------------------------------------------------------------------------------

  /** Reads bytes [off, off+len) of an inode's data, whatever its mapping; holes read as zeros. */
  async readInodeData(node: ExtNode, off: number, len: number): Promise<Buffer> {
    if (node.flags & INLINE_DATA_FL) {
      const all = await this.inlineData(node);
      const out = Buffer.alloc(len);
      all.copy(out, 0, Math.min(off, all.length), Math.min(off + len, all.length));
      return out;
    }
    const bs = this.sb.blockSize;
    const out = Buffer.alloc(len);
    const first = Math.floor(off / bs);
    const last = Math.floor((off + len - 1) / bs);
    const runs = node.flags & EXTENTS_FL
      ? await this.extentRuns(node, first, last)
      : await this.indirectRuns(node, first, last);
    for (const r of runs) {
      // Clip the run to the wanted blocks, then copy its bytes in one device read.
      const from = Math.max(r.lblk, first);
      const to = Math.min(r.lblk + r.len - 1, last);
      if (from > to || r.uninit) continue;
      const pblk = r.pblk + (from - r.lblk);
      if (pblk + (to - from) >= this.sb.blocksCount || pblk < this.sb.firstDataBlock) {
        throw corrupt(`inode ${node.key} maps to block ${pblk}, outside the file system`);
      }
      const byteFrom = Math.max(off, from * bs);
      const byteTo = Math.min(off + len, (to + 1) * bs);
      const chunk = await this.dev.read(pblk * bs + (byteFrom - from * bs), byteTo - byteFrom);
      chunk.copy(out, byteFrom - off);
    }
    return out;
  }

  /** The extents of an extent-mapped inode that overlap logical blocks [first, last]. */
  private async extentRuns(node: ExtNode, first: number, last: number): Promise<Run[]> {
    const runs: Run[] = [];
    const walk = async (b: Buffer, depth: number): Promise<void> => {
      if (b.length < 12 || b.readUInt16LE(0) !== EXTENT_MAGIC) throw corrupt(`inode ${node.key}: bad extent header`);
      const entries = b.readUInt16LE(2);
      const treeDepth = b.readUInt16LE(6);
      if (treeDepth !== depth || 12 + entries * 12 > b.length) throw corrupt(`inode ${node.key}: bad extent node`);
      if (treeDepth === 0) {
        for (let i = 0; i < entries; i++) {
          const p = 12 + i * 12;
          const lblk = b.readUInt32LE(p);
          let elen = b.readUInt16LE(p + 4);
          // Lengths above 32768 mark uninitialized (preallocated) extents, which read as zeros.
          const uninit = elen > 32768;
          if (uninit) elen -= 32768;
          const pblk = b.readUInt16LE(p + 6) * 2 ** 32 + b.readUInt32LE(p + 8);
          if (lblk + elen - 1 >= first && lblk <= last) runs.push({ lblk, len: elen, pblk, uninit });
        }
        return;
      }
      for (let i = 0; i < entries; i++) {
        const p = 12 + i * 12;
        const start = b.readUInt32LE(p);
        const next = i + 1 < entries ? b.readUInt32LE(p + 12) : Infinity;
        if (next <= first || start > last) continue;
        const child = b.readUInt32LE(p + 4) + b.readUInt16LE(p + 8) * 2 ** 32;
        if (child >= this.sb.blocksCount || child === 0) throw corrupt(`inode ${node.key}: extent node at block ${child}`);
        await walk(await this.dev.read(child * this.sb.blockSize, this.sb.blockSize), depth - 1);
      }
    };
    const root = node.raw.subarray(40, 100);
    const depth = root.readUInt16LE(6);
    if (depth > MAX_EXTENT_DEPTH) throw corrupt(`inode ${node.key}: extent tree depth ${depth}`);
    await walk(root, depth);
    return runs;
  }

  /** The blocks of an ext2/3-style inode (12 direct, then single, double, triple indirect). */
  private async indirectRuns(node: ExtNode, first: number, last: number): Promise<Run[]> {
    const bs = this.sb.blockSize;
    const per = bs / 4;
    const runs: Run[] = [];
    const add = (lblk: number, pblk: number): void => {
      if (pblk === 0) return;
      const prev = runs[runs.length - 1];
      if (prev && prev.lblk + prev.len === lblk && prev.pblk + prev.len === pblk) prev.len++;
      else runs.push({ lblk, len: 1, pblk, uninit: false });
    };
    // Walks one pointer block of the given level covering logical blocks from `base`.
    const walk = async (pblk: number, level: number, base: number): Promise<void> => {
      const span = per ** level;
      if (base > last || base + span * per <= first) return;
      if (pblk >= this.sb.blocksCount) throw corrupt(`inode ${node.key}: indirect block ${pblk}`);
      const b = await this.dev.read(pblk * bs, bs);
      for (let i = 0; i < per; i++) {
        const lb = base + i * span;
        if (lb > last) break;
        if (lb + span <= first) continue;
        const ptr = b.readUInt32LE(i * 4);
        if (ptr === 0) continue;
        if (level === 0) add(lb, ptr);
        else await walk(ptr, level - 1, lb);
      }
    };
    const iblock = (i: number): number => node.raw.readUInt32LE(40 + i * 4);
    for (let i = 0; i < 12 && i <= last; i++) if (i >= first) add(i, iblock(i));
    let base = 12;
    for (let level = 0; level < 3; level++) {
      const ptr = iblock(12 + level);
      if (ptr !== 0) await walk(ptr, level, base);
      base += per ** (level + 1);
    }
    return runs;
  }

  /** Inline data: the 60 bytes of i_block, then the rest in the "system.data" xattr. */
  private async inlineData(node: ExtNode): Promise<Buffer> {
    const more = (await this.inodeXattrs(node, true)).get('system.data') ?? Buffer.alloc(0);
    const all = Buffer.concat([node.raw.subarray(40, 100), more]);
    return all.subarray(0, Math.min(all.length, node.attr.size));
  }

  // --- directories ----------------------------------------------------------------------------

  async listDirectory(dir: ExtNode): Promise<Array<ImageChild<ExtNode>>> {
    const out: Array<ImageChild<ExtNode>> = [];
    const entries: Array<{ name: string; ino: number }> = [];
    if (dir.flags & INLINE_DATA_FL) {
      // Inline directories keep the parent's number in the first 4 bytes and no "." or "..".
      const data = Buffer.concat([dir.raw.subarray(44, 100), (await this.inodeXattrs(dir, true)).get('system.data') ?? Buffer.alloc(0)]);
      this.parseDirBlock(data, dir.key, entries);
    } else {
      const bs = this.sb.blockSize;
      // A damaged size must not send us through billions of hole blocks.
      if (dir.attr.size % bs !== 0 || dir.attr.size / bs > this.sb.blocksCount) throw corrupt(`directory ${dir.key} size ${dir.attr.size}`);
      for (let off = 0; off < dir.attr.size; off += bs) {
        this.parseDirBlock(await this.readInodeData(dir, off, bs), dir.key, entries);
      }
    }
    for (const e of entries) {
      if (e.name === '.' || e.name === '..') continue;
      out.push({ name: e.name, node: await this.inode(e.ino) });
    }
    return out;
  }

  private parseDirBlock(b: Buffer, dirIno: number, out: Array<{ name: string; ino: number }>): void {
    const withType = (this.sb.incompat & INCOMPAT_FILETYPE) !== 0;
    for (let p = 0; p + 8 <= b.length;) {
      const ino = b.readUInt32LE(p);
      let recLen = b.readUInt16LE(p + 4);
      // 64 KiB blocks store a full-block record length as 0 or 65535 (ext4_rec_len_from_disk).
      if (recLen === 0 || recLen === 65535) recLen = b.length - p;
      const nameLen = withType ? b[p + 6]! : b.readUInt16LE(p + 6);
      if (recLen < 8 || p + recLen > b.length || 8 + nameLen > recLen) throw corrupt(`directory ${dirIno}: bad entry at ${p}`);
      if (ino !== 0 && nameLen > 0) {
        if (ino > this.sb.inodesCount) throw corrupt(`directory ${dirIno}: entry names inode ${ino}`);
        const name = b.toString('utf8', p + 8, p + 8 + nameLen);
        if (nameLen <= NAME_MAX && !name.includes('/')) out.push({ name, ino });
      }
      p += recLen;
    }
  }

  // --- xattrs ---------------------------------------------------------------------------------

  /** All xattrs of an inode: in the inode body, then the external block. */
  async inodeXattrs(node: ExtNode, includeSystemData = false): Promise<Map<string, Buffer>> {
    const out = new Map<string, Buffer>();
    const raw = node.raw;
    const extra = raw.length > 128 ? raw.readUInt16LE(128) : 0;
    const ibody = 128 + extra;
    if (ibody + 4 <= raw.length && raw.readUInt32LE(ibody) === XATTR_MAGIC) {
      // In-inode values are offset from the first entry, just past the magic.
      const region = raw.subarray(ibody + 4);
      await this.parseXattrEntries(region, 0, region, out);
    }
    const acl = raw.readUInt32LE(104) + raw.readUInt16LE(118) * 2 ** 32;
    if (acl !== 0) {
      if (acl >= this.sb.blocksCount) throw corrupt(`inode ${node.key}: xattr block ${acl}`);
      const b = await this.dev.read(acl * this.sb.blockSize, this.sb.blockSize);
      if (b.readUInt32LE(0) !== XATTR_MAGIC) throw corrupt(`inode ${node.key}: bad xattr block`);
      await this.parseXattrEntries(b, 32, b, out);
    }
    if (!includeSystemData) out.delete('system.data');
    return out;
  }

  private async parseXattrEntries(b: Buffer, start: number, values: Buffer, out: Map<string, Buffer>): Promise<void> {
    for (let p = start; p + 16 <= b.length;) {
      if (b.readUInt32LE(p) === 0) break;
      const nameLen = b[p]!;
      const index = b[p + 1]!;
      const valueOff = b.readUInt16LE(p + 2);
      const valueInum = b.readUInt32LE(p + 4);
      const valueSize = b.readUInt32LE(p + 8);
      if (p + 16 + nameLen > b.length) throw corrupt('xattr entry past its block');
      const suffix = b.toString('utf8', p + 16, p + 16 + nameLen);
      p += (16 + nameLen + 3) & ~3;
      const prefix = XATTR_PREFIX[index];
      if (prefix === undefined) continue;
      let value: Buffer;
      if (valueInum !== 0) {
        // ea_inode: a large value lives in the data of its own inode.
        const vnode = await this.inode(valueInum);
        value = await this.readInodeData(vnode, 0, Math.min(valueSize, vnode.attr.size));
      } else {
        if (valueOff + valueSize > values.length) throw corrupt('xattr value past its block');
        value = Buffer.from(values.subarray(valueOff, valueOff + valueSize));
      }
      const name = index === 2 || index === 3 ? prefix : prefix + suffix;
      out.set(name, index === 2 || index === 3 ? aclFromDisk(value) : value);
    }
  }

  async readLink(link: ExtNode): Promise<string> {
    const size = link.attr.size;
    if (size > 4096) throw corrupt(`symlink ${link.key} is ${size} bytes`);
    // A fast symlink keeps its target in i_block and owns no data blocks (beyond an xattr block).
    const xattrBlocks = link.raw.readUInt32LE(104) !== 0 ? this.sb.blockSize / 512 : 0;
    const fast = !(link.flags & (INLINE_DATA_FL | EXTENTS_FL)) && link.attr.blocks - xattrBlocks === 0;
    if (fast) return link.raw.toString('utf8', 40, 40 + Math.min(size, 60));
    return (await this.readInodeData(link, 0, size)).toString('utf8');
  }
}

export class ExtFs extends ReadOnlyImageFs<ExtNode> {
  private constructor(private readonly vol: ExtVolume, root: ExtNode, type: string) {
    super(root, type);
  }

  /**
   * Opens an ext2/3/4 image file or block device. Fails with a one-line FsError when it is not an
   * ext file system, is damaged, uses a feature this reader lacks, or has a journal that needs
   * recovery (unless opts.readOnly accepts possibly stale contents).
   */
  static async open(imagePath: string, opts: ExtFsOptions = {}): Promise<ExtFs> {
    const dev = await ImageDevice.open(imagePath);
    try {
      if (dev.size < SUPERBLOCK_OFFSET + 1024) throw new FsError(Errno.EINVAL, `${imagePath}: too small for an ext file system`);
      const sb = parseSuperblock(await dev.read(SUPERBLOCK_OFFSET, 1024), imagePath);
      if (sb.blocksCount * sb.blockSize > dev.size) {
        throw new FsError(Errno.EINVAL, `${imagePath}: truncated: the file system needs ${sb.blocksCount * sb.blockSize} bytes, the image has ${dev.size}`);
      }
      if ((sb.incompat & INCOMPAT_RECOVER) && !opts.readOnly) {
        throw new FsError(Errno.EINVAL, `${imagePath}: the journal needs recovery (run e2fsck, or serve it read-only)`);
      }
      const nDescBlocks = Math.ceil(sb.groupCount / (sb.blockSize / sb.descSize));
      const parts: Buffer[] = [];
      for (let i = 0; i < nDescBlocks; i++) parts.push(await dev.read(descBlockLocation(sb, i) * sb.blockSize, sb.blockSize));
      const vol = new ExtVolume(dev, sb, Buffer.concat(parts));
      const root = await vol.inode(ROOT_INO);
      if ((root.attr.mode & S_IFMT) !== S_IFDIR) throw new FsError(Errno.EINVAL, `${imagePath}: corrupted: the root inode is not a directory`);
      return new ExtFs(vol, root, fsType(sb));
    } catch (err) {
      await dev.close();
      // A damaged structure found while opening is a bad image, not an I/O failure of one file.
      if (err instanceof FsError && err.errno === Errno.EIO) throw new FsError(Errno.EINVAL, `${imagePath}: ${err.message}`);
      throw err;
    }
  }

  protected listDirectory(dir: ExtNode): Promise<Array<ImageChild<ExtNode>>> {
    return this.vol.listDirectory(dir);
  }

  protected readData(file: ExtNode, off: number, len: number): Promise<Buffer> {
    return this.vol.readInodeData(file, off, len);
  }

  protected readLink(link: ExtNode): Promise<string> {
    return this.vol.readLink(link);
  }

  protected readXattrs(node: ExtNode): Promise<Map<string, Buffer>> {
    return this.vol.inodeXattrs(node);
  }

  protected fsStat(): StatFs {
    const sb = this.vol.sb;
    return {
      blocks: sb.blocksCount, bfree: sb.freeBlocks, bavail: Math.max(0, sb.freeBlocks - sb.rBlocksCount),
      files: sb.inodesCount, ffree: sb.freeInodes, bsize: sb.blockSize, namelen: NAME_MAX, frsize: sb.blockSize,
    };
  }

  protected closeImage(): Promise<void> {
    return this.vol.dev.close();
  }
}

interface Run {
  lblk: number;
  len: number;
  pblk: number;
  uninit: boolean;
}

/** Where descriptor block i lives: after the superblock, or (meta_bg) in its meta group's first group. */
function descBlockLocation(sb: Superblock, i: number): number {
  if (!(sb.incompat & INCOMPAT_META_BG) || i < sb.firstMetaBg) return sb.firstDataBlock + 1 + i;
  const group = i * (sb.blockSize / sb.descSize);
  return sb.firstDataBlock + group * sb.blocksPerGroup + (groupHasSuper(sb, group) ? 1 : 0);
}

/** sparse_super keeps superblock backups only in groups 0, 1 and powers of 3, 5 and 7. */
function groupHasSuper(sb: Superblock, group: number): boolean {
  if (!(sb.roCompat & RO_COMPAT_SPARSE_SUPER) || group <= 1) return true;
  for (const base of [3, 5, 7]) {
    let p = base;
    while (p < group) p *= base;
    if (p === group) return true;
  }
  return false;
}
