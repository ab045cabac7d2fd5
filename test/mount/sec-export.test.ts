// Export rules through real mounts, with the client's root as the caller: a read-only export
// refuses every kind of change with EROFS; by default root is squashed (it cannot chown, read
// another user's 0600 file, make device files or write where nobody may) while its changes that
// nobody may make come out owned by the anonymous ids; --map-uid and --all-squash change who it is.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sh, tmpdir } from '../helpers/mount.js';
import { serve, mount } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** The command must fail with this message (as strerror words). */
async function failsWith(cmd: string, re: RegExp): Promise<void> {
  const r = await sh(`timeout 10 ${cmd}`, { timeoutMs: 15000 });
  assert.notEqual(r.code, 0, `${cmd} succeeded`);
  assert.match(r.stderr, re, cmd);
}

/** A tree with a file of uid 1000 only it may read, a root-only directory and a sticky /tmp-like one. */
async function exportTree(): Promise<string> {
  const e = await tmpdir('wirefs-export-');
  await ok([
    `chmod 755 ${e}`,
    `printf 'alice only' > ${e}/private && chown 1000:1000 ${e}/private && chmod 600 ${e}/private`,
    `echo public > ${e}/public && chmod 644 ${e}/public`,
    `mkdir ${e}/rootonly && chmod 755 ${e}/rootonly && mkdir ${e}/tmp && chmod 1777 ${e}/tmp`,
    `mkdir ${e}/dir && ln -s public ${e}/link && setfattr -n user.tag -v 1 ${e}/public`,
  ].join(' && '));
  return e;
}

async function listing(dir: string): Promise<string> {
  return ok(`cd ${dir} && find . -printf '%p %m %U:%G %s %T@\\n' | sort && getfattr -d public 2>/dev/null`);
}

test('a read-only export refuses every kind of change with EROFS', async (t) => {
  const e = await exportTree();
  const before = await listing(e);
  const server = await serve(t, e, ['--read-only']);
  const m = (await mount(t, server.addr)).mnt;
  assert.match(await ok(`grep " ${m} " /proc/mounts`), /\bro\b/);
  const changes = [
    `touch ${m}/new`,
    `sh -c 'echo x > ${m}/public'`,
    `sh -c 'echo x >> ${m}/public'`,
    `truncate -s 0 ${m}/public`,
    `chmod 777 ${m}/public`,
    `chown 1:1 ${m}/public`,
    `touch -d 2001-01-01 ${m}/public`,
    `mv ${m}/public ${m}/moved`,
    `rm ${m}/public`,
    `rmdir ${m}/dir`,
    `mkdir ${m}/newdir`,
    `ln -s target ${m}/newlink`,
    `ln ${m}/public ${m}/hard`,
    `mknod ${m}/fifo p`,
    `setfattr -n user.x -v 1 ${m}/public`,
    `setfattr -x user.tag ${m}/public`,
    `fallocate -l 1M ${m}/public`,
  ];
  for (const c of changes) await failsWith(c, /Read-only file system/);
  // Reading still works, and nothing changed on the server.
  assert.equal(await ok(`timeout 10 cat ${m}/public`), 'public\n');
  assert.equal(await listing(e), before);
});

test('root squash by default: no chown, no reading others\' 0600 files, no devices', async (t) => {
  const e = await exportTree();
  const server = await serve(t, e, [], { rootSquash: true });
  const m = (await mount(t, server.addr)).mnt;
  await failsWith(`cat ${m}/private`, /Permission denied/);
  await failsWith(`chown 0 ${m}/private`, /Operation not permitted/);
  await failsWith(`chmod 644 ${m}/private`, /Operation not permitted/);
  await failsWith(`chown 0 ${m}/public`, /Operation not permitted/);
  await failsWith(`truncate -s 0 ${m}/public`, /Permission denied/);
  await failsWith(`touch ${m}/rootonly/x`, /Permission denied/);
  await failsWith(`mknod ${m}/tmp/null c 1 3`, /Operation not permitted/);
  await failsWith(`rm ${m}/public`, /Permission denied/);
  await failsWith(`setfattr -n trusted.x -v 1 ${m}/public`, /Operation not permitted/);
  // What anyone may do, a squashed root may, as nobody.
  await ok(`timeout 10 sh -c 'echo mine > ${m}/tmp/made && mkdir ${m}/tmp/sub'`);
  assert.equal(await ok(`stat -c %u:%g ${e}/tmp/made ${e}/tmp/sub`), '65534:65534\n65534:65534\n');
  assert.equal(await ok(`cat ${e}/private`), 'alice only');
  assert.equal(await ok(`stat -c '%u %a' ${e}/private ${e}/public`), '1000 600\n0 644\n');
  assert.equal(await ok(`ls -A ${e}/rootonly`), '');
  assert.equal(await ok(`ls -A ${e}/tmp`), 'made\nsub\n');
  assert.equal(await ok(`find ${e} -type c | wc -l`), '0\n');
});

test('--map-uid and --all-squash decide who the client\'s root is', async (t) => {
  const e = await exportTree();
  const mapped = await serve(t, e, ['--map-uid', '0:1000', '--map-gid', '0:1000'], { rootSquash: true });
  const m = (await mount(t, mapped.addr)).mnt;
  assert.equal(await ok(`timeout 10 cat ${m}/private`), 'alice only');
  await ok(`timeout 10 sh -c 'echo by-alice > ${m}/tmp/alice-file'`);
  assert.equal(await ok(`stat -c %u:%g ${e}/tmp/alice-file`), '1000:1000\n');
  await failsWith(`cat ${m}/rootonly/../public >/dev/null && touch ${m}/rootonly/x`, /Permission denied/);

  const squashed = await serve(t, e, ['--all-squash', '--anon-uid', '4242', '--anon-gid', '4343']);
  const s = (await mount(t, squashed.addr)).mnt;
  await failsWith(`cat ${s}/private`, /Permission denied/);
  await ok(`timeout 10 sh -c 'echo anon > ${s}/tmp/anon-file'`);
  assert.equal(await ok(`stat -c %u:%g ${e}/tmp/anon-file`), '4242:4343\n');
});
