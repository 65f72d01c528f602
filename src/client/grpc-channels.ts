/**
 * Node-only: gRPC channels shared by every connection of this process, per
 * relay, security and options. A channel costs a resolver (a c-ares context
 * for a host name), a load balancer and a connection; after a relay's death
 * all of its parties in a process look up and dial at once, and a channel
 * each per attempt cost more CPU than the calls themselves.
 *
 * Calls on one channel share its HTTP/2 connection, and a server caps the
 * calls of one connection: ours refuses one past limits.maxStreamsPerConnection
 * (1,000 by default) with RESOURCE_EXHAUSTED. Such a refusal (refused())
 * teaches the channel set of that server how many calls a connection takes;
 * the refused call is tried again and, like every later one past that many,
 * gets another channel with a connection of its own (a local subchannel
 * pool: grpc-js would otherwise put equal channels on one connection). Below
 * the server's limit everything stays on one connection: spreading a
 * process's calls over several connections early made a 2,000-session
 * re-join slower (bench/rejoin.ts, BENCHMARKS.md section 11).
 *
 * A channel to an instance that is down fails calls at once (no wait for
 * ready), so the connection's own backoff paces retries; its reconnect
 * backoff is kept short so an instance that is back is reached soon (grpc-js
 * would wait up to 120 s). A channel nobody used for CHANNEL_IDLE_MS closes.
 * A request with a pinned `tls` gets a channel of its own: its check is not
 * part of the key.
 *
 * That backoff must not outlive the relay it was about. A channel failing
 * (TRANSIENT_FAILURE) fails every call with its last error until its backoff
 * ends, up to MAX_RECONNECT_BACKOFF_MS; when a relay restarts on the same
 * address, a lookup names its new registration at once, and its parties'
 * dials on the old channel would fail with the old refusal and wait for the
 * relay to move away again. A dial that names the registration a lookup
 * gave (`registration`) therefore retires the failing channels of that
 * address the first time that registration is named in this process: one
 * new connection for all of them, not one per party. Dials that name a
 * registration named before keep the backoff's pace, also when lookups
 * answer two registrations in turn (instances whose views differ while a
 * relay restarts again and again): each is new once, so a failing address
 * gets at most one new connection per registration, not one per dial. A
 * retired channel still in use closes at its last release.
 */
import { Client, connectivityState, status, type ChannelOptions } from '@grpc/grpc-js';
import { credentialsFor, securityOf } from './grpc-channel.js';
import type { ServerAddress } from './options.js';
import type { NodeTls } from './tls-trust-node.js';

/** How long an unused channel stays open for the next call (ms). */
export const CHANNEL_IDLE_MS = 30_000;
/** Registrations remembered per channel set (the newest): enough for any restarts a lookup can still name. */
const REGISTRATIONS_KEPT = 16;
/** Reconnect backoff of a shared channel (ms): first wait and cap. */
const RECONNECT_BACKOFF_MS = 250;
const MAX_RECONNECT_BACKOFF_MS = 2_000;
/** How often one call is tried again on another channel after refusals for the stream limit. */
export const MAX_STREAM_LIMIT_RETRIES = 8;
/** The server's refusal of a call past its streams-per-connection limit (src/session/errors.ts limitReached). */
const STREAM_LIMIT_TEXT = 'limits.maxStreamsPerConnection';

interface ChannelSet {
  channels: SharedChannel[];
  /** Calls one connection of this server takes, as its refusals taught; Infinity until one. */
  capacity: number;
  /** Relay registrations dials have named (ChannelRequest.registration), oldest first, at most REGISTRATIONS_KEPT. */
  registrations: Set<string>;
}

interface SharedChannel {
  client: Client;
  /** Calls (lookups, links) using it now. */
  users: number;
  /** Closes the channel once unused for CHANNEL_IDLE_MS; null while in use. */
  idle: NodeJS.Timeout | null;
}

/** Open channels by key (relay, security, options). */
const channels = new Map<string, ChannelSet>();
/** Channels taken out of their set while in use (retireIfFailing): closed at their last release, or by closeSharedChannels. */
const retiredInUse = new Set<SharedChannel>();

