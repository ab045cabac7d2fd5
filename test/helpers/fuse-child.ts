// A serving process for the FUSE mount tests: mounts a MemoryFs directly (no network) and serves it
// until unmounted or sent SIGTERM. Run as: node fuse-child.js MOUNTPOINT SOURCE [SUBTYPE].
// Prints "ready minor=N" once the mount is usable; exits 0 when the session ends.

import { mountVfs } from '../../src/fuse/mount.js';
import { MemoryFs } from '../../src/sources/memory.js';

const [mp, source, subtype] = process.argv.slice(2);
if (!mp || !source) {
  process.stderr.write('usage: fuse-child MOUNTPOINT SOURCE [SUBTYPE]\n');
  process.exit(2);
}
const vfs = new MemoryFs();
try {
  const m = await mountVfs(vfs, mp, { source, ...(subtype ? { subtype } : {}) });
  const stop = (): void => {
    m.unmount().catch(() => m.abort()).catch((err: unknown) => process.stderr.write(`${String(err)}\n`));
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  process.stdout.write(`ready minor=${m.minor}\n`);
  await m.closed;
  await vfs.close();
} catch (err) {
  process.stderr.write(`fuse-child: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
