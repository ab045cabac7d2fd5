// PassthroughFs: serves a local directory (any file system: ext4, tmpfs, /proc, trees spanning several
// mounts). Node has no openat/O_PATH, so a node is known by its names (parent node + name), kept up
// to date on rename and unlink; open files hold real fds, bounded by an LRU that closes idle ones
// and reopens them by path on demand (the machine's hard fd limit is 20 000).
//
// Inode numbers: st_ino of the exported root's device is shown as is; the n-th other device seen
// gets (n << 44) | st_ino, so a tree spanning several mounts never shows two files with one number.
// Numbers that do not fit (>= 2^44, or more than 510 devices) get synthetic numbers from the top
// device slot (511 << 44), allocated once per (dev, ino) for the life of the source.
//
// Confinement: every path call goes through Beneath (confine.ts), which has the kernel resolve the
// path beneath the root with openat2 and follow no symlink, so neither a client nor a local process
// swapping a directory for a symlink can make the server touch a file outside the tree.
//
// Known limits: names must be valid UTF-8 (Node's string paths).

import type { BigIntStats } from 'node:fs';
import * as fsp from './hostfs.js';
import { SYNC_IO_MAX, type FileHandle } from './hostfs.js';
import fs, { constants as C } from 'node:fs';
import path from 'node:path';
import { Errno, FsError } from '../lib/errno.js';
import { logger } from '../lib/log.js';
import { nativeSys, requireSys, splitXattrList } from '../lib/sys.js';
import {
  O_ACCMODE, O_APPEND, O_CREAT, O_DIRECT, O_EXCL, O_NOFOLLOW, O_RDONLY, O_RDWR, O_TRUNC, O_WRONLY, ROOT_ID,
  RENAME_EXCHANGE, SEEK_DATA, SEEK_HOLE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
  type Attr, type ChangeEvent, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type SetTime, type StatFs, type Vfs, markEnded,
} from '../vfs/types.js';
import { DirWatcher, type DirEventKind } from './dirwatch.js';
import { Beneath } from './confine.js';
import { ChangeListeners } from '../vfs/listeners.js';
import { HandleTable, NAME_MAX, W_OK, checkAccess, checkName, checkRenameFlags, checkTimespec, checkXattr, nsToTimespec } from './common.js';

const log = logger('sources');

const S_ISGID = 0o2000;
/** The server's own ids never change: asked once, not twice per file made (two system calls). */
const AS_ROOT = process.getuid?.() === 0;
const ROOT_GROUP = process.getegid?.() === 0;
const O_NONBLOCK = 0o4000;
const DEV_SHIFT = 2 ** 44;
const SYNTHETIC_SLOT = 511;
/** How much copyFileRange moves per call when it falls back to read + write. */
const COPY_CHUNK = 1 << 20;
const DEFAULT_MAX_FDS = 8192;

/** statfs f_type values (linux/magic.h) of file systems worth naming in info().type. */
const FS_TYPES = new Map<number, string>([
  [0xef53, 'ext4'], [0x58465342, 'xfs'], [0x9123683e, 'btrfs'], [0x01021994, 'tmpfs'], [0x9fa0, 'proc'],
  [0x62656572, 'sysfs'], [0x794c7630, 'overlay'], [0x6969, 'nfs'], [0x2fc12fc1, 'zfs'], [0xf2f52010, 'f2fs'],
  [0x4d44, 'vfat'], [0x2011bab0, 'exfat'], [0x65735546, 'fuse'], [0x858458f6, 'ramfs'], [0x73717368, 'squashfs'],
  [0x9660, 'iso9660'], [0x5346544e, 'ntfs'], [0xff534d42, 'cifs'], [0xfe534d42, 'smb2'], [0xca451a4e, 'bcachefs'],
  [0x64626720, 'debugfs'], [0x74726163, 'tracefs'], [0x63677270, 'cgroup2'], [0x1cd1, 'devpts'],
]);
/**
 * Pseudo file systems whose files report a size unrelated to what read returns (0 in /proc, 4096
 * in /sys): their files are opened with direct I/O so the kernel reads until EOF, not up to st_size.
 */
const PSEUDO_FS = new Set([0x9fa0, 0x62656572, 0x64626720, 0x74726163, 0x63677270, 0x27e0eb, 0x73636673, 0x62656570]);

interface Link {
  parent: PNode;
  name: string;
}

// One per node a client holds, so kept small (bench: 100 000 files held, server RSS 146 MB in all).
interface PNode {
  readonly id: number;
  /** The attribute ino (mapIno of dev and ino): unique per inode, so it keys byKey. */
  readonly key: number;
  /** The host's inode number, as stat shows it. */
  readonly ino: number;
  readonly type: number;
  /** The host device (one shared bigint per device). */
  readonly dev: bigint;
  /** The names the kernel knows this node by; the first gives its path. Empty once all are unlinked. */
  links: Link[];
  /** Known children by name (links whose parent is this node): a parent outlives its known children. */
  children: Map<string, PNode> | undefined;
  lookups: number;
  /** Open handles, made at the first open. */
  handles: Set<PHandle> | undefined;
  /** This file's big writes waiting for the pool, in the order they came (see write). */
  queued?: QueuedWrite[] | undefined;
  /** A pool write of this file is under way. */
  writing?: boolean;
  /** A stream of big writes: where the last ended, and the bytes written since writeback was started. */
  streamEnd?: number;
  streamed?: number;
  /** A writeback start (sync_file_range) is under way. */
  kicking?: boolean;
}

/** Reads up to this size try the page cache on the event loop first (see read). */
const NOWAIT_MAX = 256 * 1024;
/**
 * A file written in big writes one after the other is sent to the disk every this many bytes
 * (sync_file_range, SYNC_FILE_RANGE_WRITE: writeback starts, nothing waits), as PostgreSQL does
 * with its *_flush_after settings. Otherwise the host kernel starts writing only at its dirty
 * threshold (a tenth of memory) or at the fsync or close-to-disk the client ends with, and that
 * last call then writes the whole file while the client waits: measured on 1 GiB with
 * `dd conv=fsync`, 3.0 to 4.9 s without, 2.7 s with.
 */
const WRITEBACK_AFTER = 8 << 20;
const SYNC_FILE_RANGE_WRITE = 2;
/** Big writes of one handle that follow each other go to the host as one pwritev of at most this much. */
const GATHER_MAX = 16 << 20;
/** IOV_MAX on Linux: buffers per pwritev. */
const GATHER_BUFFERS = 1024;

interface QueuedWrite {
  h: PHandle;
  offset: number;
  /** The data, in the pieces it came in. */
  parts: Buffer[];
  length: number;
  /** Bytes written of it, once its pwritev returned. */
  done: number;
  settle(err?: unknown): void;
}

/** parts without their first n bytes. */
function skipBytes(parts: Buffer[], n: number): Buffer[] {
  if (n === 0) return parts;
  const out: Buffer[] = [];
  for (const p of parts) {
    if (n >= p.length) n -= p.length;
    else {
      out.push(n > 0 ? p.subarray(n) : p);
      n = 0;
    }
  }
  return out;
}

