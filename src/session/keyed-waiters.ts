/**
 * Callers waiting for something to happen to a key (a route, an instance, a
 * session): each wait is indexed under one or more keys and ends when any of
 * them is woken, after its own time limit, or when its signal aborts.
 * Bounded: past `maxWaiting` waits at once, a new wait ends at once.
 */

interface Waiter {
  keys: readonly string[];
  wake: () => void;
}

export class KeyedWaiters {
  private readonly byKey = new Map<string, Set<Waiter>>();
  private count = 0;

  constructor(private readonly maxWaiting: number) {}

  /** Waits in progress. */
  get waiting(): number {
    return this.count;
  }

  /**
   * Resolves true once one of `keys` is woken, after `ms`, or when `signal`
   * aborts; false at once, holding nothing, when `maxWaiting` wait already,
   * `ms` is not positive or `signal` aborted.
   */
  wait(keys: readonly string[], ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!(ms > 0) || this.count >= this.maxWaiting || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        keys,
        wake: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', waiter.wake);
          this.remove(waiter);
          resolve(true);
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      signal?.addEventListener('abort', waiter.wake, { once: true });
      for (const key of keys) {
        let set = this.byKey.get(key);
        if (!set) this.byKey.set(key, (set = new Set()));
        set.add(waiter);
      }
      this.count++;
    });
  }

  /** Ends every wait indexed under `key`. */
  wake(key: string): void {
    const set = this.byKey.get(key);
    if (set) for (const waiter of [...set]) waiter.wake();
  }

  /** Ends every wait now (shutdown). */
  wakeEveryone(): void {
    for (const set of [...this.byKey.values()]) for (const waiter of [...set]) waiter.wake();
  }

  private remove(waiter: Waiter): void {
    let indexed = false;
    for (const key of waiter.keys) {
      const set = this.byKey.get(key);
      if (!set?.delete(waiter)) continue;
      indexed = true;
      if (set.size === 0) this.byKey.delete(key);
    }
    if (indexed) this.count--;
  }
}
