/**
 * The legacy wire as the benchmark's clients and its direct pipe speak it:
 * SIDs (spec section 1) and the WebSocket gateway's JSON frames (section 4).
 */
import { randomBytes } from 'node:crypto';

export const SID_BYTES = 64;
export const HASHMAIL_PATH = '/v1/lightning-node-connect/hashmail';
export const RECEIVE_PATH = `${HASHMAIL_PATH}/receive`;
export const SEND_PATH = `${HASHMAIL_PATH}/send`;

/** Where a relay under test listens: gRPC (h2c) and WebSocket (HTTP/1.1), possibly the same port. */
export interface Target {
  grpcAddress: string;
  wsPort: number;
}

/** The SID pair of one LNC session: the node reads C2S and writes S2C; the app the reverse. */
export interface SidPair {
  s2c: Buffer;
  c2s: Buffer;
}

export function newSidPair(): SidPair {
  const s2c = randomBytes(SID_BYTES);
  const c2s = Buffer.from(s2c);
  c2s[SID_BYTES - 1] ^= 0x01;
  return { s2c, c2s };
}

export function wsUrl(port: number, path: string): string {
  // `method=POST`: a WebSocket handshake is a GET; the gateway maps it to the POST call behind it.
  return `ws://127.0.0.1:${port}${path}?method=POST`;
}

/** The first (and only) request of a receive socket. */
export const receiveRequest = (sid: Buffer): string => `{"stream_id":"${sid.toString('base64')}"}`;

/** One send-socket request; `sidB64` is precomputed by the caller (it is per socket). */
export const sendRequest = (sidB64: string, msg: Buffer): string => `{"desc":{"stream_id":"${sidB64}"},"msg":"${msg.toString('base64')}"}`;

/** The exact frame a gateway sends per message read (compact JSON, `{"result":` first). */
export const resultFrame = (sidB64: string, msg: Buffer): string => `{"result":{"desc":{"stream_id":"${sidB64}"},"msg":"${msg.toString('base64')}"}}`;

interface ResultFrame {
  result?: { msg?: string };
  error?: { code: number; message: string };
}

/** The message of a result frame; throws with the server's text on an error frame. */
export function parseResultFrame(text: string): Buffer {
  const parsed = JSON.parse(text) as ResultFrame;
  if (parsed.result) return Buffer.from(parsed.result.msg ?? '', 'base64');
  throw new Error(`gateway error frame: ${parsed.error ? `${parsed.error.code} ${parsed.error.message}` : text.slice(0, 200)}`);
}

/** A payload of `size` bytes whose first 4 bytes carry `seq` (so loss or reordering shows). */
export function sequenced(template: Buffer, seq: number): Buffer {
  const out = Buffer.allocUnsafe(template.length);
  template.copy(out);
  if (out.length >= 4) out.writeUInt32BE(seq >>> 0, 0);
  return out;
}

export const seqOf = (msg: Buffer): number => (msg.length >= 4 ? msg.readUInt32BE(0) : -1);
