// `wirefs mount`, `wirefs umount` and `wirefs status`. A mount is served by a daemon process: by
// default `mount` starts itself again in the foreground, detached, and returns once that daemon
// reports the mount ready (or prints the daemon's one-line error). Each daemon keeps a small control
// socket under /run/wirefs so `status` can ask it for live figures.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { openSource } from '../sources/index.js';
import { DEFAULT_OUTAGE_MS, connect, type RemoteVfs } from '../client/client.js';
import { WriteBehindVfs } from '../client/writeback.js';
import { DirCacheVfs } from '../client/dircache.js';
import { mountVfs, readaheadFor, setReadahead, type FuseMount } from '../fuse/mount.js';
import type { Vfs } from '../vfs/types.js';
import { CliError, UsageError } from './errors.js';
import { parseAddress, parseMountOptions } from './util.js';
import { BIN } from './main.js';
import { clientSecurity } from './security.js';
import { startMemoryTrim } from '../lib/memory.js';
import { logger } from '../lib/log.js';

export const RUN_DIR = '/run/wirefs';

const IGNORED_OPTIONS = new Set(['defaults', '_netdev', 'rw', 'auto', 'noauto', 'user', 'nouser', 'nofail', 'exec', 'noexec', 'suid', 'nosuid', 'dev', 'nodev', 'async', 'atime', 'noatime', 'relatime']);

