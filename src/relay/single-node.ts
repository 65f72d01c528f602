/**
 * `hashmail serve`: relay, legacy transports and the (implicit, in-process)
 * directory in one process. Builds every part from the validated Config,
 * starts the listeners, and shuts down in order on stop().
 */
import http, { type IncomingMessage } from 'node:http';
import { Server as GrpcServer, ServerCredentials } from '@grpc/grpc-js';
import type { Config } from '../config/schema.js';
import { startAdminServer } from '../observe/admin-server.js';
import type { Logger } from '../observe/logger.js';
import { subsystemLogger } from '../observe/logger.js';
import { Metrics } from '../observe/metrics.js';
import { RefusalLog } from '../observe/refusal-log.js';
import { RelayStats } from '../observe/stats.js';
import { SessionTable } from '../session/session-table.js';
import { ClientAddressPolicy } from '../transport/client-address.js';
import { hashMailServerService, legacyGrpcHandlers } from '../transport/grpc-v1/handlers.js';
import { StreamsPerConnection } from '../transport/grpc-stream-limit.js';
import { guardResetStreams } from '../transport/h2-reset-streams.js';
import { H2SessionReaper, injectorHttp2Servers } from '../transport/h2-session-reaper.js';
import { DEADLINE_CLOSE_GRACE_MS, Http1Deadlines } from '../transport/http1-deadlines.js';
import { endWithin } from '../transport/end-within.js';
import { PublicListener } from '../transport/public-listener.js';
import { HttpGateway } from '../transport/rest-ws-v1/http-gateway.js';
import { parseTarget } from '../transport/rest-ws-v1/paths.js';
import { loadTlsMaterial } from '../transport/tls-material.js';
import { mailboxV2Handlers, mailboxV2ServerService } from '../transport/grpc-v2/handlers.js';
import { WsV2Gateway } from '../transport/ws-v2/ws-v2-gateway.js';
import { LegacyMailbox } from './legacy-mailbox.js';
import { V2Mailbox } from './v2-mailbox.js';

/** Room for the CipherBox framing around the largest allowed payload. */
const GRPC_MESSAGE_OVERHEAD_BYTES = 1024;
/** nghttp2 memory per HTTP/2 connection (MB); enough for several 4 MiB messages in flight. */
const HTTP2_SESSION_MEMORY_MB = 64;
/** The v2 WebSocket endpoint (docs/protocol-v2.md). */
const WS_V2_PATH = '/v2/mailbox';

export interface RunningNode {
  /** Actual `HOST:PORT` of the public and admin listeners (port 0 resolved). */
  listen: string;
  adminListen: string;
  /** Ends every stream with UNAVAILABLE "server shutting down", then closes. */
  stop(): Promise<void>;
}

/** REST send/receive: bodies that stream for the session's life, so no body deadline. */
function isStreamingRequest(req: IncomingMessage): boolean {
  const { route } = parseTarget(req.url);
  return req.method === 'POST' && (route === 'receive' || route === 'send');
}

/** `/v2/mailbox`, with or without a query string. */
function isV2Path(url: string | undefined): boolean {
  return url === WS_V2_PATH || (url?.startsWith(`${WS_V2_PATH}?`) ?? false);
}

