// The harness every test that touches a real FUSE mount uses: async shell commands with timeouts,
// serving children that are waited for, and a teardown that frees a mount whatever state it is in
// (umount, then umount -l, then abort the connection through fusectl, then SIGKILL the server).
// Nothing here blocks the event loop: the test process may share a kernel queue with a mount.

import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, rmSync } from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { abortConnection, fuseMinor as minorOf, readMountinfo } from '../../src/fuse/mount.js';

export interface ShResult {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Runs `bash -c cmd` asynchronously. Rejects (after killing the command's process group) if it
 * runs longer than timeoutMs (default 30 s); otherwise resolves with its exit code and output.
 */
export function sh(cmd: string, opts: { timeoutMs?: number; cwd?: string; input?: string } = {}): Promise<ShResult> {
  const timeoutMs = opts.timeoutMs ?? 30_000;
  return new Promise((resolve, reject) => {
    // Its own process group, so a timeout kills the whole pipeline and not only bash. --norc: with
    // its input a socket (Node's pipes are socketpairs) and SHLVL unset or 0, bash takes itself for
    // a shell started by sshd and runs ~/.bashrc first (measured: 0.45-0.75 s per command with a
    // pyenv set-up there, added to every timed benchmark command).
    const child = spawn('bash', ['--norc', '--noprofile', '-c', cmd], { cwd: opts.cwd, detached: true, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.stdin.on('error', () => {}); // the command may not read its input
    child.stdin.end(opts.input ?? '');
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      killGroup(child, 'SIGKILL');
    }, timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`sh: cannot run bash: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (timedOut) reject(new Error(`sh: timed out after ${timeoutMs} ms: ${cmd}\n${stderr}`));
      else resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
  });
}

function killGroup(child: ChildProcess, sig: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, sig);
  } catch {
    // already gone
  }
}

export interface Started {
  child: ChildProcess;
  stdout(): string;
  stderr(): string;
  /** SIGTERM, then SIGKILL after 5 s; resolves once the child has exited. */
  stop(): Promise<void>;
}

/**
 * Starts a long-running child (a server, a mount daemon) and waits until it is ready: its stdout
 * matches readyPattern and/or waitMount shows up in /proc/self/mountinfo. Rejects, killing the
 * child, if it exits first or is not ready within timeoutMs (default 20 s). The child's libuv pool
 * is sized (UV_THREADPOOL_SIZE=32) because a serving process keeps pool threads in /dev/fuse reads.
 */
export async function startChild(
  argv: string[],
  opts: { readyPattern?: RegExp; waitMount?: string; timeoutMs?: number; env?: NodeJS.ProcessEnv } = {},
): Promise<Started> {
  const [cmd, ...args] = argv;
  if (!cmd) throw new Error('startChild: empty argv');
  const child = spawn(cmd, args, {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, UV_THREADPOOL_SIZE: process.env['UV_THREADPOOL_SIZE'] ?? '32', ...opts.env },
  });
  let out = '';
  let err = '';
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (err += d));
  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once('exit', () => resolve());
  });
  const started: Started = {
    child,
    stdout: () => out,
    stderr: () => err,
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill('SIGTERM');
      const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
      await exited;
      clearTimeout(timer);
    },
  };

  const timeoutMs = opts.timeoutMs ?? 20_000;
  const deadline = Date.now() + timeoutMs;
  let gone = false;
  void exited.then(() => (gone = true));
  for (;;) {
    const outReady = !opts.readyPattern || opts.readyPattern.test(out);
    const mountReady = !opts.waitMount || (await isMounted(opts.waitMount));
    if (outReady && mountReady) return started;
    if (gone) {
      throw new Error(`${path.basename(cmd)} exited (${child.exitCode ?? child.signalCode}) before it was ready: ${err.trim() || out.trim()}`);
    }
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      await exited;
      if (opts.waitMount) await teardownMount(opts.waitMount);
      throw new Error(`${path.basename(cmd)} not ready after ${timeoutMs} ms: ${err.trim() || out.trim()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** Whether something is mounted at mp (the path itself, not a parent). */
export async function isMounted(mp: string): Promise<boolean> {
  const abs = path.resolve(mp);
  return (await readMountinfo()).some((m) => m.mountpoint === abs);
}

/** The FUSE connection minor of the mount at mp, or undefined if none. */
export function fuseMinor(mp: string): Promise<number | undefined> {
  return minorOf(mp);
}

/** A fresh directory under the system temp dir: prefix names it (e.g. "wirefs-fuse-"). */
/** Directories tmpdir made in this process: removed when it exits (see removeMade). */
const made: string[] = [];

/** A new directory under the system's temporary directory, removed when this process exits. */
export async function tmpdir(prefix: string): Promise<string> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), prefix));
  if (made.length === 0) process.once('exit', removeMade);
  made.push(dir);
  return dir;
}

/**
 * Removes what tmpdir made (export directories, images, caches: one `npm test` left 165 MB in
 * /tmp). Anything with a mount still at or under it is left alone: rm must never walk into a
 * mount, which may hang. Synchronous, as an exit handler must be; every mount is down by then.
 */
function removeMade(): void {
  let mounts: string[];
  try {
    mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '').filter(Boolean);
  } catch {
    return;
  }
  for (const dir of made) {
    if (mounts.some((m) => m === dir || m.startsWith(`${dir}/`))) continue;
    try {
      rmSync(dir, { recursive: true, force: true });
    } catch {
      // best effort: a leftover directory costs only space
    }
  }
}

/**
 * Frees a mount and its server whatever state they are in; safe to call twice or on nothing:
 * umount; umount -l; write 1 to fusectl's abort for the mount's connection; SIGKILL the child
 * (after a short grace, since a cleanly unmounted server exits by itself).
 */
export async function teardownMount(mp: string, child?: ChildProcess): Promise<void> {
  const minor = await fuseMinor(mp).catch(() => undefined);
  if (await isMounted(mp)) {
    await sh(`umount ${quote(mp)}`, { timeoutMs: 10_000 }).catch(() => undefined);
    if (await isMounted(mp)) await sh(`umount -l ${quote(mp)}`, { timeoutMs: 10_000 }).catch(() => undefined);
  }
  if (minor !== undefined) await abortConnection(minor).catch(() => undefined);
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    const grace = new Promise<void>((resolve) => setTimeout(resolve, 2000).unref());
    await Promise.race([exited, grace]);
    if (child.exitCode === null && child.signalCode === null && child.pid !== undefined) {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        // exited meanwhile
      }
      await exited;
    }
  }
  // The mount point goes too (tests and benchmarks make a fresh one each time). rmdir removes only
  // an empty directory and fails on one still mounted: never anything but the bare mount point.
  if (!(await isMounted(mp))) await fsp.rmdir(mp).catch(() => undefined);
}

/** Single-quotes a string for bash. */
export function quote(s: string): string {
  return `'${s.replace(/'/g, `'\\''`)}'`;
}
