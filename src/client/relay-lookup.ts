/**
 * Asking an instance which relay owns a session: the answer types every
 * lookup transport shares, and the HTTP lookup (`GET /v2/relay?route=R`,
 * the WebSocket transport's and browsers') over an injectable GET, so the
 * browser uses fetch and Node a GET that honours tlsSkipVerify
 * (http-get-node.ts). The gRPC lookup is in lookup-grpc.ts (Node only).
 * Browser-safe.
 */
import { ConnectionLost, HashmailClientError, StatusCode } from './errors.js';
import type { ServerAddress } from './options.js';
import { httpBase } from './websocket.js';

import type { NodeTls } from './tls-trust-node.js';

/** Bound on one lookup, connection included (ms), beyond the hold a held lookup asks for. */
export const LOOKUP_TIMEOUT_MS = 10_000;

export const RELAY_LOOKUP_PATH = '/v2/relay';

/** The bound on `req` (ms): LOOKUP_TIMEOUT_MS, plus its hold. */
export function lookupTimeoutMs(req: { wait?: LookupWaitRequest }): number {
  return LOOKUP_TIMEOUT_MS + (req.wait?.ms ?? 0);
}

export interface LookupRequest {
  /** The instance asked (any instance of the service). */
  server: ServerAddress;
  route: string;
  /** Place the session if no relay owns it (the party attaches with 'create'). */
  create: boolean;
  tlsSkipVerify: boolean;
  signal: AbortSignal;
  /** Node TLS verification from `ca` / `certificateSha256`. */
  tls?: NodeTls;
  /** What this party already tried (a retry): hold the answer while it would be the same. */
  wait?: LookupWaitRequest;
}

/**
 * ServerForMailboxRequest `unreachable`, `unreachable_started_at` and `wait_ms`
 * (GET /v2/relay `&unreachable=ID&unreachable_started_at=MS&wait_ms=MS`).
 */
export interface LookupWaitRequest {
  /** Instance id of the owner this party could not reach; empty: it was told "not placed". */
  unreachable: string;
  /**
   * That owner's registration as a lookup named it (the answer's startedAt);
   * absent: not known. The instance then holds the answer only while the
   * owner is that same registration, not a restart of it.
   */
  unreachableStartedAt?: number;
  /** Hold the answer up to this long (ms); the instance caps it (directory.lookupWaitMaxMs). */
  ms: number;
}

export type LookupAnswer =
  /** The owner's instance id, advertised `HOST:PORT` and registration (startedAt; absent from instances that predate it). */
  | { kind: 'owner'; id: string; address: string; startedAt?: number }
  /** No relay owns the session and `create` was false. */
  | { kind: 'not-placed'; message: string }
  /** The instance does not serve lookups (an old single server): dial it directly. */
  | { kind: 'not-served'; why: string };

/**
 * Resolves with the instance's answer. Rejects with LookupUnreachable when no
 * answer came (connection refused, TLS failure, timeout; in a browser also a
 * CORS refusal), with ConnectionLost when the instance answered "try again"
 * (directory unavailable, no relay available), with another
 * HashmailClientError when it refused the request.
 */
export type RelayLookup = (req: LookupRequest) => Promise<LookupAnswer>;

/** The lookup got no answer from the instance. */
export class LookupUnreachable extends ConnectionLost {
  override name = 'LookupUnreachable';
}

/** What a GET (or POST) answered. */
export interface HttpAnswer {
  status: number;
  body: string;
}

/** A small JSON POST instead of the GET (the legacy NewCipherBox over REST). */
export interface HttpPost {
  body: string;
}

/** GETs `url` (or POSTs `post`); rejects when no HTTP answer came. */
export type HttpRequest = (url: string, options: { signal: AbortSignal; timeoutMs: number; tls?: NodeTls; post?: HttpPost }) => Promise<HttpAnswer>;

/** GET (or POST) through fetch (browsers; Node when the certificate is verified). */
export const fetchRequest: HttpRequest = async (url, { signal, timeoutMs, post }) => {
  const res = await fetch(url, {
    method: post ? 'POST' : 'GET',
    ...(post ? { body: post.body, headers: { 'Content-Type': 'application/json' } } : {}),
    signal: AbortSignal.any([signal, AbortSignal.timeout(timeoutMs)]),
    cache: 'no-store',
  });
  return { status: res.status, body: await res.text() };
};

