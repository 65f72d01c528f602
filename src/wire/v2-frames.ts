/**
 * Protobuf codec for the v2 frames (proto/hashmail/v2/mailbox.proto), on
 * plain Uint8Array so the same code runs in the relay and in browsers. A
 * decoded payload is a view into the received bytes; an encoded data frame
 * is one allocation and one copy.
 */

export const PROTOCOL_V2 = 2;

export enum Attach {
  /** Create the session if it does not exist, then wait for the peer. */
  Create = 0,
  /** Fail with "stream not found" unless the session exists. */
  Existing = 1,
}

export interface Hello {
  minVersion: number;
  maxVersion: number;
  sid: Uint8Array;
  attach: Attach;
}

export type ClientFrame = { hello: Hello } | { data: Uint8Array };

export interface FrameError {
  code: number;
  message: string;
  supportedVersions: number[];
  /** Another relay owns the session: its `HOST:PORT` (field 4); absent otherwise. */
  relayAddress?: string;
}

export interface Welcome {
  version: number;
  peerPresent: boolean;
  /** The relay's largest payload (bytes); 0 when it did not say (older relays). */
  maxMessageBytes: number;
}

export type ServerFrame =
  | { welcome: Welcome }
  | { data: Uint8Array }
  | { presence: { peerPresent: boolean } }
  | { error: FrameError };

export class FrameDecodeError extends Error {
  override name = 'FrameDecodeError';
}

const EMPTY: Uint8Array = new Uint8Array(0);
const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const MAX_VARINT_BYTES = 10;

// ---- reading ----

interface Cursor {
  buf: Uint8Array;
  pos: number;
}

function readVarint(c: Cursor): number {
  let result = 0;
  for (let i = 0, shift = 0; i < MAX_VARINT_BYTES; i++, shift += 7) {
    if (c.pos >= c.buf.length) throw new FrameDecodeError('truncated varint');
    const byte = c.buf[c.pos++];
    if (shift < 53) result += (byte & 0x7f) * 2 ** shift;
    if ((byte & 0x80) === 0) return result;
  }
  throw new FrameDecodeError('varint too long');
}

function readBytes(c: Cursor): Uint8Array {
  const len = readVarint(c);
  const end = c.pos + len;
  if (end > c.buf.length) throw new FrameDecodeError('length past end of frame');
  const out = c.buf.subarray(c.pos, end);
  c.pos = end;
  return out;
}

function skip(c: Cursor, wireType: number): void {
  const advance = (n: number): void => {
    if (c.pos + n > c.buf.length) throw new FrameDecodeError('truncated field');
    c.pos += n;
  };
  if (wireType === WIRE_VARINT) readVarint(c);
  else if (wireType === WIRE_LEN) readBytes(c);
  else if (wireType === WIRE_FIXED64) advance(8);
  else if (wireType === WIRE_FIXED32) advance(4);
  else throw new FrameDecodeError(`unsupported wire type ${wireType}`);
}

/** Calls `field(number, wireType, cursor)` for each field; it must consume the value or return false to skip it. */
function eachField(buf: Uint8Array, field: (n: number, wireType: number, c: Cursor) => boolean): void {
  const c: Cursor = { buf, pos: 0 };
  while (c.pos < buf.length) {
    const tag = readVarint(c);
    const n = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (n === 0) throw new FrameDecodeError('field number 0');
    if (!field(n, wireType, c)) skip(c, wireType);
  }
}

function expectLen(wireType: number, what: string): void {
  if (wireType !== WIRE_LEN) throw new FrameDecodeError(`${what}: wrong wire type`);
}

function expectVarint(wireType: number, what: string): void {
  if (wireType !== WIRE_VARINT) throw new FrameDecodeError(`${what}: wrong wire type`);
}

function decodeData(buf: Uint8Array): Uint8Array {
  let payload = EMPTY;
  eachField(buf, (n, wt, c) => {
    if (n !== 1) return false;
    expectLen(wt, 'Data.payload');
    payload = readBytes(c);
    return true;
  });
  return payload;
}