function escapeMountpoint(mp: string): string {
  return mp.replace(/^\//, '').replace(/[^A-Za-z0-9._-]/g, '_') || 'root';
}

/** Mount points from /proc/self/mountinfo (field 5), with octal escapes decoded. */
export async function mountedPaths(): Promise<Map<string, { source: string; fstype: string }>> {
  const text = await fsp.readFile('/proc/self/mountinfo', 'utf8');
  const out = new Map<string, { source: string; fstype: string }>();
  const unescape = (s: string): string => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
  for (const line of text.split('\n')) {
    const [left, right] = line.split(' - ');
    if (!left || !right) continue;
    const mp = left.split(' ')[4];
    const [fstype, source] = right.split(' ');
    if (mp && fstype) out.set(unescape(mp), { source: unescape(source ?? ''), fstype });
  }
  return out;
}

export async function mountCommand(values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length !== 2) throw new UsageError('expected SOURCE and MOUNTPOINT');
  const [spec, mpArg] = positionals as [string, string];
  const mp = path.resolve(mpArg);
  const opts = parseMountOptions(values['options'] as string[] | undefined);
  for (const key of opts.keys()) {
    if (!IGNORED_OPTIONS.has(key) && !['ro', 'sync', 'readahead_kb', 'readaround_kb', 'datacache_mb', 'entry_timeout', 'attr_timeout', 'negative_timeout', 'secret-file', 'ca', 'cert', 'key', 'timeout', 'hard', 'soft'].includes(key)) {
      throw new UsageError(`unknown mount option "${key}"`);
    }
  }
  const st = await fsp.stat(mp).catch(() => null);
  if (!st) throw new CliError(`mount point ${mp} does not exist`);
  if (!st.isDirectory()) throw new CliError(`mount point ${mp} is not a directory`);
  if ((await mountedPaths()).get(mp)?.fstype.startsWith('fuse')) throw new CliError(`${mp} is already a FUSE mount`);
  const raText = opts.get('readahead_kb');
  const raOpt = typeof raText === 'string' ? Number(raText) : undefined;
  if (raOpt !== undefined && !(raOpt >= 0 && raOpt <= 1 << 20)) throw new UsageError(`bad readahead_kb "${String(raText)}"`);
  const rarText = opts.get('readaround_kb');
  const rarKb = typeof rarText === 'string' ? Number(rarText) : DEFAULT_READAROUND_KB;
  if (!(rarKb === 0 || (rarKb >= 8 && rarKb <= 1024 && (rarKb & (rarKb - 1)) === 0))) throw new UsageError(`bad readaround_kb "${String(rarText)}" (0, or a power of two from 8 to 1024)`);
  const timeoutS = Number(values['timeout']);
  if (!(timeoutS > 0)) throw new UsageError(`bad --timeout "${String(values['timeout'])}"`);
  const outageMs = outageOption(opts);
  const dcText = opts.get('datacache_mb');
  const dcOpt = typeof dcText === 'string' ? Number(dcText) : undefined;
  if (dcText !== undefined && !(dcOpt !== undefined && dcOpt >= 0 && Number.isSafeInteger(dcOpt))) throw new UsageError(`bad datacache_mb "${String(dcText)}"`);

  if (!values['foreground']) return spawnDaemon(mp, process.argv.slice(3));

  const readyFd = values['ready-fd'] !== undefined ? Number(values['ready-fd']) : undefined;
  const report = (line: string): void => {
    if (readyFd === undefined) return;
    try {
      fs.writeSync(readyFd, line + '\n');
      fs.closeSync(readyFd);
    } catch {
      // the parent gave up waiting; nothing to tell
    }
  };

  let vfs: Vfs;
  let source: string;
  let server: RemoteVfs | undefined;
  let rttMs: number | undefined;
  let writeBehind: WriteBehindVfs | undefined;
  let dirCache: DirCacheVfs | undefined;
  try {
    if (values['direct']) {
      vfs = await openSource(spec);
      source = spec;
    } else {
      const addr = parseAddress(spec);
      source = `${addr.host}:${addr.port}`;
      const security = await clientSecurity(values, opts);
      const dataCache = dataCacheOption(dcOpt);
      const client = await connect({ host: addr.host, port: addr.port, timeoutMs: timeoutS * 1000, security, outageMs, ...(dataCache ? { dataCache } : {}) });
      server = client;
      // The round trip decides how far to read ahead: the best of a few pings.
      rttMs = Infinity;
      for (let i = 0; i < 5; i++) rttMs = Math.min(rttMs, await client.roundTrip());
      const coherent = client.info().coherent === true;
      const inner = opts.has('sync') ? client
        : (writeBehind = new WriteBehindVfs(client, undefined, coherent ? (l) => client.onWriteAttr(l) : undefined, client));
      // Absent names in directories this client made, directory attributes after its own changes
      // and read-only opens of files opened before are answered locally (only sound when every
      // change reaches us as a push).
      vfs = coherent ? (dirCache = new DirCacheVfs(inner, (l) => client.onDirAttr(l), writeBehind ?? client, logger('client'))) : inner;
    }
  } catch (err) {
    report(`error: ${(err as Error).message}`);
    throw new CliError((err as Error).message);
  }

  let fuse: FuseMount;
  try {
    const num = (k: string): number | undefined => (typeof opts.get(k) === 'string' ? Number(opts.get(k)) : undefined);
    const entryTimeoutS = num('entry_timeout');
    const attrTimeoutS = num('attr_timeout');
    const negativeTimeoutS = num('negative_timeout');
    for (const [k, v] of [['entry_timeout', entryTimeoutS], ['attr_timeout', attrTimeoutS], ['negative_timeout', negativeTimeoutS]] as const) {
      if (v !== undefined && !(v >= 0)) throw new UsageError(`bad ${k} "${String(opts.get(k))}"`);
    }
    fuse = await mountVfs(vfs, mp, {
      source,
      subtype: vfs.info().type,
      readOnly: opts.has('ro') || vfs.info().readOnly,
      ...(entryTimeoutS !== undefined ? { entryTimeoutS } : {}),
      ...(attrTimeoutS !== undefined ? { attrTimeoutS } : {}),
      ...(negativeTimeoutS !== undefined ? { negativeTimeoutS } : {}),
      // Only across the network: a local source's reads cost no round trip to save.
      ...(server && rarKb ? { readAroundBytes: rarKb * 1024 } : {}),
    });
  } catch (err) {
    await vfs.close().catch(() => {});
    report(`error: ${(err as Error).message}`);
    throw new CliError((err as Error).message);
  }

  // umount(8) asks a STATFS of the mount point first: with one answer kept, the client can give it
  // while the server is down (client.ts statfs), and umount does not wait out the outage.
  server?.keepStatfs();

  const readaheadKb = raOpt !== undefined ? raOpt : rttMs !== undefined ? readaheadFor(rttMs) : undefined;
  if (readaheadKb !== undefined) {
    await setReadahead(fuse.minor, readaheadKb).catch((err: Error) => process.stderr.write(`wirefs mount: cannot set read-ahead: ${err.message}\n`));
  }

  const control = await startControl(mp, () => ({
    mountpoint: mp,
    server: source,
    type: vfs.info().type,
    pid: process.pid,
    fuse: fuse.stats(),
    ...(rttMs !== undefined ? { rttMs: Math.round(rttMs * 1000) / 1000 } : {}),
    ...(readaheadKb !== undefined ? { readaheadKb } : {}),
    ...(server ? { client: server.stats() } : {}),
    ...(writeBehind ? { writeBehind: writeBehind.stats() } : {}),
    ...(dirCache ? { dirCache: dirCache.stats() } : {}),
    memory: process.memoryUsage(),
  }));
  report('ok');
  const memory = startMemoryTrim(() => fuse.stats().requests);

  let stopping = false;
  const stop = (): void => {
    if (stopping) return;
    stopping = true;
    fuse.unmount().catch(() => fuse.unmount({ lazy: true })).catch(() => fuse.abort());
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
  await fuse.closed;
  memory.stop();
  control.close();
  await vfs.close().catch(() => {});
  return 0;
}

export const DATA_CACHE_DIR = '/var/cache/wirefs';

/**
 * Bytes fetched around a small random read (readaround.ts). On a 10 Gbit/s link, the bandwidth
 * readaheadFor assumes, 128 KiB take about 100 us, less than a round trip on most networks; on a
 * slow link, lower it with -o readaround_kb.
 */
const DEFAULT_READAROUND_KB = 128;

/** -o datacache_mb=N, or a tenth of the free space where the cache goes, at most 2 GiB. */
function dataCacheOption(mb: number | undefined): { dir: string; maxBytes: number } | undefined {
  if (mb === 0) return undefined;
  if (mb !== undefined) return { dir: DATA_CACHE_DIR, maxBytes: mb * 2 ** 20 };
  let free = 0;
  try {
    fs.mkdirSync(DATA_CACHE_DIR, { recursive: true, mode: 0o700 });
    const st = fs.statfsSync(DATA_CACHE_DIR);
    free = st.bavail * st.bsize;
  } catch {
    return undefined;
  }
  const maxBytes = Math.min(2 ** 31, Math.floor(free / 10 / 4096) * 4096);
  return maxBytes >= 2 ** 24 ? { dir: DATA_CACHE_DIR, maxBytes } : undefined;
}

/** -o timeout=SECONDS (how long calls ride out a lost server before EIO), -o hard (forever), -o soft. */
function outageOption(opts: Map<string, string | true>): number {
  const t = opts.get('timeout');
  if (opts.has('hard')) {
    if (t !== undefined || opts.has('soft')) throw new UsageError('-o hard waits forever: it takes no timeout and no soft');
    return Infinity;
  }
  if (t === undefined) return DEFAULT_OUTAGE_MS;
  const n = Number(t);
  if (t === true || !(n > 0) || !Number.isFinite(n)) throw new UsageError(`bad -o timeout "${String(t)}" (seconds, above 0)`);
  return n * 1000;
}

/** Starts this command again as a detached foreground daemon and waits for its verdict. */
async function spawnDaemon(mp: string, args: string[]): Promise<number> {
  await fsp.mkdir(RUN_DIR, { recursive: true });
  const logPath = path.join(RUN_DIR, `${escapeMountpoint(mp)}.log`);
  const log = fs.openSync(logPath, 'a');
  const child = spawn(process.execPath, [BIN, 'mount', '-f', '--ready-fd', '3', ...args.filter((a) => a !== '-f')], {
    detached: true,
    stdio: ['ignore', log, log, 'pipe'],
  });
  fs.closeSync(log);
  const verdict = await new Promise<string>((resolve) => {
    let text = '';
    const pipe = child.stdio[3] as NodeJS.ReadableStream;
    pipe.setEncoding('utf8');
    pipe.on('data', (d: string) => {
      text += d;
      if (text.includes('\n')) resolve(text.trim());
    });
    pipe.on('end', () => resolve(text.trim() || 'error: the mount daemon exited before the mount was ready'));
    child.on('exit', (code) => resolve(text.trim() || `error: the mount daemon exited with code ${code ?? 'signal'} (see ${logPath})`));
  });
  (child.stdio[3] as NodeJS.ReadableStream & { destroy(): void }).destroy();
  child.unref();
  if (verdict === 'ok') return 0;
  throw new CliError(verdict.replace(/^error: /, ''));
}

interface Control {
  close(): void;
}

async function startControl(mp: string, stats: () => object): Promise<Control> {
  const dir = path.join(RUN_DIR, 'mounts');
  await fsp.mkdir(dir, { recursive: true });
  const sock = path.join(dir, `${escapeMountpoint(mp)}.sock`);
  await fsp.rm(sock, { force: true });
  const server = net.createServer((c) => {
    c.end(JSON.stringify(stats()) + '\n');
  });
  server.on('error', () => {});
  await new Promise<void>((resolve) => server.listen(sock, resolve));
  server.unref();
  return {
    close: () => {
      server.close();
      fs.rmSync(sock, { force: true });
    },
  };
}

export async function umountCommand(values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length !== 1) throw new UsageError('expected MOUNTPOINT');
  const mp = path.resolve(positionals[0]!);
  const m = (await mountedPaths()).get(mp);
  if (!m) throw new CliError(`${mp} is not mounted`);
  if (!m.fstype.startsWith('fuse')) throw new CliError(`${mp} is not a wirefs mount (type ${m.fstype})`);
  const args = values['lazy'] ? ['-l', mp] : [mp];
  const { code, stderr } = await run('umount', args);
  if (code === 0) return 0;
  if (/busy/i.test(stderr)) throw new CliError(`${mp} is busy: files are open or a process is inside it (close them, or use -l)`);
  throw new CliError(stderr.trim().split('\n').pop() ?? `umount failed with code ${code}`);
}

