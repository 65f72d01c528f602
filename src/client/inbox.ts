/**
 * Received messages waiting for the application's iterator. Bounded by
 * bytes: above INBOX_HIGH_WATER_BYTES the connection stops reading from the
 * relay (flow control then holds the peer back) and resumes below
 * INBOX_LOW_WATER_BYTES, where the transport can pause at all.
 */

/** Queued bytes at which reading from the relay pauses. */
export const INBOX_HIGH_WATER_BYTES = 1024 * 1024;
/** Queued bytes at which reading resumes. */
export const INBOX_LOW_WATER_BYTES = 256 * 1024;

export class Inbox implements AsyncIterator<Uint8Array> {
  private items: Uint8Array[] = [];
  private head = 0;
  private bytes = 0;
  private paused = false;
  private waiter: ((result: IteratorResult<Uint8Array>) => void) | null = null;
  private rejectWaiter: ((err: Error) => void) | null = null;
  private error: Error | null = null;
  private done = false;

  constructor(
    private readonly pause: () => void,
    private readonly resume: () => void,
    /** The reader stopped early (`break` out of for-await, or `return()`): the owner closes the connection. */
    private readonly stopped: () => Promise<void> = () => Promise.resolve(),
  ) {}

  get isPaused(): boolean {
    return this.paused;
  }

  push(msg: Uint8Array): void {
    if (this.done || this.error) return;
    if (this.waiter) return this.settle({ value: msg, done: false });
    this.items.push(msg);
    this.bytes += msg.length;
    if (!this.paused && this.bytes > INBOX_HIGH_WATER_BYTES) {
      this.paused = true;
      this.pause();
    }
  }

  /** Messages already queued are still delivered; then the iterator throws `err`. */
  fail(err: Error): void {
    if (this.done || this.error) return;
    this.error = err;
    if (this.waiter && this.head >= this.items.length) {
      const reject = this.rejectWaiter;
      this.waiter = null;
      this.rejectWaiter = null;
      reject?.(err);
    }
  }

  /** Ends the iteration now; queued messages are dropped. */
  end(): void {
    if (this.done) return;
    this.done = true;
    this.items = [];
    this.head = 0;
    this.bytes = 0;
    this.settle({ value: undefined, done: true });
  }

  next(): Promise<IteratorResult<Uint8Array>> {
    if (this.head < this.items.length) {
      const value = this.items[this.head++];
      this.bytes -= value.length;
      if (this.head > 1024 && this.head * 2 > this.items.length) {
        this.items = this.items.slice(this.head);
        this.head = 0;
      }
      if (this.paused && this.bytes < INBOX_LOW_WATER_BYTES) {
        this.paused = false;
        this.resume();
      }
      return Promise.resolve({ value, done: false });
    }
    if (this.done) return Promise.resolve({ value: undefined, done: true });
    if (this.error) return Promise.reject(this.error);
    if (this.waiter) return Promise.reject(new Error('a connection supports one reader at a time'));
    return new Promise((resolve, reject) => {
      this.waiter = resolve;
      this.rejectWaiter = reject;
    });
  }

  /**
   * `break` (or `return`, or a throw) out of a for-await: the connection is
   * closed, as an iterator that owns a resource does; resolves once closed.
   */
  async return(): Promise<IteratorResult<Uint8Array>> {
    this.end();
    await this.stopped();
    return { value: undefined, done: true };
  }

  private settle(result: IteratorResult<Uint8Array>): void {
    const resolve = this.waiter;
    this.waiter = null;
    this.rejectWaiter = null;
    resolve?.(result);
  }
}
