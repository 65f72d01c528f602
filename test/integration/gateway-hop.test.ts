/**
 * The gateway -> relay hop with real etcd and two real `hashmail relay`
 * processes; the gateway's end (RemoteLegacyMailbox + RelayPool) runs in
 * this process and is driven directly. Exact legacy semantics across the
 * hop: errors and texts, SendStream answered only once the relay queued
 * everything, cancellation both ways, the token, per-address limits on the
 * forwarded address, the pool's limit.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { randomBytes } from 'node:crypto';
import { routeOfSid } from '../../src/directory/route.js';
import { HashmailError, type HashmailErrorCode } from '../../src/session/errors.js';
import { encodeDataFrame, encodeHopFrame, FrameKind } from '../../src/transport/hop/frame.js';
import { pollUntil, withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { peerSid, randomSid, boxAuth } from '../helpers/grpc-v1.js';
import { boxClosed, callFrom, clusterHopToken, HOP_WAIT_MS, openRawLane, readOne, testGateway, writeAll, type TestGateway } from '../helpers/hop.js';
import { metricSum } from '../helpers/metrics.js';
import { startRelay, type RunningServer } from '../helpers/server.js';

const BUFFER_BYTES = 64 * 1024;
const MAX_BOXES_PER_ADDRESS = 3;
const RELAY_CONFIG = {
  directory: { leaseTtlMs: 3000, callTimeoutMs: 1000, loadPublishIntervalMs: 200 },
  mailbox: { bufferBytes: BUFFER_BYTES, rateLimitIntervalMs: 0 },
  limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS },
};
const MESSAGES = 100;

function rejectsWith(promise: Promise<unknown>, code: HashmailErrorCode, message: string): Promise<void> {
  return assert.rejects(promise, (err: unknown) => {
    assert.ok(err instanceof HashmailError, `not a HashmailError: ${String(err)}`);
    assert.equal(err.code, code);
    assert.equal(err.message, message);
    return true;
  });
}

describe('the gateway hop: two relays, the gateway end in process', () => {
  let etcd: EtcdCluster;
  const relays: RunningServer[] = [];
  let gw: TestGateway;
  let addressNo = 0;
  /** A client address of its own per test, so per-address limits do not carry over. */
  const freshCall = (transport: 'grpc' | 'websocket' = 'grpc') => callFrom(`10.1.0.${++addressNo}`, transport);

  before(async () => {
    etcd = await startEtcd(1);
    for (let i = 0; i < 2; i++) relays.push(await startRelay({ etcd: etcd.etcdFlag, id: `relay-${i}`, config: RELAY_CONFIG }));
    gw = await testGateway(etcd.endpoints);
  });
  after(async () => {
    await gw?.close();
    for (const relay of relays) await relay.stop();
    await etcd?.stop();
  });

  const ownerOf = async (sid: Buffer): Promise<RunningServer> => {
    const owner = await gw.directory.lookup(routeOfSid(sid), { place: false });
    const relay = relays.find((r) => r.address === owner?.address);
    assert.ok(relay, `no relay owns the session (${owner?.address})`);
    return relay;
  };

  test(`create, receive, send ${MESSAGES} messages each way intact and in order, delete`, async () => {
    const call = freshCall();
    const a = randomSid();
    const bSid = peerSid(a);
    await gw.mailbox.newCipherBox(boxAuth(a), call);
    await gw.mailbox.newCipherBox(boxAuth(bSid), call);
    const readA = await gw.mailbox.openReceive(a, call);
    const readB = await gw.mailbox.openReceive(bSid, call);
    const toA = Array.from({ length: MESSAGES }, (_, i) => Buffer.concat([Buffer.from(`to-a ${i} `), randomBytes(i * 37)]));
    const toB = Array.from({ length: MESSAGES }, (_, i) => Buffer.concat([Buffer.from(`to-b ${i} `), randomBytes(i * 41)]));
    const sendA = await gw.mailbox.openSend({ streamId: a }, call);
    const sendB = await gw.mailbox.openSend({ streamId: bSid }, call);
    const receivedA = (async () => {
      const out: Buffer[] = [];
      for (let i = 0; i < MESSAGES; i++) out.push(await readOne(readA));
      return out;
    })();
    const receivedB = (async () => {
      const out: Buffer[] = [];
      for (let i = 0; i < MESSAGES; i++) out.push(await readOne(readB));
      return out;
    })();
    await Promise.all([writeAll(sendA, toA).then(() => sendA.finish()), writeAll(sendB, toB).then(() => sendB.finish())]);
    assert.deepEqual(await receivedA, toA);
    assert.deepEqual(await receivedB, toB);
    // A 0-byte message crosses as one.
    const again = await gw.mailbox.openSend({ streamId: a }, call);
    await again.write(Buffer.alloc(0));
    await again.finish();
    assert.equal((await readOne(readA)).length, 0);
    assert.equal(gw.stats.attached.grpc.read, 2);
    // The pool's lanes and carried calls are gauges at the gateway; the relay counts the lanes it serves.
    assert.equal(gw.stats.hopCallsCarried(), 2);
    assert.equal(gw.stats.hopLanes(), gw.pool.connections);
    assert.ok(gw.pool.connections >= 1);
    const owner = await ownerOf(a);
    assert.ok(((await metricSum(owner, 'hashmail_hop_lanes')) ?? 0) >= 1);
    const closed = boxClosed(readA);
    await gw.mailbox.delCipherBox(boxAuth(a), call);
    const err = await closed;
    assert.ok(err instanceof HashmailError);
    assert.equal(err.code, 'BOX_DELETED_EOF');
    assert.equal(err.message, 'EOF');
    readA.release();
    readB.release();
    assert.equal(gw.stats.attached.grpc.read, 0);
    await gw.mailbox.delCipherBox(boxAuth(bSid), call);
    await pollUntil(async () => gw.mailbox.carriedCalls === 0 && gw.pool.calls === 0, 'every hop call over');
  });

  test('exact legacy errors across the hop: exists, not found, occupied after the wait, validation texts', async () => {
    const call = freshCall();
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    await rejectsWith(Promise.resolve(gw.mailbox.newCipherBox(boxAuth(sid), call)), 'STREAM_EXISTS', 'stream already active');
    // Never placed: answered by the gateway's lookup; placed but no such box: answered by the relay.
    await rejectsWith(gw.mailbox.openReceive(randomSid(), call), 'STREAM_NOT_FOUND', 'stream not found');
    await rejectsWith(gw.mailbox.openReceive(peerSid(sid), call), 'STREAM_NOT_FOUND', 'stream not found');
    await rejectsWith(gw.mailbox.openSend({ streamId: peerSid(sid) }, call), 'STREAM_NOT_FOUND', 'stream not found');
    await rejectsWith(Promise.resolve(gw.mailbox.delCipherBox(boxAuth(peerSid(sid)), call)), 'STREAM_NOT_FOUND', 'stream not found');
    const reader = await gw.mailbox.openReceive(sid, call);
    await rejectsWith(gw.mailbox.openReceive(sid, call), 'READ_OCCUPIED', 'read stream occupied');
    const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    await rejectsWith(gw.mailbox.openSend({ streamId: sid }, call), 'WRITE_OCCUPIED', 'write stream occupied');
    // Validation, in the legacy order, with the legacy texts.
    await assert.rejects(async () => gw.mailbox.newCipherBox({ desc: null, hasAuth: true }, call), { message: 'cipher box descriptor required' });
    await assert.rejects(async () => gw.mailbox.newCipherBox({ desc: { streamId: Buffer.alloc(0) }, hasAuth: false }, call), { message: 'stream_id required' });
    await assert.rejects(async () => gw.mailbox.newCipherBox({ desc: { streamId: randomSid() }, hasAuth: false }, call), { message: 'auth type required' });
    await assert.rejects(async () => gw.mailbox.newCipherBox({ desc: { streamId: Buffer.alloc(10) }, hasAuth: true }, call), { message: 'stream_id must be 64 bytes' });
    await assert.rejects(async () => gw.mailbox.openSend(null, call), { message: 'cipher box descriptor required' });
    assert.throws(() => writer.write(Buffer.alloc(4 * 1024 * 1024 + 1)), { message: 'message too large: 4194305 bytes, limit mailbox.maxMessageBytes (4194304)' });
    reader.release();
    writer.release();
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
  });

  test('SendStream finishes only once the relay queued every message', async () => {
    const call = freshCall();
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    const owner = await ownerOf(sid);
    const size = 8 * 1024;
    const count = (3 * BUFFER_BYTES) / size;
    const messages = Array.from({ length: count }, (_, i) => Buffer.alloc(size, i));
    const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    let finished = false;
    const writing = writeAll(writer, messages)
      .then(() => writer.finish())
      .then(() => {
        finished = true;
      });
    // No reader: the box fills to its buffer and the relay can take no more.
    writing.catch(() => undefined);
    await pollUntil(async () => ((await metricSum(owner, 'hashmail_buffered_bytes')) ?? 0) >= BUFFER_BYTES - size, 'box full at the relay');
    assert.equal(finished, false, 'finish() settled while the relay still had messages to take');
    const reader = await gw.mailbox.openReceive(sid, call);
    const got: Buffer[] = [];
    for (let i = 0; i < count; i++) got.push(await readOne(reader));
    await withTimeout(writing, HOP_WAIT_MS, 'finish');
    assert.deepEqual(got, messages);
    reader.release();
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
  });

  test('cancellation: a released half frees the relay slot; a box deleted at the relay ends the gateway half', async () => {
    const call = freshCall();
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    const owner = await ownerOf(sid);
    const hopReaders = (): Promise<number | undefined> => owner.metric('hashmail_attached_halves{transport="hop",kind="read"}');
    const first = await gw.mailbox.openReceive(sid, call);
    await pollUntil(async () => (await hopReaders()) === 1, 'reader attached at the relay');
    first.release();
    await pollUntil(async () => (await hopReaders()) === 0, 'slot freed at the relay');
    // Pending open cancelled by the client: the wait ends at the relay too.
    const second = await gw.mailbox.openReceive(sid, call);
    const abort = new AbortController();
    const waiting = gw.mailbox.openReceive(sid, call, abort.signal);
    abort.abort();
    await rejectsWith(waiting, 'CANCELLED', 'cancelled');
    const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    const readerClosed = boxClosed(second);
    const writerClosed = boxClosed(writer);
    // Deleted through another gateway connection: the relay ends both carried halves with the legacy errors.
    const other = await testGateway(etcd.endpoints);
    try {
      await other.mailbox.delCipherBox(boxAuth(sid), freshCall());
    } finally {
      await other.close();
    }
    assert.deepEqual([(await readerClosed).message, (await writerClosed).message], ['EOF', 'io: read/write on closed pipe']);
    assert.throws(() => second.take(), { message: 'EOF' });
    assert.throws(() => writer.write(Buffer.from('x')), { message: 'io: read/write on closed pipe' });
    second.release();
    writer.release();
  });

  test('a lane without the token, or with a wrong one, is refused before the upgrade; so is a gateway holding another token', async () => {
    const relay = relays[0];
    const token = (await clusterHopToken(etcd.endpoints)).value;
    for (const presented of [null, 'not-the-token', token.slice(1)]) {
      const lane = await openRawLane(relay.address, presented);
      assert.deepEqual(lane.refused, { status: 401, body: 'hop: not an authenticated gateway' });
    }
    // The lane path upgrades to lanes only.
    const websocket = await openRawLane(relay.address, token, 'websocket');
    assert.equal(websocket.refused?.status, 400);
    assert.ok(((await metricSum(relay, 'hashmail_errors_total{code="HOP_UNAUTHENTICATED"}')) ?? 0) >= 3);
    // A gateway holding another token is refused the same way.
    const { HopToken } = await import('../../src/transport/hop/hop-token.js');
    const forged = await testGateway(etcd.endpoints, {}, new HopToken('x'.repeat(43)));
    try {
      await rejectsWith(Promise.resolve(forged.mailbox.newCipherBox(boxAuth(randomSid()), freshCall())), 'HOP_UNAUTHENTICATED', 'hop: not an authenticated gateway');
      // Its lane is refused too: a half of a placed session fails with the relay's error.
      const placed = randomSid();
      await gw.mailbox.newCipherBox(boxAuth(placed), freshCall());
      await pollUntil(async () => (await forged.directory.lookup(routeOfSid(placed), { place: false })) !== null, "the forged gateway sees the session");
      await rejectsWith(forged.mailbox.openReceive(placed, freshCall()), 'HOP_UNAUTHENTICATED', 'hop: not an authenticated gateway');
    } finally {
      await forged.close();
    }
  });

  test(`per-address limits at the relay count the forwarded client address (limits.maxBoxesPerAddress ${MAX_BOXES_PER_ADDRESS})`, async () => {
    const greedy = freshCall();
    let refused: HashmailError | null = null;
    let refusedSid: Buffer | null = null;
    // Two relays hold at most 2 x MAX boxes of one address: one more is refused somewhere.
    for (let i = 0; i <= 2 * MAX_BOXES_PER_ADDRESS && !refused; i++) {
      const sid = randomSid();
      try {
        await gw.mailbox.newCipherBox(boxAuth(sid), greedy);
      } catch (err) {
        refused = err as HashmailError;
        refusedSid = sid;
      }
    }
    assert.ok(refused && refusedSid, 'no box refused');
    assert.equal(refused.code, 'LIMIT_REACHED');
    assert.equal(refused.message, `limit reached: limits.maxBoxesPerAddress (${MAX_BOXES_PER_ADDRESS})`);
    // The same relay (same session) takes boxes from another client through the same gateway.
    await gw.mailbox.newCipherBox(boxAuth(refusedSid), freshCall());
    await gw.mailbox.newCipherBox(boxAuth(peerSid(refusedSid)), freshCall());
  });

  test('the pool grows past hop.streamsPerConnection and answers RESOURCE_EXHAUSTED past hop.maxConnectionsPerRelay', async () => {
    const small = await testGateway(etcd.endpoints, { streamsPerConnection: 2, maxConnectionsPerRelay: 2 });
    const halves: { release(): void }[] = [];
    try {
      const call = freshCall();
      // Sessions on relay 0 only: the limit is per relay.
      const sids: Buffer[] = [];
      for (let i = 0; i < 40 && sids.length < 6; i++) {
        const sid = randomSid();
        await small.mailbox.newCipherBox(boxAuth(sid), callFrom(`10.2.${i}.1`));
        if ((await ownerOf(sid)) === relays[0]) sids.push(sid);
        else await small.mailbox.delCipherBox(boxAuth(sid), call);
      }
      assert.equal(sids.length, 6, 'not enough sessions on relay 0');
      for (let i = 0; i < 4; i++) {
        halves.push(await small.mailbox.openReceive(sids[i], call));
        assert.equal(small.pool.connectionsTo(relays[0].address), Math.ceil((i + 1) / 2));
      }
      const refused = await small.mailbox.openReceive(sids[4], call).then(
        () => assert.fail('a fifth call was carried past the limit'),
        (err: unknown) => err as HashmailError,
      );
      assert.equal(refused.code, 'LIMIT_REACHED');
      assert.equal(refused.grpcCode, grpc.status.RESOURCE_EXHAUSTED);
      assert.equal(refused.message, 'gateway: relay connection limit reached (hop.maxConnectionsPerRelay)');
      halves.pop()?.release();
      halves.push(await small.mailbox.openReceive(sids[4], call));
      assert.equal(small.pool.connectionsTo(relays[0].address), 2);
    } finally {
      for (const h of halves) h.release();
      await small.close();
    }
  });

  test('a gateway whose view is behind is told SERVED_ELSEWHERE with hashmail-relay-address and retries at the owner once', async () => {
    const call = freshCall();
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    const owner = await ownerOf(sid);
    const wrong = relays.find((r) => r !== owner) as RunningServer;
    const wrongId = String(wrong.logs.find((l) => l.msg === 'serving')?.id);
    // Every lookup names the relay that does not own the session.
    const behind = await testGateway(etcd.endpoints, {}, undefined, (d) =>
      new Proxy(d, {
        get(target, key, receiver) {
          if (key === 'lookup') return async () => ({ id: wrongId, address: wrong.address });
          const v = Reflect.get(target, key, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
    );
    try {
      const before = (await wrong.metric('hashmail_errors_total{code="SERVED_ELSEWHERE"}')) ?? 0;
      const reader = await behind.mailbox.openReceive(sid, call);
      const writer = await gw.mailbox.openSend({ streamId: sid }, call);
      await writer.write(Buffer.from('via the owner'));
      assert.equal((await readOne(reader)).toString(), 'via the owner');
      assert.equal(await wrong.metric('hashmail_errors_total{code="SERVED_ELSEWHERE"}'), before + 1);
      assert.equal(behind.pool.connectionsTo(owner.address), 1);
      reader.release();
      writer.release();
    } finally {
      await behind.close();
    }
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
  });

  test('a call whose lookup is in flight when the gateway stops gets "server shutting down", not a half carried to the relay', async () => {
    const call = freshCall();
    const sid = randomSid();
    await gw.mailbox.newCipherBox(boxAuth(sid), call);
    await gw.mailbox.newCipherBox(boxAuth(peerSid(sid)), call);
    // Lookups answer only when let go: stop begins while each is in flight.
    let letGo: () => void = () => undefined;
    const gate = new Promise<void>((resolve) => (letGo = resolve));
    const stopping = await testGateway(etcd.endpoints, {}, undefined, (d) =>
      new Proxy(d, {
        get(target, key, receiver) {
          if (key === 'lookup') return async (...args: Parameters<typeof d.lookup>) => gate.then(() => target.lookup(...args));
          const v = Reflect.get(target, key, receiver) as unknown;
          return typeof v === 'function' ? (v as (...a: unknown[]) => unknown).bind(target) : v;
        },
      }),
    );
    try {
      const receive = stopping.mailbox.openReceive(sid, call);
      const send = stopping.mailbox.openSend({ streamId: peerSid(sid) }, call);
      const create = stopping.mailbox.newCipherBox(boxAuth(randomSid()), call);
      stopping.mailbox.shutdown();
      letGo();
      for (const pending of [receive, send, create]) {
        await assert.rejects(pending, (err: HashmailError) => err.code === 'SERVER_SHUTTING_DOWN' && err.message === 'server shutting down');
      }
      assert.equal(stopping.mailbox.carriedCalls, 0);
      assert.equal(stopping.pool.connectionsTo((await ownerOf(sid)).address), 0, 'nothing dialled to the relay');
    } finally {
      await stopping.close();
    }
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
    await gw.mailbox.delCipherBox(boxAuth(peerSid(sid)), call);
  });

  test('a gateway whose view has not seen a new session reads etcd before answering "stream not found", which comes at once for a session nowhere', async () => {
    const call = freshCall();
    const sid = randomSid();
    // A gateway whose watch never delivers a mapping (as one lagging behind a placement made elsewhere): its view
    // keeps instances but drops every session key the watch or a read would put there.
    const lagging = await testGateway(etcd.endpoints, {}, undefined, (d) => {
      const cache = (d as unknown as { cache: { put(key: string, value: string, revision: bigint, force?: boolean): void } }).cache;
      const put = cache.put.bind(cache);
      cache.put = (key, value, revision, force) => {
        if (!key.includes('/sessions/')) put(key, value, revision, force);
      };
      return d;
    });
    try {
      await gw.mailbox.newCipherBox(boxAuth(sid), call);
      const callsBefore = lagging.directory.etcdCalls;
      const reader = await lagging.mailbox.openReceive(sid, call);
      assert.ok(lagging.directory.etcdCalls > callsBefore, 'the owner was read from etcd, not the view');
      const writer = await gw.mailbox.openSend({ streamId: sid }, call);
      await writer.write(Buffer.from('found in etcd'));
      assert.equal((await readOne(reader)).toString(), 'found in etcd');
      reader.release();
      writer.release();
      // A session that is nowhere: "stream not found" once etcd says so, nothing held (serve answers it at once too).
      await assert.rejects(lagging.mailbox.openReceive(randomSid(), call), (err: HashmailError) => err.code === 'STREAM_NOT_FOUND');
      assert.equal(lagging.directory.lookupsWaiting, 0);
    } finally {
      await lagging.close();
    }
    await gw.mailbox.delCipherBox(boxAuth(sid), call);
  });

  /** A new session (its two boxes created) owned by `relay`; bounded: sessions land on 2 relays. */
  const sessionOn = async (relay: RunningServer, call: ReturnType<typeof freshCall>): Promise<Buffer> => {
    for (let i = 0; i < 40; i++) {
      const sid = randomSid();
      await gw.mailbox.newCipherBox(boxAuth(sid), call);
      if ((await ownerOf(sid)) === relay) {
        await gw.mailbox.newCipherBox(boxAuth(peerSid(sid)), call);
        return sid;
      }
      await gw.mailbox.delCipherBox(boxAuth(sid), call);
    }
    throw new Error('no session placed on the relay in 40 tries');
  };

  test('halves share one lane per connection: a reader that takes nothing holds up neither the lane nor another session on it', async () => {
    const owner = relays[0];
    const stuckCall = freshCall();
    const stuckSid = await sessionOn(owner, stuckCall);
    const size = 32 * 1024;
    const messages = Array.from({ length: 48 }, (_, i) => Buffer.alloc(size, i));
    const stuckReader = await gw.mailbox.openReceive(stuckSid, stuckCall);
    const stuckWriter = await gw.mailbox.openSend({ streamId: stuckSid }, stuckCall);
    let written = false;
    const writing = writeAll(stuckWriter, messages).then(() => {
      written = true;
    });
    writing.catch(() => undefined);
    // The relay sends the reader its credit's worth, then the box fills and holds the writer back.
    await pollUntil(async () => ((await metricSum(owner, 'hashmail_buffered_bytes')) ?? 0) >= BUFFER_BYTES - size, 'box full at the relay');
    assert.equal(written, false, 'the writer was not held back');

    // Another session on the same relay, over the same connection and lane, flows meanwhile.
    const call = freshCall();
    const sid = await sessionOn(owner, call);
    assert.equal(gw.pool.connectionsTo(owner.address), 1);
    const reader = await gw.mailbox.openReceive(peerSid(sid), call);
    const writer = await gw.mailbox.openSend({ streamId: peerSid(sid) }, call);
    const flowing = Array.from({ length: MESSAGES }, (_, i) => randomBytes(100 + i * 50));
    const got = (async () => {
      const out: Buffer[] = [];
      for (let i = 0; i < MESSAGES; i++) out.push(await readOne(reader));
      return out;
    })();
    await writeAll(writer, flowing);
    assert.deepEqual(await got, flowing);
    assert.equal(written, false, 'the stuck writer went on while its reader took nothing');

    // The stuck reader reads at last: every message, in order, and the writer finishes.
    const drained: Buffer[] = [];
    for (let i = 0; i < messages.length; i++) drained.push(await readOne(stuckReader));
    await withTimeout(writing, HOP_WAIT_MS, 'stuck writer');
    assert.deepEqual(drained, messages);
    for (const h of [reader, writer, stuckReader, stuckWriter]) h.release();
    for (const x of [sid, peerSid(sid)]) await gw.mailbox.delCipherBox(boxAuth(x), call);
    for (const x of [stuckSid, peerSid(stuckSid)]) await gw.mailbox.delCipherBox(boxAuth(x), stuckCall);
  });

  test('a lane that breaks the contract: writing past the credit ends that half, an undecodable frame ends that lane, nothing else', async () => {
    const owner = relays[1];
    const call = freshCall();
    const sid = await sessionOn(owner, call);
    const lane = await openRawLane(owner.address, (await clusterHopToken(etcd.endpoints)).value);
    const frame = lane.frame;
    try {
      // Keepalive: PING on half 0 is answered PONG.
      lane.send(encodeHopFrame({ half: 0, kind: FrameKind.PING }));
      await frame(0, FrameKind.PONG);
      lane.send(encodeHopFrame({ half: 1, kind: FrameKind.OPEN_SEND, streamId: sid, clientAddress: call.address }));
      const attached = await frame(1, FrameKind.ATTACHED);
      assert.equal(attached.credit, 262_144);
      // Nobody reads the box: past the credit plus one largest message, the relay ends the half.
      const mib = Buffer.alloc(1024 * 1024);
      // (The box takes the first, and its credit comes back: 6 MiB then stand unanswered, past 256 KiB + 4 MiB.)
      for (let i = 0; i < 7; i++) lane.send(encodeDataFrame(1, mib));
      const ended = await frame(1, FrameKind.END);
      assert.equal(ended.errorCode, 'MALFORMED_REQUEST');
      assert.equal(ended.errorMessage, 'hop: writer sent past its credit');
      // The gateway's own halves to the same relay are on another lane and keep working.
      const reader = await gw.mailbox.openReceive(peerSid(sid), call);
      const writer = await gw.mailbox.openSend({ streamId: peerSid(sid) }, call);
      await writer.write(Buffer.from('still here'));
      assert.equal((await readOne(reader)).toString(), 'still here');
      // Bytes that are no frame: the lane ends with the error (END on half 0), the connection closes; the other lane does not notice.
      lane.send(Buffer.from([0x08]));
      const laneEnd = await frame(0, FrameKind.END);
      assert.equal(laneEnd.errorCode, 'MALFORMED_REQUEST');
      await withTimeout(lane.closed, HOP_WAIT_MS, 'lane closed');
      await writer.write(Buffer.from('and still'));
      assert.equal((await readOne(reader)).toString(), 'and still');
      // A length prefix over the limit (the largest message and its framing): that lane ends before a byte of the body.
      const liar = await openRawLane(owner.address, (await clusterHopToken(etcd.endpoints)).value);
      liar.send(Buffer.alloc(0), 0x7fffffff);
      const liarEnd = await liar.frame(0, FrameKind.END);
      assert.equal(liarEnd.errorCode, 'MALFORMED_REQUEST');
      assert.match(liarEnd.errorMessage ?? '', /over the limit/);
      await withTimeout(liar.closed, HOP_WAIT_MS, 'liar lane closed');
      await writer.write(Buffer.from('and again'));
      assert.equal((await readOne(reader)).toString(), 'and again');
      reader.release();
      writer.release();
    } finally {
      lane.close();
    }
    for (const x of [sid, peerSid(sid)]) await gw.mailbox.delCipherBox(boxAuth(x), call);
  });

  test('a gateway that floods PING without reading gets one PONG per flush, not one per PING; an id opened twice or out of order ends the lane', async () => {
    const owner = relays[1];
    const call = freshCall();
    const token = (await clusterHopToken(etcd.endpoints)).value;
    const flood = await openRawLane(owner.address, token);
    try {
      flood.pause();
      const ping = encodeHopFrame({ half: 0, kind: FrameKind.PING });
      const framedPing = Buffer.concat([Buffer.from([0, 0, 0, ping.length]), ping]);
      const PINGS = 50_000;
      flood.sendRaw(Buffer.concat(Array.from({ length: PINGS }, () => framedPing)));
      // A box call after the flood: once its END comes back, every PING before it was read.
      flood.send(encodeHopFrame({ half: 1, kind: FrameKind.DELETE_BOX, streamId: Buffer.alloc(3), clientAddress: call.address }));
      flood.resume();
      const end = await flood.frame(1, FrameKind.END);
      assert.equal(end.errorCode, 'INVALID_STREAM_ID');
      // Before: 50,000 PONGs (600 KB, and about 70 bytes of the relay's memory each while unread).
      const pongs = flood.count(0, FrameKind.PONG);
      assert.ok(pongs >= 1 && pongs < 1000, `${pongs} PONGs for ${PINGS} PINGs`);
      // A box call whose id is still (or was ever) in use: before, a second CREATE_BOX on a pending id ran as another call.
      flood.send(encodeHopFrame({ half: 1, kind: FrameKind.CREATE_BOX, streamId: randomSid(), clientAddress: call.address }));
      const laneEnd = await flood.frame(0, FrameKind.END);
      assert.equal(laneEnd.errorCode, 'MALFORMED_REQUEST');
      assert.equal(laneEnd.errorMessage, 'hop: id 1 opened after id 1 (ids only grow on a lane, never reused)');
      await withTimeout(flood.closed, HOP_WAIT_MS, 'lane closed');
    } finally {
      flood.close();
    }
    // Out of order: id 5, then id 3.
    const disorder = await openRawLane(owner.address, token);
    try {
      disorder.send(encodeHopFrame({ half: 5, kind: FrameKind.DELETE_BOX, streamId: Buffer.alloc(3), clientAddress: call.address }));
      await disorder.frame(5, FrameKind.END);
      disorder.send(encodeHopFrame({ half: 3, kind: FrameKind.OPEN_RECV, streamId: randomSid(), clientAddress: call.address, credit: 1024 }));
      const laneEnd = await disorder.frame(0, FrameKind.END);
      assert.equal(laneEnd.errorMessage, 'hop: id 3 opened after id 5 (ids only grow on a lane, never reused)');
      await withTimeout(disorder.closed, HOP_WAIT_MS, 'lane closed');
    } finally {
      disorder.close();
    }
    // The gateway's own lanes did not notice.
    const sid = await sessionOn(owner, call);
    const reader = await gw.mailbox.openReceive(sid, call);
    const writer = await gw.mailbox.openSend({ streamId: sid }, call);
    await writer.write(Buffer.from('undisturbed'));
    assert.equal((await readOne(reader)).toString(), 'undisturbed');
    reader.release();
    writer.release();
    for (const x of [sid, peerSid(sid)]) await gw.mailbox.delCipherBox(boxAuth(x), call);
  });
});
