/**
 * directory.maxPlacementsPerSecond against a real etcd: a storm of new
 * sessions on one member is placed at the cap, the excess refused at once
 * with "directory unavailable" (UNAVAILABLE, which legacy clients retry),
 * and lookups of sessions already placed are never held back by it.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { DirectoryUnavailableError } from '../../src/directory/directory.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, randomRoute, until } from '../helpers/etcd-directory.js';

const RATE_PER_SECOND = 20;
const QUEUE_MS = 500;
const STORM = 100;

describe('placement rate cap, one etcd member', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd.stop();
  });

  test('a storm of placements: one second\'s worth at once, half a second\'s queued, the rest UNAVAILABLE; placed routes still answer', async (t) => {
    const prefix = '/cap/';
    const relay = await member(etcd.endpoints, 'r0', { prefix });
    t.after(() => relay.close({ revoke: true }));
    const gateway = await member(etcd.endpoints, null, { prefix, maxPlacementsPerSecond: RATE_PER_SECOND, placementQueueMs: QUEUE_MS });
    t.after(() => gateway.close());
    await until(() => gateway.instances().length === 1, 5000, 'the gateway sees the relay');
    const limitHits: string[] = [];
    gateway.onLimit = (key) => limitHits.push(key);

    const routes = Array.from({ length: STORM }, randomRoute);
    const started = Date.now();
    const outcomes = await Promise.allSettled(routes.map((r) => gateway.lookup(r, { place: true })));
    const elapsed = Date.now() - started;
    const placed = outcomes.filter((o) => o.status === 'fulfilled').length;
    const refused = outcomes.filter((o) => o.status === 'rejected');
    assert.ok(refused.every((o) => o.reason instanceof DirectoryUnavailableError), 'refusals are "directory unavailable"');
    // 20 at once + 10 within the 500 ms queue (one every 50 ms); lookups reach the cap spread over
    // the storm's own time (etcd round trips on a busy machine), which earns one more turn per 50 ms of it.
    const atLeast = RATE_PER_SECOND + (QUEUE_MS * RATE_PER_SECOND) / 1000;
    const atMost = RATE_PER_SECOND + Math.ceil((elapsed * RATE_PER_SECOND) / 1000) + 1;
    assert.ok(placed >= atLeast && placed <= atMost, `placed ${placed}, expected ${atLeast}..${atMost} (${elapsed} ms)`);
    assert.ok(refused.length >= STORM / 2, `most of the storm refused (${refused.length})`);
    assert.ok(elapsed < QUEUE_MS + 1500, `the storm was answered within the queue bound (${elapsed} ms)`);
    assert.equal(gateway.metrics().placementsRefused, STORM - placed);
    assert.equal(limitHits.length, STORM - placed, 'each refusal reaches the limit metric and refusal log');
    assert.ok(limitHits.every((k) => k === 'directory.maxPlacementsPerSecond'));

    // A placed route is answered from the cache, with no turn, even while the cap is exhausted.
    const placedRoute = routes[outcomes.findIndex((o) => o.status === 'fulfilled')];
    await Promise.allSettled(Array.from({ length: 50 }, () => gateway.lookup(randomRoute(), { place: true })));
    const owner = await gateway.lookup(placedRoute, { place: true });
    assert.equal(owner?.id, 'r0');

    // Under the rate again a second later: a refused session placed on its client's retry.
    await new Promise((r) => setTimeout(r, 2000));
    const retried = routes[outcomes.findIndex((o) => o.status === 'rejected')];
    assert.equal((await gateway.lookup(retried, { place: true }))?.id, 'r0');
  });
});
