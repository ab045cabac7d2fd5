// The wirefs client: RemoteVfs is a Vfs whose every call crosses the network to a server. Many
// requests are in flight at once, each registered under its id before it is written and settled by
// the reply with that id, in any order. Pushed change events reach watch() listeners. When the
// connection is lost, every pending and later call fails with EIO (reconnection is layered on the
// same request table later: requests are kept apart from the socket).

import net from 'node:net';
import { Reader, ProtocolError } from '../lib/bytes.js';
import { Errno, FsError, errnoName } from '../lib/errno.js';
import { logger, type Logger } from '../lib/log.js';
import type {
  Attr, ChangeListener, CreateResult, Ctx, DirEntry, Entry, FsInfo, OpenResult, SetAttr, StatFs, Vfs,
} from '../vfs/types.js';
import {
  DEFAULT_MAX_FRAME, Flag, HEADER_SIZE, MIN_MAX_FRAME, OP_HELLO, OP_PUSH_EVENT, OPS_BY_NAME, OPS_BY_NUMBER, OUR_FEATURES,
  VERSION_MAJOR, VERSION_MINOR, decodeEvent, decodeReply, decodeWelcome, encodeHello, encodeRequest, readHeader,
  type OpName, type OpSpec,
} from '../wire/protocol.js';
import { FrameSplitter } from '../wire/framing.js';

export interface ConnectOptions {
  host: string;
  port: number;
  /** Give up connecting (and waiting for the server's HELLO answer) after this long. Default 5 s. */
  timeoutMs?: number;
  log?: Logger;
  /** Shown in the server's log. */
  name?: string;
}

export interface ClientStats {
  state: 'connected' | 'closed';
  inFlight: number;
  requests: number;
  errors: number;
  pushes: number;
}

interface Pending {
  spec: OpSpec;
  resolve(v: unknown): void;
  reject(e: Error): void;
  onAbort?: () => void;
  signal?: AbortSignal;
}

/** Why a connection attempt failed, as one line fit to print. */
function connectError(where: string, err: NodeJS.ErrnoException): Error {
  const reasons: Record<string, string> = {
    ECONNREFUSED: 'connection refused',
    ENOTFOUND: 'unknown host',
    EAI_AGAIN: 'host name lookup failed',
    EHOSTUNREACH: 'host unreachable',
    ENETUNREACH: 'network unreachable',
    ETIMEDOUT: 'timed out',
    ECONNRESET: 'connection reset by the server',
  };
  return new Error(`cannot connect to ${where}: ${reasons[err.code ?? ''] ?? err.message}`);
}

export async function connect(opts: ConnectOptions): Promise<RemoteVfs> {
  const where = `${opts.host}:${opts.port}`;
  const timeoutMs = opts.timeoutMs ?? 5000;
  const sock = net.connect({ host: opts.host, port: opts.port });
  sock.setNoDelay(true);
  const splitter = new FrameSplitter(MIN_MAX_FRAME);
  const welcome = await new Promise<{ fsType: string; readOnly: boolean; maxFrame: number; rest: Buffer[] }>((resolve, reject) => {
    const timer = setTimeout(() => fail(new Error(`cannot connect to ${where}: no wirefs answer within ${timeoutMs / 1000} s (is it a wirefs server?)`)), timeoutMs);
    const fail = (err: Error): void => {
      clearTimeout(timer);
      sock.destroy();
      reject(err);
    };
    const notWirefs = (): Error => {
      const text = splitter.preview().toString('latin1').replace(/[^\x20-\x7e]+/g, ' ').trim().slice(0, 40);
      return new Error(`${where} is not a wirefs server${text ? ` (it said "${text}")` : ''}`);
    };
    sock.once('connect', () => {
      sock.write(encodeHello({ major: VERSION_MAJOR, minor: VERSION_MINOR, features: OUR_FEATURES, maxFrame: DEFAULT_MAX_FRAME, name: opts.name ?? `wirefs-client/${process.pid}`, session: 0n }));
    });
    sock.on('error', (err: NodeJS.ErrnoException) => fail(connectError(where, err)));
    sock.on('close', () => fail(splitter.preview().length ? notWirefs() : new Error(`cannot connect to ${where}: the server closed the connection`)));
    sock.on('data', (d: Buffer) => {
      let frames: Buffer[];
      try {
        frames = splitter.push(d);
      } catch {
        return fail(notWirefs());
      }
      if (!frames.length) return;
      const [first, ...rest] = frames as [Buffer, ...Buffer[]];
      try {
        const h = readHeader(first);
        if (h.op !== OP_HELLO || !(h.flags & Flag.REPLY)) return fail(notWirefs());
        const w = decodeWelcome(new Reader(first, HEADER_SIZE));
        if ('reason' in w) return fail(new Error(`${where} refused the connection: ${w.reason}`));
        if (w.major !== VERSION_MAJOR) return fail(new Error(`${where} speaks wirefs protocol ${w.major}.${w.minor}, this client ${VERSION_MAJOR}.${VERSION_MINOR}`));
        clearTimeout(timer);
        sock.removeAllListeners('error');
        sock.removeAllListeners('close');
        sock.removeAllListeners('data');
        sock.removeAllListeners('connect');
        resolve({ fsType: w.fsType, readOnly: w.readOnly, maxFrame: w.maxFrame, rest });
      } catch {
        fail(notWirefs());
      }
    });
  });
  splitter.maxFrame = welcome.maxFrame;
  return new RemoteVfs(sock, splitter, where, { type: welcome.fsType, readOnly: welcome.readOnly }, opts.log ?? logger('client'), welcome.rest);
}

