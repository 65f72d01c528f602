/**
 * Issue 9's gateway benchmarks, each part against baselines measured in the
 * same run, all processes on 127.0.0.1 and stopped at the end:
 *   cost:   1 KiB ping-pong p50/p99 and one-way throughput (1 KiB, 32 KiB,
 *           app -> node), app over gRPC and over WebSocket, through
 *           `hashmail gateway` -> `hashmail relay` (one-member etcd), against
 *           `hashmail serve` and against the same parties dialling the relay
 *           directly (over v2: a relay has no legacy surface).
 *   memory: RSS per idle legacy session (node gRPC, app two WebSockets) of
 *           gateway + relay together, against serve.
 *   storm:  every session's relay killed (SIGKILL) and restarted at once on
 *           its data directory, with legacy clients that re-dial on a fixed
 *           2 s: time until every session relays both ways again; the same
 *           storm on serve (killed, restarted).
 *
 *   node --import tsx bench/gateway.ts --part cost|memory|storm [--sessions N[,N]]
 * Prints markdown (with the load average at each result) to stdout.
 */
import os from 'node:os';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { freePort, startEtcd, type EtcdCluster } from '../test/helpers/etcd.js';
import { killAll } from './children.js';
import { collectGarbage } from './inspector-gc.js';
import { measureIdleMemory, type IdleMemoryResult } from './idle-memory.js';
import { measurePingPong, type LatencyResult } from './latency.js';
import { StormSession, traceNextStormSessions } from './legacy-storm.js';
import type { Outcome } from './report.js';
import { combineLatency, combineThroughput } from './repeat.js';
import { CONFIG_DEPLOYED, CONFIG_UNLIMITED, cpuMs, CURRENT_BUILD, startHashmail, type RelayProcess } from './server-process.js';
import type { AppTransport, V2Shape } from './session.js';
import { fmt, percentile, runBounded, sleep, table } from './stats.js';
import { measureOneWay, type ThroughputResult } from './throughput.js';

const KiB = 1024;
const REPS = 3;
/** A full GC over the inspector (memory part). */
const GC_TIMEOUT_MS = 30_000;
const LATENCY = { warmup: 500, roundTrips: 2_000, timeLimitMs: 20_000, stallMs: 5_000 };
const THROUGHPUT_1K = { sizeBytes: KiB, count: 20_000, warmup: 2_000, timeLimitMs: 15_000, stallMs: 5_000 };
const THROUGHPUT_32K = { sizeBytes: 32 * KiB, count: 3_000, warmup: 300, timeLimitMs: 15_000, stallMs: 5_000 };
const IDLE = { workers: 4, concurrency: 25, sessionsPerNodeConnection: 1, settleMs: 5_000, samples: 5, timeoutMs: 15_000, openBudgetMs: 180_000 };
const STORM_OPEN_CONCURRENCY = 50;
const STORM_OPEN_TIMEOUT_MS = 20_000;
/** How long after the kill the storm waits for every session. */
const STORM_WAIT_MS = 90_000;
const STORM_POLL_MS = 100;

type Side = 'serve' | 'gateway' | 'relay';
const SIDES: Side[] = ['serve', 'gateway', 'relay'];

const load = (): string => os.loadavg().map((l) => l.toFixed(2)).join(' ');
const log = (line: string): void => void process.stderr.write(`[gateway bench] ${line}\n`);

async function attempt<T>(what: string, fn: () => Promise<T>): Promise<Outcome<T>> {
  try {
    return { ok: true, value: await fn() };
  } catch (err) {
    log(`${what} failed: ${(err as Error).message.split('\n')[0]}`);
    return { ok: false, error: (err as Error).message.split('\n')[0] };
  }
}

interface Cluster {
  etcd: EtcdCluster;
  relay: RelayProcess;
  gateway: RelayProcess;
  relayPort: number;
  relayDir: string;
  stop(): Promise<void>;
}

