// Who may mount, through the real CLI and kernel mounts: a shared secret (right, wrong, missing;
// -o secret-file= as fstab gives it), certificates made with openssl for the occasion (server
// checked by --ca, client certificates with --client-ca), the allow-list, the refusal to serve
// unencrypted beyond loopback, and a flood of connections that must leave a mount working.
// Every refusal must reach the user as one line within seconds, and the server as one log line.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import net from 'node:net';
import { sh, tmpdir, isMounted, teardownMount } from '../helpers/mount.js';
import { serve, mount, BIN } from '../helpers/wirefs.js';

const wirefs = `${process.execPath} ${BIN}`;

async function ok(cmd: string, timeoutMs = 30000): Promise<string> {
  const r = await sh(cmd, { timeoutMs });
  assert.equal(r.code, 0, `${cmd}\nexit ${r.code}\n${r.stderr}\n${r.stdout}`);
  return r.stdout;
}

/** `wirefs mount` that must fail: returns its one-line message and how long it took. */
async function mountFails(addr: string, args: string): Promise<{ line: string; ms: number }> {
  const mnt = await tmpdir('wirefs-mnt-');
  const started = Date.now();
  const r = await sh(`${wirefs} mount --timeout 8 ${args} ${addr} ${mnt}`, { timeoutMs: 30000 });
  const ms = Date.now() - started;
  await teardownMount(mnt); // unmounts if it did mount, and removes the mount point
  assert.notEqual(r.code, 0, `mount ${args} succeeded`);
  const lines = r.stderr.trim().split('\n').filter((l) => !/warning:/.test(l));
  assert.equal(lines.length, 1, r.stderr);
  return { line: lines[0]!, ms };
}

/** Waits until the server's log matches re (logging is asynchronous to the client's failure). */
async function logged(stderr: () => string, re: RegExp): Promise<void> {
  for (let i = 0; i < 50 && !re.test(stderr()); i++) await new Promise((r) => setTimeout(r, 100));
  assert.match(stderr(), re);
}

