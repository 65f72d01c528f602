/**
 * Places a session: one create-if-absent transaction binds the route to the
 * chosen owner's published session lease, or answers with the mapping that
 * won the race, so any number of concurrent placements from any members
 * converge on one owner. A mapping whose owner is gone (its instance record
 * expired) counts as absent and is replaced comparing its mod revision.
 * Concurrent placements of one route in this process share one promise;
 * transactions in flight are capped (TxnGate), creates queued behind them
 * share transactions (CreateBatcher), and placements per second are capped
 * (PlacementRate): a placement that finds the mapping in the cache costs no turn.
 */
import { EtcdLeaseInvalidError, type IKeyValue } from 'etcd3';
import type { PlacementPolicy } from '../placement.js';
import type { PlacementRate } from '../placement-rate.js';
import { choosePlacement } from '../placement.js';
import type { RouteOwner } from '../directory.js';
import { DirectoryUnavailableError, NoInstanceError, routeOwnerOf } from '../directory.js';
import type { DirectoryCache } from './directory-cache.js';
import type { EtcdRpc } from './etcd-rpc.js';
import type { InstanceValue, KeyLayout } from './keys.js';
import { encodeSession, instanceKey, leaseDecimal, parseInstance, parseSession, sessionKey } from './keys.js';
import { CreateBatcher, type CreateOutcome } from './create-batcher.js';
import { TxnGate } from './txn-gate.js';
import { ReadBatcher } from './read-batcher.js';

/** Races lost to a dying owner or a just-expired lease; a healthy cluster converges in one or two. */
const MAX_PLACE_ATTEMPTS = 4;
/** Read transactions (ReadBatcher) in flight per process: each carries up to 128 keys. */
const READS_IN_FLIGHT = 8;
/** Share of the call deadline a placement may wait for a full lease to rotate, or for a relay to (re-)register. */
const FULL_WAIT_SHARE = 0.5;

export interface PlacerOptions {
  policy: PlacementPolicy;
  maxTxnsInFlight: number;
  callTimeoutMs: number;
  keysPerLease: number;
  /** directory.maxPlacementsPerSecond; null: uncapped. */
  rate: PlacementRate | null;
}

export class Placer {
  private readonly gate: TxnGate;
  readonly creates: CreateBatcher;
  private readonly reads: ReadBatcher;
  private readonly inFlight = new Map<string, Promise<RouteOwner>>();
  /** Reads of one route from etcd (the watch is down, or a confirmed lookup) in flight: concurrent lookups share one. */
  private readonly fetching = new Map<string, Promise<RouteOwner | null>>();
  /** Placements this process has in flight per instance (sent, not answered: not yet in the cache). */
  private readonly placing = new Map<string, number>();
  private recordWaiters: (() => void)[] = [];

  constructor(
    private readonly rpc: EtcdRpc,
    private readonly layout: KeyLayout,
    private readonly cache: DirectoryCache,
    private readonly options: PlacerOptions,
  ) {
    this.gate = new TxnGate(options.maxTxnsInFlight);
    this.creates = new CreateBatcher(rpc, this.gate, options.callTimeoutMs);
    this.reads = new ReadBatcher(rpc, READS_IN_FLIGHT, options.callTimeoutMs);
  }

  /** An instance published its record (load, or a rotated lease): placements waiting for one look again. */
  recordPublished(): void {
    const waiters = this.recordWaiters;
    this.recordWaiters = [];
    for (const wake of waiters) wake();
  }

