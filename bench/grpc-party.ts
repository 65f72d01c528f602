/**
 * Lean gRPC halves of a legacy party (hashmailrpc.HashMail over h2c): no
 * promise or timer per message, so the client adds as little as it can to
 * what is measured. Built on the project's own service definition and codec.
 */
import * as grpc from '@grpc/grpc-js';
import type { CipherBox, CipherBoxAuth, CipherBoxDesc } from '../src/transport/grpc-v1/codec.js';
import { HashMailClient, type CipherInitResp } from '../src/transport/grpc-v1/service.js';

/** litd pings the mailbox every 2 minutes (spec section 1). */
const LITD_KEEPALIVE_TIME_MS = 120_000;

/** The generic grpc-js client, typed for the calls the bench makes. */
export interface HashMailStub extends grpc.Client {
  newCipherBox(req: CipherBoxAuth, options: grpc.CallOptions, cb: grpc.requestCallback<CipherInitResp>): grpc.ClientUnaryCall;
  sendStream(options: grpc.CallOptions, cb: grpc.requestCallback<CipherBoxDesc>): grpc.ClientWritableStream<CipherBox>;
  recvStream(req: CipherBoxDesc, options: grpc.CallOptions): grpc.ClientReadableStream<CipherBox>;
}

/** Where a half reports what it received and why it failed. */
export interface Sink {
  message(msg: Buffer): void;
  fail(reason: string): void;
}

export interface Inlet {
  close(): void;
}

export interface Outlet {
  /** Writes one message; false: wait for drain() before writing more. */
  write(msg: Buffer): boolean;
  drain(): Promise<void>;
  close(): void;
}

/**
 * One HTTP/2 connection of its own (a local subchannel pool), as one litd or
 * one mobile app holds; several sessions may share a stub to share it.
 */
export function dialGrpc(address: string): HashMailStub {
  return new HashMailClient(address, grpc.credentials.createInsecure(), {
    'grpc.keepalive_time_ms': LITD_KEEPALIVE_TIME_MS,
    'grpc.keepalive_permit_without_calls': 1,
    'grpc.use_local_subchannel_pool': 1,
    'grpc.enable_channelz': 0,
    'grpc.max_receive_message_length': -1,
  }) as unknown as HashMailStub;
}

/** NewCipherBox as litd calls it; ALREADY_EXISTS (by code) counts as success. */
export function createBox(stub: HashMailStub, sid: Buffer, timeoutMs: number): Promise<void> {
  return new Promise((resolve, reject) => {
    stub.newCipherBox({ desc: { streamId: sid }, hasAuth: true }, { deadline: Date.now() + timeoutMs }, (err, res) => {
      if (err && err.code !== grpc.status.ALREADY_EXISTS) reject(new Error(`NewCipherBox: ${err.code} ${err.details}`));
      else if (!err && !res?.success) reject(new Error('NewCipherBox answered without success'));
      else resolve();
    });
  });
}

/** RecvStream(sid). */
export class GrpcInlet implements Inlet {
  private readonly call: grpc.ClientReadableStream<CipherBox>;
  private closing = false;

  constructor(stub: HashMailStub, sid: Buffer, sink: Sink) {
    this.call = stub.recvStream({ streamId: sid }, {});
    this.call.on('data', (box: CipherBox) => sink.message(box.msg));
    this.call.on('error', (err: grpc.ServiceError) => {
      if (!this.closing) sink.fail(`RecvStream: ${err.code} ${err.details}`);
    });
    this.call.on('end', () => {
      if (!this.closing) sink.fail('RecvStream ended');
    });
  }

  close(): void {
    this.closing = true;
    this.call.cancel();
  }
}

/** SendStream writing to `sid`; every message names the box, as LNC clients do. */
export class GrpcOutlet implements Outlet {
  private readonly call: grpc.ClientWritableStream<CipherBox>;
  private readonly desc: CipherBoxDesc;
  private closing = false;

  constructor(stub: HashMailStub, sid: Buffer, sink: Sink) {
    this.desc = { streamId: sid };
    this.call = stub.sendStream({}, (err) => {
      if (!this.closing) sink.fail(err ? `SendStream: ${err.code} ${err.details}` : 'SendStream ended');
    });
    this.call.on('error', () => undefined);
  }

  write(msg: Buffer): boolean {
    return this.call.write({ desc: this.desc, msg });
  }

  drain(): Promise<void> {
    return new Promise((resolve) => this.call.once('drain', () => resolve()));
  }

  close(): void {
    this.closing = true;
    this.call.cancel();
  }
}
