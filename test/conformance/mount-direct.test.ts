// The POSIX probe (test/fixtures/posix_check.py) through a real kernel mount of each source, mounted
// directly (no network), compared with the same probe on a local directory: the kernel's own file
// system is the reference, so every check must come out exactly as it does there.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { sh, tmpdir } from '../helpers/mount.js';
import { mount, FIXTURES } from '../helpers/wirefs.js';

async function probe(dir: string): Promise<Record<string, string>> {
  const r = await sh(`python3 ${FIXTURES}/posix_check.py ${dir}`, { timeoutMs: 180000 });
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, string>;
}

let control: Record<string, string> | undefined;
async function reference(): Promise<Record<string, string>> {
  control ??= await probe(await tmpdir('wirefs-control-'));
  for (const [name, result] of Object.entries(control)) assert.equal(result, 'ok', `control ${name}: ${result}`);
  return control;
}

for (const source of ['mem:', 'passthrough']) {
  test(`POSIX probe on ${source} mounted directly`, { timeout: 300000 }, async (t) => {
    const spec = source === 'passthrough' ? await tmpdir('wirefs-pt-') : source;
    const { mnt } = await mount(t, spec, { direct: true });
    assert.deepEqual(await probe(mnt), await reference());
  });
}
