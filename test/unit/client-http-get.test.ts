/**
 * The client library's Node HTTP lookup (http-get-node.ts) over kept-alive
 * sockets: a lookup written into a socket the server closes at that moment
 * is sent once more on a fresh connection, and nothing else is repeated.
 * A raw TCP server plays the relay, so the close lands exactly on the
 * second request.
 */
import assert from 'node:assert/strict';
import net from 'node:net';
import { test } from 'node:test';
import { nodeHttpRequest } from '../../src/client/http-get-node.js';

const TEST_TIMEOUT = { timeout: 10_000 };
const BODY = '{"id":"relay-a","address":"127.0.0.1:1"}';
const ANSWER = `HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nConnection: keep-alive\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY}`;

/** Counts header blocks ("\r\n\r\n") on one connection's bytes. */
function onRequests(socket: net.Socket, each: (n: number) => void): void {
  let text = '';
  let seen = 0;
  socket.on('data', (chunk: Buffer) => {
    text += chunk.toString('latin1');
    for (let at = text.indexOf('\r\n\r\n'); at >= 0; at = text.indexOf('\r\n\r\n')) {
      text = text.slice(at + 4);
      each(++seen);
    }
  });
}

interface FakeRelay {
  url: string;
  connections: () => number;
  close: () => Promise<void>;
}

/** Answers every request, but `onSecond` decides what happens to the second request on the first connection. */
async function fakeRelay(onSecond: (socket: net.Socket) => void): Promise<FakeRelay> {
  let connections = 0;
  const sockets = new Set<net.Socket>();
  const server = net.createServer((socket) => {
    const index = ++connections;
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
    socket.on('error', () => undefined);
    onRequests(socket, (n) => {
      if (index === 1 && n === 2) onSecond(socket);
      else socket.write(ANSWER);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  return {
    url: `http://127.0.0.1:${port}/v2/relay?route=abc`,
    connections: () => connections,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

const get = nodeHttpRequest({ tlsSkipVerify: false });
const OPTS = { signal: new AbortController().signal, timeoutMs: 5000 };

test('a lookup on a kept-alive socket the relay closes as it arrives is sent again on a new connection', TEST_TIMEOUT, async () => {
  const relay = await fakeRelay((socket) => socket.destroy());
  try {
    assert.deepEqual(await get(relay.url, OPTS), { status: 200, body: BODY });
    // The second lookup reuses the first socket, which the relay drops on reading it.
    assert.deepEqual(await get(relay.url, OPTS), { status: 200, body: BODY });
    assert.equal(relay.connections(), 2);
  } finally {
    await relay.close();
  }
});

test('a failure after the relay began its answer is not repeated', TEST_TIMEOUT, async () => {
  // Headers with a body cut short: the relay took the lookup, so it is not sent twice.
  const relay = await fakeRelay((socket) => {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${BODY.length}\r\n\r\n${BODY.slice(0, 5)}`);
    setImmediate(() => socket.destroy());
  });
  try {
    await get(relay.url, OPTS);
    await assert.rejects(get(relay.url, OPTS));
    assert.equal(relay.connections(), 1);
  } finally {
    await relay.close();
  }
});

test('a lookup on a fresh connection that is reset is not repeated', TEST_TIMEOUT, async () => {
  const server = net.createServer((socket) => {
    socket.on('error', () => undefined);
    onRequests(socket, () => socket.resetAndDestroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  let connections = 0;
  server.on('connection', () => connections++);
  const { port } = server.address() as net.AddressInfo;
  try {
    await assert.rejects(get(`http://127.0.0.1:${port}/v2/relay?route=abc`, OPTS), (err: NodeJS.ErrnoException) => err.code === 'ECONNRESET');
    assert.equal(connections, 1);
  } finally {
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }
});
