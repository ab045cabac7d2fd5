// The one op table of the wire protocol: op number -> name, kind, request fields, reply fields and
// whether re-executing it is harmless. Every encoder and decoder of a message body is derived from
// it (encodeBody/decodeBody), the server's dispatch table and the client's calls are typed by it, and
// docs/PROTOCOL.md's per-op tables are generated from it (describeOps).

import { Reader, Writer } from '../lib/bytes.js';
import { FIELDS, type FieldType, type FieldValue } from './codec.js';

type Schema = readonly (readonly [string, FieldType])[];

/**
 * call: client request, server reply (status + reply fields). oneway: client -> server, never
 * answered. push: server -> client, unsolicited (request id 0), never answered.
 */
export type OpKind = 'call' | 'oneway' | 'push';

interface OpSpec {
  readonly code: number;
  readonly kind: OpKind;
  /** Safe to execute twice with the same effect (a retry after a lost reply needs no reply cache). */
  readonly idempotent: boolean;
  readonly req: Schema;
  readonly rep: Schema;
  readonly doc: string;
}

const C = ['ctx', 'ctx'] as const;

export const OPS = {
  // --- session ------------------------------------------------------------------------------
  hello: {
    code: 1, kind: 'call', idempotent: true, doc: 'Opens the session; must be the first frame. See "Hello and negotiation".',
    req: [['magic', 'magic'], ['major', 'u16'], ['minor', 'u16'], ['features', 'u64big'], ['maxFrame', 'u32'], ['sessionId', 'u64big'], ['clientName', 'str']],
    rep: [['magic', 'magic'], ['major', 'u16'], ['minor', 'u16'], ['features', 'u64big'], ['maxFrame', 'u32'], ['sessionId', 'u64big'],
      ['serverName', 'str'], ['fsType', 'str'], ['readOnly', 'bool'], ['root', 'attr']],
  },
  ping: { code: 2, kind: 'call', idempotent: true, doc: 'Round trip; liveness probe.', req: [], rep: [] },
  cancel: {
    code: 3, kind: 'oneway', idempotent: true, doc: 'The client stopped waiting for request `id`; the server aborts it if still running (the reply, if any, is still sent and ignored).',
    req: [['id', 'u32']], rep: [],
  },
  change: {
    code: 4, kind: 'push', idempotent: true,
    doc: 'A cached node or name changed: drop it (FUSE notify). A nonzero request id (with PUSH_ACK) asks for a CHANGE_ACK once the client\'s kernel has dropped it.',
    req: [['event', 'change']], rep: [],
  },
  bye: {
    code: 5, kind: 'oneway', idempotent: true, doc: 'The client is done: the server ends the session at once (releasing what it held) instead of keeping it for a resume. The client then closes the connection.',
    req: [], rep: [],
  },
  changeAck: {
    code: 6, kind: 'oneway', idempotent: true, doc: 'The CHANGE push with request id `id` has been acted on (PUSH_ACK).',
    req: [['id', 'u32']], rep: [],
  },
  recall: {
    code: 7, kind: 'push', idempotent: true,
    doc: 'Another client is about to see directory `nodeid`, which this client holds under a LEASE_DIR (1.3): send every change in it not yet sent, wait for their replies, then answer with CHANGE_ACK (request id as for CHANGE). The lease is over.',
    req: [['nodeid', 'u64']], rep: [],
  },

  // --- the Vfs, one op per method (src/vfs/types.ts gives the semantics) ----------------------
  lookup: { code: 16, kind: 'call', idempotent: true, doc: 'Counts one lookup of the node.', req: [C, ['parent', 'u64'], ['name', 'str']], rep: [['entry', 'entry']] },
  forget: { code: 17, kind: 'oneway', idempotent: false, doc: 'Drops nlookup lookups this session holds.', req: [['nodeid', 'u64'], ['nlookup', 'u64']], rep: [] },
  getattr: { code: 18, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'optu64']], rep: [['attr', 'attr']] },
  setattr: { code: 19, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['set', 'setattr'], ['fh', 'optu64']], rep: [['attr', 'attr']] },
  readlink: { code: 20, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64']], rep: [['target', 'str']] },
  mknod: { code: 21, kind: 'call', idempotent: false, doc: '', req: [C, ['parent', 'u64'], ['name', 'str'], ['mode', 'u32'], ['rdev', 'u32']], rep: [['entry', 'entry'], ['parentAttr', 'tailattr']] },
  mkdir: { code: 22, kind: 'call', idempotent: false, doc: '', req: [C, ['parent', 'u64'], ['name', 'str'], ['mode', 'u32']], rep: [['entry', 'entry'], ['parentAttr', 'tailattr']] },
  symlink: { code: 23, kind: 'call', idempotent: false, doc: '', req: [C, ['parent', 'u64'], ['name', 'str'], ['target', 'str']], rep: [['entry', 'entry'], ['parentAttr', 'tailattr']] },
  link: { code: 24, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['newparent', 'u64'], ['newname', 'str']], rep: [['entry', 'entry'], ['parentAttr', 'tailattr']] },
  unlink: { code: 25, kind: 'call', idempotent: false, doc: '', req: [C, ['parent', 'u64'], ['name', 'str']], rep: [['parentAttr', 'tailattr']] },
  rmdir: { code: 26, kind: 'call', idempotent: false, doc: 'Since 1.3 applied after every UNLINK, and since 1.5 after every RMDIR, that the session sent before it.', req: [C, ['parent', 'u64'], ['name', 'str']], rep: [['parentAttr', 'tailattr']] },
  rename: {
    code: 27, kind: 'call', idempotent: false, doc: 'flags: RENAME_NOREPLACE 1, RENAME_EXCHANGE 2.',
    req: [C, ['parent', 'u64'], ['name', 'str'], ['newparent', 'u64'], ['newname', 'str'], ['flags', 'u32']],
    rep: [['parentAttr', 'tailattr'], ['newParentAttr', 'tailattr']],
  },
  open: { code: 28, kind: 'call', idempotent: false, doc: 'flags: Linux open(2) flags.', req: [C, ['nodeid', 'u64'], ['flags', 'u32']], rep: [['open', 'open']] },
  create: {
    code: 29, kind: 'call', idempotent: false, doc: '',
    req: [C, ['parent', 'u64'], ['name', 'str'], ['mode', 'u32'], ['flags', 'u32']], rep: [['entry', 'entry'], ['open', 'open'], ['parentAttr', 'tailattr']],
  },
  read: { code: 30, kind: 'call', idempotent: true, doc: 'size is at most the negotiated max frame less 64.', req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['offset', 'u64'], ['size', 'u32']], rep: [['data', 'blob']] },
  write: { code: 31, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['offset', 'u64'], ['data', 'blob']], rep: [['count', 'u32'], ['attr', 'writeattr']] },
  flush: { code: 32, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64']], rep: [] },
  fsync: { code: 33, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['datasync', 'bool']], rep: [] },
  release: { code: 34, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64']], rep: [] },
  opendir: { code: 35, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64']], rep: [['open', 'open']] },
  readdir: {
    code: 36, kind: 'call', idempotent: true, doc: 'With plus, each entry but "." and ".." counts a lookup. The server may return fewer entries than asked to fit the max frame. eof (1.3): the last entry is the directory\'s last (the client need not ask again to learn it).',
    req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['offset', 'u64'], ['maxEntries', 'u32'], ['plus', 'bool']], rep: [['entries', 'direntries'], ['eof', 'taileof']],
  },
  fsyncdir: { code: 37, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['datasync', 'bool']], rep: [] },
  releasedir: { code: 38, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['fh', 'u64']], rep: [] },
  statfs: { code: 39, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64']], rep: [['statfs', 'statfs']] },
  setxattr: {
    code: 40, kind: 'call', idempotent: false, doc: 'flags: XATTR_CREATE 1, XATTR_REPLACE 2.',
    req: [C, ['nodeid', 'u64'], ['name', 'str'], ['value', 'blob'], ['flags', 'u32']], rep: [],
  },
  getxattr: { code: 41, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64'], ['name', 'str']], rep: [['value', 'blob']] },
  listxattr: { code: 42, kind: 'call', idempotent: true, doc: '', req: [C, ['nodeid', 'u64']], rep: [['names', 'strlist']] },
  removexattr: { code: 43, kind: 'call', idempotent: false, doc: '', req: [C, ['nodeid', 'u64'], ['name', 'str']], rep: [] },
  access: { code: 44, kind: 'call', idempotent: true, doc: 'mask: F_OK 0, X_OK 1, W_OK 2, R_OK 4.', req: [C, ['nodeid', 'u64'], ['mask', 'u32']], rep: [] },
  fallocate: {
    code: 45, kind: 'call', idempotent: false, doc: 'mode: Linux FALLOC_FL_* bits.',
    req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['mode', 'u32'], ['offset', 'u64'], ['length', 'u64']], rep: [],
  },
  lseek: {
    code: 46, kind: 'call', idempotent: true, doc: 'whence: SEEK_DATA 3, SEEK_HOLE 4.',
    req: [C, ['nodeid', 'u64'], ['fh', 'u64'], ['offset', 'u64'], ['whence', 'u32']], rep: [['offset', 'u64']],
  },
  copyFileRange: {
    code: 47, kind: 'call', idempotent: false, doc: '',
    req: [C, ['nodeIn', 'u64'], ['fhIn', 'u64'], ['offIn', 'u64'], ['nodeOut', 'u64'], ['fhOut', 'u64'], ['offOut', 'u64'], ['len', 'u64']],
    rep: [['count', 'u64']],
  },
  leaseDir: {
    code: 48, kind: 'call', idempotent: true,
    doc: '1.3. Asks for directory `nodeid` alone: granted when no other session holds it, it is not the root, and the server runs ctx\'s requests as ctx\'s own ids. Until a RECALL or a FORGET of it, the holder may answer an UNLINK in it by ctx\'s uid before the server has run it (see DESIGN.md, "Unlink-behind"). attr: the directory\'s attributes, when granted; UNLINK replies in a leased directory then carry no parentAttr, nor (1.5) RMDIR replies. With a 1.5 server the holder may also answer the RMDIR of a directory it holds under a lease too and knows to be empty (see DESIGN.md, "Rmdir-behind").',
    req: [C, ['nodeid', 'u64']], rep: [['granted', 'bool'], ['attr', 'tailattr']],
  },
  listdir: {
    code: 49, kind: 'call', idempotent: false,
    doc: '1.3. OPENDIR and READDIR from offset 0 in one round trip. When the entries end the listing (eof), the server has released the handle itself (kept 0, fh 0); otherwise the client continues with READDIR on fh and ends with RELEASEDIR, as after OPENDIR.',
    req: [C, ['nodeid', 'u64'], ['maxEntries', 'u32'], ['plus', 'bool']],
    rep: [['fh', 'u64'], ['kept', 'bool'], ['entries', 'direntries'], ['eof', 'taileof']],
  },
  reserve: {
    code: 50, kind: 'call', idempotent: false,
    doc: '1.4. Up to `count` (at most 64) new regular files without a name in directory `parent` (as O_TMPFILE makes them), each open for reading and writing as its `fh` and counting one lookup of its entry; entry.attr gives the final ino, blksize and rdev. NAME_RESERVED names one; a FORGET before that drops it (and closes its handle). Fewer than asked (none at all) when the session holds 128 unnamed files already, or when making one more failed after the first. For create-behind in a leased directory (see DESIGN.md, "Create-behind"). EOPNOTSUPP: the source cannot.',
    req: [C, ['parent', 'u64'], ['count', 'u32']], rep: [['files', 'reserved']],
  },
  nameReserved: {
    code: 51, kind: 'call', idempotent: false,
    doc: '1.4. Names the reserved file `nodeid` (open as `fh`) `name` in `parent`, as CREATE with `mode` by ctx would have made it: ctx\'s owner (the directory\'s group when it is set-group-ID), mode & 07777, all times now. EEXIST when the name is taken. The server runs every request of the session that arrives after it once it is done. attr: the file\'s attributes; files: up to `more` files reserved anew in `parent`, as RESERVE makes them (fewer or none when that fails: the naming stands); parentAttr as for UNLINK.',
    req: [C, ['parent', 'u64'], ['name', 'str'], ['nodeid', 'u64'], ['fh', 'u64'], ['mode', 'u32'], ['more', 'u32']],
    rep: [['attr', 'attr'], ['files', 'reserved'], ['parentAttr', 'tailattr']],
  },
} as const satisfies Record<string, OpSpec>;

