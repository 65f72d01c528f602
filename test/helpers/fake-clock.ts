/**
 * An in-memory Clock for unit tests: time moves only when a test calls
 * `advance`, which fires due timers in order (by due time, then by the order
 * they were set), so no unit test sleeps or depends on real timers.
 */
import type { Clock, TimerHandle } from '../../src/session/clock.js';

interface FakeTimer extends TimerHandle {
  readonly id: number;
  readonly due: number;
  readonly fn: () => void;
}

export class FakeClock implements Clock {
  private time: number;
  private nextId = 1;
  private readonly timers = new Map<number, FakeTimer>();

  constructor(start = 1_000_000) {
    this.time = start;
  }

  now(): number {
    return this.time;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const timer: FakeTimer = {
      id: this.nextId++,
      due: this.time + Math.max(0, ms),
      fn,
      unref: () => timer,
    };
    this.timers.set(timer.id, timer);
    return timer;
  }

  clearTimeout(handle: TimerHandle): void {
    const id = (handle as Partial<FakeTimer>).id;
    if (id !== undefined) this.timers.delete(id);
  }

  /** Timers set and not yet fired or cleared. */
  get pending(): number {
    return this.timers.size;
  }

  /**
   * Moves time forward by `ms`, firing every timer due on the way, earliest
   * first, with `now()` equal to its due time while it runs. A timer set by a
   * callback fires in the same call if it falls due within the window.
   * Promise callbacks are not run here: await `flush()` after advancing.
   */
  advance(ms: number): void {
    const end = this.time + ms;
    for (;;) {
      const next = this.nextDue(end);
      if (!next) break;
      this.timers.delete(next.id);
      this.time = next.due;
      next.fn();
    }
    this.time = end;
  }

  private nextDue(end: number): FakeTimer | undefined {
    let best: FakeTimer | undefined;
    for (const t of this.timers.values()) {
      if (t.due > end) continue;
      if (!best || t.due < best.due || (t.due === best.due && t.id < best.id)) best = t;
    }
    return best;
  }
}

/**
 * Lets every pending promise callback run: setImmediate fires only after the
 * microtask queue is empty. Twice, for chains that hop through a resolved
 * promise more than once per turn.
 */
export async function flush(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve));
}

/** Where a promise stands after a flush: lets a test assert "still pending" without waiting. */
export type Settled<T> = { state: 'pending' } | { state: 'fulfilled'; value: T } | { state: 'rejected'; error: unknown };

export function track<T>(p: Promise<T>): { readonly result: Settled<T> } {
  const box: { result: Settled<T> } = { result: { state: 'pending' } };
  p.then(
    (value) => {
      box.result = { state: 'fulfilled', value };
    },
    (error: unknown) => {
      box.result = { state: 'rejected', error };
    },
  );
  return box;
}