test('a shared secret: the right one mounts; wrong, none or TLS against plain fail in one line', async (t) => {
  const dir = await tmpdir('wirefs-sec-');
  await ok(`${wirefs} keygen ${dir}/k1 && ${wirefs} keygen > ${dir}/k2 && chmod 600 ${dir}/k2`);
  assert.match(await ok(`stat -c %a ${dir}/k1`), /^600/);
  const keygenAgain = await sh(`${wirefs} keygen ${dir}/k1`);
  assert.notEqual(keygenAgain.code, 0, 'keygen must not overwrite a key');
  const exported = await tmpdir('wirefs-export-');
  await ok(`echo hello > ${exported}/greeting`);
  const server = await serve(t, exported, ['--secret-file', `${dir}/k1`]);
  // The mount(8)/fstab spelling of the option.
  const m = await mount(t, server.addr, { options: `secret-file=${dir}/k1` });
  assert.equal(await ok(`timeout 10 cat ${m.mnt}/greeting`), 'hello\n');

  const wrong = await mountFails(server.addr, `--secret-file ${dir}/k2`);
  assert.match(wrong.line, /rejected our secret/);
  assert.ok(wrong.ms < 5000, `took ${wrong.ms} ms`);
  await logged(server.stderr, /does not hold this server's secret/);

  const none = await mountFails(server.addr, '');
  assert.match(none.line, /closed the connection during the handshake.*(secret-file|certificates)/);
  assert.ok(none.ms < 5000, `took ${none.ms} ms`);
  await logged(server.stderr, /does not speak TLS/);

  // The server carried on: the first mount still works, and a right client still gets in.
  await ok(`timeout 10 sh -c 'echo again > ${m.mnt}/after && cat ${m.mnt}/after'`);
  const m2 = await mount(t, server.addr, { args: ['--secret-file', `${dir}/k1`] });
  assert.equal(await ok(`timeout 10 cat ${m2.mnt}/after`), 'again\n');

  const plain = await serve(t, 'mem:');
  const tlsToPlain = await mountFails(plain.addr, `--secret-file ${dir}/k1`);
  assert.match(tlsToPlain.line, /without encryption|does not speak TLS/);
});

test('certificates: --ca checks the server; --client-ca requires a client certificate', async (t) => {
  const d = await tmpdir('wirefs-certs-');
  // A throwaway CA, a server certificate for 127.0.0.1, a client certificate, and a stranger CA.
  await ok([
    `cd ${d}`,
    'openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=wirefs-test-ca',
    'openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 2 -subj /CN=rogue-ca',
    'openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1',
    'printf "subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n" > server.ext',
    'openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile server.ext',
    'openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=client',
    'openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2',
    'openssl req -newkey rsa:2048 -nodes -keyout stranger.key -out stranger.csr -subj /CN=stranger',
    'openssl x509 -req -in stranger.csr -CA rogue.pem -CAkey rogue.key -CAcreateserial -out stranger.pem -days 2',
  ].join(' && ') + ' 2>&1', 60000);
  const exported = await tmpdir('wirefs-export-');
  await ok(`echo certified > ${exported}/f`);

  const server = await serve(t, exported, ['--cert', `${d}/server.pem`, '--key', `${d}/server.key`]);
  const m = await mount(t, server.addr, { args: ['--ca', `${d}/ca.pem`] });
  assert.equal(await ok(`timeout 10 cat ${m.mnt}/f`), 'certified\n');
  const untrusted = await mountFails(server.addr, `--ca ${d}/rogue.pem`);
  assert.match(untrusted.line, /certificate is not trusted/);
  await mountFails(server.addr, '');

  const strict = await serve(t, exported, ['--cert', `${d}/server.pem`, '--key', `${d}/server.key`, '--client-ca', `${d}/ca.pem`]);
  const m2 = await mount(t, strict.addr, { options: `ca=${d}/ca.pem,cert=${d}/client.pem,key=${d}/client.key` });
  assert.equal(await ok(`timeout 10 cat ${m2.mnt}/f`), 'certified\n');
  const noCert = await mountFails(strict.addr, `--ca ${d}/ca.pem`);
  assert.match(noCert.line, /client certificate|closed the connection/);
  await logged(strict.stderr, /sent no certificate|not trusted/);
  const stranger = await mountFails(strict.addr, `--ca ${d}/ca.pem --cert ${d}/stranger.pem --key ${d}/stranger.key`);
  assert.match(stranger.line, /does not trust our client certificate|closed the connection|TLS/);
  await ok(`timeout 10 cat ${m2.mnt}/f`);
});

test('the allow-list refuses other addresses with a clear message; plain TCP stays on loopback', async (t) => {
  const refused = await serve(t, 'mem:', ['--allow', '10.0.0.0/8,192.168.1.7']);
  const r = await mountFails(refused.addr, '');
  assert.match(r.line, /does not allow this client's address/);
  await logged(refused.stderr, /127\.0\.0\.1:\d+: refused: address not in the allow-list/);

  const allowed = await serve(t, 'mem:', ['--allow', '10.0.0.0/8,127.0.0.1/32']);
  const m = await mount(t, allowed.addr);
  await ok(`timeout 10 sh -c 'echo in > ${m.mnt}/x && cat ${m.mnt}/x'`);

  const open = await sh(`${wirefs} serve -p 0 --bind 0.0.0.0 mem:`, { timeoutMs: 20000 });
  assert.notEqual(open.code, 0);
  assert.equal(open.stderr.trim().split('\n').length, 1, open.stderr);
  assert.match(open.stderr, /refusing to serve unencrypted on 0\.0\.0\.0.*--insecure/);
  const insecure = await serve(t, 'mem:', ['--insecure'], { bind: '0.0.0.0' });
  assert.match(insecure.addr, /^0\.0\.0\.0:/);
});

test('a flood of 500 connections leaves an existing mount working', async (t) => {
  const dir = await tmpdir('wirefs-flood-');
  await ok(`${wirefs} keygen ${dir}/k`);
  const exported = await tmpdir('wirefs-export-');
  const server = await serve(t, exported, ['--secret-file', `${dir}/k`]);
  const m = await mount(t, server.addr, { args: ['--secret-file', `${dir}/k`] });
  await ok(`timeout 10 sh -c 'echo before > ${m.mnt}/f'`);

  const sockets: net.Socket[] = [];
  t.after(() => {
    for (const s of sockets) s.destroy();
  });
  let closedByServer = 0;
  await Promise.all(Array.from({ length: 500 }, (_, i) => new Promise<void>((resolve) => {
    const s = net.connect({ host: server.host, port: server.port }, () => {
      // Half say nothing (a slow handshake); half send garbage where a TLS ClientHello belongs.
      if (i % 2) s.write(Buffer.from('GET / HTTP/1.0\r\n\r\n'));
      resolve();
    });
    s.on('error', () => resolve());
    s.on('close', () => closedByServer++);
    sockets.push(s);
  })));
  // While the flood holds its connections: the mount reads, writes and lists within the timeouts.
  for (let i = 0; i < 5; i++) {
    await ok(`timeout 10 sh -c 'echo round${i} > ${m.mnt}/f && cat ${m.mnt}/f && ls ${m.mnt} >/dev/null'`, 15000);
  }
  assert.equal(await ok(`timeout 10 cat ${m.mnt}/f`), 'round4\n');
  // Over the per-address limit (64) the server closed connections at once instead of holding them.
  for (let i = 0; i < 50 && closedByServer < 400; i++) await new Promise((r) => setTimeout(r, 100));
  assert.ok(closedByServer >= 400, `only ${closedByServer} of 500 flood connections were closed`);
  // And said so in a bounded number of log lines, not one per connection.
  const lines = server.stderr().split('\n').filter((l) => /refused/.test(l));
  assert.ok(lines.length > 0 && lines.length < 40, `${lines.length} log lines:\n${lines.slice(0, 5).join('\n')}`);
  for (const s of sockets) s.destroy();
  await ok(`timeout 10 sh -c 'echo after > ${m.mnt}/g && cat ${m.mnt}/g'`);
});
