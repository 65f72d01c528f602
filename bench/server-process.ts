/**
 * The relays under test, each in a process of its own on 127.0.0.1 free
 * ports: `hashmail serve` as deployed (built dist/, plain text, a config
 * file), or the direct pipe (bench/direct-pipe.ts). Both expose the memory
 * the benchmark reads: VmRSS from /proc and the open descriptor count.
 */
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopChild, track } from './children.js';
import type { Target } from './wire.js';

export const ROOT = fileURLToPath(new URL('..', import.meta.url));
const HASHMAIL_BIN = join(ROOT, 'dist/cli/main.js');
const DIRECT_PIPE_ENTRY = join(ROOT, 'bench/direct-pipe.ts');
const START_TIMEOUT_MS = 30_000;
const STOP_GRACE_MS = 8_000;
/** Server log lines kept for the report when something goes wrong. */
const KEPT_LOG_LINES = 200;

export type RelayKind = 'hashmail' | 'direct';

export interface RelayProcess extends Target {
  kind: RelayKind;
  pid: number;
  child: ChildProcess;
  /** Last log lines (hashmail: its JSON log; direct: stderr). */
  log: string[];
  /** Admin listener of hashmail (`127.0.0.1:PORT`), null for the direct pipe. */
  adminAddress: string | null;
  /** The inspector's WebSocket URL, when started with `inspect` (and it said so). */
  inspectorUrl?: () => string | null;
  stop(): Promise<void>;
}

/** VmRSS of `pid` in KiB. */
export function rssKiB(pid: number): number {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(status);
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]);
}

/** Clock ticks per second of /proc/<pid>/stat times (getconf CLK_TCK; 100 on Linux in practice). */
const CLK_TCK = ((): number => {
  try {
    const v = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8', timeout: 5_000 }).trim());
    return Number.isFinite(v) && v > 0 ? v : 100;
  } catch {
    return 100;
  }
})();

/** CPU time used by `pid` so far (utime + stime from /proc/<pid>/stat), in ms. */
export function cpuMs(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after the command name (which may hold spaces), which ends at the last ')'.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after the name (state is index 0).
  return ((Number(fields[11]) + Number(fields[12])) * 1000) / CLK_TCK;
}

/** Busy and total jiffies of the whole machine (/proc/stat, first line). */
export function machineCpu(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0];
  const v = line.trim().split(/\s+/).slice(1).map(Number);
  const total = v.reduce((acc, x) => acc + x, 0);
  const idle = (v[3] ?? 0) + (v[4] ?? 0);
  return { busy: total - idle, total };
}

/** Open file descriptors of `pid` (sockets included). */
export function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

