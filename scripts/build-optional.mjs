// npm's "install" step: builds the core addon (binding.gyp: required, a failure fails npm install,
// as when npm ran node-gyp implicitly) and then the optional libext2fs binding
// (native/ext2fs/binding.gyp: ext2/3/4 read-write), whose failure is one warning line, since
// without libext2fs-dev the read-only ext driver still serves ext images.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** node-gyp as npm runs it: npm sets npm_config_node_gyp in lifecycle scripts; else npm's own copy. */
function nodeGyp() {
  const fromNpm = process.env.npm_config_node_gyp;
  if (fromNpm && existsSync(fromNpm)) return [process.execPath, fromNpm];
  const prefix = spawnSync('npm', ['prefix', '-g'], { encoding: 'utf8' }).stdout?.trim();
  const bundled = prefix ? path.join(prefix, 'lib/node_modules/npm/node_modules/node-gyp/bin/node-gyp.js') : '';
  if (bundled && existsSync(bundled)) return [process.execPath, bundled];
  return ['node-gyp'];
}

function rebuild(dir, quiet) {
  const [cmd, ...pre] = nodeGyp();
  return spawnSync(cmd, [...pre, 'rebuild', `--directory=${dir}`], { stdio: quiet ? 'pipe' : 'inherit', encoding: 'utf8' });
}

const core = rebuild(root, false);
if (core.status !== 0) process.exit(core.status ?? 1);

const header = '/usr/include/ext2fs/ext2fs.h';
if (!existsSync(header)) {
  console.warn('wirefs: ext2/3/4 read-write not built (no libext2fs headers): apt-get install libext2fs-dev && npm rebuild');
} else {
  const r = rebuild(path.join(root, 'native/ext2fs'), true);
  if (r.status !== 0) {
    const why = `${r.stderr ?? ''}${r.stdout ?? ''}`.split('\n').find((l) => /error/i.test(l)) ?? `exit ${r.status}`;
    console.warn(`wirefs: ext2/3/4 read-write not built (${why.trim()}): apt-get install libext2fs-dev && npm rebuild`);
  }
}
