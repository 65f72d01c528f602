/**
 * End to end through `hashmail gateway` processes: real etcd, two relays and
 * two gateways as separate processes (exact CLI flags). A legacy node over
 * gRPC through gateway 1 and a legacy app over WebSocket exchange messages
 * both ways intact, every call carried over the hop to the relay that owns
 * the session:
 * - 1,000 messages each way, the app's two halves at gateway 2;
 * - 1,000 messages each way, the app's receive half at gateway 1 and its send
 *   half at gateway 2 (one legacy party split over two gateways);
 * - the LNC-shaped exchange (rounds of LNC's Go-Back-N window, messages up to
 *   LNC's largest) with the app's receive socket dropped and re-dialled at the
 *   other gateway between rounds: every message carries its sequence number
 *   and hash, so one duplicated, reordered or damaged message fails.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { pollUntil } from '../helpers/async-queue.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { connect, peerSid, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import type { RunningServer } from '../helpers/server.js';
import { checkMessage, makeMessage, randomSizes, StreamDigest } from '../helpers/v2-stream-check.js';
import { OpenSockets, openReceive, openSendSocket, readMessage, restCreateBox, sendMessage } from '../helpers/ws-v1.js';

const MESSAGES = 1000;
/** Bulk messages: up to 4 KiB, so 1,000 each way stays quick through base64 JSON. */
const BULK_MAX_BYTES = 4096;
/** LNC's largest message is about 32,800 bytes (v1 spec section 1). */
const LNC_MAX_MESSAGE_BYTES = 32_800;
/** LNC's Go-Back-N window: at most this many messages in flight per direction. */
const WINDOW = 20;
const LNC_ROUNDS = 50;
/** Rounds after which the app's receive socket drops and is re-dialled at the other gateway. */
const DROP_AFTER_ROUNDS = [10, 25, 40];
const TEST_TIMEOUT_MS = 120_000;

/** Sum of one metric sample over processes (absent counts 0). */
async function sumMetric(servers: RunningServer[], name: string): Promise<number> {
  const values = await Promise.all(servers.map((s) => s.metric(name)));
  return values.reduce<number>((a, b) => a + (b ?? 0), 0);
}

/** One direction of an exchange: sizes, counters and digests of both ends. */
class Direction {
  readonly sizes: number[];
  sent = 0;
  received = 0;
  readonly tx = new StreamDigest();
  readonly rx = new StreamDigest();

  constructor(
    readonly name: string,
    count: number,
    max: number,
    seed: number,
  ) {
    this.sizes = randomSizes(count, max, seed);
  }

  next(): Buffer {
    const msg = makeMessage(this.sent, this.sizes[this.sent]);
    this.tx.add(msg);
    this.sent++;
    return msg;
  }

  got(msg: Buffer): void {
    checkMessage(msg, this.received, this.sizes[this.received], this.name);
    this.rx.add(msg);
    this.received++;
  }

  assertComplete(): void {
    assert.equal(this.received, this.sent, `${this.name}: messages`);
    assert.equal(this.rx.bytes, this.tx.bytes, `${this.name}: bytes`);
    assert.equal(this.rx.digest(), this.tx.digest(), `${this.name}: SHA-256 of the stream`);
  }
}

