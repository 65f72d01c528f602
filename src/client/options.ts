/**
 * The options of `connect`, documented where they are defined, and their
 * validation: done once, up front, throwing a TypeError that names the bad
 * option (never its value: SIDs and phrases are secrets).
 */
import { checkSidBytes, flipSid } from './bytes.js';
import { decodePhrase, entropyToSids, PHRASE_VERSION } from './phrase.js';

/** Which side of an LNC connection this party is (see ConnectOptions.role). */
export type Role = 'node' | 'app';
export type TransportName = 'grpc' | 'websocket';
export type ProtocolChoice = 'v2' | 'v1' | 'auto';
export type AttachMode = 'create' | 'existing';

export interface ConnectOptions {
  /**
   * The service: `host:port` (`[v6addr]:port`), or a URL `wss://host[:port]`,
   * `https://host[:port]` (TLS) or `ws://`, `http://` (plain text). A URL
   * without a port uses 443 (TLS) or 80. Required. Any instance of a cluster
   * will do: a v2 party looks up the relay that owns its session there and
   * dials that relay (a single server answers with itself). Several instances
   * (an array, or one string separated by commas) are asked in order, so one
   * that is down does not strand the party; TLS is taken from the first.
   * Required with `sid` or a legacy 10-word `phrase`. A v2 connection phrase
   * URL names its own mailboxes, which are used instead: an app may pass its
   * default `server` with whatever the user scanned or typed.
   */
  server?: string | readonly string[];
  /** The 64-byte SID this party reads; it writes `sid ^ 1`. Give `sid` or `phrase`. */
  sid?: Uint8Array;
  /**
   * What the user scanned or typed: a v2 connection phrase URL
   * (`hashmail+v2:WORDS?mailbox=HOST:PORT...&check=...`, see
   * docs/connection-phrase.md), which names the mailboxes (tried in order,
   * any instance of a cluster) and protocol v2; or a legacy 10-word LNC
   * pairing phrase (BIP-39 English words) with `server`, negotiated as
   * `protocol` says. The SIDs are derived as LNC does for the first
   * connection: S2C = SHA-512(entropy), C2S = S2C ^ 1. The app reads S2C and
   * writes C2S; the node reads C2S. A bad phrase rejects with a PhraseError.
   */
  phrase?: string;
  /** BIP-39 English word list for `phrase` (2048 words); default: @scure/bip39's. */
  wordlist?: readonly string[];
  /**
   * 'app' (default) or 'node'. Decides which SID of a phrase this party reads,
   * and, in v1, who creates the boxes: the node creates both (NewCipherBox,
   * "already exists" counts as success) before receiving, as litd does; the
   * app waits (retrying "stream not found") until they exist. In v2 the node
   * also re-creates its session when it reconnects after a relay restart.
   */
  role?: Role;
  /**
   * 'grpc' (Node only, default in Node) or 'websocket' (default in browsers;
   * the only one of the browser entry).
   */
  transport?: TransportName;
  /**
   * 'auto' (default): v2, falling back to v1 on a relay without v2 (and
   * remembering that per relay); 'v2': v2 only (a v1-only relay fails with
   * UnsupportedVersion); 'v1': the legacy two half-streams only. A v2
   * connection phrase means 'v2' unless 'auto' is given; 'v1' contradicts it.
   */
  protocol?: ProtocolChoice;
  /** Plain text (h2c / ws://) for a bare `host:port`. Default false: TLS. */
  insecure?: boolean;
  /** TLS without verifying the relay's certificate (self-signed test relays). Node only: gRPC, and WebSocket through the `ws` package. */
  tlsSkipVerify?: boolean;
  /** Reconnect automatically (backoff 100 ms doubling to 10 s, full jitter) after a lost connection. Default true. */
  reconnect?: boolean;
  /**
   * 'create' (default): make the session if it does not exist and wait for
   * the peer. 'existing': fail with SessionNotFound unless it exists.
   */
  attach?: AttachMode;
  /**
   * Aborting it rejects a pending connect with the signal's reason (an
   * `AbortError` DOMException unless `abort(reason)` gave another), or closes
   * the connection (a later `send` rejects with that reason).
   */
  signal?: AbortSignal;
  /**
   * Deadline of one attempt to attach: lookup, dial, TLS, handshake and the
   * relay's Welcome (ms). A relay that accepts TCP and never answers fails
   * with ConnectTimeout (retried on reconnects). A reconnect whose lookup
   * asks to be held (its relay could not be reached) counts it from the end
   * of the hold (LOOKUP_WAIT_MS). Default 10000; 0 disables.
   */
  connectTimeoutMs?: number;
  /**
   * PEM certificate(s) to trust instead of the system roots (a private CA).
   * Node only (gRPC, WebSocket through `ws`, the HTTP lookup); browsers use
   * their own trust store.
   */
  ca?: string | Uint8Array | readonly (string | Uint8Array)[];
  /**
   * Trust exactly the relay certificate with this SHA-256 fingerprint (hex,
   * colons optional), as `hashmail serve` logs it at start (`sha256` of
   * "generated self-signed TLS certificate" / "TLS certificate loaded"):
   * a self-signed relay without `tlsSkipVerify`. The name is not checked; any
   * other certificate fails with CertificateMismatch. Node only.
   */
  certificateSha256?: string;
  /**
   * Liveness of an attached v2 link: a ping this often (ms). gRPC: HTTP/2
   * keepalive pings; WebSocket in Node: WebSocket pings (a browser cannot
   * send them). Default 10000; 0 disables.
   */
  pingIntervalMs?: number;
  /**
   * A link whose relay answers neither a ping nor anything else this long
   * after the ping (ms) is dropped and replaced as a lost connection
   * (LivenessTimeout over WebSocket). Default 5000.
   */
  pingTimeoutMs?: number;
}