function decodeHello(buf: Uint8Array): Hello {
  const hello: Hello = { minVersion: 0, maxVersion: 0, sid: EMPTY, attach: Attach.Create };
  eachField(buf, (n, wt, c) => {
    switch (n) {
      case 1:
        expectVarint(wt, 'Hello.min_version');
        hello.minVersion = readVarint(c);
        return true;
      case 2:
        expectVarint(wt, 'Hello.max_version');
        hello.maxVersion = readVarint(c);
        return true;
      case 3:
        expectLen(wt, 'Hello.sid');
        hello.sid = readBytes(c);
        return true;
      case 4:
        expectVarint(wt, 'Hello.attach');
        hello.attach = readVarint(c) === Attach.Existing ? Attach.Existing : Attach.Create;
        return true;
      default:
        return false;
    }
  });
  return hello;
}

/**
 * The per-message path: a canonical data frame (`12 <len> [0a <len> payload]`,
 * as every encoder writes it) is read without the general parser's
 * allocations. Anything else, or anything odd, goes the general way.
 */
function fastDataPayload(buf: Uint8Array): Uint8Array | null {
  if (buf[0] !== 0x12) return null;
  const outer: Cursor = { buf, pos: 1 };
  const innerLen = readVarint(outer);
  if (outer.pos + innerLen !== buf.length) return null;
  if (innerLen === 0) return EMPTY;
  if (buf[outer.pos] !== 0x0a) return null;
  outer.pos++;
  const payloadLen = readVarint(outer);
  return outer.pos + payloadLen === buf.length ? buf.subarray(outer.pos) : null;
}

export function decodeClientFrame(buf: Uint8Array): ClientFrame {
  const payload = fastDataPayload(buf);
  if (payload) return { data: payload };
  let frame: ClientFrame | null = null;
  eachField(buf, (n, wt, c) => {
    if (n === 1) {
      expectLen(wt, 'ClientFrame.hello');
      frame = { hello: decodeHello(readBytes(c)) };
      return true;
    }
    if (n === 2) {
      expectLen(wt, 'ClientFrame.data');
      frame = { data: decodeData(readBytes(c)) };
      return true;
    }
    return false;
  });
  if (!frame) throw new FrameDecodeError('empty frame');
  return frame;
}

function decodeBool(c: Cursor, wt: number, what: string): boolean {
  expectVarint(wt, what);
  return readVarint(c) !== 0;
}

const utf8Decoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

function decodeError(buf: Uint8Array): FrameError {
  const err: FrameError = { code: 0, message: '', supportedVersions: [] };
  eachField(buf, (n, wt, c) => {
    if (n === 1) {
      expectVarint(wt, 'Error.code');
      err.code = readVarint(c);
      return true;
    }
    if (n === 2) {
      expectLen(wt, 'Error.message');
      err.message = utf8Decoder.decode(readBytes(c));
      return true;
    }
    if (n === 3) {
      // proto3 packs repeated scalars; accept unpacked too.
      if (wt === WIRE_LEN) {
        const packed: Cursor = { buf: readBytes(c), pos: 0 };
        while (packed.pos < packed.buf.length) err.supportedVersions.push(readVarint(packed));
      } else {
        expectVarint(wt, 'Error.supported_versions');
        err.supportedVersions.push(readVarint(c));
      }
      return true;
    }
    if (n === 4) {
      expectLen(wt, 'Error.relay_address');
      const address = utf8Decoder.decode(readBytes(c));
      if (address) err.relayAddress = address;
      return true;
    }
    return false;
  });
  return err;
}

export function decodeServerFrame(buf: Uint8Array): ServerFrame {
  const payload = fastDataPayload(buf);
  if (payload) return { data: payload };
  let frame: ServerFrame | null = null;
  eachField(buf, (n, wt, c) => {
    switch (n) {
      case 1: {
        expectLen(wt, 'ServerFrame.welcome');
        const welcome: Welcome = { version: 0, peerPresent: false, maxMessageBytes: 0 };
        eachField(readBytes(c), (m, wt2, c2) => {
          if (m === 1) {
            expectVarint(wt2, 'Welcome.version');
            welcome.version = readVarint(c2);
            return true;
          }
          if (m === 2) {
            welcome.peerPresent = decodeBool(c2, wt2, 'Welcome.peer_present');
            return true;
          }
          if (m === 3) {
            expectVarint(wt2, 'Welcome.max_message_bytes');
            welcome.maxMessageBytes = readVarint(c2);
            return true;
          }
          return false;
        });
        frame = { welcome };
        return true;
      }
      case 2:
        expectLen(wt, 'ServerFrame.data');
        frame = { data: decodeData(readBytes(c)) };
        return true;
      case 3: {
        expectLen(wt, 'ServerFrame.presence');
        const presence = { peerPresent: false };
        eachField(readBytes(c), (m, wt2, c2) => {
          if (m !== 1) return false;
          presence.peerPresent = decodeBool(c2, wt2, 'Presence.peer_present');
          return true;
        });
        frame = { presence };
        return true;
      }
      case 4:
        expectLen(wt, 'ServerFrame.error');
        frame = { error: decodeError(readBytes(c)) };
        return true;
      default:
        return false;
    }
  });
  if (!frame) throw new FrameDecodeError('empty frame');
  return frame;
}

