// FatFs: FAT12, FAT16 and FAT32 images and block devices, read-write, with VFAT long names, written
// by hand from Microsoft's "FAT: General Overview of On-Disk Format" (fatgen103, cited below as
// "fatgen §n"). Semantics follow Linux's vfat driver (fs/fat): case-preserving names looked up
// case-insensitively, a fixed owner (0:0) and mode (0755 dirs, 0644 files) per mount, the
// read-only attribute shown as missing write bits, EPERM for links, symlinks, device nodes and
// owner changes, EOPNOTSUPP for xattrs.
//
// How it stays consistent: every operation runs under one async mutex (many clients may share one
// server); the FAT lives in memory and its changed sectors are written to every FAT copy at the end
// of each changing operation, data and directory entries are written through, and FSInfo (FAT32)
// gets the true free count and next-free hint with each FAT flush. A damaged cluster chain (a loop,
// a cluster out of range, a free or bad cluster inside a chain, a chain shorter than the file) is
// an EIO for that file and stops any change to it, so damage is never spread.

import { Errno, FsError } from '../lib/errno.js';
import {
  O_ACCMODE, O_APPEND, O_RDONLY, O_TRUNC, ROOT_ID, SEEK_DATA, SEEK_HOLE, S_IFDIR, S_IFMT, S_IFREG,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Timespec, type Vfs,
} from '../vfs/types.js';
import { HandleTable, NAME_MAX, checkAccess, checkName, checkRenameFlags, checkTimespec } from './common.js';
import { ImageDevice } from './image/device.js';

export type FatType = 'fat12' | 'fat16' | 'fat32';

export interface FatFsOptions {
  readOnly?: boolean;
  /** Refuse the image unless it is this FAT type (the fat12:/fat16:/fat32: source specs). */
  expect?: FatType;
}

