/**
 * A hop lane's wire: HopFrames on a byte stream (the relay's public port,
 * after an HTTP/1.1 upgrade to `hashmail-hop-lane`), each a 4-byte
 * big-endian length and then the frame. Both ends use it. It replaced a
 * gRPC stream: grpc-js and HTTP/2 cost about 40 us of CPU per message and
 * hop traversal, this framing about 5 (docs/gateway-hop.md, Lane).
 *
 * Writes made in one pass of the event loop (all the I/O callbacks it ran)
 * leave in one system call: on loopback each send also runs the receiver's
 * TCP work, and a send per message was a third of a busy gateway's CPU. A
 * message goes out as it is, after a small head (no copy into a frame). A
 * frame read keeps at most twice its size alive: one that shares a socket
 * read with more than as much again is copied out (a message kept in a box
 * must not hold a whole read), one that fills most of its read is used in
 * place. A length over the limit or a frame that does not decode ends the
 * lane. Keepalive: the gateway sends PING every `pingEveryMs` and gives up
 * when nothing came back within `silenceLimitMs`; the relay answers PING
 * with PONG and gives up on a lane silent for `silenceLimitMs`.
 *
 * Bounds against a peer that breaks the contract (docs/gateway-hop.md, Lane):
 * a frame cut into many reads is assembled in one buffer of its size (a read
 * held as its own Buffer costs about 150 bytes more than its bytes, so a
 * frame trickled a byte at a time held 150 times its size) and must be whole
 * within `silenceLimitMs` of its first byte; at most one PONG waits to be
 * sent (a PING flood from a peer that does not read queued them without
 * bound); with `pauseReadsOverBytes` (the relay) the lane stops reading while
 * that much it wrote is unsent, since everything it sends answers what it
 * reads, and gives up on a peer that takes nothing for `silenceLimitMs`; a
 * lane that ended reads nothing more and is gone within `LANE_END_GRACE_MS`
 * even if its peer keeps its side open.
 */
import type { Duplex } from 'node:stream';
import { HashmailError } from '../../session/errors.js';
import { endWithin } from '../end-within.js';
import { dataHeadSize, decodeHopFrame, encodeControlFrame, FrameKind, writeDataHead, type HopFrame } from './frame.js';

const HEADER_BYTES = 4;
const LANE = 0;
/** A frame still incomplete after this many reads is assembled in a buffer of its own size. */
const MAX_HELD_READS = 8;
/** A lane ended in order (its last frames on their way) is destroyed after this if its peer has not closed it (ms). */
export const LANE_END_GRACE_MS = 1_000;

export interface LaneSocketOptions {
  /** The largest frame taken (a DATA frame with the largest legacy message, plus framing). */
  maxFrameBytes: number;
  /** Gateway: send a PING this often (ms). Relay: leave unset. */
  pingEveryMs?: number;
  /** Nothing received for this long (ms), or a frame begun and not whole after it: the peer is gone. */
  silenceLimitMs: number;
  /**
   * Stop reading while more than this many bytes written are unsent, until
   * they drain (the relay: each frame it sends answers one it read). Unset:
   * read without pause (the gateway, so the two ends never wait on each other).
   */
  pauseReadsOverBytes?: number;
}

export interface LaneSocketHandlers {
  /** A frame for a half, or the error that ends the lane (malformed input). */
  frame(f: HopFrame | HashmailError): void;
  /** The lane is over: `err` null when the peer closed it in order. Called once. */
  closed(err: HashmailError | null): void;
}

export class LaneSocket {
  private socket: Duplex | null = null;
  /** Frames written before the socket is attached (the gateway's first OPEN frames), length prefix included. */
  private early: { frame: Buffer; flushed?: () => void }[] = [];
  private corked = false;
  private chunks: Buffer[] = [];
  private buffered = 0;
  private over = false;
  private lastHeard = Date.now();
  /** A frame cut across many reads, filled up to `assembled` bytes (length prefix included). */
  private assembly: Buffer | null = null;
  private assembled = 0;
  /** Since when buffered bytes are an incomplete frame (null: none). */
  private partialSince: number | null = null;
  /** Since when reading is paused for unsent bytes (null: reading). */
  private pausedSince: number | null = null;
  private pongQueued = false;
  private timer: NodeJS.Timeout | null = null;
  private handlers: LaneSocketHandlers | null = null;

  constructor(private readonly options: LaneSocketOptions) {}

