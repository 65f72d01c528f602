/**
 * CPU of idle v2 sessions: what a relay (and the clients) spend while
 * nothing is sent, which is what ran out first in the 100,000-session run
 * (BENCHMARKS.md). Each v2 WebSocket is kept alive by pings; this measures
 * a `hashmail serve` holding `--sessions` idle v2 WebSocket sessions (both
 * parties WebSockets), built from `--baseline REF` and from this checkout,
 * in the same run, over an idle window longer than the ping interval.
 *
 * Two client kinds: parties that ping every `--client-ping-ms` (as the client
 * library does, default 10 s), and parties that never ping (browsers cannot).
 *
 *   node --import tsx bench/idle-cpu.ts [--sessions 10000] [--workers 2]
 *     [--idle-seconds 45] [--baseline 2430765] [--client-ping-ms 10000]
 * Prints markdown; writes bench/results/idle-cpu.{md,json}.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { currentLabel, prepareBaseline } from './baseline-build.js';
import { runBench } from './children.js';
import { measureIdleMemory, type IdleMemoryResult } from './idle-memory.js';
import { BENCH_LIMITS, CURRENT_BUILD, ROOT, startHashmail, type HashmailBuild } from './server-process.js';
import { fmt, table } from './stats.js';

const OPEN_BUDGET_MS = 15 * 60_000;
const SESSION_TIMEOUT_MS = 30_000;
const SETTLE_MS = 3_000;

interface Case {
  build: 'before' | 'after';
  clients: 'pinging' | 'silent';
  result: IdleMemoryResult;
}

async function measure(build: HashmailBuild, sessions: number, workers: number, idleSeconds: number, clientPingMs: number): Promise<IdleMemoryResult> {
  // As deployed (v2.pingIntervalMs 15 s, v2.pingTimeoutMs 10 s), with the per-address limits lifted (one loopback client).
  const relay = await startHashmail({ limits: BENCH_LIMITS }, build);
  try {
    return await measureIdleMemory(relay, {
      sessions,
      workers,
      concurrency: 50,
      sessionsPerNodeConnection: 1,
      settleMs: SETTLE_MS,
      samples: idleSeconds,
      timeoutMs: SESSION_TIMEOUT_MS,
      openBudgetMs: OPEN_BUDGET_MS,
      v2: { node: 'ws', app: 'ws' },
      clientPingMs,
    });
  } finally {
    await relay.stop();
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      sessions: { type: 'string', default: '10000' },
      workers: { type: 'string', default: '2' },
      'idle-seconds': { type: 'string', default: '45' },
      baseline: { type: 'string', default: '2430765' },
      'client-ping-ms': { type: 'string', default: '10000' },
    },
  });
  const sessions = Number(values.sessions);
  const workers = Number(values.workers);
  const idleSeconds = Number(values['idle-seconds']);
  const clientPingMs = Number(values['client-ping-ms']);
  const log = (line: string): void => console.error(line);
  const baseline = prepareBaseline(values.baseline!, null, log);
  const cases: Case[] = [];
  const started = Date.now();
  try {
    for (const clients of ['pinging', 'silent'] as const) {
      for (const [name, build] of [['before', baseline.build], ['after', CURRENT_BUILD]] as const) {
        log(`idle-cpu: ${clients} clients, ${name} build`);
        cases.push({ build: name, clients, result: await measure(build, sessions, workers, idleSeconds, clients === 'pinging' ? clientPingMs : 0) });
      }
    }
  } finally {
    baseline.dispose();
  }
  const rows = cases.map((c) => {
    const r = c.result;
    const before = cases.find((o) => o.clients === c.clients && o.build === 'before')!.result;
    return [
      c.clients === 'pinging' ? `every ${clientPingMs / 1000} s` : 'never',
      c.build === 'before' ? `before (${baseline.label})` : `after (${currentLabel()})`,
      `${r.held} / ${r.requested}`,
      fmt(r.idleCpuPercent, 1),
      c.build === 'after' ? `${fmt(r.idleCpuPercent / Math.max(0.01, before.idleCpuPercent), 2)}x` : '1.00x',
      fmt(r.workersIdleCpuPercent, 1),
      `${r.verifiedOk} ok, ${r.verifyFailed} failed`,
    ];
  });
  const md = [
    `\`node --import tsx bench/idle-cpu.ts --sessions ${sessions} --workers ${workers} --idle-seconds ${idleSeconds} --baseline ${values.baseline} --client-ping-ms ${clientPingMs}\``,
    '',
    `${sessions} idle v2 sessions (both parties WebSockets) on one \`hashmail serve\` (v2.pingIntervalMs 15 s as deployed); CPU over ${idleSeconds} s with nothing sent; ${((Date.now() - started) / 1000).toFixed(0)} s in all.`,
    '',
    table(['clients ping', 'build', 'held', 'relay idle CPU % of a core', 'vs before', 'load processes CPU %', 'one message each way after'], rows),
  ].join('\n');
  console.log(md);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'idle-cpu.md'), `${md}\n`);
  writeFileSync(join(dir, 'idle-cpu.json'), `${JSON.stringify(cases, null, 2)}\n`);
}

await runBench(main);
