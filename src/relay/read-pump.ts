/**
 * Moves messages from a reader's box to its transport without a promise per
 * message and without suspended async frames while idle: an idle reader is
 * one callback registered on its box. Every receive path (v1 gRPC,
 * WebSocket, HTTP; v2 gRPC, WebSocket) runs on this.
 */
import type { HashmailError } from '../session/errors.js';
import type { ReadableCallback } from '../session/message-queue.js';

export interface ReadSource {
  /** Next message, undefined when none is queued; throws once the box is torn down. */
  take(): Buffer | undefined;
  whenReadable(fn: ReadableCallback): void;
}

/**
 * Hands a message to the transport. Returns true to be given the next one at
 * once, or false when the transport is full (or done): the transport then
 * calls `resume()` once it has drained, or never if it is finished.
 */
export type Deliver = (msg: Buffer) => boolean;

export class ReadPump {
  private stopped = false;

  constructor(
    private readonly source: ReadSource,
    private readonly deliver: Deliver,
    /** The box closed (its error), or the reader was detached (CANCELLED). Called at most once. */
    private readonly fail: (err: unknown) => void,
  ) {}

  /** Starts, or continues after the transport drained. */
  readonly resume = (): void => {
    if (this.stopped) return;
    try {
      for (;;) {
        const msg = this.source.take();
        if (msg === undefined) {
          this.source.whenReadable(this.onReadable);
          return;
        }
        if (!this.deliver(msg)) return;
      }
    } catch (err) {
      this.stop(err);
    }
  };

  private readonly onReadable = (cancelled?: HashmailError): void => {
    if (cancelled) this.stop(cancelled);
    else this.resume();
  };

  private stop(err: unknown): void {
    if (this.stopped) return;
    this.stopped = true;
    this.fail(err);
  }
}
