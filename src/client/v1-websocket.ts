/**
 * Protocol v1 over the legacy REST/WebSocket gateway, as the deployed browser
 * client speaks it: `/receive?method=POST` and `/send?method=POST` sockets
 * with one JSON object per message, and NewCipherBox as a REST POST. Web APIs
 * only (WebSocket, fetch).
 */
import { ConnectionLost, errorFromStatus, HashmailClientError, StatusCode, toClientError } from './errors.js';
import { CLOSE_WAIT_MS, type LinkOpener } from './link.js';
import { openV1Link, type ReceiveHalf, type SendHalf, type V1Halves } from './v1-link.js';
import {
  createBoxJson,
  parseReceiveFrame,
  parseSendFrame,
  receiveRequestJson,
  sendMessageEncoder,
  V1_HASHMAIL_PATH,
  V1_RECEIVE_PATH,
  V1_SEND_PATH,
} from './v1-json.js';
import { closeSocket, httpBase, sendWithBackpressure, wsBase, WS_OPEN, type WebSocketFactory, type WebSocketLike, type WsEvent } from './websocket.js';
import type { ServerAddress } from './options.js';
import { flipSid } from './bytes.js';
import type { NodeTls } from './tls-trust-node.js';
import type { HttpAnswer, HttpRequest } from './relay-lookup.js';

/** Bound on one NewCipherBox request (ms). */
export const CREATE_BOX_TIMEOUT_MS = 10_000;

function closedError(event: WsEvent, what: string): HashmailClientError {
  return new ConnectionLost(`${what} socket closed (${event.code ?? 1006}${event.reason ? `: ${event.reason}` : ''})`);
}

/** A socket and a promise of its close. */
function dial(factory: WebSocketFactory, url: string, tls: NodeTls | undefined): { ws: WebSocketLike; closed: Promise<void> } {
  const ws = factory(url, [], tls);
  ws.binaryType = 'arraybuffer';
  const closed = new Promise<void>((resolve) => ws.addEventListener('close', () => resolve()));
  return { ws, closed };
}

