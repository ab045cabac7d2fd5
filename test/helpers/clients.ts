// Two clients of one in-process server on loopback, closed (clients first) when the test ends:
// the shape of the network tests that check what one client sees of another's changes.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import type { TestContext } from 'node:test';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { startServer } from '../../src/server/server.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import type { Attr, Vfs } from '../../src/vfs/types.js';

/** Whether a call failed with ENOENT (for assert.rejects). */
export const enoent = (e: unknown): boolean => e instanceof FsError && e.errno === Errno.ENOENT;

/** Waits until `cond` holds (pushes and replies arrive asynchronously), failing after `ms`. */
export async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 10));
  assert.ok(cond(), `timed out waiting for ${what}`);
}

export const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };

export async function twoClients(t: TestContext, vfs: Vfs): Promise<{ a: RemoteVfs; b: RemoteVfs }> {
  const server = await startServer({ vfs, host: '127.0.0.1', port: 0, log: quiet });
  t.after(() => server.close());
  const { port } = server.address();
  const a = await connect({ host: '127.0.0.1', port, log: quiet });
  const b = await connect({ host: '127.0.0.1', port, log: quiet });
  t.after(async () => {
    await a.close();
    await b.close();
  });
  return { a, b };
}

/** What `stat` shows of an Attr (size, mode, links, mtime, ctime), to compare with statShown. */
export const attrShown = (x: Attr): string => `${x.size} ${x.mode.toString(8)} ${x.nlink} ${x.mtime.sec}.${x.mtime.nsec} ${x.ctime.sec}.${x.ctime.nsec}`;

/** The same of a file on the host, as the server's source sees it. */
export function statShown(file: string): string {
  const st = fs.statSync(file, { bigint: true });
  const ts = (ns: bigint): string => `${ns / 1_000_000_000n}.${ns % 1_000_000_000n}`;
  return `${st.size} ${st.mode.toString(8)} ${st.nlink} ${ts(st.mtimeNs)} ${ts(st.ctimeNs)}`;
}
