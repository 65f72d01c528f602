/**
 * `hashmail relay`: the v2 relay of a cluster: gRPC and WebSocket v2 on one
 * port plus both lookups, registered in the etcd directory, placing and
 * serving sessions, and the gateway hop (docs/gateway-hop.md). No legacy
 * front door (that is the gateway's).
 */
import type { Config } from '../config/schema.js';
import { EtcdDirectory } from '../directory/etcd/etcd-directory.js';
import { etcdOptionsFromConfig } from '../directory/etcd/etcd-options.js';
import type { Logger } from '../observe/logger.js';
import { resolveHopToken } from './hop-token.js';
import { InstanceState } from './instance-state.js';
import type { RunningNode } from './node.js';

export async function startRelay(config: Config, logger: Logger): Promise<RunningNode> {
  const state = InstanceState.open(config, 'relay');
  const directory = new EtcdDirectory(etcdOptionsFromConfig(config, logger, state.leaseFile));
  try {
    const instanceId = state.instanceId(config);
    // Revokes the leases a previous run left, so its sessions move at once: before the transports are
    // even loaded (a third of the start's CPU), because a restarted relay's parties wait for exactly this.
    await directory.start();
    const { startNode } = await import('./node.js');
    const hopToken = await resolveHopToken(config, logger);
    const node = await startNode({ config, logger, directory, instanceId, legacy: null, hopToken });
    return { ...node, stop: (options) => node.stop(options).finally(() => state.release()) };
  } catch (err) {
    await directory.close().catch(() => undefined);
    state.release();
    throw err;
  }
}
