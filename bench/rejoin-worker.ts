/**
 * A child process holding client-library sessions (node over gRPC, app over
 * WebSocket, protocol v2) against a cluster, for bench/rejoin.ts. On 'arm' it
 * records, per session, when both parties re-attached after the relay's death
 * (`reconnected`) and when a probe sent each way afterwards arrived. Driven
 * over IPC; exits with its parent.
 */
import { randomBytes } from 'node:crypto';
import { connect, type MailboxConnection } from '../src/client/index.js';
import { runBounded } from './stats.js';

export type RejoinCommand =
  /** `rotate`: each pair asks the instances starting from the next one in turn (both parties of a pair alike), as a balanced address would spread them; else all from the first. */
  | { op: 'open'; servers: string[]; count: number; concurrency: number; rotate: boolean }
  | { op: 'arm' }
  | { op: 'collect'; timeoutMs: number }
  | { op: 'close' };

export interface SessionRejoin {
  /** Both parties emitted `reconnected` (epoch ms). */
  attachedAt: number;
  /** The probes sent each way after that both arrived (epoch ms). */
  relayingAt: number;
}

export type RejoinReply =
  | { op: 'ready' }
  | { op: 'opened'; held: number; failed: number; errors: string[] }
  | { op: 'armed' }
  | { op: 'collected'; rejoins: SessionRejoin[]; missing: number; errors: string[] };

const PROBE = new TextEncoder().encode('probe');

// tsx maps every stack trace through source maps, which an application on the built package does not:
// under a reconnect storm (an error per failed attempt) that alone took 7 % of this process.
process.setSourceMapsEnabled(false);

interface Pair {
  node: MailboxConnection;
  app: MailboxConnection;
  node$: AsyncIterator<Uint8Array>;
  app$: AsyncIterator<Uint8Array>;
  done: Promise<SessionRejoin> | null;
}

const pairs: Pair[] = [];
let tracedPairs = 0;
/** Pairs opened so far, for --lookup-spread rotate. */
let rotated = 0;

function reply(msg: RejoinReply): void {
  process.send?.(msg);
}

async function exchange(p: Pair): Promise<void> {
  await p.app.send(PROBE);
  await p.node$.next();
  await p.node.send(PROBE);
  await p.app$.next();
}

async function openPair(servers: string[]): Promise<Pair> {
  const nodeSid = randomBytes(64);
  const appSid = Buffer.from(nodeSid);
  appSid[63] ^= 1;
  const base = { server: servers, insecure: true, protocol: 'v2' as const };
  const node = await connect({ ...base, sid: nodeSid, role: 'node', transport: 'grpc' });
  const app = await connect({ ...base, sid: appSid, role: 'app', transport: 'websocket' });
  // REJOIN_TRACE=1: the reconnect events of the first pairs opened, on stderr (which attempt failed how, where it dialed).
  if (process.env.REJOIN_TRACE && tracedPairs < 4) {
    const id = `${process.pid}.${tracedPairs++}`;
    for (const [name, c] of [[`node ${id}`, node], [`app ${id}`, app]] as const) {
      c.on('reconnecting', (i) => console.error(`TRACE ${Date.now()} ${process.pid} ${name} reconnecting attempt=${i.attempt} delay=${Math.round(i.delayMs)} error=${i.error.name}: ${i.error.message}`));
      c.on('dial', (i) => console.error(`TRACE ${Date.now()} ${process.pid} ${name} dial ${i.relay} via=${i.via} lookup=${i.lookupServer ?? ''}`));
      c.on('reconnected', () => console.error(`TRACE ${Date.now()} ${process.pid} ${name} reconnected`));
    }
  }
  const p: Pair = { node, app, node$: node[Symbol.asyncIterator](), app$: app[Symbol.asyncIterator](), done: null };
  await exchange(p);
  return p;
}

function arm(p: Pair): Promise<SessionRejoin> {
  const once = (c: MailboxConnection): Promise<number> => new Promise((resolve) => c.once('reconnected', () => resolve(Date.now())));
  return Promise.all([once(p.node), once(p.app)]).then(async ([a, b]) => {
    const attachedAt = Math.max(a, b);
    await exchange(p);
    return { attachedAt, relayingAt: Date.now() };
  });
}

process.on('message', (cmd: RejoinCommand) => {
  void (async () => {
    if (cmd.op === 'open') {
      const errors = await runBounded(cmd.count, cmd.concurrency, async () => {
        const turn = rotated++ % cmd.servers.length;
        pairs.push(await openPair(cmd.rotate ? [...cmd.servers.slice(turn), ...cmd.servers.slice(0, turn)] : cmd.servers));
      });
      reply({ op: 'opened', held: pairs.length, failed: errors.length, errors: [...new Set(errors.map((e) => e.message))].slice(0, 5) });
    } else if (cmd.op === 'arm') {
      for (const p of pairs) p.done = arm(p);
      reply({ op: 'armed' });
    } else if (cmd.op === 'collect') {
      const rejoins: SessionRejoin[] = [];
      const errors: string[] = [];
      const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), cmd.timeoutMs));
      await Promise.all(
        pairs.map(async (p) => {
          const r = await Promise.race([p.done ?? Promise.resolve('timeout' as const), deadline]).catch((err: unknown) => {
            errors.push(String(err));
            return 'timeout' as const;
          });
          if (r !== 'timeout') rejoins.push(r);
        }),
      );
      reply({ op: 'collected', rejoins, missing: pairs.length - rejoins.length, errors: [...new Set(errors)].slice(0, 5) });
    } else if (cmd.op === 'close') {
      await Promise.all(pairs.map((p) => Promise.all([p.node.close(), p.app.close()]).catch(() => undefined)));
      process.exit(0);
    }
  })();
});
process.on('disconnect', () => process.exit(0));
reply({ op: 'ready' });
