// The /dev/fuse file descriptor: several reads outstanding at once, each with its own buffer, and
// replies written whole with one writev(2) each. Knows nothing of what the bytes mean.
//
// Pool rule: Node's fs.read on /dev/fuse blocks a libuv pool thread until the kernel has a
// request, so `maxReads` pool threads are always taken. The process must therefore size the pool
// before its first use (the CLI's bin/wirefs sets UV_THREADPOOL_SIZE=32 before anything else runs;
// a test child gets it in its environment), and maxReads stays modest (default 4) so the rest of
// the pool is left to sources such as passthrough, whose own fs calls need it.

import fs from 'node:fs';
import { FUSE_MIN_READ_BUFFER } from './abi.js';
import { logger } from '../lib/log.js';

const log = logger('fuse');

/** Frames up to this size are copied out so the read buffer is reused at once; larger ones (writes) take it over. */
const COPY_LIMIT = 64 * 1024;
/** How often a read that found the device not yet mounted (EPERM) is retried. */
const NOT_MOUNTED_RETRY_MS = 5;

export interface ChannelOptions {
  /** Bytes per read buffer: at least max_write + 4096 and FUSE_MIN_READ_BUFFER. */
  bufferSize: number;
  /** Reads kept outstanding (pool threads taken). Default 4. */
  maxReads?: number;
}

/** Where replies and notifications go; rejects with the errno-coded Node error of the write. */
export interface FuseTransport {
  send(chunks: Buffer[]): Promise<void>;
}

export class FuseChannel implements FuseTransport {
  /** Resolves once every read has ended (unmount, abort or close) and the fd is closed. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly bufferSize: number;
  private readonly maxReads: number;
  private active = 0;
  private attached = false;
  private ending = false;
  private fdClosed = false;
  private onFrame: (frame: Buffer) => void = () => {};

  constructor(readonly fd: number, opts: ChannelOptions) {
    this.bufferSize = Math.max(opts.bufferSize, FUSE_MIN_READ_BUFFER);
    this.maxReads = Math.max(1, opts.maxReads ?? 4);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Starts the reads; each frame is handed over for good (the callee owns the Buffer). */
  start(onFrame: (frame: Buffer) => void): void {
    this.onFrame = onFrame;
    for (let i = 0; i < this.maxReads; i++) {
      this.active++;
      this.readInto(Buffer.allocUnsafe(this.bufferSize));
    }
  }

  /**
   * The mount(2) call has attached the fd to a connection. Until then a read fails at once with
   * EPERM (fs/fuse/dev.c: the file has no fuse_dev yet), which the reads treat as "try again".
   */
  attach(): void {
    this.attached = true;
  }

  /** Stops reading: for a mount that failed, or once the connection is known to be gone. */
  close(): void {
    this.ending = true;
    if (this.active === 0) this.finish();
  }

  send(chunks: Buffer[]): Promise<void> {
    if (this.fdClosed) return Promise.reject(Object.assign(new Error('FUSE device closed'), { code: 'ENODEV' }));
    const total = chunks.reduce((n, c) => n + c.length, 0);
    return new Promise((resolve, reject) => {
      // One writev per message: the device takes a message whole or not at all.
      fs.writev(this.fd, chunks, (err, n) => {
        if (err) reject(err);
        else if (n !== total) reject(new Error(`short write to /dev/fuse: ${n} of ${total}`));
        else resolve();
      });
    });
  }

  private readInto(buf: Buffer): void {
    if (this.ending) return this.readEnded();
    fs.read(this.fd, buf, 0, buf.length, null, (err, n) => {
      if (err) return this.readFailed(err, buf);
      if (n === 0) return this.readEnded();
      let frame: Buffer;
      let next = buf;
      if (n <= COPY_LIMIT) {
        frame = Buffer.allocUnsafe(n);
        buf.copy(frame, 0, 0, n);
      } else {
        frame = buf.subarray(0, n);
        next = Buffer.allocUnsafe(this.bufferSize);
      }
      // Keep the device read before handling, so a slow handler never leaves the kernel waiting.
      this.readInto(next);
      try {
        this.onFrame(frame);
      } catch (e) {
        log.error(`request handler threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    });
  }

  private readFailed(err: NodeJS.ErrnoException, buf: Buffer): void {
    switch (err.code) {
      // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again.
      case 'ENOENT':
      case 'EINTR':
      case 'EAGAIN':
        return this.readInto(buf);
      case 'EPERM':
        if (!this.attached) {
          // readInto ends quietly if the mount failed meanwhile
          setTimeout(() => this.readInto(buf), NOT_MOUNTED_RETRY_MS);
          return;
        }
        break;
      // ENODEV: unmounted, the clean end; ECONNABORTED: aborted with FUSE_ABORT_ERROR (7.27).
      case 'ENODEV':
      case 'ECONNABORTED':
        this.ending = true;
        return this.readEnded();
    }
    log.error(`reading /dev/fuse: ${err.message}`);
    this.ending = true;
    this.readEnded();
  }

  private readEnded(): void {
    this.active--;
    if (this.active === 0) this.finish();
  }

  private finish(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    // Closed only when no read is outstanding, so the fd number is never reused under a read.
    fs.close(this.fd, () => this.resolveClosed());
  }
}