/** Default of ConnectOptions.connectTimeoutMs (ms). */
export const DEFAULT_CONNECT_TIMEOUT_MS = 10_000;
/** Default of ConnectOptions.pingIntervalMs (ms). */
export const DEFAULT_PING_INTERVAL_MS = 10_000;
/** Default of ConnectOptions.pingTimeoutMs (ms). */
export const DEFAULT_PING_TIMEOUT_MS = 5_000;

/** Pings on an attached link (pingIntervalMs 0: none). */
export interface Liveness {
  pingIntervalMs: number;
  pingTimeoutMs: number;
}

export interface ServerAddress {
  host: string;
  port: number;
  /** TLS (true) or plain text. */
  secure: boolean;
  /** `host:port` as gRPC dials it. */
  authority: string;
}

export interface ResolvedOptions {
  /** The first of `servers`. */
  server: ServerAddress;
  /** The instances to ask for the session's relay, in order. */
  servers: ServerAddress[];
  /** The SID this party reads. */
  sid: Uint8Array;
  role: Role;
  transport: TransportName;
  protocol: ProtocolChoice;
  attach: AttachMode;
  reconnect: boolean;
  tlsSkipVerify: boolean;
  signal: AbortSignal | undefined;
  connectTimeoutMs: number;
  liveness: Liveness;
  /** `ca` / `certificateSha256`, validated (Node only). */
  trust: { ca?: string[]; pinSha256?: string };
}

const DEFAULT_TLS_PORT = 443;
const DEFAULT_PLAIN_PORT = 80;
const HOST_PORT = /^(\[[0-9a-fA-F:.]+\]|[^:/\s[\]]+):(\d{1,5})$/;

function milliseconds(value: number | undefined, name: string, fallback: number, min = 0): number {
  if (value === undefined) return fallback;
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min) throw new TypeError(`${name} must be an integer >= ${min} (milliseconds)`);
  return value;
}

function resolveTrust(options: ConnectOptions, secure: boolean): ResolvedOptions['trust'] {
  const { ca, certificateSha256 } = options;
  if (ca === undefined && certificateSha256 === undefined) return {};
  if (!secure) throw new TypeError('ca and certificateSha256 need a TLS server');
  if (options.tlsSkipVerify) throw new TypeError('ca and certificateSha256 contradict tlsSkipVerify');
  const trust: ResolvedOptions['trust'] = {};
  if (ca !== undefined) {
    const list = (typeof ca === 'string' || ca instanceof Uint8Array ? [ca] : Array.isArray(ca) ? [...(ca as readonly (string | Uint8Array)[])] : null) ?? [];
    if (list.length === 0 || list.some((c) => typeof c !== 'string' && !(c instanceof Uint8Array))) throw new TypeError('ca must be PEM text or bytes, or a list of them');
    trust.ca = list.map((c) => (typeof c === 'string' ? c : new TextDecoder().decode(c)));
  }
  if (certificateSha256 !== undefined) {
    const hex = typeof certificateSha256 === 'string' ? certificateSha256.replace(/[:\s]/g, '').toUpperCase() : '';
    if (!/^[0-9A-F]{64}$/.test(hex)) throw new TypeError('certificateSha256 must be a SHA-256 fingerprint: 64 hex digits, colons optional');
    trust.pinSha256 = hex.match(/../g)!.join(':');
  }
  return trust;
}

