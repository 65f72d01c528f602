/**
 * Warn lines for refusals by a limit and for bad requests, at most one per
 * limit (or error code) per interval. A flood of refused connections or bad
 * requests must not become a flood of log lines (one line each made 17,990
 * lines in one flood, 20,000 in 8 s for malformed JSON): the first after a
 * quiet interval is logged at once, later ones are counted and written as
 * one line with the count when the interval is over. Every one is still
 * counted in hashmail_limit_hits_total / hashmail_errors_total by the caller.
 */
import type { Logger } from './logger.js';
import { systemClock, type Clock, type TimerHandle } from '../session/clock.js';

interface LimitState {
  /** When the last line for this limit was written (clock ms). */
  lastLineAt: number;
  /** Refusals not yet in a line. */
  pending: number;
  /** The line due at the end of the interval, if one is scheduled. */
  timer: TimerHandle | null;
  /**
   * Where the latest one came from. Bad requests: transport, call, our own
   * wording (never client bytes); limits: the refused client's address.
   */
  sample: Record<string, string> | null;
}

const BAD_REQUEST_PREFIX = 'bad request:';

export class RefusalLog {
  /** One entry per config key that ever refused: a handful, never per client. */
  private readonly limits = new Map<string, LimitState>();

  constructor(
    private readonly logger: Logger,
    private readonly intervalMs: number,
    private readonly clock: Clock = systemClock,
  ) {}

  /**
   * One refusal by the limit named by its config key (e.g.
   * `limits.maxConnectionsPerAddress`) of `client` (its address or per-address
   * limit key; the line names the latest one refused).
   */
  refused(limit: string, client?: string): void {
    this.count(limit, client === undefined ? null : { client });
  }

  /** One bad request answered with `code`; `sample` says where (no client input in it). */
  badRequest(code: string, sample: Record<string, string>): void {
    this.count(`${BAD_REQUEST_PREFIX}${code}`, sample);
  }

  private count(limit: string, sample: Record<string, string> | null): void {
    let state = this.limits.get(limit);
    if (!state) {
      state = { lastLineAt: -Infinity, pending: 0, timer: null, sample: null };
      this.limits.set(limit, state);
    }
    state.sample = sample;
    state.pending++;
    if (state.timer) return;
    const wait = state.lastLineAt + this.intervalMs - this.clock.now();
    if (wait <= 0) {
      this.write(limit, state);
      return;
    }
    const due = state;
    state.timer = this.clock.setTimeout(() => {
      due.timer = null;
      this.write(limit, due);
    }, wait);
    state.timer.unref?.();
  }

  /** Writes every pending count now (shutdown: no refusal goes unlogged). */
  flush(): void {
    for (const [limit, state] of this.limits) {
      if (state.timer) this.clock.clearTimeout(state.timer);
      state.timer = null;
      if (state.pending > 0) this.write(limit, state);
    }
  }

  private write(limit: string, state: LimitState): void {
    if (limit.startsWith(BAD_REQUEST_PREFIX)) {
      const code = limit.slice(BAD_REQUEST_PREFIX.length);
      this.logger.warn({ ...state.sample, code, count: state.pending, intervalMs: this.intervalMs }, 'bad requests');
    } else {
      this.logger.warn({ limit, refused: state.pending, intervalMs: this.intervalMs, ...state.sample }, 'refused by limit');
    }
    state.pending = 0;
    state.lastLineAt = this.clock.now();
  }
}
