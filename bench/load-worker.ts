/**
 * A load-generator child process: holds many sessions against a relay (one
 * process cannot hold them all within its open-file limit), and relays one
 * message each way through every one of them on request. Driven over IPC by
 * worker-pool.ts; exits with its parent.
 */
import { performance } from 'node:perf_hooks';
import { dialGrpc, type HashMailStub } from './grpc-party.js';
import { openSession, openV2Session, type Party, type Session, type V2Shape } from './session.js';
import { nsToMs, runBounded, sleep, summarize, type Summary } from './stats.js';
import { routeLookupClient } from './route-lookup.js';
import { dialV2, type MailboxV2Stub } from './v2-party.js';
import type { Target } from './wire.js';

export type WorkerCommand =
  | {
      op: 'open';
      target: Target;
      /** Sessions to add to those already held. */
      count: number;
      /** Node sessions per gRPC connection: 1 = a connection per node, as deployed. */
      sessionsPerNodeConnection: number;
      concurrency: number;
      timeoutMs: number;
      /** Protocol v2 sessions with these transports; default: legacy (node gRPC, app two WebSockets). */
      v2?: V2Shape;
      /** Source address for WebSocket parties (127.x). */
      localAddress?: string;
      /** v2 WebSocket parties ping the relay this often (ms), as the client library does. */
      clientPingMs?: number;
      /** A cluster (v2 only): each session is looked up (and placed) through these instances and opened at its owner. */
      lookupVia?: string[];
      /** v2 only: a session that failed to open is opened again (a new pair) up to this many times, as a client would retry; default 0. */
      openRetries?: number;
    }
  | { op: 'verify'; concurrency: number; timeoutMs: number }
  | LoadCommand
  | { op: 'close' };

export type WorkerReply =
  | { op: 'ready' }
  | {
      op: 'opened';
      held: number;
      failed: number;
      errors: string[];
      elapsedMs: number;
      /** With lookupVia: each lookup's latency, and sessions per owner address. */
      lookupMs?: number[];
      owners?: Record<string, number>;
      /** With openRetries: attempts that failed and were retried, and their distinct errors. */
      retried?: number;
      retriedErrors?: string[];
    }
  | { op: 'verified'; ok: number; failed: number; latenciesMs: number[]; errors: string[]; elapsedMs: number }
  | LoadReply
  | { op: 'closed' }
  | { op: 'error'; message: string };

/** Distinct error texts reported per command (the rest are counted only). */
const MAX_ERRORS_REPORTED = 5;
const PROBE = Buffer.from('probe');

/**
 * Steady load over every session held: `ratePerSession` messages a second
 * each, spread evenly (every `tickMs` the worker sends to the sessions that
 * are due), alternating direction (app -> node, node -> app) from one round
 * to the next. Each payload carries its send time; the receiver (same
 * process) computes the one-way latency. Only messages sent inside the
 * measured window (after the warm-up) count.
 */
export interface LoadCommand {
  op: 'load';
  ratePerSession: number;
  sizeBytes: number;
  tickMs: number;
  warmupMs: number;
  durationMs: number;
  /** After the last send, how long to wait for stragglers. */
  drainMs: number;
}

export interface LoadReply {
  op: 'loaded';
  sessions: number;
  sent: number;
  received: number;
  measuredSent: number;
  measuredReceived: number;
  /** One-way latency of every measured message (ms). */
  latenciesMs: number[];
  /** How late the ticks ran against their schedule: the load generator's own saturation. */
  tickLate: Summary;
  /** This worker's CPU (user + system) during the measured window, ms. */
  cpuMs: number;
  failedParties: number;
  errors: string[];
}

const sessions: Session[] = [];
const sharedStubs: (HashMailStub | MailboxV2Stub)[] = [];
let opened = 0;

function reply(msg: WorkerReply): void {
  process.send?.(msg);
}

function distinct(errors: Error[]): string[] {
  return [...new Set(errors.map((e) => e.message))].slice(0, MAX_ERRORS_REPORTED);
}

async function open(cmd: Extract<WorkerCommand, { op: 'open' }>): Promise<void> {
  const start = process.hrtime.bigint();
  const base = opened;
  opened += cmd.count;
  const finder = cmd.lookupVia ? routeLookupClient(cmd.lookupVia, cmd.timeoutMs) : null;
  const owners: Record<string, number> = {};
  const lookup = finder
    ? async (route: string): Promise<Target> => {
        const t = await finder.lookup(route);
        owners[t.grpcAddress] = (owners[t.grpcAddress] ?? 0) + 1;
        return t;
      }
    : undefined;
  const retriedErrors: Error[] = [];
  const errors = await runBounded(cmd.count, cmd.concurrency, async (i) => {
    const group = Math.floor((base + i) / cmd.sessionsPerNodeConnection);
    const shared = cmd.sessionsPerNodeConnection > 1;
    if (cmd.v2) {
      const v2 = cmd.v2;
      const nodeStub = shared && v2.node === 'grpc' ? ((sharedStubs[group] ??= dialV2(cmd.target.grpcAddress)) as MailboxV2Stub) : undefined;
      for (let attempt = 0; ; attempt++) {
        try {
          sessions.push(await openV2Session(cmd.target, { ...v2, nodeStub, localAddress: cmd.localAddress, clientPingMs: cmd.clientPingMs, timeoutMs: cmd.timeoutMs, lookup }));
          return;
        } catch (err) {
          if (attempt >= (cmd.openRetries ?? 0)) throw err;
          retriedErrors.push(err instanceof Error ? err : new Error(String(err)));
        }
      }
    }
    const nodeStub = shared ? ((sharedStubs[group] ??= dialGrpc(cmd.target.grpcAddress)) as HashMailStub) : undefined;
    sessions.push(await openSession(cmd.target, { app: 'ws', nodeStub, timeoutMs: cmd.timeoutMs }));
  });
  finder?.close();
  reply({
    op: 'opened',
    held: sessions.length,
    failed: errors.length,
    errors: distinct(errors),
    elapsedMs: nsToMs(process.hrtime.bigint() - start),
    ...(finder ? { lookupMs: finder.latenciesMs, owners } : {}),
    ...(cmd.openRetries ? { retried: retriedErrors.length, retriedErrors: distinct(retriedErrors) } : {}),
  });
}

