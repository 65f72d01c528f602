/**
 * Directory lookup latency against a local etcd (issue 8 benchmark): a
 * cached lookup (no etcd round trip) and a first placement (one
 * create-if-absent transaction), p50/p99, from a gateway-like member while
 * two relays are registered. Sequential, so each sample is one lookup's
 * latency, not a queue's. Runs on its own:
 *   node --import tsx bench/directory-latency.ts [--etcd URL[,URL]] [--placements N]
 * Without --etcd it starts a one-member etcd (test/helpers/etcd.ts) and stops it.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { pino } from 'pino';
import { EtcdDirectory } from '../src/directory/etcd/etcd-directory.js';
import type { EtcdDirectoryOptions } from '../src/directory/etcd/etcd-options.js';
import { startEtcd, type EtcdCluster } from '../test/helpers/etcd.js';
import { nsToMs, summarize, type Summary } from './stats.js';

const DEFAULT_PLACEMENTS = 2000;
const CACHED_LOOKUPS = 100_000;
const WARMUP_PLACEMENTS = 100;

export interface DirectoryLatencyResult {
  cached: Summary;
  placement: Summary;
  /** Placements per second with 64 in flight from one process (maxTxnsInFlight). */
  concurrentPlacementsPerSecond: number;
}

function options(endpoints: string[], prefix: string): EtcdDirectoryOptions {
  return {
    endpoints,
    auth: { username: '', password: '' },
    tls: { caFile: '', certFile: '', keyFile: '' },
    prefix,
    leaseTtlMs: 10_000,
    callTimeoutMs: 5000,
    maxTxnsInFlight: 64,
    keysPerLease: 1000,
    maxPlacementsPerSecond: 0,
    placementQueueMs: 1000,
    maxWaitingLookups: 100_000,
    loadPublishIntervalMs: 2000,
    placement: 'load-aware',
    leaseStateFile: '',
    logger: pino({ level: 'silent' }),
  };
}

export async function measureDirectoryLatency(endpoints: string[], placements = DEFAULT_PLACEMENTS): Promise<DirectoryLatencyResult> {
  const prefix = `/bench-${process.pid}-${Date.now()}/`;
  const relays = [new EtcdDirectory(options(endpoints, prefix)), new EtcdDirectory(options(endpoints, prefix))];
  const gateway = new EtcdDirectory(options(endpoints, prefix));
  try {
    await Promise.all(relays.map((r, i) => r.register({ id: `bench-${i}`, addresses: [`127.0.0.1:${9000 + i}`], version: 'bench' })));
    await gateway.start();
    for (let i = 0; i < 200 && gateway.instances().length < relays.length; i++) await new Promise((r) => setTimeout(r, 10));
    const route = (): string => randomBytes(32).toString('base64url');
    for (let i = 0; i < WARMUP_PLACEMENTS; i++) await gateway.lookup(route(), { place: true });

    const placed: string[] = [];
    const placementMs: number[] = [];
    for (let i = 0; i < placements; i++) {
      const r = route();
      const t0 = process.hrtime.bigint();
      await gateway.lookup(r, { place: true });
      placementMs.push(nsToMs(process.hrtime.bigint() - t0));
      placed.push(r);
    }
    const cachedMs: number[] = [];
    for (let i = 0; i < CACHED_LOOKUPS; i++) {
      const r = placed[i % placed.length];
      const t0 = process.hrtime.bigint();
      await gateway.lookup(r, { place: true });
      cachedMs.push(nsToMs(process.hrtime.bigint() - t0));
    }
    const burst = Array.from({ length: placements }, route);
    const t0 = process.hrtime.bigint();
    await Promise.all(burst.map((r) => gateway.lookup(r, { place: true })));
    const seconds = nsToMs(process.hrtime.bigint() - t0) / 1000;
    return { cached: summarize(cachedMs), placement: summarize(placementMs), concurrentPlacementsPerSecond: placements / seconds };
  } finally {
    await gateway.close();
    await Promise.all(relays.map((r) => r.close({ revoke: true })));
  }
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { etcd: { type: 'string' }, placements: { type: 'string' } } });
  let etcd: EtcdCluster | null = null;
  const endpoints = values.etcd ? values.etcd.split(',') : (etcd = await startEtcd(1)).endpoints;
  try {
    const r = await measureDirectoryLatency(endpoints, values.placements ? Number(values.placements) : DEFAULT_PLACEMENTS);
    const f = (s: Summary): string => `p50 ${s.p50.toFixed(4)} ms, p99 ${s.p99.toFixed(4)} ms, max ${s.max.toFixed(3)} ms (n=${s.count})`;
    process.stdout.write(`cached lookup:    ${f(r.cached)}\nfirst placement:  ${f(r.placement)}\nconcurrent placements (64 in flight): ${r.concurrentPlacementsPerSecond.toFixed(0)}/s\n`);
  } finally {
    await etcd?.stop();
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
