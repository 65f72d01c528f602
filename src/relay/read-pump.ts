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
  /** A taken message of `payloadBytes` left the transport: its bytes stop counting against the limits. */
  settle(payloadBytes: number): void;
}

/**
 * Hands a message to the transport. Returns true to be given the next one at
 * once, or false when the transport is full (or done): the transport then
 * calls `resume()` once it has drained, or never if it is finished.
 * `flushed` must be called once per message, in order, when the transport no
 * longer holds it (sent to the kernel, or failed); a transport that is
 * finished may skip it, since releasing the reader settles what it held.
 * Until then the message counts against the box and the process budget, so
 * a reader that stops reading holds no more than the limits allow, whatever
 * the transport buffers.
 */
export type Deliver = (msg: Buffer, flushed: () => void) => boolean;

export class ReadPump {
  private stopped = false;
  /** Payload lengths handed to the transport and not yet flushed, oldest first. */
  private handed: number[] = [];
  private handedHead = 0;

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
        this.handed.push(msg.length);
        if (!this.deliver(msg, this.flushed)) return;
      }
    } catch (err) {
      this.stop(err);
    }
  };

  /** The transport's write callback (one shared function, not a closure per message). */
  readonly flushed = (): void => {
    if (this.handedHead === this.handed.length) return;
    const bytes = this.handed[this.handedHead++];
    if (this.handedHead === this.handed.length) {
      this.handed.length = 0;
      this.handedHead = 0;
    }
    this.source.settle(bytes);
  };

  /** Write callback for a transport that was full: settles the message, then continues. */
  readonly flushedThenResume = (): void => {
    this.flushed();
    this.resume();
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