/** A metric's value from the admin listener (first line with that exact name and labels). */
export async function hashmailMetric(adminAddress: string, name: string): Promise<number | undefined> {
  const res = await fetch(`http://${adminAddress}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const body = await res.text();
  for (const line of body.split('\n')) if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
  return undefined;
}

/**
 * Sum of a metric's samples whose labels include every pair of `labels`
 * (none given: every sample of that name); undefined if there is none.
 */
export async function hashmailMetricSum(adminAddress: string, name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const res = await fetch(`http://${adminAddress}/metrics`, { signal: AbortSignal.timeout(5_000) });
  const body = await res.text();
  const wanted = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  let sum: number | undefined;
  for (const line of body.split('\n')) {
    if (!line.startsWith(name) || (line[name.length] !== ' ' && line[name.length] !== '{')) continue;
    const labelText = line[name.length] === '{' ? line.slice(name.length + 1, line.indexOf('}')) : '';
    if (!wanted.every((w) => labelText.split(',').includes(w))) continue;
    sum = (sum ?? 0) + Number(line.slice(line.lastIndexOf(' ') + 1));
  }
  return sum;
}

function keep(log: string[], line: string): void {
  log.push(line);
  if (log.length > KEPT_LOG_LINES) log.shift();
}

/** A built hashmail to run: its checkout (working directory) and its `dist/cli/main.js`. */
export interface HashmailBuild {
  root: string;
  bin: string;
}

/** This checkout's dist/. */
/**
 * Every bench client comes from loopback, so the per-address limits would
 * count the whole bench as one client; lifted. `maxConnections` stays under
 * the 20,000 open files a process may hold here.
 */
export const BENCH_LIMITS = { maxBoxesPerAddress: 10_000_000, maxConnectionsPerAddress: 10_000_000, maxConnections: 19_000 };
/** Throughput and latency: no per-box rate limit (it would measure the limit). */
export const CONFIG_UNLIMITED = { mailbox: { rateLimitIntervalMs: 0 }, limits: BENCH_LIMITS };
/** Memory, storms: as deployed, but for BENCH_LIMITS. */
export const CONFIG_DEPLOYED = { limits: BENCH_LIMITS };

export const CURRENT_BUILD: HashmailBuild = { root: ROOT, bin: HASHMAIL_BIN };

const INSPECTOR_LINE = /Debugger listening on (ws:\/\/\S+)/;

export interface StartOptions {
  /** Node's inspector on a free loopback port, so the bench can ask for a full GC (bench/inspector-gc.ts). */
  inspect?: boolean;
  /** `relay` (a cluster member: give `args` its --etcd and --advertise, and `listen` a fixed port) or `gateway` (give `args` its --etcd); default `serve`. */
  command?: 'serve' | 'relay' | 'gateway';
  /** Public listener; default 127.0.0.1:0. */
  listen?: string;
  /** More command-line flags. */
  args?: string[];
  /** A data directory to use (and keep: a restart with the same one); default a temporary one removed at stop. */
  dataDir?: string;
}

/**
 * `HASHMAIL_BENCH_CPU_PROF=DIR`: every server process writes a V8 CPU profile into DIR when it
 * exits (passed as Node flags because Node refuses `--cpu-prof` in NODE_OPTIONS).
 */
function cpuProfileFlags(): string[] {
  const dir = process.env.HASHMAIL_BENCH_CPU_PROF;
  return dir ? ['--cpu-prof', `--cpu-prof-dir=${dir}`] : [];
}

/** HASHMAIL_BENCH_NODE_FLAGS: Node/V8 flags (space-separated) for every hashmail process, e.g. `--trace-gc`. */
function extraNodeFlags(): string[] {
  return (process.env.HASHMAIL_BENCH_NODE_FLAGS ?? '').split(' ').filter((f) => f !== '');
}

/** `hashmail serve --insecure` (or `relay`) with `config` merged over the defaults (this checkout's build unless `build` says otherwise). */
export async function startHashmail(config: Record<string, unknown>, build: HashmailBuild = CURRENT_BUILD, options: StartOptions = {}): Promise<RelayProcess> {
  const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'hashmail-bench-'));
  const keepDataDir = options.dataDir !== undefined;
  const configFile = join(dataDir, 'config.json');
  writeFileSync(configFile, JSON.stringify(config));
  const child = track(
    spawn(
      process.execPath,
      [
        ...(options.inspect ? ['--inspect=127.0.0.1:0'] : []),
        ...cpuProfileFlags(),
        ...extraNodeFlags(),
        build.bin,
        options.command ?? 'serve',
        '--insecure',
        '--listen',
        options.listen ?? '127.0.0.1:0',
        '--admin-listen',
        '127.0.0.1:0',
        '--data-dir',
        dataDir,
        '--config',
        configFile,
        ...(options.args ?? []),
      ],
      { cwd: build.root, env: { ...process.env, HASHMAIL_LOG__FORMAT: 'json' }, stdio: ['ignore', 'pipe', 'pipe'] },
    ),
  );
  const log: string[] = [];
  let inspectorUrl: string | null = null;
  let buffered = '';
  const ready = new Promise<{ listen: string; adminListen: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`hashmail did not log "serving" within ${START_TIMEOUT_MS} ms:\n${log.join('\n')}`)), START_TIMEOUT_MS);
    // Keep reading stdout for the whole run: a full pipe would block the server's logger.
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString('utf8');
      let nl;
      while ((nl = buffered.indexOf('\n')) >= 0) {
        const line = buffered.slice(0, nl);
        buffered = buffered.slice(nl + 1);
        keep(log, line);
        if (line.includes('"serving"')) {
          try {
            const entry = JSON.parse(line) as { msg?: string; listen?: string; adminListen?: string };
            if (entry.msg === 'serving' && entry.listen && entry.adminListen) {
              clearTimeout(timer);
              resolve({ listen: entry.listen, adminListen: entry.adminListen });
            }
          } catch {
            // not JSON: keep waiting
          }
        }
      }
    });
    child.stderr!.on('data', (chunk: Buffer) => {
      const text = chunk.toString('utf8');
      inspectorUrl ??= INSPECTOR_LINE.exec(text)?.[1] ?? null;
      keep(log, `stderr: ${text.trimEnd()}`);
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`hashmail exited (${code ?? signal}) before serving:\n${log.join('\n')}`));
    });
  });
  let addrs: { listen: string; adminListen: string };
  try {
    addrs = await ready;
  } catch (err) {
    await stopChild(child, 'SIGKILL', 1_000);
    if (!keepDataDir) rmSync(dataDir, { recursive: true, force: true });
    throw err;
  }
  const port = Number(addrs.listen.slice(addrs.listen.lastIndexOf(':') + 1));
  return {
    kind: 'hashmail',
    pid: child.pid!,
    child,
    log,
    grpcAddress: `127.0.0.1:${port}`,
    wsPort: port,
    adminAddress: addrs.adminListen,
    inspectorUrl: () => inspectorUrl,
    async stop() {
      await stopChild(child, 'SIGTERM', STOP_GRACE_MS);
      if (!keepDataDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}

/** The direct pipe in a child process (tsx loader, like the bench itself). */
export async function startDirectPipe(): Promise<RelayProcess> {
  const child = track(
    fork(DIRECT_PIPE_ENTRY, ['--child'], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'ignore', 'pipe', 'ipc'] }),
  );
  const log: string[] = [];
  child.stderr!.on('data', (chunk: Buffer) => keep(log, chunk.toString('utf8').trimEnd()));
  const ports = new Promise<{ grpcPort: number; wsPort: number }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`direct pipe did not start within ${START_TIMEOUT_MS} ms: ${log.join('\n')}`)), START_TIMEOUT_MS);
    child.on('message', (m: { op?: string; grpcPort?: number; wsPort?: number }) => {
      if (m.op === 'ready') {
        clearTimeout(timer);
        resolve({ grpcPort: m.grpcPort!, wsPort: m.wsPort! });
      }
    });
    child.once('exit', (code, signal) => {
      clearTimeout(timer);
      reject(new Error(`direct pipe exited (${code ?? signal}): ${log.join('\n')}`));
    });
  });
  let p: { grpcPort: number; wsPort: number };
  try {
    p = await ports;
  } catch (err) {
    await stopChild(child, 'SIGKILL', 1_000);
    throw err;
  }
  return {
    kind: 'direct',
    pid: child.pid!,
    child,
    log,
    grpcAddress: `127.0.0.1:${p.grpcPort}`,
    wsPort: p.wsPort,
    adminAddress: null,
    stop: () => stopChild(child, 'SIGTERM', STOP_GRACE_MS),
  };
}

