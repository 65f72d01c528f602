/**
 * The gateway's v2 WebSocket pass-through (src/gateway/v2-websocket-proxy.ts)
 * against stand-ins on loopback: an HTTP server hands it upgrades, and the
 * "relay" is a bare TCP server that reads the proxied request and never
 * answers (a stopped or overloaded relay). The gateway must give up on it
 * after upgradeAnswerMs, not hold both connections for good; a client that
 * leaves while it waits takes the relay side with it at once.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import http from 'node:http';
import net, { type AddressInfo } from 'node:net';
import { after, test } from 'node:test';
import { V2WebSocketProxy } from '../../src/gateway/v2-websocket-proxy.js';
import { createLogger } from '../../src/observe/logger.js';
import { RelayStats } from '../../src/observe/stats.js';
import { withTimeout } from '../helpers/async-queue.js';

const WAIT_MS = 5_000;
/** The proxy's upgradeAnswerMs here: short, so the test is quick. */
const ANSWER_MS = 200;
const ROUTE = 'A'.repeat(43);
const cleanups: (() => void)[] = [];
after(() => cleanups.forEach((fn) => fn()));

async function listen(server: net.Server): Promise<number> {
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  cleanups.push(() => server.close());
  return (server.address() as AddressInfo).port;
}

const UPGRADE_REQUEST =
  `GET /v2/mailbox?route=${ROUTE} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
  'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: hashmail.v2\r\n\r\n';

/**
 * A relay stand-in and a gateway front with the proxy between; `onRequest`
 * gets the relay side once the proxied request head arrived (and what came
 * with it).
 */
async function standIn(upgradeAnswerMs: number, onRequest: (relaySide: net.Socket, received: string) => void): Promise<{ frontPort: number; proxy: V2WebSocketProxy }> {
  const relay = net.createServer((s) => {
    s.on('error', () => undefined);
    cleanups.push(() => s.destroy());
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString('latin1');
      if (!text.includes('\r\n\r\n')) return;
      s.off('data', onData);
      onRequest(s, text);
    };
    s.on('data', onData);
  });
  const relayPort = await listen(relay);
  const proxy = new V2WebSocketProxy({
    lookup: async () => ({ id: 'relay-stand-in', address: `127.0.0.1:${relayPort}`, startedAt: 1 }),
    logger: createLogger({ level: 'silent', format: 'json' }),
    stats: new RelayStats(),
    insecure: true,
    upgradeAnswerMs,
  });
  cleanups.push(() => proxy.close());
  const front = http.createServer();
  front.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  return { frontPort: await listen(front), proxy };
}

function clientOf(port: number): net.Socket {
  const client = net.connect(port, '127.0.0.1');
  client.on('error', () => undefined);
  cleanups.push(() => client.destroy());
  return client;
}

test('a relay that never answers the upgrade: the client gets 502 after upgradeAnswerMs and the relay-side connection is closed', async () => {
  let relaySide: net.Socket | null = null;
  let requested!: () => void;
  const request = new Promise<void>((resolve) => (requested = resolve));
  const { frontPort, proxy } = await standIn(ANSWER_MS, (s) => {
    relaySide = s;
    requested();
  });
  const client = clientOf(frontPort);
  client.write(UPGRADE_REQUEST);
  let answer = '';
  client.setEncoding('utf8');
  client.on('data', (d: string) => (answer += d));
  await withTimeout(request, WAIT_MS, 'the request at the relay');
  assert.ok(relaySide, 'the relay took a connection');
  await withTimeout(once(relaySide as net.Socket, 'close'), WAIT_MS, 'the gateway to give up on the relay');
  await withTimeout(once(client, 'close'), WAIT_MS, 'the answer to the client');
  assert.match(answer, /^HTTP\/1\.1 502 /);
  assert.match(answer, /"message":"gateway: relay unreachable"/);
  assert.equal(proxy.openTunnels, 0);
});

test('a client that leaves while the relay has not answered: the relay-side connection closes at once, not at upgradeAnswerMs', async () => {
  let requested!: (s: net.Socket) => void;
  const request = new Promise<net.Socket>((resolve) => (requested = resolve));
  // upgradeAnswerMs far past the test's wait: only the client's leaving can close the relay side in time.
  const { frontPort, proxy } = await standIn(10 * WAIT_MS, (s) => requested(s));
  const client = clientOf(frontPort);
  client.write(UPGRADE_REQUEST);
  const relaySide = await withTimeout(request, WAIT_MS, 'the request at the relay');
  client.end();
  await withTimeout(once(relaySide, 'close'), WAIT_MS, 'the relay side to close after the client left');
  assert.equal(proxy.openTunnels, 0);
});

test('bytes a client sends before the 101 reach the relay after the request, in order, once upgraded', async () => {
  let relayGot = '';
  let upgraded!: () => void;
  const done = new Promise<void>((resolve) => (upgraded = resolve));
  const { frontPort, proxy } = await standIn(10 * WAIT_MS, (s, head) => {
    relayGot = head.slice(head.indexOf('\r\n\r\n') + 4);
    s.on('data', (d: Buffer) => {
      relayGot += d.toString('latin1');
      if (relayGot === 'early-one|early-two|after') upgraded();
    });
    s.write('HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n');
  });
  const client = clientOf(frontPort);
  // The first early bytes come with the request (the upgrade's head), the next in a write of their own.
  client.write(UPGRADE_REQUEST + 'early-one|');
  client.write('early-two|');
  let answer = '';
  client.on('data', (d: Buffer) => {
    answer += d.toString('latin1');
    if (answer.startsWith('HTTP/1.1 101') && answer.includes('\r\n\r\n')) client.write('after');
  });
  await withTimeout(done, WAIT_MS, 'the early bytes and the later ones at the relay');
  assert.equal(relayGot, 'early-one|early-two|after');
  assert.equal(proxy.openTunnels, 1);
});
