/**
 * The etcd directory against a real etcd: placement races, cached lookups,
 * lease expiry and revocation, fencing, etcd outages, compaction, no SID in
 * etcd. Members run in the test process.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test, type TestContext } from 'node:test';
import { Etcd3 } from 'etcd3';
import { DirectoryUnavailableError } from '../../src/directory/directory.js';
import type { EtcdDirectory } from '../../src/directory/etcd/etcd-directory.js';
import { allEndpointStatus } from '../../src/directory/etcd/endpoint-status.js';
import { routeOfSid } from '../../src/directory/route.js';
import { withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, randomRoute, TEST_CALL_TIMEOUT_MS, TEST_TTL_MS, until } from '../helpers/etcd-directory.js';

/** TTL of members whose leases are revoked in a test: a revocation seen within REVOKED_WITHIN_MS is then never an expiry. */
const LONG_TTL_MS = 15_000;
const REVOKED_WITHIN_MS = 5_000;

/** Slack over a deadline under test: scheduling, not the deadline itself. */
const DEADLINE_SLACK_MS = 500;

/** Closes `d` (revoking its leases) when the test ends, pass or fail: open gRPC channels would keep the runner alive. */
function own(t: TestContext, d: EtcdDirectory): EtcdDirectory {
  t.after(() => d.close({ revoke: true }));
  return d;
}

function once(d: EtcdDirectory, event: 'fenceLost' | 'registered'): Promise<number> {
  return new Promise((resolve) => d.on(event, () => resolve(Date.now())));
}

