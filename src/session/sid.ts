import { createHash } from 'node:crypto';
import { HashmailError } from './errors.js';

/** A stream ID (SID) is always 64 bytes; ours rejects any other length. */
export const SID_BYTES = 64;
/** Hex digits of the SID hash that logs carry instead of the SID itself. */
const SHORT_HASH_HEX_CHARS = 12;

/** Throws INVALID_ARGUMENT unless `sid` is a 64-byte SID. */
export function checkSid(sid: Uint8Array): Buffer {
  if (sid.length !== SID_BYTES) throw new HashmailError('INVALID_STREAM_ID');
  return Buffer.isBuffer(sid) ? sid : Buffer.from(sid.buffer, sid.byteOffset, sid.byteLength);
}

/** The SID the peer of a reader of `sid` reads: bit 0 of byte 63 flipped. */
export function peerSid(sid: Uint8Array): Buffer {
  const out = Buffer.from(sid);
  out[SID_BYTES - 1] ^= 0x01;
  return out;
}

/** Map key of one box (one SID). Binary string: cheap, exact, never logged. */
export function boxKey(sid: Uint8Array): string {
  return Buffer.from(sid.buffer, sid.byteOffset, sid.byteLength).toString('latin1');
}

/** Which box of its session a SID names: bit 0 of byte 63. */
export function boxIndex(sid: Uint8Array): 0 | 1 {
  return (sid[SID_BYTES - 1] & 0x01) as 0 | 1;
}

/** Session key: the SID with bit 0 of byte 63 cleared, as a map key. */
export function sessionKey(sid: Uint8Array): string {
  const pair = Buffer.from(sid);
  pair[SID_BYTES - 1] &= 0xfe;
  return pair.toString('latin1');
}

/**
 * A short, stable, non-reversible tag for logs and traces. A SID is a bearer
 * capability, so logs carry only this.
 */
export function shortHash(sid: Uint8Array): string {
  return createHash('sha256').update(sid).digest('hex').slice(0, SHORT_HASH_HEX_CHARS);
}
