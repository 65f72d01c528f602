/**
 * One v2 party on one WebSocket (docs/protocol-v2.md): Hello, then Data both
 * ways, Presence as the peer comes and goes, an Error frame and a 4000+code
 * close on failure. Flow control is the socket's own: a slow reader stops
 * the pump taking messages from the box, a writer facing a full window stops
 * being read, so TCP pushes back on it. The endpoint is released exactly
 * once, on whichever comes first: socket gone, failure, session torn down.
 *
 * Idle sockets are the common case (an LNC session sits open for hours), so
 * per-socket state is this object and the few fields of V2Socket: the socket
 * listeners are module functions shared by every socket, timers are shared
 * (keepalive), buffers exist only while a message is in flight.
 */
import { WebSocket, type RawData } from 'ws';
import type { Logger } from '../../observe/logger.js';
import type { RelayStats } from '../../observe/stats.js';
import { ReadPump } from '../../relay/read-pump.js';
import type { V2Endpoint, V2Mailbox } from '../../relay/v2-mailbox.js';
import { HashmailError } from '../../session/errors.js';
import { CALL_OVER } from '../../session/abort-reason.js';
import { shortHash } from '../../session/sid.js';
import { decodeClientFrame, encodeDataFrame, encodeWelcome, FrameDecodeError, PRESENCE_FRAMES, type ClientFrame, type Hello } from '../../wire/v2-frames.js';
import type { Keepalive, KeepaliveEntry } from '../rest-ws-v1/keepalive.js';
import { CLOSE_CODE_BASE, closeReason, errorFrame, noteError } from './ws-v2-errors.js';

/**
 * Bytes a socket may hold unsent before the pump takes the next message from
 * the box: past it the pump waits for the socket to drain, so a slow reader
 * pushes back on the box (and so on the peer) instead of on our memory.
 */
export const SEND_HIGH_WATER_BYTES = 64 * 1024;
/**
 * A payload whose backing memory exceeds it by more than this shared a
 * socket read with other frames; it is copied so the box, which counts
 * payload bytes only, does not hold the whole read alive.
 */
const RETAINED_SLACK_BYTES = 64;
/** Log subsystem name (`HASHMAIL_TRACE=ws-v2`). */
export const LOG_SUBSYSTEM = 'ws-v2';

const EMPTY_PAYLOAD: Buffer = Buffer.alloc(0);

/** What every party of the gateway shares. */
export interface PartyContext {
  readonly v2: V2Mailbox;
  readonly logger: Logger;
  readonly stats: RelayStats;
  readonly keepalive: Keepalive;
  /** Parties not yet finished (shutdown ends them all). */
  readonly parties: Set<WsV2Party>;
  /** WebSockets not yet closed (metrics). */
  openSockets: number;
}

/** The gateway's WebSocket class: the socket points at its party, so the listeners need no closures. */
export class V2Socket extends WebSocket {
  party: WsV2Party | null = null;
}

/** The payload as a Buffer the box may keep: zero-copy when it arrived alone in its read, else copied. */
function ownPayload(payload: Uint8Array): Buffer {
  if (payload.length === 0) return EMPTY_PAYLOAD;
  if (payload.buffer.byteLength > payload.length + RETAINED_SLACK_BYTES) return Buffer.from(payload);
  return Buffer.from(payload.buffer, payload.byteOffset, payload.length);
}

function asBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

// Listeners shared by every socket; `this` is the socket, always a V2Socket here.
function onSocketMessage(this: WebSocket, data: RawData, isBinary: boolean): void {
  (this as V2Socket).party?.onMessage(data, isBinary);
}
function onSocketPong(this: WebSocket): void {
  (this as V2Socket).party?.sawPong();
}
function onSocketPing(this: WebSocket): void {
  (this as V2Socket).party?.sawPing();
}
function onSocketError(this: WebSocket, err: Error): void {
  (this as V2Socket).party?.onSocketError(err);
}
function onSocketClose(this: WebSocket): void {
  const ws = this as V2Socket;
  const party = ws.party;
  ws.party = null;
  party?.onSocketClosed();
}

const enum State {
  AwaitingHello,
  Attaching,
  Open,
  Done,
}

