// The FUSE kernel ABI: opcodes, flags, struct layouts and their codecs, and the one opcode table
// the session dispatches from. The only authority is the kernel's include/uapi/linux/fuse.h (this
// machine's /usr/include/linux/fuse.h, protocol 7.38); byte offsets are noted beside each codec.
// Everything is little-endian (x86-64 and arm64 hosts; the kernel speaks host byte order).

import { ProtocolError, type Reader, type Writer } from '../lib/bytes.js';
import type { Attr, Entry, StatFs } from '../vfs/types.js';

export const FUSE_KERNEL_VERSION = 7;
/** The minor we speak: the header's. A newer kernel adapts to it (fuse.h, "Communication"). */
export const FUSE_KERNEL_MINOR_VERSION = 38;
/** The oldest kernel minor we accept: 7.31 brought FUSE_MAX_PAGES and CACHE_SYMLINKS (5.1/5.2). */
export const FUSE_MIN_MINOR_VERSION = 31;
export const FUSE_ROOT_ID = 1;
/** fuse.h FUSE_MIN_READ_BUFFER: a read buffer below this makes every read fail with EINVAL. */
export const FUSE_MIN_READ_BUFFER = 8192;
/** The kernel rejects longer names in dirents (fs/fuse/readdir.c, FUSE_NAME_MAX). */
export const FUSE_NAME_MAX = 1024;

export const Op = {
  LOOKUP: 1, FORGET: 2, GETATTR: 3, SETATTR: 4, READLINK: 5, SYMLINK: 6, MKNOD: 8, MKDIR: 9,
  UNLINK: 10, RMDIR: 11, RENAME: 12, LINK: 13, OPEN: 14, READ: 15, WRITE: 16, STATFS: 17,
  RELEASE: 18, FSYNC: 20, SETXATTR: 21, GETXATTR: 22, LISTXATTR: 23, REMOVEXATTR: 24, FLUSH: 25,
  INIT: 26, OPENDIR: 27, READDIR: 28, RELEASEDIR: 29, FSYNCDIR: 30, GETLK: 31, SETLK: 32,
  SETLKW: 33, ACCESS: 34, CREATE: 35, INTERRUPT: 36, BMAP: 37, DESTROY: 38, IOCTL: 39, POLL: 40,
  NOTIFY_REPLY: 41, BATCH_FORGET: 42, FALLOCATE: 43, READDIRPLUS: 44, RENAME2: 45, LSEEK: 46,
  COPY_FILE_RANGE: 47, SETUPMAPPING: 48, REMOVEMAPPING: 49, SYNCFS: 50, TMPFILE: 51,
  /** 7.39 (kernel 6.6), newer than our header: the kernel tries it first for statx(2); ENOSYS makes it use GETATTR. */
  STATX: 52,
} as const;

// INIT flags (fuse_init_in/out.flags; bits 32..63 travel in flags2 when FUSE_INIT_EXT is set).
export const Init = {
  ASYNC_READ: 1 << 0, POSIX_LOCKS: 1 << 1, ATOMIC_O_TRUNC: 1 << 3, EXPORT_SUPPORT: 1 << 4,
  BIG_WRITES: 1 << 5, DONT_MASK: 1 << 6, FLOCK_LOCKS: 1 << 10, AUTO_INVAL_DATA: 1 << 12,
  DO_READDIRPLUS: 1 << 13, READDIRPLUS_AUTO: 1 << 14, ASYNC_DIO: 1 << 15, WRITEBACK_CACHE: 1 << 16,
  PARALLEL_DIROPS: 1 << 18,
  /** The kernel checks and caches POSIX ACLs (read once per inode through GETXATTR, dropped by inval_inode). */
  POSIX_ACL: 1 << 20,
  ABORT_ERROR: 1 << 21, MAX_PAGES: 1 << 22, CACHE_SYMLINKS: 1 << 23,
  /** 7.29: the kernel takes ENOSYS to OPENDIR as "never send OPENDIR/RELEASEDIR again". */
  NO_OPENDIR_SUPPORT: 1 << 24,
  /**
   * 7.33: the file system clears set-ID bits on write, truncation and chown (told by the flags
   * below), so the kernel stops asking for them; it also marks the super block SB_NOSEC, so a
   * file's writes after its first no longer ask for security.capability.
   */
  HANDLE_KILLPRIV_V2: 1 << 28,
  INIT_EXT: 1 << 30,
} as const;

