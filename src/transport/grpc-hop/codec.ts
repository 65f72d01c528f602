/**
 * Protobuf codec for HopBox and HopEmpty (proto/hashmail/hop/v1/hop.proto),
 * the messages of the box calls; a lane's HopFrame is in frame.ts.
 * Malformed input throws MALFORMED_REQUEST.
 */
import { decodeEmpty, eachField, lenFieldSize, writeLenField } from '../grpc-v1/codec.js';

export interface HopBox {
  streamId: Buffer;
}

const EMPTY: Buffer = Buffer.alloc(0);
/** Field 1 (stream_id), wire type 2. */
const TAG_STREAM_ID = 0x0a;

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

export const HOP_EMPTY = EMPTY;
export const decodeHopEmpty = decodeEmpty;