interface PHandle {
  fh: number;
  node: PNode;
  flags: number;
  file: FileHandle | undefined;
  /** A reopen in progress, shared by concurrent callers. */
  opening: Promise<FileHandle> | undefined;
  busy: number;
  closed: boolean;
  /** False once the file system refused RWF_NOWAIT reads (tmpfs does): no more tries. */
  nowait?: boolean;
}

interface DirHandle {
  node: PNode;
  /** Names listed at opendir (and again at each readdir from offset 0): cookie = index + 1. */
  snapshot: string[];
  /** The snapshot was just taken by opendir and not read yet: a first readdir from 0 uses it. */
  fresh: boolean;
}

export interface PassthroughOptions {
  /** Refuse every change with EROFS. */
  readOnly?: boolean;
  /** The most file descriptors open files may hold at once (default 8192); idle ones beyond are closed. */
  maxFds?: number;
  /** The type info() reports; PassthroughFs.open() sets it to the underlying file system's name. */
  type?: string;
  /** Do not watch for local changes (info().coherent is then false: clients must not cache long). */
  noWatch?: boolean;
}

/** Converts a Node system error to FsError; anything else is a bug and is rethrown unchanged. */
function sysError(err: unknown): unknown {
  if (err instanceof FsError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && code in Errno) return new FsError(Errno[code as keyof typeof Errno]);
  return err;
}


function modeOfType(st: BigIntStats): number {
  return Number(st.mode) & S_IFMT;
}

/** This process's umask, read once (reading it means setting it back). */
const UMASK = ((): number => {
  const m = process.umask(0o022);
  process.umask(m);
  return m;
})();

/**
 * Whether making a node with `mode` may not give exactly `mode`: this process's umask would clear
 * bits the caller asked for, or the mode has set-ID or sticky bits (mkdir ignores set-ID bits).
 */
function narrowed(mode: number): boolean {
  return (mode & 0o777 & UMASK) !== 0 || (mode & 0o7000) !== 0;
}

export class PassthroughFs implements Vfs {
  readonly root: string;
  private readonly readOnly: boolean;
  private readonly noWatch: boolean;
  private readonly maxFds: number;
  private readonly type: string;
  private readonly nodes = new Map<number, PNode>();
  private readonly byKey = new Map<number, PNode>();
  /** One bigint per host device, shared by its nodes. */
  private readonly devs = new Map<bigint, bigint>();
  private nextId = ROOT_ID;
  /** The exported root's device, learnt asynchronously at construction (see `ready`). */
  private rootDev = -1n;
  private readonly ready: Promise<void>;
  private readonly devIndex = new Map<bigint, number>();
  private readonly synthetic = new Map<string, number>();
  private readonly devFsType = new Map<bigint, Promise<number>>();
  private readonly files = new HandleTable<PHandle>();
  private readonly dirs = new HandleTable<DirHandle>();
  /** Handles holding an fd, least recently used first. */
  private readonly lru = new Map<PHandle, true>();
  private openFds = 0;
  private readonly fdWaiters: Array<() => void> = [];
  /** Change listeners: told of changes local processes make (inotify), never of our own. */
  private readonly listeners = new ChangeListeners((err) => log.warn(`a change listener failed: ${(err as Error).message}`));
  /** Watches every directory node while anyone listens (dirwatch.ts). */
  private watcher: DirWatcher | undefined;
  /**
   * What our own last change left at a path: `ino:ctime:size`, or "gone". A watch event whose path
   * still shows exactly that is the echo of our own change (the server already told the other
   * clients); anything else was done by someone else. Two changes within one tick of the host's
   * coarse clock with the same size look alike: such a local change goes unseen. Also kept under
   * "#ino", since an inode's hard links all show its latest change.
   */
  private readonly own = new Map<string, { sig: string; at: number }>();
  private ownSweep = 0;
  private closed = false;
  /** Every path call, resolved beneath the root. */
  private readonly fs: Beneath;

  constructor(root: string, opts: PassthroughOptions = {}) {
    this.root = path.resolve(root);
    this.readOnly = opts.readOnly ?? false;
    this.maxFds = Math.max(1, opts.maxFds ?? DEFAULT_MAX_FDS);
    this.type = opts.type ?? 'passthrough';
    this.noWatch = opts.noWatch ?? false;
    const rootNode: PNode = {
      id: this.nextId++, key: 0, ino: 0, type: S_IFDIR, dev: -1n, links: [], children: undefined, lookups: 1, handles: undefined,
    };
    this.nodes.set(rootNode.id, rootNode);
    this.fs = new Beneath(this.root);
    // No sync stat here: the root may sit under a FUSE mount this very process serves.
    this.ready = fsp.stat(this.root, { bigint: true }).then(
      async (st) => {
        this.rootDev = st.dev;
        await this.fs.start();
      },
      () => undefined, // a missing root shows up as ENOENT on every call instead
    ).catch((err: unknown) => log.warn(`${this.root}: cannot open the export root: ${String(err)}`));
  }

  /** Checks that root is a directory and names the type after the file system it lives on. */
  static async open(root: string, opts: Omit<PassthroughOptions, 'type'> = {}): Promise<PassthroughFs> {
    const abs = path.resolve(root);
    let st;
    try {
      st = await fsp.stat(abs);
    } catch (err) {
      const e = sysError(err);
      const why = e instanceof FsError && e.errno === Errno.ENOENT ? 'no such directory' : e instanceof Error ? e.message : String(e);
      throw new FsError(e instanceof FsError ? e.errno : Errno.EIO, `cannot export ${abs}: ${why}`);
    }
    if (!st.isDirectory()) throw new FsError(Errno.ENOTDIR, `cannot export ${abs}: not a directory`);
    let type = 'passthrough';
    try {
      type = FS_TYPES.get((await fsp.statfs(abs)).type) ?? 'passthrough';
    } catch {
      // statfs can fail on odd mounts; the generic name is still right.
    }
    return new PassthroughFs(abs, { ...opts, type });
  }

  /** Every operation runs through here: waits for the root's device, converts Node errors. */
  private async run<T>(fn: () => Promise<T>): Promise<T> {
    await this.ready;
    try {
      return await fn();
    } catch (err) {
      throw sysError(err);
    }
  }

  info(): FsInfo {
    // read() fills a new Buffer for each call (or a view of one).
    return { type: this.type, readOnly: this.readOnly, coherent: !this.noWatch, freshReads: true };
  }

  // --- nodes, paths and inode numbers ----------------------------------------------------------

  private node(id: number): PNode {
    if (this.closed) throw new FsError(Errno.EIO);
    const n = this.nodes.get(id);
    if (!n) throw new FsError(Errno.ESTALE);
    return n;
  }

  /** The node's current path, or undefined once every name it was known by is gone. */
  private pathOf(n: PNode): string | undefined {
    if (n.id === ROOT_ID) return this.root;
    const link = n.links[0];
    if (!link) return undefined;
    const dir = this.pathOf(link.parent);
    if (dir === undefined) return undefined;
    return dir === '/' ? `/${link.name}` : `${dir}/${link.name}`;
  }

