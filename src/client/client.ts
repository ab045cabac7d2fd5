// The wirefs client: RemoteVfs is a Vfs whose every call crosses the network to a server. Each
// request is registered under its id before it is written and settled by the reply with that id, in
// any order; many are in flight at once. Pushed change events reach watch() listeners. The request
// table and session id live here, the socket in a Link (link.ts): today a lost link fails every
// pending and later call with EIO; a reconnect loop will open a new link and resend instead.

import { ProtocolError, Reader } from '../lib/bytes.js';
import { Errno, FsError } from '../lib/errno.js';
import { logger, type Logger } from '../lib/log.js';
import type {
  Attr, ChangeListener, CreateResult, Ctx, DirEntry, Entry, FsInfo, OpenResult, SetAttr, StatFs, Vfs,
} from '../vfs/types.js';
import { EncodeError, type WireCtx } from '../wire/codec.js';
import {
  FEATURE_CANCEL, FEATURE_COHERENT, FEATURE_PUSH, FLAG_PUSH, FLAG_REPLY, READ_OVERHEAD, decodeHeader, encodeRequestFrame,
} from '../wire/frame.js';
import { OPS, decodeRep, decodeReq, opLabel, type OpName, type Rep, type Req } from '../wire/ops.js';
import type { Security } from '../wire/transport.js';
import { openLink, type Link } from './link.js';

export interface ConnectOptions {
  host: string;
  port: number;
  /** Give up connecting and negotiating after this long (default 5000 ms). */
  timeoutMs?: number;
  log?: Logger;
  /** Shown in the server's log. */
  name?: string;
  /** How to reach the server: plain TCP (default), a shared secret or certificates. */
  security?: Security;
}

export interface ClientStats {
  state: 'open' | 'closed';
  /** Requests awaiting their reply now. */
  inFlight: number;
  /** Requests sent since connect. */
  requests: number;
  /** Requests that ended in an errno. */
  errors: number;
  /** CHANGE frames received. */
  pushes: number;
}

type CallOp = { [N in OpName]: (typeof OPS)[N]['kind'] extends 'call' ? N : never }[OpName];

interface Pending {
  op: OpName;
  resolve(rep: unknown): void;
  reject(err: Error): void;
  /** Detaches the abort listener. */
  done(): void;
}

/** Bytes of a write request besides its data: header, ctx, nodeid, fh, offset, blob length. */
const WRITE_OVERHEAD = 128;

export async function connect(opts: ConnectOptions): Promise<RemoteVfs> {
  const link = await openLink({
    host: opts.host, port: opts.port, timeoutMs: opts.timeoutMs ?? 5000,
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    ...(opts.security !== undefined ? { security: opts.security } : {}),
  });
  return new RemoteVfs(`${opts.host}:${opts.port}`, link, opts.log ?? logger('client'));
}

function wireCtx(ctx: Ctx): WireCtx {
  return { uid: ctx.uid, gid: ctx.gid, pid: ctx.pid };
}

export class RemoteVfs implements Vfs {
  /** 'host:port' as given to connect(). */
  readonly server: string;
  /** Resolves once the connection is gone (closed by either side or lost). */
  readonly closed: Promise<void>;
  /** The session the server gave us; a reconnect asks to resume it. */
  readonly sessionId: bigint;
  /** The root's attributes as of the HELLO. */
  readonly rootAttr: Attr;
  private readonly fsInfo: FsInfo;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<ChangeListener>();
  private readonly attrHints = new Set<(nodeid: number, attr: Attr) => void>();
  private nextId = 1;
  private nextSeq = 1;
  private state: 'open' | 'closed' = 'open';
  private readonly counters = { requests: 0, errors: 0, pushes: 0 };
  private markClosed!: () => void;

  constructor(server: string, private readonly conn: Link, private readonly log: Logger) {
    this.server = server;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.sessionId = conn.welcome.sessionId;
    this.rootAttr = conn.welcome.root;
    // Pushes from a source that reports all its changes: the kernel may cache without a bound.
    const coherent = (conn.features & FEATURE_PUSH) !== 0n && (conn.features & FEATURE_COHERENT) !== 0n;
    this.fsInfo = { type: conn.welcome.fsType, readOnly: conn.welcome.readOnly, coherent };
    const { socket } = conn;
    socket.on('data', (chunk: Buffer) => {
      conn.splitter.push(chunk);
      this.drain();
    });
    socket.on('error', (err) => this.log.debug(`${server}: ${err.message}`));
    socket.on('close', () => this.lost(`connection to ${server} closed`));
    this.drain();
  }

