/**
 * Protocol v1 behind the link API: a party is two legacy half streams,
 * RecvStream on `sid` and SendStream to `sid ^ 1`. The transport (gRPC or
 * the WebSocket gateway) supplies the halves; this file decides what v1
 * makes the client decide itself:
 *
 * - who creates the boxes: the node side (role 'node' with attach 'create')
 *   creates both before receiving, "already exists" counting as success, as
 *   litd does; the app side never creates;
 * - waiting for the peer: v1 cannot wait on the relay, so an app with attach
 *   'create' retries "stream not found" with backoff and jitter until the node
 *   created the boxes (litd's apps retry every 2 s); attach 'existing'
 *   reports SessionNotFound instead;
 * - attached: v1 never confirms a RecvStream, it only fails one ("stream not
 *   found" at once, "occupied" after the relay's 250 ms wait). A receive that
 *   has not failed within V1_ATTACH_SETTLE_MS (or delivered a message) counts
 *   as attached;
 * - presence: v1 has none; peerPresent stays false and no event fires.
 *
 * The send half opens on the first message, as litd's does, so a party that
 * only listens never takes the write slot.
 */
import { Backoff, sleep } from './backoff.js';
import { flipSid } from './bytes.js';
import { ConnectionLost, SessionNotFound, toClientError, type HashmailClientError } from './errors.js';
import { onAbort, type Link, type LinkHandlers, type LinkRequest } from './link.js';

/** A receive that has not failed after this long is attached (ms): above the relay's 250 ms slot wait plus a round trip. */
export const V1_ATTACH_SETTLE_MS = 500;
/** Cap of the backoff between "stream not found" retries of a v1 app waiting for its node (ms): LNC's own interval. */
export const V1_WAIT_MAX_BACKOFF_MS = 2_000;

export interface ReceiveSink {
  message(msg: Uint8Array): void;
  /** The stream ended: null when the relay ended it with OK. Called once. */
  ended(err: HashmailClientError | null): void;
}

export interface ReceiveHalf {
  pause(): void;
  resume(): void;
  cancel(): void;
}

export interface SendHalf {
  /** Resolves once the transport accepted `msg`. */
  write(msg: Uint8Array): Promise<void>;
  /** Half-close; resolves when the relay confirmed (or the bound passed). */
  end(): Promise<void>;
  cancel(): void;
}

/** One transport's v1 halves, for one link. */
export interface V1Halves {
  /** NewCipherBox on `sid` and `sid ^ 1`; ALREADY_EXISTS is success. */
  createBoxes(sid: Uint8Array, signal: AbortSignal): Promise<void>;
  openReceive(sid: Uint8Array, sink: ReceiveSink): ReceiveHalf;
  /** SendStream to `sid`; `onEnded` reports its failure (or an unexpected end, as null). */
  openSend(sid: Uint8Array, onEnded: (err: HashmailClientError | null) => void): SendHalf;
  /** Releases the transport's resources (channel, sockets). */
  dispose(): void;
}

class V1Link implements Link {
  readonly version = 1;
  /** v1 cannot tell. */
  readonly peerPresent = false;
  /** v1 relays announce no limit. */
  readonly maxMessageBytes = 0;
  private receive: ReceiveHalf | null = null;
  private sendHalf: SendHalf | null = null;
  private failure: HashmailClientError | null = null;
  private closing = false;
  attached = false;

  constructor(
    private readonly halves: V1Halves,
    private readonly sid: Uint8Array,
    private readonly handlers: LinkHandlers,
  ) {}

  setReceive(receive: ReceiveHalf): void {
    this.receive = receive;
  }

  async send(msg: Uint8Array): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.closing) throw new ConnectionLost('link closed');
    this.sendHalf ??= this.halves.openSend(flipSid(this.sid), (err) => this.fail(err ?? new ConnectionLost('send stream ended by the relay')));
    try {
      await this.sendHalf.write(msg);
    } catch (err) {
      throw this.failure ?? toClientError(err);
    }
  }

  pause(): void {
    this.receive?.pause();
  }

  resume(): void {
    this.receive?.resume();
  }

  fail(err: HashmailClientError): void {
    if (this.failure || this.closing) return;
    this.failure = err;
    this.receive?.cancel();
    this.sendHalf?.cancel();
    this.halves.dispose();
    if (this.attached) this.handlers.closed(err);
  }

  async close(): Promise<void> {
    if (this.closing) return;
    this.closing = true;
    this.receive?.cancel();
    // A half-close lets messages queued behind it reach the relay first.
    if (this.sendHalf && !this.failure) await this.sendHalf.end();
    this.sendHalf?.cancel();
    this.halves.dispose();
  }
}

/** One attach attempt: resolves once the receive half settled, rejects with its failure. */
function attachOnce(halves: V1Halves, req: LinkRequest, handlers: LinkHandlers): Promise<V1Link> {
  return new Promise((resolve, reject) => {
    const link = new V1Link(halves, req.sid, handlers);
    let settled = false;
    const settle = (err: HashmailClientError | null): void => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      stopWatching();
      if (err) {
        reject(err);
      } else {
        link.attached = true;
        resolve(link);
      }
    };
    const receive = halves.openReceive(req.sid, {
      message: (msg) => {
        settle(null);
        handlers.message(msg);
      },
      ended: (err) => {
        const failure = err ?? new ConnectionLost('receive stream ended by the relay');
        if (!settled) {
          receive.cancel();
          settle(failure);
        } else {
          link.fail(failure);
        }
      },
    });
    link.setReceive(receive);
    const timer = setTimeout(() => settle(null), V1_ATTACH_SETTLE_MS);
    const stopWatching = onAbort(req.signal, () => {
      receive.cancel();
      settle(new ConnectionLost('connect aborted', { cause: req.signal.reason }));
    });
  });
}

/** Opens a v1 link on `halves` (which it disposes of on failure). */
export async function openV1Link(makeHalves: () => V1Halves, req: LinkRequest, handlers: LinkHandlers): Promise<Link> {
  const waitForBoxes = req.role === 'app' && req.attach === 'create';
  const backoff = new Backoff({ maxMs: V1_WAIT_MAX_BACKOFF_MS });
  let halves = makeHalves();
  try {
    if (req.role === 'node' && req.attach === 'create') await halves.createBoxes(req.sid, req.signal);
    for (;;) {
      try {
        return await attachOnce(halves, req, handlers);
      } catch (err) {
        if (!(err instanceof SessionNotFound) || !waitForBoxes) throw err;
      }
      halves.dispose();
      halves = makeHalves();
      await sleep(backoff.next(), req.signal).catch((reason: unknown) => {
        throw new ConnectionLost('connect aborted', { cause: reason });
      });
    }
  } catch (err) {
    halves.dispose();
    throw toClientError(err);
  }
}
