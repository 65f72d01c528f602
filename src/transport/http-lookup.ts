/**
 * HTTP `GET /v2/relay?route=ROUTE[&create=1][&unreachable=ID[&unreachable_started_at=MS]&wait_ms=MS]` on the public port: the same
 * lookup as gRPC ServerForMailbox, for browsers (docs/protocol-v2.md,
 * Finding the relay). 200 `{"id","address","startedAt"}`; errors as
 * `{"error":{"code":<grpc code>,"message":...}}` with the code's HTTP status
 * (404 not placed, 503 directory unavailable, 400 bad route). CORS allows
 * any origin, preflight included: the answer names a public address only.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { LookupWait, RouteLookup } from '../directory/route-lookup.js';
import { CALL_OVER } from '../session/abort-reason.js';
import { HashmailError } from '../session/errors.js';
import type { AnsweredAs } from './reached-address.js';
import { noteError, type ErrorReporter } from './report-error.js';

export const LOOKUP_PATH = '/v2/relay';
const PREFLIGHT_MAX_AGE_S = 600;

/** True for `/v2/relay`, with or without a query string. */
export function isLookupPath(url: string | undefined): boolean {
  return url === LOOKUP_PATH || (url?.startsWith(`${LOOKUP_PATH}?`) ?? false);
}

function sendJson(res: ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(text),
    'Access-Control-Allow-Origin': '*',
    'Cache-Control': 'no-store',
  });
  res.end(text);
}

/**
 * The wait a query asks for (`unreachable`, `unreachable_started_at`, `wait_ms`; capped by
 * directory.lookupWaitMaxMs upstream), ended early when the client goes away.
 */
function heldLookup(query: URLSearchParams, res: ServerResponse): LookupWait | undefined {
  const ms = Number(query.get('wait_ms') ?? 0);
  if (ms <= 0) return undefined;
  const gone = new AbortController();
  // 'close' follows every answer too: only a client that left before it aborts the wait.
  res.once('close', () => {
    if (!res.writableEnded) gone.abort(CALL_OVER);
  });
  const startedAt = Number(query.get('unreachable_started_at') ?? 0);
  return { unreachable: query.get('unreachable') ?? '', ...(startedAt > 0 ? { unreachableStartedAt: startedAt } : {}), ms, signal: gone.signal };
}

export class HttpLookup {
  constructor(
    private readonly lookup: RouteLookup,
    private readonly reporter: ErrorReporter,
    /** The per-address limit key of a request (server.clientAddressFrom): its held lookups and placements count under it. */
    private readonly clientAddress: (req: IncomingMessage) => string,
    /** The address given out for an owner (reached-address.ts); default as registered. */
    private readonly answeredAs: AnsweredAs = (owner) => owner.address,
  ) {}

  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    if (req.method === 'OPTIONS') {
      res.writeHead(204, {
        'Access-Control-Allow-Origin': '*',
        'Access-Control-Allow-Methods': 'GET, OPTIONS',
        'Access-Control-Allow-Headers': req.headers['access-control-request-headers'] ?? 'Content-Type',
        'Access-Control-Max-Age': String(PREFLIGHT_MAX_AGE_S),
        // No Content-Length: a 204 must not carry one (RFC 9110 8.6), and HTTP/2 drops it.
      });
      res.end();
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, OPTIONS');
      this.fail(res, new HashmailError('METHOD_NOT_ALLOWED'));
      return;
    }
    const query = new URL(req.url ?? '/', 'http://x').searchParams;
    const create = query.get('create');
    const waitText = query.get('wait_ms');
    if (waitText !== null && !/^\d{1,9}$/.test(waitText)) {
      this.fail(res, new HashmailError('MALFORMED_REQUEST', 'malformed request: wait_ms must be a whole number of milliseconds'));
      return;
    }
    const startedText = query.get('unreachable_started_at');
    if (startedText !== null && !/^\d{1,15}$/.test(startedText)) {
      this.fail(res, new HashmailError('MALFORMED_REQUEST', 'malformed request: unreachable_started_at must be a whole number of milliseconds'));
      return;
    }
    const wait = heldLookup(query, res);
    this.lookup(query.get('route'), { create: create === '1' || create === 'true', client: this.clientAddress(req), ...(wait ? { wait } : {}) }).then(
      (owner) => sendJson(res, 200, { id: owner.id, address: this.answeredAs(owner, authorityOf(req)), startedAt: owner.startedAt }),
      (err: unknown) => this.fail(res, err),
    );
  }

  private fail(res: ServerResponse, err: unknown): void {
    const e = noteError(this.reporter, err, { transport: 'http', call: 'lookup' });
    if (res.headersSent || res.destroyed) return;
    sendJson(res, e.httpStatus, { error: { code: e.grpcCode, message: e.message } });
  }
}

/** The authority a request came with: Host (HTTP/1.1) or :authority (HTTP/2). */
function authorityOf(req: IncomingMessage): string | undefined {
  const value = req.headers.host ?? req.headers[':authority'];
  return typeof value === 'string' ? value : undefined;
}
