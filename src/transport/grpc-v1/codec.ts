/**
 * Protobuf codec for the legacy hashmailrpc messages (proto/hashmailrpc.proto).
 * Hand-written because the messages are tiny and on the per-message path: a
 * decoded `msg` is a view into the received buffer, and an encoded CipherBox
 * is one allocation. Malformed input throws MALFORMED_REQUEST.
 */
import { HashmailError } from '../../session/errors.js';

export interface CipherBoxDesc {
  streamId: Buffer;
}

export interface CipherBox {
  /** null when the message carries no `desc` field. */
  desc: CipherBoxDesc | null;
  msg: Buffer;
}

export interface CipherBoxAuth {
  desc: CipherBoxDesc | null;
  /** The `auth` oneof was set (its only member is the empty LndAuth). */
  hasAuth: boolean;
}

const WIRE_VARINT = 0;
const WIRE_FIXED64 = 1;
const WIRE_LEN = 2;
const WIRE_FIXED32 = 5;
const EMPTY: Buffer = Buffer.alloc(0);

function malformed(what: string): HashmailError {
  return new HashmailError('MALFORMED_REQUEST', `malformed protobuf: ${what}`);
}

/** Minimal protobuf reader over one buffer; every read is bounds-checked. */
class Reader {
  pos = 0;
  constructor(private readonly buf: Buffer) {}

  get done(): boolean {
    return this.pos >= this.buf.length;
  }

  varint(): number {
    let result = 0;
    let shift = 0;
    for (let i = 0; i < 10; i++) {
      if (this.pos >= this.buf.length) throw malformed('truncated varint');
      const byte = this.buf[this.pos++];
      // Lengths above 2^53 cannot be valid in a gRPC message; multiply keeps precision to there.
      if (shift < 53) result += (byte & 0x7f) * 2 ** shift;
      if ((byte & 0x80) === 0) return result;
      shift += 7;
    }
    throw malformed('varint too long');
  }

  bytes(): Buffer {
    const len = this.varint();
    const end = this.pos + len;
    if (end > this.buf.length) throw malformed('length past end of message');
    const out = this.buf.subarray(this.pos, end);
    this.pos = end;
    return out;
  }

  skip(wireType: number): void {
    switch (wireType) {
      case WIRE_VARINT:
        this.varint();
        return;
      case WIRE_FIXED64:
        this.advance(8);
        return;
      case WIRE_LEN:
        this.bytes();
        return;
      case WIRE_FIXED32:
        this.advance(4);
        return;
      default:
        throw malformed(`unsupported wire type ${wireType}`);
    }
  }

  private advance(n: number): void {
    if (this.pos + n > this.buf.length) throw malformed('truncated field');
    this.pos += n;
  }
}

/** Reads fields of one message, calling `onLen` for length-delimited ones and `onVarint` (if given) for varints. */
export function eachField(buf: Buffer, onLen: (field: number, value: Buffer) => void, onVarint?: (field: number, value: number) => void): void {
  const r = new Reader(buf);
  while (!r.done) {
    const tag = r.varint();
    const field = Math.floor(tag / 8);
    const wireType = tag & 7;
    if (field === 0) throw malformed('field number 0');
    if (wireType === WIRE_LEN) onLen(field, r.bytes());
    else if (wireType === WIRE_VARINT && onVarint) onVarint(field, r.varint());
    else r.skip(wireType);
  }
}

export function decodeCipherBoxDesc(buf: Buffer): CipherBoxDesc {
  let streamId = EMPTY;
  eachField(buf, (field, value) => {
    if (field === 1) streamId = value;
  });
  return { streamId };
}

export function decodeCipherBox(buf: Buffer): CipherBox {
  let desc: CipherBoxDesc | null = null;
  let msg = EMPTY;
  eachField(buf, (field, value) => {
    // Repeated embedded messages merge in protobuf; for a single bytes field the last one wins.
    if (field === 1) desc = { streamId: decodeCipherBoxDesc(value).streamId };
    else if (field === 2) msg = value;
  });
  return { desc, msg };
}

export function decodeCipherBoxAuth(buf: Buffer): CipherBoxAuth {
  let desc: CipherBoxDesc | null = null;
  let hasAuth = false;
  eachField(buf, (field, value) => {
    if (field === 1) desc = decodeCipherBoxDesc(value);
    else if (field === 2) {
      decodeEmpty(value);
      hasAuth = true;
    }
  });
  return { desc, hasAuth };
}

/** LndAuth and DelCipherBoxResp have no fields; unknown ones are skipped, malformed ones throw. */
export function decodeEmpty(buf: Buffer): Record<string, never> {
  eachField(buf, () => undefined);
  return {};
}

export function varintLength(n: number): number {
  let len = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    len++;
  }
  return len;
}

export function writeVarint(out: Buffer, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[pos++] = n;
  return pos;
}

/** Bytes of a length-delimited field: tag + length + payload. */
export function lenFieldSize(payloadLength: number): number {
  return 1 + varintLength(payloadLength) + payloadLength;
}

