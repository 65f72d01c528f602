/**
 * The WebSocket version hint (docs/protocol-v2.md, Transports): the client
 * offers `hashmail.vN` subprotocols in Sec-WebSocket-Protocol and the relay
 * echoes the highest it speaks. A handshake offering none of ours is refused
 * before the upgrade with a 400 naming what we support, so a client learns
 * the mismatch from the handshake, not from a socket that opens and dies.
 */
import { STATUS_CODES } from 'node:http';
import type { Duplex } from 'node:stream';
import { SUPPORTED_VERSIONS } from '../../relay/v2-mailbox.js';

const SUBPROTOCOL_PREFIX = 'hashmail.v';

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

/** Plain-text body of the 400 for a handshake that offers none of our subprotocols. */
export function unsupportedSubprotocolText(header: string | undefined): string {
  const offered = header ? `offered: ${header}` : 'none offered';
  return `unsupported protocol version: Sec-WebSocket-Protocol must offer one of ${OURS.join(', ')} (${offered})\n`;
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
