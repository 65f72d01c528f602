/**
 * The directory: which relay instance owns each session (by route), and the
 * registry of live instances. One interface, two backends: in-memory (one
 * process: `hashmail serve`) and etcd (a cluster). Relays, lookups and the
 * gateway depend on this interface only.
 */

/** What an instance publishes about its load; placement reads it. */
export interface InstanceLoad {
  sessions: number;
  connections: number;
}

/**
 * What an instance is: a relay owns sessions and is a placement target; a
 * gateway carries legacy calls to relays and never owns a session.
 */
export type InstanceRole = 'relay' | 'gateway';

/** One live instance as the directory knows it. */
export interface InstanceRecord {
  id: string;
  role: InstanceRole;
  /** `HOST:PORT` clients dial (the first of `addresses`). */
  address: string;
  /** Every advertised `HOST:PORT`. */
  addresses: string[];
  load: InstanceLoad;
  /** A draining instance takes no new sessions. */
  draining: boolean;
  /** hashmail version the instance runs. */
  version: string;
  /** When the instance registered (ms since the epoch, its own clock). */
  startedAt: number;
  /**
   * The PEM certificate its public port serves (absent in plain text): a
   * gateway with no hop.caFile pins a relay's self-signed one.
   */
  tlsCertificate?: string;
}

/** Who serves a route. */
export interface RouteOwner {
  id: string;
  address: string;
  /** The owner's registration (InstanceRecord.startedAt): tells one run of an id from the next. */
  startedAt: number;
}

/** The owner answer for a live instance. */
export function routeOwnerOf(instance: Pick<InstanceRecord, 'id' | 'address' | 'startedAt'>): RouteOwner {
  return { id: instance.id, address: instance.address, startedAt: instance.startedAt };
}

/** The instance this process registers as (relays and `serve`). */
export interface SelfRegistration {
  id: string;
  /** Default 'relay'. */
  role?: InstanceRole;
  addresses: string[];
  version: string;
  /** The PEM certificate its public port serves (InstanceRecord.tlsCertificate); absent in plain text. */
  tlsCertificate?: string;
}

export interface LookupOptions {
  /** Place the session if no live instance owns it (creating operations only). */
  place: boolean;
  /**
   * A session this instance knows nothing of is read from the backend before
   * "not placed" is answered. For callers that were sent here by another
   * instance's view (a gateway's hop call): a placement made there an
   * instant ago may not have reached this instance's watch yet.
   */
  confirm?: boolean;
  /**
   * The asker's per-address limit key (the client whose call would place
   * the session): a placement counts against its directory.maxPlacementShare.
   * Absent: the process's own placement, not metered per address.
   */
  client?: string;
}

export interface DirectoryHealth {
  /** The backend answers and this instance's registration (if any) is live. */
  ok: boolean;
  /** Backend-specific facts for `hashmail status` and /readyz (no secrets). */
  detail: Record<string, unknown>;
}

export interface DirectoryEvents {
  /**
   * This instance can no longer prove it owns its sessions (its lease is lost
   * or about to be). Every session it serves must end at once with
   * UNAVAILABLE; the directory registers anew by itself.
   */
  fenceLost(): void;
  /** A mapping that named this instance is gone or names another instance now. */
  routeLost(route: string): void;
  /** A mapping now names this instance (a placement here, by any instance): its creator is about to attach. */
  routeGained(route: string): void;
  /** Registered (again) and able to own sessions. */
  registered(): void;
  /**
   * An instance's registration vanished (lease expired or revoked): whatever
   * was carried to it is gone, and its sessions are placed anew on lookup.
   */
  instanceGone(id: string): void;
}

