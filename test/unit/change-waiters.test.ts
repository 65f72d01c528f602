/**
 * ChangeWaiters: lookups held until their answer may change. Every wait here
 * is an hour long, so a waiter that is not woken by what the test does
 * fails the test by its timeout instead of passing late.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChangeWaiters } from '../../src/directory/change-waiters.js';

const HOUR_MS = 3_600_000;
const TEST_TIMEOUT = { timeout: 10_000 };

/** Whether `p` has settled by the time already-queued callbacks ran. */
async function settled(p: Promise<unknown>): Promise<boolean> {
  let done = false;
  void p.then(() => (done = true));
  await new Promise((r) => setImmediate(r));
  return done;
}

test('a change of the route wakes its waiters only', TEST_TIMEOUT, async () => {
  const w = new ChangeWaiters(100);
  const a1 = w.wait('route-a', 'relay-1', HOUR_MS);
  const a2 = w.wait('route-a', null, HOUR_MS);
  const b = w.wait('route-b', 'relay-1', HOUR_MS);
  assert.equal(w.waiting, 3);
  w.routeChanged('route-a');
  await Promise.all([a1, a2]);
  assert.equal(await settled(b), false, 'another route still waits');
  assert.equal(w.waiting, 1);
  w.routeChanged('route-b');
  await b;
  assert.equal(w.waiting, 0);
});

test('an owner going wakes the lookups that could not reach it, not those waiting for a placement', TEST_TIMEOUT, async () => {
  const w = new ChangeWaiters(100);
  const onDead = [w.wait('r1', 'relay-dead', HOUR_MS), w.wait('r2', 'relay-dead', HOUR_MS)];
  const onOther = w.wait('r3', 'relay-live', HOUR_MS);
  const notPlaced = w.wait('r4', null, HOUR_MS);
  w.ownerChanged('relay-dead');
  await Promise.all(onDead);
  assert.equal(await settled(onOther), false);
  assert.equal(await settled(notPlaced), false);
  assert.equal(w.waiting, 2);
  w.wakeEveryone();
  await Promise.all([onOther, notPlaced]);
  assert.equal(w.waiting, 0);
});

test('the wait runs out, or ends when the asker goes away', TEST_TIMEOUT, async () => {
  const w = new ChangeWaiters(100);
  assert.equal(await w.wait('r', 'x', 5), true, 'held, then ran out');
  const gone = new AbortController();
  const held = w.wait('r', 'x', HOUR_MS, gone.signal);
  assert.equal(w.waiting, 1);
  gone.abort();
  assert.equal(await held, true);
  assert.equal(w.waiting, 0);
  // Already aborted, or no wait asked for: answered at once, nothing held.
  assert.equal(await w.wait('r', 'x', HOUR_MS, gone.signal), false);
  assert.equal(await w.wait('r', 'x', 0), false);
  assert.equal(w.waiting, 0);
});

test('past maxWaiting a lookup is answered at once; a freed slot holds again', TEST_TIMEOUT, async () => {
  const w = new ChangeWaiters(2);
  const first = w.wait('r1', 'x', HOUR_MS);
  const second = w.wait('r2', 'x', HOUR_MS);
  assert.equal(await w.wait('r3', 'x', HOUR_MS), false, 'over the cap: not held');
  assert.equal(w.waiting, 2);
  w.routeChanged('r1');
  await first;
  const again = w.wait('r3', 'x', HOUR_MS);
  assert.equal(await settled(again), false, 'held again once below the cap');
  w.wakeEveryone();
  await Promise.all([second, again]);
  assert.equal(w.waiting, 0);
});

test('a waiter woken twice (change and timeout in one turn) is counted out once', TEST_TIMEOUT, async () => {
  const w = new ChangeWaiters(10);
  const held = w.wait('r', 'x', HOUR_MS);
  w.routeChanged('r');
  w.ownerChanged('x');
  w.wakeEveryone();
  await held;
  assert.equal(w.waiting, 0);
  const next = w.wait('r', 'x', HOUR_MS);
  assert.equal(w.waiting, 1);
  w.ownerChanged('x');
  await next;
});
