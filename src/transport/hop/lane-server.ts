/**
 * The relay's end of a hop lane: one upgraded connection from a gateway
 * (lane-socket.ts, lane-upgrade.ts) carrying its box calls (NewCipherBox,
 * DelCipherBox: one frame each, answered by END) and many legacy halves, each a RecvStream or SendStream of
 * the relay's own LegacyMailbox made for the client the OPEN frame names.
 * Each half is admitted (fencing) and tracked by the SessionRouter like a
 * whole call was, so a lost route, a lost lease or a drain ends it with an
 * END frame carrying the error. Per-half credit in bytes keeps one slow
 * reader or writer from holding the lane: the relay sends a reader's
 * messages only within the credit its gateway granted, and grants a writer
 * credit only as its box takes messages. Frames: docs/gateway-hop.md.
 */
import type { Duplex } from 'node:stream';
import { routeOfSid } from '../../directory/route.js';
import type { CallInfo, LegacyOperations, LegacyReceive, LegacySend } from '../../relay/legacy-operations.js';
import { ReadPump } from '../../relay/read-pump.js';
import { HashmailError } from '../../session/errors.js';
import { checkSid, shortHash } from '../../session/sid.js';
import { NO_MESSAGE, encodeControlFrame, encodeHopFrame, FrameKind, type HopFrame } from './frame.js';
import { endFields } from './hop-status.js';
import { creditBatch, messageCost } from './lane-credit.js';
import { LaneSocket } from './lane-socket.js';
import type { GrpcCallMetrics } from '../../observe/grpc-metrics.js';
import type { SessionRouter } from '../../relay/session-router.js';
import type { Logger } from '../../observe/logger.js';
import { CALL_OVER } from '../../session/abort-reason.js';

/** A forwarded client address: a limit key (IPv4, masked IPv6 with /prefix, or a name), printable, short. */
export const CLIENT_ADDRESS = /^[0-9A-Za-z.:/%_[\]-]{1,100}$/;
/**
 * Halves and box calls one lane may carry at once, by default. A gateway
 * carries at most hop.streamsPerConnection (default 1000) on a lane; box
 * calls it gave up on (10 s) may still run here, hence the room. Past it a
 * new call ends at once with LIMIT_REACHED: each one holds a slot wait, an
 * etcd read or a box operation, and a lane must not hold them without bound.
 */
export const MAX_CALLS_PER_LANE = 4096;
/**
 * The lane stops reading while this much it wrote is unsent: each frame the
 * relay sends answers one it read (PONG, ATTACHED, END, CREDIT) or is a
 * reader's DATA within its credit, so a gateway that does not read gets no
 * more than this queued for it (lane-socket.ts).
 */
export const LANE_UNSENT_PAUSE_BYTES = 1024 * 1024;

export interface LaneDeps {
  /** The relay's own legacy operations (core.legacy). */
  mailbox: LegacyOperations;
  router: SessionRouter;
  logger: Logger;
  /** Credit the relay grants a writer half (bytes it may have unanswered on the lane). */
  sendWindowBytes: number;
  /** The largest legacy message (mailbox.maxMessageBytes): a sender may overrun its credit by one. */
  maxMessageBytes: number;
  /** Counts and logs an error about to go to the gateway (`call`: which hop call, default the lane's); returns it as ours. */
  note(err: unknown, call?: HopCall): HashmailError;
  /** Metrics of one box call (grpc_server_* for LegacyHop/CreateBox and DeleteBox, as when they were unary gRPC calls). */
  boxCallMetrics(call: BoxCall): GrpcCallMetrics;
  /** The largest lane frame taken from the gateway. */
  maxFrameBytes: number;
  /** A lane with nothing from its gateway (not even PING) for this long is dropped (ms). */
  silenceLimitMs: number;
  /** Halves and box calls at once on one lane (default MAX_CALLS_PER_LANE). */
  maxCallsPerLane?: number;
  /** Frame counts and the lane's end (grpc_server_* metrics for LegacyHop/Carry; 0 is OK). */
  sent(): void;
  received(): void;
  done(code: number): void;
}

