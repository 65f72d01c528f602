/**
 * Issue 7, point 3: per-address limits count the address the operator trusts,
 * from the one source configured, and IPv6 clients by prefix. Each attack
 * tries to create boxes (or hold connections) past the per-address limits by
 * claiming other addresses; then the server must be healthy, an unrelated
 * session must relay, and fds, connection gauges and per-address entries must
 * be back at the baseline once the attack's boxes are deleted.
 */
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import net from 'node:net';
import { test, type TestContext } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { HashMailClient } from '../../src/transport/grpc-v1/service.js';
import type { CipherBoxAuth } from '../../src/transport/grpc-v1/codec.js';
import { once, withTimeout } from '../helpers/async-queue.js';
import { boxAuth, connect, peerSid, randomSid, WAIT_MS } from '../helpers/grpc-v1.js';
import { proxyV1, proxyV2, startProxyBalancer } from '../helpers/proxy-balancer.js';
import { BIN, ROOT, startServer, type RunningServer } from '../helpers/server.js';
import { expectRecovered, footprint, ProbeSession, type ServerFootprint } from '../helpers/server-health.js';
import { helloFrame, wsParty } from '../helpers/v2-peers.js';
import { rawHttpExchange } from '../helpers/raw-http.js';

const MAX_BOXES_PER_ADDRESS = 3;
/** The server is ~80 MiB at rest; these attacks allocate next to nothing. */
const RSS_BOUND_BYTES = 192 * 2 ** 20;
const BOX_LIMIT_TEXT = /limit reached: limits\.maxBoxesPerAddress \(3\)/;
const MAX_BOX_HITS = 'hashmail_limit_hits_total{limit="limits.maxBoxesPerAddress"}';

interface Attack {
  server: RunningServer;
  probe: ProbeSession;
  base: ServerFootprint;
  /** Boxes the attack created, deleted before the recovery check. */
  sids: Buffer[];
  /** A raw connection to the public port, after `header` if given; closed when the test ends. */
  open(header?: Buffer): Promise<net.Socket>;
  /** POST create-box on `socket` (a new one if none) with an optional X-Forwarded-For; the response text. */
  restCreate(opts: { header?: Buffer; xff?: string; socket?: net.Socket }): Promise<string>;
  /** NewCipherBox on a connection of its own to `address` with optional x-forwarded-for metadata; the status. */
  grpcCreate(address: string, xff?: string): Promise<{ code: number; details: string }>;
  /** Deletes the attack's boxes, then runs the after-attack checks. */
  recovered(what: string): Promise<void>;
}

async function attack(t: TestContext, options: Parameters<typeof startServer>[0]): Promise<Attack> {
  const server = await startServer(options);
  t.after(() => server.stop());
  const probe = await new ProbeSession(server).open();
  t.after(() => probe.close());
  // The first metrics scrape opens the test's keep-alive connections to the admin port (server fds):
  // the baseline is taken with them open, as they stay for the rest of the test.
  await footprint(server);
  const base = await footprint(server);
  const sids: Buffer[] = [];

  const open = async (header?: Buffer): Promise<net.Socket> => {
    const socket = net.connect(server.port, '127.0.0.1');
    t.after(() => socket.destroy());
    socket.on('error', () => undefined);
    await once(socket, 'connect');
    if (header) socket.write(header);
    return socket;
  };
  const restCreate: Attack['restCreate'] = async ({ header, xff, socket }) => {
    const sid = randomSid();
    const s = socket ?? (await open(header));
    const body = JSON.stringify({ desc: { stream_id: sid.toString('base64') }, lnd_auth: {} });
    const forwarded = xff === undefined ? '' : `X-Forwarded-For: ${xff}\r\n`;
    const response = await rawHttpExchange(s, `POST /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n${forwarded}Content-Length: ${body.length}\r\n\r\n${body}`);
    if (!socket) s.destroy();
    if (response.startsWith('HTTP/1.1 200')) sids.push(sid);
    return response;
  };
  const grpcCreate: Attack['grpcCreate'] = async (address, xff) => {
    const sid = randomSid();
    const client = new HashMailClient(address, grpc.credentials.createInsecure(), { 'grpc.use_local_subchannel_pool': 1 }) as unknown as MetadataClient;
    try {
      const metadata = new grpc.Metadata();
      if (xff !== undefined) metadata.set('x-forwarded-for', xff);
      const err = await new Promise<grpc.ServiceError | null>((resolve) =>
        client.newCipherBox(boxAuth(sid), metadata, { deadline: Date.now() + WAIT_MS }, (e) => resolve(e)),
      );
      if (!err) sids.push(sid);
      return err ? { code: err.code, details: err.details } : { code: grpc.status.OK, details: '' };
    } finally {
      client.close();
    }
  };
  const recovered = async (what: string): Promise<void> => {
    const admin = connect(server.address);
    try {
      for (const sid of sids.splice(0)) await admin.delBox(sid);
    } finally {
      admin.close();
    }
    const after = await expectRecovered(server, base, probe, { rssBoundBytes: RSS_BOUND_BYTES, what });
    t.diagnostic(`${what}: fds ${after.fds} (baseline ${base.fds}), RSS ${(after.rssBytes / 2 ** 20).toFixed(1)} MiB`);
  };
  return { server, probe, base, sids, open, restCreate, grpcCreate, recovered };
}

