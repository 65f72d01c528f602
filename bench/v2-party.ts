/**
 * Lean protocol-v2 parties (docs/protocol-v2.md) for the benchmark: one
 * full-duplex stream per party, over gRPC (hashmail.v2.Mailbox/Connect, the
 * project's own client definition `mailboxV2Service`) or over a WebSocket
 * (/v2/mailbox, subprotocol hashmail.v2, binary frames). Like the v1 halves
 * in grpc-party.ts / ws-party.ts: no promise or timer per message. A link is
 * both the Inlet and the Outlet of its Party; close() is idempotent.
 */
import * as grpc from '@grpc/grpc-js';
import WebSocket from 'ws';
import { mailboxV2Service } from '../src/transport/grpc-v2/handlers.js';
import { Attach, decodeServerFrame, encodeDataFrame, encodeHello, PROTOCOL_V2, type ClientFrame, type ServerFrame } from '../src/wire/v2-frames.js';
import type { Inlet, Outlet, Sink } from './grpc-party.js';
import { sourcePort } from './source-ports.js';

export const V2_WS_PATH = '/v2/mailbox';
export const V2_SUBPROTOCOL = 'hashmail.v2';
export type V2Transport = 'grpc' | 'ws';

/** litd-like keepalive (as the v1 bench clients). */
const KEEPALIVE_TIME_MS = 120_000;
/** Bytes handed to a WebSocket and not yet flushed before write() says "wait" (as ws-party.ts). */
const SEND_HIGH_WATER_BYTES = 1024 * 1024;

export interface MailboxV2Stub extends grpc.Client {
  Connect(options?: grpc.CallOptions): grpc.ClientDuplexStream<ClientFrame, ServerFrame>;
}

const MailboxV2Client = grpc.makeGenericClientConstructor(mailboxV2Service, 'Mailbox') as unknown as new (
  address: string,
  credentials: grpc.ChannelCredentials,
  options?: grpc.ChannelOptions,
) => MailboxV2Stub;

/** One HTTP/2 connection of its own (local subchannel pool), as one party on its own machine holds. */
export function dialV2(address: string): MailboxV2Stub {
  return new MailboxV2Client(address, grpc.credentials.createInsecure(), {
    'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.use_local_subchannel_pool': 1,
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': -1,
  });
}

const helloFor = (sid: Buffer): Uint8Array => encodeHello({ minVersion: PROTOCOL_V2, maxVersion: PROTOCOL_V2, sid, attach: Attach.Create });

const asBuffer = (u8: Uint8Array): Buffer => (Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength));

/** Calls `settle` once: with null on Welcome, with an error on anything that ends the attach. */
type Attaching = ((err: Error | null) => void) | null;

/** A v2 party over gRPC: one Connect call; Welcome first, then Data both ways, Presence ignored. */
export class GrpcV2Link implements Inlet, Outlet {
  private readonly call: grpc.ClientDuplexStream<ClientFrame, ServerFrame>;
  private closing = false;
  private attaching: Attaching;

  private constructor(
    private readonly stub: MailboxV2Stub,
    private readonly ownStub: boolean,
    sid: Buffer,
    sink: Sink,
    attaching: (err: Error | null) => void,
  ) {
    this.attaching = attaching;
    this.call = stub.Connect();
    this.call.on('data', (frame: ServerFrame) => {
      if ('data' in frame) sink.message(asBuffer(frame.data));
      else if ('welcome' in frame) this.settle(null);
      else if ('error' in frame) this.failWith(sink, `v2 Error frame ${frame.error.code} ${frame.error.message}`);
    });
    this.call.on('error', (err: grpc.ServiceError) => this.failWith(sink, `v2 Connect: ${err.code} ${err.details}`));
    this.call.on('end', () => this.failWith(sink, 'v2 Connect ended'));
    // The Hello goes through the client's own serializer (encodeHello).
    this.call.write({ hello: { minVersion: PROTOCOL_V2, maxVersion: PROTOCOL_V2, sid, attach: Attach.Create } });
  }

  /** Connect + Hello, resolved on Welcome. `stub`: a shared connection; default: one of its own. */
  static open(address: string, sid: Buffer, sink: Sink, timeoutMs: number, stub?: MailboxV2Stub): Promise<GrpcV2Link> {
    return new Promise((resolve, reject) => {
      let link: GrpcV2Link | null = null;
      const timer = setTimeout(() => settle(new Error(`v2 gRPC: no Welcome within ${timeoutMs} ms`)), timeoutMs);
      const settle = (err: Error | null): void => {
        clearTimeout(timer);
        if (err) {
          link?.close();
          reject(err);
        } else resolve(link!);
      };
      link = new GrpcV2Link(stub ?? dialV2(address), stub === undefined, sid, sink, settle);
    });
  }

