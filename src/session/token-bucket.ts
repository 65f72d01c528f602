import type { Clock } from './clock.js';

/**
 * Per-box rate limit: a bucket that starts full and refills one token every
 * `intervalMs`, up to `burst`. One token per message whatever its size; a
 * writer over the limit is slowed (it waits), never cut off.
 */
export class TokenBucket {
  private tokens: number;
  private lastRefill: number;

  constructor(
    private readonly intervalMs: number,
    private readonly burst: number,
    private readonly clock: Clock,
  ) {
    this.tokens = burst;
    this.lastRefill = clock.now();
  }

  /** Takes a token and returns 0, or returns the ms until one is available. */
  tryTake(): number {
    // Refill on every take, not only when empty: otherwise lastRefill stays
    // where the bucket last filled up, and time spent idle with a full bucket
    // is credited again once it empties (burst, then up to burst more at once).
    this.refill();
    if (this.tokens >= 1) {
      this.tokens -= 1;
      return 0;
    }
    return Math.max(1, this.lastRefill + this.intervalMs - this.clock.now());
  }

  private refill(): void {
    const now = this.clock.now();
    if (this.tokens >= this.burst) {
      // Full: nothing accrues while full, so the next interval starts now.
      this.lastRefill = now;
      return;
    }
    const earned = Math.floor((now - this.lastRefill) / this.intervalMs);
    if (earned <= 0) return;
    this.tokens = Math.min(this.burst, this.tokens + earned);
    this.lastRefill = this.tokens === this.burst ? now : this.lastRefill + earned * this.intervalMs;
  }
}