function run(cmd: string, args: string[]): Promise<{ code: number; stderr: string }> {
  return new Promise((resolve) => {
    const c = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    c.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    c.on('error', (err) => resolve({ code: 127, stderr: err.message }));
    c.on('close', (code) => resolve({ code: code ?? 1, stderr }));
  });
}

export async function statusCommand(_values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length) throw new UsageError('status takes no arguments');
  const dir = path.join(RUN_DIR, 'mounts');
  const socks = (await fsp.readdir(dir).catch(() => [] as string[])).filter((f) => f.endsWith('.sock'));
  const rows: string[] = [];
  for (const s of socks) {
    const text = await new Promise<string>((resolve) => {
      const c = net.connect(path.join(dir, s));
      let buf = '';
      const timer = setTimeout(() => c.destroy(), 2000);
      c.setEncoding('utf8').on('data', (d: string) => (buf += d));
      c.on('close', () => {
        clearTimeout(timer);
        resolve(buf);
      });
      c.on('error', () => {});
    });
    if (!text) continue;
    try {
      rows.push(formatStatus(JSON.parse(text) as Record<string, unknown>));
    } catch {
      // a daemon mid-exit; skip it
    }
  }
  process.stdout.write(rows.length ? rows.join('\n') + '\n' : 'no wirefs mounts\n');
  return 0;
}