export interface Directory {
  readonly backend: 'memory' | 'etcd';
  /** Joins as an instance that owns sessions; resolves once registered. */
  register(self: SelfRegistration): Promise<void>;
  /** Publishes this instance's load (the backend may coalesce updates). */
  publishLoad(load: InstanceLoad): void;
  /** No new placements land here from now on. */
  setDraining(): Promise<void>;
  /** Publishes the certificate the public port serves from now on (SIGHUP reload). */
  setTlsCertificate(pem: string | undefined): Promise<void>;
  /**
   * The owner of `route`; with `place`, places it on a live, non-draining
   * instance if nobody owns it. Resolves null when not placed and `place` is
   * false. Rejects with DirectoryUnavailableError when the backend cannot
   * answer (a cached answer is still returned while the backend is away).
   */
  lookup(route: string, options: LookupOptions): Promise<RouteOwner | null>;
  /**
   * Resolves true once a lookup of `route` may answer other than `seen` (the
   * owner the caller could not use, or null: "not placed"): the mapping
   * changed, or that owner's registration went or turned draining; also after
   * `ms` or when `signal` aborts. Resolves false at once, holding nothing,
   * where nothing can change the answer (one process) or when
   * directory.maxWaitingLookups are held already.
   */
  waitForChange(route: string, seen: string | null, ms: number, signal?: AbortSignal): Promise<boolean>;
  /** Lookups held in waitForChange now. */
  readonly lookupsWaiting: number;
  /**
   * When this view last saw instance `id` register again under an id it
   * already knew (a restart: its old registration went or was replaced), on
   * the process's monotonic clock (performance.now()); undefined if never.
   * A held lookup does not hold against an owner that restarted after the
   * party could have failed to reach it.
   */
  reRegisteredAt(id: string): number | undefined;
  /** Answers every held lookup now and holds no more (the process is stopping: their connections must close). */
  stopHoldingLookups(): void;
  /**
   * A party could not reach `owner`, which this view holds live
   * (directory.revokeRefusingOwners): the backend may check whether anything
   * listens at the owner's address and, if the connection is refused and
   * the owner has let its registration lapse (missed keepalives), end it now,
   * so its sessions move at the next lookup. Never throws; the memory backend
   * has no other owner.
   */
  ownerUnreachable?(owner: RouteOwner): void;
  /** Called with the id of an owner whose leases ownerUnreachable revoked, for the metric; set by the composition. */
  onOwnerRevoked?: ((id: string) => void) | null;
  /**
   * Fencing, synchronous: true only while the mapping of `route` names this
   * instance under a registration it can prove is live right now.
   */
  servesHere(route: string): boolean;
  /**
   * Drops this instance's mappings of `routes` (drain, idle mappings), so the
   * next lookup places them anew; resolves with how many it deleted.
   */
  release(routes: readonly string[]): Promise<number>;
  /** Live instances, from the local view. */
  instances(): InstanceRecord[];
  /** The id this process registered as, or null (a lookup-only member). */
  readonly selfId: string | null;
  health(): DirectoryHealth;
  on<E extends keyof DirectoryEvents>(event: E, listener: DirectoryEvents[E]): void;
  /**
   * Called with the config key of a limit that refused a placement
   * (directory.maxPlacementsPerSecond, directory.maxPlacementShare) and the
   * client it was for, for the limit metric and the refusal log; set by the
   * composition once they exist. Backends without limits ignore it.
   */
  onLimit?: ((configKey: string, client: string | undefined) => void) | null;
  /**
   * Called for every lookup that fails with DirectoryUnavailableError, for
   * hashmail_directory_unavailable_total{cause} and a debug line with the
   * reason; set by the composition. The memory backend never calls it.
   */
  onUnavailable?: ((err: DirectoryUnavailableError) => void) | null;
  /** Stops keeping the registration alive; with `revoke`, removes it (and its mappings) now. */
  close(options?: { revoke?: boolean }): Promise<void>;
}

/**
 * Why the directory could not answer (label values of
 * hashmail_directory_unavailable_total{cause}, a fixed set): `etcd` every
 * try of a call was refused (no etcd process reached) until its deadline;
 * `deadline` some member was reached but gave no answer in time (slow, or
 * electing a leader); `txn_queue` a placement
 * waited past directory.callTimeoutMs for one of directory.maxTxnsInFlight;
 * `rate_cap` directory.maxPlacementsPerSecond; `share_cap` the asker's
 * address over its directory.maxPlacementShare while placements queue;
 * `not_converged` a placement kept losing races; `lease_lost` this
 * registered instance cannot prove its own lease (etcd away past the TTL, or
 * fenced until it registers anew), so its view may be stale; `closed` the
 * process is stopping or not started.
 */
export type UnavailableCause = 'etcd' | 'deadline' | 'txn_queue' | 'rate_cap' | 'share_cap' | 'not_converged' | 'lease_lost' | 'closed';

/** The backend cannot answer now: placements fail fast with UNAVAILABLE "directory unavailable". */
export class DirectoryUnavailableError extends Error {
  constructor(
    readonly reason: string,
    readonly kind: UnavailableCause = 'etcd',
  ) {
    super('directory unavailable');
    this.name = 'DirectoryUnavailableError';
  }
}

/** No live, non-draining instance can take a new session. */
export class NoInstanceError extends Error {
  constructor() {
    super('no relay available');
    this.name = 'NoInstanceError';
  }
}
