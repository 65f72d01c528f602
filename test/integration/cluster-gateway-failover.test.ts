/**
 * kill -9 of the relay that owns a legacy session carried by the gateways
 * (real etcd, 3 relays, 2 gateways, lease TTL 3 s). The legacy clients retry
 * as the deployed ones do: the node (litd) re-dials a failed stream after
 * 2 s, NewCipherBox first (ALREADY_EXISTS counts as success); the app
 * re-dials a closed WebSocket after 2 s. Checked:
 * - every gateway ends the halves it carried to the dead relay (the clients
 *   see their streams end: no gateway keeps them);
 * - node and app are back in session, a message each way, within TTL + 3 s
 *   + the 2 s retry of the kill (a generous deadline, not a timing assertion);
 * - afterwards the halves the gateways carry are exactly the halves the live
 *   relays hold over the hop: nothing carried to the dead relay remains.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { routeOfSid } from '../../src/directory/route.js';
import { pollUntil, withTimeout } from '../helpers/async-queue.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { connect, peerSid, randomSid, type Reader, type V1Client, type Writer } from '../helpers/grpc-v1.js';
import { grpcLookup } from '../helpers/lookup.js';
import type { RunningServer } from '../helpers/server.js';
import { OpenSockets, openReceive, openSendSocket, parseResult, sendMessage, type WsConn } from '../helpers/ws-v1.js';

const TTL_MS = 3000;
/** The deployed clients' fixed re-dial delay (no jitter). */
const CLIENT_RETRY_MS = 2000;
/** Back in session within TTL + 3 s + the clients' 2 s retry (issue 9). */
const BACK_WITHIN_MS = TTL_MS + 3000 + CLIENT_RETRY_MS;
/** Bound on any one client's re-dials (each 2 s apart) before the test gives up. */
const MAX_REDIALS = 20;
const HALF_KINDS = ['read', 'write'] as const;

async function metricSum(servers: RunningServer[], transports: string[]): Promise<number> {
  let sum = 0;
  for (const s of servers) {
    for (const transport of transports) {
      for (const kind of HALF_KINDS) sum += (await s.metric(`hashmail_attached_halves{transport="${transport}",kind="${kind}"}`)) ?? 0;
    }
  }
  return sum;
}

