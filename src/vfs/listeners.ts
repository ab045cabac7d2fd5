// The listeners of one Vfs's watch(): told of each change in turn. A listener that throws or
// rejects is reported through `onError` and never stops the others or becomes an unhandled
// rejection (a source's change must not crash the daemon).

import type { ChangeEvent, ChangeListener } from './types.js';

export class ChangeListeners {
  private readonly set = new Set<ChangeListener>();

  constructor(private readonly onError: (err: unknown) => void = () => {}) {}

  get size(): number {
    return this.set.size;
  }

  add(listener: ChangeListener): () => void {
    this.set.add(listener);
    return () => void this.set.delete(listener);
  }

  clear(): void {
    this.set.clear();
  }

  /** Tells every listener; returns what they are still doing (settling, never rejecting). */
  emit(ev: ChangeEvent): Promise<void>[] {
    const acting: Promise<void>[] = [];
    for (const l of this.set) {
      try {
        const p = l(ev);
        if (p) acting.push(p.catch(this.onError));
      } catch (err) {
        this.onError(err);
      }
    }
    return acting;
  }
}
