// Mounting a Vfs as root: open /dev/fuse, start serving it, and let util-linux `mount` attach the fd
// to a new fuse.<subtype> mount (no libfuse, no fusermount). Also unmount and the fusectl abort, and
// the /proc/self/mountinfo lookups the tests share.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { promisify } from 'node:util';
import { COHERENT_CACHE_S, type Vfs } from '../vfs/types.js';
import { FuseChannel } from './channel.js';
import { DEFAULT_MAX_WRITE, FuseSession } from './session.js';

const FUSECTL = '/sys/fs/fuse/connections';
const INIT_TIMEOUT_MS = 15_000;
const COMMAND_TIMEOUT_MS = 15_000;

export interface MountOptions {
  /** Shown as the mount's source in `mount` and /proc/mounts (e.g. "host:port"). */
  source: string;
  /** The type shown as fuse.<subtype>; default vfs.info().type. Letters, digits, . _ - only. */
  subtype?: string;
  /** Let every user in (allow_other). Default true. */
  allowOther?: boolean;
  /** Let the kernel check permissions from the attributes (default_permissions). Default true. */
  defaultPermissions?: boolean;
  /**
   * Let the kernel enforce and cache POSIX ACLs (FUSE_POSIX_ACL). Default true; it implies
   * default_permissions, so it is off whenever defaultPermissions is false.
   */
  posixAcl?: boolean;
  readOnly?: boolean;
  /** Cache times; the defaults follow vfs.info().coherent (see COHERENT_CACHE_S). */
  entryTimeoutS?: number;
  attrTimeoutS?: number;
  negativeTimeoutS?: number;
  /** Read-around window for small random reads (readaround.ts), coherent Vfs only; 0 or absent: off. */
  readAroundBytes?: number;
}

/** How long a coherent mount's kernel keeps a name's absence. */
export const COHERENT_NEGATIVE_S = 60;

export interface FuseMount {
  mountpoint: string;
  /** The connection's device minor (its directory under /sys/fs/fuse/connections). */
  minor: number;
  /** Resolves when the kernel has ended the session (unmounted or aborted). */
  closed: Promise<void>;
  unmount(opts?: { lazy?: boolean }): Promise<void>;
  /** Ends the connection at once through fusectl: every pending and future call fails. */
  abort(): Promise<void>;
  stats(): { inFlight: number; requests: number; nativeAnswered: number; nativeGetattrs: number; ops: Record<string, number> };
}

/** Keeps a subtype to the characters a mount type may safely hold. */
export function sanitizeSubtype(s: string): string {
  const clean = s.replace(/[^A-Za-z0-9._-]/g, '_').replace(/^[._-]+/, '');
  return clean || 'wirefs';
}

export interface MountInfoLine {
  minor: number;
  major: number;
  mountpoint: string;
  fstype: string;
  source: string;
}

function unescapeMountinfo(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

/** The mounts of this process's namespace, from /proc/self/mountinfo (read asynchronously). */
export async function readMountinfo(): Promise<MountInfoLine[]> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out: MountInfoLine[] = [];
  for (const line of text.split('\n')) {
    // fields: id parent major:minor root mountpoint options [optional...] - fstype source superopts
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const f = left.split(' ');
    const dev = /^(\d+):(\d+)$/.exec(f[2] ?? '');
    const [fstype, source] = right.split(' ');
    if (!dev || !f[4] || !fstype) continue;
    out.push({ major: Number(dev[1]), minor: Number(dev[2]), mountpoint: unescapeMountinfo(f[4]), fstype, source: unescapeMountinfo(source ?? '') });
  }
  return out;
}

/** The FUSE connection minor of the (topmost) FUSE mount at mp, or undefined. */
export async function fuseMinor(mp: string): Promise<number | undefined> {
  const abs = path.resolve(mp);
  const hits = (await readMountinfo()).filter((m) => m.mountpoint === abs && (m.fstype === 'fuse' || m.fstype.startsWith('fuse.')));
  return hits.at(-1)?.minor;
}

/** Writes 1 to fusectl's abort file of a connection, mounting fusectl first if needed. */
export async function abortConnection(minor: number): Promise<void> {
  const dir = path.join(FUSECTL, String(minor));
  if (!(await exists(dir))) {
    await run('mount', ['-t', 'fusectl', 'fusectl', FUSECTL]).catch(() => {});
    if (!(await exists(dir))) return; // the connection is already gone
  }
  await fsp.writeFile(path.join(dir, 'abort'), '1').catch((err: NodeJS.ErrnoException) => {
    if (err.code !== 'ENOENT') throw err;
  });
}

/**
 * Sets the mount's read-ahead window. The kernel reads ahead at most 128 KiB on a FUSE mount (the
 * INIT reply can only lower it, fs/fuse/inode.c process_init_reply), which is far too little
 * once a round trip crosses a network: a reader then waits a full round trip every 128 KiB. The
 * backing device's read_ahead_kb in sysfs (bdi "0:<minor>") is the knob for it.
 */
export async function setReadahead(minor: number, kib: number): Promise<void> {
  await fsp.writeFile(`/sys/class/bdi/0:${minor}/read_ahead_kb`, String(Math.max(0, Math.round(kib))));
}

