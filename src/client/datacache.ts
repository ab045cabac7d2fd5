// The client's data cache on its own disk (what FS-Cache is to NFS, the cache manager to AFS): file
// pages read from the server are kept in one sparse file per node in a cache directory, and read
// again from there when the kernel asks for them once more. The kernel's page cache already keeps
// pages while it can; this one keeps them when the kernel has let them go (memory pressure,
// posix_fadvise(DONTNEED), drop_caches, a program that reads with O_DIRECT-like hints) and costs
// no round trip, so a random read over a file this client has read before runs at local-disk speed.
//
// Kept exact the way the kernel's pages are: only for a coherent server, which pushes every change
// to a file this client holds (see docs/DESIGN.md), and dropped per node on each push about its
// data, on every write, truncation, fallocate or copy_file_range of ours (at its start and again
// at its end), on a final FORGET, and wholesale when the link is lost (pushes may have been lost
// with it). A read in flight when its node is dropped does not store what it fetched (a Token
// says whether anything dropped the node meanwhile), so a reply older than a change never lands.
//
// A page is kept the second time it comes from the server, not the first (the admission rule of
// 2Q and of most CDN caches): a file read once from start to end, a backup or a cold copy, would
// otherwise cost a second write of every byte to this disk while it streams (measured: a cold
// 1 GiB read took 1.9-2.2 s so, 1.3-1.5 s with this rule), for pages the kernel's own cache
// still holds and that nobody may ask for again. What is read again after the kernel let it go (the case this
// cache is for) is kept from then on. Which pages came once is one bit each, per node, in bitmaps
// of MAX_SEEN_BYTES at most over all nodes (the least recently used node's go first).
//
// Filled behind the reads, one write at a time at idle priority with a bounded backlog (pages
// are skipped when it is full): keeping pages must never slow the read that brought them.
// Bounded: at most maxBytes of pages over all nodes and MAX_FILES open cache files, the least
// recently used file going first. The directory is the daemon's own and is removed at close;
// directories of daemons that died are removed by the next daemon to start.

import fs from 'node:fs';
import path from 'node:path';
import { nativeSys } from '../lib/sys.js';

const PAGE = 4096;
/** Bytes waiting to be written to the cache at most; pages read beyond that are not kept. */
const MAX_QUEUED = 16 << 20;
/** Bytes of "came once" bitmaps at most, over all nodes (8 MiB: 256 GiB of pages). */
const MAX_SEEN_BYTES = 8 << 20;
/** Open cache files at most (one fd each). */
const MAX_FILES = 1024;
const EAGAIN = 11;

interface Entry {
  nodeid: number;
  file: string;
  fd: number;
  /** One bit per page held (written and settled). */
  pages: Uint8Array;
  bytes: number;
  /** The file's length, once a short read has shown it; pages past it are never asked. */
  eof: number | undefined;
  /** Reads and writes of the cache file under way; the fd is closed once dropped and idle. */
  busy: number;
  dropped: boolean;
}

/** A read of the server in flight, which may store its bytes unless its node was dropped since. */
export interface Token {
  nodeid: number;
  valid: boolean;
}

export interface DataCacheStats {
  files: number;
  bytes: number;
  maxBytes: number;
  hits: number;
  misses: number;
  stored: number;
  /** Bytes not kept because the cache's disk was behind. */
  skipped: number;
  dropped: number;
  errors: number;
}

export interface DataCacheOptions {
  /** The parent directory; the cache makes its own subdirectory in it (pid-<pid>-<random>). */
  dir: string;
  maxBytes: number;
  /** Keep pages the first time they come (default: the second; see above). */
  keepFirst?: boolean;
}

