/**
 * The one lookup behind both ServerForMailbox (gRPC) and GET /v2/relay
 * (HTTP): validates the route, asks the directory, maps its failures to our
 * error codes (so both transports say the same thing) and counts the result.
 */
import { HashmailError } from '../session/errors.js';
import { DirectoryUnavailableError, NoInstanceError, type Directory, type RouteOwner } from './directory.js';
import { isRoute } from './route.js';
import type { KeyedQuota } from '../session/keyed-quota.js';

/** Label values of hashmail_directory_lookups_total{result} (a fixed set). */
export type LookupResult = 'found' | 'not_placed' | 'bad_route' | 'unavailable' | 'no_relay' | 'error';

export type LookupCounter = (result: LookupResult) => void;

/** Maps what a directory call threw to our error (anything unknown becomes INTERNAL upstream). */
export function directoryError(err: unknown): unknown {
  if (err instanceof DirectoryUnavailableError) return new HashmailError('DIRECTORY_UNAVAILABLE');
  if (err instanceof NoInstanceError) return new HashmailError('NO_RELAY');
  return err;
}

function resultOf(err: unknown): LookupResult {
  if (!(err instanceof HashmailError)) return 'error';
  if (err.code === 'DIRECTORY_UNAVAILABLE') return 'unavailable';
  if (err.code === 'NO_RELAY') return 'no_relay';
  return 'error';
}

/**
 * What a party asking again already knows (ServerForMailboxRequest
 * unreachable / wait_ms): while the answer would still be the owner it could
 * not reach, or still "not placed", the lookup is held until that may have
 * changed (Directory.waitForChange), at most `ms`.
 */
export interface LookupWait {
  /** Instance id of the owner the party could not reach; empty: none. */
  unreachable: string;
  /**
   * That owner's registration as the party was sent to it (RouteOwner.startedAt);
   * 0 / absent: not known. Given, the lookup is held only while the owner is
   * that very registration: one restarted under the same id is answered at once.
   */
  unreachableStartedAt?: number;
  /** How long the party is willing to wait (capped by directory.lookupWaitMaxMs). */
  ms: number;
  /** Aborts the wait (the caller went away). */
  signal?: AbortSignal;
}

/** What a lookup asks, and who asks it. */
export interface RouteAsk {
  /** Place the session if nobody owns it (a creating operation). */
  create: boolean;
  /**
   * The asker's per-address limit key (the one its connections count under):
   * its held lookups count against the HeldLookupQuota, and a placement it
   * causes against its directory.maxPlacementShare. Absent: neither is
   * counted per address (only the process-wide caps apply).
   */
  client?: string;
  /** Hold the answer while it would repeat what the asker knows. */
  wait?: LookupWait;
}

/**
 * Lookups one client address may have held at once in this process: past
 * it its lookups are answered at once, as past directory.maxWaitingLookups.
 * Without it one address, within its connection and stream limits (2,000 x
 * 1,000 HTTP/2 streams), took every one of the 100,000 process-wide slots
 * (about 12 KiB each: some 1.2 GB) and every other party's held lookup was
 * answered at once. The cap is limits.maxBoxesPerAddress: a party holds one
 * lookup, and an address's parties hold at least one box each. Keyed by the
 * client's limit key (LookupWait.client).
 */
export type HeldLookupQuota = KeyedQuota;

/**
 * How long before a held lookup arrived the party may have failed to reach
 * the owner it names (ms). An owner that registered again within this (a
 * relay restarted under the same id, e.g. with its data directory) is
 * answered at once: it may not be the process the party could not reach, or
 * the party's connection may still report the refusals from before the
 * restart. Past it, a party that names the registration it could not reach
 * (LookupWait.unreachableStartedAt) is held only while that registration
 * owns the session; one that does not is held against any (a guess that an
 * instance lagging by more than this, in a reconnect storm, got wrong).
 */
export const RESTART_GRACE_MS = 5_000;

/**
 * `directory.lookup`, held per `wait`: while the answer is "not placed" (null)
 * or the owner the caller could not reach, it waits for a change and asks
 * again, until `wait.ms` has passed. A change may leave the answer as it was
 * (the owner turned draining but still serves the session until it releases
 * it): then it waits on. Directory errors are thrown as they are.
 */
export async function lookupHeld(directory: Directory, route: string, ask: RouteAsk, quota?: HeldLookupQuota): Promise<RouteOwner | null> {
  const arrived = performance.now();
  const { wait, client } = ask;
  const options = { place: ask.create, ...(client === undefined ? {} : { client }) };
  let owner = await directory.lookup(route, options);
  if (!wait || !(wait.ms > 0)) return owner;
  // The owner the party could not reach, unless it restarted since then (registered again under the same id),
  // or it is this very instance: the party reaches it now (a restarted relay does not know it restarted).
  const stillUnreachable = (o: RouteOwner): boolean => {
    if (o.id !== wait.unreachable || o.id === directory.selfId) return false;
    // Registered again lately: a party's failure so soon after may be its connection's memory of the refusals
    // before the restart (a gRPC channel backs off for up to seconds and fails calls with the last error), even
    // when it names the new registration. Answered at once; a real failure asks again, and is held then.
    const restarted = directory.reRegisteredAt(o.id);
    if (restarted !== undefined && restarted >= arrived - RESTART_GRACE_MS) return false;
    return !wait.unreachableStartedAt || o.startedAt === wait.unreachableStartedAt;
  };
  if (!(owner === null || stillUnreachable(owner)) || wait.signal?.aborted) return owner;
  // Is anything still listening there? If not, and its lease is neglected, its leases go and the wait below ends.
  if (owner !== null) directory.ownerUnreachable?.(owner);
  const release = quota && client !== undefined ? quota.take(client) : () => undefined;
  if (!release) return owner;
  try {
    const deadline = Date.now() + wait.ms;
    for (let left = wait.ms; (owner === null || stillUnreachable(owner)) && left > 0 && !wait.signal?.aborted; left = deadline - Date.now()) {
      const held = await directory.waitForChange(route, owner?.id ?? null, left, wait.signal);
      if (!held || wait.signal?.aborted) break;
      owner = await directory.lookup(route, options);
    }
    return owner;
  } finally {
    release();
  }
}

/** The owner of `route`, placing it when `ask.create`; throws a HashmailError otherwise. */
export async function lookupRoute(directory: Directory, route: unknown, ask: RouteAsk, count: LookupCounter, quota?: HeldLookupQuota): Promise<RouteOwner> {
  if (!isRoute(route)) {
    count('bad_route');
    throw new HashmailError('BAD_ROUTE');
  }
  let owner: RouteOwner | null;
  try {
    owner = await lookupHeld(directory, route, ask, quota);
  } catch (err) {
    const mapped = directoryError(err);
    count(resultOf(mapped));
    throw mapped;
  }
  if (owner === null) {
    count('not_placed');
    throw new HashmailError('SESSION_NOT_PLACED');
  }
  count('found');
  return owner;
}

/** A bound lookup, as the transports get it. */
export type RouteLookup = (route: unknown, ask: RouteAsk) => Promise<RouteOwner>;
