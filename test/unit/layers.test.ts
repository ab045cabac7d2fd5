// Keeps the dependency direction of ARCHITECTURE.md true: each folder under src/ may import only
// the folders listed for it. Reads the import lines of the TypeScript sources.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { ROOT } from '../helpers/wirefs.js';

const allowed: Record<string, string[]> = {
  lib: [],
  vfs: ['lib'],
  sources: ['lib', 'vfs'],
  wire: ['lib', 'vfs'],
  server: ['lib', 'vfs', 'wire'],
  client: ['lib', 'vfs', 'wire'],
  fuse: ['lib', 'vfs'],
  peer: ['lib', 'vfs', 'wire', 'client', 'server', 'sources'],
  cli: ['lib', 'vfs', 'sources', 'wire', 'server', 'client', 'fuse', 'peer'],
};

function files(dir: string): string[] {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? files(path.join(dir, e.name)) : e.name.endsWith('.ts') ? [path.join(dir, e.name)] : []);
}

test('src/ folders import only what ARCHITECTURE.md allows', () => {
  const src = path.join(ROOT, 'src');
  const bad: string[] = [];
  for (const file of files(src)) {
    const layer = path.relative(src, file).split(path.sep)[0]!;
    const ok = allowed[layer];
    assert.ok(ok, `unknown folder src/${layer}`);
    for (const m of fs.readFileSync(file, 'utf8').matchAll(/^\s*(?:import|export)\b[^'"]*from\s+['"](\.[^'"]+)['"]/gm)) {
      const target = path.relative(src, path.resolve(path.dirname(file), m[1]!)).split(path.sep)[0]!;
      if (target !== layer && !ok.includes(target)) bad.push(`${path.relative(ROOT, file)} imports ${m[1]}`);
    }
  }
  assert.deepEqual(bad, []);
});
