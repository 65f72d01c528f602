/**
 * "One suite, two targets": the legacy v1 integration suites
 * (test/integration/legacy/*.ts) take a StartTarget and run unchanged
 * against `hashmail serve` (serveTarget) or against a cluster (clusterTarget:
 * real etcd, 3 relays, 2 gateways; every call goes through a gateway). A
 * target is started with the config the suite needs (applied to every
 * process) and stopped by the suite; stop() of a cluster SIGTERMs the
 * gateways first, so a suite's shutdown test sees the gateway's
 * "server shutting down", and returns the first gateway's exit code.
 *
 * What only serve has in one process, the cluster target assembles from its
 * parts, never weakening what a suite asserts:
 * - the mailbox gauges (hashmail_mailbox_*: boxes and sessions) live at the
 *   relays that own the boxes, so the target's /metrics reports their sum
 *   over the relays in place of the gateway's own (always 0);
 * - a v2 party goes where a v2 client goes (v2Dial): over WebSocket through
 *   the gateway with `?route=` (the pass-through), over gRPC to the owning
 *   relay named by ServerForMailbox at the gateway.
 */
import { routeOfSid } from '../../src/directory/route.js';
import { startCluster, type Cluster } from './cluster.js';
import { grpcLookup } from './lookup.js';
import { startServer, type RunningServer, type ServerOptions } from './server.js';
import { grpcParty, V2_WS_PATH, wsParty, type V2Party } from './v2-peers.js';

/** What a legacy suite dials and inspects: the public address, the admin port (metrics, health), the logs. */
export interface LegacyTarget extends RunningServer {
  /** Opens a v2 party for the session of `sid` where a v2 client would (unattached: the suite sends Hello). */
  v2Dial(kind: 'grpc' | 'ws', sid: Uint8Array): Promise<V2Party>;
}
export type StartTarget = (options?: ServerOptions) => Promise<LegacyTarget>;

export const CLUSTER_RELAYS = 3;
export const CLUSTER_GATEWAYS = 2;

/** Gauges kept by whoever owns the boxes: in a cluster, the relays. */
const RELAY_OWNED_METRIC = /^hashmail_mailbox_[a-z_]+$/;

export const serveTarget: StartTarget = async (options) => {
  const server = await startServer(options);
  return { ...server, v2Dial: (kind) => (kind === 'grpc' ? Promise.resolve(grpcParty(server.address)) : wsParty(server.port)) };
};

/** The sample lines of `body` whose metric name (before labels) matches. */
function sampleName(line: string): string {
  const end = line.search(/[{ ]/);
  return end < 0 ? line : line.slice(0, end);
}

/** The relays' mailbox gauges summed per sample (name and labels). */
async function relaySums(cluster: Cluster): Promise<Map<string, number>> {
  const sums = new Map<string, number>();
  for (const relay of cluster.relays) {
    if (relay.process.exitCode !== null || relay.process.signalCode !== null) continue;
    const { body } = await relay.admin('/metrics');
    for (const line of body.split('\n')) {
      if (line.startsWith('#') || !RELAY_OWNED_METRIC.test(sampleName(line))) continue;
      const at = line.lastIndexOf(' ');
      const key = line.slice(0, at);
      sums.set(key, (sums.get(key) ?? 0) + Number(line.slice(at + 1)));
    }
  }
  return sums;
}

export const clusterTarget: StartTarget = async (options = {}) => {
  const cluster = await startCluster({
    relays: CLUSTER_RELAYS,
    gateways: CLUSTER_GATEWAYS,
    config: options.config as Record<string, Record<string, unknown>> | undefined,
    ...(options.insecure === false ? { insecure: false } : {}),
  });
  const front = cluster.gateways[0];
  const admin = async (path: string): Promise<{ status: number; body: string }> => {
    const res = await front.admin(path);
    if (path !== '/metrics' || res.status !== 200) return res;
    const sums = await relaySums(cluster);
    const own = res.body.split('\n').filter((line) => line.startsWith('#') || !RELAY_OWNED_METRIC.test(sampleName(line)));
    const relays = [...sums].map(([key, value]) => `${key} ${value}`);
    return { status: res.status, body: [...own, ...relays].join('\n') };
  };
  return {
    ...front,
    admin,
    async metric(name: string): Promise<number | undefined> {
      const { body } = await admin('/metrics');
      for (const line of body.split('\n')) {
        if (line.startsWith(`${name} `)) return Number(line.slice(name.length + 1));
      }
      return undefined;
    },
    async v2Dial(kind, sid) {
      const route = routeOfSid(sid);
      if (kind === 'ws') return wsParty(front.port, { path: `${V2_WS_PATH}?route=${route}` });
      const answer = await grpcLookup(front.address, route, true);
      if (!answer.ok) throw new Error(`ServerForMailbox at the gateway: ${answer.code} ${answer.details}`);
      return grpcParty(answer.owner.address);
    },
    async stop(): Promise<number | null> {
      const code = await front.stop();
      await cluster.stop();
      return code;
    },
  };
};
