// The FUSE session: turns each kernel request into one call on a Vfs and its result into exactly
// one reply (or none, for the ops that take none), and turns the Vfs's change events into notify
// messages. Every request runs as its own async task and is answered whenever it finishes.
// Semantics of each op follow the kernel (fs/fuse/*.c) and libfuse's fuse_lowlevel.c.

import { ProtocolError, Reader, Writer } from '../lib/bytes.js';
import { Errno, errnoName, FsError, toErrno } from '../lib/errno.js';
import { LazyAbort, RequestCtx } from '../lib/abort.js';
import { logger } from '../lib/log.js';
import { O_ACCMODE, O_RDONLY, O_TRUNC, O_WRONLY, S_IFMT, S_IFREG, type ChangeEvent, type Ctx, type Entry, type SetAttr, type Vfs } from '../vfs/types.js';
import {
  ATTR_OUT_SIZE, DIRENT_NAME_OFFSET, DIRENTPLUS_NAME_OFFSET, ENTRY_OUT_SIZE, FATTR, FOPEN, FUSE_GETATTR_FH,
  FUSE_OPEN_KILL_SUIDGID, FUSE_WRITE_KILL_SUIDGID,
  FUSE_KERNEL_MINOR_VERSION, FUSE_KERNEL_VERSION, FUSE_MIN_MINOR_VERSION, FUSE_NAME_MAX, FUSE_ROOT_ID, NOFLUSH_MINOR, DIRECT_WRITE_INVALIDATES_MINOR,
  IN_HEADER_SIZE, INIT_OUT_SIZE, Init, KSTATFS_SIZE, NOTIFY_DELETE_SIZE, Notify, OPEN_OUT_SIZE, OPS, OUT_HEADER_SIZE, Op,
  decodeInHeader, decoders, direntSize, direntplusSize, encodeAttrOut, encodeDirent, encodeDirentplus,
  encodeEntryOut, encodeGetxattrOut, encodeNegativeEntryOut, encodeInitOut, encodeLseekOut, encodeNotifyDelete, encodeNotifyInvalEntry,
  encodeNotifyInvalInode, encodeNotifyStore, NOTIFY_STORE_SIZE, encodeOpenOut, encodeOutHeader, encodeStatfs, encodeWriteOut,
  type Decoded, type HandlerKey, type InHeader, type OpSpec,
} from './abi.js';
import type { FuseTransport } from './channel.js';
import { ReadAround, type ReadAroundStats } from './readaround.js';
import { NativeAttrs } from './native-attrs.js';

const log = logger('fuse');

export const DEFAULT_MAX_WRITE = 1 << 20;
/** 256 pages of 4 KiB: lets one request carry max_write (FUSE_MAX_PAGES, 7.28). */
export const DEFAULT_MAX_PAGES = 256;

/** The INIT flags we ask for; the reply carries their intersection with what the kernel offers. */
const WANTED_FLAGS =
  Init.ASYNC_READ | Init.ATOMIC_O_TRUNC | Init.BIG_WRITES | Init.DO_READDIRPLUS | Init.READDIRPLUS_AUTO |
  Init.ASYNC_DIO | Init.PARALLEL_DIROPS | Init.MAX_PAGES | Init.CACHE_SYMLINKS | Init.AUTO_INVAL_DATA |
  Init.HANDLE_KILLPRIV_V2;

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const S_IXGRP = 0o010;
/** Files remembered as having no set-ID bits, at most (see plain). */
const MAX_PLAIN = 65536;

/** The set-ID bits a write or truncation by an unprivileged caller clears (as the kernel's should_remove_suid). */
function setIdBits(mode: number): number {
  return (mode & S_ISUID) | ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP) ? S_ISGID : 0);
}

export interface SessionOptions {
  /** How long the kernel may cache a name (and a negative lookup). Default 1 s. */
  entryTimeoutS?: number;
  /** How long the kernel may cache attributes. Default 1 s. */
  attrTimeoutS?: number;
  /** Largest WRITE the kernel sends; the read buffers must hold it plus 4 KiB. Default 1 MiB. */
  maxWrite?: number;
  /** How long the kernel may cache that a name does not exist (0: not at all). Default 0. */
  negativeTimeoutS?: number;
  /**
   * Keep cached file pages across opens (FOPEN_KEEP_CACHE) and cache directory listings
   * (FOPEN_CACHE_DIR). Right only when the Vfs reports every change through watch().
   */
  keepCache?: boolean;
  /** Ask for FUSE_EXPORT_SUPPORT: the Vfs answers lookups of "." and "..", so NFS export works. */
  exportSupport?: boolean;
  /**
   * Ask for FUSE_POSIX_ACL: the kernel enforces the ACLs in system.posix_acl_* and caches them per
   * inode like attributes (dropped by inval_inode and whenever it fetches attributes anew), so a
   * warm `ls -l` asks nothing. Default false.
   */
  posixAcl?: boolean;
  /**
   * Widen small random READs to this many bytes around them and push the rest into the kernel's
   * page cache (readaround.ts); 0 or absent: off. Only with keepCache (a coherent Vfs).
   */
  readAroundBytes?: number;
}

const ACL_NAMES = new Set(['system.posix_acl_access', 'system.posix_acl_default']);

export interface InitInfo {
  /** The protocol minor in use: min(kernel's, ours). */
  minor: number;
  /** The INIT flags in force (our reply's). */
  flags: number;
  maxWrite: number;
}

interface Answer {
  error?: number;
  chunks?: Buffer[];
  /** Told whether the kernel took the reply: undo what it would have owned (lookups, handles). */
  after?: (delivered: boolean) => void;
}
/** Returned by handlers of ops the kernel expects no answer to. */
const NO_REPLY = Symbol('no reply');
type Reply = Answer | typeof NO_REPLY;

