// The transport: how wirefs frames travel between hosts. One place decides between plain TCP, TLS
// with a pre-shared key (TLS-PSK) and TLS with certificates; the server's sessions and the client's
// link only ever see a connected, secured net.Socket (a tls.TLSSocket is one), so neither knows
// which was chosen. Every failure is turned into one line fit to print.
//
// Why TLS 1.2 for PSK: Node 20 (OpenSSL 3.0) negotiates TLS 1.3 PSK only alongside a certificate;
// without one the handshake fails with "no suitable signature algorithm". TLS 1.2 ECDHE-PSK suites
// (RFC 5489, RFC 7905) give the same properties here: mutual authentication by the shared key,
// forward secrecy from the ephemeral ECDH, an AEAD cipher.

import net from 'node:net';
import tls from 'node:tls';
import { randomBytes } from 'node:crypto';

/** The identity both sides name in the PSK handshake: the key, not the name, authenticates. */
export const PSK_IDENTITY = 'wirefs';
/** ECDHE for forward secrecy; ChaCha20-Poly1305 first, an AES suite for peers without it. */
export const PSK_CIPHERS = 'ECDHE-PSK-CHACHA20-POLY1305:ECDHE-PSK-AES256-CBC-SHA384';
/** Bytes of key `wirefs keygen` writes, and the least a key file may hold (128 bits). */
export const KEY_BYTES = 32;
const MIN_KEY_BYTES = 16;
/** A server that drops a TLS client before the handshake ends gives no reason: name the usual ones. */
const CLOSED_IN_HANDSHAKE =
  'the server closed the connection during the TLS handshake (it serves without encryption or with other credentials, or has too many connections)';

export type Security =
  | { mode: 'plain' }
  /** Both sides hold the same secret key. */
  | { mode: 'psk'; key: Buffer }
  /**
   * Certificates. Server: cert + key are its own; ca, when given, is the CA client certificates must
   * chain to (and then a client without one is refused). Client: ca checks the server (the system
   * CAs when absent); cert + key are its own certificate for a server that asks for one.
   */
  | { mode: 'cert'; cert?: Buffer; key?: Buffer; ca?: Buffer };

/** A new random key file's text: hex, one line. */
export function generateKey(): string {
  return randomBytes(KEY_BYTES).toString('hex') + '\n';
}

/** Parses a key file's text (hex, whitespace and #-comment lines ignored). Throws one line. */
export function parseKey(text: string): Buffer {
  const hex = text.split('\n').filter((l) => !l.trim().startsWith('#')).join('').replace(/\s+/g, '');
  if (!/^([0-9a-fA-F]{2})+$/.test(hex)) throw new Error('the key file is not hex (make one with `wirefs keygen`)');
  const key = Buffer.from(hex, 'hex');
  if (key.length < MIN_KEY_BYTES) throw new Error(`the key is ${key.length} bytes; at least ${MIN_KEY_BYTES} are needed`);
  return key;
}

// --- server side -------------------------------------------------------------------------------

/**
 * Runs the server side of the handshake on an accepted TCP socket and resolves with the socket to
 * speak wirefs on (the same one when plain). Rejects with a one-line reason, having destroyed the
 * socket, if the handshake fails or takes longer than timeoutMs.
 */
