import type { BufferBudget } from './buffer-budget.js';
import type { Clock, TimerHandle } from './clock.js';
import { HashmailError } from './errors.js';
import { MessageQueue, type ReadableCallback } from './message-queue.js';
import { Slot, type Lease, type SlotOwner } from './slot.js';
import { TokenBucket } from './token-bucket.js';

export interface RateLimit {
  intervalMs: number;
  burst: number;
}

export interface BoxOptions {
  /** Bytes a box holds for a reader that is absent or slow; then writers wait. */
  bufferBytes: number;
  /** Per-box token bucket, or null for none. */
  rateLimit: RateLimit | null;
  /** Wait for a taken slot before "occupied". */
  acquireWaitMs: number;
}

/** What a box reports to the table that owns it. */
export interface BoxHost {
  /** A slot was taken or freed (the stale timer depends on it). */
  slotsChanged(box: Box): void;
  /** A write waited for a rate-limit token. */
  rateLimited(): void;
}

const NO_HOST: BoxHost = { slotsChanged: () => undefined, rateLimited: () => undefined };

export interface ReaderWatcher {
  readerChanged(taken: boolean): void;
}

/** Why a box went away; decides what its holders and waiters are told. */
export type CloseReason = 'deleted' | 'stale' | 'shutdown';

/**
 * One direction of a session: what is written to SID `x` goes to whoever
 * reads `x`. It has one read slot, one write slot and a bounded queue. A
 * legacy half takes one slot; a v2 party takes the read slot of `x` and the
 * write slot of `x ^ 1`.
 */
export class Box implements SlotOwner {
  readonly readSlot: Slot;
  readonly writeSlot: Slot;
  private readonly queue: MessageQueue;
  /** Made on the first write: a bucket starts full, so a late start changes nothing, and idle boxes skip it. */
  private bucket: TokenBucket | null = null;
  private rateWait: { timer: TimerHandle; resolve(): void; reject(err: HashmailError): void } | null = null;
  private closed = false;
  /** What a write is told once the box is torn down. */
  private writeErr: HashmailError | null = null;
  /** Messages handed to readers; sampled for the in-use / standby metrics. */
  delivered = 0;

  constructor(
    readonly sid: Buffer,
    private readonly options: BoxOptions,
    budget: BufferBudget,
    private readonly clock: Clock,
    /** The session table: stale timer and metrics. An object, not closures, to keep idle boxes small. */
    private readonly host: BoxHost = NO_HOST,
    /** Queue bound for this box; v2 sessions use their own window instead of options.bufferBytes. */
    capacityBytes?: number,
    /** The budget of the client address that created the box (limits.maxBufferedBytesPerAddress). */
    ownerBudget: BufferBudget | null = null,
  ) {
    this.readSlot = new Slot('READ_OCCUPIED', clock, this);
    this.writeSlot = new Slot('WRITE_OCCUPIED', clock, this);
    this.queue = new MessageQueue(capacityBytes ?? options.bufferBytes, budget, ownerBudget);
  }

  private rateBucket(): TokenBucket | null {
    const rate = this.options.rateLimit;
    if (!rate) return null;
    return (this.bucket ??= new TokenBucket(rate.intervalMs, rate.burst, this.clock));
  }

  /** SlotOwner: either slot was taken or freed. */
  slotChanged(slot: Slot): void {
    this.host.slotsChanged(this);
    if (slot === this.readSlot) this.readerWatcher?.readerChanged(slot.taken);
  }

  /**
   * The v2 party writing to this box hears whenever its read slot is taken
   * or freed: its peer (the reader) came or went. One watcher at most: the
   * write slot's holder. null to stop.
   */
  watchReader(watcher: ReaderWatcher | null): void {
    this.readerWatcher = watcher;
  }

  private readerWatcher: ReaderWatcher | null = null;

  get isClosed(): boolean {
    return this.closed;
  }

  /** Both slots free: the stale timer runs. */
  get idle(): boolean {
    return !this.readSlot.taken && !this.writeSlot.taken;
  }

  get queuedMessages(): number {
    return this.queue.size;
  }

  /** Bytes held against the box bound: queued, and taken by the reader but not yet flushed. */
  get queuedBytes(): number {
    return this.queue.byteLength;
  }

  get inFlightBytes(): number {
    return this.queue.inFlightBytes;
  }

  attachReader(signal?: AbortSignal): Promise<Lease> {
    return this.readSlot.acquire(this.options.acquireWaitMs, signal);
  }

