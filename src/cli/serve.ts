/**
 * `hashmail serve`: the single-node mailbox (relay + legacy gateway +
 * in-memory directory). Flags override environment variables, which
 * override the config file, which overrides the defaults.
 */
import { BALANCER_FLAGS, BALANCER_USAGE, loadCommandConfig, logLevelLayer, parseCommandFlags, serverFlags } from './flags.js';
import { createLogger } from '../observe/logger.js';
import { startServe } from '../compose/serve.js';
import { logFatal, runUntilStopped } from './server-process.js';

export const SERVE_USAGE = `Usage: hashmail serve [flags]

Runs the whole mailbox in one process: gRPC hashmailrpc.HashMail and the
REST/WebSocket gateway on one public port, health and metrics on the admin port.

Flags:
  --listen HOST:PORT        public listener (config server.listen, default 0.0.0.0:8443)
  --admin-listen HOST:PORT  /healthz, /readyz, /metrics (config server.adminListen, default 127.0.0.1:9090)
  --insecure                plain text: h2c and HTTP/1.1 on the port, no TLS (config server.insecure)
  --data-dir DIR            state kept across restarts, e.g. the generated certificate (config server.dataDir, default .data)
  --config FILE             JSON config file (see config/hashmail.json and docs/configuration.md)
${BALANCER_USAGE}
  --log-level LEVEL         trace|debug|info|warn|error|fatal|silent (config log.level)
  -h, --help                this help

Every config key can also be set by environment variable, e.g.
HASHMAIL_LIMITS__MAX_BOXES=500000 (see docs/configuration.md).
SIGTERM or SIGINT: every stream ends with UNAVAILABLE "server shutting down", then the process exits.
SIGHUP: reload the TLS certificate and key (new connections get them; no session is dropped).
`;

export async function runServe(argv: string[]): Promise<number> {
  const values = parseCommandFlags('serve', argv, {
    listen: { type: 'string' },
    'admin-listen': { type: 'string' },
    insecure: { type: 'boolean' },
    'data-dir': { type: 'string' },
    config: { type: 'string' },
    ...BALANCER_FLAGS,
    'log-level': { type: 'string' },
  }, SERVE_USAGE);
  if (typeof values === 'number') return values;
  const server = serverFlags(values);
  const flags: Record<string, Record<string, unknown>> = { server, ...logLevelLayer(values) };

  const config = loadCommandConfig('serve', values.config, flags, (message) => logFatal(null, message));
  if (typeof config === 'number') return config;

  const logger = createLogger(config.log);
  return runUntilStopped({ logger, start: () => startServe(config, logger), serving: () => ({ tls: !config.server.insecure }) });
}
