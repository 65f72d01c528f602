/**
 * Which relay a v2 link dials. In a cluster any instance answers a lookup of
 * the session's route with the relay that owns it, and the party dials that
 * relay directly. An instance that does not serve lookups (an old single
 * server: gRPC UNIMPLEMENTED, HTTP 404 without our error body, 405) is dialed
 * directly as before, remembered per instance and transport (module-wide)
 * for LOOKUP_MISSING_RECHECK_MS. Instances are asked in the order given; when
 * none answered at all, the first is dialed directly, so a lookup never makes
 * a reachable old server unusable (a browser cannot tell a CORS refusal from
 * an instance that is down).
 */
import { CertificateMismatch, ConnectionLost, HashmailClientError, SessionNotFound, StatusCode } from './errors.js';
import { knownV1Only } from './negotiate.js';
import { parseServer, type ProtocolChoice, type ServerAddress, type TransportName } from './options.js';
import { LookupUnreachable, type LookupWaitRequest, type RelayLookup } from './relay-lookup.js';
import type { NodeTls } from './tls-trust-node.js';

/** How long "this instance serves no lookups" is trusted before asking it again (ms): servers get upgraded. */
export const LOOKUP_MISSING_RECHECK_MS = 10 * 60_000;

/** How a link's relay was chosen ('resume': the relay of a link that dropped, dialed again before any lookup). */
export type RelayVia = 'lookup' | 'redirect' | 'direct' | 'resume';

export interface RelayTarget {
  server: ServerAddress;
  via: RelayVia;
  /** The instance that answered the lookup (via 'lookup'). */
  lookupServer?: string;
  /** The owner's instance id the lookup named (via 'lookup'). */
  ownerId?: string;
  /** That owner's registration (the lookup answer's startedAt), when the instance told it. */
  ownerStartedAt?: number;
}

export interface FindRelayParams {
  /** The configured instances, in the order to ask them. */
  servers: readonly ServerAddress[];
  transport: TransportName;
  protocol: ProtocolChoice;
  /** The transport's lookup; null where there is none (dial directly). */
  lookup: RelayLookup | null;
  route: string;
  /** Place the session if absent (the party attaches with 'create'). */
  create: boolean;
  tlsSkipVerify: boolean;
  signal: AbortSignal;
  /** TLS options for an instance (`ca` / `certificateSha256`, Node); null: the default verification. */
  trustFor: ((server: ServerAddress) => Promise<NodeTls | undefined>) | null;
  /** A retry after the owner was unreachable or the session not placed: hold the answer while it is the same. */
  wait?: LookupWaitRequest;
}

/**
 * How long an instance that could not be reached for a lookup is asked only
 * after the others (ms): after a relay's death its parties would otherwise
 * each try it first on every retry, a failed connection each.
 */
export const UNREACHABLE_DEMOTE_MS = 3_000;

/** `transport|host:port` -> when a lookup last found the instance unreachable (Date.now()). */
const unreachableAt = new Map<string, number>();

/** The instances in the order to ask them: those unreachable within UNREACHABLE_DEMOTE_MS last, each group in the configured order. */
function lookupOrder(transport: TransportName, servers: readonly ServerAddress[], now = Date.now()): ServerAddress[] {
  const fresh: ServerAddress[] = [];
  const demoted: ServerAddress[] = [];
  for (const server of servers) {
    const at = unreachableAt.get(missingKey(transport, server));
    if (at !== undefined && now - at < UNREACHABLE_DEMOTE_MS) demoted.push(server);
    else fresh.push(server);
  }
  return demoted.length === 0 ? fresh : fresh.concat(demoted);
}

/** `transport|host:port` -> when the instance was found not serving lookups (Date.now()). */
const lookupMissing = new Map<string, number>();

function missingKey(transport: TransportName, server: ServerAddress): string {
  return `${transport}|${server.authority}`;
}

function knownWithoutLookup(transport: TransportName, server: ServerAddress, now = Date.now()): boolean {
  const key = missingKey(transport, server);
  const since = lookupMissing.get(key);
  if (since === undefined) return false;
  if (now - since < LOOKUP_MISSING_RECHECK_MS) return true;
  lookupMissing.delete(key);
  return false;
}

/** Forgets which instances serve no lookups (tests; an instance known to have been upgraded). */
export function forgetLookupSupport(): void {
  lookupMissing.clear();
  unreachableAt.clear();
}

/** A relay's advertised `HOST:PORT`, dialed with the TLS setting of `like` (the configured server). */
export function relayAddress(address: string, like: ServerAddress): ServerAddress {
  try {
    return { ...parseServer(address, !like.secure), secure: like.secure };
  } catch {
    throw new HashmailClientError(StatusCode.INTERNAL, `relay named an unusable address '${address}'`);
  }
}

/**
 * The relay to dial. Rejects with SessionNotFound when no relay owns the
 * session and it is not to be created, with ConnectionLost (retryable) when
 * the instances answered "try again", with another error when one refused.
 */
export async function findRelay(params: FindRelayParams): Promise<RelayTarget> {
  const { servers, transport, protocol, lookup } = params;
  const first = servers[0];
  // v1 has no lookup: a v1 party goes to the configured server (the cluster's legacy front door).
  if (!lookup || protocol === 'v1' || (protocol === 'auto' && knownV1Only(transport, { server: first }))) return { server: first, via: 'direct' };
  let retry: HashmailClientError | null = null;
  for (const server of lookupOrder(transport, servers)) {
    if (knownWithoutLookup(transport, server)) return { server, via: 'direct' };
    let answer;
    let tls: NodeTls | undefined;
    try {
      tls = params.trustFor ? await params.trustFor(server) : undefined;
    } catch (err) {
      // A pin that does not match is reported; an instance whose certificate could not be fetched gave no answer.
      if (err instanceof CertificateMismatch || params.signal.aborted) throw err;
      continue;
    }
    try {
      answer = await lookup({
        server,
        route: params.route,
        create: params.create,
        tlsSkipVerify: params.tlsSkipVerify,
        signal: params.signal,
        ...(tls ? { tls } : {}),
        ...(params.wait ? { wait: params.wait } : {}),
      });
    } catch (err) {
      if (params.signal.aborted) throw new ConnectionLost('connect aborted', { cause: params.signal.reason });
      if (err instanceof LookupUnreachable) {
        unreachableAt.set(missingKey(transport, server), Date.now());
        continue;
      }
      if (err instanceof ConnectionLost) {
        retry = err;
        continue;
      }
      throw err;
    }
    unreachableAt.delete(missingKey(transport, server));
    switch (answer.kind) {
      case 'owner':
        return {
          server: relayAddress(answer.address, server),
          via: 'lookup',
          lookupServer: server.authority,
          ownerId: answer.id,
          ...(answer.startedAt ? { ownerStartedAt: answer.startedAt } : {}),
        };
      case 'not-placed':
        throw new SessionNotFound(StatusCode.NOT_FOUND, `stream not found: no relay holds the session (${answer.message})`);
      case 'not-served':
        lookupMissing.set(missingKey(transport, server), Date.now());
        return { server, via: 'direct' };
    }
  }
  if (retry) throw retry;
  // No instance answered: dial the first as before lookups existed; the dial reports why it is unreachable.
  return { server: first, via: 'direct' };
}
