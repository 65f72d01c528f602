/**
 * `hashmail serve` answers both route lookups with its own id and address
 * (the in-memory directory owns every session), so clients need no special
 * case for a single node; v2 parties still meet on it.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, before, test } from 'node:test';
import { routeOfSid } from '../../src/directory/route.js';
import { grpcLookup, httpLookup } from '../helpers/lookup.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { closeParties, grpcParty, wsParty } from '../helpers/v2-peers.js';

const INVALID_ARGUMENT = 3;
const SERVE_ID = 'serve';

let server: RunningServer;
before(async () => {
  server = await startServer();
});
after(async () => {
  assert.equal(await server.stop(), 0);
});

const route = (): string => routeOfSid(randomBytes(64));

/** Serve's own answer: its id, address and registration (started_at, the same in every answer of this run). */
async function serveOwner(): Promise<{ id: string; address: string; startedAt: number }> {
  const answer = await grpcLookup(server.address, route());
  assert.ok(answer.ok);
  const startedAt = answer.owner.startedAt ?? 0;
  assert.ok(Number.isSafeInteger(startedAt) && startedAt > 1_700_000_000_000, `started_at ${startedAt}: ms since the epoch`);
  return { id: SERVE_ID, address: server.address, startedAt };
}

test('gRPC ServerForMailbox: serve names itself, with or without create; a bad route is INVALID_ARGUMENT', async () => {
  const self = await serveOwner();
  assert.deepEqual(await grpcLookup(server.address, route()), { ok: true, owner: self });
  assert.deepEqual(await grpcLookup(server.address, route(), true), { ok: true, owner: self });
  assert.deepEqual(await grpcLookup(server.address, 'not-a-route'), { ok: false, code: INVALID_ARGUMENT, details: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' });
  assert.deepEqual(await grpcLookup(server.address, `${route()}=`), { ok: false, code: INVALID_ARGUMENT, details: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' });
  // The same 32 bytes with a non-zero padding bit in the last character: another key, no SID's route.
  const real = route();
  const nonCanonical = real.slice(0, 42) + (real[42] === 'A' ? 'B' : String.fromCharCode(real.charCodeAt(42) + 1));
  assert.deepEqual(Buffer.from(nonCanonical, 'base64url'), Buffer.from(real, 'base64url'), 'decodes to the same bytes');
  assert.deepEqual(await grpcLookup(server.address, nonCanonical), { ok: false, code: INVALID_ARGUMENT, details: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' });
});

test('GET /v2/relay: 200 with serve\'s own address, 400 for a bad route, CORS for any origin incl. preflight', async () => {
  const self = await serveOwner();
  const foundBefore = (await server.metric('hashmail_directory_lookups_total{result="found"}')) ?? 0;
  const badBefore = (await server.metric('hashmail_directory_lookups_total{result="bad_route"}')) ?? 0;
  const ok = await httpLookup(server.port, `route=${route()}&create=1`, { headers: { origin: 'https://app.example' } });
  assert.equal(ok.status, 200);
  // startedAt: when serve registered (ms since the epoch), as gRPC's started_at: it tells one run of an id from the next (held lookups).
  assert.deepEqual(JSON.parse(ok.body), self);
  assert.equal(ok.headers['access-control-allow-origin'], '*');
  assert.match(String(ok.headers['content-type']), /^application\/json/);

  const bad = await httpLookup(server.port, 'route=short');
  assert.equal(bad.status, 400);
  assert.deepEqual(JSON.parse(bad.body), { error: { code: INVALID_ARGUMENT, message: 'route must be 43 base64url characters, canonically encoded (SHA-256, unpadded)' } });
  assert.equal(bad.headers['access-control-allow-origin'], '*');
  const missing = await httpLookup(server.port, '');
  assert.equal(missing.status, 400);

  const preflight = await httpLookup(server.port, `route=${route()}`, {
    method: 'OPTIONS',
    headers: { origin: 'https://app.example', 'access-control-request-method': 'GET', 'access-control-request-headers': 'x-custom' },
  });
  assert.equal(preflight.status, 204);
  assert.equal(preflight.headers['access-control-allow-origin'], '*');
  assert.match(String(preflight.headers['access-control-allow-methods']), /GET/);
  assert.equal(preflight.headers['access-control-allow-headers'], 'x-custom');

  const post = await httpLookup(server.port, `route=${route()}`, { method: 'POST' });
  assert.equal(post.status, 405);
  // The legacy gateway still owns every other path.
  const legacy = await httpLookup(server.port, '', { path: '/v1/nothing-here' });
  assert.equal(legacy.status, 404);
  assert.equal(await server.metric('hashmail_directory_lookups_total{result="found"}'), foundBefore + 1);
  assert.equal(await server.metric('hashmail_directory_lookups_total{result="bad_route"}'), badBefore + 2);
});

test('a v2 party over gRPC meets one over WebSocket on serve, after looking the route up', async () => {
  const a = randomBytes(64);
  const b = Buffer.from(a);
  b[63] ^= 1;
  const found = await grpcLookup(server.address, routeOfSid(a), true);
  assert.ok(found.ok && found.owner.address === server.address);
  const pa = grpcParty(server.address);
  const pb = await wsParty(server.port);
  try {
    await pa.hello({ sid: a });
    await pb.hello({ sid: b });
    await pa.expectPresence(true);
    await pa.send(Buffer.from('ping'));
    assert.equal((await pb.nextData()).toString(), 'ping');
    await pb.send(Buffer.from('pong'));
    assert.equal((await pa.nextData()).toString(), 'pong');
  } finally {
    await closeParties([pa, pb]);
  }
});

test('a held lookup (unreachable, wait_ms) at serve answers at once: one process, nothing can move; a bad wait_ms or unreachable_started_at is 400', async () => {
  const self = await serveOwner();
  // Serve's answer is always itself, so a wait could only run out: it is not held at all (the test's own deadline is 10 s).
  assert.deepEqual(await grpcLookup(server.address, route(), true, { unreachable: SERVE_ID, waitMs: 60_000 }), { ok: true, owner: self });
  const held = await httpLookup(server.port, `route=${route()}&unreachable=${SERVE_ID}&wait_ms=60000`);
  assert.equal(held.status, 200);
  assert.deepEqual(JSON.parse(held.body), self);
  assert.equal(await server.metric('hashmail_directory_lookups_waiting'), 0);
  for (const wait of ['soon', '-1', '1.5', '99999999999']) {
    const bad = await httpLookup(server.port, `route=${route()}&wait_ms=${wait}`);
    assert.equal(bad.status, 400, `wait_ms=${wait}`);
    assert.deepEqual(JSON.parse(bad.body), { error: { code: INVALID_ARGUMENT, message: 'malformed request: wait_ms must be a whole number of milliseconds' } });
  }
  for (const startedAt of ['yesterday', '-1', '1e12', '9999999999999999']) {
    const bad = await httpLookup(server.port, `route=${route()}&unreachable=${SERVE_ID}&unreachable_started_at=${startedAt}&wait_ms=100`);
    assert.equal(bad.status, 400, `unreachable_started_at=${startedAt}`);
    assert.deepEqual(JSON.parse(bad.body), { error: { code: INVALID_ARGUMENT, message: 'malformed request: unreachable_started_at must be a whole number of milliseconds' } });
  }
});
