/**
 * The go-grpc-prometheus server metrics, same names, labels and label values,
 * so dashboards built for the Go mailbox server carry over. Label children
 * are resolved once per method, so the per-message calls are one increment.
 *
 * In the reference every REST and WebSocket call passes through an
 * in-process gRPC client to its own gRPC server and is counted there; here
 * the legacy gateway reports its calls under the gRPC method they stand for,
 * with one extra label, `transport` (grpc, rest, websocket), so a dashboard
 * that sums over methods and codes sees all traffic as before.
 *
 * Messages are counted in plain numbers and added to their counters when the
 * metrics are read: a prom-client increment hashes its labels each time,
 * about 1.6 us, which a relayed 1 KiB message paid twice on each process.
 */
import { Counter, Histogram, type Registry } from 'prom-client';

export type GrpcType = 'unary' | 'client_stream' | 'server_stream' | 'bidi_stream';

/**
 * go-grpc-prometheus's default buckets (prometheus.DefBuckets, seconds), plus
 * long-lived stream buckets: a mailbox stream lives minutes to hours.
 */
export const GRPC_HANDLING_BUCKETS_SECONDS = [
  0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 600, 3600, 14400,
] as const;

/**
 * Distinct (service, method, type) label sets kept; later ones are folded
 * into "unknown". The transport only reports registered methods, so this
 * bound is never hit in practice; it stays so a mistake cannot grow memory.
 */
const MAX_GRPC_METHODS = 64;
const UNKNOWN_LABEL = 'unknown';
const MS_PER_SEC = 1000;

/**
 * gRPC status code names by number, spelled as go-grpc-prometheus labels
 * them (Go's codes.Code names), so the reference server's dashboards and
 * alerts keep matching.
 */
const GRPC_CODE_NAMES = [
  'OK',
  'Canceled',
  'Unknown',
  'InvalidArgument',
  'DeadlineExceeded',
  'NotFound',
  'AlreadyExists',
  'PermissionDenied',
  'ResourceExhausted',
  'FailedPrecondition',
  'Aborted',
  'OutOfRange',
  'Unimplemented',
  'Internal',
  'Unavailable',
  'DataLoss',
  'Unauthenticated',
] as const;

/** The name of a numeric gRPC status; anything outside the table is UNKNOWN. */
export function grpcCodeName(code: number): string {
  return GRPC_CODE_NAMES[code] ?? 'Unknown';
}

/** One call's reporter, from GrpcServerMetrics.call(). */
export interface GrpcCallMetrics {
  /** A message arrived from the client. */
  received(): void;
  /** A message went to the client. */
  sent(): void;
  /** The call ended with this gRPC status; only the first call counts. */
  done(code: number): void;
}

/** What carried the call: native gRPC, or the legacy REST / WebSocket gateway. */
export type CallTransport = 'grpc' | 'rest' | 'websocket';

type MethodLabels = 'grpc_type' | 'grpc_service' | 'grpc_method' | 'transport';
type MessageWay = 'received' | 'sent';

/** Adds the messages counted since the last read (`way`) to each method's counter. */
function flushPending(methods: Iterable<MethodChildren>, way: MessageWay): void {
  for (const c of methods) {
    if (c.pending[way] > 0) c[way].inc(c.pending[way]);
    c.pending[way] = 0;
  }
}
type HandledLabels = MethodLabels | 'grpc_code';

interface MethodChildren {
  started: { inc(): void };
  received: { inc(value: number): void };
  sent: { inc(value: number): void };
  /** Messages counted since the counters were last read. */
  pending: Record<MessageWay, number>;
  handling: { observe(value: number): void };
  labels: Record<MethodLabels, string>;
  /** grpc_server_handled_total children by numeric code, filled on first use. */
  handled: Map<number, { inc(): void }>;
}

export class GrpcServerMetrics {
  private readonly startedTotal: Counter<MethodLabels>;
  private readonly handledTotal: Counter<HandledLabels>;
  private readonly receivedTotal: Counter<MethodLabels>;
  private readonly sentTotal: Counter<MethodLabels>;
  private readonly handlingSeconds: Histogram<MethodLabels>;
  private readonly methods = new Map<string, MethodChildren>();

  constructor(registry: Registry) {
    const methodLabels: MethodLabels[] = ['grpc_type', 'grpc_service', 'grpc_method', 'transport'];
    const registers = [registry];
    this.startedTotal = new Counter({
      name: 'grpc_server_started_total',
      help: 'Total number of RPCs started on the server.',
      labelNames: methodLabels,
      registers,
    });
    this.handledTotal = new Counter({
      name: 'grpc_server_handled_total',
      help: 'Total number of RPCs completed on the server, regardless of success or failure.',
      labelNames: [...methodLabels, 'grpc_code'],
      registers,
    });
    const methods = this.methods;
    this.receivedTotal = new Counter({
      name: 'grpc_server_msg_received_total',
      help: 'Total number of RPC stream messages received on the server.',
      labelNames: methodLabels,
      registers,
      collect: () => flushPending(methods.values(), 'received'),
    });
    this.sentTotal = new Counter({
      name: 'grpc_server_msg_sent_total',
      help: 'Total number of gRPC stream messages sent by the server.',
      labelNames: methodLabels,
      registers,
      collect: () => flushPending(methods.values(), 'sent'),
    });
    this.handlingSeconds = new Histogram({
      name: 'grpc_server_handling_seconds',
      help: 'Histogram of response latency (seconds) of gRPC that had been application-level handled by the server.',
      labelNames: methodLabels,
      buckets: [...GRPC_HANDLING_BUCKETS_SECONDS],
      registers,
    });
  }

  /** Counts a started call and returns its reporter. */
  call(service: string, method: string, type: GrpcType, transport: CallTransport = 'grpc'): GrpcCallMetrics {
    const children = this.children(service, method, type, transport);
    children.started.inc();
    const startedAt = performance.now();
    let finished = false;
    return {
      received: () => void children.pending.received++,
      sent: () => void children.pending.sent++,
      done: (code: number) => {
        if (finished) return;
        finished = true;
        let handled = children.handled.get(code);
        if (!handled) {
          handled = this.handledTotal.labels({ ...children.labels, grpc_code: grpcCodeName(code) });
          children.handled.set(code, handled);
        }
        handled.inc();
        children.handling.observe((performance.now() - startedAt) / MS_PER_SEC);
      },
    };
  }

  private children(service: string, method: string, type: GrpcType, transport: CallTransport): MethodChildren {
    const key = `${type}\0${service}\0${method}\0${transport}`;
    const cached = this.methods.get(key);
    if (cached) return cached;
    const isFallback = service === UNKNOWN_LABEL && method === UNKNOWN_LABEL;
    if (this.methods.size >= MAX_GRPC_METHODS && !isFallback) {
      return this.children(UNKNOWN_LABEL, UNKNOWN_LABEL, type, transport);
    }
    const labels: Record<MethodLabels, string> = { grpc_type: type, grpc_service: service, grpc_method: method, transport };
    const children: MethodChildren = {
      started: this.startedTotal.labels(labels),
      received: this.receivedTotal.labels(labels),
      sent: this.sentTotal.labels(labels),
      pending: { received: 0, sent: 0 },
      handling: this.handlingSeconds.labels(labels),
      labels,
      handled: new Map(),
    };
    this.methods.set(key, children);
    return children;
  }
}