export type OpName = keyof typeof OPS;
type Struct<S extends Schema> = { -readonly [F in S[number] as F[0]]: FieldValue<F[1]> };
export type Req<N extends OpName> = Struct<(typeof OPS)[N]['req']>;
export type Rep<N extends OpName> = Struct<(typeof OPS)[N]['rep']>;
/** The ops the server's handlers run: the Vfs methods, and LEASE_DIR (everything after the session ops). */
export type VfsOpName = Exclude<OpName, 'hello' | 'ping' | 'cancel' | 'change' | 'changeAck' | 'bye' | 'recall'>;

export const OP_BY_CODE: ReadonlyMap<number, OpName> = new Map(
  (Object.keys(OPS) as OpName[]).map((name) => [OPS[name].code, name]),
);

/** The op's name as docs and logs show it: LOOKUP, COPY_FILE_RANGE. */
export function opLabel(name: OpName): string {
  return name.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase();
}

/** Writes the fields of `schema` from `value`, in table order. Throws EncodeError on a bad value. */
export function encodeFields(w: Writer, schema: Schema, value: Record<string, unknown>): void {
  for (const [name, type] of schema) (FIELDS[type] as { enc(w: Writer, v: unknown): void }).enc(w, value[name]);
}

/** Reads the fields of `schema`. Trailing bytes are ignored: a later minor version may append fields. */
export function decodeFields(r: Reader, schema: Schema): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [name, type] of schema) out[name] = FIELDS[type].dec(r);
  return out;
}

