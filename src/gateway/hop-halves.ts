/**
 * The gateway's legacy halves: a RecvStream or SendStream carried as one half
 * of a hop lane to the owning relay. A half resolves as attached once the
 * relay says it holds the slot (ATTACHED), so "read stream occupied" and
 * "stream not found" reach the legacy client exactly where the relay's own
 * halves throw them. An END with an error (the relay's, re-created), or the
 * lane failing (UNAVAILABLE), is the box closing for the transport.
 *
 * Flow control, per half in bytes (lane-credit.ts): a reader grants the relay
 * hop.windowBytes and repays it as its transport flushes messages to the
 * legacy client; a writer may run the relay's grant ahead of what the relay's
 * box took, then write() returns a promise, so the transport stops reading
 * its client.
 */
import type { HalfKind, RelayStats, TransportName } from '../observe/stats.js';
import type { LegacyReceive, LegacySend } from '../relay/legacy-operations.js';
import { HashmailError, type HashmailErrorCode } from '../session/errors.js';
import type { ReadableCallback } from '../session/message-queue.js';
import { FrameKind } from '../transport/hop/frame.js';
import { creditBatch, messageCost } from '../transport/hop/lane-credit.js';
import type { HopLane, LaneEndpoint } from './hop-lane.js';

/** A relay's "look the session up again" endings (v2's words), told to legacy clients in v1's. */
const SESSION_MOVED: ReadonlySet<HashmailErrorCode> = new Set<HashmailErrorCode>(['RELAY_DRAINING', 'ROUTE_LOST', 'FENCE_LOST']);

/** Where a half is counted and what frees its pool place and tracking. */
export interface HalfContext {
  stats: RelayStats | null;
  transport: TransportName;
  /** Runs once when the half is over (pool place, carried-call tracking). */
  done(): void;
}

interface Waiter {
  resolve: () => void;
  reject: (err: HashmailError) => void;
}

abstract class HopHalf implements LaneEndpoint {
  /** Why the half is over; take()/write() throw it. */
  protected closedErr: HashmailError | null = null;
  private closedFn: ((err: HashmailError) => void) | null = null;
  private released = false;
  private counted = false;
  private attachWait: Waiter | null = null;
  protected id = 0;

  constructor(
    protected readonly lane: HopLane,
    private readonly kind: HalfKind,
    private readonly ctx: HalfContext,
  ) {}

  /** Sends the OPEN frame; call once, right after construction. */
  protected openOn(kind: typeof FrameKind.OPEN_RECV | typeof FrameKind.OPEN_SEND, sid: Buffer, clientAddress: string, credit: number): void {
    try {
      this.id = this.lane.open(this, kind, sid, clientAddress, credit);
    } catch (err) {
      this.lost(err as HashmailError);
    }
  }

  /** The half is over (ended, failed, released or answered). */
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

  attached(credit: number): void {
    const wait = this.attachWait;
    this.attachWait = null;
    if (!wait || this.closedErr) return;
    this.counted = true;
    if (this.ctx.stats) this.ctx.stats.attached[this.ctx.transport][this.kind]++;
    this.granted(credit);
    wait.resolve();
  }

  /** Subclass hook: the relay's grant at attach time (a writer's window). */
  protected granted(_credit: number): void {}

  abstract data(msg: Buffer): void;
  abstract credit(bytes: number): void;

  ended(err: HashmailError | null): void {
    // The relay moving its sessions away (drain, a lost mapping or lease) is, to a legacy client, its server
    // going away: v1's UNAVAILABLE "server shutting down", which it answers by dialing again.
    if (err && SESSION_MOVED.has(err.code)) this.end(new HashmailError('SERVER_SHUTTING_DOWN'));
    else if (err) this.end(err);
    else this.answered();
  }

  lost(err: HashmailError): void {
    this.end(err);
  }

  /** Subclass hook: END without an error. */
  protected abstract answered(): void;

  onBoxClosed(fn: (err: HashmailError) => void): void {
    if (this.released) return;
    const err = this.closedErr;
    if (err) queueMicrotask(() => fn(err));
    else this.closedFn = fn;
  }

  /** Frees the relay's slot: CANCEL goes to the relay, which releases it at once. Idempotent. */
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

  /** The half is over with `err` (first reason wins); `cancel` ends it at the relay too. */
  protected end(err: HashmailError, cancel = false): void {
    if (this.closedErr) return;
    this.closedErr = err;
    if (this.id) this.lane.forget(this.id, cancel);
    this.over();
    const wait = this.attachWait;
    this.attachWait = null;
    wait?.reject(err);
    const fn = this.closedFn;
    this.closedFn = null;
    this.woken(err);
    fn?.(err);
  }

