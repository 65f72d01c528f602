/**
 * `npm run bench`: every measurement next to the direct-pipe baseline of the
 * same run, on 127.0.0.1 only, each bounded in time; the whole run stays
 * under about ten minutes. Prints markdown and writes bench/results/latest.md
 * (and .json). Every child process is killed at the end, even on failure.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { rampBrowserSessions } from './browser-ramp.js';
import { killAll } from './children.js';
import { measureIdleMemory } from './idle-memory.js';
import { measurePingPong } from './latency.js';
import { alternate, combineLatency, combineThroughput } from './repeat.js';
import { renderMarkdown, type Outcome, type Results } from './report.js';
import { ROOT, startDirectPipe, startHashmail, type RelayProcess } from './server-process.js';
import type { AppTransport } from './session.js';
import { measureOneWay, type Direction } from './throughput.js';

/** The whole run (after the build) aims to end within this. */
const RUN_BUDGET_MS = 9 * 60_000;
const KiB = 1024;
/** Loopback clients all come from 127.0.0.1: the per-address limits would count the whole bench as one client. */
const BENCH_LIMITS = { maxBoxesPerAddress: 1_000_000, maxConnectionsPerAddress: 200_000 };
const CONFIG_UNLIMITED = { mailbox: { rateLimitIntervalMs: 0 }, limits: BENCH_LIMITS };
const CONFIG_DEPLOYED = { limits: BENCH_LIMITS };

/** Alternating repetitions per latency/throughput case; the median is reported. */
const REPS = 5;
const LATENCY = { warmup: 1_000, roundTrips: 2_000, timeLimitMs: 20_000, stallMs: 5_000 };
const THROUGHPUT_1K = { sizeBytes: KiB, count: 20_000, warmup: 2_000, timeLimitMs: 15_000, stallMs: 5_000 };
const THROUGHPUT_32K = { sizeBytes: 32 * KiB, count: 3_000, warmup: 300, timeLimitMs: 15_000, stallMs: 5_000 };
const RATE_LIMITED = { sizeBytes: KiB, count: 20_000, warmup: 0, timeLimitMs: 5_000, stallMs: 5_000 };
const IDLE = { sessions: 5_000, workers: 4, concurrency: 25, sessionsPerNodeConnection: 1, settleMs: 5_000, samples: 5, timeoutMs: 15_000, openBudgetMs: 120_000 };
const RAMP = { steps: [1_000, 2_000, 4_000, 6_000, 8_000, 9_000], workers: 4, concurrency: 25, sessionsPerNodeConnection: 50, timeoutMs: 15_000, stepBudgetMs: 90_000 };
/** Time each later phase needs at least, or it is skipped. */
const IDLE_PHASE_MIN_MS = 150_000;
const RAMP_PHASE_MIN_MS = 60_000;

const startedMs = Date.now();
const deadline = startedMs + RUN_BUDGET_MS;
const log = (line: string): void => {
  process.stderr.write(`[bench +${((Date.now() - startedMs) / 1000).toFixed(0)}s] ${line}\n`);
};

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    const value = await fn();
    return { ok: true, value };
  } catch (err) {
    log(`${what} failed: ${(err as Error).message}`);
    return { ok: false, error: (err as Error).message.split('\n')[0] };
  }
}

function machine(): Record<string, string> {
  const cpus = os.cpus();
  return {
    nproc: String(os.availableParallelism()),
    cpu: cpus[0]?.model.trim() ?? 'unknown',
    memory: `${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB`,
    node: process.version,
    kernel: `${os.type()} ${os.release()}`,
    'load average at start': os.loadavg().map((l) => l.toFixed(2)).join(' '),
  };
}

const appLabel = (app: AppTransport): string => (app === 'grpc' ? 'app gRPC' : 'app WebSocket');

async function latencyPhase(relays: { hashmail: RelayProcess; direct: RelayProcess }, results: Results): Promise<void> {
  const cases: { app: AppTransport; size: number; reference: string }[] = [
    { app: 'grpc', size: KiB, reference: 'p50 0.25 / p99 1.3 ms' },
    { app: 'grpc', size: 32 * KiB, reference: '' },
    { app: 'ws', size: KiB, reference: '' },
    { app: 'ws', size: 32 * KiB, reference: '' },
  ];
  for (const c of cases) {
    const label = `${c.size / KiB} KiB, node gRPC, ${appLabel(c.app)}`;
    const o = { ...LATENCY, app: c.app, sizeBytes: c.size };
    const runs = await alternate(REPS, {
      direct: () => attempt(`latency ${label} direct`, () => measurePingPong(relays.direct, o)),
      hashmail: () => attempt(`latency ${label} hashmail`, () => measurePingPong(relays.hashmail, o)),
    });
    const hashmail = combineLatency(runs.hashmail);
    const direct = combineLatency(runs.direct);
    log(`latency ${label}: hashmail p50 ${hashmail.ok ? hashmail.value.p50.toFixed(3) : 'failed'} ms, direct ${direct.ok ? direct.value.p50.toFixed(3) : 'failed'} ms`);
    results.latency.push({ label, reference: c.reference, hashmail, direct });
  }
}

