/**
 * Node-only: gRPC channels shared by every connection of this process, per
 * relay, security and options. A channel costs a resolver (a c-ares context
 * for a host name), a load balancer and a connection; after a relay's death
 * all of its parties in a process look up and dial at once, and a channel
 * each per attempt cost more CPU than the calls themselves.
 *
 * Calls on one channel share its HTTP/2 connection, and a server caps the
 * calls of one connection (ours refuses past limits.maxStreamsPerConnection,
 * 1,000 by default; others queue). So a channel carries at most
 * MAX_CALLS_PER_CHANNEL calls, and the next call opens another channel with
 * a connection of its own (a local subchannel pool: grpc-js would otherwise
 * put equal channels on one connection).
 *
 * A channel to an instance that is down fails calls at once (no wait for
 * ready), so the connection's own backoff paces retries; its reconnect
 * backoff is kept short so an instance that is back is reached soon (grpc-js
 * would wait up to 120 s). A channel nobody used for CHANNEL_IDLE_MS closes.
 * A request with a pinned `tls` gets a channel of its own: its check is not
 * part of the key.
 */
import { Client, type ChannelOptions } from '@grpc/grpc-js';
import { credentialsFor, securityOf } from './grpc-channel.js';
import type { ServerAddress } from './options.js';
import type { NodeTls } from './tls-trust-node.js';

/** How long an unused channel stays open for the next call (ms). */
export const CHANNEL_IDLE_MS = 30_000;
/** Reconnect backoff of a shared channel (ms): first wait and cap. */
const RECONNECT_BACKOFF_MS = 250;
const MAX_RECONNECT_BACKOFF_MS = 2_000;
/**
 * Calls (links, lookups) on one channel at most. HTTP/2 asks every server to
 * allow at least 100 concurrent streams on a connection (RFC 9113, 6.5.2),
 * so no server refuses or queues these.
 */
export const MAX_CALLS_PER_CHANNEL = 100;

interface SharedChannel {
  client: Client;
  /** Calls (lookups, links) using it now. */
  users: number;
  /** Closes the channel once unused for CHANNEL_IDLE_MS; null while in use. */
  idle: NodeJS.Timeout | null;
}

/** Open channels by key (relay, security, options), each with at most MAX_CALLS_PER_CHANNEL users. */
const channels = new Map<string, SharedChannel[]>();

export interface ChannelRequest {
  server: ServerAddress;
  tlsSkipVerify: boolean;
  tls?: NodeTls;
  /** grpc-js channel options (part of the key). */
  options?: ChannelOptions;
}

export interface ChannelLease {
  client: Client;
  /** Done with the channel: call once. */
  release(): void;
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
    return { client, release: once(() => client.close()) };
  }
  const key = `${req.server.authority}|${securityOf(req.server, req.tlsSkipVerify)}|${JSON.stringify(options)}`;
  let open = channels.get(key);
  if (!open) {
    open = [];
    channels.set(key, open);
  }
  let entry = open.find((c) => c.users < MAX_CALLS_PER_CHANNEL);
  if (!entry) {
    entry = { client: new Client(req.server.authority, credentials, options), users: 0, idle: null };
    open.push(entry);
  }
  const shared = entry;
  if (shared.idle) clearTimeout(shared.idle);
  shared.idle = null;
  shared.users++;
  return {
    client: shared.client,
    release: once(() => {
      if (--shared.users > 0) return;
      shared.idle = setTimeout(() => {
        const list = channels.get(key) ?? [];
        const at = list.indexOf(shared);
        if (at >= 0) list.splice(at, 1);
        if (list.length === 0) channels.delete(key);
        shared.client.close();
      }, CHANNEL_IDLE_MS);
      shared.idle.unref();
    }),
  };
}

/** Closes every shared channel (tests; a process about to exit). */
export function closeSharedChannels(): void {
  for (const { client, idle } of [...channels.values()].flat()) {
    if (idle) clearTimeout(idle);
    client.close();
  }
  channels.clear();
}

function once(fn: () => void): () => void {
  let done = false;
  return () => {
    if (done) return;
    done = true;
    fn();
  };
}
