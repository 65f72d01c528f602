/**
 * End to end through `hashmail gateway` processes: real etcd, two relays and
 * two gateways as separate processes (exact CLI flags). A legacy node over
 * gRPC through gateway 1 and a legacy app over WebSocket through gateway 2
 * exchange messages both ways intact, every call carried over the hop to the
 * relay that owns the session.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { connect, peerSid, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import { openReceive, openSendSocket, readMessage, restCreateBox, sendMessage } from '../helpers/ws-v1.js';

const MESSAGES = 100;

describe('legacy clients through two gateway processes, two relays', () => {
  let cluster: Cluster;
  let node: V1Client;

  before(async () => {
    cluster = await startCluster({ relays: 2, gateways: 2, ttlMs: 3000 });
    node = connect(cluster.gateways[0].address);
  });
  after(async () => {
    node?.close();
    await cluster?.stop();
  });

  test(`a node over gRPC (gateway 1) and an app over WebSocket (gateway 2) exchange ${MESSAGES} messages each way intact`, async () => {
    const nodeSid = randomSid();
    const appSid = peerSid(nodeSid);
    const appGateway = cluster.gateways[1];
    await node.createBox(nodeSid);
    assert.equal((await restCreateBox(appGateway.port, appSid)).status, 200);
    const nodeReader = node.openReader(nodeSid);
    const nodeWriter = node.openWriter(appSid);
    const appReceive = await openReceive(appGateway.port, appSid);
    const appSend = await openSendSocket(appGateway.port);
    try {
      const toApp = Array.from({ length: MESSAGES }, (_, i) => Buffer.from(`node -> app ${i} ${'x'.repeat(i * 13)}`));
      const toNode = Array.from({ length: MESSAGES }, (_, i) => Buffer.from(`app -> node ${i} ${'y'.repeat(i * 17)}`));
      const appGot = (async () => {
        const out: Buffer[] = [];
        for (let i = 0; i < MESSAGES; i++) out.push(await readMessage(appReceive, appSid));
        return out;
      })();
      const nodeGot = (async () => {
        const out: Buffer[] = [];
        for (let i = 0; i < MESSAGES; i++) out.push(await nodeReader.next());
        return out;
      })();
      await Promise.all([
        nodeWriter.writeAll(toApp),
        (async () => {
          for (const msg of toNode) await sendMessage(appSend, nodeSid, msg);
        })(),
      ]);
      assert.deepEqual(await appGot, toApp);
      assert.deepEqual(await nodeGot, toNode);
      await nodeWriter.end();
      // The gateways count the halves they carry as serve counts its own; the owner counts them as hop halves.
      assert.equal(await cluster.gateways[0].metric('hashmail_attached_halves{transport="grpc",kind="read"}'), 1);
      assert.equal(await cluster.gateways[1].metric('hashmail_attached_halves{transport="websocket",kind="read"}'), 1);
      const counts = await Promise.all(cluster.relays.map((r) => r.metric('hashmail_attached_halves{transport="hop",kind="read"}')));
      assert.equal(counts.reduce((a, b) => (a ?? 0) + (b ?? 0), 0), 2);
    } finally {
      nodeReader.cancel();
      await appReceive.close();
      await appSend.close();
    }
  });
});