  private pathOrStale(n: PNode): string {
    const p = this.pathOf(n);
    if (p === undefined) throw new FsError(Errno.ENOENT);
    return p;
  }

  private childPath(dir: PNode, name: string): string {
    const d = this.pathOrStale(dir);
    return d === '/' ? `/${name}` : `${d}/${name}`;
  }

  private mapIno(dev: bigint, ino: bigint): number {
    let slot = 0;
    if (dev !== this.rootDev) {
      slot = this.devIndex.get(dev) ?? 0;
      if (slot === 0) {
        slot = this.devIndex.size + 1;
        this.devIndex.set(dev, slot);
      }
    }
    if (slot < SYNTHETIC_SLOT && ino < BigInt(DEV_SHIFT)) return slot * DEV_SHIFT + Number(ino);
    const key = `${dev}:${ino}`;
    let n = this.synthetic.get(key);
    if (n === undefined) {
      n = SYNTHETIC_SLOT * DEV_SHIFT + this.synthetic.size + 1;
      this.synthetic.set(key, n);
    }
    return n;
  }

  private toAttr(st: BigIntStats): Attr {
    return {
      ino: this.mapIno(st.dev, st.ino),
      size: Number(st.size),
      blocks: Number(st.blocks),
      atime: nsToTimespec(st.atimeNs),
      mtime: nsToTimespec(st.mtimeNs),
      ctime: nsToTimespec(st.ctimeNs),
      mode: Number(st.mode),
      nlink: Number(st.nlink),
      uid: Number(st.uid),
      gid: Number(st.gid),
      // glibc's dev_t and the kernel's new_encode_dev() agree for majors < 4096, minors < 2^20.
      rdev: Number(st.rdev),
      blksize: Number(st.blksize),
    };
  }

  private addLink(n: PNode, parent: PNode, name: string): void {
    const prev = parent.children?.get(name);
    if (prev === n) return;
    if (prev) this.removeLink(prev, parent, name);
    n.links.push({ parent, name });
    (parent.children ??= new Map()).set(name, n);
  }

  private removeLink(n: PNode, parent: PNode, name: string): void {
    const i = n.links.findIndex((l) => l.parent === parent && l.name === name);
    if (i < 0) return;
    n.links.splice(i, 1);
    parent.children?.delete(name);
    if (parent.children?.size === 0) parent.children = undefined;
    this.maybeDrop(parent);
  }

  private maybeDrop(n: PNode): void {
    if (n.id === ROOT_ID || n.lookups > 0 || n.handles?.size || n.children) return;
    this.nodes.delete(n.id);
    this.watcher?.remove(n.id);
    if (this.byKey.get(n.key) === n) this.byKey.delete(n.key);
    for (const l of [...n.links]) this.removeLink(n, l.parent, l.name);
  }

  /** A node for the inode `st` describes (mapIno key `key`), with no name and no lookup yet. */
  private newNode(st: BigIntStats, key: number): PNode {
    let dev = this.devs.get(st.dev);
    if (dev === undefined) this.devs.set(st.dev, (dev = st.dev));
    const n: PNode = { id: this.nextId++, key, ino: Number(st.ino), type: modeOfType(st), dev, links: [], children: undefined, lookups: 0, handles: undefined };
    this.nodes.set(n.id, n);
    this.byKey.set(key, n);
    return n;
  }

  /** The node for a stat seen under parent/name (reusing the one for this dev:ino), with one lookup counted. */
  private entryFor(parent: PNode, name: string, st: BigIntStats): Entry {
    const key = this.mapIno(st.dev, st.ino);
    let n = this.byKey.get(key);
    if (n && n.type !== modeOfType(st)) {
      // The inode number was reused by a different file since: a new node.
      this.byKey.delete(key);
      n = undefined;
    }
    n ??= this.newNode(st, key);
    // Directories have one name: a directory seen elsewhere was moved there.
    if (n.type === S_IFDIR) for (const l of [...n.links]) if (l.parent !== parent || l.name !== name) this.removeLink(n, l.parent, l.name);
    this.addLink(n, parent, name);
    n.lookups++;
    if (n.type === S_IFDIR && this.watcher) this.watchDir(n);
    return { nodeid: n.id, generation: 0, attr: this.toAttr(st) };
  }

  private async lookupPath(parent: PNode, name: string): Promise<Entry> {
    const st = await this.fs.lstat(this.childPath(parent, name));
    return this.entryFor(parent, name, st);
  }

  /** The stat of a node: through an open fd when it has one and no name (unlinked while open). */
  private async statNode(n: PNode, h?: PHandle): Promise<BigIntStats> {
    const p = this.pathOf(n);
    if (h && h.node === n) return this.withFile(h, (f) => f.stat({ bigint: true }));
    if (p === undefined) {
      const any = n.handles?.values().next().value;
      if (!any) throw new FsError(Errno.ENOENT);
      return this.withFile(any, (f) => f.stat({ bigint: true }));
    }
    if (n.id === ROOT_ID) return this.fs.stat(p);
    return this.fs.lstat(p);
  }

  private writable(): void {
    if (this.readOnly) throw new FsError(Errno.EROFS);
  }

  /** Makes a new file the caller's, as if the caller had created it (the server runs as root). */
  private async ownAs(ctx: Ctx, parent: PNode, p: string, f?: FileHandle): Promise<void> {
    if (!AS_ROOT) return;
    // Made by this process as root:root: a root caller's file is already owned right (and in a
    // set-group-ID directory its group came from the directory, as it should).
    if (ctx.uid === 0 && ctx.gid === 0 && ROOT_GROUP) return;
    const pst = await this.statNode(parent);
    // In a set-group-ID directory the group comes from the directory (the kernel already did that).
    const gid = Number(pst.mode) & S_ISGID ? -1 : ctx.gid;
    if (f) await f.chown(ctx.uid, gid);
    else await this.fs.lchown(p, ctx.uid, gid);
  }

  // --- open files and the fd bound -------------------------------------------------------------

  /**
   * Counts one more fd, first closing the least recently used idle, reopenable file if at the
   * bound. When every fd is in use it waits for one to go idle; when none ever can (all held by
   * files unlinked while open) it fails with EMFILE.
   */
  private async reserveFd(): Promise<void> {
    while (this.openFds >= this.maxFds) {
      let victim: PHandle | undefined;
      let busy = false;
      let held = 0;
      for (const h of this.lru.keys()) {
        if (!h.file) continue;
        held++;
        if (h.node.links.length === 0) continue;
        if (h.busy === 0) {
          victim = h;
          break;
        }
        busy = true;
      }
      if (!victim) {
        // Fds not held by any handle are transient (opening, or short-lived): they come back.
        if (!busy && held >= this.openFds) throw new FsError(Errno.EMFILE);
        await new Promise<void>((resolve) => this.fdWaiters.push(resolve));
        continue;
      }
      const f = victim.file!;
      victim.file = undefined;
      this.lru.delete(victim);
      await f.close().catch((err: unknown) => log.warn(`closing an idle fd: ${String(err)}`));
      this.openFds--;
    }
    this.openFds++;
  }

  /** Wakes the callers waiting for an fd to go idle; they look again. */
  private wakeFdWaiters(): void {
    const waiters = this.fdWaiters.splice(0);
    for (const w of waiters) w();
  }

