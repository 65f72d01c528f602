/**
 * Shared gRPC channels of the client (grpc-channels.ts): per relay, security
 * and options for the whole process, each carrying at most
 * MAX_CALLS_PER_CHANNEL calls; a pinned `tls` never shares.
 * No connection is made: channels connect lazily.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connectivityState } from '@grpc/grpc-js';
import { acquireChannel, closeSharedChannels, MAX_CALLS_PER_CHANNEL } from '../../src/client/grpc-channels.js';
import { parseServer } from '../../src/client/options.js';

after(() => closeSharedChannels());

describe('client: shared gRPC channels', () => {
  const relay = parseServer('127.0.0.1:1', true);
  const other = parseServer('127.0.0.1:2', true);

  test('same relay, security and options: one channel; another relay or other options: another', () => {
    const a = acquireChannel({ server: relay, tlsSkipVerify: false });
    const b = acquireChannel({ server: relay, tlsSkipVerify: false });
    const c = acquireChannel({ server: other, tlsSkipVerify: false });
    const d = acquireChannel({ server: relay, tlsSkipVerify: false, options: { 'grpc.keepalive_time_ms': 1000 } });
    assert.equal(a.client, b.client);
    assert.notEqual(a.client, c.client);
    assert.notEqual(a.client, d.client);
    for (const lease of [a, b, c, d]) lease.release();
  });

  test('a pinned tls gets a channel of its own, closed at release', () => {
    const secure = parseServer('127.0.0.1:3', false);
    const tls = { rejectUnauthorized: true };
    const shared = acquireChannel({ server: secure, tlsSkipVerify: false });
    const pinned = acquireChannel({ server: secure, tlsSkipVerify: false, tls });
    assert.notEqual(shared.client, pinned.client);
    pinned.release();
    assert.equal(pinned.client.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN);
    assert.notEqual(shared.client.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN);
    shared.release();
  });

  test('a released channel is reused by the next acquire (kept open while idle)', () => {
    const first = acquireChannel({ server: relay, tlsSkipVerify: true });
    first.release();
    first.release(); // twice is harmless
    const again = acquireChannel({ server: relay, tlsSkipVerify: true });
    assert.equal(first.client, again.client);
    again.release();
  });

  test('a channel carries at most MAX_CALLS_PER_CHANNEL calls; the next call gets another channel, a freed place is used again', () => {
    const busy = parseServer('127.0.0.1:4', true);
    const first = Array.from({ length: MAX_CALLS_PER_CHANNEL }, () => acquireChannel({ server: busy, tlsSkipVerify: false }));
    assert.equal(new Set(first.map((l) => l.client)).size, 1);
    const overflow = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.notEqual(overflow.client, first[0].client);
    first[0].release();
    const refill = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.equal(refill.client, first[0].client, 'the first channel has a free place again');
    for (const lease of [...first, overflow, refill]) lease.release();
  });
});
