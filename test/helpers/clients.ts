// Two clients of one in-process server on loopback, closed (clients first) when the test ends:
// the shape of the network tests that check what one client sees of another's changes.

import fs from 'node:fs';
import type { TestContext } from 'node:test';
import type { Logger } from '../../src/lib/log.js';
import { startServer } from '../../src/server/server.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import type { Attr, Vfs } from '../../src/vfs/types.js';

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
