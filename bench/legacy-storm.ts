/**
 * Legacy sessions that come back by themselves as deployed LNC clients do:
 * every half whose stream ends re-dials after a fixed 2 s, no jitter (the
 * storm of DESIGN.md). Per session the node holds RecvStream(C2S) and
 * SendStream(S2C) on a gRPC connection of its own, creating its boxes
 * (NewCipherBox, ALREADY_EXISTS is fine) before each dial, as litd does;
 * the app two WebSockets, which simply re-dial until the boxes exist again.
 *
 * `arm(t)` starts the probes: every PROBE_INTERVAL_MS each party sends a
 * message stamped with the time; a session is back once each party has
 * received a message stamped at or after `t` (so nothing buffered from
 * before the kill counts).
 *
 * STORM_TRACE=1 prints, for the first sessions of each case, every half's
 * dials and failures (with the reason) and the arm time, on stderr.
 */
import { createBox, dialGrpc, GrpcInlet, GrpcOutlet, type HashMailStub, type Inlet, type Outlet, type Sink } from './grpc-party.js';
import { newSidPair, type Target } from './wire.js';
import { WsInlet, WsOutlet } from './ws-party.js';

/** The legacy clients' fixed re-dial delay. */
export const LEGACY_REDIAL_MS = 2_000;
const PROBE_INTERVAL_MS = 500;
const DIAL_TIMEOUT_MS = 10_000;
const STAMP_BYTES = 8;
const TRACED_SESSIONS = 3;
let tracedSessions = 0;

/** With STORM_TRACE set, the next TRACED_SESSIONS sessions made are traced (call once per case). */
export function traceNextStormSessions(): void {
  tracedSessions = 0;
}

type Open<T> = (sink: Sink) => Promise<T>;

/** One half that re-dials LEGACY_REDIAL_MS after it fails, until closed. */
class RetryingHalf<T extends Inlet | Outlet> {
  current: T | null = null;
  dials = 0;
  private closed = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(
    private readonly open: Open<T>,
    private readonly onMessage: (msg: Buffer) => void,
    /** STORM_TRACE: prints this half's dials and failures with timestamps, under this name. */
    private readonly traceAs: string | null = null,
  ) {}

  start(): void {
    if (this.closed) return;
    this.dials++;
    this.trace('dial');
    let failed = false;
    const sink: Sink = {
      message: (msg) => this.onMessage(msg),
      fail: (reason) => {
        if (failed) return;
        failed = true;
        this.trace(`failed: ${reason}`);
        this.retry(sink);
      },
    };
    this.open(sink).then(
      (half) => {
        this.trace('open');
        if (failed || this.closed) half.close();
        else this.current = half;
      },
      (err: unknown) => sink.fail(`dial failed: ${err instanceof Error ? err.message : String(err)}`),
    );
  }

  private trace(event: string): void {
    if (this.traceAs) console.error(`STORM ${Date.now()} ${this.traceAs} ${event}`);
  }

  private retry(_sink: Sink): void {
    this.current?.close();
    this.current = null;
    if (this.closed) return;
    this.timer = setTimeout(() => this.start(), LEGACY_REDIAL_MS);
  }

  close(): void {
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.current?.close();
    this.current = null;
  }
}

export class StormSession {
  /** When each party first received a probe stamped at or after the arm time (ms), or 0. */
  nodeBackAt = 0;
  appBackAt = 0;
  private armedAt = Infinity;
  private isOpen = false;
  private probeTimer: NodeJS.Timeout | null = null;
  private readonly stub: HashMailStub;
  private readonly halves: { nodeIn: RetryingHalf<Inlet>; nodeOut: RetryingHalf<Outlet>; appIn: RetryingHalf<Inlet>; appOut: RetryingHalf<Outlet> };
  /** Resolves when both parties have received one message (the session works). */
  readonly opened: Promise<void>;

