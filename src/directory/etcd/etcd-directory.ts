/**
 * The etcd backend of the Directory. Composition of small parts: EtcdRpc
 * (etcd3 as RPC layer, deadlines), LeaseKeeper (leases kept alive and proven
 * on a monotonic clock), PrefixWatcher + DirectoryCache (the watch-fed local
 * view), Placer (create-if-absent transactions). A lookup of a known session
 * is answered from the cache with no etcd round trip.
 */
import { EventEmitter } from 'node:events';
import type {
  Directory,
  DirectoryEvents,
  DirectoryHealth,
  InstanceLoad,
  InstanceRecord,
  LookupOptions,
  RouteOwner,
  SelfRegistration,
} from '../directory.js';
import { DirectoryUnavailableError, NoInstanceError, routeOwnerOf } from '../directory.js';
import { ChangeWaiters } from '../change-waiters.js';
import { DirectoryCache } from './directory-cache.js';
import type { EtcdDirectoryOptions } from './etcd-options.js';
import { EtcdRpc } from './etcd-rpc.js';
import { encodeInstance, instanceKey, keyLayout, leaseDecimal, leaseHex, sessionKey, type InstanceValue, type KeyLayout } from './keys.js';
import { LeaseKeeper } from './lease-keeper.js';
import { readLeaseState, writeLeaseState } from './lease-state-file.js';
import { systemClock } from '../../session/clock.js';
import { PlacementRate } from '../placement-rate.js';
import { Placer } from './placer.js';
import { PrefixWatcher } from './prefix-watcher.js';
import { RefusingOwners } from './refusing-owners.js';

/** A session lease is rotated once it holds this share of keysPerLease (placers elsewhere may still add a few). */
const ROTATE_AT_FRACTION = 0.8;
/** Re-registration after a lost fence: first retry, doubling to the max, with jitter. */
const RECLAIM_MIN_MS = 100;
const RECLAIM_MAX_MS = 2000;
/** The config key a refusal by the placement cap is counted and logged under. */
const PLACEMENT_RATE_KEY = 'directory.maxPlacementsPerSecond';
const PLACEMENT_SHARE_KEY = 'directory.maxPlacementShare';
/** etcd's limit of operations in one transaction (--max-txn-ops default). */
const MAX_TXN_OPS = 128;

