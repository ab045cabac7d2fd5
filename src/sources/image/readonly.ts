// The Vfs half that every read-only image driver shares: node ids and lookup counts, directory
// listings (cached, since the image never changes), open handles, access checks, and EROFS for
// every change. A driver supplies only how to find the root, list a directory, read file bytes,
// read a link and read xattrs, in terms of its own node objects.

import { Errno, FsError } from '../../lib/errno.js';
import {
  O_ACCMODE, O_RDONLY, O_TRUNC, ROOT_ID, SEEK_DATA, SEEK_HOLE, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Vfs,
} from '../../vfs/types.js';
import { HandleTable, checkAccess, checkName, checkXattr } from '../common.js';

/** What a driver knows of one file: a key unique within the image, and its attributes. */
export interface ImageNode {
  /** Stable identity within the image (an inode number, a record's byte offset, ...). */
  readonly key: number;
  readonly attr: Attr;
}

export interface ImageChild<N extends ImageNode> {
  name: string;
  node: N;
}

interface Known<N extends ImageNode> {
  node: N;
  /** The node id of the directory it was reached through ("..": directories have one parent). */
  parent: number;
  lookups: number;
  opens: number;
}

/** Directory listings kept parsed; a read-only image never invalidates them. */
const LISTING_CACHE = 256;

export abstract class ReadOnlyImageFs<N extends ImageNode> implements Vfs {
  private readonly byId = new Map<number, Known<N>>();
  private readonly idByKey = new Map<number, number>();
  private nextId = ROOT_ID + 1;
  private readonly listings = new Map<number, { list: ImageChild<N>[]; byName: Map<string, N> }>();
  private readonly files = new HandleTable<number>();
  private readonly dirs = new HandleTable<{ nodeid: number; list: ImageChild<N>[] }>();
  private closed = false;

  protected constructor(root: N, private readonly type: string) {
    this.byId.set(ROOT_ID, { node: root, parent: ROOT_ID, lookups: 1, opens: 0 });
    this.idByKey.set(root.key, ROOT_ID);
  }

  /** The entries of a directory, without "." and "..". */
  protected abstract listDirectory(dir: N): Promise<ImageChild<N>[]>;
  /** Exactly the bytes [off, off+len) of a regular file; the caller has clipped them to its size. */
  protected abstract readData(file: N, off: number, len: number): Promise<Buffer>;
  protected abstract readLink(link: N): Promise<string>;
  protected abstract readXattrs(node: N): Promise<Map<string, Buffer>>;
  protected abstract fsStat(): StatFs;
  /** Releases the image. */
  protected abstract closeImage(): Promise<void>;

  info(): FsInfo {
    return { type: this.type, readOnly: true, coherent: true };
  }

  // --- nodes ----------------------------------------------------------------------------------

  private known(nodeid: number): Known<N> {
    if (this.closed) throw new FsError(Errno.EIO);
    const k = this.byId.get(nodeid);
    if (!k) throw new FsError(Errno.ESTALE);
    return k;
  }

  private dirNode(nodeid: number): Known<N> {
    const k = this.known(nodeid);
    if ((k.node.attr.mode & S_IFMT) !== S_IFDIR) throw new FsError(Errno.ENOTDIR);
    return k;
  }

  /** Counts one lookup of `node`, reached through directory `parent`; returns its entry. */
  private enter(node: N, parent: number): Entry {
    let id = this.idByKey.get(node.key);
    let k = id === undefined ? undefined : this.byId.get(id);
    if (id === undefined || !k) {
      id = this.nextId++;
      k = { node, parent, lookups: 0, opens: 0 };
      this.byId.set(id, k);
      this.idByKey.set(node.key, id);
    }
    k.lookups++;
    return { nodeid: id, generation: 0, attr: { ...k.node.attr } };
  }

  private maybeDrop(id: number, k: Known<N>): void {
    if (id === ROOT_ID || k.lookups > 0 || k.opens > 0) return;
    this.byId.delete(id);
    this.idByKey.delete(k.node.key);
  }

