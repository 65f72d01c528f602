/**
 * `npm run bench`: every measurement next to the direct-pipe baseline of the
 * same run, on 127.0.0.1 only, each bounded in time; the whole run stays
 * under about twelve minutes. Prints markdown and writes
 * bench/results/latest.md (and .json). Every child process is killed at the
 * end, even on failure.
 *
 * Protocol v1 and v2 are measured in the same run (v2 latency and throughput
 * on the same relay processes as v1), so v2/v1 ratios compare like with like.
 *
 * `--only=a,b`: run only the phases named (or every phase under a prefix:
 * `--only=v2` runs every v2-* phase). Phases, in order: v1-latency,
 * v2-latency, v1-throughput, v2-throughput, v1-rate-limited, v1-idle,
 * v2-sessions-ws (idle memory, then the 1 msg/s load, on 9,000 v2 WebSocket
 * sessions), v2-sessions-grpc (idle memory of 9,000 v2 gRPC sessions),
 * v1-ramp, hardening (issue 7, before/after builds: bench/hardening.ts); and,
 * only when named, cluster-directory, cluster-balance, cluster-rejoin, cluster-scale (issue 8:
 * bench/cluster.ts; `--only=cluster` runs the four), gateway-cost,
 * gateway-memory, gateway-storm (issue 9: bench/gateway.ts; `--only=gateway`
 * runs the three, each under ten minutes).
 * Example: `npm run bench -- --only=v2`.
 *
 * `--baseline=DIR`: the hardening phase's before build (a checkout of
 * f427e43 with dist/, or its dist/); built there if missing and kept.
 * Without it the phase builds one in a temporary directory and removes it.
 */
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import { join } from 'node:path';
import { rampBrowserSessions } from './browser-ramp.js';
import { killAll } from './children.js';
import { CLUSTER_PHASES, GATEWAY_PHASES, runClusterPhase } from './cluster.js';
import { steadyLoad, type SteadyLoadResult } from './concurrency.js';
import { measureIdleMemory, type IdleMemoryResult } from './idle-memory.js';
import { measurePingPong } from './latency.js';
import { runHardening } from './hardening.js';
import { alternate, combineLatency, combineThroughput } from './repeat.js';
import { renderMarkdown, type Outcome, type Results } from './report.js';
import { shapeLabel, type V2SessionsRun } from './report-v2.js';
import { CONFIG_DEPLOYED, CONFIG_UNLIMITED, ROOT, startDirectPipe, startHashmail, type RelayProcess } from './server-process.js';
import type { AppTransport, V2Shape } from './session.js';
import { measureOneWay, type Direction } from './throughput.js';

/** The whole run (after the build) aims to end within this. */
const RUN_BUDGET_MS = 15 * 60_000;
const KiB = 1024;

/** Alternating repetitions per latency/throughput case; the median is reported. */
const REPS = 5;
const LATENCY = { warmup: 1_000, roundTrips: 2_000, timeLimitMs: 20_000, stallMs: 5_000 };
const THROUGHPUT_1K = { sizeBytes: KiB, count: 20_000, warmup: 2_000, timeLimitMs: 15_000, stallMs: 5_000 };
const THROUGHPUT_32K = { sizeBytes: 32 * KiB, count: 3_000, warmup: 300, timeLimitMs: 15_000, stallMs: 5_000 };
const RATE_LIMITED = { sizeBytes: KiB, count: 20_000, warmup: 0, timeLimitMs: 5_000, stallMs: 5_000 };
const IDLE = { sessions: 5_000, workers: 4, concurrency: 25, sessionsPerNodeConnection: 1, settleMs: 5_000, samples: 5, timeoutMs: 15_000, openBudgetMs: 120_000 };
const RAMP = { steps: [1_000, 2_000, 4_000, 6_000, 8_000, 9_000], workers: 4, concurrency: 25, sessionsPerNodeConnection: 50, timeoutMs: 15_000, stepBudgetMs: 90_000 };
/**
 * Protocol v2 sessions: 9,000 sessions, each party its own socket (18,000
 * server sockets, under the server's 20,000 open files). Then (WebSocket)
 * every session sends 1 msg/s for 30 s after a warm-up.
 */
