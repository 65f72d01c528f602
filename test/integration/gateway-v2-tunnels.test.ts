/**
 * v2 WebSockets a gateway passes through (`/v2/mailbox?route=`) count at the
 * relay as their clients' connections, not the gateway's: the gateway sends
 * the hop token with each, and the relay counts the tunnel under the client
 * the gateway names (x-forwarded-for). Otherwise every tunnel from one
 * gateway to one relay shared the gateway's one address budget
 * (limits.maxConnectionsPerAddress), and one client filling it refused
 * everyone else's. Hop lanes count against no address. Clients here dial
 * from their own 127.0.0.x addresses.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { clusterHopToken, openRawLane, type RawLane } from '../helpers/hop.js';
import { startGateway, startRelay, type RunningServer } from '../helpers/server.js';
import { closeParties, dialWsV2, type V2Party } from '../helpers/v2-peers.js';

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
