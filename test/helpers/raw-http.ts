/** One HTTP/1.1 exchange on a raw socket the test holds open (PROXY headers, pipelining, limits). */
import type net from 'node:net';
import { withTimeout } from './async-queue.js';
import { WAIT_MS } from './grpc-v1.js';

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
