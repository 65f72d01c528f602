/**
 * Issue 8's re-join benchmark: time from a relay's death to both parties of
 * every session it held being back in session on a live relay, for 1 and
 * for 2,000 sessions, through the client library (node over gRPC, app over
 * WebSocket, protocol v2, reconnecting by itself).
 *
 * Each case gets a fresh one-member etcd and three relays: relay A starts
 * alone so that every session is placed on it; B and C join; A is killed
 * with SIGKILL. Two paths:
 *   - ttl:     A stays dead: its sessions move once its leases go: revoked by a
 *              live relay that finds A's port refusing connections
 *              (directory.revokeRefusingOwners), or with --revoke-refusing off
 *              once they expire (directory.leaseTtlMs), at the parties' next lookup.
 *   - restart: A is restarted at once with the same data directory: it
 *              revokes its old leases at start, so the sessions move at once.
 *
 *   node --import tsx bench/rejoin.ts [--sessions 1,2000] [--ttl-ms 10000] [--workers 4] [--lookup-wait-ms N] [--lookup-spread first|rotate] [--paths ttl,restart] [--revoke-refusing on|off]
 * --lookup-spread first (default): every party asks the instances in one order, so the first live one
 * answers every lookup; rotate: each pair starts from the next instance in turn, as parties behind a
 * balanced address would.
 * --lookup-wait-ms sets the relays' directory.lookupWaitMaxMs (0: lookups are never held, the parties
 * poll; default: the relay's default). "lookups after the kill" counts the lookups the live relays
 * answered from the kill until every session was back (hashmail_directory_lookups_total); "CPU s after the kill"
 * the CPU time (/proc) the load processes, the live relays and etcd used over the same span.
 * REJOIN_CPU_PROF=DIR: every load process writes a V8 CPU profile of the re-join alone (arm to collect) into DIR
 * (HASHMAIL_BENCH_CPU_PROF writes one of each relay's whole life).
 * REJOIN_TRACE=1 prints the kill, relay A's restart, a few parties' reconnect events with timestamps, and at the end
 * the events of the slowest sessions and of some that never came back. The kill's and the end's lines carry the
 * monotonic clock (monotonic_us), the time base of V8 CPU profiles: a relay's profile can be cut to the re-join.
 * Prints markdown; writes bench/results/rejoin.{md,json}.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startEtcd, freePort, type EtcdCluster } from '../test/helpers/etcd.js';
import { runBench, stopChild, track, trackPid, untrackPid } from './children.js';
import type { RejoinCommand, RejoinReply, SessionRejoin } from './rejoin-worker.js';
import { BENCH_LIMITS, cpuMs, CURRENT_BUILD, hashmailMetricSum, ROOT, startHashmail, type RelayProcess } from './server-process.js';
import { fmt, percentile, table } from './stats.js';

const WORKER_ENTRY = join(ROOT, 'bench/rejoin-worker.ts');
const OPEN_CONCURRENCY = 20;
const REPLY_TIMEOUT_MS = 10 * 60_000;
const CLOSE_GRACE_MS = 10_000;
/** How long after the kill the bench waits for every session, beyond the TTL. */
const REJOIN_WAIT_EXTRA_MS = 60_000;

type Path = 'ttl' | 'restart';

interface CaseResult {
  path: Path;
  sessions: number;
  rejoined: number;
  missing: number;
  /** ms from the kill until both parties re-attached: p50, p99, max (the last session). */
  attached: { p50: number; p99: number; max: number };
  /** ms from the kill until a probe went each way again. */
  relaying: { p50: number; p99: number; max: number };
  /** Lookups the live relays answered between the kill and the end of the case. */
  lookupsAfterKill: number;
  /** CPU seconds used from the kill until every session was back: the load processes (the parties), the live relays (a restarted one from its start), etcd. */
  cpuAfterKill: { load: number; relays: number; etcd: number };
  errors: string[];
}

class Worker {
  private constructor(private readonly child: ChildProcess) {}

  get pid(): number {
    return this.child.pid ?? 0;
  }

