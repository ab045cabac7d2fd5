// POSIX ACLs and security labels through real mounts. The client's kernel enforces ACLs and caches
// them per inode (FUSE_POSIX_ACL); the server's guard honours them too; a change on one client or
// on the server host drops the others' cached copies. Security labels are not exported, so a warm
// `ls -l` (a stat, an ACL read and a label read per file) asks the mount daemon nothing at all.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sh, tmpdir } from '../helpers/mount.js';
import { BIN, serve, mount } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

const USER = 'setpriv --reuid 1234 --regid 1234 --clear-groups';

/** What uid 1234 gets from cat: the bytes, or the error cat printed. */
async function catAs1234(file: string): Promise<string> {
  const r = await sh(`timeout 10 ${USER} cat ${file}`);
  return r.code === 0 ? r.stdout : /Permission denied/.test(r.stderr) ? 'EACCES' : `exit ${r.code}: ${r.stderr}`;
}

/** Polls until uid 1234's cat gives want, for at most ms. */
async function eventually(ms: number, file: string, want: string, what: string): Promise<void> {
  const t0 = Date.now();
  let got = '';
  while (Date.now() - t0 < ms) {
    got = await catAs1234(file);
    if (got === want) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: still ${JSON.stringify(got)} after ${ms} ms`);
}

/** FUSE requests the mount daemon of mnt has read so far, from `wirefs status`. */
async function fuseRequests(mnt: string): Promise<number> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const m = /fuse\.requests=(\d+)/.exec(lines.slice(head + 1).find((l) => l.includes('fuse.requests=')) ?? '');
  assert.ok(m, 'no fuse.requests in wirefs status');
  return Number(m[1]);
}

test('ACLs are enforced on the mount and a change anywhere reaches every client at once', async (t) => {
  const exported = await tmpdir('wirefs-acl-');
  await ok(`chmod 755 ${exported}`);
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  const b = await mount(t, server.addr);
  await ok(`printf secret > ${a.mnt}/f && chmod 640 ${a.mnt}/f`);

  // The mode bits keep uid 1234 out; B's kernel now holds the file's (empty) ACL.
  assert.equal(await catAs1234(`${b.mnt}/f`), 'EACCES');
  // A named-user entry lets it in, with no wait on B: A's change dropped B's cached ACL.
  await ok(`setfacl -m u:1234:r ${a.mnt}/f`);
  assert.equal(await catAs1234(`${b.mnt}/f`), 'secret', 'granted by the ACL A just set');
  assert.match(await ok(`ls -l ${b.mnt}/f`), /^-rw-r-----\+ /, 'ls shows the ACL');
  assert.match(await ok(`getfacl -p ${b.mnt}/f`), /^user:1234:r--$/m);
  assert.match(await ok(`getfacl -p ${exported}/f`), /^user:1234:r--$/m, 'the ACL is on the host file');

  // An entry that takes the right away wins over "other" bits that would give it.
  await ok(`setfacl -m u:1234:- ${a.mnt}/f && chmod o+r ${a.mnt}/f`);
  assert.equal(await catAs1234(`${b.mnt}/f`), 'EACCES', 'denied by the ACL although other may read');

  // A process on the server host removes the ACL: through inotify, within a second.
  await ok(`setfacl -b ${exported}/f`);
  await eventually(2000, `${b.mnt}/f`, 'secret', 'ACL removed on the host');
  assert.doesNotMatch(await ok(`getfacl -p ${b.mnt}/f`), /user:1234/);

  // Default ACLs of a directory are inherited by what a client creates in it.
  await ok(`mkdir ${a.mnt}/d && setfacl -d -m u:1234:rx ${a.mnt}/d && setfacl -m u:1234:rx ${a.mnt}/d && chmod 750 ${a.mnt}/d`);
  await ok(`printf inherited > ${a.mnt}/d/g && chmod o-r ${a.mnt}/d/g`);
  assert.match(await ok(`getfacl -p ${exported}/d/g`), /^user:1234:r-x\s/m, 'inherited on the host');
  assert.equal(await catAs1234(`${b.mnt}/d/g`), 'inherited');
});

test('security labels are not exported, and a warm ls -l asks the daemon nothing', async (t) => {
  const exported = await tmpdir('wirefs-label-');
  await ok(`cd ${exported} && for i in $(seq 300); do echo $i > f$i; done && setfattr -n user.kept -v 1 f1`);
  const server = await serve(t, exported);
  const m = await mount(t, server.addr);

  const label = await sh(`timeout 10 getfattr -n security.selinux ${m.mnt}/f1`);
  assert.match(label.stderr, /Operation not supported/);
  assert.match(await ok(`timeout 10 getfattr -d ${m.mnt}/f1`), /user\.kept="1"/, 'other xattrs are there');
  const set = await sh(`timeout 10 setfattr -n security.test -v x ${m.mnt}/f1`);
  assert.match(set.stderr, /Operation not supported/);

  await ok(`timeout 30 ls -l ${m.mnt} > /dev/null`);
  const before = await fuseRequests(m.mnt);
  const out = await ok(`timeout 30 ls -l ${m.mnt}`);
  const asked = (await fuseRequests(m.mnt)) - before;
  assert.equal(out.split('\n').filter((l) => / f\d+$/.test(l)).length, 300);
  // Without ACL caching and labels it would be two getxattr per file (600).
  assert.ok(asked < 10, `a warm ls -l of 300 files made ${asked} FUSE requests`);
});