export async function startSingleNode(config: Config, logger: Logger): Promise<RunningNode> {
  const stats = new RelayStats();
  const refusalLog = new RefusalLog(logger, config.log.refusalLogIntervalMs);
  const limitHit = (configKey: string): void => {
    stats.countLimit(configKey);
    refusalLog.refused(configKey);
  };
  const m = config.mailbox;
  const table = new SessionTable(
    {
      bufferBytes: m.bufferBytes,
      rateLimit: m.rateLimitIntervalMs > 0 ? { intervalMs: m.rateLimitIntervalMs, burst: m.rateLimitBurst } : null,
      acquireWaitMs: m.acquireWaitMs,
      maxBoxes: config.limits.maxBoxes,
      maxBoxesPerAddress: config.limits.maxBoxesPerAddress,
      maxBufferedBytes: config.limits.maxBufferedBytes,
      maxBufferedBytesPerAddress: config.limits.maxBufferedBytesPerAddress,
      staleTimeoutMs: m.staleTimeoutMs,
    },
    {
      limitHit,
      rateLimited: () => {
        stats.rateLimitedWaits++;
      },
    },
  );
  const mailbox = new LegacyMailbox(table, stats, { maxMessageBytes: m.maxMessageBytes });
  const v2 = new V2Mailbox(table, stats, { windowBytes: config.v2.windowBytes, maxMessageBytes: config.v2.maxMessageBytes });
  const metrics = new Metrics({ stats, table, sessionRateWindowMs: config.metrics.sessionRateWindowMs });

  const grpcServer = new GrpcServer({
    // grpc-js enforces no minimum client ping interval, so litd's 2-minute
    // keepalive pings never earn GOAWAY "too many pings".
    'grpc.keepalive_time_ms': config.grpc.keepaliveTimeMs,
    'grpc.keepalive_timeout_ms': config.grpc.keepaliveTimeoutMs,
    'grpc.max_receive_message_length': Math.max(m.maxMessageBytes, config.v2.maxMessageBytes) + GRPC_MESSAGE_OVERHEAD_BYTES,
    'grpc.max_send_message_length': -1,
    // One over our count, so the call past the limit reaches us and gets RESOURCE_EXHAUSTED naming it.
    'grpc.max_concurrent_streams': config.limits.maxStreamsPerConnection + 1,
    'grpc-node.max_session_memory': HTTP2_SESSION_MEMORY_MB,
  });
  const addresses = ClientAddressPolicy.fromConfig(config);
  const grpcLogger = subsystemLogger(logger, 'grpc');
  const streams = new StreamsPerConnection(config.limits.maxStreamsPerConnection, limitHit);
  // Every transport counts boxes under the same key the listener counts connections under.
  const httpClientAddress = addresses.limitKeyOfRequest.bind(addresses);
  const grpcClientAddress = addresses.limitKeyOfCall.bind(addresses);
  grpcServer.addService(
    hashMailServerService,
    legacyGrpcHandlers({
      mailbox,
      logger: grpcLogger,
      stats,
      metrics,
      streams,
      clientAddress: grpcClientAddress,
    }),
  );
  if (config.v2.enabled) {
    grpcServer.addService(
      mailboxV2ServerService,
      mailboxV2Handlers({
        v2,
        logger: grpcLogger,
        stats,
        metrics,
        streams,
        clientAddress: grpcClientAddress,
      }),
    );
  }
  const injector = grpcServer.createConnectionInjector(ServerCredentials.createInsecure());
  const reaper = new H2SessionReaper({ stalledWriteLimitMs: config.grpc.keepaliveTimeoutMs, logger: grpcLogger });
  const h2Servers = injectorHttp2Servers(grpcServer);
  for (const server of h2Servers) {
    reaper.watchServer(server);
    guardResetStreams(server);
  }
  if (h2Servers.length === 0) {
    logger.warn('grpc-js internals changed: HTTP/2 sessions ended by GOAWAY are closed only by the keepalive, and reset streams are not guarded');
  }

  const gateway = new HttpGateway({
    mailbox,
    config,
    logger,
    stats,
    clientAddress: httpClientAddress,
  });
  const wsV2 = config.v2.enabled
    ? new WsV2Gateway({ v2, config, logger, stats, clientAddress: httpClientAddress })
    : null;
  metrics.setOpenSockets(() => gateway.openSockets + (wsV2?.openSockets ?? 0));
  // Node's own timeouts do not run on a server fed emitted connections (it never listens); Http1Deadlines enforces http.*.
  const httpServer = http.createServer({ requestTimeout: 0, keepAliveTimeout: 0 });
  new Http1Deadlines(httpServer, config.http, isStreamingRequest, subsystemLogger(logger, 'listener'));
  httpServer.on('request', (req, res) => gateway.handleRequest(req, res));
  httpServer.on('upgrade', (req, socket, head) => {
    // v2 has its own path; with v2 off it falls through to the legacy gateway's 404, as on a v1-only server.
    if (wsV2 && isV2Path(req.url)) wsV2.handleUpgrade(req, socket, head);
    else gateway.handleUpgrade(req, socket, head);
  });
  httpServer.on('clientError', (err, socket) => {
    logger.debug({ err: err.message }, 'bad HTTP request');
    if (socket.writable) endWithin(socket, DEADLINE_CLOSE_GRACE_MS, 'HTTP/1.1 400 Bad Request\r\nConnection: close\r\n\r\n');
    else socket.destroy();
  });

  let tlsMaterial = null;
  if (!config.server.insecure) {
    tlsMaterial = loadTlsMaterial({ certFile: config.server.tlsCertFile, keyFile: config.server.tlsKeyFile, dataDir: config.server.dataDir });
    logger.info(
      { certificate: tlsMaterial.certPath, sha256: tlsMaterial.fingerprint256, generated: tlsMaterial.generated },
      tlsMaterial.generated ? 'generated self-signed TLS certificate' : 'TLS certificate loaded',
    );
  }
  const listener = new PublicListener({
    listen: config.server.listen,
    tls: tlsMaterial,
    clientAddress: addresses,
    maxConnections: config.limits.maxConnections,
    maxConnectionsPerAddress: config.limits.maxConnectionsPerAddress,
    tlsHandshakeTimeoutMs: config.server.tlsHandshakeTimeoutMs,
    prefaceTimeoutMs: config.http.headersTimeoutMs,
    limitHit,
    grpc: injector,
    http: httpServer,
    stats,
    logger: subsystemLogger(logger, 'listener'),
  });

  let state: 'starting' | 'serving' | 'draining' = 'starting';
  const admin = await startAdminServer({
    listen: config.server.adminListen,
    metrics,
    logger,
    health: () => ({ live: state !== 'starting', ready: state === 'serving', detail: { state } }),
  });
  let listen: string;
  try {
    listen = await listener.start();
  } catch (err) {
    await admin.close();
    throw err;
  }
  metrics.start();
  state = 'serving';

  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      state = 'draining';
      await Promise.race([listener.stopAccepting(), Promise.resolve()]);
      // Every stream ends with UNAVAILABLE "server shutting down", so clients retry at once.
      table.shutdown();
      gateway.shutdown();
      wsV2?.shutdown();
      injector.drain(config.server.shutdownGraceMs);
      await waitFor(() => listener.openConnections === 0, config.server.shutdownGraceMs);
      injector.destroy();
      listener.destroyAll();
      httpServer.close();
      grpcServer.forceShutdown();
      metrics.stop();
      refusalLog.flush();
      await admin.close();
    })());

  return { listen, adminListen: admin.address, stop };
}

/** Polls `done` until true or `timeoutMs` passes (shutdown only; bounded). */
async function waitFor(done: () => boolean, timeoutMs: number): Promise<void> {
  const POLL_MS = 50;
  const deadline = Date.now() + timeoutMs;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, POLL_MS));
}
