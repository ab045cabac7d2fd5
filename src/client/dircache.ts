// What a client knows of directories without asking, kept exact by the server's pushes:
//
// 1. Complete name lists of directories this client made: a lookup of a name that is not in one is
//    answered "no such file" here, with no round trip. Every file a program creates is looked up
//    first (the kernel asks LOOKUP before CREATE, O_EXCL or not), so extracting a tarball or
//    checking out a tree would pay one round trip per file for an answer this client already knows.
// 2. Directory attributes as the server sent them after this client's own create, unlink or
//    rename (protocol 1.1): the kernel drops a directory's attributes at each such change and asks
//    again at the next path walk through it; that GETATTR is answered here.
//
// The list is exact because the server pushes every change to a directory to the sessions that
// hold it (and this session holds what it made, until its kernel forgets it): any push naming a
// directory, or a forget of it, drops its list and lookups go to the server again. Changes by
// local processes on the server host arrive through inotify a few milliseconds late; until then
// this cache says what a negative dentry in the kernel would have said.

import { Errno, FsError } from '../lib/errno.js';
import type {
  Attr, ChangeListener, CreateResult, Ctx, DirEntry, Entry, FsInfo, OpenResult, SetAttr, StatFs, Vfs,
} from '../vfs/types.js';

/** Directories tracked at most; beyond it the oldest list is dropped. */
const MAX_DIRS = 10_000;
/** Names per directory at most; a larger directory stops being tracked. */
const MAX_NAMES = 100_000;
/** Directory attributes are kept at most this long (the kernel's own bound for a coherent mount). */
const ATTR_TTL_MS = 60_000;
const MAX_ATTRS = 10_000;

export class DirCacheVfs implements Vfs {
  /** Directory id -> every name in it, for directories made by this client and unchanged since. */
  private readonly known = new Map<number, Set<string>>();
  /** Directory id -> its attributes as of our last change to it, for as long as nothing else changed it. */
  private readonly attrs = new Map<number, { attr: Attr; at: number }>();
  private readonly unwatch: () => void;
  private readonly unhint: () => void;
  private readonly counters = { answered: 0, attrsAnswered: 0 };

  /** `hints`: subscribes to post-change directory attributes (RemoteVfs.onDirAttr). */
  constructor(private readonly inner: Vfs, hints?: (l: (nodeid: number, attr: Attr) => void) => () => void) {
    this.unwatch = inner.watch((ev) => {
      const dir = ev.kind === 'inode' ? ev.nodeid : ev.parent;
      this.known.delete(dir);
      this.attrs.delete(dir);
    });
    this.unhint = hints?.((nodeid, attr) => {
      if (this.attrs.size >= MAX_ATTRS) this.attrs.delete(this.attrs.keys().next().value!);
      this.attrs.delete(nodeid);
      this.attrs.set(nodeid, { attr, at: Date.now() });
    }) ?? ((): void => {});
  }

  stats(): { knownDirs: number; lookupsAnswered: number; dirAttrs: number; getattrsAnswered: number } {
    return { knownDirs: this.known.size, lookupsAnswered: this.counters.answered, dirAttrs: this.attrs.size, getattrsAnswered: this.counters.attrsAnswered };
  }

  private add(dir: number, name: string): void {
    const names = this.known.get(dir);
    if (!names) return;
    if (names.size >= MAX_NAMES) this.known.delete(dir);
    else names.add(name);
  }

  private remove(dir: number, name: string): void {
    this.known.get(dir)?.delete(name);
  }

