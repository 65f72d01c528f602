/**
 * Connections refused over limits.maxConnectionsPerAddress are answered
 * (HTTP 429, gRPC RESOURCE_EXHAUSTED with the text clients read as written)
 * and gone within a second whatever the peer does, in plain text and over
 * TLS; the flood leaves a bounded number of warn lines whose counts add up.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import * as grpc from '@grpc/grpc-js';
import { REFUSAL_GRACE_MS } from '../../src/transport/public-listener.js';
import { pollUntil } from '../helpers/async-queue.js';
import { connect, randomSid } from '../helpers/grpc-v1.js';
import { clientStart, RawH2 } from '../helpers/h2-frames.js';
import { inBatches, openRaw, type RawConn } from '../helpers/raw-http.js';
import { expectRecovered, footprint, ProbeSession } from '../helpers/server-health.js';
import { startServer, type RunningServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
const RSS_GROWTH_BOUND_BYTES = 100 * MiB;
const PER_ADDRESS = 2;
const LIMIT_KEY = 'limits.maxConnectionsPerAddress';
const REFUSAL_TEXT = `limit reached: ${LIMIT_KEY} (${PER_ADDRESS})`;
const LOG_INTERVAL_MS = 1_000;
/** The refusal grace plus room for a loaded test machine. */
const CLOSE_BOUND_MS = REFUSAL_GRACE_MS + 2_500;
const HTTP1_REFUSED = 200;
const H2_SILENT_REFUSED = 100;
const GRPC_REFUSED = 20;
/** Well under the 10 s preface timeout each: only counting at accept closes them within the grace. */
const SILENT_REFUSED = 100;
const PARALLEL = 20;

const REQUEST = 'GET /v1/lightning-node-connect/hashmail HTTP/1.1\r\nHost: x\r\n\r\n';
const REFUSAL_BODY = JSON.stringify({ code: grpc.status.RESOURCE_EXHAUSTED, message: REFUSAL_TEXT, details: [] });
const REFUSAL_RESPONSE =
  'HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\n' +
  `Content-Length: ${REFUSAL_BODY.length}\r\nConnection: close\r\n\r\n${REFUSAL_BODY}`;

interface RefusalLine {
  limit: string;
  refused: number;
}

function refusalLines(server: RunningServer, from: number): RefusalLine[] {
  return server.logs.slice(from).filter((l) => l.msg === 'refused by limit' && l.limit === LIMIT_KEY) as unknown as RefusalLine[];
}

async function limitHits(server: RunningServer): Promise<number> {
  return (await server.metric(`hashmail_limit_hits_total{limit="${LIMIT_KEY}"}`)) ?? 0;
}

