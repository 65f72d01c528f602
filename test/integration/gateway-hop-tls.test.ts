/**
 * The hop over TLS: a relay serving its public port with its generated
 * certificate (no --insecure) and the gateway's end trusting that
 * certificate (hop.caFile). Box calls and lanes both go through TLS; a
 * gateway that does not trust the certificate gets UNAVAILABLE, not a
 * plain-text fallback. A v2 WebSocket passed through goes over TLS too,
 * after the gateway's preamble. Real etcd, a real relay, the gateway end in
 * process.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { pino } from 'pino';
import { V2WebSocketProxy } from '../../src/gateway/v2-websocket-proxy.js';
import { RelayStats } from '../../src/observe/stats.js';
import { RelayTrust } from '../../src/gateway/relay-trust.js';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { HashmailError } from '../../src/session/errors.js';
import { parseProxyHeader } from '../../src/transport/proxy-protocol.js';
import { pollUntil } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { boxAuth, peerSid, randomSid } from '../helpers/grpc-v1.js';
import { callFrom, clusterHopToken, readOne, testGateway, type TestGateway } from '../helpers/hop.js';
import { dialWsV2 } from '../helpers/v2-peers.js';
import { startRelay, type RunningServer } from '../helpers/server.js';

describe('the gateway hop over TLS', () => {
  let etcd: EtcdCluster;
  let relay: RunningServer;
  let gw: TestGateway | null = null;

  before(async () => {
    etcd = await startEtcd(1);
    relay = await startRelay({ etcd: etcd.etcdFlag, id: 'tls-relay', insecure: false });
  });
  after(async () => {
    await gw?.close();
    await relay?.stop();
    await etcd?.stop();
  });

  test('box calls and both halves of a session travel over TLS to a relay whose certificate the gateway trusts', async () => {
    gw = await testGateway(etcd.endpoints, { tls: new RelayTrust(readFileSync(join(relay.dataDir, 'tls.cert')), null) });
    const call = callFrom('10.4.0.1');
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    const reader = await gw.mailbox.openReceive(sid, call);
    const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    for (const text of ['over', 'tls']) {
      await writer.write(Buffer.from(text));
      assert.equal((await readOne(reader)).toString(), text);
    }
    reader.release();
    writer.release();
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
  });

  test('a gateway that does not trust the certificate (the system CAs, nothing pinned) is refused on the lane with UNAVAILABLE', async () => {
    const untrusting = await testGateway(etcd.endpoints, { tls: new RelayTrust(null, null) });
    try {
      const call = callFrom('10.4.0.2');
      const sid = randomSid();
      // Placed through the trusting gateway: the untrusting one only carries a half there.
      assert.ok(gw);
      await gw.mailbox.newCipherBox(boxAuth(peerSid(sid)), call);
      await pollUntil(async () => (await untrusting.directory.lookup(routeOfSid(sid), { place: false })) !== null, 'the untrusting gateway sees the session');
      await assert.rejects(untrusting.mailbox.openReceive(peerSid(sid), call), (err: unknown) => {
        assert.ok(err instanceof HashmailError, String(err));
        assert.equal(err.code, 'RELAY_UNREACHABLE');
        assert.match(err.message, /^gateway: relay unreachable \(.*certificate/);
        return true;
      });
      await gw.mailbox.delCipherBox(boxAuth(peerSid(sid)), call);
    } finally {
      await untrusting.close();
    }
  });

  /** A v2 pass-through front (a gateway's, in process) whose lookups all name `relayAddress`, over TLS to this suite's relay. */
  async function passThroughFront(relayAddress: string): Promise<{ port: number; proxy: V2WebSocketProxy; close(): Promise<void> }> {
    const proxy = new V2WebSocketProxy({
      lookup: async () => ({ id: 'tls-relay', address: relayAddress, startedAt: 1 }),
      logger: pino({ level: 'silent' }),
      stats: new RelayStats(),
      insecure: false,
      trust: new RelayTrust(readFileSync(join(relay.dataDir, 'tls.cert')), null),
      hopToken: (await clusterHopToken(etcd.endpoints)).value,
    });
    const front = http.createServer();
    front.on('upgrade', (req, socket, head) => {
      if (!proxy.handleUpgrade(req, socket, head)) socket.destroy();
    });
    await new Promise<void>((resolve) => front.listen(0, '127.0.0.1', resolve));
    return {
      port: (front.address() as AddressInfo).port,
      proxy,
      async close() {
        proxy.close();
        front.closeAllConnections();
        await new Promise<void>((resolve) => front.close(() => resolve()));
      },
    };
  }

  test('a v2 WebSocket passed through to the relay: the preamble, then TLS to a certificate the gateway trusts', async () => {
    const front = await passThroughFront(relay.address);
    try {
      const sid = randomBytes(64);
      const res = await dialWsV2(front.port, { path: `/v2/mailbox?route=${routeOfSid(sid)}` });
      assert.ok(res.ok, res.ok ? '' : `refused: ${res.status} ${res.body}`);
      try {
        const welcome = await res.party.hello({ sid });
        assert.ok(welcome, 'no Welcome through the TLS tunnel');
        assert.equal(front.proxy.openTunnels, 1);
      } finally {
        await res.party.close();
      }
    } finally {
      await front.close();
    }
  });

  test('nothing a gateway sends to a relay over TLS holds the hop token: its preamble carries a proof, the rest is encrypted', async () => {
    const token = (await clusterHopToken(etcd.endpoints)).value;
    // A forwarder between gateway and relay records every byte the gateway sends, as anyone on that network could.
    const sent: Buffer[] = [];
    const open = new Set<net.Socket>();
    const forwarder = net.createServer((inbound) => {
      const outbound = net.connect(relay.port, '127.0.0.1');
      open.add(inbound).add(outbound);
      inbound.on('data', (d: Buffer) => sent.push(d));
      inbound.pipe(outbound).pipe(inbound);
      inbound.on('error', () => outbound.destroy());
      outbound.on('error', () => inbound.destroy());
    });
    await new Promise<void>((resolve) => forwarder.listen(0, '127.0.0.1', resolve));
    const front = await passThroughFront(`127.0.0.1:${(forwarder.address() as AddressInfo).port}`);
    try {
      const sid = randomBytes(64);
      const res = await dialWsV2(front.port, { path: `/v2/mailbox?route=${routeOfSid(sid)}` });
      assert.ok(res.ok, res.ok ? '' : `refused: ${res.status} ${res.body}`);
      try {
        assert.ok(await res.party.hello({ sid }), 'no Welcome through the recorded tunnel');
      } finally {
        await res.party.close();
      }
      const wire = Buffer.concat(sent);
      const preamble = parseProxyHeader(wire);
      assert.ok(preamble.kind === 'header' && preamble.hopProof !== null && preamble.hopToken === null, 'the tunnel opened with a preamble carrying a proof');
      assert.equal(wire.includes(Buffer.from(token)), false, 'the hop token crossed the wire');
    } finally {
      await front.close();
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => forwarder.close(() => resolve()));
    }
  });

  test('with no hop.caFile the gateway pins the self-signed certificate the relay registered in the directory', async () => {
    const pinning = await testGateway(etcd.endpoints, (directory) => ({ tls: new RelayTrust(null, directory) }));
    try {
      await pollUntil(async () => pinning.directory.instances().some((i) => i.id === 'tls-relay' && i.tlsCertificate !== undefined), 'the relay\'s certificate in the directory');
      const call = callFrom('10.4.0.3');
      const sid = randomSid();
      await pinning.mailbox.newCipherBox(boxAuth(sid), call);
      const reader = await pinning.mailbox.openReceive(sid, call);
      const writer = await pinning.mailbox.openSend({ streamId: sid }, call);
      await writer.write(Buffer.from('pinned'));
      assert.equal((await readOne(reader)).toString(), 'pinned');
      reader.release();
      writer.release();
      await pinning.mailbox.delCipherBox(boxAuth(sid), call);
    } finally {
      await pinning.close();
    }
  });
});
