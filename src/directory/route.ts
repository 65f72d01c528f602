/**
 * A session's route: base64url(SHA-256(session key)), no padding, where the
 * session key is the SID with bit 0 of byte 63 cleared. Both SIDs of a pair
 * share one route. Lookups, etcd keys and logs use the route, so no instance
 * but the owning relay ever needs the SID (a bearer capability).
 */
import { createHash } from 'node:crypto';
import { SID_BYTES } from '../session/sid.js';

/** 32 bytes of SHA-256 in unpadded base64url. */
export const ROUTE_CHARS = 43;
/**
 * The last character carries 4 bits and 2 zero bits: any other would decode
 * to the same bytes as a real route yet be another key, a mapping no SID can
 * ever reach. So only the canonical encoding is a route.
 */
const ROUTE_PATTERN = /^[A-Za-z0-9_-]{42}[AEIMQUYcgkosw048]$/;

export function routeOfSid(sid: Uint8Array): string {
  const key = Buffer.from(sid);
  key[SID_BYTES - 1] &= 0xfe;
  return createHash('sha256').update(key).digest('base64url');
}

/** True for a well-formed route (43 base64url characters, canonical: what routeOfSid gives). */
export function isRoute(text: unknown): text is string {
  return typeof text === 'string' && ROUTE_PATTERN.test(text);
}
