// The typed face of the native addon (native/wirefs_sys.c, built by node-gyp at npm install): the
// Linux calls Node core lacks (including openat2, which keeps the passthrough source in its tree). Every function is asynchronous (the libuv pool) and rejects with an
// Error carrying `code` (errno name) and `errno` (positive), which toErrno() understands.

import { createRequire } from 'node:module';
import { FsError, Errno } from './errno.js';

export interface Sys {
  /** renameat2(2) with RENAME_NOREPLACE (1) / RENAME_EXCHANGE (2) / RENAME_WHITEOUT (4). */
  renameat2(oldPath: string, newPath: string, flags: number): Promise<void>;
  /** mknod(2): mode carries the S_IFMT type; rdev is the encoded dev_t (makedev). */
  mknod(path: string, mode: number, rdev: number): Promise<void>;
  fallocate(fd: number, mode: number, offset: number, length: number): Promise<void>;
  /** lseek(2) on a raw fd, for SEEK_DATA (3) and SEEK_HOLE (4). Moves the fd's file position. */
  lseek(fd: number, offset: number, whence: number): Promise<number>;
  lgetxattr(path: string, name: string): Promise<Buffer>;
  lsetxattr(path: string, name: string, value: Buffer, flags: number): Promise<void>;
  /** The raw NUL-separated list; see splitXattrList. */
  llistxattr(path: string): Promise<Buffer>;
  lremovexattr(path: string, name: string): Promise<void>;
  fgetxattr(fd: number, name: string): Promise<Buffer>;
  fsetxattr(fd: number, name: string, value: Buffer, flags: number): Promise<void>;
  flistxattr(fd: number): Promise<Buffer>;
  fremovexattr(fd: number, name: string): Promise<void>;
  /** utimensat(2) on a path; nsec may be UTIME_NOW or UTIME_OMIT. */
  utimensat(path: string, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number, nofollow: boolean): Promise<void>;
  futimens(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): Promise<void>;
  readonly UTIME_NOW: number;
  readonly UTIME_OMIT: number;
  /** openat2(2): opens path relative to dirfd under the RESOLVE_* rules; resolves with the fd (O_CLOEXEC). */
  openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): Promise<number>;
  /** openat2(2) on the calling thread (throws like the async one): for short resolutions in hot paths. */
  openat2Sync(dirfd: number, path: string, flags: number, mode: number, resolve: number): number;
  /**
   * preadv2(2) with RWF_NOWAIT on the calling thread, into buffer[offset, offset+length): the bytes
   * read (0 at end of file), or -errno (EAGAIN: not all in the page cache; EOPNOTSUPP: the file
   * system cannot say). Never waits for a disk.
   */
  preadNowaitSync(fd: number, buffer: Buffer, offset: number, length: number, position: number): number;
  /** malloc_trim(0): returns freed heap pages to the system; true if any were released. */
  mallocTrim(): boolean;
  /**
   * mallopt: blocks above mmapMb MiB get their own mapping, free heap tops above trimMb MiB go back
   * to the system; true if both took (absent from addons built before it).
   */
  mallocTune?(mmapMb: number, trimMb: number): boolean;
  /** futimens(2) on the calling thread (throws like the async one): an open file's inode only. */
  futimensSync(fd: number, atimeSec: number, atimeNsec: number, mtimeSec: number, mtimeNsec: number): void;
  /**
   * pwrite(2) of buffer[0, length) at position, on a pool thread running under SCHED_IDLE for the
   * call: for writes no one waits for, which should take only CPU time nothing else wants.
   */
  pwriteIdle(fd: number, buffer: Buffer, length: number, position: number): Promise<number>;
  /**
   * linkat(2) on the calling thread (absent from addons built before it): names an unnamed
   * (O_TMPFILE) file through its /proc/self/fd link with AT_SYMLINK_FOLLOW.
   */
  linkatSync?(oldDirfd: number, oldPath: string, newDirfd: number, newPath: string, flags: number): void;
  /**
   * sync_file_range(2) on the pool: with SYNC_FILE_RANGE_WRITE (2), starts writeback of the dirty
   * pages in [offset, offset+nbytes) (nbytes 0: to the end) without waiting for it (absent from
   * addons built before it).
   */
  syncFileRange?(fd: number, offset: number, nbytes: number, flags: number): Promise<void>;
  /** chmod that never follows a symlink (EOPNOTSUPP on one), by an O_PATH fd. */
  lchmod(path: string, mode: number): Promise<void>;
  readonly RESOLVE_BENEATH: number;
  readonly RESOLVE_NO_MAGICLINKS: number;
  readonly RESOLVE_NO_SYMLINKS: number;
  readonly O_PATH: number;
}

// From dist/src/lib/sys.js the repository root is three levels up; node-gyp builds into build/Release.
const ADDON = '../../../build/Release/wirefs_sys.node';

let cached: Sys | undefined;
let loadError: string | undefined;

/** The addon, or undefined (with the reason in sysLoadError()) if it was not built. */
export function nativeSys(): Sys | undefined {
  if (cached || loadError) return cached;
  try {
    cached = createRequire(import.meta.url)(ADDON) as Sys;
  } catch (err) {
    loadError = err instanceof Error ? err.message.split('\n')[0] : String(err);
  }
  return cached;
}

export function sysLoadError(): string | undefined {
  nativeSys();
  return loadError;
}

/** The addon, or an FsError(EOPNOTSUPP) saying it is missing: for operations that need it. */
export function requireSys(): Sys {
  const s = nativeSys();
  if (!s) throw new FsError(Errno.EOPNOTSUPP, `native addon not built (run npm install): ${loadError ?? ''}`);
  return s;
}

/** Splits listxattr's NUL-terminated names. */
export function splitXattrList(raw: Buffer): string[] {
  return raw.toString('utf8').split('\0').filter((s) => s !== '');
}
