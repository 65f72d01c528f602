/**
 * IdleMappings (src/relay/idle-mappings.ts) against a FakeDirectory: routes
 * with no session in the table are released after the grace, oldest first,
 * a held route never is, and a party admitted while its route's release is
 * in flight waits for it and is placed anew (it would otherwise lose its
 * session the moment the delete lands).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { pino } from 'pino';
import { IdleMappings, routeOfSessionKey } from '../../src/relay/idle-mappings.js';
import { SessionRouter } from '../../src/relay/session-router.js';
import { FakeDirectory } from '../helpers/fake-directory.js';

const logger = pino({ level: 'silent' });
const GRACE_MS = 1000;

async function setup(): Promise<{ d: FakeDirectory; idle: IdleMappings; clock: { now: number } }> {
  const d = new FakeDirectory();
  await d.register({ id: 'relay-1', addresses: ['127.0.0.1:1'], version: 'test' });
  const clock = { now: 0 };
  const idle = new IdleMappings(d, { graceMs: GRACE_MS, sweepEveryMs: 1000, maxPerSweep: 10 }, logger, () => clock.now);
  return { d, idle, clock };
}

test('a closed session\'s mapping is released after the grace, oldest first, at most maxPerSweep; a session open again is never released', async () => {
  const { d, idle, clock } = await setup();
  const keys = ['a', 'b', 'c'].map((c) => c.repeat(64));
  for (const key of keys) d.owners.set(routeOfSessionKey(key), d.selfOwner);
  for (const key of keys) idle.sessionOpened(key);
  idle.sessionClosed(keys[0]);
  clock.now = 400;
  idle.sessionClosed(keys[1]);
  idle.sessionClosed(keys[2]);
  idle.sessionOpened(keys[2]);
  clock.now = GRACE_MS + 100;
  assert.equal(await idle.sweep(), 1, 'only the first is past its grace');
  assert.deepEqual(d.released, [routeOfSessionKey(keys[0])]);
  clock.now = 2 * GRACE_MS;
  assert.equal(await idle.sweep(), 1);
  assert.deepEqual(d.released, [routeOfSessionKey(keys[0]), routeOfSessionKey(keys[1])], 'the open session stays mapped');
  assert.equal(idle.waiting, 0);
});

test('a party admitted while its route\'s release is in flight waits for the release, then is placed anew', async () => {
  const { d, idle, clock } = await setup();
  const key = 'k'.repeat(64);
  const route = routeOfSessionKey(key);
  d.owners.set(route, d.selfOwner);
  idle.sessionOpened(key);
  idle.sessionClosed(key);
  clock.now = GRACE_MS + 1;
  // The delete takes a while to land (an etcd round trip).
  let land!: () => void;
  const landed = new Promise<void>((resolve) => (land = resolve));
  const realRelease = d.release.bind(d);
  d.release = async (routes) => {
    await landed;
    return realRelease(routes);
  };
  const router = new SessionRouter(d, logger, 0, undefined, (r) => idle.releasing(r));
  const sweeping = idle.sweep();
  assert.ok(idle.releasing(route), 'the release is in flight');
  let admitted = false;
  const admission = router.admit(route, true).then(() => (admitted = true));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(admitted, false, 'admitted while the mapping was being deleted');
  const lookupsBefore = d.lookups;
  land();
  await sweeping;
  await admission;
  assert.equal(d.lookups, lookupsBefore + 1, 'placed anew after the release');
  assert.deepEqual(d.owners.get(route), d.selfOwner);
  assert.equal(idle.releasing(route), undefined);
});
