/**
 * Server memory per idle legacy session, as deployed: per session the node
 * holds RecvStream(C2S) + SendStream(S2C) on a gRPC connection of its own and
 * the app two WebSockets (receive S2C, send C2S), after one message each way.
 * Server RSS (VmRSS) is read after a settle before the sessions open and
 * again once they are all open and idle; the difference over the sessions
 * held is the cost of one. The load comes from forked workers.
 *
 * With `v2`, the sessions are protocol-v2 sessions instead: each party one
 * full-duplex stream over its transport (a WebSocket, or a gRPC connection of
 * its own). The server's CPU while the sessions sit idle is read too, and
 * `afterIdle` may use the same sessions before they are closed (the steady
 * load of concurrency.ts).
 */
import { cpuMs, fdCount, hashmailMetric, heapUsedBytes, rssKiB, type RelayProcess } from './server-process.js';
import type { V2Shape } from './session.js';
import { performance } from 'node:perf_hooks';
import { median, sleep, summarize, type Summary } from './stats.js';
import { WorkerPool } from './worker-pool.js';

export interface IdleMemoryOptions {
  sessions: number;
  workers: number;
  /** Sessions being opened at once per worker. */
  concurrency: number;
  sessionsPerNodeConnection: number;
  settleMs: number;
  /** RSS readings, 1 s apart, after the settle; the median counts. */
  samples: number;
  /** Per-session wait (handshakes, hello messages). */
  timeoutMs: number;
  /** Bound on opening all sessions. */
  openBudgetMs: number;
  /** Protocol v2 sessions of this shape; default: legacy. */
  v2?: V2Shape;
  /**
   * More processes that carry the same sessions (a gateway in front of the
   * relay): their RSS is added to the relay's, before and after.
   */
  alsoPids?: number[];
  /**
   * Runs a full GC in every measured process (bench/inspector-gc.ts): then
   * each reading is also taken right after one, and kibPerSessionAfterGc
   * says what the sessions keep referenced, garbage aside.
   */
  collect?: () => Promise<void>;
  /** v2 WebSocket parties ping the relay this often (ms), as the client library does; default never. */
  clientPingMs?: number;
  /** Source addresses (127.x) for the workers' WebSocket parties, one per worker in turn; default: the kernel's choice (127.0.0.1). */
  localAddresses?: string[];
}

export interface IdleMemoryResult {
  /** With `collect`: RSS per session read after a full GC before and after (all pids, then by pid). */
  kibPerSessionAfterGc?: number;
  kibPerSessionAfterGcByPid?: Record<number, number>;
  requested: number;
  held: number;
  openFailed: number;
  openMs: number;
  errors: string[];
  rssBeforeKiB: number;
  rssAfterKiB: number;
  kibPerSession: number;
  /** With alsoPids: each process's share of kibPerSession (one reading before, one after), by pid. */
  kibPerSessionByPid: Record<number, number>;
  heapBeforeBytes: number | undefined;
  heapAfterBytes: number | undefined;
  heapKibPerSession: number;
  fdsBefore: number;
  fdsAfter: number;
  /** hashmail's own view (sessions, WebSocket connections, connections), when it has an admin port. */
  serverView: Record<string, number | undefined>;
  verifiedOk: number;
  verifyFailed: number;
  verify: Summary;
  /** Server CPU (% of one core) over the RSS sampling window with every session open and idle. */
  idleCpuPercent: number;
  /** The load processes' CPU together (% of one core) over the same window: the client side of the idle sessions. */
  workersIdleCpuPercent: number;
}

const SAMPLE_INTERVAL_MS = 1_000;

export async function sampleRss(pid: number, samples: number): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(SAMPLE_INTERVAL_MS);
    values.push(rssKiB(pid));
  }
  return median(values);
}

/** The median over `samples` readings of the RSS of `pids` together. */
async function sampleRssSum(pids: number[], samples: number): Promise<number> {
  const values: number[] = [];
  for (let i = 0; i < samples; i++) {
    if (i > 0) await sleep(SAMPLE_INTERVAL_MS);
    values.push(pids.reduce((acc, pid) => acc + rssKiB(pid), 0));
  }
  return median(values);
}

async function serverView(relay: RelayProcess): Promise<Record<string, number | undefined>> {
  if (!relay.adminAddress) return {};
  const view: Record<string, number | undefined> = {};
  for (const name of ['hashmail_sessions', 'hashmail_mailbox_count', 'hashmail_websocket_connections', 'hashmail_open_connections']) {
    view[name] = await hashmailMetric(relay.adminAddress, name).catch(() => undefined);
  }
  return view;
}

