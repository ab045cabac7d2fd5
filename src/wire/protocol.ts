// The wirefs wire protocol, version 1: frame header, value codecs and THE op table from which every
// request and reply codec is derived. Machine independent: little-endian, fixed-size fields, no host
// structs. docs/PROTOCOL.md documents it; test/unit/wire-protocol.test.ts keeps the two in step.

import { ProtocolError, Reader, Writer } from '../lib/bytes.js';
import type { Attr, DirEntry, Entry, SetAttr, StatFs, Timespec, ChangeEvent } from '../vfs/types.js';

export const MAGIC = Buffer.from('WIREFS\0\0', 'latin1');
export const VERSION_MAJOR = 1;
export const VERSION_MINOR = 0;
export const DEFAULT_PORT = 12675;
export const DEFAULT_MAX_FRAME = 4 << 20;
export const MIN_MAX_FRAME = 64 << 10;

/** Frame header, 12 bytes: u32 length (whole frame), u16 op, u16 flags, u32 id. */
export const HEADER_SIZE = 12;
export const Flag = {
  /** The frame answers the request with the same id. */
  REPLY: 1,
  /** Server → client message that answers nothing (id 0). */
  PUSH: 2,
} as const;

/** Feature bits negotiated in HELLO: the intersection of both sides' masks is in force. */
export const Feature = {
  /** The server pushes change events (PUSH_EVENT). */
  PUSH_EVENTS: 1n << 0n,
} as const;
export const OUR_FEATURES = Feature.PUSH_EVENTS;

export interface Header {
  length: number;
  op: number;
  flags: number;
  id: number;
}

export function readHeader(buf: Buffer, off = 0): Header {
  return {
    length: buf.readUInt32LE(off),
    op: buf.readUInt16LE(off + 4),
    flags: buf.readUInt16LE(off + 6),
    id: buf.readUInt32LE(off + 8),
  };
}

/** Starts a frame; `finish` fills in the length. */
export function beginFrame(op: number, flags: number, id: number, sizeHint = 64): Writer {
  return new Writer(HEADER_SIZE + sizeHint).u32(0).u16(op).u16(flags).u32(id);
}

export function finishFrame(w: Writer): Buffer {
  const buf = w.done();
  buf.writeUInt32LE(buf.length, 0);
  return buf;
}

// ---- value codecs ---------------------------------------------------------------------------
// Each type is written and read the same way everywhere; sizes are in docs/PROTOCOL.md.

export type TypeName =
  | 'u32' | 'u64' | 'i64' | 'bool' | 'str' | 'bytes' | 'strlist'
  | 'attr' | 'entry' | 'setattr' | 'statfs' | 'open' | 'create' | 'dirents' | 'void';

interface TypeMap {
  u32: number; u64: number; i64: number; bool: boolean; str: string; bytes: Buffer; strlist: string[];
  attr: Attr; entry: Entry; setattr: SetAttr; statfs: StatFs;
  open: { fh: number; directIo?: boolean; keepCache?: boolean; nonSeekable?: boolean };
  create: { entry: Entry; fh: number; directIo?: boolean; keepCache?: boolean; nonSeekable?: boolean };
  dirents: DirEntry[];
  void: undefined;
}
export type ValueOf<T extends TypeName> = TypeMap[T];

const MAX_LIST = 1 << 20;

function writeTime(w: Writer, t: Timespec): void {
  w.i64(t.sec).u32(t.nsec);
}
function readTime(r: Reader): Timespec {
  const sec = r.i64();
  const nsec = r.u32();
  if (nsec >= 1e9) throw new ProtocolError(`nanoseconds out of range: ${nsec}`);
  return { sec, nsec };
}

/** Attr: 13 fields, 100 bytes. */
function writeAttr(w: Writer, a: Attr): void {
  w.u64(a.ino).u64(a.size).u64(a.blocks);
  writeTime(w, a.atime);
  writeTime(w, a.mtime);
  writeTime(w, a.ctime);
  w.u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid).u64(a.rdev).u32(a.blksize);
}
function readAttr(r: Reader): Attr {
  return {
    ino: r.u64(), size: r.u64(), blocks: r.u64(),
    atime: readTime(r), mtime: readTime(r), ctime: readTime(r),
    mode: r.u32(), nlink: r.u32(), uid: r.u32(), gid: r.u32(), rdev: r.u64(), blksize: r.u32(),
  };
}

