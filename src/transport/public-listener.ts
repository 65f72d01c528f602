/**
 * The one public port. Accepts sockets itself, applies the connection limits,
 * reads an optional PROXY header, terminates TLS (ALPN h2 / http/1.1), and
 * hands each connection to grpc-js (HTTP/2) or the http.Server (HTTP/1.1,
 * REST and WebSocket). In plain text the 24-byte HTTP/2 client preface tells
 * h2c from HTTP/1.1. No second hop, no internal port.
 */
import http2 from 'node:http2';
import net from 'node:net';
import tls from 'node:tls';
import type { Server as HttpServer } from 'node:http';
import type { Duplex } from 'node:stream';
import type { ConnectionInjector } from '@grpc/grpc-js';
import type { Logger } from '../observe/logger.js';
import type { HopToken } from './hop/hop-token.js';
import type { RelayStats } from '../observe/stats.js';
import { formatHostPort, parseHostPort } from '../config/host-port.js';
import { GrpcStatus } from '../wire/grpc-status.js';
import { limitReached } from '../session/errors.js';
import type { ClientAddressPolicy, ProxyHeaderRule } from './client-address.js';
import { endWithin } from './end-within.js';
import { encodeGrpcMessage } from './grpc-message.js';
import { openFileLimit } from './open-file-limit.js';
import { parseProxyHeader, type HopProofTlv } from './proxy-protocol.js';
import { PreambleProofs, REFUSED_PROOF_MEANING } from './hop/preamble-proof.js';

/** A connection that sends nothing decisive within this is closed (slowloris guard). */
export const PREFACE_TIMEOUT_MS = 10_000;
/** Bytes that decide the protocol: "PRI" opens only the HTTP/2 preface. */
const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const SNIFF_BYTES = 3;
const EMPTY: Buffer = Buffer.alloc(0);
const MAX_PREFACE_BYTES = 4096;
/**
 * A connection refused over a limit is answered (HTTP 429, or gRPC
 * RESOURCE_EXHAUSTED for the calls it sent at once), then destroyed at this
 * grace whatever the peer does: "gone within a second".
 */
export const REFUSAL_GRACE_MS = 500;
/** What Node's tls.Server reports for a handshake past its handshakeTimeout. */
const TLS_HANDSHAKE_TIMEOUT_CODE = 'ERR_TLS_HANDSHAKE_TIMEOUT';
/** Connections over limits.maxConnections still answered with a refusal before the kernel-level cut-off. */
const REFUSAL_HEADROOM = 1000;
/** Descriptors kept free of public sockets: admin listener, etcd, logs, files. */
const RESERVED_FDS = 256;

export interface PublicListenerOptions {
  listen: string;
  /** PEM material for TLS, or null for plain text. */
  tls: { cert: Buffer; key: Buffer } | null;
  /** Whose PROXY header is believed, and the key per-address limits count under. */
  clientAddress: ClientAddressPolicy;
  /**
   * A relay's hop token: a PROXY v2 header carrying it (a gateway's
   * connection preamble) is believed from any peer, and the connection counts
   * as the client it names, or as nobody (LOCAL: a hop lane). Absent on serve.
   */
  hopToken?: HopToken;
  maxConnections: number;
  maxConnectionsPerAddress: number;
  /** A TLS handshake not finished within this is dropped (server.tlsHandshakeTimeoutMs). */
  tlsHandshakeTimeoutMs: number;
  /** Bytes that decide the protocol must come within this (http.headersTimeoutMs). */
  prefaceTimeoutMs?: number;
  /** Counts and logs (rate-limited) one connection from `client` refused by the limit named by its config key. */
  limitHit(configKey: string, client: string): void;
  grpc: ConnectionInjector;
  http: HttpServer;
  stats: RelayStats;
  logger: Logger;
}