function oneOf<T extends string>(value: T | undefined, allowed: readonly T[], name: string, fallback: T): T {
  if (value === undefined) return fallback;
  if (!allowed.includes(value)) throw new TypeError(`${name} must be one of ${allowed.map((a) => `'${a}'`).join(', ')}`);
  return value;
}

export function parseServer(server: string, insecure: boolean | undefined): ServerAddress {
  if (typeof server !== 'string' || server.length === 0) throw new TypeError('server is required (host:port or a wss:// / https:// URL)');
  const scheme = /^([a-z]+):\/\//i.exec(server)?.[1]?.toLowerCase();
  if (scheme === undefined) {
    const match = HOST_PORT.exec(server);
    const port = match ? Number(match[2]) : 0;
    if (!match || port < 1 || port > 65535) throw new TypeError(`server must be host:port or a URL, got '${server}'`);
    return { host: match[1], port, secure: !insecure, authority: server };
  }
  const secure = scheme === 'wss' || scheme === 'https';
  if (!secure && scheme !== 'ws' && scheme !== 'http') throw new TypeError(`server URL scheme must be wss, https, ws or http, got '${scheme}'`);
  if (insecure && secure) throw new TypeError(`insecure contradicts the ${scheme}:// server URL`);
  const url = new URL(server);
  const port = url.port ? Number(url.port) : secure ? DEFAULT_TLS_PORT : DEFAULT_PLAIN_PORT;
  return { host: url.hostname, port, secure, authority: `${url.hostname}:${port}` };
}

/** `server` as a list of addresses: an array, or one string separated by commas. */
export function parseServers(server: string | readonly string[], insecure: boolean | undefined): ServerAddress[] {
  const list = typeof server === 'string' ? server.split(',').map((s) => s.trim()) : Array.isArray(server) ? [...(server as readonly string[])] : [];
  if (list.length === 0) throw new TypeError('server is required (host:port or a wss:// / https:// URL)');
  const servers = list.map((s) => parseServer(s, insecure));
  if (servers.some((s) => s.secure !== servers[0].secure)) throw new TypeError('server: every instance must use the same TLS setting');
  return servers;
}

/** Validates `options` and derives the SID this party reads. */
export async function resolveOptions(options: ConnectOptions, defaultTransport: TransportName): Promise<ResolvedOptions> {
  if (typeof options !== 'object' || options === null) throw new TypeError('connect needs an options object');
  const role = oneOf(options.role, ['node', 'app'], 'role', 'app');
  const transport = oneOf(options.transport, ['grpc', 'websocket'], 'transport', defaultTransport);
  const attach = oneOf(options.attach, ['create', 'existing'], 'attach', 'create');
  if (options.sid !== undefined && options.phrase !== undefined) throw new TypeError('give sid or phrase, not both');
  let sid: Uint8Array;
  let protocol = oneOf(options.protocol, ['v2', 'v1', 'auto'], 'protocol', 'auto');
  let server = options.server;
  if (options.sid !== undefined) {
    sid = checkSidBytes(options.sid, 'sid');
  } else if (options.phrase !== undefined) {
    const phrase = await decodePhrase(options.phrase, options.wordlist);
    const { s2c } = await entropyToSids(phrase.entropy);
    // The app reads server-to-client; the node reads client-to-server.
    sid = role === 'app' ? s2c : flipSid(s2c);
    if (phrase.version === PHRASE_VERSION) {
      if (options.protocol === 'v1') throw new TypeError("protocol 'v1' contradicts the v2 connection phrase");
      protocol = options.protocol ?? 'v2';
      // The phrase's mailboxes are the node's choice; `server` is the app's default for legacy phrases.
      server = phrase.mailboxes;
    }
  } else {
    throw new TypeError('sid or phrase is required');
  }
  if (server === undefined) throw new TypeError('server is required (host:port or a wss:// / https:// URL) unless phrase is a v2 connection phrase');
  const servers = parseServers(server, options.insecure);
  return {
    server: servers[0],
    servers,
    sid,
    role,
    transport,
    protocol,
    attach,
    reconnect: options.reconnect ?? true,
    tlsSkipVerify: options.tlsSkipVerify === true,
    signal: options.signal,
    trust: resolveTrust(options, servers[0].secure),
    connectTimeoutMs: milliseconds(options.connectTimeoutMs, 'connectTimeoutMs', DEFAULT_CONNECT_TIMEOUT_MS),
    liveness: {
      pingIntervalMs: milliseconds(options.pingIntervalMs, 'pingIntervalMs', DEFAULT_PING_INTERVAL_MS),
      pingTimeoutMs: milliseconds(options.pingTimeoutMs, 'pingTimeoutMs', DEFAULT_PING_TIMEOUT_MS, 1),
    },
  };
}