// ---- writing ----

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

/**
 * Frame memory: in Node, Buffer.allocUnsafe (pooled for small frames, not
 * zero-filled; every byte is written anyway); in browsers, Uint8Array.
 */
const nodeBuffer = (globalThis as { Buffer?: { allocUnsafe(size: number): Uint8Array } }).Buffer;
const allocate: (size: number) => Uint8Array = nodeBuffer ? (size) => nodeBuffer.allocUnsafe(size) : (size) => new Uint8Array(size);

class Writer {
  readonly buf: Uint8Array;
  pos = 0;
  constructor(size: number) {
    this.buf = allocate(size);
  }
  varint(n: number): this {
    while (n >= 0x80) {
      this.buf[this.pos++] = (n & 0x7f) | 0x80;
      n = Math.floor(n / 128);
    }
    this.buf[this.pos++] = n;
    return this;
  }
  bytes(b: Uint8Array): this {
    this.varint(b.length);
    this.buf.set(b, this.pos);
    this.pos += b.length;
    return this;
  }
}

/** Size of a length-delimited field with a 1-byte tag. */
const lenField = (len: number): number => 1 + varintSize(len) + len;
/** Size of a varint field with a 1-byte tag, or 0 when the value is the proto3 default. */
const varintField = (n: number): number => (n === 0 ? 0 : 1 + varintSize(n));

/** Encodes a data frame: ClientFrame and ServerFrame both carry Data as field 2. */
export function encodeDataFrame(payload: Uint8Array): Uint8Array {
  const inner = payload.length === 0 ? 0 : lenField(payload.length);
  const w = new Writer(lenField(inner));
  w.varint(0x12).varint(inner);
  if (inner > 0) w.varint(0x0a).bytes(payload);
  return w.buf;
}

export function encodeHello(hello: Hello): Uint8Array {
  const inner =
    varintField(hello.minVersion) + varintField(hello.maxVersion) + (hello.sid.length ? lenField(hello.sid.length) : 0) + varintField(hello.attach);
  const w = new Writer(lenField(inner));
  w.varint(0x0a).varint(inner);
  if (hello.minVersion) w.varint(0x08).varint(hello.minVersion);
  if (hello.maxVersion) w.varint(0x10).varint(hello.maxVersion);
  if (hello.sid.length) w.varint(0x1a).bytes(hello.sid);
  if (hello.attach) w.varint(0x20).varint(hello.attach);
  return w.buf;
}

export function encodeWelcome(version: number, peerPresent: boolean, maxMessageBytes = 0): Uint8Array {
  const inner = varintField(version) + (peerPresent ? 2 : 0) + varintField(maxMessageBytes);
  const w = new Writer(lenField(inner));
  w.varint(0x0a).varint(inner);
  if (version) w.varint(0x08).varint(version);
  if (peerPresent) w.varint(0x10).varint(1);
  if (maxMessageBytes) w.varint(0x18).varint(maxMessageBytes);
  return w.buf;
}

/** The two presence frames never change; built once. */
export const PRESENCE_FRAMES: { readonly present: Uint8Array; readonly absent: Uint8Array } = {
  present: new Uint8Array([0x1a, 0x02, 0x08, 0x01]),
  absent: new Uint8Array([0x1a, 0x00]),
};

export function encodeErrorFrame(err: FrameError): Uint8Array {
  const message = utf8Encoder.encode(err.message);
  const packedLen = err.supportedVersions.reduce((n, v) => n + varintSize(v), 0);
  const relay = utf8Encoder.encode(err.relayAddress ?? '');
  const inner =
    varintField(err.code) + (message.length ? lenField(message.length) : 0) + (packedLen ? lenField(packedLen) : 0) + (relay.length ? lenField(relay.length) : 0);
  const w = new Writer(lenField(inner));
  w.varint(0x22).varint(inner);
  if (err.code) w.varint(0x08).varint(err.code);
  if (message.length) w.varint(0x12).bytes(message);
  if (packedLen) {
    w.varint(0x1a).varint(packedLen);
    for (const v of err.supportedVersions) w.varint(v);
  }
  if (relay.length) w.varint(0x22).bytes(relay);
  return w.buf;
}

