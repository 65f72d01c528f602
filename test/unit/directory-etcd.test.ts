/**
 * The pure parts of the etcd directory: key layout and codecs, the lease
 * proof (monotonic times fed by hand), the watch-fed cache, the txn gate.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { DirectoryUnavailableError } from '../../src/directory/directory.js';
import { DirectoryCache } from '../../src/directory/etcd/directory-cache.js';
import {
  encodeInstance,
  encodeSession,
  instanceKey,
  keyLayout,
  leaseDecimal,
  leaseHex,
  parseInstance,
  parseSession,
  prefixEnd,
  sessionKey,
  type InstanceValue,
} from '../../src/directory/etcd/keys.js';
import { FENCE_MARGIN_FRACTION, LeaseProof } from '../../src/directory/etcd/lease-proof.js';
import { EtcdLeaseInvalidError } from 'etcd3';
import type { EtcdRpc } from '../../src/directory/etcd/etcd-rpc.js';
import { Placer } from '../../src/directory/etcd/placer.js';
import { TxnGate } from '../../src/directory/etcd/txn-gate.js';
import { CreateBatcher } from '../../src/directory/etcd/create-batcher.js';

const layout = keyLayout('/hm');

function instance(id: string, overrides: Partial<InstanceValue> = {}): InstanceValue {
  return {
    id,
    role: 'relay',
    address: `${id}:1`,
    addresses: [`${id}:1`],
    load: { sessions: 0, connections: 0 },
    draining: false,
    version: 't',
    startedAt: 1,
    sessionLease: 'abc',
    ...overrides,
  };
}

test('keys: layout under the prefix, prefix end, lease ids hex <-> decimal', () => {
  assert.equal(layout.prefix, '/hm/');
  assert.equal(instanceKey(layout, 'r1'), '/hm/instances/r1');
  assert.equal(sessionKey(layout, 'R'), '/hm/sessions/R');
  assert.deepEqual(prefixEnd('/hm/'), Buffer.from('/hm0'));
  assert.deepEqual(prefixEnd('a~'), Buffer.from('a\x7f', 'latin1'));
  assert.equal(leaseHex('7587878712345678901'), BigInt('7587878712345678901').toString(16));
  assert.equal(leaseDecimal(leaseHex('7587878712345678901')), '7587878712345678901');
});

test('keys: values round-trip; malformed values are refused, not thrown', () => {
  const v = instance('a', { draining: true, load: { sessions: 3, connections: 4 } });
  assert.deepEqual(parseInstance(encodeInstance(v)), v);
  assert.deepEqual(parseSession(encodeSession({ id: 'a', lease: 'ff' })), { id: 'a', lease: 'ff' });
  for (const bad of ['', '{', 'null', '[]', '{"id":"a"}', JSON.stringify({ ...v, sessionLease: 'XYZ' }), JSON.stringify({ ...v, load: { sessions: -1, connections: 0 } })]) {
    assert.equal(parseInstance(bad), null, bad);
  }
  for (const bad of ['', '{"id":1,"lease":"ff"}', '{"id":"a","lease":"0xff"}', '{"id":"a"}']) assert.equal(parseSession(bad), null, bad);
});

test('lease proof: valid for TTL minus the margin from the SEND time of the last acknowledged keepalive', () => {
  const ttl = 1000;
  const valid = ttl * (1 - FENCE_MARGIN_FRACTION);
  const p = new LeaseProof(ttl);
  p.granted('L', 0);
  assert.equal(p.provable('L', valid - 1), true);
  assert.equal(p.provable('L', valid), false);
  // A keepalive sent at 300 but answered only at 850 proves the lease from 300, not from 850.
  p.sent('L', 300);
  p.acked('L');
  assert.equal(p.provable('L', 300 + valid - 1), true);
  assert.equal(p.provable('L', 300 + valid), false);
  // Answers match the oldest outstanding send.
  p.sent('L', 400);
  p.sent('L', 500);
  p.acked('L');
  assert.equal(p.provable('L', 400 + valid - 1), true);
  assert.equal(p.provable('L', 400 + valid + 1), false);
  // A dropped stream forgets its unanswered sends: a late answer proves nothing.
  p.dropPending();
  p.acked('L');
  assert.equal(p.provable('L', 400 + valid + 1), false);
  assert.deepEqual(p.unprovable(400 + valid + 1), ['L']);
  assert.equal(p.provable('unknown', 0), false);
  assert.equal(p.oldestProofAgeMs(500), 100);
});

test('cache: live owner needs a live instance; deletes and stale revisions; per-lease counts; change callbacks', () => {
  const cache = new DirectoryCache(layout);
  const changes: string[] = [];
  cache.onMapping = (route, before, after) => changes.push(`${route}:${before?.id ?? '-'}>${after?.id ?? '-'}`);
  cache.put(sessionKey(layout, 'R1'), encodeSession({ id: 'a', lease: 'aa' }), 10n);
  assert.equal(cache.liveOwner('R1'), null, 'owner instance unknown: not live');
  cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a')), 11n);
  assert.equal(cache.liveOwner('R1')?.instance.id, 'a');
  assert.equal(cache.mappingsOnLease('aa'), 1);
  cache.put(sessionKey(layout, 'R1'), encodeSession({ id: 'b', lease: 'bb' }), 9n); // older: ignored
  assert.equal(cache.sessions.get('R1')?.id, 'a');
  cache.put(sessionKey(layout, 'R1'), encodeSession({ id: 'b', lease: 'bb' }), 12n);
  assert.equal(cache.mappingsOnLease('aa'), 0);
  assert.equal(cache.mappingsOnLease('bb'), 1);
  cache.delete(sessionKey(layout, 'R1'), 13n);
  cache.put(sessionKey(layout, 'R1'), encodeSession({ id: 'c', lease: 'cc' }), 12n); // a late placement answer cannot resurrect it
  assert.equal(cache.sessions.has('R1'), false);
  cache.delete(instanceKey(layout, 'a'), 14n);
  assert.equal(cache.instances.size, 0);
  // A read of the instance answered after the watch's delete (read at 11) cannot bring the dead instance back.
  cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a')), 11n);
  assert.equal(cache.instances.size, 0);
  // Registered again later: taken; an older record after a newer one is ignored.
  cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a', { draining: true })), 16n);
  cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a')), 15n);
  assert.equal(cache.instances.get('a')?.draining, true);
  cache.delete(instanceKey(layout, 'a'), 17n);
  assert.deepEqual(changes, ['R1:->a', 'R1:a>b', 'R1:b>-']);

  cache.put(sessionKey(layout, 'R2'), encodeSession({ id: 'a', lease: 'aa' }), 20n);
  cache.reset([{ key: sessionKey(layout, 'R3'), value: encodeSession({ id: 'a', lease: 'aa' }), modRevision: 30n }]);
  assert.deepEqual([...cache.sessions.keys()], ['R3']);
  assert.deepEqual(changes.slice(3), ['R2:->a', 'R3:->a', 'R2:a>-']);
});

test('txn gate: at most the limit in flight, the rest in order; a queued waiter gives up at its deadline', async () => {
  const gate = new TxnGate(2);
  const order: number[] = [];
  const releases: (() => void)[] = [];
  const held = (n: number): Promise<void> =>
    gate.run(10_000, () => {
      order.push(n);
      return new Promise<void>((resolve) => releases.push(resolve));
    });
  const all = [held(1), held(2), held(3)];
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, [1, 2]);
  assert.equal(gate.waiting, 1);
  const late = gate.acquire(10);
  await assert.rejects(late, (err: DirectoryUnavailableError) => err.kind === 'txn_queue');
  assert.equal(gate.waiting, 1);
  releases[0]();
  await new Promise((r) => setImmediate(r));
  assert.deepEqual(order, [1, 2, 3]);
  releases[1]();
  releases[2]();
  await Promise.all(all);
  assert.equal(gate.active, 0);
});

/**
 * A one-process etcd for the Placer: keys with mod revisions, the Create and
 * Mod compares it sends, and range. Only what the Placer calls.
 */
