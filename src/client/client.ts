// The wirefs client: RemoteVfs is a Vfs whose every call crosses the network to a server. Each
// request is registered under its id before it is written and settled by the reply with that id, in
// any order; many are in flight at once. Pushed change events reach watch() listeners. The request
// table, the session id and the names of what the kernel holds (remap.ts) live here, the socket in a
// Link (link.ts). When the link drops, a reconnect loop (reconnect.ts) opens a new one: the same
// session is resumed and every unanswered request is resent (the server's reply cache answers the
// non-idempotent ones it already ran); a restarted server gets what the client held re-established by
// path. Callers see no error for an outage shorter than the outage timeout, and EIO after it.

import { ProtocolError, Reader } from '../lib/bytes.js';
import { signalCancel, type Cancel } from '../lib/abort.js';
import { Errno, FsError } from '../lib/errno.js';
import { logger, type Logger } from '../lib/log.js';
import {
  O_CREAT, O_EXCL, O_TRUNC, ROOT_ID, S_IFMT, S_IFREG, markEnded,
  type Attr, type ChangeEvent, type ChangeListener, type CreateResult, type Ctx, type DirEntry, type Entry, type FsInfo,
  type OpenResult, type SetAttr, type StatFs, type Vfs,
} from '../vfs/types.js';
import { EncodeError, type WireCtx } from '../wire/codec.js';
import {
  FEATURE_CANCEL, FEATURE_COHERENT, FEATURE_PUSH, FLAG_PUSH, FLAG_REPLY, READ_OVERHEAD, WRITE_PARTS_MIN, decodeHeader, encodeRequestFrame, encodeWriteRequestParts,
} from '../wire/frame.js';
import { OPS, decodeRep, decodeReq, opLabel, type OpName, type Rep, type Req } from '../wire/ops.js';
import type { Security } from '../wire/transport.js';
import { Outbox, writeFrames } from '../wire/outbox.js';
import { SEQ_WINDOW, nextSeq, seqDistance } from '../wire/seq.js';
import { openLink, type Link } from './link.js';
import { Liveness, Reconnector } from './reconnect.js';
import { DataCache, type DataCacheOptions, type DataCacheStats } from './datacache.js';
import { NodeTable } from './remap.js';
import { ChangeListeners } from '../vfs/listeners.js';

export interface ConnectOptions {
  host: string;
  port: number;
  /** Give up one attempt at connecting and negotiating after this long (default 5000 ms). */
  timeoutMs?: number;
  /**
   * How long calls wait for the server to come back when the connection is lost (default 60 s);
   * after that they fail with EIO. Infinity waits forever, as an NFS hard mount does.
   */
  outageMs?: number;
  /** A silent link is pinged after this long and given up after three times this (default 5 s). */
  pingMs?: number;
  /** The longest backoff between reconnect attempts (default 2 s; the first is 50 ms). */
  retryMaxMs?: number;
  /** Pieces of one big read or write in flight at once (default 8). */
  piecesInFlight?: number;
  log?: Logger;
  /** Shown in the server's log. */
  name?: string;
  /** How to reach the server: plain TCP (default), a shared secret or certificates. */
  security?: Security;
  /** Keep file pages read on local disk too (see datacache.ts); only for a coherent server. */
  dataCache?: DataCacheOptions;
}

export const DEFAULT_OUTAGE_MS = 60_000;
/** STATFS answers kept at most (by node: a tree may span devices). */
const MAX_STATFS_KEPT = 256;

export interface ClientStats {
  state: 'open' | 'reconnecting' | 'closed';
  /** Requests awaiting their reply now. */
  inFlight: number;
  /** Requests sent since connect. */
  requests: number;
  /** The same by operation. */
  ops: Record<string, number>;
  /** Requests that ended in an errno. */
  errors: number;
  /** CHANGE frames received. */
  pushes: number;
  /** Links lost since connect. */
  disconnects: number;
  /** New links since connect (resumed or not). */
  reconnects: number;
  /** Reconnects that found a new server session (the server restarted or the grace ran out). */
  newSessions: number;
  /** Requests sent again on a new link. */
  resent: number;
  /** Calls failed with EIO because the outage outlasted the timeout. */
  timedOut: number;
  /** Why the last reconnect attempt failed, while reconnecting. */
  lastError: string;
  /** Nodes and open handles the client remembers for the kernel, and the restart bookkeeping. */
  nodes: number;
  handles: number;
  remapped: number;
  reopened: number;
  stale: number;
  /** The data cache on local disk, when there is one. */
  dataCache?: DataCacheStats;
  /** Unlinks answered before the server ran them, leases granted and recalled, and how many are held now. */
  unlinkBehind: { sent: number; rmdirs: number; failed: number; recalled: number; leases: number; held: number; inFlight: number };
  /** Creates answered with a reserved file before the server named it, their failures, and reserved files ready now. */
  createBehind: { sent: number; failed: number; reserved: number };
}

type CallOp = { [N in OpName]: (typeof OPS)[N]['kind'] extends 'call' ? N : never }[OpName];

interface Pending {
  op: CallOp;
  /** In client ids: translated again each time it is sent, in case the server restarted. */
  req: Record<string, unknown>;
  seq: number;
  /** In the current session's ids already (restart bookkeeping, pings): never sent to another session. */
  raw: boolean;
  /** No caller waits for it (an unlink sent behind): it may wait in the outbox for company. */
  hold: boolean;
  /** Written on a link of the current session; and whether an earlier session may have run it. */
  written: boolean;
  crossed: boolean;
  /** When it started waiting for a link (undefined while it has one). */
  waitingSince: number | undefined;
  resolve(rep: unknown): void;
  reject(err: Error): void;
  /** Detaches the abort listener. */
  done(): void;
}

/** An errno that, for a request resent across a server restart, says its first attempt was done. */
const DONE_BEFORE: Partial<Record<CallOp, number>> = {
  mknod: Errno.EEXIST, mkdir: Errno.EEXIST, symlink: Errno.EEXIST, link: Errno.EEXIST, create: Errno.EEXIST,
  unlink: Errno.ENOENT, rmdir: Errno.ENOENT,
};

/** The failure of a request that crossed a server restart and probably ran before it (see DONE_BEFORE). */
class CrossedRestart extends FsError {}

function alreadyDone(err: unknown): void {
  if (!(err instanceof CrossedRestart)) throw err;
}

/** A directory refused a lease is not asked for again before this long. */
const LEASE_RETRY_MS = 1000;
/**
 * A client removing names lists a directory mostly to remove what is in it (rm -rf): the lease
 * is asked for at the listing, so that even the first unlink there need not wait.
 */
function offsetZeroLease(lastUnlink: number): boolean {
  return Date.now() - lastUnlink < LEASE_RETRY_MS;
}

/** How long close() waits for unlinks sent behind to be answered. */
const CLOSE_DRAIN_MS = 10_000;
/** Leases held, and directories remembered as asked, at most. */
const MAX_LEASES = 10_000;

/**
 * Create-behind: files kept reserved ahead in a leased directory where files are being created,
 * at first and at most (doubling each time creates there outrun them), and the directories that
 * have them at once (the least recently created in gives its back): a client holds a few dozen
 * of the server's file descriptors this way, not one per directory it ever wrote in.
 */
const RESERVE_FIRST = 4;
const RESERVE_MOST = 16;
const RESERVE_DIRS = 4;

