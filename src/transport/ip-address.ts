/**
 * IP addresses as bytes: parsing (v4, v6 with `::`, embedded IPv4 and zone
 * ids), the RFC 5952 canonical text, prefix masking and CIDRs. Node validates
 * (`net.isIP`) but gives no bytes or canonical form, and per-address limits
 * need both: `2001:DB8:0:0::1` and `2001:db8::1` must be one key.
 */
import net from 'node:net';

export interface IpAddress {
  family: 4 | 6;
  /** 4 bytes (IPv4) or 16 (IPv6), network order. */
  bytes: Uint8Array;
}

export interface Cidr {
  ip: IpAddress;
  /** Prefix length in bits: 0..32 (IPv4) or 0..128 (IPv6). */
  prefix: number;
}

const IPV4_BYTES = 4;
const IPV6_BYTES = 16;
const IPV6_GROUPS = 8;
/** `::ffff:0:0/96`: an IPv4 client on a dual-stack socket. */
const MAPPED_PREFIX = Uint8Array.of(0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff);

/**
 * A bare IP address (no port, no brackets); null if `text` is not one. An
 * IPv6 zone id (`%eth0`) is dropped, and an IPv4-mapped IPv6 address
 * (`::ffff:1.2.3.4`) is returned as the IPv4 address it carries.
 */
export function parseIp(text: string): IpAddress | null {
  const family = net.isIP(text);
  if (family === 4) return { family: 4, bytes: Uint8Array.from(text.split('.'), Number) };
  if (family !== 6) return null;
  const bytes = ipv6Bytes(text.replace(/%.*$/, ''));
  if (MAPPED_PREFIX.every((b, i) => bytes[i] === b)) return { family: 4, bytes: bytes.slice(MAPPED_PREFIX.length) };
  return { family: 6, bytes };
}

/** `10.0.0.0/8`, `2001:db8::/32`, or a single address (a full-length prefix); null if neither. */
export function parseCidr(text: string): Cidr | null {
  const slash = text.indexOf('/');
  const address = slash < 0 ? text : text.slice(0, slash);
  const family = net.isIP(address);
  // A zone id names an interface of this host; it has no place in a rule about remote peers.
  if (family === 0 || address.includes('%')) return null;
  const bits = family === 4 ? IPV4_BYTES * 8 : IPV6_BYTES * 8;
  const prefixText = slash < 0 ? String(bits) : text.slice(slash + 1);
  const prefix = Number(prefixText);
  if (!/^\d{1,3}$/.test(prefixText) || prefix > bits) return null;
  // Parsed as written, not unmapped: a ::ffff:a.b.c.d/104 rule stays an IPv6 rule (net.BlockList maps it).
  const bytes = family === 4 ? Uint8Array.from(address.split('.'), Number) : ipv6Bytes(address);
  return { ip: { family: family === 4 ? 4 : 6, bytes }, prefix };
}

/** Zeroes every bit past the first `prefix` bits. */
export function maskIp(ip: IpAddress, prefix: number): IpAddress {
  const bytes = Uint8Array.from(ip.bytes);
  for (let i = 0; i < bytes.length; i++) {
    const keep = Math.min(8, Math.max(0, prefix - i * 8));
    bytes[i] &= (0xff << (8 - keep)) & 0xff;
  }
  return { family: ip.family, bytes };
}

/** Dotted decimal, or RFC 5952 IPv6: lowercase, no leading zeros, the longest zero run (2+ groups, first on a tie) as `::`. */
export function formatIp(ip: IpAddress): string {
  if (ip.family === 4) return ip.bytes.join('.');
  const groups: number[] = [];
  for (let i = 0; i < IPV6_GROUPS; i++) groups.push((ip.bytes[i * 2] << 8) | ip.bytes[i * 2 + 1]);
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < IPV6_GROUPS; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let end = i;
    while (end < IPV6_GROUPS && groups[end] === 0) end++;
    if (end - i > bestLength) {
      bestStart = i;
      bestLength = end - i;
    }
    i = end;
  }
  const hex = (from: number, to: number): string => groups.slice(from, to).map((g) => g.toString(16)).join(':');
  if (bestStart < 0) return hex(0, IPV6_GROUPS);
  return `${hex(0, bestStart)}::${hex(bestStart + bestLength, IPV6_GROUPS)}`;
}

/** 16 bytes of an IPv6 address already validated by net.isIP (zone id removed). */
function ipv6Bytes(text: string): Uint8Array {
  const gap = text.indexOf('::');
  const head = splitGroups(gap < 0 ? text : text.slice(0, gap));
  const tail = gap < 0 ? [] : splitGroups(text.slice(gap + 2));
  const zeros = new Array<number>(IPV6_GROUPS - head.length - tail.length).fill(0);
  const groups = [...head, ...zeros, ...tail];
  const bytes = new Uint8Array(IPV6_BYTES);
  groups.forEach((g, i) => {
    bytes[i * 2] = g >> 8;
    bytes[i * 2 + 1] = g & 0xff;
  });
  return bytes;
}

/** `a:b:1.2.3.4` -> [0xa, 0xb, 0x0102, 0x0304]; the empty string -> []. */
function splitGroups(text: string): number[] {
  if (text === '') return [];
  const groups: number[] = [];
  for (const part of text.split(':')) {
    if (part.includes('.')) {
      const [a, b, c, d] = part.split('.').map(Number);
      groups.push((a << 8) | b, (c << 8) | d);
    } else {
      groups.push(parseInt(part, 16));
    }
  }
  return groups;
}
