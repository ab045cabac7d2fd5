// The /dev/fuse reader thread. A blocking read(2) on the device waits until the kernel has a
// request; doing it here, not on libuv's pool, means the reads can never starve the pool that
// replies and sources (passthrough's file I/O) need, whatever UV_THREADPOOL_SIZE the process got.
// Each request is copied into its own ArrayBuffer and transferred to the main thread.
//
// Shared state (Int32Array over a SharedArrayBuffer): [0] = 1 once mount(2) attached the fd,
// [1] = 1 when the main thread wants the reader to stop.

import fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';

interface ReaderData {
  fd: number;
  bufferSize: number;
  shared: SharedArrayBuffer;
}

const { fd, bufferSize, shared } = workerData as ReaderData;
const flags = new Int32Array(shared);
const buf = Buffer.allocUnsafe(bufferSize);
const port = parentPort!;

function sleep(ms: number): void {
  Atomics.wait(flags, 1, 0, ms);
}

for (;;) {
  if (Atomics.load(flags, 1)) {
    port.postMessage({ end: 'closed' });
    break;
  }
  let n: number;
  try {
    n = fs.readSync(fd, buf, 0, bufferSize, null);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    // ENOENT: the request was interrupted before we read it; EINTR/EAGAIN: try again.
    if (code === 'ENOENT' || code === 'EINTR' || code === 'EAGAIN') continue;
    // EPERM until mount(2) attaches the fd to a connection (fs/fuse/dev.c: no fuse_dev yet).
    if (code === 'EPERM' && !Atomics.load(flags, 0)) {
      sleep(5);
      continue;
    }
    // ENODEV: unmounted, the clean end; ECONNABORTED: aborted with FUSE_ABORT_ERROR (7.27).
    const clean = code === 'ENODEV' || code === 'ECONNABORTED';
    port.postMessage({ end: clean ? 'unmounted' : `reading /dev/fuse: ${(err as Error).message}` });
    break;
  }
  if (n === 0) {
    port.postMessage({ end: 'unmounted' });
    break;
  }
  const frame = new ArrayBuffer(n);
  buf.copy(Buffer.from(frame), 0, 0, n);
  port.postMessage(frame, [frame]);
}
