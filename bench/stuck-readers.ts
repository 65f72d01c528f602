/**
 * Server memory pinned by gRPC readers that never read (issue 7, "memory is
 * bounded by what the limits say, whatever readers do"). Each of N sessions
 * has a v1 RecvStream from a raw HTTP/2 client that never consumes (a small
 * stream window, never read, so the server's HTTP/2 stream stays full) and a
 * grpc-js SendStream writing large messages to the same box, one at a time,
 * until no writer gets a message taken for a while. Server RSS is read
 * before the writes (sessions open, idle), at its peak during and after
 * them, and after a full GC (what is still referenced, not garbage that
 * happens not to have been collected yet).
 */
import http2 from 'node:http2';
import { encodeCipherBoxDesc, type CipherBox } from '../src/transport/grpc-v1/codec.js';
import { SERVICE_PATH } from '../src/transport/grpc-v1/service.js';
import { createBox, dialGrpc, type HashMailStub } from './grpc-party.js';
import { collectGarbage } from './inspector-gc.js';
import { hashmailMetricSum, rssKiB, type RelayProcess } from './server-process.js';
import { median, sleep } from './stats.js';
import { newSidPair } from './wire.js';

/** The stuck reader's HTTP/2 stream window: it never reads, so the server can send at most this. */
const STUCK_READER_WINDOW_BYTES = 16 * 1024;
const GRPC_FRAME_HEADER_BYTES = 5;
/** RSS samples for each reading, this far apart; the median is kept. */
const RSS_SAMPLES = 3;
const RSS_SAMPLE_GAP_MS = 300;
/** After the writers block, RSS counts as settled when two readings this far apart differ by under SETTLE_FRACTION. */
const SETTLE_POLL_MS = 500;
const SETTLE_FRACTION = 0.02;
const SETTLE_MAX_MS = 8_000;
const ATTACH_POLL_MS = 50;
/** RSS is sampled this often for its peak. */
export const PEAK_SAMPLE_MS = 250;
const GC_TIMEOUT_MS = 30_000;
const GC_GAP_MS = 500;
const QUIET_POLL_MS = 100;

export interface StuckReadersOptions {
  readers: number;
  messageBytes: number;
  /** Most messages one writer offers (bounds the run when nothing pushes back). */
  maxMessagesPerWriter: number;
  /** The writes end once no writer got a message taken for this long. */
  quietMs: number;
  /** Idle time before the baseline reading. */
  settleMs: number;
  /** Opening sessions, and the writes as a whole, each end by this. */
  timeoutMs: number;
}

export interface StuckReadersResult {
  readers: number;
  messageBytes: number;
  rssIdleKiB: number;
  /** Highest reading from the first write until the readings settled. */
  rssPeakKiB: number;
  /** Settled again after a full GC in the server (freed memory malloc keeps still counts). */
  rssAfterGcKiB: number;
  /** nodejs_external_memory_bytes (Buffers) idle, and after the full GC: what is still referenced. */
  externalIdleBytes: number | undefined;
  externalAfterGcBytes: number | undefined;
  /** hashmail_buffered_bytes with the readers stuck. */
  bufferedBytes: number | undefined;
  /** Messages the writers got taken (write callback) before blocking, in all. */
  messagesTaken: number;
  /** Writers that ended blocked (the rest hit maxMessagesPerWriter or failed). */
  writersBlocked: number;
  note: string | null;
}

/** A RecvStream that never reads: raw HTTP/2, so nothing consumes behind our back. */
class StuckReader {
  private readonly session: http2.ClientHttp2Session;
  private readonly stream: http2.ClientHttp2Stream;

  constructor(grpcAddress: string, sid: Buffer) {
    this.session = http2.connect(`http://${grpcAddress}`, { settings: { initialWindowSize: STUCK_READER_WINDOW_BYTES } });
    this.session.on('error', () => undefined);
    this.stream = this.session.request({
      ':method': 'POST',
      ':path': `${SERVICE_PATH}/RecvStream`,
      'content-type': 'application/grpc',
      te: 'trailers',
    });
    this.stream.on('error', () => undefined);
    const body = encodeCipherBoxDesc({ streamId: sid });
    const frame = Buffer.alloc(GRPC_FRAME_HEADER_BYTES + body.length);
    frame.writeUInt32BE(body.length, 1);
    body.copy(frame, GRPC_FRAME_HEADER_BYTES);
    this.stream.end(frame);
    // Never read: no 'data' listener, and the stream stays paused.
    this.stream.pause();
  }

  close(): void {
    this.stream.destroy();
    this.session.destroy();
  }
}

interface WriterState {
  taken: number;
  /** A write handed to grpc-js and not yet taken. */
  pending: boolean;
}

/**
 * Every writer offers `payload` to its box, one message at a time, until no
 * write anywhere was taken for `quietMs` (all writers blocked, or done):
 * a per-writer timeout would also stop writers that are merely slow while
 * the server is busy with the others.
 */
