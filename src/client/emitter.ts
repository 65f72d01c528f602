/**
 * A minimal typed event emitter on plain JavaScript (no Node `events`), so
 * the browser path needs nothing beyond the language. A listener that throws
 * does not stop the others; the error is rethrown asynchronously, where an
 * application's global handler sees it, instead of breaking the connection.
 */
/**
 * Event name -> listener arguments. Constrained by mapping over the map's own
 * keys, not by an index signature, so a misspelled event name
 * (`on('presense', ...)`) does not compile.
 */
export type EventMap<E> = { [K in keyof E]: unknown[] };
export type Listener<Args extends unknown[]> = (...args: Args) => void;

export class Emitter<E extends EventMap<E>> {
  // Stored untyped; on() and emit() are typed per event, which keeps the pairs consistent.
  private readonly listeners = new Map<keyof E, Set<unknown>>();

  on<K extends keyof E>(event: K, listener: Listener<E[K]>): this {
    let set = this.listeners.get(event);
    if (!set) {
      set = new Set();
      this.listeners.set(event, set);
    }
    set.add(listener);
    return this;
  }

  off<K extends keyof E>(event: K, listener: Listener<E[K]>): this {
    this.listeners.get(event)?.delete(listener);
    return this;
  }

  /** Calls `listener` once, on the next `event`. */
  once<K extends keyof E>(event: K, listener: Listener<E[K]>): this {
    const wrapper = (...args: E[K]): void => {
      this.off(event, wrapper);
      listener(...args);
    };
    return this.on(event, wrapper);
  }

  protected emit<K extends keyof E>(event: K, ...args: E[K]): void {
    const set = this.listeners.get(event);
    if (!set) return;
    for (const listener of [...set]) {
      try {
        (listener as Listener<E[K]>)(...args);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }
}
