// Export rules: who may connect (an allow-list of client addresses), as whom their requests run
// (root squash, all squash, explicit uid/gid maps), and what they may do (read-only, and the
// permission checks a server running as root must make itself). Applied in one place: the server
// wraps its source in guardVfs() and every session talks to that.
//
// Why the server checks permissions: clients mount with default_permissions, so an honest client's
// kernel already refuses what its user may not do. But a client is a user-space program that can
// claim any identity, and a squashed root was checked by its own kernel as root; the source runs as
// root on the server and would do anything asked. So for every request whose (mapped) identity is
// not root, the guard repeats the kernel's checks (fs/namei.c may_lookup/may_create/may_delete,
// fs/attr.c setattr_prepare, fs/xattr.c xattr_permission) against the source's attributes, with
// the caller's uid and primary gid (the wire carries no supplementary groups).

import net from 'node:net';
import { Errno, FsError } from '../lib/errno.js';
import { ACL_ACCESS, aclPermits } from './acl.js';
import {
  O_ACCMODE, O_RDONLY, O_TRUNC, O_WRONLY, RENAME_EXCHANGE, S_IFBLK, S_IFCHR, S_IFDIR, S_IFMT, S_IFREG,
  type Attr, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Vfs, writeData,
} from '../vfs/types.js';

export interface IdMap {
  /** Every identity becomes the anonymous one (untrusted clients). */
  allSquash: boolean;
  /** uid 0 becomes anonUid and gid 0 anonGid (the CLI's default; off with --no-root-squash). */
  rootSquash: boolean;
  anonUid: number;
  anonGid: number;
  /** Explicit client id -> server id maps; they come before root squash. */
  uids: Map<number, number>;
  gids: Map<number, number>;
}

export interface ExportRules {
  readOnly: boolean;
  idmap: IdMap;
  /** Client addresses allowed to connect; undefined = any. */
  allow: AllowList | undefined;
}

/** nobody/nogroup on Debian. */
export const ANON_ID = 65534;

export function defaultIdMap(): IdMap {
  return { allSquash: false, rootSquash: true, anonUid: ANON_ID, anonGid: ANON_ID, uids: new Map(), gids: new Map() };
}

/** The identity a request runs as on the server. */
export function mapIds(m: IdMap, uid: number, gid: number): { uid: number; gid: number } {
  if (m.allSquash) return { uid: m.anonUid, gid: m.anonGid };
  let u = m.uids.get(uid);
  if (u === undefined) u = m.rootSquash && uid === 0 ? m.anonUid : uid;
  let g = m.gids.get(gid);
  if (g === undefined) g = m.rootSquash && gid === 0 ? m.anonGid : gid;
  return { uid: u, gid: g };
}

const MAX_ID = 0xfffffffe; // (uid_t)-1 means "no change" in chown: never a real id

export function parseId(s: string, what: string): number {
  if (!/^\d+$/.test(s) || Number(s) > MAX_ID) throw new Error(`bad ${what} "${s}"`);
  return Number(s);
}

/** Parses "1000:2000,1001:2001" (client id : server id) into map, throwing one line on bad input. */
export function parseIdMap(text: string, into: Map<number, number>, what: 'uid' | 'gid'): void {
  for (const part of text.split(',')) {
    if (!part.trim()) continue;
    const m = /^\s*(\d+)\s*:\s*(\d+)\s*$/.exec(part);
    if (!m) throw new Error(`bad --map-${what} "${part}" (expected CLIENT:SERVER, e.g. 1000:2000)`);
    into.set(parseId(m[1]!, what), parseId(m[2]!, what));
  }
}

// --- the allow-list ----------------------------------------------------------------------------

export interface AllowList {
  /** Whether a client at this address may connect. */
  allows(address: string): boolean;
  /** The list as given, for messages. */
  readonly text: string;
}

/** An IPv4-mapped IPv6 address (::ffff:1.2.3.4, as a dual-stack listener reports) as plain IPv4. */
export function plainAddress(address: string): string {
  const m = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  return m ? m[1]! : address;
}

