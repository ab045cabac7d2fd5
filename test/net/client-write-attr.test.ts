// A file's attributes with the reply to a WRITE (protocol 1.2): the `stat` after a program writes
// and closes a file is answered by the client, with the server's own attributes, and never with
// attributes older than a change. Against a real server over a passthrough directory (the host's
// stat is the truth) and a second client making changes.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { startServer } from '../../src/server/server.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import { WriteBehindVfs } from '../../src/client/writeback.js';
import { O_RDWR, ROOT_ID, S_IFREG, type Ctx } from '../../src/vfs/types.js';
import { attrShown, quiet, statShown } from '../helpers/clients.js';

const root: Ctx = { uid: 0, gid: 0, pid: 1 };

async function setup(t: TestContext): Promise<{ wb: WriteBehindVfs; a: RemoteVfs; b: RemoteVfs; dir: string }> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-writeattr-'));
  t.after(() => fsp.rm(dir, { recursive: true, force: true }));
  const server = await startServer({ vfs: new PassthroughFs(dir), host: '127.0.0.1', port: 0, log: quiet });
  t.after(() => server.close());
  const { port } = server.address();
  const a = await connect({ host: '127.0.0.1', port, log: quiet });
  const b = await connect({ host: '127.0.0.1', port, log: quiet });
  const wb = new WriteBehindVfs(a, undefined, (l) => a.onWriteAttr(l));
  t.after(async () => {
    await wb.close();
    await b.close();
  });
  return { wb, a, b, dir };
}

test('the stat after write and close is answered with the server\'s attributes, without a request', async (t) => {
  const { wb, a, dir } = await setup(t);
  for (let i = 0; i < 20; i++) {
    const c = await wb.create(root, ROOT_ID, `f${i}`, S_IFREG | 0o644, O_RDWR);
    await wb.write(root, c.entry.nodeid, c.fh, 0, Buffer.from(`file ${i}\n`));
    await wb.flush(root, c.entry.nodeid, c.fh);
    await wb.release(root, c.entry.nodeid, c.fh);
    const sent = a.stats().requests;
    const got = await wb.getattr(root, c.entry.nodeid);
    assert.equal(a.stats().requests, sent, `stat of f${i} answered here`);
    assert.equal(attrShown(got), statShown(path.join(dir, `f${i}`)), 'exactly the server\'s attributes, times included');
  }
  assert.equal(wb.stats().attrsLanded, 20);
});

test('attributes after a write are never older than a change: ours, another client\'s, or writes side by side', async (t) => {
  const { wb, b, dir } = await setup(t);
  const file = path.join(dir, 'f');
  const c = await wb.create(root, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
  const id = c.entry.nodeid;
  // Sixteen writes in flight at once (write-behind answers each at once): whichever replies carry
  // attributes, what getattr says after close is the file with all of them.
  for (let round = 0; round < 5; round++) {
    for (let k = 0; k < 16; k++) await wb.write(root, id, c.fh, (round * 16 + k) * 65536, Buffer.alloc(65536, k));
    await wb.flush(root, id, c.fh);
    // Still open and made here: its times are the client's until close (writeback.ts), its size exact.
    assert.equal((await wb.getattr(root, id)).size, fs.statSync(file).size, `round ${round}`);
  }
  await wb.release(root, id, c.fh);
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file));

  // Another client grows it, links it and chmods it: each push drops what the write told us.
  const bf = await b.lookup(root, ROOT_ID, 'f');
  const bo = await b.open(root, bf.nodeid, O_RDWR);
  await b.write(root, bf.nodeid, bo.fh, 10 << 20, Buffer.from('tail'));
  await b.release(root, bf.nodeid, bo.fh);
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file), 'after another client\'s write');
  await b.link(root, bf.nodeid, ROOT_ID, 'g');
  assert.equal((await wb.getattr(root, id)).nlink, 2, 'after another client\'s link');
  await b.setattr(root, bf.nodeid, { mode: 0o600 });
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file), 'after another client\'s chmod');

  // Our own changes after a write of ours: truncation, an unlink of the other name, a chmod.
  const o = await wb.open(root, id, O_RDWR);
  await wb.write(root, id, o.fh, 0, Buffer.from('head'));
  await wb.flush(root, id, o.fh);
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file));
  await wb.setattr(root, id, { size: 1000 });
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file), 'after our truncation');
  await wb.write(root, id, o.fh, 0, Buffer.from('again'));
  await wb.flush(root, id, o.fh);
  await wb.unlink(root, ROOT_ID, 'g');
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file), 'after our unlink of its other name');
  await wb.write(root, id, o.fh, 0, Buffer.from('more'));
  await wb.flush(root, id, o.fh);
  await wb.setattr(root, id, { mode: 0o640 });
  assert.equal(attrShown(await wb.getattr(root, id)), statShown(file), 'after our chmod');
  await wb.release(root, id, o.fh);
});
