/**
 * HTTP/2 connections nghttp2 ends with GOAWAY (protocol errors, floods) are
 * closed by the server within about a second, plain h2c and over TLS, while
 * the attacker keeps its side open and answers pings. Before, they stayed
 * until the 120 s keepalive failed; and a stream reset before grpc-js
 * answered it took the whole process down.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { H2_PROBE_GRACE_MS, H2_QUIET_MS } from '../../src/transport/h2-session-reaper.js';
import { clientStart, Flag, frame, FrameType, grpcRequestHeaders, H2_PREFACE, rapidReset, RawH2 } from '../helpers/h2-frames.js';
import { expectRecovered, footprint, ProbeSession } from '../helpers/server-health.js';
import { startServer, type RunningServer } from '../helpers/server.js';

const MiB = 1024 * 1024;
/** RSS may grow this much over the baseline during one attack. */
const RSS_GROWTH_BOUND_BYTES = 100 * MiB;
/** The reaper's own bound (quiet + grace) plus room for a loaded test machine. */
const CLOSE_BOUND_MS = H2_QUIET_MS + H2_PROBE_GRACE_MS + 3_000;
/** Long enough for nghttp2's reset rate limit, short enough to stay a bounded loop. */
const RAPID_RESETS = 3_000;
const CONTINUATIONS = 200;
const RESETS_BEFORE_ANSWER = 200;

/** HTTP/2 error codes (RFC 9113 section 7). */
const PROTOCOL_ERROR = 0x1;
const FRAME_SIZE_ERROR = 0x6;
const COMPRESSION_ERROR = 0x9;

interface Attack {
  name: string;
  bytes(): Buffer;
  /** The GOAWAY error code nghttp2 answers with; null when only the close is checked (floods). */
  goaway: number | null;
}

const attacks: Attack[] = [
  { name: 'DATA on stream 0', goaway: PROTOCOL_ERROR, bytes: () => Buffer.concat([clientStart(), frame(FrameType.DATA, 0, 0, Buffer.from('x'))]) },
  {
    name: 'bad HPACK',
    goaway: COMPRESSION_ERROR,
    bytes: () => Buffer.concat([clientStart(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(6, 0xff))]),
  },
  {
    name: 'malformed SETTINGS (length not a multiple of 6)',
    goaway: FRAME_SIZE_ERROR,
    bytes: () => Buffer.concat([H2_PREFACE, frame(FrameType.SETTINGS, 0, 0, Buffer.alloc(5))]),
  },
  {
    name: 'oversized header block (one HEADERS frame over SETTINGS_MAX_FRAME_SIZE)',
    goaway: FRAME_SIZE_ERROR,
    bytes: () => Buffer.concat([clientStart(), frame(FrameType.HEADERS, Flag.END_HEADERS, 1, Buffer.alloc(20_000, 0x40))]),
  },
  {
    name: 'oversized header block (CONTINUATION flood)',
    goaway: null,
    bytes: () => {
      const literal = Buffer.concat([Buffer.from([0x00, 0x01, 0x78, 0x7f, 0x81, 0x7f]), Buffer.alloc(255, 0x61)]);
      const frames = [clientStart(), frame(FrameType.HEADERS, 0, 1, grpcRequestHeaders('/x.Y/Z'))];
      for (let i = 0; i < CONTINUATIONS; i++) frames.push(frame(FrameType.CONTINUATION, 0, 1, literal));
      return Buffer.concat(frames);
    },
  },
  {
    name: 'rapid reset flood',
    goaway: null,
    bytes: () => {
      const frames = [clientStart()];
      for (let i = 0; i < RAPID_RESETS; i++) frames.push(rapidReset(1 + 2 * i, '/no.Such/Method'));
      return Buffer.concat(frames);
    },
  },
];

function transportSuite(transport: 'h2c' | 'TLS'): void {
  describe(`HTTP/2 sessions ended by GOAWAY (${transport})`, () => {
    let server: RunningServer;
    let ca: Buffer | undefined;
    let probe: ProbeSession;

    before(async () => {
      server = await startServer({ insecure: transport === 'h2c' });
      ca = transport === 'TLS' ? readFileSync(join(server.dataDir, 'tls.cert')) : undefined;
      probe = await new ProbeSession(server, { tlsCa: ca }).open();
    });
    after(async () => {
      probe.close();
      await server.stop();
    });

    const open = (): Promise<RawH2> => (ca ? RawH2.tls(server.port, ca) : RawH2.plain(server.port));

    for (const attack of attacks) {
      test(`${attack.name}: GOAWAY, then the server closes the connection the peer keeps open`, async () => {
        const base = await footprint(server);
        const conn = await open();
        try {
          const started = Date.now();
          conn.write(attack.bytes());
          if (attack.goaway !== null) assert.equal(await conn.goaway(CLOSE_BOUND_MS), attack.goaway, 'GOAWAY error code');
          await conn.serverClosed(CLOSE_BOUND_MS);
          assert.ok(Date.now() - started < CLOSE_BOUND_MS, `closed after ${Date.now() - started} ms`);
        } finally {
          conn.destroy();
        }
        await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: attack.name });
      });
    }

    test('streams reset before grpc-js answers them (unknown method, wrong content-type) do not crash the server', async () => {
      const base = await footprint(server);
      const conn = await open();
      try {
        const frames = [clientStart()];
        for (let i = 0; i < RESETS_BEFORE_ANSWER; i++) {
          frames.push(i % 2 === 0 ? rapidReset(1 + 2 * i, '/no.Such/Method') : rapidReset(1 + 2 * i, '/hashmailrpc.HashMail/NewCipherBox', 'text/plain'));
        }
        conn.write(Buffer.concat(frames));
        await conn.serverClosed(CLOSE_BOUND_MS + H2_PROBE_GRACE_MS).catch(() => undefined);
      } finally {
        conn.destroy();
      }
      assert.equal(server.process.exitCode, null, 'server still running');
      await expectRecovered(server, base, probe, { rssBoundBytes: base.rssBytes + RSS_GROWTH_BOUND_BYTES, what: 'resets before answer' });
    });

    test('a live idle session that answers pings is kept', async () => {
      const conn = await open();
      try {
        conn.write(clientStart());
        // Long enough for the first probe and its grace to pass twice.
        const idleMs = 2 * (H2_QUIET_MS + H2_PROBE_GRACE_MS) + H2_QUIET_MS;
        await assert.rejects(conn.serverClosed(idleMs), /no server close/);
        assert.equal(conn.closed, false);
      } finally {
        conn.destroy();
      }
    });
  });
}

transportSuite('h2c');
transportSuite('TLS');