/** The generic client's NewCipherBox with metadata. */
interface MetadataClient {
  newCipherBox(req: CipherBoxAuth, metadata: grpc.Metadata, options: grpc.CallOptions, cb: (err: grpc.ServiceError | null) => void): unknown;
  close(): void;
}

/** Resolves with whatever the server sent before it closed `socket`; fails if it stays open. */
function closedByServer(socket: net.Socket): Promise<string> {
  let text = '';
  socket.on('data', (d: Buffer) => (text += d.toString()));
  return withTimeout(
    new Promise<string>((resolve) => socket.once('close', () => resolve(text))),
    WAIT_MS,
    'server closing the connection',
  );
}

const CREATE_WITHOUT_BODY = 'GET /nope HTTP/1.1\r\nHost: x\r\n\r\n';

test('proxy-protocol: every box counts against the PROXY address, whatever X-Forwarded-For says (REST, gRPC; PROXY v1, v2)', async (t) => {
  const a = await attack(t, { extraArgs: ['--trust-proxy'], config: { limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS } } });
  const attacker = '10.1.2.3';
  // An L4 balancer passes the client's own X-Forwarded-For through: each claims another address.
  assert.match(await a.restCreate({ header: proxyV1(attacker), xff: '198.51.100.1' }), /^HTTP\/1.1 200/);
  assert.match(await a.restCreate({ header: proxyV2(attacker), xff: '198.51.100.2, 198.51.100.3' }), /^HTTP\/1.1 200/);
  const balancer = await startProxyBalancer(a.server.port, proxyV2(attacker));
  t.after(() => balancer.close());
  assert.equal((await a.grpcCreate(balancer.address, '198.51.100.4')).code, grpc.status.OK);

  const fourthRest = await a.restCreate({ header: proxyV1(attacker), xff: '198.51.100.5' });
  assert.match(fourthRest, /^HTTP\/1.1 429/);
  assert.match(fourthRest, BOX_LIMIT_TEXT);
  assert.match(await a.restCreate({ header: proxyV2(attacker), xff: '198.51.100.6' }), /^HTTP\/1.1 429/);
  const fourthGrpc = await a.grpcCreate(balancer.address, '198.51.100.7');
  assert.equal(fourthGrpc.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(fourthGrpc.details, BOX_LIMIT_TEXT);
  // Another client behind the balancer is not affected, even naming the attacker in X-Forwarded-For.
  assert.match(await a.restCreate({ header: proxyV1('10.9.9.9'), xff: attacker }), /^HTTP\/1.1 200/);

  assert.equal(await a.server.metric(MAX_BOX_HITS), 3);
  assert.equal(await a.server.metric('hashmail_box_addresses'), a.base.boxAddresses + 2, 'one entry per PROXY address');
  await balancer.close();
  await a.recovered('boxes through an L4 balancer with spoofed X-Forwarded-For');
});

