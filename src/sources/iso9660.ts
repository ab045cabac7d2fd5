// IsoFs: ISO 9660 images and CD/DVD devices, read-only (ECMA-119 for volume descriptors and
// directory records; SUSP/RRIP 1.12 for Rock Ridge; the Joliet specification for UCS-2 names).
// With Rock Ridge the primary tree is served with POSIX names, modes, owners, links, devices and
// times; without it the Joliet tree if there is one, else the primary tree with Linux's "normal"
// name mapping (lowercase, no ";1"). Multi-extent files are joined.

import { Errno, FsError } from '../lib/errno.js';
import { S_IFBLK, S_IFCHR, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, type Attr, type StatFs, type Timespec } from '../vfs/types.js';
import { NAME_MAX } from './common.js';
import { ImageDevice } from './image/device.js';
import { ReadOnlyImageFs, type ImageChild, type ImageNode } from './image/readonly.js';

const SECTOR = 2048;
/** Volume descriptors start at sector 16 (ECMA-119 6.2.1); more than this many is corruption. */
const FIRST_DESCRIPTOR = 16;
const MAX_DESCRIPTORS = 64;
const FLAG_DIRECTORY = 0x02;
const FLAG_MULTI_EXTENT = 0x80;
/** SUSP continuation areas followed for one record, at most (a loop is corruption). */
const MAX_CONTINUATIONS = 16;
/** Directories larger than this are corruption (Linux caps them far lower in practice). */
const MAX_DIR_BYTES = 256 << 20;

export interface IsoNode extends ImageNode {
  /** The file's data: one extent, or several for a multi-extent file. */
  readonly extents: Array<{ pos: number; len: number }>;
  readonly target?: string;
}

function corrupt(msg: string): FsError {
  return new FsError(Errno.EIO, `iso9660: corrupted image: ${msg}`);
}

/** The 7-byte recording date of a directory record (ECMA-119 9.1.5), as UTC. */
function shortTime(b: Buffer, p: number): Timespec {
  const off = (b.readInt8(p + 6)) * 15 * 60;
  const ms = Date.UTC(1900 + b[p]!, b[p + 1]! - 1, b[p + 2]!, b[p + 3]!, b[p + 4]!, b[p + 5]!);
  return { sec: Number.isFinite(ms) ? Math.floor(ms / 1000) - off : 0, nsec: 0 };
}

/** The 17-byte "YYYYMMDDHHMMSScc" + offset form (ECMA-119 8.4.26.1). */
function longTime(b: Buffer, p: number): Timespec {
  const s = b.toString('latin1', p, p + 16);
  const n = (a: number, l: number): number => Number(s.slice(a, a + l));
  const ms = Date.UTC(n(0, 4), n(4, 2) - 1, n(6, 2), n(8, 2), n(10, 2), n(12, 2));
  if (!Number.isFinite(ms)) return { sec: 0, nsec: 0 };
  return { sec: Math.floor(ms / 1000) - b.readInt8(p + 16) * 15 * 60, nsec: n(14, 2) * 10_000_000 };
}

/** Linux's new_encode_dev, the dev_t form FUSE carries. */
function encodeDev(major: number, minor: number): number {
  return ((minor & 0xff) | ((major & 0xfff) << 8) | ((minor & ~0xff) << 12)) >>> 0;
}

/** What the Rock Ridge entries of one record say (fields absent when the entry is missing). */
interface RockRidge {
  mode?: number;
  nlink?: number;
  uid?: number;
  gid?: number;
  serial?: number;
  name?: string;
  target?: string;
  rdev?: number;
  mtime?: Timespec;
  atime?: Timespec;
  ctime?: Timespec;
  /** CL: a relocated directory's real location (byte position). */
  childLink?: number;
  /** RE: this record is the relocated directory itself; hidden from its placeholder parent. */
  relocated?: boolean;
}

interface Rec {
  pos: number;
  len: number;
  flags: number;
  extentPos: number;
  size: number;
  time: Timespec;
  rawName: Buffer;
  sua: Buffer;
}

type NameMode = 'rockridge' | 'joliet' | 'plain';

class IsoVolume {
  constructor(
    readonly dev: ImageDevice,
    readonly blockSize: number,
    readonly volumeBlocks: number,
    readonly names: NameMode,
    /** SUSP LEN_SKP: bytes to skip at the start of each system use area. */
    readonly suspSkip: number,
  ) {}

