// ExtRwFs: ext2, ext3 and ext4 images and block devices, read-write, through e2fsprogs' libext2fs
// (the optional addon native/ext2fs/wirefs_ext2fs.c). libext2fs does the format (allocation,
// extents, htree directories, checksums, xattr blocks); this file does the Vfs semantics on top:
// node ids, lookup counts and open handles, POSIX checks and errnos, times with nanoseconds, link
// counts, rename, and deferred freeing of unlinked-but-open inodes (fuse2fs frees at unlink; a
// network file system must not, since other clients may still read an open file).
//
// How it stays consistent: every operation runs alone under one async mutex (libext2fs is not
// thread-safe and many clients may share one server); bitmaps, group descriptors and the
// superblock go to the image at fsync, a few seconds after a change, and at close(). While served
// read-write the superblock's "valid" state bit is cleared (as the kernel and fuse2fs do), so a
// server that dies leaves an image e2fsck insists on checking; close() sets it again. The journal is
// not used (neither does fuse2fs): an image whose journal needs recovery is refused for writing.
// An inode libext2fs finds damaged (bad checksum, bad extent tree) is an EIO, and no later change
// to it is attempted, so damage is never spread.

import { createRequire } from 'node:module';
import { Errno, FsError } from '../lib/errno.js';
import {
  O_ACCMODE, O_APPEND, O_RDONLY, O_TRUNC, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID, SEEK_DATA, SEEK_HOLE,
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, XATTR_CREATE, XATTR_REPLACE,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Timespec, type Vfs,
} from '../vfs/types.js';
import { HandleTable, NAME_MAX, PATH_MAX, W_OK, checkAccess, checkName, checkRenameFlags, checkTimespec, checkXattr, nowNs, nsToTimespec } from './common.js';

// --- the addon ---------------------------------------------------------------------------------

/** An open image inside the addon (an N-API external). */
type Image = object & { readonly __image: unique symbol };
type Time = [number, number];

interface RawInode {
  mode: number;
  uid: number;
  gid: number;
  size: number;
  links: number;
  blocks: number;
  rdev: number;
  generation: number;
  flags: number;
  dtime: number;
  atime: Time;
  mtime: Time;
  ctime: Time;
}

interface InodeChanges {
  mode?: number;
  uid?: number;
  gid?: number;
  links?: number;
  generation?: number;
  atime?: Time;
  mtime?: Time;
  ctime?: Time;
}

/** native/ext2fs/wirefs_ext2fs.c; every call is synchronous and throws Error{code, errno}. */
interface Ext2fsAddon {
  open(path: string, rw: boolean): Image;
  describe(img: Image): { compat: number; incompat: number; roCompat: number; state: number; blockSize: number; inodeSize: number; lastOrphan: number };
  beginWrite(img: Image): void;
  flush(img: Image): void;
  close(img: Image): void;
  statfs(img: Image): { blocks: number; bfree: number; bavail: number; files: number; ffree: number; bsize: number };
  getInode(img: Image, ino: number): RawInode;
  setInode(img: Image, ino: number, changes: InodeChanges): void;
  newInode(img: Image, dir: number, mode: number, uid: number, gid: number, rdev: number, generation: number, times: { now: Time }): number;
  mkdir(img: Image, parent: number): number;
  symlink(img: Image, parent: number, target: string): number;
  readlink(img: Image, ino: number): string;
  freeInode(img: Image, ino: number): void;
  readdir(img: Image, dir: number): Array<[string, number, number]>;
  lookup(img: Image, dir: number, name: string): number;
  addEntry(img: Image, dir: number, name: string, ino: number, mode: number): void;
  removeEntry(img: Image, dir: number, name: string): void;
  setEntry(img: Image, dir: number, name: string, ino: number, mode: number): void;
  read(img: Image, ino: number, offset: number, length: number): Buffer;
  write(img: Image, ino: number, offset: number, data: Buffer): number;
  truncate(img: Image, ino: number, size: number): void;
  punch(img: Image, ino: number, firstBlock: number, lastBlock: number): void;
  xattrGet(img: Image, ino: number, name: string): Buffer;
  xattrSet(img: Image, ino: number, name: string, value: Buffer): void;
  xattrRemove(img: Image, ino: number, name: string): void;
  xattrList(img: Image, ino: number): string[];
}

// From dist/src/sources/ext-rw.js the repository root is three levels up.
const ADDON = '../../../native/ext2fs/build/Release/wirefs_ext2fs.node';
let addon: Ext2fsAddon | undefined;
let addonError: string | undefined;

/** The libext2fs addon, or undefined when it was not built (no libext2fs-dev at npm install). */
export function ext2fsAddon(): Ext2fsAddon | undefined {
  if (addon || addonError) return addon;
  try {
    addon = createRequire(import.meta.url)(ADDON) as Ext2fsAddon;
  } catch (err) {
    addonError = err instanceof Error ? (err.message.split('\n')[0] ?? err.message) : String(err);
  }
  return addon;
}

/** The one-line hint printed when an ext image is asked for writing without the addon. */
export const EXT_RW_HINT = 'ext read-write needs libext2fs: apt-get install libext2fs-dev && npm rebuild';

// --- the format's constants (ext4.h, Documentation/filesystems/ext4) ------------------------------