const V2_SESSIONS = { sessions: 9_000, workers: 4, concurrency: 25, sessionsPerNodeConnection: 1, settleMs: 5_000, samples: 3, timeoutMs: 15_000, openBudgetMs: 120_000 };
const V2_LOAD = { ratePerSession: 1, sizeBytes: KiB, tickMs: 10, warmupMs: 5_000, durationMs: 30_000, drainMs: 3_000 };
/** Time each later phase needs at least, or it is skipped. */
const IDLE_PHASE_MIN_MS = 150_000;
const V2_SESSIONS_WS_MIN_MS = 150_000;
const V2_SESSIONS_GRPC_MIN_MS = 120_000;
const RAMP_PHASE_MIN_MS = 60_000;
/** The hardening phase: about 2 minutes, plus the before build when it must be made. */
const HARDENING_PHASE_MIN_MS = 180_000;

const DEFAULT_PHASES = ['v1-latency', 'v2-latency', 'v1-throughput', 'v2-throughput', 'v1-rate-limited', 'v1-idle', 'v2-sessions-ws', 'v2-sessions-grpc', 'v1-ramp', 'hardening'] as const;
/** Every phase: the default ones, then the cluster ones, which run only when named (bench/cluster.ts). */
const PHASES = [...DEFAULT_PHASES, ...CLUSTER_PHASES, ...GATEWAY_PHASES] as const;
type Phase = (typeof PHASES)[number];

interface Args {
  phases: Set<Phase>;
  baseline: string | null;
}

/**
 * `--only=a,b` (or `--only a,b`): a phase runs if it is named, or a name is
 * its prefix up to a dash. `--baseline=DIR` (or `--baseline DIR`).
 */
function parseArgs(argv: string[]): Args {
  const tokens: string[] = [];
  let baseline: string | null = null;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i].startsWith('--only=')) tokens.push(...argv[i].slice('--only='.length).split(','));
    else if (argv[i] === '--only' && i + 1 < argv.length) tokens.push(...argv[++i].split(','));
    else if (argv[i].startsWith('--baseline=')) baseline = argv[i].slice('--baseline='.length);
    else if (argv[i] === '--baseline' && i + 1 < argv.length) baseline = argv[++i];
    else throw new Error(`unknown argument ${argv[i]} (--only=${PHASES.join(',')}, --baseline=DIR)`);
  }
  return { phases: selectedPhases(tokens), baseline };
}

function selectedPhases(tokens: string[]): Set<Phase> {
  const wanted = tokens.map((t) => t.trim()).filter(Boolean);
  if (wanted.length === 0) return new Set(DEFAULT_PHASES);
  const chosen = new Set(PHASES.filter((p) => wanted.some((t) => p === t || p.startsWith(`${t}-`))));
  const unknown = wanted.filter((t) => !PHASES.some((p) => p === t || p.startsWith(`${t}-`)));
  if (unknown.length > 0) throw new Error(`--only: no phase named ${unknown.join(', ')} (phases: ${PHASES.join(', ')})`);
  return chosen;
}

const args = parseArgs(process.argv.slice(2));
const phases = args.phases;
const runs = (phase: Phase): boolean => phases.has(phase);

/**
 * Source addresses for the load workers' WebSocket parties: the kernel's
 * choice (127.0.0.1) while one address has ephemeral ports for every socket
 * of a phase with room to spare, else 127.0.0.2, .3, ... one per worker.
 * (gRPC parties cannot choose theirs in grpc-js; 18,000 fit in one address.)
 */
function localAddresses(socketsToOneServerPort: number, workers: number): string[] {
  try {
    const [lo, hi] = readFileSync('/proc/sys/net/ipv4/ip_local_port_range', 'utf8').trim().split(/\s+/).map(Number);
    if (hi - lo + 1 > socketsToOneServerPort * 1.25) return [];
  } catch {
    // unknown range: spread to be safe
  }
  return Array.from({ length: workers }, (_, i) => `127.0.0.${2 + i}`);
}

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

const V2_SHAPES: { shape: V2Shape; v1App: AppTransport | null }[] = [
  { shape: { node: 'grpc', app: 'grpc' }, v1App: 'grpc' },
  { shape: { node: 'grpc', app: 'ws' }, v1App: 'ws' },
  { shape: { node: 'ws', app: 'ws' }, v1App: null },
];

async function latencyV2Phase(relays: { hashmail: RelayProcess; direct: RelayProcess }, results: Results): Promise<void> {
  for (const { shape, v1App } of V2_SHAPES) {
    const label = shapeLabel(shape);
    const o = { ...LATENCY, app: 'grpc' as const, v2: shape, sizeBytes: KiB };
    const runs = await alternate(REPS, {
      direct: () => attempt(`v2 latency ${label} direct`, () => measurePingPong(relays.direct, o)),
      hashmail: () => attempt(`v2 latency ${label} hashmail`, () => measurePingPong(relays.hashmail, o)),
    });
    const hashmail = combineLatency(runs.hashmail);
    const direct = combineLatency(runs.direct);
    log(`v2 latency ${label}: hashmail p50 ${hashmail.ok ? hashmail.value.p50.toFixed(3) : 'failed'} ms, direct ${direct.ok ? direct.value.p50.toFixed(3) : 'failed'} ms`);
    const v1Label = v1App ? `1 KiB, node gRPC, ${appLabel(v1App)}` : null;
    const v1 = v1Label ? (results.latency.find((r) => r.label === v1Label)?.hashmail ?? null) : null;
    results.v2.latency.push({ label, shape, hashmail, direct, v1Label, v1 });
  }
}

