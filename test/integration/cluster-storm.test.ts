/**
 * Storm: 2,000 legacy sessions carried by two gateways, all owned by one
 * relay, which is killed (-9). Each session is a node over gRPC (gateway 1,
 * RecvStream on C2S after NewCipherBox of both boxes, as litd) and an app
 * over WebSocket (gateway 2, receive socket on S2C); every client re-dials
 * 2 s after its stream ends, with no jitter, as the deployed ones do, so the
 * whole fleet comes back in lock-step. Checked: every session's two read
 * halves are held again (by the relay started beforehand, the one left),
 * with every gateway carrying exactly those; every surviving process's RSS
 * stays within a generous bound of what it was with the same sessions
 * before; no surviving process logs an error, nor a warning about etcd.
 */
import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { pollUntil } from '../helpers/async-queue.js';
import { startCluster, type Cluster } from '../helpers/cluster.js';
import { connect, peerSid, randomSid, type Reader, type V1Client } from '../helpers/grpc-v1.js';
import { startRelay, type RunningServer } from '../helpers/server.js';
import { openReceive, type WsConn } from '../helpers/ws-v1.js';

const SESSIONS = 2000;
/** Sessions set up at once (each: two NewCipherBox, one RecvStream, one WebSocket). */
const SETUP_BATCH = 100;
/** gRPC connections the nodes share (HTTP/2 streams spread over them). */
const NODE_CONNECTIONS = 10;
const TTL_MS = 3000;
const CLIENT_RETRY_MS = 2000;
/** Bound on any one client's re-dials before it gives up (the test then fails on the count). */
const MAX_REDIALS = 30;
/** Polls of the halves' gauges: every 250 ms for at most 90 s. */
const POLL_ATTEMPTS = 360;
const POLL_MS = 250;
/** RSS after the storm at most this factor of RSS before, plus a slack (bytes). */
const RSS_FACTOR = 1.5;
const RSS_SLACK_BYTES = 96 * 1024 * 1024;
/**
 * Directory timings of every instance here. The storm's etcd calls get the
 * production deadline (2 s) and more: a loaded machine may hold one past
 * a test's usual 1 s, and this test counts every "directory unavailable".
 */
const DIRECTORY = { callTimeoutMs: 3000, loadPublishIntervalMs: 200, leaseTtlMs: TTL_MS };
/**
 * All 2,000 "clients" are this one test process on 127.0.0.1, so the
 * per-address limits (2,000 boxes, 2,000 connections by default) would count
 * them as one client and refuse half the boxes; lifted here, everything else default.
 */
const LIMITS = { maxBoxesPerAddress: 100_000, maxConnectionsPerAddress: 100_000 };
/** Causes of "directory unavailable" a storm must not produce (an etcd that failed to answer in time). */
const ETCD_FAULTS = ['etcd', 'deadline'];

async function halves(server: RunningServer, transport: string, kind: 'read' | 'write' = 'read'): Promise<number> {
  return (await server.metric(`hashmail_attached_halves{transport="${transport}",kind="${kind}"}`)) ?? 0;
}

async function rss(server: RunningServer): Promise<number> {
  const v = await server.metric('process_resident_memory_bytes');
  assert.ok(v !== undefined && v > 0, 'process_resident_memory_bytes');
  return v;
}

