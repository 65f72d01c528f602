/**
 * limits.maxStreamsPerConnection with a clear answer. HTTP/2 SETTINGS already
 * tell clients the limit, but a client at the limit just queues its next
 * stream and hangs; counting calls per connection lets the one over the
 * limit fail with RESOURCE_EXHAUSTED naming the limit instead.
 */
import { limitReached } from '../session/errors.js';
import { KeyedQuota } from '../session/keyed-quota.js';

export class StreamsPerConnection {
  /** Open calls by connection (grpc-js peer `address:port`, unique per TCP connection). */
  private readonly open: KeyedQuota;

  constructor(
    private readonly limit: number,
    private readonly onLimit: (configKey: string, client: string) => void,
  ) {
    this.open = new KeyedQuota(limit);
  }

  /** Counts one more call on `peer`'s connection, or throws LIMIT_REACHED. Returns the idempotent release. */
  acquire(peer: string): () => void {
    const release = this.open.take(peer);
    if (release) return release;
    this.onLimit('limits.maxStreamsPerConnection', peer);
    throw limitReached('limits.maxStreamsPerConnection', this.limit);
  }
}

/** What a call holds before it has acquired anything. */
export const NOTHING_HELD = (): void => undefined;
