/**
 * PROXY protocol (v1 text and v2 binary) header parsing, for `--trust-proxy`
 * behind an L4 balancer: the client address for per-address limits comes
 * from the header instead of the balancer's socket. A gateway opens each of
 * its connections to a relay with a v2 header too, the hop token in a TLV
 * of our own (docs/gateway-hop.md, Connection preamble), so the relay knows
 * whose connection it is before it counts it.
 */
import { isIP } from 'node:net';
import { formatIp, parseIp } from './ip-address.js';

/** v1 lines are at most 107 bytes; v2 headers carry a 16-byte prefix and a length. */
const V1_MAX_BYTES = 107;
const V2_SIGNATURE = Buffer.from([0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a]);
const V2_FIXED_BYTES = 16;
const V1_PREFIX = Buffer.from('PROXY ');
/**
 * TLV type of the hop token, in the range the PROXY spec leaves to
 * applications (0xE0-0xEF); not 0xE0 or 0xEA, which cloud balancers use for
 * their own connection ids. A trusted balancer's header with this type is
 * still the balancer's (PublicListener.judgeHeader).
 */
export const PP2_TYPE_HOP_TOKEN = 0xe8;
/**
 * TLV type of a gateway's proof that it holds the hop token, without the
 * token (src/transport/hop/preamble-proof.ts); what gateways send since the
 * token TLV went out (a relay still takes the token from earlier gateways).
 */
export const PP2_TYPE_HOP_PROOF = 0xe9;
/** Address block lengths of the v2 families: AF_INET, AF_INET6, AF_UNIX (each with source and destination). */
const V2_ADDRESS_BYTES: Record<number, number> = { 1: 12, 2: 36, 3: 216 };

export type ProxyParse =
  /** Not enough bytes yet to decide. */
  | { kind: 'more' }
  /** No PROXY header: the connection starts with the application protocol. */
  | { kind: 'none' }
  | { kind: 'invalid'; reason: string }
  /**
   * `address` is null for LOCAL / UNKNOWN (health checks from the balancer,
   * a gateway's hop lanes). `hopToken`: the PP2_TYPE_HOP_TOKEN TLV of a v2
   * header (null without one); `hopProof`: its PP2_TYPE_HOP_PROOF TLV, with
   * the header it is in; for the listener to check.
   */
  | { kind: 'header'; address: string | null; length: number; hopToken: string | null; hopProof: HopProofTlv | null };

/** A PP2_TYPE_HOP_PROOF TLV as received: the whole header, and where the TLV's value starts in it. */
export interface HopProofTlv {
  header: Buffer;
  valueAt: number;
  valueLength: number;
}

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
  if (parts[1] === 'UNKNOWN') return { kind: 'header', address: null, length, hopToken: null, hopProof: null };
  if ((parts[1] !== 'TCP4' && parts[1] !== 'TCP6') || parts.length !== 6) return { kind: 'invalid', reason: 'malformed PROXY v1 line' };
  // The address becomes a limit key: only an address of the family the line names.
  if (isIP(parts[2]) !== (parts[1] === 'TCP4' ? 4 : 6)) return { kind: 'invalid', reason: 'malformed PROXY v1 source address' };
  return { kind: 'header', address: parts[2], length, hopToken: null, hopProof: null };
}

function parseV2(buf: Buffer): ProxyParse {
  const versionCommand = buf[12];
  if (versionCommand >> 4 !== 2) return { kind: 'invalid', reason: 'unsupported PROXY version' };
  const length = V2_FIXED_BYTES + buf.readUInt16BE(14);
  if (buf.length < length) return { kind: 'more' };
  const family = buf[13] >> 4;
  const addressBytes = V2_ADDRESS_BYTES[family] ?? 0;
  if (V2_FIXED_BYTES + addressBytes > length) return { kind: 'invalid', reason: 'PROXY v2 address block longer than the header' };
  const tlvAt = V2_FIXED_BYTES + addressBytes;
  const tlvs = parseTlvs(buf.subarray(tlvAt, length));
  if (tlvs === null) return { kind: 'invalid', reason: 'malformed PROXY v2 TLV' };
  const hopToken = tlvs.get(PP2_TYPE_HOP_TOKEN)?.value.toString('utf8') ?? null;
  const proof = tlvs.get(PP2_TYPE_HOP_PROOF);
  const hopProof = proof ? { header: buf.subarray(0, length), valueAt: tlvAt + proof.at, valueLength: proof.value.length } : null;
  const header = { kind: 'header', length, hopToken, hopProof } as const;
  const command = versionCommand & 0x0f;
  if (command === 0) return { ...header, address: null }; // LOCAL
  if (family === 1) return { ...header, address: Array.from(buf.subarray(16, 20)).join('.') };
  if (family === 2) return { ...header, address: formatIp({ family: 6, bytes: buf.subarray(16, 32) }) };
  return { ...header, address: null };
}

/** The TLVs after a v2 address block (type, 2-byte length, value), each value with its offset in `block`; null if one runs past the header. */
function parseTlvs(block: Buffer): Map<number, { value: Buffer; at: number }> | null {
  const tlvs = new Map<number, { value: Buffer; at: number }>();
  let at = 0;
  while (at < block.length) {
    if (at + 3 > block.length) return null;
    const end = at + 3 + block.readUInt16BE(at + 1);
    if (end > block.length) return null;
    tlvs.set(block[at], { value: block.subarray(at + 3, end), at: at + 3 });
    at = end;
  }
  return tlvs;
}

/**
 * A PROXY v2 header naming `client` (PROXY command; ports 0, the destination
 * unspecified) or nobody (LOCAL), followed by `tlvs` in order.
 */
export function encodeProxyV2Header(client: string | null, tlvs: ReadonlyArray<readonly [type: number, value: Buffer]>): Buffer {
  const ip = client === null ? null : parseIp(client);
  if (client !== null && ip === null) throw new Error('a PROXY header names a client by IP address');
  const addressBytes = ip === null ? 0 : V2_ADDRESS_BYTES[ip.family === 4 ? 1 : 2];
  const tlvBytes = tlvs.reduce((sum, [, value]) => sum + 3 + value.length, 0);
  const out = Buffer.alloc(V2_FIXED_BYTES + addressBytes + tlvBytes);
  V2_SIGNATURE.copy(out, 0);
  out[12] = ip === null ? 0x20 : 0x21; // version 2, LOCAL or PROXY
  out[13] = ip === null ? 0x00 : ip.family === 4 ? 0x11 : 0x21; // UNSPEC, or TCP over IPv4 / IPv6
  out.writeUInt16BE(out.length - V2_FIXED_BYTES, 14);
  // Source address first; destination address and both ports stay zero.
  if (ip !== null) Buffer.from(ip.bytes).copy(out, V2_FIXED_BYTES);
  let at = V2_FIXED_BYTES + addressBytes;
  for (const [type, value] of tlvs) {
    out[at] = type;
    out.writeUInt16BE(value.length, at + 1);
    value.copy(out, at + 3);
    at += 3 + value.length;
  }
  return out;
}
