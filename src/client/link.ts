// Opening a connection to a wirefs server: TCP connect, the HELLO exchange and its checks. Every
// failure becomes one Error whose message is fit to print as is ("cannot connect to onehost:12675:
// connection refused"), including a peer that speaks another protocol or another wirefs version.
// Kept apart from RemoteVfs so a reconnect loop can open a new link under the same request table.

import type net from 'node:net';
import os from 'node:os';
import { ProtocolError, Reader } from '../lib/bytes.js';
import { Errno, errnoName } from '../lib/errno.js';
import {
  DEFAULT_MAX_FRAME, FEATURES_V1, FLAG_REPLY, FrameSplitter, HEADER_SIZE, HELLO_MAX_FRAME, MAGIC, MIN_MAX_FRAME,
  VERSION_MAJOR, VERSION_MINOR, encodeRequestFrame, quoteForeign, versionMismatch,
} from '../wire/frame.js';
import { OPS, decodeRep, type Rep } from '../wire/ops.js';
import { dial, dialError, type Security } from '../wire/transport.js';

export interface LinkOptions {
  host: string;
  port: number;
  timeoutMs: number;
  /** Shown in the server's log. */
  name?: string;
  /** The session to resume (0n = a new one). */
  sessionId?: bigint;
  /** The largest frame this client accepts (default 4 MiB). */
  maxFrame?: number;
  /** Plain TCP (the default), a shared secret or certificates: see wire/transport.ts. */
  security?: Security;
}

/** A connected, negotiated socket. Bytes that arrived after the HELLO reply wait in `splitter`. */
export interface Link {
  socket: net.Socket;
  splitter: FrameSplitter;
  welcome: Rep<'hello'>;
  /** The frame limit in force both ways. */
  maxFrame: number;
  features: bigint;
}

export function openLink(opts: LinkOptions): Promise<Link> {
  const where = `${opts.host}:${opts.port}`;
  const ourMax = opts.maxFrame ?? DEFAULT_MAX_FRAME;
  return new Promise<Link>((resolve, reject) => {
    const security = opts.security ?? { mode: 'plain' };
    const splitter = new FrameSplitter(HELLO_MAX_FRAME);
    const { socket, ready } = dial({ host: opts.host, port: opts.port, security, frames: splitter });
    socket.setNoDelay(true);
    let connected = false;
    let secured = false;
    let settled = false;

    const fail = (reason: string): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      socket.destroy();
      reject(new Error(`cannot connect to ${where}: ${reason}`));
    };
    const foreign = (): void => fail(`not a wirefs server (it sent ${quoteForeign(splitter.peek(60))})`);
    const timer = setTimeout(() => {
      const s = opts.timeoutMs / 1000;
      fail(connected ? `connected, but no wirefs answer within ${s} s (is it a wirefs server?)` : `no answer within ${s} s`);
    }, opts.timeoutMs);

    socket.once('connect', () => (connected = true));
    ready.then(() => {
      secured = true;
      if (settled) return;
      socket.write(encodeRequestFrame('hello', 0, 0, {
        magic: MAGIC, major: VERSION_MAJOR, minor: VERSION_MINOR, features: FEATURES_V1, maxFrame: ourMax,
        sessionId: opts.sessionId ?? 0n, clientName: opts.name ?? `wirefs-client/${VERSION_MAJOR}.${VERSION_MINOR} ${os.hostname()}:${process.pid}`,
      }));
    }, (err: Error) => fail(err.message));
    // Until the transport is ready, `ready` names the failure (it knows the TLS causes).
    socket.on('error', (err: NodeJS.ErrnoException) => {
      if (secured || security.mode === 'plain') fail(dialError(err, security, connected));
    });
    socket.on('close', () => {
      if (!secured && security.mode !== 'plain') return;
      if (splitter.buffered > 0) foreign();
      else if (security.mode === 'plain' && connected) fail('the server closed the connection during the handshake (does it require --secret-file or certificates?)');
      else fail(connected ? 'the server closed the connection during the handshake' : 'connection closed');
    });

    const onData = (chunk: Buffer): void => {
      splitter.push(chunk);
      // Judge the first bytes as soon as there are enough of them, so a chatty foreign server
      // (an SSH banner, an HTTP error page) is named at once instead of after the timeout.
      if (splitter.buffered < 8) return;
      const head = splitter.peek(8);
      const length = head.readUInt32LE(0);
      if (length < HEADER_SIZE + 4 || length > HELLO_MAX_FRAME || head.readUInt16LE(4) !== OPS.hello.code || head.readUInt16LE(6) !== FLAG_REPLY) {
        foreign();
        return;
      }
      let frame: Buffer | undefined;
      try {
        frame = splitter.next();
      } catch {
        foreign();
        return;
      }
      if (!frame) return;
      const r = new Reader(frame, HEADER_SIZE);
      try {
        const status = r.i32();
        if (status !== 0) {
          fail(refusal(status));
          return;
        }
        // The magic and version lead the reply in every protocol version: read them before the rest.
        const magic = r.bytes(8);
        if (!magic.equals(MAGIC)) {
          foreign();
          return;
        }
        const major = r.u16();
        const minor = r.u16();
        if (major !== VERSION_MAJOR) {
          fail(versionMismatch('server', major, minor));
          return;
        }
        const welcome = decodeRep(new Reader(frame, HEADER_SIZE + 4), 'hello');
        if (welcome.maxFrame < MIN_MAX_FRAME) throw new ProtocolError(`max frame ${welcome.maxFrame} is below ${MIN_MAX_FRAME}`);
        const maxFrame = Math.min(welcome.maxFrame, ourMax);
        splitter.maxFrame = maxFrame;
        settled = true;
        clearTimeout(timer);
        socket.removeAllListeners();
        resolve({ socket, splitter, welcome, maxFrame, features: welcome.features & FEATURES_V1 });
      } catch (err) {
        fail(`bad HELLO reply from the server: ${(err as Error).message}`);
      }
    };
    socket.on('data', onData);
  });
}

/** A HELLO refused with an errno: the server's admission rules have their own words (PROTOCOL.md). */
function refusal(status: number): string {
  if (status === Errno.EACCES) return 'the server does not allow this client\'s address (see its --allow)';
  if (status === Errno.EAGAIN) return 'the server has too many connections (from this address, or in all); try again later';
  return `the server refused the session (${errnoName(status)})`;
}
