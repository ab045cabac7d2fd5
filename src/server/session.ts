// One client connection on the server: the HELLO exchange, then concurrent dispatch of requests to
// the shared Vfs (each its own task, answered exactly once, in any order), with a bounded number in
// flight and socket backpressure honoured. The session records the lookups and open handles it hands
// out; when it ends it gives them all back to the Vfs, so one source can serve many clients safely.
// A session outlives its connection: when the socket goes, the session waits (registry.ts) for its
// client to come back with a HELLO naming it; the new connection's Session then adopts what the old
// one held, and retried non-idempotent requests are answered from the reply cache (reply-cache.ts).

import type net from 'node:net';
import { randomBytes } from 'node:crypto';
import { ProtocolError, Reader } from '../lib/bytes.js';
import { Errno, FsError, errnoName, toErrno } from '../lib/errno.js';
import type { Logger } from '../lib/log.js';
import { ROOT_ID, S_IFDIR, S_IFMT, type Attr, type ChangeEvent, type Ctx, type Entry, type Vfs } from '../vfs/types.js';
import { LazyAbort, RequestCtx } from '../lib/abort.js';
import { EncodeError } from '../wire/codec.js';

import {
  FEATURE_COHERENT, FEATURE_PUSH, FEATURE_PUSH_ACK, FEATURES_V1, FLAG_NOREPLY, FLAG_PUSH, FLAG_REPLY, FrameSplitter, HELLO_MAX_FRAME, MAGIC,
  MIN_MAX_FRAME, VERSION_MAJOR, VERSION_MINOR, WRITE_HEAD, WRITE_PARTS_MIN, decodeHeader, decodeWriteRequestParts, encodeErrorFrame, encodePushFrame, encodeReadReplyParts, encodeReplyFrame,
  quoteForeign, versionMismatch, type Header,
} from '../wire/frame.js';
import { OPS, OP_BY_CODE, decodeReq, opLabel, type OpName, type Rep } from '../wire/ops.js';
import { Outbox, writeFrames } from '../wire/outbox.js';
import { strangerNode } from './export.js';
import { HANDLERS, type SessionApi } from './handlers.js';
import type { SessionRegistry } from './registry.js';
import { ReplyCache, readdress } from './reply-cache.js';

/** What every session shares: the source, the limits, the other sessions, the counters. */
export interface ServerCore {
  readonly vfs: Vfs;
  readonly log: Logger;
  readonly maxFrame: number;
  readonly maxInFlight: number;
  readonly helloTimeoutMs: number;
  /** How long a change's author waits for another client to acknowledge an invalidation. */
  readonly leaseMs: number;
  /** Refuse node ids a session was never handed (export.ts, strangerNode): on when serving with export rules. */
  readonly strictNodes: boolean;
  readonly serverName: string;
  readonly sessions: Set<Session>;
  readonly counters: { requests: number; pushes: number; protocolErrors: number; connections: number; leaseExpiries: number; replayed: number; recalls: number };
  /** Sessions by id, and the ones waiting for their client to reconnect. */
  readonly registry: SessionRegistry<Session>;
  /**
   * Sends events to every open session that knows the nodes, except `from`; resolves once each
   * has acknowledged them (or the lease time has passed for those that did not).
   */
  broadcast(events: ChangeEvent[], from: Session | undefined): Promise<void>;
  /** Directories held alone by one session (LEASE_DIR), and the recall under way of each. */
  readonly dirLeases: Map<number, { owner: Session; recall?: Promise<void> }>;
  /** Whether the server runs a request as the ids it names (no squash or map changes them). */
  identityKept(uid: number, gid: number): boolean;
}

/** Pushes queued beyond this many bytes mean the client no longer reads: drop it rather than grow. */
const PUSH_BACKLOG_LIMIT = 64 * 1024 * 1024;

/** Changes kept for a detached session, replayed when its client is back; beyond this they are dropped. */
const MISSED_LIMIT = 10_000;

/** The identity the server uses for its own cleanup calls (releasing a departed client's handles). */
const SERVER_CTX: Ctx = { uid: 0, gid: 0, pid: 0 };

interface OpenHandle {
  nodeid: number;
  dir: boolean;
  append: boolean;
}

