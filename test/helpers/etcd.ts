/**
 * Real etcd for the cluster tests: one member or a cluster of several, each a
 * child process of the `etcd` binary on free loopback ports with its own
 * temporary data directory. Members can be killed, paused and restarted (same
 * data dir); stop() ends every process this harness started and removes its
 * files.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const ETCD_BIN = process.env.ETCD_BIN ?? 'etcd';
const START_TIMEOUT_MS = 20_000;
const STOP_TIMEOUT_MS = 5_000;
const HEALTH_POLL_MS = 50;

/** Ports this process handed out already: the kernel may return a released port again at once. */
const handedOut = new Set<number>();

/**
 * `count` distinct free loopback TCP ports, never handed out before in this
 * process: all are bound together (so none repeats), read, then released.
 * Another process can still take one before its user binds it (an outgoing
 * connection's ephemeral port), so starters retry on EADDRINUSE.
 */
export async function freePorts(count: number): Promise<number[]> {
  const held: net.Server[] = [];
  const ports: number[] = [];
  try {
    // Bounded: a port is skipped only when handed out before, and each try holds a new one.
    for (let tries = 0; ports.length < count && tries < count + 1000; tries++) {
      const server = net.createServer();
      await new Promise<void>((resolve, reject) => {
        server.once('error', reject);
        server.listen(0, '127.0.0.1', resolve);
      });
      held.push(server);
      const { port } = server.address() as net.AddressInfo;
      if (!handedOut.has(port)) {
        handedOut.add(port);
        ports.push(port);
      }
    }
  } finally {
    await Promise.all(held.map((server) => new Promise<void>((resolve) => server.close(() => resolve()))));
  }
  if (ports.length < count) throw new Error(`no ${count} free loopback ports`);
  return ports;
}

/**
 * A loopback port nothing listens on, for "refused" addresses: a port
 * released by freePort may be bound again meanwhile by any process.
 */
export const REFUSING_PORT = 1;

/** A free loopback TCP port, as freePorts. */
export async function freePort(): Promise<number> {
  const [port] = await freePorts(1);
  return port;
}

export interface EtcdMember {
  readonly name: string;
  /** `http://127.0.0.1:PORT` (https:// with EtcdOptions.tls) */
  readonly clientUrl: string;
  readonly peerUrl: string;
  readonly running: boolean;
  /** The running process's pid (benchmarks read its memory), null when stopped. */
  readonly pid: number | null;
  readonly dataDir: string;
  /** SIGKILL, wait for exit (data dir kept). */
  kill(): Promise<void>;
  /** SIGSTOP / SIGCONT. */
  pause(): void;
  resume(): void;
  /** Starts the member again on the same ports and data dir; resolves once it is healthy (needs a quorum). */
  restart(): Promise<void>;
}

export interface EtcdCluster {
  readonly members: readonly EtcdMember[];
  /** Client URLs of every member, for `--etcd`. */
  readonly endpoints: string[];
  /** `--etcd` value: client URLs joined by commas. */
  readonly etcdFlag: string;
  /** Stops every member and removes the data dirs. */
  stop(): Promise<void>;
}

/** Clients over https with mutual TLS; peers stay plain (one member in our TLS tests). */
export interface EtcdTls {
  /** etcd's own certificate and key (PEM files). */
  certFile: string;
  keyFile: string;
  /** PEM bundle of what signs the client certificates etcd accepts (`--client-cert-auth`). */
  clientCaFile: string;
  /** What the harness's health probe trusts and presents: it must pass etcd's client check too. */
  probe: { ca: Buffer; cert: Buffer; key: Buffer };
}

export interface EtcdOptions {
  /** Serve clients on https:// URLs with client-certificate auth; default plain http. */
  tls?: EtcdTls;
}

interface MemberSpec {
  name: string;
  clientPort: number;
  peerPort: number;
  dataDir: string;
}

function healthy(clientUrl: string, probe?: EtcdTls['probe']): Promise<boolean> {
  return new Promise((resolve) => {
    const get = probe ? https.get : http.get;
    const req = get(`${clientUrl}/health`, { agent: false, timeout: 1000, ...probe }, (res) => {
      let body = '';
      res.on('data', (d: Buffer) => (body += d.toString()));
      res.on('end', () => resolve(res.statusCode === 200 && body.includes('"health":"true"')));
    });
    req.on('timeout', () => req.destroy());
    req.on('error', () => resolve(false));
  });
}

async function waitHealthy(clientUrl: string, output: () => string, child: ChildProcess, probe?: EtcdTls['probe']): Promise<void> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    if (child.exitCode !== null || child.signalCode !== null) throw new Error(`etcd exited (${child.exitCode ?? child.signalCode}): ${output().slice(-2000)}`);
    if (await healthy(clientUrl, probe)) return;
    await new Promise((r) => setTimeout(r, HEALTH_POLL_MS));
  }
  throw new Error(`etcd at ${clientUrl} not healthy within ${START_TIMEOUT_MS} ms: ${output().slice(-2000)}`);
}

