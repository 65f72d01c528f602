/**
 * What an operator meets: SIGHUP reloading the certificate while a session
 * relays, a mismatched pair refused at start, the handshake failure counter,
 * versions, build info, warnings and log lines.
 */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { generateKeyPairSync, X509Certificate } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import tls from 'node:tls';
import { after, test } from 'node:test';
import selfsigned from 'selfsigned';
import WebSocket from 'ws';
import { AsyncQueue, pollUntil, withTimeout } from '../helpers/async-queue.js';
import { randomSid } from '../helpers/grpc-v1.js';
import { startEtcd } from '../helpers/etcd.js';
import { BIN, ROOT, startGateway, startRelay, startServer } from '../helpers/server.js';
import { b64, HASHMAIL_PATH, RECEIVE_PATH, SEND_PATH, sendRequest } from '../helpers/ws-v1.js';

const WAIT_MS = 10_000;
const dir = mkdtempSync(join(tmpdir(), 'hashmail-ops-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function makePair(name: string): { cert: string; key: string; fingerprint: string } {
  const pems = selfsigned.generate([{ name: 'commonName', value: name }], { days: 1, keySize: 2048, algorithm: 'sha256' });
  return { cert: pems.cert, key: pems.private, fingerprint: new X509Certificate(pems.cert).fingerprint256 };
}

/** The SHA-256 fingerprint of the certificate a new TLS connection is served. */
async function servedFingerprint(port: number): Promise<string> {
  const socket = tls.connect({ host: '127.0.0.1', port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
  try {
    await withTimeout(new Promise((resolve, reject) => socket.once('secureConnect', resolve).once('error', reject)), WAIT_MS, 'TLS connect');
    return socket.getPeerX509Certificate()!.fingerprint256;
  } finally {
    socket.destroy();
  }
}

async function openWss(port: number, path: string): Promise<{ ws: WebSocket; frames: AsyncQueue<string> }> {
  const ws = new WebSocket(`wss://127.0.0.1:${port}${path}?method=POST`, { rejectUnauthorized: false });
  const frames = new AsyncQueue<string>();
  ws.on('message', (data) => frames.push(String(data)));
  await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), WAIT_MS, `wss ${path}`);
  return { ws, frames };
}

test('SIGHUP reloads the certificate: a session relaying through it goes on, a new connection sees the new certificate', async () => {
  const certFile = join(dir, 'tls.cert');
  const keyFile = join(dir, 'tls.key');
  const first = makePair('first');
  writeFileSync(certFile, first.cert);
  writeFileSync(keyFile, first.key);
  // The admin listener on every interface: warned about.
  const server = await startServer({
    insecure: false,
    config: { server: { tlsCertFile: certFile, tlsKeyFile: keyFile } },
    extraArgs: ['--admin-listen', '0.0.0.0:0'],
  });
  try {
    const serving = server.logs.find((l) => l.msg === 'serving');
    assert.equal(serving?.version, JSON.parse(spawnSync('node', ['-p', 'JSON.stringify(require("./package.json").version)'], { cwd: ROOT, encoding: 'utf8' }).stdout));
    assert.ok(server.logs.some((l) => l.level === 40 && String(l.msg).includes('admin listener') && l.adminListen), 'non-loopback admin listener warned');
    assert.equal(await server.metric(`hashmail_build_info{version="${String(serving?.version)}",node_version="${process.version}"}`), 1);
    assert.equal(await servedFingerprint(server.port), first.fingerprint);

    const sid = randomSid();
    // Created over HTTPS/1.1 on a raw TLS socket (fetch cannot skip verification of the self-signed pair).
    const socket = tls.connect({ host: '127.0.0.1', port: server.port, rejectUnauthorized: false, ALPNProtocols: ['http/1.1'] });
    const body = JSON.stringify({ desc: { stream_id: b64(sid) }, lnd_auth: {} });
    socket.write(`POST ${HASHMAIL_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n${body}`);
    let answer = '';
    socket.setEncoding('utf8');
    socket.on('data', (d: string) => (answer += d));
    await withTimeout(new Promise((resolve) => socket.once('close', resolve)), WAIT_MS, 'create');
    assert.match(answer, /^HTTP\/1.1 200/);
    const reader = await openWss(server.port, RECEIVE_PATH);
    reader.ws.send(JSON.stringify({ stream_id: b64(sid) }));
    const writer = await openWss(server.port, SEND_PATH);
    writer.ws.send(sendRequest(sid, Buffer.from('before')));
    assert.match(await reader.frames.next(WAIT_MS, 'first message'), /"msg":"YmVmb3Jl"/);

    const second = makePair('second');
    writeFileSync(certFile, second.cert);
    writeFileSync(keyFile, second.key);
    server.process.kill('SIGHUP');
    await pollUntil(async () => server.logs.some((l) => l.msg === 'TLS certificate reloaded'), 'reload logged');
    assert.equal(server.logs.find((l) => l.msg === 'TLS certificate reloaded')?.sha256, second.fingerprint);
    assert.equal(await servedFingerprint(server.port), second.fingerprint);

    // The session opened under the old certificate still relays.
    writer.ws.send(sendRequest(sid, Buffer.from('after')));
    assert.match(await reader.frames.next(WAIT_MS, 'second message'), /"msg":"YWZ0ZXI="/);
    assert.equal(reader.ws.readyState, WebSocket.OPEN);

    // A pair that does not match is refused on reload; the current one stays.
    writeFileSync(keyFile, first.key);
    server.process.kill('SIGHUP');
    await pollUntil(async () => server.logs.some((l) => String(l.msg).startsWith('TLS certificate reload failed')), 'failed reload logged');
    assert.equal(await servedFingerprint(server.port), second.fingerprint);

    // A failed handshake is counted. (Clients above that hang up right after their own handshake may count too.)
    const failuresBefore = (await server.metric('hashmail_tls_handshake_failures_total{reason="error"}')) ?? 0;
    const garbage = net.connect(server.port, '127.0.0.1');
    garbage.on('error', () => undefined);
    garbage.end('this is not a ClientHello\r\n\r\n');
    await pollUntil(
      async () => ((await server.metric('hashmail_tls_handshake_failures_total{reason="error"}')) ?? 0) > failuresBefore,
      'handshake failure counted',
    );
    reader.ws.terminate();
    writer.ws.terminate();
  } finally {
    await server.stop();
  }
});

test('a certificate and key that do not match are refused at start, naming both keys, on stderr and in the log', () => {
  const pair = makePair('mismatch');
  const certFile = join(dir, 'mismatch.cert');
  const keyFile = join(dir, 'mismatch.key');
  writeFileSync(certFile, pair.cert);
  writeFileSync(keyFile, generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }));
  const config = join(dir, 'mismatch.json');
  writeFileSync(config, JSON.stringify({ server: { tlsCertFile: certFile, tlsKeyFile: keyFile } }));
  const run = spawnSync(process.execPath, [BIN, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', dir, '--config', config], {
    encoding: 'utf8',
    timeout: 20_000,
    env: { ...process.env, HASHMAIL_LOG__FORMAT: 'json' },
  });
  assert.equal(run.status, 1);
  assert.match(run.stderr, /server\.tlsCertFile .* and server\.tlsKeyFile .* do not match/);
  const fatal = run.stdout.split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>).find((l) => l.msg === 'start-up failed');
  assert.ok(fatal, 'the fatal error is in the log stream too');
  assert.equal(fatal.level, 60);
  assert.match(String(fatal.err), /server\.tlsCertFile.*server\.tlsKeyFile/);
});