async function throughputV2Phase(relays: { hashmail: RelayProcess; direct: RelayProcess }, results: Results): Promise<void> {
  for (const { shape, v1App } of V2_SHAPES) {
    for (const size of [THROUGHPUT_1K, THROUGHPUT_32K]) {
      const label = `${size.sizeBytes / KiB} KiB × ${size.count}, ${shapeLabel(shape)}`;
      const o = { ...size, app: 'grpc' as const, v2: shape, direction: 'app->node' as const };
      const runs = await alternate(REPS, {
        direct: () => attempt(`v2 throughput ${label} direct`, () => measureOneWay(relays.direct, o)),
        hashmail: () => attempt(`v2 throughput ${label} hashmail`, () => measureOneWay(relays.hashmail, o)),
      });
      const hashmail = combineThroughput(runs.hashmail);
      const direct = combineThroughput(runs.direct);
      log(`v2 throughput ${label}: hashmail ${hashmail.ok ? hashmail.value.mbPerSec.toFixed(1) : 'failed'} MB/s, direct ${direct.ok ? direct.value.mbPerSec.toFixed(1) : 'failed'} MB/s`);
      const v1Label = v1App ? `${size.sizeBytes / KiB} KiB × ${size.count}, app → node, ${appLabel(v1App)}` : null;
      const v1 = v1Label ? (results.throughput.find((r) => r.label === v1Label)?.hashmail ?? null) : null;
      results.v2.throughput.push({ label, shape, hashmail, direct, v1Label, v1 });
    }
  }
}

