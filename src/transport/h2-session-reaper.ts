/**
 * HTTP/2 sessions that nghttp2 has ended are closed within about a second.
 *
 * On a connection error (DATA on stream 0, bad HPACK, malformed SETTINGS, a
 * frame over the size limit, ...) nghttp2 sends GOAWAY and stops both
 * reading and sending; on a rapid-reset flood it sends GOAWAY and, with no
 * stream left, stops reading. Node emits nothing for a GOAWAY nghttp2 sends
 * itself: no 'goaway', 'error', 'frameError' or 'close' on the session
 * (checked on Node 20), and as it no longer reads the socket not even the
 * peer's FIN is seen. The socket stayed until grpc-js's keepalive ping
 * failed (120 s + 20 s).
 *
 * Neither the session nor the socket says so, so we ask: a session that has
 * read bytes and then gone quiet gets a PING. A live session sends it at once
 * and reads the ACK; an ended one never sends it, or never reads the ACK.
 * A session that read nothing since it was last seen alive cannot have been
 * ended by its peer and is not pinged. Without an ACK within the grace the
 * session is destroyed when it has no stream open (nothing in progress is
 * lost; a peer slower than the grace reconnects for its next call), or when
 * nghttp2 would not even send the PING while no stream holds unflushed data;
 * with streams open, a missing ACK gets the keepalive timeout, as a keepalive
 * ping would.
 */
import { EventEmitter } from 'node:events';
import type { ServerHttp2Session, ServerHttp2Stream } from 'node:http2';
import type { Logger } from '../observe/logger.js';

/** A session is first looked at this long after its last visible activity. */
export const H2_QUIET_MS = 250;
/** A PING must be ACKed within this; above any sane round trip. */
export const H2_PROBE_GRACE_MS = 1_000;
/** Looks at idle sessions back off to this (a lookup costs a timer, no traffic). */
const H2_IDLE_CHECK_MAX_MS = 10_000;
/** A PING ACK: 9-byte frame header + 8-byte payload. Reading it is no news. */
const PING_ACK_BYTES = 17;

export interface ReaperOptions {
  /** How long a PING may go unanswered while streams are open (grpc.keepaliveTimeoutMs). */
  stalledWriteLimitMs: number;
  logger: Logger;
}

interface Probe {
  readonly startedAt: number;
  acked: boolean;
  timer: NodeJS.Timeout | null;
}

interface Watched {
  readonly session: ServerHttp2Session;
  /** Current look interval (doubles while nothing happens). */
  intervalMs: number;
  /** socket.bytesRead at the last point the session was known alive (-1: never). */
  expectedRead: number;
  probe: Probe | null;
  /** Open streams: whether a call is in progress, and whether data waits for the peer to read it. */
  readonly streams: Set<ServerHttp2Stream>;
}

/**
 * The http2 servers of grpc-js's connection injectors. grpc-js exposes no
 * session of an injected connection; the http2 server it creates per
 * injector is kept in its private `http2Servers` map. We only read it, to
 * listen to that server's public 'session' event; if a grpc-js upgrade
 * changes the shape, this returns nothing and the caller says so in the log.
 */
export function injectorHttp2Servers(grpcServer: object): EventEmitter[] {
  const servers = (grpcServer as { http2Servers?: unknown }).http2Servers;
  if (!(servers instanceof Map)) return [];
  return [...servers.keys()].filter((s): s is EventEmitter => s instanceof EventEmitter);
}

export class H2SessionReaper {
  constructor(private readonly options: ReaperOptions) {}

  /** Watches every session `server` (an http2 server) creates from now on. */
  watchServer(server: EventEmitter): void {
    server.on('session', (session: ServerHttp2Session) => this.watch(session));
  }

  watch(session: ServerHttp2Session): void {
    const w: Watched = { session, intervalMs: H2_QUIET_MS, expectedRead: -1, probe: null, streams: new Set() };
    session.on('stream', (stream: ServerHttp2Stream) => {
      w.streams.add(stream);
      stream.once('close', () => w.streams.delete(stream));
    });
    // Node's session timer restarts on every frame it surfaces and on write progress.
    session.on('timeout', () => this.quiet(w));
    session.once('close', () => {
      if (w.probe?.timer) clearTimeout(w.probe.timer);
      w.probe = null;
    });
    session.setTimeout(w.intervalMs);
  }

  private quiet(w: Watched): void {
    const { session } = w;
    if (w.probe || session.destroyed || session.closed) return;
    const read = session.socket.bytesRead;
    if (read === w.expectedRead) {
      this.again(w);
      return;
    }
    w.expectedRead = read;
    const probe: Probe = { startedAt: Date.now(), acked: false, timer: null };
    let sent = false;
    try {
      sent = session.ping((err) => {
        if (err) return;
        probe.acked = true;
        w.expectedRead += PING_ACK_BYTES;
      });
    } catch {
      // Destroyed meanwhile: nothing to watch.
    }
    if (!sent) {
      // Too many pings outstanding (grpc-js keepalive's included): look again later.
      this.again(w);
      return;
    }
    w.probe = probe;
    probe.timer = setTimeout(() => setImmediate(() => this.decide(w, probe)), H2_PROBE_GRACE_MS);
    probe.timer.unref();
  }

  /** Runs in a check phase, after any write Node scheduled for frames queued in the same turn. */
  private decide(w: Watched, probe: Probe): void {
    const { session } = w;
    if (w.probe !== probe || session.destroyed) return;
    if (probe.acked) {
      w.probe = null;
      this.again(w);
      return;
    }
    const sent = session.state.outboundQueueSize === 0;
    const unreadData = [...w.streams].some((s) => s.bufferSize > 0);
    const ended = w.streams.size === 0 || (!sent && !unreadData);
    if (!ended && Date.now() - probe.startedAt < this.options.stalledWriteLimitMs) {
      probe.timer = setTimeout(() => setImmediate(() => this.decide(w, probe)), H2_PROBE_GRACE_MS);
      probe.timer.unref();
      return;
    }
    this.options.logger.debug({ pingSent: sent, streams: w.streams.size }, 'HTTP/2 session answers no PING (ended by GOAWAY?): connection closed');
    w.probe = null;
    session.destroy();
  }

  /** Looks again after a longer quiet period; any visible activity restarts Node's timer. */
  private again(w: Watched): void {
    if (w.session.destroyed) return;
    w.intervalMs = Math.min(w.intervalMs * 2, H2_IDLE_CHECK_MAX_MS);
    w.session.setTimeout(w.intervalMs);
  }
}
