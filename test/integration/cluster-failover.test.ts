/**
 * The cluster when things fail, end to end: real etcd (test/helpers/etcd.ts),
 * `hashmail relay` processes, and the client library as the parties.
 * - kill -9 of the owning relay with messages streaming across it: both
 *   parties are back in session within TTL + 3 s, what arrives is neither
 *   duplicated nor reordered, and all sent after the re-join arrives; a restart with the same data dir revokes the
 *   old leases, so the session moves before the TTL;
 * - SIGSTOP past the TTL, then SIGCONT: the session was placed elsewhere,
 *   the stopped relay ends its streams and never serves it again, and it
 *   registers anew;
 * - etcd: one member of three lost changes nothing; all lost: placed sessions
 *   keep relaying, placements fail with UNAVAILABLE "directory unavailable",
 *   and everything works again once etcd is back, with no restart of ours;
 * - drain under load: SIGTERM one of three relays with library pairs on the
 *   cluster: no new session lands on it, its pairs move (both parties to
 *   one relay), it exits 0 within the deadline;
 * - no SID, in any encoding, in any etcd key or value or in any relay log.
 */
import assert from 'node:assert/strict';
import { withTimeout } from '../helpers/async-queue.js';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, before, describe, test } from 'node:test';
import { Etcd3 } from 'etcd3';
import { connect, LinkDropped, type ConnectOptions, type DialInfo, type MailboxConnection, type ReconnectingInfo } from '../../src/client/index.js';
import { routeOfSid } from '../../src/directory/route.js';
import { leaseDecimal, type SessionValue } from '../../src/directory/etcd/keys.js';
import { REFUSING_PORT, startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { member, until } from '../helpers/etcd-directory.js';
import { grpcLookup, type GrpcLookupAnswer } from '../helpers/lookup.js';
import { metricSum, sumIn } from '../helpers/metrics.js';
import { startRelay, type RunningServer } from '../helpers/server.js';
import { closeParties, grpcParty, HelloRefused, type V2Party } from '../helpers/v2-peers.js';

const UNAVAILABLE = 14;
const TTL_MS = 3000;
/** The promise: both parties back within TTL + 3 s of a relay's death. */
const REJOIN_BOUND_MS = TTL_MS + 3000;
// callTimeoutMs at its default: losing the etcd leader costs one election (about 1 s).
const RELAY_CONFIG = { directory: { leaseTtlMs: TTL_MS, callTimeoutMs: 2000, loadPublishIntervalMs: 200 } };
/** The etcd-loss test: the default lease TTL (10 s), which an etcd leader election fits in. */
const DEFAULT_TTL_CONFIG = { directory: { callTimeoutMs: 2000, loadPublishIntervalMs: 200 } };
const STEP_MS = 10_000;
/** The parties' connectTimeoutMs in the kill -9 test: shorter than the TTL. */
const CONNECT_TIMEOUT_MS = 1000;
const MESSAGES = 50;
/** Numbers streamed node -> app across the kill (apart from the exchanges' 1..2*MESSAGES), one every STREAM_PACE_MS. */
const STREAM_FROM = 10_000;
const STREAM_PACE_MS = 5;
/** Library pairs on the cluster in the drain-under-load test. */
const LOAD_PAIRS = 24;
/** The restart test's TTL: far beyond its bounds, so a session that moved was moved by the revocation. */
const RESTART_TTL_MS = 60_000;
/** The drain's default relay.drainDeadlineMs (30 s) bounds both the moves and the exit. */
const DRAIN_REJOIN_MS = 35_000;
/** Sent before the kill. */
const STREAM_BEFORE_KILL = 50;
/** Sent after both parties re-joined: all of these must arrive. */
const STREAM_AFTER_REJOIN = 20;
/** Bound on the stream whatever happens: longer than the longest wait for a re-join (DRAIN_REJOIN_MS) at STREAM_PACE_MS. */
const STREAM_MAX = 10_000;

const usedSids: Buffer[] = [];

function sidPair(): [Buffer, Buffer] {
  const a = randomBytes(64);
  const b = Buffer.from(a);
  b[63] ^= 1;
  usedSids.push(a, b);
  return [a, b];
}

/** `promise`, or a rejection naming `what` after `ms` (the shared withTimeout with this file's default step). */
function bounded<T>(promise: Promise<T>, what: string, ms = STEP_MS): Promise<T> {
  return withTimeout(promise, ms, what);
}

/** The member that is the raft leader right now. */
async function leaderOf(cluster: EtcdCluster): Promise<EtcdCluster['members'][number]> {
  for (const m of cluster.members) {
    const client = new Etcd3({ hosts: [m.clientUrl] });
    try {
      const status = await client.maintenance.status();
      if (status.header.member_id === status.leader) return m;
    } finally {
      client.close();
    }
  }
  throw new Error('no leader found');
}

function ownerOf(answer: GrpcLookupAnswer): { id: string; address: string; startedAt?: number } {
  assert.ok(answer.ok, `lookup failed: ${JSON.stringify(answer)}`);
  return answer.owner;
}

/** The lease (decimal id) the session mapping of `route` is bound to. */
async function mappingLease(client: Etcd3, route: string): Promise<string> {
  const all = await client.getAll().prefix('').strings();
  const key = Object.keys(all).find((k) => k.endsWith(`sessions/${route}`));
  assert.ok(key, 'the session is mapped in etcd');
  const value = JSON.parse(all[key]) as SessionValue;
  return leaseDecimal(value.lease);
}

/** etcd's remaining TTL of a lease in seconds; -1 once it is revoked or expired. */
async function leaseTtlSeconds(client: Etcd3, lease: string): Promise<number> {
  const answer = await client.leaseClient.leaseTimeToLive({ ID: lease });
  return Number(answer.TTL);
}

/** A connected pair of library parties on one session: node over gRPC, app over WebSocket. */
class LibraryPair {
  private readonly iterators = new Map<MailboxConnection, AsyncIterator<Uint8Array>>();
  private constructor(
    readonly node: MailboxConnection,
    readonly app: MailboxConnection,
    /** The node's SID (the app's differs in the last bit). */
    readonly sid: Buffer,
  ) {}

  static async open(servers: string[], options: Partial<ConnectOptions> = {}): Promise<LibraryPair> {
    const [a, b] = sidPair();
    const base: Partial<ConnectOptions> = { server: servers.join(','), insecure: true, protocol: 'v2', ...options };
    // The node re-creates its session after a relay is lost, as litd does; the app retries "not found" meanwhile.
    const node = await bounded(connect({ ...base, sid: a, role: 'node', transport: 'grpc' } as ConnectOptions), 'node connect');
    const app = await bounded(connect({ ...base, sid: b, role: 'app', transport: 'websocket' } as ConnectOptions), 'app connect');
    return new LibraryPair(node, app, a);
  }

  /** Resolves when both parties emitted `reconnected`. */
  rejoined(): Promise<void> {
    const once = (c: MailboxConnection): Promise<void> => new Promise((resolve) => c.once('reconnected', () => resolve()));
    return Promise.all([once(this.node), once(this.app)]).then(() => undefined);
  }

  async next(conn: MailboxConnection): Promise<number> {
    let it = this.iterators.get(conn);
    if (!it) {
      it = conn[Symbol.asyncIterator]();
      this.iterators.set(conn, it);
    }
    const r = await bounded(it.next(), 'a message');
    assert.ok(!r.done, 'the connection ended');
    return Number(Buffer.from(r.value).toString());
  }

  /** Sends `from..to` each way and checks both sides receive exactly that, in order. */
  async exchange(from: number, to: number): Promise<void> {
    for (const [writer, reader] of [
      [this.node, this.app],
      [this.app, this.node],
    ] as const) {
      for (let i = from; i <= to; i++) await bounded(writer.send(Buffer.from(String(i))), 'send');
      for (let i = from; i <= to; i++) assert.equal(await this.next(reader), i, 'in order, once');
    }
  }

  /**
   * Traffic in flight across a move: the node sends numbers every STREAM_PACE_MS until STREAM_AFTER_REJOIN
   * went after `rejoined`. `underway` resolves once STREAM_BEFORE_KILL went; `check()` then reads what the
   * app got and asserts what may be asked of a move: what was in flight may be lost (no Go-Back-N here), what
   * arrives is never duplicated or reordered, and everything sent after the re-join arrives. Returns how many
   * arrived of how many were sent.
   */
  stream(rejoined: Promise<void>): { underway: Promise<void>; check(): Promise<{ arrived: number; sent: number }> } {
    let back = false;
    void rejoined.then(() => (back = true));
    let streaming!: () => void;
    const underway = new Promise<void>((resolve) => (streaming = resolve));
    const sending = (async (): Promise<number> => {
      let n = STREAM_FROM;
      let after = 0;
      while (after < STREAM_AFTER_REJOIN && n < STREAM_FROM + STREAM_MAX) {
        await this.node.send(Buffer.from(String(n++)));
        if (n === STREAM_FROM + STREAM_BEFORE_KILL) streaming();
        if (back) after++;
        await new Promise((r) => setTimeout(r, STREAM_PACE_MS));
      }
      return n - 1;
    })();
    // A test that fails before check() leaves the loop to fail on closed parties: not an unhandled rejection.
    sending.catch(() => undefined);
    const check = async (): Promise<{ arrived: number; sent: number }> => {
      const lastSent = await bounded(sending, 'the node to send across the move');
      const streamed: number[] = [];
      while (streamed.length === 0 || (streamed.at(-1) as number) < lastSent) streamed.push(await this.next(this.app));
      assert.ok(streamed.every((n, i) => i === 0 || n > streamed[i - 1]), 'a number came twice or out of order');
      const tail = streamed.slice(-STREAM_AFTER_REJOIN);
      assert.deepEqual(tail, Array.from({ length: STREAM_AFTER_REJOIN }, (_, i) => lastSent - STREAM_AFTER_REJOIN + 1 + i), 'what was sent after the re-join arrived whole');
      return { arrived: streamed.length, sent: lastSent - STREAM_FROM + 1 };
    };
    return { underway, check };
  }

  async close(): Promise<void> {
    await Promise.all([this.node.close(), this.app.close()]);
  }
}

describe('cluster failover: relays die, stall and drain; etcd goes away', () => {
  let etcd: EtcdCluster;
  const relays: RunningServer[] = [];
  const pairs: LibraryPair[] = [];
  const live = (): RunningServer[] => relays.filter((r) => r.process.exitCode === null && r.process.signalCode === null);

  before(async () => {
    etcd = await startEtcd(3);
    for (let i = 0; i < 3; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-${i}`, config: RELAY_CONFIG }));
  });
  afterEach(async () => {
    await Promise.all(pairs.splice(0).map((p) => p.close()));
  });
  after(async () => {
    for (const relay of relays) {
      relay.process.kill('SIGCONT');
      await relay.stop();
    }
    await etcd.stop();
  });

  test(`kill -9 of the owning relay: both library parties are back within TTL + 3 s (${REJOIN_BOUND_MS} ms), nothing duplicated or reordered, each after one held lookup`, async (t) => {
    // An attempt's deadline shorter than the TTL: a held lookup outlasts it (the deadline counts from the hold's end).
    const pair = await LibraryPair.open(live().map((r) => r.address), { connectTimeoutMs: CONNECT_TIMEOUT_MS });
    pairs.push(pair);
    await pair.exchange(1, MESSAGES);
    const home = relays.find((r) => r.address === pair.node.relay);
    assert.ok(home, `the node's relay ${pair.node.relay} is one of ours`);
    assert.equal(pair.app.relay, pair.node.relay, 'both parties on one relay');

    const rejoined = pair.rejoined();
    // What each party made of the loss, and where it dialed first: the dead relay (a resume), before any lookup.
    const firstLoss = (c: MailboxConnection): Promise<ReconnectingInfo> => new Promise((resolve) => c.once('reconnecting', resolve));
    const firstDial = (c: MailboxConnection): Promise<DialInfo> => new Promise((resolve) => c.once('dial', resolve));
    const losses = Promise.all([firstLoss(pair.node), firstLoss(pair.app)]);
    const dials = Promise.all([firstDial(pair.node), firstDial(pair.app)]);
    const survivors = live().filter((r) => r !== home);
    const lookupsAnswered = async (): Promise<number> => (await Promise.all(survivors.map((r) => metricSum(r, 'hashmail_directory_lookups_total')))).reduce<number>((x, n) => x + (n ?? 0), 0);
    const lookupsBefore = await lookupsAnswered();
    const errors: string[] = [];
    for (const c of [pair.node, pair.app]) c.on('reconnecting', (info: ReconnectingInfo) => errors.push(info.error.name));
    // Traffic in flight across the kill: the node keeps sending numbers (the app reads them once the stream is over).
    const stream = pair.stream(rejoined);
    await bounded(stream.underway, 'the stream under way');
    const killedAt = Date.now();
    home.process.kill('SIGKILL');
    for (const loss of await losses) assert.ok(loss.error instanceof LinkDropped, `a killed relay is a dropped link over both transports, not ${loss.error.name}`);
    for (const dial of await dials) assert.deepEqual(dial, { relay: home.address, via: 'resume' });
    await bounded(rejoined, 'both parties re-joined', REJOIN_BOUND_MS);
    const took = Date.now() - killedAt;
    const lookups = (await lookupsAnswered()) - lookupsBefore;
    t.diagnostic(`both parties re-joined ${took} ms after kill -9 (TTL ${TTL_MS} ms) on ${pair.node.relay}; ${lookups} lookups; reconnecting after ${errors.join(', ')}`);
    assert.ok(!errors.includes('ConnectTimeout'), `no attempt timed out while its lookup was held: ${errors.join(', ')}`);
    // Each party: the refused re-dial of its relay, then one lookup held until the lease went (and at most one more,
    // should its first lookup have been answered in the instant before the dead relay's registration went).
    assert.ok(lookups <= 4, `${lookups} lookups answered for 2 parties: the parties polled instead of holding one lookup each`);
    assert.notEqual(pair.node.relay, home.address);
    assert.equal(pair.app.relay, pair.node.relay, 'both parties on one relay again');
    const { arrived, sent } = await stream.check();
    t.diagnostic(`${arrived} of ${sent} numbers streamed across the kill arrived`);
    await pair.exchange(MESSAGES + 1, 2 * MESSAGES);
  });

  test('a relay restarted with the same data dir revokes its old leases before it serves: its session moves at once, not after the TTL', async (t) => {
    // A fresh relay whose data dir we keep, with a TTL the test never waits out: "at once" cannot be an expiry.
    const longTtl = { directory: { ...RELAY_CONFIG.directory, leaseTtlMs: RESTART_TTL_MS } };
    const dataDir = mkdtempSync(join(tmpdir(), 'hashmail-relay-keep-'));
    t.after(() => rmSync(dataDir, { recursive: true, force: true }));
    const first = await startRelay({ etcd: etcd.etcdFlag, id: 'relay-restart', dataDir, config: longTtl });
    relays.push(first);
    // Load-aware placement favours the empty newcomer; open sessions until one lands there.
    let pair: LibraryPair | null = null;
    // Lookups go to the restarting relay first, then to the others (the client moves on from an instance that does not answer).
    const servers = [first.address, ...live().filter((r) => r !== first).map((r) => r.address)];
    for (let i = 0; i < 12 && pair === null; i++) {
      const candidate = await LibraryPair.open(servers);
      if (candidate.node.relay === first.address) pair = candidate;
      else await candidate.close();
    }
    assert.ok(pair, 'a session landed on the restarting relay');
    pairs.push(pair);
    await pair.exchange(1, 10);
    const client = new Etcd3({ hosts: etcd.endpoints });
    t.after(() => client.close());
    const oldLease = await mappingLease(client, routeOfSid(pair.sid));
    // Should the test fail before the restart revokes it, the killed relay's lease must not outlive it by a minute.
    t.after(async () => {
      const revoker = new Etcd3({ hosts: etcd.endpoints });
      await revoker.leaseClient.leaseRevoke({ ID: oldLease }).catch(() => undefined);
      revoker.close();
    });

    const rejoined = pair.rejoined();
    const killedAt = Date.now();
    first.process.kill('SIGKILL');
    await first.exited;
    assert.ok((await leaseTtlSeconds(client, oldLease)) > 0, 'the killed relay\'s lease outlives it');
    const second = await startRelay({ etcd: etcd.etcdFlag, id: 'relay-restart', dataDir, config: longTtl });
    relays.push(second);
    // Healthy means registered, and registering comes after the revocation of the previous run's leases.
    assert.equal(await leaseTtlSeconds(client, oldLease), -1, 'the previous run\'s lease is gone once the restarted relay serves');
    await bounded(rejoined, 'both parties re-joined after the restart', 15_000);
    const took = Date.now() - killedAt;
    t.diagnostic(`re-joined ${took} ms after kill -9 with a restart (TTL ${RESTART_TTL_MS} ms)`);
    assert.ok(took < RESTART_TTL_MS, `took ${took} ms: the old leases were not revoked`);
    await pair.exchange(11, 20);
    // The later tests count on the short TTL everywhere: this relay leaves (a drain, exit 0).
    await pair.close();
    assert.equal(await second.stop(), 0);
  });
  test('kill -9 where the host still answers: the relay a party asks finds nothing listening at the owner\'s address and, once the owner has missed its keepalives, revokes its leases, so the session moves before the TTL; a live owner named unreachable keeps them', async (t) => {
    // A TTL the test never waits out: the revocation comes once the lease has under two thirds of it left, less 1 s.
    const longTtl = { directory: { ...RELAY_CONFIG.directory, leaseTtlMs: 30_000 } };
    const doomed = await startRelay({ etcd: etcd.etcdFlag, id: 'relay-refusing', config: longTtl });
    relays.push(doomed);
    let pair: LibraryPair | null = null;
    for (let i = 0; i < 12 && pair === null; i++) {
      const candidate = await LibraryPair.open(live().map((r) => r.address));
      if (candidate.node.relay === doomed.address) pair = candidate;
      else await candidate.close();
    }
    assert.ok(pair, 'a session landed on the relay to be killed');
    pairs.push(pair);
    await pair.exchange(1, 10);
    const survivors = live().filter((r) => r !== doomed);
    const revokedBy = async (): Promise<number> => (await Promise.all(survivors.map((r) => metricSum(r, 'hashmail_directory_owners_revoked_total')))).reduce<number>((x, n) => x + (n ?? 0), 0);

    // A party that claims the live owner is unreachable: the relay asked probes it, it answers, nothing is revoked.
    const liveOwner = ownerOf(await grpcLookup(survivors[0].address, routeOfSid(pair.sid)));
    assert.equal(liveOwner.id, 'relay-refusing');
    const revokedBefore = await revokedBy();
    const held = await grpcLookup(survivors[0].address, routeOfSid(pair.sid), false, { unreachable: liveOwner.id, unreachableStartedAt: liveOwner.startedAt, waitMs: 300 });
    assert.equal(ownerOf(held).id, 'relay-refusing', 'the live owner still owns the session');
    assert.equal(await revokedBy(), revokedBefore, 'a live owner keeps its leases');

    const rejoined = pair.rejoined();
    const killedAt = Date.now();
    doomed.process.kill('SIGKILL');
    await doomed.exited;
    await bounded(rejoined, 'both parties re-joined', 25_000);
    t.diagnostic(`re-joined ${Date.now() - killedAt} ms after kill -9 (TTL 30000 ms) on ${pair.node.relay}`);
    assert.notEqual(pair.node.relay, doomed.address);
    assert.equal(pair.app.relay, pair.node.relay, 'both parties on one relay again');
    assert.ok((await revokedBy()) > revokedBefore, 'a survivor revoked the dead relay\'s leases');
    const revoking = survivors.flatMap((r) => r.logs).find((l) => String(l.msg).includes('revoked its leases') && l.instance === 'relay-refusing');
    assert.ok(revoking, 'the revoking relay says which instance it revoked');
    // Its registration is gone from etcd, not waiting out the TTL.
    const client = new Etcd3({ hosts: etcd.endpoints });
    try {
      const keys = await client.getAll().prefix('/hashmail/instances/').keys();
      assert.ok(!keys.includes('/hashmail/instances/relay-refusing'), `still registered: ${keys.join(', ')}`);
    } finally {
      client.close();
    }
    await pair.exchange(11, 20);
  });

  test('a live relay whose advertised address refuses connections keeps its leases, however often a party names it unreachable; a warning says its address refuses', async (t) => {
    const closedPort = REFUSING_PORT;
    const misadvertised = await startRelay({ etcd: etcd.etcdFlag, id: 'relay-misadvertised', config: RELAY_CONFIG, extraArgs: ['--advertise', `127.0.0.1:${closedPort}`] });
    t.after(() => misadvertised.stop());
    const asker = live().find((r) => r !== misadvertised) as RunningServer;
    // A session placed on it (load-aware placement favours the empty newcomer).
    let route: string | null = null;
    let owner: { id: string; address: string; startedAt?: number } | null = null;
    for (let i = 0; i < 24 && route === null; i++) {
      const candidate = routeOfSid(sidPair()[0]);
      const placed = ownerOf(await grpcLookup(asker.address, candidate, true));
      if (placed.id === 'relay-misadvertised') [route, owner] = [candidate, placed];
    }
    assert.ok(route && owner, 'a session placed on the misadvertised relay');
    const revokedBefore = (await metricSum(asker, 'hashmail_directory_owners_revoked_total')) ?? 0;
    const held = await grpcLookup(asker.address, route, false, { unreachable: owner.id, unreachableStartedAt: owner.startedAt, waitMs: 300 });
    assert.equal(ownerOf(held).id, 'relay-misadvertised');
    await until(() => asker.logs.some((l) => String(l.msg).includes('keeps renewing its lease') && l.instance === 'relay-misadvertised'), STEP_MS, 'the warning that its address refuses');
    assert.equal((await metricSum(asker, 'hashmail_directory_owners_revoked_total')) ?? 0, revokedBefore, 'no revocation');
    assert.equal(ownerOf(await grpcLookup(asker.address, route)).id, 'relay-misadvertised', 'it still owns its session');
    assert.equal((await misadvertised.admin('/readyz')).status, 200, 'it never lost its lease');
  });

  test('SIGSTOP past the TTL, then SIGCONT: the session was placed elsewhere, the stalled relay ends its streams, drops the session, never serves it again, and registers anew', async (t) => {
    const watcher = await member(etcd.endpoints, null);
    t.after(() => watcher.close());
    const [a, b] = sidPair();
    const route = routeOfSid(a);
    // The relay the session is placed on is the one stalled.
    const home = ownerOf(await grpcLookup(live()[0].address, route, true)).address;
    const owner = relays.find((r) => r.address === home) as RunningServer;
    const parties: V2Party[] = [grpcParty(owner.address), grpcParty(owner.address)];
    t.after(() => closeParties(parties));
    await parties[0].hello({ sid: a });
    await parties[1].hello({ sid: b });
    await parties[0].expectPresence(true);
    const ownerId = ownerOf(await grpcLookup(owner.address, route)).id;

    owner.process.kill('SIGSTOP');
    try {
      await until(() => !watcher.instances().some((i) => i.id === ownerId), TTL_MS + 5000, 'the stalled relay\'s registration expired');
      const other = live().find((r) => r !== owner) as RunningServer;
      const moved = ownerOf(await grpcLookup(other.address, route, true));
      assert.notEqual(moved.id, ownerId, 'placed again on a live relay');
    } finally {
      owner.process.kill('SIGCONT');
    }
    // Its streams end: it cannot prove it owns the session.
    for (const party of parties) await party.expectError(UNAVAILABLE, /look up the session again/, { skipPresence: true });
    // And it never serves the session again: until it has registered anew it cannot prove its view current and
    // names no owner ("directory unavailable", or the new owner if it registered already); then it sends a Hello
    // to the new owner.
    const movedTo = ownerOf(await grpcLookup(live().find((r) => r !== owner)!.address, route)).address;
    const lateHello = async (): Promise<HelloRefused> => {
      const late = grpcParty(owner.address);
      parties.push(late);
      const refused = await late.hello({ sid: a }).then(
        () => assert.fail('the stalled relay served a session it no longer owns'),
        (err: unknown) => err as HelloRefused,
      );
      assert.ok(refused instanceof HelloRefused);
      assert.equal(refused.error?.code, UNAVAILABLE);
      return refused;
    };
    const early = await lateHello();
    assert.ok(early.error?.relayAddress === movedTo || (early.error?.relayAddress ?? '') === '', `named ${early.error?.relayAddress}`);
    await until(() => watcher.instances().some((i) => i.id === ownerId), STEP_MS, 'the stalled relay registered anew');
    let redirected = '';
    for (let i = 0; i < 50 && redirected !== movedTo; i++) {
      redirected = (await lateHello()).error?.relayAddress ?? '';
      if (redirected !== movedTo) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(redirected, movedTo, 'registered anew, it sends a Hello for the moved session to its new owner');
    let ready = 0;
    for (let i = 0; i < 100 && ready !== 200; i++) {
      ready = (await owner.admin('/readyz')).status;
      if (ready !== 200) await new Promise((r) => setTimeout(r, 100));
    }
    assert.equal(ready, 200, '/readyz once registered again');
    // The fenced session is dropped there, not kept (its boxes counted as load and against limits) until its
    // stale timeout: fencing drops what it ended.
    assert.equal(await owner.metric('hashmail_sessions'), 0, 'the fenced session\'s boxes are gone');
    assert.equal(await owner.metric('hashmail_mailbox_count'), 0);
  });

  test('etcd: one member of three lost changes nothing; all lost: placed sessions relay, placements fail UNAVAILABLE; back: placements work, no restart of ours', async () => {
    // Losing the leader costs an election (1-2 s) during which no keepalive is answered. Relays keep their
    // leases through it at the default TTL; at this file's 3 s they may rightly fence (their lease no longer
    // provable), which is the other tests' subject, not this one's. So: relays at the default TTL here.
    await Promise.all(live().map((r) => r.stop()));
    for (let i = 0; i < 3; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-etcd-${i}`, config: DEFAULT_TTL_CONFIG }));
    const pair = await LibraryPair.open(live().map((r) => r.address));
    pairs.push(pair);
    await pair.exchange(1, 10);
    const placedRoute = routeOfSid(randomBytes(64));
    const asked = live()[0];
    const placed = ownerOf(await grpcLookup(asked.address, placedRoute, true));

    // The leader: its loss costs one election (1-2 s), which a placement that got no answer in time rides out
    // with one more try (EtcdDirectory.placeThroughElection); the first placements below run during it.
    await (await leaderOf(etcd)).kill();
    for (const relay of live()) {
      assert.ok(ownerOf(await grpcLookup(relay.address, routeOfSid(randomBytes(64)), true)).address, 'placement with 2 of 3 members');
      assert.deepEqual(ownerOf(await grpcLookup(relay.address, placedRoute)), placed);
    }
    await pair.exchange(11, 20);

    await Promise.all(etcd.members.map((m) => m.kill()));
    try {
      // Placed sessions keep relaying and are still found (from the cache), for as long as the lease can be proven.
      await pair.exchange(21, 30);
      assert.deepEqual(ownerOf(await grpcLookup(asked.address, placedRoute)), placed);
      const refused = await grpcLookup(asked.address, routeOfSid(randomBytes(64)), true);
      assert.deepEqual(refused, { ok: false, code: UNAVAILABLE, details: 'directory unavailable' });
    } finally {
      await Promise.all(etcd.members.map((m) => m.restart()));
    }
    // Back by itself: placements succeed again on every relay (the relays may have re-registered meanwhile).
    for (const relay of live()) {
      let answer: GrpcLookupAnswer = { ok: false, code: 0, details: '' };
      for (let i = 0; i < 100 && !answer.ok; i++) {
        answer = await grpcLookup(relay.address, routeOfSid(randomBytes(64)), true);
        if (!answer.ok) await new Promise((r) => setTimeout(r, 100));
      }
      assert.ok(answer.ok, `placement via ${relay.address} after etcd returned: ${JSON.stringify(answer)}`);
    }
  });

  test(`drain under load: SIGTERM one of three relays with ${LOAD_PAIRS} library pairs on the cluster: no new session lands on it, each of its pairs moves with both parties to one other relay, it exits 0 within the deadline`, async (t) => {
    for (let i = 0; live().length < 3; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-load-${i}`, config: RELAY_CONFIG }));
    const three = live().slice(0, 3);
    const addresses = three.map((r) => r.address);
    const opened = await Promise.all(Array.from({ length: LOAD_PAIRS }, () => LibraryPair.open(addresses)));
    pairs.push(...opened);
    const counts = new Map(three.map((r) => [r.address, opened.filter((p) => p.node.relay === r.address).length]));
    const drained = three.reduce((best, r) => ((counts.get(r.address) ?? 0) > (counts.get(best.address) ?? 0) ? r : best));
    const moving = opened.filter((p) => p.node.relay === drained.address);
    assert.ok(moving.length > 0, 'pairs on the relay to drain');
    const staying = opened.filter((p) => p.node.relay !== drained.address);
    const rejoins = moving.map((p) => p.rejoined());
    // Under load: every pair that must move keeps streaming across the drain.
    const streams = moving.map((p, i) => p.stream(rejoins[i]));
    await bounded(Promise.all(streams.map((s) => s.underway)), 'the streams under way');
    const watcher = await member(etcd.endpoints, null);
    try {
      const sent = Date.now();
      const exited = drained.exited.then((code) => ({ code, ms: Date.now() - sent }));
      drained.process.kill('SIGTERM');
      await until(() => watcher.instances().find((i) => i.address === drained.address)?.draining === true, STEP_MS, 'the relay seen draining');
      const others = three.filter((r) => r !== drained);
      // Each placing relay learns of the drain through its own watch, an instant after etcd has it.
      for (const relay of others) {
        let seen: number | undefined;
        for (let i = 0; i < 100 && seen !== 1; i++) {
          seen = sumIn((await relay.admin('/metrics')).body, 'hashmail_directory_instances{role="relay",state="draining"}');
          if (seen !== 1) await new Promise((r) => setTimeout(r, 50));
        }
        assert.equal(seen, 1, `${relay.address} sees the drain (hashmail_directory_instances)`);
      }
      for (let i = 0; i < 20; i++) {
        const placed = ownerOf(await grpcLookup(others[i % 2].address, routeOfSid(randomBytes(64)), true));
        assert.notEqual(placed.address, drained.address, 'a new session landed on the draining relay');
      }
      await bounded(Promise.all(rejoins), 'every pair on the draining relay re-joined', DRAIN_REJOIN_MS);
      for (const p of moving) {
        assert.notEqual(p.node.relay, drained.address);
        assert.equal(p.app.relay, p.node.relay, 'both parties of a session on one relay');
      }
      const delivered = await Promise.all(streams.map((s) => s.check()));
      const exit = await bounded(exited, 'the drained relay to exit', DRAIN_REJOIN_MS);
      assert.equal(exit.code, 0);
      const arrived = delivered.reduce((n, d) => n + d.arrived, 0);
      const sentTotal = delivered.reduce((n, d) => n + d.sent, 0);
      t.diagnostic(`${moving.length} of ${LOAD_PAIRS} pairs moved off the drained relay, streaming (${arrived} of ${sentTotal} numbers arrived); it exited ${exit.ms} ms after SIGTERM`);
      // Every pair, moved or not, still exchanges.
      for (const [i, p] of [...moving, ...staying].entries()) await p.exchange(1000 + 10 * i, 1000 + 10 * i + 2);
    } finally {
      await watcher.close();
    }
  });

  test('no SID (hex, base64, base64url) in any etcd key or value, nor in any relay log', async () => {
    assert.ok(usedSids.length >= 8);
    const client = new Etcd3({ hosts: etcd.endpoints });
    try {
      const all = await client.getAll().prefix('').strings();
      const text = Object.entries(all)
        .map(([k, v]) => `${k}\n${v}`)
        .join('\n');
      assert.ok(text.length > 0, 'etcd holds the cluster state');
      const logs = relays.map((r) => JSON.stringify(r.logs)).join('\n');
      for (const sid of usedSids) {
        for (const encoding of ['hex', 'base64', 'base64url'] as const) {
          const needle = sid.toString(encoding).slice(0, 24);
          assert.ok(!text.includes(needle), `a SID (${encoding}) in etcd`);
          assert.ok(!logs.includes(needle), `a SID (${encoding}) in a relay log`);
        }
      }
    } finally {
      client.close();
    }
  });
});
