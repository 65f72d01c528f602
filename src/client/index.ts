/**
 * The hashmail client library (package entry "."): attach to a mailbox
 * session as one party and exchange messages with the peer, over protocol v2
 * with automatic fallback to v1, over gRPC (Node) or WebSocket (Node and
 * browsers), reconnecting with backoff and jitter.
 *
 * ```ts
 * import { connect } from 'hashmail-client';
 * const conn = await connect({ server: 'mailbox.example.com:443', phrase, role: 'app' });
 * conn.on('presence', (present) => console.log('peer', present ? 'here' : 'away'));
 * await conn.send(new TextEncoder().encode('hello'));
 * for await (const msg of conn) console.log(msg);
 * ```
 *
 * Browser safety: this file and everything it imports statically use only
 * standard web APIs (WebSocket, fetch, TextEncoder, crypto.subtle,
 * Uint8Array). The gRPC transport (grpc-js, Node built-ins) is loaded with a
 * dynamic import, and only when `transport: 'grpc'` is chosen; so is the
 * Node GET of the relay lookup (http-get-node.ts), only in Node. Bundlers that
 * follow dynamic imports should use ./browser.js (WebSocket only, no gRPC
 * import anywhere).
 */
import { connectWith, type HttpRequestLoader, type TrustLoaderLoader } from './connect.js';
import type { MailboxConnection } from './connection.js';
import type { ConnectOptions, TransportName } from './options.js';

export * from './public-api.js';

function inNode(): boolean {
  const proc = (globalThis as { process?: { versions?: { node?: string } } }).process;
  return Boolean(proc?.versions?.node);
}

/** gRPC in Node, WebSocket elsewhere. */
function defaultTransport(): TransportName {
  return inNode() ? 'grpc' : 'websocket';
}

/** Imports a module on first use and keeps the promise: an import() per connection resolves the specifier again every time. */
function memo<T>(load: () => Promise<T>): () => Promise<T> {
  let loaded: Promise<T> | undefined;
  return () => (loaded ??= load());
}

/** The Node-only modules, imported on demand. */
const once = {
  httpGet: memo(() => import('./http-get-node.js')),
  trust: memo(() => import('./tls-trust-node.js')),
  grpc: memo(() => import('./grpc-openers.js')),
};

/** Node's GET for the HTTP lookup (honours tlsSkipVerify); fetch elsewhere. */
const loadHttpRequest: HttpRequestLoader = async (options) => (await once.httpGet()).nodeHttpRequest(options);

/** `ca` / `certificateSha256` as Node TLS options (Node only: imported on demand). */
const loadTrust: TrustLoaderLoader = async (options) => (await once.trust()).trustLoader(options);

/**
 * Attaches to the session and resolves once attached: a v2 Welcome (the
 * peer may not be there yet: see `peerPresent` and 'presence'), or in v1
 * once the receive stream holds (v1 has no presence: `peerPresent` stays
 * false). Rejects with SessionNotFound, SessionInUse, UnsupportedVersion,
 * ConnectionLost or another HashmailClientError; the first attempt is not
 * retried. Defaults: transport 'grpc' in Node ('websocket' elsewhere),
 * protocol 'auto', role 'app', attach 'create', reconnect true.
 */
export function connect(options: ConnectOptions): Promise<MailboxConnection> {
  return connectWith(options, async () => (await once.grpc()).grpcOpeners, defaultTransport(), inNode() ? loadHttpRequest : null, inNode() ? loadTrust : null);
}
