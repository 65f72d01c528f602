/**
 * Node-only: the grpc-js pieces shared by the v1 and v2 gRPC links. Loaded
 * only through grpc-openers.ts, which the entry imports dynamically when
 * transport 'grpc' is chosen.
 */
import { credentials, status, type ChannelCredentials, type ServiceError } from '@grpc/grpc-js';
import { errorFromStatus, StatusCode, type HashmailClientError } from './errors.js';
import { channelCredentials, errorText, isServiceError, type TransportSecurity } from './legacy-grpc.js';
import type { NodeTls } from './tls-trust-node.js';
import type { ServerAddress } from './options.js';

export function securityOf(server: ServerAddress, tlsSkipVerify: boolean): TransportSecurity {
  if (!server.secure) return 'insecure';
  return tlsSkipVerify ? 'tls-skip-verify' : 'tls';
}

/** The channel credentials of a link or lookup: `tls` (from `ca` / `certificateSha256`) when given, else by securityOf. */
export function credentialsFor(server: ServerAddress, tlsSkipVerify: boolean, tls: NodeTls | undefined): ChannelCredentials {
  if (!tls || !server.secure) return channelCredentials(securityOf(server, tlsSkipVerify));
  return credentials.createSsl(tls.ca ? Buffer.from(tls.ca.join('\n')) : null, null, null, {
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(tls.checkServerIdentity ? { checkServerIdentity: tls.checkServerIdentity } : {}),
  });
}

/** A grpc-js failure as a library error. */
export function grpcError(err: unknown): HashmailClientError {
  if (isServiceError(err)) return errorFromStatus(err.code, errorText(err), [], err);
  return errorFromStatus(StatusCode.UNAVAILABLE, errorText(err), [], err);
}

export function isUnimplemented(err: ServiceError): boolean {
  return err.code === status.UNIMPLEMENTED;
}

/** Uint8Array as a Buffer without copying (grpc-js serializers must return Buffers). */
export function asBuffer(bytes: Uint8Array): Buffer {
  return Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}