/** Parses "10.0.0.0/8,127.0.0.1,fd00::/8": addresses and CIDR subnets, IPv4 or IPv6. */
export function parseAllowList(text: string): AllowList {
  const list = new net.BlockList();
  let n = 0;
  for (const raw of text.split(',')) {
    const item = raw.trim();
    if (!item) continue;
    const [addr, prefix, extra] = item.split('/');
    const family = net.isIP(addr ?? '');
    if (!addr || family === 0 || extra !== undefined) throw new Error(`bad --allow entry "${item}" (expected an address or ADDRESS/PREFIX)`);
    const type = family === 4 ? 'ipv4' : 'ipv6';
    if (prefix === undefined) list.addAddress(addr, type);
    else {
      const bits = Number(prefix);
      if (!/^\d+$/.test(prefix) || bits > (family === 4 ? 32 : 128)) throw new Error(`bad prefix length in --allow entry "${item}"`);
      list.addSubnet(addr, bits, type);
    }
    n++;
  }
  if (n === 0) throw new Error('--allow needs at least one address');
  return {
    text,
    allows(address: string): boolean {
      const a = plainAddress(address);
      const family = net.isIP(a);
      if (family === 0) return false;
      return list.check(a, family === 4 ? 'ipv4' : 'ipv6');
    },
  };
}

/** Whether a bind address only reaches this host (127.0.0.0/8, ::1, localhost). */
export function isLoopback(host: string): boolean {
  const a = plainAddress(host);
  return a === 'localhost' || a === '::1' || /^127\.\d+\.\d+\.\d+$/.test(a);
}

// --- node ids as capabilities ------------------------------------------------------------------

/** Request fields that name a node. */
const NODE_FIELDS = ['nodeid', 'parent', 'newparent', 'nodeIn', 'nodeOut'] as const;

/**
 * The first node a request names that its session was never handed (by lookup, create, readdirplus,
 * link...), or undefined. Node ids are small numbers shared by all clients: without this check a
 * client could guess the id of a file another client reached and skip the directory permissions
 * on the way to it.
 */
export function strangerNode(args: object, held: (nodeid: number) => boolean): number | undefined {
  for (const f of NODE_FIELDS) {
    const v = (args as Record<string, unknown>)[f];
    if (typeof v === 'number' && !held(v)) return v;
  }
  return undefined;
}

// --- permission checks -------------------------------------------------------------------------

const R = 4;
const W = 2;
const X = 1;
const S_ISVTX = 0o1000;
const S_ISGID = 0o2000;

/** The kernel's generic_permission() for uid/primary gid; root is handled by the caller. */
function permits(a: Attr, ctx: Ctx, mask: number): boolean {
  const bits = ctx.uid === a.uid ? (a.mode >> 6) & 7 : ctx.gid === a.gid ? (a.mode >> 3) & 7 : a.mode & 7;
  return (bits & mask) === mask;
}

/**
 * Security labels (security.* but file capabilities) are the exporting host's LSM policy: a
 * client's kernel labels a FUSE mount itself, and a client that could write them would steer the
 * server host's policy. They are not exported (as NFS exports none): EOPNOTSUPP, and left out of
 * listings, so tools such as ls stop asking for them after the first answer.
 */
function isLsmLabel(name: string): boolean {
  return name.startsWith('security.') && name !== 'security.capability';
}

/** What lets an open file be read: remembered at open, since the source may widen write-only fds. */
interface GuardHandle {
  readable: boolean;
}

/** Identity used for the guard's own attribute reads. */
const GUARD_CTX: Ctx = { uid: 0, gid: 0, pid: 0 };

/**
 * The source as clients see it under these rules. Each call maps the caller's identity, refuses
 * changes on a read-only export with EROFS, and checks permissions for a non-root identity before
 * passing the call on.
 */
export function guardVfs(inner: Vfs, rules: ExportRules): Vfs {
  return new GuardedVfs(inner, rules);
}

class GuardedVfs implements Vfs {
  private readonly handles = new Map<number, GuardHandle>();

  constructor(private readonly inner: Vfs, private readonly rules: ExportRules) {}

  private as(ctx: Ctx): Ctx {
    const { uid, gid } = mapIds(this.rules.idmap, ctx.uid, ctx.gid);
    return uid === ctx.uid && gid === ctx.gid ? ctx : { ...ctx, uid, gid };
  }

  private writable(): void {
    if (this.rules.readOnly) throw new FsError(Errno.EROFS);
  }

  private attr(nodeid: number): Promise<Attr> {
    return this.inner.getattr(GUARD_CTX, nodeid);
  }

