/**
 * Owners that parties (or a gateway's calls) could not reach: their leases
 * are revoked, so their sessions move at the next lookup instead of when the
 * leases expire (directory.leaseTtlMs), when two things hold:
 * - nothing listens at the owner's address: the connection is refused
 *   (killed, crashed, not back yet after a restart); a timeout proves nothing
 *   (refused-probe.ts);
 * - it has missed its keepalives: its instance lease has less than two thirds
 *   of its TTL left, less a second, where a live owner renews it every third
 *   of the TTL. A live relay that only looks refused from here (a proxy, a
 *   REJECT rule) is never revoked, whoever claims it is unreachable.
 * Refused but renewed lately: checked again once the lease could have fallen
 * that low. One probe per registration at a time, at most every
 * OWNER_PROBE_EVERY_MS; a report in the pause probes when it ends.
 */
import type { Logger } from '../../observe/logger.js';
import type { RouteOwner } from '../directory.js';
import { probeListening } from '../refused-probe.js';
import type { DirectoryCache } from './directory-cache.js';
import type { EtcdRpc } from './etcd-rpc.js';
import { instanceKey, leaseDecimal, parseInstance, type KeyLayout } from './keys.js';

/**
 * An owner reported unreachable is probed at most once in this long per
 * registration (ms): a storm of reports costs one connection. A report within
 * it probes once more when it ends, so a party that reports just after a probe
 * found the owner alive does not wait out the owner's lease.
 */
const OWNER_PROBE_EVERY_MS = 2_000;
/**
 * Probes of an owner that refused but had renewed its lease lately, each as
 * its lease could have run low: one TTL's worth, then it is taken for alive
 * (and a warning says its address refuses connections).
 */
const OWNER_RECHECKS = 3;
/** How late a live owner's keepalive may be before its lease counts as neglected (ms): event-loop stalls under load. */
const OWNER_KEEPALIVE_SLACK_MS = 1_000;
/** How long a probe waits for the owner's address to answer (ms); no answer proves nothing. */
const OWNER_PROBE_TIMEOUT_MS = 1_000;
/** Registrations remembered: far more than a cluster has, few enough to be nothing in memory. */
const MAX_REMEMBERED_OWNERS = 10_000;

export interface RefusingOwnersDeps {
  rpc: EtcdRpc;
  layout: KeyLayout;
  cache: DirectoryCache;
  logger: Logger;
  /** `owner` is still the registration this view holds live, not draining, and not this process. */
  reportable(owner: RouteOwner): boolean;
  /** The directory is closed: nothing more is probed or logged. */
  closed(): boolean;
  /** The leases of `id` were revoked (for the metric). */
  revoked(id: string): void;
}

/** One registration's probing: when it last started, a probe to run later, one running. */
interface OwnerProbe {
  at: number;
  again: NodeJS.Timeout | null;
  busy: boolean;
}

export class RefusingOwners {
  /** Registrations (`id@startedAt`) probed lately, least recently probed first. */
  private readonly probes = new Map<string, OwnerProbe>();

  constructor(private readonly deps: RefusingOwnersDeps) {}

  /** A party could not reach `owner`. */
  report(owner: RouteOwner): void {
    if (!this.deps.reportable(owner)) return;
    const key = `${owner.id}@${owner.startedAt}`;
    const state = this.probes.get(key);
    if (state) {
      if (state.busy || state.again) return;
      const pause = state.at + OWNER_PROBE_EVERY_MS - performance.now();
      if (pause > 0) {
        this.probeLater(key, owner, pause, OWNER_RECHECKS);
        return;
      }
    }
    this.probe(key, owner, OWNER_RECHECKS);
  }

  /** Cancels the probes scheduled for later. */
  close(): void {
    for (const state of this.probes.values()) if (state.again) clearTimeout(state.again);
    this.probes.clear();
  }

  private probeLater(key: string, owner: RouteOwner, ms: number, rechecks: number): void {
    const state = this.probes.get(key);
    if (!state || state.again) return;
    state.again = setTimeout(() => {
      state.again = null;
      if (this.deps.reportable(owner)) this.probe(key, owner, rechecks);
    }, ms).unref();
  }

