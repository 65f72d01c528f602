/**
 * The errors the client library reports. Every failure carries the gRPC
 * status code the relay gave (or the one a lost connection stands for), and
 * the classes follow the substrings deployed LNC clients match: "stream not
 * found" is SessionNotFound, "stream occupied" is SessionInUse. Mapped once,
 * here, for every transport and both protocol versions.
 */

import { GrpcStatus } from '../wire/grpc-status.js';

/** gRPC status codes the client reads (numeric, so this file needs no gRPC library). */
export const StatusCode = GrpcStatus;

/** Base class of every error the library throws or rejects with. */
export class HashmailClientError extends Error {
  override name = 'HashmailClientError';
  /** gRPC status code (14 UNAVAILABLE for a lost connection). */
  readonly code: number;

  constructor(code: number, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}

/** The session does not exist (attach 'existing', or it expired): the relay said "stream not found". */
export class SessionNotFound extends HashmailClientError {
  override name = 'SessionNotFound';
}

/** Another party holds this party's side of the session: the relay said "... stream occupied". */
export class SessionInUse extends HashmailClientError {
  override name = 'SessionInUse';
}

/** The relay and this client share no protocol version (or protocol 'v2' was required of a v1-only relay). */
export class UnsupportedVersion extends HashmailClientError {
  override name = 'UnsupportedVersion';
  /** Versions the relay says it speaks (empty when it did not say). */
  readonly supportedVersions: readonly number[];

  constructor(code: number, message: string, supportedVersions: readonly number[], options?: { cause?: unknown }) {
    super(code, message, options);
    this.supportedVersions = supportedVersions;
  }
}

/**
 * The connection to the relay broke (network, relay shutdown or restart).
 * Retried automatically unless `reconnect: false`; also what `send` rejects
 * with after `close()`.
 */
export class ConnectionLost extends HashmailClientError {
  override name = 'ConnectionLost';

  constructor(message: string, options?: { cause?: unknown; code?: number }) {
    super(options?.code ?? StatusCode.UNAVAILABLE, message, options);
  }
}

/**
 * The relay we dialed does not own the session and named the one that does
 * (v2 Error with `relay_address`, code 14). Retryable: the connection dials
 * `relayAddress` at once, without a backoff or a lookup.
 */
export class RelayMoved extends ConnectionLost {
  override name = 'RelayMoved';
  /** `HOST:PORT` of the relay that owns the session. */
  readonly relayAddress: string;

  constructor(message: string, relayAddress: string, options?: { cause?: unknown; code?: number }) {
    super(message, options);
    this.relayAddress = relayAddress;
  }
}

/**
 * The dial got no answer at all from the relay: the connection was refused,
 * reset or dropped before the relay said anything (a dead or restarting
 * relay). The next lookup then asks the instance to wait for the session to
 * move instead of naming the same relay again. Retryable.
 */
export class RelayUnreachable extends ConnectionLost {
  override name = 'RelayUnreachable';
}

/**
 * An attached link broke without a word from the relay: the connection was
 * reset or closed with no Error frame (the relay's process died or
 * restarted, or the network dropped). Retryable: the next attempt dials the
 * same relay first, without a lookup, and looks the session up only if that
 * relay does not answer.
 */
export class LinkDropped extends ConnectionLost {
  override name = 'LinkDropped';
}

/**
 * The v2 WebSocket handshake failed and the WebSocket did not say why
 * (browsers never show the HTTP status): with protocol 'auto' negotiation
 * probes v1 to tell "no v2 here" from "relay unreachable"; with 'v2' the
 * application gets this.
 */
export class V2HandshakeUnexplained extends ConnectionLost {
  override name = 'V2HandshakeUnexplained';
}

/**
 * No answer from the relay within `connectTimeoutMs` (lookup, dial and
 * attach of one attempt): e.g. a host that accepts TCP and never answers.
 * Retryable like any lost connection.
 */
export class ConnectTimeout extends ConnectionLost {
  override name = 'ConnectTimeout';
  /** The deadline that passed (ms). */
  readonly timeoutMs: number;