export const FATTR = {
  MODE: 1 << 0, UID: 1 << 1, GID: 1 << 2, SIZE: 1 << 3, ATIME: 1 << 4, MTIME: 1 << 5, FH: 1 << 6,
  ATIME_NOW: 1 << 7, MTIME_NOW: 1 << 8, LOCKOWNER: 1 << 9, CTIME: 1 << 10, KILL_SUIDGID: 1 << 11,
} as const;

export const FOPEN = {
  DIRECT_IO: 1 << 0, KEEP_CACHE: 1 << 1, NONSEEKABLE: 1 << 2, CACHE_DIR: 1 << 3, STREAM: 1 << 4,
  /** 7.35: no FLUSH at close (fs/fuse/file.c fuse_flush returns at once without the writeback cache). */
  NOFLUSH: 1 << 5,
} as const;
/** The first minor whose kernels know FOPEN_NOFLUSH. */
export const NOFLUSH_MINOR = 35;
/**
 * The first minor (Linux 6.6) whose kernels drop the page cache of the range a direct write
 * covers before sending it (fs/fuse/file.c fuse_direct_io), so cached handles never read around it.
 */
export const DIRECT_WRITE_INVALIDATES_MINOR = 39;

export const FUSE_GETATTR_FH = 1 << 0;
/** fuse_write_in.write_flags: the writer may not keep set-ID bits (no CAP_FSETID). */
export const FUSE_WRITE_KILL_SUIDGID = 1 << 2;
/** fuse_open_in/fuse_create_in.open_flags: an O_TRUNC open by a caller without CAP_FSETID. */
export const FUSE_OPEN_KILL_SUIDGID = 1 << 0;
export const FUSE_FSYNC_FDATASYNC = 1 << 0;

export const Notify = { INVAL_INODE: 2, INVAL_ENTRY: 3, STORE: 4, DELETE: 6 } as const;

// Struct sizes (bytes), pinned against fuse.h by test/unit/fuse-abi.test.ts.
export const IN_HEADER_SIZE = 40;
export const OUT_HEADER_SIZE = 16;
export const ATTR_SIZE = 88;
export const ENTRY_OUT_SIZE = 128;
export const ATTR_OUT_SIZE = 104;
export const OPEN_OUT_SIZE = 16;
export const INIT_IN_SIZE = 64;
/** Up to 7.35 the kernel sent only major, minor, max_readahead, flags. */
export const INIT_IN_COMPAT_SIZE = 16;
export const INIT_OUT_SIZE = 64;
export const KSTATFS_SIZE = 80;
export const WRITE_OUT_SIZE = 8;
export const GETXATTR_OUT_SIZE = 8;
export const LSEEK_OUT_SIZE = 8;
export const DIRENT_NAME_OFFSET = 24;
export const DIRENTPLUS_NAME_OFFSET = ENTRY_OUT_SIZE + DIRENT_NAME_OFFSET;
export const NOTIFY_INVAL_INODE_SIZE = 24;
export const NOTIFY_STORE_SIZE = 24;
export const NOTIFY_INVAL_ENTRY_SIZE = 16;
export const NOTIFY_DELETE_SIZE = 24;

/** FUSE_REC_ALIGN: variable-length records are padded to 8 bytes. */
export function recAlign(n: number): number {
  return (n + 7) & ~7;
}
export function direntSize(namelen: number): number {
  return recAlign(DIRENT_NAME_OFFSET + namelen);
}
export function direntplusSize(namelen: number): number {
  return recAlign(DIRENTPLUS_NAME_OFFSET + namelen);
}

// --- the opcode table -------------------------------------------------------------------------

/** Handler keys: one per implemented request body shape; null in the table = reply ENOSYS. */
export type HandlerKey = keyof typeof decoders;

export interface OpSpec {
  name: string;
  /** Size of the fixed input struct that must follow the header (checked before decoding). */
  inSize: number;
  handler: HandlerKey | null;
  /** The kernel expects no reply (FORGET, BATCH_FORGET, INTERRUPT unless EAGAIN, NOTIFY_REPLY). */
  noReply?: boolean;
}

