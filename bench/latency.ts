// `npm run bench:latency`: what one request costs, on the local directory (the limit), on a direct
// mount (the FUSE layer and the source in one process, no network) and on a wirefs mount over
// loopback: the median wall time of one call and the CPU each daemon (all its threads) spends per
// call, measured around the timed loop only. The figures behind docs/DESIGN.md ("Limits") come from here.
// Not part of `npm test`: timings are measured here, never asserted in tests.
//
// LATENCY_N (default 5000) calls per row.

import fsp from 'node:fs/promises';
import os from 'node:os';
import { sh, tmpdir } from '../test/helpers/mount.js';
import { directTarget, wirefsTarget, type Target } from './targets.js';

const N = Number(process.env['LATENCY_N'] ?? 5000);
/** Mount options under which every GETATTR reaches the daemon (the kernel keeps nothing). */
const UNCACHED = 'attr_timeout=0,entry_timeout=0';

// argv: dir, n, row, client pid, server pid (0: none). Prints: median us, client us/op, server us/op.
const DRIVER = `import os, sys, time, statistics
d, n, row, cpid, spid = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
tick = 1e6 / os.sysconf("SC_CLK_TCK")
def cpu(pid):
    if not pid: return 0
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
os.makedirs(d, exist_ok=True)
if row in ("getattr-forwarded", "open-read-close"):
    for i in range(200):
        with open(f"{d}/f{i}", "wb") as f: f.write(b"x" * 500)
    for i in range(200): open(f"{d}/f{i}", "rb").read()
    fd = os.open(f"{d}/f0", os.O_RDONLY)
    def op(i):
        if row == "getattr-forwarded": os.fstat(fd)
        else:
            g = os.open(f"{d}/f{i % 200}", os.O_RDONLY); os.read(g, 4096); os.close(g)
elif row == "getattr-client":
    os.mkdir(f"{d}/sub"); os.listdir(d)
    fd = os.open(f"{d}/sub", os.O_RDONLY)
    op = lambda i: os.fstat(fd)
elif row == "create":
    op = lambda i: os.close(os.open(f"{d}/c{i}", os.O_CREAT | os.O_WRONLY, 0o644))
elif row == "unlink":
    for i in range(n): os.close(os.open(f"{d}/u{i}", os.O_CREAT | os.O_WRONLY, 0o644))
    for i in range(n): os.stat(f"{d}/u{i}")
    op = lambda i: os.unlink(f"{d}/u{i}")
for i in range(min(n, 500)):
    if row not in ("create", "unlink"): op(i)
time.sleep(0.3)
# CPU is counted in clock ticks: calls that can repeat run for 3 s at least, so the count is exact to 1 %.
repeat = row not in ("create", "unlink")
L = []
c0, s0 = cpu(cpid), cpu(spid)
start = time.perf_counter()
i = 0
while i < n or (repeat and time.perf_counter() - start < 3):
    t = time.perf_counter(); op(i); L.append(time.perf_counter() - t); i += 1
c1, s1 = cpu(cpid), cpu(spid)
print(f"{1e6 * statistics.median(L):.1f} {(c1 - c0) * tick / i:.1f} {(s1 - s0) * tick / i:.1f}")`;

interface Row {
  name: string;
  driver: string;
  /** The mount must not let the kernel keep attributes (so every stat reaches the daemon). */
  uncached: boolean;
}

const ROWS: Row[] = [
  { name: 'GETATTR answered by the client (dir)', driver: 'getattr-client', uncached: true },
  { name: 'GETATTR forwarded (file)', driver: 'getattr-forwarded', uncached: true },
  { name: 'open+read+close, cached file', driver: 'open-read-close', uncached: false },
  { name: 'create+close', driver: 'create', uncached: false },
  { name: 'unlink', driver: 'unlink', uncached: false },
];

interface Result { wallUs: number; clientUs: number; serverUs: number }

async function measure(t: Target, row: Row): Promise<Result> {
  const dir = `${t.dir}/lat-${row.driver}`;
  const r = await sh(`python3 -c '${DRIVER}' ${dir} ${N} ${row.driver} ${t.pids?.client ?? 0} ${t.pids?.server ?? 0}`, { timeoutMs: 600_000 });
  if (r.code !== 0) throw new Error(`${row.name}: exit ${r.code}: ${r.stderr.trim().split('\n').at(-1) ?? ''}`);
  const [wallUs, clientUs, serverUs] = r.stdout.trim().split(' ').map(Number) as [number, number, number];
  return { wallUs, clientUs, serverUs };
}

async function main(): Promise<void> {
  const makers: Array<{ name: string; make(exported: string, uncached: boolean): Promise<Target> }> = [
    { name: 'local', make: async (e) => ({ name: 'local', dir: e, teardown: async () => {} }) },
    { name: 'direct', make: (e, u) => directTarget('direct', e, u ? UNCACHED : undefined) },
    { name: 'wirefs', make: (e, u) => wirefsTarget('wirefs', e, 0, e, u ? UNCACHED : undefined) },
  ];
  const results = new Map<string, Map<string, Result>>();
  for (const m of makers) {
    const res = new Map<string, Result>();
    results.set(m.name, res);
    // The local directory has no daemon and no attribute cache to turn off: one run covers every row.
    const runs = m.name === 'local' ? [{ uncached: false, rows: ROWS }] : [true, false].map((u) => ({ uncached: u, rows: ROWS.filter((r) => r.uncached === u) }));
    for (const { uncached, rows } of runs) {
      const exported = await tmpdir('wirefs-latency-export-');
      const t = await m.make(exported, uncached);
      try {
        for (const row of rows) {
          try {
            res.set(row.name, await measure(t, row));
          } catch (err) {
            process.stderr.write(`latency: ${m.name}: ${(err as Error).message}\n`);
          }
        }
      } finally {
        await t.teardown();
        await fsp.rm(exported, { recursive: true, force: true });
      }
    }
  }
  const us = (n: number | undefined): string => (n === undefined ? '-' : `${n.toFixed(0)}us`);
  const header = ['call', 'local', 'direct', 'wirefs', 'wirefs/direct', 'direct daemon cpu', 'wirefs client cpu', 'wirefs server cpu'];
  const table = ROWS.map((row) => {
    const get = (n: string): Result | undefined => results.get(n)?.get(row.name);
    const [l, d, w] = [get('local'), get('direct'), get('wirefs')];
    return [row.name, us(l?.wallUs), us(d?.wallUs), us(w?.wallUs), d && w ? `${(w.wallUs / d.wallUs).toFixed(2)}x` : '-',
      us(d?.clientUs), us(w?.clientUs), us(w?.serverUs)];
  });
  const widths = header.map((h, i) => Math.max(h.length, ...table.map((r) => r[i]!.length)));
  const line = (cells: string[]): string => cells.map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
  process.stdout.write(`\nwirefs request latency on ${os.hostname()} (${os.cpus().length} cpus): median wall time per call, and daemon CPU per call (${N} calls a row)\n\n`);
  process.stdout.write([line(header), ...table.map(line)].join('\n') + '\n');
}

main().catch((err: unknown) => {
  process.stderr.write(`latency: ${(err as Error).message}\n`);
  process.exitCode = 1;
});
