/**
 * How a lane starts on the relay's public port: the gateway sends
 * `GET /hop/v1/lane` with `Upgrade: hashmail-hop-lane` and the hop token in
 * `hashmail-hop-token`; the relay answers 101 and the connection carries
 * lane frames from then on (lane-socket.ts). A request without the token
 * gets 401 and is counted as HOP_UNAUTHENTICATED; one that asks for another
 * protocol on this path gets 400.
 */
import type { IncomingMessage } from 'node:http';
import type { Duplex } from 'node:stream';
import { HashmailError } from '../../session/errors.js';
import { endWithin } from '../end-within.js';
import type { HopToken } from './hop-token.js';
import { serveLane, type LaneDeps } from './lane-server.js';

export const LANE_PATH = '/hop/v1/lane';
/** The upgrade request's header with the cluster's hop token (docs/gateway-hop.md, Authentication). */
export const HOP_TOKEN_HEADER = 'hashmail-hop-token';
export const LANE_PROTOCOL = 'hashmail-hop-lane';
/** Room for a DATA frame's own fields around the largest legacy message. */
export const LANE_FRAME_OVERHEAD_BYTES = 1024;
/** The gateway pings a lane this often (ms)... */
export const LANE_PING_EVERY_MS = 10_000;
/** ...and either end drops a lane it heard nothing on for this long (ms). */
export const LANE_SILENCE_LIMIT_MS = 15_000;
/** A refused upgrade's connection is closed after its answer within this (ms). */
const REFUSAL_CLOSE_GRACE_MS = 1_000;

export interface LaneUpgradeDeps extends Omit<LaneDeps, 'maxFrameBytes' | 'silenceLimitMs' | 'sent' | 'received' | 'done'> {
  token: HopToken;
  /** An authenticated gateway's connection: it counts against no client's connection limit (PublicListener.rekey). */
  adopt?(socket: Duplex): void;
  /** Frame counts and the end of one lane (`done` is called once). */
  callMetrics(): Pick<LaneDeps, 'sent' | 'received' | 'done'>;
}

function refuse(socket: Duplex, status: string, err: HashmailError, note: (err: unknown) => HashmailError): void {
  note(err);
  const body = err.message;
  endWithin(socket, REFUSAL_CLOSE_GRACE_MS, `HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Type: text/plain\r\nContent-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`);
}

/** The relay's upgrade route: true when the request was for a lane (answered either way). */
export function laneUpgradeRoute(deps: LaneUpgradeDeps): (req: IncomingMessage, socket: Duplex, head: Buffer) => boolean {
  const maxFrameBytes = deps.maxMessageBytes + LANE_FRAME_OVERHEAD_BYTES;
  return (req, socket, head) => {
    if (req.url !== LANE_PATH) return false;
    if (req.headers.upgrade?.toLowerCase() !== LANE_PROTOCOL) {
      refuse(socket, '400 Bad Request', new HashmailError('MALFORMED_REQUEST', `hop: ${LANE_PATH} upgrades to ${LANE_PROTOCOL} only`), deps.note);
      return true;
    }
    if (!deps.token.matches(req.headers[HOP_TOKEN_HEADER])) {
      refuse(socket, '401 Unauthorized', new HashmailError('HOP_UNAUTHENTICATED'), deps.note);
      return true;
    }
    deps.adopt?.(socket);
    socket.write(`HTTP/1.1 101 Switching Protocols\r\nUpgrade: ${LANE_PROTOCOL}\r\nConnection: Upgrade\r\n\r\n`);
    if (head.length > 0) socket.unshift(head);
    serveLane(socket, { ...deps, ...deps.callMetrics(), maxFrameBytes, silenceLimitMs: LANE_SILENCE_LIMIT_MS });
    return true;
  };
}
