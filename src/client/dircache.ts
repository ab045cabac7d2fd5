// What a client knows of directories without asking, kept exact by the server's pushes:
//
// 1. Complete name lists of directories this client made: a lookup of a name that is not in one is
//    answered "no such file" here, with no round trip. Every file a program creates is looked up
//    first (the kernel asks LOOKUP before CREATE, O_EXCL or not), so extracting a tarball or
//    checking out a tree would pay one round trip per file for an answer this client already knows.
//    Likewise a name this client removed (or renamed away) in any directory, until a push about
//    the directory: git creates .git/index.lock with O_EXCL at every run (the kernel looks it up
//    again however fresh its negative entry is) and removes it at the end.
// 2. Directory attributes as the server sent them after this client's own create, unlink or
//    rename (protocol 1.1): the kernel drops a directory's attributes at each such change and asks
//    again at the next path walk through it; that GETATTR is answered here.
//    Likewise the attributes a SETATTR of ours returned, until anything else touches the node:
//    after a chown the kernel asks for them again at once (to recompute set-id bits). And every
//    directory's attributes from a GETATTR, a lookup or a listing: the kernel asks again after each
//    listing it reads (its atime), and only a push can change them otherwise. Our own rename or rmdir drops those
//    of the directories it changes (the parents, and the directory moved, known by its name), not
//    all: git renames its index at every `git status`.
// 3. Extended attributes, present or absent: the kernel caches none, and `ls -l`, `cp -a` or a
//    write (security.capability) ask for them again and again. Any change to a node is pushed as
//    an inode change, which drops its entries here.
// 4. Directory handles, opened on the server only when a listing is really read: the kernel keeps
//    listings in its page cache (FOPEN_CACHE_DIR), so `find` or `git status` over a tree it has
//    listed before open and close every directory without reading it; those opens cost nothing.
// 5. Read-only file handles, likewise, for files the server opened plainly before (no direct I/O):
//    the kernel keeps their pages across opens (FOPEN_KEEP_CACHE), so `git status` opening HEAD,
//    config and the index, or a build opening the same headers again, reads nothing from the
//    server, and its open and close were its only round trips. The server opens the file at the
//    first read the kernel cannot answer; permissions were checked by the kernel at open, and the
//    server checks them again then. Before an unlink or rename of ours, such handles are opened on
//    the server, so a file we hold open and then remove stays readable.
// 6. Unlinks answered here (unlink-behind, client.ts): in a directory this client holds alone
//    under a lease, by the uid the lease was granted to, when the kernel's check of the
//    directory's permissions is the server's (root, or the directory's owner with write and search
//    bits); the directory's attributes are then answered as they were with mtime and ctime now,
//    and so after a create behind (client.ts), until all have their replies; then the server's are
//    fetched and kept, and the kernel is told to ask again (answered here). One that failed
//    (a host process removed or locked the file meanwhile) is logged, and the kernel is told to
//    look the name up again: the file is there.
// 7. Whole listings: once the server has given a directory's entries from the first to the last
//    (1.3 says which reply ends it), a later listing of it is answered here, and so is the
//    kernel's closing READDIR that only learns nothing follows. The kernel keeps a listing only
//    once it has read it to its end, so `rm -rf`, which reads a directory's first entries, closes
//    it and reads it again, listed every directory twice from the server. READDIRPLUS is answered
//    here only when the kernel already holds every name (its entries then carry no attributes,
//    node id 0, which the kernel takes as "look it up if you need it"). It does not answer
//    lookups of absent names: on a case-insensitive source (FAT) a name not listed may exist.
//    Our own unlinks and rmdirs keep a whole listing, without the names they removed.
// 8. Rmdirs answered here (rmdir-behind, client.ts, protocol 1.5): as an unlink in 6, when the
//    client below also holds the directory itself under a lease and we know it is empty: its
//    complete name list (1) or its whole listing (7) holds no name any more. One the server
//    refuses (a host process filled the directory meanwhile) is logged, and the kernel is told to
//    look the name up again. A lease asked for and not answered yet is waited for: its answer
//    comes before that of an rmdir sent now, which the server runs after every removal before it.
// 9. Listings made here: a directory with a complete name list (1), each name's inode number and
//    type known from the reply that made it, is listed here without asking the server (`rm -rf`
//    of a tree just extracted listed each directory from the server: 1648 READDIRPLUS of 0.7 ms
//    for 823 directories, 40% of its time). Names are listed in the order they were made, with
//    cookies of our own (above MADE_COOKIES, so a READDIR says whose listing it continues), which
//    a name keeps while it exists: a listing read across removals neither skips nor repeats one.
//    READDIRPLUS is answered so only when the kernel holds every name, as in 7.
//
// The list is exact because the server pushes every change to a directory to the sessions that
// hold it (and this session holds what it made, until its kernel forgets it): any push naming a
// directory, or a forget of it, drops its list and lookups go to the server again. Changes by
// local processes on the server host arrive through inotify a few milliseconds late; until then
// this cache says what a negative dentry in the kernel would have said.

import { Errno, FsError, errnoName } from '../lib/errno.js';
import type { Logger } from '../lib/log.js';
import { ChangeListeners } from '../vfs/listeners.js';
import {
  COHERENT_CACHE_S, O_ACCMODE, O_CREAT, O_DIRECT, O_RDONLY, O_TRUNC, S_IFDIR, S_IFMT, S_IFREG, isEnded, markEnded,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo, type OpenResult,
  type SetAttr, type StatFs, type Vfs, type AttrSink,
} from '../vfs/types.js';

/** Directories tracked at most; beyond it the oldest list is dropped. */
const MAX_DIRS = 10_000;
/** Entries of a whole listing kept at most (7); a larger directory is listed by the server. */
const MAX_LISTED = 10_000;
/**
 * Cookies of the listings made here (9) start above this, those of a source (the position of an
 * entry, in all of ours) stay below it: a READDIR says by its offset whose listing it goes on with.
 * A source that answers with a cookie as large turns listings made here off.
 */
const MADE_COOKIES = 2 ** 52;
/** Names per directory at most; a larger directory stops being tracked. */
const MAX_NAMES = 100_000;
/** Names known absent (removed by us) at most, over all directories; beyond, the record starts over. */
const MAX_ABSENT = 10_000;
/** Directory attributes are kept at most this long: the kernel's own bound for a coherent mount. */
const ATTR_TTL_MS = COHERENT_CACHE_S * 1000;
const MAX_DIR_ATTRS = 20_000;
const MAX_FILE_ATTRS = 10_000;
const CAPS = 'security.capability';
/** How long after its last unlink-behind landed a directory's made-up attributes are dropped. */
const CORRECT_AFTER_MS = 50;
/** Extended attribute answers kept at most (names over all nodes); beyond, the cache starts over. */
const MAX_XATTRS = 100_000;