  constructor(timeoutMs: number, options?: { cause?: unknown }) {
    super(`no answer from the relay within ${timeoutMs} ms (connectTimeoutMs)`, { ...options, code: StatusCode.DEADLINE_EXCEEDED });
    this.timeoutMs = timeoutMs;
  }
}

/**
 * An attached link went silent: a ping was not answered within
 * `pingTimeoutMs` (relay frozen, network gone). The connection reconnects
 * as for any lost connection; this is the `error` of 'reconnecting'.
 */
export class LivenessTimeout extends ConnectionLost {
  override name = 'LivenessTimeout';
}

/**
 * A payload over the relay's limit (`v2.maxMessageBytes`, announced in the
 * Welcome): `send` rejects at once and nothing is sent; the connection stays
 * usable. Also what a relay's "message too large" answer becomes (then the
 * stream has ended: the connection reports it, never retries it silently).
 */
export class MessageTooLarge extends HashmailClientError {
  override name = 'MessageTooLarge';
  /** The largest payload the relay takes (bytes); 0 when unknown. */
  readonly limit: number;
  /** The payload's size (bytes); 0 when unknown. */
  readonly size: number;

  constructor(message: string, limit: number, size: number, options?: { cause?: unknown }) {
    super(StatusCode.RESOURCE_EXHAUSTED, message, options);
    this.limit = limit;
    this.size = size;
  }
}

/**
 * The relay's TLS certificate does not have the SHA-256 fingerprint given in
 * `certificateSha256`. Not retried: the relay is not the one pinned.
 */
export class CertificateMismatch extends HashmailClientError {
  override name = 'CertificateMismatch';
  /** The fingerprint the relay presented (colon-separated hex). */
  readonly presented: string;

  constructor(presented: string) {
    super(StatusCode.UNAUTHENTICATED, `relay certificate SHA-256 ${presented} is not the pinned one (certificateSha256)`);
    this.presented = presented;
  }
}

/**
 * Internal: the relay does not serve v2 (gRPC UNIMPLEMENTED, or the
 * WebSocket handshake answered 404/400). Negotiation turns it into a v1
 * fallback, or into UnsupportedVersion when v2 was required.
 */
export class V2NotServed extends HashmailClientError {
  override name = 'V2NotServed';
}

/** The typed error for a relay status (code + message, as a gRPC status or a v2 Error frame carries it). */
export function errorFromStatus(code: number, message: string, supportedVersions: readonly number[] = [], cause?: unknown): HashmailClientError {
  const options = cause === undefined ? undefined : { cause };
  // Substrings first: the v1 reference server sends UNKNOWN with these texts.
  if (message.includes('stream not found')) return new SessionNotFound(code, message, options);
  if (message.includes('stream occupied')) return new SessionInUse(code, message, options);
  // The relay's own answer, or grpc-js's ("Received message larger than max") for a frame far over its limit.
  if (message.includes('message too large') || (code === StatusCode.RESOURCE_EXHAUSTED && message.includes('larger than max'))) {
    return messageTooLargeOf(message, options);
  }
  if (code === StatusCode.FAILED_PRECONDITION && (supportedVersions.length > 0 || message.includes('unsupported protocol version'))) {
    return new UnsupportedVersion(code, message, supportedVersions, options);
  }
  if (code === StatusCode.UNAVAILABLE) return new ConnectionLost(message, { cause, code });
  return new HashmailClientError(code, message, options);
}

/** The relay's "message too large: N bytes, limit v2.maxMessageBytes (M)" as MessageTooLarge, the numbers read where present. */
function messageTooLargeOf(message: string, options?: { cause?: unknown }): MessageTooLarge {
  const size = /(\d+) bytes/.exec(message)?.[1];
  const limit = /\((\d+)\)/.exec(message)?.[1];
  return new MessageTooLarge(message, limit ? Number(limit) : 0, size ? Number(size) : 0, options);
}

/**
 * Whether reconnecting may help: a lost connection, a relay going away, or
 * the transient codes a broken HTTP/2 connection shows up as. A session that
 * is missing or taken, a version mismatch, a rejected request are reported.
 */
export function isRetryable(err: unknown): boolean {
  if (err instanceof ConnectionLost) return true;
  if (!(err instanceof HashmailClientError)) return false;
  if (err instanceof SessionNotFound || err instanceof SessionInUse || err instanceof UnsupportedVersion || err instanceof MessageTooLarge) return false;
  if (err instanceof CertificateMismatch) return false;
  // UNKNOWN: the v1 reference ends streams with "EOF"; INTERNAL: grpc-js reports protocol breakage (RST_STREAM) so.
  return err.code === StatusCode.UNKNOWN || err.code === StatusCode.DEADLINE_EXCEEDED || err.code === StatusCode.INTERNAL;
}

/** Any thrown value as a library error (non-library errors become ConnectionLost: a local failure of the transport). */
export function toClientError(err: unknown): HashmailClientError {
  if (err instanceof HashmailClientError) return err;
  return new ConnectionLost(err instanceof Error ? err.message : String(err), { cause: err });
}
