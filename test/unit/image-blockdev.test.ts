// Block devices and image files alike: images made by the real tools are attached to loop devices
// and served from /dev/loopN (whose size Node's fstat reports as 0: the source asks sysfs), read,
// written, closed, and then checked on the image file with the format's own tools.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { openSource } from '../../src/sources/index.js';
import { O_RDWR, ROOT_ID, S_IFREG, type Ctx, type Vfs } from '../../src/vfs/types.js';

const run = promisify(execFile);
const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
const env = { ...process.env, MTOOLS_SKIP_CHECK: '1' };

async function readAll(vfs: Vfs, dir: number, name: string): Promise<string> {
  const e = await vfs.lookup(ctx, dir, name);
  const h = await vfs.open(ctx, e.nodeid, 0);
  const data = await vfs.read(ctx, e.nodeid, h.fh, 0, 1 << 20);
  await vfs.release(ctx, e.nodeid, h.fh);
  return data.toString();
}

async function writeNew(vfs: Vfs, name: string, text: string): Promise<void> {
  const c = await vfs.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR);
  assert.equal(await vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.from(text)), text.length);
  await vfs.fsync(ctx, c.entry.nodeid, c.fh, false);
  await vfs.release(ctx, c.entry.nodeid, c.fh);
}

void describe('sources on block devices', () => {
  let dir = '';
  const loops: string[] = [];
  let usable = true;

  before(async () => {
    dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-blockdev-'));
    await fsp.mkdir(path.join(dir, 'tree'));
    await fsp.writeFile(path.join(dir, 'tree', 'hello.txt'), 'hello from a block device\n');
    // A machine without loop devices (some containers) cannot run these: say so, do not pass.
    usable = await run('losetup', ['-f']).then(() => true, () => false);
  });
  after(async () => {
    for (const l of loops) await run('losetup', ['-d', l]).catch(() => {});
    await fsp.rm(dir, { recursive: true, force: true });
  });

  async function attach(img: string): Promise<string> {
    const { stdout } = await run('losetup', ['-f', '--show', img]);
    const dev = stdout.trim();
    loops.push(dev);
    return dev;
  }

  void it('ext4 on /dev/loopN: read, write, and e2fsck clean on the image afterwards', async (t) => {
    if (!usable) return t.skip('no loop device on this machine');
    const img = path.join(dir, 'ext4.img');
    await run('mkfs.ext4', ['-q', '-F', '-d', path.join(dir, 'tree'), img, '8M']);
    const dev = await attach(img);
    const vfs = await openSource(`ext4:${dev}`);
    assert.equal(vfs.info().type, 'ext4');
    assert.equal(await readAll(vfs, ROOT_ID, 'hello.txt'), 'hello from a block device\n');
    if (!vfs.info().readOnly) await writeNew(vfs, 'written.txt', 'through the device\n');
    await vfs.close();
    await run('losetup', ['-d', dev]);
    loops.splice(loops.indexOf(dev), 1);
    await run('e2fsck', ['-fn', img]);
    if (!vfs.info().readOnly) {
      const { stdout } = await run('debugfs', ['-R', 'cat /written.txt', img]);
      assert.equal(stdout, 'through the device\n');
    }
  });

  void it('FAT on /dev/loopN: read, write, and fsck.vfat clean on the image afterwards', async (t) => {
    if (!usable) return t.skip('no loop device on this machine');
    const img = path.join(dir, 'fat.img');
    await run('mkfs.vfat', ['-C', img, '8192']);
    await run('mcopy', ['-i', img, path.join(dir, 'tree', 'hello.txt'), '::/hello.txt'], { env });
    const dev = await attach(img);
    const vfs = await openSource(`fat:${dev}`);
    assert.equal(await readAll(vfs, ROOT_ID, 'hello.txt'), 'hello from a block device\n');
    await writeNew(vfs, 'Written Name.txt', 'through the device\n');
    await vfs.close();
    await run('losetup', ['-d', dev]);
    loops.splice(loops.indexOf(dev), 1);
    await run('fsck.vfat', ['-n', img]);
    const { stdout } = await run('mtype', ['-i', img, '::/Written Name.txt'], { env });
    assert.equal(stdout.replace(/\r/g, ''), 'through the device\n');
  });
});