export function acceptSecure(raw: net.Socket, sec: Security, timeoutMs: number): Promise<net.Socket> {
  if (sec.mode === 'plain') return Promise.resolve(raw);
  return new Promise((resolve, reject) => {
    // TLSSocket honours pskCallback on the server side as tls.Server does; @types/node omits it.
    const options: tls.TLSSocketOptions & Pick<tls.TlsOptions, 'pskCallback'> = sec.mode === 'psk'
      ? {
        isServer: true,
        ciphers: PSK_CIPHERS,
        minVersion: 'TLSv1.2',
        maxVersion: 'TLSv1.2',
        pskCallback: (_socket: tls.TLSSocket, identity: string) => (identity === PSK_IDENTITY ? sec.key : null),
      }
      : {
        isServer: true,
        minVersion: 'TLSv1.2',
        secureContext: tls.createSecureContext({
          ...(sec.cert ? { cert: sec.cert } : {}), ...(sec.key ? { key: sec.key } : {}), ...(sec.ca ? { ca: sec.ca } : {}),
        }),
        requestCert: sec.ca !== undefined,
        rejectUnauthorized: sec.ca !== undefined,
      };
    const socket = new tls.TLSSocket(raw, options);
    let done = false;
    const fail = (reason: string): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      socket.destroy();
      raw.destroy();
      reject(new Error(reason));
    };
    const timer = setTimeout(() => fail(`no TLS handshake within ${timeoutMs / 1000} s`), timeoutMs);
    timer.unref();
    socket.once('secure', () => {
      if (done) return;
      if (sec.mode === 'cert' && sec.ca) {
        const why = clientVerifyError(socket);
        if (why !== undefined) {
          fail(`TLS handshake failed: the client's certificate is not trusted (${why})`);
          return;
        }
      }
      done = true;
      clearTimeout(timer);
      socket.removeAllListeners('error');
      resolve(socket);
    });
    socket.on('error', (err: NodeJS.ErrnoException) => fail(serverHandshakeError(err, sec)));
    socket.once('close', () => fail('the client closed the connection during the TLS handshake'));
  });
}

/**
 * Why the client's certificate failed verification, or undefined if it passed. OpenSSL completes
 * the handshake whatever the verdict (a missing certificate alone fails it, through
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT) and Node's tls.Server then asks the handle for the verdict; a
 * TLSSocket made by hand must ask itself, with the same call. Fails closed if the call is missing.
 */
function clientVerifyError(socket: tls.TLSSocket): string | undefined {
  const handle = (socket as unknown as { _handle?: { verifyError?: () => (Error & { code?: string }) | null } })._handle;
  if (typeof handle?.verifyError !== 'function') return 'cannot verify client certificates on this Node';
  const err = handle.verifyError();
  return err ? (err.code ?? err.message) : undefined;
}

function serverHandshakeError(err: NodeJS.ErrnoException, sec: Security): string {
  const code = err.code ?? '';
  const msg = `${code} ${err.message}`;
  if (/WRONG_VERSION_NUMBER|HTTP_REQUEST|UNKNOWN_PROTOCOL|RECORD_LENGTH_MISMATCH|PACKET_LENGTH_TOO_LONG/.test(msg)) {
    return 'TLS handshake failed: the client does not speak TLS (no --secret-file or --ca on its side?)';
  }
  if (sec.mode === 'psk' && /BAD_RECORD_MAC|DECRYPTION_FAILED|DECRYPT_ERROR|PSK_IDENTITY_NOT_FOUND/.test(msg)) {
    return 'TLS handshake failed: the client does not hold this server\'s secret';
  }
  if (/NO_SHARED_CIPHER|NO_SUITABLE_SIGNATURE/.test(msg)) {
    return 'TLS handshake failed: no common cipher (the client uses other credentials: a secret against certificates, or the reverse?)';
  }
  if (/PEER_DID_NOT_RETURN_A_CERTIFICATE|CERTIFICATE_REQUIRED/.test(msg)) return 'TLS handshake failed: the client sent no certificate';
  if (/CERTIFICATE|VERIFY|UNABLE_TO_GET/.test(msg)) return `TLS handshake failed: the client's certificate is not trusted (${code || err.message})`;
  if (code === 'ECONNRESET' || code === 'EPIPE') return 'the client closed the connection during the TLS handshake';
  return `TLS handshake failed: ${firstLine(err.message)}`;
}

// --- client side -------------------------------------------------------------------------------

export interface DialOptions {
  host: string;
  port: number;
  security: Security;
  /** The receiving end's frame splitter, for plain links' reads (see Slabs). */
  frames?: FrameProgress;
}