class FakeKv {
  revision = 100;
  readonly store = new Map<string, { value: Buffer; mod: number }>();
  txns = 0;
  /** Leases (decimal) a put may bind to; null: any. */
  leases: Set<string> | null = null;
  /** Transactions answered so far wait for this before answering (to let a queue build). */
  hold: Promise<void> = Promise.resolve();

  range(req: { key: Buffer }): { kvs: { key: Buffer; value: Buffer; mod_revision: string }[] } {
    const e = this.store.get(req.key.toString());
    return { kvs: e ? [{ key: req.key, value: e.value, mod_revision: String(e.mod) }] : [] };
  }

  txn(req: {
    compare: { key: Buffer; target: string; create_revision?: number; mod_revision?: string }[];
    success: { request_put: { key: Buffer; value: Buffer; lease?: string } }[];
    failure: { request_range: { key: Buffer } }[];
  }): Promise<unknown> {
    this.txns++;
    const keys = req.compare.map((c) => c.key.toString());
    assert.equal(new Set(keys).size, keys.length, 'etcd refuses a transaction naming one key twice');
    assert.ok(req.compare.length <= 128, 'etcd --max-txn-ops');
    return this.hold.then(() => this.apply(req));
  }

  private apply(req: Parameters<FakeKv['txn']>[0]): unknown {
    const ok = req.compare.every((c) => {
      const e = this.store.get(c.key.toString());
      return c.target === 'Create' ? e === undefined : e !== undefined && String(e.mod) === c.mod_revision;
    });
    if (ok) {
      for (const op of req.success) if (this.leases && !this.leases.has(op.request_put.lease ?? '')) throw new EtcdLeaseInvalidError(op.request_put.lease ?? '');
      this.revision++;
      for (const op of req.success) this.store.set(op.request_put.key.toString(), { value: op.request_put.value, mod: this.revision });
      return { succeeded: true, header: { revision: String(this.revision) }, responses: [] };
    }
    return { succeeded: false, header: { revision: String(this.revision) }, responses: req.failure.map((op) => ({ response_range: this.range(op.request_range) })) };
  }
}

