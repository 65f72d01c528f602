/**
 * `hashmail gateway` as a process of a real cluster (etcd, 2 relays, 2
 * gateways, each started with its exact CLI flags): health, listed by
 * `hashmail status` with role gateway, never placed on; v2 through it: a
 * WebSocket client passed through to the owning relay (`?route=`), a gRPC
 * client redirected to it; the pass-through refuses a bad route with 400.
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { connect, type MailboxConnection, type TransportName } from '../../src/client/index.js';
import { forgetLookupSupport } from '../../src/client/relay-finder.js';
import { flipSid } from '../../src/client/bytes.js';
import { routeOfSid } from '../../src/directory/route.js';
import { pollUntil, withTimeout } from '../helpers/async-queue.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { grpcLookup, httpLookup, lookupClient } from '../helpers/lookup.js';
import { BIN, type RunningServer } from '../helpers/server.js';
import { closeParties, dialWsV2, grpcParty, HelloRefused, type V2Party } from '../helpers/v2-peers.js';

const run = promisify(execFile);
const STEP_TIMEOUT_MS = 10_000;
const UNAVAILABLE = 14;
const INVALID_ARGUMENT = 3;
/** Placements through a gateway in the "never placed on" test. */
const PLACEMENTS = 1000;
const PLACEMENT_BATCH = 50;
const MESSAGES_EACH_WAY = 20;

let open: MailboxConnection[] = [];
let parties: V2Party[] = [];
afterEach(async () => {
  await Promise.all(open.map((c) => c.close()));
  await closeParties(parties);
  open = [];
  parties = [];
  forgetLookupSupport();
});

function bounded<T>(promise: Promise<T>, what: string): Promise<T> {
  return withTimeout(promise, STEP_TIMEOUT_MS, what);
}

/** A client library party (v2) given `server`. */
async function party(server: string, transport: TransportName, sid: Uint8Array): Promise<MailboxConnection> {
  const conn = await bounded(connect({ server, insecure: true, protocol: 'v2', transport, sid }), `connect over ${transport} via ${server}`);
  open.push(conn);
  return conn;
}

async function nextText(it: AsyncIterator<Uint8Array>): Promise<string> {
  const r = await bounded(it.next(), 'a message');
  assert.ok(!r.done, 'iterator ended');
  return Buffer.from(r.value).toString();
}

async function exchange(a: MailboxConnection, b: MailboxConnection, count: number): Promise<void> {
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  for (let i = 0; i < count; i++) {
    await bounded(a.send(Buffer.from(`a->b ${i}`)), 'send a');
    await bounded(b.send(Buffer.from(`b->a ${i}`)), 'send b');
  }
  for (let i = 0; i < count; i++) {
    assert.equal(await nextText(ib), `a->b ${i}`);
    assert.equal(await nextText(ia), `b->a ${i}`);
  }
}

