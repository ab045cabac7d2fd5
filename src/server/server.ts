// The wirefs server: listens on TCP, runs one Session per connection over a shared Vfs, and routes
// change events (from one client's modifications, or from the source's own watch) to the other
// clients that may have the affected nodes cached.

import net from 'node:net';
import os from 'node:os';
import { logger, type Logger } from '../lib/log.js';
import type { ChangeEvent, Vfs } from '../vfs/types.js';
import { DEFAULT_MAX_FRAME, MIN_MAX_FRAME, VERSION_MAJOR, VERSION_MINOR } from '../wire/frame.js';
import type { Security } from '../wire/transport.js';
import { Admission, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_PER_ADDRESS } from './admission.js';
import { guardVfs, isLoopback, mapIds, type ExportRules } from './export.js';
import { SessionRegistry } from './registry.js';
import { Session, type ServerCore } from './session.js';

export interface ServerOptions {
  vfs: Vfs;
  host?: string;
  /** 0 picks a free port. */
  port: number;
  log?: Logger;
  /** The largest frame this server accepts and sends (default 4 MiB; the client may lower it). */
  maxFrame?: number;
  /** Requests one connection may have running before the server stops reading it (default 64). */
  maxInFlight?: number;
  /** A connection that has not completed the TLS handshake and HELLO within this time is closed (default 10 s). */
  helloTimeoutMs?: number;
  /**
   * The lease time: how long the author of a change waits for the other clients that cached the
   * node to acknowledge its invalidation (default 2000 ms). A client that vanished without a word
   * delays others by at most this much per change (and once its connection is seen closed, not at all).
   */
  leaseMs?: number;
  /** Plain TCP (default), a shared secret or certificates (wire/transport.ts). */
  security?: Security;
  /** Serve unencrypted on an address other than loopback (refused otherwise). */
  insecure?: boolean;
  /** Allow-list, identity mapping, read-only (export.ts); absent = trust clients' identities as sent. */
  export?: ExportRules;
  /** Connections open at once from all clients (default 1024); beyond, new ones are refused. */
  maxConnections?: number;
  /** Connections open at once from one client address (default 64). */
  maxConnectionsPerAddress?: number;
  /**
   * How long a session whose connection dropped is kept for its client to resume it (default 60 s,
   * the client's default outage timeout); 0 ends sessions with their connection.
   */
  sessionGraceMs?: number;
}

export interface ServerStats {
  /** Open sessions now. */
  sessions: number;
  /** Connections accepted since start. */
  connections: number;
  /** Requests received since start, pings aside. */
  requests: number;
  /** Requests running now, all sessions together. */
  inFlight: number;
  /** CHANGE frames sent since start. */
  pushes: number;
  /** Connections closed for a protocol error since start. */
  protocolErrors: number;
  /** RECALLs sent: a directory one client held alone was about to be seen by another. */
  recalls: number;
  /** Invalidations that were not acknowledged within the lease time. */
  leaseExpiries: number;
  /** Connections refused since start (limits, allow-list, failed TLS handshakes). */
  refused: number;
  /** Retried non-idempotent requests answered from the reply cache instead of run again. */
  replayed: number;
  /** Sessions whose connection dropped, waiting for their client now. */
  detached: number;
  /** Sessions resumed by a reconnecting client since start. */
  resumes: number;
  /** Sessions ended because no client resumed them within the grace period. */
  expired: number;
}

export interface WireServer {
  address(): { host: string; port: number };
  /** Stops listening, ends every session (releasing what its client held) and resolves when done. */
  close(): Promise<void>;
  stats(): ServerStats;
}

function eventNode(ev: ChangeEvent): number {
  return ev.kind === 'inode' ? ev.nodeid : ev.parent;
}

