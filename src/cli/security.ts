// The security flags of `serve` and `mount`, turned into a transport choice and export rules, and
// `wirefs keygen`. Reads the key and certificate files; every failure is one line.

import fs from 'node:fs';
import fsp from 'node:fs/promises';
import { generateKey, parseKey, type Security } from '../wire/transport.js';
import { defaultIdMap, parseAllowList, parseId, parseIdMap, type ExportRules } from '../server/export.js';
import { CliError, UsageError } from './errors.js';

async function readFile(file: string, what: string): Promise<Buffer> {
  try {
    return await fsp.readFile(file);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : (err as Error).message;
    throw new CliError(`cannot read ${what} ${file}: ${why}`);
  }
}

async function readKeyFile(file: string): Promise<Buffer> {
  const text = (await readFile(file, 'secret file')).toString('utf8');
  try {
    const key = parseKey(text);
    const st = await fsp.stat(file);
    // As ssh does for private keys: a secret others can read is no secret.
    if (st.mode & 0o077) process.stderr.write(`wirefs: warning: ${file} is readable by other users (chmod 600 ${file})\n`);
    return key;
  } catch (err) {
    throw new CliError(`secret file ${file}: ${(err as Error).message}`);
  }
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** serve: --secret-file, or --cert + --key (+ --client-ca); neither = plain. */
export async function serverSecurity(values: Record<string, unknown>): Promise<Security> {
  const secret = str(values['secret-file']);
  const cert = str(values['cert']);
  const key = str(values['key']);
  const clientCa = str(values['client-ca']);
  if (secret && (cert || key || clientCa)) throw new UsageError('give either --secret-file or --cert/--key, not both');
  if (secret) return { mode: 'psk', key: await readKeyFile(secret) };
  if (clientCa && !cert) throw new UsageError('--client-ca needs --cert and --key');
  if (cert || key) {
    if (!cert || !key) throw new UsageError('--cert and --key go together');
    return {
      mode: 'cert', cert: await readFile(cert, 'certificate'), key: await readFile(key, 'private key'),
      ...(clientCa ? { ca: await readFile(clientCa, 'client CA') } : {}),
    };
  }
  return { mode: 'plain' };
}

/** mount: --secret-file / -o secret-file=, or --ca / --cert / --key (and their -o forms). */
export async function clientSecurity(values: Record<string, unknown>, opts: Map<string, string | true>): Promise<Security> {
  const pick = (k: string): string | undefined => str(values[k]) ?? str(opts.get(k));
  const secret = pick('secret-file');
  const ca = pick('ca');
  const cert = pick('cert');
  const key = pick('key');
  if (secret && (ca || cert || key)) throw new UsageError('give either a secret file or certificates, not both');
  if (secret) return { mode: 'psk', key: await readKeyFile(secret) };
  if (ca || cert || key) {
    if (!cert !== !key) throw new UsageError('cert and key go together');
    return {
      mode: 'cert',
      ...(ca ? { ca: await readFile(ca, 'CA certificate') } : {}),
      ...(cert ? { cert: await readFile(cert, 'certificate') } : {}),
      ...(key ? { key: await readFile(key, 'private key') } : {}),
    };
  }
  return { mode: 'plain' };
}

/** serve: --read-only, --allow, --no-root-squash, --all-squash, --anon-uid/gid, --map-uid/gid. */
export function exportRules(values: Record<string, unknown>): ExportRules {
  try {
    const idmap = defaultIdMap();
    idmap.rootSquash = values['no-root-squash'] !== true;
    idmap.allSquash = values['all-squash'] === true;
    const anonUid = str(values['anon-uid']);
    const anonGid = str(values['anon-gid']);
    if (anonUid !== undefined) idmap.anonUid = parseId(anonUid, '--anon-uid');
    if (anonGid !== undefined) idmap.anonGid = parseId(anonGid, '--anon-gid');
    for (const m of (values['map-uid'] as string[] | undefined) ?? []) parseIdMap(m, idmap.uids, 'uid');
    for (const m of (values['map-gid'] as string[] | undefined) ?? []) parseIdMap(m, idmap.gids, 'gid');
    const allow = str(values['allow']);
    return { readOnly: values['read-only'] === true, idmap, allow: allow !== undefined ? parseAllowList(allow) : undefined };
  } catch (err) {
    if (err instanceof UsageError) throw err;
    throw new UsageError((err as Error).message);
  }
}

/** A positive integer flag, or the default. */
export function countFlag(values: Record<string, unknown>, name: string): number | undefined {
  const v = str(values[name]);
  if (v === undefined) return undefined;
  if (!/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`bad --${name} "${v}" (expected a positive number)`);
  return Number(v);
}

/** `wirefs keygen [FILE]`: a new random key, to stdout or to a new file only its owner can read. */
export async function keygenCommand(_values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length > 1) throw new UsageError('expected at most one FILE');
  const key = `# wirefs secret: give it to \`wirefs serve --secret-file\` and \`wirefs mount --secret-file\`\n${generateKey()}`;
  const file = positionals[0];
  if (!file) {
    process.stdout.write(key);
    return 0;
  }
  try {
    // wx: never overwrite a key someone may already rely on; 0600 from the first byte.
    fs.writeFileSync(file, key, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw new CliError(code === 'EEXIST' ? `${file} exists; not overwriting a key` : `cannot write ${file}: ${(err as Error).message}`);
  }
  return 0;
}