export class DataCache {
  readonly dir: string;
  private readonly maxBytes: number;
  /** Least recently used first. */
  private readonly entries = new Map<number, Entry>();
  private readonly reading = new Map<number, Set<Token>>();
  /** Nodes whose opens bypass the page cache (pseudo files): never cached. */
  private readonly uncached = new Set<number>();
  private bytes = 0;
  /** Pages that came from the server at least once, one bit each, per node; least recently used first. */
  private readonly seen = new Map<number, Uint8Array>();
  private seenBytes = 0;
  private readonly keepFirst: boolean;
  private nextFile = 1;
  private closed = false;
  private readonly counters = { hits: 0, misses: 0, stored: 0, skipped: 0, dropped: 0, errors: 0 };
  /** Cache writes waiting or running (the head runs); their bytes. */
  private readonly queue: Array<() => void> = [];
  private queuedBytes = 0;

  constructor(opts: DataCacheOptions) {
    this.maxBytes = opts.maxBytes;
    this.keepFirst = opts.keepFirst === true;
    fs.mkdirSync(opts.dir, { recursive: true, mode: 0o700 });
    removeOrphans(opts.dir);
    this.dir = fs.mkdtempSync(path.join(opts.dir, `pid-${process.pid}-`));
  }

  stats(): DataCacheStats {
    return { files: this.entries.size, bytes: this.bytes, maxBytes: this.maxBytes, ...this.counters };
  }

  /** The node's opens bypass the page cache (FOPEN_DIRECT_IO): its reads are never kept. */
  bypass(nodeid: number): void {
    this.uncached.add(nodeid);
    this.drop(nodeid);
  }

  /**
   * The bytes [offset, offset+size) as the server last gave them (fewer at end of file), or
   * undefined when not all of them are here.
   */
  async get(nodeid: number, offset: number, size: number): Promise<Buffer | undefined> {
    const e = this.entries.get(nodeid);
    const len = e ? this.covered(e, offset, size) : undefined;
    if (!e || len === undefined) {
      if (!this.uncached.has(nodeid)) this.counters.misses++;
      return undefined;
    }
    // Most recently used last.
    this.entries.delete(nodeid);
    this.entries.set(nodeid, e);
    const buf = Buffer.allocUnsafe(len);
    if (len === 0) return this.hit(buf);
    // In the host's page cache most of the time: copied at once, with no pool thread.
    const n = nativeSys()?.preadNowaitSync(e.fd, buf, 0, len, offset);
    if (n === len) return this.hit(buf);
    if (n !== undefined && n < 0 && n !== -EAGAIN) this.counters.errors++;
    e.busy++;
    try {
      const got = await new Promise<number>((resolve, reject) => fs.read(e.fd, buf, 0, len, offset, (err, r) => (err ? reject(err) : resolve(r))));
      if (got !== len || e.dropped) return this.miss();
      return this.hit(buf);
    } catch {
      this.counters.errors++;
      this.drop(nodeid);
      return this.miss();
    } finally {
      e.busy--;
      this.closeIfIdle(e);
    }
  }

  /** Call before reading the server; end() it whatever happens. */
  begin(nodeid: number): Token {
    const t: Token = { nodeid, valid: !this.uncached.has(nodeid) && !this.closed };
    let set = this.reading.get(nodeid);
    if (!set) this.reading.set(nodeid, (set = new Set()));
    set.add(t);
    return t;
  }

  end(t: Token): void {
    const set = this.reading.get(t.nodeid);
    if (!set) return;
    set.delete(t);
    if (set.size === 0) this.reading.delete(t.nodeid);
  }

