/**
 * Protobuf codec for HopFrame, the unit of a hop lane
 * (proto/hashmail/hop/v1/hop.proto): many legacy halves and box calls share
 * one lane, each frame names its half (or call). Hand-written like the
 * other codecs: a decoded `msg` is a view into the received buffer.
 * Malformed input throws MALFORMED_REQUEST.
 */
import { HashmailError } from '../../session/errors.js';
import { eachField, lenFieldSize, varintLength, writeLenField, writeVarint } from '../grpc-v1/codec.js';

/** What a frame says; values are the proto enum's. */
export const FrameKind = {
  /** gateway -> relay: take the read slot of `stream_id` for `client_address`. */
  OPEN_RECV: 1,
  /** gateway -> relay: take the write slot of `stream_id` for `client_address`. */
  OPEN_SEND: 2,
  /** Either way: one legacy message of the half (relay -> gateway for a reader, gateway -> relay for a writer). */
  DATA: 3,
  /** Either way: `credit` more bytes of DATA may be sent for the half. */
  CREDIT: 4,
  /** gateway -> relay: the writer's client ended its stream; END (no error) once every message is queued. */
  FINISH: 5,
  /** gateway -> relay: the half is released; the relay frees the slot and sends nothing more for it. */
  CANCEL: 6,
  /** relay -> gateway: the relay holds the slot now. */
  ATTACHED: 7,
  /** relay -> gateway: the half is over; with `error_code` it failed, without it a finished writer's messages are all queued. With half 0: the whole lane failed. */
  END: 8,
  /** gateway -> relay, half 0: keepalive; the relay answers PONG. */
  PING: 9,
  /** relay -> gateway, half 0: the answer to PING. */
  PONG: 10,
  /** gateway -> relay: NewCipherBox of `stream_id` for `client_address`; answered by END on the same id. */
  CREATE_BOX: 11,
  /** gateway -> relay: DelCipherBox of `stream_id` for `client_address`; answered by END on the same id. */
  DELETE_BOX: 12,
} as const;
export type FrameKindValue = (typeof FrameKind)[keyof typeof FrameKind];
const KIND_MAX = 12;

export interface HopFrame {
  /** The half's id on its lane, chosen by the gateway; 0 only in frames about the lane itself (PING, PONG, a lane's END). */
  half: number;
  kind: FrameKindValue;
  streamId?: Buffer;
  msg?: Buffer;
  clientAddress?: string;
  credit?: number;
  errorCode?: string;
  errorMessage?: string;
  relayAddress?: string;
}

const F_HALF = 1;
const F_KIND = 2;
const F_STREAM_ID = 3;
const F_MSG = 4;
const F_CLIENT_ADDRESS = 5;
const F_CREDIT = 6;
const F_ERROR_CODE = 7;
const F_ERROR_MESSAGE = 8;
const F_RELAY_ADDRESS = 9;
const WIRE_VARINT = 0;
const WIRE_LEN = 2;
const tagOf = (field: number, wire: number): number => field * 8 + wire;
/** Longest string field taken from a frame (our codes, texts and addresses are far shorter). */
const MAX_STRING_BYTES = 1024;

const EMPTY: Buffer = Buffer.alloc(0);

function malformed(what: string): HashmailError {
  return new HashmailError('MALFORMED_REQUEST', `hop: malformed frame: ${what}`);
}

function text(value: Buffer): string {
  if (value.length > MAX_STRING_BYTES) throw malformed('string field too long');
  return value.toString('utf8');
}

