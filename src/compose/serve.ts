/**
 * `hashmail serve`: the relay, the in-memory directory (this process owns
 * every session) and the legacy front door, in one process on one port.
 * Lookups answer with this process's own id and address.
 */
import type { Config } from '../config/schema.js';
import { MemoryDirectory } from '../directory/memory-directory.js';
import type { Logger } from '../observe/logger.js';
import { startNode, type RunningNode } from './node.js';

/** serve's instance id: one process is the whole cluster, so a fixed name is enough. */
export const SERVE_INSTANCE_ID = 'serve';

export function startServe(config: Config, logger: Logger): Promise<RunningNode> {
  const instanceId = config.relay.instanceId || SERVE_INSTANCE_ID;
  return startNode({ config, logger, directory: new MemoryDirectory(), instanceId, legacy: 'local' });
}