function startRelay(etcd: EtcdCluster, config: Record<string, unknown>, port: number, dataDir: string, inspect = false): Promise<RelayProcess> {
  return startHashmail(config, CURRENT_BUILD, {
    inspect,
    command: 'relay',
    listen: `127.0.0.1:${port}`,
    dataDir,
    args: ['--etcd', etcd.etcdFlag, '--advertise', `127.0.0.1:${port}`, '--id', 'relay-a'],
  });
}

/** One-member etcd, one relay (its data directory kept, for a restart), one gateway. */
async function startCluster(config: Record<string, unknown>, inspect = false): Promise<Cluster> {
  const etcd = await startEtcd(1);
  const relayDir = mkdtempSync(join(tmpdir(), 'hashmail-gwbench-relay-'));
  const relayPort = await freePort();
  const cluster: Cluster = {
    etcd,
    relay: null as unknown as RelayProcess,
    gateway: null as unknown as RelayProcess,
    relayPort,
    relayDir,
    async stop() {
      await cluster.gateway?.stop();
      await cluster.relay?.stop();
      await etcd.stop();
      rmSync(relayDir, { recursive: true, force: true });
    },
  };
  try {
    cluster.relay = await startRelay(etcd, config, relayPort, relayDir, inspect);
    cluster.gateway = await startHashmail(config, CURRENT_BUILD, { inspect, command: 'gateway', args: ['--etcd', etcd.etcdFlag] });
  } catch (err) {
    await cluster.stop();
    throw err;
  }
  return cluster;
}

/**
 * measureOneWay, with the CPU it cost per MB moved (/proc, warm-up
 * included): this process, which plays both parties, and `serverPids` (the
 * gateway and its relay together on the gateway side). On a machine with
 * few cores the throughput of a side is bounded by the sum.
 */
async function oneWayWithCpu(target: RelayProcess, serverPids: number[], o: Parameters<typeof measureOneWay>[1]): Promise<ThroughputResult> {
  const serversBefore = serverPids.map(cpuMs);
  const selfBefore = process.cpuUsage();
  const r = await measureOneWay(target, o);
  const self = process.cpuUsage(selfBefore);
  const servers = serverPids.reduce((sum, pid, i) => sum + cpuMs(pid) - serversBefore[i], 0);
  const mb = ((o.warmup + r.received) * o.sizeBytes) / 1e6;
  return mb > 0 ? { ...r, cpuMsPerMb: { parties: (self.user + self.system) / 1000 / mb, servers: servers / mb } } : r;
}

/**
 * A relay serves no legacy v1 surface (only the hop and v2): the "relay
 * direct" baseline is the same parties speaking v2 to it, node over gRPC and
 * the app over the same transport as the legacy case.
 */
const v2Shape = (app: AppTransport): V2Shape => ({ node: 'grpc', app: app === 'grpc' ? 'grpc' : 'ws' });

const appLabel = (app: AppTransport): string => (app === 'grpc' ? 'app gRPC' : 'app WebSocket');

/** REPS rounds over the three sides, the order rotating each round; the median per side. */
async function rounds<T>(run: (side: Side) => Promise<Outcome<T>>): Promise<Record<Side, Outcome<T>[]>> {
  const out: Record<Side, Outcome<T>[]> = { serve: [], gateway: [], relay: [] };
  for (let i = 0; i < REPS; i++) {
    for (let k = 0; k < SIDES.length; k++) {
      const side = SIDES[(i + k) % SIDES.length];
      out[side].push(await run(side));
    }
  }
  return out;
}

const cell = <T>(o: Outcome<T>, f: (v: T) => string): string => (o.ok ? f(o.value) : `failed: ${o.error.slice(0, 80)}`);
const ratioOf = <T>(a: Outcome<T>, b: Outcome<T>, f: (v: T) => number): string => (a.ok && b.ok ? `${(f(a.value) / f(b.value)).toFixed(2)}x` : 'n/a');

