// Cache coherence through real mounts: three clients of one server, each letting its kernel cache
// names, attributes, pages and listings for a long time (60 s). Whatever one client changes, the
// others see at their very next call, with no sleep in between: the server holds the writer's reply
// until their kernels have dropped what went stale (PUSH_ACK). Changes made by local processes on
// the server host reach the clients through inotify within a second.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fsp from 'node:fs/promises';
import { sh, tmpdir } from '../helpers/mount.js';
import { BIN, serve, mount, type Mounted } from '../helpers/wirefs.js';

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** stat -c of a path on a mount, or the error stat printed. */
async function statOf(p: string, fmt = '%s %a'): Promise<string> {
  const r = await sh(`timeout 10 stat -c '${fmt}' ${p}`);
  return r.code === 0 ? r.stdout.trim() : 'missing';
}

/** Polls `probe` until it returns `want`, for at most `ms`; returns how long that took. */
async function within(ms: number, probe: () => Promise<string>, want: string, what: string): Promise<number> {
  const t0 = Date.now();
  let got = '';
  while (Date.now() - t0 < ms) {
    got = await probe();
    if (got === want) return Date.now() - t0;
    await new Promise((r) => setTimeout(r, 50));
  }
  assert.fail(`${what}: still ${JSON.stringify(got)} after ${ms} ms, want ${JSON.stringify(want)}`);
}

async function threeClients(t: Parameters<typeof serve>[0]): Promise<{ exported: string; a: Mounted; b: Mounted; c: Mounted }> {
  const exported = await tmpdir('wirefs-coherent-');
  const server = await serve(t, exported);
  const [a, b, c] = [await mount(t, server.addr), await mount(t, server.addr), await mount(t, server.addr)];
  return { exported, a, b, c };
}

test('what one client changes, the others see at their next call', async (t) => {
  const { a, b, c } = await threeClients(t);
  await ok(`mkdir ${a.mnt}/d && echo first > ${a.mnt}/d/f`);
  // B and C list the directory, read the file and look up a name that does not exist yet: all of
  // it now sits in their kernels' caches (listing, pages, attributes, a negative entry).
  for (const m of [b, c]) {
    assert.equal(await ok(`timeout 10 ls ${m.mnt}/d`), 'f\n');
    assert.equal(await ok(`timeout 10 cat ${m.mnt}/d/f`), 'first\n');
    assert.equal(await statOf(`${m.mnt}/d/later`), 'missing');
  }

  await ok(`echo second version > ${a.mnt}/d/f`);
  for (const m of [b, c]) assert.equal(await ok(`timeout 10 cat ${m.mnt}/d/f`), 'second version\n', 'new bytes after the writer closed');

  await ok(`truncate -s 3 ${a.mnt}/d/f`);
  for (const m of [b, c]) assert.equal(await statOf(`${m.mnt}/d/f`), '3 644');
  assert.equal(await ok(`timeout 10 cat ${b.mnt}/d/f`), 'sec');

  await ok(`chmod 600 ${a.mnt}/d/f`);
  for (const m of [b, c]) assert.equal(await statOf(`${m.mnt}/d/f`), '3 600');

  await ok(`echo later > ${a.mnt}/d/later`);
  for (const m of [b, c]) {
    assert.equal(await ok(`timeout 10 cat ${m.mnt}/d/later`), 'later\n', 'a cached absence is dropped');
    assert.equal(await ok(`timeout 10 ls ${m.mnt}/d`), 'f\nlater\n', 'a cached listing is dropped');
  }

  await ok(`mv ${a.mnt}/d/f ${a.mnt}/d/g`);
  for (const m of [b, c]) {
    assert.equal(await statOf(`${m.mnt}/d/f`), 'missing');
    assert.equal(await statOf(`${m.mnt}/d/g`), '3 600');
    assert.equal(await ok(`timeout 10 ls ${m.mnt}/d`), 'g\nlater\n');
  }

  await ok(`rm ${a.mnt}/d/g`);
  for (const m of [b, c]) {
    assert.equal(await statOf(`${m.mnt}/d/g`), 'missing');
    assert.equal(await ok(`timeout 10 ls ${m.mnt}/d`), 'later\n');
  }

  // And the other way round: a change by B reaches A, which wrote before.
  await ok(`echo from-b >> ${b.mnt}/d/later`);
  assert.equal(await ok(`timeout 10 cat ${a.mnt}/d/later`), 'later\nfrom-b\n');
});