export function writeLenField(out: Buffer, pos: number, tag: number, payload: Buffer): number {
  out[pos++] = tag;
  pos = writeVarint(out, pos, payload.length);
  payload.copy(out, pos);
  return pos + payload.length;
}

export function encodeCipherBoxDesc(desc: CipherBoxDesc): Buffer {
  if (desc.streamId.length === 0) return EMPTY;
  const out = Buffer.allocUnsafe(lenFieldSize(desc.streamId.length));
  writeLenField(out, 0, 0x0a, desc.streamId);
  return out;
}

/** A CipherBox on its way out of a RecvStream: the `desc` field, the same on every message of the stream, and the message. */
export interface OutgoingCipherBox {
  descField: Buffer;
  msg: Buffer;
}

/** The `desc` field of every CipherBox a RecvStream for `desc` sends, encoded once. */
export function cipherBoxDescField(desc: CipherBoxDesc): Buffer {
  const descBytes = encodeCipherBoxDesc(desc);
  const field = Buffer.allocUnsafe(lenFieldSize(descBytes.length));
  writeLenField(field, 0, 0x0a, descBytes);
  return field;
}

function outgoingSize(box: OutgoingCipherBox): number {
  // proto3 omits an empty bytes field; a 0-byte message is just the desc.
  return box.descField.length + (box.msg.length === 0 ? 0 : lenFieldSize(box.msg.length));
}

function writeOutgoing(out: Buffer, box: OutgoingCipherBox): Buffer {
  box.descField.copy(out, 0);
  if (box.msg.length > 0) writeLenField(out, box.descField.length, 0x12, box.msg);
  return out;
}

/** One CipherBox in a buffer of its own. */
export function encodeOutgoingCipherBox(box: OutgoingCipherBox): Buffer {
  return writeOutgoing(Buffer.allocUnsafe(outgoingSize(box)), box);
}

/** Largest CipherBox encoded into the reused buffer; a larger one gets a buffer of its own, so the reused one stays small. */
const REUSED_MAX_BYTES = 256 * 1024;
let reused = Buffer.allocUnsafe(0);

/**
 * A CipherBox encoded into one buffer that the next call overwrites: only for
 * a caller that copies the result before it encodes another. grpc-js's server
 * is one: it copies what a response serializer returns into the framed buffer
 * it sends, in the same call (`serializeMessage`). A RecvStream's messages
 * then cost no buffer of their own before that copy: a large relayed message
 * allocated outside the JS heap twice as often otherwise, and such bytes are
 * what drives V8 into full garbage collections (see cli/young-generation.ts).
 */
export function encodeOutgoingCipherBoxReused(box: OutgoingCipherBox): Buffer {
  const size = outgoingSize(box);
  if (size > REUSED_MAX_BYTES) return encodeOutgoingCipherBox(box);
  if (reused.length < size) reused = Buffer.allocUnsafe(Math.min(REUSED_MAX_BYTES, Math.max(size, reused.length * 2, 4096)));
  return writeOutgoing(reused.subarray(0, size), box);
}

export function encodeCipherBox(box: CipherBox): Buffer {
  const descBytes = box.desc ? encodeCipherBoxDesc(box.desc) : null;
  const size = (descBytes ? lenFieldSize(descBytes.length) : 0) + (box.msg.length ? lenFieldSize(box.msg.length) : 0);
  const out = Buffer.allocUnsafe(size);
  let pos = 0;
  if (descBytes) pos = writeLenField(out, pos, 0x0a, descBytes);
  if (box.msg.length) writeLenField(out, pos, 0x12, box.msg);
  return out;
}

export function encodeCipherBoxAuth(auth: CipherBoxAuth): Buffer {
  const descBytes = auth.desc ? encodeCipherBoxDesc(auth.desc) : null;
  const parts: Buffer[] = [];
  if (descBytes) {
    const field = Buffer.allocUnsafe(lenFieldSize(descBytes.length));
    writeLenField(field, 0, 0x0a, descBytes);
    parts.push(field);
  }
  if (auth.hasAuth) parts.push(LND_AUTH_FIELD);
  return Buffer.concat(parts);
}

/** CipherBoxAuth field 2 (lnd_auth), an empty LndAuth. */
const LND_AUTH_FIELD = Buffer.from([0x12, 0x00]);

/** CipherInitResp{success: CipherSuccess{}}: the `success` field present and empty (`0a 00`). */
export const CIPHER_INIT_SUCCESS = Buffer.from([0x0a, 0x00]);

/** Decodes a CipherInitResp far enough to tell success from anything else. */
export function decodeCipherInitResp(buf: Buffer): { success: boolean } {
  let success = false;
  eachField(buf, (field) => {
    if (field === 1) success = true;
  });
  return { success };
}

/** DelCipherBoxResp, and a SendStream's CipherBoxDesc answer: empty messages. */
export const EMPTY_MESSAGE = EMPTY;
