// The FAT source end to end and against the POSIX case table:
// - in-process, the case table on FAT12/16/32 images (cases needing what FAT cannot hold, such as
//   owners, modes, links and xattrs, are skipped by capability), then fsck.vfat -n must pass;
// - through the network and the kernel: `wirefs serve fat:IMG`, a client mount (type fuse.vfat),
//   diff -r against the tree mcopy put in, a real tarball extracted into it, renames, deletes and
//   truncates mirrored on a local model, then unmount, a clean server stop (SIGTERM), fsck.vfat -n,
//   and mcopy/mdir/mtype must show exactly the model.

import { after, before, describe, it, test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { FatFs } from '../../src/sources/fat.js';
import type { Ctx } from '../../src/vfs/types.js';
import { quote, sh, tmpdir } from '../helpers/mount.js';
import { mount, serve, ROOT } from '../helpers/wirefs.js';
import { posixCases, type Capability } from './posix-cases.js';

const TOOLS = 'export TZ=UTC MTOOLS_SKIP_CHECK=1;';

async function ok(cmd: string, timeoutMs = 60_000): Promise<string> {
  const r = await sh(`${TOOLS} ${cmd}`, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/**
 * What FAT holds beyond plain files and directories: RENAME_EXCHANGE (as Linux vfat since 6.0).
 * No owners, modes, nanosecond times, links, device nodes, xattrs, or holes.
 */
const FAT_HAS: ReadonlySet<Capability> = new Set<Capability>(['renameExchange']);

let work = '';
before(async () => {
  work = await tmpdir('wirefs-fat-conf-');
});
after(() => fsp.rm(work, { recursive: true, force: true }));

for (const [type, kib] of [['12', 16000], ['16', 64000], ['32', 64000]] as const) {
  void describe(`POSIX cases on FatFs (FAT${type}, in-process)`, () => {
    let vfs: FatFs;
    let img = '';
    const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
    before(async () => {
      img = path.join(work, `posix${type}.img`);
      await ok(`mkfs.vfat -F ${type} -C ${img} ${kib}`);
      vfs = await FatFs.open(img);
      assert.equal(vfs.fatType, `fat${type}`);
    });
    after(async () => {
      await vfs.close();
      // Whatever the cases did, the image must be consistent afterwards.
      await ok(`fsck.vfat -n ${img}`);
    });
    for (const c of posixCases) {
      const missing = (c.needs ?? []).filter((n) => !FAT_HAS.has(n));
      void it(c.name, missing.length ? { skip: `FAT has no ${missing.join(', ')}` } : {}, () => c.run(vfs, ctx));
    }
  });
}

test('serve fat:IMG, mount it, extract a tarball, change it; fsck and mtools agree', { timeout: 110_000 }, async (t) => {
  // The tree mcopy puts in, and a model that receives every change made through the mount.
  const tree = path.join(work, 'tree');
  await ok(`mkdir -p ${tree}/docs/deep/deeper ${tree}/many && cd ${tree} && echo hello > hello.txt && printf 'UP\\n' > UPPER.TXT`
    + ` && head -c 1234567 /dev/urandom > docs/random.bin && echo leaf > docs/deep/deeper/leaf.txt`
    + ` && echo long > 'docs/A file with quite a long name, more than 8.3.text'`
    + ` && for i in $(seq 1 80); do echo "n $i" > "many/entry number $i"; done`);
  // A real tarball: the eslint package from node_modules (regular files and directories only).
  const tarball = path.join(work, 'eslint.tar');
  await ok(`tar -C ${quote(path.join(ROOT, 'node_modules'))} -cf ${tarball} eslint`);
  const img = path.join(work, 'served.img');
  await ok(`mkfs.vfat -F 16 -C ${img} 64000 && mcopy -s -i ${img} ${tree}/* ::`);
  const model = path.join(work, 'model');
  await ok(`cp -a ${tree} ${model}`);

  const server = await serve(t, `fat:${img}`);
  const { mnt, unmount } = await mount(t, server.addr);
  const line = (await ok('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === mnt);
  assert.match(line ?? '', / fuse\.vfat /);

  await ok(`diff -r ${tree} ${mnt}`);
  // Case-insensitive lookups through the kernel too.
  assert.equal(await ok(`timeout 10 cat ${mnt}/HELLO.TXT`), 'hello\n');
  // Also in a directory this client made (whose names it knows): no "no such file" from a cache.
  assert.equal(await ok(`mkdir ${mnt}/casetest && echo x > ${mnt}/casetest/lower.txt && timeout 10 cat ${mnt}/casetest/LOWER.TXT && rm -r ${mnt}/casetest`), 'x\n');

  const both = async (cmd: (root: string) => string): Promise<void> => {
    await ok(cmd(mnt));
    await ok(cmd(model));
  };
  const started = Date.now();
  await both((r) => `mkdir ${r}/extract && tar -C ${r}/extract --no-same-owner --no-same-permissions -xf ${tarball}`);
  const extractMs = Date.now() - started;
  await ok(`diff -r ${model}/extract ${mnt}/extract`);
  const files = Number((await ok(`find ${mnt}/extract -type f | wc -l`)).trim());
  assert.ok(files > 300, `${files} files extracted`);
  t.diagnostic(`extracted ${files} files through the mount in ${extractMs} ms`);

  await both((r) => `mv ${r}/hello.txt ${r}/docs/deep/'Hello Again.txt'`);
  await both((r) => `mv ${r}/docs/deep ${r}/many/'moved deep'`);
  await both((r) => `rm ${r}/many/'entry number 7' ${r}/many/'entry number 8' && rm -r ${r}/extract/eslint/lib/rules`);
  await both((r) => `truncate -s 1000 ${r}/docs/random.bin && truncate -s 3000 ${r}/docs/random.bin`);
  await both((r) => `printf 'appended\\n' >> ${r}/UPPER.TXT && dd if=/dev/zero of=${r}/many/ddfile bs=4096 seek=3 count=2 status=none`);
  await ok(`diff -r ${model} ${mnt}`);
  assert.equal(await ok(`timeout 10 cat ${mnt}/many/'moved deep'/deeper/leaf.txt`), 'leaf\n');
  // Two clients of the one server write at once; the source serializes them.
  const staging = path.join(work, 'staging');
  await ok(`mkdir -p ${staging}/a ${staging}/b && for i in $(seq 1 40); do head -c $((i * 3001)) /dev/urandom > ${staging}/a/"a file $i";`
    + ` head -c $((i * 2999)) /dev/urandom > ${staging}/b/"b file $i"; done`);
  const second = await mount(t, server.addr);
  await Promise.all([ok(`cp -r ${staging}/a ${mnt}/from-a`), ok(`cp -r ${staging}/b ${second.mnt}/from-b`)]);
  await ok(`cp -r ${staging}/a ${model}/from-a && cp -r ${staging}/b ${model}/from-b`);
  await ok(`diff -r ${model} ${second.mnt}`);
  await second.unmount();
  // What FAT cannot hold fails as on vfat.
  assert.match((await sh(`ln -s x ${mnt}/symlink`, { timeoutMs: 10_000 })).stderr, /Operation not permitted/);
  assert.match((await sh(`chown 1000 ${mnt}/UPPER.TXT`, { timeoutMs: 10_000 })).stderr, /Operation not permitted/);
  await ok(`chmod a-w ${mnt}/UPPER.TXT && chmod u+w ${mnt}/UPPER.TXT && chmod a-w ${mnt}/UPPER.TXT`);
  assert.match(await ok(`stat -c %A ${mnt}/UPPER.TXT`), /^-r--r--r--/);

  await unmount();
  // A clean stop: SIGTERM, and the server writes everything and clears the volume's dirty flag.
  await server.stop();
  await ok(`fsck.vfat -n ${img}`);
  const out = path.join(work, 'mtools-out');
  await ok(`mkdir ${out} && mdir -i ${img} -b :: | xargs -d '\\n' -I{} mcopy -s -n -i ${img} {} ${out}/`);
  await ok(`diff -r ${model} ${out}`);
  assert.match(await ok(`mdir -i ${img} -/ ::`), /Hello Again\.txt/);
  assert.equal(await ok(`mtype -i ${img} ::/UPPER.TXT`), 'UP\nappended\n');
  assert.match(await ok(`mattrib -i ${img} ::/UPPER.TXT`), /R/);
});