test('readers never see a mix of old and new pages', async (t) => {
  const { a, b, c } = await threeClients(t);
  const size = 4 << 20;
  const fill = (ch: string): string =>
    `python3 -c "import sys; open(sys.argv[1],'r+b' if __import__('os').path.exists(sys.argv[1]) else 'wb').write(b'${ch}'*${size})" ${a.mnt}/big`;
  // sha256 of the whole file, and whether it is made of one byte only.
  const check = `python3 -c "import sys; d=open(sys.argv[1],'rb').read(); print(len(d), len(set(d)), chr(d[0]) if d else '-')"`;
  for (const ch of 'abcdefgh') {
    await ok(fill(ch));
    for (const m of [b, c]) assert.equal((await ok(`timeout 20 ${check} ${m.mnt}/big`)).trim(), `${size} 1 ${ch}`, `round ${ch}`);
  }
});

test('a mapping sees the new data after another client writes', async (t) => {
  const { a, b } = await threeClients(t);
  await ok(`printf 'old-data' > ${a.mnt}/mapped`);
  // B maps the file and prints what the mapping holds each time it reads a line on stdin.
  const script = `import mmap, sys
f = open(sys.argv[1], 'rb')
m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
for line in sys.stdin:
    m.seek(0)
    print(m.read(8).decode(), flush=True)`;
  const child = spawn('python3', ['-c', script, `${b.mnt}/mapped`], { stdio: ['pipe', 'pipe', 'pipe'] });
  const killer = setTimeout(() => child.kill('SIGKILL'), 30000);
  t.after(() => {
    clearTimeout(killer);
    child.kill('SIGKILL');
  });
  const lines: string[] = [];
  child.stdout.setEncoding('utf8').on('data', (d: string) => lines.push(...d.split('\n').filter(Boolean)));
  const readMapping = async (): Promise<string> => {
    const n = lines.length;
    child.stdin.write('\n');
    for (let i = 0; i < 200 && lines.length === n; i++) await new Promise((r) => setTimeout(r, 25));
    assert.ok(lines.length > n, 'the mapping reader answered');
    return lines.at(-1)!;
  };
  assert.equal(await readMapping(), 'old-data');
  await ok(`printf 'NEW-DATA' > ${a.mnt}/mapped`);
  assert.equal(await readMapping(), 'NEW-DATA');
  child.stdin.end();
});

test('local changes on the server host reach clients within a second', async (t) => {
  const { exported, b, c } = await threeClients(t);
  await fsp.mkdir(`${exported}/d`);
  await fsp.writeFile(`${exported}/d/f`, 'original\n');
  for (const m of [b, c]) {
    assert.equal(await ok(`timeout 10 cat ${m.mnt}/d/f`), 'original\n');
    assert.equal(await ok(`timeout 10 ls ${m.mnt}/d`), 'f\n');
    assert.equal(await statOf(`${m.mnt}/d/new`), 'missing');
  }
  const times: number[] = [];
  // A local process edits the file in place (same inode), as an editor without backup would.
  await ok(`printf 'edited locally\\n' > ${exported}/d/f`);
  for (const m of [b, c]) times.push(await within(1000, async () => (await sh(`timeout 10 cat ${m.mnt}/d/f`)).stdout, 'edited locally\n', 'local edit'));
  await ok(`echo x > ${exported}/d/new && chmod 640 ${exported}/d/f`);
  for (const m of [b, c]) {
    times.push(await within(1000, () => statOf(`${m.mnt}/d/new`), '2 644', 'local create'));
    times.push(await within(1000, () => statOf(`${m.mnt}/d/f`), '15 640', 'local chmod'));
  }
  await ok(`mv ${exported}/d/new ${exported}/d/renamed && rm ${exported}/d/f`);
  for (const m of [b, c]) {
    times.push(await within(1000, async () => (await sh(`timeout 10 ls ${m.mnt}/d`)).stdout, 'renamed\n', 'local rename and delete'));
  }
  t.diagnostic(`local changes seen after ${times.join(', ')} ms`);
});

/** The "unlink-behind:" line of the mount's `wirefs status`: how many unlinks went behind. */
async function behindSent(mnt: string, what: 'unlink-behind' | 'create-behind' = 'unlink-behind', rmdirs?: { count: number }): Promise<number> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const line = lines.slice(head + 1).find((l) => l.includes(`${what}:`));
  const m = new RegExp(`${what}: (\\d+) sent, (\\d+) failed`).exec(line ?? '');
  assert.ok(m, `no ${what} line for ${mnt}`);
  assert.equal(m[2], '0', `nothing sent ${what} failed`);
  if (what === 'unlink-behind' && rmdirs) {
    const r = /(\d+) of the sent rmdirs/.exec(line ?? '');
    assert.ok(r, `no rmdir count for ${mnt}: ${line}`);
    rmdirs.count = Number(r[1]);
  }
  return Number(m[1]);
}

