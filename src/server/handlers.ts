// The server's dispatch table: one handler per Vfs op of the wire table, each calling the source Vfs,
// recording in the session what the client now holds (lookups, open handles), and reporting the
// changes other clients must hear of. Exhaustive by type: adding a call op to ops.ts without a
// handler here does not compile.

import { Errno, FsError } from '../lib/errno.js';
import { O_APPEND, isEnded, type Attr, type ChangeEvent, type CreateResult, type Ctx, type DirEntry, type Entry, type Vfs, writeData } from '../vfs/types.js';
import { ENTRY_SIZE } from '../wire/codec.js';
import { HEADER_SIZE, READ_OVERHEAD } from '../wire/frame.js';
import type { Rep, Req, VfsOpName } from '../wire/ops.js';

/** What a handler may ask of the session it runs in. */
export interface SessionApi {
  readonly vfs: Vfs;
  readonly maxFrame: number;
  /** Records one lookup of e.nodeid handed to this client (nothing for a negative entry). */
  gotEntry(e: Entry): void;
  gotHandle(fh: number, h: { nodeid: number; dir: boolean; append: boolean }): void;
  /** Throws EBADF unless this session opened fh (with opendir when `dir`, else with open/create). */
  handle(fh: number, dir: boolean): { nodeid: number; dir: boolean; append: boolean };
  dropHandle(fh: number, dir: boolean): void;
  /**
   * Pushes these changes to the other sessions that know the nodes; resolves once they have acted
   * on them (or the lease time passed), so the reply to the change's author comes after that.
   */
  changed(events: ChangeEvent[]): Promise<void>;
  /** Whether any other session could care about a change (skips work for a lone client). */
  othersListening(): boolean;
  /** WRITEs of the node from this session running now (the caller's own included). */
  writesRunning(nodeid: number): number;
  /** LEASE_DIR: the directory's attributes when it is now this session's alone, else undefined (Session.leaseDir). */
  leaseDir(ctx: Ctx, nodeid: number): Promise<Attr | undefined>;
  /** Before handing node `nodeid` out: recalls it from a session that holds it alone; true if it did. */
  claim(nodeid: number): Promise<boolean>;
  /** Whether this session holds directory `nodeid` under LEASE_DIR. */
  holdsLease(nodeid: number): boolean;
  /** Files reserved (RESERVE) and not yet named, node id -> fh: the server's fds a client holds ahead. */
  readonly unnamed: Map<number, number>;
  /** Whether another session holds directory `nodeid` under LEASE_DIR (a claim would recall it). */
  leasedElsewhere(nodeid: number): boolean;
}

/**
 * Up to `count` unnamed files in `parent` (RESERVE, and NAME_RESERVED's `more`), each counted as a
 * lookup and an open handle of the session. A failure after the first ends the list; the first's
 * is thrown when `strict` (RESERVE), else it gives an empty list.
 */
async function reserveFiles(s: SessionApi, ctx: Ctx, parent: number, count: number, strict: boolean): Promise<Rep<'reserve'>['files']> {
  const files: Rep<'reserve'>['files'] = [];
  // A client may hold RESERVE_HELD_MAX at once: beyond, it gets none and creates as usual.
  const n = Math.min(count, RESERVE_MAX, RESERVE_HELD_MAX - s.unnamed.size);
  for (let i = 0; i < n; i++) {
    let r: CreateResult;
    try {
      r = await s.vfs.reserveFile!(ctx, parent);
    } catch (err) {
      if (files.length === 0 && strict) throw err;
      break;
    }
    const { entry, ...open } = r;
    s.gotEntry(entry);
    s.gotHandle(open.fh, { nodeid: entry.nodeid, dir: false, append: false });
    s.unnamed.set(entry.nodeid, open.fh);
    files.push({ entry, open });
  }
  return files;
}

/** Files one RESERVE makes at most, and unnamed ones a session may hold at once. */
export const RESERVE_MAX = 64;
export const RESERVE_HELD_MAX = 128;

type CallOp = Exclude<VfsOpName, 'forget'>;
type Handler<N extends CallOp> = (s: SessionApi, ctx: Ctx, a: Req<N>) => Promise<Rep<N>>;

const whole = (nodeid: number): ChangeEvent => ({ kind: 'inode', nodeid, off: -1, len: 0 });
const named = (parent: number, name: string): ChangeEvent => ({ kind: 'entry', parent, name });

