// The per-session reply cache that makes non-idempotent requests exactly-once across reconnects
// (the NFSv4.1 idea, RFC 8881 §2.10.6, reduced to one sliding window instead of a slot table).
//
// The client numbers its non-idempotent requests 1, 2, 3, … (the header's `seq`, wrapping past
// 2^32−1 to 1) and never has a request outstanding whose seq is WINDOW or more behind the newest one
// it has sent. So the server may forget a finished reply once its seq is WINDOW behind the newest
// seq it has seen: no retry can name it any more. A retried seq that is still running waits for
// that run's reply; a finished one gets the cached reply; one behind the window (a client that broke
// the rule) gets EIO, never a second execution.
//
// Replies of non-idempotent ops are small (an Entry, an attr, a count: at most a few hundred bytes),
// so a full window costs well under 1 MiB per session; `maxBytes` still caps it.

import { SEQ_WINDOW, seqDistance } from '../wire/seq.js';

type Slot = { state: 'running'; waiters: Array<(frame: Buffer) => void> } | { state: 'done'; frame: Buffer };

export type Begin =
  | { kind: 'run' }
  | { kind: 'cached'; frame: Buffer }
  | { kind: 'running'; reply: Promise<Buffer> }
  | { kind: 'stale' };

export class ReplyCache {
  private readonly slots = new Map<number, Slot>();
  private newest = 0;
  private bytes = 0;
  /** Retries answered from the cache (or by waiting for the first run) since the session began. */
  hits = 0;

  constructor(private readonly window = SEQ_WINDOW, private readonly maxBytes = 4 << 20) {}

  get size(): number {
    return this.slots.size;
  }

  /** A request with this seq arrived: run it, or answer it from what the first run gives. */
  begin(seq: number): Begin {
    const slot = this.slots.get(seq);
    if (slot?.state === 'done') {
      this.hits++;
      return { kind: 'cached', frame: slot.frame };
    }
    if (slot?.state === 'running') {
      this.hits++;
      return { kind: 'running', reply: new Promise((resolve) => slot.waiters.push(resolve)) };
    }
    if (this.newest !== 0 && seqDistance(this.newest, seq) >= this.window) return { kind: 'stale' };
    this.slots.set(seq, { state: 'running', waiters: [] });
    if (this.newest === 0 || seqDistance(seq, this.newest) > 0) this.newest = seq;
    this.evict();
    return { kind: 'run' };
  }

  /** The first run of seq ended with this reply frame (kept as a copy: the caller may reuse it). */
  finish(seq: number, frame: Buffer): void {
    const slot = this.slots.get(seq);
    if (slot?.state !== 'running') return;
    const kept = Buffer.from(frame);
    this.slots.set(seq, { state: 'done', frame: kept });
    this.bytes += kept.length;
    for (const w of slot.waiters) w(kept);
    this.evict();
  }

  /** Drops finished replies that no retry may name any more, then the oldest while over the byte cap. */
  private evict(): void {
    for (const [seq, slot] of this.slots) {
      if (slot.state !== 'done') continue;
      const behind = seqDistance(this.newest, seq) >= this.window;
      // Slots are in seq order: once one may still be retried, so may every later one.
      if (!behind && this.bytes <= this.maxBytes) break;
      this.slots.delete(seq);
      this.bytes -= slot.frame.length;
    }
  }
}

/** A cached reply frame re-addressed to the retry's request id (header offset 8). */
export function readdress(frame: Buffer, id: number): Buffer {
  const copy = Buffer.from(frame);
  copy.writeUInt32LE(id >>> 0, 8);
  return copy;
}
