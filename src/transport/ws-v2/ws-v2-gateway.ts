/**
 * Protocol v2 over WebSocket: `GET /v2/mailbox` upgraded, one binary message
 * per frame (docs/protocol-v2.md). The gateway negotiates the subprotocol,
 * upgrades and hands each socket to a WsV2Party; the party translates frames
 * to V2Mailbox calls and decides no protocol semantics itself.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { WebSocketServer, type Server, type ServerOptions } from 'ws';
import type { Config } from '../../config/schema.js';
import { subsystemLogger, type Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { V2Mailbox } from '../../relay/v2-mailbox.js';
import { HashmailError, limitReached } from '../../session/errors.js';
import { Keepalive } from '../rest-ws-v1/keepalive.js';
import { WS_CLOSE_TIMEOUT_MS } from '../rest-ws-v1/ws-gateway.js';
import { chooseSubprotocol, parseOffered, refuseHandshake, unsupportedSubprotocolText } from './subprotocol.js';
import { LOG_SUBSYSTEM, V2Socket, WsV2Party, type PartyContext } from './ws-v2-party.js';

/**
 * Room above v2.maxMessageBytes for the frame around a payload (bytes). A
 * payload a little over the limit still reaches the relay and gets the
 * RESOURCE_EXHAUSTED "message too large" frame; one far over it is cut off
 * by ws (close 1009) before it is buffered whole.
 */
export const FRAME_OVERHEAD_BYTES = 1024;

export interface WsV2Deps {
  v2: V2Mailbox;
  config: Config;
  logger: Logger;
  stats: RelayStats;
  /**
   * The client's per-address limit key, or null when the connection is
   * refused for it (over limits.maxConnectionsPerAddress once counted as the
   * client a gateway passed it through for).
   */
  clientAddress(req: IncomingMessage, socket: Duplex): string | null;
}

export class WsV2Gateway {
  private readonly ctx: PartyContext;
  private readonly server: Server<typeof V2Socket>;
  private readonly clientAddress: (req: IncomingMessage, socket: Duplex) => string | null;
  private readonly perAddressLimit: number;
  private shuttingDown = false;

  constructor(deps: WsV2Deps) {
    const logger = subsystemLogger(deps.logger, LOG_SUBSYSTEM);
    this.clientAddress = deps.clientAddress;
    this.perAddressLimit = deps.config.limits.maxConnectionsPerAddress;
    this.ctx = {
      v2: deps.v2,
      logger,
      stats: deps.stats,
      // One interval timer for every v2 socket, with the v2 liveness settings: a dead client's socket is dropped and its slots freed.
      keepalive: new Keepalive({ pingIntervalMs: deps.config.v2.pingIntervalMs, pongTimeoutMs: deps.config.v2.pingTimeoutMs }, () =>
        logger.debug({ transport: 'websocket' }, 'keepalive timeout: v2 socket dropped'),
      ),
      parties: new Set(),
      openSockets: 0,
    };
    // closeTimeout is a ws option its type definitions lack.
    const options: ServerOptions<typeof V2Socket> & { closeTimeout: number } = {
      noServer: true,
      // We track our own parties; ws's set would be a second entry per socket.
      clientTracking: false,
      // Payloads are ciphertext: compression gains nothing and costs a zlib context per socket.
      perMessageDeflate: false,
      maxPayload: deps.config.v2.maxMessageBytes + FRAME_OVERHEAD_BYTES,
      closeTimeout: WS_CLOSE_TIMEOUT_MS,
      handleProtocols: (offered) => chooseSubprotocol(offered) ?? false,
      WebSocket: V2Socket,
    };
    this.server = new WebSocketServer(options);
  }

  /** Open v2 WebSocket connections (for metrics). */
  get openSockets(): number {
    return this.ctx.openSockets;
  }

  /** Upgrade requests whose path is /v2/mailbox (query string ignored) come here. */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): void {
    const header = req.headers['sec-websocket-protocol'];
    const offered = parseOffered(header);
    if (chooseSubprotocol(offered) === null) {
      this.ctx.stats.countError('UNSUPPORTED_VERSION');
      // Counts only: an entry may be `Grpc-Metadata-Macaroon+<credential>`.
      this.ctx.logger.debug({ transport: 'websocket', offeredEntries: offered.length, headerChars: header?.length ?? 0 }, 'v2 handshake without a supported subprotocol');
      refuseHandshake(socket, 400, unsupportedSubprotocolText(offered));
      return;
    }
    // Taken now so the socket keeps no reference to the request.
    const address = this.clientAddress(req, socket);
    if (address === null) {
      refuseHandshake(socket, 429, limitReached('limits.maxConnectionsPerAddress', this.perAddressLimit).message);
      return;
    }
    this.server.handleUpgrade(req, socket, head, (ws) => this.onConnection(ws, address));
  }

  /** Ends every v2 socket with Error{14, "server shutting down"} and close 4014; stops the ping timer. */
  shutdown(): void {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    this.ctx.keepalive.stop();
    const err = new HashmailError('SERVER_SHUTTING_DOWN');
    for (const party of [...this.ctx.parties]) party.fail(err);
  }

  private onConnection(ws: V2Socket, address: string): void {
    const party = new WsV2Party(this.ctx, ws, address);
    // Upgraded after shutdown began: told in-band, which a browser can read (an HTTP 503 it could not).
    if (this.shuttingDown) party.fail(new HashmailError('SERVER_SHUTTING_DOWN'));
  }
}
