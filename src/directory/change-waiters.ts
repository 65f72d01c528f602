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
import { KeyedWaiters } from '../session/keyed-waiters.js';

const routeKey = (route: string): string => `r:${route}`;
const ownerKey = (id: string): string => `o:${id}`;

export class ChangeWaiters {
  private readonly waiters: KeyedWaiters;

  constructor(maxWaiting: number) {
    this.waiters = new KeyedWaiters(maxWaiting);
  }

  /** Lookups held now. */
  get waiting(): number {
    return this.waiters.waiting;
  }

  /**
   * Resolves true once the answer for `route` may differ from `seen` (the
   * owner the asker could not use; null: it was told "not placed"), after
   * `ms`, or when `signal` aborts; false at once, holding nothing, when
   * `maxWaiting` are held already, `ms` is not positive or `signal` aborted.
   */
  wait(route: string, seen: string | null, ms: number, signal?: AbortSignal): Promise<boolean> {
    return this.waiters.wait(seen === null ? [routeKey(route)] : [routeKey(route), ownerKey(seen)], ms, signal);
  }

  /** The mapping of `route` changed (placed, moved or deleted). */
  routeChanged(route: string): void {
    this.waiters.wake(routeKey(route));
  }

  /** Instance `id`'s registration went or changed (e.g. turned draining). */
  ownerChanged(id: string): void {
    this.waiters.wake(ownerKey(id));
  }

  /** Answers every held lookup now (shutdown). */
  wakeEveryone(): void {
    this.waiters.wakeEveryone();
  }
}
