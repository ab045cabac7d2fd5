// What the client must remember to survive a server restart. The kernel holds node ids and file
// handles the client gave it; a restarted server (a new session) numbers its nodes and handles
// afresh (a passthrough source hands out ids in lookup order). So the client records, per node id
// it handed out, the name it learned it by (parent id + name, kept up to date on rename and unlink)
// and, per open handle, its node and open flags. After a restart it keeps giving the kernel the old
// ids and translates them: a node is found again lazily, by looking its names up from the root on
// the new server; an open file is reopened by its node with its original flags less
// O_CREAT|O_EXCL|O_TRUNC. Until the first restart the translation is the identity and costs nothing.
//
// Ids invented by the client after a restart start at 2^40, above any id a source hands out in
// practice, so they never meet an old id the kernel still holds.

import { Errno, FsError } from '../lib/errno.js';
import { O_CREAT, O_EXCL, O_TRUNC, RENAME_EXCHANGE, ROOT_ID, type ChangeEvent, type DirEntry, type Entry } from '../vfs/types.js';

/** A file created behind (client.ts createBehind) whose naming has not been answered yet. */
export interface Unnamed {
  fh: number;
  ctx: { uid: number; gid: number; pid: number };
  mode: number;
  flags: number;
}

/** Calls on the new session, in its own ids, that re-establish a node or a handle. */
export interface Rebinder {
  lookup(parent: number, name: string): Promise<Entry>;
  /** Makes a file created behind again by name (the server that held it unnamed restarted). */
  create(parent: number, name: string, u: Unnamed): Promise<{ entry: Entry; fh: number }>;
  open(nodeid: number, flags: number): Promise<number>;
  opendir(nodeid: number): Promise<number>;
}

interface NodeRec {
  parent: number;
  /** undefined once the name was unlinked: such a node cannot be found again after a restart. */
  name: string | undefined;
  /** Lookups the kernel holds (entries handed out less forgets). */
  lookups: number;
  /** Of those, how many the server does not hold: answered by the client (see lookedUpHere). */
  here?: number;
}

interface HandleRec {
  nodeid: number;
  flags: number;
}

/** Request fields that name a node, and those that name a handle (a directory handle for these ops). */
const NODE_FIELDS = ['nodeid', 'parent', 'newparent', 'nodeIn', 'nodeOut'] as const;
const FH_FIELDS = ['fh', 'fhIn', 'fhOut'] as const;
const DIR_OPS = new Set(['readdir', 'fsyncdir', 'releasedir']);
const LOCAL_BASE = 2 ** 40;
const REOPEN_MASK = ~(O_CREAT | O_EXCL | O_TRUNC);

const nameKey = (parent: number, name: string): string => `${parent}/${name}`;
const fhKey = (fh: number, dir: boolean): string => `${dir ? 'd' : 'f'}${fh}`;

export class NodeTable {
  /** Server sessions seen after the first: 0 while the server has never restarted. */
  epoch = 0;
  private readonly nodes = new Map<number, NodeRec>();
  private readonly names = new Map<string, number>();
  private readonly handles = new Map<string, HandleRec>();
  private toServer = new Map<number, number>();
  private toClient = new Map<number, number>();
  private fhToServer = new Map<string, number>();
  private readonly resolving = new Map<number, Promise<number>>();
  /** Files created behind whose naming is on its way, by client id: kept across epochs. */
  private readonly unnamed = new Map<number, Unnamed>();
  private readonly reopening = new Map<string, Promise<number>>();
  private nextLocal = LOCAL_BASE;
  /** Nodes found again by name, handles reopened, and ones that could not be (for `wirefs status`). */
  readonly counters = { remapped: 0, reopened: 0, stale: 0 };

  constructor(private readonly rebind: Rebinder) {}

  get nodeCount(): number {
    return this.nodes.size;
  }
  get handleCount(): number {
    return this.handles.size;
  }

  /** The server restarted: its old ids mean nothing now; translate everything from here on. */
  newEpoch(): void {
    this.epoch++;
    this.toServer = new Map();
    this.toClient = new Map();
    this.fhToServer = new Map();
    this.resolving.clear();
    this.reopening.clear();
    // The new server's counts are its own (it clamps a forget at what the session holds there):
    // forgets go to it as the kernel sends them.
    for (const rec of this.nodes.values()) delete rec.here;
  }

  /** Every node the kernel may have cached, as inode changes (after a reconnect, pushes may be lost). */
  everything(): ChangeEvent[] {
    const out: ChangeEvent[] = [{ kind: 'inode', nodeid: ROOT_ID, off: -1, len: 0 }];
    for (const id of this.nodes.keys()) out.push({ kind: 'inode', nodeid: id, off: -1, len: 0 });
    return out;
  }

  // --- client ids → server ids (requests) -------------------------------------------------------

