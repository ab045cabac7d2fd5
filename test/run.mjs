// npm test: the gating tiers in order. Unit and net tests run in parallel; mount and conformance
// tests touch the kernel's FUSE and run one file at a time.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';

const tiers = [
  { dir: 'dist/test/unit', concurrency: 2 },
  { dir: 'dist/test/net', concurrency: 2 },
  { dir: 'dist/test/conformance', concurrency: 1 },
  { dir: 'dist/test/mount', concurrency: 1 },
];
const only = process.argv.slice(2);
let failed = false;
for (const { dir, concurrency } of tiers) {
  if (only.length && !only.some((o) => dir.endsWith(o))) continue;
  if (!existsSync(dir)) continue;
  const files = readdirSync(dir).filter((f) => f.endsWith('.test.js')).sort().map((f) => `${dir}/${f}`);
  if (!files.length) continue;
  console.log(`# tier ${dir} (${files.length} files)`);
  const r = spawnSync(process.execPath, ['--test', `--test-concurrency=${concurrency}`, '--test-timeout=600000', ...files], { stdio: 'inherit' });
  if (r.status !== 0) failed = true;
}
process.exit(failed ? 1 : 0);
