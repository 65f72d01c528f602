/**
 * Shared gRPC channels of the client (grpc-channels.ts): per relay, security
 * and options for the whole process, another one only past the stream limit
 * the server's refusal taught; a pinned `tls` never shares.
 * No connection is made (channels connect lazily), except in the test of a
 * relay restarted on its address, which runs a real gRPC server on loopback.
 */
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { connectivityState, Server, ServerCredentials, type Client, type ServiceError } from '@grpc/grpc-js';
import { acquireChannel, closeSharedChannels, isStreamLimitRefusal } from '../../src/client/grpc-channels.js';
import { parseServer } from '../../src/client/options.js';

after(() => closeSharedChannels());

describe('client: shared gRPC channels', () => {
  const relay = parseServer('127.0.0.1:1', true);
  const other = parseServer('127.0.0.1:2', true);

  test('same relay, security and options: one channel; another relay or other options: another', () => {
    const a = acquireChannel({ server: relay, tlsSkipVerify: false });
    const b = acquireChannel({ server: relay, tlsSkipVerify: false });
    const c = acquireChannel({ server: other, tlsSkipVerify: false });
    const d = acquireChannel({ server: relay, tlsSkipVerify: false, options: { 'grpc.keepalive_time_ms': 1000 } });
    assert.equal(a.client, b.client);
    assert.notEqual(a.client, c.client);
    assert.notEqual(a.client, d.client);
    for (const lease of [a, b, c, d]) lease.release();
  });

  test('a pinned tls gets a channel of its own, closed at release', () => {
    const secure = parseServer('127.0.0.1:3', false);
    const tls = { rejectUnauthorized: true };
    const shared = acquireChannel({ server: secure, tlsSkipVerify: false });
    const pinned = acquireChannel({ server: secure, tlsSkipVerify: false, tls });
    assert.notEqual(shared.client, pinned.client);
    pinned.release();
    assert.equal(pinned.client.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN);
    assert.notEqual(shared.client.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN);
    shared.release();
  });

  test('a released channel is reused by the next acquire (kept open while idle)', () => {
    const first = acquireChannel({ server: relay, tlsSkipVerify: true });
    first.release();
    first.release(); // twice is harmless
    const again = acquireChannel({ server: relay, tlsSkipVerify: true });
    assert.equal(first.client, again.client);
    again.release();
  });

  test('calls share one channel until the server refuses one for its stream limit; then each channel takes that many', () => {
    const busy = parseServer('127.0.0.1:4', true);
    const first = Array.from({ length: 5 }, () => acquireChannel({ server: busy, tlsSkipVerify: false }));
    assert.equal(new Set(first.map((l) => l.client)).size, 1, 'no limit known: one channel');
    // The fifth call was refused: a connection of this server takes 4.
    first[4].refused();
    first[4].release();
    const retried = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.notEqual(retried.client, first[0].client, 'the retry goes to another channel');
    const more = Array.from({ length: 3 }, () => acquireChannel({ server: busy, tlsSkipVerify: false }));
    assert.ok(more.every((l) => l.client === retried.client), 'the second channel fills up to the learned limit');
    assert.notEqual(acquireChannel({ server: busy, tlsSkipVerify: false }).client, retried.client, 'then a third');
    first[0].release();
    const refill = acquireChannel({ server: busy, tlsSkipVerify: false });
    assert.equal(refill.client, first[0].client, 'a freed place on the first channel is used again');
  });

  test('the stream-limit refusal is told apart from other RESOURCE_EXHAUSTED answers', () => {
    assert.equal(isStreamLimitRefusal({ code: 8, details: 'limit reached: limits.maxStreamsPerConnection (1000)' }), true);
    assert.equal(isStreamLimitRefusal({ code: 8, details: 'limit reached: limits.maxBoxes (10)' }), false);
    assert.equal(isStreamLimitRefusal({ code: 14, details: 'limit reached: limits.maxStreamsPerConnection (1000)' }), false);
  });

  test('a relay restarted on its address: the dial naming its new registration gets a new connection, not the old backoff', async () => {
    const first = await startEcho('127.0.0.1:0');
    const server = parseServer(`127.0.0.1:${first.port}`, true);
    // A backoff far longer than the test: without a fresh channel, every call would fail with the old refusal.
    const options = { 'grpc.initial_reconnect_backoff_ms': 120_000, 'grpc.max_reconnect_backoff_ms': 120_000 };
    const dial = (registration: string) => acquireChannel({ server, tlsSkipVerify: false, options, registration });
    const before = dial('relay-a@1');
    assert.equal(await echo(before.client), 'ok');
    first.server.forceShutdown();
    assert.match(await echo(before.client), /UNAVAILABLE|14/, 'the relay is gone');
    await failing(before.client);
    before.release();

    const restarted = await startEcho(`127.0.0.1:${first.port}`);
    try {
      const sameRegistration = dial('relay-a@1');
      assert.equal(sameRegistration.client, before.client, 'the registration it failed against: the channel keeps its backoff');
      assert.match(await echo(sameRegistration.client), /UNAVAILABLE|14/, 'and fails with the old refusal');
      const fresh = dial('relay-a@2');
      assert.notEqual(fresh.client, before.client, 'a new registration: a new channel');
      assert.equal(await echo(fresh.client), 'ok', 'which reaches the restarted relay at once');
      sameRegistration.release();
      assert.equal(before.client.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN, 'the retired channel closes at its last release');
      const next = dial('relay-a@2');
      assert.equal(next.client, fresh.client, 'later dials of that registration share the new channel');
      next.release();
      fresh.release();
    } finally {
      restarted.server.forceShutdown();
    }
  });

  test('registrations named in turn at a failing address: one new channel per registration, not per dial; a retired channel in use closes with the rest', async () => {
    // A port nobody listens on: every connection is refused.
    const closed = await startEcho('127.0.0.1:0');
    closed.server.forceShutdown();
    const server = parseServer(`127.0.0.1:${closed.port}`, true);
    const options = { 'grpc.initial_reconnect_backoff_ms': 120_000, 'grpc.max_reconnect_backoff_ms': 120_000 };
    const dial = (registration: string) => acquireChannel({ server, tlsSkipVerify: false, options, registration });
    const failingDial = async (registration: string): Promise<Client> => {
      const lease = dial(registration);
      assert.match(await echo(lease.client), /UNAVAILABLE|14/);
      await failing(lease.client);
      lease.release();
      return lease.client;
    };
    const first = await failingDial('relay-a@1');
    const second = await failingDial('relay-a@2');
    assert.notEqual(second, first, 'a registration new to the address: a new channel');
    const clients = new Set<Client>([first, second]);
    for (let i = 0; i < 6; i++) clients.add(await failingDial(i % 2 === 0 ? 'relay-a@1' : 'relay-a@2'));
    assert.equal(clients.size, 2, 'both registrations known: the failing channel keeps its backoff');

    const held = dial('relay-a@2');
    assert.equal(held.client, second);
    const third = dial('relay-a@3');
    assert.notEqual(third.client, second, 'a third registration retires the failing channel, still in use');
    assert.notEqual(second.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN, 'open while its call runs');
    closeSharedChannels();
    assert.equal(second.getChannel().getConnectivityState(false), connectivityState.SHUTDOWN, 'closed with the rest');
    held.release();
    third.release();
  });
});

