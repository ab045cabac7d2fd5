// Confinement of a path-based source to its root. PassthroughFs knows files by path (Node has no
// openat), and a local process on the server may swap a directory on such a path for a symlink
// between the source's check and its use: a plain path call would then follow it out of the tree.
//
// Beneath runs every path call so that the kernel resolves the path beneath the root and follows
// no symlink on the way: the directory part is opened with openat2(rootfd, dir, O_PATH,
// RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS) and the call is made on
// /proc/self/fd/N/<name>, so only the final component is looked up by the call itself, which uses
// its own no-follow semantics (lstat, lchown, O_NOFOLLOW, unlink, rename...). Calls that would
// follow a final symlink (stat, chmod, readdir, statfs, open without O_NOFOLLOW) get the whole path
// resolved that way instead and act on /proc/self/fd/N itself: the inode that was found beneath
// the root, never a symlink's target. A swapped-in symlink fails the call with ELOOP.
//
// Without the native addon there is no openat2 from Node: the calls run on the plain paths and a
// warning says the export is not confined against such swaps.
//
// The pinning (openat2, close) and the calls themselves (hostfs.ts) run on the calling thread: a
// path call is then three quick system calls instead of three trips through the libuv pool.

import fs from 'node:fs';
import type { BigIntStats, StatsFs } from 'node:fs';
import * as fsp from './hostfs.js';
import type { FileHandle } from './hostfs.js';
import { Errno, FsError } from '../lib/errno.js';
import { logger } from '../lib/log.js';
import { nativeSys, sysLoadError, type Sys } from '../lib/sys.js';
import { O_NOFOLLOW } from '../vfs/types.js';

const log = logger('sources');
const O_DIRECTORY = 0o200000;
/** O_TMPFILE as Linux defines it on every architecture Node runs on (it includes O_DIRECTORY). */
const O_TMPFILE = 0o20000000 | O_DIRECTORY;
const AT_FDCWD = -100;
const AT_SYMLINK_FOLLOW = 0x400;

function closeQuietly(fd: number): void {
  try {
    fs.closeSync(fd);
  } catch {
    // an O_PATH fd we opened: nothing to report
  }
}

export class Beneath {
  private rootFd = -1;
  /** Without the addon, plain paths; until the root is open, every call fails (fail closed). */
  private plain = false;
  private readonly sys: Sys | undefined;
  private readonly prefix: string;

  constructor(readonly root: string) {
    this.sys = nativeSys();
    this.prefix = root === '/' ? '/' : `${root}/`;
  }

  /** Opens the root (once, before any other call). Plain paths are used if the addon is missing. */
  async start(): Promise<void> {
    const sys = this.sys;
    if (!sys) {
      this.plain = true;
      log.warn(`${this.root}: native addon not loaded (${sysLoadError() ?? ''}); paths are not confined against symlink swaps`);
      return;
    }
    // A raw fd, not a FileHandle: a FileHandle closes itself when garbage collected.
    this.rootFd = await new Promise<number>((resolve, reject) => {
      fs.open(this.root, sys.O_PATH | O_DIRECTORY, (err, fd) => (err ? reject(err) : resolve(fd)));
    });
  }

  close(): void {
    if (this.rootFd >= 0) closeQuietly(this.rootFd);
    this.rootFd = -1;
  }

  private get resolve(): number {
    const s = this.sys!;
    return s.RESOLVE_BENEATH | s.RESOLVE_NO_SYMLINKS | s.RESOLVE_NO_MAGICLINKS;
  }

  /** The path below the root ('' for the root itself); anything else is a bug, refused with EIO. */
  private rel(p: string): string {
    if (p === this.root) return '';
    if (!p.startsWith(this.prefix)) throw new FsError(Errno.EIO, `path ${p} is not under ${this.root}`);
    return p.slice(this.prefix.length);
  }

  /** Every confined call fails closed until start() has opened the root (or after close()). */
  private mustBeOpen(): void {
    if (this.rootFd < 0) throw new FsError(Errno.ENOENT, `export root ${this.root} is not open`);
  }

  /** An O_PATH fd for rel resolved beneath the root (the caller closes it), or the root's own. */
  private pin(rel: string, dir: boolean): number {
    if (rel === '') return this.rootFd;
    const s = this.sys!;
    return s.openat2Sync(this.rootFd, rel, s.O_PATH | (dir ? O_DIRECTORY : 0), 0, this.resolve);
  }

  /**
   * Runs fn on a path whose directory part is pinned beneath the root; the final component is left
   * to fn's call. The final component may not be "." or "..": that would walk back up from the pin.
   */
  async child<T>(p: string, fn: (safe: string) => Promise<T>): Promise<T> {
    if (this.plain) return fn(p);
    this.mustBeOpen();
    const rel = this.rel(p);
    if (rel === '') return fn(`/proc/self/fd/${this.rootFd}/.`);
    const { fd, name } = this.parent(rel);
    try {
      return await fn(`/proc/self/fd/${fd}/${name}`);
    } finally {
      if (fd !== this.rootFd) closeQuietly(fd);
    }
  }

  /**
   * As child, for a call that takes a directory fd and a name (an *at call): no walk through
   * /proc/self/fd for the name, which cost as much again as the pinning.
   */
  private at<T>(p: string, fn: (dirfd: number, name: string) => T): T {
    const { fd, name } = this.parent(this.rel(p));
    try {
      return fn(fd, name);
    } finally {
      if (fd !== this.rootFd) closeQuietly(fd);
    }
  }

