import assert from 'node:assert/strict';
import { after, test } from 'node:test';
import { Keepalive, PING_PAYLOAD, type KeepaliveSocket } from '../../src/transport/rest-ws-v1/keepalive.js';

const INTERVAL_MS = 30_000;
const TIMEOUT_MS = 15_000;
/** Past any jittered first ping (interval x 1.2). */
const DUE_MS = INTERVAL_MS * 1.2 + 1;

class FakeSocket implements KeepaliveSocket {
  pings = 0;
  terminated = false;
  ping(data: Buffer): void {
    assert.deepEqual(data, PING_PAYLOAD);
    this.pings++;
  }
  terminate(): void {
    this.terminated = true;
  }
}

const keepalives: Keepalive[] = [];
after(() => keepalives.forEach((k) => k.stop()));

function make(): Keepalive {
  const k = new Keepalive({ pingIntervalMs: INTERVAL_MS, pongTimeoutMs: TIMEOUT_MS });
  keepalives.push(k);
  return k;
}

test('a silent socket is pinged "are you there?" once due, and dropped when the ping stays unanswered', () => {
  const k = make();
  const t0 = Date.now();
  const socket = new FakeSocket();
  k.track(socket);
  k.tick(t0 + INTERVAL_MS * 0.8 - 1);
  assert.equal(socket.pings, 0, 'not before the (jittered) interval');
  k.tick(t0 + DUE_MS);
  assert.equal(socket.pings, 1);
  k.tick(t0 + DUE_MS + TIMEOUT_MS - 1);
  assert.equal(socket.terminated, false);
  k.tick(t0 + DUE_MS + TIMEOUT_MS);
  assert.equal(socket.terminated, true);
});

test('a pong or any data frame answers the ping', () => {
  const k = make();
  const t0 = Date.now();
  const [pong, data] = [new FakeSocket(), new FakeSocket()];
  const pongEntry = k.track(pong)!;
  const dataEntry = k.track(data)!;
  k.tick(t0 + DUE_MS);
  assert.equal(pong.pings + data.pings, 2);
  pongEntry.sawPong();
  dataEntry.sawData();
  k.tick(t0 + DUE_MS + TIMEOUT_MS + 1);
  assert.equal(pong.terminated || data.terminated, false);
});

test('a socket that sent data within the interval is not pinged; silent for an interval, it is', () => {
  const k = make();
  const t0 = Date.now();
  const socket = new FakeSocket();
  const entry = k.track(socket)!;
  entry.sawData();
  k.tick(t0 + DUE_MS);
  assert.equal(socket.pings, 0);
  k.tick(t0 + DUE_MS * 2 + 1);
  assert.equal(socket.pings, 1);
});

test('pings due together are spread over ticks instead of one burst', () => {
  const k = make();
  const sockets = Array.from({ length: 1000 }, () => new FakeSocket());
  for (const s of sockets) k.track(s);
  // After tracking: a slow tracking loop must not move the first tick past some sockets' due time.
  const t0 = Date.now();
  const pinged = (): number => sockets.filter((s) => s.pings > 0).length;
  k.tick(t0 + DUE_MS);
  const first = pinged();
  assert.ok(first > 0 && first < sockets.length, `first tick pinged ${first} of ${sockets.length}`);
  for (let i = 1; i <= 20 && pinged() < sockets.length; i++) k.tick(t0 + DUE_MS + i);
  assert.equal(pinged(), sockets.length, 'every socket pinged within a few ticks');
  assert.ok(sockets.every((s) => s.pings === 1));
});

test('pingIntervalMs 0 tracks nothing', () => {
  const k = new Keepalive({ pingIntervalMs: 0, pongTimeoutMs: TIMEOUT_MS });
  assert.equal(k.track(new FakeSocket()), null);
});