  /** Probes `owner` now; refused but renewed lately, again up to `rechecks` times as its lease could have run low. */
  private probe(key: string, owner: RouteOwner, rechecks: number): void {
    const state: OwnerProbe = { at: performance.now(), again: null, busy: true };
    this.probes.delete(key);
    this.probes.set(key, state);
    if (this.probes.size > MAX_REMEMBERED_OWNERS) {
      const [oldest, evicted] = this.probes.entries().next().value as [string, OwnerProbe];
      if (evicted.again) clearTimeout(evicted.again);
      this.probes.delete(oldest);
    }
    const { logger } = this.deps;
    this.revokeIfDead(owner).then(
      (recheckInMs) => {
        state.busy = false;
        if (recheckInMs === null || this.deps.closed()) return;
        if (rechecks > 0) this.probeLater(key, owner, recheckInMs, rechecks - 1);
        else
          logger.warn(
            { instance: owner.id, address: owner.address },
            'directory: an owner refuses connections at its advertised address but keeps renewing its lease; its leases are kept (check its --advertise, or a firewall between relays)',
          );
      },
      (err: unknown) => {
        state.busy = false;
        if (!this.deps.closed()) logger.warn({ instance: owner.id, err: err instanceof Error ? err.message : String(err) }, 'directory: could not revoke the leases of an instance refusing connections');
      },
    );
  }

  /** Revokes `owner`'s leases if it refuses connections and missed its keepalives; else null, or when to look again (ms). */
  private async revokeIfDead(owner: RouteOwner): Promise<number | null> {
    const { rpc, layout, cache } = this.deps;
    if ((await probeListening(owner.address, OWNER_PROBE_TIMEOUT_MS)) !== 'refused' || this.deps.closed()) return null;
    // The record in etcd, not our view: its lease, and proof that it is still the registration that refused.
    const res = await rpc.call('range', (o, c) => c.kv.range({ key: Buffer.from(instanceKey(layout, owner.id)) }, o));
    const kv = res.kvs[0];
    const record = kv ? parseInstance(kv.value.toString()) : null;
    if (!kv || !record || record.startedAt !== owner.startedAt || record.draining) return null;
    const ttl = await rpc.call('lease ttl', (o, c) => c.leaseClient.leaseTimeToLive({ ID: kv.lease }, o));
    // Expiring or gone already: etcd removes its keys itself.
    if (Number(ttl.TTL) <= 0) return null;
    // A live owner renews every third of the TTL, so its lease never has less than two thirds left, give or take a
    // late keepalive (OWNER_KEEPALIVE_SLACK_MS). etcd answers in whole seconds, rounded down: under TTL + 1 s left.
    const missedBelowMs = (Number(ttl.grantedTTL) * 1000 * 2) / 3 - OWNER_KEEPALIVE_SLACK_MS;
    const leftMs = (Number(ttl.TTL) + 1) * 1000;
    if (leftMs > missedBelowMs) return leftMs - missedBelowMs;
    // Etcd says this registration is the one that refused, so no later one holds mappings yet: the cache's are its own.
    const leases = new Set<string>([kv.lease, leaseDecimal(record.sessionLease)]);
    for (const lease of cache.leasesOf(owner.id)) leases.add(leaseDecimal(lease));
    leases.delete('0');
    const outcomes = await Promise.allSettled([...leases].map((lease) => rpc.call('lease revoke', (o, c) => c.leaseClient.leaseRevoke({ ID: lease }, o))));
    const failed = outcomes.filter((r) => r.status === 'rejected').length;
    if (failed === leases.size) throw new Error(`every lease revoke failed (${leases.size})`);
    // Info, not warn: the cluster healing itself; the relay's death shows in its own absence and in the metric.
    this.deps.logger.info(
      { instance: owner.id, address: owner.address, leases: leases.size, failed },
      'directory: an owner refused connections at its address and missed its keepalives; revoked its leases, its sessions move now',
    );
    this.deps.revoked(owner.id);
    return null;
  }
}
