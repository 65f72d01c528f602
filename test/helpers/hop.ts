/**
 * The gateway's end of the hop in the test process: a RemoteLegacyMailbox on
 * a lookup-only etcd directory member and a RelayPool, driven directly (no
 * gateway process). Reads and writes through the LegacyOperations halves,
 * every wait bounded.
 */
import http from 'node:http';
import type { Duplex } from 'node:stream';
import { pino } from 'pino';
import { ensureClusterSecret } from '../../src/directory/etcd/cluster-secret.js';
import { EtcdRpc } from '../../src/directory/etcd/etcd-rpc.js';
import type { Directory } from '../../src/directory/directory.js';
import type { EtcdDirectory } from '../../src/directory/etcd/etcd-directory.js';
import { RemoteLegacyMailbox } from '../../src/gateway/remote-legacy-mailbox.js';
import { RelayPool, type RelayPoolOptions } from '../../src/gateway/relay-pool.js';
import { RelayStats } from '../../src/observe/stats.js';
import type { CallInfo, LegacyReceive, LegacySend } from '../../src/relay/legacy-operations.js';
import { decodeHopFrame, type HopFrame } from '../../src/transport/hop/frame.js';
import { HopToken } from '../../src/transport/hop/hop-token.js';
import { parseHostPort } from '../../src/config/host-port.js';
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

/**
 * `pool` may be built from the gateway's directory (a RelayTrust that pins
 * from it); `wrap` may stand in for the directory the mailbox sees (e.g.
 * one whose view is behind).
 */
export async function testGateway(
  endpoints: string[],
  pool: Partial<RelayPoolOptions> | ((directory: EtcdDirectory) => Partial<RelayPoolOptions>) = {},
  token?: HopToken,
  wrap: (d: EtcdDirectory) => Directory = (d) => d,
): Promise<TestGateway> {
  const directory = await member(endpoints, null);
  const relayPool = new RelayPool({
    streamsPerConnection: 1000,
    maxConnectionsPerRelay: 64,
    idleConnectionMs: 60_000,
    tls: null,
    ...(typeof pool === 'function' ? pool(directory) : pool),
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

/** A lane opened by hand (a gateway that breaks the contract): raw frames in, decoded frames out. */
export interface RawLane {
  /** The relay's answer when it refused the upgrade (status, body); null once upgraded. */
  refused: { status: number; body: string } | null;
  /** Sends `frame` with its length prefix; `length` overrides the prefix (a lie). */
  send(frame: Buffer, length?: number): void;
  /** The first frame of `kind` for `half` received so far or next. */
  frame(half: number, kind: number): Promise<HopFrame>;
  /** Sends `bytes` as they are (frames with their length prefixes, in one write). */
  sendRaw(bytes: Buffer): void;
  /** Frames of `kind` for `half` received so far. */
  count(half: number, kind: number): number;
  /** Stops reading the connection (a gateway that takes nothing), and starts again. */
  pause(): void;
  resume(): void;
  /** The connection closed. */
  closed: Promise<void>;
  close(): void;
}

/** Opens a lane to `address` presenting `token` (null: no token header) and `upgrade` as the protocol. */
export function openRawLane(address: string, token: string | null, upgrade = 'hashmail-hop-lane'): Promise<RawLane> {
  const { host, port } = parseHostPort(address);
  const headers: Record<string, string> = { Connection: 'Upgrade', Upgrade: upgrade };
  if (token !== null) headers['hashmail-hop-token'] = token;
  return withTimeout(
    new Promise<RawLane>((resolve, reject) => {
      const req = http.request({ host, port, path: '/hop/v1/lane', headers, agent: false });
      req.on('error', reject);
      req.on('response', (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ refused: { status: res.statusCode ?? 0, body }, send: () => undefined, frame: () => Promise.reject(new Error('refused')), sendRaw: () => undefined, count: () => 0, pause: () => undefined, resume: () => undefined, closed: Promise.resolve(), close: () => undefined }));
      });
      req.on('upgrade', (_res, socket: Duplex, head: Buffer) => {
        const frames: HopFrame[] = [];
        let waiter: (() => void) | null = null;
        let pending = head;
        socket.on('data', (chunk: Buffer) => {
          pending = Buffer.concat([pending, chunk]);
          while (pending.length >= 4 && pending.length >= 4 + pending.readUInt32BE(0)) {
            const n = pending.readUInt32BE(0);
            frames.push(decodeHopFrame(pending.subarray(4, 4 + n)));
            pending = pending.subarray(4 + n);
          }
          waiter?.();
        });
        const closed = new Promise<void>((r) => socket.once('close', () => r()));
        void closed.then(() => waiter?.());
        resolve({
          refused: null,
          send: (frame, length = frame.length) => {
            const head4 = Buffer.alloc(4);
            head4.writeUInt32BE(length, 0);
            socket.write(Buffer.concat([head4, frame]));
          },
          frame: async (half, kind) => {
            for (let i = 0; i < 1000; i++) {
              const f = frames.find((x) => x.half === half && x.kind === kind);
              if (f) return f;
              await withTimeout(new Promise<void>((r) => (waiter = r)), HOP_WAIT_MS, `frame ${kind} of half ${half}`);
            }
            throw new Error('frame never came');
          },
          sendRaw: (bytes) => socket.write(bytes),
          count: (half, kind) => frames.filter((x) => x.half === half && x.kind === kind).length,
          pause: () => socket.pause(),
          resume: () => socket.resume(),
          closed,
          close: () => socket.destroy(),
        });
      });
      req.end();
    }),
    HOP_WAIT_MS,
    'lane upgrade',
  );
}