  static async start(): Promise<Worker> {
    const child = track(fork(WORKER_ENTRY, [], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
    const w = new Worker(child);
    await w.wait('ready');
    return w;
  }

  wait<K extends RejoinReply['op']>(op: K): Promise<Extract<RejoinReply, { op: K }>> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => done(new Error(`rejoin worker: no "${op}" within ${REPLY_TIMEOUT_MS} ms`)), REPLY_TIMEOUT_MS);
      const onMessage = (m: RejoinReply): void => {
        if (m.op === op) done(null, m as Extract<RejoinReply, { op: K }>);
      };
      const onExit = (code: number | null): void => done(new Error(`rejoin worker exited (${code})`));
      const done = (err: Error | null, m?: Extract<RejoinReply, { op: K }>): void => {
        clearTimeout(timer);
        this.child.off('message', onMessage);
        this.child.off('exit', onExit);
        if (err) reject(err);
        else resolve(m!);
      };
      this.child.on('message', onMessage);
      this.child.once('exit', onExit);
    });
  }

  ask<K extends RejoinReply['op']>(cmd: RejoinCommand, op: K): Promise<Extract<RejoinReply, { op: K }>> {
    const reply = this.wait(op);
    this.child.send(cmd);
    return reply;
  }

  async close(): Promise<void> {
    if (this.child.connected) {
      // It exits by itself once its sessions are closed.
      const exited = new Promise<void>((resolve) => this.child.once('exit', () => resolve()));
      this.child.send({ op: 'close' } satisfies RejoinCommand);
      await Promise.race([exited, new Promise((resolve) => setTimeout(resolve, CLOSE_GRACE_MS))]);
    }
    await stopChild(this.child, 'SIGTERM', CLOSE_GRACE_MS);
  }
}

/** directory.lookupWaitMaxMs of every relay (--lookup-wait-ms); undefined: the default. */
let lookupWaitMaxMs: number | undefined;
/** --lookup-spread rotate: each pair starts its lookups from the next instance in turn. */
let rotateLookups = false;
/** --revoke-refusing off: directory.revokeRefusingOwners false on every relay (the dead relay's sessions wait for its lease). */
let revokeRefusingOwners = true;

async function startRelay(etcd: EtcdCluster, ttlMs: number, port: number, dataDir: string | undefined, id: string): Promise<RelayProcess> {
  const directory = { leaseTtlMs: ttlMs, revokeRefusingOwners, ...(lookupWaitMaxMs === undefined ? {} : { lookupWaitMaxMs }) };
  return startHashmail({ limits: BENCH_LIMITS, directory }, CURRENT_BUILD, {
    command: 'relay',
    listen: `127.0.0.1:${port}`,
    dataDir,
    args: ['--etcd', etcd.etcdFlag, '--advertise', `127.0.0.1:${port}`, '--id', id],
  });
}

/** Lookups answered so far by `relays` together (hashmail_directory_lookups_total, every result). */
async function lookupsAnswered(relays: RelayProcess[]): Promise<number> {
  const counts = await Promise.all(relays.map((r) => (r.adminAddress ? hashmailMetricSum(r.adminAddress, 'hashmail_directory_lookups_total') : undefined)));
  return counts.reduce<number>((sum, n) => sum + (n ?? 0), 0);
}

/** CPU ms used so far by these processes together. */
const sumCpu = (pids: number[]): number => pids.reduce((sum, pid) => sum + (pid > 0 ? cpuMs(pid) : 0), 0);

const spread = (sorted: number[]): { p50: number; p99: number; max: number } => ({
  p50: percentile(sorted, 50),
  p99: percentile(sorted, 99),
  max: sorted[sorted.length - 1] ?? NaN,
});

