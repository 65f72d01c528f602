/**
 * Three `hashmail relay` processes on one real etcd: lookups agree on every
 * relay, a v2 party that dials a non-owner is redirected with relay_address,
 * and SIGTERM drains a relay (its streams end with UNAVAILABLE "relay
 * draining", new placements avoid it, it exits 0 within the deadline).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { connect, type MailboxConnection } from '../../src/client/index.js';
import { routeOfSid } from '../../src/directory/route.js';
import { withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, until } from '../helpers/etcd-directory.js';
import http from 'node:http';
import { grpcLookup, httpLookup, lookupClient, type GrpcLookupAnswer } from '../helpers/lookup.js';
import { metricSum, sumIn } from '../helpers/metrics.js';
import { startRelay, type RunningServer } from '../helpers/server.js';
import { closeParties, grpcParty, HelloRefused, wsParty, type V2Party } from '../helpers/v2-peers.js';

const UNAVAILABLE = 14;
const NOT_FOUND = 5;
const RELAYS = 3;
const DRAIN_DEADLINE_MS = 4000;
/** Longer than a test waits for any answer (DEFAULT_WAIT_MS): a held lookup answers only because the session moved. */
const HELD_LOOKUP_MS = 30_000;
const RELAY_CONFIG = {
  // etcd calls get more than the production deadline (2 s): the race tests send 1,000 placements at once.
  directory: { leaseTtlMs: 3000, callTimeoutMs: 3000, loadPublishIntervalMs: 200, lookupWaitMaxMs: HELD_LOOKUP_MS },
  relay: { drainSpreadMs: 500, drainDeadlineMs: DRAIN_DEADLINE_MS },
};
/** Concurrent placements in the race tests. */
const RACE_LOOKUPS = 1000;
/** HTTP connections per relay the race keeps open. */
const HTTP_SOCKETS_PER_RELAY = 32;
/** Messages each way between the client-library parties that asked different relays. */
const LIBRARY_MESSAGES = 1000;
/** Bound on that exchange. */
const EXCHANGE_MS = 30_000;
/** Placements tried to find sessions on the relay under test (each lands there with p = 1/3). */
const MAX_PLACEMENTS = 60;

function sidPair(): [Buffer, Buffer] {
  const a = randomBytes(64);
  const b = Buffer.from(a);
  b[63] ^= 1;
  return [a, b];
}

function owner(answer: GrpcLookupAnswer): { id: string; address: string; startedAt?: number } {
  assert.ok(answer.ok, `lookup failed: ${JSON.stringify(answer)}`);
  return answer.owner;
}