async function costPart(): Promise<string> {
  const serve = await startHashmail(CONFIG_UNLIMITED);
  const cluster = await startCluster(CONFIG_UNLIMITED).catch(async (err: unknown) => {
    await serve.stop();
    throw err;
  });
  const targets: Record<Side, RelayProcess> = { serve, gateway: cluster.gateway, relay: cluster.relay };
  const serverPids: Record<Side, number[]> = { serve: [serve.pid], gateway: [cluster.gateway.pid, cluster.relay.pid], relay: [cluster.relay.pid] };
  const latencyRows: string[][] = [];
  const throughputRows: string[][] = [];
  try {
    for (const app of ['grpc', 'ws'] as const) {
      const label = `1 KiB, node gRPC, ${appLabel(app)}`;
      const runs = await rounds((side) => attempt(`latency ${label} ${side}`, () => measurePingPong(targets[side], { ...LATENCY, app, sizeBytes: KiB, v2: side === 'relay' ? v2Shape(app) : undefined })));
      const r = { serve: combineLatency(runs.serve), gateway: combineLatency(runs.gateway), relay: combineLatency(runs.relay) };
      const pp = (v: LatencyResult): string => `${fmt(v.p50, 3)} / ${fmt(v.p99, 3)}`;
      const added = r.gateway.ok && r.serve.ok ? fmt(r.gateway.value.p50 - r.serve.value.p50, 3) : 'n/a';
      const addedRelay = r.gateway.ok && r.relay.ok ? fmt(r.gateway.value.p50 - r.relay.value.p50, 3) : 'n/a';
      latencyRows.push([label, cell(r.gateway, pp), cell(r.serve, pp), cell(r.relay, pp), added, addedRelay, load()]);
      log(`latency ${label}: ${latencyRows[latencyRows.length - 1].join(' | ')}`);
    }
    for (const app of ['grpc', 'ws'] as const) {
      for (const size of [THROUGHPUT_1K, THROUGHPUT_32K]) {
        const label = `${size.sizeBytes / KiB} KiB × ${size.count}, app → node, ${appLabel(app)}`;
        const o = { ...size, app, direction: 'app->node' as const };
        const runs = await rounds((side) => attempt(`throughput ${label} ${side}`, () => oneWayWithCpu(targets[side], serverPids[side], { ...o, v2: side === 'relay' ? v2Shape(app) : undefined })));
        const r = { serve: combineThroughput(runs.serve), gateway: combineThroughput(runs.gateway), relay: combineThroughput(runs.relay) };
        const mb = (v: ThroughputResult): string => fmt(v.mbPerSec, 1);
        const f = (v: ThroughputResult): number => v.mbPerSec;
        const cpu = (v: ThroughputResult): string => (v.cpuMsPerMb ? `${fmt(v.cpuMsPerMb.parties, 1)} + ${fmt(v.cpuMsPerMb.servers, 1)}` : 'n/a');
        throughputRows.push([label, cell(r.gateway, mb), cell(r.serve, mb), cell(r.relay, mb), ratioOf(r.gateway, r.serve, f), ratioOf(r.gateway, r.relay, f), `${cell(r.gateway, cpu)} / ${cell(r.serve, cpu)} / ${cell(r.relay, cpu)}`, load()]);
        log(`throughput ${label}: ${throughputRows[throughputRows.length - 1].join(' | ')}`);
      }
    }
  } finally {
    await serve.stop();
    await cluster.stop();
  }
  return [
    `Median of ${REPS} rounds (the order of serve, gateway and relay-direct rotating each round). Relays and serve without the per-box rate limit (mailbox.rateLimitIntervalMs 0). A relay has no legacy surface, so "relay direct" is the same node and app speaking v2 straight to the relay (node gRPC; app gRPC or WebSocket as in the row): the floor a legacy half could reach if the hop cost nothing.`,
    '',
    '**Ping-pong** (ms; one round trip crosses the relay twice):',
    '',
    table(['case', 'gateway -> relay p50 / p99', 'serve p50 / p99', 'relay direct (v2) p50 / p99', 'added p50 vs serve', 'added p50 vs relay direct', 'load average'], latencyRows),
    '',
    '**One-way throughput** (MB/s):',
    '',
    table(['case', 'gateway -> relay', 'serve', 'relay direct (v2)', 'gateway / serve', 'gateway / relay direct', 'CPU ms per MB, parties + servers: gateway / serve / relay direct', 'load average'], throughputRows),
    '',
  ].join('\n');
}