function formatStatus(s: Record<string, unknown>): string {
  const c = (s['client'] ?? {}) as Record<string, unknown>;
  const f = (s['fuse'] ?? {}) as Record<string, unknown>;
  const head = `${String(s['mountpoint'])}  ${String(s['server'])}  fuse.${String(s['type'])}  pid=${String(s['pid'])}`;
  const { ops: kernelOps, ...fuseRest } = f;
  if (!s['client']) return `${head}  direct  ${flat(fuseRest, 'fuse').join(' ')}\n  kernel requests: ${counts(kernelOps)}`;
  const dc = c['dataCache'] as Record<string, number> | undefined;
  const here = s['dirCache'] as Record<string, number> | undefined;
  const ub = c['unlinkBehind'] as Record<string, number> | undefined;
  const cb = c['createBehind'] as Record<string, number> | undefined;
  const m = s['memory'] as Record<string, number> | undefined;
  const mib = (n: number | undefined): string => ((n ?? 0) / 2 ** 20).toFixed(1);
  const state = String(c['state']) + (c['lastError'] ? ` (${String(c['lastError'])})` : '');
  const lines = [
    head,
    `  connection: ${state}; ${String(c['reconnects'])} reconnects (${String(c['newSessions'])} to a restarted server), ${String(c['timedOut'])} calls timed out, ${String(c['resent'])} requests resent`,
    `  requests: ${String(c['inFlight'])} in flight, ${String(c['requests'])} sent, ${String(c['errors'])} errors, ${String(c['pushes'])} invalidations received`,
    ...(dc ? [`  data cache: ${String(dc['files'])} files, ${mib(dc['bytes'])} of ${mib(dc['maxBytes'])} MiB; ${String(dc['hits'])} reads from it, ${String(dc['misses'])} from the server; ${String(dc['errors'])} errors`] : []),
    ...(here ? [`  answered here: ${String(here['lookupsAnswered'])} lookups, ${String(here['getattrsAnswered'])} getattrs, ${String(here['opensAnswered'])} opens, ${String(here['listingsAnswered'])} listings`] : []),
    ...(ub ? [`  unlink-behind: ${String(ub['sent'])} sent, ${String(ub['failed'])} failed, ${String(ub['inFlight'])} in flight, ${String(ub['rmdirs'] ?? 0)} of the sent rmdirs; ${String(ub['leases'])} directory leases granted, ${String(ub['recalled'])} recalled, ${String(ub['held'])} held`] : []),
    ...(cb ? [`  create-behind: ${String(cb['sent'])} sent, ${String(cb['failed'])} failed; ${String(cb['reserved'])} files reserved ahead`] : []),
    `  cache: ${String(c['nodes'])} nodes and ${String(c['handles'])} open handles held for the kernel; ${String(c['remapped'])} re-resolved and ${String(c['reopened'])} reopened after restarts, ${String(c['stale'])} stale`,
    `  ${flat(fuseRest, 'fuse').join(' ')}`,
    `  kernel requests: ${counts(kernelOps)}`,
    `  server requests: ${counts(c['ops'])}`,
    ...(m ? [`  memory: ${mib(m['rss'])} MiB resident; JavaScript heap ${mib(m['heapUsed'])} of ${mib(m['heapTotal'])} MiB; buffers ${mib(m['arrayBuffers'])} MiB`] : []),
  ];
  return lines.join('\n');
}

/** "LOOKUP 12, GETATTR 3" from a count per operation, most frequent first. */
function counts(o: unknown): string {
  const rows = Object.entries((o ?? {}) as Record<string, number>).sort((a, b) => b[1] - a[1]);
  return rows.length ? rows.map(([k, n]) => `${k} ${n}`).join(', ') : 'none';
}

function flat(o: unknown, prefix: string): string[] {
  return o && typeof o === 'object'
    ? Object.entries(o as Record<string, unknown>).flatMap(([k, v]) => flat(v, prefix ? `${prefix}.${k}` : k))
    : [`${prefix}=${String(o)}`];
}
