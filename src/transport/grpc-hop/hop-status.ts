/**
 * How a failure crosses the hop: the relay sends its HashmailError as the
 * gRPC status (code, message as details) plus trailer `hashmail-error` with
 * the error's code name (and `hashmail-relay-address` for SERVED_ELSEWHERE);
 * the gateway re-creates the very same HashmailError from that, so its
 * transports answer the legacy client with the exact gRPC status, HTTP
 * status and JSON error frame the relay would have. A status without the
 * trailer did not come from our relay code (connection lost, relay gone,
 * deadline): UNAVAILABLE, which legacy clients retry.
 */
import { Metadata } from '@grpc/grpc-js';
import { HashmailError, isHashmailErrorCode, servedElsewhere } from '../../session/errors.js';
import { GrpcStatus } from '../../wire/grpc-status.js';
import { HOP_ERROR_TRAILER, HOP_RELAY_ADDRESS_TRAILER } from './service.js';

/** Longest status details taken over from the hop (our texts are far shorter). */
const MAX_DETAILS_CHARS = 1024;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:\s]+):\d{1,5}$/;

export interface HopStatus {
  code: number;
  details: string;
  metadata: Metadata;
}

/** The status a relay answers a failed hop call with. */
export function hopStatus(err: HashmailError): HopStatus {
  const metadata = new Metadata();
  metadata.set(HOP_ERROR_TRAILER, err.code);
  if (err.relayAddress) metadata.set(HOP_RELAY_ADDRESS_TRAILER, err.relayAddress);
  return { code: err.grpcCode, details: err.message, metadata };
}

function first(metadata: Metadata | undefined, key: string): string | undefined {
  const v = metadata?.get(key)[0];
  return typeof v === 'string' ? v : undefined;
}

/** Our error named by `code` (a trailer or an END frame), or null when it names none we can believe. */
function relayError(code: string | undefined, details: string, relayAddress: string | undefined): HashmailError | null {
  if (code === undefined || !isHashmailErrorCode(code)) return null;
  if (code !== 'SERVED_ELSEWHERE') return new HashmailError(code, details || undefined);
  return relayAddress && HOST_PORT.test(relayAddress) ? servedElsewhere(relayAddress) : null;
}

/** The END frame fields a relay sends for a half that failed with `err`. */
export function endFields(err: HashmailError): { errorCode: string; errorMessage: string; relayAddress?: string } {
  return { errorCode: err.code, errorMessage: err.message, relayAddress: err.relayAddress };
}

/** The HashmailError a gateway reports for a half whose END frame named `errorCode` (the relay's own error, re-created). */
export function endFrameError(f: { errorCode?: string; errorMessage?: string; relayAddress?: string }): HashmailError {
  const details = (f.errorMessage ?? '').slice(0, MAX_DETAILS_CHARS);
  return relayError(f.errorCode, details, f.relayAddress) ?? new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (ended: ${f.errorCode ?? 'no code'})`);
}

/** The HashmailError a gateway reports for a hop call that ended with `status`. */
export function hopError(status: { code: number; details?: string; metadata?: Metadata }): HashmailError {
  const details = (status.details ?? '').slice(0, MAX_DETAILS_CHARS);
  const known = relayError(first(status.metadata, HOP_ERROR_TRAILER), details, first(status.metadata, HOP_RELAY_ADDRESS_TRAILER));
  if (known) return known;
  if (status.code === GrpcStatus.CANCELLED) return new HashmailError('CANCELLED');
  const name = Object.entries(GrpcStatus).find(([, v]) => v === status.code)?.[0] ?? String(status.code);
  return new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (${name}${details ? `: ${details}` : ''})`);
}
