/**
 * Exponential backoff with full jitter: the n-th wait is uniformly random in
 * [0, min(INITIAL_BACKOFF_MS * 2^n, MAX_BACKOFF_MS)]. Full jitter spreads a
 * fleet of clients that lost the same relay over the whole window instead of
 * bringing them back in lock-step, as LNC's fixed 2 s retry does.
 */

/** Ceiling of the first wait (ms). */
export const INITIAL_BACKOFF_MS = 100;
/** Largest ceiling (ms): a client never waits longer than this between attempts. */
export const MAX_BACKOFF_MS = 10_000;
/** Growth of the ceiling per attempt. */
export const BACKOFF_MULTIPLIER = 2;

export interface BackoffOptions {
  /** Ceiling of the first wait (ms); default INITIAL_BACKOFF_MS. */
  initialMs?: number;
  /** Cap of the ceiling (ms); default MAX_BACKOFF_MS. */
  maxMs?: number;
  /** Default BACKOFF_MULTIPLIER. */
  multiplier?: number;
  /** Uniform random in [0, 1); injectable for tests. Default Math.random. */
  random?: () => number;
}

export class Backoff {
  private readonly initialMs: number;
  private readonly maxMs: number;
  private readonly multiplier: number;
  private readonly random: () => number;
  private ceiling: number;
  private attempts = 0;

  constructor(options: BackoffOptions = {}) {
    this.initialMs = options.initialMs ?? INITIAL_BACKOFF_MS;
    this.maxMs = options.maxMs ?? MAX_BACKOFF_MS;
    this.multiplier = options.multiplier ?? BACKOFF_MULTIPLIER;
    this.random = options.random ?? Math.random;
    if (!(this.initialMs > 0) || !(this.maxMs >= this.initialMs) || !(this.multiplier >= 1)) {
      throw new RangeError('backoff: need 0 < initialMs <= maxMs and multiplier >= 1');
    }
    this.ceiling = this.initialMs;
  }

  /** Waits handed out since the last reset. */
  get attempt(): number {
    return this.attempts;
  }

  /** Ceiling of the next wait (ms). */
  get currentCeilingMs(): number {
    return this.ceiling;
  }

  /** The next wait (ms), uniformly random in [0, ceiling]; then the ceiling grows up to the cap. */
  next(): number {
    const delay = Math.min(this.ceiling, Math.max(0, this.random() * this.ceiling));
    this.ceiling = Math.min(this.ceiling * this.multiplier, this.maxMs);
    this.attempts++;
    return delay;
  }

  /** After a success: the next wait starts from the first ceiling again. */
  reset(): void {
    this.ceiling = this.initialMs;
    this.attempts = 0;
  }
}

/** Resolves after `ms`, or rejects with the signal's reason once it aborts. */
export function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) return reject(signal.reason);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(signal?.reason);
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}
