/**
 * Reads of single keys straight from etcd, many in one transaction. A lookup
 * that the watch-fed cache cannot answer (a session it does not hold, which
 * may have been placed elsewhere an instant ago) is confirmed with etcd
 * before "not placed" / "stream not found" is answered. Legacy apps whose
 * node is offline ask again every 2 s, each such call a read: one range
 * request each would grow with them, so a read that finds every slot busy
 * waits in a queue and the next free slot takes up to MAX_TXN_OPS queued
 * keys as one transaction of range requests (no latency added when etcd
 * keeps up). Reads are linearizable: a mapping committed before the read was
 * sent is seen, however far behind the watch is.
 */
import type { IKeyValue } from 'etcd3';
import type { EtcdRpc } from './etcd-rpc.js';
import { MAX_TXN_OPS } from './create-batcher.js';
import { txnQueueTimeout } from './txn-gate.js';

interface Pending {
  key: Buffer;
  resolve(kv: IKeyValue | null): void;
  reject(err: unknown): void;
  timer: NodeJS.Timeout;
}

export class ReadBatcher {
  private readonly queue: Pending[] = [];
  private inFlight = 0;
  /** Transactions sent and keys they read, for tests and metrics. */
  txns = 0;
  reads = 0;

  constructor(
    private readonly rpc: EtcdRpc,
    /** Read transactions in flight at once; more reads wait for a slot. */
    private readonly maxInFlight: number,
    /** How long a read may wait for a slot before it fails as "directory unavailable" (ms). */
    private readonly queueTimeoutMs: number,
  ) {}

  get waiting(): number {
    return this.queue.length;
  }

  /** The key's current value (null: absent); rejects with DirectoryUnavailableError as any etcd call. */
  read(key: Buffer): Promise<IKeyValue | null> {
    return new Promise((resolve, reject) => {
      const p: Pending = {
        key,
        resolve,
        reject,
        timer: setTimeout(() => {
          const i = this.queue.indexOf(p);
          if (i >= 0) this.queue.splice(i, 1);
          reject(txnQueueTimeout());
        }, this.queueTimeoutMs),
      };
      this.queue.push(p);
      this.pump();
    });
  }

  private pump(): void {
    while (this.queue.length > 0 && this.inFlight < this.maxInFlight) {
      const batch = this.queue.splice(0, MAX_TXN_OPS);
      for (const p of batch) clearTimeout(p.timer);
      this.inFlight++;
      void this.send(batch).finally(() => {
        this.inFlight--;
        this.pump();
      });
    }
  }

  private async send(batch: Pending[]): Promise<void> {
    this.txns++;
    this.reads += batch.length;
    // One key read twice in a batch is fine for etcd (only writes must be distinct): no dedup needed here.
    try {
      const res = await this.rpc.call('range', (o, c) => c.kv.txn({ success: batch.map((p) => ({ request_range: { key: p.key } })) }, o));
      batch.forEach((p, i) => p.resolve(res.responses[i]?.response_range?.kvs[0] ?? null));
    } catch (err) {
      for (const p of batch) p.reject(err);
    }
  }
}
