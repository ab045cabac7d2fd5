// The host file system calls the passthrough source makes, with the shape of node:fs/promises but
// run synchronously on the calling thread for everything that is metadata or a small transfer.
//
// Why: each call through libuv's pool costs a wake-up of a pool thread and another of the loop,
// 50 to 90 microseconds here, while lstat(2) of a cached inode takes 2 to 8. A served request is a
// few such calls in sequence (create = open, lstat of the parent, lchown, chmod, fstat), so the hop
// dominated every small operation. What may take long stays on the pool: fsync, and transfers
// above SYNC_IO_MAX. The cost is that a metadata call that misses the host's caches stalls the
// event loop for that disk access; serving one file system from one process, that is the
// trade NFS servers make too (knfsd threads block in the same calls).
//
// Every function is async so that a failure rejects (like fs/promises) instead of throwing.

import { Errno, FsError } from '../lib/errno.js';
import fs, { type BigIntStats, type Dirent, type Stats, type StatsFs } from 'node:fs';

/** Reads and writes up to this size run synchronously; larger ones go to the pool. */
export const SYNC_IO_MAX = 128 * 1024;

type TimeLike = number | Date;

/** An open host file: the subset of fs/promises' FileHandle the sources use. */
export class HostFile {
  private open = true;
  constructor(readonly fd: number) {}

  async stat(opts: { bigint: true }): Promise<BigIntStats> {
    return fs.fstatSync(this.fd, opts);
  }
  async chmod(mode: number): Promise<void> {
    fs.fchmodSync(this.fd, mode);
  }
  async chown(uid: number, gid: number): Promise<void> {
    fs.fchownSync(this.fd, uid, gid);
  }
  async truncate(len: number): Promise<void> {
    fs.ftruncateSync(this.fd, len);
  }
  async utimes(atime: TimeLike, mtime: TimeLike): Promise<void> {
    fs.futimesSync(this.fd, atime, mtime);
  }
  read(buf: Buffer, off: number, len: number, pos: number): Promise<{ bytesRead: number }> {
    if (len <= SYNC_IO_MAX) {
      try {
        return Promise.resolve({ bytesRead: fs.readSync(this.fd, buf, off, len, pos) });
      } catch (err) {
        return Promise.reject(err as Error);
      }
    }
    return new Promise((resolve, reject) => {
      fs.read(this.fd, buf, off, len, pos, (err, bytesRead) => (err ? reject(err) : resolve({ bytesRead })));
    });
  }
  write(buf: Buffer, off: number, len: number, pos: number): Promise<{ bytesWritten: number }> {
    if (len <= SYNC_IO_MAX) {
      try {
        return Promise.resolve({ bytesWritten: fs.writeSync(this.fd, buf, off, len, pos) });
      } catch (err) {
        return Promise.reject(err as Error);
      }
    }
    return new Promise((resolve, reject) => {
      fs.write(this.fd, buf, off, len, pos, (err, bytesWritten) => (err ? reject(err) : resolve({ bytesWritten })));
    });
  }
  /** pwritev(2) on the pool: the buffers one after the other at pos; resolves with the bytes written. */
  writev(bufs: Buffer[], pos: number): Promise<number> {
    return new Promise((resolve, reject) => {
      fs.writev(this.fd, bufs, pos, (err, bytesWritten) => (err ? reject(err) : resolve(bytesWritten)));
    });
  }
  sync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fsync(this.fd, (err) => (err ? reject(err) : resolve())));
  }
  datasync(): Promise<void> {
    return new Promise((resolve, reject) => fs.fdatasync(this.fd, (err) => (err ? reject(err) : resolve())));
  }
  async close(): Promise<void> {
    if (!this.open) return;
    this.open = false;
    fs.closeSync(this.fd);
  }
}

export type FileHandle = HostFile;

export async function open(p: string, flags: number, mode?: number): Promise<HostFile> {
  return new HostFile(fs.openSync(p, flags, mode));
}
export function lstat(p: string, opts: { bigint: true }): Promise<BigIntStats>;
export function lstat(p: string): Promise<Stats>;
export async function lstat(p: string, opts?: { bigint: true }): Promise<BigIntStats | Stats> {
  // A missing name is the common failure (every create starts with a negative lookup): report it
  // without building a Node system error and its message.
  const st = opts ? fs.lstatSync(p, { ...opts, throwIfNoEntry: false }) : fs.lstatSync(p, { throwIfNoEntry: false });
  if (!st) throw new FsError(Errno.ENOENT);
  return st;
}
export function stat(p: string, opts: { bigint: true }): Promise<BigIntStats>;
export function stat(p: string): Promise<Stats>;
export async function stat(p: string, opts?: { bigint: true }): Promise<BigIntStats | Stats> {
  return opts ? fs.statSync(p, opts) : fs.statSync(p);
}
export async function statfs(p: string): Promise<StatsFs> {
  return fs.statfsSync(p);
}
export async function chmod(p: string, mode: number): Promise<void> {
  fs.chmodSync(p, mode);
}
export async function lchown(p: string, uid: number, gid: number): Promise<void> {
  fs.lchownSync(p, uid, gid);
}
export async function lutimes(p: string, atime: TimeLike, mtime: TimeLike): Promise<void> {
  fs.lutimesSync(p, atime, mtime);
}
export async function link(existing: string, p: string): Promise<void> {
  fs.linkSync(existing, p);
}
export async function symlink(target: string, p: string): Promise<void> {
  fs.symlinkSync(target, p);
}
export async function readlink(p: string): Promise<string> {
  return fs.readlinkSync(p);
}
export async function mkdir(p: string, mode: number): Promise<void> {
  fs.mkdirSync(p, mode);
}
export async function rename(from: string, to: string): Promise<void> {
  fs.renameSync(from, to);
}
export async function unlink(p: string): Promise<void> {
  fs.unlinkSync(p);
}
export async function rmdir(p: string): Promise<void> {
  fs.rmdirSync(p);
}
export function readdir(p: string): Promise<string[]>;
export function readdir(p: string, opts: { withFileTypes: true }): Promise<Dirent[]>;
export async function readdir(p: string, opts?: { withFileTypes: true }): Promise<string[] | Dirent[]> {
  return opts ? fs.readdirSync(p, opts) : fs.readdirSync(p);
}