function writeEntry(w: Writer, e: Entry): void {
  w.u64(e.nodeid).u64(e.generation);
  writeAttr(w, e.attr);
}
function readEntry(r: Reader): Entry {
  return { nodeid: r.u64(), generation: r.u64(), attr: readAttr(r) };
}

// SetAttr: u32 valid mask, then every field (zero when not valid).
const SA = { MODE: 1, UID: 2, GID: 4, SIZE: 8, ATIME: 16, ATIME_NOW: 32, MTIME: 64, MTIME_NOW: 128 } as const;
function writeSetattr(w: Writer, s: SetAttr): void {
  let valid = 0;
  if (s.mode !== undefined) valid |= SA.MODE;
  if (s.uid !== undefined) valid |= SA.UID;
  if (s.gid !== undefined) valid |= SA.GID;
  if (s.size !== undefined) valid |= SA.SIZE;
  if (s.atime !== undefined) valid |= s.atime === 'now' ? SA.ATIME_NOW : SA.ATIME;
  if (s.mtime !== undefined) valid |= s.mtime === 'now' ? SA.MTIME_NOW : SA.MTIME;
  w.u32(valid).u32(s.mode ?? 0).u32(s.uid ?? 0).u32(s.gid ?? 0).u64(s.size ?? 0);
  writeTime(w, s.atime && s.atime !== 'now' ? s.atime : { sec: 0, nsec: 0 });
  writeTime(w, s.mtime && s.mtime !== 'now' ? s.mtime : { sec: 0, nsec: 0 });
}
function readSetattr(r: Reader): SetAttr {
  const valid = r.u32();
  const mode = r.u32(), uid = r.u32(), gid = r.u32(), size = r.u64();
  const atime = readTime(r), mtime = readTime(r);
  const s: SetAttr = {};
  if (valid & SA.MODE) s.mode = mode;
  if (valid & SA.UID) s.uid = uid;
  if (valid & SA.GID) s.gid = gid;
  if (valid & SA.SIZE) s.size = size;
  if (valid & SA.ATIME_NOW) s.atime = 'now';
  else if (valid & SA.ATIME) s.atime = atime;
  if (valid & SA.MTIME_NOW) s.mtime = 'now';
  else if (valid & SA.MTIME) s.mtime = mtime;
  return s;
}

// Open flags byte: 1 direct_io, 2 keep_cache, 4 nonseekable.
function openFlags(o: { directIo?: boolean; keepCache?: boolean; nonSeekable?: boolean }): number {
  return (o.directIo ? 1 : 0) | (o.keepCache ? 2 : 0) | (o.nonSeekable ? 4 : 0);
}
function withOpenFlags<T extends object>(o: T, f: number): T & { directIo?: boolean; keepCache?: boolean; nonSeekable?: boolean } {
  return Object.assign(o, f & 1 ? { directIo: true } : {}, f & 2 ? { keepCache: true } : {}, f & 4 ? { nonSeekable: true } : {});
}

function count(r: Reader): number {
  const n = r.u32();
  if (n > MAX_LIST) throw new ProtocolError(`list of ${n} items is too long`);
  return n;
}

export function writeValue<T extends TypeName>(w: Writer, type: T, v: ValueOf<T>): void {
  const x = v as never;
  switch (type) {
    case 'u32': w.u32(x); break;
    case 'u64': w.u64(x); break;
    case 'i64': w.i64(x); break;
    case 'bool': w.u8(x ? 1 : 0); break;
    case 'str': {
      const b = Buffer.from(x as string, 'utf8');
      w.u32(b.length).bytes(b);
      break;
    }
    case 'bytes': w.u32((x as Buffer).length).bytes(x); break;
    case 'strlist': {
      const list = x as string[];
      w.u32(list.length);
      for (const s of list) writeValue(w, 'str', s);
      break;
    }
    case 'attr': writeAttr(w, x); break;
    case 'entry': writeEntry(w, x); break;
    case 'setattr': writeSetattr(w, x); break;
    case 'statfs': {
      const s = x as StatFs;
      w.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree).u32(s.bsize).u32(s.namelen).u32(s.frsize);
      break;
    }
    case 'open': {
      const o = x as ValueOf<'open'>;
      w.u64(o.fh).u8(openFlags(o));
      break;
    }
    case 'create': {
      const c = x as ValueOf<'create'>;
      writeEntry(w, c.entry);
      w.u64(c.fh).u8(openFlags(c));
      break;
    }
    case 'dirents': {
      const list = x as DirEntry[];
      w.u32(list.length);
      for (const d of list) {
        writeValue(w, 'str', d.name);
        w.u64(d.ino).u32(d.type).u64(d.off).u8(d.entry ? 1 : 0);
        if (d.entry) writeEntry(w, d.entry);
      }
      break;
    }
    case 'void': break;
  }
}

