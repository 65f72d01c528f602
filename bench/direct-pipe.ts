/**
 * The baseline: the same clients piped to each other with no mailbox. A
 * minimal relay with the same gRPC service definition, codec and grpc-js/ws
 * stacks as hashmail, but no session logic: no boxes, slots, queues beyond a
 * parking spot for a message that beats its reader, rate limit, stale timer,
 * limits or metrics. gRPC and WebSocket get a port each (no protocol
 * sniffing). Run as a child process (fork); it reports its ports over IPC and
 * answers {op:'memory'} with process.memoryUsage().
 */
import http from 'node:http';
import {
  Server,
  ServerCredentials,
  type sendUnaryData,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { WebSocketServer, type WebSocket } from 'ws';
import { cipherBoxEncoder, type CipherBox, type CipherBoxDesc } from '../src/transport/grpc-v1/codec.js';
import { hashMailService, type CipherInitResp } from '../src/transport/grpc-v1/service.js';
import { RECEIVE_PATH, resultFrame, SEND_PATH } from './wire.js';

/** The gRPC server options hashmail uses (src/relay/single-node.ts), so the stacks match. */
const GRPC_SERVER_OPTIONS = {
  'grpc.keepalive_time_ms': 120_000,
  'grpc.keepalive_timeout_ms': 20_000,
  'grpc.max_receive_message_length': 4 * 1024 * 1024 + 1024,
  'grpc.max_send_message_length': -1,
  'grpc.max_concurrent_streams': 1000,
  'grpc-node.max_session_memory': 64,
};
/** Messages parked for a reader that has not attached yet before the writer is paused. */
const PARK_LIMIT = 64;
/** Bytes queued on a WebSocket reader before its writers are paused. */
const WS_HIGH_WATER_BYTES = 1024 * 1024;

interface ReaderSink {
  /** Takes the message; false: pause writers until it drains. */
  write(msg: Buffer): boolean;
}

/** SID -> reader, with writers waiting for a full reader to drain. */
class Pipe {
  private readonly readers = new Map<string, ReaderSink>();
  private readonly parked = new Map<string, Buffer[]>();
  private readonly waiting = new Map<string, (() => void)[]>();

  /** Hands `msg` to the reader of `key`; false: the writer should wait (waitFor). */
  deliver(key: string, msg: Buffer): boolean {
    const reader = this.readers.get(key);
    if (reader) return reader.write(msg);
    let queue = this.parked.get(key);
    if (!queue) this.parked.set(key, (queue = []));
    queue.push(msg);
    return queue.length < PARK_LIMIT;
  }

  waitFor(key: string, resume: () => void): void {
    const list = this.waiting.get(key);
    if (list) list.push(resume);
    else this.waiting.set(key, [resume]);
  }

  attach(key: string, reader: ReaderSink): void {
    this.readers.set(key, reader);
    const queue = this.parked.get(key);
    this.parked.delete(key);
    let open = true;
    for (const msg of queue ?? []) open = reader.write(msg);
    if (open) this.wake(key);
  }

  detach(key: string, reader: ReaderSink): void {
    if (this.readers.get(key) === reader) this.readers.delete(key);
  }

  wake(key: string): void {
    const list = this.waiting.get(key);
    if (!list) return;
    this.waiting.delete(key);
    for (const resume of list) resume();
  }
}

const keyOf = (sid: Buffer): string => sid.toString('latin1');

function grpcHandlers(pipe: Pipe): UntypedServiceImplementation {
  return {
    NewCipherBox: (_call: ServerUnaryCall<unknown, CipherInitResp>, cb: sendUnaryData<CipherInitResp>) => cb(null, { success: true }),
    DelCipherBox: (_call: ServerUnaryCall<unknown, object>, cb: sendUnaryData<object>) => cb(null, {}),
    RecvStream: (call: ServerWritableStream<CipherBoxDesc, Buffer>) => {
      const key = keyOf(call.request.streamId);
      const encode = cipherBoxEncoder(call.request);
      const reader: ReaderSink = { write: (msg) => call.write(encode(msg)) };
      call.on('drain', () => pipe.wake(key));
      call.on('cancelled', () => pipe.detach(key, reader));
      call.on('error', () => pipe.detach(key, reader));
      pipe.attach(key, reader);
    },
    SendStream: (call: ServerReadableStream<CipherBox, CipherBoxDesc>, cb: sendUnaryData<CipherBoxDesc>) => {
      let key: string | null = null;
      let streamId: Buffer = Buffer.alloc(0);
      const resume = (): void => {
        call.resume();
      };
      call.on('data', (box: CipherBox) => {
        if (key === null) {
          streamId = box.desc?.streamId ?? streamId;
          key = keyOf(streamId);
        }
        if (!pipe.deliver(key, box.msg)) {
          call.pause();
          pipe.waitFor(key, resume);
        }
      });
      call.on('end', () => cb(null, { streamId }));
      call.on('error', () => undefined);
    },
  };
}

function wsReceive(pipe: Pipe, ws: WebSocket): void {
  ws.once('message', (data) => {
    const req = JSON.parse((data as Buffer).toString('utf8')) as { stream_id: string };
    const sidB64 = req.stream_id;
    const key = keyOf(Buffer.from(sidB64, 'base64'));
    let pendingBytes = 0;
    const reader: ReaderSink = {
      write: (msg) => {
        const frame = resultFrame(sidB64, msg);
        const size = frame.length;
        pendingBytes += size;
        ws.send(frame, () => {
          pendingBytes -= size;
          if (pendingBytes < WS_HIGH_WATER_BYTES / 2) pipe.wake(key);
        });
        return pendingBytes < WS_HIGH_WATER_BYTES;
      },
    };
    ws.on('close', () => pipe.detach(key, reader));
    pipe.attach(key, reader);
  });
}

function wsSend(pipe: Pipe, ws: WebSocket): void {
  let key: string | null = null;
  const resume = (): void => ws.resume();
  ws.on('message', (data) => {
    const req = JSON.parse((data as Buffer).toString('utf8')) as { desc: { stream_id: string }; msg: string };
    key ??= keyOf(Buffer.from(req.desc.stream_id, 'base64'));
    if (!pipe.deliver(key, Buffer.from(req.msg, 'base64'))) {
      ws.pause();
      pipe.waitFor(key, resume);
    }
  });
}

export interface DirectPipe {
  grpcPort: number;
  wsPort: number;
  close(): void;
}

export async function startDirectPipe(): Promise<DirectPipe> {
  const pipe = new Pipe();
  const grpcServer = new Server(GRPC_SERVER_OPTIONS);
  grpcServer.addService(
    {
      NewCipherBox: hashMailService.newCipherBox,
      DelCipherBox: hashMailService.delCipherBox,
      SendStream: hashMailService.sendStream,
      RecvStream: hashMailService.recvStream,
    },
    grpcHandlers(pipe),
  );
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );

  // Plain `ws` defaults (no permessage-deflate), as a bare gateway would run.
  const wss = new WebSocketServer({ noServer: true });
  const httpServer = http.createServer({ requestTimeout: 0 }, (_req, res) => res.writeHead(404).end());
  httpServer.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path !== RECEIVE_PATH && path !== SEND_PATH) {
      socket.destroy();
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => (path === RECEIVE_PATH ? wsReceive(pipe, ws) : wsSend(pipe, ws)));
  });
  await new Promise<void>((resolve) => httpServer.listen(0, '127.0.0.1', resolve));
  const address = httpServer.address();
  const wsPort = typeof address === 'object' && address ? address.port : 0;
  return {
    grpcPort,
    wsPort,
    close: () => {
      grpcServer.forceShutdown();
      for (const ws of wss.clients) ws.terminate();
      httpServer.close();
    },
  };
}

/** Child-process entry: report ports, answer memory queries, exit with the parent. */
async function main(): Promise<void> {
  const running = await startDirectPipe();
  process.on('message', (m: { op?: string }) => {
    if (m.op === 'memory') process.send?.({ op: 'memory', ...process.memoryUsage() });
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => {
    running.close();
    process.exit(0);
  });
  process.send?.({ op: 'ready', grpcPort: running.grpcPort, wsPort: running.wsPort });
}

if (process.send && process.argv.includes('--child')) void main();
