/**
 * Counters the hot path bumps as plain integers; the metrics module reads
 * them at scrape time. Keeping prom-client off the per-message path keeps
 * that path a few increments long.
 */
import type { InstanceRole } from '../directory/directory.js';
import type { HashmailErrorCode } from '../session/errors.js';

/** `hop`: a legacy half carried from a gateway (counted at the relay). */
export type TransportName = 'grpc' | 'websocket' | 'rest' | 'hop';
export type HalfKind = 'read' | 'write';

export class RelayStats {
  messagesRelayed = 0;
  bytesRelayed = 0;
  rateLimitedWaits = 0;
  /** Attached halves by transport and kind (gauges). */
  readonly attached: Record<TransportName, Record<HalfKind, number>> = {
    grpc: { read: 0, write: 0 },
    websocket: { read: 0, write: 0 },
    rest: { read: 0, write: 0 },
    hop: { read: 0, write: 0 },
  };
  /** Attached v2 parties by transport (gauge); each holds a read and a write slot. */
  readonly v2Endpoints: Record<TransportName, number> = { grpc: 0, websocket: 0, rest: 0, hop: 0 };
  /** Errors reported to callers, by stable code. */
  readonly errors = new Map<HashmailErrorCode, number>();
  /** Limits hit, by config key. */
  readonly limitsHit = new Map<string, number>();
  /** Route lookups answered (ServerForMailbox, GET /v2/relay), by result. */
  readonly lookups = new Map<string, number>();
  /** Lookups held now, waiting for their answer to change (Directory.lookupsWaiting; set by the composition). */
  lookupsWaiting: () => number = () => 0;
  /** The live instances in this process's view of the directory (Directory.instances; set by the composition). */
  instancesSeen: () => readonly { readonly role: InstanceRole; readonly draining: boolean }[] = () => [];
  /** Hop lanes open now: a relay's from gateways (counted here), a gateway's to relays (its pool; set by the gateway). */
  hopLanes: () => number = () => this.hopLanesServed;
  hopLanesServed = 0;
  /** A gateway's halves and box calls carried to relays now (set by the gateway). */
  hopCallsCarried: () => number = () => 0;
  /** A relay's idle mapping release (set by the composition on the etcd backend): released so far, waiting out their grace now. */
  idleMappings: { readonly released: number; readonly waiting: number } = { released: 0, waiting: 0 };
  /** Owners a party could not reach whose address refused connections, and whose leases this process revoked. */
  ownersRevoked = 0;
  /** Lookups the directory could not answer, by cause (UnavailableCause). */
  readonly directoryUnavailable = new Map<string, number>();
  /** Connections refused or closed by the connection limits, by config key. */
  connectionsOpen = 0;
  /** Client addresses holding at least one open connection (per-address limit entries). */
  connectionAddresses = 0;
  /** TLS handshakes that failed, by `timeout` (server.tlsHandshakeTimeoutMs) or `error` (anything else). */
  readonly tlsHandshakeFailures = { timeout: 0, error: 0 };
  /** Gateway preamble proofs a relay did not take, by why (src/transport/hop/preamble-proof.ts). */
  readonly preambleProofsRefused = { wrong: 0, outside_window: 0, replayed: 0, too_many: 0 };
  /**
   * Where bad requests are logged, summarized (RefusalLog), so that every
   * transport reporting through report-error.ts shares one bound on warn
   * lines; null: one line each (unit tests).
   */
  badRequestLog: { badRequest(code: string, sample: Record<string, string>): void } | null = null;

  countError(code: HashmailErrorCode): void {
    increment(this.errors, code);
  }

  countLookup(result: string): void {
    increment(this.lookups, result);
  }

  countDirectoryUnavailable(cause: string): void {
    increment(this.directoryUnavailable, cause);
  }

  countLimit(configKey: string): void {
    increment(this.limitsHit, configKey);
  }
}

/** One more of `key` in a counter map. */
function increment(counts: Map<string, number>, key: string): void {
  counts.set(key, (counts.get(key) ?? 0) + 1);
}
