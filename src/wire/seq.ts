// Sequence numbers of non-idempotent requests (the header's `seq`): the client numbers them 1, 2, 3,
// … per session, wrapping past 2^32−1 to 1, and keeps every outstanding one within SEQ_WINDOW of the
// newest; the server's reply cache (src/server/reply-cache.ts) keeps replies that recent.

/** How far behind the newest seq an outstanding (so possibly retried) request may be. */
export const SEQ_WINDOW = 1024;

/** a − b in serial-number arithmetic over 1..2^32−1 (RFC 1982 style): positive when a is newer. */
export function seqDistance(a: number, b: number): number {
  const d = (a - b) >>> 0;
  return d >= 0x80000000 ? d - 0x100000000 : d;
}

/** The seq after s. */
export function nextSeq(s: number): number {
  return s >= 0xffffffff ? 1 : s + 1;
}
