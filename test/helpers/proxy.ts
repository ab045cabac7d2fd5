// A small TCP proxy for tests and benchmarks: forwards to a target, optionally delaying every chunk
// (added latency each way, in order), and lets a test cut every connection, blackhole traffic (both
// ways, or only the server's replies), or cut at random moments. Stands in for `tc netem`, which
// this workplace does not have.

import net from 'node:net';

export interface Proxy {
  port: number;
  /** Destroys every open connection (both sides see a reset/close). */
  cutAll(): void;
  /** While on, bytes are swallowed in both directions and connections stay open. */
  blackhole(on: boolean): void;
  /** While on, bytes from the server are swallowed (requests arrive, replies are lost). */
  dropReplies(on: boolean): void;
  /**
   * Cuts every connection at random moments, every minMs..maxMs, until the returned stop() is
   * called; stop() resolves with the number of cuts that hit at least one connection.
   */
  cutRandomly(minMs: number, maxMs: number): () => number;
  /** Cuts that hit at least one connection, by cutAll or cutRandomly. */
  cuts(): number;
  connections(): number;
  close(): Promise<void>;
}

export async function startProxy(target: { host: string; port: number }, opts: { delayMs?: number } = {}): Promise<Proxy> {
  const delay = opts.delayMs ?? 0;
  const open = new Set<net.Socket>();
  let hole = false;
  let dropUp = false;
  let cuts = 0;
  const upstreams = new WeakSet<net.Socket>();
  const pipe = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (hole || (dropUp && upstreams.has(from))) return;
      if (delay <= 0) {
        if (!to.write(chunk)) from.pause();
        return;
      }
      // Equal delays keep order: timers with the same timeout fire first-in first-out.
      setTimeout(() => {
        if (!to.destroyed && !to.write(chunk)) from.pause();
      }, delay);
    });
    to.on('drain', () => from.resume());
    from.on('end', () => setTimeout(() => to.end(), delay));
    from.on('error', () => to.destroy());
    from.on('close', () => to.destroy());
  };
  const server = net.createServer((client) => {
    const upstream = net.connect(target.port, target.host);
    upstreams.add(upstream);
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    open.add(client);
    open.add(upstream);
    client.on('close', () => open.delete(client));
    upstream.on('close', () => open.delete(upstream));
    pipe(client, upstream);
    pipe(upstream, client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const cutAll = (): void => {
    if (open.size) cuts++;
    for (const s of open) s.destroy();
  };
  return {
    port: (server.address() as net.AddressInfo).port,
    cutAll,
    blackhole: (on) => {
      hole = on;
    },
    dropReplies: (on) => {
      dropUp = on;
    },
    cutRandomly: (minMs, maxMs) => {
      const before = cuts;
      let timer: NodeJS.Timeout | undefined;
      const arm = (): void => {
        timer = setTimeout(() => {
          cutAll();
          arm();
        }, minMs + Math.random() * (maxMs - minMs));
      };
      arm();
      return () => {
        clearTimeout(timer);
        return cuts - before;
      };
    },
    cuts: () => cuts,
    connections: () => open.size / 2,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