export interface Dialing {
  /** The socket being connected; destroy it to give up. */
  socket: net.Socket;
  /** Resolves once connected and, with TLS, once the server is authenticated; rejects with one line. */
  ready: Promise<void>;
}

/** Slab size for a plain link's reads, and the room below which a read starts a new slab. */
const SLAB_BYTES = 4 << 20;
const SLAB_MIN_ROOM = 256 << 10;
/** Room any frame starting in a slab is to find after it (a 1 MiB read reply and its header). */
const SLAB_FRAME_ROOM = (1 << 20) + 4096;
/** Room every read is offered at least, even where a frame starting in it then finds a little less than SLAB_FRAME_ROOM. */
const READ_MIN = 2048;
/** A frame at least this long is read to its end, not past it. */
const READ_TO_END_MIN = 64 << 10;

/** How far the frame being received is (FrameSplitter). */
export interface FrameProgress {
  /** Bytes still to come of the frame begun: 0 at a frame's start, -1 unknown. */
  need(): number;
  /** Bytes received and not yet taken as frames. */
  readonly buffered: number;
}

/**
 * Buffers for socket reads, carved one after the other out of a slab: what a read filled is kept
 * (callers hold views of it) and the next read goes right after it. A frame across two slabs is
 * copied together by the splitter: without `frames` about one 1 MiB read reply in seven was (139 of
 * 1024 in a cold 1 GiB read, 130-170 ms of client CPU). With it (FrameSplitter.need: how much of
 * the frame begun is still to come), no frame starts where a 1 MiB one would not fit: a read may
 * end only that far into the slab, the rest of a big frame is read alone to its end, and a frame
 * that would start a read too near the end starts a new slab.
 */
export class Slabs {
  private slab = Buffer.allocUnsafe(SLAB_BYTES);
  private used = 0;

  constructor(private readonly frames?: FrameProgress) {}

  /** Room for the next read. */
  next(): Buffer {
    const need = this.frames?.need() ?? -1;
    const room = this.slab.length - this.used;
    // (The rest of a frame begun in this slab, if it fits, stays in it however little room is left.)
    const rest = need > 0 && need <= room;
    if (!rest && (room < SLAB_MIN_ROOM || (need === 0 && room < SLAB_FRAME_ROOM))) {
      this.slab = Buffer.allocUnsafe(SLAB_BYTES);
      this.used = 0;
    }
    const buf = this.slab.subarray(this.used);
    if (!this.frames) return buf;
    let end = Math.max(this.slab.length - SLAB_FRAME_ROOM - this.used, READ_MIN);
    // (need > 0: what is buffered is that frame's beginning.)
    if (rest) end = need + this.frames.buffered >= READ_TO_END_MIN ? need : Math.max(end, need);
    return end < buf.length ? buf.subarray(0, end) : buf;
  }

  /** A read filled n bytes of buf (what next() gave): they are the caller's now, never read over. */
  take(buf: Uint8Array, n: number): Buffer {
    if (buf.buffer === this.slab.buffer) this.used = Math.max(this.used, buf.byteOffset - this.slab.byteOffset + n);
    return Buffer.from(buf.buffer, buf.byteOffset, n);
  }
}

