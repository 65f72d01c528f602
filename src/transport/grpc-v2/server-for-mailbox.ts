/**
 * gRPC `hashmail.v2.Mailbox/ServerForMailbox`: which relay owns a route,
 * answered by every instance (docs/protocol-v2.md, Finding the relay).
 */
import type { sendUnaryData, ServerUnaryCall } from '@grpc/grpc-js';
import type { LookupWait, RouteAsk, RouteLookup } from '../../directory/route-lookup.js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import { HashmailError } from '../../session/errors.js';
import { CALL_OVER } from '../../session/abort-reason.js';
import {
  decodeServerForMailboxRequest,
  decodeServerForMailboxResponse,
  encodeServerForMailboxRequest,
  encodeServerForMailboxResponse,
  type ServerForMailboxRequest,
  type ServerForMailboxResponse,
} from '../../wire/v2-frames.js';
import type { GrpcCallPeer } from '../client-address.js';
import type { AnsweredAs } from '../reached-address.js';
import type { GrpcMetricsHook } from '../grpc-v1/handlers.js';
import { noteError } from '../report-error.js';

const SERVICE_NAME = 'hashmail.v2.Mailbox';
export const SERVER_FOR_MAILBOX_PATH = `/${SERVICE_NAME}/ServerForMailbox`;

const asBuffer = (b: Uint8Array): Buffer => Buffer.from(b.buffer, b.byteOffset, b.byteLength);

/** Client-side method definition (tests, the client library). */
export const serverForMailboxMethod = {
  path: SERVER_FOR_MAILBOX_PATH,
  requestStream: false,
  responseStream: false,
  requestSerialize: (req: ServerForMailboxRequest): Buffer => asBuffer(encodeServerForMailboxRequest(req)),
  requestDeserialize: (b: Buffer): ServerForMailboxRequest => decodeServerForMailboxRequest(b),
  responseSerialize: (res: ServerForMailboxResponse): Buffer => asBuffer(encodeServerForMailboxResponse(res)),
  responseDeserialize: (b: Buffer): ServerForMailboxResponse => decodeServerForMailboxResponse(b),
} as const;

/** Server side: a request that fails to decode becomes an INVALID_ARGUMENT answer. */
export const serverForMailboxServerMethod = {
  ...serverForMailboxMethod,
  requestDeserialize: (b: Buffer): ServerForMailboxRequest | HashmailError => {
    try {
      return decodeServerForMailboxRequest(b);
    } catch (err) {
      return new HashmailError('MALFORMED_REQUEST', `malformed request: ${(err as Error).message}`);
    }
  },
};

export interface ServerForMailboxDeps {
  lookup: RouteLookup;
  logger: Logger;
  stats: RelayStats;
  metrics: GrpcMetricsHook;
  /** The caller's per-address limit key: its held lookups count under it (MAX_HELD_LOOKUPS_PER_ADDRESS). */
  clientAddress?(call: GrpcCallPeer): string;
  /** The address given out for an owner (reached-address.ts); default as registered. */
  answeredAs?: AnsweredAs;
}

/**
 * The wait a request asks for (unreachable / wait_ms), ended early when the
 * caller cancels. grpc-js emits 'cancelled' after every call, answered ones
 * too: only one before the answer (`answered()` false) aborts the wait, so
 * a wave of held lookups does not dispatch an abort each.
 */
function heldLookup(call: ServerUnaryCall<unknown, unknown>, req: ServerForMailboxRequest, answered: () => boolean): LookupWait | undefined {
  const ms = req.waitMs ?? 0;
  if (!(ms > 0)) return undefined;
  const gone = new AbortController();
  call.once('cancelled', () => {
    if (!answered()) gone.abort(CALL_OVER);
  });
  return {
    unreachable: req.unreachable ?? '',
    ...(req.unreachableStartedAt ? { unreachableStartedAt: req.unreachableStartedAt } : {}),
    ms,
    signal: gone.signal,
  };
}

/** The lookup a request asks for, with the caller's per-address limit key when known. */
function askOf(call: ServerUnaryCall<unknown, unknown>, req: ServerForMailboxRequest, answered: () => boolean, clientAddress: ServerForMailboxDeps['clientAddress']): RouteAsk {
  const wait = heldLookup(call, req, answered);
  const client = clientAddress?.(call);
  return { create: req.create, ...(client === undefined ? {} : { client }), ...(wait ? { wait } : {}) };
}

export function serverForMailboxHandler(deps: ServerForMailboxDeps) {
  return (call: ServerUnaryCall<ServerForMailboxRequest | HashmailError, ServerForMailboxResponse>, callback: sendUnaryData<ServerForMailboxResponse>): void => {
    const m = deps.metrics.grpcCall(SERVICE_NAME, 'ServerForMailbox', 'unary');
    m.received();
    const req = call.request;
    let answered = false;
    const answer = req instanceof HashmailError ? Promise.reject(req) : deps.lookup(req.route, askOf(call, req, () => answered, deps.clientAddress));
    answer.then(
      (owner) => {
        answered = true;
        m.sent();
        m.done(0);
        callback(null, { id: owner.id, address: deps.answeredAs ? deps.answeredAs(owner, call.getHost()) : owner.address, startedAt: owner.startedAt });
      },
      (err: unknown) => {
        answered = true;
        const e = noteError(deps, err, { transport: 'grpc', call: 'ServerForMailbox' });
        m.done(e.grpcCode);
        callback({ code: e.grpcCode, details: e.message });
      },
    );
  };
}