export class Session implements SessionApi {
  readonly vfs: Vfs;
  readonly peer: string;
  /** The client's address, without the port. */
  readonly host: string;
  maxFrame = HELLO_MAX_FRAME;
  sessionId = 0n;
  private features = 0n;
  /** detached: the connection is gone, the client may resume; moved: a new connection adopted it. */
  private state: 'hello' | 'negotiating' | 'open' | 'detached' | 'moved' | 'closed' = 'hello';
  private readonly splitter = new FrameSplitter(HELLO_MAX_FRAME);
  /** Requests running for this connection, by id; seq is nonzero for a non-idempotent one. */
  private readonly running = new Map<number, { ac: LazyAbort; seq: number }>();
  /** UNLINKs running now (see onFrame: RMDIR, RENAME and LINK wait for them). */
  private readonly unlinking = new Set<Promise<void>>();
  /** Files RESERVE made and NAME_RESERVED has not named yet, node id -> fh (RESERVE_HELD_MAX at most). */
  readonly unnamed = new Map<number, number>();
  /** NAME_RESERVEDs running now (see onFrame: every later request waits for them). */
  private readonly naming = new Set<Promise<void>>();
  /** Node id -> its WRITEs running now (see onFrame: SETATTR of times waits for them). */
  private readonly writing = new Map<number, Set<Promise<void>>>();
  private writeBlocked = false;
  /** Replies waiting to be written (see send). */
  private readonly out = new Outbox((frames) => {
    if (this.state !== 'closed' && !this.socket.destroyed && !writeFrames(this.socket, frames)) this.writeBlocked = true;
  });
  /** The source's reads are its own buffers: their replies are sent without a copy (FsInfo.freshReads). */
  private readonly freshReads: boolean;
  private readonly helloTimer: NodeJS.Timeout;
  // What the client holds; shared with the Session that adopts this one on a resume.
  private lookups = new Map<number, number>();
  /** Open handles by fh, files and directories apart: a source may number them independently. */
  private files = new Map<number, OpenHandle>();
  private dirs = new Map<number, OpenHandle>();
  private replies = new ReplyCache();
  private missed: ChangeEvent[] = [];
  /** server.close() is ending this session: release at once, no grace. */
  private closing = false;
  /**
   * Nodes whose whole-inode invalidation this client was sent and that it has not asked about
   * since: its kernel holds nothing of them, so further changes need no push (a writer streaming
   * into a file another client once read costs that client one push, not one per write).
   */
  private readonly dropped = new Set<number>();
  /** Directories this session holds under LEASE_DIR (see core.dirLeases). */
  private readonly leased = new Set<number>();
  /** Pushes awaiting CHANGE_ACK, by push id. */
  private readonly acks = new Map<number, () => void>();
  private nextPushId = 0;
  /** Resolves once the session is over and everything it held has been given back. */
  readonly ended: Promise<void>;
  private markEnded!: () => void;

  constructor(private readonly core: ServerCore, private readonly socket: net.Socket) {
    this.vfs = core.vfs;
    this.freshReads = core.vfs.info().freshReads === true;
    this.peer = `${socket.remoteAddress}:${socket.remotePort}`;
    this.host = socket.remoteAddress ?? '';
    this.ended = new Promise((resolve) => (this.markEnded = resolve));
    socket.setNoDelay(true);
    // A peer that connects and says nothing (a port scanner, a stuck client) does not keep a slot.
    const helloTimer = setTimeout(() => {
      this.core.log.warn(`${this.peer}: no HELLO within ${core.helloTimeoutMs} ms; closing the connection`);
      socket.destroy();
    }, core.helloTimeoutMs);
    helloTimer.unref();
    socket.once('close', () => clearTimeout(helloTimer));
    this.helloTimer = helloTimer;
    socket.on('data', (chunk: Buffer) => {
      this.splitter.push(chunk);
      this.pump();
    });
    socket.on('drain', () => {
      this.writeBlocked = false;
      this.pump();
    });
    socket.on('error', (err) => this.core.log.debug(`${this.peer}: ${err.message}`));
    socket.on('close', () => void this.end());
  }

  get inFlight(): number {
    return this.running.size;
  }

  // --- reading and dispatch --------------------------------------------------------------------

