/**
 * The gateway's end of the hop in the test process: a RemoteLegacyMailbox on
 * a lookup-only etcd directory member and a RelayPool, driven directly (no
 * gateway process). Reads and writes through the LegacyOperations halves,
 * every wait bounded.
 */
import { pino } from 'pino';
import { ensureClusterSecret } from '../../src/directory/etcd/cluster-secret.js';
import { EtcdRpc } from '../../src/directory/etcd/etcd-rpc.js';
import type { Directory } from '../../src/directory/directory.js';
import type { EtcdDirectory } from '../../src/directory/etcd/etcd-directory.js';
import { RemoteLegacyMailbox } from '../../src/gateway/remote-legacy-mailbox.js';
import { RelayPool, type RelayPoolOptions } from '../../src/gateway/relay-pool.js';
import { RelayStats } from '../../src/observe/stats.js';
import type { CallInfo, LegacyReceive, LegacySend } from '../../src/relay/legacy-operations.js';
import { HopToken } from '../../src/transport/grpc-hop/hop-token.js';
import { withTimeout } from './async-queue.js';
import { directoryOptions, member } from './etcd-directory.js';

export const HOP_WAIT_MS = 10_000;
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;

export interface TestGateway {
  mailbox: RemoteLegacyMailbox;
  pool: RelayPool;
  directory: EtcdDirectory;
  stats: RelayStats;
  close(): Promise<void>;
}

/** The cluster's hop token, as a gateway reads it from etcd (the relays created it). */
export async function clusterHopToken(endpoints: string[]): Promise<HopToken> {
  const options = directoryOptions(endpoints);
  const rpc = new EtcdRpc(options, options.callTimeoutMs);
  try {
    return new HopToken(await ensureClusterSecret(rpc, options.prefix, 'hop-token'));
  } finally {
    rpc.close();
  }
}

/** `wrap` may stand in for the directory the mailbox sees (e.g. one whose view is behind). */
export async function testGateway(
  endpoints: string[],
  pool: Partial<RelayPoolOptions> = {},
  token?: HopToken,
  wrap: (d: EtcdDirectory) => Directory = (d) => d,
): Promise<TestGateway> {
  const directory = await member(endpoints, null);
  const relayPool = new RelayPool({
    streamsPerConnection: 1000,
    maxConnectionsPerRelay: 64,
    idleConnectionMs: 60_000,
    tls: null,
    maxMessageBytes: MAX_MESSAGE_BYTES,
    ...pool,
  });
  const stats = new RelayStats();
  const mailbox = new RemoteLegacyMailbox({
    directory: wrap(directory),
    pool: relayPool,
    token: token ?? (await clusterHopToken(endpoints)),
    logger: pino({ level: process.env.TEST_LOG_LEVEL ?? 'silent' }),
    maxMessageBytes: MAX_MESSAGE_BYTES,
    windowBytes: 262_144,
    stats,
  });
  return {
    mailbox,
    pool: relayPool,
    directory,
    stats,
    async close() {
      relayPool.close();
      await directory.close();
    },
  };
}

export function callFrom(address: string, transport: CallInfo['transport'] = 'grpc'): CallInfo {
  return { transport, address };
}

/** The next message of a receive half (take + whenReadable, settled at once). */
export function readOne(half: LegacyReceive, timeoutMs = HOP_WAIT_MS): Promise<Buffer> {
  const next = new Promise<Buffer>((resolve, reject) => {
    const attempt = (cancelled?: Error): void => {
      if (cancelled) return reject(cancelled);
      try {
        const msg = half.take();
        if (msg === undefined) return half.whenReadable(attempt);
        half.settle(msg.length);
        resolve(msg);
      } catch (err) {
        reject(err as Error);
      }
    };
    attempt();
  });
  return withTimeout(next, timeoutMs, 'hop message');
}

/** Writes every message with the half's backpressure. */
export async function writeAll(half: LegacySend, messages: readonly Buffer[]): Promise<void> {
  for (const msg of messages) await half.write(msg);
}

/** The error the half's onBoxClosed reports. */
export function boxClosed(half: LegacyReceive | LegacySend, timeoutMs = HOP_WAIT_MS): Promise<Error> {
  return withTimeout(new Promise<Error>((resolve) => half.onBoxClosed(resolve)), timeoutMs, 'onBoxClosed');
}
