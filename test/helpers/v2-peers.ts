/**
 * Raw protocol-v2 parties for integration tests (docs/protocol-v2.md): one
 * over gRPC (hashmail.v2.Mailbox/Connect, one message per frame) and one over
 * WebSocket (/v2/mailbox, subprotocol hashmail.v2, one binary message per
 * frame). Both speak the frames of src/wire/v2-frames.ts and nothing more: no
 * retry, no reconnect, so a test sees exactly what the relay did.
 *
 * Received frames wait in an inbox pulled with a deadline. When the inbox is
 * over its high-water mark the party stops reading its transport (grpc-js
 * pause, ws pause), so a test that reads slowly holds the relay back through
 * HTTP/2 flow control or TCP, as a slow real client would.
 */
import assert from 'node:assert/strict';
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import {
  Attach,
  decodeServerFrame,
  encodeDataFrame,
  encodeHello,
  PROTOCOL_V2,
  type ClientFrame,
  type FrameError,
  type Hello,
  type ServerFrame,
  type Welcome,
} from '../../src/wire/v2-frames.js';
import { AsyncQueue, DEFAULT_WAIT_MS, withTimeout } from './async-queue.js';

export const V2_GRPC_PATH = '/hashmail.v2.Mailbox/Connect';
export const V2_WS_PATH = '/v2/mailbox';
export const V2_SUBPROTOCOL = 'hashmail.v2';
/** Offset of WebSocket close codes over gRPC status codes (doc: close code 4000 + code). */
export const WS_CLOSE_CODE_BASE = 4000;
/** Inbox frames above which a party stops reading its transport. */
const INBOX_HIGH_WATER_FRAMES = 32;
/** Inbox frames below which a paused party reads again. */
const INBOX_LOW_WATER_FRAMES = 8;
/** How long close() waits for the relay to end the stream before cutting it. */
const CLOSE_WAIT_MS = 3_000;
/** Bound on frames skipped while waiting for something specific. */
const MAX_SKIPPED_FRAMES = 100_000;

export type TransportKind = 'grpc' | 'ws';

/** How a stream ended, in gRPC terms on both transports. */
export interface V2End {
  /** gRPC status code; for WebSocket: close code - 4000 (1000 counts as 0 OK), null for any other close code. */
  code: number | null;
  /** gRPC status details, or the WebSocket close reason. */
  message: string;
  /** WebSocket only: the close code as received. */
  wsCloseCode?: number;
}

export type V2Event = { kind: 'frame'; frame: ServerFrame } | { kind: 'bad'; error: string } | { kind: 'end'; end: V2End };

export type { Welcome } from '../../src/wire/v2-frames.js';

export interface HelloOptions {
  sid: Uint8Array;
  minVersion?: number;
  maxVersion?: number;
  attach?: Attach;
}

/** A Welcome was expected and something else came: carries what came. */
export class HelloRefused extends Error {
  override name = 'HelloRefused';
  constructor(
    readonly error: FrameError | null,
    readonly end: V2End | null,
    detail: string,
  ) {
    super(detail);
  }
}

export function helloFrame(opts: HelloOptions): Hello {
  return {
    minVersion: opts.minVersion ?? PROTOCOL_V2,
    maxVersion: opts.maxVersion ?? PROTOCOL_V2,
    sid: opts.sid,
    attach: opts.attach ?? Attach.Create,
  };
}

/** A view of a decoded payload as a Buffer (no copy). */
export function asBuffer(u8: Uint8Array): Buffer {
  return Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength);
}

export function describeFrame(frame: ServerFrame): string {
  if ('welcome' in frame) return `Welcome${JSON.stringify(frame.welcome)}`;
  if ('presence' in frame) return `Presence${JSON.stringify(frame.presence)}`;
  if ('error' in frame) return `Error${JSON.stringify(frame.error)}`;
  return `Data(${frame.data.length} bytes)`;
}

function describeEvent(ev: V2Event): string {
  if (ev.kind === 'frame') return describeFrame(ev.frame);
  if (ev.kind === 'bad') return `undecodable frame (${ev.error})`;
  return `end ${JSON.stringify(ev.end)}`;
}