export type BoxCall = 'CreateBox' | 'DeleteBox';
/** What an error is reported under: a box call, or the lane (its halves). */
export type HopCall = BoxCall | 'Carry';

/** One half (or box call) on the lane, from its OPEN (or box frame) to its end. */
class LaneHalf {
  ended = false;
  /** Only while waiting for admission and the slot: aborted by CANCEL or the lane ending. */
  waiting: AbortController | null = new AbortController();
  private releaseSlot: (() => void) | null = null;
  reader: LegacyReceive | null = null;
  writer: LegacySend | null = null;
  // Reader: bytes sent and not yet credited back by the gateway; the pump waits while they fill its window.
  inFlight = 0;
  window = 0;
  pump: ReadPump | null = null;
  pumpBlocked = false;
  // Writer: messages received while a write waits for the box, bytes owed back as credit.
  queue: Buffer[] = [];
  writing = false;
  unanswered = 0;
  owed = 0;
  finishing = false;

  constructor(readonly id: number) {}

  /** The slot is held and tracked; `release` frees both. False (and released at once) if the half ended meanwhile. */
  hold(release: () => void): boolean {
    this.waiting = null;
    if (this.ended) {
      release();
      return false;
    }
    this.releaseSlot = release;
    return true;
  }

  free(): void {
    this.ended = true;
    this.waiting?.abort(CALL_OVER);
    this.waiting = null;
    const release = this.releaseSlot;
    this.releaseSlot = null;
    this.queue = [];
    release?.();
  }
}

