/**
 * The cluster as an operator sees it (`hashmail status`): every registered
 * instance (relays and gateways) with its published load, how many session mappings name it and
 * how long until its lease runs out, plus the health of each etcd endpoint.
 * Read-only: it registers nothing and places nothing.
 */
import { DirectoryUnavailableError, type InstanceRole } from '../directory.js';
import { allEndpointStatus, type EndpointStatus } from './endpoint-status.js';
import type { EtcdDirectoryOptions } from './etcd-options.js';
import { EtcdRpc } from './etcd-rpc.js';
import { keyLayout, leaseHex, parseInstance, parseSession } from './keys.js';
import { listPrefix } from './prefix-watcher.js';

export interface InstanceStatus {
  id: string;
  /** 'relay' (owns sessions) or 'gateway' (never placed on). */
  role: InstanceRole;
  address: string;
  addresses: string[];
  sessions: number;
  connections: number;
  draining: boolean;
  version: string;
  startedAt: number;
  /** Session keys in etcd that name this instance. */
  mappedSessions: number;
  /** Instance lease (hex), its TTL and what is left of it (seconds, etcd's granularity). */
  lease: string;
  leaseTtlSeconds: number | null;
  leaseRemainingSeconds: number | null;
  /** Time since the lease was last kept alive, from etcd's view (ms, second granularity). */
  leaseAgeMs: number | null;
  /** Session leases of this instance holding mappings. */
  sessionLeases: number;
}

export interface ClusterStatus {
  instances: InstanceStatus[];
  etcd: { endpoints: EndpointStatus[]; reachable: number; total: number; sessionKeys: number; revision: string };
}

/** Reads the cluster; rejects with DirectoryUnavailableError when no endpoint answers within `options.callTimeoutMs`. */
export async function clusterStatus(options: EtcdDirectoryOptions): Promise<ClusterStatus> {
  const endpoints = await allEndpointStatus(options, options.callTimeoutMs);
  const reachable = endpoints.filter((e) => e.reachable).length;
  if (reachable === 0) {
    throw new DirectoryUnavailableError(endpoints.map((e) => `${e.endpoint}: ${e.error ?? 'unreachable'}`).join('; '));
  }
  const rpc = new EtcdRpc(options, options.callTimeoutMs);
  try {
    const layout = keyLayout(options.prefix);
    const { entries, revision } = await listPrefix(rpc, layout.prefix);
    const mapped = new Map<string, number>();
    const sessionLeases = new Map<string, Set<string>>();
    let sessionKeys = 0;
    const records: { lease: string; value: NonNullable<ReturnType<typeof parseInstance>> }[] = [];
    for (const e of entries) {
      if (e.key.startsWith(layout.sessionsPrefix)) {
        const m = parseSession(e.value);
        if (!m) continue;
        sessionKeys++;
        mapped.set(m.id, (mapped.get(m.id) ?? 0) + 1);
        if (!sessionLeases.has(m.id)) sessionLeases.set(m.id, new Set());
        sessionLeases.get(m.id)?.add(m.lease);
      } else if (e.key.startsWith(layout.instancesPrefix)) {
        const value = parseInstance(e.value);
        if (value) records.push({ lease: e.lease, value });
      }
    }
    const instances = await Promise.all(
      records.map(async ({ lease, value }): Promise<InstanceStatus> => {
        let ttl: number | null = null;
        let remaining: number | null = null;
        if (lease !== '0') {
          const res = await rpc.call('lease ttl', (o, c) => c.leaseClient.leaseTimeToLive({ ID: lease }, o)).catch(() => null);
          if (res && Number(res.TTL) >= 0) {
            ttl = Number(res.grantedTTL);
            remaining = Number(res.TTL);
          }
        }
        return {
          id: value.id,
          role: value.role,
          address: value.address,
          addresses: value.addresses,
          sessions: value.load.sessions,
          connections: value.load.connections,
          draining: value.draining,
          version: value.version,
          startedAt: value.startedAt,
          mappedSessions: mapped.get(value.id) ?? 0,
          lease: lease === '0' ? '' : leaseHex(lease),
          leaseTtlSeconds: ttl,
          leaseRemainingSeconds: remaining,
          leaseAgeMs: ttl !== null && remaining !== null ? (ttl - remaining) * 1000 : null,
          sessionLeases: sessionLeases.get(value.id)?.size ?? 0,
        };
      }),
    );
    instances.sort((a, b) => a.id.localeCompare(b.id));
    return { instances, etcd: { endpoints, reachable, total: endpoints.length, sessionKeys, revision: revision.toString() } };
  } finally {
    rpc.close();
  }
}
