// Watches the host directories a source has handed out, so changes made by local processes (not
// through wirefs) can be reported up as change events. One inotify watch per directory through
// Node's fs.watch (libuv keeps a single inotify instance per loop): a directory watch reports
// names created, deleted or moved in it ("rename") and files in it written or chmod-ed
// ("change"), which is all a client's kernel caches about that directory and its children.
//
// Events are gathered for SETTLE_MS and handed over once per (directory, name), so a burst (a local
// `tar x`, a build) costs one report per name, not one per write; and an event raised by one of
// the source's own changes is judged only once that change has finished (its last step may still
// be running on the thread pool when inotify reports the first), so the source can recognise it.

import fs from 'node:fs';
import { logger } from '../lib/log.js';

const log = logger('sources');

export type DirEventKind = 'rename' | 'change';

const SETTLE_MS = 20;

/** One directory's change: `name` null when the kernel did not say which (queue overflow). */
export type DirEventHandler = (dirId: number, kind: DirEventKind, name: string | null) => void;

export class DirWatcher {
  private readonly watches = new Map<number, fs.FSWatcher>();
  private pending = new Map<string, { dirId: number; kind: DirEventKind; name: string | null }>();
  private flushQueued = false;
  private full = false;
  private closed = false;

  /** `limit`: the most directories watched at once; beyond it changes go unseen (logged once). */
  constructor(private readonly onEvent: DirEventHandler, private readonly limit = 65536) {}

  get size(): number {
    return this.watches.size;
  }

  /** Whether every directory asked for so far is watched. */
  get complete(): boolean {
    return !this.full;
  }

  add(dirId: number, dirPath: string): void {
    if (this.closed || this.watches.has(dirId)) return;
    if (this.watches.size >= this.limit) {
      this.noteFull(`more than ${this.limit} directories`);
      return;
    }
    let w: fs.FSWatcher;
    try {
      // persistent: false: a watch never keeps the process alive by itself.
      w = fs.watch(dirPath, { persistent: false, encoding: 'utf8' });
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      // ENOSPC: fs.inotify.max_user_watches reached. ENOENT/ENOTDIR: gone or replaced meanwhile.
      if (code === 'ENOSPC') this.noteFull('the inotify watch limit (fs.inotify.max_user_watches)');
      else if (code !== 'ENOENT' && code !== 'ENOTDIR' && code !== 'EACCES') log.warn(`cannot watch ${dirPath}: ${(err as Error).message}`);
      return;
    }
    w.on('change', (kind: string, name: string | null) => this.queue(dirId, kind === 'change' ? 'change' : 'rename', name));
    // The directory itself was removed or its file system unmounted: the watch is over.
    w.on('error', () => this.remove(dirId));
    this.watches.set(dirId, w);
  }

  remove(dirId: number): void {
    const w = this.watches.get(dirId);
    if (!w) return;
    this.watches.delete(dirId);
    w.close();
  }

  close(): void {
    this.closed = true;
    for (const w of this.watches.values()) w.close();
    this.watches.clear();
    this.pending.clear();
  }

  private noteFull(why: string): void {
    if (!this.full) log.warn(`local changes in some directories will not be seen: ${why}`);
    this.full = true;
  }

  private queue(dirId: number, kind: DirEventKind, name: string | null): void {
    const key = `${dirId}/${name ?? ''}`;
    const prev = this.pending.get(key);
    // A name that was both created and written in one turn is reported as a rename (the stronger).
    if (!prev || (prev.kind === 'change' && kind === 'rename')) this.pending.set(key, { dirId, kind, name });
    if (this.flushQueued) return;
    this.flushQueued = true;
    setTimeout(() => {
      this.flushQueued = false;
      const batch = this.pending;
      this.pending = new Map();
      for (const ev of batch.values()) {
        if (this.closed || !this.watches.has(ev.dirId)) continue;
        try {
          this.onEvent(ev.dirId, ev.kind, ev.name);
        } catch (err) {
          log.warn(`a local change handler failed: ${(err as Error).message}`);
        }
      }
    }, SETTLE_MS).unref();
  }
}
