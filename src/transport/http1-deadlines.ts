/**
 * HTTP/1.1 deadlines, enforced by us. Node checks `headersTimeout` and
 * `requestTimeout` only on an http.Server that listens (its connection
 * checker starts on 'listening'); ours is fed emitted connections and never
 * listens, so a slowloris client, or an upgrade request that never finishes
 * its headers, was held forever.
 *
 * Each connection is in one phase with at most one timer:
 *  - headers: from the hand-off (or from when a kept-alive connection's next
 *    request began) until a header block is complete: http.headersTimeoutMs;
 *  - body: a non-streaming request (box create/delete, any error answer)
 *    until its body is in: http.requestTimeoutMs;
 *  - busy: a streaming request (REST send/receive, which live for hours) or a
 *    response in progress: no deadline;
 *  - idle: a kept-alive connection with no request in progress:
 *    http.idleTimeoutMs; the next request's header block gets the headers
 *    deadline from at most one headers deadline after its first byte.
 * A completed WebSocket upgrade leaves this module: the ws keepalive owns it.
 */
import type { IncomingMessage, Server as HttpServer, ServerResponse } from 'node:http';
import type { Duplex } from 'node:stream';
import type { Logger } from '../observe/logger.js';
import { endWithin } from './end-within.js';

export interface Http1DeadlineOptions {
  headersTimeoutMs: number;
  requestTimeoutMs: number;
  idleTimeoutMs: number;
}

/** After a deadline, the 408 (or our FIN) gets this long to reach a peer that may not read. */
export const DEADLINE_CLOSE_GRACE_MS = 500;
const REQUEST_TIMEOUT_RESPONSE = 'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\nContent-Length: 0\r\n\r\n';

type Phase = 'headers' | 'body' | 'busy' | 'idle';

interface Connection {
  readonly socket: Duplex;
  phase: Phase;
  timer: NodeJS.Timeout | null;
  /** Responses not yet closed. */
  inFlight: number;
  /** Streaming requests whose response is not yet closed. */
  streaming: number;
  /** Non-streaming requests whose body is not yet in. */
  bodies: number;
  /** Whether the latest response has started (a 408 can no longer be sent on the socket). */
  responding: ServerResponse | null;
  /** socket.bytesRead when the connection went idle: more means the next request has begun. */
  readAtIdle: number;
  /** When the connection went idle (ms). */
  idleSince: number;
}

export class Http1Deadlines {
  private readonly connections = new Map<Duplex, Connection>();
  /** Stopping: a kept-alive connection is closed as soon as it has no request (closeIdle). */
  private closing = false;

  constructor(
    server: HttpServer,
    private readonly options: Http1DeadlineOptions,
    /** True for requests whose body is a long-lived stream (no body deadline). */
    private readonly isStreaming: (req: IncomingMessage) => boolean,
    private readonly logger: Logger,
  ) {
    server.on('connection', (socket: Duplex) => this.opened(socket));
    server.prependListener('request', (req, res) => this.request(req, res));
    server.prependListener('upgrade', (req: IncomingMessage) => this.release(req.socket));
  }

  /** HTTP/1.1 connections under a deadline now (tests, metrics). */
  get tracked(): number {
    return this.connections.size;
  }

  /**
   * The process is stopping: closes every kept-alive connection with no
   * request in progress (nor a new one begun), now and as others finish
   * theirs, so they do not hold the exit for the grace period.
   */
  closeIdle(): void {
    this.closing = true;
    for (const c of [...this.connections.values()]) if (c.phase === 'idle') this.closeIfQuiet(c);
  }

  private closeIfQuiet(c: Connection): void {
    if (bytesRead(c.socket) > c.readAtIdle) return;
    this.release(c.socket);
    endWithin(c.socket, DEADLINE_CLOSE_GRACE_MS);
  }

  private opened(socket: Duplex): void {
    const c: Connection = {
      socket,
      phase: 'busy',
      timer: null,
      inFlight: 0,
      streaming: 0,
      bodies: 0,
      responding: null,
      readAtIdle: 0,
      idleSince: 0,
    };
    this.connections.set(socket, c);
    socket.once('close', () => this.release(socket));
    this.enter(c, 'headers');
  }

