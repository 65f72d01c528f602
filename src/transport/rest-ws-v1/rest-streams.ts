/**
 * RecvStream and SendStream over plain HTTP/1.1 (no WebSocket), as
 * grpc-gateway serves them: the receive answer is a chunked stream of
 * `{"result":...}` lines, the send body a stream of CipherBox objects.
 * Deployed clients use WebSocket; this path exists because the reference
 * serves it, and it shares the mailbox semantics with every other transport.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { CallInfo, LegacyReceive } from '../../relay/legacy-operations.js';
import { ReadPump } from '../../relay/read-pump.js';
import { HashmailError } from '../../session/errors.js';
import { shortHash } from '../../session/sid.js';
import type { GrpcCallMetrics } from '../../observe/grpc-metrics.js';
import { CANCELLED_CODE, MAX_SMALL_REQUEST_BYTES, noteError, OK_CODE, startCallMetrics, type GatewayContext, type OpenCall } from './context.js';
import { readBody, sendError, sendJson, startJsonStream } from './http-reply.js';
import {
  cipherBoxDescJson,
  errorFrame,
  parseCipherBox,
  parseCipherBoxDesc,
  resultFrame,
  resultFramePrefix,
  type CipherBoxDesc,
} from './json-codec.js';
import { JsonObjectSplitter, onlyJsonObject, type BoundedJson } from './json-splitter.js';
import { LARGE_INPUT_BYTES, SendQueue } from './send-queue.js';
import { CALL_OVER } from '../../session/abort-reason.js';

const LINE_END = '\n';

/**
 * POST .../receive. Errors before the read slot is held (bad body, "stream
 * not found", "read stream occupied") are plain HTTP errors with the status
 * body; once held, the 200 header is sent at once (so the caller knows it is
 * attached) and a later failure is the last line, `{"error":{...}}`.
 */
/**
 * An error answered while the request body may be unread. An error found
 * while the parser is still inside the request's first packet (a body that
 * came whole with the headers, as "stream not found" on serve) waits for the
 * rest of that packet, so a complete body keeps the connection as it does
 * when the error comes later (through a gateway); a body still arriving
 * closes the connection (Connection: close), never waited for.
 */
function answerError(req: IncomingMessage, res: ServerResponse, e: HashmailError): void {
  if (req.complete) sendError(res, e);
  else setImmediate(() => sendError(res, e, !req.complete));
}

export class RestReceiveCall implements OpenCall {
  private done = false;
  private half: LegacyReceive | null = null;
  private readonly waitAbort = new AbortController();
  private readonly metrics: GrpcCallMetrics;

  constructor(
    private readonly ctx: GatewayContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    this.metrics = startCallMetrics(ctx, 'receive', 'rest');
    ctx.calls.add(this);
    res.on('close', () => {
      // First status wins: after abort() this is a no-op.
      this.metrics.done(CANCELLED_CODE);
      this.finish();
    });
    void this.run();
  }

  abort(err: unknown): void {
    if (this.done) return;
    this.finish();
    const e = noteError(this.ctx, err, 'rest', 'receive');
    this.metrics.done(e.grpcCode);
    if (this.res.headersSent) this.res.end(errorFrame(e) + LINE_END);
    else answerError(this.req, this.res, e);
  }

  private async run(): Promise<void> {
    let desc: CipherBoxDesc;
    let half: LegacyReceive;
    try {
      const body = onlyJsonObject(await readBody(this.req, MAX_SMALL_REQUEST_BYTES), MAX_SMALL_REQUEST_BYTES, 'CipherBoxDesc');
      // An empty body is the empty CipherBoxDesc (grpc-gateway reads EOF as "no fields").
      desc = body === null ? { streamId: Buffer.alloc(0) } : parseCipherBoxDesc(body);
      this.metrics.received();
      const call: CallInfo = { transport: 'rest', address: this.ctx.clientAddress(this.req) };
      half = await this.ctx.mailbox.openReceive(desc.streamId, call, this.waitAbort.signal);
    } catch (err) {
      this.abort(err);
      return;
    }
    if (this.done) {
      half.release();
      return;
    }
    this.half = half;
    half.onBoxClosed((err) => this.abort(err));
    this.ctx.logger.debug({ transport: 'rest', call: 'receive', sid: shortHash(desc.streamId) }, 'reader attached');
    startJsonStream(this.res);
    const prefix = resultFramePrefix(desc);
    const res = this.res;
    const pump: ReadPump = new ReadPump(
      half,
      (msg, flushed) => {
        // A message taken by a reader that left is not delivered again (legacy semantics).
        if (this.done) return false;
        this.metrics.sent();
        if (res.write(resultFrame(prefix, msg) + LINE_END, flushed)) return true;
        res.once('drain', pump.resume);
        return false;
      },
      (err) => this.abort(err),
    );
    pump.resume();
  }