  /** Closes an fd counted by reserveFd. */
  private async closeFd(f: FileHandle): Promise<void> {
    try {
      await f.close();
    } finally {
      this.openFds--;
      this.wakeFdWaiters();
    }
  }

  private async openFd(p: string, flags: number, mode?: number): Promise<FileHandle> {
    await this.reserveFd();
    try {
      return await this.fs.open(p, flags, mode);
    } catch (err) {
      this.openFds--;
      throw err;
    }
  }

  /** Runs fn on the handle's fd, reopening it by path if the LRU closed it. */
  private async withFile<T>(h: PHandle, fn: (f: FileHandle) => Promise<T>): Promise<T> {
    if (h.closed || this.closed) throw new FsError(Errno.EBADF);
    h.busy++;
    try {
      let f = h.file;
      if (!f) {
        if (!h.opening) {
          const reopenFlags = (h.flags & ~(O_TRUNC | O_CREAT | O_EXCL)) | O_NOFOLLOW;
          h.opening = this.openFd(this.pathOrStale(h.node), reopenFlags).finally(() => {
            h.opening = undefined;
          });
        }
        f = await h.opening;
        if (h.closed) {
          await this.closeFd(f);
          throw new FsError(Errno.EBADF);
        }
        if (!h.file) h.file = f;
      }
      this.lru.delete(h);
      this.lru.set(h, true);
      return await fn(h.file ?? f);
    } finally {
      h.busy--;
      if (h.busy === 0 && this.fdWaiters.length > 0) this.wakeFdWaiters();
    }
  }

  /** Queues a big write of h's file (see write); resolves with the bytes written. */
  private queueWrite(h: PHandle, offset: number, parts: Buffer[], length: number): Promise<number> {
    const n = h.node;
    return new Promise<number>((resolve, reject) => {
      const w: QueuedWrite = { h, offset, parts, length, done: 0, settle: (err) => (err === undefined ? resolve(w.done) : reject(err)) };
      (n.queued ??= []).push(w);
      if (!n.writing) void this.drainWrites(n);
    });
  }

  /** Writes n's queued writes, one pwritev at a time, until none are left. */
  private async drainWrites(n: PNode): Promise<void> {
    n.writing = true;
    try {
      for (let q = n.queued; q && q.length > 0; q = n.queued) {
        const batch = [q.shift()!];
        const h = batch[0]!.h;
        let end = batch[0]!.offset + batch[0]!.length;
        let bytes = batch[0]!.length;
        let pieces = batch[0]!.parts.length;
        // On an O_APPEND fd the position is ignored: each write goes alone, as it came.
        while (!(h.flags & O_APPEND) && q.length > 0 && q[0]!.h === h && q[0]!.offset === end && bytes < GATHER_MAX &&
          pieces + q[0]!.parts.length <= GATHER_BUFFERS) {
          const next = q.shift()!;
          batch.push(next);
          end += next.length;
          bytes += next.length;
          pieces += next.parts.length;
        }
        let failure: unknown;
        try {
          await this.withFile(h, (f) => this.writeAll(f, batch));
        } catch (err) {
          failure = err;
        }
        // Each gets its own count; a failure is the error only of those that wrote nothing.
        for (const w of batch) w.settle(w.done > 0 || failure === undefined ? undefined : failure);
      }
    } finally {
      n.writing = false;
      if (n.queued?.length === 0) n.queued = undefined;
    }
  }

  /** pwritev of the batch at its first offset, on until all is written or the host writes nothing. */
  private async writeAll(f: FileHandle, batch: QueuedWrite[]): Promise<void> {
    let i = 0;
    while (i < batch.length) {
      const first = batch[i]!;
      const bufs = batch.slice(i).flatMap((w, k) => (k === 0 ? skipBytes(w.parts, w.done) : w.parts));
      const n = await f.writev(bufs, first.offset + first.done);
      if (n === 0) return;
      let left = n;
      while (left > 0 && i < batch.length) {
        const w = batch[i]!;
        const take = Math.min(left, w.length - w.done);
        w.done += take;
        left -= take;
        if (w.done === w.length) i++;
      }
    }
  }

  /** A big write of n bytes at offset landed: past WRITEBACK_AFTER of a sequential stream, start writeback. */
  private streaming(h: PHandle, offset: number, n: number): void {
    const node = h.node;
    node.streamed = (offset === node.streamEnd ? node.streamed ?? 0 : 0) + n;
    node.streamEnd = offset + n;
    this.startWriteback(h);
  }

  /** One sync_file_range at a time per file; what streamed in meanwhile gets the next. */
  private startWriteback(h: PHandle): void {
    const node = h.node;
    const sys = nativeSys();
    if ((node.streamed ?? 0) < WRITEBACK_AFTER || node.kicking || !sys?.syncFileRange) return;
    node.streamed = 0;
    node.kicking = true;
    // Whole file (0, 0): what is already being written is skipped. A failure changes nothing the
    // client sees (its fsync or close reports what the disk said), so it is not reported.
    void this.withFile(h, (f) => sys.syncFileRange!(f.fd, 0, 0, SYNC_FILE_RANGE_WRITE))
      .catch(() => undefined)
      .finally(() => {
        node.kicking = false;
        this.startWriteback(h);
      });
  }

  /** Open flags as passed to open(2): no create bits, no O_DIRECT (our buffers are not aligned),
   *  and write-only widened to read-write, since the kernel's writeback cache reads through any handle. */
  private hostFlags(flags: number): number {
    let f = flags & ~(O_CREAT | O_EXCL | O_DIRECT | 0o400 /* O_NOCTTY */);
    if ((f & O_ACCMODE) === O_WRONLY) f = (f & ~O_ACCMODE) | O_RDWR;
    return f | O_NOFOLLOW;
  }

  private async fsTypeOf(dev: bigint, p: string): Promise<number> {
    let t = this.devFsType.get(dev);
    if (!t) {
      t = this.fs.statfs(p).then((s) => s.type, () => 0);
      this.devFsType.set(dev, t);
    }
    return t;
  }

  /** `dir`: for a file without a name (reserve), a path on its file system. */
  private async openNode(n: PNode, flags: number, file?: FileHandle, dir?: string): Promise<OpenResult> {
    const p = dir ?? this.pathOrStale(n);
    if ((flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC)) this.writable();
    if (n.type === S_IFDIR) throw new FsError(Errno.EISDIR);
    if (n.type === S_IFLNK) throw new FsError(Errno.ELOOP);
    // Fifos, sockets and devices are opened by the client's kernel itself, never through FUSE.
    if (n.type !== S_IFREG) throw new FsError(Errno.ENXIO);
    let f = file;
    if (!f) {
      try {
        f = await this.openFd(p, this.hostFlags(flags));
      } catch (err) {
        // A read-only file may still be opened write-only as asked: retry without the widening.
        if ((flags & O_ACCMODE) !== O_WRONLY || (err as { code?: string }).code !== 'EACCES') throw err;
        f = await this.openFd(p, (flags & ~(O_CREAT | O_EXCL | O_DIRECT)) | O_NOFOLLOW);
      }
    }
    const h: PHandle = { fh: 0, node: n, flags, file: f, opening: undefined, busy: 0, closed: false };
    h.fh = this.files.add(h);
    this.lru.set(h, true);
    this.wakeFdWaiters();
    (n.handles ??= new Set()).add(h);
    const res: OpenResult = { fh: h.fh };
    if (PSEUDO_FS.has(await this.fsTypeOf(n.dev, p))) res.directIo = true;
    return res;
  }

