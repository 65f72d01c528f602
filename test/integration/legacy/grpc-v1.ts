/**
 * The legacy HashMail gRPC service against a real `hashmail serve` process:
 * every behaviour of spec section 3 (legacy-hashmail-v1.md), one test each.
 * Error texts are the wire contract (clients match them by substring); codes
 * are the reference's UNKNOWN or our precise one where the spec allows both.
 * No test asserts timing or sleeps for an event it can await instead.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test, type TestContext } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import type { RunningServer, ServerOptions } from '../../helpers/server.js';
import {
  assertStatus,
  boxAuth,
  connect,
  expectStatusError,
  payload,
  peerSid,
  pollUntil,
  randomSid,
  WAIT_MS,
  type ConnectOptions,
  type StatusError,
  type V1Client,
} from '../../helpers/grpc-v1.js';
import type { StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function grpcV1Suite(start: StartTarget): void {
  const { status } = grpc;
  /** The reference's code, or ours where the spec names a precise one. */
  const INVALID = [status.UNKNOWN, status.INVALID_ARGUMENT] as const;
  const NOT_FOUND = [status.UNKNOWN, status.NOT_FOUND] as const;
  const OCCUPIED = [status.UNKNOWN, status.RESOURCE_EXHAUSTED] as const;
  const GONE = [status.UNKNOWN, status.UNAVAILABLE] as const;

  const KiB = 1024;
  const MiB = 1024 * KiB;
  /** Message sizes that must pass intact; 4093 and 8189 make frames of 4096 and 8192 bytes in the reference. */
  const SIZES = [0, 1, 4093, 4096, 8189, 65_536, MiB, 4 * MiB - KiB];
  /** Bound on polls for a box to be reaped by a short stale timeout. */
  const REAP_DEADLINE_MS = 10_000;

  /** A client closed when the test ends (its open calls cancelled first). */
  function clientFor(t: TestContext, server: RunningServer, options?: ConnectOptions): V1Client {
    const client = connect(server.address, options);
    t.after(() => client.close());
    return client;
  }

  /** A server of its own for a test needing special config; stopped when the test ends. */
  async function serverFor(t: TestContext, options: ServerOptions): Promise<RunningServer> {
    const server = await start(options);
    t.after(async () => {
      await server.stop();
    });
    return server;
  }

  /** Whether the box of `sid` exists, asked without touching it: NewCipherBox answers ALREADY_EXISTS. Creates it if not. */
  async function boxExisted(client: V1Client, sid: Buffer): Promise<boolean> {
    try {
      await client.createBox(sid);
      return false;
    } catch (err) {
      if ((err as StatusError).code === status.ALREADY_EXISTS) return true;
      throw err;
    }
  }

  /** Polls until the box of `sid` is gone (then re-created by the probe, and deleted again here). */
  async function awaitReaped(client: V1Client, sid: Buffer, what: string): Promise<void> {
    await pollUntil(async () => !(await boxExisted(client, sid)), what, { attempts: 400, intervalMs: 25, deadlineMs: REAP_DEADLINE_MS });
    await client.delBox(sid);
  }

  /** Payloads carry their seed in the first 4 bytes (helpers `payload`), so a mix-up names the message. */
  function describeMsg(msg: Buffer): string {
    return msg.length >= 4 ? `${msg.length} bytes, seed ${msg.readUInt32BE(0)}` : `${msg.length} bytes`;
  }

  function assertMsg(got: Buffer, want: Buffer, what = 'message'): void {
    assert.ok(got.equals(want), `${what}: got ${describeMsg(got)}, want ${describeMsg(want)}`);
  }

  /**
   * A unary call on `client`'s connection, answered after the server read
   * every frame sent before it there (HTTP/2 keeps one connection's frames in
   * order): so a RecvStream opened or a call cancelled just before has reached it.
   */
  async function roundTrip(client: V1Client): Promise<void> {
    const sid = randomSid();
    await client.createBox(sid);
    await client.delBox(sid);
  }

  /** Opens a reader and proves the server attached it: a message written now reaches it. */
  async function attachedReader(reader: V1Client, writer: V1Client, sid: Buffer, probe: Buffer) {
    const r = reader.openReader(sid);
    const w = writer.openWriter(sid);
    await w.write(probe);
    assertMsg(await r.next(), probe, 'probe message');
    await w.end();
    return r;
  }

  describe('grpc v1, default config', () => {
    let server: RunningServer;

    before(async () => {
      server = await start();
    });

    after(async () => {
      await server?.stop();
    });

    describe('NewCipherBox', () => {
      test('validates desc, then stream_id, then auth, with the exact texts', async (t) => {
        const c = clientFor(t, server);
        const sid = randomSid();
        const empty = Buffer.alloc(0);
        await expectStatusError(c.newCipherBox({ desc: null, hasAuth: true }), { code: INVALID, details: 'cipher box descriptor required' });
        await expectStatusError(c.newCipherBox({ desc: null, hasAuth: false }), { code: INVALID, details: 'cipher box descriptor required' }, 'desc before auth');
        await expectStatusError(c.newCipherBox({ desc: { streamId: empty }, hasAuth: true }), { code: INVALID, details: 'stream_id required' });
        await expectStatusError(c.newCipherBox({ desc: { streamId: empty }, hasAuth: false }), { code: INVALID, details: 'stream_id required' }, 'stream_id before auth');
        await expectStatusError(c.newCipherBox({ desc: { streamId: sid }, hasAuth: false }), { code: INVALID, details: 'auth type required' });
        // None of them created the box.
        await c.createBox(sid);
        await c.delBox(sid);
      });

      test('success is present; a second create fails ALREADY_EXISTS "stream already active"', async (t) => {
        const c = clientFor(t, server);
        const sid = randomSid();
        const res = await c.newCipherBox(boxAuth(sid));
        assert.equal(res.success, true, 'CipherInitResp.success must be set');
        await expectStatusError(c.newCipherBox(boxAuth(sid)), { code: status.ALREADY_EXISTS, details: 'stream already active' });
        // The peer SID is a box of its own.
        await c.createBox(peerSid(sid));
        await c.delBox(sid);
        await c.delBox(peerSid(sid));
      });
    });

    describe('DelCipherBox', () => {
      test('validates desc, then stream_id, then auth, with the exact texts', async (t) => {
        const c = clientFor(t, server);
        const sid = randomSid();
        await c.createBox(sid);
        const empty = Buffer.alloc(0);
        await expectStatusError(c.delCipherBox({ desc: null, hasAuth: true }), { code: INVALID, details: 'cipher box descriptor required' });
        await expectStatusError(c.delCipherBox({ desc: null, hasAuth: false }), { code: INVALID, details: 'cipher box descriptor required' }, 'desc before auth');
        await expectStatusError(c.delCipherBox({ desc: { streamId: empty }, hasAuth: true }), { code: INVALID, details: 'stream_id required' });
        await expectStatusError(c.delCipherBox({ desc: { streamId: empty }, hasAuth: false }), { code: INVALID, details: 'stream_id required' }, 'stream_id before auth');
        await expectStatusError(c.delCipherBox({ desc: { streamId: sid }, hasAuth: false }), { code: INVALID, details: 'auth type required' });
        // The box survived every rejected delete.
        assert.equal(await boxExisted(c, sid), true);
        await c.delBox(sid);
      });

      test('unknown SID -> "stream not found"; a deleted box is gone', async (t) => {
        const c = clientFor(t, server);
        const sid = randomSid();
        await expectStatusError(c.delBox(sid), { code: NOT_FOUND, details: 'stream not found' });
        await c.createBox(sid);
        await c.delBox(sid);
        await expectStatusError(c.delBox(sid), { code: NOT_FOUND, details: 'stream not found' }, 'second delete');
        await expectStatusError(c.openReader(sid).next(), { code: NOT_FOUND, details: 'stream not found' }, 'RecvStream after delete');
      });

      test('delete ends an attached reader with UNKNOWN "EOF"', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const reader = await attachedReader(app, node, sid, payload(10, 1));
        await node.delBox(sid);
        assertStatus(await reader.ended(), { code: status.UNKNOWN, details: 'EOF' }, 'reader');
      });

      test('a write after delete fails with "closed pipe"', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = app.openWriter(sid);
        const reader = node.openReader(sid);
        // The reader seeing the first message proves the writer holds the slot.
        await writer.write(payload(10, 1));
        assertMsg(await reader.next(), payload(10, 1));
        reader.cancel();
        await reader.ended();
        await node.delBox(sid);
        await writer.write(payload(10, 2)).catch(() => undefined);
        assertStatus(await writer.ended(), { code: GONE, details: /closed pipe/ }, 'writer');
      });

      test('a caller waiting for a slot when the box is deleted gets "stream shutting down"', async (t) => {
        // A long acquire wait, so the second reader is surely still waiting when the delete lands.
        const slow = await serverFor(t, { config: { mailbox: { acquireWaitMs: 8_000 } } });
        const node = clientFor(t, slow);
        const app = clientFor(t, slow);
        const app2 = clientFor(t, slow);
        const sid = randomSid();
        await node.createBox(sid);
        const first = await attachedReader(app, node, sid, payload(5, 1));
        const waiting = app2.openReader(sid);
        await roundTrip(app2); // the server has the waiting RecvStream by now
        await node.delBox(sid);
        assertStatus(await waiting.ended(), { code: GONE, details: 'stream shutting down' }, 'waiting reader');
        assertStatus(await first.ended(), { code: status.UNKNOWN, details: 'EOF' }, 'attached reader');
      });
    });

    describe('SendStream', () => {
      test('a first message without desc fails "cipher box descriptor required" and the server keeps serving', async (t) => {
        const c = clientFor(t, server);
        const writer = c.openWriter(null);
        await writer.write(payload(10, 1)).catch(() => undefined);
        await expectStatusError(writer.result, { code: INVALID, details: 'cipher box descriptor required' });
        // Same connection and a new one both still work end to end.
        const other = clientFor(t, server);
        for (const client of [c, other]) {
          const sid = randomSid();
          await client.createBox(sid);
          const reader = client.openReader(sid);
          const w = client.openWriter(sid);
          await w.write(payload(3, 2));
          assertMsg(await reader.next(), payload(3, 2));
          await w.end();
          reader.cancel();
          await client.delBox(sid);
        }
      });

      test('unknown box -> "stream not found"', async (t) => {
        const c = clientFor(t, server);
        const writer = c.openWriter(randomSid());
        await writer.write(payload(10, 1)).catch(() => undefined);
        await expectStatusError(writer.result, { code: NOT_FOUND, details: 'stream not found' });
      });

      test('a second writer fails "write stream occupied"; the holder keeps writing', async (t) => {
        const node = clientFor(t, server);
        const app1 = clientFor(t, server);
        const app2 = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const reader = node.openReader(sid);
        const holder = app1.openWriter(sid);
        await holder.write(payload(10, 1));
        assertMsg(await reader.next(), payload(10, 1), 'holder has the slot');
        const second = app2.openWriter(sid);
        await second.write(payload(10, 99)).catch(() => undefined);
        await expectStatusError(second.result, { code: OCCUPIED, details: 'write stream occupied' });
        await holder.write(payload(10, 2));
        assertMsg(await reader.next(), payload(10, 2), 'holder not evicted; second writer wrote nothing');
        await holder.end();
        await node.delBox(sid);
      });

      test('a writer that drops frees the slot at once for the next writer', async (t) => {
        const node = clientFor(t, server);
        const app1 = clientFor(t, server);
        const app2 = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const reader = node.openReader(sid);
        const first = app1.openWriter(sid);
        await first.write(payload(10, 1));
        assertMsg(await reader.next(), payload(10, 1));
        first.cancel();
        await first.ended();
        const next = app2.openWriter(sid);
        await next.write(payload(10, 2));
        assertMsg(await reader.next(), payload(10, 2));
        await next.end();
        await node.delBox(sid);
      });

      test('desc of later messages is ignored', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        const other = randomSid();
        await node.createBox(sid);
        await node.createBox(other);
        const reader = node.openReader(sid);
        const writer = app.openWriter(null);
        await writer.writeBox({ desc: { streamId: sid }, msg: payload(4, 1) });
        await writer.writeBox({ desc: { streamId: other }, msg: payload(4, 2) });
        await writer.writeBox({ desc: null, msg: payload(4, 3) });
        for (const seed of [1, 2, 3]) assertMsg(await reader.next(), payload(4, seed), `message ${seed}`);
        await writer.end();
        await node.delBox(sid);
        await node.delBox(other);
      });

      test('half-close ends with OK and an empty CipherBoxDesc', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = app.openWriter(sid);
        await writer.write(payload(10, 1));
        const answer = await writer.end();
        assert.equal(answer.streamId.length, 0);
        assertStatus(await writer.ended(), { code: status.OK }, 'writer');
        await node.delBox(sid);
      });
    });

    describe('RecvStream', () => {
      test('unknown box -> "stream not found"', async (t) => {
        const c = clientFor(t, server);
        await expectStatusError(c.openReader(randomSid()).next(), { code: NOT_FOUND, details: 'stream not found' });
      });

      test('a second reader fails "read stream occupied"; the first keeps reading', async (t) => {
        const node = clientFor(t, server);
        const app1 = clientFor(t, server);
        const app2 = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const first = await attachedReader(app1, node, sid, payload(10, 1));
        await expectStatusError(app2.openReader(sid).next(), { code: OCCUPIED, details: 'read stream occupied' });
        const writer = node.openWriter(sid);
        await writer.write(payload(10, 2));
        assertMsg(await first.next(), payload(10, 2));
        await writer.end();
        await node.delBox(sid);
      });

      test('every message is delivered once, whole, in order, with the desc as sent', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const reader = app.openReader(sid);
        const writer = node.openWriter(sid);
        const msgs = Array.from({ length: 60 }, (_, i) => payload(1 + ((i * 977) % 20_000), i));
        const sent = writer.writeAll(msgs);
        for (let i = 0; i < msgs.length; i++) {
          const box = await reader.nextBox();
          assert.ok(box.desc?.streamId.equals(sid), `message ${i}: desc`);
          assertMsg(box.msg, msgs[i], `message ${i}`);
        }
        await sent;
        // A marker right after: nothing was duplicated in between.
        await writer.write(payload(7, 1000));
        assertMsg(await reader.next(), payload(7, 1000));
        await writer.end();
        await node.delBox(sid);
      });

      test('a reader that leaves frees the slot; the next reader continues with the next undelivered message', async (t) => {
        const node = clientFor(t, server);
        const app1 = clientFor(t, server);
        const app2 = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = node.openWriter(sid);
        const first = app1.openReader(sid);
        await writer.write(payload(10, 1));
        assertMsg(await first.next(), payload(10, 1));
        first.cancel();
        assertStatus(await first.ended(), { code: status.CANCELLED }, 'first reader');
        // A round trip on the first reader's connection: the server has seen it leave before message 2 exists.
        await roundTrip(app1);
        await writer.write(payload(10, 2));
        await writer.write(payload(10, 3));
        const second = app2.openReader(sid);
        assertMsg(await second.next(), payload(10, 2), 'message 2: neither message 1 again (handed to the first reader) nor lost to the reader that left');
        assertMsg(await second.next(), payload(10, 3));
        await writer.end();
        await node.delBox(sid);
      });

      test('messages written before any reader attaches survive the writer leaving', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = app.openWriter(sid);
        const msgs = [payload(100, 1), payload(2_000, 2), payload(33, 3)];
        await writer.writeAll(msgs);
        await writer.end();
        const reader = node.openReader(sid);
        for (let i = 0; i < msgs.length; i++) assertMsg(await reader.next(), msgs[i], `message ${i}`);
        await node.delBox(sid);
      });

      test('a writer ahead of its reader is held back, not failed, and loses nothing', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = app.openWriter(sid);
        // 1 MiB in 8 KiB messages: far over the 64 KiB a box holds, so the writer must be pushed back.
        const msgs = Array.from({ length: 128 }, (_, i) => payload(8 * KiB, i));
        // 32 KiB fit in the box with no reader at all; the rest waits on flow control.
        await writer.writeAll(msgs.slice(0, 4));
        const sent = writer.writeAll(msgs.slice(4), 30_000);
        sent.catch(() => undefined);
        const reader = node.openReader(sid);
        for (let i = 0; i < msgs.length; i++) assertMsg(await reader.next(), msgs[i], `message ${i}`);
        await sent;
        await writer.end();
        await node.delBox(sid);
      });

      test('a caller cancelling while waiting for a slot ends CANCELLED and does not take the slot', async (t) => {
        // A long acquire wait: a waiter that wrongly kept the slot would make the third reader fail "occupied".
        const slow = await serverFor(t, { config: { mailbox: { acquireWaitMs: 8_000 } } });
        const node = clientFor(t, slow);
        const app1 = clientFor(t, slow);
        const app2 = clientFor(t, slow);
        const app3 = clientFor(t, slow);
        const sid = randomSid();
        await node.createBox(sid);
        const first = await attachedReader(app1, node, sid, payload(5, 1));
        const waiting = app2.openReader(sid);
        await roundTrip(app2); // the server has the waiting RecvStream by now
        waiting.cancel();
        assertStatus(await waiting.ended(), { code: status.CANCELLED }, 'waiting reader');
        await roundTrip(app2); // the server has seen the cancel before the slot frees
        first.cancel();
        await first.ended();
        const third = app3.openReader(sid);
        const writer = node.openWriter(sid);
        await writer.write(payload(5, 2));
        assertMsg(await third.next(), payload(5, 2), 'third reader got the slot');
        await writer.end();
        await node.delBox(sid);
      });

      test('a writer cancelling while waiting for the write slot does not take it', async (t) => {
        const slow = await serverFor(t, { config: { mailbox: { acquireWaitMs: 8_000 } } });
        const node = clientFor(t, slow);
        const app1 = clientFor(t, slow);
        const app2 = clientFor(t, slow);
        const app3 = clientFor(t, slow);
        const sid = randomSid();
        await node.createBox(sid);
        const reader = node.openReader(sid);
        const holder = app1.openWriter(sid);
        await holder.write(payload(5, 1));
        assertMsg(await reader.next(), payload(5, 1));
        const waiting = app2.openWriter(sid);
        await waiting.write(payload(5, 99));
        await roundTrip(app2); // the server has the waiting SendStream by now
        waiting.cancel();
        assertStatus(await waiting.ended(), { code: status.CANCELLED }, 'waiting writer');
        await roundTrip(app2); // the server has seen the cancel before the slot frees
        await holder.end();
        const next = app3.openWriter(sid);
        await next.write(payload(5, 2));
        assertMsg(await reader.next(), payload(5, 2), 'the cancelled writer wrote nothing and the next got the slot');
        await next.end();
        await node.delBox(sid);
      });
    });

    describe('sizes', () => {
      for (const size of SIZES) {
        test(`a ${size}-byte message arrives intact, and so does the message after it`, async (t) => {
          const node = clientFor(t, server);
          const app = clientFor(t, server);
          const sid = randomSid();
          await node.createBox(sid);
          const reader = app.openReader(sid);
          const writer = node.openWriter(sid);
          const big = payload(size, size);
          const after = payload(17, size + 1);
          const sent = writer.writeAll([big, after]);
          sent.catch(() => undefined);
          const got = await reader.next();
          assert.equal(got.length, size);
          assert.ok(got.equals(big), 'payload intact');
          assertMsg(await reader.next(), after, 'the message after it');
          await sent;
          await writer.end();
          await node.delBox(sid);
        });
      }

      test('a message over 4 MiB fails RESOURCE_EXHAUSTED', async (t) => {
        const node = clientFor(t, server);
        const app = clientFor(t, server);
        const sid = randomSid();
        await node.createBox(sid);
        const writer = app.openWriter(sid);
        await writer.write(payload(4 * MiB + 1, 1)).catch(() => undefined);
        assertStatus(await writer.ended(), { code: status.RESOURCE_EXHAUSTED }, 'writer');
        await node.delBox(sid);
      });
    });

    describe('stream IDs', () => {
      for (const length of [63, 65]) {
        test(`a ${length}-byte SID fails INVALID_ARGUMENT on every rpc`, async (t) => {
          const c = clientFor(t, server);
          const bad = randomBytes(length);
          await expectStatusError(c.newCipherBox(boxAuth(bad)), { code: status.INVALID_ARGUMENT }, 'NewCipherBox');
          await expectStatusError(c.delCipherBox(boxAuth(bad)), { code: status.INVALID_ARGUMENT }, 'DelCipherBox');
          await expectStatusError(c.openReader(bad).next(), { code: status.INVALID_ARGUMENT }, 'RecvStream');
          const writer = c.openWriter(bad);
          await writer.write(payload(10, 1)).catch(() => undefined);
          await expectStatusError(writer.result, { code: status.INVALID_ARGUMENT }, 'SendStream');
        });
      }
    });
  });

  describe('grpc v1, stale timeout', () => {
    // A reader must attach within this after its box is created (a new connection, through a gateway on the cluster target).
    const STALE_MS = 1000;
    let server: RunningServer;

    before(async () => {
      server = await start({ config: { mailbox: { staleTimeoutMs: STALE_MS } } });
    });

    after(async () => {
      await server?.stop();
    });

    test('a box no one ever attached to is reaped', async (t) => {
      const c = clientFor(t, server);
      const sid = randomSid();
      await c.createBox(sid);
      await awaitReaped(c, sid, 'unattached box reaped');
      await expectStatusError(c.openReader(sid).next(), { code: NOT_FOUND, details: 'stream not found' }, 'RecvStream on a reaped box');
    });

    test('an attached reader keeps the box alive past the timeout; it is reaped once the reader leaves', async (t) => {
      const node = clientFor(t, server);
      const app = clientFor(t, server);
      const sid = randomSid();
      const control = randomSid();
      await node.createBox(sid);
      const reader = await attachedReader(app, node, sid, payload(5, 1));
      // Created after the reader attached: once it is reaped, sid has outlived its timeout.
      await node.createBox(control);
      await awaitReaped(node, control, 'control box reaped');
      assert.equal(await boxExisted(node, sid), true, 'box with an attached reader survives');
      const writer = node.openWriter(sid);
      await writer.write(payload(5, 2));
      assertMsg(await reader.next(), payload(5, 2), 'reader still served');
      await writer.end();
      reader.cancel();
      await reader.ended();
      await awaitReaped(node, sid, 'box reaped after its reader left');
    });

    test('a negative staleTimeoutMs disables the timer', async (t) => {
      const never = await serverFor(t, { config: { mailbox: { staleTimeoutMs: -1 } } });
      const kept = clientFor(t, never);
      const c = clientFor(t, server);
      const sid = randomSid();
      const control = randomSid();
      await kept.createBox(sid);
      await c.createBox(control);
      await awaitReaped(c, control, 'control box reaped on the 300 ms server');
      assert.equal(await boxExisted(kept, sid), true, 'box on the server with staleTimeoutMs -1 survives');
      await kept.delBox(sid);
    });
  });

  describe('grpc v1, rate limit', () => {
    test('a writer over the limit is slowed, not cut off: 5 messages at 50 ms / burst 2 all arrive', async (t) => {
      const server = await serverFor(t, { config: { mailbox: { rateLimitIntervalMs: 50, rateLimitBurst: 2 } } });
      const node = clientFor(t, server);
      const app = clientFor(t, server);
      const sid = randomSid();
      await node.createBox(sid);
      const reader = app.openReader(sid);
      const writer = node.openWriter(sid);
      const msgs = Array.from({ length: 5 }, (_, i) => payload(100, i));
      const sent = writer.writeAll(msgs);
      sent.catch(() => undefined);
      for (let i = 0; i < msgs.length; i++) assertMsg(await reader.next(), msgs[i], `message ${i}`);
      await sent;
      await writer.end();
      assertStatus(await writer.ended(), { code: status.OK }, 'writer');
    });
  });

  describe('grpc v1, keepalive', () => {
    test('client keepalive pings are accepted: a stream held over ~3 pings is not ended', async (t) => {
      // One message a second paces delivery, so the test awaits data while the client pings every second.
      const server = await serverFor(t, { config: { mailbox: { rateLimitIntervalMs: 1_000, rateLimitBurst: 1 } } });
      const pinging: ConnectOptions = { keepaliveTimeMs: 1_000 };
      const node = clientFor(t, server, pinging);
      const app = clientFor(t, server, pinging);
      const sid = randomSid();
      await node.createBox(sid);
      const reader = app.openReader(sid);
      let readerEnded: grpc.StatusObject | null = null;
      void reader.status.then((s) => (readerEnded = s));
      const writer = node.openWriter(sid);
      const msgs = Array.from({ length: 5 }, (_, i) => payload(20, i));
      const sent = writer.writeAll(msgs);
      sent.catch(() => undefined);
      for (let i = 0; i < msgs.length; i++) assertMsg(await reader.next(WAIT_MS), msgs[i], `message ${i}`);
      await sent;
      assert.equal(readerEnded, null, 'reader still open (no GOAWAY too_many_pings)');
      // A fresh call on the same (pinging) connections still works.
      const again = randomSid();
      await node.createBox(again);
      await node.delBox(again);
      await writer.end();
      assertStatus(await writer.ended(), { code: status.OK }, 'writer');
      assert.equal(readerEnded, null, 'reader still open');
    });
  });

  describe('grpc v1, shutdown', () => {
    test('SIGTERM ends an attached reader and writer with UNAVAILABLE "server shutting down"', async (t) => {
      const server = await serverFor(t, {});
      const node = clientFor(t, server);
      const app = clientFor(t, server);
      const sid = randomSid();
      await node.createBox(sid);
      const reader = app.openReader(sid);
      const writer = node.openWriter(sid);
      await writer.write(payload(10, 1));
      assertMsg(await reader.next(), payload(10, 1), 'both halves attached');
      const stopped = server.stop();
      const [readerStatus, writerStatus] = await Promise.all([reader.ended(), writer.ended()]);
      assertStatus(readerStatus, { code: status.UNAVAILABLE, details: 'server shutting down' }, 'reader');
      assertStatus(writerStatus, { code: status.UNAVAILABLE, details: 'server shutting down' }, 'writer');
      await stopped;
    });
  });
}