const EXT2_ROOT_INO = 2;
const EXT2_VALID_FS = 0x1;
const EXT2_ERROR_FS = 0x2;
const COMPAT_HAS_JOURNAL = 0x4;
const INCOMPAT_RECOVER = 0x4;
const INCOMPAT_MMP = 0x100;
const INCOMPAT_ENCRYPT = 0x10000;
const RO_COMPAT_SHARED_BLOCKS = 0x4000;
const RO_COMPAT_VERITY = 0x8000;
/** Features only ext4 has, as in ext.ts: the type shown is the newest the superblock needs. */
const RO_COMPAT_EXT4 = 0x8 | 0x10 | 0x20 | 0x40 | 0x400;
const INCOMPAT_EXT4 = 0x40 | 0x80 | 0x200 | 0x8000 | 0x100 | 0x400 | 0x4000 | 0x2000;
/** ext4's link count limit (EXT4_LINK_MAX); directories past it show 1 with dir_nlink. */
const LINK_MAX = 65000;
/** Directory entry file types (ext4 "dir_entry_2" file_type) to S_IFMT. */
const FT_TO_MODE = [0, S_IFREG, S_IFDIR, S_IFCHR, S_IFBLK, S_IFIFO, S_IFSOCK, S_IFLNK];
/** ext4's largest file with 4 KiB blocks is 16 TiB; libext2fs refuses beyond with EFBIG anyway. */
const MAX_FILE = Number.MAX_SAFE_INTEGER;
const CHUNK = 1 << 20;
/** Bitmaps, descriptors and the superblock reach the image this long after a change at most. */
const FLUSH_DELAY_MS = 5000;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const FALLOC_FL_KEEP_SIZE = 1;
const FALLOC_FL_PUNCH_HOLE = 2;

export interface ExtRwOptions {
  readOnly?: boolean;
}

/** A simple FIFO async mutex: every operation of one image runs alone. */
class Mutex {
  private tail: Promise<unknown> = Promise.resolve();
  run<T>(fn: () => T | Promise<T>): Promise<T> {
    const p = this.tail.then(fn, fn);
    this.tail = p.catch(() => undefined);
    return p;
  }
}

interface Node {
  lookups: number;
  opens: number;
}

interface FileHandle {
  ino: number;
  flags: number;
}

interface DirHandle {
  ino: number;
  list: Array<[string, number, number]>;
}

const toIno = (nodeid: number): number => (nodeid === ROOT_ID ? EXT2_ROOT_INO : nodeid);
const toNode = (ino: number): number => (ino === EXT2_ROOT_INO ? ROOT_ID : ino);
const ts = (t: Time): Timespec => ({ sec: t[0], nsec: t[1] });
const isDir = (i: RawInode): boolean => (i.mode & S_IFMT) === S_IFDIR;

function nowTime(): Time {
  const t = nsToTimespec(nowNs());
  return [t.sec, t.nsec];
}

/** "ext2", "ext3" or "ext4" from the feature bits, as ext.ts names them. */
function typeOf(d: { compat: number; incompat: number; roCompat: number }): string {
  if ((d.incompat & INCOMPAT_EXT4) || (d.roCompat & RO_COMPAT_EXT4)) return 'ext4';
  return d.compat & COMPAT_HAS_JOURNAL ? 'ext3' : 'ext2';
}

export class ExtRwFs implements Vfs {
  private readonly nodes = new Map<number, Node>();
  private readonly files = new HandleTable<FileHandle>();
  private readonly dirs = new HandleTable<DirHandle>();
  private readonly lock = new Mutex();
  /** Inodes libext2fs found damaged: no change to them is attempted again. */
  private readonly damaged = new Set<number>();
  private closed = false;
  private flushTimer: NodeJS.Timeout | undefined;
  private generation = Math.floor(Math.random() * 0xffffffff) >>> 0;
  private readonly inodeCount: number;

  private constructor(
    private readonly lib: Ext2fsAddon,
    private img: Image | undefined,
    private readonly type: string,
    private readonly readOnly: boolean,
    private readonly blockSize: number,
  ) {
    this.inodeCount = lib.statfs(img!).files;
    this.nodes.set(EXT2_ROOT_INO, { lookups: 1, opens: 0 });
  }

  /**
   * Opens an image or device; a one-line FsError(EINVAL) when it is not a usable ext file system,
   * or when it cannot be written safely (journal to recover, not cleanly unmounted, features
   * libext2fs cannot write) unless opts.readOnly.
   */
  static async open(imagePath: string, opts: ExtRwOptions = {}): Promise<ExtRwFs> {
    const lib = ext2fsAddon();
    if (!lib) throw new FsError(Errno.EOPNOTSUPP, `${imagePath}: ${EXT_RW_HINT} (${addonError ?? 'addon missing'})`);
    const readOnly = opts.readOnly === true;
    let img: Image;
    try {
      img = lib.open(imagePath, !readOnly);
    } catch (err) {
      const e = err as { errno?: number; message?: string };
      // A missing file or no permission is what it is; everything else is a bad image.
      if (e.errno === Errno.ENOENT || e.errno === Errno.EACCES || e.errno === Errno.EPERM || e.errno === Errno.EBUSY) {
        throw new FsError(e.errno, `${imagePath}: ${e.message ?? ''}`);
      }
      throw new FsError(Errno.EINVAL, `${imagePath}: not a usable ext2/3/4 file system: ${e.message ?? String(err)}`);
    }
    try {
      const d = lib.describe(img);
      if (!readOnly) {
        const refuse = (why: string): FsError => new FsError(Errno.EINVAL, `${imagePath}: ${why}`);
        if (d.incompat & INCOMPAT_RECOVER) throw refuse('the journal needs recovery (run e2fsck -fy on it, or serve it read-only with --read-only)');
        if (!(d.state & EXT2_VALID_FS) || (d.state & EXT2_ERROR_FS)) {
          throw refuse('not cleanly unmounted or has errors (run e2fsck -fy on it, or serve it read-only with --read-only)');
        }
        if (d.incompat & (INCOMPAT_ENCRYPT | INCOMPAT_MMP)) throw refuse('uses encryption or MMP, which cannot be written here (serve it read-only with --read-only)');
        if (d.roCompat & (RO_COMPAT_SHARED_BLOCKS | RO_COMPAT_VERITY)) throw refuse('has shared blocks or verity, which cannot be written (serve it read-only with --read-only)');
        lib.beginWrite(img);
      }
      return new ExtRwFs(lib, img, typeOf(d), readOnly, d.blockSize);
    } catch (err) {
      try {
        lib.close(img);
      } catch {
        // Closing a refused image writes nothing that matters; the refusal is the error to report.
      }
      throw err;
    }
  }