/**
 * Read-ahead sized to bandwidth x round trip: enough bytes in flight to keep the link busy while
 * the reader consumes the window. The bandwidth is taken as that of a 10 Gbit/s link (a guess on
 * the high side costs only memory), and the window is kept between 4 and 16 MiB: even on loopback
 * a 1 MiB READ spends milliseconds in the two processes, so at least four must be in flight
 * (measured, 512 MiB cold: 1.3-2.5 s with 1 MiB, 1.0-1.1 s with 4 MiB).
 */
export function readaheadFor(rttMs: number): number {
  const bytesPerMs = 1.25e6;
  return Math.min(16384, Math.max(4096, Math.ceil((2 * rttMs * bytesPerMs) / 1024)));
}

async function exists(p: string): Promise<boolean> {
  return fsp.access(p).then(() => true, () => false);
}

/** Runs a command asynchronously (never spawnSync: we may be serving the mount it touches). */
function run(cmd: string, args: string[], extraFd?: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const stdio: Array<'ignore' | 'pipe' | number> = ['ignore', 'ignore', 'pipe'];
    if (extraFd !== undefined) stdio.push(extraFd);
    const child = spawn(cmd, args, { stdio });
    let stderr = '';
    child.stderr?.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), COMMAND_TIMEOUT_MS);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(new Error(`${cmd}: ${err.message}`));
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      if (code === 0) return resolve();
      const why = stderr.trim().split('\n')[0] || (signal ? `killed by ${signal}` : `exit code ${code}`);
      reject(new Error(`${cmd} ${args.at(-1) ?? ''}: ${why}`));
    });
  });
}

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} timed out after ${ms / 1000} s`)), ms);
  });
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

/**
 * Mounts `vfs` at `mountpoint` and serves it from this process. Needs root. Resolves once the
 * mount exists and INIT is done; rejects with a one-line message, leaving nothing behind.
 * The caller must never make synchronous calls under the mount point (it would deadlock).
 */
export async function mountVfs(vfs: Vfs, mountpoint: string, opts: MountOptions): Promise<FuseMount> {
  const mp = path.resolve(mountpoint);
  const subtype = sanitizeSubtype(opts.subtype ?? vfs.info().type);
  if (!opts.source || opts.source.startsWith('-') || /[\s]/.test(opts.source)) {
    throw new Error(`bad mount source "${opts.source}"`);
  }
  const options = ['fd=3', 'rootmode=40000', 'user_id=0', 'group_id=0'];
  if (opts.allowOther ?? true) options.push('allow_other');
  if (opts.defaultPermissions ?? true) options.push('default_permissions');
  if (opts.readOnly) options.push('ro');

  let fd: number;
  try {
    fd = await promisify(fs.open)('/dev/fuse', 'r+');
  } catch (err) {
    throw new Error(`cannot open /dev/fuse: ${(err as Error).message}`);
  }
  const maxWrite = DEFAULT_MAX_WRITE;
  const channel = new FuseChannel(fd, { bufferSize: maxWrite + 4096 });
  const coherent = vfs.info().coherent === true;
  const cacheS = coherent ? COHERENT_CACHE_S : 1;
  const session = new FuseSession(vfs, channel, {
    maxWrite,
    entryTimeoutS: opts.entryTimeoutS ?? cacheS,
    attrTimeoutS: opts.attrTimeoutS ?? cacheS,
    // Absences are kept for less: after a server restart (the only case in which a push can be
    // lost for good) the client cannot name the absences its kernel holds to drop them.
    negativeTimeoutS: opts.negativeTimeoutS ?? (coherent ? COHERENT_NEGATIVE_S : 0),
    keepCache: coherent,
    posixAcl: (opts.defaultPermissions ?? true) && (opts.posixAcl ?? true),
    ...(opts.readAroundBytes ? { readAroundBytes: opts.readAroundBytes } : {}),
  });
  const closed = channel.closed.then(() => session.close());
  // Reading starts before the mount: the reads wait (retrying EPERM) until mount(2) attaches the
  // fd, then take INIT, which the kernel queues during mount(2).
  channel.start((frame) => session.dispatch(frame), session.nativeNosys, channel.native ? session.nativeAttrs() : undefined);

  try {
    await run('mount', ['-i', '-t', `fuse.${subtype}`, '-o', options.join(','), opts.source, mp], fd);
  } catch (err) {
    channel.close();
    await closed;
    throw new Error(`cannot mount ${mp}: ${(err as Error).message.replace(/^mount \S*: /, '')}`);
  }
  channel.attach();

  let minor: number | undefined;
  try {
    await withTimeout(session.initialized, INIT_TIMEOUT_MS, 'FUSE INIT');
    minor = await fuseMinor(mp);
    if (minor === undefined) throw new Error('mount not found in /proc/self/mountinfo');
  } catch (err) {
    const m = minor ?? (await fuseMinor(mp).catch(() => undefined));
    if (m !== undefined) await abortConnection(m).catch(() => {});
    await run('umount', ['-l', mp]).catch(() => {});
    channel.close();
    throw new Error(`cannot mount ${mp}: ${(err as Error).message}`);
  }

  const knownMinor = minor;
  return {
    mountpoint: mp,
    minor: knownMinor,
    closed,
    async unmount(o = {}) {
      if (!o.lazy) {
        try {
          await run('umount', [mp]);
          return;
        } catch {
          // busy: fall back to detaching it; the session ends when the last user leaves
        }
      }
      await run('umount', ['-l', mp]);
    },
    abort: () => abortConnection(knownMinor),
    stats: () => session.stats(),
  };
}
