/**
 * Who the client is, for per-address limits: the one source of the client
 * address the operator trusts, and the key an address is counted under.
 *
 * - `trustProxy: false`: the TCP peer is the client. No PROXY header is
 *   parsed, no X-Forwarded-For read.
 * - `proxy-protocol` (an L4 balancer): the address in the PROXY v1/v2 header,
 *   from any peer or, if `trustedProxies` is set, only from those; a PROXY
 *   header from another peer closes its connection. X-Forwarded-For is never
 *   read: an L4 balancer passes it through from the client untouched.
 * - `x-forwarded-for` (an L7 balancer): when the TCP peer is one of
 *   `trustedProxies`, the rightmost X-Forwarded-For hop that is not itself a
 *   trusted proxy; otherwise the peer. A PROXY header closes the connection.
 *
 * The limit key: IPv4 as is (also when it arrives IPv4-mapped), IPv6 by its
 * `limits.ipv6PrefixLength` prefix, as one host usually owns a whole /64.
 */
import net from 'node:net';
import type { IncomingMessage } from 'node:http';
import type { Metadata } from '@grpc/grpc-js';
import type { Config } from '../config/schema.js';
import { formatIp, maskIp, parseCidr, parseIp } from './ip-address.js';

/** Hops of X-Forwarded-For looked at, from the right; a longer chain of trusted proxies falls back to the peer. */
export const MAX_FORWARDED_HOPS = 16;
const MAX_PORT = 65535;

export interface ClientAddressOptions {
  trustProxy: boolean;
  clientAddressFrom: 'proxy-protocol' | 'x-forwarded-for';
  /** IPs or CIDRs (v4 or v6) of the balancers. */
  trustedProxies: readonly string[];
  /** Bits of an IPv6 address that make one limit key. */
  ipv6PrefixLength: number;
}

/**
 * What the listener does with a PROXY header from a peer: `off` does not
 * look for one (the bytes go to HTTP as they are), `believe` takes its address,
 * `refuse` closes a connection that sends one.
 */
export type ProxyHeaderRule = 'off' | 'believe' | 'refuse';

/** The parts of a grpc-js server call the address is read from. */
export interface GrpcCallPeer {
  metadata: Metadata;
  getPeer(): string;
}

export class ClientAddressPolicy {
  private readonly trusted: net.BlockList;
  private readonly anyPeerMaySendProxy: boolean;

  constructor(private readonly options: ClientAddressOptions) {
    this.trusted = new net.BlockList();
    options.trustedProxies.forEach((entry, i) => {
      const cidr = parseCidr(entry);
      // The schema rejects these first; this guards a policy built by hand.
      if (!cidr) throw new Error(`server.trustedProxies[${i}]: "${entry}" is not an IP address or CIDR`);
      this.trusted.addSubnet(formatIp(cidr.ip), cidr.prefix, cidr.ip.family === 4 ? 'ipv4' : 'ipv6');
    });
    this.anyPeerMaySendProxy = options.trustedProxies.length === 0;
  }

  static fromConfig(config: Config): ClientAddressPolicy {
    const { trustProxy, clientAddressFrom, trustedProxies } = config.server;
    return new ClientAddressPolicy({ trustProxy, clientAddressFrom, trustedProxies, ipv6PrefixLength: config.limits.ipv6PrefixLength });
  }

  /** How the listener treats a PROXY header on a connection from `peer` (the socket's remote address). */
  proxyHeaderFrom(peer: string): ProxyHeaderRule {
    if (!this.options.trustProxy) return 'off';
    if (this.options.clientAddressFrom !== 'proxy-protocol') return 'refuse';
    return this.anyPeerMaySendProxy || this.isTrusted(peer) ? 'believe' : 'refuse';
  }

  /** The client address of an HTTP/1.1 request or WebSocket upgrade. */
  ofHttpRequest(req: IncomingMessage): string {
    const peer = req.socket.remoteAddress ?? 'unknown';
    const header = req.headers['x-forwarded-for'];
    return this.forwardedClient(header === undefined ? [] : Array.isArray(header) ? header : [header], peer);
  }

