// The periodic memory trim: malloc_trim after work, and one full collection once idle after it;
// nothing at all while idle after that.

import { it } from 'node:test';
import assert from 'node:assert/strict';
import { startMemoryTrim } from '../../src/lib/memory.js';
import { nativeSys } from '../../src/lib/sys.js';

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
const PERIOD = 100;

/** Work that never leaves a period without a request. */
async function busy(bump: () => void, ms: number): Promise<void> {
  for (const end = Date.now() + ms; Date.now() < end;) {
    bump();
    await sleep(5);
  }
}

void it('trims after work, collects once when idle after it, then rests', async () => {
  let work = 0;
  const trim = startMemoryTrim(() => work, PERIOD);
  try {
    await busy(() => work++, 5 * PERIOD);
    const during = trim.stats();
    if (nativeSys()) assert.ok(during.trims >= 3, `trims while busy: ${during.trims}`);
    assert.equal(during.collections, 0, 'no collection while busy');
    // Idle after work: one collection, then nothing while idle.
    await sleep(3 * PERIOD);
    const idle = trim.stats();
    assert.equal(idle.collections, 1);
    await sleep(3 * PERIOD);
    assert.deepEqual(trim.stats(), idle, 'nothing more while idle');
    // Each idle period after work collects once...
    await busy(() => work++, 2 * PERIOD);
    await sleep(3 * PERIOD);
    assert.equal(trim.stats().collections, 2);
    // ...and after more work, once more (V8 compacts what the work left), trimmed too.
    const before = trim.stats();
    await busy(() => work++, 2 * PERIOD);
    await sleep(3 * PERIOD);
    const after = trim.stats();
    assert.equal(after.collections, 3);
    if (nativeSys()) assert.ok(after.trims >= before.trims + 2, 'trimmed after the work and once idle');
    await sleep(3 * PERIOD);
    assert.deepEqual(trim.stats(), after, 'and rests again');
  } finally {
    trim.stop();
  }
});

void it('raises glibc\'s mmap and trim thresholds where the addon and glibc are there', (t) => {
  const sys = nativeSys();
  if (!sys?.mallocTune || !process.report?.getReport) return t.skip('no native addon');
  const glibc = (process.report.getReport() as { header?: { glibcVersionRuntime?: string } }).header?.glibcVersionRuntime;
  if (!glibc) return t.skip('not glibc');
  assert.equal(sys.mallocTune(32, 64), true);
  assert.throws(() => sys.mallocTune!(Number.NaN, 64));
  assert.throws(() => sys.mallocTune!(32, 4096), /0 to 1024 MiB/);
});