  /** A request in the current session's ids. Throws ESTALE for a node that cannot be found again. */
  async outbound(op: string, req: Record<string, unknown>): Promise<Record<string, unknown>> {
    if (this.epoch === 0) return req;
    const out = { ...req };
    for (const f of NODE_FIELDS) if (typeof out[f] === 'number') out[f] = await this.serverNode(out[f]);
    for (const f of FH_FIELDS) if (typeof out[f] === 'number') out[f] = await this.serverFh(out[f], DIR_OPS.has(op));
    return out;
  }

  serverNode(id: number): Promise<number> | number {
    if (this.epoch === 0 || id === ROOT_ID) return id;
    const known = this.toServer.get(id);
    if (known !== undefined) return known;
    let p = this.resolving.get(id);
    if (!p) {
      p = this.resolve(id).finally(() => this.resolving.delete(id));
      this.resolving.set(id, p);
    }
    return p;
  }

  private async resolve(id: number): Promise<number> {
    const rec = this.nodes.get(id);
    if (!rec || rec.name === undefined) {
      this.counters.stale++;
      throw new FsError(Errno.ESTALE, `node ${id} has no known name to find it again by`);
    }
    const epoch = this.epoch;
    const parent = await this.serverNode(rec.parent);
    const u = this.unnamed.get(id);
    let e = await this.rebind.lookup(parent, rec.name).catch((err: unknown) => {
      if (u && err instanceof FsError && err.errno === Errno.ENOENT) return undefined;
      throw err;
    });
    if (u && !e?.nodeid && epoch === this.epoch) {
      // Created behind, and the server restarted before it named the file: the file (and every
      // write of it, all still waiting to be resent: the server ran none before the naming) is
      // made again here, by name, as it was asked for.
      const made = await this.rebind.create(parent, rec.name, u);
      if (epoch === this.epoch) this.fhToServer.set(fhKey(u.fh, false), made.fh);
      this.unnamed.delete(id);
      e = made.entry;
    }
    if (!e?.nodeid) throw new FsError(Errno.ESTALE);
    if (epoch !== this.epoch) throw new FsError(Errno.EIO, 'the server restarted again');
    this.bind(id, e.nodeid);
    this.counters.remapped++;
    return e.nodeid;
  }

  private bind(client: number, server: number): void {
    this.toServer.set(client, server);
    if (!this.toClient.has(server)) this.toClient.set(server, client);
  }

  private async serverFh(fh: number, dir: boolean): Promise<number> {
    if (this.epoch === 0) return fh;
    const key = fhKey(fh, dir);
    const known = this.fhToServer.get(key);
    if (known !== undefined) return known;
    let p = this.reopening.get(key);
    if (!p) {
      p = this.reopen(key).finally(() => this.reopening.delete(key));
      this.reopening.set(key, p);
    }
    return p;
  }

  private async reopen(key: string): Promise<number> {
    const rec = this.handles.get(key);
    if (!rec) throw new FsError(Errno.EBADF);
    const epoch = this.epoch;
    const node = await this.serverNode(rec.nodeid);
    const fh = key.startsWith('d') ? await this.rebind.opendir(node) : await this.rebind.open(node, rec.flags & REOPEN_MASK);
    if (epoch !== this.epoch) throw new FsError(Errno.EIO, 'the server restarted again');
    this.fhToServer.set(key, fh);
    this.counters.reopened++;
    return fh;
  }

  /**
   * Where to send a forget of n of the kernel's lookups, and how many to send, or undefined when
   * there is nothing for the server to drop (it never learned the node, or holds no more lookups
   * than the kernel still does: those answered here are not the server's).
   */
  forget(id: number, n: number): { id: number; n: number } | undefined {
    const rec = this.nodes.get(id);
    let send = n;
    if (rec) {
      const here = rec.here ?? 0;
      const server = rec.lookups - here;
      rec.lookups -= n;
      if (here > 0) {
        // The server keeps as many as the kernel still holds, at most.
        send = rec.lookups <= 0 ? server : Math.max(0, server - rec.lookups);
        rec.here = Math.max(0, rec.lookups - (server - send));
      }
      if (rec.lookups <= 0) {
        this.nodes.delete(id);
        if (rec.name !== undefined && this.names.get(nameKey(rec.parent, rec.name)) === id) this.names.delete(nameKey(rec.parent, rec.name));
      }
    }
    if (this.epoch === 0) return send > 0 ? { id, n: send } : undefined;
    const server = this.toServer.get(id);
    if (server !== undefined && (rec?.lookups ?? 0) <= 0) {
      this.toServer.delete(id);
      if (this.toClient.get(server) === id) this.toClient.delete(server);
    }
    return server !== undefined && send > 0 ? { id: server, n: send } : undefined;
  }

  /**
   * A lookup of the node the kernel holds as parent/name answered by the client, not the server:
   * counted for the kernel, kept apart from the server's. Only before any restart (after one, the
   * node may not be known to the new server yet). Whether it was counted.
   */
  lookedUpHere(id: number): boolean {
    const rec = this.epoch === 0 ? this.nodes.get(id) : undefined;
    if (!rec || rec.lookups <= 0) return false;
    rec.lookups++;
    rec.here = (rec.here ?? 0) + 1;
    return true;
  }

