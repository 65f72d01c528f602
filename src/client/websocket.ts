/**
 * The WebSocket the client uses: the standard global one (browsers, Node 22+)
 * or, in Node 20 which has none, the `ws` package loaded on demand. Both are
 * driven through the standard API only (addEventListener, send, close,
 * bufferedAmount), so the code above runs unchanged in a browser.
 */
import { ConnectionLost, type HashmailClientError } from './errors.js';
import type { Liveness, ServerAddress } from './options.js';
import type { NodeTls } from './tls-trust-node.js';

export const WS_CONNECTING = 0;
export const WS_OPEN = 1;
/** send() waits while more than this many bytes sit in the socket's buffer (the only backpressure a browser WebSocket offers). */
export const WS_HIGH_WATER_BYTES = 1024 * 1024;
/** How often a waiting send() looks at bufferedAmount again (ms): browsers have no event for it. */
export const WS_DRAIN_POLL_MS = 10;
/** Handshake bound for the `ws` package (ms); browsers apply their own. */
export const WS_HANDSHAKE_TIMEOUT_MS = 20_000;

/** What a listener receives: the fields of MessageEvent / CloseEvent / ws's ErrorEvent we read. */
export interface WsEvent {
  data?: unknown;
  code?: number;
  reason?: string;
  /** ws's ErrorEvent: e.g. "Unexpected server response: 404". Browsers give none. */
  message?: string;
}

export interface WebSocketLike {
  binaryType: string;
  readonly readyState: number;
  readonly bufferedAmount: number;
  readonly protocol: string;
  send(data: string | Uint8Array): void;
  close(code?: number, reason?: string): void;
  addEventListener(type: 'open' | 'message' | 'error' | 'close', listener: (event: WsEvent) => void): void;
  /** `ws` only: stop reading (TCP flow control holds the relay back). */
  pause?(): void;
  resume?(): void;
  /** `ws` only: drop the connection without a closing handshake. */
  terminate?(): void;
  /** `ws` only: send a WebSocket ping (browsers cannot). */
  ping?(): void;
  /** `ws` only: the EventEmitter side, for 'pong'. */
  on?(event: 'pong', listener: () => void): unknown;
}

/** Makes a socket; `tls` (Node, `ws` only) overrides the certificate verification. */
export type WebSocketFactory = (url: string, protocols: string[], tls?: NodeTls) => WebSocketLike;

type NativeWebSocket = new (url: string, protocols?: string | string[]) => WebSocketLike;

/** `ws`, imported on first use and kept (an import() per connection resolves it again every time). */
let wsModule: Promise<typeof import('ws')> | undefined;

/** The WebSocket constructor to use: the global one when present, else `ws` (Node 20). */
export async function loadWebSocket(options: { tlsSkipVerify: boolean }): Promise<WebSocketFactory> {
  const native = (globalThis as { WebSocket?: NativeWebSocket }).WebSocket;
  if (typeof native === 'function') return (url, protocols) => new native(url, protocols);
  const { WebSocket: Ws } = await (wsModule ??= import('ws'));
  return (url, protocols, tls) => {
    // ws hands these to tls.connect; its type for checkServerIdentity (boolean) is not Node's (Error | undefined).
    const tlsOptions = { ...tls } as Record<string, unknown>;
    return new Ws(url, protocols, {
      rejectUnauthorized: !options.tlsSkipVerify,
      handshakeTimeout: WS_HANDSHAKE_TIMEOUT_MS,
      ...tlsOptions,
    }) as unknown as WebSocketLike;
  };
}

/** `ws://host:port` or `wss://host:port`. */
export function wsBase(server: ServerAddress): string {
  return `${server.secure ? 'wss' : 'ws'}://${server.authority}`;
}

/** `http://host:port` or `https://host:port`. */
export function httpBase(server: ServerAddress): string {
  return `${server.secure ? 'https' : 'http'}://${server.authority}`;
}

/** The HTTP status of a refused handshake, where the WebSocket tells it (`ws` does, browsers do not). */
export function handshakeStatus(errorMessage: string | undefined): number | undefined {
  const match = /Unexpected server response: (\d{3})/.exec(errorMessage ?? '');
  return match ? Number(match[1]) : undefined;
}

/** Bytes of a binary message (ArrayBuffer with binaryType 'arraybuffer'; Buffer/views from `ws` otherwise). */
export function messageBytes(data: unknown): Uint8Array | null {
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  return null;
}

/**
 * Sends `data` and waits while the socket's buffer is over the high-water
 * mark. Rejects with `failure()` once the link failed, or ConnectionLost if
 * the socket is not open.
 */
export async function sendWithBackpressure(ws: WebSocketLike, data: string | Uint8Array, failure: () => HashmailClientError | null): Promise<void> {
  const failed = failure();
  if (failed) throw failed;
  if (ws.readyState !== WS_OPEN) throw new ConnectionLost('websocket is not open');
  ws.send(data);
  while (ws.bufferedAmount > WS_HIGH_WATER_BYTES) {
    await new Promise((resolve) => setTimeout(resolve, WS_DRAIN_POLL_MS));
    const err = failure();
    if (err) throw err;
    if (ws.readyState !== WS_OPEN) throw new ConnectionLost('websocket closed');
  }
}

/** Closes `ws` and waits for the close, at most `ms`; then drops it where the implementation can. */
export function closeSocket(ws: WebSocketLike, closed: Promise<void>, ms: number, code = 1000): Promise<void> {
  if (ws.readyState === WS_CONNECTING || ws.readyState === WS_OPEN) ws.close(code);
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<void>((resolve) => {
    timer = setTimeout(() => {
      ws.terminate?.();
      resolve();
    }, ms);
  });
  return Promise.race([closed, timeout]).finally(() => clearTimeout(timer));
}

/**
 * Liveness of an open socket where the implementation can ping (`ws` in
 * Node): a ping every `pingIntervalMs`; nothing heard (pong or message)
 * within `pingTimeoutMs` of it calls `dead`. A browser's WebSocket cannot
 * ping; there the relay's pings keep the path alive and the browser's TCP
 * notices a dead relay. Returns `heard` (call it on every message) and `stop`.
 */
export function watchLiveness(ws: WebSocketLike, liveness: Liveness, dead: () => void): { heard: () => void; stop: () => void } {
  if (liveness.pingIntervalMs <= 0 || typeof ws.ping !== 'function' || typeof ws.on !== 'function') return { heard: () => undefined, stop: () => undefined };
  let deadline: ReturnType<typeof setTimeout> | undefined;
  const heard = (): void => {
    clearTimeout(deadline);
    deadline = undefined;
  };
  const interval = setInterval(() => {
    if (deadline !== undefined || ws.readyState !== WS_OPEN) return;
    try {
      ws.ping?.();
    } catch {
      return;
    }
    deadline = setTimeout(() => {
      stop();
      dead();
    }, liveness.pingTimeoutMs);
  }, liveness.pingIntervalMs);
  const stop = (): void => {
    clearInterval(interval);
    heard();
  };
  ws.on('pong', heard);
  return { heard, stop };
}
