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
      for (const gateway of gateways) await gateway.stop();
      for (const relay of relays) await relay.stop();
      await etcd?.stop();
    })());
  // Registered before anything starts, so a failed start still stops what did.
  t?.after(stop);
  try {
    const started = await startEtcd(1);
    etcd = started;
    const directory = { ...TEST_DIRECTORY, ...(options.ttlMs === undefined ? {} : { leaseTtlMs: options.ttlMs }), ...options.config?.directory };
    const config = { ...options.config, directory };
    for (let i = 0; i < options.relays; i++) relays.push(await startRelay({ etcd: started.etcdFlag, id: `relay-${i}`, config }));
    for (let i = 0; i < options.gateways; i++) gateways.push(await startGateway({ etcd: started.etcdFlag, id: `gateway-${i}`, config }));
    return { etcd: started, relays, gateways, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}
