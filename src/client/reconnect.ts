// Getting a link back: exponential backoff with jitter between attempts (50 ms doubling to 2 s), and
// a liveness check that notices a connection that went silent (a blackholed network, a frozen peer)
// so the reconnect loop can start instead of waiting on TCP for minutes.

import type { Logger } from '../lib/log.js';
import type { Link } from './link.js';

export interface RetryPolicy {
  /** First backoff step (default 50 ms); doubles per failed attempt up to maxMs. */
  baseMs: number;
  /** The longest wait between attempts (default 2 s). */
  maxMs: number;
}

/** The wait before attempt n (0-based): the doubling step, jittered to half..full so clients spread out. */
export function backoffMs(attempt: number, policy: RetryPolicy, random: () => number = Math.random): number {
  const step = Math.min(policy.maxMs, policy.baseMs * 2 ** Math.min(attempt, 30));
  return step / 2 + (random() * step) / 2;
}

/** Runs attempts to open a link until one succeeds or stop() is called. */
export class Reconnector {
  private running = false;
  private stopped = false;
  private wake: (() => void) | undefined;
  /** Failed attempts in the current outage. */
  attempts = 0;
  /** Why the last attempt failed, for `wirefs status`. */
  lastError = '';

  constructor(
    private readonly open: () => Promise<Link>,
    private readonly onLink: (link: Link) => void,
    private readonly policy: RetryPolicy,
    private readonly log: Logger,
  ) {}

  start(): void {
    if (this.running || this.stopped) return;
    this.running = true;
    this.attempts = 0;
    void this.loop();
  }

  stop(): void {
    this.stopped = true;
    this.wake?.();
  }

  private async loop(): Promise<void> {
    while (!this.stopped) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, backoffMs(this.attempts, this.policy));
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      if (this.stopped) break;
      try {
        const link = await this.open();
        if (this.stopped) {
          link.socket.destroy();
          break;
        }
        this.running = false;
        this.onLink(link);
        return;
      } catch (err) {
        this.attempts++;
        this.lastError = (err as Error).message;
        this.log.debug(`reconnect attempt ${this.attempts} failed: ${this.lastError}`);
      }
    }
    this.running = false;
  }
}

/**
 * Declares a link dead when nothing has arrived for `deadAfter` intervals while it was asked
 * (a PING goes out after one silent interval). Data of any kind counts as a sign of life.
 */
export class Liveness {
  private lastRx = Date.now();
  private readonly timer: NodeJS.Timeout;

  constructor(intervalMs: number, ping: () => void, dead: (silentMs: number) => void, deadAfter = 3) {
    this.timer = setInterval(() => {
      const silent = Date.now() - this.lastRx;
      if (silent >= intervalMs * deadAfter) dead(silent);
      else if (silent >= intervalMs) ping();
    }, intervalMs);
    this.timer.unref();
  }

  touch(): void {
    this.lastRx = Date.now();
  }

  stop(): void {
    clearInterval(this.timer);
  }
}