  /** Takes whole frames off the stream while there is capacity; otherwise stops reading the socket. */
  private pump(): void {
    try {
      while (this.state === 'hello' || (this.state === 'open' && this.running.size < this.core.maxInFlight && !this.writeBlocked)) {
        // A big WRITE over several socket chunks is taken as its head and the chunks' own views,
        // written where they lie (pwritev): joining them was a copy of every byte written, a third
        // of this thread's time in a sequential write.
        const got = this.state === 'open' ? this.splitter.nextParts(OPS.write.code, WRITE_HEAD, WRITE_PARTS_MIN) : this.splitter.next();
        if (!got) break;
        if (Buffer.isBuffer(got)) this.onFrame(got);
        else this.onFrame(got.head, got.tail);
      }
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
      this.protocolError(err);
      return;
    }
    if (this.state === 'closed') return;
    const full = this.running.size >= this.core.maxInFlight || this.writeBlocked;
    if (full && !this.socket.isPaused()) this.socket.pause();
    else if (!full && this.socket.isPaused()) this.socket.resume();
  }

  private protocolError(err: ProtocolError): void {
    this.core.counters.protocolErrors++;
    const what = this.state === 'hello' ? ` (not a wirefs client? it sent ${quoteForeign(this.splitter.peek(60))})` : '';
    this.core.log.warn(`${this.peer}: protocol error, closing the connection: ${err.message}${what}`);
    this.socket.destroy();
  }

  /** One request; `tail`: a WRITE's data in pieces, `frame` then being its first WRITE_HEAD bytes. */
  private onFrame(frame: Buffer, tail?: Buffer[]): void {
    const r = new Reader(frame);
    const h = decodeHeader(r);
    if (h.flags & (FLAG_REPLY | FLAG_PUSH)) throw new ProtocolError(`a client sent a frame with flags 0x${h.flags.toString(16)}`);
    if (this.state === 'hello') {
      if (h.op !== OPS.hello.code) throw new ProtocolError(`first frame is op ${h.op}, not HELLO`);
      this.hello(r, h);
      return;
    }
    const op = OP_BY_CODE.get(h.op);
    if (op === undefined) {
      // An op from a newer client: refuse that request, keep the connection.
      if (!(h.flags & FLAG_NOREPLY)) this.send(encodeErrorFrame(h.op, h.id, Errno.ENOSYS));
      return;
    }
    if (op === 'forget') {
      const a = decodeReq(r, 'forget');
      this.forget(a.nodeid, a.nlookup);
      return;
    }
    if (op === 'cancel') {
      this.running.get(decodeReq(r, 'cancel').id)?.ac.abort();
      return;
    }
    if (op === 'bye') {
      this.closing = true;
      this.out.flush();
      this.socket.end();
      return;
    }
    if (op === 'changeAck') {
      const id = decodeReq(r, 'changeAck').id;
      this.acks.get(id)?.();
      return;
    }
    if (op === 'hello' || op === 'change' || op === 'recall') throw new ProtocolError(`unexpected ${opLabel(op)} frame`);
    if (this.running.has(h.id)) throw new ProtocolError(`request id ${h.id} reused while still in flight`);
    if (op === 'ping') {
      this.send(encodeReplyFrame('ping', h.id, {}));
      return;
    }
    // Not the pings: an idle client pings every 5 s, and the memory trim takes any request as work.
    this.core.counters.requests++;
    const args = tail ? decodeWriteRequestParts(r, tail) : decodeReq(r, op);
    // The client asks about these nodes again: from now on its kernel may cache them anew.
    if (this.dropped.size) {
      const a = args as { nodeid?: number; nodeIn?: number; nodeOut?: number };
      for (const id of [a.nodeid, a.nodeIn, a.nodeOut]) if (id !== undefined) this.dropped.delete(id);
    }
    const seq = OPS[op].idempotent ? 0 : h.seq;
    const ac = new LazyAbort();
    if (seq !== 0) {
      const first = this.replies.begin(seq);
      if (first.kind !== 'run') {
        this.retried(h, seq, first);
        return;
      }
    }
    this.running.set(h.id, { ac, seq });
    // A SETATTR of times or size is applied after every WRITE of the node this session sent before
    // it (the protocol's one ordering promise across requests): the client sends it right behind
    // its writes instead of waiting for their replies.
    const a = args as { nodeid: number; set?: { size?: number; atime?: unknown; mtime?: unknown } };
    const after = op === 'setattr' && (a.set!.size !== undefined || a.set!.atime !== undefined || a.set!.mtime !== undefined)
      ? this.writing.get(a.nodeid)
      // 1.3: RMDIR, RENAME and LINK after every UNLINK sent before them (unlinks sent behind, then
      // the rmdir of their directory, go out together).
      : (op === 'rmdir' || op === 'rename' || op === 'link') && this.unlinking.size ? this.unlinking : undefined;
    // 1.4: every request after a NAME_RESERVED (the writes and attribute changes of the file it
    // names, sent right behind it) runs once that is done.
    const waits = this.naming.size ? (after ? [...after, ...this.naming] : [...this.naming]) : after;
    const task = this.run(op, h, args, ac, seq, waits && Promise.all(waits));
    if (op === 'nameReserved') {
      this.naming.add(task);
      void task.finally(() => this.naming.delete(task));
    }
    // 1.5: an RMDIR is ordered like an UNLINK (a client sends the rmdirs of a tree behind, the
    // deepest first, and each must find its directory emptied by those before it).
    if (op === 'unlink' || op === 'rmdir') {
      this.unlinking.add(task);
      void task.finally(() => this.unlinking.delete(task));
    }
    if (op === 'write') {
      let set = this.writing.get(a.nodeid);
      if (!set) this.writing.set(a.nodeid, (set = new Set()));
      const mine = set;
      mine.add(task);
      void task.finally(() => {
        mine.delete(task);
        if (mine.size === 0 && this.writing.get(a.nodeid) === mine) this.writing.delete(a.nodeid);
      });
    }
  }

