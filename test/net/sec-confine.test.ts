// A hostile client against a passthrough export: it speaks the protocol directly (RemoteVfs, as
// root, no kernel in between) and tries to reach outside the exported tree with "..", with names
// holding "/", through symlink nodes used as directories, and after a local process on the server
// swapped a directory it holds for a symlink to the outside. Nothing outside may be read, written,
// created, removed or changed. Also: a read-only export refuses the hostile client's changes.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import fsp from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { Errno, FsError } from '../../src/lib/errno.js';
import type { Logger } from '../../src/lib/log.js';
import { PassthroughFs } from '../../src/sources/passthrough.js';
import { startServer } from '../../src/server/server.js';
import { defaultIdMap, type ExportRules } from '../../src/server/export.js';
import { connect, type RemoteVfs } from '../../src/client/client.js';
import { O_RDONLY, O_RDWR, ROOT_ID, S_IFDIR, S_IFREG, type Ctx } from '../../src/vfs/types.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };
const quiet: Logger = { debugEnabled: false, debug() {}, info() {}, warn() {}, error() {} };

interface World {
  port: number;
  exp: string;
  out: string;
  secret: string;
  client: RemoteVfs;
  /** Everything outside: names, contents and modes, to compare before and after. */
  snapshotOutside(): Promise<string>;
}

async function world(t: TestContext, rules: Partial<ExportRules> = {}): Promise<World> {
  const top = await fsp.mkdtemp(path.join(os.tmpdir(), 'wirefs-confine-'));
  t.after(() => fsp.rm(top, { recursive: true, force: true }));
  const exp = path.join(top, 'export');
  const out = path.join(top, 'outside');
  await fsp.mkdir(path.join(exp, 'd'), { recursive: true });
  await fsp.mkdir(out);
  const secret = `OUTSIDE-SECRET-${randomBytes(8).toString('hex')}`;
  await fsp.writeFile(path.join(out, 'secret'), secret, { mode: 0o644 });
  await fsp.writeFile(path.join(exp, 'd', 'secret'), 'benign');
  await fsp.symlink(out, path.join(exp, 'abs'));
  await fsp.symlink('../outside', path.join(exp, 'rel'));
  const vfs = new PassthroughFs(exp);
  const server = await startServer({
    vfs, host: '127.0.0.1', port: 0, log: quiet,
    export: { readOnly: false, idmap: { ...defaultIdMap(), rootSquash: false }, allow: undefined, ...rules },
  });
  t.after(async () => {
    await server.close();
    await vfs.close();
  });
  const client = await connect({ host: '127.0.0.1', port: server.address().port, log: quiet });
  t.after(() => client.close());
  const snapshotOutside = async (): Promise<string> => {
    const rows: string[] = [];
    for (const name of (await fsp.readdir(out)).sort()) {
      const st = await fsp.lstat(path.join(out, name));
      const body = st.isFile() ? await fsp.readFile(path.join(out, name), 'utf8') : '';
      rows.push(`${name} ${st.mode.toString(8)} ${st.uid}:${st.gid} ${st.mtimeMs} ${body}`);
    }
    return rows.join('\n');
  };
  return { port: server.address().port, exp, out, secret, client, snapshotOutside };
}

/** The call must fail (any errno); a success is an escape. */
async function refused(p: Promise<unknown>, what: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof FsError, what);
}

