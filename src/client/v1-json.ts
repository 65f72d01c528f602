/**
 * The legacy gateway's JSON (legacy spec section 4) from the client side, on
 * web APIs only: request bodies the deployed browser client sends, and the
 * response frames it reads (`{"result":...}` / `{"error":...}`, and the send
 * socket's unwrapped status).
 */
import { fromBase64, toBase64 } from './bytes.js';

export const V1_HASHMAIL_PATH = '/v1/lightning-node-connect/hashmail';
/** `method=POST`: a WebSocket handshake is a GET; the gateway takes the call's method from this parameter. */
export const V1_RECEIVE_PATH = `${V1_HASHMAIL_PATH}/receive?method=POST`;
export const V1_SEND_PATH = `${V1_HASHMAIL_PATH}/send?method=POST`;

export interface V1Status {
  code: number;
  message: string;
}

export type V1ReceiveFrame = { result: Uint8Array } | { error: V1Status };

/** RecvStream request: `{"stream_id":"<base64>"}`. */
export function receiveRequestJson(sid: Uint8Array): string {
  return JSON.stringify({ stream_id: toBase64(sid) });
}

/** NewCipherBox body with lnd_auth. */
export function createBoxJson(sid: Uint8Array): string {
  return JSON.stringify({ desc: { stream_id: toBase64(sid) }, lnd_auth: {} });
}

/** Encoder of SendStream messages for one SID: the constant head is built once. */
export function sendMessageEncoder(sid: Uint8Array): (msg: Uint8Array) => string {
  const head = `{"desc":{"stream_id":"${toBase64(sid)}"},"msg":"`;
  return (msg) => `${head}${toBase64(msg)}"}`;
}

function isRecord(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

/** `{"code":N,"message":"..."}` (extra fields ignored), or null if `value` is not one. */
export function readStatus(value: unknown): V1Status | null {
  if (!isRecord(value) || typeof value.code !== 'number') return null;
  return { code: value.code, message: typeof value.message === 'string' ? value.message : '' };
}

/** A receive-socket frame; throws on anything that is neither a result nor an error. */
export function parseReceiveFrame(text: string): V1ReceiveFrame {
  const value: unknown = JSON.parse(text);
  if (isRecord(value) && isRecord(value.result)) {
    const msg = value.result.msg;
    return { result: typeof msg === 'string' && msg.length > 0 ? fromBase64(msg) : new Uint8Array(0) };
  }
  const status = isRecord(value) ? readStatus(value.error) : null;
  if (status) return { error: status };
  throw new Error('unexpected frame from the legacy gateway');
}

/** A send-socket frame: the gateway answers only failures, wrapped or not. */
export function parseSendFrame(text: string): V1Status | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  return (isRecord(value) ? readStatus(value.error) : null) ?? readStatus(value);
}