describe('kill -9 of the relay owning a legacy session carried by two gateways', () => {
  let cluster: Cluster;
  const clients: V1Client[] = [];
  const sockets = new OpenSockets();

  before(async () => {
    cluster = await startCluster({ relays: 3, gateways: 2, ttlMs: TTL_MS });
  });
  after(async () => {
    for (const c of clients) c.close();
    await sockets.closeAll();
    await cluster?.stop();
  });


  /** The node's halves as litd opens them: box, then stream; on failure 2 s later, again. */
  async function nodeHalves(node: V1Client, c2s: Buffer, s2c: Buffer): Promise<{ reader: Reader; writer: Writer }> {
    for (let attempt = 0; attempt < MAX_REDIALS; attempt++) {
      try {
        await node.ensureBox(c2s);
        const reader = node.openReader(c2s);
        await node.ensureBox(s2c);
        return { reader, writer: node.openWriter(s2c) };
      } catch {
        await sleep(CLIENT_RETRY_MS);
      }
    }
    return assert.fail('node: no box after every re-dial');
  }

  /** The app's receive socket as the deployed client keeps it: re-dialled 2 s after any end, until a message comes. */
  async function appReceiveFirst(gateway: RunningServer, s2c: Buffer): Promise<{ conn: WsConn; first: Buffer }> {
    for (let attempt = 0; attempt < MAX_REDIALS; attempt++) {
      const conn = await sockets.track(openReceive(gateway.port, s2c));
      const frame = await conn.nextFrame(BACK_WITHIN_MS).catch(() => null);
      if (frame?.startsWith('{"result":')) return { conn, first: parseResult(frame, s2c) };
      await conn.close();
      sockets.forget(conn);
      await sleep(CLIENT_RETRY_MS);
    }
    return assert.fail('app: receive never came back');
  }

  test(`node and app are back in session within TTL + 3 s + 2 s (${BACK_WITHIN_MS} ms); no gateway keeps a stream to the dead relay`, { timeout: 60_000 }, async (t) => {
    const [gw1, gw2] = cluster.gateways;
    const s2c = randomSid();
    const c2s = peerSid(s2c);
    const node = connect(gw1.address);
    clients.push(node);

    // In session: node over gRPC at gateway 1; app receive at gateway 2, send at gateway 1.
    let { reader, writer } = await nodeHalves(node, c2s, s2c);
    let appRecv = await sockets.track(openReceive(gw2.port, s2c));
    let appSend = await sockets.track(openSendSocket(gw1.port));
    await writer.write(Buffer.from('before 1'));
    assert.equal(parseResult(await appRecv.nextFrame(), s2c).toString(), 'before 1');
    await sendMessage(appSend, c2s, Buffer.from('before 2'));
    assert.equal((await reader.next()).toString(), 'before 2');
    assert.equal(await metricSum(cluster.gateways, ['grpc', 'websocket']), 4, 'four halves carried');

    const answer = await grpcLookup(gw1.address, routeOfSid(s2c));
    assert.ok(answer.ok, JSON.stringify(answer));
    const owner = cluster.relays.find((r) => r.address === answer.owner.address);
    assert.ok(owner, `owner ${answer.owner.address} is one of the relays`);
    const live = cluster.relays.filter((r) => r !== owner);

    const killedAt = Date.now();
    owner.process.kill('SIGKILL');
    await owner.exited;

    // The gateways end every half they carried there: each client sees its stream end.
    const ends = Promise.all([reader.status, writer.status, appRecv.closed, appSend.closed]);
    const [readerEnd, writerEnd] = await withTimeout(ends, BACK_WITHIN_MS, 'the carried halves ending after the kill');
    assert.notEqual(readerEnd.code, grpc.status.OK);
    assert.notEqual(writerEnd.code, grpc.status.OK);
    t.diagnostic(`carried halves ended ${Date.now() - killedAt} ms after kill -9; node reader: ${readerEnd.code} ${readerEnd.details}`);
    sockets.forget(appRecv);
    sockets.forget(appSend);

    // The clients re-dial as deployed: 2 s after the failure, litd with NewCipherBox again.
    const back = (async () => {
      await sleep(CLIENT_RETRY_MS);
      const receiving = appReceiveFirst(gw2, s2c);
      ({ reader, writer } = await nodeHalves(node, c2s, s2c));
      await writer.write(Buffer.from('after 1'));
      const { conn, first } = await receiving;
      appRecv = conn;
      assert.equal(first.toString(), 'after 1');
      appSend = await sockets.track(openSendSocket(gw1.port));
      await sendMessage(appSend, c2s, Buffer.from('after 2'));
      assert.equal((await reader.next()).toString(), 'after 2');
    })();
    await withTimeout(back, BACK_WITHIN_MS + 5000, 'back in session');
    const took = Date.now() - killedAt;
    t.diagnostic(`back in session ${took} ms after kill -9 (bound ${BACK_WITHIN_MS} ms)`);
    assert.ok(took <= BACK_WITHIN_MS, `back in session after ${took} ms, bound TTL + 3 s + 2 s = ${BACK_WITHIN_MS} ms`);

    // Every half a gateway carries is held by a live relay: none went to the dead one.
    await pollUntil(async () => (await metricSum(cluster.gateways, ['grpc', 'websocket'])) === 4, 'four halves carried again');
    assert.equal(await metricSum(live, ['hop']), 4, 'the live relays hold the four halves the gateways carry');
    reader.cancel();
    await writer.end();
  });
});
