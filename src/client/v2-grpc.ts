/**
 * Node-only: protocol v2 over gRPC, `/hashmail.v2.Mailbox/Connect`, one
 * ClientFrame / ServerFrame per message. Links to one relay share a channel
 * (grpc-channels.ts); a call on a channel whose relay is down fails at once,
 * so our backoff paces attempts after a loss.
 */
import { Metadata, type ClientDuplexStream, type ServiceError } from '@grpc/grpc-js';
import { Attach, decodeServerFrame, encodeDataFrame, encodeHello, PROTOCOL_V2, type ServerFrame } from '../wire/v2-frames.js';
import { ConnectionLost, HashmailClientError, LinkDropped, RelayUnreachable, StatusCode, V2NotServed } from './errors.js';
import { asBuffer, grpcError, isUnimplemented } from './grpc-channel.js';
import { acquireChannel, isStreamLimitRefusal, MAX_STREAM_LIMIT_RETRIES } from './grpc-channels.js';
import { errorText, KEEPALIVE_TIME_MS, MAX_MESSAGE_BYTES } from './legacy-grpc.js';
import { CLOSE_WAIT_MS, onAbort, type Link, type LinkHandlers, type LinkOpener, type LinkRequest } from './link.js';
import { errorOfFrame, V2FrameRouter } from './v2-stream.js';

export const V2_CONNECT_PATH = '/hashmail.v2.Mailbox/Connect';
/** Room for the frame envelope around a maximal payload. */
const ENVELOPE_BYTES = 1024;

type FrameCall = ClientDuplexStream<Uint8Array, ServerFrame>;

class V2GrpcLink implements Link {
  readonly version = 2;
  peerPresent = false;
  maxMessageBytes = 0;
  failure: HashmailClientError | null = null;
  private closing = false;
  private drained: Promise<void> | null = null;
  private readonly failed: Promise<never>;
  private rejectFailed: (err: HashmailClientError) => void = () => undefined;

  constructor(
    private readonly call: FrameCall,
    /** Gives the shared channel back. */
    private readonly release: () => void,
    private readonly handlers: LinkHandlers,
    private readonly ended: Promise<void>,
  ) {
    this.failed = new Promise<never>((_, reject) => {
      this.rejectFailed = reject;
    });
    this.failed.catch(() => undefined);
  }

  async send(msg: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.closing) throw new ConnectionLost('link closed');
    if (this.call.write(encodeDataFrame(msg))) return;
    // One 'drain' listener however many sends wait: concurrent senders share it.
    this.drained ??= new Promise<void>((resolve) =>
      this.call.once('drain', () => {
        this.drained = null;
        resolve();
      }),
    );
    await Promise.race([this.drained, this.failed]);
  }

  pause(): void {
    this.call.pause();
  }

  resume(): void {
    this.call.resume();
  }

  setPresence(present: boolean): void {
    if (present === this.peerPresent) return;
    this.peerPresent = present;
    this.handlers.presence(present);
  }

  end(err: HashmailClientError): void {
    if (this.failure) return;
    this.failure = err;
    this.rejectFailed(err);
    this.release();
    if (!this.closing) this.handlers.closed(err);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    // Half-close: the relay frees both slots and ends the call with OK.
    this.call.end();
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([this.ended, new Promise((resolve) => (timer = setTimeout(resolve, CLOSE_WAIT_MS)))]);
    clearTimeout(timer);
    this.call.cancel();
    this.release();
  }
}


export const openV2Grpc: LinkOpener = (req: LinkRequest, handlers: LinkHandlers) => openOnChannel(req, handlers, 0);

/** openV2Grpc on a shared channel; a call the server refused for its connection's stream limit is tried again on another. */
const openOnChannel = (req: LinkRequest, handlers: LinkHandlers, retries: number): Promise<Link> =>
  new Promise<Link>((resolve, reject) => {
    const { pingIntervalMs, pingTimeoutMs } = req.liveness;
    const { client, release, refused } = acquireChannel({
      server: req.server,
      tlsSkipVerify: req.tlsSkipVerify,
      ...(req.tls ? { tls: req.tls } : {}),
      ...(req.relayRegistration ? { registration: req.relayRegistration } : {}),
      options: {
        // Liveness: HTTP/2 pings; one unanswered within the timeout drops the connection, and with it this call.
        'grpc.keepalive_time_ms': pingIntervalMs > 0 ? pingIntervalMs : KEEPALIVE_TIME_MS,
        'grpc.keepalive_timeout_ms': pingTimeoutMs,
        'grpc.keepalive_permit_without_calls': 1,
        'grpc.max_receive_message_length': MAX_MESSAGE_BYTES + ENVELOPE_BYTES,
      },
    });
    const call: FrameCall = client.makeBidiStreamRequest(V2_CONNECT_PATH, asBuffer, decodeServerFrame, new Metadata(), {});
    let localError: HashmailClientError | null = null;
    let markEnded: () => void = () => undefined;
    const ended = new Promise<void>((r) => {
      markEnded = r;
    });
    const stopWatching = onAbort(req.signal, () => {
      localError ??= new ConnectionLost('connect aborted', { cause: req.signal.reason });
      call.cancel();
    });
    const fail = (err: HashmailClientError): void => {
      localError ??= err;
      call.cancel();
    };
    const router = new V2FrameRouter(handlers, () => new V2GrpcLink(call, release, handlers, ended), resolve, fail);
    let finished = false;
    const finish = (err: HashmailClientError): void => {
      if (finished) return;
      finished = true;
      stopWatching();
      markEnded();
      if (router.link) {
        router.link.end(err);
      } else {
        release();
        reject(err);
      }
    };

    call.on('data', (frame: ServerFrame) => {
      router.route(frame);
    });
    call.on('error', (err: ServiceError) => {
      if (localError) return finish(localError);
      // Refused before anything was said (the connection carries the server's limit of calls): another connection.
      const answer = router.errorFrame ? { code: router.errorFrame.code, details: router.errorFrame.message } : err;
      if (!router.link && isStreamLimitRefusal(answer) && retries < MAX_STREAM_LIMIT_RETRIES && !finished) {
        finished = true;
        stopWatching();
        markEnded();
        refused();
        release();
        openOnChannel(req, handlers, retries + 1).then(resolve, reject);
        return;
      }
      const { errorFrame } = router;
      if (errorFrame) return finish(errorOfFrame(errorFrame, err));
      if (!router.link && isUnimplemented(err)) return finish(new V2NotServed(StatusCode.UNIMPLEMENTED, 'relay does not serve hashmail.v2.Mailbox', { cause: err }));
      // UNAVAILABLE before the relay sent a single frame: no connection, or it dropped before any answer.
      if (!router.link && err.code === StatusCode.UNAVAILABLE) return finish(new RelayUnreachable(errorText(err), { cause: err }));
      // UNAVAILABLE after the attach with no Error frame: the connection dropped under us (relay gone or restarting, network).
      if (err.code === StatusCode.UNAVAILABLE) return finish(new LinkDropped(errorText(err), { cause: err }));
      finish(grpcError(err));
    });
    call.on('status', (s: { code: number }) => {
      // A non-OK status also emits 'error' (handled there); OK while we did not close is an unexpected end.
      if (s.code === StatusCode.OK) finish(localError ?? new ConnectionLost('relay ended the stream'));
    });
    call.write(encodeHello({ minVersion: PROTOCOL_V2, maxVersion: PROTOCOL_V2, sid: req.sid, attach: req.attach === 'existing' ? Attach.Existing : Attach.Create }));
  });
