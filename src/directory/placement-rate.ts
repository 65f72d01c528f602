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
 */
import { systemClock, type Clock } from '../session/clock.js';
import { DirectoryUnavailableError } from './directory.js';

const MS_PER_SECOND = 1000;

export class PlacementRate {
  private readonly intervalMs: number;
  /** How far ahead of its slot a placement may run: the burst (one second's worth). */
  private readonly toleranceMs: number;
  /** The theoretical time the next placement is due (clock ms); in the past when idle. */
  private nextDueAt = -Infinity;
  private waitingCount = 0;
  private refusedCount = 0;
  /** Each refusal, as it happens (the limit metric and the refusal log). */
  onRefused: (() => void) | null = null;

  constructor(
    perSecond: number,
    private readonly maxWaitMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.intervalMs = MS_PER_SECOND / perSecond;
    this.toleranceMs = MS_PER_SECOND - this.intervalMs;
  }

  /** Placements waiting for their turn now. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Placements refused so far because their wait would pass maxWaitMs. */
  get refused(): number {
    return this.refusedCount;
  }

  /**
   * Resolves when this placement may run (at once while under the rate).
   * Rejects with DirectoryUnavailableError, without taking a turn, when its
   * wait would pass maxWaitMs (or `budgetMs`, the caller's own deadline, if shorter).
   */
  acquire(budgetMs = Infinity): Promise<void> {
    const now = this.clock.now();
    const due = Math.max(this.nextDueAt, now);
    const wait = due - this.toleranceMs - now;
    if (wait > Math.min(this.maxWaitMs, budgetMs)) {
      this.refusedCount++;
      this.onRefused?.();
      return Promise.reject(new DirectoryUnavailableError('placement rate cap (directory.maxPlacementsPerSecond)', 'rate_cap'));
    }
    this.nextDueAt = due + this.intervalMs;
    if (wait <= 0) return Promise.resolve();
    this.waitingCount++;
    return new Promise((resolve) => {
      this.clock.setTimeout(() => {
        this.waitingCount--;
        resolve();
      }, wait);
    });
  }
}