test('unlinks answered before the server ran them are never seen by another client', async (t) => {
  const { exported, a, b, c } = await threeClients(t);
  // mine: only A has seen it (A may hold it alone); shared: C has listed it (A may not).
  await ok(`mkdir ${a.mnt}/mine ${a.mnt}/shared && for i in $(seq 200); do echo $i > ${a.mnt}/mine/f$i; echo $i > ${a.mnt}/shared/f$i; done`);
  assert.equal((await ok(`timeout 10 ls ${c.mnt}/shared`)).split('\n').length, 201);
  await ok(`rm ${a.mnt}/mine/f1 ${a.mnt}/shared/f1 && sleep 0.2`); // the first unlink in each asks for a lease
  await ok(`timeout 60 rm -rf ${a.mnt}/mine/* ${a.mnt}/shared/*`);
  assert.ok(await behindSent(a.mnt) > 0, 'unlinks in the directory A holds alone went behind');
  // At once, no sleep: B and C list, look up and find nothing that A removed.
  for (const m of [b, c]) {
    for (const d of ['mine', 'shared']) {
      assert.equal(await ok(`timeout 10 ls -A ${m.mnt}/${d}`), '', `${d} is empty for the others`);
      assert.equal(await statOf(`${m.mnt}/${d}/f150`), 'missing');
    }
  }
  assert.deepEqual(await fsp.readdir(`${exported}/mine`), [], 'and on the server');
  // A sees its own directory empty too, and can fill and remove it again.
  assert.equal(await ok(`timeout 10 ls -A ${a.mnt}/mine`), '');
  await ok(`echo again > ${a.mnt}/mine/f1 && rm ${a.mnt}/mine/f1 && rmdir ${a.mnt}/mine`);
  assert.equal(await statOf(`${b.mnt}/mine`), 'missing');
});

test('a tree whose rmdirs were answered before the server ran them is gone for every client at once', async (t) => {
  const { exported, a, b, c } = await threeClients(t);
  // Files in every directory: the first unlink in each asks for its lease, so the rmdirs of the
  // emptied directories below can go behind.
  await ok(`mkdir -p ${a.mnt}/tree/d{1,2,3}/s{1,2,3} && for d in ${a.mnt}/tree ${a.mnt}/tree/d? ${a.mnt}/tree/d?/s?; do for i in $(seq 30); do echo $i > $d/f$i; done; done`);
  // B holds the top of the tree (so A holds the rest alone), C nothing.
  assert.equal(await ok(`timeout 10 ls ${b.mnt}`), 'tree\n');
  await ok(`timeout 60 rm -rf ${a.mnt}/tree`);
  const rmdirs = { count: 0 };
  assert.ok(await behindSent(a.mnt, 'unlink-behind', rmdirs) > rmdirs.count, 'unlinks went behind');
  assert.ok(rmdirs.count > 0, 'and rmdirs');
  // At once, no sleep: B (which looked at the tree) and C (which never did) find nothing.
  for (const m of [b, c]) {
    assert.equal(await statOf(`${m.mnt}/tree`), 'missing');
    assert.equal(await ok(`timeout 10 ls -A ${m.mnt}`), '');
  }
  assert.deepEqual(await fsp.readdir(exported), [], 'and on the server');
  // A can make the same tree again at once.
  await ok(`mkdir -p ${a.mnt}/tree/d1/s1 && echo x > ${a.mnt}/tree/d1/s1/f && rm -r ${a.mnt}/tree`);
  assert.deepEqual(await fsp.readdir(exported), []);
});

// Each file opened with O_EXCL, fstat-ed at once (the inode number its kernel was given by the
// create), written and closed; prints {name: st_ino}.
const CREATOR = `import os, sys, json
d, n = sys.argv[1], int(sys.argv[2]); out = {}
for i in range(n):
    fd = os.open(f"{d}/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    out[f"f{i}"] = os.fstat(fd).st_ino
    os.write(fd, f"{i}\\n".encode())
    os.close(fd)
print(json.dumps(out))`;

