import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { Logger } from '../../src/observe/logger.js';
import { RefusalLog } from '../../src/observe/refusal-log.js';
import { FakeClock } from '../helpers/fake-clock.js';

const INTERVAL_MS = 10_000;

interface Line {
  at: number;
  limit: string;
  refused: number;
}

/** A logger that keeps the warn lines RefusalLog writes, stamped with the fake time. */
function recorder(clock: FakeClock): { logger: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const logger = {
    warn(fields: { limit: string; refused: number }, msg: string) {
      assert.equal(msg, 'refused by limit');
      lines.push({ at: clock.now(), limit: fields.limit, refused: fields.refused });
    },
  } as unknown as Logger;
  return { logger, lines };
}

test('the first refusal after a quiet interval is logged at once', () => {
  const clock = new FakeClock();
  const { logger, lines } = recorder(clock);
  const log = new RefusalLog(logger, INTERVAL_MS, clock);
  log.refused('limits.maxConnections');
  assert.deepEqual(lines, [{ at: clock.now(), limit: 'limits.maxConnections', refused: 1 }]);
  clock.advance(INTERVAL_MS);
  log.refused('limits.maxConnections');
  assert.equal(lines.length, 2, 'a full interval later: logged at once again');
  assert.equal(clock.pending, 0, 'nothing left scheduled');
});

test('a flood is one line per interval with the count since the last line; counts sum to the refusals', () => {
  const clock = new FakeClock();
  const { logger, lines } = recorder(clock);
  const log = new RefusalLog(logger, INTERVAL_MS, clock);
  const start = clock.now();
  const REFUSALS = 1000;
  const STEP_MS = 35; // 1000 refusals over 35 s
  for (let i = 0; i < REFUSALS; i++) {
    log.refused('limits.maxConnectionsPerAddress');
    clock.advance(STEP_MS);
  }
  clock.advance(INTERVAL_MS);
  const elapsed = clock.now() - start;
  assert.ok(lines.length <= Math.ceil(elapsed / INTERVAL_MS) + 1, `${lines.length} lines`);
  assert.equal(lines.reduce((sum, l) => sum + l.refused, 0), REFUSALS);
  for (let i = 1; i < lines.length; i++) assert.ok(lines[i].at - lines[i - 1].at >= INTERVAL_MS, 'lines at least an interval apart');
  assert.equal(lines[0].refused, 1, 'the first line is the first refusal');
});

test('each limit has its own interval', () => {
  const clock = new FakeClock();
  const { logger, lines } = recorder(clock);
  const log = new RefusalLog(logger, INTERVAL_MS, clock);
  log.refused('limits.maxBoxes');
  log.refused('limits.maxBoxes');
  log.refused('limits.maxStreamsPerConnection');
  assert.deepEqual(
    lines.map((l) => [l.limit, l.refused]),
    [
      ['limits.maxBoxes', 1],
      ['limits.maxStreamsPerConnection', 1],
    ],
  );
  clock.advance(INTERVAL_MS);
  assert.deepEqual(lines.at(-1), { at: clock.now(), limit: 'limits.maxBoxes', refused: 1 });
  assert.equal(lines.length, 3);
});

test('flush writes what is pending and cancels the scheduled line', () => {
  const clock = new FakeClock();
  const { logger, lines } = recorder(clock);
  const log = new RefusalLog(logger, INTERVAL_MS, clock);
  for (let i = 0; i < 5; i++) log.refused('limits.maxBoxesPerAddress');
  assert.equal(lines.length, 1);
  log.flush();
  assert.deepEqual(lines.at(-1)?.refused, 4);
  assert.equal(clock.pending, 0);
  log.flush();
  assert.equal(lines.length, 2, 'nothing pending: no line');
});

test('bad requests: one warn line per code and interval, with the count and where the latest came from', () => {
  const clock = new FakeClock();
  const lines: { code: string; count: number; call: string; msg: string }[] = [];
  const logger = {
    warn(fields: { code: string; count: number; call: string }, msg: string) {
      lines.push({ code: fields.code, count: fields.count, call: fields.call, msg });
    },
  } as unknown as Logger;
  const log = new RefusalLog(logger, INTERVAL_MS, clock);
  for (let i = 0; i < 20_000; i++) log.badRequest('MALFORMED_REQUEST', { transport: 'websocket', call: i % 2 ? 'send' : 'receive' });
  log.badRequest('INVALID_STREAM_ID', { transport: 'grpc', call: 'RecvStream' });
  assert.deepEqual(lines, [
    { code: 'MALFORMED_REQUEST', count: 1, call: 'receive', msg: 'bad requests' },
    { code: 'INVALID_STREAM_ID', count: 1, call: 'RecvStream', msg: 'bad requests' },
  ]);
  clock.advance(INTERVAL_MS);
  assert.deepEqual(lines.slice(2), [{ code: 'MALFORMED_REQUEST', count: 19_999, call: 'send', msg: 'bad requests' }]);
});
