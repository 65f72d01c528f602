/**
 * The gateway's legacy halves: a RecvStream or SendStream carried as one hop
 * call to the owning relay. A half resolves as attached once the relay says
 * it holds the slot (response metadata `hashmail-hop-attached`), so "read
 * stream occupied" and "stream not found" reach the legacy client exactly
 * where the relay's own halves throw them. The call ending with an error
 * (the relay's, re-created from the trailer, or UNAVAILABLE when the
 * connection or the relay is lost) is the box closing for the transport.
 *
 * Flow control: a Recv call is paused while the gateway holds a message its
 * transport has not taken (at most one message plus the HTTP/2 window per
 * reader); a Send write returns a promise while grpc-js holds more than
 * SEND_WRITE_AHEAD_MESSAGES, so the transport stops reading its client.
 */
import type { ClientReadableStream, ClientWritableStream, Metadata, ServiceError } from '@grpc/grpc-js';
import type { HalfKind, RelayStats, TransportName } from '../observe/stats.js';
import type { LegacyReceive, LegacySend } from '../relay/legacy-operations.js';
import { HashmailError } from '../session/errors.js';
import type { ReadableCallback } from '../session/message-queue.js';
import { encodeHopPayload, type HopMessage } from '../transport/grpc-hop/codec.js';
import { hopError } from '../transport/grpc-hop/hop-status.js';
import { HOP_ATTACHED_HEADER } from '../transport/grpc-hop/service.js';
import { limitReadAhead } from '../transport/grpc-read.js';

/** Messages grpc-js may hold for one Send before write() pushes back (each up to mailbox.maxMessageBytes). */
const SEND_WRITE_AHEAD_MESSAGES = 2;

/** Where a half is counted and what frees its pool place and tracking. */
export interface HalfContext {
  stats: RelayStats | null;
  transport: TransportName;
  /** Runs once when the call is over (pool place, carried-call tracking). */
  done(): void;
}

abstract class HopHalf {
  /** Why the half is over; take()/write() throw it. */
  protected closedErr: HashmailError | null = null;
  private closedFn: ((err: HashmailError) => void) | null = null;
  private released = false;
  private counted = false;
  private attachWait: { resolve: () => void; reject: (err: HashmailError) => void } | null = null;

  constructor(
    protected readonly call: ClientReadableStream<HopMessage> | ClientWritableStream<Buffer>,
    private readonly kind: HalfKind,
    private readonly ctx: HalfContext,
  ) {
    call.on('metadata', (md: Metadata) => {
      if (md.get(HOP_ATTACHED_HEADER)[0] === '1') this.attached();
    });
    call.on('error', (err: ServiceError) => this.end(hopError(err)));
  }

  /** The call is over (ended, failed, released or answered). */
  get isOver(): boolean {
    return this.closedErr !== null;
  }

  /** Resolves once the relay holds the slot; rejects with the relay's answer; `signal` cancels the wait. */
  whenAttached(signal?: AbortSignal): Promise<this> {
    return new Promise((resolve, reject) => {
      if (this.closedErr) return reject(this.closedErr);
      if (signal?.aborted) {
        this.end(new HashmailError('CANCELLED'), true);
        return reject(this.closedErr);
      }
      const onAbort = (): void => this.end(new HashmailError('CANCELLED'), true);
      signal?.addEventListener('abort', onAbort, { once: true });
      this.attachWait = {
        resolve: () => {
          signal?.removeEventListener('abort', onAbort);
          resolve(this);
        },
        reject: (err) => {
          signal?.removeEventListener('abort', onAbort);
          reject(err);
        },
      };
    });
  }

  private attached(): void {
    const wait = this.attachWait;
    this.attachWait = null;
    if (!wait || this.closedErr) return;
    this.counted = true;
    if (this.ctx.stats) this.ctx.stats.attached[this.ctx.transport][this.kind]++;
    wait.resolve();
  }

  onBoxClosed(fn: (err: HashmailError) => void): void {
    if (this.released) return;
    const err = this.closedErr;
    if (err) queueMicrotask(() => fn(err));
    else this.closedFn = fn;
  }

  /** Frees the relay's slot: the hop call is cancelled, the relay releases it at once. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.closedFn = null;
    this.end(new HashmailError('CANCELLED'), true);
  }

  /** The relay this half was carried to is gone (instanceGone): UNAVAILABLE at once. */
  fail(err: HashmailError): void {
    this.end(err, true);
  }