/**
 * The one opcode table. inSize values are the struct sizes at our negotiated minor 7.38: e.g.
 * fuse_setxattr_in is 8 bytes because we do not ask for FUSE_SETXATTR_EXT (7.33), fuse_mknod_in 16
 * (7.12+), fuse_write_in/read_in 40 (7.9+), fuse_getattr_in 16 (7.9+).
 */
export const OPS: Readonly<Record<number, OpSpec>> = {
  [Op.LOOKUP]: { name: 'LOOKUP', inSize: 0, handler: 'lookup' },
  [Op.FORGET]: { name: 'FORGET', inSize: 8, handler: 'forget', noReply: true },
  [Op.GETATTR]: { name: 'GETATTR', inSize: 16, handler: 'getattr' },
  [Op.SETATTR]: { name: 'SETATTR', inSize: 88, handler: 'setattr' },
  [Op.READLINK]: { name: 'READLINK', inSize: 0, handler: 'readlink' },
  [Op.SYMLINK]: { name: 'SYMLINK', inSize: 0, handler: 'symlink' },
  [Op.MKNOD]: { name: 'MKNOD', inSize: 16, handler: 'mknod' },
  [Op.MKDIR]: { name: 'MKDIR', inSize: 8, handler: 'mkdir' },
  [Op.UNLINK]: { name: 'UNLINK', inSize: 0, handler: 'unlink' },
  [Op.RMDIR]: { name: 'RMDIR', inSize: 0, handler: 'rmdir' },
  [Op.RENAME]: { name: 'RENAME', inSize: 8, handler: 'rename' },
  [Op.LINK]: { name: 'LINK', inSize: 8, handler: 'link' },
  [Op.OPEN]: { name: 'OPEN', inSize: 8, handler: 'open' },
  [Op.READ]: { name: 'READ', inSize: 40, handler: 'read' },
  [Op.WRITE]: { name: 'WRITE', inSize: 40, handler: 'write' },
  [Op.STATFS]: { name: 'STATFS', inSize: 0, handler: 'statfs' },
  [Op.RELEASE]: { name: 'RELEASE', inSize: 24, handler: 'release' },
  [Op.FSYNC]: { name: 'FSYNC', inSize: 16, handler: 'fsync' },
  [Op.SETXATTR]: { name: 'SETXATTR', inSize: 8, handler: 'setxattr' },
  [Op.GETXATTR]: { name: 'GETXATTR', inSize: 8, handler: 'getxattr' },
  [Op.LISTXATTR]: { name: 'LISTXATTR', inSize: 8, handler: 'listxattr' },
  [Op.REMOVEXATTR]: { name: 'REMOVEXATTR', inSize: 0, handler: 'removexattr' },
  [Op.FLUSH]: { name: 'FLUSH', inSize: 24, handler: 'flush' },
  [Op.INIT]: { name: 'INIT', inSize: INIT_IN_COMPAT_SIZE, handler: 'init' },
  [Op.OPENDIR]: { name: 'OPENDIR', inSize: 8, handler: 'opendir' },
  [Op.READDIR]: { name: 'READDIR', inSize: 40, handler: 'readdir' },
  [Op.RELEASEDIR]: { name: 'RELEASEDIR', inSize: 24, handler: 'releasedir' },
  [Op.FSYNCDIR]: { name: 'FSYNCDIR', inSize: 16, handler: 'fsyncdir' },
  // We do not negotiate POSIX_LOCKS or FLOCK_LOCKS, so the kernel keeps locks local and should
  // never send these; ENOSYS is the documented answer if it does.
  [Op.GETLK]: { name: 'GETLK', inSize: 48, handler: null },
  [Op.SETLK]: { name: 'SETLK', inSize: 48, handler: null },
  [Op.SETLKW]: { name: 'SETLKW', inSize: 48, handler: null },
  [Op.ACCESS]: { name: 'ACCESS', inSize: 8, handler: 'access' },
  [Op.CREATE]: { name: 'CREATE', inSize: 16, handler: 'create' },
  [Op.INTERRUPT]: { name: 'INTERRUPT', inSize: 8, handler: 'interrupt', noReply: true },
  [Op.BMAP]: { name: 'BMAP', inSize: 16, handler: null },
  [Op.DESTROY]: { name: 'DESTROY', inSize: 0, handler: 'destroy' },
  [Op.IOCTL]: { name: 'IOCTL', inSize: 32, handler: null },
  [Op.POLL]: { name: 'POLL', inSize: 24, handler: null },
  // Only ever sent in answer to a NOTIFY_RETRIEVE, which we never send; it takes no reply.
  [Op.NOTIFY_REPLY]: { name: 'NOTIFY_REPLY', inSize: 40, handler: null, noReply: true },
  [Op.BATCH_FORGET]: { name: 'BATCH_FORGET', inSize: 8, handler: 'batchForget', noReply: true },
  [Op.FALLOCATE]: { name: 'FALLOCATE', inSize: 32, handler: 'fallocate' },
  [Op.READDIRPLUS]: { name: 'READDIRPLUS', inSize: 40, handler: 'readdir' },
  [Op.RENAME2]: { name: 'RENAME2', inSize: 16, handler: 'rename2' },
  [Op.LSEEK]: { name: 'LSEEK', inSize: 24, handler: 'lseek' },
  [Op.COPY_FILE_RANGE]: { name: 'COPY_FILE_RANGE', inSize: 56, handler: 'copyFileRange' },
  [Op.SETUPMAPPING]: { name: 'SETUPMAPPING', inSize: 40, handler: null },
  [Op.REMOVEMAPPING]: { name: 'REMOVEMAPPING', inSize: 4, handler: null },
  // ENOSYS sets fc->sync_fs = 0 and syncfs(2) then succeeds without asking again (7.34).
  [Op.SYNCFS]: { name: 'SYNCFS', inSize: 8, handler: null },
  // ENOSYS makes open(O_TMPFILE) fail with EOPNOTSUPP (7.37); the Vfs has no tmpfile.
  [Op.TMPFILE]: { name: 'TMPFILE', inSize: 16, handler: null },
  [Op.STATX]: { name: 'STATX', inSize: 24, handler: null },
};