/** What both parties share: the inbox with its flow control, and the frame-level API. */
export abstract class V2Party {
  abstract readonly transport: TransportKind;
  /** Presence frames that nextData() passed over, in order. */
  readonly presenceSeen: boolean[] = [];
  /** Resolves when the stream ends, whatever the inbox holds. Never rejects. */
  readonly ended: Promise<V2End>;
  protected resolveEnded!: (end: V2End) => void;
  private readonly inbox = new AsyncQueue<V2Event>();
  private paused = false;
  private noPause = false;
  private endValue: V2End | null = null;

  constructor() {
    this.ended = new Promise((resolve) => {
      this.resolveEnded = resolve;
    });
  }

  get isClosed(): boolean {
    return this.endValue !== null;
  }

  /** The end, if it came. */
  get end(): V2End | null {
    return this.endValue;
  }

  /** Frames received and not yet taken. */
  get queued(): number {
    return this.inbox.size;
  }

  protected abstract pauseTransport(): void;
  protected abstract resumeTransport(): void;
  /** Writes one encoded ClientFrame (or any bytes), resolving once the transport took it. */
  abstract sendRaw(bytes: Uint8Array): Promise<void>;
  /** Ends the stream as a client should (gRPC half-close, WebSocket close) and waits for the end. */
  abstract close(): Promise<V2End>;
  /** Cuts the stream at once (gRPC cancel, TCP reset). */
  abstract abort(): void;

  protected deliver(ev: V2Event): void {
    if (ev.kind === 'end') {
      this.endValue = ev.end;
      this.resolveEnded(ev.end);
      this.inbox.end(ev);
      return;
    }
    this.inbox.push(ev);
    if (!this.paused && !this.noPause && this.inbox.size > INBOX_HIGH_WATER_FRAMES) {
      this.paused = true;
      this.pauseTransport();
    }
  }

  /** Marks the end for the waiters of `ended` before the inbox has drained (the transport knows first). */
  protected noteEnded(end: V2End): void {
    this.resolveEnded(end);
  }

  /** The next event: a frame, an undecodable frame or (last, repeated) the end. */
  async nextEvent(timeoutMs = DEFAULT_WAIT_MS): Promise<V2Event> {
    const ev = await this.inbox.next(timeoutMs, `${this.transport} v2 frame`);
    if (this.paused && this.inbox.size < INBOX_LOW_WATER_FRAMES) {
      this.paused = false;
      this.resumeTransport();
    }
    return ev;
  }

  /** The next frame; fails if the stream ends first or the frame does not decode. */
  async nextFrame(timeoutMs = DEFAULT_WAIT_MS): Promise<ServerFrame> {
    const ev = await this.nextEvent(timeoutMs);
    if (ev.kind === 'frame') return ev.frame;
    return assert.fail(`${this.transport}: expected a frame, got ${describeEvent(ev)}`);
  }

