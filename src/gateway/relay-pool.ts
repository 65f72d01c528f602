/**
 * The gateway's connections to relays: per relay address a pool of lanes
 * (hop-lane.ts), each its own connection carrying at most
 * hop.streamsPerConnection calls (halves and box calls). The pool grows to
 * hop.maxConnectionsPerRelay; a call past that fails at once with
 * RESOURCE_EXHAUSTED: a call is never queued behind a full connection (the
 * reference gateway's stall at 250 streams on one connection). A connection
 * that carried nothing for hop.idleConnectionMs is closed.
 */
import { readFileSync } from 'node:fs';
import type { Config } from '../config/schema.js';
import { HashmailError } from '../session/errors.js';
import type { HopLane } from './hop-lane.js';
import { RelayTrust, type RelayRegistry, type RelayTlsOptions } from './relay-trust.js';

export const POOL_LIMIT_KEY = 'hop.maxConnectionsPerRelay';

export interface RelayPoolOptions {
  streamsPerConnection: number;
  maxConnectionsPerRelay: number;
  idleConnectionMs: number;
  /** null: plain text (`--insecure`); else TLS, each relay checked as `tls` says (relay-trust.ts). */
  tls: RelayTrust | null;
  /** A call was refused by hop.maxConnectionsPerRelay (metrics, refusal log). */
  onLimit?: (configKey: string, client: string) => void;
}

/** The pool a gateway runs with: the hop.* keys; TLS to relays unless server.insecure (`--insecure`). */
export function relayPoolOptions(config: Config, registry: RelayRegistry | null, onLimit?: (configKey: string, client: string) => void): RelayPoolOptions {
  const { hop } = config;
  return {
    streamsPerConnection: hop.streamsPerConnection,
    maxConnectionsPerRelay: hop.maxConnectionsPerRelay,
    idleConnectionMs: hop.idleConnectionMs,
    tls: relayTrustFromConfig(config, registry),
    onLimit,
  };
}

/** How relays' certificates are checked: hop.caFile, else pinned from the directory; null in plain text (`--insecure`). */
export function relayTrustFromConfig(config: Config, registry: RelayRegistry | null): RelayTrust | null {
  return config.server.insecure ? null : new RelayTrust(config.hop.caFile ? readFileSync(config.hop.caFile) : null, registry);
}

interface Connection {
  active: number;
  idleTimer: NodeJS.Timeout | null;
  /** The connection's lane, opened by the first half carried on it (and again after it failed). */
  lane: HopLane | null;
}

/** One call's place on a connection: `release` once the call is over (idempotent). */
export interface PooledCall {
  /** The connection's lane: the one it has if still usable, else one `open` makes to the same relay. */
  lane(open: (address: string, tls: RelayTlsOptions | null) => HopLane): HopLane;
  release(): void;
}

const CONNECTION_CLOSED = (): HashmailError => new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (hop connection closed)');

export class RelayPool {
  private readonly pools = new Map<string, Connection[]>();
  private closed = false;
  /** A call was refused by hop.maxConnectionsPerRelay (metrics, refusal log). */
  onLimit: ((configKey: string, client: string) => void) | null;

  constructor(private readonly options: RelayPoolOptions) {
    this.onLimit = options.onLimit ?? null;
  }

  /** Open connections across every relay. */
  get connections(): number {
    let n = 0;
    for (const list of this.pools.values()) n += list.length;
    return n;
  }

  /** Calls in flight across every relay. */
  get calls(): number {
    let n = 0;
    for (const list of this.pools.values()) for (const c of list) n += c.active;
    return n;
  }

  /** Connections to `address` (tests, status). */
  connectionsTo(address: string): number {
    return this.pools.get(address)?.length ?? 0;
  }

  /**
   * A place for one call to `address`: on the first connection with room,
   * else on a new one; throws RESOURCE_EXHAUSTED when every allowed
   * connection is full. `client` (the caller's address) goes into the refusal log.
   */
  acquire(address: string, client = ''): PooledCall {
    if (this.closed) throw new HashmailError('SERVER_SHUTTING_DOWN');
    let list = this.pools.get(address);
    if (!list) {
      list = [];
      this.pools.set(address, list);
    }
    let conn = list.find((c) => c.active < this.options.streamsPerConnection);
    if (!conn) {
      if (list.length >= this.options.maxConnectionsPerRelay) {
        this.onLimit?.(POOL_LIMIT_KEY, client);
        throw new HashmailError('LIMIT_REACHED', `gateway: relay connection limit reached (${POOL_LIMIT_KEY})`);
      }
      conn = { active: 0, idleTimer: null, lane: null };
      list.push(conn);
    }
    const c = conn;
    c.active++;
    if (c.idleTimer) {
      clearTimeout(c.idleTimer);
      c.idleTimer = null;
    }
    let released = false;
    return {
      lane: (open) => {
        if (!c.lane?.usable) c.lane = open(address, this.options.tls?.optionsFor(address) ?? null);
        return c.lane;
      },
      release: () => {
        if (released) return;
        released = true;
        c.active--;
        if (c.active === 0 && !this.closed) {
          c.idleTimer = setTimeout(() => this.closeIdle(address, c), this.options.idleConnectionMs);
          c.idleTimer.unref();
        }
      },
    };
  }

  /** Closes the connections to `address` (its relay is gone); calls still on them end with UNAVAILABLE. */
  closeAddress(address: string): void {
    const list = this.pools.get(address);
    if (!list) return;
    this.pools.delete(address);
    for (const c of list) this.closeConnection(c);
  }

  close(): void {
    this.closed = true;
    for (const address of [...this.pools.keys()]) this.closeAddress(address);
  }

  private closeIdle(address: string, conn: Connection): void {
    conn.idleTimer = null;
    if (conn.active > 0) return;
    const list = this.pools.get(address);
    const i = list?.indexOf(conn) ?? -1;
    if (list && i >= 0) {
      list.splice(i, 1);
      if (list.length === 0) this.pools.delete(address);
    }
    this.closeConnection(conn);
  }

  private closeConnection(conn: Connection): void {
    if (conn.idleTimer) clearTimeout(conn.idleTimer);
    conn.idleTimer = null;
    conn.lane?.close(CONNECTION_CLOSED());
    conn.lane = null;
  }
}