export class WsV2Party {
  private state = State.AwaitingHello;
  /** Client address for per-address limits; dropped once the hello is handled. */
  private address: string | null;
  private readonly keep: KeepaliveEntry | null;
  private attachAbort: AbortController | null = null;
  private endpoint: V2Endpoint | null = null;
  /** Data frames received while a write (or the attach) is pending, in order; the socket is paused meanwhile. */
  private inbox: Buffer[] | null = null;
  private writing = false;
  private paused = false;
  /** Resolves the pump's wait for the socket to drain. */

  constructor(
    private readonly ctx: PartyContext,
    private readonly ws: V2Socket,
    address: string,
  ) {
    this.address = address;
    ws.party = this;
    ctx.parties.add(this);
    ctx.openSockets++;
    ws.on('message', onSocketMessage);
    ws.on('error', onSocketError);
    ws.on('close', onSocketClose);
    this.keep = ctx.keepalive.track(ws);
    if (this.keep) {
      ws.on('pong', onSocketPong);
      ws.on('ping', onSocketPing);
    }
  }

  /** Read through a getter: TypeScript would otherwise keep the state narrowed across awaits. */
  private get done(): boolean {
    return this.state === State.Done;
  }

  /**
   * A pong is life, once the Hello came. Before it, neither a pong nor the
   * client's own ping keeps the socket: one that never says Hello is dropped
   * as a silent one is (v2.pingIntervalMs + v2.pingTimeoutMs), however
   * faithfully its WebSocket answers pings.
   */
  sawPong(): void {
    if (this.state !== State.AwaitingHello) this.keep?.sawPong();
  }

  /**
   * The client pinged us (ws answers the pong): it is alive, as for data, so
   * this interval needs no ping of ours. A client that pings more often than
   * v2.pingIntervalMs (ours: every 10 s) is never pinged, which halves the
   * idle ping traffic; browsers cannot ping and are pinged as before.
   */
  sawPing(): void {
    if (this.state !== State.AwaitingHello) this.keep?.sawData();
  }

  onMessage(data: RawData, isBinary: boolean): void {
    // Any data frame is life, as in v1: a busy writer's pong queues behind its data.
    this.keep?.sawData();
    if (this.done) return;
    if (!isBinary) {
      this.fail(new HashmailError('MALFORMED_REQUEST', 'text message: v2 frames travel as binary WebSocket messages'));
      return;
    }
    let frame: ClientFrame;
    try {
      frame = decodeClientFrame(asBuffer(data));
    } catch (err) {
      this.fail(err instanceof FrameDecodeError ? new HashmailError('MALFORMED_REQUEST', `malformed frame: ${err.message}`) : err);
      return;
    }
    if ('hello' in frame) {
      if (this.state === State.AwaitingHello) void this.attach(frame.hello);
      else this.fail(new HashmailError('MALFORMED_REQUEST', 'second hello: a stream sends exactly one hello'));
    } else if (this.state === State.AwaitingHello) {
      this.fail(new HashmailError('MALFORMED_REQUEST', 'first frame must be hello'));
    } else {
      this.accept(ownPayload(frame.data));
    }
  }

  onSocketError(err: Error & { code?: unknown }): void {
    // ws reports protocol violations here and closes the socket itself (1002, 1009, ...): no error frame can follow.
    if (!this.done) {
      this.ctx.stats.countError(err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'MESSAGE_TOO_LARGE' : 'MALFORMED_REQUEST');
    }
    this.ctx.logger.debug({ transport: 'websocket', code: err.code, err: err.message }, 'v2 socket error');
    this.finish();
  }

  onSocketClosed(): void {
    this.ctx.openSockets--;
    this.finish();
  }

  /** Reports `err` in an Error frame and closes with 4000 + its code; no-op once the party ended. */
  fail(err: unknown): void {
    if (this.done) return;
    const e = noteError(this.ctx, err);
    this.finish();
    const ws = this.ws;
    if (ws.readyState !== WebSocket.OPEN) return;
    ws.send(errorFrame(e));
    // The close handshake needs the client's close frame read.
    if (ws.isPaused) ws.resume();
    ws.close(CLOSE_CODE_BASE + e.grpcCode, closeReason(e.message));
  }

