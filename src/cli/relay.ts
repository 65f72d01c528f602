/**
 * `hashmail relay`: one v2 relay of a cluster, registered in etcd. Flags
 * override environment variables, which override the config file, which
 * overrides the defaults. SIGTERM or SIGINT drains, then exits 0.
 */
import { BALANCER_USAGE, CLUSTER_FLAGS, clusterFlagLayers, loadCommandConfig, parseCommandFlags } from './flags.js';
import { startRelay } from '../compose/relay.js';
import { logFatal, runUntilStopped } from './server-process.js';
import { createLogger } from '../observe/logger.js';

export const RELAY_USAGE = `Usage: hashmail relay --etcd URL[,URL...] --listen HOST:PORT --advertise HOST:PORT[,HOST:PORT]
                      --admin-listen HOST:PORT [--insecure] [flags]

Runs one relay of a cluster: protocol v2 over gRPC and WebSocket on one public
port, the route lookups (gRPC ServerForMailbox, HTTP GET /v2/relay), registered
in etcd; /healthz, /readyz and /metrics on the admin port.

Flags:
  --etcd URL[,URL...]       etcd client URLs (config directory.etcdEndpoints, default http://127.0.0.1:2379)
  --listen HOST:PORT        public listener (config server.listen, default 0.0.0.0:8443)
  --advertise HOST:PORT[,HOST:PORT]
                            what clients dial to reach this relay; the first is given out
                            (config relay.advertise; default: the listen address, 127.0.0.1 for a wildcard host)
  --admin-listen HOST:PORT  /healthz, /readyz, /metrics (config server.adminListen, default 127.0.0.1:9090)
  --insecure                plain text: h2c and HTTP/1.1 on the port, no TLS (config server.insecure)
  --id ID                   instance id (config relay.instanceId; default: a random id kept in --data-dir)
  --data-dir DIR            the generated certificate; the instance id and lease ids in DIR/<role>-<host>-<port>
                            (config server.dataDir, default .data)
  --config FILE             JSON config file (see docs/configuration.md: directory.*, relay.*)
${BALANCER_USAGE}
  --log-level LEVEL         trace|debug|info|warn|error|fatal|silent (config log.level)
  -h, --help                this help

SIGTERM or SIGINT: drain (no new sessions; each session's parties are told to
move, UNAVAILABLE "relay draining: look up the session again", at random moments
within relay.drainSpreadMs), wait up to relay.drainDeadlineMs, revoke the lease,
exit 0.
SIGHUP: reload the TLS certificate and key (new connections get them; no session is dropped).
`;

export async function runRelay(argv: string[]): Promise<number> {
  const values = parseCommandFlags('relay', argv, CLUSTER_FLAGS, RELAY_USAGE);
  if (typeof values === 'number') return values;
  const config = loadCommandConfig('relay', values.config, clusterFlagLayers(values), (message) => logFatal(null, message));
  if (typeof config === 'number') return config;

  const logger = createLogger(config.log);
  return runUntilStopped({
    logger,
    start: () => startRelay(config, logger),
    serving: (node) => ({ id: node.id, advertise: node.advertised, tls: !config.server.insecure }),
    cluster: { drain: true },
  });
}
