import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Box } from '../../src/session/box.js';
import { BufferBudget } from '../../src/session/buffer-budget.js';
import { TokenBucket } from '../../src/session/token-bucket.js';
import { FakeClock, flush, track } from '../helpers/fake-clock.js';

/** Takes tokens until one is refused; returns how many were granted. */
function drain(bucket: TokenBucket): number {
  let n = 0;
  while (bucket.tryTake() === 0) n++;
  return n;
}

test('starts full: burst tokens at once, then the wait until the next one', () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket(100, 3, clock);
  assert.equal(bucket.tryTake(), 0);
  assert.equal(bucket.tryTake(), 0);
  assert.equal(bucket.tryTake(), 0);
  assert.equal(bucket.tryTake(), 100);
  clock.advance(40);
  assert.equal(bucket.tryTake(), 60);
});

test('refills one token every interval, up to burst', () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket(100, 3, clock);
  assert.equal(drain(bucket), 3);
  clock.advance(99);
  assert.ok(bucket.tryTake() > 0);
  clock.advance(1);
  assert.equal(bucket.tryTake(), 0, 'one token after one interval');
  assert.ok(bucket.tryTake() > 0);
  clock.advance(250);
  assert.equal(drain(bucket), 2, 'two whole intervals, the partial one carries over');
  clock.advance(50);
  assert.equal(bucket.tryTake(), 0, 'the carried-over 50 ms plus 50 ms make a token');
  clock.advance(10_000);
  assert.equal(drain(bucket), 3, 'never more than burst');
});

test('a bucket left full while idle still grants only burst at once', () => {
  // Regression: time spent with the bucket already full used to be credited
  // as soon as it was emptied, so after any idle period a writer got burst
  // tokens and then (idle time / interval) more, up to burst again.
  const clock = new FakeClock();
  const bucket = new TokenBucket(100, 2, clock);
  clock.advance(1_000);
  assert.equal(drain(bucket), 2);
  assert.equal(bucket.tryTake(), 100);
  clock.advance(100);
  assert.equal(drain(bucket), 1);
});

test('sustained rate equals one message per interval', () => {
  const clock = new FakeClock();
  const bucket = new TokenBucket(20, 5, clock);
  drain(bucket);
  let granted = 0;
  for (let ms = 0; ms < 1_000; ms++) {
    clock.advance(1);
    if (bucket.tryTake() === 0) granted++;
  }
  assert.equal(granted, 50);
});

function makeBox(clock: FakeClock, rate: { intervalMs: number; burst: number } | null): Box {
  return new Box(
    Buffer.alloc(64, 1),
    { bufferBytes: 1 << 20, rateLimit: rate, acquireWaitMs: 250 },
    new BufferBudget(1 << 30),
    clock,
  );
}

test('box: one token per message whatever its size; a writer over the limit is slowed, not cut off', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { intervalMs: 500, burst: 2 });
  await box.write(Buffer.alloc(100_000));
  await box.write(Buffer.alloc(0));
  assert.equal(box.queuedMessages, 2);

  const third = track(box.write(Buffer.from('c')));
  await flush();
  assert.equal(third.result.state, 'pending', 'out of tokens: the write waits');
  clock.advance(499);
  await flush();
  assert.equal(third.result.state, 'pending');
  clock.advance(1);
  await flush();
  assert.equal(third.result.state, 'fulfilled', 'one interval later it goes through');
  assert.equal(box.queuedMessages, 3);

  // a writer keeps writing, one message after another: every write
  // succeeds, paced at one per interval
  let done = 0;
  const writer = track(
    (async () => {
      for (let i = 0; i < 3; i++) {
        await box.write(Buffer.from('x'));
        done++;
      }
    })(),
  );
  await flush();
  assert.equal(done, 0);
  for (let i = 1; i <= 3; i++) {
    clock.advance(500);
    await flush();
    assert.equal(done, i, `write ${i} after ${i} intervals`);
  }
  assert.equal(writer.result.state, 'fulfilled', 'nobody is cut off');
  assert.equal(box.queuedMessages, 6);
  assert.deepEqual(
    [await box.read(), await box.read(), await box.read()].map((m) => m.length),
    [100_000, 0, 1],
  );
});

test('box without a rate limit never waits for tokens', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, null);
  for (let i = 0; i < 1_000; i++) await box.write(Buffer.from([i & 0xff]));
  assert.equal(box.queuedMessages, 1_000);
  assert.equal(clock.pending, 0);
});
