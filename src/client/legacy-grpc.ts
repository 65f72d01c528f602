/**
 * A client of the legacy `hashmailrpc.HashMail` gRPC service, shaped like the
 * node side (litd) uses it: create boxes with ALREADY_EXISTS as success, read
 * one SID, write its peer. `hashmail pipe` is built on it and a future client
 * library can reuse it. It never logs: a SID is a bearer capability.
 */
import { once } from 'node:events';
import {
  credentials,
  status,
  Metadata,
  type CallOptions,
  type ChannelCredentials,
  type ChannelOptions,
  type Client,
  type ClientReadableStream,
  type ClientUnaryCall,
  type ClientWritableStream,
  type ServiceError,
} from '@grpc/grpc-js';
import type { CipherBox, CipherBoxAuth, CipherBoxDesc } from '../transport/grpc-v1/codec.js';
import { HashMailClient, type CipherInitResp } from '../transport/grpc-v1/service.js';
import { checkSid, peerSid } from '../session/sid.js';

/** litd pings every 2 minutes; the server must accept that rate, and it keeps NAT mappings of idle pipes alive. */
export const KEEPALIVE_TIME_MS = 120_000;
/** Deadline of NewCipherBox / DelCipherBox; streams have none (they live for hours). */
export const UNARY_DEADLINE_MS = 10_000;
/** Largest message the legacy contract carries (the gRPC default limit). */
export const MAX_MESSAGE_BYTES = 4 * 1024 * 1024;
/** Room for the CipherBox envelope (desc + tags) around a maximal message. */
const ENVELOPE_BYTES = 1024;

/**
 * How the channel is secured:
 * - `insecure`: plain-text HTTP/2 (h2c);
 * - `tls-skip-verify`: TLS, accepting any certificate and name (self-signed test servers);
 * - `tls`: TLS verified against the system roots.
 */
export type TransportSecurity = 'insecure' | 'tls-skip-verify' | 'tls';

export function channelCredentials(security: TransportSecurity): ChannelCredentials {
  switch (security) {
    case 'insecure':
      return credentials.createInsecure();
    case 'tls-skip-verify':
      // rejectUnauthorized covers the chain; checkServerIdentity covers the name. Both are needed.
      return credentials.createSsl(null, null, null, {
        rejectUnauthorized: false,
        checkServerIdentity: () => undefined,
      });
    case 'tls':
      return credentials.createSsl();
  }
}

/** True for a gRPC status error (as opposed to a local failure). */
export function isServiceError(err: unknown): err is ServiceError {
  return err instanceof Error && typeof (err as Partial<ServiceError>).code === 'number' && 'details' in err;
}

/** The server's text of a failure, as deployed clients match it ("stream not found", ...). */
export function errorText(err: unknown): string {
  // grpc-js appends an empty "Resolution note" to connection failures.
  if (isServiceError(err)) return (err.details || err.message).replace(/\.? Resolution note: *$/, '');
  return err instanceof Error ? err.message : String(err);
}

// The generic client's methods are untyped; this is the one place that says what they take.
type UnaryCallback<Res> = (err: ServiceError | null, res?: Res) => void;
interface HashMailStub {
  newCipherBox(req: CipherBoxAuth, md: Metadata, opts: CallOptions, cb: UnaryCallback<CipherInitResp>): ClientUnaryCall;
  delCipherBox(req: CipherBoxAuth, md: Metadata, opts: CallOptions, cb: UnaryCallback<Record<string, never>>): ClientUnaryCall;
  sendStream(md: Metadata, opts: CallOptions, cb: UnaryCallback<CipherBoxDesc>): ClientWritableStream<CipherBox>;
  recvStream(req: CipherBoxDesc, md: Metadata, opts: CallOptions): ClientReadableStream<CipherBox>;
}

export interface LegacyClientOptions {
  /** `host:port` (or `[v6]:port`). */
  address: string;
  security: TransportSecurity;
  /** Credentials to use instead of those of `security` (the library's `ca` / `certificateSha256`). */
  credentials?: ChannelCredentials;
  /** Extra grpc-js channel options, merged over ours. */
  channelOptions?: ChannelOptions;
}

export class LegacyHashMailClient {
  private readonly stub: Client & HashMailStub;

  constructor(options: LegacyClientOptions) {
    const channelOptions: ChannelOptions = {
      'grpc.keepalive_time_ms': KEEPALIVE_TIME_MS,
      'grpc.max_receive_message_length': MAX_MESSAGE_BYTES + ENVELOPE_BYTES,
      ...options.channelOptions,
    };
    const client = new HashMailClient(options.address, options.credentials ?? channelCredentials(options.security), channelOptions);
    this.stub = client as unknown as Client & HashMailStub;
  }

