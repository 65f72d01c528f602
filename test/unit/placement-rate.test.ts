import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirectoryUnavailableError } from '../../src/directory/directory.js';
import { PlacementRate } from '../../src/directory/placement-rate.js';
import { FakeClock, flush } from '../helpers/fake-clock.js';

/** Starts `n` acquisitions; returns their settled states, updated as they settle. */
function start(rate: PlacementRate, n: number): ('waiting' | 'granted' | 'refused')[] {
  const states: ('waiting' | 'granted' | 'refused')[] = [];
  for (let i = 0; i < n; i++) {
    states.push('waiting');
    rate.acquire().then(
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
