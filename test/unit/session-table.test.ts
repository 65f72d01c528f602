import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Box, CloseReason } from '../../src/session/box.js';
import { HashmailError, type HashmailErrorCode } from '../../src/session/errors.js';
import { MESSAGE_OVERHEAD_BYTES } from '../../src/session/message-queue.js';
import { SessionTable, type SessionTableOptions } from '../../src/session/session-table.js';
import { peerSid, sessionKey } from '../../src/session/sid.js';
import { FakeClock, flush, track, type Settled } from '../helpers/fake-clock.js';

const HOUR = 3_600_000;

function options(over: Partial<SessionTableOptions> = {}): SessionTableOptions {
  return {
    bufferBytes: 64 * 1024,
    rateLimit: null,
    acquireWaitMs: 250,
    maxBoxes: 1_000,
    maxBoxesPerAddress: 100,
    maxBufferedBytes: 1 << 30,
    staleTimeoutMs: HOUR,
    ...over,
  };
}

let counter = 0;
/** A fresh SID with bit 0 of byte 63 clear (so `peerSid` is its pair). */
function newSid(): Buffer {
  const sid = Buffer.alloc(64);
  sid.writeUInt32BE(++counter, 0);
  sid[7] = 0xaa;
  return sid;
}

interface Events {
  created: Box[];
  closed: [Box, CloseReason][];
  limits: string[];
}

function makeTable(over: Partial<SessionTableOptions> = {}): { table: SessionTable; clock: FakeClock; events: Events } {
  const clock = new FakeClock();
  const events: Events = { created: [], closed: [], limits: [] };
  const table = new SessionTable(
    options(over),
    {
      boxCreated: (box) => events.created.push(box),
      boxClosed: (box, reason) => events.closed.push([box, reason]),
      limitHit: (key) => events.limits.push(key),
    },
    clock,
  );
  return { table, clock, events };
}

