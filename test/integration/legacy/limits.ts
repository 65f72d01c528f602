/**
 * The public listener's limits as a legacy client meets them: connections
 * per address and streams per connection refused with RESOURCE_EXHAUSTED
 * naming the limit, an oversized request line or headers answered 431 and a
 * malformed request 400 with text bodies, a REST body declared over the
 * small-request limit refused at once with 413. Each case leaves the
 * server serving. A gateway's front is serve's listener, so the suite runs
 * against both targets unchanged.
 */
import assert from 'node:assert/strict';
import { once } from 'node:events';
import net from 'node:net';
import { after, afterEach, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { connect, randomSid } from '../../helpers/grpc-v1.js';
import type { LegacyTarget, StartTarget } from '../../helpers/legacy-target.js';
import { rawHttpExchange } from '../../helpers/raw-http.js';

/** How long the server may take to see closed connections go (polled). */
const CLOSE_SEEN_MS = 20_000;
const POLL_MS = 50;

const createBoxRequest = (sid: Buffer): string => {
  const body = JSON.stringify({ desc: { stream_id: sid.toString('base64') }, lnd_auth: {} });
  return `POST /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: ${body.length}\r\n\r\n${body}`;
};
const NOT_FOUND_REQUEST = 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n';

/** The suite, against the target `start` starts (test/helpers/legacy-target.ts). */
export function limitsSuite(start: StartTarget): void {
  const sockets: net.Socket[] = [];
  afterEach(() => {
    for (const s of sockets.splice(0)) s.destroy();
  });
  const openSocket = async (port: number): Promise<net.Socket> => {
    const socket = net.connect(port, '127.0.0.1');
    sockets.push(socket);
    await once(socket, 'connect');
    return socket;
  };

  test('connections per address over the limit get RESOURCE_EXHAUSTED naming the limit (HTTP/1.1 and gRPC)', async () => {
    const server = await start({ config: { limits: { maxConnectionsPerAddress: 2 } } });
    try {
      const held: net.Socket[] = [];
      for (let i = 0; i < 2; i++) {
        const socket = await openSocket(server.port);
        assert.match(await rawHttpExchange(socket, NOT_FOUND_REQUEST), /^HTTP\/1.1 404/);
        held.push(socket);
      }
      const third = await openSocket(server.port);
      const refused = await rawHttpExchange(third, NOT_FOUND_REQUEST);
      assert.match(refused, /^HTTP\/1.1 429/);
      assert.match(refused, /limit reached: limits\.maxConnectionsPerAddress \(2\)/);

      const client = connect(server.address);
      const err = await client.newCipherBox({ desc: { streamId: randomSid() }, hasAuth: true }).then(
        () => null,
        (e: grpc.ServiceError) => e,
      );
      assert.ok(err, 'a gRPC connection over the limit fails');
      assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(err.details, /limits\.maxConnectionsPerAddress/);
      client.close();

      for (const s of [...held, third]) s.destroy();
      // Once the server has seen every earlier connection close, a new one is served again.
      const deadline = Date.now() + CLOSE_SEEN_MS;
      while ((await server.metric('hashmail_open_connections')) !== 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, POLL_MS));
      assert.match(await rawHttpExchange(await openSocket(server.port), NOT_FOUND_REQUEST), /^HTTP\/1.1 404/);
    } finally {
      await server.stop();
    }
  });

  test('streams per connection over the limit get RESOURCE_EXHAUSTED naming the limit; others on the connection go on', async () => {
    const server = await start({ config: { limits: { maxStreamsPerConnection: 3 } } });
    const client = connect(server.address);
    const other = connect(server.address);
    try {
      const sids = [randomSid(), randomSid(), randomSid(), randomSid()];
      for (const sid of sids) await client.createBox(sid);
      const readers = sids.slice(0, 3).map((sid) => client.openReader(sid));
      // Each reader proven open end to end (a message written from another connection reaches it), so the
      // fourth is the one over the limit.
      for (const [i, reader] of readers.entries()) {
        const writer = other.openWriter(sids[i]);
        await writer.write(Buffer.from(`open ${i}`));
        assert.equal((await reader.next()).toString(), `open ${i}`);
        await writer.end();
      }
      const fourth = client.openReader(sids[3]);
      const status = await fourth.ended();
      assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
      assert.match(status.details, /limit reached: limits\.maxStreamsPerConnection \(3\)/);
      // The three open streams still work.
      const writer = other.openWriter(sids[0]);
      await writer.write(Buffer.from('still here'));
      assert.equal((await readers[0].next()).toString(), 'still here');
    } finally {
      client.close();
      other.close();
      await server.stop();
    }
  });

  describe('oversized and malformed HTTP', () => {
    let server: LegacyTarget;
    before(async () => {
      server = await start();
    });
    after(async () => {
      await server.stop();
    });

    test("a request line or headers past Node's limit get 431 with a text body a browser can read; a malformed request 400; the server serves on", async () => {
      const long = await rawHttpExchange(await openSocket(server.port), `GET /v2/relay?route=${'A'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
      assert.match(long, /^HTTP\/1.1 431 Request Header Fields Too Large\r\n/);
      assert.match(long, /access-control-allow-origin: \*/i);
      assert.match(long, /\r\n\r\n431 Request Header Fields Too Large: request line and headers are limited to \d+ bytes\n$/);
      const garbage = await rawHttpExchange(await openSocket(server.port), 'GET / HTTP/1.1\r\nHost x\r\n\r\n');
      assert.match(garbage, /^HTTP\/1.1 400 Bad Request\r\n[\s\S]*\r\n\r\n400 Bad Request: malformed HTTP request\n$/);
      assert.match(await rawHttpExchange(await openSocket(server.port), NOT_FOUND_REQUEST), /^HTTP\/1.1 404/);
    });

    test('REST create with a Content-Length over the small-request limit is refused at once (413), not after the body or the request timeout', async () => {
      const socket = await openSocket(server.port);
      // The declared body never comes whole: only its start is sent.
      const head = 'POST /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n';
      const answer = await rawHttpExchange(socket, `${head}{"desc":${'['.repeat(5000)}`);
      assert.match(answer, /^HTTP\/1.1 413 /);
      assert.match(answer, /request body larger than 16384 bytes/);
      assert.match(await rawHttpExchange(await openSocket(server.port), createBoxRequest(randomSid())), /^HTTP\/1.1 200/, 'the server serves on');
    });
  });
}
