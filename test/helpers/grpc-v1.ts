/**
 * Typed helpers around the legacy HashMail gRPC client for integration tests:
 * connect like litd does, create and delete boxes, read a RecvStream one
 * message at a time and write a SendStream with backpressure. Every wait is
 * bounded (WAIT_MS), so a test that goes wrong fails with a message instead
 * of hanging, and every call a client opened is cancelled when it closes.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import type { CipherBox, CipherBoxAuth, CipherBoxDesc } from '../../src/transport/grpc-v1/codec.js';
import { HashMailClient, type CipherInitResp } from '../../src/transport/grpc-v1/service.js';

export const SID_BYTES = 64;
/** litd pings the mailbox every 2 minutes (spec section 1). */
export const LITD_KEEPALIVE_TIME_MS = 120_000;
/** Upper bound for any single awaited event in a test. */
export const WAIT_MS = 10_000;

/** A fresh random SID (the server never sees how a real one is derived). */
export function randomSid(): Buffer {
  return randomBytes(SID_BYTES);
}

/** The other SID of the pair: the peer reading `sid` writes to `sid ^ 1` (byte 63, bit 0). */
export function peerSid(sid: Buffer): Buffer {
  const peer = Buffer.from(sid);
  peer[63] ^= 0x01;
  return peer;
}

/** The request litd sends to create or delete a box. */
export function boxAuth(sid: Buffer): CipherBoxAuth {
  return { desc: { streamId: sid }, hasAuth: true };
}

/** A grpc-js status error: code, details and the status metadata. */
export type StatusError = grpc.ServiceError;

function isStatusError(err: unknown): err is StatusError {
  return err instanceof Error && typeof (err as Partial<StatusError>).code === 'number';
}

/** A StatusError for a stream that ended OK where the test expected a message. */
function endedOk(what: string): StatusError {
  return Object.assign(new Error(`${what} ended with OK`), {
    code: grpc.status.OK,
    details: 'OK',
    metadata: new grpc.Metadata(),
  });
}