export class PublicListener {
  private readonly server: net.Server;
  /** Every open connection, with its per-address limit key once admitted (null before). */
  private readonly sockets = new Map<net.Socket, string | null>();
  /**
   * Shared 'close' / 'error' handlers (`this` is the socket): a closure per
   * connection would live as long as the connection, thousands of them.
   */
  private readonly onSocketClose: (this: net.Socket) => void;
  private readonly onSocketError: (this: net.Socket, err: Error) => void;
  private readonly perAddress = new Map<string, number>();
  /** Raw sockets a gateway's preamble already counted, with the client it named (null: nobody, a lane): rekey leaves them be. */
  private readonly preambled = new WeakMap<net.Socket, string | null>();
  /** Terminates TLS for sockets we accepted ourselves (emit 'connection'); null in plain text. */
  private readonly tlsServer: tls.Server | null;
  /** Address and limit verdict of each raw socket, read back once its TLS handshake completes. */
  private readonly admission = new WeakMap<net.Socket, { address: string; overLimit: string | null }>();
  /** Answers every gRPC call of a connection over a limit with RESOURCE_EXHAUSTED. */
  private readonly refusals = http2.createServer();
  /** The refusal text of the connection being handed to `refusals` (read synchronously by its 'session' event). */
  private refusalText = '';
  private readonly prefaceTimeoutMs: number;
  /** Checks gateways' preamble proofs, each taken once; null without a hop token (serve). */
  private readonly proofs: PreambleProofs | null;

  constructor(private readonly options: PublicListenerOptions) {
    this.prefaceTimeoutMs = options.prefaceTimeoutMs ?? PREFACE_TIMEOUT_MS;
    this.proofs = options.hopToken ? new PreambleProofs(options.hopToken.value) : null;
    // handshakeTimeout applies to sockets emitted to the server too (it arms the TLSSocket's own timer).
    this.tlsServer = options.tls
      ? tls.createServer({
          cert: options.tls.cert,
          key: options.tls.key,
          ALPNProtocols: ['h2', 'http/1.1'],
          handshakeTimeout: options.tlsHandshakeTimeoutMs,
        })
      : null;
    this.tlsServer?.on('secureConnection', (secure: tls.TLSSocket) => this.secured(secure));
    // tls.Server only reports a failed handshake (a timeout included) and leaves the socket open: close it.
    this.tlsServer?.on('tlsClientError', (err: Error & { code?: string }, secure) => {
      options.stats.tlsHandshakeFailures[err.code === TLS_HANDSHAKE_TIMEOUT_CODE ? 'timeout' : 'error']++;
      options.logger.debug({ err: err.message, client: secure.remoteAddress }, 'TLS handshake failed');
      secure.destroy();
    });
    // eslint-disable-next-line @typescript-eslint/no-this-alias -- the handlers need both the socket (their `this`) and the listener
    const listener = this;
    this.onSocketClose = function () {
      listener.closed(this);
    };
    this.onSocketError = function (err) {
      listener.options.logger.debug({ err: err.message }, 'client socket error');
    };
    this.server = net.createServer({ pauseOnConnect: false, noDelay: true }, (socket) => this.accept(socket));
    // Past this, Node closes a new socket at once, unanswered: refused
    // connections are answered only while descriptors are plentiful.
    const fdLimit = openFileLimit();
    const hardCap = options.maxConnections + REFUSAL_HEADROOM;
    this.server.maxConnections = fdLimit === null ? hardCap : Math.max(1, Math.min(hardCap, fdLimit - RESERVED_FDS));
    if (this.server.maxConnections <= options.maxConnections) {
      options.logger.warn(
        { maxConnections: options.maxConnections, openFileLimit: fdLimit, cutOff: this.server.maxConnections },
        'limits.maxConnections is above what the open-file limit allows: connections past the cut-off are closed unanswered (raise ulimit -n or lower the key)',
      );
    }
    this.refusals.on('session', (session) => refuseSession(session, this.refusalText));
  }

  async start(): Promise<string> {
    const { host, port } = parseHostPort(this.options.listen, 'listen address');
    await new Promise<void>((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen({ host, port, backlog: 4096 }, () => {
        this.server.off('error', reject);
        resolve();
      });
    });
    const addr = this.server.address() as net.AddressInfo;
    return formatHostPort(addr.address, addr.port);
  }

  /**
   * Serves `material` to every handshake from now on (SIGHUP after a
   * certificate renewal). Connections already up keep their session: nothing
   * is dropped. No-op in plain text.
   */
  reloadTls(material: { cert: Buffer; key: Buffer }): boolean {
    if (!this.tlsServer) return false;
    this.tlsServer.setSecureContext({ cert: material.cert, key: material.key });
    return true;
  }

