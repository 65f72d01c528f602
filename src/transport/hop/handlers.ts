/**
 * The relay's end of the hop, put together: lanes that gateways open on the
 * public port (lane-upgrade.ts), each carrying box calls and legacy halves
 * (lane-server.ts) that are the relay's own LegacyMailbox operations made on
 * behalf of the client a gateway names. Every lane is authenticated (hop
 * token) and every call on it admitted by the SessionRouter (fencing: this
 * relay must own the session). Calls and frames are counted as gRPC methods
 * of `hashmail.hop.v1.LegacyHop` (CreateBox, DeleteBox, Carry), as they were
 * when the hop was a gRPC service.
 */
import type { Duplex } from 'node:stream';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { LegacyOperations } from '../../relay/legacy-operations.js';
import type { SessionRouter } from '../../relay/session-router.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';
import { noteError } from '../report-error.js';
import type { HopToken } from './hop-token.js';
import { laneUpgradeRoute } from './lane-upgrade.js';

/** The service name hop calls are counted under (grpc_server_* metrics). */
export const HOP_SERVICE_NAME = 'hashmail.hop.v1.LegacyHop';

export interface HopServerDeps {
  /** The relay's own legacy operations (core.legacy). */
  mailbox: LegacyOperations;
  router: SessionRouter;
  token: HopToken;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
  /** hop.windowBytes: credit a carried writer gets on a lane. */
  windowBytes: number;
  /** mailbox.maxMessageBytes. */
  maxMessageBytes: number;
  /** Halves and box calls at once on one lane (default MAX_CALLS_PER_LANE, lane-server.ts). */
  maxCallsPerLane?: number;
  /** An authenticated gateway's lane connection: counted against no client's connection limit. */
  adopt?(socket: Duplex): void;
}

/** The relay's lane route on its public port (HTTP upgrade). */
export function hopLaneRoute(deps: HopServerDeps): ReturnType<typeof laneUpgradeRoute> {
  return laneUpgradeRoute({
    mailbox: deps.mailbox,
    router: deps.router,
    logger: deps.logger,
    token: deps.token,
    sendWindowBytes: deps.windowBytes,
    maxMessageBytes: deps.maxMessageBytes,
    maxCallsPerLane: deps.maxCallsPerLane,
    ...(deps.adopt ? { adopt: deps.adopt } : {}),
    note: (err, call = 'Carry') => noteError(deps, err, { transport: 'hop', call }),
    callMetrics: () => {
      const m = deps.metrics.grpcCall(HOP_SERVICE_NAME, 'Carry', 'bidi_stream');
      deps.stats.hopLanesServed++;
      return {
        sent: () => m.sent(),
        received: () => m.received(),
        done: (code) => {
          deps.stats.hopLanesServed--;
          m.done(code);
        },
      };
    },
    boxCallMetrics: (call) => deps.metrics.grpcCall(HOP_SERVICE_NAME, call, 'unary'),
  });
}
