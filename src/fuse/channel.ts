// The /dev/fuse file descriptor: requests come from a reader thread (reader-worker.ts) doing
// blocking reads, so they never occupy libuv's pool; replies are written whole with one writev(2)
// each from the main thread. Knows nothing of what the bytes mean.

import fs from 'node:fs';
import { Worker } from 'node:worker_threads';
import { FUSE_MIN_READ_BUFFER } from './abi.js';
import { logger } from '../lib/log.js';

const log = logger('fuse');

export interface ChannelOptions {
  /** Bytes per read buffer: at least max_write + 4096 and FUSE_MIN_READ_BUFFER. */
  bufferSize: number;
}

/** Where replies and notifications go; rejects with the errno-coded Node error of the write. */
export interface FuseTransport {
  send(chunks: Buffer[]): Promise<void>;
}

export class FuseChannel implements FuseTransport {
  /** Resolves once the reader has ended (unmount, abort or close) and the fd is closed. */
  readonly closed: Promise<void>;
  private resolveClosed!: () => void;
  private readonly bufferSize: number;
  /** [0] attached, [1] stop: shared with the reader thread. */
  private readonly flags = new Int32Array(new SharedArrayBuffer(8));
  private reader: Worker | undefined;
  private fdClosed = false;

  constructor(readonly fd: number, opts: ChannelOptions) {
    this.bufferSize = Math.max(opts.bufferSize, FUSE_MIN_READ_BUFFER);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Starts the reader; each frame is handed over for good (the callee owns the Buffer). */
  start(onFrame: (frame: Buffer) => void): void {
    const reader = new Worker(new URL('./reader-worker.js', import.meta.url), {
      workerData: { fd: this.fd, bufferSize: this.bufferSize, shared: this.flags.buffer },
    });
    this.reader = reader;
    reader.on('message', (msg: ArrayBuffer | { end: string }) => {
      if (msg instanceof ArrayBuffer) {
        try {
          onFrame(Buffer.from(msg));
        } catch (e) {
          log.error(`request handler threw: ${e instanceof Error ? e.message : String(e)}`);
        }
      } else if (msg.end !== 'unmounted' && msg.end !== 'closed') {
        log.error(msg.end);
      }
    });
    reader.on('error', (err) => log.error(`FUSE reader thread: ${err.message}`));
    reader.on('exit', () => this.finish());
  }

  /**
   * The mount(2) call has attached the fd to a connection. Until then a read fails at once with
   * EPERM, which the reader treats as "try again".
   */
  attach(): void {
    Atomics.store(this.flags, 0, 1);
  }

  /**
   * Stops reading: for a mount that failed, or once the connection is known to be gone. A reader
   * blocked in read(2) on a live connection ends when the kernel ends the session.
   */
  close(): void {
    Atomics.store(this.flags, 1, 1);
    Atomics.notify(this.flags, 1);
    if (!this.reader) this.finish();
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

  private finish(): void {
    if (this.fdClosed) return;
    this.fdClosed = true;
    // Closed only once the reader has exited, so the fd number is never reused under a read.
    fs.close(this.fd, () => this.resolveClosed());
  }
}
