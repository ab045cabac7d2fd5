// The wire codecs: the header layout is pinned, every op's request and reply survive a round trip
// through the table, fixed compound sizes are what PROTOCOL.md says, bad values refuse to encode,
// random and mutated frames only ever throw ProtocolError, and the doc lists every op as the table has it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import fc from 'fast-check';
import { ProtocolError, Reader, Writer } from '../../src/lib/bytes.js';
import { FIELDS, EncodeError, type FieldType } from '../../src/wire/codec.js';
import {
  FLAG_NOREPLY, FLAG_PUSH, FLAG_REPLY, FrameSplitter, HEADER_SIZE, MAGIC, decodeHeader, encodeErrorFrame,
  encodePushFrame, encodeReadReplyParts, encodeReplyFrame, encodeRequestFrame, encodeWriteRequestParts, WRITE_HEAD, WRITE_PARTS_MIN,
  decodeWriteRequestParts,
} from '../../src/wire/frame.js';
import { OPS, OP_BY_CODE, decodeRep, decodeReq, describeOps, opLabel, type OpName } from '../../src/wire/ops.js';
import { SEQ_WINDOW } from '../../src/wire/seq.js';
import { Slabs } from '../../src/wire/transport.js';
import { ROOT } from '../helpers/wirefs.js';

const ts = { sec: 1_700_000_000, nsec: 123_456_789 };
const attr = { ino: 42, size: 5000, blocks: 16, atime: ts, mtime: { sec: -5, nsec: 0 }, ctime: ts, mode: 0o100644, nlink: 1, uid: 1000, gid: 100, rdev: 0, blksize: 4096 };
const entry = { nodeid: 7, generation: 1, attr };

/** A representative value of each field type (non-trivial, so a swapped field shows). */
const SAMPLES: { [T in FieldType]: unknown } = {
  u8: 200, u16: 65000, u32: 0xfffffffe, i32: -22, u64: Number.MAX_SAFE_INTEGER, i64: -1, u64big: 0xfedcba9876543210n,
  bool: true, optu64: 99, magic: MAGIC, str: 'naïve file ☃.txt', blob: Buffer.from([0, 1, 2, 255]), strlist: ['user.a', 'trusted.b', ''],
  timespec: ts, ctx: { uid: 1000, gid: 100, pid: 4242 }, attr, tailattr: attr, writeattr: attr, taileof: true, entry,
  setattr: { mode: 0o600, size: 10, atime: 'now', mtime: ts },
  open: { fh: 3, directIo: true, nonSeekable: true },
  statfs: { blocks: 1e9, bfree: 5e8, bavail: 4e8, files: 1e6, ffree: 9e5, bsize: 4096, namelen: 255, frsize: 4096 },
  direntries: [
    { name: '.', ino: 1, type: 0o040000, off: 1 },
    { name: 'f', ino: 42, type: 0o100000, off: 2, entry },
  ],
  change: { kind: 'delete', parent: 1, child: 7, name: 'gone' },
  reserved: [{ entry, open: { fh: 3 } }, { entry: { ...entry, nodeid: 8 }, open: { fh: 4, keepCache: true } }],
};

function sampleOf(schema: readonly (readonly [string, FieldType])[]): Record<string, unknown> {
  return Object.fromEntries(schema.map(([name, type]) => [name, SAMPLES[type]]));
}

test('frame header: 16 bytes, little-endian length, op, flags, id, seq', () => {
  const f = encodeRequestFrame('ping', 0x01020304, 0x0a0b0c0d, {});
  assert.deepEqual([...f], [16, 0, 0, 0, 2, 0, 0, 0, 4, 3, 2, 1, 0x0d, 0x0c, 0x0b, 0x0a]);
  const forget = encodeRequestFrame('forget', 5, 0, { nodeid: 2, nlookup: 3 });
  assert.equal(forget.length, HEADER_SIZE + 16);
  assert.equal(forget.readUInt16LE(6), FLAG_NOREPLY);
  const err = encodeErrorFrame(16, 9, 2);
  assert.deepEqual([...err], [20, 0, 0, 0, 16, 0, FLAG_REPLY, 0, 9, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0]);
  const push = encodePushFrame('change', { event: { kind: 'entry', parent: 1, name: 'x' } });
  assert.deepEqual(decodeHeader(new Reader(push)), { length: push.length, op: OPS.change.code, flags: FLAG_PUSH, id: 0, seq: 0 });
});