  private async listing(k: Known<N>): Promise<{ list: ImageChild<N>[]; byName: Map<string, N> }> {
    const key = k.node.key;
    const hit = this.listings.get(key);
    if (hit) {
      this.listings.delete(key);
      this.listings.set(key, hit);
      return hit;
    }
    const list = await this.listDirectory(k.node);
    const byName = new Map<string, N>();
    for (const c of list) if (!byName.has(c.name)) byName.set(c.name, c.node);
    const l = { list, byName };
    this.listings.set(key, l);
    if (this.listings.size > LISTING_CACHE) this.listings.delete(this.listings.keys().next().value as number);
    return l;
  }

  // --- Vfs: reading ----------------------------------------------------------------------------

  async lookup(_ctx: Ctx, parent: number, name: string): Promise<Entry> {
    const d = this.dirNode(parent);
    if (name === '.') return this.enter(d.node, d.parent);
    if (name === '..') {
      const p = this.known(d.parent);
      return this.enter(p.node, p.parent);
    }
    checkName(name);
    const child = (await this.listing(d)).byName.get(name);
    if (!child) throw new FsError(Errno.ENOENT);
    return this.enter(child, parent);
  }

  forget(nodeid: number, nlookup: number): void {
    const k = this.byId.get(nodeid);
    if (!k) return;
    k.lookups = Math.max(0, k.lookups - nlookup);
    this.maybeDrop(nodeid, k);
  }

  async getattr(_ctx: Ctx, nodeid: number, _fh?: number): Promise<Attr> {
    return { ...this.known(nodeid).node.attr };
  }

  async readlink(_ctx: Ctx, nodeid: number): Promise<string> {
    const k = this.known(nodeid);
    if ((k.node.attr.mode & S_IFMT) !== S_IFLNK) throw new FsError(Errno.EINVAL);
    return this.readLink(k.node);
  }

  async open(_ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    const k = this.known(nodeid);
    const type = k.node.attr.mode & S_IFMT;
    if (type === S_IFDIR) throw new FsError(Errno.EISDIR);
    if (type === S_IFLNK) throw new FsError(Errno.ELOOP);
    if ((flags & O_ACCMODE) !== O_RDONLY || (flags & O_TRUNC)) throw new FsError(Errno.EROFS);
    k.opens++;
    // The image never changes under us, so the kernel may keep its cached pages across opens.
    return { fh: this.files.add(nodeid), keepCache: true };
  }

  private openFile(nodeid: number, fh: number): Known<N> {
    const id = this.files.get(fh);
    if (id !== nodeid) throw new FsError(Errno.EBADF);
    const k = this.known(id);
    if ((k.node.attr.mode & S_IFMT) !== S_IFREG) throw new FsError(Errno.EINVAL);
    return k;
  }

  async read(_ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    const k = this.openFile(nodeid, fh);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
    const fileSize = k.node.attr.size;
    if (offset >= fileSize || size === 0) return Buffer.alloc(0);
    return this.readData(k.node, offset, Math.min(size, fileSize - offset));
  }

  async flush(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    this.files.get(fh);
  }

  async fsync(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    this.files.get(fh);
  }

  async release(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    const id = this.files.delete(fh);
    if (id === undefined) throw new FsError(Errno.EBADF);
    const k = this.byId.get(id);
    if (k) {
      k.opens--;
      this.maybeDrop(id, k);
    }
  }

  async opendir(_ctx: Ctx, nodeid: number): Promise<OpenResult> {
    const k = this.dirNode(nodeid);
    const { list } = await this.listing(k);
    k.opens++;
    return { fh: this.dirs.add({ nodeid, list }), keepCache: true };
  }

