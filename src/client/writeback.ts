// Write-behind for a remote Vfs: a WRITE is answered as soon as it is on its way to the server, so
// the application's write(2) does not wait a round trip (the kernel, without its writeback cache,
// sends each write(2) as one synchronous WRITE). What waits instead:
//   - flush (every close) and fsync wait for the file's writes in flight and report the first error
//     any of them got (ENOSPC, EIO...), as NFS reports asynchronous write errors at close;
//   - everything whose answer depends on the file's contents or size (read, getattr, setattr,
//     lseek, fallocate, copy_file_range, and lookups that return its attributes) waits for that
//     file's writes first, so the kernel never learns a size older than its own writes;
//   - a write overlapping one still in flight waits for it (the server runs requests
//     concurrently; without this two overlapping writes could land in either order);
//   - at most WRITE_BEHIND_BYTES are in flight per mount; beyond that a write waits for room.
// So close-to-open holds: when close() returns, the server has every byte and has told the other
// clients (see PUSH_ACK); and no byte is dropped silently: a failed write is reported by the next
// flush or fsync of the file handle that wrote it.
//
// FLUSH itself is answered here: no source keeps anything per flush (their writes are in the source
// once answered), so a close costs no round trip beyond waiting for its writes.

import { Errno, FsError } from '../lib/errno.js';
import {
  O_ACCMODE, O_APPEND, O_DIRECT, O_RDONLY,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Vfs,
} from '../vfs/types.js';

/** Bytes of written data in flight to the server at most, per mount. */
export const WRITE_BEHIND_BYTES = 32 << 20;
const O_SYNC = 0o4010000;
const O_DSYNC = 0o10000;

interface Flight {
  off: number;
  end: number;
  done: Promise<void>;
}

interface Handle {
  nodeid: number;
  behind: boolean;
  error: Error | undefined;
}

function plain(ctx: Ctx): Ctx {
  // The kernel has its answer already: an interrupt can no longer come for this request.
  return { uid: ctx.uid, gid: ctx.gid, pid: ctx.pid };
}

export class WriteBehindVfs implements Vfs {
  private readonly flights = new Map<number, Set<Flight>>();
  private readonly handles = new Map<number, Handle>();
  private inFlightBytes = 0;
  private roomWaiters: Array<() => void> = [];
  private readonly counters = { behind: 0, waitedForRoom: 0, deferredErrors: 0 };

  constructor(private readonly inner: Vfs, private readonly limit = WRITE_BEHIND_BYTES) {}

  stats(): { writeBehindBytes: number; writesBehind: number; waitedForRoom: number; deferredErrors: number } {
    return { writeBehindBytes: this.inFlightBytes, writesBehind: this.counters.behind, waitedForRoom: this.counters.waitedForRoom, deferredErrors: this.counters.deferredErrors };
  }

  info(): FsInfo {
    return this.inner.info();
  }

  // --- waiting for a file's writes ------------------------------------------------------------

  /** Resolves once every write of the node that is in flight now has been answered. */
  private async drain(nodeid: number): Promise<void> {
    const set = this.flights.get(nodeid);
    if (!set) return;
    await Promise.all([...set].map((f) => f.done));
  }

  private async entryAfterWrites(ctx: Ctx, e: Entry): Promise<Entry> {
    if (!e.nodeid || !this.flights.has(e.nodeid)) return e;
    await this.drain(e.nodeid);
    return { ...e, attr: await this.inner.getattr(ctx, e.nodeid) };
  }

  private takeError(fh: number): void {
    const h = this.handles.get(fh);
    const err = h?.error;
    if (!h || !err) return;
    h.error = undefined;
    throw err;
  }

