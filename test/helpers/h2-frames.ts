/**
 * Raw HTTP/2 frames for tests that must send what no well-behaved client
 * sends (protocol errors, floods) over a plain net or tls socket, and read
 * back the frames the server answers with (GOAWAY and its error code).
 */
import net from 'node:net';
import tls from 'node:tls';
import { AsyncQueue } from './async-queue.js';

export const H2_PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');

export const FrameType = {
  DATA: 0x0,
  HEADERS: 0x1,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PING: 0x6,
  GOAWAY: 0x7,
  CONTINUATION: 0x9,
} as const;

export const Flag = { END_STREAM: 0x1, ACK: 0x1, END_HEADERS: 0x4 } as const;

const FRAME_HEADER_BYTES = 9;
const CANCEL = 0x8;

export function frame(type: number, flags: number, streamId: number, payload: Buffer = Buffer.alloc(0)): Buffer {
  const header = Buffer.alloc(FRAME_HEADER_BYTES);
  header.writeUIntBE(payload.length, 0, 3);
  header[3] = type;
  header[4] = flags;
  header.writeUInt32BE(streamId, 5);
  return Buffer.concat([header, payload]);
}

/** Client preface plus an empty SETTINGS, as every HTTP/2 client starts. */
export function clientStart(): Buffer {
  return Buffer.concat([H2_PREFACE, frame(FrameType.SETTINGS, 0, 0)]);
}

/** HPACK string literal, no Huffman, length < 127. */
function hpackString(text: string): Buffer {
  const bytes = Buffer.from(text);
  if (bytes.length >= 127) throw new Error('hpackString: too long for this helper');
  return Buffer.concat([Buffer.from([bytes.length]), bytes]);
}

/**
 * A gRPC request header block (POST, http, path, authority, content-type,
 * te), every field literal without indexing so blocks can be repeated
 * without touching the dynamic table.
 */
export function grpcRequestHeaders(path: string, contentType = 'application/grpc'): Buffer {
  return Buffer.concat([
    Buffer.from([0x83, 0x86]), // :method POST, :scheme http (static table)
    Buffer.from([0x04]), // :path, literal without indexing, name index 4
    hpackString(path),
    Buffer.from([0x01]), // :authority, name index 1
    hpackString('localhost'),
    Buffer.from([0x0f, 0x10]), // content-type, name index 31
    hpackString(contentType),
    Buffer.from([0x00]), // te: new name
    hpackString('te'),
    hpackString('trailers'),
  ]);
}

/** HEADERS then RST_STREAM(CANCEL) on the same stream: one round of a rapid-reset flood. */
export function rapidReset(streamId: number, path: string, contentType?: string): Buffer {
  const rst = Buffer.alloc(4);
  rst.writeUInt32BE(CANCEL);
  return Buffer.concat([
    frame(FrameType.HEADERS, Flag.END_HEADERS, streamId, grpcRequestHeaders(path, contentType)),
    frame(FrameType.RST_STREAM, 0, streamId, rst),
  ]);
}

export interface Frame {
  type: number;
  flags: number;
  streamId: number;
  payload: Buffer;
}

/** A socket speaking raw HTTP/2: frames in a queue, the close as the last item. */
export class RawH2 {
  readonly frames = new AsyncQueue<Frame | 'closed'>();
  private pending: Buffer = Buffer.alloc(0);
  closed = false;

  constructor(readonly socket: net.Socket | tls.TLSSocket) {
    socket.on('data', (chunk: Buffer) => this.feed(chunk));
    socket.on('error', () => undefined);
    socket.on('close', () => {
      this.closed = true;
      this.frames.end('closed');
    });
  }

  static async plain(port: number): Promise<RawH2> {
    const socket = net.connect(port, '127.0.0.1');
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawH2(socket);
  }

  static async tls(port: number, ca: Buffer): Promise<RawH2> {
    const socket = tls.connect({ host: '127.0.0.1', port, ca, servername: 'localhost', ALPNProtocols: ['h2'] });
    await new Promise<void>((resolve, reject) => {
      socket.once('secureConnect', resolve);
      socket.once('error', reject);
    });
    return new RawH2(socket);
  }

  write(bytes: Buffer): void {
    if (!this.socket.destroyed) this.socket.write(bytes);
  }

  /** Reads frames until a GOAWAY (returns its error code) or the close (null). */
  async goaway(timeoutMs: number): Promise<number | null> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const f = await this.frames.next(Math.max(1, deadline - Date.now()), 'GOAWAY');
      if (f === 'closed') return null;
      if (f.type === FrameType.GOAWAY) return f.payload.readUInt32BE(4);
    }
  }

  /** Resolves once the server has closed the connection (reading what it sends meanwhile). */
  async serverClosed(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!this.closed) await this.frames.next(Math.max(1, deadline - Date.now()), 'server close');
  }

  destroy(): void {
    this.socket.destroy();
  }

  private feed(chunk: Buffer): void {
    this.pending = this.pending.length === 0 ? chunk : Buffer.concat([this.pending, chunk]);
    while (this.pending.length >= FRAME_HEADER_BYTES) {
      const length = this.pending.readUIntBE(0, 3);
      if (this.pending.length < FRAME_HEADER_BYTES + length) break;
      const f: Frame = {
        type: this.pending[3],
        flags: this.pending[4],
        streamId: this.pending.readUInt32BE(5) & 0x7fffffff,
        payload: this.pending.subarray(FRAME_HEADER_BYTES, FRAME_HEADER_BYTES + length),
      };
      this.pending = this.pending.subarray(FRAME_HEADER_BYTES + length);
      // Answer PINGs as any client does: a live peer must not look dead to the server.
      if (f.type === FrameType.PING && (f.flags & Flag.ACK) === 0) this.write(frame(FrameType.PING, Flag.ACK, 0, f.payload));
      this.frames.push(f);
    }
  }
}