export class RemoteVfs implements Vfs {
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Set<ChangeListener>();
  private nextId = 1;
  private state: 'connected' | 'closed' = 'connected';
  private counters = { requests: 0, errors: 0, pushes: 0 };

  constructor(
    private readonly sock: net.Socket,
    private readonly splitter: FrameSplitter,
    readonly server: string,
    private readonly fsInfo: FsInfo,
    private readonly log: Logger,
    early: Buffer[],
  ) {
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
    sock.on('data', (d: Buffer) => this.onData(d));
    sock.on('error', (err) => this.log.warn(`connection to ${server}: ${err.message}`));
    sock.on('close', () => this.onClose());
    for (const f of early) this.onFrame(f);
  }

  stats(): ClientStats {
    return { state: this.state, inFlight: this.pending.size, ...this.counters };
  }

  info(): FsInfo {
    return this.fsInfo;
  }

  watch(listener: ChangeListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  async close(): Promise<void> {
    this.sock.end();
    this.sock.destroySoon();
    await this.closed;
  }

  private onData(d: Buffer): void {
    try {
      for (const f of this.splitter.push(d)) this.onFrame(f);
    } catch (err) {
      this.log.error(`protocol error from ${this.server}, closing the connection: ${(err as Error).message}`);
      this.sock.destroy();
    }
  }

  private onFrame(frame: Buffer): void {
    const h = readHeader(frame);
    const body = new Reader(frame, HEADER_SIZE);
    if (h.flags & Flag.PUSH) {
      if (h.op !== OP_PUSH_EVENT) return; // a push we do not know: newer server, ignore
      const ev = decodeEvent(body);
      this.counters.pushes++;
      for (const l of this.listeners) l(ev);
      return;
    }
    if (!(h.flags & Flag.REPLY)) throw new ProtocolError(`unexpected request frame op ${h.op}`);
    const p = this.pending.get(h.id);
    if (!p) throw new ProtocolError(`reply to unknown request id ${h.id}`);
    const spec = OPS_BY_NUMBER.get(h.op);
    if (spec !== p.spec) throw new ProtocolError(`reply op ${h.op} does not match request ${p.spec.name}`);
    this.pending.delete(h.id);
    if (p.onAbort) p.signal?.removeEventListener('abort', p.onAbort);
    const r = decodeReply(spec, body);
    if (r.status) {
      this.counters.errors++;
      p.reject(new FsError(r.status, `${spec.name}: ${errnoName(r.status)}`));
    } else {
      p.resolve(r.result);
    }
  }

  private onClose(): void {
    if (this.state === 'closed') return;
    this.state = 'closed';
    if (this.pending.size) this.log.warn(`connection to ${this.server} lost with ${this.pending.size} requests in flight`);
    else this.log.warn(`connection to ${this.server} lost`);
    for (const p of this.pending.values()) p.reject(new FsError(Errno.EIO, `connection to ${this.server} lost`));
    this.pending.clear();
    this.resolveClosed();
  }

  /** Sends one request and settles with its reply. */
  private call<T>(name: OpName, ctx: Ctx, ...args: unknown[]): Promise<T> {
    const spec = OPS_BY_NAME.get(name)!;
    if (this.state !== 'connected') return Promise.reject(new FsError(Errno.EIO, `not connected to ${this.server}`));
    if (ctx.signal?.aborted) return Promise.reject(new FsError(Errno.EINTR));
    const id = this.nextId;
    this.nextId = this.nextId >= 0xffffffff ? 1 : this.nextId + 1;
    this.counters.requests++;
    const frame = encodeRequest(spec, id, ctx, args);
    if (frame.length > this.splitter.maxFrame) return Promise.reject(new FsError(Errno.E2BIG, `${name} of ${frame.length} bytes exceeds the frame limit`));
    return new Promise<T>((resolve, reject) => {
      const p: Pending = { spec, resolve: resolve as (v: unknown) => void, reject };
      if (ctx.signal) {
        // Interrupted: stop waiting. The server still answers; the reply is then dropped.
        p.signal = ctx.signal;
        p.onAbort = () => {
          if (this.pending.get(id) === p) {
            this.pending.set(id, { spec, resolve: () => {}, reject: () => {} });
            reject(new FsError(Errno.EINTR));
          }
        };
        ctx.signal.addEventListener('abort', p.onAbort, { once: true });
      }
      this.pending.set(id, p);
      this.sock.write(frame);
    });
  }

  private send(name: OpName, ctx: Ctx, ...args: unknown[]): void {
    if (this.state !== 'connected') return;
    const spec = OPS_BY_NAME.get(name)!;
    this.sock.write(encodeRequest(spec, 0, ctx, args));
  }

  lookup(ctx: Ctx, parent: number, name: string): Promise<Entry> { return this.call('lookup', ctx, parent, name); }
  forget(nodeid: number, nlookup: number): void { this.send('forget', { uid: 0, gid: 0, pid: 0 }, nodeid, nlookup); }
  getattr(ctx: Ctx, nodeid: number, fh?: number): Promise<Attr> { return this.call('getattr', ctx, nodeid, fh ?? 0); }
  setattr(ctx: Ctx, nodeid: number, set: SetAttr, fh?: number): Promise<Attr> { return this.call('setattr', ctx, nodeid, set, fh ?? 0); }
  readlink(ctx: Ctx, nodeid: number): Promise<string> { return this.call('readlink', ctx, nodeid); }
  mknod(ctx: Ctx, parent: number, name: string, mode: number, rdev: number): Promise<Entry> { return this.call('mknod', ctx, parent, name, mode, rdev); }
  mkdir(ctx: Ctx, parent: number, name: string, mode: number): Promise<Entry> { return this.call('mkdir', ctx, parent, name, mode); }
  symlink(ctx: Ctx, parent: number, name: string, target: string): Promise<Entry> { return this.call('symlink', ctx, parent, name, target); }
  link(ctx: Ctx, nodeid: number, newparent: number, newname: string): Promise<Entry> { return this.call('link', ctx, nodeid, newparent, newname); }
  unlink(ctx: Ctx, parent: number, name: string): Promise<void> { return this.call('unlink', ctx, parent, name); }
  rmdir(ctx: Ctx, parent: number, name: string): Promise<void> { return this.call('rmdir', ctx, parent, name); }
  rename(ctx: Ctx, parent: number, name: string, newparent: number, newname: string, flags: number): Promise<void> {
    return this.call('rename', ctx, parent, name, newparent, newname, flags);
  }
  open(ctx: Ctx, nodeid: number, flags: number): Promise<OpenResult> { return this.call('open', ctx, nodeid, flags); }
  create(ctx: Ctx, parent: number, name: string, mode: number, flags: number): Promise<CreateResult> { return this.call('create', ctx, parent, name, mode, flags); }
  read(ctx: Ctx, nodeid: number, fh: number, offset: number, size: number): Promise<Buffer> { return this.call('read', ctx, nodeid, fh, offset, size); }
  write(ctx: Ctx, nodeid: number, fh: number, offset: number, data: Buffer): Promise<number> { return this.call('write', ctx, nodeid, fh, offset, data); }
  flush(ctx: Ctx, nodeid: number, fh: number): Promise<void> { return this.call('flush', ctx, nodeid, fh); }
  fsync(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> { return this.call('fsync', ctx, nodeid, fh, datasync); }
  release(ctx: Ctx, nodeid: number, fh: number): Promise<void> { return this.call('release', ctx, nodeid, fh); }
  opendir(ctx: Ctx, nodeid: number): Promise<OpenResult> { return this.call('opendir', ctx, nodeid); }
  readdir(ctx: Ctx, nodeid: number, fh: number, offset: number, maxEntries: number, plus: boolean): Promise<DirEntry[]> {
    return this.call('readdir', ctx, nodeid, fh, offset, maxEntries, plus);
  }
  fsyncdir(ctx: Ctx, nodeid: number, fh: number, datasync: boolean): Promise<void> { return this.call('fsyncdir', ctx, nodeid, fh, datasync); }
  releasedir(ctx: Ctx, nodeid: number, fh: number): Promise<void> { return this.call('releasedir', ctx, nodeid, fh); }
  statfs(ctx: Ctx, nodeid: number): Promise<StatFs> { return this.call('statfs', ctx, nodeid); }
  setxattr(ctx: Ctx, nodeid: number, name: string, value: Buffer, flags: number): Promise<void> { return this.call('setxattr', ctx, nodeid, name, value, flags); }
  getxattr(ctx: Ctx, nodeid: number, name: string): Promise<Buffer> { return this.call('getxattr', ctx, nodeid, name); }
  listxattr(ctx: Ctx, nodeid: number): Promise<string[]> { return this.call('listxattr', ctx, nodeid); }
  removexattr(ctx: Ctx, nodeid: number, name: string): Promise<void> { return this.call('removexattr', ctx, nodeid, name); }
  access(ctx: Ctx, nodeid: number, mask: number): Promise<void> { return this.call('access', ctx, nodeid, mask); }
  fallocate(ctx: Ctx, nodeid: number, fh: number, mode: number, offset: number, length: number): Promise<void> {
    return this.call('fallocate', ctx, nodeid, fh, mode, offset, length);
  }
  lseek(ctx: Ctx, nodeid: number, fh: number, offset: number, whence: number): Promise<number> { return this.call('lseek', ctx, nodeid, fh, offset, whence); }
  copyFileRange(ctx: Ctx, nodeIn: number, fhIn: number, offIn: number, nodeOut: number, fhOut: number, offOut: number, len: number): Promise<number> {
    return this.call('copyFileRange', ctx, nodeIn, fhIn, offIn, nodeOut, fhOut, offOut, len);
  }
}
