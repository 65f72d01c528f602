import type { Clock, TimerHandle } from './clock.js';
import { HashmailError, type HashmailErrorCode } from './errors.js';

/** How long a caller waits for a taken slot before "... stream occupied" (legacy: 250 ms). */
export const ACQUIRE_WAIT_MS = 250;

/** Whoever owns a slot (its box) hears when it is taken or freed. */
export interface SlotOwner {
  slotChanged(slot: Slot): void;
}

/** Who holds a slot. `onClosed` is how the box tells a holder it was torn down. */
export interface Lease {
  readonly slot: Slot;
  /** Set by the transport; called once if the box closes while this lease is held. */
  onClosed?: (err: HashmailError) => void;
}

interface Waiter {
  resolve(lease: Lease): void;
  reject(err: HashmailError): void;
  timer: TimerHandle;
}

/**
 * A read or write slot of a box: one holder at a time. A caller finding it
 * taken waits up to `waitMs` for the holder to leave, then fails; the current
 * holder is never evicted (legacy behaviour).
 */
export class Slot {
  private holder: Lease | null = null;
  /** Allocated on the first wait: most slots never have a waiter. */
  private waiters: Waiter[] | null = null;
  private closedWith: HashmailError | null = null;

  constructor(
    private readonly occupiedCode: HashmailErrorCode,
    private readonly clock: Clock,
    /** Told when the slot is taken or freed; an object, not a closure, to keep idle slots small. */
    private readonly owner: SlotOwner,
  ) {}

  get taken(): boolean {
    return this.holder !== null;
  }

  get lease(): Lease | null {
    return this.holder;
  }

  /**
   * Resolves with the lease, or rejects with "occupied" after `waitMs`. A
   * caller that goes away while waiting aborts `signal` and gets CANCELLED,
   * so no lease is ever granted to someone who left.
   */
  acquire(waitMs: number = ACQUIRE_WAIT_MS, signal?: AbortSignal): Promise<Lease> {
    if (this.closedWith) return Promise.reject(this.closedWith);
    if (signal?.aborted) return Promise.reject(new HashmailError('CANCELLED'));
    if (!this.holder) return Promise.resolve(this.grant());
    return new Promise<Lease>((resolve, reject) => {
      const onAbort = (): void => {
        this.clock.clearTimeout(waiter.timer);
        this.dropWaiter(waiter);
        reject(new HashmailError('CANCELLED'));
      };
      const waiter: Waiter = {
        resolve: (lease) => {
          signal?.removeEventListener('abort', onAbort);
          resolve(lease);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
        timer: this.clock.setTimeout(() => {
          this.dropWaiter(waiter);
          waiter.reject(new HashmailError(this.occupiedCode));
        }, waitMs),
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      (this.waiters ??= []).push(waiter);
    });
  }

  release(lease: Lease): void {
    if (this.holder !== lease) return;
    this.holder = null;
    lease.onClosed = undefined;
    if (!this.closedWith && this.waiters && this.waiters.length > 0) {
      const next = this.waiters.shift() as Waiter;
      this.clock.clearTimeout(next.timer);
      next.resolve(this.grant());
      return;
    }
    this.owner.slotChanged(this);
  }

  /** Tears the slot down: waiters get `waiterErr`, the holder `holderErr`. */
  close(holderErr: HashmailError, waiterErr: HashmailError): void {
    if (this.closedWith) return;
    this.closedWith = waiterErr;
    for (const waiter of this.waiters?.splice(0) ?? []) {
      this.clock.clearTimeout(waiter.timer);
      waiter.reject(waiterErr);
    }
    const holder = this.holder;
    if (holder?.onClosed) holder.onClosed(holderErr);
  }

  private grant(): Lease {
    const lease: Lease = { slot: this };
    this.holder = lease;
    this.owner.slotChanged(this);
    return lease;
  }

  private dropWaiter(waiter: Waiter): void {
    const i = this.waiters?.indexOf(waiter) ?? -1;
    if (i >= 0) this.waiters?.splice(i, 1);
  }
}
