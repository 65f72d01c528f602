/**
 * Issue 7, point 2: memory is bounded by what the limits say, whatever
 * readers do. Readers that attach and never read (on each transport) get
 * 4 MiB messages written to them until the writers are pushed back; the
 * bytes the server holds for them must stay inside the box bound, the
 * per-address and the process budget, and the server's RSS with them.
 */
import assert from 'node:assert/strict';
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

let server: RunningServer;

before(async () => {
  server = await startServer({ config: { limits: { maxBufferedBytes: 256 * MiB } } });
});

after(async () => {
  await server.stop();
});

interface Attack {
  sids: Buffer[];
  readers: StuckReader[];
  writers: V1Client[];
}

/** One stuck reader per session on `transport`, a legacy gRPC writer offering 4 MiB messages to each. */
async function stuckSessions(transport: StuckTransport, count: number): Promise<Attack> {
  const attack: Attack = { sids: [], readers: [], writers: [] };
  for (let i = 0; i < count; i++) {
    const sid = randomSid();
    attack.sids.push(sid);
    const node = connect(server.address);
    attack.writers.push(node);
    // v2 readers create their session; legacy ones need the box first.
    if (transport.endsWith('v1')) await node.createBox(sid);
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
