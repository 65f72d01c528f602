import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { DirectoryUnavailableError } from '../../src/directory/directory.js';
import { PlacementRate } from '../../src/directory/placement-rate.js';
import { FakeClock, flush } from '../helpers/fake-clock.js';

/** Starts `n` acquisitions (for `client`, if given); returns their settled states, updated as they settle. */
function start(rate: PlacementRate, n: number, client?: string): ('waiting' | 'granted' | 'refused')[] {
  const states: ('waiting' | 'granted' | 'refused')[] = [];
  for (let i = 0; i < n; i++) {
    states.push('waiting');
    rate.acquire(Infinity, client).then(
      () => (states[i] = 'granted'),
      (err: unknown) => {
        assert.ok(err instanceof DirectoryUnavailableError);
        states[i] = 'refused';
      },
    );
  }
  return states;
}

const count = (states: string[], s: string): number => states.filter((x) => x === s).length;

test('one second\'s worth passes at once, the next waits one interval', async () => {
  const clock = new FakeClock();
  const rate = new PlacementRate(10, 1000, clock);
  const states = start(rate, 11);
  await flush();
  assert.equal(count(states, 'granted'), 10);
  assert.equal(states[10], 'waiting');
  assert.equal(rate.waiting, 1);
  clock.advance(99);
  await flush();
  assert.equal(states[10], 'waiting');
  clock.advance(1);
  await flush();
  assert.equal(states[10], 'granted');
  assert.equal(rate.waiting, 0);
});

test('a storm: the rate within the wait bound is queued in order, the rest refused at once', async () => {
  const clock = new FakeClock();
  // 100/s, waits of at most 500 ms: 100 at once, 50 queued, the rest refused.
  const rate = new PlacementRate(100, 500, clock);
  let hooked = 0;
  rate.onRefused = () => hooked++;
  const states = start(rate, 400);
  await flush();
  assert.equal(count(states, 'granted'), 100);
  assert.equal(count(states, 'refused'), 250);
  assert.equal(rate.refused, 250);
  assert.equal(hooked, 250, 'each refusal is reported as it happens');
  assert.equal(rate.waiting, 50);
  assert.ok(states.slice(100, 150).every((s) => s === 'waiting'), 'the first 50 over the burst wait');
  clock.advance(250);
  await flush();
  assert.equal(count(states, 'granted'), 125, 'one every 10 ms');
  clock.advance(250);
  await flush();
  assert.equal(count(states, 'granted'), 150);
  assert.equal(rate.waiting, 0);
});

test('refused placements take no turn: after the storm the rate is whole again', async () => {
  const clock = new FakeClock();
  const rate = new PlacementRate(10, 0, clock);
  const first = start(rate, 50);
  await flush();
  assert.equal(count(first, 'granted'), 10);
  assert.equal(count(first, 'refused'), 40);
  clock.advance(1000);
  const second = start(rate, 11);
  await flush();
  assert.equal(count(second, 'granted'), 10);
  assert.equal(count(second, 'refused'), 1);
});

test('the caller\'s own deadline bounds the wait when it is shorter', async () => {
  const clock = new FakeClock();
  const rate = new PlacementRate(10, 10_000, clock);
  start(rate, 10);
  await flush();
  await assert.rejects(rate.acquire(50), DirectoryUnavailableError, 'a 100 ms wait does not fit a 50 ms budget');
  const ok = rate.acquire(150);
  clock.advance(100);
  await ok;
});

