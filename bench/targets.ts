// The mounts the benchmarks measure: a wirefs server and client (optionally through a proxy adding
// latency, optionally with mount options), and a direct mount that serves a source in the mounting
// process. Shared by `npm run bench` (run.ts) and `npm run bench:latency` (latency.ts).

import { startChild, teardownMount, tmpdir } from '../test/helpers/mount.js';
import { startProxy, type Proxy } from '../test/helpers/proxy.js';
import { BIN } from '../test/helpers/wirefs.js';

export interface Target {
  name: string;
  dir: string;
  /** The processes whose CPU and memory the benchmarks report (server absent for a direct mount). */
  pids?: { client: number; server?: number };
  teardown(): Promise<void>;
}

/** Serves spec (default: the exported directory) on loopback and mounts it; delayMs each way through a proxy. */
export async function wirefsTarget(name: string, exported: string, delayMs: number, spec = exported, mountOpts?: string): Promise<Target> {
  const server = await startChild([process.execPath, BIN, 'serve', '-p', '0', '--bind', '127.0.0.1', '--no-root-squash', spec], { readyPattern: /on ([\d.]+):(\d+)/ });
  const port = Number(/on [\d.]+:(\d+)/.exec(server.stdout())![1]);
  let proxy: Proxy | undefined;
  if (delayMs) proxy = await startProxy({ host: '127.0.0.1', port }, { delayMs });
  const mnt = await tmpdir('wirefs-bench-mnt-');
  const opts = mountOpts ? ['-o', mountOpts] : [];
  const client = await startChild([process.execPath, BIN, 'mount', '-f', ...opts, `127.0.0.1:${proxy?.port ?? port}`, mnt], { waitMount: mnt, timeoutMs: 20000 });
  return {
    name, dir: mnt, pids: { client: client.child.pid!, server: server.child.pid! },
    teardown: async () => { await teardownMount(mnt, client.child); await proxy?.close(); await server.stop(); },
  };
}

/** Mounts the exported directory with the source served in the mount daemon itself (no network). */
export async function directTarget(name: string, exported: string, mountOpts?: string): Promise<Target> {
  const mnt = await tmpdir('wirefs-bench-mnt-');
  const opts = mountOpts ? ['-o', mountOpts] : [];
  const client = await startChild([process.execPath, BIN, 'mount', '-f', '--direct', ...opts, exported, mnt], { waitMount: mnt, timeoutMs: 20000 });
  return { name, dir: mnt, pids: { client: client.child.pid! }, teardown: () => teardownMount(mnt, client.child) };
}
