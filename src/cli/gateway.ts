/**
 * `hashmail gateway`: the public front door of a cluster, registered in etcd
 * with role 'gateway'. Flags override environment variables, which override
 * the config file, which overrides the defaults. SIGTERM or SIGINT: every
 * stream ends with UNAVAILABLE "server shutting down", the registration is
 * revoked, exit 0.
 */
import { loadCommandConfig, parseCommandFlags, serverFlags, splitList } from './flags.js';
import { hopLegacy, startGateway } from '../compose/gateway.js';
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
  --data-dir DIR            the instance id, lease ids and generated certificate (config server.dataDir, default .data)
  --config FILE             JSON config file (see docs/configuration.md)
  --log-level LEVEL         trace|debug|info|warn|error|fatal|silent (config log.level)
  -h, --help                this help

SIGTERM or SIGINT: every stream ends with UNAVAILABLE "server shutting down",
the registration is revoked, exit 0.
`;

export async function runGateway(argv: string[]): Promise<number> {
  const values = parseCommandFlags('gateway', argv, {
    etcd: { type: 'string' },
    listen: { type: 'string' },
    'admin-listen': { type: 'string' },
    insecure: { type: 'boolean' },
    advertise: { type: 'string' },
    id: { type: 'string' },
    'data-dir': { type: 'string' },
    config: { type: 'string' },
    'log-level': { type: 'string' },
  }, GATEWAY_USAGE);
  if (typeof values === 'number') return values;
  const server = serverFlags(values);
  const relay: Record<string, unknown> = {};
  if (values.advertise !== undefined) relay.advertise = splitList(values.advertise);
  if (values.id !== undefined) relay.instanceId = values.id;
  const directory: Record<string, unknown> = { backend: 'etcd' };
  if (values.etcd !== undefined) directory.etcdEndpoints = splitList(values.etcd);
  const flags: Record<string, Record<string, unknown>> = { server, relay, directory };
  if (values['log-level'] !== undefined) flags.log = { level: values['log-level'] };

  const config = loadCommandConfig('gateway', values.config, flags);
  if (typeof config === 'number') return config;

  const logger = createLogger(config.log);
  // The hop token (hop.tokenFile, else the cluster secret in etcd) before anything is served.
  const token = await resolveHopToken(config, logger);
  const node = await startGateway(config, logger, hopLegacy(token));
  logger.info({ listen: node.listen, adminListen: node.adminListen, id: node.id, advertise: node.advertised, tls: !config.server.insecure }, 'serving');

  await new Promise<void>((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      logger.info({ signal }, 'shutting down');
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      resolve();
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
  await node.stop({ revoke: true });
  logger.info('stopped');
  logger.flush();
  return 0;
}
