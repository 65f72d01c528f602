/**
 * Places held per key (a client address, a connection), at most `perKey`
 * each: the streams of one connection, the held lookups of one address. A
 * place comes back through its release, which is idempotent.
 */
export class KeyedQuota {
  private readonly held = new Map<string, number>();

  constructor(readonly perKey: number) {}

  /** One more place for `key`: its release, or null when `key` holds `perKey` already. */
  take(key: string): (() => void) | null {
    const count = this.held.get(key) ?? 0;
    if (count >= this.perKey) return null;
    this.held.set(key, count + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.held.get(key) ?? 1) - 1;
      if (left > 0) this.held.set(key, left);
      else this.held.delete(key);
    };
  }

  /** Places `key` holds now. */
  heldBy(key: string): number {
    return this.held.get(key) ?? 0;
  }
}