  /** A retry of a non-idempotent request: answered with its first run's reply, never run twice. */
  private retried(h: Header, seq: number, first: Exclude<ReturnType<ReplyCache['begin']>, { kind: 'run' }>): void {
    this.core.counters.replayed++;
    if (first.kind === 'cached') {
      this.send(readdress(first.frame, h.id));
      return;
    }
    if (first.kind === 'stale') {
      this.core.log.warn(`${this.peer}: request seq ${seq} is behind the reply window; answering EIO`);
      this.send(encodeErrorFrame(h.op, h.id, Errno.EIO));
      return;
    }
    this.running.set(h.id, { ac: new LazyAbort(), seq });
    void first.reply.then((frame) => {
      this.running.delete(h.id);
      this.send(readdress(frame, h.id));
      this.pump();
    });
  }

  /** One request as its own task: always ends in exactly one reply. */
  private async run(op: Exclude<OpName, 'hello' | 'ping' | 'cancel' | 'change' | 'changeAck' | 'forget' | 'bye' | 'recall'>, h: Header, args: object, ac: LazyAbort, seq: number, after?: Promise<unknown>): Promise<void> {
    let frame: Buffer | [Buffer, Buffer];
    try {
      if (after) await after;
      const { ctx: wctx, ...rest } = args as { ctx: Omit<Ctx, 'signal'> };
      // Sources rarely look at the signal: it is made only when one does.
      const ctx: Ctx = new RequestCtx(wctx.uid, wctx.gid, wctx.pid, ac);
      const stranger = this.core.strictNodes ? strangerNode(rest, (id) => this.knows(id)) : undefined;
      if (stranger !== undefined) throw new FsError(Errno.ESTALE, `node ${stranger} was never handed to this client`);
      if (this.core.dirLeases.size) {
        // A node another session holds alone (possible only without export rules, which refuse ids
        // a session was never handed): recalled before this request sees it.
        const a = rest as { nodeid?: number; parent?: number; newparent?: number };
        for (const id of [a.nodeid, a.parent, a.newparent]) if (id !== undefined && this.leasedElsewhere(id)) await this.claim(id);
      }
      const handler = HANDLERS[op] as (s: SessionApi, ctx: Ctx, a: object) => Promise<Rep<typeof op>>;
      const rep = await handler(this, ctx, rest);
      // A READ's data goes out as it came from the source, not copied into a frame (seq is 0: reads
      // are idempotent, so never kept in the reply cache).
      frame = op === 'read' && seq === 0 && this.freshReads ? encodeReadReplyParts(h.id, (rep as Rep<'read'>).data) : encodeReplyFrame(op, h.id, rep);
      if (this.core.log.debugEnabled) this.core.log.debug(`${this.peer} #${h.id} ${opLabel(op)} ok`);
    } catch (err) {
      const errno = err instanceof EncodeError ? toErrno(new Error(`${opLabel(op)} reply: ${err.message}`), 'server')
        : ac.aborted && !(err instanceof FsError) ? Errno.EINTR
        : toErrno(err, `server ${opLabel(op)}`);
      frame = encodeErrorFrame(h.op, h.id, errno);
      if (this.core.log.debugEnabled) this.core.log.debug(`${this.peer} #${h.id} ${opLabel(op)} ${errnoName(errno)}`);
    }
    // Kept for a retry even when this connection is gone: that is what the cache is for.
    if (seq !== 0 && Buffer.isBuffer(frame)) this.replies.finish(seq, frame);
    this.running.delete(h.id);
    // No one waits for a RELEASE's answer (the kernel sends it in the background): it goes out with
    // the next frame, sparing a socket write here and a wake-up in the client.
    this.send(frame, op === 'release' || op === 'releasedir');
    this.pump();
  }

