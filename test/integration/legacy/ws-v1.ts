/**
 * The legacy REST/WebSocket gateway (spec section 4) and the section-3
 * behaviours a browser client sees through it, against a real server.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { after, afterEach, before, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import { once, withTimeout } from '../../helpers/async-queue.js';
import { connectGrpc, GrpcSender, type LegacyClient } from '../../helpers/grpc-v1-peer.js';
import type { RunningServer } from '../../helpers/server.js';
import {
  b64,
  b64url,
  dialWs,
  expectedResultFrame,
  HASHMAIL_PATH,
  headerTokens,
  http,
  openReceive,
  openWs,
  openSendSocket,
  parseError,
  readErrorAndEnd,
  readMessage,
  RECEIVE_PATH,
  restCreateBox,
  sendMessage,
  sendRequest,
  type DialOptions,
  type WsConn,
} from '../../helpers/ws-v1.js';
import type { StartTarget } from '../../helpers/legacy-target.js';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function wsV1Suite(start: StartTarget): void {
  const KiB = 1024;
  const MiB = 1024 * KiB;
  const PING_PAYLOAD = 'are you there?';

  const newSid = (): Buffer => randomBytes(64);

  /** Creates a box over REST, so the gateway tests depend on the gateway only. */
  async function restBox(port: number, sid: Buffer): Promise<void> {
    const res = await restCreateBox(port, sid);
    assert.equal(res.status, 200, `REST create: ${res.status} ${res.body}`);
  }

  /** Sockets, calls and clients a test opened; closed after each test. */
  const open = { conns: [] as WsConn[], senders: [] as GrpcSender[] };

  async function closeAll(): Promise<void> {
    for (const s of open.senders.splice(0)) s.cancel();
    await Promise.all(open.conns.splice(0).map((c) => c.close()));
  }

  function track(conn: WsConn): WsConn {
    open.conns.push(conn);
    return conn;
  }

  describe('legacy WebSocket gateway', () => {
    let server: RunningServer;
    let grpc: LegacyClient;
    let port: number;

    const recv = async (sid: Buffer, options?: Parameters<typeof openReceive>[2]): Promise<WsConn> =>
      track(await openReceive(port, sid, options));
    const sendSocket = async (options?: DialOptions): Promise<WsConn> => track(await openSendSocket(port, options));
    const grpcSender = (): GrpcSender => {
      const s = new GrpcSender(grpc);
      open.senders.push(s);
      return s;
    };
    /** A box with a WebSocket reader and a WebSocket writer on it. */
    async function pair(): Promise<{ sid: Buffer; reader: WsConn; writer: WsConn }> {
      const sid = newSid();
      await restBox(port, sid);
      const reader = await recv(sid);
      const writer = await sendSocket();
      return { sid, reader, writer };
    }

    before(async () => {
      server = await start({ config: { websocket: { pingIntervalMs: 200 } } });
      port = server.port;
      grpc = connectGrpc(server.address);
    });
    afterEach(closeAll);
    after(async () => {
      await closeAll();
      grpc?.close();
      await server?.stop();
    });

    test('without method=POST the handshake is a GET and fails with 405 / "Method Not Allowed"', async () => {
      const res = await dialWs(port, RECEIVE_PATH, { method: null });
      if (!res.ok) {
        assert.equal(res.status, 405);
        return;
      }
      const conn = track(res.conn);
      conn.ws.send(JSON.stringify({ stream_id: b64(newSid()) }), () => undefined);
      const err = await readErrorAndEnd(conn);
      assert.equal(err.code, 12);
      assert.equal(err.message, 'Method Not Allowed');
    });

    test('receive before the box exists: error frame "stream not found", then the socket ends', async () => {
      const conn = await recv(newSid());
      const err = await readErrorAndEnd(conn);
      assert.match(err.message, /stream not found/);
      assert.ok([2, 5].includes(err.code), `code ${err.code}`);
    });

    test('a message arrives as one compact {"result":{"desc":..,"msg":..}} frame echoing the request desc', async () => {
      const { sid, reader, writer } = await pair();
      const msg = randomBytes(100);
      await sendMessage(writer, sid, msg);
      const frame = await reader.nextFrame();
      assert.equal(frame, expectedResultFrame(sid, msg));
      assert.equal(reader.events.size, 0);
    });

    for (const size of [0, 1, 4093, 4096, 8189, 65536]) {
      test(`a ${size}-byte message passes WebSocket to WebSocket intact, and the next one too`, async () => {
        const { sid, reader, writer } = await pair();
        const msg = randomBytes(size);
        const next = randomBytes(7);
        await sendMessage(writer, sid, msg);
        await sendMessage(writer, sid, next);
        assert.ok((await readMessage(reader, sid)).equals(msg), `${size}-byte message changed`);
        assert.ok((await readMessage(reader, sid)).equals(next), 'the message after it changed or was lost');
      });
    }

    for (const size of [1 * MiB, 4 * MiB - 1 * KiB]) {
      test(`a ${size}-byte message from a gRPC writer reaches a WebSocket reader intact, and the next one too`, async () => {
        const sid = newSid();
        await restBox(port, sid);
        const reader = await recv(sid);
        const writer = grpcSender();
        const msg = randomBytes(size);
        const next = randomBytes(3);
        await writer.write(sid, msg);
        await writer.write(sid, next);
        assert.ok((await readMessage(reader, sid, 30_000)).equals(msg), `${size}-byte message changed`);
        assert.ok((await readMessage(reader, sid)).equals(next), 'the message after it changed or was lost');
      });
    }

    test('one send message may carry several objects with whitespace around them', async () => {
      const { sid, reader, writer } = await pair();
      const msgs = [randomBytes(10), randomBytes(0), randomBytes(300)];
      const text = ` \n${sendRequest(sid, msgs[0])}\n\t${JSON.stringify({ desc: { stream_id: b64(sid) }, msg: b64(msgs[1]) }, null, 2)}  ${sendRequest(sid, msgs[2])} \r\n`;
      writer.ws.send(text);
      for (const msg of msgs) assert.ok((await readMessage(reader, sid)).equals(msg));
    });

    test('a binary WebSocket message is one JSON request too', async () => {
      const { sid, reader, writer } = await pair();
      const msg = randomBytes(50);
      writer.ws.send(Buffer.from(sendRequest(sid, msg)), { binary: true });
      assert.ok((await readMessage(reader, sid)).equals(msg));
    });

    test('a second request message on a receive socket ends the socket', async () => {
      const { sid, reader, writer } = await pair();
      const msg = randomBytes(5);
      await sendMessage(writer, sid, msg);
      assert.ok((await readMessage(reader, sid)).equals(msg), 'reader was not attached');
      reader.ws.send(JSON.stringify({ stream_id: b64(sid) }));
      await reader.awaitEnd();
    });

    test('a second reader on the same box gets "read stream occupied"; the first keeps reading', async () => {
      const { sid, reader, writer } = await pair();
      const first = randomBytes(5);
      await sendMessage(writer, sid, first);
      assert.ok((await readMessage(reader, sid)).equals(first), 'first reader was not attached');
      const second = await recv(sid);
      const err = await readErrorAndEnd(second);
      assert.match(err.message, /read stream occupied/);
      const more = randomBytes(6);
      await sendMessage(writer, sid, more);
      assert.ok((await readMessage(reader, sid)).equals(more));
    });

    test('a second writer on the same box is refused ("write stream occupied"); its message is not delivered', async () => {
      const { sid, reader, writer } = await pair();
      const first = randomBytes(5);
      await sendMessage(writer, sid, first);
      assert.ok((await readMessage(reader, sid)).equals(first), 'first writer did not take the slot');
      const intruder = await sendSocket();
      intruder.ws.send(sendRequest(sid, Buffer.from('intruder')));
      // The reference answers (unwrapped) only after the client's next write; ours may answer at once.
      let ev = await intruder.events.next(5_000, 'answer to the second writer').catch(() => null);
      if (ev === null) {
        intruder.ws.send(sendRequest(sid, Buffer.from('intruder')), () => undefined);
        ev = await intruder.events.next(5_000, 'answer to the second writer');
      }
      if (ev.kind === 'frame') {
        assert.ok(ev.text.startsWith('{"error":') || ev.text.startsWith('{"code":'), ev.text);
        assert.match(ev.text, /write stream occupied/);
        await intruder.awaitEnd();
      }
      const more = randomBytes(6);
      await sendMessage(writer, sid, more);
      assert.ok((await readMessage(reader, sid)).equals(more), 'the holder lost the slot or the intruder wrote');
    });

    test('accepts streamId and URL-safe unpadded base64; answers in stream_id and standard base64', async () => {
      let sid = newSid();
      for (let i = 0; i < 100 && !/[+/]/.test(b64(sid)); i++) sid = newSid();
      await restBox(port, sid);
      const reader = await recv(sid, { field: 'streamId', encode: b64url });
      const writer = await sendSocket();
      let msg = randomBytes(40);
      for (let i = 0; i < 100 && !/[+/]/.test(b64(msg)); i++) msg = randomBytes(40);
      writer.ws.send(sendRequest(sid, msg, 'streamId', b64url));
      assert.equal(await reader.nextFrame(), expectedResultFrame(sid, msg));
    });

    test('accepts standard unpadded and URL-safe padded base64', async () => {
      const sid = newSid();
      await restBox(port, sid);
      const reader = await recv(sid, { encode: (b) => b64(b).replace(/=+$/, '') });
      const writer = await sendSocket();
      const msg = randomBytes(41);
      writer.ws.send(JSON.stringify({ desc: { stream_id: b64url(sid) + '==' }, msg: b64url(msg) + '=' }));
      assert.equal(await reader.nextFrame(), expectedResultFrame(sid, msg));
    });

    test('an unknown field is INVALID_ARGUMENT (code 3), then the socket ends', async () => {
      const sid = newSid();
      await restBox(port, sid);
      const conn = track(await openWs(port, RECEIVE_PATH));
      conn.ws.send(JSON.stringify({ stream_id: b64(sid), color: 'blue' }));
      const err = await readErrorAndEnd(conn);
      assert.equal(err.code, 3);
    });

    test('malformed JSON gets an error frame (INVALID_ARGUMENT), then the socket ends', async () => {
      const conn = track(await openWs(port, RECEIVE_PATH));
      conn.ws.send('{"stream_id": "AAAA');
      const err = await readErrorAndEnd(conn);
      assert.equal(err.code, 3);
    });

    test('an oversized JSON request (64 KiB on a receive socket) gets an error frame (RESOURCE_EXHAUSTED or INVALID_ARGUMENT), then the socket ends', async () => {
      const conn = track(await openWs(port, RECEIVE_PATH));
      conn.ws.send(`{"stream_id":"${'A'.repeat(64 * KiB)}"}`, () => undefined);
      const err = await readErrorAndEnd(conn);
      assert.ok([3, 8].includes(err.code), `code ${err.code}: ${err.message}`);
    });

    test('a 12 MiB WebSocket message ends the socket (error frame or close) and others are still served', async () => {
      const conn = track(await openWs(port, RECEIVE_PATH));
      conn.ws.send(`{"stream_id":"${'A'.repeat(12 * MiB)}"}`, () => undefined);
      const end = await conn.awaitEnd(30_000);
      for (const frame of end.frames) parseError(frame);
      const { sid, reader, writer } = await pair();
      const msg = randomBytes(9);
      await sendMessage(writer, sid, msg);
      assert.ok((await readMessage(reader, sid)).equals(msg));
    });

    test(`the server pings with payload "${PING_PAYLOAD}"`, async () => {
      const conn = await sendSocket();
      const [data] = await once<[Buffer]>(conn.ws, 'ping', 5_000);
      assert.equal(data.toString('utf8'), PING_PAYLOAD);
    });

    test('a Sec-WebSocket-Protocol Grpc-Metadata-Macaroon+<value> handshake is accepted and no subprotocol is echoed', async () => {
      const sid = newSid();
      await restBox(port, sid);
      const reader = await recv(sid, { headers: { 'Sec-WebSocket-Protocol': 'Grpc-Metadata-Macaroon+abc' } });
      assert.equal(reader.upgradeHeaders['sec-websocket-protocol'], undefined);
      const writer = await sendSocket({ headers: { 'Sec-WebSocket-Protocol': 'Grpc-Metadata-Macaroon+abc' } });
      const msg = randomBytes(8);
      await sendMessage(writer, sid, msg);
      assert.ok((await readMessage(reader, sid)).equals(msg));
    });

    test('CORS preflight on the receive path: 200, any origin, the spec methods and headers', async () => {
      const res = await http(port, 'OPTIONS', RECEIVE_PATH, {
        headers: {
          Origin: 'https://app.example',
          'Access-Control-Request-Method': 'POST',
          'Access-Control-Request-Headers': 'Content-Type, Grpc-Metadata-Macaroon',
        },
      });
      assert.equal(res.status, 200);
      assert.equal(res.headers['access-control-allow-origin'], '*');
      const methods = headerTokens(res.headers['access-control-allow-methods']);
      for (const m of ['get', 'post', 'options']) assert.ok(methods.includes(m), `methods ${methods.join(',')} lack ${m}`);
      const headers = headerTokens(res.headers['access-control-allow-headers']);
      for (const h of ['content-type', 'authorization', 'grpc-metadata-macaroon']) assert.ok(headers.includes(h), `headers ${headers.join(',')} lack ${h}`);
    });

    test('a POST on a hashmail path echoes the Origin and names the spec methods and headers', async () => {
      const res = await restCreateBox(port, newSid(), { Origin: 'https://app.example' });
      assert.equal(res.status, 200, res.body);
      assert.equal(res.headers['access-control-allow-origin'], 'https://app.example');
      const methods = headerTokens(res.headers['access-control-allow-methods']);
      for (const m of ['get', 'post', 'put', 'delete']) assert.ok(methods.includes(m), `methods ${methods.join(',')} lack ${m}`);
      const headers = headerTokens(res.headers['access-control-allow-headers']);
      for (const h of ['content-type', 'accept', 'grpc-metadata-macaroon']) assert.ok(headers.includes(h), `headers ${headers.join(',')} lack ${h}`);
    });

    test('REST create answers exactly {"success":{"desc":null}}; a second create is ALREADY_EXISTS "stream already active"', async () => {
      const sid = newSid();
      const first = await restCreateBox(port, sid);
      assert.equal(first.status, 200);
      assert.equal(first.body, '{"success":{"desc":null}}');
      const second = await restCreateBox(port, sid);
      assert.equal(second.status, 409, second.body);
      const body = JSON.parse(second.body) as { code: number; message: string };
      assert.equal(body.code, 6);
      assert.match(body.message, /stream already active/);
    });

    test('REST DELETE with desc.stream_id= answers "auth type required"', async () => {
      const sid = newSid();
      await restBox(port, sid);
      const res = await http(port, 'DELETE', `${HASHMAIL_PATH}?desc.stream_id=${encodeURIComponent(b64(sid))}`);
      assert.ok(res.status >= 400, `status ${res.status}`);
      const body = JSON.parse(res.body) as { code: number; message: string };
      assert.match(body.message, /auth type required/);
      assert.ok([2, 3].includes(body.code), `code ${body.code}`);
    });

    test('unknown paths answer 404', async () => {
      for (const [method, path] of [
        ['GET', '/'],
        ['GET', '/v1/lightning-node-connect/hashmail/other'],
        ['POST', '/v1/lightning-node-connect/hashmail/receive/x'],
        ['POST', '/v2/lightning-node-connect/hashmail'],
        ['GET', '/favicon.ico'],
      ] as const) {
        const res = await http(port, method, path, { headers: { 'content-type': 'application/json' }, body: method === 'POST' ? '{}' : undefined });
        assert.equal(res.status, 404, `${method} ${path}: ${res.status} ${res.body}`);
      }
    });
  });

  describe('WebSocket keepalive (ping every 100 ms, pong timeout 500 ms)', () => {
    let server: RunningServer;

    before(async () => {
      // The writer below sends for about 2 s, well past ping + pong timeout; the timeout leaves room for a loaded machine's stalls.
      server = await start({ config: { websocket: { pingIntervalMs: 100, pongTimeoutMs: 500 } } });
    });
    afterEach(closeAll);
    after(async () => {
      await closeAll();
      await server?.stop();
    });

    test('a send socket that never answers pings but keeps sending data stays connected', async () => {
      const sid = newSid();
      await restBox(server.port, sid);
      const reader = track(await openReceive(server.port, sid));
      const writer = track(await openSendSocket(server.port, { autoPong: false }));
      const MESSAGES = 40;
      for (let i = 0; i < MESSAGES && !writer.isClosed(); i++) {
        await sendMessage(writer, sid, Buffer.from([i]));
        await delay(50);
      }
      assert.equal(writer.isClosed(), false, 'a writer sending data was dropped for not answering pings');
      // The server may ping it or not (data within an interval is life enough); either way it is never dropped.
      for (let i = 0; i < MESSAGES; i++) assert.ok((await readMessage(reader, sid)).equals(Buffer.from([i])));
    });

    test('a silent socket that does not answer pings is dropped', async () => {
      const sid = newSid();
      await restBox(server.port, sid);
      const silent = track(await openReceive(server.port, sid, { autoPong: false }));
      await withTimeout(silent.closed, 10_000, 'drop of the silent socket');
      assert.ok(silent.pings.length >= 1, 'dropped without having been pinged');
    });
  });

  describe('WebSocket at shutdown', () => {
    let server: RunningServer;

    before(async () => {
      server = await start();
    });
    after(async () => {
      await closeAll();
      await server?.stop();
    });

    test('SIGTERM ends an attached receive with error frame UNAVAILABLE (14) "server shutting down"', async () => {
      const sid = newSid();
      await restBox(server.port, sid);
      const reader = track(await openReceive(server.port, sid));
      const writer = track(await openSendSocket(server.port));
      await sendMessage(writer, sid, Buffer.from('attached?'));
      assert.ok((await readMessage(reader, sid)).equals(Buffer.from('attached?')));
      const stopped = server.stop();
      const frame = await reader.nextFrame();
      const err = parseError(frame);
      assert.equal(err.code, 14);
      assert.equal(err.message, 'server shutting down');
      await reader.awaitEnd();
      await stopped;
    });
  });
}
