/**
 * v2 parties on the relay's session table. A party reading SID `x` holds the
 * read slot of box `x` and the write slot of box `x ^ 1` together, so it
 * meets a v2 peer or a legacy peer's two halves in the same boxes. v2 boxes
 * hold at most a small window: a writer whose reader is absent or slow waits,
 * and the transport turns that wait into flow control.
 */
import type { Box, ReaderWatcher } from '../session/box.js';
import type { ReadableCallback } from '../session/message-queue.js';
import { HashmailError } from '../session/errors.js';
import type { Lease } from '../session/slot.js';
import type { SessionTable } from '../session/session-table.js';
import { checkSid, peerSid } from '../session/sid.js';
import type { RelayStats, TransportName } from '../observe/stats.js';
import { logAttach } from '../observe/attach-log.js';
import type { Logger } from '../observe/logger.js';
import { Attach, type Hello } from '../wire/v2-frames.js';
import type { CallInfo } from './legacy-mailbox.js';
import type { ReadSource } from './read-pump.js';
import { routeOfSid } from '../directory/route.js';
import type { RoutedParty, SessionRouter } from './session-router.js';

/** Protocol versions this relay speaks on the v2 service (v1 is the legacy service). */
export const SUPPORTED_VERSIONS: readonly number[] = [2];

/** Highest version in both the client's range and ours, or UNSUPPORTED_VERSION naming what we support. */
export function negotiateVersion(minVersion: number, maxVersion: number): number {
  const lo = minVersion || maxVersion;
  const chosen = [...SUPPORTED_VERSIONS].reverse().find((v) => v >= lo && v <= maxVersion);
  if (chosen === undefined) {
    throw new HashmailError(
      'UNSUPPORTED_VERSION',
      `unsupported protocol version: client speaks ${lo}..${maxVersion}, relay supports ${SUPPORTED_VERSIONS.join(', ')}`,
    );
  }
  return chosen;
}

export interface V2MailboxOptions {
  /** Bytes a v2 box holds for a reader that is not keeping up; then the writer waits. */
  windowBytes: number;
  maxMessageBytes: number;
  /** Attach and detach lines at debug; none without. */
  logger?: Logger;
}

export class V2Endpoint implements ReadSource, ReaderWatcher, RoutedParty {
  private released = false;
  private closedFn: ((err: HashmailError) => void) | null = null;
  /** An end() that came before the transport registered onClosed. */
  private pendingEnd: HashmailError | null = null;
  /** Runs once on release (the router forgets the party). */
  onRelease: (() => void) | null = null;
  private presenceFn: ((present: boolean) => void) | null = null;

  constructor(
    readonly version: number,
    private readonly readBox: Box,
    private readonly readLease: Lease,
    private readonly writeBox: Box,
    private readonly writeLease: Lease,
    private readonly transport: TransportName,
    private readonly stats: RelayStats,
    /** Largest payload this party may write (bytes): announced in the Welcome. */
    readonly maxMessageBytes: number,
    private readonly client: string = '',
    private readonly log: Logger | null = null,
  ) {
    stats.v2Endpoints[transport]++;
    logAttach(log, 'attached', readBox.sid, { transport, kind: 'v2 party', version, client });
    // The peer is whoever reads what this party writes.
    writeBox.watchReader(this);
    readLease.onClosed = this.boxClosed;
    writeLease.onClosed = this.boxClosed;
  }

  /** ReaderWatcher: the peer took or left the read slot of the box this party writes. */
  readerChanged(taken: boolean): void {
    this.presenceFn?.(taken);
  }

  /** Either box was torn down while this party holds its slots. */
  private readonly boxClosed = (err: HashmailError): void => {
    const fn = this.closedFn;
    this.closedFn = null;
    fn?.(err);
  };

  get peerPresent(): boolean {
    return this.writeBox.readSlot.taken;
  }

  /** `fn(present)` on each change of the peer's presence. */
  onPresence(fn: (present: boolean) => void): void {
    this.presenceFn = fn;
  }

