/**
 * Held lookups: ServerForMailboxRequest's `unreachable` and `wait_ms` on the
 * wire, and lookupRoute holding an answer that would repeat what the party
 * already failed with (FakeDirectory stands in for the directory's watch).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { test } from 'node:test';
import { MemoryDirectory } from '../../src/directory/memory-directory.js';
import { lookupRoute } from '../../src/directory/route-lookup.js';
import { KeyedQuota } from '../../src/session/keyed-quota.js';
import { HashmailError } from '../../src/session/errors.js';
import { decodeServerForMailboxRequest, decodeServerForMailboxResponse, encodeServerForMailboxRequest, encodeServerForMailboxResponse } from '../../src/wire/v2-frames.js';
import { httpLookupAnswer, relayLookupUrl } from '../../src/client/relay-lookup.js';
import { parseServer } from '../../src/client/options.js';
import { FakeDirectory } from '../helpers/fake-directory.js';

const HOUR_MS = 3_600_000;
const TEST_TIMEOUT = { timeout: 10_000 };
const route = (): string => randomBytes(32).toString('base64url');
const noCount = (): void => undefined;

test('ServerForMailboxRequest: unreachable (3) and wait_ms (4) round-trip; without them the bytes are the old ones', () => {
  const r = route();
  const plain = encodeServerForMailboxRequest({ route: r, create: true });
  assert.deepEqual(Buffer.from(plain), Buffer.concat([Buffer.from([0x0a, 43]), Buffer.from(r), Buffer.from([0x10, 1])]));
  assert.deepEqual(decodeServerForMailboxRequest(plain), { route: r, create: true });
  const held = encodeServerForMailboxRequest({ route: r, create: false, unreachable: 'relay-a', waitMs: 5000 });
  assert.deepEqual(decodeServerForMailboxRequest(held), { route: r, create: false, unreachable: 'relay-a', waitMs: 5000 });
  // wait_ms 0 is the proto3 default: not written.
  assert.deepEqual(Buffer.from(encodeServerForMailboxRequest({ route: r, create: false, waitMs: 0 })), Buffer.from(encodeServerForMailboxRequest({ route: r, create: false })));
  // A string where wait_ms (a varint) belongs is malformed.
  assert.throws(() => decodeServerForMailboxRequest(Buffer.from([0x22, 1, 0x41])), /wait_ms/);
});

test('unreachable_started_at (request 5) and started_at (response 3) round-trip as epoch milliseconds; absent, the bytes are the old ones', () => {
  const r = route();
  const startedAt = 1_796_661_478_257;
  const req = { route: r, create: false, unreachable: 'relay-a', waitMs: 15_000, unreachableStartedAt: startedAt };
  assert.deepEqual(decodeServerForMailboxRequest(encodeServerForMailboxRequest(req)), req);
  assert.deepEqual(Buffer.from(encodeServerForMailboxRequest({ ...req, unreachableStartedAt: 0 })), Buffer.from(encodeServerForMailboxRequest({ route: r, create: false, unreachable: 'relay-a', waitMs: 15_000 })));
  const res = { id: 'relay-a', address: '127.0.0.1:1', startedAt };
  assert.deepEqual(decodeServerForMailboxResponse(encodeServerForMailboxResponse(res)), res);
  const old = encodeServerForMailboxResponse({ id: 'relay-a', address: '127.0.0.1:1' });
  assert.deepEqual(decodeServerForMailboxResponse(old), { id: 'relay-a', address: '127.0.0.1:1' });
  assert.deepEqual(Buffer.from(encodeServerForMailboxResponse({ ...res, startedAt: 0 })), Buffer.from(old));
  // A string where started_at (a varint) belongs is malformed.
  assert.throws(() => decodeServerForMailboxResponse(Buffer.from([0x1a, 1, 0x41])), /started_at/);
});

test('GET /v2/relay answer: startedAt read when it is a positive whole number, left out otherwise (older instances)', () => {
  const owner = (body: unknown): unknown => httpLookupAnswer({ status: 200, body: JSON.stringify(body) });
  assert.deepEqual(owner({ id: 'a', address: 'h:1', startedAt: 1_796_661_478_257 }), { kind: 'owner', id: 'a', address: 'h:1', startedAt: 1_796_661_478_257 });
  assert.deepEqual(owner({ id: 'a', address: 'h:1' }), { kind: 'owner', id: 'a', address: 'h:1' });
  assert.deepEqual(owner({ id: 'a', address: 'h:1', startedAt: '5' }), { kind: 'owner', id: 'a', address: 'h:1' });
  assert.deepEqual(owner({ id: 'a', address: 'h:1', startedAt: -1 }), { kind: 'owner', id: 'a', address: 'h:1' });
});

test('GET /v2/relay URL: &unreachable and &wait_ms only when asked to wait', () => {
  const server = parseServer('relay.example:8443', false);
  const base = { server, route: 'R', tlsSkipVerify: false, signal: new AbortController().signal };
  assert.equal(relayLookupUrl({ ...base, create: true }), 'https://relay.example:8443/v2/relay?route=R&create=1');
  assert.equal(relayLookupUrl({ ...base, create: false, wait: { unreachable: 'relay a', ms: 5000 } }), 'https://relay.example:8443/v2/relay?route=R&unreachable=relay%20a&wait_ms=5000');
  assert.equal(relayLookupUrl({ ...base, create: false, wait: { unreachable: '', ms: 2500 } }), 'https://relay.example:8443/v2/relay?route=R&wait_ms=2500');
  assert.equal(
    relayLookupUrl({ ...base, create: false, wait: { unreachable: 'relay-a', unreachableStartedAt: 1_796_661_478_257, ms: 5000 } }),
    'https://relay.example:8443/v2/relay?route=R&unreachable=relay-a&unreachable_started_at=1796661478257&wait_ms=5000',
  );
});

test('a lookup naming the owner it could not reach is held until the session moves, then names the new owner', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  d.owners.set(r, { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  const answer = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held');
  d.moveRoute(r, { id: 'relay-b', address: '127.0.0.1:2', startedAt: 2 });
  assert.deepEqual(await answer, { id: 'relay-b', address: '127.0.0.1:2', startedAt: 2 });
  assert.equal(d.waiters.waiting, 0);
});

test('a lookup naming as unreachable the very instance it asks is answered at once: the party reaches it now (a relay restarted under its id does not know it restarted)', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  await d.register({ id: 'relay-a', addresses: ['127.0.0.1:1'], version: 'test' });
  const r = route();
  d.owners.set(r, { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  assert.deepEqual(await lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount), { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  assert.equal(d.waiters.waiting, 0, 'nothing held');
});

test('a change that leaves the answer as it was (the owner turned draining, still serving) keeps the lookup held', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  d.owners.set(r, { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  const answer = lookupRoute(d, r, { create: false, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  d.waiters.ownerChanged('relay-a');
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held again');
  // Released, not yet placed again: "not placed" is no better for a party that needs the session, so still held.
  d.moveRoute(r, null);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held until placed');
  d.moveRoute(r, { id: 'relay-b', address: '127.0.0.1:2', startedAt: 2 });
  assert.equal((await answer).id, 'relay-b');
});

test('an owner restarted under the same id is not the process the party failed to reach: answered when it registers, or at once', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  const a = { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 };
  d.owners.set(r, a);
  const answer = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held against the process that did not answer');
  // relay-a restarts with its data directory: its old mapping goes, and it registers again under its id.
  d.reRegister('relay-a', 5);
  assert.deepEqual(await answer, { ...a, startedAt: 5 });
  // A party that failed just before the restart and asks just after: registered within RESTART_GRACE_MS, answered at once.
  assert.deepEqual(await lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount), { ...a, startedAt: 5 });
  assert.equal(d.waiters.waiting, 0);
});

test('a party that names the registration it could not reach: a restart of that id is answered at once, however long ago this instance saw it register', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  const restarted = { id: 'relay-a', address: '127.0.0.1:1', startedAt: 2 };
  d.owners.set(r, restarted);
  // This instance saw relay-a register again a minute before the lookup reached it (a storm queued the lookup that long):
  // judged by time, the party might have failed against the new process, and the lookup was held for its whole wait.
  d.reRegistrations.set('relay-a', performance.now() - 60_000);
  const answered = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', unreachableStartedAt: 1, ms: 2_000 } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 0, 'nothing held');
  assert.deepEqual(await answered, restarted);
  // Named as the very registration that is still the owner: held, and answered once the session moves.
  const held = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', unreachableStartedAt: 2, ms: HOUR_MS } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held against the registration that did not answer');
  d.reRegister('relay-a', 3);
  assert.deepEqual(await held, { ...restarted, startedAt: 3 });
  // Naming the current registration when it registered just now: answered at once, as the party's connection may
  // still report the refusals from before the restart (a gRPC channel in backoff fails calls with its last error).
  d.reRegistrations.set('relay-a', performance.now());
  const fresh = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', unreachableStartedAt: 3, ms: 2_000 } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 0, 'a fresh registration is not held against');
  assert.equal((await fresh).startedAt, 3);
  // Without the registration, the instance judges by time as before: a re-registration long ago keeps it held.
  d.reRegistrations.set('relay-a', performance.now() - 60_000);
  const guessed = lookupRoute(d, r, { create: true, wait: { unreachable: 'relay-a', ms: 50 } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1, 'held by the time rule');
  assert.equal((await guessed).id, 'relay-a');
});

test('one process (memory directory): nothing can move, so a held lookup answers at once', TEST_TIMEOUT, async () => {
  const d = new MemoryDirectory();
  await d.register({ id: 'serve', addresses: ['127.0.0.1:1'], version: 'test' });
  assert.equal((await lookupRoute(d, route(), { create: false, wait: { unreachable: 'serve', ms: HOUR_MS } }, noCount)).id, 'serve');
});

test('a lookup whose answer already differs from what the party failed with is answered at once', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  d.owners.set(r, { id: 'relay-b', address: '127.0.0.1:2', startedAt: 2 });
  assert.equal((await lookupRoute(d, r, { create: false, wait: { unreachable: 'relay-a', ms: HOUR_MS } }, noCount)).id, 'relay-b');
  assert.equal(d.waiters.waiting, 0);
});

test('"not placed" is held until a placement; a wait that runs out gives the same answer as before', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  const answer = lookupRoute(d, r, { create: false, wait: { unreachable: '', ms: HOUR_MS } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, 1);
  d.moveRoute(r, { id: 'relay-c', address: '127.0.0.1:3', startedAt: 3 });
  assert.equal((await answer).id, 'relay-c');

  const other = route();
  await assert.rejects(lookupRoute(d, other, { create: false, wait: { unreachable: '', ms: 5 } }, noCount), (err: unknown) => err instanceof HashmailError && err.code === 'SESSION_NOT_PLACED');
});

test('the asker going away ends the wait; the lookup answers with what it has', TEST_TIMEOUT, async () => {
  const d = new FakeDirectory();
  const r = route();
  d.owners.set(r, { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  const gone = new AbortController();
  const answer = lookupRoute(d, r, { create: false, wait: { unreachable: 'relay-a', ms: HOUR_MS, signal: gone.signal } }, noCount);
  await new Promise((resolve) => setImmediate(resolve));
  gone.abort();
  assert.equal((await answer).id, 'relay-a');
  assert.equal(d.waiters.waiting, 0);
});

test('one client address holds at most its quota of lookups; past it it is answered at once, other addresses still held', TEST_TIMEOUT, async () => {
  const PER_CLIENT = 50;
  const quota = new KeyedQuota(PER_CLIENT);
  const d = new FakeDirectory();
  const r = route();
  const gone = new AbortController();
  const held = { unreachable: '', ms: HOUR_MS, signal: gone.signal };
  const answers: Promise<unknown>[] = [];
  for (let i = 0; i < PER_CLIENT; i++) answers.push(lookupRoute(d, r, { create: false, client: '192.0.2.1', wait: held }, noCount, quota).catch(() => 'not placed'));
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, PER_CLIENT);
  assert.equal(quota.heldBy('192.0.2.1'), PER_CLIENT);
  // The same address once more: "not placed" at once, holding nothing.
  await assert.rejects(lookupRoute(d, r, { create: false, client: '192.0.2.1', wait: held }, noCount, quota), (err: unknown) => err instanceof HashmailError && err.code === 'SESSION_NOT_PLACED');
  assert.equal(d.waiters.waiting, PER_CLIENT);
  // Another address is still held.
  const other = lookupRoute(d, r, { create: false, client: '192.0.2.2', wait: held }, noCount, quota);
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(d.waiters.waiting, PER_CLIENT + 1);
  d.moveRoute(r, { id: 'relay-a', address: '127.0.0.1:1', startedAt: 1 });
  assert.equal((await other).id, 'relay-a');
  await Promise.all(answers);
  // Every answer gives its slot back.
  assert.equal(quota.heldBy('192.0.2.1'), 0);
  assert.equal(d.waiters.waiting, 0);
  gone.abort();
});
