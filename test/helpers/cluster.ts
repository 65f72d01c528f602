/**
 * A whole cluster as separate processes: real etcd, `hashmail relay`s and
 * `hashmail gateway`s started with their exact CLI flags on free loopback
 * ports. Everything started here is stopped in `t.after` (gateways first,
 * then relays, then etcd), whatever the test did.
 */
import { startEtcd, type EtcdCluster } from './etcd.js';
import { startGateway, startRelay, type RunningServer } from './server.js';

export interface ClusterOptions {
  relays: number;
  gateways: number;
  /** directory.leaseTtlMs of every instance (ms; at least 2000); default the config default. */
  ttlMs?: number;
  /** Config merged into every relay's and gateway's config file. */
  config?: Record<string, Record<string, unknown>>;
  /** Environment added to every relay's and gateway's (e.g. HASHMAIL_TRACE). */
  env?: Record<string, string>;
  /** false: TLS everywhere, each process with the certificate it generates (gateways pin relays'); default plain text. */
  insecure?: boolean;
}

export interface Cluster {
  etcd: EtcdCluster;
  /** relay-0 .. relay-(n-1) */
  relays: RunningServer[];
  /** gateway-0 .. gateway-(n-1) */
  gateways: RunningServer[];
  /** Stops gateways, relays, then etcd (idempotent). */
  stop(): Promise<void>;
}

/** Directory timings short enough for tests: load seen within a fraction of a second. */
const TEST_DIRECTORY = { callTimeoutMs: 1000, loadPublishIntervalMs: 200 };

/** A test's context: the cluster is stopped in its `after`. */
export interface AfterHook {
  after(fn: () => Promise<void>): void;
}

/**
 * Starts the cluster; with `t` (a test's context) it is stopped in
 * `t.after`. A suite starting it in `before` calls `stop()` in its own
 * `after` (node:test runs an `after` registered inside a hook at once).
 * A failed start stops whatever did start.
 */
export async function startCluster(options: ClusterOptions, t?: AfterHook): Promise<Cluster> {
  const relays: RunningServer[] = [];
  const gateways: RunningServer[] = [];
  let etcd: EtcdCluster | null = null;
  let stopping: Promise<void> | null = null;
  const stop = (): Promise<void> =>
    (stopping ??= (async () => {
      // Gateways first (a suite's shutdown test reads the gateway's "server shutting down"), then relays.
      await Promise.all(gateways.map((g) => g.stop()));
      await Promise.all(relays.map((r) => r.stop()));
      await etcd?.stop();
    })());
  // Registered before anything starts, so a failed start still stops what did.
  t?.after(stop);
  try {
    const started = await startEtcd(1);
    etcd = started;
    const directory = { ...TEST_DIRECTORY, ...(options.ttlMs === undefined ? {} : { leaseTtlMs: options.ttlMs }), ...options.config?.directory };
    const config = { ...options.config, directory };
    // Relays together, then gateways together: each process's start is mostly Node's own, so in parallel a cluster starts in the time of two.
    const tls = options.insecure === false ? { insecure: false } : {};
    await startAll(options.relays, (i) => startRelay({ etcd: started.etcdFlag, id: `relay-${i}`, config, env: options.env, ...tls }), relays);
    await startAll(options.gateways, (i) => startGateway({ etcd: started.etcdFlag, id: `gateway-${i}`, config, env: options.env, ...tls }), gateways);
    return { etcd: started, relays, gateways, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** Starts `n` processes at once into `into` (index order); every one that started is in `into` even when another failed (rethrown). */
async function startAll(n: number, start: (i: number) => Promise<RunningServer>, into: RunningServer[]): Promise<void> {
  const results = await Promise.allSettled(Array.from({ length: n }, (_, i) => start(i)));
  for (const r of results) if (r.status === 'fulfilled') into.push(r.value);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