function isError(code: HashmailErrorCode, text?: string | RegExp): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof HashmailError, `expected a HashmailError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (typeof text === 'string') assert.equal(err.message, text);
    else if (text) assert.match(err.message, text);
    return true;
  };
}

function assertRejected(s: Settled<unknown>, code: HashmailErrorCode, text?: string): void {
  assert.equal(s.state, 'rejected', `expected rejection with ${code}, got ${s.state}`);
  if (s.state === 'rejected') isError(code, text)(s.error);
}

// ---------------------------------------------------------------- create / find

test('createBox, then findBox returns it; the pair shares one session', () => {
  const { table, events } = makeTable();
  const sid = newSid();
  const a = table.createBox(sid, '10.0.0.1');
  assert.equal(table.findBox(sid), a);
  assert.equal(table.findBox(Buffer.from(sid)), a, 'found by value, not identity');
  assert.equal(table.boxCount, 1);
  assert.equal(table.sessionCount, 1);
  const b = table.createBox(peerSid(sid), '10.0.0.2');
  assert.notEqual(a, b);
  assert.equal(table.boxCount, 2);
  assert.equal(table.sessionCount, 1);
  const [session] = [...table.sessions()];
  assert.equal(session.key, sessionKey(sid));
  assert.deepEqual(session.boxes, [a, b]);
  assert.deepEqual(events.created, [a, b]);
});

test('the box keeps its own copy of the SID', () => {
  const { table } = makeTable();
  const sid = newSid();
  const box = table.createBox(sid, 'x');
  const original = Buffer.from(sid);
  sid.fill(0);
  assert.deepEqual(box.sid, original);
  assert.equal(table.findBox(original), box);
});

test('createBox twice: ALREADY_EXISTS "stream already active" (code STREAM_EXISTS)', () => {
  const { table } = makeTable();
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  assert.throws(
    () => table.createBox(sid, 'b'),
    (err: unknown) => {
      isError('STREAM_EXISTS', 'stream already active')(err);
      assert.equal((err as HashmailError).grpcCode, 6);
      return true;
    },
  );
  assert.equal(table.findBox(sid), box, 'the existing box is untouched');
  assert.equal(table.boxCount, 1);
});

test('findBox / deleteBox of an unknown SID: "stream not found"', () => {
  const { table } = makeTable();
  const sid = newSid();
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND', 'stream not found'));
  assert.throws(() => table.deleteBox(sid), isError('STREAM_NOT_FOUND', 'stream not found'));
  table.createBox(sid, 'a');
  assert.throws(() => table.findBox(peerSid(sid)), isError('STREAM_NOT_FOUND'), 'the peer SID is another box');
});

test('a SID of the wrong length is INVALID_STREAM_ID everywhere', () => {
  const { table } = makeTable();
  for (const sid of [Buffer.alloc(63), Buffer.alloc(65)]) {
    assert.throws(() => table.createBox(sid, 'a'), isError('INVALID_STREAM_ID'));
    assert.throws(() => table.findBox(sid), isError('INVALID_STREAM_ID'));
    assert.throws(() => table.deleteBox(sid), isError('INVALID_STREAM_ID'));
  }
  assert.equal(table.boxCount, 0);
});

test('maxBoxes: LIMIT_REACHED naming limits.maxBoxes; a deleted box frees its place', () => {
  const { table, events } = makeTable({ maxBoxes: 2 });
  const first = newSid();
  table.createBox(first, 'a');
  table.createBox(newSid(), 'b');
  assert.throws(() => table.createBox(newSid(), 'c'), (err: unknown) => {
    isError('LIMIT_REACHED', /limits\.maxBoxes\b.*2/)(err);
    assert.doesNotMatch((err as Error).message, /PerAddress/);
    return true;
  });
  assert.deepEqual(events.limits, ['limits.maxBoxes']);
  assert.equal(table.boxCount, 2);
  table.deleteBox(first);
  table.createBox(newSid(), 'c');
  assert.equal(table.boxCount, 2);
});

test('maxBoxesPerAddress: LIMIT_REACHED naming limits.maxBoxesPerAddress, per address', () => {
  const { table, events } = makeTable({ maxBoxesPerAddress: 2 });
  const first = newSid();
  table.createBox(first, '10.0.0.1');
  table.createBox(newSid(), '10.0.0.1');
  assert.throws(() => table.createBox(newSid(), '10.0.0.1'), isError('LIMIT_REACHED', /limits\.maxBoxesPerAddress.*2/));
  assert.deepEqual(events.limits, ['limits.maxBoxesPerAddress']);
  table.createBox(newSid(), '10.0.0.2');
  table.deleteBox(first);
  table.createBox(newSid(), '10.0.0.1');
  assert.equal(table.boxCount, 3);
});

test('the existence check comes before the limits (NewCipherBox retries keep saying ALREADY_EXISTS)', () => {
  const { table } = makeTable({ maxBoxes: 1 });
  const sid = newSid();
  table.createBox(sid, 'a');
  assert.throws(() => table.createBox(sid, 'a'), isError('STREAM_EXISTS'));
});

// ---------------------------------------------------------------- delete

test('deleteBox: the attached reader\'s pending read ends with "EOF"', async () => {
  const { table, events } = makeTable();
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  const lease = await box.attachReader();
  const closedWith: HashmailError[] = [];
  lease.onClosed = (err) => closedWith.push(err);
  const read = track(box.read());
  await flush();
  table.deleteBox(sid);
  await flush();
  assertRejected(read.result, 'BOX_DELETED_EOF', 'EOF');
  assert.equal(closedWith.length, 1, 'the holder is told once');
  isError('BOX_DELETED_EOF', 'EOF')(closedWith[0]);
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND'));
  assert.deepEqual(events.closed, [[box, 'deleted']]);
  assert.equal(table.boxCount, 0);
  assert.equal(table.sessionCount, 0);
  box.detach(lease); // the transport lets go afterwards; nothing breaks
  assert.equal(box.readSlot.taken, false);
});

test('deleteBox: a pending write ends with "io: read/write on closed pipe", and so does the next one', async () => {
  const { table } = makeTable({ bufferBytes: 10 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  const lease = await box.attachWriter();
  await box.write(Buffer.alloc(10));
  const write = track(box.write(Buffer.alloc(5)));
  await flush();
  assert.equal(write.result.state, 'pending');
  table.deleteBox(sid);
  await flush();
  assertRejected(write.result, 'BOX_DELETED_PIPE', 'io: read/write on closed pipe');
  await assert.rejects(box.write(Buffer.from('next')), isError('BOX_DELETED_PIPE', 'io: read/write on closed pipe'));
  box.detach(lease);
  assert.equal(table.budget.usedBytes, 0, 'the queued bytes went back to the budget');
});

test('deleteBox: a write waiting for a rate-limit token ends with the closed-pipe error', async () => {
  const { table, clock } = makeTable({ rateLimit: { intervalMs: 500, burst: 1 } });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  await box.write(Buffer.from('a'));
  const write = track(box.write(Buffer.from('b')));
  await flush();
  table.deleteBox(sid);
  await flush();
  assertRejected(write.result, 'BOX_DELETED_PIPE');
  assert.equal(clock.pending, 0, 'no token or stale timer left');
});

test('deleteBox: callers waiting for a slot get "stream shutting down"', async () => {
  const { table, clock } = makeTable();
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  await box.attachReader();
  await box.attachWriter();
  const readWaiter = track(box.attachReader());
  const writeWaiter = track(box.attachWriter());
  await flush();
  table.deleteBox(sid);
  await flush();
  assertRejected(readWaiter.result, 'STREAM_SHUTTING_DOWN', 'stream shutting down');
  assertRejected(writeWaiter.result, 'STREAM_SHUTTING_DOWN', 'stream shutting down');
  assert.equal(clock.pending, 0, 'their occupied timers were cleared');
  await assert.rejects(box.attachReader(), isError('STREAM_SHUTTING_DOWN'), 'a late attach to a dead box object fails too');
});

test('deleteBox of one box leaves its pair box and session alone', async () => {
  const { table } = makeTable();
  const sid = newSid();
  table.createBox(sid, 'a');
  const peer = table.createBox(peerSid(sid), 'a');
  await peer.write(Buffer.from('kept'));
  table.deleteBox(sid);
  assert.equal(table.sessionCount, 1);
  assert.equal(table.findBox(peerSid(sid)), peer);
  assert.deepEqual(await peer.read(), Buffer.from('kept'));
  const [session] = [...table.sessions()];
  assert.deepEqual(session.boxes, [null, peer]);
});

// ---------------------------------------------------------------- shutdown

test('shutdown: readers, writers and slot waiters all get "server shutting down"; no new boxes', async () => {
  const { table, events } = makeTable({ bufferBytes: 1 });
  const s1 = newSid();
  const s2 = newSid();
  const b1 = table.createBox(s1, 'a');
  const b2 = table.createBox(s2, 'b');
  await b1.attachReader();
  const read = track(b1.read());
  await b2.attachWriter();
  await b2.write(Buffer.alloc(1));
  const write = track(b2.write(Buffer.alloc(1)));
  const waiter = track(b1.attachReader());
  await flush();
  table.shutdown();
  await flush();
  for (const s of [read.result, write.result, waiter.result]) {
    assertRejected(s, 'SERVER_SHUTTING_DOWN', 'server shutting down');
    assert.equal((s as { error: HashmailError }).error.grpcCode, 14);
  }
  await assert.rejects(b2.write(Buffer.alloc(1)), isError('SERVER_SHUTTING_DOWN'));
  await assert.rejects(b2.read(), isError('SERVER_SHUTTING_DOWN'));
  assert.equal(table.boxCount, 0);
  assert.equal(table.sessionCount, 0);
  assert.deepEqual(events.closed.map(([, reason]) => reason), ['shutdown', 'shutdown']);
  assert.throws(() => table.createBox(newSid(), 'a'), isError('SERVER_SHUTTING_DOWN'));
});

// ---------------------------------------------------------------- stale timer

test('stale: a box nobody ever attaches to is reaped staleTimeoutMs after creation', async () => {
  const { table, clock, events } = makeTable({ staleTimeoutMs: 1_000 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  clock.advance(999);
  assert.equal(table.findBox(sid), box);
  clock.advance(1);
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND'));
  assert.deepEqual(events.closed, [[box, 'stale']]);
  assert.equal(box.isClosed, true);
  assert.equal(table.sessionCount, 0);
  table.createBox(sid, 'a'); // the SID can be used again
});

test('stale: stops while a slot is taken and restarts in full when both are free', async () => {
  const { table, clock } = makeTable({ staleTimeoutMs: 1_000 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  clock.advance(900);
  const reader = await box.attachReader();
  clock.advance(10 * HOUR);
  assert.equal(table.findBox(sid), box, 'never reaped while a reader holds it');
  const writer = await box.attachWriter();
  box.detach(reader);
  clock.advance(10 * HOUR);
  assert.equal(table.findBox(sid), box, 'nor while a writer holds it');
  box.detach(writer);
  clock.advance(999);
  assert.equal(table.findBox(sid), box, 'a full new timeout from when both became free');
  clock.advance(1);
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND'));
});

test('stale: a slot handed from holder to waiter keeps the timer stopped', async () => {
  const { table, clock } = makeTable({ staleTimeoutMs: 100 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  const first = await box.attachReader();
  const second = track(box.attachReader());
  clock.advance(50);
  box.detach(first);
  await flush();
  assert.equal(second.result.state, 'fulfilled');
  clock.advance(HOUR);
  assert.equal(table.findBox(sid), box);
});

test('stale: reaping a box with queued data frees its budget; a held reader is told EOF', async () => {
  const { table, clock } = makeTable({ staleTimeoutMs: 100 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  const w = await box.attachWriter();
  await box.write(Buffer.alloc(50));
  box.detach(w);
  assert.equal(table.budget.usedBytes, 50 + MESSAGE_OVERHEAD_BYTES);
  clock.advance(100);
  assert.equal(table.budget.usedBytes, 0);
  await assert.rejects(box.read(), isError('BOX_DELETED_EOF', 'EOF'));
});

test('stale: a negative staleTimeoutMs disables it', async () => {
  const { table, clock } = makeTable({ staleTimeoutMs: -1 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  assert.equal(clock.pending, 0, 'no timer at all');
  const lease = await box.attachReader();
  box.detach(lease);
  assert.equal(clock.pending, 0);
  clock.advance(1_000 * HOUR);
  assert.equal(table.findBox(sid), box);
});

test('stale: deleting a box clears its timer', () => {
  const { table, clock } = makeTable({ staleTimeoutMs: 1_000 });
  const sid = newSid();
  table.createBox(sid, 'a');
  assert.equal(clock.pending, 1);
  table.deleteBox(sid);
  assert.equal(clock.pending, 0);
});

test('stale: a late slot change on a deleted box does not re-arm a timer', async () => {
  const { table, clock } = makeTable({ staleTimeoutMs: 1_000 });
  const sid = newSid();
  const box = table.createBox(sid, 'a');
  const lease = await box.attachReader();
  table.deleteBox(sid);
  const again = table.createBox(sid, 'a'); // same SID, new box
  box.detach(lease); // the old box's slot frees up afterwards
  assert.equal(clock.pending, 1, 'only the new box\'s timer');
  clock.advance(1_000);
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND'));
  assert.equal(again.isClosed, true);
});

test('openSession (v2): create makes both boxes; existing needs one of them and adds the other; limits count both', () => {
  const { table } = makeTable({ maxBoxesPerAddress: 3 });
  const a = newSid();
  assert.throws(() => table.openSession(a, peerSid(a), 'x', false, 1024), (err: unknown) => err instanceof HashmailError && err.code === 'STREAM_NOT_FOUND');
  assert.equal(table.boxCount, 0, 'a refused attach creates nothing');

  const created = table.openSession(a, peerSid(a), 'x', true, 1024);
  assert.equal(table.boxCount, 2);
  assert.equal(created.read, table.findBox(a));
  assert.equal(created.write, table.findBox(peerSid(a)));
  // The peer joins the same boxes, the other way round.
  const joined = table.openSession(peerSid(a), a, 'y', false, 1024);
  assert.equal(joined.read, created.write);
  assert.equal(joined.write, created.read);

  // A legacy node that created only the box it reads: a v2 app may join and gets the other box made.
  const b = newSid();
  table.createBox(peerSid(b), 'node');
  const half = table.openSession(b, peerSid(b), 'app', false, 1024);
  assert.equal(half.write, table.findBox(peerSid(b)));
  assert.equal(table.boxCount, 4);

  // Owner 'x' holds 2 boxes; two more would pass its limit of 3: refused whole.
  const c = newSid();
  assert.throws(() => table.openSession(c, peerSid(c), 'x', true, 1024), /limits\.maxBoxesPerAddress/);
  assert.throws(() => table.findBox(c), /stream not found/);
});

test('per-address budget: one address filling its share waits; boxes of other addresses keep moving', async () => {
  const share = 2 * (1000 + MESSAGE_OVERHEAD_BYTES);
  const { table } = makeTable({ maxBufferedBytesPerAddress: share, maxBufferedBytes: 10 * share });
  const greedy = [table.createBox(newSid(), '192.0.2.1'), table.createBox(newSid(), '192.0.2.1'), table.createBox(newSid(), '192.0.2.1')];
  await greedy[0].write(Buffer.alloc(1000));
  await greedy[1].write(Buffer.alloc(1000));
  const blocked = track(greedy[2].write(Buffer.alloc(1000)));
  const other = table.createBox(newSid(), '198.51.100.7');
  await other.write(Buffer.alloc(1000));
  await other.write(Buffer.alloc(1000));
  await flush();
  assert.equal(blocked.result.state, 'pending', "the third box of 192.0.2.1 waits for its address's share");
  assert.equal(table.budget.usedBytes, 4 * (1000 + MESSAGE_OVERHEAD_BYTES));
  table.deleteBox(greedy[0].sid);
  await flush();
  assert.equal(blocked.result.state, 'fulfilled', 'a deleted box gives its bytes back to the share');
  for (const box of [...greedy.slice(1), other]) table.deleteBox(box.sid);
  assert.equal(table.budget.usedBytes, 0);
  assert.equal(table.boxOwnerCount, 0);
});

test('dropSession removes both boxes of a session (a relay that lost its route), nothing else; an unknown key is a no-op', () => {
  const { table, events } = makeTable();
  const sid = newSid();
  table.createBox(sid, '10.0.0.1');
  table.createBox(peerSid(sid), '10.0.0.1');
  const other = newSid();
  table.createBox(other, '10.0.0.2');
  table.dropSession(sessionKey(sid));
  assert.equal(table.boxCount, 1);
  assert.equal(table.sessionCount, 1);
  assert.deepEqual(events.closed.map(([, reason]) => reason), ['deleted', 'deleted']);
  assert.throws(() => table.findBox(sid), isError('STREAM_NOT_FOUND'));
  assert.throws(() => table.findBox(peerSid(sid)), isError('STREAM_NOT_FOUND'));
  table.dropSession(sessionKey(sid));
  assert.equal(table.findBox(other).sid.equals(other), true);
});