  info(): FsInfo {
    return { type: this.type, readOnly: this.readOnly, coherent: true };
  }

  // --- plumbing ----------------------------------------------------------------------------------

  private get image(): Image {
    if (this.closed || !this.img) throw new FsError(Errno.EIO);
    return this.img;
  }

  /** Runs one addon call, turning its errors into FsErrors; an EIO marks the inode damaged. */
  private call<T>(ino: number, fn: (lib: Ext2fsAddon, img: Image) => T): T {
    const img = this.image;
    try {
      return fn(this.lib, img);
    } catch (err) {
      const e = err as { errno?: number; message?: string };
      const errno = typeof e.errno === 'number' && e.errno > 0 ? e.errno : Errno.EIO;
      if (errno === Errno.EIO && ino > 0) this.damaged.add(ino);
      throw new FsError(errno, e.message);
    }
  }

  private writable(ino = 0): void {
    if (this.readOnly) throw new FsError(Errno.EROFS);
    if (this.damaged.has(ino)) throw new FsError(Errno.EIO, `ext: inode ${ino} is damaged; not changing it`);
    this.scheduleFlush();
  }

  private scheduleFlush(): void {
    if (this.flushTimer || this.readOnly) return;
    this.flushTimer = setTimeout(() => {
      this.flushTimer = undefined;
      void this.lock.run(() => {
        if (!this.closed) this.call(0, (l, i) => l.flush(i));
      }).catch(() => undefined);
    }, FLUSH_DELAY_MS);
    this.flushTimer.unref();
  }

  /** The inode behind a node id; ESTALE if it is free, or deleted and no longer held by anyone. */
  private inode(ino: number): RawInode {
    if (!Number.isSafeInteger(ino) || ino < 1 || ino > this.inodeCount) throw new FsError(Errno.ESTALE);
    const i = this.call(ino, (l, img) => l.getInode(img, ino));
    if (i.mode === 0 || (i.links === 0 && !this.nodes.has(ino))) throw new FsError(Errno.ESTALE);
    return i;
  }

  private dirInode(ino: number): RawInode {
    const i = this.inode(ino);
    if (!isDir(i)) throw new FsError(Errno.ENOTDIR);
    return i;
  }

  private attr(ino: number, i: RawInode): Attr {
    return {
      ino, size: i.size, blocks: i.blocks, atime: ts(i.atime), mtime: ts(i.mtime), ctime: ts(i.ctime),
      mode: i.mode, nlink: i.links, uid: i.uid, gid: i.gid, rdev: i.rdev, blksize: this.blockSize,
    };
  }

  private enter(ino: number): Entry {
    const i = this.inode(ino);
    const n = this.nodes.get(ino) ?? { lookups: 0, opens: 0 };
    n.lookups++;
    this.nodes.set(ino, n);
    return { nodeid: toNode(ino), generation: i.generation, attr: this.attr(ino, i) };
  }

  /** Frees an inode nobody can reach any more: no name, no lookup, no open handle. */
  private maybeFree(ino: number): void {
    const n = this.nodes.get(ino);
    if (ino === EXT2_ROOT_INO || (n && (n.lookups > 0 || n.opens > 0))) return;
    this.nodes.delete(ino);
    if (this.readOnly || this.closed || this.damaged.has(ino)) return;
    const i = this.call(ino, (l, img) => l.getInode(img, ino));
    if (i.links === 0 && i.mode !== 0 && i.dtime === 0) {
      this.call(ino, (l, img) => l.freeInode(img, ino));
      this.scheduleFlush();
    }
  }

  private lookupIn(dir: number, name: string): number {
    return this.call(dir, (l, img) => l.lookup(img, dir, name));
  }

  private touchDir(dir: number): void {
    const t = nowTime();
    this.call(dir, (l, img) => l.setInode(img, dir, { mtime: t, ctime: t }));
  }

  /** Checks a new name may be made in directory `parent` and returns the directory's inode. */
  private prepareCreate(parent: number, name: string): RawInode {
    const d = this.dirInode(parent);
    if (name === '.' || name === '..') throw new FsError(Errno.EEXIST);
    checkName(name);
    this.writable(parent);
    if (d.links === 0) throw new FsError(Errno.ENOENT); // a removed directory takes no new names
    if (this.lookupIn(parent, name) !== 0) throw new FsError(Errno.EEXIST);
    return d;
  }

  /** The owner of a new node: the caller, with the group of a setgid parent (BSD semantics). */
  private owner(ctx: Ctx, d: RawInode): { uid: number; gid: number; sgid: boolean } {
    const sgid = (d.mode & S_ISGID) !== 0;
    return { uid: ctx.uid, gid: sgid ? d.gid : ctx.gid, sgid };
  }

  /** Links a freshly made inode under `name`, or frees it again if that fails (ENOSPC...). */
  private linkNew(parent: number, name: string, ino: number, mode: number): void {
    try {
      this.call(parent, (l, img) => l.addEntry(img, parent, name, ino, mode));
    } catch (err) {
      if ((mode & S_IFMT) === S_IFDIR) {
        const p = this.inode(parent);
        this.call(parent, (l, img) => l.setInode(img, parent, { links: Math.max(1, p.links - 1) }));
      }
      this.call(ino, (l, img) => l.setInode(img, ino, { links: 0 }));
      this.maybeFree(ino);
      throw err;
    }
    this.touchDir(parent);
  }

