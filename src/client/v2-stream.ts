/**
 * What a v2 stream means to the client whatever carries it (gRPC or
 * WebSocket): the Welcome comes first and resolves the link, then data and
 * presence; an Error frame is kept for the status or close that follows.
 */
import { PROTOCOL_V2, type FrameError, type ServerFrame } from '../wire/v2-frames.js';
import { errorFromStatus, HashmailClientError, RelayMoved, StatusCode } from './errors.js';
import type { LinkHandlers } from './link.js';

export function protocolError(what: string): HashmailClientError {
  return new HashmailClientError(StatusCode.INTERNAL, `v2 protocol error: ${what}`);
}

/** The error a v2 Error frame stands for: RelayMoved when it names the relay that owns the session. */
export function errorOfFrame(frame: FrameError, cause?: unknown): HashmailClientError {
  if (frame.relayAddress && frame.code === StatusCode.UNAVAILABLE) {
    return new RelayMoved(frame.message, frame.relayAddress, cause === undefined ? undefined : { cause });
  }
  return errorFromStatus(frame.code, frame.message, frame.supportedVersions, cause);
}

/** The transport's link, as far as the stream needs it. */
export interface V2StreamLink {
  peerPresent: boolean;
  maxMessageBytes: number;
  setPresence(present: boolean): void;
}

export class V2FrameRouter<L extends V2StreamLink> {
  /** Set once the Welcome came. */
  link: L | null = null;
  /** The relay's Error frame, reported with the status that ends the stream. */
  errorFrame: FrameError | null = null;

  constructor(
    private readonly handlers: LinkHandlers,
    /** Makes the transport's link on the Welcome. */
    private readonly makeLink: () => L,
    private readonly resolve: (link: L) => void,
    private readonly fail: (err: HashmailClientError) => void,
  ) {}

  route(frame: ServerFrame): void {
    if ('error' in frame) {
      this.errorFrame = frame.error;
    } else if ('welcome' in frame) {
      if (this.link) return this.fail(protocolError('second Welcome'));
      if (frame.welcome.version !== PROTOCOL_V2) return this.fail(protocolError(`relay chose version ${frame.welcome.version}`));
      const link = this.makeLink();
      link.peerPresent = frame.welcome.peerPresent;
      link.maxMessageBytes = frame.welcome.maxMessageBytes;
      this.link = link;
      this.resolve(link);
    } else if (!this.link) {
      this.fail(protocolError('frame before Welcome'));
    } else if ('data' in frame) {
      this.handlers.message(frame.data);
    } else {
      this.link.setPresence(frame.presence.peerPresent);
    }
  }
}
