/**
 * How a v2 WebSocket reports a failure (docs/protocol-v2.md, Transports): an
 * Error frame with the gRPC code and message (and our versions when the
 * version is the problem), then a close with code 4000 + that code and the
 * message as reason. Every failure is counted and logged once, here.
 */
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import { SUPPORTED_VERSIONS } from '../../relay/v2-mailbox.js';
import { asHashmailError, type HashmailError, type HashmailErrorCode } from '../../session/errors.js';
import { encodeErrorFrame } from '../../wire/v2-frames.js';

/** Close codes are 4000 + the gRPC status code (docs/protocol-v2.md, Transports). */
export const CLOSE_CODE_BASE = 4000;
/** RFC 6455: a close reason is at most 123 bytes of UTF-8. */
const MAX_CLOSE_REASON_BYTES = 123;
/** Logged at warn: a client bug or a probe worth seeing. The rest (occupied, not found) is the normal retry loop: debug. */
const BAD_INPUT_CODES: ReadonlySet<HashmailErrorCode> = new Set<HashmailErrorCode>(['MALFORMED_REQUEST', 'INVALID_STREAM_ID', 'UNSUPPORTED_VERSION']);

/** Counts and logs an error about to be reported to the client; not ours becomes INTERNAL. */
export function noteError(ctx: { readonly logger: Logger; readonly stats: RelayStats }, err: unknown): HashmailError {
  const e = asHashmailError(err);
  ctx.stats.countError(e.code);
  if (e.code === 'INTERNAL') ctx.logger.error({ transport: 'websocket', err }, 'internal error');
  else if (BAD_INPUT_CODES.has(e.code)) ctx.logger.warn({ transport: 'websocket', code: e.code, err: e.message }, 'bad request');
  else ctx.logger.debug({ transport: 'websocket', code: e.code }, 'v2 call failed');
  return e;
}

/** `message` cut to at most 123 bytes of UTF-8 on a character boundary (a cut character would fail the client's UTF-8 check). */
export function closeReason(message: string): string {
  const bytes = Buffer.from(message, 'utf8');
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return message;
  let end = MAX_CLOSE_REASON_BYTES;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}

/** The Error frame for `err`; supported_versions only when the version is the problem. */
export function errorFrame(err: HashmailError): Uint8Array {
  return encodeErrorFrame({
    code: err.grpcCode,
    message: err.message,
    supportedVersions: err.code === 'UNSUPPORTED_VERSION' ? [...SUPPORTED_VERSIONS] : [],
  });
}
