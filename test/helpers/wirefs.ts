// Fixtures for end-to-end tests: a real `wirefs serve` child on loopback and real `wirefs mount`
// children, torn down by the test's after-hooks whatever happens.

import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { TestContext } from 'node:test';
import { startChild, teardownMount, tmpdir } from './mount.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');
export const BIN = path.join(ROOT, 'bin/wirefs');
export const FIXTURES = path.join(ROOT, 'test/fixtures');

export interface Served {
  host: string;
  port: number;
  addr: string;
  stop(): Promise<void>;
  pid: number;
  /** What the server logged so far. */
  stderr(): string;
}

type After = Pick<TestContext, 'after'>;

/**
 * Serves spec on loopback. The CLI squashes client root by default; tests run as root and mean it,
 * so the fixture passes --no-root-squash unless opts.rootSquash. opts.bind picks another loopback
 * address (127.0.0.2) for allow-list tests.
 */
export async function serve(t: After, spec: string, extra: string[] = [], opts: { rootSquash?: boolean; bind?: string } = {}): Promise<Served> {
  const squash = opts.rootSquash ? [] : ['--no-root-squash'];
  const child = await startChild([process.execPath, BIN, 'serve', '-p', '0', '--bind', opts.bind ?? '127.0.0.1', ...squash, ...extra, spec], {
    readyPattern: /serving .* on ([\d.]+):(\d+)/,
    timeoutMs: 15000,
  });
  const m = /serving .* on ([\d.]+):(\d+)/.exec(child.stdout());
  if (!m) throw new Error(`serve printed no address: ${child.stdout()}`);
  const served: Served = {
    host: m[1]!,
    port: Number(m[2]),
    addr: `${m[1]}:${m[2]}`,
    stop: () => child.stop(),
    pid: child.child.pid!,
    stderr: () => child.stderr(),
  };
  t.after(() => child.stop());
  return served;
}

export interface Mounted {
  mnt: string;
  pid: number;
  unmount(): Promise<void>;
}

/** Mounts `source` (HOST:PORT, or a source spec with direct) in a foreground child. */
export async function mount(t: After, source: string, opts: { direct?: boolean; options?: string; mnt?: string; args?: string[] } = {}): Promise<Mounted> {
  const mnt = opts.mnt ?? (await tmpdir('wirefs-mnt-'));
  const args = [
    process.execPath, BIN, 'mount', '-f', ...(opts.direct ? ['--direct'] : []), ...(opts.options ? ['-o', opts.options] : []),
    ...(opts.args ?? []), source, mnt,
  ];
  const child = await startChild(args, { waitMount: mnt, timeoutMs: 20000 });
  const unmount = (): Promise<void> => teardownMount(mnt, child.child);
  t.after(unmount);
  return { mnt, pid: child.child.pid!, unmount };
}
