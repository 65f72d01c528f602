/**
 * A queue of events pushed by a callback API (socket messages, stream data)
 * that a test pulls one at a time with a deadline, so no test waits forever
 * and none sleeps to "let things arrive".
 */

export const DEFAULT_WAIT_MS = 10_000;

export class AsyncQueue<T> {
  private readonly items: T[] = [];
  private readonly waiters: ((item: T) => void)[] = [];
  private ended: T | undefined;

  push(item: T): void {
    const waiter = this.waiters.shift();
    if (waiter) waiter(item);
    else this.items.push(item);
  }

  /**
   * After `end`, every later `next` (once the queued items are consumed)
   * yields `last` again: the close of a socket is reported to every reader.
   */
  end(last: T): void {
    if (this.ended !== undefined) return;
    this.ended = last;
    this.push(last);
    for (const waiter of this.waiters.splice(0)) waiter(last);
  }

  get size(): number {
    return this.items.length;
  }

  /** The next item; rejects with `what` in the text if none comes within `timeoutMs`. */
  next(timeoutMs = DEFAULT_WAIT_MS, what = 'event'): Promise<T> {
    const item = this.items.shift();
    if (item !== undefined) {
      if (item === this.ended) this.items.unshift(item);
      return Promise.resolve(item);
    }
    if (this.ended !== undefined) return Promise.resolve(this.ended);
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        const i = this.waiters.indexOf(onItem);
        if (i >= 0) this.waiters.splice(i, 1);
        reject(new Error(`no ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      const onItem = (it: T): void => {
        clearTimeout(timer);
        resolve(it);
      };
      this.waiters.push(onItem);
    });
  }
}

/** Resolves when `emitter` emits `event`, rejects after `timeoutMs`. */
export function once<T extends unknown[]>(
  emitter: { once(event: string, fn: (...args: T) => void): unknown; off(event: string, fn: (...args: T) => void): unknown },
  event: string,
  timeoutMs = DEFAULT_WAIT_MS,
): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const onEvent = (...args: T): void => {
      clearTimeout(timer);
      resolve(args);
    };
    const timer = setTimeout(() => {
      emitter.off(event, onEvent);
      reject(new Error(`no '${event}' within ${timeoutMs} ms`));
    }, timeoutMs);
    emitter.once(event, onEvent);
  });
}

/**
 * Polls `probe` until it returns true, at most `attempts` times `intervalMs`
 * apart: for state only observable by asking (metrics), never for events.
 */
export async function pollUntil(probe: () => Promise<boolean>, what: string, attempts = 200, intervalMs = 50): Promise<void> {
  for (let i = 0; i < attempts; i++) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`${what}: not reached after ${attempts} polls of ${intervalMs} ms`);
}

/** `promise`, or a rejection naming `what` after `timeoutMs`. */
export function withTimeout<T>(promise: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}
