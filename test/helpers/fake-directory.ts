/**
 * An in-memory Directory whose answers a test sets: who owns each route,
 * whether the backend is reachable, and the events (fenceLost, routeLost)
 * it emits. Unit tests of the relay's routing run against it.
 */
import { EventEmitter } from 'node:events';
import { ChangeWaiters } from '../../src/directory/change-waiters.js';
import {
  DirectoryUnavailableError,
  NoInstanceError,
  type Directory,
  type DirectoryEvents,
  type DirectoryHealth,
  type InstanceLoad,
  type InstanceRecord,
  type LookupOptions,
  type RouteOwner,
  type SelfRegistration,
} from '../../src/directory/directory.js';

export class FakeDirectory implements Directory {
  readonly backend = 'memory' as const;
  readonly owners = new Map<string, RouteOwner>();
  self: SelfRegistration | null = null;
  /** Lookups throw DirectoryUnavailableError. */
  unavailable = false;
  /** Placements throw NoInstanceError. */
  noInstance = false;
  /** Where placements go; null: this instance. */
  placeOn: RouteOwner | null = null;
  draining = false;
  fenced = false;
  readonly released: string[] = [];
  readonly loads: InstanceLoad[] = [];
  lookups = 0;
  closedWith: { revoke?: boolean } | null = null;
  private readonly events = new EventEmitter();

  get selfId(): string | null {
    return this.self?.id ?? null;
  }

  get selfOwner(): RouteOwner {
    if (!this.self) throw new Error('not registered');
    return { id: this.self.id, address: this.self.addresses[0], startedAt: this.selfStartedAt };
  }

  /** RouteOwner.startedAt of this instance: when it registered. */
  private selfStartedAt = 0;

  async register(self: SelfRegistration): Promise<void> {
    this.self = self;
    this.selfStartedAt = Date.now();
    this.events.emit('registered');
  }

  publishLoad(load: InstanceLoad): void {
    this.loads.push(load);
  }

  async setDraining(): Promise<void> {
    this.draining = true;
  }

  async lookup(route: string, options: LookupOptions): Promise<RouteOwner | null> {
    this.lookups++;
    if (this.unavailable) throw new DirectoryUnavailableError('test');
    const owner = this.owners.get(route);
    if (owner) return owner;
    if (!options.place) return null;
    if (this.noInstance) throw new NoInstanceError();
    const placed = this.placeOn ?? this.selfOwner;
    this.owners.set(route, placed);
    return placed;
  }

  /** Held lookups; a test wakes them with moveRoute. */
  readonly waiters = new ChangeWaiters(1000);

  private holding = true;

  stopHoldingLookups(): void {
    this.holding = false;
    this.waiters.wakeEveryone();
  }

  get lookupsWaiting(): number {
    return this.waiters.waiting;
  }

  waitForChange(route: string, seen: string | null, ms: number, signal?: AbortSignal): Promise<boolean> {
    if (!this.holding) return Promise.resolve(false);
    return this.waiters.wait(route, seen, ms, signal);
  }

  /** Instance id -> when it registered again (performance.now()); unset: never. */
  readonly reRegistrations = new Map<string, number>();

  reRegisteredAt(id: string): number | undefined {
    return this.reRegistrations.get(id);
  }

  /** Instance `id` registers again (restarted under the same id, registration `startedAt`), as a watch would report. */
  reRegister(id: string, startedAt = Date.now()): void {
    this.reRegistrations.set(id, performance.now());
    for (const [route, owner] of this.owners) if (owner.id === id) this.owners.set(route, { ...owner, startedAt });
    this.waiters.ownerChanged(id);
  }

  /** The route's owner changes (null: unplaced), as a watch would report. */
  moveRoute(route: string, owner: RouteOwner | null): void {
    if (owner) this.owners.set(route, owner);
    else this.owners.delete(route);
    this.waiters.routeChanged(route);
  }

  servesHere(route: string): boolean {
    return !this.fenced && this.self !== null && this.owners.get(route)?.id === this.self.id;
  }

  async setTlsCertificate(_pem: string | undefined): Promise<void> {
    // Nothing reads it here.
  }

  async release(routes: readonly string[]): Promise<number> {
    let deleted = 0;
    for (const route of routes) {
      this.released.push(route);
      if (!this.servesHere(route)) continue;
      this.owners.delete(route);
      deleted++;
    }
    return deleted;
  }

  instances(): InstanceRecord[] {
    return [];
  }

  health(): DirectoryHealth {
    return { ok: !this.fenced && !this.unavailable, detail: {} };
  }

  on<E extends keyof DirectoryEvents>(event: E, listener: DirectoryEvents[E]): void {
    this.events.on(event, listener);
  }

  /** Emits a directory event as a backend would. */
  emit(event: 'fenceLost' | 'registered'): void;
  emit(event: 'routeLost', route: string): void;
  emit(event: keyof DirectoryEvents, route?: string): void {
    this.events.emit(event, route);
  }

  async close(options: { revoke?: boolean } = {}): Promise<void> {
    this.closedWith = options;
  }
}
