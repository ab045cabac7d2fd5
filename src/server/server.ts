// The wirefs server: exposes one Vfs to many clients over TCP. One Session per connection; each
// request is its own async task answered exactly once, in any order. A session records the lookups
// and open handles it handed out, so a client that goes away leaves nothing held on the source, and
// so the server knows whose kernel caches what: changes are pushed to exactly those clients.

import net from 'node:net';
import { Reader, ProtocolError } from '../lib/bytes.js';
import { Errno, toErrno } from '../lib/errno.js';
import { logger, type Logger } from '../lib/log.js';
import { ROOT_ID, type ChangeEvent, type Ctx, type DirEntry, type Entry, type Vfs } from '../vfs/types.js';
import {
  DEFAULT_MAX_FRAME, Flag, HEADER_SIZE, MIN_MAX_FRAME, OP_HELLO, OPS_BY_NUMBER, OUR_FEATURES, VERSION_MAJOR, VERSION_MINOR,
  decodeHello, decodeRequest, encodeEvent, encodeRefusal, encodeReply, encodeWelcome, readHeader, type OpSpec,
} from '../wire/protocol.js';
import { FrameSplitter } from '../wire/framing.js';

export interface ServerOptions {
  vfs: Vfs;
  host?: string;
  port: number;
  log?: Logger;
  /** Requests of one connection running at once; reading pauses beyond it. Default 128. */
  maxInFlight?: number;
  /** A connection that has not said HELLO within this time is closed. Default 10 s. */
  helloTimeoutMs?: number;
}

export interface ServerStats {
  sessions: number;
  requests: number;
  errors: number;
  pushes: number;
  protocolErrors: number;
}

export interface WireServer {
  address(): { host: string; port: number };
  close(): Promise<void>;
  stats(): ServerStats;
}

/** What a method of the Vfs looks like to the generic dispatcher. */
type VfsMethod = (ctx: Ctx, ...args: unknown[]) => Promise<unknown>;

export async function startServer(opts: ServerOptions): Promise<WireServer> {
  const log = opts.log ?? logger('server');
  const sessions = new Set<Session>();
  const stats: ServerStats = { sessions: 0, requests: 0, errors: 0, pushes: 0, protocolErrors: 0 };
  let nextSession = 1n;

  const server = net.createServer((sock) => {
    const s = new Session(sock, opts, log, stats, sessions, nextSession++);
    sessions.add(s);
    stats.sessions = sessions.size;
    sock.on('close', () => {
      sessions.delete(s);
      stats.sessions = sessions.size;
      s.end();
    });
  });
  // Changes made by the source itself (a local process on the server host) go to every holder.
  const unwatch = opts.vfs.watch((ev) => {
    for (const s of sessions) s.push(ev);
  });

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host ?? '0.0.0.0', () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: NodeJS.ErrnoException) => {
    unwatch();
    const where = `${opts.host ?? '0.0.0.0'}:${opts.port}`;
    if (err.code === 'EADDRINUSE') throw new Error(`cannot listen on ${where}: the port is in use`);
    if (err.code === 'EADDRNOTAVAIL') throw new Error(`cannot listen on ${where}: no such local address`);
    if (err.code === 'EACCES') throw new Error(`cannot listen on ${where}: permission denied`);
    throw new Error(`cannot listen on ${where}: ${err.message}`);
  });
  server.on('error', (err) => log.error(`listener: ${err.message}`));

  return {
    address: () => {
      const a = server.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    },
    stats: () => ({ ...stats }),
    close: async () => {
      unwatch();
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      for (const s of sessions) s.destroy();
      await closed;
    },
  };
}

class Session {
  private readonly splitter = new FrameSplitter(MIN_MAX_FRAME);
  private hello = false;
  private inFlight = 0;
  private paused = false;
  private ended = false;
  private readonly peer: string;
  /** Lookups this client's kernel holds, per node id. Root is held by everyone and never counted. */
  private readonly lookups = new Map<number, number>();
  /** Open handles: fh -> [nodeid, is directory]. */
  private readonly handles = new Map<number, [number, boolean]>();
  private readonly aborts = new Set<AbortController>();
  private readonly helloTimer: NodeJS.Timeout;
  private readonly maxInFlight: number;

