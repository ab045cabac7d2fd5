// Frames of the wire protocol: the fixed 16-byte header, the protocol constants negotiated in HELLO,
// building whole frames from the op table, and splitting a TCP byte stream back into frames.
//
// Header (little-endian), offsets in bytes:
//   0 u32 length   whole frame, header included (16 <= length <= negotiated max frame)
//   4 u16 op       op code (ops.ts)
//   6 u16 flags    REPLY 1, PUSH 2, NOREPLY 4; other bits are reserved and sent as 0
//   8 u32 id       request id chosen by the client, echoed in the reply; 0 in pushes
//  12 u32 seq      session sequence number of a non-idempotent request (reply cache), else 0

import { ProtocolError, Reader, Writer } from '../lib/bytes.js';
import { EncodeError, FIELDS } from './codec.js';
import { OPS, decodeFields, encodeFields, encodeRep, encodeReq, type OpName, type Rep, type Req } from './ops.js';

export const HEADER_SIZE = 16;
export const FLAG_REPLY = 1;
export const FLAG_PUSH = 2;
export const FLAG_NOREPLY = 4;

export const MAGIC = Buffer.from('WIREFS\0\0', 'latin1');
export const VERSION_MAJOR = 1;
export const VERSION_MINOR = 5;
/** The server pushes CHANGE frames. */
export const FEATURE_PUSH = 1n << 0n;
/** The server honours CANCEL. */
export const FEATURE_CANCEL = 1n << 1n;
/**
 * The server's source reports every change made behind the server's back (FsInfo.coherent), so
 * with PUSH a client may cache without a time bound. Offered by a server only for such sources.
 */
export const FEATURE_COHERENT = 1n << 2n;
/**
 * CHANGE pushes may carry a request id; the client answers each with CHANGE_ACK once acted on, and
 * the server holds the reply to the change's author until then (or until the lease time passes).
 */
export const FEATURE_PUSH_ACK = 1n << 3n;
export const FEATURES_V1 = FEATURE_PUSH | FEATURE_CANCEL | FEATURE_COHERENT | FEATURE_PUSH_ACK;
export const DEFAULT_MAX_FRAME = 4 * 1024 * 1024;
/** No peer may go below this (it must fit a HELLO and a useful read). */
export const MIN_MAX_FRAME = 64 * 1024;
/** The limit on frames before HELLO has settled the real one. */
export const HELLO_MAX_FRAME = 64 * 1024;
/** Room a reply needs beyond its data: header, status, blob length. */
export const READ_OVERHEAD = 64;

export interface Header {
  length: number;
  op: number;
  flags: number;
  id: number;
  seq: number;
}

export function decodeHeader(r: Reader): Header {
  return { length: r.u32(), op: r.u16(), flags: r.u16(), id: r.u32(), seq: r.u32() };
}

/** A writer with room reserved for the header; finish() fills it in and returns the frame. */
function frameWriter(sizeHint: number): Writer {
  const w = new Writer(HEADER_SIZE + sizeHint);
  w.zeros(HEADER_SIZE);
  return w;
}
/** Fills in the header; `more`: bytes of the frame that follow this buffer (see encodeReadReplyParts). */
function finish(w: Writer, op: number, flags: number, id: number, seq: number, more = 0): Buffer {
  const frame = w.done();
  frame.writeUInt32LE(frame.length + more, 0);
  frame.writeUInt16LE(op, 4);
  frame.writeUInt16LE(flags, 6);
  frame.writeUInt32LE(id >>> 0, 8);
  frame.writeUInt32LE(seq >>> 0, 12);
  return frame;
}

/** Bytes a request is likely to need, so big writes do not grow the buffer step by step. */
function sizeHint(value: object): number {
  let n = 128;
  for (const v of Object.values(value)) {
    if (Buffer.isBuffer(v)) n += v.length + 4;
    else if (typeof v === 'string') n += v.length * 3 + 4;
  }
  return n;
}

export function encodeRequestFrame<N extends OpName>(op: N, id: number, seq: number, req: Req<N>): Buffer {
  const w = frameWriter(sizeHint(req));
  encodeReq(w, op, req);
  return finish(w, OPS[op].code, OPS[op].kind === 'call' ? 0 : FLAG_NOREPLY, id, seq);
}

export function encodePushFrame<N extends OpName>(op: N, body: Req<N>, id = 0): Buffer {
  const w = frameWriter(sizeHint(body));
  encodeReq(w, op, body);
  return finish(w, OPS[op].code, FLAG_PUSH, id, 0);
}

