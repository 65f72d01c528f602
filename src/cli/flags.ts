/**
 * What every command (`serve`, `relay`, `gateway`, `status`, `phrase`) does with its argv
 * alike: strict parsing with --help, usage errors printed with the usage and
 * exit code 2, and the `server.*` flags they share.
 */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig } from '../config/load.js';
import type { Config } from '../config/schema.js';

type Options = NonNullable<ParseArgsConfig['options']>;
type Values = Record<string, string | boolean | undefined>;
const HELP = { help: { type: 'boolean', short: 'h' } } as const;
/** What parseArgs gives for `options` (strict, no positionals). */
export type ParsedFlags<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; strict: true; allowPositionals: false; options: O & typeof HELP }>>['values'];

/** The parsed flags, or the exit code when the command is over (0 after --help, 2 on a usage error). */
export function parseCommandFlags<O extends Options>(command: string, argv: string[], options: O, usage: string): ParsedFlags<O> | number {
  let values: ParsedFlags<O>;
  try {
    ({ values } = parseArgs({ args: argv, strict: true, allowPositionals: false, options: { ...options, ...HELP } }));
  } catch (err) {
    process.stderr.write(`hashmail ${command}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if ((values as Values).help) {
    process.stdout.write(usage);
    return 0;
  }
  return values;
}

/** What parseArgs gives for `options` with positionals allowed. */
export type ParsedArgs<O extends Options> = ReturnType<typeof parseArgs<{ args: string[]; strict: true; allowPositionals: true; options: O & typeof HELP }>>;

/** As parseCommandFlags, for commands that also take positional arguments (`hashmail phrase`). */
export function parseCommandArgs<O extends Options>(command: string, argv: string[], options: O, usage: string): ParsedArgs<O> | number {
  let parsed: ParsedArgs<O>;
  try {
    parsed = parseArgs({ args: argv, strict: true, allowPositionals: true, options: { ...options, ...HELP } });
  } catch (err) {
    process.stderr.write(`hashmail ${command}: ${(err as Error).message}\n\n${usage}`);
    return 2;
  }
  if ((parsed.values as Values).help) {
    process.stdout.write(usage);
    return 0;
  }
  return parsed;
}

/** `a, b,,c` -> ['a', 'b', 'c']. */
export function splitList(text: string): string[] {
  return text.split(',').map((s) => s.trim()).filter(Boolean);
}

/** The `server.*` layer of --listen, --admin-listen, --insecure, --data-dir and the BALANCER_FLAGS. */
export function serverFlags(values: Values): Record<string, unknown> {
  const server: Record<string, unknown> = {};
  if (typeof values.listen === 'string') server.listen = values.listen;
  if (typeof values['admin-listen'] === 'string') server.adminListen = values['admin-listen'];
  if (values.insecure === true) server.insecure = true;
  if (typeof values['data-dir'] === 'string') server.dataDir = values['data-dir'];
  if (values['trust-proxy'] === true) server.trustProxy = true;
  if (typeof values['client-address-from'] === 'string') server.clientAddressFrom = values['client-address-from'];
  if (typeof values['trusted-proxies'] === 'string') server.trustedProxies = splitList(values['trusted-proxies']);
  return server;
}

/** A balancer in front of the public port (serve, relay, gateway alike): where the client address comes from. */
export const BALANCER_FLAGS = {
  'trust-proxy': { type: 'boolean' },
  'client-address-from': { type: 'string' },
  'trusted-proxies': { type: 'string' },
} as const;

/** The usage lines of BALANCER_FLAGS. */
export const BALANCER_USAGE = `  --trust-proxy             a balancer is in front: take the client address from it (config server.trustProxy)
  --client-address-from SRC proxy-protocol (default: PROXY v1/v2 header, X-Forwarded-For ignored) or
                            x-forwarded-for (from --trusted-proxies only, PROXY headers refused)
                            (config server.clientAddressFrom)
  --trusted-proxies CIDR[,CIDR...]
                            balancer IPs/CIDRs, v4 or v6 (config server.trustedProxies)`;

/** The flags `relay` and `gateway` share: the server.* ones, etcd, identity, config and log level. */
export const CLUSTER_FLAGS = {
  etcd: { type: 'string' },
  listen: { type: 'string' },
  advertise: { type: 'string' },
  'admin-listen': { type: 'string' },
  insecure: { type: 'boolean' },
  id: { type: 'string' },
  'data-dir': { type: 'string' },
  config: { type: 'string' },
  'log-level': { type: 'string' },
  ...BALANCER_FLAGS,
} as const;

/** The config layers of CLUSTER_FLAGS: server.*, relay.advertise / instanceId, the etcd directory, log.level. */
export function clusterFlagLayers(values: Values): Record<string, Record<string, unknown>> {
  const relay: Record<string, unknown> = {};
  if (typeof values.advertise === 'string') relay.advertise = splitList(values.advertise);
  if (typeof values.id === 'string') relay.instanceId = values.id;
  const directory: Record<string, unknown> = { backend: 'etcd' };
  if (typeof values.etcd === 'string') directory.etcdEndpoints = splitList(values.etcd);
  return { server: serverFlags(values), relay, directory, ...logLevelLayer(values) };
}

/** The log.level layer of --log-level (empty without it). */
export function logLevelLayer(values: Values): Record<string, Record<string, unknown>> {
  return typeof values['log-level'] === 'string' ? { log: { level: values['log-level'] } } : {};
}

/** The validated Config from the file, environment and flag layers, or exit code 2 with the error on stderr. */
export function loadCommandConfig(
  command: string,
  file: string | undefined,
  flags: Record<string, Record<string, unknown>>,
  /** Also reports the error elsewhere (servers: the log stream). */
  onError?: (message: string) => void,
): Config | number {
  try {
    return loadConfig({ file, flags });
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`hashmail ${command}: ${err.message}\n`);
      onError?.(`hashmail ${command}: ${err.message}`);
      return 2;
    }
    throw err;
  }
}
