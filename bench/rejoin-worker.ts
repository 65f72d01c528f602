/**
 * A child process holding client-library sessions (node over gRPC, app over
 * WebSocket, protocol v2) against a cluster, for bench/rejoin.ts. On 'arm' it
 * records, per session, when both parties re-attached after the relay's death
 * (`reconnected`) and when a probe sent each way afterwards arrived. Driven
 * over IPC; exits with its parent.
 */
import { randomBytes } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { join } from 'node:path';
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
  /** REJOIN_TRACE: both parties' reconnect events since 'arm'. */
  events?: string[];
}

export type RejoinReply =
  | { op: 'ready' }
  | { op: 'opened'; held: number; failed: number; errors: string[] }
  | { op: 'armed' }
  | { op: 'collected'; rejoins: SessionRejoin[]; missing: number; errors: string[]; missingEvents: string[][]; failedAttempts: Record<string, number> };

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
  /** REJOIN_TRACE: both parties' reconnect events, in order. */
  events: string[];
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
  // REJOIN_TRACE=1: every party's reconnect events (which attempt failed how, where it dialed), kept in memory; the
  // slowest sessions' are printed at the end, and those of the first pairs opened at once, on stderr.
  const events: string[] = [];
  if (process.env.REJOIN_TRACE) {
    const id = `${process.pid}.${tracedPairs++}`;
    const live = tracedPairs <= 4;
    for (const [name, c] of [[`node ${id}`, node], [`app ${id}`, app]] as const) {
      const note = (text: string): void => {
        const line = `TRACE ${Date.now()} ${process.pid} ${name} ${text}`;
        events.push(line);
        if (live) console.error(line);
      };
      c.on('reconnecting', (i) => note(`reconnecting attempt=${i.attempt} delay=${Math.round(i.delayMs)} error=${i.error.name}: ${i.error.message}`));
      c.on('dial', (i) => note(`dial ${i.relay} via=${i.via} lookup=${i.lookupServer ?? ''}`));
      c.on('reconnected', () => note('reconnected'));
    }
  }
  const p: Pair = { node, app, node$: node[Symbol.asyncIterator](), app$: app[Symbol.asyncIterator](), done: null, events };
  await exchange(p);
  return p;
}

/**
 * REJOIN_CPU_PROF=DIR: a V8 CPU profile of the re-join alone (from 'arm' until
 * every session is collected), not of the sessions' opening, written to
 * DIR/rejoin-worker-PID.cpuprofile.
 */
const profileDir = process.env.REJOIN_CPU_PROF;
let profiler: Session | null = null;

async function startProfile(): Promise<void> {
  if (!profileDir) return;
  profiler = new Session();
  profiler.connect();
  await profiler.post('Profiler.enable');
  await profiler.post('Profiler.start');
}

async function stopProfile(): Promise<void> {
  if (!profiler || !profileDir) return;
  const { profile } = await profiler.post('Profiler.stop');
  writeFileSync(join(profileDir, `rejoin-worker-${process.pid}.cpuprofile`), JSON.stringify(profile));
  profiler.disconnect();
  profiler = null;
}

function arm(p: Pair): Promise<SessionRejoin> {
  p.events.length = 0;
  const once = (c: MailboxConnection): Promise<number> => new Promise((resolve) => c.once('reconnected', () => resolve(Date.now())));
  return Promise.all([once(p.node), once(p.app)]).then(async ([a, b]) => {
    const attachedAt = Math.max(a, b);
    await exchange(p);
    return { attachedAt, relayingAt: Date.now(), ...(process.env.REJOIN_TRACE ? { events: p.events } : {}) };
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
      await startProfile();
      for (const p of pairs) p.done = arm(p);
      reply({ op: 'armed' });
    } else if (cmd.op === 'collect') {
      const rejoins: SessionRejoin[] = [];
      const errors: string[] = [];
      const missingEvents: string[][] = [];
      const deadline = new Promise<'timeout'>((resolve) => setTimeout(() => resolve('timeout'), cmd.timeoutMs));
      await Promise.all(
        pairs.map(async (p) => {
          const r = await Promise.race([p.done ?? Promise.resolve('timeout' as const), deadline]).catch((err: unknown) => {
            errors.push(String(err));
            return 'timeout' as const;
          });
          if (r !== 'timeout') rejoins.push(r);
          else if (process.env.REJOIN_TRACE) missingEvents.push(p.events);
        }),
      );
      await stopProfile();
      // REJOIN_TRACE: why attempts failed, over every party (error name and the message up to its first digit or colon).
      const failedAttempts: Record<string, number> = {};
      for (const line of pairs.flatMap((p) => p.events)) {
        const why = / reconnecting attempt=\d+ delay=\d+ error=([^:]+: [^:0-9(]*)/.exec(line)?.[1]?.trim();
        if (why) failedAttempts[why] = (failedAttempts[why] ?? 0) + 1;
      }
      if (process.env.LK) writeFileSync(`/tmp/lk-${process.pid}.txt`, ((globalThis as unknown as { __lk?: string[] }).__lk ?? []).join('\n'));
      reply({ op: 'collected', rejoins, missing: pairs.length - rejoins.length, errors: [...new Set(errors)].slice(0, 5), missingEvents: missingEvents.slice(0, 3), failedAttempts });
    } else if (cmd.op === 'close') {
      await Promise.all(pairs.map((p) => Promise.all([p.node.close(), p.app.close()]).catch(() => undefined)));
      process.exit(0);
    }
  })();
});
process.on('disconnect', () => process.exit(0));
reply({ op: 'ready' });