// --- headers ----------------------------------------------------------------------------------

export interface InHeader {
  len: number;
  opcode: number;
  /** Opaque request id; the low bit marks an INTERRUPT's own id (FUSE_INT_REQ_BIT). */
  unique: bigint;
  nodeid: number;
  uid: number;
  gid: number;
  pid: number;
  /** Length of trailing extensions, in 8-byte units (7.36+); they follow the op's arguments. */
  totalExtlen: number;
}

/**
 * fuse_in_header (40): len 0, opcode 4, unique 8, nodeid 16, uid 24, gid 28, pid 32,
 * total_extlen 36 (u16), padding 38.
 */
export function decodeInHeader(r: Reader): InHeader {
  const len = r.u32();
  const opcode = r.u32();
  const unique = r.u64big();
  const nodeid = r.u64();
  const uid = r.u32();
  const gid = r.u32();
  const pid = r.u32();
  const totalExtlen = r.u16();
  r.skip(2);
  return { len, opcode, unique, nodeid, uid, gid, pid, totalExtlen };
}

/** fuse_out_header (16): len 0, error 4 (negative errno or notify code), unique 8. */
export function encodeOutHeader(w: Writer, len: number, error: number, unique: bigint): void {
  w.u32(len).i32(error).u64(unique);
}

// --- request bodies ---------------------------------------------------------------------------

/** A NUL-terminated name; the kernel never sends an empty one or one with '/'. */
function name(r: Reader): string {
  const s = r.cstring();
  if (s.length === 0) throw new ProtocolError('empty name');
  return s;
}

export interface SetattrIn {
  valid: number;
  fh: number;
  size: number;
  atime: { sec: number; nsec: number };
  mtime: { sec: number; nsec: number };
  mode: number;
  uid: number;
  gid: number;
}

/**
 * Decoders of each request body, keyed by handler. Each reads the fixed struct (offsets beside it)
 * then any names or data; a short or malformed body throws ProtocolError and nothing else.
 * 64-bit file handles are numbers: they are our own numbers echoed back.
 */
