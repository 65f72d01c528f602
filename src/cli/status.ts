/**
 * `hashmail status`: the cluster as an operator sees it: instances (relays
 * and gateways, with their role),
 * addresses, load, draining, session counts, lease age, etcd health. Human
 * table by default; `--json` prints exactly one JSON object. Exits 1 (with a
 * message on stderr) when no etcd endpoint answers within
 * directory.callTimeoutMs.
 */
import { loadCommandConfig, parseCommandFlags, splitList } from './flags.js';
import { DirectoryUnavailableError } from '../directory/directory.js';
import { clusterStatus, type ClusterStatus } from '../directory/etcd/cluster-status.js';
import { etcdOptionsFromConfig } from '../directory/etcd/etcd-options.js';
import { createLogger } from '../observe/logger.js';

export const STATUS_USAGE = `Usage: hashmail status --etcd URL[,URL...] [--json] [--prefix P]

Shows the cluster: every registered relay and gateway (id, role, address,
published sessions and connections, draining, session mappings in etcd, lease
age and TTL left) and the health of each etcd endpoint (reachable, version,
leader, DB size).

Flags:
  --etcd URL[,URL...]  etcd client URLs (config directory.etcdEndpoints)
  --prefix P           key prefix in etcd (config directory.prefix, default /hashmail/)
  --json               one JSON object: {"instances": [...], "etcd": {...}}
  --config FILE        JSON config file (etcd TLS, auth, callTimeoutMs)
  -h, --help           this help

Exit status: 0 when etcd answered, 1 when no etcd endpoint is reachable, 2 on a usage error.
`;

export async function runStatus(argv: string[]): Promise<number> {
  const values = parseCommandFlags('status', argv, {
    etcd: { type: 'string' },
    prefix: { type: 'string' },
    json: { type: 'boolean' },
    config: { type: 'string' },
  }, STATUS_USAGE);
  if (typeof values === 'number') return values;
  const directory: Record<string, unknown> = {};
  if (values.etcd !== undefined) directory.etcdEndpoints = splitList(values.etcd);
  if (values.prefix !== undefined) directory.prefix = values.prefix;
  const config = loadCommandConfig('status', values.config, { directory, log: { level: 'silent' } });
  if (typeof config === 'number') return config;
  const options = etcdOptionsFromConfig(config, createLogger({ level: 'silent', format: 'json' }));
  let status: ClusterStatus;
  try {
    status = await clusterStatus(options);
  } catch (err) {
    const reason = err instanceof DirectoryUnavailableError ? err.reason : err instanceof Error ? err.message : String(err);
    process.stderr.write(`hashmail status: etcd unreachable (${options.endpoints.join(',')}): ${reason}\n`);
    return 1;
  }
  process.stdout.write(values.json ? `${JSON.stringify(status)}\n` : renderTable(status));
  return 0;
}

function renderTable(status: ClusterStatus): string {
  const header = ['ID', 'ROLE', 'ADDRESS', 'SESSIONS', 'MAPPED', 'CONNS', 'DRAINING', 'LEASE AGE', 'TTL LEFT', 'VERSION'];
  const rows = status.instances.map((i) => [
    i.id,
    i.role,
    i.address,
    String(i.sessions),
    String(i.mappedSessions),
    String(i.connections),
    i.draining ? 'yes' : 'no',
    i.leaseAgeMs === null ? '-' : `${(i.leaseAgeMs / 1000).toFixed(0)}s`,
    i.leaseRemainingSeconds === null ? '-' : `${i.leaseRemainingSeconds}s`,
    i.version,
  ]);
  const etcdHeader = ['ENDPOINT', 'REACHABLE', 'VERSION', 'LEADER', 'DB SIZE', 'ERROR'];
  const etcdRows = status.etcd.endpoints.map((e) => [
    e.endpoint,
    e.reachable ? 'yes' : 'no',
    e.version ?? '-',
    e.reachable ? (e.isLeader ? 'leader' : 'follower') : '-',
    e.dbSize === undefined ? '-' : `${(e.dbSize / 1024 / 1024).toFixed(1)} MiB`,
    e.error ?? '',
  ]);
  const instances = status.instances.length === 0 ? 'no relay or gateway registered\n' : table(header, rows);
  return `${instances}\n${table(etcdHeader, etcdRows)}\n${status.etcd.sessionKeys} session mappings, etcd ${status.etcd.reachable}/${status.etcd.total} endpoints reachable\n`;
}

function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (cells: string[]): string => cells.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd();
  return `${[line(header), ...rows.map(line)].join('\n')}\n`;
}
