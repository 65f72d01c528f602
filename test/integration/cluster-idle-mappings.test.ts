/**
 * A relay deletes its directory mapping of a session it no longer holds
 * (directory.releaseIdleMappingsMs): a route placed and never attached to,
 * and a session whose parties left and whose boxes timed out. A session
 * with a party attached keeps its mapping. Without this every route ever
 * placed stayed in etcd as long as its relay lived. Real etcd, a real relay.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { pollUntil } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { startRelay, type RunningServer } from '../helpers/server.js';
import { wsParty, type V2Party } from '../helpers/v2-peers.js';

/** Short grace and box timeout, so the test runs in seconds. */
const GRACE_MS = 500;
const STALE_MS = 500;
/** Polls for the release: many times the grace plus one sweep. */
const POLL_ATTEMPTS = 300;

let etcd: EtcdCluster;
let relay: RunningServer;
const parties: V2Party[] = [];

before(async () => {
  etcd = await startEtcd(1);
  relay = await startRelay({
    etcd: etcd.etcdFlag,
    config: { directory: { releaseIdleMappingsMs: GRACE_MS }, mailbox: { staleTimeoutMs: STALE_MS } },
  });
});

after(async () => {
  await Promise.all(parties.map((p) => p.close().catch(() => undefined)));
  await relay?.stop();
  await etcd?.stop();
});

/** GET /v2/relay for `route` at the relay: the HTTP status (200 placed, 404 not placed). */
async function lookupStatus(route: string, create = false): Promise<number> {
  const res = await fetch(`http://${relay.address}/v2/relay?route=${route}${create ? '&create=1' : ''}`);
  await res.arrayBuffer();
  return res.status;
}

test('a mapping with no session here is released after the grace; one with an attached party stays; a session whose parties left goes once its boxes time out', async () => {
  // Placed first, and held by an attached party for the whole test.
  const liveSid = randomBytes(64);
  const live = await wsParty(relay.port);
  parties.push(live);
  await live.hello({ sid: liveSid });
  const liveRoute = routeOfSid(liveSid);
  assert.equal(await lookupStatus(liveRoute), 200);

  // Placed by a lookup, never attached to (a party that never came, or someone filling etcd).
  const orphanRoute = routeOfSid(randomBytes(64));
  assert.equal(await lookupStatus(orphanRoute, true), 200);
  await pollUntil(async () => (await lookupStatus(orphanRoute)) === 404, 'the orphan mapping released', POLL_ATTEMPTS);
  // Released oldest first: the live session's mapping, older than the orphan's, was not idle.
  assert.equal(await lookupStatus(liveRoute), 200, 'a session with an attached party lost its mapping');
  assert.ok(((await relay.metric('hashmail_directory_idle_mappings_released_total')) ?? 0) >= 1);

  // Its party leaves: the boxes time out (mailbox.staleTimeoutMs), then the mapping goes.
  await live.close();
  await pollUntil(async () => (await lookupStatus(liveRoute)) === 404, 'the left session\'s mapping released', POLL_ATTEMPTS);
  assert.equal(await relay.metric('hashmail_directory_idle_mappings'), 0);

  // The session comes back: placed anew, as any new one.
  const back = await wsParty(relay.port);
  parties.push(back);
  await back.hello({ sid: liveSid });
  assert.equal(await lookupStatus(liveRoute), 200);
});