/**
 * A node's attributes after a change (like NFS's post-op attributes): a directory's after its names
 * changed, a file's after a write. The client's kernel drops them at each such change and would ask
 * at once. A failure here only costs the client that question.
 */
async function postAttr(s: SessionApi, ctx: Ctx, node: number, fh?: number): Promise<Attr | undefined> {
  try {
    return await s.vfs.getattr(ctx, node, fh);
  } catch {
    return undefined;
  }
}

/** A new name in a directory: the name appeared and the directory's size/mtime/nlink changed. */
async function created(s: SessionApi, ctx: Ctx, parent: number, name: string, e: Entry): Promise<{ entry: Entry; parentAttr: Attr | undefined }> {
  s.gotEntry(e);
  await s.changed([named(parent, name), whole(parent)]);
  return { entry: e, parentAttr: await postAttr(s, ctx, parent) };
}

/** unlink and rmdir: learns the victim's id first when someone else may hold it, for a precise push. */
async function remove(s: SessionApi, ctx: Ctx, parent: number, name: string, op: (ctx: Ctx, p: number, n: string) => Promise<void>): Promise<Rep<'unlink'>> {
  let child = 0;
  if (s.othersListening()) {
    child = await s.vfs.lookup(ctx, parent, name).then((e) => e.nodeid, () => 0);
  }
  try {
    await op(ctx, parent, name);
    await s.changed(child
      ? [{ kind: 'delete', parent, child, name }, whole(parent), whole(child)]
      : [named(parent, name), whole(parent)]);
  } finally {
    if (child) s.vfs.forget(child, 1);
  }
  // A client holding the directory under a lease answers its attributes itself (it had them
  // with the lease) until its unlinks and rmdirs (1.5) have landed: one stat less per removal.
  return { parentAttr: s.holdsLease(parent) ? undefined : await postAttr(s, ctx, parent) };
}

/**
 * An entry about to be handed out that names a directory another session holds alone (the caller
 * checked leasedElsewhere): recalled first (that client sends the unlinks it answered early), and
 * its attributes read again after.
 */
async function fresh(s: SessionApi, ctx: Ctx, e: Entry): Promise<void> {
  if (await s.claim(e.nodeid)) e.attr = await s.vfs.getattr(ctx, e.nodeid);
}

// Bytes of one DirEntry on the wire, to keep a readdir reply under the max frame.
function direntSize(d: DirEntry): number {
  return 25 + Buffer.byteLength(d.name) + (d.entry ? ENTRY_SIZE : 0);
}

