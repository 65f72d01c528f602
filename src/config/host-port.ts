/**
 * HOST:PORT as the config and the flags write listen and advertised
 * addresses: an IPv6 host in brackets (`[::1]:8443`), a port 0-65535.
 */

/** Splits HOST:PORT (`[v6]:PORT` too); throws naming `what` and the bad value. */
export function parseHostPort(text: string, what = 'address'): { host: string; port: number } {
  const colon = text.lastIndexOf(':');
  let host = colon > 0 ? text.slice(0, colon) : '';
  const portText = text.slice(colon + 1);
  if (host.startsWith('[') && host.endsWith(']')) host = host.slice(1, -1);
  const port = Number(portText);
  if (!host || !/^\d+$/.test(portText) || port > 65535) {
    throw new Error(`${what} must be HOST:PORT, got ${JSON.stringify(text)}`);
  }
  return { host, port };
}

/** HOST:PORT, an IPv6 host in brackets. */
export function formatHostPort(host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`;
}