/** HTTP statuses a server without the lookup gives for an unknown path or method. */
const NOT_SERVED_STATUSES = [404, 405, 501];
/** HTTP statuses that mean "try again" even without our error body (a balancer in front). */
const RETRY_STATUSES = [429, 502, 503, 504];

interface ErrorBody {
  code: number;
  message: string;
}

/** Our JSON error body `{"error": {"code", "message"}}`, or null for anything else (another server's 404 page). */
function errorBody(text: string): ErrorBody | null {
  try {
    const parsed = JSON.parse(text) as { error?: { code?: unknown; message?: unknown } } | null;
    const error = parsed?.error;
    if (typeof error !== 'object' || error === null || typeof error.code !== 'number') return null;
    return { code: error.code, message: typeof error.message === 'string' ? error.message : '' };
  } catch {
    return null;
  }
}

function ownerOf(text: string): { id: string; address: string; startedAt?: number } | null {
  try {
    const parsed = JSON.parse(text) as { id?: unknown; address?: unknown; startedAt?: unknown } | null;
    if (typeof parsed?.address !== 'string' || parsed.address.length === 0) return null;
    const startedAt = typeof parsed.startedAt === 'number' && Number.isSafeInteger(parsed.startedAt) && parsed.startedAt > 0 ? parsed.startedAt : undefined;
    return { id: typeof parsed.id === 'string' ? parsed.id : '', address: parsed.address, ...(startedAt ? { startedAt } : {}) };
  } catch {
    return null;
  }
}

/** Maps an HTTP answer of `GET /v2/relay` to a lookup answer (or throws as RelayLookup does). */
export function httpLookupAnswer(answer: HttpAnswer): LookupAnswer {
  const { status, body } = answer;
  const error = errorBody(body);
  if (status === 200) {
    const owner = ownerOf(body);
    if (owner) return { kind: 'owner', ...owner };
    return { kind: 'not-served', why: 'HTTP 200 without an owner' };
  }
  if (status === 404 && error) return { kind: 'not-placed', message: error.message || 'session not placed' };
  if (!error && NOT_SERVED_STATUSES.includes(status)) return { kind: 'not-served', why: `HTTP ${status}` };
  const message = error?.message || `relay lookup answered HTTP ${status}`;
  const code = error?.code ?? StatusCode.UNAVAILABLE;
  if (RETRY_STATUSES.includes(status) || code === StatusCode.UNAVAILABLE || code === StatusCode.RESOURCE_EXHAUSTED) {
    throw new ConnectionLost(message, { code });
  }
  throw new HashmailClientError(code, message);
}

/** `http(s)://server/v2/relay?route=R[&create=1][&unreachable=ID[&unreachable_started_at=MS]][&wait_ms=MS]`. */
export function relayLookupUrl(req: LookupRequest): string {
  const wait = req.wait && req.wait.ms > 0 ? req.wait : null;
  const startedAt = wait?.unreachableStartedAt ? `&unreachable_started_at=${wait.unreachableStartedAt}` : '';
  const unreachable = wait?.unreachable ? `&unreachable=${encodeURIComponent(wait.unreachable)}${startedAt}` : '';
  const held = wait ? `${unreachable}&wait_ms=${Math.round(wait.ms)}` : '';
  return `${httpBase(req.server)}${RELAY_LOOKUP_PATH}?route=${encodeURIComponent(req.route)}${req.create ? '&create=1' : ''}${held}`;
}

/** The HTTP lookup over `get`. */
export function httpRelayLookup(get: HttpRequest): RelayLookup {
  return async (req) => {
    let answer: HttpAnswer;
    try {
      answer = await get(relayLookupUrl(req), { signal: req.signal, timeoutMs: lookupTimeoutMs(req), ...(req.tls ? { tls: req.tls } : {}) });
    } catch (err) {
      if (req.signal.aborted) throw new ConnectionLost('connect aborted', { cause: req.signal.reason });
      throw new LookupUnreachable(`relay lookup at ${req.server.authority} failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    }
    return httpLookupAnswer(answer);
  };
}
