// MemoryFs: a complete POSIX file system held in memory (the `mem:` source, the demo tree and the
// reference every other source is compared with in the conformance tests). File data is sparse:
// 64 KiB chunks allocated on first write, so holes cost nothing and SEEK_DATA/SEEK_HOLE are real.
// Every operation runs to completion synchronously inside its promise, so each one is atomic.

import { Errno, FsError } from '../lib/errno.js';
import {
  O_ACCMODE, O_APPEND, O_RDONLY, O_TRUNC, RENAME_EXCHANGE, RENAME_NOREPLACE, ROOT_ID, SEEK_DATA, SEEK_HOLE,
  S_IFBLK, S_IFCHR, S_IFDIR, S_IFIFO, S_IFLNK, S_IFMT, S_IFREG, S_IFSOCK, XATTR_CREATE, XATTR_REPLACE,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Timespec, type Vfs, markEnded,
} from '../vfs/types.js';
import {
  HandleTable, NAME_MAX, PATH_MAX, checkAccess, checkName, checkRenameFlags, checkTimespec, checkXattr, now,
} from './common.js';

const CHUNK = 64 * 1024;
/** Chunk buffers grow in steps of this, so usage is counted like a block file system's. */
const GROW = 4096;
const BLKSIZE = 4096;
const S_ISUID = 0o4000;
const S_ISGID = 0o2000;
const FALLOC_FL_KEEP_SIZE = 0x01;
const FALLOC_FL_PUNCH_HOLE = 0x02;
const FALLOC_FL_ZERO_RANGE = 0x10;
/** The largest file size: byte offsets must stay exact in a double. */
const MAX_FILE = Number.MAX_SAFE_INTEGER;

/** Sparse file contents: chunk index -> buffer of at most CHUNK bytes; absent chunks are holes. */
class Chunks {
  readonly map = new Map<number, Buffer>();

  /** Bytes a write of [off, off+len) would add to the allocation (checked before writing). */
  growth(off: number, len: number): number {
    let add = 0;
    for (let pos = off; pos < off + len;) {
      const idx = Math.floor(pos / CHUNK);
      const base = idx * CHUNK;
      const end = Math.min(off + len, base + CHUNK);
      const have = this.map.get(idx)?.length ?? 0;
      const need = roundUp(end - base);
      if (need > have) add += need - have;
      pos = end;
    }
    return add;
  }

  /** Copies data in at off; returns the bytes newly allocated. */
  write(off: number, data: Buffer): number {
    let added = 0;
    for (let done = 0; done < data.length;) {
      const pos = off + done;
      const idx = Math.floor(pos / CHUNK);
      const inChunk = pos - idx * CHUNK;
      const n = Math.min(data.length - done, CHUNK - inChunk);
      let buf = this.map.get(idx);
      const need = roundUp(inChunk + n);
      if (!buf || buf.length < need) {
        const grown = Buffer.alloc(need);
        if (buf) buf.copy(grown);
        added += need - (buf?.length ?? 0);
        buf = grown;
        this.map.set(idx, buf);
      }
      data.copy(buf, inChunk, done, done + n);
      done += n;
    }
    return added;
  }

  /** Materializes [off, off+len) as zeros where it is a hole (fallocate); returns bytes added. */
  allocate(off: number, len: number): number {
    let added = 0;
    for (let pos = off; pos < off + len;) {
      const idx = Math.floor(pos / CHUNK);
      const base = idx * CHUNK;
      const end = Math.min(off + len, base + CHUNK);
      const buf = this.map.get(idx);
      const need = roundUp(end - base);
      if (!buf || buf.length < need) {
        const grown = Buffer.alloc(need);
        if (buf) buf.copy(grown);
        added += need - (buf?.length ?? 0);
        this.map.set(idx, grown);
      }
      pos = end;
    }
    return added;
  }

  read(off: number, len: number): Buffer {
    const out = Buffer.alloc(len);
    for (let pos = off; pos < off + len;) {
      const idx = Math.floor(pos / CHUNK);
      const base = idx * CHUNK;
      const end = Math.min(off + len, base + CHUNK);
      const buf = this.map.get(idx);
      if (buf) buf.copy(out, pos - off, pos - base, Math.min(end - base, buf.length));
      pos = end;
    }
    return out;
  }