/** The files reserved in one leased directory: ready, asked for, and how many to keep. */
interface Pool {
  ready: Reserved[];
  asking: number;
  want: number;
}

/** A file reserved in a leased directory: the server's entry and open handle, ids as the server gave them. */
interface Reserved {
  entry: Entry;
  fh: number;
}

/** Bytes of a write request besides its data: header, ctx, nodeid, fh, offset, blob length. */
const WRITE_OVERHEAD = 128;
/**
 * How long a FORGET or RELEASE may wait for a frame to go out with, and how many may wait (fewer
 * than the kernel's congestion threshold for background requests: a RELEASE is one).
 */
const SERVER_CTX: WireCtx = { uid: 0, gid: 0, pid: 0 };

export async function connect(opts: ConnectOptions): Promise<RemoteVfs> {
  const timeoutMs = opts.timeoutMs ?? 5000;
  const open = (sessionId: bigint, ms: number): Promise<Link> => openLink({
    host: opts.host, port: opts.port, timeoutMs: ms, sessionId,
    ...(opts.name !== undefined ? { name: opts.name } : {}),
    ...(opts.security !== undefined ? { security: opts.security } : {}),
  });
  const link = await open(0n, timeoutMs);
  // A reconnect attempt into a silent network (its HELLO swallowed) gives up after 3 s, so the next
  // one starts soon after the network is back; a reachable server answers HELLO in milliseconds.
  const retryTimeoutMs = Math.min(timeoutMs, 3000);
  return new RemoteVfs(`${opts.host}:${opts.port}`, link, (id) => open(id, retryTimeoutMs), opts, opts.log ?? logger('client'));
}

/** A request's cancellation: the cheap hooks when the caller's session made them, else its signal. */
function cancelOf(ctx: Ctx): Cancel | undefined {
  return ctx.cancel ?? (ctx.signal ? signalCancel(ctx.signal) : undefined);
}

function wireCtx(ctx: Ctx): WireCtx {
  return { uid: ctx.uid, gid: ctx.gid, pid: ctx.pid };
}

/** Runs fn over 0..n-1 with at most `limit` running at once; results in order. */
async function bounded<T>(n: number, limit: number, fn: (i: number) => Promise<T>): Promise<T[]> {
  const out = new Array<T>(n);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < n) {
      const i = next++;
      out[i] = await fn(i);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, n) }, worker));
  return out;
}

export class RemoteVfs implements Vfs {
  /** 'host:port' as given to connect(). */
  readonly server: string;
  /** Resolves once close() has ended the client. */
  readonly closed: Promise<void>;
  /** The root's attributes as of the first HELLO. */
  readonly rootAttr: Attr;
  private sessionId: bigint;
  /** The last STATFS answer by node (see statfs). */
  private readonly statfsKept = new Map<number, StatFs>();
  /** The server's protocol minor version (1.5 orders RMDIRs among themselves: rmdir-behind). */
  private serverMinor: number;
  private readonly fsInfo: FsInfo;
  private readonly pending = new Map<number, Pending>();
  /** Seqs of outstanding non-idempotent requests, oldest first (they are handed out in order). */
  private readonly seqs = new Set<number>();
  private readonly seqWaiters: Array<() => void> = [];
  private readonly listeners = new ChangeListeners((err) => this.log.warn(`a change listener failed: ${(err as Error).message}`));
  private readonly attrHints = new Set<(nodeid: number, attr: Attr) => void>();
  private readonly writeHints = new Set<(nodeid: number, attr: Attr) => void>();
  private readonly nodes: NodeTable;
  private readonly cache: DataCache | undefined;
  private wire: Link | undefined;
  /**
   * Frames on their way to the current link (see Outbox): calls made together (a file's gathered
   * writes and its attributes at close) cost one socket write here and one wake-up on the server;
   * FORGETs and RELEASEs, which the kernel sends for each file dropped or closed and waits for
   * none of, wait for company (rm -rf: a FORGET per file; tar: a RELEASE per file).
   */
  private readonly out = new Outbox((frames) => {
    const socket = this.wire?.socket;
    if (socket && !socket.destroyed) writeFrames(socket, frames);
  });
  private maxFrame: number;
  private liveness: Liveness | undefined;
  private outageTimer: NodeJS.Timeout | undefined;
  private readonly reconnector: Reconnector;
  private readonly outageMs: number;
  private readonly pingMs: number;
  private readonly piecesInFlight: number;
  private nextId = 1;
  private nextSeq = 1;
  private state: 'open' | 'reconnecting' | 'closed' = 'open';
  private readonly byOp = new Map<string, number>();
  private readonly counters = { errors: 0, pushes: 0, disconnects: 0, reconnects: 0, newSessions: 0, resent: 0, timedOut: 0 };
  private markClosed!: () => void;
  // Unlink-behind (see unlinkBehind): directories this session holds alone, by the uid whose
  // LEASE_DIR was granted; when each was last asked for (not again for LEASE_RETRY_MS); the asks
  // awaiting their answer (each settles when answered), which a recall or forget of its directory,
  // or a new link, voids by dropping it; whether the server knows LEASE_DIR; and the unlinks sent and
  // not yet answered, all of them and by what they touch ("n<id>": a node, "e<parent>/<name>": a
  // name), for the calls that must come after.
  private readonly leases = new Map<number, number>();
  private readonly leaseAsked = new Map<number, number>();
  private readonly leasePending = new Map<number, Promise<void>>();
  private leaseUnsupported = false;
  /** When this client last removed a name (see readdir). */
  private lastUnlink = 0;
  private listdirUnsupported = false;
  private readonly behindAll = new Set<Promise<void>>();
  private readonly behindBy = new Map<string, Set<Promise<void>>>();
  private readonly behindCounters = { sent: 0, rmdirs: 0, failed: 0, recalled: 0, leases: 0 };
  /** Create-behind (1.4): reserved files by leased directory, least recently created in first. */
  private readonly pools = new Map<number, Pool>();
  /** Whether anyone answers creates with reserved files (WriteBehindVfs does: see offerCreateBehind). */
  private createBehindOn = false;
  private reserveUnsupported = false;
  private readonly createCounters = { sent: 0, failed: 0 };

  constructor(server: string, link: Link, open: (sessionId: bigint) => Promise<Link>, opts: ConnectOptions, private readonly log: Logger) {
    this.server = server;
    this.closed = new Promise((resolve) => (this.markClosed = resolve));
    this.sessionId = link.welcome.sessionId;
    this.serverMinor = link.welcome.minor;
    this.rootAttr = link.welcome.root;
    // Pushes from a source that reports all its changes: the kernel may cache without a bound.
    const coherent = (link.features & FEATURE_PUSH) !== 0n && (link.features & FEATURE_COHERENT) !== 0n;
    this.fsInfo = { type: link.welcome.fsType, readOnly: link.welcome.readOnly, coherent };
    this.maxFrame = link.maxFrame;
    this.outageMs = opts.outageMs ?? DEFAULT_OUTAGE_MS;
    this.pingMs = opts.pingMs ?? 5000;
    this.piecesInFlight = opts.piecesInFlight ?? 8;
    this.nodes = new NodeTable({
      lookup: async (parent, name) => (await this.call('lookup', { ctx: SERVER_CTX, parent, name }, undefined, true)).entry,
      open: async (nodeid, flags) => (await this.call('open', { ctx: SERVER_CTX, nodeid, flags }, undefined, true)).open.fh,
      opendir: async (nodeid) => (await this.call('opendir', { ctx: SERVER_CTX, nodeid }, undefined, true)).open.fh,
      create: async (parent, name, u) => {
        const rep = await this.call('create', { ctx: u.ctx, parent, name, mode: u.mode, flags: (u.flags & ~(O_EXCL | O_TRUNC)) | O_CREAT }, undefined, true);
        return { entry: rep.entry, fh: rep.open.fh };
      },
    });
    if (opts.dataCache && coherent) {
      try {
        this.cache = new DataCache(opts.dataCache);
      } catch (err) {
        log.warn(`no data cache in ${opts.dataCache.dir}: ${(err as Error).message}`);
      }
    }
    this.reconnector = new Reconnector(() => open(this.sessionId), (l) => this.attach(l),
      { baseMs: 50, maxMs: opts.retryMaxMs ?? 2000 }, log);
    this.attach(link);
  }

