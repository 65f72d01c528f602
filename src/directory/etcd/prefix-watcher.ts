/**
 * Lists everything under the prefix (paginated, at one revision) into the
 * cache, then watches from the next revision. A broken stream resumes from
 * the last revision seen; a watch canceled because etcd compacted past it
 * lists again. Never throws from a stream event: a watch 'error' is a
 * reconnect, not a crash.
 */
import type { IDuplexStream, IKeyValue, IWatchRequest, IWatchResponse } from 'etcd3';
import type { Logger } from '../../observe/logger.js';
import type { DirectoryCache } from './directory-cache.js';
import type { EtcdRpc } from './etcd-rpc.js';
import { prefixEnd } from './keys.js';

/** Keys per range page: bounded reply size however large the session map grows. */
export const RANGE_PAGE_KEYS = 1000;
const RECONNECT_MIN_MS = 100;
const RECONNECT_MAX_MS = 2000;
/**
 * A watch on a stalled member (paused, partitioned) says nothing, and gRPC
 * keepalive needs >= 15 s to notice. A quiet watch is asked for progress this
 * often; no answer within the call deadline counts as broken (lookups then
 * read etcd, and the watch moves to the next endpoint).
 */
const PROBE_INTERVAL_MS = 2000;

type WatchStream = IDuplexStream<IWatchRequest, IWatchResponse>;

export interface ListedKey {
  key: string;
  value: string;
  modRevision: bigint;
  /** Lease the key is bound to (decimal; '0': none). */
  lease: string;
}

/** Every key under `prefix` at one revision, page by page, each page under the call deadline. */
export async function listPrefix(rpc: EtcdRpc, prefix: string): Promise<{ entries: ListedKey[]; revision: bigint }> {
  const end = prefixEnd(prefix);
  const entries: ListedKey[] = [];
  let from = Buffer.from(prefix);
  let revision: bigint | null = null;
  for (;;) {
    const res = await rpc.call('range', (o, c) =>
      c.kv.range({ key: from, range_end: end, limit: RANGE_PAGE_KEYS, ...(revision !== null ? { revision: revision.toString() } : {}) }, o),
    );
    revision ??= BigInt(res.header.revision);
    for (const kv of res.kvs) entries.push(toListed(kv));
    if (!res.more || res.kvs.length === 0) return { entries, revision };
    // Next page: the key right after the last one.
    from = Buffer.concat([res.kvs[res.kvs.length - 1].key, Buffer.from([0])]);
  }
}

function toListed(kv: IKeyValue): ListedKey {
  return { key: kv.key.toString(), value: kv.value.toString(), modRevision: BigInt(kv.mod_revision), lease: kv.lease };
}

export class PrefixWatcher {
  /** The watch stream is established and delivering (the cache is authoritative). */
  watching = false;
  /** Revision the cache reflects. */
  revision = 0n;
  relists = 0;
  private stream: WatchStream | null = null;
  private stopped = false;
  private held = false;
  /** The next stream goes to the next endpoint (the last one broke). */
  private moveOn = false;
  private backoffMs = RECONNECT_MIN_MS;
  private timer: NodeJS.Timeout | null = null;
  private readonly probeTimer: NodeJS.Timeout;
  private lastHeardAt = 0;
  private probeSentAt: number | null = null;

  constructor(
    private readonly rpc: EtcdRpc,
    private readonly prefix: string,
    private readonly cache: DirectoryCache,
    private readonly logger: Logger,
    private readonly callTimeoutMs: number,
  ) {
    this.probeTimer = setInterval(() => this.probe(), PROBE_INTERVAL_MS);
    this.probeTimer.unref();
  }

  private probe(): void {
    const stream = this.stream;
    if (!stream || !this.watching) return;
    const now = Date.now();
    if (this.probeSentAt !== null) {
      if (now - this.probeSentAt > this.callTimeoutMs) this.onBroken(stream, 'watch progress not answered');
      return;
    }
    if (now - this.lastHeardAt < PROBE_INTERVAL_MS) return;
    this.probeSentAt = now;
    stream.write({ progress_request: {} });
  }