  /**
   * generic_permission(): for anyone but the owner, the node's access ACL decides when it has one
   * (and group bits, which then hold the ACL's mask); else the mode bits.
   */
  private async permitted(nodeid: number, a: Attr, c: Ctx, mask: number): Promise<boolean> {
    if (a.uid !== c.uid && (a.mode & 0o070) !== 0) {
      let acl: Buffer | undefined;
      try {
        acl = await this.inner.getxattr(GUARD_CTX, nodeid, ACL_ACCESS);
      } catch (err) {
        if (!(err instanceof FsError && (err.errno === Errno.ENODATA || err.errno === Errno.EOPNOTSUPP))) throw err;
      }
      const byAcl = acl && aclPermits(acl, a, c, mask);
      if (byAcl !== undefined) return byAcl;
    }
    return permits(a, c, mask);
  }

  private async need(nodeid: number, a: Attr, c: Ctx, mask: number): Promise<void> {
    if (!(await this.permitted(nodeid, a, c, mask))) throw new FsError(Errno.EACCES);
  }

  /** The child's attributes, or undefined when there is no such name. */
  private async child(parent: number, name: string): Promise<Attr | undefined> {
    try {
      const e = await this.inner.lookup(GUARD_CTX, parent, name);
      if (e.nodeid) this.inner.forget(e.nodeid, 1);
      return e.attr;
    } catch (err) {
      if (err instanceof FsError && err.errno === Errno.ENOENT) return undefined;
      throw err;
    }
  }

  /** may_create: search and write on the directory. */
  private async mayCreate(ctx: Ctx, parent: number): Promise<void> {
    if (ctx.uid === 0) return;
    const d = await this.attr(parent);
    if ((d.mode & S_IFMT) !== S_IFDIR) throw new FsError(Errno.ENOTDIR);
    await this.need(parent, d, ctx, W | X);
  }

  /** may_delete: search and write on the directory, and the sticky bit's owner rule. */
  private async mayDelete(ctx: Ctx, parent: number, name: string): Promise<void> {
    if (ctx.uid === 0) return;
    const d = await this.attr(parent);
    await this.need(parent, d, ctx, W | X);
    if (d.mode & S_ISVTX) {
      const c = await this.child(parent, name);
      if (c && c.uid !== ctx.uid && d.uid !== ctx.uid) throw new FsError(Errno.EPERM);
    }
  }

