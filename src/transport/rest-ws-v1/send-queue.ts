/**
 * The writing side of a legacy send call, shared by the WebSocket and the
 * streaming HTTP transport: CipherBoxes are written in arrival order, the
 * first one opening the box's write slot. While a write waits (slot, rate
 * limit, full box) the source is paused, so the box's bound pushes back on
 * the client's TCP. After a large input the source is also paused until the
 * next turn of the event loop, so one connection's burst of large messages
 * cannot keep the loop from every other connection.
 */
import type { CallInfo, LegacyOperations, LegacySend } from '../../relay/legacy-operations.js';
import type { Logger } from '../../observe/logger.js';
import { shortHash } from '../../session/sid.js';
import type { CipherBox, CipherBoxDesc } from '../grpc-v1/codec.js';
import { CALL_OVER } from '../../session/abort-reason.js';

/**
 * An input (WebSocket message, JSON object) at least this large ends its
 * connection's turn: decoding one costs milliseconds (a 4 MiB message is
 * 5.6 MB of JSON), and the next one waits for the other connections.
 */
export const LARGE_INPUT_BYTES = 64 * 1024;

export interface SendQueueOwner {
  readonly mailbox: LegacyOperations;
  readonly logger: Logger;
  readonly call: CallInfo;
  /** What to pause while a write waits (a socket, a request). */
  readonly source: { pause(): void; resume(): void };
  /** The call failed (slot, box closed, bad message): abort it. */
  fail(err: unknown): void;
  /** Everything pushed so far is written. */
  caughtUp(): void;
}

export class SendQueue {
  private half: LegacySend | null = null;
  /** The first message's desc, once its box is open. */
  desc: CipherBoxDesc | null = null;
  private waitAbort: AbortController | null = null;
  private readonly queue: CipherBox[] = [];
  private writing = false;
  /** A write waits: the source stays paused until the queue is written. */
  private waiting = false;
  /** A large input was decoded this turn: the source stays paused until the next. */
  private yielding = false;
  /** What the source was last told. */
  private sourcePaused = false;
  private closed = false;

  constructor(private readonly owner: SendQueueOwner) {}

  /** Queues one message; writes start at once unless a write is waiting. */
  push(box: CipherBox): void {
    this.queue.push(box);
  }

  /** Call after push()es: writes what is queued, or pauses the source behind a waiting write. */
  flush(): void {
    if (this.closed) return;
    if (!this.writing) {
      void this.pump();
    } else if (!this.waiting) {
      this.waiting = true;
      this.updateSource();
    }
  }

  /**
   * Call after decoding an input of LARGE_INPUT_BYTES or more: the source is
   * not read again before the next turn of the event loop (setImmediate runs
   * after the pending I/O of every other connection).
   */
  yieldTurn(): void {
    if (this.closed || this.yielding) return;
    this.yielding = true;
    this.updateSource();
    setImmediate(() => {
      this.yielding = false;
      this.updateSource();
    });
  }

  /** Frees the slot at once (legacy: a writer that ends or drops frees it). Idempotent. */
  /** The client ended its input: settles once the mailbox holds every message (see LegacySend.finish). */
  finish(): Promise<void> | undefined {
    return this.closed ? undefined : this.half?.finish();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.waitAbort?.abort(CALL_OVER);
    this.waitAbort = null;
    this.half?.release();
    this.half = null;
    this.queue.length = 0;
  }

  private async pump(): Promise<void> {
    this.writing = true;
    try {
      for (let box = this.queue.shift(); box !== undefined; box = this.queue.shift()) {
        if (!this.half && !(await this.open(box.desc))) return;
        await (this.half as LegacySend).write(box.msg);
        if (this.closed) return;
      }
    } catch (err) {
      this.owner.fail(err);
      return;
    } finally {
      this.writing = false;
    }
    if (this.closed) return;
    if (this.waiting) {
      this.waiting = false;
      this.updateSource();
    }
    this.owner.caughtUp();
  }

  /** Pauses the source while a write waits or the turn is yielded, resumes it when neither holds. */
  private updateSource(): void {
    if (this.closed) return;
    const pause = this.waiting || this.yielding;
    if (pause === this.sourcePaused) return;
    this.sourcePaused = pause;
    if (pause) this.owner.source.pause();
    else this.owner.source.resume();
  }

  /** The first message names the box; false if the call ended meanwhile. */
  private async open(desc: CipherBoxDesc | null): Promise<boolean> {
    this.waitAbort = new AbortController();
    const half = await this.owner.mailbox.openSend(desc, this.owner.call, this.waitAbort.signal);
    this.waitAbort = null;
    if (this.closed) {
      half.release();
      return false;
    }
    this.half = half;
    this.desc = desc;
    half.onBoxClosed((err) => this.owner.fail(err));
    this.owner.logger.debug({ transport: this.owner.call.transport, call: 'send', sid: shortHash((desc as CipherBoxDesc).streamId) }, 'writer attached');
    return true;
  }
}