export const decoders = {
  lookup: (r: Reader) => ({ name: name(r) }),
  // fuse_forget_in (8): nlookup 0
  forget: (r: Reader) => ({ nlookup: r.u64() }),
  // fuse_batch_forget_in (8): count 0, dummy 4; then count x fuse_forget_one (16): nodeid 0, nlookup 8
  batchForget: (r: Reader) => {
    const count = r.u32();
    r.skip(4);
    if (count * 16 > r.remaining) throw new ProtocolError(`BATCH_FORGET of ${count} in ${r.remaining} bytes`);
    const items: Array<{ nodeid: number; nlookup: number }> = [];
    for (let i = 0; i < count; i++) items.push({ nodeid: r.u64(), nlookup: r.u64() });
    return { items };
  },
  // fuse_getattr_in (16): getattr_flags 0, dummy 4, fh 8
  getattr: (r: Reader) => {
    const flags = r.u32();
    r.skip(4);
    return { flags, fh: r.u64() };
  },
  // fuse_setattr_in (88): valid 0, padding 4, fh 8, size 16, lock_owner 24, atime 32, mtime 40,
  // ctime 48, atimensec 56, mtimensec 60, ctimensec 64, mode 68, unused4 72, uid 76, gid 80, unused5 84
  setattr: (r: Reader): SetattrIn => {
    const valid = r.u32();
    r.skip(4);
    const fh = r.u64();
    const size = r.u64();
    r.skip(8);
    // atime/mtime are declared u64 but carry a signed time64_t (times before 1970 are negative)
    const atime = r.i64();
    const mtime = r.i64();
    r.skip(8);
    const atimensec = r.u32();
    const mtimensec = r.u32();
    r.skip(4);
    const mode = r.u32();
    r.skip(4);
    const uid = r.u32();
    const gid = r.u32();
    r.skip(4);
    return { valid, fh, size, atime: { sec: atime, nsec: atimensec }, mtime: { sec: mtime, nsec: mtimensec }, mode, uid, gid };
  },
  readlink: (_r: Reader) => ({}),
  // name, NUL, target, NUL
  symlink: (r: Reader) => ({ name: name(r), target: r.cstring() }),
  // fuse_mknod_in (16): mode 0, rdev 4, umask 8, padding 12; then name
  mknod: (r: Reader) => {
    const mode = r.u32();
    const rdev = r.u32();
    r.skip(8);
    return { mode, rdev, name: name(r) };
  },
  // fuse_mkdir_in (8): mode 0, umask 4; then name
  mkdir: (r: Reader) => {
    const mode = r.u32();
    r.skip(4);
    return { mode, name: name(r) };
  },
  unlink: (r: Reader) => ({ name: name(r) }),
  rmdir: (r: Reader) => ({ name: name(r) }),
  // fuse_rename_in (8): newdir 0; then oldname, newname
  rename: (r: Reader) => ({ newdir: r.u64(), flags: 0, name: name(r), newname: name(r) }),
  // fuse_rename2_in (16): newdir 0, flags 8, padding 12; then oldname, newname
  rename2: (r: Reader) => {
    const newdir = r.u64();
    const flags = r.u32();
    r.skip(4);
    return { newdir, flags, name: name(r), newname: name(r) };
  },
  // fuse_link_in (8): oldnodeid 0; then the new name (in the parent given by the header's nodeid)
  link: (r: Reader) => ({ oldnodeid: r.u64(), name: name(r) }),
  // fuse_open_in (8): flags 0, open_flags 4
  open: (r: Reader) => {
    const flags = r.u32();
    const openFlags = r.u32();
    return { flags, openFlags };
  },
  // fuse_read_in (40): fh 0, offset 8, size 16, read_flags 20, lock_owner 24, flags 32, padding 36
  read: (r: Reader) => {
    const fh = r.u64();
    const offset = r.u64();
    const size = r.u32();
    r.skip(20);
    return { fh, offset, size };
  },
  // fuse_write_in (40): fh 0, offset 8, size 16, write_flags 20, lock_owner 24, flags 32, padding 36;
  // then size bytes of data (a view into the request frame)
  write: (r: Reader) => {
    const fh = r.u64();
    const offset = r.u64();
    const size = r.u32();
    const writeFlags = r.u32();
    r.skip(8);
    const flags = r.u32();
    r.skip(4);
    return { fh, offset, writeFlags, flags, data: r.bytes(size) };
  },
  statfs: (_r: Reader) => ({}),
  // fuse_release_in (24): fh 0, flags 8, release_flags 12, lock_owner 16
  release: (r: Reader) => {
    const fh = r.u64();
    const flags = r.u32();
    const releaseFlags = r.u32();
    r.skip(8);
    return { fh, flags, releaseFlags };
  },
  // fuse_fsync_in (16): fh 0, fsync_flags 8, padding 12
  fsync: (r: Reader) => {
    const fh = r.u64();
    const fsyncFlags = r.u32();
    r.skip(4);
    return { fh, datasync: (fsyncFlags & FUSE_FSYNC_FDATASYNC) !== 0 };
  },
  // fuse_setxattr_in, compat form (8) since we do not negotiate SETXATTR_EXT: size 0, flags 4;
  // then name, NUL, value (size bytes)
  setxattr: (r: Reader) => {
    const size = r.u32();
    const flags = r.u32();
    const n = name(r);
    return { size, flags, name: n, value: r.bytes(size) };
  },
  // fuse_getxattr_in (8): size 0, padding 4; then name
  getxattr: (r: Reader) => {
    const size = r.u32();
    r.skip(4);
    return { size, name: name(r) };
  },
  listxattr: (r: Reader) => {
    const size = r.u32();
    r.skip(4);
    return { size };
  },
  removexattr: (r: Reader) => ({ name: name(r) }),
  // fuse_flush_in (24): fh 0, unused 8, padding 12, lock_owner 16
  flush: (r: Reader) => {
    const fh = r.u64();
    r.skip(16);
    return { fh };
  },
  // fuse_init_in (64, or 16 before 7.36): major 0, minor 4, max_readahead 8, flags 12, flags2 16
  // (valid only with FUSE_INIT_EXT), unused 20..64
  init: (r: Reader) => {
    const major = r.u32();
    const minor = r.u32();
    const maxReadahead = r.u32();
    const flags = r.u32();
    const flags2 = r.remaining >= 4 && (flags & Init.INIT_EXT) !== 0 ? r.u32() : 0;
    return { major, minor, maxReadahead, flags, flags2 };
  },
  opendir: (r: Reader) => {
    const flags = r.u32();
    r.skip(4);
    return { flags };
  },
  // fuse_read_in again (40) for READDIR and READDIRPLUS
  readdir: (r: Reader) => {
    const fh = r.u64();
    const offset = r.u64();
    const size = r.u32();
    r.skip(20);
    return { fh, offset, size };
  },
  releasedir: (r: Reader) => {
    const fh = r.u64();
    r.skip(16);
    return { fh };
  },
  fsyncdir: (r: Reader) => {
    const fh = r.u64();
    const fsyncFlags = r.u32();
    r.skip(4);
    return { fh, datasync: (fsyncFlags & FUSE_FSYNC_FDATASYNC) !== 0 };
  },
  // fuse_access_in (8): mask 0, padding 4
  access: (r: Reader) => {
    const mask = r.u32();
    r.skip(4);
    return { mask };
  },
  // fuse_create_in (16): flags 0, mode 4, umask 8, open_flags 12; then name
  create: (r: Reader) => {
    const flags = r.u32();
    const mode = r.u32();
    r.skip(4);
    const openFlags = r.u32();
    return { flags, mode, openFlags, name: name(r) };
  },
  // fuse_interrupt_in (8): unique 0 (of the request to interrupt)
  interrupt: (r: Reader) => ({ target: r.u64big() }),
  destroy: (_r: Reader) => ({}),
  // fuse_fallocate_in (32): fh 0, offset 8, length 16, mode 24, padding 28
  fallocate: (r: Reader) => {
    const fh = r.u64();
    const offset = r.u64();
    const length = r.u64();
    const mode = r.u32();
    r.skip(4);
    return { fh, offset, length, mode };
  },
  // fuse_lseek_in (24): fh 0, offset 8, whence 16, padding 20
  lseek: (r: Reader) => {
    const fh = r.u64();
    const offset = r.u64();
    const whence = r.u32();
    r.skip(4);
    return { fh, offset, whence };
  },
  // fuse_copy_file_range_in (56): fh_in 0, off_in 8, nodeid_out 16, fh_out 24, off_out 32, len 40,
  // flags 48. len may be anything up to SIZE_MAX from userspace: clamp it rather than refuse.
  copyFileRange: (r: Reader) => {
    const fhIn = r.u64();
    const offIn = r.u64();
    const nodeOut = r.u64();
    const fhOut = r.u64();
    const offOut = r.u64();
    const len = r.u64big();
    const flags = r.u64big();
    return { fhIn, offIn, nodeOut, fhOut, offOut, len: Number(len > MAX_SAFE ? MAX_SAFE : len), flags };
  },
} satisfies Record<string, (r: Reader) => unknown>;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export type Decoded<K extends HandlerKey> = ReturnType<(typeof decoders)[K]>;

