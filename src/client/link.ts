/**
 * A link: one attached stream of this party to the relay, of one protocol
 * version over one transport. The connection (connection.ts) owns a link at a
 * time and replaces it when it breaks; the links know nothing of reconnects.
 */
import type { HashmailClientError } from './errors.js';
import type { AttachMode, Liveness, Role, ServerAddress } from './options.js';
import type { RelayLookup } from './relay-lookup.js';
import type { NodeTls } from './tls-trust-node.js';

export interface LinkHandlers {
  /** A payload from the peer, in order. May be called before the opener resolves. */
  message(msg: Uint8Array): void;
  /** The peer attached or left (v2 only). */
  presence(present: boolean): void;
  /** The link ended (not by our close()); called at most once, and only after the opener resolved. */
  closed(err: HashmailClientError): void;
}

export interface Link {
  readonly version: 1 | 2;
  /** Last known presence of the peer (always false in v1, which cannot tell). */
  readonly peerPresent: boolean;
  /** Largest payload the relay takes (bytes, from the v2 Welcome); 0: not announced. */
  readonly maxMessageBytes: number;
  /** Resolves once the transport accepted `msg`; rejects once the link failed. */
  send(msg: Uint8Array): Promise<void>;
  /** Stop reading from the relay (flow control holds the peer back); no-op where the transport cannot. */
  pause(): void;
  resume(): void;
  /** Ends the stream cleanly (messages already accepted are flushed first, bounded). */
  close(): Promise<void>;
}

export interface LinkRequest {
  server: ServerAddress;
  /** The SID this party reads. */
  sid: Uint8Array;
  /**
   * The session's route (wire/route.ts), when known: the v2 WebSocket URL
   * carries it (`?route=`) so a gateway can pass the socket through to the
   * owning relay without seeing the SID.
   */
  route?: string;
  role: Role;
  attach: AttachMode;
  tlsSkipVerify: boolean;
  /** Aborted when the connection closes or the attempt's deadline passed: a pending open gives up. */
  signal: AbortSignal;
  /** Pings on the attached link (v2). */
  liveness: Liveness;
  /** Node TLS verification from `ca` / `certificateSha256`; absent: the default (or tlsSkipVerify). */
  tls?: NodeTls;
  /** The relay's registration as a lookup named it (`id@startedAt`): gRPC does not dial it on a connection failing from before. */
  relayRegistration?: string;
}

/** Opens a link: resolves once attached, rejects with a HashmailClientError. */
export type LinkOpener = (req: LinkRequest, handlers: LinkHandlers) => Promise<Link>;

/** The openers of one transport. */
export interface TransportOpeners {
  openV2: LinkOpener;
  openV1: LinkOpener;
  /** Asks an instance which relay owns a session (relay-lookup.ts); absent: the configured server is dialed directly. */
  lookup?: RelayLookup;
}

/** Bound on a clean close waiting for the relay to confirm (ms); then the stream is dropped. */
export const CLOSE_WAIT_MS = 2_000;

/** Runs `fn` on abort of `signal`; returns the function that stops watching. */
export function onAbort(signal: AbortSignal, fn: () => void): () => void {
  if (signal.aborted) {
    fn();
    return () => undefined;
  }
  signal.addEventListener('abort', fn, { once: true });
  return () => signal.removeEventListener('abort', fn);
}

/** A signal that aborts when any of `signals` does; `dispose` stops forwarding (call it when done). */
export function anySignal(signals: AbortSignal[]): { signal: AbortSignal; dispose: () => void } {
  const controller = new AbortController();
  const undo: (() => void)[] = [];
  for (const s of signals) {
    if (s.aborted) {
      controller.abort(s.reason);
      break;
    }
    const forward = (): void => controller.abort(s.reason);
    s.addEventListener('abort', forward, { once: true });
    undo.push(() => s.removeEventListener('abort', forward));
  }
  return { signal: controller.signal, dispose: () => undo.forEach((fn) => fn()) };
}
