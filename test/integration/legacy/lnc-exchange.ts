/**
 * An LNC-shaped exchange through a real server (spec section 1): the node
 * (litd) over gRPC, the app (browser) over the WebSocket gateway.
 *
 * S2C = sid (node -> app), C2S = sid ^ 1 at byte 63 (app -> node). The node
 * creates the boxes lazily as litd does: C2S right before its first receive,
 * S2C only on its first send, after it has the app's first message. So the
 * app's first receive on S2C fails with "stream not found" and is retried.
 *
 * What the mailbox guarantees, and so what this checks: every message written
 * to a box is delivered once, whole and in order; a reader that leaves frees
 * the slot and the next reader continues with the next undelivered message;
 * a message already handed to a reader that then left is NOT delivered again
 * (LNC's Go-Back-N retransmits what was lost). The drop phase is therefore
 * designed with nothing in flight: the node sends message k only after the
 * app acknowledged k-1, and the app drops its receive socket after reading k
 * and before acknowledging it.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes, randomInt } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { connectGrpc, ensureBox, GrpcReader, GrpcSender, type LegacyClient } from '../../helpers/grpc-v1-peer.js';
import type { RunningServer } from '../../helpers/server.js';
import { openReceive, openSendSocket, readMessage, sendMessage, type WsConn } from '../../helpers/ws-v1.js';
import type { StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function lncExchangeSuite(start: StartTarget): void {
  const MESSAGES_EACH_WAY = 1_000;
  const MAX_PAYLOAD_BYTES = 32 * 1024;
  const ACKED_MESSAGES = 30;
  /** Indexes (within the acknowledged phase) after which the app drops its receive socket. */
  const DROP_AFTER = new Set([5, 17, 18]);
  const RETRY_DELAY_MS = 20;
  const RETRY_ATTEMPTS = 200;

  /** seq (u32 BE) + SHA-256(seq || payload) + payload. */
  const HEADER_BYTES = 4 + 32;

  function checksum(seq: number, payload: Buffer): Buffer {
    const s = Buffer.alloc(4);
    s.writeUInt32BE(seq);
    return createHash('sha256').update(s).update(payload).digest();
  }

  function makeMessage(seq: number, payload: Buffer): Buffer {
    const head = Buffer.alloc(4);
    head.writeUInt32BE(seq);
    return Buffer.concat([head, checksum(seq, payload), payload]);
  }

  const randomPayload = (seq: number): Buffer => randomBytes(seq === 0 ? 0 : randomInt(0, MAX_PAYLOAD_BYTES + 1));

  /** Checks a message is `expectedSeq`, whole; returns its payload. */
  function openMessage(msg: Buffer, expectedSeq: number, who: string): Buffer {
    assert.ok(msg.length >= HEADER_BYTES, `${who}: ${msg.length}-byte message where #${expectedSeq} was due`);
    const seq = msg.readUInt32BE(0);
    assert.equal(seq, expectedSeq, `${who}: got #${seq} where #${expectedSeq} was due (lost, duplicated or reordered)`);
    const payload = msg.subarray(HEADER_BYTES);
    assert.ok(checksum(seq, payload).equals(msg.subarray(4, HEADER_BYTES)), `${who}: #${seq} corrupted`);
    return payload;
  }

  function flipParity(sid: Buffer): Buffer {
    const other = Buffer.from(sid);
    other[63] ^= 0x01;
    return other;
  }

  /**
   * The app's receive half: dials S2C, re-dials on "stream not found" or
   * "stream occupied" (bounded), and hides a re-dial from the reading loop.
   */
  class AppReceiver {
    private conn: WsConn | null = null;
    private redial: Promise<{ conn: WsConn; first: Buffer }> | null = null;
    readonly retriedErrors: string[] = [];
    readonly conns: WsConn[] = [];
    /** Settles once the first dial has its answer (an error, or a first message). */
    readonly firstAnswer: Promise<void>;
    private answered!: () => void;

    constructor(
      private readonly port: number,
      private readonly sid: Buffer,
    ) {
      this.firstAnswer = new Promise((resolve) => (this.answered = resolve));
    }

    /** Dials until a message arrives; the retries do not wait on any clock but a short delay between attempts. */
    start(): void {
      this.redial = this.dial();
    }

    private async dial(): Promise<{ conn: WsConn; first: Buffer }> {
      for (let attempt = 0; attempt < RETRY_ATTEMPTS; attempt++) {
        const conn = await openReceive(this.port, this.sid);
        this.conns.push(conn);
        const frame = await conn.nextFrame(30_000).catch((err: Error) => `{"error":{"code":-1,"message":"${err.message}"}}`);
        this.answered();
        if (frame.startsWith('{"result":')) return { conn, first: readResult(frame, this.sid) };
        const match = /stream not found|stream occupied/.exec(frame);
        assert.ok(match, `app receive failed with an error it would not retry: ${frame}`);
        this.retriedErrors.push(match[0]);
        await conn.close();
        await delay(RETRY_DELAY_MS);
      }
      return assert.fail(`app receive did not attach in ${RETRY_ATTEMPTS} attempts`);
    }

    async next(): Promise<Buffer> {
      if (this.redial) {
        const { conn, first } = await this.redial;
        this.redial = null;
        this.conn = conn;
        return first;
      }
      return readMessage(this.conn!, this.sid);
    }

    /** Drops the socket abruptly (no close frame), as a lost network does, and re-dials. */
    drop(): void {
      this.conn!.ws.terminate();
      this.conn = null;
      this.redial = this.dial();
    }

    async close(): Promise<void> {
      await this.redial?.catch(() => undefined);
      await Promise.all(this.conns.map((c) => c.close()));
    }
  }

  function readResult(frame: string, sid: Buffer): Buffer {
    const parsed = JSON.parse(frame) as { result: { desc: { stream_id: string }; msg: string } };
    assert.equal(parsed.result.desc.stream_id, sid.toString('base64'));
    return Buffer.from(parsed.result.msg, 'base64');
  }

  describe('LNC-shaped exchange: node over gRPC, app over WebSocket', () => {
    let server: RunningServer;
    let grpc: LegacyClient;

    before(async () => {
      server = await start();
      grpc = connectGrpc(server.address);
    });
    after(async () => {
      grpc?.close();
      await server?.stop();
    });

    test(`${MESSAGES_EACH_WAY} messages each way intact and in order; a receive socket dropped and re-dialled mid-stream resumes without duplicates`, { timeout: 180_000 }, async (t) => {
      const s2c = randomBytes(64);
      const c2s = flipParity(s2c);
      const app = new AppReceiver(server.port, s2c);
      const appSend = await openSendSocket(server.port);
      let nodeReader: GrpcReader | null = null;
      let nodeWriter: GrpcSender | null = null;
      try {
        // Node: C2S right before its first receive.
        await ensureBox(grpc, c2s);
        nodeReader = new GrpcReader(grpc, c2s);

        // App: its first receive comes before S2C exists (the node creates S2C only
        // after the app's first message), fails with "stream not found" and is retried.
        app.start();
        await app.firstAnswer;
        assert.deepEqual(app.retriedErrors, ['stream not found']);

        const appWrites = (async () => {
          for (let seq = 0; seq < MESSAGES_EACH_WAY; seq++) await sendMessage(appSend, c2s, makeMessage(seq, randomPayload(seq)));
        })();

        const nodeSide = (async () => {
          const reader = nodeReader!;
          openMessage(await reader.next(), 0, 'node');
          // S2C only on the node's first send, after the app's first message.
          await ensureBox(grpc, s2c);
          nodeWriter = new GrpcSender(grpc);
          const writer = nodeWriter;
          const writes = (async () => {
            for (let seq = 0; seq < MESSAGES_EACH_WAY; seq++) await writer.write(s2c, makeMessage(seq, randomPayload(seq)));
          })();
          for (let seq = 1; seq < MESSAGES_EACH_WAY; seq++) openMessage(await reader.next(), seq, 'node');
          await writes;
        })();

        const appReads = (async () => {
          for (let seq = 0; seq < MESSAGES_EACH_WAY; seq++) openMessage(await app.next(), seq, 'app');
        })();

        await Promise.all([appWrites, nodeSide, appReads]);

        // Acknowledged phase: nothing in flight when the app drops its receive socket.
        const base = MESSAGES_EACH_WAY;
        const reader = nodeReader;
        const writer = nodeWriter!;
        const nodeAcked = (async () => {
          for (let i = 0; i < ACKED_MESSAGES; i++) {
            await writer.write(s2c, makeMessage(base + i, randomPayload(base + i)));
            const ack = openMessage(await reader.next(), base + i, 'node');
            assert.equal(ack.readUInt32BE(0), base + i, 'ack for the wrong message');
          }
          // A final message each way: anything duplicated earlier would arrive before it.
          await writer.write(s2c, makeMessage(base + ACKED_MESSAGES, Buffer.from('fin')));
          openMessage(await reader.next(), base + ACKED_MESSAGES, 'node');
        })();
        const appAcked = (async () => {
          for (let i = 0; i < ACKED_MESSAGES; i++) {
            openMessage(await app.next(), base + i, 'app');
            if (DROP_AFTER.has(i)) app.drop();
            const ack = Buffer.concat([Buffer.alloc(4), randomBytes(randomInt(0, 64))]);
            ack.writeUInt32BE(base + i);
            await sendMessage(appSend, c2s, makeMessage(base + i, ack));
          }
          assert.equal(openMessage(await app.next(), base + ACKED_MESSAGES, 'app').toString(), 'fin');
          await sendMessage(appSend, c2s, makeMessage(base + ACKED_MESSAGES, Buffer.from('fin')));
        })();
        await Promise.all([nodeAcked, appAcked]);
        // One dial that attached, then one per drop (plus any retries).
        assert.ok(app.conns.length >= 1 + DROP_AFTER.size, `only ${app.conns.length} receive dials`);
        t.diagnostic(`app receive dials: ${app.conns.length}; retried errors: ${JSON.stringify(app.retriedErrors)}`);
        assert.equal(appSend.isClosed(), false, 'app send socket was closed');
      } finally {
        nodeReader?.cancel();
        (nodeWriter as GrpcSender | null)?.cancel();
        await app.close();
        await appSend.close();
      }
    });
  });
}