  /** The half ended OK (a finished Send): nothing to report, later writes are refused. */
  protected complete(): void {
    if (this.closedErr) return;
    this.closedErr = new HashmailError('CANCELLED');
    this.closedFn = null;
    if (this.id) this.lane.forget(this.id, false);
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
  protected abstract woken(err: HashmailError): void;
}

export class RemoteReceive extends HopHalf implements LegacyReceive {
  /** Messages the relay sent and the transport has not taken, oldest first. */
  private held: Buffer[] = [];
  private heldHead = 0;
  private readable: ReadableCallback | null = null;
  /** Credit earned back by flushed messages and not yet sent. */
  private owed = 0;
  private readonly batch: number;

  constructor(lane: HopLane, ctx: HalfContext, sid: Buffer, clientAddress: string, windowBytes: number) {
    super(lane, 'read', ctx);
    this.batch = creditBatch(windowBytes);
    this.openOn(FrameKind.OPEN_RECV, sid, clientAddress, windowBytes);
  }

  data(msg: Buffer): void {
    if (this.closedErr) return;
    this.held.push(msg);
    this.wake();
  }

  credit(): void {}

  take(): Buffer | undefined {
    if (this.closedErr) throw this.closedErr;
    if (this.heldHead === this.held.length) return undefined;
    const msg = this.held[this.heldHead++];
    if (this.heldHead === this.held.length) {
      this.held = [];
      this.heldHead = 0;
    }
    return msg;
  }

  whenReadable(fn: ReadableCallback): void {
    if (this.heldHead < this.held.length || this.closedErr) queueMicrotask(() => fn());
    else this.readable = fn;
  }

  /** A message left the transport: its bytes go back to the relay as credit (in batches). */
  settle(payloadBytes: number): void {
    if (this.closedErr) return;
    this.owed += messageCost(payloadBytes);
    if (this.owed < this.batch) return;
    this.lane.control(this.id, FrameKind.CREDIT, this.owed);
    this.owed = 0;
  }

  /** A reader's call never ends OK: the relay ended it without an error. */
  protected answered(): void {
    this.end(new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (stream ended)'));
  }

  protected woken(): void {
    this.held = [];
    this.heldHead = 0;
    this.wake();
  }

  private wake(): void {
    const fn = this.readable;
    this.readable = null;
    fn?.();
  }
}

export class RemoteSend extends HopHalf implements LegacySend {
  private drainWait: Waiter | null = null;
  private finishWait: Waiter | null = null;
  private finished = false;
  /** The relay's grant and what we sent that its box has not yet taken. */
  private window = 0;
  private outstanding = 0;

  constructor(
    lane: HopLane,
    ctx: HalfContext,
    sid: Buffer,
    clientAddress: string,
    private readonly maxMessageBytes: number,
  ) {
    super(lane, 'write', ctx);
    this.openOn(FrameKind.OPEN_SEND, sid, clientAddress, 0);
  }

  protected override granted(credit: number): void {
    this.window = credit;
  }

  data(): void {
    // A writer receives no messages; a relay that sends one is ignored (nothing to deliver it to).
  }

  credit(bytes: number): void {
    this.outstanding -= bytes;
    if (this.outstanding >= this.window) return;
    const w = this.drainWait;
    this.drainWait = null;
    w?.resolve();
  }

  write(msg: Buffer): Promise<void> | undefined {
    if (this.closedErr) throw this.closedErr;
    if (msg.length > this.maxMessageBytes) {
      throw new HashmailError('MESSAGE_TOO_LARGE', `message too large: ${msg.length} bytes, limit mailbox.maxMessageBytes (${this.maxMessageBytes})`);
    }
    this.lane.data(this.id, msg);
    this.outstanding += messageCost(msg.length);
    if (this.outstanding < this.window) return undefined;
    return new Promise((resolve, reject) => {
      this.drainWait = { resolve, reject };
    });
  }

  /** Sends FINISH; settles once the relay answered: every message queued there. */
  finish(): Promise<void> {
    if (this.closedErr) return Promise.reject(this.closedErr);
    this.finished = true;
    return new Promise((resolve, reject) => {
      this.finishWait = { resolve, reject };
      this.lane.control(this.id, FrameKind.FINISH);
    });
  }

  /** END without an error: OK once finished, else the relay stopped early. */
  protected answered(): void {
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

  protected woken(err: HashmailError): void {
    const d = this.drainWait;
    this.drainWait = null;
    d?.reject(err);
    const f = this.finishWait;
    this.finishWait = null;
    f?.reject(err);
  }
}