// --- reply bodies -----------------------------------------------------------------------------

/** A timeout in seconds as the (u64 seconds, u32 nanoseconds) pair the kernel wants. */
export function splitTimeout(s: number): { sec: number; nsec: number } {
  if (!(s > 0)) return { sec: 0, nsec: 0 };
  const sec = Math.floor(s);
  return { sec, nsec: Math.min(999_999_999, Math.round((s - sec) * 1e9)) };
}

/**
 * fuse_attr (88): ino 0, size 8, blocks 16, atime 24, mtime 32, ctime 40, atimensec 48,
 * mtimensec 52, ctimensec 56, mode 60, nlink 64, uid 68, gid 72, rdev 76, blksize 80, flags 84.
 * Times are written signed: the kernel reads them back into a signed time64_t.
 */
export function encodeAttr(w: Writer, a: Attr): void {
  w.u64(a.ino).u64(a.size).u64(a.blocks);
  w.i64(a.atime.sec).i64(a.mtime.sec).i64(a.ctime.sec);
  w.u32(a.atime.nsec).u32(a.mtime.nsec).u32(a.ctime.nsec);
  w.u32(a.mode).u32(a.nlink).u32(a.uid).u32(a.gid).u32(a.rdev).u32(a.blksize).u32(0);
}

const ZERO_ATTR: Attr = {
  ino: 0, size: 0, blocks: 0, mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0, blksize: 0,
  atime: { sec: 0, nsec: 0 }, mtime: { sec: 0, nsec: 0 }, ctime: { sec: 0, nsec: 0 },
};