export interface ChannelRequest {
  server: ServerAddress;
  tlsSkipVerify: boolean;
  tls?: NodeTls;
  /** grpc-js channel options (part of the key). */
  options?: ChannelOptions;
  /**
   * The relay registration a lookup just named for this address (owner id and
   * startedAt): a channel still failing from before it is not used.
   */
  registration?: string;
}

export interface ChannelLease {
  client: Client;
  /** Done with the channel: call once. */
  release(): void;
  /**
   * The server refused this call for its connection's stream limit (see
   * isStreamLimitRefusal): the connection takes no more calls than it
   * carries besides this one. Then release() and try the call again.
   */
  refused(): void;
}

/** A gRPC status that is the server's refusal of a call past its streams-per-connection limit. */
export function isStreamLimitRefusal(err: { code?: number; details?: string }): boolean {
  return err.code === status.RESOURCE_EXHAUSTED && (err.details ?? '').includes(STREAM_LIMIT_TEXT);
}

/** A channel for `req`; release() it when the call is over. */
export function acquireChannel(req: ChannelRequest): ChannelLease {
  const options: ChannelOptions = {
    'grpc.initial_reconnect_backoff_ms': RECONNECT_BACKOFF_MS,
    'grpc.max_reconnect_backoff_ms': MAX_RECONNECT_BACKOFF_MS,
    'grpc.use_local_subchannel_pool': 1,
    ...req.options,
  };
  const credentials = credentialsFor(req.server, req.tlsSkipVerify, req.tls);
  if (req.tls) {
    const client = new Client(req.server.authority, credentials, options);
    return { client, release: once(() => client.close()), refused: () => undefined };
  }
  const key = `${req.server.authority}|${securityOf(req.server, req.tlsSkipVerify)}|${JSON.stringify(options)}`;
  let set = channels.get(key);
  if (!set) {
    set = { channels: [], capacity: Infinity, registrations: new Set() };
    channels.set(key, set);
  }
  const known = set;
  if (req.registration !== undefined && !known.registrations.has(req.registration)) {
    known.registrations.add(req.registration);
    if (known.registrations.size > REGISTRATIONS_KEPT) known.registrations.delete(known.registrations.values().next().value as string);
    known.channels = known.channels.filter((c) => !retireIfFailing(c));
  }
  let entry = known.channels.find((c) => c.users < known.capacity);
  if (!entry) {
    entry = { client: new Client(req.server.authority, credentials, options), users: 0, idle: null };
    known.channels.push(entry);
  }
  const shared = entry;
  if (shared.idle) clearTimeout(shared.idle);
  shared.idle = null;
  shared.users++;
  return {
    client: shared.client,
    refused: () => {
      known.capacity = Math.max(1, Math.min(known.capacity, shared.users - 1));
    },
    release: once(() => {
      if (--shared.users > 0) return;
      // Retired while in use (failing against an older registration): closed now, not kept for the next call.
      if (retiredInUse.delete(shared)) return shared.client.close();
      shared.idle = setTimeout(() => {
        const at = known.channels.indexOf(shared);
        if (at >= 0) known.channels.splice(at, 1);
        if (known.channels.length === 0 && channels.get(key) === known) channels.delete(key);
        shared.client.close();
      }, CHANNEL_IDLE_MS);
      shared.idle.unref();
    }),
  };
}

/** Takes a channel in TRANSIENT_FAILURE out of use (closed now if unused, else at its last release); true if it was. */
function retireIfFailing(channel: SharedChannel): boolean {
  if (channel.client.getChannel().getConnectivityState(false) !== connectivityState.TRANSIENT_FAILURE) return false;
  if (channel.users > 0) {
    retiredInUse.add(channel);
    return true;
  }
  if (channel.idle) clearTimeout(channel.idle);
  channel.idle = null;
  channel.client.close();
  return true;
}

/** Closes every shared channel (tests; a process about to exit). */
export function closeSharedChannels(): void {
  for (const { client, idle } of [...channels.values()].flatMap((set) => set.channels).concat([...retiredInUse])) {
    if (idle) clearTimeout(idle);
    client.close();
  }
  channels.clear();
  retiredInUse.clear();
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