  /** NewCipherBox with lnd_auth. Resolves 'exists' on ALREADY_EXISTS (by code, as litd does). */
  createBox(sid: Uint8Array): Promise<'created' | 'exists'> {
    const req: CipherBoxAuth = { desc: { streamId: checkSid(sid) }, hasAuth: true };
    return new Promise((resolve, reject) => {
      this.stub.newCipherBox(req, new Metadata(), unaryOptions(), (err) => {
        if (!err) resolve('created');
        else if (err.code === status.ALREADY_EXISTS) resolve('exists');
        else reject(err);
      });
    });
  }

  /** Creates both boxes of the pair: `sid` and `sid ^ 1`. */
  async createBoxes(sid: Uint8Array): Promise<void> {
    await Promise.all([this.createBox(sid), this.createBox(peerSid(sid))]);
  }

  /** DelCipherBox with lnd_auth; "stream not found" rejects. */
  deleteBox(sid: Uint8Array): Promise<void> {
    const req: CipherBoxAuth = { desc: { streamId: checkSid(sid) }, hasAuth: true };
    return new Promise((resolve, reject) => {
      this.stub.delCipherBox(req, new Metadata(), unaryOptions(), (err) => (err ? reject(err) : resolve()));
    });
  }

  /** RecvStream on `sid`: the messages written to that box, in order. */
  openReceive(sid: Uint8Array): LegacyReceiveStream {
    const call = this.stub.recvStream({ streamId: checkSid(sid) }, new Metadata(), {});
    return new LegacyReceiveStream(call);
  }

  /** SendStream writing to `sid` (the box the peer reads). */
  openSend(sid: Uint8Array): LegacySendStream {
    const desc: CipherBoxDesc = { streamId: checkSid(sid) };
    return new LegacySendStream(desc, (cb) => this.stub.sendStream(new Metadata(), {}, cb));
  }

  close(): void {
    this.stub.close();
  }
}

function unaryOptions(): CallOptions {
  return { deadline: Date.now() + UNARY_DEADLINE_MS };
}

/**
 * A RecvStream. Iterating yields each message; iteration ends when the server
 * ends the stream with OK and throws its ServiceError otherwise. The consumer
 * pulling slowly holds the server back through HTTP/2 flow control.
 */
export class LegacyReceiveStream implements AsyncIterable<Buffer> {
  private cancelled = false;

  constructor(private readonly call: ClientReadableStream<CipherBox>) {}

  async *[Symbol.asyncIterator](): AsyncIterator<Buffer> {
    try {
      for await (const box of this.call as AsyncIterable<CipherBox>) yield box.msg;
    } catch (err) {
      // Our own cancel is a normal end, not a failure to report.
      if (this.cancelled) return;
      throw err;
    }
  }

  cancel(): void {
    this.cancelled = true;
    this.call.cancel();
  }
}

/**
 * A SendStream. `write` resolves once the message is accepted (waiting out
 * backpressure) and rejects once the call has failed; `done` settles with the
 * call's status. Call `end()` to half-close, `cancel()` to abandon.
 */
export class LegacySendStream {
  /** Resolves on OK (or our own cancel), rejects with the ServiceError. */
  readonly done: Promise<void>;
  private readonly call: ClientWritableStream<CipherBox>;
  private failure: ServiceError | null = null;
  private halfClosed = false;
  private cancelled = false;
  private readonly failed: Promise<never>;

  constructor(
    private readonly desc: CipherBoxDesc,
    start: (cb: UnaryCallback<CipherBoxDesc>) => ClientWritableStream<CipherBox>,
  ) {
    let rejectFailed: (err: ServiceError) => void = () => undefined;
    this.failed = new Promise<never>((_, reject) => {
      rejectFailed = reject;
    });
    this.failed.catch(() => undefined);
    let settle: (err: ServiceError | null) => void = () => undefined;
    this.done = new Promise<void>((resolve, reject) => {
      settle = (err) => {
        if (!err || this.cancelled) return resolve();
        // The reference server answers a half-close with UNKNOWN "EOF" instead of OK.
        if (this.halfClosed && err.code === status.UNKNOWN && err.details === 'EOF') return resolve();
        this.failure = err;
        rejectFailed(err);
        reject(err);
      };
    });
    this.call = start((err) => settle(err));
    this.done.catch(() => undefined);
  }

  get isHalfClosed(): boolean {
    return this.halfClosed;
  }

  /**
   * Every message carries the desc, as litd sends it: the server reads the
   * first one and ignores the rest.
   */
  async write(msg: Buffer): Promise<void> {
    if (this.failure) throw this.failure;
    if (this.halfClosed || this.cancelled) throw new Error('send stream already closed');
    if (this.call.write({ desc: this.desc, msg })) return;
    const stop = new AbortController();
    try {
      await Promise.race([once(this.call, 'drain', { signal: stop.signal }), this.failed]);
    } finally {
      stop.abort();
    }
  }

  /** Half-close: no more messages; the server may still answer. */
  end(): void {
    if (this.halfClosed || this.cancelled) return;
    this.halfClosed = true;
    this.call.end();
  }

  cancel(): void {
    if (this.cancelled) return;
    this.cancelled = true;
    this.call.cancel();
  }
}