function withTimeout<T>(p: Promise<T>, timeoutMs: number, what: string): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${what}: nothing within ${timeoutMs} ms`)), timeoutMs);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (err: unknown) => {
        clearTimeout(timer);
        reject(err instanceof Error ? err : new Error(String(err)));
      },
    );
  });
}

/** The raw generic client, typed for the four methods we call. */
interface RawHashMail extends grpc.Client {
  newCipherBox(req: CipherBoxAuth, options: grpc.CallOptions, cb: grpc.requestCallback<CipherInitResp>): grpc.ClientUnaryCall;
  delCipherBox(req: CipherBoxAuth, options: grpc.CallOptions, cb: grpc.requestCallback<Record<string, never>>): grpc.ClientUnaryCall;
  sendStream(options: grpc.CallOptions, cb: grpc.requestCallback<CipherBoxDesc>): grpc.ClientWritableStream<CipherBox>;
  recvStream(req: CipherBoxDesc, options: grpc.CallOptions): grpc.ClientReadableStream<CipherBox>;
}

export interface ConnectOptions {
  /** Client keepalive ping interval; litd's 2 minutes by default. */
  keepaliveTimeMs?: number;
  /** PEM CA to verify a TLS server (e.g. its generated `tls.cert`); plain text (h2c) without it. */
  tlsCa?: Buffer;
  /** Extra channel options, merged last. */
  channelOptions?: grpc.ChannelOptions;
}

/** One connection (channel) to the server, as litd or a non-browser app holds it. */
export class V1Client {
  readonly raw: RawHashMail;
  private readonly calls = new Set<{ cancel(): void }>();

  constructor(address: string, options: ConnectOptions = {}) {
    const channelOptions: grpc.ChannelOptions = {
      'grpc.keepalive_time_ms': options.keepaliveTimeMs ?? LITD_KEEPALIVE_TIME_MS,
      'grpc.keepalive_permit_without_calls': 1,
      // Each V1Client is its own connection: tests about slots and keepalive need that.
      'grpc.use_local_subchannel_pool': 1,
      ...options.channelOptions,
    };
    const credentials = options.tlsCa ? grpc.credentials.createSsl(options.tlsCa) : grpc.credentials.createInsecure();
    this.raw = new HashMailClient(address, credentials, channelOptions) as unknown as RawHashMail;
  }

  /** Raw NewCipherBox; rejects with the StatusError. */
  newCipherBox(req: CipherBoxAuth): Promise<CipherInitResp> {
    return new Promise((resolve, reject) => {
      this.raw.newCipherBox(req, { deadline: Date.now() + WAIT_MS }, (err, res) => (err ? reject(err) : resolve(res!)));
    });
  }

  /** Raw DelCipherBox; rejects with the StatusError. */
  delCipherBox(req: CipherBoxAuth): Promise<void> {
    return new Promise((resolve, reject) => {
      this.raw.delCipherBox(req, { deadline: Date.now() + WAIT_MS }, (err) => (err ? reject(err) : resolve()));
    });
  }

  /** Creates the box for `sid` as litd does; asserts the `success` answer. */
  async createBox(sid: Buffer): Promise<void> {
    const res = await this.newCipherBox(boxAuth(sid));
    assert.equal(res.success, true, 'NewCipherBox answered without `success`');
  }

  /** NewCipherBox as litd does it: ALREADY_EXISTS (by code) counts as success. */
  async ensureBox(sid: Buffer): Promise<void> {
    try {
      await this.createBox(sid);
    } catch (err) {
      if ((err as grpc.ServiceError).code !== grpc.status.ALREADY_EXISTS) throw err;
    }
  }

  delBox(sid: Buffer): Promise<void> {
    return this.delCipherBox(boxAuth(sid));
  }

  /** RecvStream on `sid` (a Buffer) or on a raw descriptor. */
  openReader(target: Buffer | CipherBoxDesc): Reader {
    const desc = Buffer.isBuffer(target) ? { streamId: target } : target;
    const reader = new Reader(this.raw.recvStream(desc, {}));
    this.track(reader);
    return reader;
  }

  /** SendStream; with a `sid`, every message names the box in its `desc`, as LNC clients do. */
  openWriter(sid: Buffer | null): Writer {
    const writer = new Writer(this.raw, sid);
    this.track(writer);
    return writer;
  }

  /** Cancels every call still open on this client, then closes the channel. */
  close(): void {
    for (const call of this.calls) call.cancel();
    this.calls.clear();
    this.raw.close();
  }

  private track(call: Reader | Writer): void {
    this.calls.add(call);
    void call.status.then(() => this.calls.delete(call));
  }
}

/** Connects (plain text unless `tlsCa` is given) with litd-like keepalive. */
export function connect(address: string, options?: ConnectOptions): V1Client {
  return new V1Client(address, options);
}

/** A RecvStream read one message at a time. */
export class Reader {
  /** Final status of the call, OK or not; never rejects. */
  readonly status: Promise<grpc.StatusObject>;
  private readonly items: CipherBox[] = [];
  private waiter: (() => void) | null = null;
  private statusError: StatusError | null = null;
  private drained = false;

  constructor(readonly call: grpc.ClientReadableStream<CipherBox>) {
    call.on('data', (box: CipherBox) => {
      this.items.push(box);
      this.wake();
    });
    // grpc-js emits 'error' for every non-OK status; 'status' covers OK too.
    call.on('error', () => undefined);
    // grpc-js reports the status while messages may still sit in the stream's
    // buffer; they come as 'data' before 'end', so the status counts only then.
    const onDrained = (): void => {
      this.drained = true;
      this.wake();
    };
    call.on('end', onDrained);
    call.on('close', onDrained);
    this.status = new Promise((resolve) => {
      call.on('status', (status: grpc.StatusObject) => {
        this.statusError =
          status.code === grpc.status.OK
            ? endedOk('RecvStream')
            : Object.assign(new Error(`${status.code} ${grpc.status[status.code]}: ${status.details}`), status);
        this.wake();
        resolve(status);
      });
    });
  }

  private get final(): StatusError | null {
    if (!this.statusError) return null;
    return this.drained || this.call.readableLength === 0 ? this.statusError : null;
  }

  /** The next CipherBox, or throws the call's status error (code OK if it ended cleanly). */
  async nextBox(timeoutMs = WAIT_MS): Promise<CipherBox> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const box = this.items.shift();
      if (box) return box;
      if (this.final) throw this.final;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`RecvStream: no message within ${timeoutMs} ms`);
      await withTimeout(
        new Promise<void>((resolve) => {
          this.waiter = resolve;
        }),
        left,
        'RecvStream',
      );
    }
  }

  /** The next message's payload, or throws the call's status error. */
  async next(timeoutMs = WAIT_MS): Promise<Buffer> {
    return (await this.nextBox(timeoutMs)).msg;
  }

  /** Messages received but not yet taken by next(). */
  get buffered(): number {
    return this.items.length;
  }

  /** The final status, within `timeoutMs`. */
  ended(timeoutMs = WAIT_MS): Promise<grpc.StatusObject> {
    return withTimeout(this.status, timeoutMs, 'RecvStream status');
  }

  cancel(): void {
    this.call.cancel();
  }

  private wake(): void {
    const w = this.waiter;
    this.waiter = null;
    w?.();
  }
}

/** A SendStream whose writes resolve once grpc-js has handed them to HTTP/2 (flow control). */
export class Writer {
  readonly call: grpc.ClientWritableStream<CipherBox>;
  /** The SendStream answer; rejects with the StatusError. */
  readonly result: Promise<CipherBoxDesc>;
  /** Final status of the call, OK or not; never rejects. */
  readonly status: Promise<grpc.StatusObject>;
  private settled: StatusError | null = null;

  constructor(
    raw: RawHashMail,
    private readonly sid: Buffer | null,
  ) {
    let resolveResult!: (v: CipherBoxDesc) => void;
    let rejectResult!: (e: StatusError) => void;
    this.result = new Promise((resolve, reject) => {
      resolveResult = resolve;
      rejectResult = reject;
    });
    // Tests that only look at `status` must not leave an unhandled rejection behind.
    this.result.catch(() => undefined);
    this.call = raw.sendStream({}, (err, res) => {
      if (err) {
        this.settled = err;
        rejectResult(err);
      } else {
        this.settled = endedOk('SendStream');
        resolveResult(res!);
      }
    });
    this.call.on('error', () => undefined);
    this.status = new Promise((resolve) => this.call.on('status', resolve));
  }

  /** Writes `msg` (with `desc` naming the box if the writer has a sid). */
  write(msg: Buffer, timeoutMs = WAIT_MS): Promise<void> {
    return this.writeBox({ desc: this.sid ? { streamId: this.sid } : null, msg }, timeoutMs);
  }

  /** Writes one raw CipherBox; rejects with the call's status error if it ends first. */
  writeBox(box: CipherBox, timeoutMs = WAIT_MS): Promise<void> {
    if (this.settled) return Promise.reject(this.settled);
    const written = new Promise<void>((resolve, reject) => {
      this.call.write(box, (err: Error | null | undefined) => (err ? reject(err) : resolve()));
    });
    const ended = this.status.then(() => {
      throw this.settled ?? endedOk('SendStream');
    });
    return withTimeout(Promise.race([written, ended]), timeoutMs, 'SendStream write');
  }

  /** Writes each message in turn, awaiting backpressure between them. */
  async writeAll(msgs: Buffer[], timeoutMs = WAIT_MS): Promise<void> {
    for (const msg of msgs) await this.write(msg, timeoutMs);
  }

  /** Half-closes and awaits the answer (rejects with the StatusError). */
  end(timeoutMs = WAIT_MS): Promise<CipherBoxDesc> {
    this.call.end();
    return withTimeout(this.result, timeoutMs, 'SendStream answer');
  }

  /** The final status, within `timeoutMs`. */
  ended(timeoutMs = WAIT_MS): Promise<grpc.StatusObject> {
    return withTimeout(this.status, timeoutMs, 'SendStream status');
  }

  cancel(): void {
    this.call.cancel();
  }
}

export interface ExpectedStatus {
  /** The code, or every code allowed (the legacy UNKNOWN or our precise one, spec section 3). */
  code: grpc.status | readonly grpc.status[];
  /** Exact text (string) or a pattern it must match. */
  details?: string | RegExp;
}

/** Asserts a status (from `ended()`, or a caught error) has the expected code and details. */
export function assertStatus(actual: { code: number; details: string }, expected: ExpectedStatus, what = 'call'): void {
  const codes: readonly grpc.status[] = typeof expected.code === 'number' ? [expected.code] : expected.code;
  assert.ok(
    codes.includes(actual.code),
    `${what}: expected code ${codes.map((c) => `${c} (${grpc.status[c]})`).join(' or ')}, got ${actual.code} (${grpc.status[actual.code]}) "${actual.details}"`,
  );
  if (typeof expected.details === 'string') assert.equal(actual.details, expected.details, `${what}: details`);
  else if (expected.details) assert.match(actual.details, expected.details, `${what}: details`);
}

/** Awaits `p`, which must reject with a gRPC status error of the expected code and details. */
export async function expectStatusError(p: Promise<unknown>, expected: ExpectedStatus, what = 'call'): Promise<StatusError> {
  let value: unknown;
  try {
    value = await p;
  } catch (err) {
    assert.ok(isStatusError(err), `${what}: rejected with a non-gRPC error: ${String(err)}`);
    assertStatus(err, expected, what);
    return err;
  }
  assert.fail(`${what}: expected "${String(expected.details ?? expected.code)}", got success ${JSON.stringify(value)}`);
}

/**
 * Calls `probe` until it returns true: at most `attempts` times, `intervalMs`
 * apart, and within `deadlineMs`. For state only observable by asking.
 */
export async function pollUntil(
  probe: () => Promise<boolean>,
  what: string,
  { attempts = 200, intervalMs = 50, deadlineMs = WAIT_MS }: { attempts?: number; intervalMs?: number; deadlineMs?: number } = {},
): Promise<void> {
  const deadline = Date.now() + deadlineMs;
  for (let i = 0; i < attempts && Date.now() < deadline; i++) {
    if (await probe()) return;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
  throw new Error(`${what}: not reached within ${attempts} polls / ${deadlineMs} ms`);
}

/** Deterministic payload of `length` bytes, distinct per `seed`, so a mix-up shows. */
export function payload(length: number, seed: number): Buffer {
  const out = Buffer.allocUnsafe(length);
  for (let i = 0; i < length; i++) out[i] = (i * 131 + seed * 7 + 1) & 0xff;
  if (length >= 4) out.writeUInt32BE(seed >>> 0, 0);
  return out;
}
