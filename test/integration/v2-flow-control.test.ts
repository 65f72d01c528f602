/**
 * v2 "writes wait for the reader" (docs/protocol-v2.md, Delivery), over gRPC
 * and over WebSocket, against a real relay:
 *
 * - a sender pushes 256 MiB at a reader that reads in bursts with pauses:
 *   every accepted byte arrives intact and in order, and the relay's memory
 *   stays bounded while the reader lags;
 * - a sender with no reader at all for 10 s gets only a bounded amount
 *   accepted (the window plus what transports buffer), and every accepted
 *   byte reaches a reader attaching afterwards.
 *
 * Memory bounds are on the relay process (admin /metrics), not timing.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, afterEach, before, describe, test, type TestContext } from 'node:test';
import { setImmediate as turn, setTimeout as delay } from 'node:timers/promises';
import { peerSid, randomSid } from '../helpers/grpc-v1.js';
import { metricSums } from '../helpers/metrics.js';
import { startServer, type RunningServer } from '../helpers/server.js';
import { closeParties, grpcParty, wsParty, type TransportKind, type V2Party } from '../helpers/v2-peers.js';
import { checkMessage, makeMessage, StreamDigest } from '../helpers/v2-stream-check.js';

const KiB = 1024;
const MiB = 1024 * KiB;

/** v2.windowBytes and v2.maxMessageBytes defaults (doc: 64 KiB each). */
const WINDOW_BYTES = 64 * KiB;
const MESSAGE_BYTES = 64 * KiB;
/** 4,096 x 64 KiB = 256 MiB through a slow reader. */
const SLOW_READER_MESSAGES = 4_096;
/** Time bound of the 256 MiB transfer; reaching it fails the test. */
const TRANSFER_DEADLINE_MS = 90_000;
/** The reader takes this many messages, then pauses. */
const READ_BURST_MESSAGES = 64;
/**
 * A pause ends when the sender is held back: no message accepted for this
 * many event-loop turns in a row (turns, not time: each polls for I/O)...
 */
const PAUSE_STALL_TURNS = 500;
/** ...or when it got this many messages further ahead (a relay that buffers lets it run)... */
const PAUSE_LEAD_MESSAGES = 256;
/** ...and at most after this many turns. */
const PAUSE_MAX_TURNS = 200_000;
/** Relay memory is sampled every this many messages read. */
const SAMPLE_EVERY_MESSAGES = 128;
/** Warm-up before the baseline, so code paths, pools and JIT are in place. */
const WARMUP_MESSAGES = 64;

/** The no-reader phase: part of the scenario, so a timer. */
const NO_READER_MS = 10_000;
/** Count bound of the no-reader sender: 128 MiB, far above any bounded relay's acceptance. */
const NO_READER_MAX_MESSAGES = 2_048;
/** How long a read may wait for the next message while data is owed. */
const READ_WAIT_MS = 15_000;

/**
 * Growth of the relay's resident memory allowed while a reader lags: the
 * relay holds at most 64 KiB per direction plus one payload being handled,
 * and HTTP/2 stream windows and socket buffers (in the kernel, not RSS for
 * TCP); the rest is allocator and garbage-collector slack. A relay that
 * buffered what the reader did not take would grow by hundreds of MiB here.
 */
const RSS_GROWTH_BOUND_BYTES = 64 * MiB;
/** Same for the V8 heap (payloads are off-heap Buffers; the heap holds bookkeeping). */
const HEAP_GROWTH_BOUND_BYTES = 64 * MiB;

/** Largest value of a Linux TCP buffer sysctl (third field), or `fallback` elsewhere. */
function tcpBufferMax(name: 'tcp_wmem' | 'tcp_rmem', fallback: number): number {
  try {
    const max = Number(readFileSync(`/proc/sys/net/ipv4/${name}`, 'utf8').trim().split(/\s+/)[2]);
    return Number.isFinite(max) && max > 0 ? max : fallback;
  } catch {
    return fallback;
  }
}

