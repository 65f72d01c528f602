/**
 * The hop lane's framing (src/transport/hop/lane-socket.ts) on an
 * in-memory byte stream: frames whole or cut anywhere, a frame read as a
 * buffer of its own, the length limit, garbage, PING/PONG, a silent peer,
 * writes made before the socket exists, and an orderly end.
 */
import assert from 'node:assert/strict';
import { Duplex } from 'node:stream';
import { test } from 'node:test';
import { HashmailError } from '../../src/session/errors.js';
import { decodeHopFrame, encodeControlFrame, encodeDataFrame, FrameKind, type HopFrame } from '../../src/transport/hop/frame.js';
import { LANE_END_GRACE_MS, LaneSocket } from '../../src/transport/hop/lane-socket.js';
import { withTimeout } from '../helpers/async-queue.js';

const WAIT_MS = 5_000;
const MAX_FRAME = 64 * 1024;

/** One end of an in-memory connection: what is written to it shows up in `written`; `feed` delivers bytes to its reader. */
class Wire extends Duplex {
  readonly written: Buffer[] = [];
  override _read(): void {}
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.written.push(chunk);
    cb();
  }
  override _writev(chunks: { chunk: Buffer }[], cb: () => void): void {
    for (const c of chunks) this.written.push(c.chunk);
    cb();
  }
  feed(bytes: Buffer): void {
    this.push(bytes);
  }
  /** The frames written so far, decoded. */
  frames(): HopFrame[] {
    const all = Buffer.concat(this.written);
    const out: HopFrame[] = [];
    for (let pos = 0; pos + 4 <= all.length; ) {
      const n = all.readUInt32BE(pos);
      out.push(decodeHopFrame(all.subarray(pos + 4, pos + 4 + n)));
      pos += 4 + n;
    }
    return out;
  }
}

const framed = (frame: Buffer): Buffer => {
  const head = Buffer.alloc(4);
  head.writeUInt32BE(frame.length, 0);
  return Buffer.concat([head, frame]);
};

function open(options: Partial<ConstructorParameters<typeof LaneSocket>[0]> = {}) {
  const wire = new Wire();
  const lane = new LaneSocket({ maxFrameBytes: MAX_FRAME, silenceLimitMs: 60_000, ...options });
  const got: (HopFrame | HashmailError)[] = [];
  let closedWith: HashmailError | null | undefined;
  const closed = new Promise<HashmailError | null>((resolve) =>
    lane.attach(wire, {
      frame: (f) => got.push(f),
      closed: (err) => {
        closedWith = err;
        resolve(err);
      },
    }),
  );
  return { wire, lane, got, closed, closedWith: () => closedWith };
}

const tick = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

test('frames arrive whole whether the bytes come at once, one at a time or several frames per read', async () => {
  const { wire, got } = open();
  const messages = [Buffer.alloc(0), Buffer.from('a'), Buffer.alloc(40_000, 7), Buffer.from('last')];
  const bytes = Buffer.concat(messages.map((m, i) => framed(encodeDataFrame(i + 1, m))));
  // Byte by byte for the first 100 bytes, then the rest in one read.
  for (let i = 0; i < 100; i++) wire.feed(bytes.subarray(i, i + 1));
  wire.feed(bytes.subarray(100));
  await tick();
  assert.equal(got.length, messages.length);
  got.forEach((f, i) => {
    assert.ok(!(f instanceof HashmailError));
    assert.equal(f.half, i + 1);
    assert.equal(f.kind, FrameKind.DATA);
    assert.deepEqual(f.msg ?? Buffer.alloc(0), messages[i]);
  });
});

test('a small frame out of a large read is a buffer of its own (a message kept in a box does not hold the whole read)', async () => {
  const { wire, got } = open();
  // Two small frames and most of a large one, in one read.
  const read = Buffer.concat([framed(encodeDataFrame(1, Buffer.from('one'))), framed(encodeDataFrame(2, Buffer.from('two'))), framed(encodeDataFrame(3, Buffer.alloc(30_000)))]);
  wire.feed(read.subarray(0, read.length - 10));
  await tick();
  assert.equal(got.length, 2);
  for (const f of got) {
    assert.ok(!(f instanceof HashmailError));
    // At most Node's shared 8 KiB allocation pool, not the 30 KB read.
    assert.ok((f.msg?.buffer.byteLength ?? 0) <= 8 * 1024, `frame ${f.half} holds ${f.msg?.buffer.byteLength} bytes`);
  }
});