export function readValue<T extends TypeName>(r: Reader, type: T): ValueOf<T> {
  return readAny(r, type) as ValueOf<T>;
}

function readAny(r: Reader, type: TypeName): unknown {
  switch (type) {
    case 'u32': return r.u32();
    case 'u64': return r.u64();
    case 'i64': return r.i64();
    case 'bool': return r.u8() !== 0;
    case 'str': return r.bytes(r.u32()).toString('utf8');
    // a copy: the value may outlive the frame (a write's data is queued by the source)
    case 'bytes': return Buffer.from(r.bytes(r.u32()));
    case 'strlist': {
      const n = count(r);
      const out: string[] = [];
      for (let i = 0; i < n; i++) out.push(readAny(r, 'str') as string);
      return out;
    }
    case 'attr': return readAttr(r);
    case 'entry': return readEntry(r);
    case 'setattr': return readSetattr(r);
    case 'statfs': return { blocks: r.u64(), bfree: r.u64(), bavail: r.u64(), files: r.u64(), ffree: r.u64(), bsize: r.u32(), namelen: r.u32(), frsize: r.u32() };
    case 'open': {
      const fh = r.u64();
      return withOpenFlags({ fh }, r.u8());
    }
    case 'create': {
      const entry = readEntry(r);
      const fh = r.u64();
      return withOpenFlags({ entry, fh }, r.u8());
    }
    case 'dirents': {
      const n = count(r);
      const out: DirEntry[] = [];
      for (let i = 0; i < n; i++) {
        const name = readAny(r, 'str') as string;
        const d: DirEntry = { name, ino: r.u64(), type: r.u32(), off: r.u64() };
        if (r.u8()) d.entry = readEntry(r);
        out.push(d);
      }
      return out;
    }
    case 'void': return undefined;
  }
}

// ---- the op table ---------------------------------------------------------------------------

export interface OpSpec {
  /** Wire op number: stable forever within a major version. */
  op: number;
  /** The Vfs method it carries (and the op's name in docs). */
  name: string;
  /** Argument types after the ctx, in the Vfs method's order. */
  args: readonly TypeName[];
  result: TypeName;
  /** Safe to execute twice (a retry after a lost reply needs no reply cache). */
  idempotent: boolean;
  /** One-way: no reply is sent (FORGET). */
  noReply?: boolean;
}

/** HELLO and the push op are outside the Vfs table. */
export const OP_HELLO = 1;
export const OP_PUSH_EVENT = 2;