type Handler<K extends HandlerKey> = (h: InHeader, req: Decoded<K>, ctx: Ctx) => Promise<Reply>;
type Handlers = { [K in HandlerKey]: Handler<K> };

function one(build: (w: Writer) => void, size: number): Buffer[] {
  const w = new Writer(size);
  build(w);
  return [w.done()];
}

/** See FuseSession.nativeNosys. */
function nosysTable(): Uint32Array {
  const t = new Uint32Array(128);
  for (const [o, spec] of Object.entries(OPS)) if (Number(o) < 64 && !spec.handler && !spec.noReply) t[Number(o)] = 1;
  return t;
}

export class FuseSession {
  /** Resolves once INIT has been answered and delivered; rejects if the kernel cannot be served. */
  readonly initialized: Promise<InitInfo>;
  private resolveInit!: (info: InitInfo) => void;
  private rejectInit!: (err: Error) => void;
  private readonly entryT: number;
  private readonly attrT: number;
  private readonly negT: number;
  /** Answer OPENDIR with ENOSYS so the kernel stops sending OPENDIR/RELEASEDIR (coherent Vfs only). */
  private noOpendir: boolean;
  /** FUSE_POSIX_ACL is in force (INIT). */
  private posixAcl = false;
  /**
   * FOPEN_NOFLUSH for read-only opens (INIT: a 7.35+ kernel). Locks stay in the kernel (no
   * POSIX_LOCKS) and a read-only handle has no writes to wait for, so its FLUSH at every close
   * would be a round trip that does nothing.
   */
  private readNoFlush = 0;
  /**
   * A write-only handle of a file its CREATE just made gets FOPEN_DIRECT_IO: the kernel then sends
   * each write(2) as it is, without asking first for security.capability (file_remove_privs: a
   * GETXATTR round trip before the first cached write of a file) and without cutting it at pages
   * it has not read (a write that starts inside a page it has not read ends its WRITE at that
   * page: 3 WRITEs for tar's two writes of a 14 KiB file). tar pays two round trips less per file,
   * a create-and-write loop one. Nothing is lost: nobody reads or maps through a write-only
   * handle, and the kernel drops the pages other handles of this mount hold in the written range
   * before each direct write (fuse_direct_io, from 7.39: Linux 6.6), so they read the new bytes
   * (e2e-direct-create checks it on the kernel at hand). Set-ID bits are still cleared
   * (HANDLE_KILLPRIV_V2 flags the write); a new file has no capability to drop. Coherent Vfs only
   * (keepCache): only there is the page cache kept across opens at all.
   */
  private directCreates = false;
  private readonly dirFhs = new Map<number, Promise<number>>();
  private readonly fileFlags: number;
  private readonly dirFlags: number;
  private readonly maxWrite: number;
  private readonly inflight = new Map<bigint, LazyAbort>();
  /**
   * With HANDLE_KILLPRIV_V2 the set-ID bits a write or truncation clears are ours to clear: nodes
   * whose attributes, as last given to the kernel, had none (and that no push or change through us
   * has touched since), so their writes need no check (the kernel's S_NOSEC, kept here).
   */
  private readonly plain = new Set<number>();
  /** Requests received, by opcode (like nfsstat's per-operation counts). */
  private readonly byOpcode: number[] = [];
  /**
   * Opcodes the channel's native reader may answer ENOSYS itself ([o] set: those we implement no
   * handler for and that take a reply), and how many it did ([64 + o]). See channel.ts.
   */
  readonly nativeNosys = nosysTable();
  /** GETATTRs the native reader answers (see nativeAttrs()). */
  private native: NativeAttrs | undefined;
  private initDone = false;
  private ended = false;
  private unwatch: (() => void) | undefined;
  private readonly readAround: ReadAround | undefined;

  constructor(private readonly vfs: Vfs, private readonly transport: FuseTransport, private readonly opts: SessionOptions = {}) {
    this.entryT = opts.entryTimeoutS ?? 1;
    this.attrT = opts.attrTimeoutS ?? 1;
    this.negT = opts.negativeTimeoutS ?? 0;
    this.noOpendir = opts.keepCache === true;
    this.fileFlags = opts.keepCache ? FOPEN.KEEP_CACHE : 0;
    // CACHE_DIR (7.28): the kernel keeps readdir results in the directory's page cache until
    // its mtime changes or an inval_inode drops them.
    this.dirFlags = opts.keepCache ? FOPEN.KEEP_CACHE | FOPEN.CACHE_DIR : 0;
    this.maxWrite = opts.maxWrite ?? DEFAULT_MAX_WRITE;
    if (opts.keepCache && opts.readAroundBytes) {
      this.readAround = new ReadAround(opts.readAroundBytes, (chunks) => this.transport.send(chunks), (nodeid, offset, size) => {
        const w = new Writer(OUT_HEADER_SIZE + NOTIFY_STORE_SIZE);
        encodeOutHeader(w, OUT_HEADER_SIZE + NOTIFY_STORE_SIZE + size, Notify.STORE, 0n);
        encodeNotifyStore(w, nodeid, offset, size);
        return w.done();
      });
    }
    this.initialized = new Promise((resolve, reject) => {
      this.resolveInit = resolve;
      this.rejectInit = reject;
    });
    // A session that never initializes must not leave an unhandled rejection behind.
    this.initialized.catch(() => {});
  }

