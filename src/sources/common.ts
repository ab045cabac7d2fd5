// Helpers shared by the sources: name checks, clock, permission checks against a caller's identity,
// and the small bookkeeping (fh allocation, readdir snapshots) every source needs the same way.

import { Errno, FsError } from '../lib/errno.js';
import { S_IFDIR, S_IFMT, type Attr, type Ctx, type Timespec } from '../vfs/types.js';

/** NAME_MAX of Linux file systems, in bytes of the UTF-8 name. */
export const NAME_MAX = 255;
/** PATH_MAX, the longest symlink target Linux accepts. */
export const PATH_MAX = 4096;
export const XATTR_NAME_MAX = 255;
export const XATTR_SIZE_MAX = 65536;

/**
 * Throws the errno Linux gives for a bad directory entry name. The kernel never sends "", "." or
 * names with "/", but a Vfs is also called directly (tests, the server), so it checks anyway.
 */
export function checkName(name: string): void {
  if (name === '' || name.includes('/') || name.includes('\0')) throw new FsError(Errno.EINVAL);
  if (Buffer.byteLength(name) > NAME_MAX) throw new FsError(Errno.ENAMETOOLONG);
}

/** Linux refuses an empty or over-long xattr name with ERANGE, a value over 64 KiB with E2BIG. */
export function checkXattr(name: string, value?: Buffer): void {
  const len = Buffer.byteLength(name);
  if (len === 0 || len > XATTR_NAME_MAX) throw new FsError(Errno.ERANGE);
  if (value && value.length > XATTR_SIZE_MAX) throw new FsError(Errno.E2BIG);
}

// Wall-clock time with nanosecond resolution: Date.now() anchors the monotonic hrtime once, so
// two changes in the same millisecond still get distinct, ordered timestamps.
const hrBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();
export function nowNs(): bigint {
  return hrBase + process.hrtime.bigint();
}
export function now(): Timespec {
  return nsToTimespec(nowNs());
}
export function nsToTimespec(ns: bigint): Timespec {
  const sec = ns / 1_000_000_000n;
  let nsec = ns % 1_000_000_000n;
  // Times before 1970 give a negative remainder; keep nsec in [0, 1e9).
  if (nsec < 0n) return { sec: Number(sec) - 1, nsec: Number(nsec + 1_000_000_000n) };
  return { sec: Number(sec), nsec: Number(nsec) };
}
export function timespecToNs(t: Timespec): bigint {
  return BigInt(t.sec) * 1_000_000_000n + BigInt(t.nsec);
}
export function checkTimespec(t: Timespec): void {
  if (!Number.isSafeInteger(t.sec) || !Number.isInteger(t.nsec) || t.nsec < 0 || t.nsec >= 1e9) {
    throw new FsError(Errno.EINVAL);
  }
}

export const F_OK = 0;
export const X_OK = 1;
export const W_OK = 2;
export const R_OK = 4;

/**
 * access(2) against the caller's uid and primary gid (the FUSE request carries no supplementary
 * groups). Root may read and write anything and execute anything with an x bit, or any directory.
 */
export function checkAccess(attr: Pick<Attr, 'mode' | 'uid' | 'gid'>, ctx: Ctx, mask: number): void {
  if ((mask & ~7) !== 0) throw new FsError(Errno.EINVAL);
  if (mask === F_OK) return;
  const mode = attr.mode;
  if (ctx.uid === 0) {
    if ((mask & X_OK) && (mode & S_IFMT) !== S_IFDIR && (mode & 0o111) === 0) throw new FsError(Errno.EACCES);
    return;
  }
  let bits: number;
  if (ctx.uid === attr.uid) bits = (mode >> 6) & 7;
  else if (ctx.gid === attr.gid) bits = (mode >> 3) & 7;
  else bits = mode & 7;
  if ((bits & mask) !== mask) throw new FsError(Errno.EACCES);
}

/** Validates rename flags: only NOREPLACE (1) and EXCHANGE (2), never both. */
export function checkRenameFlags(flags: number): void {
  if ((flags & ~3) !== 0 || flags === 3) throw new FsError(Errno.EINVAL);
}

/** Allocates small positive handle numbers; freed numbers are not reused for a long while. */
export class HandleTable<T> {
  private next = 1;
  private readonly map = new Map<number, T>();
  add(value: T): number {
    const fh = this.next++;
    this.map.set(fh, value);
    return fh;
  }
  get(fh: number | undefined): T {
    const v = fh === undefined ? undefined : this.map.get(fh);
    if (v === undefined) throw new FsError(Errno.EBADF);
    return v;
  }
  find(fh: number | undefined): T | undefined {
    return fh === undefined ? undefined : this.map.get(fh);
  }
  delete(fh: number): T | undefined {
    const v = this.map.get(fh);
    this.map.delete(fh);
    return v;
  }
  values(): IterableIterator<T> {
    return this.map.values();
  }
  clear(): void {
    this.map.clear();
  }
}