async function throughputPhase(relays: { hashmail: RelayProcess; direct: RelayProcess }, results: Results): Promise<void> {
  const cases: { app: AppTransport; direction: Direction; big: boolean; reference: string }[] = [
    { app: 'grpc', direction: 'app->node', big: false, reference: '33 MB/s' },
    { app: 'grpc', direction: 'app->node', big: true, reference: '107 MB/s' },
    { app: 'ws', direction: 'app->node', big: false, reference: '' },
    { app: 'ws', direction: 'app->node', big: true, reference: '57 MB/s (app WebSocket, size and direction not stated)' },
    { app: 'ws', direction: 'node->app', big: false, reference: '' },
    { app: 'ws', direction: 'node->app', big: true, reference: '' },
  ];
  for (const c of cases) {
    const size = c.big ? THROUGHPUT_32K : THROUGHPUT_1K;
    const label = `${size.sizeBytes / KiB} KiB × ${size.count}, ${c.direction === 'app->node' ? 'app → node' : 'node → app'}, ${appLabel(c.app)}`;
    const o = { ...size, app: c.app, direction: c.direction };
    const runs = await alternate(REPS, {
      direct: () => attempt(`throughput ${label} direct`, () => measureOneWay(relays.direct, o)),
      hashmail: () => attempt(`throughput ${label} hashmail`, () => measureOneWay(relays.hashmail, o)),
    });
    const hashmail = combineThroughput(runs.hashmail);
    const direct = combineThroughput(runs.direct);
    log(`throughput ${label}: hashmail ${hashmail.ok ? hashmail.value.mbPerSec.toFixed(1) : 'failed'} MB/s, direct ${direct.ok ? direct.value.mbPerSec.toFixed(1) : 'failed'} MB/s`);
    results.throughput.push({ label, reference: c.reference, hashmail, direct });
  }
}

async function withRelay<T>(start: () => Promise<RelayProcess>, fn: (relay: RelayProcess) => Promise<T>): Promise<T> {
  const relay = await start();
  try {
    return await fn(relay);
  } finally {
    await relay.stop();
  }
}

async function main(): Promise<void> {
  const results: Results = {
    machine: machine(),
    startedAt: new Date(startedMs).toISOString(),
    durationS: 0,
    hashmailConfig: { throughputAndLatency: CONFIG_UNLIMITED, memoryAndRamp: CONFIG_DEPLOYED },
    latency: [],
    throughput: [],
    rateLimited: [],
    idle: null,
    ramp: null,
    notes: [],
  };
  try {
    // 1 and 2: one hashmail without the rate limit and one direct pipe, used in turn.
    log('latency and throughput: starting hashmail (rateLimitIntervalMs 0) and the direct pipe');
    const direct = await startDirectPipe();
    try {
      await withRelay(
        () => startHashmail(CONFIG_UNLIMITED),
        async (hashmail) => {
          await latencyPhase({ hashmail, direct }, results);
          await throughputPhase({ hashmail, direct }, results);
        },
      );
    } finally {
      await direct.stop();
    }

    log('rate-limited throughput: hashmail at the default 20 ms / burst 1000');
    const limited = await attempt('rate-limited run', () =>
      withRelay(
        () => startHashmail(CONFIG_DEPLOYED),
        (hashmail) => measureOneWay(hashmail, { ...RATE_LIMITED, app: 'grpc', direction: 'app->node' }),
      ),
    );
    results.rateLimited.push({ label: `1 KiB, app → node, app gRPC, ${RATE_LIMITED.timeLimitMs / 1000} s window, no warm-up`, result: limited });

    // 3: fresh processes, so RSS before/after is theirs alone.
    if (deadline - Date.now() > IDLE_PHASE_MIN_MS) {
      log(`idle memory: ${IDLE.sessions} sessions on the direct pipe (floor)`);
      const idleDirect = await attempt('idle memory direct', () => withRelay(startDirectPipe, (relay) => measureIdleMemory(relay, IDLE)));
      log(`idle memory: ${IDLE.sessions} sessions on hashmail`);
      const idleHashmail = await attempt('idle memory hashmail', () => withRelay(() => startHashmail(CONFIG_DEPLOYED), (relay) => measureIdleMemory(relay, IDLE)));
      results.idle = { hashmail: idleHashmail, direct: idleDirect };
    } else results.notes.push('idle memory skipped: not enough of the time budget left');

    // 4
    if (deadline - Date.now() > RAMP_PHASE_MIN_MS) {
      log(`browser ramp: steps ${RAMP.steps.join(', ')}`);
      results.ramp = await attempt('browser ramp', () =>
        withRelay(
          () => startHashmail(CONFIG_DEPLOYED),
          (relay) => rampBrowserSessions(relay, { ...RAMP, deadline: deadline - 30_000 }),
        ),
      );
    } else results.notes.push('browser ramp skipped: not enough of the time budget left');
  } catch (err) {
    results.notes.push(`run aborted: ${(err as Error).message.split('\n')[0]}`);
    log(`run aborted: ${(err as Error).stack ?? String(err)}`);
  }
  results.durationS = (Date.now() - startedMs) / 1000;
  results.machine['load average at end'] = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  const markdown = renderMarkdown(results);
  process.stdout.write(`\n${markdown}`);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'latest.md'), markdown);
  writeFileSync(join(dir, 'latest.json'), `${JSON.stringify(results, null, 2)}\n`);
  log(`wrote bench/results/latest.md`);
}

main()
  .catch((err: unknown) => {
    process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    killAll();
    // Client sockets and timers of failed runs must not keep the process alive.
    setTimeout(() => process.exit(), 500).unref();
  });
