/**
 * How a v2 WebSocket reports a failure (docs/protocol-v2.md, Transports): an
 * Error frame with the gRPC code and message (and our versions when the
 * version is the problem), then a close with code 4000 + that code and the
 * message as reason. Every failure is counted and logged once, here.
 */
import type { HashmailError } from '../../session/errors.js';
import { noteError as reportError, type ErrorReporter } from '../report-error.js';
export { v2ErrorFrame as errorFrame } from '../v2-error-frame.js';

/** Close codes are 4000 + the gRPC status code (docs/protocol-v2.md, Transports). */
export const CLOSE_CODE_BASE = 4000;
/** RFC 6455: a close reason is at most 123 bytes of UTF-8. */
const MAX_CLOSE_REASON_BYTES = 123;
/** Counts and logs an error about to be reported to a v2 WebSocket client (see report-error.ts). */
export function noteError(ctx: ErrorReporter, err: unknown): HashmailError {
  return reportError(ctx, err, { transport: 'websocket', call: 'v2' });
}

/** `message` cut to at most 123 bytes of UTF-8 on a character boundary (a cut character would fail the client's UTF-8 check). */
export function closeReason(message: string): string {
  const bytes = Buffer.from(message, 'utf8');
  if (bytes.length <= MAX_CLOSE_REASON_BYTES) return message;
  let end = MAX_CLOSE_REASON_BYTES;
  while (end > 0 && (bytes[end] & 0xc0) === 0x80) end--;
  return bytes.subarray(0, end).toString('utf8');
}
