/**
 * Metrics against a real SessionTable and hand-filled RelayStats: every name
 * the dashboards chart is rendered, values follow the table, the session
 * classification follows the legacy read-rate rule (driven by sampleNow() and
 * a fake clock, no timers), and no label value is ever a SID. The admin
 * server listens on a real loopback port.
 */
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { pino } from 'pino';
import { startAdminServer } from '../../src/observe/admin-server.js';
import { Metrics } from '../../src/observe/metrics.js';
import { RelayStats } from '../../src/observe/stats.js';
import type { Clock, TimerHandle } from '../../src/session/clock.js';
import { SessionTable, type SessionTableOptions } from '../../src/session/session-table.js';

const TABLE_OPTIONS: SessionTableOptions = {
  bufferBytes: 65536,
  rateLimit: null,
  acquireWaitMs: 250,
  maxBoxes: 100,
  maxBoxesPerAddress: 100,
  maxBufferedBytes: 1 << 20,
  staleTimeoutMs: -1,
};
const WINDOW_MS = 10_000;
const SID_BYTES = 64;
const OWNER = '127.0.0.1';

/** A clock that only moves when told; timers never fire on their own. */
class FakeClock implements Clock {
  t = 1_000_000;
  now(): number {
    return this.t;
  }
  setTimeout(): TimerHandle {
    return {};
  }
  clearTimeout(): void {}
  advance(ms: number): void {
    this.t += ms;
  }
}

/** The SID of box `index` (0 or 1) of session `n`. */
function sid(n: number, index: 0 | 1 = 0): Buffer {
  const out = Buffer.alloc(SID_BYTES, 0xab);
  out.writeUInt32BE(n, 0);
  out[SID_BYTES - 1] = 0xa0 | index;
  return out;
}

function setup(): { table: SessionTable; stats: RelayStats; clock: FakeClock; metrics: Metrics } {
  const table = new SessionTable(TABLE_OPTIONS);
  const stats = new RelayStats();
  const clock = new FakeClock();
  const metrics = new Metrics({ stats, table, sessionRateWindowMs: WINDOW_MS, clock });
  return { table, stats, clock, metrics };
}

/** Writes then reads `count` messages through box `s`, bumping its `delivered`. */
async function relay(table: SessionTable, s: Buffer, count: number): Promise<void> {
  const box = table.findBox(s);
  for (let i = 0; i < count; i++) {
    await box.write(Buffer.from('x'));
    await box.read();
  }
}

/** The value of the sample line `series` (name plus labels exactly as rendered). */
function value(text: string, series: string): number | undefined {
  for (const line of text.split('\n')) {
    if (line.startsWith(`${series} `)) return Number(line.slice(series.length + 1));
  }
  return undefined;
}

async function render(metrics: Metrics): Promise<string> {
  return (await metrics.render()).body;
}

const EXPECTED_NAMES = [
  'hashmail_mailbox_count',
  'hashmail_mailbox_active_sessions',
  'hashmail_mailbox_standby_sessions',
  'hashmail_mailbox_inuse_sessions',
  'hashmail_attached_halves',
  'hashmail_messages_relayed_total',
  'hashmail_bytes_relayed_total',
  'hashmail_errors_total',
  'hashmail_buffered_bytes',
  'hashmail_rate_limited_waits_total',
  'hashmail_limit_hits_total',
  'hashmail_sessions',
  'hashmail_open_connections',
  'hashmail_websocket_connections',
  'hashmail_hop_lanes',
  'hashmail_hop_calls',
  'grpc_server_started_total',
  'grpc_server_handled_total',
  'grpc_server_msg_received_total',
  'grpc_server_msg_sent_total',
  'grpc_server_handling_seconds',
  'process_cpu_seconds_total',
];

