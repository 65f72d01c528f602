import type { BufferBudget } from './buffer-budget.js';
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
 * The bounded FIFO of one box: messages written but not yet handed to a
 * reader. Holds at most `capacityBytes` (one message larger than that is let
 * in alone, so any allowed message size passes); past that the single writer
 * waits, which the transport turns into flow-control push-back. One writer and
 * one reader at a time, so at most one of each is ever waiting.
 */
export class MessageQueue {
  private items: Buffer[] = [];
  private head = 0;
  private bytes = 0;
  private waitingReader: ReadableCallback | null = null;
  private waitingWriter: Pending | null = null;
  private closedWith: { reader: HashmailError; writer: HashmailError } | null = null;

  constructor(
    private readonly capacityBytes: number,
    private readonly budget: BufferBudget,
  ) {}

  get size(): number {
    return this.items.length - this.head;
  }

  get byteLength(): number {
    return this.bytes;
  }

  /** Whether tryPush(msg) would take it now (box bound and process budget). */
  hasRoomFor(msg: Buffer): boolean {
    if (this.closedWith) return true; // tryPush then throws the close error
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    if (this.bytes === 0) return true;
    return this.bytes + cost <= this.capacityBytes && this.budget.usedBytes + cost <= this.budget.limitBytes;
  }

  /** Enqueues and returns true, or returns false when full (call waitForSpace). */
  tryPush(msg: Buffer): boolean {
    if (this.closedWith) throw this.closedWith.writer;
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    if (this.bytes > 0 && this.bytes + cost > this.capacityBytes) return false;
    // Past the process-wide budget the writer waits like for a full box
    // (spec: push back on the writer, never fail it). A box holding nothing
    // still takes one message, over the budget if need be: nothing else would
    // wake its writer, and a live session must keep moving while idle boxes
    // hold the budget. Overshoot: one message per box.
    if (!this.budget.tryReserve(cost)) {
      if (this.bytes > 0) return false;
      this.budget.reserveOverLimit(cost);
    }
    this.items.push(msg);
    this.bytes += cost;
    const reader = this.waitingReader;
    if (reader) {
      this.waitingReader = null;
      // Not synchronously: the reader's transport work must not run inside the writer's call.
      queueMicrotask(reader);
    }
    return true;
  }

  /** Takes the next message, or undefined when empty (call waitForMessage). */
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
    const cost = msg.length + MESSAGE_OVERHEAD_BYTES;
    this.bytes -= cost;
    this.budget.release(cost);
    const writer = this.waitingWriter;
    if (writer) {
      this.waitingWriter = null;
      writer.resolve();
    }
    return msg;
  }

  waitForSpace(): Promise<void> {
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
  cancelReader(err: HashmailError): void {
    const reader = this.waitingReader;
    this.waitingReader = null;
    reader?.(err);
  }

  cancelWriter(err: HashmailError): void {
    const writer = this.waitingWriter;
    this.waitingWriter = null;
    writer?.reject(err);
  }

  /** Drops every message (returning their bytes to the budget) and fails waits. */
  close(readerErr: HashmailError, writerErr: HashmailError): void {
    if (this.closedWith) return;
    this.closedWith = { reader: readerErr, writer: writerErr };
    this.budget.release(this.bytes);
    this.bytes = 0;
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
