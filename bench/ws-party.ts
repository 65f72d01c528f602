/**
 * Lean WebSocket halves of a legacy app, as the browser (WASM) client uses
 * the gateway: a receive socket that asks for one SID, and a send socket
 * writing one JSON CipherBox per WebSocket message.
 */
import WebSocket from 'ws';
import type { Inlet, Outlet, Sink } from './grpc-party.js';
import { parseResultFrame, receiveRequest, RECEIVE_PATH, SEND_PATH, sendRequest, wsUrl } from './wire.js';

/** Bytes handed to a send socket and not yet written to the kernel before write() says "wait". */
const SEND_HIGH_WATER_BYTES = 1024 * 1024;

/** Opens a WebSocket; a refused handshake, an error or a timeout rejects. */
export function openWebSocket(port: number, path: string, timeoutMs: number): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(wsUrl(port, path), { handshakeTimeout: timeoutMs });
    let settled = false;
    const settle = (err: Error | null): void => {
      if (settled) return;
      settled = true;
      ws.removeListener('open', onOpen);
      if (err) {
        ws.terminate();
        reject(err);
      } else resolve(ws);
    };
    const onOpen = (): void => settle(null);
    ws.once('open', onOpen);
    ws.once('unexpected-response', (_req, res) => settle(new Error(`WebSocket ${path}: HTTP ${res.statusCode}`)));
    ws.on('error', (err) => settle(new Error(`WebSocket ${path}: ${err.message}`)));
  });
}

/** Receive socket: one `{"stream_id":…}`, then one result frame per message. */
export class WsInlet implements Inlet {
  private closing = false;

  constructor(
    private readonly ws: WebSocket,
    sid: Buffer,
    sink: Sink,
  ) {
    ws.on('message', (data) => {
      try {
        sink.message(parseResultFrame((data as Buffer).toString('utf8')));
      } catch (err) {
        sink.fail((err as Error).message);
      }
    });
    ws.on('close', (code) => {
      if (!this.closing) sink.fail(`receive socket closed (${code})`);
    });
    ws.send(receiveRequest(sid));
  }

  static async open(port: number, sid: Buffer, sink: Sink, timeoutMs: number): Promise<WsInlet> {
    return new WsInlet(await openWebSocket(port, RECEIVE_PATH, timeoutMs), sid, sink);
  }

  close(): void {
    this.closing = true;
    this.ws.terminate();
  }
}

/** Send socket: one JSON CipherBox per WebSocket message; backpressure by bytes not yet flushed. */
export class WsOutlet implements Outlet {
  private readonly sidB64: string;
  private pendingBytes = 0;
  private waiter: (() => void) | null = null;
  private closing = false;

  constructor(
    private readonly ws: WebSocket,
    sid: Buffer,
    sink: Sink,
  ) {
    this.sidB64 = sid.toString('base64');
    ws.on('close', (code) => {
      if (!this.closing) sink.fail(`send socket closed (${code})`);
      this.wake();
    });
    // The gateway answers a failed send with an error frame (the app never reads it otherwise).
    ws.on('message', (data) => sink.fail(`send socket: ${(data as Buffer).toString('utf8').slice(0, 200)}`));
  }

  static async open(port: number, sid: Buffer, sink: Sink, timeoutMs: number): Promise<WsOutlet> {
    return new WsOutlet(await openWebSocket(port, SEND_PATH, timeoutMs), sid, sink);
  }

  write(msg: Buffer): boolean {
    const text = sendRequest(this.sidB64, msg);
    const size = text.length;
    this.pendingBytes += size;
    this.ws.send(text, () => {
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
    this.closing = true;
    this.ws.terminate();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}