interface Kept {
  attr: Attr;
  /** When it was kept (Date.now()): it answers for ATTR_TTL_MS. */
  at: number;
}

/**
 * Kept attributes that a sink is told of as they come and go (offerAttrs): the directories',
 * whose GETATTRs the kernel sends after each name made or removed in them.
 */
class Published extends Map<number, Kept> {
  private sink: AttrSink | undefined;

  /** Tells `sink` of every entry from now on, those kept already first. */
  publish(sink: AttrSink): void {
    this.sink = sink;
    for (const [id, k] of this) sink.set(id, k.attr, k.at + ATTR_TTL_MS);
  }
  override set(id: number, k: Kept): this {
    super.set(id, k);
    this.sink?.set(id, k.attr, k.at + ATTR_TTL_MS);
    return this;
  }
  override delete(id: number): boolean {
    const had = super.delete(id);
    if (had) this.sink?.delete(id);
    return had;
  }
  override clear(): void {
    super.clear();
    this.sink?.clear();
  }
}

type XattrAnswer = Buffer | FsError;
const NO_DATA = new FsError(Errno.ENODATA);

/** What the client below offers this cache (client.ts; writeback.ts passes it through). */
export interface RemoteHooks {
  leasedFor(dir: number, uid: number): boolean;
  /** Sent without waiting (undefined: not possible now); resolves with its failure, if any. */
  unlinkBehind(ctx: Ctx, parent: number, name: string): Promise<FsError | undefined> | undefined;
  /** The same for the rmdir of directory `child`, which the caller knows to be empty (client.ts 1.5). */
  rmdirBehind?(ctx: Ctx, parent: number, name: string, child: number): Promise<FsError | undefined> | undefined;
  /** Settles when the lease asked for on `dir` is answered; undefined when none is being asked. */
  leaseAnswer?(dir: number): Promise<void> | undefined;
  /** The node the kernel holds as parent/name (a lookup of it), if it holds one. */
  heldNode(parent: number, name: string): number | undefined;
  /** Counts a lookup of node `id` answered here (not the server's to forget); false: it may not be. */
  countLookup(id: number): boolean;
  /** Says that creates will be offered to createBehind (client.ts keeps files reserved from then on). */
  offerCreateBehind?(): void;
  /** A create answered at once with a reserved file, named behind (client.ts); undefined: as usual. */
  createBehind?(ctx: Ctx, parent: number, name: string, mode: number, flags: number): { result: CreateResult; named: Promise<{ attr?: Attr; error?: FsError }> } | undefined;
  /** OPENDIR and the first READDIR in one round trip (client.ts); undefined: not offered. */
  listdir(ctx: Ctx, nodeid: number, maxEntries: number, plus: boolean): Promise<{ fh: number | undefined; list: DirEntry[] } | undefined>;
  /** A listing of `dir` was answered here from its first entry (9): what LISTDIR would have asked for with it. */
  listedHere?(ctx: Ctx, dir: number): void;
}

/** A directory or file handle given to the kernel, opened on the server at its first real use. */
interface LazyHandle {
  nodeid: number;
  ctx: Ctx;
  /** Open flags, for a file. */
  flags: number;
  real: Promise<number> | undefined;
  /** A directory's: read to its end by LISTDIR with no handle kept, whose last entry had this cookie. */
  ended?: number | undefined;
  /** A directory's: the listing made here (9) that its reads go on with. */
  made?: DirEntry[] | undefined;
}

/** Lazy handles of one kind (directories, or files), numbered from `next`. */
class LazyHandles {
  private readonly map = new Map<number, LazyHandle>();
  constructor(private next: number, private readonly openReal: (h: LazyHandle) => Promise<number>) {}

  get size(): number {
    return this.map.size;
  }
  add(nodeid: number, ctx: Ctx, flags: number): number {
    const fh = this.next++;
    this.map.set(fh, { nodeid, ctx: { uid: ctx.uid, gid: ctx.gid, pid: ctx.pid }, flags, real: undefined });
    return fh;
  }
  /** The server's handle for fh, opened there now if it was not yet (once). */
  real(fh: number, nodeid: number): Promise<number> {
    const h = this.map.get(fh);
    if (!h || h.nodeid !== nodeid) return Promise.reject(new FsError(Errno.EBADF));
    h.real ??= this.openReal(h);
    return h.real;
  }
  /** Whether fh is a handle of node `nodeid` given out and not released. */
  has(fh: number, nodeid: number): boolean {
    return this.map.get(fh)?.nodeid === nodeid;
  }
  /** The record of fh when it is a handle of node `nodeid`. */
  get(fh: number, nodeid: number): LazyHandle | undefined {
    const h = this.map.get(fh);
    return h?.nodeid === nodeid ? h : undefined;
  }
  /** The server's handle for fh if it has one (undefined: never opened there, or that failed). */
  async opened(fh: number): Promise<number | undefined> {
    return this.map.get(fh)?.real?.catch(() => undefined);
  }
  /** Forgets fh (a release); resolves to the server's handle to release, if there is one. */
  take(fh: number, nodeid: number): Promise<number | undefined> {
    const h = this.map.get(fh);
    if (!h || h.nodeid !== nodeid) return Promise.reject(new FsError(Errno.EBADF));
    this.map.delete(fh);
    return h.real ? h.real.catch(() => undefined) : Promise.resolve(undefined);
  }
  /** Opens every handle not yet opened on the server; failures are left to the handle's next use. */
  async openAll(): Promise<void> {
    await Promise.all([...this.map].map(([fh, h]) => this.real(fh, h.nodeid).catch(() => undefined)));
  }
}

/**
 * Lazy file handles are numbered from here: the server's handles pass through to the kernel
 * unchanged and are small (a restarted server's are remapped from 2^40, remap.ts).
 */
const LAZY_FH_BASE = 2 ** 50;
/** Nodes remembered as plainly openable at most; beyond, the set starts over. */
const MAX_PLAIN_OPENS = 100_000;
/** Open flags that may be answered here: read-only, no truncation, creation or direct I/O. */
const PLAIN_OPEN_MASK = O_ACCMODE | O_TRUNC | O_CREAT | O_DIRECT;

/** The node behind a name, as the reply that made it gave it (undefined where unknown). */
interface Made {
  ino: number | undefined;
  /** S_IFMT bits (0: unknown). */
  type: number;
  /** Its generation (a directory's, for lookups answered here). */
  generation: number | undefined;
}

/** What a complete name list (1) keeps of a name: the node, and its cookie in listings made here (9). */
interface KnownName extends Made {
  off: number;
}