  /** The client address of a gRPC call (`x-forwarded-for` metadata, as grpc-gateway style balancers send it). */
  ofGrpcCall(call: GrpcCallPeer): string {
    const peer = hostOfPeer(call.getPeer());
    return this.forwardedClient(call.metadata.get('x-forwarded-for').map(String), peer);
  }

  /** The per-address limit key of an HTTP request: what the REST and WebSocket gateways count boxes under. */
  limitKeyOfRequest(req: IncomingMessage): string {
    return this.limitKey(this.ofHttpRequest(req));
  }

  /** The per-address limit key of a gRPC call. */
  limitKeyOfCall(call: GrpcCallPeer): string {
    return this.limitKey(this.ofGrpcCall(call));
  }

  /**
   * The key per-address limits count `address` under: IPv4 dotted, IPv6 masked
   * to the configured prefix (`2001:db8:1:2::/64`); anything else as given.
   */
  limitKey(address: string): string {
    const ip = parseIp(address);
    if (!ip) return address;
    if (ip.family === 4) return formatIp(ip);
    const prefix = this.options.ipv6PrefixLength;
    return `${formatIp(maskIp(ip, prefix))}/${prefix}`;
  }

  /** True if `address` is one of trustedProxies. */
  isTrusted(address: string): boolean {
    const ip = parseIp(address);
    return ip !== null && this.trusted.check(formatIp(ip), ip.family === 4 ? 'ipv4' : 'ipv6');
  }

  /**
   * X-Forwarded-For is believed only in its mode and only from a trusted peer.
   * Each trusted hop appends the address it saw, so walking from the right,
   * the first hop that is not a trusted proxy is the client; everything left
   * of it is the client's own text. A malformed hop breaks that chain: what
   * lies left of it was vouched for by no trusted hop, so the peer is used.
   */
  private forwardedClient(values: readonly string[], peer: string): string {
    if (!this.options.trustProxy || this.options.clientAddressFrom !== 'x-forwarded-for') return peer;
    if (values.length === 0 || !this.isTrusted(peer)) return peer;
    const hops = values.join(',').split(',');
    const last = Math.max(0, hops.length - MAX_FORWARDED_HOPS);
    for (let i = hops.length - 1; i >= last; i--) {
      const entry = hops[i].trim();
      if (entry === '') continue;
      const hop = parseHop(entry);
      if (hop === null) return peer;
      if (!this.isTrusted(hop)) return hop;
    }
    return peer;
  }
}

/** One X-Forwarded-For entry: `1.2.3.4`, `1.2.3.4:5678`, `2001:db8::1`, `[2001:db8::1]:443`; null if none of these. */
function parseHop(entry: string): string | null {
  const withPort = /^\[([^\]]+)\]:(\d{1,5})$|^([\d.]+):(\d{1,5})$/.exec(entry);
  const bracketed = /^\[([^\]]+)\]$/.exec(entry);
  if (withPort && Number(withPort[2] ?? withPort[4]) > MAX_PORT) return null;
  const ip = parseIp(withPort ? (withPort[1] ?? withPort[3]) : bracketed ? bracketed[1] : entry);
  return ip ? formatIp(ip) : null;
}

/**
 * grpc-js `getPeer()`: `1.2.3.4:5`, `::1:5` (IPv6 without brackets), `[::1]:5`,
 * or a bare address when the socket has no port any more -> the host.
 */
export function hostOfPeer(peer: string): string {
  const bare = peer.replace(/^ipv[46]:/, '');
  const bracket = /^\[(.*)\]:\d+$/.exec(bare);
  if (bracket) return bracket[1];
  const i = bare.lastIndexOf(':');
  if (i > 0 && /^\d+$/.test(bare.slice(i + 1)) && net.isIP(bare.slice(0, i)) !== 0) return bare.slice(0, i);
  return bare;
}

/**
 * The client an authenticated gateway names for a request it passes
 * through: the last `x-forwarded-for` hop, which the gateway appends (its
 * own client's address); the TCP peer when there is none or it is not an IP.
 */
export function gatewayForwardedClient(req: IncomingMessage): string {
  const header = req.headers['x-forwarded-for'];
  const text = Array.isArray(header) ? header.join(',') : (header ?? '');
  const last = text.slice(text.lastIndexOf(',') + 1).trim();
  return net.isIP(last) !== 0 ? last : (req.socket.remoteAddress ?? 'unknown');
}