  constructor(
    private readonly sock: net.Socket,
    private readonly opts: ServerOptions,
    private readonly log: Logger,
    private readonly stats: ServerStats,
    private readonly all: Set<Session>,
    private readonly id: bigint,
  ) {
    this.peer = `${sock.remoteAddress}:${sock.remotePort}`;
    this.maxInFlight = opts.maxInFlight ?? 128;
    sock.setNoDelay(true);
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (err) => this.log.debug(`${this.peer}: ${err.message}`));
    sock.on('drain', () => this.maybeResume());
    this.helloTimer = setTimeout(() => {
      this.log.warn(`${this.peer}: no HELLO within the time limit; closing`);
      this.destroy();
    }, opts.helloTimeoutMs ?? 10000);
    this.helloTimer.unref();
  }

  holds(nodeid: number): boolean {
    return nodeid === ROOT_ID || this.lookups.has(nodeid);
  }

  /** Sends a change event if this client may have cached what it concerns. */
  push(ev: ChangeEvent): void {
    if (!this.hello || this.ended) return;
    const node = ev.kind === 'inode' ? ev.nodeid : ev.parent;
    if (!this.holds(node)) return;
    this.stats.pushes++;
    this.sock.write(encodeEvent(ev));
  }

  destroy(): void {
    this.sock.destroy();
  }

  /** The connection is gone: give back every lookup and handle this client held. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    clearTimeout(this.helloTimer);
    for (const ac of this.aborts) ac.abort();
    const vfs = this.opts.vfs;
    const ctx: Ctx = { uid: 0, gid: 0, pid: 0 };
    for (const [fh, [nodeid, dir]] of this.handles) {
      const p = dir ? vfs.releasedir(ctx, nodeid, fh) : vfs.release(ctx, nodeid, fh);
      p.catch((err: unknown) => this.log.debug(`releasing fh ${fh} of a closed session: ${String(err)}`));
    }
    this.handles.clear();
    for (const [nodeid, n] of this.lookups) vfs.forget(nodeid, n);
    this.lookups.clear();
    this.log.debug(`${this.peer}: session ${this.id} ended`);
  }

  private onData(data: Buffer): void {
    let frames: Buffer[];
    try {
      frames = this.splitter.push(data);
    } catch (err) {
      return this.protocolError(err);
    }
    for (const f of frames) {
      try {
        this.onFrame(f);
      } catch (err) {
        return this.protocolError(err);
      }
    }
  }

  private protocolError(err: unknown): void {
    this.stats.protocolErrors++;
    const msg = err instanceof ProtocolError ? err.message : `internal error: ${String(err)}`;
    const what = this.hello ? msg : `${msg} (first bytes: ${JSON.stringify(this.splitter.preview().toString('latin1').slice(0, 40))})`;
    this.log.warn(`${this.peer}: protocol error, closing the connection: ${what}`);
    this.destroy();
  }

  private onFrame(frame: Buffer): void {
    const h = readHeader(frame);
    const body = new Reader(frame, HEADER_SIZE);
    if (h.flags & (Flag.REPLY | Flag.PUSH)) throw new ProtocolError(`unexpected frame flags 0x${h.flags.toString(16)}`);
    if (!this.hello) {
      if (h.op !== OP_HELLO) throw new ProtocolError(`op ${h.op} before HELLO`);
      return this.onHello(body);
    }
    const spec = OPS_BY_NUMBER.get(h.op);
    if (!spec) {
      // Unknown op from a newer client: refuse that request, keep the connection.
      this.sock.write(encodeReply({ op: h.op, name: '?', args: [], result: 'void', idempotent: true }, h.id, Errno.ENOSYS));
      return;
    }
    const { ctx, args } = decodeRequest(spec, body);
    this.stats.requests++;
    if (spec.noReply) {
      this.forget(args[0] as number, args[1] as number);
      return;
    }
    this.inFlight++;
    if (this.inFlight >= this.maxInFlight && !this.paused) {
      this.paused = true;
      this.sock.pause();
    }
    void this.run(spec, h.id, ctx, args);
  }

  private onHello(body: Reader): void {
    clearTimeout(this.helloTimer);
    const hello = decodeHello(body);
    if (hello.major !== VERSION_MAJOR) {
      this.sock.end(encodeRefusal(Errno.EPROTO, `server speaks wirefs protocol ${VERSION_MAJOR}.${VERSION_MINOR}, client ${hello.major}.${hello.minor}`));
      this.log.warn(`${this.peer}: refused client speaking protocol ${hello.major}.${hello.minor}`);
      return;
    }
    const maxFrame = Math.max(MIN_MAX_FRAME, Math.min(hello.maxFrame, DEFAULT_MAX_FRAME));
    this.splitter.maxFrame = maxFrame;
    const info = this.opts.vfs.info();
    this.hello = true;
    this.sock.write(encodeWelcome({
      major: VERSION_MAJOR, minor: VERSION_MINOR, features: hello.features & OUR_FEATURES, maxFrame,
      fsType: info.type, readOnly: info.readOnly, session: this.id,
    }));
    this.log.debug(`${this.peer}: session ${this.id} for "${hello.name}"`);
  }

  private async run(spec: OpSpec, id: number, wctx: { uid: number; gid: number; pid: number }, args: unknown[]): Promise<void> {
    const ac = new AbortController();
    this.aborts.add(ac);
    const ctx: Ctx = { ...wctx, signal: ac.signal };
    let frame: Buffer;
    try {
      const method = (this.opts.vfs as unknown as Record<string, VfsMethod>)[spec.name]!;
      // getattr and setattr carry fh 0 for "no open file" (handles start at 1)
      if ((spec.name === 'getattr' && args[1] === 0) || (spec.name === 'setattr' && args[2] === 0)) args = args.slice(0, -1);
      const result = await method.call(this.opts.vfs, ctx, ...args);
      if (this.ended) {
        this.undo(spec, result);
        return;
      }
      this.track(spec, args, result);
      this.announce(spec, args);
      frame = encodeReply(spec, id, 0, result);
    } catch (err) {
      this.stats.errors++;
      const errno = toErrno(err, `server ${spec.name}`);
      frame = encodeReply(spec, id, errno);
    } finally {
      this.aborts.delete(ac);
      this.inFlight--;
    }
    if (this.ended) return;
    this.sock.write(frame);
    this.maybeResume();
  }

  private maybeResume(): void {
    if (this.paused && this.inFlight < this.maxInFlight / 2 && this.sock.writableLength < DEFAULT_MAX_FRAME) {
      this.paused = false;
      this.sock.resume();
    }
  }

  private forget(nodeid: number, n: number): void {
    const held = this.lookups.get(nodeid) ?? 0;
    // Never forget more than this client was given: the source's counts belong to every client.
    const k = Math.min(held, n);
    if (k <= 0) return;
    if (held === k) this.lookups.delete(nodeid);
    else this.lookups.set(nodeid, held - k);
    this.opts.vfs.forget(nodeid, k);
  }

  private countLookup(e: Entry): void {
    if (e.nodeid === 0) return;
    this.lookups.set(e.nodeid, (this.lookups.get(e.nodeid) ?? 0) + 1);
  }

  /** Records what the reply hands the client: lookups and handles. */
  private track(spec: OpSpec, args: unknown[], result: unknown): void {
    switch (spec.result) {
      case 'entry':
        this.countLookup(result as Entry);
        break;
      case 'create': {
        const c = result as { entry: Entry; fh: number };
        this.countLookup(c.entry);
        this.handles.set(c.fh, [c.entry.nodeid, false]);
        break;
      }
      case 'open':
        this.handles.set((result as { fh: number }).fh, [args[0] as number, spec.name === 'opendir']);
        break;
      case 'dirents':
        for (const d of result as DirEntry[]) if (d.entry) this.countLookup(d.entry);
        break;
    }
    if (spec.name === 'release' || spec.name === 'releasedir') this.handles.delete(args[1] as number);
  }

  /** The client went away while the call ran: give back what the result would have handed it. */
  private undo(spec: OpSpec, result: unknown): void {
    const vfs = this.opts.vfs;
    const ctx: Ctx = { uid: 0, gid: 0, pid: 0 };
    const drop = (e: Entry | undefined): void => {
      if (e && e.nodeid) vfs.forget(e.nodeid, 1);
    };
    if (spec.result === 'entry') drop(result as Entry);
    if (spec.result === 'dirents') for (const d of result as DirEntry[]) drop(d.entry);
    if (spec.result === 'create') {
      const c = result as { entry: Entry; fh: number };
      void vfs.release(ctx, c.entry.nodeid, c.fh).catch(() => {});
      drop(c.entry);
    }
    if (spec.result === 'open') {
      const fh = (result as { fh: number }).fh;
      void (spec.name === 'opendir' ? vfs.releasedir(ctx, 0, fh) : vfs.release(ctx, 0, fh)).catch(() => {});
    }
  }

  /**
   * Tells every OTHER client that holds the affected nodes what this successful call changed,
   * before the reply goes out on this connection.
   */
  private announce(spec: OpSpec, args: unknown[]): void {
    const events = changesOf(spec.name, args);
    if (!events.length) return;
    for (const s of this.all) {
      if (s === this) continue;
      for (const ev of events) s.push(ev);
    }
  }
}