async function memoryPart(sessions: number): Promise<string> {
  const o = { ...IDLE, sessions };
  log(`memory: ${sessions} sessions on serve`);
  const serve = await attempt('memory serve', async () => {
    const s = await startHashmail(CONFIG_DEPLOYED, CURRENT_BUILD, { inspect: true });
    try {
      return { result: await measureIdleMemory(s, { ...o, collect: () => collectGarbage(s, GC_TIMEOUT_MS) }), load: load() };
    } finally {
      await s.stop();
    }
  });
  log(`memory: ${sessions} sessions through gateway -> relay`);
  const fleet = await attempt('memory gateway', async () => {
    const c = await startCluster(CONFIG_DEPLOYED, true);
    try {
      const collect = async (): Promise<void> => {
        await Promise.all([collectGarbage(c.gateway, GC_TIMEOUT_MS), collectGarbage(c.relay, GC_TIMEOUT_MS)]);
      };
      const result = await measureIdleMemory(c.gateway, { ...o, alsoPids: [c.relay.pid], collect });
      return { result, load: load(), gatewayPid: c.gateway.pid, relayPid: c.relay.pid };
    } finally {
      await c.stop();
    }
  });
  const row = (name: string, r: IdleMemoryResult, l: string, split: string, splitGc: string): string[] => [
    name,
    `${r.held.toLocaleString('en')}${r.openFailed > 0 ? ` (${r.openFailed} failed)` : ''}`,
    fmt(r.kibPerSession, 1),
    split,
    fmt(r.kibPerSessionAfterGc ?? Number.NaN, 1),
    splitGc,
    `${r.verifiedOk}/${r.held}`,
    l,
  ];
  const rows: string[][] = [];
  if (serve.ok) rows.push(row('serve', serve.value.result, serve.value.load, '', ''));
  else rows.push(['serve', `failed: ${serve.error}`, '', '', '', '', '', '']);
  if (fleet.ok) {
    const { relayPid, gatewayPid } = fleet.value;
    const split = (by: Record<number, number> | undefined): string => (by ? `relay ${fmt(by[relayPid], 1)} + gateway ${fmt(by[gatewayPid], 1)}` : '');
    rows.push(row('gateway + relay', fleet.value.result, fleet.value.load, split(fleet.value.result.kibPerSessionByPid), split(fleet.value.result.kibPerSessionAfterGcByPid)));
  } else rows.push(['gateway + relay', `failed: ${fleet.error}`, '', '', '', '', '', '']);
  const ratioOf = (f: (r: IdleMemoryResult) => number | undefined): string =>
    serve.ok && fleet.ok ? `${((f(fleet.value.result) ?? Number.NaN) / (f(serve.value.result) ?? Number.NaN)).toFixed(2)}x` : 'n/a';
  const ratio = ratioOf((r) => r.kibPerSession);
  const ratioGc = ratioOf((r) => r.kibPerSessionAfterGc);
  return [
    `${sessions.toLocaleString('en')} idle legacy sessions (node: RecvStream + SendStream on a gRPC connection of its own; app: two WebSockets), one message each way, then idle; VmRSS after minus before (median of ${IDLE.samples} readings), over the sessions held; then the same readings, each taken right after a full GC in every measured process (inspector HeapProfiler.collectGarbage), which leaves out garbage not yet collected. Gateway + relay: the sum of both processes.`,
    '',
    table(['target', 'sessions held', 'KiB / session', 'split', 'KiB / session after GC', 'split after GC', 'verified after idle', 'load average'], rows),
    '',
    `Fleet / serve: **${ratio}** as read, **${ratioGc}** after a full GC (aim: at most 1.5x).`,
    '',
  ].join('\n');
}

