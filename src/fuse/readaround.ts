// Read-around for small random reads. The kernel reads ahead only for sequential reads: a random
// 4 KiB read(2) that misses the page cache becomes one 4 KiB READ, so on a network mount every
// such read pays a round trip. Here a small READ that does not continue the handle's last one
// fetches the aligned window around it instead (one request, the same round trip plus the
// window's transfer), answers the kernel's part, and pushes the rest into the kernel's page cache
// with FUSE_NOTIFY_STORE (7.15), so later reads nearby never leave the kernel. This is what the
// kernel itself does for page faults on mmap (read-around of the read-ahead window).
//
// NOTIFY_STORE overwrites whatever the pages hold (fs/fuse/dev.c fuse_notify_store), so a store must
// never land on newer bytes:
// - No store while the node has a writable handle on this mount: a write changes the page before
//   its WRITE reaches us. An OPEN that may change the file (writable, or O_TRUNC) and a truncating
//   SETATTR first wait for the node's stores under way and stop new ones until done (hold()); a
//   writable CREATE waits for them before its reply (the node is known only then).
// - A store's bytes are dropped if anything changed the node since they were fetched: a change
//   pushed by the server (its notify waits for stores under way, so the kernel drops them after),
//   a truncation, a FORGET (fetches carry a token that these clear).
// Only for a coherent Vfs (every change elsewhere is pushed) and handles that use the page cache.
//
// The window grows per node with the reading it serves. Random reads that have pulled a sixteenth
// of the span read so far (and at least 64 windows) through windows of one size will most likely
// pull the rest of it too: the window doubles, up to 8 times the base and at most MAX_WINDOW, so
// the same bytes come in fewer round trips (a base lowered for a slow link bounds them too).
// Sparse random reads over a large file (a database's lookups) never pull that share and keep the
// base window; a program that sweeps a file randomly (fio, a linker, a scan in random order) soon
// fetches it 1 MiB at a time.

import { O_ACCMODE, O_DIRECT, O_RDONLY } from '../vfs/types.js';

const PAGE = 4096;
/** The largest window a node's reads grow to: 8 times the base, at most this (a larger base stays). */
export const MAX_WINDOW = 1 << 20;
/** Windows of one size fetched for a node, at least, before its window doubles. */
const GROW_AFTER = 64;
/** Nodes whose reading is remembered at most; the longest unseen goes first. */
const MAX_NODES = 4096;

interface Handle {
  nodeid: number;
  writable: boolean;
  direct: boolean;
  /** Where this handle's last READ ended: a READ starting there is sequential (read-ahead's). */
  lastEnd: number;
}

/** How a node's random reads have gone: its window, and what they fetched at that size. */
interface Reading {
  window: number;
  /** Bytes fetched through windows of the current size. */
  fetched: number;
  /** The furthest any READ of the node reached: the span the program reads. */
  span: number;
}

/** A fetch under way: its bytes may be stored only while it stays valid. */
interface Token {
  valid: boolean;
}

export interface ReadAroundStats {
  /** READs widened to their window. */
  widened: number;
  /** Bytes pushed into the kernel's page cache. */
  storedBytes: number;
  /** Windows not stored because the node changed while they were fetched. */
  dropped: number;
  /** Times a node's window doubled. */
  grown: number;
}

export interface Window {
  start: number;
  length: number;
  token: Token;
}

export class ReadAround {
  private readonly handles = new Map<number, Handle>();
  /** Writable handles and truncations under way, per node. */
  private readonly writers = new Map<number, number>();
  private readonly fetching = new Map<number, Set<Token>>();
  /** Stores on their way to the kernel, per node. */
  private readonly storing = new Map<number, Set<Promise<void>>>();
  private readonly reading = new Map<number, Reading>();
  private readonly counts: ReadAroundStats = { widened: 0, storedBytes: 0, dropped: 0, grown: 0 };
  private readonly maxWindow: number;

  /**
   * @param window bytes, a power of two multiple of the page size
   * @param send writes one notify message (off the main thread: a store takes page locks)
   * @param header the message header for a store of size bytes at offset
   */
  constructor(
    private readonly window: number,
    private readonly send: (chunks: Buffer[]) => Promise<void>,
    private readonly header: (nodeid: number, offset: number, size: number) => Buffer,
  ) {
    if (window < PAGE * 2 || window & (window - 1)) throw new RangeError(`read-around window ${window} is not a power of two of at least two pages`);
    this.maxWindow = Math.max(window, Math.min(8 * window, MAX_WINDOW));
  }

  stats(): ReadAroundStats {
    return { ...this.counts };
  }

  /**
   * A handle the kernel now holds (OPEN or CREATE answered) with these open(2) flags. Reads of a
   * direct-I/O one (FOPEN_DIRECT_IO given, or O_DIRECT) bypass the page cache: never widened.
   */
  opened(fh: number, nodeid: number, flags: number, directIo: boolean | undefined): void {
    const writable = (flags & O_ACCMODE) !== O_RDONLY;
    const direct = directIo === true || (flags & O_DIRECT) !== 0;
    this.handles.set(fh, { nodeid, writable, direct, lastEnd: -1 });
    if (writable) this.writers.set(nodeid, (this.writers.get(nodeid) ?? 0) + 1);
  }

