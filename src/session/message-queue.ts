import type { BudgetWaiter, BufferBudget } from './buffer-budget.js';
import type { HashmailError } from './errors.js';

interface Pending {
  resolve(): void;
  reject(err: HashmailError): void;
}

/**
 * Called once when a message arrives, the queue closes, or (with the error)
 * the reader is cancelled. A callback rather than a promise: an idle reader
 * (most readers, most of the time) then costs one reference, not a chain of
 * suspended async frames.
 */
export type ReadableCallback = (cancelled?: HashmailError) => void;

/**
 * The bounded FIFO of one box: messages written and not yet flushed to a
 * reader. A message counts against the box bound and the process budget from
 * the moment it is queued until the reader's transport has flushed it
 * (settle()), not merely until a reader took it: a transport that buffers
 * what it cannot send (grpc-js streams take 16 messages whatever their size)
 * would otherwise hold memory that no limit sees. The box holds at most
 * `capacityBytes`, except that a box holding nothing takes one message of any
 * allowed size (so every message size passes); past that the single writer
 * waits, which the transport turns into flow-control push-back. The budgets
 * (the process-wide one and that of the address that created the box) hold
 * without exception: a writer they cannot fit waits its turn, and the
 * per-address one keeps one client from taking the whole process budget.
 * One writer and one reader at a time, so at most one of each is waiting.
 */
export class MessageQueue {
  private items: Buffer[] = [];
  private head = 0;
  /** Queued plus in flight: everything this box holds against its bound and the budget. */
  private bytes = 0;
  /** Taken by the reader, not yet flushed by its transport. */
  private inFlight = 0;
  private waitingReader: ReadableCallback | null = null;
  private waitingWriter: Pending | null = null;
  private budgetWait: BudgetWaiter | null = null;
  private closedWith: { reader: HashmailError; writer: HashmailError } | null = null;

  constructor(
    private readonly capacityBytes: number,
    private readonly budget: BufferBudget,
    /** Bytes held by every box the same client address created; null for none. */
    private readonly ownerBudget: BufferBudget | null = null,
  ) {}

  get size(): number {
    return this.items.length - this.head;
  }

  /** Bytes held: queued and in flight, with per-message overhead. */
  get byteLength(): number {
    return this.bytes;
  }

  get inFlightBytes(): number {
    return this.inFlight;
  }

  /** Whether tryPush(msg) would take it now (box bound and process budget). */
  hasRoomFor(msg: Buffer): boolean {
    if (this.closedWith) return true; // tryPush then throws the close error
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    return this.boxFits(cost) && (this.ownerBudget?.canReserve(cost) ?? true) && this.budget.canReserve(cost);
  }

  /** Enqueues and returns true, or returns false when the box or the budget is full (call push). */
  tryPush(msg: Buffer): boolean {
    if (this.closedWith) throw this.closedWith.writer;
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    if (!this.boxFits(cost) || !this.tryReserve(cost)) return false;
    this.enqueue(msg, cost);
    return true;
  }

  /**
   * Enqueues `msg` once the box has room and the process budget has granted
   * its bytes. Rejects with the close error, or CANCELLED if the writer
   * detaches while waiting.
   */
  async push(msg: Buffer): Promise<void> {
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    for (;;) {
      if (this.closedWith) throw this.closedWith.writer;
      if (!this.boxFits(cost)) {
        await this.waitForSpace();
        continue;
      }
      // Only this writer adds to the box, so the room found above stays while it waits for the budgets.
      const owner = this.ownerBudget;
      if (owner && !owner.tryReserve(cost)) await this.waitForBudget(owner, cost);
      if (!this.budget.tryReserve(cost)) {
        try {
          await this.waitForBudget(this.budget, cost);
        } catch (err) {
          owner?.release(cost);
          throw err;
        }
      }
      this.enqueue(msg, cost);
      return;
    }
  }

  /** Both budgets, or neither. */
  private tryReserve(cost: number): boolean {
    const owner = this.ownerBudget;
    if (owner && !owner.tryReserve(cost)) return false;
    if (this.budget.tryReserve(cost)) return true;
    owner?.release(cost);
    return false;
  }

  private releaseBudgets(cost: number): void {
    this.ownerBudget?.release(cost);
    this.budget.release(cost);
  }

  private boxFits(cost: number): boolean {
    return this.bytes === 0 || this.bytes + cost <= this.capacityBytes;
  }

  private enqueue(msg: Buffer, cost: number): void {
    this.items.push(msg);
    this.bytes += cost;
    const reader = this.waitingReader;
    if (reader) {
      this.waitingReader = null;
      // Not synchronously: the reader's transport work must not run inside the writer's call.
      queueMicrotask(reader);
    }
  }

