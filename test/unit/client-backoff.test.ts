/**
 * Reconnect backoff: ceilings 100 ms doubling to a 10 s cap, each wait
 * uniformly random in [0, ceiling] (full jitter), reset after a success.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Backoff, INITIAL_BACKOFF_MS, MAX_BACKOFF_MS, sleep } from '../../src/client/backoff.js';

const CEILINGS = [100, 200, 400, 800, 1600, 3200, 6400, 10_000, 10_000, 10_000];

describe('client: backoff with full jitter', () => {
  test('defaults: 100 ms first ceiling, 10 s cap', () => {
    assert.equal(INITIAL_BACKOFF_MS, 100);
    assert.equal(MAX_BACKOFF_MS, 10_000);
  });

  test('random 1 (upper bound) gives the ceilings: doubling, then capped', () => {
    const b = new Backoff({ random: () => 1 });
    assert.deepEqual(
      CEILINGS.map(() => b.next()),
      CEILINGS,
    );
    assert.equal(b.attempt, CEILINGS.length);
  });

  test('random 0 (lower bound) gives 0: full jitter reaches down to no wait', () => {
    const b = new Backoff({ random: () => 0 });
    for (let i = 0; i < 12; i++) assert.equal(b.next(), 0);
  });

  test('each wait is scaled by the random draw within its ceiling', () => {
    const b = new Backoff({ random: () => 0.5 });
    assert.deepEqual(
      CEILINGS.map(() => b.next()),
      CEILINGS.map((c) => c / 2),
    );
  });

  test('with Math.random every wait stays in [0, ceiling] and the spread covers the range', () => {
    const waits: number[][] = CEILINGS.map(() => []);
    for (let run = 0; run < 2000; run++) {
      const b = new Backoff();
      CEILINGS.forEach((ceiling, i) => {
        const w = b.next();
        assert.ok(w >= 0 && w <= ceiling, `attempt ${i + 1}: ${w} within [0, ${ceiling}]`);
        waits[i].push(w);
      });
    }
    // Full jitter, not "ceiling/2 + jitter": both the low and the high quarter of each range are used.
    CEILINGS.forEach((ceiling, i) => {
      assert.ok(waits[i].some((w) => w < ceiling / 4), `attempt ${i + 1} reaches the low quarter`);
      assert.ok(waits[i].some((w) => w > (ceiling * 3) / 4), `attempt ${i + 1} reaches the high quarter`);
      assert.ok(Math.max(...waits[i]) <= MAX_BACKOFF_MS);
    });
  });

  test('reset starts from the first ceiling again', () => {
    const b = new Backoff({ random: () => 1 });
    for (let i = 0; i < 5; i++) b.next();
    assert.equal(b.currentCeilingMs, 3200);
    b.reset();
    assert.equal(b.attempt, 0);
    assert.equal(b.next(), 100);
  });

  test('a random() of 1 or above never exceeds the ceiling', () => {
    const b = new Backoff({ random: () => 1.5 });
    assert.equal(b.next(), 100);
  });

  test('custom bounds are validated', () => {
    assert.throws(() => new Backoff({ initialMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ initialMs: 500, maxMs: 100 }), RangeError);
    const b = new Backoff({ initialMs: 10, maxMs: 25, random: () => 1 });
    assert.deepEqual([b.next(), b.next(), b.next()], [10, 20, 25]);
  });

  test('sleep is cut short by an abort', async () => {
    const ac = new AbortController();
    const started = Date.now();
    const slept = sleep(60_000, ac.signal);
    ac.abort(new Error('stop'));
    await assert.rejects(slept, /stop/);
    assert.ok(Date.now() - started < 1000);
  });
});
