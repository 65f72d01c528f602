/**
 * "One suite, two targets": the legacy v1 integration suites
 * (test/integration/legacy/*.ts) take a StartTarget and run unchanged
 * against `hashmail serve` (serveTarget) or against a cluster (clusterTarget:
 * real etcd, 3 relays, 2 gateways; every call goes through a gateway). A
 * target is started with the config the suite needs (applied to every
 * process) and stopped by the suite; stop() of a cluster SIGTERMs the
 * gateways first, so a suite's shutdown test sees the gateway's
 * "server shutting down", and returns the first gateway's exit code.
 */
import { startCluster } from './cluster.js';
import { startServer, type RunningServer, type ServerOptions } from './server.js';

/** What a legacy suite dials and inspects: the public address, the admin port (metrics, health), the logs. */
export type LegacyTarget = RunningServer;
export type StartTarget = (options?: ServerOptions) => Promise<LegacyTarget>;

export const CLUSTER_RELAYS = 3;
export const CLUSTER_GATEWAYS = 2;

export const serveTarget: StartTarget = (options) => startServer(options);

export const clusterTarget: StartTarget = async (options = {}) => {
  const cluster = await startCluster({
    relays: CLUSTER_RELAYS,
    gateways: CLUSTER_GATEWAYS,
    config: options.config as Record<string, Record<string, unknown>> | undefined,
  });
  const front = cluster.gateways[0];
  return {
    ...front,
    async stop(): Promise<number | null> {
      const code = await front.stop();
      await cluster.stop();
      return code;
    },
  };
};
