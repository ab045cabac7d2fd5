// THE contract: the asynchronous, inode-based file system interface that sources implement, the
// wire carries and the FUSE layer mounts. Its semantics follow the FUSE low-level API (libfuse's
// fuse_lowlevel.h), so a Vfs maps onto /dev/fuse one operation to one method. No I/O here.
//
// Conventions:
// - Node ids are positive integers; ROOT_ID (1) is the root and is never forgotten. Every call that
//   returns an Entry (lookup, mknod, mkdir, symlink, link, create, readdir with plus) counts one
//   lookup on that node; forget(ino, n) drops n of them. A node may be dropped at zero.
// - `Attr.ino` is the st_ino users see; it need not equal the node id.
// - Modes, open flags, errnos and xattr flags use Linux values; they are also the wire's values.
// - Failures are thrown as FsError(errno). Anything else thrown is a bug and becomes EIO.
// - Buffers passed in (write data, xattr values) are views valid only during the call: copy to keep.

import type { Cancel } from '../lib/abort.js';

export const ROOT_ID = 1;

export interface Timespec {
  sec: number;
  nsec: number;
}

export interface Attr {
  ino: number;
  size: number;
  blocks: number; // 512-byte units
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  mode: number; // S_IFMT type bits | permission bits
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  blksize: number;
}

export interface Entry {
  /** The node id for later calls; 0 is a negative entry (cacheable "does not exist"). */
  nodeid: number;
  generation: number;
  attr: Attr;
}

/** Identity and cancellation of the caller. */
export interface Ctx {
  uid: number;
  gid: number;
  pid: number;
  /** Aborted when the kernel interrupts the request or the connection goes away. */
  signal?: AbortSignal;
  /** The same cancellation as `signal`, without making one (see lib/abort.ts). */
  cancel?: Cancel;
}

/** A time to set: an explicit time, or the server's current time (UTIME_NOW). Absent = UTIME_OMIT. */
export type SetTime = Timespec | 'now';

export interface SetAttr {
  mode?: number; // permission bits only
  uid?: number;
  gid?: number;
  size?: number;
  atime?: SetTime;
  mtime?: SetTime;
}

export interface OpenResult {
  fh: number;
  /** Bypass the page cache for this open file (FOPEN_DIRECT_IO). */
  directIo?: boolean;
  /** Keep cached pages from a previous open (FOPEN_KEEP_CACHE). */
  keepCache?: boolean;
  /** The file is not seekable (FOPEN_NONSEEKABLE): pseudo files, fifos. */
  nonSeekable?: boolean;
}

export interface CreateResult extends OpenResult {
  entry: Entry;
  /**
   * Set when the create was answered before the server made the name (create-behind): settles
   * once the server has answered it, whether it made the name or not.
   */
  named?: Promise<unknown>;
}

export interface DirEntry {
  name: string;
  /** st_ino to show (d_ino). */
  ino: number;
  /** File type bits (S_IFMT part of the mode). */
  type: number;
  /** Cookie: pass it as `offset` to continue after this entry. Never 0. */
  off: number;
  /** Present only for readdir with `plus`; counts one lookup. */
  entry?: Entry;
}

/**
 * Listings known to end the directory: a source marks the readdir result whose last entry is the
 * directory's last (markEnded), so the client need not ask again to learn that nothing follows.
 * Unmarked means unknown, never "more follows".
 */
const ended = new WeakSet<DirEntry[]>();
export function markEnded(list: DirEntry[]): DirEntry[] {
  ended.add(list);
  return list;
}
export function isEnded(list: DirEntry[]): boolean {
  return ended.has(list);
}

export interface StatFs {
  blocks: number;
  bfree: number;
  bavail: number;
  files: number;
  ffree: number;
  bsize: number;
  namelen: number;
  frsize: number;
}

export interface Lock {
  start: number;
  end: number; // inclusive; Number.MAX_SAFE_INTEGER stands for "to end of file"
  type: number; // F_RDLCK 0, F_WRLCK 1, F_UNLCK 2
  pid: number;
}