describe('Metrics', () => {
  test('renders every metric name with the Prometheus content type', async () => {
    const { metrics } = setup();
    const { contentType, body } = await metrics.render();
    assert.match(contentType, /^text\/plain/);
    for (const name of EXPECTED_NAMES) assert.match(body, new RegExp(`^# TYPE ${name} `, 'm'), name);
  });

  test('box, session and buffer gauges follow the table', async () => {
    const { table, metrics } = setup();
    assert.equal(value(await render(metrics), 'hashmail_mailbox_count'), 0);
    table.createBox(sid(1, 0), OWNER);
    table.createBox(sid(1, 1), OWNER);
    table.createBox(sid(2, 0), OWNER);
    await table.findBox(sid(2, 0)).write(Buffer.alloc(100));
    let text = await render(metrics);
    assert.equal(value(text, 'hashmail_mailbox_count'), 3);
    assert.equal(value(text, 'hashmail_sessions'), 2);
    assert.equal(value(text, 'hashmail_buffered_bytes'), table.budget.usedBytes);
    assert.ok(table.budget.usedBytes >= 100);
    table.deleteBox(sid(1, 1));
    text = await render(metrics);
    assert.equal(value(text, 'hashmail_mailbox_count'), 2);
    assert.equal(value(text, 'hashmail_sessions'), 2);
  });

  test('counters and gauges follow RelayStats, with bounded labels', async () => {
    const { stats, metrics } = setup();
    stats.messagesRelayed = 7;
    stats.bytesRelayed = 700;
    stats.rateLimitedWaits = 3;
    stats.connectionsOpen = 4;
    stats.attached.grpc.read = 2;
    stats.attached.websocket.write = 1;
    stats.countError('STREAM_NOT_FOUND');
    stats.countError('STREAM_NOT_FOUND');
    stats.countLimit('limits.maxBoxes');
    metrics.setOpenSockets(() => 5);
    let text = await render(metrics);
    assert.equal(value(text, 'hashmail_messages_relayed_total'), 7);
    assert.equal(value(text, 'hashmail_bytes_relayed_total'), 700);
    assert.equal(value(text, 'hashmail_rate_limited_waits_total'), 3);
    assert.equal(value(text, 'hashmail_open_connections'), 4);
    assert.equal(value(text, 'hashmail_websocket_connections'), 5);
    assert.equal(value(text, 'hashmail_attached_halves{transport="grpc",kind="read"}'), 2);
    assert.equal(value(text, 'hashmail_attached_halves{transport="websocket",kind="write"}'), 1);
    assert.equal(value(text, 'hashmail_attached_halves{transport="rest",kind="read"}'), 0);
    assert.equal(value(text, 'hashmail_errors_total{code="STREAM_NOT_FOUND"}'), 2);
    assert.equal(value(text, 'hashmail_limit_hits_total{limit="limits.maxBoxes"}'), 1);

    // Scraping twice must not double-count.
    stats.messagesRelayed = 9;
    stats.countError('STREAM_NOT_FOUND');
    text = await render(metrics);
    assert.equal(value(text, 'hashmail_messages_relayed_total'), 9);
    assert.equal(value(text, 'hashmail_errors_total{code="STREAM_NOT_FOUND"}'), 3);
  });

  test('classifies sessions by read rate over the last window', async () => {
    const { table, clock, metrics } = setup();
    // Session 1: in use; session 2: standby; session 3: idle (active only).
    for (const n of [1, 2, 3]) {
      table.createBox(sid(n, 0), OWNER);
      table.createBox(sid(n, 1), OWNER);
    }

    // Before the first window: reads since creation over time since start.
    clock.advance(WINDOW_MS);
    await relay(table, sid(1, 0), 3);
    await relay(table, sid(1, 1), 3); // 6 reads / 10 s = 0.6/s
    await relay(table, sid(2, 1), 1); // 0.1/s
    let text = await render(metrics);
    assert.equal(value(text, 'hashmail_mailbox_active_sessions'), 3);
    assert.equal(value(text, 'hashmail_mailbox_inuse_sessions'), 1);
    assert.equal(value(text, 'hashmail_mailbox_standby_sessions'), 1);
    assert.deepEqual(metrics.sampleNow(), { active: 3, standby: 1, inUse: 1 });

    // Next window: session 2 speeds up, session 1 goes quiet, a new session 4 reads a little.
    table.createBox(sid(4, 0), OWNER);
    await relay(table, sid(2, 0), 5); // 0.5/s exactly: in use
    await relay(table, sid(4, 0), 2); // 0.2/s
    text = await render(metrics);
    // Until the window closes, the gauges keep reporting the last completed one.
    assert.equal(value(text, 'hashmail_mailbox_active_sessions'), 3);
    assert.equal(value(text, 'hashmail_mailbox_inuse_sessions'), 1);
    clock.advance(WINDOW_MS);
    assert.deepEqual(metrics.sampleNow(), { active: 4, standby: 1, inUse: 1 });
    text = await render(metrics);
    assert.equal(value(text, 'hashmail_mailbox_active_sessions'), 4);
    assert.equal(value(text, 'hashmail_mailbox_standby_sessions'), 1);
    assert.equal(value(text, 'hashmail_mailbox_inuse_sessions'), 1);

    // A quiet window: nothing read, every session is only active.
    clock.advance(WINDOW_MS);
    assert.deepEqual(metrics.sampleNow(), { active: 4, standby: 0, inUse: 0 });

    // A deleted and recreated box restarts its count instead of going negative.
    table.deleteBox(sid(2, 0));
    table.createBox(sid(2, 0), OWNER);
    await relay(table, sid(2, 0), 1);
    clock.advance(WINDOW_MS);
    assert.deepEqual(metrics.sampleNow(), { active: 4, standby: 1, inUse: 0 });
  });

  test('start() and stop() drive a timer on the injected clock', () => {
    const armed: number[] = [];
    let cleared = 0;
    const clock: Clock = {
      now: () => 0,
      setTimeout: (_fn, ms) => {
        armed.push(ms);
        return {};
      },
      clearTimeout: () => {
        cleared++;
      },
    };
    const metrics = new Metrics({
      stats: new RelayStats(),
      table: new SessionTable(TABLE_OPTIONS),
      sessionRateWindowMs: WINDOW_MS,
      clock,
    });
    metrics.start();
    metrics.start();
    assert.deepEqual(armed, [WINDOW_MS]);
    metrics.stop();
    metrics.stop();
    assert.equal(cleared, 1);
  });

  test('gRPC call metrics use go-grpc-prometheus names, code names and cached children', async () => {
    const { metrics } = setup();
    const call = metrics.grpcCall('hashmailrpc.HashMail', 'RecvStream', 'server_stream');
    call.sent();
    call.sent();
    call.done(5);
    call.done(0); // idempotent: the first status wins
    const unary = metrics.grpcCall('hashmailrpc.HashMail', 'NewCipherBox', 'unary');
    unary.received();
    unary.done(0);
    metrics.grpcCall('hashmailrpc.HashMail', 'NewCipherBox', 'unary').done(0);
    const text = await render(metrics);
    const recv = 'grpc_type="server_stream",grpc_service="hashmailrpc.HashMail",grpc_method="RecvStream",transport="grpc"';
    const box = 'grpc_type="unary",grpc_service="hashmailrpc.HashMail",grpc_method="NewCipherBox",transport="grpc"';
    assert.equal(value(text, `grpc_server_started_total{${recv}}`), 1);
    assert.equal(value(text, `grpc_server_msg_sent_total{${recv}}`), 2);
    assert.equal(value(text, `grpc_server_handled_total{${recv},grpc_code="NotFound"}`), 1);
    assert.equal(value(text, `grpc_server_handled_total{${recv},grpc_code="OK"}`), undefined);
    assert.equal(value(text, `grpc_server_handling_seconds_count{${recv}}`), 1);
    assert.equal(value(text, `grpc_server_started_total{${box}}`), 2);
    assert.equal(value(text, `grpc_server_msg_received_total{${box}}`), 1);
    assert.equal(value(text, `grpc_server_handled_total{${box},grpc_code="OK"}`), 2);
    for (const le of ['0.005', '10', '60', '600', '3600', '14400', '+Inf']) {
      assert.notEqual(value(text, `grpc_server_handling_seconds_bucket{le="${le}",${box}}`), undefined, le);
    }
  });

  test('no label value carries a SID or anything long and unbounded', async () => {
    const { table, stats, metrics } = setup();
    for (let n = 0; n < 20; n++) table.createBox(sid(n), OWNER);
    await relay(table, sid(0), 2);
    stats.countError('STREAM_NOT_FOUND');
    metrics.sampleNow();
    metrics.grpcCall('hashmailrpc.HashMail', 'SendStream', 'client_stream').done(0);
    const text = await render(metrics);
    const sidHexes = Array.from({ length: 20 }, (_, n) => sid(n).toString('hex'));
    const sidB64 = Array.from({ length: 20 }, (_, n) => sid(n).toString('base64'));
    for (const line of text.split('\n')) {
      if (line.startsWith('#') || !line.includes('{')) continue;
      for (const [, labelValue] of line.matchAll(/="([^"]*)"/g)) {
        assert.ok(labelValue.length <= 40, `long label value: ${line}`);
        assert.ok(!sidHexes.some((h) => h.includes(labelValue) && labelValue.length > 8), line);
        assert.ok(!sidB64.includes(labelValue), line);
      }
      const name = line.slice(0, line.indexOf('{'));
      if (name.startsWith('hashmail_mailbox_')) assert.fail(`session gauge with labels: ${line}`);
    }
  });
});

