// `wirefs demo` (npm start): the main job on an embedded default. Serves a built-in demo tree from
// an in-memory source on loopback, mounts it through a mount daemon, prints the mount line and what
// to try, and unmounts cleanly on Ctrl-C.

import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { MemoryFs } from '../sources/memory.js';
import { startServer } from '../server/server.js';
import { ROOT_ID, S_IFREG, O_WRONLY, type Ctx, type Vfs } from '../vfs/types.js';
import { BIN } from './main.js';
import { mountedPaths } from './mount.js';
import { CliError } from './errors.js';

const DEMO_TREE: Record<string, string> = {
  'README.txt': 'Hello from wirefs!\nThis tree lives in an in-memory file system inside the server process,\nand reaches you over TCP and the kernel\'s FUSE.\n',
  'docs/protocol.txt': 'wirefs speaks a versioned, machine-independent protocol: see docs/PROTOCOL.md.\n',
  'docs/notes/todo.txt': '- mount it from another host: wirefs mount HOST:12675 /mnt\n',
  'src/hello.c': '#include <stdio.h>\nint main(void) { puts("hello, wirefs"); return 0; }\n',
  'data/numbers.csv': Array.from({ length: 1000 }, (_, i) => `${i},${i * i}`).join('\n') + '\n',
};

async function populate(vfs: Vfs): Promise<void> {
  const ctx: Ctx = { uid: 0, gid: 0, pid: process.pid };
  const dirs = new Map<string, number>([['', ROOT_ID]]);
  const dirOf = async (rel: string): Promise<number> => {
    const known = dirs.get(rel);
    if (known !== undefined) return known;
    const parent = await dirOf(path.posix.dirname(rel) === '.' ? '' : path.posix.dirname(rel));
    const e = await vfs.mkdir(ctx, parent, path.posix.basename(rel), 0o755);
    dirs.set(rel, e.nodeid);
    return e.nodeid;
  };
  for (const [rel, text] of Object.entries(DEMO_TREE)) {
    const dir = await dirOf(path.posix.dirname(rel) === '.' ? '' : path.posix.dirname(rel));
    const c = await vfs.create(ctx, dir, path.posix.basename(rel), S_IFREG | 0o644, O_WRONLY);
    await vfs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.from(text));
    await vfs.release(ctx, c.entry.nodeid, c.fh);
  }
  await vfs.symlink(ctx, ROOT_ID, 'readme-link', 'README.txt');
}

export async function demoCommand(_values: Record<string, unknown>, positionals: string[]): Promise<number> {
  const mp = path.resolve(positionals[0] ?? 'mnt');
  await fsp.mkdir(mp, { recursive: true });
  if ((await mountedPaths()).has(mp)) throw new CliError(`${mp} is already mounted; run: wirefs umount ${mp}`);

  const vfs = new MemoryFs();
  await populate(vfs);
  const server = await startServer({ vfs, host: '127.0.0.1', port: 0 });
  const { host, port } = server.address();
  process.stdout.write(`wirefs demo: serving an in-memory demo tree on ${host}:${port}\n`);

  const child = spawn(process.execPath, [BIN, 'mount', '-f', '--ready-fd', '3', `${host}:${port}`, mp], {
    stdio: ['ignore', 'inherit', 'inherit', 'pipe'],
  });
  const verdict = await new Promise<string>((resolve) => {
    let text = '';
    (child.stdio[3] as NodeJS.ReadableStream).setEncoding('utf8').on('data', (d: string) => {
      text += d;
      if (text.includes('\n')) resolve(text.trim());
    });
    child.on('exit', () => resolve(text.trim() || 'error: the mount daemon exited'));
  });
  if (verdict !== 'ok') {
    await server.close();
    throw new CliError(verdict.replace(/^error: /, ''));
  }
  const m = (await mountedPaths()).get(mp);
  const cli = path.relative(process.cwd(), BIN) || BIN;
  process.stdout.write([
    '',
    `mount: ${m?.source} on ${mp} type ${m?.fstype}`,
    '',
    'Try, in another terminal:',
    `  ls -la ${mp}            cat ${mp}/README.txt`,
    `  cp -r /etc/apt ${mp}/    find ${mp} | head`,
    `  ${cli} status     mount | grep ${mp}`,
    `Or mount it a second time and watch changes cross over:`,
    `  mkdir -p /tmp/second && ${cli} mount ${host}:${port} /tmp/second`,
    '',
    'Press Ctrl-C to unmount and stop.',
    '',
  ].join('\n'));

  await new Promise<void>((resolve) => {
    process.once('SIGINT', resolve);
    process.once('SIGTERM', resolve);
    child.once('exit', resolve);
  });
  process.stdout.write('\nwirefs demo: unmounting\n');
  if (child.exitCode === null) {
    // The daemon unmounts on SIGTERM and exits once the kernel ends the session.
    child.kill('SIGTERM');
    await new Promise((resolve) => {
      const t = setTimeout(() => { child.kill('SIGKILL'); resolve(null); }, 5000);
      child.once('exit', () => { clearTimeout(t); resolve(null); });
    });
  }
  if ((await mountedPaths()).has(mp)) {
    await new Promise((resolve) => spawn('umount', ['-l', mp]).on('close', resolve).on('error', resolve));
  }
  await server.close();
  await vfs.close();
  process.stdout.write('wirefs demo: done\n');
  return 0;
}
