/**
 * Keeps this instance's leases alive over one keepalive stream and says, on
 * a monotonic clock, whether each can be proven alive right now (LeaseProof).
 * A lease that cannot be proven is reported lost at once (etcd may expire it
 * any moment); the directory then fences and registers anew. A stream that
 * stops answering is replaced (another endpoint may answer).
 */
import { EventEmitter } from 'node:events';
import { performance } from 'node:perf_hooks';
import type { ILeaseKeepAliveRequest, ILeaseKeepAliveResponse, IDuplexStream } from 'etcd3';
import type { EtcdRpc } from './etcd-rpc.js';
import { LeaseProof } from './lease-proof.js';

/** Keepalives per TTL: three chances before the lease could expire. */
const KEEPALIVES_PER_TTL = 3;
/** Fence checks per TTL: how late after the proof runs out fenceLost may fire, at most. */
const CHECKS_PER_TTL = 40;
/**
 * A stream whose oldest keepalive is unanswered this many intervals is
 * replaced (checked CHECKS_PER_TTL times a TTL). One: a keepalive sent one
 * interval after the last answered one, unanswered one interval more, leaves
 * 0.7 of an interval before the proof runs out (LeaseProof: 0.9 TTL) for the
 * new stream's at once to be answered. A member that stopped answering
 * (paused, cut off, stalled on its disk) then costs nothing; one merely slow
 * is tolerated up to one interval (a third of the TTL).
 */
const STALL_INTERVALS = 1;
/** A broken stream is reopened (on the next endpoint) after this pause, not at the next tick. */
const REOPEN_PAUSE_MS = 50;

type KeepAliveStream = IDuplexStream<ILeaseKeepAliveRequest, ILeaseKeepAliveResponse>;

export interface LeaseKeeperEvents {
  lost: [lease: string, reason: string];
}

export class LeaseKeeper extends EventEmitter<LeaseKeeperEvents> {
  readonly proof: LeaseProof;
  private readonly leases = new Set<string>();
  private stream: KeepAliveStream | null = null;
  private opening = false;
  private reopenTimer: NodeJS.Timeout | null = null;
  /** The next stream goes to the next endpoint (the last one broke or stalled). */
  private moveOn = false;
  private oldestUnansweredAt: number | null = null;
  private readonly intervalMs: number;
  private readonly keepaliveTimer: NodeJS.Timeout;
  private readonly checkTimer: NodeJS.Timeout;
  private stopped = false;