  private async attach(hello: Hello): Promise<void> {
    this.state = State.Attaching;
    const abort = new AbortController();
    this.attachAbort = abort;
    const call = { transport: 'websocket' as const, address: this.address ?? 'unknown' };
    this.address = null;
    let endpoint: V2Endpoint;
    try {
      endpoint = await this.ctx.v2.attach(hello, call, abort.signal);
    } catch (err) {
      this.fail(err);
      return;
    }
    this.attachAbort = null;
    // The client left while the slots were being granted.
    if (this.done) {
      endpoint.release();
      return;
    }
    this.endpoint = endpoint;
    this.state = State.Open;
    if (this.ctx.logger.isLevelEnabled('debug')) {
      this.ctx.logger.debug({ transport: 'websocket', sid: shortHash(hello.sid), version: endpoint.version, peerPresent: endpoint.peerPresent }, 'v2 party attached');
    }
    const ws = this.ws;
    ws.send(encodeWelcome(endpoint.version, endpoint.peerPresent, endpoint.maxMessageBytes));
    endpoint.onPresence((present) => ws.send(present ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent));
    endpoint.onClosed((err) => this.fail(err));
    this.pump(endpoint);
    const first = this.inbox?.shift();
    if (first !== undefined) void this.writeLoop(endpoint, first);
  }

  /** A data frame from the client: written now, or queued behind the pending write with the socket paused. */
  private accept(msg: Buffer): void {
    if (this.state === State.Open && !this.writing) {
      // Most writes fit at once: no promise, no loop.
      const endpoint = this.endpoint as V2Endpoint;
      let pending: Promise<void> | undefined;
      try {
        pending = endpoint.write(msg);
      } catch (err) {
        this.fail(err);
        return;
      }
      if (pending) void this.writeLoop(endpoint, pending);
      return;
    }
    // Paused lazily, on the second frame: a write that completes at once
    // (room in the window) then costs no pause/resume of the socket. What
    // still arrives while paused is what ws had already read (one socket
    // read at most), so the inbox stays small.
    (this.inbox ??= []).push(msg);
    if (!this.paused) {
      this.paused = true;
      this.ws.pause();
    }
  }

  /** Writes `first`, then whatever queued behind it, in order; resumes the socket once caught up. */
  private async writeLoop(endpoint: V2Endpoint, first: Promise<void> | Buffer): Promise<void> {
    this.writing = true;
    try {
      if (!Buffer.isBuffer(first)) {
        await first;
        if (this.done) return;
      }
      for (let msg = Buffer.isBuffer(first) ? first : this.inbox?.shift(); msg !== undefined; msg = this.inbox?.shift()) {
        await endpoint.write(msg);
        if (this.done) return;
      }
    } catch (err) {
      this.fail(err);
      return;
    } finally {
      this.writing = false;
    }
    this.inbox = null;
    if (this.paused) {
      this.paused = false;
      this.ws.resume();
    }
  }

  /** Box -> socket, holding back while the socket has more than the high-water mark unsent. */
  private pump(endpoint: V2Endpoint): void {
    const ws = this.ws;
    const pump: ReadPump = new ReadPump(
      endpoint,
      (msg, flushed) => {
        // A message taken by a party that then left is not delivered again (protocol: Delivery).
        if (this.done) return false;
        const frame = encodeDataFrame(msg);
        // Callbacks run once the frame went to the kernel, or the socket failed.
        if (ws.bufferedAmount + frame.length <= SEND_HIGH_WATER_BYTES) {
          ws.send(frame, flushed);
          return true;
        }
        ws.send(frame, pump.flushedThenResume);
        return false;
      },
      (err) => this.fail(err),
    );
    pump.resume();
  }

  /** Frees everything the party holds, at once; the client is not told. Idempotent. */
  private finish(): void {
    if (this.done) return;
    this.state = State.Done;
    this.ctx.parties.delete(this);
    this.ctx.keepalive.untrack(this.keep);
    // A client gone while waiting for a slot must not be granted it.
    this.attachAbort?.abort(CALL_OVER);
    this.attachAbort = null;
    this.endpoint?.release();
    this.endpoint = null;
    this.inbox = null;
  }
}
