/**
 * limits.maxStreamsPerConnection with a clear answer. HTTP/2 SETTINGS already
 * tell clients the limit, but a client at the limit just queues its next
 * stream and hangs; counting calls per connection lets the one over the
 * limit fail with RESOURCE_EXHAUSTED naming the limit instead.
 */
import { limitReached } from '../session/errors.js';

export class StreamsPerConnection {
  /** Open calls by connection (grpc-js peer `address:port`, unique per TCP connection). */
  private readonly open = new Map<string, number>();

  constructor(
    private readonly limit: number,
    private readonly onLimit: (configKey: string, client: string) => void,
  ) {}

  /** Counts one more call on `peer`'s connection, or throws LIMIT_REACHED. Returns the idempotent release. */
  acquire(peer: string): () => void {
    const count = (this.open.get(peer) ?? 0) + 1;
    if (count > this.limit) {
      this.onLimit('limits.maxStreamsPerConnection', peer);
      throw limitReached('limits.maxStreamsPerConnection', this.limit);
    }
    this.open.set(peer, count);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const left = (this.open.get(peer) ?? 1) - 1;
      if (left > 0) this.open.set(peer, left);
      else this.open.delete(peer);
    };
  }
}

/** What a call holds before it has acquired anything. */
export const NOTHING_HELD = (): void => undefined;
