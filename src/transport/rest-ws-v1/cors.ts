/**
 * CORS for the legacy gateway, any origin (spec section 4). The two header
 * sets differ on purpose: they are what the reference sends, and browsers
 * running deployed clients were tested against exactly these. Allowing more
 * is fine; allowing less breaks them.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';

const PREFLIGHT_METHODS = 'GET, POST, OPTIONS';
const PREFLIGHT_HEADERS = 'Content-Type, Authorization, Grpc-Metadata-Macaroon';
const RESPONSE_METHODS = 'GET, POST, PUT, DELETE';
const RESPONSE_HEADERS = 'Content-Type, Accept, Grpc-Metadata-Macaroon';

/** Answers a preflight (OPTIONS): 200, any origin, no body. */
export function answerPreflight(res: ServerResponse): void {
  res.writeHead(200, {
    'Access-Control-Allow-Origin': '*',
    'Access-Control-Allow-Methods': PREFLIGHT_METHODS,
    'Access-Control-Allow-Headers': PREFLIGHT_HEADERS,
    'Content-Length': '0',
  });
  res.end();
}

/** Sets the CORS headers of a non-preflight response on a hashmail path: echoes the request's Origin. */
export function setCorsHeaders(req: IncomingMessage, res: ServerResponse): void {
  const origin = req.headers.origin;
  if (origin) {
    res.setHeader('Access-Control-Allow-Origin', origin);
    res.setHeader('Vary', 'Origin');
  }
  res.setHeader('Access-Control-Allow-Methods', RESPONSE_METHODS);
  res.setHeader('Access-Control-Allow-Headers', RESPONSE_HEADERS);
}
