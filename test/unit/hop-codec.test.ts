/**
 * The hop's wire: the HopFrame codec (round trips, proto3 empty fields,
 * agreement with protobufjs reading proto/hashmail/hop/v1/hop.proto, the
 * frames of half 0, malformed input), the error mapping (every code of ours
 * crosses the hop unchanged in an END frame; one that names no code of ours
 * becomes UNAVAILABLE), and the token compare.
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { HashmailError, limitReached, servedElsewhere, type HashmailErrorCode } from '../../src/session/errors.js';
import protobuf from 'protobufjs';
import { decodeHopFrame, encodeControlFrame, encodeDataFrame, encodeHopFrame, FrameKind, type HopFrame } from '../../src/transport/hop/frame.js';
import { endFields, endFrameError } from '../../src/transport/hop/hop-status.js';
import { HopToken } from '../../src/transport/hop/hop-token.js';

describe('hop codec', () => {
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
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1, kind: 13 })).finish()),
      // Half 0 is the lane's own: PING, PONG and a lane's END only.
      encodeHopFrame({ half: 0, kind: FrameKind.OPEN_RECV }),
      encodeHopFrame({ half: 0, kind: FrameKind.CREATE_BOX }),
      encodeHopFrame({ half: 5, kind: FrameKind.PING }),
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1 })).finish()),
      Buffer.from([0x08, 0x01, 0x10, 0x03, 0x22, 0x05, 0x01]),
      Buffer.from([0x08]),
      Buffer.from(Frame.encode(Frame.fromObject({ half: 1, kind: FrameKind.END, errorMessage: 'x'.repeat(2000) })).finish()),
    ];
    for (const b of bad) assert.throws(() => decodeHopFrame(b), (err: unknown) => err instanceof HashmailError && err.code === 'MALFORMED_REQUEST');
    for (const kind of [FrameKind.PING, FrameKind.PONG, FrameKind.END]) assert.deepEqual(decodeHopFrame(encodeHopFrame({ half: 0, kind })), { half: 0, kind });
    // Box calls: what protobufjs writes for them is what we read.
    const sid = randomBytes(64);
    const box = Buffer.from(Frame.encode(Frame.fromObject({ half: 4, kind: FrameKind.DELETE_BOX, streamId: sid, clientAddress: '10.0.0.9' })).finish());
    assert.deepEqual(decodeHopFrame(box), { half: 4, kind: FrameKind.DELETE_BOX, streamId: sid, clientAddress: '10.0.0.9' });
    // Unknown fields are skipped.
    assert.deepEqual(decodeHopFrame(Buffer.concat([encodeControlFrame(2, FrameKind.CANCEL), Buffer.from([0x78, 0x05])])), { half: 2, kind: FrameKind.CANCEL });
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

  test('every code crosses the hop as the same error: code, text, gRPC status, HTTP status, JSON', () => {
    for (const code of [...codes.map((c) => new HashmailError(c)), limitReached('limits.maxBoxesPerAddress', 3), new HashmailError('MESSAGE_TOO_LARGE', 'message too large: 9 bytes, limit mailbox.maxMessageBytes (8)')]) {
      const back = endFrameError(decodeHopFrame(encodeHopFrame({ half: 1, kind: FrameKind.END, ...endFields(code) })));
      assert.equal(back.code, code.code);
      assert.equal(back.message, code.message);
      assert.equal(back.grpcCode, code.grpcCode);
      assert.equal(back.httpStatus, code.httpStatus);
      assert.deepEqual(back.toStatusJson(), code.toStatusJson());
    }
  });

  test('SERVED_ELSEWHERE carries the owner address in relay_address', () => {
    const back = endFrameError(decodeHopFrame(encodeHopFrame({ half: 1, kind: FrameKind.END, ...endFields(servedElsewhere('127.0.0.1:4567')) })));
    assert.equal(back.code, 'SERVED_ELSEWHERE');
    assert.equal(back.relayAddress, '127.0.0.1:4567');
    // An END naming a code we do not know, or a redirect without an address, is the relay being unreachable.
    assert.equal(endFrameError({ errorCode: 'NO_SUCH_CODE' }).code, 'RELAY_UNREACHABLE');
    assert.equal(endFrameError({ errorCode: 'SERVED_ELSEWHERE' }).code, 'RELAY_UNREACHABLE');
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