  /** The next Data payload; Presence frames on the way are recorded in presenceSeen. */
  async nextData(timeoutMs = DEFAULT_WAIT_MS): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (let i = 0; i < MAX_SKIPPED_FRAMES; i++) {
      const frame = await this.nextFrame(Math.max(1, deadline - Date.now()));
      if ('data' in frame) return asBuffer(frame.data);
      if ('presence' in frame) {
        this.presenceSeen.push(frame.presence.peerPresent);
        continue;
      }
      assert.fail(`${this.transport}: expected Data, got ${describeFrame(frame)}`);
    }
    return assert.fail('too many presence frames');
  }

  /** The next frame must be Presence{peerPresent: expected}. */
  async expectPresence(expected: boolean, timeoutMs = DEFAULT_WAIT_MS): Promise<void> {
    const frame = await this.nextFrame(timeoutMs);
    assert.deepEqual(frame, { presence: { peerPresent: expected } }, `${this.transport}: expected Presence{${expected}}, got ${describeFrame(frame)}`);
  }

  sendFrame(frame: ClientFrame): Promise<void> {
    return this.sendRaw('hello' in frame ? encodeHello(frame.hello) : encodeDataFrame(frame.data));
  }

  sendHello(opts: HelloOptions): Promise<void> {
    return this.sendFrame({ hello: helloFrame(opts) });
  }

  /** Sends Hello and returns the Welcome; throws HelloRefused with the Error frame and end otherwise. */
  async hello(opts: HelloOptions, timeoutMs = DEFAULT_WAIT_MS): Promise<Welcome> {
    await this.sendHello(opts);
    const ev = await this.nextEvent(timeoutMs);
    if (ev.kind === 'frame' && 'welcome' in ev.frame) return ev.frame.welcome;
    if (ev.kind === 'frame' && 'error' in ev.frame) {
      const end = await this.waitEnd(timeoutMs).catch(() => null);
      throw new HelloRefused(ev.frame.error, end, `hello refused: ${describeFrame(ev.frame)}, then ${JSON.stringify(end)}`);
    }
    throw new HelloRefused(null, ev.kind === 'end' ? ev.end : null, `expected Welcome, got ${describeEvent(ev)}`);
  }

  /** Sends one payload as a Data frame, resolving once the transport accepted it (backpressure). */
  send(payload: Uint8Array): Promise<void> {
    return this.sendRaw(encodeDataFrame(payload));
  }

  /** The end of the stream within `timeoutMs`; stops pausing so a full inbox cannot hide it. */
  waitEnd(timeoutMs = DEFAULT_WAIT_MS): Promise<V2End> {
    this.noPause = true;
    if (this.paused) {
      this.paused = false;
      this.resumeTransport();
    }
    return withTimeout(this.ended, timeoutMs, `${this.transport} v2 stream end`);
  }

  /**
   * The next frame must be Error{code} (message matching `message`), then the
   * stream must end with the same code: gRPC status `code`, WebSocket close
   * `4000 + code` with the message as reason.
   */
  async expectError(
    code: number,
    message: RegExp,
    { timeoutMs = DEFAULT_WAIT_MS, skipPresence = false }: { timeoutMs?: number; skipPresence?: boolean } = {},
  ): Promise<{ error: FrameError; end: V2End }> {
    let ev = await this.nextEvent(timeoutMs);
    // A peer torn down first may be announced as gone before our own end.
    for (let i = 0; skipPresence && i < MAX_SKIPPED_FRAMES && ev.kind === 'frame' && 'presence' in ev.frame; i++) {
      this.presenceSeen.push(ev.frame.presence.peerPresent);
      ev = await this.nextEvent(timeoutMs);
    }
    if (ev.kind !== 'frame' || !('error' in ev.frame)) {
      return assert.fail(`${this.transport}: expected Error{code ${code}} frame, got ${describeEvent(ev)}`);
    }
    const error = ev.frame.error;
    assert.equal(error.code, code, `${this.transport}: Error frame code (message "${error.message}")`);
    assert.match(error.message, message, `${this.transport}: Error frame message`);
    const end = await this.waitEnd(timeoutMs);
    assert.equal(end.code, code, `${this.transport}: stream end code, got ${JSON.stringify(end)}`);
    if (this.transport === 'ws') assert.equal(end.wsCloseCode, WS_CLOSE_CODE_BASE + code, 'WebSocket close code');
    assert.match(end.message, message, `${this.transport}: ${this.transport === 'ws' ? 'close reason' : 'status details'}`);
    return { error, end };
  }
}

// ---- gRPC ----

/** What the generic client's serializer takes: a frame to encode, or raw bytes sent as they are. */
export type OutFrame = ClientFrame | { raw: Uint8Array };

function serializeClientFrame(frame: OutFrame): Buffer {
  if ('raw' in frame) return asBuffer(frame.raw);
  return asBuffer('hello' in frame ? encodeHello(frame.hello) : encodeDataFrame(frame.data));
}

const mailboxV2Definition = {
  connect: {
    path: V2_GRPC_PATH,
    requestStream: true,
    responseStream: true,
    requestSerialize: serializeClientFrame,
    requestDeserialize: (b: Buffer): Buffer => b,
    responseSerialize: (f: Buffer): Buffer => f,
    responseDeserialize: (b: Buffer): ServerFrame => decodeServerFrame(b),
    originalName: 'Connect',
  },
} satisfies grpc.ServiceDefinition;

interface MailboxV2Client extends grpc.Client {
  connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<OutFrame, ServerFrame>;
}

const MailboxV2ClientCtor = grpc.makeGenericClientConstructor(mailboxV2Definition, 'Mailbox') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => MailboxV2Client;