  // --- HELLO -----------------------------------------------------------------------------------

  private hello(r: Reader, h: Header): void {
    const a = decodeReq(r, 'hello');
    if (!a.magic.equals(MAGIC)) throw new ProtocolError('HELLO without the wirefs magic');
    const mismatch = a.major !== VERSION_MAJOR;
    if (a.maxFrame < MIN_MAX_FRAME && !mismatch) throw new ProtocolError(`max frame ${a.maxFrame} is below ${MIN_MAX_FRAME}`);
    this.state = 'negotiating';
    this.maxFrame = Math.min(a.maxFrame, this.core.maxFrame);
    this.features = a.features & FEATURES_V1 & (this.vfs.info().coherent ? ~0n : ~FEATURE_COHERENT);
    // A resume gets the session back if it is still there; otherwise (expired, or the server
    // restarted) a fresh one, and the client sees by the id that its old state is gone.
    // A session id alone is not a credential: only the address it was opened from may resume it
    // (with TLS, the connection has also passed the same authentication).
    const old = a.sessionId !== 0n && !mismatch ? this.core.registry.take(a.sessionId, (s) => s.host === this.host) : undefined;
    if (old) this.adopt(old);
    else this.sessionId = randomBytes(8).readBigUInt64LE() || 1n;
    Promise.resolve()
      .then(() => this.vfs.getattr(SERVER_CTX, ROOT_ID))
      .then((root) => {
        if (this.state !== 'negotiating') return;
        const info = this.vfs.info();
        this.send(encodeReplyFrame('hello', h.id, {
          magic: MAGIC, major: VERSION_MAJOR, minor: VERSION_MINOR, features: this.features, maxFrame: this.maxFrame,
          sessionId: this.sessionId, serverName: this.core.serverName, fsType: info.type, readOnly: info.readOnly, root,
        }));
        if (mismatch) {
          // The reply tells the client our version, so it can say what is wrong; then we part.
          this.core.log.warn(`${this.peer}: ${versionMismatch('client', a.major, a.minor)}; closing the connection`);
          this.out.flush();
          this.socket.end();
          return;
        }
        this.state = 'open';
        clearTimeout(this.helloTimer);
        this.splitter.maxFrame = this.maxFrame;
        this.core.registry.add(this);
        this.core.log.debug(`${this.peer}: session ${this.sessionId.toString(16)} ${old ? 'resumed' : 'open'} (${a.clientName})`);
        // What changed while the client was away, in order, before anything else it will read.
        const missed = this.missed;
        this.missed = [];
        for (const ev of missed) void this.push(ev);
        this.pump();
      })
      .catch((err: unknown) => {
        const errno = toErrno(err, 'server HELLO');
        this.core.log.warn(`${this.peer}: cannot open a session: the root getattr failed with ${errnoName(errno)}`);
        this.send(encodeErrorFrame(h.op, h.id, errno));
        this.out.flush();
        this.socket.end();
      });
  }

  // --- resuming --------------------------------------------------------------------------------

