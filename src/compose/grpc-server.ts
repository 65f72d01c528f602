/**
 * The gRPC server of a composition: the legacy service (serve, gateway), the v2
 * service (Connect when v2 is on, ServerForMailbox always), fed connections by the
 * public listener through a connection injector. HTTP/2 streams that are not
 * gRPC go to the HTTP request handler (set once it exists).
 */
import { Server as GrpcServer, ServerCredentials } from '@grpc/grpc-js';
import type { Config } from '../config/schema.js';
import type { Logger } from '../observe/logger.js';
import { subsystemLogger } from '../observe/logger.js';
import type { AnsweredAs } from '../transport/reached-address.js';
import type { LegacyOperations } from '../relay/legacy-operations.js';
import type { ClientAddressPolicy } from '../transport/client-address.js';
import { hashMailServerService, legacyGrpcHandlers } from '../transport/grpc-v1/handlers.js';
import { mailboxV2Handlers, mailboxV2ServerService } from '../transport/grpc-v2/handlers.js';
import { StreamsPerConnection } from '../transport/grpc-stream-limit.js';
import { routeNonGrpcStreams, type H2RequestHandler } from '../transport/h2-http-routes.js';
import { guardResetStreams } from '../transport/h2-reset-streams.js';
import { H2SessionReaper, injectorHttp2Servers } from '../transport/h2-session-reaper.js';
import type { MailboxCore } from './mailbox-core.js';

/** Room for the CipherBox framing around the largest allowed payload. */
const GRPC_MESSAGE_OVERHEAD_BYTES = 1024;
/** nghttp2 memory per HTTP/2 connection (MB); enough for several 4 MiB messages in flight. */
const HTTP2_SESSION_MEMORY_MB = 64;

export interface GrpcParts {
  server: GrpcServer;
  injector: ReturnType<GrpcServer['createConnectionInjector']>;
  /** Where plain HTTP/2 requests (REST, CORS, lookup, 404) go: the same handler as HTTP/1.1. */
  setHttpHandler(handler: H2RequestHandler): void;
}

const NO_HANDLER_STATUS = 503;

export function buildGrpcServer(
  config: Config,
  logger: Logger,
  core: MailboxCore,
  addresses: ClientAddressPolicy,
  legacy: LegacyOperations | null,
  answeredAs?: AnsweredAs,
): GrpcParts {
  const m = config.mailbox;
  const server = new GrpcServer({
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
  const grpcLogger = subsystemLogger(logger, 'grpc');
  const streams = new StreamsPerConnection(config.limits.maxStreamsPerConnection, core.limitHit);
  // Every transport counts boxes under the same key the listener counts connections under.
  const clientAddress = addresses.limitKeyOfCall.bind(addresses);
  const common = { logger: grpcLogger, stats: core.stats, metrics: core.metrics, streams, clientAddress };
  if (legacy) server.addService(hashMailServerService, legacyGrpcHandlers({ ...common, mailbox: legacy }));
  server.addService(mailboxV2ServerService, mailboxV2Handlers({ ...common, v2: config.v2.enabled ? core.v2 : null, lookup: core.lookup, ...(answeredAs ? { answeredAs } : {}) }));

  const injector = server.createConnectionInjector(ServerCredentials.createInsecure());
  const reaper = new H2SessionReaper({ stalledWriteLimitMs: config.grpc.keepaliveTimeoutMs, logger: grpcLogger });
  const h2Servers = injectorHttp2Servers(server);
  let httpHandler: H2RequestHandler | null = null;
  const onHttpRequest: H2RequestHandler = (req, res) => {
    if (httpHandler) httpHandler(req, res);
    else {
      res.statusCode = NO_HANDLER_STATUS;
      res.end();
    }
  };
  let routed = h2Servers.length > 0;
  for (const h2 of h2Servers) {
    reaper.watchServer(h2);
    routed = routeNonGrpcStreams(h2, onHttpRequest) && routed;
    // After the router, so it guards every stream, gRPC or not.
    guardResetStreams(h2);
  }
  if (!routed) logger.warn('grpc-js internals changed: plain HTTP requests over HTTP/2 (REST, CORS) get grpc-js\'s 415');
  if (h2Servers.length === 0) {
    logger.warn('grpc-js internals changed: HTTP/2 sessions ended by GOAWAY are closed only by the keepalive, and reset streams are not guarded');
  }
  return {
    server,
    injector,
    setHttpHandler: (handler) => {
      httpHandler = handler;
    },
  };
}