async function runCase(path: Path, sessions: number, ttlMs: number, workerCount: number): Promise<CaseResult> {
  const etcd = await startEtcd(1);
  trackPid(etcd.members[0].pid ?? 0);
  const relays: RelayProcess[] = [];
  const workers: Worker[] = [];
  const aDir = mkdtempSync(join(tmpdir(), 'hashmail-rejoin-a-'));
  try {
    // The parties know all three instances (as a DNS name or a list would give them); B and C start later.
    const ports = [await freePort(), await freePort(), await freePort()];
    const servers = ports.map((p) => `127.0.0.1:${p}`);
    const aPort = ports[0];
    const a = await startRelay(etcd, ttlMs, aPort, aDir, 'relay-a');
    relays.push(a);
    const n = Math.min(workerCount, sessions);
    for (let i = 0; i < n; i++) workers.push(await Worker.start());
    const share = (i: number): number => Math.floor(sessions / n) + (i < sessions % n ? 1 : 0);
    const opened = await Promise.all(workers.map((w, i) => w.ask({ op: 'open', servers, count: share(i), concurrency: OPEN_CONCURRENCY, rotate: rotateLookups }, 'opened')));
    const failed = opened.reduce((x, o) => x + o.failed, 0);
    if (failed > 0) throw new Error(`${failed} sessions did not open: ${opened.flatMap((o) => o.errors).join('; ')}`);
    relays.push(await startRelay(etcd, ttlMs, ports[1], undefined, 'relay-b'));
    relays.push(await startRelay(etcd, ttlMs, ports[2], undefined, 'relay-c'));
    await Promise.all(workers.map((w) => w.ask({ op: 'arm' }, 'armed')));
    const survivors = relays.slice(1);
    const lookupsBefore = await lookupsAnswered(survivors);
    // CPU from the kill on, per group (a restarted relay A counts from its start: all of it is after the kill).
    const cpuGroups = (): { load: number; relays: number; etcd: number } => ({
      load: sumCpu(workers.map((w) => w.pid)),
      relays: sumCpu(survivors.map((r) => r.child.pid ?? 0)),
      etcd: sumCpu([etcd.members[0].pid ?? 0]),
    });
    const cpuBefore = cpuGroups();
    const killedAt = Date.now();
    // The monotonic clock too (us, as V8 CPU profiles time their samples): HASHMAIL_BENCH_CPU_PROF profiles of the relays can be cut to the re-join.
    if (process.env.REJOIN_TRACE) console.error(`TRACE ${killedAt} kill monotonic_us=${process.hrtime.bigint() / 1000n}`);
    a.child.kill('SIGKILL');
    await new Promise<void>((resolve) => (a.child.exitCode !== null || a.child.signalCode !== null ? resolve() : a.child.once('exit', () => resolve())));
    if (path === 'restart') survivors.push(await startRelay(etcd, ttlMs, aPort, aDir, 'relay-a'));
    if (path === 'restart') relays.push(survivors[survivors.length - 1]);
    if (process.env.REJOIN_TRACE && path === 'restart') {
      console.error(`TRACE ${Date.now()} relay-a serving again`);
      // Its start, step by step: each log line's own time (JSON "time"), from the kill.
      for (const line of survivors[survivors.length - 1].log) {
        const entry = /"time":(\d+).*"msg":"([^"]*)"/.exec(line);
        if (entry) console.error(`TRACE relay-a +${Number(entry[1]) - killedAt} ms ${entry[2]}`);
      }
    }
    const collected = await Promise.all(workers.map((w) => w.ask({ op: 'collect', timeoutMs: ttlMs + REJOIN_WAIT_EXTRA_MS }, 'collected')));
    const cpuAfter = cpuGroups();
    if (process.env.REJOIN_TRACE) console.error(`TRACE ${Date.now()} all collected monotonic_us=${process.hrtime.bigint() / 1000n}`);
    const lookupsAfterKill = (await lookupsAnswered(survivors)) - lookupsBefore;
    const rejoins: SessionRejoin[] = collected.flatMap((c) => c.rejoins);
    if (process.env.REJOIN_TRACE) {
      // The slowest sessions and a few that never came back, event by event, in ms from the kill.
      const slowest = [...rejoins].sort((x, y) => y.attachedAt - x.attachedAt).slice(0, 3);
      const stories = [...slowest.map((r) => ({ title: `slow session, both attached at +${r.attachedAt - killedAt} ms`, events: r.events ?? [] })), ...collected.flatMap((c) => c.missingEvents).map((events) => ({ title: 'missing session', events }))];
      const failed = new Map<string, number>();
      for (const [why, n] of collected.flatMap((c) => Object.entries(c.failedAttempts))) failed.set(why, (failed.get(why) ?? 0) + n);
      for (const [why, n] of [...failed].sort((x, y) => y[1] - x[1])) console.error(`TRACE failed attempts: ${n} ${why}`);
      for (const story of stories) {
        console.error(`TRACE ${story.title}:`);
        for (const line of story.events) console.error(line.replace(/^TRACE (\d+)/, (_, at: string) => `TRACE +${Number(at) - killedAt}`));
      }
    }
    const attached = rejoins.map((r) => r.attachedAt - killedAt).sort((x, y) => x - y);
    const relaying = rejoins.map((r) => r.relayingAt - killedAt).sort((x, y) => x - y);
    return {
      path,
      sessions,
      rejoined: rejoins.length,
      missing: collected.reduce((x, c) => x + c.missing, 0),
      attached: spread(attached),
      relaying: spread(relaying),
      lookupsAfterKill,
      cpuAfterKill: { load: (cpuAfter.load - cpuBefore.load) / 1000, relays: (cpuAfter.relays - cpuBefore.relays) / 1000, etcd: (cpuAfter.etcd - cpuBefore.etcd) / 1000 },
      errors: [...new Set(collected.flatMap((c) => c.errors))].slice(0, 5),
    };
  } finally {
    await Promise.all(workers.map((w) => w.close()));
    await Promise.all(relays.map((r) => r.stop()));
    await etcd.stop();
    untrackPid(etcd.members[0].pid ?? 0);
    rmSync(aDir, { recursive: true, force: true });
  }
}

