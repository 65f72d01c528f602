/**
 * The create-if-absent puts of new placements, many in one etcd transaction.
 * After a relay dies, all of its clients re-dial in the same second (the
 * legacy ones every 2 s, no jitter) and every session needs a new mapping at
 * once: one transaction each would queue 2,000 placements behind
 * directory.maxTxnsInFlight and fail the late ones as "directory
 * unavailable". Here a placement that finds every slot busy waits in a queue,
 * and the next free slot takes up to MAX_TXN_OPS queued creates as one
 * transaction (one raft entry): no latency is added when etcd keeps up, and a
 * storm costs a hundredth of the transactions.
 *
 * One batch is all-or-nothing in etcd: when any key already exists (a race
 * lost to another member), the failure branch reads every key; the ones that
 * exist are answered with their mapping, the rest go back to the front of the
 * queue. A batch refused as a whole (one mapping's lease just expired) is
 * retried one create per transaction, so only that placement sees the error.
 */
import type { IKeyValue } from 'etcd3';
import { DirectoryUnavailableError } from '../directory.js';
import type { EtcdRpc } from './etcd-rpc.js';
import { txnQueueTimeout, type TxnGate } from './txn-gate.js';

/** etcd's default --max-txn-ops: operations in one transaction. */
export const MAX_TXN_OPS = 128;

export interface CreateRequest {
  key: Buffer;
  value: Buffer;
  /** Lease id, decimal, that the mapping is bound to. */
  lease: string;
}

/** `created`: the key is ours at `revision`; otherwise `existing` is what etcd holds (null: absent, try again). */
export interface CreateOutcome {
  created: boolean;
  revision: bigint;
  existing: IKeyValue | null;
}

interface Pending {
  request: CreateRequest;
  resolve(outcome: CreateOutcome): void;
  reject(err: unknown): void;
  deadline: number;
  timer: NodeJS.Timeout | null;
  /** Sent in a transaction of its own (its batch was refused as a whole). */
  alone: boolean;
}

export class CreateBatcher {
  private readonly queue: Pending[] = [];
  /** Transactions sent and creates they carried, for tests and benchmarks. */
  txns = 0;
  creates = 0;

  constructor(
    private readonly rpc: EtcdRpc,
    private readonly gate: TxnGate,
    private readonly queueTimeoutMs: number,
  ) {
    // A slot freed by anyone (a replace, a release, another batch) may be the one the queue waits for.
    gate.onFree(() => this.pump());
  }

  get waiting(): number {
    return this.queue.length;
  }

  /** Creates `request.key` unless it exists; rejects with DirectoryUnavailableError after queueTimeoutMs in the queue. */
  create(request: CreateRequest): Promise<CreateOutcome> {
    return new Promise<CreateOutcome>((resolve, reject) => {
      this.enqueue({ request, resolve, reject, deadline: Date.now() + this.queueTimeoutMs, timer: null, alone: false }, false);
      this.pump();
    });
  }

  private enqueue(p: Pending, front: boolean): void {
    p.timer = setTimeout(() => {
      const i = this.queue.indexOf(p);
      if (i >= 0) this.queue.splice(i, 1);
      p.reject(txnQueueTimeout());
    }, Math.max(0, p.deadline - Date.now()));
    if (front) this.queue.unshift(p);
    else this.queue.push(p);
  }

  private pump(): void {
    while (this.queue.length > 0 && this.gate.tryAcquire()) {
      const batch = this.take();
      void this.send(batch).finally(() => this.gate.release());
    }
  }

  /** Up to MAX_TXN_OPS queued creates, distinct keys (etcd refuses a transaction naming one key twice). */
  private take(): Pending[] {
    const batch: Pending[] = [];
    const keys = new Set<string>();
    const limit = this.queue[0].alone ? 1 : MAX_TXN_OPS;
    for (let i = 0; i < this.queue.length && batch.length < limit; ) {
      const p = this.queue[i];
      const key = p.request.key.toString();
      if ((batch.length > 0 && p.alone) || keys.has(key)) {
        i++;
        continue;
      }
      keys.add(key);
      batch.push(p);
      this.queue.splice(i, 1);
      if (p.timer) clearTimeout(p.timer);
      p.timer = null;
    }
    return batch;
  }

  private async send(batch: Pending[]): Promise<void> {
    this.txns++;
    this.creates += batch.length;
    let res;
    try {
      res = await this.rpc.call('txn', (o, c) =>
        c.kv.txn(
          {
            compare: batch.map((p) => ({ key: p.request.key, target: 'Create' as const, result: 'Equal' as const, create_revision: 0 })),
            success: batch.map((p) => ({ request_put: { key: p.request.key, value: p.request.value, lease: p.request.lease } })),
            failure: batch.map((p) => ({ request_range: { key: p.request.key } })),
          },
          o,
        ),
      );
    } catch (err) {
      if (batch.length === 1 || err instanceof DirectoryUnavailableError) {
        for (const p of batch) p.reject(err);
        return;
      }
      // Refused as a whole (e.g. one lease just expired): each alone, so only the culprit fails.
      for (const p of batch.reverse()) this.enqueue({ ...p, alone: true }, true);
      return;
    }
    const revision = BigInt(res.header.revision);
    if (res.succeeded) {
      for (const p of batch) p.resolve({ created: true, revision, existing: null });
      return;
    }
    const again: Pending[] = [];
    batch.forEach((p, i) => {
      const existing = res.responses[i]?.response_range?.kvs[0] ?? null;
      // Absent while a sibling existed: this one would have been created; a single one absent is the caller's to retry.
      if (existing === null && batch.length > 1) again.push(p);
      else p.resolve({ created: false, revision, existing });
    });
    for (const p of again.reverse()) this.enqueue(p, true);
  }
}