  stats(): { inFlight: number; requests: number; nativeAnswered: number; nativeGetattrs: number; ops: Record<string, number>; readAround?: ReadAroundStats } {
    const ops: Record<string, number> = {};
    let requests = 0;
    const count = (opcode: number, n: number): void => {
      const name = OPS[opcode]?.name ?? `opcode ${opcode}`;
      ops[name] = (ops[name] ?? 0) + n;
      requests += n;
    };
    this.byOpcode.forEach((n, opcode) => count(opcode, n));
    let nativeAnswered = 0;
    for (let o = 0; o < 64; o++) {
      const n = this.nativeNosys[64 + o]!;
      if (n) count(o, n);
      nativeAnswered += n;
    }
    // Of those, the GETATTRs answered from the table (nativeAttrs()).
    const nativeGetattrs = this.nativeNosys[64 + Op.GETATTR]!;
    return { inFlight: this.inflight.size, requests, nativeAnswered, nativeGetattrs, ops, ...(this.readAround ? { readAround: this.readAround.stats() } : {}) };
  }

  /**
   * For a channel whose native reader answers GETATTRs from a table (channel.ts): the table, kept
   * with the attributes the Vfs publishes (Vfs.offerAttrs); undefined if it publishes none. Those
   * are answers of its getattr, which the handler below would send as they are.
   */
  nativeAttrs(): Buffer | undefined {
    if (!this.vfs.offerAttrs) return undefined;
    this.native ??= new NativeAttrs(this.attrT);
    this.vfs.offerAttrs(this.native);
    return this.native.table;
  }

  /** The connection is gone: cancel what is running, stop notifying. */
  close(): void {
    if (this.ended) return;
    this.ended = true;
    this.unwatch?.();
    for (const ac of this.inflight.values()) ac.abort();
    this.rejectInit(new Error('FUSE connection closed before INIT'));
  }

  /** Handles one request frame read from the device; the frame is the session's to keep. */
  dispatch(frame: Buffer): void {
    let h: InHeader;
    let spec: OpSpec | undefined;
    let req: unknown;
    try {
      const r = new Reader(frame);
      h = decodeInHeader(r);
      if (h.len !== frame.length) throw new ProtocolError(`header says ${h.len} bytes, read ${frame.length}`);
      const end = h.len - h.totalExtlen * 8;
      if (end < IN_HEADER_SIZE) throw new ProtocolError(`extensions (${h.totalExtlen * 8} bytes) longer than the request`);
      spec = OPS[h.opcode];
      this.byOpcode[h.opcode] = (this.byOpcode[h.opcode] ?? 0) + 1;
      if (!spec || !spec.handler) {
        // ENOSYS only for what we truly do not implement; the kernel remembers it for some ops.
        if (!spec?.noReply) this.send(h.unique, { error: Errno.ENOSYS }, spec?.name ?? `opcode ${h.opcode}`);
        return;
      }
      if (!this.initDone && h.opcode !== Op.INIT) throw new ProtocolError(`${spec.name} before INIT`);
      const body = new Reader(frame, IN_HEADER_SIZE, end);
      if (body.remaining < spec.inSize) throw new ProtocolError(`${spec.name} body of ${body.remaining} bytes, need ${spec.inSize}`);
      req = decoders[spec.handler](body);
    } catch (err) {
      this.malformed(frame, err);
      return;
    }
    void this.run(h, spec, spec.handler, req);
  }

  /** A request we could not decode: answer EIO if we can tell which one it was, never crash. */
  private malformed(frame: Buffer, err: unknown): void {
    const what = err instanceof ProtocolError ? err.message : `decoder bug: ${err instanceof Error ? err.message : String(err)}`;
    if (frame.length < OUT_HEADER_SIZE) {
      log.error(`malformed request (${frame.length} bytes): ${what}`);
      return;
    }
    const opcode = frame.readUInt32LE(4);
    const unique = frame.readBigUInt64LE(8);
    log.error(`malformed request ${OPS[opcode]?.name ?? opcode} #${unique}: ${what}`);
    if (!OPS[opcode]?.noReply) this.send(unique, { error: Errno.EIO }, 'malformed');
  }

  private async run(h: InHeader, spec: OpSpec, key: HandlerKey, req: unknown): Promise<void> {
    const ac = spec.noReply ? undefined : new LazyAbort();
    if (ac) this.inflight.set(h.unique, ac);
    const ctx: Ctx = ac ? new RequestCtx(h.uid, h.gid, h.pid, ac) : { uid: h.uid, gid: h.gid, pid: h.pid };
    if (log.debugEnabled) log.debug(`<- ${spec.name} #${h.unique} node ${h.nodeid}`);
    let reply: Reply;
    try {
      reply = await (this.handlers[key] as Handler<HandlerKey>)(h, req as never, ctx);
    } catch (err) {
      reply = { error: ac?.aborted && !(err as { errno?: unknown })?.errno ? Errno.EINTR : this.errnoOf(err, spec.name) };
    } finally {
      if (ac) this.inflight.delete(h.unique);
    }
    if (reply !== NO_REPLY) this.send(h.unique, reply, spec.name);
  }

  private errnoOf(err: unknown, op: string): number {
    const e = toErrno(err, `FUSE ${op}`);
    return e > 0 && e < 4096 ? e : Errno.EIO;
  }