/**
 * fuse_entry_out (128): nodeid 0, generation 8, entry_valid 16, attr_valid 24,
 * entry_valid_nsec 32, attr_valid_nsec 36, attr 40. A null entry (nodeid 0, zero attributes) is
 * what READDIRPLUS sends for "." and ".."; the kernel then makes no dentry for it.
 */
export function encodeEntryOut(w: Writer, e: Entry | null, entryValidS: number, attrValidS: number): void {
  const ev = splitTimeout(entryValidS);
  const av = splitTimeout(attrValidS);
  if (!e) {
    w.zeros(40);
    encodeAttr(w, ZERO_ATTR);
    return;
  }
  w.u64(e.nodeid).u64(e.generation).u64(ev.sec).u64(av.sec).u32(ev.nsec).u32(av.nsec);
  encodeAttr(w, e.attr);
}

/** A negative entry (nodeid 0): the kernel caches the name's absence for entryValidS (fs/fuse/dir.c). */
export function encodeNegativeEntryOut(w: Writer, entryValidS: number): void {
  const ev = splitTimeout(entryValidS);
  w.u64(0).u64(0).u64(ev.sec).u64(0).u32(ev.nsec).u32(0);
  encodeAttr(w, ZERO_ATTR);
}

/** fuse_attr_out (104): attr_valid 0, attr_valid_nsec 8, dummy 12, attr 16. */
export function encodeAttrOut(w: Writer, a: Attr, attrValidS: number): void {
  const av = splitTimeout(attrValidS);
  w.u64(av.sec).u32(av.nsec).u32(0);
  encodeAttr(w, a);
}

