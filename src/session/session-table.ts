import { Box, type BoxHost, type BoxOptions, type CloseReason } from './box.js';
import { BufferBudget } from './buffer-budget.js';
import { systemClock, type Clock, type TimerHandle } from './clock.js';
import { HashmailError, limitReached } from './errors.js';
import { KeyedWaiters } from './keyed-waiters.js';
import { Session } from './session.js';
import { boxIndex, boxKey, checkSid, sessionKey } from './sid.js';

export interface SessionTableOptions extends BoxOptions {
  /** Boxes in total; past it creation fails with RESOURCE_EXHAUSTED. */
  maxBoxes: number;
  /** Boxes created from one source address (the legacy protocol has no auth). */
  maxBoxesPerAddress: number;
  /** Bytes held for readers across all boxes (queued or not yet flushed by the reader's transport). */
  maxBufferedBytes: number;
  /** The same, across the boxes one client address created; optional so unit tests may leave it out. */
  maxBufferedBytesPerAddress?: number;
  /** A box nobody holds is torn down after this long; negative disables. */
  staleTimeoutMs: number;
}

/** Hooks for metrics and logs; the table calls them, never the other way round. */
export interface SessionTableObserver {
  boxCreated?(box: Box): void;
  boxClosed?(box: Box, reason: CloseReason): void;
  limitHit?(configKey: string, client: string): void;
  /** A write waited for a rate-limit token. */
  rateLimited?(): void;
  /** A session (its first box) came into the table; `key`: its session key (never logged). */
  sessionOpened?(key: string): void;
  /** A session's last box left the table. */
  sessionClosed?(key: string): void;
}

interface BoxEntry {
  box: Box;
  session: Session;
  owner: Owner;
  staleTimer: TimerHandle | null;
}

/** A client address with boxes: how many, and the bytes they hold. Gone with its last box. */
interface Owner {
  address: string;
  boxes: number;
  budget: BufferBudget | null;
}

/**
 * Every session this relay owns, and their boxes. Enforces box limits and the
 * stale timeout; the slots and queues themselves live in Box.
 */
export class SessionTable implements BoxHost {
  private readonly entries = new Map<string, BoxEntry>();
  private readonly sessionsByKey = new Map<string, Session>();
  private readonly owners = new Map<string, Owner>();
  /** Callers waiting for a session to be created, by session key (whenSessionOpened). */
  private readonly openWaiters: KeyedWaiters;
  readonly budget: BufferBudget;
  private shuttingDown = false;

  constructor(
    private readonly options: SessionTableOptions,
    private readonly observer: SessionTableObserver = {},
    private readonly clock: Clock = systemClock,
  ) {
    this.budget = new BufferBudget(options.maxBufferedBytes);
    this.openWaiters = new KeyedWaiters(options.maxBoxes);
  }

  get boxCount(): number {
    return this.entries.size;
  }

  get sessionCount(): number {
    return this.sessionsByKey.size;
  }

  /** Client addresses that own at least one box (per-address limit entries). */
  get boxOwnerCount(): number {
    return this.owners.size;
  }

  sessions(): IterableIterator<Session> {
    return this.sessionsByKey.values();
  }

  /**
   * Resolves once the session of `sid` exists (either box created), after
   * `ms`, or when `signal` aborts; the caller looks again. At once when
   * there are already as many waiters as boxes may exist (limits.maxBoxes).
   */
  async whenSessionOpened(sid: Uint8Array, ms: number, signal?: AbortSignal): Promise<void> {
    const key = sessionKey(checkSid(sid));
    if (!this.sessionsByKey.has(key)) await this.openWaiters.wait([key], ms, signal);
  }

  /** NewCipherBox: creates the box for `sid`; ALREADY_EXISTS if it has one. */
  createBox(sid: Uint8Array, owner: string, capacityBytes?: number): Box {
    if (this.shuttingDown) throw new HashmailError('SERVER_SHUTTING_DOWN');
    const id = checkSid(sid);
    const key = boxKey(id);
    if (this.entries.has(key)) throw new HashmailError('STREAM_EXISTS');
    return this.insertBox(id, key, owner, capacityBytes);
  }

  /**
   * v2 attach: the boxes of the session of `sid` (box `sid`, which the party
   * reads, and box `sid ^ 1`, which it writes), creating whichever is
   * missing. Without `create` the session must exist, i.e. at least one of
   * its boxes: a legacy node creates its two boxes at different times (the
   * one it writes only after the app's first message), and a v2 peer must be
   * able to join in between. Limits are checked for both boxes before either
   * is created, so a refused attach leaves nothing.
   */
  openSession(sid: Uint8Array, peer: Uint8Array, owner: string, create: boolean, capacityBytes: number): { read: Box; write: Box } {
    if (this.shuttingDown) throw new HashmailError('SERVER_SHUTTING_DOWN');
    const readKey = boxKey(checkSid(sid));
    const writeKey = boxKey(checkSid(peer));
    let read = this.entries.get(readKey)?.box;
    let write = this.entries.get(writeKey)?.box;
    if (read && write) return { read, write };
    if (!create && !read && !write) throw new HashmailError('STREAM_NOT_FOUND');
    const missing = (read ? 0 : 1) + (write ? 0 : 1);
    this.checkRoom(owner, missing);
    read ??= this.insertBox(Buffer.from(sid), readKey, owner, capacityBytes);
    write ??= this.insertBox(Buffer.from(peer), writeKey, owner, capacityBytes);
    return { read, write };
  }

