/** AnswerPacer (src/directory/answer-pacer.ts): a burst of answers leaves a few a turn of the event loop, in order. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AnswerPacer } from '../../src/directory/answer-pacer.js';

test('at most perTurn callers a turn of the event loop, first come first served; I/O-phase work runs between turns', async () => {
  const pacer = new AnswerPacer(3);
  const order: string[] = [];
  const turns = Array.from({ length: 7 }, (_, i) => pacer.turn().then(() => order.push(`answer ${i}`)));
  assert.equal(pacer.pending, 7);
  // A macrotask queued now runs between the first and the second turn, not after all of them.
  const between = new Promise<void>((resolve) =>
    setImmediate(() => {
      order.push('between');
      resolve();
    }),
  );
  await Promise.all([...turns, between]);
  assert.deepEqual(order, ['answer 0', 'answer 1', 'answer 2', 'between', 'answer 3', 'answer 4', 'answer 5', 'answer 6']);
  assert.equal(pacer.pending, 0);
});

test('a lone caller is let through on the next turn', async () => {
  const pacer = new AnswerPacer(64);
  let through = false;
  const done = pacer.turn().then(() => (through = true));
  assert.equal(through, false, 'never in the same turn');
  await done;
  assert.equal(through, true);
});
