/**
 * Which v2 sessions this relay serves, and the ending of those it may no
 * longer serve. A Hello is admitted only while the directory's mapping names
 * this relay (fencing); a session another relay owns is answered with that
 * relay's address. The router keeps route -> attached parties so that a lost
 * mapping, a lost lease or a drain ends exactly the streams concerned, with
 * UNAVAILABLE, and the parties look the session up again.
 */
import type { Directory } from '../directory/directory.js';
import { directoryError } from '../directory/route-lookup.js';
import type { Logger } from '../observe/logger.js';
import { HashmailError, servedElsewhere } from '../session/errors.js';

/** A party the router can end (a V2Endpoint). */
export interface RoutedParty {
  /** Ends the party's stream with `err` (the transport sends it as the last frame). */
  end(err: HashmailError): void;
}

export class SessionRouter {
  private readonly parties = new Map<string, Set<RoutedParty>>();
  /**
   * Routes placed here within the last `creatorWaitMs` (route -> when, ms
   * of `now`), oldest first: their creator may not have attached yet.
   * Pruned as routes are added: it holds about one window of placements.
   */
  private readonly gained = new Map<string, number>();
  private draining: { spreadMs: number; random: () => number; pending: Set<Promise<void>> } | null = null;
  private readonly drainScheduled = new Set<string>();

  constructor(
    private readonly directory: Directory,
    private readonly logger: Logger,
    /** v2.creatorWaitMs: how long a fresh placement waits for its creator (awaitsCreator), and an attach for it; 0: never. */
    readonly creatorWaitMs = 0,
    private readonly now: () => number = () => performance.now(),
    /** The release of an idle mapping of `route` in flight (IdleMappings.releasing): admission waits for it. */
    private readonly releasing: (route: string) => Promise<void> | undefined = () => undefined,
  ) {
    if (creatorWaitMs > 0) directory.on('routeGained', (route) => this.noteGained(route));
    // While draining, a lost route is (usually) our own release arriving through the watch first.
    directory.on('routeLost', (route) => this.endRoute(route, new HashmailError(this.draining ? 'RELAY_DRAINING' : 'ROUTE_LOST')));
    directory.on('fenceLost', () => {
      const count = this.partyCount;
      if (count > 0) this.logger.warn({ parties: count }, 'directory lease lost: ending every v2 stream');
      for (const route of [...this.parties.keys()]) this.endRoute(route, new HashmailError('FENCE_LOST'));
    });
  }

  /** v2 parties attached through the router. */
  get partyCount(): number {
    let n = 0;
    for (const set of this.parties.values()) n += set.size;
    return n;
  }

  /** Routes with at least one attached party. */
  get routeCount(): number {
    return this.parties.size;
  }

  /**
   * Resolves when this relay serves `route` (placing it here or elsewhere
   * when `create`); throws SERVED_ELSEWHERE naming the owner, STREAM_NOT_FOUND
   * when nobody owns it and `create` is false, or the directory's failure.
   * `confirm`: the caller was sent here by another instance's view (a
   * gateway's hop call), so a route unknown here is read from the directory
   * before it is refused (see LookupOptions.confirm). `client`: the party's
   * per-address limit key, metered if the admission places the session.
   */
  async admit(route: string, create: boolean, confirm = false, client?: string): Promise<void> {
    const released = this.releasing(route);
    if (released) await released;
    if (this.directory.servesHere(route)) return;
    let owner;
    try {
      owner = await this.directory.lookup(route, { place: create, confirm, ...(client === undefined ? {} : { client }) });
    } catch (err) {
      throw directoryError(err);
    }
    if (owner === null) throw new HashmailError('STREAM_NOT_FOUND');
    if (owner.id !== this.directory.selfId) throw servedElsewhere(owner.address);
    // Named here, but not provably under a live lease right now (a lease being renewed).
    if (!this.directory.servesHere(route)) throw new HashmailError('DIRECTORY_UNAVAILABLE');
  }

  /**
   * Whether `route` was placed here so recently that its creator may still
   * be on its way (a re-join: a lookup placed the session for the node, and
   * the app it woke dials first): an ATTACH_EXISTING that finds no session
   * then waits for the creator instead of answering "stream not found".
   */
  awaitsCreator(route: string): boolean {
    const at = this.gained.get(route);
    return at !== undefined && this.now() - at < this.creatorWaitMs;
  }

  private noteGained(route: string): void {
    const now = this.now();
    this.gained.delete(route);
    this.gained.set(route, now);
    for (const [r, at] of this.gained) {
      if (now - at < this.creatorWaitMs) break;
      this.gained.delete(r);
    }
  }

  /** Tracks an attached party; returns the function that forgets it (on release). */
  track(route: string, party: RoutedParty): () => void {
    let set = this.parties.get(route);
    if (!set) {
      set = new Set();
      this.parties.set(route, set);
    }
    set.add(party);
    const forget = (): void => {
      const s = this.parties.get(route);
      if (!s) return;
      s.delete(party);
      if (s.size === 0) this.parties.delete(route);
    };
    // The mapping may have moved while the party waited for its slots.
    if (!this.directory.servesHere(route)) {
      party.end(new HashmailError(this.draining ? 'RELAY_DRAINING' : 'ROUTE_LOST'));
    } else if (this.draining) {
      this.scheduleDrain(route);
    }
    return forget;
  }

  /**
   * Drain: every session with parties here is released and its parties told
   * to move (both together) at a random moment within `spreadMs`, so they do
   * not stampede the other relays. Resolves when every release ran.
   */
  async drain(spreadMs: number, random: () => number = Math.random): Promise<void> {
    this.draining ??= { spreadMs, random, pending: new Set() };
    for (const route of this.parties.keys()) this.scheduleDrain(route);
    while (this.draining.pending.size > 0) await Promise.all([...this.draining.pending]);
  }

  private scheduleDrain(route: string): void {
    const d = this.draining;
    if (!d || this.drainScheduled.has(route)) return;
    this.drainScheduled.add(route);
    const done = new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        void this.directory
          .release([route])
          .catch((err: unknown) => this.logger.warn({ err: (err as Error).message }, 'drain: release failed; the mapping goes with the lease'))
          .then(() => {
            this.drainScheduled.delete(route);
            this.endRoute(route, new HashmailError('RELAY_DRAINING'));
            d.pending.delete(done);
            resolve();
          });
      }, Math.floor(d.random() * d.spreadMs));
      void timer;
    });
    d.pending.add(done);
  }

  private endRoute(route: string, err: HashmailError): void {
    const set = this.parties.get(route);
    if (!set) return;
    this.parties.delete(route);
    for (const party of set) party.end(err);
  }
}