  /** Starts reading `socket`; frames written earlier go out first. */
  attach(socket: Duplex, handlers: LaneSocketHandlers): void {
    if (this.over) {
      socket.destroy();
      return;
    }
    this.socket = socket;
    this.handlers = handlers;
    this.lastHeard = Date.now();
    socket.on('data', (chunk: Buffer) => this.read(chunk));
    socket.once('end', () => {
      this.finish(null);
      endWithin(socket, LANE_END_GRACE_MS);
    });
    socket.once('close', () => this.finish(new HashmailError('RELAY_UNREACHABLE', 'hop: lane connection closed')));
    socket.on('error', () => undefined);
    const early = this.early;
    this.early = [];
    for (const w of early) this.send(w.frame, null, w.flushed);
    const every = this.options.pingEveryMs ?? this.options.silenceLimitMs;
    this.timer = setInterval(() => this.tick(), Math.min(every, this.options.silenceLimitMs));
    this.timer.unref();
  }

  /** Reads held apart while a frame is incomplete (tests: a trickled frame holds few). */
  get heldReads(): number {
    return this.chunks.length;
  }

  /** Sends one encoded frame; `flushed` runs once it left for the kernel. */
  write(frame: Buffer, flushed?: () => void): void {
    // One buffer, one queued write: control frames are a few bytes, and a queued write costs more than they do.
    const out = Buffer.allocUnsafe(HEADER_BYTES + frame.length);
    out.writeUInt32BE(frame.length, 0);
    frame.copy(out, HEADER_BYTES);
    this.send(out, null, flushed);
  }

  /** Sends a DATA frame for `half` without copying `msg` (which must not change until `flushed`). */
  writeData(half: number, msg: Buffer, flushed?: () => void): void {
    const headBytes = dataHeadSize(half, msg.length);
    const head = Buffer.allocUnsafe(HEADER_BYTES + headBytes);
    head.writeUInt32BE(headBytes + msg.length, 0);
    writeDataHead(head, HEADER_BYTES, half, msg.length);
    this.send(head, msg, flushed);
  }

  /** `head` then `body` (null: `head` is the whole frame). */
  private send(head: Buffer, body: Buffer | null, flushed?: () => void): void {
    if (this.over) return;
    const socket = this.socket;
    if (!socket) {
      this.early.push({ frame: body ? Buffer.concat([head, body]) : head, flushed });
      return;
    }
    if (!this.corked) {
      this.corked = true;
      socket.cork();
      setImmediate(() => {
        this.corked = false;
        socket.uncork();
      });
    }
    // An empty message travels in its head alone, so `flushed` rides on a write that carries bytes.
    if (body === null || body.length === 0) socket.write(head, flushed);
    else {
      socket.write(head);
      socket.write(body, flushed);
    }
    const limit = this.options.pauseReadsOverBytes;
    // Only once a write was refused: that is what 'drain' (the resume) answers.
    if (limit !== undefined && this.pausedSince === null && socket.writableLength > limit && socket.writableNeedDrain) this.pauseReads(socket);
  }

  /** The peer is not taking what we send: read nothing more (so answer nothing more) until it has. */
  private pauseReads(socket: Duplex): void {
    this.pausedSince = Date.now();
    socket.pause();
    socket.once('drain', () => {
      if (this.over) return;
      this.pausedSince = null;
      // The pause was ours, not the peer's silence.
      this.lastHeard = Date.now();
      if (this.partialSince !== null) this.partialSince = Date.now();
      socket.resume();
    });
  }

  /** Ends the lane in order (what was written still goes out, within LANE_END_GRACE_MS). */
  end(): void {
    if (this.over) return;
    this.finish(null);
    if (this.socket) endWithin(this.socket, LANE_END_GRACE_MS);
  }

  /** Ends the lane at once. */
  destroy(err: HashmailError): void {
    if (this.over) return;
    this.finish(err);
    this.socket?.destroy();
  }

  private tick(): void {
    const now = Date.now();
    const limit = this.options.silenceLimitMs;
    if (this.pausedSince !== null) {
      const stalled = now - this.pausedSince;
      if (stalled >= limit) this.destroy(new HashmailError('RELAY_UNREACHABLE', `hop: lane peer took nothing for ${stalled} ms`));
      // Not reading, so neither silence nor a slow frame is the peer's doing.
      return;
    }
    const silent = now - this.lastHeard;
    if (silent >= limit) {
      this.destroy(new HashmailError('RELAY_UNREACHABLE', `hop: lane silent for ${silent} ms`));
    } else if (this.partialSince !== null && now - this.partialSince >= limit) {
      this.deliver(new HashmailError('MALFORMED_REQUEST', `hop: lane frame not whole ${now - this.partialSince} ms after its first byte`));
    } else if (this.options.pingEveryMs !== undefined) {
      this.write(encodeControlFrame(LANE, FrameKind.PING));
    }
  }