  /** Parses one directory record at b[p]; p + its length stays within b. */
  record(b: Buffer, p: number, pos: number): Rec {
    const len = b[p]!;
    const nameLen = b[p + 32] ?? 0;
    if (len < 34 || p + len > b.length || 33 + nameLen > len) throw corrupt(`bad directory record at ${pos}`);
    const extentPos = b.readUInt32LE(p + 2) * this.blockSize + b[p + 1]! * this.blockSize;
    const size = b.readUInt32LE(p + 10);
    const suaStart = 33 + nameLen + ((nameLen & 1) === 0 ? 1 : 0);
    return {
      pos, len, flags: b[p + 25]!, extentPos, size, time: shortTime(b, p + 18),
      rawName: b.subarray(p + 33, p + 33 + nameLen), sua: b.subarray(p + Math.min(len, suaStart), p + len),
    };
  }

  /** Reads the SUSP entries of a record, following CE continuation areas. */
  async rockRidge(sua: Buffer): Promise<RockRidge> {
    const rr: RockRidge = {};
    let name = '';
    let nameDone = false;
    const link: string[] = [];
    let linkContinues = false;
    let area = sua.subarray(Math.min(this.suspSkip, sua.length));
    for (let hops = 0; ; hops++) {
      let next: { pos: number; len: number } | undefined;
      for (let p = 0; p + 4 <= area.length;) {
        const sig = area.toString('latin1', p, p + 2);
        const len = area[p + 2]!;
        if (len < 4 || p + len > area.length) break;
        const e = area.subarray(p, p + len);
        p += len;
        if (sig === 'ST') break;
        if (sig === 'CE' && len >= 28) {
          next = { pos: e.readUInt32LE(4) * this.blockSize + e.readUInt32LE(12), len: e.readUInt32LE(20) };
        } else if (sig === 'PX' && len >= 36) {
          rr.mode = e.readUInt32LE(4);
          rr.nlink = e.readUInt32LE(12);
          rr.uid = e.readUInt32LE(20);
          rr.gid = e.readUInt32LE(28);
          if (len >= 44) rr.serial = e.readUInt32LE(36);
        } else if (sig === 'NM' && len >= 5 && !nameDone) {
          const flags = e[4]!;
          // CURRENT and PARENT name "." and ".."; those records are skipped anyway.
          if (!(flags & 6)) name += e.toString('utf8', 5);
          if (!(flags & 1)) nameDone = true;
        } else if (sig === 'SL' && len >= 5) {
          for (let q = 5; q + 2 <= e.length;) {
            const cflags = e[q]!;
            const clen = e[q + 1]!;
            if (q + 2 + clen > e.length) throw corrupt('SL component past its entry');
            const text = cflags & 2 ? '.' : cflags & 4 ? '..' : cflags & 8 ? '' : e.toString('utf8', q + 2, q + 2 + clen);
            // A component continued from the previous one is glued on, not a new path element.
            if (linkContinues && link.length > 0) link[link.length - 1] += text;
            else link.push(text);
            linkContinues = (cflags & 1) !== 0;
            q += 2 + clen;
          }
        } else if (sig === 'TF' && len >= 5) {
          const flags = e[4]!;
          const size = flags & 0x80 ? 17 : 7;
          let q = 5;
          // Stamps appear in bit order: creation, modify, access, attributes (ctime), then others.
          for (let bit = 0; bit < 7; bit++) {
            if (!(flags & (1 << bit))) continue;
            if (q + size > e.length) break;
            const t = size === 17 ? longTime(e, q) : shortTime(e, q);
            if (bit === 1) rr.mtime = t;
            else if (bit === 2) rr.atime = t;
            else if (bit === 3) rr.ctime = t;
            q += size;
          }
        } else if (sig === 'PN' && len >= 20) {
          const high = e.readUInt32LE(4);
          const low = e.readUInt32LE(12);
          // Writers (xorriso, mkisofs) put the whole 32-bit dev_t in the low word when the high
          // word is zero; Linux isofs truncates it to 16 bits, which loses large minors.
          rr.rdev = high === 0 ? low : encodeDev(high, low);
        } else if (sig === 'CL' && len >= 12) {
          rr.childLink = e.readUInt32LE(4) * this.blockSize;
        } else if (sig === 'RE') {
          rr.relocated = true;
        }
      }
      if (!next || next.len === 0) break;
      if (hops >= MAX_CONTINUATIONS) throw corrupt('SUSP continuation loop');
      if (next.len > this.blockSize * 4) throw corrupt('SUSP continuation too long');
      area = await this.dev.read(next.pos, next.len);
    }
    if (name) rr.name = name;
    if (link.length) rr.target = link.length === 1 && link[0] === '' ? '/' : link.join('/');
    return rr;
  }

  decodeName(raw: Buffer): string {
    let name: string;
    if (this.names === 'joliet') {
      const even = raw.subarray(0, raw.length & ~1);
      name = Buffer.from(even).swap16().toString('utf16le');
    } else {
      name = raw.toString('latin1');
    }
    const semi = name.lastIndexOf(';');
    if (semi >= 0) name = name.slice(0, semi);
    if (this.names === 'plain') {
      if (name.endsWith('.')) name = name.slice(0, -1);
      name = name.toLowerCase();
    }
    return name;
  }