  /** Takes over what `old` holds (lookups, handles, reply cache, missed changes) for this connection. */
  private adopt(old: Session): void {
    old.handOver();
    this.sessionId = old.sessionId;
    this.lookups = old.lookups;
    this.files = old.files;
    this.dirs = old.dirs;
    this.replies = old.replies;
    this.missed = old.missed;
  }

  /**
   * Gives this session to a new connection. If the old connection still looks alive (the client
   * saw it die first: a blackhole, a half-open socket), it is cut now. Idempotent requests still
   * running are aborted (the client resends them); non-idempotent ones run on and leave their reply
   * in the shared reply cache for the retry.
   */
  private handOver(): void {
    if (this.state === 'open' || this.state === 'negotiating') this.detach();
    this.state = 'moved';
    this.core.sessions.delete(this);
    this.core.registry.remove(this);
    this.markEnded();
  }

  private detach(): void {
    this.state = 'detached';
    for (const { ac, seq } of this.running.values()) if (seq === 0) ac.abort();
    // Pushes in flight will not be acknowledged on this connection: the client gets the changes
    // replayed (missed) if it resumes, so their authors need not wait.
    for (const done of [...this.acks.values()]) done();
    this.dropped.clear();
    // A resumed client starts without leases (it drops its own when its link goes).
    for (const id of [...this.leased]) this.unlease(id);
    this.socket.destroy();
  }

  /** The grace period ran out with no resume: give everything back (SessionRegistry calls this). */
  expire(): void {
    void this.release();
  }

  // --- what the client holds -------------------------------------------------------------------

  gotEntry(e: Entry): void {
    if (!e.nodeid) return;
    if (this.state === 'closed') {
      // The client left while this request ran: it will never forget the node, so we do.
      this.vfs.forget(e.nodeid, 1);
      return;
    }
    this.lookups.set(e.nodeid, (this.lookups.get(e.nodeid) ?? 0) + 1);
    this.dropped.delete(e.nodeid);
  }

  /** Forwards a client's forget, never dropping more than this session holds (others share the node). */
  private forget(nodeid: number, n: number): void {
    const held = this.lookups.get(nodeid) ?? 0;
    const drop = Math.min(held, n);
    if (drop <= 0) return;
    if (held === drop) {
      this.lookups.delete(nodeid);
      this.dropped.delete(nodeid);
      if (this.leased.has(nodeid)) this.unlease(nodeid);
      // A reserved file the client gives back unnamed: its handle goes with it (1.4).
      const fh = this.unnamed.get(nodeid);
      if (fh !== undefined) this.dropUnnamed(nodeid, fh);
    } else {
      this.lookups.set(nodeid, held - drop);
    }
    this.safeForget(nodeid, drop);
  }

  private dropUnnamed(nodeid: number, fh: number): void {
    const h = this.files.get(fh);
    this.unnamed.delete(nodeid);
    if (!h) return;
    this.files.delete(fh);
    void this.releaseHandle(fh, h);
  }

  private safeForget(nodeid: number, n: number): void {
    try {
      this.vfs.forget(nodeid, n);
    } catch (err) {
      toErrno(err, 'server forget');
    }
  }

  gotHandle(fh: number, h: OpenHandle): void {
    if (this.state === 'closed') {
      // As for lookups: the client is gone, so the handle it just got is released here (never fails).
      void this.releaseHandle(fh, h);
      return;
    }
    (h.dir ? this.dirs : this.files).set(fh, h);
  }

  handle(fh: number, dir: boolean): OpenHandle {
    const h = (dir ? this.dirs : this.files).get(fh);
    if (!h) throw new FsError(Errno.EBADF);
    return h;
  }

  dropHandle(fh: number, dir: boolean): void {
    const map = dir ? this.dirs : this.files;
    const h = map.get(fh);
    map.delete(fh);
    if (h && !dir && this.unnamed.get(h.nodeid) === fh) this.unnamed.delete(h.nodeid);
  }

  private releaseHandle(fh: number, h: OpenHandle): Promise<void> {
    const done = h.dir ? this.vfs.releasedir(SERVER_CTX, h.nodeid, fh) : this.vfs.release(SERVER_CTX, h.nodeid, fh);
    return Promise.resolve(done).catch((err: unknown) => {
      this.core.log.debug(`${this.peer}: releasing fh ${fh} failed: ${errnoName(toErrno(err, 'server release'))}`);
    });
  }

