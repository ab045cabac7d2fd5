// Gives memory back to the system after bursts of I/O. A daemon that has just moved a gigabyte
// holds on to it: the 1 MiB buffers it read and wrote are freed into glibc's heaps (one per pool
// thread that allocated), which keep the pages for the next malloc, and buffers no longer used
// wait for V8's next full collection. Measured on a mount daemon after writing and reading 1 GiB:
// 139 MiB resident, 60 MiB after an idle period (docs/DESIGN.md).
//
// So every period: after any work, malloc_trim(0) (a few milliseconds at most; pages freed while
// busy may be faulted in again, which costs far less than keeping them); and once the daemon has
// been idle for a whole period after work, a full collection first, so dead buffers are freed and
// trimmed too, and V8 compacts its heap and gives back the pages a burst of metadata work left
// empty: after 100 000 files created and stat-ed, the mount daemon went from 133-137 to 99-101 MiB
// resident (one collection of a heap of about 65 MiB, tens of milliseconds, once per burst). The
// server's resident size mostly stays (181 to 149 MiB once, 187 to 186 in the benchmark). Both are
// skipped without the native addon / V8's gc hook.
//
// While busy, freed buffers are kept for reuse instead: glibc's thresholds are raised at start
// (mmap above 32 MiB, trim above 64 MiB free), since with its defaults each 1 MiB buffer was a
// fresh mapping faulted in and zeroed page by page. Measured on a server streaming a cold 1 GiB
// file: 510-860 ms of CPU instead of 700-1320 ms.

import v8 from 'node:v8';
import vm from 'node:vm';
import { nativeSys } from './sys.js';

let gcHook: (() => void) | undefined | null = null;

/** V8's full collection, exposed at run time (as --expose-gc does), or undefined if refused. */
function fullGc(): (() => void) | undefined {
  if (gcHook === null) {
    try {
      v8.setFlagsFromString('--expose-gc');
      gcHook = vm.runInNewContext('gc') as () => void;
    } catch {
      gcHook = undefined;
    }
  }
  return gcHook;
}

export interface MemoryTrimStats {
  /** malloc_trim calls, and those that gave pages back. */
  trims: number;
  released: number;
  collections: number;
}

/**
 * Starts the periodic trim. `activity` is any count that grows with the daemon's work (requests
 * served). The timer never keeps the process alive; stop() ends it, stats() counts what it did.
 */
export function startMemoryTrim(activity: () => number, periodMs = 5000): { stop(): void; stats(): MemoryTrimStats } {
  const sys = nativeSys();
  sys?.mallocTune?.(32, 64);
  const counts: MemoryTrimStats = { trims: 0, released: 0, collections: 0 };
  const trim = (): void => {
    if (!sys) return;
    counts.trims++;
    if (sys.mallocTrim()) counts.released++;
  };
  let seen = activity();
  let trimmedIdle = true;
  const timer = setInterval(() => {
    const now = activity();
    const busy = now !== seen;
    seen = now;
    if (busy) {
      trimmedIdle = false;
      trim();
      return;
    }
    if (trimmedIdle) return;
    trimmedIdle = true;
    const gc = fullGc();
    if (gc) {
      gc();
      counts.collections++;
    }
    trim();
  }, periodMs);
  timer.unref();
  return { stop: () => clearInterval(timer), stats: () => ({ ...counts }) };
}
