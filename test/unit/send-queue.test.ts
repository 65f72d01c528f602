/**
 * The legacy send queue's hold on its source (rest-ws-v1/send-queue.ts):
 * paused while a write waits, and for one event-loop turn after a large
 * input, resumed only when neither holds.
 */
import assert from 'node:assert/strict';
import { setImmediate as nextTurn } from 'node:timers/promises';
import { test } from 'node:test';
import type { LegacyMailbox, SendHalf } from '../../src/relay/legacy-mailbox.js';
import type { Logger } from '../../src/observe/logger.js';
import { SendQueue } from '../../src/transport/rest-ws-v1/send-queue.js';

interface Harness {
  queue: SendQueue;
  /** 'pause' / 'resume' calls on the source, in order. */
  calls: string[];
  /** Lets the pending openSend finish (with a half whose writes complete at once). */
  grant(): void;
}

function harness(): Harness {
  const calls: string[] = [];
  let grant: () => void = () => assert.fail('no openSend pending');
  const half = { write: async () => undefined, release: () => undefined, onBoxClosed: () => undefined } as unknown as SendHalf;
  const mailbox = {
    openSend: () =>
      new Promise<SendHalf>((resolve) => {
        grant = () => resolve(half);
      }),
  } as unknown as LegacyMailbox;
  const queue = new SendQueue({
    mailbox,
    logger: { debug: () => undefined } as unknown as Logger,
    call: { transport: 'websocket', address: '127.0.0.1' },
    source: { pause: () => calls.push('pause'), resume: () => calls.push('resume') },
    fail: (err) => assert.fail(`send queue failed: ${String(err)}`),
    caughtUp: () => undefined,
  });
  return { queue, calls, grant: () => grant() };
}

const box = { desc: { streamId: Buffer.alloc(64) }, msg: Buffer.from('x') };

test('after a large input the source is paused until the next turn', async () => {
  const h = harness();
  h.queue.yieldTurn();
  h.queue.yieldTurn();
  assert.deepEqual(h.calls, ['pause']);
  await nextTurn();
  assert.deepEqual(h.calls, ['pause', 'resume']);
  h.queue.close();
});

test('the end of a yielded turn does not resume a source held by a waiting write', async () => {
  const h = harness();
  h.queue.push(box);
  h.queue.flush();
  // A second input while the first write waits for its slot: the source is held.
  h.queue.push(box);
  h.queue.flush();
  assert.deepEqual(h.calls, ['pause']);
  h.queue.yieldTurn();
  await nextTurn();
  assert.deepEqual(h.calls, ['pause'], 'resumed while a write still waits');
  h.grant();
  // The queue is written (a few promise turns), then the source is resumed once.
  for (let i = 0; i < 10 && h.calls.length < 2; i++) await nextTurn();
  assert.deepEqual(h.calls, ['pause', 'resume']);
  h.queue.close();
});

test('a closed queue leaves its source alone', async () => {
  const h = harness();
  h.queue.yieldTurn();
  h.queue.close();
  await nextTurn();
  assert.deepEqual(h.calls, ['pause']);
});
