/**
 * What every legacy (v1) transport asks of a mailbox: the four legacy calls.
 * The relay answers them from its own session table (legacy-mailbox.ts); a
 * gateway answers them by carrying each call to the relay that owns the
 * session. Transports only move bytes and never know which.
 */
import type { HashmailError } from '../session/errors.js';
import type { TransportName } from '../observe/stats.js';
import type { ReadSource } from './read-pump.js';

/** Who is calling: the transport (for metrics) and the client address (for per-address limits). */
export interface CallInfo {
  transport: TransportName;
  address: string;
}

export interface BoxRequest {
  /** null when the request carries no `desc`. */
  desc: { streamId: Buffer } | null;
  /** The `auth` oneof was set. */
  hasAuth: boolean;
}

/** A half (one slot of one box) held by a legacy stream until released. */
export interface LegacyHalf {
  /**
   * `fn` runs once if the box is torn down (delete, stale, shutdown, the
   * owning relay gone) while this half holds its slot.
   */
  onBoxClosed(fn: (err: HashmailError) => void): void;
  /** Frees the slot at once; a pending read or write ends with CANCELLED. Idempotent. */
  release(): void;
}

/** RecvStream's half: the read slot of box `x`. */
export interface LegacyReceive extends LegacyHalf, ReadSource {}

/** SendStream's half: the write slot of box `x`. */
export interface LegacySend extends LegacyHalf {
  /**
   * Queues `msg` now if it can (undefined), else returns a promise that
   * settles once it is queued: the caller stops reading its transport until
   * then. Throws on a bad message or a torn-down box.
   */
  write(msg: Buffer): Promise<void> | undefined;
  /**
   * The client ended its stream: settles once the mailbox holds every
   * message written, so SendStream is answered OK only then. Undefined when
   * that is already so (the relay's own table).
   */
  finish(): Promise<void> | undefined;
}

export interface LegacyOperations {
  /** NewCipherBox. ALREADY_EXISTS "stream already active" if the SID has a box. */
  newCipherBox(req: BoxRequest, call: CallInfo): Promise<void> | void;
  /** DelCipherBox: tears the box down, ending its streams. */
  delCipherBox(req: BoxRequest, call: CallInfo): Promise<void> | void;
  /** RecvStream: the read slot of box `streamId`, waiting up to the acquire wait; `signal` aborts the wait (CANCELLED). */
  openReceive(streamId: Buffer, call: CallInfo, signal?: AbortSignal): Promise<LegacyReceive>;
  /** SendStream: the first message's desc names the box; takes its write slot. */
  openSend(desc: { streamId: Buffer } | null, call: CallInfo, signal?: AbortSignal): Promise<LegacySend>;
}