test('fixed compound codecs have the documented sizes', () => {
  const expected: Partial<Record<FieldType, number>> = { timespec: 12, ctx: 12, attr: 84, entry: 100, setattr: 48, open: 12, statfs: 52, optu64: 9, magic: 8 };
  for (const [type, size] of Object.entries(expected) as [FieldType, number][]) {
    assert.equal(FIELDS[type].size, size, type);
    const w = new Writer();
    (FIELDS[type] as { enc(w: Writer, v: unknown): void }).enc(w, SAMPLES[type]);
    assert.equal(w.pos, size, `${type} encodes to its size`);
  }
});

test('every op: request and reply round-trip through the table', () => {
  const codes = new Set<number>();
  for (const op of Object.keys(OPS) as OpName[]) {
    const spec = OPS[op];
    assert.ok(!codes.has(spec.code), `duplicate code ${spec.code}`);
    codes.add(spec.code);
    assert.equal(OP_BY_CODE.get(spec.code), op);
    const req = sampleOf(spec.req);
    const frame = spec.kind === 'push' ? encodePushFrame(op, req as never) : encodeRequestFrame(op, 77, 5, req as never);
    const r = new Reader(frame);
    const h = decodeHeader(r);
    assert.equal(h.length, frame.length);
    assert.equal(h.op, spec.code);
    assert.deepEqual(decodeReq(r, op), req, `${op} request`);
    assert.equal(r.remaining, 0, `${op} request has no slack`);
    if (spec.kind === 'call') {
      const rep = sampleOf(spec.rep);
      const rf = encodeReplyFrame(op, 77, rep as never);
      const rr = new Reader(rf);
      assert.equal(decodeHeader(rr).flags, FLAG_REPLY);
      assert.equal(rr.i32(), 0);
      assert.deepEqual(decodeRep(rr, op), rep, `${op} reply`);
      assert.equal(rr.remaining, 0);
    }
  }
});

test('a READDIR reply without eof (an older server) decodes as unknown, and false stays false', () => {
  const entries = SAMPLES.direntries as never;
  for (const eof of [undefined, false, true]) {
    const rr = new Reader(encodeReplyFrame('readdir', 3, { entries, eof }));
    decodeHeader(rr);
    assert.equal(rr.i32(), 0);
    assert.equal(decodeRep(rr, 'readdir').eof, eof);
  }
});

test('a READ reply in two parts is the same bytes as the whole frame', () => {
  for (const len of [0, 1, 4096, 1 << 20]) {
    const data = Buffer.alloc(len);
    for (let i = 0; i < len; i++) data[i] = (i * 31) & 0xff;
    const parts = encodeReadReplyParts(0xfffffffe, data);
    assert.equal(parts[1], data, 'the data itself, not a copy');
    assert.deepEqual(Buffer.concat(parts), encodeReplyFrame('read', 0xfffffffe, { data }), `${len} bytes`);
  }
});

test('a WRITE request in two parts is the same bytes as the whole frame', () => {
  const ctx = { uid: 1000, gid: 100, pid: 7 };
  for (const len of [0, 1, 65536, 1 << 20]) {
    const data = Buffer.alloc(len);
    for (let i = 0; i < len; i++) data[i] = (i * 17) & 0xff;
    const req = { ctx, nodeid: 42, fh: 9, offset: 2 ** 40 + 3, data };
    const parts = encodeWriteRequestParts(0xfffffffe, 77, req);
    assert.equal(parts[1], data, 'the data itself, not a copy');
    assert.deepEqual(Buffer.concat(parts), encodeRequestFrame('write', 0xfffffffe, 77, req), `${len} bytes`);
  }
  assert.throws(() => encodeWriteRequestParts(1, 1, { ctx, nodeid: 1, fh: 1, offset: -1, data: Buffer.alloc(1) }), EncodeError);
});