  released(fh: number): void {
    const h = this.handles.get(fh);
    if (!h) return;
    this.handles.delete(fh);
    if (h.writable) this.unhold(h.nodeid);
  }

  /**
   * Stops stores to a node until the returned function is called, once its stores under way have
   * settled (for a writable open, a truncation). Fetches under way are not stored.
   */
  async hold(nodeid: number): Promise<() => void> {
    this.writers.set(nodeid, (this.writers.get(nodeid) ?? 0) + 1);
    await this.changed(nodeid);
    let done = false;
    return () => {
      if (done) return;
      done = true;
      this.unhold(nodeid);
    };
  }

  /**
   * The node changed (or is gone): fetches under way are not stored. Returns what settles once its
   * stores under way have, or undefined when there are none (the common case: nothing to wait for).
   */
  changed(nodeid: number): Promise<void> | undefined {
    const tokens = this.fetching.get(nodeid);
    if (tokens) for (const t of tokens) t.valid = false;
    const stores = this.storing.get(nodeid);
    return stores ? Promise.all(stores).then(() => {}) : undefined;
  }

  /** The kernel has forgotten the node: as changed(), and its reading is forgotten too. */
  forgot(nodeid: number): void {
    this.reading.delete(nodeid);
    void this.changed(nodeid);
  }

  /**
   * The window to fetch instead of [offset, offset + size), or undefined to read just that: for a
   * page-aligned READ under half the window that does not continue the handle's last one, on a node no one
   * writes through this mount.
   */
  widen(nodeid: number, fh: number, offset: number, size: number): Window | undefined {
    const h = this.handles.get(fh);
    if (!h || h.direct) return undefined;
    const sequential = offset === h.lastEnd;
    h.lastEnd = offset + size;
    if (sequential || size * 2 >= this.window || offset % PAGE || size % PAGE || this.writers.get(nodeid)) return undefined;
    // Every window size is a multiple of the base: a READ inside a base window is inside any.
    if (offset + size > offset - (offset % this.window) + this.window) return undefined;
    const r = this.readingOf(nodeid);
    r.span = Math.max(r.span, offset + size);
    const length = r.window;
    const start = offset - (offset % length);
    r.fetched += length;
    if (length < this.maxWindow && r.fetched >= Math.max(GROW_AFTER * length, r.span / 16)) {
      r.window = length * 2;
      r.fetched = 0;
      this.counts.grown++;
    }
    const token: Token = { valid: true };
    let set = this.fetching.get(nodeid);
    if (!set) this.fetching.set(nodeid, (set = new Set()));
    set.add(token);
    this.counts.widened++;
    return { start, length, token };
  }

  /** The node's reading, made the most recently seen. */
  private readingOf(nodeid: number): Reading {
    let r = this.reading.get(nodeid);
    if (r) this.reading.delete(nodeid);
    else {
      r = { window: this.window, fetched: 0, span: 0 };
      if (this.reading.size >= MAX_NODES) this.reading.delete(this.reading.keys().next().value!);
    }
    this.reading.set(nodeid, r);
    return r;
  }

  /**
   * The window's fetch is over: data (possibly short, at end of file) holds the bytes from
   * w.start, or undefined if the fetch failed. Stores all but [offset, offset + size) unless the
   * node changed meanwhile.
   */
  finish(nodeid: number, w: Window, data: Buffer | undefined, offset: number, size: number): void {
    const set = this.fetching.get(nodeid);
    set?.delete(w.token);
    if (set?.size === 0) this.fetching.delete(nodeid);
    if (!data) return;
    if (!w.token.valid || this.writers.get(nodeid)) {
      this.counts.dropped++;
      return;
    }
    // Both pieces start on a page; each ends on one or at the end of the file.
    const before = data.subarray(0, Math.min(offset - w.start, data.length));
    const after = data.subarray(Math.min(offset + size - w.start, data.length));
    const pieces: Array<[number, Buffer]> = [];
    if (before.length) pieces.push([w.start, before]);
    if (after.length) pieces.push([offset + size, after]);
    if (!pieces.length) return;
    let stores = this.storing.get(nodeid);
    if (!stores) this.storing.set(nodeid, (stores = new Set()));
    const mine = stores;
    for (const [off, bytes] of pieces) {
      const one: Promise<void> = this.send([this.header(nodeid, off, bytes.length), bytes]).then(() => {
        this.counts.storedBytes += bytes.length;
      }, () => {
        // ENOENT: the kernel has forgotten the node; anything else leaves the pages as they were,
        // and the kernel reads them when asked.
      }).finally(() => {
        mine.delete(one);
        if (!mine.size && this.storing.get(nodeid) === mine) this.storing.delete(nodeid);
      });
      mine.add(one);
    }
  }

  private unhold(nodeid: number): void {
    const n = (this.writers.get(nodeid) ?? 1) - 1;
    if (n > 0) this.writers.set(nodeid, n);
    else this.writers.delete(nodeid);
  }
}
