import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RelayStats } from '../../src/observe/stats.js';
import { LegacyMailbox, type BoxRequest, type CallInfo, type ReceiveHalf } from '../../src/relay/legacy-mailbox.js';
import { HashmailError, type HashmailErrorCode } from '../../src/session/errors.js';
import { SessionTable } from '../../src/session/session-table.js';
import { peerSid } from '../../src/session/sid.js';
import { FakeClock, flush, track } from '../helpers/fake-clock.js';

/** A receive half's next message as a promise (transports drive halves with ReadPump instead). */
function next(half: ReceiveHalf): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const attempt = (cancelled?: Error): void => {
      if (cancelled) return reject(cancelled);
      try {
        const msg = half.take();
        if (msg === undefined) half.whenReadable(attempt);
        else resolve(msg);
      } catch (err) {
        reject(err);
      }
    };
    attempt();
  });
}

const grpc: CallInfo = { transport: 'grpc', address: '10.0.0.1' };
const ws: CallInfo = { transport: 'websocket', address: '10.0.0.2' };

function setup(maxMessageBytes = 1024): { mailbox: LegacyMailbox; table: SessionTable; stats: RelayStats; clock: FakeClock } {
  const clock = new FakeClock();
  const table = new SessionTable(
    {
      bufferBytes: 64 * 1024,
      rateLimit: null,
      acquireWaitMs: 250,
      maxBoxes: 100,
      maxBoxesPerAddress: 10,
      maxBufferedBytes: 1 << 30,
      staleTimeoutMs: 3_600_000,
    },
    {},
    clock,
  );
  const stats = new RelayStats();
  return { mailbox: new LegacyMailbox(table, stats, { maxMessageBytes }), table, stats, clock };
}

let counter = 0;
function newSid(): Buffer {
  const sid = Buffer.alloc(64, 0x5c);
  sid.writeUInt32BE(++counter, 0);
  sid[63] = 0;
  return sid;
}

function req(streamId: Buffer | null, hasAuth = true): BoxRequest {
  return { desc: streamId ? { streamId } : null, hasAuth };
}

function isError(code: HashmailErrorCode, text?: string): (err: unknown) => boolean {
  return (err: unknown) => {
    assert.ok(err instanceof HashmailError, `expected a HashmailError, got ${String(err)}`);
    assert.equal(err.code, code);
    if (text !== undefined) assert.equal(err.message, text);
    return true;
  };
}

// ---------------------------------------------------------------- validation

test('NewCipherBox / DelCipherBox validation order: desc, then stream_id, then auth', () => {
  const { mailbox } = setup();
  for (const op of [(r: BoxRequest) => mailbox.newCipherBox(r, grpc), (r: BoxRequest) => mailbox.delCipherBox(r)]) {
    // a request missing everything reports the first thing missing
    assert.throws(() => op(req(null, false)), isError('DESC_REQUIRED', 'cipher box descriptor required'));
    assert.throws(() => op(req(Buffer.alloc(0), false)), isError('STREAM_ID_REQUIRED', 'stream_id required'));
    assert.throws(() => op(req(newSid(), false)), isError('AUTH_REQUIRED', 'auth type required'));
    // auth is checked before the SID length
    assert.throws(() => op(req(Buffer.alloc(10), false)), isError('AUTH_REQUIRED'));
    assert.throws(() => op(req(Buffer.alloc(10), true)), isError('INVALID_STREAM_ID'));
    assert.throws(() => op(req(Buffer.alloc(65), true)), isError('INVALID_STREAM_ID'));
  }
});

test('validation failures are INVALID_ARGUMENT', () => {
  const { mailbox } = setup();
  try {
    mailbox.newCipherBox(req(null), grpc);
    assert.fail('should throw');
  } catch (err) {
    assert.ok(err instanceof HashmailError);
    assert.equal(err.grpcCode, 3);
  }
});

test('NewCipherBox creates the box; again: "stream already active"; DelCipherBox removes it', () => {
  const { mailbox, table } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  assert.equal(table.boxCount, 1);
  assert.throws(() => mailbox.newCipherBox(req(sid), grpc), isError('STREAM_EXISTS', 'stream already active'));
  mailbox.delCipherBox(req(sid));
  assert.equal(table.boxCount, 0);
  assert.throws(() => mailbox.delCipherBox(req(sid)), isError('STREAM_NOT_FOUND', 'stream not found'));
});

test('openReceive / openSend of an unknown box: "stream not found"', async () => {
  const { mailbox } = setup();
  const sid = newSid();
  await assert.rejects(mailbox.openReceive(sid, grpc), isError('STREAM_NOT_FOUND', 'stream not found'));
  await assert.rejects(mailbox.openSend({ streamId: sid }, grpc), isError('STREAM_NOT_FOUND', 'stream not found'));
  await assert.rejects(mailbox.openReceive(Buffer.alloc(0), grpc), isError('INVALID_STREAM_ID'));
});

test('openSend(null): "cipher box descriptor required" (the reference crashed here)', async () => {
  const { mailbox } = setup();
  await assert.rejects(mailbox.openSend(null, grpc), isError('DESC_REQUIRED', 'cipher box descriptor required'));
});

// ---------------------------------------------------------------- halves

