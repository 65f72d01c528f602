/**
 * Protobuf codec for the hop messages (proto/hashmail/hop/v1/hop.proto),
 * hand-written like the legacy codec it builds on: a decoded `msg` is a view
 * into the received buffer, an encoded HopMessage is one allocation.
 * Malformed input throws MALFORMED_REQUEST.
 */
import { decodeEmpty, eachField, lenFieldSize, writeLenField } from '../grpc-v1/codec.js';

export interface HopBox {
  streamId: Buffer;
}

export interface HopMessage {
  /** Empty when absent (every message but a Send's first). */
  streamId: Buffer;
  msg: Buffer;
}

const EMPTY: Buffer = Buffer.alloc(0);
/** Field 1 (stream_id) and field 2 (msg), wire type 2. */
const TAG_STREAM_ID = 0x0a;
const TAG_MSG = 0x12;

export function decodeHopBox(buf: Buffer): HopBox {
  let streamId = EMPTY;
  eachField(buf, (field, value) => {
    if (field === 1) streamId = value;
  });
  return { streamId };
}

export function encodeHopBox(box: HopBox): Buffer {
  if (box.streamId.length === 0) return EMPTY;
  const out = Buffer.allocUnsafe(lenFieldSize(box.streamId.length));
  writeLenField(out, 0, TAG_STREAM_ID, box.streamId);
  return out;
}

export function decodeHopMessage(buf: Buffer): HopMessage {
  let streamId = EMPTY;
  let msg = EMPTY;
  eachField(buf, (field, value) => {
    if (field === 1) streamId = value;
    else if (field === 2) msg = value;
  });
  return { streamId, msg };
}

export function encodeHopMessage(m: HopMessage): Buffer {
  // proto3 omits empty bytes fields: a 0-byte legacy message is an empty HopMessage.
  const idSize = m.streamId.length ? lenFieldSize(m.streamId.length) : 0;
  const out = Buffer.allocUnsafe(idSize + (m.msg.length ? lenFieldSize(m.msg.length) : 0));
  let pos = 0;
  if (idSize) pos = writeLenField(out, pos, TAG_STREAM_ID, m.streamId);
  if (m.msg.length) writeLenField(out, pos, TAG_MSG, m.msg);
  return out;
}

/** A HopMessage carrying one legacy message (the per-message path: one allocation, one copy). */
export function encodeHopPayload(msg: Buffer): Buffer {
  if (msg.length === 0) return EMPTY;
  const out = Buffer.allocUnsafe(lenFieldSize(msg.length));
  writeLenField(out, 0, TAG_MSG, msg);
  return out;
}

export const HOP_EMPTY = EMPTY;
export const decodeHopEmpty = decodeEmpty;