/** Serves one lane (an authenticated, upgraded connection) until the gateway closes it or leaves. */
export function serveLane(socket: Duplex, deps: LaneDeps): void {
  const { mailbox, router, logger } = deps;
  const lane = new LaneSocket({ maxFrameBytes: deps.maxFrameBytes, silenceLimitMs: deps.silenceLimitMs, pauseReadsOverBytes: LANE_UNSENT_PAUSE_BYTES });
  /** Halves and box calls in progress, by id. */
  const halves = new Map<number, LaneHalf>();
  const maxCalls = deps.maxCallsPerLane ?? MAX_CALLS_PER_LANE;
  /** The highest id opened: ids only grow, so a frame of a half that ended can never reach a new one. */
  let lastId = 0;
  let over = false;
  const creditThreshold = creditBatch(deps.sendWindowBytes);
  const maxUnanswered = deps.sendWindowBytes + messageCost(deps.maxMessageBytes);

  const write = (frame: Buffer, flushed?: () => void): void => {
    if (over) return;
    deps.sent();
    lane.write(frame, flushed);
  };
  const writeData = (half: number, msg: Buffer, flushed: () => void): void => {
    if (over) return;
    deps.sent();
    lane.writeData(half, msg, flushed);
  };

  /** The half is over; `err` goes to the gateway as END unless null (it cancelled, or the lane is gone). */
  const end = (h: LaneHalf, err: unknown): void => {
    if (h.ended) return;
    h.free();
    halves.delete(h.id);
    if (err !== null) write(encodeHopFrame({ half: h.id, kind: FrameKind.END, ...endFields(deps.note(err)) }));
  };

  /** Ends the lane: every half is released, the gateway is told `err` (null: OK) in an END frame for half 0. */
  const closeLane = (err: HashmailError | null): void => {
    if (over) return;
    if (err) write(encodeHopFrame({ half: 0, kind: FrameKind.END, ...endFields(err) }));
    over = true;
    for (const h of halves.values()) h.free();
    halves.clear();
    deps.done(err ? err.grpcCode : 0);
    lane.end();
  };

  /** The client a frame acts for, its SID and route, admitted by the router (this relay must own the session). */
  const admit = async (f: HopFrame, create: boolean): Promise<{ sid: Buffer; route: string; info: CallInfo }> => {
    const address = f.clientAddress;
    if (address === undefined || !CLIENT_ADDRESS.test(address)) {
      throw new HashmailError('MALFORMED_REQUEST', 'hop: an OPEN or box frame must name the client address');
    }
    const sid = checkSid(f.streamId ?? NO_MESSAGE);
    const route = routeOfSid(sid);
    await router.admit(route, create, true, address);
    return { sid, route, info: { transport: 'hop', address } };
  };

  const admitted = async (h: LaneHalf, f: HopFrame): Promise<{ sid: Buffer; route: string; info: CallInfo } | null> => {
    const a = await admit(f, false);
    return h.ended ? null : a;
  };

  /** The half or box call is over without an error: END without a code. */
  const endOk = (h: LaneHalf): void => {
    if (h.ended) return;
    h.free();
    halves.delete(h.id);
    write(encodeControlFrame(h.id, FrameKind.END));
  };

  /** NewCipherBox or DelCipherBox for the client the frame names: END on the call's id, with the error if it failed. */
  const boxCall = async (h: LaneHalf, f: HopFrame): Promise<void> => {
    const call: BoxCall = f.kind === FrameKind.CREATE_BOX ? 'CreateBox' : 'DeleteBox';
    const m = deps.boxCallMetrics(call);
    m.received();
    try {
      const a = await admit(f, call === 'CreateBox');
      const req = { desc: { streamId: a.sid }, hasAuth: true };
      await (call === 'CreateBox' ? mailbox.newCipherBox(req, a.info) : mailbox.delCipherBox(req, a.info));
      m.sent();
      m.done(0);
      endOk(h);
    } catch (err) {
      const e = deps.note(err, call);
      m.done(e.grpcCode);
      if (h.ended) return;
      h.free();
      halves.delete(h.id);
      write(encodeHopFrame({ half: h.id, kind: FrameKind.END, ...endFields(e) }));
    }
  };

  /** Tracks the attached half with the router until it ends. */
  const track = (h: LaneHalf, route: string, release: () => void): boolean => {
    const forget = router.track(route, { end: (err) => end(h, err) });
    if (!h.hold(() => (forget(), release()))) return false;
    return !h.ended;
  };

  const openReceive = async (h: LaneHalf, f: HopFrame): Promise<void> => {
    const a = await admitted(h, f);
    if (!a) return;
    const half = await mailbox.openReceive(a.sid, a.info, h.waiting?.signal);
    if (!track(h, a.route, () => half.release())) return;
    logger.debug({ sid: shortHash(a.sid) }, 'hop reader attached');
    h.reader = half;
    h.window = f.credit ?? 0;
    half.onBoxClosed((err) => end(h, err));
    write(encodeControlFrame(h.id, FrameKind.ATTACHED));
    const pump: ReadPump = new ReadPump(
      half,
      (msg, flushed) => {
        h.inFlight += messageCost(msg.length);
        writeData(h.id, msg, flushed);
        if (h.inFlight < h.window) return true;
        h.pumpBlocked = true;
        return false;
      },
      (err) => end(h, err),
    );
    h.pump = pump;
    pump.resume();
  };

  const openSend = async (h: LaneHalf, f: HopFrame): Promise<void> => {
    const a = await admitted(h, f);
    if (!a) return;
    const half = await mailbox.openSend({ streamId: a.sid }, a.info, h.waiting?.signal);
    if (!track(h, a.route, () => half.release())) return;
    logger.debug({ sid: shortHash(a.sid) }, 'hop writer attached');
    h.writer = half;
    half.onBoxClosed((err) => end(h, err));
    write(encodeControlFrame(h.id, FrameKind.ATTACHED, deps.sendWindowBytes));
  };

  /** Credit back what the box took, in batches: one CREDIT frame per message would double the frames. */
  const repay = (h: LaneHalf, bytes: number): void => {
    h.unanswered -= bytes;
    h.owed += bytes;
    if (h.owed >= creditThreshold) {
      write(encodeControlFrame(h.id, FrameKind.CREDIT, h.owed));
      h.owed = 0;
    }
  };

  /** Writes queued messages into the box in order; a write that waits holds the rest. Then FINISH, if asked. */
  const drainWrites = (h: LaneHalf): void => {
    const half = h.writer;
    if (!half) return;
    try {
      while (!h.writing && !h.ended) {
        const msg = h.queue.shift();
        if (msg === undefined) break;
        const pending = half.write(msg);
        const cost = messageCost(msg.length);
        if (!pending) {
          repay(h, cost);
          continue;
        }
        h.writing = true;
        pending.then(
          () => {
            h.writing = false;
            if (h.ended) return;
            repay(h, cost);
            drainWrites(h);
          },
          (err: unknown) => end(h, err),
        );
      }
    } catch (err) {
      end(h, err);
      return;
    }
    if (h.finishing && !h.writing && h.queue.length === 0 && !h.ended) finish(h, half);
  };

  /** Every message is in the box: END without an error is the gateway's "all taken". */
  const finish = (h: LaneHalf, half: LegacySend): void => {
    h.finishing = false;
    const done = (): void => endOk(h);
    const finishing = half.finish();
    if (finishing) finishing.then(done, (err: unknown) => end(h, err));
    else done();
  };

  const onFrame = (f: HopFrame | HashmailError): void => {
    if (over) return;
    deps.received();
    if (f instanceof HashmailError) return closeLane(deps.note(f));
    const h = halves.get(f.half);
    switch (f.kind) {
      case FrameKind.OPEN_RECV:
      case FrameKind.OPEN_SEND:
      case FrameKind.CREATE_BOX:
      case FrameKind.DELETE_BOX: {
        if (f.half <= lastId) {
          return closeLane(deps.note(new HashmailError('MALFORMED_REQUEST', `hop: id ${f.half} opened after id ${lastId} (ids only grow on a lane, never reused)`)));
        }
        lastId = f.half;
        if (halves.size >= maxCalls) {
          write(encodeHopFrame({ half: f.half, kind: FrameKind.END, ...endFields(deps.note(new HashmailError('LIMIT_REACHED', `hop: a lane carries at most ${maxCalls} halves and box calls at once`))) }));
          return;
        }
        const fresh = new LaneHalf(f.half);
        halves.set(f.half, fresh);
        if (f.kind === FrameKind.CREATE_BOX || f.kind === FrameKind.DELETE_BOX) {
          void boxCall(fresh, f);
          return;
        }
        const open = f.kind === FrameKind.OPEN_RECV ? openReceive : openSend;
        open(fresh, f).catch((err: unknown) => end(fresh, err));
        return;
      }
      case FrameKind.CREDIT: {
        if (!h?.pump) return;
        h.inFlight -= f.credit ?? 0;
        if (h.pumpBlocked && h.inFlight < h.window) {
          h.pumpBlocked = false;
          h.pump.resume();
        }
        return;
      }
      case FrameKind.DATA: {
        // A half that just ended here: the gateway learns it from the END frame already on its way.
        if (!h) return;
        if (!h.writer) return end(h, new HashmailError('MALFORMED_REQUEST', 'hop: DATA for a half that is not an attached writer'));
        const msg = f.msg ?? NO_MESSAGE;
        h.unanswered += messageCost(msg.length);
        if (h.unanswered > maxUnanswered) return end(h, new HashmailError('MALFORMED_REQUEST', 'hop: writer sent past its credit'));
        if (h.finishing) return end(h, new HashmailError('MALFORMED_REQUEST', 'hop: DATA after FINISH'));
        h.queue.push(msg);
        drainWrites(h);
        return;
      }
      case FrameKind.FINISH: {
        if (!h) return;
        if (!h.writer) return end(h, new HashmailError('MALFORMED_REQUEST', 'hop: FINISH for a half that is not an attached writer'));
        h.finishing = true;
        drainWrites(h);
        return;
      }
      case FrameKind.CANCEL: {
        if (h) end(h, null);
        return;
      }
      default:
        // ATTACHED and END travel only from the relay.
        return closeLane(deps.note(new HashmailError('MALFORMED_REQUEST', `hop: frame kind ${f.kind} is the relay's to send`)));
    }
  };

  lane.attach(socket, {
    frame: onFrame,
    // The gateway closed the lane (idle) or left: every half it carried is released, nothing more is sent.
    closed: (err) => {
      if (over) return;
      over = true;
      for (const h of halves.values()) h.free();
      halves.clear();
      deps.done(err ? 1 : 0);
    },
  });
}