export function encodeReplyFrame<N extends OpName>(op: N, id: number, rep: Rep<N>): Buffer {
  const w = frameWriter(sizeHint(rep));
  w.i32(0);
  encodeRep(w, op, rep);
  return finish(w, OPS[op].code, FLAG_REPLY, id, 0);
}

/**
 * A READ's reply as two buffers, the frame's first bytes (header, status, the data's length) and
 * the data itself, for one writev: the same bytes as encodeReplyFrame('read', id, { data }) without
 * copying megabytes of data into a new buffer.
 */
export function encodeReadReplyParts(id: number, data: Buffer): [Buffer, Buffer] {
  // Status 0, then the blob's length; the blob's bytes are `data`.
  const w = frameWriter(8).i32(0).u32(data.length);
  return [finish(w, OPS.read.code, FLAG_REPLY, id, 0, data.length), data];
}

/**
 * A WRITE request as two buffers, the frame up to the data's length and the data itself, for one
 * writev: the same bytes as encodeRequestFrame('write', ...) without copying a megabyte of data
 * into a new buffer (the data is the last field).
 */
export function encodeWriteRequestParts(id: number, seq: number, req: Req<'write'>): [Buffer, Buffer] {
  const { data, ...rest } = req;
  const w = frameWriter(64);
  encodeFields(w, OPS.write.req.slice(0, -1), rest);
  w.u32(data.length);
  return [finish(w, OPS.write.code, 0, id, seq, data.length), data];
}

/**
 * WRITEs with at least this much data are sent as header and data apart (encodeWriteRequestParts)
 * and taken in by the server in the pieces they arrived in (FrameSplitter.nextParts).
 */
export const WRITE_PARTS_MIN = 64 * 1024;

/** At most this many pieces for one frame from FrameSplitter.nextParts (a 1 MiB WRITE in 64 KiB socket reads is 17). */
const PARTS_MAX = 64;

/** The bytes of a WRITE request before its data: header, the fixed fields, the data's u32 length. */
export const WRITE_HEAD = HEADER_SIZE + OPS.write.req.slice(0, -1).reduce((n, [, type]) => n + FIELDS[type].size!, 0) + 4;

/** A WRITE request whose data came in pieces (FrameSplitter.nextParts). */
export type WriteRequestParts = Omit<Req<'write'>, 'data'> & { data: Buffer[] };

/**
 * The fields of a WRITE request from its head (r, past the header; WRITE_HEAD bytes in all) and
 * its data from the pieces that follow, as views of them. Like decodeReq: bytes past the data are
 * ignored, too few is a ProtocolError.
 */
export function decodeWriteRequestParts(r: Reader, tail: readonly Buffer[]): WriteRequestParts {
  const fields = decodeFields(r, OPS.write.req.slice(0, -1)) as Omit<Req<'write'>, 'data'>;
  let left = r.u32();
  const data: Buffer[] = [];
  for (const piece of tail) {
    if (left === 0) break;
    const take = piece.length <= left ? piece : piece.subarray(0, left);
    data.push(take);
    left -= take.length;
  }
  if (left > 0) throw new ProtocolError(`short frame: WRITE data ${left} bytes short`);
  return { ...fields, data };
}

/** A failed request's reply: the status alone. `op` is echoed as received, known or not. */
export function encodeErrorFrame(opCode: number, id: number, errno: number): Buffer {
  if (!(errno > 0)) throw new EncodeError(`bad errno ${errno}`);
  return finish(frameWriter(4).i32(errno), opCode, FLAG_REPLY, id, 0);
}

/**
 * Cuts a byte stream into frames. Frames within one chunk are returned as views of it (Node
 * allocates each socket chunk afresh, so a view stays valid); so are frames over chunks that lie
 * one after the other in memory (a plain link reads into slabs: transport.ts); others are copied.
 */
export class FrameSplitter {
  private chunks: Buffer[] = [];
  private size = 0;

  constructor(public maxFrame: number) {}

  get buffered(): number {
    return this.size;
  }

  /**
   * Bytes still to come of the frame begun: 0 when nothing is buffered (the next byte starts a
   * frame), -1 when that is not known (its length not in yet, or whole frames still waiting).
   */
  need(): number {
    if (this.size === 0) return 0;
    const first = this.chunks[0]!;
    if (first.length < 4) return -1;
    const length = first.readUInt32LE(0);
    return length > this.size ? length - this.size : -1;
  }

  push(chunk: Buffer): void {
    if (chunk.length === 0) return;
    this.size += chunk.length;
    const last = this.chunks.at(-1);
    if (last && last.buffer === chunk.buffer && last.byteOffset + last.length === chunk.byteOffset) {
      this.chunks[this.chunks.length - 1] = Buffer.from(last.buffer, last.byteOffset, last.length + chunk.length);
    } else {
      this.chunks.push(chunk);
    }
  }

