// A real mount under a real workload while the network and the server fail: tar extracting into the
// mount, fio writing with crc32c verification, and a writer that fsyncs each record and logs (outside
// the mount) what was confirmed. Three faults: (a) the connection cut at random moments, many times;
// (b) all traffic blackholed for 30 s with default mount options; (c) the server killed with SIGKILL
// mid-workload and started again on the same port and directory. Each time the workload must
// finish, fio must verify, `diff -r` against a local extraction must be clean and every confirmed
// record must be in the file. Each test prints how many faults it injected. Last, one 1 GiB write()
// and read() through the mount, with the server's peak memory checked.

import { test, type TestContext } from 'node:test';
import assert from 'node:assert/strict';
import fsp from 'node:fs/promises';
import path from 'node:path';
import { sh, tmpdir, quote } from '../helpers/mount.js';
import { serve, mount, BIN, FIXTURES, type Served } from '../helpers/wirefs.js';
import { startProxy } from '../helpers/proxy.js';

const WRITER = path.join(FIXTURES, 'confirmed_writer.py');
const wirefs = `${process.execPath} ${BIN}`;

async function ok(cmd: string, timeoutMs = 180_000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr.slice(-2000)}\n${r.stdout.slice(-2000)}`);
  return r.stdout;
}

/** A tar of real headers, and its extraction on local disk as the expected tree. */
async function fixtures(t: TestContext, dirs = 'linux asm-generic'): Promise<{ tar: string; expected: string; work: string }> {
  const work = await tmpdir('wirefs-faults-');
  t.after(() => fsp.rm(work, { recursive: true, force: true }));
  const tar = path.join(work, 'src.tar');
  await ok(`tar -C /usr/include -cf ${tar} ${dirs}`);
  await ok(`mkdir ${work}/expected && tar -C ${work}/expected -xf ${tar}`);
  return { tar, expected: path.join(work, 'expected'), work };
}

/**
 * The workload: tar, fio with verification and the confirming writer, all at once, on the mount.
 * Resolves when all three are done; fails the test if any fails.
 */
async function workload(mnt: string, fx: { tar: string; expected: string; work: string }, records: number, delayS: number): Promise<void> {
  const log = path.join(fx.work, 'confirmed.log');
  await fsp.rm(log, { force: true });
  await Promise.all([
    ok(`mkdir -p ${mnt}/tar && tar -C ${mnt}/tar -xf ${fx.tar}`),
    ok(`mkdir -p ${mnt}/fio && fio --name=v --directory=${mnt}/fio --rw=randwrite --bs=4k --size=4m --ioengine=psync ` +
      `--verify=crc32c --do_verify=1 --verify_fatal=1 --verify_state_save=0 --numjobs=2 --output-format=terse`),
    ok(`python3 ${WRITER} ${mnt}/records ${log} ${records} ${delayS}`),
  ]);
}

/** What must hold after every fault: the tree, and every confirmed record, on the mount and on disk. */
async function verify(mnt: string, exported: string, fx: { expected: string; work: string }): Promise<number> {
  await ok(`diff -r ${fx.expected} ${mnt}/tar`);
  await ok(`diff -r ${fx.expected} ${exported}/tar`);
  const confirmed = (await fsp.readFile(path.join(fx.work, 'confirmed.log'), 'utf8')).split('\n').filter(Boolean).map(Number);
  for (const where of [`${mnt}/records`, `${exported}/records`]) {
    const present = new Set((await ok(`python3 ${WRITER} --check ${quote(where)}`)).split('\n').filter(Boolean).map(Number));
    const missing = confirmed.filter((i) => !present.has(i));
    assert.deepEqual(missing, [], `confirmed records missing from ${where}`);
  }
  return confirmed.length;
}

async function cleanup(mnt: string): Promise<void> {
  await ok(`rm -rf ${mnt}/tar ${mnt}/fio ${mnt}/records`);
}

test('(a) the connection cut at random moments, many times', { timeout: 300_000 }, async (t) => {
  const fx = await fixtures(t);
  const exported = await tmpdir('wirefs-export-');
  const server = await serve(t, exported);
  const proxy = await startProxy({ host: server.host, port: server.port });
  t.after(() => proxy.close());
  const { mnt } = await mount(t, `127.0.0.1:${proxy.port}`);
  const started = Date.now();
  // Every 0.1-0.6 s: the workload takes some 8 s here, and at least 10 cuts must land in it.
  const stop = proxy.cutRandomly(100, 600);
  try {
    await workload(mnt, fx, 300, 0.02);
  } finally {
    const cuts = stop();
    console.log(`# (a) ${cuts} connection cuts injected in ${((Date.now() - started) / 1000).toFixed(1)} s of workload`);
    assert.ok(cuts >= 10, `only ${cuts} cuts: the workload ended too soon to test anything`);
  }
  const records = await verify(mnt, exported, fx);
  const status = await ok(`${wirefs} status`);
  const mine = status.split(/\n(?=\/)/).find((b) => b.startsWith(mnt + ' ')) ?? '';
  console.log(`# (a) ${records} confirmed records intact; status:\n# ${mine.replace(/\n/g, '\n# ')}`);
  assert.match(mine, /connection: open; [1-9]\d* reconnects \(0 to a restarted server\)/);
  await cleanup(mnt);
});