  /** Zeroes [off, off+len): whole chunks are freed, partial ones zero-filled. Returns bytes freed. */
  punch(off: number, len: number): number {
    let freed = 0;
    for (let pos = off; pos < off + len;) {
      const idx = Math.floor(pos / CHUNK);
      const base = idx * CHUNK;
      const end = Math.min(off + len, base + CHUNK);
      const buf = this.map.get(idx);
      if (buf) {
        if (pos === base && end - base >= buf.length) {
          freed += buf.length;
          this.map.delete(idx);
        } else if (pos - base < buf.length) {
          buf.fill(0, pos - base, Math.min(end - base, buf.length));
        }
      }
      pos = end;
    }
    return freed;
  }

  /** Drops everything at or past size, keeping the stale tail of the last chunk zero. */
  truncate(size: number): number {
    let freed = 0;
    const last = Math.floor(size / CHUNK);
    for (const [idx, buf] of this.map) {
      if (idx > last || (idx === last && size === idx * CHUNK)) {
        freed += buf.length;
        this.map.delete(idx);
      } else if (idx === last) {
        const keep = size - idx * CHUNK;
        const need = roundUp(keep);
        if (need < buf.length) {
          const shrunk = Buffer.alloc(need);
          buf.copy(shrunk, 0, 0, keep);
          freed += buf.length - need;
          this.map.set(idx, shrunk);
        } else {
          buf.fill(0, keep);
        }
      }
    }
    return freed;
  }

  /** SEEK_DATA/SEEK_HOLE at chunk granularity; -1 when no data lies at or after off. */
  seek(off: number, size: number, whence: number): number {
    const isData = (idx: number): boolean => this.map.has(idx);
    if (whence === SEEK_DATA) {
      if (isData(Math.floor(off / CHUNK))) return off;
      let best = -1;
      for (const idx of this.map.keys()) {
        const start = idx * CHUNK;
        if (start > off && start < size && (best < 0 || start < best)) best = start;
      }
      return best;
    }
    for (let idx = Math.floor(off / CHUNK); idx * CHUNK < size; idx++) {
      if (!isData(idx)) return Math.max(off, idx * CHUNK);
    }
    return size;
  }
}

function roundUp(n: number): number {
  return Math.min(CHUNK, Math.ceil(n / GROW) * GROW);
}

interface MemNode {
  readonly id: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  nlink: number;
  size: number;
  atime: Timespec;
  mtime: Timespec;
  ctime: Timespec;
  /** Regular files. */
  data?: Chunks;
  /** Bytes allocated to data (for st_blocks and maxBytes). */
  allocated: number;
  /** Directories: name -> node id, in creation order. */
  children?: Map<string, number>;
  /** Directories: the parent directory (itself for the root). */
  parent: number;
  /** Symlinks. */
  target?: string;
  xattrs: Map<string, Buffer>;
  lookups: number;
  opens: number;
}

interface FileHandle {
  node: MemNode;
  flags: number;
}

interface DirHandle {
  node: MemNode;
  /** The listing taken at opendir (and again at each readdir from offset 0): cookie = index + 1. */
  snapshot: Array<{ name: string; id: number }>;
}

export interface MemoryFsOptions {
  /** The type reported by info(), shown as fuse.<type> on a mount. Default 'mem'. */
  type?: string;
  /** The most file data bytes the file system may hold; writes beyond fail with ENOSPC. */
  maxBytes?: number;
}

export class MemoryFs implements Vfs {
  private readonly nodes = new Map<number, MemNode>();
  private nextId = ROOT_ID;
  private readonly files = new HandleTable<FileHandle>();
  private readonly dirs = new HandleTable<DirHandle>();
  private readonly type: string;
  private readonly maxBytes: number;
  private used = 0;
  private closed = false;

