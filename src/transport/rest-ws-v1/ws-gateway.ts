/**
 * The WebSocket side of the legacy gateway: takes HTTP upgrades on the
 * hashmail stream paths and hands each socket to its call. A WebSocket
 * handshake is always a GET; the `method` query parameter overrides it, as
 * the reference's websocket proxy does, and without `method=POST` the call is
 * a GET: the upgrade is accepted, then the 405 error frame is sent and the
 * socket ended (what grpc-gateway does behind the proxy).
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type ServerOptions, type WebSocket } from 'ws';
import { HashmailError } from '../../session/errors.js';
import { MAX_SMALL_REQUEST_BYTES, noteError } from './context.js';
import { statusJson } from './json-codec.js';
import type { Route } from './paths.js';
import { sendErrorAndClose, WsReceiveCall, WsSendCall, type WsContext } from './ws-calls.js';

/**
 * How long a closing socket waits for the client's close frame before it is
 * dropped (milliseconds). The deployed non-browser client never reads its
 * send socket, so it never answers; ws's 30 s default would keep it that long.
 */
export const WS_CLOSE_TIMEOUT_MS = 5_000;
/** The query parameter that overrides a handshake's HTTP method. */
const METHOD_PARAM = 'method';

/**
 * Writes a plain HTTP error on a socket that will not be upgraded (unknown
 * path, shutdown) and ends it.
 */
export function rejectUpgrade(socket: Duplex, err: HashmailError): void {
  const body = statusJson(err);
  // The server stops watching the socket once it emitted 'upgrade'.
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${err.httpStatus} ${STATUS_CODES[err.httpStatus] ?? 'Error'}\r\n` +
      'Connection: close\r\n' +
      'Content-Type: application/json\r\n' +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}

/** ws closes (1009, no error frame) past this multiple of the receive request bound. */
const RECEIVE_HARD_CAP_FACTOR = 64;

function makeServer(maxPayload: number): WebSocketServer {
  // closeTimeout is a ws option its type definitions lack.
  const options: ServerOptions & { closeTimeout: number } = {
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    maxPayload,
    closeTimeout: WS_CLOSE_TIMEOUT_MS,
    // Grpc-Metadata-Macaroon+<value> arrives here because browsers cannot set
    // handshake headers; hashmail ignores metadata, and the reference never
    // echoes a subprotocol.
    handleProtocols: () => false,
  };
  return new WebSocketServer(options);
}

export class WsGateway {
  /**
   * Receive sockets only ever get one tiny request. The gateway refuses one
   * over MAX_SMALL_REQUEST_BYTES with an error frame; ws's own cap sits above
   * that so the client gets the frame, and still bounds what we buffer.
   */
  private readonly receiveServer = makeServer(MAX_SMALL_REQUEST_BYTES * RECEIVE_HARD_CAP_FACTOR);
  private readonly sendServer: WebSocketServer;
  private open = 0;

  constructor(private readonly ctx: WsContext) {
    this.sendServer = makeServer(ctx.maxCipherBoxJsonBytes);
  }

  get openSockets(): number {
    return this.open;
  }

  /** An upgrade on a hashmail path (`route`); the caller answered other paths. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer, route: Route, query: string): void {
    if (this.ctx.shuttingDown) {
      rejectUpgrade(socket, noteError(this.ctx, new HashmailError('SERVER_SHUTTING_DOWN'), 'websocket', 'upgrade'));
      return;
    }
    const method = new URLSearchParams(query).get(METHOD_PARAM) || 'GET';
    const server = route === 'send' && method === 'POST' ? this.sendServer : this.receiveServer;
    server.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, req, route, method));
  }

  private onConnection(ws: WebSocket, req: IncomingMessage, route: Route, method: string): void {
    this.open++;
    ws.once('close', () => this.open--);
    // NewCipherBox/DelCipherBox are not served over WebSocket: nothing sends them there.
    if (route === 'box' || method !== 'POST') {
      ws.on('error', () => {});
      sendErrorAndClose(ws, noteError(this.ctx, new HashmailError('METHOD_NOT_ALLOWED'), 'websocket', route));
      return;
    }
    const address = this.ctx.clientAddress(req);
    this.ctx.logger.debug({ transport: 'websocket', call: route }, 'socket open');
    if (route === 'receive') new WsReceiveCall(this.ctx, ws, address);
    else new WsSendCall(this.ctx, ws, address);
  }
}
