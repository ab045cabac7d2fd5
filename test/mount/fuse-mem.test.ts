// A MemoryFs mounted through the real kernel FUSE by a child process (the test process never
// serves its own mount), exercised with ordinary programs run asynchronously with timeouts.

import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fuseMinor, isMounted, quote, sh, startChild, teardownMount, tmpdir, type Started } from '../helpers/mount.js';

const CHILD = path.join(path.dirname(fileURLToPath(import.meta.url)), '../helpers/fuse-child.js');
const SOURCE = 'memtest:7';

/** Runs a command that must succeed; returns its stdout. */
async function ok(cmd: string, timeoutMs = 20_000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\n${r.stderr}`);
  return r.stdout;
}

void describe('FUSE mount of a MemoryFs', () => {
  let mnt = '';
  let server: Started | undefined;
  const q = (p: string): string => quote(path.join(mnt, p));

  before(async () => {
    mnt = await tmpdir('wirefs-fuse-');
    server = await startChild([process.execPath, CHILD, mnt, SOURCE, 'memtest'], { readyPattern: /^ready minor=\d+/m, timeoutMs: 20_000 });
  });
  after(async () => {
    await teardownMount(mnt, server?.child);
    assert.equal(await isMounted(mnt), false);
    assert.equal(await fsp.access(mnt).then(() => true, () => false), false, 'teardownMount removes the bare mount point');
  });

  void it('shows in mount as <source> on <mp> type fuse.<subtype>', async () => {
    const line = (await ok('timeout 10 mount')).split('\n').find((l) => l.includes(` on ${mnt} `));
    assert.match(line ?? '', new RegExp(`^${SOURCE} on ${mnt} type fuse\\.memtest \\(`));
    assert.match(line ?? '', /allow_other/);
    assert.equal(`ready minor=${await fuseMinor(mnt)}\n`, server!.stdout());
  });

  void it('lists and stats the root', async () => {
    assert.equal(await ok(`timeout 10 ls -A ${quote(mnt)}`), '');
    assert.equal((await ok(`timeout 10 stat -c '%F %a %u' ${quote(mnt)}`)).trim(), 'directory 755 0');
    // Node's fs.stat goes through FUSE_STATX first (answered ENOSYS) and falls back to GETATTR.
    assert.equal((await ok(`timeout 10 node -e "console.log(require('fs').statSync(process.argv[1]).isDirectory())" ${quote(mnt)}`)).trim(), 'true');
  });

  void it('makes directories and files, and lists them', async () => {
    await ok(`timeout 10 mkdir -p ${q('a/b/c')} && timeout 10 touch ${q('a/one')} ${q('a/two')}`);
    assert.equal(await ok(`timeout 10 ls ${q('a')}`), 'b\none\ntwo\n');
    assert.equal((await ok(`timeout 10 stat -c '%F' ${q('a/b/c')}`)).trim(), 'directory');
    // a directory too big for one READDIRPLUS reply
    await ok(`cd ${q('a/b')} && timeout 20 bash -c 'for i in $(seq 1 300); do : > file-with-a-longish-name-$i; done'`);
    assert.equal((await ok(`timeout 10 ls ${q('a/b')} | wc -l`)).trim(), '301');
    assert.equal((await ok(`timeout 10 find ${q('a/b')} -type f | wc -l`)).trim(), '300');
  });

  void it('writes and reads back an 8 MiB file', async (t) => {
    const dir = await tmpdir('wirefs-fuse-data-');
    t.after(() => fsp.rm(dir, { recursive: true, force: true }));
    const src = path.join(dir, 'big');
    await ok(`head -c 8388608 /dev/urandom > ${quote(src)}`);
    await ok(`timeout 30 cp ${quote(src)} ${q('big')}`, 40_000);
    assert.equal((await ok(`timeout 10 stat -c %s ${q('big')}`)).trim(), '8388608');
    // drop the page cache so the read really goes through READ
    await ok('sync; echo 1 > /proc/sys/vm/drop_caches || true');
    const [a, b] = (await ok(`timeout 30 sha256sum ${quote(src)} ${q('big')}`, 40_000)).split('\n').map((l) => l.split(' ')[0]);
    assert.equal(a, b);
    // and with direct I/O in big blocks
    const direct = await ok(`timeout 30 dd if=${q('big')} bs=1M iflag=direct status=none | sha256sum`, 40_000);
    assert.equal(direct.split(' ')[0], a);
  });

  void it('renames, unlinks, links', async () => {
    await ok(`echo hello > ${q('r1')} && timeout 10 mv ${q('r1')} ${q('a/r2')}`);
    assert.equal(await ok(`timeout 10 cat ${q('a/r2')}`), 'hello\n');
    assert.notEqual((await sh(`timeout 10 stat ${q('r1')}`)).code, 0);
    await ok(`timeout 10 ln ${q('a/r2')} ${q('hard')}`);
    assert.equal((await ok(`timeout 10 stat -c %h ${q('hard')}`)).trim(), '2');
    await ok(`timeout 10 rm ${q('a/r2')}`);
    assert.equal((await ok(`timeout 10 stat -c %h ${q('hard')}`)).trim(), '1');
    // RENAME2 with RENAME_NOREPLACE refuses an existing target
    await ok(`: > ${q('x1')} && : > ${q('x2')}`);
    const renameat2 = 'import ctypes,sys\nlibc=ctypes.CDLL(None,use_errno=True)\n' +
      'r=libc.renameat2(-100,sys.argv[1].encode(),-100,sys.argv[2].encode(),1)\nprint(r, ctypes.get_errno())';
    assert.equal((await ok(`timeout 10 python3 -c ${quote(renameat2)} ${q('x1')} ${q('x2')}`)).trim(), '-1 17');
    assert.equal(await ok(`timeout 10 ls ${q('')} | grep -c '^x[12]$'`), '2\n');
    await ok(`timeout 10 rmdir ${q('a/b/c')} && timeout 10 rm ${q('x1')} ${q('x2')}`);
  });

  void it('makes and reads symlinks', async () => {
    await ok(`timeout 10 ln -s target/../elsewhere ${q('link')}`);
    assert.equal(await ok(`timeout 10 readlink ${q('link')}`), 'target/../elsewhere\n');
    assert.equal((await ok(`timeout 10 stat -c %F ${q('link')}`)).trim(), 'symbolic link');
  });

  void it('truncates, chmods and sets times', async () => {
    await ok(`printf 0123456789 > ${q('t')} && timeout 10 truncate -s 4 ${q('t')}`);
    assert.equal(await ok(`timeout 10 cat ${q('t')}`), '0123');
    await ok(`timeout 10 truncate -s 100000 ${q('t')}`);
    assert.equal((await ok(`timeout 10 stat -c %s ${q('t')}`)).trim(), '100000');
    // O_TRUNC on open (ATOMIC_O_TRUNC)
    await ok(`echo x > ${q('t')}`);
    assert.equal(await ok(`timeout 10 cat ${q('t')}`), 'x\n');
    await ok(`echo y >> ${q('t')}`);
    assert.equal(await ok(`timeout 10 cat ${q('t')}`), 'x\ny\n');
    await ok(`timeout 10 chmod 640 ${q('t')}`);
    assert.equal((await ok(`timeout 10 stat -c %a ${q('t')}`)).trim(), '640');
    await ok(`timeout 10 touch -d '2001-02-03 04:05:06 UTC' ${q('t')}`);
    assert.equal((await ok(`timeout 10 stat -c %Y ${q('t')}`)).trim(), '981173106');
  });

  void it('sets, gets, lists and removes xattrs (size probes included)', async () => {
    await ok(`: > ${q('x')}`);
    const py = (code: string): Promise<string> => ok(`timeout 10 python3 -c ${quote(code)} ${q('x')}`);
    await py('import os,sys; os.setxattr(sys.argv[1], "user.k", b"v" * 300)');
    // getxattr/listxattr with a zero size (probe) and then the exact size: what getfattr does
    assert.equal((await py('import os,sys; print(len(os.getxattr(sys.argv[1], "user.k")))')).trim(), '300');
    assert.equal((await py('import os,sys; print(os.listxattr(sys.argv[1]))')).trim(), "['user.k']");
    if ((await sh('command -v getfattr')).code === 0) {
      assert.match(await ok(`timeout 10 getfattr -n user.k --only-values ${q('x')}`), /^v{300}$/);
    }
    // a buffer too small is ERANGE
    const erange = 'import ctypes,sys\nlibc=ctypes.CDLL(None,use_errno=True)\nb=ctypes.create_string_buffer(10)\n' +
      'r=libc.getxattr(sys.argv[1].encode(),b"user.k",b,10)\nprint(r, ctypes.get_errno())';
    assert.equal((await py(erange)).trim(), '-1 34');
    await py('import os,sys; os.removexattr(sys.argv[1], "user.k")');
    assert.equal((await py('import os,sys; print(os.listxattr(sys.argv[1]))')).trim(), '[]');
    const missing = await sh(`timeout 10 python3 -c ${quote('import os,sys; os.getxattr(sys.argv[1], "user.k")')} ${q('x')}`);
    assert.match(missing.stderr, /No data available/);
  });

  void it('reports statfs and keeps mknod and fallocate working', async () => {
    assert.match(await ok(`timeout 10 df -P ${quote(mnt)}`), new RegExp(`^${SOURCE} `, 'm'));
    await ok(`timeout 10 mkfifo ${q('fifo')}`);
    assert.equal((await ok(`timeout 10 stat -c %F ${q('fifo')}`)).trim(), 'fifo');
    await ok(`timeout 10 fallocate -l 65536 ${q('fa')}`);
    assert.equal((await ok(`timeout 10 stat -c %s ${q('fa')}`)).trim(), '65536');
  });

  void it('unmounts cleanly and the server exits', async () => {
    await ok(`timeout 10 umount ${quote(mnt)}`);
    assert.equal(await isMounted(mnt), false);
    const code = await new Promise<number | null>((resolve) => {
      const c = server!.child;
      if (c.exitCode !== null) resolve(c.exitCode);
      else c.once('exit', (n) => resolve(n));
    });
    assert.equal(code, 0, server!.stderr());
  });
});
