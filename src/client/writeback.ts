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
// Small writes that follow each other on one handle are gathered into one WRITE of up to
// GATHER_BYTES (tar writes a file in 10 KiB records, which the kernel splits further at page
// boundaries: three or four requests per small file, each costing both sides a wake-up). The
// gathered bytes count as a flight from the first write on, so everything above waits for them as
// for any write; they go out when the next write does not follow, when they reach GATHER_BYTES,
// when anything waits for the file's writes (close, fsync, read, stat...), or GATHER_MS after
// the first, so a writer that pauses without closing is not left unsent for long.
//
// FLUSH itself is answered here: no source keeps anything per flush (their writes are in the source
// once answered), so a close costs no round trip beyond waiting for its writes.
//
// Attribute changes behind too: a file this client created and still holds open is, as long as no
// push says otherwise, known here exactly (the server's attributes from CREATE, then our writes).
// A chmod, chown or utimes of it whose outcome the POSIX rules fix (the caller owns the file, a
// chown is root's or a chgrp to the caller's own group, no set-ID bit to clear) is answered with
// the attributes it will give. Such changes are held and merged into one SETATTR, sent behind the
// file's writes when a call needs the server to have them (close, fsync, a later write, anything
// that waits for the file's writes): tar, cp -p and rsync set three attributes on every file they
// write, each a round trip otherwise, and now one request that close waits for with the writes.
// A failure is reported at close like a failed write. The kernel's copy of what we answered carries our clock
// for ctime, so it is dropped (an attributes-only inode change to the listeners) at close, or at
// once if the server's answer differs from ours or a call failed.

import type { RemoteHooks } from './dircache.js';
import { Errno, FsError } from '../lib/errno.js';
import { ChangeListeners } from '../vfs/listeners.js';
import {
  O_ACCMODE, O_APPEND, O_DIRECT, O_RDONLY, S_IFMT, S_IFREG,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Vfs,
} from '../vfs/types.js';

/** Bytes of written data in flight to the server at most, per mount. */
export const WRITE_BEHIND_BYTES = 32 << 20;
const O_SYNC = 0o4010000;
/** Writes smaller than this are gathered, up to this many bytes in one WRITE. */
export const GATHER_BYTES = 128 * 1024;
/** Gathered writes go out at most this long after the first of them. */
const GATHER_MS = 10;
/** Files whose attributes after our last write are kept at most (see landed). */
const MAX_LANDED = 10_000;
const O_DSYNC = 0o10000;

interface Flight {
  off: number;
  end: number;
  /** Bytes it holds of the write-behind budget. */
  bytes: number;
  done: Promise<void>;
}

interface Handle {
  nodeid: number;
  behind: boolean;
  error: Error | undefined;
  /** Writes of this handle gathered and not sent yet. */
  gather: Gather | undefined;
}

/** Writes of one handle, each starting where the one before ended, to be sent as one WRITE. */
interface Gather {
  h: Handle;
  fh: number;
  ctx: Ctx;
  chunks: Buffer[];
  flight: Flight;
  timer: NodeJS.Timeout;
  /** Settles the flight with the WRITE's outcome (set once sent). */
  send: (work: Promise<void>) => void;
}

const S_ISUID = 0o4000;
const S_ISGID = 0o2000;

/** A file this client created and holds open: its attributes as they are once our calls land. */
interface Made {
  attr: Attr;
  /** Made by uid 0 and owned by uid 0: root is root on the server (not squashed or mapped). */
  rootActs: boolean;
  open: number;
  /** The kernel was given `attr` (a GETATTR or SETATTR answered here): to be dropped at close. */
  told: boolean;
  /** Attribute changes answered here and not sent yet (one SETATTR for them all). */
  pending: Pending | undefined;
}

/**
 * chown, chmod and utimes answered here, merged into one SETATTR that waits as a flight of the file
 * until a call needs the server to have it (close, fsync, a write, anything that drains the file).
 */
interface Pending {
  ctx: Ctx;
  set: SetAttr;
  fh: number | undefined;
  /** Our attributes when it was sent: what the server's answer must match. */
  mine: Attr | undefined;
  launch: () => void;
}

