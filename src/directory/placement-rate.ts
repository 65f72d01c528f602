/**
 * The cap on placements per second in one process (directory.maxPlacementsPerSecond).
 * A relay death sends all its legacy clients back within the same second
 * (they re-dial on a fixed 2 s, no jitter), and each one's first call places
 * its session again: one etcd transaction each. The cap spreads that burst:
 * a placement over the rate waits its turn, in arrival order, for at most
 * `maxWaitMs` (directory.placementQueueMs); one that would wait longer is
 * refused at once with DirectoryUnavailableError (gRPC UNAVAILABLE, HTTP
 * 503), which legacy clients retry on their next 2 s re-dial, by then under
 * the rate. No queue grows past one wait's worth of placements.
 *
 * A generic cell rate algorithm (a token bucket that schedules instead of
 * polling): a burst of up to one second's worth passes at once, then one
 * placement every 1000/rate ms.
 *
 * Fair share (directory.maxPlacementShare): without it one client creating
 * sessions as fast as it could (random routes, each a placement) kept the
 * queue full, and every other client's new session was refused for as long
 * as it went on. Each client address is metered by a cell rate algorithm of
 * its own at `share` x the rate (one second's worth of burst, every
 * placement counted). A placement from an address over its share may wait
 * only half of `maxWaitMs`: the other half of the queue is always left to
 * the addresses within theirs. One address alone (a storm of its own
 * sessions; tests on loopback) still gets the whole rate, queued half as
 * long. Only addresses with a placement due in the future are kept: one
 * placement costs an entry for 1000/(share x rate) ms.
 *
 * A client holding more than 1/share addresses (limit keys) is within each
 * share and could fill the queue again. So an address within its share that
 * finds the queue full takes the latest queued turn of the address waiting
 * for the most turns, if that one waits for at least two more than it does
 * (ClientLines finds it at once); that placement is refused for its share.
 */
import { systemClock, type Clock, type TimerHandle } from '../session/clock.js';
import { DirectoryUnavailableError } from './directory.js';

const MS_PER_SECOND = 1000;
/** The most a client address's meter runs ahead of now (ms): a flood long over is forgiven within seconds. */
const MAX_CLIENT_DEBT_MS = 10_000;
/** Client entries looked at for expiry once the map has grown by this many since the last sweep. */
const SWEEP_EVERY = 1024;

export class PlacementRate {
  private readonly intervalMs: number;
  /** How far ahead of its slot a placement may run: the burst (one second's worth). */
  private readonly toleranceMs: number;
  /** The theoretical time the next placement is due (clock ms); in the past when idle. */
  private nextDueAt = -Infinity;
  private waitingCount = 0;
  private refusedCount = 0;
  private overShareCount = 0;
  private displacedCount = 0;
  /** Queued turns per client address, to find the address waiting for the most. */
  private readonly lines = new ClientLines();
  /** One client address's meter (share > 0): interval and burst tolerance of its share. */
  private readonly clientIntervalMs: number;
  private readonly clientToleranceMs: number;
  /** Client address -> when its next placement is due (clock ms); only addresses with one due in the future. */
  private readonly clientDueAt = new Map<string, number>();
  private sweepAtSize = SWEEP_EVERY;
  /** Each refusal, as it happens (the limit metric and the refusal log): `overShare` when refused for the share of `client`. */
  onRefused: ((overShare: boolean, client: string | undefined) => void) | null = null;

  constructor(
    perSecond: number,
    private readonly maxWaitMs: number,
    private readonly clock: Clock = systemClock,
    /** The share of the rate one client address may take before it may queue only half as long (0 < share <= 1); 0: no per-address share. */
    private readonly share = 0,
  ) {
    this.intervalMs = MS_PER_SECOND / perSecond;
    this.toleranceMs = MS_PER_SECOND - this.intervalMs;
    this.clientIntervalMs = share > 0 ? MS_PER_SECOND / (perSecond * share) : 0;
    this.clientToleranceMs = Math.max(0, MS_PER_SECOND - this.clientIntervalMs);
  }

  /** Placements waiting for their turn now. */
  get waiting(): number {
    return this.waitingCount;
  }

  /** Placements refused so far (their wait would pass maxWaitMs, or their address was over its share). */
  get refused(): number {
    return this.refusedCount;
  }

  /** Of those, refused because their client address was over its share (in the half of the queue kept for others). */
  get refusedOverShare(): number {
    return this.overShareCount;
  }

  /** Of those, queued placements whose turn another address took (takeTurnOfHeaviest). */
  get displaced(): number {
    return this.displacedCount;
  }

  /** Client addresses metered now (tests: the map stays bounded). */
  get clientsMetered(): number {
    return this.clientDueAt.size;
  }

  /**
   * Resolves when this placement may run (at once while under the rate).
   * Rejects with DirectoryUnavailableError, without taking a turn, when its
   * wait would pass maxWaitMs (half of it when `client`, the asker's
   * per-address limit key, is over its share), or `budgetMs`, the caller's
   * own deadline, if shorter.
   */
  acquire(budgetMs = Infinity, client?: string): Promise<void> {
    const now = this.clock.now();
    const due = Math.max(this.nextDueAt, now);
    const wait = due - this.toleranceMs - now;
    const overShare = wait > 0 && client !== undefined && this.overShare(client, now);
    const limit = Math.min(overShare ? this.maxWaitMs / 2 : this.maxWaitMs, budgetMs);
    if (wait > limit) {
      // The queue is full for this address. Within its share, it may take the latest turn of the address that
      // waits for the most turns: many addresses each within their share cannot fill the queue against it.
      const taken = client !== undefined && !overShare && this.share > 0 ? this.takeTurnOfHeaviest(client, now, budgetMs) : null;
      if (taken) return taken;
      this.refusedCount++;
      // Past the half kept for others, but within the whole queue: refused for the share, not the rate.
      const forShare = overShare && wait <= Math.min(this.maxWaitMs, budgetMs);
      if (forShare) this.overShareCount++;
      this.onRefused?.(forShare, client);
      return Promise.reject(forShare ? shareRefusal() : rateRefusal());
    }
    this.nextDueAt = due + this.intervalMs;
    if (client !== undefined) this.charge(client, now);
    if (wait <= 0) return Promise.resolve();
    return this.queue(client, now + wait);
  }

