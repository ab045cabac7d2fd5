// The image or block device under a disk-image source: positioned reads at any byte offset through
// a small LRU buffer cache of aligned pages, and (when opened writable) write-through writes that
// keep the cached pages current. Image drivers never touch the file descriptor directly, so a block
// device and an image file behave alike, and an access past the end is an EIO, not a crash.

import fsp from 'node:fs/promises';
import path from 'node:path';
import { Errno, FsError } from '../../lib/errno.js';

/** Cache page size: large enough that metadata walks hit the cache, small enough to waste little. */
const PAGE = 64 * 1024;
/** Default cache capacity in pages (32 MiB). */
const DEFAULT_PAGES = 512;

export interface ImageDeviceOptions {
  /** Cache capacity in bytes. */
  cacheBytes?: number;
  /** Open for writing too (O_RDWR); without it write() fails with EROFS. */
  writable?: boolean;
}

export class ImageDevice {
  // Pages in LRU order (a Map iterates in insertion order; a hit re-inserts). Each entry is the
  // promise of the page so concurrent readers of one page share a single disk read.
  private readonly pages = new Map<number, Promise<Buffer>>();
  private readonly maxPages: number;
  private closed = false;

  private constructor(
    private readonly fh: fsp.FileHandle,
    /** The image's size in bytes. */
    readonly size: number,
    /** The path it was opened from, for messages. */
    readonly name: string,
    opts: ImageDeviceOptions,
    /** Whether write() may be used. */
    readonly writable = false,
  ) {
    this.maxPages = Math.max(4, Math.ceil((opts.cacheBytes ?? DEFAULT_PAGES * PAGE) / PAGE));
  }

  /** Opens an image file or a block device read-only. Failures are one-line FsErrors. */
  static async open(file: string, opts: ImageDeviceOptions = {}): Promise<ImageDevice> {
    let fh: fsp.FileHandle;
    try {
      fh = await fsp.open(file, opts.writable ? 'r+' : 'r');
    } catch (err) {
      const code = (err as { code?: string }).code ?? 'EIO';
      throw new FsError((Errno as Record<string, number>)[code] ?? Errno.EIO, `${file}: cannot open image: ${code}`);
    }
    try {
      const st = await fh.stat();
      let size: number;
      if (st.isFile()) size = st.size;
      else if (st.isBlockDevice()) size = await blockDeviceSize(st.rdev);
      else throw new FsError(Errno.EINVAL, `${file}: not an image file or block device`);
      return new ImageDevice(fh, size, file, opts, opts.writable === true);
    } catch (err) {
      await fh.close();
      throw err;
    }
  }

  /** Reads exactly `len` bytes at `off` (a fresh buffer the caller may keep); EIO past the end. */
  async read(off: number, len: number): Promise<Buffer> {
    if (this.closed) throw new FsError(Errno.EIO, `${this.name}: image closed`);
    if (!Number.isSafeInteger(off) || !Number.isSafeInteger(len) || off < 0 || len < 0 || off + len > this.size) {
      throw new FsError(Errno.EIO, `${this.name}: read of ${len} bytes at ${off} is outside the image (${this.size} bytes)`);
    }
    const out = Buffer.allocUnsafe(len);
    for (let done = 0; done < len;) {
      const pos = off + done;
      const idx = Math.floor(pos / PAGE);
      const page = await this.page(idx);
      const inPage = pos - idx * PAGE;
      const n = Math.min(len - done, page.length - inPage);
      page.copy(out, done, inPage, inPage + n);
      done += n;
    }
    return out;
  }

  private page(idx: number): Promise<Buffer> {
    const hit = this.pages.get(idx);
    if (hit) {
      this.pages.delete(idx);
      this.pages.set(idx, hit);
      return hit;
    }
    const start = idx * PAGE;
    const len = Math.min(PAGE, this.size - start);
    const buf = Buffer.alloc(len);
    const p = this.fh.read(buf, 0, len, start).then(({ bytesRead }) => {
      // The image shrank under us (or a device error): say so rather than serve zeros.
      if (bytesRead !== len) throw new FsError(Errno.EIO, `${this.name}: short read at ${start}`);
      return buf;
    });
    // A failed read must not stay cached: the next caller retries.
    p.catch(() => this.pages.delete(idx));
    this.pages.set(idx, p);
    while (this.pages.size > this.maxPages) {
      const oldest = this.pages.keys().next().value as number;
      this.pages.delete(oldest);
    }
    return p;
  }

  /**
   * Writes all of `data` at `off`, straight to the image (write-through), then patches the cached
   * pages it overlaps so later reads see it. EIO past the end: an image never grows.
   */
  async write(off: number, data: Buffer): Promise<void> {
    if (this.closed) throw new FsError(Errno.EIO, `${this.name}: image closed`);
    if (!this.writable) throw new FsError(Errno.EROFS, `${this.name}: image opened read-only`);
    if (!Number.isSafeInteger(off) || off < 0 || off + data.length > this.size) {
      throw new FsError(Errno.EIO, `${this.name}: write of ${data.length} bytes at ${off} is outside the image (${this.size} bytes)`);
    }
    for (let done = 0; done < data.length;) {
      const { bytesWritten } = await this.fh.write(data, done, data.length - done, off + done);
      if (bytesWritten <= 0) throw new FsError(Errno.EIO, `${this.name}: short write at ${off + done}`);
      done += bytesWritten;
    }
    const first = Math.floor(off / PAGE);
    const last = Math.floor((off + data.length - 1) / PAGE);
    for (let idx = first; idx <= last && data.length > 0; idx++) {
      const p = this.pages.get(idx);
      if (!p) continue;
      // A read of this page may be in flight and have seen old bytes: patch once it lands.
      const page = await p.catch(() => undefined);
      if (!page || this.pages.get(idx) !== p) continue;
      const start = idx * PAGE;
      const from = Math.max(off, start);
      const to = Math.min(off + data.length, start + page.length);
      if (from < to) data.copy(page, from - start, from - off, to - off);
    }
  }

  /** Makes written data durable (fdatasync). */
  async sync(): Promise<void> {
    if (this.closed || !this.writable) return;
    await this.fh.datasync();
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.pages.clear();
    await this.fh.close();
  }
}

/** A block device's size from sysfs (Node's fstat reports 0 for devices). */
async function blockDeviceSize(rdev: number): Promise<number> {
  // glibc's dev_t encoding: major in bits 8-19 (and 32+), minor in bits 0-7 and 20-31.
  const major = ((rdev >> 8) & 0xfff) >>> 0;
  const minor = ((rdev & 0xff) | ((rdev >>> 12) & 0xfff00)) >>> 0;
  const p = path.join('/sys/dev/block', `${major}:${minor}`, 'size');
  try {
    const sectors = Number((await fsp.readFile(p, 'utf8')).trim());
    if (!Number.isSafeInteger(sectors)) throw new Error('bad size');
    return sectors * 512;
  } catch {
    throw new FsError(Errno.EIO, `cannot learn the size of block device ${major}:${minor} from ${p}`);
  }
}
