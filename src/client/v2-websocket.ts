/**
 * Protocol v2 over WebSocket: `GET /v2/mailbox`, subprotocol `hashmail.v2`,
 * one binary message per frame. Standard WebSocket API only.
 */
import { Attach, decodeServerFrame, encodeDataFrame, encodeHello, PROTOCOL_V2, type ServerFrame } from '../wire/v2-frames.js';
import { ConnectionLost, errorFromStatus, HashmailClientError, LinkDropped, LivenessTimeout, MessageTooLarge, RelayUnreachable, StatusCode, V2HandshakeUnexplained, V2NotServed } from './errors.js';

export { V2HandshakeUnexplained };
import { CLOSE_WAIT_MS, onAbort, type Link, type LinkHandlers, type LinkOpener, type LinkRequest } from './link.js';
import { errorOfFrame, protocolError, V2FrameRouter } from './v2-stream.js';
import { closeSocket, handshakeStatus, messageBytes, sendWithBackpressure, watchLiveness, wsBase, type WebSocketFactory, type WebSocketLike, type WsEvent } from './websocket.js';

export const V2_WS_PATH = '/v2/mailbox';
export const V2_SUBPROTOCOL = 'hashmail.v2';
/** The query parameter of the v2 WebSocket URL naming the session's route. */
export const V2_ROUTE_PARAM = 'route';
/** The relay closes with 4000 + gRPC code after an Error frame. */
const ERROR_CLOSE_BASE = 4000;
const ERROR_CLOSE_MAX = 4099;
/** RFC 6455 close code for a connection that ended without a close frame. */
const WS_CLOSE_ABNORMAL = 1006;
/** RFC 6455 close code "Message Too Big". */
const WS_CLOSE_MESSAGE_TOO_BIG = 1009;
/** HTTP answers of a relay without v2 (404) or without a version we offered (400). */
const NO_V2_STATUSES = [400, 404];

class V2WebSocketLink implements Link {
  readonly version = 2;
  peerPresent = false;
  maxMessageBytes = 0;
  failure: HashmailClientError | null = null;
  closing = false;

  constructor(
    private readonly ws: WebSocketLike,
    private readonly handlers: LinkHandlers,
    private readonly closed: Promise<void>,
  ) {}

  send(msg: Uint8Array): Promise<void> {
    if (this.closing && !this.failure) return Promise.reject(new ConnectionLost('link closed'));
    return sendWithBackpressure(this.ws, encodeDataFrame(msg), () => this.failure);
  }

  pause(): void {
    this.ws.pause?.();
  }

  resume(): void {
    this.ws.resume?.();
  }

  setPresence(present: boolean): void {
    if (present === this.peerPresent) return;
    this.peerPresent = present;
    this.handlers.presence(present);
  }

  ended(err: HashmailClientError): void {
    if (this.failure) return;
    this.failure = err;
    if (!this.closing) this.handlers.closed(err);
  }

  async close(): Promise<void> {
    this.closing = true;
    await closeSocket(this.ws, this.closed, CLOSE_WAIT_MS);
  }
}

/**
 * `ws[s]://host:port/v2/mailbox?route=ROUTE`: a gateway routes by the query
 * (the SID stays in the first frame); a relay ignores it.
 */
export function v2WebSocketUrl(req: Pick<LinkRequest, 'server' | 'route'>): string {
  const query = req.route === undefined ? '' : `?${V2_ROUTE_PARAM}=${encodeURIComponent(req.route)}`;
  return `${wsBase(req.server)}${V2_WS_PATH}${query}`;
}