async function writeUntilQuiet(stubs: HashMailStub[], sids: Buffer[], payload: Buffer, o: StuckReadersOptions): Promise<WriterState[]> {
  let lastTakenMs = Date.now();
  let stopped = false;
  const states: WriterState[] = sids.map(() => ({ taken: 0, pending: false }));
  const calls = sids.map((sid, i) => {
    const call = stubs[i].sendStream({}, () => undefined);
    call.on('error', () => undefined);
    const box: CipherBox = { desc: { streamId: sid }, msg: payload };
    const state = states[i];
    const next = (): void => {
      if (stopped || state.taken >= o.maxMessagesPerWriter) return;
      state.pending = true;
      call.write(box, () => {
        if (stopped) return;
        state.pending = false;
        state.taken++;
        lastTakenMs = Date.now();
        next();
      });
    };
    next();
    return call;
  });
  const deadline = Date.now() + o.timeoutMs;
  try {
    while (Date.now() - lastTakenMs < o.quietMs && states.some((st) => st.pending)) {
      if (Date.now() > deadline) throw new Error(`stuck readers: writers still taking messages after ${o.timeoutMs} ms`);
      await sleep(QUIET_POLL_MS);
    }
    return states.map((st) => ({ ...st }));
  } finally {
    stopped = true;
    for (const call of calls) call.cancel();
  }
}

async function rssMedianKiB(pid: number): Promise<number> {
  const samples: number[] = [];
  for (let i = 0; i < RSS_SAMPLES; i++) {
    if (i > 0) await sleep(RSS_SAMPLE_GAP_MS);
    samples.push(rssKiB(pid));
  }
  return median(samples);
}

/** Polls until RSS stops moving (bounded); returns the last reading. */
async function settledRssKiB(pid: number): Promise<number> {
  let last = rssKiB(pid);
  const deadline = Date.now() + SETTLE_MAX_MS;
  while (Date.now() < deadline) {
    await sleep(SETTLE_POLL_MS);
    const now = rssKiB(pid);
    const moved = Math.abs(now - last) / Math.max(last, 1);
    last = now;
    if (moved < SETTLE_FRACTION) break;
  }
  return rssMedianKiB(pid);
}

const externalBytes = (adminAddress: string): Promise<number | undefined> =>
  hashmailMetricSum(adminAddress, 'nodejs_external_memory_bytes').catch(() => undefined);

async function waitForReaders(adminAddress: string, count: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const attached = await hashmailMetricSum(adminAddress, 'hashmail_attached_halves', { transport: 'grpc', kind: 'read' });
    // No such gauge (a build that renamed it): the settle time before the baseline has to do.
    if (attached === undefined || attached >= count) return;
    if (Date.now() > deadline) throw new Error(`only ${attached ?? 0} of ${count} gRPC readers attached within ${timeoutMs} ms`);
    await sleep(ATTACH_POLL_MS);
  }
}

export async function measureStuckReaders(relay: RelayProcess, o: StuckReadersOptions): Promise<StuckReadersResult> {
  if (!relay.adminAddress) throw new Error('stuck readers: needs hashmail (admin metrics)');
  const adminAddress = relay.adminAddress;
  const stubs: HashMailStub[] = [];
  const readers: StuckReader[] = [];
  try {
    const sids: Buffer[] = [];
    for (let i = 0; i < o.readers; i++) {
      // A writer is litd or an app on a connection of its own; the reader another.
      const stub = dialGrpc(relay.grpcAddress);
      stubs.push(stub);
      const sid = newSidPair().c2s;
      await createBox(stub, sid, o.timeoutMs);
      sids.push(sid);
      readers.push(new StuckReader(relay.grpcAddress, sid));
    }
    await waitForReaders(adminAddress, o.readers, o.timeoutMs);
    // Every writer's connection up before the baseline, so it counts only what the messages pin.
    await Promise.all(stubs.map((s) => new Promise<void>((resolve, reject) => s.waitForReady(Date.now() + o.timeoutMs, (err) => (err ? reject(err) : resolve())))));
    await sleep(o.settleMs);
    const rssIdleKiB = await rssMedianKiB(relay.pid);
    const externalIdleBytes = await externalBytes(adminAddress);

    const payload = Buffer.alloc(o.messageBytes, 0x5a);
    let rssPeakKiB = rssIdleKiB;
    const peak = setInterval(() => {
      rssPeakKiB = Math.max(rssPeakKiB, rssKiB(relay.pid));
    }, PEAK_SAMPLE_MS);
    let outcomes: WriterState[];
    try {
      outcomes = await writeUntilQuiet(stubs, sids, payload, o);
      rssPeakKiB = Math.max(rssPeakKiB, await settledRssKiB(relay.pid));
    } finally {
      clearInterval(peak);
    }
    const bufferedBytes = await hashmailMetricSum(adminAddress, 'hashmail_buffered_bytes').catch(() => undefined);
    // Twice: buffers freed by the first collection's finalizers go in the second.
    await collectGarbage(relay, GC_TIMEOUT_MS);
    await sleep(GC_GAP_MS);
    await collectGarbage(relay, GC_TIMEOUT_MS);
    const rssAfterGcKiB = await settledRssKiB(relay.pid);
    const externalAfterGcBytes = await externalBytes(adminAddress);
    const writersBlocked = outcomes.filter((x) => x.pending).length;
    return {
      readers: o.readers,
      messageBytes: o.messageBytes,
      rssIdleKiB,
      rssPeakKiB,
      rssAfterGcKiB,
      externalIdleBytes,
      externalAfterGcBytes,
      bufferedBytes,
      messagesTaken: outcomes.reduce((acc, x) => acc + x.taken, 0),
      writersBlocked,
      note: writersBlocked < o.readers ? `${o.readers - writersBlocked} writers never blocked (${o.maxMessagesPerWriter} messages each taken)` : null,
    };
  } finally {
    for (const r of readers) r.close();
    for (const s of stubs) s.close();
  }
}
