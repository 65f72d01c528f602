/**
 * MailboxConnection: what `connect` returns. One party's attachment to a
 * session, surviving relay restarts and lost connections: it owns one link
 * at a time (link.ts) and, when a link breaks with a retryable error,
 * replaces it after a backoff with full jitter (backoff.ts).
 *
 * Reconnecting resumes the session instead of making a new one: v2 attaches
 * with ATTACH_EXISTING, so an expired session shows up as SessionNotFound.
 * Two exceptions, both bounded by RESUME_GRACE_MS from the loss:
 * - a relay that restarted has forgotten every session; the node side
 *   (role 'node' with attach 'create', as litd re-creates its boxes) attaches
 *   with ATTACH_CREATE again, and the app's "stream not found" is retried
 *   until the node is back;
 * - a relay that has not yet noticed our old stream died reports it
 *   "occupied" until it does; that is retried too.
 *
 * Finding the relay (relay-finder.ts): every attempt first looks the
 * session's route up on the configured instance(s) and dials the owner, so
 * after a relay died, drained or lost its lease the next attempt finds the
 * session's new relay. A relay that names the owner instead (Error with
 * relay_address) is dialed at once, without backoff or lookup, at most
 * MAX_REDIRECT_HOPS times in a row; then the route is looked up afresh.
 * A link that merely dropped (LinkDropped: no word from the relay) is
 * resumed at the same relay first: a relay that restarted or a network
 * that blinked costs no lookup, and when nobody answers there the next
 * attempt looks up at once, held until the session moves (holdNextLookup),
 * so the parties of a dead relay add no lookup that would only name it again.
 */
import { Backoff, sleep } from './backoff.js';
import { Emitter } from './emitter.js';
import { ConnectionLost, ConnectTimeout, isRetryable, LinkDropped, MessageTooLarge, RelayMoved, RelayUnreachable, SessionInUse, SessionNotFound, toClientError, type HashmailClientError } from './errors.js';
import { Inbox } from './inbox.js';
import { anySignal, type Link, type LinkHandlers, type LinkRequest, type TransportOpeners } from './link.js';
import { openNegotiated, type NegotiateParams } from './negotiate.js';
import type { AttachMode, ResolvedOptions } from './options.js';
import { findRelay, relayAddress, type RelayTarget, type RelayVia } from './relay-finder.js';
import type { LookupWaitRequest } from './relay-lookup.js';
import { sessionRoute } from '../wire/route.js';
import type { TrustLoader } from './tls-trust-node.js';

/** How long after losing its link a connection keeps retrying "stream not found" / "stream occupied" (ms). */
export const RESUME_GRACE_MS = 30_000;
/**
 * Ceiling of the jittered wait between attempts within RESUME_GRACE_MS of a
 * lost link (ms). A dead relay's sessions are placed again as soon as its
 * lease expires; a wait grown to seconds would add that much to every
 * re-join. Full jitter keeps a relay's parties spread (mean 500 ms, below
 * the 2 s that deployed legacy clients retry at).
 */
export const RESUME_MAX_BACKOFF_MS = 1000;
/** Redirects (Error with relay_address) followed in a row before the route is looked up again: bounds a loop between relays that disagree. */
export const MAX_REDIRECT_HOPS = 3;
/**
 * How long the next lookup asks the instance to hold its answer while that
 * would still be the owner this party just failed to reach, or still "not
 * placed" (ms). The parties of a dead relay then wait on one idle request
 * each and learn the new owner the moment the directory does, instead of
 * retrying the same dead address. Longer than a relay's lease (10 s by
 * default), so a dead relay's parties ask once, not again while the others
 * re-join. The attempt's connectTimeoutMs starts counting after the hold.
 * Instances cap it (directory.lookupWaitMaxMs, 15 s by default); older ones
 * ignore it and answer at once.
 */
export const LOOKUP_WAIT_MS = 15_000;
/** Lookups in one attempt (each followed by up to MAX_REDIRECT_HOPS redirects); then the attempt fails and the backoff paces the next. */
export const MAX_LOOKUPS_PER_ATTEMPT = 2;