  stats(): ClientStats {
    return {
      state: this.state, inFlight: this.pending.size, ...this.counters,
      requests: [...this.byOp.values()].reduce((a, b) => a + b, 0), ops: Object.fromEntries(this.byOp), lastError: this.state === 'reconnecting' ? this.reconnector.lastError : '',
      nodes: this.nodes.nodeCount, handles: this.nodes.handleCount, ...this.nodes.counters,
      ...(this.cache ? { dataCache: this.cache.stats() } : {}),
      unlinkBehind: { ...this.behindCounters, held: this.leases.size, inFlight: this.behindAll.size },
      createBehind: { ...this.createCounters, reserved: [...this.pools.values()].reduce((n, p) => n + p.ready.length, 0) },
    };
  }

  // --- the link ----------------------------------------------------------------------------------

  /** Takes a new link into use: the first, or one the reconnect loop opened. */
  private attach(link: Link): void {
    if (this.state === 'closed') {
      link.socket.destroy();
      return;
    }
    const first = this.wire === undefined && this.counters.disconnects === 0;
    this.wire = link;
    this.maxFrame = link.maxFrame;
    const { socket } = link;
    socket.on('data', (chunk: Buffer) => {
      this.liveness?.touch();
      link.splitter.push(chunk);
      this.drain(link);
    });
    socket.on('error', (err) => this.log.debug(`${this.server}: ${err.message}`));
    socket.on('close', () => this.lost(link, `connection to ${this.server} lost`));
    this.liveness = new Liveness(this.pingMs, () => this.ping(), (silent) => {
      this.log.warn(`${this.server}: no answer for ${Math.round(silent / 1000)} s; reconnecting`);
      socket.destroy();
    });
    if (first) {
      this.drain(link);
      return;
    }

    this.counters.reconnects++;
    this.state = 'open';
    // The server dropped our leases with the old link (a resumed session starts without any).
    // Files reserved for them stay with a resumed session until it ends (a few per directory).
    this.leases.clear();
    this.pools.clear();
    this.leaseAsked.clear();
    this.leasePending.clear();
    clearInterval(this.outageTimer);
    this.outageTimer = undefined;
    // A restarted server may be another version.
    this.serverMinor = link.welcome.minor;
    const resumed = link.welcome.sessionId === this.sessionId;
    if (!resumed) {
      // The server restarted (or kept our session less long than we were away): what the kernel
      // holds is found again by name, lazily, and requests are sent to the new session's ids.
      this.counters.newSessions++;
      this.sessionId = link.welcome.sessionId;
      this.nodes.newEpoch();
      for (const [id, p] of this.pending) {
        if (p.written) p.crossed = true;
        if (!p.raw) continue;
        this.settle(id, p);
        p.reject(new FsError(Errno.EIO, 'the server restarted'));
      }
    }
    this.log.info(`${this.server}: reconnected (${resumed ? 'session resumed' : 'new server session; re-establishing by path'}); resending ${this.pending.size} requests`);
    // Pushes in flight when the link died are lost: drop everything the kernel may have cached.
    this.cache?.dropAll();
    for (const ev of this.nodes.everything()) void this.emit(ev, false);
    for (const [id, p] of [...this.pending]) {
      p.waitingSince = undefined;
      p.written = false;
      this.counters.resent++;
      void this.transmit(id, p);
    }
    this.drain(link);
  }

  /** The link is gone (not by close()): keep the calls, and start getting a new link. */
  private lost(link: Link, why: string): void {
    if (this.wire !== link) return;
    this.wire = undefined;
    // FORGETs are not resent (ids may mean other nodes after a server restart); a held RELEASE is
    // still pending and goes out again on the next link.
    this.out.clear();
    this.liveness?.stop();
    this.liveness = undefined;
    if (this.state === 'closed') return;
    this.state = 'reconnecting';
    this.counters.disconnects++;
    this.log.warn(`${why}; reconnecting (${this.pending.size} requests waiting)`);
    const now = Date.now();
    for (const p of this.pending.values()) p.waitingSince = now;
    this.startOutageTimer();
    this.reconnector.start();
  }

  /** While there is no link, fails the calls that have waited longer than the outage timeout. */
  private startOutageTimer(): void {
    if (this.outageTimer || !Number.isFinite(this.outageMs)) return;
    this.outageTimer = setInterval(() => {
      const now = Date.now();
      for (const [id, p] of [...this.pending]) {
        if (p.waitingSince === undefined || now - p.waitingSince < this.outageMs) continue;
        this.settle(id, p);
        this.counters.timedOut++;
        this.counters.errors++;
        p.reject(new FsError(Errno.EIO, `${this.server} unreachable for ${this.outageMs / 1000} s`));
      }
    }, Math.min(250, Math.max(10, this.outageMs / 4)));
    this.outageTimer.unref();
  }

  private ping(): void {
    if (!this.wire) return;
    this.call('ping', {}, undefined, true).catch(() => {});
  }

  // --- the request table -----------------------------------------------------------------------

  private drain(link: Link): void {
    try {
      for (let frame = link.splitter.next(); frame && this.wire === link; frame = link.splitter.next()) this.onFrame(frame);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.log.warn(`${this.server}: protocol error, closing the connection: ${err.message}`);
      link.socket.destroy();
    }
  }

