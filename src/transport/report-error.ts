/**
 * Every transport reports a failure to its client through here first: the
 * error is counted (hashmail_errors_total{code}) and logged once, at a level
 * by kind. Anything not ours becomes INTERNAL without leaking its text.
 * The log carries the code and our own wording, never client input: an
 * error quoting it (clientInputError) is logged by its logMessage, which
 * keeps only the input's length, so a request cannot write its bytes, a SID
 * or a credential into the log.
 */
import type { Logger } from '../observe/logger.js';
import type { RelayStats } from '../observe/stats.js';
import { asHashmailError, type HashmailError, type HashmailErrorCode } from '../session/errors.js';

/**
 * Logged at warn: a client bug or a probe worth seeing. The rest ("stream
 * not found", "occupied", shutdown) is the normal retry loop of every LNC
 * app and would flood warn, so it goes to debug.
 */
const BAD_INPUT_CODES: ReadonlySet<HashmailErrorCode> = new Set<HashmailErrorCode>([
  'MALFORMED_REQUEST',
  'MESSAGE_TOO_LARGE',
  'INVALID_STREAM_ID',
  'DESC_REQUIRED',
  'UNSUPPORTED_VERSION',
  // Anyone reaching a relay's port can try the hop: summarized, never one line per try.
  'HOP_UNAUTHENTICATED',
]);

export interface ErrorReporter {
  readonly logger: Logger;
  readonly stats: RelayStats;
}

/** Counts and logs `err`, about to be reported to a client; `where` names the transport and call for the log. */
export function noteError(ctx: ErrorReporter, err: unknown, where: Record<string, string>): HashmailError {
  const e = asHashmailError(err);
  ctx.stats.countError(e.code);
  if (e.code === 'INTERNAL') ctx.logger.error({ ...where, err }, 'internal error');
  else if (BAD_INPUT_CODES.has(e.code)) {
    // Anyone can send bad requests as fast as they like: the warn lines are summarized per code and interval.
    if (ctx.stats.badRequestLog) {
      ctx.stats.badRequestLog.badRequest(e.code, { ...where, err: e.logMessage });
      ctx.logger.debug({ ...where, code: e.code, err: e.logMessage }, 'bad request');
    } else {
      ctx.logger.warn({ ...where, code: e.code, err: e.logMessage }, 'bad request');
    }
  }
  else ctx.logger.debug({ ...where, code: e.code }, 'call failed');
  return e;
}