  attachWriter(signal?: AbortSignal): Promise<Lease> {
    return this.writeSlot.acquire(this.options.acquireWaitMs, signal);
  }

  /** Frees a slot at once; a wait the holder had pending ends with CANCELLED. */
  detach(lease: Lease): void {
    if (lease.slot.lease !== lease) return;
    // The error only for a wait that is pending: most holders leave with none, and an Error costs its stack trace.
    if (lease.slot === this.readSlot) {
      if (this.queue.readerWaiting) this.queue.cancelReader(new HashmailError('CANCELLED'));
      this.queue.settleAll();
    } else if (this.queue.writerWaiting || this.rateWait) {
      const cancelled = new HashmailError('CANCELLED');
      this.queue.cancelWriter(cancelled);
      this.cancelRateWait(cancelled);
    }
    lease.slot.release(lease);
  }

  /**
   * The per-message fast path: queues `msg` at once and returns true when a
   * rate-limit token and room are both available; otherwise takes nothing
   * and returns false (then write()). Throws once the box is torn down.
   */
  writeNow(msg: Buffer): boolean {
    if (this.writeErr) throw this.writeErr;
    if (!this.queue.hasRoomFor(msg)) return false;
    const bucket = this.rateBucket();
    if (bucket && bucket.tryTake() > 0) return false;
    return this.queue.tryPush(msg);
  }

  /** Writes one message: one rate-limit token, then room in the queue. */
  async write(msg: Buffer): Promise<void> {
    // A write after teardown fails at once. Without this check it first
    // took (or slept for) a rate-limit token, so with the bucket empty the
    // "closed pipe" error came only an interval later, from a timer armed
    // on a dead box.
    if (this.writeErr) throw this.writeErr;
    const bucket = this.rateBucket();
    if (bucket) {
      for (let wait = bucket.tryTake(); wait > 0; wait = bucket.tryTake()) {
        this.host.rateLimited();
        await this.sleepForToken(wait);
      }
    }
    await this.queue.push(msg);
  }

  /**
   * The next message if one is queued, else undefined (then whenReadable).
   * Throws the close error once the box is torn down. Each message is handed
   * out exactly once, and stays counted against the box and the budget until
   * settle(its length), or until the reader detaches.
   */
  take(): Buffer | undefined {
    const msg = this.queue.shift();
    if (msg !== undefined) this.delivered++;
    return msg;
  }

  /** The reader's transport flushed (or dropped) a taken message of `payloadBytes`. */
  settle(payloadBytes: number): void {
    this.queue.settle(payloadBytes);
  }

  /** `fn` runs once when take() has a message or an error; with CANCELLED if the reader detached. */
  whenReadable(fn: ReadableCallback): void {
    this.queue.whenReadable(fn);
  }

  /** Promise form of take() + whenReadable(), for a reader that holds nothing afterwards (settled at once). */
  read(): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const attempt = (cancelled?: HashmailError): void => {
        if (cancelled) return reject(cancelled);
        try {
          const msg = this.take();
          if (msg === undefined) return this.whenReadable(attempt);
          this.settle(msg.length);
          resolve(msg);
        } catch (err) {
          reject(err);
        }
      };
      attempt();
    });
  }


  /** Tears the box down, telling holders and waiters what the legacy server told them. */
  close(reason: CloseReason): void {
    if (this.closed) return;
    this.closed = true;
    const shutdown = reason === 'shutdown' ? new HashmailError('SERVER_SHUTTING_DOWN') : null;
    const readerErr = shutdown ?? new HashmailError('BOX_DELETED_EOF');
    const writerErr = shutdown ?? new HashmailError('BOX_DELETED_PIPE');
    this.writeErr = writerErr;
    const waiterErr = shutdown ?? new HashmailError('STREAM_SHUTTING_DOWN');
    this.queue.close(readerErr, writerErr);
    this.cancelRateWait(writerErr);
    this.readSlot.close(readerErr, waiterErr);
    this.writeSlot.close(writerErr, waiterErr);
  }

  private sleepForToken(ms: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = this.clock.setTimeout(() => {
        this.rateWait = null;
        resolve();
      }, ms);
      this.rateWait = { timer, resolve, reject };
    });
  }

  private cancelRateWait(err: HashmailError): void {
    const wait = this.rateWait;
    if (!wait) return;
    this.rateWait = null;
    this.clock.clearTimeout(wait.timer);
    wait.reject(err);
  }
}
