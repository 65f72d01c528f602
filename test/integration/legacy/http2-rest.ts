/**
 * REST, CORS, 404 and the v2 lookup over HTTP/2 (TLS, ALPN h2) are answered
 * exactly as over HTTP/1.1: each request is sent both ways to the same
 * server and the status, the headers that matter and the body compared.
 * Run against serve and, through a TLS gateway, against a TLS cluster
 * (test/helpers/legacy-target.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import https from 'node:https';
import http2 from 'node:http2';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { withTimeout } from '../../helpers/async-queue.js';
import type { LegacyTarget, StartTarget } from '../../helpers/legacy-target.js';

const BASE = '/v1/lightning-node-connect/hashmail';
const WAIT_MS = 10_000;
/** Headers whose values must agree between the two protocols (hop-by-hop and date left out). */
const COMPARED_HEADERS = [
  'content-type',
  'content-length',
  'access-control-allow-origin',
  'access-control-allow-methods',
  'access-control-allow-headers',
  'access-control-max-age',
  'vary',
  'cache-control',
  'allow',
];

interface Answer {
  status: number;
  headers: Record<string, string>;
  body: string;
}

/** The suite, against the target `start` starts (TLS: it speaks HTTP/2 over ALPN h2). */
export function http2RestSuite(start: StartTarget): void {
  let server: LegacyTarget;
  let ca: Buffer;
  let h2: http2.ClientHttp2Session;

  before(async () => {
    server = await start({ insecure: false });
    ca = readFileSync(join(server.dataDir, 'tls.cert'));
    h2 = http2.connect(`https://localhost:${server.port}`, { ca, servername: 'localhost' });
    await withTimeout(new Promise<void>((resolve, reject) => h2.once('connect', () => resolve()).once('error', reject)), WAIT_MS, 'h2 connect');
    assert.equal(h2.alpnProtocol, 'h2');
  });
  after(async () => {
    h2?.close();
    await server.stop();
  });

  function pick(headers: Record<string, unknown>): Record<string, string> {
    const out: Record<string, string> = {};
    for (const name of COMPARED_HEADERS) if (headers[name] !== undefined) out[name] = String(headers[name]);
    return out;
  }

  function overH2(method: string, path: string, headers: Record<string, string>, body: string): Promise<Answer> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const req = h2.request({ ':method': method, ':path': path, ...headers });
        let status = 0;
        let got: Record<string, string> = {};
        req.on('response', (h) => {
          status = Number(h[':status']);
          got = pick(h);
        });
        let text = '';
        req.setEncoding('utf8');
        req.on('data', (d: string) => (text += d));
        req.on('end', () => resolve({ status, headers: got, body: text }));
        req.on('error', reject);
        // The client ends GET/HEAD/DELETE streams itself.
        if (!req.writableEnded) req.end(body);
      }),
      WAIT_MS,
      `h2 ${method} ${path}`,
    );
  }

  function overHttp1(method: string, path: string, headers: Record<string, string>, body: string): Promise<Answer> {
    return withTimeout(
      new Promise((resolve, reject) => {
        const req = https.request({ host: '127.0.0.1', port: server.port, servername: 'localhost', ca, method, path, headers, agent: false }, (res) => {
          let text = '';
          res.setEncoding('utf8');
          res.on('data', (d: string) => (text += d));
          res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: pick(res.headers), body: text }));
        });
        req.on('error', reject);
        req.end(body);
      }),
      WAIT_MS,
      `http/1.1 ${method} ${path}`,
    );
  }

  /** Sends the request over both protocols; asserts the answers agree and returns the HTTP/2 one. */
  async function both(method: string, path: string, headers: Record<string, string> = {}, body = ''): Promise<Answer> {
    const one = await overHttp1(method, path, headers, body);
    const two = await overH2(method, path, headers, body);
    assert.deepEqual(two, one, `${method} ${path}: HTTP/2 answers as HTTP/1.1`);
    return two;
  }

  test('REST create and delete over HTTP/2 answer as over HTTP/1.1, CORS headers included', async () => {
    const origin = { origin: 'https://app.example', 'content-type': 'application/json' };
    // Two boxes: the second create of one SID would be a different answer.
    for (const sid of [randomBytes(64), randomBytes(64)]) {
      const created = await overH2('POST', BASE, origin, JSON.stringify({ desc: { stream_id: sid.toString('base64') }, lnd_auth: {} }));
      assert.equal(created.status, 200);
      assert.equal(created.body, '{"success":{"desc":null}}');
      assert.equal(created.headers['access-control-allow-origin'], 'https://app.example');
    }
    // Same request both ways: a create with no desc fails the same.
    const bad = await both('POST', BASE, origin, JSON.stringify({ lnd_auth: {} }));
    assert.equal(bad.status, 400);
    assert.match(bad.body, /"message":"cipher box descriptor required"/);
    // Delete by query: the reference's answer (auth type required) both ways.
    const del = await both('DELETE', `${BASE}?desc.stream_id=${encodeURIComponent(randomBytes(64).toString('base64'))}`, origin);
    assert.equal(del.headers['access-control-allow-origin'], 'https://app.example');
    assert.match(del.body, /"message"/);
  });

  test('CORS preflight, unknown paths and GET /v2/relay over HTTP/2 answer as over HTTP/1.1', async () => {
    const preflight = await both('OPTIONS', `${BASE}/receive`, {
      origin: 'https://app.example',
      'access-control-request-method': 'POST',
      'access-control-request-headers': 'content-type',
    });
    assert.equal(preflight.status, 200);
    assert.equal(preflight.headers['access-control-allow-origin'], '*');
    assert.equal(preflight.body, '');

    const missing = await both('GET', '/no/such/path');
    assert.equal(missing.status, 404);
    assert.match(missing.body, /"code":5/);

    const lookup = await both('GET', `/v2/relay?route=${randomBytes(32).toString('base64url')}&create=1`);
    assert.equal(lookup.status, 200);
    // serve names itself; a gateway names itself too (its WebSocket clients come through it).
    assert.equal(JSON.parse(lookup.body).address, server.address);
    const lookupPreflight = await both('OPTIONS', '/v2/relay', { origin: 'https://app.example', 'access-control-request-method': 'GET' });
    assert.equal(lookupPreflight.status, 204);
  });

  test('REST receive streams over HTTP/2 while gRPC still works on the same connection type', async () => {
    const sid = randomBytes(64).toString('base64');
    const json = { 'content-type': 'application/json' };
    assert.equal((await overH2('POST', BASE, json, JSON.stringify({ desc: { stream_id: sid }, lnd_auth: {} }))).status, 200);
    const receive = h2.request({ ':method': 'POST', ':path': `${BASE}/receive`, ...json });
    receive.end(JSON.stringify({ stream_id: sid }));
    const [headers] = await withTimeout(new Promise<[http2.IncomingHttpHeaders]>((resolve) => receive.once('response', (h) => resolve([h]))), WAIT_MS, 'receive headers');
    assert.equal(headers[':status'], 200);
    const sent = await overH2('POST', `${BASE}/send`, json, JSON.stringify({ desc: { stream_id: sid }, msg: Buffer.from('over h2').toString('base64') }));
    assert.equal(sent.status, 200);
    receive.setEncoding('utf8');
    const line = await withTimeout(new Promise<string>((resolve) => receive.once('data', (d: string) => resolve(d))), WAIT_MS, 'receive line');
    assert.equal(JSON.parse(line).result.msg, Buffer.from('over h2').toString('base64'));
    receive.close();
    // A gRPC-typed request still reaches grpc-js (unknown method: UNIMPLEMENTED, not a REST 404).
    const grpc = h2.request({ ':method': 'POST', ':path': '/no.Such/Method', 'content-type': 'application/grpc', te: 'trailers' });
    grpc.end();
    const grpcHeaders = await withTimeout(new Promise<http2.IncomingHttpHeaders>((resolve) => grpc.once('response', resolve)), WAIT_MS, 'grpc headers');
    grpc.close();
    assert.equal(grpcHeaders[':status'], 200);
    assert.equal(grpcHeaders['grpc-status'], '12');
  });
}