/** 9,000 v2 sessions of one transport on a fresh relay: idle memory, then (if `load`) the steady load on the same sessions. */
async function v2Sessions(start: () => Promise<RelayProcess>, transport: 'ws' | 'grpc', withLoad: boolean): Promise<V2SessionsRun> {
  let load: Outcome<SteadyLoadResult> | null = null;
  const memory: Outcome<IdleMemoryResult> = await attempt(`v2 ${transport} sessions`, () =>
    withRelay(start, (relay) =>
      measureIdleMemory(
        relay,
        { ...V2_SESSIONS, v2: { node: transport, app: transport }, localAddresses: transport === 'ws' ? localAddresses(2 * V2_SESSIONS.sessions, V2_SESSIONS.workers) : [] },
        withLoad
          ? async (pool) => {
              log(`v2 ${transport}: ${V2_SESSIONS.sessions} sessions × ${V2_LOAD.ratePerSession} msg/s for ${(V2_LOAD.warmupMs + V2_LOAD.durationMs) / 1000} s`);
              load = await attempt(`v2 ${transport} load`, () => steadyLoad(pool, relay, V2_LOAD));
            }
          : undefined,
      ),
    ),
  );
  return { memory, load };
}

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
    v2: {
      latency: [],
      throughput: [],
      sessions: [],
      load: runs('v2-sessions-ws') ? { ...V2_LOAD, workers: V2_SESSIONS.workers } : null,
    },
    hardening: null,
    phases: [...phases],
    notes: [],
  };
  try {
    // 1 and 2 (v1), 5 and 6 (v2): one hashmail without the rate limit and one direct pipe, used in turn.
    if (runs('v1-latency') || runs('v2-latency') || runs('v1-throughput') || runs('v2-throughput')) {
      log('latency and throughput: starting hashmail (rateLimitIntervalMs 0) and the direct pipe');
      const direct = await startDirectPipe();
      try {
        await withRelay(
          () => startHashmail(CONFIG_UNLIMITED),
          async (hashmail) => {
            if (runs('v1-latency')) await latencyPhase({ hashmail, direct }, results);
            if (runs('v2-latency')) await latencyV2Phase({ hashmail, direct }, results);
            if (runs('v1-throughput')) await throughputPhase({ hashmail, direct }, results);
            if (runs('v2-throughput')) await throughputV2Phase({ hashmail, direct }, results);
          },
        );
      } finally {
        await direct.stop();
      }
    }

    if (runs('v1-rate-limited')) {
      log('rate-limited throughput: hashmail at the default 20 ms / burst 1000');
      const limited = await attempt('rate-limited run', () =>
        withRelay(
          () => startHashmail(CONFIG_DEPLOYED),
          (hashmail) => measureOneWay(hashmail, { ...RATE_LIMITED, app: 'grpc', direction: 'app->node' }),
        ),
      );
      results.rateLimited.push({ label: `1 KiB, app → node, app gRPC, ${RATE_LIMITED.timeLimitMs / 1000} s window, no warm-up`, result: limited });
    }

    // 3: fresh processes, so RSS before/after is theirs alone.
    if (!runs('v1-idle')) {
      // not selected
    } else if (deadline - Date.now() > IDLE_PHASE_MIN_MS) {
      log(`idle memory: ${IDLE.sessions} sessions on the direct pipe (floor)`);
      const idleDirect = await attempt('idle memory direct', () => withRelay(startDirectPipe, (relay) => measureIdleMemory(relay, IDLE)));
      log(`idle memory: ${IDLE.sessions} sessions on hashmail`);
      const idleHashmail = await attempt('idle memory hashmail', () => withRelay(() => startHashmail(CONFIG_DEPLOYED), (relay) => measureIdleMemory(relay, IDLE)));
      results.idle = { hashmail: idleHashmail, direct: idleDirect };
    } else results.notes.push('idle memory skipped: not enough of the time budget left');

    // 7 and 8: v2 sessions, fresh processes again; the floor first, as for v1.
    for (const transport of ['ws', 'grpc'] as const) {
      const phase: Phase = transport === 'ws' ? 'v2-sessions-ws' : 'v2-sessions-grpc';
      if (!runs(phase)) continue;
      if (deadline - Date.now() < (transport === 'ws' ? V2_SESSIONS_WS_MIN_MS : V2_SESSIONS_GRPC_MIN_MS)) {
        results.notes.push(`${phase} skipped: not enough of the time budget left`);
        continue;
      }
      const withLoad = transport === 'ws';
      log(`${phase}: ${V2_SESSIONS.sessions} sessions on the direct pipe (floor)`);
      const direct = await v2Sessions(startDirectPipe, transport, withLoad);
      log(`${phase}: ${V2_SESSIONS.sessions} sessions on hashmail`);
      const hashmail = await v2Sessions(() => startHashmail(CONFIG_DEPLOYED), transport, withLoad);
      results.v2.sessions.push({ transport, hashmail, direct });
    }

    // 4
    if (!runs('v1-ramp')) {
      // not selected
    } else if (deadline - Date.now() > RAMP_PHASE_MIN_MS) {
      log(`browser ramp: steps ${RAMP.steps.join(', ')}`);
      results.ramp = await attempt('browser ramp', () =>
        withRelay(
          () => startHashmail(CONFIG_DEPLOYED),
          (relay) => rampBrowserSessions(relay, { ...RAMP, deadline: deadline - 30_000 }),
        ),
      );
    } else results.notes.push('browser ramp skipped: not enough of the time budget left');

    // 10: issue 7's before/after, each on fresh servers of two builds.
    if (!runs('hardening')) {
      // not selected
    } else if (deadline - Date.now() > HARDENING_PHASE_MIN_MS) {
      const outcome = await attempt('hardening', () => runHardening({ baselinePath: args.baseline, log, attempt }));
      if (outcome.ok) results.hardening = outcome.value;
      else results.notes.push(`hardening: FAILED: ${outcome.error}`);
    } else results.notes.push('hardening skipped: not enough of the time budget left');
  } catch (err) {
    results.notes.push(`run aborted: ${(err as Error).message.split('\n')[0]}`);
    log(`run aborted: ${(err as Error).stack ?? String(err)}`);
  }
  // Issue 8's cluster phases: each a script of its own, outside the time budget (named only).
  const clusterMarkdown: string[] = [];
  for (const phase of [...CLUSTER_PHASES, ...GATEWAY_PHASES]) {
    if (!runs(phase)) continue;
    log(`${phase}`);
    const outcome = await attempt(phase, () => runClusterPhase(phase));
    if (outcome.ok) clusterMarkdown.push(outcome.value);
    else results.notes.push(`${phase}: FAILED: ${outcome.error}`);
  }
  results.durationS = (Date.now() - startedMs) / 1000;
  results.machine['load average at end'] = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  const markdown = renderMarkdown(results) + (clusterMarkdown.length > 0 ? `\n# Cluster (issues 8 and 9)\n\n${clusterMarkdown.join('\n')}` : '');
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