  /** Waits (in `client`'s line, when given) until `dueAt`. */
  private queue(client: string | undefined, dueAt: number): Promise<void> {
    this.waitingCount++;
    return new Promise((resolve, reject) => {
      const turn: QueuedTurn = { dueAt, reject, timer: null };
      turn.timer = this.clock.setTimeout(() => {
        this.waitingCount--;
        if (client !== undefined) this.lines.remove(client, turn);
        resolve();
      }, dueAt - this.clock.now());
      if (client !== undefined) this.lines.add(client, turn);
    });
  }

  /**
   * The latest queued turn of the address waiting for the most turns, if it
   * waits for more than one more than `client` does (so two addresses never
   * trade a turn back and forth) and the turn comes within `budgetMs`: that
   * placement is refused for its share, and `client` waits for the turn.
   */
  private takeTurnOfHeaviest(client: string, now: number, budgetMs: number): Promise<void> | null {
    const heaviest = this.lines.heaviest();
    if (heaviest === null || heaviest.turns.length <= this.lines.count(client) + 1) return null;
    const turn = heaviest.turns[heaviest.turns.length - 1];
    if (turn.dueAt - now > budgetMs) return null;
    this.clock.clearTimeout(turn.timer as TimerHandle);
    this.waitingCount--;
    this.lines.remove(heaviest.client, turn);
    this.refusedCount++;
    this.overShareCount++;
    this.displacedCount++;
    this.onRefused?.(true, heaviest.client);
    turn.reject(shareRefusal());
    this.charge(client, now);
    return this.queue(client, turn.dueAt);
  }

  private overShare(client: string, now: number): boolean {
    if (this.share <= 0) return false;
    const dueAt = this.clientDueAt.get(client);
    return dueAt !== undefined && dueAt - this.clientToleranceMs > now;
  }

  /** One placement on `client`'s meter (also one that had a turn at once: the share is of all it placed). */
  private charge(client: string, now: number): void {
    if (this.share <= 0) return;
    const dueAt = Math.max(this.clientDueAt.get(client) ?? now, now) + this.clientIntervalMs;
    this.clientDueAt.set(client, Math.min(dueAt, now + MAX_CLIENT_DEBT_MS));
    if (this.clientDueAt.size < this.sweepAtSize) return;
    for (const [key, dueAt] of this.clientDueAt) if (dueAt <= now) this.clientDueAt.delete(key);
    this.sweepAtSize = this.clientDueAt.size + SWEEP_EVERY;
  }
}

interface QueuedTurn {
  /** When it runs (clock ms). */
  dueAt: number;
  reject(err: Error): void;
  timer: TimerHandle | null;
}

const shareRefusal = (): DirectoryUnavailableError => new DirectoryUnavailableError('placement share of one client address (directory.maxPlacementShare)', 'share_cap');
const rateRefusal = (): DirectoryUnavailableError => new DirectoryUnavailableError('placement rate cap (directory.maxPlacementsPerSecond)', 'rate_cap');

/**
 * Each client address's queued turns, in the order queued, and the addresses
 * by how many they wait for (so the one waiting for the most is found at once).
 */
class ClientLines {
  private readonly turns = new Map<string, QueuedTurn[]>();
  /** Turns waited for -> the addresses waiting for that many. */
  private readonly byCount = new Map<number, Set<string>>();
  private most = 0;

  count(client: string): number {
    return this.turns.get(client)?.length ?? 0;
  }

  add(client: string, turn: QueuedTurn): void {
    let line = this.turns.get(client);
    if (!line) {
      line = [];
      this.turns.set(client, line);
    }
    line.push(turn);
    this.move(client, line.length - 1, line.length);
  }

  remove(client: string, turn: QueuedTurn): void {
    const line = this.turns.get(client);
    const at = line ? line.indexOf(turn) : -1;
    if (!line || at < 0) return;
    line.splice(at, 1);
    this.move(client, line.length + 1, line.length);
    if (line.length === 0) this.turns.delete(client);
  }

  heaviest(): { client: string; turns: QueuedTurn[] } | null {
    const client = this.byCount.get(this.most)?.values().next().value;
    if (client === undefined) return null;
    return { client, turns: this.turns.get(client) ?? [] };
  }

  private move(client: string, from: number, to: number): void {
    if (from > 0) {
      const set = this.byCount.get(from);
      set?.delete(client);
      if (set?.size === 0) this.byCount.delete(from);
    }
    if (to > 0) {
      let set = this.byCount.get(to);
      if (!set) {
        set = new Set();
        this.byCount.set(to, set);
      }
      set.add(client);
    }
    if (to > this.most) this.most = to;
    while (this.most > 0 && !this.byCount.has(this.most)) this.most--;
  }
}
