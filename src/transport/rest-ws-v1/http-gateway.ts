/**
 * The legacy REST + WebSocket gateway (spec section 4): every HTTP/1.1
 * request and upgrade on the public port comes here. It translates to
 * mailbox's legacy operations and decides no protocol semantics itself.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Config } from '../../config/schema.js';
import { subsystemLogger, type Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { LegacyOperations } from '../../relay/legacy-operations.js';
import { HashmailError } from '../../session/errors.js';
import { noteError, type CallMetricsHook, type OpenCall } from './context.js';
import { answerPreflight, setCorsHeaders } from './cors.js';
import { sendError } from './http-reply.js';
import { maxCipherBoxJsonBytes } from './json-codec.js';
import { Keepalive } from './keepalive.js';
import { parseTarget } from './paths.js';
import { createBox, deleteBox } from './rest-routes.js';
import { RestReceiveCall, RestSendCall } from './rest-streams.js';
import type { WsContext } from './ws-calls.js';
import { rejectUpgrade, WsGateway } from './ws-gateway.js';

export interface HttpGatewayDeps {
  mailbox: LegacyOperations;
  config: Config;
  logger: Logger;
  stats: RelayStats;
  /** Each call is counted in grpc_server_* under the gRPC method it stands for. */
  metrics: CallMetricsHook;
  clientAddress(req: IncomingMessage): string;
}

/** Log subsystem name (`HASHMAIL_TRACE=rest-ws` shows its debug lines). */
const LOG_SUBSYSTEM = 'rest-ws';

export class HttpGateway {
  private readonly ctx: WsContext & { shuttingDown: boolean };
  private readonly ws: WsGateway;

  constructor(deps: HttpGatewayDeps) {
    const calls = new Set<OpenCall>();
    const logger = subsystemLogger(deps.logger, LOG_SUBSYSTEM);
    this.ctx = {
      mailbox: deps.mailbox,
      logger,
      stats: deps.stats,
      clientAddress: (req) => deps.clientAddress(req),
      maxCipherBoxJsonBytes: maxCipherBoxJsonBytes(deps.config.mailbox.maxMessageBytes),
      calls,
      shuttingDown: false,
      metrics: deps.metrics,
      keepalive: new Keepalive(deps.config.websocket, () => logger.debug({ transport: 'websocket' }, 'keepalive timeout: socket dropped')),
    };
    this.ws = new WsGateway(this.ctx);
  }

  /** Every HTTP/1.1 request on the public port comes here (the lead wires it to an http.Server 'request' event). */
  handleRequest(req: IncomingMessage, res: ServerResponse): void {
    const { route, query } = parseTarget(req.url);
    if (route === null) {
      sendError(res, noteError(this.ctx, new HashmailError('PATH_NOT_FOUND'), 'rest', 'unknown'));
      return;
    }
    const method = req.method ?? 'GET';
    if (method === 'OPTIONS') {
      answerPreflight(res);
      return;
    }
    setCorsHeaders(req, res);
    if (route === 'box') {
      if (method === 'POST') void createBox(this.ctx, req, res);
      else if (method === 'DELETE') void deleteBox(this.ctx, req, res, query);
      else this.methodNotAllowed(res, route);
      return;
    }
    if (method !== 'POST') {
      this.methodNotAllowed(res, route);
      return;
    }
    if (this.ctx.shuttingDown) {
      sendError(res, noteError(this.ctx, new HashmailError('SERVER_SHUTTING_DOWN'), 'rest', route), true);
      return;
    }
    if (route === 'receive') new RestReceiveCall(this.ctx, req, res);
    else new RestSendCall(this.ctx, req, res);
  }

  /** http.Server 'upgrade' event. Non-hashmail paths: answer 404 and destroy the socket. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const { route, query } = parseTarget(req.url);
    if (route === null) {
      rejectUpgrade(socket, noteError(this.ctx, new HashmailError('PATH_NOT_FOUND'), 'websocket', 'unknown'));
      return;
    }
    this.ws.handleUpgrade(req, socket, head, route, query);
  }

  /** Server shutdown: end every open WebSocket/streaming call with {code:14, message:"server shutting down"}; stop the ping timer. */
  shutdown(): void {
    if (this.ctx.shuttingDown) return;
    this.ctx.shuttingDown = true;
    this.ctx.keepalive.stop();
    const err = new HashmailError('SERVER_SHUTTING_DOWN');
    for (const call of [...this.ctx.calls]) call.abort(err);
  }

  /** Open WebSocket connections (for metrics). */
  get openSockets(): number {
    return this.ws.openSockets;
  }

  private methodNotAllowed(res: ServerResponse, route: string): void {
    sendError(res, noteError(this.ctx, new HashmailError('METHOD_NOT_ALLOWED'), 'rest', route));
  }
}
