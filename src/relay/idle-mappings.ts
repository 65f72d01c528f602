/**
 * A relay releases the directory mappings of sessions it no longer holds.
 * A mapping names this relay from its placement until the session's last
 * box is gone here (both parties left and the box's stale timeout passed,
 * DelCipherBox) or, for a placement nobody attached to (a lookup with
 * create and no party after it), from the placement; after
 * directory.releaseIdleMappingsMs of that it is deleted, oldest first, in
 * bounded sweeps. Without this every route ever placed here stayed in etcd,
 * and in every instance's watch-fed cache, as long as the relay lived.
 * A session that comes back after its release is simply placed again.
 */
import { createHash } from 'node:crypto';
import type { Directory } from '../directory/directory.js';
import type { Logger } from '../observe/logger.js';

export interface IdleMappingsOptions {
  /** How long a mapping stays with no session here before it is released (ms). */
  graceMs: number;
  /** Sweep period (ms). */
  sweepEveryMs: number;
  /** Mappings released per sweep at most (one etcd transaction per 128, one after another). */
  maxPerSweep: number;
}

/** The route of a session table's session key (the SID with bit 0 of byte 63 cleared, latin1). */
export function routeOfSessionKey(key: string): string {
  return createHash('sha256').update(Buffer.from(key, 'latin1')).digest('base64url');
}

export class IdleMappings {
  /** Routes with a session in the table now, and that session's key. */
  private readonly held = new Map<string, string>();
  /** Routes mapped (or last known mapped) here with no session, since when (ms); oldest first. */
  private readonly idle = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;
  private sweeping = false;
  /** Routes whose release is in flight, and its end: an admission for one waits (releasing). */
  private readonly inFlight = new Map<string, Promise<void>>();
  /** Mappings released so far (for /metrics). */
  released = 0;

  constructor(
    private readonly directory: Directory,
    private readonly options: IdleMappingsOptions,
    private readonly logger: Logger,
    private readonly now: () => number = () => performance.now(),
  ) {
    directory.on('routeGained', (route) => {
      if (!this.held.has(route)) this.markIdle(route);
    });
    directory.on('routeLost', (route) => this.idle.delete(route));
  }

  start(): void {
    this.timer ??= setInterval(() => void this.sweep(), this.options.sweepEveryMs);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** Mappings waiting out their grace now. */
  get waiting(): number {
    return this.idle.size;
  }

  /**
   * The release of `route` in flight, if any: a party admitted meanwhile
   * would lose its session the moment the delete lands, so admission waits
   * for it and then places the session anew (SessionRouter.admit).
   */
  releasing(route: string): Promise<void> | undefined {
    return this.inFlight.get(route);
  }

  sessionOpened(key: string): void {
    const route = routeOfSessionKey(key);
    this.held.set(route, key);
    this.idle.delete(route);
  }

  /** The session key of the session held here for `route`, if any. */
  sessionKeyOf(route: string): string | undefined {
    return this.held.get(route);
  }

  /** The session keys of every session held here. */
  heldSessionKeys(): string[] {
    return [...this.held.values()];
  }

  sessionClosed(key: string): void {
    const route = routeOfSessionKey(key);
    this.held.delete(route);
    this.markIdle(route);
  }

  /** Releases the mappings idle past the grace (at most maxPerSweep); the number released. */
  async sweep(): Promise<number> {
    if (this.sweeping) return 0;
    this.sweeping = true;
    const due: string[] = [];
    const now = this.now();
    for (const [route, since] of this.idle) {
      if (now - since < this.options.graceMs || due.length >= this.options.maxPerSweep) break;
      this.idle.delete(route);
      if (!this.held.has(route)) due.push(route);
    }
    const release = due.length > 0 ? this.directory.release(due) : Promise.resolve(0);
    const settled = release.then(
      () => undefined,
      () => undefined,
    );
    for (const route of due) this.inFlight.set(route, settled);
    try {
      const deleted = await release;
      this.released += deleted;
      return deleted;
    } catch (err) {
      // etcd away: try again on a later sweep (the grace is over, they go first).
      for (const route of due) if (!this.held.has(route) && !this.idle.has(route)) this.idle.set(route, now - this.options.graceMs);
      this.logger.debug({ err: (err as Error).message, routes: due.length }, 'idle mappings not released; retrying');
      return 0;
    } finally {
      for (const route of due) this.inFlight.delete(route);
      this.sweeping = false;
    }
  }

  private markIdle(route: string): void {
    this.idle.delete(route);
    this.idle.set(route, this.now());
  }
}