/** REST NewCipherBox (POST), through `http`: Node's honours tlsSkipVerify and the connection's `ca` / pin, fetch does neither. */
async function createBox(http: HttpRequest, server: ServerAddress, sid: Uint8Array, signal: AbortSignal, tls: NodeTls | undefined): Promise<void> {
  let res: HttpAnswer;
  try {
    res = await http(`${httpBase(server)}${V1_HASHMAIL_PATH}`, { post: { body: createBoxJson(sid) }, signal, timeoutMs: CREATE_BOX_TIMEOUT_MS, ...(tls ? { tls } : {}) });
  } catch (err) {
    throw new ConnectionLost(`NewCipherBox failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  if (res.status >= 200 && res.status < 300) return;
  const status = parseSendFrame(res.body);
  // ALREADY_EXISTS by code, as litd treats it.
  if (status?.code === StatusCode.ALREADY_EXISTS) return;
  throw status ? errorFromStatus(status.code, status.message) : new HashmailClientError(StatusCode.UNKNOWN, `NewCipherBox answered HTTP ${res.status}`);
}

class WebSocketHalves implements V1Halves {
  private readonly sockets = new Set<{ ws: WebSocketLike; closed: Promise<void> }>();

  constructor(
    private readonly factory: WebSocketFactory,
    private readonly http: HttpRequest,
    private readonly server: ServerAddress,
    /** The connection's `ca` / `certificateSha256` (Node), for both sockets and the box calls. */
    private readonly tls: NodeTls | undefined,
  ) {}

  async createBoxes(sid: Uint8Array, signal: AbortSignal): Promise<void> {
    await Promise.all([createBox(this.http, this.server, sid, signal, this.tls), createBox(this.http, this.server, flipSid(sid), signal, this.tls)]);
  }

  openReceive(sid: Uint8Array, sink: { message(msg: Uint8Array): void; ended(err: HashmailClientError | null): void }): ReceiveHalf {
    const socket = dial(this.factory, `${wsBase(this.server)}${V1_RECEIVE_PATH}`, this.tls);
    this.sockets.add(socket);
    const { ws } = socket;
    let failure: HashmailClientError | null = null;
    let cancelled = false;
    ws.addEventListener('open', () => ws.send(receiveRequestJson(sid)));
    ws.addEventListener('error', (event: WsEvent) => {
      failure ??= new ConnectionLost(`receive socket failed${event.message ? `: ${event.message}` : ''}`);
    });
    ws.addEventListener('message', (event: WsEvent) => {
      if (failure || cancelled) return;
      try {
        const text = typeof event.data === 'string' ? event.data : new TextDecoder().decode(event.data as ArrayBuffer);
        const frame = parseReceiveFrame(text);
        if ('result' in frame) sink.message(frame.result);
        else failure = errorFromStatus(frame.error.code, frame.error.message);
      } catch (err) {
        failure = new HashmailClientError(StatusCode.INTERNAL, `legacy gateway: ${err instanceof Error ? err.message : String(err)}`);
        ws.close(1000);
      }
    });
    ws.addEventListener('close', (event: WsEvent) => {
      if (!cancelled) sink.ended(failure ?? closedError(event, 'receive'));
    });
    return {
      pause: () => ws.pause?.(),
      resume: () => ws.resume?.(),
      cancel: () => {
        cancelled = true;
        void closeSocket(ws, socket.closed, CLOSE_WAIT_MS);
      },
    };
  }

  openSend(sid: Uint8Array, onEnded: (err: HashmailClientError | null) => void): SendHalf {
    const socket = dial(this.factory, `${wsBase(this.server)}${V1_SEND_PATH}`, this.tls);
    this.sockets.add(socket);
    const { ws } = socket;
    const encode = sendMessageEncoder(sid);
    let failure: HashmailClientError | null = null;
    let ending = false;
    const opened = new Promise<void>((resolve, reject) => {
      ws.addEventListener('open', () => resolve());
      ws.addEventListener('close', () => reject(failure ?? new ConnectionLost('send socket closed before opening')));
    });
    opened.catch(() => undefined);
    ws.addEventListener('error', (event: WsEvent) => {
      failure ??= new ConnectionLost(`send socket failed${event.message ? `: ${event.message}` : ''}`);
    });
    ws.addEventListener('message', (event: WsEvent) => {
      // The gateway writes on the send socket only to report a failure.
      const status = typeof event.data === 'string' ? parseSendFrame(event.data) : null;
      failure ??= status ? errorFromStatus(status.code, status.message) : new ConnectionLost('unexpected frame on the send socket');
    });
    ws.addEventListener('close', (event: WsEvent) => {
      failure ??= closedError(event, 'send');
      if (!ending) onEnded(failure);
    });
    return {
      write: async (msg) => {
        if (ws.readyState !== WS_OPEN) await opened;
        try {
          await sendWithBackpressure(ws, encode(msg), () => failure);
        } catch (err) {
          throw toClientError(err);
        }
      },
      end: async () => {
        ending = true;
        // A WebSocket has no half-close; closing after the buffer drained is the end.
        await closeSocket(ws, socket.closed, CLOSE_WAIT_MS);
      },
      cancel: () => {
        ending = true;
        void closeSocket(ws, socket.closed, CLOSE_WAIT_MS);
      },
    };
  }

  dispose(): void {
    for (const socket of this.sockets) void closeSocket(socket.ws, socket.closed, CLOSE_WAIT_MS);
    this.sockets.clear();
  }
}

/** `http`: the REST box calls' client (Node's honours tlsSkipVerify and the connection's trust; fetch elsewhere). */
export function v1WebSocketOpener(factory: WebSocketFactory, http: HttpRequest): LinkOpener {
  return (req, handlers) => openV1Link(() => new WebSocketHalves(factory, http, req.server, req.tls), req, handlers);
}
