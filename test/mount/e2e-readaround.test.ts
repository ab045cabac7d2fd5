// Read-around through real mounts: a small random read that misses the page cache fetches the
// window around it and pushes the rest into the kernel's page cache (NOTIFY_STORE), so nearby
// reads never leave the kernel; and those pushed pages never hide a change, whether another
// client makes it or this one writes the file while it reads it.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import fsp from 'node:fs/promises';
import { sh, tmpdir } from '../helpers/mount.js';
import { BIN, mount, serve } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 60000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** READ requests the mount's kernel sent, and reads it widened, from `wirefs status`. */
async function counts(mnt: string): Promise<{ reads: number; widened: number; stored: number }> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const own = lines.slice(head + 1, head + 12).join('\n');
  const num = (re: RegExp): number => Number(re.exec(own)?.[1] ?? 0);
  return { reads: num(/kernel requests: .*\bREAD (\d+)/), widened: num(/readAround\.widened=(\d+)/), stored: num(/readAround\.storedBytes=(\d+)/) };
}

const MIB = 1 << 20;
const PAGES = MIB / 4096;

// Reads the given pages (4 KiB each, in that order) after dropping the file's cached pages, and
// prints the md5 of each page read, one per line.
const READER = `import os, sys, hashlib
fd = os.open(sys.argv[1], os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
for p in sys.argv[2].split(","):
    print(hashlib.md5(os.pread(fd, 4096, int(p) * 4096)).hexdigest())`;

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

test('random 4 KiB reads fetch their window once, and every byte read is the file\'s', async (t) => {
  const exported = await tmpdir('wirefs-readaround-');
  const server = await serve(t, exported);
  const b = await mount(t, server.addr, { options: 'datacache_mb=0,readaround_kb=64' });
  const content = (await import('node:crypto')).randomBytes(MIB);
  await fsp.writeFile(`${exported}/f`, content);
  // Pages in a scrambled order, every one once: 16 windows of 16 pages each.
  const order = Array.from({ length: PAGES }, (_, i) => (i * 97) % PAGES);
  const before = await counts(b.mnt);
  const got = (await ok(`python3 -c '${READER}' ${b.mnt}/f ${order.join(',')}`)).trim().split('\n');
  assert.deepEqual(got, order.map((p) => md5(content.subarray(p * 4096, (p + 1) * 4096))));
  const after = await counts(b.mnt);
  const reads = after.reads - before.reads;
  // One READ per window fetched (16), plus a few the kernel's read-ahead sends; not one per page.
  assert.ok(reads <= PAGES / 4, `${reads} READs for ${PAGES} random page reads`);
  // Most windows are fetched widened; the kernel reads the first ones ahead itself (a read at
  // offset 0 starts its read-ahead), so those come as big READs instead.
  assert.ok(after.widened - before.widened >= PAGES / 16 - 3, `windows fetched: ${after.widened - before.widened}`);
  assert.ok(after.stored - before.stored >= MIB / 2, `bytes stored: ${after.stored - before.stored}`);
});

test('pushed pages never hide a change: another client\'s write, or this client\'s own', async (t) => {
  const exported = await tmpdir('wirefs-readaround-');
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  const b = await mount(t, server.addr, { options: 'datacache_mb=0,readaround_kb=64' });
  const content = Buffer.alloc(MIB, 'o');
  await fsp.writeFile(`${exported}/f`, content);
  // B reads page 1 of the first window: pages 0 and 2-15 are now pushed into its page cache.
  await ok(`python3 -c '${READER}' ${b.mnt}/f 1`);
  assert.ok((await counts(b.mnt)).stored > 0, 'the window was stored');
  // A changes page 5, which B holds only because it was pushed; B's next read must see it.
  await ok(`timeout 10 dd if=/dev/zero bs=4096 count=1 seek=5 conv=notrunc of=${a.mnt}/f status=none`);
  const page5 = await ok(`timeout 10 python3 -c "import os; fd=os.open('${b.mnt}/f', os.O_RDONLY); print(os.pread(fd, 4096, 5*4096).count(0))"`);
  assert.equal(page5.trim(), '4096', 'B sees the page A wrote');

  // B reads at random through one handle while writing through another: what it reads is always
  // what it last wrote there, and the file ends up as the writes made it.
  const mixed = `import os, random, sys
random.seed(7)
path = sys.argv[1]
ro = os.open(path, os.O_RDONLY)
rw = os.open(path, os.O_RDWR)
model = bytearray(open(path, "rb").read())
os.posix_fadvise(ro, 0, 0, os.POSIX_FADV_DONTNEED)
bad = 0
for i in range(600):
    p = random.randrange(${PAGES})
    if i % 3 == 0:
        b = bytes([65 + i % 26]) * 4096
        os.pwrite(rw, b, p * 4096)
        model[p * 4096:(p + 1) * 4096] = b
    elif os.pread(ro, 4096, p * 4096) != model[p * 4096:(p + 1) * 4096]:
        bad += 1
os.close(rw)
print(bad, __import__("hashlib").md5(model).hexdigest())`;
  const [bad, want] = (await ok(`timeout 60 python3 -c '${mixed}' ${b.mnt}/f`)).trim().split(' ');
  assert.equal(bad, '0', 'reads that did not return the bytes last written');
  assert.equal(md5(await fsp.readFile(`${exported}/f`)), want, 'the file on the server');
  assert.equal((await ok(`timeout 20 md5sum < ${a.mnt}/f`)).split(' ')[0], want, 'the file as A sees it');
});