export interface GrpcPartyOptions {
  channelOptions?: grpc.ChannelOptions;
}

/** One v2 party over gRPC, on a connection of its own. */
export class GrpcV2Party extends V2Party {
  readonly transport = 'grpc' as const;
  readonly client: MailboxV2Client;
  readonly call: grpc.ClientDuplexStream<OutFrame, ServerFrame>;
  private status: grpc.StatusObject | null = null;
  private readEnded = false;

  constructor(address: string, options: GrpcPartyOptions = {}) {
    super();
    this.client = new MailboxV2ClientCtor(address, grpc.credentials.createInsecure(), {
      'grpc.use_local_subchannel_pool': 1,
      'grpc.max_receive_message_length': -1,
      'grpc.max_send_message_length': -1,
      ...options.channelOptions,
    });
    this.call = this.client.connect();
    this.call.on('data', (frame: ServerFrame) => this.deliver({ kind: 'frame', frame }));
    // Every non-OK status comes as 'error' too; 'status' covers both.
    this.call.on('error', () => undefined);
    // grpc-js pushes the end of the readable before it reports the status, so
    // frames still buffered (paused) come before the end event.
    this.call.on('end', () => {
      this.readEnded = true;
      this.maybeEnd();
    });
    this.call.on('status', (status: grpc.StatusObject) => {
      this.status = status;
      this.noteEnded(this.endOf(status));
      this.maybeEnd();
    });
  }

  private endOf(status: grpc.StatusObject): V2End {
    return { code: status.code, message: status.details };
  }

  private maybeEnd(): void {
    if (this.status && (this.readEnded || this.call.readableEnded)) this.deliver({ kind: 'end', end: this.endOf(this.status) });
  }

  protected pauseTransport(): void {
    this.call.pause();
  }

  protected resumeTransport(): void {
    this.call.resume();
  }

  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.write({ raw: bytes });
  }

  /** Writes through the client's own serializer (the codec). */
  write(frame: OutFrame): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.end) {
        reject(new Error(`gRPC v2 write after the stream ended: ${JSON.stringify(this.end)}`));
        return;
      }
      void this.ended.then((end) => reject(new Error(`gRPC v2 stream ended while writing: ${JSON.stringify(end)}`)));
      this.call.write(frame, (err: Error | null | undefined) => (err ? reject(err) : resolve()));
    });
  }

  /** Half-closes, then waits for the status (cancelling if it does not come). */
  async close(): Promise<V2End> {
    if (!this.end) {
      this.call.end();
      try {
        await this.waitEnd(CLOSE_WAIT_MS);
      } catch {
        this.call.cancel();
      }
    }
    const end = await this.waitEnd(CLOSE_WAIT_MS);
    this.client.close();
    return end;
  }

  abort(): void {
    this.call.cancel();
    this.client.close();
  }
}

export function grpcParty(address: string, options?: GrpcPartyOptions): GrpcV2Party {
  return new GrpcV2Party(address, options);
}

// ---- WebSocket ----

export interface WsDialOptions {
  /** Subprotocols offered; default ['hashmail.v2']; [] offers none. */
  protocols?: string[];
  headers?: Record<string, string>;
  path?: string;
  /** Local address to dial from (another 127.x address: another client). */
  localAddress?: string;
}

export type WsDialResult = { ok: true; party: WsV2Party } | { ok: false; status: number; headers: Record<string, string | string[] | undefined>; body: string };

/** One v2 party over WebSocket (binary frames, nodebuffer). */
export class WsV2Party extends V2Party {
  readonly transport = 'ws' as const;