export const OPS = [
  { op: 10, name: 'lookup', args: ['u64', 'str'], result: 'entry', idempotent: true },
  { op: 11, name: 'forget', args: ['u64', 'u64'], result: 'void', idempotent: false, noReply: true },
  { op: 12, name: 'getattr', args: ['u64', 'u64'], result: 'attr', idempotent: true },
  { op: 13, name: 'setattr', args: ['u64', 'setattr', 'u64'], result: 'attr', idempotent: true },
  { op: 14, name: 'readlink', args: ['u64'], result: 'str', idempotent: true },
  { op: 15, name: 'mknod', args: ['u64', 'str', 'u32', 'u64'], result: 'entry', idempotent: false },
  { op: 16, name: 'mkdir', args: ['u64', 'str', 'u32'], result: 'entry', idempotent: false },
  { op: 17, name: 'symlink', args: ['u64', 'str', 'str'], result: 'entry', idempotent: false },
  { op: 18, name: 'link', args: ['u64', 'u64', 'str'], result: 'entry', idempotent: false },
  { op: 19, name: 'unlink', args: ['u64', 'str'], result: 'void', idempotent: false },
  { op: 20, name: 'rmdir', args: ['u64', 'str'], result: 'void', idempotent: false },
  { op: 21, name: 'rename', args: ['u64', 'str', 'u64', 'str', 'u32'], result: 'void', idempotent: false },
  { op: 22, name: 'open', args: ['u64', 'u32'], result: 'open', idempotent: false },
  { op: 23, name: 'create', args: ['u64', 'str', 'u32', 'u32'], result: 'create', idempotent: false },
  { op: 24, name: 'read', args: ['u64', 'u64', 'u64', 'u32'], result: 'bytes', idempotent: true },
  { op: 25, name: 'write', args: ['u64', 'u64', 'u64', 'bytes'], result: 'u32', idempotent: false },
  { op: 26, name: 'flush', args: ['u64', 'u64'], result: 'void', idempotent: true },
  { op: 27, name: 'fsync', args: ['u64', 'u64', 'bool'], result: 'void', idempotent: true },
  { op: 28, name: 'release', args: ['u64', 'u64'], result: 'void', idempotent: false },
  { op: 29, name: 'opendir', args: ['u64'], result: 'open', idempotent: false },
  { op: 30, name: 'readdir', args: ['u64', 'u64', 'u64', 'u32', 'bool'], result: 'dirents', idempotent: true },
  { op: 31, name: 'fsyncdir', args: ['u64', 'u64', 'bool'], result: 'void', idempotent: true },
  { op: 32, name: 'releasedir', args: ['u64', 'u64'], result: 'void', idempotent: false },
  { op: 33, name: 'statfs', args: ['u64'], result: 'statfs', idempotent: true },
  { op: 34, name: 'setxattr', args: ['u64', 'str', 'bytes', 'u32'], result: 'void', idempotent: false },
  { op: 35, name: 'getxattr', args: ['u64', 'str'], result: 'bytes', idempotent: true },
  { op: 36, name: 'listxattr', args: ['u64'], result: 'strlist', idempotent: true },
  { op: 37, name: 'removexattr', args: ['u64', 'str'], result: 'void', idempotent: false },
  { op: 38, name: 'access', args: ['u64', 'u32'], result: 'void', idempotent: true },
  { op: 39, name: 'fallocate', args: ['u64', 'u64', 'u32', 'u64', 'u64'], result: 'void', idempotent: false },
  { op: 40, name: 'lseek', args: ['u64', 'u64', 'u64', 'u32'], result: 'u64', idempotent: true },
  { op: 41, name: 'copyFileRange', args: ['u64', 'u64', 'u64', 'u64', 'u64', 'u64', 'u64'], result: 'u64', idempotent: false },
] as const satisfies readonly OpSpec[];

export type OpName = (typeof OPS)[number]['name'];
export const OPS_BY_NUMBER = new Map<number, OpSpec>(OPS.map((o) => [o.op, o]));
export const OPS_BY_NAME = new Map<string, OpSpec>(OPS.map((o) => [o.name, o]));

/** Every request body starts with the caller's identity: u32 uid, u32 gid, u32 pid. */
export interface WireCtx {
  uid: number;
  gid: number;
  pid: number;
}

export function encodeRequest(spec: OpSpec, id: number, ctx: WireCtx, args: readonly unknown[]): Buffer {
  const w = beginFrame(spec.op, 0, id, 64 + (spec.name === 'write' ? (args[3] as Buffer).length : 0));
  w.u32(ctx.uid).u32(ctx.gid).u32(ctx.pid);
  spec.args.forEach((t, i) => writeValue(w, t, args[i] as never));
  return finishFrame(w);
}

export function decodeRequest(spec: OpSpec, body: Reader): { ctx: WireCtx; args: unknown[] } {
  const ctx = { uid: body.u32(), gid: body.u32(), pid: body.u32() };
  const args = spec.args.map((t) => readValue(body, t));
  if (body.remaining !== 0) throw new ProtocolError(`${spec.name}: ${body.remaining} trailing bytes`);
  return { ctx, args };
}

/** A reply: i32 status (0 or a Linux errno), then the result when the status is 0. */
export function encodeReply(spec: OpSpec, id: number, status: number, result?: unknown): Buffer {
  const size = result instanceof Buffer ? result.length + 16 : 128;
  const w = beginFrame(spec.op, Flag.REPLY, id, size);
  w.i32(status);
  if (status === 0) writeValue(w, spec.result, result as never);
  return finishFrame(w);
}