  constructor(opts: MemoryFsOptions = {}) {
    this.type = opts.type ?? 'mem';
    this.maxBytes = opts.maxBytes ?? Number.MAX_SAFE_INTEGER;
    const root = this.newNode({ uid: 0, gid: 0, pid: 0 }, S_IFDIR | 0o755, ROOT_ID);
    root.parent = root.id;
  }

  info(): FsInfo {
    return { type: this.type, readOnly: false, coherent: true };
  }

  // --- nodes ----------------------------------------------------------------------------------

  private newNode(ctx: Ctx, mode: number, parent: number): MemNode {
    const t = now();
    const node: MemNode = {
      id: this.nextId++, mode, uid: ctx.uid, gid: ctx.gid, rdev: 0, nlink: 1, size: 0,
      atime: t, mtime: t, ctime: t, allocated: 0, parent, xattrs: new Map(), lookups: 0, opens: 0,
    };
    if ((mode & S_IFMT) === S_IFDIR) {
      node.children = new Map();
      node.nlink = 2;
    }
    if ((mode & S_IFMT) === S_IFREG) node.data = new Chunks();
    this.nodes.set(node.id, node);
    return node;
  }

  private node(id: number): MemNode {
    if (this.closed) throw new FsError(Errno.EIO);
    const n = this.nodes.get(id);
    if (!n) throw new FsError(Errno.ESTALE);
    return n;
  }

  private dir(id: number): MemNode & { children: Map<string, number> } {
    const n = this.node(id);
    if (!n.children) throw new FsError(Errno.ENOTDIR);
    return n as MemNode & { children: Map<string, number> };
  }

  /** Drops a node nobody can reach any more: no name, no kernel lookup, no open handle. */
  private maybeDrop(n: MemNode): void {
    if (n.id === ROOT_ID || n.nlink > 0 || n.lookups > 0 || n.opens > 0) return;
    this.used -= n.allocated;
    this.nodes.delete(n.id);
  }

  private attr(n: MemNode): Attr {
    const isDir = (n.mode & S_IFMT) === S_IFDIR;
    const size = isDir ? BLKSIZE : (n.mode & S_IFMT) === S_IFLNK ? Buffer.byteLength(n.target ?? '') : n.size;
    return {
      ino: n.id, size, blocks: isDir ? BLKSIZE / 512 : Math.ceil(n.allocated / 512),
      atime: { ...n.atime }, mtime: { ...n.mtime }, ctime: { ...n.ctime },
      mode: n.mode, nlink: n.nlink, uid: n.uid, gid: n.gid, rdev: n.rdev, blksize: BLKSIZE,
    };
  }

  private entry(n: MemNode): Entry {
    n.lookups++;
    return { nodeid: n.id, generation: 0, attr: this.attr(n) };
  }

  private touchDir(d: MemNode): void {
    const t = now();
    d.mtime = t;
    d.ctime = t;
  }

  /** Relatime: update atime only if it is older than mtime/ctime or a day old, as Linux does. */
  private touchAtime(n: MemNode): void {
    const t = now();
    if (n.atime.sec <= n.mtime.sec || n.atime.sec <= n.ctime.sec || t.sec - n.atime.sec >= 86400) n.atime = t;
  }

  private child(d: MemNode & { children: Map<string, number> }, name: string): MemNode | undefined {
    const id = d.children.get(name);
    return id === undefined ? undefined : this.nodes.get(id);
  }

  /** Checks a new name may be made in dir d and returns d. */
  private prepareCreate(parent: number, name: string): MemNode & { children: Map<string, number> } {
    const d = this.dir(parent);
    if (name === '.' || name === '..') throw new FsError(Errno.EEXIST);
    checkName(name);
    if (d.nlink === 0) throw new FsError(Errno.ENOENT); // a removed directory takes no new names
    if (d.children.has(name)) throw new FsError(Errno.EEXIST);
    return d;
  }

  /** Makes a node as the caller, honouring a setgid parent (BSD group semantics). */
  private make(ctx: Ctx, d: MemNode & { children: Map<string, number> }, name: string, mode: number): MemNode {
    const n = this.newNode(ctx, mode, d.id);
    if (d.mode & S_ISGID) {
      n.gid = d.gid;
      if ((mode & S_IFMT) === S_IFDIR) n.mode |= S_ISGID;
    }
    d.children.set(name, n.id);
    if (n.children) d.nlink++;
    this.touchDir(d);
    return n;
  }

