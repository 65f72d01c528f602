/**
 * The most concurrent browser-style sessions one process holds: sessions are
 * added in steps (app: a receive and a send WebSocket; node: gRPC, many
 * sessions sharing a connection as several litd sessions would not, to keep
 * the server's descriptors for WebSockets), and at each step one message is
 * relayed each way through every session held. A step with a session that
 * fails to open or to relay (a stall) ends the ramp.
 */
import { fdCount, rssKiB, type RelayProcess } from './server-process.js';
import { summarize, type Summary } from './stats.js';
import { WorkerPool } from './worker-pool.js';

export interface RampOptions {
  steps: number[];
  workers: number;
  concurrency: number;
  sessionsPerNodeConnection: number;
  timeoutMs: number;
  /** Per-step bound on opening and on verifying. */
  stepBudgetMs: number;
  /** No new step starts after this (Date.now() value). */
  deadline: number;
}

export interface RampStep {
  target: number;
  held: number;
  openFailed: number;
  openMs: number;
  verifiedOk: number;
  verifyFailed: number;
  verifyMs: number;
  verify: Summary;
  rssKiB: number;
  fds: number;
  errors: string[];
}

export interface RampResult {
  steps: RampStep[];
  /** Largest step at which every session opened and relayed. */
  maxClean: number;
  stoppedBy: string;
}

export async function rampBrowserSessions(relay: RelayProcess, o: RampOptions): Promise<RampResult> {
  const pool = await WorkerPool.start(o.workers);
  const steps: RampStep[] = [];
  let held = 0;
  let maxClean = 0;
  let stoppedBy = 'all steps done';
  try {
    for (const target of o.steps) {
      if (Date.now() > o.deadline) {
        stoppedBy = `time budget: step ${target} not started`;
        break;
      }
      const add = target - held;
      const opened = await pool.each(
        (i) => ({
          op: 'open',
          target: { grpcAddress: relay.grpcAddress, wsPort: relay.wsPort },
          count: pool.share(add, i),
          sessionsPerNodeConnection: o.sessionsPerNodeConnection,
          concurrency: o.concurrency,
          timeoutMs: o.timeoutMs,
        }),
        'opened',
        o.stepBudgetMs,
      );
      held = opened.reduce((acc, r) => acc + r.held, 0);
      const start = Date.now();
      const verified = await pool.each((_i) => ({ op: 'verify', concurrency: o.concurrency * 4, timeoutMs: o.timeoutMs }), 'verified', o.stepBudgetMs);
      const step: RampStep = {
        target,
        held,
        openFailed: opened.reduce((acc, r) => acc + r.failed, 0),
        openMs: Math.max(...opened.map((r) => r.elapsedMs)),
        verifiedOk: verified.reduce((acc, r) => acc + r.ok, 0),
        verifyFailed: verified.reduce((acc, r) => acc + r.failed, 0),
        verifyMs: Date.now() - start,
        verify: summarize(verified.flatMap((r) => r.latenciesMs)),
        rssKiB: rssKiB(relay.pid),
        fds: fdCount(relay.pid),
        errors: [...new Set(opened.flatMap((r) => r.errors).concat(verified.flatMap((r) => r.errors)))],
      };
      steps.push(step);
      if (step.openFailed > 0 || step.verifyFailed > 0 || step.verifiedOk < target) {
        stoppedBy = `step ${target}: ${step.openFailed} failed to open, ${step.verifyFailed} failed to relay`;
        break;
      }
      maxClean = target;
    }
  } catch (err) {
    stoppedBy = `error: ${(err as Error).message}`;
  } finally {
    await pool.close();
  }
  return { steps, maxClean, stoppedBy };
}
