/**
 * RecvStream and SendStream over one WebSocket each, as the deployed browser
 * client uses them (spec section 4). Each client message is JSON request
 * object(s); each server frame is compact JSON starting `{"result":` or
 * `{"error":`. A failure frame is always followed by the end of the socket.
 * A call releases its half exactly once, on whichever comes first: socket
 * close, failure, or the box going away.
 */
import type { RawData, WebSocket } from 'ws';
import type { CallInfo, LegacyReceive } from '../../relay/legacy-operations.js';
import { ReadPump } from '../../relay/read-pump.js';
import { HashmailError } from '../../session/errors.js';
import { shortHash } from '../../session/sid.js';
import type { GrpcCallMetrics } from '../../observe/grpc-metrics.js';
import { CANCELLED_CODE, MAX_SMALL_REQUEST_BYTES, noteError, OK_CODE, startCallMetrics, type GatewayContext, type OpenCall } from './context.js';
import {
  errorFrame,
  parseCipherBox,
  parseCipherBoxDesc,
  resultFrame,
  resultFramePrefix,
  type CipherBoxDesc,
} from './json-codec.js';
import { splitJsonObjects } from './json-splitter.js';
import { LARGE_INPUT_BYTES, SendQueue } from './send-queue.js';
import type { Keepalive, KeepaliveEntry } from './keepalive.js';
import { CALL_OVER } from '../../session/abort-reason.js';

/**
 * Bytes a receive socket may hold unsent before the next message is taken
 * from the box: past it the call waits for the socket to drain, so a slow
 * browser pushes back on the box (and so on the writer) instead of on memory.
 */
export const RECEIVE_HIGH_WATER_BYTES = 64 * 1024;
/** Close code after a failure frame (the reference just dropped TCP; any close makes clients redial). */
const CLOSE_NORMAL = 1000;
/** Close code when the server shuts down. */
const CLOSE_GOING_AWAY = 1001;
/** A close frame without a code (RFC 6455 7.1.5), as `ws.close()` sends. */
const CLOSE_NO_STATUS = 1005;
/** WebSocket close codes of a client that ended its side on purpose (a close frame, not a dropped TCP). */
const CLIENT_DONE_CLOSE_CODES = new Set([CLOSE_NORMAL, CLOSE_GOING_AWAY, CLOSE_NO_STATUS]);

export interface WsContext extends GatewayContext {
  readonly keepalive: Keepalive;
}

function toBuffer(data: RawData): Buffer {
  if (Buffer.isBuffer(data)) return data;
  if (Array.isArray(data)) return Buffer.concat(data);
  return Buffer.from(data);
}

/** Sends `err` as the socket's last frame, then closes it. */
export function sendErrorAndClose(ws: WebSocket, err: HashmailError): void {
  if (ws.readyState !== ws.OPEN) return;
  ws.send(errorFrame(err));
  // Reading must go on for the close handshake to complete.
  if (ws.isPaused) ws.resume();
  ws.close(err.code === 'SERVER_SHUTTING_DOWN' ? CLOSE_GOING_AWAY : CLOSE_NORMAL);
}

abstract class WsCall implements OpenCall {
  protected done = false;
  protected readonly call: CallInfo;
  /** The call in grpc_server_* (transport="websocket"), as the reference's gateway counted it. */
  protected readonly metrics: GrpcCallMetrics;
  private readonly entry: KeepaliveEntry | null;

  constructor(
    protected readonly ctx: WsContext,
    protected readonly ws: WebSocket,
    address: string,
    private readonly name: 'receive' | 'send',
  ) {
    this.call = { transport: 'websocket', address };
    this.metrics = startCallMetrics(ctx, name, 'websocket');
    this.entry = ctx.keepalive.track(ws);
    ctx.calls.add(this);
    ws.on('message', (data: RawData) => {
      this.entry?.sawData();
      if (!this.done) this.onMessage(toBuffer(data));
    });
    if (this.entry) {
      const entry = this.entry;
      ws.on('pong', () => entry.sawPong());
    }
    ws.on('close', (code: number) => {
      ctx.keepalive.untrack(this.entry);
      // First status wins: after abort() this is a no-op.
      this.metrics.done(this.clientClosedCode(code));
      this.finish();
    });
    ws.on('error', (err) => ctx.logger.debug({ transport: 'websocket', call: name, err: err.message }, 'socket error'));
  }

  /** Reports `err` in an error frame and ends the socket; no-op once the call ended. */
  abort(err: unknown): void {
    if (this.done) return;
    const e = noteError(this.ctx, err, 'websocket', this.name);
    this.metrics.done(e.grpcCode);
    this.finish();
    sendErrorAndClose(this.ws, e);
  }

  protected abstract onMessage(data: Buffer): void;