  // --- Vfs: names ------------------------------------------------------------------------------

  async lookup(_ctx: Ctx, parent: number, name: string): Promise<Entry> {
    const d = this.dir(parent);
    if (name === '.') return this.entry(d);
    if (name === '..') return this.entry(this.node(d.parent));
    checkName(name);
    const n = this.child(d, name);
    if (!n) throw new FsError(Errno.ENOENT);
    return this.entry(n);
  }

  forget(nodeid: number, nlookup: number): void {
    const n = this.nodes.get(nodeid);
    if (!n) return;
    n.lookups = Math.max(0, n.lookups - nlookup);
    this.maybeDrop(n);
  }

  async getattr(_ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    const h = this.files.find(fh);
    return this.attr(h?.node ?? this.node(nodeid));
  }

  async setattr(_ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    const n = this.files.find(fh)?.node ?? this.node(nodeid);
    const type = n.mode & S_IFMT;
    // Validate everything first so a failure changes nothing.
    if (set.size !== undefined) {
      if (type === S_IFDIR) throw new FsError(Errno.EISDIR);
      if (type !== S_IFREG) throw new FsError(Errno.EINVAL);
      if (!Number.isSafeInteger(set.size) || set.size < 0) throw new FsError(Errno.EINVAL);
      if (set.size > MAX_FILE) throw new FsError(Errno.EFBIG);
    }
    if (set.atime && set.atime !== 'now') checkTimespec(set.atime);
    if (set.mtime && set.mtime !== 'now') checkTimespec(set.mtime);
    const t = now();
    let changed = false;
    if (set.size !== undefined && n.data) {
      if (set.size < n.size) this.releaseBytes(n, n.data.truncate(set.size));
      n.size = set.size;
      n.mtime = t;
      changed = true;
    }
    if (set.mode !== undefined) {
      n.mode = (n.mode & S_IFMT) | (set.mode & 0o7777);
      changed = true;
    }
    if (set.uid !== undefined || set.gid !== undefined) {
      if (set.uid !== undefined && set.uid !== -1 && set.uid !== 0xffffffff) n.uid = set.uid;
      if (set.gid !== undefined && set.gid !== -1 && set.gid !== 0xffffffff) n.gid = set.gid;
      // chown clears set-user-ID, and set-group-ID when group execute is set (chown(2)).
      if (type !== S_IFDIR) {
        n.mode &= ~S_ISUID;
        if (n.mode & 0o010) n.mode &= ~S_ISGID;
      }
      changed = true;
    }
    if (set.atime !== undefined) {
      n.atime = set.atime === 'now' ? t : { ...set.atime };
      changed = true;
    }
    if (set.mtime !== undefined) {
      n.mtime = set.mtime === 'now' ? t : { ...set.mtime };
      changed = true;
    }
    if (changed) n.ctime = t;
    return this.attr(n);
  }

  private releaseBytes(n: MemNode, freed: number): void {
    n.allocated -= freed;
    this.used -= freed;
  }

  /** Fails with ENOSPC, before anything changed, if `bytes` more would exceed maxBytes. */
  private reserve(bytes: number): void {
    if (this.used + bytes > this.maxBytes) throw new FsError(Errno.ENOSPC);
  }

