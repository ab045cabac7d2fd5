// Byte cursor reader and writer for the fixed-layout little-endian codecs (FUSE ABI and the wire).
// The reader throws one ProtocolError on any short or malformed input; callers catch it only at
// the session boundary.

export class ProtocolError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProtocolError';
  }
}

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);

export class Reader {
  pos: number;
  constructor(readonly buf: Buffer, start = 0, readonly end = buf.length) {
    this.pos = start;
  }
  get remaining(): number {
    return this.end - this.pos;
  }
  private need(n: number): number {
    if (n < 0 || this.pos + n > this.end) {
      throw new ProtocolError(`short frame: need ${n} bytes at offset ${this.pos}, have ${this.end - this.pos}`);
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }
  u8(): number { return this.buf.readUInt8(this.need(1)); }
  u16(): number { return this.buf.readUInt16LE(this.need(2)); }
  u32(): number { return this.buf.readUInt32LE(this.need(4)); }
  i32(): number { return this.buf.readInt32LE(this.need(4)); }
  /** A 64-bit unsigned field that must fit a JS number (sizes, offsets, inode numbers). */
  u64(): number {
    const v = this.buf.readBigUInt64LE(this.need(8));
    if (v > MAX_SAFE) throw new ProtocolError(`64-bit field out of range: ${v}`);
    return Number(v);
  }
  /** A 64-bit field kept opaque (file handles, lock owners, feature masks). */
  u64big(): bigint { return this.buf.readBigUInt64LE(this.need(8)); }
  i64(): number {
    const v = this.buf.readBigInt64LE(this.need(8));
    if (v > MAX_SAFE || v < -MAX_SAFE) throw new ProtocolError(`64-bit field out of range: ${v}`);
    return Number(v);
  }
  skip(n: number): void { this.need(n); }
  /** A view into the frame: valid only while the frame is being handled. */
  bytes(n: number): Buffer {
    const p = this.need(n);
    return this.buf.subarray(p, p + n);
  }
  rest(): Buffer { return this.bytes(this.remaining); }
  /** A NUL-terminated string (FUSE names). */
  cstring(): string {
    const nul = this.buf.indexOf(0, this.pos);
    if (nul < 0 || nul >= this.end) throw new ProtocolError('unterminated string');
    const s = this.buf.toString('utf8', this.pos, nul);
    this.pos = nul + 1;
    return s;
  }
}

export class Writer {
  buf: Buffer;
  pos = 0;
  constructor(initial = 256) {
    this.buf = Buffer.allocUnsafe(initial);
  }
  // Callers must call room() before reading this.buf: it may swap in a bigger buffer.
  private room(n: number): number {
    if (this.pos + n > this.buf.length) {
      const next = Buffer.allocUnsafe(Math.max(this.buf.length * 2, this.pos + n));
      this.buf.copy(next, 0, 0, this.pos);
      this.buf = next;
    }
    const p = this.pos;
    this.pos += n;
    return p;
  }
  u8(v: number): this {
    const p = this.room(1);
    this.buf.writeUInt8(v, p);
    return this;
  }
  u16(v: number): this {
    const p = this.room(2);
    this.buf.writeUInt16LE(v, p);
    return this;
  }
  u32(v: number): this {
    const p = this.room(4);
    this.buf.writeUInt32LE(v >>> 0, p);
    return this;
  }
  i32(v: number): this {
    const p = this.room(4);
    this.buf.writeInt32LE(v, p);
    return this;
  }
  u64(v: number | bigint): this {
    const p = this.room(8);
    this.buf.writeBigUInt64LE(BigInt(v), p);
    return this;
  }
  i64(v: number | bigint): this {
    const p = this.room(8);
    this.buf.writeBigInt64LE(BigInt(v), p);
    return this;
  }
  zeros(n: number): this {
    const p = this.room(n);
    this.buf.fill(0, p, this.pos);
    return this;
  }
  bytes(b: Uint8Array): this {
    const p = this.room(b.length);
    this.buf.set(b, p);
    return this;
  }
  cstring(s: string): this {
    const n = Buffer.byteLength(s);
    const p = this.room(n + 1);
    this.buf.write(s, p, 'utf8');
    this.buf[p + n] = 0;
    return this;
  }
  /** Pads with zeros to a multiple of `align`. */
  align(align: number): this {
    const pad = (align - (this.pos % align)) % align;
    return pad ? this.zeros(pad) : this;
  }
  /** The bytes written so far (a view). */
  done(): Buffer { return this.buf.subarray(0, this.pos); }
}