/** V8 heap in use by the relay (hashmail: its nodejs_heap_size_used_bytes metric; direct pipe: asked over IPC). */
export async function heapUsedBytes(relay: RelayProcess): Promise<number | undefined> {
  if (relay.adminAddress) return hashmailMetric(relay.adminAddress, 'nodejs_heap_size_used_bytes').catch(() => undefined);
  const child = relay.child;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      resolve(undefined);
    }, 5_000);
    const onMessage = (m: { op?: string; heapUsed?: number }): void => {
      if (m.op !== 'memory') return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve(m.heapUsed);
    };
    child.on('message', onMessage);
    child.send({ op: 'memory' });
  });
}

/** Pauses of the relay's event loop: GC time so far, and event-loop delay since the previous call (which resets it). */
export interface Pauses {
  gcMs: number;
  loopP99Ms: number;
  loopMaxMs: number;
}

/** hashmail: its prom-client default metrics; the direct pipe: asked over IPC. Undefined if unavailable. */
export async function relayPauses(relay: RelayProcess): Promise<Pauses | undefined> {
  if (relay.adminAddress) {
    try {
      const res = await fetch(`http://${relay.adminAddress}/metrics`, { signal: AbortSignal.timeout(5_000) });
      const body = await res.text();
      let gcSeconds = 0;
      let p99 = Number.NaN;
      let max = Number.NaN;
      for (const line of body.split('\n')) {
        const value = Number(line.slice(line.lastIndexOf(' ') + 1));
        if (line.startsWith('nodejs_gc_duration_seconds_sum')) gcSeconds += value;
        else if (line.startsWith('nodejs_eventloop_lag_p99_seconds ')) p99 = value;
        else if (line.startsWith('nodejs_eventloop_lag_max_seconds ')) max = value;
      }
      return { gcMs: gcSeconds * 1000, loopP99Ms: p99 * 1000, loopMaxMs: max * 1000 };
    } catch {
      return undefined;
    }
  }
  const child = relay.child;
  return new Promise((resolve) => {
    const timer = setTimeout(() => {
      child.off('message', onMessage);
      resolve(undefined);
    }, 5_000);
    const onMessage = (m: { op?: string } & Partial<Pauses>): void => {
      if (m.op !== 'pauses') return;
      clearTimeout(timer);
      child.off('message', onMessage);
      resolve({ gcMs: m.gcMs ?? Number.NaN, loopP99Ms: m.loopP99Ms ?? Number.NaN, loopMaxMs: m.loopMaxMs ?? Number.NaN });
    };
    child.on('message', onMessage);
    child.send({ op: 'pauses' });
  });
}
