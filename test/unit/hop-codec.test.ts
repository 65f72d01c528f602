/**
 * The hop's wire: HopBox and HopFrame codecs (round trips, proto3 empty
 * fields, agreement with protobufjs reading proto/hashmail/hop/v1/hop.proto,
 * malformed input), the error mapping both ways (every code of ours crosses
 * the hop unchanged, as a trailer or an END frame; a status without our
 * trailer becomes UNAVAILABLE), and the token compare.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { Metadata } from '@grpc/grpc-js';
import { HashmailError, limitReached, servedElsewhere, type HashmailErrorCode } from '../../src/session/errors.js';
import protobuf from 'protobufjs';
import { decodeHopBox, encodeHopBox } from '../../src/transport/grpc-hop/codec.js';
import { decodeHopFrame, encodeControlFrame, encodeDataFrame, encodeHopFrame, FrameKind, type HopFrame } from '../../src/transport/grpc-hop/frame.js';
import { endFields, endFrameError, hopError, hopStatus } from '../../src/transport/grpc-hop/hop-status.js';
import { HopToken } from '../../src/transport/grpc-hop/hop-token.js';
import { HOP_ERROR_TRAILER } from '../../src/transport/grpc-hop/service.js';
import { GrpcStatus } from '../../src/wire/grpc-status.js';

describe('hop codec', () => {
  test('HopBox round-trips; an empty stream_id encodes to nothing', () => {
    const sid = randomBytes(64);
    const enc = encodeHopBox({ streamId: sid });
    assert.deepEqual(enc.subarray(0, 2), Buffer.from([0x0a, 64]));
    assert.deepEqual(decodeHopBox(enc).streamId, sid);
    assert.equal(encodeHopBox({ streamId: Buffer.alloc(0) }).length, 0);
    assert.equal(decodeHopBox(Buffer.alloc(0)).streamId.length, 0);
  });

  const root = protobuf.loadSync(new URL('../../proto/hashmail/hop/v1/hop.proto', import.meta.url).pathname);
  const Frame = root.lookupType('hashmail.hop.v1.HopFrame');

  test('HopFrame round-trips every field; DATA and control frames are what protobufjs reads', () => {
    const full: HopFrame = {
      half: 0xfffffffe,
      kind: FrameKind.END,
      streamId: randomBytes(64),
      msg: randomBytes(300),
      clientAddress: '2001:db8::/48',
      credit: 2 ** 40,
      errorCode: 'SERVED_ELSEWHERE',
      errorMessage: 'served elsewhere',
      relayAddress: '127.0.0.1:4567',
    };
    assert.deepEqual(decodeHopFrame(encodeHopFrame(full)), full);
    const theirs = Frame.toObject(Frame.decode(encodeHopFrame(full)), { longs: Number, bytes: Buffer }) as Record<string, unknown>;
    assert.equal(theirs.half, full.half);
    assert.equal(theirs.kind, FrameKind.END);
    assert.equal(theirs.credit, full.credit);
    assert.equal(theirs.clientAddress, full.clientAddress);
    assert.deepEqual(Buffer.from(theirs.msg as Uint8Array), full.msg);
    // Theirs -> ours.
    const written = Buffer.from(Frame.encode(Frame.fromObject({ half: 7, kind: FrameKind.OPEN_RECV, streamId: full.streamId, clientAddress: '10.0.0.1', credit: 262144 })).finish());
    assert.deepEqual(decodeHopFrame(written), { half: 7, kind: FrameKind.OPEN_RECV, streamId: full.streamId, clientAddress: '10.0.0.1', credit: 262144 });
    const msg = randomBytes(40_000);
    const data = encodeDataFrame(9, msg);
    assert.deepEqual(decodeHopFrame(data), { half: 9, kind: FrameKind.DATA, msg });
    assert.deepEqual(Buffer.from((Frame.decode(data) as unknown as { msg: Uint8Array }).msg), msg);
    // A 0-byte legacy message is a DATA frame without field 4.
    assert.deepEqual(decodeHopFrame(encodeDataFrame(1, Buffer.alloc(0))), { half: 1, kind: FrameKind.DATA });
    assert.deepEqual(decodeHopFrame(encodeControlFrame(3, FrameKind.CREDIT, 65536)), { half: 3, kind: FrameKind.CREDIT, credit: 65536 });
  });

  test('a frame without a half, with an unknown kind, or malformed, throws MALFORMED_REQUEST', () => {
    const bad = [
      encodeHopFrame({ half: 0, kind: FrameKind.DATA }),
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1, kind: 9 })).finish()),
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1 })).finish()),
      Buffer.from([0x08, 0x01, 0x10, 0x03, 0x22, 0x05, 0x01]),
      Buffer.from([0x08]),
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1, kind: FrameKind.END, errorMessage: 'x'.repeat(2000) })).finish()),
    ];
    for (const b of bad) assert.throws(() => decodeHopFrame(b), (err: unknown) => err instanceof HashmailError && err.code === 'MALFORMED_REQUEST');
    // Unknown fields are skipped.
    assert.deepEqual(decodeHopFrame(Buffer.concat([encodeControlFrame(2, FrameKind.CANCEL), Buffer.from([0x78, 0x05])])), { half: 2, kind: FrameKind.CANCEL });
  });

  test('malformed HopBox input throws MALFORMED_REQUEST', () => {
    for (const bad of [Buffer.from([0x12, 0x05, 0x01]), Buffer.from([0x0a]), Buffer.from([0x00, 0x00]), Buffer.from([0x0f])]) {
      assert.throws(() => decodeHopBox(bad), (err: unknown) => err instanceof HashmailError && err.code === 'MALFORMED_REQUEST');
    }
  });
});

describe('hop error mapping', () => {
  const codes: HashmailErrorCode[] = [
    'STREAM_EXISTS',
    'STREAM_NOT_FOUND',
    'READ_OCCUPIED',
    'WRITE_OCCUPIED',
    'BOX_DELETED_EOF',
    'BOX_DELETED_PIPE',
    'STREAM_SHUTTING_DOWN',
    'SERVER_SHUTTING_DOWN',
    'INVALID_STREAM_ID',
    'ROUTE_LOST',
    'RELAY_DRAINING',
    'FENCE_LOST',
    'HOP_UNAUTHENTICATED',
    'CANCELLED',
  ];

  test('every code crosses the hop as the same error: code, text, gRPC status, HTTP status', () => {
    for (const code of [...codes.map((c) => new HashmailError(c)), limitReached('limits.maxBoxesPerAddress', 3), new HashmailError('MESSAGE_TOO_LARGE', 'message too large: 9 bytes, limit mailbox.maxMessageBytes (8)')]) {
      const status = hopStatus(code);
      assert.equal(status.code, code.grpcCode);
      assert.equal(status.metadata.get(HOP_ERROR_TRAILER)[0], code.code);
      const back = hopError(status);
      assert.equal(back.code, code.code);
      assert.equal(back.message, code.message);
      assert.equal(back.grpcCode, code.grpcCode);
      assert.equal(back.httpStatus, code.httpStatus);
      assert.deepEqual(back.toStatusJson(), code.toStatusJson());
      const viaFrame = endFrameError(decodeHopFrame(encodeHopFrame({ half: 1, kind: FrameKind.END, ...endFields(code) })));
      assert.deepEqual([viaFrame.code, viaFrame.message, viaFrame.grpcCode], [code.code, code.message, code.grpcCode]);
    }
  });

  test('SERVED_ELSEWHERE carries the owner address in hashmail-relay-address', () => {
    const back = hopError(hopStatus(servedElsewhere('127.0.0.1:4567')));
    assert.equal(back.code, 'SERVED_ELSEWHERE');
    assert.equal(back.relayAddress, '127.0.0.1:4567');
    assert.equal(endFrameError(endFields(servedElsewhere('127.0.0.1:4567'))).relayAddress, '127.0.0.1:4567');
    // An END naming a code we do not know, or a redirect without an address, is the relay being unreachable.
    assert.equal(endFrameError({ errorCode: 'NO_SUCH_CODE' }).code, 'RELAY_UNREACHABLE');
    assert.equal(endFrameError({ errorCode: 'SERVED_ELSEWHERE' }).code, 'RELAY_UNREACHABLE');
  });

  test('a status without our trailer (connection lost, relay gone) is UNAVAILABLE; an unknown code too; CANCELLED stays', () => {
    const lost = hopError({ code: GrpcStatus.UNAVAILABLE, details: 'Connection dropped', metadata: new Metadata() });
    assert.equal(lost.code, 'RELAY_UNREACHABLE');
    assert.equal(lost.grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(lost.httpStatus, 503);
    assert.equal(lost.message, 'gateway: relay unreachable (UNAVAILABLE: Connection dropped)');
    const md = new Metadata();
    md.set(HOP_ERROR_TRAILER, 'NO_SUCH_CODE');
    assert.equal(hopError({ code: GrpcStatus.INTERNAL, details: 'x', metadata: md }).code, 'RELAY_UNREACHABLE');
    assert.equal(hopError({ code: GrpcStatus.DEADLINE_EXCEEDED, details: 'Deadline exceeded' }).grpcCode, GrpcStatus.UNAVAILABLE);
    assert.equal(hopError({ code: GrpcStatus.CANCELLED, details: 'Cancelled on client' }).code, 'CANCELLED');
    // A redirect without a usable address is not believed.
    const bad = new Metadata();
    bad.set(HOP_ERROR_TRAILER, 'SERVED_ELSEWHERE');
    assert.equal(hopError({ code: GrpcStatus.UNAVAILABLE, details: '', metadata: bad }).code, 'RELAY_UNREACHABLE');
  });
});

describe('hop token', () => {
  test('matches only the exact token, whatever the length or type presented', () => {
    const token = new HopToken('a'.repeat(43));
    assert.equal(token.matches('a'.repeat(43)), true);
    assert.equal(token.matches('a'.repeat(42)), false);
    assert.equal(token.matches('a'.repeat(44)), false);
    assert.equal(token.matches(''), false);
    assert.equal(token.matches(undefined), false);
    assert.equal(token.matches(Buffer.from('a'.repeat(43))), false);
    assert.throws(() => new HopToken(''));
  });
});