  // --- coherence -------------------------------------------------------------------------------

  changed(events: ChangeEvent[]): Promise<void> {
    return this.core.broadcast(events, this);
  }

  writesRunning(nodeid: number): number {
    return this.writing.get(nodeid)?.size ?? 0;
  }

  othersListening(): boolean {
    for (const s of this.core.sessions) if (s !== this && s.wantsPushes) return true;
    return false;
  }

  get wantsPushes(): boolean {
    return (this.state === 'open' || this.state === 'detached') && (this.features & FEATURE_PUSH) !== 0n;
  }

  /** Whether this client may have the node (or, for names, the directory) cached. */
  knows(nodeid: number): boolean {
    return nodeid === ROOT_ID || this.lookups.has(nodeid);
  }

  /**
   * LEASE_DIR: grants directory `nodeid` to this session alone when no other session holds it, it
   * is not the root (every session holds that), the source reports every change (COHERENT), and
   * the server runs ctx's requests as ctx's own ids, so the client's kernel checked the permissions
   * the server will check. The client acknowledges pushes (it must answer a RECALL).
   */
  async leaseDir(ctx: Ctx, nodeid: number): Promise<Attr | undefined> {
    const info = this.vfs.info();
    if (nodeid === ROOT_ID || !this.lookups.has(nodeid) || info.readOnly || !info.coherent) return undefined;
    if (!(this.features & FEATURE_PUSH_ACK) || this.state !== 'open' || !this.core.identityKept(ctx.uid, ctx.gid)) return undefined;
    const attr = await this.vfs.getattr(ctx, nodeid);
    if ((attr.mode & S_IFMT) !== S_IFDIR) return undefined;
    const cur = this.core.dirLeases.get(nodeid);
    if (cur) return cur.owner === this && !cur.recall ? attr : undefined;
    for (const s of this.core.sessions) if (s !== this && s.lookups.has(nodeid)) return undefined;
    // Checked again after the await: a lookup by another session may have come in meanwhile.
    if (!this.lookups.has(nodeid) || this.state !== 'open') return undefined;
    this.core.dirLeases.set(nodeid, { owner: this });
    this.leased.add(nodeid);
    return attr;
  }

  holdsLease(nodeid: number): boolean {
    return this.leased.has(nodeid);
  }

  leasedElsewhere(nodeid: number): boolean {
    const lease = this.core.dirLeases.get(nodeid);
    return lease !== undefined && lease.owner !== this;
  }

  private unlease(nodeid: number): void {
    this.leased.delete(nodeid);
    if (this.core.dirLeases.get(nodeid)?.owner === this) this.core.dirLeases.delete(nodeid);
  }

  /**
   * This session is about to see node `nodeid`: if another session holds it under a lease, that
   * client sends what it has not yet sent in it and the lease ends first. Resolves true when it
   * recalled (the caller's view of the node, its attributes, may be older than what it now is).
   */
  async claim(nodeid: number): Promise<boolean> {
    const lease = this.core.dirLeases.get(nodeid);
    if (!lease || lease.owner === this) return false;
    lease.recall ??= lease.owner.recall(nodeid).finally(() => lease.owner.unlease(nodeid));
    await lease.recall;
    return true;
  }

  /** Sends RECALL for a leased directory; resolves on CHANGE_ACK, at the lease time, or when the session ends. */
  private recall(nodeid: number): Promise<void> {
    if (this.state !== 'open') return Promise.resolve();
    this.core.counters.recalls++;
    return this.pushAcked((id) => encodePushFrame('recall', { nodeid }, id), `the recall of directory ${nodeid}`);
  }

