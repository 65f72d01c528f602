/**
 * Raw HTTP/1.1 over net or tls sockets, for tests that must behave as no
 * client library does: stop mid-header, never read, never close. Each socket
 * records everything it received and when the server closed it. Also one
 * HTTP/1.1 exchange on a socket the test holds open (PROXY headers, pipelining).
 */
import net from 'node:net';
import tls from 'node:tls';
import { withTimeout } from './async-queue.js';
import { WAIT_MS } from './grpc-v1.js';

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


/** Writes `request`, resolves with the response head and body (Content-Length framed); rejects if the socket closes first. */
export function rawHttpExchange(socket: net.Socket, request: string): Promise<string> {
  const response = new Promise<string>((resolve, reject) => {
    let text = '';
    const onData = (d: Buffer): void => {
      text += d.toString();
      const headEnd = text.indexOf('\r\n\r\n');
      if (headEnd < 0) return;
      const len = /content-length: (\d+)/i.exec(text.slice(0, headEnd));
      if (len && text.length < headEnd + 4 + Number(len[1])) return;
      done();
      resolve(text);
    };
    const onClose = (): void => {
      done();
      reject(new Error(`connection closed before a response (got ${JSON.stringify(text.slice(0, 200))})`));
    };
    const done = (): void => {
      socket.off('data', onData);
      socket.off('close', onClose);
    };
    socket.on('data', onData);
    socket.once('close', onClose);
    socket.write(request);
  });
  return withTimeout(response, WAIT_MS, 'HTTP response');
}
