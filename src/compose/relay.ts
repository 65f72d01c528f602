/**
 * `hashmail relay`: the v2 relay of a cluster: gRPC and WebSocket v2 on one
 * port plus both lookups, registered in the etcd directory, placing and
 * serving sessions, and the gateway hop (docs/gateway-hop.md). No legacy
 * front door (that is the gateway's).
 */
import { randomBytes } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Config } from '../config/schema.js';
import type { InstanceRole } from '../directory/directory.js';
import { EtcdDirectory } from '../directory/etcd/etcd-directory.js';
import { etcdOptionsFromConfig } from '../directory/etcd/etcd-options.js';
import type { Logger } from '../observe/logger.js';
import { resolveHopToken } from './hop-token.js';
import type { RunningNode } from './node.js';

/** Where a relay keeps its lease ids, in server.dataDir. */
const LEASE_STATE_FILE = 'relay-leases.json';
const GENERATED_ID_BYTES = 6;
const ID_PATTERN = /^[A-Za-z0-9._-]{1,64}$/;

/**
 * relay.instanceId, else the id kept in dataDir (file `<role>-id`), else a
 * new random one `<role>-<hex>` kept there (a restart keeps its id).
 */
export function keptInstanceId(config: Config, role: InstanceRole): string {
  if (config.relay.instanceId) return config.relay.instanceId;
  const file = join(config.server.dataDir, `${role}-id`);
  try {
    const kept = readFileSync(file, 'utf8').trim();
    if (ID_PATTERN.test(kept)) return kept;
  } catch {
    // First start: no id yet.
  }
  const id = `${role}-${randomBytes(GENERATED_ID_BYTES).toString('hex')}`;
  mkdirSync(config.server.dataDir, { recursive: true });
  writeFileSync(file, `${id}\n`, { mode: 0o600 });
  return id;
}

/** The relay's id: relay.instanceId, else `relay-<hex>` kept in dataDir. */
export function relayInstanceId(config: Config): string {
  return keptInstanceId(config, 'relay');
}

export async function startRelay(config: Config, logger: Logger): Promise<RunningNode> {
  const instanceId = relayInstanceId(config);
  mkdirSync(config.server.dataDir, { recursive: true });
  const directory = new EtcdDirectory(etcdOptionsFromConfig(config, logger, join(config.server.dataDir, LEASE_STATE_FILE)));
  try {
    // Revokes the leases a previous run left, so its sessions move at once: before the transports are
    // even loaded (a third of the start's CPU), because a restarted relay's parties wait for exactly this.
    await directory.start();
    const { startNode } = await import('./node.js');
    const hopToken = await resolveHopToken(config, logger);
    return await startNode({ config, logger, directory, instanceId, legacy: null, hopToken });
  } catch (err) {
    await directory.close().catch(() => undefined);
    throw err;
  }
}