  /**
   * The gRPC status counted when the client closes the socket first: a
   * reader that leaves cancels its stream; a writer that closes cleanly has
   * ended its stream (the gateway's CloseSend), anything else cancels it.
   */
  protected clientClosedCode(closeCode: number): number {
    return this.name === 'send' && CLIENT_DONE_CLOSE_CODES.has(closeCode) ? OK_CODE : CANCELLED_CODE;
  }

  /** Frees what the call holds; the client is not told. Idempotent. */
  protected finish(): void {
    if (this.done) return;
    this.done = true;
    this.ctx.calls.delete(this);
  }
}

/**
 * The receive socket: exactly one CipherBoxDesc, then one `{"result":...}`
 * frame per message of the box, each carrying the request's desc as sent.
 */
export class WsReceiveCall extends WsCall {
  private requested = false;
  private half: LegacyReceive | null = null;
  private waitAbort: AbortController | null = null;

  constructor(ctx: WsContext, ws: WebSocket, address: string) {
    super(ctx, ws, address, 'receive');
  }

  protected onMessage(data: Buffer): void {
    if (this.requested) {
      this.abort(new HashmailError('MALFORMED_REQUEST', 'receive takes exactly one request message'));
      return;
    }
    this.requested = true;
    let desc: CipherBoxDesc;
    try {
      const objects = splitJsonObjects(data, MAX_SMALL_REQUEST_BYTES);
      if (objects.length !== 1) throw new HashmailError('MALFORMED_REQUEST', 'receive takes exactly one CipherBoxDesc object');
      desc = parseCipherBoxDesc(objects[0]);
      this.metrics.received();
    } catch (err) {
      this.abort(err);
      return;
    }
    void this.run(desc);
  }

  private async run(desc: CipherBoxDesc): Promise<void> {
    this.waitAbort = new AbortController();
    let half: LegacyReceive;
    try {
      half = await this.ctx.mailbox.openReceive(desc.streamId, this.call, this.waitAbort.signal);
    } catch (err) {
      this.abort(err);
      return;
    }
    this.waitAbort = null;
    if (this.done) {
      half.release();
      return;
    }
    this.half = half;
    half.onBoxClosed((err) => this.abort(err));
    this.ctx.logger.debug({ transport: 'websocket', call: 'receive', sid: shortHash(desc.streamId) }, 'reader attached');
    const prefix = resultFramePrefix(desc);
    const ws = this.ws;
    const pump: ReadPump = new ReadPump(
      half,
      (msg, flushed) => {
        // A message taken by a reader that left is not delivered again (legacy semantics).
        if (this.done) return false;
        const frame = resultFrame(prefix, msg);
        this.metrics.sent();
        // Callbacks run once the frame left for the kernel (or the socket failed).
        if (ws.bufferedAmount + frame.length <= RECEIVE_HIGH_WATER_BYTES) {
          ws.send(frame, flushed);
          return true;
        }
        ws.send(frame, pump.flushedThenResume);
        return false;
      },
      (err) => this.abort(err),
    );
    pump.resume();
  }

  protected override finish(): void {
    if (this.done) return;
    super.finish();
    // A client gone while waiting for the slot must not be granted it.
    this.waitAbort?.abort(CALL_OVER);
    this.waitAbort = null;
    this.half?.release();
    this.half = null;
  }
}

/**
 * The send socket: any number of CipherBox objects, several per message
 * allowed. The first names the box; every one, the first included, is
 * written in order. While a write waits (rate limit, full box) the socket is
 * paused, so the box's bound pushes back on the client's TCP.
 *
 * On failure the reference writes the unwrapped status
 * (`{"code":..,"message":..,"details":[]}`) only after the client's next
 * write. We send the wrapped `{"error":{...}}` frame at once and end the
 * socket: the deployed clients never read their send socket, treat any close
 * as a failure and redial, so no client depends on the reference's form.
 */
export class WsSendCall extends WsCall {
  private readonly writer: SendQueue;

  constructor(ctx: WsContext, ws: WebSocket, address: string) {
    super(ctx, ws, address, 'send');
    this.writer = new SendQueue({
      mailbox: ctx.mailbox,
      logger: ctx.logger,
      call: this.call,
      source: ws,
      fail: (err) => this.abort(err),
      caughtUp: () => undefined,
    });
  }

  protected onMessage(data: Buffer): void {
    try {
      for (const json of splitJsonObjects(data, this.ctx.maxCipherBoxJsonBytes)) {
        this.writer.push(parseCipherBox(json));
        this.metrics.received();
      }
    } catch (err) {
      this.abort(err);
      return;
    }
    this.writer.flush();
    if (data.length >= LARGE_INPUT_BYTES) this.writer.yieldTurn();
  }

  protected override finish(): void {
    if (this.done) return;
    super.finish();
    this.writer.close();
  }
}
