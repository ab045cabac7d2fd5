// `wirefs install-helper`: writes mount.wirefs, the helper mount(8) runs for `mount -t wirefs` and
// /etc/fstab lines (it calls `mount.wirefs SPEC DIR [-sfnv] [-o OPTIONS]`).

import fsp from 'node:fs/promises';
import path from 'node:path';
import { BIN } from './main.js';

export async function installHelperCommand(values: Record<string, unknown>): Promise<number> {
  const dir = String(values['prefix']);
  const target = path.join(dir, 'mount.wirefs');
  const script = [
    '#!/bin/sh',
    '# mount(8) helper for wirefs, written by `wirefs install-helper`.',
    '# mount -t wirefs HOST:PORT DIR  runs  mount.wirefs HOST:PORT DIR [-sfnv] [-o OPTIONS]',
    `exec "${process.execPath}" "${BIN}" mount "$@"`,
    '',
  ].join('\n');
  await fsp.mkdir(dir, { recursive: true });
  await fsp.writeFile(target, script, { mode: 0o755 });
  process.stdout.write(`wirefs: installed ${target}\n  mount -t wirefs onehost:12675 /mnt\n  fstab: onehost:12675  /mnt  wirefs  defaults,_netdev  0  0\n`);
  return 0;
}