/** HTTP/2 stream and connection windows plus grpc-js / ws write queues: generous, still tiny next to 10 s of writing. */
const TRANSPORT_WINDOWS_ALLOWANCE_BYTES = 8 * MiB;
/**
 * Bytes a sender may get accepted with no reader at all: the relay's window,
 * one payload over it if alone, one payload in the relay's hands, the
 * transports' windows and both loopback socket buffers (client send, relay
 * receive: the relay stops reading its socket).
 */
const NO_READER_ACCEPT_BOUND_BYTES =
  WINDOW_BYTES + 2 * MESSAGE_BYTES + TRANSPORT_WINDOWS_ALLOWANCE_BYTES + tcpBufferMax('tcp_wmem', 4 * MiB) + tcpBufferMax('tcp_rmem', 6 * MiB);

/** What the reading party itself holds: its inbox (32 frames before it pauses) and grpc-js / ws read buffers. */
const READER_BUFFER_ALLOWANCE_BYTES = 4 * MiB;
/**
 * Most bytes accepted and not yet read at any time with a reader attached:
 * the no-reader pipeline, plus the second hop's transport (relay send and
 * reader receive socket buffers: over WebSocket a paused reader lets the
 * kernel hold tens of MiB, outside the relay) and the reader's own buffers.
 */
const LAG_BOUND_BYTES =
  NO_READER_ACCEPT_BOUND_BYTES +
  TRANSPORT_WINDOWS_ALLOWANCE_BYTES +
  tcpBufferMax('tcp_wmem', 4 * MiB) +
  tcpBufferMax('tcp_rmem', 6 * MiB) +
  READER_BUFFER_ALLOWANCE_BYTES;

const TRANSPORTS: readonly TransportKind[] = ['grpc', 'ws'];

interface Memory {
  rss: number;
  heap: number;
}

async function relayMemory(server: RunningServer): Promise<Memory> {
  const m = await metricSums(server, ['process_resident_memory_bytes', 'nodejs_heap_size_used_bytes']);
  assert.ok(m.process_resident_memory_bytes !== undefined, 'process_resident_memory_bytes missing from /metrics');
  assert.ok(m.nodejs_heap_size_used_bytes !== undefined, 'nodejs_heap_size_used_bytes missing from /metrics');
  return { rss: m.process_resident_memory_bytes, heap: m.nodejs_heap_size_used_bytes };
}

class PeakMemory {
  rss = 0;
  heap = 0;
  samples = 0;
  add(m: Memory): void {
    this.rss = Math.max(this.rss, m.rss);
    this.heap = Math.max(this.heap, m.heap);
    this.samples++;
  }
}

const mib = (n: number): string => `${(n / MiB).toFixed(1)} MiB`;

function assertMemoryBound(t: TestContext, base: Memory, peak: PeakMemory, what: string): void {
  const rssGrowth = peak.rss - base.rss;
  const heapGrowth = peak.heap - base.heap;
  t.diagnostic(`${what}: relay RSS ${mib(base.rss)} -> peak ${mib(peak.rss)} (+${mib(rssGrowth)}); heap ${mib(base.heap)} -> peak ${mib(peak.heap)} (+${mib(heapGrowth)}); ${peak.samples} samples`);
  assert.ok(rssGrowth < RSS_GROWTH_BOUND_BYTES, `${what}: relay RSS grew by ${mib(rssGrowth)}, bound ${mib(RSS_GROWTH_BOUND_BYTES)}`);
  assert.ok(heapGrowth < HEAP_GROWTH_BOUND_BYTES, `${what}: relay heap grew by ${mib(heapGrowth)}, bound ${mib(HEAP_GROWTH_BOUND_BYTES)}`);
}