  constructor(target: Target) {
    const pair = newSidPair();
    // STORM_TRACE=1: the first sessions' halves print their dials and failures (stderr).
    const traced = process.env.STORM_TRACE ? tracedSessions++ : Infinity;
    const as = (half: string): string | null => (traced < TRACED_SESSIONS ? `s${traced}.${half}` : null);
    this.stub = dialGrpc(target.grpcAddress);
    let nodeGot: () => void = () => undefined;
    let appGot: () => void = () => undefined;
    const nodeFirst = new Promise<void>((r) => (nodeGot = r));
    const appFirst = new Promise<void>((r) => (appGot = r));
    this.opened = Promise.all([nodeFirst, appFirst]).then(() => {
      this.isOpen = true;
    });
    const received = (party: 'node' | 'app') => (msg: Buffer) => {
      (party === 'node' ? nodeGot : appGot)();
      if (msg.length !== STAMP_BYTES || msg.readDoubleBE(0) < this.armedAt) return;
      if (party === 'node' && this.nodeBackAt === 0) this.nodeBackAt = Date.now();
      if (party === 'app' && this.appBackAt === 0) this.appBackAt = Date.now();
    };
    const stub = this.stub;
    this.halves = {
      nodeIn: new RetryingHalf<Inlet>(async (sink) => {
        await createBox(stub, pair.c2s, DIAL_TIMEOUT_MS);
        await createBox(stub, pair.s2c, DIAL_TIMEOUT_MS);
        return new GrpcInlet(stub, pair.c2s, sink);
      }, received('node'), as('nodeIn')),
      nodeOut: new RetryingHalf<Outlet>(async (sink) => {
        await createBox(stub, pair.s2c, DIAL_TIMEOUT_MS);
        return new GrpcOutlet(stub, pair.s2c, sink);
      }, () => undefined, as('nodeOut')),
      appIn: new RetryingHalf<Inlet>((sink) => WsInlet.open(target.wsPort, pair.s2c, sink, DIAL_TIMEOUT_MS), received('app'), as('appIn')),
      appOut: new RetryingHalf<Outlet>((sink) => WsOutlet.open(target.wsPort, pair.c2s, sink, DIAL_TIMEOUT_MS), () => undefined, as('appOut')),
    };
    this.halves.nodeIn.start();
    this.halves.nodeOut.start();
    // The app dials once the node has had a moment to create the boxes; else its first dial waits 2 s.
    setTimeout(() => {
      this.halves.appIn.start();
      this.halves.appOut.start();
    }, 200);
    this.probeTimer = setInterval(() => this.probe(), PROBE_INTERVAL_MS);
  }

  get back(): boolean {
    return this.nodeBackAt > 0 && this.appBackAt > 0;
  }

  get backAt(): number {
    return Math.max(this.nodeBackAt, this.appBackAt);
  }

  get dials(): number {
    return this.halves.nodeIn.dials + this.halves.nodeOut.dials + this.halves.appIn.dials + this.halves.appOut.dials;
  }

  /** Probes from now on count only if stamped at or after `at`. */
  arm(at: number): void {
    if (process.env.STORM_TRACE) console.error(`STORM ${at} armed`);
    this.armedAt = at;
    this.nodeBackAt = 0;
    this.appBackAt = 0;
  }

  private probe(): void {
    // Idle between the opening exchange and the arm: probes only to open, then to come back.
    if (this.back || (this.isOpen && this.armedAt === Infinity)) return;
    const stamp = Buffer.alloc(STAMP_BYTES);
    stamp.writeDoubleBE(Date.now(), 0);
    // A write on a half that is dialling is dropped: the next probe goes out 500 ms later.
    if (this.halves.nodeOut.current) this.halves.nodeOut.current.write(stamp);
    if (this.halves.appOut.current) this.halves.appOut.current.write(stamp);
  }

  close(): void {
    if (this.probeTimer) clearInterval(this.probeTimer);
    for (const h of Object.values(this.halves)) h.close();
    this.stub.close();
  }
}
