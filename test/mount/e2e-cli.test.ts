// The user's path through the CLI: serve, mount (daemon and helper), the mount line, status,
// umount, several clients, what NFS cannot export, and the clear failures the core issue asks for.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import net from 'node:net';
import { sh, tmpdir, isMounted, teardownMount } from '../helpers/mount.js';
import { serve, mount, BIN } from '../helpers/wirefs.js';

const wirefs = `${process.execPath} ${BIN}`;

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

test('wirefs mount as a daemon, the mount line, status, umount', async (t) => {
  const exported = await tmpdir('wirefs-export-');
  await ok(`echo hello > ${exported}/greeting`);
  const server = await serve(t, exported);
  const mnt = await tmpdir('wirefs-mnt-');
  t.after(() => teardownMount(mnt));
  await ok(`${wirefs} mount ${server.addr} ${mnt}`);
  assert.ok(await isMounted(mnt));
  const line = (await ok('mount')).split('\n').find((l) => l.includes(` on ${mnt} `));
  assert.match(line ?? '', new RegExp(`^${server.addr} on ${mnt} type fuse\\.(ext4|tmpfs|xfs|btrfs|overlay|passthrough)`));
  assert.equal(await ok(`timeout 10 cat ${mnt}/greeting`), 'hello\n');
  const status = await ok(`${wirefs} status`);
  assert.match(status, new RegExp(`${mnt}\\s+${server.addr}`));
  // A second read-only open is answered by the client; with the kernel's pages dropped, its read
  // opens the file on the server then.
  await ok('echo 1 > /proc/sys/vm/drop_caches');
  assert.equal(await ok(`timeout 10 cat ${mnt}/greeting`), 'hello\n');
  assert.match(await ok(`${wirefs} status`), /answered here: \d+ lookups, \d+ getattrs, 1 opens/);
  // An ioctl (Python asks TCGETS of every file it opens): ENOTTY, answered by the native reader
  // (no ioctl is implemented) and still counted by operation.
  const ioctls = async (): Promise<[number, number]> => {
    // This mount's lines only (another wirefs mount on the machine has its own).
    const lines = (await ok(`${wirefs} status`)).split('\n');
    const head = lines.findIndex((l) => l.startsWith(`${mnt}  `));
    const next = lines.findIndex((l, i) => i > head && /^\S/.test(l));
    const st = lines.slice(head, next < 0 ? undefined : next).join('\n');
    // (The native reader answers some GETATTRs too, counted apart.)
    return [Number(/kernel requests: .*\bIOCTL (\d+)/.exec(st)?.[1] ?? 0), Number(/fuse\.nativeAnswered=(\d+)/.exec(st)?.[1]) - Number(/fuse\.nativeGetattrs=(\d+)/.exec(st)?.[1])];
  };
  const [before, nativeBefore] = await ioctls();
  const tty = `import fcntl, termios, errno, os
fd = os.open("${mnt}/greeting", os.O_RDONLY)
assert not os.isatty(fd)
try: fcntl.ioctl(fd, termios.TCGETS, bytes(64))
except OSError as e: print(errno.errorcode[e.errno])`;
  assert.equal(await ok(`timeout 10 python3 -c '${tty}'`), 'ENOTTY\n');
  assert.deepEqual(await ioctls(), [before + 2, nativeBefore + 2], 'both ioctls reached the mount and were answered by the native reader');

  // busy: a process sits inside the mount
  const busy = await sh(`cd ${mnt} && ${wirefs} umount ${mnt}`, { timeoutMs: 15000 });
  assert.notEqual(busy.code, 0);
  assert.match(busy.stderr, /busy/);
  assert.equal(busy.stderr.trim().split('\n').length, 1, busy.stderr);

  await ok(`${wirefs} umount ${mnt}`);
  assert.equal(await isMounted(mnt), false);
});

