import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { test } from 'node:test';
import type { InstanceRecord } from '../../src/directory/directory.js';
import { MemoryDirectory } from '../../src/directory/memory-directory.js';
import { choosePlacement } from '../../src/directory/placement.js';
import { isRoute, routeOfSid } from '../../src/directory/route.js';

function instance(id: string, sessions: number, draining = false): InstanceRecord {
  return { id, role: 'relay', address: `127.0.0.1:${1000 + sessions}`, addresses: [], load: { sessions, connections: 0 }, draining, version: 'test', startedAt: 0 };
}

test('route: base64url SHA-256 of the SID with bit 0 of byte 63 cleared; both SIDs of a pair share it', () => {
  const sid = createHash('sha512').update('route test').digest();
  const peer = Buffer.from(sid);
  peer[63] ^= 1;
  const key = Buffer.from(sid);
  key[63] &= 0xfe;
  const expected = createHash('sha256').update(key).digest('base64').replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
  assert.equal(routeOfSid(sid), expected);
  assert.equal(routeOfSid(peer), expected);
  assert.ok(isRoute(expected));
  assert.ok(!isRoute(`${expected}=`) && !isRoute(expected.slice(1)) && !isRoute(`+${expected.slice(1)}`));
});

test('placement skips draining instances; none left is null', () => {
  const all = [instance('a', 5, true), instance('b', 9)];
  for (const policy of ['random', 'load-aware'] as const) {
    for (let r = 0; r < 4; r++) assert.equal(choosePlacement(all, policy, () => r % 2)?.id, 'b');
    assert.equal(choosePlacement([instance('a', 0, true)], policy), null);
  }
});

test('placement never chooses a gateway, however idle', () => {
  const gateway: InstanceRecord = { ...instance('gw', 0), role: 'gateway' };
  const all = [gateway, instance('r', 50)];
  for (const policy of ['random', 'load-aware'] as const) {
    for (let r = 0; r < 4; r++) assert.equal(choosePlacement(all, policy, () => r % 2)?.id, 'r');
    assert.equal(choosePlacement([gateway], policy), null);
  }
});

test('load-aware: of two distinct random candidates, the one with fewer sessions', () => {
  const all = [instance('a', 10), instance('b', 1), instance('c', 5)];
  const picks = [0, 0]; // first pick 'a', second index 0 of the others -> 'b'
  assert.equal(choosePlacement(all, 'load-aware', () => picks.shift() ?? 0)?.id, 'b');
  const again = [2, 1]; // 'c', then index 1 skipping 'c' -> 'b'
  assert.equal(choosePlacement(all, 'load-aware', () => again.shift() ?? 0)?.id, 'b');
});

test('load-aware keeps 10,000 placements over 8 instances near the mean; random does not', () => {
  const spread = (policy: 'random' | 'load-aware'): number => {
    const all = Array.from({ length: 8 }, (_, i) => instance(`r${i}`, 0));
    for (let i = 0; i < 10_000; i++) choosePlacement(all, policy)!.load.sessions++;
    return Math.max(...all.map((a) => a.load.sessions)) / (10_000 / 8);
  };
  assert.ok(spread('load-aware') <= 1.05, `load-aware max/mean ${spread('load-aware')}`);
});

test('memory directory: the one registered instance owns every route', async () => {
  const dir = new MemoryDirectory();
  await assert.rejects(dir.lookup('x'.repeat(43), { place: true }), /no relay available/);
  await dir.register({ id: 'solo', addresses: ['127.0.0.1:8443'], version: 't' });
  const [self] = dir.instances();
  assert.deepEqual(await dir.lookup('x'.repeat(43), { place: false }), { id: 'solo', address: '127.0.0.1:8443', startedAt: self.startedAt });
  assert.ok(dir.servesHere('x'.repeat(43)));
  dir.publishLoad({ sessions: 3, connections: 4 });
  await dir.setDraining();
  assert.deepEqual(dir.instances().map((i) => [i.id, i.load.sessions, i.draining]), [['solo', 3, true]]);
  await dir.close();
  await assert.rejects(dir.lookup('x'.repeat(43), { place: false }), /directory unavailable/);
});