test('SendHalf.write over maxMessageBytes: MESSAGE_TOO_LARGE naming mailbox.maxMessageBytes; at the limit it passes', async () => {
  const { mailbox } = setup(100);
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  const send = await mailbox.openSend({ streamId: sid }, grpc);
  await assert.rejects(async () => send.write(Buffer.alloc(101)), (err: unknown) => {
    isError('MESSAGE_TOO_LARGE')(err);
    assert.match((err as Error).message, /mailbox\.maxMessageBytes/);
    assert.match((err as Error).message, /101/);
    assert.equal((err as HashmailError).grpcCode, 8);
    return true;
  });
  await send.write(Buffer.alloc(100));
  await send.write(Buffer.alloc(0));
  const recv = await mailbox.openReceive(sid, grpc);
  assert.equal((await next(recv)).length, 100, 'the refused message was not queued');
  assert.equal((await next(recv)).length, 0);
  send.release();
  recv.release();
});

test('a send half and a receive half relay in order and count messages and bytes', async () => {
  const { mailbox, stats } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  const send = await mailbox.openSend({ streamId: sid }, ws);
  const recv = await mailbox.openReceive(sid, grpc);
  const got = track(next(recv));
  await flush();
  assert.equal(got.result.state, 'pending');
  await send.write(Buffer.from('hello'));
  await send.write(Buffer.from('world!'));
  await flush();
  assert.deepEqual(got.result, { state: 'fulfilled', value: Buffer.from('hello') });
  assert.deepEqual(await next(recv), Buffer.from('world!'));
  assert.equal(stats.messagesRelayed, 2);
  assert.equal(stats.bytesRelayed, 11);
  send.release();
  recv.release();
});

test('attached-halves counters go up on open and back down on release; release is idempotent', async () => {
  const { mailbox, stats, table } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  mailbox.newCipherBox(req(peerSid(sid)), grpc);
  const zero = { grpc: { read: 0, write: 0 }, websocket: { read: 0, write: 0 }, rest: { read: 0, write: 0 }, hop: { read: 0, write: 0 } };
  assert.deepEqual(stats.attached, zero);

  const r = await mailbox.openReceive(sid, grpc);
  const s = await mailbox.openSend({ streamId: sid }, grpc);
  const wr = await mailbox.openReceive(peerSid(sid), ws);
  assert.deepEqual(stats.attached, { ...zero, grpc: { read: 1, write: 1 }, websocket: { read: 1, write: 0 } });

  r.release();
  r.release();
  assert.deepEqual(stats.attached, { ...zero, grpc: { read: 0, write: 1 }, websocket: { read: 1, write: 0 } });
  assert.equal(table.findBox(sid).readSlot.taken, false, 'the slot is freed at once');
  s.release();
  wr.release();
  wr.release();
  assert.deepEqual(stats.attached, zero);
});

test('a failed attach (occupied, cancelled) counts nothing', async () => {
  const { mailbox, stats, clock } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  const r = await mailbox.openReceive(sid, grpc);
  const second = track(mailbox.openReceive(sid, ws));
  clock.advance(250);
  await flush();
  assert.equal(second.result.state, 'rejected');
  if (second.result.state === 'rejected') isError('READ_OCCUPIED', 'read stream occupied')(second.result.error);

  const ac = new AbortController();
  const third = track(mailbox.openReceive(sid, ws, ac.signal));
  await flush();
  ac.abort();
  await flush();
  assert.equal(third.result.state, 'rejected');
  if (third.result.state === 'rejected') isError('CANCELLED')(third.result.error);

  assert.equal(stats.attached.grpc.read, 1);
  assert.equal(stats.attached.websocket.read, 0);
  r.release();
  assert.equal(stats.attached.grpc.read, 0);
});

test('a receive half released while waiting for a message: the read ends CANCELLED, the next half reads on', async () => {
  const { mailbox } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  const r1 = await mailbox.openReceive(sid, grpc);
  const pending = track(next(r1));
  await flush();
  r1.release();
  await flush();
  assert.equal(pending.result.state, 'rejected');
  if (pending.result.state === 'rejected') isError('CANCELLED')(pending.result.error);
  const s = await mailbox.openSend({ streamId: sid }, grpc);
  await s.write(Buffer.from('after'));
  s.release();
  const r2 = await mailbox.openReceive(sid, ws);
  assert.deepEqual(await next(r2), Buffer.from('after'));
  r2.release();
});

test('onBoxClosed: a half holding its slot is told why the box went away; release afterwards still balances', async () => {
  const { mailbox, stats } = setup();
  const sid = newSid();
  mailbox.newCipherBox(req(sid), grpc);
  const r = await mailbox.openReceive(sid, grpc);
  const s = await mailbox.openSend({ streamId: sid }, grpc);
  const told: string[] = [];
  r.onBoxClosed((err) => told.push(`read:${err.message}`));
  s.onBoxClosed((err) => told.push(`write:${err.message}`));
  mailbox.delCipherBox(req(sid));
  assert.deepEqual(told, ['read:EOF', 'write:io: read/write on closed pipe']);
  await assert.rejects(next(r), isError('BOX_DELETED_EOF', 'EOF'));
  await assert.rejects(async () => s.write(Buffer.from('x')), isError('BOX_DELETED_PIPE', 'io: read/write on closed pipe'));
  r.release();
  s.release();
  assert.equal(stats.attached.grpc.read, 0);
  assert.equal(stats.attached.grpc.write, 0);
});
