import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ReadPump } from '../../src/relay/read-pump.js';
import { Box } from '../../src/session/box.js';
import { BufferBudget } from '../../src/session/buffer-budget.js';
import { MESSAGE_OVERHEAD_BYTES } from '../../src/session/message-queue.js';
import { FakeClock, flush } from '../helpers/fake-clock.js';

const MESSAGE_BYTES = 100;
const COST = MESSAGE_BYTES + MESSAGE_OVERHEAD_BYTES;
const BOX_BYTES = 10 * COST;

/** One writer, as a box has: writes `count` messages in turn; `written` counts the accepted ones. */
function writeInTurn(box: Box, count: number): { written: number } {
  const progress = { written: 0 };
  void (async () => {
    for (let i = 0; i < count; i++) {
      await box.write(Buffer.alloc(MESSAGE_BYTES, i));
      progress.written++;
    }
  })();
  return progress;
}

function setup(): { box: Box; budget: BufferBudget; handed: Buffer[]; callbacks: (() => void)[]; pump: ReadPump } {
  const budget = new BufferBudget(1 << 20);
  const box = new Box(Buffer.alloc(64), { bufferBytes: BOX_BYTES, rateLimit: null, acquireWaitMs: 250 }, budget, new FakeClock());
  const handed: Buffer[] = [];
  const callbacks: (() => void)[] = [];
  // A transport that takes every message (write() says true, as a grpc-js
  // stream does for its first 16) and never flushes: a reader that stopped reading.
  const pump = new ReadPump(
    box,
    (msg, flushed) => {
      handed.push(msg);
      callbacks.push(flushed);
      return true;
    },
    () => undefined,
  );
  return { box, budget, handed, callbacks, pump };
}

test('ReadPump: a transport that never flushes holds no more than the box bound', async () => {
  const { box, budget, handed, pump } = setup();
  pump.resume();
  const writer = writeInTurn(box, 50);
  await flush();
  assert.equal(handed.length, 10, 'the transport got exactly what fits the box');
  assert.equal(box.queuedMessages, 0);
  assert.equal(budget.usedBytes, BOX_BYTES, 'what the transport holds is counted');
  assert.equal(writer.written, 10, 'the writer is pushed back');
});

test('ReadPump: each flush settles the oldest message and lets the writer go on', async () => {
  const { box, budget, handed, callbacks, pump } = setup();
  pump.resume();
  const writer = writeInTurn(box, 12);
  await flush();
  assert.equal(handed.length, 10);
  callbacks[0]();
  callbacks[1]();
  await flush();
  assert.equal(handed.length, 12, 'two flushed, two more handed over');
  assert.equal(writer.written, 12);
  for (const cb of callbacks.slice(2)) cb();
  assert.equal(budget.usedBytes, 0);
  assert.deepEqual(
    handed.map((m) => m[0]),
    Array.from({ length: 12 }, (_, i) => i),
    'in order, each once',
  );
});

test('ReadPump: releasing the reader settles what the transport held', async () => {
  const { box, budget, pump } = setup();
  const lease = await box.attachReader();
  pump.resume();
  for (let i = 0; i < 10; i++) await box.write(Buffer.alloc(MESSAGE_BYTES));
  await flush();
  assert.equal(budget.usedBytes, BOX_BYTES);
  box.detach(lease);
  assert.equal(budget.usedBytes, 0);
});