/** A relay about to be dialed. */
export interface DialInfo {
  /** `HOST:PORT` of the relay. */
  relay: string;
  /** 'lookup': an instance named it; 'redirect': a relay named it (Error.relay_address); 'direct': the configured server, which serves no lookups; 'resume': the relay of the link that just dropped. */
  via: RelayVia;
  /** The instance that answered the lookup. */
  lookupServer?: string;
}

export interface ReconnectingInfo {
  /** 1 for the first attempt after a loss. */
  attempt: number;
  /** The wait before this attempt (ms). */
  delayMs: number;
  /** Why the previous link or attempt failed. */
  error: HashmailClientError;
}

export interface ReconnectedInfo {
  /** Attempts it took. */
  attempts: number;
  version: 1 | 2;
  peerPresent: boolean;
  /** `HOST:PORT` of the relay now attached. */
  relay: string;
}

export interface MailboxEvents {
  /** The peer attached (true) or left (false). v2 only: a v1 connection never emits it. */
  presence: [present: boolean];
  /** The link broke; a new attempt follows after `delayMs`. */
  reconnecting: [info: ReconnectingInfo];
  /** A relay is about to be dialed (each attempt, redirect and fallback). */
  dial: [info: DialInfo];
  /** A new link is attached. */
  reconnected: [info: ReconnectedInfo];
  /** The connection is over: null after close(), else the error the iterator throws. */
  close: [error: HashmailClientError | null];
}

export class MailboxConnection extends Emitter<MailboxEvents> implements AsyncIterable<Uint8Array> {
  private link: Link | null = null;
  private lastVersion: 1 | 2 = 2;
  private lastMaxMessageBytes = 0;
  private present = false;
  private failure: HashmailClientError | null = null;
  private closed = false;
  private closing: Promise<void> | null = null;
  private readonly lifetime = new AbortController();
  private readonly backoff = new Backoff();
  private readonly resumeBackoff = new Backoff({ maxMs: RESUME_MAX_BACKOFF_MS });
  /** What the next lookup asks the instance to wait out (holdNextLookup); null: answer at once. */
  private heldLookup: LookupWaitRequest | null = null;
  private readonly inbox = new Inbox(
    () => this.link?.pause(),
    () => this.link?.resume(),
    () => this.close(),
  );
  /** The `signal`'s reason once it aborted the connection: what `send` then rejects with. */
  private abortReason: unknown = undefined;
  private wakeUp: (() => void)[] = [];
  private route: string | null = null;
  /** `HOST:PORT` of the relay of the current (or last) link. */
  private relayAuthority = '';
  /** The relay of the current (or last) link as dialed, and its instance id when a lookup named it: where a dropped link resumes. */
  private lastRelay: RelayTarget | null = null;
  /**
   * Where the next attempt dials before any lookup: the relay a relay that ended our link named
   * (via 'redirect', at once), or the relay of a link that dropped (via 'resume', after the backoff).
   */
  private nextTarget: RelayTarget | null = null;
  /** A resumed relay did not take us back: the next attempt looks up with no backoff before it. */
  private lookUpAtOnce = false;

  /** Use `connect()`. */
  private constructor(
    private readonly options: ResolvedOptions,
    private readonly negotiate: NegotiateParams,
    /** TLS options per server from `ca` / `certificateSha256` (Node); null: the default verification. */
    private readonly trust: TrustLoader | null,
  ) {
    super();
  }

  /** Opens the first link; rejects with its error (no retries: an unreachable relay is reported at once). */
  static async open(options: ResolvedOptions, openers: TransportOpeners, trust: TrustLoader | null = null): Promise<MailboxConnection> {
    const conn = new MailboxConnection(options, { protocol: options.protocol, transport: options.transport, openers }, trust);
    const { signal } = options;
    const onAbort = (): void => {
      conn.abortReason = signal?.reason;
      void conn.close();
    };
    signal?.addEventListener('abort', onAbort, { once: true });
    try {
      // The signal's own reason (an AbortError DOMException unless the caller gave one), as fetch does.
      if (signal?.aborted) throw signal.reason;
      await conn.openLink(options.attach);
      return conn;
    } catch (err) {
      signal?.removeEventListener('abort', onAbort);
      conn.closed = true;
      conn.lifetime.abort();
      throw signal?.aborted ? signal.reason : toClientError(err);
    }
  }

