/**
 * Node-only: gRPC channels shared by every connection of this process, per
 * relay, security and options. A channel costs a resolver (a c-ares context
 * for a host name), a load balancer and a connection; after a relay's death
 * all of its parties in a process look up and dial at once, and a channel
 * each per attempt cost more CPU than the calls themselves. Calls on one
 * channel share its HTTP/2 connection, as they already did through grpc-js's
 * global subchannel pool.
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

interface SharedChannel {
  client: Client;
  /** Calls (lookups, links) using it now. */
  users: number;
  /** Closes the channel once unused for CHANNEL_IDLE_MS; null while in use. */
  idle: NodeJS.Timeout | null;
}

const channels = new Map<string, SharedChannel>();

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
    ...req.options,
  };
  const credentials = credentialsFor(req.server, req.tlsSkipVerify, req.tls);
  if (req.tls) {
    const client = new Client(req.server.authority, credentials, options);
    return { client, release: once(() => client.close()) };
  }
  const key = `${req.server.authority}|${securityOf(req.server, req.tlsSkipVerify)}|${JSON.stringify(options)}`;
  let shared = channels.get(key);
  if (!shared) {
    shared = { client: new Client(req.server.authority, credentials, options), users: 0, idle: null };
    channels.set(key, shared);
  }
  const entry = shared;
  if (entry.idle) clearTimeout(entry.idle);
  entry.idle = null;
  entry.users++;
  return {
    client: entry.client,
    release: once(() => {
      if (--entry.users > 0) return;
      entry.idle = setTimeout(() => {
        channels.delete(key);
        entry.client.close();
      }, CHANNEL_IDLE_MS);
      entry.idle.unref();
    }),
  };
}

/** Closes every shared channel (tests; a process about to exit). */
export function closeSharedChannels(): void {
  for (const { client, idle } of channels.values()) {
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
