// The byte cursors: a growing Writer keeps every byte, and a Reader throws only ProtocolError.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Reader, Writer, ProtocolError } from '../../src/lib/bytes.js';

test('Writer grows without losing bytes, Reader reads them back', () => {
  fc.assert(fc.property(fc.array(fc.tuple(fc.integer({ min: 0, max: 0xffffffff }), fc.uint8Array({ maxLength: 40 }))), (items) => {
    const w = new Writer(1);
    for (const [n, b] of items) w.u32(n).u64(n).u8(n & 0xff).bytes(b).cstring('x');
    const r = new Reader(Buffer.from(w.done()));
    for (const [n, b] of items) {
      assert.equal(r.u32(), n);
      assert.equal(r.u64(), n);
      assert.equal(r.u8(), n & 0xff);
      assert.deepEqual(new Uint8Array(r.bytes(b.length)), b);
      assert.equal(r.cstring(), 'x');
    }
    assert.equal(r.remaining, 0);
  }));
});

test('Reader: short input and out-of-range 64-bit values are ProtocolErrors', () => {
  assert.throws(() => new Reader(Buffer.alloc(3)).u32(), ProtocolError);
  assert.throws(() => new Reader(Buffer.alloc(8, 0xff)).u64(), ProtocolError);
  assert.throws(() => new Reader(Buffer.from('abc')).cstring(), ProtocolError);
  assert.equal(new Reader(Buffer.alloc(8, 0xff)).u64big(), 0xffffffffffffffffn);
});