  stats(): ClientStats {
    return { state: this.state, inFlight: this.pending.size, ...this.counters };
  }

  // --- the request table -----------------------------------------------------------------------

  private drain(): void {
    try {
      for (let frame = this.conn.splitter.next(); frame; frame = this.conn.splitter.next()) this.onFrame(frame);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.log.warn(`${this.server}: protocol error, closing the connection: ${err.message}`);
      this.conn.socket.destroy();
    }
  }

  private onFrame(frame: Buffer): void {
    const r = new Reader(frame);
    const h = decodeHeader(r);
    if (h.flags & FLAG_PUSH) {
      if (h.op !== OPS.change.code) return; // a push from a newer server: not for us
      const { event } = decodeReq(r, 'change');
      this.counters.pushes++;
      const acting: Promise<void>[] = [];
      for (const l of this.listeners) {
        try {
          const p = l(event);
          if (p) acting.push(p.catch((err: unknown) => this.log.warn(`a change listener failed: ${(err as Error).message}`)));
        } catch (err) {
          this.log.warn(`a change listener failed: ${(err as Error).message}`);
        }
      }
      // The server holds the change's author until we say our kernel has dropped what it cached.
      if (h.id !== 0) {
        const id = h.id;
        if (acting.length === 0) this.sendOneway('changeAck', { id });
        else void Promise.all(acting).then(() => this.sendOneway('changeAck', { id }));
      }
      return;
    }
    if (!(h.flags & FLAG_REPLY)) throw new ProtocolError(`the server sent a request (op ${h.op})`);
    const p = this.pending.get(h.id);
    // No one waits for it: the caller gave up (abort) before the reply came.
    if (!p) return;
    if (h.op !== OPS[p.op].code) throw new ProtocolError(`reply to request ${h.id} has op ${h.op}, expected ${OPS[p.op].code}`);
    const status = r.i32();
    if (status < 0) throw new ProtocolError(`negative status ${status}`);
    const rep = status === 0 ? decodeRep(r, p.op) : undefined;
    this.pending.delete(h.id);
    p.done();
    if (status === 0) p.resolve(rep);
    else {
      this.counters.errors++;
      p.reject(new FsError(status));
    }
  }

  private allocId(): number {
    // u32 ids, skipping 0 (HELLO and pushes) and any still pending after a wrap.
    do {
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    } while (this.pending.has(this.nextId));
    return this.nextId;
  }

  /** Sends one request and waits for its reply. Rejects with FsError; EIO when the link is gone. */
  private call<N extends CallOp>(op: N, req: Req<N>, signal?: AbortSignal): Promise<Rep<N>> {
    if (this.state !== 'open') return Promise.reject(new FsError(Errno.EIO, `not connected to ${this.server}`));
    if (signal?.aborted) return Promise.reject(new FsError(Errno.EINTR));
    const id = this.allocId();
    // Non-idempotent requests carry a session sequence number: the key of the future reply cache.
    let seq = 0;
    if (!OPS[op].idempotent) {
      seq = this.nextSeq;
      this.nextSeq = this.nextSeq >= 0xffffffff ? 1 : this.nextSeq + 1;
    }
    let frame: Buffer;
    try {
      frame = encodeRequestFrame(op, id, seq, req);
    } catch (err) {
      if (err instanceof EncodeError) return Promise.reject(new FsError(Errno.EINVAL, `${opLabel(op)}: ${err.message}`));
      throw err;
    }
    if (frame.length > this.conn.maxFrame) {
      return Promise.reject(new FsError(Errno.E2BIG, `${opLabel(op)} request of ${frame.length} bytes is over the frame limit`));
    }
    return new Promise<Rep<N>>((resolve, reject) => {
      const onAbort = (): void => {
        if (!this.pending.delete(id)) return;
        reject(new FsError(Errno.EINTR));
        if (this.conn.features & FEATURE_CANCEL) this.sendOneway('cancel', { id });
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      this.pending.set(id, {
        op,
        resolve: resolve as (rep: unknown) => void,
        reject,
        done: () => signal?.removeEventListener('abort', onAbort),
      });
      this.counters.requests++;
      this.conn.socket.write(frame);
    });
  }

  private sendOneway<N extends 'forget' | 'cancel' | 'changeAck'>(op: N, req: Req<N>): void {
    if (this.state === 'open') this.conn.socket.write(encodeRequestFrame(op, 0, 0, req));
  }

  /** The link is gone: every waiting call fails with EIO (later: hand them to a reconnect loop). */
  private lost(why: string): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    const waiting = [...this.pending.values()];
    this.pending.clear();
    for (const p of waiting) {
      p.done();
      p.reject(new FsError(Errno.EIO, why));
    }
    if (waiting.length) this.log.debug(`${why}; failed ${waiting.length} pending requests with EIO`);
    this.markClosed();
  }