/** The complete name list of a directory this client made (1). */
interface NameList {
  /** In the order they were made, which is that of their cookies. */
  names: Map<string, KnownName>;
  /** The directory's inode number, and its parent's node id (undefined once unsure after a rename). */
  ino: number;
  parent: number | undefined;
  /** The cookie the next name gets. */
  next: number;
}

const made = (e: Entry): Made => ({ ino: e.attr.ino, type: e.attr.mode & S_IFMT, generation: e.generation });

export class DirCacheVfs implements Vfs {
  /** Directory id -> every name in it, for directories made by this client and unchanged since. */
  private readonly known = new Map<number, NameList>();
  /** Directory id -> names this client removed from it (or renamed away), absent since (1). */
  private readonly absent = new Map<number, Set<string>>();
  private absentCount = 0;
  /**
   * Node id -> attributes the server gave after a change of ours (a directory's after a create or
   * unlink, a file's from our SETATTR) or a directory's from a GETATTR, lookup or listing, kept
   * while nothing else touched the node. Directories and files apart: the thousands of files `tar` sets attributes on
   * must not push out the few hundred directories a later `find` walks.
   */
  private readonly dirAttrs = new Published();
  /**
   * "parent\0name" -> node id of the directories handed to the kernel (lookup, mkdir, readdirplus):
   * a rename or rmdir names its directory only by name, and must drop that one's attributes, not
   * every directory's (git rewrites its index by rename at each `git status`). Bounded; once it
   * has dropped a name, a rename or rmdir of a name not in it drops them all.
   */
  private readonly dirIds = new Map<string, number>();
  private dirIdsLost = false;
  private readonly fileAttrs = new Map<number, Kept>();
  /** Bumped by every touch: a SETATTR reply that crossed one is not kept. */
  private attrEpoch = 0;
  /** nodeid -> xattr name (or '' for the list) -> the answer the server gave. */
  private readonly xattrs = new Map<number, Map<string, XattrAnswer | string[]>>();
  private xattrCount = 0;
  /** Nodes known to have no security.capability (the kernel asks before every first write). */
  private readonly noCaps = new Set<number>();
  /** Bumped at every drop: an answer that was in flight across one is not kept (it may be older). */
  private xattrEpoch = 0;
  private readonly dirHandles = new LazyHandles(1, (h) => this.inner.opendir(h.ctx, h.nodeid).then((r) => r.fh));
  private readonly fileHandles = new LazyHandles(LAZY_FH_BASE, (h) => this.inner.open(h.ctx, h.nodeid, h.flags).then((r) => r.fh));
  /**
   * Node id -> keepCache of the server's last plain read-only open of it (one without direct I/O
   * or a non-seekable stream): such opens are answered here. Dropped by any push about the node.
   */
  private readonly plainOpens = new Map<number, boolean>();
  private readonly unwatch: () => void;
  private readonly unhint: () => void;
  private readonly counters = { answered: 0, attrsAnswered: 0, opensAnswered: 0, listingsAnswered: 0 };
  /**
   * Whether a name is found only as it was made: not on FAT (nor ISO 9660), where a lookup ignores
   * case, so a name we did not make in our own directory may still be found.
   */
  private readonly exactNames: boolean;
  /** A source gave a cookie of the range of ours (MADE_COOKIES): no listings are made here. */
  private bigCookies = false;
  /** Our own notes to the kernel (unlink-behind), besides what the layers below report. */
  private readonly notes = new ChangeListeners();
  /** Directory id -> unlinks answered here and not yet answered by the server. */
  private readonly behindIn = new Map<number, number>();
  /** Directory id -> its whole listing as the server gave it, without lookups (7). */
  private readonly listings = new Map<number, DirEntry[]>();
  /** Directory id -> names we removed from its whole listing since (see keepListing). */
  private readonly listingGone = new Map<number, Set<string>>();
  /** Listings being read from their start, and the listEpoch they began in. */
  private readonly reading = new Map<number, { entries: DirEntry[]; epoch: number }>();
  /** Bumped by every change to names we hear of or make: a listing read across one is not kept. */
  private listEpoch = 0;
  /** Directories whose made-up attributes are about to be dropped (see changedBehind). */
  private readonly correcting = new Map<number, NodeJS.Timeout>();
  /** Directories whose attributes are being fetched to correct ours, untouched since (see correct). */
  private readonly fetching = new Set<number>();

  /**
   * `hints`: subscribes to post-change directory attributes (RemoteVfs.onDirAttr); `behind`:
   * unlink-behind, when the layers below offer it.
   */
  constructor(private readonly inner: Vfs, hints?: (l: (nodeid: number, attr: Attr) => void) => () => void,
    private readonly behind?: RemoteHooks, private readonly log?: Logger) {
    this.exactNames = !/fat|msdos|iso9660/i.test(inner.info().type);
    this.unwatch = inner.watch((ev) => {
      const dir = ev.kind === 'inode' ? ev.nodeid : ev.parent;
      this.relist(dir);
      this.unsure(dir);
      this.touched(dir);
      if (ev.kind === 'inode') this.dropXattrs(ev.nodeid);
      if (ev.kind === 'delete') {
        this.dropXattrs(ev.child);
        this.touched(ev.child);
      }
    });
    this.unhint = hints?.((nodeid, attr) => this.keepAttr(nodeid, attr)) ?? ((): void => {});
  }

  stats(): { knownDirs: number; lookupsAnswered: number; dirAttrs: number; getattrsAnswered: number; opensAnswered: number; listings: number; listingsAnswered: number } {
    return {
      knownDirs: this.known.size, lookupsAnswered: this.counters.answered, dirAttrs: this.dirAttrs.size,
      getattrsAnswered: this.counters.attrsAnswered, opensAnswered: this.counters.opensAnswered,
      listings: this.listings.size, listingsAnswered: this.counters.listingsAnswered,
    };
  }

  /** The names in `dir` change (or may have): its whole listing, if we had one, is gone. */
  private relist(dir: number): void {
    this.listEpoch++;
    this.fetching.delete(dir);
    this.listings.delete(dir);
    this.listingGone.delete(dir);
    this.reading.delete(dir);
  }

  /** What we know of the names in `dir` (all of them, or some absent ones) may be wrong now. */
  private unsure(dir: number): void {
    this.known.delete(dir);
    if (dir === 0) {
      this.absent.clear();
      this.absentCount = 0;
    } else {
      this.absentCount -= this.absent.get(dir)?.size ?? 0;
      this.absent.delete(dir);
    }
  }

