/**
 * The admin listener: liveness, readiness and Prometheus metrics on plain
 * HTTP/1.1. It is meant to stay private (loopback or a cluster network), so it
 * has no TLS and no auth; it still never lets a bad request take it down.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Logger } from './logger.js';
import type { Metrics } from './metrics.js';
import { formatHostPort, parseHostPort } from '../config/host-port.js';

/** A scrape or probe that takes longer than this is cut off. */
const REQUEST_TIMEOUT_MS = 10_000;
const HEADERS_TIMEOUT_MS = 5_000;
/** Probes and scrapers reconnect often; idle keep-alive sockets are closed after this. */
const KEEP_ALIVE_TIMEOUT_MS = 5_000;

export interface HealthState {
  live: boolean;
  ready: boolean;
  detail?: Record<string, unknown>;
}

export interface AdminServerOptions {
  /** HOST:PORT; port 0 picks a free one; IPv6 as `[::1]:PORT`. */
  listen: string;
  metrics: Metrics;
  health: () => HealthState;
  logger: Logger;
}

export interface AdminServer {
  /** The bound HOST:PORT (IPv6 in brackets). */
  address: string;
  close(): Promise<void>;
}

export async function startAdminServer(opts: AdminServerOptions): Promise<AdminServer> {
  const { host, port } = parseHostPort(opts.listen, 'admin listen address');
  const { logger, metrics, health } = opts;

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      logger.error({ err, path: pathOf(req) }, 'admin request failed');
      if (!res.headersSent) send(res, req, 500, 'text/plain; charset=utf-8', 'internal error\n');
      else res.destroy();
    });
  });
  server.requestTimeout = REQUEST_TIMEOUT_MS;
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  server.keepAliveTimeout = KEEP_ALIVE_TIMEOUT_MS;
  // Malformed HTTP: answer 400 if the socket still can, never throw.
  server.on('clientError', (err: NodeJS.ErrnoException, socket) => {
    logger.debug({ code: err.code }, 'admin client error');
    if (socket.writable && err.code !== 'ECONNRESET') socket.end('HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const path = pathOf(req);
    if (path !== '/healthz' && path !== '/readyz' && path !== '/metrics') {
      send(res, req, 404, 'text/plain; charset=utf-8', 'not found\n');
      return;
    }
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('Allow', 'GET, HEAD');
      send(res, req, 405, 'text/plain; charset=utf-8', 'method not allowed\n');
      return;
    }
    if (path === '/metrics') {
      const { contentType, body } = await metrics.render();
      send(res, req, 200, contentType, body);
      return;
    }
    const state = health();
    if (path === '/healthz') {
      sendJson(res, req, state.live ? 200 : 503, { status: state.live ? 'ok' : 'unavailable' });
    } else {
      sendJson(res, req, state.ready ? 200 : 503, {
        status: state.ready ? 'ok' : 'unavailable',
        ...(state.detail ? { detail: state.detail } : {}),
      });
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen({ host, port }, () => {
      server.off('error', reject);
      resolve();
    });
  });
  server.on('error', (err) => logger.error({ err }, 'admin listener error'));
  const bound = server.address() as AddressInfo;
  const address = formatHostPort(bound.address, bound.port);
  logger.info({ address }, 'admin listener up');

  return {
    address,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Scrapers keep sockets alive; close() alone would wait for them.
        server.closeAllConnections();
      }),
  };
}

function pathOf(req: IncomingMessage): string {
  const url = req.url ?? '/';
  const query = url.indexOf('?');
  return query === -1 ? url : url.slice(0, query);
}

function sendJson(res: ServerResponse, req: IncomingMessage, status: number, body: unknown): void {
  send(res, req, status, 'application/json; charset=utf-8', JSON.stringify(body));
}

function send(res: ServerResponse, req: IncomingMessage, status: number, contentType: string, body: string): void {
  res.statusCode = status;
  res.setHeader('Content-Type', contentType);
  res.setHeader('Content-Length', Buffer.byteLength(body));
  res.setHeader('Cache-Control', 'no-store');
  res.end(req.method === 'HEAD' ? undefined : body);
}
