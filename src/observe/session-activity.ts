/**
 * Classifies sessions (SID pairs) by read rate over a fixed window, for the
 * legacy `hashmail_mailbox_{active,standby,inuse}_sessions` gauges that
 * operator dashboards already chart. The hot path only bumps `Box.delivered`;
 * this sampler diffs it once a window, so no per-message work is added.
 */
import { systemClock, type Clock, type TimerHandle } from '../session/clock.js';
import type { SessionTable } from '../session/session-table.js';

/** Reads per second at or above which a session counts as "in use" (legacy threshold). */
export const IN_USE_READS_PER_SEC = 0.5;
/**
 * Shortest elapsed time a rate is computed over. Keeps a scrape right after
 * start (or two back-to-back samples) from dividing a handful of reads by a
 * few milliseconds and calling every session "in use".
 */
const MIN_RATE_ELAPSED_MS = 1000;
const MS_PER_SEC = 1000;

export interface SessionActivityCounts {
  /** Every session that exists. */
  active: number;
  /** Read rate above 0 but below IN_USE_READS_PER_SEC. */
  standby: number;
  /** Read rate at or above IN_USE_READS_PER_SEC. */
  inUse: number;
}

export class SessionActivitySampler {
  private readonly startedAt: number;
  private lastSampleAt: number | null = null;
  private last: SessionActivityCounts | null = null;
  private timer: TimerHandle | null = null;

  constructor(
    private readonly table: SessionTable,
    private readonly windowMs: number,
    private readonly clock: Clock = systemClock,
  ) {
    this.startedAt = clock.now();
  }

  /** Samples every window until stop(); the timer never keeps the process alive. */
  start(): void {
    if (this.timer) return;
    const tick = (): void => {
      this.sampleNow();
      this.timer = this.clock.setTimeout(tick, this.windowMs);
      this.timer.unref?.();
    };
    this.timer = this.clock.setTimeout(tick, this.windowMs);
    this.timer.unref?.();
  }

  stop(): void {
    if (!this.timer) return;
    this.clock.clearTimeout(this.timer);
    this.timer = null;
  }

  /** Closes the current window: classifies by reads since the previous sample. */
  sampleNow(): SessionActivityCounts {
    const now = this.clock.now();
    const elapsedMs = Math.max(now - (this.lastSampleAt ?? this.startedAt), MIN_RATE_ELAPSED_MS);
    const counts: SessionActivityCounts = { active: 0, standby: 0, inUse: 0 };
    for (const session of this.table.sessions()) {
      const delivered = session.delivered;
      // The baseline lives on the session (a new session starts at 0): a map
      // of every session per window would be thousands of entries of garbage.
      const before = session.deliveredAtLastSample;
      session.deliveredAtLastSample = delivered;
      // A box deleted and recreated within the session restarts its count.
      const reads = delivered >= before ? delivered - before : delivered;
      classify(counts, reads, elapsedMs);
    }
    this.lastSampleAt = now;
    this.last = counts;
    return counts;
  }

  /**
   * The last completed window; before the first one completes, reads since
   * each session's creation over the time since this sampler was made.
   */
  current(): SessionActivityCounts {
    if (this.last) return this.last;
    const elapsedMs = Math.max(this.clock.now() - this.startedAt, MIN_RATE_ELAPSED_MS);
    const counts: SessionActivityCounts = { active: 0, standby: 0, inUse: 0 };
    for (const session of this.table.sessions()) classify(counts, session.delivered, elapsedMs);
    return counts;
  }
}

function classify(counts: SessionActivityCounts, reads: number, elapsedMs: number): void {
  counts.active++;
  if (reads <= 0) return;
  if ((reads * MS_PER_SEC) / elapsedMs >= IN_USE_READS_PER_SEC) counts.inUse++;
  else counts.standby++;
}
