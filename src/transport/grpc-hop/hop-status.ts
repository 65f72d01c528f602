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

/** The HashmailError a gateway reports for a hop call that ended with `status`. */
export function hopError(status: { code: number; details?: string; metadata?: Metadata }): HashmailError {
  const details = (status.details ?? '').slice(0, MAX_DETAILS_CHARS);
  const code = first(status.metadata, HOP_ERROR_TRAILER);
  if (code !== undefined && isHashmailErrorCode(code)) {
    if (code === 'SERVED_ELSEWHERE') {
      const address = first(status.metadata, HOP_RELAY_ADDRESS_TRAILER);
      if (address && HOST_PORT.test(address)) return servedElsewhere(address);
    } else {
      return new HashmailError(code, details || undefined);
    }
  }
  if (status.code === GrpcStatus.CANCELLED) return new HashmailError('CANCELLED');
  const name = Object.entries(GrpcStatus).find(([, v]) => v === status.code)?.[0] ?? String(status.code);
  return new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (${name}${details ? `: ${details}` : ''})`);
}