  /** Resolves at the next instance record change (a rotated lease), or after `ms`. */
  private recordChange(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(resolve, ms);
      this.recordWaiters.push(() => {
        clearTimeout(timer);
        resolve();
      });
    });
  }

  get txnsActive(): number {
    return this.gate.active;
  }

  /** Places `route` for `client` (its per-address limit key; metered for directory.maxPlacementShare); one joining a placement in flight costs nothing. */
  place(route: string, client?: string): Promise<RouteOwner> {
    const pending = this.inFlight.get(route);
    if (pending) return pending;
    const promise = this.placeOnce(route, client).finally(() => this.inFlight.delete(route));
    this.inFlight.set(route, promise);
    return promise;
  }

  /** The mapping of `route` read from etcd (not the cache), noted into the cache; concurrent reads of one route share one. */
  fetch(route: string): Promise<RouteOwner | null> {
    const pending = this.fetching.get(route);
    if (pending) return pending;
    const promise = this.fetchOnce(route).finally(() => this.fetching.delete(route));
    this.fetching.set(route, promise);
    return promise;
  }

  private async fetchOnce(route: string): Promise<RouteOwner | null> {
    const kv = await this.reads.read(Buffer.from(sessionKey(this.layout, route)));
    if (!kv) return null;
    return this.ownerOf(kv);
  }

  private async placeOnce(route: string, client: string | undefined): Promise<RouteOwner> {
    const key = Buffer.from(sessionKey(this.layout, route));
    // Instance id -> a session lease of it that etcd refused: not chosen again while it publishes that lease.
    const refused = new Map<string, string>();
    // Every candidate's lease full: wait for a rotation this long at most, then overfill (a soft cap).
    // No candidate: wait as long for one to appear (a relay restarting revokes its old record and its
    // leases just before it registers anew), then answer "no relay".
    const fullWaitUntil = Date.now() + this.options.callTimeoutMs * FULL_WAIT_SHARE;
    let turnTaken = false;
    for (let attempt = 0; attempt < MAX_PLACE_ATTEMPTS; attempt++) {
      const live = this.cache.liveOwner(route);
      if (live) return routeOwnerOf(live.instance);
      const stale = this.cache.sessions.get(route);
      if (stale) {
        const owner = await this.liveInstance(stale.id);
        if (owner) return routeOwnerOf(owner);
      }
      if (!turnTaken && this.options.rate) {
        // One turn per placement, not per attempt: a lost race is the same storm's work.
        await this.options.rate.acquire(this.options.callTimeoutMs, client);
        turnTaken = true;
        // While we waited, another member may have placed it (the watch told the cache).
        const placed = this.cache.liveOwner(route);
        if (placed) return routeOwnerOf(placed.instance);
      }
      const wait = fullWaitUntil - Date.now();
      const target = this.choose(refused, wait > 0);
      if (target === 'full') {
        await this.recordChange(wait);
        attempt--;
        continue;
      }
      if (!target) {
        if (wait <= 0) throw new NoInstanceError();
        await this.recordChange(wait);
        attempt--;
        continue;
      }
      const value = encodeSession({ id: target.id, lease: target.sessionLease });
      const request = { key, value: Buffer.from(value), lease: leaseDecimal(target.sessionLease) };
      // Counted now, not once etcd answers: a burst of concurrent placements must see each other,
      // or every one of them picks against the same published loads and they herd.
      this.countPlacement(target.id, 1);
      let res: CreateOutcome;
      try {
        res = stale ? await this.replace(request, stale.modRevision) : await this.creates.create(request);
      } catch (err) {
        // The owner's published lease just expired, was revoked (a restart) or rotated away: choose again,
        // that instance too once it publishes another lease.
        if (err instanceof EtcdLeaseInvalidError) {
          refused.set(target.id, target.sessionLease);
          continue;
        }
        throw err;
      } finally {
        // Answered: a created mapping is in the cache from here on (below), and counts there.
        this.countPlacement(target.id, -1);
      }
      if (res.created) {
        this.cache.put(key.toString(), value, res.revision);
        return routeOwnerOf(target);
      }
      const kv = res.existing;
      if (!kv) {
        // Absent at this revision (its lease expired or was revoked) while our view still held it: forget
        // it now, or every further attempt would compare against the same stale revision and fail the same way.
        this.cache.delete(key.toString(), res.revision);
        continue;
      }
      const owner = await this.ownerOf(kv);
      if (owner) return owner;
      // A dead owner's mapping (not yet expired, or our view is behind): the next round replaces it.
    }
    throw new DirectoryUnavailableError('placement did not converge', 'not_converged');
  }

  /** Replaces a mapping whose owner is gone, if it is still the one at `modRevision`: a transaction of its own. */
  private async replace(request: { key: Buffer; value: Buffer; lease: string }, modRevision: bigint): Promise<CreateOutcome> {
    const res = await this.gate.run(this.options.callTimeoutMs, () =>
      this.rpc.call('txn', (o, c) =>
        c.kv.txn(
          {
            compare: [{ key: request.key, target: 'Mod', result: 'Equal', mod_revision: modRevision.toString() }],
            success: [{ request_put: { key: request.key, value: request.value, lease: request.lease } }],
            failure: [{ request_range: { key: request.key } }],
          },
          o,
        ),
      ),
    );
    return { created: res.succeeded, revision: BigInt(res.header.revision), existing: res.succeeded ? null : (res.responses[0]?.response_range?.kvs[0] ?? null) };
  }

  /** Notes a mapping read from etcd into the cache; its owner if that instance is live. */
  private async ownerOf(kv: IKeyValue): Promise<RouteOwner | null> {
    const key = kv.key.toString();
    const modRevision = BigInt(kv.mod_revision);
    this.cache.put(key, kv.value.toString(), modRevision);
    const mapping = parseSession(kv.value.toString());
    if (!mapping) return null;
    const instance = await this.liveInstance(mapping.id);
    return instance ? routeOwnerOf(instance) : null;
  }

  /** The instance record of `id`: from the cache, else from etcd (our view may lag a just-registered instance). */
  private async liveInstance(id: string): Promise<InstanceValue | null> {
    const cached = this.cache.instances.get(id);
    if (cached) return cached;
    const res = await this.rpc.call('range', (o, c) => c.kv.range({ key: Buffer.from(instanceKey(this.layout, id)) }, o));
    const kv = res.kvs[0];
    if (!kv || !parseInstance(kv.value.toString())) return null;
    this.cache.put(kv.key.toString(), kv.value.toString(), BigInt(kv.mod_revision));
    return this.cache.instances.get(id) ?? null;
  }

  /** Our placements on `id` in flight. */
  private countPlacement(id: string, delta: 1 | -1): void {
    const n = (this.placing.get(id) ?? 0) + delta;
    if (n > 0) this.placing.set(id, n);
    else this.placing.delete(id);
  }

  private choose(refused: ReadonlyMap<string, string>, waitIfFull: boolean): InstanceValue | null | 'full' {
    const candidates: InstanceValue[] = [];
    const full: InstanceValue[] = [];
    for (const instance of this.cache.instances.values()) {
      if (refused.get(instance.id) === instance.sessionLease) continue;
      // An instance whose published lease is full is rotating it: others first (a soft cap, see keysPerLease).
      if (this.cache.mappingsOnLease(instance.sessionLease) >= this.options.keysPerLease) {
        full.push(instance);
        continue;
      }
      // Its load as placement sees it: every mapping naming it, which every placer's placements reach through
      // the watch within moments (its published session count leaves out placements nobody attached to yet,
      // and is only as fresh as its last publish), plus ours still in flight; never below what it published.
      const sessions = Math.max(instance.load.sessions, this.cache.mappingsOf(instance.id)) + (this.placing.get(instance.id) ?? 0);
      candidates.push(sessions === instance.load.sessions ? instance : { ...instance, load: { ...instance.load, sessions } });
    }
    if (candidates.length === 0 && full.length > 0 && waitIfFull) return 'full';
    const chosen = choosePlacement(candidates.length > 0 ? candidates : full, this.options.policy);
    return chosen as InstanceValue | null;
  }
}