/** fuse_open_out (16): fh 0, open_flags 4, padding 12. */
export function encodeOpenOut(w: Writer, fh: number, openFlags: number): void {
  w.u64(fh).u32(openFlags).u32(0);
}

export interface InitOut {
  major: number;
  minor: number;
  maxReadahead: number;
  flags: number;
  flags2: number;
  maxBackground: number;
  congestionThreshold: number;
  maxWrite: number;
  timeGran: number;
  maxPages: number;
}

/**
 * fuse_init_out (64): major 0, minor 4, max_readahead 8, flags 12, max_background 16 (u16),
 * congestion_threshold 18 (u16), max_write 20, time_gran 24, max_pages 28 (u16),
 * map_alignment 30 (u16), flags2 32, unused 36..64.
 */
export function encodeInitOut(w: Writer, o: InitOut): void {
  w.u32(o.major).u32(o.minor).u32(o.maxReadahead).u32(o.flags);
  w.u16(o.maxBackground).u16(o.congestionThreshold).u32(o.maxWrite).u32(o.timeGran);
  w.u16(o.maxPages).u16(0).u32(o.flags2).zeros(28);
}

/**
 * fuse_kstatfs (80): blocks 0, bfree 8, bavail 16, files 24, ffree 32, bsize 40, namelen 44,
 * frsize 48, padding 52, spare 56..80.
 */
export function encodeStatfs(w: Writer, s: StatFs): void {
  w.u64(s.blocks).u64(s.bfree).u64(s.bavail).u64(s.files).u64(s.ffree);
  w.u32(s.bsize).u32(s.namelen).u32(s.frsize).zeros(28);
}

/** fuse_write_out (8), also the COPY_FILE_RANGE reply: size 0, padding 4. */
export function encodeWriteOut(w: Writer, size: number): void {
  w.u32(size).u32(0);
}

/** fuse_getxattr_out (8): size 0, padding 4 (the answer to a size probe). */
export function encodeGetxattrOut(w: Writer, size: number): void {
  w.u32(size).u32(0);
}

/** fuse_lseek_out (8): offset 0. */
export function encodeLseekOut(w: Writer, offset: number): void {
  w.u64(offset);
}

/**
 * fuse_dirent (24 + name, padded to 8): ino 0, off 8, namelen 16, type 20 (DT_*, i.e. the S_IFMT
 * bits shifted down 12), name 24.
 */
export function encodeDirent(w: Writer, ino: number, off: number, type: number, nameBytes: Buffer): void {
  w.u64(ino).u64(off).u32(nameBytes.length).u32((type >>> 12) & 0xf).bytes(nameBytes);
  w.align(8);
}

/** fuse_direntplus: fuse_entry_out (128) then fuse_dirent (24 + name), padded to 8. */
export function encodeDirentplus(
  w: Writer, entry: Entry | null, entryValidS: number, attrValidS: number,
  ino: number, off: number, type: number, nameBytes: Buffer,
): void {
  encodeEntryOut(w, entry, entryValidS, attrValidS);
  encodeDirent(w, ino, off, type, nameBytes);
}

/** fuse_notify_inval_inode_out (24): ino 0, off 8 (i64), len 16 (i64). */
export function encodeNotifyInvalInode(w: Writer, ino: number, off: number, len: number): void {
  w.u64(ino).i64(off).i64(len);
}

/** fuse_notify_store_out (24): nodeid 0, offset 8, size 16, padding 20; the bytes follow. */
export function encodeNotifyStore(w: Writer, nodeid: number, offset: number, size: number): void {
  w.u64(nodeid).u64(offset).u32(size).u32(0);
}

/** fuse_notify_inval_entry_out (16): parent 0, namelen 8, flags 12; then name and NUL. */
export function encodeNotifyInvalEntry(w: Writer, parent: number, nameBytes: Buffer): void {
  w.u64(parent).u32(nameBytes.length).u32(0).bytes(nameBytes).u8(0);
}

/** fuse_notify_delete_out (24): parent 0, child 8, namelen 16, padding 20; then name and NUL. */
export function encodeNotifyDelete(w: Writer, parent: number, child: number, nameBytes: Buffer): void {
  w.u64(parent).u64(child).u32(nameBytes.length).u32(0).bytes(nameBytes).u8(0);
}