  constructor(
    private readonly rpc: EtcdRpc,
    readonly ttlMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {
    super();
    this.proof = new LeaseProof(ttlMs);
    this.intervalMs = ttlMs / KEEPALIVES_PER_TTL;
    this.keepaliveTimer = setInterval(() => this.sendKeepalives(), this.intervalMs);
    this.checkTimer = setInterval(() => this.check(), ttlMs / CHECKS_PER_TTL);
    this.keepaliveTimer.unref();
    this.checkTimer.unref();
  }

  get ttlSeconds(): number {
    return Math.ceil(this.ttlMs / 1000);
  }

  /** Grants a new lease and keeps it alive from now on; rejects (DirectoryUnavailableError) past the deadline. */
  async grant(): Promise<string> {
    const sentAt = this.now();
    const res = await this.rpc.call('lease grant', (o, c) => c.leaseClient.leaseGrant({ TTL: this.ttlSeconds }, o));
    this.proof.granted(res.ID, sentAt);
    this.leases.add(res.ID);
    return res.ID;
  }

  /** Stops keeping `lease` alive (and revokes it in etcd when asked, best effort within the deadline). */
  async drop(lease: string, revoke: boolean): Promise<void> {
    this.leases.delete(lease);
    this.proof.forget(lease);
    if (revoke) await this.rpc.call('lease revoke', (o, c) => c.leaseClient.leaseRevoke({ ID: lease }, o));
  }

  provable(lease: string): boolean {
    return this.leases.has(lease) && this.proof.provable(lease, this.now());
  }

  /** Every kept lease is provable right now. */
  allProvable(): boolean {
    const now = this.now();
    return this.leases.size > 0 && [...this.leases].every((l) => this.proof.provable(l, now));
  }

  proofAgeMs(): number | null {
    return this.proof.oldestProofAgeMs(this.now());
  }

  get held(): string[] {
    return [...this.leases];
  }

  stop(): void {
    this.stopped = true;
    clearInterval(this.keepaliveTimer);
    clearInterval(this.checkTimer);
    if (this.reopenTimer) clearTimeout(this.reopenTimer);
    this.closeStream();
  }

  private check(): void {
    const now = this.now();
    if (this.stream && this.oldestUnansweredAt !== null && now - this.oldestUnansweredAt > this.intervalMs * STALL_INTERVALS) {
      // etcd (or the path to it) stopped answering: try again at once on a fresh stream on another member.
      this.closeStream();
      this.moveOn = true;
      void this.openStream();
    }
    for (const lease of this.proof.unprovable(now)) {
      if (!this.leases.has(lease)) continue;
      this.leases.delete(lease);
      this.proof.forget(lease);
      this.emit('lost', lease, 'keepalive not acknowledged within the TTL');
    }
  }

  private sendKeepalives(): void {
    if (this.stopped || this.leases.size === 0) return;
    const now = this.now();
    if (!this.stream) {
      void this.openStream();
      return;
    }
    for (const lease of this.leases) {
      this.proof.sent(lease, now);
      this.stream.write({ ID: lease });
    }
    this.oldestUnansweredAt ??= now;
  }

  private async openStream(): Promise<void> {
    // A keepalive tick may have opened one while a reopen was pending: one stream at a time, never two.
    if (this.opening || this.stopped || this.stream) return;
    this.opening = true;
    try {
      this.rpc.calls++;
      const stream = await this.rpc.streamClient(this.moveOn).leaseClient.leaseKeepAlive();
      this.moveOn = false;
      if (this.stopped) {
        stream.cancel();
        return;
      }
      this.stream = stream;
      if (this.reopenTimer) clearTimeout(this.reopenTimer);
      this.reopenTimer = null;
      this.oldestUnansweredAt = null;
      stream.on('data', (res: ILeaseKeepAliveResponse) => this.onAnswer(res));
      stream.on('error', (err: Error) => {
        this.rpc.lastError = `lease keepalive: ${err.message}`;
        if (this.stream === stream) this.broken();
      });
      stream.on('end', () => {
        if (this.stream === stream) this.broken();
      });
      // Send right away: the proof is running out while we reconnect.
      const now = this.now();
      for (const lease of this.leases) {
        this.proof.sent(lease, now);
        stream.write({ ID: lease });
      }
      if (this.leases.size > 0) this.oldestUnansweredAt = now;
    } catch (err) {
      this.rpc.lastError = `lease keepalive: ${err instanceof Error ? err.message : String(err)}`;
      this.moveOn = true;
    } finally {
      this.opening = false;
    }
  }

  /** The stream failed: the proof is running out, so reopen soon on the next endpoint. */
  private broken(): void {
    this.closeStream();
    this.moveOn = true;
    if (this.reopenTimer || this.stopped) return;
    this.reopenTimer = setTimeout(() => {
      this.reopenTimer = null;
      void this.openStream();
    }, REOPEN_PAUSE_MS);
    this.reopenTimer.unref();
  }

  private onAnswer(res: ILeaseKeepAliveResponse): void {
    this.oldestUnansweredAt = null;
    if (!this.leases.has(res.ID)) return;
    if (res.TTL === '0' || Number(res.TTL) <= 0) {
      // etcd no longer knows the lease: it expired (or was revoked).
      this.leases.delete(res.ID);
      this.proof.forget(res.ID);
      this.emit('lost', res.ID, 'lease expired in etcd');
      return;
    }
    this.proof.acked(res.ID);
  }

  private closeStream(): void {
    const stream = this.stream;
    this.stream = null;
    this.oldestUnansweredAt = null;
    this.proof.dropPending();
    if (stream) {
      (stream as unknown as NodeJS.EventEmitter).removeAllListeners('data');
      (stream as unknown as NodeJS.EventEmitter).on('error', () => undefined);
      stream.cancel();
    }
  }
}
