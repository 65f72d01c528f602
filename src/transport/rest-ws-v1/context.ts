/**
 * What every call of the legacy gateway shares: the mailbox it translates to,
 * logging, counters and the set of open streaming calls that shutdown ends.
 */
import type { IncomingMessage } from 'node:http';
import { noteError as reportError } from '../report-error.js';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats, TransportName } from '../../observe/stats.js';
import type { CallTransport, GrpcCallMetrics, GrpcType } from '../../observe/grpc-metrics.js';
import type { LegacyOperations } from '../../relay/legacy-operations.js';
import type { HashmailError } from '../../session/errors.js';

/** JSON requests without a message (CipherBoxDesc, CipherBoxAuth) are tiny; this bounds their body (bytes). */
export const MAX_SMALL_REQUEST_BYTES = 16 * 1024;
/** The gRPC service each gateway call stands for (as the reference's in-process gateway calls it). */
const LEGACY_SERVICE = 'hashmailrpc.HashMail';
/** gRPC CANCELLED: the client left before the call ended. */
export const CANCELLED_CODE = 1;
export const OK_CODE = 0;

/** The gRPC method and type each gateway call counts under in grpc_server_*. */
const LEGACY_METHODS = {
  create: ['NewCipherBox', 'unary'],
  delete: ['DelCipherBox', 'unary'],
  receive: ['RecvStream', 'server_stream'],
  send: ['SendStream', 'client_stream'],
} as const satisfies Record<string, readonly [string, GrpcType]>;
export type LegacyCall = keyof typeof LEGACY_METHODS;

/** grpc_server_* reporting (observe/metrics.ts). */
export interface CallMetricsHook {
  grpcCall(service: string, method: string, type: GrpcType, transport: CallTransport): GrpcCallMetrics;
}

/** A streaming call (WebSocket or chunked HTTP) that shutdown must end. */
export interface OpenCall {
  /** Reports `err` (not ours: INTERNAL) to the client if it can still be told, then ends the call. */
  abort(err: unknown): void;
}

export interface GatewayContext {
  readonly mailbox: LegacyOperations;
  readonly logger: Logger;
  readonly stats: RelayStats;
  clientAddress(req: IncomingMessage): string;
  /** Largest JSON text of one CipherBox (from mailbox.maxMessageBytes). */
  readonly maxCipherBoxJsonBytes: number;
  /** Open streaming calls (shutdown ends them all). */
  readonly calls: Set<OpenCall>;
  /** Set once shutdown began: new calls are refused. */
  readonly shuttingDown: boolean;
  readonly metrics: CallMetricsHook;
}

/** Counts a started gateway call under its gRPC method, with the transport that carried it. */
export function startCallMetrics(ctx: GatewayContext, call: LegacyCall, transport: 'rest' | 'websocket'): GrpcCallMetrics {
  const [method, type] = LEGACY_METHODS[call];
  return ctx.metrics.grpcCall(LEGACY_SERVICE, method, type, transport);
}

/** Counts and logs an error about to be reported to a legacy client (see report-error.ts). */
export function noteError(ctx: GatewayContext, err: unknown, transport: TransportName, call: string): HashmailError {
  return reportError(ctx, err, { transport, call });
}