  private onFrame(frame: Buffer): void {
    const r = new Reader(frame);
    const h = decodeHeader(r);
    if (h.flags & FLAG_PUSH) {
      if (h.op === OPS.recall.code) {
        this.recalled(decodeReq(r, 'recall').nodeid, h.id);
        return;
      }
      if (h.op !== OPS.change.code) return; // a push from a newer server: not for us
      const { event } = decodeReq(r, 'change');
      this.counters.pushes++;
      const acting = this.emit(event, true);
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
    this.settle(h.id, p);
    if (status === 0) p.resolve(rep);
    else if (p.crossed && DONE_BEFORE[p.op] === status) p.reject(new CrossedRestart(status));
    else {
      this.counters.errors++;
      p.reject(new FsError(status));
    }
  }

  /** Tells the listeners; returns what they are still doing (the FUSE notify), for CHANGE_ACK. */
  private emit(event: ChangeEvent, fromServer: boolean): Promise<void>[] {
    const ev = fromServer ? this.nodes.change(event) : event;
    if (ev?.kind === 'inode' && !ev.attrsOnly) this.cache?.drop(ev.nodeid);
    else if (ev?.kind === 'delete') this.cache?.drop(ev.child);
    return ev ? this.listeners.emit(ev) : [];
  }

  private allocId(): number {
    // u32 ids, skipping 0 (HELLO and pushes) and any still pending after a wrap.
    do {
      this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    } while (this.pending.has(this.nextId));
    return this.nextId;
  }

  /** Takes request p out of the table (answered, failed or given up). */
  private settle(id: number, p: Pending): void {
    this.pending.delete(id);
    p.done();
    if (p.seq !== 0 && this.seqs.delete(p.seq)) {
      for (const w of this.seqWaiters.splice(0)) w();
    }
  }

  private isClosed(): boolean {
    return this.state === 'closed';
  }

  /** Whether a new seq would put the oldest outstanding one SEQ_WINDOW behind (the server forgets it). */
  private windowFull(): boolean {
    const oldest = this.seqs.values().next();
    return !oldest.done && seqDistance(this.nextSeq, oldest.value) >= SEQ_WINDOW;
  }

  /**
   * Sends one request and waits for its reply. Rejects with FsError: EIO when the server stayed out
   * of reach longer than the outage timeout or the client is closed. `raw` requests are already in
   * the current session's ids.
   */
  private async call<N extends CallOp>(op: N, req: Req<N>, ctx?: Ctx, raw = false, ordered = true, hold = !ordered): Promise<Rep<N>> {
    if (this.state === 'closed') throw new FsError(Errno.EIO, `not connected to ${this.server}`);
    if (ordered && this.behindAll.size && !raw) {
      const before = this.behindOf(op, req as Record<string, unknown>);
      if (before) {
        // Unlinks sent behind wait in the outbox for company: now someone waits for them.
        this.out.flush();
        await before;
      }
    }
    const cancel = ctx && cancelOf(ctx);
    if (cancel?.aborted) throw new FsError(Errno.EINTR);
    let seq = 0;
    if (!OPS[op].idempotent) {
      // Every outstanding seq stays within the server's reply window (see wire/seq.ts).
      while (this.windowFull() && !this.isClosed()) await new Promise<void>((resolve) => this.seqWaiters.push(resolve));
      if (this.isClosed()) throw new FsError(Errno.EIO, `not connected to ${this.server}`);
      seq = this.nextSeq;
      this.nextSeq = nextSeq(seq);
      this.seqs.add(seq);
    }
    const id = this.allocId();
    return new Promise<Rep<N>>((resolve, reject) => {
      const p: Pending = {
        op, req: req as Record<string, unknown>, seq, raw, hold, written: false, crossed: false, waitingSince: this.wire ? undefined : Date.now(),
        resolve: resolve as (rep: unknown) => void,
        reject,
        done: () => unhook?.(),
      };
      const onAbort = (): void => {
        if (this.pending.get(id) !== p) return;
        this.settle(id, p);
        reject(new FsError(Errno.EINTR));
        if (this.wire && this.wire.features & FEATURE_CANCEL) this.sendOneway('cancel', { id });
      };
      const unhook = cancel?.onAbort(onAbort);
      this.pending.set(id, p);
      this.byOp.set(op, (this.byOp.get(op) ?? 0) + 1);
      if (this.wire) void this.transmit(id, p);
      else this.startOutageTimer();
    });
  }

  /** Writes request p on the current link, in the current session's ids. */
  private async transmit(id: number, p: Pending): Promise<void> {
    const link = this.wire;
    if (!link) return;
    let req = p.req;
    if (p.op === 'nameReserved' && this.nodes.epoch !== 0) return this.renamed(id, p, link);
    if (!p.raw && this.nodes.epoch !== 0) {
      try {
        req = await this.nodes.outbound(p.op, req);
      } catch (err) {
        // A new link came meanwhile: it resends p itself.
        if (this.wire !== link || this.pending.get(id) !== p) return;
        this.settle(id, p);
        this.counters.errors++;
        p.reject(err instanceof FsError ? err : new FsError(Errno.EIO, (err as Error).message));
        return;
      }
      if (this.wire !== link || this.pending.get(id) !== p) return;
    }
    let frame: Buffer | [Buffer, Buffer];
    try {
      // A big WRITE's data goes out as it is, beside its header, not copied into one frame.
      frame = p.op === 'write' && (req as Req<'write'>).data.length >= WRITE_PARTS_MIN
        ? encodeWriteRequestParts(id, p.seq, req as Req<'write'>)
        : encodeRequestFrame(p.op, id, p.seq, req as Req<typeof p.op>);
    } catch (err) {
      if (!(err instanceof EncodeError)) throw err;
      this.settle(id, p);
      p.reject(new FsError(Errno.EINVAL, `${opLabel(p.op)}: ${err.message}`));
      return;
    }
    const length = Buffer.isBuffer(frame) ? frame.length : frame[0].length + frame[1].length;
    if (length > link.maxFrame) {
      this.settle(id, p);
      p.reject(new FsError(Errno.E2BIG, `${opLabel(p.op)} request of ${length} bytes is over the frame limit`));
      return;
    }
    p.written = true;
    this.put(link, frame, p.op === 'release' || p.op === 'releasedir' || p.hold);
  }

  /**
   * A NAME_RESERVED to send after the server restarted: the file it names died unnamed with the old
   * server, or was named just before. Finding its node again (NodeTable.resolve) makes it by name
   * if need be, and that is the naming's answer.
   */
  private async renamed(id: number, p: Pending, link: Link): Promise<void> {
    try {
      await this.nodes.serverNode((p.req as Req<'nameReserved'>).nodeid);
    } catch (err) {
      if (this.wire !== link || this.pending.get(id) !== p) return; // a newer link resends it
      this.settle(id, p);
      p.reject(err instanceof FsError ? err : new FsError(Errno.EIO, (err as Error).message));
      return;
    }
    if (this.pending.get(id) !== p) return;
    this.settle(id, p);
    p.resolve({ attr: undefined, files: [], parentAttr: undefined });
  }

  /** Queues a frame for the current link; `hold`: no one waits for it. */
  private put(link: Link, frame: Buffer | readonly Buffer[], hold = false): void {
    if (link === this.wire) this.out.push(frame, hold);
  }

  private sendOneway<N extends 'forget' | 'cancel' | 'bye' | 'changeAck'>(op: N, req: Req<N>): void {
    const link = this.wire;
    if (!link) return;
    const frame = encodeRequestFrame(op, 0, 0, req);
    this.put(link, frame, op === 'forget');
  }

  /** Fails every waiting call with EIO: close() only. */
  private failAll(why: string): void {
    for (const [id, p] of [...this.pending]) {
      this.settle(id, p);
      p.reject(new FsError(Errno.EIO, why));
    }
    for (const w of this.seqWaiters.splice(0)) w();
  }

  /** One PING round trip, in milliseconds. */
  async roundTrip(): Promise<number> {
    const t0 = process.hrtime.bigint();
    await this.call('ping', {});
    return Number(process.hrtime.bigint() - t0) / 1e6;
  }

  // --- the Vfs -----------------------------------------------------------------------------------

  info(): FsInfo {
    return { ...this.fsInfo };
  }

  async lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> {
    return this.nodes.entry((await this.call('lookup', { ctx: wireCtx(ctx), parent, name }, ctx)).entry, parent, name);
  }
  forget(nodeid: number, nlookup: number): void {
    if (!(Number.isSafeInteger(nodeid) && nodeid > 0 && Number.isSafeInteger(nlookup) && nlookup > 0)) return;
    const behind = this.behindAll.size ? this.behindBy.get(`n${nodeid}`) : undefined;
    if (behind) {
      // An unlink in it (or of it) is on its way: the server must still know the node when it runs.
      void Promise.all(behind).then(() => this.forget(nodeid, nlookup));
      return;
    }
    this.leasePending.delete(nodeid);
    if (this.leases.delete(nodeid)) this.giveBack(nodeid);
    // A forget is not resent: a lost one leaves the session a lookup too many until it ends.
    // The kernel forgets a node whole, when it evicts it: its id may name another file later.
    this.cache?.forget(nodeid);
    const to = this.nodes.forget(nodeid, nlookup);
    if (to) this.sendOneway('forget', { nodeid: to.id, nlookup: to.n });
  }
  async getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> {
    return (await this.call('getattr', { ctx: wireCtx(ctx), nodeid, fh }, ctx)).attr;
  }
  async setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> {
    const call = this.call('setattr', { ctx: wireCtx(ctx), nodeid, set, fh }, ctx);
    return (await (set.size === undefined ? call : this.changing(nodeid, call))).attr;
  }

  /**
   * A change of a file's data by us: its cached pages go at the start and again at the end, so a
   * read that ran beside it on the server cannot leave pages older than the change.
   */
  private async changing<T>(nodeid: number, work: Promise<T>): Promise<T> {
    if (!this.cache) return work;
    this.cache.drop(nodeid);
    try {
      return await work;
    } finally {
      this.cache.drop(nodeid);
    }
  }
  async readlink(ctx: Ctx, nodeid: number): Promise<string> {
    return (await this.call('readlink', { ctx: wireCtx(ctx), nodeid }, ctx)).target;
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
  /**
   * Subscribes to a file's attributes after a WRITE of ours (1.2), sent by the server when no other
   * write of the file from this session ran beside it: what the file is once that write landed.
   */
  onWriteAttr(listener: (nodeid: number, attr: Attr) => void): () => void {
    this.writeHints.add(listener);
    return () => void this.writeHints.delete(listener);
  }
  private hint(nodeid: number, attr: Attr | undefined): void {
    if (attr) for (const l of this.attrHints) l(nodeid, attr);
  }
  private hinted<R extends { parentAttr: Attr | undefined }>(parent: number, call: Promise<R>): Promise<R> {
    return call.then((rep) => {
      this.hint(parent, rep.parentAttr);
      return rep;
    });
  }

  // A creation or removal that was sent to a server which then crashed may have been done before
  // the crash, with its reply lost; resent to the restarted server it fails with EEXIST or ENOENT.
  // There is no reply cache across a restart, so (as NFSv3 clients do) such a failure of a request
  // that crossed a restart is taken as the first attempt's success: the name is looked up instead.

  async mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> {
    return this.made(ctx, parent, name, this.hinted(parent, this.call('mknod', { ctx: wireCtx(ctx), parent, name, mode, rdev }, ctx)));
  }
  async mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> {
    return this.made(ctx, parent, name, this.hinted(parent, this.call('mkdir', { ctx: wireCtx(ctx), parent, name, mode }, ctx)));
  }
  async symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> {
    return this.made(ctx, parent, name, this.hinted(parent, this.call('symlink', { ctx: wireCtx(ctx), parent, name, target }, ctx)));
  }
  async link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> {
    return this.made(ctx, newparent, newname, this.hinted(newparent, this.call('link', { ctx: wireCtx(ctx), nodeid, newparent, newname }, ctx)));
  }
  private async made(ctx: Ctx, parent: number, name: string, call: Promise<{ entry: Entry }>): Promise<Entry> {
    try {
      return this.nodes.entry((await call).entry, parent, name);
    } catch (err) {
      if (!(err instanceof CrossedRestart)) throw err;
      return this.lookup(ctx, parent, name);
    }
  }
  async unlink(ctx: Ctx, parent: number, name: string): Promise<void> {
    this.lastUnlink = Date.now();
    this.askLease(ctx, parent);
    await this.hinted(parent, this.call('unlink', { ctx: wireCtx(ctx), parent, name }, ctx)).catch(alreadyDone);
    this.nodes.removed(parent, name);
  }

  // --- unlink-behind ---------------------------------------------------------------------------
  //
  // `rm -rf` and cleanup loops pay a round trip per name. A directory no other client holds can be
  // leased (LEASE_DIR); while the lease lasts, the kernel's UNLINK in it is answered here and sent
  // at once without waiting, many in flight. No other client can see the directory before the
  // server has run them: it recalls the lease first, and we answer the recall once every unlink
  // sent in the directory has its reply. Here, a later call that depends on one waits for it:
  // those naming the directory or the removed node, and those naming the same name. Every rmdir,
  // rename and link (they name directories by name, and we cannot tell which) is run by the
  // server after the unlinks sent before it (1.3), so it goes out right behind them.

  /**
   * Asks for a lease on `dir` in the background, at an unlink there or a listing while removing
   * (at most once a second per directory).
   */
  private askLease(ctx: Ctx, dir: number, forCreate = false): void {
    if (this.leaseUnsupported || !this.fsInfo.coherent || this.leases.has(dir) || dir === ROOT_ID) return;
    const now = Date.now();
    const asked = this.leaseAsked.get(dir);
    if (asked !== undefined && now - asked < LEASE_RETRY_MS) return;
    if (this.leaseAsked.size >= MAX_LEASES) this.leaseAsked.clear();
    this.leaseAsked.set(dir, now);
    const ask: Promise<void> = this.call('leaseDir', { ctx: wireCtx(ctx), nodeid: dir }).then((rep) => {
      // A recall or forget of dir, or a new link, since we asked: the answer may be older than
      // the lease's end. (Those of other directories say nothing of this one.)
      const current = this.leasePending.get(dir) === ask;
      if (current) this.leasePending.delete(dir);
      if (!rep.granted || !current || this.leases.size >= MAX_LEASES) return;
      this.leases.set(dir, ctx.uid);
      // Unlinks under the lease come back without the directory's attributes: these stand in.
      this.hint(dir, rep.attr);
      this.behindCounters.leases++;
      if (forCreate) this.refill(ctx, dir);
    }, (err: unknown) => {
      if (this.leasePending.get(dir) === ask) this.leasePending.delete(dir);
      if (err instanceof FsError && err.errno === Errno.ENOSYS) this.leaseUnsupported = true;
    });
    this.leasePending.set(dir, ask);
  }

  /**
   * Settles once the lease on `dir` asked for and not yet answered is answered (undefined: none
   * is asked). Waiting for it costs less than a removal sent alone, which the server runs only
   * after every removal sent before it.
   */
  leaseAnswer(dir: number): Promise<void> | undefined {
    return this.leasePending.get(dir);
  }

  /** A listing answered by the cache above: while removing, it asks for a lease as one from here does. */
  listedHere(ctx: Ctx, dir: number): void {
    if (offsetZeroLease(this.lastUnlink)) this.askLease(ctx, dir);
  }

  /** The node the kernel holds as parent/name (it has it from us), if it holds one. */
  heldNode(parent: number, name: string): number | undefined {
    return this.nodes.idOf(parent, name);
  }
  countLookup(id: number): boolean {
    return this.nodes.lookedUpHere(id);
  }

  /** Whether unlinks in `dir` by `uid` may be answered before the server runs them. */
  leasedFor(dir: number, uid: number): boolean {
    return this.leases.get(dir) === uid && this.state === 'open';
  }

  /**
   * Sends an unlink under a lease without waiting for its reply (the caller answers the kernel):
   * resolves once it has its reply, to undefined or, if it failed, the error. The caller checked
   * leasedFor() and the permission. A node the kernel holds open may go too (git unlinks its
   * index.lock before the kernel's RELEASE of it): every call on the node waits for the reply, so
   * an fstat shows the link count the server gives after it.
   */
  unlinkBehind(ctx: Ctx, parent: number, name: string): Promise<FsError | undefined> | undefined {
    if (!this.leasedFor(parent, ctx.uid)) return undefined;
    this.lastUnlink = Date.now();
    const child = this.nodes.idOf(parent, name);
    return this.removeBehind(ctx, 'unlink', parent, name, child);
  }

  /**
   * Sends the rmdir of directory `child`, named parent/name, without waiting for its reply, as
   * unlinkBehind does: when both directories are leased by ctx's uid (no other session holds
   * either, so none can add to the child or see the name go before the server has run it) and the
   * caller knows the child is empty. The server (1.5) runs it after every UNLINK and RMDIR sent
   * before it, so a tree's rmdirs go out one behind the other, the deepest first.
   */
  rmdirBehind(ctx: Ctx, parent: number, name: string, child: number): Promise<FsError | undefined> | undefined {
    if (this.serverMinor < 5 || !this.leasedFor(parent, ctx.uid) || !this.leasedFor(child, ctx.uid)) return undefined;
    if (this.nodes.idOf(parent, name) !== child || this.nodes.isOpen(child)) return undefined;
    this.behindCounters.rmdirs++;
    return this.removeBehind(ctx, 'rmdir', parent, name, child);
  }

  /**
   * Sends an UNLINK or RMDIR without waiting (no caller to cancel it: the kernel has its answer
   * already); calls naming the directory, the name or the removed node wait for its reply.
   */
  private removeBehind(ctx: Ctx, op: 'unlink' | 'rmdir', parent: number, name: string, child: number | undefined): Promise<FsError | undefined> {
    this.behindCounters.sent++;
    const result = this.hinted(parent, this.call(op, { ctx: wireCtx(ctx), parent, name }, undefined, false, false)).then(
      () => {
        this.nodes.removed(parent, name);
        return undefined;
      },
      (err: unknown) => {
        if (err instanceof CrossedRestart) {
          this.nodes.removed(parent, name);
          return undefined;
        }
        this.behindCounters.failed++;
        return err instanceof FsError ? err : new FsError(Errno.EIO, (err as Error).message);
      });
    const keys = [`n${parent}`, `e${parent}/${name}`];
    if (child !== undefined) keys.push(`n${child}`);
    this.trackBehind(result.then(() => undefined), keys);
    return result;
  }

  /** Counts a change sent behind until its reply: calls naming one of `keys` wait for it (behindOf). */
  private trackBehind(done: Promise<void>, keys: string[]): void {
    this.behindAll.add(done);
    for (const k of keys) {
      let set = this.behindBy.get(k);
      if (!set) this.behindBy.set(k, (set = new Set()));
      set.add(done);
    }
    void done.then(() => {
      this.behindAll.delete(done);
      for (const k of keys) {
        const set = this.behindBy.get(k);
        set?.delete(done);
        if (set?.size === 0) this.behindBy.delete(k);
      }
    });
  }

  /** What a call must wait for among the unlinks sent behind (undefined: nothing). */
  private behindOf(op: CallOp, req: Record<string, unknown>): Promise<unknown> | undefined {
    // The server runs these after every UNLINK sent before them (1.3): they go out right behind.
    if (op === 'rmdir' || op === 'rename' || op === 'link') return undefined;
    const waits: Promise<void>[] = [];
    for (const f of ['nodeid', 'nodeIn', 'nodeOut'] as const) {
      const set = req[f] === undefined ? undefined : this.behindBy.get(`n${req[f] as number}`);
      if (set) waits.push(...set);
    }
    if (req['parent'] !== undefined && req['name'] !== undefined) {
      const set = this.behindBy.get(`e${req['parent'] as number}/${req['name'] as string}`);
      if (set) waits.push(...set);
    }
    return waits.length ? Promise.all(waits) : undefined;
  }

  // --- create-behind (1.4) ---------------------------------------------------------------------
  //
  // A create pays a round trip for what only the server can say: the new file's node id, inode
  // number and handle. In a directory leased to us, files are made there ahead of need, without a
  // name (RESERVE: O_TMPFILE on the server), so those are known before the create comes. The
  // kernel's CREATE is then answered here with one of them, and NAME_RESERVED goes out at once,
  // unanswered yet: the server runs whatever this client sends after it (the file's writes, its
  // attribute changes) once the name is made. The file's id, inode number and handle are final,
  // so nothing the program saw changes later (an fstat's st_ino stays the file's). The writes
  // layer (writeback.ts) waits for the naming at close, as for a write, and reports its failure
  // there. Only where ids need no translation (no server restart seen), and only for the creates
  // whose outcome the client knows: a regular file, no set-ID bits, opened for writing without
  // O_APPEND, O_SYNC or O_DIRECT.

  /** The writes layer answers creates behind (writeback.ts): keep files reserved for it from now on. */
  offerCreateBehind(): void {
    this.createBehindOn = true;
  }

  /**
   * Keeps files reserved in a leased directory where creates happen (see RESERVE_FIRST): asks for
   * more, in one RESERVE, once no more than half of what it wants are ready or on their way.
   */
  private refill(ctx: Ctx, dir: number): void {
    if (!this.createBehindOn || this.reserveUnsupported || this.nodes.epoch !== 0 || !this.leasedFor(dir, ctx.uid)) return;
    let p = this.pools.get(dir);
    if (p) {
      this.pools.delete(dir);
      this.pools.set(dir, p);
    } else {
      this.pools.set(dir, (p = { ready: [], asking: 0, want: RESERVE_FIRST }));
      if (this.pools.size > RESERVE_DIRS) this.giveBack(this.pools.keys().next().value!);
    }
    const have = p.ready.length + p.asking;
    if (have > p.want / 2) return;
    const count = p.want - have;
    p.asking += count;
    const pool = p;
    const c = wireCtx(ctx);
    this.call('reserve', { ctx: c, parent: dir, count }, undefined, false, false, false).then((rep) => {
      pool.asking -= count;
      this.adopt(dir, ctx.uid, pool, rep.files);
    }, (err: unknown) => {
      pool.asking -= count;
      if (err instanceof FsError && (err.errno === Errno.ENOSYS || err.errno === Errno.EOPNOTSUPP)) this.reserveUnsupported = true;
    });
  }

  /** Files reserved in `dir` join its pool, or go back if the pool or the lease is gone meanwhile. */
  private adopt(dir: number, uid: number, pool: Pool, files: Rep<'reserve'>['files']): void {
    const keep = this.pools.get(dir) === pool && this.leasedFor(dir, uid) && this.nodes.epoch === 0;
    for (const f of files) {
      const r: Reserved = { entry: f.entry, fh: f.open.fh };
      if (keep) pool.ready.push(r);
      else this.drop(r);
    }
  }

  /** The directory is no longer ours alone (or others need the room): its reserved files go back. */
  private giveBack(dir: number): void {
    const p = this.pools.get(dir);
    if (!p) return;
    this.pools.delete(dir);
    for (const r of p.ready) this.drop(r);
  }

  /** Gives a reserved file back: its FORGET closes it on the server (1.4), no reply needed. */
  private drop(r: Reserved): void {
    if (this.nodes.epoch !== 0) return; // a restarted server never had it
    this.sendOneway('forget', { nodeid: r.entry.nodeid, nlookup: 1 });
  }

  /**
   * Answers a create with a reserved file and names it behind (see above): the result for the
   * kernel, and the naming's outcome (the file's attributes, or the error). Undefined when the
   * create must go to the server as usual.
   */
  createBehind(ctx: Ctx, parent: number, name: string, mode: number, flags: number): { result: CreateResult; named: Promise<{ attr?: Attr; error?: FsError }> } | undefined {
    if (!this.leasedFor(parent, ctx.uid) || this.nodes.epoch !== 0) return undefined;
    // (The caller checked the open flags: writeback.ts writesBehind.)
    if ((mode & S_IFMT) !== S_IFREG || mode & 0o6000) return undefined;
    // The name still being removed behind, or a node of that name the kernel holds: as usual.
    if (this.nodes.idOf(parent, name) !== undefined || this.behindBy.has(`e${parent}/${name}`)) return undefined;
    const pool = this.pools.get(parent);
    const r = pool?.ready.shift();
    if (!pool || !r) {
      // Creates here outran the files kept ready: keep more.
      if (pool) pool.want = Math.min(pool.want * 2, RESERVE_MOST);
      this.refill(ctx, parent);
      return undefined;
    }
    this.pools.delete(parent);
    this.pools.set(parent, pool);
    // The naming brings back as many new ones as keep the pool full: no RESERVE of its own.
    const more = Math.max(0, pool.want - pool.ready.length - pool.asking);
    pool.asking += more;
    const ms = Date.now();
    const now = { sec: Math.floor(ms / 1000), nsec: (ms % 1000) * 1e6 };
    // What NAME_RESERVED makes of it (the server's answer corrects it if a set-group-ID directory
    // gives another group).
    const attr: Attr = { ...r.entry.attr, mode: S_IFREG | (mode & 0o7777), uid: ctx.uid, gid: ctx.gid, nlink: 1, size: 0, blocks: 0, atime: now, mtime: now, ctime: now };
    const entry = this.nodes.entry({ ...r.entry, attr }, parent, name);
    const fh = this.nodes.handle(r.fh, false, entry.nodeid, flags);
    this.nodes.createdBehind(entry.nodeid, { fh, ctx: wireCtx(ctx), mode, flags });
    this.cache?.drop(entry.nodeid);
    this.createCounters.sent++;
    const named = this.call('nameReserved', { ctx: wireCtx(ctx), parent, name, nodeid: entry.nodeid, fh, mode, more }, undefined, false, false, false).then(
      (rep) => {
        pool.asking -= more;
        this.nodes.named(entry.nodeid);
        this.adopt(parent, ctx.uid, pool, rep.files);
        this.hint(parent, rep.parentAttr);
        // (No attributes when the naming was redone by name after a server restart: see renamed.)
        return (rep.attr as Attr | undefined) ? { attr: rep.attr } : {};
      },
      (err: unknown) => {
        pool.asking -= more;
        this.nodes.named(entry.nodeid);
        this.createCounters.failed++;
        this.nodes.removed(parent, name);
        return { error: err instanceof FsError ? err : new FsError(Errno.EIO, (err as Error).message) };
      });
    this.trackBehind(named.then(() => undefined), [`n${parent}`, `e${parent}/${name}`]);
    // Out now, not at the end of this turn of the loop: the kernel's next requests (the file's
    // write, its close) keep this loop busy until the close waits, and the server can have named
    // the file (and reserved the next) by then.
    this.out.flush();
    return { result: { fh, entry, named }, named };
  }

  /** RECALL: the lease ends; once every unlink sent in the directory has its reply, we say so. */
  private recalled(dir: number, id: number): void {
    if (this.leases.delete(dir)) this.behindCounters.recalled++;
    this.giveBack(dir);
    this.leasePending.delete(dir);
    this.leaseAsked.set(dir, Date.now());
    const set = this.behindBy.get(`n${dir}`);
    if (set) this.out.flush();
    const ack = (): void => {
      if (id !== 0) this.sendOneway('changeAck', { id });
    };
    if (set) void Promise.all(set).then(ack);
    else ack();
  }
  async rmdir(ctx: Ctx, parent: number, name: string): Promise<void> {
    // The next rmdir here (rm -rf removes a directory's subdirectories one after another) may go behind.
    this.askLease(ctx, parent);
    await this.hinted(parent, this.call('rmdir', { ctx: wireCtx(ctx), parent, name }, ctx)).catch(alreadyDone);
    this.nodes.removed(parent, name);
  }
  async rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    const rep = await this.call('rename', { ctx: wireCtx(ctx), parent, name, newparent, newname, flags }, ctx);
    this.hint(parent, rep.parentAttr);
    this.hint(newparent, rep.newParentAttr);
    this.nodes.renamed(parent, name, newparent, newname, flags);
  }
  async open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> {
    const call = this.call('open', { ctx: wireCtx(ctx), nodeid, flags }, ctx);
    const { open } = await (flags & O_TRUNC ? this.changing(nodeid, call) : call);
    if (open.directIo) this.cache?.bypass(nodeid);
    return { ...open, fh: this.nodes.handle(open.fh, false, nodeid, flags) };
  }
  async create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> {
    // Creates here may go behind from now on (see createBehind).
    if (this.createBehindOn && !this.reserveUnsupported) {
      if (this.leasedFor(parent, ctx.uid)) this.refill(ctx, parent);
      else this.askLease(ctx, parent, true);
    }
    let rep: Rep<'create'>;
    try {
      rep = await this.call('create', { ctx: wireCtx(ctx), parent, name, mode, flags }, ctx);
    } catch (err) {
      if (!(err instanceof CrossedRestart)) throw err;
      const entry = await this.lookup(ctx, parent, name);
      return { ...(await this.open(ctx, entry.nodeid, flags & ~(O_CREAT | O_EXCL | O_TRUNC))), entry };
    }
    this.hint(parent, rep.parentAttr);
    const entry = this.nodes.entry(rep.entry, parent, name);
    if (rep.open.directIo) this.cache?.bypass(entry.nodeid);
    else this.cache?.drop(entry.nodeid);
    return { ...rep.open, fh: this.nodes.handle(rep.open.fh, false, entry.nodeid, flags), entry };
  }

  /**
   * Reads larger than a frame are split into pieces, at most piecesInFlight of them on the wire at
   * once (so one huge read neither floods the server nor starves other callers), and joined up to
   * the first short one.
   */
  async read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    const cache = this.cache;
    if (!cache) return this.readRemote(ctx, nodeid, fh, offset, size);
    const kept = await cache.get(nodeid, offset, size);
    if (kept) return kept;
    const token = cache.begin(nodeid);
    try {
      const data = await this.readRemote(ctx, nodeid, fh, offset, size);
      cache.put(token, offset, size, data);
      return data;
    } finally {
      cache.end(token);
    }
  }