  info(): FsInfo {
    const i = this.inner.info();
    return this.rules.readOnly ? { ...i, readOnly: true } : i;
  }

  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    const c = this.as(ctx);
    if (c.uid !== 0) await this.need(parent, await this.attr(parent), c, X);
    return this.inner.lookup(c, parent, name);
  }

  forget(nodeid: number, nlookup: number): void {
    this.inner.forget(nodeid, nlookup);
  }

  getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    return this.inner.getattr(this.as(ctx), nodeid, fh);
  }

  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    this.writable();
    const c = this.as(ctx);
    if (c.uid !== 0) {
      // setattr_prepare() and chown_ok()/chgrp_ok(): only root gives files away; the owner may
      // change the mode and times, and the group to its own.
      const a = await this.attr(nodeid);
      const owner = a.uid === c.uid;
      if (set.uid !== undefined && !(owner && set.uid === a.uid)) throw new FsError(Errno.EPERM);
      if (set.gid !== undefined && !(owner && (set.gid === a.gid || set.gid === c.gid))) throw new FsError(Errno.EPERM);
      if (set.mode !== undefined && !owner) throw new FsError(Errno.EPERM);
      const explicitTime = (set.atime !== undefined && set.atime !== 'now') || (set.mtime !== undefined && set.mtime !== 'now');
      if (explicitTime && !owner) throw new FsError(Errno.EPERM);
      if ((set.atime === 'now' || set.mtime === 'now') && !owner) await this.need(nodeid, a, c, W);
      // truncate through an open fd was checked at open; by name it needs write permission.
      if (set.size !== undefined && fh === undefined) await this.need(nodeid, a, c, W);
      if (set.mode !== undefined && (set.mode & S_ISGID) && a.gid !== c.gid) set = { ...set, mode: set.mode & ~S_ISGID };
    }
    return this.inner.setattr(c, nodeid, set, fh);
  }

  readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return this.inner.readlink(this.as(ctx), nodeid);
  }

  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    this.writable();
    const c = this.as(ctx);
    // Device files need CAP_MKNOD: only root may make them (a squashed root may not).
    const type = mode & S_IFMT;
    if (c.uid !== 0 && (type === S_IFCHR || type === S_IFBLK)) throw new FsError(Errno.EPERM);
    await this.mayCreate(c, parent);
    return this.inner.mknod(c, parent, name, mode, rdev);
  }

  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, parent);
    return this.inner.mkdir(c, parent, name, mode);
  }

  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, parent);
    return this.inner.symlink(c, parent, name, target);
  }

  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, newparent);
    if (c.uid !== 0) {
      // fs.protected_hardlinks: link only to what one owns or may read and write.
      const a = await this.attr(nodeid);
      if (a.uid !== c.uid && ((a.mode & S_IFMT) !== S_IFREG || !(await this.permitted(nodeid, a, c, R | W)))) throw new FsError(Errno.EPERM);
    }
    return this.inner.link(c, nodeid, newparent, newname);
  }

  async unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.writable();
    const c = this.as(ctx);
    await this.mayDelete(c, parent, name);
    return this.inner.unlink(c, parent, name);
  }

  async rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.writable();
    const c = this.as(ctx);
    await this.mayDelete(c, parent, name);
    return this.inner.rmdir(c, parent, name);
  }

  async rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    this.writable();
    const c = this.as(ctx);
    if (c.uid !== 0) {
      await this.mayDelete(c, parent, name);
      // The target name is replaced (deleted) when it exists, or created.
      if ((await this.child(newparent, newname)) || flags & RENAME_EXCHANGE) await this.mayDelete(c, newparent, newname);
      else await this.mayCreate(c, newparent);
      // A directory moving to another parent rewrites its "..": it needs write permission itself.
      if (newparent !== parent) {
        const src = await this.child(parent, name);
        // (Mode bits only: the lookup's reference is given back, so its ACL is not read.)
        if (src && (src.mode & S_IFMT) === S_IFDIR && !permits(src, c, W)) throw new FsError(Errno.EACCES);
      }
    }
    return this.inner.rename(c, parent, name, newparent, newname, flags);
  }

  private openMask(flags: number): number {
    const acc = flags & O_ACCMODE;
    let mask = acc === O_RDONLY ? R : acc === O_WRONLY ? W : R | W;
    if (flags & O_TRUNC) mask |= W;
    return mask;
  }

  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    const c = this.as(ctx);
    if ((flags & O_ACCMODE) !== O_RDONLY || flags & O_TRUNC) this.writable();
    let readable = true;
    if (c.uid !== 0) {
      const a = await this.attr(nodeid);
      await this.need(nodeid, a, c, this.openMask(flags));
      readable = (flags & O_ACCMODE) !== O_WRONLY || (await this.permitted(nodeid, a, c, R));
    }
    const r = await this.inner.open(c, nodeid, flags);
    this.handles.set(r.fh, { readable });
    return r;
  }

  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, parent);
    const r = await this.inner.create(c, parent, name, mode, flags);
    // The creator owns the new file; reading back a write-only handle is as its mode allows.
    this.handles.set(r.fh, { readable: c.uid === 0 || (flags & O_ACCMODE) !== O_WRONLY || (mode & 0o400) !== 0 });
    return r;
  }

  async reserveFile(ctx: Ctx, parent: number): Promise<CreateResult> {
    if (!this.inner.reserveFile) throw new FsError(Errno.EOPNOTSUPP);
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, parent);
    const r = await this.inner.reserveFile(c, parent);
    this.handles.set(r.fh, { readable: true });
    return r;
  }

  async nameReserved(ctx: Ctx, parent: number, name: string, nodeid: number, fh: number, mode: number): Promise<Attr> {
    if (!this.inner.nameReserved) throw new FsError(Errno.EOPNOTSUPP);
    this.writable();
    const c = this.as(ctx);
    await this.mayCreate(c, parent);
    const attr = await this.inner.nameReserved(c, parent, name, nodeid, fh, mode);
    this.handles.set(fh, { readable: c.uid === 0 || (mode & 0o400) !== 0 });
    return attr;
  }

  read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    if (this.handles.get(fh)?.readable === false) return Promise.reject(new FsError(Errno.EBADF));
    return this.inner.read(this.as(ctx), nodeid, fh, offset, size);
  }

  write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    if (this.rules.readOnly) return Promise.reject(new FsError(Errno.EROFS));
    return this.inner.write(this.as(ctx), nodeid, fh, offset, data);
  }

  writev(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer[]): Promise<number> {
    if (this.rules.readOnly) return Promise.reject(new FsError(Errno.EROFS));
    return writeData(this.inner, this.as(ctx), nodeid, fh, offset, data);
  }

  flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.inner.flush(this.as(ctx), nodeid, fh);
  }

  fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.inner.fsync(this.as(ctx), nodeid, fh, datasync);
  }

  release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    this.handles.delete(fh);
    return this.inner.release(this.as(ctx), nodeid, fh);
  }

  async opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    const c = this.as(ctx);
    if (c.uid !== 0) await this.need(nodeid, await this.attr(nodeid), c, R);
    return this.inner.opendir(c, nodeid);
  }

  readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.inner.readdir(this.as(ctx), nodeid, fh, offset, maxEntries, plus);
  }

  fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    return this.inner.fsyncdir(this.as(ctx), nodeid, fh, datasync);
  }

  releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    return this.inner.releasedir(this.as(ctx), nodeid, fh);
  }

  statfs(ctx: Ctx, nodeid: number): Promise<StatFs> {
    return this.inner.statfs(this.as(ctx), nodeid);
  }

  /** xattr_permission(): user.* follows the file's mode; trusted.* and security.* are root's. */
  private async xattrAllowed(c: Ctx, nodeid: number, name: string, mask: number): Promise<void> {
    if (c.uid === 0) return;
    if (name.startsWith('user.')) {
      const a = await this.attr(nodeid);
      const t = a.mode & S_IFMT;
      if (t !== S_IFREG && t !== S_IFDIR) throw new FsError(mask & W ? Errno.EPERM : Errno.ENODATA);
      await this.need(nodeid, a, c, mask);
      return;
    }
    if (name.startsWith('system.posix_acl_')) {
      if (mask & W && (await this.attr(nodeid)).uid !== c.uid) throw new FsError(Errno.EPERM);
      return;
    }
    if (mask & W || name.startsWith('trusted.')) throw new FsError(Errno.EPERM);
  }

  async setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    this.writable();
    const c = this.as(ctx);
    if (isLsmLabel(name)) throw new FsError(Errno.EOPNOTSUPP);
    await this.xattrAllowed(c, nodeid, name, W);
    return this.inner.setxattr(c, nodeid, name, value, flags);
  }

  async getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    const c = this.as(ctx);
    if (isLsmLabel(name)) throw new FsError(Errno.EOPNOTSUPP);
    await this.xattrAllowed(c, nodeid, name, R);
    return this.inner.getxattr(c, nodeid, name);
  }

  async listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    const c = this.as(ctx);
    const names = await this.inner.listxattr(c, nodeid);
    return names.filter((n) => !isLsmLabel(n) && (c.uid === 0 || !n.startsWith('trusted.')));
  }

  async removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    this.writable();
    const c = this.as(ctx);
    if (isLsmLabel(name)) throw new FsError(Errno.EOPNOTSUPP);
    await this.xattrAllowed(c, nodeid, name, W);
    return this.inner.removexattr(c, nodeid, name);
  }

  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    if (mask & W && this.rules.readOnly) throw new FsError(Errno.EROFS);
    return this.inner.access(this.as(ctx), nodeid, mask);
  }

  fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    if (this.rules.readOnly) return Promise.reject(new FsError(Errno.EROFS));
    return this.inner.fallocate(this.as(ctx), nodeid, fh, mode, offset, length);
  }

  lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return this.inner.lseek(this.as(ctx), nodeid, fh, offset, whence);
  }

  copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    if (this.rules.readOnly) return Promise.reject(new FsError(Errno.EROFS));
    if (this.handles.get(fhIn)?.readable === false) return Promise.reject(new FsError(Errno.EBADF));
    return this.inner.copyFileRange(this.as(ctx), nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len);
  }

  watch(listener: ChangeListener): () => void {
    return this.inner.watch(listener);
  }

  close(): Promise<void> {
    return this.inner.close();
  }
}
