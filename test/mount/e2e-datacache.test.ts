// The client's data cache on local disk, through real mounts: pages the kernel has let go
// (posix_fadvise DONTNEED, as `dd iflag=nocache` and fio do) are read again from the client's disk,
// not the server; and a change anywhere (another client, a process on the server host, this
// client) is never answered from it afterwards.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { createHash, randomBytes } from 'node:crypto';
import { sh, teardownMount, tmpdir } from '../helpers/mount.js';
import { BIN, mount, serve } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

interface CacheLine {
  files: number;
  mib: number;
  hits: number;
  misses: number;
}

/** The "data cache:" line of the mount's `wirefs status`, or undefined when it has none. */
async function cacheOf(mnt: string): Promise<CacheLine | undefined> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const next = lines.slice(head + 1).findIndex((l) => !l.startsWith('  '));
  const own = lines.slice(head + 1, next < 0 ? undefined : head + 1 + next);
  const m = /data cache: (\d+) files, ([\d.]+) of [\d.]+ MiB; (\d+) reads from it, (\d+) from the server/.exec(own.find((l) => l.includes('data cache:')) ?? '');
  // The per-operation counts: every read the cache did not answer went to the server as a READ.
  const remote = /server requests: .*\bread (\d+)/.exec(own.find((l) => l.includes('server requests:')) ?? '');
  if (m && Number(m[4]) > 0) assert.ok(remote && Number(remote[1]) >= Number(m[4]), `READs sent (${remote?.[1]}) fewer than reads missed (${m[4]})`);
  assert.ok(own.some((l) => /kernel requests: .*\bLOOKUP \d+/.test(l)), 'kernel requests by operation');
  return m ? { files: Number(m[1]), mib: Number(m[2]), hits: Number(m[3]), misses: Number(m[4]) } : undefined;
}

/** The cache line once it holds `mib` MiB (it is written at idle priority: a busy machine takes a moment). */
async function kept(mnt: string, mib: number): Promise<CacheLine | undefined> {
  let c = await cacheOf(mnt);
  for (let i = 0; i < 200 && c && c.mib < mib; i++) {
    await new Promise((r) => setTimeout(r, 100));
    c = await cacheOf(mnt);
  }
  return c;
}

const md5 = (b: Buffer): string => createHash('md5').update(b).digest('hex');

/** Drops the kernel's pages of the file, then reads it whole: the md5 of what the mount gives. */
async function rereadMd5(file: string): Promise<string> {
  await ok(`timeout 10 dd if=${file} iflag=nocache count=0 status=none`);
  return (await ok(`timeout 20 md5sum < ${file}`)).split(' ')[0]!;
}

async function hostMd5(file: string): Promise<string> {
  return md5(await fsp.readFile(file));
}

