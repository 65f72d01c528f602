/**
 * Many sessions, each sending a little: every session held by the workers
 * sends `ratePerSession` messages a second (spread evenly over the second,
 * alternating direction), for a warm-up and then a measured window. The
 * server's CPU comes from /proc/<pid>/stat (utime + stime) over the measured
 * window, as % of one core; the end-to-end latency from the send time each
 * payload carries, computed by the receiving party (same worker process).
 */
import { performance } from 'node:perf_hooks';
import type { LoadReply } from './load-worker.js';
import { cpuMs, machineCpu, relayPauses, type RelayProcess } from './server-process.js';
import { percentile, sleep, summarize, type Summary } from './stats.js';
import type { WorkerPool } from './worker-pool.js';

export interface SteadyLoadOptions {
  ratePerSession: number;
  sizeBytes: number;
  /** Each worker sends to its due sessions this often. */
  tickMs: number;
  warmupMs: number;
  durationMs: number;
  /** After the last send, how long workers wait for stragglers. */
  drainMs: number;
}

export interface SteadyLoadResult {
  sessions: number;
  targetMsgsPerSec: number;
  /** Messages sent / received inside the measured window. */
  measuredSent: number;
  measuredReceived: number;
  /** Measured messages that never arrived (within the drain). */
  lost: number;
  achievedMsgsPerSec: number;
  /** Server process, % of one core, over the measured window. */
  serverCpuPercent: number;
  /** All load workers together, % of one core. */
  clientCpuPercent: number;
  /** Whole machine, % of all its cores. */
  machineBusyPercent: number;
  windowMs: number;
  latency: Summary;
  latencyP90: number;
  latencyP999: number;
  /** Server GC time in the window (ms) and its event-loop delay p99 / max (ms, 10 ms resolution); NaN if not available. */
  serverGcMs: number;
  serverLoopP99Ms: number;
  serverLoopMaxMs: number;
  /** How late the workers' ticks ran (ms): above a few ms the load generator itself is short of CPU. */
  tickLateP99: number;
  tickLateMax: number;
  failedParties: number;
  errors: string[];
}

/** Runs the load over the sessions the pool already holds. */
export async function steadyLoad(pool: WorkerPool, relay: RelayProcess, o: SteadyLoadOptions): Promise<SteadyLoadResult> {
  const replies = pool.each((_i) => ({ op: 'load', ...o }), 'loaded', o.warmupMs + o.durationMs + o.drainMs + 60_000);
  // Settled at once, so a worker failing while we sleep is not an unhandled rejection.
  const settled = replies.then(
    (value) => ({ ok: true as const, value }),
    (error: unknown) => ({ ok: false as const, error: error instanceof Error ? error : new Error(String(error)) }),
  );
  await sleep(o.warmupMs);
  const p0 = await relayPauses(relay);
  const c0 = cpuMs(relay.pid);
  const m0 = machineCpu();
  const w0 = performance.now();
  await sleep(o.durationMs);
  const c1 = cpuMs(relay.pid);
  const m1 = machineCpu();
  const windowMs = performance.now() - w0;
  const p1 = await relayPauses(relay);
  const outcome = await settled;
  if (!outcome.ok) throw outcome.error;
  const r: LoadReply[] = outcome.value;
  const sum = (f: (x: LoadReply) => number): number => r.reduce((acc, x) => acc + f(x), 0);
  const sessions = sum((x) => x.sessions);
  const measuredSent = sum((x) => x.measuredSent);
  const measuredReceived = sum((x) => x.measuredReceived);
  const late = r.map((x) => x.tickLate);
  const all = r.flatMap((x) => x.latenciesMs).sort((a, b) => a - b);
  return {
    sessions,
    targetMsgsPerSec: sessions * o.ratePerSession,
    measuredSent,
    measuredReceived,
    lost: measuredSent - measuredReceived,
    achievedMsgsPerSec: measuredReceived / (o.durationMs / 1000),
    serverCpuPercent: (100 * (c1 - c0)) / windowMs,
    clientCpuPercent: (100 * sum((x) => x.cpuMs)) / o.durationMs,
    machineBusyPercent: m1.total > m0.total ? (100 * (m1.busy - m0.busy)) / (m1.total - m0.total) : Number.NaN,
    windowMs,
    latency: summarize(all),
    latencyP90: percentile(all, 90),
    latencyP999: percentile(all, 99.9),
    serverGcMs: p0 && p1 ? p1.gcMs - p0.gcMs : Number.NaN,
    serverLoopP99Ms: p1?.loopP99Ms ?? Number.NaN,
    serverLoopMaxMs: p1?.loopMaxMs ?? Number.NaN,
    tickLateP99: Math.max(...late.map((l) => l.p99)),
    tickLateMax: Math.max(...late.map((l) => l.max)),
    failedParties: sum((x) => x.failedParties),
    errors: [...new Set(r.flatMap((x) => x.errors))],
  };
}
