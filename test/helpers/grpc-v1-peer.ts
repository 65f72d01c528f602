/**
 * A minimal legacy gRPC peer for the gateway tests: create/delete boxes, a
 * SendStream writer and a RecvStream reader whose messages are pulled with a
 * deadline. Built on the server's own service definition and codec.
 */
import { credentials, status, type ChannelOptions, type ClientReadableStream, type ClientWritableStream, type ServiceError } from '@grpc/grpc-js';
import { HashMailClient } from '../../src/transport/grpc-v1/service.js';
import type { CipherBox, CipherBoxAuth, CipherBoxDesc } from '../../src/transport/grpc-v1/codec.js';
import { AsyncQueue, DEFAULT_WAIT_MS } from './async-queue.js';

type Callback<T> = (err: ServiceError | null, value?: T) => void;

/** The generic client's methods, typed for what tests call. */
export interface LegacyClient {
  newCipherBox(req: CipherBoxAuth, cb: Callback<{ success: boolean }>): unknown;
  delCipherBox(req: CipherBoxAuth, cb: Callback<Record<string, never>>): unknown;
  sendStream(cb: Callback<CipherBoxDesc>): ClientWritableStream<CipherBox>;
  recvStream(req: CipherBoxDesc): ClientReadableStream<CipherBox>;
  close(): void;
}

export function connectGrpc(address: string, options: ChannelOptions = {}): LegacyClient {
  return new HashMailClient(address, credentials.createInsecure(), {
    'grpc.max_receive_message_length': -1,
    'grpc.max_send_message_length': -1,
    ...options,
  }) as unknown as LegacyClient;
}

export function createBox(client: LegacyClient, sid: Buffer): Promise<{ success: boolean }> {
  return new Promise((resolve, reject) =>
    client.newCipherBox({ desc: { streamId: sid }, hasAuth: true }, (err, res) => (err ? reject(err) : resolve(res!))),
  );
}

/** As litd does: NewCipherBox, ALREADY_EXISTS (by code) counts as success. */
export async function ensureBox(client: LegacyClient, sid: Buffer): Promise<void> {
  try {
    await createBox(client, sid);
  } catch (err) {
    if ((err as ServiceError).code !== status.ALREADY_EXISTS) throw err;
  }
}

export function deleteBox(client: LegacyClient, sid: Buffer): Promise<void> {
  return new Promise((resolve, reject) =>
    client.delCipherBox({ desc: { streamId: sid }, hasAuth: true }, (err) => (err ? reject(err) : resolve())),
  );
}

export class GrpcSender {
  readonly call: ClientWritableStream<CipherBox>;
  /** Settles when the call ends: the server's answer or its error. */
  readonly done: Promise<ServiceError | null>;

  constructor(client: LegacyClient) {
    let settle!: (e: ServiceError | null) => void;
    this.done = new Promise((r) => (settle = r));
    this.call = client.sendStream((err) => settle(err));
    this.call.on('error', () => undefined);
  }

  /** Writes one message, resolving once grpc-js accepted it (flow control). */
  write(sid: Buffer, msg: Buffer): Promise<void> {
    return new Promise((resolve) => {
      this.call.write({ desc: { streamId: sid }, msg }, () => resolve());
    });
  }

  end(): void {
    this.call.end();
  }

  cancel(): void {
    this.call.cancel();
  }
}

export type RecvEvent = { kind: 'msg'; box: CipherBox } | { kind: 'end'; error: ServiceError | null };

export class GrpcReader {
  readonly call: ClientReadableStream<CipherBox>;
  readonly events = new AsyncQueue<RecvEvent>();

  constructor(client: LegacyClient, sid: Buffer) {
    this.call = client.recvStream({ streamId: sid });
    this.call.on('data', (box: CipherBox) => this.events.push({ kind: 'msg', box }));
    this.call.on('error', (error: ServiceError) => this.events.end({ kind: 'end', error }));
    this.call.on('end', () => this.events.end({ kind: 'end', error: null }));
  }

  /** The next message; throws if the stream ends first (with its status). */
  async next(timeoutMs = DEFAULT_WAIT_MS): Promise<Buffer> {
    const ev = await this.events.next(timeoutMs, 'RecvStream message');
    if (ev.kind === 'end') throw ev.error ?? new Error('RecvStream ended');
    return ev.box.msg;
  }

  /** The status the stream ends with (null: OK). */
  async end(timeoutMs = DEFAULT_WAIT_MS): Promise<ServiceError | null> {
    for (let i = 0; i < 10_000; i++) {
      const ev = await this.events.next(timeoutMs, 'RecvStream end');
      if (ev.kind === 'end') return ev.error;
    }
    throw new Error('RecvStream kept delivering');
  }

  cancel(): void {
    this.call.cancel();
  }
}
