/**
 * When can we prove a lease is still alive? etcd restarts a lease's TTL when
 * it receives a keepalive, so the lease lives at least TTL past the moment
 * the last acknowledged keepalive was SENT (a later receipt only extends it).
 * Measured on a monotonic clock; a margin below the TTL makes us stop serving
 * before etcd can possibly expire the lease. Pure: the keeper feeds it times.
 */

/** Share of the TTL kept as a safety margin (clock granularity, event-loop lag). */
export const FENCE_MARGIN_FRACTION = 0.1;

interface LeaseTimes {
  /** Send time of the newest acknowledged keepalive (or of the grant). */
  provenAt: number;
  /** Send times of keepalives not yet answered, oldest first. */
  pending: number[];
}

/** Outstanding sends remembered per lease; older ones are useless once this many are unanswered. */
const MAX_PENDING = 16;

export class LeaseProof {
  private readonly leases = new Map<string, LeaseTimes>();
  readonly validMs: number;

  constructor(readonly ttlMs: number) {
    this.validMs = ttlMs * (1 - FENCE_MARGIN_FRACTION);
  }

  /** A grant sent at `sentAt` was answered: the lease lives at least TTL past sentAt. */
  granted(lease: string, sentAt: number): void {
    this.leases.set(lease, { provenAt: sentAt, pending: [] });
  }

  sent(lease: string, at: number): void {
    const t = this.leases.get(lease);
    if (!t) return;
    t.pending.push(at);
    if (t.pending.length > MAX_PENDING) t.pending.shift();
  }

  /** etcd answered the oldest outstanding keepalive of `lease` (answers on one stream come in order). */
  acked(lease: string): void {
    const t = this.leases.get(lease);
    const sentAt = t?.pending.shift();
    if (t && sentAt !== undefined) t.provenAt = Math.max(t.provenAt, sentAt);
  }

  /** Forget unanswered sends (their stream is gone; answers will never come). */
  dropPending(): void {
    for (const t of this.leases.values()) t.pending = [];
  }

  forget(lease: string): void {
    this.leases.delete(lease);
  }

  has(lease: string): boolean {
    return this.leases.has(lease);
  }

  provable(lease: string, now: number): boolean {
    const t = this.leases.get(lease);
    return t !== undefined && now - t.provenAt < this.validMs;
  }

  /** Age of the newest proof of the least fresh lease (ms), or null with no leases. */
  oldestProofAgeMs(now: number): number | null {
    let oldest: number | null = null;
    for (const t of this.leases.values()) oldest = Math.max(oldest ?? 0, now - t.provenAt);
    return oldest;
  }

  /** Leases that can no longer be proven alive at `now`. */
  unprovable(now: number): string[] {
    return [...this.leases.keys()].filter((lease) => !this.provable(lease, now));
  }
}
