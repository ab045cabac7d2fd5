// Admission: what happens to a TCP connection before it becomes a Session. Counts connections per
// client address and in all (refusing beyond the limits before any TLS work, so a flood costs the
// server little and never starves the sessions already open), runs the transport's handshake
// under a timeout, and turns away addresses outside the allow-list with a HELLO error the client
// can name. Refusals are logged one line each, at most one line per reason every few seconds.

import type net from 'node:net';
import { Errno } from '../lib/errno.js';
import type { Logger } from '../lib/log.js';
import { encodeErrorFrame } from '../wire/frame.js';
import { OPS } from '../wire/ops.js';
import { acceptSecure, type Security } from '../wire/transport.js';
import { plainAddress, type AllowList } from './export.js';

/** Connections one client address may hold at once: a busy client machine needs a few, not hundreds. */
export const DEFAULT_MAX_PER_ADDRESS = 64;
/** Connections in all: far below the 20 000 fds this host allows, leaving room for the source's fds. */
export const DEFAULT_MAX_CONNECTIONS = 1024;
/** A refused client gets this long to read its HELLO error before the socket is destroyed. */
const REFUSAL_LINGER_MS = 2000;
/** At most LOG_BURST lines per refusal reason every LOG_INTERVAL_MS; the rest are counted into the next line. */
const LOG_INTERVAL_MS = 5000;
const LOG_BURST = 5;

export interface AdmissionOptions {
  log: Logger;
  security: Security;
  handshakeTimeoutMs: number;
  maxConnections: number;
  maxPerAddress: number;
  allow: AllowList | undefined;
}

export class Admission {
  /** Connections refused since start. */
  refused = 0;
  private total = 0;
  private readonly perAddress = new Map<string, number>();
  private readonly handshaking = new Set<net.Socket>();
  private readonly quiet = new Map<string, { since: number; lines: number; suppressed: number }>();

  constructor(private readonly opts: AdmissionOptions) {}

  /** Takes a freshly accepted socket; calls ready with the socket to speak wirefs on, if admitted. */
  admit(raw: net.Socket, ready: (socket: net.Socket) => void): void {
    const address = plainAddress(raw.remoteAddress ?? '');
    const peer = `${address}:${raw.remotePort ?? '?'}`;
    const here = this.perAddress.get(address) ?? 0;
    if (this.total >= this.opts.maxConnections || here >= this.opts.maxPerAddress) {
      const which = this.total >= this.opts.maxConnections
        ? `${this.opts.maxConnections} connections in all` : `${this.opts.maxPerAddress} connections from ${address}`;
      this.refuse('limit', `${peer}: refused: already ${which}`);
      // No TLS work for a refusal: a plain client still gets the reason, a TLS one only the close.
      if (this.opts.security.mode === 'plain') this.sendRefusal(raw, Errno.EAGAIN);
      else raw.destroy();
      return;
    }
    this.total++;
    this.perAddress.set(address, here + 1);
    let counted = true;
    const uncount = (): void => {
      if (!counted) return;
      counted = false;
      this.total--;
      const n = (this.perAddress.get(address) ?? 1) - 1;
      if (n > 0) this.perAddress.set(address, n);
      else this.perAddress.delete(address);
    };
    raw.once('close', uncount);
    raw.on('error', () => undefined); // reported through the handshake or the session
    this.handshaking.add(raw);
    acceptSecure(raw, this.opts.security, this.opts.handshakeTimeoutMs).then((socket) => {
      this.handshaking.delete(raw);
      // A TLS socket closes without its raw socket saying so: count the end on both.
      socket.once('close', uncount);
      if (this.opts.allow && !this.opts.allow.allows(address)) {
        this.refuse('allow', `${peer}: refused: address not in the allow-list (${this.opts.allow.text})`);
        this.sendRefusal(socket, Errno.EACCES);
        return;
      }
      ready(socket);
    }, (err: Error) => {
      this.handshaking.delete(raw);
      uncount();
      this.refuse('handshake', `${peer}: ${err.message}`);
    });
  }

  /** Answers the client's HELLO with errno before it is sent (PROTOCOL.md: refusal), then closes. */
  private sendRefusal(socket: net.Socket, errno: number): void {
    // Read and drop what the client sends: closing with unread data would reset the connection
    // and could destroy the refusal before the client reads it.
    socket.on('data', () => undefined);
    socket.on('error', () => undefined);
    socket.end(encodeErrorFrame(OPS.hello.code, 0, errno));
    setTimeout(() => socket.destroy(), REFUSAL_LINGER_MS).unref();
  }

  private refuse(reason: string, line: string): void {
    this.refused++;
    const now = Date.now();
    let q = this.quiet.get(reason);
    if (!q || now - q.since >= LOG_INTERVAL_MS) {
      const more = q?.suppressed ? ` (and ${q.suppressed} more refused like this before)` : '';
      q = { since: now, lines: 0, suppressed: 0 };
      this.quiet.set(reason, q);
      line += more;
    }
    if (q.lines >= LOG_BURST) {
      q.suppressed++;
      return;
    }
    q.lines++;
    this.opts.log.warn(line);
  }

  /** Drops the connections still in their handshake (the server is closing). */
  close(): void {
    for (const s of this.handshaking) s.destroy();
    this.handshaking.clear();
  }
}