  /** Lists, then watches; rejects (DirectoryUnavailableError) when the listing cannot be read. */
  async start(): Promise<void> {
    await this.relist();
    void this.openWatch();
  }

  /**
   * Tests: `true` drops the stream and keeps it down (a disconnected or slow
   * watcher); `false` reconnects from the last revision seen.
   */
  hold(on: boolean): void {
    this.held = on;
    if (on) this.closeStream();
    else this.reconnect(false);
  }

  stop(): void {
    this.stopped = true;
    this.watching = false;
    clearInterval(this.probeTimer);
    if (this.timer) clearTimeout(this.timer);
    this.closeStream();
  }

  private async relist(): Promise<void> {
    const { entries, revision } = await listPrefix(this.rpc, this.prefix);
    this.cache.reset(entries);
    this.revision = revision;
    this.relists++;
  }

  private async openWatch(): Promise<void> {
    if (this.stopped) return;
    try {
      this.rpc.calls++;
      const stream = await this.rpc.streamClient(this.moveOn).watchClient.watch();
      this.moveOn = false;
      if (this.stopped) {
        stream.cancel();
        return;
      }
      this.stream = stream;
      stream.on('data', (res: IWatchResponse) => this.onResponse(stream, res));
      stream.on('error', (err: Error) => this.onBroken(stream, err.message));
      stream.on('end', () => this.onBroken(stream, 'watch stream ended'));
      stream.write({
        create_request: { key: Buffer.from(this.prefix), range_end: prefixEnd(this.prefix), start_revision: (this.revision + 1n).toString() },
      });
    } catch (err) {
      this.onBroken(null, err instanceof Error ? err.message : String(err));
    }
  }

  private onResponse(stream: WatchStream, res: IWatchResponse): void {
    if (stream !== this.stream) return;
    this.lastHeardAt = Date.now();
    this.probeSentAt = null;
    if (res.canceled) {
      const compacted = BigInt(res.compact_revision || '0');
      if (compacted > 0n) {
        // We fell behind a compaction: the events we missed are gone; read the whole state again.
        this.logger.warn({ compactRevision: compacted.toString(), revision: this.revision.toString() }, 'directory watch compacted; listing again');
        this.closeStream();
        this.reconnect(true);
      } else {
        this.onBroken(stream, res.cancel_reason || 'watch canceled');
      }
      return;
    }
    if (res.created) {
      this.watching = true;
      this.backoffMs = RECONNECT_MIN_MS;
    }
    for (const event of res.events) {
      const modRevision = BigInt(event.kv.mod_revision);
      if (event.type === 'Put') this.cache.put(event.kv.key.toString(), event.kv.value.toString(), modRevision);
      else this.cache.delete(event.kv.key.toString(), modRevision);
      if (modRevision > this.revision) this.revision = modRevision;
    }
  }

  private onBroken(stream: WatchStream | null, reason: string): void {
    if (stream !== this.stream || this.stopped) return;
    this.rpc.lastError = `watch: ${reason}`;
    this.closeStream();
    this.moveOn = true;
    this.reconnect(false);
  }

  private reconnect(relist: boolean): void {
    if (this.stopped || this.held || this.timer) return;
    this.watching = false;
    // Jitter: every member reconnecting at once after an etcd restart is a stampede.
    const delay = this.backoffMs * (0.5 + Math.random());
    this.backoffMs = Math.min(RECONNECT_MAX_MS, this.backoffMs * 2);
    this.timer = setTimeout(() => {
      this.timer = null;
      const step = relist ? this.relist() : Promise.resolve();
      step.then(
        () => this.openWatch(),
        (err: unknown) => {
          this.rpc.lastError = `watch list: ${err instanceof Error ? err.message : String(err)}`;
          this.reconnect(true);
        },
      );
    }, delay);
    this.timer.unref();
  }

  private closeStream(): void {
    const stream = this.stream;
    this.stream = null;
    this.watching = false;
    this.probeSentAt = null;
    if (stream) {
      (stream as unknown as NodeJS.EventEmitter).removeAllListeners('data');
      (stream as unknown as NodeJS.EventEmitter).on('error', () => undefined);
      stream.cancel();
    }
  }
}