  /** The bytes received so far, up to n (for error messages about a foreign peer). */
  peek(n: number): Buffer {
    return Buffer.concat(this.chunks).subarray(0, n);
  }

  /** The length of the next frame once its length field is in, checked. Throws ProtocolError on a bad one. */
  private nextLength(): number | undefined {
    if (this.size < 4) return undefined;
    let first = this.chunks[0]!;
    if (first.length < 4) {
      first = Buffer.concat(this.chunks);
      this.chunks = [first];
    }
    const length = first.readUInt32LE(0);
    if (length < HEADER_SIZE) throw new ProtocolError(`frame length ${length} is shorter than the header`);
    if (length > this.maxFrame) throw new ProtocolError(`frame length ${length} is over the limit of ${this.maxFrame}`);
    return length;
  }

  /** The next whole frame, or undefined until more bytes come. Throws ProtocolError on a bad length. */
  next(): Buffer | undefined {
    const length = this.nextLength();
    if (length === undefined || this.size < length) return undefined;
    return this.take(length);
  }

  /**
   * Like next(), except for a frame of op `op` and at least `min` bytes (min >= head) over chunks
   * that do not lie one after the other: that one comes as its first `head` bytes, copied
   * together, and views of the rest where they lie, so a receiver that can use the bytes in pieces
   * (the server's WRITE, by pwritev) copies none of them.
   */
  nextParts(op: number, head: number, min: number): Buffer | { head: Buffer; tail: Buffer[] } | undefined {
    const length = this.nextLength();
    if (length === undefined || this.size < length) return undefined;
    if (length < min || this.chunks[0]!.length >= length || (this.byteAt(4) | (this.byteAt(5) << 8)) !== op) return this.take(length);
    // A frame that trickled in as many small chunks is joined after all: its pieces would cost
    // more than the copy (and a pwritev takes at most IOV_MAX).
    let spanned = 0;
    for (let at = 0; at < length && spanned <= PARTS_MAX; spanned++) at += this.chunks[spanned]!.length;
    if (spanned > PARTS_MAX) return this.take(length);
    return this.cut(length, head);
  }

  /** Byte i of what is buffered (i < size). */
  private byteAt(i: number): number {
    for (const c of this.chunks) {
      if (i < c.length) return c[i]!;
      i -= c.length;
    }
    return 0;
  }

  /** The first `length` bytes buffered, as one Buffer: a view where they lie in one chunk, else a copy. */
  private take(length: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length < length) return this.cut(length, length).head;
    if (first.length === length) this.chunks.shift();
    else this.chunks[0] = first.subarray(length);
    this.size -= length;
    return first.subarray(0, length);
  }

  /** Takes the first `length` bytes buffered: the first `head` of them copied together, the rest as views. */
  private cut(length: number, head: number): { head: Buffer; tail: Buffer[] } {
    const start = Buffer.allocUnsafe(head);
    const tail: Buffer[] = [];
    let at = 0;
    let used = 0;
    while (at < length) {
      const c = this.chunks[used]!;
      const n = Math.min(c.length, length - at);
      if (at < head) c.copy(start, at, 0, Math.min(n, head - at));
      if (at + n > head) tail.push(c.subarray(Math.max(0, head - at), n));
      at += n;
      if (n === c.length) used++;
      else this.chunks[used] = c.subarray(n);
    }
    // One splice, not a shift per chunk: a peer that drips a frame a byte at a time must not cost
    // time quadratic in its length.
    this.chunks.splice(0, used);
    this.size -= length;
    return { head: start, tail };
  }
}

/** The one-line complaint about a peer of another protocol version, worded from `self`'s side. */
export function versionMismatch(peerRole: 'server' | 'client', peerMajor: number, peerMinor: number): string {
  const selfRole = peerRole === 'server' ? 'client' : 'server';
  return `${peerRole} speaks wirefs protocol ${peerMajor}.${peerMinor}, this ${selfRole} ${VERSION_MAJOR}.${VERSION_MINOR}`;
}

/** What a foreign peer sent, quoted for a one-line message: printable ASCII up to the first line end. */
export function quoteForeign(bytes: Buffer): string {
  const text = bytes.subarray(0, 60).toString('latin1').split(/[\r\n]/)[0] ?? '';
  const printable = /^[\x20-\x7e]*$/.test(text) && text.length > 0;
  return printable ? `"${text}"` : `${bytes.length} bytes that are not a wirefs frame`;
}