  /** Writes one reply; tells `after` whether the kernel took it (ENOENT: the request was interrupted). */
  private send(unique: bigint, a: Answer, op: string): void {
    const chunks = a.error ? [] : (a.chunks ?? []);
    const len = OUT_HEADER_SIZE + chunks.reduce((n, c) => n + c.length, 0);
    const w = new Writer(OUT_HEADER_SIZE);
    encodeOutHeader(w, len, a.error ? -a.error : 0, unique);
    if (log.debugEnabled) log.debug(`-> ${op} #${unique} ${a.error ? errnoName(a.error) : `${len} bytes`}`);
    let delivered = true;
    try {
      this.transport.reply([w.done(), ...chunks]);
    } catch (err) {
      delivered = false;
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') log.debug(`reply to ${op} #${unique} dropped: request was interrupted`);
      else if (!this.ended && code !== 'ENODEV') log.warn(`reply to ${op} #${unique} failed: ${(err as Error).message}`);
    }
    a.after?.(delivered);
  }

  // --- replies ----------------------------------------------------------------------------------

  private entry(e: Entry): Answer {
    if (e.nodeid) this.seen(e.nodeid, e.attr.mode);
    return {
      chunks: one((w) => encodeEntryOut(w, e, this.entryT, this.attrT), ENTRY_OUT_SIZE),
      // The lookup was counted by the Vfs; if the kernel never saw it, give it back.
      after: (ok) => { if (!ok && e.nodeid !== 0) this.vfs.forget(e.nodeid, 1); },
    };
  }

  private attr(a: Parameters<typeof encodeAttrOut>[1], nodeid: number): Answer {
    this.seen(nodeid, a.mode);
    return { chunks: one((w) => encodeAttrOut(w, a, this.attrT), ATTR_OUT_SIZE) };
  }

  /** `direct`: the handle bypasses the page cache (by default, when the Vfs says so). */
  private static openFlags(r: { directIo?: boolean; keepCache?: boolean; nonSeekable?: boolean }, extra = 0, direct = r.directIo === true): number {
    const own = (direct ? FOPEN.DIRECT_IO : 0) | (r.keepCache ? FOPEN.KEEP_CACHE : 0) | (r.nonSeekable ? FOPEN.NONSEEKABLE : 0);
    return direct ? own : own | extra;
  }

  /** Whether an open with these open(2) flags may change the file's bytes. */
  private static changes(flags: number): boolean {
    return (flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC) !== 0;
  }

  /** Whether a CREATE with these open(2) flags, answered with this mode, gets FOPEN_DIRECT_IO (see directCreates). */
  private writeOnlyNew(flags: number, mode: number): boolean {
    return this.directCreates && (flags & O_ACCMODE) === O_WRONLY && (mode & S_IFMT) === S_IFREG && setIdBits(mode) === 0;
  }

  /** FOPEN_NOFLUSH for an open with these open(2) flags, or 0. */
  private noFlush(flags: number): number {
    return (flags & O_ACCMODE) === O_RDONLY ? this.readNoFlush : 0;
  }

  /** The xattr size protocol: size 0 asks for the length; a smaller buffer than the value is ERANGE. */
  private static xattrAnswer(value: Buffer, size: number): Answer {
    if (size === 0) return { chunks: one((w) => encodeGetxattrOut(w, value.length), 8) };
    if (value.length > size) return { error: Errno.ERANGE };
    return { chunks: [value] };
  }

  private static ok: Answer = { chunks: [] };

  // --- handlers, one per HandlerKey (exhaustive by type) -----------------------------------------