/** `ServerForMailboxRequest`: which relay owns a route (proto/hashmail/v2/mailbox.proto). */
export interface ServerForMailboxRequest {
  route: string;
  create: boolean;
  /** Instance id of an owner the party could not reach (field 3); empty: none. */
  unreachable?: string;
  /** Hold the answer up to this long while it would still be `unreachable` or "not placed" (field 4, ms); 0: answer at once. */
  waitMs?: number;
  /** The `startedAt` of the unreachable owner as the party was sent to it (field 5); 0 / absent: not known. */
  unreachableStartedAt?: number;
}

/** `ServerForMailboxResponse`: the owner's instance id and `HOST:PORT`. */
export interface ServerForMailboxResponse {
  id: string;
  address: string;
  /** When the owner registered (field 3, ms since the epoch); 0 / absent from instances that predate it. */
  startedAt?: number;
}

/** String fields, then varint fields, in one buffer; empty strings and zero varints (proto3 defaults) are left out. */
function encodeFields(strings: [number, string][], varints: [number, number][]): Uint8Array {
  const encoded = strings.map(([n, s]) => [n, utf8Encoder.encode(s)] as const).filter(([, b]) => b.length > 0);
  const present = varints.filter(([, v]) => v !== 0);
  const size = encoded.reduce((sum, [, b]) => sum + lenField(b.length), 0) + present.reduce((sum, [, v]) => sum + varintField(v), 0);
  const w = new Writer(size);
  for (const [n, b] of encoded) w.varint(n * 8 + WIRE_LEN).bytes(b);
  for (const [n, v] of present) w.varint(n * 8 + WIRE_VARINT).varint(v);
  return w.buf;
}

export function encodeServerForMailboxRequest(req: ServerForMailboxRequest): Uint8Array {
  return encodeFields(
    [
      [1, req.route],
      [3, req.unreachable ?? ''],
    ],
    [
      [2, req.create ? 1 : 0],
      [4, req.waitMs ?? 0],
      [5, req.unreachableStartedAt ?? 0],
    ],
  );
}

export function decodeServerForMailboxRequest(buf: Uint8Array): ServerForMailboxRequest {
  const req: ServerForMailboxRequest = { route: '', create: false };
  eachField(buf, (n, wt, c) => {
    if (n === 1) {
      expectLen(wt, 'ServerForMailboxRequest.route');
      req.route = utf8Decoder.decode(readBytes(c));
      return true;
    }
    if (n === 2) {
      expectVarint(wt, 'ServerForMailboxRequest.create');
      req.create = readVarint(c) !== 0;
      return true;
    }
    if (n === 3) {
      expectLen(wt, 'ServerForMailboxRequest.unreachable');
      req.unreachable = utf8Decoder.decode(readBytes(c));
      return true;
    }
    if (n === 4) {
      expectVarint(wt, 'ServerForMailboxRequest.wait_ms');
      req.waitMs = readVarint(c);
      return true;
    }
    if (n === 5) {
      expectVarint(wt, 'ServerForMailboxRequest.unreachable_started_at');
      req.unreachableStartedAt = readVarint(c);
      return true;
    }
    return false;
  });
  return req;
}

export function encodeServerForMailboxResponse(res: ServerForMailboxResponse): Uint8Array {
  return encodeFields(
    [
      [1, res.id],
      [2, res.address],
    ],
    [[3, res.startedAt ?? 0]],
  );
}

export function decodeServerForMailboxResponse(buf: Uint8Array): ServerForMailboxResponse {
  const res: ServerForMailboxResponse = { id: '', address: '' };
  eachField(buf, (n, wt, c) => {
    if (n === 3) {
      expectVarint(wt, 'ServerForMailboxResponse.started_at');
      res.startedAt = readVarint(c);
      return true;
    }
    if (n !== 1 && n !== 2) return false;
    expectLen(wt, n === 1 ? 'ServerForMailboxResponse.id' : 'ServerForMailboxResponse.address');
    const text = utf8Decoder.decode(readBytes(c));
    if (n === 1) res.id = text;
    else res.address = text;
    return true;
  });
  return res;
}
