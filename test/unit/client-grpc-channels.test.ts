/**
 * Shared gRPC channels of the client (grpc-channels.ts): per relay, security
 * and options for the whole process, another one only past the stream limit
 * the server's refusal taught; a pinned `tls` never shares.
 * No connection is made: channels connect lazily.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connectivityState } from '@grpc/grpc-js';
import { acquireChannel, closeSharedChannels, isStreamLimitRefusal } from '../../src/client/grpc-channels.js';
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

  test('calls share one channel until the server refuses one for its stream limit; then each channel takes that many', () => {
    const busy = parseServer('127.0.0.1:4', true);
    const first = Array.from({ length: 5 }, () => acquireChannel({ server: busy, tlsSkipVerify: false }));
    assert.equal(new Set(first.map((l) => l.client)).size, 1, 'no limit known: one channel');
    // The fifth call was refused: a connection of this server takes 4.
    first[4].refused();
    first[4].release();
    const retried = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.notEqual(retried.client, first[0].client, 'the retry goes to another channel');
    const more = Array.from({ length: 3 }, () => acquireChannel({ server: busy, tlsSkipVerify: false }));
    assert.ok(more.every((l) => l.client === retried.client), 'the second channel fills up to the learned limit');
    assert.notEqual(acquireChannel({ server: busy, tlsSkipVerify: false }).client, retried.client, 'then a third');
    first[0].release();
    const refill = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.equal(refill.client, first[0].client, 'a freed place on the first channel is used again');
  });

  test('the stream-limit refusal is told apart from other RESOURCE_EXHAUSTED answers', () => {
    assert.equal(isStreamLimitRefusal({ code: 8, details: 'limit reached: limits.maxStreamsPerConnection (1000)' }), true);
    assert.equal(isStreamLimitRefusal({ code: 8, details: 'limit reached: limits.maxBoxes (10)' }), false);
    assert.equal(isStreamLimitRefusal({ code: 14, details: 'limit reached: limits.maxStreamsPerConnection (1000)' }), false);
  });
});
