/**
 * The legacy transports over the hop, end to end, before the gateway
 * process exists: two in-process legacy fronts (the gRPC HashMail handlers
 * on one, the REST/WebSocket gateway on the other), each on its own
 * RemoteLegacyMailbox, carry every call to two real relays on a real etcd.
 * A legacy node over gRPC through front 1 and a legacy app over WebSocket
 * through front 2 exchange messages both ways intact; the legacy client sees
 * the exact gRPC statuses and JSON error frames `serve` gives.
 */
import assert from 'node:assert/strict';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { pino } from 'pino';
import { configSchema } from '../../src/config/schema.js';
import { RelayStats } from '../../src/observe/stats.js';
import { hashMailServerService, legacyGrpcHandlers } from '../../src/transport/grpc-v1/handlers.js';
import { StreamsPerConnection } from '../../src/transport/grpc-stream-limit.js';
import { HttpGateway } from '../../src/transport/rest-ws-v1/http-gateway.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { connect, expectStatusError, peerSid, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import { testGateway, type TestGateway } from '../helpers/hop.js';
import { startRelay, type RunningServer } from '../helpers/server.js';
import { openReceive, openSendSocket, readErrorAndEnd, readMessage, restCreateBox, sendMessage } from '../helpers/ws-v1.js';

const MESSAGES = 100;
const RELAY_CONFIG = { directory: { leaseTtlMs: 3000, callTimeoutMs: 1000, loadPublishIntervalMs: 200 } };
const NO_METRICS = { grpcCall: () => ({ received() {}, sent() {}, done() {} }) };

describe('legacy transports over the hop: gRPC front and WebSocket front, two relays', () => {
  let etcd: EtcdCluster;
  const relays: RunningServer[] = [];
  let grpcSide: TestGateway;
  let wsSide: TestGateway;
  let grpcServer: grpc.Server;
  let grpcAddress: string;
  let httpServer: http.Server;
  let httpGateway: HttpGateway;
  let httpPort: number;
  let node: V1Client;

  before(async () => {
    etcd = await startEtcd(1);
    for (let i = 0; i < 2; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-${i}`, config: RELAY_CONFIG }));
    const logger = pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' });
    const config = configSchema.parse({});
    grpcSide = await testGateway(etcd.endpoints);
    wsSide = await testGateway(etcd.endpoints);
    grpcServer = new grpc.Server();
    grpcServer.addService(
      hashMailServerService,
      legacyGrpcHandlers({ mailbox: grpcSide.mailbox, logger, stats: new RelayStats(), metrics: NO_METRICS, streams: new StreamsPerConnection(1000, () => undefined), clientAddress: () => '10.7.0.1' }),
    );
    const port = await new Promise<number>((resolve, reject) => grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
    grpcAddress = `127.0.0.1:${port}`;
    httpGateway = new HttpGateway({ mailbox: wsSide.mailbox, config, logger, stats: new RelayStats(), metrics: NO_METRICS, clientAddress: () => '10.7.0.2' });
    httpServer = http.createServer((req, res) => httpGateway.handleRequest(req, res));
    httpServer.on('upgrade', (req, socket, head: Buffer) => httpGateway.handleUpgrade(req, socket, head));
    await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
    httpPort = (httpServer.address() as AddressInfo).port;
    node = connect(grpcAddress);
  });
  after(async () => {
    node?.close();
    httpGateway?.shutdown();
    httpServer?.closeAllConnections();
    await new Promise<void>((resolve) => (httpServer ? httpServer.close(() => resolve()) : resolve()));
    grpcServer?.forceShutdown();
    await grpcSide?.close();
    await wsSide?.close();
    for (const relay of relays) await relay.stop();
    await etcd?.stop();
  });

  test(`a node over gRPC (front 1) and an app over WebSocket (front 2) exchange ${MESSAGES} messages each way intact`, async () => {
    const nodeSid = randomSid();
    const appSid = peerSid(nodeSid);
    await node.createBox(nodeSid);
    assert.equal((await restCreateBox(httpPort, appSid)).status, 200);
    const nodeReader = node.openReader(nodeSid);
    const nodeWriter = node.openWriter(appSid);
    const appReceive = await openReceive(httpPort, appSid);
    const appSend = await openSendSocket(httpPort);
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
      await Promise.all([nodeWriter.writeAll(toApp), (async () => {
        for (const msg of toNode) await sendMessage(appSend, nodeSid, msg);
      })()]);
      assert.deepEqual(await appGot, toApp);
      assert.deepEqual(await nodeGot, toNode);
      // SendStream is answered OK once the relay took every message.
      await nodeWriter.end();
    } finally {
      nodeReader.cancel();
      await appReceive.close();
      await appSend.close();
    }
  });

  test('legacy clients see the exact statuses and error frames across the hop', async () => {
    const sid = randomSid();
    await node.createBox(sid);
    await expectStatusError(node.newCipherBox({ desc: { streamId: sid }, hasAuth: true }), { code: grpc.status.ALREADY_EXISTS, details: 'stream already active' });
    const missing = node.openReader(peerSid(sid));
    const status = await missing.ended();
    assert.equal(status.code, grpc.status.NOT_FOUND);
    assert.equal(status.details, 'stream not found');
    const first = node.openReader(sid);
    const second = node.openReader(sid);
    const occupied = await second.ended();
    assert.deepEqual([occupied.code, occupied.details], [grpc.status.RESOURCE_EXHAUSTED, 'read stream occupied']);
    // The app's receive socket for a box that does not exist: the JSON error frame serve sends.
    const ws = await openReceive(httpPort, peerSid(sid));
    assert.deepEqual(await readErrorAndEnd(ws), { code: grpc.status.NOT_FOUND, message: 'stream not found', details: [] });
    // REST NewCipherBox of an existing box through the other front: the JSON body serve sends.
    const again = await restCreateBox(httpPort, sid);
    assert.equal(again.status, 409);
    assert.deepEqual(JSON.parse(again.body), { code: grpc.status.ALREADY_EXISTS, message: 'stream already active', details: [] });
    // DelCipherBox ends the attached reader with the legacy EOF.
    await node.delBox(sid);
    const ended = await first.ended();
    assert.equal(ended.details, 'EOF');
  });
});
