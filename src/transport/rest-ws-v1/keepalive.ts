/**
 * WebSocket keepalive for every socket of the gateway on one shared interval
 * timer, not a timer per socket: thousands of idle legacy sockets each cost
 * one small entry here. A socket is pinged about every `pingIntervalMs`
 * (jittered) and dropped if it shows no life for `pongTimeoutMs` after a
 * ping. Life is a pong or any data frame: the deployed non-browser client's
 * send socket never reads, so it never answers a ping, and would otherwise be
 * dropped every interval. A socket that sent data within the interval is
 * not pinged: it is plainly alive.
 */

/** The reference's ping payload. */
export const PING_PAYLOAD = Buffer.from('are you there?');
/** The shared timer ticks this many times per shortest period, so deadlines are met within a quarter of it. */
const TICKS_PER_PERIOD = 4;
/** Bounds of the tick interval (milliseconds): fine enough for tests' short periods, coarse enough to stay cheap. */
const MIN_TICK_MS = 10;
const MAX_TICK_MS = 100;
/**
 * Pings sent in one tick at most; the rest wait for the next tick. Sockets
 * that connected in the same second would otherwise all be pinged in one
 * synchronous burst every interval (thousands of writes, a stall of 100+ ms).
 */
const MAX_PINGS_PER_TICK = 100;
/** Each ping interval is drawn from interval x [1 - JITTER, 1 + JITTER], so bursts spread out. */
const PING_JITTER = 0.2;

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

/** One socket's keepalive state. */
export class KeepaliveEntry {
  /** A pong or data frame came since the outstanding ping. */
  answered = true;
  /** A data frame came since the last ping was due: it needs no ping this interval. */
  dataSeen = false;
  /** When the unanswered ping went out; 0: none outstanding. */
  pingSentAt = 0;

  constructor(
    readonly socket: KeepaliveSocket,
    public nextPingAt: number,
  ) {}

  /** A data frame (or, on v2, the peer's own ping) arrived: life, as good as a pong (a busy writer's pong queues behind its data). */
  sawData(): void {
    this.answered = true;
    this.dataSeen = true;
  }

  sawPong(): void {
    this.answered = true;
  }
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
    const entry = new KeepaliveEntry(socket, Date.now() + this.jitteredInterval());
    this.entries.add(entry);
    if (!this.timer) {
      this.timer = setInterval(() => this.tick(Date.now()), this.tickMs);
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

  private jitteredInterval(): number {
    return Math.round(this.options.pingIntervalMs * (1 - PING_JITTER + 2 * PING_JITTER * Math.random()));
  }

  private clearTimer(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
  }

  /** One pass over the sockets at time `now` (the shared timer's; tests call it directly). */
  tick(now: number): void {
    const { pongTimeoutMs } = this.options;
    let pings = 0;
    for (const entry of this.entries) {
      if (entry.pingSentAt !== 0) {
        if (entry.answered) {
          entry.pingSentAt = 0;
        } else if (pongTimeoutMs > 0 && now - entry.pingSentAt >= pongTimeoutMs) {
          this.entries.delete(entry);
          this.onDrop(entry);
          entry.socket.terminate();
          continue;
        }
      }
      if (now < entry.nextPingAt) continue;
      if (entry.dataSeen) {
        // It sent data this interval: plainly alive, no ping needed (under load
        // this spares a ping and a pong per socket per interval).
        entry.dataSeen = false;
        entry.nextPingAt = now + this.jitteredInterval();
        continue;
      }
      if (pings >= MAX_PINGS_PER_TICK) continue; // due: next tick
      pings++;
      entry.nextPingAt = now + this.jitteredInterval();
      // Keep the first unanswered ping's time: the deadline runs from it.
      if (entry.pingSentAt === 0) {
        entry.answered = false;
        entry.pingSentAt = now;
      }
      entry.socket.ping(PING_PAYLOAD);
    }
    if (this.entries.size === 0) this.clearTimer();
  }
}
