/**
 * v2 WebSockets a gateway passes through (`/v2/mailbox?route=`) count at the
 * relay as their clients' connections, not the gateway's: the gateway sends
 * the hop token with each, and the relay counts the tunnel under the client
 * the gateway names (x-forwarded-for). Otherwise every tunnel from one
 * gateway to one relay shared the gateway's one address budget
 * (limits.maxConnectionsPerAddress), and one client filling it refused
 * everyone else's. Hop lanes count against no address. The gateway opens
 * each connection to a relay with its preamble (a PROXY v2 header carrying
 * the hop token and the client), so even tunnels still in flight never count
 * as the gateway's. Clients here dial from their own 127.0.0.x addresses.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import net from 'node:net';
import { after, before, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { encodeHopPreamble } from '../../src/transport/hop/preamble-proof.js';
import { encodeProxyV2Header, PP2_TYPE_HOP_TOKEN } from '../../src/transport/proxy-protocol.js';
import { rawHttpExchange } from '../helpers/raw-http.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { clusterHopToken, openRawLane, type RawLane } from '../helpers/hop.js';
import { startGateway, startRelay, type RunningServer } from '../helpers/server.js';
import { closeParties, dialWsV2, type V2Party } from '../helpers/v2-peers.js';
import { withTimeout } from '../helpers/async-queue.js';

/** The relay's limits.maxConnectionsPerAddress: the gateway alone would hit it after this many tunnels. */
const PER_ADDRESS = 4;
const CLIENTS = PER_ADDRESS + 2;

let etcd: EtcdCluster;
let relay: RunningServer;
let gateway: RunningServer;
const parties: V2Party[] = [];

before(async () => {
  etcd = await startEtcd(1);
  relay = await startRelay({ etcd: etcd.etcdFlag, config: { limits: { maxConnectionsPerAddress: PER_ADDRESS } } });
  gateway = await startGateway({ etcd: etcd.etcdFlag });
});

after(async () => {
  await closeParties(parties);
  await gateway?.stop();
  await relay?.stop();
  await etcd?.stop();
});

/** A v2 party through the gateway from `localAddress`, attached to a new session (Hello answered). */
async function tunnel(localAddress: string): Promise<{ ok: true } | { ok: false; status: number; body: string }> {
  const sid = randomBytes(64);
  const res = await dialWsV2(gateway.port, { path: `/v2/mailbox?route=${routeOfSid(sid)}`, localAddress });
  if (!res.ok) return { ok: false, status: res.status, body: res.body };
  parties.push(res.party);
  await res.party.hello({ sid });
  return { ok: true };
}

test(`more clients than the relay's per-address limit (${PER_ADDRESS}) all pass through one gateway`, async () => {
  for (let i = 0; i < CLIENTS; i++) {
    const res = await tunnel(`127.0.0.${i + 2}`);
    assert.deepEqual(res, { ok: true }, `client ${i + 1} of ${CLIENTS}`);
  }
});

test('one client through the gateway still meets the per-address limit, as its own', async () => {
  const client = '127.0.0.20';
  for (let i = 0; i < PER_ADDRESS; i++) assert.deepEqual(await tunnel(client), { ok: true }, `tunnel ${i + 1}`);
  const over = await tunnel(client);
  assert.equal(over.ok, false, 'a tunnel past the limit was passed through');
  if (over.ok) return;
  assert.equal(over.status, 429);
  assert.match(over.body, /limit reached: limits\.maxConnectionsPerAddress \(4\)/);
  // Other clients are not affected.
  assert.deepEqual(await tunnel('127.0.0.21'), { ok: true });
});

test('authenticated hop lanes count against no address: more lanes than the per-address limit, then a client from the same address still connects', async () => {
  const token = (await clusterHopToken(etcd.endpoints)).value;
  const lanes: RawLane[] = [];
  try {
    for (let i = 0; i < PER_ADDRESS + 2; i++) {
      const lane = await openRawLane(relay.address, token);
      lanes.push(lane);
      assert.equal(lane.refused, null, `lane ${i + 1} refused: ${JSON.stringify(lane.refused)}`);
    }
    // The lanes' address (127.0.0.1) is not over its limit: a v2 WebSocket from it is still taken.
    const direct = await dialWsV2(relay.port, {});
    assert.ok(direct.ok, 'a connection from the lanes\' address was refused');
    parties.push(direct.party);
  } finally {
    for (const lane of lanes) lane.close();
  }
});

