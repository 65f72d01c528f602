/**
 * `hashmail gateway`: the cluster's public front door. The same node parts
 * as serve and relay (node.ts) on one port, registered in the etcd
 * directory with role 'gateway' (listed by `hashmail status`, never placed
 * on, so it owns no session):
 * - the legacy surface (gRPC hashmailrpc.HashMail, REST, WebSocket v1) on a
 *   LegacyOperations that carries each call to the owning relay, supplied
 *   by `makeLegacy` (the seam where the hop's RemoteLegacyMailbox plugs in);
 * - v2 gRPC: Hello and ServerForMailbox answered by the node's own v2
 *   mailbox and router: the Hello gets SERVED_ELSEWHERE naming the owner;
 * - v2 WebSocket: `/v2/mailbox?route=R` passed through to the owner
 *   (v2-websocket-proxy.ts); GET /v2/relay (the WebSocket clients' lookup)
 *   names this gateway, so WebSocket clients come through it; without
 *   `?route` the Hello gets the redirect as over gRPC.
 */
import type { Config } from '../config/schema.js';
import type { Directory } from '../directory/directory.js';
import { EtcdDirectory } from '../directory/etcd/etcd-directory.js';
import { etcdOptionsFromConfig } from '../directory/etcd/etcd-options.js';
import type { RouteLookup } from '../directory/route-lookup.js';
import { remoteLegacyFromConfig } from '../gateway/remote-legacy-mailbox.js';
import type { HopToken } from '../transport/hop/hop-token.js';
import { V2WebSocketProxy } from '../gateway/v2-websocket-proxy.js';
import { relayTrustFromConfig } from '../gateway/relay-pool.js';
import { ClientAddressPolicy } from '../transport/client-address.js';
import type { Logger } from '../observe/logger.js';
import { subsystemLogger } from '../observe/logger.js';
import type { RelayStats } from '../observe/stats.js';
import type { LegacyOperations } from '../relay/legacy-operations.js';
import { startNode, type RunningNode } from './node.js';
import { InstanceState } from './instance-state.js';

/**
 * The legacy mailbox of a gateway, built once its directory is started: the
 * hop's RemoteLegacyMailbox (each call to the owning relay); `close` runs at
 * stop (its connections to relays).
 */
export type MakeLegacy = (
  directory: Directory,
  config: Config,
  logger: Logger,
) => LegacyOperations & { close?(): void; shutdown?(): void; observeWith?(stats: RelayStats, limitHit: (configKey: string, client: string) => void): void };

/** The hop: each legacy call carried to the owning relay (docs/gateway-hop.md). */
export function hopLegacy(token: HopToken): MakeLegacy {
  return (directory, config, logger) => remoteLegacyFromConfig(directory, config, logger, token);
}

export async function startGateway(config: Config, logger: Logger, makeLegacy: MakeLegacy, hopToken?: HopToken): Promise<RunningNode> {
  const state = InstanceState.open(config, 'gateway');
  const directory = new EtcdDirectory(etcdOptionsFromConfig(config, logger, state.leaseFile));
  let proxy: V2WebSocketProxy | null = null;
  const clientAddresses = ClientAddressPolicy.fromConfig(config);
  const trust = relayTrustFromConfig(config, directory);
  try {
    const instanceId = state.instanceId(config);
    await directory.start();
    const legacy = makeLegacy(directory, config, logger);
    const node = await startNode({
      config,
      logger,
      directory,
      instanceId,
      role: 'gateway',
      legacy,
      httpRoutes: (core, self) => {
        // Built before the listener starts: every carried half is counted as serve counts its own.
        legacy.observeWith?.(core.stats, core.limitHit);
        proxy = new V2WebSocketProxy({
          lookup: core.lookup,
          logger: subsystemLogger(logger, 'v2-proxy'),
          stats: core.stats,
          insecure: config.server.insecure,
          // Relays' certificates are checked as the hop's lanes check them: hop.caFile, else pinned from the directory.
          ...(trust ? { trust } : {}),
          ...(hopToken ? { hopToken: hopToken.value } : {}),
          // The client the gateway's own limits count, named to the relay in the hop preamble.
          clientAddress: (req) => clientAddresses.ofHttpRequest(req),
          // ...and the key its placements are metered under (directory.maxPlacementShare).
          limitKey: (address) => clientAddresses.limitKey(address),
        });
        const p = proxy;
        // WebSocket clients are told to dial this gateway: the relays may be out of a browser's reach.
        const viaGateway: RouteLookup = async (route, ask) => ({ ...(await core.lookup(route, ask)), address: self() });
        return { upgrade: (req, socket, head) => p.handleUpgrade(req, socket, head), lookup: viaGateway };
      },
    });
    return {
      ...node,
      stop: async (options) => {
        // node.stop stops accepting synchronously; then every carried call ends "server shutting down", as serve's do.
        const stopped = node.stop(options);
        legacy.shutdown?.();
        // Passed-through v2 WebSockets too: their clients re-dial now, and the exit does not wait on them.
        proxy?.close();
        await stopped.finally(() => state.release());
        legacy.close?.();
      },
    };
  } catch (err) {
    await directory.close().catch(() => undefined);
    state.release();
    throw err;
  }
}