const ECHO_PATH = '/hashmail.test.Echo/Echo';
const identity = (b: Buffer): Buffer => b;

/** A gRPC server answering ECHO_PATH with "ok" on `address` (port 0: any free one). */
async function startEcho(address: string): Promise<{ server: Server; port: number }> {
  const server = new Server();
  server.addService(
    { Echo: { path: ECHO_PATH, requestStream: false, responseStream: false, requestSerialize: identity, requestDeserialize: identity, responseSerialize: identity, responseDeserialize: identity } },
    { Echo: (_call: unknown, done: (err: null, value: Buffer) => void) => done(null, Buffer.from('ok')) },
  );
  const port = await new Promise<number>((resolve, reject) => server.bindAsync(address, ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))));
  return { server, port };
}

/** One call on `client`: its answer, or the failure's code and text. */
function echo(client: Client): Promise<string> {
  return new Promise((resolve) => {
    client.makeUnaryRequest(ECHO_PATH, identity, identity, Buffer.alloc(0), { deadline: Date.now() + 10_000 }, (err: ServiceError | null, value?: Buffer) => {
      resolve(err ? `${err.code} ${err.details}` : String(value));
    });
  });
}

/** Resolves once the client's channel is in TRANSIENT_FAILURE (its connection refused), within 10 s. */
async function failing(client: Client): Promise<void> {
  const channel = client.getChannel();
  const deadline = Date.now() + 10_000;
  for (let state = channel.getConnectivityState(true); state !== connectivityState.TRANSIENT_FAILURE; state = channel.getConnectivityState(true)) {
    await new Promise<void>((resolve, reject) => channel.watchConnectivityState(state, deadline, (err) => (err ? reject(err) : resolve())));
  }
}