/** Only the calls the Placer makes; the real EtcdRpc adds deadlines and retries around them. */
const fakeRpc = (kv: FakeKv): EtcdRpc => ({ call: (_what: string, fn: (o: object, client: object) => Promise<unknown>) => fn({}, { kv }) }) as unknown as EtcdRpc;

test('placer: a storm of placements behind a full gate shares transactions; a key that exists is answered with its owner; a batch refused for one lease is retried one by one', async () => {
  const kv = new FakeKv();
  const cache = new DirectoryCache(layout);
  const placer = new Placer(fakeRpc(kv), layout, cache, { policy: 'load-aware', maxTxnsInFlight: 2, callTimeoutMs: 10_000, keysPerLease: 1_000_000, rate: null });
  cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a', { sessionLease: 'aa' })), 1n);
  cache.put(instanceKey(layout, 'b'), encodeInstance(instance('b', { sessionLease: 'bb' })), 2n);
  // Another member placed R7 on b a moment ago; our watch has not said so yet.
  kv.store.set(sessionKey(layout, 'R7'), { value: Buffer.from(encodeSession({ id: 'b', lease: 'bb' })), mod: 5 });
  let open!: () => void;
  kv.hold = new Promise((r) => (open = r));
  const routes = Array.from({ length: 300 }, (_, i) => `R${i}`);
  const placed = Promise.all(routes.map((r) => placer.place(r)));
  await new Promise((r) => setImmediate(r));
  assert.equal(kv.txns, 2, 'two slots: the first two placements went alone, the rest wait');
  open();
  const owners = await placed;
  assert.ok(kv.txns <= 2 + 3 + 2, `${kv.txns} transactions for 300 placements (128 a batch; the batch holding R7 once more)`);
  assert.equal(owners[7].id, 'b', 'the existing mapping wins');
  for (const r of routes) assert.ok(kv.store.has(sessionKey(layout, r)), r);
  assert.equal(placer.creates.creates - placer.creates.txns >= 290, true);

  // One lease gone (b's): a batch with a mapping bound to it fails as a whole; retried one by one, only that one fails.
  kv.leases = new Set([leaseDecimal('aa')]);
  const txnsBefore = kv.txns;
  kv.hold = new Promise((r) => (open = r));
  const blockers = [placer.place('X0'), placer.place('X1')];
  const outcomes = Promise.allSettled(['Y0', 'Y1', 'Y2', 'Y3'].map((r) => placer.place(r)));
  await new Promise((r) => setImmediate(r));
  open();
  await Promise.allSettled(blockers);
  const settled = await outcomes;
  assert.ok(kv.txns > txnsBefore + 2);
  for (const [i, o] of settled.entries()) assert.equal(o.status, 'fulfilled', `Y${i}: placed on a, the lease that still lives`);
});

