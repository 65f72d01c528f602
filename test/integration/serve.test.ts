/**
 * `hashmail serve` as an operator runs it: TLS by default with a certificate
 * kept in the data directory, ALPN h2 and http/1.1 on one port, health,
 * config validation, clean SIGTERM, PROXY protocol and per-address limits.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { once } from 'node:events';
import { readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { BIN, ROOT, startServer } from '../helpers/server.js';
import { connect, randomSid } from '../helpers/grpc-v1.js';
import { rawHttpExchange } from '../helpers/raw-http.js';

const cleanups: (() => void)[] = [];
after(() => {
  for (const fn of cleanups) fn();
});

/** Runs the CLI to completion; bounded by a kill timer. */
async function runCli(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = spawn(process.execPath, [BIN, ...args], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
  const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
  const [code] = (await once(child, 'exit')) as [number | null];
  clearTimeout(timer);
  return { code, stdout, stderr };
}

async function openSocket(port: number): Promise<net.Socket> {
  const socket = net.connect(port, '127.0.0.1');
  await once(socket, 'connect');
  cleanups.push(() => socket.destroy());
  return socket;
}

function createBoxRequest(sid: Buffer, extraHeaders = ''): string {
  const body = JSON.stringify({ desc: { stream_id: sid.toString('base64') }, lnd_auth: {} });
  return `POST /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${extraHeaders}Content-Length: ${body.length}\r\n\r\n${body}`;
}

test('--help of serve and of the main command exit 0 and name every serve flag', async () => {
  const serve = await runCli(['serve', '--help']);
  assert.equal(serve.code, 0);
  for (const flag of ['--listen', '--admin-listen', '--insecure', '--data-dir', '--config', '--trust-proxy', '--client-address-from', '--trusted-proxies']) {
    assert.ok(serve.stdout.includes(flag), `serve --help names ${flag}`);
  }
  const main = await runCli(['--help']);
  assert.equal(main.code, 0);
  assert.match(main.stdout, /serve/);
  assert.match(main.stdout, /pipe/);
});

test('a bad flag or config value stops serve with exit 2 and a message naming the key', async () => {
  const bad = await runCli(['serve', '--listen', 'not-an-address', '--insecure']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /server\.listen: expected HOST:PORT/);
  const unknown = await runCli(['serve', '--no-such-flag']);
  assert.equal(unknown.code, 2);
});

test('TLS by default: a self-signed certificate is generated once, kept, and serves gRPC (h2) and WebSocket (http/1.1)', async () => {
  const server = await startServer({ insecure: false });
  const dataDir = server.dataDir;
  try {
    const certPem = readFileSync(join(dataDir, 'tls.cert'));
    const fingerprint = new X509Certificate(certPem).fingerprint256;
    const logged = server.logs.find((l) => l.msg === 'generated self-signed TLS certificate');
    assert.ok(logged, 'the generated certificate is logged');
    assert.equal(logged.sha256, fingerprint);

    // ALPN offers both protocols.
    for (const proto of ['h2', 'http/1.1']) {
      const socket = tls.connect({ host: '127.0.0.1', port: server.port, ca: certPem, ALPNProtocols: [proto], servername: 'localhost' });
      await once(socket, 'secureConnect');
      assert.equal(socket.alpnProtocol, proto);
      socket.destroy();
    }

    // gRPC over TLS, verified against the generated certificate.
    const client = connect(server.address, { tlsCa: certPem });
    const sid = randomSid();
    await client.createBox(sid);
    const reader = client.openReader(sid);
    const writer = client.openWriter(sid);
    await writer.write(Buffer.from('over tls'));
    assert.equal((await reader.next()).toString(), 'over tls');
    client.close();

    // WebSocket over TLS on the same port.
    const ws = new WebSocket(`wss://127.0.0.1:${server.port}/v1/lightning-node-connect/hashmail/receive?method=POST`, { ca: certPem, servername: 'localhost' } as WebSocket.ClientOptions);
    await once(ws, 'open');
    ws.send(JSON.stringify({ stream_id: randomSid().toString('base64') }));
    const [frame] = (await once(ws, 'message')) as [Buffer];
    assert.match(frame.toString(), /^\{"error":\{"code":\d+,"message":"stream not found"/);
    ws.terminate();
  } finally {
    // Keep the data directory for the restart check below.
    server.process.kill('SIGTERM');
    await once(server.process, 'exit');
  }

  // Restart on the same data directory: the same certificate, not a new one.
  const second = await startServer({ insecure: false, extraArgs: ['--data-dir', dataDir] });
  try {
    assert.equal(second.logs.find((l) => l.msg === 'generated self-signed TLS certificate'), undefined);
    const loaded = second.logs.find((l) => l.msg === 'TLS certificate loaded');
    assert.ok(loaded);
    assert.equal(loaded.sha256, new X509Certificate(readFileSync(join(dataDir, 'tls.cert'))).fingerprint256);
  } finally {
    await second.stop();
    rmSync(dataDir, { recursive: true, force: true });
  }
});

test('health: /healthz and /readyz answer 200 while serving; SIGTERM exits 0', async () => {
  const server = await startServer();
  assert.equal((await server.admin('/healthz')).status, 200);
  assert.equal((await server.admin('/readyz')).status, 200);
  assert.equal((await server.admin('/nope')).status, 404);
  assert.equal(await server.stop(), 0);
});

test('--trust-proxy: per-address box limits use the PROXY protocol address', async () => {
  const server = await startServer({ extraArgs: ['--trust-proxy'], config: { limits: { maxBoxesPerAddress: 2 } } });
  try {
    const from = async (address: string): Promise<string> => {
      const socket = await openSocket(server.port);
      socket.write(`PROXY TCP4 ${address} 127.0.0.1 40000 443\r\n`);
      const response = await rawHttpExchange(socket, createBoxRequest(randomSid()));
      socket.destroy();
      return response;
    };
    assert.match(await from('10.1.2.3'), /^HTTP\/1.1 200/);
    assert.match(await from('10.1.2.3'), /^HTTP\/1.1 200/);
    const third = await from('10.1.2.3');
    assert.match(third, /^HTTP\/1.1 429/);
    assert.match(third, /limit reached: limits\.maxBoxesPerAddress \(2\)/);
    assert.match(await from('10.9.9.9'), /^HTTP\/1.1 200/, 'another address is not affected');

    // X-Forwarded-For is not a source in this mode: it counts against the socket's address, not 10.1.2.3.
    const socket = await openSocket(server.port);
    const viaHeader = await rawHttpExchange(socket, createBoxRequest(randomSid(), 'X-Forwarded-For: 10.1.2.3\r\n'));
    assert.match(viaHeader, /^HTTP\/1.1 200/);
    socket.destroy();
    assert.equal(await server.metric('hashmail_limit_hits_total{limit="limits.maxBoxesPerAddress"}'), 1);
  } finally {
    await server.stop();
  }
});

test('connections per address over the limit get RESOURCE_EXHAUSTED naming the limit (HTTP/1.1 and gRPC)', async () => {
  const server = await startServer({ config: { limits: { maxConnectionsPerAddress: 2 } } });
  try {
    const held: net.Socket[] = [];
    for (let i = 0; i < 2; i++) {
      const socket = await openSocket(server.port);
      assert.match(await rawHttpExchange(socket, 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1.1 404/);
      held.push(socket);
    }
    const third = await openSocket(server.port);
    const refused = await rawHttpExchange(third, 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n');
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
    const deadline = Date.now() + 20_000;
    while ((await server.metric('hashmail_open_connections')) !== 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 50));
    }
    const again = await openSocket(server.port);
    assert.match(await rawHttpExchange(again, 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1.1 404/);
    again.destroy();
  } finally {
    await server.stop();
  }
});

test('without --trust-proxy a PROXY header is not honoured (bad request), and the server keeps serving', async () => {
  const server = await startServer();
  try {
    const socket = await openSocket(server.port);
    socket.write('PROXY TCP4 10.1.2.3 127.0.0.1 40000 443\r\n');
    const response = await rawHttpExchange(socket, createBoxRequest(randomSid()));
    assert.match(response, /^HTTP\/1.1 400/);
    assert.equal((await server.admin('/healthz')).status, 200);
  } finally {
    await server.stop();
  }
});

test('streams per connection over the limit get RESOURCE_EXHAUSTED naming the limit; others on the connection go on', async () => {
  const server = await startServer({ config: { limits: { maxStreamsPerConnection: 3 } } });
  const client = connect(server.address);
  try {
    const sids = [randomSid(), randomSid(), randomSid(), randomSid()];
    for (const sid of sids) await client.createBox(sid);
    const readers = sids.slice(0, 3).map((sid) => client.openReader(sid));
    // Until the three are open on the server, the fourth might be counted first: wait for the gauge.
    const deadline = Date.now() + 10_000;
    while ((await server.metric('hashmail_attached_halves{transport="grpc",kind="read"}')) !== 3 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    const fourth = client.openReader(sids[3]);
    const status = await fourth.ended();
    assert.equal(status.code, grpc.status.RESOURCE_EXHAUSTED);
    assert.match(status.details, /limit reached: limits\.maxStreamsPerConnection \(3\)/);
    // The three open streams still work (written from another connection: this one is full).
    const other = connect(server.address);
    const writer = other.openWriter(sids[0]);
    await writer.write(Buffer.from('still here'));
    assert.equal((await readers[0].next()).toString(), 'still here');
    other.close();
  } finally {
    client.close();
    await server.stop();
  }
});

test('a request line or headers past Node\'s limit get 431 with a text body a browser can read; a malformed request 400; the server serves on', async () => {
  const server = await startServer();
  try {
    const long = await rawHttpExchange(await openSocket(server.port), `GET /v2/relay?route=${'A'.repeat(20_000)} HTTP/1.1\r\nHost: x\r\n\r\n`);
    assert.match(long, /^HTTP\/1.1 431 Request Header Fields Too Large\r\n/);
    assert.match(long, /access-control-allow-origin: \*/i);
    assert.match(long, /\r\n\r\n431 Request Header Fields Too Large: request line and headers are limited to \d+ bytes\n$/);
    const garbage = await rawHttpExchange(await openSocket(server.port), 'GET / HTTP/1.1\r\nHost x\r\n\r\n');
    assert.match(garbage, /^HTTP\/1.1 400 Bad Request\r\n[\s\S]*\r\n\r\n400 Bad Request: malformed HTTP request\n$/);
    assert.match(await rawHttpExchange(await openSocket(server.port), 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n'), /^HTTP\/1.1 404/);
  } finally {
    await server.stop();
  }
});

test('REST create with a Content-Length over the small-request limit is refused at once (413), not after the body or the request timeout', async () => {
  const server = await startServer();
  try {
    const socket = await openSocket(server.port);
    // The declared body never comes whole: only its start is sent.
    const head = 'POST /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n';
    const answer = await rawHttpExchange(socket, `${head}{"desc":${'['.repeat(5000)}`);
    assert.match(answer, /^HTTP\/1.1 413 /);
    assert.match(answer, /request body larger than 16384 bytes/);
    assert.match(await rawHttpExchange(await openSocket(server.port), createBoxRequest(randomSid())), /^HTTP\/1.1 200/, 'the server serves on');
  } finally {
    await server.stop();
  }
});