describe('fair share per client address (directory.maxPlacementShare)', () => {
  // 100/s, 1 s of queue, one address may take a tenth (10/s) before it may queue only half as long.
  const RATE = 100;
  const QUEUE_MS = 1000;
  const SHARE = 0.1;

  test('one address flooding keeps the half of the queue kept for others free: another address is placed, the flood refused as over its share', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, SHARE);
    const refusals: boolean[] = [];
    rate.onRefused = (overShare) => refusals.push(overShare);
    const flood = start(rate, 400, '203.0.113.7');
    await flush();
    // The burst (100) at once, then half a second's worth (50) queued: the flooder is far over its share.
    assert.equal(count(flood, 'granted'), RATE);
    assert.equal(rate.waiting, RATE / 2);
    assert.equal(count(flood, 'refused'), 400 - RATE - RATE / 2);
    // Refusals take no turn: each would have fit the whole queue, so each is refused for the share, not the rate.
    assert.equal(rate.refusedOverShare, 250);
    assert.deepEqual([refusals.length, refusals.every((x) => x)], [250, true]);
    // Another address finds room in the queue for its own share's burst (10), then is over its share too.
    const other = start(rate, 11, '198.51.100.9');
    await flush();
    assert.equal(count(other, 'refused'), 1);
    assert.equal(other[10], 'refused');
    assert.equal(rate.waiting, RATE / 2 + 10);
    // ...and the flood, still going, does not.
    const more = start(rate, 10, '203.0.113.7');
    await flush();
    assert.equal(count(more, 'refused'), 10);
    clock.advance(QUEUE_MS);
    await flush();
    assert.equal(count(other, 'granted'), 10, 'placed within the queue bound');
  });

  test('without the share (0) the flood fills the whole queue and the other address is refused (the fault it fixes)', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, 0);
    start(rate, 400, '203.0.113.7');
    await flush();
    const other = start(rate, 20, '198.51.100.9');
    await flush();
    assert.equal(count(other, 'refused'), 20);
    assert.equal(rate.refusedOverShare, 0);
  });

  test('one address alone gets the whole rate, queued half as long; within its share it queues the whole wait', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, SHARE);
    const own = start(rate, RATE, '192.0.2.1');
    await flush();
    assert.equal(count(own, 'granted'), RATE, 'a storm of its own sessions passes the burst at once');
    clock.advance(10_000);
    // A new address's first placement in a saturated moment may queue the whole wait.
    const saturate = start(rate, RATE + RATE / 2, '192.0.2.2');
    await flush();
    assert.equal(count(saturate, 'granted'), RATE);
    const fresh = start(rate, 1, '192.0.2.3');
    await flush();
    assert.equal(fresh[0], 'waiting', 'within its share: queued past the half');
    clock.advance(QUEUE_MS);
    await flush();
    assert.equal(fresh[0], 'granted');
  });

  test('many addresses each within their share fill the queue: another address takes the latest turn of the one waiting for the most', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, SHARE);
    // 30 addresses, 10 placements each (one share's burst): 100 at once, 100 queued, 100 refused. The queue is
    // shared out among the 20 addresses that queued: the later ones took turns of the earlier, heavier ones.
    const floods = Array.from({ length: 30 }, (_, i) => start(rate, 10, `203.0.113.${i}`));
    await flush();
    assert.equal(floods.flat().filter((x) => x === 'granted').length, RATE);
    assert.equal(rate.waiting, RATE);
    assert.ok(rate.displaced > 0);
    const refusedBefore = rate.refused;
    const displacedBefore = rate.displaced;
    const other = start(rate, 3, '198.51.100.9');
    await flush();
    assert.deepEqual(other, ['waiting', 'waiting', 'waiting'], 'queued in turns taken from the heaviest waiters');
    assert.equal(rate.waiting, RATE, 'the queue holds no more than before');
    assert.equal(rate.displaced - displacedBefore, 3);
    assert.equal(rate.refused - refusedBefore, 3, 'each taken turn is a refusal of its placement');
    clock.advance(QUEUE_MS);
    await flush();
    assert.deepEqual(other, ['granted', 'granted', 'granted'], 'within the queue bound');
  });

  test('addresses waiting for one turn each are not displaced (no turn traded back and forth): the arrival is refused', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, SHARE);
    start(rate, RATE, '192.0.2.1');
    await flush();
    const ones = Array.from({ length: RATE }, (_, i) => start(rate, 1, `10.1.0.${i}`));
    await flush();
    assert.equal(rate.waiting, RATE);
    const late = start(rate, 1, '198.51.100.9');
    await flush();
    assert.deepEqual(late, ['refused']);
    assert.equal(rate.displaced, 0);
    clock.advance(QUEUE_MS);
    await flush();
    assert.ok(ones.every((o) => o[0] === 'granted'));
  });

  test('the meter forgets: an address is within its share again once its placements are paid off, and idle addresses are not kept', async () => {
    const clock = new FakeClock();
    const rate = new PlacementRate(RATE, QUEUE_MS, clock, SHARE);
    start(rate, 30, '203.0.113.7');
    await flush();
    assert.equal(rate.clientsMetered, 1);
    // 30 placements at 10/s for the address: paid off after 3 s (at most 10 s are ever remembered).
    clock.advance(3_000);
    for (let i = 0; i < 2_000; i++) start(rate, 1, `10.0.${i >> 8}.${i & 255}`);
    await flush();
    clock.advance(60_000);
    start(rate, 1, '192.0.2.99');
    await flush();
    assert.ok(rate.clientsMetered <= 1_100, `idle addresses are swept (${rate.clientsMetered} kept)`);
  });
});