test('create batcher: creates queued while other transactions held every slot go out when those end, with no new create to wake them', async () => {
  const kv = new FakeKv();
  const gate = new TxnGate(2);
  const batcher = new CreateBatcher(fakeRpc(kv), gate, 10_000);
  // Two other transactions (replaces, say) take both slots through run().
  const ends: (() => void)[] = [];
  const others = [0, 1].map(() => gate.run(10_000, () => new Promise<void>((resolve) => ends.push(resolve))));
  await new Promise((r) => setImmediate(r));
  assert.equal(gate.active, 2);
  const created = Promise.all(['Q0', 'Q1', 'Q2'].map((route) => batcher.create({ key: Buffer.from(sessionKey(layout, route)), value: Buffer.from('v'), lease: '1' })));
  await new Promise((r) => setImmediate(r));
  assert.equal(batcher.waiting, 3, 'queued behind the full gate');
  for (const end of ends) end();
  await Promise.all(others);
  const outcomes = await created;
  assert.equal(outcomes.length, 3);
  assert.equal(batcher.waiting, 0);
  assert.equal(batcher.txns, 1, 'the queue went out in one transaction once a slot was free');
  assert.equal(gate.active, 0);
});

test('placer: a cached mapping whose key etcd already deleted (lease revoked) is placed anew, not retried against its old revision', async () => {
  const kv = new FakeKv();
  // Only the calls the Placer makes; the real EtcdRpc adds deadlines and retries around them.
  const rpc = fakeRpc(kv);
  const cache = new DirectoryCache(layout);
  const placer = new Placer(rpc, layout, cache, { policy: 'load-aware', maxTxnsInFlight: 4, callTimeoutMs: 1000, keysPerLease: 1000, rate: null });
  cache.put(instanceKey(layout, 'live'), encodeInstance(instance('live', { sessionLease: 'bb' })), 50n);
  // Our view still maps R to the relay that died; in etcd its lease is gone and the key with it.
  cache.put(sessionKey(layout, 'R'), encodeSession({ id: 'dead', lease: 'aa' }), 60n);

  const owner = await placer.place('R');
  assert.equal(owner.id, 'live');
  assert.deepEqual(parseSession(kv.store.get(sessionKey(layout, 'R'))?.value.toString() ?? ''), { id: 'live', lease: 'bb' });
  assert.equal(kv.txns, 2, 'one failed compare against the stale revision, then one create');
  assert.equal(cache.sessions.get('R')?.id, 'live');
});

test('placer, load-aware: mappings other members placed (seen through the watch) count as load, whatever the instances publish', async () => {
  const kv = new FakeKv();
  const cache = new DirectoryCache(layout);
  const placer = new Placer(fakeRpc(kv), layout, cache, { policy: 'load-aware', maxTxnsInFlight: 4, callTimeoutMs: 1000, keysPerLease: 1_000_000, rate: null });
  for (const [i, id] of ['a', 'b', 'c'].entries()) cache.put(instanceKey(layout, id), encodeInstance(instance(id, { sessionLease: `${id}${id}` })), BigInt(i + 1));
  // Other members placed 60 sessions on a, nobody attached yet: a publishes 0 sessions, like b and c.
  const ON_A = 60;
  for (let i = 0; i < ON_A; i++) cache.put(sessionKey(layout, `other${i}`), encodeSession({ id: 'a', lease: 'aa' }), BigInt(100 + i));
  assert.equal(cache.mappingsOf('a'), ON_A);
  const owners: string[] = [];
  for (let i = 0; i < ON_A; i++) {
    owners.push((await placer.place(`mine${i}`)).id);
    // a publishes its record again (its connection count changed): still 0 sessions.
    if (i % 10 === 0) cache.put(instanceKey(layout, 'a'), encodeInstance(instance('a', { sessionLease: 'aa' })), BigInt(1000 + i));
  }
  assert.equal(owners.filter((o) => o === 'a').length, 0, `b and c first, until they hold as many: ${owners.join(' ')}`);
  assert.equal(cache.mappingsOf('b') + cache.mappingsOf('c'), ON_A);
});

