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

  release(bytes: number): void {
    this.used -= bytes;
  }
}
