// Cuts a TCP byte stream into frames. Shared by server and client: enforces the negotiated maximum
// frame size (a protocol error closes the connection) and never buffers more than one frame.

import { ProtocolError } from '../lib/bytes.js';
import { HEADER_SIZE } from './protocol.js';

export class FrameSplitter {
  private chunks: Buffer[] = [];
  private buffered = 0;

  constructor(public maxFrame: number) {}

  /** Feeds bytes; returns the complete frames they finish. Throws ProtocolError on a bad length. */
  push(data: Buffer): Buffer[] {
    this.chunks.push(data);
    this.buffered += data.length;
    const out: Buffer[] = [];
    for (;;) {
      if (this.buffered < HEADER_SIZE) break;
      const head = this.peek(4);
      const length = head.readUInt32LE(0);
      if (length < HEADER_SIZE) throw new ProtocolError(`frame length ${length} is shorter than the header`);
      if (length > this.maxFrame) throw new ProtocolError(`frame of ${length} bytes exceeds the limit of ${this.maxFrame}`);
      if (this.buffered < length) break;
      out.push(this.take(length));
    }
    return out;
  }

  /** The first bytes received, for an error message about a peer that speaks something else. */
  preview(): Buffer {
    return this.peek(Math.min(this.buffered, 64));
  }

  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    return Buffer.concat(this.chunks).subarray(0, n);
  }

  private take(n: number): Buffer {
    const first = this.chunks[0]!;
    let frame: Buffer;
    if (first.length >= n) {
      // A copy when the frame is a small part of a big chunk, so it does not pin the chunk.
      frame = first.length === n ? first : Buffer.from(first.subarray(0, n));
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
    } else {
      const all = Buffer.concat(this.chunks);
      frame = Buffer.from(all.subarray(0, n));
      this.chunks = all.length > n ? [all.subarray(n)] : [];
    }
    this.buffered -= n;
    return frame;
  }
}