test('files created before the server named them are never missed by another client, and keep their inode numbers', async (t) => {
  const { exported, a, b, c } = await threeClients(t);
  await ok(`mkdir ${a.mnt}/made && echo 0 > ${a.mnt}/made/first && sleep 0.2`); // the first create asks for a lease
  const inos = JSON.parse(await ok(`timeout 120 python3 -c '${CREATOR}' ${a.mnt}/made 300`)) as Record<string, number>;
  assert.ok(await behindSent(a.mnt, 'create-behind') > 0, 'creates in the directory A holds alone went behind');
  // At once, no sleep: B and C list every name and read the bytes.
  for (const m of [b, c]) {
    assert.equal((await ok(`timeout 10 ls ${m.mnt}/made`)).trim().split('\n').length, 301);
    assert.equal(await ok(`timeout 10 cat ${m.mnt}/made/f150`), '150\n');
  }
  for (const name of ['f0', 'f150', 'f299']) {
    const ino = String((await fsp.stat(`${exported}/made/${name}`)).ino);
    assert.equal(String(inos[name]), ino, `${name}: the inode number fstat gave right after the create is the file's`);
    for (const m of [a, b]) assert.equal(await statOf(`${m.mnt}/made/${name}`, '%i'), ino);
  }
});

/** The mount's "server requests:" line of `wirefs status`, by op. */
async function serverOps(mnt: string): Promise<Record<string, number>> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const line = lines.slice(head + 1).find((l) => l.includes('server requests:')) ?? '';
  return Object.fromEntries([...line.matchAll(/(\w+) (\d+)/g)].map((m) => [m[1]!, Number(m[2])]));
}

test('git status in a repository one client holds alone asks the server nothing it must wait for; the others see its lock at once', async (t) => {
  const { exported, a, b } = await threeClients(t);
  const g = `${a.mnt}/repo`;
  await ok(`mkdir ${g} && cp -r /usr/include/linux/netfilter ${g}/ && cd ${g} && git init -q && git add -A && git -c user.email=t@e -c user.name=t commit -qm x`);
  // Warm: the first runs list the tree and take the leases of .git.
  for (let i = 0; i < 3; i++) await ok(`cd ${g} && git status --porcelain && sleep 0.2`);
  const unlinks = await behindSent(a.mnt);
  const creates = await behindSent(a.mnt, 'create-behind');
  const before = await serverOps(a.mnt);
  assert.equal(await ok(`cd ${g} && git status --porcelain`), '');
  const after = await serverOps(a.mnt);
  const asked = (op: string): number => (after[op] ?? 0) - (before[op] ?? 0);
  // .git/index.lock: looked up (O_EXCL), created, written? no: closed and removed. The lookup is
  // answered by A (A removed the name at the last run), the create and the unlink go behind; a
  // stat of .git after each change is answered by A (at most one GETATTR goes out, in the
  // background, to correct the directory's times once all landed).
  assert.equal(asked('lookup'), 0, `no lookup: ${JSON.stringify(after)}`);
  assert.ok(asked('getattr') <= 1, `at most the background correction: ${asked('getattr')} getattrs`);
  assert.equal(await behindSent(a.mnt), unlinks + 1, 'the lock was unlinked behind');
  assert.equal(await behindSent(a.mnt, 'create-behind'), creates + 1, 'and created behind');

  // B takes the lock (A's lease on .git is recalled first): A sees it at its next call.
  await ok(`touch ${b.mnt}/repo/.git/index.lock`);
  assert.equal(await statOf(`${g}/.git/index.lock`, '%s'), '0');
  const r = await sh(`cd ${g} && timeout 30 git -c user.email=t@e -c user.name=t commit -q --allow-empty -m y`);
  assert.notEqual(r.code, 0, 'git cannot take a lock another client holds');
  assert.match(r.stderr, /index\.lock/);
  await ok(`rm ${b.mnt}/repo/.git/index.lock`);
  assert.equal(await statOf(`${g}/.git/index.lock`), 'missing');
  await ok(`cd ${g} && git -c user.email=t@e -c user.name=t commit -q --allow-empty -m z`);
  // A process on the server host takes it: A sees it within a second, and its absence after.
  await ok(`cd ${g} && git status --porcelain`);
  await ok(`touch ${exported}/repo/.git/index.lock`);
  await within(1000, () => statOf(`${g}/.git/index.lock`, '%s'), '0', 'a lock made on the server host');
  await ok(`rm ${exported}/repo/.git/index.lock`);
  await within(1000, () => statOf(`${g}/.git/index.lock`), 'missing', 'a lock removed on the server host');
  assert.equal((await ok(`cd ${g} && git log --oneline | wc -l`)).trim(), '2');
});

