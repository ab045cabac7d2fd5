// The wirefs command line: serve, mount, umount, status, demo, install-helper. The only place that
// reads argv, env and signals or calls process.exit. Errors reach the user as one line and an exit
// code: 0 ok, 1 failure, 2 usage.

import { parseArgs, type ParseArgsConfig } from 'node:util';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { serveCommand } from './serve.js';
import { mountCommand, umountCommand, statusCommand } from './mount.js';
import { demoCommand } from './demo.js';
import { installHelperCommand } from './helper.js';
import { keygenCommand } from './security.js';
import { UsageError, CliError } from './errors.js';
import { sourceTypes } from '../sources/index.js';

export const BIN = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../../bin/wirefs');

interface Command {
  summary: string;
  usage: string;
  options: NonNullable<ParseArgsConfig['options']>;
  help: string;
  run(values: Record<string, unknown>, positionals: string[]): Promise<number>;
}

const commands: Record<string, Command> = {
  serve: {
    summary: 'export a file system to wirefs clients',
    usage: 'wirefs serve [-p PORT] [--bind ADDR] [--secret-file KEY | --cert F --key F [--client-ca F]] [EXPORT RULES] [--lease-time S] [--session-grace S] SOURCE',
    options: {
      port: { type: 'string', short: 'p', default: '12675' },
      bind: { type: 'string', default: '0.0.0.0' },
      'read-only': { type: 'boolean', default: false },
      'lease-time': { type: 'string', default: '2' },
      'secret-file': { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'client-ca': { type: 'string' },
      insecure: { type: 'boolean', default: false },
      allow: { type: 'string' },
      'no-root-squash': { type: 'boolean', default: false },
      'all-squash': { type: 'boolean', default: false },
      'anon-uid': { type: 'string' },
      'anon-gid': { type: 'string' },
      'map-uid': { type: 'string', multiple: true },
      'map-gid': { type: 'string', multiple: true },
      'max-connections': { type: 'string' },
      'max-per-address': { type: 'string' },
      'session-grace': { type: 'string', default: '60' },
    },
    help: [
      '  -p, --port PORT     TCP port to listen on (default 12675; 0 picks a free one)',
      '      --bind ADDR     address to listen on (default 0.0.0.0, every interface)',
      '      --lease-time S  how long a change waits for other clients to drop their cached copy',
      '                      before going on without them (default 2 seconds)',
      '      --session-grace S  keep the session of a client whose connection dropped for S seconds',
      '                      (its open files, lookups and reply cache), so it can resume (default 60)',
      '',
      'Transport (see docs/DESIGN.md, "Threat model"):',
      '      --secret-file KEY   TLS with a shared secret (make one with `wirefs keygen KEY`);',
      '                          clients need the same file',
      '      --cert F --key F    TLS with this certificate and private key (PEM)',
      '      --client-ca F       also require client certificates signed by this CA',
      '      --insecure          allow plain TCP on an address other than loopback (refused',
      '                          otherwise: anyone who can connect could read and write the export)',
      '',
      'Export rules:',
      '      --read-only         refuse every change with EROFS',
      '      --allow LIST        only these client addresses may connect: comma-separated',
      '                          addresses and ADDR/PREFIX subnets (10.0.0.0/8,127.0.0.1,fd00::/8)',
      '      --no-root-squash    let client root act as root here (default: root squash: uid 0',
      '                          and gid 0 of every client become the anonymous ids)',
      '      --all-squash        every client identity becomes the anonymous ids',
      '      --anon-uid N, --anon-gid N   the anonymous ids (default 65534, nobody/nogroup)',
      '      --map-uid C:S[,..]  client uid C acts as server uid S (repeatable); --map-gid alike',
      '      --max-connections N      connections at once from all clients (default 1024)',
      '      --max-per-address N      connections at once from one address (default 64)',
      '  Requests run as the mapped identity; the server checks permissions for every identity',
      '  but root against uid and primary gid (supplementary groups are not carried).',
      '',
      'SOURCE is one of:',
      ...sourceTypes.map((t) => `  ${t.usage}`),
      '',
      'The server runs in the foreground and prints "serving ... on HOST:PORT" once it listens;',
      'SIGINT or SIGTERM stop it cleanly.',
    ].join('\n'),
    run: serveCommand,
  },
  mount: {
    summary: 'mount a wirefs server (or a source directly) through FUSE',
    usage: 'wirefs mount [-f] [-o OPTS] HOST:PORT MOUNTPOINT\n       wirefs mount --direct [-f] SOURCE MOUNTPOINT',
    options: {
      foreground: { type: 'boolean', short: 'f', default: false },
      options: { type: 'string', short: 'o', multiple: true },
      direct: { type: 'boolean', default: false },
      timeout: { type: 'string', default: '10' },
      'secret-file': { type: 'string' },
      ca: { type: 'string' },
      cert: { type: 'string' },
      key: { type: 'string' },
      'ready-fd': { type: 'string' },
      // accepted for mount(8) compatibility, ignored
      sloppy: { type: 'boolean', short: 's' },
      'no-mtab': { type: 'boolean', short: 'n' },
      verbose: { type: 'boolean', short: 'v' },
      type: { type: 'string', short: 't' },
    },
    help: [
      '  -f, --foreground    stay in the foreground (default: return once the mount is ready)',
      '  -o OPTS             comma-separated mount options:',
      '                        ro                 mount read-only',
      '                        sync               no write-behind: each write waits for the server',
      '                        readahead_kb=N     read-ahead window (default: 2 x round trip x 10 Gbit/s,',
      '                                           between 4 and 16 MiB)',
      '                        readaround_kb=N    bytes fetched around a small random read, pushed into',
      '                                           the page cache (default 128; 0: off)',
      '                        entry_timeout=S    kernel cache time for names (seconds)',
      '                        attr_timeout=S     kernel cache time for attributes (seconds)',
      '                        negative_timeout=S kernel cache time for absent names (seconds)',
      '                        (defaults: 600, 600, 60 when the server reports every change, else 1, 1, 0)',
      '                        datacache_mb=N     keep up to N MiB of file pages read on local disk, under',
      '                                           /var/cache/wirefs (default: a tenth of its free space,',
      '                                           at most 2048; 0: none)',
      '                        timeout=S          when the server is unreachable, calls wait up to S seconds',
      '                                           for it to come back, then fail with EIO (default 60)',
      '                        hard               wait for the server forever, as an NFS hard mount does',
      '                        (defaults, _netdev, rw, auto, noauto, user, nofail are accepted and ignored)',
      '      --direct        mount a SOURCE (see `wirefs serve --help`) in this process, no network',
      '      --timeout S     give up connecting after S seconds (default 10)',
      '      --secret-file KEY   TLS with the shared secret the server was given',
      '      --ca F          TLS with certificates: trust server certificates signed by this CA',
      '      --cert F --key F    a client certificate, for a server started with --client-ca',
      '',
      'The mount shows in `mount` as "HOST:PORT on MOUNTPOINT type fuse.<type>", where <type> is the',
      'type the server negotiated (passthrough, tmpfs, ext4, mem, ...). Unmount with `wirefs umount`.',
      'The mount daemon logs to /run/wirefs/<mountpoint>.log.',
    ].join('\n'),
    run: mountCommand,
  },
  keygen: {
    summary: 'write a new random secret for --secret-file',
    usage: 'wirefs keygen [FILE]',
    options: {},
    help: 'Writes a random 256-bit key to FILE (created mode 0600, never overwritten) or to stdout.\nGive the same file to `wirefs serve --secret-file` and `wirefs mount --secret-file`.',
    run: keygenCommand,
  },
  umount: {
    summary: 'unmount a wirefs mount',
    usage: 'wirefs umount [-l] MOUNTPOINT',
    options: { lazy: { type: 'boolean', short: 'l', default: false } },
    help: '  -l, --lazy          detach now, clean up when no longer busy',
    run: umountCommand,
  },
  status: {
    summary: 'list wirefs mounts and their state',
    usage: 'wirefs status',
    options: {},
    help: '',
    run: statusCommand,
  },
  demo: {
    summary: 'serve a built-in demo tree on loopback and mount it at ./mnt (npm start)',
    usage: 'wirefs demo [MOUNTPOINT]',
    options: {},
    help: 'Serves a demo tree on 127.0.0.1, mounts it (default ./mnt), prints what to try, and\nunmounts cleanly on Ctrl-C.',
    run: demoCommand,
  },
  'install-helper': {
    summary: 'install /sbin/mount.wirefs so `mount -t wirefs` and /etc/fstab work',
    usage: 'wirefs install-helper [--prefix DIR]',
    options: { prefix: { type: 'string', default: '/sbin' } },
    help: '      --prefix DIR    where to write mount.wirefs (default /sbin)',
    run: installHelperCommand,
  },
};

function topHelp(): string {
  const width = Math.max(...Object.keys(commands).map((c) => c.length));
  return [
    'wirefs: a network file system. Serve any file system, mount it anywhere through FUSE.',
    '',
    'usage: wirefs <command> [options]',
    '',
    ...Object.entries(commands).map(([name, c]) => `  ${name.padEnd(width)}  ${c.summary}`),
    '',
    'Run `wirefs <command> --help` for a command\'s options.',
  ].join('\n');
}

export async function main(argv: string[]): Promise<void> {
  const [name, ...rest] = argv;
  if (!name || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(topHelp() + '\n');
    process.exitCode = name ? 0 : 2;
    return;
  }
  if (name === '--version' || name === '-V') {
    process.stdout.write('wirefs 0.1.0 (protocol 1)\n');
    return;
  }
  const cmd = commands[name];
  if (!cmd) {
    process.stderr.write(`wirefs: unknown command "${name}" (try wirefs --help)\n`);
    process.exitCode = 2;
    return;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: ${cmd.usage}\n${cmd.summary}\n\n${cmd.help}\n`);
    return;
  }
  try {
    const { values, positionals } = parseArgs({ args: rest, options: cmd.options, allowPositionals: true, strict: true });
    process.exitCode = await cmd.run(values, positionals);
  } catch (err) {
    if (err instanceof UsageError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`wirefs ${name}: ${(err as Error).message}\nusage: ${cmd.usage}\n`);
      process.exitCode = 2;
    } else if (err instanceof CliError) {
      process.stderr.write(`wirefs ${name}: ${err.message}\n`);
      process.exitCode = err.exitCode;
    } else {
      const msg = err instanceof Error ? err.message : String(err);
      process.stderr.write(`wirefs ${name}: ${msg}\n`);
      if (process.env['WIREFS_DEBUG'] && err instanceof Error) process.stderr.write(`${err.stack}\n`);
      process.exitCode = 1;
    }
  }
}