  async readlink(_ctx: Ctx, nodeid: number): Promise<string> {
    const n = this.node(nodeid);
    if ((n.mode & S_IFMT) !== S_IFLNK) throw new FsError(Errno.EINVAL);
    this.touchAtime(n);
    return n.target ?? '';
  }

  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    let type = mode & S_IFMT;
    if (type === 0) type = S_IFREG;
    if (type === S_IFDIR) throw new FsError(Errno.EPERM);
    if (![S_IFREG, S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK].includes(type)) throw new FsError(Errno.EINVAL);
    const d = this.prepareCreate(parent, name);
    const n = this.make(ctx, d, name, type | (mode & 0o7777));
    if (type === S_IFCHR || type === S_IFBLK) n.rdev = rdev;
    return this.entry(n);
  }

  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    const d = this.prepareCreate(parent, name);
    return this.entry(this.make(ctx, d, name, S_IFDIR | (mode & 0o7777)));
  }

  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    if (target === '') throw new FsError(Errno.ENOENT);
    if (Buffer.byteLength(target) >= PATH_MAX) throw new FsError(Errno.ENAMETOOLONG);
    const d = this.prepareCreate(parent, name);
    const n = this.make(ctx, d, name, S_IFLNK | 0o777);
    n.target = target;
    return this.entry(n);
  }

  async link(_ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    const n = this.node(nodeid);
    if (n.children) throw new FsError(Errno.EPERM);
    const d = this.prepareCreate(newparent, newname);
    if (n.nlink === 0) throw new FsError(Errno.ENOENT);
    d.children.set(newname, n.id);
    n.nlink++;
    n.ctime = now();
    this.touchDir(d);
    return this.entry(n);
  }

  async unlink(_ctx: Ctx, parent: number, name: string): Promise<void> {
    const d = this.dir(parent);
    if (name === '.' || name === '..') throw new FsError(Errno.EISDIR);
    checkName(name);
    const n = this.child(d, name);
    if (!n) throw new FsError(Errno.ENOENT);
    if (n.children) throw new FsError(Errno.EISDIR);
    d.children.delete(name);
    n.nlink--;
    n.ctime = now();
    this.touchDir(d);
    this.maybeDrop(n);
  }

  async rmdir(_ctx: Ctx, parent: number, name: string): Promise<void> {
    const d = this.dir(parent);
    if (name === '.') throw new FsError(Errno.EINVAL);
    if (name === '..') throw new FsError(Errno.ENOTEMPTY);
    checkName(name);
    const n = this.child(d, name);
    if (!n) throw new FsError(Errno.ENOENT);
    if (!n.children) throw new FsError(Errno.ENOTDIR);
    if (n.children.size > 0) throw new FsError(Errno.ENOTEMPTY);
    d.children.delete(name);
    d.nlink--;
    n.nlink = 0;
    n.ctime = now();
    this.touchDir(d);
    this.maybeDrop(n);
  }

  /** True if directory `anc` is `id` or one of its ancestors. */
  private isAncestor(anc: number, id: number): boolean {
    for (let cur = id; ; ) {
      if (cur === anc) return true;
      const n = this.nodes.get(cur);
      if (!n || n.parent === cur) return false;
      cur = n.parent;
    }
  }

  async rename(_ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    checkRenameFlags(flags);
    const sd = this.dir(parent);
    const dd = this.dir(newparent);
    for (const nm of [name, newname]) if (nm === '.' || nm === '..') throw new FsError(Errno.EBUSY);
    checkName(name);
    checkName(newname);
    const src = this.child(sd, name);
    if (!src) throw new FsError(Errno.ENOENT);
    const dst = this.child(dd, newname);
    if (dd.nlink === 0) throw new FsError(Errno.ENOENT);

    if (flags & RENAME_EXCHANGE) {
      if (!dst) throw new FsError(Errno.ENOENT);
      if (src === dst) return;
      // Neither directory may end up inside itself.
      if (src.children && this.isAncestor(src.id, dd.id)) throw new FsError(Errno.EINVAL);
      if (dst.children && this.isAncestor(dst.id, sd.id)) throw new FsError(Errno.EINVAL);
      sd.children.set(name, dst.id);
      dd.children.set(newname, src.id);
      if (sd !== dd && !!src.children !== !!dst.children) {
        // One directory moves each way: the parents' ".." link counts shift.
        if (src.children) { sd.nlink--; dd.nlink++; } else { sd.nlink++; dd.nlink--; }
      }
      if (src.children) src.parent = dd.id;
      if (dst.children) dst.parent = sd.id;
      const t = now();
      src.ctime = t;
      dst.ctime = t;
      this.touchDir(sd);
      this.touchDir(dd);
      return;
    }

    if (dst) {
      if (flags & RENAME_NOREPLACE) throw new FsError(Errno.EEXIST);
      // Two names of one inode: POSIX says do nothing and succeed.
      if (src === dst) return;
      if (src.children && !dst.children) throw new FsError(Errno.ENOTDIR);
      if (!src.children && dst.children) throw new FsError(Errno.EISDIR);
      if (dst.children && dst.children.size > 0) throw new FsError(Errno.ENOTEMPTY);
    }
    if (src.children && this.isAncestor(src.id, dd.id)) throw new FsError(Errno.EINVAL);

    const t = now();
    if (dst) {
      dd.children.delete(newname);
      if (dst.children) {
        dst.nlink = 0;
        dd.nlink--;
      } else {
        dst.nlink--;
      }
      dst.ctime = t;
    }
    sd.children.delete(name);
    dd.children.set(newname, src.id);
    if (src.children && sd !== dd) {
      sd.nlink--;
      dd.nlink++;
      src.parent = dd.id;
    }
    src.ctime = t;
    this.touchDir(sd);
    this.touchDir(dd);
    if (dst) this.maybeDrop(dst);
  }

  // --- Vfs: files ------------------------------------------------------------------------------

  private openNode(n: MemNode, flags: number): OpenResult {
    const type = n.mode & S_IFMT;
    if (type === S_IFDIR) throw new FsError(Errno.EISDIR);
    if (type === S_IFLNK) throw new FsError(Errno.ELOOP);
    if ((flags & O_TRUNC) && type === S_IFREG && (flags & O_ACCMODE) !== O_RDONLY && n.data) {
      this.releaseBytes(n, n.data.truncate(0));
      n.size = 0;
      const t = now();
      n.mtime = t;
      n.ctime = t;
    }
    n.opens++;
    return { fh: this.files.add({ node: n, flags }) };
  }

  async open(_ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.openNode(this.node(nodeid), flags);
  }

  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    const d = this.prepareCreate(parent, name);
    const n = this.make(ctx, d, name, S_IFREG | (mode & 0o7777));
    const r = this.openNode(n, flags);
    return { ...r, entry: this.entry(n) };
  }

  private regular(nodeid: number, fh: number): { h: FileHandle; n: MemNode; data: Chunks } {
    const h = this.files.get(fh);
    if (this.closed) throw new FsError(Errno.EIO);
    const n = h.node;
    if (nodeid !== n.id) throw new FsError(Errno.EBADF);
    if (!n.data) throw new FsError(Errno.EINVAL);
    return { h, n, data: n.data };
  }

  async read(_ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    const { n, data } = this.regular(nodeid, fh);
    if (!Number.isSafeInteger(offset) || offset < 0 || !Number.isSafeInteger(size) || size < 0) throw new FsError(Errno.EINVAL);
    // Reads through a write-only handle are allowed: the kernel's writeback cache reads pages
    // through whatever handle it has.
    this.touchAtime(n);
    if (offset >= n.size) return Buffer.alloc(0);
    return data.read(offset, Math.min(size, n.size - offset));
  }

  async write(_ctx: Ctx, nodeid: number, fh: number, offset: number, buf: Buffer): Promise<number> {
    const { h, n, data } = this.regular(nodeid, fh);
    if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
    const off = h.flags & O_APPEND ? n.size : offset;
    if (off + buf.length > MAX_FILE) throw new FsError(Errno.EFBIG);
    if (buf.length === 0) return 0;
    this.reserve(data.growth(off, buf.length));
    const added = data.write(off, buf);
    n.allocated += added;
    this.used += added;
    n.size = Math.max(n.size, off + buf.length);
    const t = now();
    n.mtime = t;
    n.ctime = t;
    // Writing by a non-owner clears set-user-ID (file_remove_privs); cheap to honour here.
    n.mode &= ~S_ISUID;
    return buf.length;
  }

  async flush(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    this.files.get(fh);
  }

  async fsync(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    this.files.get(fh);
  }

  async release(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    const h = this.files.delete(fh);
    if (!h) throw new FsError(Errno.EBADF);
    h.node.opens--;
    this.maybeDrop(h.node);
  }

  // --- Vfs: directories ------------------------------------------------------------------------

  private snapshot(d: MemNode & { children: Map<string, number> }): DirHandle['snapshot'] {
    const list = [{ name: '.', id: d.id }, { name: '..', id: d.parent }];
    for (const [name, id] of d.children) list.push({ name, id });
    return list;
  }

  async opendir(_ctx: Ctx, nodeid: number): Promise<OpenResult> {
    const d = this.dir(nodeid);
    d.opens++;
    return { fh: this.dirs.add({ node: d, snapshot: this.snapshot(d) }) };
  }

  async readdir(_ctx: Ctx, _nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    const h = this.dirs.get(fh);
    if (this.closed) throw new FsError(Errno.EIO);
    const d = h.node as MemNode & { children: Map<string, number> };
    // A rewind sees the directory as it is now (rewinddir(3) must show later changes).
    if (offset === 0) h.snapshot = this.snapshot(d);
    if (!Number.isSafeInteger(offset) || offset < 0) throw new FsError(Errno.EINVAL);
    const out: DirEntry[] = [];
    const max = Math.max(1, maxEntries);
    let i = offset;
    for (; i < h.snapshot.length && out.length < max; i++) {
      const item = h.snapshot[i]!;
      const n = this.nodes.get(item.id);
      // A snapshot entry whose node has gone entirely (unlinked and forgotten) is skipped.
      if (!n) continue;
      const de: DirEntry = { name: item.name, ino: n.id, type: n.mode & S_IFMT, off: i + 1 };
      if (plus && item.name !== '.' && item.name !== '..') de.entry = this.entry(n);
      out.push(de);
    }
    if (d.nlink > 0) this.touchAtime(d);
    return i >= h.snapshot.length ? markEnded(out) : out;
  }

  async fsyncdir(_ctx: Ctx, _nodeid: number, fh: number, _datasync: boolean): Promise<void> {
    this.dirs.get(fh);
  }

  async releasedir(_ctx: Ctx, _nodeid: number, fh: number): Promise<void> {
    const h = this.dirs.delete(fh);
    if (!h) throw new FsError(Errno.EBADF);
    h.node.opens--;
    this.maybeDrop(h.node);
  }

  // --- Vfs: the rest ---------------------------------------------------------------------------

  async statfs(_ctx: Ctx, _nodeid: number): Promise<StatFs> {
    const total = this.maxBytes === Number.MAX_SAFE_INTEGER ? 2 ** 40 : this.maxBytes;
    const blocks = Math.floor(total / BLKSIZE);
    const free = Math.max(0, Math.floor((total - this.used) / BLKSIZE));
    const files = 2 ** 32;
    return {
      blocks, bfree: free, bavail: free, files, ffree: Math.max(0, files - this.nodes.size),
      bsize: BLKSIZE, namelen: NAME_MAX, frsize: BLKSIZE,
    };
  }

  /** Linux accepts only known namespaces, and user.* only on regular files and directories. */
  private xattrTarget(nodeid: number, name: string, writing: boolean): MemNode {
    const n = this.node(nodeid);
    if (!/^(user|trusted|security|system)\./.test(name)) throw new FsError(Errno.EOPNOTSUPP);
    if (name.startsWith('user.')) {
      const type = n.mode & S_IFMT;
      if (type !== S_IFREG && type !== S_IFDIR) throw new FsError(writing ? Errno.EPERM : Errno.ENODATA);
    }
    return n;
  }

  async setxattr(_ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    checkXattr(name, value);
    if ((flags & ~(XATTR_CREATE | XATTR_REPLACE)) !== 0) throw new FsError(Errno.EINVAL);
    const n = this.xattrTarget(nodeid, name, true);
    const has = n.xattrs.has(name);
    if ((flags & XATTR_CREATE) && has) throw new FsError(Errno.EEXIST);
    if ((flags & XATTR_REPLACE) && !has) throw new FsError(Errno.ENODATA);
    n.xattrs.set(name, Buffer.from(value));
    n.ctime = now();
  }

  async getxattr(_ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    checkXattr(name);
    const n = this.xattrTarget(nodeid, name, false);
    const v = n.xattrs.get(name);
    if (!v) throw new FsError(Errno.ENODATA);
    return Buffer.from(v);
  }

  async listxattr(_ctx: Ctx, nodeid: number): Promise<string[]> {
    return [...this.node(nodeid).xattrs.keys()];
  }

  async removexattr(_ctx: Ctx, nodeid: number, name: string): Promise<void> {
    checkXattr(name);
    const n = this.xattrTarget(nodeid, name, true);
    if (!n.xattrs.delete(name)) throw new FsError(Errno.ENODATA);
    n.ctime = now();
  }

  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    checkAccess(this.node(nodeid), ctx, mask);
  }

  async fallocate(_ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    const { h, n, data } = this.regular(nodeid, fh);
    if ((h.flags & O_ACCMODE) === O_RDONLY) throw new FsError(Errno.EBADF);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length <= 0) throw new FsError(Errno.EINVAL);
    if (offset + length > MAX_FILE) throw new FsError(Errno.EFBIG);
    const t = now();
    if (mode & FALLOC_FL_PUNCH_HOLE) {
      // Linux requires KEEP_SIZE with PUNCH_HOLE and no other flag.
      if (mode !== (FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE)) throw new FsError(Errno.EOPNOTSUPP);
      this.releaseBytes(n, data.punch(offset, length));
      n.mtime = t;
      n.ctime = t;
      return;
    }
    if (mode & FALLOC_FL_ZERO_RANGE) {
      if ((mode & ~(FALLOC_FL_ZERO_RANGE | FALLOC_FL_KEEP_SIZE)) !== 0) throw new FsError(Errno.EOPNOTSUPP);
      this.releaseBytes(n, data.punch(offset, length));
    } else if ((mode & ~FALLOC_FL_KEEP_SIZE) !== 0) {
      throw new FsError(Errno.EOPNOTSUPP);
    }
    // Preallocation: reserve the space now so later writes into the range cannot hit ENOSPC.
    this.reserve(data.growth(offset, length));
    const added = data.allocate(offset, length);
    n.allocated += added;
    this.used += added;
    if (!(mode & FALLOC_FL_KEEP_SIZE) && offset + length > n.size) {
      n.size = offset + length;
      n.mtime = t;
    }
    n.ctime = t;
  }

  async lseek(_ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    const { n, data } = this.regular(nodeid, fh);
    if (whence !== SEEK_DATA && whence !== SEEK_HOLE) throw new FsError(Errno.EINVAL);
    if (!Number.isSafeInteger(offset) || offset < 0 || offset >= n.size) throw new FsError(Errno.ENXIO);
    const r = data.seek(offset, n.size, whence);
    if (r < 0) throw new FsError(Errno.ENXIO);
    return r;
  }

  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    const src = this.regular(nodeIn, fhIn);
    const dst = this.regular(nodeOut, fhOut);
    if ((dst.h.flags & O_ACCMODE) === O_RDONLY || (dst.h.flags & O_APPEND)) throw new FsError(Errno.EBADF);
    if ((src.h.flags & O_ACCMODE) === 1) throw new FsError(Errno.EBADF);
    if (![offIn, offOut, len].every((v) => Number.isSafeInteger(v) && v >= 0)) throw new FsError(Errno.EINVAL);
    // Overlapping ranges of one file are refused, as copy_file_range(2) does.
    if (src.n === dst.n && offIn < offOut + len && offOut < offIn + len) throw new FsError(Errno.EINVAL);
    if (offIn >= src.n.size || len === 0) return 0;
    const chunk = await this.read(ctx, nodeIn, fhIn, offIn, Math.min(len, src.n.size - offIn));
    return this.write(ctx, nodeOut, fhOut, offOut, chunk);
  }

  watch(_listener: ChangeListener): () => void {
    // Nothing changes a MemoryFs behind the caller's back, so there is nothing to report.
    return () => {};
  }

  async close(): Promise<void> {
    this.closed = true;
    this.files.clear();
    this.dirs.clear();
    this.nodes.clear();
    this.used = 0;
  }
}
