/**
 * `hashmail gateway`: the public front door of a cluster, registered in etcd
 * with role 'gateway'. Flags override environment variables, which override
 * the config file, which overrides the defaults. SIGTERM or SIGINT: every
 * stream ends with UNAVAILABLE "server shutting down", the registration is
 * revoked, exit 0. SIGHUP reloads the TLS certificate and key, as `serve`
 * and `relay` do.
 */
import { BALANCER_USAGE, CLUSTER_FLAGS, clusterFlagLayers, loadCommandConfig, parseCommandFlags } from './flags.js';
import { hopLegacy, startGateway } from '../compose/gateway.js';
import { logFatal, runUntilStopped } from './server-process.js';
import { resolveHopToken } from '../compose/hop-token.js';
import { createLogger } from '../observe/logger.js';

export const GATEWAY_USAGE = `Usage: hashmail gateway --etcd URL[,URL...] --listen HOST:PORT --admin-listen HOST:PORT [--insecure] [flags]

Runs one gateway of a cluster: the legacy surface of 'hashmail serve' (gRPC
hashmailrpc.HashMail, REST, WebSocket v1) on one public port, each call
carried to the relay that owns its session; v2 gRPC clients are answered with
the owning relay's address; v2 WebSockets with ?route=ROUTE are passed through
to it. Registered in etcd as a gateway (never placed on); /healthz, /readyz
and /metrics on the admin port.

Flags:
  --etcd URL[,URL...]       etcd client URLs (config directory.etcdEndpoints, default http://127.0.0.1:2379)
  --listen HOST:PORT        public listener (config server.listen, default 0.0.0.0:8443)
  --admin-listen HOST:PORT  /healthz, /readyz, /metrics (config server.adminListen, default 127.0.0.1:9090)
  --insecure                plain text: h2c and HTTP/1.1 on the port, no TLS, and plain text to the relays
                            (config server.insecure)
  --advertise HOST:PORT[,HOST:PORT]
                            what WebSocket clients are told to dial for this gateway (config relay.advertise;
                            default: the listen address, 127.0.0.1 for a wildcard host)
  --id ID                   instance id (config relay.instanceId; default: a random id kept in --data-dir)
  --data-dir DIR            the generated certificate; the instance id and lease ids in DIR/<role>-<host>-<port>
                            (config server.dataDir, default .data)
  --config FILE             JSON config file (see docs/configuration.md)
${BALANCER_USAGE}
  --log-level LEVEL         trace|debug|info|warn|error|fatal|silent (config log.level)
  -h, --help                this help

SIGTERM or SIGINT: every stream ends with UNAVAILABLE "server shutting down",
the registration is revoked, exit 0.
SIGHUP: reload the TLS certificate and key (new connections get them; no session is dropped).
`;

export async function runGateway(argv: string[]): Promise<number> {
  const values = parseCommandFlags('gateway', argv, CLUSTER_FLAGS, GATEWAY_USAGE);
  if (typeof values === 'number') return values;
  const config = loadCommandConfig('gateway', values.config, clusterFlagLayers(values), (message) => logFatal(null, message));
  if (typeof config === 'number') return config;

  const logger = createLogger(config.log);
  return runUntilStopped({
    logger,
    start: async () => {
      // The hop token (hop.tokenFile, else the cluster secret in etcd) before anything is served.
      const token = await resolveHopToken(config, logger);
      return startGateway(config, logger, hopLegacy(token), token);
    },
    serving: (node) => ({ id: node.id, advertise: node.advertised, tls: !config.server.insecure }),
    cluster: { drain: false },
  });
}
