/**
 * The gateway's v2 WebSocket pass-through (src/gateway/v2-websocket-proxy.ts)
 * against stand-ins on loopback: an HTTP server hands it upgrades, and the
 * "relay" is a bare TCP server that reads the proxied request and never
 * answers (a stopped or overloaded relay). The gateway must give up on it
 * after upgradeAnswerMs, not hold both connections for good.
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

test('a relay that never answers the upgrade: the client gets 502 after upgradeAnswerMs and the relay-side connection is closed', async () => {
  let relaySide: net.Socket | null = null;
  const relay = net.createServer();
  const requested = new Promise<void>((resolve) =>
    relay.on('connection', (s) => {
      relaySide = s;
      s.on('error', () => undefined);
      s.once('data', () => resolve());
    }),
  );
  cleanups.push(() => relaySide?.destroy());
  const relayPort = await listen(relay);
  const proxy = new V2WebSocketProxy({
    lookup: async () => ({ id: 'relay-stand-in', address: `127.0.0.1:${relayPort}` }),
    logger: createLogger({ level: 'silent', format: 'json' }),
    stats: new RelayStats(),
    insecure: true,
    upgradeAnswerMs: ANSWER_MS,
  });
  cleanups.push(() => proxy.close());
  const front = http.createServer();
  front.on('upgrade', (req, socket, head) => proxy.handleUpgrade(req, socket, head));
  const frontPort = await listen(front);

  const client = net.connect(frontPort, '127.0.0.1');
  client.on('error', () => undefined);
  client.write(
    `GET /v2/mailbox?route=${ROUTE} HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n` +
      'Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Protocol: hashmail.v2\r\n\r\n',
  );
  let answer = '';
  client.setEncoding('utf8');
  client.on('data', (d: string) => (answer += d));
  await withTimeout(requested, WAIT_MS, 'the request at the relay');
  assert.ok(relaySide, 'the relay took a connection');
  await withTimeout(once(relaySide as net.Socket, 'close'), WAIT_MS, 'the gateway to give up on the relay');
  await withTimeout(once(client, 'close'), WAIT_MS, 'the answer to the client');
  assert.match(answer, /^HTTP\/1\.1 502 /);
  assert.match(answer, /"message":"gateway: relay unreachable"/);
  assert.equal(proxy.openTunnels, 0);
});