  /** A node from a record (the first of a multi-extent chain) and what Rock Ridge says of it. */
  makeNode(rec: Rec, rr: RockRidge, extents: Array<{ pos: number; len: number }>, isDir: boolean): IsoNode {
    const size = extents.reduce((s, e) => s + e.len, 0);
    for (const e of extents) {
      if (e.pos + e.len > this.dev.size) throw corrupt(`extent at ${e.pos} (${e.len} bytes) is outside the image`);
    }
    // Directories are known by their extent (their "." record and their parent's agree on it).
    // Hard links share one data extent, so that identifies them when RRIP gives no serial number;
    // any other file is known by the position of its directory record.
    const shared = !isDir && (rr.nlink ?? 1) > 1 && size > 0;
    const key = isDir || shared ? extents[0]!.pos : rec.pos;
    const rrMode = rr.mode !== undefined && this.names === 'rockridge' ? rr.mode : undefined;
    const mode = rrMode ?? (isDir ? S_IFDIR | 0o555 : S_IFREG | 0o444);
    const type = mode & S_IFMT;
    const attr: Attr = {
      ino: rr.serial || key,
      size: type === S_IFLNK ? Buffer.byteLength(rr.target ?? '') : type === S_IFREG || type === S_IFDIR ? size : 0,
      blocks: Math.ceil(size / 512),
      atime: rr.atime ?? rec.time,
      mtime: rr.mtime ?? rec.time,
      ctime: rr.ctime ?? rr.mtime ?? rec.time,
      mode,
      nlink: rr.nlink ?? (isDir ? 2 : 1),
      uid: rr.uid ?? 0,
      gid: rr.gid ?? 0,
      rdev: type === S_IFCHR || type === S_IFBLK ? (rr.rdev ?? 0) : 0,
      blksize: this.blockSize,
    };
    const node: IsoNode = { key, attr, extents };
    return rr.target !== undefined ? { ...node, target: rr.target } : node;
  }

  /** The records of a directory extent; a zero length byte skips to the next logical sector. */
  async records(dir: { pos: number; len: number }): Promise<Rec[]> {
    if (dir.len > MAX_DIR_BYTES) throw corrupt(`directory at ${dir.pos} is ${dir.len} bytes`);
    const b = await this.dev.read(dir.pos, dir.len);
    const out: Rec[] = [];
    for (let p = 0; p < b.length;) {
      const len = b[p]!;
      if (len === 0) {
        p = (Math.floor(p / SECTOR) + 1) * SECTOR;
        continue;
      }
      out.push(this.record(b, p, dir.pos + p));
      p += len;
    }
    return out;
  }

  async listDirectory(dir: IsoNode): Promise<Array<ImageChild<IsoNode>>> {
    const recs = await this.records(dir.extents[0]!);
    const out: Array<ImageChild<IsoNode>> = [];
    for (let i = 0; i < recs.length; i++) {
      const rec = recs[i]!;
      // "." and ".." are the one-byte names 0 and 1.
      if (rec.rawName.length === 1 && rec.rawName[0]! <= 1) continue;
      const extents = [{ pos: rec.extentPos, len: rec.size }];
      // A multi-extent file continues in the following records of the same name.
      let last = rec;
      while (last.flags & FLAG_MULTI_EXTENT) {
        const more = recs[i + 1];
        if (!more || !more.rawName.equals(rec.rawName)) throw corrupt(`multi-extent file at ${rec.pos} ends early`);
        extents.push({ pos: more.extentPos, len: more.size });
        last = more;
        i++;
      }
      const rr = this.names === 'rockridge' ? await this.rockRidge(rec.sua) : {};
      if (rr.relocated) continue;
      let isDir = (rec.flags & FLAG_DIRECTORY) !== 0;
      if (rr.childLink !== undefined) {
        // A placeholder for a directory moved elsewhere (deep nesting): serve the real one here.
        const moved = (await this.records({ pos: rr.childLink, len: SECTOR }))[0];
        if (!moved) throw corrupt(`relocated directory at ${rr.childLink} is empty`);
        extents[0] = { pos: rr.childLink, len: moved.size };
        isDir = true;
      }
      const name = rr.name ?? this.decodeName(rec.rawName);
      if (name === '' || name === '.' || name === '..' || name.includes('/') || Buffer.byteLength(name) > NAME_MAX) continue;
      out.push({ name, node: this.makeNode(rec, rr, extents, isDir) });
    }
    return out;
  }

