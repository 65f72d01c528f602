/**
 * A session's route, computed with WebCrypto so browsers and Node share one
 * implementation: base64url(SHA-256(session key)), unpadded, where the
 * session key is the SID with bit 0 of byte 63 cleared (both SIDs of a pair
 * share one route). Clients look their relay up by route, so no instance but
 * the owning relay sees the SID. Must equal src/directory/route.ts routeOfSid.
 */

/** Length of a SID (bytes); the last byte's bit 0 tells the two halves of a pair apart. */
const SID_BYTES = 64;
const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/** Unpadded base64url (RFC 4648 section 5). */
export function base64url(bytes: Uint8Array): string {
  let out = '';
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += BASE64URL[n >> 18] + BASE64URL[(n >> 12) & 63] + BASE64URL[(n >> 6) & 63] + BASE64URL[n & 63];
  }
  const rest = bytes.length - i;
  if (rest === 1) {
    const n = bytes[i] << 16;
    out += BASE64URL[n >> 18] + BASE64URL[(n >> 12) & 63];
  } else if (rest === 2) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += BASE64URL[n >> 18] + BASE64URL[(n >> 12) & 63] + BASE64URL[(n >> 6) & 63];
  }
  return out;
}

/** The route of the session `sid` belongs to (either SID of the pair). */
export async function sessionRoute(sid: Uint8Array): Promise<string> {
  if (sid.length !== SID_BYTES) throw new TypeError(`a SID is ${SID_BYTES} bytes`);
  const key = new Uint8Array(sid);
  key[SID_BYTES - 1] &= 0xfe;
  const digest = await globalThis.crypto.subtle.digest('SHA-256', key);
  return base64url(new Uint8Array(digest));
}
