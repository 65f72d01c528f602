/**
 * The baseline: the same clients piped to each other with no mailbox. A
 * minimal relay with the same gRPC service definition, codec and grpc-js/ws
 * stacks as hashmail, but no session logic: no boxes, slots, queues beyond a
 * parking spot for a message that beats its reader, rate limit, stale timer,
 * limits or metrics. gRPC and WebSocket get a port each (no protocol
 * sniffing). Run as a child process (fork); it reports its ports over IPC and
 * answers {op:'memory'} with process.memoryUsage().
 *
 * Protocol v2 too (docs/protocol-v2.md), shaped the same way: the v2 gRPC
 * service (hashmail's server definition and frame codec) on the gRPC port
 * and /v2/mailbox (subprotocol hashmail.v2) on the WebSocket port. A party
 * reading `sid` is the reader of `sid` and writes to `sid ^ 1`; Hello gets
 * Welcome, Data is decoded and re-encoded to the peer, Presence is sent when
 * the peer comes and goes. No sessions, slots, windows, limits or metrics.
 */
import http from 'node:http';
import { monitorEventLoopDelay, PerformanceObserver } from 'node:perf_hooks';
import {
  Server,
  ServerCredentials,
  type sendUnaryData,
  type ServerDuplexStream,
  type ServerReadableStream,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import { WebSocketServer, type WebSocket } from 'ws';
import { cipherBoxDescField, type CipherBox, type CipherBoxDesc, type OutgoingCipherBox } from '../src/transport/grpc-v1/codec.js';
import { hashMailService, type CipherInitResp } from '../src/transport/grpc-v1/service.js';
import { mailboxV2ServerService } from '../src/transport/grpc-v2/handlers.js';
import { decodeClientFrame, encodeDataFrame, encodeWelcome, PRESENCE_FRAMES, PROTOCOL_V2, type ClientFrame } from '../src/wire/v2-frames.js';
import { V2_SUBPROTOCOL, V2_WS_PATH } from './v2-party.js';
import { RECEIVE_PATH, resultFrame, SEND_PATH } from './wire.js';

/** The gRPC server options hashmail uses (src/compose/grpc-server.ts), so the stacks match. */
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
/** v2 WebSocket: unsent bytes past which the reader says "wait" (hashmail's SEND_HIGH_WATER_BYTES). */
const WS_V2_HIGH_WATER_BYTES = 64 * 1024;

interface ReaderSink {
  /** Takes the message; false: pause writers until it drains. */
  write(msg: Buffer): boolean;
  /** v2 only: the peer (the reader of what this party writes) came or went. */
  presence?(present: boolean): void;
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

  readerOf(key: string): ReaderSink | undefined {
    return this.readers.get(key);
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
const asBuffer = (u8: Uint8Array): Buffer => (Buffer.isBuffer(u8) ? u8 : Buffer.from(u8.buffer, u8.byteOffset, u8.byteLength));

/** A v2 party's two keys: it reads `sid` and writes `sid ^ 1`. */
function v2Keys(sid: Uint8Array): { read: string; write: string } {
  const peer = Buffer.from(sid);
  peer[peer.length - 1] ^= 0x01;
  return { read: keyOf(asBuffer(sid)), write: keyOf(peer) };
}

/** Attaches a v2 reader and tells both sides about presence; returns Welcome's peer_present. */
function attachV2(pipe: Pipe, keys: { read: string; write: string }, reader: ReaderSink): boolean {
  const peer = pipe.readerOf(keys.write);
  pipe.attach(keys.read, reader);
  peer?.presence?.(true);
  return peer !== undefined;
}

function detachV2(pipe: Pipe, keys: { read: string; write: string }, reader: ReaderSink): void {
  if (pipe.readerOf(keys.read) !== reader) return;
  pipe.detach(keys.read, reader);
  pipe.readerOf(keys.write)?.presence?.(false);
}

/** hashmail.v2.Mailbox/Connect: Hello -> Welcome, then Data both ways. */
function grpcV2Connect(pipe: Pipe, call: ServerDuplexStream<ClientFrame | Error, Uint8Array>): void {
  let keys: { read: string; write: string } | null = null;
  let reader: ReaderSink | null = null;
  const resume = (): void => {
    call.resume();
  };
  const gone = (): void => {
    if (keys && reader) detachV2(pipe, keys, reader);
  };
  call.on('data', (frame: ClientFrame | Error) => {
    if (frame instanceof Error || ('hello' in frame) === (keys !== null)) {
      call.emit('error', { code: 3, details: frame instanceof Error ? frame.message : 'hello expected first and once' });
      return;
    }
    if ('hello' in frame) {
      const k = v2Keys(frame.hello.sid);
      keys = k;
      const r: ReaderSink = {
        write: (msg) => call.write(encodeDataFrame(msg)),
        presence: (present) => call.write(present ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent),
      };
      reader = r;
      call.on('drain', () => pipe.wake(k.read));
      // Welcome before any parked Data the attach hands over.
      const peerPresent = pipe.readerOf(k.write) !== undefined;
      call.write(encodeWelcome(PROTOCOL_V2, peerPresent));
      attachV2(pipe, k, r);
      return;
    }
    if (!pipe.deliver(keys!.write, asBuffer(frame.data))) {
      call.pause();
      pipe.waitFor(keys!.write, resume);
    }
  });
  call.on('end', () => {
    gone();
    call.end();
  });
  call.on('cancelled', gone);
  call.on('error', gone);
}

function grpcHandlers(pipe: Pipe): UntypedServiceImplementation {
  return {
    NewCipherBox: (_call: ServerUnaryCall<unknown, CipherInitResp>, cb: sendUnaryData<CipherInitResp>) => cb(null, { success: true }),
    DelCipherBox: (_call: ServerUnaryCall<unknown, object>, cb: sendUnaryData<object>) => cb(null, {}),
    RecvStream: (call: ServerWritableStream<CipherBoxDesc, OutgoingCipherBox>) => {
      const key = keyOf(call.request.streamId);
      const descField = cipherBoxDescField(call.request);
      const reader: ReaderSink = { write: (msg) => call.write({ descField, msg }) };
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

/** /v2/mailbox: one binary message per frame; the same shape as the gRPC handler. */
function wsV2(pipe: Pipe, ws: WebSocket): void {
  let keys: { read: string; write: string } | null = null;
  let reader: ReaderSink | null = null;
  const resume = (): void => ws.resume();
  ws.on('message', (data: Buffer) => {
    let frame: ClientFrame;
    try {
      frame = decodeClientFrame(data);
    } catch {
      ws.close(4003, 'malformed frame');
      return;
    }
    if ('hello' in frame) {
      if (keys) return void ws.close(4003, 'second hello');
      const k = v2Keys(frame.hello.sid);
      keys = k;
      const wake = (): void => pipe.wake(k.read);
      const r: ReaderSink = {
        write: (msg) => {
          const out = encodeDataFrame(msg);
          if (ws.bufferedAmount + out.length <= WS_V2_HIGH_WATER_BYTES) {
            ws.send(out);
            return true;
          }
          ws.send(out, wake);
          return false;
        },
        presence: (present) => ws.send(present ? PRESENCE_FRAMES.present : PRESENCE_FRAMES.absent),
      };
      reader = r;
      ws.send(encodeWelcome(PROTOCOL_V2, pipe.readerOf(k.write) !== undefined));
      attachV2(pipe, k, r);
      return;
    }
    if (!keys) return void ws.close(4003, 'first frame must be hello');
    if (!pipe.deliver(keys.write, asBuffer(frame.data))) {
      ws.pause();
      pipe.waitFor(keys.write, resume);
    }
  });
  ws.on('close', () => {
    if (keys && reader) detachV2(pipe, keys, reader);
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
  grpcServer.addService(mailboxV2ServerService, {
    Connect: (call: ServerDuplexStream<ClientFrame | Error, Uint8Array>) => grpcV2Connect(pipe, call),
  });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', ServerCredentials.createInsecure(), (err, port) => (err ? reject(err) : resolve(port))),
  );

  // Plain `ws` defaults (no permessage-deflate), as a bare gateway would run.
  const wss = new WebSocketServer({ noServer: true });
  // v2 as a lean gateway runs it: no client set, no compression, hashmail.v2 only.
  const wssV2 = new WebSocketServer({
    noServer: true,
    clientTracking: false,
    perMessageDeflate: false,
    handleProtocols: (offered) => (offered.has(V2_SUBPROTOCOL) ? V2_SUBPROTOCOL : false),
  });
  const httpServer = http.createServer({ requestTimeout: 0 }, (_req, res) => res.writeHead(404).end());
  httpServer.on('upgrade', (req, socket, head) => {
    const path = (req.url ?? '').split('?')[0];
    if (path === V2_WS_PATH) {
      wssV2.handleUpgrade(req, socket, head, (ws) => wsV2(pipe, ws));
      return;
    }
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

/** Child-process entry: report ports, answer memory and pause queries, exit with the parent. */
async function main(): Promise<void> {
  const running = await startDirectPipe();
  // What hashmail's prom-client default metrics watch too (10 ms event-loop resolution, GC entries).
  const loop = monitorEventLoopDelay({ resolution: 10 });
  loop.enable();
  let gcMs = 0;
  new PerformanceObserver((list) => {
    for (const entry of list.getEntries()) gcMs += entry.duration;
  }).observe({ entryTypes: ['gc'] });
  process.on('message', (m: { op?: string }) => {
    if (m.op === 'memory') process.send?.({ op: 'memory', ...process.memoryUsage() });
    if (m.op === 'pauses') {
      // Event-loop delay since the last query (then reset, as prom-client does on a scrape); GC time so far.
      process.send?.({ op: 'pauses', gcMs, loopP99Ms: loop.percentile(99) / 1e6, loopMaxMs: loop.max / 1e6 });
      loop.reset();
    }
  });
  process.on('disconnect', () => process.exit(0));
  process.on('SIGTERM', () => {
    running.close();
    process.exit(0);
  });
  process.send?.({ op: 'ready', grpcPort: running.grpcPort, wsPort: running.wsPort });
}

if (process.send && process.argv.includes('--child')) void main();
