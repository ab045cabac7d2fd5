// Frames on their way to a socket, both sides of a connection. On loopback, and more so in a VM, a
// message's cost is mostly the sender's socket write, which does the receiver's TCP work and wakes
// it: so frames made in one turn of the event loop go out together, in one writev at its end, and
// a frame no one waits for (a FORGET or RELEASE, the answer to a RELEASE) waits up to HOLD_MS for
// another to go out with.

/** How long a frame no one waits for may wait for company, and how many may wait. */
export const HOLD_MS = 20;
export const HELD_MAX = 32;
/** Bytes queued at most; beyond, they are written at once (a full socket then stops the reader). */
export const QUEUE_BYTES = 256 * 1024;

export class Outbox {
  private frames: Buffer[] = [];
  private bytes = 0;
  private timer: NodeJS.Timeout | undefined;
  private soon: NodeJS.Immediate | undefined;

  /** `write` gets every queued buffer, in order, to write in one go (cork, write, uncork). */
  constructor(private readonly write: (frames: Buffer[]) => void) {}

  /** Queues a frame (or the pieces of one); `hold`: nobody waits for it. */
  push(frame: Buffer | readonly Buffer[], hold = false): void {
    if (Buffer.isBuffer(frame)) {
      this.frames.push(frame);
      this.bytes += frame.length;
    } else {
      for (const piece of frame) {
        this.frames.push(piece);
        this.bytes += piece.length;
      }
    }
    if (this.bytes >= QUEUE_BYTES) return this.flush();
    if (this.soon) return;
    if (hold && this.frames.length < HELD_MAX) this.timer ??= setTimeout(() => this.flush(), HOLD_MS).unref();
    else this.soon = setImmediate(() => this.flush());
  }

  /** Writes everything queued now. */
  flush(): void {
    const frames = this.frames;
    this.clear();
    if (frames.length) this.write(frames);
  }

  /** Drops everything queued (the connection is gone). */
  clear(): void {
    clearTimeout(this.timer);
    this.timer = undefined;
    if (this.soon) clearImmediate(this.soon);
    this.soon = undefined;
    this.frames = [];
    this.bytes = 0;
  }
}

/** Writes frames to a socket in one writev; returns false if the socket's buffer is full. */
export function writeFrames(socket: { cork(): void; uncork(): void; write(b: Buffer): boolean }, frames: Buffer[]): boolean {
  let ok = true;
  if (frames.length > 1) socket.cork();
  for (const f of frames) ok = socket.write(f) && ok;
  if (frames.length > 1) socket.uncork();
  return ok;
}