  async readData(file: IsoNode, off: number, len: number): Promise<Buffer> {
    const parts: Buffer[] = [];
    let base = 0;
    for (const e of file.extents) {
      const from = Math.max(off, base);
      const to = Math.min(off + len, base + e.len);
      if (from < to) parts.push(await this.dev.read(e.pos + (from - base), to - from));
      base += e.len;
    }
    return Buffer.concat(parts);
  }
}

export class IsoFs extends ReadOnlyImageFs<IsoNode> {
  private constructor(private readonly vol: IsoVolume, root: IsoNode) {
    super(root, 'iso9660');
  }

  /** Opens an ISO 9660 image or optical device; a one-line FsError when it is not one or is damaged. */
  static async open(imagePath: string): Promise<IsoFs> {
    const dev = await ImageDevice.open(imagePath);
    try {
      const bad = (why: string): FsError => new FsError(Errno.EINVAL, `${imagePath}: not a usable ISO 9660 image: ${why}`);
      let primary: Buffer | undefined;
      let joliet: Buffer | undefined;
      for (let i = 0; i < MAX_DESCRIPTORS; i++) {
        const pos = (FIRST_DESCRIPTOR + i) * SECTOR;
        if (pos + SECTOR > dev.size) break;
        const d = await dev.read(pos, SECTOR);
        if (d.toString('latin1', 1, 6) !== 'CD001') break;
        const type = d[0]!;
        if (type === 255) break;
        if (type === 1 && !primary) primary = d;
        // Joliet: a supplementary descriptor whose escape sequences select UCS-2 level 1, 2 or 3.
        if (type === 2 && !joliet && d[88] === 0x25 && d[89] === 0x2f && [0x40, 0x43, 0x45].includes(d[90]!)) joliet = d;
      }
      if (!primary) throw bad('no primary volume descriptor');
      const blockSize = primary.readUInt16LE(128);
      if (![512, 1024, 2048].includes(blockSize)) throw bad(`logical block size ${blockSize}`);
      const volumeBlocks = primary.readUInt32LE(80);
      if (volumeBlocks * blockSize > dev.size) {
        throw bad(`truncated: the volume needs ${volumeBlocks * blockSize} bytes, the image has ${dev.size}`);
      }
      // Rock Ridge announces itself with an SP entry at the start of the root's "." record.
      const probe = new IsoVolume(dev, blockSize, volumeBlocks, 'rockridge', 0);
      const pRootRec = probe.record(primary, 156, 16 * SECTOR + 156);
      const pDot = (await probe.records({ pos: pRootRec.extentPos, len: Math.min(pRootRec.size, SECTOR) }))[0];
      if (!pDot) throw bad('empty root directory');
      const sp = pDot.sua;
      const hasRR = sp.length >= 7 && sp.toString('latin1', 0, 2) === 'SP' && sp[4] === 0xbe && sp[5] === 0xef;
      const mode: NameMode = hasRR ? 'rockridge' : joliet ? 'joliet' : 'plain';
      const vol = new IsoVolume(dev, blockSize, volumeBlocks, mode, hasRR ? sp[6]! : 0);
      const rootRec = vol.record(mode === 'joliet' ? joliet! : primary, 156, 16 * SECTOR + 156);
      const dot = (await vol.records({ pos: rootRec.extentPos, len: Math.min(rootRec.size, SECTOR) }))[0];
      if (!dot) throw bad('empty root directory');
      const rr = mode === 'rockridge' ? await vol.rockRidge(dot.sua) : {};
      const root = vol.makeNode(dot, rr, [{ pos: rootRec.extentPos, len: rootRec.size }], true);
      return new IsoFs(vol, root);
    } catch (err) {
      await dev.close();
      if (err instanceof FsError && err.errno === Errno.EIO) throw new FsError(Errno.EINVAL, `${imagePath}: ${err.message}`);
      throw err;
    }
  }

  protected listDirectory(dir: IsoNode): Promise<Array<ImageChild<IsoNode>>> {
    return this.vol.listDirectory(dir);
  }

  protected readData(file: IsoNode, off: number, len: number): Promise<Buffer> {
    return this.vol.readData(file, off, len);
  }

  protected async readLink(link: IsoNode): Promise<string> {
    return link.target ?? '';
  }

  protected async readXattrs(_node: IsoNode): Promise<Map<string, Buffer>> {
    return new Map();
  }

  protected fsStat(): StatFs {
    return {
      blocks: this.vol.volumeBlocks, bfree: 0, bavail: 0, files: 0, ffree: 0,
      bsize: this.vol.blockSize, namelen: NAME_MAX, frsize: this.vol.blockSize,
    };
  }

  protected closeImage(): Promise<void> {
    return this.vol.dev.close();
  }
}
