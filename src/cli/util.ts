// Small parsing helpers shared by the commands.

import { UsageError } from './errors.js';

export function parsePort(s: string): number {
  const n = Number(s);
  if (!/^\d+$/.test(s) || n > 65535) throw new UsageError(`bad port "${s}"`);
  return n;
}

/** "host:port", "[v6addr]:port" or "host" (default port). */
export function parseAddress(s: string, defaultPort = 12675): { host: string; port: number } {
  const v6 = /^\[([^\]]+)\](?::(\d+))?$/.exec(s);
  if (v6) return { host: v6[1]!, port: v6[2] ? parsePort(v6[2]) : defaultPort };
  const m = /^([^:]+)(?::(\d+))?$/.exec(s);
  if (!m) throw new UsageError(`bad server address "${s}" (expected HOST:PORT)`);
  return { host: m[1]!, port: m[2] ? parsePort(m[2]) : defaultPort };
}

/** Splits -o values ("a,b=c") into a map; repeated -o are merged. */
export function parseMountOptions(list: string[] | undefined): Map<string, string | true> {
  const out = new Map<string, string | true>();
  for (const item of list ?? []) {
    for (const part of item.split(',')) {
      if (!part) continue;
      const eq = part.indexOf('=');
      if (eq < 0) out.set(part, true);
      else out.set(part.slice(0, eq), part.slice(eq + 1));
    }
  }
  return out;
}
