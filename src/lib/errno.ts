// The errno table and the one error type every layer uses. Numbers are Linux's (asm-generic/errno.h);
// the wire protocol carries them unchanged, so they are also the protocol's canonical values.

export const Errno = {
  EPERM: 1, ENOENT: 2, ESRCH: 3, EINTR: 4, EIO: 5, ENXIO: 6, E2BIG: 7, ENOEXEC: 8, EBADF: 9,
  ECHILD: 10, EAGAIN: 11, ENOMEM: 12, EACCES: 13, EFAULT: 14, EBUSY: 16, EEXIST: 17, EXDEV: 18,
  ENODEV: 19, ENOTDIR: 20, EISDIR: 21, EINVAL: 22, ENFILE: 23, EMFILE: 24, ENOTTY: 25, ETXTBSY: 26,
  EFBIG: 27, ENOSPC: 28, ESPIPE: 29, EROFS: 30, EMLINK: 31, EPIPE: 32, ERANGE: 34, EDEADLK: 35,
  ENAMETOOLONG: 36, ENOLCK: 37, ENOSYS: 38, ENOTEMPTY: 39, ELOOP: 40, ENODATA: 61, ENOTSUP: 95,
  EOPNOTSUPP: 95, EOVERFLOW: 75, EBADMSG: 74, EPROTO: 71, ENOTCONN: 107, ETIMEDOUT: 110,
  ECONNREFUSED: 111, ECONNRESET: 104, EHOSTUNREACH: 113, ESTALE: 116, EDQUOT: 122, ECANCELED: 125,
} as const;
export type ErrnoName = keyof typeof Errno;

const byName: Record<string, number> = Errno;
const byNumber = new Map<number, string>();
for (const [name, num] of Object.entries(Errno)) if (!byNumber.has(num)) byNumber.set(num, name);

export function errnoName(errno: number): string {
  return byNumber.get(errno) ?? `E#${errno}`;
}

/**
 * A failure of one file system operation, carrying a positive Linux errno. It is an answer, not a
 * bug, so it carries no stack trace: capturing one costs about 5 us, more than a whole request
 * answered from a cache (ENOENT of a cached absence, ENODATA of a cached xattr).
 */
export class FsError extends Error {
  readonly errno: number;
  constructor(errno: number, message?: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    try {
      super(message ?? errnoName(errno));
    } finally {
      Error.stackTraceLimit = limit;
    }
    this.name = 'FsError';
    this.errno = errno;
  }
}

export function fsError(name: ErrnoName, message?: string): FsError {
  return new FsError(Errno[name], message);
}

let bugLogger: (err: unknown, where: string) => void = (err, where) => {
  process.stderr.write(`wirefs: internal error in ${where}: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
};
export function setBugLogger(fn: (err: unknown, where: string) => void): void {
  bugLogger = fn;
}

/**
 * The one conversion of an arbitrary failure to an errno, used at each boundary (FUSE reply, wire
 * reply). Node system errors keep their errno; anything else is a bug: logged, and EIO (never
 * ENOSYS, which the kernel remembers for the rest of the connection).
 */
export function toErrno(err: unknown, where = 'operation'): number {
  if (err instanceof FsError) return err.errno;
  if (err && typeof err === 'object') {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && code in byName) return byName[code] as number;
    const errno = (err as { errno?: unknown }).errno;
    // libuv reports negative errnos on Linux
    if (typeof errno === 'number' && errno !== 0 && typeof code === 'string') return Math.abs(errno);
  }
  bugLogger(err, where);
  return Errno.EIO;
}
