// The field codecs of the wire protocol: every field type an op's request or reply may contain, each
// with its fixed size (or none, for length-prefixed ones), its encoder, its decoder and one line of
// documentation. The op table (ops.ts) is written in these names; docs/PROTOCOL.md is built from them.
// Little-endian throughout. Decoders throw only ProtocolError; encoders throw EncodeError on a value
// that cannot be represented (a bug or bad input on the sending side, never a peer's fault).

import { ProtocolError, Reader, Writer } from '../lib/bytes.js';
import type { Attr, ChangeEvent, DirEntry, Entry, OpenResult, SetAttr, SetTime, StatFs, Timespec } from '../vfs/types.js';

/** A value the sender cannot put on the wire (negative size, NaN offset, ...). */
export class EncodeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'EncodeError';
  }
}

export interface Codec<V> {
  /** Bytes on the wire when fixed; undefined for length-prefixed fields. */
  readonly size: number | undefined;
  readonly doc: string;
  enc(w: Writer, v: V): void;
  dec(r: Reader): V;
}

/** The caller identity carried by every file system request (the Ctx minus its AbortSignal). */
export interface WireCtx {
  uid: number;
  gid: number;
  pid: number;
}

function uint(v: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < 0 || v > max) throw new EncodeError(`${what} out of range: ${v}`);
  return v;
}
function sint(v: number, min: number, max: number, what: string): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new EncodeError(`${what} out of range: ${v}`);
  return v;
}

const u8: Codec<number> = {
  size: 1, doc: 'u8',
  enc: (w, v) => void w.u8(uint(v, 0xff, 'u8')),
  dec: (r) => r.u8(),
};
const u16: Codec<number> = {
  size: 2, doc: 'u16',
  enc: (w, v) => void w.u16(uint(v, 0xffff, 'u16')),
  dec: (r) => r.u16(),
};
const u32: Codec<number> = {
  size: 4, doc: 'u32',
  enc: (w, v) => void w.u32(uint(v, 0xffffffff, 'u32')),
  dec: (r) => r.u32(),
};
const i32: Codec<number> = {
  size: 4, doc: 'i32',
  enc: (w, v) => void w.i32(sint(v, -0x80000000, 0x7fffffff, 'i32')),
  dec: (r) => r.i32(),
};
// 64-bit quantities that are counts, sizes, offsets or ids travel as u64 but must fit a JS number
// (2^53 - 1); the reader refuses bigger ones with a ProtocolError.
const u64: Codec<number> = {
  size: 8, doc: 'u64 (at most 2^53-1)',
  enc: (w, v) => void w.u64(uint(v, Number.MAX_SAFE_INTEGER, 'u64')),
  dec: (r) => r.u64(),
};
const i64: Codec<number> = {
  size: 8, doc: 'i64 (|v| at most 2^53-1)',
  enc: (w, v) => void w.i64(sint(v, -Number.MAX_SAFE_INTEGER, Number.MAX_SAFE_INTEGER, 'i64')),
  dec: (r) => r.i64(),
};
/** Opaque 64-bit values (feature masks, session ids) stay bigints end to end. */
const u64big: Codec<bigint> = {
  size: 8, doc: 'u64 (opaque)',
  enc: (w, v) => {
    if (v < 0n || v > 0xffffffffffffffffn) throw new EncodeError(`u64 out of range: ${v}`);
    w.u64(v);
  },
  dec: (r) => r.u64big(),
};
const bool: Codec<boolean> = {
  size: 1, doc: 'u8 boolean: 0 or 1',
  enc: (w, v) => void w.u8(v ? 1 : 0),
  dec: (r) => {
    const b = r.u8();
    if (b > 1) throw new ProtocolError(`bad boolean ${b}`);
    return b === 1;
  },
};
/** An absent-or-present u64 (getattr/setattr's optional fh): u8 present flag, then u64 (0 when absent). */
const optu64: Codec<number | undefined> = {
  size: 9, doc: 'u8 present (0/1), u64 value (0 when absent)',
  enc: (w, v) => {
    if (v === undefined) w.u8(0).u64(0);
    else w.u8(1).u64(uint(v, Number.MAX_SAFE_INTEGER, 'u64'));
  },
  dec: (r) => {
    const present = bool.dec(r);
    const v = r.u64();
    return present ? v : undefined;
  },
};
const magic: Codec<Buffer> = {
  size: 8, doc: '8 bytes',
  enc: (w, v) => {
    if (v.length !== 8) throw new EncodeError('magic must be 8 bytes');
    w.bytes(v);
  },
  dec: (r) => Buffer.from(r.bytes(8)),
};

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** u32 byte length, then UTF-8 bytes (no NUL terminator). Invalid UTF-8 is a protocol error. */
const str: Codec<string> = {
  size: undefined, doc: 'u32 length, UTF-8 bytes',
  enc: (w, v) => {
    const b = Buffer.from(v, 'utf8');
    w.u32(b.length).bytes(b);
  },
  dec: (r) => {
    const b = r.bytes(r.u32());
    try {
      return utf8.decode(b);
    } catch {
      throw new ProtocolError('string is not valid UTF-8');
    }
  },
};
/** u32 byte length, then the bytes. Decoded as a view into the frame: copy it to keep it. */
const blob: Codec<Buffer> = {
  size: undefined, doc: 'u32 length, bytes',
  enc: (w, v) => void w.u32(v.length).bytes(v),
  dec: (r) => r.bytes(r.u32()),
};