/** Tries at starting a cluster whose ports were free a moment before. */
const PORT_RACE_ATTEMPTS = 3;

/** Starts `size` members (1 or 3 in our tests) and waits until every one is healthy. */
export async function startEtcd(size = 1, options: EtcdOptions = {}): Promise<EtcdCluster> {
  // A port may be taken between freePorts and etcd's bind: then new ports, a few times.
  for (let attempt = 1; ; attempt++) {
    try {
      return await startEtcdOnce(size, options);
    } catch (err) {
      if (attempt >= PORT_RACE_ATTEMPTS || !/address already in use|EADDRINUSE/.test(String(err))) throw err;
    }
  }
}

async function startEtcdOnce(size: number, options: EtcdOptions): Promise<EtcdCluster> {
  const root = mkdtempSync(join(tmpdir(), 'hashmail-etcd-'));
  const ports = await freePorts(2 * size);
  const specs: MemberSpec[] = [];
  for (let i = 0; i < size; i++) {
    specs.push({ name: `m${i}`, clientPort: ports[2 * i], peerPort: ports[2 * i + 1], dataDir: join(root, `m${i}`) });
  }
  const initialCluster = specs.map((s) => `${s.name}=http://127.0.0.1:${s.peerPort}`).join(',');
  const token = `hashmail-test-${process.pid}-${Date.now()}`;
  const { tls } = options;
  const tlsArgs = tls ? ['--cert-file', tls.certFile, '--key-file', tls.keyFile, '--client-cert-auth', '--trusted-ca-file', tls.clientCaFile] : [];

  const members = specs.map((spec) => {
    let child: ChildProcess | null = null;
    let output = '';
    const clientUrl = `${tls ? 'https' : 'http'}://127.0.0.1:${spec.clientPort}`;
    const peerUrl = `http://127.0.0.1:${spec.peerPort}`;
    const launch = (): ChildProcess => {
      output = '';
      const c = spawn(
        ETCD_BIN,
        [
          '--name', spec.name,
          '--data-dir', spec.dataDir,
          '--listen-client-urls', clientUrl,
          '--advertise-client-urls', clientUrl,
          '--listen-peer-urls', peerUrl,
          '--initial-advertise-peer-urls', peerUrl,
          '--initial-cluster', initialCluster,
          '--initial-cluster-state', 'new',
          '--initial-cluster-token', token,
          // Tests run many puts; keep the WAL small and never spill to disk sync stalls.
          '--snapshot-count', '10000',
          '--log-level', 'warn',
          ...tlsArgs,
        ],
        { stdio: ['ignore', 'pipe', 'pipe'] },
      );
      const keep = (d: Buffer): void => {
        output = (output + d.toString()).slice(-20_000);
      };
      c.stdout?.on('data', keep);
      c.stderr?.on('data', keep);
      c.on('error', (err) => keep(Buffer.from(String(err))));
      return c;
    };
    const exitOf = (c: ChildProcess): Promise<void> =>
      c.exitCode !== null || c.signalCode !== null ? Promise.resolve() : new Promise((resolve) => c.once('exit', () => resolve()));
    const member: EtcdMember & { start(wait: boolean): Promise<void>; waitHealthy(): Promise<void>; stop(): Promise<void> } = {
      name: spec.name,
      clientUrl,
      peerUrl,
      dataDir: spec.dataDir,
      get pid() {
        return member.running ? (child?.pid ?? null) : null;
      },
      get running() {
        return child !== null && child.exitCode === null && child.signalCode === null;
      },
      async start(wait: boolean) {
        child = launch();
        if (wait) await member.waitHealthy();
      },
      async waitHealthy() {
        if (child) await waitHealthy(clientUrl, () => output, child, tls?.probe);
      },
      async kill() {
        if (!child) return;
        const c = child;
        c.kill('SIGCONT');
        c.kill('SIGKILL');
        await exitOf(c);
      },
      pause() {
        child?.kill('SIGSTOP');
      },
      resume() {
        child?.kill('SIGCONT');
      },
      async restart() {
        await member.kill();
        await member.start(true);
      },
      async stop() {
        if (!child) return;
        const c = child;
        c.kill('SIGCONT');
        c.kill('SIGTERM');
        const timer = setTimeout(() => c.kill('SIGKILL'), STOP_TIMEOUT_MS);
        await exitOf(c);
        clearTimeout(timer);
      },
    };
    return member;
  });

  try {
    // Members of a new cluster only become healthy together (they need a quorum).
    await Promise.all(members.map((m) => m.start(false)));
    await Promise.all(members.map((m) => m.waitHealthy()));
  } catch (err) {
    await Promise.all(members.map((m) => m.stop()));
    rmSync(root, { recursive: true, force: true });
    throw err;
  }
  const endpoints = members.map((m) => m.clientUrl);
  return {
    members,
    endpoints,
    etcdFlag: endpoints.join(','),
    async stop() {
      await Promise.all(members.map((m) => m.stop()));
      rmSync(root, { recursive: true, force: true });
    },
  };
}
