/**
 * `connect` over a given way of loading transports: the entries (index.ts
 * for Node and bundlers, browser.ts for browsers) differ only in whether
 * gRPC can be loaded.
 */
import { MailboxConnection } from './connection.js';
import type { TransportOpeners } from './link.js';
import { fetchRequest, httpRelayLookup, type HttpRequest } from './relay-lookup.js';
import { resolveOptions, type ConnectOptions, type TransportName } from './options.js';
import { v1WebSocketOpener } from './v1-websocket.js';
import { v2WebSocketOpener } from './v2-websocket.js';
import type { TrustLoader, TrustOptions } from './tls-trust-node.js';
import { loadWebSocket } from './websocket.js';

/** Loads the gRPC openers, or null where gRPC cannot run. */
export type GrpcLoader = (() => Promise<TransportOpeners>) | null;
/** Loads the GET of the HTTP lookup (Node: one that honours tlsSkipVerify), or null for fetch. */
export type HttpRequestLoader = ((options: { tlsSkipVerify: boolean }) => Promise<HttpRequest>) | null;
/** Loads the Node TLS trust (`ca` / `certificateSha256`), or null where there is none (browsers). */
export type TrustLoaderLoader = ((options: TrustOptions) => Promise<TrustLoader>) | null;

export async function connectWith(
  options: ConnectOptions,
  loadGrpc: GrpcLoader,
  defaultTransport: TransportName,
  loadHttpRequest: HttpRequestLoader = null,
  loadTrust: TrustLoaderLoader = null,
): Promise<MailboxConnection> {
  const resolved = await resolveOptions(options, defaultTransport);
  const wantsTrust = resolved.trust.ca !== undefined || resolved.trust.pinSha256 !== undefined;
  if (wantsTrust && !loadTrust) throw new TypeError('ca and certificateSha256 need Node; a browser verifies with its own trust store');
  const trust = wantsTrust && loadTrust ? await loadTrust(resolved.trust) : null;
  let openers: TransportOpeners;
  if (resolved.transport === 'grpc') {
    if (!loadGrpc) throw new TypeError("transport 'grpc' needs Node; use transport 'websocket' in a browser");
    openers = await loadGrpc();
  } else {
    const factory = await loadWebSocket({ tlsSkipVerify: resolved.tlsSkipVerify });
    const get = loadHttpRequest ? await loadHttpRequest({ tlsSkipVerify: resolved.tlsSkipVerify }) : fetchRequest;
    openers = { openV2: v2WebSocketOpener(factory), openV1: v1WebSocketOpener(factory, get), lookup: httpRelayLookup(get) };
  }
  return MailboxConnection.open(resolved, openers, trust);
}