/** A u32 count then that many items; the count is checked against the bytes left before looping. */
function list<V>(item: Codec<V>, minItem: number, doc: string): Codec<V[]> {
  return {
    size: undefined, doc,
    enc: (w, v) => {
      w.u32(v.length);
      for (const x of v) item.enc(w, x);
    },
    dec: (r) => {
      const n = r.u32();
      if (n * minItem > r.remaining) throw new ProtocolError(`list of ${n} items cannot fit in ${r.remaining} bytes`);
      const out: V[] = [];
      for (let i = 0; i < n; i++) out.push(item.dec(r));
      return out;
    },
  };
}
const strlist = list(str, 4, 'u32 count, then count × str');

// Offsets 0 sec i64, 8 nsec u32: 12 bytes.
const timespec: Codec<Timespec> = {
  size: 12, doc: 'Timespec: i64 sec, u32 nsec (< 10^9)',
  enc: (w, v) => {
    i64.enc(w, v.sec);
    if (!Number.isInteger(v.nsec) || v.nsec < 0 || v.nsec >= 1e9) throw new EncodeError(`nsec out of range: ${v.nsec}`);
    w.u32(v.nsec);
  },
  dec: (r) => {
    const sec = r.i64();
    const nsec = r.u32();
    if (nsec >= 1e9) throw new ProtocolError(`nsec out of range: ${nsec}`);
    return { sec, nsec };
  },
};

// Offsets: 0 uid, 4 gid, 8 pid (u32 each): 12 bytes.
const ctx: Codec<WireCtx> = {
  size: 12, doc: 'Ctx: u32 uid, u32 gid, u32 pid',
  enc: (w, v) => {
    u32.enc(w, v.uid);
    u32.enc(w, v.gid);
    u32.enc(w, v.pid);
  },
  dec: (r) => ({ uid: r.u32(), gid: r.u32(), pid: r.u32() }),
};