export async function measureIdleMemory(relay: RelayProcess, o: IdleMemoryOptions, afterIdle?: (pool: WorkerPool) => Promise<void>): Promise<IdleMemoryResult> {
  await sleep(o.settleMs);
  const pids = [relay.pid, ...(o.alsoPids ?? [])];
  const rssBeforeKiB = await sampleRssSum(pids, o.samples);
  const beforeByPid = pids.map((pid) => rssKiB(pid));
  await o.collect?.();
  const collectedBeforeByPid = pids.map((pid) => rssKiB(pid));
  const heapBeforeBytes = await heapUsedBytes(relay);
  const fdsBefore = fdCount(relay.pid);
  const pool = await WorkerPool.start(o.workers);
  try {
    const opened = await pool.each(
      (i) => ({
        op: 'open',
        target: { grpcAddress: relay.grpcAddress, wsPort: relay.wsPort },
        count: pool.share(o.sessions, i),
        sessionsPerNodeConnection: o.sessionsPerNodeConnection,
        concurrency: o.concurrency,
        timeoutMs: o.timeoutMs,
        v2: o.v2,
        clientPingMs: o.clientPingMs,
        localAddress: o.localAddresses && o.localAddresses.length > 0 ? o.localAddresses[i % o.localAddresses.length] : undefined,
      }),
      'opened',
      o.openBudgetMs,
    );
    const held = opened.reduce((acc, r) => acc + r.held, 0);
    await sleep(o.settleMs);
    const cpuStart = cpuMs(relay.pid);
    const workersCpuStart = pool.pids.reduce((acc, pid) => acc + cpuMs(pid), 0);
    const wallStart = performance.now();
    const rssAfterKiB = await sampleRssSum(pids, o.samples);
    const afterByPid = pids.map((pid) => rssKiB(pid));
    const wallMs = Math.max(1, performance.now() - wallStart);
    const idleCpuPercent = (100 * (cpuMs(relay.pid) - cpuStart)) / wallMs;
    const workersIdleCpuPercent = (100 * (pool.pids.reduce((acc, pid) => acc + cpuMs(pid), 0) - workersCpuStart)) / wallMs;
    // After the idle CPU window: a forced GC is not idle work.
    await o.collect?.();
    const collectedAfterByPid = pids.map((pid) => rssKiB(pid));
    const heapAfterBytes = await heapUsedBytes(relay);
    const fdsAfter = fdCount(relay.pid);
    const view = await serverView(relay);
    // The sessions were idle, not dead: one message each way through every one.
    const verified = await pool.each((_i) => ({ op: 'verify', concurrency: 200, timeoutMs: o.timeoutMs }), 'verified', o.openBudgetMs);
    if (afterIdle) await afterIdle(pool);
    const perSession = (after: number[], before: number[], i: number): number => (held > 0 ? (after[i] - before[i]) / held : Number.NaN);
    const gc = o.collect
      ? {
          kibPerSessionAfterGc: pids.reduce((acc, _pid, i) => acc + perSession(collectedAfterByPid, collectedBeforeByPid, i), 0),
          kibPerSessionAfterGcByPid: Object.fromEntries(pids.map((pid, i) => [pid, perSession(collectedAfterByPid, collectedBeforeByPid, i)])),
        }
      : {};
    return {
      ...gc,
      requested: o.sessions,
      held,
      openFailed: opened.reduce((acc, r) => acc + r.failed, 0),
      openMs: Math.max(...opened.map((r) => r.elapsedMs)),
      errors: [...new Set(opened.flatMap((r) => r.errors).concat(verified.flatMap((r) => r.errors)))],
      rssBeforeKiB,
      rssAfterKiB,
      kibPerSession: held > 0 ? (rssAfterKiB - rssBeforeKiB) / held : Number.NaN,
      kibPerSessionByPid: Object.fromEntries(pids.map((pid, i) => [pid, held > 0 ? (afterByPid[i] - beforeByPid[i]) / held : Number.NaN])),
      heapBeforeBytes,
      heapAfterBytes,
      heapKibPerSession: held > 0 && heapAfterBytes !== undefined && heapBeforeBytes !== undefined ? (heapAfterBytes - heapBeforeBytes) / 1024 / held : Number.NaN,
      fdsBefore,
      fdsAfter,
      serverView: view,
      verifiedOk: verified.reduce((acc, r) => acc + r.ok, 0),
      verifyFailed: verified.reduce((acc, r) => acc + r.failed, 0),
      verify: summarize(verified.flatMap((r) => r.latenciesMs)),
      idleCpuPercent,
      workersIdleCpuPercent,
    };
  } finally {
    await pool.close();
  }
}