test('(b) a 30 s blackhole is ridden out with default mount options', { timeout: 300_000 }, async (t) => {
  // A lighter workload: the point is the 30 s without a network, not the volume.
  const fx = await fixtures(t, 'linux/netfilter linux/usb asm-generic');
  const exported = await tmpdir('wirefs-export-');
  const server = await serve(t, exported);
  const proxy = await startProxy({ host: server.host, port: server.port });
  t.after(() => proxy.close());
  const { mnt } = await mount(t, `127.0.0.1:${proxy.port}`);
  let holeMs = 0;
  const faults = (async () => {
    await new Promise((r) => setTimeout(r, 1000));
    proxy.blackhole(true);
    const from = Date.now();
    await new Promise((r) => setTimeout(r, 30_000));
    proxy.blackhole(false);
    holeMs = Date.now() - from;
  })();
  const started = Date.now();
  // The writer paces itself so it is still writing when the hole opens and after it closes.
  await workload(mnt, fx, 120, 0.05);
  await faults;
  const took = (Date.now() - started) / 1000;
  console.log(`# (b) 1 blackhole of ${(holeMs / 1000).toFixed(1)} s injected; workload finished after ${took.toFixed(1)} s`);
  assert.ok(took > 30, 'the workload spanned the blackhole');
  const records = await verify(mnt, exported, fx);
  console.log(`# (b) ${records} confirmed records intact`);
  await cleanup(mnt);
});

test('(c) the server killed with SIGKILL mid-workload and restarted on the same port', { timeout: 300_000 }, async (t) => {
  const fx = await fixtures(t);
  const exported = await tmpdir('wirefs-export-');
  let server: Served = await serve(t, exported);
  const { mnt } = await mount(t, server.addr);
  let kills = 0;
  let running = true;
  const work = workload(mnt, fx, 300, 0.03).finally(() => (running = false));
  // Kill it twice while the workload runs: once early, once when the first restart has settled.
  for (const at of [2000, 4000]) {
    await new Promise((r) => setTimeout(r, at));
    if (!running) break;
    process.kill(server.pid, 'SIGKILL');
    kills++;
    await new Promise((r) => setTimeout(r, 1000));
    server = await serve(t, exported, ['-p', String(server.port)]);
  }
  await work;
  console.log(`# (c) ${kills} SIGKILLs of the server injected, each restarted after 1 s`);
  assert.ok(kills >= 1, 'the workload ended before the server could be killed');
  const records = await verify(mnt, exported, fx);
  const status = await ok(`${wirefs} status`);
  const mine = status.split(/\n(?=\/)/).find((b) => b.startsWith(mnt + ' ')) ?? '';
  console.log(`# (c) ${records} confirmed records intact; status:\n# ${mine.replace(/\n/g, '\n# ')}`);
  assert.match(mine, new RegExp(`\\(${kills} to a restarted server\\)`));
  await cleanup(mnt);
});

test('one 1 GiB write() and read() on the mount; the server memory stays bounded', { timeout: 300_000 }, async (t) => {
  const exported = await tmpdir('wirefs-export-');
  t.after(() => fsp.rm(exported, { recursive: true, force: true }));
  const server = await serve(t, exported);
  const { mnt } = await mount(t, server.addr);
  const script = [
    'import hashlib, os, sys, time',
    'p = sys.argv[1]',
    'data = b"".join(i.to_bytes(8, "little") + os.urandom((1 << 20) - 8) for i in range(1024))',
    'fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)',
    't0 = time.time(); n = os.write(fd, data); os.fsync(fd); os.close(fd); tw = time.time() - t0',
    'fd = os.open(p, os.O_RDONLY)',
    't0 = time.time(); got = bytearray()',
    'while len(got) < len(data):',
    '    b = os.read(fd, len(data) - len(got))',
    '    if not b: break',
    '    got += b',
    'tr = time.time() - t0; os.close(fd)',
    'print(n, len(got), got == data, "%.1f %.1f" % (tw, tr))',
  ].join('\n');
  const out = (await ok(`python3 -c ${quote(script)} ${mnt}/huge`, 240_000)).trim().split(' ');
  const hwm = /VmHWM:\s+(\d+) kB/.exec(await fsp.readFile(`/proc/${server.pid}/status`, 'utf8'))?.[1];
  const peakMiB = Number(hwm) / 1024;
  console.log(`# 1 GiB: write() returned ${out[0]} in ${out[3]} s, read got ${out[1]} bytes in ${out[4]} s, equal=${out[2]}; server peak RSS ${peakMiB.toFixed(0)} MiB`);
  assert.deepEqual(out.slice(0, 3), [String(1 << 30), String(1 << 30), 'True']);
  assert.ok(peakMiB < 600, `server peak RSS ${peakMiB} MiB for a 1 GiB transfer`);
  await ok(`rm ${mnt}/huge`);
});