export const HANDLERS: { [N in CallOp]: Handler<N> } = {
  lookup: async (s, ctx, a) => {
    const entry = await s.vfs.lookup(ctx, a.parent, a.name);
    if (entry.nodeid && s.leasedElsewhere(entry.nodeid)) await fresh(s, ctx, entry);
    s.gotEntry(entry);
    return { entry };
  },
  getattr: async (s, ctx, a) => {
    if (a.fh !== undefined) s.handle(a.fh, false);
    return { attr: await s.vfs.getattr(ctx, a.nodeid, a.fh) };
  },
  setattr: async (s, ctx, a) => {
    if (a.fh !== undefined) s.handle(a.fh, false);
    const attr = await s.vfs.setattr(ctx, a.nodeid, a.set, a.fh);
    await s.changed([whole(a.nodeid)]);
    return { attr };
  },
  readlink: async (s, ctx, a) => ({ target: await s.vfs.readlink(ctx, a.nodeid) }),
  mknod: async (s, ctx, a) => created(s, ctx, a.parent, a.name, await s.vfs.mknod(ctx, a.parent, a.name, a.mode, a.rdev)),
  mkdir: async (s, ctx, a) => created(s, ctx, a.parent, a.name, await s.vfs.mkdir(ctx, a.parent, a.name, a.mode)),
  symlink: async (s, ctx, a) => created(s, ctx, a.parent, a.name, await s.vfs.symlink(ctx, a.parent, a.name, a.target)),
  link: async (s, ctx, a) => {
    const rep = await created(s, ctx, a.newparent, a.newname, await s.vfs.link(ctx, a.nodeid, a.newparent, a.newname));
    await s.changed([whole(a.nodeid)]);
    return rep;
  },
  unlink: (s, ctx, a) => remove(s, ctx, a.parent, a.name, (c, p, n) => s.vfs.unlink(c, p, n)),
  rmdir: (s, ctx, a) => remove(s, ctx, a.parent, a.name, (c, p, n) => s.vfs.rmdir(c, p, n)),
  rename: async (s, ctx, a) => {
    await s.vfs.rename(ctx, a.parent, a.name, a.newparent, a.newname, a.flags);
    const ev = [named(a.parent, a.name), named(a.newparent, a.newname), whole(a.parent)];
    if (a.newparent !== a.parent) ev.push(whole(a.newparent));
    await s.changed(ev);
    return { parentAttr: await postAttr(s, ctx, a.parent), newParentAttr: a.newparent === a.parent ? undefined : await postAttr(s, ctx, a.newparent) };
  },
  open: async (s, ctx, a) => {
    const open = await s.vfs.open(ctx, a.nodeid, a.flags);
    s.gotHandle(open.fh, { nodeid: a.nodeid, dir: false, append: (a.flags & O_APPEND) !== 0 });
    return { open };
  },
  create: async (s, ctx, a) => {
    const { entry, ...open } = await s.vfs.create(ctx, a.parent, a.name, a.mode, a.flags);
    s.gotHandle(open.fh, { nodeid: entry.nodeid, dir: false, append: (a.flags & O_APPEND) !== 0 });
    const { parentAttr } = await created(s, ctx, a.parent, a.name, entry);
    return { entry, open, parentAttr };
  },
  reserve: async (s, ctx, a) => {
    if (!s.vfs.reserveFile) throw new FsError(Errno.EOPNOTSUPP);
    return { files: await reserveFiles(s, ctx, a.parent, a.count, true) };
  },
  nameReserved: async (s, ctx, a) => {
    if (!s.vfs.nameReserved) throw new FsError(Errno.EOPNOTSUPP);
    if (s.handle(a.fh, false).nodeid !== a.nodeid) throw new FsError(Errno.EBADF);
    const attr = await s.vfs.nameReserved(ctx, a.parent, a.name, a.nodeid, a.fh, a.mode);
    s.unnamed.delete(a.nodeid);
    await s.changed([named(a.parent, a.name), whole(a.parent)]);
    const files = a.more > 0 ? await reserveFiles(s, ctx, a.parent, a.more, false) : [];
    // Like an unlink there: a client holding the directory under a lease answers its attributes itself.
    return { attr, files, parentAttr: s.holdsLease(a.parent) ? undefined : await postAttr(s, ctx, a.parent) };
  },
  read: async (s, ctx, a) => {
    s.handle(a.fh, false);
    if (a.size > s.maxFrame - READ_OVERHEAD) throw new FsError(Errno.EINVAL, `read of ${a.size} bytes is over the frame limit`);
    return { data: await s.vfs.read(ctx, a.nodeid, a.fh, a.offset, a.size) };
  },
  write: async (s, ctx, a) => {
    s.handle(a.fh, false);
    // A big WRITE comes as the pieces it arrived in (session.ts): written as they are where the
    // source can (writev), joined where it cannot.
    const count = await writeData(s.vfs, ctx, a.nodeid, a.fh, a.offset, a.data as Buffer | Buffer[]);
    // The whole file, not the range: one push then makes the other clients' kernels drop the file,
    // and later writes need none until they read it again (see Session.dropped).
    await s.changed([whole(a.nodeid)]);
    // The file's attributes after it (1.2), when no other write of ours to it ran beside it: then
    // they follow every write the client sent before, and its `stat` after close needs no question.
    return { count, attr: s.writesRunning(a.nodeid) === 1 ? await postAttr(s, ctx, a.nodeid, a.fh) : undefined };
  },
  flush: async (s, ctx, a) => {
    s.handle(a.fh, false);
    await s.vfs.flush(ctx, a.nodeid, a.fh);
    return {};
  },
  fsync: async (s, ctx, a) => {
    s.handle(a.fh, false);
    await s.vfs.fsync(ctx, a.nodeid, a.fh, a.datasync);
    return {};
  },
  release: async (s, ctx, a) => {
    s.handle(a.fh, false);
    s.dropHandle(a.fh, false);
    await s.vfs.release(ctx, a.nodeid, a.fh);
    return {};
  },
  opendir: async (s, ctx, a) => {
    const open = await s.vfs.opendir(ctx, a.nodeid);
    s.gotHandle(open.fh, { nodeid: a.nodeid, dir: true, append: false });
    return { open };
  },
  readdir: async (s, ctx, a) => {
    s.handle(a.fh, true);
    const all = await s.vfs.readdir(ctx, a.nodeid, a.fh, a.offset, a.maxEntries, a.plus);
    // Keep the reply under the frame limit; the client continues from the last cookie it got.
    let room = s.maxFrame - HEADER_SIZE - 8;
    let keep = 0;
    while (keep < all.length && (room -= direntSize(all[keep]!)) >= 0) keep++;
    const entries = all.slice(0, keep);
    for (const d of entries) if (d.entry?.nodeid && s.leasedElsewhere(d.entry.nodeid)) await fresh(s, ctx, d.entry);
    for (const d of entries) if (d.entry) s.gotEntry(d.entry);
    for (const d of all.slice(keep)) if (d.entry && d.entry.nodeid) s.vfs.forget(d.entry.nodeid, 1);
    return { entries, eof: keep === all.length && isEnded(all) };
  },
  fsyncdir: async (s, ctx, a) => {
    s.handle(a.fh, true);
    await s.vfs.fsyncdir(ctx, a.nodeid, a.fh, a.datasync);
    return {};
  },
  releasedir: async (s, ctx, a) => {
    s.handle(a.fh, true);
    s.dropHandle(a.fh, true);
    await s.vfs.releasedir(ctx, a.nodeid, a.fh);
    return {};
  },
  statfs: async (s, ctx, a) => ({ statfs: await s.vfs.statfs(ctx, a.nodeid) }),
  setxattr: async (s, ctx, a) => {
    await s.vfs.setxattr(ctx, a.nodeid, a.name, a.value, a.flags);
    await s.changed([whole(a.nodeid)]);
    return {};
  },
  getxattr: async (s, ctx, a) => ({ value: await s.vfs.getxattr(ctx, a.nodeid, a.name) }),
  listxattr: async (s, ctx, a) => ({ names: await s.vfs.listxattr(ctx, a.nodeid) }),
  removexattr: async (s, ctx, a) => {
    await s.vfs.removexattr(ctx, a.nodeid, a.name);
    await s.changed([whole(a.nodeid)]);
    return {};
  },
  access: async (s, ctx, a) => {
    await s.vfs.access(ctx, a.nodeid, a.mask);
    return {};
  },
  fallocate: async (s, ctx, a) => {
    s.handle(a.fh, false);
    await s.vfs.fallocate(ctx, a.nodeid, a.fh, a.mode, a.offset, a.length);
    await s.changed([whole(a.nodeid)]);
    return {};
  },
  lseek: async (s, ctx, a) => {
    s.handle(a.fh, false);
    return { offset: await s.vfs.lseek(ctx, a.nodeid, a.fh, a.offset, a.whence) };
  },
  listdir: async (s, ctx, a) => {
    const { fh } = await HANDLERS.opendir(s, ctx, { ctx, nodeid: a.nodeid }).then((r) => r.open);
    let rep: Rep<'readdir'>;
    try {
      rep = await HANDLERS.readdir(s, ctx, { ctx, nodeid: a.nodeid, fh, offset: 0, maxEntries: a.maxEntries, plus: a.plus });
    } catch (err) {
      await HANDLERS.releasedir(s, ctx, { ctx, nodeid: a.nodeid, fh }).catch(() => {});
      throw err;
    }
    if (!rep.eof) return { fh, kept: true, ...rep };
    await HANDLERS.releasedir(s, ctx, { ctx, nodeid: a.nodeid, fh });
    return { fh: 0, kept: false, ...rep };
  },
  leaseDir: async (s, ctx, a) => {
    const attr = await s.leaseDir(ctx, a.nodeid);
    return { granted: attr !== undefined, attr };
  },
  copyFileRange: async (s, ctx, a) => {
    s.handle(a.fhIn, false);
    s.handle(a.fhOut, false);
    const count = await s.vfs.copyFileRange(ctx, a.nodeIn, a.fhIn, a.offIn, a.nodeOut, a.fhOut, a.offOut, a.len);
    await s.changed([whole(a.nodeOut)]);
    return { count };
  },
};