/** The value of the first sample on a member's /metrics whose line `matches`; undefined when none does. */
async function etcdSample(clientUrl: string, matches: (line: string) => boolean): Promise<number | undefined> {
  const body = await (await fetch(`${clientUrl}/metrics`)).text();
  const line = body.split('\n').find((l) => !l.startsWith('#') && matches(l));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

/** Lease keepalive streams a member has seen opened (its gRPC server metrics). */
async function keepaliveStreams(clientUrl: string): Promise<number> {
  return (await etcdSample(clientUrl, (l) => l.startsWith('grpc_server_started_total{') && l.includes('grpc_method="LeaseKeepAlive"'))) ?? 0;
}

/** etcd's count of committed raft proposals (every write transaction, whether its compare held or not). */
async function committedProposals(clientUrl: string): Promise<number> {
  const n = await etcdSample(clientUrl, (l) => l.startsWith('etcd_server_proposals_committed_total '));
  assert.ok(n !== undefined, 'etcd exports etcd_server_proposals_committed_total');
  return n;
}

describe('etcd directory, one etcd member', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd.stop();
  });

  test('three members: 1,000 concurrent placements of one route agree on one owner; 1,000 routes spread', async (t) => {
    const prefix = '/race/';
    const members: EtcdDirectory[] = [];
    // A burst of 1,000 placements queues behind maxTxnsInFlight: a deadline with room for the queue.
    for (let i = 0; i < 3; i++) members.push(own(t, await member(etcd.endpoints, `r${i}`, { prefix, callTimeoutMs: 10_000 }, 7000 + i)));
    await until(() => members.every((m) => m.instances().length === 3), 5000, 'every member sees 3 instances');

    const route = randomRoute();
    const proposalsBefore = await committedProposals(etcd.endpoints[0]);
    const answers = await Promise.all(Array.from({ length: 1000 }, (_, i) => members[i % 3].lookup(route, { place: true })));
    const owners = new Set(answers.map((a) => JSON.stringify(a)));
    assert.equal(owners.size, 1, `one owner, got ${[...owners].join(' ')}`);
    // Each member's concurrent lookups of the route share one create transaction: at most one write each.
    const writes = (await committedProposals(etcd.endpoints[0])) - proposalsBefore;
    t.diagnostic(`${writes} etcd writes for 1,000 concurrent placements of one route through 3 members`);
    assert.ok(writes >= 1 && writes <= 3, `${writes} etcd writes`);
    const owner = answers[0];
    assert.ok(owner);
    assert.equal(members.filter((m) => m.servesHere(route)).length <= 1, true);
    const ownerMember = members.find((m) => m.selfId === owner.id);
    assert.ok(ownerMember);
    await until(() => ownerMember.servesHere(route), 3000, 'the owner serves the route');
    assert.deepEqual(members.filter((m) => m.servesHere(route)).map((m) => m.selfId), [owner.id]);

    const perOwner = new Map<string, number>();
    const routes = Array.from({ length: 1000 }, () => randomRoute());
    const placed = await Promise.all(routes.map((r, i) => members[i % 3].lookup(r, { place: true })));
    for (const p of placed) {
      assert.ok(p);
      perOwner.set(p.id, (perOwner.get(p.id) ?? 0) + 1);
    }
    const counts = [...perOwner.values()];
    assert.equal(counts.length, 3, `all three instances got sessions: ${JSON.stringify([...perOwner])}`);
    const mean = 1000 / 3;
    assert.ok(Math.max(...counts) / mean < 1.15, `max/mean ${(Math.max(...counts) / mean).toFixed(3)}: ${JSON.stringify([...perOwner])}`);
    // Every member answers the same owner for every route, from its cache once the watch caught up.
    await until(() => members.every((m) => routes.every((r) => m.servesHere(r) === (m.selfId === placed[routes.indexOf(r)]?.id))), 5000, 'fencing agrees');
  });

  test('session leases rotate before one holds keysPerLease mappings; every mapping is served', async (t) => {
    const prefix = '/rotate/';
    const keysPerLease = 10;
    const relay = own(t, await member(etcd.endpoints, 'rot', { prefix, keysPerLease }));
    const raw = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => raw.close());
    const routes: string[] = [];
    for (let i = 0; i < 45; i++) {
      const r = randomRoute();
      routes.push(r);
      assert.equal((await relay.lookup(r, { place: true }))?.id, 'rot');
    }
    const values = Object.values(await raw.getAll().prefix(`${prefix}sessions/`).strings());
    const perLease = new Map<string, number>();
    for (const v of values) {
      const { lease } = JSON.parse(v) as { lease: string };
      perLease.set(lease, (perLease.get(lease) ?? 0) + 1);
    }
    assert.ok(perLease.size >= 5, `leases used: ${JSON.stringify([...perLease])}`);
    assert.ok([...perLease.values()].every((n) => n <= keysPerLease), JSON.stringify([...perLease]));
    assert.ok(routes.every((r) => relay.servesHere(r)));
    assert.ok(relay.health().ok);
  });

  test('drain: setDraining takes no new sessions, release drops our mappings, routeLost names each lost route', async (t) => {
    const prefix = '/drain/';
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const b = own(t, await member(etcd.endpoints, 'b', { prefix }));
    const raw = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => raw.close());
    await until(() => a.instances().length === 2 && b.instances().length === 2, 3000, 'both see both');
    await b.setDraining();
    await until(() => a.instances().find((i) => i.id === 'b')?.draining === true, 3000, 'a sees b draining');
    const routes = Array.from({ length: 10 }, () => randomRoute());
    for (const r of routes) assert.equal((await a.lookup(r, { place: true }))?.id, 'a', 'never on the draining one');
    const lost: string[] = [];
    a.on('routeLost', (route) => lost.push(route));

    await a.setDraining();
    await a.release(routes.slice(0, 5));
    await until(() => lost.length === 5, 3000, 'routeLost for each released route');
    assert.deepEqual(new Set(lost), new Set(routes.slice(0, 5)));
    assert.ok(routes.slice(0, 5).every((r) => !a.servesHere(r)));
    assert.ok(routes.slice(5).every((r) => a.servesHere(r)));
    // A mapping deleted behind our back is lost too.
    await raw.delete().key(`${prefix}sessions/${routes[5]}`);
    await until(() => lost.length === 6, 3000, 'routeLost for a deleted mapping');
    assert.equal(lost[5], routes[5]);
  });

  test('release deletes only the mappings our view holds: one placed anew on another instance while our watch lagged is kept', async (t) => {
    const prefix = '/release-stale/';
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const raw = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => raw.close());
    const routes = Array.from({ length: 3 }, () => randomRoute());
    for (const r of routes) assert.equal((await a.lookup(r, { place: true }))?.id, 'a');
    const b = own(t, await member(etcd.endpoints, 'b', { prefix }));
    await until(() => b.instances().some((i) => i.id === 'b') && a.instances().length === 2, 3000, 'both registered');
    // a's view lags (its watch held down); its mapping of routes[0] goes (an expiry, say) and b places that route anew.
    a.holdWatch(true);
    await raw.delete().key(`${prefix}sessions/${routes[0]}`);
    let seen: unknown = 'a';
    for (let i = 0; i < 150 && seen !== null; i++) {
      seen = await b.lookup(routes[0], { place: false });
      if (seen !== null) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(seen, null, 'b sees the mapping gone');
    await a.setDraining(); // so b places the route on itself
    await until(() => b.instances().find((i) => i.id === 'a')?.draining === true, 3000, 'b sees a draining');
    await b.lookup(routes[0], { place: true });
    assert.equal((await b.lookup(routes[0], { place: false }))?.id, 'b');
    assert.equal(await a.release(routes), 2, 'only its own two mappings released');
    assert.equal((await raw.get(`${prefix}sessions/${routes[0]}`).string()) !== null, true, 'b\'s mapping kept');
    for (const r of routes.slice(1)) assert.equal(await raw.get(`${prefix}sessions/${r}`).string(), null, 'a\'s mapping released');
    a.holdWatch(false);
  });

  test('a cached lookup makes no etcd call', async (t) => {
    const prefix = '/cached/';
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    await until(() => gateway.instances().length === 1, 3000, 'the gateway sees the relay');
    const route = randomRoute();
    const placed = await gateway.lookup(route, { place: true });
    assert.equal(placed?.id, 'a');
    await until(() => a.servesHere(route), 3000, 'the relay sees its mapping');
    const before = [a.etcdCalls, gateway.etcdCalls];
    for (let i = 0; i < 1000; i++) {
      assert.deepEqual(await gateway.lookup(route, { place: true }), placed);
      assert.deepEqual(await a.lookup(route, { place: false }), placed);
    }
    assert.deepEqual([a.etcdCalls, gateway.etcdCalls], before);
    assert.equal(await gateway.lookup(randomRoute(), { place: false }), null, 'unknown route, no place: null');
  });
});