  /** `fn` runs once if the session is torn down (stale, shutdown) while attached. */
  onClosed(fn: (err: HashmailError) => void): void {
    this.closedFn = fn;
    const pending = this.pendingEnd;
    this.pendingEnd = null;
    if (pending) this.boxClosed(pending);
  }

  /** Ends this party's stream with `err` (routing: the relay may no longer serve the session). */
  end(err: HashmailError): void {
    if (this.released) return;
    if (this.closedFn) this.boxClosed(err);
    else this.pendingEnd ??= err;
  }

  /** Next message from the peer, undefined when none is queued (ReadSource). */
  take(): Buffer | undefined {
    const msg = this.readBox.take();
    if (msg !== undefined) {
      this.stats.messagesRelayed++;
      this.stats.bytesRelayed += msg.length;
    }
    return msg;
  }

  whenReadable(fn: ReadableCallback): void {
    this.readBox.whenReadable(fn);
  }

  settle(payloadBytes: number): void {
    // After release the box settled everything this party held; a late callback must not touch the next reader's count.
    if (!this.released) this.readBox.settle(payloadBytes);
  }

  /**
   * Queues `msg` for the peer now if it fits (undefined), else returns a
   * promise that settles once it does (rate limit, then window): the caller
   * stops reading its transport until then. Throws on a bad message or a
   * torn-down session.
   */
  write(msg: Buffer): Promise<void> | undefined {
    if (msg.length > this.maxMessageBytes) {
      throw new HashmailError('MESSAGE_TOO_LARGE', `message too large: ${msg.length} bytes, limit v2.maxMessageBytes (${this.maxMessageBytes})`);
    }
    return this.writeBox.writeNow(msg) ? undefined : this.writeBox.write(msg);
  }

  /** Frees both slots at once; pending reads and writes end with CANCELLED. Idempotent. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.closedFn = null;
    const forget = this.onRelease;
    this.onRelease = null;
    forget?.();
    this.presenceFn = null;
    this.writeBox.watchReader(null);
    this.stats.v2Endpoints[this.transport]--;
    this.readBox.detach(this.readLease);
    this.writeBox.detach(this.writeLease);
    logAttach(this.log, 'detached', this.readBox.sid, { transport: this.transport, kind: 'v2 party', version: this.version, client: this.client });
  }
}

export class V2Mailbox {
  constructor(
    private readonly table: SessionTable,
    private readonly stats: RelayStats,
    private readonly options: V2MailboxOptions,
    /** Which sessions this relay serves (the directory's fencing); null: every one (unit tests). */
    private readonly router: SessionRouter | null = null,
  ) {}

  /**
   * Validates the hello, picks the version, finds or creates the session and
   * takes both slots (waiting up to the acquire wait for a taken one).
   */
  async attach(hello: Hello, call: CallInfo, signal?: AbortSignal): Promise<V2Endpoint> {
    if (hello.maxVersion === 0) throw new HashmailError('MALFORMED_REQUEST', 'hello must state max_version');
    const version = negotiateVersion(hello.minVersion, hello.maxVersion);
    const sid = checkSid(hello.sid);
    const create = hello.attach === Attach.Create;
    const route = this.router ? routeOfSid(sid) : '';
    if (this.router) await this.router.admit(route, create, false, call.address);
    // Placed here for a re-join a moment ago, and this party may have outrun the one that creates it: wait for that
    // one (at once when the session is there), then open, which says "stream not found" if it never came.
    if (!create && this.router?.awaitsCreator(route)) await this.table.whenSessionOpened(sid, this.router.creatorWaitMs, signal);
    const { read, write } = this.table.openSession(sid, peerSid(sid), call.address, create, this.options.windowBytes);
    const readLease = await read.attachReader(signal);
    let writeLease: Lease;
    try {
      writeLease = await write.attachWriter(signal);
    } catch (err) {
      read.detach(readLease);
      throw err;
    }
    const endpoint = new V2Endpoint(
      version,
      read,
      readLease,
      write,
      writeLease,
      call.transport,
      this.stats,
      this.options.maxMessageBytes,
      call.address,
      this.options.logger ?? null,
    );
    if (this.router) endpoint.onRelease = this.router.track(route, endpoint);
    return endpoint;
  }
}
