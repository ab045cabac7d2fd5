// A write-only handle of a file its CREATE made goes uncached (FOPEN_DIRECT_IO, session.ts
// directCreates): each write(2) is one WRITE, with no capability probe (GETXATTR) before it and no
// cut at a page the kernel has not read. These tests count the kernel's requests through
// `wirefs status` against a read-write handle of the same kind of file, which stays cached, and
// check that other handles of the mount (cached reads, a shared mapping) see every direct write.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import { sh, tmpdir } from '../helpers/mount.js';
import { BIN, mount, serve } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 60000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** The mount's kernel requests by operation, from `wirefs status`. */
async function requests(mnt: string): Promise<Record<string, number>> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const line = lines.slice(head + 1, head + 12).find((l) => l.trim().startsWith('kernel requests:'));
  assert.ok(line, 'no kernel requests line');
  const out: Record<string, number> = {};
  for (const m of line.matchAll(/\b([A-Z_]+) (\d+)/g)) out[m[1]!] = Number(m[2]);
  return out;
}

function delta(a: Record<string, number>, b: Record<string, number>, op: string): number {
  return (b[op] ?? 0) - (a[op] ?? 0);
}

// Creates argv[1] (O_EXCL) for writing only or for reading and writing (argv[2]) and writes it as
// tar writes a 14 KiB member: 10240 bytes, then the rest.
const WRITER = `import os, sys
mode = os.O_WRONLY if sys.argv[2] == "w" else os.O_RDWR
fd = os.open(sys.argv[1], mode | os.O_CREAT | os.O_EXCL, 0o644)
data = bytes(i % 251 for i in range(14469))
os.write(fd, data[:10240]); os.write(fd, data[10240:])
os.close(fd)`;
const expected = Buffer.from(Array.from({ length: 14469 }, (_, i) => i % 251));

test('a new write-only file: one WRITE per write(2), no capability probe; a read-write one stays cached', async (t) => {
  const exported = await tmpdir('wirefs-direct-');
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  await fsp.mkdir(`${exported}/d`);
  await ok(`timeout 10 ls ${a.mnt}/d`);

  const r0 = await requests(a.mnt);
  await ok(`timeout 20 python3 -c '${WRITER}' ${a.mnt}/d/w w`);
  const r1 = await requests(a.mnt);
  await ok(`timeout 20 python3 -c '${WRITER}' ${a.mnt}/d/rw rw`);
  const r2 = await requests(a.mnt);

  assert.deepEqual(await fsp.readFile(`${exported}/d/w`), expected);
  assert.deepEqual(await fsp.readFile(`${exported}/d/rw`), expected);
  // Write-only: the two write(2)s are two WRITEs, and the kernel asks no security.capability.
  assert.equal(delta(r0, r1, 'WRITE'), 2, 'WRITEs of the write-only file');
  assert.equal(delta(r0, r1, 'GETXATTR'), 0, 'GETXATTRs of the write-only file');
  // Read-write (cached, as before): the kernel probes for a capability before the first write,
  // and (6.18 here) cuts the second write(2) at the page it has not read: 3 WRITEs.
  assert.ok(delta(r1, r2, 'WRITE') >= 2, 'WRITEs of the read-write file');
  assert.ok(delta(r1, r2, 'GETXATTR') >= 1, 'the read-write file\'s first write probes for a capability');
});

test('direct writes of a new file are seen at once by the mount\'s cached handles and mappings', async (t) => {
  const exported = await tmpdir('wirefs-direct-');
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  const b = await mount(t, server.addr);
  // The writer's handle is write-only, made by its create: direct. A reader opened meanwhile is
  // cached, and so is a read-write handle mapped shared; each must see every write at once.
  const script = `import os, mmap, sys
p = sys.argv[1]
w = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
os.write(w, b"hello")
r = os.open(p, os.O_RDONLY)
print(os.pread(r, 100, 0).decode())
os.write(w, b" world")
print(os.pread(r, 100, 0).decode())
os.pwrite(w, b"J", 0)
print(os.pread(r, 100, 0).decode())
rw = os.open(p, os.O_RDWR)
m = mmap.mmap(rw, 0)
print(m[:11].decode())
os.pwrite(w, b"K", 1)
print(m[:11].decode(), os.pread(r, 100, 0).decode())
m.close(); os.close(rw); os.close(r); os.close(w)`;
  const out = (await ok(`timeout 20 python3 -c '${script}' ${a.mnt}/f`)).trim().split('\n');
  assert.deepEqual(out, ['hello', 'hello world', 'Jello world', 'Jello world', 'JKllo world JKllo world']);
  // Closed on A: the bytes are on the server, and another client reads them at once.
  assert.equal(await fsp.readFile(`${exported}/f`, 'utf8'), 'JKllo world');
  assert.equal((await ok(`timeout 10 cat ${b.mnt}/f`)), 'JKllo world');
});