  /** Stops accepting; open connections stay until destroyAll(). */
  stopAccepting(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  destroyAll(): void {
    for (const socket of this.sockets.keys()) socket.destroy();
    this.refusals.close();
  }

  get openConnections(): number {
    return this.sockets.size;
  }

  private accept(socket: net.Socket): void {
    socket.on('error', this.onSocketError);
    socket.once('close', this.onSocketClose);
    this.sockets.set(socket, null);
    this.options.stats.connectionsOpen++;
    let buffered: Buffer = EMPTY;
    const peer = socket.remoteAddress ?? 'unknown';
    const proxyRule = this.options.clientAddress.proxyHeaderFrom(peer);
    // A PROXY header may come: from a trusted balancer, or a gateway's preamble (checked by its hop token).
    let headerPending = proxyRule !== 'off' || this.options.hopToken !== undefined;
    let address: string | null = proxyRule === 'off' ? peer : null;
    // Without a trusted balancer's header to wait for, the client is known now: count it at once, so
    // connections that never send a byte count against its limit too, and one over a limit waits only the
    // refusal grace for its first bytes. A gateway's preamble, first thing on its connections, re-counts it.
    const overLimitNow = address === null ? null : this.countConnection(socket, address);
    const timer = setTimeout(() => socket.destroy(), overLimitNow ? REFUSAL_GRACE_MS : this.prefaceTimeoutMs);
    timer.unref();

    const onData = (chunk: Buffer): void => {
      buffered = buffered.length === 0 ? chunk : Buffer.concat([buffered, chunk]);
      if (headerPending) {
        const proxy = parseProxyHeader(buffered);
        if (proxy.kind === 'more' && buffered.length < MAX_PREFACE_BYTES) return;
        headerPending = false;
        const reason = proxy.kind === 'invalid' ? proxy.reason : proxy.kind === 'more' ? 'PROXY header too long' : null;
        const verdict = proxy.kind === 'header' ? this.judgeHeader(proxy.hopToken, proxy.hopProof, proxyRule) : 'none';
        // Debug, not warn: anyone can send these, one line each would let them fill the log.
        if (reason !== null || verdict === 'refused') {
          this.options.logger.debug({ reason: reason ?? 'PROXY header from a peer not trusted to send one' }, 'bad PROXY header, connection closed');
          socket.destroy();
          return;
        }
        if (proxy.kind === 'header') buffered = buffered.subarray(proxy.length);
        if (verdict === 'gateway' && proxy.kind === 'header') {
          // Counted under the gateway at accept (if at all): from here its client's, or nobody's.
          this.uncount(socket);
          this.preambled.set(socket, proxy.address);
          address = proxy.address ?? peer;
        } else if (verdict === 'balancer' && proxy.kind === 'header') address = proxy.address ?? peer;
        // No header, or a preamble with a wrong token (believed from nobody): the TCP peer's connection, and
        // its request goes on to be answered (a lane's upgrade: 401, not an authenticated gateway).
        else address ??= peer;
        if (buffered.length === 0) return;
      }
      // With TLS the first bytes are a ClientHello; the protocol is decided after the handshake.
      if (!this.tlsServer && buffered.length < SNIFF_BYTES && buffered.equals(H2_PREFACE.subarray(0, buffered.length))) return;
      socket.off('data', onData);
      socket.pause();
      clearTimeout(timer);
      if (buffered.length > 0) socket.unshift(buffered);
      this.admitted(socket, address ?? peer);
    };
    socket.on('data', onData);
  }

  /**
   * Whose PROXY header this is: a gateway's (a proof of our hop token taken
   * now, or the token itself from a gateway of an earlier release), a
   * trusted balancer's (whatever TLVs of its own it adds), a forged preamble
   * (a wrong or spent proof or token from anyone else: ignored), or one to
   * refuse (neither, from a peer not trusted to send a header).
   */
  private judgeHeader(token: string | null, proof: HopProofTlv | null, rule: ProxyHeaderRule): 'gateway' | 'balancer' | 'forged' | 'refused' {
    if (proof !== null && this.proofs !== null) {
      const verdict = this.proofs.check(proof);
      if (verdict === 'taken') return 'gateway';
      // Counted and logged summarized: anyone can send these. A right proof out of the window is a clock that is off.
      this.options.stats.preambleProofsRefused[verdict]++;
      this.options.stats.badRequestLog?.badRequest(`HOP_PREAMBLE_${verdict.toUpperCase()}`, { transport: 'hop preamble', hint: REFUSED_PROOF_MEANING[verdict] });
    }
    if (token !== null && this.options.hopToken?.matches(token)) return 'gateway';
    if (rule === 'believe') return 'balancer';
    return token !== null || proof !== null ? 'forged' : 'refused';
  }

  private closed(socket: net.Socket): void {
    if (!this.sockets.has(socket)) return;
    this.uncount(socket);
    this.sockets.delete(socket);
    this.options.stats.connectionsOpen--;
  }

  /**
   * Counts `socket` under its client's limit key; the config key of the limit
   * it is over, or null. Once per socket: at accept, or after its PROXY header.
   */
  private countConnection(socket: net.Socket, address: string): string | null {
    const count = this.countUnder(socket, address);
    if (this.sockets.size > this.options.maxConnections) return 'limits.maxConnections';
    if (count > this.options.maxConnectionsPerAddress) return 'limits.maxConnectionsPerAddress';
    return null;
  }

  /**
   * The client a gateway's preamble named for this connection (undefined:
   * it opened without one; null: a lane). Preferred to the upgrade's
   * X-Forwarded-For, whose last hop is only the gateway's TCP peer.
   */
  preambleClient(socket: Duplex): string | null | undefined {
    const raw = countedSocket(socket);
    return raw ? this.preambled.get(raw) : undefined;
  }

  /**
   * Counts an admitted connection under another client: `address` (its limit
   * key is taken), or nobody (null). For a connection from an authenticated
   * gateway (the hop token): a v2 WebSocket it passes through counts as its
   * client's, a lane as nobody's, so its tunnels never fill the gateway's own
   * per-address budget. False when the new client is over
   * limits.maxConnectionsPerAddress (the caller refuses the connection).
   * A connection that opened with the gateway's preamble was counted so from
   * its first byte and stays as it is.
   */
  rekey(socket: Duplex, address: string | null): boolean {
    const raw = countedSocket(socket);
    if (!raw || !this.sockets.has(raw) || this.preambled.has(raw)) return true;
    this.uncount(raw);
    if (address === null) return true;
    if (this.countUnder(raw, address) <= this.options.maxConnectionsPerAddress) return true;
    this.options.limitHit('limits.maxConnectionsPerAddress', address);
    return false;
  }

  /** Counts `socket` under the limit key of `address`; that key's count now. */
  private countUnder(socket: net.Socket, address: string): number {
    const key = this.options.clientAddress.limitKey(address);
    const count = (this.perAddress.get(key) ?? 0) + 1;
    this.perAddress.set(key, count);
    this.options.stats.connectionAddresses = this.perAddress.size;
    this.sockets.set(socket, key);
    return count;
  }

  /** Takes `socket` out of its client's count (it stays open and tracked). */
  private uncount(socket: net.Socket): void {
    const address = this.sockets.get(socket);
    this.sockets.set(socket, null);
    if (address == null) return;
    const left = (this.perAddress.get(address) ?? 1) - 1;
    if (left > 0) this.perAddress.set(address, left);
    else this.perAddress.delete(address);
    this.options.stats.connectionAddresses = this.perAddress.size;
  }

  /**
   * Connection limits, then TLS, then the protocol handoff. A gateway's hop
   * lane (its preamble named nobody) is under no client's per-address limit.
   */
  private admitted(socket: net.Socket, address: string): void {
    overrideRemoteAddress(socket, address);
    const key = this.sockets.get(socket);
    let overLimit: string | null;
    if (this.preambled.get(socket) === null) overLimit = this.sockets.size > this.options.maxConnections ? 'limits.maxConnections' : null;
    else if (key == null) overLimit = this.countConnection(socket, address);
    else if (this.sockets.size > this.options.maxConnections) overLimit = 'limits.maxConnections';
    else overLimit = (this.perAddress.get(key) ?? 0) > this.options.maxConnectionsPerAddress ? 'limits.maxConnectionsPerAddress' : null;
    if (overLimit) this.options.limitHit(overLimit, address);

    if (!this.tlsServer) {
      this.handOff(socket, sniffH2(socket), overLimit);
      return;
    }
    this.admission.set(socket, { address, overLimit });
    this.tlsServer.emit('connection', socket);
  }

  /** After the TLS handshake: ALPN decides; without ALPN (old clients) the first decrypted bytes do. */
  private secured(secure: tls.TLSSocket): void {
    // Its admission was decided on the raw socket, before the handshake.
    const raw = rawSocketOf(secure);
    const admission = raw ? this.admission.get(raw) : undefined;
    if (!admission) {
      secure.destroy();
      return;
    }
    overrideRemoteAddress(secure, admission.address);
    const alpn = secure.alpnProtocol;
    if (alpn === 'h2' || alpn === 'http/1.1') {
      this.handOff(secure, alpn === 'h2', admission.overLimit);
      return;
    }
    const silent = setTimeout(() => secure.destroy(), this.prefaceTimeoutMs);
    silent.unref();
    secure.once('readable', () => {
      clearTimeout(silent);
      this.handOff(secure, sniffH2(secure), admission.overLimit);
    });
  }

  private handOff(socket: Duplex, isH2: boolean, overLimit: string | null): void {
    if (overLimit) {
      const limit = overLimit === 'limits.maxConnections' ? this.options.maxConnections : this.options.maxConnectionsPerAddress;
      const err = limitReached(overLimit, limit);
      if (isH2) {
        this.refusalText = err.message;
        this.refusals.emit('connection', socket);
      } else {
        const body = JSON.stringify(err.toStatusJson());
        // Read and drop what the client sends, so our close is not a reset that loses the answer.
        socket.resume();
        endWithin(
          socket,
          REFUSAL_GRACE_MS,
          `HTTP/1.1 429 Too Many Requests\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`,
        );
      }
      return;
    }
    // Both take over the socket paused, with the sniffed bytes put back. HTTP/2
    // reads the native handle directly, so resuming it here would steal its bytes.
    if (isH2) this.options.grpc.injectConnection(socket);
    else {
      this.options.http.emit('connection', socket);
      socket.resume();
    }
  }
}

/**
 * An HTTP/2 connection over a limit: the gRPC calls it sends at once get
 * RESOURCE_EXHAUSTED with the limit's text, then GOAWAY; whatever the peer
 * does (no call at all, never reading), the session and its socket are
 * destroyed at REFUSAL_GRACE_MS.
 */
function refuseSession(session: http2.ServerHttp2Session, text: string): void {
  const grace = setTimeout(() => session.destroy(), REFUSAL_GRACE_MS);
  grace.unref();
  session.once('close', () => clearTimeout(grace));
  const headers = {
    ':status': 200,
    'content-type': 'application/grpc',
    'grpc-status': String(GrpcStatus.RESOURCE_EXHAUSTED),
    'grpc-message': encodeGrpcMessage(text),
  };
  session.on('stream', (stream) => {
    // A stream the peer already reset must not take the process down with an unhandled 'error'.
    stream.on('error', ignore);
    if (!stream.destroyed) stream.respond(headers, { endStream: true });
    if (!session.closed) session.close();
  });
}

function ignore(): void {}

/** True if the bytes waiting on `socket` open the HTTP/2 preface (peeked, then put back). */
function sniffH2(socket: Duplex): boolean {
  const head = socket.read() as Buffer | null;
  if (!head) return false;
  socket.unshift(head);
  const n = Math.min(head.length, H2_PREFACE.length);
  return n >= SNIFF_BYTES && head.subarray(0, n).equals(H2_PREFACE.subarray(0, n));
}

/** Per-address limits and grpc-js `getPeer()` see the client behind a trusted balancer. */
function overrideRemoteAddress(socket: Duplex, address: string): void {
  if ((socket as net.Socket).remoteAddress !== address) {
    Object.defineProperty(socket, 'remoteAddress', { value: address, configurable: true });
  }
}

/** The socket the listener counts for a connection it handed on: a TLS socket's raw socket, else the socket itself. */
function countedSocket(socket: Duplex): net.Socket | undefined {
  return socket instanceof tls.TLSSocket ? rawSocketOf(socket) : (socket as net.Socket);
}

/** The raw socket under a TLS socket the listener accepted (tls.Server keeps it as `_parent`). */
function rawSocketOf(secure: tls.TLSSocket): net.Socket | undefined {
  return (secure as tls.TLSSocket & { _parent?: net.Socket })._parent;
}