test('a big WRITE over separate chunks comes out as its head and views of the rest, decoded as the whole frame is', () => {
  let split = 0;
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 200_000 }), { minLength: 1, maxLength: 20 }), (cuts) => {
    const ctx = { uid: 1000, gid: 100, pid: 7 };
    const data = Buffer.alloc(300_000);
    for (let i = 0; i < data.length; i++) data[i] = (i * 31) & 0xff;
    const write = encodeRequestFrame('write', 5, 9, { ctx, nodeid: 42, fh: 3, offset: 2 ** 33, data });
    const small = encodeRequestFrame('write', 6, 10, { ctx, nodeid: 42, fh: 3, offset: 0, data: Buffer.alloc(100, 1) });
    const other = encodeRequestFrame('setxattr', 7, 11, { ctx, nodeid: 1, name: 'user.big', value: Buffer.alloc(WRITE_PARTS_MIN, 2), flags: 0 });
    const frames = [small, write, other, write];
    const stream = Buffer.concat(frames);
    const s = new FrameSplitter(1 << 20);
    const got: (Buffer | { head: Buffer; tail: Buffer[] })[] = [];
    const take = (): Buffer | { head: Buffer; tail: Buffer[] } | undefined => s.nextParts(OPS.write.code, WRITE_HEAD, WRITE_PARTS_MIN);
    for (let at = 0, i = 0; at < stream.length; i++) {
      const n = cuts[i % cuts.length]!;
      // Each chunk its own allocation, as Node's socket reads are: never one after the other.
      s.push(Buffer.from(stream.subarray(at, at + n)));
      at += n;
      for (let f = take(); f; f = take()) got.push(f);
    }
    assert.equal(s.buffered, 0);
    assert.equal(got.length, frames.length);
    got.forEach((f, i) => {
      const whole = Buffer.isBuffer(f) ? f : Buffer.concat([f.head, ...f.tail]);
      assert.deepEqual(whole, frames[i], `frame ${i}`);
      // Small frames and other ops than WRITE come whole.
      if (i === 0 || i === 2) assert.ok(Buffer.isBuffer(f), `frame ${i} whole`);
      if (Buffer.isBuffer(f)) return;
      split++;
      assert.equal(f.head.length, WRITE_HEAD);
      const r = new Reader(f.head);
      decodeHeader(r);
      const parts = decodeWriteRequestParts(r, f.tail);
      assert.deepEqual({ ...parts, data: Buffer.concat(parts.data) }, decodeReq(new Reader(frames[i]!, HEADER_SIZE), 'write'));
      // The data are views of the chunks, not copies.
      const chunks = new Set(f.tail.map((t) => t.buffer));
      for (const piece of parts.data) assert.ok(chunks.has(piece.buffer));
      assert.ok(f.tail.length <= 65, `${f.tail.length} pieces`);
    });
  }), { numRuns: 50 });
  assert.ok(split > 0, 'some WRITEs came in pieces');
});

test('a WRITE whose pieces hold less than its length says is refused', () => {
  const ctx = { uid: 1, gid: 1, pid: 1 };
  const [head, data] = encodeWriteRequestParts(1, 1, { ctx, nodeid: 1, fh: 1, offset: 0, data: Buffer.alloc(WRITE_PARTS_MIN, 3) });
  const r = new Reader(head);
  decodeHeader(r);
  assert.throws(() => decodeWriteRequestParts(r, [data.subarray(0, WRITE_PARTS_MIN - 1)]), ProtocolError);
  const again = new Reader(head);
  decodeHeader(again);
  // Bytes after the data are ignored, as decodeReq ignores them.
  assert.equal(Buffer.concat(decodeWriteRequestParts(again, [data, Buffer.alloc(5)]).data).length, WRITE_PARTS_MIN);
});

test('values the wire cannot carry refuse to encode', () => {
  const ctx = { uid: 0, gid: 0, pid: 0 };
  assert.throws(() => encodeRequestFrame('read', 1, 0, { ctx, nodeid: 1, fh: 1, offset: -1, size: 1 }), EncodeError);
  assert.throws(() => encodeRequestFrame('read', 1, 0, { ctx, nodeid: 1, fh: 1, offset: 2 ** 60, size: 1 }), EncodeError);
  assert.throws(() => encodeRequestFrame('access', 1, 0, { ctx, nodeid: 1.5, mask: 0 }), EncodeError);
  assert.throws(() => encodeRequestFrame('mkdir', 1, 0, { ctx: { uid: -1, gid: 0, pid: 0 }, parent: 1, name: 'x', mode: 0 }), EncodeError);
});

