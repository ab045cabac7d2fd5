// Fuzzing every decoder a peer's bytes reach: the frame splitter, the header, each op's request,
// reply and push body (wire), and each FUSE request decoder (src/fuse/abi.ts). Inputs are built
// field by field from the op table (so the decoders get past their first field), then mutated:
// bytes flipped, inserted, deleted, the frame cut short, the length or op made to lie. The one
// exception allowed out is ProtocolError.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { ProtocolError, Reader, Writer } from '../../src/lib/bytes.js';
import * as abi from '../../src/fuse/abi.js';
import { FIELDS, type FieldType } from '../../src/wire/codec.js';
import { FLAG_PUSH, FLAG_REPLY, FrameSplitter, HEADER_SIZE, decodeHeader } from '../../src/wire/frame.js';
import { OPS, OP_BY_CODE, decodeRep, decodeReq, type OpName } from '../../src/wire/ops.js';

/** Runs fn; passes if it returns or throws ProtocolError, fails the property on anything else. */
function onlyProtocolErrors(what: string, fn: () => void): void {
  try {
    fn();
  } catch (err) {
    if (!(err instanceof ProtocolError)) assert.fail(`${what} threw ${(err as Error)?.stack ?? String(err)}`);
  }
}

const u32le = (n: number): Buffer => {
  const b = Buffer.alloc(4);
  b.writeUInt32LE(n >>> 0);
  return b;
};

/** Raw bytes of a fixed size, sometimes shaped so numbers are small and booleans 0/1 (valid-looking). */
const shaped = (size: number): fc.Arbitrary<Buffer> =>
  fc.tuple(fc.uint8Array({ minLength: size, maxLength: size }), fc.integer({ min: 0, max: 2 })).map(([b, mode]) => {
    const out = Buffer.from(b);
    if (mode === 1) for (let i = 0; i < out.length; i++) if (i % 4 >= 2) out[i] = 0;
    if (mode === 2) for (let i = 0; i < out.length; i++) out[i] = out[i]! & 1;
    return out;
  });