function message(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/** Instance ids remembered for reRegisteredAt: far more than a cluster has, few enough to be nothing in memory. */
const MAX_KNOWN_INSTANCES = 10_000;
export class EtcdDirectory implements Directory {
  readonly backend = 'etcd' as const;
  private readonly rpc: EtcdRpc;
  private readonly layout: KeyLayout;
  private readonly cache: DirectoryCache;
  private readonly watcher: PrefixWatcher;
  private readonly placer: Placer;
  private readonly placementRate: PlacementRate | null;
  private readonly events = new EventEmitter();
  private keeper: LeaseKeeper | null = null;
  private starting: Promise<void> | null = null;
  private self: SelfRegistration | null = null;
  private startedAt = 0;
  /** This generation's leases (hex); the first one also holds the instance record. */
  private leases: string[] = [];
  /** Leases of a fenced generation not yet revoked (etcd was away): revoked after the next registration. */
  private abandoned: string[] = [];
  private load: InstanceLoad = { sessions: 0, connections: 0 };
  private loadDirty = false;
  private draining = false;
  private fenced = false;
  /** A first registration went through: from then on, lookups need a provable lease (before it, the fresh listing serves). */
  private claimedOnce = false;
  private rotating = false;
  private reclaimTimer: NodeJS.Timeout | null = null;
  private loadTimer: NodeJS.Timeout | null = null;
  private closed = false;
  private started = false;
  /** Lookups held until their answer may change (waitForChange). */
  private readonly waiters: ChangeWaiters;
  /**
   * Every instance id this view has seen registered (least recently
   * registered first, at most MAX_KNOWN_INSTANCES), with when it last saw
   * one register again (performance.now()), null if never: reRegisteredAt.
   */
  private readonly knownInstances = new Map<string, number | null>();
  /** False once the process stops: held lookups are answered and no more are held. */
  private holding = true;
  /** A placement refused by a limit: its config key, and the client address it was for (when known). */
  onLimit: ((configKey: string, client: string | undefined) => void) | null = null;
  onUnavailable: ((err: DirectoryUnavailableError) => void) | null = null;
  onOwnerRevoked: ((id: string) => void) | null = null;
  private readonly refusingOwners: RefusingOwners;

  constructor(private readonly options: EtcdDirectoryOptions) {
    this.rpc = new EtcdRpc(options, options.callTimeoutMs);
    this.layout = keyLayout(options.prefix);
    this.cache = new DirectoryCache(this.layout);
    this.watcher = new PrefixWatcher(this.rpc, this.layout.prefix, this.cache, options.logger, options.callTimeoutMs);
    this.placementRate =
      options.maxPlacementsPerSecond > 0 ? new PlacementRate(options.maxPlacementsPerSecond, options.placementQueueMs, systemClock, options.maxPlacementShare ?? 0) : null;
    if (this.placementRate) this.placementRate.onRefused = (overShare, client) => this.onLimit?.(overShare ? PLACEMENT_SHARE_KEY : PLACEMENT_RATE_KEY, client);
    this.placer = new Placer(this.rpc, this.layout, this.cache, {
      policy: options.placement,
      maxTxnsInFlight: options.maxTxnsInFlight,
      callTimeoutMs: options.callTimeoutMs,
      keysPerLease: options.keysPerLease,
      rate: this.placementRate,
    });
    this.waiters = new ChangeWaiters(options.maxWaitingLookups);
    this.refusingOwners = new RefusingOwners({
      rpc: this.rpc,
      layout: this.layout,
      cache: this.cache,
      logger: options.logger,
      reportable: (owner) => {
        if (this.closed || owner.id === this.selfId) return false;
        const live = this.cache.instances.get(owner.id);
        return live !== undefined && live.startedAt === owner.startedAt && !live.draining;
      },
      closed: () => this.closed,
      revoked: (id) => this.onOwnerRevoked?.(id),
    });
    this.cache.onInstance = (id, record, before) => {
      this.placer.recordPublished();
      // A new registration under a known id, seen live, is a restart: a lookup held against the old process answers now.
      const registered = record !== undefined && (before === undefined || before.startedAt !== record.startedAt);
      if (registered) this.noteRegistration(id);
      if (record === undefined || record.draining || registered) this.waiters.ownerChanged(id);
      if (record === undefined) this.events.emit('instanceGone', id);
    };
    this.cache.onMapping = (route, before, after) => {
      this.waiters.routeChanged(route);
      const me = this.selfId;
      if (me === null) return;
      if (before?.id === me && after?.id !== me) this.events.emit('routeLost', route);
      if (after?.id === me && before?.id !== me) this.events.emit('routeGained', route);
      if (after?.id === me && after.lease === this.currentSessionLease()) this.maybeRotate();
    };
    this.events.on('error', () => undefined);
  }

  get selfId(): string | null {
    return this.self?.id ?? null;
  }

  /** etcd calls made so far (unary calls and stream opens): a cached lookup adds none. */
  get etcdCalls(): number {
    return this.rpc.calls;
  }

  /** Counters and gauges for /metrics (no labels beyond these names). */
  metrics(): {
    etcdCalls: number;
    txnsInFlight: number;
    placementsWaiting: number;
    placementsRefused: number;
    watchRelists: number;
    watching: boolean;
    leases: number;
  } {
    return {
      etcdCalls: this.rpc.calls,
      txnsInFlight: this.placer.txnsActive,
      placementsWaiting: this.placementRate?.waiting ?? 0,
      placementsRefused: this.placementRate?.refused ?? 0,
      watchRelists: this.watcher.relists,
      watching: this.watcher.watching,
      leases: this.leases.length,
    };
  }

  /** The watch: established, and how often it listed everything (start, compaction). */
  get watchState(): { watching: boolean; relists: number; revision: bigint } {
    return { watching: this.watcher.watching, relists: this.watcher.relists, revision: this.watcher.revision };
  }

  /** Tests: hold the watch down (a disconnected watcher) or let it resume. */
  holdWatch(on: boolean): void {
    this.watcher.hold(on);
  }

  /** Connects, revokes the leases a previous run left (leaseStateFile), lists the directory and starts watching. */
  start(): Promise<void> {
    this.starting ??= (async () => {
      if (this.options.leaseStateFile) await this.revokeLeftovers();
      await this.watcher.start();
      this.loadTimer = setInterval(() => {
        this.publishIfDirty();
        this.pruneEmptyLeases();
      }, this.options.loadPublishIntervalMs);
      this.loadTimer.unref();
      this.started = true;
    })().catch((err: unknown) => {
      this.starting = null; // etcd was away: the caller may try again
      throw err;
    });
    return this.starting;
  }

  async register(registration: SelfRegistration): Promise<void> {
    if (registration.addresses.length === 0) throw new Error('an instance needs at least one advertised address');
    await this.start();
    this.self = registration;
    this.startedAt = Date.now();
    this.keeper = new LeaseKeeper(this.rpc, this.options.leaseTtlMs);
    this.keeper.on('lost', (lease, reason) => this.onLeaseLost(lease, reason));
    await this.claim();
  }

  publishLoad(load: InstanceLoad): void {
    if (load.sessions === this.load.sessions && load.connections === this.load.connections) return;
    this.load = { ...load };
    this.loadDirty = true;
  }

  async setDraining(): Promise<void> {
    this.draining = true;
    if (this.leases.length > 0) await this.publishRecord();
  }

  async setTlsCertificate(pem: string | undefined): Promise<void> {
    if (!this.self) return;
    const { tlsCertificate: _old, ...rest } = this.self;
    this.self = pem ? { ...rest, tlsCertificate: pem } : rest;
    // Dirty until published: should this put fail (etcd away), the load timer publishes the record again.
    this.loadDirty = true;
    if (this.leases.length > 0) await this.publishRecord();
  }

  async lookup(route: string, options: LookupOptions): Promise<RouteOwner | null> {
    if (this.closed || !this.started) throw this.unavailable(new DirectoryUnavailableError(this.closed ? 'closed' : 'not started', 'closed'));
    // Once registered, this instance answers only while it can prove its own lease: past that (etcd away longer
    // than the TTL, or fenced until it registers anew) an owner in its view may have lost its lease too and the
    // session moved, or a placement made elsewhere may not have reached it: a client should ask another instance.
    if (this.claimedOnce && !this.leaseProvable()) throw this.unavailable(new DirectoryUnavailableError('own lease not provable: the view may be stale', 'lease_lost'));
    const live = this.cache.liveOwner(route);
    if (live) return routeOwnerOf(live.instance);
    try {
      if (options.place) return await this.placeThroughElection(route, options.client);
      // The watch-fed cache is authoritative while the watch is healthy (but may lag a placement made
      // elsewhere an instant ago: `confirm` asks etcd then too); otherwise ask etcd.
      if (this.watcher.watching && !options.confirm) return null;
      return await this.placer.fetch(route);
    } catch (err) {
      if (err instanceof NoInstanceError) throw err;
      throw this.unavailable(err instanceof DirectoryUnavailableError ? err : new DirectoryUnavailableError(message(err)));
    }
  }

  /**
   * A placement, tried once more when etcd gave no answer in time and has
   * other members: losing the leader of three costs one election (1-2 s at
   * etcd's defaults), which a single callTimeoutMs may not cover. The retry
   * is safe: a create that did land is found by the next create-if-absent.
   * No etcd at all (refused) still fails after one callTimeoutMs.
   */
  private async placeThroughElection(route: string, client: string | undefined): Promise<RouteOwner> {
    try {
      return await this.placer.place(route, client);
    } catch (err) {
      if (!(err instanceof DirectoryUnavailableError) || err.kind !== 'deadline' || this.options.endpoints.length < 2 || this.closed) throw err;
      return await this.placer.place(route, client);
    }
  }

  waitForChange(route: string, seen: string | null, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!this.holding) return Promise.resolve(false);
    return this.waiters.wait(route, seen, ms, signal);
  }

  stopHoldingLookups(): void {
    this.holding = false;
    this.waiters.wakeEveryone();
  }

  /**
   * A party (or a gateway's call) could not reach `owner`: its leases go now
   * if it refuses connections and has missed its keepalives
   * (directory.revokeRefusingOwners; refusing-owners.ts says how).
   */
  ownerUnreachable(owner: RouteOwner): void {
    if (this.options.revokeRefusingOwners) this.refusingOwners.report(owner);
  }

  reRegisteredAt(id: string): number | undefined {
    return this.knownInstances.get(id) ?? undefined;
  }

  private noteRegistration(id: string): void {
    const known = this.knownInstances.has(id);
    this.knownInstances.delete(id);
    this.knownInstances.set(id, known && this.started ? performance.now() : null);
    if (this.knownInstances.size > MAX_KNOWN_INSTANCES) this.knownInstances.delete(this.knownInstances.keys().next().value as string);
  }

  /** Lookups held now (waitForChange), for /metrics. */
  get lookupsWaiting(): number {
    return this.waiters.waiting;
  }

  /** Reports a failed lookup (metric by cause, debug line with the reason) and hands the error back to throw. */
  private unavailable(err: DirectoryUnavailableError): DirectoryUnavailableError {
    this.onUnavailable?.(err);
    return err;
  }

  servesHere(route: string): boolean {
    const mapping = this.cache.sessions.get(route);
    if (!mapping || this.self === null || this.fenced || mapping.id !== this.self.id) return false;
    if (!this.leases.includes(mapping.lease)) return false;
    return this.keeper !== null && this.keeper.provable(leaseDecimal(mapping.lease));
  }

  async release(routes: readonly string[]): Promise<number> {
    const me = this.selfId;
    if (me === null) return 0;
    const ours: { key: string; modRevision: bigint }[] = [];
    for (const route of routes) {
      const mapping = this.cache.sessions.get(route);
      if (mapping?.id === me) ours.push({ key: sessionKey(this.layout, route), modRevision: mapping.modRevision });
    }
    let released = 0;
    for (let i = 0; i < ours.length; i += MAX_TXN_OPS) released += await this.releaseBatch(ours.slice(i, i + MAX_TXN_OPS));
    return released;
  }

  /**
   * Deletes the mappings of `batch` that are still the ones our cache holds
   * (same mod revision): our view may lag (a fence, a slow watch), and a
   * route placed anew on another instance meanwhile is that one's to keep.
   * If one changed, the others go one by one.
   */
  private async releaseBatch(batch: readonly { key: string; modRevision: bigint }[]): Promise<number> {
    const res = await this.rpc.call('release', (o, c) =>
      c.kv.txn(
        {
          compare: batch.map(({ key, modRevision }) => ({ key: Buffer.from(key), target: 'Mod' as const, result: 'Equal' as const, mod_revision: modRevision.toString() })),
          success: batch.map(({ key }) => ({ request_delete_range: { key: Buffer.from(key) } })),
        },
        o,
      ),
    );
    if (!res.succeeded) {
      if (batch.length === 1) return 0;
      let released = 0;
      for (const one of batch) released += await this.releaseBatch([one]);
      return released;
    }
    // Our view first-hand, before the watch echoes it: a Hello for a released route is placed anew, not admitted here.
    const revision = BigInt(res.header.revision);
    for (const { key } of batch) this.cache.delete(key, revision);
    return batch.length;
  }

  instances(): InstanceRecord[] {
    return [...this.cache.instances.values()].map((i) => ({
      id: i.id,
      role: i.role,
      address: i.address,
      addresses: [...i.addresses],
      load: { ...i.load },
      draining: i.draining,
      version: i.version,
      startedAt: i.startedAt,
      ...(i.tlsCertificate ? { tlsCertificate: i.tlsCertificate } : {}),
    }));
  }

  health(): DirectoryHealth {
    const registered = this.self !== null;
    return {
      ok: !this.closed && this.started && this.leaseProvable() && (registered || this.watcher.watching),
      detail: {
        backend: 'etcd',
        endpoints: this.options.endpoints,
        leaseAgeMs: this.keeper?.proofAgeMs() ?? null,
        leases: this.leases.length,
        watching: this.watcher.watching,
        lastError: this.rpc.lastError || null,
      },
    };
  }

  on<E extends keyof DirectoryEvents>(event: E, listener: DirectoryEvents[E]): void {
    this.events.on(event, listener);
  }

  async close(options: { revoke?: boolean } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stopHoldingLookups();
    if (this.reclaimTimer) clearTimeout(this.reclaimTimer);
    if (this.loadTimer) clearInterval(this.loadTimer);
    this.refusingOwners.close();
    this.keeper?.stop();
    this.watcher.stop();
    if (options.revoke && this.keeper) {
      const keeper = this.keeper;
      await Promise.allSettled(this.leases.map((l) => keeper.drop(leaseDecimal(l), true)));
      if (this.options.leaseStateFile) writeLeaseState(this.options.leaseStateFile, []);
    }
    this.rpc.close();
  }

  /** Grants a lease, publishes our record under it and makes it the lease new mappings bind to. */
  private async claim(): Promise<void> {
    const keeper = this.keeper;
    if (!keeper || this.closed) return;
    const lease = leaseHex(await keeper.grant());
    this.leases = [lease];
    try {
      await this.publishRecord();
    } catch (err) {
      // Not registered after all: do not keep (or leak) a lease nothing uses.
      this.leases = [];
      keeper.drop(leaseDecimal(lease), true).catch(() => undefined);
      throw err;
    }
    this.saveLeaseState();
    this.fenced = false;
    this.claimedOnce = true;
    this.revokeAbandoned();
    this.options.logger.info({ lease }, 'directory: registered');
    this.events.emit('registered');
  }

  private record(): InstanceValue {
    const self = this.self as SelfRegistration;
    return {
      id: self.id,
      role: self.role ?? 'relay',
      address: self.addresses[0],
      addresses: [...self.addresses],
      load: { ...this.load },
      draining: this.draining,
      version: self.version,
      startedAt: this.startedAt,
      sessionLease: this.currentSessionLease() ?? '0',
      ...(self.tlsCertificate ? { tlsCertificate: self.tlsCertificate } : {}),
    };
  }

  private currentSessionLease(): string | undefined {
    return this.leases[this.leases.length - 1];
  }

  private async publishRecord(): Promise<void> {
    const self = this.self;
    if (!self || this.leases.length === 0) return;
    const value = encodeInstance(this.record());
    const key = instanceKey(this.layout, self.id);
    const res = await this.rpc.call('put instance', (o, c) =>
      c.kv.put({ key: Buffer.from(key), value: Buffer.from(value), lease: leaseDecimal(this.leases[0]) }, o),
    );
    // Our own record first-hand: placements here may land on us before the watch echoes it.
    this.cache.put(key, value, BigInt(res.header.revision));
    this.loadDirty = false;
  }

  private publishIfDirty(): void {
    if (!this.loadDirty || this.fenced || this.closed) return;
    this.publishRecord().catch((err: unknown) => this.options.logger.debug({ err: message(err) }, 'directory: load not published'));
  }

  /** Opens a new session lease before the current one holds too many mappings (etcd slows down past ~1,000 a lease). */
  private maybeRotate(): void {
    const current = this.currentSessionLease();
    const keeper = this.keeper;
    if (!current || !keeper || this.rotating || this.fenced) return;
    if (this.cache.mappingsOnLease(current) < this.options.keysPerLease * ROTATE_AT_FRACTION) return;
    this.rotating = true;
    const generation = this.leases[0];
    (async () => {
      const lease = leaseHex(await keeper.grant());
      if (this.closed || this.fenced || this.leases[0] !== generation) {
        // Fenced (or closed) while granting: the lease belongs to no registration; the next claim grants its own.
        await keeper.drop(leaseDecimal(lease), true);
        return;
      }
      this.leases.push(lease);
      this.saveLeaseState();
      await this.publishRecord();
    })()
      .catch((err: unknown) => this.options.logger.warn({ err: message(err) }, 'directory: session lease rotation failed'))
      .finally(() => {
        this.rotating = false;
      });
  }

  /**
   * Revokes the session leases left holding no mapping (their sessions
   * released: idle, drained), all but the first (our record's) and the
   * current one (new mappings bind to it): a long-lived relay keeps as many
   * leases as its live sessions need, not one per keysPerLease ever placed.
   */
  private pruneEmptyLeases(): void {
    const keeper = this.keeper;
    if (!keeper || this.fenced || this.closed || this.rotating || this.leases.length <= 2) return;
    const empty = this.leases.slice(1, -1).filter((l) => this.cache.mappingsOnLease(l) === 0);
    if (empty.length === 0) return;
    this.leases = this.leases.filter((l) => !empty.includes(l));
    this.saveLeaseState();
    for (const l of empty) keeper.drop(leaseDecimal(l), true).catch(() => this.abandoned.push(l));
    this.options.logger.debug({ leases: empty.length }, 'directory: revoked session leases left with no mapping');
  }

  /** Whether this instance can prove its lease (and so that its view of etcd is current); an unregistered one claims nothing. */
  private leaseProvable(): boolean {
    if (this.self === null) return true;
    return !this.fenced && this.keeper !== null && this.keeper.allProvable();
  }

  /** Any lost lease fences the whole instance: end every session, then register anew by ourselves. */
  private onLeaseLost(lease: string, reason: string): void {
    if (this.closed || this.fenced) return;
    this.fenced = true;
    this.options.logger.warn({ lease: leaseHex(lease), reason }, 'directory: lease lost; fencing every session');
    const old = this.leases;
    this.leases = [];
    const keeper = this.keeper;
    this.events.emit('fenceLost');
    // Held lookups are answered now ("directory unavailable" until we register anew), not at the end of their
    // wait: their clients ask another instance meanwhile.
    this.waiters.wakeEveryone();
    // The old leases may still live in etcd (we only could not prove it): revoke them so their mappings go now.
    if (keeper) {
      for (const l of old) {
        keeper.drop(leaseDecimal(l), true).catch(() => {
          this.abandoned.push(l);
        });
      }
    }
    this.scheduleReclaim(RECLAIM_MIN_MS);
  }

  private revokeAbandoned(): void {
    const leases = this.abandoned;
    this.abandoned = [];
    for (const l of leases) {
      this.rpc.call('lease revoke', (o, c) => c.leaseClient.leaseRevoke({ ID: leaseDecimal(l) }, o)).catch(() => undefined);
    }
  }

  private scheduleReclaim(delayMs: number): void {
    if (this.closed) return;
    this.reclaimTimer = setTimeout(() => {
      this.reclaimTimer = null;
      this.claim().catch((err: unknown) => {
        this.options.logger.debug({ err: message(err) }, 'directory: registration failed; retrying');
        this.scheduleReclaim(Math.min(RECLAIM_MAX_MS, delayMs * 2));
      });
    }, delayMs * (0.5 + Math.random()));
  }

  private saveLeaseState(): void {
    if (!this.options.leaseStateFile) return;
    try {
      writeLeaseState(this.options.leaseStateFile, this.leases);
    } catch (err) {
      this.options.logger.warn({ err: message(err) }, 'directory: lease state file not written');
    }
  }

  private async revokeLeftovers(): Promise<void> {
    const old = readLeaseState(this.options.leaseStateFile);
    await Promise.all(
      old.map((lease) =>
        this.rpc.call('lease revoke', (o, c) => c.leaseClient.leaseRevoke({ ID: leaseDecimal(lease) }, o)).catch((err: unknown) => {
          if (err instanceof DirectoryUnavailableError) throw err;
          // Already expired: nothing left to revoke.
        }),
      ),
    );
    if (old.length > 0) this.options.logger.info({ leases: old.length }, 'directory: revoked the leases of the previous run');
  }
}
