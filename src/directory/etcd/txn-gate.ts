/**
 * At most `limit` etcd transactions in flight per process; the rest wait in
 * order. A waiter still queued at its deadline gives up (the caller answers
 * "directory unavailable" instead of piling onto a slow etcd).
 */
import { DirectoryUnavailableError } from '../directory.js';

/** What a placement gets that waited past its deadline for a transaction slot (TxnGate and CreateBatcher alike). */
export function txnQueueTimeout(): DirectoryUnavailableError {
  return new DirectoryUnavailableError('too many directory transactions waiting', 'txn_queue');
}

interface Waiter {
  resolve(): void;
  timer: NodeJS.Timeout;
}

export class TxnGate {
  private inFlight = 0;
  private readonly queue: Waiter[] = [];
  /** Told when a slot goes free with nobody queued here (CreateBatcher takes slots only with tryAcquire). */
  private readonly freeListeners: (() => void)[] = [];

  constructor(private readonly limit: number) {}

  onFree(listener: () => void): void {
    this.freeListeners.push(listener);
  }

  get active(): number {
    return this.inFlight;
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** Takes a slot if one is free now (no queueing); the caller releases it. */
  tryAcquire(): boolean {
    if (this.inFlight >= this.limit || this.queue.length > 0) return false;
    this.inFlight++;
    return true;
  }

  /** Resolves when a slot is ours; rejects with DirectoryUnavailableError after `timeoutMs` in the queue. */
  acquire(timeoutMs: number): Promise<void> {
    if (this.inFlight < this.limit) {
      this.inFlight++;
      return Promise.resolve();
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = {
        resolve,
        timer: setTimeout(() => {
          const i = this.queue.indexOf(waiter);
          if (i >= 0) this.queue.splice(i, 1);
          reject(txnQueueTimeout());
        }, timeoutMs),
      };
      this.queue.push(waiter);
    });
  }

  release(): void {
    const next = this.queue.shift();
    if (next) {
      clearTimeout(next.timer);
      next.resolve(); // the slot passes straight to the next waiter
    } else {
      this.inFlight--;
      for (const listener of this.freeListeners) listener();
    }
  }

  async run<T>(timeoutMs: number, fn: () => Promise<T>): Promise<T> {
    await this.acquire(timeoutMs);
    try {
      return await fn();
    } finally {
      this.release();
    }
  }
}