  /** Sends a push that asks for CHANGE_ACK; resolves on the ack, after the lease time, or when the session ends. */
  private pushAcked(frame: (id: number) => Buffer, what: string): Promise<void> {
    this.nextPushId = this.nextPushId >= 0xffffffff ? 1 : this.nextPushId + 1;
    const id = this.nextPushId;
    return new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.core.counters.leaseExpiries++;
        this.core.log.debug(`${this.peer}: no CHANGE_ACK for ${what} (${id}) within ${this.core.leaseMs} ms; going on without it`);
        done();
      }, this.core.leaseMs);
      const done = (): void => {
        clearTimeout(timer);
        this.acks.delete(id);
        resolve();
      };
      this.acks.set(id, done);
      this.send(frame(id));
    });
  }

  /** Sends one change; resolves when the client has acted on it, or after the lease time. */
  push(ev: ChangeEvent): Promise<void> {
    if (!this.wantsPushes) return Promise.resolve();
    if (this.state === 'detached') {
      // Replayed when the client is back; nobody waits for a client that is away.
      if (this.missed.length < MISSED_LIMIT) this.missed.push(ev);
      return Promise.resolve();
    }
    if (ev.kind === 'inode' && ev.off < 0) {
      if (this.dropped.has(ev.nodeid)) return Promise.resolve();
      this.dropped.add(ev.nodeid);
    } else if (ev.kind === 'inode' && this.dropped.has(ev.nodeid)) {
      return Promise.resolve();
    }
    if (this.socket.writableLength > PUSH_BACKLOG_LIMIT) {
      this.core.log.warn(`${this.peer}: client does not read its invalidations; closing the connection`);
      this.socket.destroy();
      return Promise.resolve();
    }
    this.core.counters.pushes++;
    if (this.core.log.debugEnabled) this.core.log.debug(`${this.peer} push ${JSON.stringify(ev)}`);
    if (!(this.features & FEATURE_PUSH_ACK)) {
      this.send(encodePushFrame('change', { event: ev }));
      return Promise.resolve();
    }
    return this.pushAcked((id) => encodePushFrame('change', { event: ev }, id), 'a push');
  }

  // --- output and the end ----------------------------------------------------------------------

  /**
   * Queues a frame (see Outbox): replies made together go out in one write, each write costing the
   * client a wake-up; the reply to a RELEASE, which no one waits for, waits for company.
   */
  private send(frame: Buffer | [Buffer, Buffer], hold = false): void {
    if (this.state === 'closed' || this.socket.destroyed) return;
    const length = Buffer.isBuffer(frame) ? frame.length : frame[0].length + frame[1].length;
    if (length > this.maxFrame && this.state === 'open') {
      // A source returned more than fits (a huge xattr, a long list): a bug-shaped failure, EIO.
      const h = decodeHeader(new Reader(Buffer.isBuffer(frame) ? frame : frame[0]));
      this.core.log.warn(`${this.peer}: reply of ${length} bytes to op ${h.op} is over the frame limit; sending EIO`);
      frame = encodeErrorFrame(h.op, h.id, Errno.EIO);
    }
    this.out.push(frame, hold);
  }

  /** Ends the session now, with no grace (the server is shutting down). */
  close(): void {
    this.closing = true;
    if (this.state === 'detached') void this.release();
    else this.socket.destroy();
  }

  /** The connection is gone: an open session waits for its client to resume it, unless closing. */
  private async end(): Promise<void> {
    if (this.state === 'open' && !this.closing && this.core.registry.graceMs > 0) {
      this.detach();
      this.core.registry.detached(this);
      this.core.log.debug(`${this.peer}: connection lost; session ${this.sessionId.toString(16)} kept for ${this.core.registry.graceMs} ms`);
      return;
    }
    if (this.state === 'moved' || this.state === 'detached') return;
    await this.release();
  }

  /** Stops running requests and gives back every lookup and handle. */
  private async release(): Promise<void> {
    if (this.state === 'closed' || this.state === 'moved') return;
    this.state = 'closed';
    this.core.registry.remove(this);
    for (const { ac } of this.running.values()) ac.abort();
    // Nobody is left to acknowledge: let the authors of pending changes go on.
    for (const done of [...this.acks.values()]) done();
    for (const id of [...this.leased]) this.unlease(id);
    const handles = [...this.files, ...this.dirs];
    this.files.clear();
    this.dirs.clear();
    const lookups = [...this.lookups];
    this.lookups.clear();
    // As the kernel does at unmount: handles first, then the lookups that kept their nodes alive.
    await Promise.all(handles.map(([fh, h]) => this.releaseHandle(fh, h)));
    for (const [nodeid, n] of lookups) this.safeForget(nodeid, n);
    this.core.sessions.delete(this);
    this.core.log.debug(`${this.peer}: session ended; gave back ${lookups.length} nodes and ${handles.length} handles`);
    this.markEnded();
  }
}