// Offsets: 0 ino, 8 size, 16 blocks (u64); 24 atime, 36 mtime, 48 ctime (Timespec); 60 mode,
// 64 nlink, 68 uid, 72 gid, 76 rdev, 80 blksize (u32): 84 bytes.
const attr: Codec<Attr> = {
  size: 84, doc: 'Attr: u64 ino, u64 size, u64 blocks, Timespec atime, mtime, ctime, u32 mode, nlink, uid, gid, rdev, blksize',
  enc: (w, a) => {
    u64.enc(w, a.ino);
    u64.enc(w, a.size);
    u64.enc(w, a.blocks);
    timespec.enc(w, a.atime);
    timespec.enc(w, a.mtime);
    timespec.enc(w, a.ctime);
    for (const v of [a.mode, a.nlink, a.uid, a.gid, a.rdev, a.blksize]) u32.enc(w, v);
  },
  dec: (r) => ({
    ino: r.u64(), size: r.u64(), blocks: r.u64(),
    atime: timespec.dec(r), mtime: timespec.dec(r), ctime: timespec.dec(r),
    mode: r.u32(), nlink: r.u32(), uid: r.u32(), gid: r.u32(), rdev: r.u32(), blksize: r.u32(),
  }),
};

// Offsets: 0 nodeid u64, 8 generation u64, 16 Attr: 100 bytes.
export const ENTRY_SIZE = 100;
const entry: Codec<Entry> = {
  size: ENTRY_SIZE, doc: 'Entry: u64 nodeid (0 = negative entry), u64 generation, Attr',
  enc: (w, e) => {
    u64.enc(w, e.nodeid);
    u64.enc(w, e.generation);
    attr.enc(w, e.attr);
  },
  dec: (r) => ({ nodeid: r.u64(), generation: r.u64(), attr: attr.dec(r) }),
};

export const SETATTR_MODE = 1 << 0;
export const SETATTR_UID = 1 << 1;
export const SETATTR_GID = 1 << 2;
export const SETATTR_SIZE = 1 << 3;
export const SETATTR_ATIME = 1 << 4;
export const SETATTR_MTIME = 1 << 5;
export const SETATTR_ATIME_NOW = 1 << 6;
export const SETATTR_MTIME_NOW = 1 << 7;
const SETATTR_KNOWN = 0xff;

// Offsets: 0 valid u32, 4 mode u32, 8 uid u32, 12 gid u32, 16 size u64, 24 atime, 36 mtime
// (Timespec): 48 bytes. Fields whose valid bit is clear are zero and ignored.
const setattr: Codec<SetAttr> = {
  size: 48, doc: 'SetAttr: u32 valid, u32 mode, u32 uid, u32 gid, u64 size, Timespec atime, Timespec mtime',
  enc: (w, s) => {
    const zero = { sec: 0, nsec: 0 };
    const time = (t: SetTime | undefined, bit: number, nowBit: number): number => (t === undefined ? 0 : t === 'now' ? nowBit : bit);
    const valid = (s.mode !== undefined ? SETATTR_MODE : 0) | (s.uid !== undefined ? SETATTR_UID : 0) |
      (s.gid !== undefined ? SETATTR_GID : 0) | (s.size !== undefined ? SETATTR_SIZE : 0) |
      time(s.atime, SETATTR_ATIME, SETATTR_ATIME_NOW) | time(s.mtime, SETATTR_MTIME, SETATTR_MTIME_NOW);
    w.u32(valid);
    u32.enc(w, s.mode ?? 0);
    u32.enc(w, s.uid ?? 0);
    u32.enc(w, s.gid ?? 0);
    u64.enc(w, s.size ?? 0);
    timespec.enc(w, typeof s.atime === 'object' ? s.atime : zero);
    timespec.enc(w, typeof s.mtime === 'object' ? s.mtime : zero);
  },
  dec: (r) => {
    const valid = r.u32();
    if (valid & ~SETATTR_KNOWN) throw new ProtocolError(`unknown setattr bits 0x${valid.toString(16)}`);
    if ((valid & SETATTR_ATIME && valid & SETATTR_ATIME_NOW) || (valid & SETATTR_MTIME && valid & SETATTR_MTIME_NOW)) {
      throw new ProtocolError('setattr sets a time both explicitly and to now');
    }
    const mode = r.u32(), uid = r.u32(), gid = r.u32(), size = r.u64();
    const atime = timespec.dec(r), mtime = timespec.dec(r);
    const s: SetAttr = {};
    if (valid & SETATTR_MODE) s.mode = mode;
    if (valid & SETATTR_UID) s.uid = uid;
    if (valid & SETATTR_GID) s.gid = gid;
    if (valid & SETATTR_SIZE) s.size = size;
    if (valid & SETATTR_ATIME) s.atime = atime;
    if (valid & SETATTR_ATIME_NOW) s.atime = 'now';
    if (valid & SETATTR_MTIME) s.mtime = mtime;
    if (valid & SETATTR_MTIME_NOW) s.mtime = 'now';
    return s;
  },
};