test('x-forwarded-for from a trusted balancer: the rightmost untrusted hop is the client, on REST, gRPC and v2 WebSocket; PROXY headers refused', async (t) => {
  const a = await attack(t, {
    extraArgs: ['--trust-proxy', '--client-address-from', 'x-forwarded-for', '--trusted-proxies', '127.0.0.1/32'],
    config: { limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS } },
  });
  const client = '203.0.113.7';
  // The leftmost hop is the client's own claim; our balancer (127.0.0.1) appended the address it saw.
  assert.match(await a.restCreate({ xff: `198.51.100.9, ${client}` }), /^HTTP\/1.1 200/);
  // A v2 session is two boxes, counted under the same key.
  const sid = randomSid();
  const party = await wsParty(a.server.port, { headers: { 'X-Forwarded-For': client } });
  t.after(() => party.abort());
  await party.hello(helloFrame({ sid }));
  await party.close();
  a.sids.push(sid, peerSid(sid));

  const refused = await a.restCreate({ xff: client });
  assert.match(refused, /^HTTP\/1.1 429/);
  assert.match(refused, BOX_LIMIT_TEXT);
  const grpcRefused = await a.grpcCreate(a.server.address, `198.51.100.9,${client}`);
  assert.equal(grpcRefused.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(grpcRefused.details, BOX_LIMIT_TEXT);
  assert.match(await a.restCreate({ xff: '203.0.113.8' }), /^HTTP\/1.1 200/, 'another client behind the balancer');
  assert.equal(await a.server.metric('hashmail_box_addresses'), a.base.boxAddresses + 2);

  // In this mode a PROXY header is never believed, not even from the trusted balancer.
  const proxied = await a.open(proxyV1('10.1.2.3'));
  const closed = closedByServer(proxied);
  proxied.write(CREATE_WITHOUT_BODY);
  assert.equal(await closed, '', 'closed without an answer');
  await a.recovered('boxes behind an L7 balancer');
});

test('x-forwarded-for from a peer not in trustedProxies is ignored, and its PROXY headers are refused', async (t) => {
  const a = await attack(t, {
    config: {
      server: { trustProxy: true, clientAddressFrom: 'x-forwarded-for', trustedProxies: ['10.0.0.0/8'] },
      limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS },
    },
  });
  // The probe holds two boxes of 127.0.0.1; every claim below counts there too.
  assert.match(await a.restCreate({ xff: '203.0.113.1' }), /^HTTP\/1.1 200/);
  const spoofed = await a.restCreate({ xff: '203.0.113.2' });
  assert.match(spoofed, /^HTTP\/1.1 429/);
  assert.match(spoofed, BOX_LIMIT_TEXT);
  assert.equal((await a.grpcCreate(a.server.address, '203.0.113.3')).code, grpc.status.RESOURCE_EXHAUSTED);
  assert.equal(await a.server.metric('hashmail_box_addresses'), a.base.boxAddresses, 'no entry for a claimed address');

  for (const header of [proxyV1('10.1.2.3'), proxyV2('10.1.2.3'), proxyV2('2001:db8::1')]) {
    const socket = await a.open(header);
    const closed = closedByServer(socket);
    socket.write(CREATE_WITHOUT_BODY);
    assert.equal(await closed, '', 'a PROXY header closes the connection without an answer');
  }
  const balancer = await startProxyBalancer(a.server.port, proxyV2('10.1.2.3'));
  t.after(() => balancer.close());
  assert.equal((await a.grpcCreate(balancer.address)).code, grpc.status.UNAVAILABLE, 'gRPC behind a PROXY header gets no connection');
  await balancer.close();
  assert.equal((await a.server.admin('/healthz')).status, 200);
  await a.recovered('X-Forwarded-For and PROXY headers from an untrusted peer');
});

