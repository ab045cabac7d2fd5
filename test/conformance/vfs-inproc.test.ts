// The POSIX case table run in-process against every local source: MemoryFs, and PassthroughFs on a
// fresh directory of this machine's disk.

import { after, before, describe, it } from 'node:test';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { MemoryFs } from '../../src/sources/memory.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import type { Ctx, Vfs } from '../../src/vfs/types.js';
import { posixCases } from './posix-cases.js';

const ctx: Ctx = { uid: 1000, gid: 1000, pid: process.pid };

function suite(name: string, open: () => Promise<Vfs>, cleanup: () => Promise<void> = async () => {}): void {
  void describe(name, () => {
    let vfs: Vfs;
    before(async () => {
      vfs = await open();
    });
    after(async () => {
      await vfs.close();
      await cleanup();
    });
    for (const c of posixCases) void it(c.name, () => c.run(vfs, ctx));
  });
}

suite('MemoryFs', async () => new MemoryFs());

let tmp = '';
suite(
  'PassthroughFs',
  async () => {
    tmp = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-sources-conf-'));
    return PassthroughFs.open(tmp);
  },
  () => fsp.rm(tmp, { recursive: true, force: true }),
);