test('decoders reject what no sender produces', () => {
  const body = (fill: (w: Writer) => void): Reader => {
    const w = new Writer();
    fill(w);
    return new Reader(Buffer.from(w.done()));
  };
  assert.throws(() => FIELDS.bool.dec(body((w) => w.u8(2))), ProtocolError);
  assert.throws(() => FIELDS.timespec.dec(body((w) => w.i64(0).u32(1e9))), ProtocolError);
  assert.throws(() => FIELDS.str.dec(body((w) => w.u32(2).u8(0xc3).u8(0x28))), ProtocolError);
  assert.throws(() => FIELDS.strlist.dec(body((w) => w.u32(0xffffffff))), ProtocolError);
  assert.throws(() => FIELDS.change.dec(body((w) => w.u8(9))), ProtocolError);
  assert.throws(() => FIELDS.setattr.dec(body((w) => w.u32(0x100).zeros(44))), ProtocolError);
  const split = new FrameSplitter(1024);
  split.push(Buffer.from([0, 8, 0, 0]));
  assert.throws(() => split.next(), /over the limit/);
  const short = new FrameSplitter(1024);
  short.push(Buffer.from([8, 0, 0, 0]));
  assert.throws(() => short.next(), ProtocolError);
});

test('the splitter reassembles frames cut anywhere', () => {
  fc.assert(fc.property(fc.array(fc.integer({ min: 1, max: 40 }), { minLength: 1, maxLength: 30 }), (cuts) => {
    const frames = [
      encodeRequestFrame('lookup', 1, 0, { ctx: { uid: 1, gid: 2, pid: 3 }, parent: 1, name: 'abc' }),
      encodeRequestFrame('ping', 2, 0, {}),
      encodeRequestFrame('write', 3, 1, { ctx: { uid: 1, gid: 2, pid: 3 }, nodeid: 5, fh: 6, offset: 7, data: Buffer.alloc(100, 9) }),
    ];
    const stream = Buffer.concat(frames);
    const s = new FrameSplitter(4096);
    const got: Buffer[] = [];
    let at = 0;
    for (let i = 0; at < stream.length; i++) {
      const n = cuts[i % cuts.length]!;
      s.push(stream.subarray(at, at + n));
      at += n;
      for (let f = s.next(); f; f = s.next()) got.push(Buffer.from(f));
    }
    assert.deepEqual(got, frames);
    assert.equal(s.buffered, 0);
  }));
});

/**
 * Feeds `stream` to the splitter through `slabs`, each read filling part of what next() offers (as
 * recv(2) would: `cuts` bytes, in turn); the frames as the splitter gave them.
 */
function readThrough(stream: Buffer, cuts: number[], slabs: Slabs, s: FrameSplitter, separate = false): Buffer[] {
  const out: Buffer[] = [];
  for (let at = 0, i = 0; at < stream.length; i++) {
    const room = slabs.next();
    const n = Math.min(cuts[i % cuts.length]!, room.length, stream.length - at);
    stream.copy(room, 0, at, at + n);
    const chunk = slabs.take(room, n);
    at += n;
    // Chunks that are not one after the other in memory (another allocator) are copied together.
    s.push(separate ? Buffer.from(chunk) : chunk);
    for (let f = s.next(); f; f = s.next()) out.push(f);
  }
  assert.equal(s.buffered, 0);
  return out;
}

/** A view of a slab, not a copy. */
const inSlab = (f: Buffer): boolean => f.buffer.byteLength === 4 << 20;

test('frames read into slabs one after the other come out as views, not copies', () => {
  // Reads of 1 KiB at least: 7 MiB in byte-sized reads, each copied (separate), runs for minutes
  // (the test above cuts small frames anywhere).
  fc.assert(fc.property(fc.array(fc.integer({ min: 1024, max: 300_000 }), { minLength: 1, maxLength: 20 }), fc.boolean(), (cuts, separate) => {
    const frames = [200_000, 1 << 20, 10, 700_000, 3000, 2 << 20].map((n, i) =>
      encodeReplyFrame('read', i + 1, { data: Buffer.alloc(n, i + 1) }));
    const got = readThrough(Buffer.concat(frames), cuts, new Slabs(), new FrameSplitter(4 << 20), separate);
    assert.deepEqual(got, frames);
    const views = got.filter(inSlab).length;
    // 7 MiB over 4 MiB slabs: at most two frames cross a slab's end; the rest are views of one.
    if (separate) assert.equal(views, 0);
    else assert.ok(views >= frames.length - 2, `${views} views`);
  }), { numRuns: 30, endOnFailure: true });
});

