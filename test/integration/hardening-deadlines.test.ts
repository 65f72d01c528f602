/**
 * Deadlines we enforce ourselves, since the http.Server fed emitted
 * connections never runs Node's: HTTP/1.1 headers (slowloris, upgrades that
 * never finish), non-streaming request bodies, idle kept-alive connections,
 * and the TLS handshake. Streaming REST calls and WebSocket connections live
 * past every one of them.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DEADLINE_CLOSE_GRACE_MS } from '../../src/transport/http1-deadlines.js';
import { connect, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import { inBatches, openRaw, type RawConn } from '../helpers/raw-http.js';
import { expectRecovered, footprint, ProbeSession } from '../helpers/server-health.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { b64, expectedResultFrame, HASHMAIL_PATH, openReceive, RECEIVE_PATH, SEND_PATH, sendRequest } from '../helpers/ws-v1.js';

const MiB = 1024 * 1024;
const RSS_GROWTH_BOUND_BYTES = 100 * MiB;
const HEADERS_TIMEOUT_MS = 1_000;
const REQUEST_TIMEOUT_MS = 1_000;
const IDLE_TIMEOUT_MS = 1_000;
const TLS_HANDSHAKE_TIMEOUT_MS = 1_000;
/** A deadline, the grace after it, and room for a loaded test machine. */
const CLOSE_BOUND_MS = 1_000 + DEADLINE_CLOSE_GRACE_MS + 2_500;
/** Longer than every HTTP/1.1 deadline together: what must outlive them is held this long. */
const OUTLIVE_MS = HEADERS_TIMEOUT_MS + REQUEST_TIMEOUT_MS + IDLE_TIMEOUT_MS + 500;
const SLOWLORIS = 50;
const TRICKLE_MS = 200;
const PARALLEL = 25;

const TIMEOUT_RESPONSE = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

function chunk(text: string): string {
  return `${Buffer.byteLength(text).toString(16)}\r\n${text}\r\n`;
}

/** Resolves true if `conn` is still open after `ms` (it must outlive a deadline). */
async function staysOpen(conn: RawConn, ms: number): Promise<boolean> {
  return conn.whenClosed(ms).then(
    () => false,
    () => true,
  );
}

describe('HTTP/1.1 deadlines', () => {
  let server: RunningServer;
  let probe: ProbeSession;
  let grpc: V1Client;
  const opened: RawConn[] = [];

  before(async () => {
    server = await startServer({
      config: { http: { headersTimeoutMs: HEADERS_TIMEOUT_MS, requestTimeoutMs: REQUEST_TIMEOUT_MS, idleTimeoutMs: IDLE_TIMEOUT_MS } },
    });
    probe = await new ProbeSession(server).open();
    grpc = connect(server.address);
  });
  after(async () => {
    for (const c of opened.splice(0)) c.destroy();
    grpc.close();
    probe.close();
    await server.stop();
  });

  const open = async (): Promise<RawConn> => {
    const conn = await openRaw(server.port);
    opened.push(conn);
    return conn;
  };

  test(`${SLOWLORIS} slowloris sockets (trickled headers, one byte, a partial preface) are closed at the headers deadline`, async () => {
    const base = await footprint(server);
    const conns: RawConn[] = [];
    await inBatches(SLOWLORIS, PARALLEL, async () => {
      conns.push(await open());
    });
    const started = Date.now();
    conns.forEach((c, i) => {
      if (i % 3 === 0) c.socket.write('GET /nope HTTP/1.1\r\nHost: x\r\n');
      else if (i % 3 === 1) c.socket.write('G');
      else c.socket.write('PR'); // could still become the HTTP/2 preface
    });
    // The trickle never completes a header block, however long it goes on.
    const trickle = setInterval(() => {
      conns.forEach((c, i) => {
        if (i % 3 === 0 && !c.closed) c.socket.write('X-Slow: 1\r\n');
      });
    }, TRICKLE_MS);
    try {
      await Promise.all(conns.map((c, i) => c.whenClosed(CLOSE_BOUND_MS, `slowloris ${i}`)));
    } finally {
      clearInterval(trickle);
    }
    assert.ok(Date.now() - started < CLOSE_BOUND_MS);
    conns.forEach((c, i) => {
      // A partial preface is dropped before HTTP/1.1 is decided; the others get the 408 Node would send.
      assert.equal(c.received(), i % 3 === 2 ? '' : TIMEOUT_RESPONSE, `slowloris ${i}`);
    });
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'slowloris' });
  });

  test('an upgrade request that never finishes its headers is closed at the headers deadline', async () => {
    const base = await footprint(server);
    const conn = await open();
    conn.socket.write(`GET ${RECEIVE_PATH}?method=POST HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n`);
    await conn.whenClosed(CLOSE_BOUND_MS, 'stalled upgrade');
    assert.equal(conn.received(), TIMEOUT_RESPONSE);
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'stalled upgrade' });
  });

  test('a box-create body that never completes is closed at the request deadline', async () => {
    const base = await footprint(server);
    const conn = await open();
    conn.socket.write(`POST ${HASHMAIL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 200\r\n\r\n{"desc":`);
    await conn.whenClosed(CLOSE_BOUND_MS, 'slow body');
    assert.equal(conn.received(), TIMEOUT_RESPONSE);
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'slow body' });
  });

  test('a kept-alive connection with no request in progress is closed at the idle deadline', async () => {
    const base = await footprint(server);
    const conn = await open();
    conn.socket.write('GET /nope HTTP/1.1\r\nHost: x\r\n\r\n');
    await conn.whenClosed(CLOSE_BOUND_MS + IDLE_TIMEOUT_MS, 'idle connection');
    assert.match(conn.received(), /^HTTP\/1.1 404 /);
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'idle connection' });
  });

  test('streaming REST send and receive outlive every deadline and still relay', async () => {
    const sendSid = randomSid();
    const recvSid = randomSid();
    await grpc.createBox(sendSid);
    await grpc.createBox(recvSid);
    const reader = grpc.openReader(sendSid);
    const writer = grpc.openWriter(recvSid);

    // send: a chunked body that stays open, one message now and one after every deadline has passed.
    const send = await open();
    send.socket.write(`POST ${SEND_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n`);
    send.socket.write(chunk(sendRequest(sendSid, Buffer.from('early'))));
    assert.equal((await reader.next()).toString(), 'early');

    // receive: the body is complete, the answer streams for as long as the session lives.
    const body = JSON.stringify({ stream_id: b64(recvSid) });
    const receive = await open();
    receive.socket.write(`POST ${RECEIVE_PATH} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`);

    assert.ok(await staysOpen(send, OUTLIVE_MS), 'streaming send closed by a deadline');
    assert.ok(!receive.closed, 'streaming receive closed by a deadline');
    send.socket.write(chunk(sendRequest(sendSid, Buffer.from('late'))));
    assert.equal((await reader.next()).toString(), 'late');
    await writer.write(Buffer.from('late too'));
    const expected = expectedResultFrame(recvSid, Buffer.from('late too'));
    for (let i = 0; i < 100 && !receive.received().includes(expected); i++) await new Promise((r) => setTimeout(r, 20));
    assert.ok(receive.received().includes(expected), 'the streaming receive got the late message');
  });

  test('a WebSocket connection after its upgrade outlives every deadline (the ws keepalive owns it)', async () => {
    const sid = randomSid();
    await grpc.createBox(sid);
    const ws = await openReceive(server.port, sid);
    try {
      const closedEarly = await Promise.race([ws.closed.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), OUTLIVE_MS))]);
      assert.equal(closedEarly, false, 'WebSocket closed by an HTTP/1.1 deadline');
      const writer = grpc.openWriter(sid);
      await writer.write(Buffer.from('still here'));
      assert.equal(await ws.nextFrame(), expectedResultFrame(sid, Buffer.from('still here')));
    } finally {
      await ws.close();
    }
  });
});

