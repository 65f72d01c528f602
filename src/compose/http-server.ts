/**
 * The plain HTTP side of the public port (HTTP/1.1, and HTTP/2 requests that are not gRPC): the route lookup (GET /v2/relay) and
 * the v2 WebSocket (/v2/mailbox) first, then the legacy REST/WebSocket
 * gateway (serve) or a 404 (relay). Node's own timeouts do not run on a
 * server fed emitted connections (it never listens); Http1Deadlines enforces
 * http.*.
 */
import http, { type IncomingMessage, type ServerResponse } from 'node:http';
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2';
import type { Duplex } from 'node:stream';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observe/logger.js';
import { subsystemLogger } from '../observe/logger.js';
import { endWithin } from '../transport/end-within.js';
import { DEADLINE_CLOSE_GRACE_MS, Http1Deadlines } from '../transport/http1-deadlines.js';
import type { RouteLookup } from '../directory/route-lookup.js';
import { HttpLookup, isLookupPath } from '../transport/http-lookup.js';
import type { AnsweredAs } from '../transport/reached-address.js';
import type { HttpGateway } from '../transport/rest-ws-v1/http-gateway.js';
import { parseTarget } from '../transport/rest-ws-v1/paths.js';
import type { WsV2Gateway } from '../transport/ws-v2/ws-v2-gateway.js';
import type { MailboxCore } from './mailbox-core.js';

/** The v2 WebSocket endpoint (docs/protocol-v2.md). */
const WS_V2_PATH = '/v2/mailbox';
const NOT_FOUND_BODY = JSON.stringify({ error: { code: 5, message: 'Not Found' } });

/** REST send/receive: bodies that stream for the session's life, so no body deadline. */
function isStreamingRequest(req: IncomingMessage): boolean {
  const { route } = parseTarget(req.url);
  return req.method === 'POST' && (route === 'receive' || route === 'send');
}

/** `/v2/mailbox`, with or without a query string. */
export function isV2Path(url: string | undefined): boolean {
  return url === WS_V2_PATH || (url?.startsWith(`${WS_V2_PATH}?`) ?? false);
}

/** An upgrade handler tried first: true when it took the request. */
export type UpgradeRoute = (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean;

export interface HttpRoutes {
  /** The legacy front door (serve, gateway); null answers 404 to everything else. */
  gateway: HttpGateway | null;
  wsV2: WsV2Gateway | null;
  /** Tried before the others (the gateway's v2 WebSocket pass-through). */
  upgrade?: UpgradeRoute;
  /** The hop lanes gateways open (relay only). */
  lane?: UpgradeRoute;
  /** What GET /v2/relay answers; default the core's lookup (the owner). */
  lookup?: RouteLookup;
  /** A request's per-address limit key (server.clientAddressFrom): held lookups count under it. */
  clientAddress: (req: IncomingMessage) => string;
  /** The address GET /v2/relay gives out for an owner (reached-address.ts); default as registered. */
  answeredAs?: AnsweredAs;
}

export interface HttpParts {
  server: http.Server;
  /**
   * The same routes for a plain HTTP/2 request (TLS, ALPN h2). Node's
   * HTTP/2 compatibility objects offer the IncomingMessage/ServerResponse
   * surface the routes use (url, method, headers, streaming body, writeHead,
   * setHeader, write, end, 'close'); http-reply.ts leaves out the one
   * HTTP/1.1-only header (Connection).
   */
  handleH2Request(req: Http2ServerRequest, res: Http2ServerResponse): void;
  /** Stopping: closes kept-alive HTTP/1.1 connections with no request, now and as the others finish (Http1Deadlines.closeIdle). */
  closeIdle(): void;
}

export function buildHttpServer(config: Config, logger: Logger, core: MailboxCore, routes: HttpRoutes): HttpParts {
  const { gateway, wsV2 } = routes;
  const lookup = new HttpLookup(routes.lookup ?? core.lookup, { logger: subsystemLogger(logger, 'lookup'), stats: core.stats }, routes.clientAddress, routes.answeredAs);
  const server = http.createServer({ requestTimeout: 0, keepAliveTimeout: 0 });
  const deadlines = new Http1Deadlines(server, config.http, isStreamingRequest, subsystemLogger(logger, 'listener'));
  const handleRequest = (req: IncomingMessage, res: ServerResponse): void => {
    if (isLookupPath(req.url)) lookup.handleRequest(req, res);
    else if (gateway) gateway.handleRequest(req, res);
    else {
      res.writeHead(404, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(NOT_FOUND_BODY) });
      res.end(NOT_FOUND_BODY);
    }
  };
  server.on('request', handleRequest);
  server.on('upgrade', (req, socket, head) => {
    if (routes.lane?.(req, socket, head)) return;
    if (routes.upgrade?.(req, socket, head)) return;
    // v2 has its own path; with v2 off it falls through to the legacy gateway's 404, as on a v1-only server.
    if (wsV2 && isV2Path(req.url)) wsV2.handleUpgrade(req, socket, head);
    else if (gateway) gateway.handleUpgrade(req, socket, head);
    else endWithin(socket, DEADLINE_CLOSE_GRACE_MS, 'HTTP/1.1 404 Not Found\r\nConnection: close\r\nContent-Length: 0\r\n\r\n');
  });
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    logger.debug({ err: err.message, code: err.code }, 'bad HTTP request');
    if (socket.writable) endWithin(socket, DEADLINE_CLOSE_GRACE_MS, malformedRequestAnswer(err.code));
    else socket.destroy();
  });
  const handleH2Request = (req: Http2ServerRequest, res: Http2ServerResponse): void =>
    handleRequest(req as unknown as IncomingMessage, res as unknown as ServerResponse);
  return { server, handleH2Request, closeIdle: () => deadlines.closeIdle() };
}

/**
 * The answer to a request Node's parser refused: 431 for a request line or
 * headers past its limit (16 KiB), else 400; a short text body saying which,
 * readable by a browser (CORS), as every other answer here is.
 */
function malformedRequestAnswer(code: string | undefined): string {
  const [status, reason, detail] =
    code === 'HPE_HEADER_OVERFLOW'
      ? [431, 'Request Header Fields Too Large', `request line and headers are limited to ${http.maxHeaderSize} bytes`]
      : [400, 'Bad Request', 'malformed HTTP request'];
  const body = `${status} ${reason}: ${detail}\n`;
  return (
    `HTTP/1.1 ${status} ${reason}\r\nConnection: close\r\nContent-Type: text/plain; charset=utf-8\r\n` +
    `Access-Control-Allow-Origin: *\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`
  );
}