/** A TCP connection to the relay from `localAddress`, connected. */
async function connectFrom(localAddress: string): Promise<net.Socket> {
  const socket = net.connect({ host: '127.0.0.1', port: relay.port, localAddress });
  socket.on('error', () => undefined);
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  return socket;
}

const UPGRADE = [
  'GET /v2/mailbox HTTP/1.1',
  'Host: relay',
  'Upgrade: websocket',
  'Connection: Upgrade',
  `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
  'Sec-WebSocket-Version: 13',
  'Sec-WebSocket-Protocol: hashmail.v2',
  '',
  '',
].join('\r\n');

test('the gateway preamble counts a connection as its client from its first byte: with the sending address over its limit (tunnels in flight), a preambled tunnel and a lane are taken; without it, with a wrong token or a preamble sent again, 429', async () => {
  const token = (await clusterHopToken(etcd.endpoints)).value;
  const gatewayAddress = '127.0.0.40';
  // Connections that have sent nothing yet: what a burst of tunnels looks like at the relay before their first bytes.
  const inFlight: net.Socket[] = [];
  try {
    for (let i = 0; i < PER_ADDRESS; i++) inFlight.push(await connectFrom(gatewayAddress));

    const tunnel = await connectFrom(gatewayAddress);
    inFlight.push(tunnel);
    // The preamble and the request in two writes: the relay takes the header whole, then the request.
    tunnel.write(encodeHopPreamble('10.20.30.40', token));
    const answer = await rawHttpExchange(tunnel, UPGRADE);
    assert.match(answer, /^HTTP\/1\.1 101 /, 'a tunnel with the preamble was refused');

    const lane = await connectFrom(gatewayAddress);
    inFlight.push(lane);
    const route = routeOfSid(randomBytes(64));
    lane.write(encodeHopPreamble(null, token));
    const lookup = await rawHttpExchange(lane, `GET /v2/relay?route=${route} HTTP/1.1\r\nHost: relay\r\n\r\n`);
    assert.match(lookup, /^HTTP\/1\.1 404 /, 'a connection with a LOCAL preamble (a lane) was refused');

    const plain = await connectFrom(gatewayAddress);
    inFlight.push(plain);
    assert.match(await rawHttpExchange(plain, UPGRADE), /^HTTP\/1\.1 429 [^]*limits\.maxConnectionsPerAddress/, 'the sending address was not over its limit');

    // A wrong token is believed from nobody: the connection stays the sending address's, over its limit.
    const forged = await connectFrom(gatewayAddress);
    inFlight.push(forged);
    forged.write(encodeHopPreamble('10.20.30.41', 'not-the-token'));
    assert.match(await rawHttpExchange(forged, UPGRADE), /^HTTP\/1\.1 429 [^]*limits\.maxConnectionsPerAddress/, 'a preamble with a wrong token was believed');

    // A preamble read on the wire and sent again (the proof was taken once): believed from nobody.
    const seen = encodeHopPreamble('10.20.30.42', token);
    const original = await connectFrom(gatewayAddress);
    inFlight.push(original);
    original.write(seen);
    assert.match(await rawHttpExchange(original, UPGRADE), /^HTTP\/1\.1 101 /, 'the original preamble was refused');
    const replay = await connectFrom(gatewayAddress);
    inFlight.push(replay);
    replay.write(seen);
    assert.match(await rawHttpExchange(replay, UPGRADE), /^HTTP\/1\.1 429 [^]*limits\.maxConnectionsPerAddress/, 'a replayed preamble was believed');
    assert.equal(await relay.metric('hashmail_hop_preamble_proofs_refused_total{reason="replayed"}'), 1);
    assert.equal(await relay.metric('hashmail_hop_preamble_proofs_refused_total{reason="wrong"}'), 1);

    // A gateway of an earlier release sends the token itself: still believed (relays upgrade first).
    const earlier = await connectFrom(gatewayAddress);
    inFlight.push(earlier);
    earlier.write(encodeProxyV2Header('10.20.30.43', [[PP2_TYPE_HOP_TOKEN, Buffer.from(token)]]));
    assert.match(await rawHttpExchange(earlier, UPGRADE), /^HTTP\/1\.1 101 /, 'a preamble with the token itself was refused');
  } finally {
    for (const socket of inFlight) socket.destroy();
  }
});

test(`a burst of ${3 * PER_ADDRESS} tunnels through the gateway at once, from different clients: every one passes`, async () => {
  const results = await Promise.all(Array.from({ length: 3 * PER_ADDRESS }, (_, i) => tunnel(`127.0.0.${60 + i}`)));
  assert.deepEqual(results, results.map(() => ({ ok: true })));
});

test('a gateway behind an X-Forwarded-For balancer: each tunnel\'s boxes count at the relay under the client the gateway worked out, not the balancer', async () => {
  const MAX_BOXES = 2;
  const boxRelay = await startRelay({ etcd: etcd.etcdFlag, config: { limits: { maxBoxesPerAddress: MAX_BOXES } } });
  // Only this relay takes placements while the test runs: the shared one drains nothing, so place by asking it.
  const xffGateway = await startGateway({ etcd: etcd.etcdFlag, extraArgs: ['--trust-proxy', '--client-address-from', 'x-forwarded-for', '--trusted-proxies', '127.0.0.1'] });
  const mine: V2Party[] = [];
  try {
    for (const client of ['10.9.9.1', '10.9.9.2', '10.9.9.3']) {
      // A session placed on the box-limited relay, then dialed through the gateway as `client` behind the balancer.
      let sid = randomBytes(64);
      for (let i = 0; i < 50; i++) {
        const res = await fetch(`http://${boxRelay.address}/v2/relay?route=${routeOfSid(sid)}&create=1`);
        if (((await res.json()) as { address: string }).address === boxRelay.address) break;
        sid = randomBytes(64);
      }
      const dial = await dialWsV2(xffGateway.port, { path: `/v2/mailbox?route=${routeOfSid(sid)}`, headers: { 'x-forwarded-for': client } });
      assert.ok(dial.ok, dial.ok ? '' : `${client}: ${dial.status} ${dial.body}`);
      mine.push(dial.party);
      await dial.party.hello({ sid });
    }
  } finally {
    await closeParties(mine);
    await xffGateway.stop();
    await boxRelay.stop();
  }
});

