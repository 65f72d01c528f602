/**
 * The legacy (v1) operations on the relay's session table, shared by every v1
 * transport so that gRPC and WebSocket say the same thing for the same
 * failure. A half (RecvStream on `x` or SendStream to `x`) holds one slot of
 * box `x`; transports only move bytes in and out of it.
 */
import type { Box } from '../session/box.js';
import { HashmailError } from '../session/errors.js';
import type { Lease } from '../session/slot.js';
import type { SessionTable } from '../session/session-table.js';
import type { ReadableCallback } from '../session/message-queue.js';
import { checkSid } from '../session/sid.js';
import type { ReadSource } from './read-pump.js';
import type { HalfKind, RelayStats } from '../observe/stats.js';
import type { BoxRequest, CallInfo, LegacyOperations, LegacyReceive, LegacySend } from './legacy-operations.js';
import { logAttach } from '../observe/attach-log.js';
import type { Logger } from '../observe/logger.js';

export type { BoxRequest, CallInfo } from './legacy-operations.js';

/** Legacy validation order: desc, then stream_id, then auth (spec section 3). A gateway validates with this too. */
export function validateBoxRequest(req: BoxRequest): Buffer {
  if (!req.desc) throw new HashmailError('DESC_REQUIRED');
  if (req.desc.streamId.length === 0) throw new HashmailError('STREAM_ID_REQUIRED');
  if (!req.hasAuth) throw new HashmailError('AUTH_REQUIRED');
  return checkSid(req.desc.streamId);
}

abstract class Half {
  private released = false;

  protected get isReleased(): boolean {
    return this.released;
  }

  constructor(
    protected readonly box: Box,
    private readonly lease: Lease,
    private readonly kind: HalfKind,
    private readonly call: CallInfo,
    protected readonly stats: RelayStats,
    private readonly log: Logger | null,
  ) {
    stats.attached[call.transport][kind]++;
    logAttach(log, 'attached', box.sid, { transport: call.transport, kind, client: call.address });
  }

  /**
   * `fn` runs once if the box is torn down (delete, stale, shutdown) while
   * this half holds its slot, so an idle stream can be ended with the reason.
   */
  onBoxClosed(fn: (err: HashmailError) => void): void {
    this.lease.onClosed = fn;
  }

  /** Frees the slot at once; a pending read or write ends with CANCELLED. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.stats.attached[this.call.transport][this.kind]--;
    this.box.detach(this.lease);
    logAttach(this.log, 'detached', this.box.sid, { transport: this.call.transport, kind: this.kind, client: this.call.address });
  }
}

export class ReceiveHalf extends Half implements LegacyReceive, ReadSource {
  take(): Buffer | undefined {
    const msg = this.box.take();
    if (msg !== undefined) {
      this.stats.messagesRelayed++;
      this.stats.bytesRelayed += msg.length;
    }
    return msg;
  }

  whenReadable(fn: ReadableCallback): void {
    this.box.whenReadable(fn);
  }

  settle(payloadBytes: number): void {
    // After release the box settled everything this half held; a late callback must not touch the next reader's count.
    if (!this.isReleased) this.box.settle(payloadBytes);
  }
}

export class SendHalf extends Half implements LegacySend {
  constructor(
    box: Box,
    lease: Lease,
    call: CallInfo,
    stats: RelayStats,
    log: Logger | null,
    private readonly maxMessageBytes: number,
  ) {
    super(box, lease, 'write', call, stats, log);
  }

  /**
   * Queues `msg` now if it can (undefined), else returns a promise that
   * settles once it is queued (rate-limit token, then queue room): the
   * caller stops reading its transport until then. Throws on a bad message
   * or a torn-down box.
   */
  write(msg: Buffer): Promise<void> | undefined {
    if (msg.length > this.maxMessageBytes) {
      throw new HashmailError('MESSAGE_TOO_LARGE', `message too large: ${msg.length} bytes, limit mailbox.maxMessageBytes (${this.maxMessageBytes})`);
    }
    return this.box.writeNow(msg) ? undefined : this.box.write(msg);
  }

  /** Every write resolved only once its message was queued in the box. */
  finish(): undefined {
    return undefined;
  }
}

export interface LegacyMailboxOptions {
  maxMessageBytes: number;
  /** Attach and detach lines at debug; none without. */
  logger?: Logger;
}

export class LegacyMailbox implements LegacyOperations {
  constructor(
    private readonly table: SessionTable,
    private readonly stats: RelayStats,
    private readonly options: LegacyMailboxOptions,
  ) {}

  /** NewCipherBox. ALREADY_EXISTS "stream already active" if the SID has a box. */
  newCipherBox(req: BoxRequest, call: CallInfo): void {
    const sid = validateBoxRequest(req);
    this.table.createBox(sid, call.address);
  }

  /** DelCipherBox: tears the box down, ending its streams. */
  delCipherBox(req: BoxRequest): void {
    this.table.deleteBox(validateBoxRequest(req));
  }

  /**
   * RecvStream: takes the read slot of the box `streamId` names, waiting up to
   * the acquire wait if it is taken. `signal` aborts the wait (CANCELLED).
   */
  async openReceive(streamId: Buffer, call: CallInfo, signal?: AbortSignal): Promise<ReceiveHalf> {
    const box = this.table.findBox(checkSid(streamId));
    const lease = await box.attachReader(signal);
    return new ReceiveHalf(box, lease, 'read', call, this.stats, this.options.logger ?? null);
  }

  /** SendStream: the first message's desc names the box; takes its write slot. */
  async openSend(desc: { streamId: Buffer } | null, call: CallInfo, signal?: AbortSignal): Promise<SendHalf> {
    if (!desc) throw new HashmailError('DESC_REQUIRED');
    const box = this.table.findBox(checkSid(desc.streamId));
    const lease = await box.attachWriter(signal);
    return new SendHalf(box, lease, call, this.stats, this.options.logger ?? null, this.options.maxMessageBytes);
  }
}
