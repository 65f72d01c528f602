/**
 * Raw HTTP/1.1 over net or tls sockets, for tests that must behave as no
 * client library does: stop mid-header, never read, never close. Each socket
 * records everything it received and when the server closed it.
 */
import net from 'node:net';
import tls from 'node:tls';

export interface RawConn {
  readonly socket: net.Socket;
  /** Everything received so far. */
  received(): string;
  /** True once the server closed (FIN or reset) and the socket is gone. */
  readonly closed: boolean;
  /** Resolves once closed; rejects naming `what` after `timeoutMs`. */
  whenClosed(timeoutMs: number, what?: string): Promise<void>;
  destroy(): void;
}

export interface RawOptions {
  /** TLS with ALPN http/1.1, verified against this CA; plain text without it. */
  tlsCa?: Buffer;
}

export async function openRaw(port: number, options: RawOptions = {}): Promise<RawConn> {
  const socket: net.Socket = options.tlsCa
    ? tls.connect({ host: '127.0.0.1', port, ca: options.tlsCa, servername: 'localhost', ALPNProtocols: ['http/1.1'] })
    : net.connect(port, '127.0.0.1');
  await new Promise<void>((resolve, reject) => {
    socket.once(options.tlsCa ? 'secureConnect' : 'connect', resolve);
    socket.once('error', reject);
  });
  let text = '';
  let closed = false;
  const closing = new Promise<void>((resolve) =>
    socket.once('close', () => {
      closed = true;
      resolve();
    }),
  );
  socket.on('data', (d: Buffer) => {
    text += d.toString('latin1');
  });
  socket.on('error', () => undefined);
  return {
    socket,
    received: () => text,
    get closed() {
      return closed;
    },
    whenClosed(timeoutMs: number, what = 'server close'): Promise<void> {
      let timer: NodeJS.Timeout | undefined;
      const timeout = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`${what}: not within ${timeoutMs} ms`)), timeoutMs);
      });
      return Promise.race([closing, timeout]).finally(() => clearTimeout(timer));
    },
    destroy: () => socket.destroy(),
  };
}

/** Runs `task` for 0..count-1, at most `parallel` at a time (bounded floods). */
export async function inBatches(count: number, parallel: number, task: (i: number) => Promise<void>): Promise<void> {
  for (let start = 0; start < count; start += parallel) {
    const batch: Promise<void>[] = [];
    for (let i = start; i < Math.min(count, start + parallel); i++) batch.push(task(i));
    await Promise.all(batch);
  }
}
