// The /dev/fuse file descriptor. Requests are read on the main thread's event loop by the native
// poll reader (native/wirefs_fuse.c: non-blocking reads when the device polls readable), so none
// costs a thread hop; without the addon, a reader thread (reader-worker.ts) does blocking reads,
// which never occupy libuv's pool either. Replies are written whole with one writev(2) each.
// Knows nothing of what the bytes mean.

import fs from 'node:fs';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import { FUSE_MIN_READ_BUFFER } from './abi.js';
import { logger } from '../lib/log.js';

const log = logger('fuse');

interface PollReader {
  start(fd: number, bufferSize: number, onFrame: (frame: Buffer) => void, onEnd: (code: string) => void, nosys?: Uint32Array, attrs?: Uint8Array): () => void;
}

function pollReader(): PollReader | undefined {
  if (process.env['WIREFS_FUSE_READER'] === 'thread') return undefined;
  try {
    // From dist/src/fuse/channel.js the repository root is three levels up.
    return createRequire(import.meta.url)('../../../build/Release/wirefs_fuse.node') as PollReader;
  } catch {
    return undefined;
  }
}

export interface ChannelOptions {
  /** Bytes per read buffer: at least max_write + 4096 and FUSE_MIN_READ_BUFFER. */
  bufferSize: number;
}

/** Where replies and notifications go; failures carry the errno-coded Node error of the write. */
export interface FuseTransport {
  /**
   * Writes a reply at once. Replies never wait in the kernel (they fill pages the request itself
   * holds), so a synchronous write is safe and saves a thread-pool round trip per request.
   */
  reply(chunks: Buffer[]): void;
  /** Writes a notification off the main thread: an invalidation may wait for page locks. */
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
  private onFrame: ((frame: Buffer) => void) | undefined;
  private stopPoll: (() => void) | undefined;
  private readonly poll = pollReader();
  private nosys: Uint32Array | undefined;
  private attrs: Uint8Array | undefined;
  private fdClosed = false;

  constructor(readonly fd: number, opts: ChannelOptions) {
    this.bufferSize = Math.max(opts.bufferSize, FUSE_MIN_READ_BUFFER);
    this.closed = new Promise((resolve) => (this.resolveClosed = resolve));
  }

  /** Whether the native reader reads the device (and so takes start()'s `attrs`). */
  get native(): boolean {
    return this.poll !== undefined;
  }

  /**
   * Starts the reader; each frame is handed over for good (the callee owns the Buffer). `nosys`
   * (128 entries): requests whose opcode o has nosys[o] set may be answered ENOSYS by the native
   * reader itself, which counts them in nosys[64 + o]; the thread reader hands them over as any.
   * `attrs` (with nosys, native reader only): the table of GETATTR answers (native-attrs.ts).
   */
  start(onFrame: (frame: Buffer) => void, nosys?: Uint32Array, attrs?: Uint8Array): void {
    this.onFrame = onFrame;
    this.nosys = nosys;
    this.attrs = attrs;
    // The poll reader starts at attach(): an unattached device polls as an error.
    if (this.poll) return;
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
    if (!this.poll || !this.onFrame || this.stopPoll || this.fdClosed) return;
    const onFrame = this.onFrame;
    this.stopPoll = this.poll.start(this.fd, this.bufferSize, (frame) => {
      try {
        onFrame(frame);
      } catch (e) {
        log.error(`request handler threw: ${e instanceof Error ? e.message : String(e)}`);
      }
    }, (code) => {
      if (code !== 'ENODEV') log.error(`reading /dev/fuse: ${code}`);
      this.finish();
    }, this.nosys, this.nosys && this.attrs);
  }

  /**
   * Stops reading: for a mount that failed, or once the connection is known to be gone. A reader
   * blocked in read(2) on a live connection ends when the kernel ends the session.
   */
  close(): void {
    Atomics.store(this.flags, 1, 1);
    Atomics.notify(this.flags, 1);
    this.stopPoll?.();
    if (!this.reader) this.finish();
  }

  reply(chunks: Buffer[]): void {
    if (this.fdClosed) throw Object.assign(new Error('FUSE device closed'), { code: 'ENODEV' });
    const total = chunks.reduce((n, c) => n + c.length, 0);
    // One writev per message: the device takes a message whole or not at all.
    const n = fs.writevSync(this.fd, chunks);
    if (n !== total) throw new Error(`short write to /dev/fuse: ${n} of ${total}`);
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