/**
 * Where a Vfs publishes answers of its getattr (Vfs.offerAttrs): set() until the time given
 * (milliseconds since the epoch), delete() and clear() withdraw. The Vfs tells the sink of a change
 * to what its getattr would answer in the same synchronous step in which it learns of it (its own
 * call, or a change event), so no request taken after that step is answered otherwise.
 */
export interface AttrSink {
  set(nodeid: number, attr: Attr, untilMs: number): void;
  delete(nodeid: number): void;
  clear(): void;
}

/**
 * How long the kernel keeps names and attributes of a coherent Vfs (FsInfo.coherent), and the
 * client's caches below it theirs: a day. The Vfs tells of every change (and the FUSE layer the
 * kernel, by notify), so this bound only limits the damage of a lost notification. A Vfs that is
 * not coherent gets 1 s (fuse/mount.ts). It was 10 minutes: a tree extracted more than that before
 * an `rm -rf` or a `git status` had every name looked up on the server again (an `rm -rf` of 8800
 * names went from 1.8 to 4.8 s), for no gain in coherence.
 */
export const COHERENT_CACHE_S = 86_400;

/** What the served file system is, learnt at connect. */
export interface FsInfo {
  /** The negotiated type shown as fuse.<type>: "passthrough", "tmpfs", "ext4", "mem", ... */
  type: string;
  /** A source that refuses every change. */
  readOnly: boolean;
  /**
   * Every change not made through this Vfs is reported by watch() (or there can be none), so a
   * cache kept up to date by watch() events is never stale, however long it keeps things.
   */
  coherent?: boolean;
  /**
   * read() returns a Buffer of its own that the source never touches again, so a server may send
   * it as it is, after the call, instead of copying it first.
   */
  freshReads?: boolean;
}

/** A change pushed up from a source (or from a server to a client). */
export type ChangeEvent =
  /**
   * The data and/or attributes of a node changed (off/len = -1/0: whole file). `attrsOnly`: only
   * its attributes did (a local note, never sent on the wire): the kernel keeps the pages.
   */
  | { kind: 'inode'; nodeid: number; off: number; len: number; attrsOnly?: boolean }
  /** A name in a directory appeared, vanished or now points elsewhere. */
  | { kind: 'entry'; parent: number; name: string }
  /** A name was deleted and the child node is known (FUSE notify_delete). */
  | { kind: 'delete'; parent: number; child: number; name: string };

/**
 * Told of each change; may return a promise that settles once the change has been acted on (a
 * FUSE layer: once the kernel has dropped what it cached), which a server waits for before it
 * lets the writer go on (see docs/DESIGN.md, cache consistency).
 */
export type ChangeListener = (ev: ChangeEvent) => void | Promise<void>;

export interface Vfs {
  info(): FsInfo;

  lookup(ctx: Ctx, parent: number, name: string): Promise<Entry>;
  /** Drop `nlookup` lookups of a node. Never fails, never waits for I/O. */
  forget(nodeid: number, nlookup: number): void;
  getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr>;
  setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr>;
  readlink(ctx: Ctx, nodeid: number): Promise<string>;

  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry>;
  mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry>;
  symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry>;
  link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry>;
  unlink(ctx: Ctx, parent: number, name: string): Promise<void>;
  rmdir(ctx: Ctx, parent: number, name: string): Promise<void>;
  /** flags: RENAME_NOREPLACE (1), RENAME_EXCHANGE (2). */
  rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void>;