export function decodeHopFrame(buf: Buffer): HopFrame {
  const frame: HopFrame = { half: 0, kind: FrameKind.DATA };
  let kind = 0;
  eachField(
    buf,
    (field, value) => {
      if (field === F_STREAM_ID) frame.streamId = value;
      else if (field === F_MSG) frame.msg = value;
      else if (field === F_CLIENT_ADDRESS) frame.clientAddress = text(value);
      else if (field === F_ERROR_CODE) frame.errorCode = text(value);
      else if (field === F_ERROR_MESSAGE) frame.errorMessage = text(value);
      else if (field === F_RELAY_ADDRESS) frame.relayAddress = text(value);
    },
    (field, value) => {
      if (field === F_HALF) frame.half = value;
      else if (field === F_KIND) kind = value;
      else if (field === F_CREDIT) frame.credit = value;
    },
  );
  if (kind < 1 || kind > KIND_MAX) throw malformed(`unknown kind ${kind}`);
  const laneKind = kind === FrameKind.PING || kind === FrameKind.PONG || kind === FrameKind.END;
  if (frame.half > 0xffffffff || (frame.half < 1 && !laneKind)) throw malformed('half id missing or out of range');
  if (frame.half !== 0 && (kind === FrameKind.PING || kind === FrameKind.PONG)) throw malformed('PING and PONG belong to half 0');
  frame.kind = kind as FrameKindValue;
  return frame;
}

function varintFieldSize(field: number, value: number): number {
  return value ? varintLength(tagOf(field, WIRE_VARINT)) + varintLength(value) : 0;
}

function writeVarintField(out: Buffer, pos: number, field: number, value: number): number {
  if (!value) return pos;
  pos = writeVarint(out, pos, tagOf(field, WIRE_VARINT));
  return writeVarint(out, pos, value);
}

function lenField(value: Buffer | undefined): number {
  return value && value.length ? lenFieldSize(value.length) : 0;
}

export function encodeHopFrame(f: HopFrame): Buffer {
  const strings: [number, Buffer | undefined][] = [
    [F_STREAM_ID, f.streamId],
    [F_MSG, f.msg],
    [F_CLIENT_ADDRESS, f.clientAddress ? Buffer.from(f.clientAddress) : undefined],
    [F_ERROR_CODE, f.errorCode ? Buffer.from(f.errorCode) : undefined],
    [F_ERROR_MESSAGE, f.errorMessage ? Buffer.from(f.errorMessage) : undefined],
    [F_RELAY_ADDRESS, f.relayAddress ? Buffer.from(f.relayAddress) : undefined],
  ];
  let size = varintFieldSize(F_HALF, f.half) + varintFieldSize(F_KIND, f.kind) + varintFieldSize(F_CREDIT, f.credit ?? 0);
  for (const [, value] of strings) size += lenField(value);
  const out = Buffer.allocUnsafe(size);
  let pos = writeVarintField(out, 0, F_HALF, f.half);
  pos = writeVarintField(out, pos, F_KIND, f.kind);
  for (const [field, value] of strings) {
    // Every length-delimited field number here is below 16: its tag is one byte.
    if (value && value.length) pos = writeLenField(out, pos, tagOf(field, WIRE_LEN), value);
  }
  writeVarintField(out, pos, F_CREDIT, f.credit ?? 0);
  return out;
}

/** Bytes of a DATA frame before its message: half, kind, and the message's tag and length (none for an empty one). */
export function dataHeadSize(half: number, msgLength: number): number {
  return varintFieldSize(F_HALF, half) + 2 + (msgLength ? 1 + varintLength(msgLength) : 0);
}

/** Writes a DATA frame's head (dataHeadSize bytes) at `pos`; the message itself follows it on the wire. */
export function writeDataHead(out: Buffer, pos: number, half: number, msgLength: number): number {
  pos = writeVarintField(out, pos, F_HALF, half);
  pos = writeVarintField(out, pos, F_KIND, FrameKind.DATA);
  if (!msgLength) return pos;
  out[pos++] = tagOf(F_MSG, WIRE_LEN);
  return writeVarint(out, pos, msgLength);
}

/** A DATA frame in one buffer, built with the head lanes send (so tests can check that head against protobufjs); lanes send the head and the message apart. */
export function encodeDataFrame(half: number, msg: Buffer): Buffer {
  const head = dataHeadSize(half, msg.length);
  const out = Buffer.allocUnsafe(head + msg.length);
  writeDataHead(out, 0, half, msg.length);
  msg.copy(out, head);
  return out;
}

/** A frame of `kind` carrying nothing but its half (and credit). */
export function encodeControlFrame(half: number, kind: FrameKindValue, credit = 0): Buffer {
  return encodeHopFrame({ half, kind, credit });
}

export const NO_MESSAGE = EMPTY;