test('the next request on a kept-alive connection gets the headers deadline, not the (longer) idle one', async () => {
  const LONG_IDLE_MS = 30_000;
  const server = await startServer({ config: { http: { headersTimeoutMs: HEADERS_TIMEOUT_MS, idleTimeoutMs: LONG_IDLE_MS } } });
  const probe = await new ProbeSession(server).open();
  const conn = await openRaw(server.port);
  try {
    const base = await footprint(server);
    conn.socket.write('GET /nope HTTP/1.1\r\nHost: x\r\n\r\n');
    for (let i = 0; i < 100 && !/^HTTP\/1.1 404 [^]*\r\n\r\n/.test(conn.received()); i++) await new Promise((r) => setTimeout(r, 20));
    const answered = conn.received().length;
    conn.socket.write('GET /nope HTTP/1.1\r\nHost: x\r\n');
    // At most two headers deadlines after its first byte, far below the idle deadline.
    await conn.whenClosed(2 * HEADERS_TIMEOUT_MS + CLOSE_BOUND_MS, 'stalled second request');
    assert.equal(conn.received().slice(answered), TIMEOUT_RESPONSE);
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'stalled second request' });
  } finally {
    conn.destroy();
    probe.close();
    await server.stop();
  }
});

describe('TLS handshake deadline', () => {
  let server: RunningServer;
  let probe: ProbeSession;

  before(async () => {
    server = await startServer({
      insecure: false,
      config: { server: { tlsHandshakeTimeoutMs: TLS_HANDSHAKE_TIMEOUT_MS }, http: { headersTimeoutMs: HEADERS_TIMEOUT_MS } },
    });
    probe = await new ProbeSession(server, { tlsCa: readFileSync(join(server.dataDir, 'tls.cert')) }).open();
  });
  after(async () => {
    probe.close();
    await server.stop();
  });

  test('stalled handshakes (partial ClientHello, nothing at all) are dropped within the configured time', async () => {
    const base = await footprint(server);
    const sockets: net.Socket[] = [];
    try {
      const closes = [0, 1, 2, 3].map(async (i) => {
        const socket = net.connect(server.port, '127.0.0.1');
        sockets.push(socket);
        socket.on('error', () => undefined);
        await new Promise((r) => socket.once('connect', r));
        const started = Date.now();
        // A TLS record header announcing 512 bytes of handshake, and 1 of them.
        if (i % 2 === 0) socket.write(Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01]));
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error(`stalled handshake ${i} not dropped within ${CLOSE_BOUND_MS} ms`)), CLOSE_BOUND_MS);
          socket.once('close', () => {
            clearTimeout(timer);
            resolve();
          });
        });
        assert.ok(Date.now() - started < CLOSE_BOUND_MS);
      });
      await Promise.all(closes);
    } finally {
      for (const s of sockets) s.destroy();
    }
    await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'stalled TLS handshakes' });
  });
});