export const OPEN_DIRECT_IO = 1 << 0;
export const OPEN_KEEP_CACHE = 1 << 1;
export const OPEN_NONSEEKABLE = 1 << 2;

// Offsets: 0 fh u64, 8 flags u32: 12 bytes.
const open: Codec<OpenResult> = {
  size: 12, doc: 'OpenResult: u64 fh, u32 flags (1 DIRECT_IO, 2 KEEP_CACHE, 4 NONSEEKABLE)',
  enc: (w, o) => {
    u64.enc(w, o.fh);
    w.u32((o.directIo ? OPEN_DIRECT_IO : 0) | (o.keepCache ? OPEN_KEEP_CACHE : 0) | (o.nonSeekable ? OPEN_NONSEEKABLE : 0));
  },
  dec: (r) => {
    const fh = r.u64();
    const flags = r.u32();
    const o: OpenResult = { fh };
    if (flags & OPEN_DIRECT_IO) o.directIo = true;
    if (flags & OPEN_KEEP_CACHE) o.keepCache = true;
    if (flags & OPEN_NONSEEKABLE) o.nonSeekable = true;
    return o;
  },
};

// Offsets: 0 blocks, 8 bfree, 16 bavail, 24 files, 32 ffree (u64); 40 bsize, 44 namelen,
// 48 frsize (u32): 52 bytes.
const statfs: Codec<StatFs> = {
  size: 52, doc: 'StatFs: u64 blocks, bfree, bavail, files, ffree, u32 bsize, namelen, frsize',
  enc: (w, s) => {
    for (const v of [s.blocks, s.bfree, s.bavail, s.files, s.ffree]) u64.enc(w, v);
    for (const v of [s.bsize, s.namelen, s.frsize]) u32.enc(w, v);
  },
  dec: (r) => ({
    blocks: r.u64(), bfree: r.u64(), bavail: r.u64(), files: r.u64(), ffree: r.u64(),
    bsize: r.u32(), namelen: r.u32(), frsize: r.u32(),
  }),
};

// Offsets: 0 off u64, 8 ino u64, 16 type u32, 20 hasEntry u8, 21 name str, then an Entry when
// hasEntry is 1 (readdir with plus).
const dirent: Codec<DirEntry> = {
  size: undefined, doc: 'DirEntry: u64 off, u64 ino, u32 type, u8 hasEntry, str name, Entry if hasEntry',
  enc: (w, d) => {
    u64.enc(w, d.off);
    u64.enc(w, d.ino);
    u32.enc(w, d.type);
    w.u8(d.entry ? 1 : 0);
    str.enc(w, d.name);
    if (d.entry) entry.enc(w, d.entry);
  },
  dec: (r) => {
    const off = r.u64(), ino = r.u64(), type = r.u32();
    const has = bool.dec(r);
    const name = str.dec(r);
    const d: DirEntry = { name, ino, type, off };
    if (has) d.entry = entry.dec(r);
    return d;
  },
};
const direntries = list(dirent, 25, 'u32 count, then count × DirEntry');

export const CHANGE_INODE = 1;
export const CHANGE_ENTRY = 2;
export const CHANGE_DELETE = 3;