/** Connects to a server over the chosen transport. */
export function dial(opts: DialOptions): Dialing {
  const sec = opts.security;
  let socket: net.Socket;
  let event: string;
  if (sec.mode === 'plain') {
    // Reads land one after the other in large slabs, so a frame that takes several reads is
    // contiguous memory and the splitter hands it on as a view instead of copying it together
    // (1 MiB read replies took ~180 ms of client CPU per GiB to copy out of 64 KiB chunks). The
    // bytes are given on as 'data' events, as without onread.
    const slabs = new Slabs(opts.frames);
    socket = net.connect({
      host: opts.host,
      port: opts.port,
      onread: { buffer: () => slabs.next(), callback: (n: number, buf: Uint8Array) => socket.emit('data', slabs.take(buf, n)) || true },
    });
    event = 'connect';
  } else if (sec.mode === 'psk') {
    socket = tls.connect({
      host: opts.host,
      port: opts.port,
      ciphers: PSK_CIPHERS,
      minVersion: 'TLSv1.2',
      maxVersion: 'TLSv1.2',
      pskCallback: () => ({ psk: sec.key, identity: PSK_IDENTITY }),
      // The shared key authenticates the server: there is no certificate and so no name to check.
      checkServerIdentity: () => undefined,
    });
    event = 'secureConnect';
  } else {
    socket = tls.connect({
      host: opts.host,
      port: opts.port,
      minVersion: 'TLSv1.2',
      ...(net.isIP(opts.host) ? {} : { servername: opts.host }),
      ...(sec.ca ? { ca: sec.ca } : {}),
      ...(sec.cert ? { cert: sec.cert } : {}),
      ...(sec.key ? { key: sec.key } : {}),
    });
    event = 'secureConnect';
  }
  const ready = new Promise<void>((resolve, reject) => {
    let connected = false;
    const onError = (err: NodeJS.ErrnoException): void => reject(new Error(dialError(err, sec, connected)));
    socket.once('connect', () => (connected = true));
    socket.once(event, () => {
      socket.off('error', onError);
      socket.off('close', onClose);
      resolve();
    });
    const onClose = (): void => reject(new Error(sec.mode === 'plain' ? 'connection closed'
      : CLOSED_IN_HANDSHAKE));
    socket.once('error', onError);
    socket.once('close', onClose);
  });
  // The caller handles rejections; this keeps an abandoned attempt from being "unhandled".
  ready.catch(() => undefined);
  return { socket, ready };
}

const NET_REASONS: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'unknown host',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ETIMEDOUT: 'timed out',
  ECONNRESET: 'connection reset by the server',
  EPIPE: 'connection reset by the server',
};

/** One line for a failed connect or handshake, naming the likely cause. */
export function dialError(err: NodeJS.ErrnoException, sec: Security, connected = true): string {
  const code = err.code ?? '';
  const msg = `${code} ${err.message}`;
  if (sec.mode !== 'plain' && connected) {
    if (/ECONNRESET|EPIPE|socket disconnected before secure TLS/i.test(msg)) {
      return CLOSED_IN_HANDSHAKE;
    }
    if (/WRONG_VERSION_NUMBER|UNKNOWN_PROTOCOL|PACKET_LENGTH_TOO_LONG/.test(msg)) {
      return 'the server does not speak TLS (it serves without a secret or certificate)';
    }
    if (sec.mode === 'psk' && /BAD_RECORD_MAC|DECRYPT_ERROR|DECRYPTION_FAILED|alert number (20|51)\b/.test(msg)) {
      return 'the server rejected our secret (wrong --secret-file?)';
    }
    if (/HANDSHAKE_FAILURE|NO_SHARED_CIPHER|alert number 40\b/.test(msg)) {
      return sec.mode === 'psk'
        ? 'TLS handshake failed: the server does not accept a shared secret (it uses certificates, or another secret?)'
        : 'TLS handshake failed: no common cipher (the server expects a shared secret?)';
    }
    if (/CERTIFICATE_REQUIRED|alert number 116\b/.test(msg)) return 'the server requires a client certificate (--cert and --key)';
    if (/ALERT_BAD_CERTIFICATE|ALERT_UNKNOWN_CA|alert number (42|48)\b/.test(msg)) return 'the server does not trust our client certificate';
    if (code === 'ERR_TLS_CERT_ALTNAME_INVALID') return `the server's certificate is not for this host name (${firstLine(err.message)})`;
    if (/CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER/.test(code)) {
      return `the server's certificate is not trusted (${code}; give its CA with --ca)`;
    }
    if (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS')) return `TLS handshake failed: ${firstLine(err.message)}`;
  }
  return NET_REASONS[code] ?? firstLine(err.message);
}

function firstLine(s: string): string {
  return (s.split('\n')[0] ?? s).replace(/^[0-9A-F]+:error:[0-9A-F]+:SSL routines:/, '').trim();
}

