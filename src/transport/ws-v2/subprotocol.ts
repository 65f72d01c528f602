/**
 * The WebSocket version hint (docs/protocol-v2.md, Transports): the client
 * offers `hashmail.vN` subprotocols in Sec-WebSocket-Protocol and the relay
 * echoes the highest it speaks. A handshake offering none of ours is refused
 * before the upgrade with a 400 naming what we support, so a client learns
 * the mismatch from the handshake, not from a socket that opens and dies.
 *
 * The header is client text that may carry a credential: browsers send
 * macaroons as `Grpc-Metadata-Macaroon+<value>` entries (spec section 4).
 * A refusal echoes only version-shaped entries and counts the rest.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { SUPPORTED_VERSIONS } from '../../relay/v2-mailbox.js';

const SUBPROTOCOL_PREFIX = 'hashmail.v';
/** An entry a refusal may echo: one of our names, or another version of it. */
const VERSION_ENTRY = /^hashmail\.v\d{1,4}$/;
/** Version-shaped entries echoed at most (the header is the client's; the answer stays short). */
const MAX_ECHOED_ENTRIES = 4;

/** `hashmail.v2` for version 2. */
export function subprotocolName(version: number): string {
  return `${SUBPROTOCOL_PREFIX}${version}`;
}

/** Our subprotocols, highest first (preference order). */
const OURS: readonly string[] = [...SUPPORTED_VERSIONS].sort((a, b) => b - a).map(subprotocolName);

/** Subprotocols named in a Sec-WebSocket-Protocol header value (tokens are case-sensitive, RFC 6455). */
export function parseOffered(header: string | undefined): string[] {
  if (!header) return [];
  return header
    .split(',')
    .map((s) => s.trim())
    .filter(Boolean);
}

/** The highest of our subprotocols among `offered`, or null if none is ours. */
export function chooseSubprotocol(offered: Iterable<string>): string | null {
  const set = offered instanceof Set ? (offered as Set<string>) : new Set(offered);
  return OURS.find((name) => set.has(name)) ?? null;
}

/** What a refusal says about `offered`: the version-shaped entries, and how many others. */
function describeOffered(offered: readonly string[]): string {
  if (offered.length === 0) return 'none offered';
  const versions = offered.filter((entry) => VERSION_ENTRY.test(entry)).slice(0, MAX_ECHOED_ENTRIES);
  const others = offered.length - versions.length;
  const parts = versions.length > 0 ? [versions.join(', ')] : [];
  if (others > 0) parts.push(`${others} other ${others === 1 ? 'entry' : 'entries'}`);
  return `offered: ${parts.join(' and ')}`;
}

/** Plain-text body of the 400 for a handshake that offers none of our subprotocols (`offered` from parseOffered). */
export function unsupportedSubprotocolText(offered: readonly string[]): string {
  return `unsupported protocol version: Sec-WebSocket-Protocol must offer one of ${OURS.join(', ')} (${describeOffered(offered)})\n`;
}

/**
 * Answers an upgrade request with a plain HTTP error and ends the socket
 * (nothing is upgraded). `Sec-WebSocket-Protocol` lists what we speak, as
 * the body does, for clients that read headers rather than bodies.
 */
export function refuseHandshake(socket: Duplex, status: number, body: string): void {
  // The HTTP server stops watching the socket once it emitted 'upgrade'.
  socket.on('error', () => socket.destroy());
  socket.once('finish', () => socket.destroy());
  socket.end(
    `HTTP/1.1 ${status} ${STATUS_CODES[status] ?? 'Error'}\r\n` +
      'Connection: close\r\n' +
      'Content-Type: text/plain; charset=utf-8\r\n' +
      `Sec-WebSocket-Protocol: ${OURS.join(', ')}\r\n` +
      `Content-Length: ${Buffer.byteLength(body)}\r\n\r\n${body}`,
  );
}
