/**
 * The address a lookup gives out for the instance answering it, when that
 * instance was not told what to advertise and listens on every interface:
 * the one the client reached it by (Host / :authority), not the loopback
 * address it registered. A client of a default `hashmail serve` on another
 * machine then dials back what it dialed, instead of its own loopback.
 */
import net from 'node:net';
import type { RouteOwner } from '../directory/directory.js';
import { formatHostPort, parseHostPort } from '../config/host-port.js';

/** What a lookup answers for `owner`, given the authority the request came with. */
export type AnsweredAs = (owner: RouteOwner, authority: string | undefined) => string;

const DEFAULT_PORT = { tls: 443, plain: 80 };
/** A host name or IPv4 literal of an authority (RFC 3986 reg-name, no percent-encoding). */
const HOST_NAME = /^[A-Za-z0-9.-]{1,253}$/;

/** HOST:PORT of a Host / :authority value (the scheme's default port when it has none); null if it is not one. */
export function reachedAddress(authority: string | undefined, tls: boolean): string | null {
  if (!authority) return null;
  const text = authority.trim();
  const bare = text.startsWith('[') ? text.endsWith(']') : !text.includes(':');
  let host: string;
  let port: number;
  try {
    ({ host, port } = bare ? { host: text.replace(/^\[|\]$/g, ''), port: tls ? DEFAULT_PORT.tls : DEFAULT_PORT.plain } : parseHostPort(text));
  } catch {
    return null;
  }
  if (port === 0 || !(net.isIP(host) !== 0 || HOST_NAME.test(host))) return null;
  return formatHostPort(host, port);
}

/**
 * The answer rule: an owner given out as `self()` (this instance) is
 * answered as reached when `derived` (no relay.advertise and a wildcard
 * listen host); any other owner as registered.
 */
export function answeredAsReached(derived: boolean, self: () => string, tls: boolean): AnsweredAs {
  return (owner, authority) => (derived && owner.address === self() ? (reachedAddress(authority, tls) ?? owner.address) : owner.address);
}