export function decodeReply(spec: OpSpec, body: Reader): { status: number; result?: unknown } {
  const status = body.i32();
  if (status < 0) throw new ProtocolError(`negative status ${status}`);
  if (status !== 0) return { status };
  const result = readValue(body, spec.result);
  if (body.remaining !== 0) throw new ProtocolError(`${spec.name} reply: ${body.remaining} trailing bytes`);
  return { status, result };
}

// ---- HELLO ----------------------------------------------------------------------------------
// Request: 8 magic, u16 major, u16 minor, u64 features, u32 max frame, str client name, u64 session.
// Reply:   i32 status; if 0: u16 major, u16 minor, u64 features, u32 max frame, str fs type,
//          u8 read-only, u64 session id; else: str reason.

export interface Hello {
  major: number;
  minor: number;
  features: bigint;
  maxFrame: number;
  name: string;
  session: bigint;
}

export function encodeHello(h: Hello): Buffer {
  const w = beginFrame(OP_HELLO, 0, 0);
  w.bytes(MAGIC).u16(h.major).u16(h.minor).u64(h.features).u32(h.maxFrame);
  writeValue(w, 'str', h.name);
  w.u64(h.session);
  return finishFrame(w);
}

export function decodeHello(r: Reader): Hello {
  if (!r.bytes(8).equals(MAGIC)) throw new ProtocolError('not a wirefs client (bad magic)');
  return { major: r.u16(), minor: r.u16(), features: r.u64big(), maxFrame: r.u32(), name: readValue(r, 'str'), session: r.u64big() };
}

export interface Welcome {
  major: number;
  minor: number;
  features: bigint;
  maxFrame: number;
  fsType: string;
  readOnly: boolean;
  session: bigint;
}

export function encodeWelcome(wl: Welcome): Buffer {
  const w = beginFrame(OP_HELLO, Flag.REPLY, 0);
  w.i32(0).u16(wl.major).u16(wl.minor).u64(wl.features).u32(wl.maxFrame);
  writeValue(w, 'str', wl.fsType);
  w.u8(wl.readOnly ? 1 : 0).u64(wl.session);
  return finishFrame(w);
}

export function encodeRefusal(errno: number, reason: string): Buffer {
  const w = beginFrame(OP_HELLO, Flag.REPLY, 0);
  w.i32(errno);
  writeValue(w, 'str', reason);
  return finishFrame(w);
}

export function decodeWelcome(r: Reader): Welcome | { status: number; reason: string } {
  const status = r.i32();
  if (status !== 0) return { status, reason: readValue(r, 'str') };
  return { major: r.u16(), minor: r.u16(), features: r.u64big(), maxFrame: r.u32(), fsType: readValue(r, 'str'), readOnly: r.u8() !== 0, session: r.u64big() };
}

// ---- PUSH_EVENT -----------------------------------------------------------------------------
// u8 kind (1 inode, 2 entry, 3 delete), then: inode: u64 nodeid, i64 off, i64 len;
// entry: u64 parent, str name; delete: u64 parent, u64 child, str name.

export function encodeEvent(ev: ChangeEvent): Buffer {
  const w = beginFrame(OP_PUSH_EVENT, Flag.PUSH, 0);
  switch (ev.kind) {
    case 'inode': w.u8(1).u64(ev.nodeid).i64(ev.off).i64(ev.len); break;
    case 'entry': w.u8(2).u64(ev.parent); writeValue(w, 'str', ev.name); break;
    case 'delete': w.u8(3).u64(ev.parent).u64(ev.child); writeValue(w, 'str', ev.name); break;
  }
  return finishFrame(w);
}

export function decodeEvent(r: Reader): ChangeEvent {
  const kind = r.u8();
  switch (kind) {
    case 1: return { kind: 'inode', nodeid: r.u64(), off: r.i64(), len: r.i64() };
    case 2: return { kind: 'entry', parent: r.u64(), name: readValue(r, 'str') };
    case 3: return { kind: 'delete', parent: r.u64(), child: r.u64(), name: readValue(r, 'str') };
    default: throw new ProtocolError(`unknown event kind ${kind}`);
  }
}