test('pages the kernel dropped are read from the client disk cache, and every change drops them there too', async (t) => {
  const exported = await tmpdir('wirefs-datacache-');
  const host = `${exported}/f`;
  await fsp.writeFile(host, randomBytes(4 << 20));
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  const b = await mount(t, server.addr);
  const fa = `${a.mnt}/f`;
  const fb = `${b.mnt}/f`;

  assert.equal(await rereadMd5(fa), await hostMd5(host));
  const once = await cacheOf(a.mnt);
  assert.ok(once, 'a default mount has a data cache');
  assert.equal(once.mib, 0, `a file read once is not kept: ${JSON.stringify(once)}`);
  // Read again after the kernel let its pages go: kept now.
  assert.equal(await rereadMd5(fa), await hostMd5(host));
  const first = await kept(a.mnt, 4);
  assert.ok(first);
  assert.ok(first.mib >= 4 && first.files === 1, `4 MiB kept: ${JSON.stringify(first)}`);

  // The kernel's pages are gone; the server is not asked again.
  assert.equal(await rereadMd5(fa), await hostMd5(host));
  const again = (await cacheOf(a.mnt))!;
  assert.equal(again.misses, first.misses, 'no read went to the server');
  assert.ok(again.hits > first.hits, `read from the cache: ${JSON.stringify(again)}`);

  // Another client writes in the middle and closes: A's next read has the new bytes.
  await ok(`head -c 8192 /dev/urandom | timeout 10 dd of=${fb} bs=4096 seek=256 conv=notrunc status=none`);
  assert.equal(await rereadMd5(fa), await hostMd5(host), 'another client\'s write');

  // This client writes; its own later read must not come from pages older than the write.
  await ok(`head -c 4096 /dev/urandom | timeout 10 dd of=${fa} bs=4096 seek=100 conv=notrunc status=none`);
  assert.equal(await rereadMd5(fa), await hostMd5(host), 'our own write');
  assert.equal(await rereadMd5(fb), await hostMd5(host), 'B, which wrote before, sees A\'s write');

  // A process on the server host writes (reported by inotify, a moment later).
  const warm = (await kept(a.mnt, 4))!;
  assert.equal(await rereadMd5(fa), await hostMd5(host));
  assert.ok((await cacheOf(a.mnt))!.hits > warm.hits, 'the cache is in use again before the host edit');
  const fd = fs.openSync(host, 'r+');
  fs.writeSync(fd, randomBytes(4096), 0, 4096, 3 << 20);
  fs.closeSync(fd);
  const want = await hostMd5(host);
  const t0 = Date.now();
  let got = '';
  while (Date.now() - t0 < 3000 && (got = await rereadMd5(fa)) !== want) await new Promise((r) => setTimeout(r, 50));
  assert.equal(got, want, 'a host edit reached the cache within 3 s');

  // Truncation by another client, then growth by this one.
  await ok(`timeout 10 truncate -s 100000 ${fb}`);
  assert.equal(await rereadMd5(fa), await hostMd5(host), 'truncated elsewhere');
  assert.equal((await ok(`timeout 10 stat -c %s ${fa}`)).trim(), '100000');
  await ok(`head -c 50000 /dev/urandom | timeout 10 dd of=${fa} bs=50000 seek=3 conv=notrunc status=none`);
  assert.equal(await rereadMd5(fa), await hostMd5(host), 'grown here');
  assert.equal(await rereadMd5(fb), await hostMd5(host), 'and seen there');

  // Unmounting removes the daemon's cache directory.
  const dirs = (): string[] => fs.readdirSync('/var/cache/wirefs').filter((n) => n.startsWith(`pid-${a.pid}-`));
  assert.equal(dirs().length, 1);
  await a.unmount();
  assert.deepEqual(dirs(), [], 'cache directory removed at unmount');
});

test('the data cache keeps to its size, and datacache_mb=0 has none', async (t) => {
  const exported = await tmpdir('wirefs-datacache-');
  await fsp.writeFile(`${exported}/f`, randomBytes(6 << 20));
  const server = await serve(t, exported);
  const small = await mount(t, server.addr, { options: 'datacache_mb=1' });
  const none = await mount(t, server.addr, { options: 'datacache_mb=0' });
  const want = await hostMd5(`${exported}/f`);
  for (let i = 0; i < 2; i++) assert.equal(await rereadMd5(`${small.mnt}/f`), want);
  const c = (await cacheOf(small.mnt))!;
  assert.ok(c.mib <= 1, `at most 1 MiB kept: ${JSON.stringify(c)}`);
  assert.equal(await rereadMd5(`${none.mnt}/f`), want);
  assert.equal(await cacheOf(none.mnt), undefined);
  const badMnt = await tmpdir('wirefs-mnt-');
  t.after(() => teardownMount(badMnt));
  const bad = await sh(`timeout 10 ${process.execPath} ${BIN} mount -f -o datacache_mb=lots 127.0.0.1:1 ${badMnt}`);
  assert.notEqual(bad.code, 0);
  assert.match(bad.stderr, /bad datacache_mb "lots"/);
});
