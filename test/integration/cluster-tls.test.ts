/**
 * A cluster on the defaults: relay and gateway without --insecure, each
 * with the self-signed certificate it generated, no hop.caFile. The gateway
 * pins each relay's certificate from the directory, so legacy parties (over
 * the hop's lanes) and v2 parties (passed through) meet through it, the
 * clients trusting only the gateway's certificate. Real etcd, relay and
 * gateway processes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect, type ConnectOptions, type MailboxConnection } from '../../src/client/index.js';
import { flipSid } from '../../src/client/bytes.js';
import { withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { startGateway, startRelay, type RunningServer } from '../helpers/server.js';

const STEP_TIMEOUT_MS = 15_000;
const MESSAGES_EACH_WAY = 10;

let etcd: EtcdCluster;
let relay: RunningServer;
let gateway: RunningServer;
let gatewayCa: Buffer;
const open: MailboxConnection[] = [];

before(async () => {
  etcd = await startEtcd(1);
  relay = await startRelay({ etcd: etcd.etcdFlag, insecure: false });
  gateway = await startGateway({ etcd: etcd.etcdFlag, insecure: false });
  gatewayCa = readFileSync(join(gateway.dataDir, 'tls.cert'));
});

after(async () => {
  await Promise.all(open.map((c) => c.close()));
  await gateway?.stop();
  await relay?.stop();
  await etcd?.stop();
});

async function party(options: Omit<ConnectOptions, 'server' | 'ca'>): Promise<MailboxConnection> {
  const conn = await withTimeout(connect({ server: gateway.address, ca: gatewayCa, ...options }), STEP_TIMEOUT_MS, `connect ${JSON.stringify(options.protocol)} ${options.transport}`);
  open.push(conn);
  return conn;
}

async function exchange(a: MailboxConnection, b: MailboxConnection): Promise<void> {
  const ia = a[Symbol.asyncIterator]();
  const ib = b[Symbol.asyncIterator]();
  const next = async (it: AsyncIterator<Uint8Array>): Promise<string> => {
    const r = await withTimeout(it.next(), STEP_TIMEOUT_MS, 'a message');
    assert.ok(!r.done, 'the stream ended');
    return Buffer.from(r.value).toString();
  };
  for (let i = 0; i < MESSAGES_EACH_WAY; i++) {
    await withTimeout(a.send(Buffer.from(`a->b ${i}`)), STEP_TIMEOUT_MS, 'send a');
    await withTimeout(b.send(Buffer.from(`b->a ${i}`)), STEP_TIMEOUT_MS, 'send b');
  }
  for (let i = 0; i < MESSAGES_EACH_WAY; i++) {
    assert.equal(await next(ib), `a->b ${i}`);
    assert.equal(await next(ia), `b->a ${i}`);
  }
}

test('legacy node over gRPC and app over WebSocket meet through a TLS gateway: the hop to the TLS relay is pinned from the directory', async () => {
  const sid = randomBytes(64);
  const node = await party({ sid, role: 'node', protocol: 'v1', transport: 'grpc' });
  const app = await party({ sid: flipSid(sid), role: 'app', protocol: 'v1', transport: 'websocket' });
  await exchange(node, app);
});

test('v2 parties over WebSocket meet through a TLS gateway: passed through to the TLS relay, pinned from the directory', async () => {
  const sid = randomBytes(64);
  const a = await party({ sid, protocol: 'v2', transport: 'websocket' });
  const b = await party({ sid: flipSid(sid), protocol: 'v2', transport: 'websocket' });
  await exchange(a, b);
});

test('a legacy node over WebSocket through the TLS gateway: its REST NewCipherBox calls trust the connection\'s ca too', async () => {
  const sid = randomBytes(64);
  const node = await party({ sid, role: 'node', protocol: 'v1', transport: 'websocket' });
  const app = await party({ sid: flipSid(sid), role: 'app', protocol: 'v1', transport: 'grpc' });
  await exchange(node, app);
});