  private async room(len: number): Promise<void> {
    while (this.inFlightBytes > 0 && this.inFlightBytes + len > this.limit) {
      this.counters.waitedForRoom++;
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  }

  // --- the Vfs --------------------------------------------------------------------------------

  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return this.entryAfterWrites(ctx, await this.inner.lookup(ctx, parent, name));
  }
  forget(nodeid: number, nlookup: number): void {
    this.inner.forget(nodeid, nlookup);
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    await this.drain(nodeid);
    return this.inner.getattr(ctx, nodeid, fh);
  }
  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    await this.drain(nodeid);
    return this.inner.setattr(ctx, nodeid, set, fh);
  }
  readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return this.inner.readlink(ctx, nodeid);
  }
  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    return this.inner.mknod(ctx, parent, name, mode, rdev);
  }
  mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    return this.inner.mkdir(ctx, parent, name, mode);
  }
  symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    return this.inner.symlink(ctx, parent, name, target);
  }
  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    await this.drain(nodeid);
    return this.inner.link(ctx, nodeid, newparent, newname);
  }
  unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.inner.unlink(ctx, parent, name);
  }
  rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.inner.rmdir(ctx, parent, name);
  }
  rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    return this.inner.rename(ctx, parent, name, newparent, newname, flags);
  }

  private track(fh: number, nodeid: number, flags: number): void {
    // Writes that promise durability (O_SYNC) or bypass caches (O_DIRECT), and appends (the server
    // picks the offset, so overlap cannot be judged here), go through one at a time as before.
    const behind = (flags & O_ACCMODE) !== O_RDONLY && !(flags & (O_SYNC | O_DSYNC | O_DIRECT | O_APPEND));
    this.handles.set(fh, { nodeid, behind, error: undefined });
  }

  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    await this.drain(nodeid);
    const r = await this.inner.open(ctx, nodeid, flags);
    this.track(r.fh, nodeid, flags);
    return r;
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    const r = await this.inner.create(ctx, parent, name, mode, flags);
    this.track(r.fh, r.entry.nodeid, flags);
    return r;
  }
  async read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    await this.drain(nodeid);
    return this.inner.read(ctx, nodeid, fh, offset, size);
  }

  async write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    const h = this.handles.get(fh);
    if (!h?.behind || h.nodeid !== nodeid) return this.inner.write(ctx, nodeid, fh, offset, data);
    // An earlier write of this handle failed: say so now rather than pile more on.
    this.takeError(fh);
    await this.room(data.length);
    const end = offset + data.length;
    let set = this.flights.get(nodeid);
    if (set) {
      const overlapping = [...set].filter((f) => f.off < end && offset < f.end);
      if (overlapping.length) await Promise.all(overlapping.map((f) => f.done));
    }
    set = this.flights.get(nodeid) ?? new Set();
    this.flights.set(nodeid, set);
    const flight: Flight = { off: offset, end, done: Promise.resolve() };
    const mine = set;
    this.inFlightBytes += data.length;
    this.counters.behind++;
    flight.done = this.inner.write(plain(ctx), nodeid, fh, offset, data).then(
      (n) => {
        if (n < data.length && !h.error) h.error = new FsError(Errno.ENOSPC, `short write at ${offset + n}`);
      },
      (err: unknown) => {
        h.error ??= err instanceof Error ? err : new FsError(Errno.EIO);
        this.counters.deferredErrors++;
      },
    ).finally(() => {
      mine.delete(flight);
      if (mine.size === 0 && this.flights.get(nodeid) === mine) this.flights.delete(nodeid);
      this.inFlightBytes -= data.length;
      const waiters = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiters) w();
    });
    set.add(flight);
    return data.length;
  }

  async flush(_ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError(Errno.EBADF);
    if (h.behind) await this.drain(nodeid);
    this.takeError(fh);
  }
  async fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.drain(nodeid);
    this.takeError(fh);
    await this.inner.fsync(ctx, nodeid, fh, datasync);
  }
  async release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.drain(nodeid);
    this.handles.delete(fh);
    await this.inner.release(ctx, nodeid, fh);
  }
  opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return this.inner.opendir(ctx, nodeid);
  }
  async readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    const list = await this.inner.readdir(ctx, nodeid, fh, offset, maxEntries, plus);
    if (!plus || this.flights.size === 0) return list;
    return Promise.all(list.map(async (d) => (d.entry ? { ...d, entry: await this.entryAfterWrites(ctx, d.entry) } : d)));
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
  async fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    await this.drain(nodeid);
    await this.inner.fallocate(ctx, nodeid, fh, mode, offset, length);
  }
  async lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    await this.drain(nodeid);
    return this.inner.lseek(ctx, nodeid, fh, offset, whence);
  }
  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    await Promise.all([this.drain(nodeIn), this.drain(nodeOut)]);
    return this.inner.copyFileRange(ctx, nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len);
  }
  watch(listener: ChangeListener): () => void {
    return this.inner.watch(listener);
  }
  async close(): Promise<void> {
    await Promise.all([...this.flights.keys()].map((id) => this.drain(id)));
    await this.inner.close();
  }
}