// u8 kind, then: 1 inode: u64 nodeid, i64 off, u64 len; 2 entry: u64 parent, str name;
// 3 delete: u64 parent, u64 child, str name.
const change: Codec<ChangeEvent> = {
  size: undefined,
  doc: 'ChangeEvent: u8 kind; 1 inode: u64 nodeid, i64 off (-1 = attributes and whole file), u64 len (0 = to the end); ' +
    '2 entry: u64 parent, str name; 3 delete: u64 parent, u64 child, str name',
  enc: (w, ev) => {
    switch (ev.kind) {
      case 'inode':
        w.u8(CHANGE_INODE);
        u64.enc(w, ev.nodeid);
        i64.enc(w, ev.off);
        u64.enc(w, ev.len);
        break;
      case 'entry':
        w.u8(CHANGE_ENTRY);
        u64.enc(w, ev.parent);
        str.enc(w, ev.name);
        break;
      case 'delete':
        w.u8(CHANGE_DELETE);
        u64.enc(w, ev.parent);
        u64.enc(w, ev.child);
        str.enc(w, ev.name);
        break;
    }
  },
  dec: (r) => {
    const kind = r.u8();
    switch (kind) {
      case CHANGE_INODE: return { kind: 'inode', nodeid: r.u64(), off: r.i64(), len: r.u64() };
      case CHANGE_ENTRY: return { kind: 'entry', parent: r.u64(), name: str.dec(r) };
      case CHANGE_DELETE: return { kind: 'delete', parent: r.u64(), child: r.u64(), name: str.dec(r) };
      default: throw new ProtocolError(`unknown change kind ${kind}`);
    }
  },
};

/**
 * An Attr that a message may end without (added in protocol 1.1): present when bytes remain. Only
 * ever the last fields of a message, so a 1.0 peer's shorter reply still decodes.
 */
const tailattr: Codec<Attr | undefined> = {
  size: undefined, doc: 'Attr, or nothing when the message ends here (1.1: absent from 1.0 servers)',
  enc: (w, v) => {
    if (v !== undefined) attr.enc(w, v);
  },
  dec: (r) => (r.remaining > 0 ? attr.dec(r) : undefined),
};

/** READDIR's end of listing (1.3): 1 when the last entry is the directory's last; absent: unknown. */
const taileof: Codec<boolean | undefined> = {
  size: undefined, doc: 'u8: 1 when this reply ends the listing, 0 when it may not; or nothing (1.3: absent from older servers)',
  enc: (w, v) => {
    if (v !== undefined) w.u8(v ? 1 : 0);
  },
  dec: (r) => (r.remaining > 0 ? r.u8() === 1 : undefined),
};

/** tailattr's twin for WRITE's reply (1.2): the same bytes, documented as what 1.2 added. */
const writeattr: Codec<Attr | undefined> = {
  ...tailattr,
  doc: 'Attr, or nothing when the message ends here (1.2: absent from older servers, and when another WRITE of the node from this session was running)',
};

/** RESERVE's files (1.4): each one's entry and open handle. */
const reserved = list<{ entry: Entry; open: OpenResult }>({
  size: ENTRY_SIZE + 12, doc: 'Entry, OpenResult',
  enc: (w, v) => {
    entry.enc(w, v.entry);
    open.enc(w, v.open);
  },
  dec: (r) => ({ entry: entry.dec(r), open: open.dec(r) }),
}, ENTRY_SIZE + 12, 'u32 count, then count × (Entry, OpenResult)');

/** Every field type, by the name the op table uses. */
export const FIELDS = {
  u8, u16, u32, i32, u64, i64, u64big, bool, optu64, magic, str, blob, strlist,
  timespec, ctx, attr, tailattr, writeattr, taileof, entry, setattr, open, statfs, direntries, change, reserved,
} as const;

export type FieldType = keyof typeof FIELDS;
export type FieldValue<T extends FieldType> = (typeof FIELDS)[T] extends Codec<infer V> ? V : never;
