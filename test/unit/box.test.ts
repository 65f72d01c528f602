import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Box, type BoxOptions } from '../../src/session/box.js';
import { BufferBudget } from '../../src/session/buffer-budget.js';
import { HashmailError, type HashmailErrorCode } from '../../src/session/errors.js';
import { MESSAGE_OVERHEAD_BYTES } from '../../src/session/message-queue.js';
import { Slot } from '../../src/session/slot.js';
import { FakeClock, flush, track, type Settled } from '../helpers/fake-clock.js';

const KiB = 1024;

function makeBox(
  clock: FakeClock,
  options: Partial<BoxOptions> = {},
  budget = new BufferBudget(1 << 30),
  fill = 1,
): Box {
  return new Box(
    Buffer.alloc(64, fill),
    { bufferBytes: 64 * KiB, rateLimit: null, acquireWaitMs: 250, ...options },
    budget,
    clock,
  );
}

function msg(text: string): Buffer {
  return Buffer.from(text);
}

function isError(code: HashmailErrorCode, text?: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof HashmailError, `expected a HashmailError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (text !== undefined) assert.equal(err.message, text);
    return true;
  };
}

function assertRejected(s: Settled<unknown>, code: HashmailErrorCode, text?: string): void {
  assert.equal(s.state, 'rejected', `expected rejection with ${code}, got ${s.state}`);
  if (s.state === 'rejected') isError(code, text)(s.error);
}

// ---------------------------------------------------------------- slots

test('slot: a free slot is granted at once', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const lease = await box.attachReader();
  assert.equal(box.readSlot.lease, lease);
  assert.equal(box.writeSlot.taken, false);
  assert.equal(clock.pending, 0);
});

test('slot: a second reader waits acquireWaitMs, then "read stream occupied"; the holder keeps it', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { acquireWaitMs: 250 });
  const holder = await box.attachReader();
  const second = track(box.attachReader());
  clock.advance(249);
  await flush();
  assert.equal(second.result.state, 'pending');
  clock.advance(1);
  await flush();
  assertRejected(second.result, 'READ_OCCUPIED', 'read stream occupied');
  assert.equal(box.readSlot.lease, holder, 'the holder is never evicted');
  assert.equal(clock.pending, 0, 'no timer left behind');
  // the holder still works
  await box.write(msg('still here'));
  assert.deepEqual(await box.read(), msg('still here'));
});

test('slot: a second writer gets "write stream occupied" after the wait', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { acquireWaitMs: 100 });
  const holder = await box.attachWriter();
  const second = track(box.attachWriter());
  clock.advance(100);
  await flush();
  assertRejected(second.result, 'WRITE_OCCUPIED', 'write stream occupied');
  assert.equal(box.writeSlot.lease, holder);
  assert.match((second.result as { error: Error }).error.message, /stream occupied/);
});

test('slot: a waiter gets the slot if the holder leaves within the wait', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const holder = await box.attachReader();
  const waiter = track(box.attachReader());
  clock.advance(200);
  box.detach(holder);
  await flush();
  assert.equal(waiter.result.state, 'fulfilled');
  const lease = (waiter.result as { value: unknown }).value;
  assert.equal(box.readSlot.lease, lease);
  assert.equal(clock.pending, 0, 'its occupied timer was cleared');
  clock.advance(1_000);
  await flush();
  assert.equal(box.readSlot.lease, lease);
});

test('slot: waiters are served in arrival order', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const holder = await box.attachWriter();
  const first = track(box.attachWriter());
  clock.advance(10);
  const second = track(box.attachWriter());
  box.detach(holder);
  await flush();
  assert.equal(first.result.state, 'fulfilled');
  assert.equal(second.result.state, 'pending');
  clock.advance(250);
  await flush();
  assertRejected(second.result, 'WRITE_OCCUPIED');
});

test('slot: abort while waiting gives CANCELLED and no lease is ever granted', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const holder = await box.attachReader();
  const ac = new AbortController();
  const waiter = track(box.attachReader(ac.signal));
  await flush();
  ac.abort();
  await flush();
  assertRejected(waiter.result, 'CANCELLED');
  assert.equal(clock.pending, 0);
  box.detach(holder);
  assert.equal(box.readSlot.taken, false, 'the slot is free, not handed to the caller who left');
  clock.advance(1_000);
  await flush();
  assert.equal(box.readSlot.taken, false);
});

test('slot: an already aborted signal is refused at once, even for a free slot', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const ac = new AbortController();
  ac.abort();
  await assert.rejects(box.attachWriter(ac.signal), isError('CANCELLED'));
  assert.equal(box.writeSlot.taken, false);
});

test('slot: releasing a lease that is not the holder does nothing', async () => {
  const clock = new FakeClock();
  const slot = new Slot('READ_OCCUPIED', clock, { slotChanged: () => undefined });
  const lease = await slot.acquire(0);
  slot.release(lease);
  const next = await slot.acquire(0);
  slot.release(lease); // stale lease
  assert.equal(slot.lease, next);
});

// ---------------------------------------------------------------- queue

test('queue: messages come out in order, each once', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const writer = await box.attachWriter();
  const reader = await box.attachReader();
  for (let i = 0; i < 100; i++) await box.write(msg(`m${i}`));
  for (let i = 0; i < 100; i++) assert.deepEqual(await box.read(), msg(`m${i}`));
  assert.equal(box.queuedMessages, 0);
  assert.equal(box.queuedBytes, 0);
  assert.equal(box.delivered, 100);
  const pending = track(box.read());
  await flush();
  assert.equal(pending.result.state, 'pending', 'nothing is delivered twice');
  await box.write(msg('late'));
  await flush();
  assert.deepEqual(pending.result, { state: 'fulfilled', value: msg('late') });
  box.detach(reader);
  box.detach(writer);
});

test('queue: empty and large messages pass intact', async () => {
  const clock = new FakeClock();
  const big = Buffer.alloc(4 * 1024 * 1024, 7);
  big[4093] = 1;
  // room for both at once (each message also costs MESSAGE_OVERHEAD_BYTES)
  const box = makeBox(clock, { bufferBytes: big.length + 2 * MESSAGE_OVERHEAD_BYTES });
  await box.write(Buffer.alloc(0));
  await box.write(big);
  assert.equal((await box.read()).length, 0);
  assert.deepEqual(await box.read(), big);
});

test('queue: a reader that leaves frees the slot; the next reader gets the next undelivered message', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  await box.write(msg('a'));
  await box.write(msg('b'));
  await box.write(msg('c'));
  const r1 = await box.attachReader();
  assert.deepEqual(await box.read(), msg('a'));
  box.detach(r1);
  assert.equal(box.readSlot.taken, false, 'freed at once');
  const r2 = await box.attachReader();
  assert.deepEqual(await box.read(), msg('b'), '"a" was handed out already and is not repeated');
  assert.deepEqual(await box.read(), msg('c'));
  box.detach(r2);
});

test('queue: a reader leaving with a read pending gets CANCELLED and loses nothing', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const r1 = await box.attachReader();
  const pending = track(box.read());
  await flush();
  box.detach(r1);
  await flush();
  assertRejected(pending.result, 'CANCELLED');
  await box.write(msg('x'));
  const r2 = await box.attachReader();
  assert.deepEqual(await box.read(), msg('x'));
  box.detach(r2);
});

test('queue: a writer that writes and leaves before any reader; a later reader gets it all', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  const w = await box.attachWriter();
  await box.write(msg('one'));
  await box.write(msg('two'));
  await box.write(msg('three'));
  box.detach(w);
  assert.equal(box.writeSlot.taken, false);
  assert.equal(box.queuedMessages, 3);
  assert.equal(box.queuedBytes, 11 + 3 * MESSAGE_OVERHEAD_BYTES);
  clock.advance(60_000);
  const r = await box.attachReader();
  assert.deepEqual([await box.read(), await box.read(), await box.read()], [msg('one'), msg('two'), msg('three')]);
  box.detach(r);
});

test('queue: writes beyond bufferBytes wait until the reader takes', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { bufferBytes: 100 + 2 * MESSAGE_OVERHEAD_BYTES });
  await box.write(Buffer.alloc(60, 1));
  await box.write(Buffer.alloc(40, 2));
  assert.equal(box.queuedBytes, 100 + 2 * MESSAGE_OVERHEAD_BYTES, 'exactly the bound fits');
  const blocked = track(box.write(Buffer.alloc(1, 3)));
  await flush();
  assert.equal(blocked.result.state, 'pending', 'the writer is pushed back');
  assert.equal(box.queuedBytes, 100 + 2 * MESSAGE_OVERHEAD_BYTES);
  assert.deepEqual(await box.read(), Buffer.alloc(60, 1));
  await flush();
  assert.equal(blocked.result.state, 'fulfilled');
  assert.equal(box.queuedBytes, 41 + 2 * MESSAGE_OVERHEAD_BYTES);
  assert.deepEqual(await box.read(), Buffer.alloc(40, 2));
  assert.deepEqual(await box.read(), Buffer.alloc(1, 3));
});

test('queue: a single message larger than bufferBytes passes alone', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { bufferBytes: 100 });
  await box.write(Buffer.alloc(500, 9));
  assert.equal(box.queuedBytes, 500 + MESSAGE_OVERHEAD_BYTES);
  const next = track(box.write(Buffer.alloc(1)));
  await flush();
  assert.equal(next.result.state, 'pending', 'nothing joins it');
  assert.equal((await box.read()).length, 500);
  await flush();
  assert.equal(next.result.state, 'fulfilled');
});

test('queue: a flood of empty messages with no reader fills the box; the writer is pushed back', async () => {
  const clock = new FakeClock();
  const bufferBytes = 1024;
  const box = makeBox(clock, { bufferBytes });
  const maxAdmitted = Math.floor(bufferBytes / MESSAGE_OVERHEAD_BYTES) + 1; // +1: the first always goes in
  let admitted = 0;
  let blocked: { readonly result: Settled<void> } | undefined;
  for (let i = 0; i <= maxAdmitted; i++) {
    const w = track(box.write(Buffer.alloc(0)));
    await flush();
    if (w.result.state === 'pending') {
      blocked = w;
      break;
    }
    assert.equal(w.result.state, 'fulfilled');
    admitted++;
  }
  assert.ok(blocked, `the writer was never pushed back after ${admitted} empty messages`);
  assert.ok(admitted <= maxAdmitted, `${admitted} empty messages admitted, at most ${maxAdmitted} expected`);
  assert.equal(box.queuedMessages, admitted);
  assert.equal(box.queuedBytes, admitted * MESSAGE_OVERHEAD_BYTES);
  assert.equal((await box.read()).length, 0);
  await flush();
  assert.equal(blocked.result.state, 'fulfilled', 'a read makes room again');
  assert.equal(box.queuedMessages, admitted);
});

test('queue: a writer leaving while pushed back gets CANCELLED; its message is not queued', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { bufferBytes: 10 + MESSAGE_OVERHEAD_BYTES });
  const w = await box.attachWriter();
  await box.write(Buffer.alloc(10));
  const blocked = track(box.write(Buffer.alloc(5)));
  await flush();
  box.detach(w);
  await flush();
  assertRejected(blocked.result, 'CANCELLED');
  await box.read();
  await flush();
  assert.equal(box.queuedMessages, 0);
});

test('queue: a writer leaving while waiting for a rate-limit token gets CANCELLED', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { rateLimit: { intervalMs: 1_000, burst: 1 } });
  const w = await box.attachWriter();
  await box.write(msg('a'));
  const waiting = track(box.write(msg('b')));
  await flush();
  assert.equal(clock.pending, 1);
  box.detach(w);
  await flush();
  assertRejected(waiting.result, 'CANCELLED');
  assert.equal(clock.pending, 0);
  assert.equal(box.queuedMessages, 1);
});

// ---------------------------------------------------------------- budget

test('BufferBudget: reservations never pass the limit; waiters are granted in arrival order', () => {
  const budget = new BufferBudget(100);
  assert.equal(budget.tryReserve(60), true);
  assert.equal(budget.tryReserve(50), false, 'a reservation past the limit is refused');
  assert.equal(budget.usedBytes, 60, 'a refused reservation takes nothing');
  const granted: string[] = [];
  const big = budget.wait(90, () => granted.push('big'));
  assert.equal(budget.tryReserve(10), false, 'nobody jumps a waiting writer, even when the bytes would fit');
  budget.wait(10, () => granted.push('small'));
  budget.release(30);
  assert.deepEqual(granted, [], '90 does not fit in 70 free bytes');
  budget.release(30);
  assert.deepEqual(granted, ['big', 'small']);
  assert.equal(budget.usedBytes, 100);
  assert.equal(big.pending, false);
  budget.release(100);
  assert.equal(budget.tryReserve(100), true);
});

test('BufferBudget: a cancelled waiter is skipped and lets the ones behind it in', () => {
  const budget = new BufferBudget(100);
  budget.tryReserve(50);
  const granted: string[] = [];
  const blocked = budget.wait(80, () => granted.push('80'));
  budget.wait(40, () => granted.push('40'));
  assert.deepEqual(granted, []);
  blocked.cancel();
  assert.deepEqual(granted, ['40']);
  assert.equal(budget.usedBytes, 90);
});

test('budget: queued bytes are counted across boxes and returned on read and on close', async () => {
  const clock = new FakeClock();
  const budget = new BufferBudget(1 << 20);
  const a = makeBox(clock, {}, budget, 1);
  const b = makeBox(clock, {}, budget, 2);
  await a.write(Buffer.alloc(100));
  await b.write(Buffer.alloc(30));
  await b.write(Buffer.alloc(20));
  assert.equal(budget.usedBytes, 150 + 3 * MESSAGE_OVERHEAD_BYTES);
  await a.read();
  assert.equal(budget.usedBytes, 50 + 2 * MESSAGE_OVERHEAD_BYTES);
  b.close('deleted');
  assert.equal(budget.usedBytes, 0);
});

test('budget: past maxBufferedBytes a writer is pushed back (waits), not failed', async () => {
  // Spec: "keep at least 64 KiB per box ... then push back on the writer
  // through flow control"; config: "past it writers wait". A writer that gets
  // LIMIT_REACHED instead loses its stream and, with it, its session.
  const clock = new FakeClock();
  const budget = new BufferBudget(100 + 2 * MESSAGE_OVERHEAD_BYTES);
  const a = makeBox(clock, {}, budget, 1);
  const b = makeBox(clock, {}, budget, 2);
  await a.write(Buffer.alloc(80)); // held for an absent reader
  await b.write(Buffer.alloc(20));
  assert.equal(budget.usedBytes, 100 + 2 * MESSAGE_OVERHEAD_BYTES);
  const blocked = track(b.write(Buffer.alloc(10)));
  await flush();
  assert.equal(blocked.result.state, 'pending', 'the writer waits instead of failing');
  assert.equal((await b.read()).length, 20);
  await flush();
  assert.equal(blocked.result.state, 'fulfilled');
  assert.equal(budget.usedBytes, 90 + 2 * MESSAGE_OVERHEAD_BYTES);
  assert.equal((await b.read()).length, 10);
});

test('budget: it holds for an empty box too; the waiting writer goes on once bytes are freed', async () => {
  // The box bound lets an empty box take one message of any allowed size;
  // the process budget has no such exception, or every idle box could
  // overshoot it by one 4 MiB message.
  const clock = new FakeClock();
  const budget = new BufferBudget(100 + MESSAGE_OVERHEAD_BYTES);
  const idle = makeBox(clock, {}, budget, 1);
  const other = makeBox(clock, {}, budget, 2);
  await idle.write(Buffer.alloc(100)); // the whole budget, nobody reading
  const blocked = track(other.write(msg('x')));
  await flush();
  assert.equal(blocked.result.state, 'pending', 'past the budget even an empty box waits');
  assert.equal(budget.usedBytes, 100 + MESSAGE_OVERHEAD_BYTES);
  assert.equal((await idle.read()).length, 100);
  await flush();
  assert.equal(blocked.result.state, 'fulfilled');
  assert.deepEqual(await other.read(), msg('x'));
  assert.equal(budget.usedBytes, 0);
});

test('budget: a writer detached while waiting for the budget ends with CANCELLED and reserves nothing', async () => {
  const clock = new FakeClock();
  const budget = new BufferBudget(100 + MESSAGE_OVERHEAD_BYTES);
  const idle = makeBox(clock, {}, budget, 1);
  const other = makeBox(clock, {}, budget, 2);
  await idle.write(Buffer.alloc(100));
  const lease = await other.attachWriter();
  const blocked = track(other.write(msg('x')));
  await flush();
  other.detach(lease);
  await flush();
  assertRejected(blocked.result, 'CANCELLED');
  await idle.read();
  assert.equal(budget.usedBytes, 0);
  assert.equal(other.queuedMessages, 0);
});

test('in flight: a taken message counts against box and budget until settled', async () => {
  const clock = new FakeClock();
  const budget = new BufferBudget(1 << 20);
  const box = makeBox(clock, { bufferBytes: 100 + MESSAGE_OVERHEAD_BYTES }, budget);
  await box.write(Buffer.alloc(100));
  const taken = box.take();
  assert.equal(taken?.length, 100);
  assert.equal(box.inFlightBytes, 100 + MESSAGE_OVERHEAD_BYTES);
  assert.equal(budget.usedBytes, 100 + MESSAGE_OVERHEAD_BYTES, 'a transport still holds it');
  const next = track(box.write(Buffer.alloc(10)));
  await flush();
  assert.equal(next.result.state, 'pending', 'the box is full while its reader transport holds the message');
  box.settle(100);
  await flush();
  assert.equal(next.result.state, 'fulfilled');
  assert.equal(box.inFlightBytes, 0);
  assert.equal(budget.usedBytes, 10 + MESSAGE_OVERHEAD_BYTES);
});

test('in flight: a reader that detaches settles what its transport held; the next reader starts clean', async () => {
  const clock = new FakeClock();
  const budget = new BufferBudget(1 << 20);
  const box = makeBox(clock, {}, budget);
  const first = await box.attachReader();
  await box.write(msg('a'));
  await box.write(msg('b'));
  box.take();
  box.take();
  assert.equal(box.inFlightBytes, 2 + 2 * MESSAGE_OVERHEAD_BYTES);
  box.detach(first);
  assert.equal(box.inFlightBytes, 0);
  assert.equal(budget.usedBytes, 0);
  await box.attachReader();
  await box.write(msg('c'));
  box.take();
  box.settle(100); // a late callback can never settle more than is in flight
  assert.equal(box.inFlightBytes, 0);
  assert.equal(budget.usedBytes, 0);
});

// ---------------------------------------------------------------- close

test('close: a write after the box was torn down fails at once, even without a rate-limit token', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock, { rateLimit: { intervalMs: 1_000, burst: 1 } });
  await box.write(msg('a'));
  box.close('deleted');
  const next = track(box.write(msg('b')));
  await flush();
  assertRejected(next.result, 'BOX_DELETED_PIPE', 'io: read/write on closed pipe');
  assert.equal(clock.pending, 0);
});

test('close: a read after teardown fails with EOF; the queued messages are dropped', async () => {
  const clock = new FakeClock();
  const box = makeBox(clock);
  await box.write(msg('a'));
  box.close('deleted');
  await assert.rejects(box.read(), isError('BOX_DELETED_EOF', 'EOF'));
  assert.equal(box.queuedBytes, 0);
  assert.equal(box.isClosed, true);
  box.close('shutdown'); // idempotent: the first reason stands
  await assert.rejects(box.read(), isError('BOX_DELETED_EOF'));
});
