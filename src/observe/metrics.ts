/**
 * Prometheus metrics on a private registry, served by the admin listener.
 * Everything relay-specific is read at scrape time from RelayStats and the
 * SessionTable, so the per-message path never calls prom-client; only the
 * gRPC transport reports per call, through cached label children.
 *
 * No label is ever a SID, address or anything else a client controls: every
 * label value comes from a fixed set in the code (transport, half kind,
 * error code, config key, gRPC method of our own services).
 */
import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { Clock } from '../session/clock.js';
import type { SessionTable } from '../session/session-table.js';
import { REFUSED_PROOF_MEANING, REFUSED_PROOFS } from '../transport/hop/preamble-proof.js';
import { GrpcServerMetrics, type CallTransport, type GrpcCallMetrics, type GrpcType } from './grpc-metrics.js';
import { SessionActivitySampler, type SessionActivityCounts } from './session-activity.js';

const EXPENSIVE_DEFAULT_METRICS = [
  'process_open_fds',
  'nodejs_active_handles',
  'nodejs_active_handles_total',
  'nodejs_active_resources',
  'nodejs_active_resources_total',
];
import type { HalfKind, RelayStats, TransportName } from './stats.js';
import { HASHMAIL_VERSION } from './version.js';

export type { CallTransport, GrpcCallMetrics, GrpcType } from './grpc-metrics.js';
export type { SessionActivityCounts } from './session-activity.js';

export interface MetricsDeps {
  stats: RelayStats;
  table: SessionTable;
  /** Window for the active/standby/inuse session gauges (config metrics.sessionRateWindowMs). */
  sessionRateWindowMs: number;
  /** Open WebSocket connections; can also be bound later with setOpenSockets(). */
  openSockets?: () => number;
  /** Time source of the session-rate sampler; unit tests pass a fake one. */
  clock?: Clock;
}

export class Metrics {
  private readonly registry = new Registry();
  private readonly sampler: SessionActivitySampler;
  private readonly grpc: GrpcServerMetrics;
  private openSockets: () => number;

