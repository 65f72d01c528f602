/**
 * A load-generator child process: holds many sessions against a relay (one
 * process cannot hold them all within its open-file limit), and relays one
 * message each way through every one of them on request. Driven over IPC by
 * worker-pool.ts; exits with its parent.
 */
import { dialGrpc, type HashMailStub } from './grpc-party.js';
import { openSession, type Session } from './session.js';
import { nsToMs, runBounded } from './stats.js';
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
    }
  | { op: 'verify'; concurrency: number; timeoutMs: number }
  | { op: 'close' };

export type WorkerReply =
  | { op: 'ready' }
  | { op: 'opened'; held: number; failed: number; errors: string[]; elapsedMs: number }
  | { op: 'verified'; ok: number; failed: number; latenciesMs: number[]; errors: string[]; elapsedMs: number }
  | { op: 'closed' }
  | { op: 'error'; message: string };

/** Distinct error texts reported per command (the rest are counted only). */
const MAX_ERRORS_REPORTED = 5;
const PROBE = Buffer.from('probe');

const sessions: Session[] = [];
const sharedStubs: HashMailStub[] = [];
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
  const errors = await runBounded(cmd.count, cmd.concurrency, async (i) => {
    let nodeStub: HashMailStub | undefined;
    if (cmd.sessionsPerNodeConnection > 1) {
      const group = Math.floor((base + i) / cmd.sessionsPerNodeConnection);
      nodeStub = sharedStubs[group] ??= dialGrpc(cmd.target.grpcAddress);
    }
    sessions.push(await openSession(cmd.target, { app: 'ws', nodeStub, timeoutMs: cmd.timeoutMs }));
  });
  reply({ op: 'opened', held: sessions.length, failed: errors.length, errors: distinct(errors), elapsedMs: nsToMs(process.hrtime.bigint() - start) });
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