export async function startServer(opts: ServerOptions): Promise<WireServer> {
  const log = opts.log ?? logger('server');
  const maxFrame = opts.maxFrame ?? DEFAULT_MAX_FRAME;
  if (!(maxFrame >= MIN_MAX_FRAME && maxFrame <= 0xffffffff)) throw new Error(`max frame must be at least ${MIN_MAX_FRAME} bytes`);
  const host = opts.host ?? '0.0.0.0';
  const security = opts.security ?? { mode: 'plain' };
  if (security.mode === 'plain' && !isLoopback(host) && !opts.insecure) {
    throw new Error(`refusing to serve unencrypted on ${host}: give --secret-file (make one with \`wirefs keygen\`) or --cert/--key, bind to 127.0.0.1, or pass --insecure`);
  }
  const sessions = new Set<Session>();
  const vfs = opts.export ? guardVfs(opts.vfs, opts.export) : opts.vfs;
  const core: ServerCore = {
    vfs,
    log,
    maxFrame,
    maxInFlight: opts.maxInFlight ?? 64,
    helloTimeoutMs: opts.helloTimeoutMs ?? 10_000,
    leaseMs: opts.leaseMs ?? 2000,
    strictNodes: opts.export !== undefined,
    serverName: `wirefs/${VERSION_MAJOR}.${VERSION_MINOR} ${os.hostname()}`,
    sessions,
    registry: new SessionRegistry<Session>(opts.sessionGraceMs ?? 60_000),
    counters: { requests: 0, pushes: 0, protocolErrors: 0, connections: 0, leaseExpiries: 0, replayed: 0, recalls: 0 },
    dirLeases: new Map(),
    identityKept(uid, gid) {
      if (!opts.export) return true;
      const m = mapIds(opts.export.idmap, uid, gid);
      return m.uid === uid && m.gid === gid;
    },
    broadcast(events, from) {
      let waits: Promise<void>[] | undefined;
      for (const s of sessions) {
        if (s === from || !s.wantsPushes) continue;
        for (const ev of events) if (s.knows(eventNode(ev))) (waits ??= []).push(s.push(ev));
      }
      return waits ? Promise.all(waits).then(() => undefined) : Promise.resolve();
    },
  };
  // Changes made behind the server's back (local processes on a passthrough source) go to everyone.
  const unwatch = vfs.watch((ev) => core.broadcast([ev], undefined));

  const admission = new Admission({
    log,
    security,
    handshakeTimeoutMs: core.helloTimeoutMs,
    maxConnections: opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS,
    maxPerAddress: opts.maxConnectionsPerAddress ?? DEFAULT_MAX_PER_ADDRESS,
    allow: opts.export?.allow,
  });
  const server = net.createServer((raw) => {
    core.counters.connections++;
    admission.admit(raw, (socket) => sessions.add(new Session(core, socket)));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, host, () => {
      server.off('error', reject);
      resolve();
    });
  }).catch((err: NodeJS.ErrnoException) => {
    unwatch();
    const where = `${host}:${opts.port}`;
    const reasons: Record<string, string> = {
      EADDRINUSE: 'the port is in use', EADDRNOTAVAIL: 'no such local address', EACCES: 'permission denied',
    };
    throw new Error(`cannot listen on ${where}: ${reasons[err.code ?? ''] ?? err.message}`);
  });
  server.on('error', (err) => log.error(`listener: ${err.message}`));

  let closing: Promise<void> | undefined;
  return {
    address() {
      const a = server.address() as net.AddressInfo;
      return { host: a.address, port: a.port };
    },
    close() {
      closing ??= (async () => {
        unwatch();
        const done = new Promise<void>((resolve) => server.close(() => resolve()));
        admission.close();
        const all = [...sessions];
        for (const s of all) s.close();
        await Promise.all(all.map((s) => s.ended));
        await done;
      })();
      return closing;
    },
    stats() {
      let inFlight = 0;
      for (const s of sessions) inFlight += s.inFlight;
      const { registry } = core;
      return {
        sessions: sessions.size, inFlight, ...core.counters, refused: admission.refused,
        detached: registry.waiting, resumes: registry.resumes, expired: registry.expired,
      };
    },
  };
}