  /** The directory part of rel pinned (the caller closes the fd unless it is the root's) and the final name. */
  private parent(rel: string): { fd: number; name: string } {
    const slash = rel.lastIndexOf('/');
    const name = rel.slice(slash + 1);
    if (name === '.' || name === '..' || name === '') throw new FsError(Errno.EINVAL);
    return { fd: this.pin(slash < 0 ? '' : rel.slice(0, slash), true), name };
  }

  /** Runs fn on the very inode at p, found beneath the root without following any symlink. */
  async whole<T>(p: string, fn: (safe: string) => Promise<T>, dir = false): Promise<T> {
    if (this.plain) return fn(p);
    this.mustBeOpen();
    const fd = this.pin(this.rel(p), dir);
    try {
      return await fn(`/proc/self/fd/${fd}`);
    } finally {
      if (fd !== this.rootFd) closeQuietly(fd);
    }
  }

  // --- the path calls PassthroughFs makes, each with the resolution it needs ---------------------

  lstat(p: string): Promise<BigIntStats> {
    return this.child(p, (s) => fsp.lstat(s, { bigint: true }));
  }
  /**
   * lstat of each name in directory p, the directory pinned once for all (a listing's attributes):
   * undefined for a name that is gone or cannot be read.
   */
  async lstatIn(p: string, names: string[]): Promise<(BigIntStats | undefined)[]> {
    if (names.length === 0) return [];
    const one = (full: string): BigIntStats | undefined => {
      try {
        return fs.lstatSync(full, { bigint: true, throwIfNoEntry: false });
      } catch {
        return undefined;
      }
    };
    const valid = (name: string): boolean => name !== '' && name !== '.' && name !== '..' && !name.includes('/');
    if (this.plain) return names.map((name) => (valid(name) ? one(p === '/' ? `/${name}` : `${p}/${name}`) : undefined));
    this.mustBeOpen();
    let fd: number;
    try {
      fd = this.pin(this.rel(p), true);
    } catch {
      return names.map(() => undefined); // the directory itself is gone: so are its names
    }
    try {
      return names.map((name) => (valid(name) ? one(`/proc/self/fd/${fd}/${name}`) : undefined));
    } finally {
      if (fd !== this.rootFd) closeQuietly(fd);
    }
  }
  stat(p: string): Promise<BigIntStats> {
    return this.whole(p, (s) => fsp.stat(s, { bigint: true }));
  }
  lchown(p: string, uid: number, gid: number): Promise<void> {
    return this.child(p, (s) => fsp.lchown(s, uid, gid));
  }
  /** chmod on the inode itself: a symlink swapped in under the name fails with ELOOP. */
  chmod(p: string, mode: number): Promise<void> {
    return this.whole(p, (s) => fsp.chmod(s, mode));
  }
  /** With O_NOFOLLOW (or O_CREAT) the final name is the call's; otherwise the inode is pinned first. */
  open(p: string, flags: number, mode?: number): Promise<FileHandle> {
    if (flags & (O_NOFOLLOW | fs.constants.O_CREAT)) return this.child(p, (s) => fsp.open(s, flags | O_NOFOLLOW, mode));
    return this.whole(p, (s) => fsp.open(s, flags, mode));
  }
  /**
   * A new file without a name (O_TMPFILE) in directory p, open for reading and writing: named later
   * by linkIn, or gone when closed. EOPNOTSUPP without the addon (linkIn needs it) or where the
   * file system cannot (the caller then creates files by name as before).
   */
  async tmpfile(p: string, mode: number): Promise<FileHandle> {
    const sys = this.sys;
    if (this.plain || !sys?.linkatSync) throw new FsError(Errno.EOPNOTSUPP, 'no linkat: native addon missing or old');
    this.mustBeOpen();
    // One openat2 that resolves the directory beneath the root and makes the file in it.
    return new fsp.HostFile(sys.openat2Sync(this.rootFd, this.rel(p) || '.', O_TMPFILE | fs.constants.O_RDWR, mode, this.resolve));
  }
  /** Names the unnamed file open as fd at p (EEXIST if the name is taken): linkat, no name followed. */
  async linkIn(fd: number, p: string): Promise<void> {
    const sys = this.sys;
    if (this.plain || !sys?.linkatSync) throw new FsError(Errno.EOPNOTSUPP);
    this.mustBeOpen();
    this.at(p, (dirfd, name) => sys.linkatSync!(AT_FDCWD, `/proc/self/fd/${fd}`, dirfd, name, AT_SYMLINK_FOLLOW));
  }
  readlink(p: string): Promise<string> {
    return this.child(p, (s) => fsp.readlink(s));
  }
  readdir(p: string): Promise<string[]> {
    return this.whole(p, (s) => fsp.readdir(s), true);
  }
  statfs(p: string): Promise<StatsFs> {
    return this.whole(p, (s) => fsp.statfs(s));
  }
  mkdir(p: string, mode: number): Promise<void> {
    return this.child(p, (s) => fsp.mkdir(s, mode).then(() => undefined));
  }
  symlink(target: string, p: string): Promise<void> {
    return this.child(p, (s) => fsp.symlink(target, s));
  }
  /** linkat without AT_SYMLINK_FOLLOW: neither name is followed. */
  link(from: string, to: string): Promise<void> {
    return this.child(from, (a) => this.child(to, (b) => fsp.link(a, b)));
  }
  unlink(p: string): Promise<void> {
    return this.child(p, (s) => fsp.unlink(s));
  }
  rmdir(p: string): Promise<void> {
    return this.child(p, (s) => fsp.rmdir(s));
  }
  rename(from: string, to: string): Promise<void> {
    return this.child(from, (a) => this.child(to, (b) => fsp.rename(a, b)));
  }
  lutimes(p: string, atime: number, mtime: number): Promise<void> {
    return this.child(p, (s) => fsp.lutimes(s, atime, mtime));
  }
}