interface StormResult {
  sessions: number;
  opened: number;
  back: number;
  p50: number;
  p99: number;
  last: number;
  restartMs: number;
  dials: number;
  /** Errors the front door (serve, or the gateway) reported to clients, by code, over the whole case. */
  errors: string;
  load: string;
}

/** `hashmail_errors_total` by code from an admin listener, as `CODE n, ...` (largest first), and the placement cap's refusals. */
async function errorsByCode(adminAddress: string | null): Promise<string> {
  if (!adminAddress) return '';
  try {
    const body = await (await fetch(`http://${adminAddress}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
    const counts: [string, number][] = [];
    for (const line of body.split('\n')) {
      const m = /^hashmail_errors_total\{code="([A-Z_]+)"\} (\d+)/.exec(line);
      if (m && Number(m[2]) > 0) counts.push([m[1], Number(m[2])]);
    }
    const capped = /^hashmail_limit_hits_total\{limit="directory\.maxPlacementsPerSecond"\} (\d+)/m.exec(body);
    const codes = counts.sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c} ${n.toLocaleString('en')}`).join(', ');
    return capped ? `${codes}; placement cap refusals ${Number(capped[1]).toLocaleString('en')}` : codes;
  } catch {
    return 'n/a';
  }
}

/** Opens `n` retrying sessions on `target`; kills `victim`, restarts it with `restart`; times every session's return. */
async function storm(n: number, target: () => RelayProcess, kill: () => Promise<void>, restart: () => Promise<void>, behind?: () => RelayProcess): Promise<StormResult> {
  const sessions: StormSession[] = [];
  traceNextStormSessions();
  try {
    const errors = await runBounded(n, STORM_OPEN_CONCURRENCY, async () => {
      const s = new StormSession(target());
      sessions.push(s);
      await Promise.race([s.opened, sleep(STORM_OPEN_TIMEOUT_MS).then(() => Promise.reject(new Error('session did not open')))]);
    });
    if (errors.length > 0) throw new Error(`${errors.length} of ${n} sessions did not open: ${errors[0].message}`);
    await sleep(2_000);
    const dialsBefore = sessions.reduce((acc, s) => acc + s.dials, 0);
    const killedAt = Date.now();
    for (const s of sessions) s.arm(killedAt);
    await kill();
    await restart();
    const restartMs = Date.now() - killedAt;
    const until = killedAt + STORM_WAIT_MS;
    while (Date.now() < until && sessions.some((s) => !s.back)) await sleep(STORM_POLL_MS);
    const times = sessions.filter((s) => s.back).map((s) => s.backAt - killedAt).sort((a, b) => a - b);
    return {
      sessions: n,
      opened: sessions.length,
      back: times.length,
      p50: percentile(times, 50),
      p99: percentile(times, 99),
      last: times[times.length - 1] ?? Number.NaN,
      restartMs,
      dials: sessions.reduce((acc, s) => acc + s.dials, 0) - dialsBefore,
      errors: `${await errorsByCode(target().adminAddress)}${behind ? `; restarted relay: ${(await errorsByCode(behind().adminAddress)) || 'none'}` : ''}`,
      load: load(),
    };
  } finally {
    for (const s of sessions) s.close();
  }
}

async function stormPart(sizes: number[]): Promise<string> {
  const rows: string[][] = [];
  const render = (name: string, r: Outcome<StormResult>): void => {
    if (!r.ok) {
      rows.push([name, '', `failed: ${r.error.slice(0, 120)}`, '', '', '', '', '']);
      return;
    }
    const v = r.value;
    rows.push([
      name,
      v.sessions.toLocaleString('en'),
      `${v.back.toLocaleString('en')}${v.back < v.sessions ? ` (${v.sessions - v.back} not back in ${STORM_WAIT_MS / 1000} s)` : ''}`,
      `${fmt(v.p50, 0)} / ${fmt(v.p99, 0)} / ${fmt(v.last, 0)}`,
      fmt(v.restartMs, 0),
      v.dials.toLocaleString('en'),
      v.errors,
      v.load,
    ]);
    log(`${name}: ${rows[rows.length - 1].join(' | ')}`);
  };
  for (const n of sizes) {
    // serve: killed and restarted on the same port and data directory.
    const serveResult = await attempt(`storm serve ${n}`, async () => {
      const port = await freePort();
      const dir = mkdtempSync(join(tmpdir(), 'hashmail-gwbench-serve-'));
      const start = (): Promise<RelayProcess> => startHashmail(CONFIG_DEPLOYED, CURRENT_BUILD, { listen: `127.0.0.1:${port}`, dataDir: dir });
      let serve = await start();
      try {
        return await storm(
          n,
          () => serve,
          async () => killNow(serve),
          async () => {
            serve = await start();
          },
        );
      } finally {
        await serve.stop();
        rmSync(dir, { recursive: true, force: true });
      }
    });
    render('serve, killed and restarted', serveResult);
    // gateway: the relay owning every session killed and restarted on its data directory (it revokes its old leases).
    const gwResult = await attempt(`storm gateway ${n}`, async () => {
      const c = await startCluster(CONFIG_DEPLOYED);
      try {
        return await storm(
          n,
          () => c.gateway,
          async () => killNow(c.relay),
          async () => {
            c.relay = await startRelay(c.etcd, CONFIG_DEPLOYED, c.relayPort, c.relayDir);
          },
          () => c.relay,
        );
      } finally {
        await c.stop();
      }
    });
    render('gateway -> relay, relay killed and restarted', gwResult);
  }
  return [
    `Legacy sessions (node gRPC, app two WebSockets) whose halves re-dial on a fixed ${2} s with no jitter, as deployed clients do (bench/legacy-storm.ts). At t = 0 the process owning every session gets SIGKILL and is restarted at once (same port, same data directory; a relay then revokes its old leases). A session is back once a message stamped after t = 0 has arrived each way. Default limits and directory config (directory.maxPlacementsPerSecond 2000, placementQueueMs 1000).`,
    '',
    table(['case', 'sessions', 'back', 'back p50 / p99 / last (ms from kill)', 'restart done (ms)', 'dials after kill', 'errors answered by the front door (whole case)', 'load average'], rows),
    '',
  ].join('\n');
}

async function killNow(p: RelayProcess): Promise<void> {
  const exited = new Promise<void>((resolve) => (p.child.exitCode !== null || p.child.signalCode !== null ? resolve() : p.child.once('exit', () => resolve())));
  p.child.kill('SIGKILL');
  await exited;
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { part: { type: 'string' }, sessions: { type: 'string' } } });
  const part = values.part ?? 'cost';
  const started = Date.now();
  let body: string;
  if (part === 'cost') body = await costPart();
  else if (part === 'memory') body = await memoryPart(Number(values.sessions ?? 5_000));
  else if (part === 'storm') body = await stormPart((values.sessions ?? '500,2000').split(',').map(Number));
  else throw new Error(`--part: cost, memory or storm, not ${part}`);
  const command = `node --import tsx bench/gateway.ts --part ${part}${values.sessions ? ` --sessions ${values.sessions}` : ''}`;
  process.stdout.write(`\`${command}\` (${((Date.now() - started) / 1000).toFixed(0)} s; ${os.availableParallelism()} CPUs, load average at end ${load()})\n\n${body}`);
}

process.on('SIGINT', () => {
  killAll();
  process.exit(130);
});
await main()
  .catch((err: unknown) => {
    process.stderr.write(`gateway bench failed: ${(err as Error).stack ?? String(err)}\n`);
    process.exitCode = 1;
  })
  .finally(() => {
    killAll();
    setTimeout(() => process.exit(), 500).unref();
  });