test('".." and names with "/" stay inside the export', async (t) => {
  const w = await world(t);
  const before = await w.snapshotOutside();
  const c = w.client;
  const rootAttr = await c.getattr(ctx, ROOT_ID);
  const up = await c.lookup(ctx, ROOT_ID, '..');
  assert.equal(up.attr.ino, rootAttr.ino, '".." of the root is the root');
  for (const name of ['../outside', '../outside/secret', '..//outside', 'd/../../outside']) {
    await refused(c.lookup(ctx, ROOT_ID, name), `lookup ${name}`);
    await refused(c.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR), `create ${name}`);
    await refused(c.mkdir(ctx, ROOT_ID, name, S_IFDIR | 0o755), `mkdir ${name}`);
    await refused(c.symlink(ctx, ROOT_ID, name, 'x'), `symlink ${name}`);
  }
  for (const name of ['..', '.']) {
    await refused(c.mkdir(ctx, ROOT_ID, name, S_IFDIR | 0o755), `mkdir ${name}`);
    await refused(c.unlink(ctx, ROOT_ID, name), `unlink ${name}`);
    await refused(c.rmdir(ctx, ROOT_ID, name), `rmdir ${name}`);
    await refused(c.rename(ctx, ROOT_ID, name, ROOT_ID, 'x', 0), `rename ${name}`);
    await refused(c.create(ctx, ROOT_ID, name, S_IFREG | 0o644, O_RDWR), `create ${name}`);
  }
  const d = await c.lookup(ctx, ROOT_ID, 'd');
  for (let i = 0; i < 5; i++) {
    const dd = await c.lookup(ctx, d.nodeid, '..');
    assert.equal(dd.nodeid, ROOT_ID);
    const top = await c.lookup(ctx, dd.nodeid, '..');
    assert.equal(top.nodeid, ROOT_ID);
  }
  assert.equal(await w.snapshotOutside(), before);
});

test('symlink nodes are returned, never followed by the server', async (t) => {
  const w = await world(t);
  const before = await w.snapshotOutside();
  const c = w.client;
  for (const name of ['abs', 'rel']) {
    const l = await c.lookup(ctx, ROOT_ID, name);
    assert.equal(await c.readlink(ctx, l.nodeid), name === 'abs' ? w.out : '../outside');
    // The symlink node used as a directory: the server must not resolve through it.
    await refused(c.lookup(ctx, l.nodeid, 'secret'), `lookup ${name}/secret`);
    await refused(c.create(ctx, l.nodeid, 'pwned', S_IFREG | 0o644, O_RDWR), `create ${name}/pwned`);
    await refused(c.mkdir(ctx, l.nodeid, 'pwned', S_IFDIR | 0o755), `mkdir ${name}/pwned`);
    await refused(c.symlink(ctx, l.nodeid, 'pwned', 'x'), `symlink in ${name}`);
    await refused(c.unlink(ctx, l.nodeid, 'secret'), `unlink ${name}/secret`);
    await refused(c.rename(ctx, l.nodeid, 'secret', ROOT_ID, 'stolen', 0), `rename ${name}/secret`);
    await refused(c.opendir(ctx, l.nodeid), `opendir ${name}`);
    await refused(c.open(ctx, l.nodeid, O_RDONLY), `open ${name}`);
    await refused(c.setattr(ctx, l.nodeid, { mode: 0o777 }), `chmod ${name}`);
    await refused(c.setattr(ctx, l.nodeid, { size: 0 }), `truncate ${name}`);
  }
  assert.equal(await w.snapshotOutside(), before);
});

test('a directory swapped for a symlink to the outside on the server is not followed', async (t) => {
  const w = await world(t);
  const before = await w.snapshotOutside();
  const c = w.client;
  const d = await c.lookup(ctx, ROOT_ID, 'd');
  const inner = await c.lookup(ctx, d.nodeid, 'secret');
  // A local process on the server swaps the directory the client holds for a symlink outside.
  await fsp.rename(path.join(w.exp, 'd'), path.join(w.exp, 'd.real'));
  await fsp.symlink(w.out, path.join(w.exp, 'd'));
  const reads: string[] = [];
  const attempts: Array<[string, () => Promise<unknown>]> = [
    ['open+read d/secret', async () => {
      const h = await c.open(ctx, inner.nodeid, O_RDONLY);
      reads.push((await c.read(ctx, inner.nodeid, h.fh, 0, 4096)).toString());
    }],
    ['getattr d/secret', () => c.getattr(ctx, inner.nodeid)],
    ['lookup d/secret', () => c.lookup(ctx, d.nodeid, 'secret')],
    ['opendir d', () => c.opendir(ctx, d.nodeid)],
    ['create d/new', () => c.create(ctx, d.nodeid, 'new', S_IFREG | 0o644, O_RDWR)],
    ['mkdir d/newdir', () => c.mkdir(ctx, d.nodeid, 'newdir', S_IFDIR | 0o755)],
    ['chmod d/secret', () => c.setattr(ctx, inner.nodeid, { mode: 0o666 })],
    ['chown d/secret', () => c.setattr(ctx, inner.nodeid, { uid: 4242 })],
    ['truncate d/secret', () => c.setattr(ctx, inner.nodeid, { size: 0 })],
    ['utimes d/secret', () => c.setattr(ctx, inner.nodeid, { mtime: { sec: 1, nsec: 0 } })],
    ['unlink d/secret', () => c.unlink(ctx, d.nodeid, 'secret')],
    ['rename d/secret', () => c.rename(ctx, d.nodeid, 'secret', ROOT_ID, 'stolen', 0)],
    ['link d/secret', () => c.link(ctx, inner.nodeid, ROOT_ID, 'hard')],
    ['setxattr d/secret', () => c.setxattr(ctx, inner.nodeid, 'user.pwn', Buffer.from('1'), 0)],
    ['getxattr d/secret', () => c.getxattr(ctx, inner.nodeid, 'user.x')],
    ['readlink d/secret', () => c.readlink(ctx, inner.nodeid)],
  ];
  for (const [what, call] of attempts) await refused(call(), what);
  assert.deepEqual(reads, []);
  assert.equal(await w.snapshotOutside(), before);
  await assert.rejects(fsp.access(path.join(w.exp, 'stolen')));
  await assert.rejects(fsp.access(path.join(w.exp, 'hard')));
});

