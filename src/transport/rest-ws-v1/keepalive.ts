/**
 * WebSocket keepalive for every socket of the gateway on one shared interval
 * timer, not a timer per socket: thousands of idle legacy sockets each cost
 * one small entry here. A socket is pinged every `pingIntervalMs` and dropped
 * if it shows no life for `pongTimeoutMs` after a ping. Life is a pong or any
 * data frame: the deployed non-browser client's send socket never reads, so
 * it never answers a ping, and would otherwise be dropped every interval.
 */

/** The reference's ping payload. */
export const PING_PAYLOAD = Buffer.from('are you there?');
/** The shared timer ticks this many times per shortest period, so deadlines are met within a quarter of it. */
const TICKS_PER_PERIOD = 4;
/** Bounds of the tick interval (milliseconds): fine enough for tests' short periods, coarse enough to stay cheap. */
const MIN_TICK_MS = 10;
const MAX_TICK_MS = 1000;

export interface KeepaliveOptions {
  /** 0 disables pings (and so drops). */
  pingIntervalMs: number;
  /** 0 never drops. */
  pongTimeoutMs: number;
}

/** What the keepalive needs of a socket. */
export interface KeepaliveSocket {
  ping(data: Buffer): void;
  /** Drops the connection at once (no close handshake: the peer is gone). */
  terminate(): void;
}

/** One socket's keepalive state; `alive = true` on every pong or data frame. */
export class KeepaliveEntry {
  alive = true;
  /** When the unanswered ping went out; 0: none outstanding. */
  pingSentAt = 0;

  constructor(
    readonly socket: KeepaliveSocket,
    public nextPingAt: number,
  ) {}
}

export class Keepalive {
  private readonly entries = new Set<KeepaliveEntry>();
  private timer: NodeJS.Timeout | null = null;
  private readonly tickMs: number;
  private stopped = false;

  constructor(
    private readonly options: KeepaliveOptions,
    private readonly onDrop: (entry: KeepaliveEntry) => void = () => {},
  ) {
    const periods = [options.pingIntervalMs, options.pongTimeoutMs].filter((ms) => ms > 0);
    const shortest = periods.length > 0 ? Math.min(...periods) : MAX_TICK_MS;
    this.tickMs = Math.min(MAX_TICK_MS, Math.max(MIN_TICK_MS, Math.floor(shortest / TICKS_PER_PERIOD)));
  }

  get enabled(): boolean {
    return this.options.pingIntervalMs > 0;
  }

  /** Starts watching a socket; null when pings are off (nothing to track). */
  track(socket: KeepaliveSocket): KeepaliveEntry | null {
    if (!this.enabled || this.stopped) return null;
    const entry = new KeepaliveEntry(socket, Date.now() + this.options.pingIntervalMs);
    this.entries.add(entry);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(), this.tickMs);
      this.timer.unref();
    }
    return entry;
  }

  untrack(entry: KeepaliveEntry | null): void {
    if (!entry) return;
    this.entries.delete(entry);
    if (this.entries.size === 0) this.clearTimer();
  }

  /** Stops the timer for good (server shutdown). */
  stop(): void {
    this.stopped = true;
    this.entries.clear();
    this.clearTimer();
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  private tick(): void {
    const now = Date.now();
    const { pingIntervalMs, pongTimeoutMs } = this.options;
    for (const entry of this.entries) {
      if (entry.pingSentAt !== 0) {
        if (entry.alive) {
          entry.pingSentAt = 0;
        } else if (pongTimeoutMs > 0 && now - entry.pingSentAt >= pongTimeoutMs) {
          this.entries.delete(entry);
          this.onDrop(entry);
          entry.socket.terminate();
          continue;
        }
      }
      if (now >= entry.nextPingAt) {
        entry.nextPingAt = now + pingIntervalMs;
        // Keep the first unanswered ping's time: the deadline runs from it.
        if (entry.pingSentAt === 0) {
          entry.alive = false;
          entry.pingSentAt = now;
        }
        entry.socket.ping(PING_PAYLOAD);
      }
    }
    if (this.entries.size === 0) this.clearTimer();
  }
}
