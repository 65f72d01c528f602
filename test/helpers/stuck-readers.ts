/**
 * Readers that attach and then never read, on every transport: the server
 * keeps sending until its socket or HTTP/2 window is full, and whatever it
 * buffers past that is what a limit must account for. gRPC readers are raw
 * HTTP/2 clients that advertise a stream window of 0 (no DATA may reach them
 * at all); WebSocket readers are raw sockets that complete the handshake,
 * send their request and then stop reading.
 */
import { randomBytes } from 'node:crypto';
import http2 from 'node:http2';
import net from 'node:net';
import { encodeHello } from '../../src/wire/v2-frames.js';
import { withTimeout } from './async-queue.js';
import { RECEIVE_PATH } from './ws-v1.js';
import { helloFrame, V2_GRPC_PATH, V2_SUBPROTOCOL, V2_WS_PATH } from './v2-peers.js';

const HANDSHAKE_WAIT_MS = 10_000;
const PROTOBUF_BYTES_FIELD_1 = 0x0a;

export type StuckTransport = 'grpc-v1' | 'grpc-v2' | 'ws-v1' | 'ws-v2';
export const STUCK_TRANSPORTS: readonly StuckTransport[] = ['grpc-v1', 'grpc-v2', 'ws-v1', 'ws-v2'];

export interface StuckReader {
  close(): void;
}

/** gRPC length-prefixed message: flag 0, 4-byte big-endian length, body. */
function grpcMessage(body: Uint8Array): Buffer {
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

/** CipherBoxDesc{stream_id: sid}: field 1, bytes (64 bytes fit a one-byte length). */
function cipherBoxDesc(sid: Buffer): Buffer {
  return Buffer.concat([Buffer.from([PROTOBUF_BYTES_FIELD_1, sid.length]), sid]);
}

/**
 * `waitForHeaders`: resolve once the server answered with its response
 * headers (v2 sends them with the Welcome); a v1 RecvStream sends them only
 * with its first message, so it resolves once the request is written.
 */
function stuckGrpc(port: number, path: string, request: Buffer, waitForHeaders: boolean): Promise<StuckReader> {
  // A stream window of 0: the server may send headers, never DATA.
  const session = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 0 } });
  session.on('error', () => undefined);
  const stream = session.request({ ':method': 'POST', ':path': path, 'content-type': 'application/grpc', te: 'trailers' });
  stream.on('error', () => undefined);
  stream.write(grpcMessage(request));
  const close = (): void => {
    stream.destroy();
    session.destroy();
  };
  return withTimeout(
    new Promise<StuckReader>((resolve, reject) => {
      if (waitForHeaders) stream.once('response', () => resolve({ close }));
      else stream.write(Buffer.alloc(0), () => resolve({ close }));
      stream.once('close', () => reject(new Error(`${path}: stream closed before it was set up`)));
    }),
    HANDSHAKE_WAIT_MS,
    `${path} response headers`,
  );
}

/** A masked client frame (opcode 1 text, 2 binary), lengths up to 64 KiB. */
function clientFrame(opcode: number, payload: Buffer): Buffer {
  const mask = randomBytes(4);
  const short = payload.length < 126;
  const head = Buffer.alloc(short ? 2 : 4);
  head[0] = 0x80 | opcode;
  if (short) head[1] = 0x80 | payload.length;
  else {
    head[1] = 0x80 | 126;
    head.writeUInt16BE(payload.length, 2);
  }
  const body = Buffer.from(payload);
  for (let i = 0; i < body.length; i++) body[i] ^= mask[i & 3];
  return Buffer.concat([head, mask, body]);
}

function stuckWebSocket(port: number, path: string, protocol: string | null, opcode: number, request: Buffer): Promise<StuckReader> {
  const socket = net.connect({ host: '127.0.0.1', port });
  socket.on('error', () => undefined);
  const lines = [
    `GET ${path} HTTP/1.1`,
    `Host: 127.0.0.1:${port}`,
    'Upgrade: websocket',
    'Connection: Upgrade',
    `Sec-WebSocket-Key: ${randomBytes(16).toString('base64')}`,
    'Sec-WebSocket-Version: 13',
    ...(protocol ? [`Sec-WebSocket-Protocol: ${protocol}`] : []),
  ];
  socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  return withTimeout(
    new Promise<StuckReader>((resolve, reject) => {
      let head = '';
      const onData = (chunk: Buffer): void => {
        head += chunk.toString('latin1');
        if (!head.includes('\r\n\r\n')) return;
        socket.off('data', onData);
        if (!head.startsWith('HTTP/1.1 101')) {
          reject(new Error(`${path}: handshake refused: ${head.split('\r\n')[0]}`));
          return;
        }
        socket.write(clientFrame(opcode, request));
        // From here on nothing is read: the kernel buffers fill, then the server's.
        socket.pause();
        resolve({ close: () => socket.destroy() });
      };
      socket.on('data', onData);
      socket.once('close', () => reject(new Error(`${path}: closed during the handshake`)));
    }),
    HANDSHAKE_WAIT_MS,
    `${path} handshake`,
  );
}

/** Attaches a reader of `sid` over `transport` that never reads. */
export function openStuckReader(transport: StuckTransport, port: number, sid: Buffer): Promise<StuckReader> {
  const hello = (): Buffer => Buffer.from(encodeHello(helloFrame({ sid })));
  switch (transport) {
    case 'grpc-v1':
      return stuckGrpc(port, '/hashmailrpc.HashMail/RecvStream', cipherBoxDesc(sid), false);
    case 'grpc-v2':
      return stuckGrpc(port, V2_GRPC_PATH, hello(), true);
    case 'ws-v1':
      return stuckWebSocket(port, `${RECEIVE_PATH}?method=POST`, null, 1, Buffer.from(JSON.stringify({ stream_id: sid.toString('base64') })));
    case 'ws-v2':
      return stuckWebSocket(port, V2_WS_PATH, V2_SUBPROTOCOL, 2, hello());
  }
}