  private request(req: IncomingMessage, res: ServerResponse): void {
    const c = this.connections.get(req.socket);
    if (!c) return;
    const streaming = this.isStreaming(req);
    c.inFlight++;
    c.responding = res;
    if (streaming) c.streaming++;
    else {
      c.bodies++;
      // 'close' comes once the body is read (or dumped after the answer) or the request is aborted.
      req.once('close', () => {
        c.bodies--;
        this.settle(c);
      });
    }
    res.once('close', () => {
      c.inFlight--;
      if (streaming) c.streaming--;
      if (c.inFlight === 0) c.responding = null;
      this.settle(c);
    });
    this.settle(c);
  }

  private settle(c: Connection): void {
    if (!this.connections.has(c.socket)) return;
    if (c.streaming > 0) this.enter(c, 'busy');
    else if (c.bodies > 0) this.enter(c, 'body');
    else if (c.inFlight > 0) this.enter(c, 'busy');
    else this.enter(c, 'idle');
  }

  /** Switches phase; a phase kept keeps its running deadline. */
  private enter(c: Connection, phase: Phase): void {
    if (c.phase === phase) return;
    c.phase = phase;
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    const ms = this.deadlineMs(phase);
    if (ms === null) return;
    if (phase === 'idle') {
      c.readAtIdle = bytesRead(c.socket);
      c.idleSince = Date.now();
      if (this.closing) {
        this.closeIfQuiet(c);
        if (!this.connections.has(c.socket)) return;
      }
    }
    this.arm(c, ms);
  }

  private arm(c: Connection, ms: number): void {
    c.timer = setTimeout(() => this.expired(c), ms);
    c.timer.unref();
  }

  private deadlineMs(phase: Phase): number | null {
    switch (phase) {
      case 'headers':
        return this.options.headersTimeoutMs;
      case 'body':
        return this.options.requestTimeoutMs;
      case 'idle':
        // Looked at every headers deadline, to start the next request's own deadline near its first byte.
        return Math.min(this.options.idleTimeoutMs, this.options.headersTimeoutMs);
      case 'busy':
        return null;
    }
  }

  private expired(c: Connection): void {
    c.timer = null;
    const { socket } = c;
    if (c.phase === 'idle') {
      // The parser reads the socket natively, so the next request's first byte is
      // not an event: bytes read since the connection went idle mean it has begun
      // (at most one look ago), and its header block gets its own deadline.
      if (bytesRead(socket) > c.readAtIdle) {
        this.enter(c, 'headers');
        return;
      }
      const idleLeft = this.options.idleTimeoutMs - (Date.now() - c.idleSince);
      if (idleLeft > 0) {
        this.arm(c, Math.min(idleLeft, this.options.headersTimeoutMs));
        return;
      }
      this.logger.debug({ deadline: 'http.idleTimeoutMs' }, 'idle HTTP/1.1 connection closed');
      this.release(socket);
      endWithin(socket, DEADLINE_CLOSE_GRACE_MS);
      return;
    }
    const key = c.phase === 'headers' ? 'http.headersTimeoutMs' : 'http.requestTimeoutMs';
    this.logger.debug({ deadline: key }, 'HTTP/1.1 request too slow: connection closed');
    const answerable = c.responding === null || !c.responding.headersSent;
    this.release(socket);
    if (answerable) endWithin(socket, DEADLINE_CLOSE_GRACE_MS, REQUEST_TIMEOUT_RESPONSE);
    else socket.destroy();
  }

  /** The connection leaves our watch: closed, timed out, or upgraded (the WebSocket keepalive owns it). */
  private release(socket: Duplex): void {
    const c = this.connections.get(socket);
    if (!c) return;
    if (c.timer) clearTimeout(c.timer);
    c.timer = null;
    this.connections.delete(socket);
  }
}

function bytesRead(socket: Duplex): number {
  return (socket as Duplex & { bytesRead?: number }).bytesRead ?? 0;
}