  private readonly handlers: Handlers = {
    init: async (_h, req) => this.init(req),
    destroy: async () => FuseSession.ok,
    lookup: async (h, req, ctx) => {
      let e: Entry;
      try {
        e = await this.vfs.lookup(ctx, h.nodeid, req.name);
      } catch (err) {
        // A cached absence saves the lookup that precedes every create (tar, git, make).
        if (!this.negT || toErrno(err, 'FUSE LOOKUP') !== Errno.ENOENT) throw err;
        return { chunks: one((w) => encodeNegativeEntryOut(w, this.negT), ENTRY_OUT_SIZE) };
      }
      return this.entry(e);
    },
    forget: async (h, req) => {
      this.plain.delete(h.nodeid);
      this.readAround?.forgot(h.nodeid);
      this.forget(h.nodeid, req.nlookup);
      return NO_REPLY;
    },
    batchForget: async (_h, req) => {
      for (const f of req.items) {
        this.plain.delete(f.nodeid);
        this.readAround?.forgot(f.nodeid);
        this.forget(f.nodeid, f.nlookup);
      }
      return NO_REPLY;
    },
    interrupt: async (h, req) => {
      const ac = this.inflight.get(req.target);
      if (ac) {
        ac.abort();
        return NO_REPLY;
      }
      // Not (yet) seen: EAGAIN makes the kernel queue the interrupt again if the request is still
      // pending, and is dropped (ENOENT on our write) if it was answered (fuse.h, 7.12 rules).
      return { error: Errno.EAGAIN };
    },
    getattr: async (h, req, ctx) =>
      this.attr(await this.vfs.getattr(ctx, h.nodeid, req.flags & FUSE_GETATTR_FH ? req.fh : undefined), h.nodeid),
    setattr: async (h, req, ctx) => {
      const v = req.valid;
      const set: SetAttr = {};
      if (v & FATTR.MODE) set.mode = req.mode & 0o7777;
      if (v & FATTR.UID) set.uid = req.uid;
      if (v & FATTR.GID) set.gid = req.gid;
      if (v & FATTR.SIZE) set.size = req.size;
      // The kernel sets ATIME together with ATIME_NOW for utimensat(UTIME_NOW) (7.9+).
      if (v & FATTR.ATIME_NOW) set.atime = 'now';
      else if (v & FATTR.ATIME) set.atime = req.atime;
      if (v & FATTR.MTIME_NOW) set.mtime = 'now';
      else if (v & FATTR.MTIME) set.mtime = req.mtime;
      // FATTR_CTIME (7.23) only accompanies other changes, which move ctime anyway.
      const fh = v & FATTR.FH ? req.fh : undefined;
      const plain = this.plain.delete(h.nodeid);
      // A truncation by a caller without CAP_FSETID clears set-ID bits (KILLPRIV_V2); a chown's
      // clearing, flagged too, is the source's (chown(2) rules, as the host's kernel applies them).
      // A truncation: no store may land on the pages the kernel drops once we answer.
      const unhold = set.size !== undefined ? await this.readAround?.hold(h.nodeid) : undefined;
      try {
        if (v & FATTR.KILL_SUIDGID && set.size !== undefined && set.mode === undefined && !plain) await this.killSetId(ctx, h.nodeid, fh);
        const a = this.attr(await this.vfs.setattr(ctx, h.nodeid, set, fh), h.nodeid);
        return unhold ? { ...a, after: unhold } : a;
      } catch (err) {
        unhold?.();
        throw err;
      }
    },
    readlink: async (h, _req, ctx) => ({ chunks: [Buffer.from(await this.vfs.readlink(ctx, h.nodeid))] }),
    symlink: async (h, req, ctx) => this.entry(await this.vfs.symlink(ctx, h.nodeid, req.name, req.target)),
    // Without FUSE_DONT_MASK the kernel has applied the umask to mode already.
    mknod: async (h, req, ctx) => this.entry(await this.vfs.mknod(ctx, h.nodeid, req.name, req.mode, req.rdev)),
    mkdir: async (h, req, ctx) => this.entry(await this.vfs.mkdir(ctx, h.nodeid, req.name, req.mode)),
    unlink: async (h, req, ctx) => {
      await this.vfs.unlink(ctx, h.nodeid, req.name);
      return FuseSession.ok;
    },
    rmdir: async (h, req, ctx) => {
      await this.vfs.rmdir(ctx, h.nodeid, req.name);
      return FuseSession.ok;
    },
    rename: async (h, req, ctx) => {
      await this.vfs.rename(ctx, h.nodeid, req.name, req.newdir, req.newname, req.flags);
      return FuseSession.ok;
    },
    rename2: async (h, req, ctx) => {
      await this.vfs.rename(ctx, h.nodeid, req.name, req.newdir, req.newname, req.flags);
      return FuseSession.ok;
    },
    link: async (h, req, ctx) => this.entry(await this.vfs.link(ctx, req.oldnodeid, h.nodeid, req.name)),
    // With ATOMIC_O_TRUNC the kernel passes O_TRUNC here instead of a SETATTR of size 0.
    open: async (h, req, ctx) => {
      // An open that may change the file (writable, or O_TRUNC, which Linux honours even read-only)
      // first waits for read-around's stores to the node, and stops new ones.
      const unhold = FuseSession.changes(req.flags) ? await this.readAround?.hold(h.nodeid) : undefined;
      try {
        const r = await this.vfs.open(ctx, h.nodeid, req.flags);
        if (req.openFlags & FUSE_OPEN_KILL_SUIDGID && req.flags & O_TRUNC && !this.plain.has(h.nodeid)) {
          await this.killSetId(ctx, h.nodeid, r.fh).catch((err: unknown) => {
            this.releaseQuietly(h.nodeid, r.fh, false);
            throw err;
          });
        }
        this.readAround?.opened(r.fh, h.nodeid, req.flags, r.directIo);
        return {
          chunks: one((w) => encodeOpenOut(w, r.fh, FuseSession.openFlags(r, this.fileFlags) | this.noFlush(req.flags)), OPEN_OUT_SIZE),
          after: (ok) => { if (!ok) this.releaseQuietly(h.nodeid, r.fh, false); },
        };
      } finally {
        unhold?.();
      }
    },
    read: async (h, req, ctx) => {
      const ra = this.readAround;
      const win = ra?.widen(h.nodeid, req.fh, req.offset, req.size);
      if (!ra || !win) {
        const data = await this.vfs.read(ctx, h.nodeid, req.fh, req.offset, req.size);
        return { chunks: [data.length > req.size ? data.subarray(0, req.size) : data] };
      }
      let data: Buffer;
      try {
        data = await this.vfs.read(ctx, h.nodeid, req.fh, win.start, win.length);
      } catch (err) {
        ra.finish(h.nodeid, win, undefined, req.offset, req.size);
        throw err;
      }
      const from = Math.min(req.offset - win.start, data.length);
      return {
        chunks: [data.subarray(from, Math.min(from + req.size, data.length))],
        // The rest goes once the kernel has the part it asked for (its pages stay locked till then).
        after: () => ra.finish(h.nodeid, win, data, req.offset, req.size),
      };
    },
    write: async (h, req, ctx) => {
      if (req.writeFlags & FUSE_WRITE_KILL_SUIDGID && !this.plain.has(h.nodeid)) await this.killSetId(ctx, h.nodeid, req.fh);
      const n = await this.vfs.write(ctx, h.nodeid, req.fh, req.offset, req.data);
      return { chunks: one((w) => encodeWriteOut(w, n), 8) };
    },
    statfs: async (h, _req, ctx) => {
      const s = await this.vfs.statfs(ctx, h.nodeid);
      return { chunks: one((w) => encodeStatfs(w, s), KSTATFS_SIZE) };
    },
    release: async (h, req, ctx) => {
      this.readAround?.released(req.fh);
      await this.vfs.release(ctx, h.nodeid, req.fh);
      return FuseSession.ok;
    },
    fsync: async (h, req, ctx) => {
      await this.vfs.fsync(ctx, h.nodeid, req.fh, req.datasync);
      return FuseSession.ok;
    },
    setxattr: async (h, req, ctx) => {
      await this.vfs.setxattr(ctx, h.nodeid, req.name, req.value, req.flags);
      return FuseSession.ok;
    },
    getxattr: async (h, req, ctx) => {
      try {
        return FuseSession.xattrAnswer(await this.vfs.getxattr(ctx, h.nodeid, req.name), req.size);
      } catch (err) {
        // With POSIX_ACL the kernel reads ACLs for its permission checks, and takes any error but
        // "no such attribute" as a failed check: a file system without ACLs has none on any file.
        if (this.posixAcl && err instanceof FsError && err.errno === Errno.EOPNOTSUPP && ACL_NAMES.has(req.name)) return { error: Errno.ENODATA };
        throw err;
      }
    },
    listxattr: async (h, req, ctx) => {
      const names = await this.vfs.listxattr(ctx, h.nodeid);
      return FuseSession.xattrAnswer(Buffer.from(names.map((n) => `${n}\0`).join('')), req.size);
    },
    removexattr: async (h, req, ctx) => {
      await this.vfs.removexattr(ctx, h.nodeid, req.name);
      return FuseSession.ok;
    },
    flush: async (h, req, ctx) => {
      await this.vfs.flush(ctx, h.nodeid, req.fh);
      return FuseSession.ok;
    },
    opendir: async (h, _req, ctx) => {
      // Zero-message opendir (7.29, fs/fuse/file.c fuse_do_open): after one ENOSYS the kernel sends
      // no more OPENDIR or RELEASEDIR, and keeps listings with KEEP_CACHE | CACHE_DIR. Handles on
      // the Vfs are then ours to open when a listing is really read (dirHandle).
      if (this.noOpendir) return { error: Errno.ENOSYS };
      const r = await this.vfs.opendir(ctx, h.nodeid);
      return {
        chunks: one((w) => encodeOpenOut(w, r.fh, FuseSession.openFlags(r, this.dirFlags)), OPEN_OUT_SIZE),
        after: (ok) => { if (!ok) this.releaseQuietly(h.nodeid, r.fh, true); },
      };
    },
    readdir: async (h, req, ctx) => this.readdir(h, req, ctx, h.opcode === Op.READDIRPLUS),
    releasedir: async (h, req, ctx) => {
      await this.vfs.releasedir(ctx, h.nodeid, req.fh);
      return FuseSession.ok;
    },
    fsyncdir: async (h, req, ctx) => {
      const fh = this.noOpendir ? await this.dirHandle(h.nodeid, false, ctx) : req.fh;
      await this.vfs.fsyncdir(ctx, h.nodeid, fh, req.datasync);
      return FuseSession.ok;
    },
    access: async (h, req, ctx) => {
      await this.vfs.access(ctx, h.nodeid, req.mask);
      return FuseSession.ok;
    },
    create: async (h, req, ctx) => {
      const r = await this.vfs.create(ctx, h.nodeid, req.name, req.mode, req.flags);
      // O_TRUNC matters if the name came to exist before the create reached the source.
      if (req.openFlags & FUSE_OPEN_KILL_SUIDGID && req.flags & O_TRUNC && setIdBits(r.entry.attr.mode)) {
        await this.killSetId(ctx, r.entry.nodeid, r.fh).catch((err: unknown) => {
          this.releaseQuietly(r.entry.nodeid, r.fh, false);
          this.vfs.forget(r.entry.nodeid, 1);
          throw err;
        });
      }
      const direct = r.directIo === true || this.writeOnlyNew(req.flags, r.entry.attr.mode);
      if (this.readAround) {
        this.readAround.opened(r.fh, r.entry.nodeid, req.flags, direct);
        // A name that came to exist elsewhere may name a node the kernel holds pages of.
        if (FuseSession.changes(req.flags)) await this.readAround.changed(r.entry.nodeid);
      }
      const w = new Writer(ENTRY_OUT_SIZE + OPEN_OUT_SIZE);
      encodeEntryOut(w, r.entry, this.entryT, this.attrT);
      this.seen(r.entry.nodeid, r.entry.attr.mode);
      encodeOpenOut(w, r.fh, FuseSession.openFlags(r, this.fileFlags, direct) | this.noFlush(req.flags));
      return {
        chunks: [w.done()],
        after: (ok) => {
          if (ok) return;
          this.releaseQuietly(r.entry.nodeid, r.fh, false);
          this.vfs.forget(r.entry.nodeid, 1);
        },
      };
    },
    fallocate: async (h, req, ctx) => {
      await this.vfs.fallocate(ctx, h.nodeid, req.fh, req.mode, req.offset, req.length);
      return FuseSession.ok;
    },
    lseek: async (h, req, ctx) => {
      const off = await this.vfs.lseek(ctx, h.nodeid, req.fh, req.offset, req.whence);
      return { chunks: one((w) => encodeLseekOut(w, off), 8) };
    },
    copyFileRange: async (h, req, ctx) => {
      // The reply's size is a u32: ask for no more than fits (the kernel loops for the rest).
      const len = Math.min(req.len, 0xffff_f000);
      const n = await this.vfs.copyFileRange(ctx, h.nodeid, req.fhIn, req.offIn, req.nodeOut, req.fhOut, req.offOut, len);
      return { chunks: one((w) => encodeWriteOut(w, n), 8) };
    },
  };

