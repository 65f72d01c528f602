/**
 * Source ports for a load process's sockets on its own source address
 * (127.0.x.y). A socket bound to an address with port 0 makes the kernel
 * search that address's ports for a free one. With thousands bound, the
 * search cost 6.3 ms of system CPU per connection here (`strace -c` on a
 * load worker holding 9,000 sockets), and the open rate of the
 * 100,000-session run fell from 200 to 5 sessions/s with nothing else
 * short. A counter per address hands each port out once instead: binding
 * a given port is one hash lookup. libuv binds with SO_REUSEADDR, so a port
 * an earlier run left in TIME_WAIT can be bound again. Past the last port,
 * or for no address, the kernel chooses.
 */
const FIRST_PORT = 10_000;
const LAST_PORT = 65_535;
const nextPort = new Map<string, number>();

/** A port not yet handed out on `address` in this process, or undefined (let the kernel choose). */
export function sourcePort(address: string | undefined): number | undefined {
  if (address === undefined) return undefined;
  const port = nextPort.get(address) ?? FIRST_PORT;
  if (port > LAST_PORT) return undefined;
  nextPort.set(address, port + 1);
  return port;
}

/** A listener elsewhere on the machine (on 0.0.0.0) may hold a port: such a dial is retried on the next one. */
export const isPortTaken = (err: unknown): boolean => err instanceof Error && err.message.includes('EADDRINUSE');
