/**
 * `hashmail serve` as an operator runs it: TLS by default with a certificate
 * kept in the data directory, ALPN h2 and http/1.1 on one port, health,
 * config validation, clean SIGTERM, the PROXY protocol (the listener's limits: legacy/limits.ts).
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