  /** Resolves with `cost` reserved in `budget` for this writer; on close the reservation goes back. */
  private waitForBudget(budget: BufferBudget, cost: number): Promise<void> {
    return new Promise((resolve, reject) => {
      this.waitingWriter = { resolve: () => undefined, reject };
      this.budgetWait = budget.wait(cost, () => {
        this.budgetWait = null;
        this.waitingWriter = null;
        if (this.closedWith) {
          budget.release(cost);
          reject(this.closedWith.writer);
        } else resolve();
      });
    });
  }

  /**
   * Takes the next message, or undefined when empty (call whenReadable). It
   * stays counted (in flight) until settle() says its transport flushed it.
   */
  shift(): Buffer | undefined {
    if (this.closedWith) throw this.closedWith.reader;
    if (this.head === this.items.length) return undefined;
    const msg = this.items[this.head];
    this.items[this.head++] = EMPTY;
    if (this.head === this.items.length) {
      // Emptied: reuse the array (a fresh one per emptying would be garbage that outlives young GC).
      this.items.length = 0;
      this.head = 0;
    } else if (this.head >= COMPACT_AFTER_ITEMS) {
      this.items = this.items.slice(this.head);
      this.head = 0;
    }
    this.inFlight += msg.length + MESSAGE_OVERHEAD_BYTES;
    return msg;
  }

  /** The reader's transport flushed (or dropped) a message of `payloadBytes` it took. */
  settle(payloadBytes: number): void {
    this.release(Math.min(payloadBytes + MESSAGE_OVERHEAD_BYTES, this.inFlight));
  }

  /** The reader left: whatever its transport still held is no longer ours to count. */
  settleAll(): void {
    this.release(this.inFlight);
  }

  private release(cost: number): void {
    if (this.closedWith || cost === 0) return;
    this.inFlight -= cost;
    this.bytes -= cost;
    this.releaseBudgets(cost);
    const writer = this.waitingWriter;
    if (writer && !this.budgetWait) {
      this.waitingWriter = null;
      writer.resolve();
    }
  }

  private waitForSpace(): Promise<void> {
    if (this.closedWith) return Promise.reject(this.closedWith.writer);
    return new Promise((resolve, reject) => {
      this.waitingWriter = { resolve, reject };
    });
  }

  /**
   * `fn` runs once when shift() has something to say: a message, or the
   * queue's close error. Call it only after shift() returned undefined.
   */
  whenReadable(fn: ReadableCallback): void {
    if (this.closedWith || this.size > 0) {
      queueMicrotask(fn);
      return;
    }
    this.waitingReader = fn;
  }

  /** The reader or writer left: its pending wait ends with `err`. */
  /** A reader waits for a message now. */
  get readerWaiting(): boolean {
    return this.waitingReader !== null;
  }

  /** A writer waits for room (here or in the shared budget) now. */
  get writerWaiting(): boolean {
    return this.waitingWriter !== null || this.budgetWait !== null;
  }

  cancelReader(err: HashmailError): void {
    const reader = this.waitingReader;
    this.waitingReader = null;
    reader?.(err);
  }

  cancelWriter(err: HashmailError): void {
    const writer = this.waitingWriter;
    this.waitingWriter = null;
    this.budgetWait?.cancel();
    this.budgetWait = null;
    writer?.reject(err);
  }

  /** Drops every message (returning their bytes to the budget) and fails waits. */
  close(readerErr: HashmailError, writerErr: HashmailError): void {
    if (this.closedWith) return;
    this.closedWith = { reader: readerErr, writer: writerErr };
    this.releaseBudgets(this.bytes);
    this.bytes = 0;
    this.inFlight = 0;
    this.items = [];
    this.head = 0;
    // The reader learns of the close from shift(), which now throws readerErr;
    // later, so the box finishes tearing down (slot waiters told first)
    // before the reader's transport reacts by releasing its slot.
    const reader = this.waitingReader;
    this.waitingReader = null;
    if (reader) queueMicrotask(reader);
    this.cancelWriter(writerErr);
  }
}

const EMPTY = Buffer.alloc(0);
/**
 * What a queued message costs beyond its payload (its Buffer object and
 * array slot), counted against the bounds so that a flood of empty
 * messages fills a box too instead of growing it without bound.
 */
export const MESSAGE_OVERHEAD_BYTES = 64;
/** Compacts the backing array once this many consumed slots lead it. */
const COMPACT_AFTER_ITEMS = 1024;
