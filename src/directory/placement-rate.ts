/**
 * The cap on placements per second in one process (directory.maxPlacementsPerSecond).
 * A relay death sends all its legacy clients back within the same second
 * (they re-dial on a fixed 2 s, no jitter), and each one's first call places
 * its session again: one etcd transaction each. The cap spreads that burst:
 * a placement over the rate waits its turn, in arrival order, for at most
 * `maxWaitMs` (directory.placementQueueMs); one that would wait longer is
 * refused at once with DirectoryUnavailableError (gRPC UNAVAILABLE, HTTP
 * 503), which legacy clients retry on their next 2 s re-dial, by then under
 * the rate. No queue grows past one wait's worth of placements.
 *
 * A generic cell rate algorithm (a token bucket that schedules instead of
 * polling): a burst of up to one second's worth passes at once, then one
 * placement every 1000/rate ms.
 *
 * Fair share (directory.maxPlacementShare): without it one client creating
 * sessions as fast as it could (random routes, each a placement) kept the
 * queue full, and every other client's new session was refused for as long
 * as it went on. Each client address is metered by a cell rate algorithm of
 * its own at `share` x the rate (one second's worth of burst, every
 * placement counted). A placement from an address over its share may wait
 * only half of `maxWaitMs`: the other half of the queue is always left to
 * the addresses within theirs. One address alone (a storm of its own
 * sessions; tests on loopback) still gets the whole rate, queued half as
 * long. Only addresses with a placement due in the future are kept: one
 * placement costs an entry for 1000/(share x rate) ms. A client holding more
 * than 1/share addresses (limit keys) is within each share: this protects
 * against one address, not against many.
 */
import { systemClock, type Clock } from '../session/clock.js';
import { DirectoryUnavailableError } from './directory.js';

const MS_PER_SECOND = 1000;
/** The most a client address's meter runs ahead of now (ms): a flood long over is forgiven within seconds. */
const MAX_CLIENT_DEBT_MS = 10_000;
/** Client entries looked at for expiry once the map has grown by this many since the last sweep. */
const SWEEP_EVERY = 1024;

export class PlacementRate {
  private readonly intervalMs: number;
  /** How far ahead of its slot a placement may run: the burst (one second's worth). */
  private readonly toleranceMs: number;
  /** The theoretical time the next placement is due (clock ms); in the past when idle. */
  private nextDueAt = -Infinity;
  private waitingCount = 0;
  private refusedCount = 0;
  private overShareCount = 0;
  /** One client address's meter (share > 0): interval and burst tolerance of its share. */
  private readonly clientIntervalMs: number;
  private readonly clientToleranceMs: number;
  /** Client address -> when its next placement is due (clock ms); only addresses with one due in the future. */
  private readonly clientDueAt = new Map<string, number>();
  private sweepAtSize = SWEEP_EVERY;
  /** Each refusal, as it happens (the limit metric and the refusal log): `overShare` when refused for the share of `client`. */
  onRefused: ((overShare: boolean, client: string | undefined) => void) | null = null;

  constructor(
    perSecond: number,
    private readonly maxWaitMs: number,
    private readonly clock: Clock = systemClock,
    /** The share of the rate one client address may take before it may queue only half as long (0 < share <= 1); 0: no per-address share. */
    private readonly share = 0,
  ) {
    this.intervalMs = MS_PER_SECOND / perSecond;
    this.toleranceMs = MS_PER_SECOND - this.intervalMs;
    this.clientIntervalMs = share > 0 ? MS_PER_SECOND / (perSecond * share) : 0;
    this.clientToleranceMs = Math.max(0, MS_PER_SECOND - this.clientIntervalMs);
  }

  /** Placements waiting for their turn now. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Placements refused so far (their wait would pass maxWaitMs, or their address was over its share). */
  get refused(): number {
    return this.refusedCount;
  }

  /** Of those, refused because their client address was over its share (in the half of the queue kept for others). */
  get refusedOverShare(): number {
    return this.overShareCount;
  }

  /** Client addresses metered now (tests: the map stays bounded). */
  get clientsMetered(): number {
    return this.clientDueAt.size;
  }

  /**
   * Resolves when this placement may run (at once while under the rate).
   * Rejects with DirectoryUnavailableError, without taking a turn, when its
   * wait would pass maxWaitMs (half of it when `client`, the asker's
   * per-address limit key, is over its share), or `budgetMs`, the caller's
   * own deadline, if shorter.
   */
  acquire(budgetMs = Infinity, client?: string): Promise<void> {
    const now = this.clock.now();
    const due = Math.max(this.nextDueAt, now);
    const wait = due - this.toleranceMs - now;
    const overShare = wait > 0 && client !== undefined && this.overShare(client, now);
    const limit = Math.min(overShare ? this.maxWaitMs / 2 : this.maxWaitMs, budgetMs);
    if (wait > limit) {
      this.refusedCount++;
      // Past the half kept for others, but within the whole queue: refused for the share, not the rate.
      const forShare = overShare && wait <= Math.min(this.maxWaitMs, budgetMs);
      if (forShare) this.overShareCount++;
      this.onRefused?.(forShare, client);
      return Promise.reject(
        forShare
          ? new DirectoryUnavailableError('placement share of one client address (directory.maxPlacementShare)', 'share_cap')
          : new DirectoryUnavailableError('placement rate cap (directory.maxPlacementsPerSecond)', 'rate_cap'),
      );
    }
    this.nextDueAt = due + this.intervalMs;
    if (client !== undefined) this.charge(client, now);
    if (wait <= 0) return Promise.resolve();
    this.waitingCount++;
    return new Promise((resolve) => {
      this.clock.setTimeout(() => {
        this.waitingCount--;
        resolve();
      }, wait);
    });
  }

  private overShare(client: string, now: number): boolean {
    if (this.share <= 0) return false;
    const dueAt = this.clientDueAt.get(client);
    return dueAt !== undefined && dueAt - this.clientToleranceMs > now;
  }

  /** One placement on `client`'s meter (also one that had a turn at once: the share is of all it placed). */
  private charge(client: string, now: number): void {
    if (this.share <= 0) return;
    const dueAt = Math.max(this.clientDueAt.get(client) ?? now, now) + this.clientIntervalMs;
    this.clientDueAt.set(client, Math.min(dueAt, now + MAX_CLIENT_DEBT_MS));
    if (this.clientDueAt.size < this.sweepAtSize) return;
    for (const [key, dueAt] of this.clientDueAt) if (dueAt <= now) this.clientDueAt.delete(key);
    this.sweepAtSize = this.clientDueAt.size + SWEEP_EVERY;
  }
}