  // --- Vfs: names ------------------------------------------------------------------------------

  async lookup(_ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return this.run(async () => {
      const d = this.node(parent);
      if (name === '.' || name === '..') {
        const target = name === '..' ? (d.links[0]?.parent ?? d) : d;
        const st = await this.statNode(target);
        target.lookups++;
        return { nodeid: target.id, generation: 0, attr: this.toAttr(st) };
      }
      checkName(name);
      return this.lookupPath(d, name);
    });
  }

  forget(nodeid: number, nlookup: number): void {
    const n = this.nodes.get(nodeid);
    if (!n || n.id === ROOT_ID) return;
    n.lookups = Math.max(0, n.lookups - nlookup);
    this.maybeDrop(n);
  }

  async getattr(_ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    return this.run(async () => this.toAttr(await this.statNode(this.node(nodeid), this.files.find(fh))));
  }

  async setattr(_ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    return this.run(async () => {
      this.writable();
      const n = this.node(nodeid);
      const p = this.pathOf(n);
      // An open file's own fd when the caller names it, or when the file has no name left.
      const given = this.files.find(fh);
      const h = given?.node === n ? given : p === undefined ? n.handles?.values().next().value : undefined;
      if (!h && p === undefined) throw new FsError(Errno.ENOENT);
      // The kernel names a handle only for ftruncate; for what any fd may do (chown, chmod, times,
      // stat) an open handle of the file is the inode itself, and spares resolving its path.
      const any = h ?? n.handles?.values().next().value;
      if (set.atime && set.atime !== 'now') checkTimespec(set.atime);
      if (set.mtime && set.mtime !== 'now') checkTimespec(set.mtime);
      if (set.uid !== undefined || set.gid !== undefined) {
        const uid = set.uid ?? -1;
        const gid = set.gid ?? -1;
        if (any) await this.withFile(any, (f) => f.chown(uid, gid));
        else await this.fs.lchown(p!, uid, gid);
      }
      if (set.mode !== undefined) {
        const mode = set.mode & 0o7777;
        if (any) await this.withFile(any, (f) => f.chmod(mode));
        else if (n.type === S_IFLNK) throw new FsError(Errno.EOPNOTSUPP);
        else await this.onPath(p!, n.type, (f) => f.chmod(mode), () => this.fs.chmod(p!, mode));
      }
      if (set.size !== undefined) {
        const size = set.size;
        if (!Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
        if (n.type === S_IFDIR) throw new FsError(Errno.EISDIR);
        if (n.type !== S_IFREG) throw new FsError(Errno.EINVAL);
        if (h) await this.withFile(h, (f) => f.truncate(size));
        else await this.onPath(p!, n.type, (f) => f.truncate(size), undefined, O_WRONLY);
      }
      if (set.atime !== undefined || set.mtime !== undefined) {
        await this.setTimes(n, any, p, set.atime, set.mtime);
      }
      const st = await this.statNode(n, any);
      this.noteOwn(p, st);
      return this.toAttr(st);
    });
  }

  /**
   * Runs fn on a short-lived fd opened with O_NOFOLLOW, so a symlink swapped in under the name is
   * not followed; other types than files and directories (devices, fifos) use the path call.
   */
  private async onPath(p: string, type: number, fn: (f: FileHandle) => Promise<void>, byPath?: () => Promise<void>, acc = O_RDONLY): Promise<void> {
    if (type !== S_IFREG && type !== S_IFDIR) {
      if (!byPath) throw new FsError(Errno.EINVAL);
      return byPath();
    }
    const f = await this.openFd(p, acc | O_NOFOLLOW | O_NONBLOCK);
    try {
      await fn(f);
    } finally {
      await this.closeFd(f);
    }
  }

  private async setTimes(n: PNode, h: PHandle | undefined, p: string | undefined, atime?: SetTime, mtime?: SetTime): Promise<void> {
    const sys = nativeSys();
    if (sys) {
      const conv = (t: SetTime | undefined): [number, number] =>
        t === undefined ? [0, sys.UTIME_OMIT] : t === 'now' ? [0, sys.UTIME_NOW] : [t.sec, t.nsec];
      const [as, an] = conv(atime);
      const [ms, mn] = conv(mtime);
      if (h) await this.withFile(h, async (f) => sys.futimensSync(f.fd, as, an, ms, mn));
      else await this.fs.child(p!, (s) => sys.utimensat(s, as, an, ms, mn, true));
      return;
    }
    // Without the addon: millisecond precision, and an omitted time is kept by reading it first.
    const st = await this.statNode(n);
    const sec = (t: SetTime | undefined, old: bigint): number =>
      t === undefined ? Number(old) / 1e9 : t === 'now' ? Date.now() / 1000 : t.sec + t.nsec / 1e9;
    const a = sec(atime, st.atimeNs);
    const m = sec(mtime, st.mtimeNs);
    if (h) await this.withFile(h, (f) => f.utimes(a, m));
    else await this.fs.lutimes(p!, a, m);
  }

  async readlink(_ctx: Ctx, nodeid: number): Promise<string> {
    return this.run(async () => {
      const n = this.node(nodeid);
      if (n.type !== S_IFLNK) throw new FsError(Errno.EINVAL);
      return this.fs.readlink(this.pathOrStale(n));
    });
  }

  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      const type = mode & S_IFMT || S_IFREG;
      if (type === S_IFDIR) throw new FsError(Errno.EPERM);
      if (type === S_IFREG && !nativeSys()) {
        const f = await this.openFd(p, C.O_CREAT | C.O_EXCL | C.O_WRONLY | C.O_NOFOLLOW, mode & 0o7777);
        await this.closeFd(f);
      } else {
        const sys = requireSys();
        await this.fs.child(p, (s) => sys.mknod(s, type | (mode & 0o7777), rdev));
      }
      await this.ownAs(ctx, d, p);
      // The server's umask must not narrow the mode the caller's kernel already masked.
      if (narrowed(mode)) await this.fs.chmod(p, mode & 0o7777);
      this.noteOwn(p);
      return this.lookupPath(d, name);
    });
  }

  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      await this.fs.mkdir(p, mode & 0o7777);
      await this.ownAs(ctx, d, p);
      // The server's umask must not narrow the mode the caller's kernel already masked; keep an
      // inherited set-group-ID bit.
      if (narrowed(mode)) {
        const st = await this.fs.lstat(p);
        await this.fs.chmod(p, (mode & 0o7777) | (Number(st.mode) & S_ISGID));
      }
      this.noteOwn(p);
      return this.lookupPath(d, name);
    });
  }

  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      await this.fs.symlink(target, p);
      await this.ownAs(ctx, d, p);
      this.noteOwn(p);
      return this.lookupPath(d, name);
    });
  }

  async link(_ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    return this.run(async () => {
      this.writable();
      checkName(newname);
      const n = this.node(nodeid);
      const d = this.node(newparent);
      const old = this.pathOrStale(n);
      const p = this.childPath(d, newname);
      await this.fs.link(old, p);
      this.noteOwn(old);
      this.noteOwn(p);
      return this.lookupPath(d, newname);
    });
  }

  async unlink(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      await this.fs.unlink(p);
      this.noteOwn(p, 'gone');
      this.forgetName(d, name);
    });
  }

  async rmdir(_ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      await this.fs.rmdir(p);
      this.noteOwn(p, 'gone');
      this.forgetName(d, name);
    });
  }

  private forgetName(d: PNode, name: string): void {
    const n = d.children?.get(name);
    if (!n) return;
    this.removeLink(n, d, name);
    this.maybeDrop(n);
  }

  async rename(_ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    return this.run(async () => {
      this.writable();
      checkRenameFlags(flags);
      checkName(name);
      checkName(newname);
      const sd = this.node(parent);
      const dd = this.node(newparent);
      const from = this.childPath(sd, name);
      const to = this.childPath(dd, newname);
      if (flags === 0) await this.fs.rename(from, to);
      else {
        const sys = requireSys();
        await this.fs.child(from, (a) => this.fs.child(to, (b) => sys.renameat2(a, b, flags)));
      }
      this.noteOwn(from);
      this.noteOwn(to);
      const src = sd.children?.get(name);
      const dst = dd.children?.get(newname);
      if (src) this.removeLink(src, sd, name);
      if (dst) this.removeLink(dst, dd, newname);
      // Add before any drop check so the parents keep their known-children count.
      if (src) this.addLink(src, dd, newname);
      if (dst && flags & RENAME_EXCHANGE) this.addLink(dst, sd, name);
      if (src) this.maybeDrop(src);
      if (dst) this.maybeDrop(dst);
    });
  }

  // --- Vfs: files ------------------------------------------------------------------------------

  async open(_ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.run(async () => this.openNode(this.node(nodeid), flags));
  }

  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const p = this.childPath(d, name);
      const f = await this.openFd(p, this.hostFlags(flags) | C.O_CREAT | C.O_EXCL, mode & 0o7777);
      let entry: Entry;
      let st: BigIntStats;
      try {
        await this.ownAs(ctx, d, p, f);
        if (narrowed(mode)) await f.chmod(mode & 0o7777);
        st = await f.stat({ bigint: true });
        entry = this.entryFor(d, name, st);
      } catch (err) {
        await this.closeFd(f);
        throw err;
      }
      const r = await this.openNode(this.node(entry.nodeid), flags, f);
      this.noteOwn(p, st);
      return { ...r, entry };
    });
  }

  async reserveFile(_ctx: Ctx, parent: number): Promise<CreateResult> {
    return this.run(async () => {
      this.writable();
      const d = this.node(parent);
      if (d.type !== S_IFDIR) throw new FsError(Errno.ENOTDIR);
      const dir = this.pathOrStale(d);
      await this.reserveFd();
      let f: FileHandle;
      try {
        f = await this.fs.tmpfile(dir, 0o600);
      } catch (err) {
        this.openFds--;
        throw err;
      }
      let st: BigIntStats;
      try {
        st = await f.stat({ bigint: true });
      } catch (err) {
        await this.closeFd(f);
        throw err;
      }
      // A node with no name yet (like a file unlinked while open): its handle keeps it, and the
      // fd LRU never closes it (it could not be reopened by a path).
      const n = this.newNode(st, this.mapIno(st.dev, st.ino));
      n.lookups++;
      const r = await this.openNode(n, O_RDWR, f, dir);
      return { ...r, entry: { nodeid: n.id, generation: 0, attr: this.toAttr(st) } };
    });
  }

  async nameReserved(ctx: Ctx, parent: number, name: string, nodeid: number, fh: number, mode: number): Promise<Attr> {
    return this.run(async () => {
      this.writable();
      checkName(name);
      const d = this.node(parent);
      const h = this.handle(nodeid, fh);
      if (h.node.links.length) throw new FsError(Errno.EINVAL, 'the file has a name already');
      const p = this.childPath(d, name);
      const st = await this.withFile(h, async (f) => {
        await this.fs.linkIn(f.fd, p);
        try {
          await this.ownAs(ctx, d, p, f);
          // After the chown, which clears set-ID bits; the file was made 0600.
          await f.chmod(mode & 0o7777);
          const now = Date.now() / 1000;
          await f.utimes(now, now);
          return await f.stat({ bigint: true });
        } catch (err) {
          await this.fs.unlink(p).catch(() => undefined);
          throw err;
        }
      });
      this.addLink(h.node, d, name);
      this.noteOwn(p, st);
      return this.toAttr(st);
    });
  }

  private handle(nodeid: number, fh: number): PHandle {
    const h = this.files.get(fh);
    if (h.node.id !== nodeid) throw new FsError(Errno.EBADF);
    return h;
  }

  async read(_ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return this.run(async () => {
      const h = this.handle(nodeid, fh);
      if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
      const buf = Buffer.allocUnsafe(size);
      let got = 0;
      let eof = false;
      await this.withFile(h, async (f) => {
        // A small read the host's page cache holds is copied at once, on this thread (RWF_NOWAIT
        // never waits for a disk): a pool thread and two wake-ups less. The rest goes to the pool,
        // and so do big reads, whose copying is better done beside this thread than on it.
        const sys = h.nowait === false || size > NOWAIT_MAX ? undefined : nativeSys();
        while (sys && got < size) {
          const n = sys.preadNowaitSync(f.fd, buf, got, size - got, offset + got);
          if (n > 0) got += n;
          else {
            eof = n === 0;
            if (n === -Errno.EOPNOTSUPP) h.nowait = false;
            break;
          }
        }
        // pread may return short before EOF (pseudo files, signals): read on until EOF or full.
        while (!eof && got < size) {
          const { bytesRead } = await f.read(buf, got, size - got, offset + got);
          if (bytesRead === 0) break;
          got += bytesRead;
        }
      });
      return got === size ? buf : buf.subarray(0, got);
    });
  }

  /** write() of data that came in pieces (a big WRITE off the socket): written as they are. */
  async writev(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer[]): Promise<number> {
    return this.writeParts(ctx, nodeid, fh, offset, data, data.reduce((n, b) => n + b.length, 0));
  }

  async write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.writeParts(ctx, nodeid, fh, offset, [data], data.length);
  }

  private async writeParts(_ctx: Ctx, nodeid: number, fh: number, offset: number, parts: Buffer[], length: number): Promise<number> {
    return this.run(async () => {
      this.writable();
      const h = this.handle(nodeid, fh);
      if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
      if (length > SYNC_IO_MAX) {
        // Big writes run on the thread pool, and a write-behind client keeps dozens of one file's
        // in flight. Buffered writes of one inode take its lock (i_rwsem) one at a time: side by
        // side in the pool the others only spun on it (writing 1 GiB on this 2-core VM cost the
        // server 2.0 to 2.6 s of system CPU, against 1.3 to 1.8 s one behind the other). But one
        // behind the other, each 1 MiB write waited for the last one's completion to reach this
        // thread and its own start to reach the pool: two wake-ups per megabyte, during which the
        // file was not written. So they queue per file, and what queued while one pwrite ran goes
        // next as one pwritev (those of the same handle that follow each other, up to GATHER_MAX).
        const written = await this.queueWrite(h, offset, parts, length);
        this.streaming(h, offset, written);
        this.noteOwn(this.pathOf(h.node));
        return written;
      }
      const data = parts.length === 1 ? parts[0]! : Buffer.concat(parts, length);
      let done = 0;
      await this.withFile(h, async (f) => {
        // On an O_APPEND fd Linux's pwrite appends whatever the position: exactly the contract.
        while (done < data.length) {
          const { bytesWritten } = await f.write(data, done, data.length - done, offset + done);
          if (bytesWritten === 0) break;
          done += bytesWritten;
        }
      });
      this.noteOwn(this.pathOf(h.node));
      return done;
    });
  }

  async flush(_ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.run(async () => {
      this.handle(nodeid, fh);
    });
  }

  async fsync(_ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.run(async () => {
      const h = this.handle(nodeid, fh);
      await this.withFile(h, (f) => (datasync ? f.datasync() : f.sync()));
    });
  }

  async release(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    return this.run(async () => {
      const h = this.files.delete(fh);
      if (!h) throw new FsError(Errno.EBADF);
      h.closed = true;
      h.node.handles?.delete(h);
      if (h.node.handles?.size === 0) h.node.handles = undefined;
      this.lru.delete(h);
      const f = h.file;
      h.file = undefined;
      this.maybeDrop(h.node);
      if (f) {
        await this.closeFd(f);
      }
    });
  }

  // --- Vfs: directories ------------------------------------------------------------------------

  async opendir(_ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return this.run(async () => {
      const n = this.node(nodeid);
      if (n.type !== S_IFDIR) throw new FsError(Errno.ENOTDIR);
      const snapshot = await this.fs.readdir(this.pathOrStale(n));
      // A directory handle keeps its node alive, like an open file.
      n.lookups++;
      return { fh: this.dirs.add({ node: n, snapshot, fresh: true }) };
    });
  }

  async readdir(_ctx: Ctx, _nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.run(async () => {
      const h = this.dirs.get(fh);
      if (this.closed) throw new FsError(Errno.EIO);
      if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
      const dir = h.node;
      const p = this.pathOrStale(dir);
      // A rewind sees the directory as it is now (rewinddir(3) must show later changes); the first
      // read of a handle opendir has just listed takes that listing.
      if (offset === 0 && !h.fresh) h.snapshot = await this.fs.readdir(p);
      h.fresh = false;
      const names = ['.', '..', ...h.snapshot];
      const slice = names.slice(offset, offset + Math.max(1, maxEntries));
      // The names' own attributes in one go, the directory pinned once; a name that vanished since
      // the snapshot comes back undefined and is skipped.
      // (Only the first two of all names are the dots: a slice from offset 2 on has none.)
      const dots = Math.max(0, 2 - offset);
      const own = await this.fs.lstatIn(p, slice.slice(dots));
      const stats = await Promise.all(slice.map((name, i) => {
        if (i >= dots) return own[i - dots];
        return this.statNode(name === '.' ? dir : dir.links[0]?.parent ?? dir).catch(() => undefined);
      }));
      const out: DirEntry[] = [];
      slice.forEach((name, i) => {
        const st = stats[i];
        if (!st) return;
        const de: DirEntry = { name, ino: this.mapIno(st.dev, st.ino), type: modeOfType(st), off: offset + i + 1 };
        if (plus && name !== '.' && name !== '..') de.entry = this.entryFor(dir, name, st);
        out.push(de);
      });
      return offset + slice.length >= names.length ? markEnded(out) : out;
    });
  }

  async fsyncdir(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    return this.run(async () => {
      const h = this.dirs.get(fh);
      const f = await this.openFd(this.pathOrStale(h.node), O_RDONLY | O_NOFOLLOW);
      try {
        await f.sync();
      } finally {
        await this.closeFd(f);
      }
    });
  }

  async releasedir(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    const h = this.dirs.delete(fh);
    if (!h) throw new FsError(Errno.EBADF);
    this.forget(h.node.id, 1);
  }

  // --- Vfs: the rest ---------------------------------------------------------------------------

  async statfs(_ctx: Ctx, nodeid: number): Promise<StatFs> {
    return this.run(async () => {
      const s = await this.fs.statfs(this.pathOf(this.node(nodeid)) ?? this.root);
      return {
        blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree,
        bsize: s.bsize, namelen: NAME_MAX, frsize: s.bsize,
      };
    });
  }

  /** A handle to use for an xattr call on a node that has lost all its names. */
  private orphanHandle(n: PNode): PHandle | undefined {
    return this.pathOf(n) === undefined ? n.handles?.values().next().value : undefined;
  }

  async setxattr(_ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    return this.run(async () => {
      this.writable();
      checkXattr(name, value);
      const sys = requireSys();
      const n = this.node(nodeid);
      const h = this.orphanHandle(n);
      if (h) await this.withFile(h, (f) => sys.fsetxattr(f.fd, name, value, flags));
      else await this.fs.child(this.pathOrStale(n), (s) => sys.lsetxattr(s, name, value, flags));
      this.noteOwn(this.pathOf(n));
    });
  }

  async getxattr(_ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return this.run(async () => {
      checkXattr(name);
      const sys = requireSys();
      const n = this.node(nodeid);
      const h = this.orphanHandle(n);
      if (h) return this.withFile(h, (f) => sys.fgetxattr(f.fd, name));
      return this.fs.child(this.pathOrStale(n), (s) => sys.lgetxattr(s, name));
    });
  }

  async listxattr(_ctx: Ctx, nodeid: number): Promise<string[]> {
    return this.run(async () => {
      const sys = requireSys();
      const n = this.node(nodeid);
      const h = this.orphanHandle(n);
      const raw = h ? await this.withFile(h, (f) => sys.flistxattr(f.fd)) : await this.fs.child(this.pathOrStale(n), (s) => sys.llistxattr(s));
      return splitXattrList(raw);
    });
  }

  async removexattr(_ctx: Ctx, nodeid: number, name: string): Promise<void> {
    return this.run(async () => {
      this.writable();
      checkXattr(name);
      const sys = requireSys();
      const n = this.node(nodeid);
      const h = this.orphanHandle(n);
      if (h) await this.withFile(h, (f) => sys.fremovexattr(f.fd, name));
      else await this.fs.child(this.pathOrStale(n), (s) => sys.lremovexattr(s, name));
      this.noteOwn(this.pathOf(n));
    });
  }

  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.run(async () => {
      const st = await this.statNode(this.node(nodeid));
      if (mask & W_OK && this.readOnly) throw new FsError(Errno.EROFS);
      checkAccess({ mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid) }, ctx, mask);
    });
  }

  async fallocate(_ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.run(async () => {
      this.writable();
      const h = this.handle(nodeid, fh);
      const sys = requireSys();
      await this.withFile(h, (f) => sys.fallocate(f.fd, mode, offset, length));
      this.noteOwn(this.pathOf(h.node));
    });
  }

  async lseek(_ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.run(async () => {
      if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(Errno.EINVAL);
      const h = this.handle(nodeid, fh);
      const sys = requireSys();
      // The fd's own position moves, which nothing else uses: reads and writes are positional.
      return this.withFile(h, (f) => sys.lseek(f.fd, offset, whence));
    });
  }

  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.run(async () => {
      this.writable();
      const src = this.handle(nodeIn, fhIn);
      const dst = this.handle(nodeOut, fhOut);
      if ((dst.flags & O_ACCMODE) === O_RDONLY || (dst.flags & O_APPEND)) throw new FsError(Errno.EBADF);
      if (![offIn, offOut, len].every((v) => Number.isSafeInteger(v) && v >= 0)) throw new FsError(Errno.EINVAL);
      if (src.node === dst.node && offIn < offOut + len && offOut < offIn + len) throw new FsError(Errno.EINVAL);
      // Node has no copy_file_range with offsets: one bounded read + write per call (the caller loops).
      const data = await this.read(ctx, nodeIn, fhIn, offIn, Math.min(len, COPY_CHUNK));
      if (data.length === 0) return 0;
      return this.write(ctx, nodeOut, fhOut, offOut, data);
    });
  }

  watch(listener: ChangeListener): () => void {
    const unwatch = this.listeners.add(listener);
    if (!this.watcher && !this.noWatch && !this.closed) {
      this.watcher = new DirWatcher((dirId, kind, name) => this.onLocalChange(dirId, kind, name));
      for (const n of this.nodes.values()) if (n.type === S_IFDIR) this.watchDir(n);
    }
    return unwatch;
  }

  // --- local changes ---------------------------------------------------------------------------

  private watchDir(n: PNode): void {
    const p = this.pathOf(n);
    if (p !== undefined) this.watcher?.add(n.id, p);
  }

  /** `st`: what an fstat of the file now at p gave just now, to save the lstat. */
  private static signature(p: string, st: BigIntStats | undefined = fs.lstatSync(p, { bigint: true, throwIfNoEntry: false })): string {
    if (!st) return 'gone';
    // A directory's ctime and size move with every name made in it, by us too: judge it by what a
    // local chmod, chown or replacement would change. Changes of its contents are reported by its
    // own watch, as events about its children.
    if ((Number(st.mode) & S_IFMT) === S_IFDIR) return `${st.ino}:d:${st.mode}:${st.uid}:${st.gid}`;
    return `${st.ino}:${st.ctimeNs}:${st.size}`;
  }

  /**
   * Records what our own change left at p, so its watch event is not taken for a local one. `st`:
   * the file's attributes taken after the change, or 'gone' after a removal (saves an lstat; and
   * a name a local process made again right after our removal is then reported, not taken for ours).
   */
  private noteOwn(p: string | undefined, st?: BigIntStats | 'gone'): void {
    if (!this.watcher || p === undefined) return;
    const now = Date.now();
    const sig = st === 'gone' ? 'gone' : PassthroughFs.signature(p, st);
    this.own.set(p, { sig, at: now });
    if (sig !== 'gone') this.own.set(`#${sig.slice(0, sig.indexOf(':'))}`, { sig, at: now });
    // Events arrive within milliseconds; records older than that only take memory.
    if (now - this.ownSweep > 10_000 || this.own.size > 100_000) {
      this.ownSweep = now;
      for (const [k, v] of this.own) if (now - v.at > 5000) this.own.delete(k);
    }
  }

  /** Local changes are not waited for: nobody's reply depends on them. */
  private emit(events: ChangeEvent[]): void {
    for (const ev of events) void this.listeners.emit(ev);
  }

  /** A watched directory saw a change: report it unless it is the echo of our own. */
  private onLocalChange(dirId: number, kind: DirEventKind, name: string | null, attempt = 0): void {
    const d = this.nodes.get(dirId);
    if (!d || this.closed) return;
    const whole = (nodeid: number): ChangeEvent => ({ kind: 'inode', nodeid, off: -1, len: 0 });
    if (name === null) {
      this.emit([whole(d.id)]);
      return;
    }
    const dirPath = this.pathOf(d);
    if (dirPath === undefined) return;
    // A change to the contents or attributes of a name no client was handed (one of our unnamed
    // reserved files, shown as "#<ino>", or a host file nobody looked up) concerns no cache:
    // nothing to report, and no lstat to tell ours from others'.
    if (kind === 'change' && !d.children?.has(name) && name !== path.basename(dirPath)) return;
    const p = dirPath === '/' ? `/${name}` : `${dirPath}/${name}`;
    const sig = PassthroughFs.signature(p);
    // An event about the watched directory itself comes with the directory's own name (libuv
    // names self events so): its attributes changed, or it was removed. The parent's watch reports
    // the same change as a child of its own, so only a change to its attributes is news here.
    if (name === path.basename(dirPath) && sig === 'gone' && !d.children?.has(name)) {
      const selfSig = PassthroughFs.signature(dirPath);
      const mineSelf = this.own.get(dirPath);
      if (selfSig !== 'gone' && !(mineSelf && mineSelf.sig === selfSig)) this.emit([whole(d.id)]);
      return;
    }
    const mine = this.own.get(p);
    if (mine && mine.sig === sig) return;
    const byIno = sig !== 'gone' ? this.own.get(`#${sig.slice(0, sig.indexOf(':'))}`) : undefined;
    if (byIno?.sig === sig) return;
    // We changed this very file a moment ago: one of our calls on it may still be running (its
    // last step on the thread pool), so look again shortly before calling it someone else's.
    const now = Date.now();
    if (attempt < 3 && ((mine && now - mine.at < 1000) || (byIno && now - byIno.at < 1000))) {
      setTimeout(() => this.onLocalChange(dirId, kind, name, attempt + 1), 50).unref();
      return;
    }
    this.own.delete(p);
    const child = d.children?.get(name);
    if (kind === 'change') {
      if (child) this.emit([whole(child.id)]);
      return;
    }
    const events: ChangeEvent[] = [{ kind: 'entry', parent: d.id, name }, whole(d.id)];
    if (child) {
      events.push(whole(child.id));
      // The name now leads elsewhere or nowhere: stop using it as the child's path.
      if (sig === 'gone' || !sig.startsWith(`${child.ino}:`)) {
        this.removeLink(child, d, name);
        this.maybeDrop(child);
      }
    }
    this.emit(events);
  }

  async close(): Promise<void> {
    this.closed = true;
    const open = [...this.files.values()];
    this.files.clear();
    this.dirs.clear();
    this.lru.clear();
    await Promise.all(open.map(async (h) => {
      h.closed = true;
      const f = h.file;
      h.file = undefined;
      if (f) await f.close().catch(() => undefined);
    }));
    this.openFds = 0;
    this.fs.close();
    this.listeners.clear();
    this.watcher?.close();
    this.watcher = undefined;
    this.nodes.clear();
    this.byKey.clear();
  }
}
