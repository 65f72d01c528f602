/**
 * The etcd directory against a real etcd: placement races, cached lookups,
 * lease expiry and revocation, fencing, etcd outages, compaction, no SID in
 * etcd. Members run in the test process.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import type { EtcdDirectory } from '../../src/directory/etcd/etcd-directory.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, randomRoute, until } from '../helpers/etcd-directory.js';

describe('etcd directory, one etcd member', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd.stop();
  });

  test('three members: 1,000 concurrent placements of one route agree on one owner; 1,000 routes spread', async (t) => {
    const prefix = '/race/';
    const members: EtcdDirectory[] = [];
    t.after(() => Promise.all(members.map((m) => m.close({ revoke: true }))));
    // A burst of 1,000 placements queues behind maxTxnsInFlight: a deadline with room for the queue.
    for (let i = 0; i < 3; i++) members.push(await member(etcd.endpoints, `r${i}`, { prefix, callTimeoutMs: 10_000 }, 7000 + i));
    await until(() => members.every((m) => m.instances().length === 3), 5000, 'every member sees 3 instances');

    const route = randomRoute();
    const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => members[i % 3].lookup(route, { place: true })));
    const owners = new Set(answers.map((a) => JSON.stringify(a)));
    assert.equal(owners.size, 1, `one owner, got ${[...owners].join(' ')}`);
    const owner = answers[0];
    assert.ok(owner);
    assert.equal(members.filter((m) => m.servesHere(route)).length <= 1, true);
    const ownerMember = members.find((m) => m.selfId === owner.id);
    assert.ok(ownerMember);
    await until(() => ownerMember.servesHere(route), 3000, 'the owner serves the route');
    assert.deepEqual(members.filter((m) => m.servesHere(route)).map((m) => m.selfId), [owner.id]);

    const perOwner = new Map<string, number>();
    const routes = Array.from({ length: 1000 }, () => randomRoute());
    const placed = await Promise.all(routes.map((r, i) => members[i % 3].lookup(r, { place: true })));
    for (const p of placed) {
      assert.ok(p);
      perOwner.set(p.id, (perOwner.get(p.id) ?? 0) + 1);
    }
    const counts = [...perOwner.values()];
    assert.equal(counts.length, 3, `all three instances got sessions: ${JSON.stringify([...perOwner])}`);
    const mean = 1000 / 3;
    assert.ok(Math.max(...counts) / mean < 1.25, `max/mean ${(Math.max(...counts) / mean).toFixed(3)}: ${JSON.stringify([...perOwner])}`);
    // Every member answers the same owner for every route, from its cache once the watch caught up.
    await until(() => members.every((m) => routes.every((r) => m.servesHere(r) === (m.selfId === placed[routes.indexOf(r)]?.id))), 5000, 'fencing agrees');
  });

  test('a cached lookup makes no etcd call', async (t) => {
    const prefix = '/cached/';
    const a = await member(etcd.endpoints, 'a', { prefix });
    const gateway = await member(etcd.endpoints, null, { prefix });
    t.after(() => Promise.all([a.close({ revoke: true }), gateway.close()]));
    await until(() => gateway.instances().length === 1, 3000, 'the gateway sees the relay');
    const route = randomRoute();
    const placed = await gateway.lookup(route, { place: true });
    assert.equal(placed?.id, 'a');
    await until(() => a.servesHere(route), 3000, 'the relay sees its mapping');
    const before = [a.etcdCalls, gateway.etcdCalls];
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(await gateway.lookup(route, { place: true }), placed);
      assert.deepEqual(await a.lookup(route, { place: false }), placed);
    }
    assert.deepEqual([a.etcdCalls, gateway.etcdCalls], before);
    assert.equal(await gateway.lookup(randomRoute(), { place: false }), null, 'unknown route, no place: null');
  });
});
