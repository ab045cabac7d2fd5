// Real programs on a real mount: a wirefs server on loopback exporting a local directory, a client
// mounted through the kernel, and tar, git, sqlite3, rsync and fio run on it as a user would.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sh, tmpdir } from '../helpers/mount.js';
import { serve, mount, FIXTURES } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 120000, cwd?: string): Promise<string> {
  const r = await sh(cmd, { timeoutMs, ...(cwd ? { cwd } : {}) });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

test('workloads on a served directory', { timeout: 600000 }, async (t) => {
  const exported = await tmpdir('wirefs-export-');
  const server = await serve(t, exported);
  const { mnt } = await mount(t, server.addr);

  const mounts = await ok('cat /proc/mounts');
  const line = mounts.split('\n').find((l) => l.split(' ')[1] === mnt);
  assert.ok(line, 'mount listed');
  assert.match(line!, new RegExp(`^${server.addr.replace(/\./g, '\\.')} ${mnt} fuse\\.[a-z0-9]+ `));

  await t.test('tar extract matches a local extraction', async () => {
    const work = await tmpdir('wirefs-tar-');
    await ok(`tar -C /usr/include -cf ${work}/src.tar linux asm-generic`);
    await ok(`mkdir ${work}/local && tar -C ${work}/local -xf ${work}/src.tar`);
    await ok(`mkdir ${mnt}/tar && tar -C ${mnt}/tar -xf ${work}/src.tar`);
    await ok(`diff -r ${work}/local ${mnt}/tar`);
    // and the server's disk holds the same bytes
    await ok(`diff -r ${work}/local ${exported}/tar`);
    await ok(`rm -rf ${mnt}/tar`);
    assert.equal((await ok(`ls -A ${exported}`)).includes('tar'), false);
  });

  await t.test('git init, commit, status, fsck', async () => {
    const g = `${mnt}/repo`;
    await ok(`mkdir ${g} && cd ${g} && git init -q && git config user.email t@e && git config user.name t`);
    await ok(`cp -r /usr/include/linux/netfilter ${g}/ && cd ${g} && git add -A && git commit -qm first`);
    await ok(`cd ${g} && echo change >> netfilter/x_tables.h && git commit -qam second`);
    const status = await ok(`cd ${g} && git status --porcelain`);
    assert.equal(status, '');
    await ok(`cd ${g} && git fsck --full --strict`);
    assert.equal((await ok(`cd ${g} && git log --oneline | wc -l`)).trim(), '2');
    await ok(`cd ${g} && git gc -q && git fsck --full`);
  });

  await t.test('sqlite3 database', async () => {
    const db = `${mnt}/test.db`;
    await ok(`sqlite3 ${db} "create table t(id integer primary key, v text); ` +
      `with recursive c(x) as (select 1 union all select x+1 from c where x < 20000) insert into t(v) select hex(randomblob(32)) from c;"`);
    assert.equal((await ok(`sqlite3 ${db} "select count(*) from t;"`)).trim(), '20000');
    await ok(`sqlite3 ${db} "update t set v = 'x' where id % 2 = 0; delete from t where id > 15000; vacuum;"`);
    assert.equal((await ok(`sqlite3 ${db} "pragma integrity_check;"`)).trim(), 'ok');
    assert.equal((await ok(`sqlite3 ${db} "select count(*) from t where v = 'x';"`)).trim(), '7500');
  });

  await t.test('rsync in and out with checksums', async () => {
    const work = await tmpdir('wirefs-rsync-');
    await ok(`rsync -a /usr/include/linux/ ${mnt}/rs/`);
    await ok(`rsync -a ${mnt}/rs/ ${work}/back/`);
    // a checksum pass must find nothing to transfer
    const diff = await ok(`rsync -a --checksum --dry-run --itemize-changes /usr/include/linux/ ${mnt}/rs/`);
    assert.equal(diff.trim(), '');
    await ok(`diff -r /usr/include/linux ${work}/back`);
  });

  await t.test('fio with crc32c verification', async () => {
    await ok(`fio --name=v --directory=${mnt} --rw=randwrite --bs=4k --size=16m --ioengine=psync ` +
      `--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --numjobs=2 --group_reporting --output-format=terse`, 300000);
    await ok(`fio --name=s --directory=${mnt} --rw=write --bs=1m --size=64m --ioengine=psync ` +
      `--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --output-format=terse`, 300000);
  });

  await t.test('POSIX probe through the mount', async () => {
    const local = await tmpdir('wirefs-posix-local-');
    // Checks made as another user need to reach the probe's directory (the export is a private temporary one).
    await ok(`mkdir ${mnt}/posix && chmod 755 ${mnt}`);
    const control = JSON.parse(await ok(`python3 ${FIXTURES}/posix_check.py ${local}`)) as Record<string, string>;
    const got = JSON.parse(await ok(`python3 ${FIXTURES}/posix_check.py ${mnt}/posix`, 180000)) as Record<string, string>;
    for (const [name, result] of Object.entries(control)) {
      assert.equal(result, 'ok', `control failed ${name}: ${result}`);
    }
    assert.deepEqual(got, control);
  });
});