describe('admin server', () => {
  const logger = pino({ level: 'silent' });

  async function withServer(
    health: () => { live: boolean; ready: boolean; detail?: Record<string, unknown> },
    fn: (base: string) => Promise<void>,
  ): Promise<void> {
    const { table, metrics } = setup();
    table.createBox(sid(1), OWNER);
    const server = await startAdminServer({ listen: '127.0.0.1:0', metrics, health, logger });
    try {
      assert.match(server.address, /^127\.0\.0\.1:\d+$/);
      assert.notEqual(server.address, '127.0.0.1:0');
      await fn(`http://${server.address}`);
    } finally {
      await server.close();
    }
  }

  test('serves /healthz, /readyz, /metrics and 404s the rest', async () => {
    await withServer(
      () => ({ live: true, ready: true }),
      async (base) => {
        let res = await fetch(`${base}/healthz`);
        assert.equal(res.status, 200);
        assert.deepEqual(await res.json(), { status: 'ok' });
        res = await fetch(`${base}/readyz`);
        assert.equal(res.status, 200);
        await res.body?.cancel();
        res = await fetch(`${base}/metrics?x=1`);
        assert.equal(res.status, 200);
        assert.match(res.headers.get('content-type') ?? '', /^text\/plain/);
        const text = await res.text();
        assert.equal(value(text, 'hashmail_mailbox_count'), 1);
        res = await fetch(`${base}/metrics`, { method: 'HEAD' });
        assert.equal(res.status, 200);
        assert.equal(await res.text(), '');
        res = await fetch(`${base}/nope`);
        assert.equal(res.status, 404);
        await res.body?.cancel();
        res = await fetch(`${base}/metrics`, { method: 'POST', body: 'x' });
        assert.equal(res.status, 405);
        await res.body?.cancel();
      },
    );
  });

  test('reports 503 when not ready or not live', async () => {
    await withServer(
      () => ({ live: false, ready: false, detail: { phase: 'draining' } }),
      async (base) => {
        let res = await fetch(`${base}/healthz`);
        assert.equal(res.status, 503);
        await res.body?.cancel();
        res = await fetch(`${base}/readyz`);
        assert.equal(res.status, 503);
        const body = (await res.json()) as { detail?: { phase?: string } };
        assert.equal(body.detail?.phase, 'draining');
      },
    );
  });

  test('a failing health callback answers 500 and the server keeps serving', async () => {
    let calls = 0;
    await withServer(
      () => {
        calls++;
        if (calls === 1) throw new Error('boom');
        return { live: true, ready: true };
      },
      async (base) => {
        let res = await fetch(`${base}/healthz`);
        assert.equal(res.status, 500);
        await res.body?.cancel();
        res = await fetch(`${base}/healthz`);
        assert.equal(res.status, 200);
        await res.body?.cancel();
      },
    );
  });

  test('rejects a malformed listen address and binds [::1] when available', async () => {
    const { metrics } = setup();
    const health = () => ({ live: true, ready: true });
    await assert.rejects(startAdminServer({ listen: 'nope', metrics, health, logger }), /HOST:PORT/);
    let server;
    try {
      server = await startAdminServer({ listen: '[::1]:0', metrics, health, logger });
    } catch {
      return; // no IPv6 loopback in this environment
    }
    try {
      assert.match(server.address, /^\[::1\]:\d+$/);
      const res = await fetch(`http://${server.address}/healthz`);
      assert.equal(res.status, 200);
      await res.body?.cancel();
    } finally {
      await server.close();
    }
  });
});