export function encodeReq<N extends OpName>(w: Writer, op: N, req: Req<N>): void {
  encodeFields(w, OPS[op].req, req as Record<string, unknown>);
}
export function decodeReq<N extends OpName>(r: Reader, op: N): Req<N> {
  return decodeFields(r, OPS[op].req) as Req<N>;
}
export function encodeRep<N extends OpName>(w: Writer, op: N, rep: Rep<N>): void {
  encodeFields(w, OPS[op].rep, rep as Record<string, unknown>);
}
export function decodeRep<N extends OpName>(r: Reader, op: N): Rep<N> {
  return decodeFields(r, OPS[op].rep) as Rep<N>;
}

/** The Markdown tables of docs/PROTOCOL.md's op section, generated from OPS. */
export function describeOps(): string {
  const table = (schema: Schema, start: number, lead: string[]): string[] => {
    const rows = ['| offset | size | field | type |', '|---|---|---|---|', ...lead];
    let off: number | undefined = start;
    for (const [name, type] of schema) {
      const size = FIELDS[type].size;
      rows.push(`| ${off ?? '…'} | ${size ?? 'var'} | ${name} | ${FIELDS[type].doc} |`);
      off = off !== undefined && size !== undefined ? off + size : undefined;
    }
    return rows;
  };
  const out: string[] = [];
  for (const name of Object.keys(OPS) as OpName[]) {
    const op: OpSpec = OPS[name];
    out.push(`### ${opLabel(name)} (${op.code})`, '');
    const what = op.kind === 'call' ? 'request and reply' : op.kind === 'oneway' ? 'one-way, never answered' : 'server push, never answered';
    out.push(`Kind: ${what}. ${op.idempotent ? 'Idempotent' : 'Not idempotent'}.${op.doc ? ' ' + op.doc : ''}`, '');
    out.push(op.kind === 'push' ? 'Body:' : 'Request body:', '');
    out.push(...(op.req.length ? table(op.req, 0, []) : ['(empty)']), '');
    if (op.kind === 'call') {
      out.push('Reply body (fields only when status is 0):', '');
      out.push(...table(op.rep, 4, ['| 0 | 4 | status | i32: 0 or a Linux errno |']), '');
    }
  }
  return out.join('\n');
}
