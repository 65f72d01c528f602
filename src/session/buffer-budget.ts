/**
 * Bytes held for readers across the whole process: queued in boxes, or
 * handed to a reader's transport and not yet flushed. Per-box queues are
 * bounded already; this caps their sum, strictly, so that neither many idle
 * boxes full of data nor readers that stop reading can exhaust memory.
 * Writers past the limit wait in arrival order (push-back, as the legacy
 * spec asks), and each is granted its reservation before it is woken, so a
 * large message is not starved by a stream of small ones.
 */
export class BufferBudget {
  private used = 0;
  private waiters: BudgetWaiter[] = [];
  private head = 0;

  constructor(readonly limitBytes: number) {}

  get usedBytes(): number {
    return this.used;
  }

  /** Whether `bytes` would be reserved now: they fit and no writer waits ahead. */
  canReserve(bytes: number): boolean {
    return this.head === this.waiters.length && this.used + bytes <= this.limitBytes;
  }

  /** Reserves `bytes` and returns true, or returns false (then wait()). */
  tryReserve(bytes: number): boolean {
    if (!this.canReserve(bytes)) return false;
    this.used += bytes;
    return true;
  }

  /**
   * Queues for `bytes`; `granted` runs once they are reserved for the caller
   * (in arrival order). cancel() on the result gives up a wait not yet granted.
   */
  wait(bytes: number, granted: () => void): BudgetWaiter {
    const waiter = new BudgetWaiter(this, bytes, granted);
    this.waiters.push(waiter);
    this.grantWaiting();
    return waiter;
  }

  release(bytes: number): void {
    this.used -= bytes;
    if (this.head < this.waiters.length) this.grantWaiting();
  }

  /** @internal BudgetWaiter.cancel: the head may have been blocking smaller waiters. */
  cancelled(): void {
    this.grantWaiting();
  }

  private grantWaiting(): void {
    while (this.head < this.waiters.length) {
      const waiter = this.waiters[this.head];
      if (!waiter.pending) {
        this.head++;
        continue;
      }
      if (this.used + waiter.bytes > this.limitBytes) break;
      this.used += waiter.bytes;
      this.head++;
      waiter.grant();
    }
    if (this.head === this.waiters.length) {
      this.waiters = [];
      this.head = 0;
    }
  }
}

export class BudgetWaiter {
  pending = true;

  constructor(
    private readonly budget: BufferBudget,
    readonly bytes: number,
    private readonly granted: () => void,
  ) {}

  /** @internal called by the budget with the bytes reserved. */
  grant(): void {
    this.pending = false;
    this.granted();
  }

  /** Gives up the wait; nothing is reserved. No effect once granted. */
  cancel(): void {
    if (!this.pending) return;
    this.pending = false;
    this.budget.cancelled();
  }
}