  /** A file was created behind (see Unnamed); `named` once its naming has its answer. */
  createdBehind(id: number, u: Unnamed): void {
    this.unnamed.set(id, u);
  }
  named(id: number): void {
    this.unnamed.delete(id);
  }

  /** A handle that was never reopened in this session: releasing it needs no round trip. */
  unbound(fh: number, dir: boolean): boolean {
    return this.epoch !== 0 && !this.fhToServer.has(fhKey(fh, dir));
  }

  released(fh: number, dir: boolean): void {
    this.handles.delete(fhKey(fh, dir));
    this.fhToServer.delete(fhKey(fh, dir));
  }

  // --- server ids → client ids (replies and pushes), recording names ------------------------------

  /** An entry handed out as (parent, name), in client ids; counts the kernel's new lookup. */
  entry(e: Entry, parent: number, name: string): Entry {
    if (!e.nodeid) return e;
    let id = e.nodeid;
    if (this.epoch !== 0) {
      const known = this.toClient.get(e.nodeid);
      // A node the client knew before the restart, met again by its name, keeps its old id.
      const byName = this.names.get(nameKey(parent, name));
      id = known ?? (byName !== undefined && !this.toServer.has(byName) ? byName : this.nextLocal++);
      this.bind(id, e.nodeid);
    }
    const rec = this.nodes.get(id);
    if (rec) rec.lookups++;
    else this.nodes.set(id, { parent, name, lookups: 1 });
    this.setName(id, parent, name);
    return id === e.nodeid ? e : { ...e, nodeid: id };
  }

  entries(list: DirEntry[], dir: number): DirEntry[] {
    return list.map((d) => {
      if (!d.entry?.nodeid) return d;
      // The kernel ignores the entries of dot names (fs/fuse/readdir.c); no source sends them, and
      // one that did would get them dropped here rather than mistranslated.
      if (d.name === '.' || d.name === '..') return { name: d.name, ino: d.ino, type: d.type, off: d.off };
      return { ...d, entry: this.entry(d.entry, dir, d.name) };
    });
  }

  /** A handle the server opened for node `id` (client id) with these flags, in client numbers. */
  handle(fh: number, dir: boolean, id: number, flags: number): number {
    let client = fh;
    if (this.epoch !== 0) {
      client = this.nextLocal++;
      this.fhToServer.set(fhKey(client, dir), fh);
    }
    this.handles.set(fhKey(client, dir), { nodeid: id, flags });
    return client;
  }

  /** A pushed change in client ids, or undefined when it names nothing the client holds. */
  change(ev: ChangeEvent): ChangeEvent | undefined {
    if (this.epoch === 0) return ev;
    const map = (id: number): number | undefined => (id === ROOT_ID ? id : this.toClient.get(id));
    if (ev.kind === 'inode') {
      const nodeid = map(ev.nodeid);
      return nodeid === undefined ? undefined : { ...ev, nodeid };
    }
    const parent = map(ev.parent);
    if (parent === undefined) return undefined;
    if (ev.kind === 'entry') return { ...ev, parent };
    const child = map(ev.child);
    return child === undefined ? { kind: 'entry', parent, name: ev.name } : { ...ev, parent, child };
  }

  // --- names ---------------------------------------------------------------------------------------

  private setName(id: number, parent: number, name: string): void {
    const rec = this.nodes.get(id);
    if (!rec) return;
    if (rec.name !== undefined && this.names.get(nameKey(rec.parent, rec.name)) === id) this.names.delete(nameKey(rec.parent, rec.name));
    const key = nameKey(parent, name);
    const before = this.names.get(key);
    if (before !== undefined && before !== id) this.unname(before);
    rec.parent = parent;
    rec.name = name;
    this.names.set(key, id);
  }

  private unname(id: number): void {
    const rec = this.nodes.get(id);
    if (rec) rec.name = undefined;
  }

  /** The node id the kernel holds for parent/name, if it holds one. */
  idOf(parent: number, name: string): number | undefined {
    return this.names.get(nameKey(parent, name));
  }

  /** Whether the kernel holds an open handle of the node. */
  isOpen(nodeid: number): boolean {
    for (const h of this.handles.values()) if (h.nodeid === nodeid) return true;
    return false;
  }

  removed(parent: number, name: string): void {
    const key = nameKey(parent, name);
    const id = this.names.get(key);
    if (id === undefined) return;
    this.names.delete(key);
    this.unname(id);
  }

  renamed(parent: number, name: string, newparent: number, newname: string, flags: number): void {
    const moving = this.names.get(nameKey(parent, name));
    const target = this.names.get(nameKey(newparent, newname));
    if (flags & RENAME_EXCHANGE) {
      this.names.delete(nameKey(parent, name));
      this.names.delete(nameKey(newparent, newname));
      if (moving !== undefined) this.setName(moving, newparent, newname);
      if (target !== undefined) this.setName(target, parent, name);
      return;
    }
    if (moving === undefined) {
      // The kernel knew the name only as a path we did not record: the old target is gone anyway.
      if (target !== undefined) this.removed(newparent, newname);
      return;
    }
    this.setName(moving, newparent, newname);
  }
}
