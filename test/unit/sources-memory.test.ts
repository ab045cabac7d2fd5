// MemoryFs specifics beyond the shared POSIX table: space accounting and ENOSPC, sparse chunks and
// SEEK_DATA/SEEK_HOLE over real holes, node lifetime, and a model check of random writes/truncates.

import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { MemoryFs } from '../../src/sources/memory.js';
import { O_RDWR, ROOT_ID, SEEK_DATA, SEEK_HOLE, S_IFREG, type Ctx } from '../../src/vfs/types.js';
import { rejectsWith } from '../conformance/posix-cases.js';

const ctx: Ctx = { uid: 0, gid: 0, pid: 1 };

void describe('MemoryFs', () => {
  void it('fails with ENOSPC past maxBytes and frees space on unlink', async () => {
    const fs = new MemoryFs({ maxBytes: 256 * 1024 });
    const c = await fs.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
    await fs.write(ctx, c.entry.nodeid, c.fh, 0, Buffer.alloc(200 * 1024, 1));
    await rejectsWith(fs.write(ctx, c.entry.nodeid, c.fh, 200 * 1024, Buffer.alloc(100 * 1024, 1)), 'ENOSPC');
    assert.equal((await fs.getattr(ctx, c.entry.nodeid)).size, 200 * 1024, 'a failed write changes nothing');
    await rejectsWith(fs.fallocate(ctx, c.entry.nodeid, c.fh, 0, 0, 1024 * 1024), 'ENOSPC');
    const before = await fs.statfs(ctx, ROOT_ID);
    await fs.release(ctx, c.entry.nodeid, c.fh);
    await fs.unlink(ctx, ROOT_ID, 'f');
    fs.forget(c.entry.nodeid, 1);
    const after = await fs.statfs(ctx, ROOT_ID);
    assert.equal(after.bfree, after.blocks);
    assert.ok(after.bfree > before.bfree);
  });

  void it('keeps holes sparse and seeks over them', async () => {
    const fs = new MemoryFs();
    const c = await fs.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
    const id = c.entry.nodeid;
    const MiB = 1024 * 1024;
    await fs.write(ctx, id, c.fh, 0, Buffer.from('head'));
    await fs.write(ctx, id, c.fh, 10 * MiB, Buffer.from('tail'));
    const a = await fs.getattr(ctx, id);
    assert.equal(a.size, 10 * MiB + 4);
    assert.ok(a.blocks * 512 < 256 * 1024, `a 10 MiB sparse file uses ${a.blocks * 512} bytes`);
    const hole = await fs.lseek(ctx, id, c.fh, 0, SEEK_HOLE);
    assert.ok(hole >= 4 && hole < 10 * MiB);
    assert.equal(await fs.lseek(ctx, id, c.fh, hole, SEEK_DATA), 10 * MiB);
    assert.equal(await fs.lseek(ctx, id, c.fh, 10 * MiB, SEEK_HOLE), 10 * MiB + 4);
    await fs.fallocate(ctx, id, c.fh, 3, 10 * MiB, 64 * 1024); // the tail chunk, freed
    await rejectsWith(fs.lseek(ctx, id, c.fh, 5 * MiB, SEEK_DATA), 'ENXIO');
    await fs.release(ctx, id, c.fh);
  });

  void it('drops a node after its last name, lookup and handle go', async () => {
    const fs = new MemoryFs();
    const e = await fs.mkdir(ctx, ROOT_ID, 'd', 0o755);
    const o = await fs.opendir(ctx, e.nodeid);
    await fs.rmdir(ctx, ROOT_ID, 'd');
    fs.forget(e.nodeid, 1);
    assert.equal((await fs.getattr(ctx, e.nodeid)).nlink, 0, 'an open directory handle keeps it');
    await rejectsWith(fs.mkdir(ctx, e.nodeid, 'x', 0o755), 'ENOENT');
    await fs.releasedir(ctx, e.nodeid, o.fh);
    await rejectsWith(fs.getattr(ctx, e.nodeid), 'ESTALE');
    await fs.getattr(ctx, ROOT_ID);
    fs.forget(ROOT_ID, 100);
    await fs.getattr(ctx, ROOT_ID);
  });

  void it('gives set-group-ID directories their group to new nodes', async () => {
    const fs = new MemoryFs();
    const d = await fs.mkdir({ ...ctx, gid: 77 }, ROOT_ID, 'shared', 0o2775);
    const f = await fs.mknod({ ...ctx, uid: 5, gid: 5 }, d.nodeid, 'f', S_IFREG | 0o644, 0);
    const sub = await fs.mkdir({ ...ctx, uid: 5, gid: 5 }, d.nodeid, 'sub', 0o755);
    assert.equal(f.attr.gid, 77);
    assert.equal(sub.attr.gid, 77);
    assert.equal(sub.attr.mode & 0o2000, 0o2000);
  });

  void it('matches a flat buffer model under random writes, truncates and punches', async () => {
    const op = fc.oneof(
      fc.record({ k: fc.constant('w' as const), off: fc.nat(300_000), len: fc.integer({ min: 1, max: 70_000 }), b: fc.integer({ min: 1, max: 255 }) }),
      fc.record({ k: fc.constant('t' as const), size: fc.nat(300_000) }),
      fc.record({ k: fc.constant('p' as const), off: fc.nat(300_000), len: fc.integer({ min: 1, max: 140_000 }) }),
    );
    await fc.assert(
      fc.asyncProperty(fc.array(op, { maxLength: 25 }), async (ops) => {
        const fs = new MemoryFs();
        const c = await fs.create(ctx, ROOT_ID, 'f', S_IFREG | 0o644, O_RDWR);
        const id = c.entry.nodeid;
        let model = Buffer.alloc(0);
        for (const o of ops) {
          if (o.k === 'w') {
            const end = o.off + o.len;
            if (end > model.length) model = Buffer.concat([model, Buffer.alloc(end - model.length)]);
            model.fill(o.b, o.off, end);
            await fs.write(ctx, id, c.fh, o.off, Buffer.alloc(o.len, o.b));
          } else if (o.k === 't') {
            model = o.size <= model.length ? Buffer.from(model.subarray(0, o.size)) : Buffer.concat([model, Buffer.alloc(o.size - model.length)]);
            await fs.setattr(ctx, id, { size: o.size });
          } else {
            model.fill(0, Math.min(o.off, model.length), Math.min(o.off + o.len, model.length));
            await fs.fallocate(ctx, id, c.fh, 3, o.off, o.len);
          }
        }
        assert.equal((await fs.getattr(ctx, id)).size, model.length);
        assert.ok((await fs.read(ctx, id, c.fh, 0, model.length + 10)).equals(model));
      }),
      { numRuns: 60 },
    );
  });
});