export function v2WebSocketOpener(factory: WebSocketFactory): LinkOpener {
  return (req: LinkRequest, handlers: LinkHandlers) =>
    new Promise<Link>((resolve, reject) => {
      const ws = factory(v2WebSocketUrl(req), [V2_SUBPROTOCOL], req.tls);
      ws.binaryType = 'arraybuffer';
      let opened = false;
      let localError: HashmailClientError | null = null;
      let errorMessage: string | undefined;
      let markClosed: () => void = () => undefined;
      const closed = new Promise<void>((r) => {
        markClosed = r;
      });
      const stopWatching = onAbort(req.signal, () => {
        localError ??= new ConnectionLost('connect aborted', { cause: req.signal.reason });
        ws.close(1000);
      });
      const fail = (err: HashmailClientError): void => {
        localError ??= err;
        ws.close(1000);
      };
      const router = new V2FrameRouter(handlers, () => new V2WebSocketLink(ws, handlers, closed), resolve, fail);
      let liveness = { heard: (): void => undefined, stop: (): void => undefined };

      ws.addEventListener('open', () => {
        opened = true;
        if (ws.protocol !== V2_SUBPROTOCOL) return fail(protocolError(`relay chose subprotocol '${ws.protocol}'`));
        liveness = watchLiveness(ws, req.liveness, () => {
          localError ??= new LivenessTimeout(`no answer from the relay within ${req.liveness.pingTimeoutMs} ms of a ping (pingTimeoutMs)`);
          // A frozen relay would never complete a close handshake.
          if (ws.terminate) ws.terminate();
          else ws.close(1000);
        });
        const attach = req.attach === 'existing' ? Attach.Existing : Attach.Create;
        ws.send(encodeHello({ minVersion: PROTOCOL_V2, maxVersion: PROTOCOL_V2, sid: req.sid, attach }));
      });
      ws.addEventListener('error', (event: WsEvent) => {
        errorMessage = event.message ?? errorMessage;
      });
      ws.addEventListener('message', (event: WsEvent) => {
        liveness.heard();
        const bytes = messageBytes(event.data);
        if (!bytes) return fail(protocolError('text message on the v2 socket'));
        let frame: ServerFrame;
        try {
          frame = decodeServerFrame(bytes);
        } catch (err) {
          return fail(protocolError(err instanceof Error ? err.message : 'undecodable frame'));
        }
        router.route(frame);
      });
      ws.addEventListener('close', (event: WsEvent) => {
        liveness.stop();
        stopWatching();
        markClosed();
        const code = event.code ?? 1006;
        const reason = event.reason ?? '';
        let err: HashmailClientError;
        const { errorFrame } = router;
        if (errorFrame) {
          err = errorOfFrame(errorFrame);
        } else if (localError) {
          err = localError;
        } else if (code === WS_CLOSE_MESSAGE_TOO_BIG) {
          // A frame far over the relay's limit is cut off by its WebSocket layer before the relay sees it.
          err = new MessageTooLarge(`relay closed the stream: message too big (1009${reason ? `: ${reason}` : ''})`, 0, 0);
        } else if (code >= ERROR_CLOSE_BASE && code <= ERROR_CLOSE_MAX) {
          err = errorFromStatus(code - ERROR_CLOSE_BASE, reason);
        } else if (!opened) {
          const status = handshakeStatus(errorMessage);
          if (status !== undefined && NO_V2_STATUSES.includes(status)) {
            err = new V2NotServed(StatusCode.UNIMPLEMENTED, `relay answered the v2 WebSocket handshake with HTTP ${status}`);
          } else if (errorMessage) {
            // No HTTP answer at all (refused, reset): nobody is serving there.
            err = status === undefined ? new RelayUnreachable(`websocket handshake failed: ${errorMessage}`) : new ConnectionLost(`websocket handshake failed: ${errorMessage}`);
          } else {
            err = new V2HandshakeUnexplained('websocket handshake failed');
          }
        } else if (code === WS_CLOSE_ABNORMAL) {
          // No close frame and no Error frame: the socket died under us (relay gone or restarting, network).
          err = new LinkDropped(`websocket closed (${code}${reason ? `: ${reason}` : ''})`);
        } else {
          err = new ConnectionLost(`websocket closed (${code}${reason ? `: ${reason}` : ''})`);
        }
        if (router.link) router.link.ended(err);
        else reject(err);
      });
    });
}