describe('hashmail gateway in a cluster (etcd, 2 relays, 2 gateways)', () => {
  let cluster: Cluster;
  let gateway: RunningServer;

  before(async () => {
    cluster = await startCluster({ relays: 2, gateways: 2, ttlMs: 3000 });
    gateway = cluster.gateways[0];
  });
  after(() => cluster?.stop());

  test('starts with the exact flags; /healthz and /readyz 200; its log names it', async () => {
    for (const g of cluster.gateways) {
      assert.equal((await g.admin('/healthz')).status, 200);
      assert.equal((await g.admin('/readyz')).status, 200);
    }
    const serving = gateway.logs.find((l) => l.msg === 'serving');
    assert.equal(serving?.id, 'gateway-0');
    assert.deepEqual(serving?.advertise, [gateway.address]);
  });

  test('hashmail status lists the gateways with role gateway and the relays with role relay', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'status', '--etcd', cluster.etcd.etcdFlag, '--json']);
    const status = JSON.parse(stdout) as { instances: { id: string; role: string; address: string; mappedSessions: number; leaseRemainingSeconds: number | null }[] };
    assert.deepEqual(
      status.instances.map((i) => ({ id: i.id, role: i.role, address: i.address })),
      [
        { id: 'gateway-0', role: 'gateway', address: cluster.gateways[0].address },
        { id: 'gateway-1', role: 'gateway', address: cluster.gateways[1].address },
        { id: 'relay-0', role: 'relay', address: cluster.relays[0].address },
        { id: 'relay-1', role: 'relay', address: cluster.relays[1].address },
      ],
    );
    assert.ok(status.instances.every((i) => i.leaseRemainingSeconds !== null && i.leaseRemainingSeconds > 0));
    const table = await run(process.execPath, [BIN, 'status', '--etcd', cluster.etcd.etcdFlag]);
    assert.match(table.stdout, /gateway-1\s+gateway\s+127\.0\.0\.1:\d+/);
    assert.match(table.stdout, /relay-0\s+relay\s+127\.0\.0\.1:\d+/);
  });

  test(`never placed on: ${PLACEMENTS} placements through a gateway all land on relays`, async (t) => {
    const client = lookupClient(gateway.address);
    t.after(() => client.close());
    // In batches: one process's placements in flight are capped (directory.maxTxnsInFlight), the rest would time out.
    const owners: { id: string; address: string }[] = [];
    for (let batch = 0; batch < PLACEMENTS / PLACEMENT_BATCH; batch++) {
      const answers = await Promise.all(Array.from({ length: PLACEMENT_BATCH }, () => client.lookup(routeOfSid(randomBytes(64)), true)));
      for (const answer of answers) {
        assert.ok(answer.ok, `lookup failed: ${JSON.stringify(answer)}`);
        owners.push(answer.owner);
      }
    }
    assert.equal(owners.length, PLACEMENTS);
    const relayAddresses = new Map(cluster.relays.map((r, i) => [r.address, `relay-${i}`]));
    for (const owner of owners) assert.equal(relayAddresses.get(owner.address), owner.id, `placed on ${owner.id} ${owner.address}`);
    const perRelay = cluster.relays.map((r) => owners.filter((o) => o.address === r.address).length);
    t.diagnostic(`placements per relay: ${perRelay.join(', ')}`);
    assert.ok(perRelay.every((n) => n > 0), 'both relays took sessions');
  });

  test('GET /v2/relay at a gateway names the owning relay\'s id and the gateway\'s own address (WebSocket clients come through it)', async () => {
    const route = routeOfSid(randomBytes(64));
    assert.equal((await httpLookup(gateway.port, `route=${route}`)).status, 404);
    const placed = await httpLookup(gateway.port, `route=${route}&create=1`);
    assert.equal(placed.status, 200, placed.body);
    const body = JSON.parse(placed.body) as { id: string; address: string };
    assert.match(body.id, /^relay-[01]$/);
    assert.equal(body.address, gateway.address);
    const grpcAnswer = await grpcLookup(gateway.address, route);
    assert.ok(grpcAnswer.ok);
    assert.equal(grpcAnswer.owner.id, body.id);
    assert.equal(grpcAnswer.owner.address, cluster.relays[Number(body.id.slice(-1))].address);
  });

  test('a v2 WebSocket client (server = gateway) is passed through to the relay and exchanges messages with a v2 party dialled at the relay', async () => {
    const sid = new Uint8Array(randomBytes(64));
    const app = await party(gateway.address, 'websocket', sid);
    assert.equal(app.relay, gateway.address, 'the WebSocket client attached through the gateway');
    // Which relay owns it: the gRPC lookup names the relay itself; the peer dials it directly.
    const lookup = await grpcLookup(cluster.relays[0].address, routeOfSid(Buffer.from(sid)));
    assert.ok(lookup.ok);
    const node = await party(lookup.owner.address, 'grpc', flipSid(sid));
    assert.equal(node.relay, lookup.owner.address);
    const relay = cluster.relays.find((r) => r.address === lookup.owner.address) as RunningServer;
    assert.equal(await relay.metric('hashmail_websocket_connections'), 1, 'the relay holds the passed-through socket');
    await exchange(app, node, MESSAGES_EACH_WAY);
  });

  test('a passed-through WebSocket ends both ways: the client closing closes the relay\'s socket; the relay ending it reaches the client', async () => {
    const sid = randomBytes(64);
    const route = routeOfSid(sid);
    const owner = await grpcLookup(gateway.address, route, true);
    assert.ok(owner.ok);
    const relay = cluster.relays.find((r) => r.address === owner.owner.address) as RunningServer;
    const sockets = async (): Promise<number> => (await relay.metric('hashmail_websocket_connections')) ?? 0;
    const before = await sockets();

    const first = await dialWsV2(gateway.port, { path: `/v2/mailbox?route=${route}` });
    assert.ok(first.ok, 'pass-through handshake');
    parties.push(first.party);
    await first.party.hello({ sid });
    assert.equal(await sockets(), before + 1);
    await first.party.close();
    await pollUntil(async () => (await sockets()) === before, 'the relay closed its side');

    // The relay ends the party (a text message is a protocol error): the end comes back through the gateway.
    const second = await dialWsV2(gateway.port, { path: `/v2/mailbox?route=${route}` });
    assert.ok(second.ok);
    parties.push(second.party);
    await second.party.hello({ sid });
    await second.party.sendText('not a frame');
    const end = await bounded(second.party.ended, 'the relay\'s end reached the client');
    assert.equal(end.code, INVALID_ARGUMENT, JSON.stringify(end));
    await pollUntil(async () => (await sockets()) === before, 'the relay socket gone');
  });

  test('a v2 gRPC client given the gateway is redirected to the owner (Hello answered with relay_address) and works through the library', async () => {
    const sid = randomBytes(64);
    const direct = grpcParty(gateway.address);
    parties.push(direct);
    const refused = await direct.hello({ sid }).then(
      () => assert.fail('the gateway welcomed a v2 party'),
      (err: unknown) => err as HelloRefused,
    );
    assert.ok(refused instanceof HelloRefused);
    assert.equal(refused.error?.code, UNAVAILABLE);
    const owner = await grpcLookup(gateway.address, routeOfSid(sid));
    assert.ok(owner.ok, 'the Hello placed the session');
    assert.equal(refused.error?.relayAddress, owner.owner.address);
    assert.ok(cluster.relays.some((r) => r.address === owner.owner.address));

    const node = await party(gateway.address, 'grpc', new Uint8Array(sid));
    assert.equal(node.relay, owner.owner.address, 'the library dialled the owning relay');
    const app = await party(cluster.gateways[1].address, 'grpc', flipSid(new Uint8Array(sid)));
    assert.equal(app.relay, owner.owner.address);
    await exchange(node, app, MESSAGES_EACH_WAY);
  });

  test('the ?route pass-through refuses a malformed route with 400 and the lookup\'s JSON error', async () => {
    for (const route of ['short', `${'A'.repeat(42)}!`, '']) {
      const res = await dialWsV2(gateway.port, { path: `/v2/mailbox?route=${encodeURIComponent(route)}` });
      assert.equal(res.ok, false, `route '${route}' was passed through`);
      if (res.ok) continue;
      assert.equal(res.status, 400);
      assert.deepEqual(JSON.parse(res.body), { error: { code: INVALID_ARGUMENT, message: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' } });
    }
    // The gateway still passes good ones through.
    const res = await dialWsV2(gateway.port, { path: `/v2/mailbox?route=${routeOfSid(randomBytes(64))}` });
    assert.ok(res.ok);
    parties.push(res.party);
  });
});