/** A length prefix that usually tells the truth and sometimes lies. */
const prefixed = (body: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> =>
  fc.tuple(body, fc.oneof({ weight: 4, arbitrary: fc.constant(-1) }, fc.nat({ max: 0xffffffff }))).map(([b, lie]) =>
    Buffer.concat([u32le(lie < 0 ? b.length : lie), b]));

const strBytes = prefixed(fc.oneof(fc.string({ maxLength: 20, unit: 'grapheme' }).map((s) => Buffer.from(s)), fc.uint8Array({ maxLength: 20 }).map((b) => Buffer.from(b))));
const blobBytes = prefixed(fc.uint8Array({ maxLength: 64 }).map((b) => Buffer.from(b)));
const listOf = (item: fc.Arbitrary<Buffer>): fc.Arbitrary<Buffer> =>
  fc.tuple(fc.array(item, { maxLength: 4 }), fc.oneof({ weight: 4, arbitrary: fc.constant(-1) }, fc.nat({ max: 0xffffffff }))).map(([items, lie]) =>
    Buffer.concat([u32le(lie < 0 ? items.length : lie), ...items]));
const direntBytes = fc.tuple(shaped(20), fc.boolean(), strBytes, shaped(100)).map(([fixed, has, name, entry]) =>
  Buffer.concat([fixed, Buffer.from([has ? 1 : 0]), name, has ? entry : Buffer.alloc(0)]));
const changeBytes = fc.tuple(fc.integer({ min: 0, max: 4 }), shaped(24), strBytes).map(([kind, fixed, name]) =>
  Buffer.concat([Buffer.from([kind]), kind === 1 ? fixed : fixed.subarray(0, kind === 3 ? 16 : 8), kind === 1 ? Buffer.alloc(0) : name]));

function fieldBytes(type: FieldType): fc.Arbitrary<Buffer> {
  switch (type) {
    case 'str': return strBytes;
    case 'blob': return blobBytes;
    case 'strlist': return listOf(strBytes);
    case 'direntries': return listOf(direntBytes);
    // Entry (100) and OpenResult (12) per reserved file.
    case 'reserved': return listOf(shaped(112));
    case 'change': return changeBytes;
    case 'optu64': return fc.tuple(fc.integer({ min: 0, max: 2 }), shaped(8)).map(([b, v]) => Buffer.concat([Buffer.from([b]), v]));
    case 'magic': return fc.constant(Buffer.from('WIREFS\0\0', 'latin1'));
    // Present (84 bytes) or absent (the message ends), as a 1.0 server would send it.
    case 'tailattr':
    case 'writeattr': return fc.oneof(fc.constant(Buffer.alloc(0)), shaped(84));
    // A byte (1.3) or nothing, likewise.
    case 'taileof': return fc.oneof(fc.constant(Buffer.alloc(0)), shaped(1));
    default: {
      const size = FIELDS[type].size;
      assert.ok(size !== undefined, `${type} needs a generator`);
      return shaped(size);
    }
  }
}

const schemaBytes = (schema: readonly (readonly [string, FieldType])[]): fc.Arbitrary<Buffer> =>
  fc.tuple(...schema.map(([, t]) => fieldBytes(t))).map((parts) => Buffer.concat(parts));

function frame(op: number, flags: number, id: number, seq: number, body: Buffer): Buffer {
  const h = Buffer.alloc(HEADER_SIZE);
  h.writeUInt32LE(HEADER_SIZE + body.length, 0);
  h.writeUInt16LE(op & 0xffff, 4);
  h.writeUInt16LE(flags, 6);
  h.writeUInt32LE(id >>> 0, 8);
  h.writeUInt32LE(seq >>> 0, 12);
  return Buffer.concat([h, body]);
}

/** A plausible frame of any op in any direction (request, reply with status, push). */
const wellFormed: fc.Arbitrary<Buffer> = fc.constantFrom(...(Object.keys(OPS) as OpName[])).chain((op) => {
  const spec = OPS[op];
  const req = schemaBytes(spec.req).map((b) => frame(spec.code, spec.kind === 'push' ? FLAG_PUSH : 0, 1, 1, b));
  if (spec.kind !== 'call') return req;
  const rep = fc.tuple(fc.constantFrom(0, 0, 0, 2, -1), schemaBytes(spec.rep)).map(([status, b]) =>
    frame(spec.code, FLAG_REPLY, 1, 0, Buffer.concat([new Writer(4).i32(status).done(), b])));
  return fc.oneof(req, rep);
});

type Edit = { kind: 'flip' | 'insert' | 'delete'; pos: number; value: number };
const edits = fc.array(fc.record({ kind: fc.constantFrom('flip' as const, 'insert' as const, 'delete' as const), pos: fc.nat(), value: fc.integer({ min: 0, max: 255 }) }), { maxLength: 6 });

/** Mutates a frame: body edits, a cut, a header that lies about the length, the op or the flags. */
const mutated: fc.Arbitrary<Buffer> = fc.tuple(wellFormed, edits, fc.nat(), fc.integer({ min: 0, max: 5 }), fc.nat({ max: 0xffff })).map(
  ([f, es, cut, headerLie, lie]) => {
    const body = [...f.subarray(HEADER_SIZE)];
    for (const e of es as Edit[]) {
      const at = body.length ? e.pos % body.length : 0;
      if (e.kind === 'flip' && body.length) body[at] = e.value;
      else if (e.kind === 'insert') body.splice(at, 0, e.value);
      else if (e.kind === 'delete') body.splice(at, 1);
    }
    const keep = cut % (body.length + 1);
    let out = Buffer.concat([f.subarray(0, HEADER_SIZE), Buffer.from(body.slice(0, keep))]);
    out.writeUInt32LE(out.length, 0);
    if (headerLie === 1) out.writeUInt32LE(lie % (out.length + 40), 0);
    if (headerLie === 2) out.writeUInt16LE(lie, 4);
    if (headerLie === 3) out.writeUInt16LE(lie & 7, 6);
    if (headerLie === 4) out = out.subarray(0, lie % (out.length + 1));
    return out;
  });

/** Decodes a byte stream the way either peer would, given in random chunks. */
function decodeStream(bytes: Buffer, cuts: number[]): number {
  let decoded = 0;
  const s = new FrameSplitter(1 << 16);
  let at = 0;
  for (let i = 0; at < bytes.length; i++) {
    const n = cuts.length ? cuts[i % cuts.length]! : bytes.length;
    s.push(bytes.subarray(at, at + n));
    at += n;
    for (let f = s.next(); f; f = s.next()) {
      const r = new Reader(f);
      const h = decodeHeader(r);
      const op = OP_BY_CODE.get(h.op);
      if (!op) continue;
      if (h.flags & FLAG_REPLY) {
        if (r.i32() === 0) decodeRep(r, op);
      } else decodeReq(r, op);
      decoded++;
    }
  }
  return decoded;
}

test('wire: well-formed frames of every op decode', () => {
  let runs = 0;
  let decoded = 0;
  fc.assert(fc.property(wellFormed, (f) => {
    runs++;
    onlyProtocolErrors('decoder', () => void (decoded += decodeStream(f, [])));
  }), { numRuns: 3000 });
  // The generator must mostly make frames that pass, or the mutations below start from noise.
  assert.ok(decoded > runs / 4, `only ${decoded} of ${runs} generated frames decoded`);
});

test('wire: mutated frames, alone or in streams cut at random, only throw ProtocolError', () => {
  fc.assert(fc.property(fc.array(mutated, { minLength: 1, maxLength: 6 }), fc.array(fc.integer({ min: 1, max: 50 }), { maxLength: 8 }), (fs, cuts) =>
    onlyProtocolErrors('decoder', () => void decodeStream(Buffer.concat(fs), cuts))), { numRuns: 6000 });
});

test('wire: random bytes only throw ProtocolError', () => {
  fc.assert(fc.property(fc.uint8Array({ maxLength: 400 }), (b) => onlyProtocolErrors('decoder', () => void decodeStream(Buffer.from(b), []))), { numRuns: 3000 });
});

test('fuse: every request decoder on shaped, named and random bodies only throws ProtocolError', () => {
  const keys = Object.keys(abi.decoders) as abi.HandlerKey[];
  const name = fc.string({ maxLength: 12 }).map((s) => Buffer.from(s + '\0'));
  const body = fc.tuple(fc.integer({ min: 0, max: 112 }).chain((n) => shaped(n)), fc.array(name, { maxLength: 2 }), fc.uint8Array({ maxLength: 40 }), fc.boolean())
    .map(([fixed, names, tail, withTail]) => Buffer.concat([fixed, ...names, withTail ? Buffer.from(tail) : Buffer.alloc(0)]));
  fc.assert(fc.property(fc.constantFrom(...keys), body, (key, b) =>
    onlyProtocolErrors(`fuse decoder ${key}`, () => void abi.decoders[key](new Reader(b)))), { numRuns: 20000 });
  fc.assert(fc.property(shaped(abi.IN_HEADER_SIZE), fc.nat({ max: abi.IN_HEADER_SIZE }), (b, cut) =>
    onlyProtocolErrors('fuse in-header', () => void abi.decodeInHeader(new Reader(b.subarray(0, cut))))), { numRuns: 2000 });
});
