/**
 * Held lookups (wait_ms) from one client address: however many HTTP/2
 * streams, gRPC calls and HTTP/1.1 sockets it opens within its connection and
 * stream limits, at most limits.maxBoxesPerAddress are held (about 12 KiB
 * each); the rest are answered at once, and closing the connections gives
 * the slots back. Without the cap one address took every one of the
 * process's directory.maxWaitingLookups (some 1.2 GB at the defaults).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import { after, before, test } from 'node:test';
import { DEFAULT_WAIT_MS, withTimeout } from '../helpers/async-queue.js';
import { startEtcd, type EtcdCluster } from '../helpers/etcd.js';
import { grpcLookup, httpLookup } from '../helpers/lookup.js';
import { startRelay, type RunningServer } from '../helpers/server.js';

const NOT_FOUND = 5;
/** Longer than any wait of this test: an answer comes only because the lookup was not held. */
const HELD_LOOKUP_MS = 60_000;
/** limits.maxBoxesPerAddress of the relay: the held lookups one address may have. */
const MAX_HELD_LOOKUPS_PER_ADDRESS = 300;
/** Streams per HTTP/2 connection (under limits.maxStreamsPerConnection). */
const STREAMS_PER_CONNECTION = 100;
const CONNECTIONS = Math.ceil(MAX_HELD_LOOKUPS_PER_ADDRESS / STREAMS_PER_CONNECTION);
const WAITING = 'hashmail_directory_lookups_waiting';

let etcd: EtcdCluster;
let relay: RunningServer;
const route = (): string => randomBytes(32).toString('base64url');

before(async () => {
  etcd = await startEtcd(1);
  relay = await startRelay({ etcd: etcd.etcdFlag, config: { directory: { lookupWaitMaxMs: HELD_LOOKUP_MS }, limits: { maxBoxesPerAddress: MAX_HELD_LOOKUPS_PER_ADDRESS } } });
});

after(async () => {
  await relay?.stop();
  await etcd?.stop();
});

test('one address holds at most limits.maxBoxesPerAddress lookups over HTTP/2, gRPC and HTTP/1.1; closing gives them back', { timeout: 60_000 }, async () => {
  const sessions: http2.ClientHttp2Session[] = [];
  try {
    // One stream more than the cap, each held for a route nobody placed.
    let firstAnswer!: (status: number) => void;
    const answered = new Promise<number>((resolve) => (firstAnswer = resolve));
    for (let c = 0, sent = 0; c < CONNECTIONS + 1; c++) {
      const session = http2.connect(`http://${relay.address}`);
      session.on('error', () => undefined);
      sessions.push(session);
      for (let i = 0; i < STREAMS_PER_CONNECTION && sent <= MAX_HELD_LOOKUPS_PER_ADDRESS; i++, sent++) {
        const stream = session.request({ ':path': `/v2/relay?route=${route()}&wait_ms=${HELD_LOOKUP_MS}` });
        stream.on('response', (headers) => firstAnswer(Number(headers[':status'])));
        stream.on('error', () => undefined);
        stream.resume();
      }
    }
    assert.equal(await withTimeout(answered, DEFAULT_WAIT_MS, 'the lookup past the cap'), 404, 'answered at once: not placed');
    await waitingReaches(MAX_HELD_LOOKUPS_PER_ADDRESS, 'the held lookups');
    // gRPC and HTTP/1.1 from the same address: answered at once too.
    assert.deepEqual(await grpcLookup(relay.address, route(), false, { waitMs: HELD_LOOKUP_MS }), { ok: false, code: NOT_FOUND, details: 'session not placed' });
    assert.equal((await httpLookup(relay.port, `route=${route()}&wait_ms=${HELD_LOOKUP_MS}`)).status, 404);
    assert.equal(await relay.metric(WAITING), MAX_HELD_LOOKUPS_PER_ADDRESS);
  } finally {
    for (const session of sessions) session.destroy();
  }
  // The clients gone, their slots are free: a lookup is held again.
  await waitingReaches(0, 'the held lookups to end');
  const leave = new AbortController();
  const held = grpcLookup(relay.address, route(), false, { waitMs: HELD_LOOKUP_MS }, leave.signal);
  await waitingReaches(1, 'a held lookup');
  leave.abort();
  assert.equal((await held).ok, false);
});

/** Polls the relay's held-lookup gauge (bounded by DEFAULT_WAIT_MS) until it reads `value`. */
async function waitingReaches(value: number, what: string): Promise<void> {
  let now: number | undefined;
  const deadline = Date.now() + DEFAULT_WAIT_MS;
  while ((now = await relay.metric(WAITING)) !== value) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}: ${WAITING} ${now}, not ${value}`);
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
}
