/**
 * One mailbox process on one public port, from its parts: the mailbox core,
 * the gRPC and HTTP servers, the public listener and the admin listener,
 * registered in a directory. `serve` and `relay` are small compositions of
 * this (serve.ts, relay.ts); they differ in the directory and in whether the
 * legacy front door is on the port.
 */
import type { Config } from '../config/schema.js';
import type { Directory, InstanceRole } from '../directory/directory.js';
import { startAdminServer } from '../observe/admin-server.js';
import { formatHostPort, parseHostPort } from '../config/host-port.js';
import type { Logger } from '../observe/logger.js';
import { subsystemLogger } from '../observe/logger.js';
import { HASHMAIL_VERSION } from '../observe/version.js';
import type { HopToken } from '../transport/hop/hop-token.js';
import { hopLaneRoute, type HopServerDeps } from '../transport/hop/handlers.js';
import { MAX_CALLS_PER_LANE } from '../transport/hop/lane-server.js';
import type { LegacyOperations } from '../relay/legacy-operations.js';
import { ClientAddressPolicy, gatewayForwardedClient } from '../transport/client-address.js';
import { HOP_TOKEN_HEADER } from '../transport/hop/lane-upgrade.js';
import { PublicListener } from '../transport/public-listener.js';
import { answeredAsReached } from '../transport/reached-address.js';
import { HttpGateway } from '../transport/rest-ws-v1/http-gateway.js';
import { isIP } from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { loadTlsMaterial, type TlsMaterial } from '../transport/tls-material.js';
import { WsV2Gateway } from '../transport/ws-v2/ws-v2-gateway.js';
import { buildGrpcServer } from './grpc-server.js';
import { buildHttpServer, type HttpRoutes } from './http-server.js';
import { buildMailboxCore, type MailboxCore } from './mailbox-core.js';

/** Polling step of the bounded shutdown and drain waits. */
const WAIT_POLL_MS = 50;
/** Hosts that mean "every interface": not an address a client can dial. */
const WILDCARD_HOSTS = new Set(['0.0.0.0', '::', '']);
const LOOPBACK_HOST = '127.0.0.1';

export interface NodeOptions {
  config: Config;
  logger: Logger;
  directory: Directory;
  /** This instance's id in the directory. */
  instanceId: string;
  /** What this instance is in the directory (default 'relay'): a gateway is never placed on. */
  role?: InstanceRole;
  /**
   * The legacy front door (gRPC HashMail, REST/WebSocket v1) on the public
   * port and the mailbox behind it: 'local' is this node's own session table
   * (serve), a LegacyOperations one the composition supplies (the gateway's
   * remote mailbox), null none (relay).
   */
  legacy: 'local' | LegacyOperations | null;
  /**
   * Extra routes on the HTTP/1.1 side (the gateway's v2 WebSocket
   * pass-through and its lookup); `self` is this node's first advertised
   * address once the listener is up.
   */
  httpRoutes?: (core: MailboxCore, self: () => string) => Pick<HttpRoutes, 'upgrade' | 'lookup'>;
  /** The hop token: serves the gateway hop (hashmail.hop.v1.LegacyHop) on the public port. Relays only. */
  hopToken?: HopToken;
}

export interface RunningNode {
  /** Actual `HOST:PORT` of the public and admin listeners (port 0 resolved). */
  listen: string;
  adminListen: string;
  /** The `HOST:PORT`s registered in the directory (the first is given out). */
  advertised: string[];
  id: string;
  core: MailboxCore;
  /**
   * Relay drain: no new sessions land here; each session's parties are told
   * to move (UNAVAILABLE "relay draining") at random moments within
   * relay.drainSpreadMs; resolves once no party is left or at
   * relay.drainDeadlineMs.
   */
  drain(): Promise<void>;
  /**
   * Re-reads the TLS certificate and key (SIGHUP) and serves them to new
   * connections; open connections and their sessions are untouched. Throws
   * (the old pair stays) if they cannot be read or do not match. Null in
   * plain text.
   */
  reloadTls(): TlsMaterial | null;
  /** Ends every stream with UNAVAILABLE "server shutting down", then closes; `revoke` removes the registration now. */
  stop(options?: { revoke?: boolean }): Promise<void>;
}