test('a tree one client extracted is listed and removed by it without asking the server; the others see it go', async (t) => {
  const { exported, a, b } = await threeClients(t);
  // tar sets every directory's mode at the end: the kernel then looks each up again (fs/fuse/dir.c).
  await ok(`mkdir ${a.mnt}/x && tar -C /usr/include -cf - linux/netfilter | timeout 60 tar -C ${a.mnt}/x -xf -`);
  const before = await serverOps(a.mnt);
  const listed = await ok(`cd ${a.mnt}/x && timeout 30 find . -printf '%y %m %s %p\\n' | sort`);
  assert.equal(listed, await ok(`cd ${exported}/x && find . -printf '%y %m %s %p\\n' | sort`), 'the tree as the server has it');
  // The dot names carry the inode numbers stat gives.
  const [dot, dotdot] = (await ok(`timeout 10 ls -ai ${a.mnt}/x/linux`)).trim().split('\n').map((l) => l.trim().split(/\s+/));
  assert.deepEqual([dot![1], dotdot![1]], ['.', '..']);
  assert.equal(dot![0], await statOf(`${a.mnt}/x/linux`, '%i'));
  assert.equal(dotdot![0], await statOf(`${a.mnt}/x`, '%i'));
  await ok(`timeout 60 rm -rf ${a.mnt}/x`);
  const after = await serverOps(a.mnt);
  const asked = (op: string): number => (after[op] ?? 0) - (before[op] ?? 0);
  assert.deepEqual([asked('listdir'), asked('readdir'), asked('opendir'), asked('lookup')], [0, 0, 0, 0], JSON.stringify(after));
  // At once, no sleep: B finds nothing, nor does the server.
  assert.equal(await statOf(`${b.mnt}/x`), 'missing');
  assert.deepEqual(await fsp.readdir(exported), []);
});

/** The GETATTRs a mount's native reader answered from its table (fuse/native-attrs.ts). */
async function nativeGetattrs(mnt: string): Promise<number> {
  const lines = (await ok(`timeout 10 ${process.execPath} ${BIN} status`)).split('\n');
  const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
  assert.ok(head >= 0, `${mnt} not in wirefs status`);
  const line = lines.slice(head + 1).find((l) => l.includes('fuse.nativeGetattrs=')) ?? '';
  return Number(/fuse\.nativeGetattrs=(\d+)/.exec(line)?.[1]);
}

test('directory attributes answered by the native reader follow every change, ours and others\'', async (t) => {
  const { exported, a, b } = await threeClients(t);
  await ok(`mkdir ${a.mnt}/n && chmod 755 ${a.mnt}/n`);
  const before = await nativeGetattrs(a.mnt);
  // After each name made or removed in it, the kernel asks for the directory's attributes again
  // (its next permission check there): the client keeps them, and its native reader answers.
  await ok(`cd ${a.mnt}/n && for i in $(seq 60); do echo $i > f$i; done && rm f1 f2 f3`, 60000);
  const answered = (await nativeGetattrs(a.mnt)) - before;
  assert.ok(answered >= 30, `only ${answered} of about 60 GETATTRs answered by the native reader`);
  // What it answered is what the server has.
  assert.equal(await statOf(`${a.mnt}/n`, '%a %u %g %h'), await statOf(`${exported}/n`, '%a %u %g %h'));
  assert.equal((await ok(`timeout 10 ls ${a.mnt}/n | wc -l`)).trim(), '57');
  // Another client's chmod reaches A's next stat at once; a local process's within a second.
  await ok(`chmod 700 ${b.mnt}/n`);
  assert.equal(await statOf(`${a.mnt}/n`, '%a'), '700');
  await ok(`echo more > ${a.mnt}/n/g && chmod 750 ${exported}/n`);
  await within(1000, () => statOf(`${a.mnt}/n`, '%a'), '750', 'a chmod on the server host');
  // A name B makes there changes the times A shows.
  const mtime = await statOf(`${a.mnt}/n`, '%Y.%y');
  await new Promise((r) => setTimeout(r, 20));
  await ok(`touch ${b.mnt}/n/fromb`);
  assert.notEqual(await statOf(`${a.mnt}/n`, '%Y.%y'), mtime);
  assert.equal(await statOf(`${a.mnt}/n`, '%y'), await statOf(`${exported}/n`, '%y'));
});
