// `wirefs serve`: open a source and export it until SIGINT/SIGTERM.

import { openSource } from '../sources/index.js';
import { startServer } from '../server/server.js';
import { UsageError } from './errors.js';
import { parsePort } from './util.js';

export async function serveCommand(values: Record<string, unknown>, positionals: string[]): Promise<number> {
  if (positionals.length !== 1) throw new UsageError(positionals.length ? 'expected exactly one SOURCE' : 'missing SOURCE');
  const spec = positionals[0]!;
  const port = parsePort(String(values['port']));
  const host = String(values['bind']);
  const grace = Number(values['session-grace']);
  if (!(grace >= 0) || !Number.isFinite(grace)) throw new UsageError(`bad --session-grace "${String(values['session-grace'])}"`);
  const vfs = await openSource(spec, { readOnly: values['read-only'] === true });
  const server = await startServer({ vfs, host, port, sessionGraceMs: grace * 1000 });
  const addr = server.address();
  process.stdout.write(`wirefs: serving ${spec} (type ${vfs.info().type}) on ${addr.host}:${addr.port}\n`);
  await new Promise<void>((resolve) => {
    const stop = (): void => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  await vfs.close();
  return 0;
}
