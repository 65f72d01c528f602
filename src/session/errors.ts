/**
 * One error type with stable codes, mapped once. Every transport reports the
 * same failure with the same text, gRPC status and HTTP status. Texts marked
 * "legacy" are part of the v1 wire contract: deployed clients match them by
 * substring ("stream not found", "stream occupied"), so they never change.
 */

import { GrpcStatus, type GrpcStatusCode } from '../wire/grpc-status.js';
import { describeClientText, quoteClientText } from './client-text.js';

/** gRPC status codes we emit. */
export const GrpcCode = GrpcStatus;
export type GrpcCodeValue = GrpcStatusCode;

interface ErrorSpec {
  grpc: GrpcCodeValue;
  http: number;
  /** Fixed text; codes whose text varies (limits, detail) take it at construction. */
  text?: string;
}

const ERROR_TABLE = {
  // legacy texts (spec section 3)
  DESC_REQUIRED: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, text: 'cipher box descriptor required' },
  STREAM_ID_REQUIRED: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, text: 'stream_id required' },
  AUTH_REQUIRED: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, text: 'auth type required' },
  STREAM_EXISTS: { grpc: GrpcCode.ALREADY_EXISTS, http: 409, text: 'stream already active' },
  STREAM_NOT_FOUND: { grpc: GrpcCode.NOT_FOUND, http: 404, text: 'stream not found' },
  READ_OCCUPIED: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 429, text: 'read stream occupied' },
  WRITE_OCCUPIED: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 429, text: 'write stream occupied' },
  STREAM_SHUTTING_DOWN: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'stream shutting down' },
  BOX_DELETED_EOF: { grpc: GrpcCode.UNKNOWN, http: 500, text: 'EOF' },
  BOX_DELETED_PIPE: { grpc: GrpcCode.UNKNOWN, http: 500, text: 'io: read/write on closed pipe' },
  SERVER_SHUTTING_DOWN: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'server shutting down' },
  // ours
  INVALID_STREAM_ID: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, text: 'stream_id must be 64 bytes' },
  MALFORMED_REQUEST: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400 },
  MESSAGE_TOO_LARGE: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 413 },
  LIMIT_REACHED: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 429 },
  CANCELLED: { grpc: GrpcCode.CANCELLED, http: 499, text: 'cancelled' },
  METHOD_NOT_ALLOWED: { grpc: GrpcCode.UNIMPLEMENTED, http: 405, text: 'Method Not Allowed' },
  PATH_NOT_FOUND: { grpc: GrpcCode.NOT_FOUND, http: 404, text: 'Not Found' },
  UNSUPPORTED_VERSION: { grpc: GrpcCode.FAILED_PRECONDITION, http: 400 },
  PEER_OCCUPIED: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 429, text: 'stream occupied' },
  INTERNAL: { grpc: GrpcCode.INTERNAL, http: 500, text: 'internal error' },
  // the cluster (docs/protocol-v2.md, Finding the relay)
  SERVED_ELSEWHERE: { grpc: GrpcCode.UNAVAILABLE, http: 503 },
  SESSION_NOT_PLACED: { grpc: GrpcCode.NOT_FOUND, http: 404, text: 'session not placed' },
  BAD_ROUTE: { grpc: GrpcCode.INVALID_ARGUMENT, http: 400, text: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' },
  DIRECTORY_UNAVAILABLE: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'directory unavailable' },
  NO_RELAY: { grpc: GrpcCode.RESOURCE_EXHAUSTED, http: 503, text: 'no relay available' },
  RELAY_DRAINING: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'relay draining: look up the session again' },
  FENCE_LOST: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'relay lost its directory lease: look up the session again' },
  ROUTE_LOST: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'session moved to another relay: look up the session again' },
  // the gateway -> relay hop (docs/gateway-hop.md)
  HOP_UNAUTHENTICATED: { grpc: GrpcCode.UNAUTHENTICATED, http: 401, text: 'hop: not an authenticated gateway' },
  RELAY_UNREACHABLE: { grpc: GrpcCode.UNAVAILABLE, http: 503, text: 'gateway: relay unreachable' },
} satisfies Record<string, ErrorSpec>;

export type HashmailErrorCode = keyof typeof ERROR_TABLE;

/** True for a code of ours (a code read off the wire, e.g. the hop's `hashmail-error` trailer). */
export function isHashmailErrorCode(text: string): text is HashmailErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_TABLE, text);
}

export class HashmailError extends Error {
  readonly code: HashmailErrorCode;
  readonly grpcCode: GrpcCodeValue;
  readonly httpStatus: number;
  /** The message as the log may carry it: client input reduced to its length (see clientInputError). */
  readonly logMessage: string;
  /** SERVED_ELSEWHERE: the owning relay's `HOST:PORT` (the v2 Error frame's relay_address). */
  relayAddress?: string;

  /** `message` must be our own text; an error quoting client input is made by clientInputError. */
  constructor(code: HashmailErrorCode, message?: string, logMessage?: string) {
    const spec: ErrorSpec = ERROR_TABLE[code];
    super(message ?? spec.text ?? code);
    this.name = 'HashmailError';
    this.code = code;
    this.grpcCode = spec.grpc;
    this.httpStatus = spec.http;
    this.logMessage = logMessage ?? this.message;
  }

  /** The body of a gRPC-gateway style error: `{"code":..,"message":..,"details":[]}`. */
  toStatusJson(): { code: number; message: string; details: never[] } {
    return { code: this.grpcCode, message: this.message, details: [] };
  }
}

/** Another relay owns the session: the client goes to `address` without another lookup. */
export function servedElsewhere(address: string): HashmailError {
  const err = new HashmailError('SERVED_ELSEWHERE', `session is served by another relay: ${address}`);
  err.relayAddress = address;
  return err;
}

/** A limit that keeps one client from hurting others was hit; the text names the config key. */
export function limitReached(configKey: string, limit: number): HashmailError {
  return new HashmailError('LIMIT_REACHED', `limit reached: ${configKey} (${limit})`);
}

/**
 * An error naming a piece of client input (a field name, a header value):
 * `say` builds the text around it. The client reads a short sanitized
 * quotation of its input (client-text.ts); the log reads only its length.
 */
export function clientInputError(code: HashmailErrorCode, input: string, say: (quoted: string) => string): HashmailError {
  return new HashmailError(code, say(quoteClientText(input)), say(describeClientText(input)));
}

/** Anything thrown that is not ours becomes INTERNAL, without leaking its text. */
export function asHashmailError(err: unknown): HashmailError {
  return err instanceof HashmailError ? err : new HashmailError('INTERNAL');
}
