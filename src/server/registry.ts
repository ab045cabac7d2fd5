// Sessions by id, so that a client whose connection dropped finds its session again: the lookups
// and handles it holds and its reply cache. A session whose connection ended is kept for a grace
// period (the server's --session-grace, by default as long as a client's default outage timeout)
// and ended for good when nobody resumes it by then.

export interface Resumable {
  readonly sessionId: bigint;
  /** Ends the session for good: gives back everything it held to the source. */
  expire(): void;
}

/**
 * Detached sessions kept at most: a peer that opens sessions and drops them cannot make the server
 * hold an unbounded number for the grace period; beyond this the oldest is ended early.
 */
export const MAX_DETACHED = 1024;

export class SessionRegistry<S extends Resumable> {
  private readonly byId = new Map<bigint, S>();
  private readonly timers = new Map<bigint, NodeJS.Timeout>();
  /** Sessions picked up again by a reconnecting client since start. */
  resumes = 0;
  /** Sessions ended because their grace period ran out. */
  expired = 0;

  constructor(readonly graceMs: number, private readonly maxDetached = MAX_DETACHED) {}

  add(s: S): void {
    this.byId.set(s.sessionId, s);
  }

  /** The connection of s ended: keep it for the grace period, then expire it. */
  detached(s: S): void {
    clearTimeout(this.timers.get(s.sessionId));
    const timer = setTimeout(() => {
      this.timers.delete(s.sessionId);
      if (this.byId.get(s.sessionId) !== s) return;
      this.byId.delete(s.sessionId);
      this.expired++;
      s.expire();
    }, this.graceMs);
    timer.unref();
    this.timers.set(s.sessionId, timer);
    if (this.timers.size > this.maxDetached) {
      // Timers are kept in the order sessions detached: the first is the oldest.
      const oldest = this.timers.keys().next().value as bigint;
      const victim = this.byId.get(oldest);
      this.remove(victim ?? s);
      if (victim) {
        this.expired++;
        victim.expire();
      }
    }
  }

  /** Hands session `id` (attached or not) to a reconnecting client, or undefined if it is gone. */
  take(id: bigint, accept: (s: S) => boolean = () => true): S | undefined {
    const s = this.byId.get(id);
    if (!s || !accept(s)) return undefined;
    clearTimeout(this.timers.get(id));
    this.timers.delete(id);
    this.resumes++;
    return s;
  }

  /** s ended (for good, or handed over): forget it unless another holds its id now. */
  remove(s: S): void {
    if (this.byId.get(s.sessionId) !== s) return;
    this.byId.delete(s.sessionId);
    clearTimeout(this.timers.get(s.sessionId));
    this.timers.delete(s.sessionId);
  }

  /** Sessions waiting for their client to come back. */
  get waiting(): number {
    return this.timers.size;
  }
}
