/**
 * What each long-lived gRPC call of ours keeps track of, in one place: the
 * client leaving (cancelled), the slot wait to abort then, what the call
 * holds (its stream count, its half or party), and ending exactly once.
 */
import type { EventEmitter } from 'node:events';
import { HashmailError } from '../session/errors.js';
import type { GrpcCallMetrics } from './grpc-v1/handlers.js';
import { CALL_OVER } from '../session/abort-reason.js';

const NOTHING = (): void => undefined;
const CANCELLED_CODE = 1;

export class GrpcCallScope {
  /** The client went away; nothing more is sent to it. */
  gone = false;
  ended = false;
  /** Only while waiting for a slot: an AbortController per idle stream would cost memory for hours. */
  private waiting: AbortController | null = null;
  private heldStream = NOTHING;
  private heldSlots = NOTHING;

  constructor(
    call: EventEmitter,
    private readonly metrics: GrpcCallMetrics,
    /** Tells the client how the call ended (null: OK). Not called once the client is gone. */
    private readonly report: (err: unknown) => void,
  ) {
    // A client that leaves frees what it holds at once, even mid-wait or mid-write.
    call.once('cancelled', () => {
      this.gone = true;
      this.waiting?.abort(CALL_OVER);
      this.end(new HashmailError('CANCELLED'));
    });
  }

  /** `end` as a function value, for callbacks. */
  readonly fail = (err: unknown): void => this.end(err);

  /** Holds the call's stream count (release function) until the end. */
  holdStream(release: () => void): void {
    this.heldStream = release;
  }

  /** A signal that aborts if the client leaves while we wait for a slot. */
  beginWait(): AbortSignal {
    this.waiting = new AbortController();
    return this.waiting.signal;
  }

  /**
   * The wait is over and `release` frees what it got. Returns false (and
   * releases at once) if the call ended meanwhile.
   */
  attached(release: () => void): boolean {
    this.waiting = null;
    if (this.ended) {
      release();
      return false;
    }
    this.heldSlots = release;
    return true;
  }

  end(err: unknown): void {
    if (this.ended) return;
    this.ended = true;
    this.waiting = null;
    this.heldStream();
    this.heldSlots();
    if (this.gone) {
      this.metrics.done(CANCELLED_CODE);
      return;
    }
    this.report(err);
  }
}