  /** Ends the call without telling the client (it left, or abort() tells it). Idempotent. */
  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.ctx.calls.delete(this);
    this.waitAbort.abort(CALL_OVER);
    this.half?.release();
    this.half = null;
  }
}

/**
 * POST .../send: CipherBox objects, newline-delimited or concatenated, written
 * into the box in order. While a write waits (rate limit, full box) the
 * request is paused, so the box's bound pushes back on the sender's TCP.
 * At the end of the body the answer is the CipherBoxDesc of the first message.
 */
export class RestSendCall implements OpenCall {
  private done = false;
  private readonly splitter: JsonObjectSplitter;
  private readonly writer: SendQueue;
  private ended = false;
  /** The chunk being scanned completed a large object: the request yields its turn after it. */
  private decodedLarge = false;
  private readonly metrics: GrpcCallMetrics;

  constructor(
    private readonly ctx: GatewayContext,
    private readonly req: IncomingMessage,
    private readonly res: ServerResponse,
  ) {
    this.metrics = startCallMetrics(ctx, 'send', 'rest');
    this.splitter = new JsonObjectSplitter(ctx.maxCipherBoxJsonBytes);
    this.writer = new SendQueue({
      mailbox: ctx.mailbox,
      logger: ctx.logger,
      call: { transport: 'rest', address: ctx.clientAddress(req) },
      source: req,
      fail: (err) => this.abort(err),
      caughtUp: () => {
        if (this.ended) this.complete();
      },
    });
    ctx.calls.add(this);
    res.on('close', () => {
      this.metrics.done(CANCELLED_CODE);
      this.finish();
    });
    req.on('data', (chunk: Buffer) => this.onData(chunk));
    req.on('end', () => this.onEnd());
  }

  abort(err: unknown): void {
    if (this.done) return;
    this.finish();
    const e = noteError(this.ctx, err, 'rest', 'send');
    this.metrics.done(e.grpcCode);
    answerError(this.req, this.res, e);
  }

  private readonly onObject = (json: BoundedJson): void => {
    this.writer.push(parseCipherBox(json));
    this.metrics.received();
    if (json.length >= LARGE_INPUT_BYTES) this.decodedLarge = true;
  };

  private onData(chunk: Buffer): void {
    if (this.done) return;
    this.decodedLarge = false;
    try {
      this.splitter.push(chunk, this.onObject);
    } catch (err) {
      this.abort(err);
      return;
    }
    this.writer.flush();
    if (this.decodedLarge) this.writer.yieldTurn();
  }

  private onEnd(): void {
    if (this.done) return;
    try {
      this.splitter.end();
    } catch (err) {
      this.abort(err);
      return;
    }
    this.ended = true;
    this.writer.flush();
  }

  private complete(): void {
    // A body without any message names no box.
    const desc = this.writer.desc;
    if (!desc) {
      this.abort(new HashmailError('DESC_REQUIRED'));
      return;
    }
    const answer = (): void => {
      if (this.done) return;
      this.metrics.sent();
      this.metrics.done(OK_CODE);
      this.finish();
      sendJson(this.res, 200, cipherBoxDescJson(desc));
    };
    const finishing = this.writer.finish();
    if (finishing) finishing.then(answer, (err: unknown) => this.abort(err));
    else answer();
  }

  /** Frees the slot at once (legacy: a writer that ends or drops frees it). Idempotent. */
  private finish(): void {
    if (this.done) return;
    this.done = true;
    this.ctx.calls.delete(this);
    this.writer.close();
  }
}