  info(): FsInfo {
    return this.inner.info();
  }
  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    const names = this.known.get(parent);
    if (names && !names.has(name) && name !== '.' && name !== '..') {
      this.counters.answered++;
      throw new FsError(Errno.ENOENT);
    }
    return this.inner.lookup(ctx, parent, name);
  }
  forget(nodeid: number, nlookup: number): void {
    // The server stops telling us about a directory the kernel no longer holds.
    this.known.delete(nodeid);
    this.attrs.delete(nodeid);
    this.inner.forget(nodeid, nlookup);
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    const got = this.attrs.get(nodeid);
    if (got && Date.now() - got.at < ATTR_TTL_MS) {
      this.counters.attrsAnswered++;
      return { ...got.attr };
    }
    return this.inner.getattr(ctx, nodeid, fh);
  }
  setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    this.attrs.delete(nodeid);
    return this.inner.setattr(ctx, nodeid, set, fh);
  }
  readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return this.inner.readlink(ctx, nodeid);
  }
  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    const e = await this.changing(parent, this.inner.mknod(ctx, parent, name, mode, rdev));
    this.add(parent, name);
    return e;
  }
  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    const e = await this.changing(parent, this.inner.mkdir(ctx, parent, name, mode));
    this.add(parent, name);
    if (this.known.size >= MAX_DIRS) this.known.delete(this.known.keys().next().value!);
    // A directory we just made holds nothing but what we put in it (until a push says otherwise).
    this.known.set(e.nodeid, new Set());
    return e;
  }
  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    const e = await this.changing(parent, this.inner.symlink(ctx, parent, name, target));
    this.add(parent, name);
    return e;
  }
  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    const e = await this.changing(newparent, this.inner.link(ctx, nodeid, newparent, newname));
    this.add(newparent, newname);
    return e;
  }
  /** Runs a change to directory `dir`; if it fails, our list of the directory is no longer sure. */
  private async changing<T>(dir: number, op: Promise<T>): Promise<T> {
    try {
      return await op;
    } catch (err) {
      this.known.delete(dir);
      throw err;
    }
  }
  async unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    await this.changing(parent, this.inner.unlink(ctx, parent, name));
    this.remove(parent, name);
  }
  async rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    await this.changing(parent, this.inner.rmdir(ctx, parent, name));
    this.remove(parent, name);
  }
  async rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    try {
      await this.inner.rename(ctx, parent, name, newparent, newname, flags);
    } catch (err) {
      // Whatever happened, what we knew of both directories is no longer certain.
      for (const d of [parent, newparent]) {
        this.known.delete(d);
        this.attrs.delete(d);
      }
      throw err;
    }
    const exchange = (flags & 2) !== 0;
    if (!exchange) this.remove(parent, name);
    this.add(newparent, newname);
  }
  open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.inner.open(ctx, nodeid, flags);
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    const r = await this.changing(parent, this.inner.create(ctx, parent, name, mode, flags));
    this.add(parent, name);
    return r;
  }
  read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    return this.inner.read(ctx, nodeid, fh, offset, size);
  }
  write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.inner.write(ctx, nodeid, fh, offset, data);
  }
  flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.inner.flush(ctx, nodeid, fh);
  }
  fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.inner.fsync(ctx, nodeid, fh, datasync);
  }
  release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.inner.release(ctx, nodeid, fh);
  }
  opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return this.inner.opendir(ctx, nodeid);
  }
  readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.inner.readdir(ctx, nodeid, fh, offset, maxEntries, plus);
  }
  fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.inner.fsyncdir(ctx, nodeid, fh, datasync);
  }
  releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.inner.releasedir(ctx, nodeid, fh);
  }
  statfs(ctx: Ctx, nodeid: number): Promise<StatFs> {
    return this.inner.statfs(ctx, nodeid);
  }
  setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    return this.inner.setxattr(ctx, nodeid, name, value, flags);
  }
  getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return this.inner.getxattr(ctx, nodeid, name);
  }
  listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    return this.inner.listxattr(ctx, nodeid);
  }
  removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    return this.inner.removexattr(ctx, nodeid, name);
  }
  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.inner.access(ctx, nodeid, mask);
  }
  fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.inner.fallocate(ctx, nodeid, fh, mode, offset, length);
  }
  lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.inner.lseek(ctx, nodeid, fh, offset, whence);
  }
  copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.inner.copyFileRange(ctx, nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len);
  }
  watch(listener: ChangeListener): () => void {
    return this.inner.watch(listener);
  }
  async close(): Promise<void> {
    this.unwatch();
    this.unhint();
    await this.inner.close();
  }
}