const whole = (nodeid: number): ChangeEvent => ({ kind: 'inode', nodeid, off: 0, len: 0 });

/** The cache invalidations a successful modifying call implies for other clients. */
export function changesOf(name: string, args: unknown[]): ChangeEvent[] {
  const n = (i: number): number => args[i] as number;
  const entry = (p: number, nm: number): ChangeEvent => ({ kind: 'entry', parent: n(p), name: args[nm] as string });
  switch (name) {
    case 'write':
      return [{ kind: 'inode', nodeid: n(0), off: n(2), len: (args[3] as Buffer).length }];
    case 'setattr':
    case 'fallocate':
    case 'setxattr':
    case 'removexattr':
      return [whole(n(0))];
    case 'copyFileRange':
      return [whole(n(3))];
    case 'mknod':
    case 'mkdir':
    case 'symlink':
    case 'create':
    case 'unlink':
    case 'rmdir':
      return [entry(0, 1), whole(n(0))];
    case 'link':
      return [entry(1, 2), whole(n(1)), whole(n(0))];
    case 'rename':
      return [entry(0, 1), entry(2, 3), whole(n(0)), ...(n(2) !== n(0) ? [whole(n(2))] : [])];
    case 'open':
      // O_TRUNC on open changes the file
      return n(1) & 0o1000 ? [whole(n(0))] : [];
    default:
      return [];
  }
}
