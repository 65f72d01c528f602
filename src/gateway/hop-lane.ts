/**
 * The gateway's end of a hop lane: one connection to the relay's public
 * port, upgraded to lane frames (lane-upgrade.ts, lane-socket.ts), carrying
 * the box calls and legacy halves the gateway places on one pool
 * connection. Each gets an id (never reused on the lane); frames from the
 * relay go to the half or call they name. The lane is read without pause:
 * what a half may have in flight is bounded by its credit, so no half can
 * hold up the others. When the lane fails (connection lost, relay killed,
 * upgrade refused), everything on it ends with the error and the pool opens
 * a new lane for the next call.
 */
import http from 'node:http';
import https from 'node:https';
import { isIP, Socket } from 'node:net';
import type { Duplex } from 'node:stream';
import { HashmailError } from '../session/errors.js';
import { encodeControlFrame, encodeHopFrame, FrameKind, type FrameKindValue, type HopFrame } from '../transport/hop/frame.js';
import { endFrameError } from '../transport/hop/hop-status.js';
import { LaneSocket } from '../transport/hop/lane-socket.js';
import { HOP_TOKEN_HEADER, LANE_FRAME_OVERHEAD_BYTES, LANE_PATH, LANE_PING_EVERY_MS, LANE_PROTOCOL, LANE_SILENCE_LIMIT_MS } from '../transport/hop/lane-upgrade.js';
import { parseHostPort } from '../config/host-port.js';
import { preambleConnector } from './relay-connect.js';
import type { RelayTlsOptions } from './relay-trust.js';

/** Half ids are uint32 on the wire; a lane that used them all is retired. */
const MAX_HALF_ID = 0xffffffff;
/** A relay that has not answered the upgrade in this long is unreachable (ms). */
const LANE_CONNECT_TIMEOUT_MS = 10_000;

export interface LaneDial {
  /** The relay's `HOST:PORT`. */
  address: string;
  /** null: plain text (`--insecure`); else TLS with these options (relay-trust.ts: a CA, a pinned certificate, or the system's CAs). */
  tls: RelayTlsOptions | null;
  /** The hop token. */
  token: string;
  /** mailbox.maxMessageBytes: the largest DATA payload a relay may send. */
  maxMessageBytes: number;
}

/** Frames that start something on the lane: a half, or a box call. */
export type LaneOpenKind = typeof FrameKind.OPEN_RECV | typeof FrameKind.OPEN_SEND | typeof FrameKind.CREATE_BOX | typeof FrameKind.DELETE_BOX;

/** What a lane tells one of its halves (or box calls). */
export interface LaneEndpoint {
  attached(credit: number): void;
  data(msg: Buffer): void;
  credit(bytes: number): void;
  /** END from the relay: null is OK (a finished writer's messages are all taken). */
  ended(err: HashmailError | null): void;
  /** The lane itself is gone. */
  lost(err: HashmailError): void;
}

export class HopLane {
  private readonly wire: LaneSocket;
  private readonly halves = new Map<number, LaneEndpoint>();
  private nextId = 1;
  private lostErr: HashmailError | null = null;
  private request: http.ClientRequest | null;

  constructor(dial: LaneDial) {
    this.wire = new LaneSocket({ maxFrameBytes: dial.maxMessageBytes + LANE_FRAME_OVERHEAD_BYTES, pingEveryMs: LANE_PING_EVERY_MS, silenceLimitMs: LANE_SILENCE_LIMIT_MS });
    const { host, port } = parseHostPort(dial.address, 'relay address');
    const options: https.RequestOptions = {
      host,
      port,
      path: LANE_PATH,
      headers: { Connection: 'Upgrade', Upgrade: LANE_PROTOCOL, [HOP_TOKEN_HEADER]: dial.token },
      // Its own connection, opened with the hop preamble naming nobody: a lane counts against no client's limit.
      createConnection: preambleConnector(null, dial.token, dial.tls),
      timeout: LANE_CONNECT_TIMEOUT_MS,
      ...(dial.tls ? { servername: isIP(host) ? undefined : host } : {}),
    };
    const req = (dial.tls ? https : http).request(options);
    this.request = req;
    req.on('upgrade', (_res, socket: Duplex, head: Buffer) => this.upgraded(socket, head));
    req.on('response', (res) => {
      res.resume();
      this.lose(res.statusCode === 401 ? new HashmailError('HOP_UNAUTHENTICATED') : new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (lane refused: HTTP ${res.statusCode})`));
    });
    req.on('timeout', () => req.destroy(new Error(`no answer within ${LANE_CONNECT_TIMEOUT_MS} ms`)));
    req.on('error', (err) => this.lose(new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (${err.message})`)));
    req.end();
  }

