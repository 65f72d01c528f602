/**
 * What every call of the legacy gateway shares: the mailbox it translates to,
 * logging, counters and the set of open streaming calls that shutdown ends.
 */
import type { IncomingMessage } from 'node:http';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats, TransportName } from '../../observe/stats.js';
import type { LegacyMailbox } from '../../relay/legacy-mailbox.js';
import { asHashmailError, HashmailError, type HashmailErrorCode } from '../../session/errors.js';

/** JSON requests without a message (CipherBoxDesc, CipherBoxAuth) are tiny; this bounds their body (bytes). */
export const MAX_SMALL_REQUEST_BYTES = 16 * 1024;

const BAD_INPUT_CODES: ReadonlySet<HashmailErrorCode> = new Set<HashmailErrorCode>([
  'MALFORMED_REQUEST',
  'MESSAGE_TOO_LARGE',
  'INVALID_STREAM_ID',
  'DESC_REQUIRED',
]);

/** A streaming call (WebSocket or chunked HTTP) that shutdown must end. */
export interface OpenCall {
  /** Reports `err` (not ours: INTERNAL) to the client if it can still be told, then ends the call. */
  abort(err: unknown): void;
}

export interface GatewayContext {
  readonly mailbox: LegacyMailbox;
  readonly logger: Logger;
  readonly stats: RelayStats;
  clientAddress(req: IncomingMessage): string;
  /** Largest JSON text of one CipherBox (from mailbox.maxMessageBytes). */
  readonly maxCipherBoxJsonBytes: number;
  /** Open streaming calls (shutdown ends them all). */
  readonly calls: Set<OpenCall>;
  /** Set once shutdown began: new calls are refused. */
  readonly shuttingDown: boolean;
}

/**
 * Counts an error about to be reported to a client and logs it: bad input at
 * warn (a client bug or probe worth seeing), the rest at debug (the normal
 * "stream not found" retry loop of every LNC app would flood warn).
 */
export function noteError(ctx: GatewayContext, err: unknown, transport: TransportName, call: string): HashmailError {
  const e = asHashmailError(err);
  ctx.stats.countError(e.code);
  if (BAD_INPUT_CODES.has(e.code)) {
    ctx.logger.warn({ transport, call, code: e.code, err: e.message }, 'bad request');
  } else if (e.code === 'INTERNAL') {
    ctx.logger.error({ transport, call, err }, 'internal error');
  } else {
    ctx.logger.debug({ transport, call, code: e.code }, 'call failed');
  }
  return e;
}
