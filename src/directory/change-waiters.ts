/**
 * Lookups held until their answer may change. A party that could not reach
 * the relay a lookup named (or was told "not placed") asks again with a wait:
 * instead of the same answer at once, and another failed dial, it is answered
 * when the session's mapping changes, the named owner's registration goes or
 * turns draining, or the wait runs out. After a relay's death its thousands
 * of parties then hold one idle request each instead of retrying several
 * times a second, and all learn the new owner the moment the watch does.
 *
 * Bounded: at most `maxWaiting` held at once per process; beyond that a
 * lookup is answered at once, as without a wait.
 */

interface Waiter {
  route: string;
  /** The owner the asker could not use; null: it was told "not placed". */
  seen: string | null;
  wake: () => void;
}

export class ChangeWaiters {
  private readonly byRoute = new Map<string, Set<Waiter>>();
  private readonly byOwner = new Map<string, Set<Waiter>>();
  private count = 0;

  constructor(private readonly maxWaiting: number) {}

  /** Lookups held now. */
  get waiting(): number {
    return this.count;
  }

  /**
   * Resolves true once the answer for `route` may differ from `seen`, after
   * `ms`, or when `signal` aborts; false at once, holding nothing, when
   * `maxWaiting` are held already, `ms` is not positive or `signal` aborted.
   */
  wait(route: string, seen: string | null, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!(ms > 0) || this.count >= this.maxWaiting || signal?.aborted) return Promise.resolve(false);
    return new Promise((resolve) => {
      const waiter: Waiter = {
        route,
        seen,
        wake: () => {
          clearTimeout(timer);
          signal?.removeEventListener('abort', waiter.wake);
          this.remove(waiter);
          resolve(true);
        },
      };
      const timer = setTimeout(waiter.wake, ms);
      signal?.addEventListener('abort', waiter.wake, { once: true });
      add(this.byRoute, route, waiter);
      if (seen !== null) add(this.byOwner, seen, waiter);
      this.count++;
    });
  }

  /** The mapping of `route` changed (placed, moved or deleted). */
  routeChanged(route: string): void {
    wakeAll(this.byRoute.get(route));
  }

  /** Instance `id`'s registration went or changed (e.g. turned draining). */
  ownerChanged(id: string): void {
    wakeAll(this.byOwner.get(id));
  }

  /** Answers every held lookup now (shutdown). */
  wakeEveryone(): void {
    for (const set of [...this.byRoute.values()]) wakeAll(set);
  }

  private remove(waiter: Waiter): void {
    if (drop(this.byRoute, waiter.route, waiter)) this.count--;
    if (waiter.seen !== null) drop(this.byOwner, waiter.seen, waiter);
  }
}

function add(index: Map<string, Set<Waiter>>, key: string, waiter: Waiter): void {
  let set = index.get(key);
  if (!set) index.set(key, (set = new Set()));
  set.add(waiter);
}

function drop(index: Map<string, Set<Waiter>>, key: string, waiter: Waiter): boolean {
  const set = index.get(key);
  if (!set?.delete(waiter)) return false;
  if (set.size === 0) index.delete(key);
  return true;
}

function wakeAll(set: Set<Waiter> | undefined): void {
  if (!set) return;
  for (const waiter of [...set]) waiter.wake();
}
