// The server guard's ACL check against the kernel's own: for each ACL, setfacl puts it on a real
// file, getfattr reads back the xattr bytes the guard will see, and the kernel's answer for each
// identity and access (test -r/-w/-x under setpriv) must be the guard's answer.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { aclPermits, parseAcl } from '../../src/server/acl.js';
import { tmpdir } from '../helpers/mount.js';

const OWNER = { uid: 1000, gid: 1000 };
const WHO = [
  { uid: 1000, gid: 1000 }, // the owner
  { uid: 1001, gid: 1000 }, // the owning group
  { uid: 1002, gid: 2000 }, // a named group
  { uid: 1003, gid: 3000 }, // a named user
  { uid: 1004, gid: 4000 }, // anyone else
];
const SPECS = [
  'u::rw-,g::r--,o::---',
  'u::rw-,u:1003:rw-,g::r--,m::rw-,o::---',
  'u::rw-,u:1003:rw-,g::r--,m::r--,o::---',
  'u::rwx,u:1003:---,g::rwx,m::rwx,o::rwx',
  'u::r--,g::---,g:2000:rwx,m::r-x,o::r--',
  'u::---,u:1000:rwx,g::r-x,g:2000:-w-,m::rwx,o::--x',
  'u::rwx,g::--x,g:2000:--x,u:1004:r--,m::--x,o::rwx',
];

test('the guard grants exactly what the kernel grants, ACL by ACL', async () => {
  const dir = await tmpdir('wirefs-acl-unit-');
  await fsp.chmod(dir, 0o755);
  const file = path.join(dir, 'f');
  await fsp.writeFile(file, '');
  await fsp.chown(file, OWNER.uid, OWNER.gid);
  try {
    for (const spec of SPECS) {
      execFileSync('setfacl', ['--set', spec, file]);
      const hex = /=0x([0-9a-f]+)/.exec(spawnSync('getfattr', ['-e', 'hex', '-n', 'system.posix_acl_access', file], { encoding: 'utf8' }).stdout);
      // A minimal ACL (three entries) is stored as mode bits alone: the guard then reads none.
      if (!hex) {
        assert.equal(spec.split(',').length, 3, `${spec}: no xattr`);
        continue;
      }
      const value = Buffer.from(hex[1]!, 'hex');
      assert.equal(parseAcl(value)?.length, spec.split(',').length, spec);
      for (const who of WHO) {
        for (const [flag, mask] of [['-r', 4], ['-w', 2], ['-x', 1], ['-r', 6]] as const) {
          const kernel = spawnSync('setpriv', ['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', 'test', flag, file])
            .status === 0 && (mask !== 6 || spawnSync('setpriv', ['--reuid', String(who.uid), '--regid', String(who.gid), '--clear-groups', 'test', '-w', file]).status === 0);
          assert.equal(aclPermits(value, OWNER, who, mask), kernel, `${spec}: uid ${who.uid} gid ${who.gid} mask ${mask}`);
        }
      }
    }
  } finally {
    await fsp.rm(dir, { recursive: true, force: true });
  }
});

test('what is not an access ACL leaves the decision to the mode bits', () => {
  assert.equal(aclPermits(Buffer.alloc(0), OWNER, WHO[1]!, 4), undefined);
  assert.equal(aclPermits(Buffer.from([1, 0, 0, 0]), OWNER, WHO[1]!, 4), undefined, 'version 1');
  assert.equal(aclPermits(Buffer.from([2, 0, 0, 0, 1, 0]), OWNER, WHO[1]!, 4), undefined, 'a torn entry');
});
