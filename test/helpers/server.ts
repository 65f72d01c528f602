/**
 * Starts a real `hashmail serve` (or `relay`, `gateway`) process on free
 * loopback ports and stops it. Every integration test goes through this, so
 * each process a test starts is also stopped by it (stop() kills, then waits
 * for exit).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import http from 'node:http';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { freePort } from './etcd.js';

export const ROOT = fileURLToPath(new URL('../..', import.meta.url));
export const BIN = join(ROOT, 'dist/cli/main.js');
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 10_000;

export interface ServerOptions {
  /** Config file content (merged over defaults by the server). */
  config?: Record<string, unknown>;
  /** Plain text (default true); false serves TLS with the generated certificate. */
  insecure?: boolean;
  extraArgs?: string[];
  env?: Record<string, string>;
}

export interface RunningServer {
  /** `127.0.0.1:PORT` of the public listener. */
  address: string;
  host: string;
  port: number;
  /** `127.0.0.1:PORT` of the admin listener. */
  adminAddress: string;
  dataDir: string;
  process: ChildProcess;
  /** Every log line the server printed so far (parsed JSON). */
  logs: Record<string, unknown>[];
  /** GET on the admin listener, text body. */
  admin(path: string): Promise<{ status: number; body: string }>;
  /** Current value of a metric line (exact name incl. labels, e.g. `hashmail_mailbox_count`). */
  metric(name: string): Promise<number | undefined>;
  /** Resolves with the exit code once the process exited. */
  exited: Promise<number | null>;
  /** SIGTERM, wait for exit; returns the exit code. */
  stop(): Promise<number | null>;
}

export async function startServer(options: ServerOptions = {}): Promise<RunningServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hashmail-test-'));
  const args = [BIN, 'serve', '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (options.insecure !== false) args.push('--insecure');
  return spawnServer(dataDir, args, options);
}

export interface RelayOptions extends ServerOptions {
  /** `--etcd` value (etcd client URLs, comma-separated). */
  etcd: string;
  /** `--id`; default: the random id the relay keeps in its data dir. */
  id?: string;
  /** Data dir to use (a restart keeps it); default a new temporary one. Removed on stop() only when created here. */
  dataDir?: string;
}

/** `hashmail relay` with the exact CLI flags of issue 8: --etcd --listen --advertise --admin-listen --insecure. */
export async function startRelay(options: RelayOptions): Promise<RunningServer> {
  // The port is chosen before the relay binds it (it must advertise it): an outgoing connection of
  // any process may take it in between, as an ephemeral port. Then another port, a few times.
  for (let attempt = 1; ; attempt++) {
    const dataDir = options.dataDir ?? mkdtempSync(join(tmpdir(), 'hashmail-relay-'));
    const port = await freePort();
    const args = [BIN, 'relay', '--etcd', options.etcd, '--listen', `127.0.0.1:${port}`, '--advertise', `127.0.0.1:${port}`, '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir];
    if (options.insecure !== false) args.push('--insecure');
    if (options.id !== undefined) args.push('--id', options.id);
    try {
      return await spawnServer(dataDir, args, options, options.dataDir === undefined);
    } catch (err) {
      if (attempt >= PORT_RACE_ATTEMPTS || !String(err).includes('EADDRINUSE')) throw err;
    }
  }
}

/** Tries at starting a relay on a port that was free a moment before. */
const PORT_RACE_ATTEMPTS = 3;

export interface GatewayOptions extends ServerOptions {
  /** `--etcd` value (etcd client URLs, comma-separated). */
  etcd: string;
  /** `--id`; default: the random id the gateway keeps in its data dir. */
  id?: string;
}

/** `hashmail gateway` with the exact CLI flags of issue 9: --etcd --listen --admin-listen --insecure. */
export async function startGateway(options: GatewayOptions): Promise<RunningServer> {
  const dataDir = mkdtempSync(join(tmpdir(), 'hashmail-gateway-'));
  const args = [BIN, 'gateway', '--etcd', options.etcd, '--listen', '127.0.0.1:0', '--admin-listen', '127.0.0.1:0', '--data-dir', dataDir];
  if (options.insecure !== false) args.push('--insecure');
  if (options.id !== undefined) args.push('--id', options.id);
  return spawnServer(dataDir, args, options);
}

async function spawnServer(dataDir: string, args: string[], options: ServerOptions, removeDataDir = true): Promise<RunningServer> {
  if (options.config) {
    const file = join(dataDir, 'config.json');
    writeFileSync(file, JSON.stringify(options.config));
    args.push('--config', file);
  }
  args.push(...(options.extraArgs ?? []));
  const removeDir = (): void => {
    if (removeDataDir) rmSync(dataDir, { recursive: true, force: true });
  };
  const child = spawn(process.execPath, args, {
    cwd: ROOT,
    env: { ...process.env, HASHMAIL_LOG__FORMAT: 'json', ...options.env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  const logs: Record<string, unknown>[] = [];
  let stderr = '';
  child.stderr?.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));

  const ready = new Promise<{ listen: string; adminListen: string }>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`server did not start in ${START_TIMEOUT_MS} ms: ${stderr}`)), START_TIMEOUT_MS);
    const lines = createInterface({ input: child.stdout! });
    lines.on('line', (line) => {
      let entry: Record<string, unknown>;
      try {
        entry = JSON.parse(line) as Record<string, unknown>;
      } catch {
        return;
      }
      logs.push(entry);
      if (entry.msg === 'serving') {
        clearTimeout(timer);
        resolve({ listen: String(entry.listen), adminListen: String(entry.adminListen) });
      }
    });
    void exited.then((code) => {
      clearTimeout(timer);
      reject(new Error(`server exited with ${code} before serving: ${stderr}`));
    });
  });
  let addrs: { listen: string; adminListen: string };
  try {
    addrs = await ready;
  } catch (err) {
    child.kill('SIGKILL');
    removeDir();
    throw err;
  }
  const port = Number(addrs.listen.slice(addrs.listen.lastIndexOf(':') + 1));

  // One connection per request, closed after it: a kept-alive admin connection
  // would show up in the fd counts the hardening tests compare.
  const admin = (path: string): Promise<{ status: number; body: string }> =>
    new Promise((resolve, reject) => {
      const req = http.get(`http://${addrs.adminListen}${path}`, { agent: false, headers: { connection: 'close' } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
        res.on('error', reject);
      });
      req.on('error', reject);
    });

  return {
    address: `127.0.0.1:${port}`,
    host: '127.0.0.1',
    port,
    adminAddress: addrs.adminListen,
    dataDir,
    process: child,
    logs,
    admin,
    exited,
    async metric(name: string): Promise<number | undefined> {
      const { body } = await admin('/metrics');
      for (const line of body.split('\n')) {
        if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
      }
      return undefined;
    },
    async stop(): Promise<number | null> {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), STOP_TIMEOUT_MS);
        const code = await exited;
        clearTimeout(timer);
        removeDir();
        return code;
      }
      await exited;
      removeDir();
      return child.exitCode;
    },
  };
}