  /** One PING round trip, in milliseconds. */
  async ping(): Promise<number> {
    const t0 = process.hrtime.bigint();
    await this.call('ping', {});
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  // --- the Vfs -----------------------------------------------------------------------------------

  info(): FsInfo {
    return { ...this.fsInfo };
  }

  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return (await this.call('lookup', { ctx: wireCtx(ctx), parent, name }, ctx.signal)).entry;
  }
  forget(nodeid: number, nlookup: number): void {
    if (Number.isSafeInteger(nodeid) && nodeid > 0 && Number.isSafeInteger(nlookup) && nlookup > 0) {
      this.sendOneway('forget', { nodeid, nlookup });
    }
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    return (await this.call('getattr', { ctx: wireCtx(ctx), nodeid, fh }, ctx.signal)).attr;
  }
  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    return (await this.call('setattr', { ctx: wireCtx(ctx), nodeid, set, fh }, ctx.signal)).attr;
  }
  async readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return (await this.call('readlink', { ctx: wireCtx(ctx), nodeid }, ctx.signal)).target;
  }
  /**
   * Subscribes to the directory attributes the server sends after a change of names (1.1): the
   * kernel drops a directory's attributes at each create or unlink, and a cache can answer its
   * next GETATTR with these.
   */
  onDirAttr(listener: (nodeid: number, attr: Attr) => void): () => void {
    this.attrHints.add(listener);
    return () => void this.attrHints.delete(listener);
  }
  private hint(nodeid: number, attr: Attr | undefined): void {
    if (attr) for (const l of this.attrHints) l(nodeid, attr);
  }

  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    const rep = await this.call('mknod', { ctx: wireCtx(ctx), parent, name, mode, rdev }, ctx.signal);
    this.hint(parent, rep.parentAttr);
    return rep.entry;
  }
  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    const rep = await this.call('mkdir', { ctx: wireCtx(ctx), parent, name, mode }, ctx.signal);
    this.hint(parent, rep.parentAttr);
    return rep.entry;
  }
  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    const rep = await this.call('symlink', { ctx: wireCtx(ctx), parent, name, target }, ctx.signal);
    this.hint(parent, rep.parentAttr);
    return rep.entry;
  }
  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    const rep = await this.call('link', { ctx: wireCtx(ctx), nodeid, newparent, newname }, ctx.signal);
    this.hint(newparent, rep.parentAttr);
    return rep.entry;
  }
  async unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.hint(parent, (await this.call('unlink', { ctx: wireCtx(ctx), parent, name }, ctx.signal)).parentAttr);
  }
  async rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.hint(parent, (await this.call('rmdir', { ctx: wireCtx(ctx), parent, name }, ctx.signal)).parentAttr);
  }
  async rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    const rep = await this.call('rename', { ctx: wireCtx(ctx), parent, name, newparent, newname, flags }, ctx.signal);
    this.hint(parent, rep.parentAttr);
    this.hint(newparent, rep.newParentAttr);
  }
  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    return (await this.call('open', { ctx: wireCtx(ctx), nodeid, flags }, ctx.signal)).open;
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    const rep = await this.call('create', { ctx: wireCtx(ctx), parent, name, mode, flags }, ctx.signal);
    this.hint(parent, rep.parentAttr);
    return { ...rep.open, entry: rep.entry };
  }

  /** Reads larger than a frame are split into concurrent pieces and joined up to the first short one. */
  async read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    const piece = this.conn.maxFrame - READ_OVERHEAD;
    const one = async (off: number, n: number): Promise<Buffer> =>
      (await this.call('read', { ctx: wireCtx(ctx), nodeid, fh, offset: off, size: n }, ctx.signal)).data;
    if (size <= piece) return one(offset, size);
    const parts = await Promise.all(Array.from({ length: Math.ceil(size / piece) }, (_, i) =>
      one(offset + i * piece, Math.min(piece, size - i * piece))));
    const kept: Buffer[] = [];
    for (const [i, p] of parts.entries()) {
      kept.push(p);
      if (p.length < Math.min(piece, size - i * piece)) break;
    }
    return Buffer.concat(kept);
  }

  /** Writes larger than a frame are split into concurrent pieces; the count stops at the first short one. */
  async write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    const piece = this.conn.maxFrame - WRITE_OVERHEAD;
    const one = async (off: number, d: Buffer): Promise<number> =>
      (await this.call('write', { ctx: wireCtx(ctx), nodeid, fh, offset: off, data: d }, ctx.signal)).count;
    if (data.length <= piece) return one(offset, data);
    const counts = await Promise.all(Array.from({ length: Math.ceil(data.length / piece) }, (_, i) =>
      one(offset + i * piece, data.subarray(i * piece, (i + 1) * piece))));
    let total = 0;
    for (const [i, n] of counts.entries()) {
      total += n;
      if (n < Math.min(piece, data.length - i * piece)) break;
    }
    return total;
  }

  async flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.call('flush', { ctx: wireCtx(ctx), nodeid, fh }, ctx.signal);
  }
  async fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.call('fsync', { ctx: wireCtx(ctx), nodeid, fh, datasync }, ctx.signal);
  }
  async release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.call('release', { ctx: wireCtx(ctx), nodeid, fh }, ctx.signal);
  }
  async opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    return (await this.call('opendir', { ctx: wireCtx(ctx), nodeid }, ctx.signal)).open;
  }
  async readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return (await this.call('readdir', { ctx: wireCtx(ctx), nodeid, fh, offset, maxEntries, plus }, ctx.signal)).entries;
  }
  async fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.call('fsyncdir', { ctx: wireCtx(ctx), nodeid, fh, datasync }, ctx.signal);
  }
  async releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.call('releasedir', { ctx: wireCtx(ctx), nodeid, fh }, ctx.signal);
  }
  async statfs(ctx: Ctx, nodeid: number): Promise<StatFs> {
    return (await this.call('statfs', { ctx: wireCtx(ctx), nodeid }, ctx.signal)).statfs;
  }
  async setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    await this.call('setxattr', { ctx: wireCtx(ctx), nodeid, name, value, flags }, ctx.signal);
  }
  async getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return (await this.call('getxattr', { ctx: wireCtx(ctx), nodeid, name }, ctx.signal)).value;
  }
  async listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    return (await this.call('listxattr', { ctx: wireCtx(ctx), nodeid }, ctx.signal)).names;
  }
  async removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    await this.call('removexattr', { ctx: wireCtx(ctx), nodeid, name }, ctx.signal);
  }
  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    await this.call('access', { ctx: wireCtx(ctx), nodeid, mask }, ctx.signal);
  }
  async fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    await this.call('fallocate', { ctx: wireCtx(ctx), nodeid, fh, mode, offset, length }, ctx.signal);
  }
  async lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return (await this.call('lseek', { ctx: wireCtx(ctx), nodeid, fh, offset, whence }, ctx.signal)).offset;
  }
  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return (await this.call('copyFileRange', { ctx: wireCtx(ctx), nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len }, ctx.signal)).count;
  }

  /** Pushed CHANGE events from the server: other clients' changes and the source's own. */
  watch(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => void this.listeners.delete(listener);
  }

  /** Ends the session: the server releases what this client held. Pending calls fail with EIO. */
  async close(): Promise<void> {
    this.conn.socket.end();
    this.lost(`connection to ${this.server} closed by the client`);
    await this.closed;
  }
}