describe('hashmail relay: three relays on one etcd', () => {
  let etcd: EtcdCluster;
  const relays: RunningServer[] = [];

  before(async () => {
    etcd = await startEtcd(1);
    for (let i = 0; i < RELAYS; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-${i}`, config: RELAY_CONFIG }));
  });
  after(async () => {
    for (const relay of relays) await relay.stop();
    await etcd.stop();
  });

  test('each relay is live and ready on its admin listener once registered', async () => {
    for (const relay of relays) {
      assert.equal((await relay.admin('/healthz')).status, 200);
      assert.equal((await relay.admin('/readyz')).status, 200);
    }
    const serving = relays[0].logs.find((l) => l.msg === 'serving');
    assert.equal(serving?.id, 'relay-0');
    assert.deepEqual(serving?.advertise, [relays[0].address]);
  });

  test('every relay answers lookups alike: placed once, found everywhere, 404 when not placed', async () => {
    const addresses = new Set(relays.map((r) => r.address));
    for (let i = 0; i < 12; i++) {
      const route = routeOfSid(randomBytes(64));
      const missing = await httpLookup(relays[i % RELAYS].port, `route=${route}`);
      assert.equal(missing.status, 404);
      assert.deepEqual(await grpcLookup(relays[(i + 1) % RELAYS].address, route), { ok: false, code: NOT_FOUND, details: 'session not placed' });
      const placed = owner(await grpcLookup(relays[i % RELAYS].address, route, true));
      assert.ok(addresses.has(placed.address), `placed on ${placed.address}`);
      assert.equal(relays.find((r) => r.address === placed.address)?.address, placed.address);
      for (const relay of relays) {
        assert.deepEqual(owner(await grpcLookup(relay.address, route)), placed);
        const http = await httpLookup(relay.port, `route=${route}&create=1`);
        assert.equal(http.status, 200);
        assert.deepEqual(JSON.parse(http.body), placed);
      }
    }
  });

  test(`race: ${RACE_LOOKUPS} concurrent placements of one new session via 3 relays (gRPC and HTTP) yield one owner; ${RACE_LOOKUPS} sessions spread`, async (t) => {
    const clients = relays.map((r) => lookupClient(r.address));
    const agent = new http.Agent({ keepAlive: true, maxSockets: HTTP_SOCKETS_PER_RELAY });
    t.after(() => {
      for (const c of clients) c.close();
      agent.destroy();
    });
    const place = async (i: number, route: string): Promise<{ id: string; address: string }> => {
      if (i % 2 === 0) return owner(await clients[i % RELAYS].lookup(route, true));
      const answer = await httpLookup(relays[i % RELAYS].port, `route=${route}&create=1`, { agent });
      assert.equal(answer.status, 200, answer.body);
      return JSON.parse(answer.body) as { id: string; address: string };
    };
    const route = routeOfSid(randomBytes(64));
    const owners = await Promise.all(Array.from({ length: RACE_LOOKUPS }, (_, i) => place(i, route)));
    assert.equal(new Set(owners.map((o) => `${o.id} ${o.address}`)).size, 1, 'one owner');

    const spread = await Promise.all(Array.from({ length: RACE_LOOKUPS }, (_, i) => place(i, routeOfSid(randomBytes(64)))));
    const perRelay = relays.map((r) => spread.filter((o) => o.address === r.address).length);
    assert.equal(perRelay.reduce((a, b) => a + b, 0), RACE_LOOKUPS);
    const mean = RACE_LOOKUPS / RELAYS;
    t.diagnostic(`sessions per relay: ${perRelay.join(', ')} (max/mean ${(Math.max(...perRelay) / mean).toFixed(3)})`);
    // Equal load everywhere: an even split, far from one relay taking most.
    assert.ok(Math.max(...perRelay) / mean < 1.3, `uneven: ${perRelay.join(', ')}`);
  });

  test('a v2 party that dials a non-owner is redirected with relay_address; at the owner both parties meet', async () => {
    const [a, b] = sidPair();
    const placed = owner(await grpcLookup(relays[0].address, routeOfSid(a), true));
    const elsewhere = relays.find((r) => r.address !== placed.address) as RunningServer;
    const home = relays.find((r) => r.address === placed.address) as RunningServer;
    for (const party of [grpcParty(elsewhere.address), await wsParty(elsewhere.port)]) {
      const refused = await party.hello({ sid: b }).then(
        () => assert.fail('a non-owner welcomed the party'),
        (err: unknown) => err as HelloRefused,
      );
      assert.ok(refused instanceof HelloRefused);
      assert.equal(refused.error?.code, UNAVAILABLE);
      assert.equal(refused.error?.message, `session is served by another relay: ${placed.address}`);
      assert.equal(refused.error?.relayAddress, placed.address);
      await closeParties([party]);
    }
    const pa = grpcParty(home.address);
    const pb = await wsParty(home.port);
    try {
      await pa.hello({ sid: a });
      await pb.hello({ sid: b });
      await pa.expectPresence(true);
      await pb.send(Buffer.from('over the cluster'));
      assert.equal((await pa.nextData()).toString(), 'over the cluster');
    } finally {
      await closeParties([pa, pb]);
    }
  });

  test(`client-library parties asking different relays meet on one: ${LIBRARY_MESSAGES} messages each way intact and in order`, async () => {
    const [a, b] = sidPair();
    // Each party names a different relay first; whichever places the session, both end up on its owner.
    const node = await connect({ server: relays[0].address, insecure: true, protocol: 'v2', transport: 'grpc', sid: a, role: 'node' });
    const app = await connect({ server: relays[2].address, insecure: true, protocol: 'v2', transport: 'websocket', sid: b, role: 'app' });
    try {
      const placed = owner(await grpcLookup(relays[1].address, routeOfSid(a), false));
      assert.equal(node.relay, placed.address, 'the node is not on the owner');
      assert.equal(app.relay, placed.address, 'the app is not on the owner');
      const received = (conn: MailboxConnection): Promise<string[]> =>
        (async () => {
          const got: string[] = [];
          for await (const msg of conn) {
            got.push(Buffer.from(msg).toString());
            if (got.length === LIBRARY_MESSAGES) break;
          }
          return got;
        })();
      const atApp = received(app);
      const atNode = received(node);
      for (let i = 0; i < LIBRARY_MESSAGES; i++) {
        await node.send(Buffer.from(`n${i}-${'x'.repeat(i % 97)}`));
        await app.send(Buffer.from(`a${i}-${'y'.repeat(i % 89)}`));
      }
      const expected = (tag: string, pad: string, mod: number): string[] => Array.from({ length: LIBRARY_MESSAGES }, (_, i) => `${tag}${i}-${pad.repeat(i % mod)}`);
      assert.deepEqual(await withTimeout(atApp, EXCHANGE_MS, 'the app to receive every message'), expected('n', 'x', 97));
      assert.deepEqual(await withTimeout(atNode, EXCHANGE_MS, 'the node to receive every message'), expected('a', 'y', 89));
    } finally {
      await Promise.all([node.close(), app.close()]);
    }
  });

  const waitingAt = (r: RunningServer): Promise<number | undefined> => metricSum(r, 'hashmail_directory_lookups_waiting');

  /** One HTTP and one gRPC lookup of `route` at `asked`, asking to be held (`held`): once both are held, both callers leave. */
  async function holdThenLeave(asked: RunningServer, route: string, held: { unreachable: string; unreachableStartedAt?: number }): Promise<void> {
    const leave = new AbortController();
    const startedAt = held.unreachableStartedAt ? `&unreachable_started_at=${held.unreachableStartedAt}` : '';
    const heldHttp = httpLookup(asked.port, `route=${route}&unreachable=${held.unreachable}${startedAt}&wait_ms=${HELD_LOOKUP_MS}`, { signal: leave.signal });
    const heldGrpc = grpcLookup(asked.address, route, false, { ...held, waitMs: HELD_LOOKUP_MS }, leave.signal);
    for (let i = 0; i < 200 && (await waitingAt(asked)) !== 2; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await waitingAt(asked), 2, 'both lookups held');
    leave.abort();
    await assert.rejects(heldHttp);
    assert.equal((await heldGrpc).ok, false);
  }

  test('a held lookup whose caller leaves is released at once (HTTP and gRPC)', async () => {
    const pair = sidPair();
    const route = routeOfSid(pair[0]);
    const placed = owner(await grpcLookup(relays[0].address, route, true));
    // Asked at a relay that does not own it, for the owner the caller "could not reach": held.
    const asked = relays.find((r) => r.address !== placed.address) as RunningServer;
    await holdThenLeave(asked, route, { unreachable: placed.id });
    const waiting = (): Promise<number | undefined> => waitingAt(asked);
    for (let i = 0; i < 200 && (await waiting()) !== 0; i++) await new Promise((r) => setTimeout(r, 20));
    assert.equal(await waiting(), 0, 'nothing held once the callers left');
    // A lookup answered normally holds nothing afterwards either.
    assert.equal(owner(await grpcLookup(asked.address, route)).id, placed.id);
    assert.equal(await waiting(), 0);
  });

  test('a held lookup naming an earlier registration of the owner (a restart under the same id) is answered at once; naming the current one it is held (HTTP and gRPC)', async () => {
    const route = routeOfSid(sidPair()[0]);
    const placed = owner(await grpcLookup(relays[0].address, route, true));
    const startedAt = placed.startedAt ?? 0;
    assert.ok(startedAt > 0, 'the answer carries the owner\'s registration');
    const asked = relays.find((r) => r.address !== placed.address) as RunningServer;
    // The party failed against an earlier run of placed.id: the owner now is another process, answered at once.
    // (Held, grpcLookup's own 10 s deadline would end it long before HELD_LOOKUP_MS.)
    assert.deepEqual(owner(await grpcLookup(asked.address, route, false, { unreachable: placed.id, unreachableStartedAt: startedAt - 1, waitMs: HELD_LOOKUP_MS })), placed);
    const http = await httpLookup(asked.port, `route=${route}&unreachable=${placed.id}&unreachable_started_at=${startedAt - 1}&wait_ms=${HELD_LOOKUP_MS}`);
    assert.equal(http.status, 200);
    assert.deepEqual(JSON.parse(http.body), placed);
    // Naming the very registration that owns it: held, as a party that could not reach that process needs.
    await holdThenLeave(asked, route, { unreachable: placed.id, unreachableStartedAt: startedAt });
  });

  // Last: relay 2 drains and exits.
  test('SIGTERM drains a relay: its streams end with UNAVAILABLE "relay draining", placements avoid it, it exits 0 in time', async (t) => {
    const drained = relays[2];
    const mine: [Buffer, Buffer][] = [];
    let other: [Buffer, Buffer] | null = null;
    for (let i = 0; i < MAX_PLACEMENTS && (mine.length < 2 || other === null); i++) {
      const pair = sidPair();
      const placed = owner(await grpcLookup(relays[i % RELAYS].address, routeOfSid(pair[0]), true));
      if (placed.address === drained.address) mine.push(pair);
      else other ??= pair;
    }
    assert.ok(mine.length >= 1 && other !== null, 'placements reached every relay');
    const parties: V2Party[] = [];
    const otherParties: V2Party[] = [];
    const watcher = await member(etcd.endpoints, null);
    try {
      for (const [a, b] of mine) {
        const pa = grpcParty(drained.address);
        const pb = await wsParty(drained.port);
        parties.push(pa, pb);
        await pa.hello({ sid: a });
        await pb.hello({ sid: b });
      }
      const [oa, ob] = other;
      const home = owner(await grpcLookup(relays[0].address, routeOfSid(oa)));
      const homeAddress = home.address;
      const homeRelay = relays.find((r) => r.address === homeAddress) as RunningServer;
      otherParties.push(grpcParty(homeRelay.address), grpcParty(homeRelay.address));
      await otherParties[0].hello({ sid: oa });
      await otherParties[1].hello({ sid: ob });
      await otherParties[0].expectPresence(true);

      // Parties that could not reach relay-2 ask again with a wait: held until the drain moves the session.
      const heldRoute = routeOfSid(mine[0][0]);
      const heldGrpc = grpcLookup(relays[0].address, heldRoute, true, { unreachable: 'relay-2', waitMs: HELD_LOOKUP_MS });
      const heldHttp = httpLookup(relays[1].port, `route=${heldRoute}&create=1&unreachable=relay-2&wait_ms=${HELD_LOOKUP_MS}`);
      // One held at the draining relay itself, for a session that stays put: stopping answers it (else it would hold the exit).
      const heldAtDrained = httpLookup(drained.port, `route=${routeOfSid(oa)}&unreachable=${home.id}&wait_ms=${HELD_LOOKUP_MS}`);
      for (const asked of [relays[0], relays[1], drained]) {
        for (let i = 0; i < 200 && (await metricSum(asked, 'hashmail_directory_lookups_waiting')) !== 1; i++) await new Promise((r) => setTimeout(r, 20));
        assert.equal(await metricSum(asked, 'hashmail_directory_lookups_waiting'), 1, `${asked.address} holds the lookup`);
      }

      // What another member's view shows of relay-2 from now on: draining, then gone once it exits (its lease
      // revoked). A drain with few sessions may end before a poll after the checks below: watch it throughout.
      let seenDraining = false;
      let seenGone = false;
      const onGone = (id: string): void => {
        if (id === 'relay-2') seenGone = true;
      };
      watcher.on('instanceGone', onGone);
      const look = setInterval(() => {
        if (watcher.instances().find((i) => i.id === 'relay-2')?.draining === true) seenDraining = true;
      }, 5);
      // The listener goes with the watcher, closed below.
      t.after(() => clearInterval(look));
      const sent = Date.now();
      const exitedAt = drained.exited.then((code) => ({ code, ms: Date.now() - sent }));
      drained.process.kill('SIGTERM');
      const movedTo = owner(await heldGrpc);
      assert.notEqual(movedTo.id, 'relay-2', 'the held gRPC lookup names the new owner');
      const httpAnswer = await heldHttp;
      assert.equal(httpAnswer.status, 200, httpAnswer.body);
      assert.equal((JSON.parse(httpAnswer.body) as { id: string }).id, movedTo.id, 'both held lookups name the one new owner');
      for (const party of parties) {
        await party.expectError(UNAVAILABLE, /^relay draining: look up the session again$/, { skipPresence: true });
      }
      assert.equal((await drained.admin('/readyz')).status, 503);
      await until(() => seenDraining || seenGone, 3000, 'relay-2 seen draining (or already gone)');
      t.diagnostic(seenDraining ? 'relay-2 seen draining' : 'relay-2 gone before a look saw it draining');
      for (let i = 0; i < 20; i++) {
        const placed = owner(await grpcLookup(relays[i % 2].address, routeOfSid(randomBytes(64)), true));
        assert.notEqual(placed.address, drained.address, 'a new session landed on the draining relay');
      }
      // The released sessions are placed elsewhere on the next lookup.
      for (const [a] of mine) assert.notEqual(owner(await grpcLookup(relays[0].address, routeOfSid(a), true)).address, drained.address);
      const exit = await exitedAt;
      assert.equal(exit.code, 0);
      const answeredAtStop = await heldAtDrained;
      assert.equal(answeredAtStop.status, 200, answeredAtStop.body);
      assert.equal((JSON.parse(answeredAtStop.body) as { id: string }).id, home.id, 'answered as it stood when the relay stopped');
      assert.ok(exit.ms < DRAIN_DEADLINE_MS, `exit took ${exit.ms} ms`);
      t.diagnostic(`drained relay exited ${exit.ms} ms after SIGTERM`);
      // A session on another relay was not disturbed.
      await otherParties[1].send(Buffer.from('still here'));
      assert.equal((await otherParties[0].nextData()).toString(), 'still here');
    } finally {
      await closeParties([...parties, ...otherParties]);
      await watcher.close();
    }
  });
  test('etcd paused past the TTL: every relay turns unready and names no owner from its cache (503 / UNAVAILABLE "directory unavailable"); resumed: ready and placing again by itself', async () => {
    const live = relays.filter((r) => r.process.exitCode === null && r.process.signalCode === null);
    assert.ok(live.length >= 2);
    const route = routeOfSid(randomBytes(64));
    owner(await grpcLookup(live[0].address, route, true));
    for (const relay of live) assert.equal((await httpLookup(relay.port, `route=${route}`)).status, 200);
    const notReady = async (relay: RunningServer): Promise<boolean> => (await relay.admin('/readyz')).status === 503;
    etcd.members[0].pause();
    try {
      for (const relay of live) {
        // Bounded: the lease is lost within the TTL (3 s) of the last keepalive etcd answered.
        for (let i = 0; i < 100 && !(await notReady(relay)); i++) await new Promise((r) => setTimeout(r, 100));
        assert.ok(await notReady(relay), `${relay.address} still ready with etcd paused past the TTL`);
        const http = await httpLookup(relay.port, `route=${route}`);
        assert.equal(http.status, 503, http.body);
        assert.match(http.body, /directory unavailable/);
        assert.deepEqual(await grpcLookup(relay.address, route), { ok: false, code: UNAVAILABLE, details: 'directory unavailable' });
      }
      for (const relay of live) {
        const { body } = await relay.admin('/metrics');
        const leaseLost = body.split('\n').filter((l) => l.includes('cause="lease_lost"')).join('\n');
        assert.ok((sumIn(leaseLost, 'hashmail_directory_unavailable_total') ?? 0) >= 2, 'counted as lease_lost');
      }
    } finally {
      etcd.members[0].resume();
    }
    for (const relay of live) {
      for (let i = 0; i < 150 && (await notReady(relay)); i++) await new Promise((r) => setTimeout(r, 100));
      assert.equal((await relay.admin('/readyz')).status, 200, `${relay.address} ready again`);
      let answer: GrpcLookupAnswer = { ok: false, code: 0, details: '' };
      for (let i = 0; i < 50 && !answer.ok; i++) {
        answer = await grpcLookup(relay.address, routeOfSid(randomBytes(64)), true);
        if (!answer.ok) await new Promise((r) => setTimeout(r, 100));
      }
      owner(answer);
    }
  });
});