  /** flags: Linux open(2) flags (O_ACCMODE, O_APPEND, O_TRUNC, ...). O_CREAT/O_EXCL never reach open. */
  open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult>;
  create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult>;
  /**
   * Optional (create-behind, protocol 1.4): a new regular file without a name in directory
   * `parent`, open for reading and writing, counting one lookup; the entry's attributes are the
   * file's final inode number, device and block size. Named later by nameReserved, or gone at its
   * release. EOPNOTSUPP where the source cannot.
   */
  reserveFile?(ctx: Ctx, parent: number): Promise<CreateResult>;
  /**
   * Names file `nodeid` (reserved, open as fh) `name` in `parent` as a create by ctx with `mode`
   * would have made it: owner, mode, times now. EEXIST if the name is taken. Returns its attributes.
   */
  nameReserved?(ctx: Ctx, parent: number, name: string, nodeid: number, fh: number, mode: number): Promise<Attr>;
  /** Returns at most `size` bytes; fewer only at end of file. */
  read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer>;
  /** Returns the count written. For O_APPEND opens, offset is ignored and data goes at the end. */
  write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number>;
  /** write() of the pieces one after the other, without joining them (optional: else they are joined). */
  writev?(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer[]): Promise<number>;
  /** At each close(2); on 7.35+ kernels not for read-only handles (the FUSE layer asks for FOPEN_NOFLUSH). */
  flush(ctx: Ctx, nodeid: number, fh: number): Promise<void>;
  fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void>;
  release(ctx: Ctx, nodeid: number, fh: number): Promise<void>;

  opendir(ctx: Ctx, nodeid: number): Promise<OpenResult>;
  /**
   * Entries after cookie `offset` (0 = from the start, including "." and ".."). Cookies are stable
   * for the life of the handle, whatever changes concurrently. `maxEntries` is a hint. With `plus`,
   * each entry except "." and ".." carries an Entry that counts a lookup.
   */
  readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]>;
  fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void>;
  releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void>;

  statfs(ctx: Ctx, nodeid: number): Promise<StatFs>;
  /** flags: XATTR_CREATE (1), XATTR_REPLACE (2). */
  setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void>;
  /** ENODATA when absent. */
  getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer>;
  listxattr(ctx: Ctx, nodeid: number): Promise<string[]>;
  removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void>;
  /** mask: F_OK 0, X_OK 1, W_OK 2, R_OK 4. */
  access(ctx: Ctx, nodeid: number, mask: number): Promise<void>;
  /** mode: FALLOC_FL_KEEP_SIZE (1), FALLOC_FL_PUNCH_HOLE (2), ... */
  fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void>;
  /** whence: SEEK_DATA (3) or SEEK_HOLE (4); ENXIO past the end. */
  lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number>;
  copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number>;

  /** Subscribe to changes; returns the unsubscribe function. Sources that never change by themselves may never call it. */
  watch(listener: ChangeListener): () => void;
  /**
   * Optional: from now on, tell `sink` the attributes getattr would answer a node with at once and
   * without side effects, as long as they stay so (first those it holds now). The FUSE layer then
   * answers those GETATTRs itself, without calling getattr.
   */
  offerAttrs?(sink: AttrSink): void;
  /** Release everything (fds, watchers, images); pending calls may fail with EIO afterwards. */
  close(): Promise<void>;
}

/** Writes data that may have come in pieces (a big WRITE off the socket): by writev where vfs has it, else joined. */
export function writeData(vfs: Vfs, ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer | Buffer[]): Promise<number> {
  if (!Array.isArray(data)) return vfs.write(ctx, nodeid, fh, offset, data);
  return vfs.writev ? vfs.writev(ctx, nodeid, fh, offset, data) : vfs.write(ctx, nodeid, fh, offset, Buffer.concat(data));
}

// Linux mode and flag constants used across layers (values are the wire's values too).
export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;

export const O_ACCMODE = 0o3;
export const O_RDONLY = 0;
export const O_WRONLY = 1;
export const O_RDWR = 2;
export const O_CREAT = 0o100;
export const O_EXCL = 0o200;
export const O_TRUNC = 0o1000;
export const O_APPEND = 0o2000;
export const O_DIRECT = 0o40000;
export const O_NOFOLLOW = 0o400000;

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
export const SEEK_DATA = 3;
export const SEEK_HOLE = 4;
