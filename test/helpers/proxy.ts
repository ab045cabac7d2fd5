// A small TCP proxy for tests and benchmarks: forwards to a target, optionally delaying every chunk
// (added latency each way, in order), and lets a test cut every connection or blackhole traffic.
// Stands in for `tc netem`, which this workplace does not have.

import net from 'node:net';

export interface Proxy {
  port: number;
  /** Destroys every open connection (both sides see a reset/close). */
  cutAll(): void;
  /** While on, bytes are swallowed in both directions and connections stay open. */
  blackhole(on: boolean): void;
  connections(): number;
  close(): Promise<void>;
}

export async function startProxy(target: { host: string; port: number }, opts: { delayMs?: number } = {}): Promise<Proxy> {
  const delay = opts.delayMs ?? 0;
  const open = new Set<net.Socket>();
  let hole = false;
  const pipe = (from: net.Socket, to: net.Socket): void => {
    from.on('data', (chunk: Buffer) => {
      if (hole) return;
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
  return {
    port: (server.address() as net.AddressInfo).port,
    cutAll: () => {
      for (const s of open) s.destroy();
    },
    blackhole: (on) => {
      hole = on;
    },
    connections: () => open.size / 2,
    close: async () => {
      for (const s of open) s.destroy();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}