  /** Protocol version of the current (or last) link. */
  get version(): 1 | 2 {
    return this.lastVersion;
  }

  /** `HOST:PORT` of the relay of the current (or last) link. */
  get relay(): string {
    return this.relayAuthority;
  }

  /** Largest payload `send` takes (bytes), as the relay announced it; 0 when it did not (v1, older relays). */
  get maxMessageBytes(): number {
    return this.link?.maxMessageBytes ?? this.lastMaxMessageBytes;
  }

  /** Whether the peer is attached. Always false in v1, which cannot tell, and while reconnecting. */
  get peerPresent(): boolean {
    return this.present;
  }

  /** Received messages, in order; ends after close(), throws the error that ended the connection. One reader at a time. */
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    return this.inbox;
  }

  /**
   * Resolves once the transport accepted `msg` (awaiting it is the
   * backpressure: the relay holds a writer back while the peer does not
   * read). While reconnecting it waits for the new link; a message not yet
   * accepted when a link broke is sent on the next one.
   */
  async send(msg: Uint8Array): Promise<void> {
    if (!(msg instanceof Uint8Array)) throw new TypeError('send takes a Uint8Array');
    for (;;) {
      if (this.failure) throw this.failure;
      if (this.abortReason !== undefined) throw this.abortReason;
      if (this.closed) throw new ConnectionLost('connection closed');
      const link = this.link;
      if (!link) {
        await this.stateChange();
        continue;
      }
      // Refused here, before a byte goes out: the relay would end the stream over it.
      if (link.maxMessageBytes > 0 && msg.length > link.maxMessageBytes) {
        throw new MessageTooLarge(`message too large: ${msg.length} bytes, the relay takes at most ${link.maxMessageBytes} (v2.maxMessageBytes)`, link.maxMessageBytes, msg.length);
      }
      try {
        await link.send(msg);
        return;
      } catch (err) {
        if (this.failure) throw this.failure;
        if (this.closed) throw new ConnectionLost('connection closed');
        const error = toClientError(err);
        if (this.link === link) {
          // The link failed but has not reported it yet: wait for the replacement if one will come.
          if (!this.options.reconnect || !isRetryable(error)) throw error;
          await this.stateChange();
        }
      }
    }
  }

  /** Ends the connection: the stream is closed cleanly (bounded), the iterator ends, pending sends reject. */
  close(): Promise<void> {
    if (this.closing) return this.closing;
    const link = this.link;
    this.link = null;
    const wasOpen = !this.closed;
    this.closed = true;
    this.lifetime.abort();
    this.inbox.end();
    this.notify();
    this.closing = (async () => {
      await link?.close().catch(() => undefined);
      if (wasOpen) this.emit('close', null);
    })();
    return this.closing;
  }

  /** Finds the session's relay and attaches there, following redirects (bounded, see MAX_REDIRECT_HOPS). */
  private async openLink(attach: AttachMode): Promise<void> {
    const timeoutMs = this.options.connectTimeoutMs;
    if (timeoutMs <= 0) return this.openLinkWithin(attach, this.lifetime.signal);
    // An attempt that starts with a held lookup waits on it by design: the deadline counts from the hold's end.
    const holdMs = !this.nextTarget && this.heldLookup ? this.heldLookup.ms : 0;
    const deadline = new AbortController();
    const timer = setTimeout(() => deadline.abort(), timeoutMs + holdMs);
    const attempt = anySignal([this.lifetime.signal, deadline.signal]);
    try {
      await this.openLinkWithin(attach, attempt.signal);
    } catch (err) {
      if (deadline.signal.aborted && !this.closed) throw new ConnectTimeout(timeoutMs, { cause: err });
      throw err;
    } finally {
      clearTimeout(timer);
      attempt.dispose();
    }
  }

  /** openLink within `signal` (the connection's lifetime and the attempt's deadline). */
  private async openLinkWithin(attach: AttachMode, signal: AbortSignal): Promise<void> {
    const given = this.nextTarget;
    this.nextTarget = null;
    let target = given ?? (await this.findTarget(attach, signal));
    let hops = given ? 1 : 0;
    let lookups = given ? 0 : 1;
    for (;;) {
      try {
        await this.openLinkAt(target, attach, signal);
        return;
      } catch (err) {
        // The owner a lookup named gave no answer at all (refused, or dropped before it said anything): the next lookup waits for the session to move.
        if (err instanceof RelayUnreachable && target.ownerId) this.holdNextLookup(target.ownerId, target.ownerStartedAt);
        // The relay of a dropped link is gone, or has forgotten the session (restarted): the next attempt, at
        // once and with a deadline of its own, looks up where it is now (held).
        if (target.via === 'resume' && (err instanceof RelayUnreachable || err instanceof SessionNotFound)) {
          if (err instanceof SessionNotFound) this.holdNextLookup('');
          this.lookUpAtOnce = true;
        }
        if (!(err instanceof RelayMoved) || this.closed) throw err;
        if (hops < MAX_REDIRECT_HOPS) {
          hops++;
          target = { server: relayAddress(err.relayAddress, this.options.server), via: 'redirect' };
        } else if (lookups < MAX_LOOKUPS_PER_ATTEMPT) {
          lookups++;
          hops = 0;
          target = await this.findTarget(attach, signal);
        } else {
          throw err;
        }
      }
    }
  }

  private async findTarget(attach: AttachMode, signal: AbortSignal): Promise<RelayTarget> {
    this.route ??= await sessionRoute(this.options.sid);
    const wait = this.heldLookup;
    this.heldLookup = null;
    try {
      return await this.lookUpRelay(this.route, attach, signal, wait);
    } catch (err) {
      // "Not placed": the next attempt waits for the placement instead of asking again and again.
      if (err instanceof SessionNotFound) this.holdNextLookup('');
      throw err;
    }
  }

  /**
   * The next lookup asks the instance to hold its answer while it is still
   * `unreachable` (an owner id; the registration `startedAt` if a lookup told
   * it) or "not placed" ('').
   */
  private holdNextLookup(unreachable: string, startedAt?: number): void {
    this.heldLookup = { unreachable, ...(startedAt ? { unreachableStartedAt: startedAt } : {}), ms: LOOKUP_WAIT_MS };
  }

  private lookUpRelay(route: string, attach: AttachMode, signal: AbortSignal, wait: LookupWaitRequest | null): Promise<RelayTarget> {
    return findRelay({
      servers: this.options.servers,
      transport: this.options.transport,
      protocol: this.options.protocol,
      lookup: this.negotiate.openers.lookup ?? null,
      route,
      create: attach === 'create',
      tlsSkipVerify: this.options.tlsSkipVerify,
      signal,
      trustFor: this.trust ? (server) => this.trust!(server, signal) : null,
      ...(wait ? { wait } : {}),
    });
  }

  private async openLinkAt(target: RelayTarget, attach: AttachMode, signal: AbortSignal): Promise<void> {
    this.emit('dial', { relay: target.server.authority, via: target.via, ...(target.lookupServer ? { lookupServer: target.lookupServer } : {}) });
    let mine: Link | null = null;
    let endedEarly: HashmailClientError | null = null;
    const handlers: LinkHandlers = {
      message: (msg) => {
        if (!this.closed) this.inbox.push(msg);
      },
      presence: (present) => {
        if (mine && this.link === mine) this.setPresence(present);
      },
      closed: (err) => {
        if (mine && this.link === mine) this.onLinkLost(err);
        else endedEarly = err;
      },
    };
    const tls = this.trust ? await this.trust(target.server, signal) : undefined;
    this.route ??= await sessionRoute(this.options.sid);
    const req: LinkRequest = {
      ...(tls ? { tls } : {}),
      ...(target.ownerId && target.ownerStartedAt ? { relayRegistration: `${target.ownerId}@${target.ownerStartedAt}` } : {}),
      server: target.server,
      sid: this.options.sid,
      route: this.route,
      role: this.options.role,
      attach,
      tlsSkipVerify: this.options.tlsSkipVerify,
      signal,
      liveness: this.options.liveness,
    };
    const link = await openNegotiated(this.negotiate, req, handlers);
    if (this.closed) {
      await link.close();
      throw new ConnectionLost('connection closed');
    }
    if (endedEarly) throw endedEarly;
    mine = link;
    this.link = link;
    this.relayAuthority = target.server.authority;
    this.lastRelay = {
      server: target.server,
      via: 'resume',
      ...(target.ownerId ? { ownerId: target.ownerId } : {}),
      ...(target.ownerStartedAt ? { ownerStartedAt: target.ownerStartedAt } : {}),
    };
    this.lastVersion = link.version;
    this.lastMaxMessageBytes = link.maxMessageBytes;
    if (this.inbox.isPaused) link.pause();
    this.setPresence(link.peerPresent);
    this.notify();
  }

  /** Attach mode of a reconnect: resume, except the node side, which re-creates what a restarted relay forgot. */
  private reconnectAttach(): AttachMode {
    return this.options.role === 'node' && this.options.attach === 'create' ? 'create' : 'existing';
  }

  private onLinkLost(err: HashmailClientError): void {
    this.link = null;
    this.setPresence(false);
    this.notify();
    if (this.closed) return;
    if (!this.options.reconnect || !isRetryable(err)) return this.fail(err);
    if (err instanceof RelayMoved) {
      try {
        this.nextTarget = { server: relayAddress(err.relayAddress, this.options.server), via: 'redirect' };
      } catch {
        this.nextTarget = null;
      }
    } else if (err instanceof LinkDropped && this.lastRelay) {
      this.nextTarget = this.lastRelay;
    }
    void this.reconnectLoop(err);
  }

  private async reconnectLoop(cause: HashmailClientError): Promise<void> {
    const lostAt = Date.now();
    let error = cause;
    for (let attempt = 1; ; attempt++) {
      // A relay that named the session's new owner is followed at once; every other attempt waits its jittered turn.
      const resuming = Date.now() - lostAt < RESUME_GRACE_MS;
      const atOnce = (attempt === 1 && this.nextTarget?.via === 'redirect') || this.lookUpAtOnce;
      this.lookUpAtOnce = false;
      const delayMs = atOnce ? 0 : resuming ? this.resumeBackoff.next() : this.backoff.next();
      this.emit('reconnecting', { attempt, delayMs, error });
      try {
        await sleep(delayMs, this.lifetime.signal);
        await this.openLink(this.reconnectAttach());
      } catch (err) {
        if (this.closed) return;
        error = toClientError(err);
        const inGrace = Date.now() - lostAt < RESUME_GRACE_MS;
        if (isRetryable(error) || (inGrace && (error instanceof SessionNotFound || error instanceof SessionInUse))) continue;
        return this.fail(error);
      }
      this.backoff.reset();
      this.resumeBackoff.reset();
      this.emit('reconnected', { attempts: attempt, version: this.lastVersion, peerPresent: this.present, relay: this.relayAuthority });
      return;
    }
  }

  private fail(err: HashmailClientError): void {
    if (this.failure || this.closed) return;
    this.failure = err;
    this.closed = true;
    this.lifetime.abort();
    this.inbox.fail(err);
    this.notify();
    this.closing = Promise.resolve();
    this.emit('close', err);
  }

  private setPresence(present: boolean): void {
    if (present === this.present) return;
    this.present = present;
    this.emit('presence', present);
  }

  /** Resolves on the next change of link, failure or close. */
  private stateChange(): Promise<void> {
    return new Promise((resolve) => this.wakeUp.push(resolve));
  }

  private notify(): void {
    const waiters = this.wakeUp;
    this.wakeUp = [];
    for (const wake of waiters) wake();
  }
}
