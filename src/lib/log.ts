// Logging: one line per event on stderr, with per-area debug switches in the NODE_DEBUG style
// (WIREFS_DEBUG=fuse,wire,server,client or WIREFS_DEBUG=*).

const enabled = new Set((process.env['WIREFS_DEBUG'] ?? '').split(',').map((s) => s.trim()).filter(Boolean));

export interface Logger {
  readonly debugEnabled: boolean;
  debug(msg: string): void;
  info(msg: string): void;
  warn(msg: string): void;
  error(msg: string): void;
}

export function logger(area: string): Logger {
  const on = enabled.has('*') || enabled.has(area);
  const line = (level: string, msg: string): void => {
    process.stderr.write(`wirefs ${area}: ${level}${msg}\n`);
  };
  return {
    debugEnabled: on,
    debug: on ? (msg) => line('', msg) : () => {},
    info: (msg) => line('', msg),
    warn: (msg) => line('warning: ', msg),
    error: (msg) => line('error: ', msg),
  };
}
