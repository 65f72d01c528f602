/**
 * Issue 7, point 2: memory is bounded by what the limits say, whatever
 * readers do. Readers that attach and never read (on each transport) get
 * 4 MiB messages written to them until the writers are pushed back; the
 * bytes the server holds for them must stay inside the box bound, the
 * per-address and the process budget, and the server's RSS with them.
 */
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { after, before, test } from 'node:test';
import { pollUntil } from '../helpers/async-queue.js';
import { connect, payload, peerSid, randomSid, type V1Client } from '../helpers/grpc-v1.js';
import { expectRecovered, footprint, ProbeSession } from '../helpers/server-health.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { openStuckReader, STUCK_TRANSPORTS, type StuckReader, type StuckTransport } from '../helpers/stuck-readers.js';

const MiB = 1024 * 1024;
const MESSAGE_BYTES = 4 * MiB;
/** The server's count per held message: payload plus its bookkeeping overhead (session/message-queue.ts). */
const HELD_PER_MESSAGE = MESSAGE_BYTES + 64;
const READERS_PER_TRANSPORT = 3;
/** Messages each writer offers: far more than any bound lets in. */
const WRITES_PER_SESSION = 6;
/**
 * Server RSS bound with 12 stuck readers of 4 MiB messages. The server
 * counts one held message per session (48 MiB); each writer's connection
 * may carry one more message being decoded and one waiting for room. Before
 * the fix one stuck gRPC reader alone pinned ~142 MB.
 */
const RSS_BOUND_BYTES = 480 * MiB;


/** A second loopback address (Linux routes all of 127/8 to lo): a client other than the probe's 127.0.0.1. */
const OTHER_CLIENT = '127.0.0.2';
/** Room for three 4 MiB messages, not four. */
const PER_ADDRESS_BYTES = 16 * MiB;

let server: RunningServer;

before(async () => {
  server = await startServer({ config: { limits: { maxBufferedBytes: 256 * MiB } } });
});

/** REST NewCipherBox from `localAddress`: the box, and the bytes it holds, belong to that client. */
function createBoxFrom(localAddress: string, sid: Buffer): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = request(
      { host: '127.0.0.1', port: server.port, method: 'POST', path: '/v1/lightning-node-connect/hashmail', localAddress, agent: false, headers: { 'content-type': 'application/json' } },
      (res) => {
        res.resume();
        res.on('end', () => resolve(res.statusCode ?? 0));
      },
    );
    req.on('error', reject);
    req.end(JSON.stringify({ desc: { stream_id: sid.toString('base64') }, lnd_auth: {} }));
  });
}

after(async () => {
  await server.stop();
});

interface Attack {
  sids: Buffer[];
  readers: StuckReader[];
  writers: V1Client[];
}

/** One stuck reader per session on `transport`, a legacy gRPC writer offering 4 MiB messages to each. */
async function stuckSessions(transport: StuckTransport, count: number, from?: string): Promise<Attack> {
  const attack: Attack = { sids: [], readers: [], writers: [] };
  for (let i = 0; i < count; i++) {
    const sid = randomSid();
    attack.sids.push(sid);
    const node = connect(server.address);
    attack.writers.push(node);
    // v2 readers create their session; legacy ones need the box first.
    if (from) assert.equal(await createBoxFrom(from, sid), 200);
    else if (transport.endsWith('v1')) await node.createBox(sid);
    attack.readers.push(await openStuckReader(transport, server.port, sid));
    const writer = node.openWriter(sid);
    for (let n = 0; n < WRITES_PER_SESSION; n++) void writer.write(payload(MESSAGE_BYTES, n), 60_000).catch(() => undefined);
  }
  return attack;
}

/** Readers and writers gone, then both boxes of each session deleted: what they held goes back. */
async function end(attack: Attack): Promise<void> {
  for (const r of attack.readers) r.close();
  for (const w of attack.writers) w.close();
  const cleaner = connect(server.address);
  try {
    for (const sid of attack.sids) {
      for (const box of [sid, peerSid(sid)]) await cleaner.delBox(box).catch(() => undefined);
    }
  } finally {
    cleaner.close();
  }
}

test('stuck readers on every transport hold one message each, counted; RSS stays bounded; other sessions relay', async () => {
  const probe = await new ProbeSession(server).open();
  const base = await footprint(server);
  const attacks: Attack[] = [];
  try {
    for (const transport of STUCK_TRANSPORTS) attacks.push(await stuckSessions(transport, READERS_PER_TRANSPORT));
    const sessions = STUCK_TRANSPORTS.length * READERS_PER_TRANSPORT;
    // An empty box takes one message of any allowed size; a reader's
    // transport holding it unflushed keeps it counted, so nothing more fits.
    await pollUntil(
      async () => (await server.metric('hashmail_buffered_bytes')) === sessions * HELD_PER_MESSAGE,
      `hashmail_buffered_bytes = ${sessions} x one 4 MiB message`,
      300,
      100,
    );
    await probe.roundTrip();
    const during = await footprint(server);
    assert.ok(
      during.rssBytes < RSS_BOUND_BYTES,
      `RSS with ${sessions} stuck readers: ${(during.rssBytes / MiB).toFixed(0)} MiB (bound ${RSS_BOUND_BYTES / MiB} MiB)`,
    );
    assert.equal(await server.metric('hashmail_buffered_bytes'), sessions * HELD_PER_MESSAGE, 'still one message per session');
  } finally {
    for (const attack of attacks) await end(attack);
  }
  assert.equal(await server.metric('hashmail_buffered_bytes'), 0, 'every held byte given back');
  await expectRecovered(server, base, probe, { rssBoundBytes: RSS_BOUND_BYTES, what: 'stuck readers' });
  probe.close();
});

test('one client cannot take the process budget: its stuck sessions stop at its per-address share', async () => {
  await server.stop();
  server = await startServer({ config: { limits: { maxBufferedBytes: 256 * MiB, maxBufferedBytesPerAddress: PER_ADDRESS_BYTES } } });
  const probe = await new ProbeSession(server).open();
  const base = await footprint(server);
  let attack: Attack | null = null;
  try {
    attack = await stuckSessions('grpc-v1', 12, OTHER_CLIENT);
    const share = Math.floor(PER_ADDRESS_BYTES / HELD_PER_MESSAGE) * HELD_PER_MESSAGE;
    await pollUntil(async () => (await server.metric('hashmail_buffered_bytes')) === share, 'the share of 127.0.0.2 filled', 300, 100);
    // The probe's client (127.0.0.1) has its own share: its session relays while 127.0.0.2 waits.
    await probe.roundTrip();
    assert.equal(await server.metric('hashmail_buffered_bytes'), share, 'nothing past the share of 127.0.0.2');
  } finally {
    if (attack) await end(attack);
  }
  assert.equal(await server.metric('hashmail_buffered_bytes'), 0);
  await expectRecovered(server, base, probe, { rssBoundBytes: RSS_BOUND_BYTES, what: 'one client filling its share' });
  probe.close();
});