test('the mount(8) helper', async (t) => {
  const server = await serve(t, 'mem:');
  const dir = await tmpdir('wirefs-helper-');
  await ok(`${wirefs} install-helper --prefix ${dir}`);
  const mnt = await tmpdir('wirefs-mnt-');
  t.after(() => teardownMount(mnt));
  // exactly how mount(8) calls a helper: mount.TYPE SPEC DIR [-sfnv] [-o OPTIONS]
  await ok(`${dir}/mount.wirefs ${server.addr} ${mnt} -o rw,_netdev`);
  const line = (await ok('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === mnt);
  assert.match(line ?? '', new RegExp(`^${server.addr} ${mnt} fuse\\.mem `));
  await ok(`${wirefs} umount ${mnt}`);
});

test('two clients of one server see each other', async (t) => {
  const exported = await tmpdir('wirefs-export-');
  const server = await serve(t, exported);
  const a = await mount(t, server.addr);
  const b = await mount(t, server.addr);
  await ok(`timeout 10 ls ${b.mnt}`); // B has listed (and cached) the directory
  await ok(`echo one > ${a.mnt}/f && mkdir ${a.mnt}/d`);
  assert.equal(await ok(`timeout 10 cat ${b.mnt}/f`), 'one\n');
  assert.match(await ok(`timeout 10 ls ${b.mnt}`), /d\nf/);
  await ok(`echo two-two > ${a.mnt}/f`);
  assert.equal(await ok(`timeout 10 cat ${b.mnt}/f`), 'two-two\n');
  await ok(`mv ${a.mnt}/f ${a.mnt}/d/g`);
  assert.equal(await ok(`timeout 10 cat ${b.mnt}/d/g`), 'two-two\n');
  assert.notEqual((await sh(`timeout 10 stat ${b.mnt}/f`)).code, 0);
  await ok(`rm ${b.mnt}/d/g && rmdir ${b.mnt}/d`);
  assert.equal((await ok(`timeout 10 ls -A ${a.mnt}`)).trim(), '');
});

test('exports what NFS cannot: tmpfs, several devices, /proc', async (t) => {
  const exported = await tmpdir('wirefs-multi-');
  await ok(`mkdir ${exported}/tmp1 ${exported}/tmp2 && mount -t tmpfs none ${exported}/tmp1 && mount -t tmpfs none ${exported}/tmp2`);
  t.after(async () => {
    await sh(`umount -l ${exported}/tmp1; umount -l ${exported}/tmp2`);
  });
  await ok(`echo a > ${exported}/tmp1/a && echo b > ${exported}/tmp2/b && echo c > ${exported}/c`);
  const server = await serve(t, exported);
  const { mnt } = await mount(t, server.addr);
  assert.equal(await ok(`timeout 10 cat ${mnt}/tmp1/a ${mnt}/tmp2/b ${mnt}/c`), 'a\nb\nc\n');
  // inode numbers stay unique across the three file systems (each tmpfs numbers from the same start)
  const inos = (await ok(`timeout 10 find ${mnt} -printf '%i\\n'`)).trim().split('\n');
  assert.equal(new Set(inos).size, inos.length, `duplicate inode numbers: ${inos.join(' ')}`);
  await ok(`echo written > ${mnt}/tmp2/new`);
  assert.equal(await ok(`cat ${exported}/tmp2/new`), 'written\n');

  const shm = await fsp.mkdtemp('/dev/shm/wirefs-shm-');
  t.after(() => fsp.rm(shm, { recursive: true, force: true }));
  await ok(`echo in-ram > ${shm}/r`);
  const s2 = await serve(t, shm);
  const m2 = await mount(t, s2.addr);
  assert.equal(await ok(`timeout 10 cat ${m2.mnt}/r`), 'in-ram\n');
  assert.match((await ok('cat /proc/mounts')).split('\n').find((l) => l.split(' ')[1] === m2.mnt) ?? '', / fuse\.tmpfs /);

  const s3 = await serve(t, '/proc');
  const m3 = await mount(t, s3.addr);
  const status = await ok(`timeout 10 cat ${m3.mnt}/${s3.pid}/status`);
  assert.match(status, new RegExp(`^Pid:\\s+${s3.pid}$`, 'm'));
  assert.match(await ok(`timeout 10 cat ${m3.mnt}/version`), /^Linux version/);
});

test('clear failures: unreachable or not wirefs, and no mount left behind', async (t) => {
  const mnt = await tmpdir('wirefs-mnt-');
  t.after(() => teardownMount(mnt));

  // a closed port
  const closed = net.createServer();
  await new Promise<void>((r) => closed.listen(0, '127.0.0.1', r));
  const port = (closed.address() as net.AddressInfo).port;
  await new Promise((r) => closed.close(r));
  const t0 = Date.now();
  const r1 = await sh(`${wirefs} mount 127.0.0.1:${port} ${mnt}`, { timeoutMs: 20000 });
  assert.notEqual(r1.code, 0);
  assert.match(r1.stderr, /refused/);
  assert.equal(r1.stderr.trim().split('\n').length, 1, r1.stderr);
  assert.ok(Date.now() - t0 < 10000);
  assert.equal(await isMounted(mnt), false);

  // something that is not wirefs (an SSH-like banner)
  const conns = new Set<net.Socket>();
  const fake = net.createServer((c) => {
    conns.add(c);
    c.on('error', () => {});
    c.end('SSH-2.0-OpenSSH_9.2\r\n');
  });
  await new Promise<void>((r) => fake.listen(0, '127.0.0.1', r));
  t.after(() => {
    for (const c of conns) c.destroy();
    fake.close();
  });
  const r2 = await sh(`${wirefs} mount 127.0.0.1:${(fake.address() as net.AddressInfo).port} ${mnt}`, { timeoutMs: 20000 });
  assert.notEqual(r2.code, 0);
  assert.equal(r2.stderr.trim().split('\n').length, 1, r2.stderr);
  assert.match(r2.stderr, /not a wirefs server/);
  assert.equal(await isMounted(mnt), false);
});

test('clear failures: serving a missing path or an unknown type', async () => {
  const r3 = await sh(`${wirefs} serve -p 0 --bind 127.0.0.1 /nonexistent/path`, { timeoutMs: 15000 });
  assert.notEqual(r3.code, 0);
  assert.match(r3.stderr, /nonexistent/);
  assert.equal(r3.stderr.trim().split('\n').length, 1, r3.stderr);
  const r4 = await sh(`${wirefs} serve -p 0 --bind 127.0.0.1 bogus:thing`, { timeoutMs: 15000 });
  assert.notEqual(r4.code, 0);
  assert.match(r4.stderr, /unknown source type "bogus".*passthrough/);
});

test('when the server dies, operations fail after the mount timeout instead of hanging', async (t) => {
  const server = await serve(t, 'mem:');
  // The mount rides out outages up to its timeout (default 60 s); this one gives up after 3 s.
  const m = await mount(t, server.addr, { options: 'timeout=3' });
  await ok(`echo x > ${m.mnt}/f`);
  process.kill(server.pid, 'SIGKILL');
  // served from the kernel's cache or an error from the file system: never the timeout (124)
  const r5 = await sh(`timeout 30 cat ${m.mnt}/f; echo rc=$?`, { timeoutMs: 40000 });
  assert.doesNotMatch(r5.stdout, /rc=124/);
  const r6 = await sh(`timeout 30 touch ${m.mnt}/g; echo rc=$?`, { timeoutMs: 40000 });
  assert.match(r6.stdout, /rc=1\b/);
  assert.match(r6.stdout + r6.stderr, /Input\/output error/);
});

test('a mount whose server is gone unmounts at once, without waiting out the outage', async (t) => {
  const server = await serve(t, 'mem:');
  const m = await mount(t, server.addr); // the default timeout: 60 s
  await ok(`echo x > ${m.mnt}/f`);
  const df = (await ok(`timeout 10 df -k --output=size ${m.mnt}`)).trim().split('\n')[1];
  await server.stop();
  // umount(8) asks a STATFS first: answered as before, from what the client kept.
  assert.equal((await ok(`timeout 10 df -k --output=size ${m.mnt}`)).trim().split('\n')[1], df);
  const t0 = Date.now();
  await ok(`timeout 20 umount ${m.mnt}`);
  assert.ok(Date.now() - t0 < 5000, `umount took ${Date.now() - t0} ms`);
  assert.equal(await isMounted(m.mnt), false);
});