  private makeNode(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): number {
    const d = this.prepareCreate(parent, name);
    const o = this.owner(ctx, d);
    const gen = (this.generation = (this.generation + 1) >>> 0);
    const ino = this.call(parent, (l, img) => l.newInode(img, parent, mode, o.uid, o.gid, rdev, gen, { now: nowTime() }));
    this.linkNew(parent, name, ino, mode);
    return ino;
  }

  // --- Vfs: names --------------------------------------------------------------------------------

  lookup(_ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return this.lock.run(() => {
      const dir = toIno(parent);
      this.dirInode(dir);
      if (name === '.') return this.enter(dir);
      if (name !== '..') checkName(name);
      const ino = this.lookupIn(dir, name);
      if (ino === 0) throw new FsError(Errno.ENOENT);
      return this.enter(ino);
    });
  }

  forget(nodeid: number, nlookup: number): void {
    const ino = toIno(nodeid);
    const n = this.nodes.get(ino);
    if (!n || ino === EXT2_ROOT_INO) return;
    n.lookups = Math.max(0, n.lookups - nlookup);
    // Dropping may free an unlinked inode: that is a change, so it takes the lock.
    void this.lock.run(() => this.maybeFree(ino)).catch(() => undefined);
  }

  getattr(_ctx: Ctx, nodeid: number, _fh?: number): Promise<Attr> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      return this.attr(ino, this.inode(ino));
    });
  }

  setattr(_ctx: Ctx, nodeid: number, set: SetAttr, _fh?: number): Promise<Attr> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      const i = this.inode(ino);
      const type = i.mode & S_IFMT;
      // Validate everything first so a failure changes nothing.
      if (set.size !== undefined) {
        if (type === S_IFDIR) throw new FsError(Errno.EISDIR);
        if (type !== S_IFREG) throw new FsError(Errno.EINVAL);
        if (!Number.isSafeInteger(set.size) || set.size < 0) throw new FsError(Errno.EINVAL);
      }
      if (set.atime !== undefined && set.atime !== 'now') checkTimespec(set.atime);
      if (set.mtime !== undefined && set.mtime !== 'now') checkTimespec(set.mtime);
      this.writable(ino);
      const t = nowTime();
      const ch: InodeChanges = {};
      let mode = i.mode;
      if (set.size !== undefined) {
        if (set.size !== i.size) this.call(ino, (l, img) => l.truncate(img, ino, set.size!));
        ch.mtime = t;
      }
      if (set.mode !== undefined) mode = (mode & S_IFMT) | (set.mode & 0o7777);
      const keep = (v: number | undefined): boolean => v === undefined || v === -1 || v === 0xffffffff;
      if (!keep(set.uid)) ch.uid = set.uid!;
      if (!keep(set.gid)) ch.gid = set.gid!;
      if (set.uid !== undefined || set.gid !== undefined) {
        // chown clears set-user-ID, and set-group-ID when group execute is set (chown(2)).
        if (type !== S_IFDIR) {
          mode &= ~S_ISUID;
          if (mode & 0o010) mode &= ~S_ISGID;
        }
      }
      if (mode !== i.mode) ch.mode = mode;
      if (set.atime !== undefined) ch.atime = set.atime === 'now' ? t : [set.atime.sec, set.atime.nsec];
      if (set.mtime !== undefined) ch.mtime = set.mtime === 'now' ? t : [set.mtime.sec, set.mtime.nsec];
      ch.ctime = t;
      this.call(ino, (l, img) => l.setInode(img, ino, ch));
      return this.attr(ino, this.inode(ino));
    });
  }

  readlink(_ctx: Ctx, nodeid: number): Promise<string> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      if ((this.inode(ino).mode & S_IFMT) !== S_IFLNK) throw new FsError(Errno.EINVAL);
      return this.call(ino, (l, img) => l.readlink(img, ino));
    });
  }

  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    return this.lock.run(() => {
      let type = mode & S_IFMT;
      if (type === 0) type = S_IFREG;
      if (type === S_IFDIR) throw new FsError(Errno.EPERM);
      if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw new FsError(Errno.EINVAL);
      const dev = type === S_IFCHR || type === S_IFBLK ? rdev >>> 0 : 0;
      return this.enter(this.makeNode(ctx, toIno(parent), name, type | (mode & 0o7777), dev));
    });
  }

  mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    return this.lock.run(() => {
      const dir = toIno(parent);
      const d = this.prepareCreate(dir, name);
      if (d.links >= LINK_MAX) throw new FsError(Errno.EMLINK);
      const o = this.owner(ctx, d);
      // ext2fs_mkdir makes "." and ".." and counts the new ".." in the parent.
      const ino = this.call(dir, (l, img) => l.mkdir(img, dir));
      const t = nowTime();
      const m = S_IFDIR | (mode & 0o7777) | (o.sgid ? S_ISGID : 0);
      // i_generation stays as ext2fs_mkdir left it: with metadata_csum it seeds the checksum of
      // the directory block already written (ext4 "Checksums": inode number and generation).
      this.call(ino, (l, img) => l.setInode(img, ino, { mode: m, uid: o.uid, gid: o.gid, atime: t, mtime: t, ctime: t }));
      this.linkNew(dir, name, ino, S_IFDIR);
      return this.enter(ino);
    });
  }

  symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    return this.lock.run(() => {
      if (target === '') throw new FsError(Errno.ENOENT);
      // The kernel limits symlink targets to one block (ext4_symlink: ENAMETOOLONG).
      const len = Buffer.byteLength(target);
      if (len >= PATH_MAX || len >= this.blockSize || target.includes('\0')) throw new FsError(Errno.ENAMETOOLONG);
      const dir = toIno(parent);
      const d = this.prepareCreate(dir, name);
      const o = this.owner(ctx, d);
      const ino = this.call(dir, (l, img) => l.symlink(img, dir, target));
      const t = nowTime();
      // As for directories, the generation is left alone: it seeds block checksums already written.
      this.call(ino, (l, img) => l.setInode(img, ino, { uid: o.uid, gid: o.gid, atime: t, mtime: t, ctime: t }));
      this.linkNew(dir, name, ino, S_IFLNK);
      return this.enter(ino);
    });
  }

  link(_ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      const i = this.inode(ino);
      if (isDir(i)) throw new FsError(Errno.EPERM);
      const dir = toIno(newparent);
      this.prepareCreate(dir, newname);
      if (i.links === 0) throw new FsError(Errno.ENOENT);
      if (i.links >= LINK_MAX) throw new FsError(Errno.EMLINK);
      this.writable(ino);
      this.call(dir, (l, img) => l.addEntry(img, dir, newname, ino, i.mode));
      this.call(ino, (l, img) => l.setInode(img, ino, { links: i.links + 1, ctime: nowTime() }));
      this.touchDir(dir);
      return this.enter(ino);
    });
  }

  unlink(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.lock.run(() => {
      const dir = toIno(parent);
      this.dirInode(dir);
      if (name === '.' || name === '..') throw new FsError(Errno.EISDIR);
      checkName(name);
      const ino = this.lookupIn(dir, name);
      if (ino === 0) throw new FsError(Errno.ENOENT);
      const i = this.inode(ino);
      if (isDir(i)) throw new FsError(Errno.EISDIR);
      this.writable(dir);
      this.call(dir, (l, img) => l.removeEntry(img, dir, name));
      this.touchDir(dir);
      if (!this.damaged.has(ino)) {
        this.call(ino, (l, img) => l.setInode(img, ino, { links: Math.max(0, i.links - 1), ctime: nowTime() }));
        this.maybeFree(ino);
      }
    });
  }

  /** True when the directory has no entries but "." and "..". */
  private isEmpty(dir: number): boolean {
    return this.call(dir, (l, img) => l.readdir(img, dir)).length === 0;
  }

  rmdir(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.lock.run(() => {
      const dir = toIno(parent);
      const d = this.dirInode(dir);
      if (name === '.') throw new FsError(Errno.EINVAL);
      if (name === '..') throw new FsError(Errno.ENOTEMPTY);
      checkName(name);
      const ino = this.lookupIn(dir, name);
      if (ino === 0) throw new FsError(Errno.ENOENT);
      const i = this.inode(ino);
      if (!isDir(i)) throw new FsError(Errno.ENOTDIR);
      if (!this.isEmpty(ino)) throw new FsError(Errno.ENOTEMPTY);
      this.writable(dir);
      this.call(dir, (l, img) => l.removeEntry(img, dir, name));
      // The removed directory's ".." no longer counts in the parent (1 means "many" with dir_nlink).
      const t = nowTime();
      this.call(dir, (l, img) => l.setInode(img, dir, { links: d.links > 2 ? d.links - 1 : d.links, mtime: t, ctime: t }));
      this.call(ino, (l, img) => l.setInode(img, ino, { links: 0, ctime: t }));
      this.maybeFree(ino);
    });
  }

  /** True if directory `anc` is `dir` or one of its ancestors (walking ".." up to the root). */
  private isAncestor(anc: number, dir: number): boolean {
    for (let cur = dir, steps = 0; steps < 4096; steps++) {
      if (cur === anc) return true;
      if (cur === EXT2_ROOT_INO) return false;
      const up = this.lookupIn(cur, '..');
      if (up === 0 || up === cur) return false;
      cur = up;
    }
    throw new FsError(Errno.EIO, 'ext: directory tree too deep or looped');
  }

  private addLinks(ino: number, delta: number): void {
    const i = this.inode(ino);
    // With dir_nlink a count of 1 means "too many to count" and stays so (ext4 inc_nlink/drop_nlink).
    const links = i.links === 1 && isDir(i) ? 1 : Math.max(0, i.links + delta);
    this.call(ino, (l, img) => l.setInode(img, ino, { links }));
  }

  rename(_ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    return this.lock.run(() => {
      checkRenameFlags(flags);
      const sd = toIno(parent);
      const dd = toIno(newparent);
      this.dirInode(sd);
      const ddi = this.dirInode(dd);
      for (const nm of [name, newname]) if (nm === '.' || nm === '..') throw new FsError(Errno.EBUSY);
      checkName(name);
      checkName(newname);
      const src = this.lookupIn(sd, name);
      if (src === 0) throw new FsError(Errno.ENOENT);
      const dst = this.lookupIn(dd, newname);
      if (ddi.links === 0) throw new FsError(Errno.ENOENT);
      const si = this.inode(src);
      const srcDir = isDir(si);
      const t = nowTime();

      if (flags & RENAME_EXCHANGE) {
        if (dst === 0) throw new FsError(Errno.ENOENT);
        if (src === dst) return;
        const di = this.inode(dst);
        const dstDir = isDir(di);
        // Neither directory may end up inside itself.
        if (srcDir && this.isAncestor(src, dd)) throw new FsError(Errno.EINVAL);
        if (dstDir && this.isAncestor(dst, sd)) throw new FsError(Errno.EINVAL);
        this.writable(sd);
        this.writable(dd);
        // Both names are retargeted in place, as ext4_rename (RENAME_EXCHANGE) does with ext4_setent.
        this.call(sd, (l, img) => l.setEntry(img, sd, name, dst, di.mode));
        this.call(dd, (l, img) => l.setEntry(img, dd, newname, src, si.mode));
        if (sd !== dd) {
          if (srcDir) this.call(src, (l, img) => l.setEntry(img, src, '..', dd, S_IFDIR));
          if (dstDir) this.call(dst, (l, img) => l.setEntry(img, dst, '..', sd, S_IFDIR));
          if (srcDir !== dstDir) {
            this.addLinks(sd, srcDir ? -1 : 1);
            this.addLinks(dd, srcDir ? 1 : -1);
          }
        }
        this.call(src, (l, img) => l.setInode(img, src, { ctime: t }));
        this.call(dst, (l, img) => l.setInode(img, dst, { ctime: t }));
        this.touchDir(sd);
        if (dd !== sd) this.touchDir(dd);
        return;
      }

      let di: RawInode | undefined;
      if (dst !== 0) {
        if (flags & RENAME_NOREPLACE) throw new FsError(Errno.EEXIST);
        // Two names of one inode: POSIX says do nothing and succeed.
        if (src === dst) return;
        di = this.inode(dst);
        if (srcDir && !isDir(di)) throw new FsError(Errno.ENOTDIR);
        if (!srcDir && isDir(di)) throw new FsError(Errno.EISDIR);
        if (isDir(di) && !this.isEmpty(dst)) throw new FsError(Errno.ENOTEMPTY);
      }
      if (srcDir && this.isAncestor(src, dd)) throw new FsError(Errno.EINVAL);
      if (srcDir && sd !== dd && dst === 0 && ddi.links >= LINK_MAX) throw new FsError(Errno.EMLINK);
      this.writable(sd);
      this.writable(dd);
      this.writable(src);

      if (di) {
        // The new name now points at the source in one step: there is never a moment without it.
        this.call(dd, (l, img) => l.setEntry(img, dd, newname, src, si.mode));
        if (isDir(di)) {
          this.call(dst, (l, img) => l.setInode(img, dst, { links: 0, ctime: t }));
          this.addLinks(dd, -1);
        } else {
          this.call(dst, (l, img) => l.setInode(img, dst, { links: Math.max(0, di!.links - 1), ctime: t }));
        }
      } else {
        this.call(dd, (l, img) => l.addEntry(img, dd, newname, src, si.mode));
      }
      this.call(sd, (l, img) => l.removeEntry(img, sd, name));
      if (srcDir && sd !== dd) {
        this.call(src, (l, img) => l.setEntry(img, src, '..', dd, S_IFDIR));
        this.addLinks(sd, -1);
        this.addLinks(dd, 1);
      }
      this.call(src, (l, img) => l.setInode(img, src, { ctime: t }));
      this.touchDir(sd);
      if (dd !== sd) this.touchDir(dd);
      if (di) this.maybeFree(dst);
    });
  }

  // --- Vfs: files --------------------------------------------------------------------------------

  private handle(nodeid: number, fh: number): FileHandle {
    const h = this.files.get(fh);
    if (h.ino !== toIno(nodeid)) throw new FsError(Errno.EBADF);
    if (this.closed) throw new FsError(Errno.EIO);
    return h;
  }

  private openInode(ino: number, i: RawInode, flags: number): OpenResult {
    const type = i.mode & S_IFMT;
    if (type === S_IFDIR) throw new FsError(Errno.EISDIR);
    if (type === S_IFLNK) throw new FsError(Errno.ELOOP);
    const acc = flags & O_ACCMODE;
    if (acc !== O_RDONLY || (flags & O_TRUNC)) this.writable(ino);
    if ((flags & O_TRUNC) && type === S_IFREG && acc !== O_RDONLY && i.size !== 0) {
      this.call(ino, (l, img) => l.truncate(img, ino, 0));
      const t = nowTime();
      this.call(ino, (l, img) => l.setInode(img, ino, { mtime: t, ctime: t }));
    }
    const n = this.nodes.get(ino) ?? { lookups: 0, opens: 0 };
    n.opens++;
    this.nodes.set(ino, n);
    return { fh: this.files.add({ ino, flags }) };
  }

  open(_ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      return this.openInode(ino, this.inode(ino), flags);
    });
  }

  create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    return this.lock.run(() => {
      const ino = this.makeNode(ctx, toIno(parent), name, S_IFREG | (mode & 0o7777), 0);
      // A new file is empty: O_TRUNC has nothing to do, so it is not asked for again.
      const r = this.openInode(ino, this.inode(ino), flags & ~O_TRUNC);
      return { ...r, entry: this.enter(ino) };
    });
  }

  read(_ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return this.lock.run(() => {
      const { ino } = this.handle(nodeid, fh);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
      if (size === 0) return Buffer.alloc(0);
      return this.call(ino, (l, img) => l.read(img, ino, offset, Math.min(size, 0xffffffff)));
    });
  }

  private writeLocked(ino: number, offset: number, data: Buffer): number {
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
    this.writable(ino);
    if (data.length === 0) return 0;
    if (offset + data.length > MAX_FILE) throw new FsError(Errno.EFBIG);
    const n = this.call(ino, (l, img) => l.write(img, ino, offset, data));
    const i = this.inode(ino);
    const t = nowTime();
    // Writing clears set-user-ID (file_remove_privs); the kernel asks too, but a direct Vfs user may not.
    const ch: InodeChanges = { mtime: t, ctime: t };
    if (i.mode & S_ISUID) ch.mode = i.mode & ~S_ISUID;
    this.call(ino, (l, img) => l.setInode(img, ino, ch));
    return n;
  }

  write(_ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.lock.run(() => {
      const h = this.handle(nodeid, fh);
      if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
      const off = h.flags & O_APPEND ? this.inode(h.ino).size : offset;
      return this.writeLocked(h.ino, off, data);
    });
  }

  flush(_ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.lock.run(() => {
      this.handle(nodeid, fh);
    });
  }

  fsync(_ctx: Ctx, nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    return this.lock.run(() => {
      this.handle(nodeid, fh);
      if (!this.readOnly) this.call(0, (l, img) => l.flush(img));
    });
  }

  release(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    return this.lock.run(() => {
      const h = this.files.delete(fh);
      if (!h) throw new FsError(Errno.EBADF);
      const n = this.nodes.get(h.ino);
      if (n) n.opens = Math.max(0, n.opens - 1);
      this.maybeFree(h.ino);
    });
  }

  // --- Vfs: directories --------------------------------------------------------------------------

  opendir(_ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      const d = this.dirInode(ino);
      // A snapshot: cookies index it, so they stay valid whatever changes meanwhile.
      const list = d.links === 0 ? [] : this.call(ino, (l, img) => l.readdir(img, ino));
      const n = this.nodes.get(ino) ?? { lookups: 0, opens: 0 };
      n.opens++;
      this.nodes.set(ino, n);
      return { fh: this.dirs.add({ ino, list }) };
    });
  }

  readdir(_ctx: Ctx, _nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.lock.run(() => {
      const h = this.dirs.get(fh);
      if (this.closed) throw new FsError(Errno.EIO);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
      const dir = h.ino;
      const d = this.inode(dir);
      // A rewind sees the directory as it is now (rewinddir(3) must show later changes).
      if (offset === 0) h.list = d.links === 0 ? [] : this.call(dir, (l, img) => l.readdir(img, dir));
      const out: DirEntry[] = [];
      const max = Math.max(1, maxEntries);
      for (let i = offset; i < h.list.length + 2 && out.length < max; i++) {
        if (i === 0) out.push({ name: '.', ino: dir, type: S_IFDIR, off: 1 });
        else if (i === 1) {
          const up = d.links === 0 ? dir : this.lookupIn(dir, '..') || dir;
          out.push({ name: '..', ino: up, type: S_IFDIR, off: 2 });
        } else {
          const [name, ino, ft] = h.list[i - 2]!;
          let type = FT_TO_MODE[ft] ?? 0;
          if (plus) {
            // Only entries still there get a node; one gone since the snapshot is skipped.
            if (this.lookupIn(dir, name) !== ino) continue;
            const entry = this.enter(ino);
            out.push({ name, ino, type: entry.attr.mode & S_IFMT, off: i + 1, entry });
          } else {
            // Without the filetype feature the entry does not say; the inode does.
            if (type === 0) type = this.inode(ino).mode & S_IFMT;
            out.push({ name, ino, type, off: i + 1 });
          }
        }
      }
      return out;
    });
  }

  fsyncdir(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    return this.lock.run(() => {
      this.dirs.get(fh);
      if (!this.readOnly) this.call(0, (l, img) => l.flush(img));
    });
  }

  releasedir(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    return this.lock.run(() => {
      const h = this.dirs.delete(fh);
      if (!h) throw new FsError(Errno.EBADF);
      const n = this.nodes.get(h.ino);
      if (n) n.opens = Math.max(0, n.opens - 1);
      this.maybeFree(h.ino);
    });
  }

  // --- Vfs: the rest -----------------------------------------------------------------------------

  statfs(_ctx: Ctx, _nodeid: number): Promise<StatFs> {
    return this.lock.run(() => {
      const s = this.call(0, (l, img) => l.statfs(img));
      return { ...s, namelen: NAME_MAX, frsize: s.bsize };
    });
  }

  /** Linux accepts only known namespaces, and user.* only on regular files and directories. */
  private xattrTarget(nodeid: number, name: string, writing: boolean): number {
    const ino = toIno(nodeid);
    const i = this.inode(ino);
    if (!/^(user|trusted|security|system)\./.test(name)) throw new FsError(Errno.EOPNOTSUPP);
    // system.data is where ext4 keeps inline data, not an attribute users may touch.
    if (name === 'system.data') throw new FsError(writing ? Errno.EPERM : Errno.ENODATA);
    if (name.startsWith('user.')) {
      const type = i.mode & S_IFMT;
      if (type !== S_IFREG && type !== S_IFDIR) throw new FsError(writing ? Errno.EPERM : Errno.ENODATA);
    }
    if (writing) this.writable(ino);
    return ino;
  }

  private hasXattr(ino: number, name: string): boolean {
    try {
      this.call(ino, (l, img) => l.xattrGet(img, ino, name));
      return true;
    } catch (err) {
      if (err instanceof FsError && err.errno === Errno.ENODATA) return false;
      throw err;
    }
  }

  setxattr(_ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    return this.lock.run(() => {
      checkXattr(name, value);
      if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) throw new FsError(Errno.EINVAL);
      const ino = this.xattrTarget(nodeid, name, true);
      if (flags & (XATTR_CREATE | XATTR_REPLACE)) {
        const has = this.hasXattr(ino, name);
        if ((flags & XATTR_CREATE) && has) throw new FsError(Errno.EEXIST);
        if ((flags & XATTR_REPLACE) && !has) throw new FsError(Errno.ENODATA);
      }
      this.call(ino, (l, img) => l.xattrSet(img, ino, name, value));
      this.call(ino, (l, img) => l.setInode(img, ino, { ctime: nowTime() }));
    });
  }

  getxattr(_ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return this.lock.run(() => {
      checkXattr(name);
      const ino = this.xattrTarget(nodeid, name, false);
      return this.call(ino, (l, img) => l.xattrGet(img, ino, name));
    });
  }

  listxattr(_ctx: Ctx, nodeid: number): Promise<string[]> {
    return this.lock.run(() => {
      const ino = toIno(nodeid);
      this.inode(ino);
      return this.call(ino, (l, img) => l.xattrList(img, ino)).filter((n) => n !== 'system.data');
    });
  }

  removexattr(_ctx: Ctx, nodeid: number, name: string): Promise<void> {
    return this.lock.run(() => {
      checkXattr(name);
      const ino = this.xattrTarget(nodeid, name, true);
      this.call(ino, (l, img) => l.xattrRemove(img, ino, name));
      this.call(ino, (l, img) => l.setInode(img, ino, { ctime: nowTime() }));
    });
  }

  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.lock.run(() => {
      const i = this.inode(toIno(nodeid));
      if ((mask & W_OK) && this.readOnly) throw new FsError(Errno.EROFS);
      checkAccess(i, ctx, mask);
    });
  }

  fallocate(_ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.lock.run(() => {
      const h = this.handle(nodeid, fh);
      if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
      if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) throw new FsError(Errno.EINVAL);
      const i = this.inode(h.ino);
      const end = offset + length;
      if (mode & FALLOC_FL_PUNCH_HOLE) {
        // Linux requires KEEP_SIZE with PUNCH_HOLE and no other flag; zero-range is not offered.
        if (mode !== (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) throw new FsError(Errno.EOPNOTSUPP);
        if ((i.mode & S_IFMT) !== S_IFREG) throw new FsError(Errno.ENODEV);
        this.writable(h.ino);
        this.punchLocked(h.ino, offset, Math.min(end, i.size));
        return;
      }
      // Allocation only otherwise (mode 0 or KEEP_SIZE).
      if ((mode & ~FALLOC_FL_KEEP_SIZE) !== 0) throw new FsError(Errno.EOPNOTSUPP);
      this.writable(h.ino);
      // The size grows now; blocks are allocated as they are written (sparse, like ext2's
      // fallback for fallocate), so a later write can still meet ENOSPC.
      if (!(mode & FALLOC_FL_KEEP_SIZE) && end > i.size) {
        this.call(h.ino, (l, img) => l.truncate(img, h.ino, end));
        const t = nowTime();
        this.call(h.ino, (l, img) => l.setInode(img, h.ino, { mtime: t, ctime: t }));
      }
    });
  }

  /**
   * Unmaps the whole blocks inside [start, end) and writes zeros over the partial blocks at its
   * edges (fuse2fs: punch_helper), so the range reads as zeros and frees what it can.
   */
  private punchLocked(ino: number, start: number, end: number): void {
    if (start >= end) return;
    const bs = this.blockSize;
    const first = Math.ceil(start / bs);
    const last = Math.floor(end / bs); // exclusive
    const zero = (from: number, to: number): void => {
      if (to > from) this.call(ino, (l, img) => l.write(img, ino, from, Buffer.alloc(to - from)));
    };
    if (first >= last) {
      zero(start, end);
    } else {
      zero(start, first * bs);
      this.call(ino, (l, img) => l.punch(img, ino, first, last - 1));
      zero(last * bs, end);
    }
    const t = nowTime();
    this.call(ino, (l, img) => l.setInode(img, ino, { mtime: t, ctime: t }));
  }

  lseek(_ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.lock.run(() => {
      const { ino } = this.handle(nodeid, fh);
      if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(Errno.EINVAL);
      const size = this.inode(ino).size;
      if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) throw new FsError(Errno.ENXIO);
      // Holes may always be reported as data (lseek(2)): the only hole is the one at the end.
      return whence === SEEK_DATA ? offset : size;
    });
  }

  copyFileRange(_ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.lock.run(() => {
      const src = this.handle(nodeIn, fhIn);
      const out = this.handle(nodeOut, fhOut);
      if ((out.flags & O_ACCMODE) === O_RDONLY || (out.flags & O_APPEND)) throw new FsError(Errno.EBADF);
      if ((src.flags & O_ACCMODE) === 1) throw new FsError(Errno.EBADF);
      if (![offIn, offOut, len].every((v) => Number.isSafeInteger(v) && v >= 0)) throw new FsError(Errno.EINVAL);
      if (src.ino === out.ino && offIn < offOut + len && offOut < offIn + len) throw new FsError(Errno.EINVAL);
      const n = Math.min(len, CHUNK);
      if (n === 0) return 0;
      const data = this.call(src.ino, (l, img) => l.read(img, src.ino, offIn, n));
      if (data.length === 0) return 0;
      return this.writeLocked(out.ino, offOut, data);
    });
  }

  watch(_listener: ChangeListener): () => void {
    // Only this Vfs changes the image, and the server tells other clients of those changes itself.
    return () => {};
  }

  /** Frees what unlinked-but-held inodes kept, writes all metadata and marks the image clean. */
  close(): Promise<void> {
    return this.lock.run(() => {
      if (this.closed || !this.img) return;
      if (this.flushTimer) clearTimeout(this.flushTimer);
      this.flushTimer = undefined;
      const img = this.img;
      try {
        if (!this.readOnly) {
          const held = [...this.nodes.keys()];
          this.nodes.clear();
          for (const ino of held) {
            try {
              this.maybeFree(ino);
            } catch {
              // A damaged orphan stays for e2fsck; everything else is still written below.
            }
          }
        }
      } finally {
        this.closed = true;
        this.img = undefined;
        this.files.clear();
        this.dirs.clear();
        this.nodes.clear();
        try {
          this.lib.close(img);
        } catch (err) {
          const e = err as { errno?: number; message?: string };
          throw new FsError(e.errno ?? Errno.EIO, `ext: closing the image failed: ${e.message ?? String(err)}`);
        }
      }
    });
  }
}