  private async readRemote(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> {
    const piece = this.maxFrame - READ_OVERHEAD;
    const one = async (off: number, n: number): Promise<Buffer> =>
      (await this.call('read', { ctx: wireCtx(ctx), nodeid, fh, offset: off, size: n }, ctx)).data;
    if (size <= piece) return one(offset, size);
    const parts = await bounded(Math.ceil(size / piece), this.piecesInFlight, (i) =>
      one(offset + i * piece, Math.min(piece, size - i * piece)));
    const kept: Buffer[] = [];
    for (const [i, p] of parts.entries()) {
      kept.push(p);
      if (p.length < Math.min(piece, size - i * piece)) break;
    }
    return Buffer.concat(kept);
  }

  /** Writes larger than a frame are split likewise; the count stops at the first short piece. */
  async write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    return this.changing(nodeid, this.writeRemote(ctx, nodeid, fh, offset, data));
  }

  private async writeRemote(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> {
    const piece = this.maxFrame - WRITE_OVERHEAD;
    const one = async (off: number, d: Buffer): Promise<number> =>
      (await this.call('write', { ctx: wireCtx(ctx), nodeid, fh, offset: off, data: d }, ctx)).count;
    if (data.length <= piece) {
      const rep = await this.call('write', { ctx: wireCtx(ctx), nodeid, fh, offset, data }, ctx);
      if (rep.attr) for (const l of this.writeHints) l(nodeid, rep.attr);
      return rep.count;
    }
    const counts = await bounded(Math.ceil(data.length / piece), this.piecesInFlight, (i) =>
      one(offset + i * piece, data.subarray(i * piece, (i + 1) * piece)));
    let total = 0;
    for (const [i, n] of counts.entries()) {
      total += n;
      if (n < Math.min(piece, data.length - i * piece)) break;
    }
    return total;
  }

  async flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    await this.call('flush', { ctx: wireCtx(ctx), nodeid, fh }, ctx);
  }
  async fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.call('fsync', { ctx: wireCtx(ctx), nodeid, fh, datasync }, ctx);
  }
  async release(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    // A handle the restarted server never saw needs no round trip: there is nothing to release.
    if (!this.nodes.unbound(fh, false)) await this.call('release', { ctx: wireCtx(ctx), nodeid, fh }, ctx).finally(() => this.nodes.released(fh, false));
    this.nodes.released(fh, false);
  }
  async opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> {
    const { open } = await this.call('opendir', { ctx: wireCtx(ctx), nodeid }, ctx);
    return { ...open, fh: this.nodes.handle(open.fh, true, nodeid, 0) };
  }
  async readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    if (offset === 0 && offsetZeroLease(this.lastUnlink)) this.askLease(ctx, nodeid);
    const rep = await this.call('readdir', { ctx: wireCtx(ctx), nodeid, fh, offset, maxEntries, plus }, ctx);
    const list = this.nodes.entries(rep.entries, nodeid);
    return rep.eof ? markEnded(list) : list;
  }
  /**
   * OPENDIR and the first READDIR in one round trip (1.3): the entries, and the handle to go on
   * with (undefined when they end the listing: the server released it). Undefined when the server
   * does not know LISTDIR (the caller opens and reads as before).
   */
  async listdir(ctx: Ctx, nodeid: number, maxEntries: number, plus: boolean): Promise<{ fh: number | undefined; list: DirEntry[] } | undefined> {
    if (this.listdirUnsupported) return undefined;
    if (offsetZeroLease(this.lastUnlink)) this.askLease(ctx, nodeid);
    let rep: Rep<'listdir'>;
    try {
      rep = await this.call('listdir', { ctx: wireCtx(ctx), nodeid, maxEntries, plus }, ctx);
    } catch (err) {
      if (!(err instanceof FsError && err.errno === Errno.ENOSYS)) throw err;
      this.listdirUnsupported = true;
      return undefined;
    }
    const list = this.nodes.entries(rep.entries, nodeid);
    if (!rep.kept) return { fh: undefined, list: rep.eof ? markEnded(list) : list };
    return { fh: this.nodes.handle(rep.fh, true, nodeid, 0), list: rep.eof ? markEnded(list) : list };
  }
  async fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> {
    await this.call('fsyncdir', { ctx: wireCtx(ctx), nodeid, fh, datasync }, ctx);
  }
  async releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> {
    if (!this.nodes.unbound(fh, true)) await this.call('releasedir', { ctx: wireCtx(ctx), nodeid, fh }, ctx).finally(() => this.nodes.released(fh, true));
    this.nodes.released(fh, true);
  }
  /** Asks a STATFS of the root in the background, so that one is kept for an outage (see statfs). */
  keepStatfs(): void {
    void this.statfs(SERVER_CTX, ROOT_ID).catch(() => undefined);
  }
  async statfs(ctx: Ctx, nodeid: number): Promise<StatFs> {
    // While the server cannot be reached, the last answer for the node (or the root's): umount(8)
    // asks a STATFS of the mount point before it unmounts, and would wait out the outage.
    const kept = this.state === 'reconnecting' ? this.statfsKept.get(nodeid) ?? this.statfsKept.get(ROOT_ID) : undefined;
    if (kept) return { ...kept };
    const { statfs } = await this.call('statfs', { ctx: wireCtx(ctx), nodeid }, ctx);
    if (this.statfsKept.size >= MAX_STATFS_KEPT && !this.statfsKept.has(nodeid)) this.statfsKept.clear();
    this.statfsKept.set(nodeid, statfs);
    return statfs;
  }
  async setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> {
    await this.call('setxattr', { ctx: wireCtx(ctx), nodeid, name, value, flags }, ctx);
  }
  async getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> {
    return (await this.call('getxattr', { ctx: wireCtx(ctx), nodeid, name }, ctx)).value;
  }
  async listxattr(ctx: Ctx, nodeid: number): Promise<string[]> {
    return (await this.call('listxattr', { ctx: wireCtx(ctx), nodeid }, ctx)).names;
  }
  async removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> {
    await this.call('removexattr', { ctx: wireCtx(ctx), nodeid, name }, ctx);
  }
  async access(ctx: Ctx, nodeid: number, mask: number): Promise<void> {
    await this.call('access', { ctx: wireCtx(ctx), nodeid, mask }, ctx);
  }
  async fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    await this.changing(nodeid, this.call('fallocate', { ctx: wireCtx(ctx), nodeid, fh, mode, offset, length }, ctx));
  }
  async lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> {
    return (await this.call('lseek', { ctx: wireCtx(ctx), nodeid, fh, offset, whence }, ctx)).offset;
  }
  async copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return (await this.changing(nodeOut, this.call('copyFileRange', { ctx: wireCtx(ctx), nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len }, ctx))).count;
  }

  /** Pushed CHANGE events from the server: other clients' changes and the source's own. */
  watch(listener: ChangeListener): () => void {
    return this.listeners.add(listener);
  }

  /** Ends the session: the server releases what this client held. Pending calls fail with EIO. */
  async close(): Promise<void> {
    if (this.state === 'open' && this.behindAll.size) {
      // Unlinks the kernel was told are done reach the server before we leave (a BYE ends the
      // session at once, and with it whatever is still running there).
      this.out.flush();
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([Promise.all(this.behindAll), new Promise((r) => (timer = setTimeout(r, CLOSE_DRAIN_MS)))]);
      clearTimeout(timer);
    }
    if (this.state !== 'closed') {
      this.state = 'closed';
      this.reconnector.stop();
      clearInterval(this.outageTimer);
      this.liveness?.stop();
      const link = this.wire;
      this.sendOneway('bye', {});
      this.out.flush();
      this.wire = undefined;
      link?.socket.end();
      // A peer that does not finish the close politely still lets us go.
      link?.socket.setTimeout(2000, () => link.socket.destroy());
      this.failAll(`connection to ${this.server} closed by the client`);
      this.cache?.close();
      this.markClosed();
    }
    await this.closed;
  }
}