describe('etcd directory: leases, fencing, outages (one etcd member each)', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(1);
  });
  after(async () => {
    await etcd.stop();
  });

  test('closed without revoke: mappings vanish after the TTL and are placed on a live instance; with revoke: at once', async (t) => {
    const prefix = '/expiry/';
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const b = own(t, await member(etcd.endpoints, 'b', { prefix }));
    const gateway = own(t, await member(etcd.endpoints, null, { prefix, placement: 'random' }));
    await until(() => gateway.instances().length === 2, 3000, 'the gateway sees both');
    await b.setDraining();
    await until(() => gateway.instances().find((i) => i.id === 'b')?.draining === true, 3000, 'b draining');
    const routes = Array.from({ length: 20 }, () => randomRoute());
    for (const r of routes) assert.equal((await gateway.lookup(r, { place: true }))?.id, 'a');

    const closedAt = Date.now();
    await a.close(); // no revoke: the lease runs out
    const revoked = own(t, await member(etcd.endpoints, 'c', { prefix, leaseTtlMs: LONG_TTL_MS }));
    await until(() => gateway.instances().every((i) => i.id !== 'a'), TEST_TTL_MS * 2 + 2000, 'a expired');
    const elapsed = Date.now() - closedAt;
    assert.ok(elapsed >= TEST_TTL_MS * 0.5, `a vanished after ${elapsed} ms, not before its lease could run out`);
    await until(() => gateway.watchState.watching, 3000, 'watch current');
    for (const r of routes) assert.equal((await gateway.lookup(r, { place: true }))?.id, 'c', 'placed again on the live, non-draining one');

    // With revoke the mappings go at once (well under the TTL).
    const revokedAt = Date.now();
    await revoked.close({ revoke: true });
    await until(() => gateway.instances().every((i) => i.id !== 'c'), REVOKED_WITHIN_MS, 'c revoked');
    assert.ok(Date.now() - revokedAt < REVOKED_WITHIN_MS);
    assert.equal(await gateway.lookup(routes[0], { place: false }), null);
  });

  test('held lookups: a wait on a dead owner ends when its leases go, a wait for a placement when it is placed', async (t) => {
    const prefix = '/held/';
    // Far longer than the test may take: only the change can end these waits.
    const HOUR_MS = 3_600_000;
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    await until(() => gateway.instances().length === 1 && gateway.watchState.watching, 3000, 'the gateway sees a');
    const placed = randomRoute();
    assert.equal((await gateway.lookup(placed, { place: true }))?.id, 'a');
    const onDead = gateway.waitForChange(placed, 'a', HOUR_MS);
    const unplaced = randomRoute();
    const forPlacement = gateway.waitForChange(unplaced, null, HOUR_MS);
    assert.equal(gateway.lookupsWaiting, 2);

    // a "crashes" and its successor revokes its leases at once (the restart path): the first wait ends.
    await a.close({ revoke: true });
    await onDead;
    assert.equal(gateway.lookupsWaiting, 1);
    assert.equal(await gateway.lookup(placed, { place: false }), null, 'the mapping went with the leases');

    const b = own(t, await member(etcd.endpoints, 'b', { prefix }));
    await until(() => gateway.instances().some((i) => i.id === 'b'), 3000, 'the gateway sees b');
    assert.equal((await b.lookup(unplaced, { place: true }))?.id, 'b');
    await forPlacement;
    assert.equal((await gateway.lookup(unplaced, { place: false }))?.id, 'b', 'woken by the placement, which its view now holds');
    assert.equal(gateway.lookupsWaiting, 0);
  });

  test('reRegisteredAt: an instance known before (even from the first listing) that registers again under its id is a restart; a first registration is not', async (t) => {
    const prefix = '/reregistered/';
    const dir = mkdtempSync(join(tmpdir(), 'hashmail-lease-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const leaseStateFile = join(dir, 'leases.json');
    const first = own(t, await member(etcd.endpoints, 'r', { prefix, leaseStateFile }));
    // This view starts after r registered: r is in its first listing, which is not news.
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    await until(() => gateway.instances().length === 1 && gateway.watchState.watching, 3000, 'the gateway sees r');
    assert.equal(gateway.reRegisteredAt('r'), undefined, 'listed at start');
    own(t, await member(etcd.endpoints, 'q', { prefix }));
    await until(() => gateway.instances().some((i) => i.id === 'q'), 3000, 'the gateway sees q');
    assert.equal(gateway.reRegisteredAt('q'), undefined, 'a first registration');
    await first.close(); // a crash; the restart revokes its leases and registers under the same id
    const before = performance.now();
    own(t, await member(etcd.endpoints, 'r', { prefix, leaseStateFile }));
    await until(() => gateway.reRegisteredAt('r') !== undefined, 3000, 'the restart seen');
    assert.ok((gateway.reRegisteredAt('r') ?? 0) >= before, 'when this view saw it');
  });

  test('leaseStateFile: a restarted relay revokes the leases its previous run left', async (t) => {
    const prefix = '/restart/';
    const dir = mkdtempSync(join(tmpdir(), 'hashmail-lease-'));
    const leaseStateFile = join(dir, 'leases.json');
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    // A long TTL: its leases could not run out in the time the revocation is given below.
    const first = own(t, await member(etcd.endpoints, 'r', { prefix, leaseStateFile, leaseTtlMs: LONG_TTL_MS }));
    const route = randomRoute();
    assert.equal((await first.lookup(route, { place: true }))?.id, 'r');
    let seen = null;
    for (let i = 0; i < 100 && seen === null; i++) {
      seen = await gateway.lookup(route, { place: false });
      if (seen === null) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(seen?.id, 'r');
    await first.close(); // a crash: nothing revoked
    const restartedAt = Date.now();
    own(t, await member(etcd.endpoints, null, { prefix, leaseStateFile }));
    await until(() => gateway.instances().length === 0, REVOKED_WITHIN_MS, 'old registration revoked at start');
    assert.ok(Date.now() - restartedAt < REVOKED_WITHIN_MS);
    assert.equal(await gateway.lookup(route, { place: false }), null, 'the old mapping is gone at once');
  });

  test('a placement racing a relay restart (old lease revoked, new record not yet seen) waits for the new record instead of answering "no relay"', async (t) => {
    const prefix = '/restart-race/';
    const dir = mkdtempSync(join(tmpdir(), 'hashmail-lease-'));
    t.after(() => rmSync(dir, { recursive: true, force: true }));
    const leaseStateFile = join(dir, 'leases.json');
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    const first = own(t, await member(etcd.endpoints, 'r', { prefix, leaseStateFile }));
    await until(() => gateway.instances().length === 1 && gateway.watchState.watching, 3000, 'the gateway sees the relay');
    // The gateway's view lags: it still holds the first run's record (and its session lease) when the relay restarts.
    gateway.holdWatch(true);
    await first.close(); // a crash: nothing revoked
    own(t, await member(etcd.endpoints, 'r', { prefix, leaseStateFile }));
    const placing = gateway.lookup(randomRoute(), { place: true });
    gateway.holdWatch(false);
    assert.equal((await placing)?.id, 'r', 'placed on the restarted relay');
  });

  test('lookup with confirm: a placement made elsewhere an instant ago, not yet in our watch, is read from etcd instead of "not placed"', async (t) => {
    const prefix = '/confirm/';
    const relay = own(t, await member(etcd.endpoints, 'c', { prefix }));
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    await until(() => gateway.instances().length === 1 && relay.watchState.watching, 3000, 'both current');
    // With the relay's watch held down its cache lags for sure; without, as it happens (usually some of the time).
    let raced = 0;
    for (let i = 0; i < 20; i++) {
      const held = i < 5;
      if (i === 0) relay.holdWatch(true);
      if (i === 5) {
        relay.holdWatch(false);
        await until(() => relay.watchState.watching, 3000, 'the relay watches again');
      }
      const route = randomRoute();
      assert.equal((await gateway.lookup(route, { place: true }))?.id, 'c');
      // Asked at once, as the gateway's hop call arrives.
      if (!relay.servesHere(route)) raced++;
      else assert.equal(held, false, 'a held watch delivered nothing');
      assert.equal((await relay.lookup(route, { place: false, confirm: true }))?.id, 'c');
      assert.equal(relay.servesHere(route), true, 'and serves it from then on');
    }
    t.diagnostic(`the relay's cache lagged ${raced} times of 20 (5 with the watch held)`);
  });

  test('fencing: etcd paused past the TTL: servesHere false and fenceLost before the TTL; resumed: registers again by itself', async (t) => {
    const prefix = '/fence/';
    const relay = own(t, await member(etcd.endpoints, 'f', { prefix }));
    const route = randomRoute();
    assert.equal((await relay.lookup(route, { place: true }))?.id, 'f');
    assert.equal(relay.servesHere(route), true);
    const fenced = once(relay, 'fenceLost');
    const registered = once(relay, 'registered');
    // A lookup held for a change (a party that could not reach the owner) is answered at the fence, not after its wait.
    const held = relay.waitForChange(route, 'elsewhere', 60_000);
    const pausedAt = Date.now();
    etcd.members[0].pause();
    try {
      const fencedAt = await fenced;
      // Well before its 60 s: woken by the fence.
      assert.equal(await withTimeout(held, TEST_TTL_MS, 'the held lookup answered at the fence'), true);
      assert.ok(fencedAt - pausedAt < TEST_TTL_MS, `fenceLost ${fencedAt - pausedAt} ms after the pause, TTL ${TEST_TTL_MS}`);
      assert.equal(relay.servesHere(route), false);
      assert.equal(relay.health().ok, false);
      // Its cache still holds the mapping, but a fenced instance cannot tell whether it is current.
      await assert.rejects(relay.lookup(route, { place: false }), (err: unknown) => err instanceof DirectoryUnavailableError && err.kind === 'lease_lost');
      // Stay paused past the TTL.
      await new Promise((r) => setTimeout(r, Math.max(0, pausedAt + TEST_TTL_MS + 200 - Date.now())));
      assert.equal(relay.servesHere(route), false);
    } finally {
      etcd.members[0].resume();
    }
    await registered;
    await until(() => relay.health().ok, 5000, 'healthy again');
    assert.equal(relay.servesHere(route), false, 'the mapping of the fenced generation is never served again');
    const fresh = randomRoute();
    let placed = null;
    for (let i = 0; i < 50 && placed === null; i++) {
      placed = await relay.lookup(fresh, { place: true }).catch(() => null);
      if (placed === null) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(placed?.id, 'f');
    await until(() => relay.servesHere(fresh), 3000, 'serves the new placement');
  });

  test('etcd down: cached lookups answer, placements fail fast; etcd back: placements work again', async (t) => {
    const prefix = '/outage/';
    const relay = own(t, await member(etcd.endpoints, 'o', { prefix }));
    const gateway = own(t, await member(etcd.endpoints, null, { prefix }));
    const route = randomRoute();
    const owner = await gateway.lookup(route, { place: true });
    assert.equal(owner?.id, 'o');
    await until(() => relay.servesHere(route), 3000, 'relay sees the mapping');
    const registered = once(relay, 'registered');

    await etcd.members[0].kill();
    try {
      assert.deepEqual(await gateway.lookup(route, { place: true }), owner, 'cached answer while etcd is down');
      const started = Date.now();
      await assert.rejects(gateway.lookup(randomRoute(), { place: true }), DirectoryUnavailableError);
      const took = Date.now() - started;
      assert.ok(took < TEST_CALL_TIMEOUT_MS + DEADLINE_SLACK_MS, `placement failed after ${took} ms`);
      // No member listening (the connection the first call met is gone by now): every try refused, so it fails as
      // 'etcd' after a few tries per endpoint, not at the call's deadline.
      await assert.rejects(gateway.lookup(randomRoute(), { place: true }), (err: unknown) => err instanceof DirectoryUnavailableError && err.kind === 'etcd');
      await new Promise((r) => setTimeout(r, TEST_TTL_MS)); // down past the TTL: the relay fences
      assert.equal(relay.servesHere(route), false);
    } finally {
      await etcd.members[0].restart();
    }
    await registered;
    let placed = null;
    for (let i = 0; i < 50 && placed === null; i++) {
      placed = await gateway.lookup(randomRoute(), { place: true }).catch(() => null);
      if (placed === null) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(placed?.id, 'o');
  });

  test('watch compaction: a watcher held down past a compaction lists again and stays current', async (t) => {
    const prefix = '/compact/';
    const relay = own(t, await member(etcd.endpoints, 'w', { prefix }));
    const watcher = own(t, await member(etcd.endpoints, null, { prefix }));
    const raw = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => raw.close());
    await until(() => watcher.instances().length === 1 && watcher.watchState.watching, 3000, 'watcher current');
    const relists = watcher.watchState.relists;
    watcher.holdWatch(true);
    const routes = await Promise.all(Array.from({ length: 10 }, async () => {
      const r = randomRoute();
      await relay.lookup(r, { place: true });
      return r;
    }));
    const { header } = await raw.kv.range({ key: Buffer.from('x') });
    await raw.kv.compact({ revision: header.revision, physical: true });
    watcher.holdWatch(false);
    await until(() => watcher.watchState.relists > relists && watcher.watchState.watching, 5000, 'listed again');
    for (const r of routes) assert.equal((await watcher.lookup(r, { place: false }))?.id, 'w');
    const later = randomRoute();
    await relay.lookup(later, { place: true });
    let seen = null;
    for (let i = 0; i < 50 && seen === null; i++) {
      seen = await watcher.lookup(later, { place: false });
      if (seen === null) await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(seen?.id, 'w', 'events after the re-list arrive');
  });

  test('etcd never holds a SID (hex, base64, base64url)', async (t) => {
    const prefix = '/nosid/';
    const relay = own(t, await member(etcd.endpoints, 's', { prefix }));
    const raw = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => raw.close());
    const sids = Array.from({ length: 50 }, () => randomBytes(64));
    for (const sid of sids) await relay.lookup(routeOfSid(sid), { place: true });
    const all = await raw.getAll().prefix('').buffers();
    const dump = Object.entries(all).map(([k, v]) => `${k}\n${v.toString('latin1')}`).join('\n');
    assert.ok(Object.keys(all).length >= sids.length);
    for (const sid of sids) {
      const pair = Buffer.from(sid);
      pair[63] ^= 1;
      for (const s of [sid, pair]) {
        for (const form of [s.toString('hex'), s.toString('base64'), s.toString('base64url'), s.toString('hex').toUpperCase()]) {
          assert.equal(dump.includes(form), false, 'a SID form in etcd');
          assert.equal(dump.includes(form.slice(0, 16)), false, 'a SID fragment in etcd');
        }
        assert.equal(dump.includes(s.toString('latin1')), false, 'raw SID bytes in etcd');
      }
    }
  });
});

describe('etcd directory, three etcd members', () => {
  let etcd: EtcdCluster;
  before(async () => {
    etcd = await startEtcd(3);
  });
  after(async () => {
    await etcd.stop();
  });

  // A follower: losing the leader adds one election (~1 s with etcd's defaults), which
  // the default callTimeoutMs (2 s) covers but this test's short deadline would not.
  test('one member (a follower) paused past the TTL: an instance whose keepalive stream it holds moves the stream and keeps its lease; its calls place through the other members', async (t) => {
    const prefix = '/stall/';
    const statuses = await allEndpointStatus({ endpoints: etcd.endpoints, auth: { username: '', password: '' }, tls: { caFile: '', certFile: '', keyFile: '' } }, 2000);
    const followers = statuses.flatMap((s, i) => (s.reachable && !s.isLeader ? [i] : []));
    assert.equal(followers.length, 2, JSON.stringify(statuses));
    // A member's keepalive stream goes to a random endpoint: register until one lands on a follower (p = 2/3 each).
    let held: { directory: EtcdDirectory; follower: number } | null = null;
    for (let i = 0; i < 20 && held === null; i++) {
      const before = await Promise.all(etcd.members.map((m) => keepaliveStreams(m.clientUrl)));
      const directory = own(t, await member(etcd.endpoints, `s${i}`, { prefix }));
      const after = await Promise.all(etcd.members.map((m) => keepaliveStreams(m.clientUrl)));
      const on = after.findIndex((n, m) => n > before[m]);
      if (followers.includes(on)) held = { directory, follower: on };
    }
    assert.ok(held, 'a keepalive stream on a follower');
    let fenced = false;
    held.directory.on('fenceLost', () => (fenced = true));
    const route = randomRoute();
    const owner = await held.directory.lookup(route, { place: true });
    etcd.members[held.follower].pause();
    try {
      // Past the TTL: unanswered, the lease would be unprovable (and fenced) by now.
      await new Promise((r) => setTimeout(r, TEST_TTL_MS + 500));
      assert.equal(fenced, false, 'fenced while two members of three answered');
      assert.ok(held.directory.health().ok);
      assert.deepEqual(await held.directory.lookup(route, { place: false }), owner);
      // Calls too: one that meets the paused member tries the next one within its deadline.
      for (let i = 0; i < 30; i++) assert.ok(await held.directory.lookup(randomRoute(), { place: true }), `placement ${i} with a member paused`);
    } finally {
      etcd.members[held.follower].resume();
    }
  });

  test('one member (a follower) killed: placements and lookups continue', async (t) => {
    const prefix = '/quorum/';
    const a = own(t, await member(etcd.endpoints, 'a', { prefix }));
    const b = own(t, await member(etcd.endpoints, 'b', { prefix }));
    await until(() => a.instances().length === 2 && b.instances().length === 2, 3000, 'both see both');
    const before = Array.from({ length: 50 }, () => randomRoute());
    const owners = await Promise.all(before.map((r, i) => (i % 2 ? a : b).lookup(r, { place: true })));
    const fenced = { a: false, b: false };
    a.on('fenceLost', () => (fenced.a = true));
    b.on('fenceLost', () => (fenced.b = true));
    const statuses = await allEndpointStatus({ endpoints: etcd.endpoints, auth: { username: '', password: '' }, tls: { caFile: '', certFile: '', keyFile: '' } }, 2000);
    const follower = statuses.findIndex((s) => s.reachable && !s.isLeader);
    assert.ok(follower >= 0, JSON.stringify(statuses));
    await etcd.members[follower].kill();
    const after = Array.from({ length: 200 }, () => randomRoute());
    const placed = await Promise.all(after.map((r, i) => (i % 2 ? a : b).lookup(r, { place: true })));
    assert.ok(placed.every((p) => p !== null));
    for (let i = 0; i < before.length; i++) assert.deepEqual(await (i % 2 ? b : a).lookup(before[i], { place: true }), owners[i]);
    // Both stay registered past a TTL with one member gone.
    await new Promise((r) => setTimeout(r, TEST_TTL_MS + 200));
    assert.deepEqual(fenced, { a: false, b: false });
    assert.ok(a.health().ok && b.health().ok);
    const late = await a.lookup(randomRoute(), { place: true });
    assert.ok(late);
  });
});