test('IPv6 clients count per /64 (PROXY v2): two addresses of one /64 share the box and connection limits, another /64 does not', async (t) => {
  const a = await attack(t, {
    extraArgs: ['--trust-proxy'],
    config: { limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS, maxConnectionsPerAddress: 2 } },
  });
  const first = '2001:db8:1:2::1';
  const second = '2001:db8:1:2:ffff:ffff:ffff:fffe';
  const third = '2001:db8:1:2::3';
  const otherNet = '2001:db8:1:3::1';

  const s1 = await a.open(proxyV2(first));
  assert.match(await a.restCreate({ socket: s1 }), /^HTTP\/1.1 200/);
  assert.match(await a.restCreate({ socket: s1 }), /^HTTP\/1.1 200/);
  const s2 = await a.open(proxyV2(second));
  assert.match(await a.restCreate({ socket: s2 }), /^HTTP\/1.1 200/);
  const overBoxes = await a.restCreate({ socket: s2 });
  assert.match(overBoxes, /^HTTP\/1.1 429/);
  assert.match(overBoxes, BOX_LIMIT_TEXT);
  assert.equal(await a.server.metric('hashmail_connection_addresses'), a.base.connectionAddresses + 1, 'two connections, one /64');

  // A third connection from the same /64 is over limits.maxConnectionsPerAddress (2).
  const balancer = await startProxyBalancer(a.server.port, proxyV2(third));
  t.after(() => balancer.close());
  const overConnections = await a.grpcCreate(balancer.address);
  assert.equal(overConnections.code, grpc.status.RESOURCE_EXHAUSTED);
  assert.match(overConnections.details, /limits\.maxConnectionsPerAddress \(2\)/);
  await balancer.close();

  const s3 = await a.open(proxyV2(otherNet));
  assert.match(await a.restCreate({ socket: s3 }), /^HTTP\/1.1 200/, 'another /64 has its own limits');
  assert.match(await a.restCreate({ socket: s3 }), /^HTTP\/1.1 200/);
  assert.equal(await a.server.metric('hashmail_box_addresses'), a.base.boxAddresses + 2);
  for (const s of [s1, s2, s3]) s.destroy();
  await a.recovered('IPv6 addresses of one /64');
});

test('limits.ipv6PrefixLength 128 counts each IPv6 address on its own; mapped IPv4 counts as the IPv4 address', async (t) => {
  const a = await attack(t, {
    extraArgs: ['--trust-proxy'],
    config: { limits: { maxBoxesPerAddress: MAX_BOXES_PER_ADDRESS, ipv6PrefixLength: 128 } },
  });
  for (const source of ['2001:db8:1:2::1', '2001:db8:1:2::2']) {
    for (let i = 0; i < MAX_BOXES_PER_ADDRESS; i++) {
      assert.match(await a.restCreate({ header: proxyV1(source) }), /^HTTP\/1.1 200/, `${source}, box ${i + 1}`);
    }
  }
  assert.match(await a.restCreate({ header: proxyV2('2001:db8:1:2::2') }), /^HTTP\/1.1 429/);
  // The same IPv4 client, once plainly and once IPv4-mapped (as a dual-stack balancer may write it).
  assert.match(await a.restCreate({ header: proxyV1('10.1.2.3') }), /^HTTP\/1.1 200/);
  const mapped = Buffer.from('PROXY TCP6 ::ffff:10.1.2.3 ::1 40000 443\r\n');
  assert.match(await a.restCreate({ header: mapped }), /^HTTP\/1.1 200/);
  assert.match(await a.restCreate({ header: mapped }), /^HTTP\/1.1 200/);
  assert.match(await a.restCreate({ header: proxyV1('10.1.2.3') }), /^HTTP\/1.1 429/);
  assert.equal(await a.server.metric('hashmail_box_addresses'), a.base.boxAddresses + 3);
  await a.recovered('IPv6 per /128');
});

test('serve: a bad --trusted-proxies entry or a missing balancer list stops the start, naming the key (exit 2)', async () => {
  const run = async (args: string[]): Promise<{ code: number | null; stderr: string }> => {
    const child = spawn(process.execPath, [BIN, 'serve', '--insecure', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', ...args], { cwd: ROOT, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), WAIT_MS);
    const [code] = (await once(child, 'exit', WAIT_MS)) as [number | null];
    clearTimeout(timer);
    return { code, stderr };
  };
  const bad = await run(['--trust-proxy', '--client-address-from', 'x-forwarded-for', '--trusted-proxies', '10.0.0.0/8,10.0.0.0/33']);
  assert.equal(bad.code, 2);
  assert.match(bad.stderr, /server\.trustedProxies\.1: "10\.0\.0\.0\/33" is not an IP address or CIDR/);
  const none = await run(['--trust-proxy', '--client-address-from', 'x-forwarded-for']);
  assert.equal(none.code, 2);
  assert.match(none.stderr, /server\.trustedProxies: x-forwarded-for needs the balancer addresses/);
  const mode = await run(['--client-address-from', 'forwarded']);
  assert.equal(mode.code, 2);
  assert.match(mode.stderr, /server\.clientAddressFrom/);
});
