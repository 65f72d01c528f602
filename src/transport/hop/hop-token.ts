/**
 * The hop's authentication: a cluster secret every relay and gateway holds
 * (docs/gateway-hop.md). Only a caller presenting it may use the hop and so
 * forward a client address; compared in constant time.
 */
import { createHash, timingSafeEqual } from 'node:crypto';

export class HopToken {
  private readonly digest: Buffer;

  constructor(readonly value: string) {
    if (value.length === 0) throw new Error('the hop token is empty');
    this.digest = createHash('sha256').update(value).digest();
  }

  /** True when `presented` is the token. Hashing first keeps the compare constant-time whatever the length. */
  matches(presented: unknown): boolean {
    if (typeof presented !== 'string') return false;
    return timingSafeEqual(createHash('sha256').update(presented).digest(), this.digest);
  }
}
