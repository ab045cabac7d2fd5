// An AbortController made on first use. Every request carries a cancellation signal, but most finish
// without anyone looking at it; making a controller and its signal costs several microseconds, a
// noticeable share of a request answered from a cache.

export class LazyAbort {
  private ac: AbortController | undefined;
  aborted = false;

  get signal(): AbortSignal {
    if (!this.ac) {
      this.ac = new AbortController();
      if (this.aborted) this.ac.abort();
    }
    return this.ac.signal;
  }

  abort(): void {
    this.aborted = true;
    this.ac?.abort();
  }
}