  private settle(err: Error | null): void {
    const fn = this.attaching;
    this.attaching = null;
    fn?.(err);
  }

  private failWith(sink: Sink, reason: string): void {
    if (this.attaching) this.settle(new Error(reason));
    else if (!this.closing) sink.fail(reason);
  }

  write(msg: Buffer): boolean {
    return this.call.write({ data: msg });
  }

  drain(): Promise<void> {
    return new Promise((resolve) => this.call.once('drain', () => resolve()));
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.call.cancel();
    if (this.ownStub) this.stub.close();
  }
}

/** A v2 party over one WebSocket; backpressure by bytes not yet flushed (as ws-party.ts). */
export class WsV2Link implements Inlet, Outlet {
  private pendingBytes = 0;
  private waiter: (() => void) | null = null;
  private closing = false;
  private attaching: Attaching;

  private constructor(
    private readonly ws: WebSocket,
    sid: Buffer,
    sink: Sink,
    attaching: (err: Error | null) => void,
  ) {
    this.attaching = attaching;
    ws.binaryType = 'nodebuffer';
    ws.on('message', (data: Buffer, isBinary: boolean) => {
      let frame: ServerFrame;
      try {
        if (!isBinary) throw new Error('text message from the relay');
        frame = decodeServerFrame(data);
      } catch (err) {
        this.failWith(sink, `v2 WebSocket: ${(err as Error).message}`);
        return;
      }
      if ('data' in frame) sink.message(asBuffer(frame.data));
      else if ('welcome' in frame) this.settle(null);
      else if ('error' in frame) this.failWith(sink, `v2 Error frame ${frame.error.code} ${frame.error.message}`);
    });
    ws.once('open', () => ws.send(helloFor(sid)));
    ws.once('unexpected-response', (_req, res) => this.failWith(sink, `v2 WebSocket handshake: HTTP ${res.statusCode}`));
    ws.on('error', (err) => this.failWith(sink, `v2 WebSocket: ${err.message}`));
    ws.on('close', (code) => {
      this.failWith(sink, `v2 WebSocket closed (${code})`);
      this.wake();
    });
  }

  /** Handshake + Hello, resolved on Welcome. */
  /**
   * `pingEveryMs` > 0: the party pings the relay that often once open, as
   * the client library does (pingIntervalMs, a timer per socket).
   */
  static open(port: number, sid: Buffer, sink: Sink, timeoutMs: number, localAddress?: string, pingEveryMs = 0): Promise<WsV2Link> {
    return new Promise((resolve, reject) => {
      let link: WsV2Link | null = null;
      const timer = setTimeout(() => settle(new Error(`v2 WebSocket: no Welcome within ${timeoutMs} ms`)), timeoutMs);
      const settle = (err: Error | null): void => {
        clearTimeout(timer);
        if (err) {
          link?.close();
          reject(err);
        } else resolve(link!);
      };
      const localPort = sourcePort(localAddress);
      const ws = new WebSocket(`ws://127.0.0.1:${port}${V2_WS_PATH}`, [V2_SUBPROTOCOL], { perMessageDeflate: false, handshakeTimeout: timeoutMs, localAddress, localPort });
      link = new WsV2Link(ws, sid, sink, settle);
      if (pingEveryMs > 0) {
        const pinger = setInterval(() => {
          if (ws.readyState === WebSocket.OPEN) ws.ping();
        }, pingEveryMs);
        pinger.unref();
        ws.once('close', () => clearInterval(pinger));
      }
    });
  }

  private settle(err: Error | null): void {
    const fn = this.attaching;
    this.attaching = null;
    fn?.(err);
  }

  private failWith(sink: Sink, reason: string): void {
    if (this.attaching) this.settle(new Error(reason));
    else if (!this.closing) sink.fail(reason);
  }

  write(msg: Buffer): boolean {
    const frame = encodeDataFrame(msg);
    const size = frame.length;
    this.pendingBytes += size;
    this.ws.send(frame, () => {
      this.pendingBytes -= size;
      if (this.pendingBytes < SEND_HIGH_WATER_BYTES / 2) this.wake();
    });
    return this.pendingBytes < SEND_HIGH_WATER_BYTES;
  }

  drain(): Promise<void> {
    if (this.pendingBytes < SEND_HIGH_WATER_BYTES || this.ws.readyState !== WebSocket.OPEN) return Promise.resolve();
    return new Promise((resolve) => {
      this.waiter = resolve;
    });
  }

  close(): void {
    if (this.closing) return;
    this.closing = true;
    this.ws.terminate();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}
