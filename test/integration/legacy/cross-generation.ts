/**
 * v1 and v2 parties in the same session on one relay (docs/protocol-v2.md,
 * "Sessions, SIDs and parties"): a v1 party's RecvStream on `x` plus its
 * SendStream to `x ^ 1` is the same party as a v2 party reading `x`.
 *
 * Two pairings, both directions at once, in rounds: each round both sides
 * send a batch and read the other's batch, so between rounds nothing is in
 * flight and a party can drop and come back without the relay owing it a
 * message (v1 and v2 deliver once; what was handed to a broken stream is not
 * redelivered, so a drop with messages in flight may lose them by design).
 * Every message carries its sequence number: one duplicated or reordered
 * message fails the round it arrives in; a last round of one message each way
 * shows nothing stray is left. A v2 party dials where a v2 client would for
 * its session (the target's v2Dial: serve itself, or in a cluster the
 * gateway's WebSocket pass-through and the owning relay over gRPC).
 */
import assert from 'node:assert/strict';
import { after, afterEach, before, describe, test } from 'node:test';
import { connect, peerSid, randomSid, type Reader, type V1Client, type Writer } from '../../helpers/grpc-v1.js';
import { closeParties, type V2Party } from '../../helpers/v2-peers.js';
import { checkMessage, makeMessage, randomSizes, StreamDigest } from '../../helpers/v2-stream-check.js';
import { openReceive, openSendSocket, readMessage, sendMessage, type WsConn } from '../../helpers/ws-v1.js';
import { Attach } from '../../../src/wire/v2-frames.js';
import type { LegacyTarget, StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function crossGenerationSuite(start: StartTarget): void {
  /** LNC's largest message is about 32,800 bytes (v1 spec section 1). */
  const LNC_MAX_MESSAGE_BYTES = 32_800;
  /** LNC's Go-Back-N window: at most this many messages in flight per direction. */
  const BATCH_MESSAGES = 20;
  const ROUNDS = 30;
  /** Rounds after which the first and the second party drop and reconnect. */
  const FIRST_DROP_AFTER_ROUND = 10;
  const SECOND_DROP_AFTER_ROUND = 20;
  const TEST_TIMEOUT_MS = 120_000;
  const RESOURCE_EXHAUSTED = 8;

  /** One side of the session as the rounds see it; swapped out on reconnect. */
  interface Side {
    send(msg: Buffer): Promise<void>;
    next(): Promise<Buffer>;
  }


  /** Counts and digests of both directions; `app -> node` is "up" (C2S), `node -> app` is "down" (S2C). */
  class Exchange {
    readonly up = { sizes: randomSizes(ROUNDS * BATCH_MESSAGES + 1, LNC_MAX_MESSAGE_BYTES, 11), sent: 0, received: 0, tx: new StreamDigest(), rx: new StreamDigest() };
    readonly down = { sizes: randomSizes(ROUNDS * BATCH_MESSAGES + 1, LNC_MAX_MESSAGE_BYTES, 12), sent: 0, received: 0, tx: new StreamDigest(), rx: new StreamDigest() };

    /** Both sides send `n` and read `n`, concurrently; resolves when all four are done. */
    async round(app: Side, node: Side, n: number): Promise<void> {
      const sendAll = async (side: Side, dir: Exchange['up']): Promise<void> => {
        for (let k = 0; k < n; k++) {
          const msg = makeMessage(dir.sent, dir.sizes[dir.sent]);
          await side.send(msg);
          dir.tx.add(msg);
          dir.sent++;
        }
      };
      const readAll = async (side: Side, dir: Exchange['up'], what: string): Promise<void> => {
        for (let k = 0; k < n; k++) {
          const msg = await side.next();
          checkMessage(msg, dir.received, dir.sizes[dir.received], what);
          dir.rx.add(msg);
          dir.received++;
        }
      };
      await Promise.all([sendAll(app, this.up), sendAll(node, this.down), readAll(node, this.up, 'app->node'), readAll(app, this.down, 'node->app')]);
    }

    assertComplete(): void {
      for (const [name, dir] of [
        ['app->node', this.up],
        ['node->app', this.down],
      ] as const) {
        assert.equal(dir.received, dir.sent, `${name}: messages`);
        assert.equal(dir.rx.bytes, dir.tx.bytes, `${name}: bytes`);
        assert.equal(dir.rx.digest(), dir.tx.digest(), `${name}: SHA-256 of the stream`);
      }
    }
  }

  function v2Side(party: () => V2Party): Side {
    return { send: (msg) => party().send(msg), next: () => party().nextData() };
  }

  describe('cross-generation sessions', () => {
    let server: LegacyTarget;
    const parties = new Set<V2Party>();
    const v1Clients = new Set<V1Client>();
    const sockets = new Set<WsConn>();

    before(async () => {
      server = await start();
    });
    after(async () => {
      await server?.stop();
    });
    afterEach(async () => {
      await closeParties(parties);
      parties.clear();
      for (const c of v1Clients) c.close();
      v1Clients.clear();
      await Promise.all([...sockets].map((s) => s.close()));
      sockets.clear();
    });

    function v1Client(): V1Client {
      const c = connect(server.address);
      v1Clients.add(c);
      return c;
    }

    test('v1 gRPC node (litd) + v2 WebSocket app, both directions, each party reconnecting once', { timeout: TEST_TIMEOUT_MS }, async () => {
      const s2c = randomSid();
      const c2s = peerSid(s2c);
      const ex = new Exchange();

      // The node, as litd: box C2S right before its first receive, then RecvStream C2S.
      let nodeClient = v1Client();
      await nodeClient.ensureBox(c2s);
      let nodeReader: Reader = nodeClient.openReader(c2s);
      let nodeWriter: Writer | null = null;

      // The app reads S2C and writes C2S; the node's RecvStream on C2S is its peer.
      const connectApp = async (attach: Attach): Promise<V2Party> => {
        const p = await server.v2Dial('ws', s2c);
        parties.add(p);
        const welcome = await p.hello({ sid: s2c, attach });
        assert.equal(welcome.version, 2);
        if (attach === Attach.Existing) assert.equal(welcome.peerPresent, true, "the node's RecvStream stayed attached");
        // The RecvStream may reach the relay after our Hello: then presence follows.
        if (!welcome.peerPresent) await p.expectPresence(true);
        return p;
      };
      let app = await connectApp(Attach.Create);

      // The app speaks first; litd creates S2C only on its first send, after that.
      const first = makeMessage(ex.up.sent, ex.up.sizes[ex.up.sent]);
      await app.send(first);
      ex.up.tx.add(first);
      ex.up.sent++;
      const got = await nodeReader.next();
      checkMessage(got, 0, ex.up.sizes[0], 'first app->node');
      ex.up.rx.add(got);
      ex.up.received++;
      await nodeClient.ensureBox(s2c);
      nodeWriter = nodeClient.openWriter(s2c);

      const appSide = v2Side(() => app);
      const nodeSide: Side = {
        send: (msg) => nodeWriter!.write(msg),
        next: () => nodeReader.next(),
      };

      for (let r = 1; r <= ROUNDS; r++) {
        await ex.round(appSide, nodeSide, BATCH_MESSAGES - (r === 1 ? 1 : 0));
        if (r === FIRST_DROP_AFTER_ROUND) {
          // The v2 app drops and resumes the session it knows.
          app.abort();
          await app.ended;
          app = await connectApp(Attach.Existing);
        }
        if (r === SECOND_DROP_AFTER_ROUND) {
          // The node drops both halves; the app sees its peer's RecvStream leave and come back.
          nodeClient.close();
          await app.expectPresence(false);
          nodeClient = v1Client();
          await nodeClient.ensureBox(c2s);
          nodeReader = nodeClient.openReader(c2s);
          await app.expectPresence(true);
          await nodeClient.ensureBox(s2c);
          nodeWriter = nodeClient.openWriter(s2c);
        }
      }
      await ex.round(appSide, nodeSide, 1);
      ex.assertComplete();
      assert.deepEqual(app.presenceSeen, [], 'no presence change while both stayed');
    });

    test('v2 gRPC node + v1 WebSocket app, both directions, each party reconnecting once', { timeout: TEST_TIMEOUT_MS }, async () => {
      const s2c = randomSid();
      const c2s = peerSid(s2c);
      const ex = new Exchange();

      const connectNode = async (attach: Attach): Promise<{ party: V2Party; peerPresent: boolean }> => {
        const p = await server.v2Dial('grpc', c2s);
        parties.add(p);
        const welcome = await p.hello({ sid: c2s, attach });
        assert.equal(welcome.version, 2);
        return { party: p, peerPresent: welcome.peerPresent };
      };
      const firstNode = await connectNode(Attach.Create);
      let node = firstNode.party;
      assert.equal(firstNode.peerPresent, false, 'the app is not there yet');

      // The app never creates boxes: the v2 node's attach made both.
      const connectApp = async (): Promise<{ recv: WsConn; send: WsConn }> => {
        const recv = await openReceive(server.port, s2c);
        sockets.add(recv);
        const send = await openSendSocket(server.port);
        sockets.add(send);
        return { recv, send };
      };
      let app = await connectApp();
      await node.expectPresence(true);

      const appSide: Side = {
        send: (msg) => sendMessage(app.send, c2s, msg),
        next: () => readMessage(app.recv, s2c),
      };
      const nodeSide = v2Side(() => node);

      for (let r = 1; r <= ROUNDS; r++) {
        await ex.round(appSide, nodeSide, BATCH_MESSAGES);
        if (r === FIRST_DROP_AFTER_ROUND) {
          // The v1 app loses both sockets and redials them.
          await Promise.all([app.recv.close(), app.send.close()]);
          await node.expectPresence(false);
          app = await connectApp();
          await node.expectPresence(true);
        }
        if (r === SECOND_DROP_AFTER_ROUND) {
          // The v2 node drops and resumes; the app's receive socket is still there.
          await node.close();
          const again = await connectNode(Attach.Existing);
          node = again.party;
          assert.equal(again.peerPresent, true, "the v1 app's receive half is attached");
        }
      }
      await ex.round(appSide, nodeSide, 1);
      ex.assertComplete();
      assert.deepEqual(node.presenceSeen, [], 'no presence change during the rounds');
    });

    test('presence seen by a v2 party as a v1 RecvStream attaches and leaves', async () => {
      const sid = randomSid();
      const p = await server.v2Dial('grpc', sid);
      parties.add(p);
      assert.deepEqual(await p.hello({ sid }), { version: 2, peerPresent: false, maxMessageBytes: 64 * 1024 });
      const client = v1Client();
      const reader = client.openReader(peerSid(sid));
      await p.expectPresence(true);
      reader.cancel();
      await p.expectPresence(false);
      const again = client.openReader(peerSid(sid));
      await p.expectPresence(true);
      await p.send(Buffer.from('to v1'));
      assert.equal((await again.next()).toString(), 'to v1');
    });

    test('a v1 RecvStream on the SID: v2 attach fails "read stream occupied"', async () => {
      const sid = randomSid();
      const client = v1Client();
      await client.ensureBox(sid);
      const reader = client.openReader(sid);
      // The RecvStream holds the slot once the relay has seen it; a v2 party on the
      // peer SID is told so by presence, which is the event to wait for.
      const peer = await server.v2Dial('ws', peerSid(sid));
      parties.add(peer);
      const welcome = await peer.hello({ sid: peerSid(sid) });
      if (!welcome.peerPresent) await peer.expectPresence(true);

      const p = await server.v2Dial('grpc', sid);
      parties.add(p);
      await p.sendHello({ sid });
      await p.expectError(RESOURCE_EXHAUSTED, /read stream occupied/);
      reader.cancel();
    });

    test('a v1 SendStream to sid ^ 1: v2 attach on sid fails "write stream occupied"', async () => {
      const sid = randomSid();
      const client = v1Client();
      // A v2 party on the peer SID makes the session and reads what the v1 writer sends,
      // so the first message proves the SendStream holds the write slot.
      const reader = await server.v2Dial('ws', peerSid(sid));
      parties.add(reader);
      await reader.hello({ sid: peerSid(sid) });
      const writer = client.openWriter(peerSid(sid));
      await writer.write(Buffer.from('v1 holds the write slot'));
      assert.equal((await reader.nextData()).toString(), 'v1 holds the write slot');

      const p = await server.v2Dial('grpc', sid);
      parties.add(p);
      await p.sendHello({ sid });
      await p.expectError(RESOURCE_EXHAUSTED, /write stream occupied/);
      writer.cancel();
    });
  });
}