  /** Keeps what a read of [offset, offset+size) returned, unless its node was dropped since begin(). */
  put(t: Token, offset: number, size: number, data: Buffer): void {
    if (!t.valid || offset % PAGE !== 0 || size <= 0 || data.length > size) return;
    const short = data.length < size;
    // Whole pages only, and the last part-page when the read ended at the end of the file.
    const keep = short ? data.length : data.length - (data.length % PAGE);
    if (keep === 0 && !short) return;
    let e = this.entries.get(t.nodeid);
    if (e && short && e.eof !== undefined && e.eof !== offset + data.length) {
      this.drop(t.nodeid); // two lengths for one file: keep neither
      return;
    }
    if (e?.eof !== undefined && offset + keep > e.eof) {
      this.drop(t.nodeid);
      return;
    }
    // Not yet kept, end of file included: it is learnt again with the pages, the next time.
    if (!this.admit(t.nodeid, offset / PAGE, Math.ceil(keep / PAGE))) return;
    if (!e) {
      if (this.closed) return;
      e = this.open(t.nodeid);
      if (!e) return;
    }
    if (short) e.eof = offset + data.length;
    if (keep === 0) return;
    const entry = e;
    const first = offset / PAGE;
    const count = Math.ceil(keep / PAGE);
    // One cache write at a time, at idle priority, and a bounded backlog: a client reading faster
    // than spare CPU and its disk can keep pages keeps what it can, and never piles up buffers (nor
    // threads spinning on one file's lock).
    if (this.queuedBytes + keep > MAX_QUEUED) {
      this.counters.skipped += keep;
      return;
    }
    entry.busy++;
    this.queuedBytes += keep;
    // The bytes wait their turn: a view much smaller than the memory it lies in (a socket slab of
    // the link) is copied, so the queue never holds whole slabs for a few pages each.
    const bytes = data.byteLength * 4 < data.buffer.byteLength ? Buffer.from(data.subarray(0, keep)) : data;
    this.queue.push(() => write(entry.fd, bytes, keep, offset, (err, n) => {
      entry.busy--;
      this.queuedBytes -= keep;
      this.closeIfIdle(entry);
      this.next();
      if (entry.dropped || !t.valid) return;
      if (err || n !== keep) {
        this.counters.errors++;
        this.drop(entry.nodeid);
        return;
      }
      this.mark(entry, first, count);
      this.counters.stored += keep;
      this.trim();
    }));
    if (this.queue.length === 1) this.queue[0]!();
  }

  /**
   * Whether pages [first, first+count) of the node all came before (or the cache keeps first
   * fetches); marks them as come either way.
   */
  private admit(nodeid: number, first: number, count: number): boolean {
    if (this.keepFirst) return true;
    const need = (first + count + 7) >> 3;
    if (need > MAX_SEEN_BYTES / 2) return false; // past 128 GiB into a file: never kept
    let bits = this.seen.get(nodeid);
    if (bits) this.seen.delete(nodeid);
    if (!bits || bits.length < need) {
      const grown = new Uint8Array(Math.max(need, (bits?.length ?? 0) * 2, 64));
      if (bits) grown.set(bits);
      this.seenBytes += grown.length - (bits?.length ?? 0);
      bits = grown;
      for (const [id, old] of this.seen) {
        if (this.seenBytes <= MAX_SEEN_BYTES) break;
        this.seen.delete(id);
        this.seenBytes -= old.length;
      }
    }
    this.seen.set(nodeid, bits);
    let all = true;
    for (let p = first; p < first + count; p++) {
      const bit = 1 << (p & 7);
      if (!(bits[p >> 3]! & bit)) {
        all = false;
        bits[p >> 3]! |= bit;
      }
    }
    return all;
  }

  /** The write at the head of the queue is done: starts the next. */
  private next(): void {
    this.queue.shift();
    this.queue[0]?.();
  }

  /** Forgets the node's pages, and spoils the reads of it in flight. */
  drop(nodeid: number): void {
    const set = this.reading.get(nodeid);
    if (set) for (const t of set) t.valid = false;
    const e = this.entries.get(nodeid);
    if (!e) return;
    this.entries.delete(nodeid);
    this.bytes -= e.bytes;
    e.dropped = true;
    this.counters.dropped++;
    this.closeIfIdle(e);
  }

  /** The kernel forgot the node: its id may name another file later. */
  forget(nodeid: number): void {
    this.uncached.delete(nodeid);
    const bits = this.seen.get(nodeid);
    if (bits) {
      this.seen.delete(nodeid);
      this.seenBytes -= bits.length;
    }
    this.drop(nodeid);
  }