test('a trusted PROXY-protocol balancer whose header carries a TLV of the hop token\'s type with its own value still names its clients', async () => {
  const balanced = await startRelay({
    etcd: etcd.etcdFlag,
    extraArgs: ['--trust-proxy', '--trusted-proxies', '127.0.0.1'],
    config: { limits: { maxConnectionsPerAddress: 1 } },
  });
  const sockets: net.Socket[] = [];
  try {
    for (const client of ['10.7.0.1', '10.7.0.2', '10.7.0.3']) {
      const header = encodeProxyV2Header(client, [[PP2_TYPE_HOP_TOKEN, Buffer.from('the-balancers-own-connection-id')]]);
      const socket = net.connect({ host: '127.0.0.1', port: balanced.port });
      socket.on('error', () => undefined);
      sockets.push(socket);
      await new Promise<void>((resolve, reject) => socket.once('connect', resolve).once('error', reject));
      socket.write(header);
      const answer = await rawHttpExchange(socket, `GET /v2/relay?route=${routeOfSid(randomBytes(64))} HTTP/1.1\r\nHost: relay\r\n\r\n`);
      assert.match(answer, /^HTTP\/1\.1 404 /, `${client}: counted as the balancer (${answer.slice(0, 60)})`);
    }
  } finally {
    for (const s of sockets) s.destroy();
    await balanced.stop();
  }
});

test('SIGTERM on a gateway ends its passed-through v2 WebSockets at once, as its legacy streams, and it exits without waiting out server.shutdownGraceMs', async () => {
  // A grace far beyond the waits below: only ending the tunnels at stop lets the party's end and the exit come in time.
  const stopping = await startGateway({ etcd: etcd.etcdFlag, config: { server: { shutdownGraceMs: 120_000 } } });
  try {
    const sid = randomBytes(64);
    const res = await dialWsV2(stopping.port, { path: `/v2/mailbox?route=${routeOfSid(sid)}` });
    assert.ok(res.ok, 'passed through');
    parties.push(res.party);
    await res.party.hello({ sid });
    stopping.process.kill('SIGTERM');
    await res.party.waitEnd(20_000);
    assert.equal(await withTimeout(stopping.exited, 20_000, 'the gateway\'s exit'), 0);
  } finally {
    await stopping.stop();
  }
});
