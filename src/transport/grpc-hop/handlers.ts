/**
 * The relay's end of the hop: each call is one legacy operation of the
 * relay's own LegacyMailbox, made on behalf of the client a gateway names.
 * Every call is authenticated (hop token), admitted by the SessionRouter
 * (fencing: this relay must own the session) and, for the two streams,
 * tracked by it, so a lost route, a lost lease or a drain ends the carried
 * half with UNAVAILABLE as it ends a v2 party. Failures travel as
 * hop-status.ts describes.
 */
import {
  Metadata,
  type sendUnaryData,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type ServiceDefinition,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { routeOfSid } from '../../directory/route.js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import type { CallInfo, LegacyOperations, LegacySend } from '../../relay/legacy-operations.js';
import { ReadPump } from '../../relay/read-pump.js';
import type { SessionRouter } from '../../relay/session-router.js';
import { HashmailError } from '../../session/errors.js';
import { checkSid, shortHash } from '../../session/sid.js';
import { GrpcCallScope } from '../grpc-call-scope.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';
import { readWithPushBack } from '../grpc-read.js';
import { noteError } from '../report-error.js';
import { encodeHopPayload, type HopBox, type HopMessage } from './codec.js';
import { hopStatus } from './hop-status.js';
import type { HopToken } from './hop-token.js';
import { HOP_ATTACHED_HEADER, HOP_CLIENT_ADDRESS_HEADER, HOP_SERVICE_NAME, HOP_TOKEN_HEADER, hopService } from './service.js';
import { tolerantService } from '../tolerant-service.js';

/** A forwarded client address: a limit key (IPv4, masked IPv6 with /prefix, or a name), printable, short. */
const CLIENT_ADDRESS = /^[0-9A-Za-z.:/%_[\]-]{1,100}$/;

export const hopServerService: ServiceDefinition = tolerantService(hopService);

export interface HopServerDeps {
  /** The relay's own legacy operations (core.legacy). */
  mailbox: LegacyOperations;
  router: SessionRouter;
  token: HopToken;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
}

interface HopCall {
  metadata: Metadata;
}

const ATTACHED = (): Metadata => {
  const md = new Metadata();
  md.set(HOP_ATTACHED_HEADER, '1');
  return md;
};

export function hopHandlers(deps: HopServerDeps): UntypedServiceImplementation {
  const { mailbox, router, logger, metrics } = deps;

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

  /** Tracks an attached half with the router; returns what releases both. */
  const tracked = (scope: GrpcCallScope, route: string, release: () => void): boolean => {
    let forget = (): void => undefined;
    if (!scope.attached(() => (forget(), release()))) return false;
    forget = router.track(route, { end: scope.fail });
    // The router may have ended it at once (the route moved while we waited for the slot).
    if (scope.ended) forget();
    return !scope.ended;
  };

  return {
    CreateBox: unary('CreateBox', true, (sid, info) => mailbox.newCipherBox({ desc: { streamId: sid }, hasAuth: true }, info)),
    DeleteBox: unary('DeleteBox', false, (sid, info) => mailbox.delCipherBox({ desc: { streamId: sid }, hasAuth: true }, info)),
    Recv: (call: ServerWritableStream<HopBox | HashmailError, Buffer>): void => {
      void receive(call);
    },
    Send: send,
  };

  async function receive(call: ServerWritableStream<HopBox | HashmailError, Buffer>): Promise<void> {
    const m = metrics.grpcCall(HOP_SERVICE_NAME, 'Recv', 'server_stream');
    m.received();
    const scope = new GrpcCallScope(call, m, (err) => {
      const s = status(err, 'Recv');
      m.done(s.code);
      call.emit('error', s);
    });
    try {
      const info = authorize(call);
      if (call.request instanceof HashmailError) throw call.request;
      const sid = checkSid(call.request.streamId);
      const route = routeOfSid(sid);
      await router.admit(route, false, true);
      const half = await mailbox.openReceive(sid, info, scope.beginWait());
      if (!tracked(scope, route, () => half.release())) return;
      logger.debug({ sid: shortHash(sid) }, 'hop reader attached');
      half.onBoxClosed(scope.fail);
      call.sendMetadata(ATTACHED());
      const pump: ReadPump = new ReadPump(
        half,
        (msg, flushed) => {
          m.sent();
          if (call.write(encodeHopPayload(msg), flushed)) return true;
          call.once('drain', pump.resume);
          return false;
        },
        scope.fail,
      );
      pump.resume();
    } catch (err) {
      scope.end(err);
    }
  }

  function send(call: ServerReadableStream<HopMessage | HashmailError, unknown>, callback: sendUnaryData<unknown>): void {
    const m = metrics.grpcCall(HOP_SERVICE_NAME, 'Send', 'client_stream');
    const scope = new GrpcCallScope(call, m, (err) => {
      if (err === null) {
        m.done(0);
        callback(null, {});
        return;
      }
      const s = status(err, 'Send');
      m.done(s.code);
      callback(s);
      call.destroy();
    });
    let info: CallInfo;
    try {
      info = authorize(call);
    } catch (err) {
      scope.end(err);
      return;
    }
    let half: LegacySend | null = null;
    /** The first message names the box and carries no payload. */
    const attach = async (first: HopMessage): Promise<void> => {
      const sid = checkSid(first.streamId);
      if (first.msg.length > 0) throw new HashmailError('MALFORMED_REQUEST', 'hop: the first Send message names the box and carries no msg');
      const route = routeOfSid(sid);
      await router.admit(route, false, true);
      const h = await mailbox.openSend({ streamId: sid }, info, scope.beginWait());
      if (!tracked(scope, route, () => h.release())) return;
      half = h;
      logger.debug({ sid: shortHash(sid) }, 'hop writer attached');
      h.onBoxClosed(scope.fail);
      call.sendMetadata(ATTACHED());
    };
    const handle = (msg: HopMessage | HashmailError): Promise<void> | undefined => {
      m.received();
      if (msg instanceof HashmailError) throw msg;
      return half ? half.write(msg.msg) : attach(msg);
    };
    /** Half-closed by the gateway: every write resolved only once queued, so OK now means "all taken". */
    const ended = (err: unknown): void => {
      if (err === null && half === null) return scope.end(new HashmailError('DESC_REQUIRED'));
      const finishing = err === null ? half?.finish() : undefined;
      if (finishing) finishing.then(() => scope.end(null), scope.fail);
      else scope.end(err);
    };
    readWithPushBack(call, handle, ended, () => scope.ended);
  }
}
