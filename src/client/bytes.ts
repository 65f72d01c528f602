/**
 * Byte helpers on standard web APIs only (btoa/atob, Uint8Array), for the
 * browser-safe paths: base64 for the v1 JSON gateway, SID bit flips.
 */

/** A SID is 64 bytes; a party reading `sid` writes `sid ^ 1`. */
export const SID_BYTES = 64;
/** btoa/String.fromCharCode take arguments on the stack: convert in slices of this many bytes. */
const BASE64_SLICE_BYTES = 0x8000;

/** The SID the peer of a reader of `sid` reads: a copy with bit 0 of byte 63 flipped. */
export function flipSid(sid: Uint8Array): Uint8Array {
  const out = new Uint8Array(sid);
  out[SID_BYTES - 1] ^= 0x01;
  return out;
}

/** Throws TypeError unless `sid` is 64 bytes; returns it as a plain Uint8Array copy. */
export function checkSidBytes(sid: Uint8Array, what: string): Uint8Array {
  if (!(sid instanceof Uint8Array) || sid.length !== SID_BYTES) {
    throw new TypeError(`${what} must be ${SID_BYTES} bytes`);
  }
  return new Uint8Array(sid);
}

/** Standard, padded base64. */
export function toBase64(bytes: Uint8Array): string {
  let binary = '';
  for (let i = 0; i < bytes.length; i += BASE64_SLICE_BYTES) {
    binary += String.fromCharCode(...bytes.subarray(i, i + BASE64_SLICE_BYTES));
  }
  return btoa(binary);
}

/** Standard or URL-safe base64, padded or not. */
export function fromBase64(text: string): Uint8Array {
  const std = text.replace(/-/g, '+').replace(/_/g, '/');
  const binary = atob(std + '='.repeat((4 - (std.length % 4)) % 4));
  const out = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) out[i] = binary.charCodeAt(i);
  return out;
}

/** Lower-case hex. */
export function toHex(bytes: Uint8Array): string {
  let out = '';
  for (const b of bytes) out += b.toString(16).padStart(2, '0');
  return out;
}
