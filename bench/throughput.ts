/**
 * One-way throughput: one side writes `count` messages as fast as flow
 * control lets it, the other reads them; timed from the first write to the
 * last read. Each message carries a sequence number, so loss or reordering
 * is counted, not assumed away.
 */
import type { Party } from './session.js';
import { openSession, openV2Session, type AppTransport, type V2Shape } from './session.js';
import { nsToMs, withTimeout } from './stats.js';
import { seqOf, sequenced, type Target } from './wire.js';

export type Direction = 'app->node' | 'node->app';

export interface ThroughputOptions {
  app: AppTransport;
  /** Protocol v2 with these transports instead of the legacy session (`app` is then ignored). */
  v2?: V2Shape;
  direction: Direction;
  sizeBytes: number;
  count: number;
  /** Messages sent and read before the timed part (JIT, buffers, TCP windows). */
  warmup: number;
  /** The timed part stops sending here and reports what arrived. */
  timeLimitMs: number;
  /** No message read for this long: the run stops (a stall). */
  stallMs: number;
}

export interface ThroughputResult {
  sent: number;
  received: number;
  elapsedMs: number;
  msgsPerSec: number;
  /** Payload bytes per second / 1e6. */
  mbPerSec: number;
  outOfOrder: number;
  note: string | null;
  /** Per-repetition figures when several runs were combined. */
  spread?: string;
  /** CPU per MB moved (warm-up included), where the caller measured it: the process playing both parties, and the server processes. */
  cpuMsPerMb?: { parties: number; servers: number };
}

interface PumpResult {
  sent: number;
  received: number;
  elapsedNs: bigint;
  outOfOrder: number;
  note: string | null;
}

/** Sends seq [first, first+count) from `sender`, counts them at `receiver`. */
async function pump(sender: Party, receiver: Party, template: Buffer, first: number, count: number, timeLimitMs: number, stallMs: number): Promise<PumpResult> {
  let received = 0;
  let expected = first;
  let outOfOrder = 0;
  let lastNs = 0n;
  let allIn: () => void = () => undefined;
  const done = new Promise<void>((resolve) => {
    allIn = resolve;
  });
  receiver.listen((msg) => {
    if (seqOf(msg) !== expected) outOfOrder++;
    expected = seqOf(msg) + 1;
    received++;
    lastNs = process.hrtime.bigint();
    if (received === count) allIn();
  });
  const deadline = Date.now() + timeLimitMs;
  const startNs = process.hrtime.bigint();
  let sent = 0;
  let note: string | null = null;
  try {
    while (sent < count) {
      if (Date.now() > deadline) {
        note = `time limit ${timeLimitMs} ms reached`;
        break;
      }
      const more = sender.send(sequenced(template, first + sent));
      sent++;
      if (!more) await withTimeout(sender.drain(), stallMs, 'sender flow control');
    }
    // Wait for the rest: until all arrived, the deadline, or no progress for stallMs.
    let seen = -1;
    while (received < count && received !== seen && Date.now() < deadline + stallMs) {
      seen = received;
      const wait = Math.max(1, Math.min(stallMs, deadline + stallMs - Date.now()));
      await Promise.race([done, new Promise((r) => setTimeout(r, wait))]);
    }
    if (received < count && note === null) note = `stalled: ${received}/${count} read, none for ${stallMs} ms`;
  } catch (err) {
    note = (err as Error).message;
  }
  receiver.listen(null);
  for (const p of [sender, receiver]) if (p.failure !== null) note = `${note ?? ''} ${p === sender ? 'sender' : 'receiver'}: ${p.failure}`.trim();
  return { sent, received, elapsedNs: lastNs > startNs ? lastNs - startNs : 0n, outOfOrder, note };
}

export async function measureOneWay(target: Target, o: ThroughputOptions): Promise<ThroughputResult> {
  const session = o.v2 ? await openV2Session(target, { ...o.v2, timeoutMs: o.stallMs }) : await openSession(target, { app: o.app, timeoutMs: o.stallMs });
  try {
    const [sender, receiver] = o.direction === 'app->node' ? [session.app, session.node] : [session.node, session.app];
    const template = Buffer.alloc(o.sizeBytes);
    for (let i = 0; i < template.length; i++) template[i] = (i * 131 + 7) & 0xff;
    if (o.warmup > 0) {
      const w = await pump(sender, receiver, template, 0, o.warmup, o.timeLimitMs, o.stallMs);
      if (w.note) return { sent: w.sent, received: w.received, elapsedMs: 0, msgsPerSec: Number.NaN, mbPerSec: Number.NaN, outOfOrder: w.outOfOrder, note: `warm-up: ${w.note}` };
    }
    const r = await pump(sender, receiver, template, o.warmup, o.count, o.timeLimitMs, o.stallMs);
    const seconds = Number(r.elapsedNs) / 1e9;
    return {
      sent: r.sent,
      received: r.received,
      elapsedMs: nsToMs(r.elapsedNs),
      msgsPerSec: seconds > 0 ? r.received / seconds : Number.NaN,
      mbPerSec: seconds > 0 ? (r.received * o.sizeBytes) / seconds / 1e6 : Number.NaN,
      outOfOrder: r.outOfOrder,
      note: r.note,
    };
  } finally {
    session.close();
  }
}
