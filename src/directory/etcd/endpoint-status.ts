/**
 * Health of each etcd endpoint, asked one by one (not through the pool, which
 * would answer for whichever member it picked): reachable, version, DB size,
 * leader, raft term. For `hashmail status` and the cluster tests.
 */
import { Etcd3 } from 'etcd3';
import type { EtcdDirectoryOptions } from './etcd-options.js';
import { etcd3Options } from './etcd-rpc.js';

export interface EndpointStatus {
  endpoint: string;
  reachable: boolean;
  version?: string;
  dbSize?: number;
  /** Member id of this endpoint and of the leader it knows (hex). */
  memberId?: string;
  leader?: string;
  isLeader?: boolean;
  raftTerm?: string;
  raftIndex?: string;
  error?: string;
}

function hex(decimal: string): string {
  return BigInt(decimal).toString(16);
}

export async function endpointStatus(options: Pick<EtcdDirectoryOptions, 'auth' | 'tls'>, endpoint: string, timeoutMs: number): Promise<EndpointStatus> {
  const client = new Etcd3(etcd3Options({ ...options, endpoints: [endpoint] }, timeoutMs));
  let timer: NodeJS.Timeout | undefined;
  try {
    const late = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
    });
    const s = await Promise.race([client.maintenance.status({ deadline: Date.now() + timeoutMs }), late]);
    const memberId = hex(s.header.member_id);
    const leader = hex(s.leader);
    return {
      endpoint,
      reachable: true,
      version: s.version,
      dbSize: Number(s.dbSize),
      memberId,
      leader,
      isLeader: memberId === leader,
      raftTerm: s.raftTerm,
      raftIndex: s.raftIndex,
    };
  } catch (err) {
    return { endpoint, reachable: false, error: err instanceof Error ? err.message : String(err) };
  } finally {
    clearTimeout(timer);
    client.close();
  }
}

export function allEndpointStatus(options: Pick<EtcdDirectoryOptions, 'endpoints' | 'auth' | 'tls'>, timeoutMs: number): Promise<EndpointStatus[]> {
  return Promise.all(options.endpoints.map((e) => endpointStatus(options, e, timeoutMs)));
}