  private forget(nodeid: number, nlookup: number): void {
    // The root is never forgotten (kernel never sends it; a Vfs must not drop it either).
    if (nodeid === FUSE_ROOT_ID || nlookup === 0) return;
    // FORGET comes once the kernel evicts the inode: its listing handle, if any, goes too.
    if (this.dirFhs.size) this.dropDirHandle(nodeid);
    try {
      this.vfs.forget(nodeid, nlookup);
    } catch (err) {
      toErrno(err, 'FUSE FORGET');
    }
  }

  /**
   * The Vfs directory handle READDIR uses when the kernel opens directories without telling us:
   * one per directory, made afresh when a listing starts at offset 0 (a new snapshot), given back
   * at the end of the listing or when the kernel forgets the directory.
   */
  private dirHandle(nodeid: number, fresh: boolean, ctx: Ctx): Promise<number> {
    let p = this.dirFhs.get(nodeid);
    if (p && !fresh) return p;
    if (p) this.dropDirHandle(nodeid);
    p = this.vfs.opendir({ uid: ctx.uid, gid: ctx.gid, pid: ctx.pid }, nodeid).then((r) => r.fh);
    const mine = p;
    this.dirFhs.set(nodeid, mine);
    mine.catch(() => { if (this.dirFhs.get(nodeid) === mine) this.dirFhs.delete(nodeid); });
    return mine;
  }

