/**
 * The relay's end of the hop: the box calls are each one legacy operation
 * of the relay's own LegacyMailbox, made on behalf of the client a gateway
 * names; the streams travel as halves of a lane (lane-upgrade.ts, lane-server.ts). Every call
 * is authenticated (hop token) and admitted by the SessionRouter (fencing:
 * this relay must own the session). Failures travel as hop-status.ts
 * describes.
 */
import type { sendUnaryData, ServerUnaryCall, ServiceDefinition, UntypedServiceImplementation } from '@grpc/grpc-js';
import { routeOfSid } from '../../directory/route.js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { CallInfo, LegacyOperations } from '../../relay/legacy-operations.js';
import type { SessionRouter } from '../../relay/session-router.js';
import { HashmailError } from '../../session/errors.js';
import { checkSid } from '../../session/sid.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';
import { noteError } from '../report-error.js';
import { tolerantService } from '../tolerant-service.js';
import type { HopBox } from './codec.js';
import { hopStatus } from './hop-status.js';
import type { HopToken } from './hop-token.js';
import { CLIENT_ADDRESS } from './lane-server.js';
import { laneUpgradeRoute } from './lane-upgrade.js';
import { HOP_CLIENT_ADDRESS_HEADER, HOP_SERVICE_NAME, HOP_TOKEN_HEADER, hopService } from './service.js';

export const hopServerService: ServiceDefinition = tolerantService(hopService);

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
}

interface HopCall {
  metadata: { get(key: string): unknown[] };
}

export function hopHandlers(deps: HopServerDeps): UntypedServiceImplementation {
  const { mailbox, router, metrics } = deps;

  /** The caller must hold the token; then the client address it forwards is believed. */
  const authorize = (call: HopCall): CallInfo => {
    if (!deps.token.matches(call.metadata.get(HOP_TOKEN_HEADER)[0])) throw new HashmailError('HOP_UNAUTHENTICATED');
    const address = call.metadata.get(HOP_CLIENT_ADDRESS_HEADER)[0];
    if (typeof address !== 'string' || !CLIENT_ADDRESS.test(address)) {
      throw new HashmailError('MALFORMED_REQUEST', `hop: ${HOP_CLIENT_ADDRESS_HEADER} metadata required (a client address)`);
    }
    return { transport: 'hop', address };
  };

  const status = (err: unknown, method: string): ReturnType<typeof hopStatus> => hopStatus(noteError(deps, err, { transport: 'hop', call: method }));

  const unary =
    (method: 'CreateBox' | 'DeleteBox', create: boolean, run: (sid: Buffer, info: CallInfo) => Promise<void> | void) =>
    async (call: ServerUnaryCall<HopBox | HashmailError, unknown>, callback: sendUnaryData<unknown>): Promise<void> => {
      const m = metrics.grpcCall(HOP_SERVICE_NAME, method, 'unary');
      m.received();
      try {
        const info = authorize(call);
        if (call.request instanceof HashmailError) throw call.request;
        const sid = checkSid(call.request.streamId);
        await router.admit(routeOfSid(sid), create, true);
        await run(sid, info);
        m.sent();
        m.done(0);
        callback(null, {});
      } catch (err) {
        const s = status(err, method);
        m.done(s.code);
        callback(s);
      }
    };

  return {
    CreateBox: unary('CreateBox', true, (sid, info) => mailbox.newCipherBox({ desc: { streamId: sid }, hasAuth: true }, info)),
    DeleteBox: unary('DeleteBox', false, (sid, info) => mailbox.delCipherBox({ desc: { streamId: sid }, hasAuth: true }, info)),
  };
}

/** The relay's lane route on its public port (HTTP upgrade), counted as LegacyHop/Carry. */
export function hopLaneRoute(deps: HopServerDeps): ReturnType<typeof laneUpgradeRoute> {
  return laneUpgradeRoute({
    mailbox: deps.mailbox,
    router: deps.router,
    logger: deps.logger,
    token: deps.token,
    sendWindowBytes: deps.windowBytes,
    maxMessageBytes: deps.maxMessageBytes,
    note: (err) => noteError(deps, err, { transport: 'hop', call: 'Carry' }),
    callMetrics: () => deps.metrics.grpcCall(HOP_SERVICE_NAME, 'Carry', 'bidi_stream'),
  });
}
