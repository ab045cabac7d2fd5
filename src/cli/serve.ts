// `wirefs serve`: open a source and export it until SIGINT/SIGTERM.

import { openSource } from '../sources/index.js';
import { startServer } from '../server/server.js';
import { startMemoryTrim } from '../lib/memory.js';
import { UsageError } from './errors.js';
import { parsePort } from './util.js';
import { countFlag, exportRules, serverSecurity } from './security.js';

export async function serveCommand(values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length !== 1) throw new UsageError(positionals.length ? 'expected exactly one SOURCE' : 'missing SOURCE');
  const spec = positionals[0]!;
  const port = parsePort(String(values['port']));
  const host = String(values['bind']);
  const leaseS = Number(values['lease-time'] ?? 2);
  if (!(leaseS > 0 && leaseS <= 3600)) throw new UsageError(`bad --lease-time "${String(values['lease-time'])}" (seconds, up to 3600)`);
  const grace = Number(values['session-grace'] ?? 60);
  if (!(grace >= 0) || !Number.isFinite(grace)) throw new UsageError(`bad --session-grace "${String(values['session-grace'])}"`);
  const rules = exportRules(values);
  const security = await serverSecurity(values);
  const maxConnections = countFlag(values, 'max-connections');
  const maxConnectionsPerAddress = countFlag(values, 'max-per-address');
  const vfs = await openSource(spec, { readOnly: rules.readOnly });
  let server;
  try {
    server = await startServer({
      vfs, host, port, security, export: rules, insecure: values['insecure'] === true, leaseMs: Math.round(leaseS * 1000),
      sessionGraceMs: grace * 1000,
      ...(maxConnections !== undefined ? { maxConnections } : {}),
      ...(maxConnectionsPerAddress !== undefined ? { maxConnectionsPerAddress } : {}),
    });
  } catch (err) {
    await vfs.close();
    throw err;
  }
  const addr = server.address();
  const how = security.mode === 'psk' ? 'TLS, shared secret' : security.mode === 'cert' ? `TLS, certificate${security.ca ? 's both ways' : ''}` : 'plain TCP';
  const memory = startMemoryTrim(() => server.stats().requests);
  process.stdout.write(`wirefs: serving ${spec} (type ${vfs.info().type}) on ${addr.host}:${addr.port} (${how})\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  memory.stop();
  await server.close();
  await vfs.close();
  return 0;
}