  constructor(deps: MetricsDeps) {
    const { stats, table } = deps;
    this.openSockets = deps.openSockets ?? (() => 0);
    this.sampler = new SessionActivitySampler(table, deps.sessionRateWindowMs, deps.clock);
    collectDefaultMetrics({ register: this.registry });
    // Each of these walks every open file or handle on each scrape: ~45 ms of
    // stalled event loop at 18,000 sockets. hashmail_open_connections and
    // hashmail_websocket_connections say the same, for free.
    for (const name of EXPENSIVE_DEFAULT_METRICS) this.registry.removeSingleMetric(name);
    this.grpc = new GrpcServerMetrics(this.registry);

    const registers = [this.registry];
    const gauge = (name: string, help: string, read: () => number): void => {
      new Gauge({
        name,
        help,
        registers,
        collect() {
          this.set(read());
        },
      });
    };
    // Counters mirror RelayStats, which only grows; reset-then-inc publishes its exact value.
    const counter = (name: string, help: string, read: () => number): void => {
      new Counter({
        name,
        help,
        registers,
        collect() {
          this.reset();
          this.inc(read());
        },
      });
    };
    const labelledCounter = <L extends string>(
      name: string,
      help: string,
      label: L,
      read: () => ReadonlyMap<string, number>,
    ): void => {
      new Counter<L>({
        name,
        help,
        labelNames: [label],
        registers,
        collect() {
          this.reset();
          for (const [value, count] of read()) this.inc({ [label]: value } as Record<L, string>, count);
        },
      });
    };

    // Legacy names (spec section 5): dashboards for the Go server chart these.
    gauge('hashmail_mailbox_count', 'Mailboxes (cipher boxes, one per SID) that exist.', () => table.boxCount);
    const activity = (pick: (c: SessionActivityCounts) => number) => () => pick(this.sampler.current());
    gauge(
      'hashmail_mailbox_active_sessions',
      'Sessions (SID pairs) that existed at the end of the last rate window.',
      activity((c) => c.active),
    );
    gauge(
      'hashmail_mailbox_standby_sessions',
      'Sessions read from at above 0 and below 0.5 messages/s over the last rate window.',
      activity((c) => c.standby),
    );
    gauge(
      'hashmail_mailbox_inuse_sessions',
      'Sessions read from at 0.5 messages/s or more over the last rate window.',
      activity((c) => c.inUse),
    );

    // Ours.
    new Gauge<'transport' | 'kind'>({
      name: 'hashmail_attached_halves',
      help: 'Stream halves (readers, writers) attached to a box, by transport and kind.',
      labelNames: ['transport', 'kind'],
      registers,
      collect() {
        for (const transport of Object.keys(stats.attached) as TransportName[]) {
          for (const kind of Object.keys(stats.attached[transport]) as HalfKind[]) {
            this.set({ transport, kind }, stats.attached[transport][kind]);
          }
        }
      },
    });
    new Gauge<'transport'>({
      name: 'hashmail_v2_parties',
      help: 'v2 parties attached (each holds a read and a write slot), by transport.',
      labelNames: ['transport'],
      registers,
      collect() {
        for (const transport of ['grpc', 'websocket'] as const) this.set({ transport }, stats.v2Endpoints[transport]);
      },
    });
    counter('hashmail_messages_relayed_total', 'Messages handed from a writer to a reader.', () => stats.messagesRelayed);
    counter('hashmail_bytes_relayed_total', 'Payload bytes handed from a writer to a reader.', () => stats.bytesRelayed);
    labelledCounter('hashmail_errors_total', 'Errors reported to clients, by stable error code.', 'code', () => stats.errors);
    gauge('hashmail_buffered_bytes', 'Bytes held for readers across the process: queued in boxes or handed to a transport and not yet flushed (never above limits.maxBufferedBytes).', () => table.budget.usedBytes);
    counter(
      'hashmail_rate_limited_waits_total',
      'Writes that waited for a rate-limit token.',
      () => stats.rateLimitedWaits,
    );
    labelledCounter('hashmail_limit_hits_total', 'Requests refused by a limit, by config key.', 'limit', () => stats.limitsHit);
    labelledCounter(
      'hashmail_directory_unavailable_total',
      'Directory lookups and placements that failed as "directory unavailable", by cause (etcd, deadline, txn_queue, rate_cap, share_cap, not_converged, lease_lost, closed).',
      'cause',
      () => stats.directoryUnavailable,
    );
    gauge('hashmail_directory_lookups_waiting', 'Route lookups held until their answer may change (a party that could not reach the owner it was given, or was told "not placed"; directory.lookupWaitMaxMs; on a gateway also legacy calls waiting briefly for a session its view does not hold yet).', () => stats.lookupsWaiting());
    new Gauge<'role' | 'state'>({
      name: 'hashmail_directory_instances',
      help: 'Live instances in this process\'s view of the directory (its watch-fed cache), by role (relay, gateway) and state (serving, draining).',
      labelNames: ['role', 'state'],
      registers,
      collect() {
        const seen = stats.instancesSeen();
        for (const role of ['relay', 'gateway'] as const) {
          for (const draining of [false, true]) {
            this.set({ role, state: draining ? 'draining' : 'serving' }, seen.filter((i) => i.role === role && i.draining === draining).length);
          }
        }
      },
    });
    counter(
      'hashmail_directory_owners_revoked_total',
      'Relays a party could not reach whose address then refused this process\'s connection (nothing listening: killed, crashed, restarting), and whose leases this process revoked so their sessions move at once (directory.revokeRefusingOwners).',
      () => stats.ownersRevoked,
    );
    counter('hashmail_directory_idle_mappings_released_total', 'Session mappings this relay deleted from the directory because it no longer held the session (directory.releaseIdleMappingsMs).', () => stats.idleMappings.released);
    gauge('hashmail_directory_idle_mappings', 'Session mappings naming this relay with no session here, waiting out directory.releaseIdleMappingsMs before their release.', () => stats.idleMappings.waiting);
    labelledCounter('hashmail_directory_lookups_total', 'Route lookups answered (ServerForMailbox, GET /v2/relay), by result.', 'result', () => stats.lookups);
    new Counter<'reason'>({
      name: 'hashmail_tls_handshake_failures_total',
      help: 'TLS handshakes on the public port that failed, by reason: timeout (server.tlsHandshakeTimeoutMs) or error (bad ClientHello, no shared cipher, peer reset, ...).',
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const reason of ['timeout', 'error'] as const) this.inc({ reason }, stats.tlsHandshakeFailures[reason]);
      },
    });
    new Counter<'reason'>({
      name: 'hashmail_hop_preamble_proofs_refused_total',
      help: `Relay: gateway connection preambles whose proof of the hop token was not taken, by reason: ${REFUSED_PROOFS.map((r) => `${r} (${REFUSED_PROOF_MEANING[r]})`).join('; ')}.`,
      labelNames: ['reason'],
      registers,
      collect() {
        this.reset();
        for (const reason of REFUSED_PROOFS) this.inc({ reason }, stats.preambleProofsRefused[reason]);
      },
    });
    new Gauge<'version' | 'node_version'>({
      name: 'hashmail_build_info',
      help: 'Always 1; the labels say which hashmail and which Node.js run.',
      labelNames: ['version', 'node_version'],
      registers,
    }).set({ version: HASHMAIL_VERSION, node_version: process.version }, 1);
    gauge('hashmail_sessions', 'Sessions (SID pairs) that exist now.', () => table.sessionCount);
    gauge('hashmail_open_connections', 'Client connections open on the public listener.', () => stats.connectionsOpen);
    gauge('hashmail_connection_addresses', 'Client addresses (IPv6: prefixes) holding open connections: entries of the per-address connection limit.', () => stats.connectionAddresses);
    gauge('hashmail_box_addresses', 'Client addresses (IPv6: prefixes) owning boxes: entries of the per-address box limit.', () => table.boxOwnerCount);
    gauge('hashmail_websocket_connections', 'WebSocket connections open.', () => this.openSockets());
    gauge('hashmail_hop_lanes', 'Hop lanes open: at a relay, lanes gateways opened to it; at a gateway, its pool\'s lanes to relays.', () => stats.hopLanes());
    gauge('hashmail_hop_calls', 'At a gateway: legacy halves and box calls carried to relays now (at most hop.streamsPerConnection per lane).', () => stats.hopCallsCarried());
  }

  /** Binds the WebSocket connection count once the transport exists. */
  setOpenSockets(openSockets: () => number): void {
    this.openSockets = openSockets;
  }

  /** Starts the session-rate sampler (one unref'd timer per window). */
  start(): void {
    this.sampler.start();
  }

  stop(): void {
    this.sampler.stop();
  }

  /** Closes the current rate window now; tests call it instead of waiting for the timer. */
  sampleNow(): SessionActivityCounts {
    return this.sampler.sampleNow();
  }

  /** For the gRPC transport and the legacy gateway: counts a started call and returns its per-message reporter. */
  grpcCall(service: string, method: string, type: GrpcType, transport: CallTransport = 'grpc'): GrpcCallMetrics {
    return this.grpc.call(service, method, type, transport);
  }

  /** The Prometheus text exposition of every metric. */
  async render(): Promise<{ contentType: string; body: string }> {
    return { contentType: this.registry.contentType, body: await this.registry.metrics() };
  }
}
