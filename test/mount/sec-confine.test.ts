// Confinement through a real mount: symlinks in the export pointing outside (absolute and
// relative) and the swap race: a local process on the server flips a directory and a symlink to
// the outside thousands of times while the client keeps writing into and reading from that
// directory. No byte may be written outside, nothing outside may be read.
//
// The outside directory sits next to the export, and the symlinks point at it relatively, with a
// name unique to the run: on the server side "../outside-R" from the export reaches it; on the
// client side the same target, resolved by the client's kernel next to the mount point, names a
// path that does not exist. So whatever the client sees of the outside can only have come from the
// server resolving the link. (Absolute links would resolve on the client to the very same files,
// this being one machine, and prove nothing; they are still checked for writes landing outside.)

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { sh, tmpdir } from '../helpers/mount.js';
import { serve, mount } from '../helpers/wirefs.js';

/** Client rounds (a write, a read and a listing each); the flipper flips until they are done. */
const ROUNDS = 1500;
/** The least number of flips that counts as having raced. */
const MIN_FLIPS = 1000;

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

interface Setup {
  exp: string;
  out: string;
  outName: string;
  marker: string;
  snapshot(): Promise<string>;
}

async function setup(): Promise<Setup> {
  const top = await tmpdir('wirefs-escape-');
  const tag = randomBytes(6).toString('hex');
  const outName = `outside-${tag}`;
  const exp = path.join(top, 'export');
  const out = path.join(top, outName);
  const marker = `OUTSIDE-SECRET-${randomBytes(12).toString('hex')}`;
  await ok([
    `mkdir -p ${exp}/d ${out}`,
    `printf '${marker}' > ${out}/secret && printf '${marker}' > ${out}/only-outside`,
    `printf benign > ${exp}/d/secret`,
    `ln -s ../${outName} ${exp}/rel && ln -s ${out} ${exp}/abs`,
  ].join(' && '));
  return {
    exp, out, outName, marker,
    snapshot: () => ok(`cd ${out} && find . -printf '%p %m %U:%G %s %T@\\n' | sort && cat secret only-outside`),
  };
}

test('symlinks to the outside: nothing is created or changed outside through them', async (t) => {
  const s = await setup();
  const before = await s.snapshot();
  const server = await serve(t, s.exp);
  const m = (await mount(t, server.addr)).mnt;
  assert.equal(await ok(`timeout 10 readlink ${m}/rel`), `../${s.outName}\n`);
  // The relative link resolves on the client, next to the mount point: nothing is there.
  await assert.rejects(fsp.access(path.join(path.dirname(m), s.outName)));
  const r = await sh(`timeout 10 cat ${m}/rel/secret`, { timeoutMs: 15000 });
  assert.notEqual(r.code, 0);
  assert.ok(!r.stdout.includes(s.marker));
  for (const c of [`touch ${m}/rel/pwned`, `mkdir ${m}/rel/pwned`, `sh -c 'echo x > ${m}/rel/secret'`]) {
    const w = await sh(`timeout 10 ${c}`, { timeoutMs: 15000 });
    assert.notEqual(w.code, 0, c);
  }
  // ".." chains from the client stay in the client's own tree; the server sees none of them.
  const up = await sh(`timeout 10 cat ${m}/d/../../${s.outName}/secret`, { timeoutMs: 15000 });
  assert.ok(!up.stdout.includes(s.marker));
  // Replacing a symlink by a file through the mount changes the export, not its target.
  await ok(`timeout 10 sh -c 'rm ${m}/abs && echo inside > ${m}/abs'`);
  assert.equal(await ok(`cat ${s.exp}/abs`), 'inside\n');
  assert.equal(await s.snapshot(), before);
});

test('the swap race: thousands of directory/symlink flips while the client writes and reads', async (t) => {
  const s = await setup();
  const before = await s.snapshot();
  const server = await serve(t, s.exp);
  // No kernel caching of names or attributes: every access asks the server, which resolves the
  // path afresh while it is being flipped.
  const m = (await mount(t, server.addr, { options: 'entry_timeout=0,attr_timeout=0' })).mnt;
  const done = path.join(path.dirname(s.exp), 'flipper-done');
  const flipper = `
import os, sys, time
exp, target, done = sys.argv[1], sys.argv[2], sys.argv[3]
d, real, flips = os.path.join(exp, 'd'), os.path.join(exp, 'd.real'), 0
while not os.path.exists(done) and flips < 10000000:
    os.rename(d, real)
    os.symlink(target, d)
    os.unlink(d)
    os.rename(real, d)
    flips += 1
    # A breath with the real directory in place, so that some client accesses succeed too.
    time.sleep(0.0002)
print(flips)
`;
  const client = `
import os, sys
mnt, marker, done, rounds = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
d = os.path.join(mnt, 'd')
i = wrote = read = leaked = failed = 0
while i < rounds:
    i += 1
    try:
        with open(os.path.join(d, 'w%d' % (i % 64)), 'w') as f:
            f.write('client %d' % i)
        wrote += 1
    except OSError:
        failed += 1
    try:
        with open(os.path.join(d, 'secret')) as f:
            data = f.read()
        read += 1
        if marker in data or data != 'benign':
            leaked += 1
    except OSError:
        failed += 1
    try:
        if 'only-outside' in os.listdir(d):
            leaked += 1
    except OSError:
        failed += 1
open(done, 'w').close()
print(i, wrote, read, leaked, failed)
`;
  const [flips, seen] = await Promise.all([
    ok(`timeout 150 python3 -c ${shq(flipper)} ${s.exp} ../${s.outName} ${done}`, 160000),
    // The client's failure must not leave the flipper running: it stops on the done file either way.
    sh(`timeout 140 python3 -c ${shq(client)} ${m} ${s.marker} ${done} ${ROUNDS}; touch ${done}`, { timeoutMs: 150000 }).then((r) => r.stdout),
  ]);
  assert.ok(Number(flips) >= MIN_FLIPS, `only ${flips} flips`);
  const [rounds, wrote, read, leaked] = seen.trim().split(' ').map(Number) as [number, number, number, number, number];
  t.diagnostic(`${flips.trim()} flips; client: ${rounds} rounds, ${wrote} writes and ${read} reads succeeded`);
  assert.equal(rounds, ROUNDS, `client: ${seen}`);
  assert.equal(leaked, 0, 'the client read something from outside the export');
  // The race was run, not dodged: many accesses went through while the flips went on.
  assert.ok(wrote > 0 && read > 0, `client: ${seen}`);
  assert.equal(await s.snapshot(), before, 'something outside the export changed');
  assert.deepEqual((await fsp.readdir(s.out)).sort(), ['only-outside', 'secret']);
  // The writes that went through landed in the real directory.
  assert.ok((await fsp.readdir(path.join(s.exp, 'd'))).some((n) => /^w\d+$/.test(n)));
});

function shq(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