describe(`storm: ${SESSIONS} legacy sessions whose relay is killed`, () => {
  let cluster: Cluster;
  let stopping = false;
  const nodes: V1Client[] = [];
  const readers = new Set<Reader>();
  const sockets = new Set<WsConn>();
  const loops: Promise<void>[] = [];

  before(async () => {
    cluster = await startCluster({ relays: 1, gateways: 2, ttlMs: TTL_MS, config: { limits: LIMITS, directory: DIRECTORY } });
    for (let i = 0; i < NODE_CONNECTIONS; i++) nodes.push(connect(cluster.gateways[0].address));
  });
  after(async () => {
    stopping = true;
    for (const r of readers) r.cancel();
    await Promise.all([...sockets].map((s) => s.close()));
    await Promise.all(loops);
    for (const n of nodes) n.close();
    await cluster?.stop();
  });


  /** The node as litd: both boxes, then RecvStream C2S; 2 s after it ends (or a call fails), again. */
  async function nodeLoop(node: V1Client, c2s: Buffer, s2c: Buffer, attached: () => void): Promise<void> {
    for (let dial = 0; dial < MAX_REDIALS && !stopping; dial++) {
      try {
        await node.ensureBox(c2s);
        await node.ensureBox(s2c);
        const reader = node.openReader(c2s);
        readers.add(reader);
        attached();
        await reader.status;
        readers.delete(reader);
      } catch {
        // retried below, as litd does
      }
      if (!stopping) await sleep(CLIENT_RETRY_MS);
    }
  }

  /** The app's receive socket: re-dialled 2 s after any end (a "stream not found" frame ends it too). */
  async function appLoop(port: number, s2c: Buffer): Promise<void> {
    for (let dial = 0; dial < MAX_REDIALS && !stopping; dial++) {
      try {
        const conn = await openReceive(port, s2c);
        sockets.add(conn);
        await conn.closed;
        sockets.delete(conn);
      } catch {
        // a refused handshake is retried as any failure
      }
      if (!stopping) await sleep(CLIENT_RETRY_MS);
    }
  }

  test(`${SESSIONS} sessions come back after kill -9 of their relay; memory bounded; no error logged`, { timeout: 180_000 }, async (t) => {
    const [gw1, gw2] = cluster.gateways;
    const doomed = cluster.relays[0];
    const setupStart = Date.now();
    for (let b = 0; b < SESSIONS; b += SETUP_BATCH) {
      const ready: Promise<void>[] = [];
      for (let i = b; i < Math.min(SESSIONS, b + SETUP_BATCH); i++) {
        const s2c = randomSid();
        const c2s = peerSid(s2c);
        let opened!: () => void;
        ready.push(new Promise<void>((resolve) => (opened = resolve)));
        // The app dials once the node's boxes exist, as an LNC app's first successful receive does.
        loops.push(nodeLoop(nodes[i % NODE_CONNECTIONS], c2s, s2c, () => {
          if (opened) {
            const o = opened;
            opened = undefined as unknown as () => void;
            o();
            loops.push(appLoop(gw2.port, s2c));
          }
        }));
      }
      await Promise.all(ready);
    }
    const all = 2 * SESSIONS;
    await pollUntil(async () => (await halves(doomed, 'hop')) === all, `${all} read halves at the relay`, POLL_ATTEMPTS, POLL_MS);
    t.diagnostic(`${SESSIONS} sessions up in ${Date.now() - setupStart} ms`);

    // The relay that takes them over, started now so that every session above was placed on the doomed one.
    const heir = await startRelay({ etcd: cluster.etcd.etcdFlag, id: 'relay-heir', config: { directory: DIRECTORY, limits: LIMITS } });
    cluster.relays.push(heir);
    const rssBefore = { gw1: await rss(gw1), gw2: await rss(gw2), relay: await rss(doomed) };

    const killedAt = Date.now();
    doomed.process.kill('SIGKILL');
    await doomed.exited;
    let seen = { heir: 0, gw1: 0, gw2: 0 };
    await pollUntil(
      async () => {
        seen = { heir: await halves(heir, 'hop'), gw1: await halves(gw1, 'grpc'), gw2: await halves(gw2, 'websocket') };
        return seen.heir === all && seen.gw1 === SESSIONS && seen.gw2 === SESSIONS;
      },
      `every session back at the heir`,
      POLL_ATTEMPTS,
      POLL_MS,
    ).catch((err: Error) => assert.fail(`${err.message}: ${JSON.stringify(seen)} of ${all} read halves`));
    t.diagnostic(`all ${SESSIONS} sessions back ${Date.now() - killedAt} ms after kill -9 (TTL ${TTL_MS} ms, clients retry every ${CLIENT_RETRY_MS} ms)`);

    const rssAfter = { gw1: await rss(gw1), gw2: await rss(gw2), relay: await rss(heir) };
    t.diagnostic(`RSS before ${JSON.stringify(rssBefore)}, after ${JSON.stringify(rssAfter)} (bytes)`);
    for (const k of ['gw1', 'gw2', 'relay'] as const) {
      assert.ok(rssAfter[k] <= rssBefore[k] * RSS_FACTOR + RSS_SLACK_BYTES, `${k}: RSS ${rssAfter[k]} after, ${rssBefore[k]} before`);
    }

    const survivors: [string, RunningServer][] = [
      ['gateway-0', gw1],
      ['gateway-1', gw2],
      ['relay-heir', heir],
    ];
    for (const [name, p] of survivors) {
      const unavailable: Record<string, number> = {};
      for (const cause of ['etcd', 'deadline', 'txn_queue', 'rate_cap', 'not_converged', 'closed']) {
        unavailable[cause] = (await p.metric(`hashmail_directory_unavailable_total{cause="${cause}"}`)) ?? 0;
      }
      t.diagnostic(`${name}: directory unavailable by cause ${JSON.stringify(unavailable)}`);
      for (const cause of ETCD_FAULTS) assert.equal(unavailable[cause], 0, `${name}: lookups failed by etcd (${cause})`);
      const bad = p.logs.filter((l) => Number(l.level) >= 50 || (Number(l.level) >= 40 && /etcd|lease|directory/i.test(JSON.stringify(l))));
      assert.deepEqual(bad, [], `${name}: errors, or warnings about etcd, in its log`);
    }
  });
});
