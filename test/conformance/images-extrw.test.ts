// The ext2/3/4 read-write source (libext2fs) end to end and against the POSIX case table:
// - in-process, the whole case table on fresh ext2, ext3 and ext4 images, then e2fsck -fn must
//   find them clean;
// - through the network and the kernel: `wirefs serve ext4:IMG`, a client mount, diff -r against
//   the tree mkfs.ext4 -d put in, a real tarball extracted into it, renames, deletes, truncates,
//   links, symlinks, fifos and xattrs mirrored on a local model, two clients writing at once, then
//   unmount, a clean server stop (SIGTERM), e2fsck -fn clean, and debugfs showing the changes;
// - refusals at serve: a journal that needs recovery, a truncated image, a corrupted superblock.

import { after, before, describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { ExtRwFs, ext2fsAddon } from '../../src/sources/ext-rw.js';
import type { Ctx } from '../../src/vfs/types.js';
import { quote, sh, tmpdir } from '../helpers/mount.js';
import { mount, serve, ROOT, BIN } from '../helpers/wirefs.js';
import { posixCases, type Capability } from './posix-cases.js';

async function ok(cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** ext holds everything the table asks about. */
const EXT_HAS: ReadonlySet<Capability> = new Set<Capability>(['owners', 'modes', 'nsTimes', 'symlinks', 'hardlinks', 'specialFiles', 'xattrs', 'renameExchange', 'punchHole']);
const skipAll = ext2fsAddon() ? {} : { skip: 'libext2fs addon not built' };

let work = '';
before(async () => {
  work = await tmpdir('wirefs-extrw-conf-');
});
after(() => fsp.rm(work, { recursive: true, force: true }));

for (const type of ['ext2', 'ext3', 'ext4'] as const) {
  void describe(`POSIX cases on ExtRwFs (${type}, in-process)`, skipAll, () => {
    let vfs: ExtRwFs;
    let img = '';
    const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
    before(async () => {
      img = path.join(work, `posix-${type}.img`);
      await ok(`mkfs.${type} -q -F ${img} 32M`);
      vfs = await ExtRwFs.open(img);
      assert.equal(vfs.info().type, type);
    });
    after(async () => {
      await vfs.close();
      // Whatever the cases did, the image must be consistent afterwards.
      await ok(`e2fsck -fn ${img}`);
    });
    for (const c of posixCases) {
      const missing = (c.needs ?? []).filter((n) => !EXT_HAS.has(n));
      void it(c.name, missing.length ? { skip: `no ${missing.join(', ')}` } : {}, () => c.run(vfs, ctx));
    }
  });
}

test('serve ext4:IMG, mount it, extract a tarball, change it; e2fsck clean, debugfs agrees', { timeout: 110_000, ...skipAll }, async (t) => {
  // The tree mkfs.ext4 -d puts in, and a model that receives every change made through the mount.
  const tree = path.join(work, 'tree');
  await ok(`mkdir -p ${tree}/docs/deep/deeper ${tree}/many && cd ${tree} && echo hello > hello.txt`
    + ` && head -c 3456789 /dev/urandom > docs/random.bin && echo leaf > docs/deep/deeper/leaf.txt`
    + ` && ln -s hello.txt fast-link && ln -s ${'x/'.repeat(100)}t docs/slow-link && ln hello.txt hard-link`
    + ` && chmod 0640 hello.txt && chmod 0711 docs/deep`
    + ` && for i in $(seq 1 300); do echo "n $i" > "many/entry number $i"; done`);
  // A real tarball: the eslint package from node_modules.
  const tarball = path.join(work, 'eslint.tar');
  await ok(`tar -C ${quote(path.join(ROOT, 'node_modules'))} -cf ${tarball} eslint`);
  const img = path.join(work, 'served.img');
  await ok(`mkfs.ext4 -q -F -d ${tree} ${img} 256M`);
  const model = path.join(work, 'model');
  await ok(`cp -a ${tree} ${model}`);

  const server = await serve(t, `ext4:${img}`);
  const { mnt, unmount } = await mount(t, server.addr);
  const line = (await ok('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === mnt);
  assert.match(line ?? '', / fuse\.ext4 /);
  const diff = (a: string, b: string): Promise<string> => ok(`timeout 60 diff -r --no-dereference -x lost+found ${a} ${b}`);

  await diff(tree, mnt);
  assert.equal(await ok(`timeout 10 stat -c '%a %h' ${mnt}/hello.txt ${mnt}/docs/deep`), '640 2\n711 3\n');

  const both = async (cmd: (root: string) => string): Promise<void> => {
    await ok(`timeout 60 sh -c ${quote(cmd(mnt))}`);
    await ok(cmd(model));
  };
  const started = Date.now();
  await both((r) => `mkdir ${r}/extract && tar -C ${r}/extract -xf ${tarball}`);
  const extractMs = Date.now() - started;
  const files = Number((await ok(`find ${mnt}/extract -type f | wc -l`)).trim());
  assert.ok(files > 300, `${files} files extracted`);
  t.diagnostic(`extracted ${files} files through the mount in ${extractMs} ms`);

  await both((r) => `mv ${r}/hello.txt ${r}/docs/deep/'Hello Again.txt'`);
  await both((r) => `mv ${r}/docs/deep ${r}/many/'moved deep'`);
  await both((r) => `rm ${r}/many/'entry number 7' ${r}/many/'entry number 8' && rm -r ${r}/extract/eslint/lib/rules`);
  await both((r) => `truncate -s 1000 ${r}/docs/random.bin && truncate -s 3000 ${r}/docs/random.bin`);
  await both((r) => `printf 'appended\\n' >> ${r}/hard-link && dd if=/dev/zero of=${r}/many/ddfile bs=4096 seek=3 count=2 status=none`);
  await both((r) => `ln ${r}/many/ddfile ${r}/ddlink && ln -s 'many/moved deep' ${r}/dirlink && ln -s ${'z'.repeat(300)} ${r}/longlink`);
  await both((r) => `mv ${r}/fast-link ${r}/docs/fast-link-moved`);
  await diff(model, mnt);
  assert.equal(await ok(`timeout 10 cat ${mnt}/dirlink/deeper/leaf.txt`), 'leaf\n');
  assert.equal(await ok(`timeout 10 stat -c %h ${mnt}/ddlink`), '2\n');
  // Special files and xattrs, checked on the mount (and in the image below).
  await ok(`timeout 10 mkfifo ${mnt}/fifo && timeout 10 mknod ${mnt}/null c 1 3 && timeout 10 setfattr -n user.color -v blue ${mnt}/docs/random.bin`);
  assert.match(await ok(`timeout 10 stat -c '%F %t:%T' ${mnt}/fifo ${mnt}/null`), /^fifo 0:0\ncharacter special file 1:3\n$/);
  assert.match(await ok(`timeout 10 getfattr -n user.color ${mnt}/docs/random.bin`), /user\.color="blue"/);
  // Two clients of the one server write at once; the source serializes them.
  const staging = path.join(work, 'staging');
  await ok(`mkdir -p ${staging}/a ${staging}/b && for i in $(seq 1 40); do head -c $((i * 3001)) /dev/urandom > ${staging}/a/"a file $i";`
    + ` head -c $((i * 2999)) /dev/urandom > ${staging}/b/"b file $i"; done`);
  const second = await mount(t, server.addr);
  await Promise.all([ok(`timeout 60 cp -r ${staging}/a ${mnt}/from-a`), ok(`timeout 60 cp -r ${staging}/b ${second.mnt}/from-b`)]);
  await ok(`cp -r ${staging}/a ${model}/from-a && cp -r ${staging}/b ${model}/from-b && mkfifo ${model}/fifo`);
  await ok(`timeout 60 diff -r --no-dereference -x lost+found -x fifo -x null ${model} ${second.mnt}`);
  await second.unmount();

  await unmount();
  // A clean stop: SIGTERM, and the server writes everything and marks the file system clean.
  await server.stop();
  await ok(`e2fsck -fn ${img}`);
  const listing = await ok(`debugfs -R 'ls -l "/many/moved deep"' ${img}`);
  assert.match(listing, /Hello Again\.txt/);
  assert.equal(await ok(`debugfs -R 'cat /hard-link' ${img}`), 'hello\nappended\n');
  assert.match(await ok(`debugfs -R 'stat /null' ${img}`), /Device major\/minor number: 01:03/);
  assert.match(await ok(`debugfs -R 'ea_list /docs/random.bin' ${img}`), /user\.color.*blue/);
  assert.match(await ok(`debugfs -R 'stat /docs/random.bin' ${img}`), /Size: 3000\b/);
  assert.equal(Number((await ok(`debugfs -R 'ls /from-a' ${img} | grep -o 'a file' | wc -l`)).trim()), 40);
});

test('serve refuses bad ext images with one clear line', { timeout: 60_000, ...skipAll }, async () => {
  const base = path.join(work, 'refuse.img');
  await ok(`mkfs.ext4 -q -F ${base} 64M`);
  const journal = path.join(work, 'journal.img');
  const cut = path.join(work, 'cut.img');
  const junk = path.join(work, 'junk.img');
  await ok(`cp ${base} ${journal} && debugfs -w -R 'feature needs_recovery' ${journal}`);
  await ok(`cp ${base} ${cut} && truncate -s 20M ${cut} && head -c 4000000 /dev/urandom > ${junk}`);
  for (const [img, re] of [[journal, /journal needs recovery/], [cut, /truncated/], [junk, /not a usable ext2\/3\/4 file system/]] as const) {
    const r = await sh(`timeout 20 ${quote(process.execPath)} ${BIN} serve -p 0 --bind 127.0.0.1 ext4:${img}`, { timeoutMs: 30_000 });
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, re);
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr);
  }
  // The journal image is still served read-only.
  const r = await sh(`timeout 3 ${quote(process.execPath)} ${BIN} serve -p 0 --bind 127.0.0.1 --read-only ext4:${journal}`, { timeoutMs: 30_000 });
  assert.match(r.stdout, /serving .* \(type ext4\)/);
});
