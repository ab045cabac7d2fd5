// The table of attributes the native reader answers GETATTRs from (native/wirefs_fuse.c,
// answer_attr), kept by the session as the Vfs publishes them (Vfs.offerAttrs). The kernel asks
// again for a directory's attributes after every name made or removed in it, for its next
// permission check; answered in C, such a GETATTR costs no JavaScript at all.
//
// Slot nodeid % SLOTS, ATTR_SLOT bytes: nodeid u64 (0: empty), expiry f64 (ms since the epoch),
// then the struct fuse_attr_out of the reply. A node whose slot another took is answered by
// JavaScript, as before.

import { Writer } from '../lib/bytes.js';
import type { Attr, AttrSink } from '../vfs/types.js';
import { ATTR_OUT_SIZE, encodeAttrOut } from './abi.js';

export const ATTR_SLOT = 128;
const SLOTS = 4096;

export class NativeAttrs implements AttrSink {
  /** Handed to the native reader, which reads it on the same thread between our calls. */
  readonly table = Buffer.alloc(SLOTS * ATTR_SLOT);
  /** The reply is encoded here and copied into its slot: no buffer made per set (one per name made or removed). */
  private readonly w = new Writer(ATTR_OUT_SIZE);

  /** `attrValidS`: the attribute timeout every reply carries. */
  constructor(private readonly attrValidS: number) {}

  set(nodeid: number, attr: Attr, untilMs: number): void {
    const at = (nodeid % SLOTS) * ATTR_SLOT;
    this.w.pos = 0;
    encodeAttrOut(this.w, attr, this.attrValidS);
    this.w.done().copy(this.table, at + 16);
    this.table.writeDoubleLE(untilMs, at + 8);
    this.table.writeBigUInt64LE(BigInt(nodeid), at);
  }

  delete(nodeid: number): void {
    const at = (nodeid % SLOTS) * ATTR_SLOT;
    if (this.table.readBigUInt64LE(at) === BigInt(nodeid)) this.table.writeBigUInt64LE(0n, at);
  }

  clear(): void {
    this.table.fill(0);
  }
}
