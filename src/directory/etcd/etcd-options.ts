/**
 * What the etcd directory needs to run, built from the `directory.*` config
 * keys (etcdOptionsFromConfig) by `hashmail relay`, `gateway` and `status`.
 */
import type { Config } from '../../config/schema.js';
import type { Logger } from '../../observe/logger.js';
import type { PlacementPolicy } from '../placement.js';

export interface EtcdDirectoryOptions {
  endpoints: string[];
  /** Empty strings: not set. */
  auth: { username: string; password: string };
  tls: { caFile: string; certFile: string; keyFile: string };
  /** Key prefix, ending in '/'. */
  prefix: string;
  leaseTtlMs: number;
  callTimeoutMs: number;
  maxTxnsInFlight: number;
  keysPerLease: number;
  /** Placements (etcd create transactions) per second per process; 0: uncapped. */
  maxPlacementsPerSecond: number;
  /** directory.maxWaitingLookups. */
  maxWaitingLookups: number;
  /** How long a placement over that rate may wait for its turn before UNAVAILABLE (ms). */
  placementQueueMs: number;
  /** directory.maxPlacementShare: the share of that rate one client address may take before it may queue only half as long; 0: none. */
  maxPlacementShare?: number;
  /** directory.revokeRefusingOwners: a relay a party could not reach, whose address refuses connections, loses its leases at once. */
  revokeRefusingOwners?: boolean;
  loadPublishIntervalMs: number;
  placement: PlacementPolicy;
  /**
   * A file that outlives a restart (in server.dataDir) where a relay keeps the
   * ids of its leases, so a restart revokes them at once and its sessions move
   * without waiting for the TTL. Empty: none (lookup-only members).
   */
  leaseStateFile: string;
  logger: Logger;
}

export function etcdOptionsFromConfig(config: Config, logger: Logger, leaseStateFile = ''): EtcdDirectoryOptions {
  const d = config.directory;
  return {
    endpoints: d.etcdEndpoints,
    auth: { username: d.etcdUsername, password: d.etcdPassword },
    tls: { caFile: d.etcdCaFile, certFile: d.etcdCertFile, keyFile: d.etcdKeyFile },
    prefix: d.prefix.endsWith('/') ? d.prefix : `${d.prefix}/`,
    leaseTtlMs: d.leaseTtlMs,
    callTimeoutMs: d.callTimeoutMs,
    maxTxnsInFlight: d.maxTxnsInFlight,
    keysPerLease: d.keysPerLease,
    maxPlacementsPerSecond: d.maxPlacementsPerSecond,
    maxWaitingLookups: d.maxWaitingLookups,
    placementQueueMs: d.placementQueueMs,
    maxPlacementShare: d.maxPlacementShare,
    revokeRefusingOwners: d.revokeRefusingOwners,
    loadPublishIntervalMs: d.loadPublishIntervalMs,
    placement: d.placement,
    leaseStateFile,
    logger,
  };
}