  /** The call is over with `err` (first reason wins); `cancel` ends it at the relay too. */
  protected end(err: HashmailError, cancel = false): void {
    if (this.closedErr) return;
    this.closedErr = err;
    if (cancel) this.call.cancel();
    this.over();
    const wait = this.attachWait;
    this.attachWait = null;
    wait?.reject(err);
    const fn = this.closedFn;
    this.closedFn = null;
    this.ended(err);
    fn?.(err);
  }

  /** The call ended OK (a finished Send): nothing to report, later writes are refused. */
  protected complete(): void {
    if (this.closedErr) return;
    this.closedErr = new HashmailError('CANCELLED');
    this.closedFn = null;
    this.over();
  }

  private over(): void {
    if (this.counted) {
      this.counted = false;
      if (this.ctx.stats) this.ctx.stats.attached[this.ctx.transport][this.kind]--;
    }
    this.ctx.done();
  }

  /** Subclass hook: wake whatever waits on the half. */
  protected abstract ended(err: HashmailError): void;
}

export class RemoteReceive extends HopHalf implements LegacyReceive {
  private held: Buffer | undefined = undefined;
  private readable: ReadableCallback | null = null;
  private readonly stream: ClientReadableStream<HopMessage>;

  constructor(call: ClientReadableStream<HopMessage>, ctx: HalfContext) {
    super(call, 'read', ctx);
    this.stream = call;
    // Read one message only when asked: a paused call then leaves the rest to HTTP/2 flow control.
    limitReadAhead(call);
    call.on('data', (m: HopMessage) => {
      this.held = m.msg;
      call.pause();
      this.wake();
    });
    // A Recv call never ends OK: the relay ended it without a status of ours.
    call.on('status', (s: { code: number }) => {
      if (s.code === 0) this.end(new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (stream ended)'));
    });
  }

  take(): Buffer | undefined {
    if (this.closedErr) throw this.closedErr;
    const msg = this.held;
    if (msg !== undefined) {
      this.held = undefined;
      this.stream.resume();
    }
    return msg;
  }

  whenReadable(fn: ReadableCallback): void {
    if (this.held !== undefined || this.closedErr) queueMicrotask(() => fn());
    else this.readable = fn;
  }

  /** Nothing is counted at the gateway: it holds at most the one message the call is paused on. */
  settle(): void {}

  protected ended(): void {
    this.held = undefined;
    this.wake();
  }

  private wake(): void {
    const fn = this.readable;
    this.readable = null;
    fn?.();
  }
}

export class RemoteSend extends HopHalf implements LegacySend {
  private drainWait: { resolve: () => void; reject: (err: HashmailError) => void } | null = null;
  private finishWait: { resolve: () => void; reject: (err: HashmailError) => void } | null = null;
  private finished = false;
  private readonly stream: ClientWritableStream<Buffer>;

  constructor(
    call: ClientWritableStream<Buffer>,
    ctx: HalfContext,
    private readonly maxMessageBytes: number,
  ) {
    super(call, 'write', ctx);
    this.stream = call;
    const state = (call as unknown as { _writableState?: { highWaterMark: number } })._writableState;
    if (state) state.highWaterMark = SEND_WRITE_AHEAD_MESSAGES;
    call.on('drain', () => {
      const w = this.drainWait;
      this.drainWait = null;
      w?.resolve();
    });
  }

  /** The Send call's answer: OK once the relay queued every message (only after finish()), or its error. */
  answered(err: ServiceError | null): void {
    if (err) {
      this.end(hopError(err));
      return;
    }
    if (this.closedErr) return;
    if (!this.finished) {
      this.end(new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (send ended early)'));
      return;
    }
    const w = this.finishWait;
    this.finishWait = null;
    this.complete();
    w?.resolve();
  }

  write(msg: Buffer): Promise<void> | undefined {
    if (this.closedErr) throw this.closedErr;
    if (msg.length > this.maxMessageBytes) {
      throw new HashmailError('MESSAGE_TOO_LARGE', `message too large: ${msg.length} bytes, limit mailbox.maxMessageBytes (${this.maxMessageBytes})`);
    }
    if (this.stream.write(encodeHopPayload(msg))) return undefined;
    return new Promise((resolve, reject) => {
      this.drainWait = { resolve, reject };
    });
  }

  /** Half-closes the hop call; settles once the relay answered: every message queued there. */
  finish(): Promise<void> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    this.finished = true;
    return new Promise((resolve, reject) => {
      this.finishWait = { resolve, reject };
      this.stream.end();
    });
  }

  protected ended(err: HashmailError): void {
    const d = this.drainWait;
    this.drainWait = null;
    d?.reject(err);
    const f = this.finishWait;
    this.finishWait = null;
    f?.reject(err);
  }
}