  async readdir(_ctx: Ctx, _nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    const h = this.dirs.get(fh);
    const d = this.known(h.nodeid);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
    const parent = this.known(d.parent);
    const out: DirEntry[] = [];
    const max = Math.max(1, maxEntries);
    // Cookie i + 1 for position i, where 0 is "." and 1 is "..".
    for (let i = offset; i < h.list.length + 2 && out.length < max; i++) {
      if (i === 0) out.push({ name: '.', ino: d.node.attr.ino, type: S_IFDIR, off: 1 });
      else if (i === 1) out.push({ name: '..', ino: parent.node.attr.ino, type: S_IFDIR, off: 2 });
      else {
        const c = h.list[i - 2]!;
        const de: DirEntry = { name: c.name, ino: c.node.attr.ino, type: c.node.attr.mode & S_IFMT, off: i + 1 };
        if (plus) de.entry = this.enter(c.node, h.nodeid);
        out.push(de);
      }
    }
    return out;
  }

  async fsyncdir(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    this.dirs.get(fh);
  }

  async releasedir(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    const h = this.dirs.delete(fh);
    if (!h) throw new FsError(Errno.EBADF);
    const k = this.byId.get(h.nodeid);
    if (k) {
      k.opens--;
      this.maybeDrop(h.nodeid, k);
    }
  }

  async statfs(_ctx: Ctx, _nodeid: number): Promise<StatFs> {
    if (this.closed) throw new FsError(Errno.EIO);
    return this.fsStat();
  }

  async getxattr(_ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    checkXattr(name);
    const v = (await this.readXattrs(this.known(nodeid).node)).get(name);
    if (!v) throw new FsError(Errno.ENODATA);
    return v;
  }

  async listxattr(_ctx: Ctx, nodeid: number): Promise<string[]> {
    return [...(await this.readXattrs(this.known(nodeid).node)).keys()];
  }

  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    const attr = this.known(nodeid).node.attr;
    // Linux refuses W_OK on a read-only file system with EROFS whatever the mode says.
    if (mask & 2) throw new FsError(Errno.EROFS);
    checkAccess(attr, ctx, mask);
  }

  async lseek(_ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    const k = this.openFile(nodeid, fh);
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(Errno.EINVAL);
    const size = k.node.attr.size;
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= size) throw new FsError(Errno.ENXIO);
    // Holes are not reported: the whole file counts as data, which SEEK_DATA/SEEK_HOLE allow.
    return whence === SEEK_DATA ? offset : size;
  }

  // --- Vfs: every change is refused ------------------------------------------------------------

  private async refuse(nodeid: number): Promise<never> {
    this.known(nodeid);
    throw new FsError(Errno.EROFS);
  }

  setattr(_ctx: Ctx, nodeid: number, _set: SetAttr): Promise<Attr> { return this.refuse(nodeid); }
  mknod(_ctx: Ctx, parent: number): Promise<Entry> { return this.refuse(parent); }
  mkdir(_ctx: Ctx, parent: number): Promise<Entry> { return this.refuse(parent); }
  symlink(_ctx: Ctx, parent: number): Promise<Entry> { return this.refuse(parent); }
  link(_ctx: Ctx, nodeid: number): Promise<Entry> { return this.refuse(nodeid); }
  unlink(_ctx: Ctx, parent: number): Promise<void> { return this.refuse(parent); }
  rmdir(_ctx: Ctx, parent: number): Promise<void> { return this.refuse(parent); }
  rename(_ctx: Ctx, parent: number): Promise<void> { return this.refuse(parent); }
  create(_ctx: Ctx, parent: number): Promise<CreateResult> { return this.refuse(parent); }
  write(_ctx: Ctx, nodeid: number): Promise<number> { return this.refuse(nodeid); }
  setxattr(_ctx: Ctx, nodeid: number): Promise<void> { return this.refuse(nodeid); }
  removexattr(_ctx: Ctx, nodeid: number): Promise<void> { return this.refuse(nodeid); }
  fallocate(_ctx: Ctx, nodeid: number): Promise<void> { return this.refuse(nodeid); }
  copyFileRange(_ctx: Ctx, _nodeIn: number, _fhIn: number, _offIn: number, nodeOut: number): Promise<number> {
    return this.refuse(nodeOut);
  }

  watch(_listener: ChangeListener): () => void {
    // Nothing changes a read-only image behind the caller's back.
    return () => {};
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.files.clear();
    this.dirs.clear();
    this.byId.clear();
    this.idByKey.clear();
    this.listings.clear();
    await this.closeImage();
  }
}