function render(command: string, ttlMs: number, results: CaseResult[]): string {
  const ms = (v: number): string => fmt(v, 0);
  return [
    `\`${command}\``,
    '',
    `directory.leaseTtlMs ${ttlMs}; 3 relays, one-member etcd; times from the SIGKILL of the relay holding every session.`,
    '',
    table(
      ['path', 'sessions', 're-joined', 'both attached p50 / p99 / last ms', 'relaying again p50 / p99 / last ms', 'lookups after the kill', 'CPU s after the kill: parties / relays / etcd', 'bound'],
      results.map((r) => [
        r.path === 'ttl' ? 'kill -9, lease expires' : 'kill -9, restart same data dir',
        r.sessions.toLocaleString('en'),
        `${r.rejoined.toLocaleString('en')}${r.missing > 0 ? ` (${r.missing} missing)` : ''}`,
        `${ms(r.attached.p50)} / ${ms(r.attached.p99)} / ${ms(r.attached.max)}`,
        `${ms(r.relaying.p50)} / ${ms(r.relaying.p99)} / ${ms(r.relaying.max)}`,
        r.lookupsAfterKill.toLocaleString('en'),
        `${fmt(r.cpuAfterKill.load, 1)} / ${fmt(r.cpuAfterKill.relays, 1)} / ${fmt(r.cpuAfterKill.etcd, 1)}`,
        r.path === 'ttl' ? `TTL + 3 s = ${ttlMs + 3000}` : 'under 3,000',
      ]),
    ),
    '',
  ].join('\n');
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { sessions: { type: 'string' }, 'ttl-ms': { type: 'string' }, workers: { type: 'string' }, 'lookup-wait-ms': { type: 'string' }, 'lookup-spread': { type: 'string' }, paths: { type: 'string' }, 'revoke-refusing': { type: 'string' } } });
  const paths = (values.paths ?? 'ttl,restart').split(',');
  if (paths.some((x) => x !== 'ttl' && x !== 'restart')) throw new Error('--paths: ttl, restart or both (comma-separated)');
  const lookupSpread = values['lookup-spread'] ?? 'first';
  if (lookupSpread !== 'first' && lookupSpread !== 'rotate') throw new Error('--lookup-spread: first or rotate');
  rotateLookups = lookupSpread === 'rotate';
  const revoke = values['revoke-refusing'] ?? 'on';
  if (revoke !== 'on' && revoke !== 'off') throw new Error('--revoke-refusing: on or off');
  revokeRefusingOwners = revoke === 'on';
  if (values['lookup-wait-ms'] !== undefined) lookupWaitMaxMs = Number(values['lookup-wait-ms']);
  const sizes = (values.sessions ?? '1,2000').split(',').map(Number);
  const ttlMs = Number(values['ttl-ms'] ?? 10_000);
  const workerCount = Number(values.workers ?? 4);
  const waitFlag = `${lookupWaitMaxMs === undefined ? '' : ` --lookup-wait-ms ${lookupWaitMaxMs}`}${rotateLookups ? ' --lookup-spread rotate' : ''}`;
  const pathFlag = `${paths.join(',') === 'ttl,restart' ? '' : ` --paths ${paths.join(',')}`}${revokeRefusingOwners ? '' : ' --revoke-refusing off'}`;
  const command = `node --import tsx bench/rejoin.ts --sessions ${sizes.join(',')} --ttl-ms ${ttlMs} --workers ${workerCount}${waitFlag}${pathFlag}`;
  const results: CaseResult[] = [];
  for (const path of paths as Path[]) {
    for (const size of sizes) {
      process.stderr.write(`${path}, ${size} sessions\n`);
      results.push(await runCase(path, size, ttlMs, workerCount));
    }
  }
  const md = render(command, ttlMs, results);
  process.stdout.write(md);
  const dir = join(ROOT, 'bench/results');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'rejoin.md'), md);
  writeFileSync(join(dir, 'rejoin.json'), JSON.stringify({ command, ttlMs, results }, null, 2));
}

if (import.meta.url === `file://${process.argv[1]}`) {
  await runBench(main);
}