/** The addresses to register: relay.advertise, else the listen address (a wildcard host becomes loopback). */
export function advertisedAddresses(config: Config, listen: string): string[] {
  if (config.relay.advertise.length > 0) return [...config.relay.advertise];
  const { host, port } = parseHostPort(listen, 'listen address');
  const dialable = WILDCARD_HOSTS.has(host) ? LOOPBACK_HOST : host;
  return [formatHostPort(dialable, port)];
}

export async function startNode(options: NodeOptions): Promise<RunningNode> {
  const { config, logger, directory } = options;
  const core = buildMailboxCore(config, logger, directory);
  // Placements refused by directory.maxPlacementsPerSecond or maxPlacementShare: counted and logged as every limit is.
  directory.onLimit = (configKey, client) => {
    core.stats.countLimit(configKey);
    core.refusalLog.refused(configKey, client);
  };
  // A failed lookup is answered to its client with UNAVAILABLE; here it is counted by cause, and its reason
  // (an etcd endpoint's error, which queue) goes to debug: a storm must not write one line per client.
  directory.onUnavailable = (err) => {
    core.stats.countDirectoryUnavailable(err.kind);
    logger.debug({ cause: err.kind, reason: err.reason }, 'directory unavailable');
  };
  // An owner a party could not reach that refused connections and neglected its lease: its leases were revoked (logged).
  directory.onOwnerRevoked = () => core.stats.ownersRevoked++;
  const { stats, table, metrics } = core;
  const addresses = ClientAddressPolicy.fromConfig(config);
  const legacy = options.legacy === 'local' ? core.legacy : options.legacy;
  // The public listener, once built (below): authenticated gateways' connections are counted anew after their upgrade.
  let listenerRef: PublicListener | null = null;
  // Gateways' lanes served here: ended at stop once every half on them has ended, not left for the grace period.
  const lanes = new Set<Duplex>();
  const hop: HopServerDeps | null = options.hopToken
    ? {
        mailbox: core.legacy,
        router: core.router,
        token: options.hopToken,
        logger: subsystemLogger(logger, 'hop'),
        stats: core.stats,
        metrics: core.metrics,
        windowBytes: config.hop.windowBytes,
        maxMessageBytes: config.mailbox.maxMessageBytes,
        // A gateway carries up to hop.streamsPerConnection on a lane; box calls it gave up on may still run here.
        maxCallsPerLane: Math.max(MAX_CALLS_PER_LANE, 4 * config.hop.streamsPerConnection),
        // A gateway's lane carries many clients' halves: counted against no client's connection limit.
        adopt: (socket) => {
          listenerRef?.rekey(socket, null);
          lanes.add(socket);
          socket.once('close', () => lanes.delete(socket));
        },
      }
    : null;
  let advertised: string[] = [];
  const self = (): string => advertised[0] ?? '';
  // Told nothing to advertise and listening on every interface: lookups give this instance out as the
  // client reached it, not as the loopback address it registered (reached-address.ts).
  const derivedSelf = config.relay.advertise.length === 0 && WILDCARD_HOSTS.has(parseHostPort(config.server.listen, 'listen address').host);
  const answeredAs = answeredAsReached(derivedSelf, self, !config.server.insecure);
  const grpc = buildGrpcServer(config, logger, core, addresses, legacy, answeredAs);
  const httpClientAddress = addresses.limitKeyOfRequest.bind(addresses);
  const gateway = legacy ? new HttpGateway({ mailbox: legacy, config, logger, stats, metrics, clientAddress: httpClientAddress }) : null;
  const hopToken = options.hopToken;
  // A v2 WebSocket that an authenticated gateway (the hop token) passes through counts as its client's
  // connection, not the gateway's: the gateway's tunnels must not fill its own per-address budget here.
  const wsV2ClientAddress = (req: IncomingMessage, socket: Duplex): string | null => {
    if (!hopToken?.matches(req.headers[HOP_TOKEN_HEADER])) return httpClientAddress(req);
    // The client the gateway's preamble named (counted so from the first byte), else its X-Forwarded-For.
    const named = listenerRef?.preambleClient(socket);
    if (typeof named === 'string') return addresses.limitKey(named);
    const client = gatewayForwardedClient(req);
    if (listenerRef && !listenerRef.rekey(socket, client)) return null;
    return addresses.limitKey(client);
  };
  const wsV2 = config.v2.enabled ? new WsV2Gateway({ v2: core.v2, config, logger, stats, clientAddress: wsV2ClientAddress }) : null;
  metrics.setOpenSockets(() => (gateway?.openSockets ?? 0) + (wsV2?.openSockets ?? 0));
  const { server: httpServer, handleH2Request, closeIdle } = buildHttpServer(config, logger, core, {
    gateway,
    wsV2,
    lane: hop ? hopLaneRoute(hop) : undefined,
    clientAddress: httpClientAddress,
    answeredAs,
    ...options.httpRoutes?.(core, self),
  });
  grpc.setHttpHandler(handleH2Request);

  const tlsFiles = { certFile: config.server.tlsCertFile, keyFile: config.server.tlsKeyFile, dataDir: config.server.dataDir };
  let tlsMaterial = null;
  if (!config.server.insecure) {
    tlsMaterial = loadTlsMaterial(tlsFiles);
    logger.info(
      { certificate: tlsMaterial.certPath, sha256: tlsMaterial.fingerprint256, generated: tlsMaterial.generated },
      tlsMaterial.generated ? 'generated self-signed TLS certificate' : 'TLS certificate loaded',
    );
  }
  const listener = new PublicListener({
    listen: config.server.listen,
    tls: tlsMaterial,
    clientAddress: addresses,
    ...(hopToken ? { hopToken } : {}),
    maxConnections: config.limits.maxConnections,
    maxConnectionsPerAddress: config.limits.maxConnectionsPerAddress,
    tlsHandshakeTimeoutMs: config.server.tlsHandshakeTimeoutMs,
    prefaceTimeoutMs: config.http.headersTimeoutMs,
    limitHit: core.limitHit,
    grpc: grpc.injector,
    http: httpServer,
    stats,
    logger: subsystemLogger(logger, 'listener'),
  });
  listenerRef = listener;

  let state: 'starting' | 'serving' | 'draining' = 'starting';
  const admin = await startAdminServer({
    listen: config.server.adminListen,
    metrics,
    logger,
    health: () => {
      const dir = directory.health();
      return {
        live: state !== 'starting',
        ready: state === 'serving' && dir.ok,
        detail: { state, directory: dir.ok ? 'ok' : 'unavailable' },
      };
    },
  });
  let listen: string;
  try {
    listen = await listener.start();
    advertised = advertisedAddresses(config, listen);
    if (options.legacy === null && derivedSelf) {
      logger.warn({ advertise: advertised }, 'listening on every interface with no --advertise: other machines cannot dial the loopback address given out');
    }
    await directory.register({
      id: options.instanceId,
      role: options.role ?? 'relay',
      addresses: advertised,
      version: HASHMAIL_VERSION,
      // Gateways with no hop.caFile pin a relay's self-signed certificate from here (relay-trust.ts).
      ...(tlsMaterial ? { tlsCertificate: tlsMaterial.cert.toString('utf8') } : {}),
    });
  } catch (err) {
    listener.destroyAll();
    await admin.close();
    throw err;
  }
  warnIfAdminExposed(admin.address, logger);
  metrics.start();
  const publishLoad = (): void => directory.publishLoad({ sessions: table.sessionCount, connections: stats.connectionsOpen });
  publishLoad();
  const loadTimer = setInterval(publishLoad, config.directory.loadPublishIntervalMs);
  loadTimer.unref();
  core.idleMappings?.start();
  state = 'serving';

  let draining: Promise<void> | null = null;
  const drain = (): Promise<void> =>
    (draining ??= (async () => {
      state = 'draining';
      const deadline = Date.now() + config.relay.drainDeadlineMs;
      try {
        await directory.setDraining();
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'drain: could not mark this relay draining in the directory');
      }
      logger.info({ parties: core.router.partyCount, sessions: core.router.routeCount, spreadMs: config.relay.drainSpreadMs }, 'draining');
      let deadlineTimer: NodeJS.Timeout | undefined;
      const pastDeadline = new Promise<void>((resolve) => {
        deadlineTimer = setTimeout(resolve, config.relay.drainDeadlineMs);
      });
      await Promise.race([core.router.drain(config.relay.drainSpreadMs), pastDeadline]);
      clearTimeout(deadlineTimer);
      await waitFor(() => core.router.partyCount === 0, deadline - Date.now());
      logger.info({ partiesLeft: core.router.partyCount }, 'drained');
    })());

  let stopping: Promise<void> | null = null;
  const stop = (stopOptions: { revoke?: boolean } = {}): Promise<void> =>
    (stopping ??= (async () => {
      state = 'draining';
      clearInterval(loadTimer);
      // The table's shutdown below empties it: its sessions' mappings go with the lease, not one by one.
      core.idleMappings?.stop();
      await Promise.race([listener.stopAccepting(), Promise.resolve()]);
      // Held lookups are answered now, or their connections would keep the grace period waiting.
      directory.stopHoldingLookups();
      // Every stream ends with UNAVAILABLE "server shutting down", so clients retry at once.
      table.shutdown();
      gateway?.shutdown();
      wsV2?.shutdown();
      grpc.injector.drain(config.server.shutdownGraceMs);
      // The halves' last frames go out on the next turns of the loop (lanes send once per pass); then the lanes end.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      for (const lane of lanes) lane.end();
      // Kept-alive HTTP/1.1 connections with no request (lookups, REST) hold nothing: closed now, or as they turn idle.
      closeIdle();
      await waitFor(() => listener.openConnections === 0, config.server.shutdownGraceMs);
      grpc.injector.destroy();
      listener.destroyAll();
      httpServer.close();
      grpc.server.forceShutdown();
      metrics.stop();
      core.refusalLog.flush();
      try {
        await directory.close({ revoke: stopOptions.revoke ?? false });
      } catch (err) {
        logger.warn({ err: (err as Error).message }, 'directory close failed; the registration goes with its lease');
      }
      await admin.close();
    })());

  const reloadTls = (): TlsMaterial | null => {
    if (config.server.insecure) return null;
    const material = loadTlsMaterial(tlsFiles);
    listener.reloadTls(material);
    logger.info({ certificate: material.certPath, sha256: material.fingerprint256 }, 'TLS certificate reloaded');
    directory.setTlsCertificate(material.cert.toString('utf8')).catch((err: unknown) => {
      logger.warn({ err: (err as Error).message }, 'the reloaded certificate is not in the directory yet: gateways pinning the old one cannot open new connections here');
    });
    return material;
  };

  return { listen, adminListen: admin.address, advertised, id: options.instanceId, core, drain, reloadTls, stop };
}

/**
 * /metrics and the health endpoints need no credentials: on an address other
 * machines can reach they tell anyone the relay's load. Said once at start.
 */
function warnIfAdminExposed(adminListen: string, logger: Logger): void {
  const { host } = parseHostPort(adminListen, 'admin listen address');
  if (isLoopback(host)) return;
  logger.warn({ adminListen }, 'the admin listener (metrics, health) is not on a loopback address: anyone who can reach it reads it; keep it behind a firewall or use 127.0.0.1');
}

function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1' || host.toLowerCase().startsWith('::ffff:127.');
}

/** Polls `done` until true or `timeoutMs` passes (shutdown and drain only; bounded). */
async function waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + Math.max(0, timeoutMs);
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, Math.min(WAIT_POLL_MS, Math.max(1, deadline - Date.now()))));
}
