/**
 * The gateway's mailbox: the four legacy calls answered by the relay that
 * owns each session, over the hop (docs/gateway-hop.md). The request is
 * validated here first with the relay's own code (so a bad one costs no
 * lookup and gets the exact legacy text); the route is looked up (placed
 * only by NewCipherBox); the call goes to the owner, and once more to the
 * relay a SERVED_ELSEWHERE answer names. Every call carried to a relay is
 * tracked by the relay's id: when its registration vanishes
 * (instanceGone), each ends at once with UNAVAILABLE, so legacy clients
 * retry and land on the new owner.
 */
import type { Directory, LookupOptions, RouteOwner } from '../directory/directory.js';
import { routeOfSid } from '../directory/route.js';
import { directoryError } from '../directory/route-lookup.js';
import type { Config } from '../config/schema.js';
import { subsystemLogger, type Logger } from '../observe/logger.js';
import type { RelayStats } from '../observe/stats.js';
import { validateBoxRequest } from '../relay/legacy-mailbox.js';
import type { BoxRequest, CallInfo, LegacyOperations, LegacyReceive, LegacySend } from '../relay/legacy-operations.js';
import { HashmailError } from '../session/errors.js';
import { checkSid } from '../session/sid.js';
import { FrameKind } from '../transport/hop/frame.js';
import type { HopToken } from '../transport/hop/hop-token.js';
import { RemoteReceive, RemoteSend, type HalfContext } from './hop-halves.js';
import { HopLane, type LaneEndpoint } from './hop-lane.js';
import { RelayPool, relayPoolOptions } from './relay-pool.js';
import type { RelayTlsOptions } from './relay-trust.js';

/**
 * How a call that does not create finds its session: a session our
 * watch-fed view does not hold may have been placed elsewhere an instant
 * ago (its peer just created the boxes through another gateway), so
 * `confirm` reads etcd before "stream not found" is answered, at once, as
 * serve answers it (reads batched: etcd/read-batcher.ts).
 */
const FIND: LookupOptions = { place: false, confirm: true };

/** Deadline of a box call (NewCipherBox, DelCipherBox) on the hop: a relay that does not answer one in this is treated as gone (ms). */
const HOP_BOX_CALL_DEADLINE_MS = 10_000;

export interface RemoteLegacyMailboxOptions {
  directory: Directory;
  pool: RelayPool;
  token: HopToken;
  logger: Logger;
  /** mailbox.maxMessageBytes: a larger message is refused here with the relay's text. */
  maxMessageBytes: number;
  /** hop.windowBytes: credit each carried reader grants its relay. */
  windowBytes: number;
  /** Attached halves are counted here as the relay's own halves are (gauges per transport). */
  stats?: RelayStats;
}

/** A call carried to a relay, endable when that relay is gone. */
interface Carried {
  fail(err: HashmailError): void;
}

export class RemoteLegacyMailbox implements LegacyOperations {
  private stats: RelayStats | null;
  /** Calls in flight by relay instance id. */
  private readonly carried = new Map<string, Set<Carried>>();
  /** The address each relay in `carried` was reached at, so its pool connections close when it goes. */
  private readonly carriedAddress = new Map<string, string>();
  /** Set by shutdown(): every new call is refused as serve's table refuses it. */
  private shuttingDown = false;

  constructor(private readonly options: RemoteLegacyMailboxOptions) {
    this.stats = null;
    if (options.stats) this.countIn(options.stats);
    options.directory.on('instanceGone', (id) => this.relayGone(id));
  }

  /**
   * Counts attached halves in `stats` (hashmail_attached_halves, as serve's
   * own halves are), the pool's lanes and calls (hashmail_hop_lanes,
   * hashmail_hop_calls) and pool refusals through `limitHit` (limit metric
   * and refusal log): the composition's counters exist only once its node is built.
   */
  observeWith(stats: RelayStats, limitHit: (configKey: string, client: string) => void): void {
    this.countIn(stats);
    this.options.pool.onLimit = limitHit;
  }

  private countIn(stats: RelayStats): void {
    this.stats = stats;
    const pool = this.options.pool;
    stats.hopLanes = () => pool.connections;
    stats.hopCallsCarried = () => pool.calls;
  }

