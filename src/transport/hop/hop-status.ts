/**
 * How a failure crosses the hop: the relay ends the half or box call with an
 * END frame carrying its HashmailError's code name, message and (for
 * SERVED_ELSEWHERE) the owner's address; the gateway re-creates the very
 * same HashmailError from that, so its transports answer the legacy client
 * with the exact gRPC status, HTTP status and JSON error frame the relay
 * would have. An END that names no code of ours did not come from our relay
 * code: UNAVAILABLE, which legacy clients retry.
 */
import { HashmailError, isHashmailErrorCode, servedElsewhere } from '../../session/errors.js';

/** Longest message taken over from the hop (our texts are far shorter). */
const MAX_DETAILS_CHARS = 1024;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/;

/** Our error named by `code`, or null when it names none we can believe. */
function relayError(code: string | undefined, details: string, relayAddress: string | undefined): HashmailError | null {
  if (code === undefined || !isHashmailErrorCode(code)) return null;
  if (code !== 'SERVED_ELSEWHERE') return new HashmailError(code, details || undefined);
  return relayAddress && HOST_PORT.test(relayAddress) ? servedElsewhere(relayAddress) : null;
}

/** The END frame fields a relay sends for a half or box call that failed with `err`. */
export function endFields(err: HashmailError): { errorCode: string; errorMessage: string; relayAddress?: string } {
  return { errorCode: err.code, errorMessage: err.message, relayAddress: err.relayAddress };
}

/** The HashmailError a gateway reports for an END frame that named `errorCode` (the relay's own error, re-created). */
export function endFrameError(f: { errorCode?: string; errorMessage?: string; relayAddress?: string }): HashmailError {
  const details = (f.errorMessage ?? '').slice(0, MAX_DETAILS_CHARS);
  return relayError(f.errorCode, details, f.relayAddress) ?? new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (ended: ${f.errorCode ?? 'no code'})`);
}