  private read(chunk: Buffer): void {
    // An ended lane takes nothing more: a peer keeping its side open must not fill our memory until the grace.
    if (this.over) return;
    this.lastHeard = Date.now();
    if (this.assembly) {
      const used = Math.min(chunk.length, this.assembly.length - this.assembled);
      chunk.copy(this.assembly, this.assembled, 0, used);
      this.assembled += used;
      if (this.assembled < this.assembly.length) return;
      const frame = this.assembly;
      this.assembly = null;
      this.partialSince = null;
      this.decode(frame.subarray(HEADER_BYTES));
      if (this.over || used === chunk.length) return;
      chunk = chunk.subarray(used);
    }
    this.chunks.push(chunk);
    this.buffered += chunk.length;
    while (!this.over && this.buffered >= HEADER_BYTES) {
      const first = this.chunks[0].length >= HEADER_BYTES ? this.chunks[0] : this.joinReads();
      const length = first.readUInt32BE(0);
      if (length > this.options.maxFrameBytes) {
        this.deliver(new HashmailError('MALFORMED_REQUEST', `hop: lane frame of ${length} bytes, over the limit of ${this.options.maxFrameBytes}`));
        return;
      }
      if (this.buffered < HEADER_BYTES + length) {
        this.partialSince ??= Date.now();
        if (this.chunks.length >= MAX_HELD_READS) this.assemble(HEADER_BYTES + length);
        return;
      }
      this.partialSince = null;
      this.decode(this.take(HEADER_BYTES + length).subarray(HEADER_BYTES));
    }
    if (this.buffered > 0 && !this.over) this.partialSince ??= Date.now();
  }

  /** Moves the buffered reads into one buffer of the frame's `size`; the rest of the frame is copied in as it comes. */
  private assemble(size: number): void {
    const out = Buffer.allocUnsafe(size);
    let pos = 0;
    for (const c of this.chunks) {
      c.copy(out, pos);
      pos += c.length;
    }
    this.chunks = [];
    this.buffered = 0;
    this.assembly = out;
    this.assembled = pos;
  }

  private decode(body: Buffer): void {
    let f: HopFrame | HashmailError;
    try {
      f = decodeHopFrame(body);
    } catch (err) {
      f = err instanceof HashmailError ? err : new HashmailError('MALFORMED_REQUEST', 'hop: malformed frame');
    }
    this.deliver(f);
  }

  /** Every buffered read as one (a length prefix cut across reads). */
  private joinReads(): Buffer {
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined;
  }

  /** Removes the first `n` buffered bytes and returns them in a buffer of their own. */
  private take(n: number): Buffer {
    this.buffered -= n;
    const head = this.chunks[0];
    if (head.length >= n) {
      const frame = head.subarray(0, n);
      if (head.length === n) this.chunks.shift();
      else this.chunks[0] = head.subarray(n);
      // Copying a large frame costs more (and feeds the GC more) than the rest of its read it keeps alive.
      return frame.buffer.byteLength <= 2 * n ? frame : Buffer.from(frame);
    }
    const out = Buffer.allocUnsafe(n);
    let pos = 0;
    while (pos < n) {
      const c = this.chunks[0];
      const used = Math.min(c.length, n - pos);
      c.copy(out, pos, 0, used);
      pos += used;
      if (used === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(used);
    }
    return out;
  }

  private deliver(f: HopFrame | HashmailError): void {
    if (f instanceof HashmailError) {
      this.handlers?.frame(f);
      this.destroy(f);
      return;
    }
    if (f.half === LANE && f.kind === FrameKind.PING) {
      // One PONG on its way answers every PING that came meanwhile: a peer flooding PINGs without reading queues nothing.
      if (this.pongQueued) return;
      this.pongQueued = true;
      this.write(encodeControlFrame(LANE, FrameKind.PONG), this.pongSent);
      return;
    }
    if (f.half === LANE && f.kind === FrameKind.PONG) return;
    this.handlers?.frame(f);
  }

  private readonly pongSent = (): void => {
    this.pongQueued = false;
  };

  private finish(err: HashmailError | null): void {
    if (this.over) return;
    this.over = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    this.chunks = [];
    this.buffered = 0;
    this.assembly = null;
    this.partialSince = null;
    this.early = [];
    this.handlers?.closed(err);
  }
}