  /**
   * Gateway stop: every carried call ends with UNAVAILABLE "server shutting
   * down", as serve's own streams do (its table's shutdown), so legacy
   * clients retry at once; without this they would see the connection's
   * destruction as CANCELLED. New calls are refused the same way.
   */
  shutdown(): void {
    this.shuttingDown = true;
    const err = new HashmailError('SERVER_SHUTTING_DOWN');
    const all = [...this.carried.values()];
    this.carried.clear();
    for (const set of all) for (const c of set) c.fail(err);
  }

  /** Closes every hop connection (gateway stop; calls still open end with UNAVAILABLE). */
  close(): void {
    this.options.pool.close();
  }

  /** Hop calls in flight (tests, metrics). */
  get carriedCalls(): number {
    let n = 0;
    for (const set of this.carried.values()) n += set.size;
    return n;
  }

  async newCipherBox(req: BoxRequest, call: CallInfo): Promise<void> {
    const sid = validateBoxRequest(req);
    await this.routed(sid, { place: true, client: call.address }, (owner) => this.boxCall(FrameKind.CREATE_BOX, owner, sid, call));
  }

  async delCipherBox(req: BoxRequest, call: CallInfo): Promise<void> {
    const sid = validateBoxRequest(req);
    await this.routed(sid, FIND, (owner) => this.boxCall(FrameKind.DELETE_BOX, owner, sid, call));
  }

  openReceive(streamId: Buffer, call: CallInfo, signal?: AbortSignal): Promise<LegacyReceive> {
    const sid = checkSid(streamId);
    return this.routed(sid, FIND, (owner) =>
      this.carry(owner, call, (lane, ctx) => new RemoteReceive(lane, ctx, sid, call.address, this.options.windowBytes)).whenAttached(signal),
    );
  }

  openSend(desc: { streamId: Buffer } | null, call: CallInfo, signal?: AbortSignal): Promise<LegacySend> {
    if (!desc) return Promise.reject(new HashmailError('DESC_REQUIRED'));
    const sid = checkSid(desc.streamId);
    return this.routed(sid, FIND, (owner) =>
      this.carry(owner, call, (lane, ctx) => new RemoteSend(lane, ctx, sid, call.address, this.options.maxMessageBytes)).whenAttached(signal),
    );
  }

  /** The owner of the session `sid` belongs to (placing it as `how` says); `fn` there, and once more where a SERVED_ELSEWHERE answer points. */
  private async routed<T>(sid: Buffer, how: LookupOptions, fn: (owner: RouteOwner) => Promise<T>): Promise<T> {
    if (this.shuttingDown) throw new HashmailError('SERVER_SHUTTING_DOWN');
    let owner: RouteOwner | null;
    try {
      owner = await this.options.directory.lookup(routeOfSid(sid), how);
    } catch (err) {
      throw directoryError(err);
    }
    if (owner === null) throw new HashmailError('STREAM_NOT_FOUND');
    try {
      return await fn(owner);
    } catch (err) {
      // The relay that owns the session did not take the call: if nothing listens at its address any more and its
      // lease is neglected, its leases go (directory.revokeRefusingOwners) and a retry lands on the new owner.
      if (err instanceof HashmailError && err.code === 'RELAY_UNREACHABLE') this.options.directory.ownerUnreachable?.(owner);
      if (!(err instanceof HashmailError) || err.code !== 'SERVED_ELSEWHERE' || !err.relayAddress) throw err;
      // Our view of the mapping was behind; the relay named the owner. A second redirect goes to the client as UNAVAILABLE (it retries).
      const address = err.relayAddress;
      const named = this.options.directory.instances().find((i) => i.addresses.includes(address));
      return fn({ id: named?.id ?? `address:${address}`, address, startedAt: named?.startedAt ?? 0 });
    }
  }