  private upgraded(socket: Duplex, head: Buffer): void {
    this.request = null;
    if (this.lostErr) {
      socket.destroy();
      return;
    }
    if (head.length > 0) socket.unshift(head);
    if (socket instanceof Socket) {
      socket.setNoDelay(true);
      // The upgrade's deadline is over; from here the lane's own keepalive watches the connection.
      socket.setTimeout(0);
    }
    this.wire.attach(socket, {
      frame: (f) => (f instanceof HashmailError ? this.lose(new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (${f.message})`)) : this.dispatch(f)),
      // The relay never ends a lane in order while the gateway uses it.
      closed: (err) => this.lose(err ?? new HashmailError('RELAY_UNREACHABLE', 'gateway: relay unreachable (lane ended)')),
    });
  }

  /** False once the lane failed or used up its half ids: the pool opens a new one. */
  get usable(): boolean {
    return this.lostErr === null && this.nextId <= MAX_HALF_ID;
  }

  /** Halves on the lane now (tests). */
  get size(): number {
    return this.halves.size;
  }

  /** Registers `endpoint` and sends its OPEN (a half) or box frame (a box call, answered by END); returns its id. */
  open(endpoint: LaneEndpoint, kind: LaneOpenKind, streamId: Buffer, clientAddress: string, credit: number): number {
    if (this.lostErr) throw this.lostErr;
    const id = this.nextId++;
    this.halves.set(id, endpoint);
    this.wire.write(encodeHopFrame({ half: id, kind, streamId, clientAddress, credit }));
    return id;
  }

  /** One message of half `id` (DATA), sent without a copy: `msg` must not change afterwards. */
  data(id: number, msg: Buffer): void {
    if (!this.lostErr) this.wire.writeData(id, msg);
  }

  control(id: number, kind: FrameKindValue, credit = 0): void {
    if (!this.lostErr) this.wire.write(encodeControlFrame(id, kind, credit));
  }

  /** The half is over here; with `cancel` the relay is told to free its slot. */
  forget(id: number, cancel: boolean): void {
    if (!this.halves.delete(id)) return;
    if (cancel) this.control(id, FrameKind.CANCEL);
    // A lane that used up its ids was replaced in its pool connection: nobody closes it but its last half.
    if (this.nextId > MAX_HALF_ID && this.halves.size === 0) this.close(new HashmailError('CANCELLED', 'gateway: hop lane retired (half ids used up)'));
  }

  /** Closes the lane: every half on it ends with `err`. */
  close(err: HashmailError): void {
    this.lose(err);
  }

  private dispatch(f: HopFrame): void {
    if (f.half === 0) {
      // Only a lane's END travels on half 0 to the gateway (PONG stays in the wire).
      this.lose(f.kind === FrameKind.END ? endFrameError(f) : new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (unexpected lane frame kind ${f.kind})`));
      return;
    }
    const half = this.halves.get(f.half);
    // A half forgotten here (released) whose frames were already on their way.
    if (!half) return;
    switch (f.kind) {
      case FrameKind.ATTACHED:
        half.attached(f.credit ?? 0);
        return;
      case FrameKind.DATA:
        half.data(f.msg ?? Buffer.alloc(0));
        return;
      case FrameKind.CREDIT:
        half.credit(f.credit ?? 0);
        return;
      case FrameKind.END:
        this.halves.delete(f.half);
        half.ended(f.errorCode === undefined ? null : endFrameError(f));
        return;
      default:
        // The gateway's own kinds never come back; a relay that sends them is broken.
        this.close(new HashmailError('RELAY_UNREACHABLE', `gateway: relay unreachable (unexpected frame kind ${f.kind})`));
    }
  }

  private lose(err: HashmailError): void {
    if (this.lostErr) return;
    this.lostErr = err;
    this.request?.destroy();
    this.request = null;
    this.wire.destroy(err);
    const halves = [...this.halves.values()];
    this.halves.clear();
    for (const h of halves) h.lost(err);
  }
}