  /** Throws LIMIT_REACHED unless `count` more boxes fit, in total and for `owner`. */
  private checkRoom(owner: string, count: number): void {
    if (this.entries.size + count > this.options.maxBoxes) {
      this.observer.limitHit?.('limits.maxBoxes', owner);
      throw limitReached('limits.maxBoxes', this.options.maxBoxes);
    }
    if ((this.owners.get(owner)?.boxes ?? 0) + count > this.options.maxBoxesPerAddress) {
      this.observer.limitHit?.('limits.maxBoxesPerAddress', owner);
      throw limitReached('limits.maxBoxesPerAddress', this.options.maxBoxesPerAddress);
    }
  }

  private insertBox(id: Buffer, key: string, address: string, capacityBytes?: number): Box {
    this.checkRoom(address, 1);
    let owner = this.owners.get(address);
    if (!owner) {
      const perAddress = this.options.maxBufferedBytesPerAddress;
      owner = { address, boxes: 0, budget: perAddress ? new BufferBudget(perAddress) : null };
      this.owners.set(address, owner);
    }
    const skey = sessionKey(id);
    let session = this.sessionsByKey.get(skey);
    let opened = false;
    if (!session) {
      session = new Session(skey);
      this.sessionsByKey.set(skey, session);
      opened = true;
    }
    const box = new Box(Buffer.from(id), this.options, this.budget, this.clock, this, capacityBytes, owner.budget);
    session.boxes[boxIndex(id)] = box;
    const entry: BoxEntry = { box, session, owner, staleTimer: null };
    this.entries.set(key, entry);
    owner.boxes++;
    this.armStaleTimer(entry);
    this.observer.boxCreated?.(box);
    if (opened) {
      this.observer.sessionOpened?.(skey);
      this.openWaiters.wake(skey);
    }
    return box;
  }

  /** The box for `sid`, or "stream not found". */
  findBox(sid: Uint8Array): Box {
    const entry = this.entries.get(boxKey(checkSid(sid)));
    if (!entry) throw new HashmailError('STREAM_NOT_FOUND');
    return entry.box;
  }

  /** DelCipherBox: tears the box down; "stream not found" if there is none. */
  deleteBox(sid: Uint8Array): void {
    const entry = this.entries.get(boxKey(checkSid(sid)));
    if (!entry) throw new HashmailError('STREAM_NOT_FOUND');
    this.remove(entry, 'deleted');
  }

  /**
   * Removes both boxes of the session `key` (SessionKey), if it exists: a
   * relay that lost the session's route (it moved, or the relay was fenced)
   * can never serve them again. Streams still attached end as on
   * DelCipherBox; the router has ended the session's parties first.
   */
  dropSession(key: string): void {
    const session = this.sessionsByKey.get(key);
    if (!session) return;
    for (const box of session.boxes) {
      const entry = box && this.entries.get(boxKey(box.sid));
      if (entry) this.remove(entry, 'deleted');
    }
  }

  /** Ends every stream with UNAVAILABLE "server shutting down"; refuses new boxes. */
  shutdown(): void {
    this.shuttingDown = true;
    for (const entry of [...this.entries.values()]) this.remove(entry, 'shutdown');
  }

  private remove(entry: BoxEntry, reason: CloseReason): void {
    const key = boxKey(entry.box.sid);
    if (this.entries.get(key) !== entry) return;
    this.entries.delete(key);
    if (entry.staleTimer) this.clock.clearTimeout(entry.staleTimer);
    // The last box's bytes go back to the owner's budget in close() below; nothing else holds it.
    if (--entry.owner.boxes === 0) this.owners.delete(entry.owner.address);
    const { session } = entry;
    session.boxes[boxIndex(entry.box.sid)] = null;
    const sessionGone = session.boxCount === 0;
    if (sessionGone) this.sessionsByKey.delete(session.key);
    entry.box.close(reason);
    this.observer.boxClosed?.(entry.box, reason);
    if (sessionGone) this.observer.sessionClosed?.(session.key);
  }

  /**
   * Legacy stale rule: the timer runs from creation, stops while either slot
   * is taken and restarts when both are free again.
   */
  /** BoxHost: a write waited for a rate-limit token. */
  rateLimited(): void {
    this.observer.rateLimited?.();
  }

  slotsChanged(box: Box): void {
    const entry = this.entries.get(boxKey(box.sid));
    if (!entry || entry.box !== box) return;
    if (box.idle) this.armStaleTimer(entry);
    else if (entry.staleTimer) {
      this.clock.clearTimeout(entry.staleTimer);
      entry.staleTimer = null;
    }
  }

  private armStaleTimer(entry: BoxEntry): void {
    if (this.options.staleTimeoutMs < 0) return;
    if (entry.staleTimer) this.clock.clearTimeout(entry.staleTimer);
    entry.staleTimer = this.clock.setTimeout(() => {
      entry.staleTimer = null;
      this.remove(entry, 'stale');
    }, this.options.staleTimeoutMs);
  }
}