test('a length over the limit ends the lane before its body arrives; so do bytes that are no frame', async () => {
  const big = open();
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX_FRAME + 1, 0);
  big.wire.feed(head);
  const err = await withTimeout(big.closed, WAIT_MS, 'closed');
  assert.ok(err instanceof HashmailError);
  assert.equal(err.code, 'MALFORMED_REQUEST');
  assert.equal(err.message, `hop: lane frame of ${MAX_FRAME + 1} bytes, over the limit of ${MAX_FRAME}`);
  assert.equal(big.got.length, 1);

  const garbage = open();
  garbage.wire.feed(framed(Buffer.from([0x08])));
  const err2 = await withTimeout(garbage.closed, WAIT_MS, 'closed');
  assert.equal(err2?.code, 'MALFORMED_REQUEST');
  assert.ok(garbage.wire.destroyed);
});

test('PING is answered with PONG and neither reaches the halves', async () => {
  const { wire, got } = open();
  wire.feed(framed(encodeControlFrame(0, FrameKind.PING)));
  wire.feed(framed(encodeControlFrame(0, FrameKind.PONG)));
  await tick();
  assert.equal(got.length, 0);
  await tick();
  assert.deepEqual(
    wire.frames().map((f) => [f.half, f.kind]),
    [[0, FrameKind.PONG]],
  );
});

test('the gateway end pings, and gives up on a peer that stays silent', async () => {
  // The limit is far above the ping interval: a stalled machine must not see silence before the first ping.
  const { wire, closed } = open({ pingEveryMs: 20, silenceLimitMs: 500 });
  const err = await withTimeout(closed, WAIT_MS, 'silence noticed');
  assert.equal(err?.code, 'RELAY_UNREACHABLE');
  assert.match(err?.message ?? '', /^hop: lane silent for \d+ ms$/);
  assert.ok(wire.frames().some((f) => f.half === 0 && f.kind === FrameKind.PING));
});

test('frames written before the socket exists go out first, in order, each with its length', async () => {
  const lane = new LaneSocket({ maxFrameBytes: MAX_FRAME, silenceLimitMs: 60_000 });
  lane.write(encodeDataFrame(1, Buffer.from('early')));
  let flushed = false;
  lane.write(encodeControlFrame(1, FrameKind.FINISH), () => (flushed = true));
  const wire = new Wire();
  lane.attach(wire, { frame: () => undefined, closed: () => undefined });
  lane.write(encodeControlFrame(2, FrameKind.CANCEL));
  await tick();
  assert.deepEqual(
    wire.frames().map((f) => [f.half, f.kind]),
    [
      [1, FrameKind.DATA],
      [1, FrameKind.FINISH],
      [2, FrameKind.CANCEL],
    ],
  );
  assert.ok(flushed);
  lane.end();
});

test("the peer's orderly end closes the lane without an error; nothing is written after it", async () => {
  const { wire, lane, closed } = open();
  wire.push(null);
  assert.equal(await withTimeout(closed, WAIT_MS, 'closed'), null);
  const before = wire.written.length;
  lane.write(encodeControlFrame(1, FrameKind.CREDIT, 5));
  assert.equal(wire.written.length, before);
});

test('writeData sends the message after its head, unchanged and uncopied; an empty one too, and each write says when it left', async () => {
  const { wire, lane } = open();
  const big = Buffer.alloc(50_000, 3);
  const flushed: number[] = [];
  lane.writeData(7, big, () => flushed.push(1));
  lane.writeData(7, Buffer.alloc(0), () => flushed.push(2));
  lane.writeData(300, Buffer.from('x'), () => flushed.push(3));
  await tick();
  assert.deepEqual(flushed, [1, 2, 3]);
  // The message buffer itself went to the socket (no copy into a frame).
  assert.ok(wire.written.includes(big));
  assert.deepEqual(
    wire.frames().map((f) => [f.half, f.kind, f.msg?.length ?? 0]),
    [
      [7, FrameKind.DATA, 50_000],
      [7, FrameKind.DATA, 0],
      [300, FrameKind.DATA, 1],
    ],
  );
});

/** A peer that takes nothing: writes stay queued until `release()`. */
class StalledWire extends Wire {
  private held: (() => void)[] = [];
  override _write(chunk: Buffer, _enc: BufferEncoding, cb: () => void): void {
    this.written.push(chunk);
    this.held.push(cb);
  }
  override _writev(chunks: { chunk: Buffer }[], cb: () => void): void {
    for (const c of chunks) this.written.push(c.chunk);
    this.held.push(cb);
  }
  release(): void {
    const held = this.held;
    this.held = [];
    for (const cb of held) cb();
  }
}