  private dropDirHandle(nodeid: number): void {
    const p = this.dirFhs.get(nodeid);
    if (!p) return;
    this.dirFhs.delete(nodeid);
    p.then((fh) => this.releaseQuietly(nodeid, fh, true), () => {});
  }

  private releaseQuietly(nodeid: number, fh: number, dir: boolean): void {
    const ctx: Ctx = { uid: 0, gid: 0, pid: 0 };
    if (!dir) this.readAround?.released(fh);
    const p = dir ? this.vfs.releasedir(ctx, nodeid, fh) : this.vfs.release(ctx, nodeid, fh);
    p.catch((err: unknown) => toErrno(err, 'FUSE release after lost reply'));
  }

  private init(req: Decoded<'init'>): Reply {
    if (req.major !== FUSE_KERNEL_VERSION || req.minor < FUSE_MIN_MINOR_VERSION) {
      // A newer major would get our version back and retry (fuse.h); there is no such kernel.
      const msg = `kernel FUSE protocol ${req.major}.${req.minor} not supported (need 7.${FUSE_MIN_MINOR_VERSION}+)`;
      log.error(msg);
      return { error: Errno.EPROTO, after: () => this.rejectInit(new Error(msg)) };
    }
    const minor = Math.min(req.minor, FUSE_KERNEL_MINOR_VERSION);
    // Zero-message opendir only where the kernel says it knows it (older ones would fail opendir).
    if (!(req.flags & Init.NO_OPENDIR_SUPPORT)) this.noOpendir = false;
    let flags = req.flags & (WANTED_FLAGS | (this.opts.exportSupport ? Init.EXPORT_SUPPORT : 0) | (this.opts.posixAcl ? Init.POSIX_ACL : 0));
    this.posixAcl = (flags & Init.POSIX_ACL) !== 0;
    this.readNoFlush = minor >= NOFLUSH_MINOR ? FOPEN.NOFLUSH : 0;
    // The kernel's own minor: the page dropping before direct writes is its code, not protocol.
    this.directCreates = this.opts.keepCache === true && req.minor >= DIRECT_WRITE_INVALIDATES_MINOR;
    // flags2 is read only when we echo INIT_EXT (7.36); we want none of its bits (SECURITY_CTX,
    // HAS_INODE_DAX, HAS_EXPIRE_ONLY), so it is zero, but the bit says we understand the layout.
    if (req.flags & Init.INIT_EXT) flags |= Init.INIT_EXT;
    const info: InitInfo = { minor, flags, maxWrite: this.maxWrite };
    // Other requests may be read before our write's callback runs: accept them from now on.
    this.initDone = true;
    return {
      chunks: one((w) => encodeInitOut(w, {
        major: FUSE_KERNEL_VERSION, minor, maxReadahead: req.maxReadahead, flags, flags2: 0,
        // Room for readahead and async direct I/O in parallel; the kernel's default is 12.
        maxBackground: 64, congestionThreshold: 48,
        maxWrite: this.maxWrite, timeGran: 1, maxPages: Math.ceil(this.maxWrite / 4096),
      }), INIT_OUT_SIZE),
      after: (ok) => {
        if (!ok) return this.rejectInit(new Error('INIT reply not accepted by the kernel'));
        log.debug(`INIT 7.${minor} flags 0x${flags.toString(16)}`);
        this.resolveInit(info);
        if (!this.ended) this.unwatch = this.vfs.watch((ev) => this.notify(ev));
      },
    };
  }

