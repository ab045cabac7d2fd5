// Cancellation of one request. Every request can be interrupted, but most finish without anyone
// looking: an AbortController with its signal and listeners costs several microseconds, a
// noticeable share of a request answered from a cache. So a LazyAbort keeps plain callbacks
// (`onAbort`, what the client uses for every remote call) and makes the AbortSignal only for code
// that asks for one.

/** What a request's cancellation offers besides an AbortSignal: cheap one-shot hooks. */
export interface Cancel {
  readonly aborted: boolean;
  /** Calls fn once when the request is aborted; returns a function that unhooks it. */
  onAbort(fn: () => void): () => void;
}

const nothing = (): void => {};

export class LazyAbort implements Cancel {
  private ac: AbortController | undefined;
  private hooks: Array<() => void> | undefined;
  aborted = false;

  get signal(): AbortSignal {
    if (!this.ac) {
      this.ac = new AbortController();
      if (this.aborted) this.ac.abort();
    }
    return this.ac.signal;
  }

  onAbort(fn: () => void): () => void {
    if (this.aborted) return nothing;
    (this.hooks ??= []).push(fn);
    return () => {
      const i = this.hooks?.indexOf(fn) ?? -1;
      if (i >= 0) this.hooks!.splice(i, 1);
    };
  }

  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    const hooks = this.hooks;
    this.hooks = undefined;
    if (hooks) for (const fn of hooks) fn();
    this.ac?.abort();
  }
}

/** A Cancel over an AbortSignal, for callers that only have a signal. */
export function signalCancel(signal: AbortSignal): Cancel {
  return {
    get aborted() { return signal.aborted; },
    onAbort(fn) {
      signal.addEventListener('abort', fn, { once: true });
      return () => signal.removeEventListener('abort', fn);
    },
  };
}

/**
 * The context of one request as the FUSE and server sessions make it: the caller's ids and a lazy
 * cancellation. A class, so the `signal` getter lives on the prototype instead of being defined
 * again on every request's object.
 */
export class RequestCtx {
  constructor(readonly uid: number, readonly gid: number, readonly pid: number, readonly cancel: LazyAbort) {}
  get signal(): AbortSignal {
    return this.cancel.signal;
  }
}
