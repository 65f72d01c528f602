/**
 * PROXY protocol (v1 text and v2 binary) header parsing, for `--trust-proxy`
 * behind an L4 balancer: the client address for per-address limits comes
 * from the header instead of the balancer's socket.
 */
import { isIP } from 'node:net';
import { formatIp } from './ip-address.js';

/** v1 lines are at most 107 bytes; v2 headers carry a 16-byte prefix and a length. */
const V1_MAX_BYTES = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_BYTES = 16;
const V1_PREFIX = Buffer.from('PROXY ');

export type ProxyParse =
  /** Not enough bytes yet to decide. */
  | { kind: 'more' }
  /** No PROXY header: the connection starts with the application protocol. */
  | { kind: 'none' }
  | { kind: 'invalid'; reason: string }
  /** `address` is null for LOCAL / UNKNOWN (health checks from the balancer). */
  | { kind: 'header'; address: string | null; length: number };

function startsLike(buf: Buffer, prefix: Buffer): boolean {
  const n = Math.min(buf.length, prefix.length);
  return buf.subarray(0, n).equals(prefix.subarray(0, n));
}

export function parseProxyHeader(buf: Buffer): ProxyParse {
  if (startsLike(buf, V2_SIGNATURE)) return buf.length < V2_FIXED_BYTES ? { kind: 'more' } : parseV2(buf);
  if (startsLike(buf, V1_PREFIX)) return buf.length < V1_PREFIX.length ? { kind: 'more' } : parseV1(buf);
  return { kind: 'none' };
}

function parseV1(buf: Buffer): ProxyParse {
  const end = buf.indexOf('\r\n');
  if (end < 0) return buf.length >= V1_MAX_BYTES ? { kind: 'invalid', reason: 'PROXY v1 line too long' } : { kind: 'more' };
  const parts = buf.subarray(0, end).toString('latin1').split(' ');
  const length = end + 2;
  if (parts[1] === 'UNKNOWN') return { kind: 'header', address: null, length };
  if ((parts[1] !== 'TCP4' && parts[1] !== 'TCP6') || parts.length !== 6) return { kind: 'invalid', reason: 'malformed PROXY v1 line' };
  // The address becomes a limit key: only an address of the family the line names.
  if (isIP(parts[2]) !== (parts[1] === 'TCP4' ? 4 : 6)) return { kind: 'invalid', reason: 'malformed PROXY v1 source address' };
  return { kind: 'header', address: parts[2], length };
}

function parseV2(buf: Buffer): ProxyParse {
  const versionCommand = buf[12];
  if (versionCommand >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported PROXY version' };
  const length = V2_FIXED_BYTES + buf.readUInt16BE(14);
  if (buf.length < length) return { kind: 'more' };
  const command = versionCommand & 0x0f;
  if (command === 0) return { kind: 'header', address: null, length }; // LOCAL
  const family = buf[13] >> 4;
  if (family === 1 && length >= V2_FIXED_BYTES + 12) {
    return { kind: 'header', address: Array.from(buf.subarray(16, 20)).join('.'), length };
  }
  if (family === 2 && length >= V2_FIXED_BYTES + 36) {
    return { kind: 'header', address: formatIp({ family: 6, bytes: buf.subarray(16, 32) }), length };
  }
  return { kind: 'header', address: null, length };
}