  private async readdir(h: InHeader, req: Decoded<'readdir'>, ctx: Ctx, plus: boolean): Promise<Reply> {
    // A hint only: names average well under 16 bytes; entries that do not fit are dropped.
    const hint = Math.max(1, Math.floor(req.size / ((plus ? DIRENTPLUS_NAME_OFFSET : DIRENT_NAME_OFFSET) + 16)));
    const fh = this.noOpendir ? await this.dirHandle(h.nodeid, req.offset === 0, ctx) : req.fh;
    const list = await this.vfs.readdir(ctx, h.nodeid, fh, req.offset, hint, plus);
    // The end of a listing: the kernel now has it all (and reads from offset 0 anew next time).
    if (this.noOpendir && list.length === 0) this.dropDirHandle(h.nodeid);
    // The kernel asks for a page or so; never trust a size beyond what a request may carry.
    const limit = Math.min(req.size, this.maxWrite);
    const w = new Writer(Math.max(limit, 1));
    const given: number[] = [];
    let full = false;
    for (const e of list) {
      // Plus entries carry a lookup the kernel will own only if it gets the entry with its nodeid.
      const counted = plus && e.entry && e.entry.nodeid !== 0 ? e.entry.nodeid : 0;
      const nameBytes = Buffer.from(e.name);
      const dot = e.name === '.' || e.name === '..';
      // The kernel fails the whole READDIR with EIO on an empty or over-long name, and READDIRPLUS on
      // an entry naming the root (invalid_nodeid in fs/fuse/readdir.c): leave such entries out.
      const bad = nameBytes.length === 0 || nameBytes.length > FUSE_NAME_MAX || e.name.includes('/') || e.name.includes('\0');
      const size = plus ? direntplusSize(nameBytes.length) : direntSize(nameBytes.length);
      if (!full && !bad && w.pos + size <= limit) {
        if (plus) {
          const entry = counted > FUSE_ROOT_ID && !dot ? e.entry! : null;
          encodeDirentplus(w, entry, this.entryT, this.attrT, e.ino, e.off, e.type, nameBytes);
          if (entry) {
            given.push(entry.nodeid);
            this.seen(entry.nodeid, entry.attr.mode);
          }
          else if (counted) this.forget(counted, 1);
        } else {
          encodeDirent(w, e.ino, e.off, e.type, nameBytes);
        }
        continue;
      }
      if (bad) log.warn(`readdir of node ${h.nodeid}: left out unusable name ${JSON.stringify(e.name)}`);
      else full = true;
      if (counted) this.forget(counted, 1);
    }
    return {
      chunks: [w.done()],
      after: (ok) => { if (!ok) for (const id of given) this.forget(id, 1); },
    };
  }

  // --- notifications ---------------------------------------------------------------------------

  /** Attributes given to the kernel: what it now knows of a file's set-ID bits is ours too. */
  private seen(nodeid: number, mode: number): void {
    if ((mode & S_IFMT) !== S_IFREG) return; // only files are written
    if (setIdBits(mode)) {
      this.plain.delete(nodeid);
      return;
    }
    if (this.plain.size >= MAX_PLAIN) this.plain.clear();
    this.plain.add(nodeid);
  }

  /**
   * Clears the set-ID bits an unprivileged write or truncation clears, as the kernel did before
   * HANDLE_KILLPRIV_V2 (a fresh getattr, then a chmod), and
   * remembers a file found without any.
   */
  private async killSetId(ctx: Ctx, nodeid: number, fh: number | undefined): Promise<void> {
    const { mode, uid, gid } = await this.vfs.getattr(ctx, nodeid, fh);
    const bits = setIdBits(mode);
    if (!bits) {
      this.seen(nodeid, mode);
      return;
    }
    // As the owner: the writer need not own the file (the kernel's own change was forced past
    // the permission check that a chmod by the writer would fail).
    await this.vfs.setattr({ uid, gid, pid: ctx.pid }, nodeid, { mode: mode & 0o7777 & ~bits }, fh);
    // The kernel still holds the mode it had (it did not make this change): drop it.
    void this.notify({ kind: 'inode', nodeid, off: -1, len: 0, attrsOnly: true });
  }

  /**
   * Sends one change to the kernel. Never awaited by a request handler: the kernel may hold a page
   * or directory lock for a request that is waiting on us while it processes the notify.
   */
  private notify(ev: ChangeEvent): Promise<void> | undefined {
    if (ev.kind === 'inode') this.plain.delete(ev.nodeid);
    else if (ev.kind === 'delete') this.plain.delete(ev.child);
    if (this.ended) return undefined;
    const nb = ev.kind === 'inode' ? Buffer.alloc(0) : Buffer.from(ev.name);
    if (ev.kind !== 'inode' && (nb.length === 0 || nb.length > FUSE_NAME_MAX)) return undefined;
    // Sized to fit: the message is built once and never grows.
    const w = new Writer(NOTIFY_DELETE_SIZE + nb.length + 1);
    let code: number;
    switch (ev.kind) {
      case 'inode':
        // The kernel always drops the cached attributes (fuse_reverse_inval_inode); pages from off
        // on, len 0 meaning all of them, unless off is negative. So a whole-file change (off < 0
        // here) is sent as off 0, len 0, and an attributes-only one as off -1.
        code = Notify.INVAL_INODE;
        if (ev.attrsOnly) encodeNotifyInvalInode(w, ev.nodeid, -1, 0);
        else encodeNotifyInvalInode(w, ev.nodeid, ev.off < 0 ? 0 : ev.off, ev.off < 0 ? 0 : ev.len);
        break;
      case 'entry':
        code = Notify.INVAL_ENTRY;
        encodeNotifyInvalEntry(w, ev.parent, nb);
        break;
      case 'delete':
        code = Notify.DELETE;
        encodeNotifyDelete(w, ev.parent, ev.child, nb);
        break;
    }
    const body = w.done();
    const hdr = new Writer(OUT_HEADER_SIZE);
    encodeOutHeader(hdr, OUT_HEADER_SIZE + body.length, code, 0n);
    // Settles once the kernel has processed it: what the server waits for before the writer goes on.
    const go = (): Promise<void> => this.transport.send([hdr.done(), body]).catch((err: NodeJS.ErrnoException) => {
      // ENOENT: the kernel does not have that node or name cached, so there is nothing to drop.
      if (err.code === 'ENOENT' || err.code === 'ENOTDIR' || this.ended) return;
      log.warn(`notify ${ev.kind} failed: ${err.message}`);
    });
    // After read-around's stores to the node: the kernel must drop what they put in, not keep it.
    const stores = ev.kind === 'inode' ? this.readAround?.changed(ev.nodeid) : undefined;
    return stores ? stores.then(go) : go();
  }
}