test('etcd rpc: a call whose tries reached a member that could not answer fails as "deadline", even when its last try was refused; every try refused fails as "etcd", after a few refusals per endpoint', async () => {
  const { GRPCUnavailableError } = await import('etcd3');
  const { EtcdRpc, REFUSALS_PER_ENDPOINT } = await import('../../src/directory/etcd/etcd-rpc.js');
  // Clients connect lazily: nothing is dialled, the calls below never touch them.
  const rpc = new EtcdRpc({ endpoints: ['http://127.0.0.1:9', 'http://127.0.0.1:10'], auth: { username: '', password: '' }, tls: {} } as never, 150);
  const refused = () => new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: connect ECONNREFUSED 127.0.0.1:9');
  try {
    let tries = 0;
    const election = await rpc
      .call('place', () => Promise.reject(++tries === 1 ? new GRPCUnavailableError('14 UNAVAILABLE: etcdserver: leader changed') : refused()))
      .then(() => assert.fail('resolved'), (err: unknown) => err);
    assert.ok(election instanceof DirectoryUnavailableError);
    assert.equal(election.kind, 'deadline');
    assert.ok(tries > 1, 'tried again while time remained');
    assert.match(election.reason, /ECONNREFUSED/, 'the reason is the last try\'s');

    let refusedTries = 0;
    const nobody = await rpc
      .call(
        'place',
        () => {
          refusedTries++;
          return Promise.reject(refused());
        },
        60_000,
      )
      .then(() => assert.fail('resolved'), (err: unknown) => err);
    assert.ok(nobody instanceof DirectoryUnavailableError);
    assert.equal(nobody.kind, 'etcd');
    // No member listening: it gives up after REFUSALS_PER_ENDPOINT refusals per endpoint, not at its (60 s) deadline.
    assert.equal(refusedTries, REFUSALS_PER_ENDPOINT * 2);
  } finally {
    rpc.close();
  }
});

test('read batcher: reads that find every slot busy share one read-only transaction of up to 128 keys; absent keys are null; an etcd failure reaches every read of its batch', async () => {
  const { ReadBatcher } = await import('../../src/directory/etcd/read-batcher.js');
  const store = new Map<string, string>([['k1', 'v1'], ['k3', 'v3']]);
  const sent: string[][] = [];
  let release: (() => void) | null = null;
  let failNext = false;
  const kv = {
    txn: async (req: { compare?: unknown[]; success: { request_range: { key: Buffer } }[] }) => {
      assert.equal(req.compare, undefined, 'a read transaction compares nothing');
      const keys = req.success.map((op) => op.request_range.key.toString());
      sent.push(keys);
      if (sent.length === 1) await new Promise<void>((resolve) => (release = resolve));
      if (failNext) throw new DirectoryUnavailableError('test: etcd away');
      return {
        responses: keys.map((k) => ({ response_range: { kvs: store.has(k) ? [{ key: Buffer.from(k), value: Buffer.from(store.get(k) ?? '') }] : [] } })),
      };
    },
  };
  const batcher = new ReadBatcher(fakeRpc(kv as unknown as FakeKv), 1, 60_000);
  // The first read takes the only slot and is held there; 300 more queue behind it.
  const first = batcher.read(Buffer.from('k1'));
  const rest = Array.from({ length: 300 }, (_, i) => batcher.read(Buffer.from(`k${i + 2}`)));
  assert.equal(batcher.waiting, 300);
  (release as unknown as () => void)();
  assert.equal((await first)?.value.toString(), 'v1');
  const values = await Promise.all(rest);
  assert.equal(values[0], null, 'k2 is absent');
  assert.equal(values[1]?.value.toString(), 'v3');
  assert.deepEqual(
    sent.map((keys) => keys.length),
    [1, 128, 128, 44],
    'queued reads went out 128 to a transaction',
  );
  failNext = true;
  const failed = await Promise.allSettled([batcher.read(Buffer.from('k1')), batcher.read(Buffer.from('k3'))]);
  assert.ok(failed.every((r) => r.status === 'rejected' && r.reason instanceof DirectoryUnavailableError));
});