describe('v2 flow control', () => {
  let server: RunningServer;
  const open = new Set<V2Party>();

  before(async () => {
    // The token bucket would stretch 4,096 messages over a minute; this suite is
    // about the window, so the rate limit is off.
    server = await startServer({ config: { mailbox: { rateLimitIntervalMs: 0 } } });
  });
  after(async () => {
    await server?.stop();
  });
  afterEach(async () => {
    await closeParties(open);
    open.clear();
  });

  async function party(kind: TransportKind): Promise<V2Party> {
    const p = kind === 'grpc' ? grpcParty(server.address) : await wsParty(server.port);
    open.add(p);
    return p;
  }

  /** Two parties of a fresh session, both attached. */
  async function session(kind: TransportKind): Promise<{ sender: V2Party; reader: V2Party }> {
    const sid = randomSid();
    const sender = await party(kind);
    assert.equal((await sender.hello({ sid })).peerPresent, false);
    const reader = await party(kind);
    assert.equal((await reader.hello({ sid: peerSid(sid) })).peerPresent, true);
    await sender.expectPresence(true);
    return { sender, reader };
  }

  /** A short exchange so the relay's code paths and pools exist before the baseline. */
  async function warmUp(kind: TransportKind): Promise<void> {
    const { sender, reader } = await session(kind);
    const sending = (async () => {
      for (let i = 0; i < WARMUP_MESSAGES; i++) await sender.send(makeMessage(i, MESSAGE_BYTES));
    })();
    for (let i = 0; i < WARMUP_MESSAGES; i++) checkMessage(await reader.nextData(), i, MESSAGE_BYTES, 'warm-up');
    await sending;
    await Promise.all([sender.close(), reader.close()]);
  }

  for (const kind of TRANSPORTS) {
    describe(`over ${kind}`, () => {
      test(`256 MiB at a reader reading in bursts: every accepted byte arrives, relay memory bounded`, { timeout: TRANSFER_DEADLINE_MS + 60_000 }, async (t) => {
        await warmUp(kind);
        const { sender, reader } = await session(kind);
        const base = await relayMemory(server);
        const peak = new PeakMemory();
        peak.add(base);

        const tx = new StreamDigest();
        const rx = new StreamDigest();
        const deadline = Date.now() + TRANSFER_DEADLINE_MS;
        let accepted = 0;
        let senderDone = false;
        /** Most messages accepted and not yet read at once: what the relay and transports held. */
        let maxLead = 0;
        /** Pauses that ended with the sender held back (no progress for PAUSE_STALL_TURNS turns). */
        let pausesHeldBack = 0;

        const sending = (async () => {
          try {
            for (let i = 0; i < SLOW_READER_MESSAGES && Date.now() < deadline; i++) {
              const msg = makeMessage(i, MESSAGE_BYTES);
              await sender.send(msg);
              tx.add(msg);
              accepted++;
            }
          } finally {
            senderDone = true;
          }
        })();

        /** Waits while the sender runs; true if it ended because the sender was held back. */
        const pauseUntilHeldBack = async (): Promise<boolean> => {
          const start = accepted;
          let last = accepted;
          let still = 0;
          for (let i = 0; i < PAUSE_MAX_TURNS && !senderDone && accepted - start < PAUSE_LEAD_MESSAGES; i++) {
            await turn();
            if (accepted !== last) {
              last = accepted;
              still = 0;
            } else if (++still >= PAUSE_STALL_TURNS) {
              return true;
            }
          }
          return false;
        };

        const reading = (async () => {
          let received = 0;
          while (received < SLOW_READER_MESSAGES && !(senderDone && received === accepted)) {
            assert.ok(Date.now() < deadline + READ_WAIT_MS, `reader: ${received} of ${accepted} accepted messages read when the time ran out`);
            const msg = await reader.nextData(READ_WAIT_MS);
            checkMessage(msg, received, MESSAGE_BYTES, `${kind} slow reader`);
            rx.add(msg);
            received++;
            if (received % SAMPLE_EVERY_MESSAGES === 0) peak.add(await relayMemory(server));
            maxLead = Math.max(maxLead, accepted - received);
            if (received % READ_BURST_MESSAGES === 0) {
              // Pause: until the sender has run PAUSE_LEAD_MESSAGES ahead, or PAUSE_TURNS turns.
              if (await pauseUntilHeldBack()) pausesHeldBack++;
            }
          }
          return received;
        })();

        const [, received] = await Promise.all([sending, reading]);
        peak.add(await relayMemory(server));
        t.diagnostic(
          `${kind}: sender at most ${maxLead} messages (${mib(maxLead * MESSAGE_BYTES)}) ahead of the reader, bound ${mib(LAG_BOUND_BYTES)}; ${pausesHeldBack} of ${Math.floor(received / READ_BURST_MESSAGES)} pauses with the sender held back`,
        );
        assert.equal(accepted, SLOW_READER_MESSAGES, `sender: only ${accepted} of ${SLOW_READER_MESSAGES} messages accepted within ${TRANSFER_DEADLINE_MS} ms`);
        assert.equal(received, accepted, 'messages read vs accepted');
        assert.equal(rx.bytes, tx.bytes, 'bytes read vs accepted');
        assert.equal(rx.digest(), tx.digest(), 'SHA-256 of every byte, both sides');
        assert.ok(maxLead * MESSAGE_BYTES <= LAG_BOUND_BYTES, `sender ran ${mib(maxLead * MESSAGE_BYTES)} ahead of the reader, bound ${mib(LAG_BOUND_BYTES)}`);
        assertMemoryBound(t, base, peak, `${kind} slow reader`);
      });

      test(`no reader for ${NO_READER_MS / 1000} s: acceptance bounded, then every accepted byte arrives`, { timeout: NO_READER_MS + 60_000 }, async (t) => {
        await warmUp(kind);
        const sid = randomSid();
        const sender = await party(kind);
        assert.equal((await sender.hello({ sid })).peerPresent, false);
        const base = await relayMemory(server);
        const peak = new PeakMemory();
        peak.add(base);

        const tx = new StreamDigest();
        let accepted = 0;
        let stop = false;
        const sending = (async () => {
          for (let i = 0; i < NO_READER_MAX_MESSAGES && !stop; i++) {
            const msg = makeMessage(i, MESSAGE_BYTES);
            await sender.send(msg);
            tx.add(msg);
            accepted++;
          }
        })();
        // The send in progress when the loop stops fails the test here if the stream ended.
        sending.catch(() => undefined);

        await delay(NO_READER_MS);
        stop = true;
        const acceptedAlone = tx.bytes;
        peak.add(await relayMemory(server));
        t.diagnostic(`${kind}: ${accepted} messages (${mib(acceptedAlone)}) accepted with no reader; bound ${mib(NO_READER_ACCEPT_BOUND_BYTES)}`);
        assert.ok(accepted >= 1, 'the window takes at least one payload while the peer is absent');
        assert.ok(acceptedAlone <= NO_READER_ACCEPT_BOUND_BYTES, `${mib(acceptedAlone)} accepted with no reader, bound ${mib(NO_READER_ACCEPT_BOUND_BYTES)}`);
        assert.ok(accepted < NO_READER_MAX_MESSAGES, 'the sender was never held back');
        assertMemoryBound(t, base, peak, `${kind} no reader`);

        // The reader comes; the send held back completes, and every accepted byte arrives.
        const reader = await party(kind);
        assert.equal((await reader.hello({ sid: peerSid(sid) })).peerPresent, true);
        const rx = new StreamDigest();
        let received = 0;
        let sendingDone = false;
        const markDone = (): void => {
          sendingDone = true;
        };
        sending.then(markDone, markDone);
        for (let i = 0; i < NO_READER_MAX_MESSAGES && !(sendingDone && received === accepted); i++) {
          const msg = await reader.nextData(READ_WAIT_MS);
          checkMessage(msg, received, MESSAGE_BYTES, `${kind} late reader`);
          rx.add(msg);
          received++;
          // The last accepted message may arrive before the held-back send's callback.
          if (received === accepted && !sendingDone) await sending;
        }
        await sending;
        assert.equal(received, accepted, 'messages read vs accepted');
        assert.equal(rx.digest(), tx.digest(), 'SHA-256 of every accepted byte, both sides');
        await sender.expectPresence(true);
      });
    });
  }
});