  dropAll(): void {
    for (const set of this.reading.values()) for (const t of set) t.valid = false;
    for (const id of [...this.entries.keys()]) this.drop(id);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.dropAll();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }

  private hit(buf: Buffer): Buffer {
    this.counters.hits++;
    return buf;
  }

  private miss(): undefined {
    this.counters.misses++;
    return undefined;
  }

  /** How many bytes from offset the entry can give for a read of size, or undefined. */
  private covered(e: Entry, offset: number, size: number): number | undefined {
    if (offset % PAGE !== 0 || size <= 0) return undefined;
    let end = offset + size;
    if (e.eof !== undefined) {
      if (offset >= e.eof) return 0;
      end = Math.min(end, e.eof);
    }
    // A range ending inside a page needs that page whole (or the file's end inside it, above).
    const last = Math.ceil(end / PAGE);
    for (let p = offset / PAGE; p < last; p++) {
      if (p >> 3 >= e.pages.length || !(e.pages[p >> 3]! & (1 << (p & 7)))) return undefined;
    }
    return end - offset;
  }

  private mark(e: Entry, first: number, count: number): void {
    const need = (first + count + 7) >> 3;
    if (need > e.pages.length) {
      const grown = new Uint8Array(Math.max(need, e.pages.length * 2));
      grown.set(e.pages);
      e.pages = grown;
    }
    let added = 0;
    for (let p = first; p < first + count; p++) {
      const bit = 1 << (p & 7);
      if (!(e.pages[p >> 3]! & bit)) {
        e.pages[p >> 3]! |= bit;
        added++;
      }
    }
    e.bytes += added * PAGE;
    this.bytes += added * PAGE;
  }

  private open(nodeid: number): Entry | undefined {
    const file = path.join(this.dir, String(this.nextFile++));
    let fd: number;
    try {
      fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o600);
    } catch {
      this.counters.errors++;
      return undefined;
    }
    const e: Entry = { nodeid, file, fd, pages: new Uint8Array(16), bytes: 0, eof: undefined, busy: 0, dropped: false };
    this.entries.set(nodeid, e);
    this.trim();
    return e;
  }

  /** Drops the least recently used files while over a bound (the newest is kept whatever its size). */
  private trim(): void {
    for (const [id] of this.entries) {
      if (this.entries.size <= 1 || (this.bytes <= this.maxBytes && this.entries.size <= MAX_FILES)) break;
      this.drop(id);
    }
    // A single file over the bound keeps only what fits: it starts again.
    if (this.bytes > this.maxBytes) for (const id of [...this.entries.keys()]) this.drop(id);
  }

  /** Closes and removes a dropped entry's file once nothing reads or writes it. */
  private closeIfIdle(e: Entry): void {
    if (!e.dropped || e.busy > 0 || e.fd < 0) return;
    const fd = e.fd;
    e.fd = -1;
    fs.close(fd, () => {});
    fs.unlink(e.file, () => {});
  }
}

/**
 * Writes at idle priority where the addon is built (SCHED_IDLE: filling the cache never takes CPU
 * time from the reads that fill it), else with fs.write.
 */
function write(fd: number, data: Buffer, length: number, position: number, done: (err: Error | null, n: number) => void): void {
  const sys = nativeSys();
  if (!sys) {
    fs.write(fd, data, 0, length, position, done);
    return;
  }
  sys.pwriteIdle(fd, data, length, position).then((n) => done(null, n), (err: Error) => done(err, 0));
}

/** Removes the cache directories of daemons that are gone (pid-<pid>-*, no such process). */
function removeOrphans(dir: string): void {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch {
    return;
  }
  for (const name of names) {
    const m = /^pid-(\d+)-/.exec(name);
    if (!m || Number(m[1]) === process.pid) continue;
    try {
      process.kill(Number(m[1]), 0);
      continue; // alive
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'EPERM') continue;
    }
    fs.rmSync(path.join(dir, name), { recursive: true, force: true });
  }
}
