/**
 * The relay's routing decisions against a fake directory, on a real
 * in-process node with real gRPC and WebSocket parties: attach here,
 * redirect with relay_address, NOT_FOUND, directory unavailable, no relay,
 * a lost route or lease ending streams, drain; and both lookups.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { startNode, type RunningNode } from '../../src/compose/node.js';
import { loadConfig } from '../../src/config/load.js';
import { routeOfSid } from '../../src/directory/route.js';
import { createLogger } from '../../src/observe/logger.js';
import { Attach } from '../../src/wire/v2-frames.js';
import { FakeDirectory } from '../helpers/fake-directory.js';
import { grpcLookup, httpLookup } from '../helpers/lookup.js';
import { closeParties, grpcParty, HelloRefused, wsParty, type TransportKind, type V2Party } from '../helpers/v2-peers.js';

const UNAVAILABLE = 14;
const NOT_FOUND = 5;
const RESOURCE_EXHAUSTED = 8;
const INVALID_ARGUMENT = 3;
const OTHER = { id: 'relay-b', address: '10.9.8.7:8443', startedAt: 1 };

let node: RunningNode;
const directory = new FakeDirectory();
let port: number;

before(async () => {
  const config = loadConfig({
    env: {},
    flags: {
      server: { listen: '127.0.0.1:0', adminListen: '127.0.0.1:0', insecure: true },
      relay: { drainSpreadMs: 200, drainDeadlineMs: 5000 },
    },
  });
  node = await startNode({ config, logger: createLogger({ ...config.log, level: 'silent' }), directory, instanceId: 'relay-a', legacy: null });
  port = Number(node.listen.slice(node.listen.lastIndexOf(':') + 1));
});

after(async () => {
  await node.stop({ revoke: true });
});

const sidPair = (): [Buffer, Buffer] => {
  const a = randomBytes(64);
  const b = Buffer.from(a);
  b[63] ^= 1;
  return [a, b];
};

async function open(kind: TransportKind): Promise<V2Party> {
  return kind === 'grpc' ? grpcParty(`127.0.0.1:${port}`) : wsParty(port);
}

async function refused(kind: TransportKind, sid: Buffer, attach = Attach.Create): Promise<HelloRefused> {
  const party = await open(kind);
  try {
    await party.hello({ sid, attach });
  } catch (err) {
    if (err instanceof HelloRefused) return err;
    throw err;
  } finally {
    await closeParties([party]);
  }
  return assert.fail('hello was welcomed');
}

for (const kind of ['grpc', 'ws'] as const) {
  test(`${kind}: a session another relay owns is refused with UNAVAILABLE naming that relay in relay_address`, async () => {
    const [sid] = sidPair();
    directory.owners.set(routeOfSid(sid), OTHER);
    const err = await refused(kind, sid);
    assert.equal(err.error?.code, UNAVAILABLE);
    assert.equal(err.error?.message, `session is served by another relay: ${OTHER.address}`);
    assert.equal(err.error?.relayAddress, OTHER.address);
    assert.equal(err.end?.code, UNAVAILABLE);
  });

  test(`${kind}: ATTACH_EXISTING of a session nobody owns is NOT_FOUND "stream not found"`, async () => {
    const [sid] = sidPair();
    const err = await refused(kind, sid, Attach.Existing);
    assert.equal(err.error?.code, NOT_FOUND);
    assert.equal(err.error?.message, 'stream not found');
    assert.equal(err.error?.relayAddress, undefined);
  });

  test(`${kind}: directory unavailable and no relay available refuse a new session`, async () => {
    directory.unavailable = true;
    try {
      const err = await refused(kind, sidPair()[0]);
      assert.equal(err.error?.code, UNAVAILABLE);
      assert.equal(err.error?.message, 'directory unavailable');
    } finally {
      directory.unavailable = false;
    }
    directory.noInstance = true;
    try {
      const err = await refused(kind, sidPair()[0]);
      assert.equal(err.error?.code, RESOURCE_EXHAUSTED);
      assert.equal(err.error?.message, 'no relay available');
    } finally {
      directory.noInstance = false;
    }
  });
}

test('a new session is placed here and both parties meet; a routeLost ends only that session, UNAVAILABLE', async () => {
  const [a, b] = sidPair();
  const [c] = sidPair();
  const pa = await open('grpc');
  const pb = await open('ws');
  const pc = await open('ws');
  try {
    await pa.hello({ sid: a });
    await pb.hello({ sid: b });
    await pc.hello({ sid: c });
    assert.equal(directory.owners.get(routeOfSid(a))?.id, 'relay-a');
    await pa.expectPresence(true);
    await pb.send(Buffer.from('hi'));
    assert.equal((await pa.nextData()).toString(), 'hi');
    assert.equal(node.core.router.partyCount, 3);
    directory.owners.set(routeOfSid(a), OTHER);
    directory.emit('routeLost', routeOfSid(a));
    await pa.expectError(UNAVAILABLE, /^session moved to another relay: look up the session again$/, { skipPresence: true });
    await pb.expectError(UNAVAILABLE, /^session moved to another relay: look up the session again$/, { skipPresence: true });
    assert.equal(node.core.router.partyCount, 1);
  } finally {
    await closeParties([pa, pb, pc]);
  }
});

test('a lost lease (fenceLost) ends every v2 stream with UNAVAILABLE "relay lost its directory lease"', async () => {
  const parties: V2Party[] = [];
  try {
    for (const kind of ['grpc', 'ws', 'grpc'] as const) {
      const party = await open(kind);
      parties.push(party);
      await party.hello({ sid: sidPair()[0] });
    }
    directory.fenced = true;
    directory.emit('fenceLost');
    for (const party of parties) {
      await party.expectError(UNAVAILABLE, /^relay lost its directory lease: look up the session again$/, { skipPresence: true });
    }
    assert.equal(node.core.router.partyCount, 0);
    // Fenced: a hello for a session mapped here is not served either.
    const [sid] = sidPair();
    directory.owners.set(routeOfSid(sid), directory.selfOwner);
    const err = await refused('grpc', sid);
    assert.equal(err.error?.code, UNAVAILABLE);
    assert.equal(err.error?.message, 'directory unavailable');
  } finally {
    directory.fenced = false;
    await closeParties(parties);
  }
});

test('gRPC ServerForMailbox and GET /v2/relay answer from the directory', async () => {
  const placed = routeOfSid(sidPair()[0]);
  directory.owners.set(placed, OTHER);
  const fresh = routeOfSid(sidPair()[0]);
  assert.deepEqual(await grpcLookup(node.listen, placed), { ok: true, owner: OTHER });
  assert.deepEqual(await grpcLookup(node.listen, fresh), { ok: false, code: NOT_FOUND, details: 'session not placed' });
  assert.deepEqual(await grpcLookup(node.listen, 'nope'), { ok: false, code: INVALID_ARGUMENT, details: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' });

  const ok = await httpLookup(port, `route=${placed}`);
  assert.equal(ok.status, 200);
  assert.deepEqual(JSON.parse(ok.body), OTHER);
  assert.equal(ok.headers['access-control-allow-origin'], '*');
  const missing = await httpLookup(port, `route=${fresh}`);
  assert.equal(missing.status, 404);
  assert.deepEqual(JSON.parse(missing.body), { error: { code: NOT_FOUND, message: 'session not placed' } });
  const created = await httpLookup(port, `route=${fresh}&create=1`);
  assert.equal(created.status, 200);
  assert.deepEqual(JSON.parse(created.body), directory.selfOwner);

  directory.unavailable = true;
  try {
    const down = await httpLookup(port, `route=${routeOfSid(sidPair()[0])}&create=1`);
    assert.equal(down.status, 503);
    assert.deepEqual(JSON.parse(down.body), { error: { code: UNAVAILABLE, message: 'directory unavailable' } });
    assert.deepEqual(await grpcLookup(node.listen, placed, true), { ok: false, code: UNAVAILABLE, details: 'directory unavailable' });
  } finally {
    directory.unavailable = false;
  }
  const metrics = await fetch(`http://${node.adminListen}/metrics`).then((r) => r.text());
  assert.match(metrics, /hashmail_directory_lookups_total\{result="found"\} [1-9]/);
  assert.match(metrics, /hashmail_directory_lookups_total\{result="unavailable"\} 2/);
});

// Last: the node stays draining.
test('drain: every session is released and its parties end together with UNAVAILABLE "relay draining"', async () => {
  const parties: V2Party[] = [];
  const routes: string[] = [];
  try {
    for (let i = 0; i < 3; i++) {
      const [a, b] = sidPair();
      routes.push(routeOfSid(a));
      for (const [kind, sid] of [['grpc', a], ['ws', b]] as const) {
        const party = await open(kind);
        parties.push(party);
        await party.hello({ sid });
      }
    }
    await node.drain();
    assert.ok(directory.draining);
    assert.deepEqual([...directory.released].sort(), [...routes].sort());
    for (const party of parties) {
      await party.expectError(UNAVAILABLE, /^relay draining: look up the session again$/, { skipPresence: true });
    }
    assert.equal(node.core.router.partyCount, 0);
    const ready = await fetch(`http://${node.adminListen}/readyz`);
    assert.equal(ready.status, 503);
  } finally {
    await closeParties(parties);
  }
});
