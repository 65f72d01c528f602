/**
 * A legitimate session's round-trip time while other clients send huge JSON
 * (issue 7, "no amplification"). A legacy session (node and app over gRPC)
 * echoes 1 KiB messages at a steady pace: first with the server idle, then
 * while the storm worker (json-storm-worker.ts, its own process) keeps S
 * WebSocket send sockets busy with one large JSON object of unknown keys
 * each, for a bounded time and count.
 */
import { fork, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import { stopChild, track } from './children.js';
import type { StormCommand, StormTally } from './json-storm-worker.js';
import { relayPauses, ROOT, type RelayProcess } from './server-process.js';
import { openSession, type Session } from './session.js';
import { summarize, sleep, withTimeout, type Summary } from './stats.js';

const WORKER_ENTRY = join(ROOT, 'bench/json-storm-worker.ts');
/** Building 450,000 keys of JSON takes a moment. */
const WORKER_READY_TIMEOUT_MS = 30_000;
const WORKER_STOP_GRACE_MS = 3_000;

export interface StormOptions {
  sockets: number;
  keys: number;
  maxPerSocket: number;
  messageBytes: number;
  /** Round trips back to back before the idle window (JIT, connections warm). */
  warmup: number;
  /** Round trips start at most this often (a chat-like session, and under the default rate limit). */
  gapMs: number;
  idleMs: number;
  stormMs: number;
  /** Most round trips in each window. */
  maxRoundTrips: number;
  /** A round trip (or one storm send's answer) not back within this fails it. */
  stallMs: number;
}

export interface StormResult {
  idle: Summary;
  storm: Summary;
  jsonBytes: number;
  tally: StormTally;
  /** hashmail's event-loop delay max during the storm window (ms), when it could be read. */
  loopMaxMs: number | undefined;
  note: string | null;
}

/** Sequential round trips, one started every `gapMs` at most, for `windowMs` (or `max` of them). */
async function roundTrips(session: Session, o: StormOptions, windowMs: number, max: number, gapMs = o.gapMs): Promise<number[]> {
  const payload = Buffer.alloc(o.messageBytes, 0x5a);
  const samples: number[] = [];
  const end = Date.now() + windowMs;
  while (samples.length < max && Date.now() < end) {
    const start = performance.now();
    session.app.send(payload);
    await session.app.next(o.stallMs);
    const rtt = performance.now() - start;
    samples.push(rtt);
    if (rtt < gapMs) await sleep(gapMs - rtt);
  }
  return samples;
}

function startWorker(keys: number): { child: ChildProcess; ready: Promise<number> } {
  const child = track(fork(WORKER_ENTRY, [String(keys)], { cwd: ROOT, execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] }));
  const ready = withTimeout(
    new Promise<number>((resolve, reject) => {
      child.on('message', (m: { op: string; bytes?: number }) => {
        if (m.op === 'ready') resolve(m.bytes ?? 0);
      });
      child.once('exit', (code) => reject(new Error(`storm worker exited (${code}) before ready`)));
    }),
    WORKER_READY_TIMEOUT_MS,
    'storm worker start',
  );
  return { child, ready };
}

function stormDone(child: ChildProcess, timeoutMs: number): Promise<StormTally> {
  return withTimeout(
    new Promise<StormTally>((resolve, reject) => {
      child.on('message', (m: { op: string } & StormTally) => {
        if (m.op === 'done') resolve(m);
      });
      child.once('exit', (code) => reject(new Error(`storm worker exited (${code}) during the storm`)));
    }),
    timeoutMs,
    'storm worker',
  );
}

export async function measureJsonStorm(relay: RelayProcess, o: StormOptions): Promise<StormResult> {
  const worker = startWorker(o.keys);
  let session: Session | null = null;
  try {
    const jsonBytes = await worker.ready;
    session = await openSession(relay, { app: 'grpc', timeoutMs: o.stallMs });
    const s = session;
    s.node.listen((msg) => {
      s.node.send(msg);
    });
    await roundTrips(s, o, o.stallMs, o.warmup, 0);
    const idle = await roundTrips(s, o, o.idleMs, o.maxRoundTrips);

    await relayPauses(relay); // resets the event-loop delay histogram
    const go: { op: 'go' } & StormCommand = {
      op: 'go',
      port: relay.wsPort,
      sockets: o.sockets,
      keys: o.keys,
      maxPerSocket: o.maxPerSocket,
      durationMs: o.stormMs,
      answerTimeoutMs: o.stallMs,
    };
    const done = stormDone(worker.child, o.stormMs + 2 * o.stallMs);
    worker.child.send(go);
    const storm = await roundTrips(s, o, o.stormMs, o.maxRoundTrips);
    const tally = await done;
    const pauses = await relayPauses(relay);
    const note = tally.unanswered > 0 || tally.errors.length > 0 ? `storm: ${tally.unanswered} sends unanswered within ${o.stallMs} ms; ${tally.errors.join('; ')}` : null;
    return { idle: summarize(idle), storm: summarize(storm), jsonBytes, tally, loopMaxMs: pauses?.loopMaxMs, note };
  } finally {
    session?.close();
    await stopChild(worker.child, 'SIGTERM', WORKER_STOP_GRACE_MS);
  }
}