// Directory entry attributes (fatgen §6).
const ATTR_READ_ONLY = 0x01;
const ATTR_HIDDEN = 0x02;
const ATTR_SYSTEM = 0x04;
const ATTR_VOLUME_ID = 0x08;
const ATTR_DIRECTORY = 0x10;
const ATTR_ARCHIVE = 0x20;
const ATTR_LONG_NAME = ATTR_READ_ONLY | ATTR_HIDDEN | ATTR_SYSTEM | ATTR_VOLUME_ID;
const ATTR_LONG_NAME_MASK = 0x3f;
const DIRENT = 32;
/** Slot marks in DIR_Name[0] (fatgen §6.1): free, and "this and all later slots are free". */
const SLOT_FREE = 0xe5;
const SLOT_END = 0x00;
/** NT case flags in DIR_NTRes, which Windows NT and Linux use to show 8.3 names in lower case. */
const NTRES_LOWER_BASE = 0x08;
const NTRES_LOWER_EXT = 0x10;
/** LFN: 13 UCS-2 characters per slot, the last slot's ordinal or'd with 0x40 (fatgen §7). */
const LFN_CHARS = 13;
const LFN_LAST = 0x40;
const LFN_OFFSETS = [1, 3, 5, 7, 9, 14, 16, 18, 20, 22, 24, 28, 30];
/** A directory is at most 65536 entries (fatgen §6: "2^16 * 32 bytes"). */
const MAX_DIR_BYTES = 65536 * DIRENT;
/** Characters no long name may hold (fatgen §7 plus control characters). */
const LFN_INVALID = /[\u0000-\u001f"*/:<>?\\|]/;
/** Characters allowed in a short name besides A-Z and 0-9 (fatgen §6.1). */
const SHORT_EXTRA = new Set([...'$%\'-_@~`!(){}^#&']);
/** Largest file size FAT can record (DIR_FileSize is 32 bits). */
const MAX_FILE_SIZE = 0xffffffff;
/** Zero-filling and copying is done in chunks of this size, so a large truncate is not one buffer. */
const CHUNK = 1 << 20;
/** The boot sector's "dirty" flag Linux and Windows NT set while mounted (BS_Reserved1 bit 0). */
const STATE_DIRTY = 0x01;

function corrupt(msg: string): FsError {
  return new FsError(Errno.EIO, `fat: corrupted image: ${msg}`);
}

/** A simple FIFO async mutex: every operation of one FatFs runs alone. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

// --- DOS dates and times (fatgen §6.2): stored as UTC here, as Linux does with its default tz=UTC
// in a container; 2-second granularity for the write time, day granularity for the access date.

function dosToUnix(date: number, time: number, tenths = 0): Timespec {
  if (date === 0) return { sec: 0, nsec: 0 };
  const year = 1980 + (date >> 9);
  const month = Math.max(1, (date >> 5) & 0xf);
  const day = Math.max(1, date & 0x1f);
  const ms = Date.UTC(year, month - 1, day, time >> 11, (time >> 5) & 0x3f, (time & 0x1f) * 2);
  const extra = Math.min(tenths, 199) * 10; // CrtTimeTenth counts 10 ms units up to 1.99 s
  return { sec: Math.floor(ms / 1000) + Math.floor(extra / 1000), nsec: (extra % 1000) * 1_000_000 };
}

/** Unix seconds to DOS {date, time, tenths}, clamped to the representable 1980..2107. */
function unixToDos(sec: number, nsec = 0): { date: number; time: number; tenths: number } {
  const min = Date.UTC(1980, 0, 1) / 1000;
  const max = Date.UTC(2107, 11, 31, 23, 59, 58) / 1000;
  const s = Math.min(max, Math.max(min, sec));
  const d = new Date(s * 1000);
  const date = ((d.getUTCFullYear() - 1980) << 9) | ((d.getUTCMonth() + 1) << 5) | d.getUTCDate();
  const time = (d.getUTCHours() << 11) | (d.getUTCMinutes() << 5) | (d.getUTCSeconds() >> 1);
  const tenths = s === sec ? (d.getUTCSeconds() & 1) * 100 + Math.floor(nsec / 10_000_000) : 0;
  return { date, time, tenths };
}

/** The LFN checksum of an 11-byte short name (fatgen §7, ChkSum). */
function lfnChecksum(short: Buffer): number {
  let sum = 0;
  for (let i = 0; i < 11; i++) sum = ((sum & 1 ? 0x80 : 0) + (sum >> 1) + short[i]!) & 0xff;
  return sum;
}

/** The short name as shown when there is no long name: "BASE.EXT", with the NT lower-case flags. */
function shortDisplay(raw: Buffer): string {
  const nameBytes = Buffer.from(raw.subarray(0, 11));
  if (nameBytes[0] === 0x05) nameBytes[0] = 0xe5; // fatgen §6.1: 0x05 stands for a leading 0xE5
  let base = nameBytes.toString('latin1', 0, 8).replace(/ +$/, '');
  let ext = nameBytes.toString('latin1', 8, 11).replace(/ +$/, '');
  const ntres = raw[12]!;
  if (ntres & NTRES_LOWER_BASE) base = base.toLowerCase();
  if (ntres & NTRES_LOWER_EXT) ext = ext.toLowerCase();
  return ext ? `${base}.${ext}` : base;
}

/** Case folding for lookups (FAT compares names case-insensitively). */
function fold(name: string): string {
  return name.toUpperCase();
}

/**
 * st_ino of the entry at byte position `pos`: its slot number, like Linux's i_pos. Stable across
 * mounts and unique among the entries that exist; the root (never in a slot) is 1.
 */
function inoOf(pos: number): number {
  return pos / DIRENT;
}

/** One parsed directory entry: its 8.3 slot, the LFN slots before it, and what it says. */
interface DirSlot {
  name: string;
  /** The 11 bytes of the short name as on disk (latin1), for uniqueness checks. */
  short: string;
  /** Byte position in the image of the 8.3 entry. */
  pos: number;
  /** Byte positions of every slot of this entry (LFN slots, then the 8.3 entry). */
  slots: number[];
  /** A copy of the 32-byte 8.3 entry. */
  raw: Buffer;
}

interface Listing {
  entries: DirSlot[];
  byName: Map<string, DirSlot>;
  shorts: Set<string>;
  /** Byte positions of every slot, in directory order, and which are free. */
  slotPos: number[];
  free: boolean[];
  subdirs: number;
  byPos: Map<number, DirSlot>;
}

class FatNode {
  lookups = 0;
  opens = 0;
  /** Live nodes whose parent is this one (a directory is kept while it has any). */
  children = 0;
  unlinked = false;
  listing: Listing | undefined;
  /** st_ino: the 8.3 entry's slot number in the image, kept after an unlink. */
  ino: number;
  constructor(
    readonly id: number,
    public parent: FatNode | null,
    /** Byte position of the 8.3 entry; -1 for the root and for unlinked nodes. */
    public pos: number,
    public slots: number[],
    public name: string,
    /** The 32-byte 8.3 entry; changes are made here, then written at `pos`. */
    readonly raw: Buffer,
  ) {
    this.ino = pos >= 0 ? inoOf(pos) : id;
  }

  get isDir(): boolean {
    return (this.raw[11]! & ATTR_DIRECTORY) !== 0;
  }
  get cluster(): number {
    return (this.raw.readUInt16LE(20) << 16 | this.raw.readUInt16LE(26)) >>> 0;
  }
  set cluster(c: number) {
    this.raw.writeUInt16LE(c >>> 16, 20);
    this.raw.writeUInt16LE(c & 0xffff, 26);
  }
  get size(): number {
    return this.raw.readUInt32LE(28);
  }
  set size(n: number) {
    this.raw.writeUInt32LE(n, 28);
  }
}

interface Geometry {
  type: FatType;
  bytesPerSector: number;
  clusterSize: number;
  reservedSectors: number;
  numFats: number;
  fatSectors: number;
  /** Byte position and size of the fixed root directory (FAT12/16); 0 on FAT32. */
  rootPos: number;
  rootBytes: number;
  rootCluster: number;
  dataPos: number;
  clusterCount: number;
  /** Which FATs to write: all when mirrored, else only the active one (fatgen §3.3, BPB_ExtFlags). */
  fatCopies: number[];
  /** FAT index to read from. */
  activeFat: number;
  fsInfoPos: number;
  /** Byte offset of the boot sector's state byte (BS_Reserved1). */
  stateOffset: number;
}

/** Parses and checks the BPB (fatgen §3.1-3.5); throws a one-line reason when it is not FAT. */
function parseBpb(b: Buffer, imageSize: number): Geometry {
  if (b.toString('latin1', 3, 11) === 'EXFAT   ') throw new Error('it is exFAT, which is not FAT12/16/32');
  if (b.toString('latin1', 3, 11) === 'NTFS    ') throw new Error('it is NTFS');
  if (b[510] !== 0x55 || b[511] !== 0xaa) throw new Error('no boot sector signature (0x55AA at offset 510)');
  if (b[0] !== 0xeb && b[0] !== 0xe9) throw new Error(`bad jump instruction 0x${b[0]!.toString(16)}`);
  const bytesPerSector = b.readUInt16LE(11);
  if (![512, 1024, 2048, 4096].includes(bytesPerSector)) throw new Error(`bytes per sector ${bytesPerSector}`);
  const secPerClus = b[13]!;
  if (secPerClus === 0 || (secPerClus & (secPerClus - 1)) !== 0) throw new Error(`sectors per cluster ${secPerClus}`);
  const reservedSectors = b.readUInt16LE(14);
  if (reservedSectors === 0) throw new Error('zero reserved sectors');
  const numFats = b[16]!;
  if (numFats === 0) throw new Error('no FAT');
  const rootEntCnt = b.readUInt16LE(17);
  const totSec = b.readUInt16LE(19) || b.readUInt32LE(32);
  const fatSz16 = b.readUInt16LE(22);
  const fatSectors = fatSz16 || b.readUInt32LE(36);
  if (totSec === 0) throw new Error('zero total sectors');
  if (fatSectors === 0) throw new Error('zero FAT size');
  // fatgen §3.5: the type is decided by the count of clusters and nothing else.
  const rootDirSectors = Math.ceil((rootEntCnt * DIRENT) / bytesPerSector);
  const metaSectors = reservedSectors + numFats * fatSectors + rootDirSectors;
  if (metaSectors >= totSec) throw new Error('the FATs and root directory do not fit in the volume');
  const clusterCount = Math.floor((totSec - metaSectors) / secPerClus);
  const type: FatType = clusterCount < 4085 ? 'fat12' : clusterCount < 65525 ? 'fat16' : 'fat32';
  if (type === 'fat32' && (fatSz16 !== 0 || rootEntCnt !== 0)) throw new Error('FAT32 cluster count but a FAT12/16 BPB');
  if (type !== 'fat32' && rootEntCnt === 0) throw new Error('no root directory entries');
  const entryBits = type === 'fat12' ? 12 : type === 'fat16' ? 16 : 32;
  if (Math.ceil(((clusterCount + 2) * entryBits) / 8) > fatSectors * bytesPerSector) throw new Error('the FAT is too small for the cluster count');
  const need = totSec * bytesPerSector;
  if (need > imageSize) throw new Error(`truncated: the volume needs ${need} bytes, the image has ${imageSize}`);
  const clusterSize = secPerClus * bytesPerSector;
  let fatCopies = [...Array(numFats).keys()];
  let activeFat = 0;
  let rootCluster = 0;
  let fsInfoPos = 0;
  if (type === 'fat32') {
    const extFlags = b.readUInt16LE(40);
    if (extFlags & 0x80) {
      activeFat = extFlags & 0xf;
      if (activeFat >= numFats) throw new Error(`active FAT ${activeFat} of ${numFats}`);
      fatCopies = [activeFat];
    }
    if (b.readUInt16LE(42) !== 0) throw new Error(`FAT32 version ${b.readUInt16LE(42)}`);
    rootCluster = b.readUInt32LE(44);
    if (rootCluster < 2 || rootCluster > clusterCount + 1) throw new Error(`root cluster ${rootCluster} out of range`);
    const fsInfo = b.readUInt16LE(48);
    if (fsInfo > 0 && fsInfo < reservedSectors) fsInfoPos = fsInfo * bytesPerSector;
  }
  const rootPos = (reservedSectors + numFats * fatSectors) * bytesPerSector;
  return {
    type, bytesPerSector, clusterSize, reservedSectors, numFats, fatSectors,
    rootPos: type === 'fat32' ? 0 : rootPos,
    rootBytes: type === 'fat32' ? 0 : rootEntCnt * DIRENT,
    rootCluster,
    dataPos: (metaSectors) * bytesPerSector,
    clusterCount, fatCopies, activeFat, fsInfoPos,
    stateOffset: type === 'fat32' ? 65 : 37,
  };
}

/** The FAT held in memory with the sectors changed since the last flush. */
class FatTable {
  private readonly dirty = new Set<number>();
  /** Free clusters, counted at open and kept current. */
  freeCount = 0;
  /** Where the next allocation starts looking (FSI_Nxt_Free). */
  nextFree = 2;
  readonly maxCluster: number;
  readonly eoc: number;
  readonly bad: number;

  constructor(readonly g: Geometry, readonly buf: Buffer) {
    this.maxCluster = g.clusterCount + 1;
    // fatgen §4: end-of-chain marks are >= 0xFF8/0xFFF8/0x0FFFFFF8, bad is the value just below.
    this.eoc = g.type === 'fat12' ? 0xff8 : g.type === 'fat16' ? 0xfff8 : 0x0ffffff8;
    this.bad = this.eoc - 1;
    for (let c = 2; c <= this.maxCluster; c++) if (this.get(c) === 0) this.freeCount++;
  }

  get(n: number): number {
    const b = this.buf;
    switch (this.g.type) {
      case 'fat12': {
        const v = b.readUInt16LE(n + (n >> 1));
        return n & 1 ? v >> 4 : v & 0xfff;
      }
      case 'fat16':
        return b.readUInt16LE(n * 2);
      case 'fat32':
        return b.readUInt32LE(n * 4) & 0x0fffffff;
    }
  }

  set(n: number, v: number): void {
    const b = this.buf;
    const was = this.get(n);
    if (was === 0 && v !== 0) this.freeCount--;
    else if (was !== 0 && v === 0) this.freeCount++;
    let off: number;
    let len: number;
    switch (this.g.type) {
      case 'fat12': {
        off = n + (n >> 1);
        len = 2;
        const w = b.readUInt16LE(off);
        b.writeUInt16LE(n & 1 ? (w & 0x000f) | ((v & 0xfff) << 4) : (w & 0xf000) | (v & 0xfff), off);
        break;
      }
      case 'fat16':
        off = n * 2;
        len = 2;
        b.writeUInt16LE(v & 0xffff, off);
        break;
      case 'fat32':
        off = n * 4;
        len = 4;
        // fatgen §4: the high 4 bits of a FAT32 entry are reserved and must be preserved.
        b.writeUInt32LE(((b.readUInt32LE(off) & 0xf0000000) | (v & 0x0fffffff)) >>> 0, off);
        break;
    }
    const bps = this.g.bytesPerSector;
    this.dirty.add(Math.floor(off / bps));
    this.dirty.add(Math.floor((off + len - 1) / bps));
  }

  isEoc(v: number): boolean {
    return v >= this.eoc;
  }
  eocMark(): number {
    return this.g.type === 'fat12' ? 0xfff : this.g.type === 'fat16' ? 0xffff : 0x0fffffff;
  }

  /**
   * The clusters of a chain starting at `first`. Any damage (a loop, a value out of range, a free
   * or bad cluster inside the chain) is an EIO: nothing is read from, or written to, a bad chain.
   */
  chain(first: number): number[] {
    const out: number[] = [];
    if (first === 0) return out;
    for (let c = first; ;) {
      if (c < 2 || c > this.maxCluster) throw corrupt(`cluster ${c} out of range in the chain from ${first}`);
      out.push(c);
      if (out.length > this.g.clusterCount) throw corrupt(`loop in the cluster chain from ${first}`);
      const next = this.get(c);
      if (this.isEoc(next)) return out;
      if (next === 0) throw corrupt(`free cluster inside the chain from ${first} (after ${c})`);
      if (next === this.bad) throw corrupt(`bad cluster inside the chain from ${first} (after ${c})`);
      c = next;
    }
  }

  /** Takes `n` free clusters (marked end-of-chain, not yet linked); ENOSPC, changing nothing, if too few. */
  allocate(n: number): number[] {
    if (n > this.freeCount) throw new FsError(Errno.ENOSPC);
    const out: number[] = [];
    const span = this.g.clusterCount;
    let c = this.nextFree >= 2 && this.nextFree <= this.maxCluster ? this.nextFree : 2;
    for (let seen = 0; out.length < n && seen < span; seen++) {
      if (this.get(c) === 0) out.push(c);
      c = c >= this.maxCluster ? 2 : c + 1;
    }
    if (out.length < n) throw new FsError(Errno.ENOSPC);
    for (const x of out) this.set(x, this.eocMark());
    this.nextFree = c;
    return out;
  }

  /** Links clusters in order, the last one marked end-of-chain. */
  link(clusters: number[]): void {
    for (let i = 0; i < clusters.length; i++) this.set(clusters[i]!, i + 1 < clusters.length ? clusters[i + 1]! : this.eocMark());
  }

  free(clusters: number[]): void {
    for (const c of clusters) {
      this.set(c, 0);
      if (c < this.nextFree) this.nextFree = c;
    }
  }

  /** Writes the changed sectors to every FAT copy, runs of sectors in one write each. */
  async flush(dev: ImageDevice): Promise<boolean> {
    if (this.dirty.size === 0) return false;
    const sectors = [...this.dirty].sort((a, b) => a - b);
    this.dirty.clear();
    const bps = this.g.bytesPerSector;
    for (let i = 0; i < sectors.length;) {
      let j = i;
      while (j + 1 < sectors.length && sectors[j + 1] === sectors[j]! + 1) j++;
      const from = sectors[i]! * bps;
      const data = this.buf.subarray(from, (sectors[j]! + 1) * bps);
      for (const copy of this.g.fatCopies) {
        await dev.write((this.g.reservedSectors + copy * this.g.fatSectors) * bps + from, data);
      }
      i = j + 1;
    }
    return true;
  }
}

/** A valid upper-case 8.3 name that needs no long-name slots (fatgen §6.1). */
function plainShortName(name: string): Buffer | undefined {
  const m = /^([^.]{1,8})(?:\.([^.]{1,3}))?$/.exec(name);
  if (!m) return undefined;
  const ok = (s: string): boolean => [...s].every((ch) => /[A-Z0-9]/.test(ch) || SHORT_EXTRA.has(ch));
  const base = m[1]!;
  const ext = m[2] ?? '';
  if (!ok(base) || !ok(ext)) return undefined;
  return Buffer.from(base.padEnd(8) + ext.padEnd(3), 'latin1');
}

/**
 * Generates a unique short name for a long name (fatgen §7 "The Basis-Name Generation Algorithm"
 * and "The Numeric-Tail Generation Algorithm"): upper-cased, invalid characters become "_", spaces
 * and leading dots dropped, base cut to 8 and extension to 3, then "~N" until unused.
 */
function generateShortName(name: string, taken: Set<string>): Buffer {
  const conv = (s: string): string => {
    let out = '';
    for (const ch of s.toUpperCase()) {
      if (ch === ' ' || ch === '.') continue;
      out += /[A-Z0-9]/.test(ch) || SHORT_EXTRA.has(ch) ? ch : '_';
    }
    return out;
  };
  const stripped = name.replace(/^\.+/, '');
  const dot = stripped.lastIndexOf('.');
  let base = conv(dot > 0 ? stripped.slice(0, dot) : stripped);
  const ext = conv(dot > 0 ? stripped.slice(dot + 1) : '').slice(0, 3);
  if (base === '') base = '_';
  for (let n = 1; n < 1_000_000; n++) {
    const tail = `~${n}`;
    const cand = base.slice(0, 8 - tail.length) + tail;
    const key = cand.padEnd(8) + ext.padEnd(3);
    if (!taken.has(key)) return Buffer.from(key, 'latin1');
  }
  throw new FsError(Errno.ENOSPC, 'fat: no free short name');
}

/**
 * A long name made fit for FAT as Linux vfat does: trailing dots are dropped (vfat_striptail_len),
 * and characters FAT forbids are EINVAL.
 */
function fatName(name: string): string {
  checkName(name);
  const n = name.replace(/\.+$/, '');
  if (n === '' || n === '.' || n === '..') throw new FsError(Errno.EINVAL);
  if (LFN_INVALID.test(n)) throw new FsError(Errno.EINVAL);
  // 255 UCS-2 units at most (fatgen §7: 20 slots of 13); surrogate pairs count twice.
  if (n.length > 255) throw new FsError(Errno.ENAMETOOLONG);
  return n;
}

export class FatFs implements Vfs {
  private readonly byId = new Map<number, FatNode>();
  private readonly byPos = new Map<number, FatNode>();
  private nextId = ROOT_ID + 1;
  private readonly files = new HandleTable<{ node: FatNode; flags: number }>();
  private readonly dirs = new HandleTable<{ node: FatNode; list: DirSlot[] }>();
  private readonly lock = new Mutex();
  private readonly root: FatNode;
  private closed = false;
  private fsInfoDirty = false;

  private constructor(
    private readonly dev: ImageDevice,
    private readonly g: Geometry,
    private readonly fat: FatTable,
    private readonly readOnly: boolean,
  ) {
    const raw = Buffer.alloc(DIRENT);
    raw[11] = ATTR_DIRECTORY;
    this.root = new FatNode(ROOT_ID, null, -1, [], '', raw);
    this.root.cluster = g.rootCluster;
    this.root.lookups = 1;
    this.byId.set(ROOT_ID, this.root);
  }

  /** Opens a FAT image or device; a one-line FsError(EINVAL) when it is not usable FAT. */
  static async open(imagePath: string, opts: FatFsOptions = {}): Promise<FatFs> {
    const readOnly = opts.readOnly === true;
    const dev = await ImageDevice.open(imagePath, { writable: !readOnly });
    try {
      const bad = (why: string): FsError => new FsError(Errno.EINVAL, `${imagePath}: not a usable FAT file system: ${why}`);
      if (dev.size < 512) throw bad(`truncated: ${dev.size} bytes cannot hold a boot sector`);
      const boot = await dev.read(0, 512);
      let g: Geometry;
      try {
        g = parseBpb(boot, dev.size);
      } catch (err) {
        throw bad((err as Error).message);
      }
      if (opts.expect && opts.expect !== g.type) throw bad(`it is ${g.type.toUpperCase()}, not ${opts.expect.toUpperCase()}`);
      const bps = g.bytesPerSector;
      const fatBuf = await dev.read((g.reservedSectors + g.activeFat * g.fatSectors) * bps, g.fatSectors * bps);
      // FAT[0] holds the media byte in its low 8 bits (fatgen §4); anything else is not a FAT.
      if ((fatBuf[0]! & 0xf0) !== 0xf0 && fatBuf[0] !== 0) throw bad(`FAT[0] is 0x${fatBuf[0]!.toString(16)}, not a media byte`);
      const fat = new FatTable(g, fatBuf);
      if (g.fsInfoPos) {
        const fi = await dev.read(g.fsInfoPos, 512);
        if (fi.readUInt32LE(0) === 0x41615252 && fi.readUInt32LE(484) === 0x61417272) {
          const hint = fi.readUInt32LE(492);
          if (hint >= 2 && hint <= fat.maxCluster) fat.nextFree = hint;
          // The free count is always recounted; rewrite FSInfo if it disagreed.
          const stored = fi.readUInt32LE(488);
          if (!readOnly && stored !== fat.freeCount) return FatFs.make(dev, g, fat, readOnly, true);
        } else {
          g.fsInfoPos = 0;
        }
      }
      return FatFs.make(dev, g, fat, readOnly, false);
    } catch (err) {
      await dev.close();
      if (err instanceof FsError && err.errno === Errno.EIO) throw new FsError(Errno.EINVAL, `${imagePath}: ${err.message}`);
      throw err;
    }
  }

  private static async make(dev: ImageDevice, g: Geometry, fat: FatTable, readOnly: boolean, fsInfoDirty: boolean): Promise<FatFs> {
    const fs = new FatFs(dev, g, fat, readOnly);
    fs.fsInfoDirty = fsInfoDirty;
    // The root directory must be readable, or there is nothing to serve.
    await fs.readListing(fs.root);
    if (!readOnly) await fs.setState(true);
    return fs;
  }

  info(): FsInfo {
    return { type: 'vfat', readOnly: this.readOnly, coherent: true };
  }

  /** The FAT type found in the BPB. */
  get fatType(): FatType {
    return this.g.type;
  }

  // --- the image --------------------------------------------------------------------------------

  private clusterPos(c: number): number {
    return this.g.dataPos + (c - 2) * this.g.clusterSize;
  }

  /** Marks the volume in use (Linux's fat_set_state), cleared again at a clean close. */
  private async setState(dirty: boolean): Promise<void> {
    const b = await this.dev.read(this.g.stateOffset, 1);
    const v = dirty ? b[0]! | STATE_DIRTY : b[0]! & ~STATE_DIRTY;
    if (v !== b[0]) await this.dev.write(this.g.stateOffset, Buffer.from([v]));
  }

  /** Writes the FAT's changed sectors and, on FAT32, the FSInfo free count and hint (fatgen §5). */
  private async flushMeta(): Promise<void> {
    const changed = await this.fat.flush(this.dev);
    if (this.g.fsInfoPos && (changed || this.fsInfoDirty)) {
      const b = Buffer.alloc(8);
      b.writeUInt32LE(this.fat.freeCount, 0);
      b.writeUInt32LE(this.fat.nextFree, 4);
      await this.dev.write(this.g.fsInfoPos + 488, b);
      this.fsInfoDirty = false;
    }
  }

  /** Byte regions of a directory: the fixed root (FAT12/16) or its cluster chain. */
  private dirRegions(dir: FatNode): Array<{ pos: number; len: number }> {
    if (dir === this.root && this.g.type !== 'fat32') return [{ pos: this.g.rootPos, len: this.g.rootBytes }];
    const chain = this.fat.chain(dir.cluster);
    if (chain.length === 0) throw corrupt(`directory "${dir.name}" has no cluster`);
    if (chain.length * this.g.clusterSize > MAX_DIR_BYTES) throw corrupt(`directory "${dir.name}" is over 2 MiB`);
    return chain.map((c) => ({ pos: this.clusterPos(c), len: this.g.clusterSize }));
  }

  /** Parses a directory: long names checked against their short entry's checksum (fatgen §7). */
  private async readListing(dir: FatNode): Promise<Listing> {
    if (dir.listing) return dir.listing;
    const entries: DirSlot[] = [];
    const slotPos: number[] = [];
    const free: boolean[] = [];
    let lfn: { parts: string[]; slots: number[]; sum: number; next: number } | undefined;
    let ended = false;
    const isRoot = dir === this.root;
    let index = 0;
    for (const region of this.dirRegions(dir)) {
      const b = await this.dev.read(region.pos, region.len);
      for (let p = 0; p + DIRENT <= b.length; p += DIRENT, index++) {
        const pos = region.pos + p;
        slotPos.push(pos);
        const first = b[p]!;
        if (ended || first === SLOT_END) {
          ended = true;
          free.push(true);
          continue;
        }
        if (first === SLOT_FREE) {
          free.push(true);
          lfn = undefined;
          continue;
        }
        free.push(false);
        const attr = b[p + 11]!;
        if ((attr & ATTR_LONG_NAME_MASK) === ATTR_LONG_NAME) {
          const ord = first & 0x3f;
          const chars: number[] = [];
          for (const o of LFN_OFFSETS) chars.push(b.readUInt16LE(p + o));
          const end = chars.indexOf(0);
          const part = String.fromCharCode(...(end >= 0 ? chars.slice(0, end) : chars));
          if (first & LFN_LAST) {
            lfn = ord >= 1 && ord <= 20 ? { parts: [part], slots: [pos], sum: b[p + 13]!, next: ord - 1 } : undefined;
          } else if (lfn && ord === lfn.next && ord >= 1 && b[p + 13] === lfn.sum) {
            lfn.parts.push(part);
            lfn.slots.push(pos);
            lfn.next = ord - 1;
          } else {
            lfn = undefined; // an orphan or out-of-order slot: ignored, as fatgen §7 says
          }
          continue;
        }
        const raw = Buffer.from(b.subarray(p, p + DIRENT));
        const have = lfn;
        lfn = undefined;
        if (attr & ATTR_VOLUME_ID) continue;
        // "." and ".." are not listed; the Vfs makes its own.
        if (!isRoot && index < 2 && raw[0] === 0x2e) continue;
        const useLfn = have && have.next === 0 && lfnChecksum(raw) === have.sum;
        const name = useLfn ? have.parts.reverse().join('') : shortDisplay(raw);
        if (name === '' || name === '.' || name === '..' || name.includes('/')) continue;
        entries.push({
          name,
          short: raw.toString('latin1', 0, 11),
          pos,
          slots: useLfn ? [...have.slots, pos] : [pos],
          raw,
        });
      }
    }
    const byName = new Map<string, DirSlot>();
    const shorts = new Set<string>();
    let subdirs = 0;
    for (const e of entries) {
      shorts.add(e.short);
      if (e.raw[11]! & ATTR_DIRECTORY) subdirs++;
    }
    // Long names first, then short names as aliases (Linux finds a file by either).
    for (const e of entries) if (!byName.has(fold(e.name))) byName.set(fold(e.name), e);
    for (const e of entries) {
      const s = fold(shortDisplay(e.raw));
      if (!byName.has(s)) byName.set(s, e);
    }
    const l: Listing = { entries, byName, shorts, slotPos, free, subdirs, byPos: new Map(entries.map((e) => [e.pos, e])) };
    dir.listing = l;
    return l;
  }

  /** The data clusters of a file, checked against its size. */
  private fileChain(node: FatNode): number[] {
    const chain = this.fat.chain(node.cluster);
    if (chain.length * this.g.clusterSize < node.size) {
      throw corrupt(`"${node.name}" is ${node.size} bytes but its chain holds ${chain.length} clusters`);
    }
    return chain;
  }

  /** Byte runs [pos, len) of the image holding file bytes [off, off+len), contiguous clusters merged. */
  private runs(chain: number[], off: number, len: number): Array<{ pos: number; len: number }> {
    const cs = this.g.clusterSize;
    const out: Array<{ pos: number; len: number }> = [];
    for (let done = 0; done < len;) {
      const at = off + done;
      const idx = Math.floor(at / cs);
      const c = chain[idx];
      if (c === undefined) throw corrupt('read past the cluster chain');
      const inC = at - idx * cs;
      const n = Math.min(len - done, cs - inC);
      const pos = this.clusterPos(c) + inC;
      const last = out[out.length - 1];
      if (last && last.pos + last.len === pos) last.len += n;
      else out.push({ pos, len: n });
      done += n;
    }
    return out;
  }

  /** Writes a node's 8.3 entry and keeps its parent's parsed listing in step. */
  private async writeEntry(node: FatNode): Promise<void> {
    if (node.pos < 0) return;
    await this.dev.write(node.pos, node.raw);
    const cached = node.parent?.listing?.byPos.get(node.pos);
    if (cached) node.raw.copy(cached.raw);
  }

  // --- nodes ------------------------------------------------------------------------------------

  private known(nodeid: number): FatNode {
    if (this.closed) throw new FsError(Errno.EIO);
    const n = this.byId.get(nodeid);
    if (!n) throw new FsError(Errno.ESTALE);
    return n;
  }

  private dirNode(nodeid: number): FatNode {
    const n = this.known(nodeid);
    if (!n.isDir) throw new FsError(Errno.ENOTDIR);
    return n;
  }

  /** A directory that still has a name: lookups and changes in a removed one are ENOENT, as on Linux. */
  private liveDir(nodeid: number): FatNode {
    const n = this.dirNode(nodeid);
    if (n.unlinked) throw new FsError(Errno.ENOENT);
    return n;
  }

  private writable(): void {
    if (this.readOnly) throw new FsError(Errno.EROFS);
  }

  /** The live node for a directory slot, made if needed; does not count a lookup. */
  private nodeFor(dir: FatNode, e: DirSlot): FatNode {
    const hit = this.byPos.get(e.pos);
    if (hit) return hit;
    const n = new FatNode(this.nextId++, dir, e.pos, e.slots, e.name, Buffer.from(e.raw));
    dir.children++;
    this.byId.set(n.id, n);
    this.byPos.set(e.pos, n);
    return n;
  }

  private enter(n: FatNode): Entry {
    n.lookups++;
    return { nodeid: n.id, generation: 0, attr: this.attrOf(n) };
  }

  /** Forgets a node nobody holds; frees an unlinked file's clusters once nothing holds it. */
  private async maybeDrop(n: FatNode): Promise<void> {
    if (n === this.root || n.lookups > 0 || n.opens > 0 || n.children > 0) return;
    if (!this.byId.has(n.id)) return;
    if (n.unlinked && n.cluster !== 0 && !this.readOnly) {
      await this.releaseClusters(n);
    }
    this.byId.delete(n.id);
    if (n.pos >= 0 && this.byPos.get(n.pos) === n) this.byPos.delete(n.pos);
    const p = n.parent;
    if (p) {
      p.children--;
      await this.maybeDrop(p);
    }
  }

  private async releaseClusters(n: FatNode): Promise<void> {
    try {
      this.fat.free(this.fat.chain(n.cluster));
    } catch {
      // A damaged chain is left as it is (fsck can reclaim it) rather than freeing a stranger's clusters.
    }
    n.cluster = 0;
    await this.flushMeta();
  }

  private attrOf(n: FatNode): Attr {
    const raw = n.raw;
    const cs = this.g.clusterSize;
    const isDir = n.isDir;
    let size = n.size;
    let blocks = Math.ceil(size / cs) * (cs / 512);
    let nlink = n.unlinked ? 0 : 1;
    if (isDir) {
      // Like Linux: a directory's size is what it occupies; its links are 2 plus its subdirectories.
      size = n === this.root && this.g.type !== 'fat32' ? this.g.rootBytes : this.safeChainLength(n.cluster) * cs;
      blocks = Math.ceil(size / 512);
      nlink = n.unlinked ? 0 : 2 + (n.listing?.subdirs ?? 0);
    }
    const ro = (raw[11]! & ATTR_READ_ONLY) !== 0;
    // Linux vfat: the read-only attribute drops the write bits of files; directories ignore it.
    const perm = isDir ? 0o755 : ro ? 0o444 : 0o644;
    const mtime = n === this.root ? { sec: 0, nsec: 0 } : dosToUnix(raw.readUInt16LE(24), raw.readUInt16LE(22));
    const atime = n === this.root ? mtime : dosToUnix(raw.readUInt16LE(18), 0);
    return {
      ino: n.ino, size, blocks, atime, mtime, ctime: mtime, mode: (isDir ? S_IFDIR : S_IFREG) | perm, nlink,
      uid: 0, gid: 0, rdev: 0, blksize: cs,
    };
  }

  private safeChainLength(c: number): number {
    try {
      return this.fat.chain(c).length;
    } catch {
      return 0;
    }
  }

  /** Sets a node's write time (and access date) to now, as every change does. */
  private touch(n: FatNode, access = true): void {
    if (n === this.root) return;
    const t = Date.now() / 1000;
    const d = unixToDos(Math.floor(t));
    n.raw.writeUInt16LE(d.time, 22);
    n.raw.writeUInt16LE(d.date, 24);
    if (access) n.raw.writeUInt16LE(d.date, 18);
    // The archive bit says "changed since the last backup" (fatgen §6).
    if (!n.isDir) n.raw[11] = n.raw[11]! | ATTR_ARCHIVE;
  }

  private async touchDir(dir: FatNode): Promise<void> {
    if (dir === this.root) return;
    this.touch(dir);
    await this.writeEntry(dir);
  }

  // --- directory changes ------------------------------------------------------------------------

  private async findIn(dir: FatNode, name: string): Promise<DirSlot | undefined> {
    const l = await this.readListing(dir);
    return l.byName.get(fold(name));
  }

  /** Finds (or makes, by growing the directory) `count` consecutive free slots in `dir`. */
  private async freeSlots(dir: FatNode, count: number): Promise<number[]> {
    let l = await this.readListing(dir);
    for (let tries = 0; tries < 2; tries++) {
      let run = 0;
      for (let i = 0; i < l.slotPos.length; i++) {
        // A run may cross into the next cluster (fatgen §7 lets an entry's slots span clusters).
        run = l.free[i] ? run + 1 : 0;
        if (run === count) return l.slotPos.slice(i - count + 1, i + 1);
      }
      if (dir === this.root && this.g.type !== 'fat32') throw new FsError(Errno.ENOSPC, 'fat: the root directory is full');
      // Grow by as many zeroed clusters as the entry needs (fatgen §6: a directory is a chain).
      const chain = this.fat.chain(dir.cluster);
      const cs = this.g.clusterSize;
      const need = Math.ceil((count * DIRENT) / cs);
      if ((chain.length + need) * cs > MAX_DIR_BYTES) throw new FsError(Errno.ENOSPC, 'fat: directory full');
      const added = this.fat.allocate(need);
      for (const c of added) await this.dev.write(this.clusterPos(c), Buffer.alloc(cs));
      this.fat.link([chain[chain.length - 1]!, ...added]);
      await this.flushMeta();
      dir.listing = undefined;
      l = await this.readListing(dir);
    }
    throw new FsError(Errno.ENOSPC);
  }

  /** Writes a new entry named `name` in `dir` carrying `raw` (its 8.3 name is chosen here). */
  private async addEntry(dir: FatNode, name: string, raw: Buffer): Promise<{ pos: number; slots: number[] }> {
    const l = await this.readListing(dir);
    const plain = plainShortName(name);
    const short = plain && !l.shorts.has(plain.toString('latin1')) ? plain : generateShortName(name, l.shorts);
    short.copy(raw, 0);
    raw[12] = 0; // no NT case flags: the long name carries the case
    if (raw[0] === 0xe5) raw[0] = 0x05;
    const units: number[] = [];
    for (let i = 0; i < name.length; i++) units.push(name.charCodeAt(i));
    const needLfn = plain === undefined || short !== plain;
    const lfnCount = needLfn ? Math.ceil(units.length / LFN_CHARS) : 0;
    const slots = await this.freeSlots(dir, lfnCount + 1);
    const buf = Buffer.alloc((lfnCount + 1) * DIRENT);
    const sum = lfnChecksum(raw);
    // Long-name slots come last-part first, each with its ordinal (fatgen §7).
    for (let k = 0; k < lfnCount; k++) {
      const ord = lfnCount - k;
      const p = k * DIRENT;
      buf[p] = ord | (k === 0 ? LFN_LAST : 0);
      buf[p + 11] = ATTR_LONG_NAME;
      buf[p + 13] = sum;
      for (let j = 0; j < LFN_CHARS; j++) {
        const idx = (ord - 1) * LFN_CHARS + j;
        const v = idx < units.length ? units[idx]! : idx === units.length ? 0 : 0xffff;
        buf.writeUInt16LE(v, p + LFN_OFFSETS[j]!);
      }
    }
    raw.copy(buf, lfnCount * DIRENT);
    // Slots are consecutive in directory order but may straddle two clusters: write each.
    for (let k = 0; k < slots.length; k++) {
      const s = slots[k]!;
      let n = 1;
      while (k + n < slots.length && slots[k + n] === s + n * DIRENT) n++;
      await this.dev.write(s, buf.subarray(k * DIRENT, (k + n) * DIRENT));
      k += n - 1;
    }
    dir.listing = undefined;
    return { pos: slots[slots.length - 1]!, slots };
  }

  /** Marks an entry's slots free (fatgen §6.1: 0xE5 in the first byte). */
  private async removeSlots(dir: FatNode, slots: number[]): Promise<void> {
    for (const s of slots) await this.dev.write(s, Buffer.from([SLOT_FREE]));
    dir.listing = undefined;
  }

  /** A fresh 8.3 entry: attributes, cluster, size 0, all three times now. */
  private newRaw(attr: number, cluster: number): Buffer {
    const raw = Buffer.alloc(DIRENT);
    raw[11] = attr;
    const now = Date.now();
    const d = unixToDos(Math.floor(now / 1000), (now % 1000) * 1e6);
    raw[13] = d.tenths;
    raw.writeUInt16LE(d.time, 14);
    raw.writeUInt16LE(d.date, 16);
    raw.writeUInt16LE(d.date, 18);
    raw.writeUInt16LE(d.time, 22);
    raw.writeUInt16LE(d.date, 24);
    raw.writeUInt16LE(cluster >>> 16, 20);
    raw.writeUInt16LE(cluster & 0xffff, 26);
    return raw;
  }

  /** The cluster a ".." entry names: 0 for the root, even on FAT32 (fatgen §6.5). */
  private dotdotCluster(parent: FatNode): number {
    return parent === this.root ? 0 : parent.cluster;
  }

  /** Deletes an entry found in `dir`; its clusters are freed now, or when its last opener lets go. */
  private async deleteEntry(dir: FatNode, e: DirSlot): Promise<void> {
    const live = this.byPos.get(e.pos);
    const cluster = (e.raw.readUInt16LE(20) << 16 | e.raw.readUInt16LE(26)) >>> 0;
    // Check the chain before touching anything: a damaged file is refused, not half-deleted.
    const chain = this.fat.chain(cluster);
    await this.removeSlots(dir, e.slots);
    if (live) {
      this.byPos.delete(e.pos);
      live.pos = -1;
      live.slots = [];
      live.unlinked = true;
      if (live.opens > 0) return;
      live.cluster = 0;
      live.size = 0;
    }
    this.fat.free(chain);
    await this.flushMeta();
  }

  private async isEmptyDir(cluster: number, name: string): Promise<boolean> {
    const probe = new FatNode(0, null, -1, [], name, this.newRaw(ATTR_DIRECTORY, cluster));
    return (await this.readListing(probe)).entries.length === 0;
  }

  // --- Vfs: lookups and attributes ---------------------------------------------------------------

  lookup(_ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return this.lock.run(async () => {
      const d = this.liveDir(parent);
      if (name === '.') return this.enter(d);
      if (name === '..') return this.enter(d.parent ?? d);
      checkName(name);
      const e = await this.findIn(d, name.replace(/\.+$/, '') || name);
      if (!e) throw new FsError(Errno.ENOENT);
      const n = this.nodeFor(d, e);
      if (n.isDir) await this.readListing(n).catch(() => undefined);
      return this.enter(n);
    });
  }

  forget(nodeid: number, nlookup: number): void {
    const n = this.byId.get(nodeid);
    if (!n || n === this.root) return;
    n.lookups = Math.max(0, n.lookups - nlookup);
    // Dropping may free an unlinked file's clusters: that is a change, so it takes the lock.
    void this.lock.run(() => this.maybeDrop(n)).catch(() => undefined);
  }

  getattr(_ctx: Ctx, nodeid: number, _fh?: number): Promise<Attr> {
    return this.lock.run(async () => {
      const n = this.known(nodeid);
      if (n.isDir && !n.unlinked) await this.readListing(n).catch(() => undefined);
      return this.attrOf(n);
    });
  }

  setattr(_ctx: Ctx, nodeid: number, set: SetAttr, _fh?: number): Promise<Attr> {
    return this.lock.run(async () => {
      const n = this.known(nodeid);
      this.writable();
      if (set.atime !== undefined && set.atime !== 'now') checkTimespec(set.atime);
      if (set.mtime !== undefined && set.mtime !== 'now') checkTimespec(set.mtime);
      // Owners are fixed per mount: Linux vfat refuses a change to any other id with EPERM.
      if ((set.uid !== undefined && set.uid !== 0) || (set.gid !== undefined && set.gid !== 0)) throw new FsError(Errno.EPERM);
      let attrByte = n.raw[11]!;
      if (set.mode !== undefined) {
        const perm = set.mode & 0o7777;
        if (n.isDir || n === this.root) {
          // Directories cannot hold the read-only bit in their mode (fat_mode_can_hold_ro).
          if (perm !== 0o755) throw new FsError(Errno.EPERM);
        } else if (perm === 0o644) {
          attrByte &= ~ATTR_READ_ONLY;
        } else if (perm === 0o444) {
          attrByte |= ATTR_READ_ONLY;
        } else {
          // Linux fat_sanitize_mode_change: only the write bits may change, all of them at once.
          throw new FsError(Errno.EPERM);
        }
      }
      if (set.size !== undefined) {
        if (n.isDir) throw new FsError(Errno.EISDIR);
        if (!Number.isSafeInteger(set.size) || set.size < 0) throw new FsError(Errno.EINVAL);
        if (set.size > MAX_FILE_SIZE) throw new FsError(Errno.EFBIG);
        await this.resize(n, set.size);
        this.touch(n);
      }
      if (n !== this.root) {
        n.raw[11] = attrByte;
        if (set.mtime !== undefined) {
          const t = set.mtime === 'now' ? Math.floor(Date.now() / 1000) : set.mtime.sec;
          const d = unixToDos(t);
          n.raw.writeUInt16LE(d.time, 22);
          n.raw.writeUInt16LE(d.date, 24);
        }
        if (set.atime !== undefined) {
          const t = set.atime === 'now' ? Math.floor(Date.now() / 1000) : set.atime.sec;
          n.raw.writeUInt16LE(unixToDos(t).date, 18);
        }
        await this.writeEntry(n);
      }
      await this.flushMeta();
      return this.attrOf(n);
    });
  }

  async readlink(_ctx: Ctx, nodeid: number): Promise<string> {
    this.known(nodeid);
    throw new FsError(Errno.EINVAL);
  }

  // --- Vfs: names ------------------------------------------------------------------------------

  /** Checks a new name in `dir`: EEXIST if any entry folds to it. Returns the name as stored. */
  private async newName(dir: FatNode, name: string): Promise<string> {
    const n = fatName(name);
    if (await this.findIn(dir, n)) throw new FsError(Errno.EEXIST);
    return n;
  }

  private async makeFile(parent: number, name: string): Promise<FatNode> {
    const d = this.liveDir(parent);
    this.writable();
    const stored = await this.newName(d, name);
    const raw = this.newRaw(ATTR_ARCHIVE, 0);
    const at = await this.addEntry(d, stored, raw);
    await this.touchDir(d);
    const l = await this.readListing(d);
    const e = l.entries.find((x) => x.pos === at.pos);
    if (!e) throw new FsError(Errno.EIO, 'fat: new entry vanished');
    return this.nodeFor(d, e);
  }

  mknod(_ctx: Ctx, parent: number, name: string, mode: number, _rdev: number): Promise<Entry> {
    // vfat has no mknod: only regular files can exist (the kernel's mknod of S_IFREG is create).
    if ((mode & S_IFMT) !== S_IFREG && (mode & S_IFMT) !== 0) return this.unsupported(parent, name);
    return this.lock.run(async () => this.enter(await this.makeFile(parent, name)));
  }

  mkdir(_ctx: Ctx, parent: number, name: string, _mode: number): Promise<Entry> {
    return this.lock.run(async () => {
      const d = this.liveDir(parent);
      this.writable();
      const stored = await this.newName(d, name);
      const [c] = this.fat.allocate(1);
      const cs = this.g.clusterSize;
      // A new directory holds "." and ".." (fatgen §6.5), the rest zeroed (end of directory).
      const data = Buffer.alloc(cs);
      const raw = this.newRaw(ATTR_DIRECTORY, c!);
      raw.copy(data, 0);
      data.write('.          ', 0, 'latin1');
      raw.copy(data, DIRENT);
      data.write('..         ', DIRENT, 'latin1');
      data.writeUInt16LE(this.dotdotCluster(d) >>> 16, DIRENT + 20);
      data.writeUInt16LE(this.dotdotCluster(d) & 0xffff, DIRENT + 26);
      try {
        await this.dev.write(this.clusterPos(c!), data);
        await this.flushMeta();
        const at = await this.addEntry(d, stored, raw);
        await this.touchDir(d);
        const e = (await this.readListing(d)).entries.find((x) => x.pos === at.pos);
        if (!e) throw new FsError(Errno.EIO, 'fat: new entry vanished');
        return this.enter(this.nodeFor(d, e));
      } catch (err) {
        this.fat.free([c!]);
        await this.flushMeta();
        throw err;
      }
    });
  }

  /**
   * What the VFS answers for an operation vfat lacks (vfs_symlink, vfs_link, vfs_mknod): EEXIST when
   * the name is taken (may_create runs first), else EPERM.
   */
  private unsupported(parent: number, name: string): Promise<never> {
    return this.lock.run(async () => {
      const d = this.liveDir(parent);
      checkName(name);
      if (await this.findIn(d, name)) throw new FsError(Errno.EEXIST);
      throw new FsError(Errno.EPERM);
    });
  }

  symlink(_ctx: Ctx, parent: number, name: string, _target: string): Promise<Entry> {
    return this.unsupported(parent, name); // vfat has no symlinks
  }

  async link(_ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    this.known(nodeid);
    return this.unsupported(newparent, newname); // nor hard links
  }

  unlink(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.lock.run(async () => {
      const d = this.liveDir(parent);
      this.writable();
      checkName(name);
      const e = await this.findIn(d, name);
      if (!e) throw new FsError(Errno.ENOENT);
      if (e.raw[11]! & ATTR_DIRECTORY) throw new FsError(Errno.EISDIR);
      await this.deleteEntry(d, e);
      await this.touchDir(d);
    });
  }

  rmdir(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.lock.run(async () => {
      const d = this.liveDir(parent);
      this.writable();
      if (name === '.') throw new FsError(Errno.EINVAL);
      if (name === '..') throw new FsError(Errno.ENOTEMPTY);
      checkName(name);
      const e = await this.findIn(d, name);
      if (!e) throw new FsError(Errno.ENOENT);
      if (!(e.raw[11]! & ATTR_DIRECTORY)) throw new FsError(Errno.ENOTDIR);
      const live = this.byPos.get(e.pos);
      const cluster = (e.raw.readUInt16LE(20) << 16 | e.raw.readUInt16LE(26)) >>> 0;
      const empty = live ? (await this.readListing(live)).entries.length === 0 : await this.isEmptyDir(cluster, e.name);
      if (!empty) throw new FsError(Errno.ENOTEMPTY);
      await this.deleteEntry(d, e);
      if (live) live.listing = undefined;
      await this.touchDir(d);
    });
  }

  rename(_ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    return this.lock.run(async () => {
      checkRenameFlags(flags);
      const sd = this.liveDir(parent);
      const dd = this.liveDir(newparent);
      this.writable();
      checkName(name);
      if (flags & 2) return this.exchange(sd, name, dd, newname);
      const stored = fatName(newname);
      const src = await this.findIn(sd, name);
      if (!src) throw new FsError(Errno.ENOENT);
      const srcIsDir = (src.raw[11]! & ATTR_DIRECTORY) !== 0;
      const dst = await this.findIn(dd, stored);
      const sameEntry = dst !== undefined && dst.pos === src.pos;
      if (dst && !sameEntry) {
        if (flags & 1) throw new FsError(Errno.EEXIST);
        const dstIsDir = (dst.raw[11]! & ATTR_DIRECTORY) !== 0;
        if (srcIsDir && !dstIsDir) throw new FsError(Errno.ENOTDIR);
        if (!srcIsDir && dstIsDir) throw new FsError(Errno.EISDIR);
        if (dstIsDir) {
          const live = this.byPos.get(dst.pos);
          const c = (dst.raw.readUInt16LE(20) << 16 | dst.raw.readUInt16LE(26)) >>> 0;
          const empty = live ? (await this.readListing(live)).entries.length === 0 : await this.isEmptyDir(c, dst.name);
          if (!empty) throw new FsError(Errno.ENOTEMPTY);
        }
      }
      if (sameEntry && sd === dd && src.name === stored) return; // the very same name
      const srcNode = this.nodeFor(sd, src);
      if (srcIsDir) {
        // A directory may not move into itself or below itself.
        for (let a: FatNode | null = dd; a; a = a.parent) if (a === srcNode) throw new FsError(Errno.EINVAL);
      }
      // Check every chain involved before writing anything.
      if (srcIsDir) this.fat.chain(srcNode.cluster);
      if (dst && !sameEntry) {
        this.fat.chain((dst.raw.readUInt16LE(20) << 16 | dst.raw.readUInt16LE(26)) >>> 0);
        await this.deleteEntry(dd, dst);
      }
      // The new entry first, then the old one goes: a crash between leaves two names, not none.
      const raw = Buffer.from(srcNode.raw);
      const oldSlots = srcNode.slots;
      const oldPos = srcNode.pos;
      const at = await this.addEntry(dd, stored, raw);
      await this.removeSlots(sd, oldSlots);
      raw.copy(srcNode.raw);
      this.byPos.delete(oldPos);
      srcNode.pos = at.pos;
      srcNode.ino = inoOf(at.pos);
      srcNode.slots = at.slots;
      srcNode.name = stored;
      this.byPos.set(at.pos, srcNode);
      if (srcNode.parent !== dd) {
        sd.children--;
        dd.children++;
        srcNode.parent = dd;
        if (srcIsDir) {
          await this.setDotdot(this.fat.chain(srcNode.cluster)[0]!, dd);
          srcNode.listing = undefined;
        }
      }
      await this.touchDir(sd);
      if (dd !== sd) await this.touchDir(dd);
      await this.maybeDrop(srcNode);
      await this.maybeDrop(sd);
    });
  }

  /**
   * RENAME_EXCHANGE (Linux vfat since 6.0): the names and their slots stay where they are and the
   * rest of the two 8.3 entries (attributes, times, cluster, size) trade places; the NT case byte
   * belongs to the short name and stays too, so every LFN checksum still holds.
   */
  private async exchange(sd: FatNode, name: string, dd: FatNode, newname: string): Promise<void> {
    checkName(newname);
    const a = await this.findIn(sd, name);
    const b = await this.findIn(dd, newname);
    if (!a || !b) throw new FsError(Errno.ENOENT);
    if (a.pos === b.pos) return;
    const na = this.nodeFor(sd, a);
    const nb = this.nodeFor(dd, b);
    for (let x: FatNode | null = dd; x; x = x.parent) if (x === na) throw new FsError(Errno.EINVAL);
    for (let x: FatNode | null = sd; x; x = x.parent) if (x === nb) throw new FsError(Errno.EINVAL);
    const aChain = na.isDir ? this.fat.chain(na.cluster) : [];
    const bChain = nb.isDir ? this.fat.chain(nb.cluster) : [];
    const ra = Buffer.from(na.raw);
    const rb = Buffer.from(nb.raw);
    rb.copy(na.raw, 0, 0, 11);
    na.raw[12] = rb[12]!;
    ra.copy(nb.raw, 0, 0, 11);
    nb.raw[12] = ra[12]!;
    const [aPos, aSlots, aName] = [na.pos, na.slots, na.name];
    na.pos = nb.pos;
    na.slots = nb.slots;
    na.name = nb.name;
    nb.pos = aPos;
    nb.slots = aSlots;
    nb.name = aName;
    na.ino = inoOf(na.pos);
    nb.ino = inoOf(nb.pos);
    this.byPos.set(na.pos, na);
    this.byPos.set(nb.pos, nb);
    if (sd !== dd) {
      na.parent = dd;
      nb.parent = sd;
    }
    await this.writeEntry(na);
    await this.writeEntry(nb);
    if (sd !== dd) {
      if (aChain.length) await this.setDotdot(aChain[0]!, dd);
      if (bChain.length) await this.setDotdot(bChain[0]!, sd);
    }
    // The count of subdirectories may have changed on both sides.
    sd.listing = undefined;
    dd.listing = undefined;
    await this.touchDir(sd);
    if (dd !== sd) await this.touchDir(dd);
    await this.maybeDrop(na);
    await this.maybeDrop(nb);
  }

  /** fatgen §6.5: ".." of a moved directory names its new parent's cluster (0 for the root). */
  private async setDotdot(firstCluster: number, parent: FatNode): Promise<void> {
    const c = this.dotdotCluster(parent);
    const dotdot = this.clusterPos(firstCluster) + DIRENT;
    const hi = Buffer.alloc(2);
    hi.writeUInt16LE(c >>> 16, 0);
    const lo = Buffer.alloc(2);
    lo.writeUInt16LE(c & 0xffff, 0);
    await this.dev.write(dotdot + 20, hi);
    await this.dev.write(dotdot + 26, lo);
  }

  // --- Vfs: files ------------------------------------------------------------------------------

  /** Grows (zero-filled, fatgen has no holes) or shrinks a file, allocating or freeing clusters. */
  private async resize(n: FatNode, size: number): Promise<void> {
    const chain = this.fileChain(n);
    const cs = this.g.clusterSize;
    const need = Math.ceil(size / cs);
    const old = n.size;
    if (need > chain.length) {
      const added = this.fat.allocate(need - chain.length);
      if (chain.length) this.fat.link([chain[chain.length - 1]!, ...added]);
      else {
        this.fat.link(added);
        n.cluster = added[0]!;
      }
      chain.push(...added);
    } else if (need < chain.length) {
      // Entry first, then the FAT: a crash leaves lost clusters, never a size past the chain.
      n.size = Math.min(old, size);
      if (need === 0) n.cluster = 0;
      await this.writeEntry(n);
      if (need > 0) this.fat.set(chain[need - 1]!, this.fat.eocMark());
      this.fat.free(chain.slice(need));
      chain.length = need;
    }
    // Bytes past the old size are whatever the clusters held before: zero them (no sparse files).
    for (let off = old; off < size;) {
      const len = Math.min(CHUNK, size - off);
      for (const r of this.runs(chain, off, len)) await this.dev.write(r.pos, Buffer.alloc(r.len));
      off += len;
    }
    await this.flushMeta();
    n.size = size;
    await this.writeEntry(n);
  }

  open(_ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.lock.run(async () => {
      const n = this.known(nodeid);
      if (n.isDir) throw new FsError(Errno.EISDIR);
      const acc = flags & O_ACCMODE;
      if (acc !== O_RDONLY || flags & O_TRUNC) this.writable();
      if ((flags & O_TRUNC) && acc !== O_RDONLY && n.size !== 0) {
        await this.resize(n, 0);
        this.touch(n);
        await this.writeEntry(n);
      }
      n.opens++;
      return { fh: this.files.add({ node: n, flags }) };
    });
  }

  create(_ctx: Ctx, parent: number, name: string, _mode: number, flags: number): Promise<CreateResult> {
    return this.lock.run(async () => {
      const n = await this.makeFile(parent, name);
      n.opens++;
      return { fh: this.files.add({ node: n, flags }), entry: this.enter(n) };
    });
  }

  private handle(nodeid: number, fh: number): { node: FatNode; flags: number } {
    const h = this.files.get(fh);
    if (h.node.id !== nodeid) throw new FsError(Errno.EBADF);
    if (this.closed) throw new FsError(Errno.EIO);
    return h;
  }

  read(_ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return this.lock.run(async () => {
      const { node } = this.handle(nodeid, fh);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
      if (offset >= node.size || size === 0) return Buffer.alloc(0);
      const len = Math.min(size, node.size - offset);
      const parts: Buffer[] = [];
      for (const r of this.runs(this.fileChain(node), offset, len)) parts.push(await this.dev.read(r.pos, r.len));
      return parts.length === 1 ? parts[0]! : Buffer.concat(parts);
    });
  }

  private async writeLocked(node: FatNode, offset: number, data: Buffer): Promise<number> {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
    if (data.length === 0) return 0;
    const end = offset + data.length;
    if (end > MAX_FILE_SIZE) throw new FsError(Errno.EFBIG);
    const cs = this.g.clusterSize;
    const chain = this.fileChain(node);
    const need = Math.ceil(end / cs);
    if (need > chain.length) {
      const added = this.fat.allocate(need - chain.length);
      if (chain.length) this.fat.link([chain[chain.length - 1]!, ...added]);
      else {
        this.fat.link(added);
        node.cluster = added[0]!;
      }
      chain.push(...added);
    }
    // A write past the end leaves a gap that must read as zeros.
    for (let off = node.size; off < offset;) {
      const len = Math.min(CHUNK, offset - off);
      for (const r of this.runs(chain, off, len)) await this.dev.write(r.pos, Buffer.alloc(r.len));
      off += len;
    }
    let done = 0;
    for (const r of this.runs(chain, offset, data.length)) {
      await this.dev.write(r.pos, data.subarray(done, done + r.len));
      done += r.len;
    }
    // The FAT goes out before the entry names the new size: a crash leaves lost clusters, not a bad file.
    await this.flushMeta();
    if (end > node.size) node.size = end;
    this.touch(node, false);
    await this.writeEntry(node);
    return data.length;
  }

  write(_ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.lock.run(async () => {
      const h = this.handle(nodeid, fh);
      if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
      this.writable();
      return this.writeLocked(h.node, h.flags & O_APPEND ? h.node.size : offset, data);
    });
  }

  flush(_ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.lock.run(async () => {
      this.handle(nodeid, fh);
      await this.flushMeta();
    });
  }

  fsync(_ctx: Ctx, nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    return this.lock.run(async () => {
      this.handle(nodeid, fh);
      await this.flushMeta();
      await this.dev.sync();
    });
  }

  release(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    return this.lock.run(async () => {
      const h = this.files.delete(fh);
      if (!h) throw new FsError(Errno.EBADF);
      h.node.opens--;
      await this.flushMeta();
      await this.maybeDrop(h.node);
    });
  }

  // --- Vfs: directories ------------------------------------------------------------------------

  opendir(_ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return this.lock.run(async () => {
      const n = this.dirNode(nodeid);
      // A snapshot: cookies index it, so they stay valid whatever changes meanwhile.
      const list = n.unlinked ? [] : [...(await this.readListing(n)).entries];
      n.opens++;
      return { fh: this.dirs.add({ node: n, list }) };
    });
  }

  readdir(_ctx: Ctx, _nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.lock.run(async () => {
      const h = this.dirs.get(fh);
      const d = h.node;
      if (this.closed) throw new FsError(Errno.EIO);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
      const out: DirEntry[] = [];
      const max = Math.max(1, maxEntries);
      const current = plus && !d.unlinked ? await this.readListing(d) : undefined;
      for (let i = offset; i < h.list.length + 2 && out.length < max; i++) {
        if (i === 0) out.push({ name: '.', ino: d.ino, type: S_IFDIR, off: 1 });
        else if (i === 1) out.push({ name: '..', ino: (d.parent ?? d).ino, type: S_IFDIR, off: 2 });
        else {
          const e = h.list[i - 2]!;
          const type = e.raw[11]! & ATTR_DIRECTORY ? S_IFDIR : S_IFREG;
          if (plus) {
            // Only entries still there get a node; one gone since opendir is skipped.
            const now = current?.byPos.get(e.pos);
            if (!now || now.name !== e.name) continue;
            const n = this.nodeFor(d, now);
            out.push({ name: e.name, ino: n.ino, type, off: i + 1, entry: this.enter(n) });
          } else {
            out.push({ name: e.name, ino: inoOf(e.pos), type, off: i + 1 });
          }
        }
      }
      return out;
    });
  }

  async fsyncdir(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    this.dirs.get(fh);
    await this.lock.run(async () => {
      await this.flushMeta();
      await this.dev.sync();
    });
  }

  releasedir(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    return this.lock.run(async () => {
      const h = this.dirs.delete(fh);
      if (!h) throw new FsError(Errno.EBADF);
      h.node.opens--;
      await this.maybeDrop(h.node);
    });
  }

  // --- Vfs: the rest ---------------------------------------------------------------------------

  async statfs(_ctx: Ctx, _nodeid: number): Promise<StatFs> {
    if (this.closed) throw new FsError(Errno.EIO);
    const cs = this.g.clusterSize;
    return {
      blocks: this.g.clusterCount, bfree: this.fat.freeCount, bavail: this.fat.freeCount, files: 0, ffree: 0,
      bsize: cs, namelen: NAME_MAX, frsize: cs,
    };
  }

  // No xattr handlers in vfat: set and get are EOPNOTSUPP, the list is empty.
  async setxattr(_ctx: Ctx, nodeid: number, _name: string, _value: Buffer, _flags: number): Promise<void> {
    this.known(nodeid);
    throw new FsError(Errno.EOPNOTSUPP);
  }
  async getxattr(_ctx: Ctx, nodeid: number, _name: string): Promise<Buffer> {
    this.known(nodeid);
    throw new FsError(Errno.EOPNOTSUPP);
  }
  async listxattr(_ctx: Ctx, nodeid: number): Promise<string[]> {
    this.known(nodeid);
    return [];
  }
  async removexattr(_ctx: Ctx, nodeid: number, _name: string): Promise<void> {
    this.known(nodeid);
    throw new FsError(Errno.EOPNOTSUPP);
  }

  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.lock.run(async () => {
      const n = this.known(nodeid);
      if (mask & 2 && this.readOnly) throw new FsError(Errno.EROFS);
      checkAccess(this.attrOf(n), ctx, mask);
    });
  }

  fallocate(_ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.lock.run(async () => {
      const { node } = this.handle(nodeid, fh);
      this.writable();
      // Linux vfat allocates only (mode 0 or KEEP_SIZE); this driver does mode 0: no holes to punch.
      if (mode !== 0) throw new FsError(Errno.EOPNOTSUPP);
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) throw new FsError(Errno.EINVAL);
      const end = offset + length;
      if (end > MAX_FILE_SIZE) throw new FsError(Errno.EFBIG);
      if (end > node.size) {
        await this.resize(node, end);
        this.touch(node);
        await this.writeEntry(node);
      }
    });
  }

  lseek(_ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.lock.run(async () => {
      const { node } = this.handle(nodeid, fh);
      if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(Errno.EINVAL);
      if (!Number.isSafeInteger(offset) || offset < 0 || offset >= node.size) throw new FsError(Errno.ENXIO);
      // FAT has no holes: all of the file is data.
      return whence === SEEK_DATA ? offset : node.size;
    });
  }

  copyFileRange(_ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.lock.run(async () => {
      const src = this.handle(nodeIn, fhIn).node;
      const out = this.handle(nodeOut, fhOut);
      if ((out.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
      this.writable();
      if (!Number.isSafeInteger(offIn) || offIn < 0 || !Number.isSafeInteger(len) || len < 0) throw new FsError(Errno.EINVAL);
      const n = Math.min(len, CHUNK, Math.max(0, src.size - offIn));
      if (n === 0) return 0;
      const parts: Buffer[] = [];
      for (const r of this.runs(this.fileChain(src), offIn, n)) parts.push(await this.dev.read(r.pos, r.len));
      return this.writeLocked(out.node, offOut, Buffer.concat(parts));
    });
  }

  watch(_listener: ChangeListener): () => void {
    // Only this Vfs changes the image, and the server tells other clients of those changes itself.
    return () => {};
  }

  /** Frees what unlinked-but-open files held, writes the FAT and FSInfo, clears the dirty flag. */
  close(): Promise<void> {
    return this.lock.run(async () => {
      if (this.closed) return;
      try {
        if (!this.readOnly) {
          for (const n of this.byId.values()) {
            if (n.unlinked && n.cluster !== 0) await this.releaseClusters(n);
          }
          await this.flushMeta();
          await this.setState(false);
          await this.dev.sync();
        }
      } finally {
        this.closed = true;
        this.files.clear();
        this.dirs.clear();
        this.byId.clear();
        this.byPos.clear();
        await this.dev.close();
      }
    });
  }
}