function nowTs(): { sec: number; nsec: number } {
  const ms = Date.now();
  return { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
}

/**
 * The attributes `set` leaves on a file with attributes `attr` when `ctx` asks, or undefined when
 * the server might decide otherwise (permission, set-ID bits the kernel clears, a size change).
 * The caller must own the file, or be root where `rootActs` (root made the file and the server
 * gave it to uid 0: a squashed or mapped root would have got another owner).
 */
export function predictSetattr(ctx: Ctx, attr: Attr, set: SetAttr, rootActs: boolean): Attr | undefined {
  const root = ctx.uid === 0 && rootActs;
  if (set.size !== undefined || (attr.mode & S_IFMT) !== S_IFREG || (ctx.uid !== attr.uid && !root)) return undefined;
  const uid = set.uid ?? attr.uid;
  const gid = set.gid ?? attr.gid;
  if (uid !== attr.uid && !root) return undefined;
  if (gid !== attr.gid && !root && gid !== ctx.gid) return undefined;
  if ((uid !== attr.uid || gid !== attr.gid || set.uid !== undefined || set.gid !== undefined) && attr.mode & (S_ISUID | S_ISGID)) return undefined;
  if (set.mode !== undefined && set.mode & (S_ISUID | S_ISGID)) return undefined;
  const now = nowTs();
  const time = (t: SetAttr['atime'], old: Attr['atime']): Attr['atime'] => (t === undefined ? old : t === 'now' ? now : { sec: t.sec, nsec: t.nsec });
  return {
    ...attr,
    mode: set.mode === undefined ? attr.mode : (attr.mode & S_IFMT) | (set.mode & 0o7777),
    uid, gid,
    atime: time(set.atime, attr.atime),
    mtime: time(set.mtime, attr.mtime),
    ctime: now,
  };
}

/** Whether the server's attributes after a SETATTR differ from ours in what the caller set or sees. */
function differs(real: Attr, mine: Attr, set: SetAttr): boolean {
  const t = (a: Attr['atime'], b: Attr['atime']): boolean => a.sec !== b.sec || a.nsec !== b.nsec;
  return real.mode !== mine.mode || real.uid !== mine.uid || real.gid !== mine.gid || real.size !== mine.size ||
    (typeof set.atime === 'object' && t(real.atime, mine.atime)) || (typeof set.mtime === 'object' && t(real.mtime, mine.mtime));
}

/**
 * Whether a handle opened with `flags` writes behind. Writes that promise durability (O_SYNC) or
 * bypass caches (O_DIRECT), and appends (the server picks the offset, so overlap cannot be judged
 * here), go through one at a time as before.
 */
function writesBehind(flags: number): boolean {
  return (flags & O_ACCMODE) !== O_RDONLY && !(flags & (O_SYNC | O_DSYNC | O_DIRECT | O_APPEND));
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
  private readonly counters = { behind: 0, gathered: 0, waitedForRoom: 0, deferredErrors: 0, setattrsBehind: 0, setattrsSent: 0, attrsLanded: 0, createsBehind: 0 };
  /** Files this client created and holds open, while no push said another changed them. */
  private readonly made = new Map<number, Made>();
  private readonly listeners = new ChangeListeners();
  private readonly unwatch: () => void;
  private readonly unhint: () => void;
  /**
   * A file's attributes as the server sent them with the reply to our last write of it (1.2), while
   * nothing else touched it: the `stat` after a close is answered here. Taken only when no other
   * write of the file was under way here at that moment (the server sends them only when none ran
   * beside that write there), so they follow every write we made of it.
   */
  private readonly landed = new Map<number, Attr>();
  /**
   * Node id -> its changes under way here (writes, SETATTRs, fallocate...: from the call to the
   * reply), and how many changes of names are (which may change any file's link count). A write's
   * attributes are taken only when it is its node's one change under way and no name is changing.
   */
  private readonly changes = new Map<number, number>();
  /** Files created behind whose naming has not been answered (a flight of each). */
  private readonly naming = new Set<number>();
  private nameChanges = 0;

  /** `writeAttrs`: subscribes to a file's attributes after a write (RemoteVfs.onWriteAttr); only for a coherent server. */
  constructor(private readonly inner: Vfs, private readonly limit = WRITE_BEHIND_BYTES,
    writeAttrs?: (l: (nodeid: number, attr: Attr) => void) => () => void, private readonly behind?: RemoteHooks) {
    behind?.offerCreateBehind?.();
    this.unwatch = inner.watch((ev) => {
      const id = ev.kind === 'inode' ? ev.nodeid : ev.kind === 'delete' ? ev.child : 0;
      if (!id) return;
      this.unmade(id);
      this.landed.delete(id);
    });
    this.unhint = writeAttrs?.((nodeid, attr) => {
      this.landed.delete(nodeid);
      // A naming behind (createdBehind) still in flight here ran before this write on the server.
      this.land(nodeid, attr, 1, this.naming.has(nodeid) ? 2 : 1);
    }) ?? ((): void => {});
  }

  /**
   * Keeps the server's attributes of a file as they were after one of our calls (a write, or the
   * naming of a file created behind), if that call is the file's only business here: `changes` of
   * its changes under way and `flights` of its flights are that call's own, no name is changing
   * and no attribute change is held. Otherwise another call may land after them.
   */
  private land(nodeid: number, attr: Attr, changes: number, flights: number): void {
    if ((this.changes.get(nodeid) ?? 0) !== changes || this.nameChanges > 0 || this.made.get(nodeid)?.pending || (this.flights.get(nodeid)?.size ?? 0) > flights) return;
    if (this.landed.size >= MAX_LANDED) this.landed.delete(this.landed.keys().next().value!);
    this.landed.set(nodeid, { ...attr });
  }

  /** A change of the node begins: what the server said of it after our last write is old. */
  private begin(nodeid: number): void {
    this.landed.delete(nodeid);
    this.changes.set(nodeid, (this.changes.get(nodeid) ?? 0) + 1);
  }

  /** A change counted by begin() was answered (or never went). */
  private end(nodeid: number): void {
    const n = (this.changes.get(nodeid) ?? 1) - 1;
    if (n > 0) this.changes.set(nodeid, n);
    else this.changes.delete(nodeid);
  }

  /** Runs a change of the node, counted from the call to the reply (see changes). */
  private async changing<T>(nodeid: number, work: () => Promise<T>): Promise<T> {
    this.begin(nodeid);
    try {
      return await work();
    } finally {
      this.end(nodeid);
    }
  }

  /** Runs a change of names (unlink, rename): some file's link count changes, we cannot tell whose. */
  private async renaming<T>(work: () => Promise<T>): Promise<T> {
    this.landed.clear();
    this.nameChanges++;
    try {
      return await work();
    } finally {
      this.nameChanges--;
    }
  }

  stats(): { writeBehindBytes: number; writesBehind: number; writesGathered: number; setattrsBehind: number; setattrsSent: number; attrsLanded: number; waitedForRoom: number; deferredErrors: number } {
    return {
      writeBehindBytes: this.inFlightBytes, writesBehind: this.counters.behind, writesGathered: this.counters.gathered, setattrsBehind: this.counters.setattrsBehind,
      setattrsSent: this.counters.setattrsSent, attrsLanded: this.counters.attrsLanded,
      waitedForRoom: this.counters.waitedForRoom, deferredErrors: this.counters.deferredErrors,
    };
  }

  info(): FsInfo {
    return this.inner.info();
  }

  // --- waiting for a file's writes ------------------------------------------------------------

  /** Resolves once every write of the node that is in flight now has been answered. */
  private async drain(nodeid: number): Promise<void> {
    this.sendPending(nodeid);
    this.sendGathered(nodeid);
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
    this.landed.delete(nodeid);
    this.inner.forget(nodeid, nlookup);
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    // A file of ours is known here: size and owner exactly, its times as the server will have them
    // within milliseconds. Asked mostly by the kernel itself before a chown (to clear set-ID bits)
    // and by fstat after writing; corrected at close.
    const m = this.made.get(nodeid);
    if (m) {
      m.told = true;
      return { ...m.attr };
    }
    await this.drain(nodeid);
    const kept = this.landed.get(nodeid);
    if (kept) {
      this.counters.attrsLanded++;
      return { ...kept };
    }
    return this.inner.getattr(ctx, nodeid, fh);
  }
  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    return this.changing(nodeid, async () => {
      const m = this.made.get(nodeid);
      const mine = m && predictSetattr(ctx, m.attr, set, m.rootActs);
      if (!m || !mine) {
        await this.drain(nodeid);
        this.unmade(nodeid);
        return this.inner.setattr(ctx, nodeid, set, fh);
      }
      m.attr = mine;
      m.told = true;
      this.counters.setattrsBehind++;
      if (m.pending && (m.pending.ctx.uid !== ctx.uid || m.pending.ctx.gid !== ctx.gid)) this.sendPending(nodeid);
      if (!m.pending) this.hold(nodeid, m, ctx, fh);
      const p = m.pending!;
      for (const k of Object.keys(set) as Array<keyof SetAttr>) if (set[k] !== undefined) (p.set as Record<string, unknown>)[k] = set[k];
      p.fh = fh ?? p.fh;
      return { ...mine };
    });
  }
  /**
   * Starts the file's one SETATTR for attribute changes answered here. It is a flight covering the
   * whole file, so everything that waits for the file's writes waits for it; it leaves when
   * sendPending launches it. Sent behind the writes in flight: the server applies a SETATTR of times
   * after the node's WRITEs sent before it (protocol 1.1), and a chmod or chown commutes with them
   * here (no set-ID bits involved). Later writes wait for it: a write after a utimes must land after it.
   */
  private hold(nodeid: number, m: Made, ctx: Ctx, fh: number | undefined): void {
    const p: Pending = { ctx: plain(ctx), set: {}, fh, mine: undefined, launch: () => {} };
    const launched = new Promise<void>((resolve) => (p.launch = resolve));
    m.pending = p;
    this.fly(nodeid, 0, Number.POSITIVE_INFINITY, 0, launched.then(() => this.inner.setattr(p.ctx, nodeid, p.set, p.fh)).then(
      (real) => {
        if (differs(real, p.mine!, p.set)) this.unsure(nodeid);
      },
      (err: unknown) => {
        this.counters.deferredErrors++;
        for (const h of this.handles.values()) if (h.nodeid === nodeid) h.error ??= err instanceof Error ? err : new FsError(Errno.EIO);
        this.unsure(nodeid);
      },
    ));
  }

  /** Sends the file's held attribute changes, if any. */
  private sendPending(nodeid: number): void {
    const m = this.made.get(nodeid);
    const p = m?.pending;
    if (!p) return;
    // Writes gathered before the change must reach the server before it.
    this.sendGathered(nodeid);
    m.pending = undefined;
    this.landed.delete(nodeid);
    this.counters.setattrsSent++;
    p.mine = { ...m.attr };
    p.launch();
  }

  /** Stops answering for a file here; what was held for it goes out first. */
  private unmade(nodeid: number): void {
    this.sendPending(nodeid);
    this.made.delete(nodeid);
  }

  private unmadeAll(): void {
    for (const id of this.made.keys()) this.sendPending(id);
    this.made.clear();
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
    return this.changing(nodeid, async () => {
      await this.drain(nodeid);
      this.unmade(nodeid); // its link count
      return this.inner.link(ctx, nodeid, newparent, newname);
    });
  }
  unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.unmadeAll(); // some file's link count, and we cannot tell whose
    return this.renaming(() => this.inner.unlink(ctx, parent, name));
  }
  rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    return this.inner.rmdir(ctx, parent, name);
  }
  // Unlink-behind and LISTDIR (client.ts) pass through, with unlink's own bookkeeping here.
  listdir(ctx: Ctx, nodeid: number, maxEntries: number, plus: boolean): Promise<{ fh: number | undefined; list: DirEntry[] } | undefined> {
    return this.behind ? this.behind.listdir(ctx, nodeid, maxEntries, plus) : Promise.resolve(undefined);
  }
  heldNode(parent: number, name: string): number | undefined {
    return this.behind?.heldNode(parent, name);
  }
  countLookup(id: number): boolean {
    return this.behind?.countLookup(id) ?? false;
  }
  listedHere(ctx: Ctx, dir: number): void {
    this.behind?.listedHere?.(ctx, dir);
  }
  leasedFor(dir: number, uid: number): boolean {
    return this.behind?.leasedFor(dir, uid) ?? false;
  }
  unlinkBehind(ctx: Ctx, parent: number, name: string): Promise<FsError | undefined> | undefined {
    if (!this.behind?.leasedFor(parent, ctx.uid)) return undefined;
    this.unmadeAll();
    this.nameChanges++;
    this.landed.clear();
    const sent = this.behind.unlinkBehind(ctx, parent, name);
    if (!sent) this.nameChanges--;
    else void sent.then(() => this.nameChanges--);
    return sent;
  }
  rmdirBehind(ctx: Ctx, parent: number, name: string, child: number): Promise<FsError | undefined> | undefined {
    return this.behind?.rmdirBehind?.(ctx, parent, name, child);
  }
  leaseAnswer(dir: number): Promise<void> | undefined {
    return this.behind?.leaseAnswer?.(dir);
  }
  rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    this.unmadeAll(); // a replaced file's link count
    return this.renaming(() => this.inner.rename(ctx, parent, name, newparent, newname, flags));
  }

  private track(fh: number, nodeid: number, flags: number): void {
    this.handles.set(fh, { nodeid, behind: writesBehind(flags), error: undefined, gather: undefined });
  }

  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return this.changing(nodeid, async () => {
      await this.drain(nodeid);
      const r = await this.inner.open(ctx, nodeid, flags);
      this.track(r.fh, nodeid, flags);
      const m = this.made.get(nodeid);
      if (m && this.handles.get(r.fh)!.behind) m.open++;
      else this.unmade(nodeid);
      return r;
    });
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    // Only a file this layer writes behind can be created behind: its close waits for the naming.
    const behind = writesBehind(flags) ? this.behind?.createBehind?.(ctx, parent, name, mode, flags) : undefined;
    if (behind) return this.createdBehind(ctx, parent, name, flags, behind.result, behind.named);
    const r = await this.inner.create(ctx, parent, name, mode, flags);
    this.track(r.fh, r.entry.nodeid, flags);
    if (this.handles.get(r.fh)!.behind) {
      const m = this.made.get(r.entry.nodeid);
      if (m) m.open++;
      else this.made.set(r.entry.nodeid, { attr: { ...r.entry.attr }, rootActs: ctx.uid === 0 && r.entry.attr.uid === 0, open: 1, told: false, pending: undefined });
    }
    return r;
  }
  /**
   * A create answered with a reserved file whose naming is on its way (client.ts, create-behind):
   * a file of ours like any other, whose naming is a flight of it (covering no bytes, so writes
   * need not wait for it), so close and fsync wait for it and report its failure. The kernel was
   * given our attributes: they are dropped at close, or at once if the server's differ.
   */
  private createdBehind(ctx: Ctx, parent: number, name: string, flags: number, r: CreateResult, named: Promise<{ attr?: Attr; error?: FsError }>): CreateResult {
    const nodeid = r.entry.nodeid;
    this.track(r.fh, nodeid, flags);
    const mine = { ...r.entry.attr };
    this.made.set(nodeid, { attr: { ...mine }, rootActs: ctx.uid === 0, open: 1, told: true, pending: undefined });
    this.naming.add(nodeid);
    this.counters.createsBehind++;
    this.fly(nodeid, 0, 0, 0, named.then(({ attr, error }) => {
      this.naming.delete(nodeid);
      if (error) {
        this.counters.deferredErrors++;
        for (const h of this.handles.values()) if (h.nodeid === nodeid) h.error ??= error;
        this.unsure(nodeid);
        // The name was never made: the kernel and the listings above drop it.
        void this.listeners.emit({ kind: 'entry', parent, name });
      } else if (attr && (attr.mode !== mine.mode || attr.uid !== mine.uid || attr.gid !== mine.gid || attr.ino !== mine.ino)) {
        // (A set-group-ID directory gave its group.) The kernel keeps mode and owner across writes.
        this.unmade(nodeid);
        void this.listeners.emit({ kind: 'inode', nodeid, off: -1, len: 0, attrsOnly: true });
      } else if (attr) {
        // The server's attributes after the naming are the file's until our next change (begin()
        // drops them) or a push, if nothing else of it went out since (the naming's own flight is
        // still counted here). A file closed unwritten (touch, open().close()) is then stat-ed here
        // after its close, as a written one is: 100 000 such stats were 100 000 GETATTRs.
        this.land(nodeid, attr, 0, 1);
      }
    }));
    return r;
  }

  async read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    await this.drain(nodeid);
    return this.inner.read(ctx, nodeid, fh, offset, size);
  }

  async write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    const h = this.handles.get(fh);
    if (!h?.behind || h.nodeid !== nodeid) {
      return this.changing(nodeid, async () => {
        await this.drain(nodeid);
        this.unmade(nodeid);
        return this.inner.write(ctx, nodeid, fh, offset, data);
      });
    }
    const end = offset + data.length;
    // Held attribute changes go first: this write must land after them.
    this.sendPending(nodeid);
    // An earlier write of this handle failed: say so now rather than pile more on.
    this.takeError(fh);
    if (this.gathered(h, ctx, offset, data)) return data.length;
    this.begin(nodeid);
    let flown = false;
    try {
      await this.room(data.length);
      const set = this.flights.get(nodeid);
      if (set) {
        const overlapping = [...set].filter((f) => f.off < end && offset < f.end);
        if (overlapping.length) {
          this.sendGathered(nodeid); // another handle's gathered writes among them
          await Promise.all(overlapping.map((f) => f.done));
        }
      }
      // Another write of this handle may have started gathering meanwhile.
      if (h.gather) this.sendGather(h.gather);
      this.grew(nodeid, end);
      this.counters.behind++;
      if (data.length < GATHER_BYTES) {
        this.startGather(h, fh, ctx, offset, data);
      } else {
        this.fly(nodeid, offset, end, data.length, this.sent(h, nodeid, offset, this.inner.write(plain(ctx), nodeid, fh, offset, data), data.length));
      }
      flown = true;
      return data.length;
    } finally {
      if (!flown) this.end(nodeid);
    }
  }

  /** Our record of a file we made, after a write up to `end`. */
  private grew(nodeid: number, end: number): void {
    const m = this.made.get(nodeid);
    if (!m) return;
    const now = nowTs();
    const size = Math.max(m.attr.size, end);
    m.attr = { ...m.attr, size, blocks: Math.max(m.attr.blocks, Math.ceil(size / 4096) * 8), mtime: now, ctime: now };
    // The kernel drops a file's times and size at each write it sends (fuse_write_update_attr):
    // what it was told before is no longer held.
    m.told = false;
  }

  /** A WRITE's outcome as its flight's work (never rejects): failures go to the handle, then to flush. */
  private sent(h: Handle, nodeid: number, offset: number, write: Promise<number>, len: number): Promise<void> {
    return write.then(
      (n) => {
        if (n >= len) return;
        h.error ??= new FsError(Errno.ENOSPC, `short write at ${offset + n}`);
        this.unsure(nodeid);
      },
      (err: unknown) => {
        h.error ??= err instanceof Error ? err : new FsError(Errno.EIO);
        this.counters.deferredErrors++;
        this.unsure(nodeid);
      },
    ).finally(() => this.end(nodeid));
  }

  /**
   * Adds the write to the handle's gathered writes if it follows them (same caller, room left),
   * without waiting: the gather is a flight already, and holds its bytes of the budget.
   */
  private gathered(h: Handle, ctx: Ctx, offset: number, data: Buffer): boolean {
    const g = h.gather;
    if (!g) return false;
    const f = g.flight;
    if (f.end !== offset || g.ctx.uid !== ctx.uid || g.ctx.gid !== ctx.gid || f.bytes + data.length > GATHER_BYTES ||
      this.inFlightBytes + data.length > this.limit) {
      this.sendGather(g);
      return false;
    }
    this.landed.delete(h.nodeid);
    g.chunks.push(data);
    f.end += data.length;
    f.bytes += data.length;
    this.inFlightBytes += data.length;
    this.grew(h.nodeid, f.end);
    this.counters.behind++;
    this.counters.gathered++;
    if (f.bytes >= GATHER_BYTES) this.sendGather(g);
    return true;
  }

  /** Starts gathering writes of the handle with this one (its begin() is the gather's). */
  private startGather(h: Handle, fh: number, ctx: Ctx, offset: number, data: Buffer): void {
    let send!: (work: Promise<void>) => void;
    const work = new Promise<void>((resolve) => (send = resolve));
    const flight = this.fly(h.nodeid, offset, offset + data.length, data.length, work);
    const g: Gather = { h, fh, ctx: plain(ctx), chunks: [data], flight, send, timer: setTimeout(() => this.sendGather(g), GATHER_MS) };
    g.timer.unref();
    h.gather = g;
  }

  /** Sends the handle's gathered writes as one WRITE. */
  private sendGather(g: Gather): void {
    const { h } = g;
    if (h.gather !== g) return;
    h.gather = undefined;
    clearTimeout(g.timer);
    const data = g.chunks.length === 1 ? g.chunks[0]! : Buffer.concat(g.chunks);
    g.send(this.sent(h, h.nodeid, g.flight.off, this.inner.write(g.ctx, h.nodeid, g.fh, g.flight.off, data), data.length));
  }

  /** Sends every gather of the node (each is one of its flights: a node with none has none). */
  private sendGathered(nodeid: number): void {
    if (!this.flights.has(nodeid)) return;
    for (const h of this.handles.values()) if (h.gather && h.nodeid === nodeid) this.sendGather(h.gather);
  }

  /** Tracks `work` (which never rejects) as a flight of the node covering [off, end). */
  private fly(nodeid: number, off: number, end: number, bytes: number, work: Promise<void>): Flight {
    const set = this.flights.get(nodeid) ?? new Set();
    this.flights.set(nodeid, set);
    const flight: Flight = { off, end, bytes, done: Promise.resolve() };
    this.inFlightBytes += bytes;
    flight.done = work.finally(() => {
      set.delete(flight);
      if (set.size === 0 && this.flights.get(nodeid) === set) this.flights.delete(nodeid);
      this.inFlightBytes -= flight.bytes;
      const waiters = this.roomWaiters;
      this.roomWaiters = [];
      for (const w of waiters) w();
    });
    set.add(flight);
    return flight;
  }

  async flush(_ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    const h = this.handles.get(fh);
    if (!h) throw new FsError(Errno.EBADF);
    if (h.behind) await this.drain(nodeid);
    this.correct(nodeid);
    this.takeError(fh);
  }

  /** A call of ours on the file failed or came out otherwise: our record of it is no longer sure. */
  private unsure(nodeid: number): void {
    this.correct(nodeid);
    this.unmade(nodeid);
  }

  /** The kernel holds attributes we answered for a file of ours: now that its calls landed, drop them. */
  private correct(nodeid: number): void {
    const m = this.made.get(nodeid);
    if (!m?.told) return;
    m.told = false;
    void this.listeners.emit({ kind: 'inode', nodeid, off: -1, len: 0, attrsOnly: true });
  }
  async fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.drain(nodeid);
    this.takeError(fh);
    await this.inner.fsync(ctx, nodeid, fh, datasync);
  }
  async release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.drain(nodeid);
    const m = this.made.get(nodeid);
    this.correct(nodeid);
    if (m && this.handles.get(fh)?.behind && --m.open <= 0) this.unmade(nodeid);
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
  async setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    return this.changing(nodeid, async () => {
      // An ACL rewrites the mode: a file of ours is no longer known here.
      await this.drain(nodeid);
      this.unsure(nodeid);
      return this.inner.setxattr(ctx, nodeid, name, value, flags);
    });
  }
  getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return this.inner.getxattr(ctx, nodeid, name);
  }
  listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    return this.inner.listxattr(ctx, nodeid);
  }
  async removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    return this.changing(nodeid, async () => {
      await this.drain(nodeid);
      this.unsure(nodeid);
      return this.inner.removexattr(ctx, nodeid, name);
    });
  }
  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.inner.access(ctx, nodeid, mask);
  }
  async fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.changing(nodeid, async () => {
      await this.drain(nodeid);
      this.unmade(nodeid);
      await this.inner.fallocate(ctx, nodeid, fh, mode, offset, length);
    });
  }
  async lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    await this.drain(nodeid);
    return this.inner.lseek(ctx, nodeid, fh, offset, whence);
  }
  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.changing(nodeOut, async () => {
      await Promise.all([this.drain(nodeIn), this.drain(nodeOut)]);
      this.unmade(nodeOut);
      return this.inner.copyFileRange(ctx, nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len);
    });
  }
  watch(listener: ChangeListener): () => void {
    const unwatchInner = this.inner.watch(listener);
    const unwatch = this.listeners.add(listener);
    return () => {
      unwatchInner();
      unwatch();
    };
  }
  async close(): Promise<void> {
    this.unwatch();
    this.unhint();
    for (const id of this.made.keys()) this.sendPending(id);
    await Promise.all([...this.flights.keys()].map((id) => this.drain(id)));
    await this.inner.close();
  }
}
