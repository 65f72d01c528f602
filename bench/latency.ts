/**
 * Ping-pong latency: the app writes a message, the node echoes it, the app
 * reads it back; one round trip crosses the relay twice (C2S then S2C).
 * Sequential, after a warm-up, timed with process.hrtime.bigint.
 */
import { openSession, openV2Session, type AppTransport, type V2Shape } from './session.js';
import { nsToMs, summarize, type Summary } from './stats.js';
import type { Target } from './wire.js';

export interface LatencyOptions {
  app: AppTransport;
  /** Protocol v2 with these transports instead of the legacy session (`app` is then ignored). */
  v2?: V2Shape;
  sizeBytes: number;
  warmup: number;
  roundTrips: number;
  /** The whole run (warm-up included) stops here, with what it has. */
  timeLimitMs: number;
  /** A round trip not back within this fails the run (a stall). */
  stallMs: number;
}

export interface LatencyResult extends Summary {
  /** Set when the run stopped early: time limit, stall or error. */
  note: string | null;
  /** Per-repetition figures when several runs were combined. */
  spread?: string;
}

export async function measurePingPong(target: Target, o: LatencyOptions): Promise<LatencyResult> {
  const session = o.v2 ? await openV2Session(target, { ...o.v2, timeoutMs: o.stallMs }) : await openSession(target, { app: o.app, timeoutMs: o.stallMs });
  const { node, app } = session;
  try {
    // The node echoes whatever it reads; only sends that must wait for drain are rare here.
    node.listen((msg) => {
      node.send(msg);
    });
    const payload = Buffer.alloc(o.sizeBytes, 0x5a);
    const samples: number[] = [];
    const deadline = Date.now() + o.timeLimitMs;
    let note: string | null = null;
    let pending: { resolve: () => void; reject: (err: Error) => void } | null = null;
    const failNow = (reason: string): void => pending?.reject(new Error(reason));
    app.onFailure(failNow);
    node.onFailure(failNow);
    let arrivedNs = 0n;
    app.listen(() => {
      arrivedNs = process.hrtime.bigint();
      pending?.resolve();
    });
    for (let i = 0; i < o.warmup + o.roundTrips; i++) {
      if (Date.now() > deadline) {
        note = `time limit ${o.timeLimitMs} ms reached after ${samples.length} round trips`;
        break;
      }
      const replied = new Promise<void>((resolve, reject) => {
        pending = { resolve, reject };
      });
      const timer = setTimeout(() => pending?.reject(new Error(`round trip ${i} not back within ${o.stallMs} ms`)), o.stallMs);
      const start = process.hrtime.bigint();
      app.send(payload);
      try {
        await replied;
      } catch (err) {
        note = (err as Error).message;
        break;
      } finally {
        clearTimeout(timer);
      }
      if (i >= o.warmup) samples.push(nsToMs(arrivedNs - start));
    }
    return { ...summarize(samples), note };
  } finally {
    session.close();
  }
}