test('with the splitter telling what a frame still needs, no 1 MiB read reply crosses a slab', () => {
  // Sequential reads: 1 MiB replies with small frames between; each read takes what the socket
  // has (any cut), so frames start anywhere in a read unless the slab cuts reads at frame ends.
  const frames = Array.from({ length: 14 }, (_, i) =>
    encodeReplyFrame('read', i + 1, { data: Buffer.alloc(i % 3 === 2 ? 40 : (1 << 20) - (i % 2) * 5000, i + 1) }));
  const stream = Buffer.concat(frames);
  const copies = (hinted: boolean, cuts: number[]): number => {
    const s = new FrameSplitter(4 << 20);
    const got = readThrough(stream, cuts, new Slabs(hinted ? s : undefined), s);
    assert.deepEqual(got, frames);
    return got.filter((f) => !inSlab(f)).length;
  };
  fc.assert(fc.property(fc.array(fc.integer({ min: 1024, max: 600_000 }), { minLength: 1, maxLength: 10 }), (cuts) => {
    assert.equal(copies(true, cuts), 0);
  }), { numRuns: 30, endOnFailure: true });
  // Without the hint, reads run on across frame ends and some frames straddle two slabs.
  assert.ok(copies(false, [64 << 10]) > 0);
});

test('a slab never hands out again bytes a read filled', () => {
  const slabs = new Slabs();
  const room = slabs.next();
  const first = slabs.take(room, 100);
  const second = slabs.next();
  assert.equal(second.byteOffset, first.byteOffset + 100);
  // A read into a later part of the slab (not what next() offered) still keeps what it filled.
  slabs.take(second.subarray(50), 10);
  assert.equal(slabs.next().byteOffset, first.byteOffset + 160);
});

/** Decodes a frame the way a peer would; the only failure allowed is ProtocolError. */
function decodeAsPeer(bytes: Uint8Array): void {
  const s = new FrameSplitter(1 << 16);
  s.push(Buffer.from(bytes));
  for (let f = s.next(); f; f = s.next()) {
    const r = new Reader(f);
    const h = decodeHeader(r);
    const op = OP_BY_CODE.get(h.op);
    if (!op) continue;
    if (h.flags & FLAG_REPLY) {
      if (r.i32() === 0) decodeRep(r, op);
    } else decodeReq(r, op);
  }
}

test('random and mutated frames only ever throw ProtocolError', () => {
  const valid = (Object.keys(OPS) as OpName[]).flatMap((op) => {
    const spec = OPS[op];
    const out = [encodeRequestFrame(op, 1, 0, sampleOf(spec.req) as never)];
    if (spec.kind === 'call') out.push(encodeReplyFrame(op, 1, sampleOf(spec.rep) as never));
    return out;
  });
  const check = (bytes: Uint8Array): boolean => {
    try {
      decodeAsPeer(bytes);
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err;
    }
    return true;
  };
  fc.assert(fc.property(fc.uint8Array({ maxLength: 300 }), check), { numRuns: 2000 });
  const mutated = fc.tuple(fc.constantFrom(...valid), fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat())
    .map(([frame, edits, cut]) => {
      const b = Buffer.from(frame);
      // Mutate the body (a mutated length would only make the frame incomplete), then maybe truncate
      // while keeping the header's length consistent so the decoder sees the short body.
      for (const [pos, v] of edits) if (b.length > HEADER_SIZE) b[HEADER_SIZE + (pos % (b.length - HEADER_SIZE))] = v;
      const len = HEADER_SIZE + (cut % (b.length - HEADER_SIZE + 1));
      const t = Buffer.from(b.subarray(0, len));
      t.writeUInt32LE(len, 0);
      return t;
    });
  fc.assert(fc.property(mutated, check), { numRuns: 3000 });
});

test('docs/PROTOCOL.md carries the generated op tables, every op included', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs/PROTOCOL.md'), 'utf8');
  const m = /<!-- ops:begin -->\n([\s\S]*?)<!-- ops:end -->/.exec(doc);
  assert.ok(m, 'PROTOCOL.md has the ops:begin/ops:end markers');
  for (const op of Object.keys(OPS) as OpName[]) assert.ok(m[1]!.includes(`### ${opLabel(op)} (${OPS[op].code})`), `${opLabel(op)} is documented`);
  // Regenerate with: node -e "import('./dist/src/wire/ops.js').then(m => console.log(m.describeOps()))"
  assert.equal(m[1]!.trim(), describeOps().trim(), 'the op section matches the table (regenerate it)');
  // The session rules the code keeps are the ones the page states.
  const sessions = /## Sessions and exactly-once\n([\s\S]*?)\n## /.exec(doc)?.[1] ?? '';
  for (const rule of ['HELLO with its session id', 'BYE', `${SEQ_WINDOW} or more behind`, 'reply cache', 'EEXIST', 'grace period']) {
    assert.ok(sessions.includes(rule), `PROTOCOL.md's sessions section states: ${rule}`);
  }
});