  /** Starts one half to `owner` on a pool connection's lane, tracked until it is over. */
  private carry<H extends Carried & { readonly isOver: boolean }>(owner: RouteOwner, call: CallInfo, start: (lane: HopLane, ctx: HalfContext) => H): H {
    // Stop may have begun while the lookup was in flight: shutdown() fails only the calls already carried.
    if (this.shuttingDown) throw new HashmailError('SERVER_SHUTTING_DOWN');
    const pooled = this.options.pool.acquire(owner.address, call.address);
    let half: H | null = null;
    const ctx: HalfContext = {
      stats: this.stats,
      transport: call.transport,
      done: () => {
        pooled.release();
        if (half) this.forget(owner.id, half);
      },
    };
    try {
      half = start(pooled.lane(this.openLane), ctx);
    } catch (err) {
      pooled.release();
      throw err;
    }
    // Over already (answered at once): done() ran before there was anything to forget.
    return half.isOver ? half : this.track(owner, half);
  }

  private track<C extends Carried>(owner: RouteOwner, c: C): C {
    let set = this.carried.get(owner.id);
    if (!set) {
      set = new Set();
      this.carried.set(owner.id, set);
      this.carriedAddress.set(owner.id, owner.address);
    }
    set.add(c);
    return c;
  }

  private forget(id: string, c: Carried): void {
    const set = this.carried.get(id);
    if (!set) return;
    set.delete(c);
    if (set.size === 0) {
      this.carried.delete(id);
      this.carriedAddress.delete(id);
    }
  }

  /** NewCipherBox or DelCipherBox at `owner`: one frame on a pool connection's lane, answered by END. */
  private boxCall(kind: typeof FrameKind.CREATE_BOX | typeof FrameKind.DELETE_BOX, owner: RouteOwner, sid: Buffer, call: CallInfo): Promise<void> {
    if (this.shuttingDown) return Promise.reject(new HashmailError('SERVER_SHUTTING_DOWN'));
    const pooled = this.options.pool.acquire(owner.address, call.address);
    return new Promise<void>((resolve, reject) => {
      let settled = false;
      let lane: HopLane | null = null;
      let id = 0;
      const finish = (err: HashmailError | null): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        pooled.release();
        this.forget(owner.id, carried);
        if (id) lane?.forget(id, false);
        if (err) reject(err);
        else resolve();
      };
      const carried: Carried = { fail: (err) => finish(err) };
      const timer = setTimeout(
        () => finish(new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (no answer to the box call within ${HOP_BOX_CALL_DEADLINE_MS} ms)`)),
        HOP_BOX_CALL_DEADLINE_MS,
      );
      const answer: LaneEndpoint = {
        attached: () => undefined,
        data: () => undefined,
        credit: () => undefined,
        ended: (err) => finish(err),
        lost: (err) => finish(err),
      };
      this.track(owner, carried);
      try {
        lane = pooled.lane(this.openLane);
        id = lane.open(answer, kind, sid, call.address, 0);
      } catch (err) {
        finish(err instanceof HashmailError ? err : new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (${String(err)})`));
      }
    });
  }

  private readonly openLane = (address: string, tls: RelayTlsOptions | null): HopLane =>
    new HopLane({ address, tls, token: this.options.token.value, maxMessageBytes: this.options.maxMessageBytes });

  /** The relay `id` is gone: every call carried to it ends with UNAVAILABLE now. */
  private relayGone(id: string): void {
    const set = this.carried.get(id);
    if (!set) return;
    const address = this.carriedAddress.get(id);
    this.carried.delete(id);
    this.carriedAddress.delete(id);
    this.options.logger.info({ relay: id, calls: set.size }, 'relay gone: ending the legacy calls carried to it');
    const err = new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (relay ${id} is gone)`);
    for (const c of set) c.fail(err);
    // Its connections would otherwise keep re-dialling a dead address until their idle timer; a relay
    // already registered again at that address (a restart) keeps them.
    if (address !== undefined && !this.options.directory.instances().some((i) => i.addresses.includes(address))) {
      this.options.pool.closeAddress(address);
    }
  }
}

/** A gateway's legacy mailbox from its config: the hop.* pool (TLS to relays unless --insecure) and the hop token. */
export function remoteLegacyFromConfig(directory: Directory, config: Config, logger: Logger, token: HopToken): RemoteLegacyMailbox {
  return new RemoteLegacyMailbox({
    directory,
    pool: new RelayPool(relayPoolOptions(config, directory)),
    token,
    logger: subsystemLogger(logger, 'hop'),
    maxMessageBytes: config.mailbox.maxMessageBytes,
    windowBytes: config.hop.windowBytes,
  });
}