test('hashmail --version and hashmail version print the version', () => {
  for (const arg of ['--version', 'version']) {
    const run = spawnSync(process.execPath, [BIN, arg], { encoding: 'utf8', timeout: 10_000 });
    assert.equal(run.status, 0);
    assert.match(run.stdout, /^hashmail \d+\.\d+\.\d+\S* \(node v\d+/);
  }
});

test('limit lines name the client; attach and detach are logged at debug', async () => {
  const server = await startServer({ config: { limits: { maxBoxesPerAddress: 1 }, log: { level: 'debug' } } });
  try {
    const sid = randomSid();
    const create = (id: Buffer): Promise<Response> =>
      fetch(`http://${server.address}${HASHMAIL_PATH}`, { method: 'POST', body: JSON.stringify({ desc: { stream_id: b64(id) }, lnd_auth: {} }) });
    assert.equal((await create(sid)).status, 200);
    assert.equal((await create(randomSid())).status, 429);
    await pollUntil(async () => server.logs.some((l) => l.msg === 'refused by limit'), 'limit line');
    const line = server.logs.find((l) => l.msg === 'refused by limit');
    assert.equal(line?.limit, 'limits.maxBoxesPerAddress');
    assert.equal(line?.client, '127.0.0.1');

    const relayLines = (msg: string): Record<string, unknown>[] => server.logs.filter((l) => l.subsystem === 'relay' && l.msg === msg);
    const ws = new WebSocket(`ws://${server.address}${RECEIVE_PATH}?method=POST`);
    await withTimeout(new Promise((resolve, reject) => ws.once('open', resolve).once('error', reject)), WAIT_MS, 'ws');
    ws.send(JSON.stringify({ stream_id: b64(sid) }));
    await pollUntil(async () => relayLines('attached').length === 1, 'attached logged');
    ws.close();
    await pollUntil(async () => relayLines('detached').length === 1, 'detached logged');
    for (const l of [...relayLines('attached'), ...relayLines('detached')]) {
      assert.equal(l.level, 20);
      assert.equal(l.transport, 'websocket');
      assert.equal(l.kind, 'read');
      assert.equal(l.client, '127.0.0.1');
      assert.match(String(l.sid), /^[0-9a-f]{12}$/);
    }
  } finally {
    await server.stop();
  }
});

test('hashmail relay: version in the serving line, hashmail_build_info, SIGHUP reloads its certificate', async () => {
  const etcd = await startEtcd(1);
  try {
    const relay = await startRelay({ etcd: etcd.etcdFlag, insecure: false });
    try {
      const serving = relay.logs.find((l) => l.msg === 'serving');
      assert.equal(typeof serving?.version, 'string');
      assert.equal(await relay.metric(`hashmail_build_info{version="${String(serving?.version)}",node_version="${process.version}"}`), 1);
      relay.process.kill('SIGHUP');
      await pollUntil(async () => relay.logs.some((l) => l.msg === 'TLS certificate reloaded'), 'relay reload logged');
      assert.equal(relay.process.exitCode, null, 'SIGHUP does not stop the relay');
      assert.equal((await relay.admin('/readyz')).status, 200);
    } finally {
      await relay.stop();
    }
  } finally {
    await etcd.stop();
  }
});

test('hashmail gateway: version in the serving line, SIGHUP reloads its certificate (new connections get the new one)', async () => {
  const certFile = join(dir, 'gateway.cert');
  const keyFile = join(dir, 'gateway.key');
  const first = makePair('gateway-first');
  writeFileSync(certFile, first.cert);
  writeFileSync(keyFile, first.key);
  const etcd = await startEtcd(1);
  try {
    const gateway = await startGateway({ etcd: etcd.etcdFlag, insecure: false, config: { server: { tlsCertFile: certFile, tlsKeyFile: keyFile } } });
    try {
      const serving = gateway.logs.find((l) => l.msg === 'serving');
      assert.equal(typeof serving?.version, 'string');
      assert.equal(await servedFingerprint(gateway.port), first.fingerprint);
      const second = makePair('gateway-second');
      writeFileSync(certFile, second.cert);
      writeFileSync(keyFile, second.key);
      gateway.process.kill('SIGHUP');
      await pollUntil(async () => gateway.logs.some((l) => l.msg === 'TLS certificate reloaded'), 'gateway reload logged');
      assert.equal(gateway.logs.find((l) => l.msg === 'TLS certificate reloaded')?.sha256, second.fingerprint);
      assert.equal(await servedFingerprint(gateway.port), second.fingerprint);
      assert.equal(gateway.process.exitCode, null, 'SIGHUP does not stop the gateway');
    } finally {
      await gateway.stop();
    }
  } finally {
    await etcd.stop();
  }
});