test('a PING flood from a peer that does not read queues one PONG, not one per PING', async () => {
  const wire = new StalledWire();
  const lane = new LaneSocket({ maxFrameBytes: MAX_FRAME, silenceLimitMs: 60_000 });
  lane.attach(wire, { frame: () => undefined, closed: () => undefined });
  const ping = framed(encodeControlFrame(0, FrameKind.PING));
  wire.feed(Buffer.concat(Array.from({ length: 1000 }, () => ping)));
  await tick();
  await tick();
  // Before: 1000 PONGs (12 bytes each with their heads) waited for a peer that never takes them.
  assert.equal(wire.frames().filter((f) => f.kind === FrameKind.PONG).length, 1);
  assert.ok(wire.writableLength <= 16, `queued ${wire.writableLength} bytes`);
  // Once the PONG left, the next PING is answered again.
  wire.release();
  wire.feed(ping);
  await tick();
  await tick();
  assert.equal(wire.frames().filter((f) => f.kind === FrameKind.PONG).length, 2);
  lane.destroy(new HashmailError('CANCELLED'));
});

test('a frame trickled a byte per read arrives intact and holds few reads apart', async () => {
  const { wire, lane, got } = open();
  const msg = Buffer.from(Array.from({ length: 3000 }, (_, i) => i % 251));
  const bytes = framed(encodeDataFrame(5, msg));
  let maxHeld = 0;
  for (let i = 0; i < bytes.length; i++) {
    wire.feed(bytes.subarray(i, i + 1));
    await tick();
    maxHeld = Math.max(maxHeld, lane.heldReads);
  }
  assert.equal(got.length, 1);
  const f = got[0] as HopFrame;
  assert.equal(f.half, 5);
  assert.deepEqual(f.msg, msg);
  // Before: one Buffer per read, 3000 of them (each about 150 bytes of bookkeeping for 1 byte).
  assert.ok(maxHeld <= 8, `held ${maxHeld} reads`);
  lane.destroy(new HashmailError('CANCELLED'));
});

test('a frame begun and not whole within the silence limit ends the lane, however its bytes trickle', async () => {
  const { wire, closed, closedWith } = open({ silenceLimitMs: 300 });
  const head = Buffer.alloc(4);
  head.writeUInt32BE(MAX_FRAME, 0);
  wire.feed(head);
  // A byte every 10 ms keeps the lane from being silent (a stall under 300 ms does not either); bounded at 2 s.
  for (let i = 0; i < 200 && closedWith() === undefined; i++) {
    wire.feed(Buffer.alloc(1));
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
  const err = await withTimeout(closed, WAIT_MS, 'closed');
  assert.equal(err?.code, 'MALFORMED_REQUEST');
  assert.match(err?.message ?? '', /^hop: lane frame not whole \d+ ms after its first byte$/);
});

test('an ended lane reads nothing more and is gone within LANE_END_GRACE_MS though its peer keeps its side open', async () => {
  const { wire, lane, got } = open();
  const gone = new Promise<void>((resolve) => wire.once('close', () => resolve()));
  lane.end();
  wire.feed(framed(encodeControlFrame(1, FrameKind.CANCEL)));
  wire.feed(Buffer.alloc(10_000));
  await tick();
  assert.equal(got.length, 0);
  // Before: every byte the peer sent after the end was kept, and the connection stayed open for good.
  assert.equal(lane.heldReads, 0);
  await withTimeout(gone, LANE_END_GRACE_MS + WAIT_MS, 'connection closed');
});

test('with pauseReadsOverBytes the lane stops reading while its writes are unsent, and gives up on a peer that takes nothing', async () => {
  const wire = new StalledWire();
  const lane = new LaneSocket({ maxFrameBytes: MAX_FRAME, silenceLimitMs: 60_000, pauseReadsOverBytes: 20_000 });
  lane.attach(wire, { frame: () => undefined, closed: () => undefined });
  lane.writeData(1, Buffer.alloc(100));
  await tick();
  lane.writeData(1, Buffer.alloc(30_000));
  assert.ok(wire.isPaused());
  wire.release();
  await tick();
  wire.release();
  await tick();
  assert.ok(!wire.isPaused());
  lane.destroy(new HashmailError('CANCELLED'));

  const stalled = new StalledWire();
  const slow = new LaneSocket({ maxFrameBytes: MAX_FRAME, silenceLimitMs: 60, pauseReadsOverBytes: 20_000 });
  const closed = new Promise<HashmailError | null>((resolve) => slow.attach(stalled, { frame: () => undefined, closed: resolve }));
  slow.writeData(1, Buffer.alloc(100));
  await tick();
  slow.writeData(1, Buffer.alloc(30_000));
  const err = await withTimeout(closed, WAIT_MS, 'stalled peer dropped');
  assert.equal(err?.code, 'RELAY_UNREACHABLE');
  assert.match(err?.message ?? '', /^hop: lane peer took nothing for \d+ ms$/);
});