describe('legacy clients through two gateway processes, two relays', () => {
  let cluster: Cluster;
  let node: V1Client;
  const sockets = new OpenSockets();

  before(async () => {
    cluster = await startCluster({ relays: 2, gateways: 2, ttlMs: 3000 });
    node = connect(cluster.gateways[0].address);
  });
  after(async () => {
    node?.close();
    await sockets.closeAll();
    await cluster?.stop();
  });

  /** Node over gRPC at gateway 1; app receive at `recvAt`, send at `sendAt`; `count` messages each way at once. */
  async function exchange(recvAt: RunningServer, sendAt: RunningServer, count: number): Promise<void> {
    const nodeSid = randomSid();
    const appSid = peerSid(nodeSid);
    await node.createBox(nodeSid);
    assert.equal((await restCreateBox(sendAt.port, appSid)).status, 200);
    const nodeReader = node.openReader(nodeSid);
    const nodeWriter = node.openWriter(appSid);
    const appReceive = await sockets.track(openReceive(recvAt.port, appSid));
    const appSend = await sockets.track(openSendSocket(sendAt.port));
    const down = new Direction('node->app', count, BULK_MAX_BYTES, 21);
    const up = new Direction('app->node', count, BULK_MAX_BYTES, 22);
    try {
      const toApp = Array.from({ length: count }, () => down.next());
      await Promise.all([
        nodeWriter.writeAll(toApp),
        (async () => {
          for (let i = 0; i < count; i++) await sendMessage(appSend, nodeSid, up.next());
        })(),
        (async () => {
          for (let i = 0; i < count; i++) down.got(await readMessage(appReceive, appSid));
        })(),
        (async () => {
          for (let i = 0; i < count; i++) up.got(await nodeReader.next());
        })(),
      ]);
      down.assertComplete();
      up.assertComplete();
      await nodeWriter.end();
      // The gateways count the halves they carry as serve counts its own; the owner counts them as hop halves.
      assert.equal(await recvAt.metric('hashmail_attached_halves{transport="websocket",kind="read"}'), 1);
      assert.equal(await cluster.gateways[0].metric('hashmail_attached_halves{transport="grpc",kind="read"}'), 1);
      assert.equal(await sumMetric(cluster.relays, 'hashmail_attached_halves{transport="hop",kind="read"}'), 2);
    } finally {
      nodeReader.cancel();
      await appReceive.close();
      await appSend.close();
      sockets.forget(appReceive);
      sockets.forget(appSend);
    }
    // Nothing carried stays behind: every gateway and relay is back to no read half.
    await pollUntil(
      async () => (await sumMetric([...cluster.gateways, ...cluster.relays], 'hashmail_attached_halves{transport="hop",kind="read"}')) === 0,
      'hop read halves released',
    );
  }

  test(`a node over gRPC (gateway 1) and an app over WebSocket (gateway 2) exchange ${MESSAGES} messages each way intact`, { timeout: TEST_TIMEOUT_MS }, async () => {
    await exchange(cluster.gateways[1], cluster.gateways[1], MESSAGES);
  });

  test(`the app's receive half at gateway 1 and its send half at gateway 2: ${MESSAGES} messages each way intact`, { timeout: TEST_TIMEOUT_MS }, async () => {
    await exchange(cluster.gateways[0], cluster.gateways[1], MESSAGES);
  });

  test('LNC-shaped exchange: the app receive socket dropped and re-dialled at the other gateway, nothing duplicated or reordered', { timeout: TEST_TIMEOUT_MS }, async () => {
    const [gw1, gw2] = cluster.gateways;
    const s2c = randomSid();
    const c2s = peerSid(s2c);
    const down = new Direction('node->app', LNC_ROUNDS * WINDOW + 1, LNC_MAX_MESSAGE_BYTES, 31);
    const up = new Direction('app->node', LNC_ROUNDS * WINDOW + 1, LNC_MAX_MESSAGE_BYTES, 32);

    // The node, as litd: C2S right before its first receive, S2C before its first send.
    await node.createBox(c2s);
    const nodeReader = node.openReader(c2s);
    await node.createBox(s2c);
    const nodeWriter = node.openWriter(s2c);
    let recvAt = gw1;
    let appReceive = await sockets.track(openReceive(recvAt.port, s2c));
    const appSend = await sockets.track(openSendSocket(gw2.port));
    try {
      for (let r = 1; r <= LNC_ROUNDS; r++) {
        // One window each way, both directions at once; nothing in flight between rounds.
        const toApp = Array.from({ length: WINDOW }, () => down.next());
        const recv = appReceive;
        await Promise.all([
          nodeWriter.writeAll(toApp),
          (async () => {
            for (let i = 0; i < WINDOW; i++) await sendMessage(appSend, c2s, up.next());
          })(),
          (async () => {
            for (let i = 0; i < WINDOW; i++) down.got(await readMessage(recv, s2c));
          })(),
          (async () => {
            for (let i = 0; i < WINDOW; i++) up.got(await nodeReader.next());
          })(),
        ]);
        if (DROP_AFTER_ROUNDS.includes(r)) {
          const wasAt = recvAt;
          await appReceive.close();
          sockets.forget(appReceive);
          // The event the re-dial waits for: the gateway let the half go and its owner freed the read slot.
          await pollUntil(async () => (await wasAt.metric('hashmail_attached_halves{transport="websocket",kind="read"}')) === 0, 'old receive half released at its gateway');
          await pollUntil(async () => (await sumMetric(cluster.relays, 'hashmail_attached_halves{transport="hop",kind="read"}')) === 1, 'read slot freed at the relay');
          recvAt = wasAt === gw1 ? gw2 : gw1;
          appReceive = await sockets.track(openReceive(recvAt.port, s2c));
        }
      }
      // A last message each way: anything duplicated earlier would arrive before it.
      const last = down.next();
      await nodeWriter.write(last);
      down.got(await readMessage(appReceive, s2c));
      await sendMessage(appSend, c2s, up.next());
      up.got(await nodeReader.next());
      down.assertComplete();
      up.assertComplete();
      await nodeWriter.end();
    } finally {
      nodeReader.cancel();
      await sockets.closeAll();
    }
  });
});