/** One message app -> node, then one node -> app, through every session. */
async function verify(cmd: Extract<WorkerCommand, { op: 'verify' }>): Promise<void> {
  const start = process.hrtime.bigint();
  const latenciesMs: number[] = [];
  const errors = await runBounded(sessions.length, cmd.concurrency, async (i) => {
    const { node, app } = sessions[i];
    const t0 = process.hrtime.bigint();
    app.send(PROBE);
    await node.next(cmd.timeoutMs);
    node.send(PROBE);
    await app.next(cmd.timeoutMs);
    latenciesMs.push(nsToMs(process.hrtime.bigint() - t0));
  });
  reply({
    op: 'verified',
    ok: latenciesMs.length,
    failed: errors.length,
    latenciesMs,
    errors: distinct(errors),
    elapsedMs: nsToMs(process.hrtime.bigint() - start),
  });
}

/** Bytes 0..3: sequence number; 4..11: send time (performance.now(), float64). */
const STAMP_BYTES = 12;

async function load(cmd: LoadCommand): Promise<void> {
  const n = sessions.length;
  const size = Math.max(STAMP_BYTES, cmd.sizeBytes);
  const template = Buffer.alloc(size, 0x6b);
  const t0 = performance.now();
  const measureFrom = t0 + cmd.warmupMs;
  const stopAt = measureFrom + cmd.durationMs;
  const latenciesMs: number[] = [];
  let received = 0;
  let measuredReceived = 0;
  const onMessage = (msg: Buffer): void => {
    if (msg.length < STAMP_BYTES) return;
    const sentAt = msg.readDoubleLE(4);
    received++;
    if (sentAt >= measureFrom && sentAt < stopAt) {
      measuredReceived++;
      latenciesMs.push(performance.now() - sentAt);
    }
  };
  for (const s of sessions) {
    s.app.listen(onMessage);
    s.node.listen(onMessage);
  }
  let sent = 0;
  let measuredSent = 0;
  let cpuAtStart: NodeJS.CpuUsage | null = null;
  let cpuMs = 0;
  const late: number[] = [];
  const perMs = (n * cmd.ratePerSession) / 1000;
  // Bounded: the loop ends at stopAt whatever happens; a tick sends what is due by the clock, so a late tick catches up.
  let next = t0;
  while (n > 0) {
    const now = performance.now();
    if (now >= stopAt) break;
    if (now >= measureFrom) {
      cpuAtStart ??= process.cpuUsage();
      late.push(now - next);
    }
    const due = Math.floor((now - t0) * perMs);
    while (sent < due) {
      const i = sent % n;
      const round = Math.floor(sent / n);
      const s = sessions[i];
      const sender: Party = (i + round) % 2 === 0 ? s.app : s.node;
      const msg = Buffer.allocUnsafe(size);
      template.copy(msg);
      msg.writeUInt32BE(sent >>> 0, 0);
      const at = performance.now();
      msg.writeDoubleLE(at, 4);
      if (sender.failure === null) sender.send(msg);
      if (at >= measureFrom && at < stopAt) measuredSent++;
      sent++;
    }
    next += cmd.tickMs;
    await sleep(Math.max(0, next - performance.now()));
  }
  if (cpuAtStart) {
    const d = process.cpuUsage(cpuAtStart);
    cpuMs = (d.user + d.system) / 1000;
  }
  const drainUntil = performance.now() + cmd.drainMs;
  while (received < sent && performance.now() < drainUntil) await sleep(20);
  for (const s of sessions) {
    s.app.listen(null);
    s.node.listen(null);
  }
  const failed = sessions.flatMap((s) => [s.app, s.node]).filter((p) => p.failure !== null);
  reply({
    op: 'loaded',
    sessions: n,
    sent,
    received,
    measuredSent,
    measuredReceived,
    latenciesMs,
    tickLate: summarize(late),
    cpuMs,
    failedParties: failed.length,
    errors: [...new Set(failed.map((p) => p.failure as string))].slice(0, MAX_ERRORS_REPORTED),
  });
}

function closeAll(): void {
  for (const s of sessions) s.close();
  for (const stub of sharedStubs) stub?.close();
  sessions.length = 0;
  sharedStubs.length = 0;
}

process.on('message', (cmd: WorkerCommand) => {
  const run = async (): Promise<void> => {
    if (cmd.op === 'open') await open(cmd);
    else if (cmd.op === 'verify') await verify(cmd);
    else if (cmd.op === 'load') await load(cmd);
    else {
      closeAll();
      reply({ op: 'closed' });
      // Let the reply and the closes flush, then go.
      setTimeout(() => process.exit(0), 200);
    }
  };
  run().catch((err: unknown) => reply({ op: 'error', message: String(err instanceof Error ? err.stack : err) }));
});
process.on('disconnect', () => process.exit(0));
reply({ op: 'ready' });
process.on('uncaughtException', (err) => {
  reply({ op: 'error', message: `uncaught: ${err.stack ?? err.message}` });
  process.exit(1);
});
