import { limitReached } from './errors.js';

/**
 * Bytes held in box queues across the whole process. Per-box queues are
 * bounded already; this caps their sum so many idle boxes full of data cannot
 * exhaust memory.
 */
export class BufferBudget {
  private used = 0;

  constructor(readonly limitBytes: number) {}

  get usedBytes(): number {
    return this.used;
  }

  /** Reserves `bytes` or throws RESOURCE_EXHAUSTED naming the limit. */
  reserve(bytes: number): void {
    if (this.used + bytes > this.limitBytes) {
      throw limitReached('limits.maxBufferedBytes', this.limitBytes);
    }
    this.used += bytes;
  }

  /** Reserves `bytes` and returns true, or returns false if that would pass the limit. */
  tryReserve(bytes: number): boolean {
    if (this.used + bytes > this.limitBytes) return false;
    this.used += bytes;
    return true;
  }

  /**
   * Reserves `bytes` even past the limit. Only for a box holding nothing (see
   * MessageQueue.tryPush), so the overshoot is at most one message per box.
   */
  reserveOverLimit(bytes: number): void {
    this.used += bytes;
  }

  release(bytes: number): void {
    this.used -= bytes;
  }
}
