/**
 * EtcdDirectory members in the test process, on short TTLs and deadlines.
 */
import { randomBytes } from 'node:crypto';
import { pino } from 'pino';
import type { SelfRegistration } from '../../src/directory/directory.js';
import type { EtcdDirectoryOptions } from '../../src/directory/etcd/etcd-options.js';
import { EtcdDirectory } from '../../src/directory/etcd/etcd-directory.js';

export const TEST_TTL_MS = 2500;
export const TEST_CALL_TIMEOUT_MS = 1000;

export function directoryOptions(endpoints: string[], overrides: Partial<EtcdDirectoryOptions> = {}): EtcdDirectoryOptions {
  return {
    endpoints,
    auth: { username: '', password: '' },
    tls: { caFile: '', certFile: '', keyFile: '' },
    prefix: '/hashmail/',
    leaseTtlMs: TEST_TTL_MS,
    callTimeoutMs: TEST_CALL_TIMEOUT_MS,
    maxTxnsInFlight: 64,
    keysPerLease: 1000,
    // Uncapped unless a test is about the cap: bursts of placements are how these tests set up.
    maxPlacementsPerSecond: 0,
    placementQueueMs: 1000,
    maxWaitingLookups: 100_000,
    loadPublishIntervalMs: 200,
    placement: 'load-aware',
    leaseStateFile: '',
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    ...overrides,
  };
}

export function registration(id: string, port: number): SelfRegistration {
  return { id, addresses: [`127.0.0.1:${port}`], version: 'test' };
}

/** A started (and, with `id`, registered) member; closed by the caller. */
export async function member(endpoints: string[], id: string | null, overrides: Partial<EtcdDirectoryOptions> = {}, port = 1): Promise<EtcdDirectory> {
  const d = new EtcdDirectory(directoryOptions(endpoints, overrides));
  try {
    await d.start();
    if (id !== null) await d.register(registration(id, port));
  } catch (err) {
    await d.close();
    throw err;
  }
  return d;
}

/** A random well-formed route (43 base64url characters). */
export function randomRoute(): string {
  return randomBytes(32).toString('base64url');
}

/** Resolves when `check` holds, polling every `stepMs`; rejects after `timeoutMs`. */
export async function until(check: () => boolean, timeoutMs: number, what: string, stepMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, stepMs));
  }
}