  /** Our own removal of dir/name has been done: the name is absent until a push says otherwise. */
  private gone(dir: number, name: string): void {
    if (!this.exactNames) return;
    if (this.absentCount >= MAX_ABSENT) this.unsure(0);
    let names = this.absent.get(dir);
    if (!names) this.absent.set(dir, (names = new Set()));
    if (!names.has(name)) this.absentCount++;
    names.add(name);
  }

  /** parent/name now exists, as the node `what` describes (undefined: we cannot tell which). */
  private add(dir: number, name: string, what: Made | undefined): void {
    const absent = this.absent.get(dir);
    if (absent?.delete(name)) this.absentCount--;
    const list = this.known.get(dir);
    if (!list) return;
    if (list.names.size >= MAX_NAMES) {
      this.known.delete(dir);
      return;
    }
    // A name made again keeps its place (and cookie): listings stay in cookie order.
    const off = list.names.get(name)?.off ?? list.next++;
    list.names.set(name, { off, ino: what?.ino, type: what?.type ?? 0, generation: what?.generation });
  }

  private remove(dir: number, name: string): void {
    this.known.get(dir)?.names.delete(name);
  }

  info(): FsInfo {
    return this.inner.info();
  }
  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    const names = this.exactNames ? this.known.get(parent) : undefined;
    if ((names && !names.names.has(name) && name !== '.' && name !== '..') || this.absent.get(parent)?.has(name)) {
      this.counters.answered++;
      throw new FsError(Errno.ENOENT);
    }
    const here = this.lookupHere(parent, name);
    if (here) return here;
    const epoch = this.attrEpoch;
    return this.named(parent, name, await this.inner.lookup(ctx, parent, name), epoch);
  }
  /**
   * A lookup of a directory we made, which the kernel holds already, answered with the attributes
   * a GETATTR would be answered with here (2): the kernel looks a directory up again after every
   * chmod of it (fs/fuse/dir.c drops its entry's time, to recheck access), and tar changes the mode
   * of every directory it extracts, so `rm -rf` or `find` over the tree paid a round trip for each.
   */
  private lookupHere(parent: number, name: string): Entry | undefined {
    const k = this.exactNames ? this.known.get(parent)?.names.get(name) : undefined;
    if (k?.type !== S_IFDIR || k.generation === undefined || !this.behind) return undefined;
    const id = this.behind.heldNode(parent, name);
    const kept = id === undefined ? undefined : this.dirAttrs.get(id);
    if (!kept || Date.now() - kept.at >= ATTR_TTL_MS || kept.attr.ino !== k.ino || !this.behind.countLookup(id!)) return undefined;
    this.counters.answered++;
    return { nodeid: id!, generation: k.generation, attr: { ...kept.attr } };
  }
  /**
   * Notes a directory's name for rename and rmdir (see dirIds), and its attributes as the entry
   * gave them when nothing touched any node since `epoch` (the attrEpoch before the call): the
   * kernel asks for them again once it has read the directory (its atime), and a second `find`
   * over a tree would otherwise cost a round trip per directory.
   */
  private named(parent: number, name: string, e: Entry, epoch?: number): Entry {
    if (e.nodeid && (e.attr.mode & S_IFMT) === S_IFDIR && name !== '.' && name !== '..') {
      if (epoch === this.attrEpoch) this.keepAttr(e.nodeid, e.attr);
      const key = `${parent}\0${name}`;
      if (this.dirIds.size >= MAX_DIR_ATTRS && !this.dirIds.has(key)) {
        this.dirIds.delete(this.dirIds.keys().next().value!);
        this.dirIdsLost = true;
      }
      this.dirIds.set(key, e.nodeid);
    }
    return e;
  }
  /**
   * A directory entry parent/name goes away or moves: drops what we keep of the directory it may
   * be, and returns that directory's id when known.
   */
  private unnamed(parent: number, name: string): number | undefined {
    const key = `${parent}\0${name}`;
    const id = this.dirIds.get(key);
    if (id !== undefined) {
      this.dirIds.delete(key);
      this.dirAttrs.delete(id);
    } else if (this.dirIdsLost) {
      this.dirAttrs.clear();
    }
    return id;
  }
  forget(nodeid: number, nlookup: number): void {
    // The server stops telling us about a node the kernel no longer holds.
    this.unsure(nodeid);
    this.relist(nodeid);
    this.dropXattrs(nodeid);
    this.touched(nodeid);
    this.inner.forget(nodeid, nlookup);
  }
  /** Something changed node `nodeid` (0: some node we cannot name): what we kept of it may be old. */
  private touched(nodeid: number): void {
    this.attrEpoch++;
    if (nodeid === 0) {
      this.fetching.clear();
      this.dirAttrs.clear();
      this.fileAttrs.clear();
    } else {
      this.fetching.delete(nodeid);
      this.dirAttrs.delete(nodeid);
      this.fileAttrs.delete(nodeid);
    }
  }
  private keepAttr(nodeid: number, attr: Attr): void {
    const dir = (attr.mode & S_IFMT) === S_IFDIR;
    const kept = dir ? this.dirAttrs : this.fileAttrs;
    if (kept.size >= (dir ? MAX_DIR_ATTRS : MAX_FILE_ATTRS)) kept.delete(kept.keys().next().value!);
    kept.delete(nodeid);
    kept.set(nodeid, { attr: { ...attr }, at: Date.now() });
  }
  /** Directories' attributes, as getattr answers them from dirAttrs. */
  offerAttrs(sink: AttrSink): void {
    this.dirAttrs.publish(sink);
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    const got = this.dirAttrs.get(nodeid) ?? this.fileAttrs.get(nodeid);
    if (got && Date.now() - got.at < ATTR_TTL_MS) {
      this.counters.attrsAnswered++;
      return { ...got.attr };
    }
    const epoch = this.attrEpoch;
    const attr = await this.inner.getattr(ctx, nodeid, fh === undefined || fh < LAZY_FH_BASE ? fh : await this.fileHandles.opened(fh));
    // A directory's attributes change only with what the server pushes (its names, or a chmod): kept
    // until then. The kernel asks again after every listing it reads (to refresh the atime it keeps),
    // so without this a second `find` over a tree would cost one round trip per directory.
    if ((attr.mode & S_IFMT) === S_IFDIR && epoch === this.attrEpoch) this.keepAttr(nodeid, attr);
    return attr;
  }
  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    this.touched(nodeid);
    // A mode change rewrites a POSIX ACL's xattr too.
    if (set.mode !== undefined) this.dropXattrs(nodeid);
    const epoch = this.attrEpoch;
    const attr = await this.inner.setattr(ctx, nodeid, set, fh === undefined || fh < LAZY_FH_BASE ? fh : await this.fileHandles.opened(fh));
    if (epoch === this.attrEpoch) this.keepAttr(nodeid, attr);
    return attr;
  }
  readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return this.inner.readlink(ctx, nodeid);
  }
  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    const e = await this.changing(parent, this.inner.mknod(ctx, parent, name, mode, rdev));
    this.add(parent, name, made(e));
    return e;
  }
  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    const e = this.named(parent, name, await this.changing(parent, this.inner.mkdir(ctx, parent, name, mode)));
    this.add(parent, name, made(e));
    if (this.known.size >= MAX_DIRS) this.known.delete(this.known.keys().next().value!);
    // A directory we just made holds nothing but what we put in it (until a push says otherwise).
    this.known.set(e.nodeid, { names: new Map(), ino: e.attr.ino, parent, next: MADE_COOKIES + 3 });
    return e;
  }
  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    const e = await this.changing(parent, this.inner.symlink(ctx, parent, name, target));
    this.add(parent, name, made(e));
    return e;
  }
  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    this.touched(nodeid);
    const e = await this.changing(newparent, this.inner.link(ctx, nodeid, newparent, newname));
    this.add(newparent, newname, made(e));
    return e;
  }
  /** Runs a change to directory `dir`; if it fails, our list of the directory is no longer sure. */
  private async changing<T>(dir: number, op: Promise<T>): Promise<T> {
    this.relist(dir);
    try {
      return await op;
    } catch (err) {
      this.unsure(dir);
      throw err;
    }
  }
  async unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    // Some file's link count (whose, we cannot tell by name) and the parent change; never another
    // directory (unlink does not remove directories): tar replaces its symlink placeholders so, and
    // must not cost a later `find` every directory's attributes.
    this.attrEpoch++;
    this.fileAttrs.clear();
    if (this.unlinkBehind(ctx, parent, name)) return;
    this.dirAttrs.delete(parent);
    if (this.fileHandles.size) await this.fileHandles.openAll(); // see openAll's use in rename
    await this.removing(parent, name, this.inner.unlink(ctx, parent, name));
  }
  /**
   * Runs our own removal of parent/name. Its whole listing, if we have one, stays, without the
   * name, unless anything else changed a listing meanwhile: so an emptied directory is known
   * empty at its rmdir (see rmdirBehind), though the server listed it and we did not make it.
   */
  private async removing(parent: number, name: string, op: Promise<void>): Promise<void> {
    const listing = this.listings.get(parent);
    const gone = this.listingGone.get(parent);
    const done = this.changing(parent, op);
    const epoch = this.listEpoch;
    await done;
    this.remove(parent, name);
    if (epoch !== this.listEpoch) return;
    if (listing) this.keepListing(parent, listing, gone, name);
    this.gone(parent, name);
  }
  /** Our own removal of parent/name answered here: the same, at once. */
  private unlisted(parent: number, name: string): void {
    const listing = this.listings.get(parent);
    const gone = this.listingGone.get(parent);
    this.relist(parent);
    if (listing) this.keepListing(parent, listing, gone, name);
    this.remove(parent, name);
    this.gone(parent, name);
  }
  /**
   * Keeps the whole listing of `dir` with `name` gone from it: noted in a set, not filtered out
   * at once (an `rm -rf` of a directory of 10 000 names would filter 10 000 times).
   */
  private keepListing(dir: number, listing: DirEntry[], gone: Set<string> | undefined, name: string): void {
    this.listings.set(dir, listing);
    this.listingGone.set(dir, (gone ?? new Set()).add(name));
  }
  /** The whole listing of `dir` as it is now (the names we removed since filtered out), if we have it. */
  private listing(dir: number): DirEntry[] | undefined {
    const all = this.listings.get(dir);
    const gone = this.listingGone.get(dir);
    if (!all || !gone) return all;
    const now = all.filter((e) => !gone.has(e.name));
    this.listings.set(dir, now);
    this.listingGone.delete(dir);
    return now;
  }
  /** Whether `dir` is known to hold nothing: by its complete name list or its whole listing (false when we have neither). */
  private empty(dir: number): boolean {
    const names = this.known.get(dir);
    if (names) return names.names.size === 0;
    return this.listing(dir)?.every((e) => e.name === '.' || e.name === '..') ?? false;
  }
  /**
   * Whether ctx may have a removal in `parent` answered here, going by the attributes we keep of
   * it: the kernel checked the permission against them, and its check must be the server's (root,
   * or the directory's owner with write and search bits).
   */
  private mayRemoveHere(ctx: Ctx, parent: number): Attr | undefined {
    const kept = this.dirAttrs.get(parent);
    if (!this.behind || !kept || Date.now() - kept.at >= ATTR_TTL_MS) return undefined;
    const d = kept.attr;
    if (ctx.uid !== 0 && !(ctx.uid === d.uid && (d.mode & 0o300) === 0o300)) return undefined;
    return d;
  }
  /** Settles when the leases asked for on `dir` and `child` are answered; undefined if neither is asked. */
  private leaseAnswers(dir: number, child: number | undefined): Promise<unknown> | undefined {
    const a = this.behind?.leaseAnswer?.(dir);
    const b = child === undefined ? undefined : this.behind?.leaseAnswer?.(child);
    return a && b ? Promise.all([a, b]) : a ?? b;
  }
  /** Answers an unlink here and sends it behind, when it may (see 6 above); false if not. */
  private unlinkBehind(ctx: Ctx, parent: number, name: string): boolean {
    const d = this.mayRemoveHere(ctx, parent);
    if (!d || this.fileHandles.size || !this.behind!.leasedFor(parent, ctx.uid)) return false;
    const sent = this.behind!.unlinkBehind(ctx, parent, name);
    if (!sent) return false;
    this.answeredBehind(ctx, parent, name, d, 0, sent, 'an unlink');
    return true;
  }
  /**
   * Answers an rmdir here and sends it behind (see 8 above), when the parent may be changed so
   * (as for an unlink), the directory is one we know by name and know to be empty, and the client
   * below holds both under a lease; false if not.
   */
  private rmdirBehind(ctx: Ctx, parent: number, name: string): boolean {
    const d = this.mayRemoveHere(ctx, parent);
    const child = this.dirIds.get(`${parent}\0${name}`);
    if (!d || child === undefined || !this.behind!.rmdirBehind || !this.empty(child)) return false;
    const sent = this.behind!.rmdirBehind(ctx, parent, name, child);
    if (!sent) return false;
    this.unnamed(parent, name);
    this.unsure(child);
    this.relist(child);
    this.touched(child);
    // Its ".." goes: one link less.
    this.answeredBehind(ctx, parent, name, d, 1, sent, 'an rmdir');
    return true;
  }
  /**
   * The kernel is answered: `parent` is changed behind (see changedBehind), and a removal that
   * failed is logged and the name looked up again.
   */
  private answeredBehind(ctx: Ctx, parent: number, name: string, d: Attr, links: number, sent: Promise<FsError | undefined>, what: string): void {
    this.unlisted(parent, name);
    this.changedBehind(ctx, parent, d, links, sent.then((err) => {
      if (!err) return;
      // ENOENT: someone else removed it first (a host process): what the caller wanted holds.
      if (err.errno !== Errno.ENOENT) this.log?.warn(`${what} answered before the server ran it failed there (${errnoName(err.errno)}): ${name} is back`);
      this.unsure(parent);
      this.relist(parent);
      void this.notes.emit({ kind: 'entry', parent, name });
    }));
  }
  /**
   * A change of names in `parent` answered before the server ran it (a removal, or a create
   * behind): the directory is kept with mtime and ctime now (and `links` fewer links), from `d`,
   * until every such change in it has landed. Then the server's own attributes are fetched and
   * kept, and the kernel is told to ask again: it holds ours (our clock), and its next GETATTR,
   * the next `git status` walking through .git, is answered here.
   */
  private changedBehind(ctx: Ctx, parent: number, d: Attr, links: number, landed: Promise<unknown>): void {
    const ms = Date.now();
    const now = { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
    this.keepAttr(parent, { ...d, mtime: now, ctime: now, nlink: Math.max(1, d.nlink - links) });
    this.behindIn.set(parent, (this.behindIn.get(parent) ?? 0) + 1);
    // The correction is no part of the request that made the change: nothing of it to cancel.
    const who: Ctx = { uid: ctx.uid, gid: ctx.gid, pid: ctx.pid };
    void landed.then(() => {
      const left = (this.behindIn.get(parent) ?? 1) - 1;
      if (left > 0) {
        this.behindIn.set(parent, left);
        return;
      }
      this.behindIn.delete(parent);
      // All landed; corrected a moment later, as the next unlink in a loop often comes before the
      // server has answered the last, and would then find no attributes to go behind with.
      if (!this.correcting.has(parent)) {
        this.correcting.set(parent, setTimeout(() => {
          this.correcting.delete(parent);
          if (!this.behindIn.has(parent)) this.correct(who, parent);
        }, CORRECT_AFTER_MS).unref());
      }
    });
  }
  /**
   * Replaces the attributes of `parent` we made up by the server's (changedBehind). Not
   * touched(): that would also void every answer in flight, as a listing's directory attributes.
   * The answer is kept only if nothing changed the directory or its names meanwhile (unfetched).
   */
  private correct(ctx: Ctx, parent: number): void {
    this.dirAttrs.delete(parent);
    this.fetching.add(parent);
    const tell = (): void => {
      this.fetching.delete(parent);
      void this.notes.emit({ kind: 'inode', nodeid: parent, off: -1, len: 0, attrsOnly: true });
    };
    this.inner.getattr(ctx, parent).then((attr) => {
      if (this.fetching.has(parent) && !this.behindIn.has(parent) && (attr.mode & S_IFMT) === S_IFDIR) this.keepAttr(parent, attr);
      tell();
    }, tell);
  }
  async rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    // The parent's link count and times change, and the directory goes; no other node.
    this.attrEpoch++;
    if (this.rmdirBehind(ctx, parent, name)) return;
    // rm -rf lists a directory (which asks for its lease) and goes down into its only
    // subdirectory at once: that one's rmdir came before the lease's answer (1 in 5 rmdirs of
    // /usr/include).
    const answers = this.leaseAnswers(parent, this.dirIds.get(`${parent}\0${name}`));
    if (answers) {
      await answers;
      if (this.rmdirBehind(ctx, parent, name)) return;
    }
    this.dirAttrs.delete(parent);
    const id = this.unnamed(parent, name);
    try {
      await this.removing(parent, name, this.inner.rmdir(ctx, parent, name));
    } catch (err) {
      // Still there (ENOTEMPTY, most likely): the kernel keeps its entry and will not look it up again.
      if (id !== undefined) this.dirIds.set(`${parent}\0${name}`, id);
      throw err;
    }
  }
  async rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    // Both parents (times, link counts), the node moved (its ctime, and ".." for a directory) and a
    // node replaced (its link count): files by id we cannot tell, directories by name we can.
    this.attrEpoch++;
    this.fileAttrs.clear();
    this.dirAttrs.delete(parent);
    this.dirAttrs.delete(newparent);
    const moved = this.unnamed(parent, name);
    const replaced = this.unnamed(newparent, newname);
    const from = this.known.get(parent)?.names.get(name);
    const to = this.known.get(newparent)?.names.get(newname);
    this.relist(parent);
    this.relist(newparent);
    // A file we hold open without the server must stay readable once its name is gone (POSIX: an
    // open file outlives its names); which file a name is we cannot tell here, so all are opened.
    // Few such handles are open at any time, and each is opened once.
    if (this.fileHandles.size) await this.fileHandles.openAll();
    const epoch = this.listEpoch;
    try {
      await this.inner.rename(ctx, parent, name, newparent, newname, flags);
    } catch (err) {
      // Whatever happened, what we knew of both directories is no longer certain.
      for (const d of [parent, newparent]) {
        this.unsure(d);
        this.dirAttrs.delete(d);
      }
      throw err;
    }
    const exchange = (flags & 2) !== 0;
    if (!exchange) this.remove(parent, name);
    this.add(newparent, newname, from);
    if (exchange) this.add(parent, name, to);
    // A directory moved has a new '..' (9); one we cannot tell by name may be any we made.
    if (moved !== undefined) this.reparent(moved, newparent);
    else if (this.dirIdsLost && from?.type !== S_IFREG) for (const list of this.known.values()) list.parent = undefined;
    if (exchange && replaced !== undefined) this.reparent(replaced, parent);
    // (git renames index.lock to index, and looks index.lock up again at its next run.)
    if (!exchange && epoch === this.listEpoch && (parent !== newparent || name !== newname)) this.gone(parent, name);
    if (moved !== undefined) this.dirIds.set(`${newparent}\0${newname}`, moved);
    if (exchange && replaced !== undefined) this.dirIds.set(`${parent}\0${name}`, replaced);
  }
  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    this.touched(nodeid); // O_TRUNC, and atime
    const plain = (flags & PLAIN_OPEN_MASK) === O_RDONLY;
    const keepCache = plain ? this.plainOpens.get(nodeid) : undefined;
    if (keepCache !== undefined) {
      // The kernel has checked the permission itself (default_permissions).
      const fh = this.fileHandles.add(nodeid, ctx, flags);
      this.counters.opensAnswered++;
      return keepCache ? { fh, keepCache } : { fh };
    }
    const epoch = this.xattrEpoch;
    const r = await this.inner.open(ctx, nodeid, flags);
    // Kept only if no push about any node crossed the open (dropXattrs bumps the epoch).
    if (plain && !r.directIo && !r.nonSeekable && epoch === this.xattrEpoch) {
      if (this.plainOpens.size >= MAX_PLAIN_OPENS) this.plainOpens.clear();
      this.plainOpens.set(nodeid, r.keepCache === true);
    }
    return r;
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    const epoch = this.xattrEpoch;
    const r = await this.changing(parent, this.inner.create(ctx, parent, name, mode, flags));
    this.add(parent, name, made(r.entry));
    // A new file has no capability: the kernel's probe before its first write (file_remove_privs)
    // is answered from the cache like any other absent xattr.
    this.remember(r.entry.nodeid, CAPS, NO_DATA, epoch);
    // Made behind: the kernel dropped the directory's attributes and asks at its next path walk
    // through it; the ones we keep (if any) get this change's times.
    const kept = r.named && this.dirAttrs.get(parent);
    if (kept && Date.now() - kept.at < ATTR_TTL_MS) this.changedBehind(ctx, parent, kept.attr, 0, r.named!);
    return r;
  }
  // Every file call below passes the server's own handles straight through (read and write are
  // the hot path); only a lazy handle costs a lookup, and its opening on the server at first use.
  read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    if (fh < LAZY_FH_BASE) return this.inner.read(ctx, nodeid, fh, offset, size);
    return this.fileHandles.real(fh, nodeid).then((real) => this.inner.read(ctx, nodeid, real, offset, size));
  }
  write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    this.touched(nodeid);
    // Lazy handles are read-only: the kernel sends no write through one.
    return this.inner.write(ctx, nodeid, fh, offset, data);
  }
  flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    if (fh < LAZY_FH_BASE) return this.inner.flush(ctx, nodeid, fh);
    // One the server never opened has nothing to flush (locks are not forwarded).
    return this.fileHandles.opened(fh).then((real) => (real === undefined ? undefined : this.inner.flush(ctx, nodeid, real)));
  }
  fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    if (fh < LAZY_FH_BASE) return this.inner.fsync(ctx, nodeid, fh, datasync);
    return this.fileHandles.real(fh, nodeid).then((real) => this.inner.fsync(ctx, nodeid, real, datasync));
  }
  release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    if (fh < LAZY_FH_BASE) return this.inner.release(ctx, nodeid, fh);
    return this.fileHandles.take(fh, nodeid).then((real) => (real === undefined ? undefined : this.inner.release(ctx, nodeid, real)));
  }
  // --- lazy directory handles -------------------------------------------------------------------

  async opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    // The kernel has checked the permission itself (default_permissions) and nodeid is a directory.
    return { fh: this.dirHandles.add(nodeid, ctx, 0) };
  }
  async readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    const lazy = this.dirHandles.get(fh, nodeid);
    const mine = lazy && this.fromMade(ctx, lazy, nodeid, offset, maxEntries, plus);
    if (mine) return mine;
    const kept = lazy ? this.fromListing(nodeid, offset, maxEntries, plus) : undefined;
    if (kept) return kept;
    const epoch = this.attrEpoch;
    const listEpoch = this.listEpoch;
    let list: DirEntry[] | undefined;
    if (lazy && !lazy.real && this.behind) {
      // Not opened on the server yet: open and read in one round trip; a listing that ends there
      // leaves no handle to go on with, and the kernel's closing read is answered here.
      if (offset !== 0 && offset === lazy.ended) return markEnded([]);
      if (offset === 0) {
        const got = await this.behind.listdir(ctx, nodeid, maxEntries, plus);
        if (got) {
          if (got.fh !== undefined) lazy.real = Promise.resolve(got.fh);
          else lazy.ended = got.list.length ? got.list[got.list.length - 1]!.off : undefined;
          list = got.list;
        }
      }
    }
    list ??= await this.inner.readdir(ctx, nodeid, await this.dirHandles.real(fh, nodeid), offset, maxEntries, plus);
    if (!this.bigCookies && list.some((e) => e.off > MADE_COOKIES)) {
      this.bigCookies = true;
      this.log?.warn(`node ${nodeid}: the server's directory cookies reach 2^52; listings are no longer made here`);
    }
    if (plus) for (const d of list) if (d.entry) this.named(nodeid, d.name, d.entry, epoch);
    this.noteListing(nodeid, offset, list, listEpoch);
    return list;
  }

  /**
   * Entries of `dir` from `offset` on, from the listing made here of its complete name list (9):
   * undefined when the read is not ours to answer. A read that goes on with a listing made here
   * goes on with the handle's (POSIX leaves it open whether names made or removed since opendir
   * show), or with the name list's own if the kernel's cache of one is what it goes on from.
   */
  private fromMade(ctx: Ctx, h: LazyHandle, dir: number, offset: number, maxEntries: number, plus: boolean): DirEntry[] | undefined {
    if (offset !== 0 && (offset <= MADE_COOKIES || (this.bigCookies && !h.made))) return undefined;
    let all = offset === 0 ? undefined : h.made;
    if (!all) {
      all = this.madeListing(dir, offset === 0 && plus);
      if (!all) {
        h.made = undefined;
        if (offset === 0) return undefined;
        // A cookie of ours, and the names it counted in are gone (a push about the directory).
        throw new FsError(Errno.ESTALE, `node ${dir}: the directory changed under a listing; list it again`);
      }
    }
    if (offset === 0) this.behind?.listedHere?.(ctx, dir);
    h.made = all;
    const from = offset === 0 ? 0 : all.findIndex((e) => e.off > offset);
    if (from < 0) return markEnded([]);
    const out = all.slice(from, from + Math.max(1, maxEntries));
    this.counters.listingsAnswered++;
    return from + out.length >= all.length ? markEnded(out) : out;
  }

  /**
   * The listing of a directory we know every name of (1), its dot names first: undefined when we
   * do not know each one's inode number, or (`held`) the kernel would have to look up names it does
   * not hold: a READDIRPLUS answered here carries no attributes (node id 0).
   */
  private madeListing(dir: number, held: boolean): DirEntry[] | undefined {
    const list = this.exactNames && !this.bigCookies ? this.known.get(dir) : undefined;
    if (!list || list.names.size > MAX_LISTED || list.parent === undefined) return undefined;
    const up = this.known.get(list.parent)?.ino ?? this.dirAttrs.get(list.parent)?.attr.ino;
    if (up === undefined) return undefined;
    const out: DirEntry[] = [
      { name: '.', ino: list.ino, type: S_IFDIR, off: MADE_COOKIES + 1 },
      { name: '..', ino: up, type: S_IFDIR, off: MADE_COOKIES + 2 },
    ];
    for (const [name, k] of list.names) {
      if (k.ino === undefined || (held && this.behind?.heldNode(dir, name) === undefined)) return undefined;
      out.push({ name, ino: k.ino, type: k.type, off: k.off });
    }
    return out;
  }

  /** Directory `id` (if we made it) now lives in `parent`. */
  private reparent(id: number, parent: number): void {
    const list = this.known.get(id);
    if (list) list.parent = parent;
  }

  /** Entries of `dir` from `offset` on, from its whole listing (7); undefined when we cannot. */
  private fromListing(dir: number, offset: number, maxEntries: number, plus: boolean): DirEntry[] | undefined {
    const all = this.listing(dir);
    if (!all) return undefined;
    const from = offset === 0 ? 0 : all.findIndex((e) => e.off === offset) + 1;
    if (from === 0 && offset !== 0) return undefined;
    const out = all.slice(from, from + Math.max(1, maxEntries));
    // Without attributes the kernel would look up each name it does not hold: one round trip each.
    if (plus && !out.every((e) => e.name === '.' || e.name === '..' || this.behind?.heldNode(dir, e.name) !== undefined)) return undefined;
    this.counters.listingsAnswered++;
    return from + out.length >= all.length ? markEnded(out) : out;
  }

  /** Adds a reply from the server to the listing of `dir` being read, and keeps it once whole. */
  private noteListing(dir: number, offset: number, list: DirEntry[], epoch: number): void {
    const r = offset === 0 ? { entries: [] as DirEntry[], epoch } : this.reading.get(dir);
    const last = r?.entries[r.entries.length - 1];
    if (!r || r.epoch !== this.listEpoch || (offset !== 0 && last?.off !== offset) || r.entries.length + list.length > MAX_LISTED) {
      this.reading.delete(dir);
      return;
    }
    for (const e of list) r.entries.push({ name: e.name, ino: e.ino, type: e.type, off: e.off });
    if (list.length > 0 && !isEnded(list)) {
      if (offset === 0) {
        if (this.reading.size >= MAX_DIRS) this.reading.delete(this.reading.keys().next().value!);
        this.reading.set(dir, r);
      }
      return;
    }
    this.reading.delete(dir);
    if (this.listings.size >= MAX_DIRS) {
      const oldest = this.listings.keys().next().value!;
      this.listings.delete(oldest);
      this.listingGone.delete(oldest);
    }
    this.listings.set(dir, r.entries);
    this.listingGone.delete(dir);
  }
  async fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.inner.fsyncdir(ctx, nodeid, await this.dirHandles.real(fh, nodeid), datasync);
  }
  async releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    const real = await this.dirHandles.take(fh, nodeid);
    if (real !== undefined) await this.inner.releasedir(ctx, nodeid, real);
  }

  // --- extended attributes -----------------------------------------------------------------------

  /** A push or a forget: what we kept of the node's xattrs, and how it opens, may be old. */
  private dropXattrs(nodeid: number): void {
    this.xattrEpoch++;
    this.xattrs.delete(nodeid);
    this.noCaps.delete(nodeid);
    this.plainOpens.delete(nodeid);
  }

  private remember(nodeid: number, key: string, answer: XattrAnswer | string[], epoch: number): void {
    if (epoch !== this.xattrEpoch) return;
    if (this.xattrCount >= MAX_XATTRS) {
      this.xattrs.clear();
      this.noCaps.clear();
      this.xattrCount = 0;
    }
    if (key === CAPS && answer instanceof FsError && answer.errno === Errno.ENODATA) {
      // The one answer nearly every written file has: a set entry, not a map and an error per node.
      this.noCaps.add(nodeid);
      this.xattrCount++;
      return;
    }
    let m = this.xattrs.get(nodeid);
    if (!m) this.xattrs.set(nodeid, (m = new Map()));
    m.set(key, answer);
    this.xattrCount++;
  }
  statfs(ctx: Ctx, nodeid: number): Promise<StatFs> {
    return this.inner.statfs(ctx, nodeid);
  }
  async setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    this.dropXattrs(nodeid);
    this.touched(nodeid);
    await this.inner.setxattr(ctx, nodeid, name, value, flags);
  }
  async getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    // Names are never '' (the kernel refuses an empty name), so '' can key the list.
    if (name === CAPS && this.noCaps.has(nodeid)) throw new FsError(Errno.ENODATA);
    const got = this.xattrs.get(nodeid)?.get(name);
    if (got instanceof FsError) throw new FsError(got.errno);
    if (Buffer.isBuffer(got)) return Buffer.from(got);
    const epoch = this.xattrEpoch;
    try {
      const value = await this.inner.getxattr(ctx, nodeid, name);
      this.remember(nodeid, name, Buffer.from(value), epoch);
      return value;
    } catch (err) {
      // Absent, or not supported there: answers that hold until the node changes.
      if (err instanceof FsError && (err.errno === Errno.ENODATA || err.errno === Errno.EOPNOTSUPP)) this.remember(nodeid, name, err, epoch);
      throw err;
    }
  }
  async listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    const got = this.xattrs.get(nodeid)?.get('');
    if (Array.isArray(got)) return [...got];
    const epoch = this.xattrEpoch;
    const names = await this.inner.listxattr(ctx, nodeid);
    this.remember(nodeid, '', [...names], epoch);
    return names;
  }
  async removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    this.dropXattrs(nodeid);
    this.touched(nodeid);
    await this.inner.removexattr(ctx, nodeid, name);
  }
  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    return this.inner.access(ctx, nodeid, mask);
  }
  fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    this.touched(nodeid);
    // fallocate needs a writable handle: never a lazy one.
    return this.inner.fallocate(ctx, nodeid, fh, mode, offset, length);
  }
  async lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.inner.lseek(ctx, nodeid, fh < LAZY_FH_BASE ? fh : await this.fileHandles.real(fh, nodeid), offset, whence);
  }
  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    this.touched(nodeOut);
    // The source may be a lazy handle; the destination is writable, so never one.
    const real = fhIn < LAZY_FH_BASE ? fhIn : await this.fileHandles.real(fhIn, nodeIn);
    return this.inner.copyFileRange(ctx, nodeIn, real, offIn, nodeOut, fhOut, offOut, len);
  }
  watch(listener: ChangeListener): () => void {
    const unwatchInner = this.inner.watch(listener);
    const unwatch = this.notes.add(listener);
    return () => {
      unwatchInner();
      unwatch();
    };
  }
  async close(): Promise<void> {
    for (const t of this.correcting.values()) clearTimeout(t);
    this.correcting.clear();
    this.unwatch();
    this.unhint();
    await this.inner.close();
  }
}