function transportSuite(transport: 'plain' | 'TLS'): void {
  describe(`connections over the per-address limit (${transport})`, () => {
    let server: RunningServer;
    let ca: Buffer | undefined;
    let probe: ProbeSession;
    let held: RawConn;
    const opened: { destroy(): void }[] = [];

    before(async () => {
      server = await startServer({
        insecure: transport === 'plain',
        config: { limits: { maxConnectionsPerAddress: PER_ADDRESS }, log: { refusalLogIntervalMs: LOG_INTERVAL_MS } },
      });
      ca = transport === 'TLS' ? readFileSync(join(server.dataDir, 'tls.cert')) : undefined;
      // The probe's connection and this one fill the address's two places.
      probe = await new ProbeSession(server, { tlsCa: ca }).open();
      held = await openRaw(server.port, { tlsCa: ca });
      held.socket.write(REQUEST.replace('GET /v1/lightning-node-connect/hashmail', 'GET /nope'));
      await pollUntil(async () => held.received().startsWith('HTTP/1.1 404'), 'held connection answered');
    });
    after(async () => {
      for (const c of opened.splice(0)) c.destroy();
      held.destroy();
      probe.close();
      await server.stop();
    });

    test(`HTTP/1.1: ${HTTP1_REFUSED} refused connections get the 429 and are gone within ${REFUSAL_GRACE_MS} ms, readers or not`, async () => {
      const base = await footprint(server);
      const hitsBefore = await limitHits(server);
      const logFrom = server.logs.length;
      const started = Date.now();
      await inBatches(HTTP1_REFUSED, PARALLEL, async (i) => {
        const conn = await openRaw(server.port, { tlsCa: ca });
        opened.push(conn);
        conn.socket.write(REQUEST);
        // Every other client neither reads nor closes: the server must not wait for it.
        if (i % 2 === 1) {
          conn.socket.pause();
          return;
        }
        await conn.whenClosed(CLOSE_BOUND_MS, `refused connection ${i}`);
        assert.equal(conn.received(), REFUSAL_RESPONSE);
      });
      await pollUntil(async () => (await server.metric('hashmail_open_connections')) === base.openConnections, 'silent refused connections gone', CLOSE_BOUND_MS / 50);
      await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: `${HTTP1_REFUSED} refused HTTP/1.1` });

      // Every refusal counted; the log says so in a few lines, not one per connection.
      assert.equal((await limitHits(server)) - hitsBefore, HTTP1_REFUSED);
      await pollUntil(
        async () => refusalLines(server, logFrom).reduce((sum, l) => sum + l.refused, 0) === HTTP1_REFUSED,
        'refusal counts in the log add up',
        (2 * LOG_INTERVAL_MS) / 50,
      );
      const lines = refusalLines(server, logFrom);
      const maxLines = Math.ceil((Date.now() - started) / LOG_INTERVAL_MS) + 1;
      assert.ok(lines.length <= maxLines, `${lines.length} warn lines for ${HTTP1_REFUSED} refusals (at most ${maxLines})`);
    });

    test('HTTP/2: gRPC calls get RESOURCE_EXHAUSTED with the limit text as written; silent connections are closed', async () => {
      const base = await footprint(server);
      const hitsBefore = await limitHits(server);
      for (let i = 0; i < GRPC_REFUSED; i++) {
        const client = connect(server.address, { tlsCa: ca });
        try {
          const err = await client.newCipherBox({ desc: { streamId: randomSid() }, hasAuth: true }).then(
            () => assert.fail('a call over the connection limit succeeded'),
            (e: grpc.ServiceError) => e,
          );
          assert.equal(err.code, grpc.status.RESOURCE_EXHAUSTED);
          assert.equal(err.details, REFUSAL_TEXT);
        } finally {
          client.close();
        }
      }
      // Connections that send the preface and no call at all, and answer pings.
      await inBatches(H2_SILENT_REFUSED, PARALLEL, async (i) => {
        const conn = ca ? await RawH2.tls(server.port, ca) : await RawH2.plain(server.port);
        opened.push(conn);
        conn.write(clientStart());
        await conn.serverClosed(CLOSE_BOUND_MS).catch((err: Error) => assert.fail(`silent HTTP/2 connection ${i}: ${err.message}`));
      });
      assert.equal((await limitHits(server)) - hitsBefore, GRPC_REFUSED + H2_SILENT_REFUSED);
      await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'refused HTTP/2' });
    });

    test(`${SILENT_REFUSED} connections that never send a byte count against the address at once and are closed within the grace`, async () => {
      const base = await footprint(server);
      await inBatches(SILENT_REFUSED, PARALLEL, async (i) => {
        // Plain TCP even on the TLS port: not even a ClientHello.
        const conn = await openRaw(server.port);
        opened.push(conn);
        await conn.whenClosed(CLOSE_BOUND_MS, `silent connection ${i}`);
      });
      await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: `${SILENT_REFUSED} silent connections` });
    });
  });
}

transportSuite('plain');
transportSuite('TLS');

test('call limits log rate-limited too: one line per interval, counts add up to the refusals', async () => {
  const BOX_LIMIT = 1;
  const REFUSED_CALLS = 50;
  const server = await startServer({ config: { limits: { maxBoxesPerAddress: BOX_LIMIT }, log: { refusalLogIntervalMs: LOG_INTERVAL_MS } } });
  const client = connect(server.address);
  try {
    await client.createBox(randomSid());
    const started = Date.now();
    for (let i = 0; i < REFUSED_CALLS; i++) {
      const err = await client.newCipherBox({ desc: { streamId: randomSid() }, hasAuth: true }).then(
        () => assert.fail('box over the limit created'),
        (e: grpc.ServiceError) => e,
      );
      assert.equal(err.details, `limit reached: limits.maxBoxesPerAddress (${BOX_LIMIT})`);
    }
    const lines = (): RefusalLine[] => server.logs.filter((l) => l.msg === 'refused by limit' && l.limit === 'limits.maxBoxesPerAddress') as unknown as RefusalLine[];
    await pollUntil(async () => lines().reduce((s, l) => s + l.refused, 0) === REFUSED_CALLS, 'call refusal counts add up', (2 * LOG_INTERVAL_MS) / 50);
    assert.ok(lines().length <= Math.ceil((Date.now() - started) / LOG_INTERVAL_MS) + 1, `${lines().length} lines`);
    assert.equal(await server.metric('hashmail_limit_hits_total{limit="limits.maxBoxesPerAddress"}'), REFUSED_CALLS);
  } finally {
    client.close();
    await server.stop();
  }
});
