/**
 * Ends a connection we are done with so that it is gone within a bound,
 * whatever the peer does. `end()` alone waits for the peer: a peer that never
 * reads (our bytes stay queued) or never closes its side keeps the fd, the
 * open-connection gauge and its per-address count forever. We do not destroy
 * right after the last bytes flush either: closing with the peer's request
 * still unread makes the kernel send RST, which can make the client drop
 * the answer it has not read yet. So: end, and destroy at the grace.
 */
import type { Duplex } from 'node:stream';

export function endWithin(socket: Duplex, graceMs: number, lastBytes?: string): void {
  if (socket.destroyed) return;
  const timer = setTimeout(() => socket.destroy(), graceMs);
  timer.unref();
  socket.once('close', () => clearTimeout(timer));
  if (lastBytes === undefined) socket.end();
  else socket.end(lastBytes);
}
