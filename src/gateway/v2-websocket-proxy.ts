/**
 * v2 WebSocket through a gateway: an upgrade of `/v2/mailbox?route=ROUTE`
 * is passed through, bytes unchanged, to the relay that owns the route
 * (placing the session if nobody owns it), with `http-proxy`. The gateway
 * never sees the SID: it travels in the first frame, and the relay admits
 * the party by the SID's own route as for a direct dial. Failures before the
 * upgrade are answered as an HTTP status with the JSON error body of the
 * lookup (`{"error":{"code","message"}}`). After the upgrade the two sockets
 * are piped both ways (backpressure: at most a socket buffer per direction
 * sits here), and the end or loss of either ends the other.
 */
import { STATUS_CODES, type IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import httpProxy from 'http-proxy';
import { isRoute } from '../directory/route.js';
import type { RouteLookup } from '../directory/route-lookup.js';
import type { Logger } from '../observe/logger.js';
import type { RelayStats } from '../observe/stats.js';
import { HashmailError } from '../session/errors.js';
import { endWithin } from '../transport/end-within.js';
import { HOP_TOKEN_HEADER } from '../transport/hop/lane-upgrade.js';
import { DEADLINE_CLOSE_GRACE_MS } from '../transport/http1-deadlines.js';
import { noteError } from '../transport/report-error.js';
import { parseIp } from '../transport/ip-address.js';
import { preambleAgent } from './relay-connect.js';
import type { RelayTrust } from './relay-trust.js';

export const V2_WS_PATH = '/v2/mailbox';
/** The query parameter naming the session's route (docs/protocol-v2.md). */
export const ROUTE_PARAM = 'route';
/** The relay did not take the connection (refused, reset before the upgrade). */
const RELAY_UNREACHABLE = { status: 502, code: 14, message: 'gateway: relay unreachable' };

export interface V2WebSocketProxyOptions {
  /** The route lookup (placing when asked), the same the gateway's lookups answer from. */
  lookup: RouteLookup;
  logger: Logger;
  stats: RelayStats;
  /** Dial relays in plain text (--insecure); else TLS, each relay checked as `trust` says (default: the system's CAs). */
  insecure: boolean;
  trust?: RelayTrust;
  /**
   * The hop token, in the preamble and the upgrade of every passed-through
   * socket: the relay then counts the tunnel as the client's connection, not
   * as one of this gateway's (docs/gateway-hop.md, Client address).
   */
  hopToken?: string;
  /** The client of an upgrade, as this gateway's per-address limits see it (named in the hop preamble); default the TCP peer. */
  clientAddress?: (req: IncomingMessage) => string;
  /** The per-address limit key of a client address: a placement an upgrade causes counts against its directory.maxPlacementShare. */
  limitKey?: (address: string) => string;
  /** How long a relay may take to answer a passed-through upgrade (ms); default UPGRADE_ANSWER_MS. */
  upgradeAnswerMs?: number;
}

/** Bytes a client may send before its relay's 101 (it should send none): past this it is dropped. */
const MAX_EARLY_BYTES = 64 * 1024;
const EMPTY = Buffer.alloc(0);

/** A relay answers a passed-through upgrade within this, or the gateway gives up on it (ms). */
export const UPGRADE_ANSWER_MS = 10_000;

/** The route of a `/v2/mailbox` upgrade URL: undefined when not that path or no route parameter. */
export function routeParam(url: string | undefined): string | undefined {
  if (url === undefined || !(url === V2_WS_PATH || url.startsWith(`${V2_WS_PATH}?`))) return undefined;
  const route = new URL(url, 'http://x').searchParams.get(ROUTE_PARAM);
  return route ?? undefined;
}

export class V2WebSocketProxy {
  private readonly proxy: httpProxy;
  private readonly ctx: { logger: Logger; stats: RelayStats };
  private open = 0;
  /** The client socket of every tunnel past its 101 (ended at stop). */
  private readonly tunnels = new Set<Duplex>();
  /** Client sockets past the 101: a failure there ends the pair, it is not answered as HTTP. */
  private readonly upgraded = new WeakSet<Duplex>();
  /** Client sockets waiting for their relay's 101: stops watching them (before the pipe takes over). */
  private readonly waiting = new WeakMap<Duplex, () => void>();
  private readonly upgradeAnswerMs: number;

  constructor(private readonly options: V2WebSocketProxyOptions) {
    this.ctx = { logger: options.logger, stats: options.stats };
    this.upgradeAnswerMs = options.upgradeAnswerMs ?? UPGRADE_ANSWER_MS;
    this.proxy = httpProxy.createProxyServer({
      ws: true,
      // x-forwarded-for names the client, for a relay that trusts this gateway as a proxy.
      xfwd: true,
      secure: !options.insecure,
    });
    // The upgraded pair: either side gone (end, error, reset) takes the other with it.
    this.proxy.on('proxyReqWs', (proxyReq, _req, socket) => {
      // A client gone before the 101 takes its relay-side request with it at once.
      socket.once('close', () => {
        if (!this.upgraded.has(socket)) proxyReq.destroy();
      });
      // A relay that took the request and never answers (stopped, overloaded) must not hold the pair here for
      // good: the client gets 502, the relay side is closed.
      const giveUp = setTimeout(() => proxyReq.destroy(new Error('the relay did not answer the upgrade in time')), this.upgradeAnswerMs);
      proxyReq.once('close', () => clearTimeout(giveUp));
      proxyReq.on('upgrade', (_res, relaySocket: Socket) => {
        clearTimeout(giveUp);
        // Before http-proxy pipes the pair (its listener runs after this one).
        this.waiting.get(socket)?.();
        this.upgraded.add(socket);
        this.open++;
        this.tunnels.add(socket);
        let closed = false;
        const onClose = (): void => {
          if (closed) return;
          closed = true;
          this.open--;
          this.tunnels.delete(socket);
        };
        relaySocket.once('close', () => {
          onClose();
          socket.destroy();
        });
        socket.once('close', () => {
          onClose();
          relaySocket.destroy();
        });
      });
    });
    // Without a listener http-proxy would throw: errors are answered per request in handleUpgrade.
    this.proxy.on('error', () => undefined);
  }

  /** v2 WebSockets passed through now (for tests and metrics). */
  get openTunnels(): number {
    return this.open;
  }

  /**
   * Takes `/v2/mailbox?route=...` upgrades (true); anything else is left to
   * the other routes (false): without `route` the gateway's own v2 endpoint
   * answers the Hello with the owner's address.
   */
  handleUpgrade(req: IncomingMessage, socket: Duplex, head: Buffer): boolean {
    const route = routeParam(req.url);
    if (route === undefined) return false;
    socket.on('error', () => socket.destroy());
    if (!isRoute(route)) {
      this.refuse(socket, new HashmailError('BAD_ROUTE'));
      return true;
    }
    const early = this.watchWaiting(socket, head);
    const client = this.options.clientAddress?.(req) ?? req.socket.remoteAddress ?? '';
    const key = this.options.limitKey?.(client);
    this.options.lookup(route, { create: true, ...(key === undefined ? {} : { client: key }) }).then(
      (owner) => {
        if (socket.destroyed) return;
        const target = `${this.options.insecure ? 'http' : 'https'}://${owner.address}`;
        this.options.logger.debug({ relay: owner.id }, 'v2 WebSocket passed through');
        const token = this.options.hopToken;
        // A client with no IP address left is a socket already gone.
        if (token && parseIp(client) === null) {
          socket.destroy();
          return;
        }
        // The preamble makes the relay count the tunnel as its client's from its first byte; the header is
        // for the upgrade itself.
        const tlsOptions = this.options.insecure ? null : (this.options.trust?.optionsFor(owner.address) ?? {});
        const hop = token
          ? { headers: { [HOP_TOKEN_HEADER]: token }, agent: preambleAgent(client, token, tlsOptions) }
          : { ...(tlsOptions?.ca ? { ca: tlsOptions.ca } : {}) };
        // The client's early bytes (head included) stay with the watcher and go first after the 101.
        this.proxy.ws(req, socket, early, { target, ...hop }, (err: Error) => {
          if (this.upgraded.has(socket)) {
            socket.destroy();
            return;
          }
          this.options.logger.debug({ relay: owner.id, err: err.message }, 'v2 WebSocket pass-through failed');
          this.answer(socket, RELAY_UNREACHABLE.status, { code: RELAY_UNREACHABLE.code, message: RELAY_UNREACHABLE.message });
        });
      },
      (err: unknown) => this.refuse(socket, err),
    );
    return true;
  }

  /**
   * Watches a client waiting for its relay's 101 (lookup, dial, upgrade): its
   * leaving (FIN) ends it at once, so the relay side goes too, instead of at
   * the 101 or upgradeAnswerMs. A WebSocket client sends nothing before the
   * 101 (RFC 6455); what one sends anyway is kept, up to MAX_EARLY_BYTES,
   * and put back in order for the pipe. Returns the empty head for http-proxy.
   */
  private watchWaiting(socket: Duplex, head: Buffer): Buffer {
    const early: Buffer[] = head.length > 0 ? [head] : [];
    let earlyBytes = head.length;
    const onData = (chunk: Buffer): void => {
      earlyBytes += chunk.length;
      if (earlyBytes > MAX_EARLY_BYTES) socket.destroy();
      else early.push(chunk);
    };
    const onEnd = (): void => void socket.destroy();
    socket.on('data', onData);
    socket.once('end', onEnd);
    socket.resume();
    this.waiting.set(socket, () => {
      this.waiting.delete(socket);
      socket.off('data', onData);
      socket.off('end', onEnd);
      socket.pause();
      if (early.length > 0) socket.unshift(Buffer.concat(early));
    });
    return EMPTY;
  }

  /**
   * Ends every tunnel (its relay side goes with it) and the proxy's own
   * resources. At stop, with the legacy streams' "server shutting down": the
   * clients see their link drop and look their relay up again at once,
   * instead of relaying on for server.shutdownGraceMs and being cut then.
   * A tunnel is a byte pipe, so no close frame can be put in it safely.
   */
  close(): void {
    for (const socket of [...this.tunnels]) socket.destroy();
    this.proxy.close();
  }

  private refuse(socket: Duplex, err: unknown): void {
    const e = noteError(this.ctx, err, { transport: 'websocket', call: 'v2 pass-through' });
    this.answer(socket, e.httpStatus, { code: e.grpcCode, message: e.message });
  }

  private answer(socket: Duplex, status: number, error: { code: number; message: string }): void {
    if (socket.destroyed || !socket.writable) {
      socket.destroy();
      return;
    }
    const body = JSON.stringify({ error });
    endWithin(
      socket,
      DEADLINE_CLOSE_GRACE_MS,
      `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\nConnection: close\r\nContent-Type: application/json\r\n` +
        `Access-Control-Allow-Origin: *\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
    );
  }
}