  constructor(readonly ws: WebSocket) {
    super();
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer | Buffer[] | ArrayBuffer, isBinary: boolean) => {
      const buf = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
      if (!isBinary) {
        this.deliver({ kind: 'bad', error: `text message from the relay: ${buf.toString('utf8').slice(0, 200)}` });
        return;
      }
      try {
        this.deliver({ kind: 'frame', frame: decodeServerFrame(buf) });
      } catch (err) {
        this.deliver({ kind: 'bad', error: String(err) });
      }
    });
    ws.on('error', () => undefined);
    ws.on('close', (wsCloseCode: number, reason: Buffer) => {
      const code = wsCloseCode === 1000 ? 0 : wsCloseCode >= WS_CLOSE_CODE_BASE && wsCloseCode < WS_CLOSE_CODE_BASE + 1000 ? wsCloseCode - WS_CLOSE_CODE_BASE : null;
      this.deliver({ kind: 'end', end: { code, message: reason.toString('utf8'), wsCloseCode } });
    });
  }

  /** The subprotocol the relay chose. */
  get protocol(): string {
    return this.ws.protocol;
  }

  protected pauseTransport(): void {
    this.ws.pause();
  }

  protected resumeTransport(): void {
    this.ws.resume();
  }

  sendRaw(bytes: Uint8Array): Promise<void> {
    return this.sendMessage(asBuffer(bytes), true);
  }

  /** A text message (which the protocol forbids), for the error test. */
  sendText(text: string): Promise<void> {
    return this.sendMessage(text, false);
  }

  private sendMessage(data: Buffer | string, binary: boolean): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      if (this.end || this.ws.readyState !== WebSocket.OPEN) {
        reject(new Error(`WebSocket v2 send on a closed socket: ${JSON.stringify(this.end)}`));
        return;
      }
      void this.ended.then((end) => reject(new Error(`WebSocket v2 closed while sending: ${JSON.stringify(end)}`)));
      // ws calls back once the frame is handed to the socket and the socket
      // flushed it to the kernel: TCP backpressure reaches us here.
      this.ws.send(data, { binary }, (err?: Error) => (err ? reject(err) : resolve()));
    });
  }

  /** Closes (code 1000) and waits for the close; terminates if it does not come. */
  async close(): Promise<V2End> {
    if (!this.end) {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
      else this.ws.terminate();
      try {
        return await this.waitEnd(CLOSE_WAIT_MS);
      } catch {
        this.ws.terminate();
      }
    }
    return this.waitEnd(CLOSE_WAIT_MS);
  }

  abort(): void {
    this.ws.terminate();
  }
}

export function wsV2Url(port: number, path = V2_WS_PATH): string {
  return `ws://127.0.0.1:${port}${path}`;
}

/** Dials /v2/mailbox; a refused handshake is returned (status, headers, body), not thrown. */
export function dialWsV2(port: number, options: WsDialOptions = {}, timeoutMs = DEFAULT_WAIT_MS): Promise<WsDialResult> {
  const protocols = options.protocols ?? [V2_SUBPROTOCOL];
  const ws = new WebSocket(wsV2Url(port, options.path), protocols, { headers: options.headers, handshakeTimeout: timeoutMs, perMessageDeflate: false, ...(options.localAddress ? { localAddress: options.localAddress } : {}) });
  ws.binaryType = 'nodebuffer';
  // Listeners attach before 'open' so no early frame is lost.
  const party = new WsV2Party(ws);
  return new Promise<WsDialResult>((resolve, reject) => {
    let settled = false;
    ws.once('open', () => {
      settled = true;
      resolve({ ok: true, party });
    });
    ws.once('unexpected-response', (_req, res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (d: string) => (body += d));
      res.on('end', () => {
        settled = true;
        resolve({ ok: false, status: res.statusCode ?? 0, headers: res.headers, body });
        ws.terminate();
      });
      res.on('error', () => undefined);
    });
    ws.on('error', (err) => {
      if (!settled) {
        settled = true;
        reject(err);
      }
    });
  });
}

/** Dials and requires the handshake to succeed. */
export async function wsParty(port: number, options: WsDialOptions = {}): Promise<WsV2Party> {
  const res = await dialWsV2(port, options);
  if (!res.ok) return assert.fail(`v2 WebSocket handshake refused: ${res.status} ${res.body}`);
  return res.party;
}

/** Opens a party of the given kind on `server` (address `127.0.0.1:PORT`). */
export async function openParty(kind: TransportKind, server: { address: string; port: number }): Promise<V2Party> {
  return kind === 'grpc' ? grpcParty(server.address) : wsParty(server.port);
}

/** Closes every party a test opened; never throws. */
export async function closeParties(parties: Iterable<V2Party>): Promise<void> {
  await Promise.all(
    [...parties].map(async (p) => {
      try {
        await p.close();
      } catch {
        p.abort();
      }
    }),
  );
}