test('a client cannot use node ids it was never handed', async (t) => {
  const w = await world(t);
  const d = await w.client.lookup(ctx, ROOT_ID, 'd');
  const f = await w.client.lookup(ctx, d.nodeid, 'secret');
  const other = await connect({ host: '127.0.0.1', port: w.port, log: quiet });
  t.after(() => other.close());
  for (const [what, call] of [
    ['getattr', () => other.getattr(ctx, f.nodeid)],
    ['open', () => other.open(ctx, f.nodeid, O_RDONLY)],
    ['lookup under', () => other.lookup(ctx, d.nodeid, 'secret')],
    ['create under', () => other.create(ctx, d.nodeid, 'x', S_IFREG | 0o644, O_RDWR)],
    ['rename into', () => other.rename(ctx, ROOT_ID, 'abs', d.nodeid, 'moved', 0)],
  ] as Array<[string, () => Promise<unknown>]>) {
    await assert.rejects(call(), (err: unknown) => err instanceof FsError && err.errno === Errno.ESTALE, what);
  }
  // Once it looks them up itself, the same ids work.
  const d2 = await other.lookup(ctx, ROOT_ID, 'd');
  assert.equal(d2.nodeid, d.nodeid);
  assert.equal((await other.lookup(ctx, d2.nodeid, 'secret')).nodeid, f.nodeid);
  await other.getattr(ctx, f.nodeid);
});

test('a read-only export refuses a hostile client\'s changes on the server', async (t) => {
  const w = await world(t, { readOnly: true });
  const c = w.client;
  assert.equal(c.info().readOnly, true);
  const d = await c.lookup(ctx, ROOT_ID, 'd');
  const f = await c.lookup(ctx, d.nodeid, 'secret');
  const h = await c.open(ctx, f.nodeid, O_RDONLY);
  const erofs = async (p: Promise<unknown>, what: string): Promise<void> => {
    await assert.rejects(p, (err: unknown) => err instanceof FsError && err.errno === Errno.EROFS, what);
  };
  await erofs(c.create(ctx, d.nodeid, 'n', S_IFREG | 0o644, O_RDWR), 'create');
  await erofs(c.open(ctx, f.nodeid, O_RDWR), 'open rw');
  await erofs(c.write(ctx, f.nodeid, h.fh, 0, Buffer.from('x')), 'write');
  await erofs(c.setattr(ctx, f.nodeid, { size: 0 }), 'truncate');
  await erofs(c.unlink(ctx, d.nodeid, 'secret'), 'unlink');
  await erofs(c.mkdir(ctx, d.nodeid, 'x', S_IFDIR | 0o755), 'mkdir');
  await erofs(c.fallocate(ctx, f.nodeid, h.fh, 0, 0, 100), 'fallocate');
  assert.equal(await fsp.readFile(path.join(w.exp, 'd', 'secret'), 'utf8'), 'benign');
  assert.deepEqual(await fsp.readdir(path.join(w.exp, 'd')), ['secret']);
});
