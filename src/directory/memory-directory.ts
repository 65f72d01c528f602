/**
 * The in-memory directory: one process is the whole cluster (`hashmail
 * serve`). Every route is owned by the one registered instance, so lookups
 * answer at once and fencing always holds; nothing is ever lost or fenced.
 */
import type {
  Directory,
  DirectoryEvents,
  DirectoryHealth,
  InstanceLoad,
  InstanceRecord,
  LookupOptions,
  RouteOwner,
  SelfRegistration,
} from './directory.js';
import { DirectoryUnavailableError, NoInstanceError, routeOwnerOf } from './directory.js';

export class MemoryDirectory implements Directory {
  readonly backend = 'memory' as const;
  private self: InstanceRecord | null = null;
  private closed = false;

  get selfId(): string | null {
    return this.self?.id ?? null;
  }

  async register(registration: SelfRegistration): Promise<void> {
    if (registration.addresses.length === 0) throw new Error('an instance needs at least one advertised address');
    this.self = {
      id: registration.id,
      role: registration.role ?? 'relay',
      address: registration.addresses[0],
      addresses: [...registration.addresses],
      load: { sessions: 0, connections: 0 },
      draining: false,
      version: registration.version,
      startedAt: Date.now(),
      ...(registration.tlsCertificate ? { tlsCertificate: registration.tlsCertificate } : {}),
    };
  }

  async setTlsCertificate(pem: string | undefined): Promise<void> {
    if (!this.self) return;
    delete this.self.tlsCertificate;
    if (pem) this.self.tlsCertificate = pem;
  }

  publishLoad(load: InstanceLoad): void {
    if (this.self) this.self.load = { ...load };
  }

  async setDraining(): Promise<void> {
    if (this.self) this.self.draining = true;
  }

  async lookup(_route: string, options: LookupOptions): Promise<RouteOwner | null> {
    if (this.closed) throw new DirectoryUnavailableError('closed', 'closed');
    if (!this.self) throw new NoInstanceError();
    // One instance owns every session there is; a draining one still answers
    // for the sessions it has, and there is nowhere else to place new ones.
    void options;
    return routeOwnerOf(this.self);
  }

  readonly lookupsWaiting = 0;

  stopHoldingLookups(): void {
    // Nothing is ever held here.
  }

  reRegisteredAt(): number | undefined {
    // One registration for the life of the process.
    return undefined;
  }

  async waitForChange(): Promise<boolean> {
    // One instance owns every session for its whole life: no answer ever changes.
    return false;
  }

  servesHere(_route: string): boolean {
    return this.self !== null && !this.closed;
  }

  async release(_routes: readonly string[]): Promise<number> {
    // Nothing is mapped: the one instance is the owner of everything.
    return 0;
  }

  instances(): InstanceRecord[] {
    return this.self ? [{ ...this.self, addresses: [...this.self.addresses], load: { ...this.self.load } }] : [];
  }

  health(): DirectoryHealth {
    return { ok: this.self !== null && !this.closed, detail: { backend: 'memory' } };
  }

  on<E extends keyof DirectoryEvents>(_event: E, _listener: DirectoryEvents[E]): void {
    // A single process never loses its fence or a route.
  }

  async close(): Promise<void> {
    this.closed = true;
  }
}
